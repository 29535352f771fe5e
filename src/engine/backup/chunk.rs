//! Chunks: fixed-size pieces of a disk image, named by their BLAKE3 digest.
//!
//! A disk of capacity `c` with chunk size `s` has `ceil(c / s)` chunks; chunk `i` covers bytes
//! `i*s .. min((i+1)*s, c)`, so a changed-block-tracking area `(offset, len)` maps to the chunk
//! indexes `offset / s ..= (offset + len - 1) / s` with no content-defined boundaries to shift.
//! Chunk ids are plain BLAKE3 digests in an unencrypted repository and keyed BLAKE3 (a key
//! derived from the repository key) in an encrypted one, so an id says nothing about content to
//! someone without the key.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{Error, Result};

/// The default chunk size: 4 MiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 4 << 20;
/// The smallest chunk size accepted at init: 64 KiB (vSphere's CBT granularity).
pub const MIN_CHUNK_SIZE: u32 = 64 << 10;
/// The largest chunk size accepted at init: 64 MiB.
pub const MAX_CHUNK_SIZE: u32 = 64 << 20;

/// The folder chunks live under.
pub const CHUNK_PREFIX: &str = "chunks/";

/// Checks a chunk size: a power of two between [`MIN_CHUNK_SIZE`] and [`MAX_CHUNK_SIZE`].
pub fn validate_chunk_size(size: u32) -> Result<()> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size) || !size.is_power_of_two() {
        return Err(Error::InvalidArgument(format!(
            "chunk size {size} must be a power of two between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}"
        )));
    }
    Ok(())
}

/// A chunk's name: 32 bytes of (keyed) BLAKE3, written as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId([u8; 32]);

impl ChunkId {
    /// The id with these digest bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The object key: `chunks/<first two hex digits>/<hex>`.
    pub fn object_key(&self) -> String {
        let hex = self.to_string();
        format!("{CHUNK_PREFIX}{}/{hex}", &hex[..2])
    }

    /// The id named by an object key from [`ChunkId::object_key`], if it is one.
    pub fn from_object_key(key: &str) -> Option<Self> {
        let rest = key.strip_prefix(CHUNK_PREFIX)?;
        let (dir, hex) = rest.split_once('/')?;
        let id: ChunkId = hex.parse().ok()?;
        (dir == &hex[..2]).then_some(id)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &hex::encode(self.0)[..16])
    }
}

impl FromStr for ChunkId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let mut bytes = [0u8; 32];
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(Error::InvalidArgument(format!("{s:?} is not a chunk id")));
        }
        hex::decode_to_slice(s, &mut bytes)
            .map_err(|_| Error::InvalidArgument(format!("{s:?} is not a chunk id")))?;
        Ok(Self(bytes))
    }
}

impl Serialize for ChunkId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ChunkId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How chunk ids are computed in a repository.
#[derive(Clone)]
pub enum ChunkHasher {
    /// Plain BLAKE3 (unencrypted repositories).
    Plain,
    /// Keyed BLAKE3 with a key derived from the repository key (encrypted repositories).
    Keyed([u8; 32]),
}

impl ChunkHasher {
    /// The id of `data`.
    pub fn id(&self, data: &[u8]) -> ChunkId {
        let hash = match self {
            ChunkHasher::Plain => blake3::hash(data),
            ChunkHasher::Keyed(key) => blake3::keyed_hash(key, data),
        };
        ChunkId(*hash.as_bytes())
    }
}

impl fmt::Debug for ChunkHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkHasher::Plain => "ChunkHasher::Plain",
            ChunkHasher::Keyed(_) => "ChunkHasher::Keyed(***)",
        })
    }
}

/// 64 KiB of zeros, compared against with `memcmp` (fast even in unoptimised builds).
pub(crate) static ZEROS: [u8; 64 << 10] = [0u8; 64 << 10];

/// Whether every byte of `data` is zero.
pub fn is_zero(data: &[u8]) -> bool {
    data.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
}

/// The number of chunks of a disk of `capacity` bytes.
pub fn chunk_count(capacity: u64, chunk_size: u32) -> u64 {
    capacity.div_ceil(u64::from(chunk_size))
}

/// The length of chunk `index` of a disk of `capacity` bytes (the last one may be short).
pub fn chunk_len(capacity: u64, chunk_size: u32, index: u64) -> u64 {
    let start = index * u64::from(chunk_size);
    capacity.saturating_sub(start).min(u64::from(chunk_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_text_and_object_key_round_trip() {
        let id = ChunkHasher::Plain.id(b"hello");
        let text = id.to_string();
        assert_eq!(text, blake3::hash(b"hello").to_hex().as_str());
        assert_eq!(text.parse::<ChunkId>().unwrap(), id);
        let key = id.object_key();
        assert_eq!(key, format!("chunks/{}/{}", &text[..2], text));
        assert_eq!(ChunkId::from_object_key(&key), Some(id));
        assert_eq!(ChunkId::from_object_key("chunks/00/zz"), None);
        assert_eq!(
            ChunkId::from_object_key(&format!("chunks/ff/{text}")),
            None,
            "a chunk filed under the wrong folder is not a chunk"
        );
        assert!("ABCD".parse::<ChunkId>().is_err());
        assert!(text.to_uppercase().parse::<ChunkId>().is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<ChunkId>(&json).unwrap(), id);
    }

    #[test]
    fn keyed_ids_differ_from_plain_and_between_keys() {
        let plain = ChunkHasher::Plain.id(b"data");
        let a = ChunkHasher::Keyed([1; 32]).id(b"data");
        let b = ChunkHasher::Keyed([2; 32]).id(b"data");
        assert_ne!(plain, a);
        assert_ne!(a, b);
        assert_eq!(a, ChunkHasher::Keyed([1; 32]).id(b"data"));
    }

    #[test]
    fn zero_detection_and_chunk_geometry() {
        assert!(is_zero(&[]));
        assert!(is_zero(&vec![0u8; 200_000]));
        let mut v = vec![0u8; 200_000];
        v[199_999] = 1;
        assert!(!is_zero(&v));
        assert_eq!(chunk_count(0, MIN_CHUNK_SIZE), 0);
        assert_eq!(chunk_count(1, MIN_CHUNK_SIZE), 1);
        assert_eq!(chunk_count(3 * 65536 + 5, MIN_CHUNK_SIZE), 4);
        assert_eq!(chunk_len(3 * 65536 + 5, MIN_CHUNK_SIZE, 3), 5);
        assert_eq!(chunk_len(3 * 65536 + 5, MIN_CHUNK_SIZE, 2), 65536);
        assert!(validate_chunk_size(DEFAULT_CHUNK_SIZE).is_ok());
        assert!(validate_chunk_size(MIN_CHUNK_SIZE - 1).is_err());
        assert!(validate_chunk_size(3 << 20).is_err());
        assert!(validate_chunk_size(MAX_CHUNK_SIZE * 2).is_err());
    }
}
