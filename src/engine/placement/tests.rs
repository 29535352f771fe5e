//! Unit tests of every filter, strategy, batch and rebalancing rule, with expectations worked
//! out by hand in the comments; plus the builders the property tests share.

use super::*;

/// A connected host: 20,000 MHz, 65,536 MiB, sees `ds1`, has `VM Network` (no VLAN) and
/// `vlan-120` (VLAN 120), nothing used.
pub(super) fn host(name: &str) -> Host {
    Host {
        name: name.into(),
        cluster: "c1".into(),
        cpu_mhz_capacity: 20_000,
        memory_mib_capacity: 65_536,
        datastores: vec!["ds1".into()],
        networks: vec![
            HostNetwork {
                name: "VM Network".into(),
                vlan_id: None,
            },
            HostNetwork {
                name: "vlan-120".into(),
                vlan_id: Some(120),
            },
        ],
        ..Host::default()
    }
}

pub(super) fn datastore(name: &str, capacity_gib: u64, free_gib: u64) -> Datastore {
    Datastore {
        name: name.into(),
        capacity_gib,
        free_gib,
        ..Datastore::default()
    }
}

/// Hosts plus `ds1` (1000 GiB, 500 free).
fn inventory(hosts: Vec<Host>) -> Fleet {
    Fleet {
        hosts,
        datastores: vec![datastore("ds1", 1000, 500)],
        anti_affinity_groups: Vec::new(),
    }
}

fn request(name: &str) -> PlacementRequest {
    PlacementRequest {
        name: name.into(),
        cpus: 2,
        memory_mib: 4096,
        disk_gib: 40,
        ..PlacementRequest::default()
    }
}

fn vm(name: &str, groups: &[&str]) -> Vm {
    Vm {
        name: name.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ..Vm::default()
    }
}

fn gpu(id: &str, model: &str) -> PciDevice {
    PciDevice {
        id: id.into(),
        class_id: 0x0302,
        vendor_id: 0x10de,
        device_id: 0x20b5,
        vendor_name: "NVIDIA Corporation".into(),
        device_name: model.into(),
    }
}

fn rejection<'d>(d: &'d Decision, host: &str) -> &'d Rejection {
    d.rejected
        .iter()
        .find(|r| r.host == host)
        .unwrap_or_else(|| panic!("{host} not rejected: {d:#?}"))
}

