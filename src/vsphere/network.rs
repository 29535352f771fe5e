//! Host and distributed networking: standard port groups on a host's vSwitches
//! (`HostNetworkSystem`) and port groups on distributed switches, read and written as plain
//! data. The resource layer decides what to change; this module only speaks vSphere.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::envelope::RequestWriter;
use super::error::{Error, ErrorKind, Result};
use super::methods::Method;
use super::property::ObjectContent;
use super::task::TaskCall;
use super::types::ManagedObjectReference;
use super::xml::Node;

/// Security and teaming overrides of a standard port group (`None` = inherit from the vSwitch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortGroupPolicy {
    /// `security.allowPromiscuous`.
    pub allow_promiscuous: Option<bool>,
    /// `security.forgedTransmits`.
    pub forged_transmits: Option<bool>,
    /// `security.macChanges`.
    pub mac_changes: Option<bool>,
    /// `nicTeaming.nicOrder.activeNic` (`None` = inherit).
    pub active_nics: Option<Vec<String>>,
    /// `nicTeaming.nicOrder.standbyNic`.
    pub standby_nics: Option<Vec<String>>,
}

/// A `HostPortGroupSpec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortGroupSpec {
    /// Port group name.
    pub name: String,
    /// VLAN id: 0 none, 1-4094, 4095 all (trunk).
    pub vlan_id: i64,
    /// The standard vSwitch it hangs off.
    pub vswitch: String,
    /// Overrides.
    pub policy: PortGroupPolicy,
}

impl PortGroupSpec {
    fn write(&self, w: &mut RequestWriter) {
        w.start("portgrp", None)
            .text("name", &self.name)
            .text("vlanId", &self.vlan_id.to_string())
            .text("vswitchName", &self.vswitch);
        w.start("policy", None);
        let p = &self.policy;
        if p.allow_promiscuous.is_some() || p.mac_changes.is_some() || p.forged_transmits.is_some()
        {
            w.start("security", None);
            let b = |v: bool| if v { "true" } else { "false" };
            if let Some(v) = p.allow_promiscuous {
                w.text("allowPromiscuous", b(v));
            }
            if let Some(v) = p.mac_changes {
                w.text("macChanges", b(v));
            }
            if let Some(v) = p.forged_transmits {
                w.text("forgedTransmits", b(v));
            }
            w.end("security");
        }
        if p.active_nics.is_some() || p.standby_nics.is_some() {
            w.start("nicTeaming", None).start("nicOrder", None);
            for n in p.active_nics.iter().flatten() {
                w.text("activeNic", n);
            }
            for n in p.standby_nics.iter().flatten() {
                w.text("standbyNic", n);
            }
            w.end("nicOrder").end("nicTeaming");
        }
        w.end("policy");
        w.end("portgrp");
    }

    /// Reads a `HostPortGroupSpec` node.
    pub fn from_node(spec: &Node) -> Self {
        let policy = spec.child("policy");
        let security = policy.and_then(|p| p.child("security"));
        let order = policy
            .and_then(|p| p.child("nicTeaming"))
            .and_then(|t| t.child("nicOrder"));
        // Hosts report empty policy groups for "no override": an empty NIC list is none.
        let nics = |name: &str| {
            order
                .map(|o| {
                    o.children_named(name)
                        .map(|n| n.text.clone())
                        .collect::<Vec<_>>()
                })
                .filter(|list| !list.is_empty())
        };
        Self {
            name: spec.text_of("name").unwrap_or_default().to_string(),
            vlan_id: spec.parse_of("vlanId").unwrap_or(0),
            vswitch: spec.text_of("vswitchName").unwrap_or_default().to_string(),
            policy: PortGroupPolicy {
                allow_promiscuous: security.and_then(|s| s.bool_of("allowPromiscuous")),
                forged_transmits: security.and_then(|s| s.bool_of("forgedTransmits")),
                mac_changes: security.and_then(|s| s.bool_of("macChanges")),
                active_nics: nics("activeNic"),
                standby_nics: nics("standbyNic"),
            },
        }
    }
}

