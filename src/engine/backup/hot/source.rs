//! A disk's flat extent on a datastore as a seekable byte source. The areas to read are given
//! as ranges of windows (the repository's chunk size, or its patch grain); each run of planned
//! windows within one chunk is fetched as one HTTP Range request (a span), a bounded number of
//! bytes ahead of the reader, and held only until it has been read. A span that is a whole
//! chunk goes to the chunk writer without a copy, in a pooled buffer. Memory is the read-ahead
//! budget plus one span whatever the disk's size, and a sparse plan of a huge disk costs no
//! more than its areas.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{self, SeekFrom};
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use tokio::task::JoinHandle;

use super::throttle::RateLimiter;
use crate::engine::backup::buffers::BufferPool;
use crate::engine::backup::write::DiskSource;
use crate::vsphere::datastore_file::DatastoreFile;
use crate::vsphere::Client;

/// Called with the number of bytes of each span fetched.
pub type OnFetched = Arc<dyn Fn(u64) + Send + Sync>;

/// How a [`DatastoreSource`] fetches.
#[derive(Clone)]
pub struct FetchOptions {
    /// The unit areas are planned in, and read in when a read falls outside the plan.
    pub window: u64,
    /// The most one request fetches (the repository's chunk size; spans never cross a
    /// multiple of it). A multiple of `window`.
    pub span: u64,
    /// Bytes fetched ahead of the reader at most (at least one span is always in flight).
    pub ahead: u64,
    /// Shared read-rate limit.
    pub limiter: Option<Arc<RateLimiter>>,
    /// Counts bytes fetched (shared by every disk of a backup).
    pub fetched: Arc<AtomicU64>,
    /// Progress callback.
    pub on_fetched: Option<OnFetched>,
    /// Where span buffers come from (at least `span` bytes each), and go back to once read.
    pub buffers: Arc<BufferPool>,
}

/// A fetch in flight: the end of its span, and the task.
type Inflight = (u64, JoinHandle<io::Result<Bytes>>);

/// Reads `file` (of `capacity` bytes) span by span; see the module doc.
pub struct DatastoreSource {
    client: Arc<Client>,
    file: DatastoreFile,
    capacity: u64,
    options: FetchOptions,
    /// The byte ranges the reader will visit, ascending, each within one `span` unit.
    spans: Vec<Range<u64>>,
    /// The first span not yet started.
    next: usize,
    /// Fetches by their span's start.
    inflight: BTreeMap<u64, Inflight>,
    current: Option<(Range<u64>, Bytes)>,
    pos: u64,
}

impl DatastoreSource {
    /// A source over `file`; `plan` lists the window indexes the reader will visit, ascending
    /// (others are fetched a window at a time when visited, without read-ahead).
    pub fn new(
        client: Arc<Client>,
        file: DatastoreFile,
        capacity: u64,
        plan: Vec<Range<u64>>,
        options: FetchOptions,
    ) -> Self {
        let window = options.window.max(1);
        let span = options.span.max(window);
        let spans = plan_spans(&plan, window, span, capacity);
        Self {
            client,
            file,
            capacity,
            options: FetchOptions {
                window,
                span,
                ..options
            },
            spans,
            next: 0,
            inflight: BTreeMap::new(),
            current: None,
            pos: 0,
        }
    }

    /// The planned span holding byte `at`, else the window holding it.
    fn span_at(&self, at: u64) -> Range<u64> {
        let i = self.spans.partition_point(|s| s.end <= at);
        match self.spans.get(i) {
            Some(span) if span.start <= at => span.clone(),
            _ => {
                let start = at - at % self.options.window;
                start..(start + self.options.window).min(self.capacity)
            }
        }
    }

    fn start(&mut self, span: Range<u64>) {
        if self.inflight.contains_key(&span.start) || span.start >= self.capacity {
            return;
        }
        let client = self.client.clone();
        let file = self.file.clone();
        let options = self.options.clone();
        let (start, end) = (span.start, span.end);
        let task = tokio::spawn(async move { fetch(client, file, span, options).await });
        self.inflight.insert(start, (end, task));
    }

