//! SOAP envelopes: requests written with `quick_xml::Writer` (exact namespaces and element
//! order), responses located in the envelope and decoded with serde (a decode error names the
//! field), and SOAP faults turned into typed errors carrying the fault type.

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::name::QName;
use quick_xml::{Reader, Writer};
use serde::de::DeserializeOwned;

use crate::vsphere::error::{Error, ErrorKind, Result};
use crate::vsphere::types::ManagedObjectReference;

const SOAP_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const XSD: &str = "http://www.w3.org/2001/XMLSchema";
const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Writes one SOAP request: the envelope, the method element with `_this`, then its arguments.
pub struct RequestWriter {
    w: Writer<Vec<u8>>,
    method: &'static str,
}

impl RequestWriter {
    /// Starts a request for `method` on the object `this`.
    pub fn new(method: &'static str, this: &ManagedObjectReference) -> Self {
        let mut w = Writer::new(Vec::with_capacity(512));
        let mut me = Self { w, method };
        me.event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
        me.event(Event::Start(
            BytesStart::new("soapenv:Envelope").with_attributes([
                ("xmlns:soapenv", SOAP_ENV),
                ("xmlns:xsd", XSD),
                ("xmlns:xsi", XSI),
            ]),
        ));
        me.event(Event::Start(BytesStart::new("soapenv:Body")));
        me.event(Event::Start(
            BytesStart::new(method).with_attributes([("xmlns", "urn:vim25")]),
        ));
        me.moref("_this", this);
        w = std::mem::replace(&mut me.w, Writer::new(Vec::new()));
        me.w = w;
        me
    }

    fn event(&mut self, event: Event<'_>) {
        self.w
            .write_event(event)
            .expect("writing XML into a Vec cannot fail");
    }

    /// Writes `<name>text</name>` with the text escaped.
    pub fn text(&mut self, name: &str, text: &str) -> &mut Self {
        self.event(Event::Start(BytesStart::new(name)));
        self.event(Event::Text(BytesText::new(text)));
        self.event(Event::End(BytesEnd::new(name)));
        self
    }

    /// Writes `<name xsi:type="T">text</name>` (values of `anyType` fields such as
    /// `OptionValue.value`).
    pub fn typed_text(&mut self, name: &str, xsi_type: &str, text: &str) -> &mut Self {
        let mut e = BytesStart::new(name);
        e.push_attribute(("xsi:type", xsi_type));
        self.event(Event::Start(e));
        self.event(Event::Text(BytesText::new(text)));
        self.event(Event::End(BytesEnd::new(name)));
        self
    }

    /// Writes a node tree read from a response back as request XML under the element `name`
    /// (e.g. an import spec vSphere returned, passed on unchanged, `xsi:type`s included).
    pub fn node(&mut self, name: &str, node: &crate::vsphere::xml::Node) -> &mut Self {
        let mut e = BytesStart::new(name);
        if let Some(t) = &node.xsi_type {
            e.push_attribute(("xsi:type", t.as_str()));
        }
        for (k, v) in &node.attrs {
            e.push_attribute((k.as_str(), v.as_str()));
        }
        self.event(Event::Start(e));
        if node.children.is_empty() {
            self.event(Event::Text(BytesText::new(&node.text)));
        }
        for child in &node.children {
            let child_name = child.name.clone();
            self.node(&child_name, child);
        }
        self.event(Event::End(BytesEnd::new(name)));
        self
    }

    /// Writes a managed object reference argument: `<name type="T">value</name>`.
    pub fn moref(&mut self, name: &str, r: &ManagedObjectReference) -> &mut Self {
        self.event(Event::Start(
            BytesStart::new(name).with_attributes([("type", r.kind.as_str())]),
        ));
        self.event(Event::Text(BytesText::new(&r.value)));
        self.event(Event::End(BytesEnd::new(name)));
        self
    }

