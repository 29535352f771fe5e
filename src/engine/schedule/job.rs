//! A backup job's definition (what `ceso_backup_job` writes into the repository) and its
//! status (what the daemon writes after each run), with the schedule they run on.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::Cron;
use serde::{Deserialize, Serialize};

use crate::engine::backup::KeepPolicy;

/// How a job treats running VMs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Hot: snapshot the running VM (quiesced when VMware Tools run, else crash-consistent).
    #[default]
    Snapshot,
    /// Hot, and only quiesced: a VM without running VMware Tools fails.
    Quiesce,
    /// Only VMs that are powered off; running ones are skipped.
    PoweredOffOnly,
}

impl Mode {
    /// The name used in HCL and the repository.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Snapshot => "snapshot",
            Mode::Quiesce => "quiesce",
            Mode::PoweredOffOnly => "powered_off_only",
        }
    }
}

/// How many backups of each VM to keep after a run (Proxmox-style).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// The newest N.
    #[serde(default)]
    pub keep_last: u32,
    /// The newest of each of N days.
    #[serde(default)]
    pub keep_daily: u32,
    /// The newest of each of N ISO weeks.
    #[serde(default)]
    pub keep_weekly: u32,
    /// The newest of each of N months.
    #[serde(default)]
    pub keep_monthly: u32,
    /// The newest of each of N years.
    #[serde(default)]
    pub keep_yearly: u32,
}

impl Retention {
    /// Whether it keeps nothing (which would delete every backup: refused).
    pub fn is_empty(&self) -> bool {
        *self == Retention::default()
    }

    /// The repository's policy.
    pub fn policy(&self) -> KeepPolicy {
        KeepPolicy {
            last: self.keep_last,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            ..KeepPolicy::default()
        }
    }
}

/// A job as stored at `jobs/<name>.json` (authenticated in an encrypted repository, see
/// [`super::store`]).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Unique name (the object key).
    pub name: String,
    /// Cron pattern (5 or 6 fields, seconds first when 6) or `@daily`-style alias.
    pub schedule: String,
    /// IANA time zone the schedule is read in, e.g. `Europe/Paris`.
    #[serde(default = "utc")]
    pub timezone: String,
    /// VMs by moid, instance UUID, inventory path or name.
    #[serde(default)]
    pub vm_ids: Vec<String>,
    /// VMs whose name matches, resolved at each run.
    #[serde(default)]
    pub vm_name_regex: Option<String>,
    /// VMs carrying any of these vSphere tags (`category:tag` or `tag`), resolved at each run.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The vSphere endpoint the VMs are on (a name daemons are started with); jobs without one
    /// run on any daemon.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Hot or not.
    #[serde(default)]
    pub mode: Mode,
    /// What to keep after each run.
    #[serde(default)]
    pub retention: Retention,
    /// VMs backed up at once.
    #[serde(default = "one")]
    pub max_parallel: u32,
    /// Read at most this many bytes per second per VM.
    #[serde(default)]
    pub max_rate: Option<u64>,
    /// Runs at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Verify the run's backups after it.
    #[serde(default)]
    pub verify_after: bool,
    /// The hook run when a run fails: a name the daemon maps to a command of its own
    /// configuration (`--allow-hook NAME=COMMAND`); a name it does not allow is never run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure_hook: Option<String>,
    /// Written by older versions: a shell command from the repository, which daemons no longer
    /// run (anyone who could write the repository could have run code on every daemon). Kept
    /// only to say so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure_command: Option<String>,
    /// A URL POSTed a JSON summary when a run fails.
    #[serde(default)]
    pub on_failure_webhook: Option<String>,
    /// Who wrote the definition last (e.g. `terraform`), for the audit trail.
    #[serde(default)]
    pub updated_by: String,
    /// When the definition was written last.
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}

