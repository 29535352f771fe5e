//! Property tests over random small inventories: placements never break a hard constraint
//! (checked by an independent, index-free reimplementation), hosts are rejected exactly when
//! infeasible, more free capacity never lowers a spread score, batches never over-commit,
//! rebalancing moves are legal, and results are the same for the same input in any order.

use proptest::prelude::{
    any, prop, prop_assert, prop_assert_eq, prop_oneof, proptest, Just, ProptestConfig, Strategy,
};
use proptest::sample::subsequence;

use super::tests::{datastore, host};
use super::Strategy as Ranking;
use super::*;

const NETWORKS: [(&str, Option<u16>); 4] = [
    ("net-a", Some(10)),
    ("net-b", Some(20)),
    ("net-c", None),
    ("net-d", Some(10)),
];
const MODELS: [&str; 3] = ["A100 PCIe", "Tesla T4", "L4"];
const GROUPS: [&str; 3] = ["web", "db", "cache"];

#[derive(Clone, Debug)]
struct HostSpec {
    cpu: (u64, u64),
    mem: (u64, u64),
    state: u8,
    maintenance: bool,
    datastores: u8,
    networks: u8,
    gpus: Vec<u8>,
    vgpu_free: Option<u32>,
    vms: Vec<(u8, u8, bool, u64, u64)>,
}

fn host_spec() -> impl Strategy<Value = HostSpec> {
    (
        // (capacity, used as a percentage of it): mostly room, sometimes over-committed.
        (0u64..40_000, 0u64..120),
        (0u64..131_072, 0u64..105),
        0u8..16,
        prop::bool::weighted(0.1),
        0u8..32,
        (0u8..16, 0u8..16).prop_map(|(a, b)| a | b),
        prop::collection::vec(0u8..3, 0..3),
        prop::option::weighted(0.3, 0u32..3),
        prop::collection::vec(
            (0u8..6, 0u8..4, any::<bool>(), 0u64..2_000, 0u64..4_000),
            0..4,
        ),
    )
        .prop_map(
            |(cpu, mem, state, maintenance, datastores, networks, gpus, vgpu_free, vms)| HostSpec {
                cpu,
                mem,
                state,
                maintenance,
                datastores,
                networks,
                gpus,
                vgpu_free,
                vms,
            },
        )
}

#[derive(Clone, Debug)]
struct DsSpec {
    capacity: u64,
    free: u64,
    accessible: bool,
    /// Hosts (by index mask) listed on the datastore's side.
    hosts: u8,
}

fn ds_spec() -> impl Strategy<Value = DsSpec> {
    (
        1u64..4_000,
        0u64..4_000,
        prop::bool::weighted(0.9),
        any::<u8>(),
    )
        .prop_map(|(capacity, free, accessible, hosts)| DsSpec {
            capacity,
            free: free.min(capacity),
            accessible,
            hosts,
        })
}

