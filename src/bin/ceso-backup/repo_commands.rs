//! The commands that only touch the repository: init, list, show, verify, prune, gc.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;

use ceso::engine::backup::hot::VmSpec;
use ceso::engine::backup::prune::PruneMark;
use ceso::engine::backup::{
    BackupId, GcOptions, InitOptions, KeepPolicy, PruneOptions, Repository, VerifyOptions,
};

use tokio_util::sync::CancellationToken;

use crate::failure::{code, Failure};
use crate::output::{human_bytes, Output};
use crate::settings::RepoArgs;
use crate::PruneArgs;

fn to_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// `init`.
pub async fn init(
    args: &RepoArgs,
    encrypt: bool,
    chunk_size: u64,
    out: Output,
) -> Result<(), Failure> {
    let (url, backend) = args.backend()?;
    let key = args.key()?;
    if encrypt && key.is_none() {
        return Err(Failure::usage(
            "--encrypt needs a passphrase (CESO_BACKUP_PASSWORD or --password-file) or --key-file",
        ));
    }
    if !encrypt && key.is_some() && (args.password_file.is_some() || args.key_file.is_some()) {
        return Err(Failure::usage(
            "a passphrase or key file was given without --encrypt; add --encrypt to use it",
        ));
    }
    let chunk_size = u32::try_from(chunk_size)
        .map_err(|_| Failure::usage("the chunk size must be at most 64MiB"))?;
    let repo = Repository::init(
        backend,
        InitOptions {
            chunk_size,
            key: if encrypt { key } else { None },
            ..InitOptions::default()
        },
    )
    .await?;
    let config = repo.config();
    out.result(
        "init",
        json!({"repository": url.to_string(), "id": config.repository_id, "chunk_size": config.chunk_size, "encrypted": repo.encrypted()}),
        || {
            format!(
                "created repository {url} ({} chunks{})",
                human_bytes(u64::from(config.chunk_size)),
                if repo.encrypted() { ", encrypted" } else { "" }
            )
        },
    );
    Ok(())
}

/// `list`.
pub async fn list(args: &RepoArgs, vm: Option<&str>, out: Output) -> Result<(), Failure> {
    let repo = args.open().await?;
    let backups: Vec<_> = repo
        .list()
        .await?
        .into_iter()
        .filter(|b| vm.is_none_or(|v| b.vm.name == v || b.vm.uuid == v))
        .collect();
    out.result("list", json!({"backups": to_json(&backups)}), || {
        let mut text = format!(
            "{:<28} {:<24} {:<20} {:<17} {:<16} {:>10} {:>10} {:>10}\n",
            "ID", "VM", "CREATED", "CONSISTENCY", "JOB", "SIZE", "READ", "STORED"
        );
        for b in &backups {
            let size: u64 = b.disks.iter().map(|d| d.capacity).sum();
            let read: u64 = b.disks.iter().map(|d| d.bytes_read).sum();
            let stored: u64 = b.disks.iter().map(|d| d.bytes_stored).sum();
            let _ = writeln!(
                text,
                "{:<28} {:<24} {:<20} {:<17} {:<16} {:>10} {:>10} {:>10}",
                b.id,
                b.vm.name,
                b.created.format("%Y-%m-%d %H:%M:%S"),
                b.consistency.as_str(),
                b.job.as_deref().unwrap_or("-"),
                human_bytes(size),
                human_bytes(read),
                human_bytes(stored)
            );
        }
        if backups.is_empty() {
            text = "no backups".into();
        }
        text
    });
    Ok(())
}

fn parse_id(id: &str) -> Result<BackupId, Failure> {
    id.parse()
        .map_err(|e: ceso::engine::backup::Error| Failure::usage(e.to_string()))
}

/// `show`.
pub async fn show(args: &RepoArgs, id: &str, out: Output) -> Result<(), Failure> {
    let repo = args.open().await?;
    let manifest = repo.show(&parse_id(id)?).await?;
    let summary = manifest.summary();
    let disks: Vec<_> = manifest
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            json!({
                "index": i, "label": d.label, "capacity": d.capacity, "chunk_size": d.chunk_size,
                "chunks": d.chunks.len(), "zero_chunks": d.chunks.iter().filter(|c| c.is_none()).count(),
                "bytes_read": d.bytes_read, "bytes_reused": d.bytes_reused, "bytes_new": d.bytes_new,
                "bytes_stored": d.bytes_stored, "change_id": d.change_id,
            })
        })
        .collect();
    let value = json!({
        "id": summary.id, "vm": summary.vm, "created": to_json(&summary)["created"],
        "finished": to_json(&summary)["finished"], "consistency": summary.consistency,
        "consistency_note": manifest.consistency_note, "job": manifest.job,
        "endpoint": manifest.endpoint,
        "parent": manifest.parent, "vm_config": manifest.vm_config, "disks": disks,
    });
    out.result("show", value, || {
        let mut t = String::new();
        let _ = writeln!(t, "backup      {}", manifest.id);
        let _ = writeln!(t, "vm          {} ({})", manifest.vm.name, manifest.vm.uuid);
        let _ = writeln!(t, "created     {}", manifest.created.to_rfc3339());
        let _ = writeln!(t, "finished    {}", manifest.finished.to_rfc3339());
        let _ = writeln!(t, "consistency {}", manifest.consistency);
        if let Some(note) = &manifest.consistency_note {
            let _ = writeln!(t, "            ({note})");
        }
        if let Some(job) = &manifest.job {
            let _ = writeln!(t, "job         {job}");
        }
        if let Some(endpoint) = &manifest.endpoint {
            let _ = writeln!(t, "endpoint    {endpoint}");
        }
        if let Some(p) = &manifest.parent {
            let _ = writeln!(t, "parent      {p}");
        }
        if let Ok(spec) = VmSpec::from_json(&manifest.vm_config) {
            let _ = writeln!(
                t,
                "config      {} vCPU, {} MiB, {}, guest {}, {} NIC(s)",
                spec.num_cpus,
                spec.memory_mb,
                spec.firmware,
                spec.guest_id,
                spec.nics.len()
            );
        }
        for (i, d) in manifest.disks.iter().enumerate() {
            let _ = writeln!(
                t,
                "disk {i}      {:?} {} read {} reused {} stored {} change id {}",
                d.label,
                human_bytes(d.capacity),
                human_bytes(d.bytes_read),
                human_bytes(d.bytes_reused),
                human_bytes(d.bytes_stored),
                d.change_id.as_deref().unwrap_or("-")
            );
        }
        t
    });
    Ok(())
}

