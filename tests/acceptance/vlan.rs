//! `ceso_vlan` through real Terraform against the simulator, with assertions on the hosts'
//! network configuration and the distributed switches as the simulator reports them.

use ceso::vsphere::network::{DvPortGroupSpec, DvsVlan, HostNetwork};
use ceso::vsphere::types::ManagedObjectReference;
use ceso::vsphere::Client;

use crate::harness::{resource_values, SimClient, Vcsim, Workspace};
use crate::require_acc;

/// A client of the simulator, for reading its state (and making out-of-band changes).
fn sim_client(sim: &Vcsim) -> (tokio::runtime::Runtime, std::sync::Arc<Client>) {
    let c = SimClient::connect(sim);
    (c.rt, c.client)
}

fn hosts(rt: &tokio::runtime::Runtime, c: &Client) -> Vec<HostNetwork> {
    let mut h = rt.block_on(c.host_networks()).unwrap();
    h.sort_by(|a, b| a.name.cmp(&b.name));
    h
}

/// VLAN of port group `pg` per host (None where absent).
fn vlan_by_host(rt: &tokio::runtime::Runtime, c: &Client, pg: &str) -> Vec<(String, Option<i64>)> {
    hosts(rt, c)
        .into_iter()
        .map(|h| (h.name.clone(), h.port_group(pg).map(|p| p.vlan_id)))
        .collect()
}

fn text(out: &crate::harness::TfRun) -> String {
    format!("{}\n{}", out.stdout, out.stderr)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn standard_port_group_on_esxi() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let (rt, c) = sim_client(&sim);
    let ws = Workspace::from_example("resources/ceso_vlan").against(&sim);
    ws.init();
    ws.run(&["validate", "-no-color"]).ok("validate");
    ws.apply().ok("apply");
    let host = hosts(&rt, &c).remove(0);
    let pg = host
        .port_group("vlan-120")
        .expect("port group created on the host")
        .clone();
    assert_eq!(pg.vlan_id, 120);
    assert_eq!(pg.vswitch, "vSwitch0");
    assert_eq!(pg.policy.allow_promiscuous, Some(false));
    assert_eq!(ws.plan_exit_code().code, 0, "second plan not empty");
    let show = ws.show_json();
    let v = resource_values(&show, "ceso_vlan.app");
    assert_eq!(v["hosts"], serde_json::json!([host.name]));
    assert!(
        v["network_id"].as_str().is_some_and(|n| !n.is_empty()),
        "{v}"
    );

    // Update in place: UpdatePortGroup on the host.
    let out = ws
        .run(&["apply", "-auto-approve", "-no-color", "-var", "vlan_id=121"])
        .ok("update");
    assert!(out.stdout.contains("1 changed"), "{}", out.stdout);
    assert_eq!(vlan_by_host(&rt, &c, "vlan-120")[0].1, Some(121));

    // Drift: VLAN changed by hand on the host -> the plan repairs it.
    let mut drifted = pg.clone();
    drifted.vlan_id = 999;
    rt.block_on(c.update_port_group(&host, "vlan-120", &drifted))
        .unwrap();
    let plan = ws.run(&[
        "plan",
        "-detailed-exitcode",
        "-no-color",
        "-var",
        "vlan_id=121",
    ]);
    assert_eq!(plan.code, 2, "{}", text(&plan));
    assert!(plan.stdout.contains("999 -> 121"), "{}", plan.stdout);
    ws.run(&["apply", "-auto-approve", "-no-color", "-var", "vlan_id=121"])
        .ok("repair");
    assert_eq!(vlan_by_host(&rt, &c, "vlan-120")[0].1, Some(121));

    // Import into a fresh state: the plan is then empty.
    let ws2 = Workspace::from_example("resources/ceso_vlan").against(&sim);
    ws2.init();
    ws2.run(&[
        "import",
        "-no-color",
        "-var",
        "vlan_id=121",
        "ceso_vlan.app",
        &format!("{}:vlan-120", host.name),
    ])
    .ok("import");
    let plan = ws2.run(&[
        "plan",
        "-detailed-exitcode",
        "-no-color",
        "-var",
        "vlan_id=121",
    ]);
    // Import records no outputs, so only the output may show as new; the resource must not change.
    assert!(
        plan.code != 1 && !plan.stdout.contains("will perform the following actions"),
        "plan after import not empty: {}",
        text(&plan)
    );
    let imported = ws2.show_json();
    assert_eq!(resource_values(&imported, "ceso_vlan.app")["vlan_id"], 121);

    // Removed out of band -> planned for re-creation, no error.
    rt.block_on(c.remove_port_group(&host, "vlan-120")).unwrap();
    let plan = ws.run(&[
        "plan",
        "-detailed-exitcode",
        "-no-color",
        "-var",
        "vlan_id=121",
    ]);
    assert_eq!(plan.code, 2, "{}", text(&plan));
    assert!(plan.stdout.contains("will be created"), "{}", plan.stdout);
    ws.run(&["apply", "-auto-approve", "-no-color", "-var", "vlan_id=121"])
        .ok("re-create");
    assert_eq!(vlan_by_host(&rt, &c, "vlan-120")[0].1, Some(121));

    ws.run(&[
        "destroy",
        "-auto-approve",
        "-no-color",
        "-var",
        "vlan_id=121",
    ])
    .ok("destroy");
    assert_eq!(
        vlan_by_host(&rt, &c, "vlan-120")[0].1,
        None,
        "port group left behind"
    );
}

