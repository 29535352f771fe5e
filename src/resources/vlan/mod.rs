//! `ceso_vlan`: a VLAN port group on standard vSwitches (one host, several standalone hosts, or
//! every host of a cluster; no vCenter needed) or on a distributed switch.
//!
//! Standard port groups are written host by host, in parallel; the state's `hosts` always lists
//! exactly the hosts where the port group exists, also after a partial failure, so nothing is
//! left untracked.

mod model;
mod schema;

use std::collections::BTreeSet;

use async_trait::async_trait;
use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::framework::typed_resource::{Config, Connect, Import, Outcome, Plan, TypedResource};
use crate::framework::{AttrPath, Context, Diagnostics, Schema, Tri};
use crate::session::{error_diagnostics, lookup_diagnostics, Call, Vsphere};
use crate::vsphere::network::HostNetwork;
use crate::vsphere::types::ManagedObjectReference;
use crate::vsphere::Client;

use model::{check_ranges, VlanModel, DEFAULT_VSWITCH};

/// The `ceso_vlan` resource.
pub struct Vlan;

crate::endpoint_scoped_model!(VlanModel);

/// What validation and the plan hook read of a configuration (or plan).
#[derive(Deserialize)]
struct VlanView {
    endpoint: Option<String>,
    distributed_switch: Tri<String>,
    vlan_id: Tri<i64>,
    vswitch: Tri<String>,
    hosts: Tri<Vec<Tri<String>>>,
    cluster: Tri<String>,
    allow_promiscuous: Tri<bool>,
    allow_forged_transmits: Tri<bool>,
    allow_mac_changes: Tri<bool>,
    active_nics: Tri<IgnoredAny>,
    standby_nics: Tri<IgnoredAny>,
    vlan_ranges: Tri<Vec<Tri<String>>>,
    private_vlan_id: Tri<i64>,
    num_ports: Tri<i64>,
    port_binding: Tri<String>,
}

fn set<T>(v: &Tri<T>) -> bool {
    !v.is_null()
}

impl VlanView {
    fn distributed(&self) -> bool {
        set(&self.distributed_switch)
    }

    /// Standard-switch attributes set (they make no sense on a distributed switch).
    fn standard_only(&self) -> Vec<&'static str> {
        [
            ("vswitch", set(&self.vswitch)),
            ("hosts", set(&self.hosts)),
            ("cluster", set(&self.cluster)),
            ("allow_promiscuous", set(&self.allow_promiscuous)),
            ("allow_forged_transmits", set(&self.allow_forged_transmits)),
            ("allow_mac_changes", set(&self.allow_mac_changes)),
            ("active_nics", set(&self.active_nics)),
            ("standby_nics", set(&self.standby_nics)),
        ]
        .into_iter()
        .filter_map(|(name, is)| is.then_some(name))
        .collect()
    }

    /// Distributed-switch attributes set (they make no sense on a standard switch).
    fn distributed_only(&self) -> Vec<&'static str> {
        [
            ("vlan_ranges", set(&self.vlan_ranges)),
            ("private_vlan_id", set(&self.private_vlan_id)),
            ("num_ports", set(&self.num_ports)),
            ("port_binding", set(&self.port_binding)),
        ]
        .into_iter()
        .filter_map(|(name, is)| is.then_some(name))
        .collect()
    }
}

/// The distributed switch named `name`, or a diagnostic on `distributed_switch`.
async fn find_dvs(client: &Client, name: &str) -> Result<ManagedObjectReference, Diagnostics> {
    client.find_distributed_switch(name).await.map_err(|mut e| {
        e.message = format!(
            "{} (is this a vCenter with a distributed switch of that name?)",
            e.message
        );
        lookup_diagnostics(
            AttrPath::attr("distributed_switch"),
            "Unknown distributed switch",
            &e,
        )
    })
}

