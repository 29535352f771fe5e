//! Hard constraints: whether a host can take the VM at all, and if not, the first filter it
//! fails with a reason that carries the numbers.
//!
//! Filters run in the order of [`Filter::ALL`]: what the user asked for (host lists), the
//! host's state, its networks and GPUs, the resources, and last the rules about other VMs
//! (anti-affinity, VMs to avoid, affinity): they are the only filters that read the host's
//! VMs, so running them last reads the VMs of the hosts that passed everything else only.
//! A request is resolved once against the index (`Resolved`: names to ids, host lists to a
//! per-host mark), so checking a host reads integers and short slices and allocates nothing;
//! the host that fits comes back as a `Fit` with its chosen datastore, network, headroom and
//! scores.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::index::{FxMap, Index, ListedVm, ScannedVm, TabledVm, NONE};
use super::model::{
    allocatable, ConnectionState, DatastorePreference, Headroom, NetworkRequirement,
    PlacementRequest,
};
use super::score::{score, share, After, ScoreBreakdown};

/// A hard constraint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    /// `include_hosts` / `exclude_hosts`.
    HostList,
    /// The host is disconnected or not responding.
    Connection,
    /// The host is in maintenance mode.
    Maintenance,
    /// The host lacks the network or VLAN.
    Network,
    /// The host lacks free GPUs (of the model) or vGPU instances (of the profile).
    Gpu,
    /// Not enough allocatable CPU left.
    Cpu,
    /// Not enough allocatable memory left.
    Memory,
    /// No datastore the host sees has room (or the named one is unusable).
    Datastore,
    /// The host runs a member of the request's anti-affinity group, or a VM to avoid.
    AntiAffinity,
    /// The host does not run a VM the request must run with.
    Affinity,
}

impl Filter {
    /// Every filter, in the order they run.
    pub const ALL: [Filter; 10] = [
        Filter::HostList,
        Filter::Connection,
        Filter::Maintenance,
        Filter::Network,
        Filter::Gpu,
        Filter::Cpu,
        Filter::Memory,
        Filter::Datastore,
        Filter::AntiAffinity,
        Filter::Affinity,
    ];

    /// The filter's name as serialised.
    pub fn name(self) -> &'static str {
        match self {
            Filter::HostList => "host_list",
            Filter::Connection => "connection",
            Filter::Maintenance => "maintenance",
            Filter::Network => "network",
            Filter::Gpu => "gpu",
            Filter::Cpu => "cpu",
            Filter::Memory => "memory",
            Filter::Datastore => "datastore",
            Filter::AntiAffinity => "anti_affinity",
            Filter::Affinity => "affinity",
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const LISTED: u8 = 0;
const EXCLUDED: u8 = 1;
const NOT_INCLUDED: u8 = 2;

#[derive(Debug)]
enum NetNeed<'r> {
    Any,
    Name(&'r str),
    Vlan(u16),
}

#[derive(Debug)]
enum DsNeed {
    MostFree,
    /// Datastore id, `None` when the inventory has no such datastore.
    Named(Option<u32>),
}

#[derive(Debug)]
pub(crate) enum GpuNeed<'r> {
    None,
    Passthrough {
        count: u32,
        /// Lower-cased model substring.
        model: Option<String>,
    },
    Vgpu {
        profile: &'r str,
        count: u32,
    },
}

/// The most VMs a request may name in `affinity_vms` (one bit each per host).
pub const MAX_AFFINITY_VMS: usize = 64;

/// How a VM relates to a request.
#[derive(Clone, Copy, Debug, Default)]
struct VmMatch {
    /// In the request's anti-affinity group.
    in_group: bool,
    /// Named in `avoid_vms`.
    avoided: bool,
    /// Bit `i` set when named `affinity_vms[i]`.
    affinity: u64,
}

/// Compares VMs with what a request names; long name lists go through a set.
#[derive(Debug)]
struct VmMatcher<'r> {
    req: &'r PlacementRequest,
    avoid_set: FxMap<&'r str, ()>,
    affinity_set: FxMap<&'r str, ()>,
}

impl<'r> VmMatcher<'r> {
    fn new(req: &'r PlacementRequest) -> Self {
        let set = |names: &'r [String]| -> FxMap<&'r str, ()> {
            if names.len() > 8 {
                names.iter().map(|n| (n.as_str(), ())).collect()
            } else {
                FxMap::default()
            }
        };
        VmMatcher {
            req,
            avoid_set: set(&req.avoid_vms),
            affinity_set: set(&req.affinity_vms),
        }
    }

