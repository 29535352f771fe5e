//! Deploying an OVF or OVA: the server turns the descriptor into an import spec
//! (`OvfManager.CreateImportSpec`), `ResourcePool.ImportVApp` creates the VM and an
//! `HttpNfcLease`, the disk files are streamed to the lease's URLs, and the lease is completed
//! (or aborted on any failure, which removes the half-made VM).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::CONTENT_LENGTH;

use super::client::Client;
use super::envelope::RequestWriter;
use super::error::{Error, ErrorKind, Result};
use super::methods::{NodeCall, PlainCall};
use super::transfer::{host_of, send_upload, GuardedDownload, Moved, TransferName};
use super::types::ManagedObjectReference;
use super::xml::{parse_fragment, Node};

/// Where a VM comes from: an `.ovf` (its files beside it) or an `.ova` archive, on this machine.
#[derive(Debug)]
pub struct OvfSource {
    /// The descriptor's text.
    pub descriptor: String,
    /// Where the files the descriptor refers to are.
    files: PackageFiles,
    /// The private temporary directory of a download, removed on drop.
    _scratch: Option<tempfile::TempDir>,
}

/// Where a package's files are.
#[derive(Debug)]
enum PackageFiles {
    /// Beside the descriptor, in this directory.
    Dir(PathBuf),
    /// Inside this tar archive, never unpacked: each member's bytes, by its path in the
    /// archive, are read where they lie.
    Archive {
        path: PathBuf,
        members: HashMap<PathBuf, FileSpan>,
    },
}

/// A package file's bytes: `len` bytes at `offset` of the file at `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpan {
    /// The file holding them (the `.ova` archive, or the file itself).
    pub path: PathBuf,
    /// Where they start.
    pub offset: u64,
    /// How many.
    pub len: u64,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        format!("cannot {what} {}: {e}", path.display()),
    )
}

/// A private temporary directory (random name, mode 0700) for a package.
fn scratch_dir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| io_error("create a temporary directory for", Path::new(prefix), e))
}

/// A file a package's descriptor refers to, as a path inside the package: it must be relative
/// and stay inside (no scheme, no leading `/`, no `..`), so a descriptor can never make ceso
/// read or fetch anything else.
pub fn package_path(href: &str) -> Result<PathBuf> {
    let refused = |why: &str| {
        Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "the OVF descriptor refers to {href:?}, {why}: file references must be paths relative to the package"
            ),
        )
    };
    if href.contains("://") || href.starts_with("file:") {
        return Err(refused("a URL"));
    }
    let path = Path::new(href);
    let mut clean = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::Normal(p) => clean.push(p),
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => return Err(refused("which leaves the package")),
            std::path::Component::RootDir | std::path::Component::Prefix(_) => {
                return Err(refused("an absolute path"))
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(refused("which names no file"));
    }
    Ok(clean)
}

