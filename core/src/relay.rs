//! The top-level machine: every client connection, its session and its child process.

use crate::child::Child;
use crate::framing::{Frame, LineFramer};
use crate::message::{self, classify, codes, ClassifyError, Kind, Message};
use crate::outbound::Outbound;
use crate::{ChildId, ConnId, Endpoint, ExitStatus, Input, Output};
use core::net::SocketAddr;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// What the relay is configured to do. Plain data, validated by the caller.
#[derive(Clone, Debug)]
pub struct Config {
    /// Longest line (JSON-RPC message) accepted from either side, in bytes.
    pub max_message_size: usize,
    /// Bytes queued toward one slow reader before the relay stops reading from the other side.
    pub max_buffered: usize,
    /// Time between each step of a child's stop sequence: stdin closed, SIGTERM, SIGKILL.
    pub shutdown_grace: Duration,
    /// How the server is named in error messages and logs (usually its command line).
    pub server_label: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_message_size: 16 * 1024 * 1024,
            max_buffered: 4 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(5),
            server_label: "server".into(),
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
    pub messages_to_server: u64,
    pub messages_to_client: u64,
    pub dropped_server_lines: u64,
    pub oversize_messages: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shutdown {
    No,
    Draining,
    Immediate,
}

/// The relay: one [`Session`] per accepted connection, each with its own child.
pub struct Relay {
    config: Config,
    sessions: BTreeMap<ConnId, Session>,
    owner: BTreeMap<ChildId, ConnId>,
    next_child: u64,
    out: VecDeque<Output>,
    shutdown: Shutdown,
    stats: Stats,
}

impl Relay {
    pub fn new(config: Config) -> Self {
        Relay {
            config,
            sessions: BTreeMap::new(),
            owner: BTreeMap::new(),
            next_child: 1,
            out: VecDeque::new(),
            shutdown: Shutdown::No,
            stats: Stats::default(),
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

    /// The relay was asked to shut down and nothing is left: the driver may exit.
    pub fn is_finished(&self) -> bool {
        match self.shutdown {
            Shutdown::No => false,
            Shutdown::Draining => self.sessions.is_empty(),
            Shutdown::Immediate => true,
        }
    }

    /// Bytes the relay holds for one connection's session (framers and queues), for the
    /// memory-bound invariant.
    pub fn buffered(&self, conn: ConnId) -> Option<usize> {
        self.sessions.get(&conn).map(Session::buffered)
    }

    /// The most bytes one session may hold: two framers, two queues.
    pub fn buffer_bound(&self) -> usize {
        2 * (self.config.max_message_size + 1)
            + 2 * (self.config.max_buffered + self.config.max_message_size + 1)
    }

    /// The child serving a connection, if any.
    pub fn child_of(&self, conn: ConnId) -> Option<ChildId> {
        self.sessions.get(&conn).map(|s| s.link.child.id)
    }

    // ---- handle_* ----

    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        match input {
            Input::Accepted { conn, local, peer } => self.accept(now, conn, local, peer),
            Input::Shutdown => self.begin_shutdown(now),
            Input::Data {
                from: Endpoint::Conn(conn),
                data,
            } => self.with_session(now, conn, |s, ctx| s.client_data(data, ctx)),
            Input::Eof {
                from: Endpoint::Conn(conn),
            } => self.with_session(now, conn, |s, ctx| s.client_eof(ctx)),
            Input::Written {
                to: Endpoint::Conn(conn),
                n,
            } => self.with_session(now, conn, |s, ctx| s.link.to_client.written(n, ctx.out)),
            Input::Broken {
                endpoint: Endpoint::Conn(conn),
                reason,
            } => self.with_session(now, conn, |s, ctx| s.client_broken(reason, ctx)),
            Input::Data {
                from: Endpoint::Child(child),
                data,
            } => self.with_child(now, child, |s, ctx| s.child_data(data, ctx)),
            Input::Eof {
                from: Endpoint::Child(child),
            } => self.with_child(now, child, |s, ctx| s.child_eof(ctx)),
            Input::Written {
                to: Endpoint::Child(child),
                n,
            } => self.with_child(now, child, |s, ctx| s.link.to_child.written(n, ctx.out)),
            Input::Broken {
                endpoint: Endpoint::Child(child),
                reason,
            } => self.with_child(now, child, |s, ctx| s.child_stdin_broken(reason, ctx)),
            Input::Stderr { child, data } => {
                self.with_child(now, child, |s, _| s.link.child.stderr(&s.link.label, data))
            }
            Input::StderrEof { child } => self.with_child(now, child, |s, _| {
                s.link.stderr_eof = true;
                s.link.child.stderr_eof(&s.link.label)
            }),
            Input::Spawned { child, pid } => {
                self.with_child(now, child, |s, ctx| s.spawned(pid, ctx))
            }
            Input::SpawnFailed { child, error } => {
                self.stats.spawn_failures += 1;
                self.with_child(now, child, |s, ctx| s.spawn_failed(error, ctx))
            }
            Input::Exited { child, status } => {
                self.with_child(now, child, |s, ctx| s.exited(status, ctx))
            }
        }
    }

    /// Fires every deadline at or before `now`. Harmless when nothing is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<ConnId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.poll_timeout().is_some_and(|(d, _)| d <= now))
            .map(|(c, _)| *c)
            .collect();
        for conn in due {
            self.with_session(now, conn, |s, ctx| s.handle_timeout(ctx));
        }
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
        self.sessions
            .values()
            .filter_map(Session::poll_timeout)
            .min_by_key(|(d, _)| *d)
    }

