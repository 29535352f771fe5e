//! The scheduler: finds due jobs in the repository, takes each one's lease, backs up its VMs,
//! applies its retention, optionally verifies, records the run (status object, audit log,
//! metrics, failure hooks) and gives the lease back. Several daemons may share a repository;
//! the leases keep each job to one of them at a time.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::engine::backup::hot::{backup_vm, no_progress, BackupOptions};
use crate::engine::backup::{PruneOptions, Repository, VerifyOptions};
use crate::vsphere::Client;

use super::audit::{AuditEvent, AuditLog};
use super::job::{next_run, JobSpec, LastRun, Mode, RunStatus};
use super::metrics::{JobLabels, Metrics, RunLabels};
use super::store::JobStore;

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
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// One VM's backup in a run: the backup id and bytes read, `None` when skipped, or why it
/// failed.
type VmResult = Result<Option<(String, u64)>, String>;

/// What a daemon works with.
pub struct Daemon {
    repo: Arc<Repository>,
    store: JobStore,
    client: Arc<Client>,
    audit: Arc<AuditLog>,
    metrics: Metrics,
    options: DaemonOptions,
    /// When the repository's size was last counted (a listing of every chunk: not after every
    /// run of a busy daemon on a large repository).
    sized_at: std::sync::Mutex<Option<Instant>>,
}

/// How often at most the repository's chunks are listed to report its size.
const SIZE_EVERY: Duration = Duration::from_secs(600);

/// What one run did, for its status and the audit log.
#[derive(Debug, Default)]
pub struct RunOutcome {
    /// Backups committed.
    pub backups: u32,
    /// Bytes read.
    pub bytes: u64,
    /// VMs that failed, with why.
    pub failures: Vec<(String, String)>,
    /// VMs skipped (powered on in `powered_off_only` mode).
    pub skipped: Vec<String>,
    /// Stopped before the end.
    pub aborted: bool,
}

impl Daemon {
    /// A daemon over an opened repository and a logged-in vSphere client.
    pub fn new(
        repo: Arc<Repository>,
        client: Arc<Client>,
        audit: Arc<AuditLog>,
        metrics: Metrics,
        options: DaemonOptions,
    ) -> Self {
        let store = JobStore::new(repo.backend().clone());
        Self {
            repo,
            store,
            client,
            audit,
            metrics,
            options,
            sized_at: std::sync::Mutex::new(None),
        }
    }

