//! Deploying an OVF or OVA: the server turns the descriptor into an import spec
//! (`OvfManager.CreateImportSpec`), `ResourcePool.ImportVApp` creates the VM and an
//! `HttpNfcLease`, the disk files are streamed to the lease's URLs, and the lease is completed
//! (or aborted on any failure, which removes the half-made VM).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::CONTENT_LENGTH;

use super::client::Client;
use super::envelope::RequestWriter;
use super::error::{Error, ErrorKind, Result};
use super::methods::{NodeCall, PlainCall};
use super::types::ManagedObjectReference;
use super::xml::{parse_fragment, Node};

/// Where a VM comes from: an `.ovf` (its files beside it) or an `.ova` archive, on this machine.
#[derive(Debug, Clone)]
pub struct OvfSource {
    /// The descriptor's directory, where its referenced files are.
    pub dir: PathBuf,
    /// The descriptor's text.
    pub descriptor: String,
    /// A directory to remove afterwards (an unpacked OVA).
    cleanup: Option<PathBuf>,
}

impl Drop for OvfSource {
    fn drop(&mut self) {
        if let Some(dir) = &self.cleanup {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        format!("cannot {what} {}: {e}", path.display()),
    )
}

impl OvfSource {
    /// Opens `path`: an `.ovf` file, or an `.ova` (tar) archive, unpacked to a temporary
    /// directory that is removed when the source is dropped.
    pub fn open(path: &Path) -> Result<Self> {
        let is_ova = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("ova"));
        if !is_ova {
            let descriptor =
                std::fs::read_to_string(path).map_err(|e| io_error("read", path, e))?;
            return Ok(Self {
                dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
                descriptor,
                cleanup: None,
            });
        }
        let dir = std::env::temp_dir().join(format!(
            "ceso-ova-{}-{}",
            std::process::id(),
            path.file_stem().and_then(|s| s.to_str()).unwrap_or("x")
        ));
        std::fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, e))?;
        let file = std::fs::File::open(path).map_err(|e| io_error("open", path, e))?;
        tar::Archive::new(file)
            .unpack(&dir)
            .map_err(|e| io_error("unpack", path, e))?;
        let ovf = std::fs::read_dir(&dir)
            .map_err(|e| io_error("list", &dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("ovf")))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    format!("{} holds no .ovf descriptor", path.display()),
                )
            })?;
        let descriptor = std::fs::read_to_string(&ovf).map_err(|e| io_error("read", &ovf, e))?;
        Ok(Self {
            dir: dir.clone(),
            descriptor,
            cleanup: Some(dir),
        })
    }
}

impl OvfSource {
    /// Downloads a package from an `http(s)://` URL into a temporary directory (removed when the
    /// source is dropped): an `.ova` as is, or an `.ovf` with every file its References name.
    pub async fn fetch(url: &str) -> Result<Self> {
        let url = url::Url::parse(url).map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("{url:?} is not a URL: {e}"),
            )
        })?;
        let name = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .filter(|n| !n.is_empty())
            .unwrap_or("package.ova")
            .to_string();
        let dir = std::env::temp_dir().join(format!("ceso-ovf-{}-{}", std::process::id(), name));
        std::fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, e))?;
        super::tls::install_crypto_provider();
        let http = reqwest::Client::builder().build().map_err(|e| {
            Error::new(
                ErrorKind::Transport,
                format!("cannot build an HTTP client: {e}"),
            )
        })?;
        let get = |u: url::Url, to: PathBuf| {
            let http = http.clone();
            async move {
                let resp = http.get(u.clone()).send().await.map_err(|e| {
                    Error::new(ErrorKind::Transport, format!("cannot download {u}: {e}"))
                })?;
                if !resp.status().is_success() {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("cannot download {u}: HTTP {}", resp.status()),
                    ));
                }
                let mut file = tokio::fs::File::create(&to)
                    .await
                    .map_err(|e| io_error("create", &to, e))?;
                let mut stream = resp.bytes_stream();
                use futures::StreamExt as _;
                use tokio::io::AsyncWriteExt as _;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| {
                        Error::new(
                            ErrorKind::Transport,
                            format!("download of {u} interrupted: {e}"),
                        )
                    })?;
                    file.write_all(&chunk)
                        .await
                        .map_err(|e| io_error("write", &to, e))?;
                }
                file.flush().await.map_err(|e| io_error("write", &to, e))?;
                Ok::<_, Error>(())
            }
        };
        let local = dir.join(&name);
        get(url.clone(), local.clone()).await?;
        if !name.to_ascii_lowercase().ends_with(".ovf") {
            let mut src = Self::open(&local)?;
            if src.cleanup.is_none() {
                src.cleanup = Some(dir);
            } else {
                let _ = std::fs::remove_file(&local);
            }
            return Ok(src);
        }
        let descriptor =
            std::fs::read_to_string(&local).map_err(|e| io_error("read", &local, e))?;
        let hrefs: Vec<String> = parse_fragment(&descriptor)?
            .iter()
            .flat_map(|env| env.children_named("References"))
            .flat_map(|r| r.children_named("File"))
            .filter_map(|f| f.attr("href").map(str::to_string))
            .collect();
        for href in hrefs {
            let file_url = url.join(&href).map_err(|e| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    format!("bad file reference {href:?}: {e}"),
                )
            })?;
            let target = dir.join(Path::new(&href).file_name().unwrap_or_default());
            get(file_url, target).await?;
        }
        Ok(Self {
            dir: dir.clone(),
            descriptor,
            cleanup: Some(dir),
        })
    }
}

