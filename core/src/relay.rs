//! The top-level machine: every client connection, its session and its child processes.

use crate::client::{ClientSide, HttpSide};
use crate::config::{Config, ConfigError, Stats};
use crate::conn::Connections;
use crate::deadlines::Deadlines;
use crate::http::{wire, HttpEvent, HttpKey, HttpServer, ReportKind};
use crate::message::{self, codes};
use crate::outbound::Outbound;
use crate::served::Served;
use crate::session::{Ctx, Session};
use crate::timer::Timer;
use crate::Transport;
use crate::{ChildId, ConnId, Endpoint, Input, Output, ServerId};
use core::net::SocketAddr;
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shutdown {
    No,
    Draining,
    Immediate,
}

/// How much longer than the message it answers a message the relay makes can be (its error
/// text; found by the fuzzer with a 64-byte `max_message_size`).
const RELAY_MESSAGE_OVERHEAD: usize = 512;

/// How many times `handle_timeout` fires what is due before it gives up on a deadline that
/// keeps coming back (a bug, logged as an error; the simulation fails on it).
const MAX_TIMEOUT_ROUNDS: usize = 8;

/// A session, named by the core. Never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SessionKey(pub(crate) u64);

/// The relay: the one top-level machine. It owns every session (a client side and a server
/// side), the HTTP server machine and the prespawn pool as values, drives them with the facts
/// the driver hands in, and drains what they produce before it returns.
pub struct Relay {
    config: Config,
    sessions: BTreeMap<SessionKey, Session>,
    /// Each session's next deadline, indexed by time, so that neither `poll_timeout` nor
    /// `handle_timeout` walks every session.
    timers: Deadlines<SessionKey, Timer>,
    /// Every client connection, and the one place their bytes pass through.
    conns: Connections,
    /// The session of each TCP connection.
    tcp: BTreeMap<ConnId, SessionKey>,
    /// Connections refused past a limit, until their error is written and they are closed.
    refused: BTreeMap<ConnId, Outbound>,
    /// The session behind each HTTP session, and back.
    by_http: BTreeMap<HttpKey, SessionKey>,
    http_of: BTreeMap<SessionKey, HttpKey>,
    /// The session each child serves.
    owner: BTreeMap<ChildId, SessionKey>,
    next_session: u64,
    next_child: u64,
    out: VecDeque<Output>,
    shutdown: Shutdown,
    stats: Stats,
    /// A moment and the Unix time (seconds) at it, for timestamps in messages.
    wall_clock: Option<(Instant, f64)>,
    http: HttpServer,
    /// The configured servers: their settings and prespawned children. Retired ones stay
    /// until their last session ends.
    servers: BTreeMap<ServerId, Served>,
    /// The name of every server there has been (a TCP listener names an id for good).
    server_names: BTreeMap<ServerId, String>,
    /// The latest `now` handed in.
    last_now: Instant,
    /// Listeners that cannot accept now (the driver's word).
    accept_trouble: usize,
    /// The last start of a server failed, with this error (cleared by the next that works).
    spawn_trouble: Option<String>,
    /// The session of the relay's own stdin and stdout (client mode): when it ends, the
    /// relay shuts down.
    stdio: Option<SessionKey>,
}

/// The context session code runs in, borrowed from the relay's fields one by one (so that a
/// session taken from `self.sessions` can be borrowed beside it).
macro_rules! ctx {
    ($relay:ident, $server:expr, $now:expr, $unix_now:expr) => {
        Ctx {
            now: $now,
            server: $server,
            config: $relay
                .servers
                .get(&$server)
                .map_or(&$relay.config, |s| &s.config),
            out: &mut $relay.out,
            stats: &mut $relay.stats,
            unix_now: $unix_now,
            next_child: &mut $relay.next_child,
        }
    };
}

