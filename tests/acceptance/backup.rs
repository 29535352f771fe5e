//! `ceso-backup` against the simulator, through the real binary: full and CBT-incremental hot
//! backups of a running VM whose disk holds known data, restores to new VMs and to a file
//! compared byte for byte, restores over a powered-off original (`--force`), a backup killed
//! mid-transfer and cleaned up by the next run once its VM lease lapsed (refused while it is
//! live), a corrupt chunk named by verify, prune + gc freeing exactly the unreferenced chunks,
//! the settings read from a config file, and the modes of every file a backup, a scheduled
//! run's audit log and a restore write.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use ceso::engine::backup::{BackupId, ChunkId, LocalBackend, Repository};
use ceso::vsphere::cbt::flat_extent_of;
use ceso::vsphere::datastore_file::DatastoreFile;
use ceso::vsphere::types::ManagedObjectReference;
use ceso::vsphere::vm::PowerOp;
use ceso::vsphere::Client;

use crate::harness::{SimClient, Vcsim};
use crate::require_acc;

pub(crate) const MIB: usize = 1 << 20;
const BLOCK: usize = 64 << 10;
/// The test repositories' chunk size: small, so an incremental's saving is visible.
const CHUNK: usize = MIB;

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ceso-backup")
}

/// `len` bytes from `seed`, with every other 4 MiB stretch zero (a half-used thin disk).
pub(crate) fn disk_image(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut data);
    for (i, stretch) in data.chunks_mut(4 * MIB).enumerate() {
        if i % 2 == 1 {
            stretch.fill(0);
        }
    }
    data
}

