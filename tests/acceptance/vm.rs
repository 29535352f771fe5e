//! `ceso_vm` through real Terraform against the simulator, asserting on the VMs as the
//! simulator reports them.

use ceso::vsphere::device::{Device, NicBacking};
use ceso::vsphere::types::ManagedObjectReference;
use ceso::vsphere::vm::{PowerOp, VmInfo};
use ceso::vsphere::Client;
use tokio_util::sync::CancellationToken;

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
    crate::harness::folded(out)
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

#[test]
fn disks_and_adapters_on_vcenter() {
    require_acc!();
    let sim = Vcsim::start(&[]);
    let s = Sim::connect(&sim);
    let ws = Workspace::from_example("resources/ceso_vm/multi-disk").against(&sim);
    ws.init();
    ws.apply().ok("create");
    let vm = s.vm("db-01").expect("created");
    assert_eq!(
        (
            vm.num_cpus,
            vm.cores_per_socket,
            vm.memory_mb,
            vm.power_state.as_str()
        ),
        (4, 2, 8192, "poweredOff")
    );
    assert_eq!(disks_gb(&vm), vec![20, 50]);
    assert_eq!(
        nic_networks(&vm),
        vec!["VM Network".to_string(), "VM Network".to_string()]
    );
    let macs: Vec<Option<String>> = vm
        .devices
        .iter()
        .filter_map(|d| {
            if let Device::Nic(n) = d {
                Some(n.mac_address.clone())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(macs[1].as_deref(), Some("00:50:56:01:02:03"));
    let second = ws.plan_exit_code();
    assert_eq!(second.code, 0, "second plan not empty: {}", second.stdout);

    // Grow the data disk and move the second adapter to the distributed port group.
    let vars = ["data_gb=80", "backend_network=DC0_DVPG0"];
    apply_vars(&ws, &vars).ok("update");
    let vm = s.vm("db-01").unwrap();
    assert_eq!(disks_gb(&vm), vec![20, 80]);
    let dvpg =
        s.rt.block_on(
            s.client
                .find_by_name("DistributedVirtualPortgroup", "DC0_DVPG0"),
        )
        .unwrap();
    assert_eq!(
        nic_networks(&vm)[1],
        dvpg.value,
        "second NIC now on the distributed port group"
    );
    let after = plan_vars(&ws, &vars);
    assert_eq!(
        after.code, 0,
        "plan after update not empty: {}",
        after.stdout
    );

    // Drift: memory changed by hand (the VM is off) -> the plan puts it back.
    let spec = ceso::vsphere::vm::ConfigSpec {
        memory_mb: Some(2048),
        ..Default::default()
    };
    s.rt.block_on(s.client.reconfigure_vm(
        &s.vm_ref("db-01"),
        &spec,
        None,
        &CancellationToken::new(),
    ))
    .unwrap();
    let drift = plan_vars(&ws, &vars);
    assert_eq!(drift.code, 2);
    assert!(drift.stdout.contains("2048 -> 8192"), "{}", drift.stdout);
    apply_vars(&ws, &vars).ok("repair");
    assert_eq!(s.vm("db-01").unwrap().memory_mb, 8192);

    let mut destroy = vec!["destroy", "-auto-approve", "-no-color"];
    for v in &vars {
        destroy.extend(["-var", v]);
    }
    ws.run(&destroy).ok("destroy");
    assert!(s.vm("db-01").is_none());
}

/// Decodes a `gzip+base64` guestinfo value.
fn gunzip_b64(text: &str) -> String {
    use base64::Engine as _;
    use std::io::Read as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap();
    let mut out = String::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_string(&mut out)
        .unwrap();
    out
}

fn download(s: &Sim, dc: &str, path: &str) -> Option<Vec<u8>> {
    use futures::StreamExt;
    let file = ceso::vsphere::datastore_file::DatastoreFile::parse(dc, path).unwrap();
    s.rt.block_on(async {
        let mut stream = Box::pin(s.client.download(&file, None).await.ok()?);
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.ok()?);
        }
        Some(out)
    })
}

fn upload(s: &Sim, dc: &str, path: &str, data: Vec<u8>) {
    let file = ceso::vsphere::datastore_file::DatastoreFile::parse(dc, path).unwrap();
    let len = data.len() as u64;
    let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from(data))]);
    s.rt.block_on(s.client.upload(&file, body, len)).unwrap();
}