fn fits(d: &Decision) -> Vec<&str> {
    let mut hosts: Vec<&str> = d.candidates.iter().map(|c| c.host.as_str()).collect();
    hosts.sort_unstable();
    hosts
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

// ---------------------------------------------------------------------------------------------
// Filters.

#[test]
fn host_list_filter() {
    let inv = inventory(vec![host("a"), host("b"), host("c")]);
    let req = PlacementRequest {
        include_hosts: vec!["a".into(), "b".into()],
        exclude_hosts: vec!["b".into()],
        ..request("vm")
    };
    let d = place(&inv, &req).unwrap();
    assert_eq!(fits(&d), ["a"]);
    let b = rejection(&d, "b");
    assert_eq!(
        (b.filter, b.reason.as_str()),
        (Filter::HostList, "listed in exclude_hosts")
    );
    let c = rejection(&d, "c");
    assert_eq!(c.reason, "not listed in include_hosts");
    assert_eq!(
        d.summary,
        "1/3 hosts fit, chose a (datastore ds1); rejected: 1 excluded, 1 not in include_hosts"
    );
}

#[test]
fn connection_and_maintenance_filters() {
    let mut down = host("down");
    down.connection_state = ConnectionState::Disconnected;
    let mut silent = host("silent");
    silent.connection_state = ConnectionState::NotResponding;
    let mut maint = host("maint");
    maint.maintenance_mode = true;
    let d = place(
        &inventory(vec![down, silent, maint, host("ok")]),
        &request("vm"),
    )
    .unwrap();
    assert_eq!(d.placement.as_ref().unwrap().host, "ok");
    assert_eq!(rejection(&d, "down").filter, Filter::Connection);
    assert_eq!(rejection(&d, "down").reason, "host is disconnected");
    assert_eq!(rejection(&d, "silent").reason, "host is not responding");
    let m = rejection(&d, "maint");
    assert_eq!(
        (m.filter, m.reason.as_str()),
        (Filter::Maintenance, "host is in maintenance mode")
    );
    assert_eq!((d.hosts_total, d.hosts_fit), (4, 1));
}

#[test]
fn anti_affinity_filter_matches_groups_tags_and_avoided_vms() {
    let mut a = host("a");
    a.vms = vec![vm("web-1", &["web"])];
    let mut b = host("b");
    b.vms = vec![Vm {
        tags: vec!["web".into()],
        ..vm("web-2", &[])
    }];
    let mut c = host("c");
    c.vms = vec![vm("db-1", &[])];
    let inv = inventory(vec![a, b, c, host("d")]);
    let req = PlacementRequest {
        anti_affinity_group: Some("web".into()),
        avoid_vms: vec!["db-1".into(), "nowhere".into()],
        ..request("web-3")
    };
    let d = place(&inv, &req).unwrap();
    assert_eq!(fits(&d), ["d"]);
    assert_eq!(
        rejection(&d, "a").reason,
        "runs web-1, a member of anti-affinity group web"
    );
    assert_eq!(rejection(&d, "b").filter, Filter::AntiAffinity);
    assert_eq!(
        rejection(&d, "c").reason,
        "runs db-1, which this VM must avoid"
    );
    assert_eq!(
        d.summary,
        "1/4 hosts fit, chose d (datastore ds1); rejected: 2 already run group web, 1 run a VM to avoid"
    );
}

#[test]
fn affinity_filter() {
    let mut b = host("b");
    b.vms = vec![vm("db-1", &[])];
    let inv = inventory(vec![host("a"), b]);
    let req = PlacementRequest {
        affinity_vms: vec!["db-1".into()],
        ..request("app")
    };
    let d = place(&inv, &req).unwrap();
    assert_eq!(d.placement.as_ref().unwrap().host, "b");
    let a = rejection(&d, "a");
    assert_eq!(
        (a.filter, a.reason.as_str()),
        (Filter::Affinity, "does not run db-1, which runs on b")
    );

    let req = PlacementRequest {
        affinity_vms: vec!["ghost".into()],
        ..request("app")
    };
    let d = place(&inv, &req).unwrap();
    assert!(d.placement.is_none());
    assert_eq!(
        rejection(&d, "a").reason,
        "does not run ghost: no VM of that name in the inventory"
    );
    assert_eq!(d.summary, "0/2 hosts fit: 2 do not run ghost");
}

#[test]
fn network_filter_by_name_and_vlan() {
    let mut a = host("a");
    a.networks.clear();
    let mut b = host("b");
    // Two port groups on VLAN 120: the first by name is chosen.
    b.networks.push(HostNetwork {
        name: "pg-120".into(),
        vlan_id: Some(120),
    });
    let inv = inventory(vec![a, b]);
    let req = PlacementRequest {
        network: Some(NetworkRequirement::Vlan(120)),
        ..request("vm")
    };
    let d = place(&inv, &req).unwrap();
    let p = d.placement.as_ref().unwrap();
    assert_eq!(
        (p.host.as_str(), p.network.as_deref()),
        ("b", Some("pg-120"))
    );
    let a = rejection(&d, "a");
    assert_eq!(
        (a.filter, a.reason.as_str()),
        (Filter::Network, "has no port group on VLAN 120")
    );

    let req = PlacementRequest {
        network: Some(NetworkRequirement::Name("VM Network".into())),
        ..request("vm")
    };
    let d = place(&inv, &req).unwrap();
    assert_eq!(
        d.placement.as_ref().unwrap().network.as_deref(),
        Some("VM Network")
    );
    assert_eq!(rejection(&d, "a").reason, "has no network named VM Network");

    let req = PlacementRequest {
        network: Some(NetworkRequirement::Name("nowhere".into())),
        ..request("vm")
    };
    let d = place(&inv, &req).unwrap();
    assert_eq!(d.summary, "0/2 hosts fit: 2 missing network nowhere");
}

#[test]
fn gpu_filter_passthrough_and_vgpu() {
    let mut a = host("a");
    a.pci_devices = vec![gpu("0000:3b:00.0", "GA100 [A100 PCIe 40GB]")];
    let mut b = host("b");
    b.pci_devices = vec![
        gpu("0000:af:00.0", "GA100 [A100 PCIe 40GB]"),
        gpu("0000:3b:00.0", "GA100 [A100 PCIe 40GB]"),
        PciDevice {
            class_id: 0x0200, // a NIC: never a GPU
            ..gpu("0000:5e:00.0", "A100 lookalike NIC")
        },
    ];
    let mut c = host("c");
    c.pci_devices = vec![gpu("0000:3b:00.0", "TU104GL [Tesla T4]")];
    c.vgpu_profiles = vec![VgpuProfile {
        name: "grid_t4-4q".into(),
        free: 1,
    }];
    let inv = inventory(vec![a, b, c]);

    let req = PlacementRequest {
        gpu: Some(GpuRequest {
            count: 2,
            model: Some("A100".into()),
            vgpu_profile: None,
        }),
        ..request("ml")
    };
    let d = place(&inv, &req).unwrap();
    let p = d.placement.as_ref().unwrap();
    assert_eq!(p.host, "b");
    // In PCI id order.
    assert_eq!(p.pci_devices, ["0000:3b:00.0", "0000:af:00.0"]);
    let a = rejection(&d, "a");
    assert_eq!(
        (a.filter, a.reason.as_str()),
        (Filter::Gpu, "needs 2 free GPU matching \"a100\", has 1")
    );
    assert_eq!(
        rejection(&d, "c").reason,
        "needs 2 free GPU matching \"a100\", has 0"
    );

    let req = PlacementRequest {
        gpu: Some(GpuRequest {
            count: 1,
            model: None,
            vgpu_profile: Some("grid_t4-4q".into()),
        }),
        ..request("vdi")
    };
    let d = place(&inv, &req).unwrap();
    let p = d.placement.as_ref().unwrap();
    assert_eq!(
        (p.host.as_str(), p.vgpu_profile.as_deref()),
        ("c", Some("grid_t4-4q"))
    );
    assert_eq!(
        rejection(&d, "a").reason,
        "needs 1 vGPU of profile grid_t4-4q, has 0 free"
    );
}

#[test]
fn a_bmc_or_virtual_display_is_no_gpu() {
    // Host "a" offers only its BMC's VGA and a virtual SVGA for passthrough; "b" a real GPU.
    let console = |id: &str, vendor_id: u16, name: &str| PciDevice {
        id: id.into(),
        class_id: 0x0300,
        vendor_id,
        device_id: 0x2000,
        vendor_name: name.into(),
        device_name: "VGA".into(),
    };
    let mut a = host("a");
    a.pci_devices = vec![
        console("0000:03:00.0", 0x1a03, "ASPEED Technology, Inc."),
        console("0000:00:0f.0", 0x15ad, "VMware"),
    ];
    let mut b = host("b");
    b.pci_devices = vec![gpu("0000:3b:00.0", "TU104GL [Tesla T4]")];
    let req = PlacementRequest {
        gpu: Some(GpuRequest {
            count: 1,
            model: None,
            vgpu_profile: None,
        }),
        ..request("ml")
    };
    let d = place(&inventory(vec![a, b]), &req).unwrap();
    assert_eq!(d.placement.as_ref().unwrap().host, "b");
    assert_eq!(rejection(&d, "a").filter, Filter::Gpu);
}

#[test]
fn gpu_criterion_keeps_gpu_hosts_for_gpu_vms() {
    // Identical hosts except that "a" has a free GPU: a plain VM goes to "b" although "a"
    // wins the name tie-break.
    let mut a = host("a");
    a.pci_devices = vec![gpu("0000:3b:00.0", "T4")];
    let d = place(&inventory(vec![a, host("b")]), &request("vm")).unwrap();
    assert_eq!(d.placement.as_ref().unwrap().host, "b");
    assert_eq!(d.candidates[1].score.gpu, 0.0);
    assert!(close(
        d.candidates[0].score.total - d.candidates[1].score.total,
        10.0
    ));
}

#[test]
fn cpu_filter_uses_overcommit() {
    // 10,000 MHz × 4 = 40,000 allocatable, 38,000 used: 2,000 free; 4 vCPU × 1000 = 4,000.
    let mut a = host("a");
    a.cpu_mhz_capacity = 10_000;
    a.cpu_mhz_used = 38_000;
    let req = PlacementRequest {
        cpus: 4,
        ..request("vm")
    };
    let d = place(&inventory(vec![a.clone()]), &req).unwrap();
    let r = rejection(&d, "a");
    assert_eq!(r.filter, Filter::Cpu);
    assert_eq!(
        r.reason,
        "needs 4000 MHz (4 vCPU × 1000 MHz), has 2000 free of 40000 (10000 MHz × 4)"
    );
    assert_eq!(d.summary, "0/1 hosts fit: 1 insufficient CPU");

    // 2 vCPU × 1000 = 2,000 fits exactly, leaving 0.
    let req = PlacementRequest {
        cpus: 2,
        ..request("vm")
    };
    let d = place(&inventory(vec![a]), &req).unwrap();
    assert_eq!(d.placement.unwrap().headroom.cpu_mhz, 0);
}

#[test]
fn memory_filter() {
    let mut a = host("a");
    a.memory_mib_used = 53_536; // 12,000 free of 65,536
    let req = PlacementRequest {
        memory_mib: 32_768,
        ..request("vm")
    };
    let d = place(&inventory(vec![a.clone()]), &req).unwrap();
    let r = rejection(&d, "a");
    assert_eq!(r.filter, Filter::Memory);
    assert_eq!(
        r.reason,
        "needs 32768 MiB, has 12000 free of 65536 (65536 MiB × 1)"
    );
    // Over-committed 1.5×: 98,304 allocatable, 44,768 free, 12,000 left after.
    let req = PlacementRequest {
        memory_overcommit: 1.5,
        ..req
    };
    let d = place(&inventory(vec![a]), &req).unwrap();
    assert_eq!(
        d.placement.unwrap().headroom.memory_mib,
        98_304 - 53_536 - 32_768
    );
}

#[test]
fn datastore_filter_most_free_share_and_named() {
    let mut a = host("a");
    a.datastores = vec!["big".into(), "small".into(), "offline".into()];
    let mut b = host("b");
    b.datastores = vec!["small".into()];
    let inv = Fleet {
        hosts: vec![a, b, host("c")],
        datastores: vec![
            // After 80 GiB: big keeps 4000 - 80 of 10000 (39.2%), small 100 - 80 of 100 (20%).
            datastore("big", 10_000, 4_000),
            datastore("small", 100, 100),
            Datastore {
                accessible: false,
                ..datastore("offline", 10_000, 10_000)
            },
            datastore("ds1", 100, 10),
        ],
        ..Fleet::default()
    };
    let req = PlacementRequest {
        disk_gib: 80,
        ..request("vm")
    };
    let d = place(&inv, &req).unwrap();
    let a = d.candidates.iter().find(|c| c.host == "a").unwrap();
    assert_eq!(a.datastore, "big");
    assert_eq!(a.headroom.disk_gib, 3_920);
    assert!(close(a.score.datastore, 39.2));
    let c = rejection(&d, "c");
    assert_eq!(
        (c.filter, c.reason.as_str()),
        (
            Filter::Datastore,
            "needs 80 GiB, the most any datastore it sees has free is 10"
        )
    );

    let named = |name: &str| PlacementRequest {
        disk_gib: 80,
        datastore: DatastorePreference::Named(name.into()),
        ..request("vm")
    };
    let d = place(&inv, &named("small")).unwrap();
    assert_eq!(fits(&d), ["a", "b"]);
    assert!(d.candidates.iter().all(|c| c.datastore == "small"));
    assert_eq!(rejection(&d, "c").reason, "does not see datastore small");
    let d = place(&inv, &named("ds1")).unwrap();
    assert_eq!(
        rejection(&d, "c").reason,
        "needs 80 GiB on ds1, has 10 free"
    );
    let d = place(&inv, &named("offline")).unwrap();
    assert_eq!(
        rejection(&d, "a").reason,
        "datastore offline is inaccessible"
    );
    let d = place(&inv, &named("nope")).unwrap();
    assert_eq!(
        d.summary,
        "0/3 hosts fit: 3 datastore nope not in inventory"
    );

    let mut lonely = host("lonely");
    lonely.datastores.clear();
    let d = place(&inventory(vec![lonely]), &request("vm")).unwrap();
    assert_eq!(d.rejected[0].reason, "sees no accessible datastore");
}

#[test]
fn summary_counts_largest_first_then_filter_order() {
    let mut hosts = Vec::new();
    for i in 1..=3 {
        let mut h = host(&format!("full-{i}"));
        h.memory_mib_used = 60_000;
        hosts.push(h);
    }
    for i in 1..=2 {
        let mut h = host(&format!("novlan-{i}"));
        h.networks.truncate(1);
        hosts.push(h);
    }
    for i in 1..=2 {
        let mut h = host(&format!("maint-{i}"));
        h.maintenance_mode = true;
        hosts.push(h);
    }
    let mut down = host("down");
    down.connection_state = ConnectionState::Disconnected;
    hosts.push(down);
    let req = PlacementRequest {
        memory_mib: 32_768,
        network: Some(NetworkRequirement::Vlan(120)),
        ..request("vm")
    };
    let d = place(&inventory(hosts), &req).unwrap();
    assert_eq!(
        d.summary,
        "0/8 hosts fit: 3 insufficient memory, 2 in maintenance, 2 missing VLAN 120, 1 disconnected"
    );
    assert_eq!(d.rejected.len(), 8);
    // By host name.
    assert_eq!(d.rejected[0].host, "down");
    assert_eq!(
        rejection(&d, "full-1").reason,
        "needs 32768 MiB, has 5536 free of 65536 (65536 MiB × 1)"
    );
    assert_eq!(
        place(&Fleet::default(), &req).unwrap().summary,
        "0/0 hosts fit: the inventory has no hosts"
    );
}

// ---------------------------------------------------------------------------------------------
// Strategies.

/// Three hosts of 10,000 MHz and 10,000 MiB (no over-commit), ds1 at 50% after placement,
/// and a request of 1 vCPU × 1000 MHz and 1000 MiB. After placement:
/// - A: CPU 2,000 (20%), memory 6,000 (60%);
/// - B: CPU 5,000 (50%), memory 4,000 (40%);
/// - C: CPU 1,000 (10%), memory 9,000 (90%).
fn strategy_case(strategy: Strategy) -> Decision {
    let mk = |name: &str, cpu: u64, mem: u64| Host {
        cpu_mhz_capacity: 10_000,
        cpu_mhz_used: cpu,
        memory_mib_capacity: 10_000,
        memory_mib_used: mem,
        ..host(name)
    };
    let inv = inventory(vec![
        mk("A", 1_000, 5_000),
        mk("B", 4_000, 3_000),
        mk("C", 0, 8_000),
    ]);
    let req = PlacementRequest {
        cpus: 1,
        memory_mib: 1_000,
        disk_gib: 0,
        cpu_overcommit: 1.0,
        strategy,
        ..request("vm")
    };
    place(&inv, &req).unwrap()
}

fn totals(d: &Decision) -> Vec<(String, f64)> {
    d.candidates
        .iter()
        .map(|c| (c.host.clone(), c.score.total))
        .collect()
}

#[test]
fn spread_prefers_least_allocated() {
    // Weights cpu 4, memory 4, datastore 1, gpu 1 (sum 10); datastore 50, gpu 100.
    // A: (4×80 + 4×40 + 50 + 100) / 10 = 63; B: (4×50 + 4×60 + 150) / 10 = 59;
    // C: (4×90 + 4×10 + 150) / 10 = 55.
    let d = strategy_case(Strategy::Spread);
    let t = totals(&d);
    assert_eq!(
        t.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
        ["A", "B", "C"]
    );
    assert!(
        close(t[0].1, 63.0) && close(t[1].1, 59.0) && close(t[2].1, 55.0),
        "{t:?}"
    );
    let a = &d.candidates[0];
    assert!(
        close(a.score.cpu, 80.0) && close(a.score.memory, 40.0) && close(a.score.datastore, 50.0)
    );
    assert_eq!(
        a.headroom,
        Headroom {
            cpu_mhz: 8_000,
            memory_mib: 4_000,
            disk_gib: 500
        }
    );
}

#[test]
fn pack_prefers_most_allocated() {
    // A: (4×20 + 4×60 + 150) / 10 = 47; B: (4×50 + 4×40 + 150) / 10 = 51;
    // C: (4×10 + 4×90 + 150) / 10 = 55.
    let t = totals(&strategy_case(Strategy::Pack));
    assert_eq!(
        t.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
        ["C", "B", "A"]
    );
    assert!(
        close(t[0].1, 55.0) && close(t[1].1, 51.0) && close(t[2].1, 47.0),
        "{t:?}"
    );
}

#[test]
fn balanced_prefers_equal_cpu_and_memory_utilisation() {
    // Weights cpu 1, memory 1, balance 6, datastore 1, gpu 1 (sum 10).
    // A: balance 60: (80 + 40 + 360 + 150) / 10 = 63; B: balance 90: (50 + 60 + 540 + 150) / 10
    // = 80; C: balance 20: (90 + 10 + 120 + 150) / 10 = 37.
    let d = strategy_case(Strategy::Balanced);
    let t = totals(&d);
    assert_eq!(
        t.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
        ["B", "A", "C"]
    );
    assert!(
        close(t[0].1, 80.0) && close(t[1].1, 63.0) && close(t[2].1, 37.0),
        "{t:?}"
    );
    assert_eq!(d.weights, Weights::of(Strategy::Balanced));
}

#[test]
fn ties_go_to_the_host_name_and_candidates_are_capped() {
    let inv = inventory(vec![host("c"), host("a"), host("b")]);
    let req = PlacementRequest {
        max_candidates: 2,
        ..request("vm")
    };
    let d = place(&inv, &req).unwrap();
    assert_eq!(d.placement.as_ref().unwrap().host, "a");
    let order: Vec<&str> = d.candidates.iter().map(|c| c.host.as_str()).collect();
    assert_eq!(order, ["a", "b"]);
    assert_eq!(d.hosts_fit, 3);
    let d = place(
        &inv,
        &PlacementRequest {
            max_candidates: 0,
            ..req
        },
    )
    .unwrap();
    assert!(d.candidates.is_empty());
    assert_eq!(d.placement.unwrap().host, "a");
}

#[test]
fn invalid_requests_and_inventories_are_errors() {
    let inv = inventory(vec![host("a")]);
    let bad = [
        PlacementRequest {
            cpus: 0,
            ..request("x")
        },
        PlacementRequest {
            per_vcpu_mhz: 0,
            ..request("x")
        },
        PlacementRequest {
            memory_mib: 0,
            ..request("x")
        },
        PlacementRequest {
            cpu_overcommit: 0.0,
            ..request("x")
        },
        PlacementRequest {
            memory_overcommit: f64::NAN,
            ..request("x")
        },
        PlacementRequest {
            gpu: Some(GpuRequest {
                count: 0,
                model: None,
                vgpu_profile: None,
            }),
            ..request("x")
        },
        PlacementRequest {
            gpu: Some(GpuRequest {
                count: 1,
                model: Some("a100".into()),
                vgpu_profile: Some("grid".into()),
            }),
            ..request("x")
        },
    ];
    for req in bad {
        assert!(
            matches!(place(&inv, &req), Err(Error::InvalidRequest { .. })),
            "{req:?}"
        );
    }
    let dup = inventory(vec![host("a"), host("a")]);
    assert_eq!(
        place(&dup, &request("x")).unwrap_err(),
        Error::DuplicateHost("a".into())
    );
}

#[test]
fn serde_defaults_and_names() {
    let req: PlacementRequest = serde_json::from_str(
        r#"{"cpus": 2, "memory_mib": 4096, "network": {"vlan": 120},
            "datastore": {"named": "ssd"}, "strategy": "balanced"}"#,
    )
    .unwrap();
    assert_eq!(req.per_vcpu_mhz, 1000);
    assert_eq!(req.cpu_overcommit, 4.0);
    assert_eq!(req.memory_overcommit, 1.0);
    assert_eq!(req.network, Some(NetworkRequirement::Vlan(120)));
    assert_eq!(req.datastore, DatastorePreference::Named("ssd".into()));
    assert_eq!(req.strategy, Strategy::Balanced);
    let h: Host = serde_json::from_str(
        r#"{"name": "h", "cpu_mhz_capacity": 1, "memory_mib_capacity": 1,
            "connection_state": "notResponding"}"#,
    )
    .unwrap();
    assert_eq!(h.connection_state, ConnectionState::NotResponding);
    let ds: Datastore =
        serde_json::from_str(r#"{"name": "d", "capacity_gib": 1, "free_gib": 1}"#).unwrap();
    assert!(ds.accessible);
    let d = place(&inventory(vec![host("a")]), &req).unwrap();
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["rejected"][0]["filter"], "datastore");
    let back: Decision = serde_json::from_value(json).unwrap();
    assert_eq!(back, d);
}

