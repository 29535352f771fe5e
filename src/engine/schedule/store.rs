//! Jobs in the repository: definitions (`jobs/<name>.json`), statuses
//! (`job-status/<name>.json`) and run leases (`job-leases/<name>/<generation>.json`).
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
use crate::engine::backup::{Backend, Error, Result};

use super::job::{JobSpec, JobStatus};

const JOBS: &str = "jobs/";
const STATUS: &str = "job-status/";
const LEASES: &str = "job-leases/";

/// The job objects of one repository.
#[derive(Clone, Debug)]
pub struct JobStore {
    backend: Arc<dyn Backend>,
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
    generation: u64,
    record: LeaseRecord,
}

impl JobLease {
    /// The job.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// Its generation number.
    pub fn generation(&self) -> u64 {
        self.generation
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

impl JobStore {
    /// The jobs of the repository behind `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    /// Writes (creates or replaces) a job definition.
    pub async fn put_job(&self, spec: &JobSpec) -> Result<()> {
        self.backend
            .put(&format!("{JOBS}{}.json", spec.name), json(spec)?)
            .await
    }

    /// A job definition; `None` when there is none.
    pub async fn job(&self, name: &str) -> Result<Option<JobSpec>> {
        let key = format!("{JOBS}{name}.json");
        match self.backend.get(&key).await {
            Ok(data) => parse(&key, &data).map(Some),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every job definition, by name. A definition that cannot be read is reported, not
    /// skipped silently.
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
                Ok(data) => parse::<JobSpec>(&key, &data),
                Err(e) => Err(e),
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

    /// The newest lease generation of a job and its record.
    async fn newest_lease(&self, job: &str) -> Result<Option<(u64, LeaseRecord)>> {
        let mut generations: Vec<u64> = self
            .backend
            .list(&format!("{LEASES}{job}/"))
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
        let key = format!("{LEASES}{job}/{newest:020}.json");
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
        let now = Utc::now();
        let skew = ChronoDuration::from_std(clock_skew).unwrap_or(ChronoDuration::seconds(30));
        let next = match self.newest_lease(job).await? {
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
        let key = format!("{LEASES}{job}/{next:020}.json");
        match self.backend.put_if_absent(&key, json(&record)?).await? {
            PutOutcome::Created => {
                // Older generations are history now.
                if next > 2 {
                    let _ = self
                        .backend
                        .delete(&format!("{LEASES}{job}/{:020}.json", next - 2))
                        .await;
                }
                Ok(Some(JobLease {
                    job: job.to_string(),
                    generation: next,
                    record,
                }))
            }
            PutOutcome::AlreadyExists => Ok(None),
        }
    }

    /// Extends a held lease by `ttl`; an error when it was lost (a newer generation exists:
    /// it expired and another daemon took the job).
    pub async fn renew(&self, lease: &mut JobLease, ttl: std::time::Duration) -> Result<()> {
        if let Some((newest, r)) = self.newest_lease(&lease.job).await? {
            if newest != lease.generation {
                return Err(Error::InvalidArgument(format!(
                    "the lease of job {} was lost to {} (it expired)",
                    lease.job, r.node
                )));
            }
        }
        lease.record.expires =
            Utc::now() + ChronoDuration::from_std(ttl).unwrap_or(ChronoDuration::seconds(60));
        self.backend
            .put(
                &format!("{LEASES}{}/{:020}.json", lease.job, lease.generation),
                json(&lease.record)?,
            )
            .await
    }

    /// Gives a lease back (the run finished).
    pub async fn release(&self, mut lease: JobLease) -> Result<()> {
        if let Some((newest, _)) = self.newest_lease(&lease.job).await? {
            if newest != lease.generation {
                return Ok(()); // someone else holds it now
            }
        }
        lease.record.released = true;
        self.backend
            .put(
                &format!("{LEASES}{}/{:020}.json", lease.job, lease.generation),
                json(&lease.record)?,
            )
            .await
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
        let ttl = Duration::from_millis(300);
        let skew = Duration::from_millis(100);
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
        tokio::time::sleep(Duration::from_millis(340)).await;
        assert!(
            s.try_lease("j", "b", ttl, skew).await.unwrap().is_none(),
            "within the clock skew"
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
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
