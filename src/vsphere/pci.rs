//! Host PCI devices and passthrough: the host's `hardware.pciDevice`, its passthrough state
//! (`config.pciPassthruInfo`), GPU details (`config.graphicsInfo`, `config.sharedPassthruGpuTypes`),
//! which VM holds each device, `HostPciPassthruSystem.UpdatePassthruConfig`, maintenance mode and
//! reboot, and the environment browser's `QueryConfigTarget` list of assignable devices.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::envelope::RequestWriter;
use super::error::{Error, ErrorKind, Result};
use super::methods::{NodeCall, PlainCall};
use super::property::{ObjectContent, ObjectSpec, PropertyFilterSpec, PropertySpec};
use super::task::TaskCall;
use super::types::ManagedObjectReference;
use super::xml::Node;

/// Host properties read for PCI and passthrough, in one property read per host set.
pub const HOST_PCI_PATHS: &[&str] = &[
    "name",
    "vm",
    "hardware.pciDevice",
    "hardware.systemInfo.uuid",
    "config.pciPassthruInfo",
    "config.graphicsInfo",
    "config.sharedPassthruGpuTypes",
    "configManager.pciPassthruSystem",
    "runtime.inMaintenanceMode",
];

/// One PCI function of a host (`HostPciDevice`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PciDevice {
    /// Address, `DDDD:BB:SS.F` (lower-case hex).
    pub id: String,
    /// Class and subclass, e.g. `0x0302` (3D controller).
    pub class_id: u16,
    /// PCI vendor id.
    pub vendor_id: u16,
    /// PCI device id.
    pub device_id: u16,
    /// Subsystem vendor id.
    pub sub_vendor_id: u16,
    /// Subsystem device id.
    pub sub_device_id: u16,
    /// Vendor name as the host reports it.
    pub vendor_name: String,
    /// Device name as the host reports it.
    pub device_name: String,
    /// The bridge it sits behind, when any.
    pub parent_bridge: Option<String>,
}

impl PciDevice {
    /// Whether this is a GPU: a compute GPU, not a BMC's display or a virtual adapter (the
    /// rule is [`crate::pci_ids::is_gpu`]).
    pub fn is_gpu(&self) -> bool {
        crate::pci_ids::is_gpu(self.vendor_id, self.class_id)
    }
}

/// Passthrough state of one device (`HostPciPassthruInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassthruState {
    /// The host can pass it through at all.
    pub capable: bool,
    /// Configured for passthrough by a user.
    pub enabled: bool,
    /// Enabled and in effect (after the host rebooted).
    pub active: bool,
    /// The device the host must release together with this one (itself, or e.g. a bridge):
    /// devices naming the same one move together.
    pub dependent_device: Option<String>,
}

/// A VM holding a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The VM.
    pub vm: ManagedObjectReference,
    /// Its name.
    pub name: String,
}

/// What one host reports about its PCI devices.
#[derive(Debug, Clone)]
pub struct HostPci {
    /// The host.
    pub host: ManagedObjectReference,
    /// Its name.
    pub name: String,
    /// Its `HostPciPassthruSystem`, when it has one.
    pub passthru_system: Option<ManagedObjectReference>,
    /// Whether it is in maintenance mode.
    pub in_maintenance: bool,
    /// Every PCI function, in the host's order.
    pub devices: Vec<PciDevice>,
    /// Passthrough state by address.
    pub passthru: BTreeMap<String, PassthruState>,
    /// Frame buffer size in KiB by address, for GPUs the host describes.
    pub gpu_memory_kb: BTreeMap<String, i64>,
    /// vGPU profiles the host offers (e.g. `grid_t4-4q`).
    pub vgpu_profiles: Vec<String>,
    /// VMs holding each device (by address), through a DirectPath backing.
    pub holders: BTreeMap<String, Vec<Holder>>,
}

