//! Background renewal of a held lease: every third of its TTL, retrying a failed renewal (the
//! repository unreachable for a while) until the lease would really lapse by the holder's own
//! clock, and only then reporting it lost.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::Lease;
use crate::engine::backup::error::Error;

/// First pause before retrying a failed renewal; it doubles up to the renewal period.
const FIRST_RETRY: Duration = Duration::from_millis(200);

/// Renews a lease until stopped or dropped. When the lease is lost (it lapsed while the
/// repository could not be reached, or it was taken over), [`KeepAlive::lost`] fires and
/// renewal stops; the next [`Lease::renew`] reports why.
#[derive(Debug)]
pub struct KeepAlive {
    stop: Arc<tokio::sync::Notify>,
    task: Option<tokio::task::JoinHandle<()>>,
    lost: CancellationToken,
}

impl KeepAlive {
    pub(super) fn start(lease: Arc<Lease>) -> Self {
        let stop = Arc::new(tokio::sync::Notify::new());
        let lost = CancellationToken::new();
        let period = (lease.ttl() / 3).max(Duration::from_millis(10));
        let task = tokio::spawn(renew_until_stopped(
            lease,
            period,
            stop.clone(),
            lost.clone(),
        ));
        KeepAlive {
            stop,
            task: Some(task),
            lost,
        }
    }

    /// Fires when the lease is lost; work done under it must stop and commit nothing.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Stops renewing and waits for a renewal in progress to finish.
    pub async fn stop(mut self) {
        self.stop.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        // A stored permit: the task stops at its next wait even if it is renewing now.
        self.stop.notify_one();
    }
}

/// The renewal loop. The task is never cancelled in the middle of a renewal.
async fn renew_until_stopped(
    lease: Arc<Lease>,
    period: Duration,
    stop: Arc<tokio::sync::Notify>,
    lost: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = stop.notified() => return,
        }
        let mut retry = FIRST_RETRY;
        loop {
            match lease.renew().await {
                Ok(()) => break,
                Err(e @ Error::LeaseLost { .. }) => {
                    tracing::warn!(key = %lease.key(), error = %e, "lease lost");
                    lost.cancel();
                    return;
                }
                Err(e) => {
                    let left = (lease.info().expires - Utc::now())
                        .to_std()
                        .unwrap_or_default();
                    tracing::warn!(key = %lease.key(), error = %e, left_ms = left.as_millis() as u64,
                        "lease renewal failed; retrying until it would lapse");
                    tokio::select! {
                        () = tokio::time::sleep(retry.min(left)) => {}
                        () = stop.notified() => return,
                    }
                    retry = (retry * 2).min(period);
                }
            }
        }
    }
}
