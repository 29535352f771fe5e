//! Changed block tracking (CBT): the disks a snapshot froze, with their backing files and change
//! ids, and `VirtualMachine.QueryChangedDiskAreas` with its paging loop.
//!
//! A backup reads a disk's base as the snapshot saw it: the snapshot's
//! `config.hardware.device` lists each `VirtualDisk` with its backing; the chain of
//! `backing.parent` ends at the base disk, whose `fileName` names the descriptor
//! (`[ds] dir/name.vmdk`) and whose flat extent (`dir/name-flat.vmdk`) holds the data. The
//! snapshot's `backing.changeId` is where the next incremental starts from.

use std::sync::Arc;

use super::client::Client;
use super::datastore_file::DatastoreFile;
use super::envelope::RequestWriter;
use super::error::{Error, ErrorKind, Result};
use super::methods::NodeCall;
use super::types::ManagedObjectReference;
use super::xml::Node;

/// One changed extent: `length` bytes from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangedArea {
    /// Offset in bytes.
    pub start: u64,
    /// Length in bytes.
    pub length: u64,
}

/// One answer of `QueryChangedDiskAreas` (`DiskChangeInfo`): the window
/// `[start_offset, start_offset + length)` it describes and the changed extents in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskChangeInfo {
    /// Where the window starts.
    pub start_offset: u64,
    /// How many bytes the window covers; the next query starts at `start_offset + length`.
    pub length: u64,
    /// The changed extents in the window.
    pub changed_area: Vec<ChangedArea>,
}

impl DiskChangeInfo {
    /// Reads a `DiskChangeInfo` node.
    pub fn from_node(node: &Node) -> Result<Self> {
        let num = |n: &Node, name: &str| -> Result<u64> {
            n.parse_of::<i64>(name)
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Decode,
                        format!("DiskChangeInfo has no valid {name}"),
                    )
                })
        };
        let changed_area = node
            .children_named("changedArea")
            .map(|a| {
                Ok(ChangedArea {
                    start: num(a, "start")?,
                    length: num(a, "length")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            start_offset: num(node, "startOffset")?,
            length: num(node, "length")?,
            changed_area,
        })
    }
}

/// A virtual disk as a snapshot (or the VM) describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrozenDisk {
    /// Device key.
    pub key: i32,
    /// Label, e.g. `Hard disk 1`.
    pub label: String,
    /// The controller's key.
    pub controller_key: i32,
    /// Unit number on the controller.
    pub unit_number: i32,
    /// Capacity in bytes.
    pub capacity: u64,
    /// The base disk's descriptor, `[ds] dir/name.vmdk` (end of the `parent` chain).
    pub base_file: String,
    /// The change id of the disk at this point, when CBT is on.
    pub change_id: Option<String>,
    /// Thin provisioned.
    pub thin: bool,
}

impl FrozenDisk {
    /// Reads a `VirtualDisk` device node; `None` for other devices and for disks whose backing
    /// has no file (raw device mappings are files too, so this is only malformed data).
    pub fn from_node(node: &Node) -> Option<Self> {
        if node.type_or("VirtualDevice") != "VirtualDisk" {
            return None;
        }
        let top = node.child("backing")?;
        let mut base = top;
        while let Some(parent) = base.child("parent") {
            base = parent;
        }
        let capacity = node
            .parse_of::<u64>("capacityInBytes")
            .filter(|b| *b > 0)
            .or_else(|| node.parse_of::<u64>("capacityInKB").map(|kb| kb * 1024))
            .unwrap_or(0);
        Some(Self {
            key: node.parse_of("key")?,
            label: node
                .child("deviceInfo")
                .and_then(|d| d.text_of("label"))
                .unwrap_or_default()
                .to_string(),
            controller_key: node.parse_of("controllerKey").unwrap_or(0),
            unit_number: node.parse_of("unitNumber").unwrap_or(0),
            capacity,
            base_file: base.text_of("fileName")?.to_string(),
            change_id: top
                .text_of("changeId")
                .filter(|c| !c.is_empty())
                .map(str::to_string),
            thin: base.bool_of("thinProvisioned").unwrap_or(false),
        })
    }