fn build(hosts: &[HostSpec], datastores: &[DsSpec], anti: bool) -> Fleet {
    let ds_names: Vec<String> = (0..datastores.len()).map(|i| format!("d{i}")).collect();
    let mut inv = Fleet {
        hosts: Vec::new(),
        datastores: datastores
            .iter()
            .enumerate()
            .map(|(i, d)| Datastore {
                accessible: d.accessible,
                hosts: (0..hosts.len())
                    .filter(|h| *h < 8 && d.hosts & (1 << h) != 0)
                    .map(|h| format!("h{h}"))
                    .collect(),
                ..datastore(&ds_names[i], d.capacity, d.free)
            })
            .collect(),
        anti_affinity_groups: if anti { vec!["web".into()] } else { Vec::new() },
    };
    for (i, spec) in hosts.iter().enumerate() {
        let mut h = host(&format!("h{i}"));
        h.cluster = format!("c{}", i % 2);
        h.cpu_mhz_capacity = spec.cpu.0;
        h.cpu_mhz_used = spec.cpu.0 * spec.cpu.1 / 100;
        h.memory_mib_capacity = spec.mem.0;
        h.memory_mib_used = spec.mem.0 * spec.mem.1 / 100;
        h.connection_state = match spec.state {
            0 => ConnectionState::Disconnected,
            1 => ConnectionState::NotResponding,
            _ => ConnectionState::Connected,
        };
        h.maintenance_mode = spec.maintenance;
        h.datastores = (0..ds_names.len())
            .filter(|d| spec.datastores & (1 << d) != 0)
            .map(|d| ds_names[d].clone())
            .collect();
        h.networks = NETWORKS
            .iter()
            .enumerate()
            .filter(|(n, _)| spec.networks & (1 << n) != 0)
            .map(|(_, (name, vlan))| HostNetwork {
                name: name.to_string(),
                vlan_id: *vlan,
            })
            .collect();
        h.pci_devices = spec
            .gpus
            .iter()
            .enumerate()
            .map(|(k, &m)| PciDevice {
                id: format!("0000:{k:02x}:00.0"),
                class_id: 0x0300,
                vendor_id: 0x10de,
                device_id: 0x1000 + u16::from(m),
                vendor_name: "NVIDIA".into(),
                device_name: MODELS[m as usize].into(),
            })
            .collect();
        h.vgpu_profiles = spec
            .vgpu_free
            .map(|free| VgpuProfile {
                name: "grid-8q".into(),
                free,
            })
            .into_iter()
            .collect();
        h.vms = spec
            .vms
            .iter()
            .map(|&(name, group, pinned, cpu, mem)| Vm {
                name: format!("vm{name}"),
                cpus: 1,
                cpu_mhz: cpu,
                memory_mib: mem,
                disk_gib: cpu / 100,
                datastore: h.datastores.first().cloned(),
                networks: h.networks.iter().take(1).map(|n| n.name.clone()).collect(),
                groups: GROUPS
                    .get(group as usize)
                    .map(|g| g.to_string())
                    .into_iter()
                    .collect(),
                pinned,
                ..Vm::default()
            })
            .collect();
        // Used is at least what the VMs use, as vSphere reports it.
        h.cpu_mhz_used += h.vms.iter().map(|v| v.cpu_mhz).sum::<u64>();
        h.memory_mib_used += h.vms.iter().map(|v| v.memory_mib).sum::<u64>();
        inv.hosts.push(h);
    }
    inv
}

fn inventory() -> impl Strategy<Value = Fleet> {
    (
        prop::collection::vec(host_spec(), 0..10),
        prop::collection::vec(ds_spec(), 1..5),
        any::<bool>(),
    )
        .prop_map(|(hosts, datastores, anti)| build(&hosts, &datastores, anti))
}