impl Relay {
    /// A relay whose clock starts at `now`; refuses a configuration that
    /// [`Config::validate`] refuses.
    pub fn new(config: Config, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Relay {
            http: HttpServer::new(&config, now),
            server_names: config
                .served()
                .into_iter()
                .enumerate()
                .map(|(i, named)| (ServerId(i as u32), named.name))
                .collect(),
            servers: config
                .served()
                .into_iter()
                .enumerate()
                .map(|(i, named)| {
                    let id = ServerId(i as u32);
                    (id, Served::new(id, named))
                })
                .collect(),
            last_now: now,
            config,
            sessions: BTreeMap::new(),
            timers: Deadlines::default(),
            conns: Connections::default(),
            tcp: BTreeMap::new(),
            refused: BTreeMap::new(),
            by_http: BTreeMap::new(),
            http_of: BTreeMap::new(),
            owner: BTreeMap::new(),
            next_session: 1,
            next_child: 1,
            out: VecDeque::new(),
            shutdown: Shutdown::No,
            stats: Stats::default(),
            wall_clock: None,
            accept_trouble: 0,
            spawn_trouble: None,
            stdio: None,
        })
    }

    // ---- getters ----

    /// The configuration the relay runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters since the start.
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats.clone();
        stats.sessions_open = self.sessions.len();
        for w in self.servers.values().map(|s| &s.warm) {
            stats.children_spawned += w.spawned;
            stats.spawn_failures += w.spawn_failures;
            stats.outputs_abandoned += w.outputs_abandoned;
            stats.prespawn_given_up += u64::from(w.given_up());
        }
        stats
    }

    /// The relay was asked to shut down and nothing is left: the driver may exit. After a
    /// second shutdown request this is true at once (every child was sent SIGKILL).
    pub fn is_finished(&self) -> bool {
        match self.shutdown {
            Shutdown::No => false,
            Shutdown::Draining => {
                self.sessions.is_empty() && self.servers.values().all(|s| s.warm.is_empty())
            }
            Shutdown::Immediate => true,
        }
    }

    /// Bytes the relay holds for one connection: its session's framers and queues (TCP), or
    /// its request and response buffers (HTTP).
    pub fn buffered(&self, conn: ConnId) -> Option<usize> {
        self.tcp_session(conn)
            .map(Session::buffered)
            .or_else(|| self.http.buffered(conn))
    }

    /// Server processes running now, prespawned ones included.
    pub fn children_alive(&self) -> usize {
        self.sessions.values().filter(|s| s.server_alive()).count() + self.prespawned_idle()
    }

    /// Client requests waiting for an answer, over all sessions.
    pub fn requests_in_flight(&self) -> usize {
        self.sessions.values().map(Session::in_flight).sum()
    }

    /// The most bytes one session may hold: two framers (a partial line and one unframed
    /// read each), two queues and the messages held during a restart, each at most its limit
    /// plus one message — a peer's, or one the relay made itself (an error, which names the
    /// id it answers and so can be a little longer than the longest message it answers).
    pub fn buffer_bound(&self) -> usize {
        let c = &self.config;
        // An error about starting the server names it, and the start's error names its program.
        let relay_text = RELAY_MESSAGE_OVERHEAD + 2 * c.server_label.len();
        let message = c.max_message_size + 1 + relay_text;
        2 * (c.max_message_size + 1 + c.max_read) + 3 * (c.max_buffered + message)
    }

    /// Client requests of a connection that wait for an answer.
    pub fn in_flight(&self, conn: ConnId) -> Option<usize> {
        self.tcp_session(conn).map(Session::in_flight)
    }

    /// The child currently serving a TCP connection.
    pub fn child_of(&self, conn: ConnId) -> Option<ChildId> {
        self.tcp_session(conn).map(Session::child_id)
    }

    /// The `Mcp-Session-Id` of the HTTP session a child serves (or will serve, once started).
    pub fn http_session_of(&self, child: ChildId) -> Option<&str> {
        let key = self.owner.get(&child)?;
        self.http.session_id(*self.http_of.get(key)?)
    }

    fn tcp_session(&self, conn: ConnId) -> Option<&Session> {
        self.sessions.get(self.tcp.get(&conn)?)
    }

    /// Servers started ahead of need and waiting for a session.
    pub fn prespawned_idle(&self) -> usize {
        self.servers.values().map(|s| s.warm.idle_running()).sum()
    }

    // ---- mutators ----

    /// Starts what the relay keeps running before any client comes (`prespawn` children).
    /// Call once, then drain `poll_output`.
    pub fn start(&mut self, now: Instant) {
        self.last_now = now;
        for s in self.servers.values_mut() {
            s.warm.fill(now, &mut self.next_child);
        }
        self.drain_warm();
        self.drain(now);
    }

    /// Anchors timestamps (heartbeats, restart notices): at `now` the Unix time is
    /// `unix_secs`. Without it they count from 0.
    pub fn set_wall_clock(&mut self, now: Instant, unix_secs: f64) {
        self.wall_clock = Some((now, unix_secs));
    }

    // ---- handle_* ----

    /// A fact from the outside. Drain [`Relay::poll_output`] after it.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.last_now = now;
        self.dispatch(now, input);
        self.drain(now);
    }

    fn dispatch(&mut self, now: Instant, input: Input<'_>) {
        match &input {
            Input::Spawned { .. } => self.spawn_trouble = None,
            Input::SpawnFailed { error, .. } => self.spawn_trouble = Some((*error).to_owned()),
            _ => {}
        }
        if let Some(conn) = conn_of(&input) {
            return self.conn_input(now, conn, input);
        }
        let prespawned = child_of_input(&input).and_then(|c| {
            self.servers
                .values_mut()
                .find(|s| s.warm.contains(c))
                .map(|s| (c, s))
        });
        if let Some((child, served)) = prespawned {
            let warm = &mut served.warm;
            match input {
                Input::Spawned { pid, .. } => warm.handle_spawned(now, child, pid),
                Input::SpawnFailed { error, .. } => warm.handle_spawn_failed(now, child, error),
                Input::Exited { status, .. } => warm.handle_exited(now, child, status),
                Input::Eof { .. } => warm.handle_stdout_eof(now, child),
                Input::Broken { .. } => warm.handle_stdin_broken(now, child),
                Input::Stderr { data, .. } => warm.handle_stderr(child, data),
                Input::StderrEof { .. } => warm.handle_stderr_eof(now, child),
                Input::Data { .. } => {
                    log::debug!("prespawned {child} said something before any client; dropped")
                }
                _ => {}
            }
            return self.drain_warm();
        }
        match input {
            Input::Accepted {
                conn,
                local,
                peer,
                transport,
                server,
            } => {
                if self.conns.contains(conn) {
                    return;
                }
                if self.conns.len() >= self.config.max_connections {
                    let why = format!(
                        "mcp-relay: too many connections ({}, --max-connections); try again later",
                        self.conns.len()
                    );
                    log::warn!("{conn}: refused from {peer}: {why}");
                    return self.refuse(conn, transport, &why);
                }
                self.conns.open(conn, transport);
                match transport {
                    Transport::Http => self.http.handle_accept(now, conn, local, peer),
                    Transport::Tcp => self.accept(now, conn, local, peer, server),
                }
            }
            Input::Attached { conn } => {
                if self.conns.contains(conn) || self.stdio.is_some() {
                    return;
                }
                self.conns.open(conn, Transport::Tcp);
                log::info!("{conn}: serving the local client on stdin and stdout");
                let client = ClientSide::tcp(conn, self.config.max_buffered);
                let server = self.default_server();
                let session = self.new_session(now, server, "stdio".to_owned(), client);
                let key = self.add_session(session);
                self.tcp.insert(conn, key);
                self.stdio = Some(key);
                self.http.set_other_sessions(self.tcp.len());
                self.with_session(now, key, |_, _| {});
            }
            Input::Connected { conn } => {
                self.with_child(now, conn.server, |s, ctx| s.upstream_connected(conn, ctx))
            }
            Input::ConnectFailed { conn, error } => self.with_child(now, conn.server, |s, ctx| {
                s.upstream_connect_failed(conn, error, ctx)
            }),
            Input::Data {
                from: Endpoint::Upstream(up),
                data,
            } => self.with_child(now, up.server, |s, ctx| s.upstream_data(up, data, ctx)),
            Input::Eof {
                from: Endpoint::Upstream(up),
            } => self.with_child(now, up.server, |s, ctx| s.upstream_eof(up, ctx)),
            Input::Written {
                to: Endpoint::Upstream(up),
                n,
            } => self.with_child(now, up.server, |s, ctx| s.upstream_written(up, n, ctx)),
            Input::Broken {
                endpoint: Endpoint::Upstream(up),
                reason,
            } => self.with_child(now, up.server, |s, ctx| s.upstream_broken(up, reason, ctx)),
            Input::Shutdown => self.begin_shutdown(now),
            Input::Reconfigure { servers } => self.reconfigure(now, servers),
            Input::AcceptTrouble { listeners } => self.accept_trouble = listeners,
            Input::RemoteToken { token } => self.remote_token(now, token),
            Input::Data {
                from: Endpoint::Child(child),
                data,
            } => self.with_child(now, child, |s, ctx| s.child_data(child, data, ctx)),
            Input::Eof {
                from: Endpoint::Child(child),
            } => self.with_child(now, child, |s, ctx| s.child_eof(child, ctx)),
            Input::Written {
                to: Endpoint::Child(child),
                n,
            } => self.with_child(now, child, |s, ctx| s.child_written(child, n, ctx)),
            Input::Broken {
                endpoint: Endpoint::Child(child),
                reason,
            } => self.with_child(now, child, |s, ctx| {
                s.child_stdin_broken(child, reason, ctx)
            }),
            Input::Stderr { child, data } => {
                self.with_child(now, child, |s, _| s.stderr(child, data))
            }
            Input::StderrEof { child } => self.with_child(now, child, |s, _| s.stderr_eof(child)),
            Input::Spawned { child, pid } => {
                self.with_child(now, child, |s, ctx| s.spawned(child, pid, ctx))
            }
            Input::SpawnFailed { child, error } => {
                self.with_child(now, child, |s, ctx| s.spawn_failed(child, error, ctx))
            }
            Input::Exited { child, status } => {
                self.with_child(now, child, |s, ctx| s.exited(child, status, ctx))
            }
            // Handled by `conn_input` above.
            Input::Data { .. }
            | Input::Eof { .. }
            | Input::Written { .. }
            | Input::Broken { .. } => {}
        }
    }

    /// A fact about a client connection: through the connection layer to what speaks over it.
    fn conn_input(&mut self, now: Instant, conn: ConnId, input: Input<'_>) {
        if let Some(out) = self.refused.get_mut(&conn) {
            match input {
                Input::Written { n, .. } => out.written(n, &mut self.out),
                Input::Broken { .. } => out.set_gone(),
                _ => {}
            }
            if out.is_finished() {
                self.refused.remove(&conn);
            }
            return;
        }
        let http = self.conns.transport(conn) == Some(Transport::Http);
        match input {
            Input::Data { data, .. } => {
                let data = self.conns.incoming(conn, data);
                if http {
                    self.http.handle_data(now, conn, data)
                } else {
                    self.with_conn(now, conn, |s, ctx| s.client_data(data, ctx))
                }
            }
            Input::Eof { .. } if http => self.http.handle_eof(now, conn),
            Input::Eof { .. } => self.with_conn(now, conn, |s, ctx| s.client_eof(ctx)),
            Input::Written { n, .. } => {
                let n = self.conns.written(conn, n);
                if http {
                    self.http.handle_written(now, conn, n)
                } else {
                    self.with_conn(now, conn, |s, ctx| s.client_written(n, ctx))
                }
            }
            Input::Broken { reason, .. } => {
                self.conns.broken(conn);
                if http {
                    self.http.handle_broken(now, conn)
                } else {
                    self.with_conn(now, conn, |s, ctx| s.client_broken(reason, ctx))
                }
            }
            _ => {}
        }
    }

    /// Fires every deadline at or before `now`. Harmless when nothing is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        // What one machine's deadline does may make another's due at once (a session the HTTP
        // server expires stops a server whose stdin has long stalled): fire again until
        // nothing is due. Bounded: each round acts on what was due, and little can be due
        // again at the same instant.
        for _ in 0..MAX_TIMEOUT_ROUNDS {
            if self.http.poll_timeout().is_some_and(|(d, _)| d <= now) {
                self.http.handle_timeout(now);
            }
            for s in self.servers.values_mut() {
                if s.warm.poll_timeout().is_some_and(|(d, _)| d <= now) {
                    s.warm.handle_timeout(now, &mut self.next_child);
                }
            }
            self.drain_warm();
            self.drain_retired(now);
            for key in self.timers.due(now) {
                self.with_session(now, key, |s, ctx| s.handle_timeout(ctx));
            }
            self.drain(now);
            if self.poll_timeout().is_none_or(|d| d > now) {
                return;
            }
        }
        if let Some((_, why)) = self.next_deadline().filter(|(d, _)| *d <= now) {
            log::error!("a deadline stays due after {MAX_TIMEOUT_ROUNDS} rounds: {why}");
        }
    }

    // ---- poll_* ----

    /// The next effect to perform, in order; `None` once all are handed out.
    pub fn poll_output(&mut self) -> Option<Output> {
        let output = self.out.pop_front()?;
        Some(self.conns.outgoing(output))
    }

    /// When the relay next wants [`Relay::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_deadline().map(|(d, _)| d)
    }

    /// The next deadline and why it is set.
    pub fn next_deadline(&self) -> Option<(Instant, Timer)> {
        self.timers
            .first()
            .into_iter()
            .chain(self.http.poll_timeout())
            .chain(self.servers.values().filter_map(Served::poll_timeout))
            .min_by_key(|(d, _)| *d)
    }

    // ---- driving the sub-machines ----

    /// Takes what the HTTP server and the pool produced, and does what the HTTP server asks
    /// of the sessions, until neither has anything left. Bounded: every event comes from
    /// input already handed in, and the sessions' answers to it are delivered once.
    fn drain(&mut self, now: Instant) {
        loop {
            self.http.run_deferred(now);
            while let Some(event) = self.http.poll_event() {
                self.http_event(now, event);
            }
            while let Some(o) = self.http.poll_output() {
                self.out.push_back(o);
            }
            if !self.http.has_work() {
                break;
            }
        }
    }

    /// The pool's effects join the relay's at once, so that child ids reach the driver in the
    /// order they were named.
    fn drain_warm(&mut self) {
        for s in self.servers.values_mut() {
            while let Some(o) = s.warm.poll_output() {
                self.out.push_back(o);
            }
        }
        self.forget_retired();
    }

    fn http_event(&mut self, now: Instant, event: HttpEvent) {
        match event {
            HttpEvent::Opened { key, label, server } => {
                let session =
                    self.new_session(now, server, label, ClientSide::Http(HttpSide::default()));
                let skey = self.add_session(session);
                self.by_http.insert(key, skey);
                self.http_of.insert(skey, key);
                self.with_session(now, skey, |_, _| {});
            }
            HttpEvent::Message { key, body } => {
                if let Some(skey) = self.by_http.get(&key).copied() {
                    self.with_session(now, skey, |s, ctx| s.client_message(&body, ctx));
                }
            }
            HttpEvent::Left { key } => {
                if let Some(skey) = self.by_http.get(&key).copied() {
                    self.with_session(now, skey, |s, ctx| s.client_leaves(ctx));
                }
            }
            HttpEvent::Load {
                key,
                held,
                unwritten,
            } => {
                let limit = self.config.max_buffered;
                let Some(skey) = self.by_http.get(&key).copied() else {
                    return;
                };
                if let Some(ClientSide::Http(side)) =
                    self.sessions.get_mut(&skey).map(Session::client_side)
                {
                    side.held_by_streams = held;
                    // Messages waiting for a GET stream no client may ever open do not hold
                    // the server back: their buffer drops its oldest when full.
                    if unwritten > limit {
                        side.loaded = true;
                    } else if unwritten <= limit / 2 {
                        side.loaded = false;
                    }
                }
                self.with_session(now, skey, |_, _| {});
            }
            HttpEvent::Report { conn, kind } => {
                let (status, content_type, body) = match kind {
                    ReportKind::Health => {
                        let (status, body) = self.health();
                        (status, "application/json", body)
                    }
                    ReportKind::Metrics => (200, "text/plain; version=0.0.4", self.metrics()),
                    ReportKind::Servers => (200, "application/json", self.servers_report()),
                    ReportKind::ServerHealth(id) => {
                        let (status, body) = self.server_health(id);
                        (status, "application/json", body)
                    }
                };
                self.http
                    .report(now, conn, status, content_type, body.as_bytes());
            }
        }
    }

    // ---- internals ----

    fn accept(
        &mut self,
        now: Instant,
        conn: ConnId,
        local: SocketAddr,
        peer: SocketAddr,
        server: Option<ServerId>,
    ) {
        if self.shutdown != Shutdown::No {
            log::info!("{conn}: refused (shutting down)");
            self.out.push_back(Output::Close {
                endpoint: Endpoint::Conn(conn),
            });
            return;
        }
        let open = self.tcp.len() + self.http.sessions_open();
        if open >= self.config.http.max_sessions {
            let why =
                format!("mcp-relay: too many sessions ({open}, --max-sessions); try again later");
            log::warn!("{conn}: refused from {peer}: {why}");
            return self.refuse(conn, Transport::Tcp, &why);
        }
        log::info!("{conn}: accepted from {peer} on {local}");
        let client = ClientSide::tcp(conn, self.config.max_buffered);
        let server = server.unwrap_or_else(|| self.default_server());
        let session = self.new_session(now, server, format!("{conn} {peer}"), client);
        let key = self.add_session(session);
        self.tcp.insert(conn, key);
        self.http.set_other_sessions(self.tcp.len());
        self.with_session(now, key, |_, _| {});
    }

    /// Answers a connection the relay will not serve with an error it can read (a JSON-RPC
    /// error line, or an HTTP `503`), then closes it.
    fn refuse(&mut self, conn: ConnId, transport: Transport, why: &str) {
        self.stats.connections_refused += 1;
        let mut bytes = Vec::new();
        match transport {
            Transport::Tcp => {
                message::write_error(&mut bytes, None, codes::SERVER_UNAVAILABLE, why);
                bytes.push(b'\n');
            }
            Transport::Http => {
                let mut body = Vec::new();
                message::write_error(&mut body, None, codes::SERVER_UNAVAILABLE, why);
                bytes = wire::response_head(
                    503,
                    &[("Retry-After", "5")],
                    Some("application/json"),
                    body.len(),
                    true,
                );
                bytes.extend_from_slice(&body);
            }
        }
        // Closed once the error is written, so that the client can read it.
        let mut out = Outbound::new(Endpoint::Conn(conn), true, bytes.len());
        out.stage(&bytes);
        out.close_when_flushed(&mut self.out);
        if !out.is_finished() {
            self.refused.insert(conn, out);
        }
    }

    /// A session with a prespawned child if one waits, else a child started now (or, in
    /// client mode, a remote chosen by `--balance`).
    fn new_session(
        &mut self,
        now: Instant,
        server: ServerId,
        label: String,
        client: ClientSide,
    ) -> Session {
        let server = self.current(server);
        let mut load = BTreeMap::new();
        for s in self.sessions.values().filter(|s| s.served_by() == server) {
            if let Some(i) = s.remote_index() {
                *load.entry(i).or_insert(0usize) += 1;
            }
        }
        let (index, child) = match self.servers.get_mut(&server) {
            Some(s) => (
                s.pick_remote(now, |i| load.get(&i).copied().unwrap_or(0)),
                s.warm.take(now),
            ),
            None => (0, None),
        };
        match child {
            Some(child) => self.with_ctx(now, server, |ctx| {
                Session::with_child(label, client, child, ctx)
            }),
            None => self.with_ctx(now, server, |ctx| Session::new(label, client, index, ctx)),
        }
    }

    /// The server `/mcp`, TCP listeners and the relay's own stdio reach: the default one, or
    /// the first.
    fn default_server(&self) -> ServerId {
        let live = || self.servers.values().filter(|s| !s.retired);
        live()
            .find(|s| s.default)
            .or_else(|| live().next())
            .map_or(ServerId(0), |s| s.id)
    }

    /// The server a new session asked for `id` gets: that one, or, if it was retired, the
    /// one that now has its name (a TCP listener names the server it was started with), or
    /// the default one.
    fn current(&self, id: ServerId) -> ServerId {
        if self.servers.get(&id).is_some_and(|s| !s.retired) {
            return id;
        }
        let name = self.server_names.get(&id);
        self.servers
            .values()
            .find(|s| !s.retired && Some(&s.name) == name)
            .map_or_else(|| self.default_server(), |s| s.id)
    }

    /// `Input::Reconfigure`: servers added, kept and retired.
    fn reconfigure(&mut self, now: Instant, servers: &[(ServerId, crate::NamedServer)]) {
        for s in self.servers.values_mut() {
            if !s.retired && !servers.iter().any(|(id, _)| *id == s.id) {
                log::info!(
                    "{}: retired by the new configuration; its {} session(s) go on until they end",
                    s.display_name(),
                    self.sessions
                        .values()
                        .filter(|x| x.served_by() == s.id)
                        .count()
                );
                s.retire(now);
            }
        }
        for (id, named) in servers {
            match self.servers.get_mut(id) {
                Some(s) if !s.retired => s.default = named.default,
                Some(_) => log::warn!("{id}: a retired server's id given again; ignored"),
                None => {
                    self.server_names.insert(*id, named.name.clone());
                    let mut s = Served::new(*id, named.clone());
                    log::info!("{}: added by the new configuration", s.display_name());
                    if self.shutdown == Shutdown::No {
                        s.warm.fill(now, &mut self.next_child);
                    }
                    self.servers.insert(*id, s);
                }
            }
        }
        // The routes are those of the list, less an id it named that was retired before.
        let live: Vec<(ServerId, crate::NamedServer)> = servers
            .iter()
            .filter(|(id, _)| self.servers.get(id).is_some_and(|s| !s.retired))
            .cloned()
            .collect();
        self.http.set_routes(&live);
        self.drain_warm();
        self.forget_retired();
    }

    /// Drains the sessions of retired servers whose `--retire-timeout` is over.
    fn drain_retired(&mut self, now: Instant) {
        let due: Vec<ServerId> = self
            .servers
            .values_mut()
            .filter_map(|s| s.drain_due(now).then_some(s.id))
            .collect();
        for id in due {
            let keys: Vec<SessionKey> = self
                .sessions
                .iter()
                .filter(|(_, s)| s.served_by() == id)
                .map(|(k, _)| *k)
                .collect();
            if let Some(s) = self.servers.get(&id) {
                log::info!(
                    "{}: retired {:?} ago; draining its {} session(s) that are left",
                    s.display_name(),
                    s.config.retire_timeout.unwrap_or_default(),
                    keys.len()
                );
            }
            for key in keys {
                // Their time is up: requests in flight still get --drain-timeout.
                self.with_session(now, key, |s, ctx| s.drain(ctx, false));
            }
        }
    }

    /// Drops retired servers that nothing is left of.
    fn forget_retired(&mut self) {
        if !self.servers.values().any(|s| s.retired) {
            return;
        }
        let sessions = &self.sessions;
        let gone: Vec<ServerId> = self
            .servers
            .iter()
            .filter(|(id, s)| {
                s.retired && s.warm.is_empty() && !sessions.values().any(|x| x.served_by() == **id)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.servers.remove(&id);
            self.http.forget_route(id);
        }
    }

    fn add_session(&mut self, session: Session) -> SessionKey {
        let key = SessionKey(self.next_session);
        self.next_session += 1;
        self.stats.sessions_total += 1;
        if let Some(s) = self.servers.get_mut(&session.served_by()) {
            s.sessions_total += 1;
        }
        self.owner.insert(session.child_id(), key);
        let config = server_config(&self.servers, &self.config, session.served_by());
        let deadline = session.poll_timeout(config);
        self.sessions.insert(key, session);
        self.timers.set(key, deadline);
        key
    }

    /// Runs `f` with a context for session code that has no session yet.
    fn with_ctx<T>(
        &mut self,
        now: Instant,
        server: ServerId,
        f: impl FnOnce(&mut Ctx<'_>) -> T,
    ) -> T {
        let unix_now = self.unix_at(now);
        let mut ctx = ctx!(self, server, now, unix_now);
        f(&mut ctx)
    }

    /// A login's outcome reaches every session served by a remote.
    fn remote_token(&mut self, now: Instant, token: Result<&str, &str>) {
        // New sessions start with it.
        if let Ok(t) = token {
            for served in self.servers.values_mut() {
                if let Some(remote) = served.config.remote.as_mut() {
                    remote.set_bearer(t);
                }
            }
        }
        let keys: Vec<SessionKey> = self.sessions.keys().copied().collect();
        for key in keys {
            self.with_session(now, key, |s, ctx| s.remote_token(token, ctx));
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        let immediate = self.shutdown != Shutdown::No;
        self.shutdown = if immediate {
            Shutdown::Immediate
        } else {
            Shutdown::Draining
        };
        if immediate {
            log::warn!(
                "shutting down now: killing {} server(s)",
                self.sessions.len()
            );
        } else {
            let http = self.sessions.len() - self.tcp.len();
            let served = if http > 0 {
                format!("; {http} HTTP session(s) are served until their clients end them or then")
            } else {
                String::new()
            };
            log::info!(
                "shutting down: draining {} session(s) ({} request(s) in flight get up to {:?}, --drain-timeout{served}); send the signal again to stop at once",
                self.sessions.len(),
                self.requests_in_flight(),
                self.config.drain_timeout
            );
            self.out.push_back(Output::StopAccepting);
            self.http.shutdown();
        }
        for s in self.servers.values_mut() {
            s.warm.stop(now, immediate);
        }
        self.drain_warm();
        if immediate {
            self.http.abort();
        }
        let keys: Vec<SessionKey> = self.sessions.keys().copied().collect();
        for key in keys {
            self.with_session(now, key, |s, ctx| {
                if immediate {
                    s.abort(ctx)
                } else {
                    s.drain(ctx, true)
                }
            });
        }
    }

    fn unix_at(&self, now: Instant) -> f64 {
        match self.wall_clock {
            Some((at, unix)) if now >= at => unix + (now - at).as_secs_f64(),
            Some((at, unix)) => unix - (at - now).as_secs_f64(),
            None => 0.0,
        }
    }

    fn with_child(
        &mut self,
        now: Instant,
        child: ChildId,
        f: impl FnOnce(&mut Session, &mut Ctx<'_>),
    ) {
        if let Some(key) = self.owner.get(&child).copied() {
            self.with_session(now, key, f);
        }
    }

    fn with_conn(
        &mut self,
        now: Instant,
        conn: ConnId,
        f: impl FnOnce(&mut Session, &mut Ctx<'_>),
    ) {
        if let Some(key) = self.tcp.get(&conn).copied() {
            self.with_session(now, key, f);
        }
    }

    /// Runs `f` on a session, then settles it, hands what it has for an HTTP client to the
    /// HTTP server, follows a change of child, and removes the session once nothing of it
    /// is left.
    fn with_session(
        &mut self,
        now: Instant,
        key: SessionKey,
        f: impl FnOnce(&mut Session, &mut Ctx<'_>),
    ) {
        let unix_now = self.unix_at(now);
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let before = session.child_id();
        let server = session.served_by();
        let mut ctx = ctx!(self, server, now, unix_now);
        f(session, &mut ctx);
        session.settle(&mut ctx);
        if let Some(hkey) = self.http_of.get(&key).copied() {
            // What the session has for its HTTP client goes to the HTTP server now; what that
            // changes comes back as events (`drain`).
            if let ClientSide::Http(side) = session.client_side() {
                let msgs = std::mem::take(&mut side.outbox);
                let close = side.close_requested && !side.gone;
                if !msgs.is_empty() {
                    self.http.deliver(now, hkey, msgs);
                }
                if close {
                    self.http.close_session(now, hkey);
                    if let Some(s) = self.sessions.get_mut(&key) {
                        s.client_side().set_gone();
                    }
                } else if let Some(s) = self.sessions.get(&key) {
                    let config = server_config(&self.servers, &self.config, s.served_by());
                    self.http.set_ready(now, hkey, s.accepts_input(config));
                }
            }
        }
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        if let Some(index) = session.take_unreachable() {
            if let Some(s) = self.servers.get_mut(&session.served_by()) {
                s.remote_unreachable(index, now);
            }
        }
        let after = session.child_id();
        if after != before {
            // The session released the old child when it started the new one.
            self.owner.remove(&before);
            self.owner.insert(after, key);
        }
        if session.is_done() {
            log::info!("{}: session ended", session.label());
            if session.serves_by_process() {
                self.out.push_back(Output::Release { child: after });
            }
            self.owner.remove(&after);
            self.sessions.remove(&key);
            self.tcp.retain(|_, k| *k != key);
            self.http.set_other_sessions(self.tcp.len());
            if let Some(hkey) = self.http_of.remove(&key) {
                self.by_http.remove(&hkey);
            }
            self.timers.set(key, None);
            self.forget_retired();
            if self.stdio == Some(key) && self.shutdown == Shutdown::No {
                log::info!("the local client's session ended; shutting down");
                self.begin_shutdown(now);
            }
        } else {
            let config = server_config(&self.servers, &self.config, session.served_by());
            let deadline = session.poll_timeout(config);
            self.timers.set(key, deadline);
        }
    }

    // ---- reports ----

    /// `/healthz`: `ok`; `degraded` (and 503) while the relay cannot accept connections or
    /// its last attempt to start a server failed; `draining` (and 503) once it shuts down.
    fn health(&self) -> (u16, String) {
        let mut problems = Vec::new();
        if self.accept_trouble > 0 {
            problems.push(format!(
                "{} listener(s) cannot accept connections (out of file descriptors)",
                self.accept_trouble
            ));
        }
        if let Some(error) = &self.spawn_trouble {
            problems.push(format!("the server cannot be started: {error}"));
        }
        let status = if self.shutdown != Shutdown::No {
            // Draining: load balancers and orchestrators should send no new work here.
            problems.push("the relay is shutting down (draining)".to_owned());
            "draining"
        } else if problems.is_empty() {
            "ok"
        } else {
            "degraded"
        };
        let problems = serde_json::Value::from(problems);
        let body = format!(
            r#"{{"status":"{status}","problems":{problems},"sessions":{},"children_alive":{},"version":"{}"}}"#,
            self.sessions.len(),
            self.children_alive(),
            env!("CARGO_PKG_VERSION")
        );
        (if status == "ok" { 200 } else { 503 }, body)
    }

    /// `GET /servers`: each configured server, how it is reached and how it is doing.
    fn servers_report(&self) -> String {
        let servers: Vec<serde_json::Value> = self
            .servers
            .values()
            .map(|s| {
                let (transport, target) = match &s.config.remote {
                    Some(r) => (
                        r.transport.to_string(),
                        r.urls
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(" or "),
                    ),
                    // The program alone: its arguments may carry secrets.
                    None => (
                        "stdio".to_owned(),
                        s.config
                            .server_label
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                    ),
                };
                let sessions = self
                    .sessions
                    .values()
                    .filter(|x| x.served_by() == s.id)
                    .count();
                let (mcp, sse) = if s.name.is_empty() {
                    ("/mcp".to_owned(), "/sse".to_owned())
                } else {
                    (
                        format!("/servers/{}/mcp", s.name),
                        format!("/servers/{}/sse", s.name),
                    )
                };
                serde_json::json!({
                    "name": s.display_name(),
                    "default": s.default,
                    "transport": transport,
                    "server": target,
                    "mcp": mcp,
                    "sse": sse,
                    "sessions": sessions,
                    "prespawned": s.warm.idle_running(),
                    "prespawn_given_up": s.warm.given_up(),
                    "retired": s.retired,
                })
            })
            .collect();
        serde_json::json!({ "servers": servers }).to_string()
    }

    /// `/servers/NAME/healthz`: `ok`, or `degraded` (and 503) while the relay cannot accept
    /// connections or the server's prespawning gave up (its starts kept failing).
    fn server_health(&self, id: ServerId) -> (u16, String) {
        let Some(s) = self.servers.get(&id) else {
            return (404, r#"{"status":"unknown"}"#.to_owned());
        };
        let mut problems = Vec::new();
        if self.accept_trouble > 0 {
            problems.push(format!(
                "{} listener(s) cannot accept connections (out of file descriptors)",
                self.accept_trouble
            ));
        }
        if s.warm.given_up() {
            problems.push("its prespawned servers kept failing to start".to_owned());
        }
        let ok = problems.is_empty();
        let body = serde_json::json!({
            "server": s.display_name(),
            "status": if ok { "ok" } else { "degraded" },
            "problems": problems,
            "sessions": self.sessions.values().filter(|x| x.served_by() == id).count(),
            "children_alive": self
                .sessions
                .values()
                .filter(|x| x.served_by() == id && x.server_alive())
                .count()
                + s.warm.idle_running(),
        });
        (if ok { 200 } else { 503 }, body.to_string())
    }

    fn metrics(&self) -> String {
        let mut text = crate::report::metrics(
            &self.stats(),
            self.children_alive(),
            self.requests_in_flight(),
            &self.http.counters(),
        );
        if !self.config.servers.is_empty() {
            let per: Vec<crate::report::PerServer> = self
                .servers
                .values()
                .map(|s| {
                    let mine = || self.sessions.values().filter(|x| x.served_by() == s.id);
                    crate::report::PerServer {
                        name: &s.name,
                        sessions_open: mine().count(),
                        sessions_total: s.sessions_total,
                        children_alive: mine().filter(|x| x.server_alive()).count()
                            + s.warm.idle_running(),
                        requests_in_flight: mine().map(Session::in_flight).sum(),
                    }
                })
                .collect();
            crate::report::per_server(&mut text, &per);
        }
        text
    }
}

/// The connection an input is about, if it is about one.
fn conn_of(input: &Input<'_>) -> Option<ConnId> {
    match input {
        Input::Data {
            from: Endpoint::Conn(c),
            ..
        }
        | Input::Eof {
            from: Endpoint::Conn(c),
        }
        | Input::Written {
            to: Endpoint::Conn(c),
            ..
        }
        | Input::Broken {
            endpoint: Endpoint::Conn(c),
            ..
        } => Some(*c),
        _ => None,
    }
}

/// The child an input is about, if it is about one.
fn child_of_input(input: &Input<'_>) -> Option<ChildId> {
    match input {
        Input::Data {
            from: Endpoint::Child(c),
            ..
        }
        | Input::Eof {
            from: Endpoint::Child(c),
        }
        | Input::Written {
            to: Endpoint::Child(c),
            ..
        }
        | Input::Broken {
            endpoint: Endpoint::Child(c),
            ..
        }
        | Input::Stderr { child: c, .. }
        | Input::StderrEof { child: c }
        | Input::Spawned { child: c, .. }
        | Input::SpawnFailed { child: c, .. }
        | Input::Exited { child: c, .. } => Some(*c),
        _ => None,
    }
}

/// The configuration of server `id` (the relay's own, should it not exist).
fn server_config<'a>(
    servers: &'a BTreeMap<ServerId, Served>,
    relay: &'a Config,
    id: ServerId,
) -> &'a Config {
    servers.get(&id).map_or(relay, |s| &s.config)
}
