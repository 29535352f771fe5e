//! The backup snapshot's life: finding the VM, removing `ceso-backup-*` snapshots that crashed
//! runs left behind, creating the snapshot (quiesced as the [`Quiesce`] policy asks) and
//! removing it.
//!
//! The snapshot's description names the VM lease it was taken under
//! (`ceso-backup lease <holder> (HOST pid N)`): a snapshot is a leftover exactly when that
//! lease is not live, never because of a process id or host name.

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

/// The description a backup snapshot carries: the VM lease it was taken under (see
/// [`crate::engine::backup::vm_lease`]), and for people, the host and process.
pub fn description(lease_holder: &str) -> String {
    format!(
        "ceso-backup lease {lease_holder} ({} pid {})",
        crate::machine::host_name(),
        std::process::id()
    )
}

/// The VM lease a backup snapshot's description names, if it names one (snapshots of older
/// versions named a process instead: they name no lease and count as leftovers).
pub fn lease_of(description: &str) -> Option<&str> {
    description
        .strip_prefix("ceso-backup lease ")?
        .split_whitespace()
        .next()
}

/// Removes the VM's leftover backup snapshots: those whose description names no lease in
/// `live_leases` (the caller holds the VM's lease, so every other lease of it has lapsed).
/// Returns their names. Fails with [`HotError::Busy`] if one names a live lease.
pub async fn remove_leftovers(
    client: &Arc<Client>,
    vm: &ManagedObjectReference,
    vm_name: &str,
    timeout: Duration,
    live_leases: &[String],
) -> HotResult<Vec<String>> {
    let tree = client
        .snapshot_tree(vm)
        .await
        .map_err(|e| HotError::vsphere(format!("read the snapshots of {vm_name}"), e))?;
    let ours: Vec<_> = tree
        .snapshots
        .iter()
        .filter(|s| s.name.starts_with(SNAPSHOT_PREFIX))
        .collect();
    if let Some((s, holder)) = ours.iter().find_map(|s| {
        lease_of(&s.description)
            .filter(|h| live_leases.iter().any(|l| l == h))
            .map(|h| (s, h))
    }) {
        return Err(HotError::Busy {
            vm: vm_name.to_string(),
            holder: format!("lease {holder}, snapshot {:?}", s.name),
        });
    }
    let mut removed = Vec::new();
    for s in ours {
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

/// How much consistency a backup asks of its snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Quiesce {
    /// Quiesced when VMware Tools run; otherwise, or when quiescing fails, crash-consistent,
    /// and the backup records why.
    #[default]
    IfToolsRun,
    /// Quiesced or nothing: a running VM without VMware Tools, or whose quiescing fails,
    /// fails the backup (a powered-off VM needs no quiescing).
    Required,
}

/// What snapshot to ask for, given the policy, the power state and whether Tools run:
/// `Ok(quiesce)`, or why a required quiesced snapshot cannot be had.
pub fn plan_quiesce(policy: Quiesce, powered_on: bool, tools: bool) -> Result<bool, String> {
    match (policy, powered_on, tools) {
        (_, false, _) => Ok(false),
        (_, true, true) => Ok(true),
        (Quiesce::IfToolsRun, true, false) => Ok(false),
        (Quiesce::Required, true, false) => {
            Err("VMware Tools are not running in the guest, so it cannot be quiesced".into())
        }
    }
}

/// A created backup snapshot.
#[derive(Clone, Debug)]
pub struct Created {
    /// The snapshot.
    pub snapshot: ManagedObjectReference,
    /// Its name.
    pub name: String,
    /// The consistency reached.
    pub consistency: Consistency,
    /// Why it is less consistent than asked, if it is.
    pub note: Option<String>,
}

/// Creates the backup snapshot (no memory), its description naming the VM lease
/// `lease_holder`. With `quiesce` it asks VMware Tools to quiesce first; if that fails, the
/// policy decides: [`Quiesce::IfToolsRun`] falls back to a crash-consistent snapshot and says
/// why, [`Quiesce::Required`] fails with [`HotError::NotQuiesced`].
///
/// Creation itself is not interrupted by `cancel` (checked only before it starts): a
/// `CreateSnapshot_Task` cancelled half-way may still leave a snapshot whose reference the
/// caller would never learn, so the task runs to its end and the caller, seeing the
/// cancellation afterwards, removes the snapshot it now knows.
#[allow(clippy::too_many_arguments)]
pub async fn create(
    client: &Arc<Client>,
    vm: &ManagedObjectReference,
    vm_name: &str,
    quiesce: bool,
    policy: Quiesce,
    lease_holder: &str,
    timeout: Duration,
    cancel: &CancellationToken,
) -> HotResult<Created> {
    let name = format!(
        "{SNAPSHOT_PREFIX}{}",
        Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    );
    let description = description(lease_holder);
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
    let created = |snapshot, consistency, note| Created {
        snapshot,
        name: name.clone(),
        consistency,
        note,
    };
    if quiesce {
        match client
            .create_snapshot(vm, &spec(true), Some(timeout), cancel)
            .await
        {
            Ok(s) => return Ok(created(s, Consistency::Quiesced, None)),
            Err(e) if e.kind == ErrorKind::Cancelled => return Err(HotError::Cancelled),
            Err(e) if matches!(e.kind, ErrorKind::Task | ErrorKind::Fault) => {
                if policy == Quiesce::Required {
                    return Err(HotError::NotQuiesced {
                        vm: vm_name.to_string(),
                        reason: format!("quiescing failed: {e}"),
                    });
                }
                let why = format!("quiescing failed ({e}); the backup is crash-consistent");
                let snap = client
                    .create_snapshot(vm, &spec(false), Some(timeout), cancel)
                    .await
                    .map_err(|e| HotError::vsphere(action(), e))?;
                return Ok(created(snap, Consistency::CrashConsistent, Some(why)));
            }
            Err(e) => return Err(HotError::vsphere(action(), e)),
        }
    }
    let snap = client
        .create_snapshot(vm, &spec(false), Some(timeout), cancel)
        .await
        .map_err(|e| HotError::vsphere(action(), e))?;
    Ok(created(snap, Consistency::CrashConsistent, None))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_names_its_lease_and_nothing_else_decides() {
        let d = description("0123456789abcdef");
        assert!(d.starts_with("ceso-backup lease 0123456789abcdef ("), "{d}");
        assert_eq!(lease_of(&d), Some("0123456789abcdef"));
        // Older snapshots named a process: no lease, so a leftover once we hold the VM.
        assert_eq!(lease_of("ceso-backup pid 1 on host"), None);
        assert_eq!(lease_of("something else"), None);
    }

    #[test]
    fn quiesce_mode_never_falls_back() {
        assert_eq!(plan_quiesce(Quiesce::IfToolsRun, true, true), Ok(true));
        assert_eq!(plan_quiesce(Quiesce::IfToolsRun, true, false), Ok(false));
        assert_eq!(plan_quiesce(Quiesce::Required, true, true), Ok(true));
        let e = plan_quiesce(Quiesce::Required, true, false).unwrap_err();
        assert!(e.contains("VMware Tools"), "{e}");
        // A powered-off guest has nothing in flight: no quiescing needed or possible.
        assert_eq!(plan_quiesce(Quiesce::Required, false, false), Ok(false));
    }
}
