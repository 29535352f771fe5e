//! A command's failure: the message for the user and the exit status scripts act on.

use ceso::engine::backup::hot::HotError;
use ceso::engine::backup::Error as RepoError;

/// Exit statuses (also listed in `--help`).
pub mod code {
    /// Success.
    pub const OK: u8 = 0;
    /// The command failed.
    pub const FAILURE: u8 = 1;
    /// Bad usage: unknown flag, missing setting, malformed value.
    pub const USAGE: u8 = 2;
    /// `verify` found missing or corrupt data.
    pub const DAMAGED: u8 = 3;
    /// The repository is locked by another operation (prune/gc, or a backup during prune/gc).
    pub const LOCKED: u8 = 4;
    /// Another backup of the same VM is running.
    pub const BUSY: u8 = 5;
    /// Interrupted (Ctrl-C, SIGTERM); the snapshot was removed and nothing committed.
    pub const INTERRUPTED: u8 = 130;
}

/// A failed command.
#[derive(Debug)]
pub struct Failure {
    /// Exit status.
    pub code: u8,
    /// What went wrong.
    pub message: String,
}

impl Failure {
    /// A failure with this status.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A usage error (status 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(code::USAGE, message)
    }
}

impl From<RepoError> for Failure {
    fn from(e: RepoError) -> Self {
        let status = match &e {
            RepoError::Locked { .. } => code::LOCKED,
            RepoError::Interrupted => code::INTERRUPTED,
            RepoError::InvalidUrl { .. } | RepoError::KeyRequired | RepoError::KeyNotExpected => {
                code::USAGE
            }
            _ => code::FAILURE,
        };
        Failure::new(status, e.to_string())
    }
}

impl From<HotError> for Failure {
    fn from(e: HotError) -> Self {
        match e {
            HotError::Repository(e) => e.into(),
            HotError::Cancelled => Failure::new(code::INTERRUPTED, e.to_string()),
            e @ HotError::Busy { .. } => Failure::new(code::BUSY, e.to_string()),
            HotError::VmExists { name } => Failure::new(
                code::FAILURE,
                format!(
                    "a VM named {name:?} already exists; restore under another name, or add \
                     --force to replace it (it must be powered off)"
                ),
            ),
            e => Failure::new(code::FAILURE, e.to_string()),
        }
    }
}