/// Reads the standard port group on the hosts of `prior`; `None` when no host has it.
async fn read_standard(
    client: &Client,
    prior: &VlanModel,
) -> Result<Option<VlanModel>, Diagnostics> {
    let hosts = client
        .host_networks()
        .await
        .map_err(|e| error_diagnostics("read host networks", &e))?;
    let wanted: Option<&BTreeSet<String>> = prior.hosts.as_ref();
    let mut present: Vec<&HostNetwork> = hosts
        .iter()
        .filter(|h| wanted.is_none_or(|w| w.contains(&h.name)))
        .filter(|h| h.port_group(&prior.name).is_some())
        .collect();
    present.sort_by(|a, b| a.name.cmp(&b.name));
    if present.is_empty() {
        return Ok(None);
    }
    let mut state = prior.clone();
    state.hosts = Some(present.iter().map(|h| h.name.clone()).collect());
    // Report the first host whose port group differs from what state says (out-of-band
    // drift shows in the plan and the update repairs just that); else the first host.
    let expected = prior.port_group_spec();
    let shown = present
        .iter()
        .filter_map(|h| h.port_group(&prior.name))
        .find(|pg| prior.vlan_id.is_some() && **pg != expected)
        .or_else(|| present[0].port_group(&prior.name))
        .cloned()
        .expect("present hosts have the port group");
    state.set_from_port_group(&shown);
    let networks = client
        .standard_networks_named(&prior.name)
        .await
        .map_err(|e| error_diagnostics("read networks", &e))?;
    state.network_id = networks.first().map(|n| n.value.clone());
    state.id = Some(prior.name.clone());
    state.distributed_switch = None;
    state.vlan_ranges = None;
    state.private_vlan_id = None;
    state.num_ports = None;
    state.port_binding = None;
    Ok(Some(state))
}

async fn read_distributed(
    client: &Client,
    prior: &VlanModel,
) -> Result<Option<VlanModel>, Diagnostics> {
    let Some(id) = prior.id.as_deref() else {
        return Ok(None);
    };
    let Some(spec) = client
        .dv_port_group(id)
        .await
        .map_err(|e| error_diagnostics("read the distributed port group", &e))?
    else {
        return Ok(None);
    };
    let mut state = prior.clone();
    state.name = spec.name.clone();
    state.set_from_dv(&spec);
    state.network_id = Some(id.to_string());
    state.vswitch = None;
    state.hosts = None;
    Ok(Some(state))
}

async fn read_model(client: &Client, prior: &VlanModel) -> Result<Option<VlanModel>, Diagnostics> {
    if prior.is_distributed() {
        read_distributed(client, prior).await
    } else {
        read_standard(client, prior).await
    }
}

/// What an apply read back: the port group as it exists now, with the apply's diagnostics.
fn read_back(
    read: Result<Option<VlanModel>, Diagnostics>,
    mut diags: Diagnostics,
) -> Outcome<VlanModel> {
    match read {
        Ok(state) => Outcome::with(state, diags),
        Err(d) => {
            diags.extend(d);
            Outcome::failed(diags)
        }
    }
}

/// Applies the standard port group to the planned hosts (add, update or remove per host, in
/// parallel), then reads back what exists.
async fn apply_standard(
    call: &Call<'_>,
    prior: Option<&VlanModel>,
    plan: &VlanModel,
) -> Outcome<VlanModel> {
    let client = &call.conn;
    let mut diags = Diagnostics::new();
    let hosts = match client.host_networks().await {
        Ok(h) => h,
        Err(e) => return Outcome::failed(error_diagnostics("read host networks", &e)),
    };
    let planned: BTreeSet<String> = plan.hosts.clone().unwrap_or_default();
    let before: BTreeSet<String> = prior.and_then(|p| p.hosts.clone()).unwrap_or_default();
    let spec = plan.port_group_spec();
    let jobs = hosts.iter().filter_map(|h| {
        let existing = h.port_group(&plan.name);
        let want = planned.contains(&h.name);
        let had = before.contains(&h.name);
        let client = client.clone();
        let spec = spec.clone();
        let h = h.clone();
        match (want, existing) {
            (true, None) => Some(tokio::spawn(async move {
                (
                    h.name.clone(),
                    "add",
                    client.add_port_group(&h, &spec).await,
                )
            })),
            (true, Some(current)) if *current != spec => {
                let name = spec.name.clone();
                Some(tokio::spawn(async move {
                    (
                        h.name.clone(),
                        "update",
                        client.update_port_group(&h, &name, &spec).await,
                    )
                }))
            }
            (false, Some(_)) if had => {
                let name = spec.name.clone();
                Some(tokio::spawn(async move {
                    (
                        h.name.clone(),
                        "remove",
                        client.remove_port_group(&h, &name).await,
                    )
                }))
            }
            _ => None,
        }
    });
    let jobs: Vec<_> = jobs.collect();
    for unknown in planned
        .iter()
        .filter(|n| !hosts.iter().any(|h| &h.name == *n))
    {
        diags.attr_error(
            AttrPath::attr("hosts"),
            "Unknown host",
            format!("No host named {unknown:?} on this endpoint."),
        );
    }
    for job in futures::future::join_all(jobs).await {
        match job {
            Ok((host, action, Err(e))) => {
                diags.extend(error_diagnostics(
                    &format!("{action} port group {:?} on host {host}", plan.name),
                    &e,
                ));
            }
            Ok(_) => {}
            Err(e) => diags.error("Internal error", e.to_string()),
        }
    }
    // Read back from vSphere: hosts where it exists now (planned ones and, after a failed
    // removal, the ones that still have it).
    let mut track = plan.clone();
    track.hosts = Some(planned.union(&before).cloned().collect());
    let read = read_standard(client, &track).await.map(|state| {
        state.map(|mut state| {
            state.cluster = plan.cluster.clone();
            state.force_delete = plan.force_delete;
            if !diags.has_errors() {
                // Values vSphere reports only when overridden stay as configured.
                state.set_configured_from(plan);
            }
            state
        })
    });
    read_back(read, diags)
}