fn clone_with_cloud_init(model: &[&str]) {
    let esx = model.contains(&"-esx");
    let sim = Vcsim::start(model);
    let s = Sim::connect(&sim);
    let source = {
        let vms =
            s.rt.block_on(s.client.retrieve_all("VirtualMachine", &["name"]))
                .unwrap();
        vms[0].text("name").unwrap().to_string()
    };
    let src = s.vm(&source).unwrap();
    // Give the source disks real bytes (the simulator makes them empty), as an ESXi flat extent.
    let dc = if esx { "ha-datacenter" } else { "DC0" };
    let content: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    let src_disks: Vec<String> = src
        .devices
        .iter()
        .filter_map(|d| {
            if let Device::Disk(d) = d {
                Some(d.file_name.clone())
            } else {
                None
            }
        })
        .collect();
    for f in &src_disks {
        upload(&s, dc, &f.replace(".vmdk", "-flat.vmdk"), content.clone());
        if download(&s, dc, f).is_none() {
            upload(&s, dc, f, b"# Disk DescriptorFile\n".to_vec());
        }
    }
    let ws = Workspace::from_example("resources/ceso_vm/cloud-init").against(&sim);
    ws.init();
    let var = format!("template={source}");
    let clones_before = sim.counts()["methods"]["/sdk"]["CloneVM_Task"]
        .as_u64()
        .unwrap_or(0);
    apply_vars(&ws, &[&var]).ok("clone");
    let vm = s.vm("app-01").expect("clone created");
    assert_eq!(
        (vm.num_cpus, vm.memory_mb, vm.power_state.as_str(), vm.cbt),
        (2, 4096, "poweredOn", true)
    );
    assert_eq!(
        vm.guest_id, src.guest_id,
        "guest OS comes from the template"
    );
    let clones = sim.counts()["methods"]["/sdk"]["CloneVM_Task"]
        .as_u64()
        .unwrap_or(0)
        - clones_before;
    if esx {
        // No clone API on ESXi: the disks were copied, byte for byte.
        assert_eq!(clones, 0);
        let copies: Vec<String> = vm
            .devices
            .iter()
            .filter_map(|d| {
                if let Device::Disk(d) = d {
                    Some(d.file_name.clone())
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(copies.len(), src_disks.len());
        for f in &copies {
            let got =
                download(&s, dc, &f.replace(".vmdk", "-flat.vmdk")).expect("copied flat extent");
            assert_eq!(got, content, "{f} does not hold the source's bytes");
        }
    } else {
        assert_eq!(clones, 1, "vCenter clones with CloneVM_Task");
    }
    let ec = &vm.extra_config;
    assert_eq!(
        ec.get("guestinfo.userdata.encoding").map(String::as_str),
        Some("gzip+base64")
    );
    assert!(gunzip_b64(&ec["guestinfo.userdata"]).contains("hostname: app-01"));
    let meta = gunzip_b64(&ec["guestinfo.metadata"]);
    assert!(
        meta.contains("local-hostname: app-01") && meta.contains("network.encoding: base64"),
        "{meta}"
    );
    let second = plan_vars(&ws, &[&var]);
    assert_eq!(second.code, 0, "second plan not empty: {}", second.stdout);
    ws.run(&["destroy", "-auto-approve", "-no-color", "-var", &var])
        .ok("destroy");
    assert!(s.vm("app-01").is_none());
    assert!(s.vm(&source).is_some(), "the template must survive");
}

#[test]
fn clone_with_cloud_init_on_vcenter() {
    require_acc!();
    clone_with_cloud_init(&[]);
}

#[test]
fn clone_on_standalone_esxi_copies_disks() {
    require_acc!();
    clone_with_cloud_init(&["-esx"]);
}

#[test]
fn bad_vm_input_is_caught_before_apply() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let base = "name = \"x\"\nmemory_mb = 1024\n";
    let cases: &[(&str, &[&str])] = &[
        ("name = \"x\"\nmemory_mb = 1024\nnum_cpus = 3\ncores_per_socket = 2", &["multiple of cores_per_socket"]),
        ("name = \"x\"\nmemory_mb = 1023", &["multiple of 4"]),
        ("name = \"x\"\nmemory_mb = 1024\ndisk {\n label = \"a\"\n size_gb = 1\n}\ndisk {\n label = \"a\"\n size_gb = 2\n}", &["Duplicate disk label"]),
        ("name = \"x\"\nmemory_mb = 1024\ndisk {\n label = \"a\"\n size_gb = 1\n unit_number = 7\n}", &["Reserved unit number"]),
        ("name = \"x\"\nmemory_mb = 1024\nnetwork_interface {\n network = \"VM Network\"\n mac_address = \"00:11:22:33:44:55\"\n}", &["VMware's range"]),
        ("name = \"x\"\nmemory_mb = 1024\nguest_id = \"ubuntu64Gust\"", &["Unknown guest OS", "ubuntu64Guest"]),
        ("name = \"x\"", &["memory_mb is required"]),
        ("name = \"x\"\nmemory_mb = 1024\nfirmware = \"uefi\"", &["`bios`, `efi`"]),
        ("name = \"x\"\nmemory_mb = 1024\nclone {\n template = \"no-such-template\"\n}", &["Unknown clone source"]),
        ("name = \"x\"\nmemory_mb = 1024\nclone {\n template = \"ha-host_VM0\"\n linked_clone = true\n}", &["Linked clones need vCenter"]),
    ];
    let _ = base;
    for (body, needles) in cases {
        let ws = Workspace::empty().against(&sim);
        ws.write("main.tf", &format!("terraform {{\n  required_providers {{\n    ceso = {{ source = \"choiceomg/ceso\" }}\n  }}\n}}\nresource \"ceso_vm\" \"x\" {{\n{body}\n}}\n"));
        ws.init();
        let out = ws.run(&["plan", "-no-color"]);
        let t = text(&out);
        assert_eq!(out.code, 1, "{body}: plan should fail: {t}");
        for n in *needles {
            assert!(t.contains(n), "{body}: expected {n:?} in: {t}");
        }
    }
}

impl Sim {
    /// The names of the networks the simulator says VM `name` is on, and of its host.
    fn vm_networks_and_host(&self, name: &str) -> (Vec<String>, String) {
        let o = self
            .rt
            .block_on(
                self.client
                    .properties(&self.vm_ref(name), &["network", "runtime.host"]),
            )
            .unwrap();
        let name_of = |r: &ManagedObjectReference| {
            self.rt
                .block_on(self.client.properties(r, &["name"]))
                .unwrap()
                .text("name")
                .unwrap()
                .to_string()
        };
        let networks = o.morefs("network").iter().map(name_of).collect();
        (networks, name_of(&o.moref("runtime.host").unwrap()))
    }

    /// The hosts with a standard port group named `pg`, from their network configuration.
    fn hosts_with_port_group(&self, pg: &str) -> Vec<String> {
        self.rt
            .block_on(self.client.host_networks())
            .unwrap()
            .into_iter()
            .filter(|h| h.port_group(pg).is_some())
            .map(|h| h.name)
            .collect()
    }
}

/// The seed's core scenario through the example a user copies: a VLAN port group and VMs on it
/// by name, in one run. The plan warns that the network is not found yet; the apply makes the
/// port group first, then the VMs on it; the next plan is empty. A misspelt network warns at
/// plan and fails the apply, naming the attribute, with no VM made.
fn vlan_then_vms_on_it(model: &[&str], vars: &[&str]) {
    let sim = Vcsim::start(model);
    let s = Sim::connect(&sim);
    let ws = Workspace::from_example("resources/ceso_vm/on-new-vlan").against(&sim);
    ws.init();
    let plan = plan_vars(&ws, vars);
    let t = text(&plan);
    assert_eq!(plan.code, 2, "the plan should succeed with changes: {t}");
    assert!(
        t.contains("Warning: Network not found (yet)")
            && t.contains("no network named \"tenant-120\"")
            && t.contains("network = ceso_vlan.tenant.name"),
        "{t}"
    );
    apply_vars(&ws, vars).ok("port group and VMs in one apply");
    for vm in ["app-0", "app-1"] {
        let info = s.vm(vm).unwrap_or_else(|| panic!("{vm} created"));
        assert_eq!(nic_networks(&info), vec!["tenant-120".to_string()]);
        let (networks, host) = s.vm_networks_and_host(vm);
        assert_eq!(networks, vec!["tenant-120".to_string()], "{vm}");
        assert!(
            s.hosts_with_port_group("tenant-120").contains(&host),
            "{vm}'s host {host} has the port group"
        );
    }
    let second = plan_vars(&ws, vars);
    assert_eq!(second.code, 0, "second plan not empty: {}", text(&second));

    // A typo: a warning at plan (naming the attribute), an error at apply, nothing made.
    ws.write(
        "typo.tf",
        "resource \"ceso_vm\" \"typo\" {\n  name = \"typo-01\"\n  host = var.host\n  memory_mb = 1024\n  power_state = \"off\"\n  network_interface {\n    network = \"tenant-12O\"\n  }\n}\n",
    );
    let plan = plan_vars(&ws, vars);
    let t = text(&plan);
    assert_eq!(plan.code, 2, "{t}");
    assert!(
        t.contains("Network not found (yet)") && t.contains("network = \"tenant-12O\""),
        "{t}"
    );
    let applied = apply_vars(&ws, vars);
    let t = text(&applied);
    assert_eq!(applied.code, 1, "{t}");
    assert!(
        t.contains("Error: Unknown network")
            && t.contains("no network named \"tenant-12O\"")
            && t.contains("network = \"tenant-12O\""),
        "{t}"
    );
    assert!(s.vm("typo-01").is_none(), "nothing made for the typo");
    std::fs::remove_file(ws.dir.path().join("typo.tf")).unwrap();

    let mut destroy = vec!["destroy", "-auto-approve", "-no-color"];
    for v in vars {
        destroy.extend(["-var", v]);
    }
    ws.run(&destroy).ok("destroy");
    assert!(s.vm("app-0").is_none() && s.vm("app-1").is_none());
    assert_eq!(
        s.hosts_with_port_group("tenant-120"),
        Vec::<String>::new(),
        "port group left behind"
    );
}

#[test]
fn vm_on_a_port_group_made_in_the_same_apply_on_esxi() {
    require_acc!();
    vlan_then_vms_on_it(&["-esx"], &[]);
}

#[test]
fn vm_on_a_port_group_made_in_the_same_apply_on_vcenter() {
    require_acc!();
    vlan_then_vms_on_it(&[], &["cluster=DC0_C0", "host=DC0_C0_H0"]);
}

/// `SET.guest.ipAddress` in extraConfig is how the simulator lets a test play VMware Tools
/// reporting an address.
struct ReportIp(ManagedObjectReference, &'static str);

impl ceso::vsphere::methods::Method for ReportIp {
    type Response = ManagedObjectReference;
    const NAME: &'static str = "ReconfigVM_Task";
    const IDEMPOTENT: bool = false;
    fn this(&self) -> &ManagedObjectReference {
        &self.0
    }
    fn write_args(&self, w: &mut ceso::vsphere::envelope::RequestWriter) {
        w.start("spec", None)
            .start("extraConfig", None)
            .text("key", "SET.guest.ipAddress")
            .typed_text("value", "xsd:string", self.1)
            .end("extraConfig")
            .end("spec");
    }
    fn decode(inner: &str) -> ceso::vsphere::error::Result<ManagedObjectReference> {
        Ok(ceso::vsphere::xml::parse_fragment(inner)?[0]
            .as_moref()
            .unwrap())
    }
}

#[test]
fn wait_for_ip_and_a_failed_create_stays_tracked() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let s = Sim::connect(&sim);
    let config = |name: &str, timeout: &str| {
        format!("terraform {{\n  required_providers {{\n    ceso = {{ source = \"choiceomg/ceso\" }}\n  }}\n}}\nresource \"ceso_vm\" \"w\" {{\n  name = \"{name}\"\n  memory_mb = 512\n  network_interface {{\n    network = \"VM Network\"\n  }}\n  wait_for_ip {{\n    timeout = \"{timeout}\"\n  }}\n}}\n")
    };
    // No address ever comes: the apply fails, and the VM is in state (tainted), not orphaned.
    let ws = Workspace::empty().against(&sim);
    ws.write("main.tf", &config("noip", "2s"));
    ws.init();
    let out = ws.apply();
    assert_eq!(out.code, 1);
    assert!(
        text(&out).contains("No guest IP address in time"),
        "{}",
        text(&out)
    );
    let show = ws.show_json();
    let tracked = &show["values"]["root_module"]["resources"][0];
    assert_eq!(tracked["address"], "ceso_vm.w");
    assert_eq!(tracked["tainted"], true, "{show}");
    assert!(s.vm("noip").is_some());
    ws.run(&["destroy", "-auto-approve", "-no-color"])
        .ok("destroy the tainted VM");
    assert!(s.vm("noip").is_none());

    // The guest reports an address while apply waits: apply finishes and records it.
    let ws = Workspace::empty().against(&sim);
    ws.write("main.tf", &config("withip", "60s"));
    ws.init();
    let reporter = {
        let client = s.client.clone();
        s.rt.spawn(async move {
            let vm = loop {
                if let Ok(vm) = client.find_by_name("VirtualMachine", "withip").await {
                    if client
                        .properties(&vm, &["runtime.powerState"])
                        .await
                        .ok()
                        .and_then(|o| o.text("runtime.powerState").map(str::to_string))
                        .as_deref()
                        == Some("poweredOn")
                    {
                        break vm;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            };
            let task = client.call(&ReportIp(vm, "10.20.30.40")).await.unwrap();
            client
                .wait_for_task(&task, None, &CancellationToken::new(), &|_| {})
                .await
                .unwrap();
        })
    };
    ws.apply().ok("create and wait for the IP");
    s.rt.block_on(reporter).unwrap();
    let show = ws.show_json();
    assert_eq!(
        resource_values(&show, "ceso_vm.w")["default_ip"],
        "10.20.30.40"
    );
    ws.run(&["destroy", "-auto-approve", "-no-color"])
        .ok("destroy");
}

#[test]
fn destroy_refuses_to_lose_unmanaged_snapshots() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let s = Sim::connect(&sim);
    let ws = Workspace::from_example("resources/ceso_vm").against(&sim);
    ws.init();
    ws.apply().ok("create");
    let vm = s.vm_ref("web-01");
    s.rt.block_on(s.client.create_snapshot(
        &vm,
        &ceso::vsphere::snapshot::NewSnapshot {
            name: "by-hand",
            ..Default::default()
        },
        None,
        &CancellationToken::new(),
    ))
    .unwrap();
    let out = ws.run(&["destroy", "-auto-approve", "-no-color"]);
    assert_eq!(out.code, 1);
    assert!(
        text(&out).contains("has snapshots") && text(&out).contains("force_destroy"),
        "{}",
        text(&out)
    );
    assert!(s.vm("web-01").is_some(), "the VM and its snapshot survive");
    ws.write("force.auto.tfvars", "");
    let forced = std::fs::read_to_string(ws.dir.path().join("resource.tf"))
        .unwrap()
        .replace(
            "annotation = \"managed by Terraform\"",
            "annotation = \"managed by Terraform\"\n  force_destroy = true",
        );
    ws.write("resource.tf", &forced);
    ws.apply().ok("set force_destroy");
    ws.run(&["destroy", "-auto-approve", "-no-color"])
        .ok("forced destroy");
    assert!(s.vm("web-01").is_none());
}

/// A small but complete OVF 1.0 descriptor: 1 vCPU, 256 MiB, an LSI Logic controller and one
/// disk whose file `disk1.vmdk` sits beside it.
#[test]
fn deploys_an_ovf_package() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let s = Sim::connect(&sim);
    let pkg = tempfile::tempdir().unwrap();
    // A real streamOptimized disk (qemu-img) with known data, as an .ovf and as an .ova.
    let (_, ova, raw) = crate::disks::ovf_package(pkg.path(), 2);
    let want = crate::disks::digest_file(&raw);
    // And both served over HTTP on loopback.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
            "--directory",
        ])
        .arg(pkg.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "http.server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let sources = [
        pkg.path().join("tiny.ovf").display().to_string(),
        ova.display().to_string(),
        format!("http://127.0.0.1:{port}/tiny.ovf"),
        format!("http://127.0.0.1:{port}/tiny.ova"),
    ];
    for source in sources {
        let ws = Workspace::from_example("resources/ceso_vm/ovf").against(&sim);
        ws.init();
        let var = format!("ova={source}");
        let leases = sim.counts()["methods"]["/sdk"]["HttpNfcLeaseComplete"]
            .as_u64()
            .unwrap_or(0);
        apply_vars(&ws, &[&var]).ok("deploy");
        let counts = sim.counts();
        assert_eq!(
            counts["methods"]["/sdk"]["HttpNfcLeaseComplete"]
                .as_u64()
                .unwrap_or(0),
            leases + 1,
            "the import lease was completed: {counts}"
        );
        let vm = s.vm("ubuntu-01").expect("deployed");
        assert_eq!(vm.guest_id, "ubuntu64Guest", "guest OS from the descriptor");
        assert_eq!(
            (vm.num_cpus, vm.memory_mb, vm.power_state.as_str()),
            (2, 2048, "poweredOn"),
            "sizing from the configuration"
        );
        assert_eq!(disks_gb(&vm), vec![2], "the package's disk");
        let c = crate::harness::SimClient::connect(&sim);
        let flat = crate::disks::first_disk_flat(&c, &vm);
        assert_eq!(
            crate::disks::digest_file(&flat),
            want,
            "the VM's disk holds the package's data, byte for byte"
        );
        let plan = plan_vars(&ws, &[&var]);
        assert_eq!(plan.code, 0, "second plan not empty: {}", plan.stdout);
        ws.run(&["destroy", "-auto-approve", "-no-color", "-var", &var])
            .ok("destroy");
        assert!(s.vm("ubuntu-01").is_none());
    }
    let _ = server.kill();
    let _ = server.wait();
    // A missing package is an error before anything is created, naming the attribute.
    let ws = Workspace::from_example("resources/ceso_vm/ovf").against(&sim);
    ws.init();
    let out = ws.run(&["plan", "-no-color"]);
    assert_eq!(out.code, 1);
    assert!(
        text(&out).contains("OVF package not found"),
        "{}",
        text(&out)
    );
}