    // ---- internals ----

    fn accept(&mut self, now: Instant, conn: ConnId, local: SocketAddr, peer: SocketAddr) {
        if self.shutdown != Shutdown::No || self.sessions.contains_key(&conn) {
            self.out.push_back(Output::Close {
                endpoint: Endpoint::Conn(conn),
            });
            return;
        }
        let child = ChildId(self.next_child);
        self.next_child += 1;
        self.stats.sessions_total += 1;
        self.stats.children_spawned += 1;
        log::info!("{conn}: accepted from {peer} on {local}; starting {child}");
        let session = Session::new(conn, peer, child, &self.config, &mut self.out);
        self.owner.insert(child, conn);
        self.sessions.insert(conn, session);
        self.with_session(now, conn, |_, _| {});
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
        }
        let conns: Vec<ConnId> = self.sessions.keys().copied().collect();
        for conn in conns {
            self.with_session(now, conn, |s, ctx| {
                if immediate {
                    s.abort(ctx)
                } else {
                    s.drain(ctx)
                }
            });
        }
    }

    fn with_child(
        &mut self,
        now: Instant,
        child: ChildId,
        f: impl FnOnce(&mut Session, &mut Ctx<'_>),
    ) {
        if let Some(conn) = self.owner.get(&child).copied() {
            self.with_session(now, conn, f);
        }
    }

    /// Runs `f` on a session, then settles it: flushes its queues, advances its shutdown and
    /// removes it once nothing of it is left.
    fn with_session(
        &mut self,
        now: Instant,
        conn: ConnId,
        f: impl FnOnce(&mut Session, &mut Ctx<'_>),
    ) {
        let Some(session) = self.sessions.get_mut(&conn) else {
            return;
        };
        let mut ctx = Ctx {
            now,
            config: &self.config,
            out: &mut self.out,
            stats: &mut self.stats,
        };
        f(session, &mut ctx);
        session.settle(&mut ctx);
        if session.is_done() {
            log::info!("{}: session ended", session.link.label);
            let child = session.link.child.id;
            self.out.push_back(Output::Release { child });
            self.owner.remove(&child);
            self.sessions.remove(&conn);
        }
    }
}

/// What a session's handlers may touch besides the session.
struct Ctx<'a> {
    now: Instant,
    config: &'a Config,
    out: &'a mut VecDeque<Output>,
    stats: &'a mut Stats,
}

/// One client connection bridged to one child.
///
/// The framers sit apart from the rest ([`Link`]) so that the lines they hand out can be
/// acted on while they are borrowed.
struct Session {
    from_client: LineFramer,
    from_child: LineFramer,
    link: Link,
}

struct Link {
    label: String,
    /// Client → child stdin (source: the connection).
    to_child: Outbound,
    /// Child stdout → client (source: the child's stdout).
    to_client: Outbound,
    child: Child,
    client_eof: bool,
    stderr_eof: bool,
    /// When a session whose server could not start closes its connection anyway.
    linger_deadline: Option<Instant>,
    /// The client was told that no server will answer: close once that is written.
    told_unavailable: bool,
}

impl Session {
    fn new(
        conn: ConnId,
        peer: SocketAddr,
        child: ChildId,
        config: &Config,
        out: &mut VecDeque<Output>,
    ) -> Self {
        let child = Child::spawn(child, out);
        Session {
            from_client: LineFramer::new(config.max_message_size),
            from_child: LineFramer::new(config.max_message_size),
            link: Link {
                label: format!("{conn} {peer}"),
                to_child: Outbound::new(
                    Endpoint::Child(child.id),
                    Endpoint::Conn(conn),
                    false,
                    config.max_buffered,
                ),
                to_client: Outbound::new(
                    Endpoint::Conn(conn),
                    Endpoint::Child(child.id),
                    true,
                    config.max_buffered,
                ),
                child,
                client_eof: false,
                stderr_eof: false,
                linger_deadline: None,
                told_unavailable: false,
            },
        }
    }