fn digest(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// The CLI pointed at `sim` and `repo`, with JSON output.
pub(crate) fn cli(sim: &Vcsim, repo: &Path) -> Command {
    let mut cmd = Command::new(binary());
    cmd.env("CESO_URL", &sim.url)
        .env("CESO_USER", "user")
        .env("CESO_PASSWORD", "pass")
        .env("CESO_ALLOW_UNVERIFIED_SSL", "true")
        .env("CESO_BACKUP_REPO", repo)
        .env_remove("CESO_BACKUP_PASSWORD")
        // No config file: not the default one of whoever runs the tests either.
        .env_remove("CESO_BACKUP_CONFIG")
        .env("XDG_CONFIG_HOME", "/nonexistent/ceso-acceptance")
        .stdin(Stdio::null());
    cmd
}

/// The CLI with no CESO_* variable at all and `config_home` as XDG_CONFIG_HOME.
fn bare_cli(config_home: &Path) -> Command {
    let mut cmd = Command::new(binary());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CESO_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("XDG_CONFIG_HOME", config_home).stdin(Stdio::null());
    cmd
}

/// The `error` line of a failed run: (exit code, message).
fn failure_of(cmd: Command, args: &[&str]) -> (i32, String) {
    let (code, lines, stderr) = run_json(cmd, args);
    assert_ne!(code, 0, "ceso-backup {args:?} succeeded: {lines:?}");
    let error = lines
        .iter()
        .find(|l| l["event"] == "error")
        .unwrap_or_else(|| panic!("no error line from {args:?}: {lines:?}\n{stderr}"));
    assert_eq!(error["exit_code"], code);
    (code, error["message"].as_str().unwrap().to_string())
}

/// Runs the CLI with `--json` and returns (exit code, the JSON lines).
pub(crate) fn run_json(mut cmd: Command, args: &[&str]) -> (i32, Vec<Value>, String) {
    let out: Output = cmd
        .arg("--json")
        .args(args)
        .output()
        .expect("run ceso-backup");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `result` line of a successful run.
pub(crate) fn result_of(cmd: Command, args: &[&str]) -> Value {
    let (code, lines, stderr) = run_json(cmd, args);
    assert_eq!(code, 0, "ceso-backup {args:?} failed: {lines:?}\n{stderr}");
    lines
        .into_iter()
        .find(|l| l["event"] == "result")
        .unwrap_or_else(|| panic!("no result line from {args:?}"))
}

pub(crate) use crate::cbt_vm::make_vm;

pub(crate) async fn upload(client: &Client, file: &DatastoreFile, data: &[u8]) {
    let pieces: Vec<std::io::Result<Bytes>> = data
        .chunks(MIB)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    client
        .upload(file, futures::stream::iter(pieces), data.len() as u64)
        .await
        .unwrap();
}

async fn download(client: &Client, file: &DatastoreFile) -> Vec<u8> {
    let stream = client.download(file, None).await.unwrap();
    let parts: Vec<Bytes> = stream.try_collect().await.unwrap();
    parts.concat()
}

/// Names of the VM's `ceso-backup-*` snapshots.
pub(crate) async fn backup_snapshots(client: &Client, vm: &ManagedObjectReference) -> Vec<String> {
    client
        .snapshot_tree(vm)
        .await
        .unwrap()
        .snapshots
        .into_iter()
        .map(|s| s.name)
        .filter(|n| n.starts_with("ceso-backup-"))
        .collect()
}

/// The flat extent of the first disk of the VM named `name`.
async fn flat_of(client: &Client, name: &str) -> DatastoreFile {
    let vm = client.find_by_name("VirtualMachine", name).await.unwrap();
    let info = client.vm_info(&vm).await.unwrap();
    let (_, dc) = client.datacenter_of(&vm).await.unwrap();
    let file = info.disks().next().unwrap().file_name.clone();
    flat_extent_of(&dc, &file).unwrap()
}

async fn open_repo(dir: &Path) -> Repository {
    Repository::open(Arc::new(LocalBackend::new(dir)), None)
        .await
        .unwrap()
}

async fn chunks_of(repo: &Repository, id: &str) -> HashSet<ChunkId> {
    let id: BackupId = id.parse().unwrap();
    repo.show(&id).await.unwrap().chunk_ids().collect()
}

fn chunk_files(dir: &Path) -> HashSet<String> {
    let mut out = HashSet::new();
    let Ok(prefixes) = std::fs::read_dir(dir.join("chunks")) else {
        return out;
    };
    for p in prefixes {
        for f in std::fs::read_dir(p.unwrap().path()).unwrap() {
            let name = f.unwrap().file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                out.insert(name);
            }
        }
    }
    out
}

pub(crate) fn init_repo(sim: &Vcsim, repo: &Path) {
    let r = result_of(cli(sim, repo), &["init", "--chunk-size", "1MiB"]);
    assert_eq!(r["chunk_size"], CHUNK as u64);
}

#[test]
fn backup_incremental_and_restore_bit_for_bit() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let sc = SimClient::connect(&sim);
    let client = sc.client.clone();
    let capacity = 24 * MIB;
    let (vm, flat) = sc.run(make_vm(&client, "db-1", capacity));
    let v1 = disk_image(capacity, 1);
    sc.run(upload(&client, &flat, &v1));
    assert_eq!(digest(&sc.run(download(&client, &flat))), digest(&v1));

    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init_repo(&sim, &repo);

    // Full backup while the VM runs: CBT's "*" says which areas are in use, so only the
    // non-zero half of the disk is read.
    let full = result_of(cli(&sim, &repo), &["backup", "--vm", "db-1"]);
    let disk = &full["disks"][0];
    assert_eq!(disk["mode"], "full", "{full}");
    assert_eq!(disk["reason"], "no-previous-backup");
    assert_eq!(disk["allocated_only"], true);
    let non_zero = v1
        .chunks(CHUNK)
        .filter(|c| c.iter().any(|b| *b != 0))
        .count();
    assert_eq!(disk["bytes_read"], (non_zero * CHUNK) as u64, "{full}");
    assert_eq!(full["consistency"], "crash-consistent");
    assert!(full["leftovers_removed"].as_array().unwrap().is_empty());
    assert!(
        sc.run(backup_snapshots(&client, &vm)).is_empty(),
        "snapshot removed"
    );
    let power = sc.run(client.vm_info(&vm)).unwrap().power_state;
    assert_eq!(power, "poweredOn", "the VM kept running");
    let b1 = full["backup"].as_str().unwrap().to_string();

    // Change three 64 KiB blocks in three different chunks (and one byte within a fourth
    // chunk back and forth: unchanged content is not a change).
    let mut v2 = v1.clone();
    for (i, offset) in [
        (0u8, 0usize),
        (1, 5 * MIB + BLOCK),
        (2, 17 * MIB + 3 * BLOCK),
    ] {
        v2[offset..offset + BLOCK].fill(0xA0 + i);
    }
    sc.run(upload(&client, &flat, &v2));

    let inc = result_of(cli(&sim, &repo), &["backup", "--vm", "db-1"]);
    let disk = &inc["disks"][0];
    assert_eq!(disk["mode"], "incremental", "{inc}");
    assert_eq!(disk["changed_bytes"], (3 * BLOCK) as u64, "{inc}");
    assert_eq!(disk["bytes_read"], (3 * CHUNK) as u64, "{inc}");
    assert_eq!(disk["bytes_reused"], (capacity - 3 * CHUNK) as u64);
    assert_eq!(inc["parent"], b1.as_str());
    assert!(
        inc["bytes_read"].as_u64().unwrap() < full["bytes_read"].as_u64().unwrap() / 3,
        "the incremental reads far less: {} vs {}",
        inc["bytes_read"],
        full["bytes_read"]
    );
    let b2 = inc["backup"].as_str().unwrap().to_string();

    // What the incremental read agrees with an independent QueryChangedDiskAreas since the
    // first backup's change id.
    let shown = result_of(cli(&sim, &repo), &["show", &b1]);
    let since = shown["disks"][0]["change_id"].as_str().unwrap().to_string();
    let areas = sc.run(async {
        let cancel = CancellationToken::new();
        let spec = ceso::vsphere::snapshot::NewSnapshot {
            name: "check",
            ..Default::default()
        };
        let snap = client
            .create_snapshot(&vm, &spec, None, &cancel)
            .await
            .unwrap();
        let info = client.vm_info(&vm).await.unwrap();
        let key = info.disks().next().unwrap().key;
        let areas = client
            .changed_disk_areas(&vm, Some(&snap), key, capacity as u64, &since)
            .await
            .unwrap();
        client.remove_snapshot(&snap, None, &cancel).await.unwrap();
        areas
    });
    let touched: Vec<u64> = areas.iter().map(|a| a.start / CHUNK as u64).collect();
    assert_eq!(touched, vec![0, 5, 17], "{areas:?}");
    assert_eq!(
        areas.iter().map(|a| a.length).sum::<u64>(),
        (3 * BLOCK) as u64
    );

    // Restore both to new VMs and to a file: bit for bit what was written.
    for (id, name, data) in [(&b1, "db-1-restored-1", &v1), (&b2, "db-1-restored-2", &v2)] {
        let r = result_of(cli(&sim, &repo), &["restore", id, "--to", name]);
        assert_eq!(r["name"], name);
        let restored = sc.run(async {
            let flat = flat_of(&client, name).await;
            download(&client, &flat).await
        });
        assert_eq!(restored.len(), capacity);
        assert_eq!(digest(&restored), digest(data), "restore of {id} to {name}");
        let info = sc.run(async {
            let vm = client.find_by_name("VirtualMachine", name).await.unwrap();
            client.vm_info(&vm).await.unwrap()
        });
        assert_eq!(
            (info.num_cpus, info.memory_mb),
            (2, 256),
            "saved config applied"
        );
        assert_eq!(info.guest_id, "otherGuest64");
    }
    let raw = dir.path().join("disk0.raw");
    let r = result_of(
        cli(&sim, &repo),
        &[
            "restore",
            &b2,
            "--disk",
            "0",
            "--to-file",
            raw.to_str().unwrap(),
        ],
    );
    assert_eq!(r["bytes"], capacity as u64);
    assert_eq!(digest(&std::fs::read(&raw).unwrap()), digest(&v2));

    let verify = result_of(cli(&sim, &repo), &["verify"]);
    assert_eq!(verify["ok"], true, "{verify}");
    let list = result_of(cli(&sim, &repo), &["list"]);
    assert_eq!(list["backups"].as_array().unwrap().len(), 2);

    // --full reads everything in use again and says so.
    let again = result_of(cli(&sim, &repo), &["backup", "--vm", "db-1", "--full"]);
    assert_eq!(again["disks"][0]["reason"], "requested");
    assert_eq!(again["bytes_written"], 0, "nothing new: deduplicated");
}

