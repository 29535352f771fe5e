//! `ceso_placement`: a plan-time dry run of VM placement over every endpoint. Each endpoint's
//! inventory is read in one batched round trip (in parallel across endpoints), handed to the
//! pure placement engine, and the decision comes back explained: chosen host, ranked candidates
//! with their scores, every rejected host with its reason, a one-line summary, and optional
//! rebalancing recommendations. No host fitting fails the plan with the summary.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::adapters::placement_inventory::{self, PlacementInventory};
use crate::cty::Type;
use crate::engine::placement::{self, DatastorePreference, GpuRequest, NetworkRequirement};
use crate::framework::typed_data_source::TypedDataSource;
use crate::framework::typed_resource::{Call, Scoped};
use crate::framework::validator::{int_between, one_of};
use crate::framework::{AttrPath, Attribute, Block, Context, Diagnostics, Schema};
use crate::session::{connect, error_diagnostics, Connection, ProviderState, ProviderWide};

/// The `ceso_placement` data source.
pub struct PlacementSource;

#[derive(Debug, Serialize, Deserialize)]
struct CandidateModel {
    host: String,
    endpoint: String,
    cluster: String,
    datastore: String,
    network: Option<String>,
    score: f64,
    cpu_score: f64,
    memory_score: f64,
    balance_score: f64,
    datastore_score: f64,
    gpu_score: f64,
    cpu_mhz_free: i64,
    memory_mb_free: i64,
    disk_gb_free: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct RejectedModel {
    host: String,
    endpoint: String,
    filter: String,
    reason: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct PlacementModel {
    name: String,
    host: String,
    endpoint: String,
    datastore: String,
    network: Option<String>,
    pci_devices: Vec<String>,
    vgpu_profile: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct MoveModel {
    vm: String,
    from: String,
    to: String,
    priority: i64,
    reason: String,
    storage_move: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
/// The data source's configuration and answer.
pub struct PlacementState {
    endpoint: Option<String>,
    name: String,
    cpus: i64,
    memory_mb: i64,
    disk_gb: Option<i64>,
    per_vcpu_mhz: Option<i64>,
    gpus: Option<i64>,
    gpu_model: Option<String>,
    vgpu_profile: Option<String>,
    network: Option<String>,
    vlan_id: Option<i64>,
    datastore: Option<String>,
    anti_affinity_group: Option<String>,
    avoid_vms: Option<Vec<String>>,
    affinity_vms: Option<Vec<String>>,
    include_hosts: Option<Vec<String>>,
    exclude_hosts: Option<Vec<String>>,
    strategy: Option<String>,
    cpu_overcommit: Option<f64>,
    memory_overcommit: Option<f64>,
    recommendations_enabled: Option<bool>,
    instances: Option<i64>,
    placements: Option<Vec<PlacementModel>>,
    host: Option<String>,
    pci_devices: Option<Vec<String>>,
    hosts_total: Option<i64>,
    hosts_fit: Option<i64>,
    summary: Option<String>,
    candidates: Option<Vec<CandidateModel>>,
    rejected: Option<Vec<RejectedModel>>,
    recommendations: Option<Vec<MoveModel>>,
}

fn list_of(t: Type) -> Type {
    Type::List(Box::new(t))
}

fn candidate_type() -> Type {
    let s = || Type::String;
    let n = || Type::Number;
    Type::object([
        ("host", s()),
        ("endpoint", s()),
        ("cluster", s()),
        ("datastore", s()),
        ("network", s()),
        ("score", n()),
        ("cpu_score", n()),
        ("memory_score", n()),
        ("balance_score", n()),
        ("datastore_score", n()),
        ("gpu_score", n()),
        ("cpu_mhz_free", n()),
        ("memory_mb_free", n()),
        ("disk_gb_free", n()),
    ])
}

fn rejected_type() -> Type {
    Type::object([
        ("host", Type::String),
        ("endpoint", Type::String),
        ("filter", Type::String),
        ("reason", Type::String),
    ])
}

fn placement_type() -> Type {
    Type::object([
        ("name", Type::String),
        ("host", Type::String),
        ("endpoint", Type::String),
        ("datastore", Type::String),
        ("network", Type::String),
        ("pci_devices", list_of(Type::String)),
        ("vgpu_profile", Type::String),
    ])
}

fn move_type() -> Type {
    Type::object([
        ("vm", Type::String),
        ("from", Type::String),
        ("to", Type::String),
        ("priority", Type::Number),
        ("reason", Type::String),
        ("storage_move", Type::Bool),
    ])
}

/// Joins several endpoints' inventories into one. With more than one endpoint, host and
/// datastore names become `ENDPOINT/NAME` (standalone hosts often share names such as
/// `localhost`, and their datastores `datastore1`).
fn merge(parts: Vec<(String, PlacementInventory)>) -> placement::Fleet {
    let several = parts.len() > 1;
    let mut out = placement::Fleet::default();
    for (endpoint, part) in parts {
        let q = |n: &str| {
            if several {
                format!("{endpoint}/{n}")
            } else {
                n.to_string()
            }
        };
        for mut h in part.inventory.hosts {
            h.name = q(&h.name);
            h.datastores = h.datastores.iter().map(|d| q(d)).collect();
            for v in &mut h.vms {
                v.datastore = v.datastore.as_deref().map(q);
            }
            out.hosts.push(h);
        }
        for mut d in part.inventory.datastores {
            d.name = q(&d.name);
            d.hosts = d.hosts.iter().map(|h| q(h)).collect();
            out.datastores.push(d);
        }
        out.anti_affinity_groups
            .extend(part.inventory.anti_affinity_groups);
    }
    out.anti_affinity_groups.sort();
    out.anti_affinity_groups.dedup();
    out
}

/// A network requirement in words: `a port group named "x"`, `a port group on VLAN 120`.
fn describe(need: &NetworkRequirement) -> String {
    match need {
        NetworkRequirement::Name(n) => format!("a port group named {n:?}"),
        NetworkRequirement::Vlan(v) => format!("a port group on VLAN {v}"),
    }
}

/// Whether `host` has a port group meeting `need`.
fn has_network(host: &placement::Host, need: &NetworkRequirement) -> bool {
    host.networks.iter().any(|n| match need {
        NetworkRequirement::Name(name) => n.name == *name,
        NetworkRequirement::Vlan(id) => n.vlan_id == Some(*id),
    })
}

/// `ENDPOINT/NAME` (several endpoints) or `NAME` (one, `only`) as (endpoint, name).
fn split(qualified: &str, only: Option<&str>) -> (String, String) {
    match only {
        Some(e) => (e.to_string(), qualified.to_string()),
        None => match qualified.split_once('/') {
            Some((e, n)) => (e.to_string(), n.to_string()),
            None => (String::new(), qualified.to_string()),
        },
    }
}

/// A user's host or datastore name as the merged inventory spells it: unchanged when it
/// exists as given, else every `ENDPOINT/NAME` it matches.
fn qualify(name: &str, known: &[String]) -> Vec<String> {
    if known.iter().any(|k| k == name) {
        return vec![name.to_string()];
    }
    known
        .iter()
        .filter(|k| k.split_once('/').is_some_and(|(_, n)| n == name))
        .cloned()
        .collect()
}

/// A user's host list as the merged inventory spells it (`hosts`): each name qualified to
/// every `ENDPOINT/NAME` it matches, or kept as given when it matches none.
fn host_list(names: &Option<Vec<String>>, hosts: &[String]) -> Vec<String> {
    names
        .iter()
        .flatten()
        .flat_map(|n| {
            let q = qualify(n, hosts);
            if q.is_empty() {
                vec![n.clone()]
            } else {
                q
            }
        })
        .collect()
}

impl PlacementState {
    /// The engine's request for this configuration. `hosts` and `datastores` are the names
    /// the merged inventory has, which the configuration's are qualified to.
    fn request(
        &self,
        hosts: &[String],
        datastores: &[String],
    ) -> Result<placement::PlacementRequest, Diagnostics> {
        let mut diags = Diagnostics::new();
        let gpu = self.gpu_request();
        let network = self.network_requirement(&mut diags);
        let datastore = self.datastore_preference(datastores, &mut diags);
        if diags.has_errors() {
            return Err(diags);
        }
        Ok(placement::PlacementRequest {
            name: self.name.clone(),
            cpus: self.cpus.max(0) as u32,
            per_vcpu_mhz: self
                .per_vcpu_mhz
                .map(|m| m.max(0) as u32)
                .unwrap_or(placement::model::DEFAULT_PER_VCPU_MHZ),
            memory_mib: self.memory_mb.max(0) as u64,
            disk_gib: self.disk_gb.unwrap_or(0).max(0) as u64,
            gpu,
            network,
            datastore,
            anti_affinity_group: self.anti_affinity_group.clone(),
            groups: Vec::new(),
            avoid_vms: self.avoid_vms.clone().unwrap_or_default(),
            affinity_vms: self.affinity_vms.clone().unwrap_or_default(),
            include_hosts: host_list(&self.include_hosts, hosts),
            exclude_hosts: host_list(&self.exclude_hosts, hosts),
            strategy: self.strategy(),
            cpu_overcommit: self
                .cpu_overcommit
                .unwrap_or(placement::model::DEFAULT_CPU_OVERCOMMIT),
            memory_overcommit: self
                .memory_overcommit
                .unwrap_or(placement::model::DEFAULT_MEMORY_OVERCOMMIT),
            max_candidates: placement::model::DEFAULT_MAX_CANDIDATES,
        })
    }

    /// Whole GPUs (`gpus`, optionally of `gpu_model`), or one instance of `vgpu_profile`.
    fn gpu_request(&self) -> Option<GpuRequest> {
        match (self.gpus, &self.vgpu_profile) {
            (Some(n), _) if n > 0 => Some(GpuRequest {
                count: n as u32,
                model: self.gpu_model.clone(),
                vgpu_profile: self.vgpu_profile.clone(),
            }),
            (_, Some(p)) => Some(GpuRequest {
                count: 1,
                model: None,
                vgpu_profile: Some(p.clone()),
            }),
            _ => None,
        }
    }

    /// A port group by `network` name or by `vlan_id`; both given is an error.
    fn network_requirement(&self, diags: &mut Diagnostics) -> Option<NetworkRequirement> {
        match (&self.network, self.vlan_id) {
            (Some(n), None) => Some(NetworkRequirement::Name(n.clone())),
            (None, Some(v)) => Some(NetworkRequirement::Vlan(v as u16)),
            (Some(_), Some(_)) => {
                diags.attr_error(
                    AttrPath::attr("vlan_id"),
                    "Conflicting network requirements",
                    "Give either network (a port group name) or vlan_id (any port group on that VLAN), not both.",
                );
                None
            }
            (None, None) => None,
        }
    }

    /// The `datastore` asked for, qualified to the merged inventory's `datastores` (a name
    /// several endpoints have is an error), or the one with most room.
    fn datastore_preference(
        &self,
        datastores: &[String],
        diags: &mut Diagnostics,
    ) -> DatastorePreference {
        let Some(d) = &self.datastore else {
            return DatastorePreference::MostFree;
        };
        match qualify(d, datastores).as_slice() {
            [one] => DatastorePreference::Named(one.clone()),
            [] => DatastorePreference::Named(d.clone()),
            many => {
                diags.attr_error(
                    AttrPath::attr("datastore"),
                    "Ambiguous datastore",
                    format!("Several endpoints have a datastore named {d:?}: {}. Write it as ENDPOINT/NAME, or set endpoint.", many.join(", ")),
                );
                DatastorePreference::MostFree
            }
        }
    }

    /// The `strategy`, spread by default.
    fn strategy(&self) -> placement::Strategy {
        match self.strategy.as_deref() {
            Some("pack") => placement::Strategy::Pack,
            Some("balanced") => placement::Strategy::Balanced,
            _ => placement::Strategy::Spread,
        }
    }

    /// Fills the computed attributes from the first instance's `decision` and the placement
    /// it `chose`. `only` is the one endpoint read, if one; `assumed_network` the network
    /// asked for that no host has yet (`pending`).
    fn answer(
        &mut self,
        decision: &placement::Decision,
        chose: &placement::Placement,
        only: Option<&str>,
        assumed_network: Option<&str>,
        pending: Option<&NetworkRequirement>,
    ) {
        let (endpoint, host) = split(&chose.host, only);
        self.endpoint = Some(endpoint);
        self.host = Some(host);
        self.datastore = Some(split(&chose.datastore, only).1);
        self.network = chose
            .network
            .clone()
            .or_else(|| assumed_network.map(str::to_string));
        self.vgpu_profile = chose.vgpu_profile.clone();
        self.pci_devices = Some(chose.pci_devices.clone());
        self.hosts_total = Some(decision.hosts_total as i64);
        self.hosts_fit = Some(decision.hosts_fit as i64);
        self.summary = Some(match pending {
            Some(need) => format!(
                "{} ({} not found yet, not filtered on)",
                decision.summary,
                describe(need)
            ),
            None => decision.summary.clone(),
        });
        self.candidates = Some(
            decision
                .candidates
                .iter()
                .map(|c| candidate_model(c, only, assumed_network))
                .collect(),
        );
        self.rejected = Some(
            decision
                .rejected
                .iter()
                .map(|r| rejected_model(r, only))
                .collect(),
        );
    }
}

/// Reads the inventory of the endpoint named `endpoint`, or of every endpoint, all at once,
/// each with its endpoint's name; one failing fails the read, naming it.
async fn read_inventories(
    ctx: &Context,
    state: &ProviderState,
    endpoint: Option<&str>,
) -> Result<Vec<(String, PlacementInventory)>, Diagnostics> {
    let endpoints = &state.endpoints;
    let chosen: Vec<&Connection> = match endpoint {
        Some(name) => vec![endpoints.get(Some(name))?],
        None => endpoints.all().iter().collect(),
    };
    let reads = chosen.iter().map(|conn| read_inventory(ctx, conn));
    let mut parts = Vec::new();
    let mut diags = Diagnostics::new();
    for r in futures::future::join_all(reads).await {
        match r {
            Ok(p) => parts.push(p),
            Err(d) => diags.extend(d),
        }
    }
    if diags.has_errors() {
        return Err(diags);
    }
    Ok(parts)
}

/// One endpoint's inventory, with the endpoint's name.
async fn read_inventory(
    ctx: &Context,
    conn: &Connection,
) -> Result<(String, PlacementInventory), Diagnostics> {
    let client = connect(ctx, conn).await?;
    placement_inventory::fetch(&client, conn.name())
        .await
        .map(|inv| (conn.name().to_string(), inv))
        .map_err(|e| {
            error_diagnostics(
                &format!("read the inventory of endpoint {:?}", conn.name()),
                &e,
            )
        })
}

/// The VM names to place: `name`, or `NAME-0`, `NAME-1`, ... for several `instances`.
fn instance_names(name: &str, instances: Option<i64>) -> Vec<String> {
    let instances = instances.unwrap_or(1).max(1) as usize;
    if instances == 1 {
        vec![name.to_string()]
    } else {
        (0..instances).map(|i| format!("{name}-{i}")).collect()
    }
}

/// The engine's request for `m` over `merged`. A network no host has yet may be made by this
/// same apply: it is taken out of the request (returned) and warned about, not filtered on.
fn request_for(
    ctx: &Context,
    m: &PlacementState,
    merged: &placement::Fleet,
) -> Result<(placement::PlacementRequest, Option<NetworkRequirement>), Diagnostics> {
    let host_names: Vec<String> = merged.hosts.iter().map(|h| h.name.clone()).collect();
    let ds_names: Vec<String> = merged.datastores.iter().map(|d| d.name.clone()).collect();
    let mut request = m.request(&host_names, &ds_names)?;
    let pending_network = request
        .network
        .take_if(|need| !merged.hosts.iter().any(|h| has_network(h, need)));
    if let Some(need) = &pending_network {
        warn_network_pending(ctx, need);
    }
    Ok((request, pending_network))
}

/// Warns that no host has the network `need` asks for yet, so placement does not filter on it.
fn warn_network_pending(ctx: &Context, need: &NetworkRequirement) {
    let attr = match need {
        NetworkRequirement::Name(_) => "network",
        NetworkRequirement::Vlan(_) => "vlan_id",
    };
    ctx.warnings.attr_warning(
        AttrPath::attr(attr),
        "Network not found (yet)",
        format!("No host has {} yet, so this placement does not filter on it. That is expected when this configuration creates it (e.g. a ceso_vlan on the hosts that may be chosen); otherwise check the value. Once it exists, only hosts that have it are considered, which can change the answer: create it on every host that may be chosen, or refer to the resource that creates it (`network = ceso_vlan.x.name`), so that Terraform reads the placement after it exists.", describe(need)),
    );
}

/// Places `request` once per name in `names`, each seeing the ones before; with several
/// instances, every one must fit.
fn place_instances(
    merged: &placement::Fleet,
    request: &placement::PlacementRequest,
    names: &[String],
) -> Result<placement::BatchDecision, Diagnostics> {
    let requests: Vec<placement::PlacementRequest> = names
        .iter()
        .map(|n| placement::PlacementRequest {
            name: n.clone(),
            ..request.clone()
        })
        .collect();
    let batch = placement::place_batch(merged, &requests)
        .map_err(|e| Diagnostics::from_error("Invalid placement request", e.to_string()))?;
    if batch.placed < requests.len() && requests.len() > 1 {
        return Err(Diagnostics::from_error(
            "Not every instance fits",
            batch.summary.clone(),
        ));
    }
    Ok(batch)
}

/// One instance's placement as the `placements` list holds it (none when it did not fit).
fn placement_model(
    d: &placement::Decision,
    only: Option<&str>,
    assumed_network: Option<&str>,
) -> Option<PlacementModel> {
    let p = d.placement.as_ref()?;
    let (endpoint, host) = split(&p.host, only);
    Some(PlacementModel {
        name: d.request.clone(),
        host,
        endpoint,
        datastore: split(&p.datastore, only).1,
        network: p
            .network
            .clone()
            .or_else(|| assumed_network.map(str::to_string)),
        pci_devices: p.pci_devices.clone(),
        vgpu_profile: p.vgpu_profile.clone(),
    })
}

/// The first instance's decision.
fn first_decision(batch: placement::BatchDecision) -> Result<placement::Decision, Diagnostics> {
    batch
        .decisions
        .into_iter()
        .next()
        .ok_or_else(|| Diagnostics::from_error("Invalid placement request", "no request to place"))
}

/// The error for a decision placing nothing: its summary and every host's rejection.
fn no_host_fits(decision: &placement::Decision) -> Diagnostics {
    Diagnostics::from_error(
        "No host fits",
        format!(
            "{}\n{}",
            decision.summary,
            decision
                .rejected
                .iter()
                .map(|r| format!("- {}: {}", r.host, r.reason))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    )
}

/// A host that fits, as `candidates` lists it.
fn candidate_model(
    c: &placement::Candidate,
    only: Option<&str>,
    assumed_network: Option<&str>,
) -> CandidateModel {
    let (endpoint, host) = split(&c.host, only);
    CandidateModel {
        host,
        endpoint,
        cluster: c.cluster.clone(),
        datastore: split(&c.datastore, only).1,
        network: c
            .network
            .clone()
            .or_else(|| assumed_network.map(str::to_string)),
        score: c.score.total,
        cpu_score: c.score.cpu,
        memory_score: c.score.memory,
        balance_score: c.score.balance,
        datastore_score: c.score.datastore,
        gpu_score: c.score.gpu,
        cpu_mhz_free: c.headroom.cpu_mhz as i64,
        memory_mb_free: c.headroom.memory_mib as i64,
        disk_gb_free: c.headroom.disk_gib as i64,
    }
}

/// A host that does not fit, as `rejected` lists it.
fn rejected_model(r: &placement::Rejection, only: Option<&str>) -> RejectedModel {
    let (endpoint, host) = split(&r.host, only);
    RejectedModel {
        host,
        endpoint,
        filter: r.filter.name().to_string(),
        reason: r.reason.clone(),
    }
}

/// Rebalancing moves over `merged` within `request`'s over-commit ratios, when `enabled`.
fn recommendations(
    enabled: bool,
    merged: &placement::Fleet,
    request: &placement::PlacementRequest,
) -> Result<Vec<MoveModel>, Diagnostics> {
    if !enabled {
        return Ok(Vec::new());
    }
    let plan = placement::rebalance(
        merged,
        &placement::RebalanceOptions {
            cpu_overcommit: request.cpu_overcommit,
            memory_overcommit: request.memory_overcommit,
            ..Default::default()
        },
    )
    .map_err(|e| Diagnostics::from_error("Unable to compute recommendations", e.to_string()))?;
    Ok(plan.moves.iter().map(move_model).collect())
}

/// A rebalancing move, as `recommendations` lists it.
fn move_model(mv: &placement::Move) -> MoveModel {
    MoveModel {
        vm: mv.vm.clone(),
        from: mv.from.clone(),
        to: mv.to.clone(),
        priority: i64::from(mv.priority),
        reason: mv.reason.clone(),
        storage_move: mv.storage_move,
    }
}

/// Placement reads every endpoint (or the one `endpoint` names): it has no single scope.
impl Scoped for PlacementState {
    fn scope(&self) -> Option<&str> {
        None
    }
}

#[async_trait]
impl TypedDataSource for PlacementSource {
    type Model = PlacementState;
    type Connect = ProviderWide;
    const TYPE_NAME: &'static str = "ceso_placement";

    fn schema() -> Schema {
        let opt_list = |name: &str, what: &str| {
            Attribute::new(name, list_of(Type::String))
                .optional()
                .description(what)
        };
        Schema::new(
            Block::new()
                .description("Where a VM should go, and why: a dry run of placement over the hosts of every endpoint (or one), at plan time. Hosts are filtered by hard constraints (connection, maintenance, CPU, memory, GPUs, network, datastore, affinity), ranked by the strategy's scores, and the decision is explained. When no host fits, the plan fails with a summary such as \"0/8 hosts fit: 3 insufficient memory, 2 missing VLAN 120\".")
                .attribute(Attribute::string("endpoint").optional().computed().description("Only consider this endpoint's hosts. After read: the chosen host's endpoint."))
                .attribute(Attribute::string("name").required().description("The name of the VM to place (with `instances`, of each: `NAME-0`, `NAME-1`, ...). A VM of that name is left out of the inventory, so the answer stays the same once the VM exists; give the `ceso_vm` this name from the answer (`name = data.ceso_placement.x.name`, or `placements[i].name`) so the two cannot differ."))
                .attribute(Attribute::number("cpus").required().validate(int_between(1, 768)).description("vCPUs the VM needs."))
                .attribute(Attribute::number("memory_mb").required().validate(int_between(4, 24 * 1024 * 1024)).description("Memory in MiB."))
                .attribute(Attribute::number("disk_gb").optional().validate(int_between(0, 64 * 1024 * 1024)).description("Disk space in GiB on one datastore the host sees."))
                .attribute(Attribute::number("per_vcpu_mhz").optional().validate(int_between(1, 100_000)).description("MHz each vCPU is assumed to need. Default 1000."))
                .attribute(Attribute::number("gpus").optional().validate(int_between(0, 16)).description("Whole GPUs (PCI passthrough) the VM needs; the host must have that many free (passthrough active, held by no VM)."))
                .attribute(Attribute::string("gpu_model").optional().description("Case-insensitive part of the GPU's vendor or model name, e.g. `a100`."))
                .attribute(Attribute::string("vgpu_profile").optional().computed().description("A vGPU profile the host must have a free instance of, e.g. `grid_t4-4q` (instead of `gpus`)."))
                .attribute(Attribute::string("network").optional().computed().description("A port group the host must have. After read: the network chosen (also for `vlan_id`)."))
                .attribute(Attribute::number("vlan_id").optional().validate(int_between(1, 4094)).description("Any port group on this VLAN will do (instead of `network`)."))
                .attribute(Attribute::string("datastore").optional().computed().description("Use this datastore (the host must see it and it must have room); with several endpoints sharing datastore names write `ENDPOINT/NAME`. After read: the datastore chosen."))
                .attribute(Attribute::string("anti_affinity_group").optional().description("The VM must not share a host with VMs of this group (`ceso_vm`'s `anti_affinity_group`)."))
                .attribute(opt_list("avoid_vms", "VMs (by name) the VM must not share a host with."))
                .attribute(opt_list("affinity_vms", "VMs (by name) the VM must share a host with."))
                .attribute(opt_list("include_hosts", "Only these hosts (names; `ENDPOINT/NAME` when names repeat across endpoints)."))
                .attribute(opt_list("exclude_hosts", "Never these hosts."))
                .attribute(Attribute::string("strategy").optional().validate(one_of(&["spread", "pack", "balanced"])).description("`spread` (least allocated first, the default), `pack` (most allocated first) or `balanced` (CPU and memory use closest to each other)."))
                .attribute(Attribute::number("cpu_overcommit").optional().description("CPU over-commit ratio: a host offers capacity × ratio MHz. Default 4."))
                .attribute(Attribute::number("memory_overcommit").optional().description("Memory over-commit ratio. Default 1 (no over-commit)."))
                .attribute(Attribute::number("instances").optional().validate(int_between(1, 1000)).description("Place this many VMs like this one at once (for `count`): named `NAME-0`, `NAME-1`, ..., each placed seeing the ones before (so an `anti_affinity_group` spreads them). The answers are in `placements`; the other attributes describe the first."))
                .attribute(Attribute::new("placements", list_of(placement_type())).computed().description("One placement per instance: `name`, `host`, `endpoint`, `datastore`, `network`, `pci_devices`, `vgpu_profile`."))
                .attribute(Attribute::bool("recommendations_enabled").optional().description("Also compute rebalancing recommendations (VM moves that even out host load) in `recommendations`."))
                .attribute(Attribute::string("host").computed().description("The chosen host's name (as `ceso_vm.host` takes it)."))
                .attribute(Attribute::new("pci_devices", list_of(Type::String)).computed().description("PCI addresses of the GPUs to pass through, for a `gpus` request (as `ceso_vm`'s `pci_device.address`)."))
                .attribute(Attribute::number("hosts_total").computed().description("Hosts considered."))
                .attribute(Attribute::number("hosts_fit").computed().description("Hosts that fit."))
                .attribute(Attribute::string("summary").computed().description("One line: how many hosts fit and why the others do not."))
                .attribute(Attribute::new("candidates", list_of(candidate_type())).computed().description("Hosts that fit, best first (up to 10): `host`, `endpoint`, `cluster`, `datastore`, `network`, `score` (0-100) and its parts (`cpu_score`, `memory_score`, `balance_score`, `datastore_score`, `gpu_score`), and what is left after placement (`cpu_mhz_free`, `memory_mb_free`, `disk_gb_free`)."))
                .attribute(Attribute::new("rejected", list_of(rejected_type())).computed().description("Every host that does not fit: `host`, `endpoint`, `filter` (the constraint) and `reason` with numbers."))
                .attribute(Attribute::new("recommendations", list_of(move_type())).computed().description("With `recommendations_enabled`: moves that lower the spread of host load (`vm`, `from`, `to`, `priority` 1-5, `reason`, `storage_move`).")),
        )
    }

    async fn read(
        &self,
        call: &Call<'_, Arc<ProviderState>>,
        mut m: PlacementState,
    ) -> Result<PlacementState, Diagnostics> {
        let ctx = call.ctx;
        let mut parts = read_inventories(ctx, &call.conn, m.endpoint.as_deref()).await?;
        let only = (parts.len() == 1).then(|| parts[0].0.clone());
        let only = only.as_deref();
        let names = instance_names(&m.name, m.instances);
        for (_, part) in parts.iter_mut() {
            for n in &names {
                part.forget(n);
            }
        }
        let merged = merge(parts);
        let (request, pending_network) = request_for(ctx, &m, &merged)?;
        // The network the VM is to use, when the placement did not choose one.
        let assumed_network = match &pending_network {
            Some(NetworkRequirement::Name(n)) => Some(n.as_str()),
            _ => None,
        };
        let batch = place_instances(&merged, &request, &names)?;
        m.placements = Some(
            batch
                .decisions
                .iter()
                .filter_map(|d| placement_model(d, only, assumed_network))
                .collect(),
        );
        let decision = first_decision(batch)?;
        let Some(chose) = decision.placement.as_ref() else {
            return Err(no_host_fits(&decision));
        };
        m.answer(
            &decision,
            chose,
            only,
            assumed_network,
            pending_network.as_ref(),
        );
        m.recommendations = Some(recommendations(
            m.recommendations_enabled.unwrap_or(false),
            &merged,
            &request,
        )?);
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualifies_bare_names_across_endpoints() {
        let known = vec![
            "esx1/localhost".to_string(),
            "esx2/localhost".to_string(),
            "big".to_string(),
        ];
        assert_eq!(qualify("big", &known), vec!["big".to_string()]);
        assert_eq!(qualify("localhost", &known).len(), 2);
        assert!(qualify("nope", &known).is_empty());
        assert_eq!(
            split("esx2/localhost", None),
            ("esx2".into(), "localhost".into())
        );
        assert_eq!(split("host-a", Some("vc")), ("vc".into(), "host-a".into()));
    }
}
