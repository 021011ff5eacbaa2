//! MCP over HTTP: Streamable HTTP at `/mcp` (the session era, protocol versions 2025-03-26 to
//! 2025-11-25), the legacy HTTP+SSE transport at `/sse` + `/messages`, `/healthz` and
//! `/metrics`.
//!
//! HTTP connections and sessions are independent: a session's messages go out on *streams*
//! (the reply to a POST, the GET stream, the legacy SSE stream), and a stream is attached to a
//! connection only while one carries it. A stream that lost its connection keeps a bounded
//! replay buffer, so that a client resuming with `Last-Event-ID` gets what it missed.

pub(crate) mod access;
mod bridge;
mod stateless;
pub(crate) mod wire;

use crate::client::Route;
use crate::config::Config;
use crate::deadlines::Deadlines;
use crate::message::{self, classify, codes, ClassifyError, Kind, Message, RawId};
use crate::outbound::Outbound;
use crate::timer::Timer;
use crate::{ConnId, Endpoint, Output, ServerId};
use core::net::SocketAddr;
use rand_core::RngCore;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};
use wire::{BodyKind, Dechunk, Dechunked, Head, HeadParse};

/// Protocol versions of the session era this relay serves over Streamable HTTP.
pub const SESSION_ERA_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];

/// How long an idle keep-alive connection stays open.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(120);
/// Most streams without a connection kept per session for resumption.
const MAX_DETACHED_STREAMS: usize = 16;

/// A stream of messages to one HTTP client, named by the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct StreamId(u64);

/// What an HTTP deadline is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum HttpTimer {
    /// A request head or body must arrive, or an idle keep-alive connection closes.
    Conn(ConnId),
    /// A session with no open stream expires.
    Session(HttpKey),
    /// A stateless request's round of requests to the client is complete, or its retry is
    /// overdue.
    Input(HttpKey),
}

const CONN_DEADLINE: Timer = Timer::HttpConnection;
const IDLE_SESSION: Timer = Timer::HttpSessionIdle;

/// An HTTP session (or a stateless pool child), named by the HTTP layer. Never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct HttpKey(pub(crate) u64);

/// What the HTTP layer asks of the relay, in order. The relay drains these after every call
/// into the layer and answers through the layer's mutators.
#[derive(Debug)]
pub(crate) enum HttpEvent {
    /// A new session (or stateless pool child): the relay gives it a server.
    Opened {
        key: HttpKey,
        label: String,
        /// The configured server it reaches.
        server: ServerId,
    },
    /// A message from the client for the session's server (one body: a message or a batch).
    Message { key: HttpKey, body: Vec<u8> },
    /// The client is done with the session (DELETE, expiry, its legacy stream closed).
    Left { key: HttpKey },
    /// What the session's streams and connections hold now (`held`, its client side's load),
    /// and how much of that waits on connections (`unwritten`: what pauses its server; the
    /// rest waits for a GET stream in a buffer that drops its oldest messages when full).
    Load {
        key: HttpKey,
        held: usize,
        unwritten: usize,
    },
    /// `/healthz` or `/metrics` was asked for on this connection: the relay answers with
    /// [`HttpServer::report`].
    Report { conn: ConnId, kind: ReportKind },
}

/// The reports only the relay can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReportKind {
    Health,
    Metrics,
    /// `GET /servers`.
    Servers,
    /// `GET /servers/NAME/healthz`.
    ServerHealth(ServerId),
}

/// The HTTP server: connections, sessions and their streams, the stateless queue. A machine
/// of its own, driven by the relay: `handle_*` take facts about its connections, mutators
/// take what the relay decided for its sessions, and the relay drains
/// [`HttpServer::poll_output`] (effects on sockets) and [`HttpServer::poll_event`] (what it
/// needs from the relay's sessions) after every call.
pub(crate) struct HttpServer {
    config: Config,
    /// The configured servers, by name (`/servers/NAME/mcp`).
    routes: Vec<ServerRoute>,
    /// The name of every server there has been (a session is reached again on its server's
    /// routes, whatever id the name has now).
    names: BTreeMap<ServerId, String>,
    conns: BTreeMap<ConnId, Conn>,
    streams: BTreeMap<StreamId, Stream>,
    /// Session ids handed to clients.
    ids: BTreeMap<String, HttpKey>,
    sessions: BTreeMap<HttpKey, HttpSession>,
    next_key: u64,
    next_stream: u64,
    rng: rand_chacha::ChaCha20Rng,
    next_keepalive: Option<Instant>,
    /// HTTP responses by status, for `/metrics`.
    responses: BTreeMap<u16, u64>,
    sessions_created: u64,
    sessions_expired: u64,
    sessions_deleted: u64,
    /// Stateless requests waiting for a free child.
    pool_queue: VecDeque<stateless::Queued>,
    /// Connections whose next request is read once the current input is handled.
    deferred: VecDeque<ConnId>,
    pool_started: u64,
    /// The 2026-07-28 bridge's state: what the server said of itself, the pool children's
    /// setup and held requests, listen streams.
    bridge: stateless::Bridge,
    /// The relay is shutting down: no new sessions.
    draining: bool,
    /// Sessions the relay has besides this server's (TCP), which count against
    /// `--max-sessions` too.
    other_sessions: usize,
    /// Connection and session deadlines, indexed by time (entries may be early, never late:
    /// each is checked again when it fires).
    timers: Deadlines<HttpTimer, Timer>,
    /// The latest `now` handed in.
    now: Instant,
    out: VecDeque<Output>,
    events: VecDeque<HttpEvent>,
}

