//! Moving a VM: a `host` change within one vCenter is `RelocateVM_Task` (vMotion while it runs,
//! with its disks when the target does not see its datastore; cold, with `allow_power_cycle`,
//! when a live move is refused); an `endpoint` change between standalone hosts is a cold
//! migration: the VM is powered off, its disks are streamed from one host's datastore to the
//! other's over HTTPS, the VM is created there around the copies, and the original is destroyed
//! only once the copy exists.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use tokio_util::sync::CancellationToken;

use crate::framework::typed_resource::Plan;
use crate::framework::{AttrPath, Diagnostics, Tri};
use crate::session::error_diagnostics;
use crate::vsphere::datastore_file::DatastoreFile;
use crate::vsphere::device::{DeviceChange, Disk, Operation};
use crate::vsphere::inventory::Inventory;
use crate::vsphere::transfer::Moved;
use crate::vsphere::types::ManagedObjectReference;
use crate::vsphere::vm::{PowerOp, Relocation, VmInfo};
use crate::vsphere::{Client, Error, ErrorKind};

use super::create::{cleanup_files, place};
use super::model::VmModel;
use super::spec::{disk_and_nic_changes, spec_around, CONTROLLER_KEY, SCSI_RESERVED_UNIT};
use super::view::VmView;
use crate::framework::typed_resource::Outcome;
use crate::session::{client, Call};

/// What a plan moves: the VM to another host of its vCenter, or to another endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// Nothing moves.
    None,
    /// Another host of the same endpoint.
    Host,
    /// Another endpoint (standalone host to standalone host).
    Endpoint,
}

/// Where a VM is (or is planned): its endpoint and host, when known.
#[derive(Debug, Clone, Copy, Default)]
pub struct Whereabouts<'a> {
    pub endpoint: Option<&'a str>,
    pub host: Option<&'a str>,
}

impl<'a> Whereabouts<'a> {
    /// Of a state or plan view.
    pub fn of_view(v: &'a VmView) -> Self {
        Self {
            endpoint: v.endpoint.as_deref(),
            host: v.host.as_deref(),
        }
    }

    /// Of a model.
    pub fn of_model(m: &'a VmModel) -> Self {
        Self {
            endpoint: m.endpoint.as_deref(),
            host: m.host.as_deref(),
        }
    }
}

/// Whether `planned` moves the VM of `prior` (`None` on create). An endpoint going from unset
/// to named (or back) is not a move: configurations start naming endpoints when they gain a
/// second one.
pub fn detect_move(prior: Option<Whereabouts<'_>>, planned: Whereabouts<'_>) -> Move {
    let Some(prior) = prior else {
        return Move::None;
    };
    match (prior.endpoint, planned.endpoint) {
        (Some(a), Some(b)) if a != b => return Move::Endpoint,
        _ => {}
    }
    match (prior.host, planned.host) {
        (Some(a), Some(b)) if a != b => Move::Host,
        _ => Move::None,
    }
}

/// The plan of a move: what will change is unknown until it is done, and what cannot move is
/// refused now (passthrough devices tie a VM to its host; a cold migration needs the VM off).
pub fn plan(
    config: &VmView,
    prior: Option<&VmView>,
    planned: &mut VmView,
    plan: &mut Plan<'_, '_>,
) -> Move {
    let kind = detect_move(
        prior.map(Whereabouts::of_view),
        Whereabouts::of_view(planned),
    );
    if kind == Move::None {
        return kind;
    }
    if !planned.pci().is_empty() {
        let attr = if kind == Move::Host {
            "host"
        } else {
            "endpoint"
        };
        plan.diags().attr_error(
            AttrPath::attr(attr),
            "VM with PCI devices cannot move",
            "PCI passthrough devices belong to the VM's host; remove the pci_device blocks first (or replace the VM).",
        );
    }
    let powered_on = prior.is_some_and(|p| p.power_state.as_deref() == Some("on"));
    if kind == Move::Endpoint && powered_on && config.allow_power_cycle != Tri::Known(true) {
        plan.diags().attr_error(
            AttrPath::attr("endpoint"),
            "Move needs a power cycle",
            "Moving a VM to another standalone host copies its disks while it is off. Set allow_power_cycle = true to let ceso power it off and on again there.",
        );
    }
    let mut unknown = vec!["resource_pool"];
    if kind == Move::Endpoint {
        unknown.extend(["id", "moid", "bios_uuid", "folder"]);
    }
    if config.datastore.is_null() {
        unknown.push("datastore");
    }
    if config.host.is_null() {
        unknown.push("host");
    }
    for a in unknown {
        plan.set_unknown(a);
    }
    if let Tri::Known(disks) = &mut planned.disk {
        for (i, d) in disks.iter_mut().enumerate() {
            d.path = Tri::Unknown;
            if kind == Move::Endpoint {
                d.key = Tri::Unknown;
            }
            if config.disks().get(i).is_none_or(|c| c.datastore.is_null()) {
                d.datastore = Tri::Unknown;
            }
        }
        if let Err(e) = plan.set("disk", disks) {
            plan.diags().extend(e);
        }
    }
    if kind == Move::Endpoint {
        if let Tri::Known(nics) = &mut planned.network_interface {
            for (i, n) in nics.iter_mut().enumerate() {
                n.key = Tri::Unknown;
                if config.nics().get(i).is_none_or(|c| c.mac_address.is_null()) {
                    n.mac_address = Tri::Unknown;
                }
            }
            if let Err(e) = plan.set("network_interface", nics) {
                plan.diags().extend(e);
            }
        }
    }
    kind
}