fn request() -> impl Strategy<Value = PlacementRequest> {
    let gpu = prop_oneof![
        8 => Just(None),
        1 => (1u32..3, prop::option::of(prop::sample::select(vec!["a100", "T4", "l4", "h100"])))
            .prop_map(|(count, model)| Some(GpuRequest {
                count,
                model: model.map(String::from),
                vgpu_profile: None,
            })),
        1 => (1u32..3, prop::sample::select(vec!["grid-8q", "grid-4q"])).prop_map(|(count, p)| {
            Some(GpuRequest {
                count,
                model: None,
                vgpu_profile: Some(p.into()),
            })
        }),
    ];
    let network = prop_oneof![
        3 => Just(None),
        1 => prop::sample::select(vec!["net-a", "net-b", "net-c", "net-x"])
            .prop_map(|n| Some(NetworkRequirement::Name(n.into()))),
        1 => prop::sample::select(vec![10u16, 20, 30]).prop_map(|v| Some(NetworkRequirement::Vlan(v))),
    ];
    let datastore = prop_oneof![
        3 => Just(DatastorePreference::MostFree),
        1 => (0u8..6).prop_map(|d| DatastorePreference::Named(format!("d{d}"))),
    ];
    let names: Vec<String> = (0..7).map(|i| format!("vm{i}")).collect();
    let hosts: Vec<String> = (0..9).map(|i| format!("h{i}")).collect();
    (
        (1u32..9, 500u32..3_000, 1u64..32_768, 0u64..400),
        (gpu, network, datastore),
        (
            prop::option::weighted(0.3, prop::sample::select(GROUPS.to_vec())),
            subsequence(names.clone(), 0..2),
            prop::option::weighted(0.1, prop::sample::select(names)),
        ),
        (
            prop::option::weighted(0.1, subsequence(hosts.clone(), 2..6)),
            prop::option::weighted(0.15, subsequence(hosts, 1..3)),
        ),
        (
            prop::sample::select(vec![Ranking::Spread, Ranking::Pack, Ranking::Balanced]),
            prop::sample::select(vec![1.0, 1.5, 4.0]),
            prop::sample::select(vec![0.8, 1.0, 1.25]),
        ),
    )
        .prop_map(
            |(
                (cpus, per_vcpu_mhz, memory_mib, disk_gib),
                (gpu, network, datastore),
                (group, avoid, affinity),
                (include, exclude),
                (strategy, cpu_overcommit, memory_overcommit),
            )| PlacementRequest {
                name: "new".into(),
                cpus,
                per_vcpu_mhz,
                memory_mib,
                disk_gib,
                gpu,
                network,
                datastore,
                anti_affinity_group: group.map(String::from),
                groups: Vec::new(),
                avoid_vms: avoid,
                affinity_vms: affinity.into_iter().collect(),
                include_hosts: include.unwrap_or_default(),
                exclude_hosts: exclude.unwrap_or_default(),
                strategy,
                cpu_overcommit,
                memory_overcommit,
                max_candidates: 100,
            },
        )
}

// ---------------------------------------------------------------------------------------------
// An independent checker: straight from the inventory, no index, no early exits.

fn sees(inv: &Fleet, host: &Host, ds: &str) -> bool {
    host.datastores.iter().any(|d| d == ds)
        || inv
            .datastores
            .iter()
            .any(|d| d.name == ds && d.hosts.contains(&host.name))
}

fn in_group(vm: &Vm, group: &str) -> bool {
    vm.groups.iter().chain(&vm.tags).any(|g| g == group)
}

fn gpu_matches(device: &PciDevice, model: Option<&str>) -> bool {
    crate::pci_ids::is_gpu(device.vendor_id, device.class_id)
        && model.is_none_or(|m| {
            format!("{} {}", device.vendor_name, device.device_name)
                .to_lowercase()
                .contains(&m.to_lowercase())
        })
}

