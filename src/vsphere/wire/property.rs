//! The PropertyCollector: "these properties of these objects" in as few round trips as the
//! server allows. Filter specs (with container views and traversal specs), paged retrieval
//! (`RetrievePropertiesEx` + `ContinueRetrievePropertiesEx`), and results as typed property maps.

use std::collections::BTreeMap;

use crate::vsphere::client::Client;
use crate::vsphere::envelope::RequestWriter;
use crate::vsphere::error::{Error, ErrorKind, Result};
use crate::vsphere::methods::{
    ContinueRetrievePropertiesEx, CreateContainerView, RetrievePropertiesEx,
};
use crate::vsphere::types::ManagedObjectReference;
use crate::vsphere::xml::{local, Node, TreeBuilder};

/// Objects per page asked of the server; large enough that "all VMs" is one page almost always.
pub const PAGE_SIZE: u32 = 10_000;

/// The types in the session's one container view of the inventory, subtypes named too (vSphere
/// includes subtypes of a listed type; some servers, such as the simulator, only exact types).
/// Reads of any of them share the view, so a session makes one view whatever it reads.
pub const SESSION_VIEW_KINDS: &[&str] = &[
    "Datacenter",
    "ComputeResource",
    "ClusterComputeResource",
    "HostSystem",
    "Datastore",
    "Network",
    "OpaqueNetwork",
    "DistributedVirtualPortgroup",
    "DistributedVirtualSwitch",
    "VmwareDistributedVirtualSwitch",
    "VirtualMachine",
];

/// Whether objects of `kind` are in the session view.
fn in_session_view(kind: &str) -> bool {
    SESSION_VIEW_KINDS.contains(&kind)
}

/// Which properties of which object type to collect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PropertySpec {
    /// The managed object type, e.g. `VirtualMachine`.
    pub kind: String,
    /// Property paths, e.g. `config.hardware.numCPU`; empty with `all` = every property.
    pub paths: Vec<String>,
    /// Collect every property.
    pub all: bool,
}

impl PropertySpec {
    /// These paths of objects of type `kind`.
    pub fn new(kind: &str, paths: &[&str]) -> Self {
        Self {
            kind: kind.to_string(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            all: false,
        }
    }
}

/// A step from one object to others through a property (e.g. a container view's `view`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TraversalSpec {
    /// The spec's name, for recursion by reference.
    pub name: String,
    /// The type that has the property.
    pub kind: String,
    /// The property to follow.
    pub path: String,
    /// Whether to leave out the object the traversal starts from.
    pub skip: bool,
}

/// Where collection starts, and how it traverses from there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectSpec {
    /// The starting object.
    pub obj: ManagedObjectReference,
    /// Leave the starting object itself out of the results.
    pub skip: bool,
    /// Traversals from it.
    pub select: Vec<TraversalSpec>,
}

impl ObjectSpec {
    /// Just this object.
    pub fn object(obj: ManagedObjectReference) -> Self {
        Self {
            obj,
            skip: false,
            select: Vec::new(),
        }
    }

    /// Every object a container view holds (not the view itself).
    pub fn view(view: ManagedObjectReference) -> Self {
        Self {
            obj: view,
            skip: true,
            select: vec![TraversalSpec {
                name: "traverseView".to_string(),
                kind: "ContainerView".to_string(),
                path: "view".to_string(),
                skip: false,
            }],
        }
    }
}

/// A `PropertyFilterSpec`: properties to collect, and the objects to collect them from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PropertyFilterSpec {
    /// Properties per type.
    pub props: Vec<PropertySpec>,
    /// Objects and traversals.
    pub objects: Vec<ObjectSpec>,
}

impl PropertyFilterSpec {
    /// Writes the spec as the element `name` (`specSet` or `spec`), in the WSDL's element order.
    pub fn write(&self, name: &str, w: &mut RequestWriter) {
        w.start(name, None);
        for p in &self.props {
            w.start("propSet", None);
            w.text("type", &p.kind);
            w.text("all", if p.all { "true" } else { "false" });
            for path in &p.paths {
                w.text("pathSet", path);
            }
            w.end("propSet");
        }
        for o in &self.objects {
            w.start("objectSet", None);
            w.moref("obj", &o.obj);
            w.text("skip", if o.skip { "true" } else { "false" });
            for t in &o.select {
                w.start("selectSet", Some("TraversalSpec"));
                w.text("name", &t.name);
                w.text("type", &t.kind);
                w.text("path", &t.path);
                w.text("skip", if t.skip { "true" } else { "false" });
                w.end("selectSet");
            }
            w.end("objectSet");
        }
        w.end(name);
    }
}

