//! Fixtures for the engine's unit tests: deterministic images and small local repositories.

use std::sync::Arc;

use super::backend::{Backend, LocalBackend};
use super::manifest::{Consistency, Manifest, VmRef};
use super::repository::{InitOptions, Repository};
use super::session::BackupRequest;
use super::write::DiskInfo;

/// `len` pseudo-random bytes from `seed` (BLAKE3's XOF), zeroed over the half-open
/// `(start, end)` ranges in `zeros`.
pub(crate) fn image(len: usize, seed: u64, zeros: &[(usize, usize)]) -> Vec<u8> {
    let mut data = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut data);
    for &(start, end) in zeros {
        data[start..end].fill(0);
    }
    data
}

/// An unencrypted repository with this chunk size in a temp dir.
pub(crate) async fn local_repo(chunk_size: u32) -> (tempfile::TempDir, Repository) {
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
    let options = InitOptions {
        chunk_size,
        ..InitOptions::default()
    };
    (dir, Repository::init(backend, options).await.unwrap())
}

/// A crash-consistent backup of VM `name` (UUID `uuid-<name>`).
pub(crate) fn request(name: &str) -> BackupRequest {
    BackupRequest {
        vm: VmRef {
            name: name.into(),
            uuid: format!("uuid-{name}"),
        },
        consistency: Consistency::CrashConsistent,
        vm_config: serde_json::json!({"guest_id": "otherGuest64"}),
        parent: None,
        consistency_note: None,
        job: None,
        endpoint: None,
    }
}

/// Backs up `data` as disk `disk0` in one full backup and commits it.
pub(crate) async fn write_image(
    repo: &Repository,
    request: BackupRequest,
    data: &[u8],
) -> Manifest {
    let mut session = repo.begin_backup(request).await.unwrap();
    let info = DiskInfo {
        label: "disk0".into(),
        capacity: data.len() as u64,
        change_id: None,
    };
    session
        .write_disk(info, std::io::Cursor::new(data.to_vec()), None, None)
        .await
        .unwrap();
    session.commit().await.unwrap()
}

/// A local backend that can be made to fail every call, as an unreachable repository does.
#[derive(Debug)]
pub(crate) struct FlakyBackend {
    inner: LocalBackend,
    down: std::sync::atomic::AtomicBool,
}

impl FlakyBackend {
    /// A backend in `root` that works until [`FlakyBackend::set_down`].
    pub(crate) fn new(root: &std::path::Path) -> Arc<Self> {
        Arc::new(Self {
            inner: LocalBackend::new(root),
            down: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Makes every call fail (`true`) or work again.
    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    fn check(&self) -> super::error::Result<()> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(super::error::Error::io(
                "test outage",
                std::io::Error::other("the repository is unreachable"),
            ));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Backend for FlakyBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn get(&self, key: &str) -> super::error::Result<bytes::Bytes> {
        self.check()?;
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, data: bytes::Bytes) -> super::error::Result<()> {
        self.check()?;
        self.inner.put(key, data).await
    }
    async fn put_if_absent(
        &self,
        key: &str,
        data: bytes::Bytes,
    ) -> super::error::Result<super::backend::PutOutcome> {
        self.check()?;
        self.inner.put_if_absent(key, data).await
    }
    fn list(
        &self,
        prefix: &str,
    ) -> futures::stream::BoxStream<'static, super::error::Result<super::backend::ObjectMeta>> {
        use futures::StreamExt;
        match self.check() {
            Ok(()) => self.inner.list(prefix),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }
    async fn delete(&self, key: &str) -> super::error::Result<()> {
        self.check()?;
        self.inner.delete(key).await
    }
    async fn exists(&self, key: &str) -> super::error::Result<bool> {
        self.check()?;
        self.inner.exists(key).await
    }
}
