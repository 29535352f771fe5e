//! Virtual devices of a VM (`config.hardware.device`): disks, network adapters and controllers
//! read from their `xsi:type`, everything else kept as a node; and the `VirtualDeviceConfigSpec`
//! writer used to add, edit and remove them.

use super::envelope::RequestWriter;
use super::xml::Node;

/// Where a network adapter is connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicBacking {
    /// A standard port group, by network name.
    Network {
        /// Port group / network name.
        name: String,
    },
    /// A distributed port group.
    Distributed {
        /// The switch's UUID.
        switch_uuid: String,
        /// The port group's key.
        portgroup_key: String,
    },
}

/// A network adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// Device key (negative for a device being added).
    pub key: i32,
    /// `vmxnet3`, `e1000e`, `e1000`, `vmxnet2`, `pcnet32`, `sriov`.
    pub adapter_type: String,
    /// MAC address.
    pub mac_address: Option<String>,
    /// `manual`, `generated` or `assigned`.
    pub address_type: String,
    /// What it is connected to.
    pub backing: NicBacking,
    /// The network object of a standard backing, when known (some servers need it to remove
    /// the adapter).
    pub network: Option<super::types::ManagedObjectReference>,
}

/// A virtual disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// Device key (negative for a device being added).
    pub key: i32,
    /// The controller's key.
    pub controller_key: i32,
    /// Unit number on the controller.
    pub unit_number: i32,
    /// Size in KiB.
    pub capacity_kb: i64,
    /// Backing file, `[datastore] dir/file.vmdk` (datastore only, when creating a new disk).
    pub file_name: String,
    /// Thin provisioned.
    pub thin: bool,
}

/// What a PCI passthrough device is backed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassthroughBacking {
    /// A whole host device (DirectPath I/O, `VirtualPCIPassthroughDeviceBackingInfo`).
    Direct {
        /// The host device's address, `DDDD:BB:SS.F`.
        id: String,
        /// PCI device id as hex, e.g. `1eb8`.
        device_id: String,
        /// The host's system id (from `QueryConfigTarget`).
        system_id: String,
        /// PCI vendor id.
        vendor_id: u16,
        /// Device name.
        device_name: String,
    },
    /// An NVIDIA vGPU profile (`VirtualPCIPassthroughVmiopBackingInfo`).
    Vgpu {
        /// The profile, e.g. `grid_t4-4q`.
        profile: String,
    },
}

/// A PCI passthrough device of a VM (`VirtualPCIPassthrough`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passthrough {
    /// Device key (negative for a device being added).
    pub key: i32,
    /// What backs it.
    pub backing: PassthroughBacking,
}

/// A device as read from a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    /// A disk.
    Disk(Disk),
    /// A network adapter.
    Nic(Nic),
    /// A PCI passthrough device or vGPU.
    Passthrough(Passthrough),
    /// A SCSI/SATA/NVMe/IDE controller.
    Controller {
        /// Key.
        key: i32,
        /// Bus number.
        bus: i32,
        /// Its type, e.g. `ParaVirtualSCSIController`.
        kind: String,
    },
    /// Any other device: its key and type (ceso never edits those, so nothing more is kept:
    /// a fleet's devices stay small in memory).
    Other {
        /// Key.
        key: i32,
        /// Its type, e.g. `VirtualTPM`.
        kind: String,
    },
}

/// The adapter types ceso offers and their vSphere device types.
pub const ADAPTER_TYPES: &[(&str, &str)] = &[
    ("vmxnet3", "VirtualVmxnet3"),
    ("e1000e", "VirtualE1000e"),
    ("e1000", "VirtualE1000"),
    ("vmxnet2", "VirtualVmxnet2"),
    ("pcnet32", "VirtualPCNet32"),
    ("sriov", "VirtualSriovEthernetCard"),
];

fn is_controller(kind: &str) -> bool {
    kind.ends_with("Controller")
        && [
            "SCSI", "LsiLogic", "BusLogic", "AHCI", "NVME", "IDE", "SATA",
        ]
        .iter()
        .any(|k| kind.contains(k))
}