    fn audit(
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

    /// Runs due jobs until `stop` (or once, with `once`). A run in progress when `stop` fires
    /// is cancelled cleanly: its snapshot is removed and nothing half-done is committed.
    pub async fn run(&self, stop: CancellationToken) -> crate::engine::backup::Result<()> {
        let mut running = futures::stream::FuturesUnordered::new();
        let mut active: BTreeSet<String> = BTreeSet::new();
        // Definitions as last seen, to audit changes made by others (Terraform).
        let mut seen: Option<std::collections::BTreeMap<String, JobSpec>> = None;
        let mut statuses: std::collections::BTreeMap<String, crate::engine::schedule::JobStatus> =
            std::collections::BTreeMap::new();
        loop {
            let jobs = self.store.jobs().await?;
            self.metrics.jobs.set(jobs.len() as i64);
            let now_seen: std::collections::BTreeMap<String, JobSpec> = jobs
                .iter()
                .filter_map(|j| j.as_ref().ok())
                .map(|j| (j.name.clone(), j.clone()))
                .collect();
            if let Some(before) = &seen {
                self.audit_changes(before, &now_seen);
            }
            seen = Some(now_seen);
            let mut wake = Instant::now() + self.options.poll;
            for job in jobs {
                let spec = match job {
                    Ok(s) => s,
                    Err((key, e)) => {
                        tracing::warn!(%key, error = %e, "skipping an unreadable job definition");
                        continue;
                    }
                };
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
                let cached = statuses
                    .get(&spec.name)
                    .and_then(|st| next_run(&spec, st))
                    .filter(|next| *next > now);
                let next = match cached {
                    Some(next) => next,
                    None => {
                        let status = self.store.status(&spec.name).await?;
                        let next = next_run(&spec, &status);
                        statuses.insert(spec.name.clone(), status);
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
                let Some(lease) = self
                    .store
                    .try_lease(
                        &spec.name,
                        &self.options.node,
                        self.options.lease_ttl,
                        self.options.clock_skew,
                    )
                    .await?
                else {
                    continue; // another daemon runs it
                };
                active.insert(spec.name.clone());
                let stop = &stop;
                running.push(async move {
                    let name = spec.name.clone();
                    self.run_job(spec, lease, stop).await;
                    name
                });
            }
            if self.options.once {
                while running.next().await.is_some() {}
                return Ok(());
            }
            tokio::select! {
                _ = stop.cancelled() => {
                    tracing::info!("stopping: waiting for running jobs to clean up");
                    while running.next().await.is_some() {}
                    return Ok(());
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
                Some(name) = running.next(), if !running.is_empty() => {
                    active.remove(&name);
                }
            }
        }
    }

    /// Audit records for definitions added, changed or removed since the last look.
    fn audit_changes(
        &self,
        before: &std::collections::BTreeMap<String, JobSpec>,
        now: &std::collections::BTreeMap<String, JobSpec>,
    ) {
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

    /// Runs one job now under `lease` (`ceso-backup run` and the schedule both come here).
    pub async fn run_job(
        &self,
        spec: JobSpec,
        mut lease: super::store::JobLease,
        stop: &CancellationToken,
    ) -> RunOutcome {
        let started = Utc::now();
        let clock = Instant::now();
        let name = spec.name.clone();
        self.audit(
            "run.start",
            Some(&name),
            None,
            "ok",
            json!({"lease": lease.generation()}),
        );
        // The run stops when the daemon stops or the lease is lost.
        let cancel = stop.child_token();
        let renew = {
            let (store, cancel, ttl) = (self.store.clone(), cancel.clone(), self.options.lease_ttl);
            let mut held = lease.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return held,
                        _ = tokio::time::sleep(ttl / 3) => {}
                    }
                    if let Err(e) = store.renew(&mut held, ttl).await {
                        tracing::warn!(error = %e, "lost the job's lease: stopping the run");
                        cancel.cancel();
                        return held;
                    }
                }
            })
        };
        let outcome = self.backup_all(&spec, &cancel).await;
        let aborted = cancel.is_cancelled();
        cancel.cancel();
        if let Ok(held) = renew.await {
            lease = held;
        }
        let mut outcome = RunOutcome { aborted, ..outcome };
        if !aborted && outcome.backups > 0 {
            self.apply_retention(&spec, &mut outcome).await;
            if spec.verify_after {
                self.verify(&name, &mut outcome).await;
            }
        }
        let status = if outcome.aborted {
            RunStatus::Aborted
        } else if outcome.failures.is_empty() {
            RunStatus::Succeeded
        } else if outcome.backups > 0 {
            RunStatus::Partial
        } else {
            RunStatus::Failed
        };
        let error = (!outcome.failures.is_empty()).then(|| {
            outcome
                .failures
                .iter()
                .map(|(vm, e)| format!("{vm}: {e}"))
                .collect::<Vec<_>>()
                .join("; ")
        });
        let finished = Utc::now();
        let mut st = self.store.status(&name).await.unwrap_or_default();
        st.last_run = Some(LastRun {
            started,
            finished,
            status,
            backups: outcome.backups,
            bytes: outcome.bytes,
            node: self.options.node.clone(),
            error: error.clone(),
        });
        if status == RunStatus::Succeeded {
            st.last_success = Some(finished);
        }
        if let Err(e) = self.store.put_status(&name, &st).await {
            tracing::warn!(job = %name, error = %e, "cannot record the run's status");
        }
        let labels = JobLabels { job: name.clone() };
        self.metrics
            .runs
            .get_or_create(&RunLabels {
                job: name.clone(),
                status: status.as_str().into(),
            })
            .inc();
        self.metrics
            .bytes
            .get_or_create(&labels)
            .inc_by(outcome.bytes);
        self.metrics
            .duration
            .get_or_create(&labels)
            .set(clock.elapsed().as_secs_f64());
        if let Some(t) = st.last_success {
            self.metrics
                .last_success
                .get_or_create(&labels)
                .set(t.timestamp());
        }
        self.update_repository_size().await;
        self.audit(
            "run.finish",
            Some(&name),
            None,
            status.as_str(),
            json!({"backups": outcome.backups, "bytes": outcome.bytes, "skipped": outcome.skipped, "error": error}),
        );
        if matches!(status, RunStatus::Failed | RunStatus::Partial) {
            self.notify_failure(&spec, status, error.as_deref().unwrap_or_default())
                .await;
        }
        if let Err(e) = self.store.release(lease).await {
            tracing::warn!(job = %name, error = %e, "cannot release the job's lease (it will expire)");
        }
        outcome
    }

    /// The VMs a job names now: its ids, the VMs whose name matches its pattern, and the VMs
    /// carrying any of its tags; each once.
    async fn resolve(&self, spec: &JobSpec) -> Result<Vec<(String, String)>, String> {
        let mut names: Vec<String> = spec.vm_ids.clone();
        if let Some(pattern) = &spec.vm_name_regex {
            let re = regex::Regex::new(pattern).map_err(|e| e.to_string())?;
            let all = self
                .client
                .retrieve_all("VirtualMachine", &["name", "config.template"])
                .await
                .map_err(|e| e.message)?;
            let mut matched: Vec<String> = all
                .iter()
                .filter(|o| o.bool("config.template") != Some(true))
                .filter_map(|o| o.text("name").map(str::to_string))
                .filter(|n| re.is_match(n))
                .collect();
            matched.sort();
            names.extend(matched);
        }
        if !spec.tags.is_empty() {
            let tagged = self
                .client
                .objects_with_tags(&spec.tags)
                .await
                .map_err(|e| format!("tags: {}", e.message))?;
            // Their names, read together (concurrent reads coalesce into one round trip).
            let vms: Vec<_> = tagged
                .into_iter()
                .filter(|o| o.kind == "VirtualMachine")
                .collect();
            let reads = vms.iter().map(|vm| self.client.read_batched(vm, &["name"]));
            let mut matched: Vec<String> = futures::future::join_all(reads)
                .await
                .into_iter()
                .zip(&vms)
                .map(|(r, vm)| {
                    r.ok()
                        .and_then(|o| o.text("name").map(str::to_string))
                        .unwrap_or_else(|| vm.value.clone())
                })
                .collect();
            matched.sort();
            names.extend(matched);
        }
        let mut seen = BTreeSet::new();
        names.retain(|n| seen.insert(n.clone()));
        Ok(names.into_iter().map(|n| (n, String::new())).collect())
    }

    async fn backup_all(&self, spec: &JobSpec, cancel: &CancellationToken) -> RunOutcome {
        let mut outcome = RunOutcome::default();
        let vms = match self.resolve(spec).await {
            Ok(v) => v,
            Err(e) => {
                outcome.failures.push(("(selection)".into(), e));
                return outcome;
            }
        };
        let results: Vec<(String, VmResult)> = futures::stream::iter(vms)
            .map(|(vm, _)| async move {
                let r = self.backup_one(spec, &vm, cancel).await;
                (vm, r)
            })
            .buffer_unordered(spec.max_parallel.max(1) as usize)
            .collect()
            .await;
        for (vm, r) in results {
            match r {
                Ok(Some((backup, bytes))) => {
                    outcome.backups += 1;
                    outcome.bytes += bytes;
                    self.audit(
                        "backup",
                        Some(&spec.name),
                        Some(&vm),
                        "ok",
                        json!({"backup": backup, "bytes_read": bytes}),
                    );
                }
                Ok(None) => {
                    outcome.skipped.push(vm.clone());
                    self.audit(
                        "backup",
                        Some(&spec.name),
                        Some(&vm),
                        "skipped",
                        json!({"reason": "powered on (powered_off_only)"}),
                    );
                }
                Err(e) => {
                    self.audit(
                        "backup",
                        Some(&spec.name),
                        Some(&vm),
                        "failed",
                        json!({"error": e}),
                    );
                    outcome.failures.push((vm, e));
                }
            }
        }
        outcome
    }

    /// Backs up one VM as the job's mode says; `None` when it is skipped.
    async fn backup_one(&self, spec: &JobSpec, vm: &str, cancel: &CancellationToken) -> VmResult {
        if spec.mode != Mode::Snapshot {
            let obj = crate::engine::backup::hot::snapshot::find_vm(&self.client, vm)
                .await
                .map_err(|e| e.to_string())?;
            let power = self
                .client
                .properties(&obj, &["runtime.powerState"])
                .await
                .map_err(|e| e.message)?;
            let on = power.text("runtime.powerState") == Some("poweredOn");
            match spec.mode {
                Mode::PoweredOffOnly if on => return Ok(None),
                Mode::Quiesce
                    if on
                        && !crate::engine::backup::hot::snapshot::tools_running(
                            &self.client,
                            &obj,
                        )
                        .await =>
                {
                    return Err(
                        "quiesce mode needs VMware Tools running in the guest, and they are not"
                            .into(),
                    );
                }
                _ => {}
            }
        }
        let mut options = BackupOptions::new(vm);
        options.max_rate = spec.max_rate;
        let report = backup_vm(&self.client, &self.repo, &options, &no_progress(), cancel)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Some((report.backup.to_string(), report.bytes_read)))
    }