    fn buffered(&self) -> usize {
        self.from_client.buffered()
            + self.from_child.buffered()
            + self.link.to_child.load()
            + self.link.to_client.load()
    }

    /// Nothing of the session is left: its connection is closed and its child reaped, with
    /// all its output read.
    fn is_done(&self) -> bool {
        let l = &self.link;
        l.to_client.is_finished()
            && l.child.is_gone()
            && l.child.output_done()
            && (l.stderr_eof || l.child.spawn_error().is_some())
    }

    fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        let linger = self.link.linger_deadline.map(|d| {
            (
                d,
                "session: closing a connection whose server could not start",
            )
        });
        [self.link.child.poll_timeout(), linger]
            .into_iter()
            .flatten()
            .min_by_key(|(d, _)| *d)
    }

    fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) {
        let l = &mut self.link;
        let was_done = l.child.output_done();
        l.child
            .handle_timeout(ctx.now, ctx.config.shutdown_grace, ctx.out);
        if !was_done && l.child.output_done() {
            // The drain deadline gave up on stdout (and stderr with it).
            l.stderr_eof = true;
            l.child_output_ended(ctx);
        }
        if l.linger_deadline.is_some_and(|d| d <= ctx.now) {
            l.linger_deadline = None;
            l.to_client.close_when_flushed(ctx.out);
        }
    }

    fn client_data(&mut self, data: &[u8], ctx: &mut Ctx<'_>) {
        let link = &mut self.link;
        if link.client_eof || link.to_client.is_finished() {
            return;
        }
        self.from_client.push(data, |frame| match frame {
            Frame::Line(line) => link.client_line(line, ctx),
            Frame::Oversize { len, id } => {
                ctx.stats.oversize_messages += 1;
                log::warn!(
                    "{}: dropped a {len}-byte message from the client (--max-message-size is {})",
                    link.label,
                    ctx.config.max_message_size
                );
                let msg = format!(
                    "mcp-relay: message of {len} bytes exceeds the limit of {} bytes (--max-message-size); it was not delivered to the server",
                    ctx.config.max_message_size
                );
                link.to_client.stage(&message::error_line(
                    id.as_ref().map(|i| i.as_str()),
                    codes::INVALID_REQUEST,
                    &msg,
                ));
            }
        });
    }

    fn child_data(&mut self, data: &[u8], ctx: &mut Ctx<'_>) {
        let link = &mut self.link;
        self.from_child.push(data, |frame| match frame {
            Frame::Line(line) => link.child_line(line, ctx),
            Frame::Oversize { len, id } => {
                ctx.stats.oversize_messages += 1;
                log::warn!(
                    "{}: dropped a {len}-byte message from the server (--max-message-size is {})",
                    link.label,
                    ctx.config.max_message_size
                );
                if let Some(id) = id {
                    let msg = format!(
                        "mcp-relay: the server's response of {len} bytes exceeds the limit of {} bytes (--max-message-size) and was dropped",
                        ctx.config.max_message_size
                    );
                    link.to_client.stage(&message::error_line(
                        Some(id.as_str()),
                        codes::RESPONSE_LOST,
                        &msg,
                    ));
                }
            }
        });
    }

    fn client_eof(&mut self, ctx: &mut Ctx<'_>) {
        if self.from_client.has_partial() {
            log::warn!(
                "{}: the client closed in the middle of a message; it was dropped",
                self.link.label
            );
        }
        self.link.client_eof(ctx);
    }

    fn child_eof(&mut self, ctx: &mut Ctx<'_>) {
        if self.from_child.has_partial() {
            log::warn!(
                "{}: the server closed stdout in the middle of a message; it was dropped",
                self.link.label
            );
        }
        self.link.child.stdout_eof();
        self.link.child_output_ended(ctx);
    }

    fn client_broken(&mut self, reason: &str, ctx: &mut Ctx<'_>) {
        log::info!("{}: connection lost: {reason}", self.link.label);
        let l = &mut self.link;
        l.to_client.set_gone(ctx.out);
        l.to_client.source_done();
        l.client_eof(ctx);
    }

    fn child_stdin_broken(&mut self, reason: &str, ctx: &mut Ctx<'_>) {
        let l = &mut self.link;
        log::warn!(
            "{}: the server stopped reading its stdin: {reason}",
            l.label
        );
        l.to_child.set_gone(ctx.out);
        l.to_child.source_done();
        l.child.stop(ctx.now, ctx.config.shutdown_grace);
    }

    fn spawned(&mut self, pid: u32, ctx: &mut Ctx<'_>) {
        let l = &mut self.link;
        log::info!("{}: server started as {} (pid {pid})", l.label, l.child.id);
        if l.child.spawned(pid) {
            l.child.stop(ctx.now, ctx.config.shutdown_grace);
        }
        l.to_child.open(ctx.out);
    }

    fn spawn_failed(&mut self, error: &str, ctx: &mut Ctx<'_>) {
        let l = &mut self.link;
        log::error!(
            "{}: could not start {}: {error}",
            l.label,
            ctx.config.server_label
        );
        l.child.spawn_failed(error);
        // Whatever the client already sent was waiting for the child: answer it now.
        let waiting = l.to_child.take_staged();
        l.to_child.set_gone(ctx.out);
        l.to_child.source_done();
        l.stderr_eof = true;
        for line in waiting.split(|b| *b == b'\n') {
            if !line.is_empty() {
                l.client_line(line, ctx);
            }
        }
        if !l.told_unavailable {
            l.linger_deadline = Some(ctx.now + ctx.config.shutdown_grace);
        }
    }

    fn exited(&mut self, status: ExitStatus, ctx: &mut Ctx<'_>) {
        let l = &mut self.link;
        if status.success() || l.child.pid().is_none() {
            log::info!("{}: server {} {status}", l.label, l.child.id);
        } else {
            log::warn!("{}: server {} {status}", l.label, l.child.id);
        }
        l.child
            .exited(status, ctx.now, ctx.config.shutdown_grace, ctx.out);
        l.to_child.set_gone(ctx.out);
        l.to_child.source_done();
    }

    /// Graceful shutdown: no more client input; the child gets end of file on stdin and its
    /// remaining output still reaches the client.
    fn drain(&mut self, ctx: &mut Ctx<'_>) {
        let l = &mut self.link;
        if !l.client_eof && !l.to_client.is_finished() {
            ctx.out.push_back(Output::Pause {
                endpoint: Endpoint::Conn(l.conn()),
            });
        }
        l.client_eof(ctx);
    }

    /// Immediate shutdown: kill the child, drop the connection.
    fn abort(&mut self, ctx: &mut Ctx<'_>) {
        let l = &mut self.link;
        l.child.kill(ctx.out);
        if !l.to_client.is_finished() {
            ctx.out.push_back(Output::Close {
                endpoint: Endpoint::Conn(l.conn()),
            });
        }
        l.to_client.set_gone(ctx.out);
        l.to_client.source_done();
        l.to_child.set_gone(ctx.out);
        l.to_child.source_done();
        l.client_eof = true;
        l.stderr_eof = true;
        l.child.abandon_output();
    }

    /// After every event: hand out what was staged and move the session toward its end.
    fn settle(&mut self, ctx: &mut Ctx<'_>) {
        let l = &mut self.link;
        l.to_child.flush(ctx.out);
        l.to_client.flush(ctx.out);
        if l.child.spawn_error().is_some() && (l.told_unavailable || l.client_eof) {
            l.to_client.close_when_flushed(ctx.out);
        }
    }
}

