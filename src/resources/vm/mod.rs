//! `ceso_vm`: the VM resource. Create from scratch or clone (CloneVM_Task on vCenter; on a
//! standalone ESXi host, which has no clone API, the source's disks are copied with
//! CopyVirtualDisk_Task and a VM is built around them), cloud-init through `guestinfo.*`,
//! sizing, disks, network adapters, power state; read back from vSphere after every change.
//!
//! A create that fails after the VM exists returns the VM's state with the error, so Terraform
//! taints it rather than losing track of it.

mod create;
mod migrate;
mod model;
mod names;
mod pci;
mod plan;
mod schema;
mod spec;
mod view;

use create::{make_vm, place, NotMade};
use spec::{device_changes, needs_power_off, settings_spec};

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::framework::timeouts::{self, Operation as Op};
use crate::framework::typed_resource::{Config, Import, Outcome, Plan, TypedResource};
use crate::framework::{AttrPath, Context, Diagnostics, Schema};
use crate::session::{error_diagnostics, Call, Vsphere};
use crate::units::parse_duration;
use crate::vsphere::types::ManagedObjectReference;
use crate::vsphere::vm::PowerOp;
use crate::vsphere::{Client, Error, ErrorKind};

use model::{datastore_of, DiskModel, VmModel};

/// The `ceso_vm` resource.
pub struct Vm;

crate::endpoint_scoped_model!(VmModel);

/// The limit of `op`: the `timeouts` block's, else `default_minutes`.
fn limit(m: &VmModel, op: Op, default_minutes: u64) -> Duration {
    timeouts::limit(
        m.timeouts.as_ref(),
        op,
        Duration::from_secs(default_minutes * 60),
    )
}

