//! Byte transfers with an endpoint (datastore files, import-lease disks): no total time limit,
//! however large the file, but a stall limit: a transfer fails when no byte has moved for the
//! API timeout, with an error that names the file, the byte offset and the host. Bytes moved
//! are counted as they move, for progress reports.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::error::{Error, ErrorKind, Result};

/// Bytes a transfer has moved, and when it last moved any.
#[derive(Debug)]
pub struct Moved {
    bytes: AtomicU64,
    started: Instant,
    /// Milliseconds after `started` when a byte last moved.
    last_ms: AtomicU64,
}

impl Default for Moved {
    fn default() -> Self {
        Self {
            bytes: AtomicU64::new(0),
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Moved {
    /// Counts `n` bytes moved now.
    pub fn add(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Bytes moved so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// How long since a byte last moved (or since the start).
    pub fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Progress towards `total` bytes: bytes moved, their percentage, and the mean rate
    /// since the start in MB/s, for progress reports.
    pub fn progress(&self, total: u64) -> (u64, u64, f64) {
        let done = self.bytes();
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(0.001) / 1e6;
        (done, done.saturating_mul(100) / total.max(1), rate)
    }
}

/// What a transfer moves, for its error messages.
#[derive(Debug, Clone)]
pub struct TransferName {
    /// `upload` or `download`.
    pub direction: &'static str,
    /// The file, e.g. `[datastore1] web/web-flat.vmdk`.
    pub file: String,
    /// The host it moves to or from (`host:port`).
    pub host: String,
    /// Where in the file the transfer starts.
    pub offset: u64,
    /// The bytes it should move, when known.
    pub len: Option<u64>,
}

impl TransferName {
    /// The error of a transfer that moved nothing for `stall`, after `moved` bytes.
    pub fn stalled(&self, moved: u64, stall: Duration) -> Error {
        let at = self.offset + moved;
        let of = self
            .len
            .map(|l| format!(" of {}", self.offset + l))
            .unwrap_or_default();
        Error::new(
            ErrorKind::Timeout,
            format!(
                "the {} of {} with {} stalled at byte {at}{of}: no byte moved for {stall:?}",
                self.direction, self.file, self.host,
            ),
        )
    }

    /// The error of a transfer the connection failed under, after `moved` bytes.
    pub fn broken(&self, moved: u64, cause: impl std::fmt::Display) -> Error {
        Error::new(
            ErrorKind::Transport,
            format!(
                "the {} of {} with {} failed at byte {}: {cause}",
                self.direction,
                self.file,
                self.host,
                self.offset + moved
            ),
        )
    }
}

/// A download's body with a stall limit: each piece must arrive within `stall` of the last.
pub struct GuardedDownload<S> {
    inner: S,
    stall: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    name: TransferName,
    moved: Arc<Moved>,
    done: bool,
}

impl<S> GuardedDownload<S> {
    /// Guards `inner`, counting into `moved`.
    pub fn new(inner: S, stall: Duration, name: TransferName, moved: Arc<Moved>) -> Self {
        Self {
            inner,
            stall,
            timer: Box::pin(tokio::time::sleep(stall)),
            name,
            moved,
            done: false,
        }
    }
}

impl<S, E> Stream for GuardedDownload<S>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(piece))) => {
                this.moved.add(piece.len() as u64);
                let next = tokio::time::Instant::now() + this.stall;
                this.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(piece)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(this.name.broken(this.moved.bytes(), e))))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.done = true;
                    Poll::Ready(Some(Err(this.name.stalled(this.moved.bytes(), this.stall))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

use std::future::Future;

/// Sends an upload whose body streams from `body`, failing when the server has taken no byte
/// for `stall` (and, once it has every byte, when it has not answered within `stall`). The
/// bytes taken are counted into `moved`.
pub async fn send_upload<S>(
    request: reqwest::RequestBuilder,
    body: S,
    stall: Duration,
    name: &TransferName,
    moved: Arc<Moved>,
) -> Result<reqwest::Response>
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static,
{
    let counter = moved.clone();
    let counted = body.map(move |piece| {
        if let Ok(p) = &piece {
            counter.add(p.len() as u64);
        }
        piece
    });
    let send = request.body(reqwest::Body::wrap_stream(counted)).send();
    tokio::pin!(send);
    let check = (stall / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(check);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            sent = &mut send => {
                return sent.map_err(|e| {
                    if e.is_timeout() {
                        name.stalled(moved.bytes(), stall)
                    } else {
                        name.broken(moved.bytes(), error_chain(&e))
                    }
                })
            }
            _ = tick.tick() => {
                if moved.idle() >= stall {
                    return Err(name.stalled(moved.bytes(), stall));
                }
            }
        }
    }
}

/// An error with its causes, for messages.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// `host:port` of a URL, for messages.
pub fn host_of(url: &url::Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> TransferName {
        TransferName {
            direction: "download",
            file: "[ds] vm/vm-flat.vmdk".into(),
            host: "127.0.0.1:443".into(),
            offset: 1024,
            len: Some(4096),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_download_that_stops_fails_naming_file_offset_and_host() {
        let pieces =
            futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b"abcd"))])
                .chain(futures::stream::pending());
        let moved = Arc::new(Moved::default());
        let mut guarded =
            GuardedDownload::new(pieces, Duration::from_secs(5), name(), moved.clone());
        assert_eq!(guarded.next().await.unwrap().unwrap().len(), 4);
        let e = guarded.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert!(e.message.contains("[ds] vm/vm-flat.vmdk"), "{}", e.message);
        assert!(e.message.contains("127.0.0.1:443"), "{}", e.message);
        assert!(e.message.contains("byte 1028 of 5120"), "{}", e.message);
        assert!(guarded.next().await.is_none());
        assert_eq!(moved.bytes(), 4);
    }