async fn apply_distributed(
    call: &Call<'_>,
    prior: Option<&VlanModel>,
    plan: &VlanModel,
) -> Outcome<VlanModel> {
    let client = &call.conn;
    let spec = plan.dv_spec();
    let mut state = plan.clone();
    let result = match prior.and_then(|p| p.id.clone()) {
        None => {
            let switch = plan.distributed_switch.as_deref().unwrap_or_default();
            let dvs = match find_dvs(client, switch).await {
                Ok(d) => d,
                Err(d) => return Outcome::failed(d),
            };
            client.create_dv_port_group(&dvs, &spec).await.map(|pg| {
                state.id = Some(pg.value);
            })
        }
        Some(id) => {
            let pg = ManagedObjectReference::new("DistributedVirtualPortgroup", &id);
            let version = client.dv_port_group_version(&pg).await;
            state.id = Some(id);
            client
                .reconfigure_dv_port_group(&pg, &spec, version.as_deref())
                .await
        }
    };
    let diags = match result {
        Ok(()) => Diagnostics::new(),
        Err(e) => error_diagnostics(&format!("write distributed port group {:?}", plan.name), &e),
    };
    if state.id.is_none() {
        return Outcome::failed(diags);
    }
    read_back(read_distributed(client, &state).await, diags)
}

async fn apply(call: &Call<'_>, prior: Option<&VlanModel>, plan: &VlanModel) -> Outcome<VlanModel> {
    if plan.is_distributed() {
        apply_distributed(call, prior, plan).await
    } else {
        apply_standard(call, prior, plan).await
    }
}

impl VlanModel {
    /// Keeps the configured form of values vSphere normalises (null overrides stay null).
    fn set_configured_from(&mut self, plan: &VlanModel) {
        if plan.allow_promiscuous.is_none() {
            self.allow_promiscuous = None;
        }
        if plan.allow_forged_transmits.is_none() {
            self.allow_forged_transmits = None;
        }
        if plan.allow_mac_changes.is_none() {
            self.allow_mac_changes = None;
        }
        if plan.active_nics.is_none() {
            self.active_nics = None;
        }
        if plan.standby_nics.is_none() {
            self.standby_nics = None;
        }
    }
}

