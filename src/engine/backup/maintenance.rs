//! The two operations that delete: prune (manifests, by retention policy) and gc (chunks no
//! manifest references). Both hold the exclusive lease, so no backup runs meanwhile, and stop
//! cleanly (lease given back) when the repository handle's cancellation fires.
//!
//! A prune can be limited to the backups of one VM, one job and one vSphere endpoint (as each
//! manifest records them): a job's retention never touches another job's backups, nor backups
//! of a same-named VM of another endpoint.
//!
//! gc deletes an unreferenced chunk only if it was last modified before the cutoff
//! `min(gc start, start of the oldest backup lease seen in locks/) - grace`. Leases exclude
//! backups from gc already; the cutoff is the second line for a backup whose lease lapsed
//! without its process noticing yet (it will fail at commit, see `session`): chunks it has
//! uploaded since it started are newer than the cutoff and stay.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::{stream, StreamExt, TryStreamExt};
use serde::Serialize;

use super::backend::ObjectMeta;
use super::chunk::{ChunkId, CHUNK_PREFIX};
use super::error::Result;
use super::lock::{list_leases, Lease, LeaseKind, REPOSITORY_LOCK};
use super::manifest::{rfc3339, BackupId, VmRef};
use super::prune::{plan, KeepPolicy, PruneMark};
use super::repository::Repository;

/// How to prune.
#[derive(Clone, Debug, Default)]
pub struct PruneOptions {
    /// What to keep, per VM.
    pub policy: KeepPolicy,
    /// Only this VM (by UUID); all VMs when `None`.
    pub vm_uuid: Option<String>,
    /// Only the backups this job made (a job's retention); any backup when `None`.
    pub job: Option<String>,
    /// Only the backups read from this vSphere endpoint; any when `None`.
    pub endpoint: Option<String>,
    /// Decide, but delete nothing.
    pub dry_run: bool,
}

impl PruneOptions {
    /// Whether a backup is among those this prune considers.
    fn selects(&self, m: &super::manifest::Manifest) -> bool {
        let matches = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        self.vm_uuid.as_ref().is_none_or(|u| *u == m.vm.uuid)
            && matches(&self.job, &m.job)
            && matches(&self.endpoint, &m.endpoint)
    }
}

/// One backup's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PruneEntry {
    /// The backup.
    pub id: BackupId,
    /// Its VM.
    pub vm: VmRef,
    /// When it started (what the policy looks at).
    #[serde(with = "rfc3339")]
    pub created: DateTime<Utc>,
    /// Keep (and why) or remove.
    pub mark: PruneMark,
}

/// The outcome of [`Repository::prune`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Every backup considered, grouped by VM, newest first within a VM.
    pub entries: Vec<PruneEntry>,
    /// Manifests deleted (0 in a dry run).
    pub removed: usize,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// How to collect garbage.
#[derive(Clone, Copy, Debug)]
pub struct GcOptions {
    /// Unreferenced chunks younger than this (before the cutoff) are kept (default 10 min,
    /// covering clock skew between the repository and the hosts writing to it).
    pub grace: Duration,
    /// Count, but delete nothing.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(600),
            dry_run: false,
        }
    }
}

/// The outcome of [`Repository::gc`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Chunk objects found.
    pub chunks_total: u64,
    /// Distinct chunks the manifests reference.
    pub chunks_referenced: u64,
    /// Referenced chunks that are missing (run verify).
    pub chunks_missing: u64,
    /// Unreferenced chunks deleted (or that would be, in a dry run).
    pub chunks_deleted: u64,
    /// Their total stored size in bytes.
    pub bytes_deleted: u64,
    /// Unreferenced chunks kept because they are newer than the cutoff.
    pub chunks_kept_recent: u64,
    /// Their total stored size.
    pub bytes_kept_recent: u64,
    /// Leftover temp files of interrupted writes removed.
    pub incomplete_removed: u64,
    /// Only unreferenced chunks last modified before this were deleted.
    #[serde(with = "rfc3339")]
    pub cutoff: DateTime<Utc>,
}