/// One object's collected properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectContent {
    /// The object.
    pub obj: ManagedObjectReference,
    /// Property path to value (the `val` element; read it with the typed data objects).
    pub props: BTreeMap<String, Node>,
    /// Properties the server could not read, with the fault type (e.g. `NotAuthenticated`).
    pub missing: BTreeMap<String, String>,
}

impl ObjectContent {
    /// Reads one `objects`/`returnval` element of a retrieve result.
    pub fn from_node(node: &Node) -> Result<Self> {
        Self::from_owned(node.clone())
    }

    /// Reads one `objects`/`returnval` element, taking its value subtrees without copying
    /// them (the bulk-read path).
    pub fn from_owned(node: Node) -> Result<Self> {
        let obj = node.moref_of("obj").ok_or_else(|| {
            Error::new(
                ErrorKind::Decode,
                "a property collector result has no object",
            )
        })?;
        let mut props = BTreeMap::new();
        let mut rest = Vec::new();
        for p in node.children {
            if p.name != "propSet" {
                rest.push(p);
                continue;
            }
            let mut name = None;
            let mut val = None;
            for c in p.children {
                match c.name.as_str() {
                    "name" => name = Some(c.text),
                    "val" => val = Some(c),
                    _ => {}
                }
            }
            if let (Some(name), Some(val)) = (name, val) {
                props.insert(name, val);
            }
        }
        let node = Node {
            children: rest,
            ..Node::default()
        };
        let mut missing = BTreeMap::new();
        for m in node.children_named("missingSet") {
            let path = m.text_of("path").unwrap_or_default().to_string();
            let fault = m
                .child("fault")
                .and_then(|f| f.child("fault"))
                .map(|f| f.type_or("MethodFault").to_string())
                .unwrap_or_else(|| "MethodFault".to_string());
            missing.insert(path, fault);
        }
        Ok(Self {
            obj,
            props,
            missing,
        })
    }

    /// The value node of `path`.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.props.get(path)
    }

    /// The text of a simple-valued property.
    pub fn text(&self, path: &str) -> Option<&str> {
        self.props.get(path).map(|n| n.text.as_str())
    }

    /// A simple-valued property parsed as `T`.
    pub fn parse<T: std::str::FromStr>(&self, path: &str) -> Option<T> {
        self.text(path).and_then(|t| t.trim().parse().ok())
    }

    /// A boolean property.
    pub fn bool(&self, path: &str) -> Option<bool> {
        self.text(path).map(|t| matches!(t.trim(), "true" | "1"))
    }

    /// A reference-valued property.
    pub fn moref(&self, path: &str) -> Option<ManagedObjectReference> {
        self.props.get(path).and_then(Node::as_moref)
    }

    /// An array-of-references property (`ArrayOfManagedObjectReference`).
    pub fn morefs(&self, path: &str) -> Vec<ManagedObjectReference> {
        self.props
            .get(path)
            .map(|n| n.children.iter().filter_map(Node::as_moref).collect())
            .unwrap_or_default()
    }
}

/// Reads a `RetrieveResult` node into its objects and continuation token.
pub(crate) fn read_result(node: Option<Node>) -> Result<(Vec<ObjectContent>, Option<String>)> {
    let Some(node) = node else {
        return Ok((Vec::new(), None));
    };
    let token = node
        .text_of("token")
        .map(str::to_string)
        .filter(|t| !t.is_empty());
    let objects = node
        .children
        .into_iter()
        .filter(|n| n.name == "objects")
        .map(ObjectContent::from_owned)
        .collect::<Result<Vec<_>>>()?;
    Ok((objects, token))
}

