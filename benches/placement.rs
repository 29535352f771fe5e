//! Placement engine benchmarks (plain `std::time`, no harness; prints a table).
//!
//! `cargo bench --bench placement -j1` runs everything; pass `decide`, `batch` or `rebalance`
//! after `--` to run one part. Times are wall clock, one thread, the median of several runs.
//! Under `cargo test --all-targets` (no `--bench` argument) it runs as a quick smoke test on
//! small inventories, and its figures mean nothing (unoptimised build).
//!
//! Inventories are synthetic but shaped like real ones: clusters of 32 hosts of three sizes,
//! 20 VMs per host from a catalogue of sizes, six shared datastores per cluster plus a local
//! one per host, a dozen port groups per host (ten cluster VLANs out of 400), a GPU host in 16,
//! and a few hosts disconnected, not responding or in maintenance.
//!
//! (a) decide: one request (4 vCPU, 16 GiB, 100 GiB, VLAN 120, an anti-affinity group) over
//!     100 / 1,000 / 10,000 hosts: indexing the snapshot (`Placer::new`), the decision on the
//!     index (`Placer::place`, which scans the inventory's VMs for the group), both (`place`),
//!     and the decision once `Placer::index_vms` flattened the VMs into a table.
//!     Goal: decision < 10 ms at 10,000 hosts.
//! (b) batch: 1,000 requests (anti-affinity groups of three, mixed sizes and VLANs) over 1,000
//!     hosts with `place_batch`, indexing included. Goal: < 1 s.
//! (c) rebalance: 10 moves over 1,000 hosts.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ceso::engine::placement::{
    place, place_batch, rebalance, ConnectionState, Datastore, Fleet, GpuRequest, Host,
    HostNetwork, NetworkRequirement, PciDevice, PlacementRequest, Placer, RebalanceOptions,
    Strategy, VgpuProfile, Vm,
};

/// xorshift64*: a small deterministic generator, so every run sees the same inventory.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, per_thousand: u64) -> bool {
        self.below(1000) < per_thousand
    }
}

const VMS_PER_HOST: usize = 20;
const HOSTS_PER_CLUSTER: usize = 32;
const SHARED_DATASTORES: usize = 6;
const APP_GROUPS: u64 = 500;

/// (vCPUs, MiB) of the VM sizes in use.
const VM_SIZES: [(u32, u64); 6] = [
    (2, 4_096),
    (2, 8_192),
    (4, 16_384),
    (8, 32_768),
    (16, 65_536),
    (4, 8_192),
];

/// (cores × MHz, MiB) of the host models.
const HOST_MODELS: [(u64, u64); 3] = [
    (32 * 2_600, 524_288),
    (48 * 2_800, 786_432),
    (64 * 2_400, 1_048_576),
];