/// An id the SOAP encoding sends as a signed short, as the unsigned 16-bit value it is.
fn short(node: &Node, name: &str) -> u16 {
    node.parse_of::<i32>(name).map(|v| v as u16).unwrap_or(0)
}

/// `0000:3B:00.0` and `3b:00.0` as `0000:3b:00.0`.
pub fn normalize_address(text: &str) -> String {
    let lower = text.trim().to_ascii_lowercase();
    if lower.matches(':').count() == 1 {
        format!("0000:{lower}")
    } else {
        lower
    }
}

/// Address format, as the validator and docs say it.
pub const ADDRESS_PATTERN: &str = r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$";
/// How the address format is described in diagnostics.
pub const ADDRESS_WHAT: &str = "a PCI address DDDD:BB:SS.F in hex, e.g. 0000:3b:00.0";

/// Whether `text` is a full PCI address `DDDD:BB:SS.F` (hex domain, bus, slot; function 0-7).
pub fn is_address(text: &str) -> bool {
    let b = text.as_bytes();
    let hex = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_hexdigit);
    b.len() == 12
        && hex(0..4)
        && b[4] == b':'
        && hex(5..7)
        && b[7] == b':'
        && hex(8..10)
        && b[10] == b'.'
        && (b'0'..=b'7').contains(&b[11])
}