    #[inline]
    fn classify<'x>(&self, vm: &impl ScannedVm<'x>) -> VmMatch {
        let req = self.req;
        let mut m = VmMatch::default();
        if let Some(group) = &req.anti_affinity_group {
            m.in_group = vm.in_group(group);
        }
        if !req.avoid_vms.is_empty() {
            let name = vm.name();
            m.avoided = if self.avoid_set.is_empty() {
                req.avoid_vms.iter().any(|v| v == name)
            } else {
                self.avoid_set.contains_key(name)
            };
        }
        if !req.affinity_vms.is_empty() {
            let name = vm.name();
            if self.affinity_set.is_empty() || self.affinity_set.contains_key(name) {
                for (k, v) in req.affinity_vms.iter().enumerate() {
                    if v == name {
                        m.affinity |= 1 << k;
                    }
                }
            }
        }
        m
    }
}

/// What the VM rules found on one host.
#[derive(Clone, Copy, Debug, Default)]
struct HostMarks<'x> {
    /// The group member it runs, first by name.
    anti: Option<&'x str>,
    /// The VM to avoid it runs, first by name.
    avoid: Option<&'x str>,
    /// Bit `i` set when it runs a VM named `affinity_vms[i]`.
    affinity: u64,
}

/// Keeps the name that sorts first in `slot`.
fn keep_first<'x>(slot: &mut Option<&'x str>, name: &'x str) {
    if slot.is_none_or(|current| name < current) {
        *slot = Some(name);
    }
}

impl VmMatch {
    fn any(&self) -> bool {
        self.in_group || self.avoided || self.affinity != 0
    }
}

impl<'x> HostMarks<'x> {
    fn add(&mut self, vm: &impl ScannedVm<'x>, m: VmMatch) {
        if m.in_group {
            keep_first(&mut self.anti, vm.name());
        }
        if m.avoided {
            keep_first(&mut self.avoid, vm.name());
        }
        self.affinity |= m.affinity;
    }
}

/// How the VM rules learn what hosts run.
#[derive(Debug)]
enum VmRules<'x> {
    /// The request names no group and no VMs.
    None,
    /// Read a host's own VMs when it reaches these filters: no VM table (so no VMs added by
    /// commits), and no affinity (whose reasons need to know where the VM runs).
    PerHost,
    /// From one scan of every VM, per host, plus the first host running each affinity VM.
    Scanned {
        hosts: Vec<HostMarks<'x>>,
        affinity_first: Vec<u32>,
    },
}

/// A request resolved against an index: what each filter compares with.
#[derive(Debug)]
pub(crate) struct Resolved<'r, 'x> {
    pub req: &'r PlacementRequest,
    pub cpu_need: u64,
    pub mem_need: u64,
    /// Per host `LISTED`, `EXCLUDED` or `NOT_INCLUDED`; empty without host lists.
    host_list: Vec<u8>,
    network: NetNeed<'r>,
    datastore: DsNeed,
    pub gpu: GpuNeed<'r>,
    matcher: VmMatcher<'r>,
    vm_rules: VmRules<'x>,
}

