//! Client-side encryption keys: derivation (Argon2id from a passphrase, or a key file), the
//! key-check value kept in `config`, and XChaCha20-Poly1305 sealing of stored objects.
//!
//! One 32-byte master key comes from the passphrase (Argon2id with the salt and cost parameters
//! stored in `config`) or from a key file (32 random bytes, as 64 hex digits). Three independent
//! values are derived from it with BLAKE3's `derive_key`: the object encryption key, the chunk-id
//! key (keyed BLAKE3, so chunk names leak nothing about content) and the key-check value stored
//! in `config` (one-way, so it reveals nothing about the key but tells a wrong passphrase apart
//! from a damaged repository).

use std::fmt;
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};

const CONTEXT_ENCRYPTION: &str = "ceso-backup 2026-11 object encryption key v1";
const CONTEXT_CHUNK_ID: &str = "ceso-backup 2026-11 chunk id key v1";
const CONTEXT_KEY_CHECK: &str = "ceso-backup 2026-11 key check v1";
const CONTEXT_KEY_FILE: &str = "ceso-backup 2026-11 key file master key v1";
const CONTEXT_DEFINITION_MAC: &str = "ceso-backup 2026-11 control object mac key v1";

/// The one cipher this build writes.
pub const CIPHER: &str = "xchacha20-poly1305";
/// Nonce length of XChaCha20-Poly1305.
pub const NONCE_LEN: usize = 24;
/// Authentication tag length.
pub const TAG_LEN: usize = 16;

/// A passphrase; never shown by `Debug`.
#[derive(Clone)]
pub struct Passphrase(String);

impl Passphrase {
    /// Wraps a passphrase.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(***)")
    }
}

/// Where the repository key comes from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// A passphrase, stretched with Argon2id.
    Passphrase(Passphrase),
    /// A key file holding 32 random bytes (64 hex digits, or the raw bytes).
    KeyFile(PathBuf),
}

/// Which kind of [`KeySource`] a repository was created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    /// Argon2id over a passphrase.
    Passphrase,
    /// A key file.
    KeyFile,
}

/// Argon2id parameters, stored in `config` next to the salt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Always `argon2id`.
    pub algorithm: String,
    /// Argon2 version (19 = 0x13).
    pub version: u32,
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
    /// Random salt, hex.
    pub salt: String,
}

impl KdfParams {
    /// RFC 9106's second recommended setting (64 MiB, 3 passes) with one lane and a fresh
    /// 16-byte salt: about a quarter of a second on one core of this project's machines.
    pub fn recommended() -> Self {
        Self::with_costs(64 * 1024, 3, 1)
    }

    /// These costs with a fresh 16-byte salt (tests use small costs).
    pub fn with_costs(memory_kib: u32, iterations: u32, parallelism: u32) -> Self {
        let mut salt = [0u8; 16];
        rand::fill(&mut salt);
        Self {
            algorithm: "argon2id".into(),
            version: 0x13,
            memory_kib,
            iterations,
            parallelism,
            salt: hex::encode(salt),
        }
    }

    fn derive(&self, passphrase: &Passphrase) -> Result<[u8; 32]> {
        if self.algorithm != "argon2id" || self.version != 0x13 {
            return Err(Error::Kdf(format!(
                "unsupported KDF {} version {}",
                self.algorithm, self.version
            )));
        }
        let salt = hex::decode(&self.salt).map_err(|e| Error::Kdf(format!("salt: {e}")))?;
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| Error::Kdf(e.to_string()))?;
        let mut out = [0u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase.0.as_bytes(), &salt, &mut out)
            .map_err(|e| Error::Kdf(e.to_string()))?;
        Ok(out)
    }
}

/// The `encryption` section of the repository `config`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionConfig {
    /// The AEAD, [`CIPHER`].
    pub cipher: String,
    /// Passphrase or key file.
    pub key_kind: KeyKind,
    /// Argon2id parameters and salt (passphrase repositories only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<KdfParams>,
    /// BLAKE3 `derive_key` of the master key, hex: tells a wrong key from a damaged object.
    pub key_check: String,
}

/// The keys of an unlocked encrypted repository.
pub struct Keys {
    cipher: XChaCha20Poly1305,
    chunk_id_key: [u8; 32],
    definition_key: [u8; 32],
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(***)")
    }
}

impl Keys {
    fn from_master(master: &[u8; 32]) -> Self {
        let enc = blake3::derive_key(CONTEXT_ENCRYPTION, master);
        Self {
            cipher: XChaCha20Poly1305::new_from_slice(&enc).expect("32-byte key"),
            chunk_id_key: blake3::derive_key(CONTEXT_CHUNK_ID, master),
            definition_key: blake3::derive_key(CONTEXT_DEFINITION_MAC, master),
        }
    }

    /// The authenticator of the repository's plain-JSON control objects (job definitions).
    pub fn definition_authenticator(&self) -> DefinitionAuthenticator {
        DefinitionAuthenticator {
            key: self.definition_key,
        }
    }

