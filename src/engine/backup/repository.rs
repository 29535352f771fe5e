//! The repository handle: init, open, and reading the backups it holds (list, show).
//!
//! Layout of a repository (any [`Backend`]):
//! ```text
//! config                          RepoConfig (JSON, never encrypted)
//! chunks/<2 hex>/<64 hex>         chunk objects (see `object_format`)
//! manifests/<backup id>           one per committed backup (see `manifest`)
//! locks/repository/<holder>       leases (see `lock`)
//! ```
//! Writing backups is in `session` and `write`, restoring in `restore`, checking in `verify`,
//! and the two deleting operations, prune and gc, in `maintenance`.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{SubsecRound, Utc};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::backend::{Backend, PutOutcome};
use super::buffers::BufferPool;
use super::chunk::{validate_chunk_size, ChunkHasher, DEFAULT_CHUNK_SIZE};
use super::config::{CompressionConfig, RepoConfig, CONFIG_KEY, REPOSITORY_FORMAT};
use super::crypto::{KdfParams, KeySource, Keys};
use super::error::{Error, Result};
use super::lock::{Lease, LeaseKind, LockOptions, REPOSITORY_LOCK};
use super::manifest::{BackupId, BackupSummary, Manifest, MANIFEST_PREFIX};
use super::object_format::{Codec, ObjectKind, ENCODE_OVERHEAD, ZSTD_LEVEL};

/// Manifests are never larger than this once decompressed (a 64 TiB disk in 4 MiB chunks
/// lists 16 M chunk ids, about 1.1 GB of JSON).
pub(crate) const MAX_MANIFEST_LEN: usize = 2 << 30;

/// How a repository is created.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Chunk size (default 4 MiB): a power of two from 64 KiB to 64 MiB, fixed for life.
    pub chunk_size: u32,
    /// Encrypt with a key from this passphrase or key file (default: no encryption).
    pub key: Option<KeySource>,
    /// Argon2id costs for a passphrase (default [`KdfParams::recommended`]).
    pub kdf: Option<KdfParams>,
    /// zstd level (default 3).
    pub compression_level: i32,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            key: None,
            kdf: None,
            compression_level: ZSTD_LEVEL,
        }
    }
}

/// An open repository. Cheap to clone; clones share the backend and keys.
#[derive(Clone, Debug)]
pub struct Repository {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) config: Arc<RepoConfig>,
    pub(crate) codec: Codec,
    pub(crate) hasher: ChunkHasher,
    pub(crate) parallelism: usize,
    /// Chunk-sized buffers (room for an encoded chunk) reused by reads and encodes.
    pub(crate) buffers: Arc<BufferPool>,
    /// One permit per core for CPU-bound chunk work (see [`Repository::on_cpu`]).
    cpu: Arc<Semaphore>,
    /// The unit an incremental reads a changed chunk in (see [`super::write`]).
    pub(crate) patch_grain: u64,
    pub(crate) lock_options: LockOptions,
    /// Stops leased operations (verify, prune, gc, lease waits) cleanly when cancelled.
    pub(crate) cancel: CancellationToken,
}

/// Chunk buffers kept for reuse at most (more are in use at once only with a parallelism
/// above 8).
const KEPT_BUFFERS: usize = 16;

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn default_parallelism() -> usize {
    (cores() + 1).clamp(2, 16)
}

impl Repository {
    /// Creates a repository in an empty location and opens it. Fails with
    /// [`Error::AlreadyExists`] if the location already has a `config`.
    pub async fn init(backend: Arc<dyn Backend>, options: InitOptions) -> Result<Repository> {
        validate_chunk_size(options.chunk_size)?;
        if !(1..=19).contains(&options.compression_level) {
            return Err(Error::InvalidArgument(format!(
                "zstd level {} is outside 1..=19",
                options.compression_level
            )));
        }
        let (keys, encryption) = match &options.key {
            Some(source) => {
                let (keys, config) = Keys::create(source, options.kdf.clone())?;
                (Some(Arc::new(keys)), Some(config))
            }
            None => (None, None),
        };
        let mut id = [0u8; 16];
        rand::fill(&mut id);
        let config = RepoConfig {
            format: REPOSITORY_FORMAT,
            repository_id: hex::encode(id),
            created: Utc::now().trunc_subsecs(3),
            chunk_size: options.chunk_size,
            compression: CompressionConfig {
                algorithm: "zstd".into(),
                level: options.compression_level,
            },
            encryption,
        };
        let outcome = backend
            .put_if_absent(CONFIG_KEY, Bytes::from(config.to_json()))
            .await?;
        if outcome == PutOutcome::AlreadyExists {
            return Err(Error::AlreadyExists {
                what: format!("a repository at {}", backend.location()),
            });
        }
        Ok(Self::assemble(backend, config, keys))
    }

