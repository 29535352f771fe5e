//! Lease locks in the repository: shared for backups, exclusive for prune and gc.
//!
//! A lease is an object `locks/<name>/<holder>` holding its kind, purpose, holder, host, pid,
//! start and expiry. To take one, a client creates its own lease object (a conditional create
//! under a fresh random holder id), then lists `locks/<name>/`: if it sees a live conflicting
//! lease (any exclusive one, or any lease at all when it wants exclusive) it deletes its own
//! and backs off. Because each side writes before it looks, two conflicting clients can both
//! back off but never both win, with no compare-and-swap needed from the backend.
//!
//! A lease lives until `expires` and is renewed by its holder (every third of the TTL by
//! [`KeepAlive`]). One whose `expires` (plus the allowed clock skew) has passed is dead: others
//! ignore it and delete it, which is how an expired lease is taken over. A holder never renews
//! a lease its own clock says has expired, and renewing checks that its object is still there,
//! so a holder that was stopped past its expiry finds out ([`Error::LeaseLost`]) before it
//! commits anything.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::backend::{Backend, PutOutcome};
use super::error::{Error, Result};
use super::manifest::rfc3339;

/// The folder leases live under.
pub const LOCK_PREFIX: &str = "locks/";
/// The repository-wide lock backups, prune and gc coordinate on.
pub const REPOSITORY_LOCK: &str = "repository";

/// Shared or exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaseKind {
    /// Any number at once, none while an exclusive lease is live (backups).
    Shared,
    /// Alone (prune, gc).
    Exclusive,
}

impl fmt::Display for LeaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeaseKind::Shared => "shared",
            LeaseKind::Exclusive => "exclusive",
        })
    }
}

/// What a lease object says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// Random holder id (also the object's name).
    pub holder: String,
    /// Shared or exclusive.
    pub kind: LeaseKind,
    /// What the holder is doing, e.g. `backup of web-1` or `gc`.
    pub purpose: String,
    /// The holder's host name.
    pub host: String,
    /// The holder's process id.
    pub pid: u32,
    /// When the lease was taken.
    #[serde(with = "rfc3339")]
    pub started: DateTime<Utc>,
    /// When it expires unless renewed.
    #[serde(with = "rfc3339")]
    pub expires: DateTime<Utc>,
}

/// Timing of leases.
#[derive(Clone, Copy, Debug)]
pub struct LockOptions {
    /// How long a lease lives without renewal (default 5 minutes).
    pub ttl: Duration,
    /// How long to keep retrying while a conflicting lease is live (default 0: fail at once).
    pub wait: Duration,
    /// Clock difference tolerated between hosts before another's lease counts as expired
    /// (default 30 s).
    pub clock_skew: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            wait: Duration::ZERO,
            clock_skew: Duration::from_secs(30),
        }
    }
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// A held lease. Release it with [`Lease::release`]; dropping it leaves the object to expire.
#[derive(Debug)]
pub struct Lease {
    backend: Arc<dyn Backend>,
    key: String,
    /// The lease as last written, and whether it was released. Renewal and release hold this
    /// lock across their I/O, so a renewal can never rewrite a lease after its release.
    state: tokio::sync::Mutex<LeaseState>,
    info: Mutex<LeaseInfo>,
    ttl: Duration,
}

#[derive(Debug)]
struct LeaseState {
    released: bool,
}