impl HttpServer {
    pub(crate) fn new(config: &Config, now: Instant) -> Self {
        use rand_core::SeedableRng;
        let served: Vec<(ServerId, crate::NamedServer)> = config
            .served()
            .into_iter()
            .enumerate()
            .map(|(i, named)| (ServerId(i as u32), named))
            .collect();
        let mut routes = Vec::new();
        let mut names = BTreeMap::new();
        // One plain server's tokens are the relay's: they are not counted twice.
        set_routes(&mut routes, &mut names, &served, !config.servers.is_empty());
        HttpServer {
            routes,
            names,
            config: config.clone(),
            conns: BTreeMap::new(),
            streams: BTreeMap::new(),
            ids: BTreeMap::new(),
            sessions: BTreeMap::new(),
            next_key: 1,
            next_stream: 1,
            rng: rand_chacha::ChaCha20Rng::from_seed(config.seed),
            next_keepalive: None,
            responses: BTreeMap::new(),
            sessions_created: 0,
            sessions_expired: 0,
            sessions_deleted: 0,
            pool_queue: VecDeque::new(),
            deferred: VecDeque::new(),
            pool_started: 0,
            bridge: stateless::Bridge::default(),
            draining: false,
            other_sessions: 0,
            timers: Deadlines::default(),
            now,
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The servers are now these (`--config` reloaded).
    pub(crate) fn set_routes(&mut self, servers: &[(ServerId, crate::NamedServer)]) {
        set_routes(&mut self.routes, &mut self.names, servers, true);
        // A retired server's idle stateless children serve no one again (no request reaches
        // a retired route without a session id); busy ones go when their request is over.
        let idle: Vec<HttpKey> = self
            .sessions
            .iter()
            .filter(|(k, s)| s.pool && !s.finished && s.busy.is_none() && !self.bridge.holds(**k))
            .filter(|(_, s)| self.is_retired(s.token.server))
            .map(|(k, _)| *k)
            .collect();
        for key in idle {
            if let Some(s) = self.sessions.get_mut(&key) {
                s.finished = true;
            }
            self.end_session_by_client(key, "its server was left out of the configuration");
        }
    }

    /// Whether a server was left out of the configuration.
    fn is_retired(&self, server: ServerId) -> bool {
        !self.routes.iter().any(|r| r.server == server && !r.retired)
    }

    /// A retired server is gone (its last session ended): its routes with it.
    pub(crate) fn forget_route(&mut self, server: ServerId) {
        self.routes.retain(|r| !(r.retired && r.server == server));
        self.bridge.forget(server);
    }

    // ---- poll_* ----

    pub(crate) fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub(crate) fn poll_event(&mut self) -> Option<HttpEvent> {
        self.events.pop_front()
    }

    // ---- getters ----

    /// Requests of a session whose answers its streams still wait for.
    fn waiting(&self, key: HttpKey) -> usize {
        self.sessions.get(&key).map_or(0, |s| {
            s.streams
                .iter()
                .filter_map(|x| self.streams.get(x))
                .map(|st| st.waiting.len())
                .sum()
        })
    }

    fn new_key(&mut self) -> HttpKey {
        let key = HttpKey(self.next_key);
        self.next_key += 1;
        key
    }

    /// The relay's sessions that are not this server's (they share `--max-sessions`).
    pub(crate) fn set_other_sessions(&mut self, n: usize) {
        self.other_sessions = n;
    }

    /// HTTP sessions open now, stateless pool children included.
    pub(crate) fn sessions_open(&self) -> usize {
        self.sessions.values().filter(|s| !s.finished).count()
    }

    /// Events or deferred reads are waiting: the relay must drive the layer again.
    pub(crate) fn has_work(&self) -> bool {
        !self.events.is_empty() || !self.deferred.is_empty()
    }

    /// The `Mcp-Session-Id` of a session (`None` for a stateless pool child or an unknown key).
    pub(crate) fn session_id(&self, key: HttpKey) -> Option<&str> {
        self.sessions
            .get(&key)
            .filter(|s| !s.pool)
            .map(|s| s.id.as_str())
    }

    pub(crate) fn buffered(&self, conn: ConnId) -> Option<usize> {
        self.conns
            .get(&conn)
            .map(|c| c.inbuf.len() + c.body.len() + c.out.load())
    }

    /// A fresh session id: 128 bits from the CSPRNG, as 32 hex digits, after `ID.` when the
    /// relay has an instance id.
    fn new_session_id(&mut self) -> String {
        let mut bytes = [0u8; 16];
        self.rng.fill_bytes(&mut bytes);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}{hex}", self.instance_prefix())
    }

    /// `ID.` for an instance id, or nothing.
    fn instance_prefix(&self) -> String {
        match self.config.http.instance_id.as_str() {
            "" => String::new(),
            id => format!("{id}."),
        }
    }
}

/// The first 8 random digits of a session id, for logs (never the whole id: it is the
/// session's only credential when no token is set).
fn short_id(id: &str) -> &str {
    let random = id.rsplit('.').next().unwrap_or(id);
    random.get(..8).unwrap_or(random)
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
    session: Option<HttpKey>,
    /// Finished event streams whose last bytes are not written yet: resumable until they are.
    flushing: Vec<StreamId>,
    /// The request being answered, for the access log (`None` while it is off).
    req: Option<access::Req>,
}

enum ConnState {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Reading a body.
    Body {
        head: Head,
        kind: BodyKind,
        dechunk: Dechunk,
        admitted: Admitted,
    },
    /// A response is in progress on this stream.
    Busy(StreamId),
    /// A stateless request waits for a free child.
    Queued,
    /// `/healthz` or `/metrics` waits for the relay's report.
    Report,
    /// A notification or response waits for its session's server to take input; its `202`
    /// goes out when it does.
    Parked,
    /// The request was refused on its head and answered: its body is read and dropped (never
    /// kept), so that the connection can go on (and the answer is not lost to a reset).
    Discard {
        /// Body bytes still to come (`Content-Length`), or `None` for a chunked body.
        left: Option<usize>,
        dechunk: Dechunk,
    },
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
    session: HttpKey,
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

/// A client message the session's server side could not take yet.
struct Parked {
    body: Vec<u8>,
    /// The connection whose `202 Accepted` waits for it (a POST of notifications or
    /// responses), with that response's headers and body.
    ack: Option<Ack>,
}

struct Ack {
    conn: ConnId,
    headers: Vec<(&'static str, String)>,
    content_type: Option<&'static str>,
    body: &'static [u8],
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
    /// The server it reaches and the bearer token that created it.
    token: Grant,
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
    /// Connections holding this session's unwritten bytes.
    conns: BTreeSet<ConnId>,
    /// The relay said the session's server side takes input: one more message may go to it
    /// (each message uses this up until the relay says so again).
    ready: bool,
    /// Messages waiting for the server side to take input, oldest first, and their bytes.
    parked: VecDeque<Parked>,
    parked_bytes: usize,
}

/// What a request's head decided: the CORS headers its answer carries and where it goes
/// (with the index of the bearer token it presented, where tokens are required).
struct Admitted {
    cors: Vec<(&'static str, String)>,
    target: Target,
}

enum Target {
    Preflight,
    Health,
    Metrics,
    /// `GET /servers`: the configured servers.
    Servers,
    /// `GET /servers/NAME/healthz`: one server's health.
    ServerHealth(ServerId),
    McpPost(Grant),
    McpGet(Grant),
    McpDelete(Grant),
    LegacyOpen(Grant),
    LegacyPost(Grant),
}

/// Who may use a session: the configured server a request reaches (by its path), and the
/// bearer token it presented (an index: the relay's tokens first, then that server's own).
/// A session is only ever reached again with the same grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) server: ServerId,
    pub(crate) token: Option<usize>,
}

/// A configured server as HTTP reaches it.
struct ServerRoute {
    name: String,
    server: ServerId,
    default: bool,
    /// Its own bearer tokens, accepted besides the relay's.
    tokens: Vec<String>,
    /// Left out of a reloaded configuration: its sessions are still reached, and no new one
    /// is opened.
    retired: bool,
}

/// Routes for `servers`; `own_tokens`: each server's `http.auth_tokens` are its own.
fn set_routes(
    routes: &mut Vec<ServerRoute>,
    names: &mut BTreeMap<ServerId, String>,
    servers: &[(ServerId, crate::NamedServer)],
    own_tokens: bool,
) {
    for r in routes.iter_mut() {
        if !servers.iter().any(|(id, _)| *id == r.server) {
            r.retired = true;
            r.default = false;
        }
    }
    routes.retain(|r| r.retired);
    for (id, named) in servers {
        names.insert(*id, named.name.clone());
        routes.push(ServerRoute {
            name: named.name.clone(),
            server: *id,
            default: named.default,
            tokens: if own_tokens {
                named.config.http.auth_tokens.clone()
            } else {
                Vec::new()
            },
            retired: false,
        });
    }
    // Live routes first: a name is found there before a retired server of the same name.
    routes.sort_by_key(|r| r.retired);
    // With several and none marked, the bare routes reach none (the relay's TCP listeners
    // fall back to the first); with one, it is the default.
    if servers.len() == 1 {
        if let Some(only) = routes.iter_mut().find(|r| !r.retired) {
            only.default = true;
        }
    }
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

impl HttpServer {
    // ---- connections ----

    pub(crate) fn handle_accept(
        &mut self,
        now: Instant,
        conn: ConnId,
        local: SocketAddr,
        peer: SocketAddr,
    ) {
        self.now = now;
        log::debug!("{conn}: HTTP connection from {peer}");
        self.conns.insert(
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
                req: None,
            },
        );
        let deadline = now + KEEPALIVE_IDLE.min(self.config.http.header_timeout * 6);
        self.timers
            .set(HttpTimer::Conn(conn), Some((deadline, CONN_DEADLINE)));
        if self.draining {
            // Still served while the relay drains (its sessions' requests, /healthz saying
            // 503), one request per connection.
            if let Some(c) = self.conns.get_mut(&conn) {
                c.close_after = true;
            }
        }
    }

    pub(crate) fn handle_data(&mut self, now: Instant, conn: ConnId, data: &[u8]) {
        self.now = now;
        let limit = wire::MAX_HEAD + self.config.max_message_size + 64;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if matches!(c.state, ConnState::Closing) {
            return;
        }
        if matches!(c.state, ConnState::Body { .. } | ConnState::Discard { .. }) && !data.is_empty()
        {
            // A body that keeps coming keeps its connection.
            let deadline = now + self.config.http.header_timeout;
            c.deadline = Some(deadline);
            self.timers
                .set(HttpTimer::Conn(conn), Some((deadline, CONN_DEADLINE)));
        }
        if c.inbuf.is_empty() && matches!(c.state, ConnState::Head) {
            c.deadline = Some(now + self.config.http.header_timeout);
            self.timers.set(
                HttpTimer::Conn(conn),
                Some((now + self.config.http.header_timeout, CONN_DEADLINE)),
            );
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
        self.process(now, conn);
    }

    pub(crate) fn handle_eof(&mut self, now: Instant, conn: ConnId) {
        self.now = now;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.eof = true;
        match c.state {
            ConnState::Busy(stream)
                if self
                    .streams
                    .get(&stream)
                    .is_none_or(|st| st.stateless || st.kind != StreamKind::Post) =>
            {
                // An event stream the client closed (GET, legacy SSE) is detached, to be
                // resumed or to end its session; in 2026-07-28 closing the response stream
                // cancels the request.
                self.detach_flushing(conn);
                self.detach(now, stream);
                self.close_conn(conn);
            }
            ConnState::Busy(_) | ConnState::Parked | ConnState::Report => {
                // A client that only half-closed still gets what it asked for: the response
                // goes out, then the connection closes. (One that left for good makes the
                // write fail, and `handle_broken` detaches its stream.)
            }
            _ => {
                // Finished streams whose last bytes are not written stay resumable.
                self.detach_flushing(conn);
                let Some(c) = self.conns.get(&conn) else {
                    return;
                };
                if !c.inbuf.is_empty() {
                    log::debug!("{conn}: closed with an incomplete request");
                }
                self.close_conn(conn);
            }
        }
    }

    pub(crate) fn handle_broken(&mut self, now: Instant, conn: ConnId) {
        self.now = now;
        self.detach_flushing(conn);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.out.set_gone();
            let session = c.session;
            if let ConnState::Busy(stream) = c.state {
                self.detach(now, stream);
            }
            self.forget_conn(conn);
            // Its unwritten bytes no longer load the session.
            if let Some(key) = session {
                self.update_load(key);
            }
        }
    }

    pub(crate) fn handle_written(&mut self, now: Instant, conn: ConnId, n: usize) {
        self.now = now;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.out.written(n, &mut self.out);
        if c.out.load() == 0 {
            let eof = c.eof;
            for stream in std::mem::take(&mut c.flushing) {
                if eof {
                    // Written to a client that closed its side: it may have left rather than
                    // half-closed, so the stream stays resumable instead of being forgotten.
                    self.keep_detached(stream);
                } else {
                    // Everything of the finished stream reached the client: no resuming.
                    self.drop_stream(stream);
                }
            }
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let session = c.session;
        if c.out.is_finished() {
            self.forget_conn(conn);
        }
        // What was written no longer loads the session: it may read its server again.
        if let Some(key) = session {
            if let Some(s) = self.sessions.get_mut(&key) {
                s.last_activity = now;
                self.timers.set(
                    HttpTimer::Session(key),
                    Some((now + self.config.http.session_timeout, IDLE_SESSION)),
                );
            }
            self.update_load(key);
        }
    }

    /// The connection is gone with finished streams not fully written: they stay resumable.
    fn detach_flushing(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        for stream in std::mem::take(&mut c.flushing) {
            if let Some(st) = self.streams.get_mut(&stream) {
                st.conn = None;
                st.sse = false;
            }
        }
    }

    fn close_conn(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnState::Closing;
            c.out.close_when_flushed(&mut self.out);
            if c.out.is_finished() {
                self.forget_conn(conn);
            }
        }
    }

    fn forget_conn(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            // A stream that ended with its connection, or a request whose client left.
            if let Some(req) = c.req {
                req.finish(conn, c.peer, c.out.staged_total(), self.now);
            }
        }
        self.timers.set(HttpTimer::Conn(conn), None);
    }