    /// The key for keyed-BLAKE3 chunk ids.
    pub fn chunk_id_key(&self) -> [u8; 32] {
        self.chunk_id_key
    }

    /// Creates the keys and the `encryption` config for a new repository.
    pub fn create(source: &KeySource, kdf: Option<KdfParams>) -> Result<(Keys, EncryptionConfig)> {
        let (kind, kdf) = match source {
            KeySource::Passphrase(_) => (
                KeyKind::Passphrase,
                Some(kdf.unwrap_or_else(KdfParams::recommended)),
            ),
            KeySource::KeyFile(_) => (KeyKind::KeyFile, None),
        };
        let master = master_key(source, kdf.as_ref())?;
        let config = EncryptionConfig {
            cipher: CIPHER.into(),
            key_kind: kind,
            kdf,
            key_check: hex::encode(blake3::derive_key(CONTEXT_KEY_CHECK, &master)),
        };
        Ok((Keys::from_master(&master), config))
    }

    /// Unlocks a repository: derives the master key and checks it against `key_check`.
    pub fn unlock(source: &KeySource, config: &EncryptionConfig) -> Result<Keys> {
        if config.cipher != CIPHER {
            return Err(Error::Kdf(format!("unsupported cipher {}", config.cipher)));
        }
        let master = match (source, config.key_kind) {
            (KeySource::Passphrase(_), KeyKind::Passphrase) => {
                master_key(source, config.kdf.as_ref())?
            }
            (KeySource::KeyFile(_), KeyKind::KeyFile) => master_key(source, None)?,
            (KeySource::Passphrase(_), KeyKind::KeyFile) => {
                return Err(Error::InvalidArgument(
                    "this repository is unlocked with a key file, not a passphrase".into(),
                ))
            }
            (KeySource::KeyFile(_), KeyKind::Passphrase) => {
                return Err(Error::InvalidArgument(
                    "this repository is unlocked with a passphrase, not a key file".into(),
                ))
            }
        };
        let check = blake3::Hash::from(blake3::derive_key(CONTEXT_KEY_CHECK, &master));
        let stored = blake3::Hash::from_hex(&config.key_check)
            .map_err(|_| Error::corrupt("config", "key_check is not 64 hex digits"))?;
        // blake3::Hash compares in constant time.
        if check != stored {
            return Err(Error::WrongKey);
        }
        Ok(Keys::from_master(&master))
    }

    /// Encrypts `plaintext` and returns `nonce || ciphertext || tag` (objects are sealed in
    /// place by [`Keys::seal_in_place`]; this copying form is for tests).
    #[cfg(test)]
    pub fn seal(&self, aad: &[u8], plaintext: Vec<u8>) -> Vec<u8> {
        let mut buf = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        buf.resize(NONCE_LEN, 0);
        buf.extend_from_slice(&plaintext);
        self.seal_in_place(aad, &mut buf, 0);
        buf
    }

    /// Seals `buf[at..]` in place, without copying it: the caller reserves `NONCE_LEN` bytes
    /// at `at` for the nonce, the plaintext follows, and the tag is appended, so `buf[at..]`
    /// ends as `nonce || ciphertext || tag`, as [`Keys::seal`] writes.
    pub fn seal_in_place(&self, aad: &[u8], buf: &mut Vec<u8>, at: usize) {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        buf[at..at + NONCE_LEN].copy_from_slice(&nonce);
        let tag = self
            .cipher
            .encrypt_inout_detached(
                &XNonce::from(nonce),
                aad,
                (&mut buf[at + NONCE_LEN..]).into(),
            )
            .expect("XChaCha20-Poly1305 encrypts any length this engine writes");
        buf.extend_from_slice(tag.as_slice());
    }

    /// Decrypts `nonce || ciphertext || tag`; `None` when authentication fails.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).ok()?;
        let mut buf = ciphertext.to_vec();
        self.cipher.decrypt_in_place(&nonce, aad, &mut buf).ok()?;
        Some(buf)
    }
}

/// Authenticates control objects the repository keeps as plain JSON (job definitions), so in
/// an encrypted repository only holders of its key can write one a daemon accepts: a keyed
/// BLAKE3 MAC, under a key derived from the master key, over the object's kind, name and
/// canonical bytes.
#[derive(Clone)]
pub struct DefinitionAuthenticator {
    key: [u8; 32],
}

impl fmt::Debug for DefinitionAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DefinitionAuthenticator(***)")
    }
}

impl DefinitionAuthenticator {
    fn tag(&self, kind: &str, name: &str, data: &[u8]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        for part in [kind.as_bytes(), name.as_bytes()] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.update(data);
        h.finalize()
    }

    /// The MAC of object `name` of `kind` with these bytes, as hex.
    pub fn sign(&self, kind: &str, name: &str, data: &[u8]) -> String {
        self.tag(kind, name, data).to_hex().to_string()
    }

