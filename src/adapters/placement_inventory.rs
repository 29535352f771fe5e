//! One endpoint's inventory as the placement engine sees it, made from what vSphere reports
//! ([`CapacityFacts`], one round trip).
//!
//! Capacity model: CPU used is the host's current demand (its overall CPU usage); memory used
//! is what powered-on VMs are configured with (committed, as admission control counts it). A
//! passthrough device is free when it is active and no VM holds it; a vGPU profile's free
//! instances are the GPUs of its model times (frame buffer / profile size) minus the
//! instances VMs hold.

use std::collections::BTreeMap;

use crate::engine::placement;
use crate::vsphere::capacity::{CapacityFacts, DatastoreFacts, HostConnection, HostFacts, VmFacts};
use crate::vsphere::device::{Device, PassthroughBacking};
use crate::vsphere::error::Result;
use crate::vsphere::pci::{normalize_address, HostPci, PciDevice};
use crate::vsphere::types::ManagedObjectReference;
use crate::vsphere::Client;

/// One endpoint's inventory as placement sees it, with the vSphere objects behind the names.
#[derive(Debug, Clone, Default)]
pub struct PlacementInventory {
    /// The engine's view.
    pub inventory: placement::Fleet,
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
            remove_vm(h, name);
        }
        for (_, host, what) in self.held.iter().filter(|(vm, ..)| vm == name) {
            if let Some(h) = self.inventory.hosts.iter_mut().find(|h| h.name == *host) {
                release(h, what);
            }
        }
        self.held.retain(|(vm, ..)| vm != name);
    }
}

/// Removes the VMs named `name` from `host`, their memory with them.
fn remove_vm(host: &mut placement::Host, name: &str) {
    let mut freed = 0;
    host.vms.retain(|v| {
        let keep = v.name != name;
        if !keep {
            freed += v.memory_mib;
        }
        keep
    });
    host.memory_mib_used = host.memory_mib_used.saturating_sub(freed);
}

/// Gives `what` back to `host`: a device becomes free, a vGPU profile one instance freer.
fn release(host: &mut placement::Host, what: &HeldDevice) {
    match what {
        HeldDevice::Direct(d) => {
            if !host.pci_devices.iter().any(|x| x.id == d.id) {
                host.pci_devices.push(d.clone());
            }
        }
        HeldDevice::Vgpu(profile) => {
            if let Some(p) = host.vgpu_profiles.iter_mut().find(|p| p.name == *profile) {
                p.free += 1;
            }
        }
    }
}

/// The endpoint's placement inventory, from one read of its facts
/// ([`Client::capacity_facts`]: one round trip, two the first time its view is made).
/// `cluster_default` names the cluster of standalone hosts (the endpoint).
pub async fn fetch(client: &Client, cluster_default: &str) -> Result<PlacementInventory> {
    let facts = client.capacity_facts().await?;
    Ok(convert(&facts, cluster_default))
}

const GIB: i64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// The names objects are known by, and the cluster of standalone hosts.
struct Names<'f> {
    clusters: &'f BTreeMap<ManagedObjectReference, String>,
    networks: &'f BTreeMap<ManagedObjectReference, String>,
    datastores: BTreeMap<ManagedObjectReference, String>,
    cluster_default: &'f str,
}

impl<'f> Names<'f> {
    fn new(facts: &'f CapacityFacts, cluster_default: &'f str) -> Self {
        Self {
            clusters: &facts.clusters,
            networks: &facts.networks,
            datastores: facts
                .datastores
                .iter()
                .filter_map(|d| Some((d.obj.clone(), d.name.clone()?)))
                .collect(),
            cluster_default,
        }
    }

    /// The names of those of `objs` that are networks.
    fn networks_of(&self, objs: &[ManagedObjectReference]) -> Vec<String> {
        objs.iter()
            .filter_map(|n| self.networks.get(n))
            .cloned()
            .collect()
    }

    /// The name of datastore `obj`, when it is one and has a name.
    fn datastore(&self, obj: &ManagedObjectReference) -> Option<String> {
        self.datastores.get(obj).cloned()
    }