#[test]
fn a_killed_backup_is_cleaned_up_by_the_next_run() {
    require_acc!();
    let sim = Vcsim::start(&["-esx", "-delay", "20"]);
    let sc = SimClient::connect(&sim);
    let client = sc.client.clone();
    let capacity = 16 * MIB;
    let (vm, flat) = sc.run(make_vm(&client, "app-1", capacity));
    let data = disk_image(capacity, 7);
    sc.run(upload(&client, &flat, &data));
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init_repo(&sim, &repo);

    // Throttled to 1 MB/s, the 8 MiB in use take about 8 s: kill it once the snapshot exists.
    // Its VM lease lasts 4 s unless renewed.
    let mut child = cli(&sim, &repo)
        .args(["--json", "backup", "--vm", "app-1", "--max-rate", "1M"])
        .args(["--lease-ttl", "4s", "--clock-skew", "0s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let leftover = loop {
        let snaps = sc.run(backup_snapshots(&client, &vm));
        if let Some(s) = snaps.into_iter().next() {
            break s;
        }
        assert!(Instant::now() < deadline, "no backup snapshot appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended too soon"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(1500)); // mid-transfer
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        sc.run(backup_snapshots(&client, &vm)),
        vec![leftover.clone()]
    );
    let list = result_of(cli(&sim, &repo), &["list"]);
    assert!(
        list["backups"].as_array().unwrap().is_empty(),
        "nothing committed"
    );

    // While the dead run's VM lease is live, its snapshot is not a leftover: another backup
    // of the VM is refused (status 5) and the snapshot stays.
    let killed = Instant::now();
    let (code, message) = failure_of(cli(&sim, &repo), &["backup", "--vm", "app-1"]);
    assert_eq!(code, 5, "{message}");
    assert!(message.contains("another backup of app-1"), "{message}");
    assert_eq!(
        sc.run(backup_snapshots(&client, &vm)),
        vec![leftover.clone()]
    );
    // Once it lapses, the next backup (waiting for it) removes the snapshot and says so.
    let started = Instant::now();
    let r = result_of(
        cli(&sim, &repo),
        &[
            "backup",
            "--vm",
            "app-1",
            "--wait",
            "30s",
            "--clock-skew",
            "0s",
        ],
    );
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "waited for the dead run's lease"
    );
    assert_eq!(r["leftovers_removed"], serde_json::json!([leftover]));
    assert!(sc.run(backup_snapshots(&client, &vm)).is_empty());
    assert!(started.elapsed() < Duration::from_secs(30));
    let verify = result_of(cli(&sim, &repo), &["verify"]);
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(verify["report"]["backups"], 1);

    // The throttle holds: 8 MiB at 4 MB/s takes two seconds at least.
    let slow = result_of(
        cli(&sim, &repo),
        &["backup", "--vm", "app-1", "--full", "--max-rate", "4M"],
    );
    let read = slow["bytes_read"].as_f64().unwrap();
    assert!(read >= (8 * MIB) as f64, "{slow}");
    let floor = (read - CHUNK as f64) / 4e6;
    assert!(slow["seconds"].as_f64().unwrap() >= floor * 0.95, "{slow}");
}