    /// Opens a nested element, optionally with an `xsi:type`.
    pub fn start(&mut self, name: &str, xsi_type: Option<&str>) -> &mut Self {
        let mut e = BytesStart::new(name);
        if let Some(t) = xsi_type {
            e.push_attribute(("xsi:type", t));
        }
        self.event(Event::Start(e));
        self
    }

    /// Closes a nested element.
    pub fn end(&mut self, name: &str) -> &mut Self {
        self.event(Event::End(BytesEnd::new(name)));
        self
    }

    /// Finishes the envelope and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        let method = self.method;
        self.event(Event::End(BytesEnd::new(method)));
        self.event(Event::End(BytesEnd::new("soapenv:Body")));
        self.event(Event::End(BytesEnd::new("soapenv:Envelope")));
        self.w.into_inner()
    }
}

/// Where the response element sits in a SOAP envelope, or the fault it carries.
enum BodyContent<'a> {
    /// The inner XML of the `<MethodResponse>` element.
    Response(&'a str),
    /// A SOAP fault.
    Fault(Error),
}

/// The inner XML of a SOAP response's `<MethodResponse>` element; a SOAP fault becomes a typed
/// [`Error`].
pub fn response_inner(xml: &str) -> Result<&str> {
    match locate_body(xml)? {
        BodyContent::Fault(e) => Err(e),
        BodyContent::Response(inner) => Ok(inner),
    }
}

/// Decodes the inner XML of a response element into `T` with serde (whose fields are the
/// response element's children, usually `returnval`); a decode error names the field.
pub fn serde_decode<T: DeserializeOwned>(inner: &str) -> Result<T> {
    let wrapped = format!("<r>{inner}</r>");
    let mut de = quick_xml::de::Deserializer::from_str(&wrapped);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        Error::new(
            ErrorKind::Decode,
            format!(
                "cannot decode the vSphere response at {}: {}",
                e.path(),
                e.inner()
            ),
        )
    })
}

/// Decodes a whole SOAP response body into `T` (see [`serde_decode`]).
pub fn decode_response<T: DeserializeOwned>(xml: &str) -> Result<T> {
    serde_decode(response_inner(xml)?)
}

fn not_soap(detail: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::NotVsphere,
        format!("the response is not a SOAP envelope ({detail})"),
    )
}

fn locate_body(xml: &str) -> Result<BodyContent<'_>> {
    let mut reader = Reader::from_str(xml);
    let mut in_body = false;
    loop {
        match reader.read_event().map_err(not_soap)? {
            Event::Start(e) => {
                let local = e.local_name();
                if !in_body {
                    in_body = local.as_ref() == b"Body";
                    continue;
                }
                let name = e.name().as_ref().to_vec();
                let span = reader.read_to_end(QName(&name)).map_err(not_soap)?;
                let inner = &xml[span.start as usize..span.end as usize];
                if local.as_ref() == b"Fault" {
                    return Ok(BodyContent::Fault(decode_fault(inner)));
                }
                return Ok(BodyContent::Response(inner));
            }
            Event::Empty(_) if in_body => return Ok(BodyContent::Response("")),
            Event::End(e) if in_body && e.local_name().as_ref() == b"Body" => {
                return Ok(BodyContent::Response(""))
            }
            Event::Eof => return Err(not_soap("no SOAP Body element")),
            _ => {}
        }
    }
}

