//! Scheduled backups. The repository is the control plane: `ceso_backup_job` writes a job's
//! definition into it ([`store`]: `jobs/<name>.json`), and any number of `ceso-backup serve`
//! daemons that can reach the repository and vSphere run the jobs that are due ([`daemon`]),
//! each run under the job's lease so no two daemons run one job at once, a dead daemon's job
//! being taken over once its lease expires. After each run the job's status
//! (`job-status/<name>.json`) says how it went, for `terraform plan` to show.
//!
//! - [`job`]: definitions, their checks, schedules (cron in a time zone), statuses.
//! - [`store`]: jobs, statuses and generation-numbered leases in the repository.
//! - [`daemon`]: the loop, one run (backups, retention, verify, status, hooks).
//! - [`audit`]: the JSON lines audit log. [`metrics`]: Prometheus `/metrics` and `/healthz`.

pub mod audit;
pub mod daemon;
pub mod job;
pub mod metrics;
pub mod store;

pub use audit::{AuditEvent, AuditLog};
pub use daemon::{Daemon, DaemonOptions, RunOutcome};
pub use job::{JobSpec, JobStatus, LastRun, Mode, Retention, RunStatus, Schedule};
pub use metrics::Metrics;
pub use store::{JobLease, JobStore};