#[test]
fn same_port_group_on_every_cluster_host() {
    require_acc!();
    let sim = Vcsim::start(&["-host", "3"]);
    let (rt, c) = sim_client(&sim);
    let ws = Workspace::from_example("resources/ceso_vlan/cluster").against(&sim);
    ws.init();
    ws.apply().ok("apply");
    let on: Vec<String> = vlan_by_host(&rt, &c, "vlan-130-storage")
        .into_iter()
        .filter(|(_, v)| *v == Some(130))
        .map(|(h, _)| h)
        .collect();
    assert_eq!(on.len(), 3, "expected the 3 cluster hosts: {on:?}");
    // One Network object backed by all three hosts, as vCenter shows it.
    let nets: Vec<_> = rt
        .block_on(c.retrieve_all("Network", &["name", "host"]))
        .unwrap()
        .into_iter()
        .filter(|n| n.text("name") == Some("vlan-130-storage"))
        .collect();
    assert_eq!(nets.len(), 1);
    assert_eq!(nets[0].morefs("host").len(), 3);
    assert_eq!(ws.plan_exit_code().code, 0);

    // Removed out of band on one host: the plan adds it back there only.
    let all = hosts(&rt, &c);
    let victim = all.iter().find(|h| h.name == on[1]).unwrap();
    rt.block_on(c.remove_port_group(victim, "vlan-130-storage"))
        .unwrap();
    let plan = ws.run(&["plan", "-detailed-exitcode", "-no-color"]);
    assert_eq!(plan.code, 2, "{}", text(&plan));
    assert!(
        plan.stdout.contains(&format!("+ \"{}\"", on[1])),
        "{}",
        plan.stdout
    );
    ws.apply().ok("repair");
    assert!(
        vlan_by_host(&rt, &c, "vlan-130-storage")
            .iter()
            .filter(|(_, v)| *v == Some(130))
            .count()
            == 3
    );

    // Narrow to two hosts: the port group goes from the third only.
    ws.write("hosts.tf", &format!(
        "resource \"ceso_vlan\" \"two\" {{\n  name = \"vlan-131\"\n  vlan_id = 131\n  hosts = [\"{}\", \"{}\"]\n}}\n",
        on[0], on[1]
    ));
    ws.apply().ok("apply two hosts");
    let by_host = vlan_by_host(&rt, &c, "vlan-131");
    assert_eq!(
        by_host.iter().filter(|(_, v)| v.is_some()).count(),
        2,
        "{by_host:?}"
    );
    ws.write("hosts.tf", &format!(
        "resource \"ceso_vlan\" \"two\" {{\n  name = \"vlan-131\"\n  vlan_id = 131\n  hosts = [\"{}\"]\n}}\n",
        on[0]
    ));
    ws.apply().ok("drop a host");
    let by_host = vlan_by_host(&rt, &c, "vlan-131");
    assert_eq!(
        by_host
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(h, _)| h.clone())
            .collect::<Vec<_>>(),
        vec![on[0].clone()]
    );

    ws.run(&["destroy", "-auto-approve", "-no-color"])
        .ok("destroy");
    assert!(vlan_by_host(&rt, &c, "vlan-130-storage")
        .iter()
        .all(|(_, v)| v.is_none()));
    assert!(vlan_by_host(&rt, &c, "vlan-131")
        .iter()
        .all(|(_, v)| v.is_none()));
}

