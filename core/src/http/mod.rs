//! MCP over HTTP: Streamable HTTP at `/mcp` (the session era, protocol versions 2025-03-26 to
//! 2025-11-25), the legacy HTTP+SSE transport at `/sse` + `/messages`, `/healthz` and
//! `/metrics`.
//!
//! HTTP connections and sessions are independent: a session's messages go out on *streams*
//! (the reply to a POST, the GET stream, the legacy SSE stream), and a stream is attached to a
//! connection only while one carries it. A stream that lost its connection keeps a bounded
//! replay buffer, so that a client resuming with `Last-Event-ID` gets what it missed.

mod stateless;
pub(crate) mod wire;

use crate::client::{ClientSide, HttpSide, Route};
use crate::message::{self, classify, codes, ClassifyError, Kind, Message, RawId};
use crate::outbound::Outbound;
use crate::relay::{Relay, SessionKey};
use crate::session::Session;
use crate::{ConnId, Endpoint, Output};
use core::net::SocketAddr;
use rand_core::RngCore;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};
use wire::{BodyKind, Dechunk, Dechunked, Head, HeadParse};

/// Protocol versions of the session era this relay serves over Streamable HTTP.
pub const SESSION_ERA_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];

/// How long an idle keep-alive connection stays open.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(120);
/// Most streams without a connection kept per session for resumption.
const MAX_DETACHED_STREAMS: usize = 16;

/// What the HTTP layer is configured to do.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// `Origin` values allowed besides the loopback ones (exact, like `https://app.example`).
    pub allowed_origins: Vec<String>,
    /// `Host` values allowed (host or host:port). Empty: the bound address, plus `localhost`
    /// when bound to loopback; anything when bound to a wildcard or public address.
    pub allowed_hosts: Vec<String>,
    /// Bearer tokens; empty: no authentication.
    pub auth_tokens: Vec<String>,
    /// Sessions with no request and no open stream for this long are ended.
    pub session_timeout: Duration,
    pub max_sessions: usize,
    /// Period of `:` comments on open event streams.
    pub sse_keepalive: Duration,
    /// Time allowed to send a complete request head.
    pub header_timeout: Duration,
    /// Bytes of events kept per stream for `Last-Event-ID` resumption.
    pub replay_buffer: usize,
    pub healthz: bool,
    pub metrics: bool,
    /// Most children serving stateless (2026-07-28) requests, one request each at a time.
    pub stateless_pool: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            auth_tokens: Vec::new(),
            session_timeout: Duration::from_secs(300),
            max_sessions: 1000,
            sse_keepalive: Duration::from_secs(15),
            header_timeout: Duration::from_secs(10),
            replay_buffer: 1024 * 1024,
            healthz: true,
            metrics: true,
            stateless_pool: 4,
        }
    }
}

/// A stream of messages to one HTTP client, named by the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct StreamId(u64);

pub(crate) struct HttpState {
    conns: BTreeMap<ConnId, Conn>,
    streams: BTreeMap<StreamId, Stream>,
    /// Session ids handed to clients.
    ids: BTreeMap<String, SessionKey>,
    sessions: BTreeMap<SessionKey, HttpSession>,
    next_stream: u64,
    rng: rand_chacha::ChaCha20Rng,
    next_keepalive: Option<Instant>,
    /// HTTP responses by status, for `/metrics`.
    pub(crate) responses: BTreeMap<u16, u64>,
    pub(crate) sessions_created: u64,
    pub(crate) sessions_expired: u64,
    pub(crate) sessions_deleted: u64,
    /// Stateless requests waiting for a free child.
    pool_queue: VecDeque<stateless::Queued>,
    /// Connections whose next request is read once the current input is handled.
    deferred: VecDeque<ConnId>,
    pool_started: u64,
}

impl HttpState {
    pub(crate) fn new(seed: [u8; 32]) -> Self {
        use rand_core::SeedableRng;
        HttpState {
            conns: BTreeMap::new(),
            streams: BTreeMap::new(),
            ids: BTreeMap::new(),
            sessions: BTreeMap::new(),
            next_stream: 1,
            rng: rand_chacha::ChaCha20Rng::from_seed(seed),
            next_keepalive: None,
            responses: BTreeMap::new(),
            sessions_created: 0,
            sessions_expired: 0,
            sessions_deleted: 0,
            pool_queue: VecDeque::new(),
            deferred: VecDeque::new(),
            pool_started: 0,
        }
    }

