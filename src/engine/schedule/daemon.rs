//! The scheduler loop: finds due jobs in the repository, takes each one's lease and starts its
//! run ([`super::run`]), starts the repository-wide gc when it is due ([`super::gc`]), and keeps
//! going whatever fails. Several daemons may share a repository; the leases keep each job (and
//! gc) to one of them at a time.
//!
//! Architecture invariant: the loop only ends on `stop` (or after one pass with `once`). A
//! repository, S3 or vSphere error is logged, counted and retried with back-off; runs in
//! progress keep going meanwhile, and on `stop` they are cancelled cleanly (snapshots removed,
//! nothing half-done committed) before the loop returns.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::engine::backup::Repository;
use crate::vsphere::Client;

use super::audit::{AuditEvent, AuditLog};
use super::gc::GcSettings;
use super::health::{Backoff, Health};
use super::hooks::Hooks;
use super::job::{next_run, JobSpec, JobStatus};
use super::metrics::Metrics;
use super::store::{JobLease, JobStore};

/// How a daemon runs.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// This daemon's name in leases, statuses and the audit log.
    pub node: String,
    /// How long a run's lease lasts without renewal (renewed every third of it).
    pub lease_ttl: Duration,
    /// Longest sleep between looks at the repository (job changes are seen this late at most).
    pub poll: Duration,
    /// Run the jobs due now, then exit.
    pub once: bool,
    /// Clock difference tolerated between daemons: another's lease counts as lapsed only this
    /// long after it expires.
    pub clock_skew: Duration,
    /// The vSphere endpoint this daemon reaches: it runs jobs naming it and jobs naming none.
    pub endpoint: Option<String>,
    /// What manifests record as the endpoint their VMs were read from: `endpoint` when given,
    /// else the vSphere server's host name. A job's retention prunes only its backups made
    /// from this endpoint.
    pub endpoint_id: String,
    /// The hooks this daemon allows jobs to name.
    pub hooks: Hooks,
    /// The repository-wide gc, when this daemon schedules it.
    pub gc: Option<GcSettings>,
    /// Reachability of the repository, shared with `/healthz`.
    pub health: Arc<Health>,
    /// Longest wait between attempts while the repository fails.
    pub max_backoff: Duration,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            node: default_node(),
            lease_ttl: Duration::from_secs(60),
            poll: Duration::from_secs(15),
            once: false,
            clock_skew: Duration::from_secs(30),
            endpoint: None,
            endpoint_id: String::new(),
            hooks: Hooks::default(),
            gc: None,
            health: Arc::default(),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Whether a daemon reaching vSphere endpoint `endpoint` runs `spec`: jobs naming no endpoint
/// run anywhere, the others only where their endpoint is.
pub fn runs_here(spec: &JobSpec, endpoint: Option<&str>) -> bool {
    spec.endpoint.as_deref().is_none_or(|e| Some(e) == endpoint)
}

/// `host:pid`, a name that differs between daemons.
pub fn default_node() -> String {
    format!("{}:{}", crate::machine::host_name(), std::process::id())
}

/// What a daemon works with.
pub struct Daemon {
    pub(super) repo: Arc<Repository>,
    pub(super) store: JobStore,
    pub(super) client: Arc<Client>,
    pub(super) audit: Arc<AuditLog>,
    pub(super) metrics: Metrics,
    pub(super) options: DaemonOptions,
    /// When the repository's size was last counted (a listing of every chunk: not after every
    /// run of a busy daemon on a large repository).
    pub(super) sized_at: std::sync::Mutex<Option<Instant>>,
    /// When the daemon started (the anchor of gc's schedule before any gc ran).
    pub(super) started: chrono::DateTime<Utc>,
}

/// One pass over the repository: the runs to start and when to look next.
struct Look {
    due: Vec<(JobSpec, JobLease)>,
    gc: Option<JobLease>,
    wake: Instant,
}

/// What the loop remembers between looks.
#[derive(Default)]
struct Memory {
    /// Definitions as last seen, to audit changes made by others (Terraform).
    seen: Option<BTreeMap<String, JobSpec>>,
    /// Definitions refused as last seen (unreadable, unauthenticated), to log each once.
    refused: BTreeMap<String, String>,
    /// Statuses as last read.
    statuses: BTreeMap<String, JobStatus>,
}

type Task<'a> = Pin<Box<dyn Future<Output = String> + 'a>>;