/// Reads a `RetrievePropertiesEx` answer from its body as it arrives: each `objects` element of
/// the `returnval` is built, handed to `on` and dropped; returns the continuation token.
async fn stream_objects(
    resp: reqwest::Response,
    on: &mut impl FnMut(ObjectContent) -> Result<()>,
) -> Result<Option<String>> {
    use futures::TryStreamExt;
    use quick_xml::events::Event;
    let body = tokio_util::io::StreamReader::new(
        resp.bytes_stream()
            .map_err(|e| std::io::Error::other(e.to_string())),
    );
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut buf = Vec::new();
    // Open elements outside the one being built.
    let mut path: Vec<String> = Vec::new();
    let mut tree: Option<TreeBuilder> = None;
    let mut token = None;
    loop {
        let event = reader.read_event_into_async(&mut buf).await.map_err(|e| {
            Error::new(
                ErrorKind::Transport,
                format!("reading a property collector answer: {e}"),
            )
        })?;
        let done = match (&mut tree, event) {
            (_, Event::Eof) => break,
            (Some(t), event) => t.feed(event)?,
            (None, Event::Start(e)) => {
                let name = local(e.name().as_ref());
                if path.last().map(String::as_str) == Some("returnval")
                    && (name == "objects" || name == "token")
                {
                    let mut t = TreeBuilder::default();
                    t.feed(Event::Start(e))?;
                    tree = Some(t);
                } else {
                    path.push(name);
                }
                None
            }
            (None, Event::End(_)) => {
                path.pop();
                None
            }
            (None, _) => None,
        };
        if let Some(node) = done {
            tree = None;
            match node.name.as_str() {
                "token" => token = Some(node.text),
                _ => on(ObjectContent::from_owned(node)?)?,
            }
        }
        buf.clear();
    }
    if tree.is_some() {
        return Err(Error::new(
            ErrorKind::Transport,
            "a property collector answer ended in the middle of an object",
        ));
    }
    Ok(token)
}

impl Client {
    /// Every object and property `spec` selects, following continuation tokens.
    pub async fn retrieve(&self, spec: PropertyFilterSpec) -> Result<Vec<ObjectContent>> {
        let this = self.service_content().property_collector.clone();
        let first = self
            .call(&RetrievePropertiesEx {
                this: this.clone(),
                spec,
                max_objects: Some(PAGE_SIZE),
            })
            .await?;
        let (mut objects, mut token) = read_result(first)?;
        while let Some(t) = token {
            let next = self
                .call(&ContinueRetrievePropertiesEx {
                    this: this.clone(),
                    token: t,
                })
                .await?;
            let (more, next_token) = read_result(next)?;
            objects.extend(more);
            token = next_token;
        }
        Ok(objects)
    }

    /// Every object `spec` selects, handed to `on` one at a time as the answer streams in
    /// (pages of `page` objects, following continuation tokens): a large answer never sits in
    /// memory whole, neither as text nor as a tree.
    pub async fn retrieve_each(
        &self,
        spec: PropertyFilterSpec,
        page: u32,
        mut on: impl FnMut(ObjectContent) -> Result<()>,
    ) -> Result<()> {
        let this = self.service_content().property_collector.clone();
        let first = self
            .call_streamed(&RetrievePropertiesEx {
                this: this.clone(),
                spec,
                max_objects: Some(page),
            })
            .await?;
        let mut token = stream_objects(first, &mut on).await?;
        while let Some(t) = token {
            let next = self
                .call_streamed(&ContinueRetrievePropertiesEx {
                    this: this.clone(),
                    token: t,
                })
                .await?;
            token = stream_objects(next, &mut on).await?;
        }
        Ok(())
    }