/// Shows everything but the webhook URL, which often carries a token.
impl std::fmt::Debug for JobSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobSpec")
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .field("timezone", &self.timezone)
            .field("vm_ids", &self.vm_ids)
            .field("vm_name_regex", &self.vm_name_regex)
            .field("tags", &self.tags)
            .field("endpoint", &self.endpoint)
            .field("mode", &self.mode)
            .field("retention", &self.retention)
            .field("max_parallel", &self.max_parallel)
            .field("max_rate", &self.max_rate)
            .field("enabled", &self.enabled)
            .field("verify_after", &self.verify_after)
            .field("on_failure_hook", &self.on_failure_hook)
            .field("on_failure_command", &self.on_failure_command)
            .field(
                "on_failure_webhook",
                &self.on_failure_webhook.as_ref().map(|_| "***"),
            )
            .field("updated_by", &self.updated_by)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// Whether `name` is a valid hook name: 1 to 64 letters, digits, `-`, `_` or `.`.
pub fn valid_hook_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn utc() -> String {
    "UTC".to_string()
}
fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}

/// A problem with a job definition: the field and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The field, e.g. `schedule`.
    pub field: &'static str,
    /// What is wrong and what is allowed.
    pub message: String,
}

/// A cron schedule in a time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    tz: chrono_tz::Tz,
}

impl Schedule {
    /// Parses a pattern and a time zone name.
    pub fn parse(pattern: &str, timezone: &str) -> Result<Self, Invalid> {
        Ok(Self {
            cron: parse_cron(pattern)?,
            tz: parse_timezone(timezone)?,
        })
    }

    /// The first time strictly after `after` the schedule fires.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// A readable description, e.g. "At 02:30 every day".
    pub fn describe(&self) -> String {
        self.cron.describe()
    }
}

/// Checks a cron pattern; the error names what croner found wrong.
pub fn parse_cron(pattern: &str) -> Result<Cron, Invalid> {
    Cron::from_str(pattern.trim()).map_err(|e| Invalid {
        field: "schedule",
        message: format!(
            "{pattern:?} is not a cron schedule ({e}). Use 5 fields (minute hour day-of-month month day-of-week), 6 with seconds first, or @hourly / @daily / @weekly / @monthly / @yearly."
        ),
    })
}

/// Checks an IANA time zone name.
pub fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, Invalid> {
    name.parse::<chrono_tz::Tz>().map_err(|_| Invalid {
        field: "timezone",
        message: format!(
            "{name:?} is not an IANA time zone name such as \"UTC\" or \"Europe/Paris\"."
        ),
    })
}

impl JobSpec {
    /// Every problem with the definition.
    pub fn validate(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !self.name.starts_with('.');
        if !name_ok {
            out.push(Invalid {
                field: "name",
                message: format!("{:?} must be 1 to 64 letters, digits, '-', '_' or '.' (not starting with '.').", self.name),
            });
        }
        if let Err(e) = parse_cron(&self.schedule) {
            out.push(e);
        }
        if let Err(e) = parse_timezone(&self.timezone) {
            out.push(e);
        }
        if self.retention.is_empty() {
            out.push(Invalid {
                field: "retention",
                message: "Every keep_* is 0, which would delete every backup after each run; keep at least one (e.g. keep_last = 7).".into(),
            });
        }
        if let Some(re) = &self.vm_name_regex {
            if let Err(e) = regex::Regex::new(re) {
                out.push(Invalid {
                    field: "vm_name_regex",
                    message: format!("not a valid regular expression: {e}"),
                });
            }
        }
        if self.vm_ids.is_empty() && self.vm_name_regex.is_none() && self.tags.is_empty() {
            out.push(Invalid {
                field: "vm_ids",
                message: "Name the VMs to back up: vm_ids, vm_name_regex or tags.".into(),
            });
        }
        if let Some(hook) = &self.on_failure_hook {
            if !valid_hook_name(hook) {
                out.push(Invalid {
                    field: "on_failure_hook",
                    message: format!("{hook:?} is not a hook name: 1 to 64 letters, digits, '-', '_' or '.', as given to `ceso-backup serve --allow-hook NAME=COMMAND`."),
                });
            }
        }
        if self.max_parallel == 0 {
            out.push(Invalid {
                field: "max_parallel",
                message: "must be at least 1.".into(),
            });
        }
        out
    }

    /// The schedule (the definition must be valid).
    pub fn schedule(&self) -> Result<Schedule, Invalid> {
        Schedule::parse(&self.schedule, &self.timezone)
    }
}

