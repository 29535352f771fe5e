//! Failure notifications: hooks, which the daemon's own configuration defines, and webhooks.
//!
//! A job names a hook (`on_failure_hook = "page"`); the daemon runs it only if its own
//! configuration allows that name (`--allow-hook page=/usr/local/bin/page-oncall --urgent`).
//! Job definitions live in the repository, which whoever can write the bucket can change, so
//! nothing from the repository is ever executed: the command line is the daemon's, and the job
//! only picks among the names it allows. The command runs without a shell (its line is split
//! like a shell would, `sh -c '...'` must be spelled out), in a scrubbed environment (a fixed
//! `PATH` plus `CESO_JOB`, `CESO_STATUS`, `CESO_ERROR`, `CESO_NODE`: never the vSphere or
//! repository passwords or cloud keys the daemon holds), in its own process group, killed with
//! it on timeout.
//!
//! A webhook URL is POSTed a JSON summary (no credentials). URLs often carry a token, so a
//! failure is logged without the URL.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

/// The `PATH` a hook runs with.
pub const HOOK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The hooks a daemon allows: name to command line (split into words).
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    allowed: BTreeMap<String, Vec<String>>,
    timeout: Duration,
}

/// What became of a hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookOutcome {
    /// It ran and exited 0.
    Succeeded,
    /// It ran and failed (exit status or signal).
    Failed(String),
    /// It could not be started.
    NotStarted(String),
    /// It ran past the timeout and was killed with its process group.
    TimedOut,
    /// The daemon's configuration does not allow it: not run.
    Refused,
}

impl HookOutcome {
    /// The audit log's result word.
    pub fn as_str(&self) -> &'static str {
        match self {
            HookOutcome::Succeeded => "ok",
            HookOutcome::Failed(_) | HookOutcome::NotStarted(_) => "failed",
            HookOutcome::TimedOut => "timeout",
            HookOutcome::Refused => "refused",
        }
    }
}

/// What a hook is told about the run.
#[derive(Clone, Debug)]
pub struct HookEvent<'a> {
    /// The job.
    pub job: &'a str,
    /// The run's status (`failed`, `partial`).
    pub status: &'a str,
    /// What went wrong.
    pub error: &'a str,
    /// The daemon.
    pub node: &'a str,
}

/// Parses an `--allow-hook` value, `NAME=COMMAND LINE`.
pub fn parse_allow_hook(text: &str) -> Result<(String, Vec<String>), String> {
    let (name, command) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=COMMAND"))?;
    let name = name.trim();
    if !super::job::valid_hook_name(name) {
        return Err(format!(
            "{name:?} is not a hook name: 1 to 64 letters, digits, '-', '_' or '.'"
        ));
    }
    let words = shlex::split(command.trim())
        .filter(|w| !w.is_empty())
        .ok_or_else(|| format!("the command of hook {name:?} is empty or badly quoted"))?;
    Ok((name.to_string(), words))
}

impl Hooks {
    /// The hooks `allowed` (name to words), each killed after `timeout`.
    pub fn new(
        allowed: impl IntoIterator<Item = (String, Vec<String>)>,
        timeout: Duration,
    ) -> Self {
        Self {
            allowed: allowed.into_iter().collect(),
            timeout,
        }
    }

    /// The allowed names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.allowed.keys().map(String::as_str)
    }

    /// Runs hook `name` if allowed; see the module doc. Never logs its command line (it is the
    /// operator's, and may hold a secret).
    pub async fn run(&self, name: &str, event: &HookEvent<'_>) -> HookOutcome {
        let Some(words) = self.allowed.get(name) else {
            return HookOutcome::Refused;
        };
        let mut command = tokio::process::Command::new(&words[0]);
        command
            .args(&words[1..])
            .env_clear()
            .env("PATH", HOOK_PATH)
            .env("CESO_JOB", event.job)
            .env("CESO_STATUS", event.status)
            .env("CESO_ERROR", event.error)
            .env("CESO_NODE", event.node)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => return HookOutcome::NotStarted(e.to_string()),
        };
        match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(Ok(status)) if status.success() => HookOutcome::Succeeded,
            Ok(Ok(status)) => HookOutcome::Failed(status.to_string()),
            Ok(Err(e)) => HookOutcome::Failed(e.to_string()),
            Err(_) => {
                if let Some(pid) = child
                    .id()
                    .and_then(|p| rustix::process::Pid::from_raw(p as i32))
                {
                    // The whole group: a shell's children too.
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                let _ = child.kill().await;
                HookOutcome::TimedOut
            }
        }
    }
}