impl<'r, 'x> Resolved<'r, 'x> {
    pub fn new(ix: &'x Index<'_>, req: &'r PlacementRequest) -> Self {
        let n = ix.hosts.len();
        let mut host_list = Vec::new();
        if !req.include_hosts.is_empty() || !req.exclude_hosts.is_empty() {
            let fill = if req.include_hosts.is_empty() {
                LISTED
            } else {
                NOT_INCLUDED
            };
            host_list = vec![fill; n];
            for name in &req.include_hosts {
                if let Some(&h) = ix.host_by_name.get(name.as_str()) {
                    host_list[h as usize] = LISTED;
                }
            }
            for name in &req.exclude_hosts {
                if let Some(&h) = ix.host_by_name.get(name.as_str()) {
                    host_list[h as usize] = EXCLUDED;
                }
            }
        }

        let matcher = VmMatcher::new(req);
        let names_vms = req.anti_affinity_group.is_some()
            || !req.avoid_vms.is_empty()
            || !req.affinity_vms.is_empty();
        let vm_rules = if !names_vms {
            VmRules::None
        } else if req.affinity_vms.is_empty() && ix.vm_table().is_none() {
            VmRules::PerHost
        } else {
            let mut hosts = vec![HostMarks::default(); n];
            match ix.vm_table() {
                Some(table) => {
                    for row in &table.rows {
                        let vm = TabledVm { table, row };
                        let m = matcher.classify(&vm);
                        if m.any() {
                            hosts[row.host as usize].add(&vm, m);
                        }
                    }
                }
                None => {
                    for (h, host) in ix.hosts.iter().enumerate() {
                        for vm in &host.vms {
                            let vm = ListedVm { vm };
                            let m = matcher.classify(&vm);
                            if m.any() {
                                hosts[h].add(&vm, m);
                            }
                        }
                    }
                }
            }
            let affinity_first = (0..req.affinity_vms.len())
                .map(|k| {
                    hosts
                        .iter()
                        .position(|m| m.affinity & (1 << k) != 0)
                        .map_or(NONE, |h| h as u32)
                })
                .collect();
            VmRules::Scanned {
                hosts,
                affinity_first,
            }
        };

        let network = match &req.network {
            None => NetNeed::Any,
            Some(NetworkRequirement::Name(name)) => NetNeed::Name(name),
            Some(NetworkRequirement::Vlan(id)) => NetNeed::Vlan(*id),
        };
        let datastore = match &req.datastore {
            DatastorePreference::MostFree => DsNeed::MostFree,
            DatastorePreference::Named(name) => {
                DsNeed::Named(ix.ds_by_name.get(name.as_str()).copied())
            }
        };
        let gpu = match &req.gpu {
            None => GpuNeed::None,
            Some(g) => match &g.vgpu_profile {
                Some(profile) => GpuNeed::Vgpu {
                    profile,
                    count: g.count,
                },
                None => GpuNeed::Passthrough {
                    count: g.count,
                    model: g.model.as_ref().map(|m| m.to_lowercase()),
                },
            },
        };
        Resolved {
            req,
            cpu_need: req.required_cpu_mhz(),
            mem_need: req.memory_mib,
            host_list,
            network,
            datastore,
            gpu,
            matcher,
            vm_rules,
        }
    }

    /// What the VM rules find on host `h`.
    fn marks(&self, ix: &'x Index<'_>, h: u32) -> HostMarks<'x> {
        match &self.vm_rules {
            VmRules::None => HostMarks::default(),
            VmRules::Scanned { hosts, .. } => hosts[h as usize],
            VmRules::PerHost => {
                let mut marks = HostMarks::default();
                for vm in &ix.hosts[h as usize].vms {
                    let vm = ListedVm { vm };
                    let m = self.matcher.classify(&vm);
                    marks.add(&vm, m);
                }
                marks
            }
        }
    }

    /// The first host (by name) running a VM named `affinity_vms[index]`, or `NONE`.
    fn affinity_first(&self, index: usize) -> u32 {
        match &self.vm_rules {
            VmRules::Scanned { affinity_first, .. } => affinity_first[index],
            _ => NONE,
        }
    }
}

/// A host that fits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fit {
    pub host: u32,
    pub datastore: u32,
    /// Index into `host_nets.items`, when the request names a network.
    pub network: Option<u32>,
    pub headroom: Headroom,
    pub score: ScoreBreakdown,
}

/// Why a host does not fit; numbers only, turned into words by [`Failure::reason`] only for
/// the hosts reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    Excluded,
    NotIncluded,
    Disconnected,
    NotResponding,
    Maintenance,
    NoNetwork,
    NoVlan,
    Gpu { have: u32 },
    Cpu { free: u64, alloc: u64 },
    Memory { free: u64, alloc: u64 },
    DatastoreUnknown,
    DatastoreNotSeen,
    DatastoreInaccessible,
    DatastoreFull { free: u64 },
    NoDatastore { best: Option<u64> },
    AntiAffinity,
    Avoid,
    Affinity { index: u32 },
}

impl Failure {
    pub fn filter(self) -> Filter {
        match self {
            Failure::Excluded | Failure::NotIncluded => Filter::HostList,
            Failure::Disconnected | Failure::NotResponding => Filter::Connection,
            Failure::Maintenance => Filter::Maintenance,
            Failure::AntiAffinity | Failure::Avoid => Filter::AntiAffinity,
            Failure::Affinity { .. } => Filter::Affinity,
            Failure::NoNetwork | Failure::NoVlan => Filter::Network,
            Failure::Gpu { .. } => Filter::Gpu,
            Failure::Cpu { .. } => Filter::Cpu,
            Failure::Memory { .. } => Filter::Memory,
            Failure::DatastoreUnknown
            | Failure::DatastoreNotSeen
            | Failure::DatastoreInaccessible
            | Failure::DatastoreFull { .. }
            | Failure::NoDatastore { .. } => Filter::Datastore,
        }
    }

