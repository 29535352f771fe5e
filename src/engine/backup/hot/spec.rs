//! The VM configuration a backup records (in the manifest's `vm_config`) so that a restore can
//! rebuild the VM: identity, sizing, firmware, controllers, disks and network adapters.

use serde::{Deserialize, Serialize};

use crate::vsphere::cbt::FrozenDisk;
use crate::vsphere::device::{Device, NicBacking};
use crate::vsphere::vm::VmInfo;

/// The restorable configuration of a VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// Name at backup time.
    pub name: String,
    /// Guest OS id, e.g. `otherGuest64`.
    pub guest_id: String,
    /// vCPUs.
    pub num_cpus: i64,
    /// Cores per socket.
    pub cores_per_socket: i64,
    /// Memory in MiB.
    pub memory_mb: i64,
    /// `bios` or `efi`.
    pub firmware: String,
    /// Hardware version, e.g. `vmx-19` (empty when unknown).
    #[serde(default)]
    pub hardware_version: String,
    /// Whether changed block tracking was on.
    #[serde(default)]
    pub cbt: bool,
    /// Power state at backup time.
    #[serde(default)]
    pub power_state: String,
    /// Disk controllers.
    #[serde(default)]
    pub controllers: Vec<ControllerSpec>,
    /// Disks, in device order.
    pub disks: Vec<DiskSpec>,
    /// Network adapters, in device order.
    #[serde(default)]
    pub nics: Vec<NicSpec>,
}

/// A disk controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerSpec {
    /// Device key at backup time.
    pub key: i32,
    /// Bus number.
    pub bus: i32,
    /// Device type, e.g. `ParaVirtualSCSIController`.
    pub kind: String,
}

/// A disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// Label, the disk's name in the manifest, e.g. `Hard disk 1`.
    pub label: String,
    /// Device key at backup time.
    pub key: i32,
    /// Controller key at backup time.
    pub controller_key: i32,
    /// Unit number on the controller.
    pub unit_number: i32,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Thin provisioned.
    pub thin: bool,
    /// The base descriptor it was read from, `[ds] dir/name.vmdk`.
    pub file: String,
}

/// A network adapter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicSpec {
    /// `vmxnet3`, `e1000e`, ...
    pub adapter_type: String,
    /// The standard network's name, or the distributed port group's key.
    pub network: String,
    /// The distributed switch's UUID for a distributed port group.
    #[serde(default)]
    pub switch_uuid: Option<String>,
    /// MAC address at backup time (a restore to a new VM lets vSphere generate one).
    #[serde(default)]
    pub mac_address: Option<String>,
}

impl VmSpec {
    /// The spec of a VM as read now, with the disks as the backup snapshot froze them.
    pub fn from_vm(info: &VmInfo, disks: &[FrozenDisk]) -> Self {
        let controllers = info
            .devices
            .iter()
            .filter_map(|d| match d {
                Device::Controller { key, bus, kind } => Some(ControllerSpec {
                    key: *key,
                    bus: *bus,
                    kind: kind.clone(),
                }),
                _ => None,
            })
            .collect();
        let nics = info
            .nics()
            .map(|n| match &n.backing {
                NicBacking::Network { name } => NicSpec {
                    adapter_type: n.adapter_type.clone(),
                    network: name.clone(),
                    switch_uuid: None,
                    mac_address: n.mac_address.clone(),
                },
                NicBacking::Distributed {
                    switch_uuid,
                    portgroup_key,
                } => NicSpec {
                    adapter_type: n.adapter_type.clone(),
                    network: portgroup_key.clone(),
                    switch_uuid: Some(switch_uuid.clone()),
                    mac_address: n.mac_address.clone(),
                },
            })
            .collect();
        Self {
            name: info.name.clone(),
            guest_id: info.guest_id.clone(),
            num_cpus: info.num_cpus,
            cores_per_socket: info.cores_per_socket,
            memory_mb: info.memory_mb,
            firmware: info.firmware.clone(),
            hardware_version: info.version.clone(),
            cbt: info.cbt,
            power_state: info.power_state.clone(),
            controllers,
            disks: disks
                .iter()
                .map(|d| DiskSpec {
                    label: d.label.clone(),
                    key: d.key,
                    controller_key: d.controller_key,
                    unit_number: d.unit_number,
                    capacity: d.capacity,
                    thin: d.thin,
                    file: d.base_file.clone(),
                })
                .collect(),
            nics,
        }
    }

    /// The spec as stored in a manifest.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Reads the spec from a manifest's `vm_config`.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, String> {
        serde_json::from_value(value.clone())
            .map_err(|e| format!("the backup's VM configuration cannot be read: {e}"))
    }

    /// The datastore of the first disk (`[ds] ...`), where a restore goes by default.
    pub fn datastore(&self) -> Option<&str> {
        let first = self.disks.first()?;
        let rest = first.file.trim().strip_prefix('[')?;
        rest.split_once(']').map(|(ds, _)| ds)
    }

    /// The bus number of the controller with this key.
    pub fn bus_of(&self, controller_key: i32) -> Option<i32> {
        self.controllers
            .iter()
            .find(|c| c.key == controller_key)
            .map(|c| c.bus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_datastore() {
        let spec = VmSpec {
            name: "web".into(),
            guest_id: "otherGuest64".into(),
            num_cpus: 2,
            cores_per_socket: 1,
            memory_mb: 1024,
            firmware: "bios".into(),
            hardware_version: "vmx-13".into(),
            cbt: true,
            power_state: "poweredOn".into(),
            controllers: vec![ControllerSpec {
                key: 1000,
                bus: 0,
                kind: "ParaVirtualSCSIController".into(),
            }],
            disks: vec![DiskSpec {
                label: "Hard disk 1".into(),
                key: 2000,
                controller_key: 1000,
                unit_number: 0,
                capacity: 1 << 30,
                thin: true,
                file: "[LocalDS_0] web/disk1.vmdk".into(),
            }],
            nics: vec![NicSpec {
                adapter_type: "vmxnet3".into(),
                network: "VM Network".into(),
                switch_uuid: None,
                mac_address: None,
            }],
        };
        let back = VmSpec::from_json(&spec.to_json()).unwrap();
        assert_eq!(back, spec);
        assert_eq!(spec.datastore(), Some("LocalDS_0"));
        assert_eq!(spec.bus_of(1000), Some(0));
        assert!(VmSpec::from_json(&serde_json::json!({"name": 1})).is_err());
    }
}
