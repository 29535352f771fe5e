//! Where a repository's objects live: one async trait, a local-directory and an S3 backend,
//! and repository URL parsing.
//!
//! Keys are `/`-separated relative paths (`config`, `chunks/ab/ab12...`, `manifests/<id>`,
//! `locks/<name>/<holder>`). Every write is atomic: a reader sees a whole object or none, never
//! a prefix. The lease locks in [`super::lock`] are built from the trait's conditional create
//! (`put_if_absent`), overwrite (`put`), `list` and `delete`: no backend needs a lock primitive
//! of its own.

pub mod local;
pub mod s3;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use super::error::{Error, Result};

pub use local::LocalBackend;
pub use s3::{S3Backend, S3Options};

/// An object as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written (the server's clock for S3, the file's mtime locally).
    pub last_modified: DateTime<Utc>,
}

/// What `put_if_absent` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was created.
    Created,
    /// An object with that key already existed; it was left alone.
    AlreadyExists,
}

/// A store of whole objects by key.
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// Where the objects are, for messages (`file:///...`, `s3://bucket/prefix`).
    fn location(&self) -> String;

    /// Reads a whole object; [`Error::NotFound`] when absent.
    async fn get(&self, key: &str) -> Result<Bytes>;

    /// Writes an object atomically, replacing any previous one.
    async fn put(&self, key: &str, data: Bytes) -> Result<()>;

    /// Writes an object atomically unless one with that key exists (a conditional create).
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutOutcome>;

    /// Lists the objects under a folder (`prefix` ends in `/`), recursively, in no set order.
    /// Leftovers of interrupted writes are never listed.
    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>>;

    /// Deletes an object; deleting an absent object succeeds.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Whether an object exists.
    async fn exists(&self, key: &str) -> Result<bool>;

    /// Removes leftovers of writes interrupted before `older_than` (a crashed writer's temp
    /// files); returns how many. Backends whose writes leave nothing behind return 0.
    async fn clean_incomplete(&self, older_than: DateTime<Utc>) -> Result<u64> {
        let _ = older_than;
        Ok(0)
    }
}

/// A parsed repository location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepositoryUrl {
    /// A local directory: `file:///path` or a plain path.
    Local(PathBuf),
    /// An S3 bucket and key prefix: `s3://bucket/prefix`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix (no leading or trailing `/`; may be empty).
        prefix: String,
    },
}

impl RepositoryUrl {
    /// Parses `file:///path`, `s3://bucket/prefix`, or a plain (absolute or relative) path.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: text.to_string(),
            reason: reason.to_string(),
        };
        if text.is_empty() {
            return Err(invalid("empty"));
        }
        let Some((scheme, _)) = text.split_once("://") else {
            return Ok(RepositoryUrl::Local(PathBuf::from(text)));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                let url = url::Url::parse(text).map_err(|e| invalid(&e.to_string()))?;
                if url
                    .host_str()
                    .is_some_and(|h| !h.is_empty() && h != "localhost")
                {
                    return Err(invalid("file URLs name a local path: file:///path"));
                }
                let path = url
                    .to_file_path()
                    .map_err(|()| invalid("not a local path"))?;
                Ok(RepositoryUrl::Local(path))
            }
            "s3" => {
                let rest = &text[5..];
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let valid_bucket = (3..=63).contains(&bucket.len())
                    && bucket.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                    });
                if !valid_bucket {
                    return Err(invalid(
                        "the bucket name must be 3-63 lower-case letters, digits, '-' or '.'",
                    ));
                }
                let prefix = prefix.trim_matches('/');
                if prefix.split('/').any(|s| s == "." || s == "..")
                    || prefix.contains("//")
                    || prefix.contains(['?', '#'])
                {
                    return Err(invalid("the prefix must be a plain key path"));
                }
                Ok(RepositoryUrl::S3 {
                    bucket: bucket.to_string(),
                    prefix: prefix.to_string(),
                })
            }
            other => Err(invalid(&format!(
                "unsupported scheme {other:?} (use file:// or s3://)"
            ))),
        }
    }

    /// Opens the backend. S3 settings (endpoint, region, credentials, `AWS_ALLOW_HTTP`) come
    /// from the `AWS_*` environment variables, see [`S3Backend::from_env`].
    pub fn open(&self) -> Result<Arc<dyn Backend>> {
        Ok(match self {
            RepositoryUrl::Local(path) => Arc::new(LocalBackend::new(path.clone())),
            RepositoryUrl::S3 { bucket, prefix } => Arc::new(S3Backend::from_env(bucket, prefix)?),
        })
    }
}

