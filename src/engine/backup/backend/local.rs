//! A backend in a local directory (or a mounted NFS/SMB share).
//!
//! Writes go to a hidden temp file in the target's folder (`.<name>.tmp-<random>`), which is
//! fsynced, then renamed over the target (`put`) or hard-linked to it (`put_if_absent`: `link`
//! fails if the target exists, so the create is atomic and never clobbers), and the folder is
//! fsynced. A crash therefore leaves either the old state or the whole new object, plus at
//! worst a temp file that `list` never shows and [`Backend::clean_incomplete`] removes.
//!
//! Where hard links are not supported (SMB, some FUSE file systems), a create claims the name
//! with an empty file opened `O_CREAT | O_EXCL` (exactly one creator wins) and then renames the
//! complete temp file over its claim. An empty file is therefore a create in progress, never
//! an object: reads, listings and existence checks treat it as absent, a creator finding one
//! waits for it to fill, and one left empty for [`STALE_CLAIM`] by a crashed creator is taken
//! over (and removed by `clean_incomplete`).
//!
//! Objects are private: files are created 0600 and folders 0700, whatever the umask, so an
//! unencrypted repository's disk images are readable by their owner only.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use super::{validate_key, Backend, ObjectMeta, PutOutcome};
use crate::engine::backup::error::{Error, Result};

const TEMP_MARKER: &str = ".tmp-";
/// Mode of every object file.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every folder.
pub const DIR_MODE: u32 = 0o700;
/// An empty claim this old was left by a crashed creator (a live one fills it at once).
pub const STALE_CLAIM: Duration = Duration::from_secs(30);

/// Objects as files under a root directory.
#[derive(Clone, Debug)]
pub struct LocalBackend {
    root: Arc<PathBuf>,
    /// Set once a hard link failed as unsupported and the `O_EXCL` claim worked instead.
    no_hard_links: Arc<AtomicBool>,
}

impl LocalBackend {
    /// A backend rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: Arc::new(root.into()),
            no_hard_links: Arc::default(),
        }
    }

    /// The same, creating objects with `O_EXCL` claims from the start, as on a file system
    /// without hard links (for tests of that path).
    pub fn without_hard_links(root: impl Into<PathBuf>) -> Self {
        let backend = Self::new(root);
        backend.no_hard_links.store(true, Ordering::Relaxed);
        backend
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::io("local backend task", io::Error::other(e)))?
}

fn io_err(op: &str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let context = format!("{op} {}", path.display());
    move |e| Error::io(context, e)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Creates `dir` (and parents) if missing, fsyncing each new entry's parent.
fn ensure_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        ensure_dir(parent)?;
    }
    match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => dir.parent().map_or(Ok(()), sync_dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `data` to a fresh temp file next to `target`, fsynced; returns its path.
fn write_temp(target: &Path, data: &[u8]) -> io::Result<PathBuf> {
    let dir = target.parent().expect("keys have a parent");
    ensure_dir(dir)?;
    let mut suffix = [0u8; 8];
    rand::fill(&mut suffix);
    let name = target
        .file_name()
        .expect("keys name a file")
        .to_string_lossy();
    let temp = dir.join(format!(".{name}{TEMP_MARKER}{}", hex::encode(suffix)));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&temp)?;
        file.write_all(data)?;
        file.sync_all()
    })();
    match result {
        Ok(()) => Ok(temp),
        Err(e) => {
            let _ = fs::remove_file(&temp);
            Err(e)
        }
    }
}

fn to_utc(t: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(t)
}

/// Whether a failed `link` means the file system has no hard links (rather than, say, a
/// read-only or full one).
fn links_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS | libc::EMLINK | libc::EXDEV)
    )
}

/// Moves the complete `temp` over `target`.
fn finish(temp: &Path, target: &Path) -> io::Result<PutOutcome> {
    if let Err(e) = fs::rename(temp, target) {
        let _ = fs::remove_file(temp);
        return Err(e);
    }
    sync_dir(target.parent().expect("has a parent"))?;
    Ok(PutOutcome::Created)
}

