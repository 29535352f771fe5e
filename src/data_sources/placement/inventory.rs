//! What placement needs to know of an endpoint, read in one property-collector round trip
//! through one container view (hosts with their PCI devices and port groups, datastores, VMs,
//! clusters, networks), converted to the placement engine's inventory.
//!
//! Capacity model: CPU used is the host's current demand (`summary.quickStats.overallCpuUsage`);
//! memory used is what powered-on VMs are configured with (committed, as admission control
//! counts it). A passthrough device is free when it is active and no VM holds it; a vGPU
//! profile's free instances are the GPUs of its model times (frame buffer / profile size)
//! minus the instances VMs hold.

use std::collections::BTreeMap;

use crate::engine::placement;
use crate::vsphere::device::{devices, Device, PassthroughBacking};
use crate::vsphere::error::Result;
use crate::vsphere::pci::{normalize_address, HostPci};
use crate::vsphere::property::{ObjectContent, PropertySpec};
use crate::vsphere::types::ManagedObjectReference;
use crate::vsphere::Client;

const HOST_PATHS: &[&str] = &[
    "name",
    "parent",
    "summary.hardware.cpuMhz",
    "summary.hardware.numCpuCores",
    "summary.hardware.memorySize",
    "summary.quickStats.overallCpuUsage",
    "runtime.connectionState",
    "runtime.inMaintenanceMode",
    "datastore",
    "network",
    "config.network.portgroup",
    "hardware.pciDevice",
    "config.pciPassthruInfo",
    "config.graphicsInfo",
    "config.sharedPassthruGpuTypes",
];

const VM_PATHS: &[&str] = &[
    "name",
    "runtime.host",
    "runtime.powerState",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.hardware.device",
    "config.extraConfig",
    "summary.storage.committed",
    "datastore",
    "network",
];

/// The extraConfig key where `ceso_vm` records its anti-affinity group.
pub const GROUP_KEY: &str = "ceso.antiAffinityGroup";

/// One endpoint's inventory as placement sees it, with the vSphere objects behind the names.
#[derive(Debug, Clone, Default)]
pub struct PlacementInventory {
    /// The engine's view.
    pub inventory: placement::Inventory,
    /// Host name -> host object.
    pub hosts: BTreeMap<String, ManagedObjectReference>,
    /// Passthrough devices and vGPUs VMs hold: (VM name, host name, what).
    pub held: Vec<(String, String, HeldDevice)>,
}

/// A device a VM holds.
#[derive(Debug, Clone)]
pub enum HeldDevice {
    /// A whole device.
    Direct(placement::PciDevice),
    /// One instance of a vGPU profile.
    Vgpu(String),
}

impl PlacementInventory {
    /// Takes the VM named `name` out: its memory and devices count as free again, so a
    /// placement for that VM is where it would go if placed now (it neither avoids nor crowds
    /// itself, and keeps its GPU).
    pub fn forget(&mut self, name: &str) {
        for h in &mut self.inventory.hosts {
            let mut freed = 0;
            h.vms.retain(|v| {
                let keep = v.name != name;
                if !keep {
                    freed += v.memory_mib;
                }
                keep
            });
            h.memory_mib_used = h.memory_mib_used.saturating_sub(freed);
        }
        for (vm, host, what) in self.held.iter().filter(|(vm, ..)| vm == name) {
            let _ = vm;
            let Some(h) = self.inventory.hosts.iter_mut().find(|h| h.name == *host) else {
                continue;
            };
            match what {
                HeldDevice::Direct(d) => {
                    if !h.pci_devices.iter().any(|x| x.id == d.id) {
                        h.pci_devices.push(d.clone());
                    }
                }
                HeldDevice::Vgpu(profile) => {
                    if let Some(p) = h.vgpu_profiles.iter_mut().find(|p| p.name == *profile) {
                        p.free += 1;
                    }
                }
            }
        }
        self.held.retain(|(vm, ..)| vm != name);
    }
}

const GIB: i64 = 1 << 30;

fn names(contents: &[ObjectContent], kinds: &[&str]) -> BTreeMap<ManagedObjectReference, String> {
    contents
        .iter()
        .filter(|o| kinds.contains(&o.obj.kind.as_str()))
        .filter_map(|o| Some((o.obj.clone(), o.text("name")?.to_string())))
        .collect()
}

/// A host PCI device as the placement engine sees it.
fn engine_device(d: &crate::vsphere::pci::PciDevice) -> placement::PciDevice {
    placement::PciDevice {
        id: d.id.clone(),
        class_id: d.class_id,
        vendor_id: d.vendor_id,
        device_id: d.device_id,
        vendor_name: d.vendor_name.clone(),
        device_name: d.device_name.clone(),
    }
}

/// GiB of frame buffer a vGPU profile gives (`grid_t4-4q` -> 4), when its name says.
fn profile_gib(profile: &str) -> Option<u64> {
    let size = profile.rsplit('-').next()?;
    let digits: String = size.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|g| *g > 0)
}

