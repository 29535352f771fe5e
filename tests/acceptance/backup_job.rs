//! Scheduled backups end to end: real Terraform writes a `ceso_backup_job` into a local
//! repository, `ceso-backup serve` daemons started by the test run it on schedule against the
//! simulator, and the next refresh shows `last_run`. Retention changed through Terraform is
//! applied by the daemon; a destroyed job stops running while its backups remain; two daemons
//! never run one job at once (checked on their audit logs); a daemon killed mid-run has its
//! job taken over after the lease expires, with no snapshot left behind; /metrics parses as
//! Prometheus text; a daemon whose repository goes away runs on, `/healthz` turning unhealthy
//! past `--unhealthy-after` and healthy again once it is back.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use ceso::engine::backup::{LocalBackend, Repository};
use ceso::engine::schedule::JobStore;

use crate::backup::{backup_snapshots, cli, init_repo, make_vm, result_of, upload, MIB};
use crate::harness::{folded, resource_values, SimClient, Vcsim, Workspace};
use crate::require_acc;

/// A daemon process, killed when dropped.
struct Daemon {
    child: Child,
    audit: PathBuf,
}

impl Daemon {
    /// SIGTERM, as systemd stops it, then waits: a run in progress is aborted cleanly.
    fn stop(mut self) -> std::process::ExitStatus {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(sim: &Vcsim, repo: &Path, dir: &Path, node: &str, extra: &[&str]) -> Daemon {
    let audit = dir.join(format!("audit-{node}.jsonl"));
    let mut cmd = cli(sim, repo);
    let child = cmd
        .args([
            "serve",
            "--node",
            node,
            "--poll",
            "500ms",
            "--lease-ttl",
            "4s",
            "--clock-skew",
            "1s",
            "--audit-log",
        ])
        .arg(&audit)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ceso-backup serve");
    Daemon { child, audit }
}

/// Every audit record of `daemons`.
fn audit_of(daemons: &[&Path]) -> Vec<Value> {
    daemons
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

/// The (start, finish, node, result) of every finished run of `job`.
fn runs(records: &[Value], job: &str) -> Vec<(DateTime<Utc>, DateTime<Utc>, String, String)> {
    let t = |v: &Value| {
        v["time"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap()
    };
    let mut out = Vec::new();
    for finish in records
        .iter()
        .filter(|r| r["action"] == "run.finish" && r["job"] == job)
    {
        let node = finish["actor"].as_str().unwrap();
        let start = records
            .iter()
            .filter(|r| r["action"] == "run.start" && r["job"] == job && r["actor"] == node)
            .map(t)
            .filter(|s| *s <= t(finish))
            .max()
            .expect("a start before each finish");
        out.push((
            start,
            t(finish),
            node.to_string(),
            finish["result"].as_str().unwrap().to_string(),
        ));
    }
    out.sort();
    out
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn backups_of(sc: &SimClient, repo: &Path, vm: &str) -> usize {
    sc.run(async {
        let r = Repository::open(
            std::sync::Arc::new(LocalBackend::new(repo.to_path_buf())),
            None,
        )
        .await
        .unwrap();
        r.list()
            .await
            .unwrap()
            .iter()
            .filter(|b| b.vm.name == vm)
            .count()
    })
}

fn config(repo: &Path, keep_last: u32, schedule: &str) -> String {
    format!(
        "terraform {{\n  required_providers {{\n    ceso = {{ source = \"choiceomg/ceso\" }}\n  }}\n}}\nprovider \"ceso\" {{\n  backup_repository = \"{}\"\n}}\nresource \"ceso_backup_job\" \"quick\" {{\n  name = \"quick\"\n  schedule = \"{schedule}\"\n  vm_ids = [\"web-1\"]\n  retention {{\n    keep_last = {keep_last}\n  }}\n}}\n",
        repo.display()
    )
}

#[test]
fn backup_job_from_terraform_runs_in_two_daemons_once_at_a_time() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let sc = SimClient::connect(&sim);
    let client = sc.client.clone();
    let (_vm, flat) = sc.run(make_vm(&client, "web-1", 4 * MIB));
    sc.run(upload(
        &client,
        &flat,
        &crate::backup::disk_image(4 * MIB, 7),
    ));
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    init_repo(&sim, &repo);

    // Terraform writes the job: every 2 seconds, keep 3.
    let ws = Workspace::empty().against(&sim);
    ws.write("main.tf", &config(&repo, 3, "*/2 * * * * *"));
    ws.init();
    ws.apply().ok("create the job");
    let store = JobStore::new(std::sync::Arc::new(LocalBackend::new(repo.clone())));
    let spec = sc
        .run(store.job("quick"))
        .unwrap()
        .expect("the job in the repository");
    assert_eq!(spec.schedule, "*/2 * * * * *");
    let show = ws.show_json();
    let state = resource_values(&show, "ceso_backup_job.quick");
    assert!(state["last_run"].is_null(), "{state}");
    assert!(state["next_run"].is_string(), "{state}");
    let plan = ws.plan_exit_code();
    assert_eq!(plan.code, 0, "plan after apply: {}", plan.stdout);

    // A job for another vSphere endpoint: these daemons (started for none) never run it.
    let mut elsewhere = spec.clone();
    elsewhere.name = "elsewhere".into();
    elsewhere.endpoint = Some("other-vcenter".into());
    sc.run(store.put_job(&elsewhere)).unwrap();

    // Two daemons on one repository.
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let a = serve(&sim, &repo, work.path(), "a", &["--metrics-addr", &metrics]);
    let b = serve(&sim, &repo, work.path(), "b", &[]);
    let logs = [a.audit.as_path(), b.audit.as_path()];
    wait_until(Duration::from_secs(40), "four runs", || {
        runs(&audit_of(&logs), "quick").len() >= 4
    });

    // The next refresh shows the last run.
    ws.run(&["apply", "-refresh-only", "-auto-approve", "-no-color"])
        .ok("refresh");
    let show = ws.show_json();
    let last = &resource_values(&show, "ceso_backup_job.quick")["last_run"];
    assert_eq!(last["status"], "succeeded", "{last}");
    assert!(last["backups"].as_u64() == Some(1), "{last}");
    assert!(last["bytes"].is_u64(), "{last}");
    // The first run read the disk's data; later ones only what changed (nothing).
    let first_read = audit_of(&logs)
        .iter()
        .filter(|r| r["action"] == "backup" && r["result"] == "ok")
        .filter_map(|r| r["detail"]["bytes_read"].as_u64())
        .max()
        .unwrap();
    assert!(first_read >= 2 * MIB as u64, "{first_read}");

    // Retention keeps 3 backups of the VM.
    assert!(backups_of(&sc, &repo, "web-1") <= 3);
    // Keep 1, through Terraform: the next run prunes to it.
    ws.write("main.tf", &config(&repo, 1, "*/2 * * * * *"));
    ws.apply().ok("change retention");
    let changed = Utc::now();
    wait_until(Duration::from_secs(30), "a run after the change", || {
        runs(&audit_of(&logs), "quick")
            .iter()
            .any(|r| r.0 > changed)
    });
    wait_until(Duration::from_secs(10), "prune to 1", || {
        backups_of(&sc, &repo, "web-1") == 1
    });

    // /metrics, parsed as Prometheus text.
    let body = crate::harness::http_get(&format!("http://{metrics}/metrics"));
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let sample = |name: &str| scrape.samples.iter().find(|s| s.metric == name);
    match sample("ceso_backup_jobs").map(|s| &s.value) {
        Some(prometheus_parse::Value::Gauge(v)) | Some(prometheus_parse::Value::Untyped(v)) => {
            assert_eq!(*v, 2.0, "both jobs of the repository")
        }
        other => panic!("ceso_backup_jobs: {other:?}\n{body}"),
    }
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric.starts_with("ceso_backup_runs")
                && s.labels.get("job") == Some("quick")
                && s.labels.get("status") == Some("succeeded")),
        "{body}"
    );
    assert!(
        sample("ceso_backup_repository_chunk_bytes").is_some(),
        "{body}"
    );
    assert_eq!(
        crate::harness::http_get(&format!("http://{metrics}/healthz")).trim(),
        "ok"
    );

    // Never two runs of the job at once, across both daemons.
    let all = runs(&audit_of(&logs), "quick");
    for pair in all.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "overlapping runs: {pair:?}");
    }
    assert!(all.iter().all(|r| r.3 == "succeeded"), "{all:?}");
    assert!(
        runs(&audit_of(&logs), "elsewhere").is_empty(),
        "a job of another endpoint ran here"
    );
    sc.run(store.delete_job("elsewhere")).unwrap();

