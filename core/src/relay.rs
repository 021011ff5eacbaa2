//! The top-level machine: every client connection, its session and its child processes.

use crate::client::ClientSide;
use crate::http::{HttpConfig, HttpState};
use crate::pool::Warm;
use crate::session::{Ctx, Session};
use crate::supervisor::RestartPolicy;
use crate::supervisor::Supervisor;
use crate::timer::Timer;
use crate::Transport;
use crate::{ChildId, ConnId, Endpoint, Input, Output};
use core::net::SocketAddr;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// What the relay is configured to do. Plain data, validated by the caller.
#[derive(Clone, Debug)]
pub struct Config {
    /// Longest line (JSON-RPC message) accepted from either side, in bytes.
    pub max_message_size: usize,
    /// Bytes queued toward one slow reader before the relay stops reading from the other side.
    pub max_buffered: usize,
    /// The most bytes the driver hands in with one `Input::Data` (its read size). A loaded
    /// session keeps at most one such read unframed until it can go on.
    pub max_read: usize,
    /// Client requests waiting for an answer before the relay stops reading the client.
    pub max_in_flight: usize,
    /// Time between each step of a child's stop sequence: stdin closed, SIGTERM, SIGKILL.
    pub shutdown_grace: Duration,
    /// How the server is named in error messages and logs (usually its command line).
    pub server_label: String,
    /// Period of `heartbeat_response` messages to clients that asked for heartbeats; such a
    /// client silent for twice this long is considered gone.
    pub heartbeat_interval: Duration,
    /// Probe a server that has been quiet this long (`None`: never).
    pub ping_interval: Option<Duration>,
    /// How long a probe, a replayed `initialize` or a stalled stdin may take before the
    /// server is considered hung.
    pub ping_timeout: Duration,
    pub restart: RestartPolicy,
    /// Delay before the first restart; it doubles with each restart inside the window.
    pub restart_delay: Duration,
    /// The longest delay before a restart.
    pub max_restart_delay: Duration,
    /// Restarts allowed within `restart_window`; past that the session ends.
    pub max_restarts: u32,
    pub restart_window: Duration,
    /// The HTTP transports (used by connections accepted with [`Transport::Http`]).
    pub http: HttpConfig,
    /// Children kept started ahead of need, so that a new session does not wait for one.
    pub prespawn: usize,
    /// Seeds the generator of HTTP session ids. Give it 32 bytes of OS entropy in
    /// production (ids must be unguessable), and the test seed in simulation.
    pub seed: [u8; 32],
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_message_size: 16 * 1024 * 1024,
            max_buffered: 4 * 1024 * 1024,
            max_read: 64 * 1024,
            max_in_flight: 1024,
            shutdown_grace: Duration::from_secs(5),
            server_label: "server".into(),
            heartbeat_interval: Duration::from_secs(30),
            ping_interval: Some(Duration::from_secs(30)),
            ping_timeout: Duration::from_secs(10),
            restart: RestartPolicy::OnFailure,
            restart_delay: Duration::from_secs(1),
            max_restart_delay: Duration::from_secs(30),
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
            http: HttpConfig::default(),
            prespawn: 0,
            seed: [0; 32],
        }
    }
}

/// Counters for logs, health checks and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub sessions_open: usize,
    pub sessions_total: u64,
    pub children_spawned: u64,
    pub spawn_failures: u64,
    pub restarts: u64,
    pub messages_to_server: u64,
    pub messages_to_client: u64,
    pub dropped_server_lines: u64,
    pub oversize_messages: u64,
    pub heartbeat_failures: u64,
    pub bytes_to_server: u64,
    pub bytes_to_client: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shutdown {
    No,
    Draining,
    Immediate,
}

/// A session, named by the core. Never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SessionKey(pub(crate) u64);

