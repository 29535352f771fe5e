//! A fleet of VMs through real Terraform against a simulator that loses long polls and resets
//! connections: every VM the simulator holds is tracked in state exactly once, the re-plan is
//! empty and destroy leaves nothing.

use std::collections::BTreeMap;

use crate::harness::{folded, Vcsim, Workspace};
use crate::require_acc;

/// VMs in the fleet (the issue's CI-sized test: 100 at 20 ms).
const FLEET: usize = 100;

fn fleet_config(n: usize) -> String {
    format!(
        r#"terraform {{
  required_providers {{
    ceso = {{ source = "choiceomg/ceso" }}
  }}
}}

provider "ceso" {{}}

resource "ceso_vm" "vm" {{
  count     = {n}
  name      = format("fleet-%03d", count.index)
  num_cpus  = 1
  memory_mb = 512
  guest_id  = "otherGuest64"

  disk {{
    label   = "disk0"
    size_gb = 1
  }}

  network_interface {{
    network = "VM Network"
  }}
}}
"#
    )
}

/// The fleet's VMs as the simulator holds them: name -> moids (more than one is a duplicate).
fn simulator_fleet(sim: &Vcsim) -> BTreeMap<String, Vec<String>> {
    let c = crate::harness::SimClient::connect(sim);
    let vms = c
        .run(c.client.retrieve_all("VirtualMachine", &["name"]))
        .expect("list the simulator's VMs");
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for vm in vms {
        let name = vm.text("name").unwrap_or_default().to_string();
        if name.starts_with("fleet-") {
            out.entry(name).or_default().push(vm.obj.value.clone());
        }
    }
    out
}

/// The fleet as Terraform's state tracks it: name -> moids.
fn state_fleet(ws: &Workspace) -> BTreeMap<String, Vec<String>> {
    let show = ws.show_json();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in show["values"]["root_module"]["resources"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        if r["type"] == "ceso_vm" {
            out.entry(r["values"]["name"].as_str().unwrap_or_default().to_string())
                .or_default()
                .push(
                    r["values"]["moid"]
                        .as_str()
                        .unwrap_or("(unknown)")
                        .to_string(),
                );
        }
    }
    out
}

fn injected(sim: &Vcsim) -> serde_json::Value {
    sim.counts()["injected"].clone()
}

fn total(v: &serde_json::Value) -> u64 {
    match v {
        serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
        serde_json::Value::Object(m) => m.values().map(total).sum(),
        _ => 0,
    }
}

#[test]
fn fleet_survives_lost_long_polls_and_resets() {
    require_acc!();
    let fleet_faults = "CreateVM_Task,PowerOnVM_Task,PowerOffVM_Task,Destroy_Task,ModifyListView";
    // Tasks that run for a while, as on a real host, so waits go through the long polls.
    let sim = Vcsim::start(&[
        "-delay",
        "20",
        "-slow-task",
        "CreateVM_Task=400,PowerOnVM_Task=200,PowerOffVM_Task=200,Destroy_Task=200",
        "-fault-wait-error",
        "0.1",
        "-fault-wait-reset",
        "0.1",
        "-fault-reset-after",
        "0.03",
        "-fault-reset-before",
        "0.02",
        "-fault-methods",
        fleet_faults,
    ]);
    // A short API timeout too: the 30 s long polls must not depend on it.
    let ws = Workspace::empty()
        .against(&sim)
        .env("CESO_API_TIMEOUT", "5s");
    ws.write("main.tf", &fleet_config(FLEET));
    ws.init();

    let started = std::time::Instant::now();
    let first = ws.apply();
    let mut applies = 1;
    if first.code != 0 {
        // A failure that says so is allowed once; a second apply must converge.
        eprintln!("first apply failed:\n{}", folded(&first));
        ws.apply().ok("second apply");
        applies = 2;
    }
    let applied_in = started.elapsed();

    let sim_vms = simulator_fleet(&sim);
    let state_vms = state_fleet(&ws);
    let duplicates: Vec<_> = sim_vms.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        duplicates.is_empty(),
        "duplicate VMs in the simulator: {duplicates:?}"
    );
    assert_eq!(
        sim_vms.len(),
        FLEET,
        "the simulator holds {} fleet VMs",
        sim_vms.len()
    );
    assert_eq!(
        sim_vms, state_vms,
        "the simulator's VMs and the state differ (orphans or ghosts)"
    );

    let replan = ws.plan_exit_code();
    assert_eq!(
        replan.code,
        0,
        "the re-plan is not empty:\n{}",
        folded(&replan)
    );

    let destroy = ws.run(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    if destroy.code != 0 {
        eprintln!("first destroy failed:\n{}", folded(&destroy));
        ws.run(&["destroy", "-auto-approve", "-input=false", "-no-color"])
            .ok("second destroy");
    }
    assert!(
        simulator_fleet(&sim).is_empty(),
        "destroy left VMs behind: {:?}",
        simulator_fleet(&sim)
    );

    let faults = injected(&sim);
    let counts = sim.counts();
    eprintln!(
        "fleet of {FLEET} at 20 ms: {applies} apply run(s) in {:.1} s; injected: {faults}; simulator panics: {}",
        applied_in.as_secs_f64(),
        counts["panics"]
    );
    assert!(
        faults["wait_error"].as_u64().unwrap_or(0) > 0,
        "no long poll faulted: {faults}"
    );
    assert!(
        faults["wait_reset"].as_u64().unwrap_or(0) > 0,
        "no long poll was reset: {faults}"
    );
    assert!(
        total(&faults["reset_after"]) > 0,
        "no reset after the server acted: {faults}"
    );
    assert_eq!(counts["panics"].as_u64(), Some(0), "the simulator panicked");
}
