//! A snapshot of the inventory objects placement decisions need (datacenters, compute
//! resources, hosts, datastores, networks, distributed switches), read in one round trip
//! through a container view over all their types.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client::Client;
use super::error::{Error, ErrorKind, Result};
use super::property::PropertySpec;
use super::types::ManagedObjectReference;

/// What a network name resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkRef {
    /// A standard port group's network.
    Standard {
        /// The `Network` object.
        obj: ManagedObjectReference,
        /// Its name.
        name: String,
    },
    /// A distributed port group.
    Distributed {
        /// The port group.
        obj: ManagedObjectReference,
        /// Its name.
        name: String,
        /// Its key.
        key: String,
        /// Its switch's UUID.
        switch_uuid: String,
    },
}

impl NetworkRef {
    /// The network object.
    pub fn obj(&self) -> &ManagedObjectReference {
        match self {
            NetworkRef::Standard { obj, .. } | NetworkRef::Distributed { obj, .. } => obj,
        }
    }

    /// The network's name.
    pub fn name(&self) -> &str {
        match self {
            NetworkRef::Standard { name, .. } | NetworkRef::Distributed { name, .. } => name,
        }
    }
}

/// One host.
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// The host.
    pub obj: ManagedObjectReference,
    /// Name.
    pub name: String,
    /// Its compute resource (cluster or standalone).
    pub parent: Option<ManagedObjectReference>,
    /// Datastores it sees.
    pub datastores: Vec<ManagedObjectReference>,
    /// Networks it has.
    pub networks: Vec<ManagedObjectReference>,
}

/// The inventory snapshot.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Datacenters: (object, name, vmFolder).
    pub datacenters: Vec<(
        ManagedObjectReference,
        String,
        Option<ManagedObjectReference>,
    )>,
    /// Compute resource -> its root resource pool.
    pub pools: BTreeMap<ManagedObjectReference, ManagedObjectReference>,
    /// Compute resource -> its environment browser (supported guest OSes, hardware).
    pub environment_browsers: BTreeMap<ManagedObjectReference, ManagedObjectReference>,
    /// Hosts.
    pub hosts: Vec<HostInfo>,
    /// Datastores.
    pub datastores: Vec<DatastoreInfo>,
    /// Networks.
    pub networks: Vec<NetworkRef>,
}

/// A datastore: its object, name and free space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatastoreInfo {
    pub obj: ManagedObjectReference,
    pub name: String,
    pub free_bytes: i64,
}

impl Inventory {
    /// The datastore `host` sees with the most free space: where a VM goes (or moves) when the
    /// configuration names none.
    pub fn roomiest_datastore(&self, host: &HostInfo) -> Option<&DatastoreInfo> {
        self.datastores
            .iter()
            .filter(|d| host.datastores.contains(&d.obj))
            .max_by_key(|d| d.free_bytes)
    }

    /// The datastore behind an object, when the inventory knows it.
    pub fn datastore_by_ref(&self, obj: &ManagedObjectReference) -> Option<&DatastoreInfo> {
        self.datastores.iter().find(|d| &d.obj == obj)
    }
}

/// The properties the inventory is read from, by type.
pub const INVENTORY_PROPS: &[(&str, &[&str])] = &[
    ("Datacenter", &["name", "vmFolder"]),
    (
        "ComputeResource",
        &["name", "resourcePool", "environmentBrowser"],
    ),
    ("HostSystem", &["name", "parent", "datastore", "network"]),
    ("Datastore", &["name", "summary.freeSpace"]),
    ("Network", &["name"]),
    (
        "DistributedVirtualPortgroup",
        &["name", "config.key", "config.distributedVirtualSwitch"],
    ),
    ("DistributedVirtualSwitch", &["uuid"]),
];