#[test]
fn distributed_port_groups_with_vlan_and_trunk() {
    require_acc!();
    let sim = Vcsim::start(&[]);
    let (rt, c) = sim_client(&sim);
    let ws = Workspace::from_example("resources/ceso_vlan/distributed").against(&sim);
    ws.init();
    ws.apply().ok("apply");
    let show = ws.show_json();
    let read = |addr: &str| -> DvPortGroupSpec {
        let id = resource_values(&show, addr)["id"]
            .as_str()
            .unwrap()
            .to_string();
        let o = rt
            .block_on(c.properties(
                &ManagedObjectReference::new("DistributedVirtualPortgroup", &id),
                &["config"],
            ))
            .unwrap();
        DvPortGroupSpec::from_config(o.get("config").unwrap())
    };
    let web = read("ceso_vlan.web");
    assert_eq!(
        (web.name.as_str(), &web.vlan, web.num_ports),
        ("web-140", &DvsVlan::Id(140), 32)
    );
    let trunk = read("ceso_vlan.trunk");
    assert_eq!(trunk.vlan, DvsVlan::Trunk(vec![(100, 200), (300, 300)]));
    assert_eq!(trunk.binding, "ephemeral");
    assert_eq!(ws.plan_exit_code().code, 0, "second plan not empty");
    ws.run(&["destroy", "-auto-approve", "-no-color"])
        .ok("destroy");
    let left: Vec<_> = rt
        .block_on(c.retrieve_all("DistributedVirtualPortgroup", &["name"]))
        .unwrap()
        .into_iter()
        .filter_map(|o| o.text("name").map(str::to_string))
        .filter(|n| n == "web-140" || n == "trunk-100-200")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn bad_input_is_caught_before_apply() {
    require_acc!();
    let sim = Vcsim::start(&[]);
    let cases: &[(&str, &[&str])] = &[
        (
            "name = \"a\"\nvlan_id = 5000\nhosts = [\"DC0_H0\"]",
            &["vlan_id", "from 0 to 4095"],
        ),
        (
            "name = \"a\"\nvlan_ranges = [\"1-10\"]\nhosts = [\"DC0_H0\"]",
            &["vlan_ranges", "distributed switches only", "vlan_id = 4095"],
        ),
        (
            "name = \"a\"\ndistributed_switch = \"DVS0\"\nvlan_ranges = [\"1-10\", \"5-20\"]",
            &["Overlapping VLAN ranges", "\"5-20\" overlaps \"1-10\""],
        ),
        (
            &format!("name = \"{}\"\nhosts = [\"DC0_H0\"]", "x".repeat(81)),
            &["1 to 80 printable characters"],
        ),
        (
            "name = \"a\"\nvswitch = \"vSwitch9\"\nhosts = [\"DC0_H0\"]",
            &["Unknown vSwitch", "vSwitch9"],
        ),
        (
            "name = \"a\"\nhosts = [\"nohost\"]",
            &["Unknown host", "nohost"],
        ),
        (
            "name = \"a\"\ndistributed_switch = \"NoSuchDVS\"",
            &["Unknown distributed switch", "NoSuchDVS"],
        ),
        ("name = \"a\"", &["Hosts needed"]),
        (
            "name = \"a\"\ndistributed_switch = \"DVS0\"\nvlan_id = 4095",
            &["VLAN 4095 is for standard switches"],
        ),
    ];
    for (body, needles) in cases {
        let ws = Workspace::empty().against(&sim);
        ws.write("main.tf", &format!("terraform {{\n  required_providers {{\n    ceso = {{ source = \"choiceomg/ceso\" }}\n  }}\n}}\nresource \"ceso_vlan\" \"x\" {{\n{body}\n}}\n"));
        ws.init();
        let out = ws.run(&["plan", "-no-color"]);
        let t = text(&out);
        assert_eq!(out.code, 1, "{body}: plan should fail: {t}");
        for n in *needles {
            assert!(t.contains(n), "{body}: expected {n:?} in: {t}");
        }
        assert!(
            t.contains("main.tf line"),
            "{body}: diagnostic should point into the config: {t}"
        );
    }
}

#[test]
fn deleting_a_port_group_in_use_names_the_vms() {
    require_acc!();
    let sim = Vcsim::start(&[]);
    let (rt, c) = sim_client(&sim);
    // The simulator's VMs use the distributed port group DC0_DVPG0: import and try to destroy it.
    let vms: Vec<String> = {
        let pgs = rt
            .block_on(c.retrieve_all("DistributedVirtualPortgroup", &["name"]))
            .unwrap();
        let pg = pgs
            .iter()
            .find(|p| p.text("name") == Some("DC0_DVPG0"))
            .expect("DC0_DVPG0")
            .obj
            .clone();
        let all = rt
            .block_on(c.retrieve_all("VirtualMachine", &["name", "network"]))
            .unwrap();
        all.iter()
            .filter(|vm| vm.morefs("network").contains(&pg))
            .map(|vm| vm.text("name").unwrap().to_string())
            .collect()
    };
    assert!(!vms.is_empty());
    let ws = Workspace::empty().against(&sim);
    ws.write("main.tf", "terraform {\n  required_providers {\n    ceso = { source = \"choiceomg/ceso\" }\n  }\n}\nresource \"ceso_vlan\" \"pg\" {\n  name = \"DC0_DVPG0\"\n  distributed_switch = \"DVS0\"\n}\n");
    ws.init();
    ws.run(&["import", "-no-color", "ceso_vlan.pg", "DVS0:DC0_DVPG0"])
        .ok("import");
    let out = ws.run(&["destroy", "-auto-approve", "-no-color"]);
    let t = text(&out);
    assert_eq!(out.code, 1, "{t}");
    assert!(t.contains("VMs are still connected"), "{t}");
    for vm in &vms {
        assert!(t.contains(vm.as_str()), "{vm} missing from: {t}");
    }
    // Still in state and still in vSphere.
    assert!(ws.show_json()["values"]["root_module"]["resources"]
        .as_array()
        .is_some_and(|r| r.len() == 1));
}

#[test]
fn partial_failure_tracks_exactly_the_hosts_that_have_it() {
    require_acc!();
    // "Management Network" carries each host's vmk0, so vSphere refuses to remove it from a
    // host (ResourceInUse): a real per-host failure in the middle of a multi-host update.
    let sim = Vcsim::start(&["-host", "3"]);
    let (rt, c) = sim_client(&sim);
    let ws = Workspace::empty().against(&sim);
    let config = |hosts: &str| {
        format!("terraform {{\n  required_providers {{\n    ceso = {{ source = \"choiceomg/ceso\" }}\n  }}\n}}\nresource \"ceso_vlan\" \"mgmt\" {{\n  name  = \"Management Network\"\n  hosts = [{hosts}]\n}}\n")
    };
    ws.write(
        "main.tf",
        &config("\"DC0_C0_H0\", \"DC0_C0_H1\", \"DC0_C0_H2\""),
    );
    ws.init();
    ws.run(&[
        "import",
        "-no-color",
        "ceso_vlan.mgmt",
        "DC0_C0_H0:Management Network",
    ])
    .ok("import");
    ws.apply().ok("adopt on three hosts");
    ws.write("main.tf", &config("\"DC0_C0_H0\""));
    let out = ws.apply();
    let t = text(&out);
    assert_eq!(out.code, 1, "{t}");
    assert!(
        t.contains("on host DC0_C0_H1") && t.contains("on host DC0_C0_H2"),
        "the errors name the hosts: {t}"
    );
    assert!(t.contains("ResourceInUse") || t.contains("in use"), "{t}");
    let show = ws.show_json();
    let tracked: Vec<String> = resource_values(&show, "ceso_vlan.mgmt")["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect();
    let real: Vec<String> = vlan_by_host(&rt, &c, "Management Network")
        .into_iter()
        .filter(|(h, v)| v.is_some() && h.starts_with("DC0_C0_"))
        .map(|(h, _)| h)
        .collect();
    assert_eq!(
        tracked, real,
        "state must record exactly where the port group exists"
    );
    assert_eq!(tracked.len(), 3);
    ws.run(&["state", "rm", "ceso_vlan.mgmt"]).ok("forget");
}