/// The relay: sessions (one per TCP connection, or per HTTP session), each with its own
/// supervised child.
pub struct Relay {
    pub(crate) config: Config,
    pub(crate) sessions: BTreeMap<SessionKey, Session>,
    /// Each session's next deadline, indexed by time, so that neither `poll_timeout` nor
    /// `handle_timeout` walks every session.
    timers: BTreeSet<(Instant, SessionKey)>,
    timer_of: BTreeMap<SessionKey, (Instant, &'static str)>,
    /// The session of each TCP connection.
    tcp: BTreeMap<ConnId, SessionKey>,
    owner: BTreeMap<ChildId, SessionKey>,
    next_session: u64,
    pub(crate) next_child: u64,
    pub(crate) out: VecDeque<Output>,
    shutdown: Shutdown,
    stats: Stats,
    /// A moment and the Unix time (seconds) at it, for timestamps in messages.
    wall_clock: Option<(Instant, f64)>,
    pub(crate) http: HttpState,
    pub(crate) warm: Warm,
    /// The latest `now` handed in.
    pub(crate) last_now: Instant,
}

/// The context session code runs in, borrowed from the relay's fields one by one (so that a
/// session taken from `self.sessions` can be borrowed beside it).
macro_rules! ctx {
    ($relay:ident, $now:expr, $unix_now:expr) => {
        Ctx {
            now: $now,
            config: &$relay.config,
            out: &mut $relay.out,
            stats: &mut $relay.stats,
            unix_now: $unix_now,
            next_child: &mut $relay.next_child,
        }
    };
}

impl Relay {
    /// A relay whose clock starts at `now`.
    pub fn new(config: Config, now: Instant) -> Self {
        let warm = Warm::new(Supervisor::new(
            RestartPolicy::OnFailure,
            config.restart_delay,
            config.max_restart_delay,
            config.max_restarts,
            config.restart_window,
        ));
        Relay {
            http: HttpState::new(config.seed),
            warm,
            last_now: now,
            config,
            sessions: BTreeMap::new(),
            timers: BTreeSet::new(),
            timer_of: BTreeMap::new(),
            tcp: BTreeMap::new(),
            owner: BTreeMap::new(),
            next_session: 1,
            next_child: 1,
            out: VecDeque::new(),
            shutdown: Shutdown::No,
            stats: Stats::default(),
            wall_clock: None,
        }
    }

    // ---- getters ----

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn stats(&self) -> Stats {
        Stats {
            sessions_open: self.sessions.len(),
            ..self.stats.clone()
        }
    }

