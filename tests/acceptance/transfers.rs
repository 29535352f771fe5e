//! Real-sized disks: byte transfers that outlive `api_timeout` (a restore, a cold move between
//! standalone hosts, an OVA deploy and an ESXi clone of a 4 GiB disk, with `api_timeout = 5s`
//! and the simulator's bandwidth throttled so each transfer takes longer than 20 s), checked
//! byte for byte against the simulator's own files; and transfers the server stops feeding
//! half-way, which fail within `api_timeout` + 5 s and leave nothing behind.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::backup::{cli, init_repo, result_of, run_json};
use crate::cbt_vm::make_vm;
use crate::disks::{datastore_dir, digest_file, first_disk_flat, regions, write_regions, GIB, MIB};
use crate::harness::{folded, SimClient, Vcsim, Workspace};
use crate::require_acc;

/// The disks these tests move.
const DISK: u64 = 4 * GIB;
/// The API timeout every transfer here outlives.
const API_TIMEOUT: &str = "5s";
const API_TIMEOUT_S: u64 = 5;

const HEAD: &str =
    "terraform {\n  required_providers {\n    ceso = { source = \"choiceomg/ceso\" }\n  }\n}\n";

fn vm_named(c: &SimClient, name: &str) -> Option<ceso::vsphere::vm::VmInfo> {
    let all = c
        .run(c.client.retrieve_all("VirtualMachine", &["name"]))
        .unwrap();
    let vm = all.iter().find(|o| o.text("name") == Some(name))?;
    Some(c.run(c.client.vm_info(&vm.obj)).unwrap())
}

/// A running VM named `name` with a 4 GiB disk holding the usual known regions (written
/// straight into the simulator's sparse file); returns the local path of its flat extent.
fn vm_with_data(c: &SimClient, name: &str) -> std::path::PathBuf {
    let (_, flat) = c.run(make_vm(&c.client, name, DISK as usize));
    let local = datastore_dir(c, &flat.datastore).join(&flat.path);
    write_regions(&local, DISK, &regions(DISK));
    local
}

/// Entries of the simulator's datastore directory whose names contain `needle`.
fn files_named(c: &SimClient, needle: &str) -> Vec<String> {
    let dir = datastore_dir(c, "LocalDS_0");
    let mut out = Vec::new();
    for e in walk(&dir) {
        if e.contains(needle) {
            out.push(e);
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.display().to_string());
            if p.is_dir() {
                out.extend(walk(&p));
            }
        }
    }
    out
}

#[test]
fn restore_of_a_4_gib_disk_outlives_the_api_timeout() {
    require_acc!();
    // 150 MB/s per transfer: one 4 GiB upload takes ~29 s.
    let sim = Vcsim::start(&["-esx", "-gpu-hosts", "0", "-datastore-mbps", "150"]);
    let c = SimClient::connect(&sim);
    let original = vm_with_data(&c, "big-1");
    let want = digest_file(&original);
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init_repo(&sim, &repo);
    let backup = result_of(cli(&sim, &repo), &["backup", "--vm", "big-1"]);
    let id = backup["backup"].as_str().unwrap().to_string();

    let mut restore = cli(&sim, &repo);
    restore.env("CESO_API_TIMEOUT", API_TIMEOUT);
    let started = Instant::now();
    let (code, lines, stderr) = run_json(restore, &["restore", &id, "--to", "big-1-restored"]);
    let took = started.elapsed();
    assert_eq!(code, 0, "restore failed: {lines:?}\n{stderr}");
    assert!(
        took > Duration::from_secs(4 * API_TIMEOUT_S),
        "the restore took {took:?}: too short to prove it outlives the {API_TIMEOUT} API timeout"
    );
    let progress = lines.iter().filter(|l| l["event"] == "progress").count();
    assert!(
        progress > 10,
        "JSON progress events while it ran: {progress}"
    );
    let restored = vm_named(&c, "big-1-restored").expect("the restored VM");
    let flat = first_disk_flat(&c, &restored);
    assert_eq!(digest_file(&flat), want, "the restored disk, byte for byte");
    eprintln!("restore of a 4 GiB disk at 150 MB/s: {took:?} with api_timeout {API_TIMEOUT}");
}