    pub(crate) fn has_conn(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    pub(crate) fn buffered(&self, conn: ConnId) -> Option<usize> {
        self.conns
            .get(&conn)
            .map(|c| c.inbuf.len() + c.body.len() + c.out.load())
    }

    /// A fresh session id: 128 bits from the CSPRNG, as 32 hex digits.
    fn new_session_id(&mut self) -> String {
        let mut bytes = [0u8; 16];
        self.rng.fill_bytes(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

struct Conn {
    out: Outbound,
    local: SocketAddr,
    peer: SocketAddr,
    inbuf: Vec<u8>,
    state: ConnState,
    /// Body bytes of the request being read.
    body: Vec<u8>,
    /// When the request being read must be complete, or the idle connection closes.
    deadline: Option<Instant>,
    eof: bool,
    /// Close once the current response is written.
    close_after: bool,
    paused: bool,
    /// The session whose responses this connection carried last (to settle it when they
    /// are written).
    session: Option<SessionKey>,
    /// Finished event streams whose last bytes are not written yet: resumable until they are.
    flushing: Vec<StreamId>,
}

enum ConnState {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Reading a body.
    Body {
        head: Head,
        kind: BodyKind,
        dechunk: Dechunk,
    },
    /// A response is in progress on this stream.
    Busy(StreamId),
    /// A stateless request waits for a free child.
    Queued,
    /// Done: the connection closes once its output is written.
    Closing,
}

#[derive(Debug, PartialEq, Eq)]
enum StreamKind {
    /// The reply to a POST: JSON if the first message is its only answer, else SSE.
    Post,
    /// The GET stream of a Streamable HTTP session.
    Get,
    /// The stream of a legacy HTTP+SSE session.
    Legacy,
}

struct Stream {
    session: SessionKey,
    kind: StreamKind,
    conn: Option<ConnId>,
    /// Request ids whose answers end this (POST) stream.
    waiting: Vec<RawId>,
    /// The SSE head was written.
    sse: bool,
    /// The stream is complete (its last answer went out).
    done: bool,
    seq: u64,
    replay: VecDeque<(u64, Vec<u8>)>,
    replay_bytes: usize,
    /// Headers for the response head (`Mcp-Session-Id` on the initialize reply).
    extra_headers: Vec<(&'static str, String)>,
    /// Send a priming event (clients on 2025-11-25 and later).
    priming: bool,
    /// A 2026-07-28 request: closing the stream cancels it.
    stateless: bool,
}

struct HttpSession {
    id: String,
    legacy: bool,
    /// A stateless pool child: serves one request at a time, has no id for clients.
    pool: bool,
    /// The request a pool child is serving.
    busy: Option<StreamId>,
    /// A pool child whose request was cancelled rests until then.
    cooldown_until: Option<Instant>,
    /// Index of the bearer token that created it.
    token: Option<usize>,
    get_stream: Option<StreamId>,
    /// Streams of this session, oldest first.
    streams: Vec<StreamId>,
    /// Messages for the GET stream while none is open.
    pending: VecDeque<Vec<u8>>,
    pending_bytes: usize,
    /// progressToken → the request that set it.
    progress: BTreeMap<RawId, RawId>,
    last_activity: Instant,
    protocol_version: String,
    /// The session's end was handled (streams ended, id forgotten).
    finished: bool,
}

/// An error answer: status, JSON-RPC code and message.
struct Reject {
    status: u16,
    code: i64,
    message: String,
    headers: Vec<(&'static str, String)>,
    /// Raw JSON for the error's `data`.
    data: Option<String>,
    /// The id of the request being refused, when there is one.
    id: Option<RawId>,
}

fn reject(status: u16, code: i64, message: impl Into<String>) -> Reject {
    Reject {
        status,
        code,
        message: message.into(),
        headers: Vec::new(),
        data: None,
        id: None,
    }
}

impl Relay {
    // ---- connections ----

    pub(crate) fn http_accept(
        &mut self,
        now: Instant,
        conn: ConnId,
        local: SocketAddr,
        peer: SocketAddr,
    ) {
        log::debug!("{conn}: HTTP connection from {peer}");
        self.http.conns.insert(
            conn,
            Conn {
                out: Outbound::new(Endpoint::Conn(conn), true, self.config.max_buffered),
                local,
                peer,
                inbuf: Vec::new(),
                state: ConnState::Head,
                body: Vec::new(),
                deadline: Some(now + KEEPALIVE_IDLE.min(self.config.http.header_timeout * 6)),
                eof: false,
                close_after: false,
                paused: false,
                session: None,
                flushing: Vec::new(),
            },
        );
        if self.shutting_down() {
            self.http_close_conn(conn);
        }
    }

    pub(crate) fn http_data(&mut self, now: Instant, conn: ConnId, data: &[u8]) {
        let limit = wire::MAX_HEAD + self.config.max_message_size + 64;
        let Some(c) = self.http.conns.get_mut(&conn) else {
            return;
        };
        if matches!(c.state, ConnState::Closing) {
            return;
        }
        if c.inbuf.is_empty() && matches!(c.state, ConnState::Head) {
            c.deadline = Some(now + self.config.http.header_timeout);
        }
        let mut data = data;
        if let ConnState::Body {
            kind: BodyKind::Length(len),
            ..
        } = &c.state
        {
            if c.inbuf.is_empty() {
                // The body goes straight where it belongs, not through the input buffer.
                let take = (*len - c.body.len()).min(data.len());
                c.body.extend_from_slice(&data[..take]);
                data = &data[take..];
            }
        }
        c.inbuf.extend_from_slice(data);
        if c.inbuf.len() > limit && !c.paused {
            c.paused = true;
            self.out.push_back(Output::Pause {
                endpoint: Endpoint::Conn(conn),
            });
        }
        self.http_process(now, conn);
    }

    pub(crate) fn http_eof(&mut self, now: Instant, conn: ConnId) {
        self.http_detach_flushing(conn);
        let Some(c) = self.http.conns.get_mut(&conn) else {
            return;
        };
        c.eof = true;
        match c.state {
            ConnState::Busy(stream) => {
                // The client stopped listening mid-response.
                self.http_detach(now, stream);
                self.http_close_conn(conn);
            }
            _ => {
                if !c.inbuf.is_empty() {
                    log::debug!("{conn}: closed with an incomplete request");
                }
                self.http_close_conn(conn);
            }
        }
    }

    pub(crate) fn http_broken(&mut self, now: Instant, conn: ConnId) {
        self.http_detach_flushing(conn);
        if let Some(c) = self.http.conns.get_mut(&conn) {
            c.out.set_gone();
            let session = c.session;
            if let ConnState::Busy(stream) = c.state {
                self.http_detach(now, stream);
            }
            self.http_forget_conn(conn);
            // Its unwritten bytes no longer load the session.
            if let Some(key) = session {
                self.http_update_load(key);
                self.with_session(now, key, |_, _| {});
            }
        }
    }

    pub(crate) fn http_written(&mut self, now: Instant, conn: ConnId, n: usize) {
        let Some(c) = self.http.conns.get_mut(&conn) else {
            return;
        };
        c.out.written(n, &mut self.out);
        if c.out.load() == 0 {
            // Everything of the finished streams reached the client: no resuming needed.
            for stream in std::mem::take(&mut c.flushing) {
                self.http_drop_stream(stream);
            }
        }
        let Some(c) = self.http.conns.get_mut(&conn) else {
            return;
        };
        let session = c.session;
        if c.out.is_finished() {
            self.http_forget_conn(conn);
        }
        // What was written no longer loads the session: it may read its server again.
        if let Some(key) = session {
            if let Some(s) = self.http.sessions.get_mut(&key) {
                s.last_activity = now;
            }
            self.http_update_load(key);
            self.with_session(now, key, |_, _| {});
        }
    }

    /// The connection is gone with finished streams not fully written: they stay resumable.
    fn http_detach_flushing(&mut self, conn: ConnId) {
        let Some(c) = self.http.conns.get_mut(&conn) else {
            return;
        };
        for stream in std::mem::take(&mut c.flushing) {
            if let Some(st) = self.http.streams.get_mut(&stream) {
                st.conn = None;
                st.sse = false;
            }
        }
    }

    fn http_close_conn(&mut self, conn: ConnId) {
        if let Some(c) = self.http.conns.get_mut(&conn) {
            c.state = ConnState::Closing;
            c.out.close_when_flushed(&mut self.out);
            if c.out.is_finished() {
                self.http_forget_conn(conn);
            }
        }
    }

    fn http_forget_conn(&mut self, conn: ConnId) {
        self.http.conns.remove(&conn);
    }

    /// Parses and answers what a connection has sent, request by request.
    fn http_process(&mut self, now: Instant, conn: ConnId) {
        loop {
            let Some(c) = self.http.conns.get_mut(&conn) else {
                return;
            };
            match &mut c.state {
                ConnState::Closing | ConnState::Busy(_) | ConnState::Queued => return,
                ConnState::Head => {
                    if c.inbuf.is_empty() {
                        c.deadline = Some(now + KEEPALIVE_IDLE);
                        if c.eof {
                            self.http_close_conn(conn);
                        }
                        return;
                    }
                    match wire::parse_head(&c.inbuf) {
                        HeadParse::Partial => return,
                        HeadParse::Error(status, why) => {
                            return self.http_fail(
                                conn,
                                reject(status, codes::INVALID_REQUEST, why),
                                true,
                            );
                        }
                        HeadParse::Complete(head, n) => {
                            c.inbuf.drain(..n);
                            let kind = match wire::body_kind(&head) {
                                Ok(kind) => kind,
                                Err((status, why)) => {
                                    return self.http_fail(
                                        conn,
                                        reject(status, codes::INVALID_REQUEST, why),
                                        true,
                                    );
                                }
                            };
                            if let BodyKind::Length(len) = kind {
                                if len > self.config.max_message_size {
                                    let why = format!(
                                        "mcp-relay: the body of {len} bytes exceeds the limit of {} bytes (--max-message-size)",
                                        self.config.max_message_size
                                    );
                                    return self.http_fail(
                                        conn,
                                        reject(413, codes::INVALID_REQUEST, why),
                                        true,
                                    );
                                }
                            }
                            c.body.clear();
                            c.deadline = Some(now + self.config.http.session_timeout);
                            c.state = ConnState::Body {
                                head,
                                kind,
                                dechunk: Dechunk::default(),
                            };
                        }
                    }
                }
                ConnState::Body {
                    kind: BodyKind::Length(len),
                    ..
                } => {
                    let need = *len - c.body.len();
                    let take = need.min(c.inbuf.len());
                    c.body.extend_from_slice(&c.inbuf[..take]);
                    c.inbuf.drain(..take);
                    if c.body.len() < *len {
                        return;
                    }
                    self.http_request_complete(now, conn);
                }
                ConnState::Body { dechunk, .. } => {
                    let max = self.config.max_message_size;
                    let fed = dechunk.feed(&c.inbuf, &mut c.body);
                    if let Dechunked::More(n) | Dechunked::Done(n) = fed {
                        c.inbuf.drain(..n);
                        if c.body.len() > max {
                            let why = format!("mcp-relay: the body exceeds the limit of {max} bytes (--max-message-size)");
                            return self.http_fail(
                                conn,
                                reject(413, codes::INVALID_REQUEST, why),
                                true,
                            );
                        }
                    }
                    match fed {
                        Dechunked::More(_) => return,
                        Dechunked::Done(_) => self.http_request_complete(now, conn),
                        Dechunked::Error => {
                            return self.http_fail(
                                conn,
                                reject(
                                    400,
                                    codes::INVALID_REQUEST,
                                    "mcp-relay: malformed chunked body",
                                ),
                                true,
                            );
                        }
                    }
                }
            }
            if let Some(c) = self.http.conns.get_mut(&conn) {
                if c.paused && c.inbuf.len() <= wire::MAX_HEAD {
                    c.paused = false;
                    self.out.push_back(Output::Resume {
                        endpoint: Endpoint::Conn(conn),
                    });
                }
            }
        }
    }

    fn http_request_complete(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.http.conns.get_mut(&conn) else {
            return;
        };
        let state = std::mem::replace(&mut c.state, ConnState::Head);
        let ConnState::Body { head, .. } = state else {
            return;
        };
        let body = std::mem::take(&mut c.body);
        if head.close {
            c.close_after = true;
        }
        c.deadline = None;
        if let Err(r) = self.http_route(now, conn, &head, &body) {
            self.http_fail(conn, r, false);
        }
    }

    /// Answers with an error status and a JSON-RPC error body.
    fn http_fail(&mut self, conn: ConnId, r: Reject, close: bool) {
        let mut body = Vec::new();
        message::write_error_data(
            &mut body,
            r.id.as_ref().map(RawId::as_str),
            r.code,
            &r.message,
            r.data.as_deref(),
        );
        let headers: Vec<(&str, &str)> = r.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let peer = self.http.conns.get(&conn).map(|c| c.peer);
        log::debug!("{conn} {peer:?}: HTTP {}: {}", r.status, r.message);
        self.http_respond(
            conn,
            r.status,
            &headers,
            Some("application/json"),
            &body,
            close,
        );
    }

    /// Writes a complete response; the connection then reads its next request.
    fn http_respond(
        &mut self,
        conn: ConnId,
        status: u16,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: &[u8],
        close: bool,
    ) {
        *self.http.responses.entry(status).or_default() += 1;
        let Some(c) = self.http.conns.get_mut(&conn) else {
            return;
        };
        let close = close || c.close_after || c.eof;
        // The head and the body go out as they are: a large body is not copied into a
        // buffer of its own first.
        c.out.stage(&wire::response_head(
            status,
            headers,
            content_type,
            body.len(),
            close,
        ));
        c.out.stage(body);
        c.out.flush(&mut self.out);
        if close {
            self.http_close_conn(conn);
        } else {
            c.state = ConnState::Head;
        }
    }

    // ---- routing requests ----

    fn http_route(
        &mut self,
        now: Instant,
        conn: ConnId,
        head: &Head,
        body: &[u8],
    ) -> Result<(), Reject> {
        let cors = self.http_check_origin(conn, head)?;
        self.http_check_host(conn, head)?;
        let mut cors_headers: Vec<(&'static str, String)> = Vec::new();
        if let Some(origin) = cors {
            cors_headers.push(("Access-Control-Allow-Origin", origin));
            cors_headers.push((
                "Access-Control-Expose-Headers",
                "Mcp-Session-Id, Mcp-Protocol-Version".into(),
            ));
            cors_headers.push(("Vary", "Origin".into()));
        }
        if head.method == "OPTIONS" {
            let mut headers = cors_headers.clone();
            headers.push((
                "Access-Control-Allow-Methods",
                "GET, POST, DELETE, OPTIONS".into(),
            ));
            headers.push((
                "Access-Control-Allow-Headers",
                "Content-Type, Accept, Authorization, Mcp-Session-Id, Mcp-Protocol-Version, Last-Event-ID, Mcp-Method, Mcp-Name".into(),
            ));
            headers.push(("Access-Control-Max-Age", "86400".into()));
            let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            self.http_respond(conn, 204, &h, None, b"", false);
            return Ok(());
        }
        let with_cors = |mut r: Reject| {
            r.headers.extend(cors_headers.iter().cloned());
            r
        };
        match head.path.as_str() {
            "/healthz" if self.config.http.healthz => {
                if head.method != "GET" && head.method != "HEAD" {
                    return Err(method_not_allowed("GET"));
                }
                let body = self.http_health();
                self.http_respond(conn, 200, &[("Cache-Control", "no-store")], Some("application/json"), body.as_bytes(), false);
                Ok(())
            }
            "/metrics" if self.config.http.metrics => {
                self.http_auth(head).map_err(with_cors)?;
                if head.method != "GET" {
                    return Err(method_not_allowed("GET"));
                }
                let body = self.http_metrics();
                self.http_respond(conn, 200, &[], Some("text/plain; version=0.0.4"), body.as_bytes(), false);
                Ok(())
            }
            "/mcp" => {
                let token = self.http_auth(head).map_err(with_cors)?;
                let stateless = head.header("mcp-protocol-version") == Some(stateless::STATELESS_VERSION);
                match head.method.as_str() {
                    "GET" | "DELETE" if stateless => Err(method_not_allowed("POST, OPTIONS")),
                    "POST" => self.http_post(now, conn, head, body, token, &cors_headers),
                    "GET" => self.http_get(now, conn, head, token, &cors_headers),
                    "DELETE" => self.http_delete(now, conn, head, token, &cors_headers),
                    _ => Err(method_not_allowed("GET, POST, DELETE, OPTIONS")),
                }
                .map_err(with_cors)
            }
            "/sse" => {
                let token = self.http_auth(head).map_err(with_cors)?;
                if head.method != "GET" {
                    return Err(with_cors(method_not_allowed("GET, OPTIONS")));
                }
                self.http_legacy_open(now, conn, token, &cors_headers).map_err(with_cors)
            }
            "/messages" | "/message" => {
                let token = self.http_auth(head).map_err(with_cors)?;
                if head.method != "POST" {
                    return Err(with_cors(method_not_allowed("POST, OPTIONS")));
                }
                self.http_legacy_post(now, conn, head, body, token, &cors_headers).map_err(with_cors)
            }
            _ => Err(reject(404, codes::INVALID_REQUEST, format!("mcp-relay: nothing at {} (MCP is served at /mcp, and /sse for the legacy transport)", head.path))),
        }
    }

    /// `Ok(Some(origin))`: a present, allowed origin (echoed in CORS headers).
    fn http_check_origin(&self, conn: ConnId, head: &Head) -> Result<Option<String>, Reject> {
        let Some(origin) = head.header("origin") else {
            return Ok(None);
        };
        let local = self.http.conns.get(&conn).map(|c| c.local);
        let loopback_bound = local.is_some_and(|l| l.ip().is_loopback());
        let allowed = self
            .config
            .http
            .allowed_origins
            .iter()
            .any(|o| o == origin || o == "*")
            || (loopback_bound && is_loopback_origin(origin));
        if allowed {
            Ok(Some(origin.to_owned()))
        } else {
            Err(reject(
                403,
                codes::INVALID_REQUEST,
                format!("mcp-relay: origin {origin} is not allowed (see --allow-origin)"),
            ))
        }
    }

    /// Rejects a `Host` that is not this server's (DNS rebinding).
    fn http_check_host(&self, conn: ConnId, head: &Head) -> Result<(), Reject> {
        let Some(local) = self.http.conns.get(&conn).map(|c| c.local) else {
            return Ok(());
        };
        let host = head.header("host").unwrap_or("");
        let allowed = &self.config.http.allowed_hosts;
        let ok = if !allowed.is_empty() {
            allowed.iter().any(|a| a == host || host_name(host) == a)
        } else if local.ip().is_loopback() {
            let name = host_name(host);
            matches!(name, "localhost" | "127.0.0.1" | "[::1]" | "::1")
                || name == local.ip().to_string()
        } else if local.ip().is_unspecified() {
            true
        } else {
            let ip = local.ip().to_string();
            let name = host_name(host);
            name == ip || name.trim_start_matches('[').trim_end_matches(']') == ip
        };
        if ok {
            Ok(())
        } else {
            Err(reject(
                403,
                codes::INVALID_REQUEST,
                format!("mcp-relay: host {host:?} is not this server (see --allow-host)"),
            ))
        }
    }

    /// Checks the bearer token; returns which one matched.
    fn http_auth(&self, head: &Head) -> Result<Option<usize>, Reject> {
        let tokens = &self.config.http.auth_tokens;
        if tokens.is_empty() {
            return Ok(None);
        }
        let given = head
            .header("authorization")
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let mut matched = None;
        if let Some(given) = given {
            for (i, t) in tokens.iter().enumerate() {
                // Every token is compared, in constant time, whatever matched before.
                if constant_time_eq(given.as_bytes(), t.as_bytes()) {
                    matched = Some(i);
                }
            }
        }
        match matched {
            Some(i) => Ok(Some(i)),
            None => {
                let mut r = reject(
                    401,
                    codes::INVALID_REQUEST,
                    "mcp-relay: missing or wrong bearer token",
                );
                r.headers.push(("WWW-Authenticate", "Bearer".into()));
                Err(r)
            }
        }
    }

    fn http_session_for(
        &self,
        head: &Head,
        token: Option<usize>,
        legacy: bool,
    ) -> Result<SessionKey, Reject> {
        let id = if legacy {
            head.query_param("sessionId")
                .or_else(|| head.query_param("session_id"))
        } else {
            head.header("mcp-session-id")
        };
        let Some(id) = id else {
            return Err(reject(
                400,
                codes::INVALID_REQUEST,
                "mcp-relay: Mcp-Session-Id is required (send initialize first)",
            ));
        };
        let found = self.http.ids.get(id).copied().filter(|k| {
            self.http
                .sessions
                .get(k)
                .is_some_and(|s| s.legacy == legacy && s.token == token && !s.finished)
        });
        found.ok_or_else(|| {
            reject(
                404,
                codes::INVALID_REQUEST,
                "mcp-relay: unknown or expired session; initialize a new one",
            )
        })
    }

    fn http_new_session(
        &mut self,
        now: Instant,
        legacy: bool,
        token: Option<usize>,
        version: &str,
    ) -> Result<SessionKey, Reject> {
        let open = self.http.sessions.values().filter(|s| !s.finished).count();
        if open >= self.config.http.max_sessions || self.shutting_down() {
            let mut r = reject(
                503,
                codes::SERVER_UNAVAILABLE,
                format!("mcp-relay: too many sessions ({open}, --max-sessions); try again later"),
            );
            r.headers.push(("Retry-After", "5".into()));
            return Err(r);
        }
        let id = self.http.new_session_id();
        let key = self.new_session_key();
        let label = format!("session {}…", &id[..8]);
        let session = self.new_session(now, label, ClientSide::Http(HttpSide::default()));
        self.add_session(key, session);
        self.http.ids.insert(id.clone(), key);
        self.http.sessions.insert(
            key,
            HttpSession {
                id,
                legacy,
                pool: false,
                busy: None,
                cooldown_until: None,
                token,
                get_stream: None,
                streams: Vec::new(),
                pending: VecDeque::new(),
                pending_bytes: 0,
                progress: BTreeMap::new(),
                last_activity: now,
                protocol_version: version.to_owned(),
                finished: false,
            },
        );
        self.http.sessions_created += 1;
        Ok(key)
    }

    fn new_stream(
        &mut self,
        key: SessionKey,
        kind: StreamKind,
        conn: Option<ConnId>,
        priming: bool,
    ) -> StreamId {
        let id = StreamId(self.http.next_stream);
        self.http.next_stream += 1;
        self.http.streams.insert(
            id,
            Stream {
                session: key,
                kind,
                conn,
                waiting: Vec::new(),
                sse: false,
                done: false,
                seq: 0,
                replay: VecDeque::new(),
                replay_bytes: 0,
                extra_headers: Vec::new(),
                priming,
                stateless: false,
            },
        );
        if let Some(s) = self.http.sessions.get_mut(&key) {
            s.streams.push(id);
        }
        if let Some(c) = conn.and_then(|c| self.http.conns.get_mut(&c)) {
            c.state = ConnState::Busy(id);
            c.session = Some(key);
        }
        id
    }

    fn http_post(
        &mut self,
        now: Instant,
        conn: ConnId,
        head: &Head,
        body: &[u8],
        token: Option<usize>,
        cors: &[(&'static str, String)],
    ) -> Result<(), Reject> {
        let ct = head.header("content-type").unwrap_or("");
        if !ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/json")
        {
            return Err(reject(
                415,
                codes::INVALID_REQUEST,
                "mcp-relay: Content-Type must be application/json",
            ));
        }
        if !(head.accepts("application/json") && head.accepts("text/event-stream")) {
            return Err(reject(
                406,
                codes::INVALID_REQUEST,
                "mcp-relay: Accept must list application/json and text/event-stream",
            ));
        }
        let body = trim_ascii(body);
        let msg = classify_body(body)?;
        let entries = match &msg {
            Message::Single(e) => std::slice::from_ref(e),
            Message::Batch(es) => es.as_slice(),
        };
        if entries.is_empty()
            || entries
                .iter()
                .any(|e| matches!(e.kind, Kind::Invalid | Kind::Heartbeat))
        {
            return Err(reject(
                400,
                codes::INVALID_REQUEST,
                "mcp-relay: invalid JSON-RPC message",
            ));
        }
        if let Some(version) = stateless::modern_version(head, entries) {
            return self.http_stateless_post(now, conn, head, body, entries, version, cors);
        }
        if let Some(v) = head.header("mcp-protocol-version") {
            if !SESSION_ERA_VERSIONS.contains(&v) {
                return Err(stateless::unsupported_version(v));
            }
        }
        let initialize = entries
            .iter()
            .find(|e| e.kind == Kind::Request && e.method.as_deref() == Some("initialize"));
        let has_session_header = head.header("mcp-session-id").is_some();
        let key = if let (Some(init), false) = (initialize, has_session_header) {
            let version = message::param_str(init.params, "protocolVersion")
                .unwrap_or_else(|| "2025-03-26".into());
            self.http_new_session(now, false, token, &version)?
        } else {
            self.http_session_for(head, token, false)?
        };
        let waiting = self.sessions.get(&key).map_or(0, Session::in_flight);
        if waiting >= self.config.max_in_flight {
            let mut r = reject(
                503,
                codes::SERVER_UNAVAILABLE,
                format!("mcp-relay: {waiting} requests of this session already wait for the server (--max-in-flight); try again later"),
            );
            r.headers.push(("Retry-After", "1".into()));
            return Err(r);
        }
        let requests: Vec<RawId> = entries
            .iter()
            .filter(|e| e.kind == Kind::Request)
            .filter_map(|e| e.id.map(RawId::from_raw))
            .collect();
        let mut progress = Vec::new();
        for e in entries.iter().filter(|e| e.kind == Kind::Request) {
            if let (Some(id), Some(token)) = (
                e.id.map(RawId::from_raw),
                message::meta_progress_token(e.params),
            ) {
                progress.push((token, id));
            }
        }
        let session_id = {
            let s =
                self.http.sessions.get_mut(&key).ok_or_else(|| {
                    reject(404, codes::INVALID_REQUEST, "mcp-relay: unknown session")
                })?;
            s.last_activity = now;
            s.progress.extend(progress);
            s.id.clone()
        };
        if requests.is_empty() {
            // Notifications and responses: accepted, no body.
            let mut headers: Vec<(&str, String)> = cors.to_vec();
            headers.push(("Mcp-Session-Id", session_id));
            let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            self.http_respond(conn, 202, &h, None, b"", false);
        } else {
            let version = self
                .http
                .sessions
                .get(&key)
                .map(|s| s.protocol_version.clone())
                .unwrap_or_default();
            let stream = self.new_stream(
                key,
                StreamKind::Post,
                Some(conn),
                version.as_str() >= "2025-11-25",
            );
            if let Some(st) = self.http.streams.get_mut(&stream) {
                st.waiting = requests;
                st.extra_headers = cors.to_vec();
                st.extra_headers.push(("Mcp-Session-Id", session_id));
            }
        }
        self.with_session(now, key, |s, ctx| s.client_message(body, ctx));
        Ok(())
    }

    fn http_get(
        &mut self,
        now: Instant,
        conn: ConnId,
        head: &Head,
        token: Option<usize>,
        cors: &[(&'static str, String)],
    ) -> Result<(), Reject> {
        if !head.accepts("text/event-stream") {
            return Err(reject(
                406,
                codes::INVALID_REQUEST,
                "mcp-relay: Accept must list text/event-stream",
            ));
        }
        let key = self.http_session_for(head, token, false)?;
        let (session_id, version) = match self.http.sessions.get_mut(&key) {
            Some(s) => {
                s.last_activity = now;
                (s.id.clone(), s.protocol_version.clone())
            }
            None => {
                return Err(reject(
                    404,
                    codes::INVALID_REQUEST,
                    "mcp-relay: unknown session",
                ))
            }
        };
        let mut headers: Vec<(&'static str, String)> = cors.to_vec();
        headers.push(("Mcp-Session-Id", session_id));
        if let Some(last) = head.header("last-event-id") {
            if let Some((stream, seq)) = parse_event_id(last) {
                let belongs = self
                    .http
                    .streams
                    .get(&stream)
                    .is_some_and(|s| s.session == key && s.conn.is_none());
                if belongs {
                    return self.http_resume(now, conn, stream, seq, headers);
                }
            }
            log::debug!("{conn}: Last-Event-ID {last} names no stream of this session to resume");
        }
        let get_open = self
            .http
            .sessions
            .get(&key)
            .and_then(|s| s.get_stream)
            .is_some_and(|st| self.http.streams.get(&st).is_some_and(|s| s.conn.is_some()));
        if get_open {
            return Err(reject(
                409,
                codes::INVALID_REQUEST,
                "mcp-relay: this session already has an open GET stream",
            ));
        }
        // A GET stream without a connection (dropped earlier) is replaced.
        if let Some(old) = self
            .http
            .sessions
            .get_mut(&key)
            .and_then(|s| s.get_stream.take())
        {
            self.http_drop_stream(old);
        }
        let stream = self.new_stream(
            key,
            StreamKind::Get,
            Some(conn),
            version.as_str() >= "2025-11-25",
        );
        if let Some(st) = self.http.streams.get_mut(&stream) {
            st.extra_headers = headers;
        }
        if let Some(s) = self.http.sessions.get_mut(&key) {
            s.get_stream = Some(stream);
        }
        self.http_start_sse(stream);
        let pending: Vec<Vec<u8>> = self
            .http
            .sessions
            .get_mut(&key)
            .map(|s| {
                s.pending_bytes = 0;
                s.pending.drain(..).collect()
            })
            .unwrap_or_default();
        for msg in pending {
            self.http_stream_send(stream, &msg, false);
        }
        self.http_flush_conn(conn);
        Ok(())
    }

    fn http_resume(
        &mut self,
        now: Instant,
        conn: ConnId,
        stream: StreamId,
        after: u64,
        headers: Vec<(&'static str, String)>,
    ) -> Result<(), Reject> {
        let Some(st) = self.http.streams.get_mut(&stream) else {
            return Err(reject(
                404,
                codes::INVALID_REQUEST,
                "mcp-relay: nothing to resume",
            ));
        };
        st.conn = Some(conn);
        st.extra_headers = headers;
        st.sse = false;
        let key = st.session;
        if st.kind == StreamKind::Get {
            if let Some(s) = self.http.sessions.get_mut(&key) {
                s.get_stream = Some(stream);
            }
        }
        if let Some(c) = self.http.conns.get_mut(&conn) {
            c.state = ConnState::Busy(stream);
            c.session = Some(key);
        }
        self.http_start_sse(stream);
        let events: Vec<Vec<u8>> = self
            .http
            .streams
            .get(&stream)
            .map(|st| {
                st.replay
                    .iter()
                    .filter(|(seq, _)| *seq > after)
                    .map(|(_, e)| e.clone())
                    .collect()
            })
            .unwrap_or_default();
        log::debug!(
            "{conn}: resuming stream {} after event {after}: {} event(s) to replay",
            stream.0,
            events.len()
        );
        for e in events {
            self.http_write_chunk(conn, &e);
        }
        if self.http.streams.get(&stream).is_some_and(|s| s.done) {
            self.http_end_stream(now, stream);
        }
        self.http_flush_conn(conn);
        Ok(())
    }

    fn http_delete(
        &mut self,
        now: Instant,
        conn: ConnId,
        head: &Head,
        token: Option<usize>,
        cors: &[(&'static str, String)],
    ) -> Result<(), Reject> {
        let key = self.http_session_for(head, token, false)?;
        self.http.sessions_deleted += 1;
        self.http_end_session_by_client(now, key, "the client deleted it");
        let h: Vec<(&str, &str)> = cors.iter().map(|(n, v)| (*n, v.as_str())).collect();
        self.http_respond(conn, 200, &h, None, b"", false);
        Ok(())
    }

    fn http_legacy_open(
        &mut self,
        now: Instant,
        conn: ConnId,
        token: Option<usize>,
        cors: &[(&'static str, String)],
    ) -> Result<(), Reject> {
        let key = self.http_new_session(now, true, token, "2024-11-05")?;
        let id = self
            .http
            .sessions
            .get(&key)
            .map(|s| s.id.clone())
            .unwrap_or_default();
        let stream = self.new_stream(key, StreamKind::Legacy, Some(conn), false);
        if let Some(st) = self.http.streams.get_mut(&stream) {
            st.extra_headers = cors.to_vec();
        }
        if let Some(s) = self.http.sessions.get_mut(&key) {
            s.get_stream = Some(stream);
        }
        self.http_start_sse(stream);
        let endpoint = wire::sse_event(
            None,
            Some("endpoint"),
            format!("/messages?sessionId={id}").as_bytes(),
        );
        self.http_write_chunk(conn, &endpoint);
        self.http_flush_conn(conn);
        Ok(())
    }

    fn http_legacy_post(
        &mut self,
        now: Instant,
        conn: ConnId,
        head: &Head,
        body: &[u8],
        token: Option<usize>,
        cors: &[(&'static str, String)],
    ) -> Result<(), Reject> {
        let key = self.http_session_for(head, token, true)?;
        let body = trim_ascii(body);
        if let Message::Single(e) = classify_body(body)? {
            if matches!(e.kind, Kind::Invalid | Kind::Heartbeat) {
                return Err(reject(
                    400,
                    codes::INVALID_REQUEST,
                    "mcp-relay: invalid JSON-RPC message",
                ));
            }
        }
        if let Some(s) = self.http.sessions.get_mut(&key) {
            s.last_activity = now;
        }
        let h: Vec<(&str, &str)> = cors.iter().map(|(n, v)| (*n, v.as_str())).collect();
        self.http_respond(conn, 202, &h, Some("text/plain"), b"Accepted", false);
        self.with_session(now, key, |s, ctx| s.client_message(body, ctx));
        Ok(())
    }

    // ---- streams ----

    fn http_start_sse(&mut self, stream: StreamId) {
        let Some(st) = self.http.streams.get_mut(&stream) else {
            return;
        };
        let Some(conn) = st.conn else {
            return;
        };
        if st.sse {
            return;
        }
        st.sse = true;
        let headers: Vec<(&str, &str)> = st
            .extra_headers
            .iter()
            .map(|(n, v)| (*n, v.as_str()))
            .collect();
        let head = wire::sse_head(200, &headers);
        let priming = st.priming && st.seq == 0;
        if priming {
            st.seq += 1;
        }
        let prime_id = format!("{}-{}", stream.0, st.seq);
        *self.http.responses.entry(200).or_default() += 1;
        if let Some(c) = self.http.conns.get_mut(&conn) {
            c.out.stage(&head);
        }
        if priming {
            // An event id with empty data primes the client's Last-Event-ID; `retry` says how
            // soon to come back if the connection drops.
            let mut e = b"retry: 1000\n".to_vec();
            e.extend_from_slice(&wire::sse_event(Some(&prime_id), None, b""));
            self.http_write_chunk(conn, &e);
        }
        if self.http.next_keepalive.is_none() {
            self.http.next_keepalive = Some(self.last_now + self.config.http.sse_keepalive);
        }
    }

    fn http_write_chunk(&mut self, conn: ConnId, data: &[u8]) {
        if let Some(c) = self.http.conns.get_mut(&conn) {
            let mut framed = Vec::with_capacity(data.len() + 16);
            wire::chunk(&mut framed, data);
            c.out.stage(&framed);
        }
    }

    fn http_flush_conn(&mut self, conn: ConnId) {
        if let Some(c) = self.http.conns.get_mut(&conn) {
            c.out.flush(&mut self.out);
        }
    }

    /// Sends one message on a stream; `last` ends it.
    fn http_stream_send(&mut self, stream: StreamId, msg: &[u8], last: bool) {
        let Some(st) = self.http.streams.get_mut(&stream) else {
            return;
        };
        if st.done {
            return;
        }
        // A POST whose first message is its only answer gets a plain JSON reply.
        if st.kind == StreamKind::Post && !st.sse && last && st.seq == 0 {
            if let Some(conn) = st.conn {
                let headers: Vec<(&str, String)> = st.extra_headers.clone();
                let status = if st.stateless {
                    stateless::status_for(msg)
                } else {
                    200
                };
                let key = st.session;
                st.done = true;
                self.http_finish_stream(stream);
                let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                self.http_respond(conn, status, &h, Some("application/json"), msg, false);
                self.http_released(key, stream);
                self.http_after_response(conn);
                return;
            }
        }
        if st.conn.is_some() && !st.sse {
            // The head (and a priming event) go first, so that event numbers follow it.
            self.http_start_sse(stream);
        }
        let Some(st) = self.http.streams.get_mut(&stream) else {
            return;
        };
        st.seq += 1;
        let id = format!("{}-{}", stream.0, st.seq);
        let event_name = (st.kind == StreamKind::Legacy).then_some("message");
        let event = wire::sse_event(
            (st.kind != StreamKind::Legacy).then_some(id.as_str()),
            event_name,
            msg,
        );
        st.replay_bytes += event.len();
        st.replay.push_back((st.seq, event.clone()));
        while st.replay_bytes > self.config.http.replay_buffer && st.replay.len() > 1 {
            if let Some((_, e)) = st.replay.pop_front() {
                st.replay_bytes -= e.len();
            }
        }
        if last {
            st.done = true;
        }
        let conn = st.conn;
        let key = st.session;
        if let Some(conn) = conn {
            self.http_start_sse(stream);
            self.http_write_chunk(conn, &event);
            if last {
                self.http_end_stream(self.last_now, stream);
            }
            self.http_flush_conn(conn);
        }
        if last {
            self.http_released(key, stream);
        }
    }

    /// A request on this stream was cancelled: it waits no more, and a stream left with
    /// nothing to wait for ends (an empty event stream, if nothing was sent yet).
    fn http_cancelled(&mut self, key: SessionKey, stream: StreamId, id: &RawId) {
        let Some(st) = self.http.streams.get_mut(&stream) else {
            return;
        };
        st.waiting.retain(|w| w != id);
        if !st.waiting.is_empty() || st.done {
            return;
        }
        st.done = true;
        if st.conn.is_some() && !st.sse {
            self.http_start_sse(stream);
        }
        self.http_end_stream(self.last_now, stream);
        self.http_released(key, stream);
    }

    /// A stream got its last answer: a pool child serving it is free again.
    fn http_released(&mut self, key: SessionKey, stream: StreamId) {
        let pool_busy = self
            .http
            .sessions
            .get(&key)
            .is_some_and(|s| s.pool && s.busy == Some(stream));
        if pool_busy {
            self.http_pool_release(self.last_now, key, None);
        }
    }

    /// Ends an SSE stream on its connection; the connection then serves its next request.
    fn http_end_stream(&mut self, _now: Instant, stream: StreamId) {
        let Some(st) = self.http.streams.get(&stream) else {
            return;
        };
        let conn = st.conn;
        let sse = st.sse;
        self.http_finish_stream(stream);
        if let Some(conn) = conn {
            if let Some(c) = self.http.conns.get_mut(&conn) {
                if sse {
                    let mut end = Vec::new();
                    wire::last_chunk(&mut end);
                    c.out.stage(&end);
                }
                c.out.flush(&mut self.out);
                if c.close_after || c.eof {
                    self.http_close_conn(conn);
                } else {
                    c.state = ConnState::Head;
                    self.http_after_response(conn);
                }
            }
        }
    }

    /// A complete stream is forgotten unless a client may still resume it.
    fn http_finish_stream(&mut self, stream: StreamId) {
        let Some(st) = self.http.streams.get(&stream) else {
            return;
        };
        let (key, conn, sse) = (st.session, st.conn, st.sse);
        if let Some(s) = self.http.sessions.get_mut(&key) {
            // The session was busy until now, not idle.
            s.last_activity = self.last_now;
        }
        let Some(conn) = conn else {
            return;
        };
        match self.http.conns.get_mut(&conn) {
            // Its end is not written yet: keep it resumable until it is.
            Some(c) if sse && c.out.load() > 0 => c.flushing.push(stream),
            _ => self.http_drop_stream(stream),
        }
    }

    fn http_drop_stream(&mut self, stream: StreamId) {
        if let Some(st) = self.http.streams.remove(&stream) {
            if let Some(s) = self.http.sessions.get_mut(&st.session) {
                s.streams.retain(|x| *x != stream);
                if s.get_stream == Some(stream) {
                    s.get_stream = None;
                }
            }
        }
    }

    /// The connection finished a response: read its next request, if any.
    fn http_after_response(&mut self, conn: ConnId) {
        // Not now: this runs while a session's messages are being placed, and the next request
        // may be for that same session. It is read once the current input is handled.
        if !self.http.deferred.contains(&conn) {
            self.http.deferred.push_back(conn);
        }
    }

    /// Reads the next requests of connections whose response just ended.
    pub(crate) fn http_run_deferred(&mut self, now: Instant) {
        while let Some(conn) = self.http.deferred.pop_front() {
            self.http_read_next(now, conn);
        }
    }

    fn http_read_next(&mut self, now: Instant, conn: ConnId) {
        if self
            .http
            .conns
            .get(&conn)
            .is_some_and(|c| matches!(c.state, ConnState::Head))
        {
            self.http_process(now, conn);
        }
    }

    /// The connection carrying a stream is gone.
    fn http_detach(&mut self, now: Instant, stream: StreamId) {
        let Some(st) = self.http.streams.get_mut(&stream) else {
            return;
        };
        st.conn = None;
        st.sse = false;
        let key = st.session;
        match st.kind {
            StreamKind::Legacy => {
                // Legacy HTTP+SSE: the session lives as long as its stream.
                self.http_drop_stream(stream);
                self.http_end_session_by_client(now, key, "its event stream closed");
            }
            StreamKind::Get => {
                if let Some(s) = self.http.sessions.get_mut(&key) {
                    s.last_activity = now;
                }
            }
            StreamKind::Post if st.stateless => {
                // 2026-07-28: closing the response stream cancels the request.
                let cancelled = (!st.done).then(|| st.waiting.first().cloned()).flatten();
                self.http_drop_stream(stream);
                let busy = self
                    .http
                    .sessions
                    .get(&key)
                    .is_some_and(|s| s.busy == Some(stream));
                if busy {
                    self.http_pool_release(now, key, cancelled);
                }
            }
            StreamKind::Post => {
                if st.done {
                    self.http_drop_stream(stream);
                }
                // Not a cancellation in the session era: answers wait in the replay buffer.
                let detached: Vec<StreamId> = self
                    .http
                    .sessions
                    .get(&key)
                    .map(|s| {
                        s.streams
                            .iter()
                            .copied()
                            .filter(|x| {
                                self.http.streams.get(x).is_some_and(|st| {
                                    st.conn.is_none() && st.kind == StreamKind::Post
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if detached.len() > MAX_DETACHED_STREAMS {
                    for old in &detached[..detached.len() - MAX_DETACHED_STREAMS] {
                        self.http_drop_stream(*old);
                    }
                }
                if let Some(s) = self.http.sessions.get_mut(&key) {
                    s.last_activity = now;
                }
            }
        }
    }

    /// Takes a session's outgoing messages and puts each on its stream.
    pub(crate) fn http_deliver(&mut self, key: SessionKey) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let ClientSide::Http(side) = session.client_side() else {
            return;
        };
        let msgs: Vec<(Route, Vec<u8>)> = side.outbox.drain(..).collect();
        let close = side.close_requested && !side.gone;
        for (route, msg) in msgs {
            self.http_route_message(key, route, msg);
        }
        if close {
            self.http_session_closed(key);
        }
        self.http_update_load(key);
    }

    fn http_route_message(&mut self, key: SessionKey, route: Route, msg: Vec<u8>) {
        let Some(s) = self.http.sessions.get(&key) else {
            return;
        };
        if s.legacy {
            if let Some(stream) = s.get_stream {
                self.http_stream_send(stream, &msg, false);
            }
            return;
        }
        let waiting_for = |streams: &BTreeMap<StreamId, Stream>, id: &RawId| {
            s.streams.iter().copied().find(|x| {
                streams
                    .get(x)
                    .is_some_and(|st| st.kind == StreamKind::Post && st.waiting.contains(id))
            })
        };
        if let Route::Responses(ids) = &route {
            // A batch's answers end the stream of the batch that asked.
            let Some(stream) = ids
                .iter()
                .find_map(|id| waiting_for(&self.http.streams, id))
            else {
                log::debug!("session: no stream waits for a batch of answers; dropped");
                return;
            };
            let last = match self.http.streams.get_mut(&stream) {
                Some(st) => {
                    st.waiting.retain(|w| !ids.contains(w));
                    st.waiting.is_empty()
                }
                None => false,
            };
            self.http_stream_send(stream, &msg, last);
            return;
        }
        if let Route::Cancelled(id) = &route {
            if let Some(stream) = waiting_for(&self.http.streams, id) {
                self.http_cancelled(key, stream, id);
            }
            return;
        }
        let target = match &route {
            Route::Response(Some(id)) => {
                waiting_for(&self.http.streams, id).map(|st| (st, Some(id.clone())))
            }
            Route::FromServer {
                progress_token: Some(t),
            } => {
                // Progress about a request no stream waits for any more goes nowhere.
                let Some(stream) = s
                    .progress
                    .get(t)
                    .and_then(|id| waiting_for(&self.http.streams, id))
                else {
                    log::debug!("session: progress for token {t} after its request ended; dropped");
                    return;
                };
                Some((stream, None))
            }
            Route::FromServer { .. } => {
                let by_token: Option<StreamId> = None;
                by_token
                    .or_else(|| {
                        s.streams.iter().copied().find(|x| {
                            self.http.streams.get(x).is_some_and(|st| {
                                st.kind == StreamKind::Post && !st.waiting.is_empty() && !st.done
                            })
                        })
                    })
                    .map(|st| (st, None))
            }
            _ => None,
        };
        match target {
            Some((stream, answered)) => {
                let last = match (answered, self.http.streams.get_mut(&stream)) {
                    (Some(id), Some(st)) => {
                        if let Some(at) = st.waiting.iter().position(|w| *w == id) {
                            st.waiting.remove(at);
                        }
                        st.waiting.is_empty()
                    }
                    _ => false,
                };
                if last {
                    if let Some(s) = self.http.sessions.get_mut(&key) {
                        s.progress
                            .retain(|_, r| waiting_for_any(&self.http.streams, &s.streams, r));
                    }
                }
                self.http_stream_send(stream, &msg, last);
            }
            None => {
                if let Route::Response(Some(id)) = &route {
                    log::debug!("session: no stream waits for the answer to {id}; dropped");
                    return;
                }
                if s.pool {
                    // A stateless child speaks only within a request.
                    log::debug!("stateless child: a message outside any request; dropped");
                    return;
                }
                let get = s
                    .get_stream
                    .filter(|g| self.http.streams.get(g).is_some_and(|st| st.conn.is_some()));
                match get {
                    Some(stream) => self.http_stream_send(stream, &msg, false),
                    None => {
                        let limit = self.config.max_buffered;
                        if let Some(s) = self.http.sessions.get_mut(&key) {
                            s.pending_bytes += msg.len();
                            s.pending.push_back(msg);
                            while s.pending_bytes > limit {
                                match s.pending.pop_front() {
                                    Some(old) => {
                                        s.pending_bytes -= old.len();
                                        log::warn!("session {}…: no GET stream open and its buffer is full; dropped a message", &s.id[..8]);
                                    }
                                    None => break,
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Tells the session how much its streams hold, so that it pauses its child when they
    /// are too full.
    fn http_update_load(&mut self, key: SessionKey) {
        let Some(s) = self.http.sessions.get(&key) else {
            return;
        };
        let mut held = s.pending_bytes;
        for st in s.streams.iter().filter_map(|x| self.http.streams.get(x)) {
            held += st
                .conn
                .and_then(|c| self.http.conns.get(&c))
                .map_or(0, |c| c.out.load());
        }
        let limit = self.config.max_buffered;
        if let Some(session) = self.sessions.get_mut(&key) {
            if let ClientSide::Http(side) = session.client_side() {
                side.held_by_streams = held;
                if held > limit {
                    side.loaded = true;
                } else if held <= limit / 2 {
                    side.loaded = false;
                }
            }
        }
    }

    /// The client ended the session (DELETE, expiry, its legacy stream closed).
    fn http_end_session_by_client(&mut self, now: Instant, key: SessionKey, why: &str) {
        if let Some(s) = self.http.sessions.get_mut(&key) {
            log::info!("session {}…: ended: {why}", &s.id[..8]);
            let id = s.id.clone();
            self.http.ids.remove(&id);
        }
        self.with_session(now, key, |s, ctx| s.client_leaves(ctx));
    }

    /// The session will not be served again: end its streams and forget its id.
    fn http_session_closed(&mut self, key: SessionKey) {
        let Some(s) = self.http.sessions.get_mut(&key) else {
            return;
        };
        s.finished = true;
        let id = s.id.clone();
        let streams = s.streams.clone();
        self.http.ids.remove(&id);
        for stream in streams {
            let (conn, sse) = match self.http.streams.get(&stream) {
                Some(st) => (st.conn, st.sse),
                None => continue,
            };
            match conn {
                Some(conn) if !sse => {
                    // A POST that never got an answer: it gets one now.
                    let mut body = Vec::new();
                    message::write_error(
                        &mut body,
                        None,
                        codes::SERVER_UNAVAILABLE,
                        "mcp-relay: the session ended",
                    );
                    self.http_drop_stream(stream);
                    self.http_respond(conn, 404, &[], Some("application/json"), &body, false);
                    self.http_after_response(conn);
                }
                Some(_) => {
                    if let Some(st) = self.http.streams.get_mut(&stream) {
                        st.done = true;
                    }
                    self.http_end_stream(self.last_now, stream);
                }
                None => self.http_drop_stream(stream),
            }
        }
        self.http.sessions.remove(&key);
        if let Some(session) = self.sessions.get_mut(&key) {
            session.client_side().set_gone();
        }
    }

    // ---- time ----

    pub(crate) fn http_poll_timeout(&self) -> Option<(Instant, &'static str)> {
        let conns = self.http.conns.values().filter_map(|c| match c.state {
            ConnState::Head | ConnState::Body { .. } => {
                c.deadline.map(|d| (d, "http: request or idle timeout"))
            }
            _ => None,
        });
        let sessions = self
            .http
            .sessions
            .values()
            .filter(|s| !s.finished)
            .filter(|s| !self.http_has_open_stream(s))
            .map(|s| {
                (
                    s.last_activity + self.config.http.session_timeout,
                    "http: session idle",
                )
            });
        let keepalive = self
            .http
            .next_keepalive
            .map(|d| (d, "http: SSE keep-alive"));
        conns
            .chain(sessions)
            .chain(keepalive)
            .min_by_key(|(d, _)| *d)
    }

    fn http_has_open_stream(&self, s: &HttpSession) -> bool {
        s.streams.iter().any(|x| {
            self.http
                .streams
                .get(x)
                .is_some_and(|st| st.conn.is_some() && !st.done)
        })
    }

    pub(crate) fn http_handle_timeout(&mut self, now: Instant) {
        let expired_conns: Vec<(ConnId, bool)> = self
            .http
            .conns
            .iter()
            .filter_map(|(id, c)| {
                let due = c.deadline.is_some_and(|d| d <= now)
                    && matches!(c.state, ConnState::Head | ConnState::Body { .. });
                due.then_some((
                    *id,
                    !c.inbuf.is_empty() || matches!(c.state, ConnState::Body { .. }),
                ))
            })
            .collect();
        for (conn, mid_request) in expired_conns {
            if mid_request {
                self.http_fail(
                    conn,
                    reject(
                        408,
                        codes::INVALID_REQUEST,
                        "mcp-relay: the request took too long to arrive (--header-timeout)",
                    ),
                    true,
                );
            } else {
                self.http_close_conn(conn);
            }
        }
        let timeout = self.config.http.session_timeout;
        let idle: Vec<SessionKey> = self
            .http
            .sessions
            .iter()
            .filter(|(_, s)| {
                !s.finished && !self.http_has_open_stream(s) && s.last_activity + timeout <= now
            })
            .map(|(k, _)| *k)
            .collect();
        for key in idle {
            self.http.sessions_expired += 1;
            if let Some(s) = self.http.sessions.get_mut(&key) {
                s.last_activity = now;
            }
            self.http_end_session_by_client(now, key, "idle for longer than --session-timeout");
        }
        if self.http.next_keepalive.is_some_and(|d| d <= now) {
            let targets: Vec<ConnId> = self
                .http
                .streams
                .values()
                .filter(|st| st.sse && !st.done)
                .filter_map(|st| st.conn)
                .collect();
            for conn in &targets {
                self.http_write_chunk(*conn, b": keep-alive\n\n");
                self.http_flush_conn(*conn);
            }
            self.http.next_keepalive =
                (!targets.is_empty()).then(|| now + self.config.http.sse_keepalive);
        }
    }

    /// Graceful shutdown: idle connections close now; busy ones after their response.
    pub(crate) fn http_shutdown(&mut self) {
        let conns: Vec<(ConnId, bool)> = self
            .http
            .conns
            .iter()
            .map(|(id, c)| {
                (
                    *id,
                    matches!(c.state, ConnState::Head) && c.inbuf.is_empty(),
                )
            })
            .collect();
        for (conn, idle) in conns {
            if idle {
                self.http_close_conn(conn);
            } else if let Some(c) = self.http.conns.get_mut(&conn) {
                c.close_after = true;
            }
        }
    }

    /// Immediate shutdown: every connection closes now.
    pub(crate) fn http_abort(&mut self) {
        let conns: Vec<ConnId> = self.http.conns.keys().copied().collect();
        for conn in conns {
            self.out.push_back(Output::Close {
                endpoint: Endpoint::Conn(conn),
            });
            self.http_forget_conn(conn);
        }
    }

    // ---- observability ----

    fn http_health(&self) -> String {
        let stats = self.stats();
        format!(
            r#"{{"status":"ok","sessions":{},"children_alive":{},"version":"{}"}}"#,
            stats.sessions_open,
            self.children_alive(),
            env!("CARGO_PKG_VERSION")
        )
    }

    fn http_metrics(&self) -> String {
        let s = self.stats();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            out.push_str(&format!(
                "# HELP mcp_relay_{name} {help}\n# TYPE mcp_relay_{name} {kind}\n{value}\n"
            ));
        };
        metric(
            "sessions_open",
            "gauge",
            "Sessions open now.",
            format!("mcp_relay_sessions_open {}", s.sessions_open),
        );
        metric(
            "sessions_created_total",
            "counter",
            "Sessions created.",
            format!("mcp_relay_sessions_created_total {}", s.sessions_total),
        );
        metric(
            "sessions_reaped_total",
            "counter",
            "HTTP sessions ended by cause.",
            format!(
                "mcp_relay_sessions_reaped_total{{cause=\"expired\"}} {}\nmcp_relay_sessions_reaped_total{{cause=\"deleted\"}} {}",
                self.http.sessions_expired, self.http.sessions_deleted
            ),
        );
        metric(
            "children_alive",
            "gauge",
            "Server processes running.",
            format!("mcp_relay_children_alive {}", self.children_alive()),
        );
        metric(
            "children_spawned_total",
            "counter",
            "Server processes started.",
            format!("mcp_relay_children_spawned_total {}", s.children_spawned),
        );
        metric(
            "restarts_total",
            "counter",
            "Server restarts.",
            format!("mcp_relay_restarts_total {}", s.restarts),
        );
        metric(
            "messages_total",
            "counter",
            "Messages relayed, by direction.",
            format!(
                "mcp_relay_messages_total{{direction=\"to_server\"}} {}\nmcp_relay_messages_total{{direction=\"to_client\"}} {}",
                s.messages_to_server, s.messages_to_client
            ),
        );
        metric(
            "bytes_total",
            "counter",
            "Bytes relayed, by direction.",
            format!(
                "mcp_relay_bytes_total{{direction=\"to_server\"}} {}\nmcp_relay_bytes_total{{direction=\"to_client\"}} {}",
                s.bytes_to_server, s.bytes_to_client
            ),
        );
        metric(
            "requests_in_flight",
            "gauge",
            "Client requests waiting for an answer.",
            format!("mcp_relay_requests_in_flight {}", self.requests_in_flight()),
        );
        let statuses: Vec<String> = self
            .http
            .responses
            .iter()
            .map(|(st, n)| format!("mcp_relay_http_responses_total{{status=\"{st}\"}} {n}"))
            .collect();
        metric(
            "http_responses_total",
            "counter",
            "HTTP responses by status.",
            statuses.join("\n"),
        );
        metric(
            "heartbeat_failures_total",
            "counter",
            "Clients dropped for missing heartbeats.",
            format!(
                "mcp_relay_heartbeat_failures_total {}",
                s.heartbeat_failures
            ),
        );
        out
    }
}

/// Classifies a request body; what is not a JSON-RPC message is a 400 with its error.
fn classify_body(body: &[u8]) -> Result<Message<'_>, Reject> {
    classify(body).map_err(|e| match e {
        ClassifyError::NotJson(e) => reject(
            400,
            codes::PARSE_ERROR,
            format!("mcp-relay: parse error: {e}"),
        ),
        ClassifyError::NotAMessage => reject(
            400,
            codes::INVALID_REQUEST,
            "mcp-relay: the body is not a JSON-RPC message",
        ),
    })
}

fn waiting_for_any(
    streams: &BTreeMap<StreamId, Stream>,
    ids: &[StreamId],
    request: &RawId,
) -> bool {
    ids.iter().any(|x| {
        streams
            .get(x)
            .is_some_and(|st| st.waiting.contains(request))
    })
}

fn method_not_allowed(allow: &'static str) -> Reject {
    let mut r = reject(
        405,
        codes::INVALID_REQUEST,
        format!("mcp-relay: method not allowed here (allowed: {allow})"),
    );
    r.headers.push(("Allow", allow.into()));
    r
}

/// Parses an event id of the form `<stream>-<seq>`.
fn parse_event_id(text: &str) -> Option<(StreamId, u64)> {
    let (stream, seq) = text.trim().split_once('-')?;
    Some((StreamId(stream.parse().ok()?), seq.parse().ok()?))
}

fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    matches!(host_name(rest), "localhost" | "127.0.0.1" | "[::1]")
}

/// The host part of `host[:port]` (IPv6 in brackets kept whole).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    })
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_origins() {
        assert_eq!(host_name("localhost:8080"), "localhost");
        assert_eq!(host_name("[::1]:80"), "[::1]");
        assert_eq!(host_name("example.com"), "example.com");
        assert!(is_loopback_origin("http://localhost:3000"));
        assert!(is_loopback_origin("http://127.0.0.1"));
        assert!(!is_loopback_origin("http://evil.example"));
        assert!(!is_loopback_origin("http://localhost.evil.example"));
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secre"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn event_ids() {
        assert_eq!(parse_event_id("12-5"), Some((StreamId(12), 5)));
        assert_eq!(parse_event_id("x-5"), None);
    }
}