// ---------------------------------------------------------------------------------------------
// Batch.

#[test]
fn batch_spreads_an_anti_affinity_group() {
    let inv = inventory(vec![host("a"), host("b"), host("c")]);
    let web = |i: usize| PlacementRequest {
        anti_affinity_group: Some("web".into()),
        // Pack would put them all on one host without the group.
        strategy: Strategy::Pack,
        ..request(&format!("web-{i}"))
    };
    let requests: Vec<_> = (0..4).map(web).collect();
    let batch = place_batch(&inv, &requests).unwrap();
    let hosts: Vec<Option<&str>> = batch
        .decisions
        .iter()
        .map(|d| d.placement.as_ref().map(|p| p.host.as_str()))
        .collect();
    assert_eq!(hosts, [Some("a"), Some("b"), Some("c"), None]);
    let last = &batch.decisions[3];
    assert_eq!(
        rejection(last, "a").reason,
        "runs web-0, a member of anti-affinity group web"
    );
    assert_eq!(
        batch.summary,
        "3/4 placed; web-3: 0/3 hosts fit: 3 already run group web"
    );
}

#[test]
fn batch_accounts_for_earlier_requests() {
    // 65,536 MiB per host: two 40,000 MiB VMs cannot share one; the third finds no room; the
    // disk of each comes off ds1 (500 GiB free): 200 + 200 leaves 100, too little for 200.
    let inv = inventory(vec![host("a"), host("b")]);
    let big = |name: &str, disk| PlacementRequest {
        memory_mib: 40_000,
        disk_gib: disk,
        strategy: Strategy::Pack,
        ..request(name)
    };
    let batch = place_batch(&inv, &[big("x", 200), big("y", 200), big("z", 10)]).unwrap();
    let [x, y, z] = &batch.decisions[..] else {
        panic!()
    };
    assert_eq!(x.placement.as_ref().unwrap().host, "a");
    assert_eq!(y.placement.as_ref().unwrap().host, "b");
    assert_eq!(y.placement.as_ref().unwrap().headroom.disk_gib, 100);
    assert!(z.placement.is_none());
    assert_eq!(
        rejection(z, "a").reason,
        "needs 40000 MiB, has 25536 free of 65536 (65536 MiB × 1)"
    );

    // Later requests can name earlier ones.
    let follow = PlacementRequest {
        affinity_vms: vec!["x".into()],
        ..request("sidecar")
    };
    let batch = place_batch(&inv, &[big("x", 10), follow]).unwrap();
    assert_eq!(batch.decisions[1].placement.as_ref().unwrap().host, "a");
}