/// What one host's network configuration holds.
#[derive(Debug, Clone)]
pub struct HostNetwork {
    /// The host.
    pub host: ManagedObjectReference,
    /// Its name.
    pub name: String,
    /// Its `HostNetworkSystem`.
    pub network_system: Option<ManagedObjectReference>,
    /// Standard vSwitch names.
    pub vswitches: Vec<String>,
    /// Physical NIC device names (vmnic0, ...).
    pub pnics: Vec<String>,
    /// Standard port groups, as configured.
    pub port_groups: Vec<PortGroupSpec>,
    /// The networks the host sees.
    pub networks: Vec<ManagedObjectReference>,
}

/// The host properties [`HostNetwork`] is read from.
pub const HOST_NETWORK_PATHS: &[&str] = &[
    "name",
    "configManager.networkSystem",
    "config.network.vswitch",
    "config.network.pnic",
    "config.network.portgroup",
    "network",
];

impl HostNetwork {
    /// Reads a host's object content (collected with [`HOST_NETWORK_PATHS`]).
    pub fn from_content(o: &ObjectContent) -> Self {
        let list = |path: &str| -> Vec<&Node> {
            o.get(path)
                .map(|n| n.children.iter().collect())
                .unwrap_or_default()
        };
        Self {
            host: o.obj.clone(),
            name: o.text("name").unwrap_or_default().to_string(),
            network_system: o.moref("configManager.networkSystem"),
            vswitches: list("config.network.vswitch")
                .iter()
                .filter_map(|v| v.text_of("name").map(str::to_string))
                .collect(),
            pnics: list("config.network.pnic")
                .iter()
                .filter_map(|v| v.text_of("device").map(str::to_string))
                .collect(),
            port_groups: list("config.network.portgroup")
                .iter()
                .filter_map(|pg| pg.child("spec").map(PortGroupSpec::from_node))
                .collect(),
            networks: o.morefs("network"),
        }
    }

    /// The port group named `name`, if the host has it.
    pub fn port_group(&self, name: &str) -> Option<&PortGroupSpec> {
        self.port_groups.iter().find(|p| p.name == name)
    }
}

/// `HostNetworkSystem.AddPortGroup`.
struct AddPortGroup<'a>(&'a ManagedObjectReference, &'a PortGroupSpec);

impl Method for AddPortGroup<'_> {
    type Response = ();
    const NAME: &'static str = "AddPortGroup";
    const IDEMPOTENT: bool = false;
    fn this(&self) -> &ManagedObjectReference {
        self.0
    }
    fn write_args(&self, w: &mut RequestWriter) {
        self.1.write(w);
    }
    fn decode(_inner: &str) -> Result<()> {
        Ok(())
    }
}

/// `HostNetworkSystem.UpdatePortGroup`.
struct UpdatePortGroup<'a>(&'a ManagedObjectReference, &'a str, &'a PortGroupSpec);

impl Method for UpdatePortGroup<'_> {
    type Response = ();
    const NAME: &'static str = "UpdatePortGroup";
    const IDEMPOTENT: bool = false;
    fn this(&self) -> &ManagedObjectReference {
        self.0
    }
    fn write_args(&self, w: &mut RequestWriter) {
        w.text("pgName", self.1);
        self.2.write(w);
    }
    fn decode(_inner: &str) -> Result<()> {
        Ok(())
    }
}

/// `HostNetworkSystem.RemovePortGroup`.
struct RemovePortGroup<'a>(&'a ManagedObjectReference, &'a str);

impl Method for RemovePortGroup<'_> {
    type Response = ();
    const NAME: &'static str = "RemovePortGroup";
    const IDEMPOTENT: bool = false;
    fn this(&self) -> &ManagedObjectReference {
        self.0
    }
    fn write_args(&self, w: &mut RequestWriter) {
        w.text("pgName", self.1);
    }
    fn decode(_inner: &str) -> Result<()> {
        Ok(())
    }
}

fn network_system(host: &HostNetwork) -> Result<&ManagedObjectReference> {
    host.network_system.as_ref().ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            format!("host {} has no network system", host.name),
        )
    })
}

/// How a distributed port group's VLAN is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DvsVlan {
    /// One VLAN id (0 = none).
    Id(i64),
    /// A trunk of id ranges (inclusive).
    Trunk(Vec<(i64, i64)>),
    /// A private VLAN (secondary id).
    Private(i64),
}

/// A distributed port group's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DvPortGroupSpec {
    /// Name.
    pub name: String,
    /// VLAN setting.
    pub vlan: DvsVlan,
    /// Number of ports.
    pub num_ports: i64,
    /// `earlyBinding` (static) or `ephemeral`.
    pub binding: String,
}