/// Every lease object under `locks/<name>/` (unreadable ones skipped).
pub async fn list_leases(backend: &dyn Backend, name: &str) -> Result<Vec<LeaseInfo>> {
    let metas: Vec<_> = backend
        .list(&format!("{LOCK_PREFIX}{name}/"))
        .try_collect()
        .await?;
    let mut leases = Vec::with_capacity(metas.len());
    for meta in metas {
        match backend.get(&meta.key).await {
            Ok(bytes) => {
                if let Ok(info) = serde_json::from_slice::<LeaseInfo>(&bytes) {
                    leases.push(info);
                } else {
                    tracing::warn!(key = %meta.key, "ignoring an unreadable lease object");
                }
            }
            Err(e) if e.is_not_found() => {} // released meanwhile
            Err(e) => return Err(e),
        }
    }
    Ok(leases)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

impl Lease {
    /// Takes a lease on `locks/<name>/`, retrying for up to `options.wait`; fails with
    /// [`Error::Locked`] naming the conflicting holders.
    pub async fn acquire(
        backend: Arc<dyn Backend>,
        name: &str,
        kind: LeaseKind,
        purpose: &str,
        options: LockOptions,
    ) -> Result<Lease> {
        let give_up = tokio::time::Instant::now() + options.wait;
        let mut backoff = Duration::from_millis(50);
        loop {
            let mut holder = [0u8; 8];
            rand::fill(&mut holder);
            let now = Utc::now().trunc_subsecs(3);
            let info = LeaseInfo {
                holder: hex::encode(holder),
                kind,
                purpose: purpose.to_string(),
                host: host_name(),
                pid: std::process::id(),
                started: now,
                expires: now + delta(options.ttl),
            };
            let key = format!("{LOCK_PREFIX}{name}/{}", info.holder);
            let body = Bytes::from(serde_json::to_vec(&info).expect("serialisable"));
            if backend.put_if_absent(&key, body).await? == PutOutcome::AlreadyExists {
                continue; // holder id collision: draw another
            }
            let lease = Lease {
                backend: backend.clone(),
                key,
                state: tokio::sync::Mutex::new(LeaseState { released: false }),
                info: Mutex::new(info.clone()),
                ttl: options.ttl,
            };
            let conflicts = match lease.conflicts(name, options.clock_skew).await {
                Ok(conflicts) => conflicts,
                Err(e) => {
                    let _ = backend.delete(&lease.key).await;
                    return Err(e);
                }
            };
            if conflicts.is_empty() {
                return Ok(lease);
            }
            backend.delete(&lease.key).await?;
            if tokio::time::Instant::now() + backoff > give_up {
                return Err(Error::Locked { holders: conflicts });
            }
            let mut jitter = [0u8; 1];
            rand::fill(&mut jitter);
            tokio::time::sleep(backoff + Duration::from_millis(u64::from(jitter[0]))).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// The live leases that conflict with ours; deletes dead ones on the way.
    async fn conflicts(&self, name: &str, skew: Duration) -> Result<Vec<LeaseInfo>> {
        let ours = self.info();
        let now = Utc::now();
        let mut conflicts = Vec::new();
        for other in list_leases(self.backend.as_ref(), name).await? {
            if other.holder == ours.holder {
                continue;
            }
            if other.expires + delta(skew) < now {
                tracing::info!(holder = %other.holder, purpose = %other.purpose,
                    "taking over an expired lease");
                self.backend
                    .delete(&format!("{LOCK_PREFIX}{name}/{}", other.holder))
                    .await?;
                continue;
            }
            if ours.kind == LeaseKind::Exclusive || other.kind == LeaseKind::Exclusive {
                conflicts.push(other);
            }
        }
        Ok(conflicts)
    }

    /// What the lease object says (expiry as of the last renewal).
    pub fn info(&self) -> LeaseInfo {
        self.info.lock().expect("not poisoned").clone()
    }

    /// The lease object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    fn lost(&self, reason: &str) -> Error {
        Error::LeaseLost {
            key: self.key.clone(),
            reason: reason.to_string(),
        }
    }

    /// Extends the lease by its TTL from now. Fails with [`Error::LeaseLost`] when it has
    /// already expired by our clock or its object is gone or changed (taken over).
    pub async fn renew(&self) -> Result<()> {
        let state = self.state.lock().await;
        if state.released {
            return Err(self.lost("it was released"));
        }
        let current = self.info();
        let now = Utc::now();
        if now >= current.expires {
            return Err(self.lost("it expired before it was renewed"));
        }
        match self.backend.get(&self.key).await {
            Ok(bytes) => match serde_json::from_slice::<LeaseInfo>(&bytes) {
                Ok(stored) if stored.holder == current.holder => {}
                _ => return Err(self.lost("its object was replaced")),
            },
            Err(e) if e.is_not_found() => {
                return Err(self.lost("its object was removed (taken over after expiry)"))
            }
            Err(e) => return Err(e),
        }
        let renewed = LeaseInfo {
            expires: (now + delta(self.ttl)).trunc_subsecs(3),
            ..current
        };
        let body = Bytes::from(serde_json::to_vec(&renewed).expect("serialisable"));
        self.backend.put(&self.key, body).await?;
        *self.info.lock().expect("not poisoned") = renewed;
        Ok(())
    }

    /// Releases the lease (deletes its object); later renewals fail.
    pub async fn release(&self) -> Result<()> {
        let mut state = self.state.lock().await;
        state.released = true;
        self.backend.delete(&self.key).await
    }

    /// Renews the lease every third of its TTL in a background task until the returned guard
    /// is stopped or dropped. A failed renewal stops the task; the next [`Lease::renew`]
    /// reports it. The task is never cancelled in the middle of a renewal.
    pub fn keep_alive(self: &Arc<Self>) -> KeepAlive {
        let lease = Arc::clone(self);
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = stop.clone();
        let period = (self.ttl / 3).max(Duration::from_millis(10));
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    () = stopped.notified() => return,
                }
                if let Err(e) = lease.renew().await {
                    tracing::warn!(key = %lease.key, error = %e, "lease renewal failed");
                    return;
                }
            }
        });
        KeepAlive {
            stop,
            task: Some(task),
        }
    }
}