    /// The names of those of `objs` that are datastores.
    fn datastores_of(&self, objs: &[ManagedObjectReference]) -> Vec<String> {
        objs.iter()
            .filter_map(|d| self.datastores.get(d))
            .cloned()
            .collect()
    }

    /// The cluster `host` is in, or `cluster_default` for a standalone host.
    fn cluster_of(&self, host: &HostFacts) -> String {
        host.parent
            .as_ref()
            .and_then(|p| self.clusters.get(p).cloned())
            .unwrap_or_else(|| self.cluster_default.to_string())
    }
}

/// Converts what one read returned into the engine's inventory. `cluster_default` names the
/// cluster of standalone hosts (the endpoint).
pub fn convert(facts: &CapacityFacts, cluster_default: &str) -> PlacementInventory {
    let names = Names::new(facts, cluster_default);
    let vms_of = vms_by_host(&facts.vms);
    let mut out = PlacementInventory::default();
    for h in &facts.hosts {
        let on_host: &[&VmFacts] = vms_of.get(&h.obj).map_or(&[], Vec::as_slice);
        let holdings = holdings(h, on_host);
        out.inventory
            .hosts
            .push(host(h, on_host, &holdings, &names));
        out.held.extend(holdings.held);
        out.hosts.insert(h.name.clone(), h.obj.clone());
    }
    out.inventory.datastores = datastores(&facts.datastores, &out.hosts);
    out.inventory.anti_affinity_groups = anti_affinity_groups(&out.inventory.hosts);
    out
}

/// VMs by the host they are registered on, in the read's order (grouped once, not searched
/// per host). VMs on no host are left out.
fn vms_by_host(vms: &[VmFacts]) -> BTreeMap<ManagedObjectReference, Vec<&VmFacts>> {
    let mut out: BTreeMap<ManagedObjectReference, Vec<&VmFacts>> = BTreeMap::new();
    for vm in vms {
        if let Some(host) = &vm.host {
            out.entry(host.clone()).or_default().push(vm);
        }
    }
    out
}

/// What the VMs of one host hold.
#[derive(Debug, Default)]
struct Holdings {
    /// (VM name, host name, what), for [`PlacementInventory::held`].
    held: Vec<(String, String, HeldDevice)>,
    /// Addresses of the devices held whole (also those the host does not list).
    addresses: Vec<String>,
    /// vGPU instances held, by profile.
    vgpus: BTreeMap<String, u64>,
}

/// The passthrough devices and vGPU instances the VMs `on_host` of `host` hold.
fn holdings(host: &HostFacts, on_host: &[&VmFacts]) -> Holdings {
    let mut out = Holdings::default();
    for v in on_host {
        for d in &v.devices {
            let Device::Passthrough(p) = d else {
                continue;
            };
            let what = match &p.backing {
                PassthroughBacking::Direct { id, .. } => {
                    let id = normalize_address(id);
                    let dev = host.pci.device(&id).map(engine_device);
                    out.addresses.push(id);
                    dev.map(HeldDevice::Direct)
                }
                PassthroughBacking::Vgpu { profile } => {
                    *out.vgpus.entry(profile.clone()).or_default() += 1;
                    Some(HeldDevice::Vgpu(profile.clone()))
                }
            };
            if let Some(what) = what {
                out.held.push((v.name.clone(), host.name.clone(), what));
            }
        }
    }
    out
}

/// A host PCI device as the placement engine sees it.
fn engine_device(d: &PciDevice) -> placement::PciDevice {
    placement::PciDevice {
        id: d.id.clone(),
        class_id: d.class_id,
        vendor_id: d.vendor_id,
        device_id: d.device_id,
        vendor_name: d.vendor_name.clone(),
        device_name: d.device_name.clone(),
    }
}