impl OvfSource {
    /// Opens `path`: an `.ovf` file (its files beside it), or an `.ova` (tar) archive, whose
    /// members are read where they lie (only a GNU sparse member is unpacked).
    pub fn open(path: &Path) -> Result<Self> {
        let is_ova = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("ova"));
        if !is_ova {
            let descriptor =
                std::fs::read_to_string(path).map_err(|e| io_error("read", path, e))?;
            return Ok(Self {
                descriptor,
                files: PackageFiles::Dir(path.parent().map(Path::to_path_buf).unwrap_or_default()),
                _scratch: None,
            });
        }
        Self::index_archive(path, None)
    }

    /// Lists the OVA at `path` (member paths and where their bytes lie, seeking past them)
    /// and reads its descriptor, the first `.ovf` member.
    fn index_archive(path: &Path, mut scratch: Option<tempfile::TempDir>) -> Result<Self> {
        let unreadable = |e| io_error("read the OVA archive", path, e);
        let file = std::fs::File::open(path).map_err(|e| io_error("open", path, e))?;
        let mut archive = tar::Archive::new(file);
        let mut members = HashMap::new();
        let mut descriptor = None;
        for entry in archive.entries_with_seek().map_err(unreadable)? {
            let mut entry = entry.map_err(unreadable)?;
            let kind = entry.header().entry_type();
            if !kind.is_file() && !kind.is_gnu_sparse() {
                continue;
            }
            let name = entry.path().map_err(unreadable)?;
            // Members that could not be referred to are never read.
            let Some(inside) = name.to_str().and_then(|n| package_path(n).ok()) else {
                continue;
            };
            let is_ovf = inside
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("ovf"));
            if is_ovf && descriptor.is_none() {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut entry, &mut text).map_err(unreadable)?;
                descriptor = Some(text);
                continue;
            }
            let span = if kind.is_gnu_sparse() {
                // A sparse member's bytes do not lie in one piece in the archive (GNU tar
                // `--sparse`, the tar crate's default): that member alone is unpacked.
                let dir = match &scratch {
                    Some(dir) => dir,
                    None => scratch.insert(scratch_dir("ceso-ova-")?),
                };
                let to = dir.path().join(format!("member-{}", members.len()));
                entry.unpack(&to).map_err(unreadable)?;
                let len = std::fs::metadata(&to)
                    .map_err(|e| io_error("stat", &to, e))?
                    .len();
                FileSpan {
                    path: to,
                    offset: 0,
                    len,
                }
            } else {
                FileSpan {
                    path: path.to_path_buf(),
                    offset: entry.raw_file_position(),
                    len: entry.size(),
                }
            };
            members.insert(inside, span);
        }
        let descriptor = descriptor.ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("{} holds no .ovf descriptor", path.display()),
            )
        })?;
        Ok(Self {
            descriptor,
            files: PackageFiles::Archive {
                path: path.to_path_buf(),
                members,
            },
            _scratch: scratch,
        })
    }

    /// Where the package file the descriptor calls `href` is (it must be a path inside the
    /// package: see [`package_path`]).
    pub async fn locate(&self, href: &str) -> Result<FileSpan> {
        let inside = package_path(href)?;
        match &self.files {
            PackageFiles::Dir(dir) => {
                let path = dir.join(&inside);
                let len = tokio::fs::metadata(&path)
                    .await
                    .map_err(|e| io_error("stat", &path, e))?
                    .len();
                Ok(FileSpan {
                    path,
                    offset: 0,
                    len,
                })
            }
            PackageFiles::Archive { path, members } => {
                members.get(&inside).cloned().ok_or_else(|| {
                    let mut held: Vec<String> =
                        members.keys().map(|p| p.display().to_string()).collect();
                    held.sort();
                    Error::new(
                        ErrorKind::InvalidArgument,
                        format!(
                            "{} holds no file {href:?} (it holds {})",
                            path.display(),
                            held.join(", ")
                        ),
                    )
                })
            }
        }
    }

    /// Downloads a package from an `http(s)://` URL into a private temporary directory
    /// (removed when the source is dropped): an `.ova` as is, or an `.ovf` with every file its
    /// References name (paths relative to the descriptor only). A download fails when no byte
    /// has arrived for `stall`, however long it takes in all.
    pub async fn fetch(url: &str, stall: Duration) -> Result<Self> {
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
        let local_name = package_path(&name)?;
        let scratch = scratch_dir("ceso-ovf-")?;
        let dir = scratch.path().to_path_buf();
        super::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(stall)
            .build()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Transport,
                    format!("cannot build an HTTP client: {e}"),
                )
            })?;
        let local = dir.join(&local_name);
        download_to(&http, &url, &local, stall).await?;
        if !name.to_ascii_lowercase().ends_with(".ovf") {
            return Self::index_archive(&local, Some(scratch));
        }
        let descriptor =
            std::fs::read_to_string(&local).map_err(|e| io_error("read", &local, e))?;
        for href in file_references(&descriptor)? {
            let inside = package_path(&href)?;
            let file_url = url.join(&href).map_err(|e| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    format!("bad file reference {href:?}: {e}"),
                )
            })?;
            let target = dir.join(&inside);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io_error("create", parent, e))?;
            }
            download_to(&http, &file_url, &target, stall).await?;
        }
        Ok(Self {
            descriptor,
            files: PackageFiles::Dir(dir),
            _scratch: Some(scratch),
        })
    }
}