#[test]
fn verify_names_a_corrupt_chunk_and_prune_gc_free_exactly_the_unreferenced() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let sc = SimClient::connect(&sim);
    let client = sc.client.clone();
    let capacity = 8 * MIB;
    let (_vm, flat) = sc.run(make_vm(&client, "web-1", capacity));
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    init_repo(&sim, &repo_dir);

    // Three backups, each after a change of one chunk.
    let mut data = disk_image(capacity, 3);
    let mut ids = Vec::new();
    for round in 0..3u8 {
        data[round as usize * CHUNK..round as usize * CHUNK + BLOCK].fill(0x11 + round);
        sc.run(upload(&client, &flat, &data));
        let r = result_of(cli(&sim, &repo_dir), &["backup", "--vm", "web-1"]);
        ids.push(r["backup"].as_str().unwrap().to_string());
    }
    let repo = sc.run(open_repo(&repo_dir));
    let sets: Vec<HashSet<ChunkId>> = ids.iter().map(|id| sc.run(chunks_of(&repo, id))).collect();

    // Corrupt a chunk only the first backup references: verify names it and that backup.
    let only_first = *sets[0]
        .iter()
        .find(|c| !sets[1].contains(c) && !sets[2].contains(c))
        .expect("the first backup has a chunk of its own");
    let path = repo_dir.join(only_first.object_key());
    let original = std::fs::read(&path).unwrap();
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(&path, &bad).unwrap();
    let (code, lines, _) = run_json(cli(&sim, &repo_dir), &["verify"]);
    assert_eq!(code, 3, "{lines:?}");
    let result = lines.iter().find(|l| l["event"] == "result").unwrap();
    let problems = result["report"]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{result}");
    assert_eq!(problems[0]["chunk"], only_first.to_string());
    assert_eq!(problems[0]["backups"], serde_json::json!([ids[0]]));
    assert_eq!(result["affected_backups"], serde_json::json!([ids[0]]));
    let error = lines.iter().find(|l| l["event"] == "error").unwrap();
    assert_eq!(error["exit_code"], 3);
    std::fs::write(&path, &original).unwrap();
    assert_eq!(result_of(cli(&sim, &repo_dir), &["verify"])["ok"], true);

    // Keep the newest; gc then deletes exactly the chunks only the others referenced.
    let pruned = result_of(cli(&sim, &repo_dir), &["prune", "--keep-last", "1"]);
    assert_eq!(pruned["removed"], 2, "{pruned}");
    let before = chunk_files(&repo_dir);
    let doomed: HashSet<String> = sets[0]
        .union(&sets[1])
        .filter(|c| !sets[2].contains(c))
        .map(ToString::to_string)
        .collect();
    assert!(!doomed.is_empty());
    let gc = result_of(cli(&sim, &repo_dir), &["gc", "--grace", "0s"]);
    assert_eq!(gc["chunks_deleted"], doomed.len() as u64, "{gc}");
    let after = chunk_files(&repo_dir);
    let kept: HashSet<String> = sets[2].iter().map(ToString::to_string).collect();
    assert_eq!(after, kept, "exactly the newest backup's chunks remain");
    assert_eq!(
        before.difference(&after).cloned().collect::<HashSet<_>>(),
        doomed
    );
    assert_eq!(result_of(cli(&sim, &repo_dir), &["verify"])["ok"], true);
}

