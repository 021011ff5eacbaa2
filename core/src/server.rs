//! The server side of a session: what serves its client, as a value with a small API.
//!
//! Today that is a child process speaking newline-delimited JSON-RPC on its stdin and stdout
//! ([`ChildServer`]). The session's supervision (restart, re-initialization replay, answering
//! what was in flight, liveness probes, the restart budget) is written against [`ServerSide`]
//! only, so that another kind of server (a remote Streamable HTTP, SSE or TCP server, reached
//! over a connection the relay opens) is one more variant here: "restart" is "replace the
//! server side", whether that spawns a process or connects again.
//!
//! A server side does not know about the client, the in-flight table or the phase of its
//! session: it carries bytes, runs its own stop sequence and deadlines, and says how it ended.

use crate::child::Child;
use crate::framing::{Flow, Frame, LineFramer};
use crate::outbound::Outbound;
use crate::remote::{Inbound, RemoteEnd, RemoteLimits, RemoteServer, Undelivered};
use crate::remote_config::RemoteConfig;
use crate::timer::Timer;
use crate::{ChildId, Endpoint, ExitStatus, Output, ServerId, UpId};
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// What a server side is held to, from the relay's configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Whose command a child runs.
    pub(crate) server: ServerId,
    /// Longest line read from the server.
    pub(crate) max_message_size: usize,
    /// Length from which the server's lines are handed out before they end.
    pub(crate) cut_through_from: usize,
    /// Bytes queued toward the server before it counts as loaded.
    pub(crate) max_buffered: usize,
    /// Time between the steps of the stop sequence, and for output to end after an exit.
    pub(crate) grace: Duration,
    /// How long bytes may wait for a stopping server's input, none of them read, before it
    /// is treated as hung.
    pub(crate) stall: Duration,
}

/// The server serving one session.
// The child is the common case and stays inline; the remote is boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum ServerSide {
    /// A child process started by the driver on the relay's behalf.
    Child(ChildServer),
    /// A remote server (Streamable HTTP, SSE or TCP) reached over connections the relay
    /// opens: "started" means connected, "stop" means finish what is in flight and close
    /// (HTTP: `DELETE` the session).
    Remote(Box<RemoteSide>),
}

/// A remote server as a server side.
#[derive(Debug)]
pub(crate) struct RemoteSide {
    remote: RemoteServer,
    /// Which of the configured URLs it is (failover moves on after one is unreachable).
    index: usize,
    /// A URL found unreachable, not yet reported to the relay.
    unreachable: Option<usize>,
    hung: Option<Hang>,
    config: RemoteConfig,
    limits: RemoteLimits,
}

/// A child process as a server: its lifecycle, its stdin queue and its stdout framer.
#[derive(Debug)]
pub(crate) struct ChildServer {
    child: Child,
    stdin: Outbound,
    /// Frames stdout. Lent to the session while it handles the lines (see [`Reader`]).
    stdout: LineFramer,
    /// The relay found it hung (and why): its output is no longer wanted.
    hung: Option<Hang>,
    /// What the driver was last told about reading its stdout.
    paused: bool,
    /// Since when bytes for its stdin have waited without any being written.
    stalled_since: Option<Instant>,
    limits: Limits,
}

/// A server side's output reader, lent to the session while it handles what was read: the
/// handler needs the rest of the session, this server side included.
#[derive(Debug)]
pub(crate) struct Reader {
    from: ChildId,
    framer: LineFramer,
}