/// The hosts the port group is planned on: `hosts`, the members of `cluster`, or (on a
/// standalone host) every host. `None` when that is not known yet or already reported.
async fn planned_hosts(
    client: &Client,
    config: &VlanView,
    hosts: &[HostNetwork],
    diags: &mut Diagnostics,
) -> Option<Vec<String>> {
    match (&config.hosts, &config.cluster) {
        (Tri::Known(items), _) => Some(items.iter().filter_map(|i| i.known().cloned()).collect()),
        (Tri::Unknown, _) | (_, Tri::Unknown) => None,
        (Tri::Null, Tri::Known(cluster)) => match client.cluster_hosts(cluster).await {
            Ok(members) => Some(
                hosts
                    .iter()
                    .filter(|h| members.contains(&h.host))
                    .map(|h| h.name.clone())
                    .collect(),
            ),
            Err(e) => {
                diags.extend(lookup_diagnostics(
                    AttrPath::attr("cluster"),
                    "Unknown cluster",
                    &e,
                ));
                None
            }
        },
        (Tri::Null, Tri::Null) => {
            if client.about().is_vcenter() {
                diags.attr_error(
                    AttrPath::attr("hosts"),
                    "Hosts needed",
                    "On vCenter, say where the port group goes: set `hosts` (host names) or `cluster`, or use `distributed_switch`.",
                );
                return None;
            }
            Some(hosts.iter().map(|h| h.name.clone()).collect())
        }
    }
}

#[async_trait]
impl TypedResource for Vlan {
    type Model = VlanModel;
    type Connect = Vsphere;
    const TYPE_NAME: &'static str = "ceso_vlan";

    fn schema() -> Schema {
        schema::schema()
    }

    fn validate(config: &Config<'_>, diags: &mut Diagnostics) {
        let Ok(c) = config.decode::<VlanView>() else {
            return;
        };
        if c.distributed() {
            for a in c.standard_only() {
                diags.attr_error(
                    AttrPath::attr(a),
                    "Not valid on a distributed switch",
                    format!("`{a}` applies to standard vSwitches only; remove it or remove `distributed_switch`."),
                );
            }
            if c.vlan_id == Tri::Known(4095) {
                diags.attr_error(
                    AttrPath::attr("vlan_id"),
                    "VLAN 4095 is for standard switches",
                    "On a distributed switch give a trunk as `vlan_ranges = [\"0-4094\"]`.",
                );
            }
        } else {
            for a in c.distributed_only() {
                let hint = if a == "vlan_ranges" {
                    " On a standard vSwitch a trunk of all VLANs is `vlan_id = 4095`."
                } else {
                    ""
                };
                diags.attr_error(
                    AttrPath::attr(a),
                    "Needs a distributed switch",
                    format!("`{a}` applies to distributed switches only; set `distributed_switch` or remove it.{hint}"),
                );
            }
            if set(&c.hosts) && set(&c.cluster) {
                diags.attr_error(
                    AttrPath::attr("cluster"),
                    "Conflicting attributes",
                    "Set `hosts` or `cluster`, not both.",
                );
            }
        }
        let vlan_set = matches!(c.vlan_id, Tri::Known(n) if n != 0);
        let ranges_set = set(&c.vlan_ranges);
        let pvlan_set = set(&c.private_vlan_id);
        if [vlan_set, ranges_set, pvlan_set]
            .iter()
            .filter(|b| **b)
            .count()
            > 1
        {
            diags.attr_error(
                AttrPath::attr("vlan_ranges"),
                "Conflicting VLAN settings",
                "Set one of `vlan_id`, `vlan_ranges` and `private_vlan_id`.",
            );
        }
        if let Tri::Known(items) = &c.vlan_ranges {
            let ranges: Option<Vec<String>> = items.iter().map(|i| i.known().cloned()).collect();
            if let Some(ranges) = ranges {
                check_ranges(&ranges, diags);
            }
        }
    }

