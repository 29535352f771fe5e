//! vSphere SOAP methods, each paired with its response type (see [`Method`]).

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::envelope::RequestWriter;
use super::secret::Secret;
use super::types::{ManagedObjectReference, ServiceContent, UserSession};

/// A SOAP method: its name, how its arguments are written, and what it returns.
pub trait Method {
    /// The decoded response (the content of the `<NameResponse>` element).
    type Response: DeserializeOwned;
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
    const IDEMPOTENT: bool = true;
    fn this(&self) -> &ManagedObjectReference {
        &self.this
    }
}

/// Writes the whole request envelope of `method`.
pub fn request_body<M: Method>(method: &M) -> Vec<u8> {
    let mut w = RequestWriter::new(M::NAME, method.this());
    method.write_args(&mut w);
    w.finish()
}