/// Every constraint of `req` that host `h` breaks, given a datastore, network and devices.
fn violations(
    inv: &Fleet,
    req: &PlacementRequest,
    h: &Host,
    datastore: Option<&str>,
    network: Option<&str>,
    devices: &[String],
) -> Vec<&'static str> {
    let mut v = Vec::new();
    if (!req.include_hosts.is_empty() && !req.include_hosts.contains(&h.name))
        || req.exclude_hosts.contains(&h.name)
    {
        v.push("host list");
    }
    if h.connection_state != ConnectionState::Connected {
        v.push("connection");
    }
    if h.maintenance_mode {
        v.push("maintenance");
    }
    if let Some(g) = &req.anti_affinity_group {
        if h.vms.iter().any(|vm| in_group(vm, g)) {
            v.push("anti-affinity");
        }
    }
    if h.vms.iter().any(|vm| req.avoid_vms.contains(&vm.name)) {
        v.push("avoid");
    }
    if !req
        .affinity_vms
        .iter()
        .all(|name| h.vms.iter().any(|vm| &vm.name == name))
    {
        v.push("affinity");
    }
    let network_ok = match &req.network {
        None => true,
        Some(NetworkRequirement::Name(name)) => {
            network == Some(name.as_str()) && h.networks.iter().any(|n| &n.name == name)
        }
        Some(NetworkRequirement::Vlan(vlan)) => h
            .networks
            .iter()
            .any(|n| Some(n.name.as_str()) == network && n.vlan_id == Some(*vlan)),
    };
    if !network_ok {
        v.push("network");
    }
    let gpu_ok = match &req.gpu {
        None => true,
        Some(GpuRequest {
            count,
            vgpu_profile: Some(p),
            ..
        }) => h
            .vgpu_profiles
            .iter()
            .any(|vp| &vp.name == p && vp.free >= *count),
        Some(GpuRequest { count, model, .. }) => {
            let mut ids: Vec<&String> = devices.iter().collect();
            ids.sort();
            ids.dedup();
            ids.len() == *count as usize
                && ids.iter().all(|id| {
                    h.pci_devices
                        .iter()
                        .any(|d| &&d.id == id && gpu_matches(d, model.as_deref()))
                })
        }
    };
    if !gpu_ok {
        v.push("gpu");
    }
    let cpu_alloc = (h.cpu_mhz_capacity as f64 * req.cpu_overcommit).floor() as u64;
    if h.cpu_mhz_used + u64::from(req.cpus) * u64::from(req.per_vcpu_mhz) > cpu_alloc {
        v.push("cpu");
    }
    let mem_alloc = (h.memory_mib_capacity as f64 * req.memory_overcommit).floor() as u64;
    if h.memory_mib_used + req.memory_mib > mem_alloc {
        v.push("memory");
    }
    let ds_ok = datastore.is_some_and(|name| {
        inv.datastores.iter().any(|d| {
            d.name == name && d.accessible && d.free_gib >= req.disk_gib && sees(inv, h, name)
        }) && match &req.datastore {
            DatastorePreference::Named(want) => want == name,
            DatastorePreference::MostFree => true,
        }
    });
    if !ds_ok {
        v.push("datastore");
    }
    v
}

/// Whether some datastore, network and set of devices makes host `h` fit.
fn feasible(inv: &Fleet, req: &PlacementRequest, h: &Host) -> bool {
    let datastores: Vec<Option<&str>> = inv
        .datastores
        .iter()
        .map(|d| Some(d.name.as_str()))
        .collect();
    let mut networks: Vec<Option<&str>> =
        h.networks.iter().map(|n| Some(n.name.as_str())).collect();
    networks.push(None);
    let devices: Vec<String> = match &req.gpu {
        Some(GpuRequest {
            count,
            model,
            vgpu_profile: None,
        }) => h
            .pci_devices
            .iter()
            .filter(|d| gpu_matches(d, model.as_deref()))
            .take(*count as usize)
            .map(|d| d.id.clone())
            .collect(),
        _ => Vec::new(),
    };
    datastores.iter().any(|&ds| {
        networks
            .iter()
            .any(|&net| violations(inv, req, h, ds, net, &devices).is_empty())
    })
}

fn find_host<'i>(inv: &'i Fleet, name: &str) -> &'i Host {
    inv.hosts.iter().find(|h| h.name == name).unwrap()
}