impl Inventory {
    /// The host named `name`.
    pub fn host(&self, name: &str) -> Result<&HostInfo> {
        self.hosts.iter().find(|h| h.name == name).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "no host named {name:?}; hosts: {}",
                    self.hosts
                        .iter()
                        .map(|h| h.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
    }

    /// The host with reference `obj`.
    pub fn host_by_ref(&self, obj: &ManagedObjectReference) -> Option<&HostInfo> {
        self.hosts.iter().find(|h| &h.obj == obj)
    }

    /// The datastore named `name`.
    pub fn datastore(&self, name: &str) -> Result<&DatastoreInfo> {
        self.datastores
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "no datastore named {name:?}; datastores: {}",
                        self.datastores
                            .iter()
                            .map(|d| d.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
    }

    /// The network a VM NIC asks for: a port group name, or a network id (`network-12`,
    /// `dvportgroup-42`, `HaNetwork-vlan-120`).
    pub fn network(&self, name_or_id: &str) -> Result<&NetworkRef> {
        let by_id = self.networks.iter().find(|n| n.obj().value == name_or_id);
        let by_name: Vec<&NetworkRef> = self
            .networks
            .iter()
            .filter(|n| n.name() == name_or_id)
            .collect();
        match (by_id, by_name.len()) {
            (Some(n), _) => Ok(n),
            (None, 1) => Ok(by_name[0]),
            (None, 0) => Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "no network named {name_or_id:?}; networks: {}",
                    self.networks
                        .iter()
                        .map(NetworkRef::name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            (None, _) => Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "network name {name_or_id:?} is ambiguous: {}; use its id",
                    by_name
                        .iter()
                        .map(|n| n.obj().value.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// The root resource pool of the compute resource `host` belongs to.
    pub fn pool_of(&self, host: &HostInfo) -> Option<&ManagedObjectReference> {
        host.parent.as_ref().and_then(|p| self.pools.get(p))
    }
}

impl Client {
    /// Reads the inventory snapshot: one `RetrievePropertiesEx` (plus one to create the view
    /// the first time in a session).
    pub async fn inventory(&self) -> Result<Inventory> {
        let kinds: Vec<&str> = INVENTORY_PROPS.iter().map(|(k, _)| *k).collect();
        let objects = self
            .retrieve_in_view(
                &kinds,
                INVENTORY_PROPS
                    .iter()
                    .map(|(k, paths)| PropertySpec::new(k, paths))
                    .collect(),
            )
            .await?;
        Ok(Inventory::from_objects(objects))
    }
}

impl Inventory {
    /// The inventory from the objects read with [`INVENTORY_PROPS`] (others are ignored).
    pub fn from_objects(objects: Vec<super::property::ObjectContent>) -> Inventory {
        let mut inv = Inventory::default();
        let mut switches = BTreeMap::new();
        for o in &objects {
            if o.obj.kind.ends_with("DistributedVirtualSwitch") {
                switches.insert(
                    o.obj.clone(),
                    o.text("uuid").unwrap_or_default().to_string(),
                );
            }
        }
        for o in objects {
            let name = o.text("name").unwrap_or_default().to_string();
            match o.obj.kind.as_str() {
                "Datacenter" => inv
                    .datacenters
                    .push((o.obj.clone(), name, o.moref("vmFolder"))),
                "ComputeResource" | "ClusterComputeResource" => {
                    if let Some(pool) = o.moref("resourcePool") {
                        inv.pools.insert(o.obj.clone(), pool);
                    }
                    if let Some(browser) = o.moref("environmentBrowser") {
                        inv.environment_browsers.insert(o.obj.clone(), browser);
                    }
                }
                "HostSystem" => inv.hosts.push(HostInfo {
                    name,
                    parent: o.moref("parent"),
                    datastores: o.morefs("datastore"),
                    networks: o.morefs("network"),
                    obj: o.obj,
                }),
                "Datastore" => {
                    let free = o.parse("summary.freeSpace").unwrap_or(0);
                    inv.datastores.push(DatastoreInfo {
                        obj: o.obj,
                        name,
                        free_bytes: free,
                    });
                }
                "Network" | "OpaqueNetwork" => {
                    inv.networks.push(NetworkRef::Standard { obj: o.obj, name })
                }
                "DistributedVirtualPortgroup" => {
                    let switch_uuid = o
                        .moref("config.distributedVirtualSwitch")
                        .and_then(|s| switches.get(&s).cloned())
                        .unwrap_or_default();
                    inv.networks.push(NetworkRef::Distributed {
                        key: o.text("config.key").unwrap_or(&o.obj.value).to_string(),
                        obj: o.obj,
                        name,
                        switch_uuid,
                    });
                }
                _ => {}
            }
        }
        inv.hosts.sort_by(|a, b| a.name.cmp(&b.name));
        inv
    }
}

/// How long a cached inventory snapshot serves reads (a refresh walk fits well inside it).
const INVENTORY_TTL: Duration = Duration::from_secs(30);

/// The last inventory snapshot, shared by concurrent reads; every write clears it.
#[derive(Default)]
pub struct InventoryCache {
    slot: Mutex<Option<(Instant, Arc<Inventory>)>>,
    fetch: tokio::sync::Mutex<()>,
}

impl InventoryCache {
    /// Drops the snapshot.
    pub fn clear(&self) {
        *self.slot.lock().expect("lock") = None;
    }

    /// Keeps `inv`, read just now.
    pub fn store(&self, inv: Arc<Inventory>) {
        *self.slot.lock().expect("lock") = Some((Instant::now(), inv));
    }

    fn fresh(&self) -> Option<Arc<Inventory>> {
        self.slot
            .lock()
            .expect("lock")
            .as_ref()
            .filter(|(at, _)| at.elapsed() < INVENTORY_TTL)
            .map(|(_, inv)| inv.clone())
    }
}

impl Client {
    /// The inventory snapshot, read at most once per [`INVENTORY_TTL`] however many callers
    /// ask at once, and re-read after any write.
    pub async fn inventory_cached(&self) -> Result<Arc<Inventory>> {
        let cache = self.inventory_cache();
        if let Some(inv) = cache.fresh() {
            return Ok(inv);
        }
        let _one_fetch = cache.fetch.lock().await;
        if let Some(inv) = cache.fresh() {
            return Ok(inv);
        }
        let inv = Arc::new(self.inventory().await?);
        cache.store(inv.clone());
        Ok(inv)
    }

    /// The cached inventory snapshot if `enough` accepts it, else one read afresh: for a
    /// caller that needs an object which may have been created moments ago, possibly by
    /// another process.
    pub async fn inventory_with(
        &self,
        enough: impl Fn(&Inventory) -> bool,
    ) -> Result<Arc<Inventory>> {
        let inv = self.inventory_cached().await?;
        if enough(&inv) {
            return Ok(inv);
        }
        let inv = Arc::new(self.inventory().await?);
        self.inventory_cache().store(inv.clone());
        Ok(inv)
    }
}