impl Reader {
    /// Feeds bytes the server wrote; `f` gets every message they complete, until it stops.
    pub(crate) fn push(&mut self, data: &[u8], f: impl FnMut(Frame<'_>) -> Flow) {
        self.framer.push(data, f);
    }

    /// Hands out what was held back while the session was loaded.
    pub(crate) fn resume(&mut self, f: impl FnMut(Frame<'_>) -> Flow) {
        self.framer.resume(f);
    }
}

/// Dispatches a call to the variant; every variant offers the same methods.
macro_rules! each {
    ($side:expr, $s:ident => $call:expr, $r:ident => $rcall:expr) => {
        match $side {
            ServerSide::Child($s) => $call,
            ServerSide::Remote($r) => $rcall,
        }
    };
}

impl ServerSide {
    /// A child asked of the driver now; it serves once [`ServerSide::spawned`].
    pub(crate) fn spawn_child(id: ChildId, limits: Limits, out: &mut VecDeque<Output>) -> Self {
        ServerSide::with_child(Child::spawn(id, limits.server, out), limits)
    }

    /// A child already asked for (prespawned), running or still starting.
    pub(crate) fn with_child(child: Child, limits: Limits) -> Self {
        ServerSide::Child(ChildServer::new(child, limits))
    }

    /// A remote server, its first connection asked of the driver now; it serves once
    /// connected (see [`ServerSide::take_up`]).
    pub(crate) fn connect_remote(
        id: ChildId,
        config: &RemoteConfig,
        index: usize,
        limits: Limits,
        out: &mut VecDeque<Output>,
    ) -> Self {
        let limits = RemoteLimits {
            max_message_size: limits.max_message_size,
            max_buffered: limits.max_buffered,
            grace: limits.grace,
        };
        ServerSide::Remote(Box::new(RemoteSide {
            remote: RemoteServer::connect(id, config, index, limits, out),
            index,
            unreachable: None,
            hung: None,
            config: config.clone(),
            limits,
        }))
    }

    /// Replaces a finished server side with a new one of the same kind, being started: the
    /// driver may drop what it holds of the old one. `id` names the new child (or remote
    /// incarnation). A remote that could not be reached is replaced by the next URL.
    pub(crate) fn restart(&mut self, id: ChildId, out: &mut VecDeque<Output>) {
        match self {
            ServerSide::Child(c) => {
                out.push_back(Output::Release { child: c.child.id });
                *self = ServerSide::spawn_child(id, c.limits, out);
            }
            ServerSide::Remote(r) => {
                let unreachable = matches!(
                    r.remote.ended(),
                    Some(RemoteEnd::Unreachable { .. } | RemoteEnd::ConnectTimeout { .. })
                );
                if unreachable {
                    r.unreachable = Some(r.index);
                    r.index = (r.index + 1) % r.config.urls.len().max(1);
                }
                r.hung = None;
                r.remote = RemoteServer::connect(id, &r.config, r.index, r.limits, out);
            }
        }
    }

    // ---- getters ----

    /// The child process serving, or the remote incarnation (routing of the driver's
    /// inputs: a remote's connections are named after it).
    pub(crate) fn child_id(&self) -> Option<ChildId> {
        each!(self, c => Some(c.child.id), r => Some(r.remote.id()))
    }

    /// The URL a remote serves from (its index in the configuration).
    pub(crate) fn remote_index(&self) -> Option<usize> {
        match self {
            ServerSide::Remote(r) => Some(r.index),
            ServerSide::Child(_) => None,
        }
    }

    /// A URL this remote found unreachable since last asked.
    pub(crate) fn take_unreachable(&mut self) -> Option<usize> {
        match self {
            ServerSide::Remote(r) => r.unreachable.take(),
            ServerSide::Child(_) => None,
        }
    }

    /// A process serves (not a remote): the driver holds something of it to release.
    pub(crate) fn is_process(&self) -> bool {
        matches!(self, ServerSide::Child(_))
    }

    /// Inputs about this child are this server side's.
    pub(crate) fn owns(&self, child: ChildId) -> bool {
        self.child_id() == Some(child)
    }

    /// Started, not asked to stop, and not found hung: it can serve.
    pub(crate) fn is_up(&self) -> bool {
        each!(self,
            c => c.child.is_running() && c.hung.is_none(),
            r => r.remote.is_up() && r.hung.is_none())
    }

    /// A child's line is partly read (its end may still come).
    pub(crate) fn has_partial_output(&self) -> bool {
        match self {
            ServerSide::Child(c) => c.stdout.has_partial(),
            ServerSide::Remote(_) => false,
        }
    }

    /// Found hung: what it still says is dropped.
    pub(crate) fn is_hung(&self) -> bool {
        each!(self, c => c.hung.is_some(), r => r.hung.is_some())
    }

    /// Gone for good, and all its output in (or given up on).
    pub(crate) fn is_finished(&self) -> bool {
        // A remote's messages read and not yet taken (a slow client) are still its output.
        each!(self, c => c.child.is_finished(), r => r.remote.is_finished() && !r.remote.has_backlog())
    }

    /// Why it stopped serving, once it is finished.
    pub(crate) fn ended(&self) -> Option<ServerEnd> {
        each!(self, c => c.ended(), r => {
            let end = r.remote.ended()?;
            Some(match &r.hung {
                Some(hang) => ServerEnd::Hung(hang.clone()),
                None => ServerEnd::Remote(end.clone()),
            })
        })
    }

    /// Bytes held for it and from it: the queue toward it and an unfinished message.
    pub(crate) fn buffered(&self) -> usize {
        each!(self, c => c.stdin.load() + c.stdout.buffered(), r => r.remote.buffered())
    }

    /// Bytes queued toward it.
    pub(crate) fn load(&self) -> usize {
        each!(self, c => c.stdin.load(), r => r.remote.load())
    }

    /// Its queue is above the mark: what feeds it should not be read.
    pub(crate) fn is_loaded(&self) -> bool {
        each!(self, c => c.stdin.is_loaded(), r => r.remote.is_loaded())
    }

    /// It takes messages now (else they wait for its replacement).
    pub(crate) fn accepts(&self) -> bool {
        each!(self, c => c.stdin.accepts(), r => r.remote.accepts() && r.hung.is_none())
    }

    /// The relay is not reading it (backpressure).
    pub(crate) fn is_paused(&self) -> bool {
        each!(self, c => c.paused, r => r.remote.is_paused())
    }

    /// Everything sent to it is written and the relay reads it: it can answer, so a
    /// deadline for an answer may run.
    pub(crate) fn can_answer(&self) -> bool {
        let written = each!(self, c => c.stdin.all_written(), r => r.remote.can_answer());
        written && !self.is_paused()
    }

    /// Since when bytes for it have waited with none written (a remote's connections are
    /// judged by liveness probes instead).
    pub(crate) fn stalled_since(&self) -> Option<Instant> {
        each!(self, c => c.stalled_since, _r => None)
    }

    /// Messages it wrote that the session has not taken yet (held back while loaded).
    pub(crate) fn has_backlog(&self) -> bool {
        each!(self, c => c.stdout.has_backlog(), r => r.remote.has_backlog())
    }

    /// Its own next deadline: a step of the stop sequence, the end of its output after an
    /// exit, a stopping server that reads nothing; for a remote, its connections' deadlines.
    pub(crate) fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        each!(self, c => c.poll_timeout(), r => r.remote.poll_timeout())
    }

    /// A remote whose messages come as [`Inbound`]s rather than through the reader.
    pub(crate) fn has_inbox(&self) -> bool {
        matches!(self, ServerSide::Remote(r) if !r.remote.frames_lines())
    }

    /// The remote came up (its first connection opened) since last asked.
    pub(crate) fn take_up(&mut self) -> bool {
        each!(self, _c => false, r => r.remote.take_up())
    }

    /// The next message a remote sent.
    pub(crate) fn next_inbound(&mut self) -> Option<Inbound> {
        each!(self, _c => None, r => r.remote.next_inbound())
    }

    /// What provably never reached a remote that ended.
    pub(crate) fn take_undelivered(&mut self) -> Vec<Undelivered> {
        each!(self, _c => Vec::new(), r => r.remote.take_undelivered())
    }

    // ---- the reader ----

    /// Lends out the reader of its output (give it back with [`ServerSide::return_reader`]).
    /// An HTTP remote's reader frames nothing: its messages come through
    /// [`ServerSide::next_inbound`].
    pub(crate) fn lend_reader(&mut self) -> Reader {
        each!(self, c => Reader {
            from: c.child.id,
            framer: std::mem::replace(&mut c.stdout, LineFramer::new(1)),
        }, r => {
            let from = r.remote.id();
            let framer = match r.remote.framer_mut() {
                Some(f) => std::mem::replace(f, LineFramer::new(1)),
                None => LineFramer::new(1),
            };
            Reader { from, framer }
        })
    }

    /// Takes the reader back; one lent by a server side since replaced is dropped.
    pub(crate) fn return_reader(&mut self, reader: Reader) {
        each!(self, c => if reader.from == c.child.id {
            c.stdout = reader.framer;
        }, r => if reader.from == r.remote.id() {
            if let Some(f) = r.remote.framer_mut() {
                *f = reader.framer;
            }
        })
    }

    // ---- mutators ----

    /// Queues one message (a line without its newline).
    pub(crate) fn stage_line(&mut self, line: &[u8]) {
        each!(self, c => c.stdin.stage_line(line), r => r.remote.stage_line(line))
    }

    /// Queues the relay's liveness probe (a remote sends it ahead of what waits).
    pub(crate) fn stage_probe(&mut self, line: &[u8]) {
        each!(self, c => c.stdin.stage_line(line), r => r.remote.stage_probe(line))
    }

    /// Queues the start (or more) of a client line ahead of its end (cut-through; a child
    /// only): lines queued meanwhile wait for its end.
    pub(crate) fn stage_part(&mut self, bytes: &[u8]) {
        each!(self, c => c.stdin.stage_part(bytes), r => r.remote.stage(bytes))
    }

    /// Ends the line begun with [`ServerSide::stage_part`] with `rest` and its newline (an
    /// empty `rest` cuts it short).
    pub(crate) fn end_part(&mut self, rest: &[u8]) {
        each!(self, c => c.stdin.end_part(rest), r => {
            r.remote.stage(rest);
            r.remote.stage(b"\n")
        })
    }

    /// Ends the line begun with [`ServerSide::stage_part`] short (a newline now): it will not
    /// be completed. A child may answer it with an `"id": null` error ([`Self::take_cut`]).
    pub(crate) fn cut_part(&mut self) {
        if let ServerSide::Child(c) = self {
            c.stdin.cut_part();
        }
    }

    /// A line was cut short at the child and its `"id": null` answer not seen yet: true
    /// (and one fewer owed) if so.
    pub(crate) fn take_cut(&mut self) -> bool {
        match self {
            ServerSide::Child(c) => c.stdin.take_cut(),
            ServerSide::Remote(_) => false,
        }
    }

    /// Queues bytes that are whole lines already.
    pub(crate) fn stage(&mut self, lines: &[u8]) {
        each!(self, c => c.stdin.stage(lines), r => r.remote.stage(lines))
    }

    /// Hands what is queued to the driver.
    pub(crate) fn flush(&mut self, out: &mut VecDeque<Output>) {
        each!(self, c => c.stdin.flush(out), r => r.remote.flush(out))
    }

    /// After the session flushed: a stopping child's grace period starts once its stdin is
    /// closed, and a queue that does not move counts as stalled; a remote hands its queue
    /// to connections.
    pub(crate) fn settle(&mut self, now: Instant, out: &mut VecDeque<Output>) {
        each!(self, c => c.settle(now), r => r.remote.settle(now, out))
    }

    /// Stops reading it (or reads it again); true if that changed what the driver does.
    pub(crate) fn pause_reading(
        &mut self,
        paused: bool,
        now: Instant,
        out: &mut VecDeque<Output>,
    ) -> bool {
        each!(self, c => c.pause_reading(paused, now, out), r => r.remote.pause_reading(paused, out))
    }

    /// Graceful stop: what is queued is written, then its input closes and the stop sequence
    /// runs. Idempotent.
    pub(crate) fn stop(&mut self, out: &mut VecDeque<Output>) {
        each!(self, c => {
            c.stdin.close_when_flushed(out);
            c.child.stop();
        }, r => r.remote.stop())
    }

    /// The session, stopping, waits for nothing more from it (a remote may close now; a
    /// child's stop sequence has its own course).
    pub(crate) fn quiet(&mut self, now: Instant, out: &mut VecDeque<Output>) {
        if let ServerSide::Remote(r) = self {
            r.remote.quiet(now, out);
        }
    }

    /// Not wanted any more: if it has not started yet, it never will (the driver is told),
    /// and it is finished at once; false (and nothing done) once it has started.
    pub(crate) fn cancel(&mut self, out: &mut VecDeque<Output>) -> bool {
        each!(self, c => {
            let cancelled = c.child.cancel(out);
            if cancelled {
                c.stdin_gone();
            }
            cancelled
        }, r => r.remote.cancel(out))
    }

    /// It is hung: drop what is queued for it and what it says, and stop it at once
    /// (SIGTERM, then SIGKILL; a remote's connections are closed).
    pub(crate) fn terminate_hung(&mut self, why: Hang, now: Instant, out: &mut VecDeque<Output>) {
        each!(self, c => {
            c.hung = Some(why);
            c.stdin_gone();
            c.child.terminate(now, c.limits.grace, out);
        }, r => {
            r.hung = Some(why);
            r.remote.kill(out);
        })
    }

    /// Immediate shutdown: kill it and wait for nothing more of it.
    pub(crate) fn kill(&mut self, out: &mut VecDeque<Output>) {
        each!(self, c => {
            c.child.kill(out);
            c.child.abandon_output();
            c.stdin_gone();
        }, r => r.remote.kill(out))
    }

    // ---- handle_* ----

    /// It is running (a remote: connected). A stop asked for while it started begins now.
    pub(crate) fn spawned(&mut self, pid: u32, out: &mut VecDeque<Output>) {
        if let ServerSide::Child(c) = self {
            if c.child.spawned(pid, out) {
                c.stdin.close_when_flushed(out);
                c.child.stop();
            }
            c.stdin.open(out);
        }
    }

    /// It could not be started (a remote: reached).
    pub(crate) fn spawn_failed(&mut self, error: &str) {
        if let ServerSide::Child(c) = self {
            c.child.spawn_failed(error);
            c.stdin_gone();
        }
    }

    /// It exited; its output may still be coming.
    pub(crate) fn exited(&mut self, status: ExitStatus, now: Instant, out: &mut VecDeque<Output>) {
        if let ServerSide::Child(c) = self {
            c.child.exited(status, now, c.limits.grace, out);
            c.stdin_gone();
        }
    }

    /// The driver wrote `n` bytes toward it.
    pub(crate) fn written(&mut self, n: usize, now: Instant, out: &mut VecDeque<Output>) {
        if let ServerSide::Child(c) = self {
            c.stdin.written(n, out);
            c.stalled_since = (c.stdin.in_driver() > 0).then_some(now);
        }
    }

    /// Its output ended: it can no longer answer, so it is stopped (its exit decides what
    /// comes next). True if a message was cut off.
    pub(crate) fn output_eof(&mut self, out: &mut VecDeque<Output>) -> bool {
        match self {
            ServerSide::Child(c) => c.output_eof(out),
            ServerSide::Remote(_) => false,
        }
    }

    /// Nothing more can be written to it: it is stopped.
    pub(crate) fn input_broken(&mut self) {
        if let ServerSide::Child(c) = self {
            c.stdin_gone();
            c.child.stop();
        }
    }

    /// Its diagnostics (a child's stderr), logged under `label`.
    pub(crate) fn stderr(&mut self, label: &str, data: &[u8]) {
        if let ServerSide::Child(c) = self {
            c.child.stderr(label, data)
        }
    }

    /// The end of its diagnostics.
    pub(crate) fn stderr_eof(&mut self, label: &str) {
        if let ServerSide::Child(c) = self {
            c.child.stderr_eof(label)
        }
    }

    /// A login's outcome; whether this is a remote server.
    pub(crate) fn remote_token(&mut self, token: Result<&str, &str>) -> bool {
        match self {
            ServerSide::Remote(r) => {
                // The next incarnation (a reconnect) starts with it too.
                if let Ok(t) = token {
                    r.config.set_bearer(t);
                }
                r.remote.remote_token(token);
                true
            }
            _ => false,
        }
    }

    /// One of a remote's connections opened.
    pub(crate) fn upstream_connected(
        &mut self,
        up: UpId,
        now: Instant,
        out: &mut VecDeque<Output>,
    ) {
        if let ServerSide::Remote(r) = self {
            r.remote.connected(up, now, out);
        }
    }

    /// One of a remote's connections could not be opened.
    pub(crate) fn upstream_connect_failed(
        &mut self,
        up: UpId,
        error: &str,
        out: &mut VecDeque<Output>,
    ) {
        if let ServerSide::Remote(r) = self {
            r.remote.connect_failed(up, error, out);
        }
    }

    /// Bytes from an HTTP remote's connection (a TCP remote's go through the reader).
    pub(crate) fn upstream_data(
        &mut self,
        up: UpId,
        data: &[u8],
        now: Instant,
        out: &mut VecDeque<Output>,
    ) {
        if let ServerSide::Remote(r) = self {
            r.remote.data(up, data, now, out);
        }
    }

    /// A remote's connection reached end of file.
    pub(crate) fn upstream_eof(&mut self, up: UpId, now: Instant, out: &mut VecDeque<Output>) {
        if let ServerSide::Remote(r) = self {
            r.remote.eof(up, now, out);
        }
    }

    /// A remote's connection failed.
    pub(crate) fn upstream_broken(
        &mut self,
        up: UpId,
        reason: &str,
        now: Instant,
        out: &mut VecDeque<Output>,
    ) {
        if let ServerSide::Remote(r) = self {
            r.remote.broken(up, reason, now, out);
        }
    }

    /// The driver wrote `n` bytes to a remote's connection.
    pub(crate) fn upstream_written(&mut self, up: UpId, n: usize, out: &mut VecDeque<Output>) {
        if let ServerSide::Remote(r) = self {
            r.remote.written(up, n, out);
        }
    }

    /// Runs its own due deadlines: the stop sequence's steps, the end of output after an exit;
    /// a remote's connection and stream deadlines. Returns whether it gave up on the output
    /// of an exited child now.
    pub(crate) fn handle_timeout(&mut self, now: Instant, out: &mut VecDeque<Output>) -> bool {
        each!(self, c => c.child.handle_timeout(now, c.limits.grace, out), r => {
            r.remote.handle_timeout(now, out);
            false
        })
    }

    /// A stopping server that has read none of what waits for it within the stall limit will
    /// never see the end of its input: it is hung (the session decides what that means).
    pub(crate) fn stop_stalled(&self, now: Instant) -> Option<Hang> {
        each!(self, c => c.stop_stalled(now), _r => None)
    }
}

impl ChildServer {
    fn new(child: Child, limits: Limits) -> Self {
        let running = child.pid().is_some();
        ChildServer {
            stdin: Outbound::new(Endpoint::Child(child.id), running, limits.max_buffered),
            child,
            stdout: LineFramer::with_early(limits.max_message_size, limits.cut_through_from),
            hung: None,
            paused: false,
            stalled_since: None,
            limits,
        }
    }

