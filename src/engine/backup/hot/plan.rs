//! Deciding, disk by disk, whether a backup can be incremental to the previous one and, if not,
//! why it reads the whole disk. Pure: the vSphere query happens afterwards, and may still turn an
//! incremental into a full read.

use serde::Serialize;

use crate::engine::backup::manifest::{DiskManifest, Manifest};
use crate::vsphere::cbt::{change_id_epoch, FrozenDisk};

/// Why a disk is read in full.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum FullReason {
    /// `--full` was asked for.
    Requested,
    /// The repository holds no earlier backup of this VM.
    NoPreviousBackup,
    /// The previous backup has no disk with this label.
    NewDisk,
    /// Changed block tracking is off for the VM (or the disk has no change id).
    CbtOff,
    /// The previous backup recorded no change id for the disk.
    NoPreviousChangeId,
    /// The change id belongs to another tracking epoch: CBT was reset since the previous backup.
    ChangeIdReset,
    /// The disk's capacity changed.
    Resized {
        /// Capacity in the previous backup.
        from: u64,
        /// Capacity now.
        to: u64,
    },
    /// The previous backup used another chunk size.
    ChunkSizeChanged,
    /// `QueryChangedDiskAreas` failed.
    QueryFailed {
        /// vSphere's message.
        message: String,
    },
}

impl std::fmt::Display for FullReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FullReason::Requested => f.write_str("a full backup was requested"),
            FullReason::NoPreviousBackup => f.write_str("no earlier backup of this VM"),
            FullReason::NewDisk => f.write_str("the disk is not in the previous backup"),
            FullReason::CbtOff => f.write_str("changed block tracking is off"),
            FullReason::NoPreviousChangeId => {
                f.write_str("the previous backup recorded no change id for the disk")
            }
            FullReason::ChangeIdReset => {
                f.write_str("changed block tracking was reset since the previous backup")
            }
            FullReason::Resized { from, to } => {
                write!(f, "the disk was resized from {from} to {to} bytes")
            }
            FullReason::ChunkSizeChanged => {
                f.write_str("the previous backup used another chunk size")
            }
            FullReason::QueryFailed { message } => {
                write!(f, "QueryChangedDiskAreas failed: {message}")
            }
        }
    }
}

/// How a disk was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum DiskMode {
    /// Every chunk was read (and deduplicated against the repository).
    Full {
        /// Why.
        #[serde(flatten)]
        reason: FullReason,
        /// Whether only the areas CBT reports in use were read (the rest is known zero).
        allocated_only: bool,
    },
    /// Only chunks CBT reports changed since the previous backup were read.
    Incremental {
        /// The change id the changes were asked since.
        since: String,
        /// Bytes CBT reported changed.
        changed_bytes: u64,
    },
}

/// The base for an incremental read of one disk: the previous backup's entry and its change id.
#[derive(Debug)]
pub struct Base<'a> {
    /// The disk in the previous backup.
    pub previous: &'a DiskManifest,
    /// Its change id.
    pub change_id: &'a str,
}

/// Whether `disk` (labelled `label`) can be read incrementally to `previous`.
pub fn incremental_base<'a>(
    disk: &FrozenDisk,
    label: &str,
    previous: Option<&'a Manifest>,
    full_requested: bool,
    chunk_size: u32,
) -> Result<Base<'a>, FullReason> {
    if full_requested {
        return Err(FullReason::Requested);
    }
    let previous = previous.ok_or(FullReason::NoPreviousBackup)?;
    let prev_disk = previous.disk(label).ok_or(FullReason::NewDisk)?;
    let now = disk.change_id.as_deref().ok_or(FullReason::CbtOff)?;
    let then = prev_disk
        .change_id
        .as_deref()
        .ok_or(FullReason::NoPreviousChangeId)?;
    if prev_disk.capacity != disk.capacity {
        return Err(FullReason::Resized {
            from: prev_disk.capacity,
            to: disk.capacity,
        });
    }
    if prev_disk.chunk_size != chunk_size {
        return Err(FullReason::ChunkSizeChanged);
    }
    if change_id_epoch(then) != change_id_epoch(now) {
        return Err(FullReason::ChangeIdReset);
    }
    Ok(Base {
        previous: prev_disk,
        change_id: then,
    })
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::engine::backup::manifest::{BackupId, Consistency, VmRef, MANIFEST_FORMAT};

    fn frozen(capacity: u64, change_id: Option<&str>) -> FrozenDisk {
        FrozenDisk {
            key: 2000,
            label: "Hard disk 1".into(),
            controller_key: 1000,
            unit_number: 0,
            capacity,
            base_file: "[ds] a/a.vmdk".into(),
            change_id: change_id.map(str::to_string),
            thin: true,
        }
    }

    fn manifest(capacity: u64, change_id: Option<&str>) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            id: BackupId::new(Utc::now()),
            vm: VmRef {
                name: "a".into(),
                uuid: "u".into(),
            },
            created: Utc::now(),
            finished: Utc::now(),
            consistency: Consistency::CrashConsistent,
            vm_config: serde_json::Value::Null,
            parent: None,
            consistency_note: None,
            job: None,
            endpoint: None,
            disks: vec![DiskManifest {
                label: "Hard disk 1".into(),
                capacity,
                chunk_size: 65536,
                chunks: vec![None; capacity.div_ceil(65536) as usize],
                bytes_read: 0,
                bytes_reused: 0,
                bytes_zero: 0,
                bytes_new: 0,
                bytes_stored: 0,
                change_id: change_id.map(str::to_string),
            }],
        }
    }

    #[test]
    fn every_reason_for_a_full_read() {
        let cs = 65536;
        let m = manifest(1 << 20, Some("52 aa/3"));
        let d = frozen(1 << 20, Some("52 aa/5"));
        let base = incremental_base(&d, "Hard disk 1", Some(&m), false, cs).unwrap();
        assert_eq!(base.change_id, "52 aa/3");
        let full = |d: &FrozenDisk, m: Option<&Manifest>, label: &str, req: bool, cs: u32| {
            incremental_base(d, label, m, req, cs).unwrap_err()
        };
        assert_eq!(
            full(&d, Some(&m), "Hard disk 1", true, cs),
            FullReason::Requested
        );
        assert_eq!(
            full(&d, None, "Hard disk 1", false, cs),
            FullReason::NoPreviousBackup
        );
        assert_eq!(
            full(&d, Some(&m), "Hard disk 2", false, cs),
            FullReason::NewDisk
        );
        assert_eq!(
            full(&frozen(1 << 20, None), Some(&m), "Hard disk 1", false, cs),
            FullReason::CbtOff
        );
        assert_eq!(
            full(&d, Some(&manifest(1 << 20, None)), "Hard disk 1", false, cs),
            FullReason::NoPreviousChangeId
        );
        assert_eq!(
            full(
                &frozen(2 << 20, Some("52 aa/5")),
                Some(&m),
                "Hard disk 1",
                false,
                cs
            ),
            FullReason::Resized {
                from: 1 << 20,
                to: 2 << 20
            }
        );
        assert_eq!(
            full(&d, Some(&m), "Hard disk 1", false, 1 << 22),
            FullReason::ChunkSizeChanged
        );
        assert_eq!(
            full(
                &frozen(1 << 20, Some("52 bb/1")),
                Some(&m),
                "Hard disk 1",
                false,
                cs
            ),
            FullReason::ChangeIdReset
        );
    }
}