/// Shuffles every list whose order must not matter.
fn shuffled(inv: &Fleet, seed: u64) -> Fleet {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    fn shuffle<T>(v: &mut [T], next: &mut impl FnMut() -> u64) {
        for i in (1..v.len()).rev() {
            v.swap(i, (next() % (i as u64 + 1)) as usize);
        }
    }
    let mut inv = inv.clone();
    shuffle(&mut inv.hosts, &mut next);
    shuffle(&mut inv.datastores, &mut next);
    for h in &mut inv.hosts {
        shuffle(&mut h.datastores, &mut next);
        shuffle(&mut h.networks, &mut next);
        shuffle(&mut h.pci_devices, &mut next);
        shuffle(&mut h.vms, &mut next);
    }
    for d in &mut inv.datastores {
        shuffle(&mut d.hosts, &mut next);
    }
    inv
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The placement breaks no hard constraint; a host is rejected exactly when no datastore,
    /// network and devices make it fit; the chosen host scores best.
    #[test]
    fn placement_never_violates_a_hard_constraint(inv in inventory(), req in request()) {
        let d = place(&inv, &req).unwrap();
        prop_assert_eq!(d.hosts_fit + d.rejected.len(), inv.hosts.len());
        prop_assert_eq!(d.hosts_total, inv.hosts.len());
        if let Some(p) = &d.placement {
            let h = find_host(&inv, &p.host);
            let v = violations(&inv, &req, h, Some(&p.datastore), p.network.as_deref(), &p.pci_devices);
            prop_assert!(v.is_empty(), "{} breaks {:?}: {:#?}", p.host, v, d);
            prop_assert_eq!(&d.candidates[0].host, &p.host);
            prop_assert!(d.candidates.iter().all(|c| c.score.total <= p.score.total));
        } else {
            prop_assert_eq!(d.hosts_fit, 0);
        }
        for c in &d.candidates {
            let h = find_host(&inv, &c.host);
            prop_assert!(feasible(&inv, &req, h), "{} is a candidate but infeasible", c.host);
            prop_assert!((0.0..=100.0).contains(&c.score.total));
        }
        for r in &d.rejected {
            let h = find_host(&inv, &r.host);
            prop_assert!(!feasible(&inv, &req, h), "{} rejected ({}) but feasible", r.host, r.reason);
            prop_assert!(!r.reason.is_empty());
        }
    }

    /// More free CPU, memory or datastore space on a host never lowers its spread score.
    #[test]
    fn more_free_capacity_never_lowers_the_spread_score(
        inv in inventory(),
        req in request(),
        which in 0u8..5,
        amount in 1u64..50_000,
    ) {
        let req = PlacementRequest { strategy: Ranking::Spread, ..req };
        let Some(first) = inv.hosts.first() else { return Ok(()) };
        let name = first.name.clone();
        let d = place(&inv, &req).unwrap();
        let Some(before) = d.candidates.iter().find(|c| c.host == name) else { return Ok(()) };
        let mut more = inv.clone();
        let h = &mut more.hosts[0];
        match which {
            0 => h.cpu_mhz_used = h.cpu_mhz_used.saturating_sub(amount),
            1 => h.cpu_mhz_capacity += amount,
            2 => h.memory_mib_used = h.memory_mib_used.saturating_sub(amount),
            3 => h.memory_mib_capacity += amount,
            _ => {
                let seen = h.datastores.clone();
                for ds in more.datastores.iter_mut().filter(|ds| seen.contains(&ds.name)) {
                    ds.free_gib = (ds.free_gib + amount).min(ds.capacity_gib);
                }
            }
        }
        let d2 = place(&more, &req).unwrap();
        let after = d2.candidates.iter().find(|c| c.host == name);
        prop_assert!(after.is_some(), "{} stopped fitting", name);
        let after = after.unwrap();
        prop_assert!(
            after.score.total >= before.score.total - 1e-9,
            "{} -> {}", before.score.total, after.score.total
        );
    }

    /// A batch never takes a host past capacity × ratio, a datastore past its free space, a
    /// GPU twice, or puts two members of an anti-affinity group together.
    #[test]
    fn batch_never_overcommits(
        inv in inventory(),
        reqs in prop::collection::vec(request(), 1..10),
        ratios in (prop::sample::select(vec![1.0, 2.0, 4.0]), prop::sample::select(vec![1.0, 1.5])),
    ) {
        let reqs: Vec<PlacementRequest> = reqs
            .into_iter()
            .enumerate()
            .map(|(i, r)| PlacementRequest {
                name: format!("new{i}"),
                cpu_overcommit: ratios.0,
                memory_overcommit: ratios.1,
                ..r
            })
            .collect();
        let batch = place_batch(&inv, &reqs).unwrap();
        prop_assert_eq!(batch.decisions.len(), reqs.len());
        let mut cpu = std::collections::BTreeMap::<&str, u64>::new();
        let mut mem = std::collections::BTreeMap::<&str, u64>::new();
        let mut disk = std::collections::BTreeMap::<&str, u64>::new();
        let mut devices = std::collections::BTreeSet::<(String, String)>::new();
        let mut vgpus = std::collections::BTreeMap::<&str, u32>::new();
        let mut groups = std::collections::BTreeSet::<(String, String)>::new();
        for (req, d) in reqs.iter().zip(&batch.decisions) {
            let Some(p) = &d.placement else { continue };
            *cpu.entry(&p.host).or_default() += req.required_cpu_mhz();
            *mem.entry(&p.host).or_default() += req.memory_mib;
            *disk.entry(&p.datastore).or_default() += req.disk_gib;
            for id in &p.pci_devices {
                prop_assert!(devices.insert((p.host.clone(), id.clone())), "{} given twice", id);
            }
            if let Some(g) = &req.gpu {
                if p.vgpu_profile.is_some() {
                    *vgpus.entry(&p.host).or_default() += g.count;
                }
            }
            if let Some(g) = &req.anti_affinity_group {
                prop_assert!(groups.insert((p.host.clone(), g.clone())), "group {} twice on {}", g, p.host);
                let h = find_host(&inv, &p.host);
                prop_assert!(!h.vms.iter().any(|vm| in_group(vm, g)));
            }
        }
        for h in &inv.hosts {
            if let Some(c) = cpu.get(h.name.as_str()) {
                prop_assert!(h.cpu_mhz_used + c <= allocatable(h.cpu_mhz_capacity, ratios.0));
            }
            if let Some(m) = mem.get(h.name.as_str()) {
                prop_assert!(h.memory_mib_used + m <= allocatable(h.memory_mib_capacity, ratios.1));
            }
            if let Some(n) = vgpus.get(h.name.as_str()) {
                prop_assert!(*n <= h.vgpu_profiles.iter().map(|p| p.free).sum::<u32>());
            }
        }
        for ds in &inv.datastores {
            if let Some(used) = disk.get(ds.name.as_str()) {
                prop_assert!(*used <= ds.free_gib, "{} over-filled", ds.name);
            }
        }
    }

    /// Same input, same output; the order the inventory lists anything in does not matter,
    /// nor whether VMs are read in place or from the VM table.
    #[test]
    fn placement_is_deterministic(
        inv in inventory(),
        req in request(),
        reqs in prop::collection::vec(request(), 1..5),
        seed in any::<u64>(),
    ) {
        let d = place(&inv, &req).unwrap();
        prop_assert_eq!(&d, &place(&inv, &req).unwrap());
        let other = shuffled(&inv, seed);
        prop_assert_eq!(&d, &place(&other, &req).unwrap());
        // Reading VMs from the flattened table gives the same answer as reading them in place.
        let mut tabled = Placer::new(&inv).unwrap();
        tabled.index_vms();
        prop_assert_eq!(&d, &tabled.place(&req).unwrap());

        let reqs: Vec<PlacementRequest> = reqs
            .into_iter()
            .enumerate()
            .map(|(i, r)| PlacementRequest { name: format!("new{i}"), ..r })
            .collect();
        prop_assert_eq!(place_batch(&inv, &reqs).unwrap(), place_batch(&other, &reqs).unwrap());
        let options = RebalanceOptions::default();
        prop_assert_eq!(rebalance(&inv, &options).unwrap(), rebalance(&other, &options).unwrap());
    }

    /// Rebalancing stays within max_moves, moves inside a cluster to hosts that can take the
    /// VM, never moves a pinned VM or one VM twice, and load moves lower the imbalance.
    #[test]
    fn rebalance_moves_are_legal(inv in inventory(), max_moves in 0usize..6) {
        // Unique VM names, so a move names one VM.
        let mut inv = inv;
        for (i, h) in inv.hosts.iter_mut().enumerate() {
            for (k, vm) in h.vms.iter_mut().enumerate() {
                vm.name = format!("{}-{i}-{k}", vm.name);
            }
        }
        let options = RebalanceOptions { max_moves, ..RebalanceOptions::default() };
        let plan = rebalance(&inv, &options).unwrap();
        prop_assert!(plan.moves.len() <= max_moves);
        // Replay on a copy of the inventory.
        let mut state = inv.clone();
        let mut moved = std::collections::BTreeSet::new();
        for m in &plan.moves {
            prop_assert!(moved.insert(m.vm.clone()), "{} moved twice", m.vm);
            let from = state.hosts.iter().position(|h| h.name == m.from).unwrap();
            let to = state.hosts.iter().position(|h| h.name == m.to).unwrap();
            let k = state.hosts[from].vms.iter().position(|v| v.name == m.vm).unwrap();
            let vm = state.hosts[from].vms[k].clone();
            prop_assert!(!vm.pinned);
            let target = &state.hosts[to];
            prop_assert_eq!(&target.cluster, &state.hosts[from].cluster);
            prop_assert_eq!(target.connection_state, ConnectionState::Connected);
            prop_assert!(!target.maintenance_mode);
            prop_assert!(target.cpu_mhz_used + vm.cpu_mhz <= allocatable(target.cpu_mhz_capacity, options.cpu_overcommit));
            prop_assert!(target.memory_mib_used + vm.memory_mib <= allocatable(target.memory_mib_capacity, options.memory_overcommit));
            prop_assert!(vm.networks.iter().all(|n| target.networks.iter().any(|t| &t.name == n)));
            for g in &inv.anti_affinity_groups {
                if in_group(&vm, g) {
                    prop_assert!(!target.vms.iter().any(|v| in_group(v, g)), "{} joins group {} on {}", m.vm, g, m.to);
                }
            }
            if let Some(ds) = &m.datastore {
                prop_assert!(sees(&state, target, ds));
            }
            prop_assert_eq!(m.bytes_to_move, vm.disk_gib << 30);
            if m.priority > 1 {
                prop_assert!(m.imbalance_after < m.imbalance_before);
            }
            let vm = state.hosts[from].vms.remove(k);
            state.hosts[from].cpu_mhz_used -= vm.cpu_mhz;
            state.hosts[from].memory_mib_used -= vm.memory_mib;
            state.hosts[to].cpu_mhz_used += vm.cpu_mhz;
            state.hosts[to].memory_mib_used += vm.memory_mib;
            state.hosts[to].vms.push(vm);
        }
        if plan.moves.iter().all(|m| m.priority > 1) {
            prop_assert!(plan.imbalance_after <= plan.imbalance_before + 1e-12);
        }
    }
}

