//! `serve` (the scheduler daemon), `jobs` (list with next and last run) and `run JOB` (one job
//! now, out of band).
//!
//! `serve` starts even while the repository or vSphere cannot be reached: it retries with
//! back-off (logging each error, `/healthz` turning unhealthy past `--unhealthy-after`) until
//! they answer or a signal stops it. It exits at start only on what waiting cannot fix: a
//! missing or malformed setting, no repository at the location, a wrong key, refused vSphere
//! credentials or certificate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use ceso::engine::backup::{Error as RepoError, LockOptions, Repository};
use ceso::engine::schedule::hooks::parse_allow_hook;
use ceso::engine::schedule::job::next_run;
use ceso::engine::schedule::{
    AuditLog, Backoff, Daemon, DaemonOptions, GcSettings, Health, Hooks, JobStore, Metrics,
    RunStatus, Schedule,
};
use ceso::vsphere::{Client, ErrorKind};

use crate::failure::{code, Failure};
use crate::output::{human_bytes, Output};
use crate::settings::{parse_duration, RepoArgs, VsphereArgs};

/// Options of `serve` and `run`.
#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// This daemon's name in leases, job statuses and the audit log (default: HOST:PID).
    #[arg(long, env = "CESO_BACKUP_NODE")]
    pub node: Option<String>,
    /// Append an audit record (JSON lines) for every run, backup, prune and verify to this file.
    #[arg(long, env = "CESO_BACKUP_AUDIT_LOG", value_name = "PATH")]
    pub audit_log: Option<PathBuf>,
    /// How long a run's lease lasts unless renewed; a dead daemon's job is taken over after it.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// Clock difference tolerated between daemons sharing the repository: another daemon's
    /// lease counts as lapsed this long after it expires.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub clock_skew: Duration,
    /// The name of the vSphere endpoint this daemon reaches (as in the provider's `endpoint`
    /// blocks): it runs the jobs whose `endpoint` is this name, and those with none.
    #[arg(
        long = "endpoint-name",
        env = "CESO_BACKUP_ENDPOINT",
        value_name = "NAME"
    )]
    pub endpoint_name: Option<String>,
    /// Let jobs name this failure hook (`on_failure_hook = "NAME"`): the command line, run
    /// without a shell in a scrubbed environment, is this daemon's own. Repeat for several.
    /// Jobs never bring commands of their own.
    #[arg(long = "allow-hook", value_name = "NAME=COMMAND", value_parser = parse_allow_hook)]
    pub allow_hook: Vec<(String, Vec<String>)>,
    /// A failure hook still running after this is killed (with its process group).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub hook_timeout: Duration,
    #[command(flatten)]
    pub vsphere: VsphereArgs,
}

/// Options of `serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Run the jobs that are due now, then exit (for cron or a systemd timer).
    #[arg(long)]
    pub once: bool,
    /// Serve Prometheus /metrics and /healthz on this loopback address, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Longest time between looks at the repository for due or changed jobs.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub poll: Duration,
    /// When to collect the repository's garbage (a cron schedule in UTC, as a job's), or
    /// `off`. Several daemons share it: one at a time runs it.
    #[arg(long, default_value = "@daily", value_name = "CRON")]
    pub gc_schedule: String,
    /// gc keeps unreferenced chunks younger than this.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub gc_grace: Duration,
    /// `/healthz` answers 503 once the repository has been unreachable this long.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub unhealthy_after: Duration,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

/// Options of `run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The job's name.
    pub job: String,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

/// How a daemon starts: the settings `serve` and `run` share, and the ones only `serve` has.
struct Start<'a> {
    repo: &'a RepoArgs,
    args: &'a DaemonArgs,
    poll: Duration,
    once: bool,
    metrics: Metrics,
    health: Arc<Health>,
    gc: Option<GcSettings>,
    /// Retry while the repository or vSphere cannot be reached (`serve` without `--once`).
    retry: bool,
}

/// Whether a repository error may go away by waiting (the network, the server).
fn transient(e: &RepoError) -> bool {
    matches!(e, RepoError::Io { .. } | RepoError::Store { .. })
}

/// Whether a vSphere login error may go away by waiting (not credentials or a certificate).
fn transient_login(e: &ceso::vsphere::Error) -> bool {
    !matches!(
        e.kind,
        ErrorKind::Auth | ErrorKind::Tls | ErrorKind::Permission | ErrorKind::InvalidArgument
    )
}