/// `verify`: exit 3 when something is damaged.
pub async fn verify(
    args: &RepoArgs,
    sample: Option<f64>,
    out: Output,
    cancel: &CancellationToken,
) -> Result<(), Failure> {
    if sample.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
        return Err(Failure::usage("--sample is a fraction from 0 to 1"));
    }
    let repo = args.open_until(cancel).await?;
    let report = repo.verify(VerifyOptions { sample }).await?;
    let affected = report.affected_backups();
    out.result(
        "verify",
        json!({"ok": report.is_ok(), "report": to_json(&report), "affected_backups": affected}),
        || {
            let mut t = format!(
                "checked {} of {} chunks ({}) in {} backups",
                report.chunks_checked,
                report.chunks_referenced,
                human_bytes(report.bytes_checked),
                report.backups
            );
            for p in &report.problems {
                let ids: Vec<String> = p.backups.iter().map(ToString::to_string).collect();
                let _ = write!(
                    t,
                    "\n{} chunk {}: {}; affects {}",
                    if p.missing { "MISSING" } else { "CORRUPT" },
                    p.chunk,
                    p.problem,
                    ids.join(", ")
                );
            }
            for (id, why) in &report.unreadable_backups {
                let _ = write!(t, "\nUNREADABLE backup {id}: {why}");
            }
            if report.is_ok() {
                t.push_str("\nno problems found");
            }
            t
        },
    );
    if report.is_ok() {
        Ok(())
    } else {
        Err(Failure::new(
            code::DAMAGED,
            format!(
                "{} damaged chunk(s); backups affected: {}",
                report.problems.len(),
                affected
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    }
}

/// `prune`.
pub async fn prune(
    args: &RepoArgs,
    a: PruneArgs,
    out: Output,
    cancel: &CancellationToken,
) -> Result<(), Failure> {
    let policy = KeepPolicy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
    };
    if !policy.keeps_something() {
        return Err(Failure::usage(
            "give at least one --keep-* option (a policy with none would keep everything)",
        ));
    }
    let repo = args.open_until(cancel).await?;
    let vm_uuid = match &a.vm {
        None => None,
        Some(v) => {
            let list = repo.list().await?;
            let found = list
                .iter()
                .find(|b| b.vm.uuid == *v || b.vm.name == *v)
                .map(|b| b.vm.uuid.clone());
            Some(found.ok_or_else(|| Failure::usage(format!("no backups of VM {v:?}")))?)
        }
    };
    let report = repo
        .prune(PruneOptions {
            policy,
            vm_uuid,
            job: a.job,
            endpoint: a.endpoint_name,
            dry_run: a.dry_run,
        })
        .await?;
    out.result("prune", to_json(&report), || {
        let mut t = String::new();
        for e in &report.entries {
            let verdict = match e.mark {
                PruneMark::Remove if report.dry_run => "would remove".to_string(),
                PruneMark::Remove => "removed".to_string(),
                PruneMark::Keep(why) => format!("keep ({})", to_json(&why).as_str().unwrap_or("")),
            };
            let _ = writeln!(t, "{} {:<24} {verdict}", e.id, e.vm.name);
        }
        let _ = write!(
            t,
            "{} backup(s) removed{}; run gc to free their chunks",
            report.removed,
            if report.dry_run { " (dry run)" } else { "" }
        );
        t
    });
    Ok(())
}

/// `gc`.
pub async fn gc(
    args: &RepoArgs,
    grace: Duration,
    dry_run: bool,
    out: Output,
    cancel: &CancellationToken,
) -> Result<(), Failure> {
    let repo = args.open_until(cancel).await?;
    let report = repo.gc(GcOptions { grace, dry_run }).await?;
    out.result("gc", to_json(&report), || {
        format!(
            "{} of {} chunks unreferenced: {} deleted ({}){}, {} kept as recent; {} referenced chunk(s) missing",
            report.chunks_deleted + report.chunks_kept_recent,
            report.chunks_total,
            report.chunks_deleted,
            human_bytes(report.bytes_deleted),
            if dry_run { " (dry run: nothing deleted)" } else { "" },
            report.chunks_kept_recent,
            report.chunks_missing
        )
    });
    Ok(())
}