/// Converts what one read returned into the engine's inventory. `cluster_default` names the
/// cluster of standalone hosts (the endpoint).
pub fn convert(contents: &[ObjectContent], cluster_default: &str) -> PlacementInventory {
    let clusters = names(contents, &["ClusterComputeResource"]);
    let networks = names(
        contents,
        &["Network", "DistributedVirtualPortgroup", "OpaqueNetwork"],
    );
    let datastore_names = names(contents, &["Datastore"]);
    // VMs by host, grouped once (not searched per host).
    let mut vms_of: BTreeMap<ManagedObjectReference, Vec<&ObjectContent>> = BTreeMap::new();
    for vm in contents.iter().filter(|o| o.obj.kind == "VirtualMachine") {
        if let Some(host) = vm.moref("runtime.host") {
            vms_of.entry(host).or_default().push(vm);
        }
    }
    let mut out = PlacementInventory::default();
    for h in contents.iter().filter(|o| o.obj.kind == "HostSystem") {
        let name = h.text("name").unwrap_or_default().to_string();
        let pci = HostPci::from_content(h);
        let on_host: &[&ObjectContent] = vms_of.get(&h.obj).map_or(&[], Vec::as_slice);
        // Devices and vGPU instances VMs hold.
        let mut held: Vec<String> = Vec::new();
        let mut vgpus_held: BTreeMap<String, u64> = BTreeMap::new();
        for v in on_host {
            let vm_name = v.text("name").unwrap_or_default().to_string();
            for d in devices(v.get("config.hardware.device")) {
                if let Device::Passthrough(p) = d {
                    match p.backing {
                        PassthroughBacking::Direct { id, .. } => {
                            let id = normalize_address(&id);
                            if let Some(dev) = pci.device(&id) {
                                out.held.push((
                                    vm_name.clone(),
                                    name.clone(),
                                    HeldDevice::Direct(engine_device(dev)),
                                ));
                            }
                            held.push(id);
                        }
                        PassthroughBacking::Vgpu { profile } => {
                            out.held.push((
                                vm_name.clone(),
                                name.clone(),
                                HeldDevice::Vgpu(profile.clone()),
                            ));
                            *vgpus_held.entry(profile).or_default() += 1
                        }
                    }
                }
            }
        }
        let pci_devices = pci
            .devices
            .iter()
            .filter(|d| {
                let s = pci.state(&d.id);
                s.capable && s.active && !held.contains(&d.id)
            })
            .map(engine_device)
            .collect();
        let vgpu_profiles = pci
            .vgpu_profiles
            .iter()
            .map(|profile| {
                let per_gpu: u64 = pci
                    .devices
                    .iter()
                    .filter(|d| pci.profiles_for(d).contains(profile))
                    .map(
                        |d| match (pci.gpu_memory_kb.get(&d.id), profile_gib(profile)) {
                            (Some(kb), Some(g)) => (*kb as u64 / (1 << 20)) / g,
                            _ => 1,
                        },
                    )
                    .sum();
                let used = vgpus_held.get(profile).copied().unwrap_or(0);
                placement::VgpuProfile {
                    name: profile.clone(),
                    free: per_gpu.saturating_sub(used).min(u64::from(u32::MAX)) as u32,
                }
            })
            .collect();
        let vlan_of: BTreeMap<String, u16> = h
            .get("config.network.portgroup")
            .map(|n| {
                n.children
                    .iter()
                    .filter_map(|pg| {
                        let spec = pg.child("spec")?;
                        Some((
                            spec.text_of("name")?.to_string(),
                            spec.parse_of::<u16>("vlanId").unwrap_or(0),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let host_networks = h
            .morefs("network")
            .iter()
            .filter_map(|n| networks.get(n))
            .map(|n| placement::HostNetwork {
                name: n.clone(),
                vlan_id: vlan_of.get(n).copied().filter(|v| (1..4095).contains(v)),
            })
            .collect();
        let vm_list: Vec<placement::Vm> = on_host
            .iter()
            .map(|v| {
                let powered_on = v.text("runtime.powerState") == Some("poweredOn");
                let group = v.get("config.extraConfig").and_then(|ec| {
                    ec.children
                        .iter()
                        .filter(|o| o.text_of("key") == Some(GROUP_KEY))
                        .filter_map(|o| o.text_of("value"))
                        .next_back()
                        .filter(|g| !g.is_empty())
                        .map(str::to_string)
                });
                let has_passthrough = devices(v.get("config.hardware.device"))
                    .iter()
                    .any(|d| matches!(d, Device::Passthrough(_)));
                placement::Vm {
                    name: v.text("name").unwrap_or_default().to_string(),
                    cpus: v.parse("config.hardware.numCPU").unwrap_or(1),
                    cpu_mhz: 0,
                    memory_mib: if powered_on {
                        v.parse("config.hardware.memoryMB").unwrap_or(0)
                    } else {
                        0
                    },
                    disk_gib: v
                        .parse::<i64>("summary.storage.committed")
                        .map(|b| (b.max(0) + GIB - 1) as u64 / GIB as u64)
                        .unwrap_or(0),
                    datastore: v
                        .morefs("datastore")
                        .first()
                        .and_then(|d| datastore_names.get(d))
                        .cloned(),
                    networks: v
                        .morefs("network")
                        .iter()
                        .filter_map(|n| networks.get(n))
                        .cloned()
                        .collect(),
                    groups: group.into_iter().collect(),
                    tags: Vec::new(),
                    pinned: has_passthrough,
                }
            })
            .collect();
        let memory_used = vm_list.iter().map(|v| v.memory_mib).sum();
        let cores: u64 = h.parse("summary.hardware.numCpuCores").unwrap_or(0);
        let mhz: u64 = h.parse("summary.hardware.cpuMhz").unwrap_or(0);
        let cluster = h
            .moref("parent")
            .and_then(|p| clusters.get(&p).cloned())
            .unwrap_or_else(|| cluster_default.to_string());
        out.hosts.insert(name.clone(), h.obj.clone());
        out.inventory.hosts.push(placement::Host {
            name,
            cluster,
            cpu_mhz_capacity: cores * mhz,
            cpu_mhz_used: h.parse("summary.quickStats.overallCpuUsage").unwrap_or(0),
            memory_mib_capacity: h.parse::<u64>("summary.hardware.memorySize").unwrap_or(0)
                / (1 << 20),
            memory_mib_used: memory_used,
            connection_state: match h.text("runtime.connectionState") {
                Some("disconnected") => placement::ConnectionState::Disconnected,
                Some("notResponding") => placement::ConnectionState::NotResponding,
                _ => placement::ConnectionState::Connected,
            },
            maintenance_mode: h.bool("runtime.inMaintenanceMode").unwrap_or(false),
            datastores: h
                .morefs("datastore")
                .iter()
                .filter_map(|d| datastore_names.get(d))
                .cloned()
                .collect(),
            networks: host_networks,
            pci_devices,
            vgpu_profiles,
            vms: vm_list,
        });
    }
    let host_names: BTreeMap<ManagedObjectReference, String> = out
        .hosts
        .iter()
        .map(|(n, o)| (o.clone(), n.clone()))
        .collect();
    for d in contents.iter().filter(|o| o.obj.kind == "Datastore") {
        let gib = |path: &str| d.parse::<i64>(path).unwrap_or(0).max(0) as u64 / GIB as u64;
        out.inventory.datastores.push(placement::Datastore {
            name: d.text("name").unwrap_or_default().to_string(),
            capacity_gib: gib("summary.capacity"),
            free_gib: gib("summary.freeSpace"),
            hosts: d
                .get("host")
                .map(|n| {
                    n.children
                        .iter()
                        .filter_map(|m| m.moref_of("key"))
                        .filter_map(|h| host_names.get(&h).cloned())
                        .collect()
                })
                .unwrap_or_default(),
            accessible: d.bool("summary.accessible").unwrap_or(true),
        });
    }
    let mut groups: Vec<String> = out
        .inventory
        .hosts
        .iter()
        .flat_map(|h| h.vms.iter().flat_map(|v| v.groups.iter().cloned()))
        .collect();
    groups.sort();
    groups.dedup();
    out.inventory.anti_affinity_groups = groups;
    out
}

/// The endpoint's placement inventory: one `RetrievePropertiesEx` through a container view
/// (two round trips the first time the view is made).
pub async fn fetch(client: &Client, cluster_default: &str) -> Result<PlacementInventory> {
    let kinds = [
        "HostSystem",
        "Datastore",
        "VirtualMachine",
        "ClusterComputeResource",
        "Network",
        "DistributedVirtualPortgroup",
    ];
    let props = vec![
        PropertySpec::new("HostSystem", HOST_PATHS),
        PropertySpec::new(
            "Datastore",
            &[
                "name",
                "summary.capacity",
                "summary.freeSpace",
                "summary.accessible",
                "host",
            ],
        ),
        PropertySpec::new("VirtualMachine", VM_PATHS),
        PropertySpec::new("ClusterComputeResource", &["name"]),
        PropertySpec::new("Network", &["name"]),
        PropertySpec::new("DistributedVirtualPortgroup", &["name"]),
    ];
    let contents = client.retrieve_in_view(&kinds, props).await?;
    Ok(convert(&contents, cluster_default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_sizes_come_from_the_name() {
        assert_eq!(profile_gib("grid_t4-4q"), Some(4));
        assert_eq!(profile_gib("grid_a100-40c"), Some(40));
        assert_eq!(profile_gib("grid_t4"), None);
    }
}