    async fn plan(&self, ctx: &Context, plan: &mut Plan<'_, '_>) {
        let Ok(config) = plan.config::<VlanView>() else {
            return;
        };
        let prior_ports = plan.prior::<VlanView>().ok().flatten().map(|p| p.num_ports);
        let edits: Result<(), Diagnostics> = if config.distributed() {
            let ports = match (&config.num_ports, prior_ports) {
                (Tri::Null, Some(p)) if set(&p) => Some(p),
                _ => None,
            };
            plan.set("vswitch", &Tri::<String>::Null)
                .and_then(|()| plan.set("hosts", &Tri::<Vec<String>>::Null))
                .and_then(|()| match config.port_binding {
                    Tri::Null => plan.set("port_binding", &"static"),
                    _ => Ok(()),
                })
                .and_then(|()| match ports {
                    Some(p) => plan.set("num_ports", &p),
                    None => Ok(()),
                })
        } else {
            plan.set("num_ports", &Tri::<i64>::Null)
                .and_then(|()| plan.set("port_binding", &Tri::<String>::Null))
                .and_then(|()| match config.vswitch {
                    Tri::Null => plan.set("vswitch", &DEFAULT_VSWITCH),
                    _ => Ok(()),
                })
        };
        if let Err(d) = edits {
            plan.diags().extend(d);
            return;
        }
        let Ok(client) = Vsphere::connect(ctx, config.endpoint.as_deref()).await else {
            return; // Apply reports connection problems with the full diagnostic.
        };
        if config.distributed() {
            if let Tri::Known(name) = &config.distributed_switch {
                if let Err(d) = find_dvs(&client, name).await {
                    plan.diags().extend(d);
                }
            }
            return;
        }
        // Standard switches: resolve and check the hosts and the vSwitch at plan time.
        let hosts = match client.host_networks().await {
            Ok(h) => h,
            Err(e) => {
                plan.diags()
                    .extend(error_diagnostics("read host networks", &e));
                return;
            }
        };
        let Some(wanted) = planned_hosts(&client, &config, &hosts, plan.diags()).await else {
            return;
        };
        let known: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        for name in &wanted {
            if !known.contains(&name.as_str()) {
                plan.diags().attr_error(
                    AttrPath::attr("hosts"),
                    "Unknown host",
                    format!(
                        "No host named {name:?}; hosts on this endpoint: {}.",
                        known.join(", ")
                    ),
                );
            }
        }
        let vswitch = plan
            .planned::<VlanView>()
            .ok()
            .and_then(|p| p.vswitch.into_known())
            .unwrap_or_else(|| DEFAULT_VSWITCH.to_string());
        for h in hosts.iter().filter(|h| wanted.contains(&h.name)) {
            if !h.vswitches.contains(&vswitch) {
                plan.diags().attr_error(
                    AttrPath::attr("vswitch"),
                    "Unknown vSwitch",
                    format!(
                        "Host {} has no standard vSwitch {vswitch:?}; it has: {}.",
                        h.name,
                        h.vswitches.join(", ")
                    ),
                );
            }
        }
        let wanted: BTreeSet<String> = wanted.into_iter().collect();
        if let Err(d) = plan.set("hosts", &wanted) {
            plan.diags().extend(d);
        }
    }

    async fn create(&self, call: &Call<'_>, plan: VlanModel) -> Outcome<VlanModel> {
        apply(call, None, &plan).await
    }

    async fn read(
        &self,
        call: &Call<'_>,
        state: VlanModel,
    ) -> Result<Option<VlanModel>, Diagnostics> {
        read_model(&call.conn, &state).await
    }

    async fn update(
        &self,
        call: &Call<'_>,
        prior: VlanModel,
        plan: VlanModel,
    ) -> Outcome<VlanModel> {
        apply(call, Some(&prior), &plan).await
    }

    async fn delete(&self, call: &Call<'_>, prior: VlanModel) -> Diagnostics {
        let client = &call.conn;
        let networks: Vec<ManagedObjectReference> = if prior.is_distributed() {
            prior
                .id
                .iter()
                .map(|id| ManagedObjectReference::new("DistributedVirtualPortgroup", id))
                .collect()
        } else {
            match client.standard_networks_named(&prior.name).await {
                Ok(n) => n,
                Err(e) => return error_diagnostics("read networks", &e),
            }
        };
        if !prior.force_delete.unwrap_or(false) {
            match client.vms_on_networks(&networks).await {
                Ok(vms) if !vms.is_empty() => {
                    return Diagnostics::from_error(
                        format!("Unable to delete port group {:?}", prior.name),
                        format!(
                            "VMs are still connected to it: {}. Move their network interfaces elsewhere first (or set force_delete = true to let vSphere decide).",
                            vms.join(", ")
                        ),
                    )
                }
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return error_diagnostics("list the VMs on the port group", &e),
            }
        }
        if prior.is_distributed() {
            let mut diags = Diagnostics::new();
            for pg in &networks {
                if let Err(e) = client.destroy(pg).await {
                    diags.extend(error_diagnostics(
                        &format!("delete distributed port group {:?}", prior.name),
                        &e,
                    ));
                }
            }
            return diags;
        }
        let hosts = match client.host_networks().await {
            Ok(h) => h,
            Err(e) => return error_diagnostics("read host networks", &e),
        };
        let names = prior.hosts.clone().unwrap_or_default();
        let jobs = hosts
            .into_iter()
            .filter(|h| names.contains(&h.name))
            .map(|h| {
                let client = client.clone();
                let pg = prior.name.clone();
                tokio::spawn(
                    async move { (h.name.clone(), client.remove_port_group(&h, &pg).await) },
                )
            });
        let mut diags = Diagnostics::new();
        for job in futures::future::join_all(jobs.collect::<Vec<_>>()).await {
            match job {
                Ok((host, Err(e))) => diags.extend(error_diagnostics(
                    &format!("remove port group {:?} from host {host}", prior.name),
                    &e,
                )),
                Ok(_) => {}
                Err(e) => diags.error("Internal error", e.to_string()),
            }
        }
        diags
    }
}

