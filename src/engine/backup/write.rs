//! Streaming a disk image into chunks with bounded memory and bounded parallelism.
//!
//! The source is read chunk by chunk on the calling task; each chunk read is then hashed (and
//! checked for all zeros) on the blocking pool, looked up, and if new compressed, encrypted and
//! uploaded. At most `parallelism` chunks are in flight, and CPU work runs on one chunk per core
//! at a time ([`Repository::on_cpu`]), so memory stays near `(parallelism + cores) x chunk
//! size` whatever the disk's size; results are placed by chunk index so the manifest's order
//! never depends on completion order. Chunk-sized buffers come from the repository's
//! [`BufferPool`], and a source that holds a whole chunk as one buffer
//! ([`DiskSource::take_exact`]) hands it over without a copy.
//!
//! Incrementals read only what changed, in grains of [`PATCH_GRAIN`]: a chunk that the changed
//! areas touch only in part is the previous backup's chunk (fetched from the repository) with
//! the touched grains read from the source laid over it, so a 64 KiB write costs a 1 MiB read,
//! not a whole chunk's.

use std::collections::HashSet;
use std::io::{self, SeekFrom};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures::{stream, TryStreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeek, AsyncSeekExt, ReadBuf};

use super::backend::PutOutcome;
use super::buffers::{BufferPool, PooledBuf};
use super::chunk::{chunk_count, chunk_len, is_zero, ChunkId};
use super::error::{Error, Result};
use super::manifest::DiskManifest;
use super::object_format::ObjectKind;
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

/// A disk image to back up: read in order (seeking forwards past what is not needed).
pub trait DiskSource: AsyncRead + AsyncSeek + Unpin + Send {
    /// The `len` bytes at `at`, when the source holds exactly them as one buffer it can hand
    /// over without copying (a fetched window), leaving the source positioned after them;
    /// `None` otherwise, and they are read into a new buffer.
    fn take_exact(
        &mut self,
        at: u64,
        len: u64,
    ) -> impl std::future::Future<Output = io::Result<Option<Bytes>>> + Send {
        let _ = (at, len);
        std::future::ready(Ok(None))
    }
}

impl<T: AsRef<[u8]> + Unpin + Send> DiskSource for std::io::Cursor<T> {}

impl<R: AsyncRead + Unpin + Send> DiskSource for ForwardOnly<R> {}

/// The unit in which an incremental reads a chunk that changed in part: 1 MiB.
pub const PATCH_GRAIN: u64 = 1 << 20;

/// What happens to one chunk of the disk.
#[derive(Clone, Debug, PartialEq)]
enum ChunkPlan {
    /// Read whole from the source.
    Read,
    /// Unchanged: the previous backup's entry (`None`: zero), unread.
    Reuse(Option<ChunkId>),
    /// Changed in part: the previous entry with these byte ranges (relative to the chunk,
    /// ascending, grain-aligned) read from the source over it.
    Patch {
        base: Option<ChunkId>,
        ranges: Vec<std::ops::Range<u64>>,
    },
}