/// A create-only write without hard links: claim `target` with an empty `O_EXCL` file, then
/// rename the complete `temp` over the claim (see the module doc).
fn create_by_claim(temp: &Path, target: &Path) -> io::Result<PutOutcome> {
    loop {
        let claim = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(target);
        match claim {
            Ok(_) => return finish(temp, target),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                let _ = fs::remove_file(temp);
                return Err(e);
            }
        }
        let meta = match fs::metadata(target) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // gone: claim again
            Err(e) => {
                let _ = fs::remove_file(temp);
                return Err(e);
            }
        };
        if meta.len() > 0 {
            let _ = fs::remove_file(temp);
            return Ok(PutOutcome::AlreadyExists);
        }
        let age = meta
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        if age >= STALE_CLAIM {
            tracing::warn!(path = %target.display(), "taking over an empty claim a crashed writer left");
            return finish(temp, target);
        }
        // Another creator is between its claim and its rename.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a file is an object rather than a create in progress.
fn is_object(meta: &fs::Metadata) -> bool {
    meta.is_file() && meta.len() > 0
}

/// One folder's files (as objects, temp files skipped) and subfolders.
fn read_folder(root: &Path, dir: &Path) -> Result<(Vec<ObjectMeta>, Vec<PathBuf>)> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(io_err("listing", dir)(e)),
    };
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    for entry in entries {
        let entry = entry.map_err(io_err("listing", dir))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().map_err(io_err("listing", &path))?;
        if kind.is_dir() {
            dirs.push(path);
        } else if kind.is_file() {
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                // Deleted between read_dir and stat: not there any more.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("reading metadata of", &path)(e)),
            };
            if !is_object(&meta) {
                continue; // a create in progress
            }
            let rel = path.strip_prefix(root).expect("under the root");
            let key = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            files.push(ObjectMeta {
                key,
                size: meta.len(),
                last_modified: to_utc(meta.modified().map_err(io_err("reading mtime of", &path))?),
            });
        }
    }
    Ok((files, dirs))
}

