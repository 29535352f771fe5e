//! A small XML element tree for vSphere's dynamic data: property values whose type is only known
//! from their `xsi:type` (device lists, property collector results). Typed data objects are read
//! from it; derived types the client does not model are kept as nodes, never dropped.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::vsphere::error::{Error, ErrorKind, Result};
use crate::vsphere::types::ManagedObjectReference;

/// Deepest nesting accepted (vSphere data is far shallower; garbage input is not).
const MAX_DEPTH: usize = 256;

/// One XML element.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    /// Local element name (no namespace prefix).
    pub name: String,
    /// The `xsi:type` attribute without prefix, e.g. `VirtualE1000e`.
    pub xsi_type: Option<String>,
    /// Other attributes (local names), e.g. `type` on managed object references.
    pub attrs: Vec<(String, String)>,
    /// Text content, unescaped (for leaf elements).
    pub text: String,
    /// Child elements in document order.
    pub children: Vec<Node>,
}

impl Node {
    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// All children named `name` (repeated elements are how SOAP encodes arrays).
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The text of the first child named `name`.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// The text of the first child named `name`, or an error naming it.
    pub fn require_text(&self, name: &str) -> Result<&str> {
        self.text_of(name).ok_or_else(|| missing(&self.name, name))
    }

    /// The first child named `name` parsed as `T`.
    pub fn parse_of<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.text_of(name).and_then(|t| t.trim().parse().ok())
    }

    /// A boolean child (`true`/`false`/`1`/`0`).
    pub fn bool_of(&self, name: &str) -> Option<bool> {
        self.text_of(name).map(|t| matches!(t.trim(), "true" | "1"))
    }

    /// An attribute by local name.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// This element read as a managed object reference (`<x type="T">id</x>`).
    pub fn as_moref(&self) -> Option<ManagedObjectReference> {
        let kind = self.attr("type")?;
        Some(ManagedObjectReference::new(kind, self.text.trim()))
    }

    /// The first child named `name` read as a managed object reference.
    pub fn moref_of(&self, name: &str) -> Option<ManagedObjectReference> {
        self.child(name).and_then(Node::as_moref)
    }

    /// The element's type: its `xsi:type` if set, else `declared`.
    pub fn type_or<'a>(&'a self, declared: &'a str) -> &'a str {
        self.xsi_type.as_deref().unwrap_or(declared)
    }
}

fn missing(parent: &str, name: &str) -> Error {
    Error::new(
        ErrorKind::Decode,
        format!("vSphere response: <{parent}> has no <{name}>"),
    )
}

fn decode_error(detail: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Decode,
        format!("cannot read the vSphere response XML: {detail}"),
    )
}

/// An element or attribute name without its namespace prefix.
pub fn local(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    match name.rsplit_once(':') {
        Some((_, local)) => local.to_string(),
        None => name.into_owned(),
    }
}

fn start_node(e: &BytesStart<'_>) -> Result<Node> {
    let mut node = Node {
        name: local(e.name().as_ref()),
        ..Node::default()
    };
    for attr in e.attributes() {
        let attr = attr.map_err(decode_error)?;
        let key = attr.key.as_ref();
        let value = attr.unescape_value().map_err(decode_error)?.into_owned();
        if key.starts_with(b"xmlns") {
            continue;
        }
        let name = local(key);
        if name == "type" && key != b"type" {
            node.xsi_type = Some(match value.rsplit_once(':') {
                Some((_, t)) => t.to_string(),
                None => value,
            });
        } else {
            node.attrs.push((name, value));
        }
    }
    Ok(node)
}

/// Builds element trees from XML events, one event at a time: the shared core of
/// [`parse_fragment`] (a whole text) and of streamed responses (elements handed over as they
/// complete, so a large answer never sits in memory whole).
#[derive(Default)]
pub struct TreeBuilder {
    stack: Vec<Node>,
}

