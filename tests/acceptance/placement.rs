//! Many hosts through real Terraform: a provider with three standalone ESXi endpoints (three
//! simulators), `ceso_placement` choosing among them, VMs landing where it says, and an
//! unreachable endpoint failing only what needs it.

use std::time::Instant;

use crate::harness::{folded, SimClient, Vcsim, Workspace};
use crate::require_acc;

const T4: &str = "0000:3b:00.0";

fn header(endpoints: &[(&str, &str)]) -> String {
    let mut s = String::from(
        "terraform {\n  required_providers {\n    ceso = { source = \"choiceomg/ceso\" }\n  }\n}\nprovider \"ceso\" {\n  user = \"u\"\n  password = \"p\"\n",
    );
    for (name, url) in endpoints {
        s.push_str(&format!(
            "  endpoint {{\n    name = \"{name}\"\n    url = \"{url}\"\n  }}\n"
        ));
    }
    s.push_str("}\n");
    s
}

/// VMs named `prefix*` on a simulator.
fn vms_named(c: &SimClient, prefix: &str) -> Vec<String> {
    c.run(c.client.retrieve_all("VirtualMachine", &["name"]))
        .unwrap()
        .iter()
        .filter_map(|o| o.text("name").map(str::to_string))
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Makes the T4 of the simulator's GPU host ready for passthrough (enabled, host rebooted);
/// returns the host's name.
fn gpu_ready(c: &SimClient) -> String {
    let hosts: Vec<_> = c
        .run(c.client.retrieve_all("HostSystem", &["name"]))
        .unwrap()
        .into_iter()
        .map(|h| h.obj)
        .collect();
    let pci = hosts
        .iter()
        .map(|h| c.run(c.client.host_pci(h)).unwrap())
        .find(|p| p.state(T4).capable)
        .expect("a host with a T4");
    let host = pci.host.clone();
    let cancel = Default::default();
    c.run(async {
        let cl = &c.client;
        cl.update_passthru(
            pci.passthru_system.as_ref().unwrap(),
            &[(T4.to_string(), true)],
        )
        .await
        .unwrap();
        cl.set_maintenance(&host, true, None, &cancel)
            .await
            .unwrap();
        cl.reboot_host(&host, std::time::Duration::from_secs(30), &cancel)
            .await
            .unwrap();
        cl.set_maintenance(&host, false, None, &cancel)
            .await
            .unwrap();
    });
    pci.name
}

#[test]
fn placement_over_three_esxi_endpoints() {
    require_acc!();
    let a = Vcsim::start(&["-esx", "-gpu-hosts", "0"]);
    let b = Vcsim::start(&["-esx", "-gpu-hosts", "0"]);
    let c = Vcsim::start(&["-esx", "-gpu-hosts", "1", "-reboot-ms", "0"]);
    let (ca, cb, cc) = (
        SimClient::connect(&a),
        SimClient::connect(&b),
        SimClient::connect(&c),
    );
    gpu_ready(&cc);
    let head = header(&[("a", &a.url), ("b", &b.url), ("c", &c.url)]);
    let ws = Workspace::empty();
    let gpu = "data \"ceso_placement\" \"gpu\" {\n  name = \"train\"\n  cpus = 4\n  memory_mb = 1024\n  gpus = 1\n  gpu_model = \"t4\"\n}\noutput \"gpu\" {\n  value = data.ceso_placement.gpu\n}\n";
    ws.write("main.tf", &format!("{head}{gpu}"));
    ws.init();
    ws.apply().ok("GPU placement");
    let out = &ws.outputs()["gpu"]["value"];
    assert_eq!(out["endpoint"], "c", "the GPU host: {out}");
    assert_eq!(out["pci_devices"], serde_json::json!([T4]));
    assert_eq!(out["hosts_total"], 3);
    assert_eq!(out["hosts_fit"], 1, "{out}");
    let rejected = out["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2);
    assert!(
        rejected
            .iter()
            .all(|r| r["filter"] == "gpu" && r["reason"].as_str().unwrap().contains("GPU")),
        "{rejected:?}"
    );

    // The data source's example, over the same three endpoints.
    let ds = Workspace::from_example("data-sources/ceso_placement");
    ds.init();
    let endpoints = format!(
        "endpoints={{a=\"{}\",b=\"{}\",c=\"{}\"}}",
        a.url, b.url, c.url
    );
    ds.run(&[
        "apply",
        "-auto-approve",
        "-no-color",
        "-var",
        &endpoints,
        "-var",
        "password=p",
        "-var",
        "user=u",
    ])
    .ok("placement example");
    let out = ds.outputs();
    assert!(
        out["where"]["value"].as_str().unwrap().starts_with("c/"),
        "{out}"
    );
    assert_eq!(out["gpus"]["value"], serde_json::json!([T4]));
    assert!(
        out["why"]["value"]
            .as_str()
            .unwrap()
            .starts_with("1/3 hosts fit"),
        "{out}"
    );
    assert_eq!(
        out["rejected"]["value"].as_array().unwrap().len(),
        2,
        "{out}"
    );

    // An impossible request fails the plan with the summary.
    ws.write(
        "main.tf",
        &format!(
            "{head}data \"ceso_placement\" \"huge\" {{\n  name = \"huge\"\n  cpus = 2\n  memory_mb = 16777216\n}}\n"
        ),
    );
    let plan = ws.run(&["plan", "-no-color"]);
    let text = folded(&plan);
    assert_eq!(plan.code, 1, "{text}");
    assert!(text.contains("No host fits"), "{text}");
    assert!(text.contains("0/3 hosts fit"), "{text}");
    assert!(text.contains("memory"), "{text}");

    // Anti-affinity: the example places three web VMs at once, one per endpoint; the next plan
    // is empty (a VM does not avoid itself).
    let ex = Workspace::from_example("resources/ceso_vm/placed");
    ex.init();
    let endpoints = format!(
        "endpoints={{a=\"{}\",b=\"{}\",c=\"{}\"}}",
        a.url, b.url, c.url
    );
    let vars = ["-var", &endpoints, "-var", "password=p", "-var", "user=u"];
    ex.run(&[&["apply", "-auto-approve", "-no-color"][..], &vars[..]].concat())
        .ok("three web VMs");
    let per_sim: Vec<usize> = [&ca, &cb, &cc]
        .iter()
        .map(|c| vms_named(c, "web-").len())
        .collect();
    assert_eq!(per_sim, vec![1, 1, 1], "one web VM per endpoint");
    let plan = ex.run(&[&["plan", "-detailed-exitcode", "-no-color"][..], &vars[..]].concat());
    assert_eq!(plan.code, 0, "stable: {}", plan.stdout);

    // An endpoint that cannot be reached fails only what uses it, naming it.
    let dead = "http://127.0.0.1:9/sdk";
    let head4 = header(&[("a", &a.url), ("b", &b.url), ("c", &c.url), ("dead", dead)]);
    ws.write(
        "main.tf",
        &format!("{head4}data \"ceso_placement\" \"any\" {{\n  name = \"any\"\n  cpus = 1\n  memory_mb = 256\n}}\n"),
    );
    let plan = ws.run(&["plan", "-no-color"]);
    let text = folded(&plan);
    assert_eq!(
        plan.code, 1,
        "placement over every endpoint needs the dead one: {text}"
    );
    assert!(text.contains("endpoint \"dead\""), "{text}");
    let pinned = format!(
        "{head4}resource \"ceso_vm\" \"solo\" {{\n  name = \"solo\"\n  endpoint = \"a\"\n  memory_mb = 256\n  power_state = \"off\"\n}}\n"
    );
    let ws2 = Workspace::empty();
    ws2.write("main.tf", &pinned);
    ws2.init();
    ws2.apply()
        .ok("a VM on a live endpoint while another is dead");
    assert_eq!(vms_named(&ca, "solo").len(), 1);
    ws2.write(
        "main.tf",
        &format!("{pinned}data \"ceso_endpoint\" \"dead\" {{\n  endpoint = \"dead\"\n}}\n"),
    );
    let plan = ws2.run(&["plan", "-no-color"]);
    assert!(
        folded(&plan).contains("endpoint \"dead\""),
        "{}",
        folded(&plan)
    );
    ws2.write("main.tf", &pinned);
    ws2.run(&["destroy", "-auto-approve", "-no-color"])
        .ok("destroy solo");
    ex.run(&[&["destroy", "-auto-approve", "-no-color"][..], &vars[..]].concat())
        .ok("destroy web");
    assert!(vms_named(&ca, "web-").is_empty() && vms_named(&cc, "web-").is_empty());
}

/// The issue's figure: what an operation costs in a 3-endpoint configuration over a
/// 1-endpoint one (a plan that refreshes one VM; endpoints are contacted only when used).
#[test]
fn placement_three_endpoint_overhead() {
    require_acc!();
    let sims: Vec<Vcsim> = (0..3)
        .map(|_| Vcsim::start(&["-esx", "-gpu-hosts", "0", "-delay", "5"]))
        .collect();
    let vm = "resource \"ceso_vm\" \"one\" {\n  name = \"one\"\n  endpoint = \"a\"\n  memory_mb = 256\n  power_state = \"off\"\n}\n";
    let one = header(&[("a", &sims[0].url)]);
    let three = header(&[
        ("a", &sims[0].url),
        ("b", &sims[1].url),
        ("c", &sims[2].url),
    ]);
    let ws = Workspace::empty();
    ws.write("main.tf", &format!("{one}{vm}"));
    ws.init();
    ws.apply().ok("VM");
    let time_plans = |cfg: &str| {
        ws.write("main.tf", cfg);
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            ws.run(&["plan", "-no-color", "-refresh=true"]).ok("plan");
            best = best.min(t.elapsed().as_secs_f64());
        }
        best
    };
    let t1 = time_plans(&format!("{one}{vm}"));
    let others = sims[1].sdk_calls() + sims[2].sdk_calls();
    let t3 = time_plans(&format!("{three}{vm}"));
    let touched = sims[1].sdk_calls() + sims[2].sdk_calls() - others;
    println!(
        "plan of one VM: 1 endpoint {:.0} ms, 3 endpoints {:.0} ms (overhead {:+.0} ms); SOAP calls to the unused endpoints: {touched}",
        t1 * 1000.0,
        t3 * 1000.0,
        (t3 - t1) * 1000.0
    );
    assert_eq!(touched, 0, "unused endpoints are never contacted");
    assert!(t3 - t1 < 2.0, "3-endpoint overhead {:.3} s", t3 - t1);
    ws.write("main.tf", &format!("{one}{vm}"));
    ws.run(&["destroy", "-auto-approve", "-no-color"])
        .ok("destroy");
}

/// The issue's figure: fetching the placement inventory of 1,000 hosts (10 clusters of 100,
/// 2 VMs per cluster) with 5 ms of latency per call: round trips and wall time, then one decision.
#[test]
fn placement_inventory_fetch_of_1000_hosts() {
    require_acc!();
    let sim = Vcsim::start(&[
        "-cluster",
        "10",
        "-host",
        "100",
        "-vm",
        "2",
        "-standalone-host",
        "0",
        "-gpu-hosts",
        "0",
        "-delay",
        "5",
    ]);
    let c = SimClient::connect(&sim);
    let mut figures = Vec::new();
    for round in ["first (view created)", "second (view reused)"] {
        let calls = sim.sdk_calls();
        let t = Instant::now();
        let inv = c
            .run(ceso::adapters::placement_inventory::fetch(&c.client, "vc"))
            .unwrap();
        let took = t.elapsed();
        let trips = sim.sdk_calls() - calls;
        assert_eq!(inv.inventory.hosts.len(), 1000);
        assert!(inv
            .inventory
            .hosts
            .iter()
            .all(|h| h.cpu_mhz_capacity > 0 && h.memory_mib_capacity > 0));
        let vms: usize = inv.inventory.hosts.iter().map(|h| h.vms.len()).sum();
        assert!(
            vms >= 20,
            "{vms} VMs (the simulator makes them per cluster)"
        );
        figures.push(format!(
            "{round}: {trips} round trips, {:.0} ms ({vms} VMs)",
            took.as_secs_f64() * 1000.0
        ));
        if round.starts_with("second") {
            assert_eq!(trips, 1, "one RetrievePropertiesEx");
            let req = ceso::engine::placement::PlacementRequest {
                cpus: 2,
                memory_mib: 2048,
                ..Default::default()
            };
            let t = Instant::now();
            let d = ceso::engine::placement::place(&inv.inventory, &req).unwrap();
            figures.push(format!(
                "decision over 1,000 hosts: {:.2} ms ({})",
                t.elapsed().as_secs_f64() * 1000.0,
                d.summary
            ));
        } else {
            assert!(trips <= 2, "{trips} round trips");
        }
    }
    println!(
        "placement inventory of 1,000 hosts at -delay 5: {}",
        figures.join("; ")
    );
}

/// On the vCenter model (a cluster of three hosts and a standalone one, the GPU on one of
/// them): the placement of a GPU VM names the GPU host and its free T4, and a VM built from that
/// answer lands there with the GPU; the next plan is empty (the VM keeps its own GPU).
#[test]
fn placement_on_vcenter_puts_a_gpu_vm_on_the_gpu_host() {
    require_acc!();
    let sim = Vcsim::start(&["-gpu-hosts", "1", "-reboot-ms", "0"]);
    let c = SimClient::connect(&sim);
    let gpu_host = gpu_ready(&c);
    let ws = Workspace::empty().against(&sim);
    ws.write(
        "main.tf",
        "terraform {\n  required_providers {\n    ceso = { source = \"choiceomg/ceso\" }\n  }\n}\nprovider \"ceso\" {}\ndata \"ceso_placement\" \"train\" {\n  name = \"train\"\n  cpus = 2\n  memory_mb = 1024\n  gpus = 1\n  gpu_model = \"t4\"\n}\nresource \"ceso_vm\" \"train\" {\n  name = data.ceso_placement.train.name\n  host = data.ceso_placement.train.host\n  memory_mb = 1024\n  power_state = \"off\"\n  dynamic \"pci_device\" {\n    for_each = data.ceso_placement.train.pci_devices\n    content {\n      address = pci_device.value\n    }\n  }\n}\noutput \"placement\" {\n  value = data.ceso_placement.train\n}\n",
    );
    ws.init();
    ws.apply().ok("GPU VM where placement says");
    let out = &ws.outputs()["placement"]["value"];
    assert_eq!(out["host"], gpu_host.as_str(), "{out}");
    assert_eq!(out["pci_devices"], serde_json::json!([T4]));
    assert_eq!(out["hosts_fit"], 1, "{out}");
    let vm = c
        .run(c.client.retrieve_all("VirtualMachine", &["name"]))
        .unwrap()
        .into_iter()
        .find(|o| o.text("name") == Some("train"))
        .expect("the VM");
    let info = c.run(c.client.vm_info(&vm.obj)).unwrap();
    let on = c
        .run(c.client.properties(&info.host.clone().unwrap(), &["name"]))
        .unwrap();
    assert_eq!(on.text("name"), Some(gpu_host.as_str()));
    assert_eq!(info.passthroughs().count(), 1);
    let plan = ws.plan_exit_code();
    assert_eq!(plan.code, 0, "stable: {}", plan.stdout);
    ws.run(&["destroy", "-auto-approve", "-no-color"])
        .ok("destroy");
}

/// `ceso_placement` cannot be used unstably: `name` is required (a placement without it answered
/// differently once its VM existed). And a placement on a port group made in the same apply
/// plans and applies in one run, whether it names the port group through the `ceso_vlan`
/// (Terraform then reads it at apply) or by value (read at plan: a warning, no filter), then
/// stays put.
#[test]
fn placement_needs_a_name_and_places_on_a_port_group_made_in_the_same_apply() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let c = SimClient::connect(&sim);
    let head =
        "terraform {\n  required_providers {\n    ceso = { source = \"choiceomg/ceso\" }\n  }\n}\n";
    let ws = Workspace::empty().against(&sim);
    ws.write(
        "main.tf",
        &format!("{head}data \"ceso_placement\" \"x\" {{\n  cpus = 1\n  memory_mb = 256\n}}\n"),
    );
    ws.init();
    let plan = ws.run(&["plan", "-no-color"]);
    let text = folded(&plan);
    assert_eq!(plan.code, 1, "{text}");
    assert!(text.contains("The argument \"name\" is required"), "{text}");

    // `network` given as the port group's name (`by_value`) or through the ceso_vlan.
    let config = |by_value: bool| {
        let (network, depends) = if by_value {
            ("local.tenant", "  depends_on  = [ceso_vlan.tenant]\n")
        } else {
            ("ceso_vlan.tenant.name", "")
        };
        format!(
            r#"{head}
locals {{
  tenant = "tenant-130"
}}
resource "ceso_vlan" "tenant" {{
  name    = local.tenant
  vlan_id = 130
}}
data "ceso_placement" "app" {{
  name      = "app-01"
  cpus      = 1
  memory_mb = 256
  network   = {network}
}}
resource "ceso_vm" "app" {{
  name        = data.ceso_placement.app.name
  host        = data.ceso_placement.app.host
  memory_mb   = 256
  power_state = "off"
{depends}  network_interface {{
    network = data.ceso_placement.app.network
  }}
}}
output "placement" {{
  value = {{
    host       = data.ceso_placement.app.host
    network    = data.ceso_placement.app.network
    placements = data.ceso_placement.app.placements
  }}
}}
"#
        )
    };
    for by_value in [false, true] {
        ws.write("main.tf", &config(by_value));
        let plan = ws.plan_exit_code();
        let text = folded(&plan);
        assert_eq!(plan.code, 2, "plans: {text}");
        // The VM's network is not found yet either way; a placement read at plan says so too
        // (Terraform then folds the VM's warning of the same summary into "one more").
        assert!(text.contains("Warning: Network not found (yet)"), "{text}");
        if by_value {
            assert!(
                text.contains("network = local.tenant")
                    && text.contains("No host has a port group named \"tenant-130\" yet")
                    && text.contains("one more similar warning"),
                "{text}"
            );
        } else {
            assert!(
                text.contains("network = data.ceso_placement.app.network")
                    && !text.contains("No host has a port group"),
                "{text}"
            );
        }
        ws.apply().ok("port group, placement and VM in one run");
        let out = &ws.outputs()["placement"]["value"];
        assert_eq!(out["network"], "tenant-130", "{out}");
        let vm = c
            .run(
                c.client
                    .retrieve_all("VirtualMachine", &["name", "network", "runtime.host"]),
            )
            .unwrap()
            .into_iter()
            .find(|o| o.text("name") == Some("app-01"))
            .expect("the VM");
        let name_of = |r: &ceso::vsphere::types::ManagedObjectReference| {
            c.run(c.client.properties(r, &["name"]))
                .unwrap()
                .text("name")
                .unwrap()
                .to_string()
        };
        let nets: Vec<String> = vm.morefs("network").iter().map(name_of).collect();
        assert_eq!(nets, vec!["tenant-130".to_string()]);
        assert_eq!(
            name_of(&vm.moref("runtime.host").unwrap()),
            out["host"].as_str().unwrap()
        );
        // The port group exists now and the VM of that name is left out: the same answer.
        let plan = ws.plan_exit_code();
        let text = folded(&plan);
        assert_eq!(plan.code, 0, "stable: {text}");
        assert!(!text.contains("not found"), "{text}");
        ws.run(&["destroy", "-auto-approve", "-no-color"])
            .ok("destroy");
    }
}
