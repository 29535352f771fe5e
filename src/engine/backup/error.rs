//! The backup engine's one error type: a variant per failure a caller acts on differently.

use std::fmt;

use super::lock::LeaseInfo;

/// An error from the backup repository.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An object (chunk, manifest, lease) does not exist.
    #[error("{what} not found in the repository")]
    NotFound {
        /// What was looked for, e.g. `manifests/2026-...`.
        what: String,
    },
    /// An object that must be created once already exists.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What was being created.
        what: String,
    },
    /// The location holds no repository (no `config` object).
    #[error("no backup repository at {location} (no `config` object); initialise it first")]
    NotARepository {
        /// The backend's location.
        location: String,
    },
    /// The repository URL could not be understood.
    #[error("invalid repository URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// An argument was out of range or inconsistent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The repository is encrypted and no passphrase or key file was given.
    #[error("the repository is encrypted: give its passphrase or key file")]
    KeyRequired,
    /// A key was given for a repository that is not encrypted.
    #[error("the repository is not encrypted, but a passphrase or key file was given")]
    KeyNotExpected,
    /// The passphrase or key file does not match the repository's key-check value.
    #[error("wrong passphrase or key file for this repository")]
    WrongKey,
    /// An encrypted object failed authentication: modified, truncated, or moved to another name.
    #[error("{what} failed authentication: it was modified or does not belong at this name")]
    Authentication {
        /// The object, e.g. `chunk 1f2e...`.
        what: String,
    },
    /// An object's content does not match its name or format.
    #[error("{what} is corrupt: {reason}")]
    Corrupt {
        /// The object.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The repository was written by a newer format.
    #[error("unsupported repository format {found} (this build reads format {supported})")]
    UnsupportedFormat {
        /// The format found in `config`.
        found: u32,
        /// The format this build reads and writes.
        supported: u32,
    },
    /// A conflicting lease is held (an exclusive one, or any one when asking for exclusive).
    #[error("the repository is locked by {}", Holders(.holders))]
    Locked {
        /// The leases in the way.
        holders: Vec<LeaseInfo>,
    },
    /// Our lease expired or was removed; work done under it must not be committed.
    #[error("lease {key} was lost ({reason}); the operation was abandoned")]
    LeaseLost {
        /// The lease object.
        key: String,
        /// Expired, removed, or taken over.
        reason: String,
    },
    /// Stopped on request (Ctrl-C, SIGTERM, a cancelled token); leases were given back and
    /// nothing half-done was committed.
    #[error("interrupted; nothing half-done was committed")]
    Interrupted,
    /// The disk source ended before the disk's capacity.
    #[error("the disk source ended at byte {at}, before the capacity of {capacity} bytes")]
    ShortRead {
        /// Where the data ended.
        at: u64,
        /// The capacity that was promised.
        capacity: u64,
    },
    /// A local I/O error (file backend, disk source, restore target).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An error from the object store (S3).
    #[error("{context}: {source}")]
    Store {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<object_store::Error>,
    },
    /// Key derivation failed (bad parameters).
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

impl Error {
    /// Whether this is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Lease holders as text, e.g. for "another backup of the VM is running (...)".
pub(crate) struct Holders<'a>(pub(crate) &'a [LeaseInfo]);

impl fmt::Display for Holders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, h) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(
                f,
                "{}{} lease of {} ({} on {}, pid {}, until {})",
                if h.waiting { "waiting " } else { "" },
                h.kind,
                h.purpose,
                h.holder,
                h.host,
                h.pid,
                h.expires.format("%Y-%m-%dT%H:%M:%SZ")
            )?;
        }
        Ok(())
    }
}
