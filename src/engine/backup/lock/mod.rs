//! Lease locks in the repository: shared for backups and verifies, exclusive for prune and gc,
//! and one exclusive lease per VM so one VM is backed up by one process at a time.
//!
//! A lease is an object `locks/<name>/<holder>` holding its kind, purpose, holder, host, pid,
//! start and expiry. To take one, a client creates its own lease object (a conditional create
//! under a fresh random holder id), then lists `locks/<name>/`. Because each side writes before
//! it looks, two conflicting clients can both back off but never both win, with no
//! compare-and-swap needed from the backend.
//!
//! # Fair exclusive waits
//!
//! A shared lease conflicts with any live exclusive lease, held or waiting. An exclusive
//! client that finds conflicts does not withdraw: its object stays, marked `waiting`, and
//! queues it. Shared clients back off while it waits, so a stream of backups can no longer
//! starve a prune or gc; waiting exclusive clients are served in the order of their start
//! time (then holder id). An exclusive client at the head of the queue that sees no shared or
//! held exclusive lease rewrites its object as held and looks once more: if a shared or held
//! exclusive lease appeared meanwhile it goes back to waiting. Every write comes before the
//! matching look, so two holders of conflicting leases cannot both see none.
//!
//! # Expiry
//!
//! A lease lives until `expires` and is renewed by its holder ([`KeepAlive`], every third of the
//! TTL, retrying failed renewals until the lease would really lapse). One whose `expires` (plus
//! the allowed clock skew) has passed is dead: others ignore it and delete it, which is how an
//! expired lease is taken over. A holder never renews a lease its own clock says has expired,
//! and renewing checks that its object is still there, so a holder that was stopped past its
//! expiry finds out ([`Error::LeaseLost`]) before it commits anything.

mod keep_alive;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::backend::{Backend, PutOutcome};
use super::error::{Error, Result};
use super::manifest::rfc3339;

pub use keep_alive::KeepAlive;

/// The folder leases live under.
pub const LOCK_PREFIX: &str = "locks/";
/// The repository-wide lock backups, prune and gc coordinate on.
pub const REPOSITORY_LOCK: &str = "repository";

/// The lock of one VM's backups (`locks/vms/<instance uuid>/`).
pub fn vm_lock_name(vm_uuid: &str) -> String {
    format!("vms/{vm_uuid}")
}

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
    /// When the lease was asked for (a waiting exclusive lease keeps its place by it).
    #[serde(with = "rfc3339")]
    pub started: DateTime<Utc>,
    /// When it expires unless renewed.
    #[serde(with = "rfc3339")]
    pub expires: DateTime<Utc>,
    /// An exclusive lease queued behind others, not held yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub waiting: bool,
}

impl LeaseInfo {
    /// Whether the lease is dead for a reader whose clock says `now`, allowing `skew`.
    fn lapsed(&self, now: DateTime<Utc>, skew: Duration) -> bool {
        self.expires + delta(skew) < now
    }

    /// The queue order of waiting exclusive leases: oldest first, then by holder.
    fn queued_before(&self, other: &LeaseInfo) -> bool {
        (self.started, &self.holder) < (other.started, &other.holder)
    }
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
    name: String,
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

/// The live leases under `locks/<name>/` for a reader allowing `skew`.
pub async fn live_leases(
    backend: &dyn Backend,
    name: &str,
    skew: Duration,
) -> Result<Vec<LeaseInfo>> {
    let now = Utc::now();
    Ok(list_leases(backend, name)
        .await?
        .into_iter()
        .filter(|l| !l.lapsed(now, skew))
        .collect())
}

fn encode(info: &LeaseInfo) -> Bytes {
    Bytes::from(serde_json::to_vec(info).expect("serialisable"))
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
        Self::acquire_cancellable(
            backend,
            name,
            kind,
            purpose,
            options,
            &CancellationToken::new(),
        )
        .await
    }

