//! Jobs in the repository: definitions (`jobs/<name>.json`), statuses
//! (`job-status/<name>.json`) and run leases (`job-leases/<name>/<generation>.json`); and the
//! same for the daemons' repository-wide tasks such as gc (`maintenance/<task>.json`,
//! `maintenance-leases/<task>/<generation>.json`).
//!
//! # Authenticated definitions
//!
//! Job definitions are plain JSON, so `terraform plan` and `ceso-backup jobs` can read them
//! without the key. In an encrypted repository each carries a `mac`: a keyed BLAKE3 MAC
//! (derived from the repository key) over the job's name and canonical JSON. A store opened
//! with the key ([`JobStore::for_repository`]) refuses a definition whose MAC is missing or
//! wrong, so only holders of the key can define what daemons run. An unencrypted repository
//! has no secret to authenticate with: whoever can write it can define jobs, which is why a
//! job can only name hooks a daemon's own configuration allows (see [`super::hooks`]).
//!
//! # Leases
//!
//! A run holds the job's lease, so no two daemons run one job at once. Leases are numbered
//! generations created with a conditional create (`put_if_absent`), never overwritten by
//! anyone but their holder: to take a job, a daemon creates generation `n + 1` after seeing
//! generation `n` released or expired. Two daemons racing for `n + 1` cannot both win. The
//! holder renews by rewriting its own generation, and gives up (stops the run) when it finds a
//! newer generation, which can only exist if its lease expired. Clocks of daemons sharing a
//! repository should agree to well within the lease's time to live.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::engine::backup::backend::PutOutcome;
use crate::engine::backup::crypto::DefinitionAuthenticator;
use crate::engine::backup::{Backend, Error, Repository, Result};

use super::job::{JobSpec, JobStatus};

const JOBS: &str = "jobs/";
const STATUS: &str = "job-status/";
const LEASES: &str = "job-leases/";
const MAINTENANCE: &str = "maintenance/";
const MAINTENANCE_LEASES: &str = "maintenance-leases/";
/// What the MAC of a job definition is bound to, besides its name.
const JOB_MAC_KIND: &str = "job definition";

/// The job objects of one repository.
#[derive(Clone, Debug)]
pub struct JobStore {
    backend: Arc<dyn Backend>,
    auth: Option<DefinitionAuthenticator>,
}

/// One lease generation as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The daemon holding it.
    pub node: String,
    /// When it was taken.
    pub acquired: DateTime<Utc>,
    /// When it lapses unless renewed.
    pub expires: DateTime<Utc>,
    /// Released on purpose (the run finished).
    pub released: bool,
}

/// A held lease.
#[derive(Clone, Debug)]
pub struct JobLease {
    job: String,
    /// The folder of its generations, e.g. `job-leases/<job>/`.
    prefix: String,
    generation: u64,
    record: LeaseRecord,
}

impl JobLease {
    /// The job (or maintenance task).
    pub fn job(&self) -> &str {
        &self.job
    }

    /// Its generation number.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When it lapses unless renewed (by the holder's clock).
    pub fn expires(&self) -> DateTime<Utc> {
        self.record.expires
    }

    fn key(&self) -> String {
        format!("{}{:020}.json", self.prefix, self.generation)
    }
}

fn json<T: Serialize>(value: &T) -> Result<Bytes> {
    serde_json::to_vec_pretty(value)
        .map(Bytes::from)
        .map_err(|e| Error::InvalidArgument(format!("cannot encode: {e}")))
}

fn parse<T: for<'de> Deserialize<'de>>(what: &str, data: &[u8]) -> Result<T> {
    serde_json::from_slice(data)
        .map_err(|e| Error::InvalidArgument(format!("{what} is not valid: {e}")))
}

/// The bytes a job definition's MAC covers: its compact JSON as this version writes it.
fn canonical(spec: &JobSpec) -> Result<Vec<u8>> {
    serde_json::to_vec(spec).map_err(|e| Error::InvalidArgument(format!("cannot encode: {e}")))
}

