//! One hot backup of one VM: snapshot, read each disk's base through the datastore interface
//! (only CBT's changed areas when the previous backup allows it), commit the manifest with the
//! VM's configuration, and remove the snapshot, also on failure and cancellation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::error::{HotError, HotResult};
use super::plan::{incremental_base, DiskMode, FullReason};
use super::progress::{Progress, ProgressSink};
use super::snapshot::{self, Quiesce};
use super::source::{windows_touched, DatastoreSource, FetchOptions};
use super::spec::VmSpec;
use super::throttle::RateLimiter;
use crate::engine::backup::chunk::chunk_count;
use crate::engine::backup::error::{Error as RepoError, Holders};
use crate::engine::backup::manifest::{BackupId, Consistency, DiskManifest, Manifest, VmRef};
use crate::engine::backup::repository::Repository;
use crate::engine::backup::session::{BackupRequest, BackupSession};
use crate::engine::backup::vm_lease::VmLease;
use crate::engine::backup::write::DiskInfo;
use crate::vsphere::cbt::FrozenDisk;
use crate::vsphere::types::ManagedObjectReference;
use crate::vsphere::Client;

/// What to back up and how.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// The VM: name, inventory path, moid or instance UUID.
    pub vm: String,
    /// Read every disk in full even when an incremental is possible.
    pub full: bool,
    /// Read at most this many bytes per second from the datastore.
    pub max_rate: Option<u64>,
    /// Chunks fetched ahead per disk (default 2).
    pub read_ahead: usize,
    /// Time limit of each snapshot task (default 30 min).
    pub snapshot_timeout: Duration,
    /// How consistent the snapshot must be (default: quiesced when VMware Tools run).
    pub quiesce: Quiesce,
    /// How long to wait for another backup of the VM to give its lease back (default 0).
    pub lease_wait: Duration,
    /// The scheduled job making the backup, recorded in its manifest.
    pub job: Option<String>,
    /// The vSphere endpoint, recorded in the manifest (a daemon's endpoint name, else the
    /// server's host name).
    pub endpoint: Option<String>,
}

impl BackupOptions {
    /// Defaults for VM `vm`.
    pub fn new(vm: impl Into<String>) -> Self {
        Self {
            vm: vm.into(),
            full: false,
            max_rate: None,
            read_ahead: 2,
            snapshot_timeout: Duration::from_secs(1800),
            quiesce: Quiesce::IfToolsRun,
            lease_wait: Duration::ZERO,
            job: None,
            endpoint: None,
        }
    }
}

/// What happened to one disk.
#[derive(Clone, Debug, Serialize)]
pub struct DiskReport {
    /// Label (its name in the manifest).
    pub label: String,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Full or incremental, and why.
    #[serde(flatten)]
    pub mode: DiskMode,
    /// Bytes read from the datastore.
    pub bytes_read: u64,
    /// Bytes referenced from the previous backup (or known unallocated) without reading.
    pub bytes_reused: u64,
    /// Bytes read that were new to the repository.
    pub bytes_new: u64,
    /// Bytes uploaded to the repository (compressed, encrypted).
    pub bytes_stored: u64,
    /// The change id the disk was read at.
    pub change_id: Option<String>,
}

/// The outcome of a backup.
#[derive(Clone, Debug, Serialize)]
pub struct BackupReport {
    /// The committed backup.
    pub backup: BackupId,
    /// The VM.
    pub vm: VmRef,
    /// Quiesced or crash-consistent.
    pub consistency: Consistency,
    /// Why it is less consistent than asked (quiescing fell back), if it is.
    pub consistency_note: Option<String>,
    /// The backup it is incremental to (information only: every backup is a full).
    pub parent: Option<BackupId>,
    /// The snapshot the disks were read from.
    pub snapshot: String,
    /// Leftover backup snapshots of crashed runs that were removed first.
    pub leftovers_removed: Vec<String>,
    /// The disks.
    pub disks: Vec<DiskReport>,
    /// Bytes read from the datastore, all disks.
    pub bytes_read: u64,
    /// Bytes uploaded to the repository.
    pub bytes_written: u64,
    /// Bytes referenced without reading.
    pub bytes_reused: u64,
    /// Seconds from start to end.
    pub seconds: f64,
    /// Seconds the snapshot existed (what the VM paid for the backup).
    pub snapshot_seconds: f64,
    /// Things the user should know (quiescing fell back, the snapshot could not be removed).
    pub warnings: Vec<String>,
    /// Set when the snapshot could not be removed (the backup itself is committed).
    pub snapshot_left: Option<String>,
}