    /// The relay was asked to shut down and nothing is left: the driver may exit. After a
    /// second shutdown request this is true at once (every child was sent SIGKILL).
    pub fn is_finished(&self) -> bool {
        match self.shutdown {
            Shutdown::No => false,
            Shutdown::Draining => self.sessions.is_empty() && self.warm.is_empty(),
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

    /// Server processes running now.
    pub fn children_alive(&self) -> usize {
        self.sessions.values().filter(|s| s.server_alive()).count()
    }

    /// Client requests waiting for an answer, over all sessions.
    pub fn requests_in_flight(&self) -> usize {
        self.sessions.values().map(Session::in_flight).sum()
    }

    /// The most bytes one session may hold: two framers (a partial line and one unframed
    /// read each), two queues and the messages held during a restart, each at most its limit
    /// plus one message.
    pub fn buffer_bound(&self) -> usize {
        let c = &self.config;
        2 * (c.max_message_size + 1 + c.max_read) + 3 * (c.max_buffered + c.max_message_size + 1)
    }

    /// Client requests of a connection that wait for an answer.
    pub fn in_flight(&self, conn: ConnId) -> Option<usize> {
        self.tcp_session(conn).map(Session::in_flight)
    }

    /// The child currently serving a TCP connection.
    pub fn child_of(&self, conn: ConnId) -> Option<ChildId> {
        self.tcp_session(conn).map(Session::child_id)
    }

    fn tcp_session(&self, conn: ConnId) -> Option<&Session> {
        self.sessions.get(self.tcp.get(&conn)?)
    }

    /// Servers started ahead of need and waiting for a session.
    pub fn prespawned_idle(&self) -> usize {
        self.warm.idle_running()
    }

    // ---- mutators ----

    /// Starts what the relay keeps running before any client comes (`prespawn` children).
    /// Call once, then drain `poll_output`.
    pub fn start(&mut self, now: Instant) {
        self.last_now = now;
        self.pool_fill(now);
    }

    /// Anchors timestamps (heartbeats, restart notices): at `now` the Unix time is
    /// `unix_secs`. Without it they count from 0.
    pub fn set_wall_clock(&mut self, now: Instant, unix_secs: f64) {
        self.wall_clock = Some((now, unix_secs));
    }

    // ---- handle_* ----

    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.dispatch(now, input);
        self.http_run_deferred(now);
    }

    fn dispatch(&mut self, now: Instant, input: Input<'_>) {
        self.last_now = now;
        if let Some(conn) = http_conn(&input).filter(|c| self.http.has_conn(*c)) {
            match input {
                Input::Data { data, .. } => self.http_data(now, conn, data),
                Input::Eof { .. } => self.http_eof(now, conn),
                Input::Written { n, .. } => self.http_written(now, conn, n),
                Input::Broken { .. } => self.http_broken(now, conn),
                _ => {}
            }
            return;
        }
        if let Some(child) = child_of_input(&input).filter(|c| self.warm.contains(*c)) {
            match input {
                Input::Spawned { pid, .. } => self.pool_spawned(now, child, pid),
                Input::SpawnFailed { error, .. } => self.pool_spawn_failed(now, child, error),
                Input::Exited { status, .. } => self.pool_exited(now, child, status),
                Input::Eof { .. } => self.pool_stdout_eof(now, child),
                Input::Stderr { data, .. } => self.pool_stderr(child, data),
                Input::StderrEof { .. } => self.pool_stderr_eof(now, child),
                Input::Data { .. } => {
                    log::debug!("prespawned {child} said something before any client; dropped")
                }
                _ => {}
            }
            return;
        }
        match input {
            Input::Accepted {
                conn,
                local,
                peer,
                transport: Transport::Http,
            } => {
                if self.tcp.contains_key(&conn) || self.http.has_conn(conn) {
                    return;
                }
                self.http_accept(now, conn, local, peer)
            }
            Input::Accepted {
                conn, local, peer, ..
            } => self.accept(now, conn, local, peer),
            Input::Shutdown => self.begin_shutdown(now),
            Input::Data {
                from: Endpoint::Conn(conn),
                data,
            } => self.with_conn(now, conn, |s, ctx| s.client_data(data, ctx)),
            Input::Eof {
                from: Endpoint::Conn(conn),
            } => self.with_conn(now, conn, |s, ctx| s.client_eof(ctx)),
            Input::Written {
                to: Endpoint::Conn(conn),
                n,
            } => self.with_conn(now, conn, |s, ctx| s.client_written(n, ctx)),
            Input::Broken {
                endpoint: Endpoint::Conn(conn),
                reason,
            } => self.with_conn(now, conn, |s, ctx| s.client_broken(reason, ctx)),
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
        }
    }

    /// Fires every deadline at or before `now`. Harmless when nothing is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        if self.http_poll_timeout().is_some_and(|(d, _)| d <= now) {
            self.http_handle_timeout(now);
        }
        if self.warm.poll_timeout().is_some_and(|(d, _)| d <= now) {
            self.pool_handle_timeout(now);
        }
        let due: Vec<SessionKey> = self
            .timers
            .iter()
            .take_while(|(d, _)| *d <= now)
            .map(|(_, k)| *k)
            .collect();
        for key in due {
            self.with_session(now, key, |s, ctx| s.handle_timeout(ctx));
        }
        self.http_run_deferred(now);
    }