impl Daemon {
    /// A daemon over an opened repository and a logged-in vSphere client.
    pub fn new(
        repo: Arc<Repository>,
        client: Arc<Client>,
        audit: Arc<AuditLog>,
        metrics: Metrics,
        options: DaemonOptions,
    ) -> Self {
        let store = JobStore::for_repository(&repo);
        Self {
            repo,
            store,
            client,
            audit,
            metrics,
            options,
            sized_at: std::sync::Mutex::new(None),
            started: Utc::now(),
        }
    }

    /// The daemon's options.
    pub fn options(&self) -> &DaemonOptions {
        &self.options
    }

    /// The job store it reads (authenticated when the repository is encrypted).
    pub fn store(&self) -> &JobStore {
        &self.store
    }

    pub(super) fn audit(
        &self,
        action: &str,
        job: Option<&str>,
        vm: Option<&str>,
        result: &str,
        detail: serde_json::Value,
    ) {
        self.audit.record(&AuditEvent {
            time: Utc::now(),
            actor: &self.options.node,
            action,
            job,
            vm,
            result,
            detail,
        });
    }

    /// Logs and counts a repository error the daemon survives.
    pub(super) fn repository_error(&self, what: &str, error: &crate::engine::backup::Error) {
        tracing::error!(error = %error, "cannot {what}; retrying");
        self.metrics.error("repository");
        self.options.health.repository_failed(&error.to_string());
        self.metrics.repository_up.set(0);
    }

    fn repository_ok(&self) {
        self.options.health.repository_ok();
        self.metrics.repository_up.set(1);
    }

    /// Runs due jobs (and gc) until `stop`, or once with `once`. Runs in progress when `stop`
    /// fires are cancelled cleanly: their snapshots are removed and nothing half-done is
    /// committed. Only `once` returns an error (a failed look at the repository), after the
    /// runs it started have finished.
    pub async fn run(&self, stop: CancellationToken) -> crate::engine::backup::Result<()> {
        let mut running: FuturesUnordered<Task<'_>> = FuturesUnordered::new();
        let mut active: BTreeSet<String> = BTreeSet::new();
        let mut memory = Memory::default();
        let mut backoff = Backoff::new(Duration::from_secs(1), self.options.max_backoff);
        let stop = &stop;
        loop {
            // Look at the repository while runs keep going.
            let mut finished = Vec::new();
            let looked = {
                let look = self.look(&mut memory, &active);
                tokio::pin!(look);
                loop {
                    tokio::select! {
                        r = &mut look => break Some(r),
                        () = stop.cancelled() => break None,
                        Some(name) = running.next(), if !running.is_empty() => finished.push(name),
                    }
                }
            };
            for name in finished {
                active.remove(&name);
            }
            let wake = match looked {
                None => Instant::now(), // stopping
                Some(Ok(look)) => {
                    self.repository_ok();
                    backoff.reset();
                    for (spec, lease) in look.due {
                        active.insert(spec.name.clone());
                        running.push(Box::pin(async move {
                            let name = spec.name.clone();
                            self.run_job(spec, lease, stop).await;
                            name
                        }));
                    }
                    if let Some(lease) = look.gc {
                        active.insert(GC_TASK.into());
                        running.push(Box::pin(async move {
                            self.run_gc(lease, stop).await;
                            GC_TASK.to_string()
                        }));
                    }
                    look.wake
                }
                Some(Err(e)) => {
                    self.repository_error("read the jobs from the repository", &e);
                    if self.options.once {
                        while running.next().await.is_some() {}
                        return Err(e);
                    }
                    Instant::now() + backoff.failure()
                }
            };
            if self.options.once {
                while running.next().await.is_some() {}
                return Ok(());
            }
            tokio::select! {
                () = stop.cancelled() => {
                    tracing::info!("stopping: waiting for running jobs to clean up");
                    while running.next().await.is_some() {}
                    return Ok(());
                }
                () = tokio::time::sleep_until(wake.into()) => {}
                Some(name) = running.next(), if !running.is_empty() => {
                    active.remove(&name);
                }
            }
        }
    }

