//! One run of a job, under its lease: resolve the VMs, back them up (at most `max_parallel` at
//! once, each under its VM lease), apply the job's retention to the backups it made from this
//! daemon's endpoint, optionally verify, record the status, notify on failure (allowed hook,
//! webhook), and give the lease back. Nothing in a run stops the daemon: every failure ends up
//! in the run's status, the audit log and the metrics.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::engine::backup::hot::{backup_vm, no_progress, BackupOptions, HotError, Quiesce};
use crate::engine::backup::{PruneOptions, VerifyOptions};

use super::daemon::Daemon;
use super::hooks::{post_webhook, HookEvent, HookOutcome};
use super::job::{JobSpec, LastRun, Mode, RunStatus};
use super::metrics::{JobLabels, RunLabels};
use super::renewal::Renewal;
use super::store::JobLease;

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
    /// Stopped before the end (shutdown, or the lease was lost).
    pub aborted: bool,
    /// The run's lease was lost (it lapsed while the repository was unreachable).
    pub lease_lost: bool,
}

/// One VM's committed backup.
struct Done {
    backup: String,
    bytes: u64,
    consistency: &'static str,
    note: Option<String>,
}

/// One VM's backup in a run: done, skipped (`None`), or why it failed.
type VmResult = Result<Option<Done>, String>;

