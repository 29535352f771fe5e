//! A file written front to back in which all-zero writes become holes: they move the position
//! instead of writing, and the file is extended to its full length at the end. A restored disk
//! image takes no space for its empty areas.

use std::io::{self, SeekFrom};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::fs::File;
use tokio::io::{AsyncSeek, AsyncWrite, AsyncWriteExt};

use crate::engine::backup::chunk::is_zero;

/// See the module doc. Call [`SparseFile::finish`] (or `shutdown`) to set the final length.
#[derive(Debug)]
pub struct SparseFile {
    file: File,
    /// Logical position (what has been written, holes included).
    pos: u64,
    /// The file's real position.
    at: u64,
    /// A seek to `pos` is in progress.
    seeking: bool,
}

impl SparseFile {
    /// Wraps an empty file opened for writing.
    pub fn new(file: File) -> Self {
        Self {
            file,
            pos: 0,
            at: 0,
            seeking: false,
        }
    }

    /// Extends the file over trailing holes and syncs it; returns its length.
    pub async fn finish(mut self) -> io::Result<u64> {
        self.file.flush().await?;
        self.file.set_len(self.pos).await?;
        self.file.sync_all().await?;
        Ok(self.pos)
    }
}

impl AsyncWrite for SparseFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !this.seeking && is_zero(buf) {
            this.pos += buf.len() as u64;
            return Poll::Ready(Ok(buf.len()));
        }
        if this.at != this.pos {
            if !this.seeking {
                // tokio's File refuses a seek while a write is still in flight.
                ready!(Pin::new(&mut this.file).poll_flush(cx))?;
                Pin::new(&mut this.file).start_seek(SeekFrom::Start(this.pos))?;
                this.seeking = true;
            }
            this.at = ready!(Pin::new(&mut this.file).poll_complete(cx))?;
            this.seeking = false;
        }
        let n = ready!(Pin::new(&mut this.file).poll_write(cx, buf))?;
        this.pos += n as u64;
        this.at += n as u64;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn zeros_become_holes_and_content_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let mut f = SparseFile::new(File::create(&path).await.unwrap());
        let data = vec![7u8; 4096];
        f.write_all(&[0u8; 8 << 20]).await.unwrap();
        f.write_all(&data).await.unwrap();
        f.write_all(&[0u8; 1 << 20]).await.unwrap();
        f.write_all(&data).await.unwrap();
        f.write_all(&[0u8; 1 << 20]).await.unwrap();
        let len = (10 << 20) + 2 * 4096;
        assert_eq!(f.finish().await.unwrap(), len as u64);
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), len);
        let second = (9 << 20) + 4096;
        assert!(back[..8 << 20].iter().all(|b| *b == 0));
        assert_eq!(&back[8 << 20..(8 << 20) + 4096], &data[..]);
        assert!(back[(8 << 20) + 4096..second].iter().all(|b| *b == 0));
        assert_eq!(&back[second..second + 4096], &data[..]);
        assert!(back[second + 4096..].iter().all(|b| *b == 0));
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&path).unwrap().blocks();
        assert!(
            blocks * 512 < 1 << 20,
            "{blocks} blocks: holes were written"
        );
    }
}