impl TreeBuilder {
    /// Feeds one event; returns an element that this event completed at the outermost level
    /// (depth 0).
    pub fn feed(&mut self, event: Event<'_>) -> Result<Option<Node>> {
        match event {
            Event::Start(e) => {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(decode_error("elements nested too deeply"));
                }
                self.stack.push(start_node(&e)?);
                Ok(None)
            }
            Event::Empty(e) => {
                let node = start_node(&e)?;
                Ok(self.attach(node))
            }
            Event::End(_) => {
                let node = self
                    .stack
                    .pop()
                    .ok_or_else(|| decode_error("unbalanced end tag"))?;
                Ok(self.attach(node))
            }
            Event::Text(t) => {
                if let Some(top) = self.stack.last_mut() {
                    let text = t.decode().map_err(decode_error)?;
                    let text = quick_xml::escape::unescape(&text).map_err(decode_error)?;
                    top.text.push_str(&text);
                }
                Ok(None)
            }
            Event::CData(t) => {
                if let Some(top) = self.stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&t));
                }
                Ok(None)
            }
            Event::GeneralRef(r) => {
                if let Some(top) = self.stack.last_mut() {
                    if let Some(c) = r.resolve_char_ref().map_err(decode_error)? {
                        top.text.push(c);
                    } else {
                        let name = r.decode().map_err(decode_error)?;
                        let text = quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| decode_error(format!("unknown entity &{name};")))?;
                        top.text.push_str(text);
                    }
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Makes `node` a child of the open element, or returns it when none is open.
    fn attach(&mut self, node: Node) -> Option<Node> {
        match self.stack.last_mut() {
            Some(parent) => {
                parent.children.push(node);
                None
            }
            None => Some(node),
        }
    }

    /// Checks that every element was closed.
    pub fn finish(&self) -> Result<()> {
        if self.stack.is_empty() {
            Ok(())
        } else {
            Err(decode_error("unexpected end of document"))
        }
    }
}

/// Parses an XML fragment (zero or more sibling elements, e.g. the inner XML of a SOAP response
/// element) into nodes.
pub fn parse_fragment(xml: &str) -> Result<Vec<Node>> {
    let mut reader = Reader::from_str(xml);
    let mut tree = TreeBuilder::default();
    let mut roots = Vec::new();
    loop {
        match reader.read_event().map_err(decode_error)? {
            Event::Eof => break,
            event => roots.extend(tree.feed(event)?),
        }
    }
    tree.finish()?;
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_polymorphic_values() {
        let xml = r#"<returnval><obj type="VirtualMachine">vm-42</obj><propSet><name>config.hardware.device</name><val xsi:type="ArrayOfVirtualDevice"><VirtualDevice xsi:type="VirtualE1000e"><key>4000</key><macAddress>00:50:56:aa:bb:cc</macAddress></VirtualDevice><VirtualDevice xsi:type="VirtualFutureThing"><key>9</key></VirtualDevice></val></propSet></returnval>"#;
        let nodes = parse_fragment(xml).unwrap();
        let r = &nodes[0];
        assert_eq!(
            r.moref_of("obj"),
            Some(ManagedObjectReference::new("VirtualMachine", "vm-42"))
        );
        let val = r.child("propSet").unwrap().child("val").unwrap();
        assert_eq!(val.xsi_type.as_deref(), Some("ArrayOfVirtualDevice"));
        let types: Vec<_> = val
            .children
            .iter()
            .map(|d| d.type_or("VirtualDevice"))
            .collect();
        assert_eq!(types, ["VirtualE1000e", "VirtualFutureThing"]);
        assert_eq!(val.children[0].parse_of::<i32>("key"), Some(4000));
    }

    #[test]
    fn unescapes_text_and_entities() {
        let nodes = parse_fragment("<a>x &amp; y &#65;<![CDATA[<z>]]></a>").unwrap();
        assert_eq!(nodes[0].text, "x & y A<z>");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_fragment("<a><b></a>").is_err());
        assert!(parse_fragment("<a>").is_err());
        let deep = "<a>".repeat(1000);
        assert!(parse_fragment(&deep).is_err());
    }
}
