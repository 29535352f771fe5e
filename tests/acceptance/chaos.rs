//! Backups under faults: three `ceso-backup serve` daemons share one repository and back up six
//! VMs with jobs due every 2 s (two jobs overlapping on VMs, one selecting by name pattern, one
//! quiesce-mode job on a VM without VMware Tools) while a random daemon is killed with SIGKILL
//! about every 10 s and restarted, and the repository is made unwritable for 5 s (`chattr -R
//! +i`, which binds root too). Afterwards, from the simulator and the repository: no snapshot
//! is left after one more clean run, no run of a job overlaps another in the audit logs, no
//! partial backup is listed, `verify` is clean, sampled backups restore bit for bit, each
//! job's retention holds and no job pruned another's backups (nor the one made by hand).
//!
//! `CESO_CHAOS_SECONDS` sets how long the faults go on (60 s in `make test`, longer with
//! `make chaos`); `CESO_CHAOS_SEED` replays a run's random choices. The figures are printed
//! whether the test passes or not.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use ceso::engine::backup::LocalBackend;
use ceso::engine::schedule::{JobSpec, JobStore, Mode, Retention};

use crate::backup::{
    backup_snapshots, cli, disk_image, init_repo, make_vm, result_of, run_json, upload, MIB,
};
use crate::harness::{SimClient, Vcsim};
use crate::require_acc;

const VMS: usize = 6;
const DISK: usize = 4 * MIB;
const DAEMONS: usize = 3;
const LEASE_TTL: &str = "8s";
const CLOCK_SKEW: &str = "1s";

/// A job of the test: name, VMs (by name), how it selects them, keep_last, mode.
struct Job {
    name: &'static str,
    vms: &'static [usize],
    by_pattern: Option<&'static str>,
    keep_last: u32,
    quiesce: bool,
}

const JOBS: &[Job] = &[
    Job {
        name: "pair-a",
        vms: &[1, 2],
        by_pattern: None,
        keep_last: 3,
        quiesce: false,
    },
    Job {
        name: "pair-b",
        vms: &[3, 4],
        by_pattern: None,
        keep_last: 2,
        quiesce: false,
    },
    Job {
        name: "by-name",
        vms: &[5, 6],
        by_pattern: Some("^chaos-[56]$"),
        keep_last: 2,
        quiesce: false,
    },
    // Shares chaos-1 with pair-a and chaos-4 with pair-b: VM leases across jobs, and
    // retention that must leave the other job's backups of the same VMs alone.
    Job {
        name: "cross",
        vms: &[1, 4],
        by_pattern: None,
        keep_last: 1,
        quiesce: false,
    },
    // chaos-5 runs no VMware Tools: every run must fail, never fall back.
    Job {
        name: "quiesced",
        vms: &[5],
        by_pattern: None,
        keep_last: 2,
        quiesce: true,
    },
];

fn vm_name(i: usize) -> String {
    format!("chaos-{i}")
}

/// A small deterministic generator (xorshift64*), so a run's choices can be replayed.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Makes the repository writable again when dropped (also when the test fails).
struct Writable<'a>(&'a Path);

impl Writable<'_> {
    fn set_immutable(&self, on: bool) {
        let status = Command::new("chattr")
            .arg("-R")
            .arg(if on { "+i" } else { "-i" })
            .arg(self.0)
            .status()
            .expect("run chattr");
        assert!(status.success(), "chattr failed: {status:?}");
    }
}

impl Drop for Writable<'_> {
    fn drop(&mut self) {
        let _ = Command::new("chattr")
            .args(["-R", "-i"])
            .arg(self.0)
            .status();
    }
}

/// One of the three daemon slots: its audit log and log survive its restarts.
struct Slot {
    index: usize,
    child: Option<Child>,
    node: String,
    incarnation: u32,
    audit: PathBuf,
    log: PathBuf,
}