impl Vm {
    /// The VM as vSphere has it now. A refresh (`after_write` false) may be served from the
    /// session's snapshot of every VM; a read-back after a change always asks vSphere.
    async fn read_model(
        &self,
        client: &Arc<Client>,
        prior: &VmModel,
        after_write: bool,
    ) -> Result<Option<VmModel>, Error> {
        let Some(vm) = find_vm(client, prior).await? else {
            return Ok(None);
        };
        let read = if after_write {
            client.vm_info(&vm).await
        } else {
            client.vm_info_prefetched(&vm).await
        };
        let info = match read {
            Ok(i) => i,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let inv = client.inventory_cached().await?;
        Ok(Some(VmModel::from_info(&info, &inv, prior)))
    }

    /// Reads the VM back into the apply's outcome, with `diags` attached.
    async fn finish(
        &self,
        client: &Arc<Client>,
        vm: &ManagedObjectReference,
        plan: &VmModel,
        mut diags: Diagnostics,
    ) -> Outcome<VmModel> {
        let mut handle = plan.clone();
        handle.moid = Some(vm.value.clone());
        match self.read_model(client, &handle, true).await {
            Ok(Some(state)) => Outcome::with(Some(state), diags),
            Ok(None) => {
                diags.error(
                    "VM disappeared",
                    format!("{vm} no longer exists after the operation."),
                );
                Outcome::gone(diags)
            }
            Err(e) => {
                diags.extend(error_diagnostics("read the VM back", &e));
                // Keep tracking what exists, with what is known of it.
                Outcome::with(Some(handle), diags)
            }
        }
    }

    /// Applies settings and device changes to an existing VM, powering it off and on around
    /// changes that need it (only with allow_power_cycle), then reconciles the power state.
    async fn converge(
        &self,
        client: &Arc<Client>,
        vm: &ManagedObjectReference,
        plan: &VmModel,
        prior: Option<&VmModel>,
        limit: Duration,
        cancel: &CancellationToken,
    ) -> Result<(), Diagnostics> {
        let info = client
            .vm_info(vm)
            .await
            .map_err(|e| error_diagnostics("read the VM", &e))?;
        let inv = names::Names::of_model(plan)
            .inventory(client)
            .await
            .map_err(|e| error_diagnostics("read the inventory", &e))?;
        let datastore = plan
            .datastore
            .clone()
            .or_else(|| info.disks().find_map(|d| datastore_of(&d.file_name)))
            .unwrap_or_default();
        // What state knows; right after a create or clone, the VM as it came out (so whatever
        // creation did not apply, e.g. settings a clone ignored, is applied now).
        let reference = match prior {
            Some(p) => p.clone(),
            None => VmModel {
                cloud_init: None,
                ..VmModel::from_info(&info, &inv, plan)
            },
        };
        let mut spec = settings_spec(plan, Some(&reference));
        if reference.name != plan.name {
            spec.name = Some(plan.name.clone());
        }
        let (changes, lock) =
            device_changes(client, plan, Some(&reference), &info, &inv, &datastore).await?;
        spec.device_changes = changes;
        spec.memory_reservation_locked_to_max = lock;
        let action =
            |what: &str, e: &Error| error_diagnostics(&format!("{what} VM {:?}", plan.name), e);
        let mut cycled = false;
        let new_host = match (prior.and_then(|p| p.host.as_deref()), plan.host.as_deref()) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        };
        if new_host {
            cycled = migrate::relocate(client, vm, &inv, plan, &info, limit, cancel).await?;
        }
        if !spec.is_empty() {
            if let Some(why) = needs_power_off(&spec, &info) {
                if !plan.allow_power_cycle.unwrap_or(false) {
                    return Err(Diagnostics::from_error(format!("Unable to change VM {:?} while it runs", plan.name), format!("{why}; set allow_power_cycle = true to let ceso power it off and on again.")));
                }
                client
                    .power_vm(vm, PowerOp::Off, Some(limit), cancel)
                    .await
                    .map_err(|e| action("power off", &e))?;
                cycled = true;
            }
            client
                .reconfigure_vm(vm, &spec, Some(limit), cancel)
                .await
                .map_err(|e| action("reconfigure", &e))?;
        }
        let current = if cycled {
            "poweredOff".to_string()
        } else {
            info.power_state.clone()
        };
        let want = plan.power_state.as_deref().unwrap_or("on");
        let step = match (want, current.as_str()) {
            ("on", "poweredOn") | ("off", "poweredOff") | ("suspended", "suspended") => None,
            ("on", _) => Some(PowerOp::On),
            ("off", _) => Some(PowerOp::Off),
            ("suspended", "poweredOn") => Some(PowerOp::Suspend),
            ("suspended", _) => {
                client
                    .power_vm(vm, PowerOp::On, Some(limit), cancel)
                    .await
                    .map_err(|e| action("power on", &e))?;
                Some(PowerOp::Suspend)
            }
            _ => None,
        };
        if let Some(op) = step {
            client
                .power_vm(vm, op, Some(limit), cancel)
                .await
                .map_err(|e| action("change the power state of", &e))?;
        }
        Ok(())
    }
}

/// Waits (create time only) until VMware Tools report a guest IP address, re-reading it every
/// second; cancelled by StopProvider.
async fn wait_for_ip(
    client: &Arc<Client>,
    vm: &ManagedObjectReference,
    limit: Duration,
    cancel: &CancellationToken,
) -> Result<(), Diagnostics> {
    let started = std::time::Instant::now();
    loop {
        if client.guest_ip(vm).await.is_some() {
            return Ok(());
        }
        if started.elapsed() >= limit {
            return Err(Diagnostics::from_attr_error(
                AttrPath::attr("wait_for_ip").join_index(0).join_attr("timeout"),
                "No guest IP address in time",
                format!("VMware Tools in {vm} reported no IP address within {limit:?}. The VM exists and is tracked (tainted); check that the guest boots with VMware Tools (open-vm-tools) and a network, or raise the timeout."),
            ));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = cancel.cancelled() => return Err(Diagnostics::from_error("Cancelled", "Stopped while waiting for the guest's IP address.")),
        }
    }
}

