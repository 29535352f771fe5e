//! Chunk-sized buffers kept for reuse. A backup or restore moves every chunk through a few
//! buffers of the chunk's size (the ranged read, the encoded object); allocating them afresh
//! for every chunk means page faults and zeroing for every 4 MiB, and lets freed memory pile
//! up in the allocator faster than it is returned. A pool keeps peak memory at the buffers
//! really in use at once, and their pages warm.
//!
//! Invariant: a buffer handed out is empty (length 0) with at least the pool's capacity; the
//! pool never keeps more than `keep` buffers, nor one that grew past twice its capacity.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Buffers of one capacity, kept for reuse.
#[derive(Debug)]
pub struct BufferPool {
    capacity: usize,
    keep: usize,
    free: Mutex<Vec<Vec<u8>>>,
    /// Buffers allocated so far: the most ever in use at once, unless `keep` was reached.
    made: AtomicUsize,
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        tracing::debug!(
            capacity = self.capacity,
            made = self.made.load(Ordering::Relaxed),
            "buffer pool dropped"
        );
    }
}

impl BufferPool {
    /// A pool of buffers of `capacity` bytes that keeps at most `keep` of them.
    pub fn new(capacity: usize, keep: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            keep,
            free: Mutex::new(Vec::new()),
            made: AtomicUsize::new(0),
        })
    }

    /// An empty buffer of at least the pool's capacity, reused when one is free.
    pub fn take(self: &Arc<Self>) -> PooledBuf {
        let kept = self.free.lock().expect("not poisoned").pop();
        PooledBuf {
            buf: kept.unwrap_or_else(|| {
                self.made.fetch_add(1, Ordering::Relaxed);
                Vec::with_capacity(self.capacity)
            }),
            pool: self.clone(),
        }
    }

    /// An empty buffer for `len` bytes: a pooled one when `len` needs more than half the
    /// pool's capacity, else a buffer of its own (dropped, not kept, when done), so small
    /// pieces never pin a whole pooled buffer.
    pub fn take_for(self: &Arc<Self>, len: usize) -> PooledBuf {
        if 2 * len > self.capacity {
            let mut buf = self.take();
            buf.reserve(len);
            return buf;
        }
        PooledBuf {
            buf: Vec::with_capacity(len),
            pool: self.clone(),
        }
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        if buf.capacity() < self.capacity || buf.capacity() > 2 * self.capacity {
            return;
        }
        buf.clear();
        let mut free = self.free.lock().expect("not poisoned");
        if free.len() < self.keep {
            free.push(buf);
        }
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.free.lock().expect("not poisoned").len()
    }
}

/// A buffer from a [`BufferPool`]; dropping it gives it back.
#[derive(Debug)]
pub struct PooledBuf {
    buf: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl PooledBuf {
    /// The buffer as shared bytes, without copying; it goes back to the pool when the last
    /// clone of the bytes is dropped.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl Deref for PooledBuf {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_the_pool_stays_bounded() {
        let pool = BufferPool::new(1024, 2);
        let mut a = pool.take();
        a.extend_from_slice(b"hello");
        let address = a.as_ptr();
        let bytes = a.freeze();
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(pool.kept(), 0, "a clone still holds the buffer");
        assert_eq!(&clone[..], b"hello");
        drop(clone);
        assert_eq!(pool.kept(), 1);
        let again = pool.take();
        assert!(again.is_empty() && again.capacity() >= 1024);
        assert_eq!(again.as_ptr(), address, "the same allocation is reused");

        let held: Vec<PooledBuf> = (0..4).map(|_| pool.take()).collect();
        drop(held);
        drop(again);
        assert_eq!(pool.kept(), 2, "never more than `keep` kept");

        let mut grown = pool.take();
        grown.reserve(4096);
        drop(grown);
        drop(pool.take_for(100));
        assert_eq!(
            pool.kept(),
            1,
            "outsized and undersized buffers are dropped"
        );
        let big = pool.take_for(1000);
        assert!(big.capacity() >= 1024);
        assert_eq!(
            pool.kept(),
            0,
            "more than half the capacity: a pooled buffer"
        );
    }
}