    /// Prunes each of the job's VMs to its retention.
    async fn apply_retention(&self, spec: &JobSpec, outcome: &mut RunOutcome) {
        let Ok(list) = self.repo.list().await else {
            return;
        };
        let wanted: BTreeSet<&str> = spec.vm_ids.iter().map(String::as_str).collect();
        let re = spec
            .vm_name_regex
            .as_deref()
            .and_then(|p| regex::Regex::new(p).ok());
        let mut uuids: Vec<(String, String)> = list
            .iter()
            .filter(|b| {
                wanted.contains(b.vm.name.as_str())
                    || wanted.contains(b.vm.uuid.as_str())
                    || re.as_ref().is_some_and(|r| r.is_match(&b.vm.name))
            })
            .map(|b| (b.vm.uuid.clone(), b.vm.name.clone()))
            .collect();
        uuids.sort();
        uuids.dedup();
        for (uuid, vm) in uuids {
            let options = PruneOptions {
                policy: spec.retention.policy(),
                vm_uuid: Some(uuid),
                dry_run: false,
            };
            match self.repo.prune(options).await {
                Ok(report) => {
                    let removed = report.removed;
                    self.audit(
                        "prune",
                        Some(&spec.name),
                        Some(&vm),
                        "ok",
                        json!({"removed": removed}),
                    );
                }
                Err(e) => {
                    self.audit(
                        "prune",
                        Some(&spec.name),
                        Some(&vm),
                        "failed",
                        json!({"error": e.to_string()}),
                    );
                    outcome.failures.push((vm, format!("retention: {e}")));
                }
            }
        }
    }

