//! The logger: env_logger with the relay's filters and formats.
//!
//! - Filters: `info` by default, then `RUST_LOG`, then `--log-level`/`--debug`. Message lines
//!   (`mcp_relay::messages`) are off unless `--log-messages` turns them on (at info, or trace — with
//!   payloads — when the relay logs at trace), or `RUST_LOG` names their target. The access
//!   log (`mcp_relay::access`) is on at info, and `RUST_LOG=info,mcp_relay::access=off` silences it.
//! - Formats: text (env_logger's own, with a timestamp), text for journald (no timestamp:
//!   journald adds its own; a `<N>` syslog priority prefix instead, as sd-daemon(3) says),
//!   or JSON (one object per line: `timestamp` (RFC 3339, UTC), `level`, `target`,
//!   `message`, and the line's structured fields).

use log::kv::{Error as KvError, Key, Value, VisitSource, VisitValue};
use log::{Level, LevelFilter, Record};
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use mcp_relay_core::log_targets::MESSAGES;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    Json,
}

pub(crate) fn parse_format(s: &str) -> Result<Format, String> {
    match s {
        "text" => Ok(Format::Text),
        "json" => Ok(Format::Json),
        _ => Err(format!("`{s}` is not a log format (text or json)")),
    }
}

/// What the command line says about logging.
pub(crate) struct Options {
    pub(crate) level: Option<LevelFilter>,
    pub(crate) debug: bool,
    pub(crate) format: Format,
    pub(crate) messages: bool,
}

/// Installs the logger (once, at startup). `rust_log` is `RUST_LOG`; `journal_stream` is
/// `JOURNAL_STREAM` (set by systemd when stderr goes to the journal).
pub(crate) fn init(opts: &Options, rust_log: Option<&str>, journal_stream: Option<&str>) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(LevelFilter::Info);
    builder.filter_module(MESSAGES, LevelFilter::Off);
    if let Some(spec) = rust_log {
        builder.parse_filters(spec);
    }
    let level = if opts.debug {
        Some(LevelFilter::Debug)
    } else {
        opts.level
    };
    if let Some(level) = level {
        builder.filter_level(level);
    }
    if opts.messages && !rust_log.is_some_and(names_messages) {
        let global = level
            .or_else(|| rust_log.and_then(global_level))
            .unwrap_or(LevelFilter::Info);
        builder.filter_module(MESSAGES, global.max(LevelFilter::Info));
    }
    // Stderr, always: in client mode stdout is the local client's connection.
    builder.target(env_logger::Target::Stderr);
    match opts.format {
        Format::Json => {
            builder.format(|buf, record| {
                let line = json_line(record, SystemTime::now());
                writeln!(buf, "{line}")
            });
        }
        Format::Text if journal_stream.is_some_and(stderr_is) => {
            builder.format(|buf, record| {
                writeln!(
                    buf,
                    "<{}>[{:<5}] {}",
                    syslog_priority(record.level()),
                    record.level(),
                    record.args()
                )
            });
        }
        Format::Text => {
            builder.format_target(false);
        }
    }
    builder.init();
}

/// `RUST_LOG` has a directive for the message target (its own level wins).
fn names_messages(spec: &str) -> bool {
    directives(spec).any(|d| d.split('=').next().is_some_and(|n| n.trim() == MESSAGES))
}

/// The level `RUST_LOG` gives every target (`RUST_LOG=debug`, `RUST_LOG=x=info,trace`).
fn global_level(spec: &str) -> Option<LevelFilter> {
    directives(spec)
        .filter(|d| !d.contains('='))
        .filter_map(|d| d.trim().parse().ok())
        .last()
}

fn directives(spec: &str) -> impl Iterator<Item = &str> {
    // A `/regex` after the directives filters messages; it is not a directive.
    spec.split('/').next().unwrap_or("").split(',')
}

/// `JOURNAL_STREAM` (`DEVICE:INODE`) names the file stderr is: the relay's stderr goes to
/// the journal (systemd.exec(5)), not merely inherited from a unit by a process whose stderr
/// was redirected since.
fn stderr_is(journal_stream: &str) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat(2) writes a `stat` into the buffer it is given; it is read only if the
    // call succeeded.
    let ok = unsafe { libc::fstat(2, st.as_mut_ptr()) } == 0;
    if !ok {
        return false;
    }
    // SAFETY: fstat succeeded, so the buffer is initialised.
    let st = unsafe { st.assume_init() };
    journal_stream.trim() == format!("{}:{}", st.st_dev, st.st_ino)
}

