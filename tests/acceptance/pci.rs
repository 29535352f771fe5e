//! GPU/NIC passthrough through real Terraform: `ceso_pci_devices`, `ceso_pci_passthrough` and
//! `ceso_vm`'s `pci_device` blocks against the simulator's model of host PCI passthrough
//! (tests/acceptance/vcsim/pci.go: a Tesla T4, an A100 and a two-function X710 on the host).
//! Assertions read the host's passthrough state and the VM's devices from the simulator.

use std::time::Instant;

use ceso::vsphere::device::PassthroughBacking;
use ceso::vsphere::pci::HostPci;
use ceso::vsphere::types::ManagedObjectReference;
use ceso::vsphere::vm::{ConfigSpec, PowerOp, VmInfo};

use crate::harness::{folded, SimClient, Vcsim, Workspace};
use crate::require_acc;

const T4: &str = "0000:3b:00.0";
const A100: &str = "0000:af:00.0";
const NIC0: &str = "0000:81:00.0";
const NIC1: &str = "0000:81:00.1";

struct Sim {
    c: SimClient,
    host: ManagedObjectReference,
    host_name: String,
}

impl Sim {
    fn connect(sim: &Vcsim) -> Self {
        let c = SimClient::connect(sim);
        let hosts = c
            .run(c.client.retrieve_all("HostSystem", &["name"]))
            .unwrap();
        let h = &hosts[0];
        Sim {
            host: h.obj.clone(),
            host_name: h.text("name").unwrap().to_string(),
            c,
        }
    }

    fn pci(&self) -> HostPci {
        self.c.run(self.c.client.host_pci(&self.host)).unwrap()
    }

    fn vm(&self, moid: &str) -> VmInfo {
        self.c
            .run(
                self.c
                    .client
                    .vm_info(&ManagedObjectReference::new("VirtualMachine", moid)),
            )
            .unwrap()
    }

    fn passthrough_ids(&self, moid: &str) -> Vec<String> {
        self.vm(moid)
            .passthroughs()
            .map(|p| match &p.backing {
                PassthroughBacking::Direct { id, .. } => id.clone(),
                PassthroughBacking::Vgpu { profile } => format!("vgpu:{profile}"),
            })
            .collect()
    }

    /// Enables passthrough of `devices` and reboots the host in maintenance mode, as an
    /// administrator would have done before.
    fn make_active(&self, devices: &[&str]) {
        let cl = &self.c.client;
        let system = self.pci().passthru_system.expect("a passthrough system");
        let changes: Vec<(String, bool)> = devices.iter().map(|d| (d.to_string(), true)).collect();
        let cancel = Default::default();
        self.c.run(async {
            cl.update_passthru(&system, &changes).await.unwrap();
            cl.set_maintenance(&self.host, true, None, &cancel)
                .await
                .unwrap();
            cl.reboot_host(&self.host, std::time::Duration::from_secs(30), &cancel)
                .await
                .unwrap();
            cl.set_maintenance(&self.host, false, None, &cancel)
                .await
                .unwrap();
        });
        for d in devices {
            assert!(self.pci().state(d).active, "{d} active");
        }
    }
}

fn var(k: &str, v: &str) -> String {
    format!("{k}={v}")
}