/// The generators must exercise both outcomes, or the property tests above prove little:
/// some requests fit and some are rejected (`--nocapture` prints the mix).
#[test]
fn generator_coverage() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut placed, mut rejected) = (0, std::collections::BTreeMap::<Filter, usize>::new());
    let (mut batches, mut moves) = (0, 0);
    for _ in 0..1000 {
        let inv = inventory().new_tree(&mut runner).unwrap().current();
        let req = request().new_tree(&mut runner).unwrap().current();
        let d = place(&inv, &req).unwrap();
        placed += usize::from(d.placement.is_some());
        for r in &d.rejected {
            *rejected.entry(r.filter).or_default() += 1;
        }
        let reqs = vec![req.clone(), req.clone(), req];
        batches += place_batch(&inv, &reqs).unwrap().placed;
        moves += rebalance(&inv, &RebalanceOptions::default())
            .unwrap()
            .moves
            .len();
    }
    println!("placed {placed}/1000, batch placements {batches}/3000, moves {moves}");
    println!("rejections by filter: {rejected:?}");
    assert!(
        (100..=950).contains(&placed),
        "placed {placed}/1000: the generators are lopsided"
    );
    assert!(
        rejected.len() >= 3,
        "too few kinds of rejection: {rejected:?}"
    );
}