#[async_trait]
impl Backend for LocalBackend {
    fn location(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path(key)?;
        let key = key.to_string();
        blocking(move || match fs::read(&path) {
            Ok(data) if data.is_empty() => Err(Error::NotFound { what: key }), // being created
            Ok(data) => Ok(Bytes::from(data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::NotFound { what: key }),
            Err(e) => Err(io_err("reading", &path)(e)),
        })
        .await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let path = self.path(key)?;
        blocking(move || {
            let temp = write_temp(&path, &data).map_err(io_err("writing", &path))?;
            if let Err(e) = fs::rename(&temp, &path) {
                let _ = fs::remove_file(&temp);
                return Err(io_err("renaming into", &path)(e));
            }
            sync_dir(path.parent().expect("has a parent")).map_err(io_err("syncing", &path))
        })
        .await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutOutcome> {
        let path = self.path(key)?;
        let no_links = self.no_hard_links.clone();
        blocking(move || {
            let temp = write_temp(&path, &data).map_err(io_err("writing", &path))?;
            if no_links.load(Ordering::Relaxed) {
                return create_by_claim(&temp, &path).map_err(io_err("creating", &path));
            }
            let linked = fs::hard_link(&temp, &path);
            match linked {
                Ok(()) => {
                    let _ = fs::remove_file(&temp);
                    sync_dir(path.parent().expect("has a parent"))
                        .map_err(io_err("syncing", &path))?;
                    Ok(PutOutcome::Created)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let _ = fs::remove_file(&temp);
                    Ok(PutOutcome::AlreadyExists)
                }
                Err(e) if links_unsupported(&e) => {
                    let outcome = create_by_claim(&temp, &path).map_err(io_err("creating", &path))?;
                    if !no_links.swap(true, Ordering::Relaxed) {
                        tracing::info!(root = %path.display(), error = %e,
                            "hard links are not supported here; creating objects with O_EXCL claims");
                    }
                    Ok(outcome)
                }
                Err(e) => {
                    let _ = fs::remove_file(&temp);
                    Err(io_err("linking", &path)(e))
                }
            }
        })
        .await
    }

    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        let prefix = prefix.to_string();
        if !(prefix.is_empty()
            || prefix.ends_with('/') && validate_key(&prefix[..prefix.len() - 1]).is_ok())
        {
            let err = Error::InvalidArgument(format!("list prefix {prefix:?} must name a folder"));
            return stream::once(async move { Err(err) }).boxed();
        }
        let root = self.root.clone();
        let start = root.join(&prefix);
        stream::try_unfold(vec![start], move |mut stack| {
            let root = root.clone();
            async move {
                let Some(dir) = stack.pop() else {
                    return Ok(None);
                };
                let (files, dirs) = blocking(move || read_folder(&root, &dir)).await?;
                stack.extend(dirs);
                Ok(Some((stream::iter(files.into_iter().map(Ok)), stack)))
            }
        })
        .try_flatten()
        .boxed()
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("deleting", &path)(e)),
        })
        .await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let path = self.path(key)?;
        blocking(move || match fs::metadata(&path) {
            Ok(meta) => Ok(is_object(&meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("checking", &path)(e)),
        })
        .await
    }

    async fn clean_incomplete(&self, older_than: DateTime<Utc>) -> Result<u64> {
        let root = self.root.clone();
        blocking(move || {
            let mut removed = 0;
            let mut stack = vec![root.to_path_buf()];
            while let Some(dir) = stack.pop() {
                let entries = match fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err("listing", &dir)(e)),
                };
                for entry in entries {
                    let entry = entry.map_err(io_err("listing", &dir))?;
                    let path = entry.path();
                    let kind = entry.file_type().map_err(io_err("listing", &path))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if kind.is_dir() {
                        stack.push(path);
                    } else if kind.is_file() {
                        let Ok(meta) = entry.metadata() else {
                            continue;
                        };
                        let temp = name.starts_with('.') && name.contains(TEMP_MARKER);
                        let stale_claim = meta.len() == 0
                            && meta
                                .modified()
                                .ok()
                                .and_then(|t| t.elapsed().ok())
                                .is_some_and(|age| age >= STALE_CLAIM);
                        let old = meta
                            .modified()
                            .map(|t| to_utc(t) < older_than)
                            .unwrap_or(false);
                        if old && (temp || stale_claim) && fs::remove_file(&path).is_ok() {
                            removed += 1;
                        }
                    }
                }
            }
            Ok(removed)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn meets_the_backend_contract() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path().join("repo"));
        super::super::contract::check(&backend).await;
        assert_eq!(
            backend.location(),
            format!("file://{}", dir.path().join("repo").display())
        );
    }

    #[tokio::test]
    async fn a_leftover_temp_file_is_ignored_then_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        backend
            .put("chunks/ab/abc", Bytes::from_static(b"whole"))
            .await
            .unwrap();
        // What a writer killed between write and rename leaves behind.
        let temp = dir.path().join("chunks/ab/.abd.tmp-0123456789abcdef");
        fs::write(&temp, b"half").unwrap();
        let keys: Vec<String> = backend
            .list("chunks/")
            .map_ok(|m| m.key)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(keys, ["chunks/ab/abc"]);
        assert!(!backend.exists("chunks/ab/abd").await.unwrap());
        assert!(backend
            .get("chunks/ab/.abd.tmp-0123456789abcdef")
            .await
            .is_err());

        let past = Utc::now() - chrono::TimeDelta::hours(1);
        assert_eq!(
            backend.clean_incomplete(past).await.unwrap(),
            0,
            "too young"
        );
        let future = Utc::now() + chrono::TimeDelta::seconds(5);
        assert_eq!(backend.clean_incomplete(future).await.unwrap(), 1);
        assert!(!temp.exists());
        assert!(backend.exists("chunks/ab/abc").await.unwrap());
    }

    #[tokio::test]
    async fn concurrent_conditional_creates_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        let tries = (0..8).map(|i| {
            let backend = backend.clone();
            async move {
                backend
                    .put_if_absent("locks/x", Bytes::from(format!("holder {i}")))
                    .await
                    .unwrap()
            }
        });
        let outcomes = futures::future::join_all(tries).await;
        let created = outcomes
            .iter()
            .filter(|o| **o == PutOutcome::Created)
            .count();
        assert_eq!(created, 1);
        let listed: Vec<ObjectMeta> = backend.list("").try_collect().await.unwrap();
        assert_eq!(listed.len(), 1, "no temp files left: {listed:?}");
    }

    #[tokio::test]
    async fn objects_and_folders_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let backend = LocalBackend::new(&root);
        backend
            .put("chunks/ab/abc", Bytes::from_static(b"x"))
            .await
            .unwrap();
        backend
            .put_if_absent("manifests/m", Bytes::from_static(b"y"))
            .await
            .unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        for d in ["", "chunks", "chunks/ab", "manifests"] {
            assert_eq!(mode(&root.join(d)), DIR_MODE, "{d}");
        }
        for f in ["chunks/ab/abc", "manifests/m"] {
            assert_eq!(mode(&root.join(f)), FILE_MODE, "{f}");
        }
    }

    #[tokio::test]
    async fn without_hard_links_meets_the_contract_with_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::without_hard_links(dir.path().join("repo"));
        super::super::contract::check(&backend).await;
        let tries = (0..8).map(|i| {
            let backend = backend.clone();
            async move {
                backend
                    .put_if_absent("locks/x", Bytes::from(format!("holder {i}")))
                    .await
                    .unwrap()
            }
        });
        let outcomes = futures::future::join_all(tries).await;
        let created = outcomes
            .iter()
            .filter(|o| **o == PutOutcome::Created)
            .count();
        assert_eq!(created, 1);
        let winner = backend.get("locks/x").await.unwrap();
        assert!(winner.starts_with(b"holder "), "whole: {winner:?}");
        let names: Vec<String> = fs::read_dir(dir.path().join("repo/locks"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["x"], "no temp file or claim left");
    }

    #[tokio::test]
    async fn an_empty_claim_is_no_object_and_a_stale_one_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::without_hard_links(dir.path());
        backend
            .put("manifests/a", Bytes::from_static(b"a"))
            .await
            .unwrap();
        // What a creator that crashed between its claim and its rename leaves.
        let claim = dir.path().join("manifests/b");
        fs::File::create(&claim).unwrap();
        assert!(backend.get("manifests/b").await.unwrap_err().is_not_found());
        assert!(!backend.exists("manifests/b").await.unwrap());
        let keys: Vec<String> = backend
            .list("manifests/")
            .map_ok(|m| m.key)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(keys, ["manifests/a"]);
        // A young claim is waited for: filled meanwhile, it is the object.
        let filler = {
            let claim = claim.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                fs::write(&claim, b"other writer").unwrap();
            })
        };
        let outcome = backend
            .put_if_absent("manifests/b", Bytes::from_static(b"mine"))
            .await
            .unwrap();
        filler.join().unwrap();
        assert_eq!(outcome, PutOutcome::AlreadyExists);
        assert_eq!(
            &backend.get("manifests/b").await.unwrap()[..],
            b"other writer"
        );
        // A stale one is taken over, and gc's clean-up removes another.
        let stale = |p: &Path| {
            let f = fs::File::create(p).unwrap();
            f.set_modified(SystemTime::now() - 2 * STALE_CLAIM).unwrap();
        };
        stale(&dir.path().join("manifests/c"));
        assert_eq!(
            backend
                .put_if_absent("manifests/c", Bytes::from_static(b"c"))
                .await
                .unwrap(),
            PutOutcome::Created
        );
        assert_eq!(&backend.get("manifests/c").await.unwrap()[..], b"c");
        stale(&dir.path().join("manifests/d"));
        assert_eq!(backend.clean_incomplete(Utc::now()).await.unwrap(), 1);
        assert!(!dir.path().join("manifests/d").exists());
    }
}