    /// Reads the jobs, audits changes, and takes the leases of the due ones (and of gc).
    async fn look(
        &self,
        memory: &mut Memory,
        active: &BTreeSet<String>,
    ) -> crate::engine::backup::Result<Look> {
        let jobs = self.store.jobs().await?;
        self.metrics.jobs.set(jobs.len() as i64);
        let mut now_seen = BTreeMap::new();
        let mut refused = BTreeMap::new();
        let mut specs = Vec::new();
        for job in jobs {
            match job {
                Ok(spec) => {
                    now_seen.insert(spec.name.clone(), spec.clone());
                    specs.push(spec);
                }
                Err((key, e)) => {
                    let why = e.to_string();
                    if memory.refused.get(&key) != Some(&why) {
                        tracing::warn!(%key, error = %why, "refusing a job definition");
                        self.audit(
                            "job.refused",
                            None,
                            None,
                            "refused",
                            json!({"key": key, "error": why}),
                        );
                    }
                    refused.insert(key, why);
                }
            }
        }
        memory.refused = refused;
        if let Some(before) = &memory.seen {
            self.audit_changes(before, &now_seen);
        }
        for spec in now_seen.values() {
            if memory.seen.as_ref().and_then(|s| s.get(&spec.name)) != Some(spec) {
                self.warn_about_hooks(spec);
            }
        }
        memory.seen = Some(now_seen);

        let mut wake = Instant::now() + self.options.poll;
        let mut due = Vec::new();
        for spec in specs {
            if !spec.enabled
                || !runs_here(&spec, self.options.endpoint.as_deref())
                || active.contains(&spec.name)
                || !spec.validate().is_empty()
            {
                continue;
            }
            // A status seen before can only be older than the repository's (runs move the
            // next time later), so a job it shows as not due yet is not due: its status is
            // read again only when it may be.
            let now = Utc::now();
            let cached = memory
                .statuses
                .get(&spec.name)
                .and_then(|st| next_run(&spec, st))
                .filter(|next| *next > now);
            let next = match cached {
                Some(next) => next,
                None => {
                    let status = self.store.status(&spec.name).await?;
                    let next = next_run(&spec, &status);
                    memory.statuses.insert(spec.name.clone(), status);
                    let Some(next) = next else {
                        continue;
                    };
                    next
                }
            };
            if next > now {
                let wait = (next - now).to_std().unwrap_or_default();
                wake = wake.min(Instant::now() + wait);
                continue;
            }
            let lease = self
                .store
                .try_lease(
                    &spec.name,
                    &self.options.node,
                    self.options.lease_ttl,
                    self.options.clock_skew,
                )
                .await?;
            if let Some(lease) = lease {
                due.push((spec, lease));
            } // else another daemon runs it
        }
        let gc = match &self.options.gc {
            Some(settings) if !active.contains(GC_TASK) => {
                self.gc_lease_if_due(settings, &mut wake).await?
            }
            _ => None,
        };
        Ok(Look { due, gc, wake })
    }

    /// Warns once per definition change about hooks this daemon will not run.
    fn warn_about_hooks(&self, spec: &JobSpec) {
        if spec.on_failure_command.is_some() {
            tracing::warn!(job = %spec.name,
                "the job has an on_failure_command, which daemons no longer run; name a hook the daemon allows with on_failure_hook (serve --allow-hook NAME=COMMAND)");
        }
        if let Some(hook) = &spec.on_failure_hook {
            if !self.options.hooks.names().any(|n| n == hook) {
                tracing::warn!(job = %spec.name, %hook,
                    "the job names a hook this daemon does not allow (serve --allow-hook NAME=COMMAND); it will not run");
            }
        }
    }

    /// Audit records for definitions added, changed or removed since the last look.
    fn audit_changes(&self, before: &BTreeMap<String, JobSpec>, now: &BTreeMap<String, JobSpec>) {
        for (name, spec) in now {
            if before.get(name) != Some(spec) {
                self.audit(
                    "job.put",
                    Some(name),
                    None,
                    "ok",
                    json!({"by": spec.updated_by, "at": spec.updated_at, "schedule": spec.schedule, "enabled": spec.enabled}),
                );
            }
        }
        for name in before.keys().filter(|n| !now.contains_key(*n)) {
            self.audit(
                "job.delete",
                Some(name),
                None,
                "ok",
                serde_json::Value::Null,
            );
        }
    }
}

/// The name gc runs under in the loop's set of active runs (job names cannot start with `.`).
const GC_TASK: &str = ".gc";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_where_their_endpoint_is() {
        let mut spec = JobSpec::default();
        assert!(runs_here(&spec, None));
        assert!(runs_here(&spec, Some("esx-01")));
        spec.endpoint = Some("esx-01".into());
        assert!(runs_here(&spec, Some("esx-01")));
        assert!(!runs_here(&spec, Some("esx-02")));
        assert!(!runs_here(&spec, None));
    }
}