impl Device {
    /// Reads one `VirtualDevice` node.
    pub fn from_node(node: &Node) -> Self {
        let kind = node.type_or("VirtualDevice");
        let key = node.parse_of("key").unwrap_or(0);
        if kind == "VirtualDisk" {
            let backing = node.child("backing");
            return Device::Disk(Disk {
                key,
                controller_key: node.parse_of("controllerKey").unwrap_or(0),
                unit_number: node.parse_of("unitNumber").unwrap_or(0),
                capacity_kb: node
                    .parse_of::<i64>("capacityInBytes")
                    .map(|b| b / 1024)
                    .or_else(|| node.parse_of("capacityInKB"))
                    .unwrap_or(0),
                file_name: backing
                    .and_then(|b| b.text_of("fileName"))
                    .unwrap_or_default()
                    .to_string(),
                thin: backing
                    .and_then(|b| b.bool_of("thinProvisioned"))
                    .unwrap_or(false),
            });
        }
        if let Some((adapter, _)) = ADAPTER_TYPES.iter().find(|(_, t)| *t == kind) {
            let backing = node.child("backing");
            let backing = match backing.map(|b| b.type_or("")) {
                Some("VirtualEthernetCardDistributedVirtualPortBackingInfo") => {
                    let port = backing.and_then(|b| b.child("port"));
                    NicBacking::Distributed {
                        switch_uuid: port
                            .and_then(|p| p.text_of("switchUuid"))
                            .unwrap_or_default()
                            .to_string(),
                        portgroup_key: port
                            .and_then(|p| p.text_of("portgroupKey"))
                            .unwrap_or_default()
                            .to_string(),
                    }
                }
                _ => NicBacking::Network {
                    name: backing
                        .and_then(|b| b.text_of("deviceName"))
                        .unwrap_or_default()
                        .to_string(),
                },
            };
            return Device::Nic(Nic {
                key,
                adapter_type: adapter.to_string(),
                mac_address: node
                    .text_of("macAddress")
                    .filter(|m| !m.is_empty())
                    .map(str::to_string),
                address_type: node
                    .text_of("addressType")
                    .unwrap_or("generated")
                    .to_string(),
                network: node.child("backing").and_then(|b| b.moref_of("network")),
                backing,
            });
        }
        if kind == "VirtualPCIPassthrough" {
            let backing = node.child("backing");
            let text = |name: &str| {
                backing
                    .and_then(|b| b.text_of(name))
                    .unwrap_or_default()
                    .to_string()
            };
            let backing = match backing.map(|b| b.type_or("")) {
                Some("VirtualPCIPassthroughVmiopBackingInfo") => PassthroughBacking::Vgpu {
                    profile: text("vgpu"),
                },
                Some("VirtualPCIPassthroughDeviceBackingInfo") => PassthroughBacking::Direct {
                    id: text("id"),
                    device_id: text("deviceId"),
                    system_id: text("systemId"),
                    vendor_id: text("vendorId").trim().parse::<i32>().unwrap_or(0) as u16,
                    device_name: text("deviceName"),
                },
                // Dynamic DirectPath, SR-IOV and other backings are kept as read.
                _ => {
                    return Device::Other {
                        key,
                        kind: kind.to_string(),
                    }
                }
            };
            return Device::Passthrough(Passthrough { key, backing });
        }
        if is_controller(kind) {
            return Device::Controller {
                key,
                bus: node.parse_of("busNumber").unwrap_or(0),
                kind: kind.to_string(),
            };
        }
        Device::Other {
            key,
            kind: kind.to_string(),
        }
    }
}

/// Reads a `config.hardware.device` value.
pub fn devices(node: Option<&Node>) -> Vec<Device> {
    node.map(|n| n.children.iter().map(Device::from_node).collect())
        .unwrap_or_default()
}

/// What to do with a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Add it.
    Add,
    /// Change it.
    Edit,
    /// Remove it.
    Remove,
}

/// One `VirtualDeviceConfigSpec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceChange {
    /// A SCSI controller (added with a new VM).
    ScsiController {
        /// Key (negative when new).
        key: i32,
        /// Bus number.
        bus: i32,
        /// Device type, e.g. `ParaVirtualSCSIController`.
        kind: String,
    },
    /// A disk; `create` makes a new backing file.
    Disk {
        /// Add, edit (grow) or remove.
        op: Operation,
        /// The disk.
        disk: Disk,
        /// Create (add) or destroy (remove) the backing file.
        file_op: bool,
    },
    /// A network adapter.
    Nic {
        /// Add, edit or remove.
        op: Operation,
        /// The adapter.
        nic: Nic,
    },
    /// A PCI passthrough device or vGPU (added or removed; never edited).
    Passthrough {
        /// Add or remove.
        op: Operation,
        /// The device.
        device: Passthrough,
    },
}

fn op_name(op: Operation) -> &'static str {
    match op {
        Operation::Add => "add",
        Operation::Edit => "edit",
        Operation::Remove => "remove",
    }
}