/// The `href`s of a descriptor's References.
fn file_references(descriptor: &str) -> Result<Vec<String>> {
    Ok(parse_fragment(descriptor)?
        .iter()
        .flat_map(|env| env.children_named("References"))
        .flat_map(|r| r.children_named("File"))
        .filter_map(|f| f.attr("href").map(str::to_string))
        .collect())
}

/// Downloads `url` to `to`, failing when no byte has arrived for `stall`.
async fn download_to(
    http: &reqwest::Client,
    url: &url::Url,
    to: &Path,
    stall: Duration,
) -> Result<()> {
    use futures::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let name = TransferName {
        direction: "download",
        file: url.path().to_string(),
        host: host_of(url),
        offset: 0,
        len: None,
    };
    let resp = tokio::time::timeout(stall, http.get(url.clone()).send())
        .await
        .map_err(|_| name.stalled(0, stall))?
        .map_err(|e| Error::new(ErrorKind::Transport, format!("cannot download {url}: {e}")))?;
    if !resp.status().is_success() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("cannot download {url}: HTTP {}", resp.status()),
        ));
    }
    let mut file = tokio::fs::File::create(to)
        .await
        .map_err(|e| io_error("create", to, e))?;
    let moved = Arc::new(Moved::default());
    let mut stream = GuardedDownload::new(Box::pin(resp.bytes_stream()), stall, name, moved);
    while let Some(piece) = stream.next().await {
        file.write_all(&piece?)
            .await
            .map_err(|e| io_error("write", to, e))?;
    }
    file.flush().await.map_err(|e| io_error("write", to, e))?;
    Ok(())
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
                let aborted = self
                    .call(&PlainCall {
                        name: "HttpNfcLeaseAbort",
                        this: &lease,
                        args: &|_| {},
                    })
                    .await;
                match aborted {
                    // The host removes the VM of an aborted lease: nothing was made.
                    Ok(()) if e.outcome_unknown() => Err(Error::new(ErrorKind::Fault, e.message)),
                    _ => Err(e),
                }
            }
        }
    }

    /// Waits for the lease to be ready and uploads every file item to its URL, telling the
    /// lease how far it is at least every [`LEASE_PROGRESS_EVERY`] (a host aborts an import
    /// lease that hears nothing for minutes) and logging progress at INFO.
    async fn fill_lease(
        self: &Arc<Self>,
        lease: &ManagedObjectReference,
        source: &OvfSource,
        items: &[(String, String)],
        timeout: Duration,
    ) -> Result<ManagedObjectReference> {
        let state = self
            .wait_for_properties(lease, &["state"], timeout, |v| {
                matches!(
                    v[0].as_ref().map(|n| n.text.as_str()),
                    Some("ready" | "error" | "done")
                )
            })
            .await?;
        let o = self.properties(lease, &["info", "error"]).await?;
        if state[0].as_ref().map(|n| n.text.as_str()) != Some("ready") {
            let msg = o
                .get("error")
                .and_then(|e| e.text_of("localizedMessage"))
                .unwrap_or("the lease failed")
                .to_string();
            return Err(Error::new(ErrorKind::Task, msg));
        }
        let info = o.get("info").cloned().unwrap_or_default();
        let vm = info
            .moref_of("entity")
            .ok_or_else(|| Error::new(ErrorKind::Decode, "the lease names no VM"))?;
        let host = self.url().host_str().unwrap_or("localhost").to_string();
        let mut uploads = Vec::new();
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
            let span = source.locate(path).await?;
            uploads.push((url, path, span));
        }
        let total: u64 = uploads.iter().map(|u| u.2.len).sum();
        let moved = Arc::new(Moved::default());
        let reporter = {
            let (me, lease, moved) = (Arc::clone(self), lease.clone(), moved.clone());
            tokio::spawn(async move { me.report_lease_progress(&lease, &moved, total).await })
        };
        let sent = self.upload_lease_files(&uploads, &moved).await;
        reporter.abort();
        sent?;
        tracing::info!(bytes = total, "OVF disks uploaded");
        Ok(vm)
    }

    async fn upload_lease_files(
        &self,
        uploads: &[(url::Url, &String, FileSpan)],
        moved: &Arc<Moved>,
    ) -> Result<()> {
        use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
        let transport = self.transport();
        for (url, path, span) in uploads {
            let mut file = tokio::fs::File::open(&span.path)
                .await
                .map_err(|e| io_error("open", &span.path, e))?;
            file.seek(std::io::SeekFrom::Start(span.offset))
                .await
                .map_err(|e| io_error("read", &span.path, e))?;
            let len = &span.len;
            let file = file.take(*len);
            let name = TransferName {
                direction: "upload",
                file: path.to_string(),
                host: host_of(url),
                offset: 0,
                len: Some(*len),
            };
            let request = transport
                .authed(transport.http().put(url.clone()))
                .header(CONTENT_LENGTH, *len)
                .header("Content-Type", "application/x-vnd.vmware-streamVmdk");
            let body = tokio_util::io::ReaderStream::with_capacity(file, 256 << 10);
            let resp =
                send_upload(request, body, transport.timeout(), &name, moved.clone()).await?;
            if !resp.status().is_success() {
                // The host refused the disk: a definite failure, not a lost answer.
                return Err(Error::new(
                    ErrorKind::Fault,
                    format!(
                        "upload of {path} to the import lease failed: HTTP {}",
                        resp.status()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Calls `HttpNfcLeaseProgress` every [`LEASE_PROGRESS_EVERY`] with the share of `total`
    /// bytes moved, and logs it at INFO; runs until aborted.
    async fn report_lease_progress(
        &self,
        lease: &ManagedObjectReference,
        moved: &Moved,
        total: u64,
    ) {
        let mut tick = tokio::time::interval(LEASE_PROGRESS_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            let (done, percent, rate) = moved.progress(total);
            let percent = percent.min(99);
            tracing::info!(
                "deploying OVF: {done} of {total} bytes uploaded ({percent}%), {rate:.0} MB/s"
            );
            let call = PlainCall {
                name: "HttpNfcLeaseProgress",
                this: lease,
                args: &|w: &mut RequestWriter| {
                    w.text("percent", &percent.to_string());
                },
            };
            if let Err(e) = self.call(&call).await {
                tracing::warn!(error = %e, "could not report progress to the import lease");
            }
        }
    }
}

/// How often an import lease hears of the upload's progress (hosts abort a lease that hears
/// nothing for about five minutes; the issue asks for at least every 30 s).
pub const LEASE_PROGRESS_EVERY: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    /// An OVA (tar) at `path` with these members, in order.
    fn write_ova(path: &Path, members: &[(&str, &[u8])]) {
        let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
        for (name, data) in members {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            // set_path refuses `..`; the raw name field takes anything, as a hostile archive would.
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.finish().unwrap();
    }

    fn bytes_of(span: &FileSpan) -> Vec<u8> {
        use std::io::{Read, Seek};
        let mut f = std::fs::File::open(&span.path).unwrap();
        f.seek(std::io::SeekFrom::Start(span.offset)).unwrap();
        let mut out = vec![0; span.len as usize];
        f.read_exact(&mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn an_ova_is_read_in_place_and_only_its_package_files_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let ova = dir.path().join("app.ova");
        let disk: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        write_ova(
            &ova,
            &[
                ("app.ovf", b"<Envelope/>"),
                ("./disk-1.vmdk", &disk),
                ("../outside", b"never read"),
                ("app.mf", b"SHA256(disk-1.vmdk)= 00"),
            ],
        );
        let source = OvfSource::open(&ova).unwrap();
        assert_eq!(source.descriptor, "<Envelope/>");
        let span = source.locate("disk-1.vmdk").await.unwrap();
        assert_eq!(span.path, ova, "read from the archive itself");
        assert_eq!(bytes_of(&span), disk);
        assert_eq!(
            bytes_of(&source.locate("./app.mf").await.unwrap()),
            b"SHA256(disk-1.vmdk)= 00"
        );
        let missing = source.locate("disk-2.vmdk").await.unwrap_err();
        assert!(
            missing.message.contains("holds no file \"disk-2.vmdk\""),
            "{missing}"
        );
        let escape = source.locate("../outside").await.unwrap_err();
        assert!(escape.message.contains("leaves the package"), "{escape}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing was unpacked"
        );
    }

    #[tokio::test]
    async fn an_ova_made_by_tar_builder_from_files_sparse_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let (ovf, disk) = (dir.path().join("a.ovf"), dir.path().join("d.vmdk"));
        let descriptor = format!("<Envelope>{}</Envelope>", " ".repeat(2000));
        std::fs::write(&ovf, &descriptor).unwrap();
        std::fs::write(&disk, vec![7u8; 3 << 20]).unwrap();
        // A file with holes, which the builder stores as a GNU sparse member.
        let holes = dir.path().join("holes.vmdk");
        let mut with_holes = vec![0u8; 8 << 20];
        with_holes[(6 << 20)..(6 << 20) + 5].copy_from_slice(b"ceso!");
        {
            use std::io::{Seek, Write};
            let mut f = std::fs::File::create(&holes).unwrap();
            f.set_len(8 << 20).unwrap();
            f.seek(std::io::SeekFrom::Start(6 << 20)).unwrap();
            f.write_all(b"ceso!").unwrap();
        }
        let ova = dir.path().join("a.ova");
        let mut tar = tar::Builder::new(std::fs::File::create(&ova).unwrap());
        tar.append_path_with_name(&ovf, "tiny.ovf").unwrap();
        tar.append_path_with_name(&disk, "disk1.vmdk").unwrap();
        tar.append_path_with_name(&holes, "disk2.vmdk").unwrap();
        tar.finish().unwrap();
        drop(tar);
        let source = OvfSource::open(&ova).unwrap();
        assert_eq!(source.descriptor, descriptor);
        let span = source.locate("disk1.vmdk").await.unwrap();
        assert_eq!((span.path.as_path(), span.len), (ova.as_path(), 3 << 20));
        assert_eq!(bytes_of(&span), vec![7u8; 3 << 20]);
        let sparse = source.locate("disk2.vmdk").await.unwrap();
        assert_ne!(sparse.path, ova, "a sparse member is unpacked");
        assert_eq!(bytes_of(&sparse), with_holes);
    }

    #[tokio::test]
    async fn an_ova_without_a_descriptor_and_an_ovf_beside_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let ova = dir.path().join("empty.ova");
        write_ova(&ova, &[("disk.vmdk", b"data")]);
        let err = OvfSource::open(&ova).unwrap_err();
        assert!(err.message.contains("holds no .ovf descriptor"), "{err}");

        let ovf = dir.path().join("plain.ovf");
        std::fs::write(&ovf, "<Envelope/>").unwrap();
        std::fs::write(dir.path().join("disk.vmdk"), b"12345").unwrap();
        let source = OvfSource::open(&ovf).unwrap();
        let span = source.locate("disk.vmdk").await.unwrap();
        assert_eq!((span.offset, span.len), (0, 5));
        assert_eq!(bytes_of(&span), b"12345");
    }
}
