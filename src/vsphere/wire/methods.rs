//! vSphere SOAP methods, each paired with its response type (see [`Method`]).

use serde::Deserialize;

use crate::vsphere::envelope::{serde_decode, RequestWriter};
use crate::vsphere::error::Result;
use crate::vsphere::property::PropertyFilterSpec;
use crate::vsphere::secret::Secret;
use crate::vsphere::types::{ManagedObjectReference, ServiceContent, UserSession};
use crate::vsphere::xml::{parse_fragment, Node};

/// A SOAP method: its name, how its arguments are written, and what it returns.
pub trait Method {
    /// The decoded response.
    type Response;
    /// The method name, e.g. `RetrieveServiceContent`.
    const NAME: &'static str;
    /// Whether calling it twice is harmless (only such calls may be retried).
    const IDEMPOTENT: bool;
    /// The object the method is invoked on.
    fn this(&self) -> &ManagedObjectReference;
    /// Writes the arguments after `_this`.
    fn write_args(&self, _w: &mut RequestWriter) {}
    /// Whether the body contains secrets (then the wire log shows it redacted).
    fn has_secrets(&self) -> bool {
        false
    }
    /// Decodes the inner XML of the `<NameResponse>` element.
    fn decode(inner: &str) -> Result<Self::Response>;
    /// The method's SOAP name for this call (for method types that serve several calls).
    fn method_name(&self) -> &'static str {
        Self::NAME
    }
    /// Whether this call may be retried (the type's `IDEMPOTENT` unless a call says otherwise).
    fn is_idempotent(&self) -> bool {
        Self::IDEMPOTENT
    }
    /// Time this call may take on top of the API timeout (a long poll's own wait).
    fn extra_time(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    /// Whether the call may change what the cached inventory holds (hosts, datastores,
    /// networks): every write unless its type knows better (VM, task and collector calls
    /// don't).
    fn changes_inventory(&self) -> bool {
        !self.is_idempotent()
    }
}

/// A response holding one `returnval`.
#[derive(Debug, Deserialize)]
pub struct Returnval<T> {
    /// The returned value.
    pub returnval: T,
}

/// A response with no return value.
#[derive(Debug, Default, Deserialize)]
pub struct Void {}

/// `ServiceInstance.RetrieveServiceContent`: the endpoint's entry points.
pub struct RetrieveServiceContent {
    this: ManagedObjectReference,
}

impl Default for RetrieveServiceContent {
    fn default() -> Self {
        Self {
            this: ManagedObjectReference::service_instance(),
        }
    }
}

impl Method for RetrieveServiceContent {
    type Response = Returnval<ServiceContent>;
    const NAME: &'static str = "RetrieveServiceContent";
    fn decode(inner: &str) -> Result<Self::Response> {
        serde_decode(inner)
    }
    const IDEMPOTENT: bool = true;
    fn this(&self) -> &ManagedObjectReference {
        &self.this
    }
}

/// `SessionManager.Login`.
pub struct Login {
    /// The session manager.
    pub this: ManagedObjectReference,
    /// User name.
    pub user: String,
    /// Password.
    pub password: Secret,
}

impl Method for Login {
    type Response = Returnval<UserSession>;
    const NAME: &'static str = "Login";
    fn decode(inner: &str) -> Result<Self::Response> {
        serde_decode(inner)
    }
    const IDEMPOTENT: bool = false;
    fn this(&self) -> &ManagedObjectReference {
        &self.this
    }
    fn write_args(&self, w: &mut RequestWriter) {
        w.text("userName", &self.user)
            .text("password", self.password.expose());
    }
    fn has_secrets(&self) -> bool {
        true
    }
}

/// `SessionManager.Logout`.
pub struct Logout {
    /// The session manager.
    pub this: ManagedObjectReference,
}

impl Method for Logout {
    type Response = Void;
    const NAME: &'static str = "Logout";
    fn decode(inner: &str) -> Result<Self::Response> {
        serde_decode(inner)
    }
    const IDEMPOTENT: bool = true;
    fn this(&self) -> &ManagedObjectReference {
        &self.this
    }
}