/// Reads `faultstring` and the fault type (the `detail` child's `xsi:type`, or its element name
/// without the `Fault` suffix) from the inner XML of a `Fault` element.
fn decode_fault(inner: &str) -> Error {
    let mut reader = Reader::from_str(inner);
    let mut message = String::new();
    let mut fault_type: Option<String> = None;
    let mut depth_in_detail: Option<usize> = None;
    let mut in_faultstring = false;
    let mut depth = 0usize;
    while let Ok(event) = reader.read_event() {
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let is_start = matches!(event, Event::Start(_));
                let local = e.local_name();
                if depth_in_detail == Some(depth) && fault_type.is_none() {
                    fault_type = Some(fault_name(e));
                }
                if local.as_ref() == b"detail" && is_start {
                    depth_in_detail = Some(depth + 1);
                }
                in_faultstring = local.as_ref() == b"faultstring" && is_start;
                if is_start {
                    depth += 1;
                }
            }
            Event::Text(t) if in_faultstring => {
                if let Ok(text) = t.decode() {
                    let text = quick_xml::escape::unescape(&text)
                        .map(|c| c.into_owned())
                        .unwrap_or_else(|_| text.into_owned());
                    message.push_str(&text);
                }
            }
            Event::GeneralRef(r) if in_faultstring => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    message.push(c);
                } else if let Ok(name) = r.decode() {
                    if let Some(text) = quick_xml::escape::resolve_predefined_entity(&name) {
                        message.push_str(text);
                    }
                }
            }
            Event::End(_) => {
                in_faultstring = false;
                depth = depth.saturating_sub(1);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let fault = fault_type.unwrap_or_else(|| "SoapFault".to_string());
    if message.is_empty() {
        message = format!("vSphere returned the fault {fault}");
    }
    Error::from_fault(&fault, message)
}

fn fault_name(e: &BytesStart<'_>) -> String {
    for attr in e.attributes().flatten() {
        if attr.key.local_name().as_ref() == b"type" && attr.key.as_ref() != b"type" {
            if let Ok(v) = attr.unescape_value() {
                return strip_prefix(&v).to_string();
            }
        }
    }
    let local = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
    local
        .strip_suffix("Fault")
        .map(str::to_string)
        .unwrap_or(local)
}

fn strip_prefix(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn writes_an_exact_envelope() {
        let mut w = RequestWriter::new(
            "Login",
            &ManagedObjectReference::new("SessionManager", "ha-sessionmgr"),
        );
        w.text("userName", "root").text("password", "a<b&c");
        let xml = String::from_utf8(w.finish()).unwrap();
        assert!(xml.contains(r#"<Login xmlns="urn:vim25"><_this type="SessionManager">ha-sessionmgr</_this><userName>root</userName><password>a&lt;b&amp;c</password></Login>"#), "{xml}");
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><soapenv:Envelope"));
    }

    #[derive(Deserialize, Debug)]
    struct R {
        returnval: String,
    }

    #[test]
    fn decodes_a_response() {
        let xml = r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><CurrentTimeResponse xmlns="urn:vim25"><returnval>2026-01-01T00:00:00Z</returnval></CurrentTimeResponse></soapenv:Body></soapenv:Envelope>"#;
        let r: R = decode_response(xml).unwrap();
        assert_eq!(r.returnval, "2026-01-01T00:00:00Z");
    }

    #[test]
    fn decodes_a_fault_with_its_type() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>Login failure &amp; more</faultstring><detail><InvalidLoginFault xmlns="urn:vim25" xsi:type="InvalidLogin"></InvalidLoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#;
        let e = decode_response::<R>(xml).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Auth);
        assert_eq!(e.fault.as_deref(), Some("InvalidLogin"));
        assert_eq!(e.message, "Login failure & more");
    }

    #[test]
    fn fault_without_xsi_type_uses_the_element_name() {
        let xml = r#"<Envelope><Body><Fault><faultstring>gone</faultstring><detail><ManagedObjectNotFoundFault/></detail></Fault></Body></Envelope>"#;
        let e = decode_response::<R>(xml).unwrap_err();
        assert!(e.is_not_found(), "{e:?}");
    }

    #[test]
    fn html_is_not_vsphere() {
        let e = decode_response::<R>("<html><body>404 Not Found</body></html>").unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotVsphere);
        let e = decode_response::<R>("not xml at all <<<").unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotVsphere);
    }

    #[test]
    fn decode_error_names_the_field() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct N {
            returnval: u32,
        }
        let xml = r#"<Envelope><Body><XResponse><returnval>abc</returnval></XResponse></Body></Envelope>"#;
        let e = decode_response::<N>(xml).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Decode);
        assert!(e.message.contains("returnval"), "{}", e.message);
    }
}
