//! A backend in a local directory (or a mounted NFS/SMB share).
//!
//! Writes go to a hidden temp file in the target's folder (`.<name>.tmp-<random>`), which is
//! fsynced, then renamed over the target (`put`) or hard-linked to it (`put_if_absent`: `link`
//! fails if the target exists, so the create is atomic and never clobbers), and the folder is
//! fsynced. A crash therefore leaves either the old state or the whole new object, plus at
//! worst a temp file that `list` never shows and [`Backend::clean_incomplete`] removes.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use super::{validate_key, Backend, ObjectMeta, PutOutcome};
use crate::engine::backup::error::{Error, Result};

const TEMP_MARKER: &str = ".tmp-";

/// Objects as files under a root directory.
#[derive(Clone, Debug)]
pub struct LocalBackend {
    root: Arc<PathBuf>,
}

impl LocalBackend {
    /// A backend rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: Arc::new(root.into()),
        }
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
    match fs::create_dir(dir) {
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
        blocking(move || {
            let temp = write_temp(&path, &data).map_err(io_err("writing", &path))?;
            let linked = fs::hard_link(&temp, &path);
            let _ = fs::remove_file(&temp);
            match linked {
                Ok(()) => {
                    sync_dir(path.parent().expect("has a parent"))
                        .map_err(io_err("syncing", &path))?;
                    Ok(PutOutcome::Created)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(PutOutcome::AlreadyExists),
                Err(e) => Err(io_err("linking", &path)(e)),
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
            Ok(meta) => Ok(meta.is_file()),
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
                    } else if kind.is_file() && name.starts_with('.') && name.contains(TEMP_MARKER)
                    {
                        let old = entry
                            .metadata()
                            .and_then(|m| m.modified())
                            .map(|t| to_utc(t) < older_than)
                            .unwrap_or(false);
                        if old && fs::remove_file(&path).is_ok() {
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
}
