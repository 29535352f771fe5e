//! Restores: a backup to a new VM (created from the saved [`VmSpec`], then each disk's content
//! uploaded to its flat extent through the datastore interface), or one disk to a local raw file
//! (sparse: zero chunks become holes).
//!
//! A restore over an existing VM ([`RestoreOptions::replace`]; the VM must be powered off)
//! never risks the original: the backup is restored first as a new VM under a temporary name
//! (`NAME.ceso-restore-XXXXXX`, in the original's folder, on its host and resource pool by
//! default); only once that VM is complete is the original destroyed and the new one renamed
//! (`Rename_Task`) to NAME. A failure before the destroy leaves the original as it was; one
//! after it names the restored VM to rename by hand.
//!
//! Disks are put back on SCSI controllers with their original bus and unit numbers; a disk that
//! was on another kind of controller (IDE, SATA, NVMe) goes to the first free unit of a SCSI
//! controller, and the report says so. Network adapters are reconnected to their networks by
//! name (distributed port groups by key); an adapter whose network is gone is left out, with a
//! note. The datastore interface has no partial writes, so each disk is uploaded whole; its zero
//! chunks are produced locally, never fetched from the repository.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::error::{HotError, HotResult};
use super::progress::{Progress, ProgressSink};
use super::sparse::SparseFile;
use super::spec::{DiskSpec, VmSpec};
use crate::engine::backup::manifest::{BackupId, DiskManifest, Manifest};
use crate::engine::backup::repository::Repository;
use crate::vsphere::cbt::flat_extent_of;
use crate::vsphere::device::{Device, DeviceChange, Disk, Nic, NicBacking, Operation};
use crate::vsphere::inventory::NetworkRef;
use crate::vsphere::types::ManagedObjectReference;
use crate::vsphere::vm::{ConfigSpec, PowerOp};
use crate::vsphere::{Client, ErrorKind};

/// Where and how to restore a backup as a new VM.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// The new VM's name (must not exist unless `replace`).
    pub name: String,
    /// Replace a VM of that name, which must be powered off (see the module doc).
    pub replace: bool,
    /// Datastore (default: the first disk's datastore at backup time).
    pub datastore: Option<String>,
    /// Host (default: the first host, by name, that sees the datastore).
    pub host: Option<String>,
    /// Power the VM on afterwards.
    pub power_on: bool,
    /// Time limit of each vSphere task (default 30 min).
    pub timeout: Duration,
}

impl RestoreOptions {
    /// Defaults for a VM named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            replace: false,
            datastore: None,
            host: None,
            power_on: false,
            timeout: Duration::from_secs(1800),
        }
    }
}

/// One restored disk.
#[derive(Clone, Debug, Serialize)]
pub struct RestoredDisk {
    /// Its label in the backup.
    pub label: String,
    /// The new disk's descriptor, `[ds] dir/name.vmdk`.
    pub file: String,
    /// Bytes uploaded.
    pub bytes: u64,
    /// Zero bytes produced locally.
    pub bytes_zero: u64,
}

/// The outcome of a restore to a new VM.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreReport {
    /// The backup.
    pub backup: BackupId,
    /// The new VM's moid.
    pub vm: String,
    /// Its name.
    pub name: String,
    /// The moid of the VM it replaced (destroyed), if any.
    pub replaced: Option<String>,
    /// Its disks.
    pub disks: Vec<RestoredDisk>,
    /// Adjustments made (adapters left out, disks moved to another controller).
    pub notes: Vec<String>,
}

/// Where a disk goes on the new VM.
struct Slot {
    bus: i32,
    unit: i32,
}

fn is_scsi(kind: &str) -> bool {
    kind.contains("SCSI") || kind.contains("LsiLogic") || kind.contains("BusLogic")
}