/// How a disk is read: its mode, the disk entry unchanged chunks come from, and the areas to
/// read (`None`: everything).
type ReadPlan<'a> = (DiskMode, Option<&'a DiskManifest>, Option<Vec<(u64, u64)>>);

/// What the work inside the snapshot produced.
struct Committed {
    manifest: Manifest,
    disks: Vec<DiskReport>,
}

/// Backs up a running VM into `repo`; see the module doc. Cancelling `cancel` stops the
/// transfer, removes the snapshot and commits nothing; so does losing the VM's lease.
pub async fn backup_vm(
    client: &Arc<Client>,
    repo: &Repository,
    options: &BackupOptions,
    progress: &ProgressSink,
    cancel: &CancellationToken,
) -> HotResult<BackupReport> {
    let started = Instant::now();
    let vm = snapshot::find_vm(client, &options.vm).await?;
    let info = client
        .vm_info(&vm)
        .await
        .map_err(|e| HotError::vsphere(format!("read VM {:?}", options.vm), e))?;
    let lease = match repo
        .lease_vm(&info.instance_uuid, &info.name, options.lease_wait, cancel)
        .await
    {
        Ok(lease) => lease,
        Err(RepoError::Locked { holders }) => {
            return Err(HotError::Busy {
                vm: info.name.clone(),
                holder: Holders(&holders).to_string(),
            })
        }
        Err(RepoError::Interrupted) => return Err(HotError::Cancelled),
        Err(e) => return Err(e.into()),
    };
    // The work stops when the caller cancels or the VM's lease is lost.
    let work = cancel.child_token();
    let watch = {
        let (lost, work) = (lease.lost(), work.clone());
        tokio::spawn(async move {
            lost.cancelled().await;
            work.cancel();
        })
    };
    let result = backup_leased(
        client, repo, options, progress, &work, &vm, &info, &lease, started,
    )
    .await;
    watch.abort();
    let lost = lease.lost().is_cancelled() && !cancel.is_cancelled();
    let lease_key = lease.info().holder;
    lease.release().await;
    match result {
        Err(HotError::Cancelled) if lost => Err(HotError::Repository(RepoError::LeaseLost {
            key: format!("VM lease {lease_key}"),
            reason: "it lapsed while the repository could not be reached".into(),
        })),
        other => other,
    }
}

