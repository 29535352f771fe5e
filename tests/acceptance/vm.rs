//! `ceso_vm` through real Terraform against the simulator, asserting on the VMs as the
//! simulator reports them.

use std::time::Duration;

use ceso::vsphere::device::{Device, NicBacking};
use ceso::vsphere::types::ManagedObjectReference;
use ceso::vsphere::vm::{PowerOp, VmInfo};
use ceso::vsphere::{Client, ConnectConfig, Secret, TlsPolicy};
use tokio_util::sync::CancellationToken;

use crate::harness::{resource_values, TfRun, Vcsim, Workspace};
use crate::require_acc;

struct Sim {
    rt: tokio::runtime::Runtime,
    client: std::sync::Arc<Client>,
}

impl Sim {
    fn connect(sim: &Vcsim) -> Self {
        ceso::vsphere::tls::install_crypto_provider();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let client = rt
            .block_on(Client::connect(ConnectConfig {
                url: sim.url.parse().unwrap(),
                user: "u".into(),
                password: Secret::new("p"),
                tls: TlsPolicy::Insecure,
                timeout: Duration::from_secs(10),
            }))
            .expect("login");
        Sim {
            rt,
            client: std::sync::Arc::new(client),
        }
    }

    /// The VM named `name`, as the simulator reports it (None when absent).
    fn vm(&self, name: &str) -> Option<VmInfo> {
        let vm = self
            .rt
            .block_on(self.client.find_by_name("VirtualMachine", name))
            .ok()?;
        Some(
            self.rt
                .block_on(self.client.properties(&vm, ceso::vsphere::vm::VM_PATHS))
                .map(|o| VmInfo::from_content(&o))
                .unwrap(),
        )
    }

    fn vm_ref(&self, name: &str) -> ManagedObjectReference {
        self.rt
            .block_on(self.client.find_by_name("VirtualMachine", name))
            .unwrap()
    }
}