/// The host's devices free for passthrough: capable, active, and not at one of `held`.
fn free_pci_devices(pci: &HostPci, held: &[String]) -> Vec<placement::PciDevice> {
    pci.devices
        .iter()
        .filter(|d| {
            let s = pci.state(&d.id);
            s.capable && s.active && !held.contains(&d.id)
        })
        .map(engine_device)
        .collect()
}

/// GiB of frame buffer a vGPU profile gives (`grid_t4-4q` -> 4), when its name says.
fn profile_gib(profile: &str) -> Option<u64> {
    let size = profile.rsplit('-').next()?;
    let digits: String = size.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|g| *g > 0)
}

/// Instances of `profile` the host's GPUs give in all: per GPU of its model, the frame
/// buffer over the profile's size (1 when either is unknown).
fn vgpu_instances(pci: &HostPci, profile: &str) -> u64 {
    pci.devices
        .iter()
        .filter(|d| pci.profiles_for(d).iter().any(|p| p == profile))
        .map(
            |d| match (pci.gpu_memory_kb.get(&d.id), profile_gib(profile)) {
                (Some(kb), Some(g)) => (*kb as u64 / (1 << 20)) / g,
                _ => 1,
            },
        )
        .sum()
}

/// The host's vGPU profiles with their free instances, `held` (by profile) taken off.
fn vgpu_profiles(pci: &HostPci, held: &BTreeMap<String, u64>) -> Vec<placement::VgpuProfile> {
    pci.vgpu_profiles
        .iter()
        .map(|profile| {
            let used = held.get(profile).copied().unwrap_or(0);
            let free = vgpu_instances(pci, profile).saturating_sub(used);
            placement::VgpuProfile {
                name: profile.clone(),
                free: free.min(u64::from(u32::MAX)) as u32,
            }
        })
        .collect()
}

/// The host's networks, with the VLAN of its standard port group of the same name (none for
/// 0, untagged, and 4095, trunk).
fn host_networks(host: &HostFacts, names: &Names) -> Vec<placement::HostNetwork> {
    names
        .networks_of(&host.networks)
        .into_iter()
        .map(|name| placement::HostNetwork {
            vlan_id: host
                .port_group_vlans
                .get(&name)
                .copied()
                .filter(|v| (1..4095).contains(v)),
            name,
        })
        .collect()
}

/// GiB of `bytes`, rounded up (negative counts as 0).
fn gib_up(bytes: i64) -> u64 {
    (bytes.max(0) + GIB - 1) as u64 / GIB as u64
}

/// GiB of `bytes`, rounded down (negative counts as 0).
fn gib_down(bytes: i64) -> u64 {
    bytes.max(0) as u64 / GIB as u64
}

/// A VM as the engine sees it: memory counts only while it is powered on; a VM with a
/// passthrough device is pinned to its host; an empty group is none.
fn vm(v: &VmFacts, names: &Names) -> placement::Vm {
    let group = v.anti_affinity_group.clone().filter(|g| !g.is_empty());
    placement::Vm {
        name: v.name.clone(),
        cpus: v.num_cpu,
        cpu_mhz: 0,
        memory_mib: if v.powered_on { v.memory_mb } else { 0 },
        disk_gib: gib_up(v.committed_bytes),
        datastore: v.datastores.first().and_then(|d| names.datastore(d)),
        networks: names.networks_of(&v.networks),
        groups: group.into_iter().collect(),
        tags: Vec::new(),
        pinned: v
            .devices
            .iter()
            .any(|d| matches!(d, Device::Passthrough(_))),
    }
}

/// The engine's connection state of a host.
fn connection_state(c: HostConnection) -> placement::ConnectionState {
    match c {
        HostConnection::Connected => placement::ConnectionState::Connected,
        HostConnection::Disconnected => placement::ConnectionState::Disconnected,
        HostConnection::NotResponding => placement::ConnectionState::NotResponding,
    }
}