#[test]
fn batch_never_hands_out_a_gpu_twice() {
    let mut a = host("a");
    a.pci_devices = vec![gpu("0000:3b:00.0", "T4"), gpu("0000:af:00.0", "T4")];
    a.vgpu_profiles = vec![VgpuProfile {
        name: "grid_t4-4q".into(),
        free: 1,
    }];
    let inv = inventory(vec![a]);
    let pt = PlacementRequest {
        gpu: Some(GpuRequest {
            count: 1,
            model: Some("t4".into()),
            vgpu_profile: None,
        }),
        ..request("g")
    };
    let vgpu = PlacementRequest {
        gpu: Some(GpuRequest {
            count: 1,
            model: None,
            vgpu_profile: Some("grid_t4-4q".into()),
        }),
        ..request("v")
    };
    let batch = place_batch(&inv, &[pt.clone(), pt.clone(), pt, vgpu.clone(), vgpu]).unwrap();
    let devices: Vec<Vec<String>> = batch
        .decisions
        .iter()
        .map(|d| {
            d.placement
                .as_ref()
                .map_or(vec![], |p| p.pci_devices.clone())
        })
        .collect();
    assert_eq!(devices[0], ["0000:3b:00.0"]);
    assert_eq!(devices[1], ["0000:af:00.0"]);
    assert!(batch.decisions[2].placement.is_none());
    assert!(batch.decisions[3].placement.is_some());
    assert_eq!(
        batch.decisions[4].rejected[0].reason,
        "needs 1 vGPU of profile grid_t4-4q, has 0 free"
    );
}

