//! `ceso_vm`: the VM resource. Create from scratch or clone (CloneVM_Task on vCenter; on a
//! standalone ESXi host, which has no clone API, the source's disks are copied with
//! CopyVirtualDisk_Task and a VM is built around them), cloud-init through `guestinfo.*`,
//! sizing, disks, network adapters, power state; read back from vSphere after every change.
//!
//! A create that fails after the VM exists returns the VM's state with the error, so Terraform
//! taints it rather than losing track of it.

mod migrate;
mod model;
mod names;
mod pci;
mod plan;
mod schema;
mod values;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::framework::timeouts::{self, Operation as Op};
use crate::framework::typed_resource::{Config, Import, Outcome, Plan, TypedResource};
use crate::framework::{AttrPath, Context, Diagnostics, Schema};
use crate::session::{client, error_diagnostics, lookup_diagnostics, Call, Vsphere};
use crate::units::parse_duration;
use crate::vsphere::device::{Device, DeviceChange, Disk, Nic, NicBacking, Operation};
use crate::vsphere::inventory::{Inventory, NetworkRef};
use crate::vsphere::types::ManagedObjectReference;
use crate::vsphere::vm::{CloneSpec, ConfigSpec, MakingTask, PowerOp, VmInfo};
use crate::vsphere::{Client, Error, ErrorKind};

use model::{datastore_of, DiskModel, VmModel};

/// The `ceso_vm` resource.
pub struct Vm;

/// Key of the SCSI controller ceso adds to a new VM.
const CONTROLLER_KEY: i32 = -100;
/// Reserved SCSI unit (the controller itself).
const SCSI_RESERVED_UNIT: i64 = 7;

crate::endpoint_scoped_model!(VmModel);

/// The limit of `op`: the `timeouts` block's, else `default_minutes`.
fn limit(m: &VmModel, op: Op, default_minutes: u64) -> Duration {
    timeouts::limit(
        m.timeouts.as_ref(),
        op,
        Duration::from_secs(default_minutes * 60),
    )
}

/// Where a new VM goes.
struct Placement {
    folder: ManagedObjectReference,
    pool: ManagedObjectReference,
    host: Option<ManagedObjectReference>,
    datastore: String,
    datacenter: ManagedObjectReference,
}

fn place(inv: &Inventory, m: &VmModel) -> Result<Placement, Diagnostics> {
    let err = |attr: &str, e: Error| {
        Diagnostics::from_attr_error(AttrPath::attr(attr), "Invalid placement", e.message)
    };
    let host = match m.host.as_deref() {
        Some(name) => Some(inv.host(name).map_err(|e| err("host", e))?),
        None => inv.hosts.first(),
    };
    let Some(host) = host else {
        return Err(Diagnostics::from_error(
            "Unable to place the VM",
            "The endpoint has no host.",
        ));
    };
    let pool = match m.resource_pool.as_deref() {
        Some(id) => ManagedObjectReference::new("ResourcePool", id),
        None => inv.pool_of(host).cloned().ok_or_else(|| {
            Diagnostics::from_error(
                "Unable to place the VM",
                format!("Host {} has no resource pool.", host.name),
            )
        })?,
    };
    let datastore = match m.datastore.as_deref() {
        Some(name) => inv
            .datastore(name)
            .map_err(|e| err("datastore", e))?
            .1
            .clone(),
        None => inv
            .datastores
            .iter()
            .filter(|d| host.datastores.contains(&d.0))
            .max_by_key(|d| d.2)
            .map(|d| d.1.clone())
            .ok_or_else(|| {
                Diagnostics::from_error(
                    "Unable to place the VM",
                    format!("Host {} sees no datastore.", host.name),
                )
            })?,
    };
    let (datacenter, _, vm_folder) = inv.datacenters.first().cloned().ok_or_else(|| {
        Diagnostics::from_error("Unable to place the VM", "The endpoint has no datacenter.")
    })?;
    let folder = match m.folder.as_deref() {
        Some(id) => ManagedObjectReference::new("Folder", id),
        None => vm_folder.ok_or_else(|| {
            Diagnostics::from_error("Unable to place the VM", "The datacenter has no VM folder.")
        })?,
    };
    Ok(Placement {
        folder,
        pool,
        host: m.host.as_ref().map(|_| host.obj.clone()),
        datastore,
        datacenter,
    })
}

