//! Backup manifests: what one backup of one VM holds, disk by disk, as lists of chunk ids.
//!
//! Every backup is a logical full: its manifest lists a chunk (or a zero marker) for every
//! chunk index of every disk, and an incremental backup simply repeats the ids of the previous
//! manifest's unchanged chunks. Restoring, verifying, pruning and garbage collection therefore
//! never follow a chain of backups.
//!
//! All-zero chunks are `null` in `chunks` (a sparse marker) rather than a stored chunk: zero
//! detection is a `memcmp`, far cheaper than hashing and compressing 4 MiB; restore writes zeros
//! without a fetch; verify and gc never look at them; and thin-provisioned disks, which are
//! mostly zeros, cost one JSON `null` per empty chunk.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::chunk::{chunk_count, chunk_len, ChunkId};
use super::error::{Error, Result};

/// The manifest format this build writes.
pub const MANIFEST_FORMAT: u32 = 1;
/// The folder manifests live under.
pub const MANIFEST_PREFIX: &str = "manifests/";

/// A backup's id: its UTC start time, sortable as text, plus a short random suffix, e.g.
/// `2026-11-27T05-20-00Z-3fa9c1`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackupId(String);

impl BackupId {
    /// A new id for a backup started at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        let mut suffix = [0u8; 3];
        rand::fill(&mut suffix);
        Self(format!(
            "{}-{}",
            at.format("%Y-%m-%dT%H-%M-%SZ"),
            hex::encode(suffix)
        ))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The start time encoded in the id (to the second).
    pub fn timestamp(&self) -> DateTime<Utc> {
        chrono::NaiveDateTime::parse_from_str(&self.0[..19], "%Y-%m-%dT%H-%M-%S")
            .expect("validated at construction")
            .and_utc()
    }

    /// The manifest's object key, `manifests/<id>`.
    pub fn object_key(&self) -> String {
        format!("{MANIFEST_PREFIX}{}", self.0)
    }

    /// The id named by a manifest object key, if it is one.
    pub fn from_object_key(key: &str) -> Option<Self> {
        key.strip_prefix(MANIFEST_PREFIX)?.parse().ok()
    }
}

impl FromStr for BackupId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidArgument(format!("{s:?} is not a backup id"));
        let (time, suffix) = (s.get(..20).ok_or_else(bad)?, s.get(20..).ok_or_else(bad)?);
        let suffix = suffix.strip_prefix('-').ok_or_else(bad)?;
        let suffix_ok = !suffix.is_empty()
            && suffix.len() <= 32
            && suffix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let time_ok = time.ends_with('Z')
            && chrono::NaiveDateTime::parse_from_str(&time[..19], "%Y-%m-%dT%H-%M-%S").is_ok();
        if !(suffix_ok && time_ok) {
            return Err(bad());
        }
        Ok(Self(s.to_string()))
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackupId({})", self.0)
    }
}

impl Serialize for BackupId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for BackupId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// How consistent the source snapshot was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// As if the power had been cut.
    CrashConsistent,
    /// File systems quiesced by VMware Tools before the snapshot.
    Quiesced,
}

impl Consistency {
    /// The name shown by `list` and `show` and used in JSON: `crash-consistent`, `quiesced`.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::CrashConsistent => "crash-consistent",
            Consistency::Quiesced => "quiesced",
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which VM a backup is of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRef {
    /// The VM's name at backup time.
    pub name: String,
    /// The VM's instance UUID; backups of one VM are grouped (and pruned) by it.
    pub uuid: String,
}

/// One disk of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskManifest {
    /// The disk's label, e.g. `Hard disk 1`.
    pub label: String,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Chunk size in bytes.
    pub chunk_size: u32,
    /// The chunk id of every chunk index; `None` (JSON `null`) for an all-zero chunk.
    pub chunks: Vec<Option<ChunkId>>,
    /// Bytes read from the source for this backup.
    pub bytes_read: u64,
    /// Bytes taken over from the previous backup without reading (unchanged per CBT).
    pub bytes_reused: u64,
    /// Bytes of read data that were all zeros (stored as markers).
    #[serde(default)]
    pub bytes_zero: u64,
    /// Bytes of read data that were new to the repository (before compression).
    #[serde(default)]
    pub bytes_new: u64,
    /// Bytes uploaded for new chunks (after compression and encryption).
    #[serde(default)]
    pub bytes_stored: u64,
    /// The changed-block-tracking change id the disk was read at, for the next incremental.
    #[serde(default)]
    pub change_id: Option<String>,
}

