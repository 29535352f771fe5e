//! Verification: re-reads and re-hashes every referenced chunk (or a random sample) and says
//! which chunks are missing or corrupt and which backups they break.
//!
//! It holds a shared lease, so no prune or gc deletes anything while it reads, and stops
//! cleanly when the repository handle's cancellation fires.

use std::collections::{BTreeMap, HashSet};

use futures::{stream, StreamExt};
use serde::Serialize;

use super::chunk::ChunkId;
use super::error::{Error, Result};
use super::lock::LeaseKind;
use super::manifest::BackupId;
use super::repository::Repository;

/// What to verify.
#[derive(Clone, Copy, Debug, Default)]
pub struct VerifyOptions {
    /// Check each distinct referenced chunk with this probability (`None`: all of them).
    pub sample: Option<f64>,
}

/// A chunk that could not be read back intact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChunkProblem {
    /// The chunk.
    pub chunk: ChunkId,
    /// Whether it is missing (as opposed to present but corrupt).
    pub missing: bool,
    /// What is wrong, e.g. "its content does not hash to its name".
    pub problem: String,
    /// The backups that reference it, oldest first.
    pub backups: Vec<BackupId>,
}

/// The outcome of [`Repository::verify`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Backups whose manifests were read.
    pub backups: usize,
    /// Distinct chunks those backups reference.
    pub chunks_referenced: u64,
    /// Chunks read back and re-hashed.
    pub chunks_checked: u64,
    /// Bytes of chunk data re-hashed.
    pub bytes_checked: u64,
    /// Missing or corrupt chunks, by chunk id.
    pub problems: Vec<ChunkProblem>,
    /// Manifests that could not be read, with the reason.
    pub unreadable_backups: Vec<(BackupId, String)>,
}