    // Destroy: the daemons stop running it; its backups stay.
    ws.run(&["destroy", "-auto-approve", "-no-color"])
        .ok("destroy");
    let gone = Utc::now();
    std::thread::sleep(Duration::from_secs(4));
    let after: Vec<_> = runs(&audit_of(&logs), "quick")
        .into_iter()
        .filter(|r| r.0 > gone + chrono::Duration::seconds(1))
        .collect();
    assert!(after.is_empty(), "runs after destroy: {after:?}");
    assert!(sc.run(store.job("quick")).unwrap().is_none());
    assert_eq!(backups_of(&sc, &repo, "web-1"), 1, "backups remain");
}

#[test]
fn backup_job_of_a_killed_daemon_is_taken_over_without_leftovers() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let sc = SimClient::connect(&sim);
    let client = sc.client.clone();
    let (vm, flat) = sc.run(make_vm(&client, "web-1", 8 * MIB));
    sc.run(upload(
        &client,
        &flat,
        &crate::backup::disk_image(8 * MIB, 9),
    ));
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    init_repo(&sim, &repo);
    // A slow job (1 MiB/s over 4 MiB of data), due every 2 seconds.
    let ws = Workspace::empty().against(&sim);
    ws.write(
        "main.tf",
        &config(&repo, 5, "*/2 * * * * *")
            .replace("retention {", "max_rate = \"1MiB\"\n  retention {"),
    );
    ws.init();
    ws.apply().ok("create the job");

    let mut a = serve(&sim, &repo, work.path(), "a", &[]);
    let a_log = a.audit.clone();
    wait_until(Duration::from_secs(20), "a's run to start", || {
        audit_of(&[&a_log])
            .iter()
            .any(|r| r["action"] == "run.start")
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !sc.run(backup_snapshots(&client, &vm)).is_empty(),
        "a's snapshot exists mid-run"
    );
    let _ = a.child.kill();
    let _ = a.child.wait();
    let killed = Utc::now();

    // b takes the job once a's lease (4 s) lapses; its backup removes a's leftover snapshot.
    let b = serve(&sim, &repo, work.path(), "b", &[]);
    let logs = [a_log.as_path(), b.audit.as_path()];
    wait_until(Duration::from_secs(60), "b to finish a run", || {
        let done = runs(&audit_of(&logs), "quick")
            .iter()
            .any(|r| r.2 == "b" && r.3 == "succeeded");
        if !done && Utc::now() > killed + chrono::Duration::seconds(55) {
            eprintln!("{:#?}", audit_of(&logs));
        }
        done
    });
    let b_runs = runs(&audit_of(&logs), "quick");
    let first_b = b_runs.iter().find(|r| r.2 == "b").unwrap();
    assert!(
        first_b.0 >= killed + chrono::Duration::seconds(2),
        "b waited for a's lease to lapse: {b_runs:?}"
    );
    // Stopped mid-run or between runs, gracefully: nothing is left behind either way.
    let b_log = b.audit.clone();
    let status = b.stop();
    assert!(status.success(), "{status:?}");
    let left = sc.run(backup_snapshots(&client, &vm));
    assert!(
        left.is_empty(),
        "no backup snapshot left behind: {left:?}\n{:#?}",
        audit_of(&[&a_log, &b_log])
    );
    let verify = result_of(cli(&sim, &repo), &["verify"]);
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(
        verify["report"]["problems"],
        serde_json::json!([]),
        "{verify}"
    );
    ws.run(&["destroy", "-auto-approve", "-no-color"])
        .ok("destroy");
}