/// Background renewal of a lease; stops when [`KeepAlive::stop`]ped or dropped.
#[derive(Debug)]
pub struct KeepAlive {
    stop: Arc<tokio::sync::Notify>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl KeepAlive {
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

#[cfg(test)]
mod tests {
    use super::super::backend::LocalBackend;
    use super::*;

    fn fast(ttl_ms: u64) -> LockOptions {
        LockOptions {
            ttl: Duration::from_millis(ttl_ms),
            wait: Duration::ZERO,
            clock_skew: Duration::ZERO,
        }
    }

    fn repo() -> (tempfile::TempDir, Arc<dyn Backend>) {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        (dir, backend)
    }

    async fn take(b: &Arc<dyn Backend>, kind: LeaseKind, opts: LockOptions) -> Result<Lease> {
        Lease::acquire(b.clone(), REPOSITORY_LOCK, kind, "test", opts).await
    }

    #[tokio::test]
    async fn two_holders_cannot_take_the_exclusive_lock() {
        let (_dir, b) = repo();
        let first = take(&b, LeaseKind::Exclusive, LockOptions::default())
            .await
            .unwrap();
        let err = take(&b, LeaseKind::Exclusive, LockOptions::default())
            .await
            .unwrap_err();
        let Error::Locked { holders } = &err else {
            panic!("{err}")
        };
        assert_eq!(holders.len(), 1);
        assert_eq!(holders[0].holder, first.info().holder);
        assert!(err.to_string().contains("exclusive lease of test"), "{err}");
        assert!(take(&b, LeaseKind::Shared, LockOptions::default())
            .await
            .is_err());
        first.release().await.unwrap();
        take(&b, LeaseKind::Exclusive, LockOptions::default())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn shared_leases_coexist_and_block_exclusive() {
        let (_dir, b) = repo();
        let s1 = take(&b, LeaseKind::Shared, LockOptions::default())
            .await
            .unwrap();
        let s2 = take(&b, LeaseKind::Shared, LockOptions::default())
            .await
            .unwrap();
        let err = take(&b, LeaseKind::Exclusive, LockOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Locked { holders } if holders.len() == 2),
            "{err}"
        );
        assert_eq!(
            list_leases(b.as_ref(), REPOSITORY_LOCK)
                .await
                .unwrap()
                .len(),
            2
        );
        s1.release().await.unwrap();
        s2.release().await.unwrap();
        assert!(list_leases(b.as_ref(), REPOSITORY_LOCK)
            .await
            .unwrap()
            .is_empty());
        take(&b, LeaseKind::Exclusive, LockOptions::default())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_its_holder_finds_out() {
        let (_dir, b) = repo();
        let stale = take(&b, LeaseKind::Exclusive, fast(1000)).await.unwrap();
        assert!(take(&b, LeaseKind::Exclusive, fast(1000)).await.is_err());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let next = take(&b, LeaseKind::Exclusive, fast(60_000)).await.unwrap();
        let leases = list_leases(b.as_ref(), REPOSITORY_LOCK).await.unwrap();
        assert_eq!(
            leases,
            vec![next.info()],
            "the expired lease object was removed"
        );
        let err = stale.renew().await.unwrap_err();
        assert!(matches!(err, Error::LeaseLost { .. }), "{err}");
    }

    #[tokio::test]
    async fn renewal_extends_and_detects_removal() {
        let (_dir, b) = repo();
        let lease = Arc::new(take(&b, LeaseKind::Shared, fast(1500)).await.unwrap());
        let first = lease.info().expires;
        let keep = lease.keep_alive();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        keep.stop().await;
        // Renewed every 500 ms: at least once, each time to 1.5 s from then.
        assert!(lease.info().expires >= first + TimeDelta::milliseconds(500));
        lease.renew().await.unwrap();
        b.delete(lease.key()).await.unwrap();
        assert!(matches!(lease.renew().await, Err(Error::LeaseLost { .. })));
    }

    #[tokio::test]
    async fn waiting_acquires_once_the_holder_releases() {
        let (_dir, b) = repo();
        let first = take(&b, LeaseKind::Exclusive, LockOptions::default())
            .await
            .unwrap();
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move {
                let opts = LockOptions {
                    wait: Duration::from_secs(20),
                    ..LockOptions::default()
                };
                take(&b, LeaseKind::Exclusive, opts).await
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        first.release().await.unwrap();
        waiter.await.unwrap().unwrap();
    }
}