    /// Failures that share a key share a summary label.
    pub fn summary_key(self) -> (u8, u32) {
        let kind = match self {
            Failure::Excluded => 0,
            Failure::NotIncluded => 1,
            Failure::Disconnected => 2,
            Failure::NotResponding => 3,
            Failure::Maintenance => 4,
            Failure::NoNetwork => 5,
            Failure::NoVlan => 6,
            Failure::Gpu { .. } => 7,
            Failure::Cpu { .. } => 8,
            Failure::Memory { .. } => 9,
            Failure::DatastoreUnknown => 10,
            Failure::DatastoreNotSeen => 11,
            Failure::DatastoreInaccessible => 12,
            Failure::DatastoreFull { .. } => 13,
            Failure::NoDatastore { .. } => 14,
            Failure::AntiAffinity => 15,
            Failure::Avoid => 16,
            Failure::Affinity { index } => return (17, index),
        };
        (kind, 0)
    }

    /// A short label for the summary line, said of hosts: "2 in maintenance".
    pub fn label(self, r: &Resolved<'_, '_>) -> String {
        let req = r.req;
        match self {
            Failure::Excluded => "excluded".into(),
            Failure::NotIncluded => "not in include_hosts".into(),
            Failure::Disconnected => "disconnected".into(),
            Failure::NotResponding => "not responding".into(),
            Failure::Maintenance => "in maintenance".into(),
            Failure::AntiAffinity => format!(
                "already run group {}",
                req.anti_affinity_group.as_deref().unwrap_or_default()
            ),
            Failure::Avoid => "run a VM to avoid".into(),
            Failure::Affinity { index, .. } => {
                format!("do not run {}", req.affinity_vms[index as usize])
            }
            Failure::NoNetwork => format!("missing network {}", network_name(req)),
            Failure::NoVlan => format!("missing VLAN {}", network_name(req)),
            Failure::Gpu { .. } => match &r.gpu {
                GpuNeed::Vgpu { profile, .. } => format!("not enough {profile} vGPUs"),
                GpuNeed::Passthrough {
                    model: Some(model), ..
                } => format!("not enough free {model} GPUs"),
                _ => "not enough free GPUs".into(),
            },
            Failure::Cpu { .. } => "insufficient CPU".into(),
            Failure::Memory { .. } => "insufficient memory".into(),
            Failure::DatastoreUnknown => {
                format!("datastore {} not in inventory", datastore_name(req))
            }
            Failure::DatastoreNotSeen => format!("do not see datastore {}", datastore_name(req)),
            Failure::DatastoreInaccessible => {
                format!("datastore {} inaccessible", datastore_name(req))
            }
            Failure::DatastoreFull { .. } => {
                format!("not enough room on {}", datastore_name(req))
            }
            Failure::NoDatastore { .. } => "no datastore with room".into(),
        }
    }

