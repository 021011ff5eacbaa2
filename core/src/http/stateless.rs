//! The stateless era (MCP 2026-07-28): no `initialize`, no session; every request carries
//! its protocol version, capabilities and client info in `_meta`, and mirrors its method and
//! name in headers.
//!
//! Requests are served by a pool of children, each serving one request at a time: whatever a
//! child says while it works on a request (progress, logging, requests to the client) can
//! then only belong to that request, so no client ever sees another's messages. A child is
//! initialized once, by the relay, on behalf of the first client it serves; closing a
//! response stream cancels its request.

use super::wire::Head;
use super::{
    reject, ConnState, HttpEvent, HttpKey, HttpServer, HttpTimer, Reject, StreamKind, IDLE_SESSION,
};
use crate::message::{self, codes, Envelope, Kind, RawId};
use crate::ConnId;
use std::collections::BTreeMap;
use std::time::Instant;

/// The stateless protocol version.
pub(crate) const STATELESS_VERSION: &str = "2026-07-28";

/// A request waiting for a free child.
pub(crate) struct Queued {
    pub(crate) conn: ConnId,
    pub(crate) line: Vec<u8>,
    pub(crate) id: RawId,
    pub(crate) progress_token: Option<RawId>,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) meta: Option<serde_json::Value>,
}

/// The stateless version a POST speaks, if it speaks it.
pub(crate) fn modern_version(head: &Head, entries: &[Envelope<'_>]) -> Option<String> {
    if let Some(v) = head.header("mcp-protocol-version") {
        return (v == STATELESS_VERSION).then(|| v.to_owned());
    }
    if head.header("mcp-session-id").is_some() || entries.len() != 1 {
        return None;
    }
    let meta = meta_of(entries[0].params)?;
    meta.get("io.modelcontextprotocol/protocolVersion")?
        .as_str()
        .map(str::to_owned)
}

fn meta_of(params: Option<&serde_json::value::RawValue>) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(params?.get()).ok()?;
    v.get("_meta").cloned()
}

/// 400 with -32022 and the versions this relay speaks.
pub(crate) fn unsupported_version(v: &str) -> Reject {
    let mut supported: Vec<&str> = super::SESSION_ERA_VERSIONS.to_vec();
    supported.push(STATELESS_VERSION);
    let mut r = reject(
        400,
        codes::UNSUPPORTED_VERSION,
        format!(
            "mcp-relay: unsupported MCP-Protocol-Version {v}; supported: {}",
            supported.join(", ")
        ),
    );
    r.data = Some(format!(
        r#"{{"supported":{}}}"#,
        serde_json::Value::from(supported.clone())
    ));
    r
}

/// Decodes an `Mcp-Name` value: plain, or `=?base64?…?=` for values that are not header-safe.
fn header_value(v: &str) -> Option<String> {
    match v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => String::from_utf8(base64_decode(b64)?).ok(),
        None => Some(v.to_owned()),
    }
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Checks that the headers mirror the body, as 2026-07-28 requires.
fn check_headers(head: &Head, e: &Envelope<'_>, version: &str) -> Result<(), Reject> {
    let mismatch = |what: String| {
        let mut r = reject(400, codes::HEADER_MISMATCH, format!("mcp-relay: {what}"));
        r.id = e.id.map(RawId::from_raw);
        r
    };
    match head.header("mcp-protocol-version") {
        Some(h) if h != version => {
            return Err(mismatch(format!(
                "MCP-Protocol-Version {h} does not match _meta's {version}"
            )))
        }
        None => {
            return Err(mismatch(
                "the MCP-Protocol-Version header is missing".into(),
            ))
        }
        _ => {}
    }
    let meta_version = meta_of(e.params).and_then(|m| {
        m.get("io.modelcontextprotocol/protocolVersion")
            .and_then(|v| v.as_str().map(str::to_owned))
    });
    if meta_version.as_deref() != Some(version) {
        return Err(mismatch(format!(
            "_meta[\"io.modelcontextprotocol/protocolVersion\"] must be {version}"
        )));
    }
    let method = e.method.as_deref().unwrap_or("");
    match head.header("mcp-method") {
        Some(m) if m == method => {}
        Some(m) => {
            return Err(mismatch(format!(
                "Mcp-Method {m} does not match the body's method {method}"
            )))
        }
        None => return Err(mismatch("the Mcp-Method header is missing".into())),
    }
    let name_field = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    if let Some(field) = name_field {
        let body_name = message::param_str(e.params, field).unwrap_or_default();
        match head.header("mcp-name").and_then(header_value) {
            Some(n) if n == body_name => {}
            Some(n) => {
                return Err(mismatch(format!(
                    "Mcp-Name {n} does not match the body's {field} {body_name}"
                )))
            }
            None => return Err(mismatch("the Mcp-Name header is missing".into())),
        }
    }
    Ok(())
}