impl VerifyReport {
    /// Whether everything checked was intact.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.unreadable_backups.is_empty()
    }

    /// Every backup affected by a problem chunk or an unreadable manifest, oldest first.
    pub fn affected_backups(&self) -> Vec<BackupId> {
        let mut all: Vec<BackupId> = self
            .problems
            .iter()
            .flat_map(|p| p.backups.iter().cloned())
            .chain(self.unreadable_backups.iter().map(|(id, _)| id.clone()))
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

impl Repository {
    /// Verifies the chunks referenced by every backup (or a sample of them).
    pub async fn verify(&self, options: VerifyOptions) -> Result<VerifyReport> {
        self.under_lease(LeaseKind::Shared, "verify", |_| self.verify_locked(options))
            .await
    }

    async fn verify_locked(&self, options: VerifyOptions) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let mut referenced = HashSet::new();
        let mut readable = Vec::new();
        for (id, manifest) in self.all_manifests().await? {
            match manifest {
                Ok(m) => {
                    referenced.extend(m.chunk_ids());
                    readable.push(id);
                }
                Err(e) => report.unreadable_backups.push((id, e.to_string())),
            }
        }
        report.backups = readable.len();
        report.chunks_referenced = referenced.len() as u64;
        let fraction = options.sample.map(|f| f.clamp(0.0, 1.0));
        let selected: Vec<ChunkId> = referenced
            .into_iter()
            .filter(|_| fraction.is_none_or(rand::random_bool))
            .collect();

        let mut checks = stream::iter(selected)
            .map(|id| async move { (id, self.fetch_chunk(id).await) })
            .buffer_unordered(self.parallelism);
        let mut bad: BTreeMap<ChunkId, (bool, String)> = BTreeMap::new();
        while let Some((id, result)) = checks.next().await {
            report.chunks_checked += 1;
            match result {
                Ok(data) => report.bytes_checked += data.len() as u64,
                Err(e @ Error::NotFound { .. }) => {
                    bad.insert(id, (true, e.to_string()));
                }
                Err(
                    e @ (Error::Corrupt { .. } | Error::Authentication { .. } | Error::KeyRequired),
                ) => {
                    bad.insert(id, (false, e.to_string()));
                }
                Err(e) => return Err(e), // the store itself failed: no verdict
            }
        }
        if bad.is_empty() {
            return Ok(report);
        }

        // Second pass, only when something is wrong: which backups reference the bad chunks.
        let mut affected: BTreeMap<ChunkId, Vec<BackupId>> = BTreeMap::new();
        let mut manifests = stream::iter(readable)
            .map(|id| async move { self.show(&id).await })
            .buffered(self.parallelism);
        while let Some(manifest) = manifests.next().await {
            let manifest = manifest?;
            let hits: HashSet<ChunkId> = manifest
                .chunk_ids()
                .filter(|id| bad.contains_key(id))
                .collect();
            for chunk in hits {
                affected.entry(chunk).or_default().push(manifest.id.clone());
            }
        }
        report.problems = bad
            .into_iter()
            .map(|(chunk, (missing, problem))| {
                let mut backups = affected.remove(&chunk).unwrap_or_default();
                backups.sort();
                ChunkProblem {
                    chunk,
                    missing,
                    problem,
                    backups,
                }
            })
            .collect();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{image, local_repo, request, write_image};
    use super::*;

    const CS: usize = 1 << 16;

    #[tokio::test]
    async fn a_corrupt_chunk_is_named_with_the_backups_it_breaks() {
        let (dir, repo) = local_repo(CS as u32).await;
        let shared = image(4 * CS, 1, &[]);
        let mut other = shared.clone();
        other[3 * CS..].copy_from_slice(&image(CS, 2, &[]));
        let a = write_image(&repo, request("a"), &shared).await;
        let b = write_image(&repo, request("b"), &other).await;
        let c = write_image(&repo, request("c"), &image(2 * CS, 3, &[])).await;
        let clean = repo.verify(VerifyOptions::default()).await.unwrap();
        assert!(clean.is_ok(), "{clean:?}");
        assert_eq!(clean.backups, 3);
        assert_eq!(clean.chunks_referenced, 4 + 1 + 2);
        assert_eq!(clean.chunks_checked, 7);
        assert_eq!(clean.bytes_checked, 7 * CS as u64);

        // Chunk 0 is shared by a and b; flip one byte of its stored object.
        let victim = a.disks[0].chunks[0].unwrap();
        let path = dir.path().join(victim.object_key());
        let mut stored = std::fs::read(&path).unwrap();
        let mid = stored.len() / 2;
        stored[mid] ^= 1;
        std::fs::write(&path, stored).unwrap();
        // And delete c's last chunk.
        let gone = c.disks[0].chunks[1].unwrap();
        std::fs::remove_file(dir.path().join(gone.object_key())).unwrap();

        let report = repo.verify(VerifyOptions::default()).await.unwrap();
        assert!(!report.is_ok());
        assert_eq!(report.problems.len(), 2);
        let corrupt = report.problems.iter().find(|p| p.chunk == victim).unwrap();
        assert!(!corrupt.missing);
        assert!(
            corrupt.problem.contains("does not hash to its name"),
            "{}",
            corrupt.problem
        );
        let mut ab = vec![a.id.clone(), b.id.clone()];
        ab.sort();
        assert_eq!(corrupt.backups, ab);
        let missing = report.problems.iter().find(|p| p.chunk == gone).unwrap();
        assert!(missing.missing);
        assert_eq!(missing.backups, vec![c.id.clone()]);
        let mut all = vec![a.id, b.id, c.id];
        all.sort();
        assert_eq!(report.affected_backups(), all);

        let none = repo
            .verify(VerifyOptions { sample: Some(0.0) })
            .await
            .unwrap();
        assert_eq!(none.chunks_checked, 0);
        assert!(none.is_ok());
    }

    #[tokio::test]
    async fn an_unreadable_manifest_is_reported() {
        let (dir, repo) = local_repo(CS as u32).await;
        let a = write_image(&repo, request("a"), &image(CS, 1, &[])).await;
        std::fs::write(dir.path().join(a.id.object_key()), b"\x01\x00{not json").unwrap();
        let report = repo.verify(VerifyOptions::default()).await.unwrap();
        assert_eq!(report.unreadable_backups.len(), 1);
        assert_eq!(report.unreadable_backups[0].0, a.id);
        assert!(
            repo.list().await.is_err(),
            "list refuses to hide a broken backup"
        );
    }
}