/// Controllers and disk slots for the new VM: each SCSI controller keeps its bus, each disk its
/// unit; the rest go to free units (7 is the controller's own).
fn layout(spec: &VmSpec, notes: &mut Vec<String>) -> (Vec<(i32, String)>, Vec<Slot>) {
    let mut controllers: Vec<(i32, String)> = spec
        .controllers
        .iter()
        .filter(|c| is_scsi(&c.kind) && (0..4).contains(&c.bus))
        .map(|c| (c.bus, c.kind.clone()))
        .collect();
    controllers.sort();
    controllers.dedup_by_key(|c| c.0);
    let mut used: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    let mut slots: Vec<Option<Slot>> = Vec::new();
    for d in &spec.disks {
        let on_scsi = spec
            .controllers
            .iter()
            .find(|c| c.key == d.controller_key)
            .filter(|c| is_scsi(&c.kind))
            .map(|c| c.bus);
        match on_scsi {
            Some(bus)
                if !used.entry(bus).or_default().contains(&d.unit_number)
                    && (0..16).contains(&d.unit_number)
                    && d.unit_number != 7 =>
            {
                used.entry(bus).or_default().push(d.unit_number);
                slots.push(Some(Slot {
                    bus,
                    unit: d.unit_number,
                }));
            }
            _ => slots.push(None),
        }
    }
    let mut out = Vec::with_capacity(slots.len());
    for (slot, d) in slots.into_iter().zip(&spec.disks) {
        let slot = slot.unwrap_or_else(|| {
            if controllers.is_empty() {
                controllers.push((0, "ParaVirtualSCSIController".into()));
            }
            let (bus, unit) = controllers
                .iter()
                .find_map(|(bus, _)| {
                    let taken = used.entry(*bus).or_default();
                    let unit = (0..16).find(|u| *u != 7 && !taken.contains(u))?;
                    taken.push(unit);
                    Some((*bus, unit))
                })
                .unwrap_or((0, 0));
            notes.push(format!(
                "disk {:?} was on another kind of controller; restored as SCSI {bus}:{unit}",
                d.label
            ));
            Slot { bus, unit }
        });
        out.push(slot);
    }
    (controllers, out)
}

/// Restores backup `id` as a new VM, or over the powered-off VM of that name with
/// `options.replace`; see the module doc. A VM left half-restored by a failure is destroyed.
pub async fn restore_vm(
    client: &Arc<Client>,
    repo: &Repository,
    id: &BackupId,
    options: &RestoreOptions,
    progress: &ProgressSink,
    cancel: &CancellationToken,
) -> HotResult<RestoreReport> {
    let existing = match client.find_by_name("VirtualMachine", &options.name).await {
        Ok(vm) => Some(vm),
        Err(e) if e.kind == ErrorKind::NotFound => None,
        Err(e) => return Err(HotError::vsphere("look for VMs of that name", e)),
    };
    match existing {
        None => {
            let target = Target {
                name: &options.name,
                home: None,
            };
            restore_new(client, repo, id, options, &target, progress, cancel).await
        }
        Some(_) if !options.replace => Err(HotError::VmExists {
            name: options.name.clone(),
        }),
        Some(original) => replace(client, repo, id, options, &original, progress, cancel).await,
    }
}

/// Where a replacement goes unless told otherwise: the original's folder, host and pool.
struct Home {
    folder: Option<ManagedObjectReference>,
    host: Option<ManagedObjectReference>,
    pool: Option<ManagedObjectReference>,
}

/// The VM a restore creates.
struct Target<'a> {
    name: &'a str,
    home: Option<Home>,
}

/// The temporary name of a replacement: unique, so neither a leftover of an interrupted
/// restore nor the directory of an earlier replacement (which keeps the name it was created
/// under) is ever in the way.
fn temporary_name(name: &str) -> String {
    format!("{name}.ceso-restore-{:06x}", rand::random::<u32>() >> 8)
}