#[test]
fn backup_job_mistakes_fail_at_plan_naming_the_field() {
    require_acc!();
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    let ws = Workspace::empty();
    let base = config(&repo, 3, "@daily");
    ws.write("main.tf", &base);
    ws.init();
    let cases = [
        (base.replace("@daily", "61 * * * *"), "Invalid schedule"),
        (
            base.replace(
                "schedule = \"@daily\"",
                "schedule = \"@daily\"\n  timezone = \"Mars/Olympus\"",
            ),
            "is not an IANA time zone",
        ),
        (
            base.replace("keep_last = 3", "keep_last = 0"),
            "Retention keeps nothing",
        ),
        (
            base.replace("vm_ids = [\"web-1\"]", "vm_name_regex = \"web-(\""),
            "not a valid regular expression",
        ),
        (
            base.replace("vm_ids = [\"web-1\"]", ""),
            "No VMs to back up",
        ),
        (
            base.replace("retention {", "max_rate = \"fast\"\n  retention {"),
            "is not a rate",
        ),
    ];
    for (cfg, want) in cases {
        ws.write("main.tf", &cfg);
        let out = ws.run(&["validate", "-no-color"]);
        let text = folded(&out);
        assert_eq!(out.code, 1, "{want}: {text}");
        assert!(text.contains(want), "expected {want:?} in {text}");
    }
    // A repository that does not exist: apply says so and what to do.
    ws.write("main.tf", &base);
    let out = ws.apply();
    assert_eq!(out.code, 1);
    assert!(
        folded(&out).contains("ceso-backup init") || folded(&out).contains("no backup repository"),
        "{}",
        folded(&out)
    );

    // The example, against a repository made with `ceso-backup init` (no vSphere needed to
    // manage jobs): the job lands in the repository, the plan after is empty, destroy removes it.
    let sim = Vcsim::start(&["-esx"]);
    init_repo(&sim, &repo);
    let ex = Workspace::from_example("resources/ceso_backup_job");
    ex.init();
    let var = format!("repository={}", repo.display());
    ex.run(&["apply", "-auto-approve", "-no-color", "-var", &var])
        .ok("apply the example");
    let store = JobStore::new(std::sync::Arc::new(LocalBackend::new(repo.clone())));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let spec = rt
        .block_on(store.job("web-nightly"))
        .unwrap()
        .expect("the example's job");
    assert_eq!(spec.timezone, "Europe/Paris");
    assert_eq!(spec.max_rate, Some(100 << 20));
    assert_eq!(spec.retention.keep_monthly, 12);
    let outputs = ex.outputs();
    assert!(
        outputs["next_run"]["value"]
            .as_str()
            .is_some_and(|t| t.contains('T')),
        "{outputs}"
    );
    let plan = ex.run(&["plan", "-detailed-exitcode", "-no-color", "-var", &var]);
    assert_eq!(plan.code, 0, "plan after apply: {}", plan.stdout);
    // Edited outside Terraform: the plan shows it.
    let mut edited = spec.clone();
    edited.max_parallel = 5;
    rt.block_on(store.put_job(&edited)).unwrap();
    let plan = ex.run(&["plan", "-detailed-exitcode", "-no-color", "-var", &var]);
    assert_eq!(plan.code, 2, "drift shows: {}", plan.stdout);
    assert!(plan.stdout.contains("max_parallel"), "{}", plan.stdout);
    // Import by name.
    ex.run(&["state", "rm", "ceso_backup_job.nightly"])
        .ok("state rm");
    ex.run(&[
        "import",
        "-no-color",
        "-var",
        &var,
        "ceso_backup_job.nightly",
        "web-nightly",
    ])
    .ok("import");
    ex.run(&["apply", "-auto-approve", "-no-color", "-var", &var])
        .ok("converge");
    assert_eq!(
        rt.block_on(store.job("web-nightly"))
            .unwrap()
            .unwrap()
            .max_parallel,
        2
    );
    ex.run(&["destroy", "-auto-approve", "-no-color", "-var", &var])
        .ok("destroy");
    assert!(rt.block_on(store.job("web-nightly")).unwrap().is_none());
}

