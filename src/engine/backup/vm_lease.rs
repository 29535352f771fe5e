//! One backup of a VM at a time, across every process and job sharing the repository: an
//! exclusive lease per VM (`locks/vms/<instance uuid>/<holder>`), taken before the backup
//! snapshot and given back after the snapshot is gone.
//!
//! The snapshot's description names the lease's holder id, so whether a `ceso-backup-*`
//! snapshot is a leftover is decided by the lease alone: a snapshot whose lease is not live is
//! a leftover, whatever process, host or job made it. Taking the lease deletes lapsed leases of
//! the VM, so its holder may remove every backup snapshot not naming its own lease.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::error::Result;
use super::lock::{vm_lock_name, KeepAlive, Lease, LeaseInfo, LeaseKind, LockOptions};
use super::repository::Repository;

/// A held VM lease, renewed in the background. Give it back with [`VmLease::release`];
/// dropping it releases it from a spawned task.
#[derive(Debug)]
pub struct VmLease {
    lease: Arc<Lease>,
    keep_alive: Option<KeepAlive>,
}

impl Repository {
    /// Takes the lease of the VM with instance UUID `vm_uuid`, waiting up to `wait` for
    /// another backup of it to finish (or for a dead holder's lease to lapse). Fails with
    /// [`Error::Locked`](super::Error::Locked) naming the holder, or
    /// [`Error::Interrupted`](super::Error::Interrupted) when `cancel` fires first.
    pub async fn lease_vm(
        &self,
        vm_uuid: &str,
        vm_name: &str,
        wait: Duration,
        cancel: &CancellationToken,
    ) -> Result<VmLease> {
        let options = LockOptions {
            wait,
            ..self.lock_options
        };
        let lease = Lease::acquire_cancellable(
            self.backend.clone(),
            &vm_lock_name(vm_uuid),
            LeaseKind::Exclusive,
            &format!("backup of {vm_name}"),
            options,
            cancel,
        )
        .await?;
        let lease = Arc::new(lease);
        let keep_alive = Some(lease.keep_alive());
        Ok(VmLease { lease, keep_alive })
    }
}

impl VmLease {
    /// The lease's holder id, which the backup snapshot's description names.
    pub fn holder(&self) -> String {
        self.lease.info().holder
    }

    /// What the lease object says.
    pub fn info(&self) -> LeaseInfo {
        self.lease.info()
    }

    /// Fires when the lease is lost (it lapsed while the repository was unreachable): the
    /// backup must stop, since another process may now take the VM over.
    pub fn lost(&self) -> CancellationToken {
        self.keep_alive
            .as_ref()
            .map(KeepAlive::lost)
            .unwrap_or_default()
    }

    /// Stops renewing and gives the lease back (a failure is logged: the lease then expires).
    pub async fn release(mut self) {
        if let Some(keep_alive) = self.keep_alive.take() {
            keep_alive.stop().await;
        }
        if let Err(e) = self.lease.release().await {
            tracing::warn!(key = %self.lease.key(), error = %e, "cannot release the VM's lease; it will expire");
        }
    }
}

impl Drop for VmLease {
    fn drop(&mut self) {
        let Some(keep_alive) = self.keep_alive.take() else {
            return; // released
        };
        let lease = self.lease.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                keep_alive.stop().await;
                let _ = lease.release().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::error::Error;
    use super::super::test_support::local_repo;
    use super::*;

    #[tokio::test]
    async fn one_backup_of_a_vm_at_a_time_and_others_in_parallel() {
        let (_dir, repo) = local_repo(1 << 16).await;
        let none = CancellationToken::new();
        let a = repo
            .lease_vm("uuid-a", "a", Duration::ZERO, &none)
            .await
            .unwrap();
        let err = repo
            .lease_vm("uuid-a", "a", Duration::ZERO, &none)
            .await
            .unwrap_err();
        let Error::Locked { holders } = &err else {
            panic!("{err}")
        };
        assert_eq!(holders[0].holder, a.holder());
        assert!(err.to_string().contains("backup of a"), "{err}");
        // Another VM, and backups in general, are not held up.
        let b = repo
            .lease_vm("uuid-b", "b", Duration::ZERO, &none)
            .await
            .unwrap();
        let session = repo
            .begin_backup(super::super::test_support::request("a"))
            .await
            .unwrap();
        session.abort().await.unwrap();
        // A waiter gets the VM once the holder gives it back.
        let waiter = {
            let repo = repo.clone();
            tokio::spawn(async move {
                repo.lease_vm("uuid-a", "a", Duration::from_secs(10), &none)
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        a.release().await;
        let next = waiter.await.unwrap().unwrap();
        next.release().await;
        b.release().await;
    }
}
