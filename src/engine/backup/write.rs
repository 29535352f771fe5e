//! Streaming a disk image into chunks with bounded memory and bounded parallelism.
//!
//! The source is read chunk by chunk on the calling task; each chunk read is then hashed (and
//! checked for all zeros) on the blocking pool, looked up, and if new compressed, encrypted and
//! uploaded. At most `parallelism` chunks are in flight, so memory stays near
//! `2 x parallelism x chunk size` whatever the disk's size, and results are placed by chunk
//! index so the manifest's order never depends on completion order.

use std::collections::HashSet;
use std::io::{self, SeekFrom};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures::{stream, TryStreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeek, AsyncSeekExt, ReadBuf};

use super::backend::PutOutcome;
use super::chunk::{chunk_count, chunk_len, is_zero, ChunkId};
use super::envelope::ObjectKind;
use super::error::{Error, Result};
use super::manifest::DiskManifest;
use super::repository::Repository;

/// The disk being backed up.
#[derive(Clone, Debug)]
pub struct DiskInfo {
    /// The disk's label, unique within a backup.
    pub label: String,
    /// Capacity in bytes; the reader must yield exactly this many.
    pub capacity: u64,
    /// The CBT change id the disk is read at (stored for the next incremental).
    pub change_id: Option<String>,
}

enum Job {
    Reused {
        index: usize,
        entry: Option<ChunkId>,
        len: u64,
    },
    Read {
        index: usize,
        data: Vec<u8>,
    },
}

#[derive(Default)]
struct Outcome {
    index: usize,
    entry: Option<ChunkId>,
    read: u64,
    reused: u64,
    zero: u64,
    new: u64,
    stored: u64,
}

/// For each chunk index, the previous backup's entry when it can be reused unread.
fn reuse_plan(
    disk: &DiskInfo,
    chunk_size: u32,
    previous: Option<&DiskManifest>,
    changed: Option<&[(u64, u64)]>,
) -> Result<Vec<Option<Option<ChunkId>>>> {
    let count = usize::try_from(chunk_count(disk.capacity, chunk_size))
        .map_err(|_| Error::InvalidArgument("disk too large".into()))?;
    let mut plan = vec![None; count];
    let (Some(previous), Some(changed)) = (previous, changed) else {
        return Ok(plan);
    };
    if previous.chunk_size != chunk_size {
        return Ok(plan); // a different chunk grid: nothing lines up
    }
    let cs = u64::from(chunk_size);
    let mut touched = vec![false; count];
    for &(offset, len) in changed {
        let end = offset.checked_add(len).filter(|&end| end <= disk.capacity);
        let Some(end) = end else {
            return Err(Error::InvalidArgument(format!(
                "changed area ({offset}, {len}) lies beyond the capacity {}",
                disk.capacity
            )));
        };
        if len > 0 {
            for index in offset / cs..=(end - 1) / cs {
                touched[index as usize] = true;
            }
        }
    }
    for (index, slot) in plan.iter_mut().enumerate() {
        let i = index as u64;
        let same_extent = previous.chunk_len(i) == chunk_len(disk.capacity, chunk_size, i);
        if !touched[index] && index < previous.chunks.len() && same_extent {
            *slot = Some(previous.chunks[index]);
        }
    }
    Ok(plan)
}

/// Reads until `buf` is full or the source ends; returns how much was read.
async fn read_full<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