impl JobStore {
    /// The jobs of the repository behind `backend`, read and written without authentication
    /// (an unencrypted repository, or reading without the key).
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            auth: None,
        }
    }

    /// The jobs of an open repository: in an encrypted one, definitions are signed when
    /// written and refused when read unless their MAC checks out.
    pub fn for_repository(repo: &Repository) -> Self {
        Self {
            backend: repo.backend().clone(),
            auth: repo.definition_authenticator(),
        }
    }

    /// Whether definitions are authenticated.
    pub fn authenticated(&self) -> bool {
        self.auth.is_some()
    }

    /// Writes (creates or replaces) a job definition, signed when the store authenticates.
    pub async fn put_job(&self, spec: &JobSpec) -> Result<()> {
        let mut value = serde_json::to_value(spec)
            .map_err(|e| Error::InvalidArgument(format!("cannot encode: {e}")))?;
        if let Some(auth) = &self.auth {
            let mac = auth.sign(JOB_MAC_KIND, &spec.name, &canonical(spec)?);
            if let serde_json::Value::Object(map) = &mut value {
                map.insert("mac".into(), serde_json::Value::String(mac));
            }
        }
        self.backend
            .put(&format!("{JOBS}{}.json", spec.name), json(&value)?)
            .await
    }

    /// Parses a stored definition, checking its name and, when authenticating, its MAC.
    fn decode_job(&self, key: &str, data: &[u8]) -> Result<JobSpec> {
        let mut value: serde_json::Value = parse(key, data)?;
        let mac = match &mut value {
            serde_json::Value::Object(map) => map.remove("mac"),
            _ => None,
        };
        let spec: JobSpec = serde_json::from_value(value)
            .map_err(|e| Error::InvalidArgument(format!("{key} is not valid: {e}")))?;
        if key != format!("{JOBS}{}.json", spec.name) {
            return Err(Error::corrupt(
                key,
                format!("it defines job {:?}", spec.name),
            ));
        }
        if let Some(auth) = &self.auth {
            let ok = mac.as_ref().and_then(|m| m.as_str()).is_some_and(|m| {
                auth.verify(
                    JOB_MAC_KIND,
                    &spec.name,
                    &canonical(&spec).unwrap_or_default(),
                    m,
                )
            });
            if !ok {
                return Err(Error::Authentication {
                    what: format!(
                        "job definition {key} (written without the repository's key, changed \
                         since, or by another version of ceso; write it again with the key, \
                         e.g. terraform apply with backup_password)"
                    ),
                });
            }
        }
        Ok(spec)
    }

    /// A job definition; `None` when there is none.
    pub async fn job(&self, name: &str) -> Result<Option<JobSpec>> {
        let key = format!("{JOBS}{name}.json");
        match self.backend.get(&key).await {
            Ok(data) => self.decode_job(&key, &data).map(Some),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every job definition, by name. A definition that cannot be read (or is refused) is
    /// reported, not skipped silently.
    pub async fn jobs(&self) -> Result<Vec<std::result::Result<JobSpec, (String, Error)>>> {
        let mut keys: Vec<String> = self
            .backend
            .list(JOBS)
            .map_ok(|m| m.key)
            .try_collect()
            .await?;
        keys.retain(|k| k.ends_with(".json"));
        keys.sort();
        let mut out = Vec::new();
        for key in keys {
            let read = match self.backend.get(&key).await {
                Ok(data) => self.decode_job(&key, &data),
                Err(Error::NotFound { .. }) => continue, // deleted meanwhile
                Err(e) => return Err(e),
            };
            out.push(read.map_err(|e| (key, e)));
        }
        Ok(out)
    }

    /// Deletes a job's definition, status and leases (never its backups).
    pub async fn delete_job(&self, name: &str) -> Result<()> {
        self.backend.delete(&format!("{JOBS}{name}.json")).await?;
        self.backend.delete(&format!("{STATUS}{name}.json")).await?;
        let leases: Vec<String> = self
            .backend
            .list(&format!("{LEASES}{name}/"))
            .map_ok(|m| m.key)
            .try_collect()
            .await?;
        for key in leases {
            self.backend.delete(&key).await?;
        }
        Ok(())
    }

    /// A job's status (empty before its first run).
    pub async fn status(&self, name: &str) -> Result<JobStatus> {
        let key = format!("{STATUS}{name}.json");
        match self.backend.get(&key).await {
            Ok(data) => parse(&key, &data),
            Err(Error::NotFound { .. }) => Ok(JobStatus::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes a job's status.
    pub async fn put_status(&self, name: &str, status: &JobStatus) -> Result<()> {
        self.backend
            .put(&format!("{STATUS}{name}.json"), json(status)?)
            .await
    }

    /// A repository-wide task's status (`maintenance/<task>.json`, empty before its first
    /// run).
    pub async fn maintenance_status(&self, task: &str) -> Result<JobStatus> {
        let key = format!("{MAINTENANCE}{task}.json");
        match self.backend.get(&key).await {
            Ok(data) => parse(&key, &data),
            Err(Error::NotFound { .. }) => Ok(JobStatus::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes a repository-wide task's status.
    pub async fn put_maintenance_status(&self, task: &str, status: &JobStatus) -> Result<()> {
        self.backend
            .put(&format!("{MAINTENANCE}{task}.json"), json(status)?)
            .await
    }

    /// The newest lease generation under `prefix` and its record.
    async fn newest_lease(&self, prefix: &str) -> Result<Option<(u64, LeaseRecord)>> {
        let mut generations: Vec<u64> = self
            .backend
            .list(prefix)
            .map_ok(|m| m.key)
            .try_collect::<Vec<String>>()
            .await?
            .iter()
            .filter_map(|k| k.rsplit('/').next()?.strip_suffix(".json")?.parse().ok())
            .collect();
        generations.sort_unstable();
        let Some(newest) = generations.last().copied() else {
            return Ok(None);
        };
        let key = format!("{prefix}{newest:020}.json");
        match self.backend.get(&key).await {
            Ok(data) => Ok(Some((newest, parse(&key, &data)?))),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Takes the job's lease for `ttl` unless another daemon holds it; `None` when it does.
    /// Another daemon's lease counts as lapsed only `clock_skew` after it expires.
    pub async fn try_lease(
        &self,
        job: &str,
        node: &str,
        ttl: std::time::Duration,
        clock_skew: std::time::Duration,
    ) -> Result<Option<JobLease>> {
        self.try_lease_in(job, &format!("{LEASES}{job}/"), node, ttl, clock_skew)
            .await
    }

    /// Takes the lease of a repository-wide task (e.g. `gc`), as [`JobStore::try_lease`].
    pub async fn try_maintenance_lease(
        &self,
        task: &str,
        node: &str,
        ttl: std::time::Duration,
        clock_skew: std::time::Duration,
    ) -> Result<Option<JobLease>> {
        self.try_lease_in(
            task,
            &format!("{MAINTENANCE_LEASES}{task}/"),
            node,
            ttl,
            clock_skew,
        )
        .await
    }

    async fn try_lease_in(
        &self,
        job: &str,
        prefix: &str,
        node: &str,
        ttl: std::time::Duration,
        clock_skew: std::time::Duration,
    ) -> Result<Option<JobLease>> {
        let now = Utc::now();
        let skew = ChronoDuration::from_std(clock_skew).unwrap_or(ChronoDuration::seconds(30));
        let next = match self.newest_lease(prefix).await? {
            Some((_, r)) if !r.released && r.expires + skew > now => return Ok(None),
            Some((n, _)) => n + 1,
            None => 1,
        };
        let record = LeaseRecord {
            node: node.to_string(),
            acquired: now,
            expires: now + ChronoDuration::from_std(ttl).unwrap_or(ChronoDuration::seconds(60)),
            released: false,
        };
        let lease = JobLease {
            job: job.to_string(),
            prefix: prefix.to_string(),
            generation: next,
            record,
        };
        match self
            .backend
            .put_if_absent(&lease.key(), json(&lease.record)?)
            .await?
        {
            PutOutcome::Created => {
                // Older generations are history now.
                if next > 2 {
                    let _ = self
                        .backend
                        .delete(&format!("{prefix}{:020}.json", next - 2))
                        .await;
                }
                Ok(Some(lease))
            }
            PutOutcome::AlreadyExists => Ok(None),
        }
    }

    /// Extends a held lease by `ttl`. Fails with [`Error::LeaseLost`] when it was lost (a newer
    /// generation exists: it expired and another daemon took the job); other errors (the
    /// repository unreachable) may be retried until it expires.
    pub async fn renew(&self, lease: &mut JobLease, ttl: std::time::Duration) -> Result<()> {
        if Utc::now() >= lease.record.expires {
            return Err(Error::LeaseLost {
                key: lease.key(),
                reason: "it expired before it was renewed".into(),
            });
        }
        if let Some((newest, r)) = self.newest_lease(&lease.prefix).await? {
            if newest != lease.generation {
                return Err(Error::LeaseLost {
                    key: lease.key(),
                    reason: format!("{} took {} over after it expired", r.node, lease.job),
                });
            }
        }
        let expires =
            Utc::now() + ChronoDuration::from_std(ttl).unwrap_or(ChronoDuration::seconds(60));
        let record = LeaseRecord {
            expires,
            ..lease.record.clone()
        };
        self.backend.put(&lease.key(), json(&record)?).await?;
        lease.record = record;
        Ok(())
    }

    /// Gives a lease back (the run finished).
    pub async fn release(&self, mut lease: JobLease) -> Result<()> {
        if let Some((newest, _)) = self.newest_lease(&lease.prefix).await? {
            if newest != lease.generation {
                return Ok(()); // someone else holds it now
            }
        }
        lease.record.released = true;
        self.backend.put(&lease.key(), json(&lease.record)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::backup::LocalBackend;
    use std::time::Duration;

    fn store() -> (tempfile::TempDir, JobStore) {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path().to_path_buf()));
        (dir, JobStore::new(backend))
    }

    #[tokio::test]
    async fn jobs_round_trip_and_delete_keeps_nothing_of_them() {
        let (_d, s) = store();
        let spec = JobSpec {
            name: "nightly".into(),
            schedule: "@daily".into(),
            ..JobSpec::default()
        };
        s.put_job(&spec).await.unwrap();
        assert_eq!(s.job("nightly").await.unwrap(), Some(spec.clone()));
        assert_eq!(s.jobs().await.unwrap().len(), 1);
        s.delete_job("nightly").await.unwrap();
        assert_eq!(s.job("nightly").await.unwrap(), None);
        assert!(s.jobs().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_expired_leases_move_on() {
        let (_d, s) = store();
        // Margins of hundreds of milliseconds: a loaded machine's fsyncs take that long.
        let ttl = Duration::from_millis(1000);
        let skew = Duration::from_millis(800);
        let mut a = s
            .try_lease("j", "a", ttl, skew)
            .await
            .unwrap()
            .expect("a takes it");
        assert!(
            s.try_lease("j", "b", ttl, skew).await.unwrap().is_none(),
            "held"
        );
        s.renew(&mut a, ttl).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(
            s.try_lease("j", "b", ttl, skew).await.unwrap().is_none(),
            "within the clock skew"
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
        let b = s
            .try_lease("j", "b", ttl, skew)
            .await
            .unwrap()
            .expect("expired: b takes it");
        assert!(b.generation() > a.generation());
        assert!(
            s.renew(&mut a, ttl).await.is_err(),
            "a learns it lost the job"
        );
        s.release(a).await.unwrap();
        assert!(
            s.try_lease("j", "c", ttl, skew).await.unwrap().is_none(),
            "a's release does not free b's lease"
        );
        s.release(b).await.unwrap();
        assert!(
            s.try_lease("j", "c", ttl, skew).await.unwrap().is_some(),
            "released"
        );
    }

    #[tokio::test]
    async fn encrypted_repositories_accept_only_definitions_signed_with_their_key() {
        use crate::engine::backup::crypto::{test_kdf, KeySource, Passphrase};
        use crate::engine::backup::{InitOptions, LocalBackend};
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        let repo = Repository::init(
            backend.clone(),
            InitOptions {
                key: Some(KeySource::Passphrase(Passphrase::new("k"))),
                kdf: Some(test_kdf()),
                ..InitOptions::default()
            },
        )
        .await
        .unwrap();
        let signed = JobStore::for_repository(&repo);
        assert!(signed.authenticated());
        let spec = JobSpec {
            name: "nightly".into(),
            schedule: "@daily".into(),
            on_failure_hook: Some("page".into()),
            ..JobSpec::default()
        };
        signed.put_job(&spec).await.unwrap();
        assert_eq!(signed.job("nightly").await.unwrap(), Some(spec.clone()));
        let text = std::fs::read_to_string(dir.path().join("jobs/nightly.json")).unwrap();
        assert!(text.contains("\"mac\""), "{text}");

        // Someone with write access but no key edits the JSON: refused.
        let tampered = text.replace("\"page\"", "\"other\"");
        std::fs::write(dir.path().join("jobs/nightly.json"), &tampered).unwrap();
        let err = signed.job("nightly").await.unwrap_err();
        assert!(matches!(err, Error::Authentication { .. }), "{err}");
        // ... or writes a definition of their own, unsigned: refused too.
        let unsigned = JobStore::new(backend.clone());
        let mut evil = spec.clone();
        evil.name = "evil".into();
        unsigned.put_job(&evil).await.unwrap();
        let listed = signed.jobs().await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed
            .iter()
            .all(|j| matches!(j, Err((_, Error::Authentication { .. })))));
        // A definition copied under another job's name is refused as well.
        signed.put_job(&spec).await.unwrap();
        let good = std::fs::read(dir.path().join("jobs/nightly.json")).unwrap();
        std::fs::write(dir.path().join("jobs/copy.json"), good).unwrap();
        assert!(signed.job("copy").await.is_err());
        // Reading without the key (plan, `ceso-backup jobs`) still shows them.
        assert_eq!(unsigned.job("evil").await.unwrap(), Some(evil));
    }

    #[tokio::test]
    async fn racing_daemons_cannot_both_win() {
        let (_d, s) = store();
        let ttl = Duration::from_secs(30);
        let tries = (0..8).map(|i| {
            let s = s.clone();
            async move { s.try_lease("j", &format!("n{i}"), ttl, ttl).await.unwrap() }
        });
        let won = futures::future::join_all(tries)
            .await
            .into_iter()
            .flatten()
            .count();
        assert_eq!(won, 1);
    }
}