impl DiskManifest {
    /// Number of chunk indexes.
    pub fn chunk_count(&self) -> u64 {
        chunk_count(self.capacity, self.chunk_size)
    }

    /// Length of chunk `index` (the last one may be short).
    pub fn chunk_len(&self, index: u64) -> u64 {
        chunk_len(self.capacity, self.chunk_size, index)
    }

    /// Checks that the chunk list matches the capacity; `what` names the manifest in errors.
    pub fn validate(&self, what: &str) -> Result<()> {
        if self.chunk_size == 0 || self.chunks.len() as u64 != self.chunk_count() {
            return Err(Error::corrupt(
                what,
                format!(
                    "disk {:?} lists {} chunks for {} bytes in {}-byte chunks",
                    self.label,
                    self.chunks.len(),
                    self.capacity,
                    self.chunk_size
                ),
            ));
        }
        Ok(())
    }
}

/// A backup: the VM, when, how consistent, the VM's configuration, and its disks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The backup's id.
    pub id: BackupId,
    /// The VM.
    pub vm: VmRef,
    /// When the backup started.
    #[serde(with = "rfc3339")]
    pub created: DateTime<Utc>,
    /// When the manifest was committed.
    #[serde(with = "rfc3339")]
    pub finished: DateTime<Utc>,
    /// Crash-consistent or quiesced.
    pub consistency: Consistency,
    /// The VM specification a restore needs (free-form, written by the caller).
    pub vm_config: serde_json::Value,
    /// The backup this one was incremental to, if any (information only: every backup is full).
    #[serde(default)]
    pub parent: Option<BackupId>,
    /// Why the backup is less consistent than asked, e.g. quiescing failed and the snapshot
    /// fell back to crash-consistent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency_note: Option<String>,
    /// The scheduled job that made it (`None`: made by hand); a job's retention prunes only
    /// its own backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The vSphere endpoint the VM was read from (a daemon's `--endpoint-name`, else the
    /// server's host name), so backups of same-named VMs of two endpoints never mix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The disks.
    pub disks: Vec<DiskManifest>,
}

impl Manifest {
    /// Every chunk id the backup references (with repeats).
    pub fn chunk_ids(&self) -> impl Iterator<Item = ChunkId> + '_ {
        self.disks
            .iter()
            .flat_map(|d| d.chunks.iter().flatten().copied())
    }

    /// The disk with this label.
    pub fn disk(&self, label: &str) -> Option<&DiskManifest> {
        self.disks.iter().find(|d| d.label == label)
    }

    /// The manifest's summary (everything but the chunk lists).
    pub fn summary(&self) -> BackupSummary {
        BackupSummary {
            id: self.id.clone(),
            vm: self.vm.clone(),
            created: self.created,
            finished: self.finished,
            consistency: self.consistency,
            consistency_note: self.consistency_note.clone(),
            job: self.job.clone(),
            endpoint: self.endpoint.clone(),
            disks: self
                .disks
                .iter()
                .map(|d| DiskSummary {
                    label: d.label.clone(),
                    capacity: d.capacity,
                    bytes_read: d.bytes_read,
                    bytes_reused: d.bytes_reused,
                    bytes_stored: d.bytes_stored,
                })
                .collect(),
        }
    }

    /// Parses and checks a manifest's JSON.
    pub fn from_json(id: &BackupId, json: &[u8]) -> Result<Self> {
        let m: Manifest = serde_json::from_slice(json)
            .map_err(|e| Error::corrupt(format!("manifest {id}"), e.to_string()))?;
        if m.format != MANIFEST_FORMAT {
            return Err(Error::UnsupportedFormat {
                found: m.format,
                supported: MANIFEST_FORMAT,
            });
        }
        if &m.id != id {
            return Err(Error::corrupt(
                format!("manifest {id}"),
                format!("it names backup {}", m.id),
            ));
        }
        for d in &m.disks {
            d.validate(&format!("manifest {id}"))?;
        }
        Ok(m)
    }

    /// The manifest as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("manifests always serialise")
    }
}

