//! The byte format of stored chunks and manifests: zstd when it helps, sealed when encrypted.
//!
//! ```text
//! byte 0     format version (1)
//! byte 1     flags: 0x01 zstd-compressed, 0x02 encrypted
//! rest       payload, or (encrypted) 24-byte nonce || ciphertext || 16-byte tag
//! ```
//! The associated data of an encrypted object binds it to its kind, its flags and its name
//! (chunk id or backup id), so an attacker with write access can neither flip the compression
//! flag nor move an object to another name without failing authentication.

use std::fmt;
use std::sync::{Arc, Mutex};

use super::crypto::{Keys, NONCE_LEN, TAG_LEN};
use super::error::{Error, Result};

const VERSION: u8 = 1;
const FLAG_ZSTD: u8 = 0x01;
const FLAG_ENCRYPTED: u8 = 0x02;
const KNOWN_FLAGS: u8 = FLAG_ZSTD | FLAG_ENCRYPTED;

/// The zstd level written: 3, zstd's default, which keeps compression faster than the network.
pub const ZSTD_LEVEL: i32 = 3;

/// The most an encoded object is longer than its plain content: the header, a nonce and a tag.
pub const ENCODE_OVERHEAD: usize = 2 + NONCE_LEN + TAG_LEN;

/// What an object is; part of the authenticated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    /// A chunk of disk data.
    Chunk,
    /// A backup manifest.
    Manifest,
}

impl ObjectKind {
    fn label(self) -> &'static str {
        match self {
            ObjectKind::Chunk => "chunk",
            ObjectKind::Manifest => "manifest",
        }
    }
}

/// Encodes and decodes stored objects for one repository (its compression level and keys).
#[derive(Clone, Debug)]
pub struct Codec {
    keys: Option<Arc<Keys>>,
    level: i32,
    contexts: Arc<ContextPool>,
}

/// Compression contexts kept for reuse (as many as chunks were ever compressed at once): a new
/// one per chunk would mean a fresh zstd workspace, allocated outside Rust's allocator and
/// cleared, for every 4 MiB.
#[derive(Default)]
struct ContextPool(Mutex<Vec<zstd::bulk::Compressor<'static>>>);

impl fmt::Debug for ContextPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContextPool")
    }
}

impl ContextPool {
    /// Compresses `plain` into the spare capacity of `out` at `level`; the size written.
    fn compress(&self, level: i32, plain: &[u8], out: &mut Vec<u8>) -> std::io::Result<usize> {
        let kept = self.0.lock().expect("not poisoned").pop();
        let mut context = match kept {
            Some(c) => c,
            None => zstd::bulk::Compressor::new(level)?,
        };
        let written = context.compress_to_buffer(plain, out);
        self.0.lock().expect("not poisoned").push(context);
        written
    }
}

impl Codec {
    /// A codec with these keys (`None`: unencrypted) and zstd level.
    pub fn new(keys: Option<Arc<Keys>>, level: i32) -> Self {
        Self {
            keys,
            level,
            contexts: Arc::default(),
        }
    }

    /// Whether objects are encrypted.
    pub fn encrypted(&self) -> bool {
        self.keys.is_some()
    }

    /// The keys, when encrypted.
    pub fn keys(&self) -> Option<&Arc<Keys>> {
        self.keys.as_ref()
    }

    /// Encodes `plain`: compressed when that makes it smaller, then sealed when encrypted.
    /// CPU-bound: call it on a blocking thread for chunks.
    pub fn encode(&self, kind: ObjectKind, name: &str, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(kind, name, plain, &mut out);
        out
    }

    /// [`Codec::encode`] into `out` (cleared first), which is grown to `plain`'s length plus
    /// [`ENCODE_OVERHEAD`] unless it has that room already. No other buffer is allocated:
    /// the compressed (or plain) payload is sealed where it lies.
    pub fn encode_into(&self, kind: ObjectKind, name: &str, plain: &[u8], out: &mut Vec<u8>) {
        let nonce = if self.keys.is_some() { NONCE_LEN } else { 0 };
        let head = 2 + nonce;
        out.clear();
        out.reserve(ENCODE_OVERHEAD + plain.len());
        let compressed = self
            .contexts
            .compress(self.level, plain, out)
            .is_ok_and(|n| n < plain.len());
        if compressed {
            out.splice(0..0, std::iter::repeat_n(0u8, head));
        } else {
            out.clear();
            out.resize(head, 0);
            out.extend_from_slice(plain);
        }
        let mut flags = if compressed { FLAG_ZSTD } else { 0 };
        if self.keys.is_some() {
            flags |= FLAG_ENCRYPTED;
        }
        out[0] = VERSION;
        out[1] = flags;
        if let Some(keys) = &self.keys {
            keys.seal_in_place(&aad(kind, flags, name), out, 2);
        }
    }

