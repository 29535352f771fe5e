//! VM snapshots: the snapshot tree as vSphere reports it, and the snapshot tasks (create,
//! rename, revert, remove, disk consolidation).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::envelope::RequestWriter;
use super::error::{Error, ErrorKind, Result};
use super::methods::PlainCall;
use super::task::TaskCall;
use super::types::ManagedObjectReference;
use super::xml::Node;

/// One snapshot in a VM's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The snapshot.
    pub obj: ManagedObjectReference,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Creation time (ISO 8601).
    pub create_time: String,
    /// Whether the guest was quiesced.
    pub quiesced: bool,
    /// The VM's power state when it was taken.
    pub state: String,
    /// Its parent snapshot.
    pub parent: Option<ManagedObjectReference>,
}

/// A VM's snapshots (flattened, parents before children) and which is current.
#[derive(Debug, Clone, Default)]
pub struct SnapshotTree {
    /// Every snapshot.
    pub snapshots: Vec<SnapshotInfo>,
    /// The current snapshot.
    pub current: Option<ManagedObjectReference>,
    /// Bytes of each snapshot's own files (state and memory), by snapshot id, where the VM's
    /// file layout reports them.
    pub sizes: std::collections::BTreeMap<String, i64>,
}

impl SnapshotTree {
    /// Reads a `VirtualMachineSnapshotInfo` node (`None`: the VM has no snapshots).
    pub fn from_node(node: Option<&Node>) -> Self {
        let mut tree = SnapshotTree::default();
        let Some(node) = node else {
            return tree;
        };
        tree.current = node.moref_of("currentSnapshot");
        fn walk(list: &Node, parent: Option<&ManagedObjectReference>, out: &mut Vec<SnapshotInfo>) {
            let Some(obj) = list.moref_of("snapshot") else {
                return;
            };
            out.push(SnapshotInfo {
                obj: obj.clone(),
                name: list.text_of("name").unwrap_or_default().to_string(),
                description: list.text_of("description").unwrap_or_default().to_string(),
                create_time: list.text_of("createTime").unwrap_or_default().to_string(),
                quiesced: list.bool_of("quiesced").unwrap_or(false),
                state: list.text_of("state").unwrap_or_default().to_string(),
                parent: parent.cloned(),
            });
            for child in list.children_named("childSnapshotList") {
                walk(child, Some(&obj), out);
            }
        }
        for root in node.children_named("rootSnapshotList") {
            walk(root, None, &mut tree.snapshots);
        }
        tree
    }

    /// The snapshot with reference id `id`.
    pub fn by_id(&self, id: &str) -> Option<&SnapshotInfo> {
        self.snapshots.iter().find(|s| s.obj.value == id)
    }
}

fn no_args(_: &mut RequestWriter) {}

