//! What an endpoint has and what is using it, read in one property-collector round trip
//! through one container view: hosts (capacity, state, PCI devices, port groups), VMs (size,
//! devices, storage), datastores, clusters and networks, as plain facts. What they mean for
//! placement is decided elsewhere (`adapters::placement_inventory`).

use std::collections::BTreeMap;

use super::client::Client;
use super::device::{devices, Device};
use super::error::Result;
use super::pci::HostPci;
use super::property::{ObjectContent, PropertySpec};
use super::types::ManagedObjectReference;
use super::vm::GROUP_KEY;

/// Host properties read: capacity, state, storage and networks, and what
/// [`HostPci::from_content`] reads.
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

/// VM properties read: where it runs, its size, devices, storage and networks.
const CAPACITY_VM_PATHS: &[&str] = &[
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

/// Datastore properties read.
const DATASTORE_PATHS: &[&str] = &[
    "name",
    "summary.capacity",
    "summary.freeSpace",
    "summary.accessible",
    "host",
];

/// The object types the container view is asked for.
const KINDS: &[&str] = &[
    "HostSystem",
    "Datastore",
    "VirtualMachine",
    "ClusterComputeResource",
    "Network",
    "DistributedVirtualPortgroup",
];

/// The object types whose names are network names.
const NETWORK_KINDS: &[&str] = &["Network", "DistributedVirtualPortgroup", "OpaqueNetwork"];

/// A host's connection to its management server (`runtime.connectionState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostConnection {
    /// Connected, or a state this client does not know, or not reported.
    #[default]
    Connected,
    /// Disconnected by a user or by vCenter.
    Disconnected,
    /// Not answering its management server.
    NotResponding,
}

impl HostConnection {
    /// Reads a `HostSystemConnectionState` value; anything else is [`Self::Connected`].
    fn from_text(text: Option<&str>) -> Self {
        match text {
            Some("disconnected") => Self::Disconnected,
            Some("notResponding") => Self::NotResponding,
            _ => Self::Connected,
        }
    }
}

/// What one host reports. Numbers not reported read as 0.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// The host.
    pub obj: ManagedObjectReference,
    /// Its name (empty when not reported).
    pub name: String,
    /// Its parent: a cluster, or a standalone host's compute resource.
    pub parent: Option<ManagedObjectReference>,
    /// CPU cores.
    pub cpu_cores: u64,
    /// MHz of each core.
    pub cpu_mhz: u64,
    /// Physical memory in bytes.
    pub memory_bytes: u64,
    /// CPU in use now, MHz (`summary.quickStats.overallCpuUsage`).
    pub cpu_usage_mhz: u64,
    /// Its connection state.
    pub connection: HostConnection,
    /// Whether it is in maintenance mode (false when not reported).
    pub in_maintenance: bool,
    /// Datastores it mounts.
    pub datastores: Vec<ManagedObjectReference>,
    /// Networks it is on.
    pub networks: Vec<ManagedObjectReference>,
    /// Its standard port groups: name to VLAN id (0 when none or not a number).
    pub port_group_vlans: BTreeMap<String, u16>,
    /// Its PCI devices, passthrough state and vGPU profiles.
    pub pci: HostPci,
}

/// What one VM reports.
#[derive(Debug, Clone)]
pub struct VmFacts {
    /// The VM.
    pub obj: ManagedObjectReference,
    /// Its name (empty when not reported).
    pub name: String,
    /// The host it is registered on.
    pub host: Option<ManagedObjectReference>,
    /// Whether it is powered on.
    pub powered_on: bool,
    /// vCPUs (1 when not reported).
    pub num_cpu: u32,
    /// Memory in MiB (0 when not reported).
    pub memory_mb: u64,
    /// Its devices.
    pub devices: Vec<Device>,
    /// The last value of its [`GROUP_KEY`] extraConfig entry, as written (possibly empty).
    pub anti_affinity_group: Option<String>,
    /// Bytes its files take on datastores (`summary.storage.committed`; 0 when not reported).
    pub committed_bytes: i64,
    /// Datastores its files are on, the first holding its configuration.
    pub datastores: Vec<ManagedObjectReference>,
    /// Networks its adapters use.
    pub networks: Vec<ManagedObjectReference>,
}

/// What one datastore reports.
#[derive(Debug, Clone)]
pub struct DatastoreFacts {
    /// The datastore.
    pub obj: ManagedObjectReference,
    /// Its name, when reported.
    pub name: Option<String>,
    /// Capacity in bytes (0 when not reported).
    pub capacity_bytes: i64,
    /// Free space in bytes (0 when not reported).
    pub free_bytes: i64,
    /// Whether it is accessible (true when not reported).
    pub accessible: bool,
    /// Hosts mounting it.
    pub hosts: Vec<ManagedObjectReference>,
}

/// Everything one read returned, each list in the server's order.
#[derive(Debug, Clone, Default)]
pub struct CapacityFacts {
    /// Hosts.
    pub hosts: Vec<HostFacts>,
    /// VMs.
    pub vms: Vec<VmFacts>,
    /// Datastores.
    pub datastores: Vec<DatastoreFacts>,
    /// Cluster names.
    pub clusters: BTreeMap<ManagedObjectReference, String>,
    /// Network names (standard, distributed and opaque).
    pub networks: BTreeMap<ManagedObjectReference, String>,
}

