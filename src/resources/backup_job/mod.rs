//! `ceso_backup_job`: a scheduled backup job, written into the backup repository
//! (`jobs/<name>.json`) where `ceso-backup serve` daemons find and run it. Its computed
//! `next_run` and `last_run` are read back from the repository, so the next plan shows how the
//! last run went; a definition edited by someone else shows as drift. Destroy removes the
//! definition only: the backups stay.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::cty::{Type, Value};
use crate::engine::backup::{Backend, Repository, RepositoryUrl};
use crate::engine::schedule::job::{next_run, parse_cron, parse_rate, parse_timezone};
use crate::engine::schedule::{JobSpec, JobStatus, JobStore, Mode, Retention};
use crate::framework::typed_resource::{
    Call, Config, Import, Model, Outcome, Scoped, TypedResource,
};
use crate::framework::validator::{int_between, one_of, regex_syntax};
use crate::framework::{
    AttrPath, Attribute, Block, Diagnostics, NestedBlock, Nesting, Schema, Tri,
};
use crate::session::{BackupSettings, ProviderState, ProviderWide};

/// The `ceso_backup_job` resource.
pub struct BackupJob;

/// The retention block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetentionModel {
    pub keep_last: Option<i64>,
    pub keep_daily: Option<i64>,
    pub keep_weekly: Option<i64>,
    pub keep_monthly: Option<i64>,
    pub keep_yearly: Option<i64>,
}

/// The last_run attribute.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LastRunModel {
    pub started: String,
    pub finished: String,
    pub status: String,
    pub backups: i64,
    pub bytes: i64,
    pub node: String,
    pub error: Option<String>,
}

/// The resource's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobModel {
    pub id: Option<String>,
    pub endpoint: Option<String>,
    pub name: String,
    pub schedule: String,
    pub timezone: Option<String>,
    pub vm_ids: Option<Vec<String>>,
    pub vm_name_regex: Option<String>,
    pub tags: Option<Vec<String>>,
    pub mode: Option<String>,
    pub max_parallel: Option<i64>,
    pub max_rate: Option<String>,
    pub enabled: Option<bool>,
    pub verify_after: Option<bool>,
    pub on_failure_hook: Option<String>,
    pub on_failure_command: Option<String>,
    pub on_failure_webhook: Option<String>,
    pub next_run: Option<String>,
    pub schedule_description: Option<String>,
    pub last_run: Option<LastRunModel>,
    pub retention: Option<Vec<RetentionModel>>,
}

/// A job lives in the provider's backup repository, whichever endpoint its VMs are on: it has
/// no connection scope (`endpoint` is what the job backs up).
impl Scoped for JobModel {
    fn scope(&self) -> Option<&str> {
        None
    }
}

impl Model for JobModel {
    fn set_scope(&mut self, _scope: Option<&str>) {}
}

fn last_run_type() -> Type {
    Type::object([
        ("started", Type::String),
        ("finished", Type::String),
        ("status", Type::String),
        ("backups", Type::Number),
        ("bytes", Type::Number),
        ("node", Type::String),
        ("error", Type::String),
    ])
}