/// `ServiceInstance.CurrentTime`: the cheapest authenticated call (session keep-alive).
pub struct CurrentTime {
    this: ManagedObjectReference,
}

impl Default for CurrentTime {
    fn default() -> Self {
        Self {
            this: ManagedObjectReference::service_instance(),
        }
    }
}

impl Method for CurrentTime {
    type Response = Returnval<String>;
    const NAME: &'static str = "CurrentTime";
    fn decode(inner: &str) -> Result<Self::Response> {
        serde_decode(inner)
    }
    const IDEMPOTENT: bool = true;
    fn this(&self) -> &ManagedObjectReference {
        &self.this
    }
}

/// The response of a method returning at most one element, as a node tree (`None` when the
/// response element is empty, as vSphere sends "unset").
fn decode_optional_node(inner: &str) -> Result<Option<Node>> {
    Ok(parse_fragment(inner)?
        .into_iter()
        .find(|n| n.name == "returnval"))
}

/// Declares a method whose arguments are written by a closure over its fields.
/// The SOAP name of a method: the struct's name unless given.
macro_rules! soap_name {
    ($name:ident) => {
        stringify!($name)
    };
    ($name:ident, $soap:literal) => {
        $soap
    };
}

macro_rules! node_method {
    (
        $(#[$doc:meta])* $name:ident $(as $soap:literal)? { $($field:ident : $ty:ty),* $(,)? }
        returns $resp:ty, decode $decode:expr, idempotent $idem:expr, $(inventory $inv:expr,)?
        write |$s:ident, $w:ident| $body:block
    ) => {
        $(#[$doc])*
        pub struct $name {
            /// The object the method is invoked on.
            pub this: ManagedObjectReference,
            $(#[allow(missing_docs)] pub $field: $ty,)*
        }

        impl Method for $name {
            type Response = $resp;
            const NAME: &'static str = soap_name!($name $(, $soap)?);
            const IDEMPOTENT: bool = $idem;
            fn this(&self) -> &ManagedObjectReference {
                &self.this
            }
            #[allow(unused_variables)]
            fn write_args(&self, $w: &mut RequestWriter) {
                let $s = self;
                $body
            }
            fn decode(inner: &str) -> Result<Self::Response> {
                $decode(inner)
            }
            $(fn changes_inventory(&self) -> bool {
                $inv
            })?
        }
    };
}

fn decode_void(_inner: &str) -> Result<()> {
    Ok(())
}

fn decode_moref(inner: &str) -> Result<Option<ManagedObjectReference>> {
    Ok(decode_optional_node(inner)?.and_then(|n| n.as_moref()))
}

fn decode_morefs(inner: &str) -> Result<Vec<ManagedObjectReference>> {
    Ok(parse_fragment(inner)?
        .iter()
        .filter(|n| n.name == "returnval")
        .filter_map(Node::as_moref)
        .collect())
}

fn require_moref(inner: &str) -> Result<ManagedObjectReference> {
    decode_moref(inner)?.ok_or_else(|| {
        crate::vsphere::error::Error::new(
            crate::vsphere::error::ErrorKind::Decode,
            "vSphere returned no object reference",
        )
    })
}

node_method! {
    /// `PropertyCollector.RetrievePropertiesEx`: one page of the objects and properties a
    /// filter spec selects.
    RetrievePropertiesEx { spec: PropertyFilterSpec, max_objects: Option<u32> }
    returns Option<Node>, decode decode_optional_node, idempotent true,
    write |s, w| {
        s.spec.write("specSet", w);
        w.start("options", None);
        if let Some(max) = s.max_objects {
            w.text("maxObjects", &max.to_string());
        }
        w.end("options");
    }
}

node_method! {
    /// `PropertyCollector.ContinueRetrievePropertiesEx`: the next page after a token.
    ContinueRetrievePropertiesEx { token: String }
    returns Option<Node>, decode decode_optional_node, idempotent true,
    write |s, w| { w.text("token", &s.token); }
}

node_method! {
    /// `ViewManager.CreateContainerView`: a view of every object of some types below a container.
    CreateContainerView { container: ManagedObjectReference, kinds: Vec<String>, recursive: bool }
    returns ManagedObjectReference, decode require_moref, idempotent false, inventory false,
    write |s, w| {
        w.moref("container", &s.container);
        for k in &s.kinds {
            w.text("type", k);
        }
        w.text("recursive", if s.recursive { "true" } else { "false" });
    }
}

node_method! {
    /// `View.DestroyView`.
    DestroyView {}
    returns (), decode decode_void, idempotent true,
    write |s, w| {}
}

node_method! {
    /// `PropertyCollector.CreatePropertyCollector`: a private collector (for update waits).
    CreatePropertyCollector {}
    returns ManagedObjectReference, decode require_moref, idempotent false, inventory false,
    write |s, w| {}
}

node_method! {
    /// `PropertyCollector.CreateFilter`: watch the objects and properties of a spec.
    CreateFilter { spec: PropertyFilterSpec, partial_updates: bool }
    returns ManagedObjectReference, decode require_moref, idempotent false, inventory false,
    write |s, w| {
        s.spec.write("spec", w);
        w.text("partialUpdates", if s.partial_updates { "true" } else { "false" });
    }
}

node_method! {
    /// `PropertyFilter.DestroyPropertyFilter`.
    DestroyPropertyFilter {}
    returns (), decode decode_void, idempotent true,
    write |s, w| {}
}

/// `PropertyCollector.WaitForUpdatesEx`: blocks until a watched property changes or
/// `max_wait_seconds` pass; `None` when nothing changed. Its HTTP request may take the wait on
/// top of the API timeout, so a long poll works whatever `api_timeout` is.
pub struct WaitForUpdatesEx {
    /// The collector.
    pub this: ManagedObjectReference,
    /// The version of the last answer ("" for the current state).
    pub version: String,
    /// The longest the server waits for a change.
    pub max_wait_seconds: u32,
}

impl Method for WaitForUpdatesEx {
    type Response = Option<Node>;
    const NAME: &'static str = "WaitForUpdatesEx";
    const IDEMPOTENT: bool = true;
    fn this(&self) -> &ManagedObjectReference {
        &self.this
    }
    fn write_args(&self, w: &mut RequestWriter) {
        w.text("version", &self.version);
        w.start("options", None);
        w.text("maxWaitSeconds", &self.max_wait_seconds.to_string());
        w.end("options");
    }
    fn decode(inner: &str) -> Result<Self::Response> {
        decode_optional_node(inner)
    }
    fn extra_time(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.max_wait_seconds))
    }
}

node_method! {
    /// `ViewManager.CreateListView`: a view of exactly these objects (e.g. the tasks awaited).
    CreateListView { objects: Vec<ManagedObjectReference> }
    returns ManagedObjectReference, decode require_moref, idempotent false, inventory false,
    write |s, w| {
        for o in &s.objects {
            w.moref("obj", o);
        }
    }
}

node_method! {
    /// `ListView.ModifyListView`: adds and removes objects; returns those it could not add.
    ModifyListView { add: Vec<ManagedObjectReference>, remove: Vec<ManagedObjectReference> }
    returns Vec<ManagedObjectReference>, decode decode_morefs, idempotent true, inventory false,
    write |s, w| {
        for o in &s.add {
            w.moref("add", o);
        }
        for o in &s.remove {
            w.moref("remove", o);
        }
    }
}

node_method! {
    /// `PropertyCollector.DestroyPropertyCollector` (its filters go with it).
    DestroyPropertyCollector {}
    returns (), decode decode_void, idempotent true,
    write |s, w| {}
}

node_method! {
    /// `Task.CancelTask`.
    CancelTask {}
    returns (), decode decode_void, idempotent false, inventory false,
    write |s, w| {}
}

node_method! {
    /// `SearchIndex.FindByInventoryPath`, e.g. `DC0/vm/web-01`.
    FindByInventoryPath { path: String }
    returns Option<ManagedObjectReference>, decode decode_moref, idempotent true,
    write |s, w| { w.text("inventoryPath", &s.path); }
}

node_method! {
    /// `SearchIndex.FindByUuid`: a VM by BIOS or instance UUID (or a host).
    FindByUuid { datacenter: Option<ManagedObjectReference>, uuid: String, vm_search: bool, instance_uuid: bool }
    returns Option<ManagedObjectReference>, decode decode_moref, idempotent true,
    write |s, w| {
        if let Some(dc) = &s.datacenter {
            w.moref("datacenter", dc);
        }
        w.text("uuid", &s.uuid)
            .text("vmSearch", if s.vm_search { "true" } else { "false" })
            .text("instanceUuid", if s.instance_uuid { "true" } else { "false" });
    }
}

node_method! {
    /// `SessionManager.TerminateSession`.
    TerminateSession { session_ids: Vec<String> }
    returns (), decode decode_void, idempotent true,
    write |s, w| {
        for id in &s.session_ids {
            w.text("sessionId", id);
        }
    }
}

node_method! {
    /// `FileManager.DeleteDatastoreFile_Task`: deletes `[datastore] path`; returns the task.
    DeleteDatastoreFileTask as "DeleteDatastoreFile_Task" { name: String, datacenter: Option<ManagedObjectReference> }
    returns ManagedObjectReference, decode require_moref, idempotent false,
    write |s, w| {
        w.text("name", &s.name);
        if let Some(dc) = &s.datacenter {
            w.moref("datacenter", dc);
        }
    }
}

/// A call of a method that returns nothing, with its arguments written by a closure.
pub struct PlainCall<'a> {
    /// The SOAP method.
    pub name: &'static str,
    /// The object it is invoked on.
    pub this: &'a ManagedObjectReference,
    /// Writes the arguments after `_this`.
    pub args: &'a (dyn Fn(&mut RequestWriter) + Send + Sync),
}