    /// The reason reported for one host, with numbers.
    pub fn reason<'x>(self, ix: &'x Index<'_>, r: &Resolved<'_, 'x>, h: u32) -> String {
        let req = r.req;
        let host = ix.hosts[h as usize];
        match self {
            Failure::Excluded => "listed in exclude_hosts".into(),
            Failure::NotIncluded => "not listed in include_hosts".into(),
            Failure::Disconnected => "host is disconnected".into(),
            Failure::NotResponding => "host is not responding".into(),
            Failure::Maintenance => "host is in maintenance mode".into(),
            Failure::AntiAffinity => format!(
                "runs {}, a member of anti-affinity group {}",
                r.marks(ix, h).anti.unwrap_or_default(),
                req.anti_affinity_group.as_deref().unwrap_or_default()
            ),
            Failure::Avoid => format!(
                "runs {}, which this VM must avoid",
                r.marks(ix, h).avoid.unwrap_or_default()
            ),
            Failure::Affinity { index } => {
                let name = &req.affinity_vms[index as usize];
                let elsewhere = r.affinity_first(index as usize);
                if elsewhere == NONE {
                    format!("does not run {name}: no VM of that name in the inventory")
                } else {
                    format!(
                        "does not run {name}, which runs on {}",
                        ix.hosts[elsewhere as usize].name
                    )
                }
            }
            Failure::NoNetwork => format!("has no network named {}", network_name(req)),
            Failure::NoVlan => format!("has no port group on VLAN {}", network_name(req)),
            Failure::Gpu { have } => match &r.gpu {
                GpuNeed::Vgpu { profile, count } => {
                    format!("needs {count} vGPU of profile {profile}, has {have} free")
                }
                GpuNeed::Passthrough { count, model } => {
                    let model = model
                        .as_deref()
                        .map(|m| format!(" matching {m:?}"))
                        .unwrap_or_default();
                    format!("needs {count} free GPU{model}, has {have}")
                }
                GpuNeed::None => String::new(),
            },
            Failure::Cpu { free, alloc } => format!(
                "needs {} MHz ({} vCPU × {} MHz), has {free} free of {alloc} ({} MHz × {})",
                r.cpu_need, req.cpus, req.per_vcpu_mhz, host.cpu_mhz_capacity, req.cpu_overcommit
            ),
            Failure::Memory { free, alloc } => format!(
                "needs {} MiB, has {free} free of {alloc} ({} MiB × {})",
                r.mem_need, host.memory_mib_capacity, req.memory_overcommit
            ),
            Failure::DatastoreUnknown => {
                format!("datastore {} is not in the inventory", datastore_name(req))
            }
            Failure::DatastoreNotSeen => {
                format!("does not see datastore {}", datastore_name(req))
            }
            Failure::DatastoreInaccessible => {
                format!("datastore {} is inaccessible", datastore_name(req))
            }
            Failure::DatastoreFull { free } => format!(
                "needs {} GiB on {}, has {free} free",
                req.disk_gib,
                datastore_name(req)
            ),
            Failure::NoDatastore { best: None } => "sees no accessible datastore".into(),
            Failure::NoDatastore { best: Some(best) } => format!(
                "needs {} GiB, the most any datastore it sees has free is {best}",
                req.disk_gib
            ),
        }
    }
}

fn network_name(req: &PlacementRequest) -> String {
    match &req.network {
        Some(NetworkRequirement::Name(name)) => name.clone(),
        Some(NetworkRequirement::Vlan(id)) => id.to_string(),
        None => String::new(),
    }
}

fn datastore_name(req: &PlacementRequest) -> &str {
    match &req.datastore {
        DatastorePreference::Named(name) => name,
        DatastorePreference::MostFree => "",
    }
}

/// The low `len` bits set.
fn affinity_mask(len: usize) -> u64 {
    if len >= 64 {
        u64::MAX
    } else {
        (1u64 << len) - 1
    }
}

/// Free GPUs of host `h` matching a lower-cased model substring, in PCI id order.
pub(crate) fn free_gpus<'i>(
    ix: &'i Index<'_>,
    h: u32,
    model: Option<&'i str>,
) -> impl Iterator<Item = usize> + 'i {
    ix.host_gpus.range(h).filter(move |&i| {
        !ix.gpu_taken[i] && model.is_none_or(|m| ix.host_gpus.items[i].search.contains(m))
    })
}

/// The vGPU profile entry of host `h` named `profile`.
pub(crate) fn vgpu_entry(ix: &Index<'_>, h: u32, profile: &str) -> Option<usize> {
    ix.host_vgpus
        .range(h)
        .find(|&i| ix.host_vgpus.items[i].name == profile)
}

