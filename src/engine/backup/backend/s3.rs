//! A backend in an S3 bucket (AWS or any S3-protocol server), through the `object_store` crate.
//!
//! Creates use `PutMode::Create` (`If-None-Match: *`), which S3 and most S3-protocol servers
//! honour atomically; single-request PUTs are atomic, so no partial object is ever visible.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};

use super::{validate_key, Backend, ObjectMeta, PutOutcome};
use crate::engine::backup::error::{Error, Result};

/// Explicit S3 settings (the environment is read by [`S3Backend::from_env`] instead).
#[derive(Clone, Default)]
pub struct S3Options {
    /// The bucket.
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// Endpoint URL for S3-protocol servers other than AWS, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Region (default `us-east-1`).
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Allow `http://` endpoints (a loopback test server).
    pub allow_http: bool,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// Objects in an S3 bucket under a prefix.
#[derive(Clone, Debug)]
pub struct S3Backend {
    store: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
}

fn store_err(context: String) -> impl FnOnce(object_store::Error) -> Error {
    move |source| Error::Store {
        context,
        source: Box::new(source),
    }
}

impl S3Backend {
    /// A backend for `s3://bucket/prefix` configured from the environment: `AWS_ENDPOINT_URL`
    /// (or `AWS_ENDPOINT`), `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP=true` for a plain-HTTP
    /// endpoint, and the other `AWS_*` variables `object_store` reads (web identity, ECS).
    pub fn from_env(bucket: &str, prefix: &str) -> Result<Self> {
        let builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        Self::build(builder, bucket, prefix)
    }

    /// A backend with explicit settings.
    pub fn new(options: S3Options) -> Result<Self> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&options.bucket)
            .with_region(options.region.as_deref().unwrap_or("us-east-1"))
            .with_allow_http(options.allow_http);
        if let Some(endpoint) = &options.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(id) = &options.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &options.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        Self::build(builder, &options.bucket, &options.prefix)
    }

    fn build(builder: AmazonS3Builder, bucket: &str, prefix: &str) -> Result<Self> {
        let prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            validate_key(&prefix)?;
        }
        let store = builder
            .build()
            .map_err(store_err(format!("configuring S3 bucket {bucket}")))?;
        Ok(Self {
            store: Arc::new(store),
            bucket: bucket.to_string(),
            prefix,
        })
    }

    fn path(&self, key: &str) -> Result<Path> {
        validate_key(key)?;
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        Path::parse(&full).map_err(|e| Error::InvalidArgument(format!("object key {key:?}: {e}")))
    }

    fn context(&self, op: &str, key: &str) -> String {
        format!("{op} {} in {}", key, self.location())
    }
}

#[async_trait]
impl Backend for S3Backend {
    fn location(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path(key)?;
        let result = match self.store.get(&path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::NotFound { what: key.into() })
            }
            Err(e) => return Err(store_err(self.context("reading", key))(e)),
        };
        result
            .bytes()
            .await
            .map_err(store_err(self.context("reading", key)))
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let path = self.path(key)?;
        self.store
            .put(&path, PutPayload::from(data))
            .await
            .map(|_| ())
            .map_err(store_err(self.context("writing", key)))
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutOutcome> {
        let path = self.path(key)?;
        match self
            .store
            .put_opts(&path, PutPayload::from(data), PutMode::Create.into())
            .await
        {
            Ok(_) => Ok(PutOutcome::Created),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(store_err(self.context("creating", key))(e)),
        }
    }

    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        let folder = prefix.trim_end_matches('/');
        let full = match (self.prefix.is_empty(), folder.is_empty()) {
            (_, true) => self.prefix.clone(),
            (true, false) => folder.to_string(),
            (false, false) => format!("{}/{folder}", self.prefix),
        };
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let context = format!("listing {prefix} in {}", self.location());
        let path = (!full.is_empty()).then(|| Path::from(full));
        self.store
            .list(path.as_ref())
            .map(move |item| {
                let meta = item.map_err(store_err(context.clone()))?;
                let location = meta.location.as_ref();
                let key = location
                    .strip_prefix(&strip)
                    .unwrap_or(location)
                    .to_string();
                Ok(ObjectMeta {
                    key,
                    size: meta.size,
                    last_modified: meta.last_modified,
                })
            })
            .boxed()
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_err(self.context("deleting", key))(e)),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let path = self.path(key)?;
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(store_err(self.context("checking", key))(e)),
        }
    }
}

/// A moto S3 server on a free loopback port, for tests; stopped on drop.
#[cfg(test)]
pub(crate) mod moto {
    use std::io::{BufRead, BufReader};
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::S3Options;

    /// A running `moto_server`.
    pub struct Moto {
        child: Child,
        /// `http://127.0.0.1:<port>`.
        pub endpoint: String,
    }

