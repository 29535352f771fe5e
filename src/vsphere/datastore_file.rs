//! Datastore files over HTTPS (`/folder/PATH?dcPath=DC&dsName=DS`): streamed download with
//! byte ranges, streamed upload, delete; the session cookie authenticates. Used by backup,
//! restore and uploads.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{CONTENT_LENGTH, RANGE};
use url::Url;

use super::client::Client;
use super::error::{Error, ErrorKind, Result};
use super::methods::DeleteDatastoreFileTask;
use super::transfer::{host_of, send_upload, GuardedDownload, Moved, TransferName};
use tokio_util::sync::CancellationToken;

/// A file on a datastore, e.g. `[datastore1] web-01/web-01-flat.vmdk` in datacenter `ha-datacenter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatastoreFile {
    /// Datacenter name (`ha-datacenter` on a standalone ESXi host).
    pub datacenter: String,
    /// Datastore name.
    pub datastore: String,
    /// Path inside the datastore.
    pub path: String,
}

impl DatastoreFile {
    /// Parses vSphere's `[datastore] path` notation.
    pub fn parse(datacenter: &str, text: &str) -> Result<Self> {
        let bad = || {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("{text:?} is not a datastore path like \"[datastore1] dir/file\""),
            )
        };
        let rest = text.trim().strip_prefix('[').ok_or_else(bad)?;
        let (ds, path) = rest.split_once(']').ok_or_else(bad)?;
        if ds.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            datacenter: datacenter.to_string(),
            datastore: ds.to_string(),
            path: path.trim().to_string(),
        })
    }

    /// The `[datastore] path` notation.
    pub fn display_path(&self) -> String {
        format!("[{}] {}", self.datastore, self.path)
    }

    /// The file's URL on the endpoint whose SDK URL is `sdk`.
    pub fn url(&self, sdk: &Url) -> Url {
        let mut url = sdk.clone();
        url.set_path(&format!("/folder/{}", self.path.trim_start_matches('/')));
        url.query_pairs_mut()
            .clear()
            .append_pair("dcPath", &self.datacenter)
            .append_pair("dsName", &self.datastore);
        url
    }
}

fn http_error(file: &DatastoreFile, what: &str, status: reqwest::StatusCode) -> Error {
    let kind = match status.as_u16() {
        404 => ErrorKind::NotFound,
        401 => ErrorKind::Auth,
        403 => ErrorKind::Permission,
        _ => ErrorKind::Transport,
    };
    Error::new(
        kind,
        format!("{what} {} failed: HTTP {status}", file.display_path()),
    )
}

impl Client {
    /// Streams a file's bytes (all, or `range`), without holding it in memory. There is no
    /// limit on the whole transfer; it fails when no byte has arrived for the API timeout.
    pub async fn download(
        &self,
        file: &DatastoreFile,
        range: Option<Range<u64>>,
    ) -> Result<impl Stream<Item = Result<Bytes>> + use<>> {
        let transport = self.transport();
        let url = file.url(transport.url());
        let name = TransferName {
            direction: "download",
            file: file.display_path(),
            host: host_of(&url),
            offset: range.as_ref().map_or(0, |r| r.start),
            len: range.as_ref().map(|r| r.end - r.start),
        };
        let mut req = transport.authed(transport.http().get(url));
        if let Some(r) = &range {
            if r.is_empty() {
                return Err(Error::new(ErrorKind::InvalidArgument, "empty byte range"));
            }
            req = req.header(RANGE, format!("bytes={}-{}", r.start, r.end - 1));
        }
        let stall = transport.timeout();
        let resp = tokio::time::timeout(stall, req.send())
            .await
            .map_err(|_| name.stalled(0, stall))?
            .map_err(|e| transport.error(e))?;
        if !resp.status().is_success() {
            return Err(http_error(file, "download of", resp.status()));
        }
        Ok(GuardedDownload::new(
            Box::pin(resp.bytes_stream()),
            stall,
            name,
            Arc::new(Moved::default()),
        ))
    }

    /// Uploads a file from a stream of `len` bytes, replacing any file at that path. There is
    /// no limit on the whole transfer; it fails when the server has taken no byte for the API
    /// timeout.
    pub async fn upload<S>(&self, file: &DatastoreFile, body: S, len: u64) -> Result<()>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static,
    {
        self.upload_counted(file, body, len, Arc::new(Moved::default()))
            .await
    }