#[test]
fn batch_rejects_an_invalid_request_before_placing() {
    let inv = inventory(vec![host("a")]);
    let err = place_batch(
        &inv,
        &[
            request("ok"),
            PlacementRequest {
                cpus: 0,
                ..request("bad")
            },
        ],
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::InvalidRequest { ref request, field: "cpus", .. } if request == "bad")
    );
}

// ---------------------------------------------------------------------------------------------
// Rebalancing.

/// A host of 10,000 MHz and 10,000 MiB in cluster c1 seeing ds1.
fn rb_host(name: &str, vms: Vec<Vm>) -> Host {
    let cpu = vms.iter().map(|v| v.cpu_mhz).sum();
    let mem = vms.iter().map(|v| v.memory_mib).sum();
    Host {
        cpu_mhz_capacity: 10_000,
        memory_mib_capacity: 10_000,
        cpu_mhz_used: cpu,
        memory_mib_used: mem,
        vms,
        ..host(name)
    }
}

fn rb_vm(name: &str, cpu: u64, mem: u64) -> Vm {
    Vm {
        name: name.into(),
        cpus: 1,
        cpu_mhz: cpu,
        memory_mib: mem,
        disk_gib: 10,
        datastore: Some("ds1".into()),
        ..Vm::default()
    }
}