/// Restores over `original` (named `options.name`): new VM, destroy, rename, then power on.
async fn replace(
    client: &Arc<Client>,
    repo: &Repository,
    id: &BackupId,
    options: &RestoreOptions,
    original: &ManagedObjectReference,
    progress: &ProgressSink,
    cancel: &CancellationToken,
) -> HotResult<RestoreReport> {
    let name = &options.name;
    let info = client
        .vm_info(original)
        .await
        .map_err(|e| HotError::vsphere(format!("read VM {name:?}"), e))?;
    if info.template {
        return Err(HotError::Invalid(format!(
            "{name:?} is a template; a restore replaces only VMs"
        )));
    }
    if info.power_state != "poweredOff" {
        return Err(HotError::NotPoweredOff {
            name: name.clone(),
            state: info.power_state,
        });
    }
    let temporary = temporary_name(name);
    let target = Target {
        name: &temporary,
        home: Some(Home {
            folder: info.folder,
            host: info.host,
            pool: info.resource_pool,
        }),
    };
    let staged = RestoreOptions {
        power_on: false,
        ..options.clone()
    };
    let mut report = restore_new(client, repo, id, &staged, &target, progress, cancel).await?;
    let restored = ManagedObjectReference::new("VirtualMachine", &report.vm);

    // The last moment to back out without touching the original: stop if asked to, or if
    // someone powered the original on while its replacement was being restored.
    let abandon = if cancel.is_cancelled() {
        Some(HotError::Cancelled)
    } else {
        match client.vm_info(original).await {
            Ok(now) if now.power_state != "poweredOff" => Some(HotError::NotPoweredOff {
                name: name.clone(),
                state: now.power_state,
            }),
            Ok(_) => None,
            Err(e) if e.is_not_found() => None,
            Err(e) => Some(HotError::vsphere(format!("read VM {name:?} again"), e)),
        }
    };
    if let Some(e) = abandon {
        if let Err(cleanup) = client.destroy(&restored).await {
            tracing::warn!(vm = %restored, error = %cleanup, "could not destroy the restored VM");
        }
        return Err(e);
    }

    // From here on nothing is cancelled half-way: the original goes, the copy takes its name.
    client.destroy(original).await.map_err(|e| {
        HotError::vsphere(
            format!(
                "destroy VM {name:?} ({original}) to replace it (the restored VM is kept as \
                 {temporary:?}, {restored})",
                original = original.value,
                restored = restored.value
            ),
            e,
        )
    })?;
    client
        .rename(
            &restored,
            name,
            Some(options.timeout),
            &CancellationToken::new(),
        )
        .await
        .map_err(|e| {
            HotError::vsphere(
                format!(
                    "rename the restored VM {temporary:?} ({}) to {name:?} after VM {name:?} \
                     was destroyed; rename it by hand",
                    restored.value
                ),
                e,
            )
        })?;
    report.name = name.clone();
    report.replaced = Some(original.value.clone());
    report.notes.push(format!(
        "replaced VM {name:?} ({}); the new VM's files are under its temporary name {temporary:?}",
        original.value
    ));
    if options.power_on {
        client
            .power_vm(&restored, PowerOp::On, Some(options.timeout), cancel)
            .await
            .map_err(|e| HotError::vsphere(format!("power on {name:?}"), e))?;
    }
    Ok(report)
}