impl Link {
    fn conn(&self) -> ConnId {
        match self.to_client.sink() {
            Endpoint::Conn(c) => c,
            // The session's client queue is built with a connection as its sink.
            Endpoint::Child(_) => unreachable!("to_client always sinks into a connection"),
        }
    }

    fn client_line(&mut self, line: &[u8], ctx: &mut Ctx<'_>) {
        let msg = match classify(line) {
            Ok(msg) => msg,
            Err(ClassifyError::NotJson(e)) => {
                let text = format!("mcp-relay: parse error: {e}");
                self.to_client
                    .stage(&message::error_line(None, codes::PARSE_ERROR, &text));
                return;
            }
            Err(ClassifyError::NotAMessage) => {
                self.to_client.stage(&message::error_line(
                    None,
                    codes::INVALID_REQUEST,
                    "mcp-relay: invalid request: a JSON-RPC message is an object (or an array of them)",
                ));
                return;
            }
        };
        if let Message::Single(e) = &msg {
            if e.kind == Kind::Invalid {
                self.to_client.stage(&message::error_line(
                    e.id.map(|i| i.get()),
                    codes::INVALID_REQUEST,
                    "mcp-relay: invalid request: not a JSON-RPC request, notification or response",
                ));
                return;
            }
        }
        if self.to_child.accepts() {
            ctx.stats.messages_to_server += 1;
            self.to_child.stage_line(line);
            return;
        }
        // No server will read this: answer every request in it.
        let why = self.unavailable_reason(ctx.config);
        let answer = match &msg {
            Message::Single(e) if e.kind == Kind::Request => {
                e.id.map(|id| message::error_line(Some(id.get()), codes::SERVER_UNAVAILABLE, &why))
            }
            Message::Batch(entries) => {
                let mut body = Vec::new();
                for e in entries.iter().filter(|e| e.kind == Kind::Request) {
                    body.push(if body.is_empty() { b'[' } else { b',' });
                    message::write_error(
                        &mut body,
                        e.id.map(|i| i.get()),
                        codes::SERVER_UNAVAILABLE,
                        &why,
                    );
                }
                (!body.is_empty()).then(|| {
                    body.extend_from_slice(b"]\n");
                    body
                })
            }
            _ => None,
        };
        if let Some(answer) = answer {
            self.to_client.stage(&answer);
            self.told_unavailable = true;
        }
    }

