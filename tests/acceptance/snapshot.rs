//! `ceso_snapshot` and `ceso_snapshots` through real Terraform, checking the snapshot tree the
//! simulator reports.

use ceso::vsphere::snapshot::SnapshotTree;
use ceso::vsphere::types::ManagedObjectReference;
use ceso::vsphere::Client;

use crate::harness::{resource_values, TfRun, Vcsim, Workspace};
use crate::require_acc;

struct Sim {
    rt: tokio::runtime::Runtime,
    client: std::sync::Arc<Client>,
}

impl Sim {
    fn connect(sim: &Vcsim) -> Self {
        let c = crate::harness::SimClient::connect(sim);
        Sim {
            rt: c.rt,
            client: c.client,
        }
    }

    fn tree(&self, vm: &str) -> SnapshotTree {
        let o = self
            .rt
            .block_on(self.client.properties(
                &ManagedObjectReference::new("VirtualMachine", vm),
                &["snapshot"],
            ))
            .unwrap();
        SnapshotTree::from_node(o.get("snapshot"))
    }

    /// A VM of the simulator in the given power state (powering one off if needed).
    fn vm_in(&self, power: &str) -> String {
        let vms = self
            .rt
            .block_on(
                self.client
                    .retrieve_all("VirtualMachine", &["runtime.powerState"]),
            )
            .unwrap();
        if let Some(v) = vms
            .iter()
            .find(|v| v.text("runtime.powerState") == Some(power))
        {
            return v.obj.value.clone();
        }
        assert_eq!(power, "poweredOff");
        let vm = vms.last().expect("a VM").obj.clone();
        self.rt
            .block_on(self.client.power_vm(
                &vm,
                ceso::vsphere::vm::PowerOp::Off,
                None,
                &Default::default(),
            ))
            .unwrap();
        vm.value
    }
}