/// The resource's schema.
pub fn schema() -> Schema {
    let keep = |name: &str, what: &str| {
        Attribute::number(name)
            .optional()
            .validate(int_between(0, 100_000))
            .description(what)
    };
    Schema::new(
        Block::new()
            .description("A scheduled backup job. Its definition is written into the provider's `backup_repository`; `ceso-backup serve` daemons that can reach the repository and vSphere run it when due (several daemons split the work; a job never runs twice at once). `next_run` and `last_run` come from the repository. Destroying the job removes its definition only: its backups stay.")
            .attribute(Attribute::string("id").computed().use_state_for_unknown().description("The job's name."))
            .attribute(Attribute::string("name").required().requires_replace().validate(crate::framework::validator::matches(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$", "1 to 64 letters, digits, '-', '_' or '.' (not starting with '.')")).description("The job's name, unique in the repository."))
            .attribute(Attribute::string("endpoint").optional().description("The vSphere endpoint the VMs live on (a name of the provider's `endpoint` blocks). Daemons started with `--endpoint-name` run only the jobs naming their endpoint and those naming none; leave it unset with a single endpoint."))
            .attribute(Attribute::string("schedule").required().validate(Arc::new(CronValidator)).description("When to run: a cron pattern of 5 fields (`30 2 * * *`), 6 with seconds first (`*/30 * * * * *`), or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`. A daemon that was down runs a missed job once, not once per missed time."))
            .attribute(Attribute::string("timezone").default_value(Value::String("UTC".into())).validate(Arc::new(TimezoneValidator)).description("IANA time zone the schedule is read in, e.g. `Europe/Paris`."))
            .attribute(Attribute::new("vm_ids", Type::List(Box::new(Type::String))).optional().description("VMs to back up: `ceso_vm` ids (instance UUIDs), moids, names or inventory paths."))
            .attribute(Attribute::string("vm_name_regex").optional().validate(regex_syntax()).description("Also back up every VM whose name matches, resolved at each run."))
            .attribute(Attribute::new("tags", Type::List(Box::new(Type::String))).optional().description("Also back up every VM carrying any of these vSphere tags (`category:tag`, or `tag` in any category), resolved at each run (vCenter's tagging service)."))
            .attribute(Attribute::string("mode").default_value(Value::String("snapshot".into())).validate(one_of(&["snapshot", "quiesce", "powered_off_only"])).description("`snapshot`: hot, quiesced when VMware Tools run, else crash-consistent; `quiesce`: hot and quiesced only (a VM without running Tools fails); `powered_off_only`: running VMs are skipped."))
            .attribute(Attribute::number("max_parallel").default_value(Value::Number(1i64.into())).validate(int_between(1, 64)).description("VMs backed up at once."))
            .attribute(Attribute::string("max_rate").optional().validate(Arc::new(RateValidator)).description("Read at most this much per second per VM from the datastores, e.g. `50M` or `100MiB`, to spare the VMs' storage."))
            .attribute(Attribute::bool("enabled").default_value(Value::Bool(true)).description("Whether the job runs."))
            .attribute(Attribute::bool("verify_after").default_value(Value::Bool(false)).description("Re-read and re-hash the repository's chunks after each run."))
            .attribute(Attribute::string("on_failure_hook").optional().validate(crate::framework::validator::matches(r"^[A-Za-z0-9_.-]{1,64}$", "1 to 64 letters, digits, '-', '_' or '.'")).description("The name of a failure hook to run when a run fails or partly fails. Daemons run only hooks their own configuration allows (`ceso-backup serve --allow-hook NAME=COMMAND`): the command is the daemon's, never the repository's, and runs without a shell with only `PATH`, `CESO_JOB`, `CESO_STATUS`, `CESO_ERROR` and `CESO_NODE` in its environment. A daemon that does not allow the name does not run it (and logs that)."))
            .attribute(Attribute::string("on_failure_command").optional().deprecated("Daemons no longer run commands stored in the repository; use on_failure_hook with a hook the daemon allows.").validate(Arc::new(RemovedCommand)).description("Removed: a command stored in the repository would let anyone who can write the repository run code on every daemon."))
            .attribute(Attribute::string("on_failure_webhook").optional().sensitive().description("A URL the daemon POSTs a JSON summary to when a run fails (sensitive: such URLs often carry a token)."))
            .attribute(Attribute::string("next_run").computed().description("When the job runs next (RFC 3339), from its schedule and last run; null when disabled."))
            .attribute(Attribute::string("schedule_description").computed().description("The schedule in words."))
            .attribute(Attribute::new("last_run", last_run_type()).computed().description("The last run as the daemon recorded it: `started`, `finished`, `status` (`succeeded`, `partial`, `failed`, `aborted`), `backups`, `bytes` (read), `node` (the daemon), `error`. Null before the first run."))
            .block(
                NestedBlock::new(
                    "retention",
                    Nesting::List,
                    Block::new()
                        .description("How many backups of each VM to keep after each run (Proxmox rules: each keeps the newest backup of each of its last N periods). At least one must be above 0.")
                        .attribute(keep("keep_last", "The newest N backups."))
                        .attribute(keep("keep_daily", "The newest of each of the last N days."))
                        .attribute(keep("keep_weekly", "The newest of each of the last N ISO weeks."))
                        .attribute(keep("keep_monthly", "The newest of each of the last N months."))
                        .attribute(keep("keep_yearly", "The newest of each of the last N years.")),
                )
                .items(1, 1),
            ),
    )
}

/// Checks cron syntax at validate time; the diagnostic says what is wrong in the pattern.
struct CronValidator;

impl crate::framework::validator::Validator for CronValidator {
    fn description(&self) -> String {
        "Must be a cron schedule (5 fields, 6 with seconds, or @daily-style).".into()
    }
    fn validate(&self, value: &Value, path: &AttrPath, diags: &mut Diagnostics) {
        if let Value::String(s) = value {
            if let Err(e) = parse_cron(s) {
                diags.attr_error(path.clone(), "Invalid schedule", e.message);
            }
        }
    }
}

/// Refuses `on_failure_command`, saying what replaces it.
struct RemovedCommand;

impl crate::framework::validator::Validator for RemovedCommand {
    fn description(&self) -> String {
        "No longer accepted: use `on_failure_hook`.".into()
    }
    fn validate(&self, value: &Value, path: &AttrPath, diags: &mut Diagnostics) {
        if matches!(value, Value::String(_)) {
            diags.attr_error(
                path.clone(),
                "on_failure_command is no longer supported",
                "Daemons no longer run commands stored in the backup repository (anyone who can write the repository could run code on every daemon host). Move the command into the daemons' own configuration with `ceso-backup serve --allow-hook NAME=COMMAND`, and set `on_failure_hook = \"NAME\"` here instead.",
            );
        }
    }
}

struct TimezoneValidator;

impl crate::framework::validator::Validator for TimezoneValidator {
    fn description(&self) -> String {
        "Must be an IANA time zone name.".into()
    }
    fn validate(&self, value: &Value, path: &AttrPath, diags: &mut Diagnostics) {
        if let Value::String(s) = value {
            if let Err(e) = parse_timezone(s) {
                diags.attr_error(path.clone(), "Invalid time zone", e.message);
            }
        }
    }
}

struct RateValidator;

impl crate::framework::validator::Validator for RateValidator {
    fn description(&self) -> String {
        "Must be a rate such as `50M` or `100MiB`.".into()
    }
    fn validate(&self, value: &Value, path: &AttrPath, diags: &mut Diagnostics) {
        if let Value::String(s) = value {
            if let Err(e) = parse_rate(s) {
                diags.attr_error(path.clone(), "Invalid rate", e);
            }
        }
    }
}

fn repo_error(action: &str, e: impl std::fmt::Display) -> Diagnostics {
    Diagnostics::from_error(
        format!("Unable to {action}"),
        format!("{e}. Check `backup_repository` (and, for S3, the AWS_* environment)."),
    )
}

/// The repository's job store. To write (`check`), the repository must open with the
/// configured passphrase, and an encrypted one needs it: its daemons accept only definitions
/// authenticated with its key.
async fn store(state: &ProviderState, check: bool) -> Result<JobStore, Diagnostics> {
    let settings: &BackupSettings = state.backup()?;
    let url = RepositoryUrl::parse(&settings.repository)
        .map_err(|e| repo_error("use the backup repository", e))?;
    let backend: Arc<dyn Backend> = url
        .open()
        .map_err(|e| repo_error("open the backup repository", e))?;
    if !check {
        return Ok(JobStore::new(backend));
    }
    let key = settings.password.as_ref().map(|p| {
        crate::engine::backup::KeySource::Passphrase(crate::engine::backup::Passphrase::new(
            p.expose().to_string(),
        ))
    });
    match Repository::open(backend, key).await {
        Ok(repo) => Ok(JobStore::for_repository(&repo)),
        Err(crate::engine::backup::Error::KeyRequired) => Err(Diagnostics::from_error(
            "Unable to write the job",
            "The backup repository is encrypted, and daemons accept only job definitions authenticated with its key. Set `backup_password` in the provider block (or CESO_BACKUP_PASSWORD).",
        )),
        Err(e) => Err(repo_error("open the backup repository", e)),
    }
}

impl JobModel {
    /// The definition to write.
    fn spec(&self) -> Result<JobSpec, Diagnostics> {
        let r = self
            .retention
            .as_ref()
            .and_then(|r| r.first())
            .cloned()
            .unwrap_or_default();
        let n = |v: Option<i64>| v.unwrap_or(0).clamp(0, u32::MAX as i64) as u32;
        let spec = JobSpec {
            name: self.name.clone(),
            schedule: self.schedule.clone(),
            timezone: self.timezone.clone().unwrap_or_else(|| "UTC".into()),
            vm_ids: self.vm_ids.clone().unwrap_or_default(),
            vm_name_regex: self.vm_name_regex.clone(),
            tags: self.tags.clone().unwrap_or_default(),
            endpoint: self.endpoint.clone(),
            mode: match self.mode.as_deref() {
                Some("quiesce") => Mode::Quiesce,
                Some("powered_off_only") => Mode::PoweredOffOnly,
                _ => Mode::Snapshot,
            },
            retention: Retention {
                keep_last: n(r.keep_last),
                keep_daily: n(r.keep_daily),
                keep_weekly: n(r.keep_weekly),
                keep_monthly: n(r.keep_monthly),
                keep_yearly: n(r.keep_yearly),
            },
            max_parallel: self.max_parallel.unwrap_or(1).max(1) as u32,
            max_rate: self.max_rate.as_deref().and_then(|r| parse_rate(r).ok()),
            enabled: self.enabled.unwrap_or(true),
            verify_after: self.verify_after.unwrap_or(false),
            on_failure_hook: self.on_failure_hook.clone(),
            on_failure_command: None,
            on_failure_webhook: self.on_failure_webhook.clone(),
            updated_by: format!(
                "terraform ({})",
                std::env::var("USER").unwrap_or_else(|_| "unknown user".into())
            ),
            updated_at: Some(Utc::now()),
        };
        let problems = spec.validate();
        if problems.is_empty() {
            Ok(spec)
        } else {
            let mut d = Diagnostics::new();
            for p in problems {
                d.attr_error(AttrPath::attr(p.field), "Invalid backup job", p.message);
            }
            Err(d)
        }
    }

    /// The state of a stored definition and status; `max_rate` keeps its spelling when it
    /// means the same bytes.
    fn from_spec(spec: &JobSpec, status: &JobStatus, prior: &JobModel) -> Self {
        let rate = match (&prior.max_rate, spec.max_rate) {
            (Some(text), Some(b)) if parse_rate(text).ok() == Some(b) => Some(text.clone()),
            (_, Some(b)) => Some(b.to_string()),
            (_, None) => None,
        };
        let keep = |v: u32, was: Option<i64>| match (v, was) {
            (0, None) => None,
            (v, _) => Some(i64::from(v)),
        };
        let was = prior
            .retention
            .as_ref()
            .and_then(|r| r.first())
            .cloned()
            .unwrap_or_default();
        let r = spec.retention;
        JobModel {
            id: Some(spec.name.clone()),
            endpoint: spec.endpoint.clone(),
            name: spec.name.clone(),
            schedule: spec.schedule.clone(),
            timezone: Some(spec.timezone.clone()),
            vm_ids: (!spec.vm_ids.is_empty() || prior.vm_ids.is_some())
                .then(|| spec.vm_ids.clone()),
            vm_name_regex: spec.vm_name_regex.clone(),
            tags: (!spec.tags.is_empty() || prior.tags.is_some()).then(|| spec.tags.clone()),
            mode: Some(spec.mode.as_str().to_string()),
            max_parallel: Some(i64::from(spec.max_parallel)),
            max_rate: rate,
            enabled: Some(spec.enabled),
            verify_after: Some(spec.verify_after),
            on_failure_hook: spec.on_failure_hook.clone(),
            on_failure_command: spec.on_failure_command.clone(),
            on_failure_webhook: spec.on_failure_webhook.clone(),
            next_run: spec
                .enabled
                .then(|| next_run(spec, status))
                .flatten()
                .map(|t| t.to_rfc3339()),
            schedule_description: spec.schedule().ok().map(|s| s.describe()),
            last_run: status.last_run.as_ref().map(|l| LastRunModel {
                started: l.started.to_rfc3339(),
                finished: l.finished.to_rfc3339(),
                status: l.status.as_str().to_string(),
                backups: i64::from(l.backups),
                bytes: l.bytes.min(i64::MAX as u64) as i64,
                node: l.node.clone(),
                error: l.error.clone(),
            }),
            retention: Some(vec![RetentionModel {
                keep_last: keep(r.keep_last, was.keep_last),
                keep_daily: keep(r.keep_daily, was.keep_daily),
                keep_weekly: keep(r.keep_weekly, was.keep_weekly),
                keep_monthly: keep(r.keep_monthly, was.keep_monthly),
                keep_yearly: keep(r.keep_yearly, was.keep_yearly),
            }]),
        }
    }
}

/// Writes the planned definition; the job as stored then, or nothing new on failure.
async fn write(state: &ProviderState, m: &JobModel) -> Outcome<JobModel> {
    let spec = match m.spec() {
        Ok(s) => s,
        Err(d) => return Outcome::failed(d),
    };
    let store = match store(state, true).await {
        Ok(s) => s,
        Err(d) => return Outcome::failed(d),
    };
    if let Err(e) = store.put_job(&spec).await {
        return Outcome::failed(repo_error("write the job", e));
    }
    let status = store.status(&spec.name).await.unwrap_or_default();
    Outcome::ok(JobModel::from_spec(&spec, &status, m))
}

/// What validation reads of a configuration.
#[derive(Deserialize)]
struct ValidateView {
    vm_ids: Tri<Vec<serde::de::IgnoredAny>>,
    vm_name_regex: Tri<String>,
    tags: Tri<Vec<serde::de::IgnoredAny>>,
    retention: Tri<Vec<RetentionView>>,
}

#[derive(Deserialize)]
struct RetentionView {
    keep_last: Tri<i64>,
    keep_daily: Tri<i64>,
    keep_weekly: Tri<i64>,
    keep_monthly: Tri<i64>,
    keep_yearly: Tri<i64>,
}

impl RetentionView {
    /// Whether every keep_* is known, and 0 or unset.
    fn keeps_nothing(&self) -> bool {
        [
            &self.keep_last,
            &self.keep_daily,
            &self.keep_weekly,
            &self.keep_monthly,
            &self.keep_yearly,
        ]
        .iter()
        .all(|k| matches!(k, Tri::Null | Tri::Known(0)))
    }
}

#[async_trait]
impl TypedResource for BackupJob {
    type Model = JobModel;
    type Connect = ProviderWide;
    const TYPE_NAME: &'static str = "ceso_backup_job";

    fn schema() -> Schema {
        schema()
    }

    fn validate(config: &Config<'_>, diags: &mut Diagnostics) {
        let Ok(c) = config.decode::<ValidateView>() else {
            return;
        };
        if let Some(r) = c.retention.known().and_then(|r| r.first()) {
            if r.keeps_nothing() {
                diags.attr_error(
                    AttrPath::attr("retention").join_index(0),
                    "Retention keeps nothing",
                    "Every keep_* is 0 or unset, which would delete every backup after each run; keep at least one (e.g. keep_last = 7).",
                );
            }
        }
        let empty = |v: &Tri<Vec<serde::de::IgnoredAny>>| match v {
            Tri::Null => true,
            Tri::Known(l) => l.is_empty(),
            Tri::Unknown => false,
        };
        if empty(&c.vm_ids) && c.vm_name_regex.is_null() && empty(&c.tags) {
            diags.attr_error(
                AttrPath::attr("vm_ids"),
                "No VMs to back up",
                "Name the VMs: vm_ids, vm_name_regex or tags.",
            );
        }
    }

    async fn create(&self, call: &Call<'_, Arc<ProviderState>>, m: JobModel) -> Outcome<JobModel> {
        if let Ok(store) = store(&call.conn, false).await {
            if let Ok(Some(_)) = store.job(&m.name).await {
                return Outcome::failed(Diagnostics::from_attr_error(
                    AttrPath::attr("name"),
                    "Job already exists",
                    format!("The repository already has a job named {:?}; import it (terraform import {}.NAME {}) or choose another name.", m.name, Self::TYPE_NAME, m.name),
                ));
            }
        }
        write(&call.conn, &m).await
    }

    async fn read(
        &self,
        call: &Call<'_, Arc<ProviderState>>,
        prior: JobModel,
    ) -> Result<Option<JobModel>, Diagnostics> {
        let store = store(&call.conn, false).await?;
        let Some(spec) = store
            .job(&prior.name)
            .await
            .map_err(|e| repo_error("read the job", e))?
        else {
            return Ok(None);
        };
        let status = store
            .status(&prior.name)
            .await
            .map_err(|e| repo_error("read the job's status", e))?;
        Ok(Some(JobModel::from_spec(&spec, &status, &prior)))
    }

    async fn update(
        &self,
        call: &Call<'_, Arc<ProviderState>>,
        _prior: JobModel,
        m: JobModel,
    ) -> Outcome<JobModel> {
        write(&call.conn, &m).await
    }

    async fn delete(&self, call: &Call<'_, Arc<ProviderState>>, m: JobModel) -> Diagnostics {
        let store = match store(&call.conn, false).await {
            Ok(s) => s,
            Err(d) => return d,
        };
        match store.delete_job(&m.name).await {
            Ok(()) => Diagnostics::new(),
            Err(e) => repo_error("delete the job", e),
        }
    }
}

#[async_trait]
impl Import<BackupJob> for BackupJob {
    fn id_format(&self) -> &'static str {
        "the job's name (`ceso-backup jobs` lists them)"
    }

    async fn import(
        &self,
        call: &Call<'_, Arc<ProviderState>>,
        id: &str,
    ) -> Result<Vec<JobModel>, Diagnostics> {
        let store = store(&call.conn, false).await?;
        let spec = store
            .job(id)
            .await
            .map_err(|e| repo_error("read the job", e))?
            .ok_or_else(|| {
                Diagnostics::from_error(
                    "Unable to import ceso_backup_job",
                    format!(
                        "The repository has no job named {id:?}; `ceso-backup jobs` lists them."
                    ),
                )
            })?;
        let status = store.status(id).await.unwrap_or_default();
        Ok(vec![JobModel::from_spec(
            &spec,
            &status,
            &JobModel::default(),
        )])
    }
}
