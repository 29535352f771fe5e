//! Fuzzes the vSphere SOAP response path: arbitrary bytes (as lossy UTF-8) through
//! `envelope::response_inner`, `xml::parse_fragment`, and `ObjectContent::from_node` /
//! `TaskInfo::from_node` on every node of the tree. None of it may panic: errors are fine.
//!
//! Each input is tried three ways: as a whole response body, as a bare fragment, and wrapped
//! in a SOAP envelope (so the tree decoders are reached without the fuzzer having to find an
//! envelope first). Seeds: `tests/fixtures/soap/*.xml`.
#![no_main]

use ceso::vsphere::envelope::response_inner;
use ceso::vsphere::methods::{Method, RetrieveServiceContent};
use ceso::vsphere::property::ObjectContent;
use ceso::vsphere::task::TaskInfo;
use ceso::vsphere::xml::{parse_fragment, Node};
use libfuzzer_sys::fuzz_target;

const HEAD: &str = r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><RetrievePropertiesExResponse xmlns="urn:vim25">"#;
const TAIL: &str = "</RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>";

fn visit(node: &Node) {
    if let Ok(o) = ObjectContent::from_node(node) {
        for (path, val) in &o.props {
            let _ = o.text(path);
            let _ = o.parse::<i64>(path);
            let _ = o.bool(path);
            let _ = o.moref(path);
            let _ = o.morefs(path);
            let _ = val.type_or("anyType");
        }
    }
    let _ = TaskInfo::from_node(node);
    let _ = node.as_moref();
    let _ = node.parse_of::<i32>("key");
    let _ = node.bool_of("connected");
    for child in &node.children {
        visit(child);
    }
}

fn tree(xml: &str) {
    if let Ok(nodes) = parse_fragment(xml) {
        for n in &nodes {
            visit(n);
        }
    }
}

fn body(xml: &str) {
    if let Ok(inner) = response_inner(xml) {
        tree(inner);
        let _ = RetrieveServiceContent::decode(inner);
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    body(&text);
    tree(&text);
    body(&format!("{HEAD}{text}{TAIL}"));
});