pub(crate) async fn write_disk<R>(
    repo: &Repository,
    known: &Mutex<HashSet<ChunkId>>,
    disk: DiskInfo,
    reader: R,
    previous: Option<&DiskManifest>,
    changed_areas: Option<Vec<(u64, u64)>>,
) -> Result<DiskManifest>
where
    R: AsyncRead + AsyncSeek + Unpin + Send,
{
    let chunk_size = repo.config.chunk_size;
    let plan = reuse_plan(&disk, chunk_size, previous, changed_areas.as_deref())?;
    let capacity = disk.capacity;
    let plan_ref = &plan;

    let jobs = stream::try_unfold(
        (reader, 0u64, 0usize),
        move |(mut reader, mut pos, index)| async move {
            if index >= plan_ref.len() {
                return Ok(None);
            }
            let len = chunk_len(capacity, chunk_size, index as u64);
            if let Some(entry) = plan_ref[index] {
                let job = Job::Reused { index, entry, len };
                return Ok(Some((job, (reader, pos, index + 1))));
            }
            let offset = index as u64 * u64::from(chunk_size);
            if pos != offset {
                reader
                    .seek(SeekFrom::Start(offset))
                    .await
                    .map_err(|e| Error::io(format!("seeking the disk source to {offset}"), e))?;
                pos = offset;
            }
            let mut data = vec![0u8; len as usize];
            let got = read_full(&mut reader, &mut data)
                .await
                .map_err(|e| Error::io(format!("reading the disk source at {pos}"), e))?;
            if got < data.len() {
                return Err(Error::ShortRead {
                    at: pos + got as u64,
                    capacity,
                });
            }
            pos += len;
            Ok(Some((Job::Read { index, data }, (reader, pos, index + 1))))
        },
    );

    let mut chunks = vec![None; plan.len()];
    let mut manifest = DiskManifest {
        label: disk.label.clone(),
        capacity,
        chunk_size,
        chunks: Vec::new(),
        bytes_read: 0,
        bytes_reused: 0,
        bytes_zero: 0,
        bytes_new: 0,
        bytes_stored: 0,
        change_id: disk.change_id.clone(),
    };
    let outcomes = jobs
        .map_ok(|job| process(repo, known, job))
        .try_buffer_unordered(repo.parallelism);
    futures::pin_mut!(outcomes);
    while let Some(outcome) = outcomes.try_next().await? {
        chunks[outcome.index] = outcome.entry;
        manifest.bytes_read += outcome.read;
        manifest.bytes_reused += outcome.reused;
        manifest.bytes_zero += outcome.zero;
        manifest.bytes_new += outcome.new;
        manifest.bytes_stored += outcome.stored;
    }
    manifest.chunks = chunks;
    Ok(manifest)
}

async fn process(repo: &Repository, known: &Mutex<HashSet<ChunkId>>, job: Job) -> Result<Outcome> {
    let (index, data) = match job {
        Job::Reused { index, entry, len } => {
            return Ok(Outcome {
                index,
                entry,
                reused: len,
                ..Outcome::default()
            })
        }
        Job::Read { index, data } => (index, data),
    };
    let len = data.len() as u64;
    let hasher = repo.hasher.clone();
    let (data, id) = tokio::task::spawn_blocking(move || {
        let id = (!is_zero(&data)).then(|| hasher.id(&data));
        (data, id)
    })
    .await
    .map_err(|e| Error::io("hashing a chunk", io::Error::other(e)))?;
    let mut outcome = Outcome {
        index,
        entry: id,
        read: len,
        ..Outcome::default()
    };
    let Some(id) = id else {
        outcome.zero = len;
        return Ok(outcome);
    };
    if known.lock().expect("not poisoned").contains(&id) {
        return Ok(outcome);
    }
    let key = id.object_key();
    if !repo.backend.exists(&key).await? {
        let codec = repo.codec.clone();
        let stored = tokio::task::spawn_blocking(move || {
            codec.encode(ObjectKind::Chunk, &id.to_string(), &data)
        })
        .await
        .map_err(|e| Error::io("encoding a chunk", io::Error::other(e)))?;
        let size = stored.len() as u64;
        if repo
            .backend
            .put_if_absent(&key, Bytes::from(stored))
            .await?
            == PutOutcome::Created
        {
            outcome.new = len;
            outcome.stored = size;
        }
    }
    known.lock().expect("not poisoned").insert(id);
    Ok(outcome)
}

/// Makes a forward-only stream (a pipe, an HTTP body) seekable forwards by reading and
/// discarding; seeking backwards fails. Use it for sources without random access.
#[derive(Debug)]
pub struct ForwardOnly<R> {
    inner: R,
    pos: u64,
    target: u64,
    scratch: Box<[u8]>,
}

