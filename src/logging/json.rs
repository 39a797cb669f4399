//! `--log-format json`: one object per line with `timestamp` (RFC 3339,
//! UTC), `level`, `message` and the event's fields as real JSON values:
//! numbers and booleans as such, and lists logged through [`array`] as
//! arrays, where tracing's own JSON layer would write the text of their
//! `Debug` form (`"domains":"[]"`).
//!
//! How a list is told apart: tracing hands a layer only `Debug` text, so
//! [`Array`] raises a thread-local mark while it formats itself; the
//! field visitor formats each value on the same thread and takes the text
//! as JSON when the mark went up. Nothing else can raise it.

use std::cell::Cell;
use std::fmt;

use serde::ser::SerializeMap;
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

thread_local! {
    static RAW_JSON: Cell<bool> = const { Cell::new(false) };
}

/// A list for a log field: `domains = %logging::array(&sent.domains)`.
/// JSON text (`["a.com"]`) in human logs, an array in JSON logs.
pub struct Array(Value);

pub fn array<T: serde::Serialize>(items: impl IntoIterator<Item = T>) -> Array {
    let items = items
        .into_iter()
        .map(|item| serde_json::to_value(item).unwrap_or(Value::Null))
        .collect();
    Array(Value::Array(items))
}

impl fmt::Display for Array {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        RAW_JSON.with(|raw| raw.set(true));
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Array {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The event formatter for `--log-format json`.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields(vec![
            (
                "timestamp",
                Value::String(
                    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
                ),
            ),
            ("level", Value::String(event.metadata().level().to_string())),
        ]);
        event.record(&mut fields);
        let line = serde_json::to_string(&fields).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

/// The error that ends a command, as a JSON log line (the human format
/// prints it as `error: …`).
pub fn error_line(message: &str) -> String {
    serde_json::json!({
        "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
        "level": "ERROR",
        "message": message,
    })
    .to_string()
}

/// An event's fields in the order they were recorded.
struct Fields(Vec<(&'static str, Value)>);

impl serde::Serialize for Fields {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        RAW_JSON.with(|raw| raw.set(false));
        let text = format!("{value:?}");
        let value = match RAW_JSON.with(|raw| raw.replace(false)) {
            true => serde_json::from_str(&text).unwrap_or(Value::String(text)),
            false => Value::String(text),
        };
        self.0.push((field.name(), value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .push((field.name(), Value::String(value.to_string())));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.push((field.name(), value.into()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.push((field.name(), value.into()));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.push((field.name(), value.into()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.push((field.name(), value.into()));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .push((field.name(), Value::String(value.to_string())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_array_field_is_json_text_and_raises_the_mark_only_for_itself() {
        let mut fields = Fields(Vec::new());
        let list = array(["a.com", "b.com"]);
        let plain = "[not json]";
        RAW_JSON.with(|raw| raw.set(false));
        let text = format!("{list:?}");
        assert_eq!(text, r#"["a.com","b.com"]"#);
        assert!(RAW_JSON.with(|raw| raw.replace(false)));
        // What the visitor does for `%list` and `?plain`.
        let value: Value = serde_json::from_str(&text).unwrap();
        fields.0.push(("domains", value));
        let debug = format!("{plain:?}");
        assert!(!RAW_JSON.with(|raw| raw.get()), "{debug}");
    }
}