    /// A server that reads the request head and `take` body bytes, then stops reading and
    /// keeps the connection open.
    async fn stalling_server(take: usize) -> std::net::SocketAddr {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 64 << 10];
            let mut got = 0usize;
            while got < take {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got += n,
                }
            }
            tokio::time::sleep(Duration::from_secs(600)).await;
            drop(conn);
        });
        addr
    }

    #[tokio::test]
    async fn an_upload_the_server_stops_reading_fails_after_the_stall_limit() {
        let addr = stalling_server(1 << 20).await;
        let len: u64 = 256 << 20;
        let body = futures::stream::iter(
            (0..len / (1 << 20)).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![7u8; 1 << 20]))),
        );
        let request = reqwest::Client::new()
            .put(format!("http://{addr}/folder/x-flat.vmdk"))
            .header(reqwest::header::CONTENT_LENGTH, len);
        let name = TransferName {
            direction: "upload",
            file: "[ds] x-flat.vmdk".into(),
            host: addr.to_string(),
            offset: 0,
            len: Some(len),
        };
        let moved = Arc::new(Moved::default());
        let started = Instant::now();
        let e = send_upload(request, body, Duration::from_secs(1), &name, moved.clone())
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
        assert!(e.message.contains("stalled at byte"), "{}", e.message);
        assert!(
            took < Duration::from_secs(5),
            "stall noticed after {took:?}"
        );
        assert!(
            moved.bytes() < len,
            "it stopped part-way: {}",
            moved.bytes()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_download_that_keeps_moving_never_times_out() {
        let pieces = futures::stream::iter(0..10).then(|_| async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            Ok::<_, std::io::Error>(Bytes::from_static(b"x"))
        });
        let moved = Arc::new(Moved::default());
        let guarded = GuardedDownload::new(
            Box::pin(pieces),
            Duration::from_secs(5),
            name(),
            moved.clone(),
        );
        let all: Vec<_> = guarded.collect().await;
        assert_eq!(all.len(), 10, "40 s in all, never 5 s without a byte");
        assert!(all.iter().all(|p| p.is_ok()));
    }
}