    /// Decodes an object written by [`Codec::encode`] under the same kind and name;
    /// `max_len` bounds the decompressed size (a chunk is never larger than the chunk size).
    pub fn decode(
        &self,
        kind: ObjectKind,
        name: &str,
        stored: &[u8],
        max_len: usize,
    ) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.decode_into(kind, name, stored, max_len, &mut out)?;
        Ok(out)
    }

    /// [`Codec::decode`] into `out` (cleared first, grown to `max_len` unless it has that room).
    pub fn decode_into(
        &self,
        kind: ObjectKind,
        name: &str,
        stored: &[u8],
        max_len: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let what = || format!("{} {name}", kind.label());
        let [version, flags, ..] = *stored else {
            return Err(Error::corrupt(what(), "shorter than its 2-byte header"));
        };
        if version != VERSION || flags & !KNOWN_FLAGS != 0 {
            return Err(Error::corrupt(
                what(),
                format!("unknown header {version:#04x} {flags:#04x}"),
            ));
        }
        let body = &stored[2..];
        let opened;
        let payload = match (&self.keys, flags & FLAG_ENCRYPTED != 0) {
            (Some(keys), true) => {
                opened = keys
                    .open(&aad(kind, flags, name), body)
                    .ok_or_else(|| Error::Authentication { what: what() })?;
                &opened[..]
            }
            (Some(_), false) => {
                // An unencrypted object in an encrypted repository was planted by someone
                // without the key: refuse it rather than trust it.
                return Err(Error::Authentication { what: what() });
            }
            (None, true) => return Err(Error::KeyRequired),
            (None, false) => body,
        };
        out.clear();
        if flags & FLAG_ZSTD == 0 {
            if payload.len() > max_len {
                return Err(Error::corrupt(what(), "larger than the chunk size"));
            }
            out.extend_from_slice(payload);
            return Ok(());
        }
        out.reserve(max_len);
        zstd::bulk::Decompressor::new()
            .and_then(|mut d| d.decompress_to_buffer(payload, out))
            .map_err(|e| Error::corrupt(what(), format!("zstd: {e}")))?;
        if out.len() > max_len {
            return Err(Error::corrupt(what(), "larger than the chunk size"));
        }
        Ok(())
    }
}

fn aad(kind: ObjectKind, flags: u8, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + name.len());
    aad.extend_from_slice(b"ceso-backup/v1\0");
    aad.extend_from_slice(kind.label().as_bytes());
    aad.push(0);
    aad.push(flags);
    aad.extend_from_slice(name.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::super::crypto::{test_kdf, KeySource, Passphrase};
    use super::*;

    fn keys() -> Arc<Keys> {
        let source = KeySource::Passphrase(Passphrase::new("p"));
        Arc::new(Keys::create(&source, Some(test_kdf())).unwrap().0)
    }

    #[test]
    fn compressible_data_is_compressed_and_random_data_stored_raw() {
        let codec = Codec::new(None, ZSTD_LEVEL);
        let text = b"ceso ".repeat(10_000);
        let stored = codec.encode(ObjectKind::Chunk, "a", &text);
        assert_eq!(stored[1], FLAG_ZSTD);
        assert!(stored.len() < text.len() / 10);
        assert_eq!(
            codec
                .decode(ObjectKind::Chunk, "a", &stored, text.len())
                .unwrap(),
            text
        );
        let mut random = vec![0u8; 100_000];
        rand::fill(&mut random[..]);
        let stored = codec.encode(ObjectKind::Chunk, "b", &random);
        assert_eq!(stored[1], 0, "incompressible data is stored raw");
        assert_eq!(stored.len(), random.len() + 2);
        assert_eq!(
            codec
                .decode(ObjectKind::Chunk, "b", &stored, random.len())
                .unwrap(),
            random
        );
        assert!(
            codec
                .decode(
                    ObjectKind::Chunk,
                    "a",
                    &codec.encode(ObjectKind::Chunk, "a", &text),
                    100
                )
                .is_err(),
            "the size bound stops decompression bombs"
        );
        assert!(codec.decode(ObjectKind::Chunk, "a", &[1], 10).is_err());
        assert!(codec.decode(ObjectKind::Chunk, "a", &[9, 0], 10).is_err());
    }

    #[test]
    fn encrypted_objects_are_bound_to_kind_and_name() {
        let codec = Codec::new(Some(keys()), ZSTD_LEVEL);
        let data = b"vm disk bytes ".repeat(1000);
        let stored = codec.encode(ObjectKind::Chunk, "id1", &data);
        assert_eq!(stored[1], FLAG_ZSTD | FLAG_ENCRYPTED);
        assert_eq!(
            codec
                .decode(ObjectKind::Chunk, "id1", &stored, data.len())
                .unwrap(),
            data
        );
        for (kind, name) in [(ObjectKind::Chunk, "id2"), (ObjectKind::Manifest, "id1")] {
            assert!(matches!(
                codec.decode(kind, name, &stored, data.len()),
                Err(Error::Authentication { .. })
            ));
        }
        let mut flipped = stored.clone();
        flipped[1] = FLAG_ENCRYPTED; // claim "not compressed"
        assert!(matches!(
            codec.decode(ObjectKind::Chunk, "id1", &flipped, data.len()),
            Err(Error::Authentication { .. })
        ));
        let planted = Codec::new(None, ZSTD_LEVEL).encode(ObjectKind::Chunk, "id1", &data);
        assert!(matches!(
            codec.decode(ObjectKind::Chunk, "id1", &planted, data.len()),
            Err(Error::Authentication { .. })
        ));
        assert!(matches!(
            Codec::new(None, ZSTD_LEVEL).decode(ObjectKind::Chunk, "id1", &stored, data.len()),
            Err(Error::KeyRequired)
        ));
    }
}
