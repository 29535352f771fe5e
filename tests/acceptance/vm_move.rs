//! Moving VMs through real Terraform: a `host` change on vCenter (`RelocateVM_Task`, live) and
//! an `endpoint` change between two standalone ESXi hosts (cold migration: disks streamed
//! between the datastores, checked byte for byte in the simulator).

use bytes::Bytes;
use ceso::vsphere::datastore_file::DatastoreFile;
use futures::TryStreamExt;

use crate::harness::{folded, resource_values, SimClient, Vcsim, Workspace};
use crate::require_acc;

const HEAD: &str =
    "terraform {\n  required_providers {\n    ceso = { source = \"choiceomg/ceso\" }\n  }\n}\n";

/// (host object, name) of every host, by name.
fn hosts(c: &SimClient) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = c
        .run(c.client.retrieve_all("HostSystem", &["name"]))
        .unwrap()
        .iter()
        .map(|o| (o.obj.value.clone(), o.text("name").unwrap().to_string()))
        .collect();
    h.sort_by(|a, b| a.1.cmp(&b.1));
    h
}

fn vm_by_name(c: &SimClient, name: &str) -> Option<ceso::vsphere::vm::VmInfo> {
    let all = c
        .run(c.client.retrieve_all("VirtualMachine", &["name"]))
        .unwrap();
    let vm = all.iter().find(|o| o.text("name") == Some(name))?;
    Some(c.run(c.client.vm_info(&vm.obj)).unwrap())
}

fn flat(disk: &str) -> DatastoreFile {
    let f = DatastoreFile::parse("ha-datacenter", disk).unwrap();
    DatastoreFile {
        path: f.path.replace(".vmdk", "-flat.vmdk"),
        ..f
    }
}

fn read_all(c: &SimClient, f: &DatastoreFile, len: u64) -> Vec<u8> {
    c.run(async {
        c.client
            .download(f, Some(0..len))
            .await
            .unwrap()
            .try_fold(Vec::new(), |mut acc, b| async move {
                acc.extend_from_slice(&b);
                Ok(acc)
            })
            .await
            .unwrap()
    })
}

#[test]
fn vm_moves_between_vcenter_hosts_live() {
    require_acc!();
    let sim = Vcsim::start(&[]);
    let c = SimClient::connect(&sim);
    let cluster: Vec<(String, String)> = hosts(&c)
        .into_iter()
        .filter(|h| h.1.contains("_C0_"))
        .collect();
    let (from, to) = (&cluster[0], &cluster[1]);
    let cfg = |host: &str| {
        format!("{HEAD}provider \"ceso\" {{}}\nresource \"ceso_vm\" \"app\" {{\n  name = \"app-01\"\n  host = \"{host}\"\n  memory_mb = 1024\n  disk {{\n    label = \"root\"\n    size_gb = 1\n  }}\n}}\n")
    };
    let ws = Workspace::empty().against(&sim);
    ws.write("main.tf", &cfg(&from.1));
    ws.init();
    ws.apply().ok("create");
    let before = vm_by_name(&c, "app-01").unwrap();
    assert_eq!(before.host.as_ref().unwrap().value, from.0);
    assert_eq!(before.power_state, "poweredOn");

    ws.write("main.tf", &cfg(&to.1));
    let plan = ws.run(&["plan", "-no-color"]).ok("plan move");
    assert!(
        plan.stdout.contains("will be updated in-place"),
        "a move, not a replacement: {}",
        plan.stdout
    );
    ws.apply().ok("move");
    let after = vm_by_name(&c, "app-01").unwrap();
    assert_eq!(after.host.as_ref().unwrap().value, to.0, "on the new host");
    assert_eq!(after.instance_uuid, before.instance_uuid, "the same VM");
    assert_eq!(after.power_state, "poweredOn", "moved live");
    let plan = ws.run(&["plan", "-detailed-exitcode", "-no-color"]);
    assert_eq!(plan.code, 0, "plan after the move: {}", plan.stdout);
    ws.run(&["destroy", "-auto-approve", "-no-color"])
        .ok("destroy");
}