/// The NIC backing for a configured network.
fn nic_backing(inv: &Inventory, network: &str, index: usize) -> Result<NicBacking, Diagnostics> {
    match inv.network(network) {
        Ok(NetworkRef::Standard { name, .. }) => Ok(NicBacking::Network { name: name.clone() }),
        Ok(NetworkRef::Distributed {
            key, switch_uuid, ..
        }) => Ok(NicBacking::Distributed {
            switch_uuid: switch_uuid.clone(),
            portgroup_key: key.clone(),
        }),
        Err(e) => Err(Diagnostics::from_attr_error(
            AttrPath::attr("network_interface")
                .join_index(index)
                .join_attr("network"),
            "Unknown network",
            e.message,
        )),
    }
}

/// The next free SCSI unit numbers, skipping the reserved 7.
fn assign_units(disks: &[DiskModel], taken: &[i64]) -> Vec<i64> {
    let mut used: Vec<i64> = taken.to_vec();
    used.extend(disks.iter().filter_map(|d| d.unit_number));
    disks
        .iter()
        .map(|d| {
            d.unit_number.unwrap_or_else(|| {
                let u = (0..64)
                    .find(|u| *u != SCSI_RESERVED_UNIT && !used.contains(u))
                    .unwrap_or(63);
                used.push(u);
                u
            })
        })
        .collect()
}

/// The cloud_init block, if there is one (an absent block is an empty list or null).
fn cloud_init_of(m: &VmModel) -> Option<&model::CloudInitModel> {
    m.cloud_init.as_ref().and_then(|c| c.first())
}

/// Settings every create, clone and update applies the same way.
fn settings_spec(plan: &VmModel, prior: Option<&VmModel>) -> ConfigSpec {
    let changed = |f: fn(&VmModel) -> Option<i64>| -> Option<i64> {
        let want = f(plan)?;
        (prior.and_then(f) != Some(want)).then_some(want)
    };
    let changed_b = |f: fn(&VmModel) -> Option<bool>| -> Option<bool> {
        let want = f(plan)?;
        (prior.and_then(f) != Some(want)).then_some(want)
    };
    let alloc = |r: fn(&VmModel) -> Option<i64>, l: fn(&VmModel) -> Option<i64>| {
        let (want_r, want_l) = (r(plan), l(plan));
        let differs = prior.is_none_or(|p| r(p) != want_r || l(p) != want_l);
        (differs && (want_r.is_some() || want_l.is_some()))
            .then(|| (want_r.unwrap_or(0), want_l.unwrap_or(-1)))
    };
    let mut extra: Vec<(String, String)> = Vec::new();
    let want = plan.extra_config.clone().unwrap_or_default();
    let had = prior
        .and_then(|p| p.extra_config.clone())
        .unwrap_or_default();
    for (k, v) in &want {
        if had.get(k) != Some(v) {
            extra.push((k.clone(), v.clone()));
        }
    }
    for k in had.keys().filter(|k| !want.contains_key(*k)) {
        extra.push((k.clone(), String::new()));
    }
    let group_key = crate::data_sources::placement::inventory::GROUP_KEY;
    if prior.is_none_or(|p| p.anti_affinity_group != plan.anti_affinity_group)
        && (prior.is_some() || plan.anti_affinity_group.is_some())
    {
        extra.push((
            group_key.to_string(),
            plan.anti_affinity_group.clone().unwrap_or_default(),
        ));
    }
    if prior.is_none_or(|p| cloud_init_of(p) != cloud_init_of(plan)) {
        extra.extend(
            plan.cloud_init_entries()
                .into_iter()
                .filter(|(_, v)| prior.is_some() || !v.is_empty()),
        );
    }
    ConfigSpec {
        guest_id: plan
            .guest_id
            .clone()
            .filter(|g| prior.and_then(|p| p.guest_id.as_ref()) != Some(g)),
        annotation: plan
            .annotation
            .clone()
            .filter(|a| prior.and_then(|p| p.annotation.as_ref()) != Some(a)),
        num_cpus: changed(|m| m.num_cpus),
        cores_per_socket: changed(|m| m.cores_per_socket),
        memory_mb: changed(|m| m.memory_mb),
        memory_hot_add: changed_b(|m| m.memory_hot_add),
        cpu_hot_add: changed_b(|m| m.cpu_hot_add),
        cpu_allocation: alloc(|m| m.cpu_reservation_mhz, |m| m.cpu_limit_mhz),
        memory_allocation: alloc(|m| m.memory_reservation_mb, |m| m.memory_limit_mb),
        extra_config: extra,
        cbt: changed_b(|m| m.enable_cbt),
        firmware: plan
            .firmware
            .clone()
            .filter(|f| prior.and_then(|p| p.firmware.as_ref()) != Some(f)),
        ..ConfigSpec::default()
    }
}