impl HttpServer {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stateless_post(
        &mut self,
        now: Instant,
        conn: ConnId,
        head: &Head,
        body: &[u8],
        entries: &[Envelope<'_>],
        version: String,
        cors: &[(&'static str, String)],
    ) -> Result<(), Reject> {
        if version != STATELESS_VERSION {
            return Err(unsupported_version(&version));
        }
        let [e] = entries else {
            return Err(reject(
                400,
                codes::INVALID_REQUEST,
                "mcp-relay: batches are not part of MCP 2026-07-28",
            ));
        };
        check_headers(head, e, &version)?;
        let (Kind::Request, Some(id)) = (e.kind, e.id.map(RawId::from_raw)) else {
            // Notifications need no child: nothing in this era waits on them.
            self.respond_headers(conn, 202, cors, None, b"");
            return Ok(());
        };
        let queued = Queued {
            conn,
            line: body.to_vec(),
            id,
            progress_token: message::meta_progress_token(e.params),
            headers: cors.to_vec(),
            meta: meta_of(e.params),
        };
        let waiting = self.pool_queue.len();
        if waiting >= self.config.http.max_sessions {
            let mut r = reject(
                503,
                codes::SERVER_UNAVAILABLE,
                format!("mcp-relay: {waiting} stateless requests already wait for a server; try again later"),
            );
            r.headers.push(("Retry-After", "1".into()));
            r.id = Some(queued.id);
            return Err(r);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnState::Queued;
        }
        self.pool_queue.push_back(queued);
        self.pool_dispatch(now);
        Ok(())
    }

    /// Hands queued requests to free children, starting children up to the pool size.
    pub(crate) fn pool_dispatch(&mut self, now: Instant) {
        for s in self.sessions.values_mut() {
            if s.cooldown_until.is_some_and(|t| t <= now) {
                s.cooldown_until = None;
            }
        }
        while let Some(next) = self.pool_queue.front() {
            let meta = next.meta.clone();
            let free = self
                .sessions
                .iter()
                .find(|(_, s)| {
                    s.pool && !s.finished && s.busy.is_none() && s.cooldown_until.is_none()
                })
                .map(|(k, _)| *k);
            let key = match free {
                Some(key) => key,
                None => {
                    let pool = self
                        .sessions
                        .values()
                        .filter(|s| s.pool && !s.finished)
                        .count();
                    if pool >= self.config.http.stateless_pool {
                        return;
                    }
                    self.new_pool_child(now, meta.as_ref())
                }
            };
            let Some(q) = self.pool_queue.pop_front() else {
                return;
            };
            let waiting = self
                .conns
                .get(&q.conn)
                .is_some_and(|c| matches!(c.state, ConnState::Queued));
            if !waiting {
                continue;
            }
            // No resumability in this era: no priming event.
            let stream = self.new_stream(key, StreamKind::Post, Some(q.conn), false);
            if let Some(st) = self.streams.get_mut(&stream) {
                st.waiting = vec![q.id.clone()];
                st.extra_headers = q.headers;
                st.stateless = true;
            }
            if let Some(s) = self.sessions.get_mut(&key) {
                s.busy = Some(stream);
                s.last_activity = now;
                self.timers.set(
                    HttpTimer::Session(key),
                    Some((now + self.config.http.session_timeout, IDLE_SESSION)),
                );
                s.progress.clear();
                if let Some(t) = q.progress_token {
                    s.progress.insert(t, q.id.clone());
                }
            }
            let line = q.line;
            self.events
                .push_back(HttpEvent::Message { key, body: line });
        }
    }

    /// Starts a pool child and initializes it on behalf of the client described by `meta`.
    fn new_pool_child(&mut self, now: Instant, meta: Option<&serde_json::Value>) -> HttpKey {
        let key = self.new_key();
        self.pool_started += 1;
        let label = format!("stateless#{}", self.pool_started);
        self.events.push_back(HttpEvent::Opened { key, label });
        self.sessions.insert(
            key,
            super::HttpSession {
                id: format!("stateless-{}", key.0),
                legacy: false,
                pool: true,
                busy: None,
                cooldown_until: None,
                token: None,
                get_stream: None,
                streams: Vec::new(),
                pending: Default::default(),
                pending_bytes: 0,
                progress: BTreeMap::new(),
                last_activity: now,
                protocol_version: STATELESS_VERSION.to_owned(),
                finished: false,
                conns: Default::default(),
                ready: false,
                parked: Default::default(),
                parked_bytes: 0,
            },
        );
        let idle = now + self.config.http.session_timeout;
        self.timers
            .set(HttpTimer::Session(key), Some((idle, IDLE_SESSION)));
        let get = |k: &str| meta.and_then(|m| m.get(k)).cloned();
        let init = serde_json::json!({
            "jsonrpc": "2.0",
            "id": "mcp-relay:stateless-init",
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": get("io.modelcontextprotocol/clientCapabilities").unwrap_or_else(|| serde_json::json!({})),
                "clientInfo": get("io.modelcontextprotocol/clientInfo").unwrap_or_else(|| serde_json::json!({"name": "mcp-relay", "version": env!("CARGO_PKG_VERSION")})),
            }
        });
        let init = init.to_string().into_bytes();
        let initialized = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        self.events
            .push_back(HttpEvent::Message { key, body: init });
        self.events.push_back(HttpEvent::Message {
            key,
            body: initialized.to_vec(),
        });
        key
    }

    /// A pool child finished its request (answered, or the client gave up on it).
    pub(crate) fn pool_release(&mut self, now: Instant, key: HttpKey, cancelled: Option<RawId>) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        s.busy = None;
        s.progress.clear();
        if let Some(id) = cancelled {
            // It may still be working on the request: let it settle before its next one, so
            // that nothing it says about this one reaches another client.
            s.cooldown_until = Some(now + self.config.ping_timeout);
            let note = format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{id},"reason":"the client closed the response stream"}}}}"#
            );
            self.events.push_back(HttpEvent::Message {
                key,
                body: note.into_bytes(),
            });
        }
        self.pool_dispatch(now);
    }

    /// Writes a complete response with owned headers.
    pub(super) fn respond_headers(
        &mut self,
        conn: ConnId,
        status: u16,
        headers: &[(&'static str, String)],
        content_type: Option<&str>,
        body: &[u8],
    ) {
        let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        self.respond(conn, status, &h, content_type, body, false);
    }
}

/// 404 for a stateless answer that says the method does not exist.
pub(crate) fn status_for(msg: &[u8]) -> u16 {
    let needle = codes::METHOD_NOT_FOUND.to_string();
    if !msg.windows(needle.len()).any(|w| w == needle.as_bytes()) {
        return 200;
    }
    let v: serde_json::Value = serde_json::from_slice(msg).unwrap_or_default();
    if v.pointer("/error/code").and_then(|c| c.as_i64()) == Some(codes::METHOD_NOT_FOUND) {
        404
    } else {
        200
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_headers() {
        assert_eq!(header_value("echo").as_deref(), Some("echo"));
        assert_eq!(
            header_value("=?base64?aGVsbG8gd29ybGQ=?=").as_deref(),
            Some("hello world")
        );
        assert_eq!(header_value("=?base64?!!?="), None);
    }

    #[test]
    fn not_found_is_404() {
        assert_eq!(
            status_for(br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"x"}}"#),
            404
        );
        assert_eq!(status_for(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#), 200);
        assert_eq!(
            status_for(br#"{"jsonrpc":"2.0","id":1,"result":{"n":-32601}}"#),
            200
        );
    }
}
