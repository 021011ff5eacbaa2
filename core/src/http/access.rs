//! The HTTP access log: one line per request, at target [`TARGET`] (info), written when its
//! response ends: a complete response once it is queued, an event stream when it ends or its
//! connection closes (so the line has the stream's bytes and duration). A request whose
//! client left before any response is logged with status 499, as nginx does.
//!
//! What is logged: the connection, the client's address, the method, the path (never the
//! query, which may carry secrets), the status, the bytes queued for the response (head and
//! body, chunk framing included), the time from the request's head to the response's end,
//! and the session as the relay labels it (the first 8 characters of its id), only if the
//! relay knows the session. No header value is logged.

use super::wire::Head;
use super::HttpKey;
use crate::child::escape_controls;
use crate::ConnId;
use core::net::SocketAddr;
use std::collections::BTreeMap;
use std::time::Instant;

/// The log target of access lines.
pub const TARGET: &str = "mcp_relay::access";

/// Characters of a method or path kept in a line, at most.
const MAX_FIELD: usize = 200;

/// Status logged for a request whose client left before its response began.
const CLIENT_LEFT: u16 = 499;

/// Access lines are wanted (checked before anything is kept for them).
pub(super) fn enabled() -> bool {
    log::log_enabled!(target: TARGET, log::Level::Info)
}

/// The request a connection is answering, as the access log needs it.
#[derive(Debug)]
pub(super) struct Req {
    method: String,
    path: String,
    start: Instant,
    /// The connection's bytes staged before this response.
    bytes_at: u64,
    /// The response's status once its head is queued.
    status: Option<u16>,
    session: Option<String>,
}

impl Req {
    /// A request whose head was read at `now`; `ids` are the sessions the relay knows.
    pub(super) fn new(
        head: &Head,
        now: Instant,
        bytes_at: u64,
        ids: &BTreeMap<String, HttpKey>,
    ) -> Req {
        let claimed = head.header("mcp-session-id").or_else(|| {
            head.query
                .split('&')
                .find_map(|p| p.strip_prefix("sessionId="))
        });
        Req {
            method: field(&head.method),
            path: field(&head.path),
            start: now,
            bytes_at,
            status: None,
            session: claimed.filter(|id| ids.contains_key(*id)).map(short),
        }
    }

    /// A request whose head could not be read.
    pub(super) fn unreadable(now: Instant, bytes_at: u64) -> Req {
        Req {
            method: "-".into(),
            path: "-".into(),
            start: now,
            bytes_at,
            status: None,
            session: None,
        }
    }

    /// The response's head is queued with `status`.
    pub(super) fn set_status(&mut self, status: u16) {
        self.status.get_or_insert(status);
    }

    /// The request belongs to the session `id` (if none was known yet).
    pub(super) fn set_session(&mut self, id: &str) {
        if self.session.is_none() {
            self.session = Some(short(id));
        }
    }

    /// The session named in the response's headers (`Mcp-Session-Id` of a new session).
    pub(super) fn session_from_headers<'a>(
        &mut self,
        mut headers: impl Iterator<Item = (&'a str, &'a str)>,
    ) {
        if let Some((_, id)) = headers.find(|(n, _)| n.eq_ignore_ascii_case("mcp-session-id")) {
            self.set_session(id);
        }
    }

    /// Logs the line: the response ended at `now`, the connection's staged bytes are
    /// `bytes_now`.
    pub(super) fn finish(self, conn: ConnId, peer: SocketAddr, bytes_now: u64, now: Instant) {
        let status = self.status.unwrap_or(CLIENT_LEFT);
        let bytes = bytes_now.saturating_sub(self.bytes_at);
        let ms = now.saturating_duration_since(self.start).as_secs_f64() * 1000.0;
        let session = match &self.session {
            Some(s) => format!(" session={s}"),
            None => String::new(),
        };
        log::info!(
            target: TARGET,
            conn = conn.0,
            client = peer.to_string().as_str(),
            method = self.method.as_str(),
            path = self.path.as_str(),
            status = status,
            bytes = bytes,
            duration_ms = ms,
            session = self.session.as_deref();
            "{conn}: {peer} \"{} {}\" {status} {bytes} bytes {ms:.1} ms{session}",
            self.method,
            self.path,
        );
    }
}

/// A session id as the relay labels it.
fn short(id: &str) -> String {
    format!("{}…", escape_controls(super::short_id(id)))
}

fn field(text: &str) -> String {
    let end = text
        .char_indices()
        .nth(MAX_FIELD)
        .map_or(text.len(), |(i, _)| i);
    let mut out = escape_controls(&text[..end]).into_owned();
    if end < text.len() {
        out.push('…');
    }
    out
}