    pub(crate) fn id(&self) -> ChildId {
        self.child.id
    }

    fn ended(&self) -> Option<ServerEnd> {
        if !self.child.is_finished() {
            return None;
        }
        let child = &self.child;
        Some(
            match (&self.hung, child.exit_status(), child.spawn_error()) {
                (Some(hang), _, _) => ServerEnd::Hung(hang.clone()),
                (None, Some(status), _) => ServerEnd::Exited(status),
                (None, None, Some(error)) => ServerEnd::CouldNotStart(error.to_owned()),
                (None, None, None) => ServerEnd::Gone,
            },
        )
    }

    fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        let stall = self
            .stalled_since
            .filter(|_| self.child.awaits_stdin_close())
            .map(|t| (t + self.limits.stall, Timer::StopStall));
        [self.child.poll_timeout(), stall]
            .into_iter()
            .flatten()
            .min_by_key(|(d, _)| *d)
    }

    fn settle(&mut self, now: Instant) {
        if self.child.awaits_stdin_close() && self.stdin.is_finished() {
            self.child.stdin_closed(now, self.limits.grace);
        }
        if self.stdin.in_driver() == 0 {
            self.stalled_since = None;
        } else if self.stalled_since.is_none() {
            self.stalled_since = Some(now);
        }
    }

