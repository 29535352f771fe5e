//! Logs as go-plugin expects them from a plugin: one hclog JSON object per line on stderr
//! (`@level`, `@message`, `@timestamp`, `@module`, then the event's fields), so
//! `TF_LOG=DEBUG terraform plan` shows our lines at their levels.
//!
//! The level comes from `CESO_LOG` or `RUST_LOG` (tracing filter syntax, e.g.
//! `ceso::vsphere::wire=trace`), else `TF_LOG_PROVIDER`, else `TF_LOG`, else `info`.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Installs the hclog JSON logger on stderr as the global subscriber. Call once, at start-up.
pub fn init() {
    let filter = EnvFilter::try_new(filter_directive()).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(HclogJson)
        .try_init();
}

/// The filter directive chosen from the environment.
pub fn filter_directive() -> String {
    for var in ["CESO_LOG", "RUST_LOG"] {
        if let Ok(v) = std::env::var(var) {
            if !v.is_empty() {
                return v;
            }
        }
    }
    for var in ["TF_LOG_PROVIDER", "TF_LOG"] {
        if let Ok(v) = std::env::var(var) {
            let level = match v.to_ascii_uppercase().as_str() {
                "TRACE" | "JSON" => "trace",
                "DEBUG" => "debug",
                "INFO" => "info",
                "WARN" => "warn",
                "ERROR" => "error",
                "OFF" => "off",
                _ => continue,
            };
            return level.to_string();
        }
    }
    "info".to_string()
}

/// Formats events as hclog JSON lines.
pub struct HclogJson;

impl<S, N> FormatEvent<S, N> for HclogJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let mut line = serde_json::Map::new();
        line.insert("@level".into(), level_name(meta.level()).into());
        line.insert("@message".into(), fields.message.unwrap_or_default().into());
        line.insert("@module".into(), meta.target().replace("::", ".").into());
        line.insert(
            "@timestamp".into(),
            chrono::Utc::now()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string()
                .into(),
        );
        for (k, v) in fields.fields {
            line.insert(k, v);
        }
        let mut text =
            serde_json::to_string(&serde_json::Value::Object(line)).map_err(|_| std::fmt::Error)?;
        text.push('\n');
        writer.write_str(&text)
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

#[derive(Default)]
struct JsonFields {
    message: Option<String>,
    fields: Vec<(String, serde_json::Value)>,
}

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            self.fields.push((field.name().to_string(), value.into()));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name().to_string(), value.into()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.push((field.name().to_string(), value.into()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.push((field.name().to_string(), value.into()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.fields.push((field.name().to_string(), text.into()));
        }
    }
}