/// The spec of a new VM named as planned in `[datastore]`, built around disks copied from
/// `source`: what the plan leaves unset (guest OS, vCPUs, memory, firmware) comes from it.
fn spec_around(plan: &VmModel, source: &VmInfo, datastore: &str) -> ConfigSpec {
    let mut spec = settings_spec(plan, None);
    spec.name = Some(plan.name.clone());
    spec.vm_path = Some(format!("[{datastore}]"));
    spec.guest_id = spec.guest_id.or(Some(source.guest_id.clone()));
    spec.num_cpus = spec.num_cpus.or(Some(source.num_cpus));
    spec.memory_mb = spec.memory_mb.or(Some(source.memory_mb));
    spec.firmware = spec.firmware.or(Some(source.firmware.clone()));
    spec
}

/// Device changes that take the VM's disks and NICs from `info` to `plan`.
fn device_changes(
    plan: &VmModel,
    prior: Option<&VmModel>,
    info: &VmInfo,
    inv: &Inventory,
    datastore: &str,
) -> Result<Vec<DeviceChange>, Diagnostics> {
    let mut changes = Vec::new();
    let vm_disks: Vec<&Disk> = info.disks().collect();
    let controller = info.devices.iter().find_map(|d| match d {
        Device::Controller { key, kind, bus: 0 }
            if kind.contains("SCSI") || kind.contains("LsiLogic") || kind.contains("BusLogic") =>
        {
            Some(*key)
        }
        _ => None,
    });
    let prior_disks = prior.and_then(|p| p.disk.clone()).unwrap_or_default();
    let planned_disks = plan.disk.clone().unwrap_or_default();
    // With no disk blocks, disks are not managed (a clone keeps its template's).
    let manage_disks = !planned_disks.is_empty();
    // Disks known by label in state, matched to the VM's disks by device key.
    let existing = |label: &str| -> Option<&Disk> {
        let key = prior_disks.iter().find(|p| p.label == label)?.key?;
        vm_disks.iter().copied().find(|d| i64::from(d.key) == key)
    };
    let new_disks: Vec<DiskModel> = planned_disks
        .iter()
        .filter(|d| existing(&d.label).is_none())
        .cloned()
        .collect();
    let taken: Vec<i64> = vm_disks.iter().map(|d| i64::from(d.unit_number)).collect();
    let units = assign_units(&new_disks, &taken);
    let mut next_key = -101;
    for d in planned_disks.iter().filter(|_| manage_disks) {
        if let Some(current) = existing(&d.label) {
            let want_kb = d.size_gb * 1024 * 1024;
            if want_kb > current.capacity_kb {
                changes.push(DeviceChange::Disk {
                    op: Operation::Edit,
                    disk: Disk {
                        capacity_kb: want_kb,
                        ..current.clone()
                    },
                    file_op: false,
                });
            }
        }
    }
    for (d, unit) in new_disks.iter().zip(units) {
        let controller_key = controller.unwrap_or(CONTROLLER_KEY);
        changes.push(DeviceChange::Disk {
            op: Operation::Add,
            disk: Disk {
                key: next_key,
                controller_key,
                unit_number: unit as i32,
                capacity_kb: d.size_gb * 1024 * 1024,
                file_name: format!("[{}]", d.datastore.as_deref().unwrap_or(datastore)),
                thin: d.thin.unwrap_or(true),
            },
            file_op: true,
        });
        next_key -= 1;
    }
    for p in prior_disks.iter().filter(|_| manage_disks) {
        if !planned_disks.iter().any(|d| d.label == p.label) {
            if let Some(current) = existing(&p.label) {
                changes.push(DeviceChange::Disk {
                    op: Operation::Remove,
                    disk: current.clone(),
                    file_op: true,
                });
            }
        }
    }
    // Network adapters, by position.
    let vm_nics: Vec<&Nic> = info.nics().collect();
    let planned_nics = plan.network_interface.clone().unwrap_or_default();
    let mut nic_key = -201;
    for (i, want) in planned_nics.iter().enumerate() {
        let backing = nic_backing(inv, &want.network, i)?;
        let adapter = want
            .adapter_type
            .clone()
            .unwrap_or_else(|| "vmxnet3".to_string());
        let fresh = |key: i32| Nic {
            key,
            adapter_type: adapter.clone(),
            mac_address: want.mac_address.clone(),
            address_type: if want.mac_address.is_some() {
                "manual"
            } else {
                "generated"
            }
            .to_string(),
            backing: backing.clone(),
            network: inv.network(&want.network).ok().map(|n| n.obj().clone()),
        };
        match vm_nics.get(i) {
            Some(current) if current.adapter_type == adapter => {
                let mac_changed =
                    want.mac_address.is_some() && want.mac_address != current.mac_address;
                if current.backing != backing || mac_changed {
                    let mut edited = fresh(current.key);
                    if !mac_changed {
                        edited.mac_address = current.mac_address.clone();
                        edited.address_type = current.address_type.clone();
                    }
                    changes.push(DeviceChange::Nic {
                        op: Operation::Edit,
                        nic: edited,
                    });
                }
            }
            Some(current) => {
                changes.push(DeviceChange::Nic {
                    op: Operation::Remove,
                    nic: (*current).clone(),
                });
                changes.push(DeviceChange::Nic {
                    op: Operation::Add,
                    nic: fresh(nic_key),
                });
                nic_key -= 1;
            }
            None => {
                changes.push(DeviceChange::Nic {
                    op: Operation::Add,
                    nic: fresh(nic_key),
                });
                nic_key -= 1;
            }
        }
    }
    // With no adapter blocks, adapters are not managed.
    for extra in vm_nics
        .iter()
        .skip(planned_nics.len())
        .filter(|_| !planned_nics.is_empty())
    {
        changes.push(DeviceChange::Nic {
            op: Operation::Remove,
            nic: (*extra).clone(),
        });
    }
    Ok(changes)
}

