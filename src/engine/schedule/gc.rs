//! The repository-wide gc the daemons run on a schedule (a daemon setting, default daily), so
//! the space retention frees is reclaimed. One daemon at a time runs it, under the `gc`
//! maintenance lease (as a job's run holds the job's); the gc itself holds the repository's
//! exclusive lease, waiting its turn fairly behind running backups. Its figures go to the
//! metrics (`ceso_backup_gc_*`), the audit log (`gc`) and `maintenance/gc.json`.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;

use crate::engine::backup::{Error, GcOptions, Result};

use super::daemon::Daemon;
use super::job::{LastRun, RunStatus, Schedule};
use super::metrics::StatusLabels;
use super::renewal::Renewal;
use super::store::JobLease;

/// The maintenance task's name (status `maintenance/gc.json`, leases `maintenance-leases/gc/`).
pub const GC: &str = "gc";

/// When and how the daemon runs gc.
#[derive(Clone, Debug)]
pub struct GcSettings {
    /// When it runs (first time: the schedule's first firing after the daemon started).
    pub schedule: Schedule,
    /// Unreferenced chunks younger than this are kept (see [`GcOptions::grace`]).
    pub grace: Duration,
}

impl Daemon {
    /// The gc lease, when gc is due and no other daemon runs it; otherwise `wake` is moved to
    /// its next time.
    pub(super) async fn gc_lease_if_due(
        &self,
        settings: &GcSettings,
        wake: &mut Instant,
    ) -> Result<Option<JobLease>> {
        let status = self.store.maintenance_status(GC).await?;
        let anchor = status
            .last_run
            .as_ref()
            .map(|r| r.started)
            .unwrap_or(self.started);
        let Some(next) = settings.schedule.next_after(anchor) else {
            return Ok(None);
        };
        let now = Utc::now();
        if next > now {
            let wait = (next - now).to_std().unwrap_or_default();
            *wake = (*wake).min(Instant::now() + wait);
            return Ok(None);
        }
        self.store
            .try_maintenance_lease(
                GC,
                &self.options.node,
                self.options.lease_ttl,
                self.options.clock_skew,
            )
            .await
    }

    /// Runs gc under `lease`, records it, and gives the lease back. Failures are recorded, never
    /// returned: the daemon goes on.
    pub(super) async fn run_gc(&self, lease: JobLease, stop: &tokio_util::sync::CancellationToken) {
        let Some(settings) = &self.options.gc else {
            return;
        };
        let started = Utc::now();
        let clock = Instant::now();
        self.audit(
            "gc.start",
            None,
            None,
            "ok",
            json!({"lease": lease.generation()}),
        );
        let cancel = stop.child_token();
        let renewal = Renewal::start(
            self.store.clone(),
            lease.clone(),
            self.options.lease_ttl,
            cancel.clone(),
        );
        let repo = (*self.repo).clone().with_cancel(cancel.clone());
        let result = repo
            .gc(GcOptions {
                grace: settings.grace,
                dry_run: false,
            })
            .await;
        let (lease, _lost) = renewal.finish(lease).await;
        let finished = Utc::now();
        let status = match &result {
            Ok(_) => RunStatus::Succeeded,
            Err(Error::Interrupted) => RunStatus::Aborted,
            Err(_) => RunStatus::Failed,
        };
        self.metrics
            .gc_runs
            .get_or_create(&StatusLabels {
                status: status.as_str().into(),
            })
            .inc();
        let mut st = self.store.maintenance_status(GC).await.unwrap_or_default();
        match &result {
            Ok(report) => {
                self.metrics.gc_deleted_chunks.inc_by(report.chunks_deleted);
                self.metrics.gc_deleted_bytes.inc_by(report.bytes_deleted);
                self.metrics
                    .gc_last_chunks_total
                    .set(report.chunks_total as i64);
                self.metrics.gc_last_success.set(finished.timestamp());
                st.last_success = Some(finished);
                tracing::info!(
                    deleted = report.chunks_deleted,
                    bytes = report.bytes_deleted,
                    seconds = clock.elapsed().as_secs_f64(),
                    "gc finished"
                );
                self.audit(
                    "gc",
                    None,
                    None,
                    "ok",
                    serde_json::to_value(report).unwrap_or_default(),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "gc failed");
                if !matches!(e, Error::Interrupted | Error::Locked { .. }) {
                    self.metrics.error("repository");
                }
                self.audit(
                    "gc",
                    None,
                    None,
                    status.as_str(),
                    json!({"error": e.to_string()}),
                );
            }
        }
        st.last_run = Some(LastRun {
            started,
            finished,
            status,
            backups: 0,
            bytes: result.as_ref().map(|r| r.bytes_deleted).unwrap_or(0),
            node: self.options.node.clone(),
            error: result.as_ref().err().map(ToString::to_string),
        });
        if let Err(e) = self.store.put_maintenance_status(GC, &st).await {
            self.repository_error("record the gc's status", &e);
        }
        if let Err(e) = self.store.release(lease).await {
            tracing::warn!(error = %e, "cannot release the gc lease (it will expire)");
        }
    }
}