/// Where an OVF deployment goes.
pub struct OvfTarget<'a> {
    /// The VM's name.
    pub name: &'a str,
    /// Resource pool.
    pub pool: &'a ManagedObjectReference,
    /// Folder.
    pub folder: &'a ManagedObjectReference,
    /// Datastore.
    pub datastore: &'a ManagedObjectReference,
    /// Host (standalone ESXi or a chosen host).
    pub host: Option<&'a ManagedObjectReference>,
    /// The instance UUID the new VM gets (so it can be found when an answer is lost).
    pub instance_uuid: Option<&'a str>,
}

/// Sets `instanceUuid` in an import spec's `configSpec`, in the WSDL's element order (after
/// `changeVersion`, `name`, `version`, `createDate` and `uuid`).
fn with_instance_uuid(spec: &Node, uuid: &str) -> Node {
    let mut spec = spec.clone();
    if let Some(config) = spec.children.iter_mut().find(|c| c.name == "configSpec") {
        config.children.retain(|c| c.name != "instanceUuid");
        let at = config
            .children
            .iter()
            .rposition(|c| {
                matches!(
                    c.name.as_str(),
                    "changeVersion" | "name" | "version" | "createDate" | "uuid"
                )
            })
            .map_or(0, |i| i + 1);
        config.children.insert(
            at,
            Node {
                name: "instanceUuid".to_string(),
                xsi_type: None,
                attrs: Vec::new(),
                text: uuid.to_string(),
                children: Vec::new(),
            },
        );
    }
    spec
}

