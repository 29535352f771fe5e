//! Making a new `ceso_vm`: where it goes, and the VM made from an OVF package, a vCenter
//! clone, a copy of a template's disks on a standalone ESXi host, or from scratch, each
//! through `create_once`, which never orphans a VM nor makes two when an answer is lost.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::framework::{AttrPath, Diagnostics};
use crate::session::{error_diagnostics, lookup_diagnostics};
use crate::vsphere::device::{DeviceChange, Disk};
use crate::vsphere::inventory::Inventory;
use crate::vsphere::types::ManagedObjectReference;
use crate::vsphere::vm::{CloneSpec, MakingTask, VmInfo};
use crate::vsphere::{Client, Error, ErrorKind};

use super::migrate;
use super::model::VmModel;
use super::spec::{
    disk_and_nic_changes, settings_spec, spec_around, CONTROLLER_KEY, SCSI_RESERVED_UNIT,
};

/// Where a new VM goes: its folder, pool, host, datastore and datacenter.
pub(super) struct Destination {
    pub(super) folder: ManagedObjectReference,
    pub(super) pool: ManagedObjectReference,
    pub(super) host: Option<ManagedObjectReference>,
    pub(super) datastore: String,
    pub(super) datacenter: ManagedObjectReference,
}

pub(super) fn place(inv: &Inventory, m: &VmModel) -> Result<Destination, Diagnostics> {
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
            .name
            .clone(),
        None => inv
            .roomiest_datastore(host)
            .map(|d| d.name.clone())
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
    Ok(Destination {
        folder,
        pool,
        host: m.host.as_ref().map(|_| host.obj.clone()),
        datastore,
        datacenter,
    })
}

/// How a create ended when it did not simply succeed.
pub(super) struct NotMade {
    pub(super) diags: Diagnostics,
    /// The VM, when it exists after all (incomplete: tracked, and so tainted).
    pub(super) vm: Option<ManagedObjectReference>,
    /// The instance UUID of a VM that may exist though it could not be found (the outcome
    /// stayed unknown): state keeps it, and the next refresh finds the VM or drops it.
    pub(super) maybe: Option<String>,
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

/// What every way of making a VM needs.
#[derive(Clone, Copy)]
struct NewVm<'a> {
    client: &'a Arc<Client>,
    plan: &'a VmModel,
    inv: &'a Inventory,
    at: &'a Destination,
    limit: Duration,
    cancel: &'a CancellationToken,
}

impl<'a> NewVm<'a> {
    /// Its parts, for a function that uses most of them.
    #[allow(clippy::type_complexity)]
    fn parts(
        &self,
    ) -> (
        &'a Arc<Client>,
        &'a VmModel,
        &'a Inventory,
        &'a Destination,
        Duration,
        &'a CancellationToken,
    ) {
        (
            self.client,
            self.plan,
            self.inv,
            self.at,
            self.limit,
            self.cancel,
        )
    }

    fn action(&self, what: &str, e: &Error) -> Diagnostics {
        error_diagnostics(&format!("{what} VM {:?}", self.plan.name), e)
    }
}

/// Makes the VM (from an OVF package, a clone, or from scratch) with a new instance UUID;
/// returns it, with no device or power changes yet beyond what creation itself does.
pub(super) async fn make_vm(
    client: &Arc<Client>,
    plan: &VmModel,
    inv: &Inventory,
    at: &Destination,
    limit: Duration,
    cancel: &CancellationToken,
) -> Result<ManagedObjectReference, NotMade> {
    let uuid = &crate::vsphere::vm::new_instance_uuid();
    let new = NewVm {
        client,
        plan,
        inv,
        at,
        limit,
        cancel,
    };
    if let Some(ovf) = plan.ovf.as_ref().and_then(|o| o.first()) {
        return from_ovf(&new, uuid, &ovf.source).await;
    }
    if let Some(clone) = plan.clone.as_ref().and_then(|c| c.first()) {
        let source = find_source(client, &clone.template).await?;
        let src = client
            .vm_info(&source)
            .await
            .map_err(|e| new.action("read the clone source of", &e))?;
        if client.about().is_vcenter() {
            return clone_on_vcenter(&new, uuid, clone, &source).await;
        }
        return copy_on_esxi(&new, uuid, &src).await;
    }
    from_scratch(&new, uuid).await
}