    /// The base disk's flat extent (`dir/name-flat.vmdk`) in datacenter `datacenter`.
    pub fn flat_extent(&self, datacenter: &str) -> Result<DatastoreFile> {
        flat_extent_of(datacenter, &self.base_file)
    }
}

/// The flat extent of descriptor `[ds] dir/name.vmdk`: `[ds] dir/name-flat.vmdk`.
pub fn flat_extent_of(datacenter: &str, descriptor: &str) -> Result<DatastoreFile> {
    let mut file = DatastoreFile::parse(datacenter, descriptor)?;
    let stem = file.path.strip_suffix(".vmdk").ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidArgument,
            format!("{descriptor:?} is not a .vmdk descriptor"),
        )
    })?;
    file.path = format!("{stem}-flat.vmdk");
    Ok(file)
}

/// The epoch part of a change id (`52 .. xx/7` → `52 .. xx`): ids of different epochs cannot
/// be compared (CBT was reset between them).
pub fn change_id_epoch(change_id: &str) -> &str {
    change_id.rsplit_once('/').map_or(change_id, |(e, _)| e)
}

impl Client {
    /// The virtual disks in a snapshot's frozen configuration.
    pub async fn snapshot_disks(
        &self,
        snapshot: &ManagedObjectReference,
    ) -> Result<Vec<FrozenDisk>> {
        let o = self
            .properties(snapshot, &["config.hardware.device"])
            .await?;
        Ok(o.get("config.hardware.device")
            .map(|devices| {
                devices
                    .children
                    .iter()
                    .filter_map(FrozenDisk::from_node)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The name of the datacenter `obj` (a datastore, VM, host...) lives in, found by walking
    /// its `parent` chain.
    pub async fn datacenter_of(
        &self,
        obj: &ManagedObjectReference,
    ) -> Result<(ManagedObjectReference, String)> {
        let mut current = obj.clone();
        for _ in 0..64 {
            if current.kind == "Datacenter" {
                let o = self.properties(&current, &["name"]).await?;
                let name = o.text("name").unwrap_or_default().to_string();
                return Ok((current, name));
            }
            let o = self.properties(&current, &["parent"]).await?;
            current = o.moref("parent").ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("{obj} is not inside a datacenter"),
                )
            })?;
        }
        Err(Error::new(
            ErrorKind::Decode,
            format!("the parent chain of {obj} does not end"),
        ))
    }

    /// One `VirtualMachine.QueryChangedDiskAreas` call: the changes of disk `device_key` since
    /// `change_id` (`*`: the areas in use) up to `snapshot`, from `start_offset` on.
    pub async fn query_changed_disk_areas(
        &self,
        vm: &ManagedObjectReference,
        snapshot: Option<&ManagedObjectReference>,
        device_key: i32,
        start_offset: u64,
        change_id: &str,
    ) -> Result<DiskChangeInfo> {
        let args = |w: &mut RequestWriter| {
            if let Some(s) = snapshot {
                w.moref("snapshot", s);
            }
            w.text("deviceKey", &device_key.to_string())
                .text("startOffset", &start_offset.to_string())
                .text("changeId", change_id);
        };
        let node = self
            .call(&NodeCall {
                name: "QueryChangedDiskAreas",
                this: vm,
                args: &args,
                idempotent: true,
            })
            .await?
            .ok_or_else(|| {
                Error::new(ErrorKind::Decode, "QueryChangedDiskAreas returned nothing")
            })?;
        DiskChangeInfo::from_node(&node)
    }

    /// Every changed extent of a disk of `capacity` bytes, querying page after page (each
    /// continues at the previous answer's `startOffset + length`) until the whole disk is
    /// covered. Extents are clipped to the capacity, sorted and merged where they touch.
    pub async fn changed_disk_areas(
        self: &Arc<Self>,
        vm: &ManagedObjectReference,
        snapshot: Option<&ManagedObjectReference>,
        device_key: i32,
        capacity: u64,
        change_id: &str,
    ) -> Result<Vec<ChangedArea>> {
        let mut areas: Vec<ChangedArea> = Vec::new();
        let mut offset = 0u64;
        while offset < capacity {
            let info = self
                .query_changed_disk_areas(vm, snapshot, device_key, offset, change_id)
                .await?;
            if info.start_offset != offset || info.length == 0 {
                return Err(Error::new(
                    ErrorKind::Decode,
                    format!(
                        "QueryChangedDiskAreas at offset {offset} answered for offset {} with length {}: no progress",
                        info.start_offset, info.length
                    ),
                ));
            }
            areas.extend(info.changed_area);
            offset = offset.saturating_add(info.length);
        }
        Ok(merge_areas(areas, capacity))
    }
}

/// Sorts extents, drops empty ones, clips them to `capacity` and merges overlapping or
/// adjacent ones.
pub fn merge_areas(mut areas: Vec<ChangedArea>, capacity: u64) -> Vec<ChangedArea> {
    areas.retain(|a| a.length > 0 && a.start < capacity);
    areas.sort_by_key(|a| a.start);
    let mut out: Vec<ChangedArea> = Vec::with_capacity(areas.len());
    for a in areas {
        let end = a.start.saturating_add(a.length).min(capacity);
        match out.last_mut() {
            Some(last) if a.start <= last.start + last.length => {
                last.length = last.length.max(end - last.start);
            }
            _ => out.push(ChangedArea {
                start: a.start,
                length: end - a.start,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::xml::parse_fragment;

    #[test]
    fn reads_disk_change_info() {
        let xml = "<returnval><startOffset>0</startOffset><length>4194304</length><changedArea><start>65536</start><length>131072</length></changedArea><changedArea><start>1048576</start><length>65536</length></changedArea></returnval>";
        let node = parse_fragment(xml).unwrap().pop().unwrap();
        let info = DiskChangeInfo::from_node(&node).unwrap();
        assert_eq!(info.length, 4 << 20);
        assert_eq!(
            info.changed_area,
            vec![
                ChangedArea {
                    start: 65536,
                    length: 131072
                },
                ChangedArea {
                    start: 1 << 20,
                    length: 65536
                }
            ]
        );
        let bad = parse_fragment("<returnval><length>-1</length></returnval>")
            .unwrap()
            .pop()
            .unwrap();
        assert!(DiskChangeInfo::from_node(&bad).is_err());
    }

    #[test]
    fn follows_the_parent_chain_to_the_base_disk() {
        let xml = r#"<VirtualDevice xsi:type="VirtualDisk"><key>2000</key><deviceInfo><label>Hard disk 1</label></deviceInfo><backing xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>[ds1] web/web-000001.vmdk</fileName><changeId>52 aa-bb/9</changeId><parent xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>[ds1] web/web.vmdk</fileName><thinProvisioned>true</thinProvisioned></parent></backing><controllerKey>1000</controllerKey><unitNumber>1</unitNumber><capacityInKB>1024</capacityInKB><capacityInBytes>1048576</capacityInBytes></VirtualDevice>"#;
        let node = parse_fragment(xml).unwrap().pop().unwrap();
        let d = FrozenDisk::from_node(&node).unwrap();
        assert_eq!(d.base_file, "[ds1] web/web.vmdk");
        assert_eq!(d.change_id.as_deref(), Some("52 aa-bb/9"));
        assert_eq!((d.key, d.controller_key, d.unit_number), (2000, 1000, 1));
        assert_eq!(d.capacity, 1 << 20);
        assert!(d.thin);
        assert_eq!(d.label, "Hard disk 1");
        let flat = d.flat_extent("dc").unwrap();
        assert_eq!(flat.path, "web/web-flat.vmdk");
        assert_eq!(flat.datastore, "ds1");
        assert_eq!(change_id_epoch("52 aa-bb/9"), "52 aa-bb");
    }

    #[test]
    fn merges_and_clips_areas() {
        let a = |start, length| ChangedArea { start, length };
        let merged = merge_areas(
            vec![a(100, 10), a(0, 10), a(10, 5), a(105, 100), a(500, 1)],
            150,
        );
        assert_eq!(merged, vec![a(0, 15), a(100, 50)]);
    }
}