impl DvPortGroupSpec {
    fn write(&self, element: &str, config_version: Option<&str>, w: &mut RequestWriter) {
        w.start(element, None);
        if let Some(v) = config_version {
            w.text("configVersion", v);
        }
        w.text("name", &self.name)
            .text("numPorts", &self.num_ports.to_string());
        w.start("defaultPortConfig", Some("VMwareDVSPortSetting"));
        match &self.vlan {
            DvsVlan::Id(id) => {
                w.start("vlan", Some("VmwareDistributedVirtualSwitchVlanIdSpec"))
                    .text("inherited", "false")
                    .text("vlanId", &id.to_string())
                    .end("vlan");
            }
            DvsVlan::Trunk(ranges) => {
                w.start("vlan", Some("VmwareDistributedVirtualSwitchTrunkVlanSpec"))
                    .text("inherited", "false");
                for (start, end) in ranges {
                    w.start("vlanId", None)
                        .text("start", &start.to_string())
                        .text("end", &end.to_string())
                        .end("vlanId");
                }
                w.end("vlan");
            }
            DvsVlan::Private(id) => {
                w.start("vlan", Some("VmwareDistributedVirtualSwitchPvlanSpec"))
                    .text("inherited", "false")
                    .text("pvlanId", &id.to_string())
                    .end("vlan");
            }
        }
        w.end("defaultPortConfig");
        w.text("type", &self.binding);
        w.end(element);
    }

    /// Reads a `DVPortgroupConfigInfo` node.
    pub fn from_config(config: &Node) -> Self {
        let vlan = config
            .child("defaultPortConfig")
            .and_then(|p| p.child("vlan"));
        let vlan = match vlan {
            Some(v) if v.type_or("") == "VmwareDistributedVirtualSwitchTrunkVlanSpec" => {
                DvsVlan::Trunk(
                    v.children_named("vlanId")
                        .map(|r| {
                            (
                                r.parse_of("start").unwrap_or(0),
                                r.parse_of("end").unwrap_or(0),
                            )
                        })
                        .collect(),
                )
            }
            Some(v) if v.type_or("") == "VmwareDistributedVirtualSwitchPvlanSpec" => {
                DvsVlan::Private(v.parse_of("pvlanId").unwrap_or(0))
            }
            Some(v) => DvsVlan::Id(v.parse_of("vlanId").unwrap_or(0)),
            None => DvsVlan::Id(0),
        };
        Self {
            name: config.text_of("name").unwrap_or_default().to_string(),
            vlan,
            num_ports: config.parse_of("numPorts").unwrap_or(0),
            binding: config.text_of("type").unwrap_or("earlyBinding").to_string(),
        }
    }
}

impl Client {
    /// The network configuration of every host in the inventory: one round trip.
    pub async fn host_networks(&self) -> Result<Vec<HostNetwork>> {
        Ok(self
            .retrieve_all("HostSystem", HOST_NETWORK_PATHS)
            .await?
            .iter()
            .map(HostNetwork::from_content)
            .collect())
    }

    /// Adds a standard port group to a host. When the answer is lost, the host is asked
    /// whether the port group is there before it is added again, so a lost answer never makes
    /// the call fail nor a retry collide.
    pub async fn add_port_group(&self, host: &HostNetwork, spec: &PortGroupSpec) -> Result<()> {
        let system = network_system(host)?;
        let mut lost = 0;
        loop {
            match self.call(&AddPortGroup(system, spec)).await {
                Err(e) if e.outcome_unknown() && lost < super::error::LOST_CALL_RETRIES => {
                    tracing::warn!(error = %e, host = %host.name, port_group = %spec.name, "the outcome of AddPortGroup is unknown; looking");
                    if self.host_has_port_group(host, &spec.name).await? {
                        return Ok(());
                    }
                    lost += 1;
                }
                Err(e) if lost > 0 && e.kind == ErrorKind::AlreadyExists => return Ok(()),
                other => return other,
            }
        }
    }

    /// Whether `host` has the standard port group `name` now.
    async fn host_has_port_group(&self, host: &HostNetwork, name: &str) -> Result<bool> {
        let now =
            HostNetwork::from_content(&self.properties(&host.host, HOST_NETWORK_PATHS).await?);
        Ok(now.port_group(name).is_some())
    }

