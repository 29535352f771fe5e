//! A backup in progress: holds the shared lease, writes disks, and commits the manifest.
//!
//! `begin_backup` takes a shared lease (so prune and gc, which need the exclusive one, cannot
//! run meanwhile) and keeps it renewed. `commit` renews it once more, failing with
//! [`Error::LeaseLost`] if it lapsed (a gc may then have run and deleted chunks this backup
//! reuses), and only then writes the manifest: a backup is in the repository exactly when its
//! manifest is, and chunks written by an abandoned backup are garbage for the next gc.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SubsecRound, Utc};

use super::chunk::ChunkId;
use super::error::{Error, Result};
use super::lock::{KeepAlive, Lease, LeaseKind, REPOSITORY_LOCK};
use super::manifest::{BackupId, Consistency, DiskManifest, Manifest, VmRef, MANIFEST_FORMAT};
use super::repository::Repository;
use super::write::{write_disk, DiskInfo, DiskSource};

/// What a new backup is of.
#[derive(Clone, Debug)]
pub struct BackupRequest {
    /// The VM.
    pub vm: VmRef,
    /// Crash-consistent or quiesced.
    pub consistency: Consistency,
    /// The VM specification a restore needs.
    pub vm_config: serde_json::Value,
    /// The backup whose disks are passed as `previous` to [`BackupSession::write_disk`];
    /// checked to still exist once the lease is held (or chosen under it with
    /// [`BackupSession::set_parent`]).
    pub parent: Option<BackupId>,
    /// Why the snapshot is less consistent than asked, if it is.
    pub consistency_note: Option<String>,
    /// The scheduled job making it, if any (its retention prunes only its own backups).
    pub job: Option<String>,
    /// The vSphere endpoint the VM is read from.
    pub endpoint: Option<String>,
}

/// A backup being written. Commit it with [`BackupSession::commit`]; [`BackupSession::abort`]
/// or dropping it leaves no backup behind (a dropped session releases its lease from a
/// spawned task).
#[derive(Debug)]
pub struct BackupSession {
    repo: Repository,
    lease: Arc<Lease>,
    keep_alive: Option<KeepAlive>,
    id: BackupId,
    created: DateTime<Utc>,
    request: BackupRequest,
    disks: Vec<DiskManifest>,
    known: Arc<Mutex<HashSet<ChunkId>>>,
}

impl Drop for BackupSession {
    fn drop(&mut self) {
        let Some(keep_alive) = self.keep_alive.take() else {
            return; // committed or aborted
        };
        let lease = self.lease.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                keep_alive.stop().await;
                let _ = lease.release().await;
            });
        }
    }
}

impl Repository {
    /// Starts a backup: takes a shared lease and checks that the parent (if any) still exists.
    pub async fn begin_backup(&self, request: BackupRequest) -> Result<BackupSession> {
        let lease = Lease::acquire(
            self.backend.clone(),
            REPOSITORY_LOCK,
            LeaseKind::Shared,
            &format!("backup of {}", request.vm.name),
            self.lock_options,
        )
        .await?;
        if let Some(parent) = &request.parent {
            // Under the lease no prune or gc can run, so a parent that exists now keeps its
            // chunks until commit.
            if !self.backend.exists(&parent.object_key()).await? {
                let _ = lease.release().await;
                return Err(Error::NotFound {
                    what: format!("parent backup {parent}"),
                });
            }
        }
        let lease = Arc::new(lease);
        let keep_alive = lease.keep_alive();
        let created = Utc::now().trunc_subsecs(3);
        Ok(BackupSession {
            repo: self.clone(),
            lease,
            keep_alive: Some(keep_alive),
            id: BackupId::new(created),
            created,
            request,
            disks: Vec::new(),
            known: Arc::default(),
        })
    }
}

impl BackupSession {
    /// The id the backup will have.
    pub fn id(&self) -> &BackupId {
        &self.id
    }

    /// Sets the backup this one is incremental to, checking that it exists. Chosen under the
    /// session's lease, a parent cannot be pruned before the commit.
    pub async fn set_parent(&mut self, parent: Option<BackupId>) -> Result<()> {
        if let Some(p) = &parent {
            if !self.repo.backend.exists(&p.object_key()).await? {
                return Err(Error::NotFound {
                    what: format!("parent backup {p}"),
                });
            }
        }
        self.request.parent = parent;
        Ok(())
    }

    /// The disks written so far.
    pub fn disks(&self) -> &[DiskManifest] {
        &self.disks
    }

    /// Streams one disk into the repository and returns its manifest entry.
    ///
    /// `reader` yields the disk's bytes from offset 0; it is read chunk by chunk, seeking over
    /// chunks reused from `previous` (wrap a stream that cannot seek in
    /// [`ForwardOnly`](super::write::ForwardOnly)). With `previous` (this disk in the parent
    /// backup) and `changed_areas` (CBT's `(offset, length)` list since the parent's change
    /// id), chunks no area touches are taken from `previous` without reading. Without
    /// `changed_areas` every chunk is read, and chunks already in the repository are not
    /// uploaded again.
    pub async fn write_disk<R>(
        &mut self,
        disk: DiskInfo,
        reader: R,
        previous: Option<&DiskManifest>,
        changed_areas: Option<Vec<(u64, u64)>>,
    ) -> Result<DiskManifest>
    where
        R: DiskSource,
    {
        if self.disks.iter().any(|d| d.label == disk.label) {
            return Err(Error::InvalidArgument(format!(
                "disk {:?} was already written in this backup",
                disk.label
            )));
        }
        let manifest = write_disk(
            &self.repo,
            &self.known,
            disk,
            reader,
            previous,
            changed_areas,
        )
        .await?;
        self.disks.push(manifest.clone());
        Ok(manifest)
    }

    /// Writes the manifest, making the backup part of the repository, and releases the lease.
    pub async fn commit(self) -> Result<Manifest> {
        self.lease.renew().await?;
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            id: self.id.clone(),
            vm: self.request.vm.clone(),
            created: self.created,
            finished: Utc::now().trunc_subsecs(3),
            consistency: self.request.consistency,
            vm_config: self.request.vm_config.clone(),
            parent: self.request.parent.clone(),
            consistency_note: self.request.consistency_note.clone(),
            job: self.request.job.clone(),
            endpoint: self.request.endpoint.clone(),
            disks: self.disks.clone(),
        };
        self.repo.store_manifest(&manifest).await?;
        self.release().await?;
        Ok(manifest)
    }

    /// Abandons the backup (its new chunks are left for gc) and releases the lease.
    pub async fn abort(self) -> Result<()> {
        self.release().await
    }

    async fn release(mut self) -> Result<()> {
        if let Some(keep_alive) = self.keep_alive.take() {
            keep_alive.stop().await;
        }
        self.lease.release().await
    }
}