fn inventory(hosts: usize, seed: u64) -> Fleet {
    let mut rng = Rng(seed);
    let clusters = hosts.div_ceil(HOSTS_PER_CLUSTER);
    let mut inv = Fleet::default();
    for c in 0..clusters {
        let cluster = format!("dc1-cluster-{c:03}");
        // Ten VLANs per cluster: 120 (the request's) in half the clusters, the others drawn
        // from 400 (100..500).
        let vlans: Vec<u16> = (0..10)
            .map(|k| {
                if k == 0 && c % 2 == 0 {
                    120
                } else {
                    100 + rng.below(400) as u16
                }
            })
            .collect();
        let shared: Vec<String> = (0..SHARED_DATASTORES)
            .map(|d| format!("{cluster}-vsan-{d}"))
            .collect();
        let first = c * HOSTS_PER_CLUSTER;
        let members: Vec<String> = (first..hosts.min(first + HOSTS_PER_CLUSTER))
            .map(|i| format!("esx-{c:03}-{:02}.dc1.example.com", i - first))
            .collect();
        for name in &shared {
            let capacity = 20_480 + rng.below(30_720);
            inv.datastores.push(Datastore {
                name: name.clone(),
                capacity_gib: capacity,
                free_gib: capacity * (10 + rng.below(70)) / 100,
                hosts: members.clone(),
                accessible: !rng.chance(5),
            });
        }
        for name in members {
            let (cpu, mem) = HOST_MODELS[rng.below(3) as usize];
            let local = format!("{name}-local");
            inv.datastores.push(Datastore {
                name: local.clone(),
                capacity_gib: 900,
                free_gib: 100 + rng.below(700),
                hosts: Vec::new(),
                accessible: true,
            });
            let mut networks = vec![
                HostNetwork {
                    name: "Management Network".into(),
                    vlan_id: Some(10),
                },
                HostNetwork {
                    name: "VM Network".into(),
                    vlan_id: None,
                },
            ];
            networks.extend(vlans.iter().map(|&v| HostNetwork {
                name: format!("pg-vlan-{v}"),
                vlan_id: Some(v),
            }));
            let mut vms = Vec::with_capacity(VMS_PER_HOST);
            let (mut cpu_used, mut mem_used) = (0, 0);
            for k in 0..VMS_PER_HOST {
                let (cpus, memory_mib) = VM_SIZES[rng.below(VM_SIZES.len() as u64) as usize];
                let cpu_mhz = u64::from(cpus) * (300 + rng.below(1_200));
                cpu_used += cpu_mhz;
                mem_used += memory_mib;
                vms.push(Vm {
                    name: format!(
                        "vm-{c:03}-{:05}",
                        (inv.hosts.len() % HOSTS_PER_CLUSTER) * 100 + k
                    ),
                    cpus,
                    cpu_mhz,
                    memory_mib,
                    disk_gib: 40 + rng.below(400),
                    datastore: Some(shared[rng.below(SHARED_DATASTORES as u64) as usize].clone()),
                    networks: vec![format!("pg-vlan-{}", vlans[rng.below(10) as usize])],
                    groups: vec![format!("app-{}", rng.below(APP_GROUPS))],
                    tags: vec![if rng.chance(700) {
                        "env:prod"
                    } else {
                        "env:dev"
                    }
                    .into()],
                    pinned: rng.chance(20),
                });
            }
            let gpu = rng.chance(62);
            inv.hosts.push(Host {
                name: name.clone(),
                cluster: cluster.clone(),
                cpu_mhz_capacity: cpu,
                cpu_mhz_used: cpu_used,
                memory_mib_capacity: mem,
                memory_mib_used: mem_used + 8_192,
                connection_state: match rng.below(1000) {
                    0..=9 => ConnectionState::Disconnected,
                    10..=14 => ConnectionState::NotResponding,
                    _ => ConnectionState::Connected,
                },
                maintenance_mode: rng.chance(20),
                datastores: vec![local],
                networks,
                pci_devices: if gpu {
                    (0..2 + rng.below(3))
                        .map(|g| PciDevice {
                            id: format!("0000:{:02x}:00.0", 0x3b + g * 0x20),
                            class_id: 0x0302,
                            vendor_id: 0x10de,
                            device_id: 0x20b5,
                            vendor_name: "NVIDIA Corporation".into(),
                            device_name: "GA100 [A100 PCIe 80GB]".into(),
                        })
                        .collect()
                } else {
                    Vec::new()
                },
                vgpu_profiles: if gpu {
                    vec![VgpuProfile {
                        name: "grid_a100-8c".into(),
                        free: rng.below(5) as u32,
                    }]
                } else {
                    Vec::new()
                },
                vms,
            });
        }
    }
    inv
}

fn decision_request() -> PlacementRequest {
    PlacementRequest {
        name: "web-new".into(),
        cpus: 4,
        memory_mib: 16_384,
        disk_gib: 100,
        network: Some(NetworkRequirement::Vlan(120)),
        anti_affinity_group: Some("app-7".into()),
        ..PlacementRequest::default()
    }
}

