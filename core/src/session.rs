//! One client and the supervised server that serves it.
//!
//! A session has a client side (`ClientSide`: a TCP connection or an HTTP outbox) and a
//! server side (`ServerSide`: a child process today). It forwards messages both ways and
//! keeps the few facts that let it survive its server: the client's requests in flight (each
//! gets exactly one answer, from the server or from the relay), the client's `initialize` and
//! the state it set up (replayed to a replacement), the server's requests to the client, the
//! heartbeat with the client and the liveness probe of the server. Restarts, replay,
//! in-flight answers, liveness and the restart budget are written against `ServerSide`
//! only: replacing a child and reconnecting to a remote are the same machinery.

use crate::child::Child;
use crate::client::{ClientSide, Route};
use crate::config::{Config, Stats};
use crate::framing::{Flow, Frame, LineFramer};
use crate::message::{
    self, classify, codes, ClassifyError, Envelope, IdScanner, Kind, Message, RawId,
};
use crate::msglog;
use crate::remote::Inbound;
use crate::requests::Requests;
use crate::server::{Hang, Limits, ServerEnd, ServerSide};
use crate::stream_check::{StreamCheck, Streamed};
use crate::supervisor::{Decision, Supervisor};
use crate::timer::Timer;
use crate::{ChildId, Endpoint, ExitStatus, Output, ServerId, UpId};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

/// What a session's handlers may touch besides the session.
pub(crate) struct Ctx<'a> {
    pub(crate) now: Instant,
    pub(crate) config: &'a Config,
    pub(crate) out: &'a mut VecDeque<Output>,
    pub(crate) stats: &'a mut Stats,
    /// Unix time at `now`, in seconds, for the messages that carry a timestamp.
    pub(crate) unix_now: f64,
    /// Names the next child.
    pub(crate) next_child: &'a mut u64,
    /// The configured server the session belongs to (`config` is its configuration).
    pub(crate) server: ServerId,
}

impl Ctx<'_> {
    fn new_child_id(&mut self) -> ChildId {
        let id = ChildId(*self.next_child);
        *self.next_child += 1;
        id
    }
}

/// Where the session stands with its server.
#[derive(Debug)]
enum Phase {
    /// The current server serves the client (or is being started for the first time; what
    /// the client sends meanwhile waits in its queue).
    Serving,
    /// The server ended; a replacement starts at `at` (once the old one is finished).
    Restarting { at: Instant, reason: ServerEnd },
    /// The replacement is being started.
    Respawning { reason: ServerEnd },
    /// The replacement got the client's `initialize` again; the client's messages wait in
    /// `held` until it answers, by `deadline` (which runs once the request is written and
    /// while the relay reads the answer).
    Replaying {
        init_id: RawId,
        deadline: Option<Instant>,
        reason: ServerEnd,
    },
    /// No server will serve this session again. Requests are answered with `reason`; the
    /// connection closes once that is written (or, if the client has said nothing yet, at
    /// `linger`, so that its first request can still be told why).
    Ended {
        reason: EndReason,
        linger: Option<Instant>,
    },
}

/// Why no server will serve a session again. `Display` gives the text its client is told.
#[derive(Clone, Debug, PartialEq, Eq)]
enum EndReason {
    /// The very first server could not be started: the command is unusable as given.
    CouldNotStart { server: String, error: String },
    /// The server ended and is not restarted: the policy says so, or the session is stopping.
    Server(ServerEnd),
    /// The server ended once too often within the window (`--max-restarts`).
    GaveUp {
        end: ServerEnd,
        restarts: u32,
        window: Duration,
    },
    /// The client's `initialize` could not be given a new id.
    ReplayImpossible,
    /// The replacement agreed on another protocol version than its predecessor.
    VersionChanged { version: String, expected: String },
    /// The replacement answered the replayed `initialize` with an error.
    InitializeRefused(String),
    /// The client left while a replacement was being prepared.
    ClientLeftDuringRestart,
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mcp-relay: ")?;
        match self {
            EndReason::CouldNotStart { server, error } => {
                write!(f, "could not start the server ({server}): {error}")
            }
            EndReason::Server(end) => write!(f, "{end}"),
            EndReason::GaveUp {
                end,
                restarts,
                window,
            } => write!(
                f,
                "{end}, and it was restarted {restarts} times within {window:?}; the relay gave up on it"
            ),
            EndReason::ReplayImpossible => {
                f.write_str("the client's initialize could not be replayed")
            }
            EndReason::VersionChanged { version, expected } => write!(
                f,
                "the restarted server answered initialize with protocol version {version}, not {expected}; the session cannot go on"
            ),
            EndReason::InitializeRefused(why) => write!(
                f,
                "the restarted server refused initialize ({why}); the session cannot go on"
            ),
            EndReason::ClientLeftDuringRestart => {
                f.write_str("the client left while the server was restarting")
            }
        }
    }
}

/// The client's setup, replayed to a replacement server.
#[derive(Debug, Default)]
struct Setup {
    /// The client's `initialize` line, once the server accepted it, and the version agreed.
    initialize: Option<(Vec<u8>, String)>,
    /// An `initialize` sent and not yet answered: its id and line.
    pending_initialize: Option<(RawId, Vec<u8>)>,
    initialized: bool,
    log_level: Option<Vec<u8>>,
    subscriptions: BTreeMap<String, Vec<u8>>,
    /// The session saw requests but no `initialize`: a 2026-07-28 (stateless) client.
    stateless: bool,
}

/// What the session's server side is held to.
fn limits(ctx: &Ctx<'_>) -> Limits {
    let config = ctx.config;
    Limits {
        server: ctx.server,
        max_message_size: config.max_message_size,
        cut_through_from: config.cut_through_from,
        max_buffered: config.max_buffered,
        grace: config.shutdown_grace,
        // A stopping server that reads none of its input is judged like a probe.
        stall: config.ping_timeout,
    }
}

/// Most `resources/subscribe` kept for replay per session.
const MAX_SUBSCRIPTIONS: usize = 256;

pub(crate) struct Session {
    /// Kept apart from the rest so that framed lines can be acted on while it is borrowed.
    from_client: LineFramer,
    link: Link,
    /// The configured server it belongs to, for good.
    served_by: ServerId,
}

struct Link {
    label: String,
    client: ClientSide,
    server: ServerSide,
    phase: Phase,
    supervisor: Supervisor,
    requests: Requests,
    setup: Setup,
    /// The client closed its side, left, or the relay is shutting down: no restarts.
    stopping: bool,
    client_eof: bool,
    /// What was last told to the driver about reading the connection.
    conn_paused: bool,
    heartbeat: Heartbeat,
    liveness: Liveness,
    /// Since when the client has said nothing and waited for nothing (`--idle-timeout`).
    idle_since: Instant,
    /// The client waited for an answer when the session last settled.
    was_waiting: bool,
    /// The current server replaced another: a failure to start it is not the command's fault
    /// and does not end the session at once.
    replaced: bool,
    /// Since when client messages have been held for a remote that is not reachable now
    /// (they are answered with an error after `--connect-timeout`).
    held_since: Option<Instant>,
    /// When requests were seen, for `--log-messages` latencies (empty while it is off).
    msglog: msglog::Sent,
    /// The relay is shutting down: every error the relay makes up says so.
    shutting_down: bool,
    /// The server's stdin is closed once no client request waits, or at this deadline
    /// (`--drain-timeout`): set while the relay drains, or when a client half-closed with
    /// requests in flight.
    wind_down: Option<Instant>,
    /// An HTTP session while the relay drains: it goes on serving its client (a balancer
    /// keeps sending its requests here) until its client ends it or `wind_down` comes, not
    /// as soon as nothing waits.
    drain_whole: bool,
    /// `--request-timeout`: each waiting client request's deadline and progress token (a
    /// progress notification for it restarts its clock).
    clocks: BTreeMap<RawId, Clock>,
    /// Cut-through of the client's current line to the child (see [`Early`]).
    to_server: Early,
    /// Cut-through of the child's current line to a TCP client.
    to_client: Early,
    /// The check of the client's current line while it is streamed through.
    check_in: Option<Box<Check>>,
    /// The check of the child's current line while it is streamed through.
    check_out: Option<Box<Check>>,
}

/// A long line forwarded as it arrives, before its end (cut-through): bytes go on once a
/// line is [`crate::framing::EARLY`] long and what the relay must know of it is known. The
/// line is still kept whole and checked when it ends, exactly as one that was not forwarded
/// early; only its newline waits for that check. If the check rejects it, the receiver's
/// line is ended there (cut short, not valid JSON) and the relay answers as it would have.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Early {
    /// Nothing of the current line forwarded yet.
    #[default]
    None,
    /// This line is not forwarded early (decided once, from its first bytes).
    Declined,
    /// Bytes of the current line went to (or came from) `child` already: `sent` bytes of
    /// what the framer holds; with `taking`, the framer drops what was forwarded (the line
    /// is checked as it passes, [`StreamCheck`], and never held whole).
    Sent {
        child: ChildId,
        sent: usize,
        taking: bool,
    },
}

impl Early {
    /// How far the finished line went, if it went to (came from) `child`: the bytes of
    /// what the framer still holds that were forwarded, and whether the line was taken.
    fn take(&mut self, child: Option<ChildId>) -> Option<(usize, bool)> {
        match std::mem::take(self) {
            Early::Sent {
                child: c,
                sent,
                taking,
            } if Some(c) == child => Some((sent, taking)),
            _ => None,
        }
    }
}

/// A line streamed through: its check, and its length so far.
#[derive(Debug, Default)]
struct Check {
    check: StreamCheck,
    len: usize,
    /// The top-level id, if it came in the line's start (when the check began).
    early_id: Option<RawId>,
}

impl Check {
    /// A check that starts with `start`, the line from its first byte.
    fn starting(start: &[u8]) -> Box<Self> {
        let mut scan = IdScanner::default();
        scan.feed(start);
        let mut check = Box::new(Check {
            early_id: scan.finish(),
            ..Check::default()
        });
        check.feed(start);
        check
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.len += bytes.len();
        self.check.feed(bytes);
    }

    /// What the whole line was (with its length), or why it is no message.
    fn finish(self) -> (usize, Result<Streamed, ClassifyError>) {
        (self.len, self.check.finish())
    }
}

/// The envelope of a message that was checked as it streamed through.
fn streamed_envelope(s: &Streamed) -> Envelope<'_> {
    Envelope {
        kind: s.kind,
        id: s
            .id
            .as_ref()
            .and_then(|id| serde_json::from_str::<&RawValue>(id.as_str()).ok()),
        method: s.method.as_deref().map(Cow::Borrowed),
        params: s.params_raw(),
    }
}

