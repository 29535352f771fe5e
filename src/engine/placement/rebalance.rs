//! Rebalancing, DRS-style: a bounded list of VM moves that lowers the spread of host load,
//! chosen greedily (each move the one that lowers it most), never breaking a hard constraint.
//!
//! A host's load is the mean of its CPU and memory utilisation against physical capacity.
//! Moves stay inside a cluster, so imbalance is measured per cluster, as DRS does: the
//! population standard deviation of load over the cluster's hosts that can run VMs
//! (connected, not in maintenance). A move reports its cluster's imbalance before and after;
//! the plan reports the pooled figure over all clusters (the standard deviation of each
//! host's load from its own cluster's mean, which is the plain one for a single cluster).
//!
//! A target must take the VM under the over-commit ratios, have all its networks, see its
//! datastore (or offer another with room, which makes the move a storage move too) and run
//! no other member of its anti-affinity groups. Pinned VMs never move, and no VM moves twice.
//!
//! Two phases: first, VMs sharing a host with another member of an anti-affinity group move
//! away (priority 1, like DRS's rule-driven moves, even if that raises the imbalance); then
//! load moves, each the one that lowers its cluster's imbalance most, while that is at least
//! `min_improvement`, with priority 2–5 from the share of the imbalance the move removes.
//! Each step looks at the 16 hosts furthest above their cluster's mean and, per VM, the 16
//! least loaded hosts that can take it, which keeps a step cheap on large inventories.

use serde::{Deserialize, Serialize};

use super::error::Error;
use super::index::{FxMap, Index};
use super::model::{allocatable, ConnectionState, Fleet, Vm};
use super::score::share;

/// Hosts above the mean that a step looks at, most loaded first.
const SOURCE_HOSTS: usize = 16;
/// Feasible targets a step evaluates per VM, least loaded first.
const TARGETS_PER_VM: usize = 16;

/// How far rebalancing may go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RebalanceOptions {
    /// At most this many moves (default 10).
    pub max_moves: usize,
    /// CPU over-commit ratio a target must stay within (default 4).
    pub cpu_overcommit: f64,
    /// Memory over-commit ratio a target must stay within (default 1).
    pub memory_overcommit: f64,
    /// A load move must lower the imbalance by at least this much (default 0.001).
    pub min_improvement: f64,
}

impl Default for RebalanceOptions {
    fn default() -> Self {
        Self {
            max_moves: 10,
            cpu_overcommit: super::model::DEFAULT_CPU_OVERCOMMIT,
            memory_overcommit: super::model::DEFAULT_MEMORY_OVERCOMMIT,
            min_improvement: 0.001,
        }
    }
}

/// One recommended migration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Move {
    /// VM name.
    pub vm: String,
    /// The cluster it moves within.
    pub cluster: String,
    /// Host it leaves.
    pub from: String,
    /// Host it goes to.
    pub to: String,
    /// Datastore its disks end up on (none when the VM's datastore is unknown).
    pub datastore: Option<String>,
    /// Whether the disks move too (the target does not see the VM's datastore).
    pub storage_move: bool,
    /// 1 (fixes a rule violation) to 5 (small gain), as DRS ranks recommendations.
    pub priority: u8,
    /// Why, with numbers.
    pub reason: String,
    /// Its cluster's imbalance before this move.
    pub imbalance_before: f64,
    /// Its cluster's imbalance after it.
    pub imbalance_after: f64,
    /// The VM's disk size in bytes.
    pub bytes_to_move: u64,
}

/// A host's load before and after the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostLoad {
    /// Host name.
    pub host: String,
    /// Mean of CPU and memory utilisation before the moves, 0–1 (more when over-committed).
    pub before: f64,
    /// The same after the moves.
    pub after: f64,
}

