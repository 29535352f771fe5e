//! The hot-backup layer's error: a vSphere failure (with what was being done), a repository
//! failure, or one of the few conditions a caller handles on its own.

use crate::engine::backup::error::Error as RepoError;
use crate::vsphere;

/// An error of a hot backup or restore.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HotError {
    /// vSphere refused or failed.
    #[error("unable to {action}: {source}")]
    Vsphere {
        /// What was being done, e.g. `create the backup snapshot of web-1`.
        action: String,
        /// vSphere's error.
        #[source]
        source: vsphere::Error,
    },
    /// The repository failed.
    #[error(transparent)]
    Repository(#[from] RepoError),
    /// Stopped on request (Ctrl-C, a cancelled token).
    #[error("cancelled; the backup snapshot was removed and nothing was committed")]
    Cancelled,
    /// Another backup of this VM holds its lease.
    #[error("another backup of {vm} is running ({holder}); try again later")]
    Busy {
        /// The VM.
        vm: String,
        /// Who holds its lease, e.g. `backup of web-1 on backup-1, pid 4242, until ...`.
        holder: String,
    },
    /// A quiesced snapshot was required and could not be had.
    #[error("{vm} could not be quiesced ({reason}); quiesce mode never falls back to a crash-consistent backup")]
    NotQuiesced {
        /// The VM.
        vm: String,
        /// Why.
        reason: String,
    },
    /// A restore's target name is taken and replacing that VM was not asked for.
    #[error(
        "a VM named {name:?} already exists; restore under another name, or replace it \
         (it must be powered off)"
    )]
    VmExists {
        /// The name.
        name: String,
    },
    /// The VM a restore would replace is not powered off.
    #[error("VM {name:?} is {state}; power it off first to restore over it")]
    NotPoweredOff {
        /// The VM.
        name: String,
        /// Its power state, e.g. `poweredOn`.
        state: String,
    },
    /// The request or the data does not fit (unknown disk, missing config, ...).
    #[error("{0}")]
    Invalid(String),
    /// A local file could not be written or read.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl HotError {
    /// A vSphere error with the action it interrupted.
    pub fn vsphere(action: impl Into<String>, source: vsphere::Error) -> Self {
        if source.kind == vsphere::ErrorKind::Cancelled {
            return HotError::Cancelled;
        }
        HotError::Vsphere {
            action: action.into(),
            source,
        }
    }

    /// Whether the failure was the object not existing.
    pub fn is_not_found(&self) -> bool {
        match self {
            HotError::Vsphere { source, .. } => source.is_not_found(),
            HotError::Repository(e) => e.is_not_found(),
            _ => false,
        }
    }
}

/// Result with [`HotError`].
pub type HotResult<T> = std::result::Result<T, HotError>;
