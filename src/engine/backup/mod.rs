//! Hot VM backups: the repository layer, a deduplicating, optionally encrypted store of disk
//! images on a local directory or S3, and ([`hot`]) the vSphere side: snapshots, reading disks
//! through the datastore interface with changed block tracking, and restores. Only [`hot`]
//! talks to vSphere; the repository modules know nothing of it.
//!
//! - Disks are cut into fixed-size chunks (4 MiB by default, set at init), so a CBT area maps
//!   to chunk indexes; chunks are named by BLAKE3 (keyed when encrypted), compressed with zstd
//!   level 3 when that helps, and sealed with XChaCha20-Poly1305 when the repository is
//!   encrypted ([`chunk`], [`object_format`], [`crypto`]).
//! - A backup is one manifest listing every chunk of every disk, so each backup is a logical
//!   full and an incremental just repeats unchanged ids ([`manifest`], [`mod@write`], [`session`]).
//! - Objects are written atomically through one [`backend::Backend`] trait, local or S3.
//!
//! # Concurrency and garbage collection
//!
//! Any number of backups (and verifies) run together under shared leases; prune and gc take
//! the exclusive lease and so never overlap a backup ([`lock`]); a waiting prune or gc holds
//! off new backups, so it is never starved. One VM is backed up by one process at a time,
//! under its own exclusive lease, which also decides which backup snapshots are leftovers
//! ([`vm_lease`]). Chunks are written before the
//! manifest that references them, and a backup commits its manifest only after renewing its
//! lease, so a backup whose lease lapsed (and which a gc may have overlapped) never commits.
//! On top of that gc applies the "older than the oldest running backup" rule: it deletes an
//! unreferenced chunk only if it was last modified before
//! `min(gc start, start of the oldest backup lease present) - grace` ([`maintenance`]).
//! A two-phase mark with a grace period was not chosen: marking needs per-chunk timestamps
//! that S3 cannot update without rewriting each object.

pub mod backend;
pub mod buffers;
pub mod chunk;
pub mod config;
pub mod crypto;
pub mod error;
pub mod hot;
pub mod lock;
pub mod maintenance;
pub mod manifest;
pub mod object_format;
pub mod prune;
pub mod read_back;
pub mod repository;
pub mod session;
pub mod verify;
pub mod vm_lease;
pub mod write;

#[cfg(test)]
pub(crate) mod test_support;

pub use backend::{Backend, LocalBackend, RepositoryUrl, S3Backend, S3Options};
pub use chunk::{ChunkId, DEFAULT_CHUNK_SIZE};
pub use crypto::{KdfParams, KeySource, Passphrase};
pub use error::{Error, Result};
pub use lock::LockOptions;
pub use maintenance::{GcOptions, GcReport, PruneOptions, PruneReport};
pub use manifest::{BackupId, BackupSummary, Consistency, DiskManifest, Manifest, VmRef};
pub use prune::KeepPolicy;
pub use read_back::RestoreStats;
pub use repository::{InitOptions, Repository};
pub use session::{BackupRequest, BackupSession};
pub use verify::{VerifyOptions, VerifyReport};
pub use vm_lease::VmLease;
pub use write::{DiskInfo, ForwardOnly};