impl DeviceChange {
    /// Writes the change as a `deviceChange` element.
    pub fn write(&self, w: &mut RequestWriter) {
        w.start("deviceChange", None);
        match self {
            DeviceChange::ScsiController { key, bus, kind } => {
                w.text("operation", "add");
                w.start("device", Some(kind))
                    .text("key", &key.to_string())
                    .text("busNumber", &bus.to_string())
                    .text("sharedBus", "noSharing")
                    .end("device");
            }
            DeviceChange::Disk { op, disk, file_op } => {
                w.text("operation", op_name(*op));
                if *file_op {
                    w.text(
                        "fileOperation",
                        if *op == Operation::Remove {
                            "destroy"
                        } else {
                            "create"
                        },
                    );
                }
                w.start("device", Some("VirtualDisk"))
                    .text("key", &disk.key.to_string());
                write_device_info(w);
                w.start("backing", Some("VirtualDiskFlatVer2BackingInfo"))
                    .text("fileName", &disk.file_name)
                    .text("diskMode", "persistent")
                    .text("thinProvisioned", if disk.thin { "true" } else { "false" })
                    .end("backing");
                w.text("controllerKey", &disk.controller_key.to_string())
                    .text("unitNumber", &disk.unit_number.to_string())
                    .text("capacityInKB", &disk.capacity_kb.to_string())
                    .text("capacityInBytes", &(disk.capacity_kb * 1024).to_string());
                w.end("device");
            }
            DeviceChange::Nic { op, nic } => {
                w.text("operation", op_name(*op));
                let kind = ADAPTER_TYPES
                    .iter()
                    .find(|(a, _)| *a == nic.adapter_type)
                    .map(|(_, t)| *t)
                    .unwrap_or("VirtualVmxnet3");
                w.start("device", Some(kind))
                    .text("key", &nic.key.to_string());
                write_device_info(w);
                match &nic.backing {
                    NicBacking::Network { name } => {
                        w.start("backing", Some("VirtualEthernetCardNetworkBackingInfo"))
                            .text("deviceName", name);
                        if let Some(net) = &nic.network {
                            w.moref("network", net);
                        }
                        w.end("backing");
                    }
                    NicBacking::Distributed {
                        switch_uuid,
                        portgroup_key,
                    } => {
                        w.start(
                            "backing",
                            Some("VirtualEthernetCardDistributedVirtualPortBackingInfo"),
                        )
                        .start("port", None)
                        .text("switchUuid", switch_uuid)
                        .text("portgroupKey", portgroup_key)
                        .end("port")
                        .end("backing");
                    }
                }
                w.start("connectable", None)
                    .text("startConnected", "true")
                    .text("allowGuestControl", "true")
                    .text("connected", "false")
                    .end("connectable");
                w.text("addressType", &nic.address_type);
                if let Some(mac) = &nic.mac_address {
                    w.text("macAddress", mac);
                }
                w.end("device");
            }
            DeviceChange::Passthrough { op, device } => {
                w.text("operation", op_name(*op));
                w.start("device", Some("VirtualPCIPassthrough"))
                    .text("key", &device.key.to_string());
                write_device_info(w);
                match &device.backing {
                    PassthroughBacking::Direct {
                        id,
                        device_id,
                        system_id,
                        vendor_id,
                        device_name,
                    } => {
                        w.start("backing", Some("VirtualPCIPassthroughDeviceBackingInfo"))
                            .text("deviceName", device_name)
                            .text("id", id)
                            .text("deviceId", device_id)
                            .text("systemId", system_id)
                            .text("vendorId", &(*vendor_id as i16).to_string())
                            .end("backing");
                    }
                    PassthroughBacking::Vgpu { profile } => {
                        w.start("backing", Some("VirtualPCIPassthroughVmiopBackingInfo"))
                            .text("vgpu", profile)
                            .end("backing");
                    }
                }
                w.end("device");
            }
        }
        w.end("deviceChange");
    }
}

/// An empty `deviceInfo` (vSphere fills label and summary in; some servers need the element
/// present on edits).
fn write_device_info(w: &mut RequestWriter) {
    w.start("deviceInfo", Some("Description"))
        .text("label", "")
        .text("summary", "")
        .end("deviceInfo");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::xml::parse_fragment;

    #[test]
    fn reads_disks_nics_controllers_and_keeps_others() {
        let xml = r#"<val><VirtualDevice xsi:type="ParaVirtualSCSIController"><key>1000</key><busNumber>0</busNumber></VirtualDevice><VirtualDevice xsi:type="VirtualDisk"><key>2000</key><backing xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>[ds1] web/web.vmdk</fileName><thinProvisioned>true</thinProvisioned></backing><controllerKey>1000</controllerKey><unitNumber>0</unitNumber><capacityInKB>10485760</capacityInKB><capacityInBytes>10737418240</capacityInBytes></VirtualDevice><VirtualDevice xsi:type="VirtualVmxnet3"><key>4000</key><backing xsi:type="VirtualEthernetCardNetworkBackingInfo"><deviceName>VM Network</deviceName></backing><addressType>generated</addressType><macAddress>00:50:56:aa:bb:cc</macAddress></VirtualDevice><VirtualDevice xsi:type="VirtualTPM"><key>11000</key></VirtualDevice></val>"#;
        let node = parse_fragment(xml).unwrap().pop().unwrap();
        let d = devices(Some(&node));
        assert!(
            matches!(&d[0], Device::Controller { key: 1000, kind, .. } if kind == "ParaVirtualSCSIController")
        );
        match &d[1] {
            Device::Disk(disk) => {
                assert_eq!(disk.capacity_kb, 10 * 1024 * 1024);
                assert!(disk.thin);
                assert_eq!(disk.file_name, "[ds1] web/web.vmdk");
            }
            other => panic!("{other:?}"),
        }
        match &d[2] {
            Device::Nic(n) => {
                assert_eq!(n.adapter_type, "vmxnet3");
                assert_eq!(
                    n.backing,
                    NicBacking::Network {
                        name: "VM Network".into()
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&d[3], Device::Other { kind, .. } if kind == "VirtualTPM"));
    }
}