#[test]
fn vm_moves_between_standalone_endpoints_cold_with_its_data() {
    require_acc!();
    let a = Vcsim::start(&["-esx", "-gpu-hosts", "0"]);
    let b = Vcsim::start(&["-esx", "-gpu-hosts", "0"]);
    let (ca, cb) = (SimClient::connect(&a), SimClient::connect(&b));
    let provider = format!(
        "provider \"ceso\" {{\n  user = \"u\"\n  password = \"p\"\n  endpoint {{\n    name = \"a\"\n    url = \"{}\"\n  }}\n  endpoint {{\n    name = \"b\"\n    url = \"{}\"\n  }}\n}}\n",
        a.url, b.url
    );
    let cfg = |endpoint: &str, cycle: bool| {
        format!("{HEAD}{provider}resource \"ceso_vm\" \"db\" {{\n  name = \"db-01\"\n  endpoint = \"{endpoint}\"\n  memory_mb = 512\n  allow_power_cycle = {cycle}\n  disk {{\n    label = \"data\"\n    size_gb = 1\n  }}\n}}\n")
    };
    let ws = Workspace::empty();
    ws.write("main.tf", &cfg("a", false));
    ws.init();
    ws.apply().ok("create on a");
    let on_a = vm_by_name(&ca, "db-01").unwrap();
    let disk = on_a.disks().next().unwrap().file_name.clone();

    // Known data at the start and in the middle of the disk.
    let mut data = vec![0u8; 3 << 20];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    let len = 1u64 << 30;
    let body = {
        let head = Bytes::from(data.clone());
        let mid_at = 512u64 << 20;
        let mut chunks: Vec<Result<Bytes, std::io::Error>> = vec![Ok(head.clone())];
        let gap = mid_at - head.len() as u64;
        chunks.push(Ok(Bytes::from(vec![0u8; gap as usize])));
        chunks.push(Ok(head.clone()));
        let rest = len - mid_at - head.len() as u64;
        chunks.push(Ok(Bytes::from(vec![0u8; rest as usize])));
        futures::stream::iter(chunks)
    };
    ca.run(ca.client.upload(&flat(&disk), body, len)).unwrap();

    // Running and no allow_power_cycle: refused at plan time.
    ws.write("main.tf", &cfg("b", false));
    let plan = ws.run(&["plan", "-no-color"]);
    assert_eq!(plan.code, 1);
    assert!(
        folded(&plan).contains("Move needs a power cycle"),
        "{}",
        folded(&plan)
    );

    ws.write("main.tf", &cfg("b", true));
    let plan = ws.run(&["plan", "-no-color"]).ok("plan move");
    assert!(
        plan.stdout.contains("will be updated in-place"),
        "{}",
        plan.stdout
    );
    ws.apply().ok("move to b");
    assert!(vm_by_name(&ca, "db-01").is_none(), "the original is gone");
    let on_b = vm_by_name(&cb, "db-01").expect("the VM on b");
    assert_eq!(on_b.power_state, "poweredOn");
    let moved = flat(&on_b.disks().next().unwrap().file_name);
    assert_eq!(
        read_all(&cb, &moved, data.len() as u64),
        data,
        "start of the disk"
    );
    let mid = cb.run(async {
        cb.client
            .download(
                &moved,
                Some((512u64 << 20)..((512u64 << 20) + data.len() as u64)),
            )
            .await
            .unwrap()
            .try_fold(Vec::new(), |mut acc, b| async move {
                acc.extend_from_slice(&b);
                Ok(acc)
            })
            .await
            .unwrap()
    });
    assert_eq!(mid, data, "middle of the disk");
    let show = ws.show_json();
    let state = resource_values(&show, "ceso_vm.db");
    assert_eq!(state["endpoint"], "b");
    assert_eq!(state["disk"][0]["label"], "data");
    let plan = ws.run(&["plan", "-detailed-exitcode", "-no-color"]);
    assert_eq!(plan.code, 0, "plan after the move: {}", plan.stdout);
    ws.run(&["destroy", "-auto-approve", "-no-color"])
        .ok("destroy");
    assert!(vm_by_name(&cb, "db-01").is_none());
}