fn text(out: &TfRun) -> String {
    format!("{}\n{}", out.stdout, out.stderr)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

const HEADER: &str = "terraform {\n  required_providers {\n    ceso = { source = \"choiceomg/ceso\" }\n  }\n}\nvariable \"vm_id\" {\n  type = string\n}\n";

#[test]
fn snapshot_chain_rename_revert_delete_import() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let s = Sim::connect(&sim);
    let vm = s.vm_in("poweredOn");
    let var = format!("vm_id={vm}");
    let ws = Workspace::from_example("resources/ceso_snapshot").against(&sim);
    ws.init();
    ws.run(&["apply", "-auto-approve", "-no-color", "-var", &var])
        .ok("create chain");
    let tree = s.tree(&vm);
    let names: Vec<&str> = tree.snapshots.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["base", "before-upgrade"]);
    let base = tree.snapshots[0].obj.clone();
    let upgrade = tree.snapshots[1].obj.clone();
    assert_eq!(tree.snapshots[1].parent.as_ref(), Some(&base), "a chain");
    assert_eq!(tree.snapshots[0].description, "clean install");
    let plan = ws.run(&["plan", "-detailed-exitcode", "-no-color", "-var", &var]);
    assert_eq!(plan.code, 0, "second plan not empty: {}", plan.stdout);
    let show = ws.show_json();
    let state = resource_values(&show, "ceso_snapshot.base");
    assert_eq!(state["parent_id"], serde_json::Value::Null);
    assert_eq!(
        resource_values(&show, "ceso_snapshot.before_upgrade")["parent_id"],
        base.value.as_str()
    );
    assert_eq!(
        resource_values(&show, "ceso_snapshot.before_upgrade")["is_current"],
        true
    );
    assert!(
        state["size_bytes"].as_i64().is_some_and(|n| n >= 0),
        "size from the file layout: {state}"
    );

    // The data source sees the same tree.
    let ds = Workspace::from_example("data-sources/ceso_snapshots").against(&sim);
    ds.init();
    ds.run(&["apply", "-auto-approve", "-no-color", "-var", &var])
        .ok("data source");
    let out = ds.outputs();
    assert_eq!(
        out["snapshot_names"]["value"],
        serde_json::json!(["base", "before-upgrade"])
    );
    assert_eq!(out["current"]["value"], upgrade.value.as_str());

    // Revert on purpose: the plan shows it, apply does it.
    let revert = ["-var", &var, "-var", "revert=now"];
    let plan = ws.run(&[&["plan", "-no-color"][..], &revert[..]].concat());
    assert!(
        plan.stdout.contains("+ revert_trigger = \"now\"")
            || plan.stdout.contains("revert_trigger"),
        "{}",
        plan.stdout
    );
    ws.run(&[&["apply", "-auto-approve", "-no-color"][..], &revert[..]].concat())
        .ok("revert");
    assert_eq!(s.tree(&vm).current.as_ref(), Some(&upgrade));

    // Rename in place, then delete the middle of a three-snapshot chain.
    ws.write("resource.tf", &format!("{HEADER}provider \"ceso\" {{}}\nresource \"ceso_snapshot\" \"base\" {{\n  vm_id = var.vm_id\n  name = \"base-renamed\"\n  description = \"renamed in place\"\n}}\nresource \"ceso_snapshot\" \"before_upgrade\" {{\n  vm_id = var.vm_id\n  name = \"before-upgrade\"\n  revert_trigger = \"now\"\n  depends_on = [ceso_snapshot.base]\n}}\n"));
    let out = ws
        .run(&["apply", "-auto-approve", "-no-color", "-var", &var])
        .ok("rename");
    assert!(
        out.stdout.contains("1 changed, 0 destroyed"),
        "{}",
        out.stdout
    );
    let tree = s.tree(&vm);
    let renamed = tree
        .by_id(&base.value)
        .expect("same snapshot, renamed in place");
    assert_eq!(
        (renamed.name.as_str(), renamed.description.as_str()),
        ("base-renamed", "renamed in place")
    );
    ws.write("resource.tf", &format!("{HEADER}provider \"ceso\" {{}}\nresource \"ceso_snapshot\" \"before_upgrade\" {{\n  vm_id = var.vm_id\n  name = \"before-upgrade\"\n  revert_trigger = \"now\"\n}}\n"));
    ws.run(&["apply", "-auto-approve", "-no-color", "-var", &var])
        .ok("delete the parent");
    let tree = s.tree(&vm);
    assert_eq!(tree.snapshots.len(), 1);
    assert_eq!(tree.snapshots[0].obj, upgrade);
    assert_eq!(
        tree.snapshots[0].parent, None,
        "the child was re-parented to the root"
    );

    // Import by VM/name into a fresh state: no changes planned.
    let ws2 = Workspace::empty().against(&sim);
    ws2.write("main.tf", &format!("{HEADER}resource \"ceso_snapshot\" \"x\" {{\n  vm_id = var.vm_id\n  name = \"before-upgrade\"\n}}\n"));
    ws2.init();
    ws2.run(&[
        "import",
        "-no-color",
        "-var",
        &var,
        "ceso_snapshot.x",
        &format!("{vm}/before-upgrade"),
    ])
    .ok("import");
    let plan = ws2.run(&["plan", "-detailed-exitcode", "-no-color", "-var", &var]);
    assert_eq!(plan.code, 0, "plan after import: {}", text(&plan));

    // Removed out of band: planned for re-creation, no error.
    ws.run(&["state", "list"]).ok("state");
    s.rt.block_on(
        s.client
            .remove_snapshot(&upgrade, None, &Default::default()),
    )
    .unwrap();
    let plan = ws.run(&["plan", "-detailed-exitcode", "-no-color", "-var", &var]);
    assert_eq!(plan.code, 2, "{}", text(&plan));
    assert!(plan.stdout.contains("will be created"), "{}", plan.stdout);
    ws.run(&["destroy", "-auto-approve", "-no-color", "-var", &var])
        .ok("destroy");
    assert!(s.tree(&vm).snapshots.is_empty());
}