#[test]
fn rebalance_moves_load_from_busy_to_idle() {
    // a: two VMs of 2,000 MHz / 2,000 MiB: load 0.4; b: empty: load 0. Mean 0.2, deviation 0.2.
    // Moving one VM makes both 0.2: deviation 0; nothing after that helps.
    let inv = inventory(vec![
        rb_host(
            "a",
            vec![rb_vm("v1", 2_000, 2_000), rb_vm("v2", 2_000, 2_000)],
        ),
        rb_host("b", vec![]),
    ]);
    let plan = rebalance(&inv, &RebalanceOptions::default()).unwrap();
    assert!(
        close(plan.imbalance_before, 0.2) && close(plan.imbalance_after, 0.0),
        "{plan:#?}"
    );
    assert_eq!(plan.moves.len(), 1);
    let m = &plan.moves[0];
    // v1 and v2 tie on everything but the name.
    assert_eq!(
        (m.vm.as_str(), m.from.as_str(), m.to.as_str()),
        ("v1", "a", "b")
    );
    assert_eq!(
        (m.priority, m.storage_move, m.bytes_to_move),
        (2, false, 10 << 30)
    );
    assert_eq!(m.datastore.as_deref(), Some("ds1"));
    assert_eq!(
        m.reason,
        "a at 40% load vs cluster mean 20%: b at 0% takes v1 (1 vCPU, 2000 MHz, 2000 MiB), imbalance 0.200 -> 0.000"
    );
    assert_eq!(
        plan.summary,
        "1 move takes the imbalance from 0.200 to 0.000 over 2 hosts"
    );
    assert!(close(plan.hosts[1].after, 0.2));
}