/// Sleeps `wait` unless `cancel` fires first (then: interrupted).
async fn pause(wait: Duration, cancel: &CancellationToken) -> Result<(), Failure> {
    tokio::select! {
        () = tokio::time::sleep(wait) => Ok(()),
        () = cancel.cancelled() => Err(Failure::new(code::INTERRUPTED, "interrupted")),
    }
}

impl Start<'_> {
    async fn open_repository(&self, cancel: &CancellationToken) -> Result<Repository, Failure> {
        let (_, backend) = self.repo.backend()?;
        let key = self.repo.key()?;
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            match Repository::open(backend.clone(), key.clone()).await {
                Ok(r) => {
                    self.health.repository_ok();
                    self.metrics.repository_up.set(1);
                    return Ok(r);
                }
                Err(e) if self.retry && transient(&e) => {
                    let wait = backoff.failure();
                    tracing::error!(error = %e, retry_in_s = wait.as_secs(), "cannot open the repository; retrying");
                    self.health.repository_failed(&e.to_string());
                    self.metrics.repository_up.set(0);
                    self.metrics.error("repository");
                    pause(wait, cancel).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn connect(&self, cancel: &CancellationToken) -> Result<Arc<Client>, Failure> {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            match self.args.vsphere.login().await? {
                Ok(client) => return Ok(client),
                Err(e) if self.retry && transient_login(&e) => {
                    let wait = backoff.failure();
                    tracing::error!(error = %e, retry_in_s = wait.as_secs(), "cannot log in to vSphere; retrying");
                    self.metrics.error("vsphere");
                    pause(wait, cancel).await?;
                }
                Err(e) => {
                    return Err(Failure::new(
                        code::FAILURE,
                        format!("unable to log in to vSphere: {e}"),
                    ))
                }
            }
        }
    }

    /// The daemon, once the repository opens and vSphere lets it in.
    async fn daemon(self, cancel: &CancellationToken) -> Result<Daemon, Failure> {
        let args = self.args;
        let audit = match &args.audit_log {
            Some(p) => AuditLog::open(p).map_err(|e| {
                Failure::usage(format!("cannot open the audit log {}: {e}", p.display()))
            })?,
            None => AuditLog::none(),
        };
        // Leases as long as the daemon's, so a dead daemon's backups stop blocking prune soon;
        // prune and gc wait for running backups rather than failing (and hold new ones off).
        let repository = self
            .open_repository(cancel)
            .await?
            .with_lock_options(LockOptions {
                ttl: args.lease_ttl,
                wait: Duration::from_secs(900),
                clock_skew: args.clock_skew,
            });
        let client = self.connect(cancel).await?;
        client.keep_alive(Duration::from_secs(600));
        let endpoint_id = args
            .endpoint_name
            .clone()
            .or_else(|| args.vsphere.endpoint_id())
            .unwrap_or_default();
        let options = DaemonOptions {
            node: args
                .node
                .clone()
                .unwrap_or_else(ceso::engine::schedule::daemon::default_node),
            lease_ttl: args.lease_ttl,
            poll: self.poll,
            once: self.once,
            clock_skew: args.clock_skew,
            endpoint: args.endpoint_name.clone(),
            endpoint_id,
            hooks: Hooks::new(args.allow_hook.iter().cloned(), args.hook_timeout),
            gc: self.gc,
            health: self.health,
            max_backoff: Duration::from_secs(60).max(self.poll),
        };
        Ok(Daemon::new(
            Arc::new(repository),
            client,
            Arc::new(audit),
            self.metrics,
            options,
        ))
    }
}

/// `--gc-schedule`: a cron schedule (UTC) or `off`.
fn gc_settings(args: &ServeArgs) -> Result<Option<GcSettings>, Failure> {
    if args.gc_schedule.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let schedule = Schedule::parse(&args.gc_schedule, "UTC")
        .map_err(|e| Failure::usage(format!("--gc-schedule: {}", e.message)))?;
    Ok(Some(GcSettings {
        schedule,
        grace: args.gc_grace,
    }))
}

/// `ceso-backup serve`.
pub async fn serve(
    repo: &RepoArgs,
    args: ServeArgs,
    out: Output,
    cancel: &CancellationToken,
) -> Result<(), Failure> {
    let metrics = Metrics::new();
    let health = Arc::new(Health::new(args.unhealthy_after));
    let gc = gc_settings(&args)?;
    let server = match args.metrics_addr {
        Some(addr) => {
            let (m, h, stop) = (metrics.clone(), health.clone(), cancel.clone());
            // Checked now, so a bad address fails the start rather than a background task.
            Metrics::check_address(addr)
                .map_err(|e| Failure::usage(format!("--metrics-addr: {e}")))?;
            Some(tokio::spawn(async move { m.serve(addr, h, stop).await }))
        }
        None => None,
    };
    out.note(&format!(
        "serving backup jobs of {} as {}",
        repo.repo.as_deref().unwrap_or_default(),
        args.daemon.node.as_deref().unwrap_or("this host")
    ));
    let start = Start {
        repo,
        args: &args.daemon,
        poll: args.poll,
        once: args.once,
        metrics: metrics.clone(),
        health,
        gc,
        retry: !args.once,
    };
    let result = match start.daemon(cancel).await {
        Ok(d) => d.run(cancel.clone()).await.map_err(Failure::from),
        Err(f) => Err(f),
    };
    cancel.cancel();
    if let Some(s) = server {
        if let Ok(Err(e)) = s.await {
            return Err(Failure::new(1, format!("the metrics server failed: {e}")));
        }
    }
    result?;
    out.result("serve", json!({"stopped": true}), || "stopped".into());
    Ok(())
}

/// `ceso-backup run JOB`: the job now, under its lease, whatever its schedule says.
pub async fn run(
    repo: &RepoArgs,
    args: RunArgs,
    out: Output,
    cancel: &CancellationToken,
) -> Result<(), Failure> {
    let d = Start {
        repo,
        args: &args.daemon,
        poll: Duration::from_secs(15),
        once: true,
        metrics: Metrics::new(),
        health: Arc::default(),
        gc: None,
        retry: false,
    }
    .daemon(cancel)
    .await?;
    let store = d.store().clone();
    let spec = store
        .job(&args.job)
        .await?
        .ok_or_else(|| Failure::usage(format!("no job named {:?} in the repository", args.job)))?;
    let lease = store
        .try_lease(
            &spec.name,
            &d.options().node,
            args.daemon.lease_ttl,
            args.daemon.clock_skew,
        )
        .await?
        .ok_or_else(|| {
            Failure::new(
                code::BUSY,
                format!("job {:?} is running on another daemon", spec.name),
            )
        })?;
    let outcome = d.run_job(spec.clone(), lease, cancel).await;
    let status = store.status(&spec.name).await?;
    let run = status.last_run.clone();
    out.result("run", json!({"job": spec.name, "last_run": run}), || {
        format!(
            "job {}: {} backups, {} read{}",
            spec.name,
            outcome.backups,
            human_bytes(outcome.bytes),
            run.as_ref()
                .and_then(|r| r.error.as_ref())
                .map(|e| format!("; errors: {e}"))
                .unwrap_or_default()
        )
    });
    match run.map(|r| r.status) {
        Some(RunStatus::Succeeded) => Ok(()),
        Some(RunStatus::Aborted) => Err(Failure::new(code::INTERRUPTED, "interrupted")),
        _ => Err(Failure::new(
            code::FAILURE,
            format!("job {} failed", spec.name),
        )),
    }
}

/// `ceso-backup jobs`: every job with its schedule, next and last run. With the key of an
/// encrypted repository, definitions that fail authentication are shown as refused.
pub async fn list(repo: &RepoArgs, out: Output) -> Result<(), Failure> {
    let (_, backend) = repo.backend()?;
    let store = match Repository::open(backend.clone(), repo.key()?).await {
        Ok(r) => JobStore::for_repository(&r),
        Err(RepoError::KeyRequired) => JobStore::new(backend),
        Err(e) => return Err(e.into()),
    };
    let mut rows = Vec::new();
    let mut lines = Vec::new();
    for job in store.jobs().await? {
        match job {
            Ok(spec) => {
                let status = store.status(&spec.name).await?;
                let next = spec.enabled.then(|| next_run(&spec, &status)).flatten();
                let last = status.last_run.as_ref();
                lines.push(format!(
                    "{:<24} {:<20} next {:<25} last {}",
                    spec.name,
                    spec.schedule,
                    next.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into()),
                    last.map(|r| format!("{} at {}", r.status.as_str(), r.started.to_rfc3339()))
                        .unwrap_or_else(|| "never".into())
                ));
                rows.push(json!({"job": spec, "next_run": next, "status": status}));
            }
            Err((key, e)) => {
                lines.push(format!("{key}: refused ({e})"));
                rows.push(json!({"key": key, "error": e.to_string()}));
            }
        }
    }
    out.result("jobs", json!({"jobs": rows}), || {
        if lines.is_empty() {
            "no jobs".into()
        } else {
            lines.join("\n")
        }
    });
    Ok(())
}
