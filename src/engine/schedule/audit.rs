//! The audit log: one JSON object per line for every backup, prune, verify, gc, hook, run and
//! job change (who, what, when, result), appended to a file the operator chooses. The file is
//! private to its owner (0600), as it names VMs, jobs and errors.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One audit record.
#[derive(Clone, Debug, Serialize)]
pub struct AuditEvent<'a> {
    /// When it happened.
    pub time: DateTime<Utc>,
    /// Who did it: the daemon's node name, or the user running a command.
    pub actor: &'a str,
    /// What: `run.start`, `run.finish`, `backup`, `prune`, `verify`, `job.put`, `job.delete`.
    pub action: &'a str,
    /// The job concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<&'a str>,
    /// The VM concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm: Option<&'a str>,
    /// `ok`, `failed`, or a run status.
    pub result: &'a str,
    /// Details: the backup id, bytes, the error.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

/// An append-only JSON lines file (or nowhere).
#[derive(Debug, Default)]
pub struct AuditLog {
    file: Option<Mutex<std::fs::File>>,
    path: Option<PathBuf>,
}

impl AuditLog {
    /// Appends to `path` (created 0600 if missing; an existing file open to its group or
    /// others is made private).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        let mode = file.metadata()?.permissions().mode();
        if mode & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))?;
        }
        Ok(Self {
            file: Some(Mutex::new(file)),
            path: Some(path.to_path_buf()),
        })
    }

    /// A log that records nothing.
    pub fn none() -> Self {
        Self::default()
    }

    /// Where records go.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Appends one record as one line (written whole, so concurrent writers interleave lines,
    /// never bytes within a line).
    pub fn record(&self, event: &AuditEvent<'_>) {
        let Some(file) = &self.file else {
            return;
        };
        let mut line = match serde_json::to_vec(event) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode an audit record");
                return;
            }
        };
        line.push(b'\n');
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(&line).and_then(|()| f.flush()) {
            tracing::warn!(error = %e, "cannot write the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        for action in ["run.start", "run.finish"] {
            log.record(&AuditEvent {
                time: Utc::now(),
                actor: "node-a",
                action,
                job: Some("nightly"),
                vm: None,
                result: "ok",
                detail: serde_json::Value::Null,
            });
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["action"], "run.finish");
        assert!(lines[0].get("detail").is_none());
    }
}