#[test]
fn rebalance_respects_constraints_and_bounds() {
    // b already runs a member of "web" and c lacks v1's network, so v1 cannot leave a (pinned v2
    // never moves); d is in maintenance (not a target, not counted).
    let mut v1 = rb_vm("v1", 3_000, 3_000);
    v1.groups = vec!["web".into()];
    v1.networks = vec!["vlan-120".into()];
    let mut v2 = rb_vm("v2", 3_000, 3_000);
    v2.pinned = true;
    let mut w = rb_vm("w", 100, 100);
    w.groups = vec!["web".into()];
    let mut c = rb_host("c", vec![]);
    c.networks.truncate(1);
    let mut d = rb_host("d", vec![]);
    d.maintenance_mode = true;
    let mut inv = inventory(vec![
        rb_host("a", vec![v1, v2]),
        rb_host("b", vec![w]),
        c,
        d,
    ]);
    inv.anti_affinity_groups = vec!["web".into()];
    let plan = rebalance(&inv, &RebalanceOptions::default()).unwrap();
    assert!(plan.moves.is_empty(), "{plan:#?}");
    assert_eq!(plan.hosts.len(), 3);
    assert!(plan.summary.starts_with("no move lowers the imbalance"));

    // Without the group the move happens, to b (c still lacks the network).
    inv.anti_affinity_groups.clear();
    let plan = rebalance(&inv, &RebalanceOptions::default()).unwrap();
    assert_eq!(
        (plan.moves[0].vm.as_str(), plan.moves[0].to.as_str()),
        ("v1", "b")
    );
    // Then w (now on the busiest host but one) moves to the empty c: v1 never moves twice.
    assert_eq!(plan.moves.len(), 2, "{plan:#?}");
    assert_eq!(
        (plan.moves[1].vm.as_str(), plan.moves[1].to.as_str()),
        ("w", "c")
    );

    // max_moves bounds the plan.
    let busy = rb_host(
        "a",
        (0..6)
            .map(|i| rb_vm(&format!("v{i}"), 1_000, 1_000))
            .collect(),
    );
    let inv = inventory(vec![busy, rb_host("b", vec![]), rb_host("c", vec![])]);
    let plan = rebalance(
        &inv,
        &RebalanceOptions {
            max_moves: 2,
            ..RebalanceOptions::default()
        },
    )
    .unwrap();
    assert_eq!(plan.moves.len(), 2);
    assert!(plan.moves[0].imbalance_after < plan.moves[0].imbalance_before);
    assert!(close(
        plan.moves[1].imbalance_before,
        plan.moves[0].imbalance_after
    ));
}

