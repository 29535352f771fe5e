//! Scheduled backups. The repository is the control plane: `ceso_backup_job` writes a job's
//! definition into it ([`store`]: `jobs/<name>.json`, authenticated with the repository's key
//! when it is encrypted), and any number of `ceso-backup serve` daemons that can reach the
//! repository and vSphere run the jobs that are due ([`daemon`]), each run under the job's
//! lease so no two daemons run one job at once, a dead daemon's job being taken over once its
//! lease expires. After each run the job's status (`job-status/<name>.json`) says how it went,
//! for `terraform plan` to show.
//!
//! - [`job`]: definitions, their checks, schedules (cron in a time zone), statuses.
//! - [`store`]: jobs, statuses and generation-numbered leases in the repository.
//! - [`daemon`]: the loop, which survives every error; [`run`]: one run (backups, retention,
//!   verify, status, notifications); [`gc`]: the scheduled repository-wide gc.
//! - [`renewal`]: run leases renewed through outages; [`health`]: reachability and back-off.
//! - [`hooks`]: failure hooks the daemon allows, webhooks.
//! - [`audit`]: the JSON lines audit log. [`metrics`]: Prometheus `/metrics` and `/healthz`.

pub mod audit;
pub mod daemon;
pub mod gc;
pub mod health;
pub mod hooks;
pub mod job;
pub mod metrics;
pub mod renewal;
pub mod run;
pub mod store;

pub use audit::{AuditEvent, AuditLog};
pub use daemon::{Daemon, DaemonOptions};
pub use gc::GcSettings;
pub use health::{Backoff, Health};
pub use hooks::{HookOutcome, Hooks};
pub use job::{JobSpec, JobStatus, LastRun, Mode, Retention, RunStatus, Schedule};
pub use metrics::Metrics;
pub use run::RunOutcome;
pub use store::{JobLease, JobStore};