/// Warns, at plan time, when a VM that moves to another endpoint has snapshots: its disks are
/// copied consolidated (the VM as it is now), so the snapshots, named here, stay behind and go
/// with the original.
pub async fn warn_snapshots(
    ctx: &crate::framework::Context,
    prior: &VmView,
    diags: &mut Diagnostics,
) {
    let Tri::Known(moid) = &prior.moid else {
        return;
    };
    let Ok(src) = crate::session::client(ctx, prior.endpoint.as_deref()).await else {
        return;
    };
    let vm = ManagedObjectReference::new("VirtualMachine", moid);
    let Ok(tree) = src.snapshot_tree(&vm).await else {
        return;
    };
    if tree.snapshots.is_empty() {
        return;
    }
    let names: Vec<String> = tree
        .snapshots
        .iter()
        .map(|s| format!("{:?}", s.name))
        .collect();
    diags.attr_warning(
        AttrPath::attr("endpoint"),
        "Snapshots stay behind",
        format!(
            "The VM has snapshots ({}). Moving it to another endpoint copies its disks as they are now, consolidated; the snapshots are not carried over and are deleted with the original. Remove or revert them first if you need them.",
            names.join(", ")
        ),
    );
}

/// Checks, at plan time, that the target host has every network the VM's adapters use.
pub fn check_networks(inv: &Inventory, config: &VmView, planned: &VmView, diags: &mut Diagnostics) {
    let Some(host) = planned.host.as_deref().and_then(|h| inv.host(h).ok()) else {
        return;
    };
    for (i, nic) in config.nics().iter().enumerate() {
        let Tri::Known(name) = &nic.network else {
            continue;
        };
        if let Ok(net) = inv.network(name) {
            if !host.networks.contains(net.obj()) {
                diags.attr_error(
                    AttrPath::attr("network_interface")
                        .join_index(i)
                        .join_attr("network"),
                    "Network missing on the target host",
                    format!(
                        "Host {} has no port group {name:?}; add it there first (e.g. ceso_vlan with that host).",
                        host.name
                    ),
                );
            }
        }
    }
}

/// Moves the VM to `host` (its root pool), with the disks to `datastore`
/// when given; live when the VM runs. A refused live move is retried cold with
/// `allow_power_cycle` (the caller powers the VM on again).
pub async fn relocate(
    client: &Arc<Client>,
    vm: &ManagedObjectReference,
    inv: &Inventory,
    plan: &VmModel,
    info: &VmInfo,
    limit: Duration,
    cancel: &CancellationToken,
) -> Result<bool, Diagnostics> {
    let name = plan.host.as_deref().unwrap_or_default();
    let host = inv.host(name).map_err(|e| {
        Diagnostics::from_attr_error(AttrPath::attr("host"), "Unknown host", e.message)
    })?;
    let pool = inv.pool_of(host).cloned();
    // Storage moves with the VM only when the target does not see where it is.
    let sees_current = info.datastores.iter().all(|d| host.datastores.contains(d));
    let datastore = match plan.datastore.as_deref() {
        Some(n) => inv.datastore(n).ok().map(|d| d.obj.clone()),
        None if sees_current => None,
        None => inv.roomiest_datastore(host).map(|d| d.obj.clone()),
    };
    let to = Relocation {
        datastore,
        pool,
        host: Some(host.obj.clone()),
    };
    let fail = |e: &Error| error_diagnostics(&format!("move VM {:?} to host {name}", plan.name), e);
    let what = format!("moving VM {:?} to host {name}", plan.name);
    match client
        .relocate_vm(vm, &to, &what, Some(limit), cancel)
        .await
    {
        Ok(_) => Ok(false),
        Err(e)
            if info.power_state == "poweredOn"
                && plan.allow_power_cycle.unwrap_or(false)
                && matches!(e.kind, ErrorKind::Task | ErrorKind::Fault) =>
        {
            tracing::info!(vm = %plan.name, error = %e, "live move refused; moving the VM powered off");
            client
                .power_vm(vm, PowerOp::Off, Some(limit), cancel)
                .await
                .map_err(|e| fail(&e))?;
            client
                .relocate_vm(vm, &to, &what, Some(limit), cancel)
                .await
                .map_err(|e| fail(&e))?;
            Ok(true)
        }
        Err(e) => Err(fail(&e)),
    }
}