impl Client {
    /// Deploys `source` as a new VM; returns it.
    pub async fn deploy_ovf(
        self: &Arc<Self>,
        source: &OvfSource,
        at: &OvfTarget<'_>,
        timeout: Duration,
    ) -> Result<ManagedObjectReference> {
        let manager =
            self.service_content().ovf_manager.clone().ok_or_else(|| {
                Error::new(ErrorKind::NotVsphere, "the endpoint has no OVF manager")
            })?;
        let args = |w: &mut RequestWriter| {
            w.text("ovfDescriptor", &source.descriptor)
                .moref("resourcePool", at.pool)
                .moref("datastore", at.datastore);
            w.start("cisp", None)
                .text("locale", "")
                .text("deploymentOption", "")
                .text("entityName", at.name)
                .end("cisp");
        };
        let result = self
            .call(&NodeCall {
                name: "CreateImportSpec",
                this: &manager,
                args: &args,
                idempotent: false,
            })
            .await?
            .ok_or_else(|| Error::new(ErrorKind::Decode, "CreateImportSpec returned nothing"))?;
        if let Some(err) = result.child("error") {
            let msg = err
                .text_of("localizedMessage")
                .unwrap_or("the descriptor is not usable");
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("the OVF descriptor cannot be imported: {msg}"),
            ));
        }
        let spec = result.child("importSpec").ok_or_else(|| {
            Error::new(
                ErrorKind::Decode,
                "CreateImportSpec returned no import spec",
            )
        })?;
        let items: Vec<(String, String)> = result
            .children_named("fileItem")
            .filter_map(|f| {
                Some((
                    f.text_of("deviceId")?.to_string(),
                    f.text_of("path")?.to_string(),
                ))
            })
            .collect();
        let spec = match at.instance_uuid {
            Some(uuid) => with_instance_uuid(spec, uuid),
            None => spec.clone(),
        };
        let import = |w: &mut RequestWriter| {
            w.node("spec", &spec).moref("folder", at.folder);
            if let Some(h) = at.host {
                w.moref("host", h);
            }
        };
        let lease = self
            .call(&NodeCall {
                name: "ImportVApp",
                this: at.pool,
                args: &import,
                idempotent: false,
            })
            .await?
            .and_then(|n| n.as_moref())
            .ok_or_else(|| Error::new(ErrorKind::Decode, "ImportVApp returned no lease"))?;
        match self.fill_lease(&lease, source, &items, timeout).await {
            Ok(vm) => {
                self.call(&PlainCall {
                    name: "HttpNfcLeaseComplete",
                    this: &lease,
                    args: &|_| {},
                })
                .await?;
                Ok(vm)
            }
            Err(e) => {
                let _ = self
                    .call(&PlainCall {
                        name: "HttpNfcLeaseAbort",
                        this: &lease,
                        args: &|_| {},
                    })
                    .await;
                Err(e)
            }
        }
    }

    /// Waits for the lease to be ready and uploads every file item to its URL.
    async fn fill_lease(
        &self,
        lease: &ManagedObjectReference,
        source: &OvfSource,
        items: &[(String, String)],
        timeout: Duration,
    ) -> Result<ManagedObjectReference> {
        let started = std::time::Instant::now();
        let info = loop {
            let o = self.properties(lease, &["state", "info", "error"]).await?;
            match o.text("state") {
                Some("ready") => break o.get("info").cloned().unwrap_or_default(),
                Some("error") => {
                    let msg = o
                        .get("error")
                        .and_then(|e| e.text_of("localizedMessage"))
                        .unwrap_or("the lease failed")
                        .to_string();
                    return Err(Error::new(ErrorKind::Task, msg));
                }
                _ if started.elapsed() > timeout => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        "the import lease never became ready",
                    ))
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        let vm = info
            .moref_of("entity")
            .ok_or_else(|| Error::new(ErrorKind::Decode, "the lease names no VM"))?;
        let host = self.url().host_str().unwrap_or("localhost").to_string();
        for (device, path) in items {
            let url = info
                .children_named("deviceUrl")
                .find(|d| d.text_of("importKey") == Some(device.as_str()))
                .and_then(|d| d.text_of("url"))
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Decode,
                        format!("the lease has no upload URL for {device}"),
                    )
                })?;
            let mut url = url::Url::parse(&url.replace("://*", &format!("://{host}")))
                .map_err(|e| Error::new(ErrorKind::Decode, format!("bad lease URL: {e}")))?;
            // The lease URL uses https; follow the endpoint's scheme and port (simulators, proxies).
            let _ = url.set_scheme(self.url().scheme());
            let _ = url.set_port(self.url().port());
            let file_path = source.dir.join(path);
            let file = tokio::fs::File::open(&file_path)
                .await
                .map_err(|e| io_error("open", &file_path, e))?;
            let len = file
                .metadata()
                .await
                .map_err(|e| io_error("stat", &file_path, e))?
                .len();
            let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
            let transport = self.transport();
            let resp = transport
                .authed(
                    transport
                        .http()
                        .put(url.clone())
                        .timeout(transport.timeout()),
                )
                .header(CONTENT_LENGTH, len)
                .header("Content-Type", "application/x-vnd.vmware-streamVmdk")
                .body(body)
                .send()
                .await
                .map_err(|e| transport.error(e))?;
            if !resp.status().is_success() {
                return Err(Error::new(
                    ErrorKind::Transport,
                    format!(
                        "upload of {path} to the import lease failed: HTTP {}",
                        resp.status()
                    ),
                ));
            }
        }
        Ok(vm)
    }
}
