//! The engine's data: the inventory snapshot and the request going in, the decision coming out.
//!
//! Units are fixed by the field names: CPU in MHz, memory in MiB, disk in GiB (2^30 bytes).
//! Every type is serde-friendly so a data source can expose it as is; optional request fields
//! have defaults, so `{"cpus": 2, "memory_mib": 4096}` is a complete request.

use serde::{Deserialize, Serialize};

use super::filter::Filter;
use super::score::{ScoreBreakdown, Weights};

// ---------------------------------------------------------------------------------------------
// Fleet.

/// A snapshot of the hosts and datastores placement may choose from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    /// Hosts; their names must be unique.
    pub hosts: Vec<Host>,
    /// Datastores; their names must be unique. A datastore a host names but which is absent
    /// here is unusable (its free space is unknown).
    #[serde(default)]
    pub datastores: Vec<Datastore>,
    /// Groups whose VMs must run on different hosts (DRS VM-VM anti-affinity rules, or groups
    /// ceso placed with `anti_affinity_group`). Rebalancing respects them; placement requests
    /// name their own group.
    #[serde(default)]
    pub anti_affinity_groups: Vec<String>,
}

/// Whether vCenter can talk to a host (vSphere's `HostSystemConnectionState`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ConnectionState {
    /// Connected and managed.
    #[default]
    Connected,
    /// Disconnected by a user or never connected.
    Disconnected,
    /// vCenter lost contact (heartbeats missing).
    NotResponding,
}

/// One ESXi host as placement sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Host {
    /// Host name, unique in the inventory.
    pub name: String,
    /// Its cluster, or the endpoint name for a standalone host. Rebalancing moves VMs only
    /// between hosts of the same cluster.
    #[serde(default)]
    pub cluster: String,
    /// Total CPU capacity in MHz (cores × core MHz).
    pub cpu_mhz_capacity: u64,
    /// CPU committed to the VMs already on the host, in MHz.
    #[serde(default)]
    pub cpu_mhz_used: u64,
    /// Physical memory in MiB.
    pub memory_mib_capacity: u64,
    /// Memory committed to the VMs already on the host, in MiB.
    #[serde(default)]
    pub memory_mib_used: u64,
    /// Whether vCenter can reach the host.
    #[serde(default)]
    pub connection_state: ConnectionState,
    /// In maintenance mode (or entering it).
    #[serde(default)]
    pub maintenance_mode: bool,
    /// Names of the datastores the host mounts (merged with each datastore's `hosts`).
    #[serde(default)]
    pub datastores: Vec<String>,
    /// Networks (standard or distributed port groups) the host is attached to.
    #[serde(default)]
    pub networks: Vec<HostNetwork>,
    /// PCI devices free for passthrough; GPUs among them per [`PciDevice::is_gpu`].
    #[serde(default)]
    pub pci_devices: Vec<PciDevice>,
    /// vGPU profiles the host's GPUs can still serve.
    #[serde(default)]
    pub vgpu_profiles: Vec<VgpuProfile>,
    /// VMs running (or registered) on the host.
    #[serde(default)]
    pub vms: Vec<Vm>,
}

/// A network a host is attached to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostNetwork {
    /// Port group or network name.
    pub name: String,
    /// Its VLAN id, when it has a single one.
    #[serde(default)]
    pub vlan_id: Option<u16>,
}

/// A PCI device free for passthrough (the fields of vSphere's `HostPciDevice`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciDevice {
    /// PCI address, e.g. `0000:3b:00.0`; what a VM's passthrough device names.
    pub id: String,
    /// PCI class and subclass; 0x0300–0x03ff are display controllers, GPUs when
    /// [`crate::pci_ids::is_gpu`] says so.
    pub class_id: u16,
    /// PCI vendor id (0x10de NVIDIA, 0x1002 AMD, 0x8086 Intel).
    #[serde(default)]
    pub vendor_id: u16,
    /// PCI device id.
    #[serde(default)]
    pub device_id: u16,
    /// Vendor name, e.g. `NVIDIA Corporation`.
    #[serde(default)]
    pub vendor_name: String,
    /// Model name, e.g. `GA100 [A100 PCIe 40GB]`.
    #[serde(default)]
    pub device_name: String,
}

impl PciDevice {
    /// Whether the device is a GPU (a compute GPU, not a BMC's display or a virtual adapter:
    /// [`crate::pci_ids::is_gpu`]).
    pub fn is_gpu(&self) -> bool {
        crate::pci_ids::is_gpu(self.vendor_id, self.class_id)
    }
}

/// A vGPU profile and how many more VMs of it the host can take.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VgpuProfile {
    /// Profile name, e.g. `grid_a100-8c`.
    pub name: String,
    /// Instances of this profile still free.
    pub free: u32,
}