    /// [`Client::upload`], counting the bytes the server has taken into `moved` (for progress).
    pub async fn upload_counted<S>(
        &self,
        file: &DatastoreFile,
        body: S,
        len: u64,
        moved: Arc<Moved>,
    ) -> Result<()>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static,
    {
        let transport = self.transport();
        let url = file.url(transport.url());
        let name = TransferName {
            direction: "upload",
            file: file.display_path(),
            host: host_of(&url),
            offset: 0,
            len: Some(len),
        };
        let request = transport
            .authed(transport.http().put(url))
            .header(CONTENT_LENGTH, len);
        let resp = send_upload(request, body, transport.timeout(), &name, moved).await?;
        if !resp.status().is_success() {
            return Err(http_error(file, "upload of", resp.status()));
        }
        Ok(())
    }

    /// `len` bytes of a file, streamed in order as up to `depth` ranged downloads of `window`
    /// bytes at once (memory: at most `depth` windows). Each range is read whole and tried
    /// again twice on transport trouble (reads are idempotent).
    pub fn download_parallel(
        self: &Arc<Self>,
        file: &DatastoreFile,
        len: u64,
        window: u64,
        depth: usize,
    ) -> impl Stream<Item = Result<Bytes>> + Send + use<> {
        let window = window.max(1);
        let ranges =
            (0..len.div_ceil(window)).map(move |i| i * window..((i + 1) * window).min(len));
        let (me, file) = (Arc::clone(self), file.clone());
        futures::stream::iter(ranges)
            .map(move |r| {
                let (me, file) = (me.clone(), file.clone());
                async move { me.download_range(&file, r).await }
            })
            .buffered(depth.max(1))
    }

    /// The bytes of `range` of a file, read whole; transport trouble is tried again twice.
    pub async fn download_range(&self, file: &DatastoreFile, range: Range<u64>) -> Result<Bytes> {
        let mut buf = Vec::with_capacity((range.end - range.start) as usize);
        self.download_range_into(file, range, &mut buf).await?;
        Ok(Bytes::from(buf))
    }

    /// [`Client::download_range`] into `buf` (cleared first), so the caller chooses the
    /// buffer (a pooled one, say).
    pub async fn download_range_into(
        &self,
        file: &DatastoreFile,
        range: Range<u64>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let len = (range.end - range.start) as usize;
        let mut attempt = 0;
        loop {
            attempt += 1;
            buf.clear();
            buf.reserve(len);
            let read = async {
                let mut stream = Box::pin(self.download(file, Some(range.clone())).await?);
                while let Some(piece) = stream.next().await {
                    let piece = piece?;
                    if buf.len() + piece.len() > len {
                        return Err(Error::new(
                            ErrorKind::Decode,
                            format!(
                                "{} sent more than the {len} bytes asked for at {}: the server ignored the byte range",
                                file.display_path(),
                                range.start
                            ),
                        ));
                    }
                    buf.extend_from_slice(&piece);
                }
                if buf.len() < len {
                    return Err(Error::new(
                        ErrorKind::Transport,
                        format!(
                            "{} ended after {} of {len} bytes at {}",
                            file.display_path(),
                            buf.len(),
                            range.start
                        ),
                    ));
                }
                Ok(())
            };
            match read.await {
                Err(e) if e.kind == ErrorKind::Transport && attempt < 3 => {
                    tracing::debug!(file = %file.display_path(), error = %e, attempt, "retrying a ranged read");
                    tokio::time::sleep(std::time::Duration::from_millis(250 * attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// Deletes a file (`FileManager.DeleteDatastoreFile_Task`: the HTTP interface has no
    /// delete on every server); a file already gone is not an error.
    pub async fn delete_file(self: &Arc<Self>, file: &DatastoreFile) -> Result<()> {
        let file_manager =
            self.service_content().file_manager.clone().ok_or_else(|| {
                Error::new(ErrorKind::NotVsphere, "the endpoint has no file manager")
            })?;
        let datacenter = self.find_by_path(&file.datacenter).await.ok();
        let task = self
            .call(&DeleteDatastoreFileTask {
                this: file_manager,
                name: file.display_path(),
                datacenter,
            })
            .await;
        let result = match task {
            Ok(task) => self
                .wait_for_task(&task, None, &CancellationToken::new(), &|_| {})
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        match result {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_builds_urls() {
        let f = DatastoreFile::parse("ha-datacenter", "[datastore1] web/web-flat.vmdk").unwrap();
        assert_eq!(f.datastore, "datastore1");
        assert_eq!(f.path, "web/web-flat.vmdk");
        let url = f.url(&Url::parse("https://esx1/sdk").unwrap());
        assert_eq!(
            url.as_str(),
            "https://esx1/folder/web/web-flat.vmdk?dcPath=ha-datacenter&dsName=datastore1"
        );
        assert!(DatastoreFile::parse("dc", "no brackets").is_err());
        assert!(DatastoreFile::parse("dc", "[] x").is_err());
    }
}