    // ---- poll_* ----

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_deadline().map(|(d, _)| d)
    }

    /// The next deadline and why it is set.
    pub fn next_deadline(&self) -> Option<(Instant, &'static str)> {
        self.timers
            .first()
            .and_then(|(_, k)| self.timer_of.get(k).copied())
            .into_iter()
            .chain(self.http_poll_timeout())
            .chain(self.warm.poll_timeout())
            .min_by_key(|(d, _)| *d)
    }

    // ---- internals ----

    fn accept(&mut self, now: Instant, conn: ConnId, local: SocketAddr, peer: SocketAddr) {
        if self.shutdown != Shutdown::No || self.tcp.contains_key(&conn) {
            log::info!("{conn}: refused (shutting down)");
            self.out.push_back(Output::Close {
                endpoint: Endpoint::Conn(conn),
            });
            return;
        }
        log::info!("{conn}: accepted from {peer} on {local}");
        let key = self.new_session_key();
        let client = ClientSide::tcp(conn, self.config.max_buffered);
        let session = self.new_session(now, format!("{conn} {peer}"), client);
        self.add_session(key, session);
        self.tcp.insert(conn, key);
        self.with_session(now, key, |_, _| {});
    }

    /// A session with a prespawned child if one waits, else a child started now.
    pub(crate) fn new_session(
        &mut self,
        now: Instant,
        label: String,
        client: ClientSide,
    ) -> Session {
        match self.pool_take(now) {
            Some(child) => self.with_ctx(now, |ctx| Session::with_child(label, client, child, ctx)),
            None => self.with_ctx(now, |ctx| Session::new(label, client, ctx)),
        }
    }

    pub(crate) fn stats_mut(&mut self) -> &mut Stats {
        &mut self.stats
    }

    pub(crate) fn new_session_key(&mut self) -> SessionKey {
        let key = SessionKey(self.next_session);
        self.next_session += 1;
        key
    }

    pub(crate) fn add_session(&mut self, key: SessionKey, session: Session) {
        self.stats.sessions_total += 1;
        self.owner.insert(session.child_id(), key);
        let deadline = session.poll_timeout(&self.config);
        self.sessions.insert(key, session);
        self.set_timer(key, deadline);
    }

    /// Records a session's next deadline in the index.
    fn set_timer(&mut self, key: SessionKey, deadline: Option<(Instant, Timer)>) {
        if let Some((old, _)) = self.timer_of.remove(&key) {
            self.timers.remove(&(old, key));
        }
        if let Some((at, why)) = deadline {
            self.timers.insert((at, key));
            self.timer_of.insert(key, (at, why.as_str()));
        }
    }

    pub(crate) fn shutting_down(&self) -> bool {
        self.shutdown != Shutdown::No
    }

    /// Runs `f` with a context for session code that has no session yet.
    pub(crate) fn with_ctx<T>(&mut self, now: Instant, f: impl FnOnce(&mut Ctx<'_>) -> T) -> T {
        let unix_now = self.unix_at(now);
        let mut ctx = ctx!(self, now, unix_now);
        f(&mut ctx)
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
            log::info!(
                "shutting down: draining {} session(s); send the signal again to stop at once",
                self.sessions.len()
            );
            self.out.push_back(Output::StopAccepting);
            self.http_shutdown();
        }
        self.pool_stop(now, immediate);
        if immediate {
            self.http_abort();
        }
        let keys: Vec<SessionKey> = self.sessions.keys().copied().collect();
        for key in keys {
            self.with_session(now, key, |s, ctx| {
                if immediate {
                    s.abort(ctx)
                } else {
                    s.drain(ctx)
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

    /// Runs `f` on a session, then settles it, follows a change of child, and removes the
    /// session once nothing of it is left.
    pub(crate) fn with_session(
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
        let mut ctx = ctx!(self, now, unix_now);
        f(session, &mut ctx);
        session.settle(&mut ctx);
        // Over HTTP, delivering may unload the client side, which lets the session go on
        // (a backlog resumes, the child is read again): deliver and settle until nothing is
        // left to place. Bounded: a round that leaves the outbox empty ends it.
        if self.sessions.get(&key).is_some_and(Session::is_http) {
            for _ in 0..16 {
                self.http_deliver(key);
                let Some(session) = self.sessions.get_mut(&key) else {
                    return;
                };
                let mut ctx = ctx!(self, now, unix_now);
                session.settle(&mut ctx);
                if !session.has_outbox() {
                    break;
                }
            }
        }
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let after = session.child_id();
        if after != before {
            // The session released the old child when it started the new one.
            self.owner.remove(&before);
            self.owner.insert(after, key);
        }
        if session.is_done() {
            log::info!("{}: session ended", session.label());
            self.out.push_back(Output::Release { child: after });
            self.owner.remove(&after);
            self.sessions.remove(&key);
            self.tcp.retain(|_, k| *k != key);
            self.set_timer(key, None);
        } else {
            let deadline = session.poll_timeout(&self.config);
            self.set_timer(key, deadline);
        }
    }
}

/// The connection an input is about, if it is about one.
fn http_conn(input: &Input<'_>) -> Option<ConnId> {
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