/// The flat extent of a disk descriptor path: `dir/name.vmdk` -> `dir/name-flat.vmdk`.
fn flat_of(path: &str) -> String {
    match path.strip_suffix(".vmdk") {
        Some(stem) => format!("{stem}-flat.vmdk"),
        None => format!("{path}-flat"),
    }
}

/// A descriptor with its extent line pointing at `new_flat` (the file name only), or the
/// descriptor unchanged when it names no extent.
fn retarget_descriptor(text: &str, old_flat: &str, new_flat: &str) -> String {
    let old = old_flat.rsplit('/').next().unwrap_or(old_flat);
    let new = new_flat.rsplit('/').next().unwrap_or(new_flat);
    text.replace(&format!("\"{old}\""), &format!("\"{new}\""))
}

/// Bytes per ranged read of a disk being moved, and how many are read at once: memory stays
/// at most their product whatever the disk's size.
const MOVE_WINDOW: u64 = 4 << 20;
const MOVE_DEPTH: usize = 4;
/// How often a disk move logs its progress (at INFO, which `TF_LOG=INFO` shows).
const MOVE_PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Streams one file from `src` to `dst`; `len` bytes (the size the destination is told). The
/// source is read as several ranged GETs at once; progress is logged at INFO.
async fn copy_file(
    src: &Arc<Client>,
    from: &DatastoreFile,
    dst: &Client,
    to: &DatastoreFile,
    len: u64,
) -> Result<(), Error> {
    let stream = src
        .download_parallel(from, len, MOVE_WINDOW, MOVE_DEPTH)
        .map_err(|e| std::io::Error::other(e.message));
    let moved = Arc::new(Moved::default());
    let started = std::time::Instant::now();
    let report = {
        let (moved, what) = (moved.clone(), from.display_path());
        async move {
            let mut tick = tokio::time::interval(MOVE_PROGRESS_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let (done, percent, rate) = moved.progress(len);
                tracing::info!(
                    "moving disk {what}: {done} of {len} bytes ({percent}%), {rate:.0} MB/s"
                );
            }
        }
    };
    tokio::select! {
        copied = dst.upload_counted(to, stream, len, moved.clone()) => {
            if copied.is_ok() {
                tracing::info!("moved disk {}: {len} bytes in {:.1} s", from.display_path(), started.elapsed().as_secs_f64());
            }
            copied
        }
        () = report => unreachable!("the progress report never ends"),
    }
}

/// Copies a VM's disks (descriptor and flat extent) from `src` into `[datastore] dir/` on
/// `dst`; returns the copies as disk devices to attach, and every file written (for cleanup).
pub async fn copy_disks(
    src: &Arc<Client>,
    src_dc: &str,
    info: &VmInfo,
    dst: &Client,
    dst_dc: &str,
    datastore: &str,
    dir: &str,
) -> (Result<Vec<Disk>, Error>, Vec<String>) {
    let mut written = Vec::new();
    let mut disks = Vec::new();
    for (i, d) in info.disks().enumerate() {
        // A VM with snapshots runs on delta disks, which have no flat extent to stream: copy
        // each disk consolidated on the source first (CopyVirtualDisk_Task of the current
        // disk copies its whole chain into one), stream the copy, then remove it.
        let consolidated = if info.has_snapshots {
            match consolidate(src, src_dc, &d.file_name, dir, i).await {
                Ok(path) => Some(path),
                Err(e) => return (Err(e), written),
            }
        } else {
            None
        };
        let source = consolidated.as_deref().unwrap_or(&d.file_name);
        let from = match DatastoreFile::parse(src_dc, source) {
            Ok(f) => f,
            Err(e) => return (Err(e), written),
        };
        let to = DatastoreFile {
            datacenter: dst_dc.to_string(),
            datastore: datastore.to_string(),
            path: format!("{dir}/{dir}_{i}.vmdk"),
        };
        let from_flat = DatastoreFile {
            path: flat_of(&from.path),
            ..from.clone()
        };
        let to_flat = DatastoreFile {
            path: flat_of(&to.path),
            ..to.clone()
        };
        let len = (d.capacity_kb.max(0) as u64) * 1024;
        // Listed before it is written: a copy that fails half-way is removed too.
        written.push(to_flat.display_path());
        let copied = copy_file(src, &from_flat, dst, &to_flat, len).await;
        if let Some(temp) = &consolidated {
            remove_temporary(src, src_dc, temp).await;
        }
        if let Err(e) = copied {
            return (Err(e), written);
        }
        // The descriptor is small: read it whole and point its extent at the new file.
        let descriptor = match src.download(&from, None).await {
            Ok(s) => {
                s.try_fold(Vec::new(), |mut acc, chunk| async move {
                    acc.extend_from_slice(&chunk);
                    Ok(acc)
                })
                .await
            }
            Err(e) => Err(e),
        };
        let text = match descriptor {
            Ok(b) => {
                retarget_descriptor(&String::from_utf8_lossy(&b), &from_flat.path, &to_flat.path)
            }
            Err(e) => return (Err(e), written),
        };
        let body = bytes::Bytes::from(text.into_bytes());
        let len = body.len() as u64;
        let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
        written.push(to.display_path());
        if let Err(e) = dst.upload(&to, stream, len).await {
            return (Err(e), written);
        }
        disks.push(Disk {
            file_name: to.display_path(),
            ..d.clone()
        });
    }
    (Ok(disks), written)
}