/// The recommended moves, in the order to run them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RebalancePlan {
    /// Moves, in order; each one's imbalance figures assume the ones before it ran.
    pub moves: Vec<Move>,
    /// Pooled standard deviation of host load from each cluster's mean, now.
    pub imbalance_before: f64,
    /// The same after every move.
    pub imbalance_after: f64,
    /// Load of every host that can run VMs, by name.
    pub hosts: Vec<HostLoad>,
    /// Anti-affinity violations no move could fix.
    pub unresolved: Vec<String>,
    /// One line: "3 moves take the imbalance from 0.180 to 0.050 over 12 hosts".
    pub summary: String,
}

/// Recommends moves that lower the spread of host load.
pub fn rebalance(inventory: &Fleet, options: &RebalanceOptions) -> Result<RebalancePlan, Error> {
    for (field, value) in [
        ("cpu_overcommit", options.cpu_overcommit),
        ("memory_overcommit", options.memory_overcommit),
    ] {
        if !(value.is_finite() && value > 0.0) {
            return Err(Error::InvalidOptions {
                field,
                reason: "must be a positive number".into(),
            });
        }
    }
    if !(options.min_improvement.is_finite() && options.min_improvement >= 0.0) {
        return Err(Error::InvalidOptions {
            field: "min_improvement",
            reason: "must be zero or a positive number".into(),
        });
    }
    let ix = Index::new(inventory)?;
    let mut state = State::new(&ix, inventory, options);
    let before: Vec<f64> = (0..state.n).map(|h| state.load(h)).collect();
    let imbalance_before = state.imbalance();
    let mut moves = Vec::new();
    let mut unresolved = Vec::new();

    state.fix_anti_affinity(&mut moves, &mut unresolved);
    while moves.len() < options.max_moves {
        match state.best_load_move() {
            Some(m) => moves.push(state.apply(m, None)),
            None => break,
        }
    }

    let imbalance_after = state.imbalance();
    let hosts = (0..state.n)
        .filter(|&h| state.eligible[h])
        .map(|h| HostLoad {
            host: ix.hosts[h].name.clone(),
            before: before[h],
            after: state.load(h),
        })
        .collect::<Vec<_>>();
    let summary = if moves.is_empty() {
        format!(
            "no move lowers the imbalance ({imbalance_before:.3} over {} hosts) by {} or more",
            hosts.len(),
            options.min_improvement
        )
    } else {
        let fixes = moves.iter().filter(|m| m.priority == 1).count();
        let mut line = format!(
            "{} {} the imbalance from {imbalance_before:.3} to {imbalance_after:.3} over {} hosts",
            moves.len(),
            if moves.len() == 1 {
                "move takes"
            } else {
                "moves take"
            },
            hosts.len()
        );
        if fixes > 0 {
            line.push_str(&format!(
                "; {fixes} fix{} anti-affinity",
                if fixes == 1 { "es" } else { "" }
            ));
        }
        line
    };
    Ok(RebalancePlan {
        moves,
        imbalance_before,
        imbalance_after,
        hosts,
        unresolved,
        summary,
    })
}

/// A move under consideration.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    vm: usize,
    to: usize,
    datastore: Option<u32>,
    storage_move: bool,
    /// The cluster's imbalance before and after.
    imbalance_before: f64,
    imbalance_after: f64,
}

impl Candidate {
    fn gain(&self) -> f64 {
        self.imbalance_before - self.imbalance_after
    }
}

/// A cluster's sum of loads, sum of squared loads, and host count.
#[derive(Clone, Copy, Debug)]
struct Sums {
    s1: f64,
    s2: f64,
    m: f64,
}

impl Sums {
    fn deviation(&self) -> f64 {
        if self.m == 0.0 {
            return 0.0;
        }
        let mean = self.s1 / self.m;
        (self.s2 / self.m - mean * mean).max(0.0).sqrt()
    }

    fn mean(&self) -> f64 {
        if self.m == 0.0 {
            0.0
        } else {
            self.s1 / self.m
        }
    }
}

struct VmState<'a> {
    vm: &'a Vm,
    host: usize,
    /// Current datastore id, when known.
    datastore: Option<u32>,
    /// Anti-affinity groups it belongs to.
    groups: Vec<usize>,
    moved: bool,
}

