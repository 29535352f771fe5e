//! What every resource, data source and action shares, and nothing that names one of them: the
//! configured endpoints with their lazily opened vSphere sessions (`connection`), the one place
//! vSphere errors become diagnostics, inventory lookups (`lookup`), and the `endpoint`
//! attribute with the import ids that name an endpoint.
//!
//! Architecture invariant: `session` imports no resource, data source, action or `provider`;
//! they import it (the provider only to build `ProviderState`).

pub mod connection;
pub mod lookup;

use crate::cty::Value;
use crate::framework::{typed, Attribute};

pub use connection::{
    client, connect, error_diagnostics, lookup_diagnostics, BackupSettings, Connection, Endpoints,
    ProviderState,
};
pub use lookup::resolve_host;

/// The `endpoint` attribute every resource, data source and action has.
pub fn endpoint_attribute(resource: bool) -> Attribute {
    let a = Attribute::string("endpoint").optional().description(
        "The provider `endpoint` block (by name) to use; needed only when the provider has several.",
    );
    if resource {
        a.requires_replace()
    } else {
        a
    }
}

/// The `endpoint` a config, plan or state value names, if any.
pub fn endpoint_of(v: &Value) -> Option<&str> {
    match typed::get_attr(v, "endpoint") {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// An import id `@ENDPOINT/ID` as the endpoint and the resource's own id; a plain id has no
/// endpoint (the provider's only one).
pub fn split_import_id(id: &str) -> (Option<&str>, &str) {
    match id.strip_prefix('@').and_then(|rest| rest.split_once('/')) {
        Some((endpoint, rest)) if !endpoint.is_empty() => (Some(endpoint), rest),
        _ => (None, id),
    }
}

/// `state` with its `endpoint` set (imports record where the object lives).
pub fn with_endpoint(mut state: Value, endpoint: Option<&str>) -> Value {
    if let Some(e) = endpoint {
        crate::framework::walk::set_attr(&mut state, "endpoint", Value::String(e.to_string()));
    }
    state
}

/// How resources reach vSphere: the endpoint a model names, to its shared session.
pub struct Vsphere;

#[async_trait::async_trait]
impl crate::framework::typed_resource::Connect for Vsphere {
    type Conn = std::sync::Arc<crate::vsphere::Client>;

    async fn connect(
        ctx: &crate::framework::Context,
        scope: Option<&str>,
    ) -> Result<Self::Conn, crate::framework::Diagnostics> {
        client(ctx, scope).await
    }
}

/// Implements `framework::typed_resource::Scoped` for a struct whose scope is its `endpoint`
/// field (a data source's model).
#[macro_export]
macro_rules! endpoint_scoped {
    ($model:ty) => {
        impl $crate::framework::typed_resource::Scoped for $model {
            fn scope(&self) -> Option<&str> {
                self.endpoint.as_deref()
            }
        }
    };
}

/// Implements `framework::typed_resource::Model` (and `Scoped`) for a resource's model whose
/// scope is its `endpoint` field.
#[macro_export]
macro_rules! endpoint_scoped_model {
    ($model:ty) => {
        $crate::endpoint_scoped!($model);
        impl $crate::framework::typed_resource::Model for $model {
            fn set_scope(&mut self, scope: Option<&str>) {
                self.endpoint = scope.map(str::to_string);
            }
        }
    };
}

/// One call of a resource that reaches vSphere: its context and the endpoint's client.
pub type Call<'a> =
    crate::framework::typed_resource::Call<'a, std::sync::Arc<crate::vsphere::Client>>;