    /// [`Lease::acquire`], giving up with [`Error::Interrupted`] (and withdrawing its object)
    /// when `cancel` fires while it waits.
    pub async fn acquire_cancellable(
        backend: Arc<dyn Backend>,
        name: &str,
        kind: LeaseKind,
        purpose: &str,
        options: LockOptions,
        cancel: &CancellationToken,
    ) -> Result<Lease> {
        if cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        let give_up = tokio::time::Instant::now() + options.wait;
        let mut backoff = Duration::from_millis(50);
        let max_backoff =
            (options.ttl / 3).clamp(Duration::from_millis(10), Duration::from_secs(5));
        let mut queued: Option<Lease> = None;
        loop {
            let lease = match queued.take() {
                Some(lease) => {
                    lease.refresh_waiting().await?;
                    lease
                }
                None => Self::create(&backend, name, kind, purpose, options.ttl).await?,
            };
            let conflicts = match lease.conflicts(options.clock_skew).await {
                Ok(conflicts) => conflicts,
                Err(e) => {
                    lease.withdraw().await;
                    return Err(e);
                }
            };
            if conflicts.is_empty() {
                return Ok(lease);
            }
            // Shared clients withdraw and try again; exclusive ones keep their place.
            match kind {
                LeaseKind::Shared => lease.withdraw().await,
                LeaseKind::Exclusive => queued = Some(lease),
            }
            if tokio::time::Instant::now() + backoff > give_up {
                if let Some(lease) = queued.take() {
                    lease.withdraw().await;
                }
                return Err(Error::Locked { holders: conflicts });
            }
            let mut jitter = [0u8; 1];
            rand::fill(&mut jitter);
            let pause = backoff + Duration::from_millis(u64::from(jitter[0]) % 64);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = cancel.cancelled() => {
                    if let Some(lease) = queued.take() {
                        lease.withdraw().await;
                    }
                    return Err(Error::Interrupted);
                }
            }
            backoff = (backoff * 2).min(max_backoff);
        }
    }

    /// Writes a new lease object under a fresh holder id (an exclusive one as waiting).
    async fn create(
        backend: &Arc<dyn Backend>,
        name: &str,
        kind: LeaseKind,
        purpose: &str,
        ttl: Duration,
    ) -> Result<Lease> {
        loop {
            let mut holder = [0u8; 8];
            rand::fill(&mut holder);
            let now = Utc::now().trunc_subsecs(3);
            let info = LeaseInfo {
                holder: hex::encode(holder),
                kind,
                purpose: purpose.to_string(),
                host: crate::machine::host_name(),
                pid: std::process::id(),
                started: now,
                expires: now + delta(ttl),
                waiting: kind == LeaseKind::Exclusive,
            };
            let key = format!("{LOCK_PREFIX}{name}/{}", info.holder);
            if backend.put_if_absent(&key, encode(&info)).await? == PutOutcome::AlreadyExists {
                continue; // holder id collision: draw another
            }
            return Ok(Lease {
                backend: backend.clone(),
                name: name.to_string(),
                key,
                state: tokio::sync::Mutex::new(LeaseState { released: false }),
                info: Mutex::new(info),
                ttl,
            });
        }
    }

    /// Rewrites our object with `waiting` and a fresh expiry.
    async fn rewrite(&self, waiting: bool) -> Result<()> {
        let info = LeaseInfo {
            waiting,
            expires: (Utc::now() + delta(self.ttl)).trunc_subsecs(3),
            ..self.info()
        };
        self.backend.put(&self.key, encode(&info)).await?;
        *self.info.lock().expect("not poisoned") = info;
        Ok(())
    }

    /// Keeps a queued exclusive lease alive while it waits.
    async fn refresh_waiting(&self) -> Result<()> {
        self.rewrite(true).await
    }

    /// Deletes our object after a failed or abandoned acquisition (errors only logged).
    async fn withdraw(&self) {
        if let Err(e) = self.backend.delete(&self.key).await {
            tracing::warn!(key = %self.key, error = %e, "cannot withdraw a lease object; it will expire");
        }
    }

    /// The live leases that stand in our way; deletes dead ones on the way. An exclusive lease
    /// at the head of the queue with nothing in its way becomes held here (see the module doc).
    async fn conflicts(&self, skew: Duration) -> Result<Vec<LeaseInfo>> {
        let ours = self.info();
        let others = self.others(skew).await?;
        let blocking: Vec<LeaseInfo> = others
            .iter()
            .filter(|o| match (ours.kind, o.kind) {
                (LeaseKind::Shared, LeaseKind::Shared) => false,
                (LeaseKind::Shared, LeaseKind::Exclusive) => true,
                (LeaseKind::Exclusive, LeaseKind::Shared) => true,
                (LeaseKind::Exclusive, LeaseKind::Exclusive) => {
                    !o.waiting || o.queued_before(&ours)
                }
            })
            .cloned()
            .collect();
        if !blocking.is_empty() || ours.kind == LeaseKind::Shared {
            return Ok(blocking);
        }
        // Head of the queue: claim it, then look again for anyone who slipped in.
        self.rewrite(false).await?;
        let late: Vec<LeaseInfo> = self
            .others(skew)
            .await?
            .into_iter()
            .filter(|o| o.kind == LeaseKind::Shared || !o.waiting)
            .collect();
        if !late.is_empty() {
            self.rewrite(true).await?;
        }
        Ok(late)
    }

    /// The other live leases of our lock; deletes dead ones.
    async fn others(&self, skew: Duration) -> Result<Vec<LeaseInfo>> {
        let ours = self.info();
        let now = Utc::now();
        let mut live = Vec::new();
        for other in list_leases(self.backend.as_ref(), &self.name).await? {
            if other.holder == ours.holder {
                continue;
            }
            if other.lapsed(now, skew) {
                tracing::info!(holder = %other.holder, purpose = %other.purpose,
                    "taking over an expired lease");
                self.backend
                    .delete(&format!("{LOCK_PREFIX}{}/{}", self.name, other.holder))
                    .await?;
                continue;
            }
            live.push(other);
        }
        Ok(live)
    }

    /// What the lease object says (expiry as of the last renewal).
    pub fn info(&self) -> LeaseInfo {
        self.info.lock().expect("not poisoned").clone()
    }

    /// The lease object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The TTL it is renewed for.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lost(&self, reason: &str) -> Error {
        Error::LeaseLost {
            key: self.key.clone(),
            reason: reason.to_string(),
        }
    }

    /// Extends the lease by its TTL from now. Fails with [`Error::LeaseLost`] when it has
    /// already expired by our clock or its object is gone or changed (taken over); other
    /// errors (the repository unreachable) may be retried until it expires.
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
        self.backend.put(&self.key, encode(&renewed)).await?;
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
    /// is stopped or dropped; see [`KeepAlive`].
    pub fn keep_alive(self: &Arc<Self>) -> KeepAlive {
        KeepAlive::start(Arc::clone(self))
    }
}

#[cfg(test)]
mod tests;