#[test]
fn a_stalled_restore_fails_within_the_api_timeout_and_leaves_nothing() {
    require_acc!();
    let source = Vcsim::start(&["-esx", "-gpu-hosts", "0"]);
    let c = SimClient::connect(&source);
    vm_with_data(&c, "big-2");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init_repo(&source, &repo);
    let backup = result_of(cli(&source, &repo), &["backup", "--vm", "big-2"]);
    let id = backup["backup"].as_str().unwrap().to_string();

    // Restored onto a host whose datastore stops reading a disk after 64 MiB.
    let target = Vcsim::start(&[
        "-esx",
        "-gpu-hosts",
        "0",
        "-fault-stall-transfer-after",
        &(64 * MIB).to_string(),
        "-fault-stall-paths",
        "-flat\\.vmdk",
    ]);
    let t = SimClient::connect(&target);
    let mut restore = cli(&target, &repo);
    restore.env("CESO_API_TIMEOUT", API_TIMEOUT);
    let started = Instant::now();
    let (code, lines, _) = run_json(restore, &["restore", &id, "--to", "stalled-1"]);
    let took = started.elapsed();
    assert_ne!(code, 0, "the restore cannot succeed: {lines:?}");
    let error = lines
        .iter()
        .find(|l| l["event"] == "error")
        .expect("an error line");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("stalled at byte") && message.contains("-flat.vmdk"),
        "the error names the file and the byte offset: {message}"
    );
    assert!(message.contains("127.0.0.1:"), "and the host: {message}");
    assert!(
        took < Duration::from_secs(API_TIMEOUT_S + 5 + 5),
        "failed after {took:?}: more than api_timeout + 5 s (plus the VM's creation)"
    );
    assert!(vm_named(&t, "stalled-1").is_none(), "no half-restored VM");
    assert!(
        files_named(&t, "stalled-1").is_empty(),
        "no files left: {:?}",
        files_named(&t, "stalled-1")
    );
    assert!(target.counts()["injected"]["stall"].as_u64().unwrap_or(0) > 0);
}

/// The provider configuration of two standalone endpoints `a` and `b`.
fn two_endpoints(a: &Vcsim, b: &Vcsim) -> String {
    format!(
        "provider \"ceso\" {{\n  user = \"u\"\n  password = \"p\"\n  api_timeout = \"{API_TIMEOUT}\"\n  endpoint {{\n    name = \"a\"\n    url = \"{}\"\n  }}\n  endpoint {{\n    name = \"b\"\n    url = \"{}\"\n  }}\n}}\n",
        a.url, b.url
    )
}

fn mover(provider: &str, endpoint: &str) -> String {
    format!("{HEAD}{provider}resource \"ceso_vm\" \"db\" {{\n  name = \"db-01\"\n  endpoint = \"{endpoint}\"\n  memory_mb = 512\n  allow_power_cycle = true\n  disk {{\n    label = \"data\"\n    size_gb = 4\n  }}\n}}\n")
}

#[test]
fn cold_move_of_a_4_gib_disk_outlives_the_api_timeout() {
    require_acc!();
    let a = Vcsim::start(&["-esx", "-gpu-hosts", "0", "-datastore-mbps", "150"]);
    let b = Vcsim::start(&["-esx", "-gpu-hosts", "0", "-datastore-mbps", "150"]);
    let (ca, cb) = (SimClient::connect(&a), SimClient::connect(&b));
    let provider = two_endpoints(&a, &b);
    // TF_LOG=INFO shows the provider's progress lines.
    let ws = Workspace::empty().env("TF_LOG", "INFO");
    ws.write("main.tf", &mover(&provider, "a"));
    ws.init();
    ws.apply().ok("create on a");
    let on_a = vm_named(&ca, "db-01").unwrap();
    let flat_a = first_disk_flat(&ca, &on_a);
    write_regions(&flat_a, DISK, &regions(DISK));
    let want = digest_file(&flat_a);

    ws.write("main.tf", &mover(&provider, "b"));
    let started = Instant::now();
    let moved = ws.apply().ok("move to b");
    let took = started.elapsed();
    assert!(
        moved.stderr.contains("moving disk") && moved.stderr.contains("bytes ("),
        "progress at INFO while the disk moved"
    );
    assert!(
        took > Duration::from_secs(4 * API_TIMEOUT_S),
        "the move took {took:?}: too short to prove it outlives the API timeout"
    );
    assert!(vm_named(&ca, "db-01").is_none(), "the original is gone");
    let on_b = vm_named(&cb, "db-01").expect("the VM on b");
    let flat_b = first_disk_flat(&cb, &on_b);
    assert_eq!(digest_file(&flat_b), want, "the moved disk, byte for byte");
    eprintln!("cold move of a 4 GiB disk at 150 MB/s: {took:?} with api_timeout {API_TIMEOUT}");
}