impl Slot {
    fn start(&mut self, sim: &Vcsim, repo: &Path) {
        self.incarnation += 1;
        self.node = format!("d{}.{}", self.index, self.incarnation);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = cli(sim, repo);
        let child = cmd
            .env("CESO_LOG", "info")
            .args(["serve", "--node", &self.node, "--poll", "500ms"])
            .args(["--lease-ttl", LEASE_TTL, "--clock-skew", CLOCK_SKEW])
            .args(["--gc-schedule", "*/20 * * * * *", "--gc-grace", "30s"])
            .arg("--audit-log")
            .arg(&self.audit)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ceso-backup serve");
        self.child = Some(child);
    }

    /// Whether its daemon has a run in progress (its audit log shows a start not finished).
    fn mid_run(&self) -> bool {
        let all = records(&[&self.audit]);
        let mine = |action: &str| {
            all.iter()
                .filter(|r| r["action"] == action && r["actor"] == self.node.as_str())
                .count()
        };
        mine("run.start") > mine("run.finish")
    }

    fn kill(&mut self) -> DateTime<Utc> {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        Utc::now()
    }

    /// SIGTERM, then waits (a daemon aborts its runs cleanly and exits 0).
    fn stop(&mut self) -> Result<(), String> {
        let mut child = self.child.take().unwrap();
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("{} exited with {status:?} on SIGTERM", self.node))
                };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!("{} did not stop within 90 s of SIGTERM", self.node));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn records(paths: &[&Path]) -> Vec<Value> {
    paths
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn time_of(r: &Value) -> DateTime<Utc> {
    r["time"].as_str().unwrap().parse().unwrap()
}

/// One run of a job as the audit logs tell it: (start, end, actor), the end being its
/// `run.finish`, or the moment its daemon was killed.
type Run = (DateTime<Utc>, DateTime<Utc>, String);

fn runs_of(
    all: &[Value],
    job: &str,
    killed: &BTreeMap<String, DateTime<Utc>>,
) -> Result<Vec<Run>, String> {
    let mut out = Vec::new();
    for start in all
        .iter()
        .filter(|r| r["action"] == "run.start" && r["job"] == job)
    {
        let actor = start["actor"].as_str().unwrap();
        let t0 = time_of(start);
        let finish = all
            .iter()
            .filter(|r| r["action"] == "run.finish" && r["job"] == job && r["actor"] == actor)
            .map(time_of)
            .filter(|t| *t >= t0)
            .min();
        let end = match (finish, killed.get(actor)) {
            (Some(f), _) => f,
            (None, Some(k)) => *k,
            (None, None) => return Err(format!("a run of {job} by {actor} never finished")),
        };
        out.push((t0, end, actor.to_string()));
    }
    out.sort();
    Ok(out)
}

fn digest(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn chaos_three_daemons_six_vms_kills_and_an_unwritable_repository() {
    require_acc!();
    let seconds: u64 = std::env::var("CESO_CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("CESO_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Utc::now().timestamp_nanos_opt().unwrap_or(1) as u64 | 1);
    let mut dice = Dice(seed);
    let began = Instant::now();

    // Each vSphere call takes 10 ms more, so a run lasts long enough to be cut by a kill.
    let sim = Vcsim::start(&["-esx", "-delay", "10"]);
    let sc = SimClient::connect(&sim);
    let client = sc.client.clone();
    let mut vms = BTreeMap::new();
    for i in 1..=VMS {
        let (vm, flat) = sc.run(make_vm(&client, &vm_name(i), DISK));
        let data = disk_image(DISK, 100 + i as u64);
        sc.run(upload(&client, &flat, &data));
        vms.insert(vm_name(i), (vm, digest(&data)));
    }
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    init_repo(&sim, &repo);
    // A backup made by hand: no job's retention may remove it.
    let manual = result_of(cli(&sim, &repo), &["backup", "--vm", "chaos-2"]);
    let manual_id = manual["backup"].as_str().unwrap().to_string();

    let store = JobStore::new(Arc::new(LocalBackend::new(repo.clone())));
    for job in JOBS {
        let spec = JobSpec {
            name: job.name.into(),
            schedule: "*/2 * * * * *".into(),
            timezone: "UTC".into(),
            vm_ids: match job.by_pattern {
                Some(_) => Vec::new(),
                None => job.vms.iter().map(|i| vm_name(*i)).collect(),
            },
            vm_name_regex: job.by_pattern.map(str::to_string),
            mode: if job.quiesce {
                Mode::Quiesce
            } else {
                Mode::Snapshot
            },
            retention: Retention {
                keep_last: job.keep_last,
                ..Default::default()
            },
            max_parallel: 2,
            enabled: true,
            updated_at: Some(Utc::now()),
            updated_by: "chaos".into(),
            ..Default::default()
        };
        sc.run(store.put_job(&spec)).unwrap();
    }

    // The faults.
    let writable = Writable(&repo);
    let mut slots: Vec<Slot> = (0..DAEMONS)
        .map(|index| Slot {
            index,
            child: None,
            node: String::new(),
            incarnation: 0,
            audit: work.path().join(format!("audit-{index}.jsonl")),
            log: work.path().join(format!("log-{index}.txt")),
        })
        .collect();
    for s in &mut slots {
        s.start(&sim, &repo);
    }
    let chaos_began = Instant::now();
    let end = chaos_began + Duration::from_secs(seconds);
    let mut killed: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut next_kill = chaos_began + Duration::from_millis(8_000 + dice.below(4_000));
    let mut next_window = chaos_began + Duration::from_secs(seconds.min(60) / 2);
    let mut windows = 0u32;
    let mut window_end: Option<Instant> = None;
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_kill {
            // A random daemon, one in the middle of a run if any is: a kill between runs
            // leaves nothing to clean up.
            let busy: Vec<usize> = (0..DAEMONS).filter(|i| slots[*i].mid_run()).collect();
            let pick = if busy.is_empty() {
                dice.below(DAEMONS as u64) as usize
            } else {
                busy[dice.below(busy.len() as u64) as usize]
            };
            let slot = &mut slots[pick];
            let node = slot.node.clone();
            killed.insert(node, slot.kill());
            slot.start(&sim, &repo);
            next_kill = now + Duration::from_millis(8_000 + dice.below(4_000));
        }
        if window_end.is_none() && now >= next_window {
            writable.set_immutable(true);
            windows += 1;
            window_end = Some(now + Duration::from_secs(5));
            next_window = now + Duration::from_secs(120);
        }
        if window_end.is_some_and(|t| now >= t) {
            writable.set_immutable(false);
            window_end = None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if window_end.is_some() {
        writable.set_immutable(false);
    }

    let mut failures: Vec<String> = Vec::new();
    for s in &mut slots {
        if let Err(e) = s.stop() {
            failures.push(format!("{e}\n{}", tail(&s.log, 30)));
        }
    }
    let chaos_seconds = chaos_began.elapsed().as_secs();

    // One more clean run of each job, once the killed daemons' leases have lapsed.
    std::thread::sleep(Duration::from_secs(10));
    let final_audit = work.path().join("audit-final.jsonl");
    let final_arg = final_audit.to_str().unwrap();
    for job in JOBS {
        let args = [
            "run",
            job.name,
            "--lease-ttl",
            LEASE_TTL,
            "--clock-skew",
            CLOCK_SKEW,
            "--audit-log",
            final_arg,
        ];
        let (code, lines, stderr) = run_json(cli(&sim, &repo), &args);
        let ok = code == 0;
        if ok == job.quiesce {
            failures.push(format!(
                "the clean run of {} exited {code}: {lines:?}\n{stderr}",
                job.name
            ));
        }
    }

    let mut audit_paths: Vec<&Path> = slots.iter().map(|s| s.audit.as_path()).collect();
    audit_paths.push(&final_audit);
    let all = records(&audit_paths);
    let mut held = Vec::new();

    // 1. No snapshot left.
    let mut left = Vec::new();
    for (name, (vm, _)) in &vms {
        let snaps = sc.run(backup_snapshots(&client, vm));
        if !snaps.is_empty() {
            left.push(format!("{name}: {snaps:?}"));
        }
    }
    if left.is_empty() {
        held.push("no snapshot left");
    } else {
        failures.push(format!("snapshots left after the clean run: {left:?}"));
    }

    // 2. No run of a job overlaps another.
    let mut runs = 0usize;
    let mut overlaps = Vec::new();
    for job in JOBS {
        match runs_of(&all, job.name, &killed) {
            Ok(list) => {
                runs += list.len();
                for pair in list.windows(2) {
                    if pair[1].0 < pair[0].1 {
                        overlaps.push(format!("{}: {:?} and {:?}", job.name, pair[0], pair[1]));
                    }
                }
            }
            Err(e) => overlaps.push(e),
        }
    }
    if overlaps.is_empty() {
        held.push("no overlapping runs");
    } else {
        failures.push(format!("overlapping runs: {overlaps:#?}"));
    }

    // 3. No partial backup listed: every backup is whole, of a known job (or the manual one),
    //    and no quiesce-mode backup fell back to crash-consistent.
    let list = result_of(cli(&sim, &repo), &["list"]);
    let backups = list["backups"].as_array().unwrap().clone();
    let mut partial = Vec::new();
    for b in &backups {
        let job = b["job"].as_str();
        let disks = b["disks"].as_array().unwrap();
        let whole = disks.len() == 1 && disks[0]["capacity"] == DISK as u64;
        let known = match job {
            None => b["id"] == manual_id.as_str(),
            Some(j) => JOBS.iter().any(|x| x.name == j && !x.quiesce),
        };
        let consistency = b["consistency"].as_str().unwrap_or_default();
        if !whole || !known || consistency.is_empty() {
            partial.push(b.clone());
        }
    }
    if partial.is_empty() {
        held.push("no partial backup");
    } else {
        failures.push(format!(
            "partial or unexpected backups listed: {partial:#?}"
        ));
    }

    // 4. verify is clean.
    let verify = result_of(cli(&sim, &repo), &["verify"]);
    if verify["ok"] == true && verify["report"]["problems"] == serde_json::json!([]) {
        held.push("verify clean");
    } else {
        failures.push(format!("verify: {verify}"));
    }

    // 5. A sample restores bit for bit.
    let mut restored = 0;
    let mut sample: Vec<&Value> = backups.iter().collect();
    while sample.len() > 4 {
        sample.remove(dice.below(sample.len() as u64) as usize);
    }
    for b in sample {
        let id = b["id"].as_str().unwrap();
        let vm = b["vm"]["name"].as_str().unwrap();
        let file = work.path().join(format!("{id}.img"));
        let args = [
            "restore",
            id,
            "--disk",
            "0",
            "--to-file",
            file.to_str().unwrap(),
        ];
        let (code, lines, stderr) = run_json(cli(&sim, &repo), &args);
        let same = code == 0
            && std::fs::read(&file).map(|d| digest(&d)).ok().as_deref() == Some(vms[vm].1.as_str());
        if same {
            restored += 1;
        } else {
            failures.push(format!(
                "backup {id} of {vm} did not restore bit for bit: {lines:?}\n{stderr}"
            ));
        }
    }
    if restored > 0 && failures.iter().all(|f| !f.contains("restore")) {
        held.push("restores bit for bit");
    }

    // 6. Each job's retention holds, and no job pruned another's backups.
    let mut retention = Vec::new();
    for job in JOBS {
        for i in job.vms {
            let n = backups
                .iter()
                .filter(|b| b["job"] == job.name && b["vm"]["name"] == vm_name(*i).as_str())
                .count();
            let want = if job.quiesce {
                0
            } else {
                job.keep_last as usize
            };
            if n != want {
                retention.push(format!(
                    "{} has {n} backups of {}, keeps {want}",
                    job.name,
                    vm_name(*i)
                ));
            }
        }
    }
    if !backups.iter().any(|b| b["id"] == manual_id.as_str()) {
        retention.push(format!("the manual backup {manual_id} was pruned"));
    }
    let made: BTreeMap<String, String> = all
        .iter()
        .filter(|r| r["action"] == "backup" && r["result"] == "ok")
        .map(|r| {
            (
                r["detail"]["backup"].as_str().unwrap().to_string(),
                r["job"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut pruned = 0usize;
    for p in all
        .iter()
        .filter(|r| r["action"] == "prune" && r["result"] == "ok")
    {
        let job = p["job"].as_str().unwrap();
        for id in p["detail"]["backups"].as_array().unwrap() {
            pruned += 1;
            let id = id.as_str().unwrap();
            match made.get(id) {
                Some(maker) if maker != job => {
                    retention.push(format!("{job} pruned {id}, which {maker} made"))
                }
                None if id == manual_id => {
                    retention.push(format!("{job} pruned the manual backup"))
                }
                _ => {}
            }
        }
    }
    if retention.is_empty() {
        held.push("retention holds, nothing of others pruned");
    } else {
        failures.push(format!("retention: {retention:#?}"));
    }

    // The quiesce-mode job never backed up its VM without Tools, and said why.
    let quiesce_refusals = all
        .iter()
        .filter(|r| r["action"] == "backup" && r["job"] == "quiesced")
        .filter(|r| {
            r["result"] == "failed"
                && r["detail"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("quiesce"))
        })
        .count();
    let quiesce_successes = all
        .iter()
        .filter(|r| r["action"] == "backup" && r["job"] == "quiesced" && r["result"] == "ok")
        .count();
    if quiesce_refusals == 0 || quiesce_successes > 0 {
        failures.push(format!(
            "the quiesce-mode job: {quiesce_refusals} refusals, {quiesce_successes} backups"
        ));
    }

    let count = |action: &str, result: Option<&str>| {
        all.iter()
            .filter(|r| r["action"] == action && result.is_none_or(|x| r["result"] == x))
            .count()
    };
    let hurt = all
        .iter()
        .filter(|r| r["action"] == "run.finish" && r["job"] != "quiesced")
        .filter(|r| r["result"] != "succeeded")
        .count();
    let finished = count("run.finish", None);
    let kills = killed.len();
    let mut figures = format!(
        "chaos: {chaos_seconds} s of faults (seed {seed}, {} s in all): {runs} runs \
         ({finished} finished, {} cut by kills, {hurt} others failed or aborted by faults), ",
        began.elapsed().as_secs(),
        runs.saturating_sub(finished),
    );
    figures += &format!(
        "{} backups committed, {pruned} pruned, {} gc runs, {kills} kills, {} faults injected \
         ({kills} SIGKILL, {windows} unwritable windows of 5 s), ",
        count("backup", Some("ok")),
        count("gc", Some("ok")),
        kills + windows as usize,
    );
    figures += &format!(
        "{quiesce_refusals} quiesce-mode backups refused; invariants held: {} of 6 {held:?}",
        held.len()
    );
    // Past the test harness's capture: the figures are wanted in passing runs too.
    let _ = writeln!(std::io::stderr(), "{figures}");
    if !failures.is_empty() {
        let logs: Vec<String> = slots
            .iter()
            .map(|s| format!("{}:\n{}", s.log.display(), tail(&s.log, 20)))
            .collect();
        panic!("{figures}\n{}\n{}", failures.join("\n"), logs.join("\n"));
    }
    assert!(killed.len() >= (seconds / 12) as usize, "{figures}");
    assert!(windows >= 1, "{figures}");
    assert_eq!(held.len(), 6, "{figures}");
}
