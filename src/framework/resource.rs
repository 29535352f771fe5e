//! The traits a provider, its resources and its data sources implement. Optional capabilities
//! (import, plan hook, state upgrade, move) are default methods the server asks about.

use std::any::Any;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::cty::Value;

use super::diag::Diagnostics;
use super::path::AttrPath;
use super::schema::Schema;

/// What `Provider::configure` hands to every resource and data source (e.g. the vSphere client).
pub type ProviderData = Arc<dyn Any + Send + Sync>;

/// Per-call context: the configured provider's data, the provider-wide stop signal, and the
/// warnings the call reports beside its answer.
#[derive(Clone, Default)]
pub struct Context {
    /// Set once the provider is configured.
    pub provider_data: Option<ProviderData>,
    /// Cancelled when Terraform calls StopProvider (e.g. on Ctrl-C).
    pub cancel: CancellationToken,
    /// Warnings for Terraform to show with this call's answer, whatever the call returns.
    pub warnings: Warnings,
}

/// Warnings collected during one call, from wherever they arise (a data source's read, a
/// connection opened on the way); the protocol layer adds them to the call's diagnostics.
#[derive(Clone, Default)]
pub struct Warnings(Arc<Mutex<Diagnostics>>);

impl Warnings {
    /// Adds a warning with no attribute path.
    pub fn warning(&self, summary: impl Into<String>, detail: impl Into<String>) {
        self.0.lock().expect("lock").warning(summary, detail);
    }

    /// Adds a warning about one attribute.
    pub fn attr_warning(
        &self,
        path: AttrPath,
        summary: impl Into<String>,
        detail: impl Into<String>,
    ) {
        self.0
            .lock()
            .expect("lock")
            .attr_warning(path, summary, detail);
    }

    /// Takes the warnings collected so far.
    pub fn take(&self) -> Diagnostics {
        std::mem::take(&mut *self.0.lock().expect("lock"))
    }
}

impl Context {
    /// The provider's data as type `T`, or a diagnostic saying the provider is not configured.
    pub fn data<T: Any + Send + Sync>(&self) -> Result<Arc<T>, Diagnostics> {
        let data = self.provider_data.clone().ok_or_else(|| {
            Diagnostics::from_error(
                "Provider not configured",
                "Terraform called this before configuring the provider; this is a bug in Terraform or ceso.",
            )
        })?;
        data.downcast::<T>().map_err(|_| {
            Diagnostics::from_error(
                "Internal error: provider data has an unexpected type",
                "This is a bug in ceso.",
            )
        })
    }
}

/// A Terraform provider: its configuration schema, how it configures itself, and its resources
/// and data sources.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The provider's type name, e.g. `ceso`; resource names start with it and `_`.
    fn type_name(&self) -> &'static str;
    /// The schema of the `provider` block.
    fn schema(&self) -> Schema;
    /// Checks the provider configuration beyond what attribute validators check.
    fn validate(&self, _config: &Value, _diags: &mut Diagnostics) {}
    /// Configures the provider; the returned data is handed to every later call.
    async fn configure(&self, ctx: &Context, config: &Value) -> Result<ProviderData, Diagnostics>;
    /// The managed resource types.
    fn resources(&self) -> Vec<Arc<dyn Resource>>;
    /// The data source types.
    fn data_sources(&self) -> Vec<Arc<dyn DataSource>>;
    /// The action types (Terraform 1.14+ `action` blocks).
    fn actions(&self) -> Vec<Arc<dyn Action>> {
        Vec::new()
    }
    /// Releases what `configure` opened (e.g. logs out) when the plugin shuts down.
    async fn stop(&self, _data: ProviderData) {}
}

