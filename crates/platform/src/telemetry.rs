//! Logging set-up: `RUST_LOG` wins, otherwise `info` for our crates and `warn` for the rest,
//! and `info` for the access lines (target `access`; `RUST_LOG=...,access=warn` silences
//! them), except the AMQP client's own I/O thread: every failure it sees reaches our code as an error,
//! which is logged once with its context (one line per outage and recovery), while its own
//! lines repeat them and race with the runtime's shutdown at exit ("A Tokio 1.x context was
//! found, but it is being shutdown"). `RUST_LOG=lapin=debug` brings them back.
//!
//! Logs go to standard error (standard output is the commands' own output: `portal seed`'s
//! report, `portal up`'s addresses). `LOG_FORMAT`: `text` (for people), `json` (one object per
//! line for a log pipeline: `time`, `level`, `service`, `message`, `target` and the event's own
//! `fields`), or `auto`, the default: text when standard error is a terminal, JSON otherwise (a
//! systemd journal, a container's log, a file). Emails and phone numbers are not logged at
//! INFO: user ids instead.

use std::fmt::Write as _;
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// `LOG_FORMAT` (`text`, `json`, `auto` or unset); anything else is a configuration error
    /// (a typo must not turn a log pipeline's JSON into text unnoticed).
    fn from_env() -> Result<Self, String> {
        Self::parse(std::env::var("LOG_FORMAT").ok().as_deref())
    }

    fn parse(value: Option<&str>) -> Result<Self, String> {
        match value {
            Some("text") => Ok(Self::Text),
            Some("json") => Ok(Self::Json),
            None | Some("auto") | Some("") => match std::io::stderr().is_terminal() {
                true => Ok(Self::Text),
                false => Ok(Self::Json),
            },
            Some(other) => Err(format!("LOG_FORMAT={other:?} is not text, json or auto")),
        }
    }
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "warn,lapin=off,access=info,security=info,portal=info,auth_service=info,user_service=info,\
             appointment_service=info,consumer=info,gateway=info,web=info,sync_admin=info,\
             platform=info,ops=info",
        )
    })
}

/// Sets up logging for `service` (the name JSON lines carry, e.g. `auth-service`, or `portal`
/// for a process running several). A second call (tests, embedded use) is harmless. A bad
/// `LOG_FORMAT` is refused with the reason, before anything is logged.
pub fn init(service: &str) -> Result<(), String> {
    let format = LogFormat::from_env()?;
    let _ = match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .with_target(false)
            .try_init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .event_format(JsonLine {
                service: service.to_owned(),
            })
            .try_init(),
    };
    Ok(())
}

/// One JSON object per event.
struct JsonLine {
    service: String,
}

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let line = serde_json::json!({
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "level": meta.level().as_str(),
            "service": self.service,
            "message": fields.message,
            "target": meta.target(),
            "fields": fields.values,
        });
        writeln!(writer, "{line}")
    }
}

/// An event's message and its other fields, as JSON values.
#[derive(Default)]
struct Fields {
    message: String,
    values: serde_json::Map<String, serde_json::Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        if field.name() == "message" {
            match value {
                serde_json::Value::String(s) => self.message = s,
                other => {
                    let _ = write!(self.message, "{other}");
                }
            }
        } else {
            self.values.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, serde_json::Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, serde_json::Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, serde_json::Value::String(value.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::LogFormat;

    #[test]
    fn a_log_format_that_is_not_text_json_or_auto_is_refused_by_name() {
        assert_eq!(LogFormat::parse(Some("json")), Ok(LogFormat::Json));
        assert_eq!(LogFormat::parse(Some("text")), Ok(LogFormat::Text));
        assert!(LogFormat::parse(Some("auto")).is_ok());
        assert!(LogFormat::parse(None).is_ok());
        let refused = LogFormat::parse(Some("jsno")).unwrap_err();
        assert!(
            refused.contains("LOG_FORMAT") && refused.contains("jsno"),
            "{refused}"
        );
    }
}