fn batch_requests(n: usize, seed: u64) -> Vec<PlacementRequest> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let (cpus, memory_mib) = VM_SIZES[rng.below(VM_SIZES.len() as u64) as usize];
            PlacementRequest {
                name: format!("batch-{i:04}"),
                cpus,
                memory_mib,
                disk_gib: 50 + rng.below(200),
                network: rng
                    .chance(500)
                    .then(|| NetworkRequirement::Name("VM Network".into())),
                anti_affinity_group: Some(format!("batch-app-{}", i / 3)),
                gpu: rng.chance(20).then(|| GpuRequest {
                    count: 1,
                    model: Some("a100".into()),
                    vgpu_profile: None,
                }),
                strategy: [Strategy::Spread, Strategy::Pack, Strategy::Balanced]
                    [rng.below(3) as usize],
                ..PlacementRequest::default()
            }
        })
        .collect()
}

/// Median and minimum of `runs` timings of `f`, after two untimed runs (the first large
/// allocations page-fault and tune the allocator; later ones reuse its memory).
fn median<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    black_box(f());
    black_box(f());
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .collect();
    times.sort();
    (times[runs / 2], times[0])
}

/// "median (min)" in milliseconds.
fn ms((median, min): (Duration, Duration)) -> String {
    format!(
        "{:>8.3} ({:>7.3})",
        median.as_secs_f64() * 1e3,
        min.as_secs_f64() * 1e3
    )
}

fn decide_part(sizes: &[usize]) {
    println!("(a) one decision, {VMS_PER_HOST} VMs per host: ms, median (min)");
    println!(
        "   hosts   index (new)         decide (place)      both (fn place)     decide, VMs tabled  fit / rejected"
    );
    let req = decision_request();
    for &n in sizes {
        let inv = inventory(n, 42);
        let runs = if n >= 10_000 { 15 } else { 31 };
        let index = median(runs, || Placer::new(&inv).unwrap());
        let placer = Placer::new(&inv).unwrap();
        let decide = median(runs, || placer.place(&req).unwrap());
        let both = median(runs, || place(&inv, &req).unwrap());
        let mut tabled = Placer::new(&inv).unwrap();
        tabled.index_vms();
        let warm = median(runs, || tabled.place(&req).unwrap());
        let d = placer.place(&req).unwrap();
        assert_eq!(d, tabled.place(&req).unwrap());
        println!(
            "  {n:>6}   {}  {}  {}  {}  {:>5} / {}",
            ms(index),
            ms(decide),
            ms(both),
            ms(warm),
            d.hosts_fit,
            d.rejected.len()
        );
    }
}

fn batch_part(hosts: usize, requests: usize) {
    println!(
        "(b) batch of {requests} requests over {hosts} hosts, indexing included: ms, median (min)"
    );
    let inv = inventory(hosts, 7);
    let reqs = batch_requests(requests, 9);
    let time = median(5, || place_batch(&inv, &reqs).unwrap());
    let batch = place_batch(&inv, &reqs).unwrap();
    println!("  {}   {}", ms(time), batch.summary);
}

fn rebalance_part(hosts: usize) {
    println!("(c) rebalance over {hosts} hosts, at most 10 moves: ms, median (min)");
    let inv = inventory(hosts, 11);
    let options = RebalanceOptions::default();
    let time = median(5, || rebalance(&inv, &options).unwrap());
    let plan = rebalance(&inv, &options).unwrap();
    println!("  {}   {}", ms(time), plan.summary);
}

fn main() {
    let all: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test --all-targets` does not.
    let full = all.iter().any(|a| a == "--bench");
    if !full {
        println!(
            "smoke run on small inventories (use `cargo bench --bench placement` for figures)"
        );
    }
    let args: Vec<&String> = all.iter().filter(|a| !a.starts_with("--")).collect();
    let want = |part: &str| args.is_empty() || args.iter().any(|a| *a == part);
    if want("decide") {
        decide_part(if full { &[100, 1_000, 10_000] } else { &[100] });
    }
    if want("batch") {
        if full {
            batch_part(1_000, 1_000);
        } else {
            batch_part(100, 100);
        }
    }
    if want("rebalance") {
        rebalance_part(if full { 1_000 } else { 100 });
    }
}
