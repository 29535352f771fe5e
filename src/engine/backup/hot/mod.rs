//! Hot backups of running vSphere VMs into a [`Repository`](super::Repository), and restores
//! from them.
//!
//! A backup takes the VM's lease in the repository (one backup of a VM at a time, across every
//! process), snapshots the VM (no memory; quiesced when VMware Tools run, else crash-consistent
//! and recorded as such, or, with [`Quiesce::Required`], quiesced or failed), reads each disk's
//! base extent as the snapshot froze it through the datastore HTTPS interface (Range requests
//! of one chunk each, a bounded number ahead, optionally rate-limited), and removes the
//! snapshot, also on failure, cancellation and loss of the lease; snapshots whose lease lapsed
//! (a crashed run's) are removed by the next backup of the VM ([`snapshot`]).
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
pub use snapshot::Quiesce;
pub use spec::VmSpec;
