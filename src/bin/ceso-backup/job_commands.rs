//! `serve` (the scheduler daemon), `jobs` (list with next and last run) and `run JOB` (one job
//! now, out of band).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use ceso::engine::backup::LockOptions;
use ceso::engine::schedule::job::next_run;
use ceso::engine::schedule::{AuditLog, Daemon, DaemonOptions, JobStore, Metrics, RunStatus};

use crate::failure::Failure;
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

async fn daemon(
    repo: &RepoArgs,
    args: &DaemonArgs,
    poll: Duration,
    once: bool,
    metrics: Metrics,
) -> Result<Daemon, Failure> {
    // Leases as long as the daemon's, so a dead daemon's backups stop blocking prune soon; prune
    // waits for running backups rather than failing.
    let repository = Arc::new(repo.open().await?.with_lock_options(LockOptions {
        ttl: args.lease_ttl,
        wait: Duration::from_secs(900),
        clock_skew: args.clock_skew,
    }));
    let client = args.vsphere.connect().await?;
    client.keep_alive(Duration::from_secs(600));
    let audit = match &args.audit_log {
        Some(p) => AuditLog::open(p).map_err(|e| {
            Failure::usage(format!("cannot open the audit log {}: {e}", p.display()))
        })?,
        None => AuditLog::none(),
    };
    let options = DaemonOptions {
        node: args
            .node
            .clone()
            .unwrap_or_else(ceso::engine::schedule::daemon::default_node),
        lease_ttl: args.lease_ttl,
        poll,
        once,
        clock_skew: args.clock_skew,
        endpoint: args.endpoint_name.clone(),
    };
    Ok(Daemon::new(
        repository,
        client,
        Arc::new(audit),
        metrics,
        options,
    ))
}

/// `ceso-backup serve`.
pub async fn serve(
    repo: &RepoArgs,
    args: ServeArgs,
    out: Output,
    cancel: &CancellationToken,
) -> Result<(), Failure> {
    let metrics = Metrics::new();
    let d = daemon(repo, &args.daemon, args.poll, args.once, metrics.clone()).await?;
    let server = match args.metrics_addr {
        Some(addr) => {
            let (m, stop) = (metrics.clone(), cancel.clone());
            // Checked now, so a bad address fails the start rather than a background task.
            Metrics::check_address(addr)
                .map_err(|e| Failure::usage(format!("--metrics-addr: {e}")))?;
            Some(tokio::spawn(async move { m.serve(addr, stop).await }))
        }
        None => None,
    };
    out.note(&format!(
        "serving backup jobs of {} as {}",
        repo.repo.as_deref().unwrap_or_default(),
        args.daemon.node.as_deref().unwrap_or("this host")
    ));
    let result = d.run(cancel.clone()).await;
    cancel.cancel();
    if let Some(s) = server {
        if let Ok(Err(e)) = s.await {
            return Err(Failure::new(1, format!("the metrics server failed: {e}")));
        }
    }
    result.map_err(Failure::from)?;
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
    let d = daemon(
        repo,
        &args.daemon,
        Duration::from_secs(15),
        true,
        Metrics::new(),
    )
    .await?;
    let (_, backend) = repo.backend()?;
    let store = JobStore::new(backend);
    let spec = store
        .job(&args.job)
        .await?
        .ok_or_else(|| Failure::usage(format!("no job named {:?} in the repository", args.job)))?;
    let node = args
        .daemon
        .node
        .clone()
        .unwrap_or_else(ceso::engine::schedule::daemon::default_node);
    let lease = store
        .try_lease(
            &spec.name,
            &node,
            args.daemon.lease_ttl,
            args.daemon.clock_skew,
        )
        .await?
        .ok_or_else(|| {
            Failure::new(
                5,
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
        Some(RunStatus::Aborted) => Err(Failure::new(130, "interrupted")),
        _ => Err(Failure::new(1, format!("job {} failed", spec.name))),
    }
}

/// `ceso-backup jobs`: every job with its schedule, next and last run.
pub async fn list(repo: &RepoArgs, out: Output) -> Result<(), Failure> {
    let (_, backend) = repo.backend()?;
    let store = JobStore::new(backend);
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
                lines.push(format!("{key}: unreadable ({e})"));
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