    /// Opens an existing repository; `key` unlocks an encrypted one.
    pub async fn open(backend: Arc<dyn Backend>, key: Option<KeySource>) -> Result<Repository> {
        let bytes = match backend.get(CONFIG_KEY).await {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => {
                return Err(Error::NotARepository {
                    location: backend.location(),
                })
            }
            Err(e) => return Err(e),
        };
        let config = RepoConfig::from_json(&bytes)?;
        let keys = match (&config.encryption, key) {
            (Some(enc), Some(source)) => {
                // Argon2id is deliberately slow: keep it off the async threads.
                let enc = enc.clone();
                let keys = tokio::task::spawn_blocking(move || Keys::unlock(&source, &enc))
                    .await
                    .map_err(|e| Error::Kdf(e.to_string()))??;
                Some(Arc::new(keys))
            }
            (Some(_), None) => return Err(Error::KeyRequired),
            (None, Some(_)) => return Err(Error::KeyNotExpected),
            (None, None) => None,
        };
        Ok(Self::assemble(backend, config, keys))
    }

    fn assemble(backend: Arc<dyn Backend>, config: RepoConfig, keys: Option<Arc<Keys>>) -> Self {
        let hasher = match &keys {
            Some(keys) => ChunkHasher::Keyed(keys.chunk_id_key()),
            None => ChunkHasher::Plain,
        };
        let buffers = BufferPool::new(config.chunk_size as usize + ENCODE_OVERHEAD, KEPT_BUFFERS);
        Self {
            backend,
            buffers,
            cpu: Arc::new(Semaphore::new(cores())),
            codec: Codec::new(keys, config.compression.level),
            config: Arc::new(config),
            hasher,
            parallelism: default_parallelism(),
            patch_grain: super::write::PATCH_GRAIN,
            lock_options: LockOptions::default(),
            cancel: CancellationToken::new(),
        }
    }

    /// Sets how many chunks are processed at once (hashing, compression, transfers). A chunk
    /// in flight holds at most two chunk-sized buffers (its data and its encoded form) while
    /// it is compressed, which happens on one chunk per core at a time, else one; so a backup
    /// holds about `(read-ahead + parallelism + cores) x chunk size`. Default: one more than
    /// the cores, 2 to 16.
    pub fn with_parallelism(mut self, parallelism: usize) -> Self {
        self.parallelism = parallelism.max(1);
        self
    }