/// A host as the engine sees it, with the VMs `on_host` and what they hold.
fn host(
    h: &HostFacts,
    on_host: &[&VmFacts],
    holdings: &Holdings,
    names: &Names,
) -> placement::Host {
    let vms: Vec<placement::Vm> = on_host.iter().map(|v| vm(v, names)).collect();
    placement::Host {
        name: h.name.clone(),
        cluster: names.cluster_of(h),
        cpu_mhz_capacity: h.cpu_cores * h.cpu_mhz,
        cpu_mhz_used: h.cpu_usage_mhz,
        memory_mib_capacity: h.memory_bytes / MIB,
        memory_mib_used: vms.iter().map(|v| v.memory_mib).sum(),
        connection_state: connection_state(h.connection),
        maintenance_mode: h.in_maintenance,
        datastores: names.datastores_of(&h.datastores),
        networks: host_networks(h, names),
        pci_devices: free_pci_devices(&h.pci, &holdings.addresses),
        vgpu_profiles: vgpu_profiles(&h.pci, &holdings.vgpus),
        vms,
    }
}

/// The datastores as the engine sees them, with the names (from `hosts`, name -> object) of
/// the hosts mounting them.
fn datastores(
    facts: &[DatastoreFacts],
    hosts: &BTreeMap<String, ManagedObjectReference>,
) -> Vec<placement::Datastore> {
    let host_names: BTreeMap<&ManagedObjectReference, &String> =
        hosts.iter().map(|(n, o)| (o, n)).collect();
    facts
        .iter()
        .map(|d| placement::Datastore {
            name: d.name.clone().unwrap_or_default(),
            capacity_gib: gib_down(d.capacity_bytes),
            free_gib: gib_down(d.free_bytes),
            hosts: d
                .hosts
                .iter()
                .filter_map(|h| host_names.get(h).map(|n| (*n).clone()))
                .collect(),
            accessible: d.accessible,
        })
        .collect()
}