/// A message as the session has it when the line ends.
#[derive(Clone, Copy, Debug)]
enum Whole<'a> {
    /// The whole line, of which `early` bytes were forwarded already.
    Line { line: &'a [u8], early: usize },
    /// A line streamed through and not kept: the bytes after what was forwarded, and the
    /// line's whole length.
    Streamed { rest: &'a [u8], len: usize },
}

/// Where the bytes of a partial line that may be forwarded end (see
/// [`crate::framing::held_back`]; the framer keeps the same bytes when the line is taken).
fn forwardable(bytes: &[u8]) -> usize {
    bytes.len() - crate::framing::held_back(bytes)
}

/// The partial line holds one JSON object (not a batch, not blank).
fn starts_object(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The clock of one client request under `--request-timeout`.
#[derive(Debug)]
struct Clock {
    deadline: Instant,
    progress_token: Option<RawId>,
}

#[derive(Debug, Default)]
struct Heartbeat {
    /// The client asked for heartbeats.
    on: bool,
    next_send: Option<Instant>,
    last_heard: Option<Instant>,
}

#[derive(Debug, Default)]
struct Liveness {
    /// When the current server last said anything.
    last_output: Option<Instant>,
    /// The probe in flight and its deadline, which runs only while the server can answer:
    /// the probe is written and its stdout is being read.
    probe: Option<(RawId, Option<Instant>)>,
}

impl Session {
    /// A session serving `client`, named `label` in logs; its server starts now (a child, or
    /// the remote at URL `remote_index`).
    pub(crate) fn new(
        label: String,
        client: ClientSide,
        remote_index: usize,
        ctx: &mut Ctx<'_>,
    ) -> Self {
        let id = ctx.new_child_id();
        let server = match &ctx.config.remote {
            Some(remote) => {
                ServerSide::connect_remote(id, remote, remote_index, limits(ctx), ctx.out)
            }
            None => {
                ctx.stats.children_spawned += 1;
                ServerSide::spawn_child(id, limits(ctx), ctx.out)
            }
        };
        log::info!("{label}: starting {server}");
        Session::serving(label, client, server, ctx)
    }

    /// A session served by a child that was started ahead of need (`--prespawn`).
    pub(crate) fn with_child(
        label: String,
        client: ClientSide,
        child: Child,
        ctx: &mut Ctx<'_>,
    ) -> Self {
        if let Some(pid) = child.pid() {
            log::info!("{label}: served by prespawned {} (pid {pid})", child.id);
        }
        let server = ServerSide::with_child(child, limits(ctx));
        Session::serving(label, client, server, ctx)
    }

    fn serving(label: String, client: ClientSide, server: ServerSide, ctx: &mut Ctx<'_>) -> Self {
        let config = ctx.config;
        Session {
            served_by: ctx.server,
            from_client: LineFramer::with_early(config.max_message_size, config.cut_through_from),
            link: Link {
                label,
                client,
                server,
                phase: Phase::Serving,
                supervisor: Supervisor::new(
                    config.restart,
                    config.restart_delay,
                    config.max_restart_delay,
                    config.max_restarts,
                    config.restart_window,
                ),
                requests: Requests::new(),
                setup: Setup::default(),
                stopping: false,
                client_eof: false,
                conn_paused: false,
                heartbeat: Heartbeat::default(),
                idle_since: ctx.now,
                was_waiting: false,
                liveness: Liveness {
                    last_output: Some(ctx.now),
                    ..Liveness::default()
                },
                replaced: false,
                held_since: None,
                msglog: msglog::Sent::default(),
                shutting_down: false,
                wind_down: None,
                drain_whole: false,
                clocks: BTreeMap::new(),
                to_server: Early::None,
                to_client: Early::None,
                check_in: None,
                check_out: None,
            },
        }
    }

    // ---- getters ----

    pub(crate) fn child_id(&self) -> ChildId {
        // The relay routes child events, and a remote's connection events, by this id.
        match &self.link.server {
            ServerSide::Child(c) => c.id(),
            ServerSide::Remote(_) => self.link.server.child_id().unwrap_or(ChildId(0)),
        }
    }

    /// The remote URL (its index) serving, in client mode.
    pub(crate) fn remote_index(&self) -> Option<usize> {
        self.link.server.remote_index()
    }

    /// A remote URL found unreachable since last asked.
    pub(crate) fn take_unreachable(&mut self) -> Option<usize> {
        self.link.server.take_unreachable()
    }

    /// Its server is a process (the driver holds something of it to release at the end).
    pub(crate) fn serves_by_process(&self) -> bool {
        self.link.server.is_process()
    }

    /// The configured server it belongs to.
    pub(crate) fn served_by(&self) -> ServerId {
        self.served_by
    }

    pub(crate) fn label(&self) -> &str {
        &self.link.label
    }

    pub(crate) fn buffered(&self) -> usize {
        let l = &self.link;
        self.from_client.buffered() + l.server.buffered() + l.client.load() + l.requests.held_len()
    }

    pub(crate) fn client_side(&mut self) -> &mut ClientSide {
        &mut self.link.client
    }

    /// The server side takes more client input now: nothing it was handed waits above the
    /// mark. (An HTTP client's messages wait in the HTTP layer while it does not.)
    pub(crate) fn accepts_input(&self, config: &Config) -> bool {
        !self.link.client_input_loaded(config)
    }

    /// The server is up and serving (for health reports and heartbeats).
    pub(crate) fn server_alive(&self) -> bool {
        self.link.server_alive()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.link.requests.waiting()
    }

    /// Nothing of the session is left: the connection is closed and the server finished.
    pub(crate) fn is_done(&self) -> bool {
        self.link.client.is_finished() && self.link.server.is_finished()
    }

    pub(crate) fn poll_timeout(&self, config: &Config) -> Option<(Instant, Timer)> {
        let l = &self.link;
        let phase = match &l.phase {
            Phase::Restarting { at, .. } => Some((*at, Timer::SessionRestart)),
            Phase::Replaying {
                deadline: Some(d), ..
            } => Some((*d, Timer::ReplayTimeout)),
            Phase::Ended {
                linger: Some(d), ..
            } => Some((*d, Timer::LingerClose)),
            _ => None,
        };
        let heartbeat = l.heartbeat_active().then(|| {
            let send = l.heartbeat.next_send.map(|d| (d, Timer::HeartbeatSend));
            // Silence counts only while the relay reads the client.
            let silent = l
                .heartbeat
                .last_heard
                .filter(|_| !l.conn_paused)
                .map(|t| (t + 2 * config.heartbeat_interval, Timer::HeartbeatSilence));
            [send, silent].into_iter().flatten().min_by_key(|(d, _)| *d)
        });
        [
            l.server.poll_timeout(),
            phase,
            heartbeat.flatten(),
            l.liveness_deadline(config),
            l.idle_deadline(config),
            l.held_deadline(config),
            l.wind_down.map(|d| (d, Timer::DrainTimeout)),
            l.clocks
                .values()
                .map(|c| (c.deadline, Timer::RequestTimeout))
                .min_by_key(|(d, _)| *d),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|(d, _)| *d)
    }

    // ---- handle_* ----

    pub(crate) fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let l = &mut self.link;
        if l.server.handle_timeout(now, ctx.out) {
            ctx.stats.outputs_abandoned += 1;
        }
        match &l.phase {
            Phase::Restarting { at, .. } if *at <= now => l.try_restart(ctx),
            Phase::Replaying {
                deadline: Some(d),
                reason,
                ..
            } if *d <= now => {
                let why = Hang::ReplayUnanswered {
                    after: Box::new(reason.clone()),
                    within: ctx.config.ping_timeout,
                };
                l.hung(why, ctx);
            }
            Phase::Ended {
                linger: Some(d), ..
            } if *d <= now => {
                l.client.close_when_flushed(ctx.out);
                if let Phase::Ended { linger, .. } = &mut l.phase {
                    *linger = None;
                }
            }
            _ => {}
        }
        l.heartbeat_timeout(ctx);
        if l.idle_deadline(ctx.config).is_some_and(|(d, _)| d <= now) {
            log::info!(
                "{}: the client was idle for {:?} (--idle-timeout); closing the connection",
                l.label,
                now - l.idle_since
            );
            ctx.stats.idle_closed += 1;
            l.client.close_when_flushed(ctx.out);
            l.client_gone(ctx);
        }
        if l.liveness_deadline(ctx.config)
            .is_some_and(|(d, _)| d <= now)
        {
            l.liveness_timeout(ctx);
        }
        if let Some(why) = l.server.stop_stalled(now) {
            // It will never see the end of its input (probes or not).
            l.hung(why, ctx);
        }
        if l.held_deadline(ctx.config).is_some_and(|(d, _)| d <= now) {
            l.held_timeout(ctx);
        }
        l.request_timeouts(ctx);
        if l.wind_down.is_some_and(|d| d <= now) {
            l.wind_down = None;
            log::info!(
                "{}: {} request(s) still unanswered after --drain-timeout ({:?}); stopping the server",
                l.label,
                l.requests.waiting(),
                ctx.config.drain_timeout
            );
            l.wind_down_now(ctx);
        }
        l.take_inbox(ctx);
        // A verdict above may have started a stop sequence that is already due (no grace).
        if l.server.handle_timeout(now, ctx.out) {
            ctx.stats.outputs_abandoned += 1;
        }
    }

    pub(crate) fn client_data(&mut self, data: &[u8], ctx: &mut Ctx<'_>) {
        let link = &mut self.link;
        if link.client_eof || link.client.is_finished() {
            return;
        }
        link.heartbeat.last_heard = Some(ctx.now);
        link.idle_since = ctx.now;
        self.from_client
            .push(data, |frame| link.client_frame(frame, ctx));
    }

    pub(crate) fn child_data(&mut self, child: ChildId, data: &[u8], ctx: &mut Ctx<'_>) {
        let link = &mut self.link;
        // Once the relay gave up on an exited server's output (open past the grace: a
        // grandchild holds it), what still comes is dropped: nothing frames it any more, and
        // held it would grow without bound while the session lingers.
        if !link.server.owns(child) || link.server.is_finished() {
            return;
        }
        link.liveness.last_output = Some(ctx.now);
        if let Some((_, Some(deadline))) = &mut link.liveness.probe {
            // Output shows it is alive, even if the probe waits behind other work.
            *deadline = ctx.now + ctx.config.ping_timeout;
        }
        let mut reader = link.server.lend_reader();
        reader.push(data, |frame| link.server_frame(frame, ctx));
        link.server.return_reader(reader);
    }

    /// One message from an HTTP client (already framed and checked).
    pub(crate) fn client_message(&mut self, line: &[u8], ctx: &mut Ctx<'_>) {
        let link = &mut self.link;
        link.heartbeat.last_heard = Some(ctx.now);
        link.client_line(line, 0, ctx);
    }

    /// The client ended the session (HTTP DELETE, expiry, its stream closed).
    pub(crate) fn client_leaves(&mut self, ctx: &mut Ctx<'_>) {
        self.link.client_gone(ctx);
    }

    pub(crate) fn client_eof(&mut self, ctx: &mut Ctx<'_>) {
        if self.from_client.has_partial() {
            log::warn!(
                "{}: the client closed in the middle of a message; it was dropped",
                self.link.label
            );
            self.link.check_in = None;
            if self
                .link
                .to_server
                .take(self.link.server.child_id())
                .is_some()
            {
                self.link.cut_server_line();
            }
        }
        log::info!("{}: the client closed its side", self.link.label);
        self.link.client_gone(ctx);
    }

    pub(crate) fn client_written(&mut self, n: usize, ctx: &mut Ctx<'_>) {
        self.link.client.written(n, ctx.out);
    }

    pub(crate) fn child_written(&mut self, child: ChildId, n: usize, ctx: &mut Ctx<'_>) {
        let l = &mut self.link;
        if l.server.owns(child) {
            l.server.written(n, ctx.now, ctx.out);
        }
    }

    pub(crate) fn child_eof(&mut self, child: ChildId, ctx: &mut Ctx<'_>) {
        let l = &mut self.link;
        if !l.server.owns(child) {
            return;
        }
        // A server that closes stdout can no longer answer: it is stopped (and its exit
        // decides what comes next).
        if l.server.output_eof(ctx.out) {
            log::warn!(
                "{}: the server closed stdout in the middle of a message; it was dropped",
                l.label
            );
        }
    }

    pub(crate) fn client_broken(&mut self, reason: &str, ctx: &mut Ctx<'_>) {
        log::info!("{}: connection lost: {reason}", self.link.label);
        self.link.client.set_gone();
        self.link.client_gone(ctx);
    }

    pub(crate) fn child_stdin_broken(&mut self, child: ChildId, reason: &str, _ctx: &mut Ctx<'_>) {
        let l = &mut self.link;
        if !l.server.owns(child) {
            return;
        }
        log::warn!(
            "{}: the server stopped reading its stdin: {reason}",
            l.label
        );
        l.server.input_broken();
    }

    pub(crate) fn stderr(&mut self, child: ChildId, data: &[u8]) {
        if self.link.server.owns(child) {
            self.link.server.stderr(&self.link.label, data);
        }
    }

    // ---- a remote server's connections (client mode) ----

    /// A login's outcome ([`crate::Input::RemoteToken`]).
    pub(crate) fn remote_token(&mut self, token: Result<&str, &str>, ctx: &mut Ctx<'_>) {
        if self.link.server.remote_token(token) {
            self.link.after_remote(ctx);
        }
    }

    pub(crate) fn upstream_connected(&mut self, up: UpId, ctx: &mut Ctx<'_>) {
        if self.link.server.owns(up.server) {
            self.link.server.upstream_connected(up, ctx.now, ctx.out);
            self.link.after_remote(ctx);
        }
    }

    pub(crate) fn upstream_connect_failed(&mut self, up: UpId, error: &str, ctx: &mut Ctx<'_>) {
        let l = &mut self.link;
        if l.server.owns(up.server) {
            log::warn!("{}: {up}: {error}", l.label);
            l.server.upstream_connect_failed(up, error, ctx.out);
            l.after_remote(ctx);
        }
    }

    pub(crate) fn upstream_data(&mut self, up: UpId, data: &[u8], ctx: &mut Ctx<'_>) {
        let link = &mut self.link;
        if !link.server.owns(up.server) || link.server.is_finished() {
            return;
        }
        link.liveness.last_output = Some(ctx.now);
        if let Some((_, Some(deadline))) = &mut link.liveness.probe {
            *deadline = ctx.now + ctx.config.ping_timeout;
        }
        if link.server.has_inbox() {
            link.server.upstream_data(up, data, ctx.now, ctx.out);
        } else {
            // A TCP remote: lines, framed like a child's stdout.
            let mut reader = link.server.lend_reader();
            reader.push(data, |frame| link.server_frame(frame, ctx));
            link.server.return_reader(reader);
        }
        link.after_remote(ctx);
    }

    pub(crate) fn upstream_eof(&mut self, up: UpId, ctx: &mut Ctx<'_>) {
        if self.link.server.owns(up.server) {
            self.link.server.upstream_eof(up, ctx.now, ctx.out);
            self.link.after_remote(ctx);
        }
    }

    pub(crate) fn upstream_written(&mut self, up: UpId, n: usize, ctx: &mut Ctx<'_>) {
        if self.link.server.owns(up.server) {
            self.link.server.upstream_written(up, n, ctx.out);
        }
    }

    pub(crate) fn upstream_broken(&mut self, up: UpId, reason: &str, ctx: &mut Ctx<'_>) {
        let l = &mut self.link;
        if l.server.owns(up.server) {
            log::info!("{}: {up}: {reason}", l.label);
            l.server.upstream_broken(up, reason, ctx.now, ctx.out);
            l.after_remote(ctx);
        }
    }

    pub(crate) fn stderr_eof(&mut self, child: ChildId) {
        if self.link.server.owns(child) {
            self.link.server.stderr_eof(&self.link.label);
        }
    }

    pub(crate) fn spawned(&mut self, child: ChildId, pid: u32, ctx: &mut Ctx<'_>) {
        let l = &mut self.link;
        if !l.server.owns(child) {
            return;
        }
        log::info!("{}: server started as {} (pid {pid})", l.label, l.server);
        l.liveness.last_output = Some(ctx.now);
        l.server.spawned(pid, ctx.out);
        // A replacement is given the client's setup again.
        l.replay(ctx);
    }

    pub(crate) fn spawn_failed(&mut self, child: ChildId, error: &str, ctx: &mut Ctx<'_>) {
        let l = &mut self.link;
        if !l.server.owns(child) {
            return;
        }
        log::error!(
            "{}: could not start the server ({}): {error}",
            l.label,
            ctx.config.server_label
        );
        ctx.stats.spawn_failures += 1;
        l.server.spawn_failed(error);
        if !l.replaced {
            // The very first start: the command is unusable as given; retrying would only
            // delay the client's error.
            let reason = EndReason::CouldNotStart {
                server: ctx.config.server_label.clone(),
                error: error.to_owned(),
            };
            // Everything the client asked so far is answered; if it asked nothing yet, the
            // connection waits a little for its first request, to say why.
            let linger = l
                .requests
                .none_in_flight()
                .then(|| ctx.now + ctx.config.shutdown_grace);
            l.fail_in_flight_with(codes::SERVER_UNAVAILABLE, &reason.to_string());
            l.phase = Phase::Ended { reason, linger };
        } else {
            // A replacement that failed to start: what the client sent meanwhile is still
            // held for the next one.
            l.server_finished(ctx);
        }
    }

    pub(crate) fn exited(&mut self, child: ChildId, status: ExitStatus, ctx: &mut Ctx<'_>) {
        let l = &mut self.link;
        if !l.server.owns(child) {
            return;
        }
        if status.success() || l.stopping {
            log::info!("{}: server {} {status}", l.label, l.server);
        } else {
            log::warn!("{}: server {} {status}", l.label, l.server);
        }
        l.server.exited(status, ctx.now, ctx.out);
    }

    /// Graceful shutdown: requests in flight may finish (up to `--drain-timeout`; the
    /// client may still send, as a request in flight can need a follow-up), then the child
    /// gets end of file on stdin and what it still says reaches the client.
    /// `serve_http`: an HTTP session is served until its client ends it or the drain
    /// timeout (the relay shuts down); otherwise it ends once nothing waits.
    pub(crate) fn drain(&mut self, ctx: &mut Ctx<'_>, serve_http: bool) {
        let l = &mut self.link;
        l.shutting_down = true;
        let deadline = ctx.now + ctx.config.drain_timeout;
        if l.client_eof {
            // Already leaving (a half-closed client waiting for answers): no longer than the
            // drain allows.
            if let Some(d) = &mut l.wind_down {
                *d = (*d).min(deadline);
            }
            return;
        }
        let waits = l.requests.waiting() > 0;
        let http = serve_http && matches!(l.client, ClientSide::Http(_));
        if http && !ctx.config.drain_timeout.is_zero() && matches!(l.phase, Phase::Serving) {
            // Its client's next requests (an answer to the server's request within a call,
            // or another call) still reach this relay: the session is served until it ends
            // or the drain timeout; no new session is (the HTTP server refuses them).
            l.stopping = true;
            l.drain_whole = true;
            l.wind_down = Some(deadline);
        } else if waits && !ctx.config.drain_timeout.is_zero() && matches!(l.phase, Phase::Serving)
        {
            // No restarts while draining: a server that ends now answers with errors.
            l.stopping = true;
            l.heartbeat.on = false;
            l.wind_down = Some(deadline);
        } else {
            l.client_gone(ctx);
        }
    }

    /// Immediate shutdown: kill the child, drop the connection.
    pub(crate) fn abort(&mut self, ctx: &mut Ctx<'_>) {
        let l = &mut self.link;
        l.stopping = true;
        l.server.kill(ctx.out);
        if let (false, Some(conn)) = (l.client.is_finished(), l.client.conn()) {
            ctx.out.push_back(Output::Close {
                endpoint: Endpoint::Conn(conn),
            });
        }
        l.client.set_gone();
        l.client_eof = true;
    }

    /// After every event: hand out what was staged, settle pauses, and move the session
    /// toward its next phase.
    pub(crate) fn settle(&mut self, ctx: &mut Ctx<'_>) {
        self.settle_once(ctx);
        // Settling may finish the server (a stopping remote with nothing in flight closes
        // at once): the session acts on that now, not at an event that may never come.
        let l = &self.link;
        if l.server.is_finished()
            && !matches!(l.phase, Phase::Ended { .. } | Phase::Restarting { .. })
        {
            self.settle_once(ctx);
        }
    }

    fn settle_once(&mut self, ctx: &mut Ctx<'_>) {
        let l = &mut self.link;
        l.end_orphaned_early();
        let waiting = l.requests.waiting() > 0;
        if waiting || l.was_waiting {
            // Waiting for an answer is not idle: the clock starts once the last is answered.
            l.idle_since = ctx.now;
        }
        l.was_waiting = waiting;
        if l.wind_down.is_some()
            && ((l.requests.waiting() == 0 && !l.drain_whole)
                || (l.client_eof && l.client.is_gone()))
        {
            // Every request was answered (or the client that half-closed is gone after
            // all: a write to it failed): the server's stdin may close now.
            l.wind_down = None;
            l.wind_down_now(ctx);
        }
        if l.stopping && !waiting && !l.server.has_backlog() {
            // Nothing more is wanted of a stopping remote: it may close (its end is acted on
            // just below).
            l.server.quiet(ctx.now, ctx.out);
        }
        if l.server.is_finished()
            && !matches!(l.phase, Phase::Ended { .. } | Phase::Restarting { .. })
        {
            l.server_finished(ctx);
        }
        if let Phase::Restarting { at, .. } = l.phase {
            if at <= ctx.now {
                l.try_restart(ctx);
            }
        }
        l.server.flush(ctx.out);
        l.client.flush(ctx.out);
        // Lines held back while a side was loaded go on once it is not.
        if l.server.has_backlog() && l.client.load() <= ctx.config.max_buffered {
            if l.server.has_inbox() {
                l.take_inbox(ctx);
            } else {
                let mut reader = l.server.lend_reader();
                reader.resume(|f| l.server_frame(f, ctx));
                l.server.return_reader(reader);
            }
        }
        if self.from_client.has_backlog() && !l.client.is_finished() {
            if matches!(l.phase, Phase::Ended { .. }) {
                // The session is closing: what the client sent still gets its answers,
                // before the connection closes.
                self.from_client.resume(|f| {
                    l.client_frame(f, ctx);
                    Flow::Continue
                });
            } else if !l.client_input_loaded(ctx.config) {
                self.from_client.resume(|f| l.client_frame(f, ctx));
            }
        }
        if let Phase::Ended { linger, .. } = &l.phase {
            // Close once the client was told, or at once if it has nothing more to say.
            if linger.is_none() || l.client_eof {
                l.client.close_when_flushed(ctx.out);
            }
        }
        l.server.flush(ctx.out);
        l.client.flush(ctx.out);
        l.server.settle(ctx.now, ctx.out);
        if l.server.is_finished()
            && !matches!(l.phase, Phase::Ended { .. } | Phase::Restarting { .. })
        {
            // A remote can finish as it settles (its stop completes): act on it now, as no
            // other event may come.
            l.server_finished(ctx);
            if let Phase::Ended { linger: None, .. } = l.phase {
                l.client.close_when_flushed(ctx.out);
            }
            l.client.flush(ctx.out);
        }
        l.server.flush(ctx.out);
        if l.server.is_finished()
            && !matches!(l.phase, Phase::Ended { .. } | Phase::Restarting { .. })
        {
            // A remote whose stop had nothing to wait for finished just now, and no later
            // event may come: settle again, which acts on its end (once: that ends or
            // restarts the phase).
            return self.settle(ctx);
        }
        if l.requests.held_len() == 0 {
            l.held_since = None;
        }
        if !l.clocks.is_empty() {
            let requests = &l.requests;
            l.clocks.retain(|id, _| requests.is_waiting(id));
        }
        l.update_pauses(self.from_client.has_backlog(), ctx);
        l.arm_probe(ctx);
    }
}

impl Link {
    // ---- lines from the client ----

    /// One frame from the client; stops the framer while what it produces is loaded.
    fn client_frame(&mut self, frame: Frame<'_>, ctx: &mut Ctx<'_>) -> Flow {
        match frame {
            Frame::Partial(bytes) => return self.client_partial(bytes),
            Frame::Line(line) => {
                let early = self.to_server.take(self.server.child_id());
                let sent = early.map_or(0, |(sent, _)| sent);
                if !self.client_line(line, sent, ctx) && early.is_some() {
                    self.cut_server_line();
                }
            }
            Frame::End(rest) => self.client_end(rest, ctx),
            Frame::Oversize { len, id } => {
                // The framer saw only what was not taken: the id may be in the taken start.
                let id = id.or(self.check_in.take().and_then(|c| c.early_id));
                if self.to_server.take(self.server.child_id()).is_some() {
                    self.cut_server_line();
                }
                ctx.stats.oversize_messages += 1;
                log::warn!(
                    "{}: dropped a {len}-byte message from the client (--max-message-size is {})",
                    self.label,
                    ctx.config.max_message_size
                );
                let msg = format!(
                    "mcp-relay: message of {len} bytes exceeds the limit of {} bytes (--max-message-size); it was not delivered to the server",
                    ctx.config.max_message_size
                );
                self.client.error(id.as_ref(), codes::INVALID_REQUEST, &msg);
            }
        }
        if self.client_input_loaded(ctx.config) {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    /// What client input produces (for the server, or the relay's own answers) is above
    /// the mark: frame no more of it for now.
    fn client_input_loaded(&self, config: &Config) -> bool {
        let high = config.max_buffered;
        // What the relay answers itself while a line to the client is cut through waits for
        // its end (outside the load that pauses the server, whose output ends that line).
        self.server.load() > high
            || self.client.load() + self.client.waiting() > high
            || self.requests.held_len() > high
    }

    /// More of a long line from the client, not ended yet: forwarded to the child as it
    /// comes while the session serves and the child's stdin keeps up. What the relay must
    /// learn from the line (its kind, id, method) is read when it ends, before its newline
    /// goes: the child cannot act on it sooner. Once the session is initialized (and
    /// `--log-messages` is off), the line is taken: checked as it passes and not kept.
    fn client_partial(&mut self, bytes: &[u8]) -> Flow {
        let current = self.child();
        let end = forwardable(bytes);
        let (child, sent, taking) = match self.to_server {
            Early::Sent {
                child,
                sent,
                taking,
            } => (child, sent, taking),
            Early::Declined => return Flow::Continue,
            Early::None => {
                let Some(child) = current else {
                    return Flow::Continue;
                };
                if !starts_object(bytes) {
                    self.to_server = Early::Declined;
                    return Flow::Continue;
                }
                (child, 0, false)
            }
        };
        let serving = Some(child) == current
            && matches!(self.phase, Phase::Serving)
            && self.server.accepts()
            && self.server.is_up();
        if !serving {
            if taking {
                // Its server is gone: the rest is only checked (its id is answered at the
                // end), and not kept.
                if let Some(check) = &mut self.check_in {
                    check.feed(&bytes[sent..end]);
                }
                self.to_server = Early::Sent {
                    child,
                    sent: 0,
                    taking,
                };
                return Flow::Taken;
            }
            // What is not forwarded early goes whole when the line ends (or, for another
            // child's line, is answered then).
            return Flow::Continue;
        }
        if self.server.is_loaded() {
            return Flow::Continue;
        }
        self.server.stage_part(&bytes[sent..end]);
        if taking {
            if let Some(check) = &mut self.check_in {
                check.feed(&bytes[sent..end]);
            }
        } else if !msglog::enabled() && self.setup.initialize.is_some() {
            // Everything so far is held here, from the line's start: the check starts with
            // it. (Until `initialize` is answered, a line may be the one the relay must keep
            // to replay to a replacement: those stay whole.)
            let check = Check::starting(&bytes[..end]);
            self.check_in = Some(check);
        } else {
            self.to_server = Early::Sent {
                child,
                sent: end,
                taking: false,
            };
            return Flow::Continue;
        }
        self.to_server = Early::Sent {
            child,
            sent: 0,
            taking: true,
        };
        Flow::Taken
    }

    /// The end of a client line that was taken (streamed through, not kept).
    fn client_end(&mut self, rest: &[u8], ctx: &mut Ctx<'_>) {
        let current = self.child();
        let (child, sent) = match std::mem::take(&mut self.to_server) {
            Early::Sent { child, sent, .. } => (Some(child), sent),
            Early::None | Early::Declined => (None, 0),
        };
        let rest = rest.get(sent..).unwrap_or_default();
        let Some(mut check) = self.check_in.take() else {
            // The framer hands out an end only after the session took the line's start.
            self.client_refused(ClassifyError::NotJson(
                "the start of this message was lost".into(),
            ));
            return;
        };
        check.feed(rest);
        let (len, streamed) = check.finish();
        let streamed = match streamed {
            Ok(streamed) if streamed.long_id => {
                // Without its id it could be neither followed nor answered.
                self.client.error(
                    None,
                    codes::INVALID_REQUEST,
                    "mcp-relay: invalid request: an id longer than 256 bytes in a message too long to keep",
                );
                if child.is_some() && child == current {
                    self.cut_server_line();
                }
                return;
            }
            Ok(streamed) => streamed,
            Err(e) => {
                self.client_refused(e);
                if child.is_some() && child == current {
                    self.cut_server_line();
                }
                return;
            }
        };
        let envelope = streamed_envelope(&streamed);
        if child.is_none() || child != current {
            // Its start went to a server that is gone.
            self.answer_undelivered(std::slice::from_ref(&envelope));
            return;
        }
        let msg = Message::Single(envelope);
        if !self.client_msg(&msg, Whole::Streamed { rest, len }, ctx) {
            self.cut_server_line();
        }
    }

    /// More of a long line from the child to a TCP client, not ended yet: forwarded as it
    /// comes when its first bytes show it answers a request the client has in flight (its
    /// `"id"` comes early: a response whose id comes last waits for its end); taken (checked
    /// as it passes, not kept) unless `--log-messages` needs it whole.
    fn server_partial(&mut self, bytes: &[u8], ctx: &mut Ctx<'_>) -> Flow {
        let Some(child) = self.child() else {
            return Flow::Continue;
        };
        let end = forwardable(bytes);
        let (sent, taking) = match self.to_client {
            Early::Sent {
                child: c,
                sent,
                taking,
            } if c == child => (sent, taking),
            Early::Sent { .. } | Early::Declined => return Flow::Continue,
            Early::None => {
                let mut scan = IdScanner::default();
                scan.feed(bytes);
                let id = scan.finish();
                let answers_client = id.as_ref().is_some_and(|id| self.requests.is_in_flight(id));
                let setup = self
                    .setup
                    .pending_initialize
                    .as_ref()
                    .is_some_and(|(p, _)| Some(p) == id.as_ref());
                if !answers_client
                    || setup
                    || !starts_object(bytes)
                    || self.client.conn().is_none()
                    || !matches!(self.phase, Phase::Serving)
                    || self.server.is_hung()
                {
                    self.to_client = Early::Declined;
                    return Flow::Continue;
                }
                (0, false)
            }
        };
        if self.client.load() > ctx.config.max_buffered {
            return Flow::Continue;
        }
        self.client.send_partial(&bytes[sent..end]);
        if taking {
            if let Some(check) = &mut self.check_out {
                check.feed(&bytes[sent..end]);
            }
        } else if !msglog::enabled() {
            let check = Check::starting(&bytes[..end]);
            self.check_out = Some(check);
        } else {
            self.to_client = Early::Sent {
                child,
                sent: end,
                taking: false,
            };
            return Flow::Continue;
        }
        self.to_client = Early::Sent {
            child,
            sent: 0,
            taking: true,
        };
        Flow::Taken
    }

    /// The end of a line from the child that was taken (streamed to the client, not kept).
    fn server_end(&mut self, rest: &[u8], ctx: &mut Ctx<'_>) {
        let sent = match std::mem::take(&mut self.to_client) {
            Early::Sent { sent, .. } => sent,
            Early::None | Early::Declined => 0,
        };
        let rest = rest.get(sent..).unwrap_or_default();
        let streamed = self.check_out.take().map(|mut check| {
            check.feed(rest);
            check.finish()
        });
        let forwarded = match streamed {
            Some((len, Ok(streamed))) if !self.server.is_hung() && !streamed.long_id => {
                let msg = Message::Single(streamed_envelope(&streamed));
                self.server_msg(&msg, Whole::Streamed { rest, len }, ctx)
            }
            Some((_, Ok(_))) => false,
            Some((_, Err(_))) | None => {
                self.server_line_dropped(b"(a long line, streamed)", ctx);
                false
            }
        };
        if !forwarded {
            self.cut_client_line();
        }
    }

    /// A line from the child forwarded in part whose end will never come (its output ended,
    /// or it is no longer this session's server) is ended at the client.
    fn end_orphaned_early(&mut self) {
        if let Early::Sent { child, .. } = self.to_client {
            // The line's start is still in the child's framer (pipe data outlives an exit).
            let open = self.child() == Some(child) && self.server.has_partial_output();
            if !open {
                self.to_client = Early::None;
                self.check_out = None;
                self.cut_client_line();
            }
        }
    }

    /// The child serving the session (cut-through is between a client and a child only).
    fn child(&self) -> Option<ChildId> {
        self.server.child_id().filter(|_| self.server.is_process())
    }

    /// Ends at the child a line it got in part and will not get whole.
    fn cut_server_line(&mut self) {
        self.server.cut_part();
        log::warn!(
            "{}: a long message from the client was forwarded in part and then refused; the server got it cut short",
            self.label
        );
    }

    /// Ends at the client a line it got in part and will not get whole.
    fn cut_client_line(&mut self) {
        self.client.cut_partial();
        log::warn!(
            "{}: a long message from the server was forwarded in part and then dropped; the client got it cut short",
            self.label
        );
    }

    /// One frame from the server; stops the framer while the client side is loaded.
    fn server_frame(&mut self, frame: Frame<'_>, ctx: &mut Ctx<'_>) -> Flow {
        match frame {
            Frame::Partial(bytes) => return self.server_partial(bytes, ctx),
            Frame::Line(line) => {
                let early = self.to_client.take(self.server.child_id());
                let sent = early.map_or(0, |(sent, _)| sent);
                if !self.server_line(line, sent, ctx) && early.is_some() {
                    self.cut_client_line();
                }
            }
            Frame::End(rest) => self.server_end(rest, ctx),
            Frame::Oversize { len, id } => {
                let id = id.or(self.check_out.take().and_then(|c| c.early_id));
                if self.to_client.take(self.server.child_id()).is_some() {
                    self.cut_client_line();
                }
                ctx.stats.oversize_messages += 1;
                log::warn!(
                    "{}: dropped a {len}-byte message from the server (--max-message-size is {})",
                    self.label,
                    ctx.config.max_message_size
                );
                if let Some(id) = id {
                    if self.requests.answered(&id) {
                        let msg = format!(
                            "mcp-relay: the server's response of {len} bytes exceeds the limit of {} bytes (--max-message-size) and was dropped",
                            ctx.config.max_message_size
                        );
                        self.client.error(Some(&id), codes::RESPONSE_LOST, &msg);
                    }
                }
            }
        }
        if self.client.load() > ctx.config.max_buffered {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    /// One line from the client; `early` bytes of it went to the server already. True if
    /// the line went (or goes now) to the server whole.
    fn client_line(&mut self, line: &[u8], early: usize, ctx: &mut Ctx<'_>) -> bool {
        match classify(line) {
            Ok(msg) => self.client_msg(&msg, Whole::Line { line, early }, ctx),
            Err(e) => {
                self.client_refused(e);
                false
            }
        }
    }

    /// The client's line is not a message: it is told why.
    fn client_refused(&mut self, e: ClassifyError) {
        match e {
            ClassifyError::NotJson(e) => {
                let text = format!("mcp-relay: parse error: {e}");
                self.client.error(None, codes::PARSE_ERROR, &text);
            }
            ClassifyError::NotAMessage => {
                self.client.error(
                    None,
                    codes::INVALID_REQUEST,
                    "mcp-relay: invalid request: a JSON-RPC message is an object (or an array of them)",
                );
            }
        }
    }

    /// One message from the client, whole or streamed through; true if it went (or goes now)
    /// to the server.
    fn client_msg(&mut self, msg: &Message<'_>, whole: Whole<'_>, ctx: &mut Ctx<'_>) -> bool {
        let entries: &[Envelope<'_>] = match msg {
            Message::Single(e) => std::slice::from_ref(e),
            Message::Batch(es) => es,
        };
        if let Message::Single(e) = msg {
            match e.kind {
                Kind::Heartbeat => {
                    self.client_heartbeat(ctx);
                    return false;
                }
                Kind::Invalid => {
                    self.client.error(
                        e.id.map(RawId::from_raw).as_ref(),
                        codes::INVALID_REQUEST,
                        "mcp-relay: invalid request: not a JSON-RPC request, notification or response",
                    );
                    return false;
                }
                _ => {}
            }
        }
        if let (true, Whole::Line { line, .. }) = (msglog::enabled(), &whole) {
            let dir = msglog::Direction::ToServer;
            self.msglog.log(&self.label, dir, msg, line, ctx.now);
        }
        if let Phase::Ended { reason, .. } = &self.phase {
            let reason = reason.to_string();
            if self.answer_unavailable(entries, &reason) {
                // The client has its explanation: the connection may close.
                if let Phase::Ended { linger, .. } = &mut self.phase {
                    *linger = None;
                }
            }
            return false;
        }
        // Responses to the server's requests: only those it is waiting for.
        let mut forward = true;
        for e in entries.iter().filter(|e| e.kind == Kind::Response) {
            let known =
                e.id.map(RawId::from_raw)
                    .is_some_and(|id| self.requests.client_answered(&id));
            if !known && entries.len() == 1 {
                log::info!(
                    "{}: dropped a response from the client to an unknown request id {}",
                    self.label,
                    e.id.map_or("null", |i| i.get())
                );
                forward = false;
            }
        }
        if !forward {
            return false;
        }
        let holding = !matches!(self.phase, Phase::Serving) || !self.server.accepts();
        let line = match whole {
            Whole::Line { line, .. } => line,
            Whole::Streamed { .. } if holding => {
                // Its start went to a server that is gone: nothing is left to hold.
                self.answer_undelivered(entries);
                return false;
            }
            Whole::Streamed { .. } => &[],
        };
        let batch = matches!(msg, Message::Batch(_)).then(|| self.requests.new_batch());
        let deadline = ctx.config.request_timeout.map(|t| ctx.now + t);
        for e in entries {
            self.note_client_message(e, line, batch, holding, deadline);
        }
        if holding {
            // A replacement will get it, or the session's end will answer it.
            self.requests.hold(line);
            if ctx.config.remote.is_some() {
                self.held_since.get_or_insert(ctx.now);
            }
        } else {
            ctx.stats.messages_to_server += 1;
            match whole {
                Whole::Line { line, early: 0 } => self.server.stage_line(line),
                Whole::Line { line, early } => {
                    self.server.end_part(line.get(early..).unwrap_or_default());
                }
                Whole::Streamed { rest, len } => {
                    self.server.end_part(rest);
                    ctx.stats.bytes_to_server += len as u64 + 1;
                    return true;
                }
            }
            ctx.stats.bytes_to_server += line.len() as u64 + 1;
            return true;
        }
        false
    }

    /// Keeps what the session must know about a message going to the server.
    fn note_client_message(
        &mut self,
        e: &Envelope<'_>,
        line: &[u8],
        batch: Option<u64>,
        holding: bool,
        deadline: Option<Instant>,
    ) {
        let method = e.method.as_deref().unwrap_or("");
        if e.kind == Kind::Request {
            if let Some(id) = e.id.map(RawId::from_raw) {
                if line.is_empty() {
                    // Streamed through, not kept (only once the session is initialized): a
                    // setting it makes cannot be given to a replacement.
                    if matches!(
                        method,
                        "initialize"
                            | "logging/setLevel"
                            | "resources/subscribe"
                            | "resources/unsubscribe"
                    ) {
                        log::warn!(
                            "{}: a {method} request too long to keep will not be repeated to a replacement server",
                            self.label
                        );
                    }
                } else if method == "initialize" {
                    self.setup.pending_initialize = Some((id.clone(), line.to_vec()));
                } else if self.setup.initialize.is_none() && self.setup.pending_initialize.is_none()
                {
                    self.setup.stateless = true;
                }
                match method {
                    _ if line.is_empty() => {}
                    "logging/setLevel" => self.setup.log_level = Some(line.to_vec()),
                    "resources/subscribe" | "resources/unsubscribe" => {
                        if let Some(uri) = message::param_str(e.params, "uri") {
                            if method == "resources/unsubscribe" {
                                self.setup.subscriptions.remove(&uri);
                            } else if self.setup.subscriptions.len() < MAX_SUBSCRIPTIONS {
                                self.setup.subscriptions.insert(uri, line.to_vec());
                            } else {
                                log::warn!(
                                    "{}: more than {MAX_SUBSCRIPTIONS} subscriptions; {uri} will not be renewed after a restart",
                                    self.label
                                );
                            }
                        }
                    }
                    _ => {}
                }
                if let Some(deadline) = deadline {
                    let clock = Clock {
                        deadline,
                        progress_token: message::meta_progress_token(e.params),
                    };
                    self.clocks.insert(id.clone(), clock);
                }
                self.requests.add(id, batch, holding);
            }
        } else if e.kind == Kind::Notification {
            match method {
                "notifications/initialized" => self.setup.initialized = true,
                "notifications/cancelled" => {
                    if let Some(id) = message::cancelled_request_id(e.params) {
                        // The server will not answer a cancelled request (nor a replacement
                        // one held for it).
                        if self.requests.answered(&id) || self.requests.unhold(&id) {
                            self.client.cancelled(id);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Answers the requests among `entries`, streamed toward a server that ended before
    /// their end went: nothing of them is left to give a replacement.
    fn answer_undelivered(&mut self, entries: &[Envelope<'_>]) {
        for e in entries.iter().filter(|e| e.kind == Kind::Request) {
            let id = e.id.map(RawId::from_raw);
            self.client.error(
                id.as_ref(),
                codes::SERVER_FAILED,
                "mcp-relay: the server ended while this message was being forwarded to it; it was not delivered",
            );
        }
    }

    /// Answers every request among `entries` with a -32000 error saying `reason`; false if
    /// there was none.
    fn answer_unavailable(&mut self, entries: &[Envelope<'_>], reason: &str) -> bool {
        let requests: Vec<&Envelope<'_>> =
            entries.iter().filter(|e| e.kind == Kind::Request).collect();
        if requests.is_empty() {
            return false;
        }
        let batch = entries.len() > 1;
        if batch && matches!(self.client, ClientSide::Tcp(_)) {
            // A batch is answered with a batch.
            let mut body = Vec::new();
            for (i, e) in requests.iter().enumerate() {
                body.push(if i == 0 { b'[' } else { b',' });
                message::write_error(
                    &mut body,
                    e.id.map(|i| i.get()),
                    codes::SERVER_UNAVAILABLE,
                    reason,
                );
            }
            body.push(b']');
            self.client.send(
                Route::FromServer {
                    progress_token: None,
                },
                &body,
            );
        } else {
            // Over HTTP each answer finds its request's stream on its own.
            for e in requests {
                let id = e.id.map(RawId::from_raw);
                self.client
                    .error(id.as_ref(), codes::SERVER_UNAVAILABLE, reason);
            }
        }
        true
    }

    fn client_heartbeat(&mut self, ctx: &mut Ctx<'_>) {
        if self.client_eof || self.client.is_finished() {
            // Read from a backlog after the client left: nobody to answer.
            return;
        }
        if !self.heartbeat.on {
            log::info!("{}: the client turned heartbeats on", self.label);
            self.heartbeat.on = true;
        }
        self.send_heartbeat(ctx);
    }

    fn server_alive(&self) -> bool {
        matches!(self.phase, Phase::Serving) && self.server.is_up()
    }

    fn send_heartbeat(&mut self, ctx: &mut Ctx<'_>) {
        let alive = self.server_alive();
        let line = format!(
            r#"{{"type":"heartbeat_response","timestamp":{:.3},"mcp_alive":{alive}}}"#,
            ctx.unix_now
        );
        self.client.send(Route::Relay, line.as_bytes());
        self.heartbeat.next_send = Some(ctx.now + ctx.config.heartbeat_interval);
    }

    /// When a TCP client that says nothing and waits for nothing is closed.
    fn idle_deadline(&self, config: &Config) -> Option<(Instant, Timer)> {
        let limit = config.idle_timeout?;
        let open = matches!(self.client, ClientSide::Tcp(_))
            && !self.client_eof
            && !self.client.is_finished()
            && self.requests.waiting() == 0;
        open.then_some((self.idle_since + limit, Timer::IdleClose))
    }

    /// Heartbeats are on and there is a client to send them to.
    fn heartbeat_active(&self) -> bool {
        self.heartbeat.on && !self.client_eof && !self.client.is_finished()
    }

    fn heartbeat_timeout(&mut self, ctx: &mut Ctx<'_>) {
        if !self.heartbeat_active() {
            return;
        }
        let silent_limit = 2 * ctx.config.heartbeat_interval;
        if !self.conn_paused
            && self
                .heartbeat
                .last_heard
                .is_some_and(|t| t + silent_limit <= ctx.now)
        {
            log::warn!(
                "{}: no heartbeat from the client for {silent_limit:?}; closing the connection",
                self.label
            );
            ctx.stats.heartbeat_failures += 1;
            self.heartbeat.on = false;
            if let Some(conn) = self.client.conn() {
                ctx.out.push_back(Output::Close {
                    endpoint: Endpoint::Conn(conn),
                });
            }
            self.client.set_gone();
            self.client_gone(ctx);
            return;
        }
        if self.heartbeat.next_send.is_some_and(|d| d <= ctx.now) {
            self.send_heartbeat(ctx);
        }
    }

    // ---- lines from the server ----

    /// One line from the server; `early` bytes of it went to the client already. True if
    /// it went (or goes now) to the client whole.
    fn server_line(&mut self, line: &[u8], early: usize, ctx: &mut Ctx<'_>) -> bool {
        if self.server.is_hung() {
            return false;
        }
        match classify(line) {
            Ok(msg) => self.server_msg(&msg, Whole::Line { line, early }, ctx),
            Err(_) => {
                self.server_line_dropped(&line[..line.len().min(200)], ctx);
                false
            }
        }
    }

    /// A line from the server that is no JSON-RPC message (`shown`: its start) is dropped.
    fn server_line_dropped(&mut self, shown: &[u8], ctx: &mut Ctx<'_>) {
        ctx.stats.dropped_server_lines += 1;
        let shown = String::from_utf8_lossy(shown);
        log::warn!(
            "{}: dropped a line from the server's stdout that is not a JSON-RPC message: {}",
            self.label,
            crate::child::escape_controls(&shown)
        );
    }

    /// One message from the server, whole or streamed through; true if it went (or goes
    /// now) to the client.
    fn server_msg(&mut self, msg: &Message<'_>, whole: Whole<'_>, ctx: &mut Ctx<'_>) -> bool {
        if let Message::Single(e) = msg {
            if e.kind == Kind::Invalid || e.kind == Kind::Heartbeat {
                let shown = match whole {
                    Whole::Line { line, .. } => &line[..line.len().min(200)],
                    Whole::Streamed { .. } => b"(a long line, streamed)",
                };
                self.server_line_dropped(shown, ctx);
                return false;
            }
        }
        let line = match whole {
            Whole::Line { line, .. } => line,
            Whole::Streamed { .. } => &[],
        };
        if let Message::Single(e) = msg {
            if e.kind == Kind::Response && e.id.is_none() && self.server.take_cut() {
                // Most likely its answer to a line the relay cut short: not the client's.
                log::debug!(
                    "{}: dropped the server's error without an id that followed a line cut short",
                    self.label
                );
                return false;
            }
        }
        let entries: &[Envelope<'_>] = match msg {
            Message::Single(e) => std::slice::from_ref(e),
            Message::Batch(es) => es,
        };
        let mut forward = false;
        let mut attributed = None;
        for e in entries {
            match e.kind {
                Kind::Response => {
                    let Some(id) = e.id.map(RawId::from_raw) else {
                        // `"id": null` (the server could not read the id): with one request
                        // in flight, it can only be that one's answer.
                        if entries.len() == 1 {
                            attributed = self.requests.only_in_flight();
                            if let Some(id) = &attributed {
                                self.requests.answered(id);
                            }
                        }
                        forward = true;
                        continue;
                    };
                    if self.requests.is_own(&id) {
                        self.own_response(&id, line, ctx);
                    } else if self.requests.answered(&id) {
                        forward = true;
                        if self
                            .setup
                            .pending_initialize
                            .as_ref()
                            .is_some_and(|(p, _)| *p == id)
                        {
                            if let Some((_, request)) = self.setup.pending_initialize.take() {
                                if let Ok(version) = message::initialize_outcome(line) {
                                    self.setup.initialize = Some((request, version));
                                }
                            }
                        }
                    } else {
                        log::debug!(
                            "{}: dropped a response from the server to id {id}, which is not waiting (already answered or cancelled)",
                            self.label
                        );
                    }
                }
                Kind::Request => {
                    if let Some(id) = e.id.map(RawId::from_raw) {
                        self.requests.server_asked(id, ctx.config.max_in_flight);
                    }
                    forward = true;
                }
                Kind::Notification
                    if !self.clocks.is_empty()
                        && e.method.as_deref() == Some("notifications/progress") =>
                {
                    if let (Some(token), Some(limit)) = (
                        message::param_raw(e.params, "progressToken"),
                        ctx.config.request_timeout,
                    ) {
                        // A long request that reports progress is not cut off.
                        for c in self.clocks.values_mut() {
                            if c.progress_token.as_ref() == Some(&token) {
                                c.deadline = ctx.now + limit;
                            }
                        }
                    }
                    forward = true;
                }
                _ => forward = true,
            }
        }
        if forward && !matches!(self.phase, Phase::Replaying { .. }) {
            if msglog::enabled() {
                let dir = msglog::Direction::ToClient;
                self.msglog.log(&self.label, dir, msg, line, ctx.now);
            }
            ctx.stats.messages_to_client += 1;
            let route = match msg {
                Message::Single(e) if e.kind == Kind::Response => {
                    Route::Response(e.id.map(RawId::from_raw).or(attributed))
                }
                Message::Single(e) if e.method.as_deref() == Some("notifications/progress") => {
                    Route::FromServer {
                        progress_token: message::param_raw(e.params, "progressToken"),
                    }
                }
                Message::Batch(es)
                    if !es.is_empty() && es.iter().all(|e| e.kind == Kind::Response) =>
                {
                    Route::Responses(
                        es.iter()
                            .filter_map(|e| e.id.map(RawId::from_raw))
                            .collect(),
                    )
                }
                _ => Route::FromServer {
                    progress_token: None,
                },
            };
            match whole {
                Whole::Line { line, early: 0 } => {
                    ctx.stats.bytes_to_client += line.len() as u64 + 1;
                    self.client.send(route, line);
                }
                Whole::Line { line, early } => {
                    ctx.stats.bytes_to_client += line.len() as u64 + 1;
                    self.client.send_rest(line.get(early..).unwrap_or_default());
                }
                Whole::Streamed { rest, len } => {
                    ctx.stats.bytes_to_client += len as u64 + 1;
                    self.client.send_rest(rest);
                }
            }
            return true;
        }
        false
    }

    /// A response to a message the relay sent itself: a probe or a replayed request.
    fn own_response(&mut self, id: &RawId, line: &[u8], ctx: &mut Ctx<'_>) {
        if self.liveness.probe.as_ref().is_some_and(|(p, _)| p == id) {
            // Any answer, even "method not found", shows the server is alive. The next probe
            // is an interval from now: a remote's answer may be the relay's own error (the
            // connection closed), which is no output of the server's, and probing again at
            // once would loop.
            self.liveness.probe = None;
            self.liveness.last_output = Some(ctx.now);
            return;
        }
        if let Phase::Replaying {
            init_id, reason, ..
        } = &self.phase
        {
            if init_id == id {
                let reason = reason.clone();
                let expected = self.setup.initialize.as_ref().map(|(_, v)| v.clone());
                match message::initialize_outcome(line) {
                    Ok(version) if Some(&version) == expected.as_ref() => {
                        self.finish_replay(reason, true, ctx)
                    }
                    Ok(version) => self.end(
                        EndReason::VersionChanged {
                            version,
                            expected: expected.unwrap_or_default(),
                        },
                        ctx,
                    ),
                    Err(why) => self.end(EndReason::InitializeRefused(why), ctx),
                }
            }
        }
    }

    // ---- liveness of the server ----

    /// A probe's deadline runs only while the server can answer it: written to its stdin,
    /// and its stdout read.
    fn arm_probe(&mut self, ctx: &Ctx<'_>) {
        let can_answer = self.server.can_answer();
        // The replayed initialize is judged the same way.
        if let Phase::Replaying { deadline, .. } = &mut self.phase {
            match (can_answer, *deadline) {
                (true, None) => *deadline = Some(ctx.now + ctx.config.ping_timeout),
                (false, Some(_)) => *deadline = None,
                _ => {}
            }
        }
        if let Some((_, deadline)) = &mut self.liveness.probe {
            match (can_answer, *deadline) {
                (true, None) => *deadline = Some(ctx.now + ctx.config.ping_timeout),
                (false, Some(_)) => *deadline = None,
                _ => {}
            }
        }
    }

    fn liveness_deadline(&self, config: &Config) -> Option<(Instant, Timer)> {
        let interval = config.ping_interval?;
        let judged = matches!(self.phase, Phase::Serving | Phase::Replaying { .. });
        if !judged || !self.server.is_up() || self.server.is_paused() {
            // Not serving, or the relay itself is not reading it: nothing to judge.
            return None;
        }
        let stall = self
            .server
            .stalled_since()
            .map(|t| (t + config.ping_timeout, Timer::StdinStall));
        if !matches!(self.phase, Phase::Serving) {
            // A replacement that stops reading its replayed setup is hung too (its own
            // deadline starts only once that is written); it is not probed meanwhile.
            return stall;
        }
        let probe = match &self.liveness.probe {
            Some((_, deadline)) => deadline.map(|d| (d, Timer::ProbeTimeout)),
            None => self
                .liveness
                .last_output
                .map(|t| (t + interval, Timer::ProbeSend)),
        };
        [stall, probe].into_iter().flatten().min_by_key(|(d, _)| *d)
    }

    fn liveness_timeout(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let timeout = ctx.config.ping_timeout;
        if self
            .server
            .stalled_since()
            .is_some_and(|t| t + timeout <= now)
        {
            return self.hung(Hang::StdinStalled(timeout), ctx);
        }
        if !matches!(self.phase, Phase::Serving) {
            return;
        }
        match &self.liveness.probe {
            Some((_, Some(deadline))) if *deadline <= now => {
                self.hung(Hang::ProbeUnanswered(timeout), ctx)
            }
            Some(_) => {}
            None => {
                let method = if self.setup.stateless {
                    "server/discover"
                } else {
                    "ping"
                };
                let id = self.requests.own_id("probe");
                let line = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}"}}"#);
                log::debug!(
                    "{}: the server was quiet; probing it with {method}",
                    self.label
                );
                self.server.stage_probe(line.as_bytes());
                // Its deadline starts once it is written (see `settle`).
                self.liveness.probe = Some((id, None));
            }
        }
    }

    // ---- a remote server ----

    /// After a remote's connection event: a remote that came up is given the client's setup
    /// (as a started child is), and what it said goes to the client.
    fn after_remote(&mut self, ctx: &mut Ctx<'_>) {
        if self.server.take_up() {
            log::info!("{}: connected to {}", self.label, self.server);
            self.liveness.last_output = Some(ctx.now);
            self.replay(ctx);
        }
        self.take_inbox(ctx);
    }

    /// Hands what a remote sent to the client, until the client side is loaded.
    fn take_inbox(&mut self, ctx: &mut Ctx<'_>) {
        while self.client.load() <= ctx.config.max_buffered {
            let Some(msg) = self.server.next_inbound() else {
                break;
            };
            match msg {
                Inbound::Line(line) => self.server_frame(Frame::Line(&line), ctx),
                Inbound::Oversize { len, id } => {
                    self.server_frame(Frame::Oversize { len, id }, ctx)
                }
            };
        }
    }

    /// Messages that provably never reached a remote that ended wait for its replacement,
    /// as if they had come while it restarted (the relay's own are made again by the replay).
    fn hold_undelivered(&mut self, ctx: &mut Ctx<'_>) {
        let undelivered = self.server.take_undelivered();
        if undelivered.is_empty() {
            return;
        }
        for u in undelivered {
            if let Some(id) = &u.id {
                if self.requests.is_own(id) {
                    continue;
                }
            }
            if u.method.as_deref() == Some("notifications/initialized")
                && self.setup.initialize.is_some()
            {
                continue;
            }
            self.requests.rehold(u.id.as_ref(), &u.line);
            let since = u.since.unwrap_or(ctx.now);
            self.held_since = Some(self.held_since.map_or(since, |t| t.min(since)));
        }
    }

    /// Requests held for a remote that cannot be reached waited `--connect-timeout`.
    fn held_deadline(&self, config: &Config) -> Option<(Instant, Timer)> {
        let timeout = config.remote.as_ref()?.connect_timeout;
        Some((self.held_since? + timeout, Timer::RemoteHeld))
    }

    fn held_timeout(&mut self, ctx: &mut Ctx<'_>) {
        let Some(timeout) = ctx.config.remote.as_ref().map(|r| r.connect_timeout) else {
            return;
        };
        let why = match &self.phase {
            Phase::Restarting { reason, .. }
            | Phase::Respawning { reason }
            | Phase::Replaying { reason, .. } => reason.to_string(),
            _ => "it is not connected".to_owned(),
        };
        let text = format!(
            "mcp-relay: the remote server could not be reached within {timeout:?} (--connect-timeout): {why}"
        );
        log::warn!("{}: {}", self.label, &text[11..]);
        let held = self.requests.drop_held();
        self.answer_all(held, codes::SERVER_UNAVAILABLE, &text);
        self.held_since = None;
    }

    /// The server is hung: answer what waits on it, stop it, and let its end decide the rest.
    fn hung(&mut self, why: Hang, ctx: &mut Ctx<'_>) {
        log::warn!("{}: {why}; stopping {}", self.label, self.server);
        ctx.stats.servers_hung += 1;
        self.liveness = Liveness::default();
        let message = format!("mcp-relay: the server was hung ({why}) and is being restarted");
        self.fail_in_flight_with(codes::SERVER_FAILED, &message);
        if matches!(self.phase, Phase::Replaying { .. }) {
            self.phase = Phase::Serving;
        }
        self.server.terminate_hung(why, ctx.now, ctx.out);
    }

    // ---- ends and restarts ----

    /// The server has ended (or never started) and all its output is in: answer what waited
    /// on it, then restart it or end the session.
    fn server_finished(&mut self, ctx: &mut Ctx<'_>) {
        let Some(why) = self.server.ended() else {
            return;
        };
        let pending_initialize = self.setup.pending_initialize.clone();
        self.hold_undelivered(ctx);
        self.fail_in_flight_with(
            codes::SERVER_FAILED,
            &format!("mcp-relay: {why} before answering this request"),
        );
        if let Some((id, line)) = pending_initialize {
            // The client's initialize never reached the remote: it goes to the next one.
            if self.requests.is_held(&id) {
                self.setup.pending_initialize = Some((id, line));
            }
        }
        self.requests.forget_server();
        self.liveness = Liveness::default();
        if matches!(
            self.phase,
            Phase::Replaying { .. } | Phase::Respawning { .. }
        ) {
            // The replacement died before serving: the client's messages are still held.
            self.phase = Phase::Serving;
        }
        if self.stopping {
            self.end(EndReason::Server(why), ctx);
            return;
        }
        match self.supervisor.decide(ctx.now, !why.is_clean()) {
            Decision::RestartAfter(delay) => {
                ctx.stats.restarts += 1;
                log::warn!(
                    "{}: {why}; restarting it in {delay:?} ({} of {} restarts within {:?})",
                    self.label,
                    self.supervisor.recent(ctx.now),
                    ctx.config.max_restarts,
                    ctx.config.restart_window
                );
                self.phase = Phase::Restarting {
                    at: ctx.now + delay,
                    reason: why,
                };
            }
            Decision::Stop => {
                log::info!(
                    "{}: {why}; the session ends with it (--restart)",
                    self.label
                );
                self.end(EndReason::Server(why), ctx);
            }
            Decision::GiveUp => {
                ctx.stats.sessions_given_up += 1;
                log::error!(
                    "{}: {why}; giving up after {} restarts within {:?} (--max-restarts); closing the connection",
                    self.label,
                    ctx.config.max_restarts,
                    ctx.config.restart_window
                );
                self.end(
                    EndReason::GaveUp {
                        end: why,
                        restarts: ctx.config.max_restarts,
                        window: ctx.config.restart_window,
                    },
                    ctx,
                );
            }
        }
    }

    /// Starts the replacement server, if the old one is finished.
    fn try_restart(&mut self, ctx: &mut Ctx<'_>) {
        if !self.server.is_finished() || self.stopping {
            return;
        }
        let Phase::Restarting { reason, .. } = &self.phase else {
            return;
        };
        let reason = reason.clone();
        let old = self.server.to_string();
        ctx.stats.children_spawned += 1;
        self.server.restart(ctx.new_child_id(), ctx.out);
        log::info!("{}: starting {} to replace {old}", self.label, self.server);
        self.replaced = true;
        // Until it is up (and re-initialized), what the client sends waits in `held`.
        self.phase = Phase::Respawning { reason };
    }

    /// The replacement is running: give it the client's `initialize` again, or go straight
    /// to serving if the client never sent one.
    fn replay(&mut self, ctx: &mut Ctx<'_>) {
        let reason = match &self.phase {
            Phase::Respawning { reason } => reason.clone(),
            _ => return,
        };
        let Some((request, _)) = &self.setup.initialize else {
            // Nothing to replay, so nothing shows the replacement works yet: it serves, and
            // no recovery is announced (one that never comes up would be announced again at
            // every restart).
            return self.finish_replay(reason, false, ctx);
        };
        let request = request.clone();
        let id = self.requests.own_id("init");
        match message::with_id(&request, id.as_str()) {
            Some(line) => {
                log::debug!(
                    "{}: replaying the client's initialize to {}; its messages wait until it answers",
                    self.label,
                    self.server
                );
                self.server.stage_line(&line);
                self.phase = Phase::Replaying {
                    init_id: id,
                    deadline: None,
                    reason,
                };
            }
            None => self.end(EndReason::ReplayImpossible, ctx),
        }
    }

    /// The replacement is initialized (or there was nothing to replay): restore the client's
    /// setup, release what it sent meanwhile, and, if it answered the replayed `initialize`
    /// (`announce`), tell the client the server restarted.
    fn finish_replay(&mut self, reason: ServerEnd, announce: bool, ctx: &mut Ctx<'_>) {
        if self.setup.initialize.is_some() && self.setup.initialized {
            self.server
                .stage_line(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        }
        let mut restore: Vec<Vec<u8>> = self.setup.log_level.iter().cloned().collect();
        restore.extend(self.setup.subscriptions.values().cloned());
        for request in restore {
            let id = self.requests.own_id("replay");
            if let Some(line) = message::with_id(&request, id.as_str()) {
                self.server.stage_line(&line);
            }
        }
        let held = self.requests.release_held();
        self.server.stage(&held);
        self.phase = Phase::Serving;
        self.liveness.last_output = Some(ctx.now);
        if !announce {
            log::info!(
                "{}: the replacement {} serves (the client never initialized: nothing to replay)",
                self.label,
                self.server
            );
            return;
        }
        let note = format!(
            r#"{{"jsonrpc":"2.0","method":"$/mcp/serverRestarted","params":{{"timestamp":{:.3},"reason":{}}}}}"#,
            ctx.unix_now,
            serde_json::Value::String(reason.to_string())
        );
        self.client.send(Route::Relay, note.as_bytes());
        log::info!("{}: the server is back ({reason})", self.label);
    }

    /// No server will serve this session again.
    fn end(&mut self, reason: EndReason, ctx: &mut Ctx<'_>) {
        let text = reason.to_string();
        log::debug!("{}: no server will serve it again: {text}", self.label);
        self.fail_in_flight_with(codes::SERVER_FAILED, &text);
        let held = self.requests.drop_held();
        self.answer_all(held, codes::SERVER_UNAVAILABLE, &text);
        self.phase = Phase::Ended {
            reason,
            linger: None,
        };
        self.wind_down = None;
        // Everything is answered: a server not started yet is not needed.
        if !self.cancel_server(ctx) {
            self.server.stop(ctx.out);
        }
    }

    fn fail_in_flight_with(&mut self, code: i64, message: &str) {
        let ids = self.requests.take_in_flight();
        self.answer_all(ids, code, message);
        self.setup.pending_initialize = None;
    }

    /// Answers each request with an error made by the relay.
    fn answer_all(&mut self, ids: Vec<RawId>, code: i64, message: &str) {
        if !ids.is_empty() {
            log::debug!(
                "{}: the relay answers {} request(s) with error {code}: {message}",
                self.label,
                ids.len()
            );
        }
        if self.shutting_down && !message.contains("shutting down") {
            // The shutdown is why, whatever the server did as it stopped.
            let detail = message.strip_prefix("mcp-relay: ").unwrap_or(message);
            let text = format!("mcp-relay: the relay is shutting down ({detail})");
            self.requests.answer_all(ids, code, &text, &mut self.client);
        } else {
            self.requests
                .answer_all(ids, code, message, &mut self.client);
        }
    }

    /// A server not started yet never will be; false once it has started.
    fn cancel_server(&mut self, ctx: &mut Ctx<'_>) -> bool {
        let cancelled = self.server.cancel(ctx.out);
        if cancelled {
            ctx.stats.starts_cancelled += 1;
        }
        cancelled
    }

    /// The client will send nothing more (end of file, gone, or shutdown).
    fn client_gone(&mut self, ctx: &mut Ctx<'_>) {
        if self.client_eof {
            return;
        }
        self.client_eof = true;
        self.stopping = true;
        self.heartbeat.on = false;
        if matches!(
            self.phase,
            Phase::Restarting { .. } | Phase::Respawning { .. } | Phase::Replaying { .. }
        ) {
            self.end(EndReason::ClientLeftDuringRestart, ctx);
        }
        // A server not started yet is started only if it has requests to answer for a
        // client that can still read them (a half-closed client): else it never starts.
        let nothing_to_answer = self.requests.waiting() == 0 || self.client.is_gone();
        if nothing_to_answer && self.cancel_server(ctx) {
            return;
        }
        let drain = ctx.config.drain_timeout;
        if !nothing_to_answer
            && matches!(self.client, ClientSide::Tcp(_))
            && !self.shutting_down
            && !drain.is_zero()
            && matches!(self.phase, Phase::Serving)
        {
            // A half-closed client still reads: its server keeps its stdin until it has
            // answered (a server may exit at end of input and drop its work), at most
            // `--drain-timeout`.
            self.wind_down = Some(ctx.now + drain);
            return;
        }
        self.server.stop(ctx.out);
    }

    /// The wind-down is over (nothing waits, or its deadline passed): the client is let go
    /// and the server's stdin closed.
    fn wind_down_now(&mut self, ctx: &mut Ctx<'_>) {
        if self.client_eof {
            if !(self.requests.waiting() == 0 && self.cancel_server(ctx)) {
                self.server.stop(ctx.out);
            }
        } else {
            self.client_gone(ctx);
        }
    }

    /// `--request-timeout`: each request past its deadline is answered by the relay, and the
    /// server is told to stop working on it.
    fn request_timeouts(&mut self, ctx: &mut Ctx<'_>) {
        let Some(limit) = ctx.config.request_timeout else {
            return;
        };
        let due: Vec<RawId> = self
            .clocks
            .iter()
            .filter(|(_, c)| c.deadline <= ctx.now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.clocks.remove(&id);
            let cancel = format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{},"reason":"mcp-relay: no answer within {limit:?} (--request-timeout)"}}}}"#,
                id.as_str()
            );
            if self.requests.answered(&id) {
                if matches!(self.phase, Phase::Serving) {
                    self.server.stage_line(cancel.as_bytes());
                }
            } else if self.requests.unhold(&id) {
                // Its line still goes to the replacement; the cancellation follows it.
                self.requests.hold(cancel.as_bytes());
            } else {
                continue;
            }
            log::warn!(
                "{}: request {id} got no answer within {limit:?} (--request-timeout); answered with an error and cancelled",
                self.label
            );
            let text = format!(
                "mcp-relay: the server did not answer this request within {limit:?} (--request-timeout); it was cancelled"
            );
            self.client.error(Some(&id), codes::REQUEST_TIMEOUT, &text);
        }
    }

    /// Tells the driver which sides to read: the connection unless the server's queue is
    /// loaded, too many requests wait, or the client is done; the server unless the client
    /// queue is loaded (or what it said waits to be framed).
    fn update_pauses(&mut self, client_backlog: bool, ctx: &mut Ctx<'_>) {
        let waiting = self.requests.waiting();
        let held_full = self.requests.held_len() > ctx.config.max_buffered;
        // A client that does not read its answers does not get to send more either.
        let conn_pause = self.server.is_loaded()
            || self.client.is_loaded()
            || client_backlog
            || held_full
            || waiting >= ctx.config.max_in_flight
            || (self.client_eof && !self.client.is_gone());
        let conn_open = !self.client.is_finished();
        if conn_open && conn_pause != self.conn_paused {
            self.conn_paused = conn_pause;
            if log::log_enabled!(log::Level::Debug) {
                let why = if !conn_pause {
                    "resumed reading the client"
                } else if self.server.is_loaded() || held_full {
                    "paused reading the client: the server is not taking input fast enough"
                } else if self.client.is_loaded() || client_backlog {
                    "paused reading the client: it is not reading its answers"
                } else if waiting >= ctx.config.max_in_flight {
                    "paused reading the client: --max-in-flight requests wait for answers"
                } else {
                    "paused reading the client: it closed its side"
                };
                log::debug!("{}: {why}", self.label);
            }
            if !conn_pause && self.heartbeat.last_heard.is_some() {
                // The client was not silent; the relay was not reading it.
                self.heartbeat.last_heard = Some(ctx.now);
            }
            // Over HTTP the HTTP layer reads `client_paused` and holds back request bodies.
            if let Some(conn) = self.client.conn() {
                let endpoint = Endpoint::Conn(conn);
                ctx.out.push_back(if conn_pause {
                    Output::Pause { endpoint }
                } else {
                    Output::Resume { endpoint }
                });
            }
        }
        let server_pause = self.client.is_loaded() || self.server.has_backlog();
        let changed = self.server.pause_reading(server_pause, ctx.now, ctx.out);
        if changed {
            log::debug!(
                "{}: {} reading the server{}",
                self.label,
                if server_pause { "paused" } else { "resumed" },
                if server_pause {
                    ": the client is not taking its output fast enough"
                } else {
                    ""
                }
            );
        }
        if changed && !server_pause {
            // It was not quiet; the relay was not listening.
            self.liveness.last_output = Some(ctx.now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(reason: EndReason, expect: &str) {
        assert_eq!(reason.to_string(), expect);
    }

    /// Clients and tests read these texts: they stay as they were.
    #[test]
    fn end_reasons_read_as_before() {
        let exited = ServerEnd::Exited(ExitStatus::Code(3));
        check(
            EndReason::CouldNotStart {
                server: "srv --flag".into(),
                error: "No such file or directory".into(),
            },
            "mcp-relay: could not start the server (srv --flag): No such file or directory",
        );
        check(
            EndReason::Server(exited.clone()),
            "mcp-relay: the server exited with status 3",
        );
        check(
            EndReason::GaveUp {
                end: exited,
                restarts: 5,
                window: Duration::from_secs(60),
            },
            "mcp-relay: the server exited with status 3, and it was restarted 5 times within \
             60s; the relay gave up on it",
        );
        check(
            EndReason::ReplayImpossible,
            "mcp-relay: the client's initialize could not be replayed",
        );
        check(
            EndReason::VersionChanged {
                version: "2025-03-26".into(),
                expected: "2025-06-18".into(),
            },
            "mcp-relay: the restarted server answered initialize with protocol version \
             2025-03-26, not 2025-06-18; the session cannot go on",
        );
        check(
            EndReason::InitializeRefused("error -32600: nope".into()),
            "mcp-relay: the restarted server refused initialize (error -32600: nope); the \
             session cannot go on",
        );
        check(
            EndReason::ClientLeftDuringRestart,
            "mcp-relay: the client left while the server was restarting",
        );
    }
}