    /// Runs CPU-bound chunk work (hashing, compression, encryption) on the blocking pool, at
    /// most one piece per core at once: more would only share the cores, while each holding
    /// its chunk's buffers (`what` names the work in the error should it panic).
    pub(crate) async fn on_cpu<T, F>(&self, what: &str, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let _permit = self
            .cpu
            .acquire()
            .await
            .expect("the semaphore is never closed");
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Error::io(what, std::io::Error::other(e)))
    }

    /// Sets the unit in which an incremental reads the changed parts of a chunk (tests use
    /// small chunks; the default is [`super::write::PATCH_GRAIN`]).
    #[cfg(test)]
    pub(crate) fn with_patch_grain(mut self, grain: u64) -> Self {
        self.patch_grain = grain.max(1);
        self
    }

    /// The unit in which an incremental reads the changed parts of a chunk.
    pub fn patch_grain(&self) -> u64 {
        self.patch_grain
    }

    /// Sets lease timing (TTL, wait, clock skew).
    pub fn with_lock_options(mut self, options: LockOptions) -> Self {
        self.lock_options = options;
        self
    }

    /// Stops this handle's leased operations (verify, prune, gc, waits for a lease) when
    /// `cancel` fires: they give their lease back and fail with [`Error::Interrupted`], having
    /// committed nothing half-done.
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// The token that stops this handle's leased operations.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The lease timing this handle uses.
    pub fn lock_options(&self) -> LockOptions {
        self.lock_options
    }

    /// Runs `body` under a lease of the repository lock, renewed meanwhile. It is stopped when
    /// this handle's cancellation fires ([`Error::Interrupted`]) or the lease is lost
    /// ([`Error::LeaseLost`]); the lease is given back in every case.
    pub(crate) async fn under_lease<T, F, Fut>(
        &self,
        kind: LeaseKind,
        purpose: &str,
        body: F,
    ) -> Result<T>
    where
        F: FnOnce(Arc<Lease>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let lease = Arc::new(
            Lease::acquire_cancellable(
                self.backend.clone(),
                REPOSITORY_LOCK,
                kind,
                purpose,
                self.lock_options,
                &self.cancel,
            )
            .await?,
        );
        let keep_alive = lease.keep_alive();
        let lost = keep_alive.lost();
        let result = tokio::select! {
            r = body(lease.clone()) => r,
            () = self.cancel.cancelled() => Err(Error::Interrupted),
            () = lost.cancelled() => Err(Error::LeaseLost {
                key: lease.key().to_string(),
                reason: "it lapsed while the repository could not be reached".into(),
            }),
        };
        keep_alive.stop().await;
        if let Err(e) = lease.release().await {
            tracing::warn!(key = %lease.key(), error = %e, "cannot release a lease; it will expire");
        }
        result
    }

    /// The repository's config.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Whether objects are encrypted.
    pub fn encrypted(&self) -> bool {
        self.codec.encrypted()
    }

    /// The authenticator of job definitions (encrypted repositories only: an unencrypted one
    /// has no secret to authenticate with).
    pub fn definition_authenticator(&self) -> Option<super::crypto::DefinitionAuthenticator> {
        self.codec.keys().map(|k| k.definition_authenticator())
    }

    /// The ids of all committed backups, oldest first.
    pub async fn backup_ids(&self) -> Result<Vec<BackupId>> {
        let mut ids: Vec<BackupId> = self
            .backend
            .list(MANIFEST_PREFIX)
            .try_filter_map(|meta| async move { Ok(BackupId::from_object_key(&meta.key)) })
            .try_collect()
            .await?;
        ids.sort();
        Ok(ids)
    }

    /// Reads one backup's manifest.
    pub async fn show(&self, id: &BackupId) -> Result<Manifest> {
        let stored = self.backend.get(&id.object_key()).await?;
        let codec = self.codec.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || {
            let json =
                codec.decode(ObjectKind::Manifest, id.as_str(), &stored, MAX_MANIFEST_LEN)?;
            Manifest::from_json(&id, &json)
        })
        .await
        .map_err(|e| Error::io("decoding a manifest", std::io::Error::other(e)))?
    }

    /// Every manifest, oldest first, each read or failed on its own.
    pub(crate) async fn all_manifests(&self) -> Result<Vec<(BackupId, Result<Manifest>)>> {
        let ids = self.backup_ids().await?;
        let manifests = futures::stream::iter(ids)
            .map(|id| async move {
                let manifest = self.show(&id).await;
                (id, manifest)
            })
            .buffered(self.parallelism)
            .collect()
            .await;
        Ok(manifests)
    }

    /// Every manifest, oldest first; fails on the first that cannot be read.
    pub(crate) async fn all_manifests_strict(&self) -> Result<Vec<Manifest>> {
        self.all_manifests()
            .await?
            .into_iter()
            .map(|(_, m)| m)
            .collect()
    }

    /// Summaries of all backups, oldest first (by start time, then id).
    pub async fn list(&self) -> Result<Vec<BackupSummary>> {
        let mut summaries: Vec<BackupSummary> = self
            .all_manifests_strict()
            .await?
            .iter()
            .map(Manifest::summary)
            .collect();
        summaries.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        Ok(summaries)
    }

    /// The newest backup of the VM with this UUID, the base for its next incremental.
    pub async fn latest(&self, vm_uuid: &str) -> Result<Option<Manifest>> {
        Ok(self
            .all_manifests_strict()
            .await?
            .into_iter()
            .filter(|m| m.vm.uuid == vm_uuid)
            .max_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id))))
    }

    pub(crate) async fn store_manifest(&self, manifest: &Manifest) -> Result<()> {
        let codec = self.codec.clone();
        let json = manifest.to_json();
        let name = manifest.id.to_string();
        let stored =
            tokio::task::spawn_blocking(move || codec.encode(ObjectKind::Manifest, &name, &json))
                .await
                .map_err(|e| Error::io("encoding a manifest", std::io::Error::other(e)))?;
        match self
            .backend
            .put_if_absent(&manifest.id.object_key(), Bytes::from(stored))
            .await?
        {
            PutOutcome::Created => Ok(()),
            PutOutcome::AlreadyExists => Err(Error::AlreadyExists {
                what: format!("backup {}", manifest.id),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::backend::LocalBackend;
    use super::super::crypto::{test_kdf, Passphrase};
    use super::super::test_support::{image, local_repo, request, write_image};
    use super::*;

    fn pass(p: &str) -> Option<KeySource> {
        Some(KeySource::Passphrase(Passphrase::new(p)))
    }

    #[tokio::test]
    async fn init_once_then_open_checks_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        assert!(matches!(
            Repository::open(backend.clone(), None).await,
            Err(Error::NotARepository { .. })
        ));
        let options = InitOptions {
            chunk_size: 1 << 16,
            key: pass("right"),
            kdf: Some(test_kdf()),
            ..InitOptions::default()
        };
        let repo = Repository::init(backend.clone(), options.clone())
            .await
            .unwrap();
        assert!(repo.encrypted());
        assert!(matches!(
            Repository::init(backend.clone(), options).await,
            Err(Error::AlreadyExists { .. })
        ));
        let config = std::fs::read_to_string(dir.path().join("config")).unwrap();
        assert!(
            config.contains("\"argon2id\"") && config.contains("key_check"),
            "{config}"
        );
        assert!(!config.contains("right"));

        let err = Repository::open(backend.clone(), pass("wrong"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::WrongKey), "{err}");
        assert!(matches!(
            Repository::open(backend.clone(), None).await,
            Err(Error::KeyRequired)
        ));
        Repository::open(backend, pass("right")).await.unwrap();
        assert!(matches!(
            Repository::init(
                Arc::new(LocalBackend::new(dir.path().join("x"))),
                InitOptions {
                    chunk_size: 1000,
                    ..InitOptions::default()
                }
            )
            .await,
            Err(Error::InvalidArgument(_))
        ));
    }

    #[tokio::test]
    async fn encrypted_repository_round_trip_and_tampered_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        let options = InitOptions {
            chunk_size: 1 << 16,
            key: pass("secret"),
            kdf: Some(test_kdf()),
            ..InitOptions::default()
        };
        let repo = Repository::init(backend.clone(), options).await.unwrap();
        let data = image(5 * 65536 + 100, 7, &[(65536, 2 * 65536)]);
        let manifest = write_image(&repo, request("enc-vm"), &data).await;
        // Plain BLAKE3 of the chunk's data is not its id: ids are keyed.
        let plain_id = ChunkHasher::Plain.id(&data[..65536]);
        assert_ne!(manifest.disks[0].chunks[0], Some(plain_id));
        let chunk_file = dir
            .path()
            .join(manifest.disks[0].chunks[0].unwrap().object_key());
        let stored = std::fs::read(&chunk_file).unwrap();
        assert!(
            !stored
                .windows(64)
                .any(|w| data[..65536].windows(64).next() == Some(w)),
            "chunk content is not stored in the clear"
        );

        let reopened = Repository::open(backend.clone(), pass("secret"))
            .await
            .unwrap();
        let mut restored = Vec::new();
        reopened
            .read_disk(&manifest.disks[0], &mut restored)
            .await
            .unwrap();
        assert!(restored == data);

        let mut tampered = stored.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x40;
        std::fs::write(&chunk_file, tampered).unwrap();
        let err = reopened
            .read_disk(&manifest.disks[0], &mut Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Authentication { .. }), "{err}");
        let listed = reopened.list().await.unwrap();
        assert_eq!(listed.len(), 1, "manifests stay readable");
        let report = reopened.verify(Default::default()).await.unwrap();
        assert_eq!(report.problems.len(), 1);
        assert!(report.problems[0].problem.contains("failed authentication"));
    }

    #[tokio::test]
    async fn list_show_and_latest() {
        let (_dir, repo) = local_repo(1 << 16).await;
        let a = write_image(&repo, request("a"), &image(70_000, 1, &[])).await;
        let b = write_image(&repo, request("b"), &image(70_000, 2, &[])).await;
        let a2 = write_image(&repo, request("a"), &image(70_000, 3, &[])).await;
        let listed = repo.list().await.unwrap();
        let ids: Vec<_> = listed.iter().map(|s| s.id.clone()).collect();
        assert_eq!(ids, [a.id.clone(), b.id.clone(), a2.id.clone()]);
        assert_eq!(listed[0].disks[0].capacity, 70_000);
        assert_eq!(repo.show(&b.id).await.unwrap(), b);
        assert_eq!(repo.latest("uuid-a").await.unwrap().unwrap().id, a2.id);
        assert!(repo.latest("uuid-none").await.unwrap().is_none());
        let missing: BackupId = "2020-01-01T00-00-00Z-000000".parse().unwrap();
        assert!(repo.show(&missing).await.unwrap_err().is_not_found());
    }
}