/// Tags the VMs `moids` with `backup:nightly` through the simulator's tagging REST API, as a
/// vSphere administrator would.
async fn tag_vms(sdk: &str, moids: &[String]) {
    let base = sdk.trim_end_matches("/sdk");
    let http = reqwest::Client::new();
    let post = |path: &str, sid: Option<&str>, body: Value| {
        let mut req = http
            .post(format!("{base}/rest{path}"))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(s) = sid {
            req = req.header("vmware-api-session-id", s);
        }
        req
    };
    let value =
        |text: String| -> Value { serde_json::from_str::<Value>(&text).unwrap()["value"].clone() };
    let sid = value(
        http.post(format!("{base}/rest/com/vmware/cis/session"))
            .basic_auth("user", Some("pass"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let sid = sid.as_str().unwrap();
    let category = value(
        post(
            "/com/vmware/cis/tagging/category",
            Some(sid),
            serde_json::json!({"create_spec": {"name": "backup", "description": "", "cardinality": "MULTIPLE", "associable_types": []}}),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap(),
    );
    let tag = value(
        post(
            "/com/vmware/cis/tagging/tag",
            Some(sid),
            serde_json::json!({"create_spec": {"name": "nightly", "description": "", "category_id": category}}),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap(),
    );
    for moid in moids {
        let r = post(
            &format!(
                "/com/vmware/cis/tagging/tag-association/id:{}?~action=attach",
                tag.as_str().unwrap()
            ),
            Some(sid),
            serde_json::json!({"object_id": {"id": moid, "type": "VirtualMachine"}}),
        )
        .send()
        .await
        .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
}

/// A job that selects VMs by vSphere tag (vCenter's tagging service) backs up exactly the
/// tagged VMs when run; an unknown tag fails the run naming the tags that exist.
#[test]
fn backup_job_selects_vms_by_tag() {
    require_acc!();
    let sim = Vcsim::start(&["-vapi"]);
    let sc = SimClient::connect(&sim);
    let client = sc.client.clone();
    let (a, _) = sc.run(make_vm(&client, "tagged-a", 2 * MIB));
    let (b, _) = sc.run(make_vm(&client, "tagged-b", 2 * MIB));
    let (_c, _) = sc.run(make_vm(&client, "untagged-c", 2 * MIB));
    sc.run(tag_vms(&sim.url, &[a.value.clone(), b.value.clone()]));
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    init_repo(&sim, &repo);
    let ws = Workspace::empty();
    let cfg = |tags: &str| {
        format!(
            "terraform {{\n  required_providers {{\n    ceso = {{ source = \"choiceomg/ceso\" }}\n  }}\n}}\nprovider \"ceso\" {{\n  backup_repository = \"{}\"\n}}\nresource \"ceso_backup_job\" \"tagged\" {{\n  name = \"tagged\"\n  schedule = \"@daily\"\n  tags = [{tags}]\n  max_parallel = 2\n  retention {{\n    keep_last = 2\n  }}\n}}\n",
            repo.display()
        )
    };
    ws.write("main.tf", &cfg("\"backup:nightly\""));
    ws.init();
    ws.apply().ok("job by tag");
    let run = result_of(cli(&sim, &repo), &["run", "tagged"]);
    assert_eq!(run["last_run"]["backups"], 2, "{run}");
    for (vm, want) in [("tagged-a", 1), ("tagged-b", 1), ("untagged-c", 0)] {
        assert_eq!(backups_of(&sc, &repo, vm), want, "{vm}");
    }
    // A tag nobody made: the run fails and says which tags exist.
    ws.write("main.tf", &cfg("\"backup:weekly\""));
    ws.apply().ok("unknown tag");
    let (code, lines, _) = crate::backup::run_json(cli(&sim, &repo), &["run", "tagged"]);
    assert_eq!(code, 1);
    let text = serde_json::to_string(&lines).unwrap();
    assert!(
        text.contains("no tag \\\"backup:weekly\\\"") && text.contains("backup:nightly"),
        "{text}"
    );
    ws.run(&["destroy", "-auto-approve", "-no-color"])
        .ok("destroy");
}

#[test]
fn a_daemon_survives_a_lost_repository_and_healthz_says_so() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let sc = SimClient::connect(&sim);
    let client = sc.client.clone();
    let (vm, flat) = sc.run(make_vm(&client, "web-1", 4 * MIB));
    sc.run(upload(
        &client,
        &flat,
        &crate::backup::disk_image(4 * MIB, 3),
    ));
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    init_repo(&sim, &repo);
    let store = JobStore::new(std::sync::Arc::new(LocalBackend::new(repo.clone())));
    let spec = ceso::engine::schedule::JobSpec {
        name: "quick".into(),
        schedule: "*/2 * * * * *".into(),
        timezone: "UTC".into(),
        vm_ids: vec!["web-1".into()],
        retention: ceso::engine::schedule::Retention {
            keep_last: 2,
            ..Default::default()
        },
        max_parallel: 1,
        enabled: true,
        updated_at: Some(Utc::now()),
        ..Default::default()
    };
    sc.run(store.put_job(&spec)).unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut d = serve(
        &sim,
        &repo,
        work.path(),
        "a",
        &["--metrics-addr", &metrics, "--unhealthy-after", "2s"],
    );
    let log = d.audit.clone();
    let healthz = || crate::harness::http_get(&format!("http://{metrics}/healthz"));
    let succeeded_after = |t: DateTime<Utc>| {
        runs(&audit_of(&[&log]), "quick")
            .iter()
            .any(|r| r.0 > t && r.3 == "succeeded")
    };
    let began = Utc::now() - chrono::Duration::seconds(5);
    wait_until(Duration::from_secs(30), "a first run", || {
        succeeded_after(began)
    });
    assert_eq!(healthz().trim(), "ok");

    // The repository goes away (a file where its folder was: every read and write fails).
    let away = work.path().join("repo.away");
    std::fs::rename(&repo, &away).unwrap();
    std::fs::write(&repo, "not a repository").unwrap();
    let lost = Instant::now();
    wait_until(
        Duration::from_secs(20),
        "/healthz to turn unhealthy",
        || healthz().starts_with("unhealthy"),
    );
    assert!(
        lost.elapsed() >= Duration::from_secs(2),
        "healthy until the threshold"
    );
    assert!(d.child.try_wait().unwrap().is_none(), "the daemon runs on");
    std::thread::sleep(Duration::from_secs(3));
    assert!(d.child.try_wait().unwrap().is_none(), "the daemon runs on");

    // Back: healthy again, and the job runs again.
    std::fs::remove_file(&repo).unwrap();
    std::fs::rename(&away, &repo).unwrap();
    let back = Utc::now();
    wait_until(Duration::from_secs(30), "a run after the outage", || {
        succeeded_after(back)
    });
    assert_eq!(healthz().trim(), "ok");
    let body = crate::harness::http_get(&format!("http://{metrics}/metrics"));
    let errors = body
        .lines()
        .find(|l| l.starts_with("ceso_backup_daemon_errors_total{source=\"repository\"}"))
        .unwrap_or_else(|| panic!("no repository errors counted:\n{body}"));
    assert!(!errors.ends_with(" 0"), "{errors}");
    let status = d.stop();
    assert!(status.success(), "{status:?}");
    assert!(sc.run(backup_snapshots(&client, &vm)).is_empty());
}