#[test]
fn extra_config_nic_drift_and_import_with_matching_config() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let s = Sim::connect(&sim);
    let config = "terraform {\n  required_providers {\n    ceso = { source = \"choiceomg/ceso\" }\n  }\n}\nresource \"ceso_vm\" \"x\" {\n  name = \"ec-01\"\n  memory_mb = 512\n  extra_config = {\n    \"ceso.role\" = \"web\"\n  }\n  disk {\n    label = \"disk0\"\n    size_gb = 1\n  }\n  network_interface {\n    network = \"VM Network\"\n  }\n  network_interface {\n    network = \"VM Network\"\n  }\n}\n";
    let ws = Workspace::empty().against(&sim);
    ws.write("main.tf", config);
    ws.init();
    ws.apply().ok("create");
    let vm = s.vm("ec-01").unwrap();
    assert_eq!(
        vm.extra_config.get("ceso.role").map(String::as_str),
        Some("web")
    );
    assert_eq!(nic_networks(&vm).len(), 2);
    assert_eq!(ws.plan_exit_code().code, 0);

    // A NIC removed by hand: the plan adds it back.
    let second = vm
        .devices
        .iter()
        .filter_map(|d| {
            if let Device::Nic(n) = d {
                Some(n.clone())
            } else {
                None
            }
        })
        .nth(1)
        .unwrap();
    let spec = ceso::vsphere::vm::ConfigSpec {
        device_changes: vec![ceso::vsphere::device::DeviceChange::Nic {
            op: ceso::vsphere::device::Operation::Remove,
            nic: second,
        }],
        ..Default::default()
    };
    s.rt.block_on(s.client.reconfigure_vm(
        &s.vm_ref("ec-01"),
        &spec,
        None,
        &CancellationToken::new(),
    ))
    .unwrap();
    let drift = ws.plan_exit_code();
    assert_eq!(drift.code, 2, "{}", drift.stdout);
    assert!(
        drift.stdout.contains("+ network_interface"),
        "{}",
        drift.stdout
    );
    ws.apply().ok("repair");
    assert_eq!(nic_networks(&s.vm("ec-01").unwrap()).len(), 2);

    // An extraConfig value changed by hand shows and is put back; unmanaged keys are left alone.
    let spec = ceso::vsphere::vm::ConfigSpec {
        extra_config: vec![
            ("ceso.role".into(), "db".into()),
            ("other.key".into(), "kept".into()),
        ],
        ..Default::default()
    };
    s.rt.block_on(s.client.reconfigure_vm(
        &s.vm_ref("ec-01"),
        &spec,
        None,
        &CancellationToken::new(),
    ))
    .unwrap();
    let drift = ws.plan_exit_code();
    assert_eq!(drift.code, 2);
    assert!(
        drift.stdout.contains("\"db\" -> \"web\""),
        "{}",
        drift.stdout
    );
    ws.apply().ok("repair extra_config");
    let vm = s.vm("ec-01").unwrap();
    assert_eq!(
        vm.extra_config.get("ceso.role").map(String::as_str),
        Some("web")
    );
    assert_eq!(
        vm.extra_config.get("other.key").map(String::as_str),
        Some("kept")
    );

    // Imported into a fresh state with the same configuration (disks labelled disk0, ...):
    // no changes planned. (Which extraConfig keys a configuration manages cannot be known at
    // import, so that map is left out here; the first apply would record it without changes.)
    let ws2 = Workspace::empty().against(&sim);
    ws2.write(
        "main.tf",
        &config.replace("  extra_config = {\n    \"ceso.role\" = \"web\"\n  }\n", ""),
    );
    ws2.init();
    let uuid = s.vm("ec-01").unwrap().instance_uuid;
    ws2.run(&["import", "-no-color", "ceso_vm.x", &uuid])
        .ok("import by UUID");
    let plan = ws2.plan_exit_code();
    assert_eq!(plan.code, 0, "plan after import: {}", plan.stdout);
    ws.run(&["destroy", "-auto-approve", "-no-color"])
        .ok("destroy");
}