/// Whether applying `spec` to a running VM needs it powered off first.
fn needs_power_off(spec: &ConfigSpec, info: &VmInfo) -> Option<String> {
    if info.power_state != "poweredOn" {
        return None;
    }
    if spec.num_cpus.is_some_and(|n| n < info.num_cpus)
        || (spec.num_cpus.is_some() && !info.cpu_hot_add)
    {
        return Some(
            "changing vCPUs of a running VM needs CPU hot add (and never removes vCPUs)".into(),
        );
    }
    if spec.memory_mb.is_some_and(|m| m < info.memory_mb)
        || (spec.memory_mb.is_some() && !info.memory_hot_add)
    {
        return Some(
            "changing memory of a running VM needs memory hot add (and never removes memory)"
                .into(),
        );
    }
    if spec
        .device_changes
        .iter()
        .any(|c| matches!(c, DeviceChange::Passthrough { .. }))
    {
        return Some(
            "PCI passthrough devices are added and removed only while the VM is off".into(),
        );
    }
    if spec.cores_per_socket.is_some()
        || spec.cpu_hot_add.is_some()
        || spec.memory_hot_add.is_some()
        || spec.firmware.is_some()
        || spec.guest_id.is_some()
    {
        return Some("cores per socket, hot-add settings, firmware and guest OS change only while the VM is off".into());
    }
    None
}

/// How a create ended when it did not simply succeed.
struct NotMade {
    diags: Diagnostics,
    /// The VM, when it exists after all (incomplete: tracked, and so tainted).
    vm: Option<ManagedObjectReference>,
    /// The instance UUID of a VM that may exist though it could not be found (the outcome
    /// stayed unknown): state keeps it, and the next refresh finds the VM or drops it.
    maybe: Option<String>,
}