/// A VM already in the inventory.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Vm {
    /// VM name (not necessarily unique in vSphere; placement treats equal names as one VM).
    pub name: String,
    /// Virtual CPUs.
    #[serde(default)]
    pub cpus: u32,
    /// CPU it contributes to its host's `cpu_mhz_used`.
    #[serde(default)]
    pub cpu_mhz: u64,
    /// Memory it contributes to its host's `memory_mib_used`.
    #[serde(default)]
    pub memory_mib: u64,
    /// Size of its disks in GiB (what a storage move copies).
    #[serde(default)]
    pub disk_gib: u64,
    /// Datastore holding its disks, when known.
    #[serde(default)]
    pub datastore: Option<String>,
    /// Networks its adapters use; a rebalancing target must have all of them.
    #[serde(default)]
    pub networks: Vec<String>,
    /// Groups it belongs to (DRS VM groups, ceso anti-affinity groups).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Tags; a group named in a request matches a tag as well as a group.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Never moved by rebalancing (passthrough devices, VM-VM affinity, DRS disabled).
    #[serde(default)]
    pub pinned: bool,
}

/// A datastore.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Datastore {
    /// Datastore name, unique in the inventory.
    pub name: String,
    /// Capacity in GiB.
    pub capacity_gib: u64,
    /// Free space in GiB.
    pub free_gib: u64,
    /// Hosts that mount it (merged with each host's `datastores`).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// False when vSphere reports it inaccessible; such a datastore is never chosen.
    #[serde(default = "yes")]
    pub accessible: bool,
}

impl Default for Datastore {
    fn default() -> Self {
        Self {
            name: String::new(),
            capacity_gib: 0,
            free_gib: 0,
            hosts: Vec::new(),
            accessible: true,
        }
    }
}

fn yes() -> bool {
    true
}

// ---------------------------------------------------------------------------------------------
// Request.

/// How to rank the hosts that fit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Least allocated first: spreads load (the default).
    #[default]
    Spread,
    /// Most allocated first: fills hosts, keeping others empty.
    Pack,
    /// Closest CPU and memory utilisation after placement (Kubernetes' BalancedAllocation).
    Balanced,
}

/// Which network the VM needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkRequirement {
    /// A network (port group) of this exact name.
    Name(String),
    /// Any port group on this VLAN id; the host's first by name is chosen.
    Vlan(u16),
}

/// Where the VM's disks go.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatastorePreference {
    /// The datastore left with the largest share of its capacity free after placement (as
    /// Storage DRS balances utilisation); ties go to more free GiB, then the name.
    #[default]
    MostFree,
    /// This datastore, which the host must see and which must have room.
    Named(String),
}

/// GPUs the VM needs: passthrough devices (optionally of a model) or a vGPU profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuRequest {
    /// How many GPUs (or vGPU instances).
    pub count: u32,
    /// Case-insensitive substring of the GPU's vendor and model name, e.g. `a100`.
    #[serde(default)]
    pub model: Option<String>,
    /// A vGPU profile instead of passthrough, e.g. `grid_a100-8c`; excludes `model`.
    #[serde(default)]
    pub vgpu_profile: Option<String>,
}

/// One VM to place.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlacementRequest {
    /// The VM's name: reported back, and what later requests of a batch can name in
    /// `affinity_vms` / `avoid_vms`.
    pub name: String,
    /// Virtual CPUs (at least 1).
    pub cpus: u32,
    /// MHz each vCPU is assumed to need (default 1000): the VM needs `cpus × per_vcpu_mhz`.
    pub per_vcpu_mhz: u32,
    /// Memory in MiB (at least 1).
    pub memory_mib: u64,
    /// Disk in GiB (0: only the VM's own files, which still need a datastore).
    pub disk_gib: u64,
    /// GPUs, if any.
    pub gpu: Option<GpuRequest>,
    /// Network the host must have, if any.
    pub network: Option<NetworkRequirement>,
    /// Datastore choice.
    pub datastore: DatastorePreference,
    /// The VM joins this group and must not share a host with another of its members.
    pub anti_affinity_group: Option<String>,
    /// Further groups the VM joins once placed (seen by later requests of a batch).
    pub groups: Vec<String>,
    /// VMs it must not share a host with.
    pub avoid_vms: Vec<String>,
    /// VMs it must share a host with.
    pub affinity_vms: Vec<String>,
    /// When not empty, only these hosts are considered.
    pub include_hosts: Vec<String>,
    /// These hosts are never considered.
    pub exclude_hosts: Vec<String>,
    /// How to rank the hosts that fit.
    pub strategy: Strategy,
    /// CPU over-commit: a host offers `cpu_mhz_capacity × cpu_overcommit` MHz (default 4).
    pub cpu_overcommit: f64,
    /// Memory over-commit: a host offers `memory_mib_capacity × memory_overcommit` MiB
    /// (default 1).
    pub memory_overcommit: f64,
    /// How many ranked candidates the decision lists (default 10; the chosen host is first).
    pub max_candidates: usize,
}