    fn pause_reading(&mut self, paused: bool, now: Instant, out: &mut VecDeque<Output>) -> bool {
        let open = self.child.pid().is_some() || self.child.exit_status().is_some();
        if !open || self.child.is_finished() || paused == self.paused {
            return false;
        }
        self.paused = paused;
        self.child.set_output_paused(paused, now, self.limits.grace);
        let endpoint = Endpoint::Child(self.child.id);
        out.push_back(if paused {
            Output::Pause { endpoint }
        } else {
            Output::Resume { endpoint }
        });
        true
    }

    fn output_eof(&mut self, out: &mut VecDeque<Output>) -> bool {
        let cut = self.stdout.has_partial();
        self.stdout =
            LineFramer::with_early(self.limits.max_message_size, self.limits.cut_through_from);
        self.child.stdout_eof();
        self.stdin.close_when_flushed(out);
        self.child.stop();
        cut
    }

    fn stop_stalled(&self, now: Instant) -> Option<Hang> {
        let limit = self.limits.stall;
        (self.child.awaits_stdin_close()
            && !self.stdin.is_finished()
            && self.stalled_since.is_some_and(|t| t + limit <= now))
        .then_some(Hang::StoppingStalled(limit))
    }

    fn stdin_gone(&mut self) {
        self.stdin.set_gone();
        self.stalled_since = None;
    }
}