/// Every anti-affinity group a VM of `hosts` is in, sorted, once each.
fn anti_affinity_groups(hosts: &[placement::Host]) -> Vec<String> {
    let mut groups: Vec<String> = hosts
        .iter()
        .flat_map(|h| h.vms.iter().flat_map(|v| v.groups.iter().cloned()))
        .collect();
    groups.sort();
    groups.dedup();
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::device::Passthrough;
    use crate::vsphere::pci::PassthruState;

    fn obj(kind: &str, id: &str) -> ManagedObjectReference {
        ManagedObjectReference::new(kind, id)
    }

    /// A Tesla T4 (16 GiB) at `id`.
    fn t4(id: &str) -> PciDevice {
        PciDevice {
            id: id.to_string(),
            class_id: 0x0302,
            vendor_id: 0x10de,
            device_id: 0x1eb8,
            vendor_name: "NVIDIA Corporation".to_string(),
            device_name: "TU104GL [Tesla T4]".to_string(),
            ..PciDevice::default()
        }
    }

    fn active() -> PassthruState {
        PassthruState {
            capable: true,
            enabled: true,
            active: true,
            dependent_device: None,
        }
    }

    /// Two T4s: the first active for passthrough, the second offering `grid_t4-4q`.
    fn pci(host: &ManagedObjectReference) -> HostPci {
        HostPci {
            host: host.clone(),
            name: String::new(),
            passthru_system: None,
            in_maintenance: false,
            devices: vec![t4("0000:3b:00.0"), t4("0000:af:00.0")],
            passthru: BTreeMap::from([("0000:3b:00.0".to_string(), active())]),
            gpu_memory_kb: BTreeMap::from([("0000:af:00.0".to_string(), 16 << 20)]),
            vgpu_profiles: vec!["grid_t4-4q".to_string()],
            holders: BTreeMap::new(),
        }
    }

    fn host_facts(id: &str, name: &str, parent: Option<ManagedObjectReference>) -> HostFacts {
        let host = obj("HostSystem", id);
        HostFacts {
            pci: pci(&host),
            obj: host,
            name: name.to_string(),
            parent,
            cpu_cores: 8,
            cpu_mhz: 2000,
            memory_bytes: 64 << 30,
            cpu_usage_mhz: 1500,
            connection: HostConnection::Connected,
            in_maintenance: false,
            datastores: vec![obj("Datastore", "ds-1")],
            networks: vec![obj("Network", "net-1"), obj("Network", "net-2")],
            port_group_vlans: BTreeMap::from([
                ("VM Network".to_string(), 0),
                ("prod".to_string(), 120),
            ]),
        }
    }

    fn vm_facts(name: &str, host: &str) -> VmFacts {
        VmFacts {
            obj: obj("VirtualMachine", name),
            name: name.to_string(),
            host: Some(obj("HostSystem", host)),
            powered_on: true,
            num_cpu: 2,
            memory_mb: 4096,
            devices: Vec::new(),
            anti_affinity_group: None,
            committed_bytes: (1 << 30) + 1,
            datastores: vec![obj("Datastore", "ds-1")],
            networks: vec![obj("Network", "net-2")],
        }
    }

    fn passthrough(backing: PassthroughBacking) -> Device {
        Device::Passthrough(Passthrough {
            key: 13000,
            backing,
        })
    }

    fn direct(id: &str) -> Device {
        passthrough(PassthroughBacking::Direct {
            id: id.to_string(),
            device_id: "1eb8".to_string(),
            system_id: String::new(),
            vendor_id: 0x10de,
            device_name: String::new(),
        })
    }

    fn vgpu(profile: &str) -> Device {
        passthrough(PassthroughBacking::Vgpu {
            profile: profile.to_string(),
        })
    }

    /// A cluster with host-1 (VMs a and b) and a standalone host-2 (VM c), one datastore.
    fn facts() -> CapacityFacts {
        let cluster = obj("ClusterComputeResource", "domain-c1");
        let mut a = vm_facts("a", "host-1");
        a.devices = vec![direct("3B:00.0"), vgpu("grid_t4-4q")];
        a.anti_affinity_group = Some("web".to_string());
        let mut b = vm_facts("b", "host-1");
        b.powered_on = false;
        b.anti_affinity_group = Some(String::new());
        let mut c = vm_facts("c", "host-2");
        c.anti_affinity_group = Some("db".to_string());
        let mut orphan = vm_facts("orphan", "host-1");
        orphan.host = None;
        CapacityFacts {
            hosts: vec![
                host_facts("host-1", "esx1", Some(cluster.clone())),
                host_facts("host-2", "esx2", Some(obj("ComputeResource", "cr-2"))),
            ],
            vms: vec![a, b, orphan, c],
            datastores: vec![DatastoreFacts {
                obj: obj("Datastore", "ds-1"),
                name: Some("ds1".to_string()),
                capacity_bytes: (100 << 30) + 5,
                free_bytes: -1,
                accessible: true,
                hosts: vec![obj("HostSystem", "host-1"), obj("HostSystem", "host-9")],
            }],
            clusters: BTreeMap::from([(cluster, "c1".to_string())]),
            networks: BTreeMap::from([
                (obj("Network", "net-1"), "VM Network".to_string()),
                (obj("Network", "net-2"), "prod".to_string()),
            ]),
        }
    }

    #[test]
    fn profile_sizes_come_from_the_name() {
        assert_eq!(profile_gib("grid_t4-4q"), Some(4));
        assert_eq!(profile_gib("grid_a100-40c"), Some(40));
        assert_eq!(profile_gib("grid_t4"), None);
    }

    #[test]
    fn held_devices_and_free_ones() {
        let facts = facts();
        let on_host: Vec<&VmFacts> = facts.vms.iter().take(2).collect();
        let h = holdings(&facts.hosts[0], &on_host);
        assert_eq!(h.addresses, vec!["0000:3b:00.0".to_string()]);
        assert_eq!(h.vgpus.get("grid_t4-4q"), Some(&1));
        assert_eq!(h.held.len(), 2);
        assert!(matches!(&h.held[0], (vm, host, HeldDevice::Direct(d))
            if vm == "a" && host == "esx1" && d.id == "0000:3b:00.0"));
        let pci = &facts.hosts[0].pci;
        assert!(free_pci_devices(pci, &h.addresses).is_empty());
        let free = free_pci_devices(pci, &[]);
        assert_eq!(free.len(), 1, "only the active device is free");
        assert_eq!(free[0].id, "0000:3b:00.0");
    }

    #[test]
    fn vgpu_instances_come_from_the_frame_buffer() {
        let pci = pci(&obj("HostSystem", "host-1"));
        // 16 GiB / 4 GiB on the T4 the host describes, 1 on the one it does not.
        assert_eq!(vgpu_instances(&pci, "grid_t4-4q"), 4 + 1);
        let held = BTreeMap::from([("grid_t4-4q".to_string(), 2)]);
        let profiles = vgpu_profiles(&pci, &held);
        assert_eq!(profiles.len(), 1);
        assert_eq!(profiles[0].free, 3);
    }

    #[test]
    fn host_networks_carry_real_vlans_only() {
        let facts = facts();
        let names = Names::new(&facts, "vc");
        let nets = host_networks(&facts.hosts[0], &names);
        assert_eq!(nets.len(), 2);
        assert_eq!(
            (nets[0].name.as_str(), nets[0].vlan_id),
            ("VM Network", None)
        );
        assert_eq!(
            (nets[1].name.as_str(), nets[1].vlan_id),
            ("prod", Some(120))
        );
    }

    #[test]
    fn a_vm_as_the_engine_sees_it() {
        let facts = facts();
        let names = Names::new(&facts, "vc");
        let a = vm(&facts.vms[0], &names);
        assert_eq!(a.memory_mib, 4096);
        assert_eq!(a.disk_gib, 2, "committed bytes round up");
        assert_eq!(a.datastore.as_deref(), Some("ds1"));
        assert_eq!(a.networks, vec!["prod".to_string()]);
        assert_eq!(a.groups, vec!["web".to_string()]);
        assert!(a.pinned);
        let b = vm(&facts.vms[1], &names);
        assert_eq!(b.memory_mib, 0, "a powered-off VM takes no memory");
        assert!(b.groups.is_empty(), "an empty group is none");
        assert!(!b.pinned);
    }

    #[test]
    fn converts_hosts_datastores_and_groups() {
        let inv = convert(&facts(), "vc");
        let [esx1, esx2] = inv.inventory.hosts.as_slice() else {
            panic!("two hosts: {:?}", inv.inventory.hosts);
        };
        assert_eq!((esx1.cluster.as_str(), esx2.cluster.as_str()), ("c1", "vc"));
        assert_eq!(esx1.cpu_mhz_capacity, 16_000);
        assert_eq!(esx1.memory_mib_capacity, 64 << 10);
        assert_eq!(esx1.memory_mib_used, 4096, "b is off, orphan on no host");
        assert_eq!(esx1.vms.len(), 2);
        assert!(esx1.pci_devices.is_empty());
        assert_eq!(esx1.vgpu_profiles[0].free, 4);
        assert_eq!(esx2.pci_devices.len(), 1);
        assert_eq!(esx1.datastores, vec!["ds1".to_string()]);
        let ds = &inv.inventory.datastores[0];
        assert_eq!((ds.capacity_gib, ds.free_gib), (100, 0));
        assert_eq!(ds.hosts, vec!["esx1".to_string()]);
        assert_eq!(inv.inventory.anti_affinity_groups, vec!["db", "web"]);
        assert_eq!(inv.hosts.get("esx2"), Some(&obj("HostSystem", "host-2")));
        assert_eq!(inv.held.len(), 2);
    }

    #[test]
    fn forgetting_a_vm_frees_what_it_holds() {
        let mut inv = convert(&facts(), "vc");
        inv.forget("a");
        let esx1 = &inv.inventory.hosts[0];
        assert_eq!(esx1.memory_mib_used, 0);
        assert_eq!(esx1.vms.len(), 1);
        assert_eq!(esx1.pci_devices.len(), 1);
        assert_eq!(esx1.vgpu_profiles[0].free, 5);
        assert!(inv.held.is_empty());
    }
}
