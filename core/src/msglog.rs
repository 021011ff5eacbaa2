//! `--log-messages`: one log line per JSON-RPC message that crosses a session (client to
//! server, server to client), at target [`TARGET`]: its direction, the session's label, its
//! method (or `response`, `error`), its id, its size, and for an answer the time since its
//! request. The payload follows at trace level only.
//!
//! The target is off unless the operator turns it on, and every call site checks
//! [`enabled`] first: with it off, a message costs one filter lookup, no allocation and no
//! formatting. The request times kept for latencies are bounded ([`MAX_TRACKED`] a
//! direction); the oldest is forgotten first (a request cancelled or answered by the relay
//! itself is never answered by its peer).

use crate::child::escape_controls;
use crate::message::{Envelope, Kind, Message, RawId};
use std::collections::BTreeMap;
use std::time::Instant;

/// The log target of message lines.
pub const TARGET: &str = "mcp_relay::messages";

/// Request times kept per direction, at most.
const MAX_TRACKED: usize = 4096;

/// Payload bytes shown at trace level, at most.
const MAX_PAYLOAD: usize = 64 * 1024;

/// Which way a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    ToServer,
    ToClient,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::ToServer => "client→server",
            Direction::ToClient => "server→client",
        }
    }
}

/// Message lines are wanted (checked before anything is built for them).
pub(crate) fn enabled() -> bool {
    log::log_enabled!(target: TARGET, log::Level::Info)
}

/// When each request still waiting for its answer was seen, by who asked it.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    /// The client's requests to the server.
    by_client: BTreeMap<RawId, Instant>,
    /// The server's requests to the client.
    by_server: BTreeMap<RawId, Instant>,
}

impl Sent {
    /// Logs one line (a message, or each message of a batch) crossing the session `label`
    /// in `dir` at `now`. Call only when [`enabled`].
    pub(crate) fn log(
        &mut self,
        label: &str,
        dir: Direction,
        msg: &Message<'_>,
        line: &[u8],
        now: Instant,
    ) {
        let entries: &[Envelope<'_>] = match msg {
            Message::Single(e) => std::slice::from_ref(e),
            Message::Batch(es) => es,
        };
        let (asked, answered) = match dir {
            Direction::ToServer => (&mut self.by_client, &mut self.by_server),
            Direction::ToClient => (&mut self.by_server, &mut self.by_client),
        };
        let codes = if entries.iter().any(|e| e.kind == Kind::Response) {
            error_codes(line, entries.len())
        } else {
            Vec::new()
        };
        let batch = matches!(msg, Message::Batch(_)).then_some(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let id = e.id.map(|r| r.get());
            let code = codes.get(i).copied().flatten();
            let mut latency_ms = None;
            let method = match e.kind {
                Kind::Request | Kind::Notification => {
                    if let (Kind::Request, Some(raw)) = (e.kind, e.id) {
                        track(asked, RawId::from_raw(raw), now);
                    }
                    escape_controls(e.method.as_deref().unwrap_or("")).into_owned()
                }
                Kind::Response => {
                    latency_ms =
                        e.id.and_then(|raw| answered.remove(&RawId::from_raw(raw)))
                            .map(|t| now.saturating_duration_since(t).as_secs_f64() * 1000.0);
                    if code.is_some() { "error" } else { "response" }.to_owned()
                }
                Kind::Heartbeat | Kind::Invalid => continue,
            };
            let id_text = id.map(escape_controls);
            let mut text = format!("{label}: {} {method}", dir.as_str());
            if let Some(code) = code {
                text.push_str(&format!(" {code}"));
            }
            if let Some(id) = &id_text {
                text.push_str(&format!(" id {id}"));
            }
            match batch {
                Some(n) => text.push_str(&format!(
                    ", {} of a batch of {n} ({} bytes)",
                    i + 1,
                    line.len()
                )),
                None => text.push_str(&format!(", {} bytes", line.len())),
            }
            if let Some(ms) = latency_ms {
                text.push_str(&format!(", {ms:.1} ms"));
            }
            log::info!(
                target: TARGET,
                direction = dir.as_str(),
                session = label,
                method = method.as_str(),
                id = id_text.as_deref(),
                error_code = code,
                bytes = line.len(),
                latency_ms = latency_ms;
                "{text}"
            );
        }
        if log::log_enabled!(target: TARGET, log::Level::Trace) {
            let shown = &line[..line.len().min(MAX_PAYLOAD)];
            let text = String::from_utf8_lossy(shown);
            let more = line.len() - shown.len();
            let tail = if more > 0 {
                format!(" … ({more} bytes more)")
            } else {
                String::new()
            };
            log::trace!(
                target: TARGET,
                "{label}: {} payload: {}{tail}",
                dir.as_str(),
                escape_controls(&text)
            );
        }
    }
}

/// Remembers when request `id` was seen; past the bound, the oldest is forgotten.
fn track<T: Ord + Copy>(map: &mut BTreeMap<RawId, T>, id: RawId, now: T) {
    if map.len() >= MAX_TRACKED && !map.contains_key(&id) {
        let oldest = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone());
        if let Some(oldest) = oldest {
            map.remove(&oldest);
        }
    }
    map.entry(id).or_insert(now);
}

/// The `error.code` of each of the line's `n` messages (`None` for a result, or a code that
/// is not an integer). Parsed again, only when message lines are on.
fn error_codes(line: &[u8], n: usize) -> Vec<Option<i64>> {
    #[derive(serde::Deserialize)]
    struct Probe {
        error: Option<ErrorObject>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorObject {
        code: Option<serde_json::Value>,
    }
    let code = |p: Probe| {
        p.error
            .map(|e| e.code.and_then(|c| c.as_i64()).unwrap_or(0))
    };
    if n == 1 && line.first() != Some(&b'[') {
        return match serde_json::from_slice::<Probe>(line) {
            Ok(p) => vec![code(p)],
            Err(_) => vec![None],
        };
    }
    match serde_json::from_slice::<Vec<Probe>>(line) {
        Ok(ps) => ps.into_iter().map(code).collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_of_single_and_batch() {
        assert_eq!(
            error_codes(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#, 1),
            [None]
        );
        assert_eq!(
            error_codes(
                br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"x"}}"#,
                1
            ),
            [Some(-32601)]
        );
        assert_eq!(
            error_codes(
                br#"[{"id":1,"result":{"error":1}},{"id":2,"error":{"code":-1,"message":""}}]"#,
                2
            ),
            [None, Some(-1)]
        );
    }

    #[test]
    fn tracking_is_bounded_and_forgets_the_oldest() {
        let mut map = BTreeMap::new();
        for i in 0..MAX_TRACKED + 10 {
            track(&mut map, RawId::string(&i.to_string()), i);
        }
        assert_eq!(map.len(), MAX_TRACKED);
        assert!(!map.contains_key(&RawId::string("0")));
        assert!(map.contains_key(&RawId::string(&(MAX_TRACKED + 9).to_string())));
    }
}