/// Copies the disk `file` (a snapshot's delta or a base disk) consolidated into a temporary
/// disk beside it; returns the copy's path.
async fn consolidate(
    src: &Arc<Client>,
    dc: &str,
    file: &str,
    vm_dir: &str,
    index: usize,
) -> Result<String, Error> {
    let f = DatastoreFile::parse(dc, file)?;
    let dir = f.path.rsplit_once('/').map_or("", |(d, _)| d);
    let temp = format!("[{}] {dir}/ceso-move-{vm_dir}-{index}.vmdk", f.datastore);
    let datacenter = src.find_by_path(dc).await.ok();
    tracing::info!("copying disk {file} consolidated to {temp} before the move");
    src.copy_virtual_disk(
        file,
        &temp,
        datacenter.as_ref(),
        None,
        &CancellationToken::new(),
    )
    .await?;
    Ok(temp)
}

/// Removes a temporary disk copy (descriptor and extent); failures are logged.
async fn remove_temporary(src: &Arc<Client>, dc: &str, path: &str) {
    for file in [path.to_string(), path.replace(".vmdk", "-flat.vmdk")] {
        if let Ok(f) = DatastoreFile::parse(dc, &file) {
            if let Err(e) = src.delete_file(&f).await {
                if !e.is_not_found() {
                    tracing::warn!(file = %file, error = %e, "could not remove a temporary disk copy");
                }
            }
        }
    }
}

/// Device changes that attach copied disks to a new VM on a new controller.
pub fn attach(disks: &[Disk], controller: i32, reserved_unit: i64) -> Vec<DeviceChange> {
    disks
        .iter()
        .enumerate()
        .map(|(i, d)| DeviceChange::Disk {
            op: Operation::Add,
            disk: Disk {
                key: -101 - i as i32,
                controller_key: controller,
                unit_number: if i as i64 >= reserved_unit {
                    i as i32 + 1
                } else {
                    i as i32
                },
                ..d.clone()
            },
            file_op: false,
        })
        .collect()
}

impl super::Vm {
    /// Moves the VM to the plan's endpoint (a cold migration between standalone hosts): power
    /// off, stream the disks between the datastores, create the VM around the copies, destroy
    /// the original, then converge the copy. Until the copy exists, a failure leaves the
    /// original as it was (powered on again) and removes what was copied.
    pub(super) async fn move_to_endpoint(
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
        let (copied, mut written) = copy_disks(
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
        changes.extend(attach(&copied, CONTROLLER_KEY, SCSI_RESERVED_UNIT));
        // Adapters as planned (disks are the copies, not new ones).
        let adapters_only = VmModel {
            disk: None,
            ..plan.clone()
        };
        match disk_and_nic_changes(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_extent_and_descriptor_names() {
        assert_eq!(flat_of("web/web.vmdk"), "web/web-flat.vmdk");
        let d = "RW 41943040 VMFS \"web-flat.vmdk\"\n";
        assert_eq!(
            retarget_descriptor(d, "web/web-flat.vmdk", "web2/web2_0-flat.vmdk"),
            "RW 41943040 VMFS \"web2_0-flat.vmdk\"\n"
        );
        assert_eq!(retarget_descriptor("", "a-flat.vmdk", "b-flat.vmdk"), "");
    }

    #[test]
    fn detects_moves() {
        let at = |endpoint: Option<&'static str>, host: &'static str| Whereabouts {
            endpoint,
            host: Some(host),
        };
        let detect = |a, b| detect_move(Some(a), b);
        assert_eq!(detect(at(Some("a"), "h1"), at(Some("a"), "h2")), Move::Host);
        assert_eq!(
            detect(at(Some("a"), "h1"), at(Some("b"), "h1")),
            Move::Endpoint
        );
        assert_eq!(detect(at(None, "h1"), at(Some("b"), "h1")), Move::None);
        assert_eq!(detect_move(None, at(Some("b"), "h1")), Move::None);
    }
}