#[test]
fn rebalance_separates_anti_affinity_members_first() {
    let mut w1 = rb_vm("web-1", 1_000, 1_000);
    w1.groups = vec!["web".into()];
    let mut w2 = rb_vm("web-2", 1_000, 1_000);
    w2.tags = vec!["web".into()];
    let mut w3 = rb_vm("web-3", 1_000, 1_000);
    w3.groups = vec!["web".into()];
    w3.pinned = true;
    let mut inv = inventory(vec![
        rb_host("a", vec![w2, w1, w3]),
        rb_host("b", vec![rb_vm("x", 500, 500)]),
    ]);
    inv.anti_affinity_groups = vec!["web".into()];
    let plan = rebalance(&inv, &RebalanceOptions::default()).unwrap();
    let m = &plan.moves[0];
    // web-1 stays (first by name); web-2 moves; pinned web-3 cannot.
    assert_eq!(
        (m.vm.as_str(), m.to.as_str(), m.priority),
        ("web-2", "b", 1)
    );
    assert_eq!(
        m.reason,
        "web-2 shares a with web-1, both in anti-affinity group web; b runs no member"
    );
    assert_eq!(
        plan.unresolved,
        ["web-3 shares a with web-1 (anti-affinity group web) and cannot move"]
    );
    assert!(
        plan.summary.ends_with("; 1 fixes anti-affinity"),
        "{}",
        plan.summary
    );
}

#[test]
fn rebalance_storage_move_when_the_target_lacks_the_datastore() {
    let mut b = rb_host("b", vec![]);
    b.datastores = vec!["local-b".into()];
    let mut inv = inventory(vec![
        rb_host(
            "a",
            vec![rb_vm("v1", 2_000, 2_000), rb_vm("v2", 2_000, 2_000)],
        ),
        b,
    ]);
    inv.datastores.push(datastore("local-b", 100, 100));
    let plan = rebalance(&inv, &RebalanceOptions::default()).unwrap();
    let m = &plan.moves[0];
    assert!(m.storage_move);
    assert_eq!(m.datastore.as_deref(), Some("local-b"));
    assert!(matches!(
        rebalance(
            &inv,
            &RebalanceOptions {
                cpu_overcommit: -1.0,
                ..RebalanceOptions::default()
            }
        ),
        Err(Error::InvalidOptions {
            field: "cpu_overcommit",
            ..
        })
    ));
}

#[test]
fn rebalance_measures_and_moves_within_clusters() {
    // c2: c runs two VMs (load 0.4), d is empty: deviation 0.2. c1: e alone, empty: 0.
    // The VM goes to d, never to e in the other cluster, however idle. Pooled imbalance over
    // the three hosts: sqrt((0.2² × 2 + 0) / 3) = 0.1633 before, 0 after.
    let in_c2 = |mut h: Host| {
        h.cluster = "c2".into();
        h
    };
    let inv = inventory(vec![
        in_c2(rb_host(
            "c",
            vec![rb_vm("v1", 2_000, 2_000), rb_vm("v2", 2_000, 2_000)],
        )),
        in_c2(rb_host("d", vec![])),
        rb_host("e", vec![]),
    ]);
    let plan = rebalance(&inv, &RebalanceOptions::default()).unwrap();
    assert_eq!(plan.moves.len(), 1, "{plan:#?}");
    let m = &plan.moves[0];
    assert_eq!((m.cluster.as_str(), m.to.as_str()), ("c2", "d"));
    assert!(close(m.imbalance_before, 0.2) && close(m.imbalance_after, 0.0));
    assert!(
        close(plan.imbalance_before, (0.08f64 / 3.0).sqrt()),
        "{}",
        plan.imbalance_before
    );
    assert!(close(plan.imbalance_after, 0.0));
}
