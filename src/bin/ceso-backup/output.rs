//! How results and progress reach the user: text (progress bars when stderr is a terminal) or
//! JSON lines on stdout (`--json`), one object per line with an `event` field: `note`,
//! `disk-started`, `progress`, `disk-finished`, then one `result` or `error`.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use ceso::engine::backup::hot::{Progress, ProgressSink};

use crate::failure::Failure;

/// Text or JSON lines.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    json: bool,
    bars: bool,
}

fn print_json(value: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

impl Output {
    /// JSON lines with `json`, else text (with progress bars when stderr is a terminal).
    pub fn new(json: bool) -> Self {
        Self {
            json,
            bars: !json && std::io::stderr().is_terminal(),
        }
    }

    /// Something the user should know, as it happens.
    pub fn note(&self, message: &str) {
        if self.json {
            print_json(&json!({"event": "note", "message": message}));
        } else {
            eprintln!("{message}");
        }
    }

    /// The command's result: `value` as a JSON line, or `text` on stdout.
    pub fn result(&self, command: &str, value: Value, text: impl FnOnce() -> String) {
        if self.json {
            let mut line = json!({"event": "result", "command": command});
            if let (Some(obj), Value::Object(fields)) = (line.as_object_mut(), value) {
                obj.extend(fields);
            }
            print_json(&line);
        } else {
            let text = text();
            if !text.is_empty() {
                println!("{}", text.trim_end());
            }
        }
    }

    /// A failure, before exiting with its status.
    pub fn error(&self, failure: &Failure) {
        if self.json {
            print_json(
                &json!({"event": "error", "message": failure.message, "exit_code": failure.code}),
            );
        } else {
            eprintln!("ceso-backup: error: {}", failure.message);
        }
    }

    /// A progress sink for the engine.
    pub fn progress(&self) -> ProgressSink {
        let state = Arc::new(Mutex::new(ProgressState::default()));
        let out = *self;
        Arc::new(move |event| {
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            st.handle(out, event);
        })
    }
}

#[derive(Default)]
struct ProgressState {
    bar: Option<ProgressBar>,
    done: u64,
    total: u64,
    last_line: Option<Instant>,
}

impl ProgressState {
    fn handle(&mut self, out: Output, event: Progress) {
        match event {
            Progress::Note { message } => match &self.bar {
                Some(bar) => bar.println(&message),
                None => out.note(&message),
            },
            Progress::DiskStarted {
                disk,
                capacity,
                to_transfer,
            } => {
                self.done = 0;
                self.total = to_transfer;
                self.last_line = None;
                if out.json {
                    print_json(
                        &json!({"event": "disk-started", "disk": disk, "capacity": capacity, "to_transfer": to_transfer}),
                    );
                } else if out.bars {
                    let bar = ProgressBar::new(to_transfer);
                    let style = ProgressStyle::with_template(
                        "{msg:>14} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .map(|s| s.progress_chars("=> "))
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
                    bar.set_style(style);
                    bar.set_message(disk);
                    self.bar = Some(bar);
                } else {
                    eprintln!("{disk}: {to_transfer} of {capacity} bytes to transfer");
                }
            }
            Progress::Bytes { disk, bytes } => {
                self.done += bytes;
                if let Some(bar) = &self.bar {
                    bar.inc(bytes);
                } else if out.json
                    && self
                        .last_line
                        .is_none_or(|t| t.elapsed() >= Duration::from_millis(500))
                {
                    self.last_line = Some(Instant::now());
                    print_json(
                        &json!({"event": "progress", "disk": disk, "done": self.done, "total": self.total}),
                    );
                }
            }
            Progress::DiskFinished { disk } => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                if out.json {
                    print_json(
                        &json!({"event": "disk-finished", "disk": disk, "transferred": self.done}),
                    );
                } else {
                    eprintln!("{disk}: done, {} bytes transferred", self.done);
                }
            }
        }
    }
}

/// Bytes for people: `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