impl Method for PlainCall<'_> {
    type Response = ();
    const NAME: &'static str = "";
    const IDEMPOTENT: bool = false;
    fn this(&self) -> &ManagedObjectReference {
        self.this
    }
    fn write_args(&self, w: &mut RequestWriter) {
        (self.args)(w)
    }
    fn decode(_inner: &str) -> Result<()> {
        Ok(())
    }
    fn method_name(&self) -> &'static str {
        self.name
    }
}

/// A call of a method whose result is read as a node, with its arguments written by a closure
/// (for data-returning methods only one caller needs).
pub struct NodeCall<'a> {
    /// The SOAP method.
    pub name: &'static str,
    /// The object it is invoked on.
    pub this: &'a ManagedObjectReference,
    /// Writes the arguments after `_this`.
    pub args: &'a (dyn Fn(&mut RequestWriter) + Send + Sync),
    /// Whether the call may be retried (reads only).
    pub idempotent: bool,
}

impl Method for NodeCall<'_> {
    type Response = Option<Node>;
    const NAME: &'static str = "";
    const IDEMPOTENT: bool = false;
    fn this(&self) -> &ManagedObjectReference {
        self.this
    }
    fn write_args(&self, w: &mut RequestWriter) {
        (self.args)(w)
    }
    fn decode(inner: &str) -> Result<Option<Node>> {
        decode_optional_node(inner)
    }
    fn method_name(&self) -> &'static str {
        self.name
    }
    fn is_idempotent(&self) -> bool {
        self.idempotent
    }
}

/// Writes the whole request envelope of `method`.
pub fn request_body<M: Method>(method: &M) -> Vec<u8> {
    let mut w = RequestWriter::new(method.method_name(), method.this());
    method.write_args(&mut w);
    w.finish()
}