/// A rate such as `50M` or `100MiB` (per second) in bytes (the grammar of `units::parse_size`).
pub fn parse_rate(text: &str) -> Result<u64, String> {
    crate::units::parse_size(text).map_err(|_| {
        format!("{text:?} is not a rate such as 50M or 100MiB (bytes per second, at least 1)")
    })
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every VM was backed up.
    Succeeded,
    /// Some VMs failed.
    Partial,
    /// Nothing was backed up.
    Failed,
    /// Stopped by a shutdown or a lost lease.
    Aborted,
}

impl RunStatus {
    /// The name used in HCL, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
            RunStatus::Aborted => "aborted",
        }
    }
}

/// One run of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    /// When it started.
    pub started: DateTime<Utc>,
    /// When it finished.
    pub finished: DateTime<Utc>,
    /// How it ended.
    pub status: RunStatus,
    /// Backups committed.
    pub backups: u32,
    /// Bytes read from the datastores.
    pub bytes: u64,
    /// The daemon that ran it.
    pub node: String,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// A job's status as stored at `job-status/<name>.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    /// The last run, if any.
    pub last_run: Option<LastRun>,
    /// The last run that succeeded, if any.
    pub last_success: Option<DateTime<Utc>>,
}

/// When a job is due next: its first firing after its last run started (or after its
/// definition was written, before any run). Missed firings during downtime collapse into one
/// run: the next firing is computed from the last run, not counted.
pub fn next_run(spec: &JobSpec, status: &JobStatus) -> Option<DateTime<Utc>> {
    let schedule = spec.schedule().ok()?;
    let anchor = status
        .last_run
        .as_ref()
        .map(|r| r.started)
        .or(spec.updated_at)
        .unwrap_or_else(Utc::now);
    schedule.next_after(anchor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn job() -> JobSpec {
        JobSpec {
            name: "nightly".into(),
            schedule: "30 2 * * *".into(),
            timezone: "Europe/Paris".into(),
            vm_ids: vec!["vm-1".into()],
            retention: Retention {
                keep_last: 3,
                ..Retention::default()
            },
            max_parallel: 1,
            enabled: true,
            ..JobSpec::default()
        }
    }

    #[test]
    fn schedules_fire_in_their_time_zone() {
        let s = job().schedule().unwrap();
        let t = Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).unwrap();
        // 02:30 in Paris in summer is 00:30 UTC.
        assert_eq!(
            s.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 7, 1, 0, 30, 0).unwrap())
        );
        let six = Schedule::parse("*/5 * * * * *", "UTC").unwrap();
        assert_eq!(
            six.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 5).unwrap())
        );
        assert!(Schedule::parse("@daily", "UTC").is_ok());
    }

    #[test]
    fn every_mistake_names_its_field() {
        let mut j = job();
        j.schedule = "61 * * * *".into();
        j.timezone = "Mars/Olympus".into();
        j.retention = Retention::default();
        j.vm_name_regex = Some("(".into());
        j.on_failure_hook = Some("rm -rf /".into());
        let fields: Vec<&str> = j.validate().iter().map(|i| i.field).collect();
        assert_eq!(
            fields,
            [
                "schedule",
                "timezone",
                "retention",
                "vm_name_regex",
                "on_failure_hook"
            ]
        );
        assert!(job().validate().is_empty());
    }

    #[test]
    fn debug_hides_the_webhook() {
        let j = JobSpec {
            on_failure_webhook: Some("https://hooks.example.com/T0/secret-token".into()),
            ..job()
        };
        let text = format!("{j:?}");
        assert!(!text.contains("secret-token"), "{text}");
        assert!(text.contains("nightly"), "{text}");
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("50M"), Ok(50_000_000));
        assert_eq!(parse_rate("100MiB"), Ok(100 << 20));
        assert_eq!(parse_rate("4096"), Ok(4096));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("0M").is_err());
    }

    #[test]
    fn missed_runs_collapse_into_one() {
        let j = JobSpec {
            schedule: "0 * * * *".into(),
            timezone: "UTC".into(),
            ..job()
        };
        let started = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let status = JobStatus {
            last_run: Some(LastRun {
                started,
                finished: started,
                status: RunStatus::Succeeded,
                backups: 1,
                bytes: 0,
                node: "a".into(),
                error: None,
            }),
            last_success: Some(started),
        };
        // Down for five hours: due once, at the first missed firing.
        assert_eq!(
            next_run(&j, &status),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 1, 0, 0).unwrap())
        );
    }
}