    /// Replaces the spec of the host's port group `name`.
    pub async fn update_port_group(
        &self,
        host: &HostNetwork,
        name: &str,
        spec: &PortGroupSpec,
    ) -> Result<()> {
        self.call(&UpdatePortGroup(network_system(host)?, name, spec))
            .await
    }

    /// Removes the host's port group `name`; one already gone is not an error.
    pub async fn remove_port_group(&self, host: &HostNetwork, name: &str) -> Result<()> {
        match self
            .call(&RemovePortGroup(network_system(host)?, name))
            .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// Creates a port group on a distributed switch (`AddDVPortgroup_Task`, which every
    /// vCenter version and the simulator serve); returns the new port group.
    pub async fn create_dv_port_group(
        self: &Arc<Self>,
        dvs: &ManagedObjectReference,
        spec: &DvPortGroupSpec,
    ) -> Result<ManagedObjectReference> {
        let args = |w: &mut RequestWriter| spec.write("spec", None, w);
        let mut lost = 0;
        loop {
            let done = self
                .run_task(
                    TaskCall {
                        name: "AddDVPortgroup_Task",
                        this: dvs,
                        args: &args,
                    },
                    None,
                    &CancellationToken::new(),
                )
                .await;
            match done {
                Ok(_) => break,
                // A lost answer: the port group may exist; if not, it surely was not made.
                Err(e) if e.outcome_unknown() && lost < super::error::LOST_CALL_RETRIES => {
                    tracing::warn!(error = %e, port_group = %spec.name, "the outcome of AddDVPortgroup_Task is unknown; looking");
                    self.settle_tasks(dvs, "AddDVPortgroup_Task", super::vm::LOST_CALL_SETTLE)
                        .await?;
                    if let Some(pg) = self.find_dv_port_group(dvs, &spec.name).await? {
                        return Ok(pg);
                    }
                    lost += 1;
                }
                Err(e) if lost > 0 && e.kind == ErrorKind::AlreadyExists => break,
                Err(e) => return Err(e),
            }
        }
        // The task returns nothing: find the new port group on its switch by name.
        self.find_dv_port_group(dvs, &spec.name)
            .await?
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "distributed port group {:?} was not found after creating it",
                        spec.name
                    ),
                )
            })
    }

    /// The port group named `name` on distributed switch `dvs`, if there is one.
    async fn find_dv_port_group(
        &self,
        dvs: &ManagedObjectReference,
        name: &str,
    ) -> Result<Option<ManagedObjectReference>> {
        Ok(self
            .retrieve_all(
                "DistributedVirtualPortgroup",
                &["name", "config.distributedVirtualSwitch"],
            )
            .await?
            .into_iter()
            .find(|pg| {
                pg.text("name") == Some(name)
                    && pg.moref("config.distributedVirtualSwitch").as_ref() == Some(dvs)
            })
            .map(|pg| pg.obj))
    }

    /// Reconfigures a distributed port group (`config_version` from its current config).
    pub async fn reconfigure_dv_port_group(
        self: &Arc<Self>,
        pg: &ManagedObjectReference,
        spec: &DvPortGroupSpec,
        config_version: Option<&str>,
    ) -> Result<()> {
        let args = |w: &mut RequestWriter| spec.write("spec", config_version, w);
        self.run_task(
            TaskCall {
                name: "ReconfigureDVPortgroup_Task",
                this: pg,
                args: &args,
            },
            None,
            &CancellationToken::new(),
        )
        .await
        .map(|_| ())
    }

    /// Destroys a managed entity (a VM, a distributed port group) and waits for it; one
    /// already gone is not an error. When the answer is lost, the entity is looked up: gone,
    /// it was destroyed; still there, it is tried once more.
    pub async fn destroy(self: &Arc<Self>, obj: &ManagedObjectReference) -> Result<()> {
        let none = |_: &mut RequestWriter| {};
        let mut lost = 0;
        loop {
            let done = self
                .run_task(
                    TaskCall {
                        name: "Destroy_Task",
                        this: obj,
                        args: &none,
                    },
                    None,
                    &CancellationToken::new(),
                )
                .await;
            match done {
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e)
                    if e.kind == ErrorKind::Transport && lost < super::error::LOST_CALL_RETRIES =>
                {
                    tracing::warn!(error = %e, %obj, "the outcome of Destroy_Task is unknown; looking");
                    self.settle_tasks(obj, "Destroy_Task", super::vm::LOST_CALL_SETTLE)
                        .await?;
                    match self.properties(obj, &["name"]).await {
                        Err(f) if f.is_not_found() => return Ok(()),
                        Err(f) => return Err(f),
                        Ok(_) => lost += 1,
                    }
                }
                other => return other.map(|_| ()),
            }
        }
    }
}