    /// Forgets fetches of spans before `from`, and starts planned spans from there on while
    /// the bytes in flight stay within the read-ahead budget (always at least one).
    fn top_up(&mut self, from: u64) {
        let kept = self.inflight.split_off(&from);
        for (_, task) in std::mem::replace(&mut self.inflight, kept).into_values() {
            task.abort();
        }
        while self.spans.get(self.next).is_some_and(|s| s.start < from) {
            self.next += 1;
        }
        let mut ahead: u64 = self
            .inflight
            .iter()
            .map(|(start, (end, _))| end - start)
            .sum();
        while let Some(span) = self.spans.get(self.next).cloned() {
            let len = span.end - span.start;
            if self.inflight.contains_key(&span.start) {
                self.next += 1; // started by the reader itself, and counted already
                continue;
            }
            if !self.inflight.is_empty() && ahead + len > self.options.ahead {
                break;
            }
            self.next += 1;
            ahead += len;
            self.start(span);
        }
    }

    /// `span`, whole: started (with read-ahead after it) unless already in flight.
    fn poll_span(&mut self, cx: &mut Context<'_>, span: &Range<u64>) -> Poll<io::Result<Bytes>> {
        self.start(span.clone());
        self.top_up(span.start);
        let Some((_, task)) = self.inflight.get_mut(&span.start) else {
            return Poll::Ready(Err(io::Error::other("read-ahead lost a span")));
        };
        let done = match ready!(Pin::new(task).poll(cx)) {
            Ok(fetched) => fetched,
            Err(join) => Err(io::Error::other(join)),
        };
        self.inflight.remove(&span.start);
        if done.is_ok() {
            self.top_up(span.end);
        }
        Poll::Ready(done)
    }
}

/// Spans of `plan` (ranges of `window` indexes, ascending): its byte ranges cut at every
/// multiple of `unit`, and at `capacity`.
fn plan_spans(plan: &[Range<u64>], window: u64, unit: u64, capacity: u64) -> Vec<Range<u64>> {
    let mut spans = Vec::new();
    for r in plan {
        let end = r.end.saturating_mul(window).min(capacity);
        let mut at = r.start.saturating_mul(window);
        while at < end {
            let stop = ((at / unit + 1) * unit).min(end);
            spans.push(at..stop);
            at = stop;
        }
    }
    spans
}

impl Drop for DatastoreSource {
    fn drop(&mut self) {
        for (_, task) in self.inflight.values() {
            task.abort();
        }
    }
}

/// Fetches `range` whole into a pooled buffer (the client retries transport trouble), within
/// the rate limit, and counts it.
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
    let mut buf = options.buffers.take_for(len as usize);
    client
        .download_range_into(&file, range, &mut buf)
        .await
        .map_err(io::Error::other)?;
    options.fetched.fetch_add(len, Ordering::Relaxed);
    if let Some(cb) = &options.on_fetched {
        cb(len);
    }
    Ok(buf.freeze())
}

impl DiskSource for DatastoreSource {
    /// Hands a whole span over as fetched, without copying.
    async fn take_exact(&mut self, at: u64, len: u64) -> io::Result<Option<Bytes>> {
        if at >= self.capacity {
            return Ok(None);
        }
        let span = self.span_at(at);
        if span.start != at || span.end - span.start != len {
            return Ok(None);
        }
        self.pos = at;
        let data = match self.current.take() {
            Some((held, data)) if held == span => data,
            _ => std::future::poll_fn(|cx| self.poll_span(cx, &span)).await?,
        };
        self.pos = at + len;
        Ok(Some(data))
    }
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
        let pos = this.pos;
        if !this
            .current
            .as_ref()
            .is_some_and(|(span, _)| span.contains(&pos))
        {
            this.current = None;
            let span = this.span_at(pos);
            let data = ready!(this.poll_span(cx, &span))?;
            this.current = Some((span, data));
        }
        let Some((span, data)) = &this.current else {
            return Poll::Ready(Err(io::Error::other("no current span")));
        };
        let offset = (pos - span.start) as usize;
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
    fn spans_are_planned_runs_cut_at_chunks_and_capacity() {
        // Windows of 10 bytes, chunks of 40, a 95-byte disk.
        assert_eq!(
            plan_spans(&[0..2, 3..9, 9..10], 10, 40, 95),
            vec![0..20, 30..40, 40..80, 80..90, 90..95]
        );
        let whole = plan_spans(&[0..1, 5..5], 40, 40, 10);
        assert_eq!(
            (whole.len(), whole[0].clone()),
            (1, 0..10),
            "capped at the capacity"
        );
        assert!(plan_spans(&[], 10, 40, 95).is_empty());
    }

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
