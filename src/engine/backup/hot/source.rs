//! A disk's flat extent on a datastore as a seekable byte source: fixed windows (the
//! repository's chunk size) fetched with HTTP Range requests, a bounded number ahead of the
//! reader, each window held only until it has been read. Memory is `depth x window` whatever the
//! disk's size; the windows to fetch ahead are given as ranges, so a sparse incremental plan of a
//! huge disk costs no more than its changed areas.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{self, SeekFrom};
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use tokio::task::JoinHandle;

use super::throttle::RateLimiter;
use crate::vsphere::datastore_file::DatastoreFile;
use crate::vsphere::Client;

/// Called with the number of bytes of each window fetched.
pub type OnFetched = Arc<dyn Fn(u64) + Send + Sync>;

/// How a [`DatastoreSource`] fetches.
#[derive(Clone)]
pub struct FetchOptions {
    /// Window size in bytes (the repository's chunk size, so windows are chunks).
    pub window: u64,
    /// Windows fetched ahead of the reader at most.
    pub depth: usize,
    /// Shared read-rate limit.
    pub limiter: Option<Arc<RateLimiter>>,
    /// Counts bytes fetched (shared by every disk of a backup).
    pub fetched: Arc<AtomicU64>,
    /// Progress callback.
    pub on_fetched: Option<OnFetched>,
}

/// Reads `file` (of `capacity` bytes) window by window; see the module doc.
pub struct DatastoreSource {
    client: Arc<Client>,
    file: DatastoreFile,
    capacity: u64,
    options: FetchOptions,
    /// Window indexes expected to be read, ascending, not yet started.
    plan: Vec<Range<u64>>,
    plan_pos: usize,
    inflight: BTreeMap<u64, JoinHandle<io::Result<Bytes>>>,
    current: Option<(u64, Bytes)>,
    pos: u64,
}

impl DatastoreSource {
    /// A source over `file`; `plan` lists the window indexes the reader will visit, ascending
    /// (others are fetched when visited, without read-ahead).
    pub fn new(
        client: Arc<Client>,
        file: DatastoreFile,
        capacity: u64,
        plan: Vec<Range<u64>>,
        options: FetchOptions,
    ) -> Self {
        Self {
            client,
            file,
            capacity,
            options: FetchOptions {
                window: options.window.max(1),
                depth: options.depth.max(1),
                ..options
            },
            plan,
            plan_pos: 0,
            inflight: BTreeMap::new(),
            current: None,
            pos: 0,
        }
    }

    fn windows(&self) -> u64 {
        self.capacity.div_ceil(self.options.window)
    }

    fn start(&mut self, index: u64) {
        if self.inflight.contains_key(&index) || index >= self.windows() {
            return;
        }
        let start = index * self.options.window;
        let end = (start + self.options.window).min(self.capacity);
        let client = self.client.clone();
        let file = self.file.clone();
        let options = self.options.clone();
        let task = tokio::spawn(async move { fetch(client, file, start..end, options).await });
        self.inflight.insert(index, task);
    }

    /// Forgets windows before `index` and starts read-ahead up to the depth.
    fn top_up(&mut self, index: u64) {
        let stale: Vec<u64> = self.inflight.range(..index).map(|(k, _)| *k).collect();
        for k in stale {
            if let Some(task) = self.inflight.remove(&k) {
                task.abort();
            }
        }
        while self.inflight.len() < self.options.depth {
            let Some(range) = self.plan.get_mut(self.plan_pos) else {
                break;
            };
            if range.start < index {
                range.start = index.min(range.end);
            }
            if range.is_empty() {
                self.plan_pos += 1;
                continue;
            }
            let next = range.start;
            range.start += 1;
            self.start(next);
        }
    }
}

impl Drop for DatastoreSource {
    fn drop(&mut self) {
        for task in self.inflight.values() {
            task.abort();
        }
    }
}