impl Repository {
    /// Applies a retention policy to each VM's backups (those the options select) and deletes
    /// the manifests it does not keep. Chunks are freed by a later [`Repository::gc`].
    pub async fn prune(&self, options: PruneOptions) -> Result<PruneReport> {
        if options.dry_run {
            return self.prune_locked(&options).await;
        }
        self.under_lease(LeaseKind::Exclusive, "prune", |_| {
            self.prune_locked(&options)
        })
        .await
    }

    async fn prune_locked(&self, options: &PruneOptions) -> Result<PruneReport> {
        let mut groups: BTreeMap<String, Vec<(BackupId, VmRef, DateTime<Utc>)>> = BTreeMap::new();
        for manifest in self.all_manifests_strict().await? {
            if !options.selects(&manifest) {
                continue;
            }
            groups.entry(manifest.vm.uuid.clone()).or_default().push((
                manifest.id,
                manifest.vm,
                manifest.created,
            ));
        }
        let mut report = PruneReport {
            dry_run: options.dry_run,
            ..PruneReport::default()
        };
        for (_, mut backups) in groups {
            backups.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| b.0.cmp(&a.0)));
            let times: Vec<_> = backups.iter().map(|b| b.2).collect();
            let marks = plan(&times, &options.policy);
            for ((id, vm, created), mark) in backups.into_iter().zip(marks) {
                report.entries.push(PruneEntry {
                    id,
                    vm,
                    created,
                    mark,
                });
            }
        }
        if !options.dry_run {
            for entry in report
                .entries
                .iter()
                .filter(|e| e.mark == PruneMark::Remove)
            {
                self.backend.delete(&entry.id.object_key()).await?;
                report.removed += 1;
            }
        }
        Ok(report)
    }

    /// Deletes the chunks no manifest references (older than the cutoff, see the module doc)
    /// and leftovers of interrupted writes. Fails, deleting nothing, if any manifest cannot be
    /// read: what it references is unknown.
    pub async fn gc(&self, options: GcOptions) -> Result<GcReport> {
        // Leases seen before ours: their start times bound the cutoff, expired or not.
        let seen = list_leases(self.backend.as_ref(), REPOSITORY_LOCK).await?;
        let seen = &seen;
        self.under_lease(LeaseKind::Exclusive, "gc", |lease| async move {
            self.gc_locked(options, seen, &lease).await
        })
        .await
    }

    async fn gc_locked(
        &self,
        options: GcOptions,
        seen: &[super::lock::LeaseInfo],
        lease: &Lease,
    ) -> Result<GcReport> {
        let start = Utc::now();
        let oldest_backup = seen
            .iter()
            .filter(|l| l.kind == LeaseKind::Shared)
            .map(|l| l.started)
            .min();
        let grace = TimeDelta::from_std(options.grace).unwrap_or(TimeDelta::MAX);
        let cutoff = oldest_backup.map_or(start, |t| t.min(start)) - grace;

        let mut referenced: HashSet<ChunkId> = HashSet::new();
        for manifest in self.all_manifests_strict().await? {
            referenced.extend(manifest.chunk_ids());
        }
        let mut report = GcReport {
            chunks_referenced: referenced.len() as u64,
            cutoff,
            ..GcReport::default()
        };
        let mut present = 0u64;
        let mut doomed: Vec<ObjectMeta> = Vec::new();
        let mut chunks = self.backend.list(CHUNK_PREFIX);
        while let Some(meta) = chunks.try_next().await? {
            let Some(id) = ChunkId::from_object_key(&meta.key) else {
                continue; // not a chunk object; leave it alone
            };
            report.chunks_total += 1;
            if referenced.contains(&id) {
                present += 1;
            } else if meta.last_modified < cutoff {
                doomed.push(meta);
            } else {
                report.chunks_kept_recent += 1;
                report.bytes_kept_recent += meta.size;
            }
        }
        report.chunks_missing = report.chunks_referenced - present;

        // Make sure the lease is still ours before deleting anything.
        lease.renew().await?;
        if !options.dry_run {
            let backend = &self.backend;
            stream::iter(doomed.iter())
                .map(|meta| async move { backend.delete(&meta.key).await })
                .buffer_unordered(self.parallelism * 2)
                .try_collect::<()>()
                .await?;
            report.incomplete_removed = self.backend.clean_incomplete(cutoff).await?;
        }
        report.chunks_deleted = doomed.len() as u64;
        report.bytes_deleted = doomed.iter().map(|m| m.size).sum();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::super::lock::LockOptions;
    use super::super::manifest::Manifest;
    use super::super::prune::KeepReason;
    use super::super::test_support::{image, local_repo, request, write_image};
    use super::*;

    const CS: usize = 1 << 16;

    fn no_grace() -> GcOptions {
        GcOptions {
            grace: Duration::ZERO,
            dry_run: false,
        }
    }

    async fn chunk_sizes(repo: &Repository) -> BTreeMap<ChunkId, u64> {
        repo.backend
            .list(CHUNK_PREFIX)
            .map_ok(|m| (ChunkId::from_object_key(&m.key).unwrap(), m.size))
            .try_collect()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn gc_frees_exactly_the_unreferenced_chunks() {
        let (dir, repo) = local_repo(CS as u32).await;
        let base = image(6 * CS, 1, &[]);
        let mut changed = base.clone();
        changed[..2 * CS].copy_from_slice(&image(2 * CS, 2, &[]));
        let a = write_image(&repo, request("vm"), &base).await;
        let b = write_image(&repo, request("vm"), &changed).await;
        // Compressible data, so stored sizes differ from chunk sizes.
        let text = b"all work and no play ".repeat(CS * 3 / 21 + 1)[..3 * CS].to_vec();
        let c = write_image(&repo, request("other"), &text).await;
        let before = chunk_sizes(&repo).await;
        assert_eq!(before.len(), 6 + 2 + 3);

        // Nothing is unreferenced yet.
        let report = repo.gc(no_grace()).await.unwrap();
        assert_eq!((report.chunks_total, report.chunks_deleted), (11, 0));

        // Dropping backup a frees its two chunks that b does not share.
        repo.backend.delete(&a.id.object_key()).await.unwrap();
        let a_only: Vec<ChunkId> = a.disks[0].chunks[..2].iter().map(|c| c.unwrap()).collect();
        let expected_bytes: u64 = a_only.iter().map(|id| before[id]).sum();
        let dry = repo
            .gc(GcOptions {
                dry_run: true,
                ..no_grace()
            })
            .await
            .unwrap();
        assert_eq!(dry.chunks_deleted, 2);
        assert_eq!(
            chunk_sizes(&repo).await.len(),
            11,
            "a dry run deletes nothing"
        );

        // A leftover temp file from a crashed writer goes too.
        std::fs::write(dir.path().join("chunks/.deadbeef.tmp-00"), b"partial").unwrap();
        let report = repo.gc(no_grace()).await.unwrap();
        assert_eq!(report.chunks_total, 11);
        assert_eq!(report.chunks_referenced, 9);
        assert_eq!(report.chunks_missing, 0);
        assert_eq!(report.chunks_deleted, 2);
        assert_eq!(report.bytes_deleted, expected_bytes);
        assert_eq!(report.incomplete_removed, 1);
        let after = chunk_sizes(&repo).await;
        assert_eq!(after.len(), 9);
        assert!(a_only.iter().all(|id| !after.contains_key(id)));
        for m in [&b, &c] {
            assert!(m.chunk_ids().all(|id| after.contains_key(&id)));
            let mut out = Vec::new();
            repo.read_disk(&m.disks[0], &mut out).await.unwrap();
        }

        // With the default grace, fresh garbage is kept and counted.
        repo.backend.delete(&c.id.object_key()).await.unwrap();
        let report = repo.gc(GcOptions::default()).await.unwrap();
        assert_eq!(report.chunks_deleted, 0);
        assert_eq!(report.chunks_kept_recent, 3);
        assert_eq!(
            report.bytes_kept_recent,
            c.chunk_ids().map(|id| before[&id]).sum::<u64>()
        );
    }

    #[tokio::test]
    async fn gc_and_prune_wait_for_no_backup_and_spare_its_chunks() {
        let (_dir, repo) = local_repo(CS as u32).await;
        let mut session = repo.begin_backup(request("busy")).await.unwrap();
        let info = super::super::write::DiskInfo {
            label: "disk0".into(),
            capacity: 2 * CS as u64,
            change_id: None,
        };
        session
            .write_disk(
                info,
                std::io::Cursor::new(image(2 * CS, 5, &[])),
                None,
                None,
            )
            .await
            .unwrap();
        // The backup's chunks are not referenced by any manifest yet, but gc cannot run.
        let err = repo.gc(no_grace()).await.unwrap_err();
        assert!(
            err.to_string().contains("shared lease of backup of busy"),
            "{err}"
        );
        assert!(repo.prune(PruneOptions::default()).await.is_err());
        let manifest = session.commit().await.unwrap();
        let report = repo.gc(no_grace()).await.unwrap();
        assert_eq!(report.chunks_deleted, 0);
        let mut out = Vec::new();
        repo.read_disk(&manifest.disks[0], &mut out).await.unwrap();
    }

    #[tokio::test]
    async fn gc_keeps_chunks_newer_than_a_lapsed_backup_lease() {
        let (_dir, repo) = local_repo(CS as u32).await;
        let repo = repo.with_lock_options(LockOptions {
            clock_skew: Duration::ZERO,
            ..LockOptions::default()
        });
        // A backup whose process stopped: its lease is never renewed and lapses.
        let fast = LockOptions {
            ttl: Duration::from_millis(200),
            wait: Duration::ZERO,
            clock_skew: Duration::ZERO,
        };
        let stalled = Lease::acquire(
            repo.backend.clone(),
            REPOSITORY_LOCK,
            LeaseKind::Shared,
            "stalled",
            fast,
        )
        .await
        .unwrap();
        // Chunks uploaded after it started and not referenced by any manifest (what the
        // stalled backup would have uploaded).
        let orphan = write_image(&repo, request("orphan"), &image(2 * CS, 6, &[])).await;
        repo.backend.delete(&orphan.id.object_key()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;

        let report = repo.gc(no_grace()).await.unwrap();
        assert_eq!(report.chunks_total, 2);
        assert_eq!(
            report.chunks_deleted, 0,
            "newer than the lapsed backup's start"
        );
        assert_eq!(report.chunks_kept_recent, 2);
        assert!(report.cutoff <= stalled.info().started);
        // gc took the expired lease over; the stalled backup can no longer commit.
        assert!(matches!(
            stalled.renew().await,
            Err(super::super::error::Error::LeaseLost { .. })
        ));
        // The next gc no longer sees that lease and frees the chunks.
        let report = repo.gc(no_grace()).await.unwrap();
        assert_eq!(report.chunks_deleted, 2);
    }

    #[tokio::test]
    async fn prune_applies_the_policy_per_vm() {
        let (_dir, repo) = local_repo(CS as u32).await;
        // Backups with chosen start times, written as manifests directly.
        let template = write_image(&repo, request("x"), &image(CS, 1, &[])).await;
        repo.backend
            .delete(&template.id.object_key())
            .await
            .unwrap();
        let mut made = Vec::new();
        for (vm, day, hour) in [
            ("a", 1, 5),
            ("a", 1, 9),
            ("a", 2, 5),
            ("a", 3, 5),
            ("b", 1, 5),
        ] {
            let created = Utc.with_ymd_and_hms(2026, 3, day, hour, 0, 0).unwrap();
            let manifest = Manifest {
                id: BackupId::new(created),
                created,
                vm: request(vm).vm,
                ..template.clone()
            };
            repo.store_manifest(&manifest).await.unwrap();
            made.push(manifest);
        }
        let options = PruneOptions {
            policy: KeepPolicy {
                daily: 2,
                ..KeepPolicy::default()
            },
            vm_uuid: None,
            dry_run: true,
            ..PruneOptions::default()
        };
        let dry = repo.prune(options.clone()).await.unwrap();
        let marks: Vec<(&str, u32, PruneMark)> = dry
            .entries
            .iter()
            .map(|e| {
                (
                    e.vm.name.as_str(),
                    chrono::Datelike::day(&e.created),
                    e.mark,
                )
            })
            .collect();
        let keep = PruneMark::Keep(KeepReason::Daily);
        assert_eq!(
            marks,
            [
                ("a", 3, keep),
                ("a", 2, keep),
                ("a", 1, PruneMark::Remove),
                ("a", 1, PruneMark::Remove),
                ("b", 1, keep),
            ]
        );
        assert_eq!(dry.removed, 0);
        assert_eq!(repo.backup_ids().await.unwrap().len(), 5);

        let done = repo
            .prune(PruneOptions {
                dry_run: false,
                ..options
            })
            .await
            .unwrap();
        assert_eq!(done.removed, 2);
        let left = repo.backup_ids().await.unwrap();
        let mut expected = vec![made[2].id.clone(), made[3].id.clone(), made[4].id.clone()];
        expected.sort();
        assert_eq!(left, expected);
    }

    #[tokio::test]
    async fn a_jobs_retention_prunes_only_its_own_backups_from_its_endpoint() {
        let (_dir, repo) = local_repo(CS as u32).await;
        let template = write_image(&repo, request("x"), &image(CS, 1, &[])).await;
        repo.backend
            .delete(&template.id.object_key())
            .await
            .unwrap();
        // VM "web" backed up by jobs a and b from endpoint vc-1, a same-named VM by job a from
        // vc-2, and by hand: three of each.
        let mut ids = BTreeMap::new();
        for (job, endpoint, uuid) in [
            (Some("a"), "vc-1", "uuid-web"),
            (Some("b"), "vc-1", "uuid-web"),
            (Some("a"), "vc-2", "uuid-web-2"),
            (None, "vc-1", "uuid-web"),
        ] {
            for hour in 1..=3 {
                let created = Utc.with_ymd_and_hms(2026, 3, 1, hour, 0, 0).unwrap();
                let manifest = Manifest {
                    id: BackupId::new(created),
                    created,
                    vm: VmRef {
                        name: "web".into(),
                        uuid: uuid.into(),
                    },
                    job: job.map(str::to_string),
                    endpoint: Some(endpoint.into()),
                    ..template.clone()
                };
                repo.store_manifest(&manifest).await.unwrap();
                ids.entry((job, endpoint))
                    .or_insert_with(Vec::new)
                    .push(manifest.id);
            }
        }
        let report = repo
            .prune(PruneOptions {
                policy: KeepPolicy {
                    last: 1,
                    ..KeepPolicy::default()
                },
                job: Some("a".into()),
                endpoint: Some("vc-1".into()),
                ..PruneOptions::default()
            })
            .await
            .unwrap();
        assert_eq!(report.removed, 2);
        assert_eq!(
            report.entries.len(),
            3,
            "only job a's backups from vc-1 considered"
        );
        let left: HashSet<BackupId> = repo.backup_ids().await.unwrap().into_iter().collect();
        for ((job, endpoint), made) in &ids {
            let kept = made.iter().filter(|id| left.contains(id)).count();
            let want = if (*job, *endpoint) == (Some("a"), "vc-1") {
                1
            } else {
                3
            };
            assert_eq!(kept, want, "{job:?} from {endpoint}");
        }
        assert!(
            left.contains(ids[&(Some("a"), "vc-1")].last().unwrap()),
            "the newest kept"
        );
    }
}