impl fmt::Display for ServerSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerSide::Child(c) => c.child.id.fmt(f),
            ServerSide::Remote(r) => write!(
                f,
                "remote#{} ({} over {})",
                r.remote.id().0,
                r.remote.url(),
                r.remote.transport()
            ),
        }
    }
}

/// Why a server side stopped serving. `Display` gives the text clients and logs see after
/// `mcp-relay: `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ServerEnd {
    /// The process exited, or was killed by a signal.
    Exited(ExitStatus),
    /// A replacement could not be started (the first start failing ends the session at once,
    /// with the command in the text: see the session's `EndReason::CouldNotStart`).
    CouldNotStart(String),
    /// The relay found it hung and stopped it.
    Hung(Hang),
    /// It finished with no known cause.
    Gone,
    /// A remote server ended (unreachable, closed, forgot the session, ...).
    Remote(RemoteEnd),
}

impl ServerEnd {
    /// A clean exit (status 0), which `--restart on-failure` does not restart.
    pub(crate) fn is_clean(&self) -> bool {
        match self {
            ServerEnd::Exited(status) => status.success(),
            ServerEnd::Remote(end) => end.is_clean(),
            _ => false,
        }
    }
}

impl fmt::Display for ServerEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerEnd::Exited(status) => write!(f, "the server {status}"),
            ServerEnd::CouldNotStart(error) => {
                write!(f, "the server could not be started again: {error}")
            }
            ServerEnd::Hung(why) => write!(f, "hung: {why}"),
            ServerEnd::Gone => f.write_str("the server is gone"),
            ServerEnd::Remote(end) => end.fmt(f),
        }
    }
}