/// An action: an operation Terraform invokes on purpose (not a resource's lifecycle), reporting
/// progress while it runs.
#[async_trait]
pub trait Action: Send + Sync {
    /// Its type name, e.g. `ceso_snapshot_revert`.
    fn type_name(&self) -> &'static str;
    /// Its configuration schema.
    fn schema(&self) -> Schema;
    /// Checks the configuration beyond what attribute validators check.
    fn validate(&self, _config: &Value, _diags: &mut Diagnostics) {}
    /// Checks, at plan time, that the action can run.
    async fn plan(&self, _ctx: &Context, _config: &Value) -> Diagnostics {
        Diagnostics::new()
    }
    /// Runs the action; `progress` reports steps as they happen.
    async fn invoke(
        &self,
        ctx: &Context,
        config: &Value,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Diagnostics;
}

/// A data source: reads something from the world at plan time.
#[async_trait]
pub trait DataSource: Send + Sync {
    /// Its type name, e.g. `ceso_endpoint`.
    fn type_name(&self) -> &'static str;
    /// Its schema.
    fn schema(&self) -> Schema;
    /// Checks the configuration beyond what attribute validators check.
    fn validate(&self, _config: &Value, _diags: &mut Diagnostics) {}
    /// Reads the data source; returns its whole state value.
    async fn read(&self, ctx: &Context, config: &Value) -> Result<Value, Diagnostics>;
}

/// The values of one create, update or delete.
pub struct ApplyRequest<'a> {
    /// Prior state (null on create).
    pub prior: &'a Value,
    /// Planned new state (null on delete).
    pub planned: &'a Value,
    /// Configuration (null on delete).
    pub config: &'a Value,
    /// Private state saved with the prior state / plan.
    pub private: &'a [u8],
}

/// The outcome of a create or update. On failure `state` is whatever now exists (null if
/// nothing was made), so Terraform keeps tracking it: nothing is ever orphaned.
pub struct ApplyResult {
    /// The new state, read back from the world.
    pub state: Value,
    /// New private state; `None` keeps the planned one.
    pub private: Option<Vec<u8>>,
    /// Errors and warnings.
    pub diags: Diagnostics,
}

impl ApplyResult {
    /// A failure that created nothing (or left `state` as it was).
    pub fn failed(state: Value, diags: Diagnostics) -> Self {
        Self {
            state,
            private: None,
            diags,
        }
    }

    /// A success.
    pub fn ok(state: Value) -> Self {
        Self {
            state,
            private: None,
            diags: Diagnostics::new(),
        }
    }
}

/// A plan as the resource's own hook sees and shapes it.
pub struct PlanRequest<'a> {
    /// Prior state (null on create).
    pub prior: &'a Value,
    /// Configuration.
    pub config: &'a Value,
    /// The plan after defaults, unknown-marking and attribute modifiers; the hook may change it.
    pub planned: Value,
    /// Attributes whose change forces replacement; the hook may add to it.
    pub requires_replace: Vec<super::path::AttrPath>,
    /// Diagnostics for the plan.
    pub diags: Diagnostics,
}

/// One resource returned by an import.
pub struct ImportedResource {
    /// The resource type name.
    pub type_name: String,
    /// The state to read from (typically just the id); Terraform then calls `read`.
    pub state: Value,
    /// Private state.
    pub private: Vec<u8>,
}

/// A managed resource type.
#[async_trait]
pub trait Resource: Send + Sync {
    /// Its type name, e.g. `ceso_vm`.
    fn type_name(&self) -> &'static str;
    /// Its schema (with its version for state upgrades).
    fn schema(&self) -> Schema;
    /// Checks the configuration beyond what attribute validators check.
    fn validate(&self, _config: &Value, _diags: &mut Diagnostics) {}
    /// The resource's own plan hook, run after the attribute modifiers.
    async fn modify_plan(&self, _ctx: &Context, _req: &mut PlanRequest<'_>) {}
    /// Creates the object; returns state read back from the world.
    async fn create(&self, ctx: &Context, req: &ApplyRequest<'_>) -> ApplyResult;
    /// Reads the object; `None` when it no longer exists (Terraform then plans to re-create it).
    async fn read(&self, ctx: &Context, state: &Value) -> Result<Option<Value>, Diagnostics>;
    /// Updates the object in place; returns state read back from the world.
    async fn update(&self, ctx: &Context, req: &ApplyRequest<'_>) -> ApplyResult;
    /// Deletes the object; an object already gone is not an error.
    async fn delete(&self, ctx: &Context, req: &ApplyRequest<'_>) -> Diagnostics;
    /// Imports an existing object by a user-given id.
    async fn import(
        &self,
        _ctx: &Context,
        _id: &str,
    ) -> Result<Vec<ImportedResource>, Diagnostics> {
        Err(Diagnostics::from_error(
            "Import not supported",
            format!("{} cannot be imported.", self.type_name()),
        ))
    }
    /// Upgrades state stored by schema `version` (older than the current one), given as JSON.
    fn upgrade_state(&self, version: i64, _raw: serde_json::Value) -> Result<Value, Diagnostics> {
        Err(Diagnostics::from_error(
            "Unable to upgrade state",
            format!(
                "{} has no upgrade from schema version {version} to {}.",
                self.type_name(),
                self.schema().version
            ),
        ))
    }
}
