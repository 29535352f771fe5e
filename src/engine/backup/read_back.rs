//! Restoring a disk: chunks fetched and checked in parallel, written in order, streaming.
//!
//! Every chunk is decoded (authenticated when encrypted) and re-hashed before a byte of it is
//! written, so a restore either reproduces the backed-up disk bit for bit or stops with an
//! error naming the bad chunk. Zero markers are written as zeros without a fetch.

use futures::{stream, StreamExt, TryStreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::buffers::PooledBuf;
use super::chunk::{ChunkId, ZEROS};
use super::error::{Error, Result};
use super::manifest::DiskManifest;
use super::object_format::ObjectKind;
use super::repository::Repository;

/// What a restore did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// Bytes written to the target (the disk's capacity).
    pub bytes_written: u64,
    /// Chunks fetched from the repository.
    pub chunks_fetched: u64,
    /// Bytes written as zeros from zero markers.
    pub bytes_zero: u64,
}

enum Piece {
    Data(PooledBuf),
    Zero(u64),
}

impl Repository {
    /// Fetches a chunk, decodes it and checks that its content hashes to `id`.
    pub async fn fetch_chunk(&self, id: ChunkId) -> Result<PooledBuf> {
        let stored = self.backend.get(&id.object_key()).await.map_err(|e| {
            if e.is_not_found() {
                Error::NotFound {
                    what: format!("chunk {id}"),
                }
            } else {
                e
            }
        })?;
        let codec = self.codec.clone();
        let hasher = self.hasher.clone();
        let max = self.config.chunk_size as usize;
        let mut data = self.buffers.take_for(max);
        self.on_cpu("decoding a chunk", move || {
            let name = id.to_string();
            codec.decode_into(ObjectKind::Chunk, &name, &stored, max, &mut data)?;
            if hasher.id(&data) != id {
                return Err(Error::corrupt(
                    format!("chunk {id}"),
                    "its content does not hash to its name",
                ));
            }
            Ok(data)
        })
        .await?
    }

    /// Writes the disk's bytes to `writer`, bit for bit, streaming with at most
    /// `parallelism` chunks in memory.
    pub async fn read_disk<W>(&self, disk: &DiskManifest, mut writer: W) -> Result<RestoreStats>
    where
        W: AsyncWrite + Unpin + Send,
    {
        disk.validate(&format!("the manifest of disk {:?}", disk.label))?;
        let mut pieces = stream::iter(0..disk.chunks.len())
            .map(|index| async move {
                let len = disk.chunk_len(index as u64);
                match disk.chunks[index] {
                    None => Ok(Piece::Zero(len)),
                    Some(id) => {
                        let data = self.fetch_chunk(id).await?;
                        if data.len() as u64 != len {
                            return Err(Error::corrupt(
                                format!("chunk {id}"),
                                format!("{} bytes where chunk {index} needs {len}", data.len()),
                            ));
                        }
                        Ok(Piece::Data(data))
                    }
                }
            })
            .buffered(self.parallelism);
        let mut stats = RestoreStats::default();
        let write_err = |e| Error::io("writing the restored disk", e);
        while let Some(piece) = pieces.try_next().await? {
            match piece {
                Piece::Data(data) => {
                    writer.write_all(&data).await.map_err(write_err)?;
                    stats.bytes_written += data.len() as u64;
                    stats.chunks_fetched += 1;
                }
                Piece::Zero(mut len) => {
                    stats.bytes_written += len;
                    stats.bytes_zero += len;
                    while len > 0 {
                        let n = len.min(ZEROS.len() as u64) as usize;
                        writer.write_all(&ZEROS[..n]).await.map_err(write_err)?;
                        len -= n as u64;
                    }
                }
            }
        }
        writer.flush().await.map_err(write_err)?;
        Ok(stats)
    }
}