    fn unavailable_reason(&self, config: &Config) -> String {
        let mut why = String::from("mcp-relay: ");
        if let Some(error) = self.child.spawn_error() {
            let _ = write!(
                why,
                "could not start the server ({}): {error}",
                config.server_label
            );
        } else if let Some(status) = self.child.exit_status() {
            let _ = write!(why, "the server {status}");
        } else {
            why.push_str("the server is shutting down");
        }
        why
    }

    fn child_line(&mut self, line: &[u8], ctx: &mut Ctx<'_>) {
        let forward = match classify(line) {
            Ok(Message::Single(e)) => e.kind != Kind::Invalid,
            Ok(Message::Batch(_)) => true,
            Err(_) => false,
        };
        if forward {
            ctx.stats.messages_to_client += 1;
            self.to_client.stage_line(line);
        } else {
            ctx.stats.dropped_server_lines += 1;
            let shown = String::from_utf8_lossy(&line[..line.len().min(200)]);
            log::warn!(
                "{}: dropped a line from the server's stdout that is not a JSON-RPC message: {shown}",
                self.label
            );
        }
    }

    fn client_eof(&mut self, ctx: &mut Ctx<'_>) {
        if self.client_eof {
            return;
        }
        self.client_eof = true;
        self.to_child.source_done();
        self.to_child.close_when_flushed(ctx.out);
        self.child.stop(ctx.now, ctx.config.shutdown_grace);
    }

    /// The child's stdout is done: flush to the client, then close; stop the child.
    fn child_output_ended(&mut self, ctx: &mut Ctx<'_>) {
        self.to_client.source_done();
        self.to_client.close_when_flushed(ctx.out);
        self.to_child.close_when_flushed(ctx.out);
        self.child.stop(ctx.now, ctx.config.shutdown_grace);
    }
}