impl HostPci {
    /// Reads a host's object content (collected with [`HOST_PCI_PATHS`]).
    pub fn from_content(o: &ObjectContent) -> Self {
        let devices = o
            .get("hardware.pciDevice")
            .map(|n| {
                n.children
                    .iter()
                    .map(|d| PciDevice {
                        id: normalize_address(d.text_of("id").unwrap_or_default()),
                        class_id: short(d, "classId"),
                        vendor_id: short(d, "vendorId"),
                        device_id: short(d, "deviceId"),
                        sub_vendor_id: short(d, "subVendorId"),
                        sub_device_id: short(d, "subDeviceId"),
                        vendor_name: d.text_of("vendorName").unwrap_or_default().to_string(),
                        device_name: d.text_of("deviceName").unwrap_or_default().to_string(),
                        parent_bridge: d
                            .text_of("parentBridge")
                            .filter(|p| !p.is_empty())
                            .map(normalize_address),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let passthru = o
            .get("config.pciPassthruInfo")
            .map(|n| {
                n.children
                    .iter()
                    .map(|p| {
                        (
                            normalize_address(p.text_of("id").unwrap_or_default()),
                            PassthruState {
                                capable: p.bool_of("passthruCapable").unwrap_or(false),
                                enabled: p.bool_of("passthruEnabled").unwrap_or(false),
                                active: p.bool_of("passthruActive").unwrap_or(false),
                                dependent_device: p
                                    .text_of("dependentDevice")
                                    .filter(|d| !d.is_empty())
                                    .map(normalize_address),
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let gpu_memory_kb = o
            .get("config.graphicsInfo")
            .map(|n| {
                n.children
                    .iter()
                    .filter_map(|g| {
                        let id = normalize_address(g.text_of("pciId")?);
                        let kb = g.parse_of::<i64>("memorySizeInKB").filter(|k| *k > 0)?;
                        Some((id, kb))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let vgpu_profiles = o
            .get("config.sharedPassthruGpuTypes")
            .map(|n| n.children.iter().map(|s| s.text.clone()).collect())
            .unwrap_or_default();
        Self {
            host: o.obj.clone(),
            name: o.text("name").unwrap_or_default().to_string(),
            passthru_system: o.moref("configManager.pciPassthruSystem"),
            in_maintenance: o.bool("runtime.inMaintenanceMode").unwrap_or(false),
            devices,
            passthru,
            gpu_memory_kb,
            vgpu_profiles,
            holders: BTreeMap::new(),
        }
    }

    /// The device at `address` (any accepted spelling).
    pub fn device(&self, address: &str) -> Option<&PciDevice> {
        let id = normalize_address(address);
        self.devices.iter().find(|d| d.id == id)
    }

    /// The passthrough state of `address`, default (not capable) when the host lists none.
    pub fn state(&self, address: &str) -> PassthruState {
        self.passthru
            .get(&normalize_address(address))
            .cloned()
            .unwrap_or_default()
    }

    /// The group `address` belongs to: the device the host must release with it (its
    /// `dependentDevice`), or the device itself.
    pub fn group_of(&self, address: &str) -> String {
        let id = normalize_address(address);
        self.state(&id).dependent_device.unwrap_or(id)
    }

    /// The other passthrough-capable devices that must move with `address`.
    pub fn group_mates(&self, address: &str) -> Vec<String> {
        let id = normalize_address(address);
        let group = self.group_of(&id);
        self.devices
            .iter()
            .filter(|d| d.id != id && self.state(&d.id).capable && self.group_of(&d.id) == group)
            .map(|d| d.id.clone())
            .collect()
    }

    /// The vGPU profiles of the host that fit GPU `device`, by the model named in the profile
    /// (`grid_t4-4q` fits a device called "... Tesla T4").
    pub fn profiles_for(&self, device: &PciDevice) -> Vec<String> {
        if !device.is_gpu() {
            return Vec::new();
        }
        let words: Vec<String> = device
            .device_name
            .to_ascii_lowercase()
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| w.len() >= 2 && w.chars().any(|c| c.is_ascii_digit()))
            .map(str::to_string)
            .collect();
        self.vgpu_profiles
            .iter()
            .filter(|p| {
                let model = p
                    .strip_prefix("grid_")
                    .unwrap_or(p)
                    .split('-')
                    .next()
                    .unwrap_or_default();
                words
                    .iter()
                    .any(|w| model == w || model.starts_with(w.as_str()))
            })
            .cloned()
            .collect()
    }
}

/// A device the environment browser offers for DirectPath (`VirtualMachinePciPassthroughInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassthroughTarget {
    /// Address.
    pub id: String,
    /// The system id the backing must name.
    pub system_id: String,
    /// Device id as hex (the backing's `deviceId`).
    pub device_id: u16,
    /// Vendor id.
    pub vendor_id: u16,
    /// Device name.
    pub name: String,
}

/// What a host offers VMs: DirectPath devices and vGPU profiles (`QueryConfigTarget`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigTarget {
    /// Devices ready for DirectPath (passthrough active).
    pub pci: Vec<PassthroughTarget>,
    /// vGPU profiles.
    pub vgpu_profiles: Vec<String>,
}

impl ConfigTarget {
    /// Reads a `VirtualMachineConfigTarget`.
    pub fn from_node(node: &Node) -> Self {
        let pci = node
            .children_named("pciPassthrough")
            .filter(|p| p.xsi_type.as_deref() != Some("VirtualMachineSriovInfo"))
            .filter_map(|p| {
                let dev = p.child("pciDevice")?;
                Some(PassthroughTarget {
                    id: normalize_address(dev.text_of("id")?),
                    system_id: p.text_of("systemId").unwrap_or_default().to_string(),
                    device_id: short(dev, "deviceId"),
                    vendor_id: short(dev, "vendorId"),
                    name: dev.text_of("deviceName").unwrap_or_default().to_string(),
                })
            })
            .collect();
        let vgpu_profiles = node
            .children_named("sharedGpuPassthroughTypes")
            .filter_map(|s| s.text_of("vgpu").map(str::to_string))
            .collect();
        Self { pci, vgpu_profiles }
    }
}

impl Client {
    /// PCI devices and passthrough state of `hosts` (one property read), with the VMs holding
    /// each device (a second read over the hosts' VMs, skipped when they have none).
    pub async fn hosts_pci(&self, hosts: &[ManagedObjectReference]) -> Result<Vec<HostPci>> {
        if hosts.is_empty() {
            return Ok(Vec::new());
        }
        let spec = PropertyFilterSpec {
            props: vec![PropertySpec::new("HostSystem", HOST_PCI_PATHS)],
            objects: hosts.iter().cloned().map(ObjectSpec::object).collect(),
        };
        let contents = self.retrieve(spec).await?;
        let mut out = Vec::new();
        let mut vms = Vec::new();
        for h in hosts {
            let o = contents.iter().find(|o| o.obj == *h).ok_or_else(|| {
                Error::new(ErrorKind::NotFound, format!("host {h} does not exist"))
            })?;
            vms.extend(o.morefs("vm"));
            out.push(HostPci::from_content(o));
        }
        if vms.is_empty() {
            return Ok(out);
        }
        let spec = PropertyFilterSpec {
            props: vec![PropertySpec::new(
                "VirtualMachine",
                &["name", "runtime.host", "config.hardware.device"],
            )],
            objects: vms.into_iter().map(ObjectSpec::object).collect(),
        };
        for vm in self.retrieve(spec).await? {
            let Some(host) = vm.moref("runtime.host") else {
                continue;
            };
            let Some(h) = out.iter_mut().find(|h| h.host == host) else {
                continue;
            };
            let holder = Holder {
                vm: vm.obj.clone(),
                name: vm.text("name").unwrap_or_default().to_string(),
            };
            for d in super::device::devices(vm.get("config.hardware.device")) {
                if let super::device::Device::Passthrough(p) = d {
                    if let super::device::PassthroughBacking::Direct { id, .. } = &p.backing {
                        h.holders
                            .entry(normalize_address(id))
                            .or_default()
                            .push(holder.clone());
                    }
                }
            }
        }
        Ok(out)
    }

    /// PCI devices and passthrough state of one host.
    pub async fn host_pci(&self, host: &ManagedObjectReference) -> Result<HostPci> {
        let mut all = self.hosts_pci(std::slice::from_ref(host)).await?;
        all.pop()
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("host {host} does not exist")))
    }

    /// `HostPciPassthruSystem.UpdatePassthruConfig`: sets passthrough on or off per address.
    pub async fn update_passthru(
        &self,
        system: &ManagedObjectReference,
        changes: &[(String, bool)],
    ) -> Result<()> {
        let args = |w: &mut RequestWriter| {
            for (id, enabled) in changes {
                w.start("config", Some("HostPciPassthruConfig"))
                    .text("id", id)
                    .text("passthruEnabled", if *enabled { "true" } else { "false" })
                    .end("config");
            }
        };
        self.call(&PlainCall {
            name: "UpdatePassthruConfig",
            this: system,
            args: &args,
        })
        .await
    }

    /// `EnvironmentBrowser.QueryConfigTarget` for `host`: what it offers VMs for passthrough.
    pub async fn config_target(
        &self,
        browser: &ManagedObjectReference,
        host: Option<&ManagedObjectReference>,
    ) -> Result<ConfigTarget> {
        let args = |w: &mut RequestWriter| {
            if let Some(h) = host {
                w.moref("host", h);
            }
        };
        let node = self
            .call(&NodeCall {
                name: "QueryConfigTarget",
                this: browser,
                args: &args,
                idempotent: true,
            })
            .await?;
        Ok(node
            .as_ref()
            .map(ConfigTarget::from_node)
            .unwrap_or_default())
    }

    /// Puts a host into maintenance mode (`EnterMaintenanceMode_Task`) or takes it out.
    pub async fn set_maintenance(
        self: &Arc<Self>,
        host: &ManagedObjectReference,
        enter: bool,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let enter_args = |w: &mut RequestWriter| {
            w.text("timeout", "0");
        };
        let exit_args = |w: &mut RequestWriter| {
            w.text("timeout", "0");
        };
        let call = if enter {
            TaskCall {
                name: "EnterMaintenanceMode_Task",
                this: host,
                args: &enter_args,
            }
        } else {
            TaskCall {
                name: "ExitMaintenanceMode_Task",
                this: host,
                args: &exit_args,
            }
        };
        self.run_task(call, timeout, cancel).await.map(|_| ())
    }

    /// Reboots a host (`RebootHost_Task`, not forced: the host must be in maintenance mode),
    /// then waits until it is connected again, re-reading its state once a second (a rebooting
    /// host has no task or update stream to wait on; a standalone host's session ends with it).
    pub async fn reboot_host(
        self: &Arc<Self>,
        host: &ManagedObjectReference,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let started = Instant::now();
        let args = |w: &mut RequestWriter| {
            w.text("force", "false");
        };
        self.run_task(
            TaskCall {
                name: "RebootHost_Task",
                this: host,
                args: &args,
            },
            Some(timeout),
            cancel,
        )
        .await?;
        loop {
            let state = self
                .properties(host, &["runtime.connectionState"])
                .await
                .ok()
                .and_then(|o| o.text("runtime.connectionState").map(str::to_string));
            if state.as_deref() == Some("connected") {
                return Ok(());
            }
            if started.elapsed() >= timeout {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "host {host} did not come back within {}s of its reboot",
                        timeout.as_secs()
                    ),
                ));
            }
            tokio::select! {
                _ = cancel.cancelled() => {
                    return Err(Error::new(ErrorKind::Cancelled, "cancelled while the host rebooted"));
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::xml::parse_fragment;

    fn content(xml: &str) -> ObjectContent {
        ObjectContent::from_owned(parse_fragment(xml).unwrap().pop().unwrap()).unwrap()
    }

    const HOST: &str = r#"<returnval><obj type="HostSystem">host-21</obj>
<propSet><name>name</name><val xsi:type="xsd:string">esx-01</val></propSet>
<propSet><name>hardware.pciDevice</name><val xsi:type="ArrayOfHostPciDevice">
<HostPciDevice><id>0000:3b:00.0</id><classId>770</classId><bus>59</bus><slot>0</slot><function>0</function><vendorId>4318</vendorId><subVendorId>4318</subVendorId><vendorName>NVIDIA Corporation</vendorName><deviceId>7864</deviceId><subDeviceId>4770</subDeviceId><parentBridge>0000:3a:00.0</parentBridge><deviceName>TU104GL [Tesla T4]</deviceName></HostPciDevice>
<HostPciDevice><id>0000:81:00.0</id><classId>512</classId><vendorId>-32634</vendorId><deviceId>5490</deviceId><vendorName>Intel Corporation</vendorName><deviceName>Ethernet Controller X710 for 10GbE SFP+</deviceName><parentBridge>0000:80:03.0</parentBridge></HostPciDevice>
<HostPciDevice><id>0000:81:00.1</id><classId>512</classId><vendorId>-32634</vendorId><deviceId>5490</deviceId><vendorName>Intel Corporation</vendorName><deviceName>Ethernet Controller X710 for 10GbE SFP+</deviceName><parentBridge>0000:80:03.0</parentBridge></HostPciDevice>
</val></propSet>
<propSet><name>config.pciPassthruInfo</name><val xsi:type="ArrayOfHostPciPassthruInfo">
<HostPciPassthruInfo xsi:type="HostPciPassthruInfo"><id>0000:3b:00.0</id><dependentDevice>0000:3b:00.0</dependentDevice><passthruEnabled>true</passthruEnabled><passthruCapable>true</passthruCapable><passthruActive>false</passthruActive></HostPciPassthruInfo>
<HostPciPassthruInfo xsi:type="HostPciPassthruInfo"><id>0000:81:00.0</id><dependentDevice>0000:80:03.0</dependentDevice><passthruEnabled>false</passthruEnabled><passthruCapable>true</passthruCapable><passthruActive>false</passthruActive></HostPciPassthruInfo>
<HostPciPassthruInfo xsi:type="HostPciPassthruInfo"><id>0000:81:00.1</id><dependentDevice>0000:80:03.0</dependentDevice><passthruEnabled>false</passthruEnabled><passthruCapable>true</passthruCapable><passthruActive>false</passthruActive></HostPciPassthruInfo>
</val></propSet>
<propSet><name>config.graphicsInfo</name><val xsi:type="ArrayOfHostGraphicsInfo"><HostGraphicsInfo><deviceName>TU104GL [Tesla T4]</deviceName><vendorName>NVIDIA Corporation</vendorName><pciId>0000:3b:00.0</pciId><graphicsType>basic</graphicsType><memorySizeInKB>16777216</memorySizeInKB></HostGraphicsInfo></val></propSet>
<propSet><name>config.sharedPassthruGpuTypes</name><val xsi:type="ArrayOfString"><string>grid_t4-4q</string><string>grid_a100-8c</string></val></propSet>
<propSet><name>configManager.pciPassthruSystem</name><val type="HostPciPassthruSystem" xsi:type="ManagedObjectReference">pciPassthruSystem-21</val></propSet>
</returnval>"#;

    #[test]
    fn reads_devices_ids_as_unsigned_and_passthrough_state() {
        let h = HostPci::from_content(&content(HOST));
        assert_eq!(h.name, "esx-01");
        let t4 = h.device("0000:3B:00.0").unwrap();
        assert_eq!(
            (t4.vendor_id, t4.device_id, t4.class_id),
            (0x10de, 0x1eb8, 0x0302)
        );
        assert!(t4.is_gpu());
        let nic = h.device("81:00.0").unwrap();
        assert_eq!(nic.vendor_id, 0x8086, "signed short on the wire");
        assert!(!nic.is_gpu());
        let s = h.state("0000:3b:00.0");
        assert!(s.capable && s.enabled && !s.active);
        assert_eq!(h.gpu_memory_kb.get("0000:3b:00.0"), Some(&16_777_216));
        assert_eq!(h.profiles_for(t4), vec!["grid_t4-4q".to_string()]);
        assert!(h.profiles_for(nic).is_empty());
        assert_eq!(
            h.group_mates("0000:81:00.0"),
            vec!["0000:81:00.1".to_string()]
        );
        assert!(h.group_mates("0000:3b:00.0").is_empty());
        assert_eq!(h.group_of("0000:81:00.1"), "0000:80:03.0");
        assert_eq!(h.passthru_system.unwrap().value, "pciPassthruSystem-21");
    }

    #[test]
    fn addresses() {
        assert!(is_address("0000:3b:00.0"));
        assert!(!is_address("0000:3b:00.8"));
        assert!(!is_address("3b:00.0"));
        assert!(!is_address("0000:3g:00.0"));
        assert_eq!(normalize_address("3B:00.1"), "0000:3b:00.1");
    }

    #[test]
    fn reads_config_target() {
        let xml = r#"<returnval><pciPassthrough xsi:type="VirtualMachinePciPassthroughInfo"><name>TU104GL [Tesla T4]</name><pciDevice><id>0000:3b:00.0</id><classId>770</classId><vendorId>4318</vendorId><deviceId>7864</deviceId><deviceName>TU104GL [Tesla T4]</deviceName></pciDevice><systemId>5f1c-aa</systemId></pciPassthrough><sharedGpuPassthroughTypes><vgpu>grid_t4-4q</vgpu></sharedGpuPassthroughTypes></returnval>"#;
        let t = ConfigTarget::from_node(&parse_fragment(xml).unwrap()[0]);
        assert_eq!(t.pci.len(), 1);
        assert_eq!(t.pci[0].system_id, "5f1c-aa");
        assert_eq!(t.pci[0].device_id, 0x1eb8);
        assert_eq!(t.vgpu_profiles, vec!["grid_t4-4q".to_string()]);
    }
}
