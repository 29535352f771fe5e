//! `ceso_snapshot`: a VM snapshot that can be renamed in place, imported, survives drift
//! (removed out of band: planned for re-creation, never an error), and reverts the VM on
//! purpose when `revert_trigger` changes.
//!
//! The smallest resource, and the example of the shape every resource follows: a schema, a
//! model, and CRUD on models (`framework::typed_resource`).

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::cty::Value;
use crate::framework::timeouts::{self, Operation, Timeouts};
use crate::framework::typed_resource::{Import, Outcome, TypedResource};
use crate::framework::validator::matches;
use crate::framework::{AttrPath, Attribute, Block, Diagnostics, Schema};
use crate::session::{error_diagnostics, Call, Vsphere};
use crate::vsphere::snapshot::{NewSnapshot, SnapshotInfo, SnapshotTree};
use crate::vsphere::types::ManagedObjectReference;
use crate::vsphere::{Client, Error};

/// The `ceso_snapshot` resource.
pub struct Snapshot;

/// Time limit of snapshot tasks when `timeouts` does not say.
const DEFAULT_LIMIT: Duration = Duration::from_secs(30 * 60);

/// The resource's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotModel {
    pub id: Option<String>,
    pub endpoint: Option<String>,
    pub vm_id: String,
    pub name: String,
    pub description: Option<String>,
    pub memory: Option<bool>,
    pub quiesce: Option<bool>,
    pub revert_trigger: Option<String>,
    pub suppress_power_on: Option<bool>,
    pub create_time: Option<String>,
    pub parent_id: Option<String>,
    pub quiesced: Option<bool>,
    pub is_current: Option<bool>,
    pub size_bytes: Option<i64>,
    pub timeouts: Option<Timeouts>,
}

crate::endpoint_scoped_model!(SnapshotModel);

impl SnapshotModel {
    fn limit(&self, op: Operation) -> Duration {
        timeouts::limit(self.timeouts.as_ref(), op, DEFAULT_LIMIT)
    }

    fn snapshot(&self) -> ManagedObjectReference {
        ManagedObjectReference::new(
            "VirtualMachineSnapshot",
            self.id.as_deref().unwrap_or_default(),
        )
    }
}

/// The resource's schema.
pub fn schema() -> Schema {
    Schema::new(
        Block::new()
            .description("A snapshot of a VM. Renaming is done in place; changing `revert_trigger` reverts the VM to this snapshot on purpose.")
            .attribute(Attribute::string("id").computed().use_state_for_unknown().description("The snapshot's id, e.g. `snapshot-42`."))
            .attribute(crate::session::endpoint_attribute(true))
            .attribute(Attribute::string("vm_id").required().requires_replace().description("The VM: a `ceso_vm`'s `id` (instance UUID) or its `moid`."))
            .attribute(Attribute::string("name").required().validate(matches(r"^.{1,80}$", "1 to 80 characters")).description("Snapshot name (renamed in place)."))
            .attribute(Attribute::string("description").default_value(Value::String(String::new())).description("Description (changed in place)."))
            .attribute(Attribute::bool("memory").default_value(Value::Bool(false)).requires_replace().description("Include the VM's memory (a running VM resumes from it on revert)."))
            .attribute(Attribute::bool("quiesce").default_value(Value::Bool(false)).requires_replace().description("Quiesce the guest file systems first. Needs VMware Tools running in the guest; without them the snapshot is refused with an error saying so."))
            .attribute(Attribute::string("revert_trigger").optional().description("Any value; when it changes (not on create), apply reverts the VM to this snapshot. The plan shows the change."))
            .attribute(Attribute::bool("suppress_power_on").optional().description("On revert, leave the VM powered off even if the snapshot was taken while it ran."))
            .attribute(Attribute::string("create_time").computed().use_state_for_unknown().description("When the snapshot was taken (RFC 3339)."))
            .attribute(Attribute::string("parent_id").computed().description("The parent snapshot's id; null for a root snapshot."))
            .attribute(Attribute::bool("quiesced").computed().use_state_for_unknown().description("Whether the guest was quiesced."))
            .attribute(Attribute::bool("is_current").computed().description("Whether this is the VM's current snapshot."))
            .attribute(Attribute::number("size_bytes").computed().description("Bytes of the snapshot's own files (state and memory) as the VM's file layout reports them; null when vSphere does not report it."))
            .block(timeouts::block(&[Operation::Create, Operation::Update, Operation::Delete])),
    )
}