/// POSTs `body` to a webhook; a failure is described without the URL.
pub async fn post_webhook(url: &str, body: &serde_json::Value) -> Result<(), String> {
    let sent = reqwest::Client::new()
        .post(url)
        .timeout(Duration::from_secs(30))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .and_then(|r| r.error_for_status());
    sent.map(|_| ()).map_err(|e| e.without_url().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> HookEvent<'static> {
        HookEvent {
            job: "nightly",
            status: "failed",
            error: "web-1: boom",
            node: "node-a",
        }
    }

    #[test]
    fn allow_hook_values() {
        let (name, words) = parse_allow_hook("page=/usr/bin/logger -t ceso 'job failed'").unwrap();
        assert_eq!(name, "page");
        assert_eq!(words, ["/usr/bin/logger", "-t", "ceso", "job failed"]);
        assert!(parse_allow_hook("no-equals").is_err());
        assert!(parse_allow_hook("bad name=/bin/true").is_err());
        assert!(parse_allow_hook("x=").is_err());
        assert!(parse_allow_hook("x='unclosed").is_err());
    }

    #[tokio::test]
    async fn only_allowed_hooks_run_in_a_scrubbed_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env.txt");
        let script = format!("env > {}", out.display());
        let hooks = Hooks::new(
            [(
                "dump".to_string(),
                vec!["/bin/sh".into(), "-c".into(), script],
            )],
            Duration::from_secs(10),
        );
        assert_eq!(hooks.run("other", &event()).await, HookOutcome::Refused);
        assert!(!out.exists());
        // The daemon's own secrets are in its environment; the hook must not see them.
        std::env::set_var("CESO_TEST_HOOK_SECRET", "hunter2");
        assert_eq!(hooks.run("dump", &event()).await, HookOutcome::Succeeded);
        let env = std::fs::read_to_string(&out).unwrap();
        assert!(env.contains("CESO_JOB=nightly"), "{env}");
        assert!(env.contains("CESO_ERROR=web-1: boom"), "{env}");
        assert!(!env.contains("hunter2"), "{env}");
        let names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
        for name in names {
            assert!(
                name.starts_with("CESO_JOB")
                    || [
                        "PATH",
                        "CESO_STATUS",
                        "CESO_ERROR",
                        "CESO_NODE",
                        "PWD",
                        "SHLVL",
                        "_"
                    ]
                    .contains(&name),
                "unexpected variable {name} in {env}"
            );
        }
    }

    #[tokio::test]
    async fn a_hook_past_its_timeout_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("late");
        // A shell whose child would write the marker after the timeout.
        let script = format!("(sleep 2; touch {}) & wait", marker.display());
        let hooks = Hooks::new(
            [(
                "slow".to_string(),
                vec!["/bin/sh".into(), "-c".into(), script],
            )],
            Duration::from_millis(300),
        );
        let started = std::time::Instant::now();
        assert_eq!(hooks.run("slow", &event()).await, HookOutcome::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!marker.exists(), "the hook's child was killed too");
        let failing = Hooks::new(
            [("no".to_string(), vec!["/bin/false".into()])],
            Duration::from_secs(5),
        );
        assert!(matches!(
            failing.run("no", &event()).await,
            HookOutcome::Failed(_)
        ));
        let missing = Hooks::new(
            [("gone".to_string(), vec!["/nonexistent/hook".into()])],
            Duration::from_secs(5),
        );
        assert!(matches!(
            missing.run("gone", &event()).await,
            HookOutcome::NotStarted(_)
        ));
    }

    #[tokio::test]
    async fn webhook_errors_never_name_the_url() {
        let e = post_webhook(
            "http://127.0.0.1:1/hooks/secret-token",
            &serde_json::json!({}),
        )
        .await
        .unwrap_err();
        assert!(!e.contains("secret-token"), "{e}");
    }
}