impl Daemon {
    /// Runs one job now under `lease` (`ceso-backup run` and the schedule both come here).
    pub async fn run_job(
        &self,
        spec: JobSpec,
        lease: JobLease,
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
        let renewal = Renewal::start(
            self.store.clone(),
            lease.clone(),
            self.options.lease_ttl,
            cancel.clone(),
        );
        let outcome = self.backup_all(&spec, &cancel).await;
        let aborted = cancel.is_cancelled();
        let mut outcome = RunOutcome { aborted, ..outcome };
        if !aborted && outcome.backups > 0 {
            self.apply_retention(&spec, &mut outcome, &cancel).await;
            if spec.verify_after {
                self.verify(&name, &mut outcome, &cancel).await;
            }
        }
        let aborted = outcome.aborted || cancel.is_cancelled();
        cancel.cancel();
        let (lease, lost) = renewal.finish(lease).await;
        outcome.aborted = aborted;
        outcome.lease_lost = lost;
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
        // Recorded first: a run whose lease was lost must not look as if it still runs.
        self.audit(
            "run.finish",
            Some(&name),
            None,
            status.as_str(),
            json!({"backups": outcome.backups, "bytes": outcome.bytes, "skipped": outcome.skipped,
                   "error": error, "lease_lost": outcome.lease_lost}),
        );
        if !outcome.lease_lost {
            self.record_status(&spec, started, finished, status, &outcome, error.clone())
                .await;
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
        self.update_repository_size().await;
        if matches!(status, RunStatus::Failed | RunStatus::Partial) {
            self.notify_failure(&spec, status, error.as_deref().unwrap_or_default())
                .await;
        }
        if let Err(e) = self.store.release(lease).await {
            tracing::warn!(job = %name, error = %e, "cannot release the job's lease (it will expire)");
        }
        outcome
    }

    /// Writes the run into the job's status (`last_run` in Terraform).
    async fn record_status(
        &self,
        spec: &JobSpec,
        started: chrono::DateTime<Utc>,
        finished: chrono::DateTime<Utc>,
        status: RunStatus,
        outcome: &RunOutcome,
        error: Option<String>,
    ) {
        let name = &spec.name;
        let mut st = match self.store.status(name).await {
            Ok(st) => st,
            Err(e) => {
                self.repository_error("read the job's status", &e);
                Default::default()
            }
        };
        st.last_run = Some(LastRun {
            started,
            finished,
            status,
            backups: outcome.backups,
            bytes: outcome.bytes,
            node: self.options.node.clone(),
            error,
        });
        if status == RunStatus::Succeeded {
            st.last_success = Some(finished);
        }
        if let Some(t) = st.last_success {
            self.metrics
                .last_success
                .get_or_create(&JobLabels { job: name.clone() })
                .set(t.timestamp());
        }
        if let Err(e) = self.store.put_status(name, &st).await {
            self.repository_error("record the run's status", &e);
        }
    }

    /// The VMs a job names now: its ids, the VMs whose name matches its pattern, and the VMs
    /// carrying any of its tags; each once.
    async fn resolve(&self, spec: &JobSpec) -> Result<Vec<String>, String> {
        let mut names: Vec<String> = spec.vm_ids.clone();
        if let Some(pattern) = &spec.vm_name_regex {
            let re = regex::Regex::new(pattern).map_err(|e| e.to_string())?;
            let all = self.client.vm_names().await.map_err(|e| e.message)?;
            let mut matched: Vec<String> = all
                .into_iter()
                .map(|(_, name)| name)
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
            let mut matched: Vec<String> = self.client.names_of(&vms).await;
            matched.sort();
            names.extend(matched);
        }
        let mut seen = BTreeSet::new();
        names.retain(|n| seen.insert(n.clone()));
        Ok(names)
    }

    async fn backup_all(&self, spec: &JobSpec, cancel: &CancellationToken) -> RunOutcome {
        let mut outcome = RunOutcome::default();
        let vms = match self.resolve(spec).await {
            Ok(v) => v,
            Err(e) => {
                self.metrics.error("vsphere");
                outcome.failures.push(("(selection)".into(), e));
                return outcome;
            }
        };
        let results: Vec<(String, VmResult)> = futures::stream::iter(vms)
            .map(|vm| async move {
                let r = self.backup_one(spec, &vm, cancel).await;
                (vm, r)
            })
            .buffer_unordered(spec.max_parallel.max(1) as usize)
            .collect()
            .await;
        for (vm, r) in results {
            match r {
                Ok(Some(done)) => {
                    outcome.backups += 1;
                    outcome.bytes += done.bytes;
                    self.audit(
                        "backup",
                        Some(&spec.name),
                        Some(&vm),
                        "ok",
                        json!({"backup": done.backup, "bytes_read": done.bytes,
                               "consistency": done.consistency, "consistency_note": done.note}),
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
        if spec.mode == Mode::PoweredOffOnly {
            let obj = crate::engine::backup::hot::snapshot::find_vm(&self.client, vm)
                .await
                .map_err(|e| e.to_string())?;
            let power = self.client.power_state(&obj).await.map_err(|e| e.message)?;
            if power == "poweredOn" {
                return Ok(None);
            }
        }
        let mut options = BackupOptions::new(vm);
        options.max_rate = spec.max_rate;
        options.quiesce = match spec.mode {
            Mode::Quiesce => Quiesce::Required,
            Mode::Snapshot | Mode::PoweredOffOnly => Quiesce::IfToolsRun,
        };
        // Another job's backup of the VM, or a dead daemon's lease lapsing, is waited for.
        options.lease_wait = self.options.lease_ttl + self.options.clock_skew + self.options.poll;
        options.job = Some(spec.name.clone());
        options.endpoint = Some(self.options.endpoint_id.clone());
        let repo = (*self.repo).clone().with_cancel(cancel.clone());
        match backup_vm(&self.client, &repo, &options, &no_progress(), cancel).await {
            Ok(report) => Ok(Some(Done {
                backup: report.backup.to_string(),
                bytes: report.bytes_read,
                consistency: report.consistency.as_str(),
                note: report.consistency_note,
            })),
            Err(e) => {
                match &e {
                    HotError::Vsphere { .. } => self.metrics.error("vsphere"),
                    HotError::Repository(_) => self.metrics.error("repository"),
                    _ => {}
                }
                Err(e.to_string())
            }
        }
    }

    /// Prunes the backups this job made from this daemon's endpoint to its retention, each VM
    /// on its own, however the VMs were selected. Other jobs' backups are never touched.
    async fn apply_retention(
        &self,
        spec: &JobSpec,
        outcome: &mut RunOutcome,
        cancel: &CancellationToken,
    ) {
        let options = PruneOptions {
            policy: spec.retention.policy(),
            vm_uuid: None,
            job: Some(spec.name.clone()),
            endpoint: Some(self.options.endpoint_id.clone()),
            dry_run: false,
        };
        let repo = (*self.repo).clone().with_cancel(cancel.clone());
        match repo.prune(options).await {
            Ok(report) => {
                let removed: Vec<String> = report
                    .entries
                    .iter()
                    .filter(|e| e.mark == crate::engine::backup::prune::PruneMark::Remove)
                    .map(|e| e.id.to_string())
                    .collect();
                self.audit(
                    "prune",
                    Some(&spec.name),
                    None,
                    "ok",
                    json!({"removed": report.removed, "backups": removed}),
                );
            }
            Err(e) => {
                if matches!(e, crate::engine::backup::Error::Interrupted) {
                    outcome.aborted = true;
                } else {
                    self.metrics.error("repository");
                }
                self.audit(
                    "prune",
                    Some(&spec.name),
                    None,
                    "failed",
                    json!({"error": e.to_string()}),
                );
                outcome
                    .failures
                    .push(("(retention)".into(), format!("retention: {e}")));
            }
        }
    }

    async fn verify(&self, job: &str, outcome: &mut RunOutcome, cancel: &CancellationToken) {
        let repo = (*self.repo).clone().with_cancel(cancel.clone());
        match repo.verify(VerifyOptions { sample: None }).await {
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

    /// Runs the job's hook (if this daemon allows it) and posts its webhook; their own
    /// failures are logged (without the webhook's URL) and audited, never fatal.
    async fn notify_failure(&self, spec: &JobSpec, status: RunStatus, error: &str) {
        if spec.on_failure_command.is_some() {
            self.audit(
                "hook",
                Some(&spec.name),
                None,
                "refused",
                json!({"reason": "on_failure_command is no longer run; name an allowed hook with on_failure_hook"}),
            );
        }
        if let Some(hook) = &spec.on_failure_hook {
            let event = HookEvent {
                job: &spec.name,
                status: status.as_str(),
                error,
                node: &self.options.node,
            };
            let outcome = self.options.hooks.run(hook, &event).await;
            let detail = match &outcome {
                HookOutcome::Failed(why) | HookOutcome::NotStarted(why) => {
                    json!({"hook": hook, "error": why})
                }
                HookOutcome::Refused => {
                    json!({"hook": hook, "reason": "this daemon does not allow this hook (serve --allow-hook NAME=COMMAND)"})
                }
                _ => json!({"hook": hook}),
            };
            if outcome != HookOutcome::Succeeded {
                tracing::warn!(job = %spec.name, %hook, result = outcome.as_str(), "the failure hook did not succeed");
            }
            self.audit("hook", Some(&spec.name), None, outcome.as_str(), detail);
        }
        if let Some(url) = &spec.on_failure_webhook {
            let body = json!({"job": spec.name, "status": status.as_str(), "error": error, "node": self.options.node});
            let result = post_webhook(url, &body).await;
            if let Err(e) = &result {
                tracing::warn!(job = %spec.name, error = %e, "the failure webhook failed");
            }
            self.audit(
                "webhook",
                Some(&spec.name),
                None,
                if result.is_ok() { "ok" } else { "failed" },
                json!({"error": result.err()}),
            );
        }
    }
}