impl<R> ForwardOnly<R> {
    /// Wraps a stream positioned at offset 0.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            pos: 0,
            target: 0,
            scratch: vec![0u8; 64 << 10].into_boxed_slice(),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for ForwardOnly<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let read = (buf.filled().len() - before) as u64;
        self.pos += read;
        self.target = self.pos;
        Poll::Ready(Ok(()))
    }
}

impl<R: AsyncRead + Unpin> AsyncSeek for ForwardOnly<R> {
    fn start_seek(mut self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let target = match position {
            SeekFrom::Start(t) => Some(t),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(_) => None,
        };
        match target {
            Some(t) if t >= self.pos => {
                self.target = t;
                Ok(())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a forward-only source cannot seek backwards or from the end",
            )),
        }
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let this = &mut *self;
        while this.pos < this.target {
            let want = ((this.target - this.pos) as usize).min(this.scratch.len());
            let mut buf = ReadBuf::new(&mut this.scratch[..want]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut buf))?;
            let n = buf.filled().len();
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            this.pos += n as u64;
        }
        Poll::Ready(Ok(this.pos))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::super::session::BackupRequest;
    use super::super::test_support::{image, local_repo, request, write_image};
    use super::*;

    const CS: usize = 1 << 16;

    #[tokio::test]
    async fn round_trip_is_bit_for_bit_with_tail_and_sparse_zeros() {
        let (_dir, repo) = local_repo(CS as u32).await;
        let repo = repo.with_parallelism(3);
        // 40 chunks and a 1234-byte tail; chunks 5-9 and 20 zero, plus zero runs that do not
        // cover whole chunks (those chunks are ordinary data).
        let len = 40 * CS + 1234;
        let zeros = [
            (5 * CS, 10 * CS),
            (20 * CS, 21 * CS),
            (30 * CS + 7, 31 * CS + 100),
        ];
        let data = image(len, 42, &zeros);
        let manifest = write_image(&repo, request("rt"), &data).await;
        let disk = &manifest.disks[0];
        assert_eq!(disk.chunks.len(), 41);
        let markers: Vec<usize> = (0..41).filter(|&i| disk.chunks[i].is_none()).collect();
        assert_eq!(markers, [5, 6, 7, 8, 9, 20]);
        assert_eq!(disk.bytes_read, len as u64);
        assert_eq!(disk.bytes_reused, 0);
        assert_eq!(disk.bytes_zero, 6 * CS as u64);
        assert_eq!(disk.bytes_new, (len - 6 * CS) as u64);

        let mut restored = Vec::new();
        let stats = repo.read_disk(disk, &mut restored).await.unwrap();
        assert_eq!(restored.len(), len);
        assert!(restored == data, "restore differs from the source");
        assert_eq!(stats.bytes_written, len as u64);
        assert_eq!(stats.chunks_fetched, 35);
    }

    #[tokio::test]
    async fn incremental_with_changed_areas_reads_only_changed_chunks() {
        let (_dir, repo) = local_repo(CS as u32).await;
        let len = 16 * CS + 500;
        let base = image(len, 1, &[]);
        let first = write_image(&repo, request("inc"), &base).await;
        let first_disk = &first.disks[0];
        let chunk_files = count_chunks(&repo).await;
        assert_eq!(chunk_files, 17);

        // Change bytes in chunk 2 (one byte), chunks 7-8 (a write across the boundary) and
        // the tail chunk 16.
        let mut next = base.clone();
        next[2 * CS + 10] ^= 0xff;
        for b in &mut next[8 * CS - 3..8 * CS + 3] {
            *b ^= 0x55;
        }
        next[len - 1] ^= 1;
        let areas = vec![
            (2 * CS as u64 + 10, 1),
            (8 * CS as u64 - 3, 6),
            (len as u64 - 1, 1),
        ];
        let mut session = repo
            .begin_backup(BackupRequest {
                parent: Some(first.id.clone()),
                ..request("inc")
            })
            .await
            .unwrap();
        let info = DiskInfo {
            label: "disk0".into(),
            capacity: len as u64,
            change_id: Some("cbt-2".into()),
        };
        let disk = session
            .write_disk(
                info,
                Cursor::new(next.clone()),
                Some(first_disk),
                Some(areas),
            )
            .await
            .unwrap();
        let second = session.commit().await.unwrap();
        assert_eq!(
            disk.bytes_read,
            3 * CS as u64 + 500,
            "chunks 2, 7, 8 and the tail"
        );
        assert_eq!(disk.bytes_reused, 13 * CS as u64);
        assert_eq!(disk.bytes_read + disk.bytes_reused, len as u64);
        assert_eq!(disk.bytes_new, disk.bytes_read);
        for i in [0, 1, 3, 4, 5, 6, 9, 15] {
            assert_eq!(disk.chunks[i], first_disk.chunks[i], "chunk {i} reused");
        }
        for i in [2, 7, 8, 16] {
            assert_ne!(disk.chunks[i], first_disk.chunks[i], "chunk {i} rewritten");
        }
        assert_eq!(count_chunks(&repo).await, 17 + 4);
        assert_eq!(second.parent, Some(first.id.clone()));

        // Both backups restore to their own data: every backup is a logical full.
        let mut restored = Vec::new();
        repo.read_disk(&second.disks[0], &mut restored)
            .await
            .unwrap();
        assert!(restored == next);
        let mut restored = Vec::new();
        repo.read_disk(first_disk, &mut restored).await.unwrap();
        assert!(restored == base);

        // Without CBT every chunk is read, but unchanged ones are not uploaded again.
        let third = write_image(&repo, request("inc"), &next).await;
        assert_eq!(third.disks[0].bytes_read, len as u64);
        assert_eq!(third.disks[0].bytes_new, 0);
        assert_eq!(third.disks[0].chunks, second.disks[0].chunks);
    }

    #[tokio::test]
    async fn forward_only_sources_and_bad_input() {
        let (_dir, repo) = local_repo(CS as u32).await;
        let len = 6 * CS;
        let data = image(len, 9, &[]);
        let first = write_image(&repo, request("fwd"), &data).await;
        let mut session = repo.begin_backup(request("fwd")).await.unwrap();
        let info = DiskInfo {
            label: "disk0".into(),
            capacity: len as u64,
            change_id: None,
        };
        // A non-seekable source: skipped chunks are read and discarded.
        let (mut tx, rx) = tokio::io::duplex(1 << 16);
        let feed = {
            let data = data.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                // The last chunk is reused, so the reader stops early: a broken pipe is fine.
                let _ = tx.write_all(&data).await;
            })
        };
        let disk = session
            .write_disk(
                info.clone(),
                ForwardOnly::new(rx),
                Some(&first.disks[0]),
                Some(vec![(4 * CS as u64, 1)]),
            )
            .await
            .unwrap();
        feed.await.unwrap();
        assert_eq!(disk.bytes_read, CS as u64);
        assert_eq!(disk.chunks, first.disks[0].chunks);

        let again = session
            .write_disk(info.clone(), Cursor::new(data.clone()), None, None)
            .await;
        assert!(
            matches!(again, Err(Error::InvalidArgument(_))),
            "label reused"
        );
        let short = DiskInfo {
            label: "short".into(),
            capacity: len as u64 + 10,
            change_id: None,
        };
        let err = session
            .write_disk(short, Cursor::new(data.clone()), None, None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::ShortRead { at, .. } if at == len as u64),
            "{err}"
        );
        let beyond = DiskInfo {
            label: "beyond".into(),
            ..info
        };
        let err = session
            .write_disk(
                beyond,
                Cursor::new(data),
                Some(&first.disks[0]),
                Some(vec![(len as u64 - 1, 2)]),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        session.abort().await.unwrap();
    }

    #[tokio::test]
    async fn zero_capacity_disk() {
        let (_dir, repo) = local_repo(CS as u32).await;
        let manifest = write_image(&repo, request("empty"), &[]).await;
        assert!(manifest.disks[0].chunks.is_empty());
        let mut out = Vec::new();
        repo.read_disk(&manifest.disks[0], &mut out).await.unwrap();
        assert!(out.is_empty());
    }

    async fn count_chunks(repo: &Repository) -> usize {
        repo.backend
            .list(super::super::chunk::CHUNK_PREFIX)
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .len()
    }
}