/// Restores backup `id` as the new VM `target.name`.
async fn restore_new(
    client: &Arc<Client>,
    repo: &Repository,
    id: &BackupId,
    options: &RestoreOptions,
    target: &Target<'_>,
    progress: &ProgressSink,
    cancel: &CancellationToken,
) -> HotResult<RestoreReport> {
    let manifest = repo.show(id).await?;
    let spec = VmSpec::from_json(&manifest.vm_config).map_err(HotError::Invalid)?;
    let inv = client
        .inventory()
        .await
        .map_err(|e| HotError::vsphere("read the inventory", e))?;
    let ds_name = options
        .datastore
        .clone()
        .or_else(|| spec.datastore().map(str::to_string))
        .ok_or_else(|| HotError::Invalid("the backup names no datastore; give one".into()))?;
    let ds = inv
        .datastore(&ds_name)
        .map_err(|e| HotError::vsphere("choose the datastore", e))?
        .obj
        .clone();
    let (dc, dc_name) = client
        .datacenter_of(&ds)
        .await
        .map_err(|e| HotError::vsphere(format!("find the datacenter of {ds_name}"), e))?;
    let root_folder = inv
        .datacenters
        .iter()
        .find(|d| d.0 == dc)
        .and_then(|d| d.2.clone())
        .ok_or_else(|| HotError::Invalid(format!("datacenter {dc_name} has no VM folder")))?;
    let home = target.home.as_ref();
    // A replacement goes to the original's folder when that is in the datastore's datacenter.
    let folder = match home.and_then(|h| h.folder.as_ref()) {
        Some(f) if f != &root_folder => match client.datacenter_of(f).await {
            Ok((f_dc, _)) if f_dc == dc => f.clone(),
            _ => root_folder,
        },
        _ => root_folder,
    };
    // ... and to the original's host and resource pool when that host sees the datastore.
    let home_host = home
        .and_then(|h| h.host.as_ref())
        .and_then(|obj| inv.hosts.iter().find(|h| &h.obj == obj))
        .filter(|h| h.datastores.contains(&ds));
    let host = match (&options.host, home_host) {
        (Some(h), _) => inv
            .host(h)
            .map_err(|e| HotError::vsphere("choose the host", e))?,
        (None, Some(h)) => h,
        (None, None) => inv
            .hosts
            .iter()
            .find(|h| h.datastores.contains(&ds))
            .ok_or_else(|| HotError::Invalid(format!("no host sees datastore {ds_name}")))?,
    };
    let home_pool = home
        .and_then(|h| h.pool.clone())
        .filter(|_| options.host.is_none() && home_host.is_some());
    let pool = match home_pool {
        Some(p) => p,
        None => inv
            .pool_of(host)
            .ok_or_else(|| HotError::Invalid(format!("host {} has no resource pool", host.name)))?
            .clone(),
    };

    let mut notes = Vec::new();
    let (controllers, slots) = layout(&spec, &mut notes);
    let mut changes: Vec<DeviceChange> = controllers
        .iter()
        .enumerate()
        .map(|(i, (bus, kind))| DeviceChange::ScsiController {
            key: -1000 - i as i32,
            bus: *bus,
            kind: kind.clone(),
        })
        .collect();
    let controller_key = |bus: i32| {
        controllers
            .iter()
            .position(|(b, _)| *b == bus)
            .map_or(-1000, |i| -1000 - i as i32)
    };
    for (i, (d, slot)) in spec.disks.iter().zip(&slots).enumerate() {
        changes.push(DeviceChange::Disk {
            op: Operation::Add,
            disk: Disk {
                key: -2000 - i as i32,
                controller_key: controller_key(slot.bus),
                unit_number: slot.unit,
                capacity_kb: d.capacity.div_ceil(1024) as i64,
                file_name: format!("[{ds_name}]"),
                thin: true,
            },
            file_op: true,
        });
    }
    for (i, n) in spec.nics.iter().enumerate() {
        let backing = match &n.switch_uuid {
            Some(switch_uuid) => inv
                .networks
                .iter()
                .find(|net| matches!(net, NetworkRef::Distributed { key, .. } if *key == n.network))
                .map(|_| {
                    (
                        NicBacking::Distributed {
                            switch_uuid: switch_uuid.clone(),
                            portgroup_key: n.network.clone(),
                        },
                        None,
                    )
                }),
            None => inv.network(&n.network).ok().map(|net| {
                (
                    NicBacking::Network {
                        name: net.name().to_string(),
                    },
                    Some(net.obj().clone()),
                )
            }),
        };
        match backing {
            Some((backing, network)) => changes.push(DeviceChange::Nic {
                op: Operation::Add,
                nic: Nic {
                    key: -4000 - i as i32,
                    adapter_type: n.adapter_type.clone(),
                    mac_address: None,
                    address_type: "generated".into(),
                    backing,
                    network,
                },
            }),
            None => notes.push(format!(
                "network adapter {} left out: network {:?} does not exist here",
                i + 1,
                n.network
            )),
        }
    }
    let config = ConfigSpec {
        name: Some(target.name.to_string()),
        guest_id: Some(spec.guest_id.clone()).filter(|g| !g.is_empty()),
        vm_path: Some(format!("[{ds_name}]")),
        num_cpus: Some(spec.num_cpus.max(1)),
        cores_per_socket: Some(spec.cores_per_socket.max(1)),
        memory_mb: Some(spec.memory_mb.max(4)),
        firmware: Some(spec.firmware.clone()).filter(|f| !f.is_empty()),
        device_changes: changes,
        ..ConfigSpec::default()
    };
    let vm = client
        .create_vm(
            &folder,
            &pool,
            Some(&host.obj),
            &config,
            Some(options.timeout),
            cancel,
        )
        .await
        .map_err(|e| HotError::vsphere(format!("create VM {:?}", target.name), e))?;

    let filled = fill_disks(
        client, repo, &manifest, &spec, &slots, &vm, &dc_name, progress, cancel,
    )
    .await;
    let disks = match filled {
        Ok(d) => d,
        Err(e) => {
            if let Err(cleanup) = client.destroy(&vm).await {
                tracing::warn!(vm = %vm, error = %cleanup, "could not destroy the half-restored VM");
            }
            return Err(e);
        }
    };
    if options.power_on {
        client
            .power_vm(&vm, PowerOp::On, Some(options.timeout), cancel)
            .await
            .map_err(|e| HotError::vsphere(format!("power on {:?}", target.name), e))?;
    }
    Ok(RestoreReport {
        backup: id.clone(),
        vm: vm.value,
        name: target.name.to_string(),
        replaced: None,
        disks,
        notes,
    })
}