    /// Whether `mac` (hex) is the MAC of these bytes (compared in constant time).
    pub fn verify(&self, kind: &str, name: &str, data: &[u8], mac: &str) -> bool {
        blake3::Hash::from_hex(mac).is_ok_and(|m| m == self.tag(kind, name, data))
    }
}

fn master_key(source: &KeySource, kdf: Option<&KdfParams>) -> Result<[u8; 32]> {
    match source {
        KeySource::Passphrase(p) => kdf
            .ok_or_else(|| {
                Error::corrupt("config", "passphrase repository without KDF parameters")
            })?
            .derive(p),
        KeySource::KeyFile(path) => {
            let raw = read_key_file(path)?;
            Ok(blake3::derive_key(CONTEXT_KEY_FILE, &raw))
        }
    }
}

/// Reads a key file: 64 hex digits (surrounding whitespace ignored) or exactly 32 raw bytes.
pub fn read_key_file(path: &Path) -> Result<[u8; 32]> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::io(format!("reading key file {}", path.display()), e))?;
    let mut key = [0u8; 32];
    if let Ok(text) = std::str::from_utf8(&bytes) {
        if hex::decode_to_slice(text.trim(), &mut key).is_ok() {
            return Ok(key);
        }
    }
    if bytes.len() == 32 {
        key.copy_from_slice(&bytes);
        return Ok(key);
    }
    Err(Error::InvalidArgument(format!(
        "key file {} must hold 64 hex digits or 32 raw bytes",
        path.display()
    )))
}

/// Writes a new key file of 32 random bytes as 64 hex digits, readable by its owner only;
/// refuses to overwrite an existing file.
pub fn generate_key_file(path: &Path) -> Result<()> {
    use std::io::Write;
    let mut key = [0u8; 32];
    rand::fill(&mut key);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let context = || format!("writing key file {}", path.display());
    let mut file = options.open(path).map_err(|e| Error::io(context(), e))?;
    file.write_all(format!("{}\n", hex::encode(key)).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(context(), e))
}

#[cfg(test)]
pub(crate) fn test_kdf() -> KdfParams {
    // Small costs keep unit tests fast; real repositories use `recommended()`.
    KdfParams::with_costs(64, 1, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(p: &str) -> KeySource {
        KeySource::Passphrase(Passphrase::new(p))
    }

    #[test]
    fn passphrase_unlocks_and_wrong_passphrase_is_a_clear_error() {
        let (keys, config) = Keys::create(&pass("correct horse"), Some(test_kdf())).unwrap();
        assert_eq!(config.key_kind, KeyKind::Passphrase);
        let again = Keys::unlock(&pass("correct horse"), &config).unwrap();
        assert_eq!(keys.chunk_id_key(), again.chunk_id_key());
        let err = Keys::unlock(&pass("battery staple"), &config).unwrap_err();
        assert!(matches!(err, Error::WrongKey), "{err}");
        assert_eq!(
            err.to_string(),
            "wrong passphrase or key file for this repository"
        );
    }

    #[test]
    fn key_file_round_trip_and_kind_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo.key");
        generate_key_file(&path).unwrap();
        assert!(
            generate_key_file(&path).is_err(),
            "never overwrites a key file"
        );
        let source = KeySource::KeyFile(path.clone());
        let (keys, config) = Keys::create(&source, None).unwrap();
        assert!(config.kdf.is_none());
        assert_eq!(
            Keys::unlock(&source, &config).unwrap().chunk_id_key(),
            keys.chunk_id_key()
        );
        assert!(matches!(
            Keys::unlock(&pass("x"), &config),
            Err(Error::InvalidArgument(_))
        ));
        let other = dir.path().join("other.key");
        std::fs::write(&other, [7u8; 32]).unwrap();
        assert!(matches!(
            Keys::unlock(&KeySource::KeyFile(other), &config),
            Err(Error::WrongKey)
        ));
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "not a key").unwrap();
        assert!(read_key_file(&bad).is_err());
    }

    #[test]
    fn sealed_objects_detect_tampering_and_wrong_context() {
        let (keys, _) = Keys::create(&pass("p"), Some(test_kdf())).unwrap();
        let sealed = keys.seal(b"chunk:aa", b"secret data".to_vec());
        assert_eq!(sealed.len(), NONCE_LEN + 11 + TAG_LEN);
        assert_eq!(keys.open(b"chunk:aa", &sealed).unwrap(), b"secret data");
        assert!(keys.open(b"chunk:bb", &sealed).is_none(), "other AAD");
        for i in [0, NONCE_LEN, sealed.len() - 1] {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(keys.open(b"chunk:aa", &t).is_none(), "flipped byte {i}");
        }
        assert!(keys.open(b"chunk:aa", &sealed[..20]).is_none());
        assert_ne!(
            keys.seal(b"", b"same".to_vec()),
            keys.seal(b"", b"same".to_vec()),
            "fresh nonce per object"
        );
    }
}