#[test]
fn pci_examples_list_enable_reboot_and_attach_a_gpu() {
    require_acc!();
    let sim = Vcsim::start(&["-esx", "-reboot-ms", "50"]);
    let s = Sim::connect(&sim);
    let host = var("host", &s.host_name);

    // List the host's GPUs: the T4 and the A100, from the host's own data.
    let ds = Workspace::from_example("data-sources/ceso_pci_devices").against(&sim);
    ds.init();
    ds.run(&["apply", "-auto-approve", "-no-color", "-var", &host])
        .ok("list GPUs");
    let out = ds.outputs();
    let gpus = &out["gpus"]["value"];
    // The T4 and the A100; not the host's own VMware SVGA (see the test below).
    assert_eq!(gpus.as_object().unwrap().len(), 2, "{gpus}");
    assert_eq!(gpus[T4]["vendor"], "NVIDIA");
    assert_eq!(gpus[T4]["memory_mb"], 16384);
    assert_eq!(gpus[A100]["memory_mb"], 40960);
    assert_eq!(gpus[T4]["enabled"], false);
    assert!(gpus[T4]["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "grid_t4-4q"));
    assert_eq!(
        out["free_nvidia"]["value"],
        serde_json::json!([]),
        "nothing assignable yet"
    );

    // Enable passthrough without a reboot: enabled, not active, and the apply says why.
    let pt = Workspace::from_example("resources/ceso_pci_passthrough").against(&sim);
    pt.init();
    let applied = pt
        .run(&["apply", "-auto-approve", "-no-color", "-var", &host])
        .ok("enable");
    assert!(
        folded(&applied).contains("requires a host reboot"),
        "{}",
        folded(&applied)
    );
    let st = s.pci().state(T4);
    assert!(st.enabled && !st.active, "{st:?}");
    assert_eq!(pt.outputs()["reboot_required"]["value"], true);

    // Let ceso reboot the host: now active, and the next plan is empty.
    let reboot = ["-var", &host, "-var", "reboot_if_required=true"];
    pt.run(&[&["apply", "-auto-approve", "-no-color"][..], &reboot[..]].concat())
        .ok("reboot");
    assert!(s.pci().state(T4).active, "active after the reboot");
    assert!(!s.pci().in_maintenance, "maintenance mode left again");
    assert_eq!(pt.outputs()["active"]["value"], true);
    let plan = pt.run(
        &[
            &["plan", "-detailed-exitcode", "-no-color"][..],
            &reboot[..],
        ]
        .concat(),
    );
    assert_eq!(plan.code, 0, "plan after apply: {}", plan.stdout);

    // Import by HOST/ADDRESS, then destroy: the host is left as found (disabled again).
    let id = format!("{}/{T4}", s.host_name);
    pt.run(&["state", "rm", "ceso_pci_passthrough.gpu"])
        .ok("state rm");
    pt.run(
        &[
            &["import", "-no-color"][..],
            &reboot[..],
            &["ceso_pci_passthrough.gpu", &id][..],
        ]
        .concat(),
    )
    .ok("import");
    let plan = pt.run(
        &[
            &["plan", "-detailed-exitcode", "-no-color"][..],
            &reboot[..],
        ]
        .concat(),
    );
    assert_eq!(
        plan.code, 2,
        "reboot_if_required is not known to an import: {}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("reboot_if_required"),
        "{}",
        plan.stdout
    );
    // (Terraform 1.0's import records no outputs, so only they may show as changes.)
    let plan = pt
        .run(&["plan", "-no-color", "-var", &host])
        .ok("plan after import");
    assert!(
        !plan.stdout.contains("will be") && !plan.stdout.contains("must be"),
        "plan after import: {}",
        plan.stdout
    );
    // Imported as found (enabled): destroy keeps it enabled.
    pt.run(&[&["destroy", "-auto-approve", "-no-color"][..], &reboot[..]].concat())
        .ok("destroy imported");
    assert!(
        s.pci().state(T4).enabled,
        "imported as enabled, left enabled"
    );

    // Turn it off again out of band, so the GPU example starts from a clean host.
    let system = s.pci().passthru_system.unwrap();
    s.c.run(
        s.c.client
            .update_passthru(&system, &[(T4.to_string(), false)]),
    )
    .unwrap();

    // The Ubuntu VM with a T4: passthrough enabled with its reboot, then the VM created with
    // the GPU before its first power-on.
    let vm = Workspace::from_example("resources/ceso_vm/gpu").against(&sim);
    vm.init();
    vm.run(&["apply", "-auto-approve", "-no-color", "-var", &host])
        .ok("GPU VM");
    let moid = vm.outputs()["vm"]["value"].as_str().unwrap().to_string();
    assert_eq!(s.passthrough_ids(&moid), vec![T4.to_string()]);
    let info = s.vm(&moid);
    assert!(info.memory_locked_to_max, "memory reservation locked");
    assert_eq!(info.power_state, "poweredOn");
    assert_eq!(s.pci().holders[T4][0].vm.value, moid);
    assert!(vm.outputs()["gpu"]["value"]
        .as_str()
        .unwrap()
        .contains("T4"));
    let plan = vm.run(&["plan", "-detailed-exitcode", "-no-color", "-var", &host]);
    assert_eq!(plan.code, 0, "plan after apply: {}", plan.stdout);

    // Detached out of band: the plan shows it and apply attaches it again.
    let vm_ref = ManagedObjectReference::new("VirtualMachine", &moid);
    let device = info.passthroughs().next().unwrap().clone();
    s.c.run(async {
        let cl = &s.c.client;
        let cancel = Default::default();
        cl.power_vm(&vm_ref, PowerOp::Off, None, &cancel)
            .await
            .unwrap();
        let spec = ConfigSpec {
            device_changes: vec![ceso::vsphere::device::DeviceChange::Passthrough {
                op: ceso::vsphere::device::Operation::Remove,
                device,
            }],
            ..ConfigSpec::default()
        };
        cl.reconfigure_vm(&vm_ref, &spec, None, &cancel)
            .await
            .unwrap();
    });
    assert!(s.passthrough_ids(&moid).is_empty());
    let plan = vm.run(&["plan", "-detailed-exitcode", "-no-color", "-var", &host]);
    assert_eq!(plan.code, 2, "drift shows: {}", plan.stdout);
    assert!(plan.stdout.contains("pci_device"), "{}", plan.stdout);
    vm.run(&["apply", "-auto-approve", "-no-color", "-var", &host])
        .ok("re-attach");
    assert_eq!(s.passthrough_ids(&moid), vec![T4.to_string()]);
    assert_eq!(s.vm(&moid).power_state, "poweredOn");

    // Import the VM: its GPU comes with it, and the plan is empty.
    vm.run(&["state", "rm", "ceso_vm.train"]).ok("state rm vm");
    vm.run(&["import", "-no-color", "-var", &host, "ceso_vm.train", &moid])
        .ok("import vm");
    let show = vm.show_json();
    let state = crate::harness::resource_values(&show, "ceso_vm.train");
    assert_eq!(state["pci_device"][0]["address"], T4, "{state}");

    vm.run(&["destroy", "-auto-approve", "-no-color", "-var", &host])
        .ok("destroy");
    assert!(
        !s.pci().state(T4).enabled,
        "passthrough restored to disabled"
    );
}

/// `gpus_only` lists compute GPUs: the simulator's ESXi host has VMware's SVGA II display
/// adapter (vendor 0x15ad, class 0x0300) beside its GPUs, as a physical host has its BMC's VGA;
/// it is listed among all devices and display controllers, never as a GPU.
#[test]
fn gpus_only_means_compute_gpus_not_the_hosts_display() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let s = Sim::connect(&sim);
    let pci = s.pci();
    let display = pci
        .devices
        .iter()
        .find(|d| d.vendor_id == 0x15ad && d.class_id >> 8 == 0x03)
        .expect("the simulator's host has its own display adapter");
    let compute: Vec<&str> = pci
        .devices
        .iter()
        .filter(|d| d.class_id == 0x0302)
        .map(|d| d.id.as_str())
        .collect();
    assert!(compute.len() >= 2, "{compute:?}");

    let ws = Workspace::empty().against(&sim);
    ws.write(
        "main.tf",
        r#"
terraform {
  required_providers {
    ceso = { source = "choiceomg/ceso" }
  }
}
data "ceso_pci_devices" "all" {}
data "ceso_pci_devices" "gpus" {
  gpus_only = true
}
data "ceso_pci_devices" "displays" {
  class_id = "0x03"
}
output "all" {
  value = { for d in data.ceso_pci_devices.all.devices : d.address => d }
}
output "gpus" {
  value = [for d in data.ceso_pci_devices.gpus.devices : d.address]
}
output "displays" {
  value = [for d in data.ceso_pci_devices.displays.devices : d.address]
}
"#,
    );
    ws.init();
    ws.apply().ok("list devices");
    let out = ws.outputs();
    let listed = &out["all"]["value"][display.id.as_str()];
    assert_eq!(listed["is_gpu"], false, "{listed}");
    assert!(listed["gpu_vendor"].is_null(), "{listed}");
    assert_eq!(listed["vendor_id"], "0x15ad");
    let gpus: Vec<&str> = out["gpus"]["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(gpus, compute, "gpus_only is the host's 3D controllers");
    for id in &compute {
        assert_eq!(out["all"]["value"][*id]["is_gpu"], true, "{id}");
    }
    let displays = out["displays"]["value"].as_array().unwrap();
    assert!(
        displays.iter().any(|d| d == display.id.as_str()),
        "{displays:?}"
    );
    assert_eq!(
        displays.len(),
        pci.devices
            .iter()
            .filter(|d| d.class_id >> 8 == 0x03)
            .count(),
        "{displays:?}"
    );
}

#[test]
fn pci_mistakes_fail_at_plan_naming_the_device_and_the_reason() {
    require_acc!();
    let sim = Vcsim::start(&["-esx", "-reboot-ms", "0"]);
    let s = Sim::connect(&sim);
    s.make_active(&[T4, NIC0, NIC1]);
    let other = s
        .pci()
        .devices
        .iter()
        .find(|d| !s.pci().state(&d.id).capable)
        .expect("a device that cannot be passed through")
        .id
        .clone();
    let ws = Workspace::empty().against(&sim);
    let cfg = |body: &str| {
        format!(
            "terraform {{\n  required_providers {{\n    ceso = {{ source = \"choiceomg/ceso\" }}\n  }}\n}}\nprovider \"ceso\" {{}}\nresource \"ceso_vm\" \"gpu\" {{\n  name = \"gpu-01\"\n  host = \"{}\"\n  memory_mb = 4096\n  power_state = \"off\"\n{body}\n}}\n",
            s.host_name
        )
    };
    ws.write("main.tf", &cfg(""));
    ws.init();
    let cases: Vec<(String, &str)> = vec![
        (
            format!("pci_device {{\n address = \"{A100}\"\n}}"),
            "Passthrough is not enabled for PCI device 0000:af:00.0",
        ),
        (
            format!("pci_device {{\n address = \"{NIC0}\"\n}}"),
            "must be passed through together with 0000:81:00.1",
        ),
        (
            "pci_device {\n vgpu_profile = \"grid_a100-99c\"\n}".to_string(),
            "does not offer vGPU profile \"grid_a100-99c\"",
        ),
        (
            "pci_device {\n address = \"3b:00.0\"\n}".to_string(),
            "a PCI address DDDD:BB:SS.F",
        ),
        (
            format!("pci_device {{\n address = \"{T4}\"\n vgpu_profile = \"grid_t4-4q\"\n}}"),
            "not both",
        ),
        (
            format!("pci_device {{\n address = \"{other}\"\n}}"),
            "cannot be passed through",
        ),
    ];
    for (block, want) in &cases {
        ws.write("main.tf", &cfg(block));
        let plan = ws.run(&["plan", "-no-color"]);
        let text = folded(&plan);
        assert_eq!(plan.code, 1, "{block}: {text}");
        assert!(text.contains(want), "{block}: expected {want:?} in {text}");
    }
    // Both functions of the NIC together plan cleanly; nothing was created by the failures.
    ws.write(
        "main.tf",
        &cfg(&format!(
            "pci_device {{\n address = \"{NIC0}\"\n}}\npci_device {{\n address = \"{NIC1}\"\n}}"
        )),
    );
    ws.run(&["apply", "-auto-approve", "-no-color"])
        .ok("NIC pair");
    let show = ws.show_json();
    let moid = crate::harness::resource_values(&show, "ceso_vm.gpu")["moid"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ids = s.passthrough_ids(&moid);
    ids.sort();
    assert_eq!(ids, vec![NIC0.to_string(), NIC1.to_string()]);

    // A second VM asking for a device the first one holds is refused at plan time.
    ws.write(
        "other.tf",
        &format!("resource \"ceso_vm\" \"thief\" {{\n  name = \"thief\"\n  host = \"{}\"\n  memory_mb = 1024\n  power_state = \"off\"\n  pci_device {{\n    address = \"{NIC0}\"\n  }}\n  pci_device {{\n    address = \"{NIC1}\"\n  }}\n}}\n", s.host_name),
    );
    let plan = ws.run(&["plan", "-no-color"]);
    assert!(
        folded(&plan).contains("is already given to VM gpu-01"),
        "{}",
        folded(&plan)
    );
    std::fs::remove_file(ws.dir.path().join("other.tf")).unwrap();

    // Disabling passthrough of a device a VM holds is refused at plan time too.
    ws.write(
        "host.tf",
        &format!("resource \"ceso_pci_passthrough\" \"nic\" {{\n  host = \"{}\"\n  device = \"{NIC0}\"\n  enabled = false\n}}\n", s.host_name),
    );
    let plan = ws.run(&["plan", "-no-color"]);
    assert!(
        folded(&plan).contains("is given to VM gpu-01"),
        "{}",
        folded(&plan)
    );
    std::fs::remove_file(ws.dir.path().join("host.tf")).unwrap();

    // A running VM: adding a GPU without allow_power_cycle is a plan-time error.
    ws.write(
        "main.tf",
        &cfg(&format!(
            "pci_device {{\n address = \"{NIC0}\"\n}}\npci_device {{\n address = \"{NIC1}\"\n}}"
        ))
        .replace("power_state = \"off\"", "power_state = \"on\""),
    );
    ws.run(&["apply", "-auto-approve", "-no-color"])
        .ok("power on");
    ws.write(
        "main.tf",
        &cfg(&format!("pci_device {{\n address = \"{NIC0}\"\n}}\npci_device {{\n address = \"{NIC1}\"\n}}\npci_device {{\n address = \"{T4}\"\n}}")).replace("power_state = \"off\"", "power_state = \"on\""),
    );
    let plan = ws.run(&["plan", "-no-color"]);
    assert!(
        folded(&plan)
            .contains("PCI passthrough devices are added and removed only while the VM is off"),
        "{}",
        folded(&plan)
    );
    // (Terraform 1.0 plans the configuration before destroying: give it the one applied.)
    ws.write(
        "main.tf",
        &cfg(&format!(
            "pci_device {{\n address = \"{NIC0}\"\n}}\npci_device {{\n address = \"{NIC1}\"\n}}"
        ))
        .replace("power_state = \"off\"", "power_state = \"on\""),
    );
    ws.run(&["destroy", "-auto-approve", "-no-color"])
        .ok("destroy");
}

/// The issue's figure: wall time of "attach a GPU to an existing powered-off VM", from
/// `terraform apply` start to done, with 20 ms of latency on every vSphere call.
#[test]
fn pci_attach_gpu_to_powered_off_vm_timing() {
    require_acc!();
    let sim = Vcsim::start(&["-esx", "-delay", "20", "-reboot-ms", "0"]);
    let s = Sim::connect(&sim);
    s.make_active(&[T4]);
    let ws = Workspace::empty().against(&sim);
    let cfg = |gpu: &str| {
        format!(
            "terraform {{\n  required_providers {{\n    ceso = {{ source = \"choiceomg/ceso\" }}\n  }}\n}}\nprovider \"ceso\" {{}}\nresource \"ceso_vm\" \"train\" {{\n  name = \"train-02\"\n  host = \"{}\"\n  guest_id = \"ubuntu64Guest\"\n  memory_mb = 8192\n  power_state = \"off\"\n  disk {{\n    label = \"root\"\n    size_gb = 20\n  }}\n{gpu}\n}}\n",
            s.host_name
        )
    };
    ws.write("main.tf", &cfg(""));
    ws.init();
    ws.apply().ok("VM");
    ws.write(
        "main.tf",
        &cfg(&format!("  pci_device {{\n    address = \"{T4}\"\n  }}")),
    );
    let before = sim.sdk_calls();
    let started = Instant::now();
    ws.apply().ok("attach");
    let took = started.elapsed();
    let calls = sim.sdk_calls() - before;
    let moid = crate::harness::resource_values(&ws.show_json(), "ceso_vm.train")["moid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(s.passthrough_ids(&moid), vec![T4.to_string()]);
    println!(
        "attach a GPU to a powered-off VM at -delay 20: {:.2} s wall (terraform apply), {calls} SOAP calls",
        took.as_secs_f64()
    );
    assert!(took.as_secs() < 10, "took {took:?}");
}

/// A vGPU: `pci_device { vgpu_profile }` gives the VM a VmiopBackingInfo device of a profile the
/// host offers; removing the block removes it.
#[test]
fn pci_vgpu_profile_attaches_a_vgpu() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let s = Sim::connect(&sim);
    assert!(s.pci().vgpu_profiles.iter().any(|p| p == "grid_a100-8c"));
    let ws = Workspace::empty().against(&sim);
    let cfg = |block: &str| {
        format!(
            "terraform {{\n  required_providers {{\n    ceso = {{ source = \"choiceomg/ceso\" }}\n  }}\n}}\nprovider \"ceso\" {{}}\nresource \"ceso_vm\" \"ml\" {{\n  name = \"ml-01\"\n  host = \"{}\"\n  memory_mb = 2048\n  power_state = \"off\"\n{block}\n}}\n",
            s.host_name
        )
    };
    ws.write(
        "main.tf",
        &cfg("  pci_device {\n    vgpu_profile = \"grid_a100-8c\"\n  }"),
    );
    ws.init();
    ws.apply().ok("vGPU VM");
    let moid = crate::harness::resource_values(&ws.show_json(), "ceso_vm.ml")["moid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        s.passthrough_ids(&moid),
        vec!["vgpu:grid_a100-8c".to_string()]
    );
    assert!(s.vm(&moid).memory_locked_to_max);
    let plan = ws.plan_exit_code();
    assert_eq!(plan.code, 0, "plan after apply: {}", plan.stdout);
    // The block removed: the vGPU is detached.
    ws.write("main.tf", &cfg(""));
    ws.apply().ok("detach");
    assert!(s.passthrough_ids(&moid).is_empty());
    ws.run(&["destroy", "-auto-approve", "-no-color"])
        .ok("destroy");
}
