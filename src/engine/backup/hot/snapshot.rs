//! The backup snapshot's life: finding the VM, removing `ceso-backup-*` snapshots that crashed
//! runs left behind (unless their process still runs), creating the snapshot (quiesced when
//! VMware Tools run, else crash-consistent) and removing it.
//!
//! The snapshot's description names the process that took it (`ceso-backup pid N on HOST`), so
//! a later run on the same host can tell a leftover from a backup still in progress.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::error::{HotError, HotResult};
use crate::engine::backup::manifest::Consistency;
use crate::vsphere::snapshot::NewSnapshot;
use crate::vsphere::types::ManagedObjectReference;
use crate::vsphere::{Client, ErrorKind};

/// Every backup snapshot's name starts with this.
pub const SNAPSHOT_PREFIX: &str = "ceso-backup-";

/// Finds a VM given as a moid (`vm-42`), an instance UUID, an inventory path (`/DC0/vm/web`)
/// or a name.
pub async fn find_vm(client: &Client, vm: &str) -> HotResult<ManagedObjectReference> {
    let action = || format!("find VM {vm:?}");
    let vm = vm.trim();
    let is_uuid = vm.len() == 36 && vm.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    let found = if vm.starts_with("vm-") || is_uuid {
        match client.find_vm_by_id(vm).await {
            Err(e) if e.is_not_found() => client.find_by_name("VirtualMachine", vm).await,
            other => other,
        }
    } else if vm.contains('/') {
        client.find_by_path(vm).await
    } else {
        client.find_by_name("VirtualMachine", vm).await
    };
    found.map_err(|e| HotError::vsphere(action(), e))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// The description a backup snapshot carries.
fn description() -> String {
    format!("ceso-backup pid {} on {}", std::process::id(), host_name())
}

/// The process named by a description, if it runs on this host and is alive (and not us).
fn live_holder(description: &str) -> Option<String> {
    let rest = description.strip_prefix("ceso-backup pid ")?;
    let (pid, host) = rest.split_once(" on ")?;
    let pid: i32 = pid.trim().parse().ok()?;
    if host.trim() != host_name() || pid <= 0 || pid as u32 == std::process::id() {
        return None;
    }
    // SAFETY: kill with signal 0 only checks that the process exists; it sends nothing.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    alive.then(|| format!("pid {pid} on {}", host.trim()))
}

/// Removes the VM's leftover backup snapshots; returns their names. Fails with
/// [`HotError::Busy`] when one belongs to a live process on this host.
pub async fn remove_leftovers(
    client: &Arc<Client>,
    vm: &ManagedObjectReference,
    vm_name: &str,
    timeout: Duration,
) -> HotResult<Vec<String>> {
    let tree = client
        .snapshot_tree(vm)
        .await
        .map_err(|e| HotError::vsphere(format!("read the snapshots of {vm_name}"), e))?;
    let leftovers: Vec<_> = tree
        .snapshots
        .iter()
        .filter(|s| s.name.starts_with(SNAPSHOT_PREFIX))
        .collect();
    if let Some((s, holder)) = leftovers
        .iter()
        .find_map(|s| live_holder(&s.description).map(|h| (s, h)))
    {
        return Err(HotError::Busy {
            vm: vm_name.to_string(),
            snapshot: s.name.clone(),
            holder,
        });
    }
    let mut removed = Vec::new();
    for s in leftovers {
        remove(client, &s.obj, timeout).await.map_err(|e| match e {
            HotError::Vsphere { source, .. } => HotError::vsphere(
                format!(
                    "remove the leftover backup snapshot {:?} of {vm_name}",
                    s.name
                ),
                source,
            ),
            other => other,
        })?;
        removed.push(s.name.clone());
    }
    Ok(removed)
}

/// Creates the backup snapshot (no memory). With `quiesce` it asks VMware Tools to quiesce
/// first and falls back to a crash-consistent snapshot if that fails; returns the snapshot,
/// its name, the consistency reached and, after a fallback, why.
///
/// Creation itself is not interrupted by `cancel` (checked only before it starts): a
/// `CreateSnapshot_Task` cancelled half-way may still leave a snapshot whose reference the
/// caller would never learn, so the task runs to its end and the caller, seeing the
/// cancellation afterwards, removes the snapshot it now knows.
pub async fn create(
    client: &Arc<Client>,
    vm: &ManagedObjectReference,
    vm_name: &str,
    quiesce: bool,
    timeout: Duration,
    cancel: &CancellationToken,
) -> HotResult<(ManagedObjectReference, String, Consistency, Option<String>)> {
    let name = format!(
        "{SNAPSHOT_PREFIX}{}",
        Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    );
    let description = description();
    let spec = |quiesce| NewSnapshot {
        name: &name,
        description: &description,
        memory: false,
        quiesce,
    };
    let action = || format!("create the backup snapshot of {vm_name}");
    if cancel.is_cancelled() {
        return Err(HotError::Cancelled);
    }
    let cancel = &CancellationToken::new();
    if quiesce {
        match client
            .create_snapshot(vm, &spec(true), Some(timeout), cancel)
            .await
        {
            Ok(s) => return Ok((s, name, Consistency::Quiesced, None)),
            Err(e) if e.kind == ErrorKind::Cancelled => return Err(HotError::Cancelled),
            Err(e) if matches!(e.kind, ErrorKind::Task | ErrorKind::Fault) => {
                let why = format!("quiescing failed ({e}); the backup is crash-consistent");
                let snap = client
                    .create_snapshot(vm, &spec(false), Some(timeout), cancel)
                    .await
                    .map_err(|e| HotError::vsphere(action(), e))?;
                return Ok((snap, name, Consistency::CrashConsistent, Some(why)));
            }
            Err(e) => return Err(HotError::vsphere(action(), e)),
        }
    }
    let snap = client
        .create_snapshot(vm, &spec(false), Some(timeout), cancel)
        .await
        .map_err(|e| HotError::vsphere(action(), e))?;
    Ok((snap, name, Consistency::CrashConsistent, None))
}

/// Removes a snapshot (consolidating), whatever the caller's cancellation state; a snapshot
/// already gone is fine.
pub async fn remove(
    client: &Arc<Client>,
    snapshot: &ManagedObjectReference,
    timeout: Duration,
) -> HotResult<()> {
    match client
        .remove_snapshot(snapshot, Some(timeout), &CancellationToken::new())
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(HotError::vsphere(format!("remove snapshot {snapshot}"), e)),
    }
}

/// Whether VMware Tools run in the guest (then the snapshot is quiesced).
pub async fn tools_running(client: &Client, vm: &ManagedObjectReference) -> bool {
    client
        .properties(vm, &["guest.toolsRunningStatus"])
        .await
        .ok()
        .and_then(|o| o.text("guest.toolsRunningStatus").map(str::to_string))
        .is_some_and(|s| s == "guestToolsRunning")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_live_holders_from_leftovers() {
        assert!(live_holder(&description()).is_none(), "our own snapshot");
        // pid 1 is always alive.
        let init = format!("ceso-backup pid 1 on {}", host_name());
        assert_eq!(
            live_holder(&init),
            Some(format!("pid 1 on {}", host_name()))
        );
        assert!(live_holder("ceso-backup pid 1 on another-host").is_none());
        assert!(live_holder("something else").is_none());
        assert!(live_holder(&format!("ceso-backup pid {} on {}", i32::MAX, host_name())).is_none());
    }
}