/// The backup under the VM's lease: leftovers, snapshot, disks, commit, snapshot removal.
#[allow(clippy::too_many_arguments)]
async fn backup_leased(
    client: &Arc<Client>,
    repo: &Repository,
    options: &BackupOptions,
    progress: &ProgressSink,
    cancel: &CancellationToken,
    vm: &ManagedObjectReference,
    info: &crate::vsphere::vm::VmInfo,
    lease: &VmLease,
    started: Instant,
) -> HotResult<BackupReport> {
    let name = info.name.clone();
    let holder = lease.holder();
    let leftovers_removed = snapshot::remove_leftovers(
        client,
        vm,
        &name,
        options.snapshot_timeout,
        std::slice::from_ref(&holder),
    )
    .await?;
    for s in &leftovers_removed {
        progress(Progress::Note {
            message: format!("removed the leftover backup snapshot {s:?} of an interrupted run"),
        });
    }
    if cancel.is_cancelled() {
        return Err(HotError::Cancelled);
    }
    let powered_on = info.power_state == "poweredOn";
    let tools = powered_on && client.tools_running(vm).await;
    let quiesce = snapshot::plan_quiesce(options.quiesce, powered_on, tools).map_err(|reason| {
        HotError::NotQuiesced {
            vm: name.clone(),
            reason,
        }
    })?;
    let created = snapshot::create(
        client,
        vm,
        &name,
        quiesce,
        options.quiesce,
        &holder,
        options.snapshot_timeout,
        cancel,
    )
    .await?;
    let snap = created.snapshot.clone();
    let snap_name = created.name.clone();
    let consistency = created.consistency;
    let snap_taken = Instant::now();
    let mut warnings: Vec<String> = created.note.iter().cloned().collect();
    for w in &warnings {
        progress(Progress::Note { message: w.clone() });
    }

    let work = read_under_snapshot(client, repo, options, progress, vm, info, &created);
    let outcome = tokio::select! {
        r = work => r,
        () = cancel.cancelled() => Err(HotError::Cancelled),
    };
    let removal = snapshot::remove(client, &snap, options.snapshot_timeout).await;
    let snapshot_seconds = snap_taken.elapsed().as_secs_f64();
    let committed = match (outcome, removal) {
        (Ok(c), Ok(())) => (c, None),
        (Ok(c), Err(e)) => {
            let msg = format!(
                "the backup is committed, but its snapshot {snap_name:?} could not be removed ({e}); the next backup removes it"
            );
            warnings.push(msg.clone());
            (c, Some(snap_name.clone()))
        }
        (Err(e), Ok(())) => return Err(e),
        (Err(e), Err(removal)) => {
            tracing::warn!(error = %removal, snapshot = %snap_name, "the backup snapshot could not be removed; the next backup removes it");
            return Err(e);
        }
    };
    let (Committed { manifest, disks }, snapshot_left) = committed;
    Ok(BackupReport {
        backup: manifest.id.clone(),
        vm: manifest.vm.clone(),
        consistency,
        consistency_note: created.note.clone(),
        parent: manifest.parent.clone(),
        snapshot: snap_name,
        leftovers_removed,
        bytes_read: disks.iter().map(|d| d.bytes_read).sum(),
        bytes_written: disks.iter().map(|d| d.bytes_stored).sum(),
        bytes_reused: disks.iter().map(|d| d.bytes_reused).sum(),
        disks,
        seconds: started.elapsed().as_secs_f64(),
        snapshot_seconds,
        warnings,
        snapshot_left,
    })
}

/// Labels that are unique within the backup (a disk without a label is `disk-<key>`).
fn disk_labels(disks: &[FrozenDisk]) -> Vec<String> {
    let mut labels: Vec<String> = Vec::with_capacity(disks.len());
    for d in disks {
        let mut label = if d.label.is_empty() {
            format!("disk-{}", d.key)
        } else {
            d.label.clone()
        };
        if labels.contains(&label) {
            label = format!("{label} (key {})", d.key);
        }
        labels.push(label);
    }
    labels
}

