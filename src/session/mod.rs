//! What every resource, data source and action shares, and nothing that names one of them: the
//! configured endpoints with their lazily opened vSphere sessions (`connection`), the one place
//! vSphere errors become diagnostics, inventory lookups (`lookup`), and the `endpoint`
//! attribute with the import ids that name an endpoint.
//!
//! Architecture invariant: `session` imports no resource, data source, action or `provider`;
//! they import it (the provider only to build `ProviderState`).

pub mod connection;
pub mod lookup;

use crate::framework::Attribute;

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

/// How what needs the provider's whole state, not one endpoint's session, reaches it: every
/// endpoint at once (`ceso_placement`, connecting each as it reads it) or the backup
/// repository settings (`ceso_backup_job`).
pub struct ProviderWide;

#[async_trait::async_trait]
impl crate::framework::typed_resource::Connect for ProviderWide {
    type Conn = std::sync::Arc<ProviderState>;

    async fn connect(
        ctx: &crate::framework::Context,
        _scope: Option<&str>,
    ) -> Result<Self::Conn, crate::framework::Diagnostics> {
        ctx.data::<ProviderState>()
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