/// What `list` shows of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    /// The backup's id.
    pub id: BackupId,
    /// The VM.
    pub vm: VmRef,
    /// When it started.
    #[serde(with = "rfc3339")]
    pub created: DateTime<Utc>,
    /// When it was committed.
    #[serde(with = "rfc3339")]
    pub finished: DateTime<Utc>,
    /// Crash-consistent or quiesced.
    pub consistency: Consistency,
    /// Why it is less consistent than asked, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency_note: Option<String>,
    /// The job that made it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The vSphere endpoint the VM was read from, if recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Its disks.
    pub disks: Vec<DiskSummary>,
}

/// What `list` shows of a disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSummary {
    /// The disk's label.
    pub label: String,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes reused from the previous backup.
    pub bytes_reused: u64,
    /// Bytes uploaded.
    pub bytes_stored: u64,
}

/// RFC 3339 timestamps with millisecond precision, for serde.
pub(crate) mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn backup_ids_sort_by_time_and_parse_back() {
        let t1 = Utc.with_ymd_and_hms(2026, 11, 27, 5, 20, 0).unwrap();
        let t2 = Utc.with_ymd_and_hms(2026, 11, 27, 5, 20, 1).unwrap();
        let a = BackupId::new(t1);
        let b = BackupId::new(t2);
        assert!(a.as_str().starts_with("2026-11-27T05-20-00Z-"));
        assert_eq!(a.as_str().len(), "2026-11-27T05-20-00Z-".len() + 6);
        assert!(a < b);
        assert_eq!(a.timestamp(), t1);
        assert_eq!(a.as_str().parse::<BackupId>().unwrap(), a);
        assert_eq!(BackupId::from_object_key(&a.object_key()), Some(a.clone()));
        for bad in [
            "",
            "2026-11-27T05-20-00Z",
            "2026-11-27T05-20-00Z-",
            "2026-13-27T05-20-00Z-abc",
            "2026-11-27T05-20-00Z-ABC",
            "2026-11-27T05-20-00Z-a/b",
            "../../etc/passwd-xxxxxxxxxxxxxxxxxxxxxx",
        ] {
            assert!(bad.parse::<BackupId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn manifest_json_round_trip_with_zero_markers() {
        let id = BackupId::new(Utc::now());
        let chunk = ChunkId::from_bytes([0xab; 32]);
        let m = Manifest {
            format: MANIFEST_FORMAT,
            id: id.clone(),
            vm: VmRef {
                name: "web-1".into(),
                uuid: "5029c9a3".into(),
            },
            created: Utc.with_ymd_and_hms(2026, 11, 27, 5, 20, 0).unwrap(),
            finished: Utc.with_ymd_and_hms(2026, 11, 27, 5, 21, 0).unwrap(),
            consistency: Consistency::Quiesced,
            vm_config: serde_json::json!({"num_cpus": 2}),
            parent: None,
            consistency_note: None,
            job: Some("nightly".into()),
            endpoint: Some("vc-1".into()),
            disks: vec![DiskManifest {
                label: "Hard disk 1".into(),
                capacity: 3 * 65536 + 1,
                chunk_size: 65536,
                chunks: vec![Some(chunk), None, Some(chunk), None],
                bytes_read: 3 * 65536 + 1,
                bytes_reused: 0,
                bytes_zero: 65537,
                bytes_new: 65536,
                bytes_stored: 100,
                change_id: Some("52 a1/7".into()),
            }],
        };
        let json = m.to_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"consistency\":\"quiesced\""), "{text}");
        assert!(text.contains("\"job\":\"nightly\""), "{text}");
        assert!(
            !text.contains("consistency_note"),
            "unset notes are left out: {text}"
        );
        assert!(text.contains("null"), "zero chunks are null markers");
        assert!(
            text.contains("\"created\":\"2026-11-27T05:20:00.000Z\""),
            "{text}"
        );
        assert_eq!(Manifest::from_json(&id, &json).unwrap(), m);
        assert_eq!(m.chunk_ids().count(), 2);
        assert_eq!(m.disks[0].chunk_len(3), 1);

        let other = BackupId::new(Utc::now());
        assert!(Manifest::from_json(&other, &json).is_err(), "id must match");
        let mut short = m.clone();
        short.disks[0].chunks.pop();
        assert!(Manifest::from_json(&id, &short.to_json()).is_err());
    }
}