async fn fetch(
    client: Arc<Client>,
    file: DatastoreFile,
    range: Range<u64>,
    options: FetchOptions,
) -> io::Result<Bytes> {
    let len = range.end - range.start;
    if let Some(limiter) = &options.limiter {
        limiter.acquire(len).await;
    }
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match fetch_once(&client, &file, range.clone()).await {
            Ok(data) => {
                options.fetched.fetch_add(len, Ordering::Relaxed);
                if let Some(cb) = &options.on_fetched {
                    cb(len);
                }
                return Ok(data);
            }
            // Reads are idempotent: retry transport trouble twice, with a pause.
            Err(e) if attempt < 3 && e.kind() != io::ErrorKind::InvalidData => {
                tracing::debug!(file = %file.display_path(), error = %e, attempt, "retrying a ranged read");
                tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn fetch_once(client: &Client, file: &DatastoreFile, range: Range<u64>) -> io::Result<Bytes> {
    let len = (range.end - range.start) as usize;
    let at = range.start;
    let stream = client
        .download(file, Some(range))
        .await
        .map_err(|e| io::Error::other(format!("reading {} at {at}: {e}", file.display_path())))?;
    futures::pin_mut!(stream);
    let mut buf = BytesMut::with_capacity(len);
    while let Some(piece) = stream
        .try_next()
        .await
        .map_err(|e| io::Error::other(format!("reading {} at {at}: {e}", file.display_path())))?
    {
        if buf.len() + piece.len() > len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} sent more than the {len} bytes asked for at {at}: the server ignored the byte range",
                    file.display_path()
                ),
            ));
        }
        buf.extend_from_slice(&piece);
    }
    if buf.len() < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{} ended after {} of {len} bytes at {at}",
                file.display_path(),
                buf.len()
            ),
        ));
    }
    Ok(buf.freeze())
}

impl AsyncRead for DatastoreSource {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos >= this.capacity || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let index = this.pos / this.options.window;
        if this.current.as_ref().is_none_or(|(i, _)| *i != index) {
            this.current = None;
            this.start(index);
            this.top_up(index);
            let Some(task) = this.inflight.get_mut(&index) else {
                return Poll::Ready(Err(io::Error::other("read-ahead lost a window")));
            };
            let data = match Pin::new(task).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Ok(data))) => data,
                Poll::Ready(Ok(Err(e))) => {
                    this.inflight.remove(&index);
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Err(join)) => {
                    this.inflight.remove(&index);
                    return Poll::Ready(Err(io::Error::other(join)));
                }
            };
            this.inflight.remove(&index);
            this.current = Some((index, data));
            this.top_up(index + 1);
        }
        let Some((_, data)) = &this.current else {
            return Poll::Ready(Err(io::Error::other("no current window")));
        };
        let offset = (this.pos - index * this.options.window) as usize;
        let n = (data.len() - offset).min(buf.remaining());
        buf.put_slice(&data[offset..offset + n]);
        this.pos += n as u64;
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for DatastoreSource {
    fn start_seek(mut self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let target = match position {
            SeekFrom::Start(t) => Some(t),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.capacity.checked_add_signed(d),
        };
        self.pos = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(self.pos))
    }
}

/// The window indexes (of `window` bytes) that `areas` (offset, length) touch, as merged
/// ascending ranges.
pub fn windows_touched(areas: &[(u64, u64)], window: u64) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    let mut sorted: Vec<(u64, u64)> = areas.iter().copied().filter(|a| a.1 > 0).collect();
    sorted.sort_unstable();
    for (start, len) in sorted {
        let first = start / window;
        let last = (start + len - 1) / window;
        match out.last_mut() {
            Some(r) if first <= r.end => r.end = r.end.max(last + 1),
            _ => out.push(first..last + 1),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touched_windows_merge() {
        assert_eq!(
            windows_touched(
                &[(10, 5), (0, 1), (4096, 1), (5 * 4096, 10000), (3 * 4096, 0)],
                4096
            ),
            vec![0..2, 5..8]
        );
        assert!(windows_touched(&[], 4096).is_empty());
    }
}