enum Job {
    Reused {
        index: usize,
        entry: Option<ChunkId>,
        len: u64,
    },
    /// A chunk's content, of which `read` bytes came from the source (the rest are zeros).
    Read {
        index: usize,
        data: Bytes,
        read: u64,
    },
    Patch {
        index: usize,
        base: ChunkId,
        len: u64,
        pieces: Vec<(u64, Bytes)>,
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

/// For each chunk index, how it is obtained: read whole, reused unread from the previous
/// backup, or patched (the previous chunk with its changed grains read over it).
fn reuse_plan(
    disk: &DiskInfo,
    chunk_size: u32,
    grain: u64,
    previous: Option<&DiskManifest>,
    changed: Option<&[(u64, u64)]>,
) -> Result<Vec<ChunkPlan>> {
    let count = usize::try_from(chunk_count(disk.capacity, chunk_size))
        .map_err(|_| Error::InvalidArgument("disk too large".into()))?;
    let mut plan = vec![ChunkPlan::Read; count];
    let (Some(previous), Some(changed)) = (previous, changed) else {
        return Ok(plan);
    };
    if previous.chunk_size != chunk_size {
        return Ok(plan); // a different chunk grid: nothing lines up
    }
    let cs = u64::from(chunk_size);
    let grain = grain.clamp(1, cs);
    // The grains each chunk's changed areas touch, relative to the chunk.
    let mut touched: Vec<Vec<std::ops::Range<u64>>> = vec![Vec::new(); count];
    let mut sorted: Vec<(u64, u64)> = changed.to_vec();
    sorted.sort_unstable();
    for (offset, len) in sorted {
        let end = offset.checked_add(len).filter(|&end| end <= disk.capacity);
        let Some(end) = end else {
            return Err(Error::InvalidArgument(format!(
                "changed area ({offset}, {len}) lies beyond the capacity {}",
                disk.capacity
            )));
        };
        if len == 0 {
            continue;
        }
        for index in offset / cs..=(end - 1) / cs {
            let chunk_start = index * cs;
            let chunk_end = chunk_start + chunk_len(disk.capacity, chunk_size, index);
            let from = offset.max(chunk_start) - chunk_start;
            let to = end.min(chunk_end) - chunk_start;
            let range =
                (from / grain * grain)..(to.div_ceil(grain) * grain).min(chunk_end - chunk_start);
            let ranges = &mut touched[index as usize];
            match ranges.last_mut() {
                Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
                _ => ranges.push(range),
            }
        }
    }
    for (index, (slot, ranges)) in plan.iter_mut().zip(touched).enumerate() {
        let i = index as u64;
        let len = chunk_len(disk.capacity, chunk_size, i);
        let same_extent = index < previous.chunks.len() && previous.chunk_len(i) == len;
        if !same_extent {
            continue; // read whole
        }
        let base = previous.chunks[index];
        *slot = match ranges.as_slice() {
            [] => ChunkPlan::Reuse(base),
            [whole] if whole.start == 0 && whole.end >= len => ChunkPlan::Read,
            _ => ChunkPlan::Patch { base, ranges },
        };
    }
    Ok(plan)
}

/// Reads `len` bytes at `at` (seeking there first if `pos` is elsewhere); `pos` follows.
async fn read_at<R: DiskSource>(
    reader: &mut R,
    pos: &mut u64,
    (at, len): (u64, u64),
    capacity: u64,
    buffers: &Arc<BufferPool>,
) -> Result<Bytes> {
    let read_error = |e| Error::io(format!("reading the disk source at {at}"), e);
    if let Some(data) = reader.take_exact(at, len).await.map_err(read_error)? {
        *pos = at + len;
        return Ok(data);
    }
    let mut data = buffers.take_for(len as usize);
    data.resize(len as usize, 0);
    read_into(reader, pos, at, &mut data, capacity).await?;
    Ok(data.freeze())
}

/// Fills `buf` from the source at `at` of a disk of `capacity` bytes (seeking there first if
/// `pos` is elsewhere); `pos` follows.
async fn read_into<R: AsyncRead + AsyncSeek + Unpin>(
    reader: &mut R,
    pos: &mut u64,
    at: u64,
    buf: &mut [u8],
    capacity: u64,
) -> Result<()> {
    if *pos != at {
        reader
            .seek(SeekFrom::Start(at))
            .await
            .map_err(|e| Error::io(format!("seeking the disk source to {at}"), e))?;
        *pos = at;
    }
    let got = read_full(reader, buf)
        .await
        .map_err(|e| Error::io(format!("reading the disk source at {at}"), e))?;
    if got < buf.len() {
        return Err(Error::ShortRead {
            at: at + got as u64,
            capacity,
        });
    }
    *pos += got as u64;
    Ok(())
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
    R: DiskSource,
{
    let chunk_size = repo.config.chunk_size;
    let plan = reuse_plan(
        &disk,
        chunk_size,
        repo.patch_grain,
        previous,
        changed_areas.as_deref(),
    )?;
    let capacity = disk.capacity;
    let plan_ref = &plan;
    let buffers = &repo.buffers;

    let jobs = stream::try_unfold(
        (reader, 0u64, 0usize),
        move |(mut reader, mut pos, index)| async move {
            if index >= plan_ref.len() {
                return Ok(None);
            }
            let len = chunk_len(capacity, chunk_size, index as u64);
            let offset = index as u64 * u64::from(chunk_size);
            match &plan_ref[index] {
                ChunkPlan::Reuse(entry) => {
                    let job = Job::Reused {
                        index,
                        entry: *entry,
                        len,
                    };
                    return Ok(Some((job, (reader, pos, index + 1))));
                }
                ChunkPlan::Patch { base: None, ranges } => {
                    // Over zeros: the grains are read straight into the chunk's buffer.
                    let mut data = buffers.take_for(len as usize);
                    data.resize(len as usize, 0);
                    let mut read = 0;
                    for range in ranges {
                        let into = &mut data[range.start as usize..range.end as usize];
                        read_into(&mut reader, &mut pos, offset + range.start, into, capacity)
                            .await?;
                        read += range.end - range.start;
                    }
                    let job = Job::Read {
                        index,
                        data: data.freeze(),
                        read,
                    };
                    return Ok(Some((job, (reader, pos, index + 1))));
                }
                ChunkPlan::Patch {
                    base: Some(base),
                    ranges,
                } => {
                    let mut pieces = Vec::with_capacity(ranges.len());
                    for range in ranges {
                        let at = offset + range.start;
                        let piece = read_at(
                            &mut reader,
                            &mut pos,
                            (at, range.end - range.start),
                            capacity,
                            buffers,
                        )
                        .await?;
                        pieces.push((range.start, piece));
                    }
                    let job = Job::Patch {
                        index,
                        base: *base,
                        len,
                        pieces,
                    };
                    return Ok(Some((job, (reader, pos, index + 1))));
                }
                ChunkPlan::Read => {}
            }
            let data = read_at(&mut reader, &mut pos, (offset, len), capacity, buffers).await?;
            let job = Job::Read {
                index,
                data,
                read: len,
            };
            Ok(Some((job, (reader, pos, index + 1))))
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
    let (index, data, read) = match job {
        Job::Reused { index, entry, len } => {
            return Ok(Outcome {
                index,
                entry,
                reused: len,
                ..Outcome::default()
            })
        }
        Job::Read { index, data, read } => (index, data, read),
        Job::Patch {
            index,
            base,
            len,
            pieces,
        } => {
            let read: u64 = pieces.iter().map(|(_, p)| p.len() as u64).sum();
            let data = patched(repo, index, base, len, pieces).await?;
            (index, data.freeze(), read)
        }
    };
    let mut outcome = store(repo, known, index, data).await?;
    outcome.read = read;
    Ok(outcome)
}

/// The previous backup's chunk `base` with `pieces` laid over it.
async fn patched(
    repo: &Repository,
    index: usize,
    base: ChunkId,
    len: u64,
    pieces: Vec<(u64, Bytes)>,
) -> Result<PooledBuf> {
    let mut data = repo.fetch_chunk(base).await?;
    if data.len() as u64 != len {
        return Err(Error::corrupt(
            format!("chunk {base}"),
            format!(
                "{} bytes where chunk {index} of the previous backup needs {len}",
                data.len()
            ),
        ));
    }
    for (at, piece) in pieces {
        let at = at as usize;
        data[at..at + piece.len()].copy_from_slice(&piece);
    }
    Ok(data)
}

/// Hashes chunk `index`'s `data` and stores it unless the repository has it.
async fn store(
    repo: &Repository,
    known: &Mutex<HashSet<ChunkId>>,
    index: usize,
    data: Bytes,
) -> Result<Outcome> {
    let len = data.len() as u64;
    let hasher = repo.hasher.clone();
    let (data, id) = repo
        .on_cpu("hashing a chunk", move || {
            let id = (!is_zero(&data)).then(|| hasher.id(&data));
            (data, id)
        })
        .await?;
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
        let stored = repo.buffers.take();
        let stored = repo
            .on_cpu("encoding a chunk", move || {
                let mut stored = stored;
                codec.encode_into(ObjectKind::Chunk, &id.to_string(), &data, &mut stored);
                stored
            })
            .await?;
        let size = stored.len() as u64;
        if repo.backend.put_if_absent(&key, stored.freeze()).await? == PutOutcome::Created {
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

    use super::super::manifest::Manifest;
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
        let (disk, second) = incremental(&repo, &first, &next, areas, "inc").await;
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
    async fn incremental_reads_changed_grains_and_patches_the_previous_chunks() {
        const GRAIN: usize = CS / 8;
        let (_dir, repo) = local_repo(CS as u32).await;
        let repo = repo.with_patch_grain(GRAIN as u64);
        // 8 chunks and a 700-byte tail; chunk 5 is all zero in the first backup.
        let len = 8 * CS + 700;
        let base = image(len, 3, &[(5 * CS, 6 * CS)]);
        let first = write_image(&repo, request("grain"), &base).await;
        let first_disk = &first.disks[0];
        assert_eq!(first_disk.chunks[5], None);

        // One byte in chunk 1 (one grain), a write across the grain boundary in chunk 3 (two
        // grains), a write into the zero chunk 5, a write across chunks 6 and 7 (one grain
        // each), the last byte of the tail (its short last grain), and all of chunk 2.
        let mut next = base.clone();
        let mut areas = Vec::new();
        let mut change = |at: usize, n: usize| {
            for b in &mut next[at..at + n] {
                *b = b.wrapping_add(0x5b);
            }
            areas.push((at as u64, n as u64));
        };
        change(CS + 100, 1);
        change(3 * CS + GRAIN - 2, 4);
        change(5 * CS + 3 * GRAIN + 9, 20);
        change(7 * CS - 5, 10);
        change(len - 1, 1);
        change(2 * CS, CS);
        let (disk, second) = incremental(&repo, &first, &next, areas, "grain").await;
        let grains = 1 + 2 + 1 + 2;
        assert_eq!(
            disk.bytes_read,
            (grains * GRAIN + CS + 700) as u64,
            "the touched grains, the tail grain and chunk 2"
        );
        for i in [0, 4] {
            assert_eq!(disk.chunks[i], first_disk.chunks[i], "chunk {i} reused");
        }
        for i in [1, 2, 3, 5, 6, 7, 8] {
            assert_ne!(disk.chunks[i], first_disk.chunks[i], "chunk {i} rewritten");
        }
        let mut restored = Vec::new();
        repo.read_disk(&second.disks[0], &mut restored)
            .await
            .unwrap();
        assert!(
            restored == next,
            "a patched backup restores to the new data"
        );
        // The patched chunks are the chunks a full read makes.
        let full = write_image(&repo, request("grain-full"), &next).await;
        assert_eq!(full.disks[0].chunks, second.disks[0].chunks);
    }

    #[test]
    fn the_plan_rounds_changes_to_grains_within_each_chunk() {
        let info = DiskInfo {
            label: "d".into(),
            capacity: 4 * 1000 + 300,
            change_id: None,
        };
        let previous = DiskManifest {
            label: "d".into(),
            capacity: info.capacity,
            chunk_size: 1000,
            chunks: vec![None; 5],
            bytes_read: 0,
            bytes_reused: 0,
            bytes_zero: 0,
            bytes_new: 0,
            bytes_stored: 0,
            change_id: None,
        };
        let plan = reuse_plan(
            &info,
            1000,
            100,
            Some(&previous),
            Some(&[(1150, 10), (1120, 5), (1990, 20), (3000, 1000), (4299, 1)]),
        )
        .unwrap();
        let patch = |ranges: Vec<std::ops::Range<u64>>| ChunkPlan::Patch { base: None, ranges };
        assert_eq!(
            plan,
            vec![
                ChunkPlan::Reuse(None),
                patch(vec![100..200, 900..1000]),
                patch(std::iter::once(0..100).collect()),
                ChunkPlan::Read,
                patch(std::iter::once(200..300).collect()),
            ]
        );
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

    /// A backup of `next` as an incremental over `first` (one disk, "disk0") with the changed
    /// `areas`: the disk written and the committed manifest.
    async fn incremental(
        repo: &Repository,
        first: &Manifest,
        next: &[u8],
        areas: Vec<(u64, u64)>,
        tag: &str,
    ) -> (DiskManifest, Manifest) {
        let mut session = repo
            .begin_backup(BackupRequest {
                parent: Some(first.id.clone()),
                ..request(tag)
            })
            .await
            .unwrap();
        let info = DiskInfo {
            label: "disk0".into(),
            capacity: next.len() as u64,
            change_id: Some("cbt-2".into()),
        };
        let disk = session
            .write_disk(
                info,
                Cursor::new(next.to_vec()),
                Some(&first.disks[0]),
                Some(areas),
            )
            .await
            .unwrap();
        (disk, session.commit().await.unwrap())
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