    impl Drop for Moto {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn find() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("CESO_MOTO_SERVER") {
            return Some(PathBuf::from(p));
        }
        let testbed =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".testbed/venv/bin/moto_server");
        if testbed.is_file() {
            return Some(testbed);
        }
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("moto_server"))
                .find(|p| p.is_file())
        })
    }

    /// Starts moto, or returns `None` (with a note) when it is not installed, unless
    /// `TF_ACC=1`, where a missing server fails the test.
    pub fn start() -> Option<Moto> {
        let Some(bin) = find() else {
            if std::env::var("TF_ACC").as_deref() == Ok("1") {
                panic!(
                    "moto_server not found (TF_ACC=1): install it with \
                     `.testbed/venv/bin/pip install 'moto[server]'` (scripts/testbed.sh)"
                );
            }
            eprintln!(
                "note: skipping the S3 test: moto_server not found in .testbed/venv/bin, \
                 $CESO_MOTO_SERVER or PATH (set TF_ACC=1 to make this a failure)"
            );
            return None;
        };
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(url) = line.split("Running on ").nth(1) {
                        let _ = tx.send(url.trim().to_string());
                        sent = true;
                    }
                }
                // Keep draining so moto never blocks on a full pipe.
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let endpoint = loop {
            if let Ok(url) = rx.recv_timeout(Duration::from_millis(200)) {
                break url;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("moto_server exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not start in 60 s"
            );
        };
        Some(Moto { child, endpoint })
    }

    impl Moto {
        /// Creates a bucket (moto accepts unsigned requests) and returns options for it.
        pub async fn bucket(&self, bucket: &str, prefix: &str) -> S3Options {
            let addr = self.endpoint.trim_start_matches("http://").to_string();
            let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let request = format!(
                "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
            S3Options {
                bucket: bucket.into(),
                prefix: prefix.into(),
                endpoint: Some(self.endpoint.clone()),
                region: Some("us-east-1".into()),
                access_key_id: Some("testing".into()),
                secret_access_key: Some("testing".into()),
                allow_http: true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn meets_the_backend_contract_against_moto() {
        let Some(moto) = moto::start() else { return };
        let options = moto.bucket("contract", "repo/one").await;
        let backend = S3Backend::new(options.clone()).unwrap();
        assert_eq!(backend.location(), "s3://contract/repo/one");
        super::super::contract::check(&backend).await;

        // The prefix isolates repositories sharing a bucket.
        let other = S3Backend::new(S3Options {
            prefix: "repo/two".into(),
            ..options
        })
        .unwrap();
        assert!(!other.exists("a/d").await.unwrap());
        assert!(backend.exists("a/d").await.unwrap());
        let debug = format!(
            "{:?}",
            S3Options {
                secret_access_key: Some("hush".into()),
                ..Default::default()
            }
        );
        assert!(!debug.contains("hush"), "{debug}");
    }

    #[tokio::test]
    async fn repository_on_s3_round_trip_gc_and_locks() {
        use crate::engine::backup::crypto::{test_kdf, KeySource, Passphrase};
        use crate::engine::backup::test_support::{image, request, write_image};
        use crate::engine::backup::{Error, GcOptions, InitOptions, Repository, VerifyOptions};

        let Some(moto) = moto::start() else { return };
        let options = moto.bucket("repo", "site-a").await;
        let backend: Arc<dyn Backend> = Arc::new(S3Backend::new(options).unwrap());
        let key = || Some(KeySource::Passphrase(Passphrase::new("s3 secret")));
        let init = InitOptions {
            chunk_size: 1 << 16,
            key: key(),
            kdf: Some(test_kdf()),
            ..InitOptions::default()
        };
        Repository::init(backend.clone(), init.clone())
            .await
            .unwrap();
        assert!(matches!(
            Repository::init(backend.clone(), init).await,
            Err(Error::AlreadyExists { .. })
        ));
        let repo = Repository::open(backend.clone(), key()).await.unwrap();

        let data = image(5 * 65536 + 77, 11, &[(65536, 3 * 65536)]);
        let first = write_image(&repo, request("s3vm"), &data).await;
        let mut restored = Vec::new();
        repo.read_disk(&first.disks[0], &mut restored)
            .await
            .unwrap();
        assert!(restored == data);

        // A second backup of other data, then dropped: gc frees exactly its chunks.
        let second = write_image(&repo, request("s3vm"), &image(2 * 65536, 12, &[])).await;
        backend.delete(&second.id.object_key()).await.unwrap();
        let gc = repo
            .gc(GcOptions {
                grace: std::time::Duration::ZERO,
                dry_run: false,
            })
            .await
            .unwrap();
        assert_eq!((gc.chunks_total, gc.chunks_deleted), (6, 2));
        assert!(repo.verify(VerifyOptions::default()).await.unwrap().is_ok());

        // The exclusive lease excludes backups on S3 too.
        let session = repo.begin_backup(request("s3vm")).await.unwrap();
        assert!(matches!(
            repo.gc(GcOptions::default()).await,
            Err(Error::Locked { .. })
        ));
        session.abort().await.unwrap();
        repo.gc(GcOptions::default()).await.unwrap();
    }
}
