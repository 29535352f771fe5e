//! Hot backups of running vSphere VMs into a [`Repository`](super::Repository), and restores
//! from them.
//!
//! A backup snapshots the VM (no memory; quiesced when VMware Tools run, else
//! crash-consistent), reads each disk's base extent as the snapshot froze it through the
//! datastore HTTPS interface (Range requests of one chunk each, a bounded number ahead,
//! optionally rate-limited), and removes the snapshot, also on failure and cancellation;
//! snapshots that crashed runs left behind are removed by the next run ([`snapshot`]).
//!
//! With changed block tracking on and a previous backup of the VM that recorded the disk's
//! change id, only the chunks `QueryChangedDiskAreas` reports changed are read and the others
//! are referenced from the previous manifest, so every backup stays a logical full; otherwise
//! the disk is read in full (still deduplicated) and the report says why ([`plan`]). A full read
//! with CBT on reads only the areas CBT reports in use.
//!
//! The VM's configuration goes into the manifest ([`spec`]); [`restore`] rebuilds a VM from it
//! and uploads the disks, or writes one disk to a sparse raw file.

pub mod backup;
pub mod error;
pub mod plan;
pub mod progress;
pub mod restore;
pub mod snapshot;
pub mod source;
pub mod sparse;
pub mod spec;
pub mod throttle;

pub use backup::{backup_vm, BackupOptions, BackupReport, DiskReport};
pub use error::{HotError, HotResult};
pub use plan::{DiskMode, FullReason};
pub use progress::{no_progress, Progress, ProgressSink};
pub use restore::{restore_disk_to_file, restore_vm, RestoreOptions, RestoreReport};
pub use spec::VmSpec;
