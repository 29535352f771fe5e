//! The ceso provider: its configuration schema, how it configures itself (environment
//! fallbacks, a lazily opened shared session), and the registry of resources and data sources.

pub mod config;

use std::sync::Arc;

use async_trait::async_trait;

use crate::cty::Value;
use crate::framework::typed_data_source::DataSourceAdapter;
use crate::framework::typed_resource::Adapter;
use crate::framework::validator::duration;
use crate::framework::{
    typed, Attribute, Block, Context, DataSource, Diagnostics, Provider, ProviderData, Resource,
    Schema,
};
use crate::session::{Connection, Endpoints, ProviderState};

pub use config::ProviderModel;

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
                    "Skip verification of the server's TLS certificate, and of its handshake signature: a server whose signature does not verify (a certificate with an RSA key under 2048 bits, as on ESXi 5.x/6.0) is connected to with a warning. Off by default; prefer `thumbprint`. Environment: `CESO_ALLOW_UNVERIFIED_SSL`.",
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
                )
                .attribute(Attribute::string("backup_repository").optional().description(
                    "The backup repository where `ceso_backup_job` keeps job definitions (and `ceso-backup` keeps backups): a path, `file:///path` or `s3://bucket/prefix` (S3 settings from the `AWS_*` environment). Environment: `CESO_BACKUP_REPO`.",
                ))
                .attribute(Attribute::string("backup_password").optional().sensitive().description(
                    "The backup repository's passphrase, when it is encrypted: with it, ceso checks the repository opens before writing a job. Environment: `CESO_BACKUP_PASSWORD`.",
                ))
                .attribute(
                    Attribute::string("session_keepalive")
                        .optional()
                        .validate(duration())
                        .description("How often to keep each vSphere session alive with a cheap call while the provider runs (servers end sessions idle for 30 minutes). Default `\"10m\"`; `\"0s\"` turns it off."),
                )
                .block(crate::framework::NestedBlock::new(
                    "endpoint",
                    crate::framework::Nesting::List,
                    Block::new()
                        .description("One of several endpoints (standalone ESXi hosts, or vCenters). Resources and data sources choose one with their `endpoint` attribute (needed when there are several). Each logs in on first use, once per provider process; an unreachable endpoint fails only what uses it.")
                        .attribute(Attribute::string("name").required().description("The name resources use in `endpoint`."))
                        .attribute(Attribute::string("url").required().description("`https://HOST/sdk`, or `HOST[:PORT]`."))
                        .attribute(Attribute::string("user").optional().description("User name; defaults to the provider's `user` (or `CESO_USER`)."))
                        .attribute(Attribute::string("password").optional().sensitive().description("Password; defaults to the provider's `password` (or `CESO_PASSWORD`)."))
                        .attribute(Attribute::string("thumbprint").optional().description("SHA-256 thumbprint of this endpoint's certificate to trust."))
                        .attribute(Attribute::bool("allow_unverified_ssl").optional().description("Skip TLS verification for this endpoint; defaults to the provider's setting."))
                        .attribute(Attribute::string("api_timeout").optional().validate(duration()).description("Time limit of each vSphere API call to this endpoint (e.g. a slow old host); defaults to the provider's `api_timeout`.")),
                )),
        )
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        let several =
            matches!(typed::get_attr(config, "endpoint"), Value::List(l) if !l.is_empty());
        if several && !matches!(typed::get_attr(config, "url"), Value::Null) {
            diags.attr_error(
                crate::framework::AttrPath::attr("url"),
                "Conflicting endpoint settings",
                "Give either `url` (one endpoint) or `endpoint` blocks (several), not both. `user`, `password`, `allow_unverified_ssl` and `api_timeout` at the top level are defaults for the blocks.",
            );
        }
    }

    async fn configure(&self, _ctx: &Context, config: &Value) -> Result<ProviderData, Diagnostics> {
        let model: ProviderModel = typed::from_value(config, &self.schema().value_type())?;
        let model = model.with_env_fallbacks();
        let keepalive = model.keepalive()?;
        let backup = model.backup_settings();
        // A configuration that only manages backup jobs needs no vSphere endpoint.
        let no_vsphere = model.url.is_none()
            && model.endpoint.as_ref().is_none_or(|e| e.is_empty())
            && backup.is_some();
        let endpoints = if no_vsphere {
            Vec::new()
        } else {
            model.endpoints()?
        };
        for (name, c) in &endpoints {
            tracing::debug!(endpoint = %name, url = %c.url, user = %c.user, "provider configured");
        }
        Ok(Arc::new(ProviderState {
            endpoints: Endpoints::new(
                endpoints
                    .into_iter()
                    .map(|(name, c)| Connection::new(name, c).with_keepalive(keepalive))
                    .collect(),
            ),
            backup,
        }))
    }

    fn actions(&self) -> Vec<Arc<dyn crate::framework::Action>> {
        vec![Arc::new(crate::actions::snapshot_revert::SnapshotRevert)]
    }

    async fn stop(&self, data: ProviderData) {
        if let Ok(state) = data.downcast::<ProviderState>() {
            state.endpoints.close().await;
        }
    }

    fn resources(&self) -> Vec<Arc<dyn Resource>> {
        vec![
            Adapter::importable(crate::resources::backup_job::BackupJob),
            Adapter::importable(crate::resources::pci_passthrough::PciPassthrough),
            Adapter::importable(crate::resources::snapshot::Snapshot),
            Adapter::importable(crate::resources::vlan::Vlan),
            Adapter::importable(crate::resources::vm::Vm),
        ]
    }

    fn data_sources(&self) -> Vec<Arc<dyn DataSource>> {
        vec![
            DataSourceAdapter::new(crate::data_sources::endpoint::Endpoint),
            DataSourceAdapter::new(crate::data_sources::pci_devices::PciDevices),
            DataSourceAdapter::new(crate::data_sources::placement::PlacementSource),
            DataSourceAdapter::new(crate::data_sources::snapshots::Snapshots),
        ]
    }
}