/// The names of the VMs whose names start with `db-`.
async fn db_vm_names(client: &Client) -> Vec<String> {
    let mut names: Vec<String> = client
        .retrieve_all("VirtualMachine", &["name"])
        .await
        .unwrap()
        .iter()
        .filter_map(|o| o.text("name").map(str::to_string))
        .filter(|n| n.starts_with("db-"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_config_file_supplies_the_settings_and_flags_and_variables_override_it() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let sc = SimClient::connect(&sim);
    let client = sc.client.clone();
    let capacity = 8 * MIB;
    let (_vm, flat) = sc.run(make_vm(&client, "cfg-1", capacity));
    let data = disk_image(capacity, 11);
    sc.run(upload(&client, &flat, &data));

    // The default file, found through XDG_CONFIG_HOME; its repository is relative to it.
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("config");
    std::fs::create_dir_all(home.join("ceso")).unwrap();
    let path = home.join("ceso/backup.toml");
    let text = format!(
        "repo = \"repo\"\n\n[vsphere]\nurl = \"{}\"\nuser = \"user\"\npassword = \"pass\"\n\
         allow_unverified_ssl = true\napi_timeout = \"30s\"\n",
        sim.url
    );
    std::fs::write(&path, &text).unwrap();
    let set_mode = |p: &Path, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    set_mode(&path, 0o600);
    let file_repo = home.join("ceso/repo");

    let r = result_of(bare_cli(&home), &["init", "--chunk-size", "1MiB"]);
    assert_eq!(r["chunk_size"], CHUNK as u64);
    assert!(file_repo.is_dir(), "the repository is where the file says");
    let b = result_of(bare_cli(&home), &["backup", "--vm", "cfg-1"]);
    assert_eq!(b["vm"]["name"], "cfg-1", "{b}");
    let listed = |cmd: Command| -> usize {
        result_of(cmd, &["list"])["backups"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(listed(bare_cli(&home)), 1);

    // A flag beats the file: another repository.
    let flag_repo = dir.path().join("flag-repo");
    let flag_repo_s = flag_repo.to_str().unwrap();
    result_of(
        bare_cli(&home),
        &["--repo", flag_repo_s, "init", "--chunk-size", "1MiB"],
    );
    result_of(
        bare_cli(&home),
        &["backup", "--vm", "cfg-1", "--repo", flag_repo_s],
    );
    let mut with_repo_flag = bare_cli(&home);
    with_repo_flag.args(["--repo", flag_repo_s]);
    assert_eq!(listed(with_repo_flag), 1);
    assert_eq!(
        listed(bare_cli(&home)),
        1,
        "the file's repository is untouched"
    );
    // ... and so does a variable; the flag beats the variable.
    let mut env_repo = bare_cli(&home);
    env_repo.env("CESO_BACKUP_REPO", &flag_repo);
    result_of(env_repo, &["backup", "--vm", "cfg-1"]);
    let mut env_repo = bare_cli(&home);
    env_repo.env("CESO_BACKUP_REPO", &flag_repo);
    assert_eq!(listed(env_repo), 2);
    let mut both = bare_cli(&home);
    both.env("CESO_BACKUP_REPO", &flag_repo)
        .args(["--repo", file_repo.to_str().unwrap()]);
    assert_eq!(listed(both), 1);

    // vSphere settings too: a dead endpoint from a flag or a variable fails the login the
    // file's settings would have made.
    let dead = "http://127.0.0.1:1/sdk";
    let (code, message) = failure_of(bare_cli(&home), &["backup", "--vm", "cfg-1", "--url", dead]);
    assert_eq!(code, 1);
    assert!(message.contains("log in"), "{message}");
    let mut env_url = bare_cli(&home);
    env_url.env("CESO_URL", dead);
    let (code, message) = failure_of(env_url, &["backup", "--vm", "cfg-1"]);
    assert_eq!(code, 1, "{message}");

    // --config (or CESO_BACKUP_CONFIG) names another file instead of the default one.
    let other = dir.path().join("other.toml");
    std::fs::write(&other, format!("repo = \"{flag_repo_s}\"\n")).unwrap();
    let mut cmd = bare_cli(&home);
    cmd.args(["--config", other.to_str().unwrap()]);
    assert_eq!(listed(cmd), 2);
    let mut cmd = bare_cli(&home);
    cmd.env("CESO_BACKUP_CONFIG", &other);
    assert_eq!(listed(cmd), 2);

    // A password in a file others may read is refused, naming the file and the fix.
    set_mode(&path, 0o644);
    let (code, message) = failure_of(bare_cli(&home), &["list"]);
    assert_eq!(code, 2);
    let shown = path.display().to_string();
    assert!(message.contains(&format!("chmod 600 {shown}")), "{message}");
    assert!(!message.contains("pass\""), "{message}");
    set_mode(&path, 0o600);
    assert_eq!(listed(bare_cli(&home)), 1);

    // An unknown key is an error naming it and the file.
    std::fs::write(&path, format!("{text}retries = 3\n")).unwrap();
    let (code, message) = failure_of(bare_cli(&home), &["list"]);
    assert_eq!(code, 2);
    assert!(
        message.contains(&shown) && message.contains("`retries`"),
        "{message}"
    );
}

#[test]
fn restore_force_replaces_a_powered_off_vm_and_keeps_its_name() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let sc = SimClient::connect(&sim);
    let client = sc.client.clone();
    let capacity = 8 * MIB;
    let (original, flat) = sc.run(make_vm(&client, "db-9", capacity));
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init_repo(&sim, &repo);
    let mut backups = Vec::new();
    let images: Vec<Vec<u8>> = (21..23).map(|seed| disk_image(capacity, seed)).collect();
    for image in &images {
        sc.run(upload(&client, &flat, image));
        let r = result_of(cli(&sim, &repo), &["backup", "--vm", "db-9"]);
        backups.push(r["backup"].as_str().unwrap().to_string());
    }
    let current = disk_image(capacity, 29);
    sc.run(upload(&client, &flat, &current));
    let untouched = || {
        let vm = sc
            .run(client.find_by_name("VirtualMachine", "db-9"))
            .unwrap();
        assert_eq!(vm, original);
        assert_eq!(digest(&sc.run(download(&client, &flat))), digest(&current));
        assert_eq!(sc.run(db_vm_names(&client)), vec!["db-9".to_string()]);
    };

    // Refused without --force, and while the VM runs.
    let (code, message) = failure_of(cli(&sim, &repo), &["restore", &backups[0], "--to", "db-9"]);
    assert_eq!(code, 1);
    assert!(
        message.contains("already exists") && message.contains("--force"),
        "{message}"
    );
    untouched();
    let (code, message) = failure_of(
        cli(&sim, &repo),
        &["restore", &backups[0], "--to", "db-9", "--force"],
    );
    assert_eq!(code, 1);
    assert!(message.contains("power it off"), "{message}");
    untouched();

    // Powered off: replaced by the first backup, under the same name.
    let cancel = CancellationToken::new();
    sc.run(client.power_vm(&original, PowerOp::Off, None, &cancel))
        .unwrap();
    // A restore that fails leaves the original as it was.
    let (code, message) = failure_of(
        cli(&sim, &repo),
        &[
            "restore",
            &backups[0],
            "--to",
            "db-9",
            "--force",
            "--datastore",
            "no-such-datastore",
        ],
    );
    assert_eq!(code, 1);
    assert!(message.contains("no-such-datastore"), "{message}");
    untouched();
    // So does one that fails half-way, with the new VM created and its disk being written:
    // the half-restored VM goes, the original stays.
    let chunk = *sc
        .run(async { chunks_of(&open_repo(&repo).await, &backups[0]).await })
        .iter()
        .next()
        .unwrap();
    let chunk_path = repo.join(chunk.object_key());
    let good = std::fs::read(&chunk_path).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(&chunk_path, &bad).unwrap();
    let (code, message) = failure_of(
        cli(&sim, &repo),
        &["restore", &backups[0], "--to", "db-9", "--force"],
    );
    assert_eq!(code, 1, "{message}");
    assert!(message.contains(&chunk.to_string()), "{message}");
    untouched();
    std::fs::write(&chunk_path, &good).unwrap();
    let r = result_of(
        cli(&sim, &repo),
        &["restore", &backups[0], "--to", "db-9", "--force"],
    );
    assert_eq!(r["name"], "db-9", "{r}");
    assert_eq!(r["replaced"], original.value.as_str(), "{r}");
    let first = ManagedObjectReference::new("VirtualMachine", r["vm"].as_str().unwrap());
    assert_ne!(first, original);
    assert_eq!(
        sc.run(client.find_by_name("VirtualMachine", "db-9"))
            .unwrap(),
        first
    );
    let gone = sc.run(client.vm_info(&original)).unwrap_err();
    assert!(gone.is_not_found(), "the original is gone: {gone}");
    assert_eq!(sc.run(db_vm_names(&client)), vec!["db-9".to_string()]);
    let restored = sc.run(async { download(&client, &flat_of(&client, "db-9").await).await });
    assert_eq!(
        digest(&restored),
        digest(&images[0]),
        "the first backup's data"
    );
    let info = sc.run(client.vm_info(&first)).unwrap();
    assert_eq!(info.power_state, "poweredOff");
    assert_eq!((info.num_cpus, info.memory_mb), (2, 256));

    // Again over the replacement (whose files are under its temporary name), powered on.
    let r = result_of(
        cli(&sim, &repo),
        &[
            "restore",
            &backups[1],
            "--to",
            "db-9",
            "--force",
            "--power-on",
        ],
    );
    assert_eq!(r["replaced"], first.value.as_str(), "{r}");
    let second = ManagedObjectReference::new("VirtualMachine", r["vm"].as_str().unwrap());
    assert!(sc.run(client.vm_info(&first)).unwrap_err().is_not_found());
    assert_eq!(sc.run(db_vm_names(&client)), vec!["db-9".to_string()]);
    let restored = sc.run(async { download(&client, &flat_of(&client, "db-9").await).await });
    assert_eq!(
        digest(&restored),
        digest(&images[1]),
        "the second backup's data"
    );
    assert_eq!(
        sc.run(client.vm_info(&second)).unwrap().power_state,
        "poweredOn"
    );

    // --force with no VM of that name is a plain restore.
    let r = result_of(
        cli(&sim, &repo),
        &["restore", &backups[0], "--to", "db-10", "--force"],
    );
    assert_eq!(r["replaced"], Value::Null, "{r}");
    assert_eq!(
        sc.run(db_vm_names(&client)),
        vec!["db-10".to_string(), "db-9".to_string()]
    );
}

/// Every file and folder under `root` with its mode, folders last.
fn modes_under(root: &Path) -> Vec<(std::path::PathBuf, u32, bool)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let meta = std::fs::metadata(&dir).unwrap();
        out.push((dir.clone(), meta.permissions().mode() & 0o7777, true));
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                todo.push(entry.path());
            } else {
                out.push((entry.path(), meta.permissions().mode() & 0o7777, false));
            }
        }
    }
    out
}