/// Runs every filter on host `h`; on success chooses the datastore and network and scores.
pub(crate) fn check<'x>(ix: &'x Index<'_>, r: &Resolved<'_, 'x>, h: u32) -> Result<Fit, Failure> {
    let hu = h as usize;
    let host = ix.hosts[hu];
    let req = r.req;

    if !r.host_list.is_empty() {
        match r.host_list[hu] {
            EXCLUDED => return Err(Failure::Excluded),
            NOT_INCLUDED => return Err(Failure::NotIncluded),
            _ => {}
        }
    }
    match host.connection_state {
        ConnectionState::Connected => {}
        ConnectionState::Disconnected => return Err(Failure::Disconnected),
        ConnectionState::NotResponding => return Err(Failure::NotResponding),
    }
    if host.maintenance_mode {
        return Err(Failure::Maintenance);
    }

    let nets = ix.host_nets.range(h);
    let items = &ix.host_nets.items;
    let network = match r.network {
        NetNeed::Any => None,
        NetNeed::Name(name) => match nets.clone().find(|&i| items[i].name == name) {
            Some(i) => Some(i as u32),
            None => return Err(Failure::NoNetwork),
        },
        NetNeed::Vlan(vlan) => {
            // The first port group on the VLAN by name, whatever order the host lists them in.
            let on_vlan = nets.clone().filter(|&i| items[i].vlan_id == Some(vlan));
            match on_vlan.min_by(|&a, &b| items[a].name.cmp(&items[b].name)) {
                Some(i) => Some(i as u32),
                None => return Err(Failure::NoVlan),
            }
        }
    };

    let wastes_gpu = match &r.gpu {
        GpuNeed::None => ix.has_free_gpu(h),
        GpuNeed::Passthrough { count, model } => {
            let have = free_gpus(ix, h, model.as_deref()).count() as u32;
            if have < *count {
                return Err(Failure::Gpu { have });
            }
            false
        }
        GpuNeed::Vgpu { profile, count } => {
            let have = vgpu_entry(ix, h, profile).map_or(0, |i| ix.vgpu_free[i]);
            if have < *count {
                return Err(Failure::Gpu { have });
            }
            false
        }
    };

    let cpu_alloc = allocatable(host.cpu_mhz_capacity, req.cpu_overcommit);
    let cpu_free = cpu_alloc.saturating_sub(ix.cpu_used[hu]);
    if r.cpu_need > cpu_free {
        return Err(Failure::Cpu {
            free: cpu_free,
            alloc: cpu_alloc,
        });
    }
    let mem_alloc = allocatable(host.memory_mib_capacity, req.memory_overcommit);
    let mem_free = mem_alloc.saturating_sub(ix.mem_used[hu]);
    if r.mem_need > mem_free {
        return Err(Failure::Memory {
            free: mem_free,
            alloc: mem_alloc,
        });
    }

    let disk = req.disk_gib;
    let seen = ix.host_ds.row(h);
    let (datastore, ds_free_after) = match r.datastore {
        DsNeed::Named(None) => return Err(Failure::DatastoreUnknown),
        DsNeed::Named(Some(d)) => {
            if !seen.contains(&d) {
                return Err(Failure::DatastoreNotSeen);
            }
            if !ix.datastores[d as usize].accessible {
                return Err(Failure::DatastoreInaccessible);
            }
            let free = ix.ds_free[d as usize];
            if free < disk {
                return Err(Failure::DatastoreFull { free });
            }
            (
                d,
                share(free - disk, ix.datastores[d as usize].capacity_gib),
            )
        }
        DsNeed::MostFree => {
            let mut best: Option<(u32, f64, u64)> = None;
            let mut most_free: Option<u64> = None;
            for &d in seen {
                let ds = ix.datastores[d as usize];
                if !ds.accessible {
                    continue;
                }
                let free = ix.ds_free[d as usize];
                most_free = Some(most_free.map_or(free, |m| m.max(free)));
                if free < disk {
                    continue;
                }
                let after = share(free - disk, ds.capacity_gib);
                let better = match best {
                    None => true,
                    Some((_, b_after, b_free)) => {
                        after > b_after || (after == b_after && free > b_free)
                    }
                };
                if better {
                    best = Some((d, after, free));
                }
            }
            match best {
                Some((d, after, _)) => (d, after),
                None => return Err(Failure::NoDatastore { best: most_free }),
            }
        }
    };

    let marks = r.marks(ix, h);
    if marks.anti.is_some() {
        return Err(Failure::AntiAffinity);
    }
    if marks.avoid.is_some() {
        return Err(Failure::Avoid);
    }
    let missing = !marks.affinity & affinity_mask(req.affinity_vms.len());
    if missing != 0 {
        return Err(Failure::Affinity {
            index: missing.trailing_zeros(),
        });
    }

    let cpu_after = ix.cpu_used[hu] + r.cpu_need;
    let mem_after = ix.mem_used[hu] + r.mem_need;
    let after = After {
        cpu_util: share(cpu_after, cpu_alloc),
        memory_util: share(mem_after, mem_alloc),
        datastore_free: ds_free_after,
        wastes_gpu,
    };
    Ok(Fit {
        host: h,
        datastore,
        network,
        headroom: Headroom {
            cpu_mhz: cpu_free - r.cpu_need,
            memory_mib: mem_free - r.mem_need,
            disk_gib: ix.ds_free[datastore as usize] - disk,
        },
        score: score(req.strategy, &after),
    })
}