#[test]
fn a_stalled_cold_move_keeps_the_original_and_leaves_nothing_on_the_target() {
    require_acc!();
    let a = Vcsim::start(&["-esx", "-gpu-hosts", "0"]);
    let b = Vcsim::start(&[
        "-esx",
        "-gpu-hosts",
        "0",
        "-fault-stall-transfer-after",
        &(64 * MIB).to_string(),
        "-fault-stall-paths",
        "-flat\\.vmdk",
    ]);
    let (ca, cb) = (SimClient::connect(&a), SimClient::connect(&b));
    let provider = two_endpoints(&a, &b);
    let ws = Workspace::empty();
    ws.write("main.tf", &mover(&provider, "a"));
    ws.init();
    ws.apply().ok("create on a");
    let on_a = vm_named(&ca, "db-01").unwrap();
    let flat_a = first_disk_flat(&ca, &on_a);
    write_regions(&flat_a, DISK, &regions(DISK));
    let want = digest_file(&flat_a);

    ws.write("main.tf", &mover(&provider, "b"));
    let started = Instant::now();
    let out = ws.apply();
    let took = started.elapsed();
    assert_ne!(out.code, 0, "the move cannot succeed");
    let text = folded(&out);
    assert!(text.contains("stalled at byte"), "{text}");
    assert!(
        took < Duration::from_secs(API_TIMEOUT_S + 5 + 10),
        "failed after {took:?}"
    );
    let still = vm_named(&ca, "db-01").expect("the original stays");
    assert_eq!(still.power_state, "poweredOn", "powered on again");
    assert_eq!(digest_file(&flat_a), want, "its disk untouched");
    assert!(vm_named(&cb, "db-01").is_none(), "no VM on b");
    assert!(
        files_named(&cb, "db-01")
            .iter()
            .all(|f| !f.ends_with(".vmdk")),
        "no disk copies left on b: {:?}",
        files_named(&cb, "db-01")
    );
    let plan = ws.run(&["plan", "-no-color"]);
    assert!(
        plan.stdout.contains("will be updated in-place"),
        "the state still tracks the original on a: {}",
        plan.stdout
    );
}

#[test]
fn ova_deploy_of_a_4_gib_disk_outlives_the_api_timeout_and_keeps_its_lease() {
    require_acc!();
    let pkg = tempfile::tempdir().unwrap();
    let (_, ova, raw) = crate::disks::ovf_package(pkg.path(), 4);
    let want = digest_file(&raw);
    let stream = crate::disks::file_len(&pkg.path().join("disk1.vmdk"));
    // The stream carries the 28 MiB of data: at 1 MB/s it takes ~29 s. The lease would time
    // out after 25 s of silence, so progress reports must keep it.
    let sim = Vcsim::start(&[
        "-esx",
        "-gpu-hosts",
        "0",
        "-datastore-mbps",
        "1",
        "-nfc-lease-timeout",
        "25s",
    ]);
    let c = SimClient::connect(&sim);
    let cfg = format!(
        "{HEAD}provider \"ceso\" {{\n  api_timeout = \"{API_TIMEOUT}\"\n}}\nresource \"ceso_vm\" \"ova\" {{\n  name = \"ova-01\"\n  memory_mb = 512\n  ovf {{\n    source = \"{}\"\n  }}\n}}\n",
        ova.display()
    );
    let ws = Workspace::empty().against(&sim).env("TF_LOG", "INFO");
    ws.write("main.tf", &cfg);
    ws.init();
    let started = Instant::now();
    let deployed = ws.apply().ok("deploy");
    let took = started.elapsed();
    assert!(
        deployed.stderr.contains("deploying OVF:"),
        "progress at INFO while the disk uploaded"
    );
    assert!(
        took > Duration::from_secs(4 * API_TIMEOUT_S),
        "the deploy took {took:?} for {stream} bytes: too short to prove it outlives the API timeout"
    );
    let vm = vm_named(&c, "ova-01").expect("deployed");
    let flat = first_disk_flat(&c, &vm);
    assert_eq!(digest_file(&flat), want, "the VM's disk, byte for byte");
    let nfc = &sim.counts()["nfc"];
    assert!(
        nfc["progress_calls"].as_u64().unwrap_or(0) >= 2,
        "HttpNfcLeaseProgress at least every 30 s: {nfc}"
    );
    assert_eq!(nfc["leases_completed"], 1, "{nfc}");
    eprintln!("OVA deploy of a 4 GiB disk ({stream} bytes streamOptimized) at 1 MB/s: {took:?}");
}