/// The VM a state refers to: by moid, else by instance UUID.
async fn find_vm(client: &Client, m: &VmModel) -> Result<Option<ManagedObjectReference>, Error> {
    if let Some(moid) = &m.moid {
        return Ok(Some(ManagedObjectReference::new("VirtualMachine", moid)));
    }
    match m.id.as_deref() {
        Some(uuid) => match client.find_vm_by_uuid(uuid, true).await {
            Ok(vm) => Ok(Some(vm)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        },
        None => Ok(None),
    }
}

/// A VM given by inventory path, instance or BIOS UUID, or name.
async fn find_any(client: &Client, text: &str) -> Result<ManagedObjectReference, Error> {
    if text.contains('/') {
        return client.find_by_path(text).await;
    }
    let looks_like_uuid = text.len() == 36 && text.chars().filter(|c| *c == '-').count() == 4;
    if looks_like_uuid {
        if let Ok(vm) = client.find_vm_by_uuid(text, true).await {
            return Ok(vm);
        }
        if let Ok(vm) = client.find_vm_by_uuid(text, false).await {
            return Ok(vm);
        }
    }
    match client.find_by_name("VirtualMachine", text).await {
        Err(e) if e.is_not_found() && text.starts_with("vm-") => client.find_vm_by_id(text).await,
        other => other,
    }
}

#[async_trait]
impl TypedResource for Vm {
    type Model = VmModel;
    type Connect = Vsphere;
    const TYPE_NAME: &'static str = "ceso_vm";

    fn schema() -> Schema {
        schema::schema()
    }

    fn validate(config: &Config<'_>, diags: &mut Diagnostics) {
        if let Ok(view) = config.decode::<view::VmView>() {
            plan::validate(&view, diags);
        }
    }

    async fn plan(&self, ctx: &Context, plan: &mut Plan<'_, '_>) {
        plan::modify(ctx, plan).await;
    }

    async fn create(&self, call: &Call<'_>, plan: VmModel) -> Outcome<VmModel> {
        let (client, cancel) = (&call.conn, &call.ctx.cancel);
        let limit = limit(&plan, Op::Create, 30);
        // What the plan only warned about must exist now, before anything is created.
        let names = names::Names::of_model(&plan);
        let inv = match names.inventory(client).await {
            Ok(i) => i,
            Err(e) => return Outcome::failed(error_diagnostics("read the inventory", &e)),
        };
        if let Err(d) = names.check_at_apply(&inv) {
            return Outcome::failed(d);
        }
        let at = match place(&inv, &plan) {
            Ok(p) => p,
            Err(d) => return Outcome::failed(d),
        };
        let vm = match make_vm(client, &plan, &inv, &at, limit, cancel).await {
            Ok(vm) => vm,
            Err(NotMade {
                diags,
                vm: Some(vm),
                ..
            }) => return self.finish(client, &vm, &plan, diags).await,
            Err(NotMade {
                diags,
                maybe: Some(uuid),
                ..
            }) => {
                // The VM may exist: state keeps its instance UUID, so the next refresh finds
                // it (tracked, tainted) or drops it.
                let handle = VmModel {
                    id: Some(uuid),
                    moid: None,
                    ..plan
                };
                return Outcome::with(Some(handle), diags);
            }
            Err(NotMade { diags, .. }) => return Outcome::failed(diags),
        };
        // From here on the VM exists: every failure returns its state so it stays tracked.
        let mut diags = match self.converge(client, &vm, &plan, None, limit, cancel).await {
            Ok(()) => Diagnostics::new(),
            Err(d) => d,
        };
        if let Some(wait) = plan.wait_for_ip.as_ref().and_then(|w| w.first()) {
            if !diags.has_errors() {
                let limit = wait
                    .timeout
                    .as_deref()
                    .and_then(|t| parse_duration(t).ok())
                    .unwrap_or(Duration::from_secs(300));
                if let Err(d) = wait_for_ip(client, &vm, limit, cancel).await {
                    diags.extend(d);
                }
            }
        }
        self.finish(client, &vm, &plan, diags).await
    }

    async fn read(&self, call: &Call<'_>, prior: VmModel) -> Result<Option<VmModel>, Diagnostics> {
        self.read_model(&call.conn, &prior, false)
            .await
            .map_err(|e| error_diagnostics("read the VM", &e))
    }

    async fn update(&self, call: &Call<'_>, prior: VmModel, plan: VmModel) -> Outcome<VmModel> {
        let client = &call.conn;
        let vm = match find_vm(client, &prior).await {
            Ok(Some(vm)) => vm,
            Ok(None) => {
                return Outcome::gone(Diagnostics::from_error(
                    "VM not found",
                    "The VM was deleted outside Terraform; the next plan re-creates it.",
                ))
            }
            Err(e) => return Outcome::failed(error_diagnostics("find the VM", &e)),
        };
        let limit = limit(&plan, Op::Update, 30);
        let moving = migrate::detect_move(
            Some(migrate::Whereabouts::of_model(&prior)),
            migrate::Whereabouts::of_model(&plan),
        );
        if moving == migrate::Move::Endpoint {
            return self.move_to_endpoint(call, &plan, &vm, limit).await;
        }
        let diags = match self
            .converge(client, &vm, &plan, Some(&prior), limit, &call.ctx.cancel)
            .await
        {
            Ok(()) => Diagnostics::new(),
            Err(d) => d,
        };
        self.finish(client, &vm, &plan, diags).await
    }

    async fn delete(&self, call: &Call<'_>, prior: VmModel) -> Diagnostics {
        let (client, cancel) = (&call.conn, &call.ctx.cancel);
        let vm = match find_vm(client, &prior).await {
            Ok(Some(vm)) => vm,
            Ok(None) => return Diagnostics::new(),
            Err(e) => return error_diagnostics("find the VM", &e),
        };
        let info = match client.vm_info_prefetched(&vm).await {
            Ok(i) => i,
            Err(e) if e.is_not_found() => return Diagnostics::new(),
            Err(e) => return error_diagnostics("read the VM", &e),
        };
        if info.has_snapshots && !prior.force_destroy.unwrap_or(false) {
            return Diagnostics::from_error(
                format!("Unable to destroy VM {:?}", prior.name),
                "The VM has snapshots that no ceso_snapshot in this configuration manages; destroying it would delete them. Remove them first, or set force_destroy = true.",
            );
        }
        let limit = limit(&prior, Op::Delete, 10);
        if info.power_state != "poweredOff" {
            if let Err(e) = client
                .power_vm(&vm, PowerOp::Off, Some(limit), cancel)
                .await
            {
                if !e.is_not_found() && e.fault.as_deref() != Some("InvalidPowerState") {
                    return error_diagnostics(&format!("power off VM {:?}", prior.name), &e);
                }
            }
        }
        match client.destroy(&vm).await {
            Ok(()) => Diagnostics::new(),
            Err(e) => error_diagnostics(&format!("destroy VM {:?}", prior.name), &e),
        }
    }
}

#[async_trait]
impl Import<Vm> for Vm {
    fn id_format(&self) -> &'static str {
        "an inventory path (/DC0/vm/web-01), an instance or BIOS UUID, a moid (vm-42), or a unique name"
    }

    async fn import(&self, call: &Call<'_>, id: &str) -> Result<Vec<VmModel>, Diagnostics> {
        let client = &call.conn;
        let vm = find_any(client, id).await.map_err(|e| match e.kind {
            ErrorKind::NotFound | ErrorKind::InvalidArgument => Diagnostics::from_error(
                "Unable to import ceso_vm",
                format!("{}. Give {}.", e.message, self.id_format()),
            ),
            _ => error_diagnostics("find the VM to import", &e),
        })?;
        let info = client
            .vm_info(&vm)
            .await
            .map_err(|e| error_diagnostics("read the VM", &e))?;
        // Every disk (labelled disk0, disk1, ... in device order) and adapter becomes managed.
        let disks: Vec<DiskModel> = info
            .disks()
            .enumerate()
            .map(|(n, d)| DiskModel {
                label: format!("disk{n}"),
                key: Some(i64::from(d.key)),
                ..DiskModel::default()
            })
            .collect();
        let nics: Vec<model::NicModel> = info.nics().map(|_| model::NicModel::default()).collect();
        let pci_devices: Vec<model::PciModel> = info
            .passthroughs()
            .map(model::PciModel::from_device)
            .collect();
        let seed = VmModel {
            disk: Some(disks),
            network_interface: Some(nics),
            pci_device: Some(pci_devices),
            power_state: Some("on".into()),
            ..VmModel::default()
        };
        let inv = client
            .inventory_cached()
            .await
            .map_err(|e| error_diagnostics("read the inventory", &e))?;
        Ok(vec![VmModel::from_info(&info, &inv, &seed)])
    }
}