#[allow(clippy::too_many_arguments)]
async fn fill_disks(
    client: &Arc<Client>,
    repo: &Repository,
    manifest: &Manifest,
    spec: &VmSpec,
    slots: &[Slot],
    vm: &crate::vsphere::types::ManagedObjectReference,
    datacenter: &str,
    progress: &ProgressSink,
    cancel: &CancellationToken,
) -> HotResult<Vec<RestoredDisk>> {
    let info = client
        .vm_info(vm)
        .await
        .map_err(|e| HotError::vsphere("read the restored VM", e))?;
    let bus_of: BTreeMap<i32, i32> = info
        .devices
        .iter()
        .filter_map(|d| match d {
            Device::Controller { key, bus, kind } if is_scsi(kind) => Some((*key, *bus)),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for (d, slot) in spec.disks.iter().zip(slots) {
        let target = info
            .disks()
            .find(|n| {
                bus_of.get(&n.controller_key) == Some(&slot.bus) && n.unit_number == slot.unit
            })
            .ok_or_else(|| {
                HotError::Invalid(format!(
                    "the restored VM has no disk at SCSI {}:{} for {:?}",
                    slot.bus, slot.unit, d.label
                ))
            })?;
        let disk = manifest.disk(&d.label).ok_or_else(|| {
            HotError::Invalid(format!("the backup has no data for disk {:?}", d.label))
        })?;
        let flat = flat_extent_of(datacenter, &target.file_name)
            .map_err(|e| HotError::vsphere("locate the restored disk", e))?;
        let restored = tokio::select! {
            r = upload_disk(client, repo, disk, d, &flat, progress) => r?,
            () = cancel.cancelled() => return Err(HotError::Cancelled),
        };
        out.push(RestoredDisk {
            label: d.label.clone(),
            file: target.file_name.clone(),
            bytes: restored.0,
            bytes_zero: restored.1,
        });
    }
    Ok(out)
}

/// Streams one disk from the repository into a datastore file; returns (bytes, zero bytes).
async fn upload_disk(
    client: &Arc<Client>,
    repo: &Repository,
    disk: &DiskManifest,
    spec: &DiskSpec,
    flat: &crate::vsphere::datastore_file::DatastoreFile,
    progress: &ProgressSink,
) -> HotResult<(u64, u64)> {
    progress(Progress::DiskStarted {
        disk: spec.label.clone(),
        capacity: disk.capacity,
        to_transfer: disk.capacity,
    });
    let (writer, reader) = tokio::io::duplex(1 << 20);
    let sink = progress.clone();
    let label = spec.label.clone();
    let body =
        tokio_util::io::ReaderStream::with_capacity(reader, 256 << 10).inspect_ok(move |b| {
            sink(Progress::Bytes {
                disk: label.clone(),
                bytes: b.len() as u64,
            })
        });
    let upload = client.upload(flat, body, disk.capacity);
    let produce = async move { repo.read_disk(disk, writer).await };
    tokio::pin!(upload, produce);
    let upload_failed = |e| {
        HotError::vsphere(
            format!("upload disk {:?} to {}", spec.label, flat.display_path()),
            e,
        )
    };
    // A failed upload ends the restore at once (the repository's side is dropped with it);
    // a repository side that fails because the upload broke its pipe reports the upload's
    // error, the cause.
    let stats = tokio::select! {
        uploaded = &mut upload => {
            uploaded.map_err(upload_failed)?;
            produce.await?
        }
        produced = &mut produce => match produced {
            Ok(stats) => {
                upload.await.map_err(upload_failed)?;
                stats
            }
            // Only a broken pipe is the upload's doing: any other repository error (a corrupt
            // chunk, an S3 failure) is the cause, and the upload's "body ended early" its echo.
            Err(e) if is_broken_pipe(&e) => {
                if let Ok(Err(up)) = tokio::time::timeout(Duration::from_secs(1), &mut upload).await {
                    return Err(upload_failed(up));
                }
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        },
    };
    progress(Progress::DiskFinished {
        disk: spec.label.clone(),
    });
    Ok((stats.bytes_written, stats.bytes_zero))
}

/// Whether the repository side of an upload failed only because the upload dropped its pipe.
fn is_broken_pipe(e: &crate::engine::backup::Error) -> bool {
    matches!(e, crate::engine::backup::Error::Io { source, .. }
        if source.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Restores one disk of a backup to a local raw image at `path` (created; must not exist);
/// returns the bytes restored.
pub async fn restore_disk_to_file(
    repo: &Repository,
    disk: &DiskManifest,
    path: &Path,
) -> HotResult<u64> {
    let io_err = |context: String| move |source| HotError::Io { context, source };
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600) // a disk image: its owner's only
        .open(path)
        .await
        .map_err(io_err(format!("create {}", path.display())))?;
    let mut sparse = SparseFile::new(file);
    repo.read_disk(disk, &mut sparse).await?;
    sparse
        .finish()
        .await
        .map_err(io_err(format!("finish {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::super::spec::ControllerSpec;
    use super::*;

    fn disk(label: &str, controller_key: i32, unit: i32) -> DiskSpec {
        DiskSpec {
            label: label.into(),
            key: 2000,
            controller_key,
            unit_number: unit,
            capacity: 1 << 20,
            thin: true,
            file: "[ds] a/a.vmdk".into(),
        }
    }

    #[test]
    fn temporary_names_are_unique_and_say_what_they_are() {
        let a = temporary_name("web-1");
        let b = temporary_name("web-1");
        assert!(a.starts_with("web-1.ceso-restore-"), "{a}");
        assert_eq!(a.len(), "web-1.ceso-restore-".len() + 6, "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn keeps_scsi_slots_and_moves_other_disks() {
        let spec = VmSpec {
            name: "a".into(),
            guest_id: String::new(),
            num_cpus: 1,
            cores_per_socket: 1,
            memory_mb: 32,
            firmware: "bios".into(),
            hardware_version: String::new(),
            cbt: false,
            power_state: String::new(),
            controllers: vec![
                ControllerSpec {
                    key: 200,
                    bus: 0,
                    kind: "VirtualIDEController".into(),
                },
                ControllerSpec {
                    key: 1000,
                    bus: 1,
                    kind: "ParaVirtualSCSIController".into(),
                },
            ],
            disks: vec![disk("a", 1000, 0), disk("b", 200, 0), disk("c", 1000, 3)],
            nics: vec![],
        };
        let mut notes = Vec::new();
        let (controllers, slots) = layout(&spec, &mut notes);
        assert_eq!(
            controllers,
            vec![(1, "ParaVirtualSCSIController".to_string())]
        );
        let got: Vec<(i32, i32)> = slots.iter().map(|s| (s.bus, s.unit)).collect();
        assert_eq!(got, vec![(1, 0), (1, 1), (1, 3)]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("\"b\""), "{notes:?}");
    }
}