/// The CLI run with umask 000, so only its own choice of modes protects what it writes.
fn cli_open_umask(sim: &Vcsim, repo: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = cli(sim, repo);
    // SAFETY: umask is async-signal-safe and touches only the child's own state.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    cmd
}

#[test]
fn every_file_a_backup_writes_is_private() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let sc = SimClient::connect(&sim);
    let client = sc.client.clone();
    let capacity = 8 * MIB;
    let (_vm, flat) = sc.run(make_vm(&client, "files-1", capacity));
    let data = disk_image(capacity, 11);
    sc.run(upload(&client, &flat, &data));
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let r = result_of(
        cli_open_umask(&sim, &repo),
        &["init", "--chunk-size", "1MiB"],
    );
    assert_eq!(r["chunk_size"], CHUNK as u64);

    // A backup by hand, and one by a scheduled job with its audit log, status and leases.
    let b = result_of(cli_open_umask(&sim, &repo), &["backup", "--vm", "files-1"]);
    let id = b["backup"].as_str().unwrap().to_string();
    let store = ceso::engine::schedule::JobStore::new(Arc::new(LocalBackend::new(repo.clone())));
    let spec = ceso::engine::schedule::JobSpec {
        name: "files".into(),
        schedule: "0 0 * * *".into(),
        vm_ids: vec!["files-1".into()],
        retention: ceso::engine::schedule::Retention {
            keep_last: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    sc.run(store.put_job(&spec)).unwrap();
    let audit = dir.path().join("audit.jsonl");
    let audit_arg = audit.to_str().unwrap();
    let run = result_of(
        cli_open_umask(&sim, &repo),
        &["run", "files", "--audit-log", audit_arg],
    );
    assert_eq!(run["last_run"]["status"], "succeeded", "{run}");
    let image = dir.path().join("disk0.img");
    result_of(
        cli_open_umask(&sim, &repo),
        &[
            "restore",
            &id,
            "--disk",
            "0",
            "--to-file",
            image.to_str().unwrap(),
        ],
    );
    assert_eq!(digest(&std::fs::read(&image).unwrap()), digest(&data));

    let written = modes_under(&repo);
    for kind in [
        "config",
        "chunks/",
        "manifests/",
        "jobs/",
        "job-status/",
        "job-leases/",
    ] {
        assert!(
            written
                .iter()
                .any(|(p, _, d)| !d && p.strip_prefix(&repo).unwrap().starts_with(kind)),
            "no {kind} file written: {written:?}"
        );
    }
    for (path, mode, is_dir) in &written {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} is {mode:04o}", path.display());
    }
    for file in [&audit, &image] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{} is {mode:04o}", file.display());
    }
}