/// The VM of `vm_id` (instance UUID or moid); `None` when it no longer exists.
async fn find_vm(client: &Client, vm_id: &str) -> Result<Option<ManagedObjectReference>, Error> {
    match client.find_vm_by_id(vm_id).await {
        Ok(vm) => Ok(Some(vm)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

fn state_from(prior: &SnapshotModel, tree: &SnapshotTree, s: &SnapshotInfo) -> SnapshotModel {
    SnapshotModel {
        id: Some(s.obj.value.clone()),
        name: s.name.clone(),
        description: Some(s.description.clone()),
        create_time: Some(s.create_time.clone()),
        parent_id: s.parent.as_ref().map(|p| p.value.clone()),
        quiesced: Some(s.quiesced),
        is_current: Some(tree.current.as_ref() == Some(&s.obj)),
        size_bytes: tree.sizes.get(&s.obj.value).copied(),
        quiesce: prior.quiesce.or(Some(s.quiesced)),
        memory: prior.memory.or(Some(false)),
        ..prior.clone()
    }
}

/// The snapshot `prior` names, as it is now; `None` when it (or its VM) is gone.
async fn read_model(
    client: &Client,
    prior: &SnapshotModel,
) -> Result<Option<SnapshotModel>, Error> {
    let Some(vm) = find_vm(client, &prior.vm_id).await? else {
        return Ok(None);
    };
    let tree = match client.snapshot_tree(&vm).await {
        Ok(t) => t,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(id) = prior.id.as_deref() else {
        return Ok(None);
    };
    Ok(tree.by_id(id).map(|s| state_from(prior, &tree, s)))
}

/// The outcome of an apply that acted on `handle`'s snapshot: it as read back.
async fn read_back(
    client: &Client,
    handle: SnapshotModel,
    mut diags: Diagnostics,
) -> Outcome<SnapshotModel> {
    match read_model(client, &handle).await {
        Ok(Some(m)) => Outcome::with(Some(m), diags),
        Ok(None) => {
            diags.error(
                "Snapshot disappeared",
                "The snapshot no longer exists after the operation.",
            );
            Outcome::failed(diags)
        }
        Err(e) => {
            diags.extend(error_diagnostics("read the snapshot back", &e));
            // What the apply did is known: the snapshot exists with the handle's id.
            Outcome::with(Some(handle), diags)
        }
    }
}

#[async_trait]
impl TypedResource for Snapshot {
    type Model = SnapshotModel;
    type Connect = Vsphere;
    const TYPE_NAME: &'static str = "ceso_snapshot";

    fn schema() -> Schema {
        schema()
    }

    async fn create(&self, call: &Call<'_>, plan: SnapshotModel) -> Outcome<SnapshotModel> {
        let client = &call.conn;
        let vm = match find_vm(client, &plan.vm_id).await {
            Ok(Some(vm)) => vm,
            Ok(None) => {
                return Outcome::failed(Diagnostics::from_attr_error(
                    AttrPath::attr("vm_id"),
                    "Unknown VM",
                    format!("No VM with id {:?}.", plan.vm_id),
                ))
            }
            Err(e) => return Outcome::failed(error_diagnostics("find the VM", &e)),
        };
        if plan.quiesce.unwrap_or(false) {
            let tools = client.tools_status(&vm).await.unwrap_or_default();
            if tools != "guestToolsRunning" {
                return Outcome::failed(Diagnostics::from_attr_error(
                    AttrPath::attr("quiesce"),
                    "Unable to quiesce the guest",
                    format!(
                        "quiesce = true needs VMware Tools running in the guest, and they are not (tools status: {}). Start the guest with VMware Tools, or set quiesce = false for a crash-consistent snapshot.",
                        if tools.is_empty() { "unknown" } else { tools.as_str() }
                    ),
                ));
            }
        }
        let new = NewSnapshot {
            name: &plan.name,
            description: plan.description.as_deref().unwrap_or(""),
            memory: plan.memory.unwrap_or(false),
            quiesce: plan.quiesce.unwrap_or(false),
        };
        let limit = plan.limit(Operation::Create);
        let snap = match client
            .create_snapshot(&vm, &new, Some(limit), &call.ctx.cancel)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                return Outcome::failed(error_diagnostics(
                    &format!("create snapshot {:?}", plan.name),
                    &e,
                ))
            }
        };
        let handle = SnapshotModel {
            id: Some(snap.value),
            ..plan
        };
        read_back(client, handle, Diagnostics::new()).await
    }

    async fn read(
        &self,
        call: &Call<'_>,
        state: SnapshotModel,
    ) -> Result<Option<SnapshotModel>, Diagnostics> {
        read_model(&call.conn, &state)
            .await
            .map_err(|e| error_diagnostics("read the snapshot", &e))
    }

    async fn update(
        &self,
        call: &Call<'_>,
        prior: SnapshotModel,
        plan: SnapshotModel,
    ) -> Outcome<SnapshotModel> {
        let client = &call.conn;
        let snap = prior.snapshot();
        let mut diags = Diagnostics::new();
        let rename = (plan.name != prior.name).then_some(plan.name.as_str());
        let redescribe = (plan.description != prior.description)
            .then(|| plan.description.as_deref().unwrap_or(""));
        if rename.is_some() || redescribe.is_some() {
            if let Err(e) = client.rename_snapshot(&snap, rename, redescribe).await {
                diags.extend(error_diagnostics(
                    &format!("rename snapshot {:?}", prior.name),
                    &e,
                ));
            }
        }
        if !diags.has_errors() && plan.revert_trigger != prior.revert_trigger {
            let suppress = plan.suppress_power_on.unwrap_or(false);
            let limit = plan.limit(Operation::Update);
            if let Err(e) = client
                .revert_to_snapshot(&snap, suppress, Some(limit), &call.ctx.cancel)
                .await
            {
                diags.extend(error_diagnostics(
                    &format!("revert to snapshot {:?}", plan.name),
                    &e,
                ));
            }
        }
        if diags.has_errors() {
            // Read what is there now rather than claim the plan.
            return read_back(client, prior, diags).await;
        }
        let handle = SnapshotModel {
            id: prior.id.clone(),
            ..plan
        };
        read_back(client, handle, diags).await
    }

    async fn delete(&self, call: &Call<'_>, prior: SnapshotModel) -> Diagnostics {
        let client = &call.conn;
        if prior.id.is_none() {
            return Diagnostics::new();
        }
        let limit = prior.limit(Operation::Delete);
        match client
            .remove_snapshot(&prior.snapshot(), Some(limit), &call.ctx.cancel)
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return Diagnostics::new(),
            Err(e) => return error_diagnostics(&format!("remove snapshot {:?}", prior.name), &e),
        }
        let mut diags = Diagnostics::new();
        if let Ok(Some(vm)) = find_vm(client, &prior.vm_id).await {
            match client.consolidate_if_needed(&vm, Some(limit), &call.ctx.cancel).await {
                Ok(true) => diags.warning(
                    "Disks consolidated",
                    format!("Removing snapshot {:?} left the VM needing disk consolidation; ceso ran ConsolidateVMDisks_Task.", prior.name),
                ),
                Ok(false) => {}
                Err(e) => diags.extend(error_diagnostics("consolidate the VM's disks", &e)),
            }
        }
        diags
    }
}

#[async_trait]
impl Import<Snapshot> for Snapshot {
    fn id_format(&self) -> &'static str {
        "VM_ID/SNAPSHOT_NAME or VM_ID/SNAPSHOT_ID (VM_ID: instance UUID or moid)"
    }

    async fn import(&self, call: &Call<'_>, id: &str) -> Result<Vec<SnapshotModel>, Diagnostics> {
        let bad = |why: String| {
            Diagnostics::from_error(
                "Unable to import ceso_snapshot",
                format!("{why}. Use {}.", self.id_format()),
            )
        };
        let (vm_id, which) = id
            .split_once('/')
            .ok_or_else(|| bad(format!("{id:?} has no '/'")))?;
        let client = &call.conn;
        let vm = find_vm(client, vm_id)
            .await
            .map_err(|e| error_diagnostics("find the VM", &e))?
            .ok_or_else(|| bad(format!("no VM with id {vm_id:?}")))?;
        let tree = client
            .snapshot_tree(&vm)
            .await
            .map_err(|e| error_diagnostics("read the snapshots", &e))?;
        let found: Vec<&SnapshotInfo> = match tree.by_id(which) {
            Some(s) => vec![s],
            None => tree.snapshots.iter().filter(|s| s.name == which).collect(),
        };
        let s = match found.as_slice() {
            [one] => *one,
            [] => return Err(bad(format!("VM {vm_id} has no snapshot named or with id {which:?}"))),
            many => {
                return Err(bad(format!(
                    "snapshot name {which:?} is ambiguous: {} snapshots have it ({}); import by id instead",
                    many.len(),
                    many.iter().map(|s| s.obj.value.as_str()).collect::<Vec<_>>().join(", ")
                )))
            }
        };
        Ok(vec![SnapshotModel {
            id: Some(s.obj.value.clone()),
            vm_id: vm_id.to_string(),
            name: s.name.clone(),
            description: Some(s.description.clone()),
            memory: Some(false),
            quiesce: Some(s.quiesced),
            ..SnapshotModel::default()
        }])
    }
}
