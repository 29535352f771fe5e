//! Failure hooks are no remote shell: a command written straight into the repository's JSON
//! never runs, a hook a job names runs only when the daemon's own `--allow-hook` defines it,
//! in an environment without the daemon's passwords or keys, and neither its command line nor
//! a webhook's token reaches the daemon's log or audit log. In an encrypted repository a job
//! definition written without the key is refused altogether.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use ceso::engine::backup::{KeySource, LocalBackend, Passphrase, Repository};
use ceso::engine::schedule::{JobSpec, JobStore, Retention};

use crate::backup::{cli, init_repo, result_of};
use crate::harness::{SimClient, Vcsim};
use crate::require_acc;

/// The secrets the daemons hold in their environment.
const VSPHERE_PASSWORD: &str = "pass";
const REPO_PASSWORD: &str = "repo-passphrase-7f3a";
const AWS_SECRET: &str = "aws-secret-9c1d";
const WEBHOOK_TOKEN: &str = "webhook-token-4e2b";
const HOOK_TOKEN: &str = "hook-cmdline-token-5d6c";

/// A `serve` daemon whose stderr goes to a file; killed when dropped.
struct Daemon {
    child: Child,
    audit: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn start(
        sim: &Vcsim,
        repo: &Path,
        dir: &Path,
        node: &str,
        repo_password: Option<&str>,
        extra: &[&str],
    ) -> Self {
        let audit = dir.join(format!("audit-{node}.jsonl"));
        let log = dir.join(format!("log-{node}.txt"));
        let mut cmd = cli(sim, repo);
        if let Some(p) = repo_password {
            cmd.env("CESO_BACKUP_PASSWORD", p);
        }
        let child = cmd
            .env("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
            .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
            .env("CESO_LOG", "debug")
            .args([
                "serve",
                "--node",
                node,
                "--poll",
                "300ms",
                "--gc-schedule",
                "off",
            ])
            .arg("--audit-log")
            .arg(&audit)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start ceso-backup serve");
        Daemon { child, audit, log }
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The audit records of `action` for `job`.
    fn records(&self, action: &str, job: &str) -> Vec<Value> {
        self.audit()
            .into_iter()
            .filter(|r| r["action"] == action && r["job"] == job)
            .collect()
    }

    fn wait_for(&self, what: &str, ok: impl Fn(&Daemon) -> bool) {
        let started = Instant::now();
        while !ok(self) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}: {:#?}\n{}",
                self.audit(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM, then its log and audit log as text.
    fn stop(mut self) -> String {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        std::fs::read_to_string(&self.log).unwrap() + &std::fs::read_to_string(&self.audit).unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A job definition as anyone who can write the bucket could write it: raw JSON, no key.
fn write_raw_job(repo: &Path, name: &str, extra: Value) {
    let mut job = json!({
        "name": name,
        "schedule": "* * * * * *",
        "vm_ids": ["no-such-vm"],
        "retention": {"keep_last": 1},
        "updated_at": chrono::Utc::now() - chrono::Duration::minutes(1),
    });
    job.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    std::fs::create_dir_all(repo.join("jobs")).unwrap();
    std::fs::write(
        repo.join("jobs").join(format!("{name}.json")),
        job.to_string(),
    )
    .unwrap();
}

/// A hook that runs `sh -c SCRIPT`, its command line holding a token that must not be logged.
fn allow_hook(name: &str, script: &str) -> String {
    format!("{name}=/bin/sh -c '{script}' {HOOK_TOKEN}")
}

#[test]
fn a_command_written_into_the_repository_never_runs_and_hooks_need_the_daemons_leave() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    init_repo(&sim, &repo);
    let pwned = work.path().join("pwned");
    let paged = work.path().join("paged");
    // Each job backs up a VM that does not exist, so every run fails and notifies.
    write_raw_job(
        &repo,
        "evil",
        json!({"on_failure_command": format!("touch {}", pwned.display())}),
    );
    write_raw_job(
        &repo,
        "paging",
        json!({
            "on_failure_hook": "page",
            "on_failure_webhook": format!("http://127.0.0.1:1/hooks/{WEBHOOK_TOKEN}"),
        }),
    );

    // A daemon that allows no hook runs neither.
    let a = Daemon::start(&sim, &repo, work.path(), "a", None, &[]);
    a.wait_for("both jobs' notifications", |d| {
        !d.records("hook", "evil").is_empty() && !d.records("webhook", "paging").is_empty()
    });
    assert!(d_all_refused(&a.records("hook", "evil")));
    assert!(d_all_refused(&a.records("hook", "paging")));
    assert!(a.records("webhook", "paging")[0]["result"] == "failed");
    let a_text = a.stop();
    assert!(!pwned.exists(), "the repository's command ran");
    assert!(!paged.exists(), "a hook the daemon does not allow ran");

    // A daemon that allows `page` runs it, and still never the repository's command.
    let hook = allow_hook("page", &format!("touch {}", paged.display()));
    let b = Daemon::start(
        &sim,
        &repo,
        work.path(),
        "b",
        None,
        &["--allow-hook", &hook],
    );
    b.wait_for("the allowed hook", |d| {
        d.records("hook", "paging")
            .iter()
            .any(|r| r["result"] == "ok")
            && !d.records("hook", "evil").is_empty()
    });
    assert!(paged.exists(), "the allowed hook ran");
    assert!(d_all_refused(&b.records("hook", "evil")));
    let b_text = b.stop();
    assert!(!pwned.exists(), "the repository's command ran");

    // Secrets never reach a log line: not the webhook's token, not the hook's command line.
    for text in [&a_text, &b_text] {
        assert!(text.contains("paging"), "the logs were captured");
        for secret in [WEBHOOK_TOKEN, HOOK_TOKEN, AWS_SECRET] {
            assert!(!text.contains(secret), "{secret} logged:\n{text}");
        }
    }
}

fn d_all_refused(records: &[Value]) -> bool {
    !records.is_empty() && records.iter().all(|r| r["result"] == "refused")
}

#[test]
fn an_allowed_hook_gets_no_password_or_key_and_forged_jobs_are_refused() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let sc = SimClient::connect(&sim);
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    let mut init = cli(&sim, &repo);
    init.env("CESO_BACKUP_PASSWORD", REPO_PASSWORD);
    let r = result_of(init, &["init", "--encrypt", "--chunk-size", "1MiB"]);
    assert_eq!(r["encrypted"], true, "{r}");

    // A job written with the key (as Terraform does), and one forged into the bucket.
    let store = sc.run(async {
        let opened = Repository::open(
            Arc::new(LocalBackend::new(repo.clone())),
            Some(KeySource::Passphrase(Passphrase::new(REPO_PASSWORD))),
        )
        .await
        .unwrap();
        JobStore::for_repository(&opened)
    });
    assert!(store.authenticated());
    let signed = JobSpec {
        name: "signed".into(),
        schedule: "* * * * * *".into(),
        vm_ids: vec!["no-such-vm".into()],
        retention: Retention {
            keep_last: 1,
            ..Default::default()
        },
        on_failure_hook: Some("dump".into()),
        updated_at: Some(chrono::Utc::now() - chrono::Duration::minutes(1)),
        timezone: "UTC".into(),
        enabled: true,
        max_parallel: 1,
        ..Default::default()
    };
    sc.run(store.put_job(&signed)).unwrap();
    let forged_ran = work.path().join("forged-ran");
    write_raw_job(
        &repo,
        "forged",
        json!({"on_failure_hook": "dump", "vm_ids": ["no-such-vm-2"]}),
    );

    let env_file = work.path().join("env.txt");
    let hook = allow_hook(
        "dump",
        &format!(
            "env > {env}.tmp; mv {env}.tmp {env}; [ \"$CESO_JOB\" = forged ] && touch {forged}; true",
            env = env_file.display(),
            forged = forged_ran.display()
        ),
    );
    let d = Daemon::start(
        &sim,
        &repo,
        work.path(),
        "enc",
        Some(REPO_PASSWORD),
        &["--allow-hook", &hook],
    );
    d.wait_for("the signed job's hook", |d| {
        d.records("hook", "signed")
            .iter()
            .any(|r| r["result"] == "ok")
    });
    let refused: Vec<Value> = d
        .audit()
        .into_iter()
        .filter(|r| r["action"] == "job.refused")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0]["detail"]["key"]
        .as_str()
        .unwrap()
        .contains("forged"));
    assert!(
        d.records("run.start", "forged").is_empty(),
        "forged job ran"
    );
    let text = d.stop();
    assert!(!forged_ran.exists());

    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(env.contains("CESO_JOB=signed"), "{env}");
    assert!(env.contains("CESO_STATUS=failed"), "{env}");
    for line in env.lines() {
        let (name, value) = line.split_once('=').unwrap_or((line, ""));
        assert!(
            !name.contains("PASSWORD") && !name.starts_with("AWS_") && !name.contains("KEY"),
            "{name} reached the hook:\n{env}"
        );
        for secret in [REPO_PASSWORD, AWS_SECRET, VSPHERE_PASSWORD] {
            assert!(
                !value
                    .split(|c: char| !c.is_ascii_alphanumeric() && c != '-')
                    .any(|w| w == secret),
                "{secret} reached the hook in {name}:\n{env}"
            );
        }
    }
    for secret in [REPO_PASSWORD, AWS_SECRET, HOOK_TOKEN] {
        assert!(!text.contains(secret), "{secret} logged:\n{text}");
    }
    // `jobs` with the key shows the forged definition as refused.
    let mut jobs = cli(&sim, &repo);
    jobs.env("CESO_BACKUP_PASSWORD", REPO_PASSWORD);
    let listed = result_of(jobs, &["jobs"]);
    let rows = listed["jobs"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["key"].as_str().is_some_and(|k| k.contains("forged"))
                && r["error"].as_str().is_some()),
        "{listed}"
    );
}