/// A distributed port group by name, with its switch's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DvPortGroupRef {
    pub name: String,
    pub switch: String,
    pub obj: ManagedObjectReference,
}

impl Client {
    /// The names of the VMs connected to any of `networks` (from each VM's `network` list:
    /// one round trip whatever the inventory size), sorted.
    pub async fn vms_on_networks(
        &self,
        networks: &[ManagedObjectReference],
    ) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .retrieve_all("VirtualMachine", &["name", "network"])
            .await?
            .into_iter()
            .filter(|vm| vm.morefs("network").iter().any(|n| networks.contains(n)))
            .map(|vm| vm.text("name").unwrap_or(&vm.obj.value).to_string())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The standard `Network` objects (not distributed port groups) named `name`.
    pub async fn standard_networks_named(&self, name: &str) -> Result<Vec<ManagedObjectReference>> {
        Ok(self
            .retrieve_all("Network", &["name"])
            .await?
            .into_iter()
            .filter(|o| o.obj.kind == "Network" && o.text("name") == Some(name))
            .map(|o| o.obj)
            .collect())
    }

    /// The distributed switch named `name`.
    pub async fn find_distributed_switch(&self, name: &str) -> Result<ManagedObjectReference> {
        self.find_by_name("DistributedVirtualSwitch", name).await
    }

    /// The hosts of the cluster named `name`.
    pub async fn cluster_hosts(&self, name: &str) -> Result<Vec<ManagedObjectReference>> {
        let cluster = self.find_by_name("ClusterComputeResource", name).await?;
        Ok(self.properties(&cluster, &["host"]).await?.morefs("host"))
    }

    /// A distributed port group's settings; `None` when it no longer exists.
    pub async fn dv_port_group(&self, id: &str) -> Result<Option<DvPortGroupSpec>> {
        let pg = ManagedObjectReference::new("DistributedVirtualPortgroup", id);
        match self.properties(&pg, &["config"]).await {
            Ok(o) => Ok(o.get("config").map(DvPortGroupSpec::from_config)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A distributed port group's config version (what a reconfigure must name).
    pub async fn dv_port_group_version(&self, pg: &ManagedObjectReference) -> Option<String> {
        self.properties(pg, &["config.configVersion"])
            .await
            .ok()
            .and_then(|o| o.text("config.configVersion").map(str::to_string))
    }

    /// Every distributed port group, with its switch's name.
    pub async fn all_dv_port_groups(&self) -> Result<Vec<DvPortGroupRef>> {
        let switches = self
            .retrieve_all("DistributedVirtualSwitch", &["name"])
            .await?;
        let pgs = self
            .retrieve_all(
                "DistributedVirtualPortgroup",
                &["name", "config.distributedVirtualSwitch"],
            )
            .await?;
        Ok(pgs
            .into_iter()
            .filter_map(|pg| {
                let dvs = pg.moref("config.distributedVirtualSwitch")?;
                let switch = switches.iter().find(|s| s.obj == dvs)?.text("name")?;
                Some(DvPortGroupRef {
                    name: pg.text("name")?.to_string(),
                    switch: switch.to_string(),
                    obj: pg.obj,
                })
            })
            .collect())
    }

    /// The port group named `name` on the distributed switch `dvs`.
    pub async fn dv_port_group_named(
        &self,
        dvs: &ManagedObjectReference,
        name: &str,
    ) -> Result<Option<ManagedObjectReference>> {
        let o = self.properties(dvs, &["portgroup"]).await?;
        for pg in o.morefs("portgroup") {
            if let Ok(p) = self.read_batched(&pg, &["name"]).await {
                if p.text("name") == Some(name) {
                    return Ok(Some(pg));
                }
            }
        }
        Ok(None)
    }
}