/// Why the relay judged a server hung.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Hang {
    /// Bytes for its stdin waited this long with none read.
    StdinStalled(Duration),
    /// It did not answer a probe within this long.
    ProbeUnanswered(Duration),
    /// It was stopping and read none of what was still queued for it within this long.
    StoppingStalled(Duration),
    /// It replaced a server that ended (`after`) and did not answer the replayed
    /// `initialize` within this long.
    ReplayUnanswered {
        after: Box<ServerEnd>,
        within: Duration,
    },
}

impl fmt::Display for Hang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hang::StdinStalled(d) => write!(f, "the server stopped reading its stdin for {d:?}"),
            Hang::ProbeUnanswered(d) => write!(f, "the server did not answer a ping within {d:?}"),
            Hang::StoppingStalled(d) => {
                write!(f, "it read none of its input for {d:?} while stopping")
            }
            Hang::ReplayUnanswered { after, within } => write!(
                f,
                "{after}; its replacement did not answer initialize within {within:?}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The server side's behaviour over time (starts, restarts, hangs, pauses, stalls) is
    // tested by the simulation in `tests/` with its fake clock: the core's own tests read no
    // clock, and an `Instant` cannot be had without one.

    fn check(end: ServerEnd, expect: &str) {
        assert_eq!(end.to_string(), expect);
    }

    #[test]
    fn ends_read_as_before() {
        let s = Duration::from_secs(2);
        check(
            ServerEnd::Exited(ExitStatus::Code(3)),
            "the server exited with status 3",
        );
        check(
            ServerEnd::Exited(ExitStatus::Signal(9)),
            "the server was killed by signal 9",
        );
        check(
            ServerEnd::CouldNotStart("no such file".into()),
            "the server could not be started again: no such file",
        );
        check(ServerEnd::Gone, "the server is gone");
        check(
            ServerEnd::Hung(Hang::ProbeUnanswered(s)),
            "hung: the server did not answer a ping within 2s",
        );
        check(
            ServerEnd::Hung(Hang::StdinStalled(s)),
            "hung: the server stopped reading its stdin for 2s",
        );
        check(
            ServerEnd::Hung(Hang::StoppingStalled(s)),
            "hung: it read none of its input for 2s while stopping",
        );
        check(
            ServerEnd::Hung(Hang::ReplayUnanswered {
                after: Box::new(ServerEnd::Hung(Hang::ProbeUnanswered(s))),
                within: s,
            }),
            "hung: hung: the server did not answer a ping within 2s; its replacement did not \
             answer initialize within 2s",
        );
    }
}