/// Names of the objects of `kinds` that have one.
fn names(contents: &[ObjectContent], kinds: &[&str]) -> BTreeMap<ManagedObjectReference, String> {
    contents
        .iter()
        .filter(|o| kinds.contains(&o.obj.kind.as_str()))
        .filter_map(|o| Some((o.obj.clone(), o.text("name")?.to_string())))
        .collect()
}

/// A host's standard port groups (`config.network.portgroup`): name to VLAN id.
fn port_group_vlans(o: &ObjectContent) -> BTreeMap<String, u16> {
    o.get("config.network.portgroup")
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
        .unwrap_or_default()
}

/// The last value of extraConfig entry `key` (`config.extraConfig`).
fn extra_config_value(o: &ObjectContent, key: &str) -> Option<String> {
    o.get("config.extraConfig").and_then(|ec| {
        ec.children
            .iter()
            .filter(|e| e.text_of("key") == Some(key))
            .filter_map(|e| e.text_of("value"))
            .next_back()
            .map(str::to_string)
    })
}

impl HostFacts {
    /// Reads a host's object content (collected with `HOST_PATHS`).
    pub fn from_content(o: &ObjectContent) -> Self {
        Self {
            obj: o.obj.clone(),
            name: o.text("name").unwrap_or_default().to_string(),
            parent: o.moref("parent"),
            cpu_cores: o.parse("summary.hardware.numCpuCores").unwrap_or(0),
            cpu_mhz: o.parse("summary.hardware.cpuMhz").unwrap_or(0),
            memory_bytes: o.parse("summary.hardware.memorySize").unwrap_or(0),
            cpu_usage_mhz: o.parse("summary.quickStats.overallCpuUsage").unwrap_or(0),
            connection: HostConnection::from_text(o.text("runtime.connectionState")),
            in_maintenance: o.bool("runtime.inMaintenanceMode").unwrap_or(false),
            datastores: o.morefs("datastore"),
            networks: o.morefs("network"),
            port_group_vlans: port_group_vlans(o),
            pci: HostPci::from_content(o),
        }
    }
}

impl VmFacts {
    /// Reads a VM's object content (collected with `CAPACITY_VM_PATHS`).
    pub fn from_content(o: &ObjectContent) -> Self {
        Self {
            obj: o.obj.clone(),
            name: o.text("name").unwrap_or_default().to_string(),
            host: o.moref("runtime.host"),
            powered_on: o.text("runtime.powerState") == Some("poweredOn"),
            num_cpu: o.parse("config.hardware.numCPU").unwrap_or(1),
            memory_mb: o.parse("config.hardware.memoryMB").unwrap_or(0),
            devices: devices(o.get("config.hardware.device")),
            anti_affinity_group: extra_config_value(o, GROUP_KEY),
            committed_bytes: o.parse("summary.storage.committed").unwrap_or(0),
            datastores: o.morefs("datastore"),
            networks: o.morefs("network"),
        }
    }
}

impl DatastoreFacts {
    /// Reads a datastore's object content (collected with `DATASTORE_PATHS`).
    pub fn from_content(o: &ObjectContent) -> Self {
        Self {
            obj: o.obj.clone(),
            name: o.text("name").map(str::to_string),
            capacity_bytes: o.parse("summary.capacity").unwrap_or(0),
            free_bytes: o.parse("summary.freeSpace").unwrap_or(0),
            accessible: o.bool("summary.accessible").unwrap_or(true),
            hosts: o
                .get("host")
                .map(|n| {
                    n.children
                        .iter()
                        .filter_map(|m| m.moref_of("key"))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

impl CapacityFacts {
    /// Sorts what one read returned into facts by object type.
    pub fn from_contents(contents: &[ObjectContent]) -> Self {
        let of_kind = |kind: &'static str| contents.iter().filter(move |o| o.obj.kind == kind);
        Self {
            hosts: of_kind("HostSystem").map(HostFacts::from_content).collect(),
            vms: of_kind("VirtualMachine")
                .map(VmFacts::from_content)
                .collect(),
            datastores: of_kind("Datastore")
                .map(DatastoreFacts::from_content)
                .collect(),
            clusters: names(contents, &["ClusterComputeResource"]),
            networks: names(contents, NETWORK_KINDS),
        }
    }
}

impl Client {
    /// The endpoint's hosts, VMs, datastores, clusters and networks: one `RetrievePropertiesEx`
    /// through a container view (two round trips the first time the view is made).
    pub async fn capacity_facts(&self) -> Result<CapacityFacts> {
        let props = vec![
            PropertySpec::new("HostSystem", HOST_PATHS),
            PropertySpec::new("Datastore", DATASTORE_PATHS),
            PropertySpec::new("VirtualMachine", CAPACITY_VM_PATHS),
            PropertySpec::new("ClusterComputeResource", &["name"]),
            PropertySpec::new("Network", &["name"]),
            PropertySpec::new("DistributedVirtualPortgroup", &["name"]),
        ];
        let contents = self.retrieve_in_view(KINDS, props).await?;
        Ok(CapacityFacts::from_contents(&contents))
    }
}