async fn read_under_snapshot(
    client: &Arc<Client>,
    repo: &Repository,
    options: &BackupOptions,
    progress: &ProgressSink,
    vm: &ManagedObjectReference,
    info: &crate::vsphere::vm::VmInfo,
    created: &snapshot::Created,
) -> HotResult<Committed> {
    let snap = &created.snapshot;
    let frozen = client.snapshot_disks(snap).await.map_err(|e| {
        HotError::vsphere(
            format!("read the disks of the snapshot of {}", info.name),
            e,
        )
    })?;
    let (_, datacenter) = client
        .datacenter_of(vm)
        .await
        .map_err(|e| HotError::vsphere(format!("find the datacenter of {}", info.name), e))?;
    let mut spec = VmSpec::from_vm(info, &frozen);
    let labels = disk_labels(&frozen);
    for (d, label) in spec.disks.iter_mut().zip(&labels) {
        d.label = label.clone();
    }
    let request = BackupRequest {
        vm: VmRef {
            name: info.name.clone(),
            uuid: info.instance_uuid.clone(),
        },
        consistency: created.consistency,
        vm_config: spec.to_json(),
        parent: None,
        consistency_note: created.note.clone(),
        job: options.job.clone(),
        endpoint: options.endpoint.clone(),
    };
    let mut session = repo.begin_backup(request).await?;
    // Chosen under the session's lease: no prune can remove the parent before the commit.
    let previous = if options.full {
        None
    } else {
        match repo.latest(&info.instance_uuid).await {
            Ok(p) => p,
            Err(e) => {
                let _ = session.abort().await;
                return Err(e.into());
            }
        }
    };
    if let Err(e) = session
        .set_parent(previous.as_ref().map(|m| m.id.clone()))
        .await
    {
        let _ = session.abort().await;
        return Err(e.into());
    }
    let limiter = options.max_rate.map(|r| Arc::new(RateLimiter::new(r)));
    let mut reports = Vec::with_capacity(frozen.len());
    for (disk, label) in frozen.iter().zip(&labels) {
        let report = match back_up_disk(
            client,
            repo,
            &mut session,
            options,
            progress,
            vm,
            snap,
            &datacenter,
            disk,
            label,
            previous.as_ref(),
            limiter.clone(),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                let _ = session.abort().await;
                return Err(e);
            }
        };
        reports.push(report);
    }
    let manifest = session.commit().await?;
    Ok(Committed {
        manifest,
        disks: reports,
    })
}

#[allow(clippy::too_many_arguments)]
async fn back_up_disk(
    client: &Arc<Client>,
    repo: &Repository,
    session: &mut BackupSession,
    options: &BackupOptions,
    progress: &ProgressSink,
    vm: &ManagedObjectReference,
    snap: &ManagedObjectReference,
    datacenter: &str,
    disk: &FrozenDisk,
    label: &str,
    previous: Option<&Manifest>,
    limiter: Option<Arc<RateLimiter>>,
) -> HotResult<DiskReport> {
    let chunk_size = repo.config().chunk_size;
    let cs = u64::from(chunk_size);
    let capacity = disk.capacity;
    let count = chunk_count(capacity, chunk_size);
    let flat = disk
        .flat_extent(datacenter)
        .map_err(|e| HotError::vsphere(format!("locate the data of disk {label:?}"), e))?;

    // Incremental when the previous backup allows it and CBT answers; else a full read, of
    // the allocated areas only when CBT can say which they are.
    let mut synthetic: Option<DiskManifest> = None;
    let (mode, base, changed): ReadPlan<'_> =
        match incremental_base(disk, label, previous, options.full, chunk_size) {
            Ok(base) => match client
                .changed_disk_areas(vm, Some(snap), disk.key, capacity, base.change_id)
                .await
            {
                Ok(areas) => {
                    let areas: Vec<(u64, u64)> =
                        areas.iter().map(|a| (a.start, a.length)).collect();
                    let mode = DiskMode::Incremental {
                        since: base.change_id.to_string(),
                        changed_bytes: areas.iter().map(|a| a.1).sum(),
                    };
                    (mode, Some(base.previous), Some(areas))
                }
                Err(e) => {
                    let reason = FullReason::QueryFailed {
                        message: e.to_string(),
                    };
                    progress(Progress::Note {
                        message: format!("disk {label:?}: reading it in full: {reason}"),
                    });
                    let (mode, areas) = full_read(
                        client,
                        vm,
                        snap,
                        disk,
                        reason,
                        count,
                        chunk_size,
                        label,
                        &mut synthetic,
                    )
                    .await;
                    (mode, None, areas)
                }
            },
            Err(reason) => {
                if !matches!(reason, FullReason::Requested | FullReason::NoPreviousBackup) {
                    progress(Progress::Note {
                        message: format!("disk {label:?}: reading it in full: {reason}"),
                    });
                }
                let (mode, areas) = full_read(
                    client,
                    vm,
                    snap,
                    disk,
                    reason,
                    count,
                    chunk_size,
                    label,
                    &mut synthetic,
                )
                .await;
                (mode, None, areas)
            }
        };
    // With a list of areas (changed since the previous backup, or in use for a full read)
    // only their grains are read: a chunk they cover in part is patched over the previous one
    // (zeros for a full read). Without one, whole chunks.
    let window = if changed.is_some() {
        repo.patch_grain().min(cs)
    } else {
        cs
    };
    let base = base.or(synthetic.as_ref());
    let plan = match &changed {
        Some(areas) => windows_touched(areas, window),
        None => std::iter::once(0..capacity.div_ceil(window)).collect(), // every chunk
    };
    let to_transfer: u64 = plan
        .iter()
        .map(|r| (r.end * window).min(capacity) - r.start * window)
        .sum();
    progress(Progress::DiskStarted {
        disk: label.to_string(),
        capacity,
        to_transfer,
    });
    let fetched = Arc::new(AtomicU64::new(0));
    let sink = progress.clone();
    let disk_label = label.to_string();
    let source = DatastoreSource::new(
        client.clone(),
        flat,
        capacity,
        plan,
        FetchOptions {
            window,
            span: cs,
            ahead: options.read_ahead as u64 * cs,
            buffers: repo.buffers.clone(),
            limiter,
            fetched: fetched.clone(),
            on_fetched: Some(Arc::new(move |n| {
                sink(Progress::Bytes {
                    disk: disk_label.clone(),
                    bytes: n,
                })
            })),
        },
    );
    let written = session
        .write_disk(
            DiskInfo {
                label: label.to_string(),
                capacity,
                change_id: disk.change_id.clone(),
            },
            source,
            base,
            changed,
        )
        .await?;
    progress(Progress::DiskFinished {
        disk: label.to_string(),
    });
    Ok(DiskReport {
        label: label.to_string(),
        capacity,
        mode,
        bytes_read: fetched.load(Ordering::Relaxed),
        bytes_reused: written.bytes_reused,
        bytes_new: written.bytes_new,
        bytes_stored: written.bytes_stored,
        change_id: written.change_id,
    })
}