/// Deploys the OVF package at `source` (a path or an http(s) URL).
async fn from_ovf(
    new: &NewVm<'_>,
    uuid: &str,
    source: &str,
) -> Result<ManagedObjectReference, NotMade> {
    let (client, plan, inv, at, limit, _) = new.parts();
    let action = |what: &str, e: &Error| new.action(what, e);
    let ovf_source = source;
    let opened = if ovf_source.starts_with("http://") || ovf_source.starts_with("https://") {
        crate::vsphere::ovf::OvfSource::fetch(ovf_source, client.transport_timeout()).await
    } else {
        crate::vsphere::ovf::OvfSource::open(std::path::Path::new(&ovf_source))
    };
    let package = opened.map_err(|e| {
        Diagnostics::from_attr_error(
            AttrPath::attr("ovf").join_index(0).join_attr("source"),
            "Unable to read the OVF package",
            e.message,
        )
    })?;
    let ds = inv
        .datastore(&at.datastore)
        .map_err(|e| action("place", &e))?
        .obj
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
    create_once(client, uuid, &what, None, limit, || {
        client.deploy_ovf(&package, &target, limit)
    })
    .await
}

/// Clones `source` with vCenter's `CloneVM_Task` (linked to its current snapshot when asked).
async fn clone_on_vcenter(
    new: &NewVm<'_>,
    uuid: &str,
    clone: &super::model::CloneModel,
    source: &ManagedObjectReference,
) -> Result<ManagedObjectReference, NotMade> {
    let (client, plan, inv, at, limit, cancel) = new.parts();
    let mut config = settings_spec(plan, None);
    config.name = None;
    config.instance_uuid = Some(uuid.to_string());
    let linked_snapshot = if clone.linked_clone.unwrap_or(false) {
        let snap = client.current_snapshot(source).await.ok().flatten();
        Some(snap.ok_or_else(|| Diagnostics::from_attr_error(AttrPath::attr("clone").join_index(0).join_attr("linked_clone"), "Linked clone needs a snapshot", format!("Template {:?} has no snapshot to link to; take one, or set linked_clone = false.", clone.template)))?)
    } else {
        None
    };
    let ds = inv.datastore(&at.datastore).ok().map(|d| d.obj.clone());
    let spec = CloneSpec {
        pool: Some(at.pool.clone()),
        host: at.host.clone(),
        datastore: ds,
        linked_snapshot,
        config,
    };
    let what = format!("clone VM {:?}", plan.name);
    let task = Some(MakingTask::clone_vm(source));
    create_once(client, uuid, &what, task, limit, || {
        client.clone_vm(source, &at.folder, &plan.name, &spec, Some(limit), cancel)
    })
    .await
}

/// Standalone ESXi has no clone API: copy each of the source's disks, then build the VM
/// around the copies (removing them when surely no VM holds them).
async fn copy_on_esxi(
    new: &NewVm<'_>,
    uuid: &str,
    src: &VmInfo,
) -> Result<ManagedObjectReference, NotMade> {
    let (client, plan, inv, at, limit, cancel) = new.parts();
    let action = |what: &str, e: &Error| new.action(what, e);
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
    let mut spec = spec_around(plan, src, &at.datastore);
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
    made
}

/// A new VM from scratch: settings, a paravirtual SCSI controller and the planned devices.
async fn from_scratch(new: &NewVm<'_>, uuid: &str) -> Result<ManagedObjectReference, NotMade> {
    let (client, plan, inv, at, limit, cancel) = new.parts();
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
    changes.extend(disk_and_nic_changes(
        plan,
        None,
        &empty,
        inv,
        &at.datastore,
    )?);
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

/// Deletes files copied for a clone that never became a VM (best effort, logged).
pub(super) async fn cleanup_files(client: &Arc<Client>, inv: &Inventory, files: &[String]) {
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

pub(super) async fn find_source(
    client: &Client,
    text: &str,
) -> Result<ManagedObjectReference, Diagnostics> {
    super::find_any(client, text).await.map_err(|e| {
        lookup_diagnostics(
            AttrPath::attr("clone").join_index(0).join_attr("template"),
            "Unknown clone source",
            &e,
        )
    })
}
