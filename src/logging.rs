//! Logs on stderr as hclog JSON lines (docs/nomad-contract.md, *Logs on stderr*): `@level`, `@message`, `@timestamp` always
//! strings, the timestamp with exactly six fractional digits, and write errors swallowed (after
//! an agent crash nobody reads stderr any more).

use std::fmt::Write as _;
use std::io::Write;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// Installs the hclog JSON layer as the global subscriber at `level`.
pub fn init(level: Level) {
    let layer = HclogLayer { level };
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

struct HclogLayer {
    level: Level,
}

impl<S: Subscriber> Layer<S> for HclogLayer {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        // ours at the configured level; dependencies only from warn up
        let limit = if metadata.target().starts_with("nomad_driver_systemd") {
            self.level
        } else {
            Level::WARN
        };
        *metadata.level() <= limit
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut line = hclog_line(
            *event.metadata().level(),
            event.metadata().target(),
            SystemTime::now(),
            |visit| event.record(visit),
        );
        line.push('\n');
        // Ignore every error: a broken stderr must never take the plugin down.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

struct JsonFields {
    map: serde_json::Map<String, serde_json::Value>,
    message: String,
}

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.map.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.map.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.map.insert(field.name().into(), value.into());
    }
}

impl JsonFields {
    fn put(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = value;
        } else {
            // never let a field shadow hclog's own keys
            let key = field.name().trim_start_matches('@').to_string();
            self.map.insert(key, value.into());
        }
    }
}

/// One hclog JSON object (without the newline).
pub fn hclog_line(
    level: Level,
    module: &str,
    at: SystemTime,
    record: impl FnOnce(&mut dyn Visit),
) -> String {
    let mut fields = JsonFields {
        map: serde_json::Map::new(),
        message: String::new(),
    };
    record(&mut fields);
    let mut map = fields.map;
    map.insert("@level".into(), level_name(level).into());
    map.insert("@message".into(), fields.message.into());
    map.insert("@module".into(), module.replace("::", ".").into());
    map.insert("@timestamp".into(), timestamp(at).into());
    serde_json::Value::Object(map).to_string()
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// `2006-01-02T15:04:05.000000Z` in UTC.
pub fn timestamp(at: SystemTime) -> String {
    let d = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    let mut s = String::with_capacity(27);
    let _ = write!(
        s,
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_micros()
    );
    s
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's algorithm). Shared with the CLI's timestamps.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_have_six_fractional_digits() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_786_558_961, 123_456_789);
        assert_eq!(timestamp(t), "2026-08-12T18:22:41.123456Z");
        assert_eq!(
            timestamp(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000Z"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert!(timestamp(leap).starts_with("2000-02-29T"));
    }

    #[test]
    fn lines_keep_hclog_keys_strings() {
        let line = hclog_line(
            Level::WARN,
            "nomad_driver_systemd::driver",
            SystemTime::UNIX_EPOCH,
            |_| {},
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["@level"], "warn");
        assert_eq!(v["@message"], "");
        assert_eq!(v["@module"], "nomad_driver_systemd.driver");
        assert!(v["@timestamp"].is_string());
    }
}
