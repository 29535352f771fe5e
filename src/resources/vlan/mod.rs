//! `ceso_vlan`: a VLAN port group on standard vSwitches (one host, several standalone hosts, or
//! every host of a cluster; no vCenter needed) or on a distributed switch.
//!
//! Standard port groups are written host by host, in parallel; the state's `hosts` always lists
//! exactly the hosts where the port group exists, also after a partial failure, so nothing is
//! left untracked.

mod model;
mod schema;

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;

use crate::cty::Value;
use crate::framework::resource::{ApplyRequest, ApplyResult, ImportedResource, PlanRequest};
use crate::framework::typed::{from_planned, get_attr, to_value};
use crate::framework::{AttrPath, Context, Diagnostics, Resource, Schema};
use crate::session::{client, endpoint_of, error_diagnostics};
use crate::vsphere::network::{DvPortGroupSpec, HostNetwork};
use crate::vsphere::property::ObjectContent;
use crate::vsphere::types::ManagedObjectReference;
use crate::vsphere::Client;

use model::{check_ranges, VlanModel, DEFAULT_VSWITCH};

/// The `ceso_vlan` resource.
pub struct Vlan;

const TYPE: &str = "ceso_vlan";

fn known_string(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn is_set(v: &Value) -> bool {
    !matches!(v, Value::Null)
}

/// Standard-switch attributes that make no sense on a distributed switch.
const STANDARD_ONLY: &[&str] = &[
    "vswitch",
    "hosts",
    "cluster",
    "allow_promiscuous",
    "allow_forged_transmits",
    "allow_mac_changes",
    "active_nics",
    "standby_nics",
];

/// Distributed-switch attributes that make no sense on a standard switch.
const DISTRIBUTED_ONLY: &[&str] = &[
    "vlan_ranges",
    "private_vlan_id",
    "num_ports",
    "port_binding",
];

/// The state's value type (computed once).
fn value_type() -> &'static crate::cty::Type {
    static TYPE: std::sync::OnceLock<crate::cty::Type> = std::sync::OnceLock::new();
    crate::framework::schema::memo_type(&TYPE, schema::schema)
}

impl Vlan {
    fn model(&self, v: &Value) -> Result<VlanModel, Diagnostics> {
        from_planned(v, value_type())
    }

    fn value(&self, m: &VlanModel) -> Result<Value, Diagnostics> {
        to_value(m, value_type())
    }
}

/// The names of the VMs connected to any of `networks` (from each VM's `network` list: one
/// round trip whatever the inventory size).
async fn connected_vms(
    client: &Client,
    networks: &[ManagedObjectReference],
) -> Result<Vec<String>, crate::vsphere::Error> {
    let mut names: Vec<String> = client
        .retrieve_all("VirtualMachine", &["name", "network"])
        .await?
        .into_iter()
        .filter(|vm| vm.morefs("network").iter().any(|n| networks.contains(n)))
        .map(|vm| vm.text("name").unwrap_or(&vm.obj.value).to_string())
        .collect();
    names.sort();
    Ok(names)
}

/// Standard `Network` objects (not distributed port groups) named `name`.
async fn standard_networks(
    client: &Client,
    name: &str,
) -> Result<Vec<ObjectContent>, crate::vsphere::Error> {
    Ok(client
        .retrieve_all("Network", &["name", "host"])
        .await?
        .into_iter()
        .filter(|o| o.obj.kind == "Network" && o.text("name") == Some(name))
        .collect())
}

/// The distributed switch named `name`.
async fn find_dvs(client: &Client, name: &str) -> Result<ManagedObjectReference, Diagnostics> {
    client
        .find_by_name("DistributedVirtualSwitch", name)
        .await
        .map_err(|e| {
            let mut d = Diagnostics::new();
            d.attr_error(
                AttrPath::attr("distributed_switch"),
                "Unknown distributed switch",
                format!(
                    "{} (is this a vCenter with a distributed switch of that name?)",
                    e.message
                ),
            );
            d
        })
}

impl Vlan {
    /// Reads the standard port group on the hosts of `prior`; `None` when no host has it.
    async fn read_standard(
        &self,
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
        let networks = standard_networks(client, &prior.name)
            .await
            .map_err(|e| error_diagnostics("read networks", &e))?;
        state.network_id = networks.first().map(|n| n.obj.value.clone());
        state.id = Some(prior.name.clone());
        state.distributed_switch = None;
        state.vlan_ranges = None;
        state.private_vlan_id = None;
        state.num_ports = None;
        state.port_binding = None;
        Ok(Some(state))
    }