fn text(out: &TfRun) -> String {
    format!("{}\n{}", out.stdout, out.stderr)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn disks_gb(vm: &VmInfo) -> Vec<i64> {
    vm.devices
        .iter()
        .filter_map(|d| {
            if let Device::Disk(d) = d {
                Some(d.capacity_kb / 1024 / 1024)
            } else {
                None
            }
        })
        .collect()
}

fn nic_networks(vm: &VmInfo) -> Vec<String> {
    vm.devices
        .iter()
        .filter_map(|d| match d {
            Device::Nic(n) => Some(match &n.backing {
                NicBacking::Network { name } => name.clone(),
                NicBacking::Distributed { portgroup_key, .. } => portgroup_key.clone(),
            }),
            _ => None,
        })
        .collect()
}

fn apply_vars(ws: &Workspace, vars: &[&str]) -> TfRun {
    let mut args = vec!["apply", "-auto-approve", "-no-color"];
    for v in vars {
        args.push("-var");
        args.push(v);
    }
    ws.run(&args)
}

fn plan_vars(ws: &Workspace, vars: &[&str]) -> TfRun {
    let mut args = vec!["plan", "-detailed-exitcode", "-no-color"];
    for v in vars {
        args.push("-var");
        args.push(v);
    }
    ws.run(&args)
}

#[test]
fn vm_lifecycle_on_esxi() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let s = Sim::connect(&sim);
    let ws = Workspace::from_example("resources/ceso_vm").against(&sim);
    ws.init();
    ws.apply().ok("create");
    let vm = s.vm("web-01").expect("VM created in the simulator");
    assert_eq!(
        (
            vm.num_cpus,
            vm.memory_mb,
            vm.guest_id.as_str(),
            vm.power_state.as_str()
        ),
        (2, 2048, "ubuntu64Guest", "poweredOn")
    );
    assert_eq!(disks_gb(&vm), vec![20]);
    assert_eq!(nic_networks(&vm), vec!["VM Network".to_string()]);
    assert_eq!(vm.annotation, "managed by Terraform");
    let second = ws.plan_exit_code();
    assert_eq!(second.code, 0, "second plan not empty: {}", text(&second));

    // CPU change on a running VM without hot add: refused at plan time, with the reason...
    let refused = plan_vars(&ws, &["num_cpus=4"]);
    assert_eq!(refused.code, 1, "{}", text(&refused));
    assert!(
        text(&refused).contains("Change needs a power cycle")
            && text(&refused).contains("allow_power_cycle"),
        "{}",
        text(&refused)
    );
    // ...and applied with a power cycle when allowed; disk grows, memory changes too.
    let vars = [
        "num_cpus=4",
        "memory_mb=4096",
        "root_gb=30",
        "allow_power_cycle=true",
    ];
    apply_vars(&ws, &vars).ok("update");
    let vm = s.vm("web-01").unwrap();
    assert_eq!(
        (vm.num_cpus, vm.memory_mb, vm.power_state.as_str()),
        (4, 4096, "poweredOn")
    );
    assert_eq!(disks_gb(&vm), vec![30]);
    let after = plan_vars(&ws, &vars);
    assert_eq!(
        after.code, 0,
        "plan after update not empty: {}",
        after.stdout
    );

    // Shrinking the disk is refused at plan time.
    let shrink = plan_vars(
        &ws,
        &[
            "num_cpus=4",
            "memory_mb=4096",
            "root_gb=10",
            "allow_power_cycle=true",
        ],
    );
    assert_eq!(shrink.code, 1);
    assert!(
        text(&shrink).contains("Disks cannot shrink"),
        "{}",
        text(&shrink)
    );

    // Drift: powered off by hand -> the plan powers it on again.
    let never = CancellationToken::new();
    s.rt.block_on(
        s.client
            .power_vm(&s.vm_ref("web-01"), PowerOp::Off, None, &never),
    )
    .unwrap();
    let drift = plan_vars(&ws, &vars);
    assert_eq!(drift.code, 2, "{}", text(&drift));
    assert!(
        drift.stdout.contains("\"off\" -> \"on\""),
        "{}",
        drift.stdout
    );
    apply_vars(&ws, &vars).ok("repair power");
    assert_eq!(s.vm("web-01").unwrap().power_state, "poweredOn");

    // Import by inventory path into a fresh state: no resource changes planned.
    let ws2 = Workspace::from_example("resources/ceso_vm").against(&sim);
    ws2.init();
    ws2.write(
        "terraform.tfvars",
        "num_cpus = 4\nmemory_mb = 4096\nroot_gb = 30\nallow_power_cycle = true\n",
    );
    ws2.run(&[
        "import",
        "-no-color",
        "ceso_vm.web",
        "/ha-datacenter/vm/web-01",
    ])
    .ok("import");
    let show = ws2.show_json();
    let v = resource_values(&show, "ceso_vm.web");
    assert_eq!(v["num_cpus"], 4);
    assert_eq!(v["disk"][0]["size_gb"], 30);

    // Deleted out of band -> planned for re-creation.
    s.rt.block_on(
        s.client
            .power_vm(&s.vm_ref("web-01"), PowerOp::Off, None, &never),
    )
    .unwrap();
    s.rt.block_on(s.client.destroy(&s.vm_ref("web-01")))
        .unwrap();
    let gone = plan_vars(&ws, &vars);
    assert_eq!(gone.code, 2, "{}", text(&gone));
    assert!(gone.stdout.contains("will be created"), "{}", gone.stdout);
    apply_vars(&ws, &vars).ok("re-create");
    assert!(s.vm("web-01").is_some());

    let mut destroy = vec!["destroy", "-auto-approve", "-no-color"];
    for v in &vars {
        destroy.extend(["-var", v]);
    }
    ws.run(&destroy).ok("destroy");
    assert!(s.vm("web-01").is_none(), "VM left behind");
}
