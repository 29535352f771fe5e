//! `ceso_snapshot_revert`: reverts a VM to a snapshot on purpose, as a Terraform action,
//! streaming progress while vSphere works.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use crate::cty::Value;
use crate::framework::timeouts::{self, Operation, Timeouts};
use crate::framework::typed::from_value;
use crate::framework::{Action, AttrPath, Attribute, Block, Context, Diagnostics, Schema};
use crate::session::{client, error_diagnostics, lookup_diagnostics};
use crate::vsphere::types::ManagedObjectReference;

/// The `ceso_snapshot_revert` action.
pub struct SnapshotRevert;

#[derive(Deserialize)]
struct Config {
    endpoint: Option<String>,
    vm_id: String,
    snapshot_id: String,
    suppress_power_on: Option<bool>,
    timeouts: Option<Timeouts>,
}

/// Time limit of the revert when `timeouts` does not say.
const DEFAULT_LIMIT: Duration = Duration::from_secs(30 * 60);

impl SnapshotRevert {
    fn config(&self, v: &Value) -> Result<Config, Diagnostics> {
        from_value(v, &self.schema().value_type())
    }
}

/// The VM of `vm_id` (moid or instance UUID).
async fn vm_of(
    client: &crate::vsphere::Client,
    vm_id: &str,
) -> Result<ManagedObjectReference, Diagnostics> {
    client
        .find_vm_by_id(vm_id)
        .await
        .map_err(|e| lookup_diagnostics(AttrPath::attr("vm_id"), "Unknown VM", &e))
}

#[async_trait]
impl Action for SnapshotRevert {
    fn type_name(&self) -> &'static str {
        "ceso_snapshot_revert"
    }

    fn schema(&self) -> Schema {
        Schema::new(
            Block::new()
                .description("Reverts a VM to one of its snapshots (the `ceso_snapshot`'s `id`), reporting progress.")
                .attribute(crate::session::endpoint_attribute(false))
                .attribute(Attribute::string("vm_id").required().description("The VM: instance UUID or moid."))
                .attribute(Attribute::string("snapshot_id").required().description("The snapshot's id, e.g. `snapshot-42`."))
                .attribute(Attribute::bool("suppress_power_on").optional().description("Leave the VM off after the revert."))
                .block(timeouts::block(&[Operation::Invoke])),
        )
    }

    async fn plan(&self, ctx: &Context, config: &Value) -> Diagnostics {
        // Only check what is known at plan time; unknown ids are checked when invoked.
        let Ok(c) = self.config(config) else {
            return Diagnostics::new();
        };
        let client = match client(ctx, c.endpoint.as_deref()).await {
            Ok(c) => c,
            Err(d) => return d,
        };
        let vm = match vm_of(&client, &c.vm_id).await {
            Ok(vm) => vm,
            Err(d) => return d,
        };
        match client.snapshot_tree(&vm).await {
            Ok(tree) if tree.by_id(&c.snapshot_id).is_some() => Diagnostics::new(),
            Ok(_) => Diagnostics::from_attr_error(
                AttrPath::attr("snapshot_id"),
                "Unknown snapshot",
                format!("VM {} has no snapshot {}.", c.vm_id, c.snapshot_id),
            ),
            Err(e) => error_diagnostics("read the VM's snapshots", &e),
        }
    }

    async fn invoke(
        &self,
        ctx: &Context,
        config: &Value,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Diagnostics {
        let c = match self.config(config) {
            Ok(c) => c,
            Err(d) => return d,
        };
        let client = match client(ctx, c.endpoint.as_deref()).await {
            Ok(c) => c,
            Err(d) => return d,
        };
        if let Err(d) = vm_of(&client, &c.vm_id).await {
            return d;
        }
        progress(format!(
            "Reverting VM {} to snapshot {}",
            c.vm_id, c.snapshot_id
        ));
        let snap = ManagedObjectReference::new("VirtualMachineSnapshot", &c.snapshot_id);
        match client
            .revert_to_snapshot(
                &snap,
                c.suppress_power_on.unwrap_or(false),
                Some(timeouts::limit(
                    c.timeouts.as_ref(),
                    Operation::Invoke,
                    DEFAULT_LIMIT,
                )),
                &ctx.cancel,
            )
            .await
        {
            Ok(()) => {
                progress(format!("VM {} is at snapshot {}", c.vm_id, c.snapshot_id));
                Diagnostics::new()
            }
            Err(e) => error_diagnostics(&format!("revert to snapshot {}", c.snapshot_id), &e),
        }
    }
}