    async fn read_distributed(
        &self,
        client: &Client,
        prior: &VlanModel,
    ) -> Result<Option<VlanModel>, Diagnostics> {
        let Some(id) = prior.id.as_deref() else {
            return Ok(None);
        };
        let pg = ManagedObjectReference::new("DistributedVirtualPortgroup", id);
        match client.properties(&pg, &["config"]).await {
            Ok(o) => {
                let Some(config) = o.get("config") else {
                    return Ok(None);
                };
                let mut state = prior.clone();
                let spec = DvPortGroupSpec::from_config(config);
                state.name = spec.name.clone();
                state.set_from_dv(&spec);
                state.network_id = Some(id.to_string());
                state.vswitch = None;
                state.hosts = None;
                Ok(Some(state))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(error_diagnostics("read the distributed port group", &e)),
        }
    }

    async fn read_model(
        &self,
        client: &Client,
        prior: &VlanModel,
    ) -> Result<Option<VlanModel>, Diagnostics> {
        if prior.is_distributed() {
            self.read_distributed(client, prior).await
        } else {
            self.read_standard(client, prior).await
        }
    }

    /// Applies the standard port group to the planned hosts (add, update or remove per host, in
    /// parallel), then reads back what exists.
    async fn apply_standard(
        &self,
        client: &Arc<Client>,
        prior: Option<&VlanModel>,
        plan: &VlanModel,
    ) -> ApplyResult {
        let mut diags = Diagnostics::new();
        let hosts = match client.host_networks().await {
            Ok(h) => h,
            Err(e) => {
                return ApplyResult::failed(
                    Value::Null,
                    error_diagnostics("read host networks", &e),
                )
            }
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
        match self.read_standard(client, &track).await {
            Ok(Some(mut state)) => {
                state.cluster = plan.cluster.clone();
                state.force_delete = plan.force_delete;
                if !diags.has_errors() {
                    // Values vSphere reports only when overridden stay as configured.
                    state.set_configured_from(plan);
                }
                match self.value(&state) {
                    Ok(v) => ApplyResult {
                        state: v,
                        private: None,
                        diags,
                    },
                    Err(d) => {
                        diags.extend(d);
                        ApplyResult::failed(Value::Null, diags)
                    }
                }
            }
            Ok(None) => ApplyResult::failed(Value::Null, diags),
            Err(d) => {
                diags.extend(d);
                ApplyResult::failed(Value::Null, diags)
            }
        }
    }

    async fn apply_distributed(
        &self,
        client: &Arc<Client>,
        prior: Option<&VlanModel>,
        plan: &VlanModel,
    ) -> ApplyResult {
        let spec = plan.dv_spec();
        let mut state = plan.clone();
        let result = match prior.and_then(|p| p.id.clone()) {
            None => {
                let dvs = match find_dvs(
                    client,
                    plan.distributed_switch.as_deref().unwrap_or_default(),
                )
                .await
                {
                    Ok(d) => d,
                    Err(d) => return ApplyResult::failed(Value::Null, d),
                };
                client.create_dv_port_group(&dvs, &spec).await.map(|pg| {
                    state.id = Some(pg.value);
                })
            }
            Some(id) => {
                let pg = ManagedObjectReference::new("DistributedVirtualPortgroup", &id);
                let version = client
                    .properties(&pg, &["config.configVersion"])
                    .await
                    .ok()
                    .and_then(|o| o.text("config.configVersion").map(str::to_string));
                state.id = Some(id);
                client
                    .reconfigure_dv_port_group(&pg, &spec, version.as_deref())
                    .await
            }
        };
        let mut diags = match result {
            Ok(()) => Diagnostics::new(),
            Err(e) => {
                error_diagnostics(&format!("write distributed port group {:?}", plan.name), &e)
            }
        };
        if state.id.is_none() {
            return ApplyResult::failed(Value::Null, diags);
        }
        match self.read_distributed(client, &state).await {
            Ok(Some(read)) => match self.value(&read) {
                Ok(v) => ApplyResult {
                    state: v,
                    private: None,
                    diags,
                },
                Err(d) => ApplyResult::failed(Value::Null, d),
            },
            Ok(None) => ApplyResult::failed(Value::Null, diags),
            Err(d) => {
                diags.extend(d);
                ApplyResult::failed(Value::Null, diags)
            }
        }
    }

    async fn apply(&self, ctx: &Context, req: &ApplyRequest<'_>) -> ApplyResult {
        let plan = match self.model(req.planned) {
            Ok(m) => m,
            Err(d) => return ApplyResult::failed(req.prior.clone(), d),
        };
        let prior = if *req.prior == Value::Null {
            None
        } else {
            match self.model(req.prior) {
                Ok(m) => Some(m),
                Err(d) => return ApplyResult::failed(req.prior.clone(), d),
            }
        };
        let client = match client(ctx, endpoint_of(req.config)).await {
            Ok(c) => c,
            Err(d) => return ApplyResult::failed(req.prior.clone(), d),
        };
        if plan.is_distributed() {
            self.apply_distributed(&client, prior.as_ref(), &plan).await
        } else {
            self.apply_standard(&client, prior.as_ref(), &plan).await
        }
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

#[async_trait]
impl Resource for Vlan {
    fn type_name(&self) -> &'static str {
        TYPE
    }

    fn schema(&self) -> Schema {
        schema::schema()
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        let distributed = is_set(get_attr(config, "distributed_switch"));
        if distributed {
            for a in STANDARD_ONLY {
                if is_set(get_attr(config, a)) {
                    diags.attr_error(
                        AttrPath::attr(a),
                        "Not valid on a distributed switch",
                        format!("`{a}` applies to standard vSwitches only; remove it or remove `distributed_switch`."),
                    );
                }
            }
            if let Value::Number(n) = get_attr(config, "vlan_id") {
                if n.to_i64() == Some(4095) {
                    diags.attr_error(
                        AttrPath::attr("vlan_id"),
                        "VLAN 4095 is for standard switches",
                        "On a distributed switch give a trunk as `vlan_ranges = [\"0-4094\"]`.",
                    );
                }
            }
        } else {
            for a in DISTRIBUTED_ONLY {
                if is_set(get_attr(config, a)) {
                    let hint = if *a == "vlan_ranges" {
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
            }
            if is_set(get_attr(config, "hosts")) && is_set(get_attr(config, "cluster")) {
                diags.attr_error(
                    AttrPath::attr("cluster"),
                    "Conflicting attributes",
                    "Set `hosts` or `cluster`, not both.",
                );
            }
        }
        let vlan_set =
            matches!(get_attr(config, "vlan_id"), Value::Number(n) if n.to_i64() != Some(0));
        let ranges_set = is_set(get_attr(config, "vlan_ranges"));
        let pvlan_set = is_set(get_attr(config, "private_vlan_id"));
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
        if let Value::List(items) = get_attr(config, "vlan_ranges") {
            if items.iter().all(|i| matches!(i, Value::String(_))) {
                let ranges: Vec<String> = items
                    .iter()
                    .filter_map(|i| known_string(i).map(str::to_string))
                    .collect();
                check_ranges(&ranges, diags);
            }
        }
    }

    async fn modify_plan(&self, ctx: &Context, req: &mut PlanRequest<'_>) {
        use crate::framework::walk::set_attr;
        let distributed = is_set(get_attr(req.config, "distributed_switch"));
        let prior = req.prior.clone();
        if distributed {
            for a in ["vswitch", "hosts"] {
                set_attr(&mut req.planned, a, Value::Null);
            }
            if !is_set(get_attr(req.config, "port_binding")) {
                set_attr(
                    &mut req.planned,
                    "port_binding",
                    Value::String("static".into()),
                );
            }
            if !is_set(get_attr(req.config, "num_ports")) && is_set(get_attr(&prior, "num_ports")) {
                set_attr(
                    &mut req.planned,
                    "num_ports",
                    get_attr(&prior, "num_ports").clone(),
                );
            }
        } else {
            for a in ["num_ports", "port_binding"] {
                set_attr(&mut req.planned, a, Value::Null);
            }
            if !is_set(get_attr(req.config, "vswitch")) {
                set_attr(
                    &mut req.planned,
                    "vswitch",
                    Value::String(DEFAULT_VSWITCH.into()),
                );
            }
        }
        if *req.config == Value::Null || ctx.provider_data.is_none() {
            return;
        }
        let Ok(client) = client(ctx, endpoint_of(req.config)).await else {
            return; // Apply reports connection problems with the full diagnostic.
        };
        if distributed {
            if let Some(name) = known_string(get_attr(req.config, "distributed_switch")) {
                if let Err(d) = find_dvs(&client, name).await {
                    req.diags.extend(d);
                }
            }
            return;
        }
        // Standard switches: resolve and check the hosts and the vSwitch at plan time.
        let hosts = match client.host_networks().await {
            Ok(h) => h,
            Err(e) => {
                req.diags
                    .extend(error_diagnostics("read host networks", &e));
                return;
            }
        };
        let wanted: Option<Vec<String>> = match (
            get_attr(req.config, "hosts"),
            get_attr(req.config, "cluster"),
        ) {
            (Value::Set(items), _) => Some(
                items
                    .iter()
                    .filter_map(|i| known_string(i).map(str::to_string))
                    .collect(),
            ),
            (Value::Unknown, _) | (_, Value::Unknown) => None,
            (Value::Null, Value::String(cluster)) => match client
                .find_by_name("ClusterComputeResource", cluster)
                .await
            {
                Ok(c) => {
                    let members = client
                        .properties(&c, &["host"])
                        .await
                        .map(|o| o.morefs("host"))
                        .unwrap_or_default();
                    Some(
                        hosts
                            .iter()
                            .filter(|h| members.contains(&h.host))
                            .map(|h| h.name.clone())
                            .collect(),
                    )
                }
                Err(e) => {
                    req.diags
                        .attr_error(AttrPath::attr("cluster"), "Unknown cluster", e.message);
                    return;
                }
            },
            _ => {
                if client.about().is_vcenter() {
                    req.diags.attr_error(
                        AttrPath::attr("hosts"),
                        "Hosts needed",
                        "On vCenter, say where the port group goes: set `hosts` (host names) or `cluster`, or use `distributed_switch`.",
                    );
                    return;
                }
                Some(hosts.iter().map(|h| h.name.clone()).collect())
            }
        };
        let Some(wanted) = wanted else { return };
        let known: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        for name in &wanted {
            if !known.contains(&name.as_str()) {
                req.diags.attr_error(
                    AttrPath::attr("hosts"),
                    "Unknown host",
                    format!(
                        "No host named {name:?}; hosts on this endpoint: {}.",
                        known.join(", ")
                    ),
                );
            }
        }
        let vswitch = known_string(get_attr(&req.planned, "vswitch"))
            .unwrap_or(DEFAULT_VSWITCH)
            .to_string();
        for h in hosts.iter().filter(|h| wanted.contains(&h.name)) {
            if !h.vswitches.contains(&vswitch) {
                req.diags.attr_error(
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
        set_attr(
            &mut req.planned,
            "hosts",
            Value::Set(
                wanted
                    .into_iter()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .map(Value::String)
                    .collect(),
            ),
        );
    }

    async fn create(&self, ctx: &Context, req: &ApplyRequest<'_>) -> ApplyResult {
        self.apply(ctx, req).await
    }

    async fn read(&self, ctx: &Context, state: &Value) -> Result<Option<Value>, Diagnostics> {
        let prior = self.model(state)?;
        let client = client(ctx, endpoint_of(state)).await?;
        match self.read_model(&client, &prior).await? {
            Some(m) => self.value(&m).map(Some),
            None => Ok(None),
        }
    }

    async fn update(&self, ctx: &Context, req: &ApplyRequest<'_>) -> ApplyResult {
        self.apply(ctx, req).await
    }

    async fn delete(&self, ctx: &Context, req: &ApplyRequest<'_>) -> Diagnostics {
        let prior = match self.model(req.prior) {
            Ok(m) => m,
            Err(d) => return d,
        };
        let client = match client(ctx, endpoint_of(req.prior)).await {
            Ok(c) => c,
            Err(d) => return d,
        };
        let networks: Vec<ManagedObjectReference> = if prior.is_distributed() {
            prior
                .id
                .iter()
                .map(|id| ManagedObjectReference::new("DistributedVirtualPortgroup", id))
                .collect()
        } else {
            match standard_networks(&client, &prior.name).await {
                Ok(n) => n.into_iter().map(|o| o.obj).collect(),
                Err(e) => return error_diagnostics("read networks", &e),
            }
        };
        if !prior.force_delete.unwrap_or(false) {
            match connected_vms(&client, &networks).await {
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

    fn supports_import(&self) -> bool {
        true
    }

    async fn import(&self, ctx: &Context, id: &str) -> Result<Vec<ImportedResource>, Diagnostics> {
        let (endpoint, id) = crate::session::split_import_id(id);
        let client = client(ctx, endpoint).await?;
        let hosts = client
            .host_networks()
            .await
            .map_err(|e| error_diagnostics("read host networks", &e))?;
        let mut model = VlanModel::default();
        let bad_id = |why: String| {
            Diagnostics::from_error(
                "Unable to import ceso_vlan",
                format!("{why}. Use HOST:NAME (host name or id, e.g. host-12:vlan-120), DVS:NAME (distributed switch name) or a port group NAME that is unique."),
            )
        };
        let (scope, name) = match id.split_once(':') {
            Some((a, b)) => (Some(a), b),
            None => (None, id),
        };
        model.name = name.to_string();
        match scope {
            Some(scope)
                if hosts
                    .iter()
                    .any(|h| h.name == scope || h.host.value == scope) =>
            {
                let host = hosts
                    .iter()
                    .find(|h| h.name == scope || h.host.value == scope)
                    .expect("checked");
                if host.port_group(name).is_none() {
                    return Err(bad_id(format!(
                        "host {} has no port group {name:?}",
                        host.name
                    )));
                }
                model.hosts = Some([host.name.clone()].into());
            }
            Some(dvs_name) => {
                let dvs = find_dvs(&client, dvs_name).await.map_err(|_| {
                    bad_id(format!(
                        "{dvs_name:?} is neither a host nor a distributed switch"
                    ))
                })?;
                let pg = dv_port_group_named(&client, &dvs, name)
                    .await?
                    .ok_or_else(|| {
                        bad_id(format!(
                            "distributed switch {dvs_name} has no port group {name:?}"
                        ))
                    })?;
                model.distributed_switch = Some(dvs_name.to_string());
                model.id = Some(pg.value);
            }
            None => {
                let on: BTreeSet<String> = hosts
                    .iter()
                    .filter(|h| h.port_group(name).is_some())
                    .map(|h| h.name.clone())
                    .collect();
                let dv: Vec<(String, ManagedObjectReference)> = all_dv_port_groups(&client)
                    .await?
                    .into_iter()
                    .filter(|(n, _, _)| n == name)
                    .map(|(_, dvs, pg)| (dvs, pg))
                    .collect();
                match (on.is_empty(), dv.len()) {
                    (false, 0) => model.hosts = Some(on),
                    (true, 1) => {
                        let (dvs, pg) = dv.into_iter().next().expect("one");
                        model.distributed_switch = Some(dvs);
                        model.id = Some(pg.value);
                    }
                    (true, 0) => return Err(bad_id(format!("no port group named {name:?}"))),
                    _ => return Err(bad_id(format!("port group name {name:?} is ambiguous (standard port groups on {} host(s), {} distributed)", on.len(), dv.len()))),
                }
            }
        }
        if !model.is_distributed() {
            model.id = Some(name.to_string());
        }
        let state = self.value(&model)?;
        Ok(vec![ImportedResource {
            type_name: TYPE.to_string(),
            state: crate::session::with_endpoint(state, endpoint),
            private: Vec::new(),
        }])
    }
}

/// Every distributed port group: (name, switch name, reference).
async fn all_dv_port_groups(
    client: &Client,
) -> Result<Vec<(String, String, ManagedObjectReference)>, Diagnostics> {
    let switches = client
        .retrieve_all("DistributedVirtualSwitch", &["name", "portgroup"])
        .await
        .map_err(|e| error_diagnostics("list distributed switches", &e))?;
    let pgs = client
        .retrieve_all(
            "DistributedVirtualPortgroup",
            &["name", "config.distributedVirtualSwitch"],
        )
        .await
        .map_err(|e| error_diagnostics("list distributed port groups", &e))?;
    Ok(pgs
        .into_iter()
        .filter_map(|pg| {
            let dvs = pg.moref("config.distributedVirtualSwitch")?;
            let dvs_name = switches
                .iter()
                .find(|s| s.obj == dvs)?
                .text("name")?
                .to_string();
            Some((pg.text("name")?.to_string(), dvs_name, pg.obj))
        })
        .collect())
}

async fn dv_port_group_named(
    client: &Client,
    dvs: &ManagedObjectReference,
    name: &str,
) -> Result<Option<ManagedObjectReference>, Diagnostics> {
    let o = client
        .properties(dvs, &["portgroup"])
        .await
        .map_err(|e| error_diagnostics("read the distributed switch", &e))?;
    for pg in o.morefs("portgroup") {
        if let Ok(p) = client.read_batched(&pg, &["name"]).await {
            if p.text("name") == Some(name) {
                return Ok(Some(pg));
            }
        }
    }
    Ok(None)
}