    /// Parses and answers what a connection has sent, request by request.
    fn process(&mut self, now: Instant, conn: ConnId) {
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            match &mut c.state {
                ConnState::Closing
                | ConnState::Busy(_)
                | ConnState::Queued
                | ConnState::Report
                | ConnState::Parked => return,
                ConnState::Head => {
                    if c.inbuf.is_empty() {
                        c.deadline = Some(now + KEEPALIVE_IDLE);
                        self.timers.set(
                            HttpTimer::Conn(conn),
                            Some((now + KEEPALIVE_IDLE, CONN_DEADLINE)),
                        );
                        if c.eof {
                            self.close_conn(conn);
                        }
                        return;
                    }
                    match wire::parse_head(&c.inbuf) {
                        HeadParse::Partial => return,
                        HeadParse::Error(status, why) => {
                            return self.fail(
                                conn,
                                reject(status, codes::INVALID_REQUEST, why),
                                true,
                            );
                        }
                        HeadParse::Complete(head, n) => {
                            c.inbuf.drain(..n);
                            if access::enabled() {
                                let at = c.out.staged_total();
                                c.req = Some(access::Req::new(&head, now, at, &self.ids));
                            }
                            let kind = match wire::body_kind(&head) {
                                Ok(kind) => kind,
                                Err((status, why)) => {
                                    return self.fail(
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
                                    return self.fail(
                                        conn,
                                        reject(413, codes::INVALID_REQUEST, why),
                                        true,
                                    );
                                }
                            }
                            let has_body = kind != BodyKind::Length(0);
                            let admitted = match self.admit(conn, &head) {
                                Ok(admitted) => admitted,
                                Err(r) if has_body => return self.refuse_body(conn, r, kind),
                                Err(r) => return self.fail(conn, r, false),
                            };
                            let Some(c) = self.conns.get_mut(&conn) else {
                                return;
                            };
                            if has_body
                                && head
                                    .header("expect")
                                    .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
                            {
                                c.out.stage(b"HTTP/1.1 100 Continue\r\n\r\n");
                                c.out.flush(&mut self.out);
                            }
                            c.body.clear();
                            // A body must keep coming: each read buys another header timeout.
                            let deadline = now + self.config.http.header_timeout;
                            c.deadline = Some(deadline);
                            self.timers
                                .set(HttpTimer::Conn(conn), Some((deadline, CONN_DEADLINE)));
                            c.state = ConnState::Body {
                                head,
                                kind,
                                dechunk: Dechunk::default(),
                                admitted,
                            };
                        }
                    }
                }
                ConnState::Discard { left, dechunk } => {
                    let done = match left {
                        Some(left) => {
                            let take = (*left).min(c.inbuf.len());
                            c.inbuf.drain(..take);
                            *left -= take;
                            Some(*left == 0)
                        }
                        None => {
                            let mut sink = Vec::new();
                            match dechunk.feed(&c.inbuf, &mut sink) {
                                Dechunked::More(n) => {
                                    c.inbuf.drain(..n);
                                    Some(false)
                                }
                                Dechunked::Done(n) => {
                                    c.inbuf.drain(..n);
                                    Some(true)
                                }
                                Dechunked::Error => None,
                            }
                        }
                    };
                    match done {
                        Some(false) => return,
                        Some(true) if !c.close_after && !c.eof => c.state = ConnState::Head,
                        _ => return self.close_conn(conn),
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
                    self.request_complete(now, conn);
                }
                ConnState::Body { dechunk, .. } => {
                    let max = self.config.max_message_size;
                    let fed = dechunk.feed(&c.inbuf, &mut c.body);
                    if let Dechunked::More(n) | Dechunked::Done(n) = fed {
                        c.inbuf.drain(..n);
                        if c.body.len() > max {
                            let why = format!("mcp-relay: the body exceeds the limit of {max} bytes (--max-message-size)");
                            return self.fail(conn, reject(413, codes::INVALID_REQUEST, why), true);
                        }
                    }
                    match fed {
                        Dechunked::More(_) => return,
                        Dechunked::Done(_) => self.request_complete(now, conn),
                        Dechunked::Error => {
                            return self.fail(
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
            if let Some(c) = self.conns.get_mut(&conn) {
                if c.paused && c.inbuf.len() <= wire::MAX_HEAD {
                    c.paused = false;
                    self.out.push_back(Output::Resume {
                        endpoint: Endpoint::Conn(conn),
                    });
                }
            }
        }
    }

    fn request_complete(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let state = std::mem::replace(&mut c.state, ConnState::Head);
        let ConnState::Body { head, admitted, .. } = state else {
            return;
        };
        let body = std::mem::take(&mut c.body);
        if head.close {
            c.close_after = true;
        }
        c.deadline = None;
        self.timers.set(HttpTimer::Conn(conn), None);
        if let Err(r) = self.route_request(now, conn, &head, body, admitted) {
            self.fail(conn, r, false);
        }
    }

    /// Answers a request refused on its head at once, then drops its body as it comes: not a
    /// byte of it is kept, and the connection reads its next request once it is through.
    fn refuse_body(&mut self, conn: ConnId, r: Reject, kind: BodyKind) {
        self.fail(conn, r, false);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnState::Discard {
                left: match kind {
                    BodyKind::Length(n) => Some(n),
                    BodyKind::Chunked => None,
                },
                dechunk: Dechunk::default(),
            };
        }
    }

    /// Answers with an error status and a JSON-RPC error body.
    fn fail(&mut self, conn: ConnId, r: Reject, close: bool) {
        let mut body = Vec::new();
        message::write_error_data(
            &mut body,
            r.id.as_ref().map(RawId::as_str),
            r.code,
            &r.message,
            r.data.as_deref(),
        );
        let headers: Vec<(&str, &str)> = r.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let peer = self.conns.get(&conn).map(|c| c.peer);
        log::debug!("{conn} {peer:?}: HTTP {}: {}", r.status, r.message);
        self.respond(
            conn,
            r.status,
            &headers,
            Some("application/json"),
            &body,
            close,
        );
    }

    /// Writes a complete response; the connection then reads its next request.
    fn respond(
        &mut self,
        conn: ConnId,
        status: u16,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: &[u8],
        close: bool,
    ) {
        self.respond_body(
            conn,
            status,
            headers,
            content_type,
            Body::Borrowed(body),
            close,
        );
    }

    /// [`Self::respond`] with a body that may be handed to the driver as it is.
    fn respond_body(
        &mut self,
        conn: ConnId,
        status: u16,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: Body<'_>,
        close: bool,
    ) {
        *self.responses.entry(status).or_default() += 1;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let close = close || c.close_after || c.eof;
        let bytes_at = c.out.staged_total();
        let head = wire::response_head(status, headers, content_type, body.len(), close);
        match body {
            // A large message goes out as it is, after its head: no copy of it.
            Body::Owned(b) if b.len() >= HAND_OVER => {
                c.out.stage(&head);
                c.out.stage_owned(b, &mut self.out);
            }
            // The head and the body are staged together, in a buffer grown once to their
            // size: the body is copied once, not into a buffer of its own first.
            Body::Owned(b) => c.out.stage_parts(&[&head, &b]),
            Body::Borrowed(b) => c.out.stage_parts(&[&head, b]),
        }
        c.out.flush(&mut self.out);
        let req = c
            .req
            .take()
            .or_else(|| access::enabled().then(|| access::Req::unreadable(self.now, bytes_at)));
        if let Some(mut req) = req {
            req.set_status(status);
            req.session_from_headers(headers.iter().copied());
            req.finish(conn, c.peer, c.out.staged_total(), self.now);
        }
        if close {
            self.close_conn(conn);
        } else {
            c.state = ConnState::Head;
        }
    }

    // ---- routing requests ----

    /// Everything about a request that its head decides: whether it may be served at all
    /// (origin, host, token, path, method, media types) and where it goes. Decided before a
    /// byte of its body is read, so that a refused request costs no buffer.
    fn admit(&self, conn: ConnId, head: &Head) -> Result<Admitted, Reject> {
        let origin = self.check_origin(conn, head)?;
        self.check_host(conn, head)?;
        let mut cors: Vec<(&'static str, String)> = Vec::new();
        if let Some(origin) = origin {
            cors.push(("Access-Control-Allow-Origin", origin));
            cors.push((
                "Access-Control-Expose-Headers",
                "Mcp-Session-Id, Mcp-Protocol-Version".into(),
            ));
            cors.push(("Vary", "Origin".into()));
        }
        let with_cors = |mut r: Reject| {
            r.headers.extend(cors.iter().cloned());
            r
        };
        let method = head.method.as_str();
        if method == "OPTIONS" {
            return Ok(Admitted {
                cors,
                target: Target::Preflight,
            });
        }
        // `/servers/NAME/ENDPOINT` reaches server NAME; the bare endpoints, the default one.
        let (route, endpoint) = match head.path.strip_prefix("/servers/") {
            Some(rest) => {
                let name = rest.split_once('/').map_or(rest, |(name, _)| name);
                let Some(route) = self
                    .routes
                    .iter()
                    .find(|r| !r.name.is_empty() && r.name == name)
                else {
                    return Err(with_cors(reject(
                        404,
                        codes::INVALID_REQUEST,
                        format!(
                            "mcp-relay: no server named {name:?} here (GET /servers lists them)"
                        ),
                    )));
                };
                // A removed server's sessions are still reached; nothing new is opened.
                let in_session = head.header("mcp-session-id").is_some()
                    || head.query_param("sessionId").is_some()
                    || head.query_param("session_id").is_some();
                if route.retired && !in_session {
                    return Err(with_cors(reject(
                        404,
                        codes::INVALID_REQUEST,
                        format!("mcp-relay: server {name:?} was removed from the configuration; its sessions go on, and no new one starts"),
                    )));
                }
                (Some(route), &rest[name.len()..])
            }
            None => (None, head.path.as_str()),
        };
        let reach = route.or_else(|| self.routes.iter().find(|r| r.default));
        let no_default = || {
            with_cors(reject(
                404,
                codes::INVALID_REQUEST,
                format!("mcp-relay: no default server for {}: use /servers/NAME{} (GET /servers lists them)", head.path, head.path),
            ))
        };
        let target = match endpoint {
            "/healthz" if self.config.http.healthz => match (method, route) {
                ("GET" | "HEAD", None) => Target::Health,
                ("GET" | "HEAD", Some(r)) => Target::ServerHealth(r.server),
                _ => return Err(method_not_allowed("GET")),
            },
            "/metrics" if route.is_none() && self.config.http.metrics => {
                self.auth(head, None).map_err(with_cors)?;
                match method {
                    "GET" => Target::Metrics,
                    _ => return Err(method_not_allowed("GET")),
                }
            }
            "/servers" if route.is_none() => {
                self.auth(head, None).map_err(with_cors)?;
                match method {
                    "GET" => Target::Servers,
                    _ => return Err(method_not_allowed("GET")),
                }
            }
            "/mcp" => {
                let token = self
                    .auth(head, Some(reach.ok_or_else(no_default)?))
                    .map_err(with_cors)?;
                let stateless =
                    head.header("mcp-protocol-version") == Some(stateless::STATELESS_VERSION);
                match method {
                    "GET" | "DELETE" if stateless => {
                        return Err(with_cors(method_not_allowed("POST, OPTIONS")))
                    }
                    "POST" => {
                        check_post_media(head).map_err(with_cors)?;
                        Target::McpPost(token)
                    }
                    "GET" => Target::McpGet(token),
                    "DELETE" => Target::McpDelete(token),
                    _ => return Err(with_cors(method_not_allowed("GET, POST, DELETE, OPTIONS"))),
                }
            }
            "/sse" => {
                let token = self
                    .auth(head, Some(reach.ok_or_else(no_default)?))
                    .map_err(with_cors)?;
                match method {
                    "GET" => Target::LegacyOpen(token),
                    _ => return Err(with_cors(method_not_allowed("GET, OPTIONS"))),
                }
            }
            "/messages" | "/message" => {
                let token = self
                    .auth(head, Some(reach.ok_or_else(no_default)?))
                    .map_err(with_cors)?;
                match method {
                    "POST" => Target::LegacyPost(token),
                    _ => return Err(with_cors(method_not_allowed("POST, OPTIONS"))),
                }
            }
            _ => {
                let at = match route {
                    Some(r) => format!("/servers/{}/mcp, and /servers/{}/sse", r.name, r.name),
                    None => "/mcp, and /sse".to_owned(),
                };
                return Err(reject(
                    404,
                    codes::INVALID_REQUEST,
                    format!(
                        "mcp-relay: nothing at {} (MCP is served at {at} for the legacy transport)",
                        head.path
                    ),
                ));
            }
        };
        Ok(Admitted { cors, target })
    }

    /// Serves a complete request that [`HttpServer::admit`] let in.
    fn route_request(
        &mut self,
        now: Instant,
        conn: ConnId,
        head: &Head,
        body: Vec<u8>,
        admitted: Admitted,
    ) -> Result<(), Reject> {
        let Admitted { cors, target } = admitted;
        let with_cors = |mut r: Reject| {
            r.headers.extend(cors.iter().cloned());
            r
        };
        match target {
            Target::Preflight => {
                let mut headers = cors.clone();
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
                self.respond(conn, 204, &h, None, b"", false);
                Ok(())
            }
            Target::Health => {
                self.ask_report(conn, ReportKind::Health);
                Ok(())
            }
            Target::Metrics => {
                self.ask_report(conn, ReportKind::Metrics);
                Ok(())
            }
            Target::Servers => {
                self.ask_report(conn, ReportKind::Servers);
                Ok(())
            }
            Target::ServerHealth(server) => {
                self.ask_report(conn, ReportKind::ServerHealth(server));
                Ok(())
            }
            Target::McpPost(token) => self.post(now, conn, head, body, token, &cors),
            Target::McpGet(token) => self.get(now, conn, head, token, &cors),
            Target::McpDelete(token) => self.delete(conn, head, token, &cors),
            Target::LegacyOpen(token) => {
                let named = head.path.starts_with("/servers/");
                self.legacy_open(now, conn, token, named, &cors)
            }
            Target::LegacyPost(token) => self.legacy_post(now, conn, head, body, token, &cors),
        }
        .map_err(with_cors)
    }

    /// `Ok(Some(origin))`: a present, allowed origin (echoed in CORS headers).
    fn check_origin(&self, conn: ConnId, head: &Head) -> Result<Option<String>, Reject> {
        let Some(origin) = head.header("origin") else {
            return Ok(None);
        };
        let local = self.conns.get(&conn).map(|c| c.local);
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
    fn check_host(&self, conn: ConnId, head: &Head) -> Result<(), Reject> {
        let Some(local) = self.conns.get(&conn).map(|c| c.local) else {
            return Ok(());
        };
        // Host names are case-insensitive (RFC 9110 §4.2.3).
        let host = head.header("host").unwrap_or("").to_ascii_lowercase();
        let host = host.as_str();
        let allowed = &self.config.http.allowed_hosts;
        let ok = if !allowed.is_empty() {
            allowed
                .iter()
                .any(|a| a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(host_name(host)))
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

    /// Checks the bearer token for `route` (the relay's tokens, and the server's own), or
    /// for the relay's own pages (`None`: the relay's tokens only); says which one matched.
    fn auth(&self, head: &Head, route: Option<&ServerRoute>) -> Result<Grant, Reject> {
        let server = route.map_or(ServerId(0), |r| r.server);
        let own: &[String] = route.map_or(&[], |r| &r.tokens);
        let tokens: Vec<&String> = self.config.http.auth_tokens.iter().chain(own).collect();
        if tokens.is_empty() {
            return Ok(Grant {
                server,
                token: None,
            });
        }
        // The scheme is case-insensitive (RFC 9110 §11.1); the token is not.
        let given = head
            .header("authorization")
            .map(str::trim)
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
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
            Some(i) => Ok(Grant {
                server,
                token: Some(i),
            }),
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

    fn session_for(&self, head: &Head, token: Grant, legacy: bool) -> Result<HttpKey, Reject> {
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
        let found = self.ids.get(id).copied().filter(|k| {
            self.sessions.get(k).is_some_and(|s| {
                s.legacy == legacy
                    && s.token.token == token.token
                    && self.names.get(&s.token.server) == self.names.get(&token.server)
                    && !s.finished
            })
        });
        found.ok_or_else(|| {
            reject(
                404,
                codes::INVALID_REQUEST,
                "mcp-relay: unknown or expired session; initialize a new one",
            )
        })
    }

    fn new_session(
        &mut self,
        now: Instant,
        conn: ConnId,
        legacy: bool,
        token: Grant,
        version: &str,
    ) -> Result<HttpKey, Reject> {
        let open = self.sessions.values().filter(|s| !s.finished).count() + self.other_sessions;
        if open >= self.config.http.max_sessions || self.draining {
            let why = if self.draining {
                "mcp-relay: the relay is shutting down; start the session on another relay".into()
            } else {
                format!("mcp-relay: too many sessions ({open}, --max-sessions); try again later")
            };
            let mut r = reject(503, codes::SERVER_UNAVAILABLE, why);
            r.headers.push(("Retry-After", "5".into()));
            return Err(r);
        }
        let id = self.new_session_id();
        let key = self.new_key();
        // Like a TCP session's, the label names the client's address (of the request that
        // opened it: later requests may come from elsewhere).
        let label = match self.conns.get(&conn) {
            Some(c) => format!("session {}… {}", short_id(&id), c.peer),
            None => format!("session {}…", short_id(&id)),
        };
        self.events.push_back(HttpEvent::Opened {
            key,
            label,
            server: token.server,
        });
        self.ids.insert(id.clone(), key);
        self.sessions.insert(
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
                conns: BTreeSet::new(),
                ready: false,
                parked: VecDeque::new(),
                parked_bytes: 0,
            },
        );
        self.sessions_created += 1;
        let idle = now + self.config.http.session_timeout;
        self.timers
            .set(HttpTimer::Session(key), Some((idle, IDLE_SESSION)));
        Ok(key)
    }

    fn new_stream(
        &mut self,
        key: HttpKey,
        kind: StreamKind,
        conn: Option<ConnId>,
        priming: bool,
    ) -> StreamId {
        let id = StreamId(self.next_stream);
        self.next_stream += 1;
        self.streams.insert(
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
        if let Some(s) = self.sessions.get_mut(&key) {
            s.streams.push(id);
        }
        if let Some(conn) = conn {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.state = ConnState::Busy(id);
            }
            self.attach_conn(conn, key);
        }
        id
    }

    fn post(
        &mut self,
        now: Instant,
        conn: ConnId,
        head: &Head,
        body: Vec<u8>,
        token: Grant,
        cors: &[(&'static str, String)],
    ) -> Result<(), Reject> {
        let body = trim_owned(body);
        let msg = classify_body(&body)?;
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
            let batch = matches!(msg, Message::Batch(_));
            let server = token.server;
            return self.stateless_post(
                now, conn, server, head, &body, entries, batch, version, cors,
            );
        }
        if let Some(v) = head.header("mcp-protocol-version") {
            if !SESSION_ERA_VERSIONS.contains(&v) {
                let id = match entries {
                    [e] => e.id.map(RawId::from_raw),
                    _ => None,
                };
                return Err(stateless::unsupported_version(v, id, false));
            }
        }
        let initialize = entries
            .iter()
            .find(|e| e.kind == Kind::Request && e.method.as_deref() == Some("initialize"));
        let has_session_header = head.header("mcp-session-id").is_some();
        let key = if let (Some(init), false) = (initialize, has_session_header) {
            let version = message::param_str(init.params, "protocolVersion")
                .unwrap_or_else(|| "2025-03-26".into());
            self.new_session(now, conn, false, token, &version)?
        } else {
            self.session_for(head, token, false)?
        };
        self.check_room(key, body.len())?;
        let requests: Vec<RawId> = entries
            .iter()
            .filter(|e| e.kind == Kind::Request)
            .filter_map(|e| e.id.map(RawId::from_raw))
            .collect();
        let waiting = self.waiting(key);
        // Only requests wait for the server: notifications and answers (a
        // `notifications/cancelled`, which frees a place) always go through.
        if !requests.is_empty() && waiting >= self.config.max_in_flight {
            let mut r = reject(
                503,
                codes::SERVER_UNAVAILABLE,
                format!("mcp-relay: {waiting} requests of this session already wait for the server (--max-in-flight); try again later"),
            );
            r.headers.push(("Retry-After", "1".into()));
            return Err(r);
        }
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
            let s = self
                .sessions
                .get_mut(&key)
                .ok_or_else(|| reject(404, codes::INVALID_REQUEST, "mcp-relay: unknown session"))?;
            s.last_activity = now;
            self.timers.set(
                HttpTimer::Session(key),
                Some((now + self.config.http.session_timeout, IDLE_SESSION)),
            );
            s.progress.extend(progress);
            s.id.clone()
        };
        let mut ack = None;
        if requests.is_empty() {
            // Notifications and responses: accepted, no body, once the server takes them.
            let mut headers = cors.to_vec();
            headers.push(("Mcp-Session-Id", session_id));
            ack = Some(Ack {
                conn,
                headers,
                content_type: None,
                body: b"",
            });
        } else {
            let version = self
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
            if let Some(st) = self.streams.get_mut(&stream) {
                st.waiting = requests;
                st.extra_headers = cors.to_vec();
                st.extra_headers.push(("Mcp-Session-Id", session_id));
            }
        }
        self.submit(key, body, ack);
        Ok(())
    }

    fn get(
        &mut self,
        now: Instant,
        conn: ConnId,
        head: &Head,
        token: Grant,
        cors: &[(&'static str, String)],
    ) -> Result<(), Reject> {
        if !head.accepts("text/event-stream") {
            return Err(reject(
                406,
                codes::INVALID_REQUEST,
                "mcp-relay: Accept must list text/event-stream",
            ));
        }
        let key = self.session_for(head, token, false)?;
        let (session_id, version) = match self.sessions.get_mut(&key) {
            Some(s) => {
                s.last_activity = now;
                self.timers.set(
                    HttpTimer::Session(key),
                    Some((now + self.config.http.session_timeout, IDLE_SESSION)),
                );
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
                let left = self
                    .streams
                    .get(&stream)
                    .filter(|st| st.session == key)
                    .and_then(|st| st.conn)
                    .filter(|old| self.conns.get(old).is_some_and(|c| c.eof));
                if let Some(old) = left {
                    // Still attached to a connection the client closed its side of: it
                    // resumes here, so it no longer listens there.
                    self.detach_flushing(old);
                    if self
                        .streams
                        .get(&stream)
                        .is_some_and(|st| st.conn == Some(old))
                    {
                        self.detach(now, stream);
                    }
                    self.close_conn(old);
                }
                let belongs = self
                    .streams
                    .get(&stream)
                    .is_some_and(|s| s.session == key && s.conn.is_none());
                if belongs {
                    return self.resume(now, conn, stream, seq, headers);
                }
            }
            log::debug!("{conn}: Last-Event-ID {last} names no stream of this session to resume");
        }
        let get_open = self
            .sessions
            .get(&key)
            .and_then(|s| s.get_stream)
            .is_some_and(|st| self.streams.get(&st).is_some_and(|s| s.conn.is_some()));
        if get_open {
            return Err(reject(
                409,
                codes::INVALID_REQUEST,
                "mcp-relay: this session already has an open GET stream",
            ));
        }
        // A GET stream without a connection (dropped earlier) is replaced.
        if let Some(old) = self
            .sessions
            .get_mut(&key)
            .and_then(|s| s.get_stream.take())
        {
            self.drop_stream(old);
        }
        let stream = self.new_stream(
            key,
            StreamKind::Get,
            Some(conn),
            version.as_str() >= "2025-11-25",
        );
        if let Some(st) = self.streams.get_mut(&stream) {
            st.extra_headers = headers;
        }
        if let Some(s) = self.sessions.get_mut(&key) {
            s.get_stream = Some(stream);
        }
        self.start_sse(stream);
        let pending: Vec<Vec<u8>> = self
            .sessions
            .get_mut(&key)
            .map(|s| {
                s.pending_bytes = 0;
                s.pending.drain(..).collect()
            })
            .unwrap_or_default();
        for msg in pending {
            self.stream_send(stream, msg, false);
        }
        self.flush_conn(conn);
        Ok(())
    }

    fn resume(
        &mut self,
        now: Instant,
        conn: ConnId,
        stream: StreamId,
        after: u64,
        headers: Vec<(&'static str, String)>,
    ) -> Result<(), Reject> {
        let Some(st) = self.streams.get_mut(&stream) else {
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
            if let Some(s) = self.sessions.get_mut(&key) {
                s.get_stream = Some(stream);
            }
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnState::Busy(stream);
        }
        self.attach_conn(conn, key);
        self.start_sse(stream);
        if let (Some(st), Some(c)) = (self.streams.get(&stream), self.conns.get_mut(&conn)) {
            let mut replayed = 0;
            // The replay buffer holds the stream's latest events, without a gap; older ones
            // (and one too large to keep) are gone, and a client resuming before them does not
            // get them.
            let first = st.replay.front().map_or(st.seq + 1, |(seq, _)| *seq);
            if first > after + 1 && st.seq > after {
                log::warn!(
                    "{conn}: resuming stream {} after event {after}: events {} to {} are no longer in the replay buffer ({} bytes at most) and are not sent again",
                    stream.0,
                    after + 1,
                    first - 1,
                    self.config.http.replay_buffer
                );
            }
            for (_, e) in st.replay.iter().filter(|(seq, _)| *seq > after) {
                stage_chunk(&mut c.out, e);
                replayed += 1;
            }
            log::debug!(
                "{conn}: resuming stream {} after event {after}: {replayed} event(s) replayed",
                stream.0
            );
        }
        if self.streams.get(&stream).is_some_and(|s| s.done) {
            self.end_stream(now, stream);
        }
        self.flush_conn(conn);
        Ok(())
    }

    fn delete(
        &mut self,
        conn: ConnId,
        head: &Head,
        token: Grant,
        cors: &[(&'static str, String)],
    ) -> Result<(), Reject> {
        let key = self.session_for(head, token, false)?;
        self.sessions_deleted += 1;
        self.end_session_by_client(key, "the client deleted it");
        let h: Vec<(&str, &str)> = cors.iter().map(|(n, v)| (*n, v.as_str())).collect();
        self.respond(conn, 200, &h, None, b"", false);
        Ok(())
    }

    fn legacy_open(
        &mut self,
        now: Instant,
        conn: ConnId,
        token: Grant,
        named: bool,
        cors: &[(&'static str, String)],
    ) -> Result<(), Reject> {
        let key = self.new_session(now, conn, true, token, "2024-11-05")?;
        let id = self
            .sessions
            .get(&key)
            .map(|s| s.id.clone())
            .unwrap_or_default();
        let stream = self.new_stream(key, StreamKind::Legacy, Some(conn), false);
        if let Some(st) = self.streams.get_mut(&stream) {
            st.extra_headers = cors.to_vec();
            // Not part of the legacy transport: a load balancer learns the session from it
            // (HAProxy's `stick store-response`), as it does for Streamable HTTP.
            st.extra_headers.push(("Mcp-Session-Id", id.clone()));
        }
        if let Some(s) = self.sessions.get_mut(&key) {
            s.get_stream = Some(stream);
        }
        self.start_sse(stream);
        // Posts go to the same server's `/messages`.
        let base = match self.routes.iter().find(|r| r.server == token.server) {
            Some(r) if named => format!("/servers/{}", r.name),
            _ => String::new(),
        };
        let endpoint = wire::sse_event(
            None,
            Some("endpoint"),
            format!("{base}/messages?sessionId={id}").as_bytes(),
        );
        self.write_chunk(conn, &endpoint);
        self.flush_conn(conn);
        Ok(())
    }

    fn legacy_post(
        &mut self,
        now: Instant,
        conn: ConnId,
        head: &Head,
        body: Vec<u8>,
        token: Grant,
        cors: &[(&'static str, String)],
    ) -> Result<(), Reject> {
        let key = self.session_for(head, token, true)?;
        let body = trim_owned(body);
        if let Message::Single(e) = classify_body(&body)? {
            if matches!(e.kind, Kind::Invalid | Kind::Heartbeat) {
                return Err(reject(
                    400,
                    codes::INVALID_REQUEST,
                    "mcp-relay: invalid JSON-RPC message",
                ));
            }
        }
        if let Some(s) = self.sessions.get_mut(&key) {
            s.last_activity = now;
            self.timers.set(
                HttpTimer::Session(key),
                Some((now + self.config.http.session_timeout, IDLE_SESSION)),
            );
        }
        self.check_room(key, body.len())?;
        let ack = Ack {
            conn,
            headers: cors.to_vec(),
            content_type: Some("text/plain"),
            body: b"Accepted",
        };
        self.submit(key, body, Some(ack));
        Ok(())
    }

    // ---- client messages on their way to the server ----

    /// Refuses a message while the session's server side takes no input and what already
    /// waits for it is at `--max-buffered`: the client is told to come back (503).
    fn check_room(&self, key: HttpKey, len: usize) -> Result<(), Reject> {
        let Some(s) = self.sessions.get(&key) else {
            return Ok(());
        };
        let full = !s.parked.is_empty() && s.parked_bytes + len > self.config.max_buffered;
        if !full {
            return Ok(());
        }
        let mut r = reject(
            503,
            codes::SERVER_UNAVAILABLE,
            format!(
                "mcp-relay: the server has not read this session's last {} bytes yet (--max-buffered); try again later",
                s.parked_bytes
            ),
        );
        r.headers.push(("Retry-After", "1".into()));
        Err(r)
    }

    /// Hands a client message to the relay for the session's server, or parks it until the
    /// server side takes input (its `ack`, if any, waits with it).
    fn submit(&mut self, key: HttpKey, body: Vec<u8>, ack: Option<Ack>) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if s.ready && s.parked.is_empty() {
            s.ready = false;
            self.release(key, Parked { body, ack });
            return;
        }
        s.parked_bytes += body.len();
        if let Some(c) = ack.as_ref().and_then(|a| self.conns.get_mut(&a.conn)) {
            c.state = ConnState::Parked;
        }
        s.parked.push_back(Parked { body, ack });
    }

    fn release(&mut self, key: HttpKey, p: Parked) {
        if let Some(ack) = p.ack {
            let parked = self
                .conns
                .get(&ack.conn)
                .is_some_and(|c| matches!(c.state, ConnState::Parked | ConnState::Head));
            if parked {
                let h: Vec<(&str, &str)> =
                    ack.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                self.respond(ack.conn, 202, &h, ack.content_type, ack.body, false);
                self.after_response(ack.conn);
            }
        }
        self.events
            .push_back(HttpEvent::Message { key, body: p.body });
    }

    /// The relay's word on whether the session's server side takes input now. When it
    /// does, the oldest parked message goes.
    pub(crate) fn set_ready(&mut self, now: Instant, key: HttpKey, ready: bool) {
        self.now = now;
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        s.ready = ready;
        if !ready {
            return;
        }
        if let Some(p) = s.parked.pop_front() {
            s.parked_bytes -= p.body.len();
            s.ready = false;
            self.release(key, p);
        }
    }

    // ---- streams ----

    fn start_sse(&mut self, stream: StreamId) {
        let Some(st) = self.streams.get_mut(&stream) else {
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
        *self.responses.entry(200).or_default() += 1;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.out.stage(&head);
            if let Some(req) = c.req.as_mut() {
                req.set_status(200);
                req.session_from_headers(headers.iter().copied());
            }
        }
        if priming {
            // An event id with empty data primes the client's Last-Event-ID; `retry` says how
            // soon to come back if the connection drops.
            let mut e = b"retry: 1000\n".to_vec();
            e.extend_from_slice(&wire::sse_event(Some(&prime_id), None, b""));
            self.write_chunk(conn, &e);
        }
        if self.next_keepalive.is_none() {
            self.next_keepalive = Some(self.now + self.config.http.sse_keepalive);
        }
    }

    /// Writes `data` as one chunk of the connection's body, straight into its output.
    fn write_chunk(&mut self, conn: ConnId, data: &[u8]) {
        if let Some(c) = self.conns.get_mut(&conn) {
            stage_chunk(&mut c.out, data);
        }
    }

    fn flush_conn(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.out.flush(&mut self.out);
        }
    }

    /// Sends one message on a stream; `last` ends it.
    fn stream_send(&mut self, stream: StreamId, msg: Vec<u8>, last: bool) {
        let Some(st) = self.streams.get_mut(&stream) else {
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
                    stateless::status_for(&msg)
                } else {
                    200
                };
                let key = st.session;
                st.done = true;
                self.finish_stream(stream);
                let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                self.respond_body(
                    conn,
                    status,
                    &h,
                    Some("application/json"),
                    Body::Owned(msg),
                    false,
                );
                self.released(key, stream);
                self.after_response(conn);
                return;
            }
        }
        if st.conn.is_some() && !st.sse {
            // The head (and a priming event) go first, so that event numbers follow it.
            self.start_sse(stream);
        }
        let Some(st) = self.streams.get_mut(&stream) else {
            return;
        };
        st.seq += 1;
        // Legacy HTTP+SSE events have no id: nothing can resume them, so none is kept.
        let legacy = st.kind == StreamKind::Legacy;
        let id = (!legacy).then(|| format!("{}-{}", stream.0, st.seq));
        let prefix = wire::sse_event_prefix(id.as_deref(), legacy.then_some("message"));
        if !legacy {
            keep_for_replay(st, stream, &prefix, &msg, self.config.http.replay_buffer);
        }
        if last {
            st.done = true;
        }
        let conn = st.conn;
        let key = st.session;
        if let Some(conn) = conn {
            self.start_sse(stream);
            if let Some(c) = self.conns.get_mut(&conn) {
                let len = prefix.len() + msg.len() + wire::SSE_EVENT_END.len();
                let size = wire::chunk_size_line(len);
                if msg.len() >= HAND_OVER {
                    // A large message goes out as it is, between its framing: no copy of it.
                    c.out.stage_parts(&[&size, &prefix]);
                    c.out.stage_owned(msg, &mut self.out);
                    c.out.stage_parts(&[wire::SSE_EVENT_END, b"\r\n"]);
                } else {
                    // The chunk is staged in one pass: the message is copied once.
                    c.out
                        .stage_parts(&[&size, &prefix, &msg, wire::SSE_EVENT_END, b"\r\n"]);
                }
            }
            if last {
                self.end_stream(self.now, stream);
            }
            self.flush_conn(conn);
        }
        if last {
            self.released(key, stream);
        }
    }

    /// A request on this stream was cancelled: it waits no more, and a stream left with
    /// nothing to wait for ends (an empty event stream, if nothing was sent yet).
    fn cancelled(&mut self, key: HttpKey, stream: StreamId, id: &RawId) {
        let Some(st) = self.streams.get_mut(&stream) else {
            return;
        };
        st.waiting.retain(|w| w != id);
        if !st.waiting.is_empty() || st.done {
            return;
        }
        st.done = true;
        if st.conn.is_some() && !st.sse {
            self.start_sse(stream);
        }
        self.end_stream(self.now, stream);
        self.released(key, stream);
    }

    /// A stream got its last answer: a pool child serving it is free again.
    fn released(&mut self, key: HttpKey, stream: StreamId) {
        let pool_busy = self
            .sessions
            .get(&key)
            .is_some_and(|s| s.pool && s.busy == Some(stream));
        if pool_busy {
            self.pool_release(self.now, key, None);
        }
    }

    /// Ends an SSE stream on its connection; the connection then serves its next request.
    fn end_stream(&mut self, _now: Instant, stream: StreamId) {
        let Some(st) = self.streams.get(&stream) else {
            return;
        };
        let conn = st.conn;
        let sse = st.sse;
        self.finish_stream(stream);
        if let Some(conn) = conn {
            if let Some(c) = self.conns.get_mut(&conn) {
                if sse {
                    let mut end = Vec::new();
                    wire::last_chunk(&mut end);
                    c.out.stage(&end);
                }
                c.out.flush(&mut self.out);
                if let Some(req) = c.req.take() {
                    req.finish(conn, c.peer, c.out.staged_total(), self.now);
                }
                if c.close_after || c.eof {
                    self.close_conn(conn);
                } else {
                    c.state = ConnState::Head;
                    self.after_response(conn);
                }
            }
        }
    }

    /// A complete stream is forgotten unless a client may still resume it.
    fn finish_stream(&mut self, stream: StreamId) {
        let Some(st) = self.streams.get(&stream) else {
            return;
        };
        let (key, conn, sse) = (st.session, st.conn, st.sse);
        if let Some(s) = self.sessions.get_mut(&key) {
            // The session was busy until now, not idle.
            s.last_activity = self.now;
            self.timers.set(
                HttpTimer::Session(key),
                Some((self.now + self.config.http.session_timeout, IDLE_SESSION)),
            );
        }
        let Some(conn) = conn else {
            return;
        };
        match self.conns.get_mut(&conn) {
            // Its end is not written yet: keep it resumable until it is.
            Some(c) if sse && c.out.load() > 0 => c.flushing.push(stream),
            // The client closed its side: it may have left (see `handle_written`).
            Some(c) if sse && c.eof => self.keep_detached(stream),
            _ => self.drop_stream(stream),
        }
    }

    /// A finished event stream stays resumable without a connection, within the bound of
    /// detached streams per session.
    fn keep_detached(&mut self, stream: StreamId) {
        let Some(st) = self.streams.get_mut(&stream) else {
            return;
        };
        st.conn = None;
        st.sse = false;
        let key = st.session;
        self.bound_detached(key);
    }

    /// Drops a session's oldest detached POST streams past [`MAX_DETACHED_STREAMS`].
    fn bound_detached(&mut self, key: HttpKey) {
        let detached: Vec<StreamId> = self
            .sessions
            .get(&key)
            .map(|s| {
                s.streams
                    .iter()
                    .copied()
                    .filter(|x| {
                        self.streams
                            .get(x)
                            .is_some_and(|st| st.conn.is_none() && st.kind == StreamKind::Post)
                    })
                    .collect()
            })
            .unwrap_or_default();
        if detached.len() > MAX_DETACHED_STREAMS {
            for old in &detached[..detached.len() - MAX_DETACHED_STREAMS] {
                self.drop_stream(*old);
            }
        }
    }

    fn drop_stream(&mut self, stream: StreamId) {
        if let Some(st) = self.streams.remove(&stream) {
            if let Some(s) = self.sessions.get_mut(&st.session) {
                s.streams.retain(|x| *x != stream);
                if s.get_stream == Some(stream) {
                    s.get_stream = None;
                }
            }
        }
    }

    /// The connection finished a response: read its next request, if any.
    fn after_response(&mut self, conn: ConnId) {
        // Not now: this runs while a session's messages are being placed, and the next request
        // may be for that same session. It is read once the current input is handled.
        if !self.deferred.contains(&conn) {
            self.deferred.push_back(conn);
        }
    }

    /// Reads the next requests of connections whose response just ended.
    pub(crate) fn run_deferred(&mut self, now: Instant) {
        self.now = now;
        while let Some(conn) = self.deferred.pop_front() {
            self.read_next(now, conn);
        }
    }

    fn read_next(&mut self, now: Instant, conn: ConnId) {
        if self
            .conns
            .get(&conn)
            .is_some_and(|c| matches!(c.state, ConnState::Head))
        {
            self.process(now, conn);
        }
    }

    /// The connection carrying a stream is gone.
    fn detach(&mut self, now: Instant, stream: StreamId) {
        let Some(st) = self.streams.get_mut(&stream) else {
            return;
        };
        st.conn = None;
        st.sse = false;
        let key = st.session;
        match st.kind {
            StreamKind::Legacy => {
                // Legacy HTTP+SSE: the session lives as long as its stream.
                self.drop_stream(stream);
                self.end_session_by_client(key, "its event stream closed");
            }
            StreamKind::Get => {
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.last_activity = now;
                    self.timers.set(
                        HttpTimer::Session(key),
                        Some((now + self.config.http.session_timeout, IDLE_SESSION)),
                    );
                }
            }
            StreamKind::Post if st.stateless => {
                // 2026-07-28: closing the response stream cancels the request.
                let cancelled = (!st.done).then(|| st.waiting.first().cloned()).flatten();
                self.drop_stream(stream);
                self.listen_gone(stream);
                let busy = self
                    .sessions
                    .get(&key)
                    .is_some_and(|s| s.busy == Some(stream));
                if busy {
                    let why = "the client closed the response stream";
                    self.pool_release(now, key, cancelled.map(|id| (id, why)));
                }
            }
            StreamKind::Post => {
                if st.done {
                    self.drop_stream(stream);
                }
                // Not a cancellation in the session era: answers wait in the replay buffer.
                self.bound_detached(key);
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.last_activity = now;
                    self.timers.set(
                        HttpTimer::Session(key),
                        Some((now + self.config.http.session_timeout, IDLE_SESSION)),
                    );
                }
            }
        }
    }

    /// Puts each of a session's outgoing messages on its stream.
    pub(crate) fn deliver(
        &mut self,
        now: Instant,
        key: HttpKey,
        msgs: impl IntoIterator<Item = (Route, Vec<u8>)>,
    ) {
        self.now = now;
        for (route, msg) in msgs {
            self.route_message(key, route, msg);
        }
        self.update_load(key);
    }

    /// The relay will serve the session no more (its server is gone for good): its streams
    /// end and its id is forgotten.
    pub(crate) fn close_session(&mut self, now: Instant, key: HttpKey) {
        self.now = now;
        self.session_closed(key);
    }

    fn route_message(&mut self, key: HttpKey, route: Route, msg: Vec<u8>) {
        let Some(s) = self.sessions.get(&key) else {
            return;
        };
        if s.pool {
            // The bridge reads what a pool child says; the relay's own notes about the
            // session (restarts, cancellations it made) are not for modern clients.
            if !matches!(route, Route::Relay | Route::Cancelled(_)) && !msg.is_empty() {
                self.pool_message(key, msg);
            }
            return;
        }
        if s.legacy {
            if let Some(stream) = s.get_stream {
                self.stream_send(stream, msg, false);
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
            let Some(stream) = ids.iter().find_map(|id| waiting_for(&self.streams, id)) else {
                log::debug!("session: no stream waits for a batch of answers; dropped");
                return;
            };
            let last = match self.streams.get_mut(&stream) {
                Some(st) => {
                    st.waiting.retain(|w| !ids.contains(w));
                    st.waiting.is_empty()
                }
                None => false,
            };
            self.stream_send(stream, msg, last);
            return;
        }
        if let Route::Cancelled(id) = &route {
            if let Some(stream) = waiting_for(&self.streams, id) {
                self.cancelled(key, stream, id);
            }
            return;
        }
        let target = match &route {
            Route::Response(Some(id)) => {
                waiting_for(&self.streams, id).map(|st| (st, Some(id.clone())))
            }
            Route::FromServer {
                progress_token: Some(t),
            } => {
                // Progress about a request no stream waits for any more goes nowhere.
                let Some(stream) = s
                    .progress
                    .get(t)
                    .and_then(|id| waiting_for(&self.streams, id))
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
                            self.streams.get(x).is_some_and(|st| {
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
                let last = match (answered, self.streams.get_mut(&stream)) {
                    (Some(id), Some(st)) => {
                        if let Some(at) = st.waiting.iter().position(|w| *w == id) {
                            st.waiting.remove(at);
                        }
                        st.waiting.is_empty()
                    }
                    _ => false,
                };
                if last {
                    if let Some(s) = self.sessions.get_mut(&key) {
                        s.progress
                            .retain(|_, r| waiting_for_any(&self.streams, &s.streams, r));
                    }
                }
                self.stream_send(stream, msg, last);
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
                    .filter(|g| self.streams.get(g).is_some_and(|st| st.conn.is_some()));
                match get {
                    Some(stream) => self.stream_send(stream, msg, false),
                    None => {
                        let limit = self.config.max_buffered;
                        if let Some(s) = self.sessions.get_mut(&key) {
                            s.pending_bytes += msg.len();
                            s.pending.push_back(msg);
                            while s.pending_bytes > limit {
                                match s.pending.pop_front() {
                                    Some(old) => {
                                        s.pending_bytes -= old.len();
                                        log::warn!("session {}…: no GET stream open and its buffer is full; dropped a message", short_id(&s.id));
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
    fn update_load(&mut self, key: HttpKey) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let conns = &self.conns;
        // Connections done with this session's bytes no longer count against it.
        s.conns.retain(|c| {
            conns
                .get(c)
                .is_some_and(|c| c.session == Some(key) && c.out.load() > 0)
        });
        let unwritten = s
            .conns
            .iter()
            .filter_map(|c| conns.get(c))
            .map(|c| c.out.load())
            .sum::<usize>();
        self.events.push_back(HttpEvent::Load {
            key,
            held: s.pending_bytes + unwritten,
            unwritten,
        });
    }

    /// The connection carries `key`'s bytes now: its unwritten output counts against the
    /// session, even after the stream that wrote it is gone.
    fn attach_conn(&mut self, conn: ConnId, key: HttpKey) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(key);
            if let (Some(req), Some(s)) = (c.req.as_mut(), self.sessions.get(&key)) {
                req.set_session(&s.id);
            }
        }
        if let Some(s) = self.sessions.get_mut(&key) {
            s.conns.insert(conn);
        }
    }

    /// The client ended the session (DELETE, expiry, its legacy stream closed).
    fn end_session_by_client(&mut self, key: HttpKey, why: &str) {
        if let Some(s) = self.sessions.get_mut(&key) {
            log::info!("session {}…: ended: {why}", short_id(&s.id));
            let id = s.id.clone();
            self.ids.remove(&id);
        }
        self.events.push_back(HttpEvent::Left { key });
    }

    /// A request of a session that ended gets 404 (its client then initializes anew).
    fn session_ended(&mut self, conn: ConnId) {
        let mut body = Vec::new();
        message::write_error(
            &mut body,
            None,
            codes::SERVER_UNAVAILABLE,
            "mcp-relay: the session ended",
        );
        self.respond(conn, 404, &[], Some("application/json"), &body, false);
        self.after_response(conn);
    }

    /// The session will not be served again: end its streams and forget its id.
    fn session_closed(&mut self, key: HttpKey) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        s.finished = true;
        let id = s.id.clone();
        let streams = s.streams.clone();
        let parked = std::mem::take(&mut s.parked);
        s.parked_bytes = 0;
        for ack in parked.into_iter().filter_map(|p| p.ack) {
            // Its message will reach no server: the client is told, as for a request.
            if self
                .conns
                .get(&ack.conn)
                .is_some_and(|c| matches!(c.state, ConnState::Parked))
            {
                self.session_ended(ack.conn);
            }
        }
        self.ids.remove(&id);
        for stream in streams {
            let (conn, sse) = match self.streams.get(&stream) {
                // A stream that got its last message already ended; its end may still be on
                // its way to the client (`flushing`), and must not be written twice.
                Some(st) if st.done && st.conn.is_some() => continue,
                Some(st) => (st.conn, st.sse),
                None => continue,
            };
            match conn {
                Some(conn) if !sse => {
                    // A POST that never got an answer: it gets one now.
                    self.drop_stream(stream);
                    self.session_ended(conn);
                }
                Some(_) => {
                    if let Some(st) = self.streams.get_mut(&stream) {
                        st.done = true;
                    }
                    self.end_stream(self.now, stream);
                }
                None => self.drop_stream(stream),
            }
        }
        let pool = self.sessions.remove(&key).is_some_and(|s| s.pool);
        self.timers.set(HttpTimer::Session(key), None);
        if pool {
            self.pool_child_gone(key);
            // What waited for it may go to another child.
            let now = self.now;
            self.pool_dispatch(now);
        }
    }

    // ---- time ----

    pub(crate) fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        let keepalive = self.next_keepalive.map(|d| (d, Timer::SseKeepalive));
        // A queued stateless request waits for a pool child resting after a cancellation.
        let rested = (!self.pool_queue.is_empty())
            .then(|| {
                self.sessions
                    .values()
                    .filter(|s| s.pool && !s.finished && s.busy.is_none())
                    .filter_map(|s| s.cooldown_until)
                    .min()
            })
            .flatten()
            .map(|d| (d, Timer::PoolRest));
        let evict = self.next_eviction().map(|d| (d, Timer::StatelessEvict));
        self.timers
            .first()
            .into_iter()
            .chain(keepalive)
            .chain(rested)
            .chain(evict)
            .min_by_key(|(d, _)| *d)
    }

    fn has_open_stream(&self, s: &HttpSession) -> bool {
        s.streams.iter().any(|x| {
            self.streams
                .get(x)
                .is_some_and(|st| st.conn.is_some() && !st.done)
        })
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if !self.pool_queue.is_empty() {
            self.pool_dispatch(now);
        }
        let mut expired_conns = Vec::new();
        let mut idle = Vec::new();
        let mut inputs = Vec::new();
        for timer in self.timers.due(now) {
            // An index entry may be stale: what it is about is checked again here.
            self.timers.set(timer, None);
            match timer {
                HttpTimer::Conn(conn) => {
                    let Some(c) = self.conns.get(&conn) else {
                        continue;
                    };
                    let reading = matches!(
                        c.state,
                        ConnState::Head | ConnState::Body { .. } | ConnState::Discard { .. }
                    );
                    match c.deadline {
                        Some(d) if reading && d <= now => expired_conns.push((
                            conn,
                            !c.inbuf.is_empty() || matches!(c.state, ConnState::Body { .. }),
                        )),
                        Some(d) if reading => {
                            self.timers.set(timer, Some((d, CONN_DEADLINE)));
                        }
                        _ => {}
                    }
                }
                HttpTimer::Input(key) => inputs.push(key),
                HttpTimer::Session(key) => {
                    let Some(s) = self.sessions.get(&key) else {
                        continue;
                    };
                    let at = s.last_activity + self.config.http.session_timeout;
                    if s.finished {
                        continue;
                    }
                    if self.has_open_stream(s) || self.bridge.holds(key) {
                        // Checked again a timeout later (the stream's end re-arms it too).
                        let at = now + self.config.http.session_timeout;
                        self.timers.set(timer, Some((at, IDLE_SESSION)));
                    } else if at <= now {
                        idle.push(key);
                    } else {
                        self.timers.set(timer, Some((at, IDLE_SESSION)));
                    }
                }
            }
        }
        for (conn, mid_request) in expired_conns {
            if mid_request {
                self.fail(
                    conn,
                    reject(
                        408,
                        codes::INVALID_REQUEST,
                        "mcp-relay: the request took too long to arrive (--header-timeout)",
                    ),
                    true,
                );
            } else {
                self.close_conn(conn);
            }
        }
        for key in inputs {
            self.input_timer(now, key);
        }
        for key in idle {
            self.sessions_expired += 1;
            if let Some(s) = self.sessions.get_mut(&key) {
                s.last_activity = now;
                self.timers.set(
                    HttpTimer::Session(key),
                    Some((now + self.config.http.session_timeout, IDLE_SESSION)),
                );
            }
            self.end_session_by_client(key, "idle for longer than --session-timeout");
        }
        if self.next_keepalive.is_some_and(|d| d <= now) {
            let targets: Vec<ConnId> = self
                .streams
                .values()
                .filter(|st| st.sse && !st.done)
                .filter_map(|st| st.conn)
                // (An immediate shutdown forgets connections under streams not yet done: a
                // stream on no connection gets no keep-alive, and keeps no timer alive.)
                .filter(|conn| self.conns.contains_key(conn))
                .collect();
            for conn in &targets {
                self.write_chunk(*conn, b": keep-alive\n\n");
                self.flush_conn(*conn);
            }
            self.next_keepalive =
                (!targets.is_empty()).then(|| now + self.config.http.sse_keepalive);
        }
    }

    /// Graceful shutdown: idle connections close now; busy ones after their response.
    pub(crate) fn shutdown(&mut self) {
        self.draining = true;
        self.close_listens();
        // Idle stateless children serve no one again; one holding a request for its retry
        // stays for it (and goes when the request is over).
        let idle: Vec<HttpKey> = self
            .sessions
            .iter()
            .filter(|(k, s)| s.pool && !s.finished && s.busy.is_none() && !self.bridge.holds(**k))
            .map(|(k, _)| *k)
            .collect();
        for key in idle {
            if let Some(s) = self.sessions.get_mut(&key) {
                s.finished = true;
            }
            self.end_session_by_client(key, "the relay is shutting down");
        }
        let conns: Vec<(ConnId, bool)> = self
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
                self.close_conn(conn);
            } else if let Some(c) = self.conns.get_mut(&conn) {
                c.close_after = true;
            }
        }
    }

    /// Immediate shutdown: every connection closes now, and no session is served again (none
    /// expires later either: the relay has killed their servers).
    pub(crate) fn abort(&mut self) {
        self.draining = true;
        for (key, s) in &mut self.sessions {
            s.finished = true;
            self.timers.set(HttpTimer::Session(*key), None);
        }
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.out.push_back(Output::Close {
                endpoint: Endpoint::Conn(conn),
            });
            self.forget_conn(conn);
        }
    }

    // ---- reports ----

    /// `/healthz` or `/metrics`: the relay writes the body; the connection waits for it.
    fn ask_report(&mut self, conn: ConnId, kind: ReportKind) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnState::Report;
        }
        self.events.push_back(HttpEvent::Report { conn, kind });
    }

    /// The relay's answer to [`HttpEvent::Report`].
    pub(crate) fn report(
        &mut self,
        now: Instant,
        conn: ConnId,
        status: u16,
        content_type: &str,
        body: &[u8],
    ) {
        self.now = now;
        if !self
            .conns
            .get(&conn)
            .is_some_and(|c| matches!(c.state, ConnState::Report))
        {
            return;
        }
        self.respond(
            conn,
            status,
            &[("Cache-Control", "no-store")],
            Some(content_type),
            body,
            false,
        );
        self.after_response(conn);
    }

    /// The HTTP layer's own counters, for `/metrics`.
    pub(crate) fn counters(&self) -> HttpCounters<'_> {
        HttpCounters {
            responses: &self.responses,
            sessions_expired: self.sessions_expired,
            sessions_deleted: self.sessions_deleted,
            awaiting_input: self.bridge.awaiting_input(),
            listens: self.bridge.listens(),
        }
    }
}

/// What the HTTP layer counts, for `/metrics`.
pub(crate) struct HttpCounters<'a> {
    /// Responses by status.
    pub(crate) responses: &'a BTreeMap<u16, u64>,
    pub(crate) sessions_expired: u64,
    pub(crate) sessions_deleted: u64,
    /// 2026-07-28 requests answered with `input_required` whose retry is awaited.
    pub(crate) awaiting_input: usize,
    /// Open `subscriptions/listen` streams.
    pub(crate) listens: usize,
}

/// A POST to `/mcp` sends JSON and takes JSON or an event stream.
fn check_post_media(head: &Head) -> Result<(), Reject> {
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
    Ok(())
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
    let origin = origin.to_ascii_lowercase();
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

/// Messages at least this large are handed to the driver as they are, in a write of their
/// own, rather than copied into the connection's output (where smaller ones are gathered).
const HAND_OVER: usize = 64 * 1024;

/// A response body: borrowed (copied when staged), or owned (a large one is not copied).
enum Body<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl Body<'_> {
    fn len(&self) -> usize {
        match self {
            Body::Borrowed(b) => b.len(),
            Body::Owned(b) => b.len(),
        }
    }
}

/// Stages `data` as one chunk of a chunked body (nothing for empty data, which would end it).
fn stage_chunk(out: &mut Outbound, data: &[u8]) {
    if !data.is_empty() {
        out.stage_parts(&[&wire::chunk_size_line(data.len()), data, b"\r\n"]);
    }
}

/// Keeps an event of a resumable stream (its `prefix`, `msg` and end) in the stream's replay
/// buffer, dropping its oldest events past `limit` bytes. An event larger than `limit` on its
/// own is not kept while the stream has a connection (it was just written there; keeping it
/// would hold a second copy of the whole message): the buffer then holds nothing before it
/// either, so that it stays a run of the stream's latest events. On a stream without a
/// connection it is the only copy and is kept (alone) for the client to resume.
fn keep_for_replay(st: &mut Stream, stream: StreamId, prefix: &[u8], msg: &[u8], limit: usize) {
    let len = prefix.len() + msg.len() + wire::SSE_EVENT_END.len();
    if len > limit && st.conn.is_some() {
        log::debug!(
            "stream {}: event {} of {len} bytes is larger than the replay buffer ({limit} bytes); not kept for resuming",
            stream.0,
            st.seq
        );
        st.replay.clear();
        st.replay_bytes = 0;
        return;
    }
    let mut event = Vec::with_capacity(len);
    event.extend_from_slice(prefix);
    event.extend_from_slice(msg);
    event.extend_from_slice(wire::SSE_EVENT_END);
    st.replay_bytes += len;
    st.replay.push_back((st.seq, event));
    while st.replay_bytes > limit && st.replay.len() > 1 {
        if let Some((_, e)) = st.replay.pop_front() {
            st.replay_bytes -= e.len();
        }
    }
}

/// A body without the whitespace around it, in place (no copy unless there is leading
/// whitespace, which is rare).
fn trim_owned(mut b: Vec<u8>) -> Vec<u8> {
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(0, |e| e + 1);
    b.truncate(end);
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    if start > 0 {
        b.drain(..start);
    }
    b
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