/// A full read. With CBT on, `QueryChangedDiskAreas("*")` says which areas are in use; the
/// others are known zero and enter the manifest as zero markers without being read (through a
/// synthetic all-zero "previous" disk). Without CBT, or if the query fails, every chunk is read.
#[allow(clippy::too_many_arguments)]
async fn full_read(
    client: &Arc<Client>,
    vm: &ManagedObjectReference,
    snap: &ManagedObjectReference,
    disk: &FrozenDisk,
    reason: FullReason,
    count: u64,
    chunk_size: u32,
    label: &str,
    synthetic: &mut Option<DiskManifest>,
) -> (DiskMode, Option<Vec<(u64, u64)>>) {
    let everything = |reason| {
        (
            DiskMode::Full {
                reason,
                allocated_only: false,
            },
            None,
        )
    };
    if disk.change_id.is_none() {
        return everything(reason);
    }
    let Ok(count) = usize::try_from(count) else {
        return everything(reason);
    };
    match client
        .changed_disk_areas(vm, Some(snap), disk.key, disk.capacity, "*")
        .await
    {
        Ok(areas) => {
            *synthetic = Some(DiskManifest {
                label: label.to_string(),
                capacity: disk.capacity,
                chunk_size,
                chunks: vec![None; count],
                bytes_read: 0,
                bytes_reused: 0,
                bytes_zero: 0,
                bytes_new: 0,
                bytes_stored: 0,
                change_id: None,
            });
            (
                DiskMode::Full {
                    reason,
                    allocated_only: true,
                },
                Some(areas.iter().map(|a| (a.start, a.length)).collect()),
            )
        }
        Err(e) => {
            tracing::info!(disk = label, error = %e, "CBT cannot list the areas in use; reading the whole disk");
            everything(reason)
        }
    }
}
