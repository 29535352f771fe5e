//! The ceso provider: its configuration schema, how it configures itself (environment
//! fallbacks, a lazily opened shared session), and the registry of resources and data sources.

pub mod config;
pub mod connection;

use std::sync::Arc;

use async_trait::async_trait;

use crate::cty::Value;
use crate::framework::validator::duration;
use crate::framework::{
    typed, Attribute, Block, Context, DataSource, Diagnostics, Provider, ProviderData, Resource,
    Schema,
};

pub use config::ProviderModel;
pub use connection::{client, error_diagnostics, Connection};

/// The provider's type name: resources are called `ceso_*`.
pub const TYPE_NAME: &str = "ceso";

/// The ceso provider.
#[derive(Default)]
pub struct Ceso;

impl Ceso {
    /// A new provider.
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl Provider for Ceso {
    fn type_name(&self) -> &'static str {
        TYPE_NAME
    }

    fn schema(&self) -> Schema {
        Schema::new(
            Block::new()
                .description("Manages VMware ESXi hosts and vCenter through the vSphere API.")
                .attribute(Attribute::string("url").optional().description(
                    "The vSphere endpoint: `https://HOST/sdk`, or `HOST[:PORT]` meaning https. `http://` is accepted for simulators. Environment: `CESO_URL`.",
                ))
                .attribute(
                    Attribute::string("user")
                        .optional()
                        .description("User name to log in with. Environment: `CESO_USER`."),
                )
                .attribute(
                    Attribute::string("password")
                        .optional()
                        .sensitive()
                        .description("Password to log in with. Environment: `CESO_PASSWORD`."),
                )
                .attribute(Attribute::bool("allow_unverified_ssl").optional().description(
                    "Skip verification of the server's TLS certificate. Off by default; prefer `thumbprint`. Environment: `CESO_ALLOW_UNVERIFIED_SSL`.",
                ))
                .attribute(Attribute::string("thumbprint").optional().description(
                    "Trust exactly the server certificate with this SHA-256 thumbprint (hex, with or without `:`), for hosts with self-signed certificates. Environment: `CESO_THUMBPRINT`.",
                ))
                .attribute(
                    Attribute::string("api_timeout")
                        .optional()
                        .validate(duration())
                        .description(&format!(
                            "Time limit of each vSphere API call. Default `\"{}\"`. Environment: `CESO_API_TIMEOUT`.",
                            config::DEFAULT_API_TIMEOUT
                        )),
                ),
        )
    }

    async fn configure(&self, _ctx: &Context, config: &Value) -> Result<ProviderData, Diagnostics> {
        let model: ProviderModel = typed::from_value(config, &self.schema().value_type())?;
        let connect = model.with_env_fallbacks().connect_config()?;
        tracing::debug!(url = %connect.url, user = %connect.user, "provider configured");
        Ok(Arc::new(Connection::new(connect)))
    }

    fn actions(&self) -> Vec<Arc<dyn crate::framework::Action>> {
        vec![Arc::new(crate::actions::snapshot_revert::SnapshotRevert)]
    }

    async fn stop(&self, data: ProviderData) {
        if let Ok(conn) = data.downcast::<Connection>() {
            conn.close().await;
        }
    }

    fn resources(&self) -> Vec<Arc<dyn Resource>> {
        vec![
            Arc::new(crate::resources::snapshot::Snapshot),
            Arc::new(crate::resources::vlan::Vlan),
            Arc::new(crate::resources::vm::Vm),
        ]
    }

    fn data_sources(&self) -> Vec<Arc<dyn DataSource>> {
        vec![
            Arc::new(crate::data_sources::endpoint::Endpoint),
            Arc::new(crate::data_sources::snapshots::Snapshots),
        ]
    }
}
