//! The repository's `config` object: format, chunk size, compression and encryption settings.
//!
//! It is written once by `init` (a conditional create, so two concurrent inits cannot both
//! win) and never encrypted: it holds only what is needed to unlock the rest (KDF salt and
//! parameters, the key-check value).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::crypto::EncryptionConfig;
use super::error::{Error, Result};
use super::manifest::rfc3339;

/// The repository format this build reads and writes.
pub const REPOSITORY_FORMAT: u32 = 1;
/// The key of the config object.
pub const CONFIG_KEY: &str = "config";

/// Compression settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompressionConfig {
    /// Always `zstd`.
    pub algorithm: String,
    /// The zstd level objects are written at.
    pub level: i32,
}

/// The repository's `config` object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    /// [`REPOSITORY_FORMAT`].
    pub format: u32,
    /// A random id naming this repository.
    pub repository_id: String,
    /// When it was initialised.
    #[serde(with = "rfc3339")]
    pub created: DateTime<Utc>,
    /// Chunk size in bytes (a power of two).
    pub chunk_size: u32,
    /// Compression settings.
    pub compression: CompressionConfig,
    /// Encryption settings; absent for an unencrypted repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionConfig>,
}

impl RepoConfig {
    /// Parses and checks a `config` object.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let config: RepoConfig =
            serde_json::from_slice(bytes).map_err(|e| Error::corrupt(CONFIG_KEY, e.to_string()))?;
        if config.format != REPOSITORY_FORMAT {
            return Err(Error::UnsupportedFormat {
                found: config.format,
                supported: REPOSITORY_FORMAT,
            });
        }
        super::chunk::validate_chunk_size(config.chunk_size)
            .map_err(|e| Error::corrupt(CONFIG_KEY, e.to_string()))?;
        if config.compression.algorithm != "zstd" {
            return Err(Error::corrupt(
                CONFIG_KEY,
                format!("unknown compression {:?}", config.compression.algorithm),
            ));
        }
        Ok(config)
    }

    /// The object's JSON (pretty: people read it).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("config always serialises")
    }
}