#[test]
fn a_stalled_ova_deploy_aborts_its_lease_and_leaves_no_vm() {
    require_acc!();
    let pkg = tempfile::tempdir().unwrap();
    let (_, ova, _) = crate::disks::ovf_package(pkg.path(), 4);
    let sim = Vcsim::start(&[
        "-esx",
        "-gpu-hosts",
        "0",
        "-fault-stall-transfer-after",
        &MIB.to_string(),
        "-fault-stall-paths",
        "^/nfc/",
    ]);
    let c = SimClient::connect(&sim);
    let cfg = format!(
        "{HEAD}provider \"ceso\" {{\n  api_timeout = \"{API_TIMEOUT}\"\n}}\nresource \"ceso_vm\" \"ova\" {{\n  name = \"ova-02\"\n  memory_mb = 512\n  ovf {{\n    source = \"{}\"\n  }}\n}}\n",
        ova.display()
    );
    let ws = Workspace::empty().against(&sim);
    ws.write("main.tf", &cfg);
    ws.init();
    let started = Instant::now();
    let out = ws.apply();
    let took = started.elapsed();
    assert_ne!(out.code, 0);
    assert!(folded(&out).contains("stalled at byte"), "{}", folded(&out));
    assert!(
        took < Duration::from_secs(API_TIMEOUT_S + 5 + 10),
        "failed after {took:?}"
    );
    assert!(vm_named(&c, "ova-02").is_none(), "no half-imported VM");
    let nfc = &sim.counts()["nfc"];
    assert_eq!(nfc["leases_aborted"], 1, "the lease was aborted: {nfc}");
    let show = ws.run(&["show", "-json", "-no-color"]).ok("show");
    assert!(
        !show.stdout.contains("\"ceso_vm\""),
        "nothing in state: {}",
        show.stdout
    );
}

#[test]
fn esxi_clone_of_a_4_gib_disk_outlives_the_api_timeout() {
    require_acc!();
    // The copy runs as a task on the host, as on vSphere: the call returns at once and the
    // task takes as long as the copy does.
    let sim = Vcsim::start(&[
        "-esx",
        "-gpu-hosts",
        "0",
        "-slow-task",
        "CopyVirtualDisk_Task=100",
    ]);
    let c = SimClient::connect(&sim);
    let source = vm_with_data(&c, "tpl-1");
    let want = digest_file(&source);
    let cfg = format!(
        "{HEAD}provider \"ceso\" {{\n  api_timeout = \"{API_TIMEOUT}\"\n}}\nresource \"ceso_vm\" \"copy\" {{\n  name = \"copy-01\"\n  power_state = \"off\"\n  clone {{\n    template = \"tpl-1\"\n  }}\n}}\n"
    );
    let ws = Workspace::empty().against(&sim);
    ws.write("main.tf", &cfg);
    ws.init();
    ws.apply().ok("clone");
    let copy = vm_named(&c, "copy-01").expect("the clone");
    let flat = first_disk_flat(&c, &copy);
    assert_eq!(digest_file(&flat), want, "the clone's disk, byte for byte");
}
