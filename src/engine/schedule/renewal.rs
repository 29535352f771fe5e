//! Keeps a run's lease (a job's, or gc's) renewed while the run goes on: every third of its
//! TTL, retrying a failed renewal until the lease would really lapse by our clock. Only a lease
//! that is lost (lapsed, or taken over) stops the run, through its cancellation token.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::store::{JobLease, JobStore};
use crate::engine::backup::Error;

/// First pause before retrying a failed renewal; it doubles up to the renewal period.
const FIRST_RETRY: Duration = Duration::from_millis(200);

/// A running renewer; [`Renewal::finish`] stops it and hands the lease back.
#[derive(Debug)]
pub struct Renewal {
    task: tokio::task::JoinHandle<(JobLease, bool)>,
    done: CancellationToken,
}

impl Renewal {
    /// Renews `lease` for `ttl` until [`Renewal::finish`]; cancels `run` if it is lost.
    pub fn start(store: JobStore, lease: JobLease, ttl: Duration, run: CancellationToken) -> Self {
        let done = CancellationToken::new();
        let task = tokio::spawn(renew(store, lease, ttl, run, done.clone()));
        Self { task, done }
    }

    /// Stops renewing; returns the lease and whether it was lost.
    pub async fn finish(self, fallback: JobLease) -> (JobLease, bool) {
        self.done.cancel();
        self.task.await.unwrap_or((fallback, true))
    }
}

async fn renew(
    store: JobStore,
    mut lease: JobLease,
    ttl: Duration,
    run: CancellationToken,
    done: CancellationToken,
) -> (JobLease, bool) {
    let period = (ttl / 3).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            () = done.cancelled() => return (lease, false),
            () = tokio::time::sleep(period) => {}
        }
        let mut retry = FIRST_RETRY;
        loop {
            match store.renew(&mut lease, ttl).await {
                Ok(()) => break,
                Err(e @ Error::LeaseLost { .. }) => {
                    tracing::warn!(job = %lease.job(), error = %e, "lost the lease: stopping the run");
                    run.cancel();
                    return (lease, true);
                }
                Err(e) => {
                    let left = (lease.expires() - Utc::now()).to_std().unwrap_or_default();
                    tracing::warn!(job = %lease.job(), error = %e, left_ms = left.as_millis() as u64,
                        "cannot renew the lease; retrying until it would lapse");
                    tokio::select! {
                        () = done.cancelled() => return (lease, false),
                        () = tokio::time::sleep(retry.min(left)) => {}
                    }
                    retry = (retry * 2).min(period);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::backup::test_support::FlakyBackend;

    #[tokio::test]
    async fn a_short_outage_is_ridden_out_and_a_long_one_stops_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let flaky = FlakyBackend::new(dir.path());
        let store = JobStore::new(flaky.clone());
        let ttl = Duration::from_millis(1500);
        let skew = Duration::ZERO;
        let lease = store.try_lease("j", "a", ttl, skew).await.unwrap().unwrap();
        let run = CancellationToken::new();
        let renewal = Renewal::start(store.clone(), lease.clone(), ttl, run.clone());
        tokio::time::sleep(Duration::from_millis(300)).await;
        flaky.set_down(true);
        tokio::time::sleep(Duration::from_millis(800)).await;
        flaky.set_down(false);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(
            !run.is_cancelled(),
            "survived an outage shorter than the lease"
        );
        flaky.set_down(true);
        tokio::time::timeout(Duration::from_secs(5), run.cancelled())
            .await
            .expect("stopped once the lease lapsed");
        flaky.set_down(false);
        let (_, lost) = renewal.finish(lease).await;
        assert!(lost);
    }
}