#[test]
fn ambiguous_import_and_quiesce_without_tools() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let s = Sim::connect(&sim);
    let vm = s.vm_in("poweredOn");
    let never = Default::default();
    let vm_ref = ManagedObjectReference::new("VirtualMachine", &vm);
    let a =
        s.rt.block_on(s.client.create_snapshot(
            &vm_ref,
            &ceso::vsphere::snapshot::NewSnapshot {
                name: "dup",
                ..Default::default()
            },
            None,
            &never,
        ))
        .unwrap();
    let b =
        s.rt.block_on(s.client.create_snapshot(
            &vm_ref,
            &ceso::vsphere::snapshot::NewSnapshot {
                name: "dup",
                ..Default::default()
            },
            None,
            &never,
        ))
        .unwrap();
    let var = format!("vm_id={vm}");
    let ws = Workspace::empty().against(&sim);
    ws.write("main.tf", &format!("{HEADER}resource \"ceso_snapshot\" \"x\" {{\n  vm_id = var.vm_id\n  name = \"dup\"\n}}\n"));
    ws.init();
    let out = ws.run(&[
        "import",
        "-no-color",
        "-var",
        &var,
        "ceso_snapshot.x",
        &format!("{vm}/dup"),
    ]);
    let t = text(&out);
    assert_eq!(out.code, 1, "{t}");
    assert!(
        t.contains("ambiguous") && t.contains(&a.value) && t.contains(&b.value),
        "{t}"
    );

    // quiesce = true on a VM whose tools are not running: a clear error, nothing created.
    let off = s.vm_in("poweredOff");
    let ws = Workspace::empty().against(&sim);
    ws.write("main.tf", &format!("{HEADER}resource \"ceso_snapshot\" \"q\" {{\n  vm_id = var.vm_id\n  name = \"q\"\n  quiesce = true\n}}\n"));
    ws.init();
    let out = ws.run(&[
        "apply",
        "-auto-approve",
        "-no-color",
        "-var",
        &format!("vm_id={off}"),
    ]);
    let t = text(&out);
    assert_eq!(out.code, 1, "{t}");
    assert!(t.contains("needs VMware Tools running in the guest"), "{t}");
    assert!(s.tree(&off).snapshots.is_empty(), "nothing created");
}

#[test]
fn removal_consolidates_disks_when_vsphere_asks() {
    require_acc!();
    // The launcher's flag makes RemoveSnapshot_Task leave runtime.consolidationNeeded set.
    let sim = Vcsim::start(&["-esx", "-consolidation-needed-after-remove"]);
    let s = Sim::connect(&sim);
    let vm = s.vm_in("poweredOn");
    let var = format!("vm_id={vm}");
    let ws = Workspace::empty().against(&sim);
    ws.write("main.tf", &format!("{HEADER}resource \"ceso_snapshot\" \"x\" {{\n  vm_id = var.vm_id\n  name = \"tmp\"\n}}\n"));
    ws.init();
    ws.run(&["apply", "-auto-approve", "-no-color", "-var", &var])
        .ok("create");
    let before = sim.counts()["methods"]["/sdk"]["ConsolidateVMDisks_Task"]
        .as_u64()
        .unwrap_or(0);
    let out = ws
        .run(&["destroy", "-auto-approve", "-no-color", "-var", &var])
        .ok("destroy");
    assert!(text(&out).contains("Disks consolidated"), "{}", text(&out));
    assert_eq!(
        sim.counts()["methods"]["/sdk"]["ConsolidateVMDisks_Task"]
            .as_u64()
            .unwrap_or(0),
        before + 1
    );
    let needed =
        s.rt.block_on(s.client.properties(
            &ManagedObjectReference::new("VirtualMachine", &vm),
            &["runtime.consolidationNeeded"],
        ))
        .unwrap();
    assert_eq!(needed.bool("runtime.consolidationNeeded"), Some(false));
    assert!(s.tree(&vm).snapshots.is_empty());
}