/// Sizes of the files each snapshot's layout names (`dataKey`, `memoryKey`).
fn snapshot_sizes(
    layouts: Option<&Node>,
    files: Option<&Node>,
) -> std::collections::BTreeMap<String, i64> {
    let size_of = |key: i64| -> Option<i64> {
        files?
            .children
            .iter()
            .find(|f| f.parse_of::<i64>("key") == Some(key))
            .and_then(|f| f.parse_of("size"))
    };
    layouts
        .map(|l| {
            l.children
                .iter()
                .filter_map(|s| {
                    let id = s.moref_of("key")?.value;
                    let keys = [s.parse_of::<i64>("dataKey"), s.parse_of::<i64>("memoryKey")];
                    let sizes: Vec<i64> = keys
                        .into_iter()
                        .flatten()
                        .filter(|k| *k >= 0)
                        .filter_map(size_of)
                        .collect();
                    (!sizes.is_empty()).then(|| (id, sizes.iter().sum()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What to snapshot.
#[derive(Debug, Clone, Default)]
pub struct NewSnapshot<'a> {
    /// Name.
    pub name: &'a str,
    /// Description.
    pub description: &'a str,
    /// Include memory.
    pub memory: bool,
    /// Quiesce the guest first.
    pub quiesce: bool,
}

impl Client {
    /// A VM's snapshot tree with the snapshots' file sizes (one round trip, batched with
    /// other reads).
    pub async fn snapshot_tree(&self, vm: &ManagedObjectReference) -> Result<SnapshotTree> {
        let o = self
            .read_batched(vm, &["snapshot", "layoutEx.snapshot", "layoutEx.file"])
            .await?;
        let mut tree = SnapshotTree::from_node(o.get("snapshot"));
        tree.sizes = snapshot_sizes(o.get("layoutEx.snapshot"), o.get("layoutEx.file"));
        Ok(tree)
    }

    /// `VirtualMachine.CreateSnapshot_Task`; returns the snapshot. When the answer is lost
    /// (a broken connection, a wait that ended first), the VM's snapshot tree is read: a new
    /// snapshot of that name is the one made; none means none was made, and it is tried once
    /// more (a wait that timed out is not: that snapshot may still come).
    pub async fn create_snapshot(
        self: &Arc<Self>,
        vm: &ManagedObjectReference,
        spec: &NewSnapshot<'_>,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<ManagedObjectReference> {
        let before: Vec<ManagedObjectReference> = self
            .snapshot_tree(vm)
            .await?
            .snapshots
            .into_iter()
            .map(|s| s.obj)
            .collect();
        let b = |v: bool| if v { "true" } else { "false" };
        let args = |w: &mut RequestWriter| {
            w.text("name", spec.name)
                .text("description", spec.description)
                .text("memory", b(spec.memory))
                .text("quiesce", b(spec.quiesce));
        };
        let mut lost = 0;
        loop {
            let done = self
                .run_task(
                    TaskCall {
                        name: "CreateSnapshot_Task",
                        this: vm,
                        args: &args,
                    },
                    timeout,
                    cancel,
                )
                .await;
            let e = match done {
                Ok(result) => {
                    return result.as_ref().and_then(Node::as_moref).ok_or_else(|| {
                        Error::new(
                            ErrorKind::Decode,
                            "CreateSnapshot_Task returned no snapshot",
                        )
                    })
                }
                Err(e) if e.outcome_unknown() => e,
                Err(e) => return Err(e),
            };
            tracing::warn!(error = %e, %vm, snapshot = spec.name, "the outcome of CreateSnapshot_Task is unknown; looking");
            if e.kind == ErrorKind::Transport {
                self.settle_tasks(
                    vm,
                    "CreateSnapshot_Task",
                    timeout.unwrap_or(super::vm::LOST_CALL_SETTLE),
                )
                .await?;
            }
            let made: Vec<SnapshotInfo> = self
                .snapshot_tree(vm)
                .await?
                .snapshots
                .into_iter()
                .filter(|s| s.name == spec.name && !before.contains(&s.obj))
                .collect();
            match made.as_slice() {
                [one] => return Ok(one.obj.clone()),
                [] if e.kind == ErrorKind::Transport && lost < super::error::LOST_CALL_RETRIES => {
                    lost += 1
                }
                _ => return Err(e),
            }
        }
    }

    /// `VirtualMachineSnapshot.RenameSnapshot`.
    pub async fn rename_snapshot(
        &self,
        snapshot: &ManagedObjectReference,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<()> {
        let args = |w: &mut RequestWriter| {
            if let Some(n) = name {
                w.text("name", n);
            }
            if let Some(d) = description {
                w.text("description", d);
            }
        };
        self.call(&PlainCall {
            name: "RenameSnapshot",
            this: snapshot,
            args: &args,
        })
        .await
    }

    /// `VirtualMachineSnapshot.RevertToSnapshot_Task`.
    pub async fn revert_to_snapshot(
        self: &Arc<Self>,
        snapshot: &ManagedObjectReference,
        suppress_power_on: bool,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let args = |w: &mut RequestWriter| {
            w.text(
                "suppressPowerOn",
                if suppress_power_on { "true" } else { "false" },
            );
        };
        self.run_task(
            TaskCall {
                name: "RevertToSnapshot_Task",
                this: snapshot,
                args: &args,
            },
            timeout,
            cancel,
        )
        .await
        .map(|_| ())
    }

    /// `VirtualMachineSnapshot.RemoveSnapshot_Task` without its children (they are re-parented;
    /// vSphere consolidates the disk data).
    pub async fn remove_snapshot(
        self: &Arc<Self>,
        snapshot: &ManagedObjectReference,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let args = |w: &mut RequestWriter| {
            w.text("removeChildren", "false")
                .text("consolidate", "true");
        };
        self.run_task(
            TaskCall {
                name: "RemoveSnapshot_Task",
                this: snapshot,
                args: &args,
            },
            timeout,
            cancel,
        )
        .await
        .map(|_| ())
    }

    /// Consolidates the VM's disks when `runtime.consolidationNeeded` says so; returns whether
    /// it did.
    pub async fn consolidate_if_needed(
        self: &Arc<Self>,
        vm: &ManagedObjectReference,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<bool> {
        let needed = self
            .properties(vm, &["runtime.consolidationNeeded"])
            .await?
            .bool("runtime.consolidationNeeded")
            .unwrap_or(false);
        if !needed {
            return Ok(false);
        }
        self.run_task(
            TaskCall {
                name: "ConsolidateVMDisks_Task",
                this: vm,
                args: &no_args,
            },
            timeout,
            cancel,
        )
        .await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::xml::parse_fragment;

    #[test]
    fn flattens_the_tree_with_parents() {
        let xml = r#"<val><currentSnapshot type="VirtualMachineSnapshot">snapshot-3</currentSnapshot><rootSnapshotList><snapshot type="VirtualMachineSnapshot">snapshot-1</snapshot><name>a</name><description>first</description><createTime>2026-11-27T05:00:00Z</createTime><state>poweredOn</state><quiesced>false</quiesced><childSnapshotList><snapshot type="VirtualMachineSnapshot">snapshot-3</snapshot><name>b</name><createTime>2026-11-27T05:01:00Z</createTime><state>poweredOff</state><quiesced>true</quiesced></childSnapshotList></rootSnapshotList></val>"#;
        let node = parse_fragment(xml).unwrap().pop().unwrap();
        let tree = SnapshotTree::from_node(Some(&node));
        assert_eq!(tree.snapshots.len(), 2);
        let b = tree.by_id("snapshot-3").unwrap();
        assert_eq!(b.parent.as_ref().unwrap().value, "snapshot-1");
        assert!(b.quiesced);
        assert_eq!(tree.current.unwrap().value, "snapshot-3");
    }
}