/// The syslog priority of a level (sd-daemon(3) prefixes: `<3>` error … `<7>` debug).
fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// One record as a JSON object (without its newline).
fn json_line(record: &Record<'_>, at: SystemTime) -> String {
    let mut map = serde_json::Map::new();
    map.insert("timestamp".into(), rfc3339(at).into());
    map.insert("level".into(), record.level().as_str().into());
    map.insert("target".into(), record.target().into());
    map.insert("message".into(), record.args().to_string().into());
    let mut fields = Fields(&mut map);
    // A field that cannot be written is left out; the line still goes.
    let _ = record.key_values().visit(&mut fields);
    serde_json::Value::Object(map).to_string()
}

/// Adds a record's key-values to its JSON object (never replacing the four fixed keys).
struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), KvError> {
        let mut v = JsonValue(None);
        value.visit(&mut v)?;
        let key = key.as_str();
        if let Some(v) = v.0 {
            if !matches!(key, "timestamp" | "level" | "target" | "message") {
                self.0.insert(key.to_owned(), v);
            }
        }
        Ok(())
    }
}

/// A key-value's value as JSON (`None`: null, left out).
struct JsonValue(Option<serde_json::Value>);

impl<'v> VisitValue<'v> for JsonValue {
    fn visit_any(&mut self, value: Value<'_>) -> Result<(), KvError> {
        self.0 = Some(value.to_string().into());
        Ok(())
    }
    fn visit_null(&mut self) -> Result<(), KvError> {
        self.0 = None;
        Ok(())
    }
    fn visit_u64(&mut self, value: u64) -> Result<(), KvError> {
        self.0 = Some(value.into());
        Ok(())
    }
    fn visit_i64(&mut self, value: i64) -> Result<(), KvError> {
        self.0 = Some(value.into());
        Ok(())
    }
    fn visit_f64(&mut self, value: f64) -> Result<(), KvError> {
        // Milliseconds to the microsecond are enough.
        let rounded = (value * 1000.0).round() / 1000.0;
        self.0 =
            Some(serde_json::Number::from_f64(rounded).map_or(serde_json::Value::Null, Into::into));
        Ok(())
    }
    fn visit_bool(&mut self, value: bool) -> Result<(), KvError> {
        self.0 = Some(value.into());
        Ok(())
    }
    fn visit_str(&mut self, value: &str) -> Result<(), KvError> {
        self.0 = Some(value.into());
        Ok(())
    }
}

/// `at` in RFC 3339, UTC, to the millisecond: `2026-11-30T21:35:07.123Z`.
fn rfc3339(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (H. Hinnant's
/// `civil_from_days`, in the public domain).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_relay_core::log_targets::ACCESS;
    use std::time::Duration;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(at(951_782_400, 5)), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(at(1_796_160_907, 123)), "2026-12-01T21:35:07.123Z");
        assert_eq!(rfc3339(at(4_107_542_399, 999)), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn rust_log_levels_and_the_message_target() {
        assert_eq!(global_level("debug"), Some(LevelFilter::Debug));
        assert_eq!(
            global_level("mcp_relay_core=trace,warn"),
            Some(LevelFilter::Warn)
        );
        assert_eq!(global_level("mcp_relay_core=trace"), None);
        assert!(names_messages("info,mcp_relay::messages=trace"));
        assert!(!names_messages("info,mcp_relay::access=off"));
    }

    #[test]
    fn json_lines_carry_the_fields() {
        let kvs: [(&str, Value<'_>); 3] = [
            ("status", Value::from(200u64)),
            ("path", Value::from("/mcp")),
            ("level", Value::from("spoofed")),
        ];
        let args = format_args!("a \"quoted\" line");
        let record = Record::builder()
            .level(Level::Info)
            .target(ACCESS)
            .args(args)
            .key_values(&kvs)
            .build();
        let line = json_line(&record, at(0, 0));
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], ACCESS);
        assert_eq!(v["message"], "a \"quoted\" line");
        assert_eq!(v["status"], 200);
        assert_eq!(v["path"], "/mcp");
    }
}