impl From<Diagnostics> for NotMade {
    fn from(diags: Diagnostics) -> Self {
        NotMade {
            diags,
            vm: None,
            maybe: None,
        }
    }
}

/// How many times a create whose outcome was lost, and which surely did not happen, is tried.
const CREATE_ATTEMPTS: usize = 3;

/// Runs a create (`attempt`, which makes the VM with instance UUID `uuid`) so that a lost
/// outcome never orphans a VM or makes two: when the connection broke or the wait ended before
/// the task did, vSphere is asked for the VM by its instance UUID (once the tasks that may be
/// making it, `task`'s method on its entity, are over). Found, it is the result (or,
/// when the user's time ran out, tracked with the error); surely absent, the create is tried
/// again; unknown, the error says so and state keeps the UUID.
async fn create_once<F, Fut>(
    client: &Arc<Client>,
    uuid: &str,
    what: &str,
    task: Option<MakingTask<'_>>,
    limit: Duration,
    mut attempt: F,
) -> Result<ManagedObjectReference, NotMade>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<ManagedObjectReference, Error>>,
{
    let mut lost: Option<Error> = None;
    for _ in 0..CREATE_ATTEMPTS {
        let e = match attempt().await {
            Ok(vm) => return Ok(vm),
            Err(e) => e,
        };
        // A second try that finds the name taken may have met the first one's VM.
        let look = e.outcome_unknown() || (lost.is_some() && e.kind == ErrorKind::AlreadyExists);
        if !look {
            return Err(error_diagnostics(what, &e).into());
        }
        tracing::warn!(error = %e, %uuid, "the outcome of a VM create is unknown; looking for the VM");
        if let (Some(task), ErrorKind::Transport) = (task, e.kind) {
            // The call may have started a task that is still making the VM: let such tasks end.
            if let Err(f) = client.settle_tasks(task.entity, task.method, limit).await {
                tracing::debug!(error = %f, "could not read the recent tasks");
            }
        }
        match client.find_vm_by_uuid(uuid, true).await {
            Ok(vm) if matches!(e.kind, ErrorKind::Timeout | ErrorKind::Cancelled) => {
                return Err(NotMade {
                    diags: error_diagnostics(what, &e),
                    vm: Some(vm),
                    maybe: None,
                })
            }
            Ok(vm) => {
                tracing::info!(%vm, %uuid, "the VM exists: its create went through");
                return Ok(vm);
            }
            Err(f) if f.is_not_found() && e.kind == ErrorKind::Transport => lost = Some(e),
            Err(f) if f.is_not_found() => {
                // The task may still make it: keep its UUID in state.
                return Err(NotMade {
                    diags: error_diagnostics(what, &e),
                    vm: None,
                    maybe: Some(uuid.to_string()),
                });
            }
            Err(f) => {
                let mut diags = error_diagnostics(what, &e);
                diags.extend(error_diagnostics(
                    &format!("find out whether the VM with instance UUID {uuid} exists"),
                    &f,
                ));
                return Err(NotMade {
                    diags,
                    vm: None,
                    maybe: Some(uuid.to_string()),
                });
            }
        }
    }
    let e = lost.unwrap_or_else(|| Error::new(ErrorKind::Transport, "the create kept failing"));
    Err(NotMade {
        diags: error_diagnostics(what, &e),
        vm: None,
        maybe: Some(uuid.to_string()),
    })
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

    /// Makes the VM (from scratch, a clone or an OVF) with a new instance UUID; returns it,
    /// with no device or power changes yet beyond what creation itself does.
    async fn make_vm(
        &self,
        client: &Arc<Client>,
        plan: &VmModel,
        inv: &Inventory,
        at: &Placement,
        limit: Duration,
        cancel: &CancellationToken,
    ) -> Result<ManagedObjectReference, NotMade> {
        let uuid = &crate::vsphere::vm::new_instance_uuid();
        let action =
            |what: &str, e: &Error| error_diagnostics(&format!("{what} VM {:?}", plan.name), e);
        if let Some(ovf) = plan.ovf.as_ref().and_then(|o| o.first()) {
            let opened = if ovf.source.starts_with("http://") || ovf.source.starts_with("https://")
            {
                crate::vsphere::ovf::OvfSource::fetch(&ovf.source, client.transport_timeout()).await
            } else {
                crate::vsphere::ovf::OvfSource::open(std::path::Path::new(&ovf.source))
            };
            let source = opened.map_err(|e| {
                Diagnostics::from_attr_error(
                    AttrPath::attr("ovf").join_index(0).join_attr("source"),
                    "Unable to read the OVF package",
                    e.message,
                )
            })?;
            let ds = inv
                .datastore(&at.datastore)
                .map_err(|e| action("place", &e))?
                .0
                .clone();
            let target = crate::vsphere::ovf::OvfTarget {
                name: &plan.name,
                pool: &at.pool,
                folder: &at.folder,
                datastore: &ds,
                host: at.host.as_ref(),
                instance_uuid: Some(uuid),
            };
            let what = format!("deploy the OVF for VM {:?}", plan.name);
            return create_once(client, uuid, &what, None, limit, || {
                client.deploy_ovf(&source, &target, limit)
            })
            .await;
        }
        if let Some(clone) = plan.clone.as_ref().and_then(|c| c.first()) {
            let source = find_source(client, &clone.template).await?;
            let src = client
                .vm_info(&source)
                .await
                .map_err(|e| action("read the clone source of", &e))?;
            if client.about().is_vcenter() {
                let mut config = settings_spec(plan, None);
                config.name = None;
                config.instance_uuid = Some(uuid.to_string());
                let linked_snapshot = if clone.linked_clone.unwrap_or(false) {
                    let snap = client.current_snapshot(&source).await.ok().flatten();
                    Some(snap.ok_or_else(|| Diagnostics::from_attr_error(AttrPath::attr("clone").join_index(0).join_attr("linked_clone"), "Linked clone needs a snapshot", format!("Template {:?} has no snapshot to link to; take one, or set linked_clone = false.", clone.template)))?)
                } else {
                    None
                };
                let ds = inv.datastore(&at.datastore).ok().map(|d| d.0.clone());
                let spec = CloneSpec {
                    pool: Some(at.pool.clone()),
                    host: at.host.clone(),
                    datastore: ds,
                    linked_snapshot,
                    config,
                };
                let what = format!("clone VM {:?}", plan.name);
                let task = Some(MakingTask::clone_vm(&source));
                return create_once(client, uuid, &what, task, limit, || {
                    client.clone_vm(&source, &at.folder, &plan.name, &spec, Some(limit), cancel)
                })
                .await;
            }
            // Standalone ESXi: copy each disk, then build the VM around the copies.
            let mut changes = vec![DeviceChange::ScsiController {
                key: CONTROLLER_KEY,
                bus: 0,
                kind: "ParaVirtualSCSIController".into(),
            }];
            let mut copied: Vec<String> = Vec::new();
            let mut copies: Vec<Disk> = Vec::new();
            client
                .make_directory(
                    &format!("[{}] {}", at.datastore, plan.name),
                    Some(&at.datacenter),
                )
                .await
                .map_err(|e| NotMade::from(action("make the directory of", &e)))?;
            let src_disks: Vec<&Disk> = src.disks().collect();
            for (i, d) in src_disks.iter().enumerate() {
                let dest = format!("[{}] {}/{}_{}.vmdk", at.datastore, plan.name, plan.name, i);
                if let Err(e) = client
                    .copy_virtual_disk(
                        &d.file_name,
                        &dest,
                        Some(&at.datacenter),
                        Some(limit),
                        cancel,
                    )
                    .await
                {
                    cleanup_files(client, inv, &copied).await;
                    return Err(action("copy a disk for", &e).into());
                }
                copied.push(dest.clone());
                copies.push(Disk {
                    file_name: dest,
                    ..(*d).clone()
                });
            }
            changes.extend(migrate::attach(&copies, CONTROLLER_KEY, SCSI_RESERVED_UNIT));
            let mut spec = spec_around(plan, &src, &at.datastore);
            spec.instance_uuid = Some(uuid.to_string());
            spec.device_changes = changes;
            let what = format!("create VM {:?}", plan.name);
            let task = Some(MakingTask::create_vm(&at.folder));
            let made = create_once(client, uuid, &what, task, limit, || {
                client.create_vm(
                    &at.folder,
                    &at.pool,
                    at.host.as_ref(),
                    &spec,
                    Some(limit),
                    cancel,
                )
            })
            .await;
            if let Err(NotMade {
                vm: None,
                maybe: None,
                ..
            }) = &made
            {
                // Surely no VM holds the copies.
                cleanup_files(client, inv, &copied).await;
            }
            return made;
        }
        let mut spec = settings_spec(plan, None);
        spec.name = Some(plan.name.clone());
        spec.instance_uuid = Some(uuid.to_string());
        spec.vm_path = Some(format!("[{}]", at.datastore));
        spec.version = plan.hardware_version.map(|v| format!("vmx-{v}"));
        spec.guest_id = spec.guest_id.or(Some("otherGuest64".into()));
        let mut changes = vec![DeviceChange::ScsiController {
            key: CONTROLLER_KEY,
            bus: 0,
            kind: "ParaVirtualSCSIController".into(),
        }];
        let empty = VmInfo::default();
        changes.extend(device_changes(plan, None, &empty, inv, &at.datastore)?);
        spec.device_changes = changes;
        let what = format!("create VM {:?}", plan.name);
        let task = Some(MakingTask::create_vm(&at.folder));
        create_once(client, uuid, &what, task, limit, || {
            client.create_vm(
                &at.folder,
                &at.pool,
                at.host.as_ref(),
                &spec,
                Some(limit),
                cancel,
            )
        })
        .await
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
        spec.device_changes = device_changes(plan, Some(&reference), &info, &inv, &datastore)?;
        let (pci_changes, lock) = pci::device_changes(client, &inv, plan, Some(&reference), &info)
            .await
            .map_err(|e| {
                error_diagnostics(&format!("plan the PCI devices of VM {:?}", plan.name), &e)
            })?;
        spec.device_changes.extend(pci_changes);
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

impl Vm {
    /// Moves the VM to the plan's endpoint (a cold migration between standalone hosts): power
    /// off, stream the disks between the datastores, create the VM around the copies, destroy
    /// the original, then converge the copy. Until the copy exists, a failure leaves the
    /// original as it was (powered on again) and removes what was copied.
    async fn move_to_endpoint(
        &self,
        call: &Call<'_>,
        plan: &VmModel,
        vm: &ManagedObjectReference,
        limit: Duration,
    ) -> Outcome<VmModel> {
        let (ctx, src) = (call.ctx, &call.conn);
        let keep = Outcome::failed;
        let dst = match client(ctx, plan.endpoint.as_deref()).await {
            Ok(c) => c,
            Err(d) => return keep(d),
        };
        let action = |what: &str, e: &Error| {
            error_diagnostics(
                &format!(
                    "{what} VM {:?} to endpoint {:?}",
                    plan.name,
                    plan.endpoint.as_deref().unwrap_or_default()
                ),
                e,
            )
        };
        let (info, src_inv, dst_inv) = match tokio::try_join!(
            src.vm_info(vm),
            src.inventory_cached(),
            dst.inventory_cached()
        ) {
            Ok(x) => x,
            Err(e) => return keep(action("read what is needed to move", &e)),
        };
        let at = match place(&dst_inv, plan) {
            Ok(p) => p,
            Err(d) => return keep(d),
        };
        let dc_name = |inv: &Inventory| {
            inv.datacenters
                .first()
                .map(|d| d.1.clone())
                .unwrap_or_default()
        };
        let was_on = info.power_state == "poweredOn";
        if was_on {
            if let Err(e) = src
                .power_vm(vm, PowerOp::Off, Some(limit), &ctx.cancel)
                .await
            {
                return keep(action("power off before moving", &e));
            }
        }
        // Put the original back as it was when the move stops before the copy exists.
        let (dst_ref, inv_ref) = (&dst, &dst_inv);
        let undo = |d: Diagnostics, written: Vec<String>| async move {
            cleanup_files(dst_ref, inv_ref, &written).await;
            if was_on {
                if let Err(e) = src
                    .power_vm(vm, PowerOp::On, Some(limit), &ctx.cancel)
                    .await
                {
                    tracing::warn!(error = %e, "could not power the VM on again after a failed move");
                }
            }
            keep(d)
        };
        let dir = format!("[{}] {}", at.datastore, plan.name);
        let made_dir = match dst.make_new_directory(&dir, Some(&at.datacenter)).await {
            Ok(made) => made,
            Err(e) => return undo(action("make the directory to move", &e), Vec::new()).await,
        };
        let (copied, mut written) = migrate::copy_disks(
            src,
            &dc_name(&src_inv),
            &info,
            &dst,
            &dc_name(&dst_inv),
            &at.datastore,
            &plan.name,
        )
        .await;
        if made_dir {
            // Removed last, once its files are: a directory this move made.
            written.push(dir);
        }
        let copied = match copied {
            Ok(c) => c,
            Err(e) => return undo(action("copy the disks to move", &e), written).await,
        };
        let mut spec = spec_around(plan, &info, &at.datastore);
        let mut changes = vec![DeviceChange::ScsiController {
            key: CONTROLLER_KEY,
            bus: 0,
            kind: "ParaVirtualSCSIController".into(),
        }];
        changes.extend(migrate::attach(&copied, CONTROLLER_KEY, SCSI_RESERVED_UNIT));
        // Adapters as planned (disks are the copies, not new ones).
        let adapters_only = VmModel {
            disk: None,
            ..plan.clone()
        };
        match device_changes(
            &adapters_only,
            None,
            &VmInfo::default(),
            &dst_inv,
            &at.datastore,
        ) {
            Ok(c) => changes.extend(c),
            Err(d) => return undo(d, written).await,
        }
        spec.device_changes = changes;
        let new_vm = match dst
            .create_vm(
                &at.folder,
                &at.pool,
                at.host.as_ref(),
                &spec,
                Some(limit),
                &ctx.cancel,
            )
            .await
        {
            Ok(v) => v,
            Err(e) => return undo(action("create the moved", &e), written).await,
        };
        // The copy exists: from here on, state follows it.
        let mut diags = Diagnostics::new();
        if let Err(e) = src.destroy(vm).await {
            diags.warning(
                "The original VM remains",
                format!("VM {:?} was copied to endpoint {:?}, but the original could not be destroyed ({}); remove it by hand.", plan.name, plan.endpoint.as_deref().unwrap_or_default(), e.message),
            );
        }
        // Device keys of the copy are new: match disks to labels in order.
        let mut handle = plan.clone();
        if let Some(disks) = handle.disk.as_mut() {
            for d in disks {
                d.key = None;
            }
        }
        if let Err(d) = self
            .converge(&dst, &new_vm, &handle, None, limit, &ctx.cancel)
            .await
        {
            diags.extend(d);
        }
        self.finish(&dst, &new_vm, &handle, diags).await
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

/// Deletes files copied for a clone that never became a VM (best effort, logged).
async fn cleanup_files(client: &Arc<Client>, inv: &Inventory, files: &[String]) {
    let dc = inv
        .datacenters
        .first()
        .map(|d| d.1.clone())
        .unwrap_or_default();
    for f in files {
        if let Ok(file) = crate::vsphere::datastore_file::DatastoreFile::parse(&dc, f) {
            if let Err(e) = client.delete_file(&file).await {
                tracing::warn!(file = %f, error = %e, "could not remove a copied disk after a failed clone");
            }
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

async fn find_source(client: &Client, text: &str) -> Result<ManagedObjectReference, Diagnostics> {
    find_any(client, text).await.map_err(|e| {
        lookup_diagnostics(
            AttrPath::attr("clone").join_index(0).join_attr("template"),
            "Unknown clone source",
            &e,
        )
    })
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
        plan::validate(config.0, diags);
    }

    async fn plan(&self, ctx: &Context, plan: &mut Plan<'_, '_>) {
        plan::modify(ctx, plan.values()).await;
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
        let vm = match self.make_vm(client, &plan, &inv, &at, limit, cancel).await {
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

    fn importer(&self) -> Option<&dyn Import<Self>> {
        Some(self)
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
