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