#[async_trait]
impl Import<Vlan> for Vlan {
    fn id_format(&self) -> &'static str {
        "HOST:NAME (host name or id, e.g. host-12:vlan-120), DVS:NAME (distributed switch name) or a port group NAME that is unique"
    }

    async fn import(&self, call: &Call<'_>, id: &str) -> Result<Vec<VlanModel>, Diagnostics> {
        let client = &call.conn;
        let hosts = client
            .host_networks()
            .await
            .map_err(|e| error_diagnostics("read host networks", &e))?;
        let mut model = VlanModel::default();
        let bad_id = |why: String| {
            Diagnostics::from_error(
                "Unable to import ceso_vlan",
                format!("{why}. Use {}.", self.id_format()),
            )
        };
        let (scope, name) = match id.split_once(':') {
            Some((a, b)) => (Some(a), b),
            None => (None, id),
        };
        model.name = name.to_string();
        let host = scope.and_then(|scope| {
            hosts
                .iter()
                .find(|h| h.name == scope || h.host.value == scope)
        });
        match (scope, host) {
            (Some(_), Some(host)) => {
                if host.port_group(name).is_none() {
                    return Err(bad_id(format!(
                        "host {} has no port group {name:?}",
                        host.name
                    )));
                }
                model.hosts = Some([host.name.clone()].into());
            }
            (Some(dvs_name), None) => {
                let dvs = find_dvs(client, dvs_name).await.map_err(|_| {
                    bad_id(format!(
                        "{dvs_name:?} is neither a host nor a distributed switch"
                    ))
                })?;
                let pg = client
                    .dv_port_group_named(&dvs, name)
                    .await
                    .map_err(|e| error_diagnostics("read the distributed switch", &e))?
                    .ok_or_else(|| {
                        bad_id(format!(
                            "distributed switch {dvs_name} has no port group {name:?}"
                        ))
                    })?;
                model.distributed_switch = Some(dvs_name.to_string());
                model.id = Some(pg.value);
            }
            (None, _) => {
                let on: BTreeSet<String> = hosts
                    .iter()
                    .filter(|h| h.port_group(name).is_some())
                    .map(|h| h.name.clone())
                    .collect();
                let dv: Vec<_> = client
                    .all_dv_port_groups()
                    .await
                    .map_err(|e| error_diagnostics("list distributed port groups", &e))?
                    .into_iter()
                    .filter(|pg| pg.name == name)
                    .collect();
                match (on.is_empty(), dv.len()) {
                    (false, 0) => model.hosts = Some(on),
                    (true, 1) => {
                        let pg = dv.into_iter().next().expect("one");
                        model.distributed_switch = Some(pg.switch);
                        model.id = Some(pg.obj.value);
                    }
                    (true, 0) => return Err(bad_id(format!("no port group named {name:?}"))),
                    _ => return Err(bad_id(format!("port group name {name:?} is ambiguous (standard port groups on {} host(s), {} distributed)", on.len(), dv.len()))),
                }
            }
        }
        if !model.is_distributed() {
            model.id = Some(name.to_string());
        }
        Ok(vec![model])
    }
}