/// Default MHz per vCPU.
pub const DEFAULT_PER_VCPU_MHZ: u32 = 1000;
/// Default CPU over-commit ratio.
pub const DEFAULT_CPU_OVERCOMMIT: f64 = 4.0;
/// Default memory over-commit ratio.
pub const DEFAULT_MEMORY_OVERCOMMIT: f64 = 1.0;
/// Default number of ranked candidates in a decision.
pub const DEFAULT_MAX_CANDIDATES: usize = 10;

impl Default for PlacementRequest {
    fn default() -> Self {
        Self {
            name: String::new(),
            cpus: 1,
            per_vcpu_mhz: DEFAULT_PER_VCPU_MHZ,
            memory_mib: 1024,
            disk_gib: 0,
            gpu: None,
            network: None,
            datastore: DatastorePreference::MostFree,
            anti_affinity_group: None,
            groups: Vec::new(),
            avoid_vms: Vec::new(),
            affinity_vms: Vec::new(),
            include_hosts: Vec::new(),
            exclude_hosts: Vec::new(),
            strategy: Strategy::Spread,
            cpu_overcommit: DEFAULT_CPU_OVERCOMMIT,
            memory_overcommit: DEFAULT_MEMORY_OVERCOMMIT,
            max_candidates: DEFAULT_MAX_CANDIDATES,
        }
    }
}

impl PlacementRequest {
    /// CPU the VM needs, in MHz.
    pub fn required_cpu_mhz(&self) -> u64 {
        u64::from(self.cpus) * u64::from(self.per_vcpu_mhz)
    }
}

/// What a host offers under an over-commit ratio: `floor(capacity × ratio)`.
pub fn allocatable(capacity: u64, ratio: f64) -> u64 {
    (capacity as f64 * ratio).floor() as u64
}

// ---------------------------------------------------------------------------------------------
// Decision.

/// Resources left on a host (and its chosen datastore) once the VM is placed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Headroom {
    /// Allocatable CPU left, in MHz.
    pub cpu_mhz: u64,
    /// Allocatable memory left, in MiB.
    pub memory_mib: u64,
    /// Free space left on the chosen datastore, in GiB.
    pub disk_gib: u64,
}

/// A host that fits, with how it scored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Host name.
    pub host: String,
    /// Its cluster (or endpoint).
    pub cluster: String,
    /// The datastore the VM would use there.
    pub datastore: String,
    /// The network the VM would use there (none when the request names none).
    pub network: Option<String>,
    /// Per-criterion scores (0–100) and their weighted total.
    pub score: ScoreBreakdown,
    /// What is left after placement.
    pub headroom: Headroom,
}

/// The placement chosen: the best candidate, plus the devices it takes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// Host name.
    pub host: String,
    /// Its cluster (or endpoint).
    pub cluster: String,
    /// Datastore for the VM's files and disks.
    pub datastore: String,
    /// Network for the VM's adapter (none when the request names none).
    pub network: Option<String>,
    /// PCI devices (ids) to pass through, for a passthrough GPU request.
    pub pci_devices: Vec<String>,
    /// vGPU profile, for a vGPU request.
    pub vgpu_profile: Option<String>,
    /// Scores of the chosen host.
    pub score: ScoreBreakdown,
    /// What is left after placement.
    pub headroom: Headroom,
}

/// A host that does not fit, and the first hard constraint it fails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Host name.
    pub host: String,
    /// The filter that rejected it.
    pub filter: Filter,
    /// Why, with numbers: "needs 32768 MiB, has 12000 free of 65536 (65536 MiB × 1)".
    pub reason: String,
}

/// The outcome of placing one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The request's name.
    pub request: String,
    /// The chosen host, datastore and network; none when no host fits.
    pub placement: Option<Placement>,
    /// Hosts that fit, best first (at most `max_candidates`); ties go to the host name.
    pub candidates: Vec<Candidate>,
    /// Every host that does not fit, by host name.
    pub rejected: Vec<Rejection>,
    /// Hosts considered.
    pub hosts_total: usize,
    /// Hosts that fit.
    pub hosts_fit: usize,
    /// The weights of the request's strategy.
    pub weights: Weights,
    /// One line: "0/8 hosts fit: 3 insufficient memory, 2 missing VLAN 120, ...".
    pub summary: String,
}
