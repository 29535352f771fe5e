//! What a running backup or restore reports as it goes, for progress bars and JSON lines.

use std::sync::Arc;

use serde::Serialize;

/// One progress event.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Progress {
    /// Something worth telling (a leftover snapshot removed, a fallback to a full read).
    Note {
        /// The message.
        message: String,
    },
    /// A disk transfer starts.
    DiskStarted {
        /// The disk's label.
        disk: String,
        /// Its capacity.
        capacity: u64,
        /// Bytes that will be transferred.
        to_transfer: u64,
    },
    /// Bytes moved (read from the datastore, or uploaded to it).
    Bytes {
        /// The disk's label.
        disk: String,
        /// How many, since the last event.
        bytes: u64,
    },
    /// A disk is done.
    DiskFinished {
        /// The disk's label.
        disk: String,
    },
}

/// Receives progress events; must be cheap (called from transfer tasks).
pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

/// A sink that drops everything.
pub fn no_progress() -> ProgressSink {
    Arc::new(|_| {})
}
