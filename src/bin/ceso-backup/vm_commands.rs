//! The commands that talk to vSphere: backup and restore (restore to a file needs no vSphere).

use std::fmt::Write as _;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use ceso::engine::backup::hot::{
    backup_vm, restore_disk_to_file, restore_vm, BackupOptions, DiskMode, Quiesce, RestoreOptions,
};
use ceso::engine::backup::{BackupId, LockOptions};

use crate::failure::{code, Failure};
use crate::output::{human_bytes, Output};
use crate::settings::RepoArgs;
use crate::{BackupArgs, RestoreArgs};

fn to_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// `backup`.
pub async fn backup(
    repo_args: &RepoArgs,
    a: BackupArgs,
    out: Output,
    cancel: &CancellationToken,
) -> Result<(), Failure> {
    let repo = repo_args
        .open_until(cancel)
        .await?
        .with_lock_options(LockOptions {
            ttl: a.lease_ttl,
            wait: a.wait,
            clock_skew: a.clock_skew,
        });
    let client = a.vsphere.connect().await?;
    let mut options = BackupOptions::new(a.vm);
    options.full = a.full;
    options.max_rate = a.max_rate;
    options.read_ahead = a.read_ahead.max(1);
    options.lease_wait = a.wait;
    options.endpoint = a.vsphere.endpoint_id();
    if a.quiesce {
        options.quiesce = Quiesce::Required;
    }
    let result = backup_vm(&client, &repo, &options, &out.progress(), cancel).await;
    client.logout().await;
    let report = result?;
    out.result("backup", to_json(&report), || {
        let mut t = format!(
            "backup {} of {} ({}) committed in {:.1} s (snapshot held {:.1} s)\n",
            report.backup,
            report.vm.name,
            report.consistency,
            report.seconds,
            report.snapshot_seconds
        );
        for d in &report.disks {
            let mode = match &d.mode {
                DiskMode::Full {
                    reason,
                    allocated_only,
                } => format!(
                    "full ({reason}{})",
                    if *allocated_only {
                        "; allocated areas only"
                    } else {
                        ""
                    }
                ),
                DiskMode::Incremental { changed_bytes, .. } => {
                    format!("incremental ({} changed)", human_bytes(*changed_bytes))
                }
            };
            let _ = writeln!(
                t,
                "  {}: {} read, {} reused, {} new, {} stored; {mode}",
                d.label,
                human_bytes(d.bytes_read),
                human_bytes(d.bytes_reused),
                human_bytes(d.bytes_new),
                human_bytes(d.bytes_stored)
            );
        }
        for w in &report.warnings {
            let _ = writeln!(t, "warning: {w}");
        }
        t
    });
    match &report.snapshot_left {
        Some(s) => Err(Failure::new(
            code::FAILURE,
            format!("the backup is committed, but snapshot {s:?} could not be removed"),
        )),
        None => Ok(()),
    }
}

/// `restore`.
pub async fn restore(
    repo_args: &RepoArgs,
    a: RestoreArgs,
    out: Output,
    cancel: &CancellationToken,
) -> Result<(), Failure> {
    let id: BackupId =
        a.id.parse()
            .map_err(|e: ceso::engine::backup::Error| Failure::usage(e.to_string()))?;
    let repo = repo_args.open_until(cancel).await?;
    if let (Some(path), Some(which)) = (&a.to_file, &a.disk) {
        let manifest = repo.show(&id).await?;
        let disk = match which.parse::<usize>() {
            Ok(i) => manifest.disks.get(i),
            Err(_) => manifest.disk(which),
        }
        .ok_or_else(|| {
            let labels: Vec<String> = manifest
                .disks
                .iter()
                .enumerate()
                .map(|(i, d)| format!("{i}: {:?}", d.label))
                .collect();
            Failure::usage(format!(
                "backup {id} has no disk {which:?}; its disks: {}",
                labels.join(", ")
            ))
        })?;
        let restore = restore_disk_to_file(&repo, disk, path);
        let bytes = tokio::select! {
            r = restore => r?,
            () = cancel.cancelled() => {
                let _ = std::fs::remove_file(path);
                return Err(Failure::new(code::INTERRUPTED, "interrupted; the partial file was removed"));
            }
        };
        out.result(
            "restore",
            json!({"backup": id, "disk": disk.label, "file": path, "bytes": bytes}),
            || {
                format!(
                    "restored disk {:?} of {id} to {} ({})",
                    disk.label,
                    path.display(),
                    human_bytes(bytes)
                )
            },
        );
        return Ok(());
    }
    let Some(name) = a.to else {
        return Err(Failure::usage("give --to NAME, or --disk N --to-file PATH"));
    };
    let client = a.vsphere.connect().await?;
    let mut options = RestoreOptions::new(name);
    options.replace = a.force;
    options.datastore = a.datastore;
    options.host = a.host;
    options.power_on = a.power_on;
    let result = restore_vm(&client, &repo, &id, &options, &out.progress(), cancel).await;
    client.logout().await;
    let report = result?;
    out.result("restore", to_json(&report), || {
        let mut t = format!(
            "restored {} as VM {} ({}){}\n",
            report.backup,
            report.name,
            report.vm,
            report
                .replaced
                .as_ref()
                .map(|r| format!(", replacing {r}"))
                .unwrap_or_default()
        );
        for d in &report.disks {
            let _ = writeln!(t, "  {}: {} ({})", d.label, d.file, human_bytes(d.bytes));
        }
        for n in &report.notes {
            let _ = writeln!(t, "note: {n}");
        }
        t
    });
    Ok(())
}