struct State<'i, 'a> {
    ix: &'i Index<'a>,
    options: &'i RebalanceOptions,
    n: usize,
    eligible: Vec<bool>,
    cluster: Vec<u32>,
    cluster_hosts: Vec<Vec<usize>>,
    cpu_used: Vec<u64>,
    mem_used: Vec<u64>,
    ds_free: Vec<u64>,
    vms: Vec<VmState<'a>>,
    /// VMs on each host, by name.
    host_vms: Vec<Vec<usize>>,
    /// Anti-affinity group names, sorted.
    groups: Vec<&'a str>,
    /// Members of each group per host.
    group_count: Vec<Vec<u32>>,
}

impl<'i, 'a> State<'i, 'a> {
    fn new(ix: &'i Index<'a>, inventory: &'a Fleet, options: &'i RebalanceOptions) -> Self {
        let n = ix.hosts.len();
        let eligible: Vec<bool> = ix
            .hosts
            .iter()
            .map(|h| {
                h.connection_state == ConnectionState::Connected
                    && !h.maintenance_mode
                    && h.cpu_mhz_capacity > 0
                    && h.memory_mib_capacity > 0
            })
            .collect();
        let mut cluster_ids: FxMap<&str, u32> = FxMap::default();
        let mut cluster_hosts: Vec<Vec<usize>> = Vec::new();
        let cluster = ix
            .hosts
            .iter()
            .enumerate()
            .map(|(h, host)| {
                let next = cluster_ids.len() as u32;
                let id = *cluster_ids.entry(host.cluster.as_str()).or_insert(next);
                if id == next {
                    cluster_hosts.push(Vec::new());
                }
                if eligible[h] {
                    cluster_hosts[id as usize].push(h);
                }
                id
            })
            .collect();
        let mut groups: Vec<&str> = inventory
            .anti_affinity_groups
            .iter()
            .map(String::as_str)
            .collect();
        groups.sort_unstable();
        groups.dedup();
        let mut group_count = vec![vec![0u32; n]; groups.len()];
        let mut vms = Vec::new();
        let mut host_vms = vec![Vec::new(); n];
        for (h, host) in ix.hosts.iter().enumerate() {
            // By name, then every other field, so the order the inventory lists VMs in
            // never matters.
            let mut list: Vec<&Vm> = host.vms.iter().collect();
            let key = |v: &'a Vm| {
                (
                    v.name.as_str(),
                    (v.cpu_mhz, v.memory_mib, v.disk_gib, v.cpus, v.pinned),
                    (&v.datastore, &v.networks, &v.groups, &v.tags),
                )
            };
            list.sort_by(|a, b| key(a).cmp(&key(b)));
            for vm in list {
                let mut member: Vec<usize> = vm
                    .groups
                    .iter()
                    .chain(&vm.tags)
                    .filter_map(|g| groups.binary_search(&g.as_str()).ok())
                    .collect();
                member.sort_unstable();
                member.dedup();
                for &g in &member {
                    group_count[g][h] += 1;
                }
                host_vms[h].push(vms.len());
                vms.push(VmState {
                    vm,
                    host: h,
                    datastore: vm
                        .datastore
                        .as_deref()
                        .and_then(|d| ix.ds_by_name.get(d).copied()),
                    groups: member,
                    moved: false,
                });
            }
        }
        State {
            ix,
            options,
            n,
            eligible,
            cluster,
            cluster_hosts,
            cpu_used: ix.cpu_used.clone(),
            mem_used: ix.mem_used.clone(),
            ds_free: ix.ds_free.clone(),
            vms,
            host_vms,
            groups,
            group_count,
        }
    }

    fn load_of(&self, h: usize, cpu: u64, mem: u64) -> f64 {
        let host = self.ix.hosts[h];
        let cpu = cpu as f64 / host.cpu_mhz_capacity as f64;
        let mem = mem as f64 / host.memory_mib_capacity as f64;
        0.5 * (cpu + mem)
    }

    fn load(&self, h: usize) -> f64 {
        if !self.eligible[h] {
            return 0.0;
        }
        self.load_of(h, self.cpu_used[h], self.mem_used[h])
    }

    /// The sums of cluster `c`, in host order.
    fn sums(&self, c: u32) -> Sums {
        let mut sums = Sums {
            s1: 0.0,
            s2: 0.0,
            m: 0.0,
        };
        for &h in &self.cluster_hosts[c as usize] {
            let l = self.load(h);
            sums.s1 += l;
            sums.s2 += l * l;
            sums.m += 1.0;
        }
        sums
    }

    /// The pooled imbalance: the standard deviation of every host's load from its cluster's
    /// mean.
    fn imbalance(&self) -> f64 {
        let (mut squares, mut hosts) = (0.0, 0.0);
        for c in 0..self.cluster_hosts.len() as u32 {
            let sums = self.sums(c);
            squares += sums.deviation().powi(2) * sums.m;
            hosts += sums.m;
        }
        if hosts == 0.0 {
            0.0
        } else {
            (squares / hosts).sqrt()
        }
    }

    /// Whether host `to` can take VM `v`, and on which datastore.
    fn target(&self, v: usize, to: usize) -> Option<(Option<u32>, bool)> {
        let st = &self.vms[v];
        let vm = st.vm;
        let from = st.host;
        if to == from || !self.eligible[to] || self.cluster[to] != self.cluster[from] {
            return None;
        }
        let host = self.ix.hosts[to];
        let cpu_alloc = allocatable(host.cpu_mhz_capacity, self.options.cpu_overcommit);
        let mem_alloc = allocatable(host.memory_mib_capacity, self.options.memory_overcommit);
        if self.cpu_used[to].saturating_add(vm.cpu_mhz) > cpu_alloc
            || self.mem_used[to].saturating_add(vm.memory_mib) > mem_alloc
        {
            return None;
        }
        for g in &st.groups {
            if self.group_count[*g][to] > 0 {
                return None;
            }
        }
        let nets = self.ix.host_nets.row(to as u32);
        for name in &vm.networks {
            if !nets.iter().any(|n| &n.name == name) {
                return None;
            }
        }
        let seen = self.ix.host_ds.row(to as u32);
        match (&vm.datastore, st.datastore) {
            (None, _) => Some((None, false)),
            (Some(_), Some(d)) if seen.contains(&d) => Some((Some(d), false)),
            (Some(_), _) => {
                // Storage move: the datastore left with the largest free share.
                let mut best: Option<(u32, f64)> = None;
                for &d in seen {
                    let ds = self.ix.datastores[d as usize];
                    let free = self.ds_free[d as usize];
                    if !ds.accessible || free < vm.disk_gib {
                        continue;
                    }
                    let after = share(free - vm.disk_gib, ds.capacity_gib);
                    if best.is_none_or(|(_, b)| after > b) {
                        best = Some((d, after));
                    }
                }
                best.map(|(d, _)| (Some(d), true))
            }
        }
    }

    /// The cluster's imbalance if VM `v` moved to `to`, from the cluster's sums.
    fn imbalance_if(&self, sums: Sums, v: usize, to: usize) -> f64 {
        let vm = self.vms[v].vm;
        let from = self.vms[v].host;
        let (lf, lt) = (self.load(from), self.load(to));
        let lf2 = self.load_of(
            from,
            self.cpu_used[from].saturating_sub(vm.cpu_mhz),
            self.mem_used[from].saturating_sub(vm.memory_mib),
        );
        let lt2 = self.load_of(
            to,
            self.cpu_used[to] + vm.cpu_mhz,
            self.mem_used[to] + vm.memory_mib,
        );
        Sums {
            s1: sums.s1 - lf - lt + lf2 + lt2,
            s2: sums.s2 - lf * lf - lt * lt + lf2 * lf2 + lt2 * lt2,
            m: sums.m,
        }
        .deviation()
    }

    /// Whether `a` beats `b`: a larger drop of its cluster's imbalance, then no storage move,
    /// fewer bytes, the VM's name, the target's name.
    fn better(&self, a: &Candidate, b: &Candidate) -> bool {
        let key = |c: &Candidate| {
            let vm = self.vms[c.vm].vm;
            (c.storage_move, vm.disk_gib, vm.name.as_str(), c.to)
        };
        match b.gain().total_cmp(&a.gain()) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => key(a) < key(b),
        }
    }

    /// The best target for VM `v` among the least loaded hosts of its cluster.
    fn best_target(&self, sums: Sums, v: usize, by_load: &[usize]) -> Option<Candidate> {
        let before = sums.deviation();
        let mut best: Option<Candidate> = None;
        let mut tried = 0;
        for &to in by_load {
            if tried == TARGETS_PER_VM {
                break;
            }
            let Some((datastore, storage_move)) = self.target(v, to) else {
                continue;
            };
            tried += 1;
            let c = Candidate {
                vm: v,
                to,
                datastore,
                storage_move,
                imbalance_before: before,
                imbalance_after: self.imbalance_if(sums, v, to),
            };
            if best.as_ref().is_none_or(|b| self.better(&c, b)) {
                best = Some(c);
            }
        }
        best
    }

    /// Hosts of `h`'s cluster, least loaded first.
    fn cluster_by_load(&self, h: usize) -> Vec<usize> {
        let mut hosts = self.cluster_hosts[self.cluster[h] as usize].clone();
        let loads: Vec<f64> = hosts.iter().map(|&t| self.load(t)).collect();
        let mut order: Vec<usize> = (0..hosts.len()).collect();
        order.sort_by(|&a, &b| loads[a].total_cmp(&loads[b]).then(hosts[a].cmp(&hosts[b])));
        hosts = order.into_iter().map(|i| hosts[i]).collect();
        hosts
    }

    /// Phase one: move members of an anti-affinity group off hosts they share.
    fn fix_anti_affinity(&mut self, moves: &mut Vec<Move>, unresolved: &mut Vec<String>) {
        for g in 0..self.groups.len() {
            for h in 0..self.n {
                if self.group_count[g][h] < 2 {
                    continue;
                }
                let members: Vec<usize> = self.host_vms[h]
                    .iter()
                    .copied()
                    .filter(|&v| self.vms[v].groups.contains(&g))
                    .collect();
                let keeper = members[0];
                for &v in &members[1..] {
                    if moves.len() >= self.options.max_moves {
                        return;
                    }
                    let mut fixed = false;
                    if !self.vms[v].vm.pinned && self.eligible[h] {
                        let by_load = self.cluster_by_load(h);
                        let sums = self.sums(self.cluster[h]);
                        if let Some(c) = self.best_target(sums, v, &by_load) {
                            let reason = format!(
                                "{} shares {} with {}, both in anti-affinity group {}; {} runs no member",
                                self.vms[v].vm.name,
                                self.ix.hosts[h].name,
                                self.vms[keeper].vm.name,
                                self.groups[g],
                                self.ix.hosts[c.to].name
                            );
                            moves.push(self.apply(c, Some(reason)));
                            fixed = true;
                        }
                    }
                    if !fixed {
                        unresolved.push(format!(
                            "{} shares {} with {} (anti-affinity group {}) and cannot move",
                            self.vms[v].vm.name,
                            self.ix.hosts[h].name,
                            self.vms[keeper].vm.name,
                            self.groups[g]
                        ));
                    }
                }
            }
        }
    }

    /// Phase two: the load move that lowers its cluster's imbalance most, if by enough.
    fn best_load_move(&self) -> Option<Candidate> {
        let sums: Vec<Sums> = (0..self.cluster_hosts.len() as u32)
            .map(|c| self.sums(c))
            .collect();
        let excess = |h: usize| self.load(h) - sums[self.cluster[h] as usize].mean();
        let mut sources: Vec<usize> = (0..self.n)
            .filter(|&h| self.eligible[h] && excess(h) > 0.0)
            .collect();
        sources.sort_by(|&a, &b| excess(b).total_cmp(&excess(a)).then(a.cmp(&b)));
        sources.truncate(SOURCE_HOSTS);
        let mut best: Option<Candidate> = None;
        let mut by_cluster: FxMap<u32, Vec<usize>> = FxMap::default();
        for &s in &sources {
            let c = self.cluster[s];
            let by_load = by_cluster
                .entry(c)
                .or_insert_with(|| self.cluster_by_load(s));
            let source_load = self.load(s);
            let lighter: Vec<usize> = by_load
                .iter()
                .copied()
                .filter(|&t| self.load(t) < source_load)
                .collect();
            for &v in &self.host_vms[s] {
                if self.vms[v].moved || self.vms[v].vm.pinned {
                    continue;
                }
                if let Some(c) = self.best_target(sums[c as usize], v, &lighter) {
                    if best.as_ref().is_none_or(|b| self.better(&c, b)) {
                        best = Some(c);
                    }
                }
            }
        }
        best.filter(|c| c.gain() >= self.options.min_improvement.max(1e-12))
    }

    /// Applies a move; `reason` is given for anti-affinity fixes (priority 1).
    fn apply(&mut self, c: Candidate, reason: Option<String>) -> Move {
        let v = c.vm;
        let vm = self.vms[v].vm;
        let from = self.vms[v].host;
        let cluster = self.cluster[from];
        let sums = self.sums(cluster);
        let before = sums.deviation();
        let (load_from, load_to) = (self.load(from), self.load(c.to));
        let mean = sums.mean();
        self.cpu_used[from] = self.cpu_used[from].saturating_sub(vm.cpu_mhz);
        self.mem_used[from] = self.mem_used[from].saturating_sub(vm.memory_mib);
        self.cpu_used[c.to] += vm.cpu_mhz;
        self.mem_used[c.to] += vm.memory_mib;
        if c.storage_move {
            if let Some(old) = self.vms[v].datastore {
                self.ds_free[old as usize] += vm.disk_gib;
            }
            if let Some(new) = c.datastore {
                self.ds_free[new as usize] -= vm.disk_gib;
            }
        }
        for &g in &self.vms[v].groups {
            self.group_count[g][from] -= 1;
            self.group_count[g][c.to] += 1;
        }
        self.host_vms[from].retain(|&x| x != v);
        let list = &mut self.host_vms[c.to];
        let at = list
            .binary_search_by(|&x| {
                self.vms[x]
                    .vm
                    .name
                    .as_str()
                    .cmp(vm.name.as_str())
                    .then(x.cmp(&v))
            })
            .unwrap_or_else(|i| i);
        list.insert(at, v);
        self.vms[v].host = c.to;
        self.vms[v].datastore = c.datastore.or(self.vms[v].datastore);
        self.vms[v].moved = true;
        let after = self.sums(cluster).deviation();

        let (priority, reason) = match reason {
            Some(reason) => (1, reason),
            None => {
                let gain = if before > 0.0 {
                    (before - after) / before
                } else {
                    0.0
                };
                let priority = if gain >= 0.2 {
                    2
                } else if gain >= 0.1 {
                    3
                } else if gain >= 0.05 {
                    4
                } else {
                    5
                };
                let reason = format!(
                    "{} at {:.0}% load vs cluster mean {:.0}%: {} at {:.0}% takes {} ({} vCPU, {} MHz, {} MiB), imbalance {:.3} -> {:.3}",
                    self.ix.hosts[from].name,
                    100.0 * load_from,
                    100.0 * mean,
                    self.ix.hosts[c.to].name,
                    100.0 * load_to,
                    vm.name,
                    vm.cpus,
                    vm.cpu_mhz,
                    vm.memory_mib,
                    before,
                    after
                );
                (priority, reason)
            }
        };
        Move {
            vm: vm.name.clone(),
            cluster: self.ix.hosts[from].cluster.clone(),
            from: self.ix.hosts[from].name.clone(),
            to: self.ix.hosts[c.to].name.clone(),
            datastore: self.vms[v]
                .datastore
                .map(|d| self.ix.datastores[d as usize].name.clone())
                .or_else(|| vm.datastore.clone()),
            storage_move: c.storage_move,
            priority,
            reason,
            imbalance_before: before,
            imbalance_after: after,
            bytes_to_move: vm.disk_gib << 30,
        }
    }
}