    /// Properties `paths` of one object. A deleted object is `ErrorKind::NotFound`.
    pub async fn properties(
        &self,
        obj: &ManagedObjectReference,
        paths: &[&str],
    ) -> Result<ObjectContent> {
        let spec = PropertyFilterSpec {
            props: vec![PropertySpec::new(&obj.kind, paths)],
            objects: vec![ObjectSpec::object(obj.clone())],
        };
        self.retrieve(spec)
            .await?
            .into_iter()
            .find(|o| o.obj == *obj)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("{obj} does not exist")))
    }

    /// A container view of every object of `kinds` below `container` (recursively), reused for
    /// the rest of the session: later calls cost no round trip.
    pub async fn container_view(
        &self,
        container: &ManagedObjectReference,
        kinds: &[&str],
    ) -> Result<ManagedObjectReference> {
        let key = format!("{container}|{}", kinds.join(","));
        if let Some(view) = self.views().lock().expect("lock").get(&key) {
            return Ok(view.clone());
        }
        let view_manager =
            self.service_content().view_manager.clone().ok_or_else(|| {
                Error::new(ErrorKind::NotVsphere, "the endpoint has no view manager")
            })?;
        let view = self
            .call(&CreateContainerView {
                this: view_manager,
                container: container.clone(),
                kinds: kinds.iter().map(|k| k.to_string()).collect(),
                recursive: true,
            })
            .await?;
        self.views().lock().expect("lock").insert(key, view.clone());
        Ok(view)
    }

    /// Properties `paths` of every object of type `kind` in the inventory: one round trip
    /// (two the first time a view of that type is needed), whatever the inventory's size.
    pub async fn retrieve_all(&self, kind: &str, paths: &[&str]) -> Result<Vec<ObjectContent>> {
        self.retrieve_in_view(&[kind], vec![PropertySpec::new(kind, paths)])
            .await
    }

    /// Collects `props` from every object of `kinds` through a container view of them: the
    /// session's one inventory view when it holds them all (see [`SESSION_VIEW_KINDS`]). A
    /// view that died with an expired session is made again once.
    pub async fn retrieve_in_view(
        &self,
        kinds: &[&str],
        props: Vec<PropertySpec>,
    ) -> Result<Vec<ObjectContent>> {
        let root = self.service_content().root_folder.clone();
        let kinds = if kinds.iter().all(|k| in_session_view(k)) {
            SESSION_VIEW_KINDS
        } else {
            kinds
        };
        for attempt in 0..2 {
            let view = self.container_view(&root, kinds).await?;
            match self
                .retrieve(PropertyFilterSpec {
                    props: props.clone(),
                    objects: vec![ObjectSpec::view(view.clone())],
                })
                .await
            {
                Err(e) if e.is_not_found() && attempt == 0 => {
                    self.views().lock().expect("lock").retain(|_, v| *v != view);
                }
                other => return other,
            }
        }
        unreachable!("the loop returns on its second attempt")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::xml::parse_fragment;

    #[test]
    fn writes_a_view_spec_in_wsdl_order() {
        let spec = PropertyFilterSpec {
            props: vec![PropertySpec::new(
                "VirtualMachine",
                &["name", "runtime.powerState"],
            )],
            objects: vec![ObjectSpec::view(ManagedObjectReference::new(
                "ContainerView",
                "session[1]view",
            ))],
        };
        let mut w = RequestWriter::new(
            "RetrievePropertiesEx",
            &ManagedObjectReference::new("PropertyCollector", "propertyCollector"),
        );
        spec.write("specSet", &mut w);
        let xml = String::from_utf8(w.finish()).unwrap();
        assert!(xml.contains("<specSet><propSet><type>VirtualMachine</type><all>false</all><pathSet>name</pathSet><pathSet>runtime.powerState</pathSet></propSet><objectSet><obj type=\"ContainerView\">session[1]view</obj><skip>true</skip><selectSet xsi:type=\"TraversalSpec\"><name>traverseView</name><type>ContainerView</type><path>view</path><skip>false</skip></selectSet></objectSet></specSet>"), "{xml}");
    }

    #[test]
    fn reads_results_with_token_and_missing_properties() {
        let xml = r#"<returnval><token>abc</token><objects><obj type="VirtualMachine">vm-1</obj><propSet><name>name</name><val xsi:type="xsd:string">web &amp; db</val></propSet><propSet><name>runtime.host</name><val type="HostSystem" xsi:type="ManagedObjectReference">host-9</val></propSet><missingSet><path>guest.ipAddress</path><fault><fault xsi:type="NoPermission"></fault></fault></missingSet></objects></returnval>"#;
        let node = parse_fragment(xml).unwrap().pop();
        let (objects, token) = read_result(node).unwrap();
        assert_eq!(token.as_deref(), Some("abc"));
        let o = &objects[0];
        assert_eq!(o.text("name"), Some("web & db"));
        assert_eq!(
            o.moref("runtime.host"),
            Some(ManagedObjectReference::new("HostSystem", "host-9"))
        );
        assert_eq!(
            o.missing.get("guest.ipAddress").map(String::as_str),
            Some("NoPermission")
        );
    }

    #[test]
    fn empty_result_is_no_objects() {
        let (objects, token) = read_result(None).unwrap();
        assert!(objects.is_empty() && token.is_none());
    }
}