    async fn verify(&self, job: &str, outcome: &mut RunOutcome) {
        match self.repo.verify(VerifyOptions { sample: None }).await {
            Ok(report) if report.is_ok() => {
                self.audit("verify", Some(job), None, "ok", serde_json::Value::Null);
            }
            Ok(report) => {
                let problems = report.problems.len();
                self.audit(
                    "verify",
                    Some(job),
                    None,
                    "failed",
                    json!({"problems": problems}),
                );
                outcome
                    .failures
                    .push(("(verify)".into(), format!("{problems} damaged chunks")));
            }
            Err(e) => {
                self.audit(
                    "verify",
                    Some(job),
                    None,
                    "failed",
                    json!({"error": e.to_string()}),
                );
                outcome.failures.push(("(verify)".into(), e.to_string()));
            }
        }
    }

    async fn update_repository_size(&self) {
        {
            let mut at = self.sized_at.lock().unwrap_or_else(|p| p.into_inner());
            if at.is_some_and(|t| t.elapsed() < SIZE_EVERY) {
                return;
            }
            *at = Some(Instant::now());
        }
        let size: Result<u64, _> = self
            .repo
            .backend()
            .list("chunks/")
            .try_fold(0u64, |acc, m| async move { Ok(acc + m.size) })
            .await;
        if let Ok(bytes) = size {
            self.metrics.repository_bytes.set(bytes as i64);
        }
    }

    /// Runs the job's failure command and webhook; their own failures are logged only.
    async fn notify_failure(&self, spec: &JobSpec, status: RunStatus, error: &str) {
        if let Some(cmd) = &spec.on_failure_command {
            let run = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .env("CESO_JOB", &spec.name)
                .env("CESO_STATUS", status.as_str())
                .env("CESO_ERROR", error)
                .status();
            match tokio::time::timeout(Duration::from_secs(300), run).await {
                Ok(Ok(s)) if s.success() => {}
                other => {
                    tracing::warn!(job = %spec.name, result = ?other, "the on_failure_command failed")
                }
            }
        }
        if let Some(url) = &spec.on_failure_webhook {
            let body = json!({"job": spec.name, "status": status.as_str(), "error": error, "node": self.options.node});
            let sent = reqwest::Client::new()
                .post(url)
                .timeout(Duration::from_secs(30))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string())
                .send()
                .await;
            if let Err(e) = sent.and_then(|r| r.error_for_status()) {
                tracing::warn!(job = %spec.name, error = %e, "the failure webhook failed");
            }
        }
    }
}

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
