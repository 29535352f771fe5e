//! The daemon's Prometheus metrics (jobs, runs by status, bytes, duration, last success per
//! job, repository size and reachability, errors survived, gc figures) and the loopback HTTP
//! server that serves `/metrics` and `/healthz` (503 once the repository has been unreachable
//! for longer than the daemon's threshold, see [`super::health`]).

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Labels of per-job series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// The job's name.
    pub job: String,
}

/// Labels of run counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    /// The job's name.
    pub job: String,
    /// How the run ended.
    pub status: String,
}

/// Labels of error counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// Where the error came from: `repository` or `vsphere`.
    pub source: String,
}

/// Labels of gc runs.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// `succeeded` or `failed`.
    pub status: String,
}

/// Every series the daemon exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    /// Jobs defined in the repository.
    pub jobs: Gauge,
    /// Runs by job and status.
    pub runs: Family<RunLabels, Counter>,
    /// Bytes read from datastores by job.
    pub bytes: Family<JobLabels, Counter>,
    /// Seconds the last run took, by job.
    pub duration: Family<JobLabels, Gauge<f64, AtomicU64>>,
    /// Unix time of the last successful run, by job.
    pub last_success: Family<JobLabels, Gauge>,
    /// Bytes of chunks in the repository.
    pub repository_bytes: Gauge,
    /// 1 while the last look at the repository succeeded, else 0.
    pub repository_up: Gauge,
    /// Errors the daemon survived, by source.
    pub errors: Family<SourceLabels, Counter>,
    /// Scheduled gc runs by outcome.
    pub gc_runs: Family<StatusLabels, Counter>,
    /// Chunks gc deleted.
    pub gc_deleted_chunks: Counter,
    /// Bytes gc freed.
    pub gc_deleted_bytes: Counter,
    /// Chunks the last gc found in the repository.
    pub gc_last_chunks_total: Gauge,
    /// Unix time of the last successful gc.
    pub gc_last_success: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every series.
    pub fn new() -> Self {
        let m = Self {
            registry: Arc::new(Mutex::new(Registry::default())),
            jobs: Gauge::default(),
            runs: Family::default(),
            bytes: Family::default(),
            duration: Family::default(),
            last_success: Family::default(),
            repository_bytes: Gauge::default(),
            repository_up: Gauge::default(),
            errors: Family::default(),
            gc_runs: Family::default(),
            gc_deleted_chunks: Counter::default(),
            gc_deleted_bytes: Counter::default(),
            gc_last_chunks_total: Gauge::default(),
            gc_last_success: Gauge::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|p| p.into_inner());
            r.register(
                "ceso_backup_jobs",
                "Backup jobs defined in the repository",
                m.jobs.clone(),
            );
            r.register(
                "ceso_backup_runs",
                "Job runs by job and status",
                m.runs.clone(),
            );
            r.register(
                "ceso_backup_read_bytes",
                "Bytes read from datastores by job",
                m.bytes.clone(),
            );
            r.register(
                "ceso_backup_last_run_duration_seconds",
                "Seconds the last run of each job took",
                m.duration.clone(),
            );
            r.register(
                "ceso_backup_last_success_timestamp_seconds",
                "Unix time of each job's last successful run",
                m.last_success.clone(),
            );
            r.register(
                "ceso_backup_repository_chunk_bytes",
                "Bytes of chunks stored in the repository",
                m.repository_bytes.clone(),
            );
            r.register(
                "ceso_backup_repository_up",
                "1 while the daemon's last look at the repository succeeded",
                m.repository_up.clone(),
            );
            r.register(
                "ceso_backup_daemon_errors",
                "Errors the daemon survived, by source (repository, vsphere)",
                m.errors.clone(),
            );
            r.register(
                "ceso_backup_gc_runs",
                "Scheduled gc runs by outcome",
                m.gc_runs.clone(),
            );
            r.register(
                "ceso_backup_gc_deleted_chunks",
                "Chunks deleted by scheduled gc",
                m.gc_deleted_chunks.clone(),
            );
            r.register(
                "ceso_backup_gc_deleted_bytes",
                "Bytes freed by scheduled gc",
                m.gc_deleted_bytes.clone(),
            );
            r.register(
                "ceso_backup_gc_last_chunks",
                "Chunks the last gc found in the repository",
                m.gc_last_chunks_total.clone(),
            );
            r.register(
                "ceso_backup_gc_last_success_timestamp_seconds",
                "Unix time of the last successful gc",
                m.gc_last_success.clone(),
            );
        }
        m
    }

    /// The exposition text (OpenMetrics).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = encode(&mut out, &r) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }

    /// Checks that `addr` is a loopback address, the only kind metrics are served on.
    pub fn check_address(addr: SocketAddr) -> std::io::Result<()> {
        if addr.ip().is_loopback() {
            return Ok(());
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the metrics address {addr} is not a loopback address (127.0.0.1 or ::1); put a reverse proxy in front to expose it"),
        ))
    }

    /// Counts an error the daemon survived.
    pub fn error(&self, source: &str) {
        self.errors
            .get_or_create(&SourceLabels {
                source: source.into(),
            })
            .inc();
    }

    /// Serves `/metrics` and `/healthz` (from `health`) on `addr` (loopback only) until `stop`.
    pub async fn serve(
        &self,
        addr: SocketAddr,
        health: Arc<super::health::Health>,
        stop: CancellationToken,
    ) -> std::io::Result<()> {
        Self::check_address(addr)?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let metrics = self.clone();
        let app = Router::new()
            .route(
                "/metrics",
                get(move || {
                    let m = metrics.clone();
                    async move {
                        (
                            [(
                                CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            m.render(),
                        )
                    }
                }),
            )
            .route(
                "/healthz",
                get(move || {
                    let health = health.clone();
                    async move {
                        match health.check() {
                            Ok(()) => (StatusCode::OK, "ok\n".to_string()),
                            Err(why) => (
                                StatusCode::SERVICE_UNAVAILABLE,
                                format!("unhealthy: {why}\n"),
                            ),
                        }
                    }
                }),
            );
        tracing::info!(%addr, "serving /metrics and /healthz");
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series() {
        let m = Metrics::new();
        m.jobs.set(2);
        m.runs
            .get_or_create(&RunLabels {
                job: "nightly".into(),
                status: "succeeded".into(),
            })
            .inc();
        m.duration
            .get_or_create(&JobLabels {
                job: "nightly".into(),
            })
            .set(1.5);
        let text = m.render();
        assert!(text.contains("ceso_backup_jobs 2"), "{text}");
        assert!(
            text.contains(r#"ceso_backup_runs_total{job="nightly",status="succeeded"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("ceso_backup_last_run_duration_seconds{job=\"nightly\"} 1.5"),
            "{text}"
        );
    }
}