impl fmt::Display for RepositoryUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepositoryUrl::Local(path) => write!(f, "file://{}", path.display()),
            RepositoryUrl::S3 { bucket, prefix } if prefix.is_empty() => {
                write!(f, "s3://{bucket}")
            }
            RepositoryUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// Checks a key: relative, `/`-separated, no empty, `.`, `..` or dot-leading segments (names
/// starting with `.` are reserved for the local backend's temp files).
pub(crate) fn validate_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && !seg.starts_with('.')
                && !seg.contains('\\')
                && !seg.bytes().any(|b| b.is_ascii_control())
        });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid object key {key:?}"
        )))
    }
}

#[cfg(test)]
pub(crate) mod contract {
    //! The behaviour every backend must show, run against each of them.

    use futures::TryStreamExt;

    use super::*;

    pub async fn check(backend: &dyn Backend) {
        let data = Bytes::from_static(b"first");
        assert!(backend.get("a/b/c").await.unwrap_err().is_not_found());
        assert!(!backend.exists("a/b/c").await.unwrap());
        assert_eq!(
            backend.put_if_absent("a/b/c", data.clone()).await.unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            backend
                .put_if_absent("a/b/c", Bytes::from_static(b"second"))
                .await
                .unwrap(),
            PutOutcome::AlreadyExists
        );
        assert_eq!(backend.get("a/b/c").await.unwrap(), data, "not replaced");
        assert!(backend.exists("a/b/c").await.unwrap());
        backend
            .put("a/b/c", Bytes::from_static(b"third"))
            .await
            .unwrap();
        assert_eq!(&backend.get("a/b/c").await.unwrap()[..], b"third");
        backend.put("a/d", Bytes::from_static(b"x")).await.unwrap();
        backend
            .put("other/e", Bytes::from_static(b"y"))
            .await
            .unwrap();

        let mut listed: Vec<ObjectMeta> = backend.list("a/").try_collect().await.unwrap();
        listed.sort_by(|x, y| x.key.cmp(&y.key));
        let keys: Vec<&str> = listed.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, ["a/b/c", "a/d"]);
        assert_eq!(listed[0].size, 5);
        let age = Utc::now() - listed[0].last_modified;
        assert!(age.num_seconds().abs() < 300, "mtime {age}");
        let none: Vec<ObjectMeta> = backend.list("nothing/").try_collect().await.unwrap();
        assert!(none.is_empty());

        backend.delete("a/b/c").await.unwrap();
        backend.delete("a/b/c").await.unwrap();
        assert!(!backend.exists("a/b/c").await.unwrap());
        assert!(backend.get("../escape").await.is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repository_urls() {
        assert_eq!(
            RepositoryUrl::parse("/srv/backups").unwrap(),
            RepositoryUrl::Local("/srv/backups".into())
        );
        assert_eq!(
            RepositoryUrl::parse("relative/dir").unwrap(),
            RepositoryUrl::Local("relative/dir".into())
        );
        assert_eq!(
            RepositoryUrl::parse("file:///srv/my%20backups").unwrap(),
            RepositoryUrl::Local("/srv/my backups".into())
        );
        assert_eq!(
            RepositoryUrl::parse("s3://ceso-backups/site-a/vms/").unwrap(),
            RepositoryUrl::S3 {
                bucket: "ceso-backups".into(),
                prefix: "site-a/vms".into()
            }
        );
        let s3 = RepositoryUrl::parse("s3://bucket").unwrap();
        assert_eq!(
            s3,
            RepositoryUrl::S3 {
                bucket: "bucket".into(),
                prefix: String::new()
            }
        );
        assert_eq!(s3.to_string(), "s3://bucket");
        for bad in [
            "",
            "ftp://host/x",
            "s3://",
            "s3://UPPER/x",
            "s3://b/../x",
            "file://otherhost/x",
        ] {
            assert!(
                matches!(RepositoryUrl::parse(bad), Err(Error::InvalidUrl { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn validates_keys() {
        for good in ["config", "chunks/ab/abcd", "locks/repo/x-1"] {
            assert!(validate_key(good).is_ok(), "{good}");
        }
        for bad in ["", "/abs", "a//b", "a/../b", "a/.tmp", "a/", "a\\b", "a\nb"] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }
}
