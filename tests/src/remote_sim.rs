//! Client mode, simulated: the relay's own stdio client in front of the scripted remote of
//! [`crate::remote`] (Streamable HTTP, HTTP+SSE or TCP), with a fake clock and one seed.
//!
//! The harness plays the driver (it performs every [`Output`] and reports facts back as
//! [`Input`]s), the local client on the relay's stdin and stdout, and, through
//! [`Remote`], the server behind every connection the relay opens. As in [`crate::sim`], a
//! step is one input (or one `handle_timeout`) followed by performing every output; peers act
//! at scheduled moments; the clock jumps to the next event or deadline.
//!
//! The local client initializes (again, with a new id, if that fails), sends requests with
//! unique ids (tool calls, some with progress tokens, lists, pings) a few at a time,
//! notifications, answers the remote's requests, cancels some calls, reads what the relay
//! writes at its own pace (sometimes slowly, so backpressure happens), and closes stdin once
//! every answer is in (some runs close it early). The driver splits every byte stream at
//! random points, connects late or not at all as the remote says, and cuts connections the
//! remote cuts (an end of file after what was written, or a reset that loses what the relay
//! has not read).
//!
//! # Invariants (strict: a violation fails the seed)
//!
//! Checked after every step:
//! 1. No client request is answered twice; no answer names an id the client never sent; every
//!    request the relay read is answered within a bound (the slowest scripted call plus one
//!    round of every delay the relay may add: `connect_timeout`, `max_restart_delay`,
//!    `ping_interval` + `ping_timeout`, `shutdown_grace`, and 5 s).
//! 2. No message the remote meant for the client reaches it twice; a resumption (`GET` with
//!    `Last-Event-ID`) neither skips an event the relay did not read completely nor repeats
//!    one it did (judged by the remote, which knows what the relay read).
//! 3. The remote never serves a client request twice, and receives it again only after a 404;
//!    while stdin is not paused, the relay counts no more requests waiting than the client has
//!    read, not answered and not cancelled; a stream is not resumed for a cancelled request.
//! 4. A resumption is asked for exactly `retry` after the relay learned its stream broke
//!    (simulated time, no slack).
//! 5. `Relay::buffered(stdio) <= Relay::buffer_bound()`.
//!
//! Also: nothing is sent, paused, resumed or closed on a connection after it closed, broke or
//! failed to open, and none is closed twice; the relay closes stdio only after its client
//! closed stdin or after it gave the session up (`--max-restarts`), never because of a fault
//! it should survive; it finds a remote hung only when the remote stalled, and a session that
//! stalls is ended (its connections closed) within `ping_interval + ping_timeout +
//! connect_timeout + shutdown_grace` + 1 s; no ERROR is logged but one per session given up;
//! after `handle_timeout(now)` no deadline is at or before `now`.
//!
//! At the end (nothing left to happen):
//! 1. Every client request got exactly one answer, except a cancelled one (at most one), one
//!    the relay never read whole, and one it read after it gave the session up (it closes the
//!    connection then; the TCP simulation excuses the same).
//! 2. Every message the remote meant for the client that the relay read completely reached the
//!    client exactly once, except an answer to a cancelled request, or to a request the relay
//!    had already answered with its own error before it read the remote's.
//! 6. The relay is finished within `shutdown_grace` + 5 s (plus the time the client took to
//!    read) after the client closed stdin, and every connection it opened was closed by it,
//!    failed to open, or broke.

use crate::clock::{Clock, Ms};
use crate::logger;
use crate::remote::{self, Act, Kind, Mark, Remote, Wire};
use crate::rng::Rng;
use crate::runner::World;
use crate::sim::{ShowInput, ShowOutput};
use crate::trace::{Bytes, Trace};
use mcp_relay_core::{
    Config, ConnId, Endpoint, Input, Output, Relay, RemoteConfig, RemoteTransport, RemoteUrl,
    RestartPolicy, Stats, UpId,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::Duration;

/// The relay's own stdin and stdout.
pub const STDIO: ConnId = ConnId(1);

/// Something scheduled.
#[derive(Debug)]
enum Ev {
    Client(ClientAct),
    /// The driver reads what the client wrote to stdin.
    ReadStdin,
    /// The driver writes what the relay sent to the client's stdout.
    WriteStdout,
    /// The driver reports how a `Connect` went.
    ConnectResult(UpId),
    /// The driver writes what the relay sent toward the remote.
    WriteUp(UpId),
    /// The driver reads what the remote wrote.
    ReadUp(UpId),
    /// The remote's reset reaches the driver.
    ResetUp(UpId),
    Remote(Act),
}

#[derive(Debug)]
enum ClientAct {
    /// Sends the next request (or `initialize` again) if it may.
    Tick,
    Cancel(i64),
    /// Answers the remote's request.
    Answer(Value),
    /// Closes stdin.
    Close,
    /// Gives up waiting after a long silence.
    Patience,
}

#[derive(Debug, PartialEq, Eq)]
enum Init {
    Pending(i64),
    /// Failed; tries again at the next tick.
    Failed,
    Done,
    GaveUp,
}

#[derive(Debug)]
pub struct Req {
    pub method: &'static str,
    /// Offset of its last byte in what the client wrote to stdin.
    pub end: usize,
    pub cancelled: bool,
    /// Offset of the last byte of its cancellation in what the client wrote.
    pub cancel_end: Option<usize>,
    /// The step in which the relay read its last byte, and when.
    pub fed_step: Option<u64>,
    pub fed_at: Option<Duration>,
    pub answers: u32,
    /// The step in which the relay wrote its (first) answer, and whether it was an error.
    pub answered_step: Option<u64>,
    pub error: bool,
}

/// The local stdio client.
#[derive(Debug)]
struct Client {
    rng: Rng,
    next_id: i64,
    init: Init,
    init_tries: u32,
    calls_left: u32,
    max_in_flight: usize,
    cancel: u32,
    slow_reader: u32,
    requests: BTreeMap<i64, Req>,
    /// What was delivered to it, not yet a whole line.
    rx: Vec<u8>,
    /// What the relay sent, not yet a whole line (accounting at the moment it is sent).
    sent_rx: Vec<u8>,
    stdin_closed: bool,
    stdout_closed: bool,
    ticking: bool,
    closing: bool,
    last_heard: Duration,
    /// How often each marker reached it.
    received: BTreeMap<u64, u32>,
}

#[derive(Debug, Default)]
struct Stdio {
    open: bool,
    paused: bool,
    stdin: Vec<u8>,
    /// Bytes of stdin fed to the relay, and written by the client, in all.
    fed: usize,
    written: usize,
    eof_fed: bool,
    stdout: Vec<u8>,
    read_scheduled: bool,
    write_scheduled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpState {
    Connecting,
    Open,
    /// The relay closed it.
    Closed,
    /// `ConnectFailed` was reported.
    Failed,
    /// `Broken` was reported.
    Broken,
}

/// The driver's view of a connection the relay opened.
#[derive(Debug)]
struct Up {
    asked_at: Duration,
    state: UpState,
    paused: bool,
    to_remote: Vec<u8>,
    to_relay: Vec<u8>,
    /// Bytes the remote wrote, and the relay was fed, in all.
    remote_wrote: usize,
    fed: usize,
    marks: VecDeque<(usize, Mark)>,
    /// The remote closed its side after what it wrote.
    fin: bool,
    eof_fed: bool,
    read_scheduled: bool,
    write_scheduled: bool,
}

/// What happened in a run, for the tests that check a family of runs is not vacuous.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Messages of the remote that reached the client.
    pub delivered: u64,
    /// Remote incarnations the relay found hung (all stalled), and restarts.
    pub hung: u64,
    pub restarts: u64,
    /// Times the relay paused reading a remote connection (backpressure).
    pub upstream_pauses: u64,
    /// Connections refused, and given up on while connecting.
    pub connect_failures: u64,
    pub connects_abandoned: u64,
    /// Requests the client cancelled.
    pub cancels: u64,
    pub remote: remote::RemoteTally,
}

impl Tally {
    /// Adds another run's.
    pub fn add(&mut self, o: &Tally) {
        self.delivered += o.delivered;
        self.hung += o.hung;
        self.restarts += o.restarts;
        self.upstream_pauses += o.upstream_pauses;
        self.connect_failures += o.connect_failures;
        self.connects_abandoned += o.connects_abandoned;
        self.cancels += o.cancels;
        let (r, x) = (&mut self.remote, &o.remote);
        r.resumes += x.resumes;
        r.timed_resumes += x.timed_resumes;
        r.resent_after_404 += x.resent_after_404;
        r.cut_mid_message += x.cut_mid_message;
        r.ended_early += x.ended_early;
    }
}

/// A client-mode run.
pub struct RemoteSim {
    pub seed: u64,
    pub kind: Kind,
    pub config: Config,
    rng: Rng,
    clock: Clock,
    pub relay: Relay,
    events: BTreeMap<(Duration, u64), Ev>,
    seq: u64,
    pub trace: Trace,
    pub step: u64,
    pub max_steps: u64,
    client: Client,
    stdio: Stdio,
    ups: BTreeMap<UpId, Up>,
    pub remote: Remote,
    /// The step in which the relay read each marked message completely.
    reached: BTreeMap<u64, u64>,
    late_connects: u32,
    stdin_eof_at: Option<Duration>,
    finished_at: Option<Duration>,
    stdio_closed_step: Option<u64>,
    /// The step in which the relay gave up on the session (`--max-restarts`).
    given_up_step: Option<u64>,
    /// How long the client took to read, after it closed stdin.
    read_delay_after_eof: Duration,
    stats_before: Stats,
    violation: Option<String>,
    pub max_buffered_seen: usize,
    pub tally: Tally,
    /// Remote incarnations whose connections the relay closed in this step.
    closed_now: BTreeSet<u64>,
}

fn ms(rng: &mut Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_micros(rng.range(lo * 1000, hi * 1000))
}

impl RemoteSim {
    /// A run against a remote of `kind`, drawn from `seed`.
    pub fn new(seed: u64, kind: Kind, keep_trace: bool) -> Self {
        let mut rng = Rng::new(seed);
        let (url, transport) = match kind {
            Kind::Streamable => (
                "http://remote.test:8080/mcp",
                *rng.pick(&[RemoteTransport::Auto, RemoteTransport::StreamableHttp]),
            ),
            Kind::Sse => (
                "http://remote.test:8080/sse",
                *rng.pick(&[RemoteTransport::Auto, RemoteTransport::Sse]),
            ),
            Kind::Tcp => ("tcp://remote.test:9000", RemoteTransport::Auto),
        };
        let few_restarts = rng.chance(150);
        let config = Config {
            max_message_size: 64 * 1024,
            max_buffered: *rng.pick(&[256, 1024, 64 * 1024]),
            max_read: *rng.pick(&[16, 256, 4096]),
            shutdown_grace: ms(&mut rng, 100, 2000),
            ping_interval: Some(ms(&mut rng, 1000, 4000)),
            ping_timeout: ms(&mut rng, 500, 2000),
            restart: RestartPolicy::OnFailure,
            restart_delay: ms(&mut rng, 20, 300),
            max_restart_delay: ms(&mut rng, 1000, 3000),
            max_restarts: if few_restarts {
                rng.range(2, 5) as u32
            } else {
                100
            },
            restart_window: Duration::from_secs(60),
            remote: Some(RemoteConfig {
                urls: vec![RemoteUrl::parse(url).expect("a valid URL")],
                transport,
                headers: vec![("Authorization".into(), "Bearer sim".into())],
                connect_timeout: ms(&mut rng, 1000, 4000),
                max_connections: rng.range_usize(1, 4),
                ..RemoteConfig::default()
            }),
            ..Config::default()
        };
        let client = Client {
            rng: rng.fork(),
            next_id: 1,
            init: Init::GaveUp,
            init_tries: 0,
            calls_left: rng.range(3, 25) as u32,
            max_in_flight: rng.range_usize(1, 6),
            cancel: *rng.pick(&[0, 30, 100]),
            slow_reader: *rng.pick(&[0, 0, 50, 200]),
            requests: BTreeMap::new(),
            rx: Vec::new(),
            sent_rx: Vec::new(),
            stdin_closed: false,
            stdout_closed: false,
            ticking: false,
            closing: false,
            last_heard: Duration::ZERO,
            received: BTreeMap::new(),
        };
        let remote = Remote::new(kind, rng.fork());
        logger::start_capture();
        let clock = Clock::new();
        let relay = Relay::new(config.clone(), clock.now()).expect("a valid configuration");
        let mut sim = RemoteSim {
            seed,
            kind,
            late_connects: *rng.pick(&[0, 20, 100]),
            config,
            rng,
            clock,
            stats_before: relay.stats(),
            relay,
            events: BTreeMap::new(),
            seq: 0,
            trace: Trace::new(keep_trace),
            step: 0,
            max_steps: 300_000,
            client,
            stdio: Stdio::default(),
            ups: BTreeMap::new(),
            remote,
            reached: BTreeMap::new(),
            stdin_eof_at: None,
            finished_at: None,
            stdio_closed_step: None,
            given_up_step: None,
            read_delay_after_eof: Duration::ZERO,
            violation: None,
            max_buffered_seen: 0,
            tally: Tally::default(),
            closed_now: BTreeSet::new(),
        };
        sim.plan();
        sim
    }

    fn plan(&mut self) {
        let c = &self.config;
        let r = c.remote.as_ref().expect("client mode");
        let line = format!(
            "seed {}: {:?} remote over {} ({}), max_buffered={} max_read={} grace={} \
             ping={:?}/{} restart_delay={} max_restarts={} connect_timeout={} \
             max_connections={} faults={:?}; client: {} calls, {} at once, cancel {}‰, slow \
             reader {}‰",
            self.seed,
            self.kind,
            r.urls[0],
            r.transport,
            c.max_buffered,
            c.max_read,
            Ms(c.shutdown_grace),
            c.ping_interval.map(Ms),
            Ms(c.ping_timeout),
            Ms(c.restart_delay),
            c.max_restarts,
            Ms(r.connect_timeout),
            r.max_connections,
            self.remote.faults,
            self.client.calls_left,
            self.client.max_in_flight,
            self.client.cancel,
            self.client.slow_reader,
        );
        self.note(format_args!("{line}"));
        for (at, act) in self.remote.plan(Duration::from_secs(30)) {
            self.schedule_at(at, Ev::Remote(act));
        }
        let start = ms(&mut self.rng, 0, 20);
        self.schedule_at(start, Ev::Client(ClientAct::Tick));
        self.client.ticking = true;
        self.client.init = Init::Failed;
        if self.rng.chance(100) {
            let at = ms(&mut self.rng, 0, 10_000);
            self.schedule_at(at, Ev::Client(ClientAct::Close));
        }
        self.schedule_at(Duration::from_secs(20), Ev::Client(ClientAct::Patience));
    }

    // ---- running ----

    /// Runs to the end and checks every invariant.
    pub fn run(&mut self) -> Result<(), String> {
        self.feed(Input::Attached { conn: STDIO })?;
        self.stdio.open = true;
        self.after_step()?;
        loop {
            if !self.step()? {
                break;
            }
            if self.step >= self.max_steps || self.clock.elapsed() > Duration::from_secs(3600) {
                return Err(self.fail(format!(
                    "livelock: still running after {} steps and {} of simulated time",
                    self.step,
                    Ms(self.clock.elapsed())
                )));
            }
        }
        let steps = self.step;
        self.note(format_args!("quiet after {steps} steps"));
        let stats = self.relay.stats();
        self.tally.delivered = self.client.received.len() as u64;
        self.tally.restarts = stats.restarts;
        self.tally.remote = self.remote.tally.clone();
        self.at_end().map_err(|e| self.fail(e))
    }

    /// One step; `false` when nothing is left to do.
    fn step(&mut self) -> Result<bool, String> {
        let next_event = self.events.first_key_value().map(|(k, _)| k.0);
        let deadline = self.relay.poll_timeout().map(|d| self.clock.offset_of(d));
        let timeout_first = match (next_event, deadline) {
            (None, None) => return Ok(false),
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(e), Some(d)) => d <= e,
        };
        self.step += 1;
        self.stats_before = self.relay.stats();
        if timeout_first {
            let d = deadline.expect("checked above").max(self.clock.elapsed());
            self.clock.advance_to(d);
            self.timeout()?;
        } else {
            let ((at, _), ev) = self.events.pop_first().expect("checked above");
            self.clock.advance_to(at);
            self.handle(ev)?;
        }
        self.after_step()?;
        Ok(true)
    }

    fn now(&self) -> Duration {
        self.clock.elapsed()
    }

    fn fail(&self, what: String) -> String {
        format!(
            "step {} at {}: {what}\nlast trace lines:\n{}",
            self.step,
            Ms(self.clock.elapsed()),
            self.trace.tail()
        )
    }

    fn note(&mut self, args: fmt::Arguments<'_>) {
        let at = self.clock.elapsed();
        self.trace.push(at, args);
    }

    fn schedule(&mut self, delay: Duration, ev: Ev) {
        let at = self.clock.elapsed() + delay;
        self.schedule_at(at, ev);
    }

    fn schedule_at(&mut self, at: Duration, ev: Ev) {
        self.seq += 1;
        self.events.insert((at, self.seq), ev);
    }

    fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(what);
        }
    }

    // ---- feeding the relay ----

    fn feed(&mut self, input: Input<'_>) -> Result<(), String> {
        let now = self.clock.elapsed();
        self.trace
            .push(now, format_args!("in  {}", ShowInput(&input)));
        self.relay.handle_input(self.clock.now(), input);
        self.drain()
    }

    fn timeout(&mut self) -> Result<(), String> {
        let reason = self
            .relay
            .next_deadline()
            .filter(|(d, _)| *d <= self.clock.now())
            .map_or("nothing due", |(_, r)| r.as_str());
        self.note(format_args!("in  timeout ({reason})"));
        let now = self.clock.now();
        self.relay.handle_timeout(now);
        self.drain()?;
        if let Some((d, why)) = self.relay.next_deadline() {
            if d <= now {
                return Err(self.fail(format!(
                    "after handle_timeout({}), poll_timeout() is {} ({why}): not after now",
                    Ms(self.clock.offset_of(now)),
                    Ms(self.clock.offset_of(d)),
                )));
            }
        }
        Ok(())
    }

    /// Takes the log records of the last call, then performs every output.
    fn drain(&mut self) -> Result<(), String> {
        let stats = self.relay.stats();
        if self.given_up_step.is_none() && stats.sessions_given_up > 0 {
            self.given_up_step = Some(self.step);
        }
        let mut outputs = Vec::new();
        while let Some(o) = self.relay.poll_output() {
            outputs.push(o);
        }
        let mut errors = 0;
        for rec in logger::take() {
            let now = self.clock.elapsed();
            self.trace.push(
                now,
                format_args!("log {} {}: {}", rec.level, rec.target, rec.message),
            );
            if rec.level == log::Level::Error {
                errors += 1;
                let expected = stats
                    .sessions_given_up
                    .saturating_sub(self.stats_before.sessions_given_up);
                if errors > expected {
                    return Err(self.fail(format!(
                        "unexpected ERROR log (no session given up in this step): {}",
                        rec.message
                    )));
                }
            }
        }
        self.closed_now.clear();
        for o in outputs {
            let now = self.clock.elapsed();
            self.trace.push(now, format_args!("out {}", ShowOutput(&o)));
            self.perform(o);
        }
        // A remote is found hung only when it stalled (its connections close in that step).
        let hung = stats.servers_hung.saturating_sub(self.tally.hung);
        self.tally.hung = stats.servers_hung;
        if hung > 0 {
            let stalled = self
                .remote
                .stalls
                .iter()
                .any(|s| self.closed_now.contains(&s.incarnation));
            if !stalled {
                return Err(self.fail(format!(
                    "the relay found a remote hung (Stats::servers_hung) that did not stall; it \
                     closed connections of incarnation(s) {:?}",
                    self.closed_now
                )));
            }
        }
        Ok(())
    }

    /// Performs one output of the relay.
    fn perform(&mut self, o: Output) {
        match o {
            Output::Send {
                to: Endpoint::Conn(c),
                data,
            } if c == STDIO => {
                if !self.stdio.open {
                    return self
                        .violate(format!("Send to stdio after it closed: {}", Bytes(&data)));
                }
                self.account(&data);
                self.stdio.stdout.extend_from_slice(&data);
                self.kick_stdout(Duration::ZERO);
            }
            Output::Close {
                endpoint: Endpoint::Conn(c),
            } if c == STDIO => {
                if !self.stdio.open {
                    return self.violate("stdio closed twice".into());
                }
                if !self.stdio.stdout.is_empty() {
                    self.violate(format!(
                        "stdio closed with {} bytes sent to it not yet written",
                        self.stdio.stdout.len()
                    ));
                }
                if !self.stdio.eof_fed && self.given_up_step.is_none() {
                    self.violate(
                        "the relay closed stdio while its client was still there, and it did not \
                         give the session up (--max-restarts): a remote's fault ended the session"
                            .into(),
                    );
                }
                self.stdio.open = false;
                self.stdio_closed_step = Some(self.step);
                self.client.stdout_closed = true;
                self.note(format_args!("client: the relay closed stdin and stdout"));
            }
            Output::Pause {
                endpoint: Endpoint::Conn(c),
            } if c == STDIO => self.stdio.paused = true,
            Output::Resume {
                endpoint: Endpoint::Conn(c),
            } if c == STDIO => {
                self.stdio.paused = false;
                self.kick_stdin();
            }
            Output::Connect {
                conn, host, port, ..
            } => {
                let url = &self.config.remote.as_ref().expect("client mode").urls[0];
                if host != url.host || port != url.port {
                    self.violate(format!("{conn}: Connect to {host}:{port}, not to {url}"));
                }
                if self.ups.contains_key(&conn) {
                    return self.violate(format!("{conn}: Connect for an id already used"));
                }
                self.ups.insert(
                    conn,
                    Up {
                        asked_at: self.now(),
                        state: UpState::Connecting,
                        paused: false,
                        to_remote: Vec::new(),
                        to_relay: Vec::new(),
                        remote_wrote: 0,
                        fed: 0,
                        marks: VecDeque::new(),
                        fin: false,
                        eof_fed: false,
                        read_scheduled: false,
                        write_scheduled: false,
                    },
                );
                let timeout = self
                    .config
                    .remote
                    .as_ref()
                    .expect("client mode")
                    .connect_timeout;
                let delay = if self.rng.chance(self.late_connects) {
                    let ms = timeout.as_millis() as u64 * 3 / 2;
                    Duration::from_millis(self.rng.range(0, ms))
                } else {
                    ms(&mut self.rng, 0, 20)
                };
                self.schedule(delay, Ev::ConnectResult(conn));
            }
            Output::Send {
                to: Endpoint::Upstream(up),
                data,
            } => match self.ups.get_mut(&up) {
                Some(u) if matches!(u.state, UpState::Connecting | UpState::Open) => {
                    u.to_remote.extend_from_slice(&data);
                    self.kick_write_up(up);
                }
                _ => self.violate(format!("Send to {up}, which is not open: {}", Bytes(&data))),
            },
            Output::Close {
                endpoint: Endpoint::Upstream(up),
            } => {
                let now = self.now();
                self.closed_now.insert(up.server.0);
                match self.ups.get_mut(&up).map(|u| u.state) {
                    Some(UpState::Connecting) => {
                        self.tally.connects_abandoned += 1;
                        self.ups.get_mut(&up).expect("known").state = UpState::Closed;
                    }
                    Some(UpState::Open) => {
                        self.ups.get_mut(&up).expect("known").state = UpState::Closed;
                        self.remote.relay_closed(up, now);
                        self.remote_effects();
                    }
                    other => self.violate(format!("Close of {up}, which is {other:?}")),
                }
            }
            Output::Pause {
                endpoint: Endpoint::Upstream(up),
            }
            | Output::Resume {
                endpoint: Endpoint::Upstream(up),
            } => {
                let pause = matches!(o, Output::Pause { .. });
                self.tally.upstream_pauses += u64::from(pause);
                match self.ups.get_mut(&up) {
                    Some(u) if matches!(u.state, UpState::Connecting | UpState::Open) => {
                        u.paused = pause;
                        if !pause {
                            self.kick_read_up(up, Duration::ZERO);
                        }
                    }
                    other => {
                        let state = other.map(|u| u.state);
                        self.violate(format!("{} of {up}, which is {state:?}", ShowOutput(&o)))
                    }
                }
            }
            Output::StopAccepting => {}
            other => self.violate(format!(
                "client mode asked for {}, which concerns no endpoint it has",
                ShowOutput(&other)
            )),
        }
    }

    // ---- events ----

    fn handle(&mut self, ev: Ev) -> Result<(), String> {
        match ev {
            Ev::Client(act) => self.client_act(act),
            Ev::ReadStdin => self.read_stdin(),
            Ev::WriteStdout => self.write_stdout(),
            Ev::ConnectResult(up) => self.connect_result(up),
            Ev::WriteUp(up) => self.write_up(up),
            Ev::ReadUp(up) => self.read_up(up),
            Ev::ResetUp(up) => self.reset_up(up),
            Ev::Remote(act) => {
                let now = self.now();
                self.remote.act(act, now);
                self.remote_effects();
                Ok(())
            }
        }
    }

    fn read_stdin(&mut self) -> Result<(), String> {
        self.stdio.read_scheduled = false;
        if !self.stdio.open || self.stdio.paused {
            return Ok(());
        }
        if !self.stdio.stdin.is_empty() {
            let n = self
                .rng
                .skewed_size(self.config.max_read)
                .min(self.stdio.stdin.len());
            let data: Vec<u8> = self.stdio.stdin.drain(..n).collect();
            self.stdio.fed += n;
            let (fed, step, now) = (self.stdio.fed, self.step, self.now());
            for r in self.client.requests.values_mut() {
                if r.end <= fed && r.fed_step.is_none() {
                    r.fed_step = Some(step);
                    r.fed_at = Some(now);
                }
            }
            self.feed(Input::Data {
                from: Endpoint::Conn(STDIO),
                data: &data,
            })?;
            self.kick_stdin();
        } else if self.client.stdin_closed && !self.stdio.eof_fed {
            self.stdio.eof_fed = true;
            self.stdin_eof_at = Some(self.now());
            self.feed(Input::Eof {
                from: Endpoint::Conn(STDIO),
            })?;
        }
        Ok(())
    }

    fn write_stdout(&mut self) -> Result<(), String> {
        self.stdio.write_scheduled = false;
        if self.stdio.stdout.is_empty() {
            return Ok(());
        }
        let n = self.rng.skewed_size(4096).min(self.stdio.stdout.len());
        let data: Vec<u8> = self.stdio.stdout.drain(..n).collect();
        self.client_receives(&data);
        self.feed(Input::Written {
            to: Endpoint::Conn(STDIO),
            n,
        })?;
        let slow = self.rng.chance(self.client.slow_reader);
        let delay = if slow {
            ms(&mut self.rng, 200, 2000)
        } else {
            ms(&mut self.rng, 0, 5)
        };
        if self.stdio.eof_fed {
            // The relay's end waits for the client to read.
            self.read_delay_after_eof += delay;
        }
        self.kick_stdout(delay);
        Ok(())
    }

    fn connect_result(&mut self, up: UpId) -> Result<(), String> {
        if self.ups.get(&up).map(|u| u.state) != Some(UpState::Connecting) {
            return Ok(());
        }
        let now = self.now();
        if !self.remote.accepts(now) {
            self.ups.get_mut(&up).expect("known").state = UpState::Failed;
            self.tally.connect_failures += 1;
            return self.feed(Input::ConnectFailed {
                conn: up,
                error: "connection refused",
            });
        }
        let u = self.ups.get_mut(&up).expect("known");
        u.state = UpState::Open;
        let asked = u.asked_at;
        self.remote.connected(up, asked, now);
        self.remote_effects();
        self.feed(Input::Connected { conn: up })?;
        self.kick_write_up(up);
        self.kick_read_up(up, Duration::ZERO);
        Ok(())
    }

    fn write_up(&mut self, up: UpId) -> Result<(), String> {
        let Some(u) = self.ups.get_mut(&up) else {
            return Ok(());
        };
        u.write_scheduled = false;
        if u.state != UpState::Open || u.to_remote.is_empty() {
            return Ok(());
        }
        let n = self.rng.skewed_size(4096).min(u.to_remote.len());
        let data: Vec<u8> = u.to_remote.drain(..n).collect();
        let reaches = !u.fin;
        self.feed(Input::Written {
            to: Endpoint::Upstream(up),
            n,
        })?;
        if reaches {
            let now = self.now();
            self.remote.received(up, &data, now);
            self.remote_effects();
        }
        self.kick_write_up(up);
        Ok(())
    }

    fn read_up(&mut self, up: UpId) -> Result<(), String> {
        let Some(u) = self.ups.get_mut(&up) else {
            return Ok(());
        };
        u.read_scheduled = false;
        if u.state != UpState::Open || u.paused {
            return Ok(());
        }
        if !u.to_relay.is_empty() {
            let n = self
                .rng
                .skewed_size(self.config.max_read)
                .min(u.to_relay.len());
            let data: Vec<u8> = u.to_relay.drain(..n).collect();
            u.fed += n;
            let fed = u.fed;
            // What the relay knows once it has read these bytes (noted first: what it does
            // with them, such as closing the connection, comes after).
            let now = self.now();
            while let Some((at, _)) = self.ups[&up].marks.front() {
                if *at > fed {
                    break;
                }
                let (_, mark) = self
                    .ups
                    .get_mut(&up)
                    .expect("known")
                    .marks
                    .pop_front()
                    .expect("checked");
                if let Mark::Message(m) = mark {
                    self.reached.entry(m).or_insert(self.step);
                }
                self.remote.relay_read(up, &mark, now);
            }
            self.feed(Input::Data {
                from: Endpoint::Upstream(up),
                data: &data,
            })?;
            self.remote_effects();
            let d = ms(&mut self.rng, 0, 3);
            self.kick_read_up(up, d);
        } else if u.fin && !u.eof_fed {
            u.eof_fed = true;
            let now = self.now();
            self.remote.relay_saw_end(up, now);
            self.feed(Input::Eof {
                from: Endpoint::Upstream(up),
            })?;
            self.remote_effects();
        }
        Ok(())
    }

    fn reset_up(&mut self, up: UpId) -> Result<(), String> {
        let Some(u) = self.ups.get_mut(&up) else {
            return Ok(());
        };
        if u.state != UpState::Open {
            return Ok(());
        }
        u.state = UpState::Broken;
        u.to_relay.clear();
        u.marks.clear();
        let now = self.now();
        self.remote.relay_saw_end(up, now);
        self.feed(Input::Broken {
            endpoint: Endpoint::Upstream(up),
            reason: "connection reset by peer",
        })?;
        self.remote_effects();
        Ok(())
    }

    /// Performs what the remote did.
    fn remote_effects(&mut self) {
        for note in std::mem::take(&mut self.remote.notes) {
            self.note(format_args!("remote: {note}"));
        }
        for w in std::mem::take(&mut self.remote.out) {
            match w {
                Wire::Write { conn, bytes, marks } => {
                    let Some(u) = self.ups.get_mut(&conn) else {
                        continue;
                    };
                    if u.state != UpState::Open || u.fin {
                        continue;
                    }
                    for (at, m) in marks {
                        u.marks.push_back((u.remote_wrote + at, m));
                    }
                    u.remote_wrote += bytes.len();
                    u.to_relay.extend_from_slice(&bytes);
                    let d = ms(&mut self.rng, 0, 5);
                    self.kick_read_up(conn, d);
                }
                Wire::Close { conn, reset } => {
                    let Some(u) = self.ups.get_mut(&conn) else {
                        continue;
                    };
                    if u.state != UpState::Open || u.fin {
                        continue;
                    }
                    if reset {
                        let d = ms(&mut self.rng, 0, 3);
                        self.schedule(d, Ev::ResetUp(conn));
                    } else {
                        u.fin = true;
                        let d = ms(&mut self.rng, 0, 5);
                        self.kick_read_up(conn, d);
                    }
                }
                Wire::Later { delay, act } => self.schedule(delay, Ev::Remote(act)),
            }
        }
        if let Some(v) = self.remote.violations.first().cloned() {
            self.violate(v);
        }
    }

    fn kick_stdin(&mut self) {
        if !self.stdio.read_scheduled && self.stdio.open && !self.stdio.paused {
            self.stdio.read_scheduled = true;
            let d = ms(&mut self.rng, 0, 3);
            self.schedule(d, Ev::ReadStdin);
        }
    }

    fn kick_stdout(&mut self, delay: Duration) {
        if !self.stdio.write_scheduled && !self.stdio.stdout.is_empty() {
            self.stdio.write_scheduled = true;
            self.schedule(delay, Ev::WriteStdout);
        }
    }

    fn kick_write_up(&mut self, up: UpId) {
        let Some(u) = self.ups.get_mut(&up) else {
            return;
        };
        if !u.write_scheduled && u.state == UpState::Open && !u.to_remote.is_empty() {
            u.write_scheduled = true;
            let d = ms(&mut self.rng, 0, 3);
            self.schedule(d, Ev::WriteUp(up));
        }
    }

    fn kick_read_up(&mut self, up: UpId, delay: Duration) {
        let Some(u) = self.ups.get_mut(&up) else {
            return;
        };
        let more = !u.to_relay.is_empty() || (u.fin && !u.eof_fed);
        if !u.read_scheduled && u.state == UpState::Open && !u.paused && more {
            u.read_scheduled = true;
            self.schedule(delay, Ev::ReadUp(up));
        }
    }

    // ---- the local client ----

    /// The client writes to stdin (lost once the relay closed it).
    fn client_write(&mut self, msg: &Value) -> usize {
        let mut line = msg.to_string().into_bytes();
        line.push(b'\n');
        self.note(format_args!("client: writes {}", Bytes(&line)));
        if !self.stdio.open {
            return usize::MAX;
        }
        self.stdio.stdin.extend_from_slice(&line);
        self.stdio.written += line.len();
        self.kick_stdin();
        self.stdio.written
    }

    fn client_request(&mut self, method: &'static str, params: Value) -> i64 {
        let id = self.client.next_id;
        self.client.next_id += 1;
        let end = self
            .client_write(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        self.client.requests.insert(
            id,
            Req {
                method,
                end,
                cancelled: false,
                cancel_end: None,
                fed_step: None,
                fed_at: None,
                answers: 0,
                answered_step: None,
                error: false,
            },
        );
        id
    }

    fn client_act(&mut self, act: ClientAct) -> Result<(), String> {
        let done = self.client.stdin_closed || self.client.stdout_closed;
        match act {
            ClientAct::Tick => {
                self.client.ticking = false;
                if !done {
                    self.client_tick();
                }
            }
            ClientAct::Cancel(id) => {
                let waiting = self
                    .client
                    .requests
                    .get(&id)
                    .is_some_and(|r| r.answers == 0);
                if !done && waiting {
                    let end = self.client_write(
                        &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                        "params": {"requestId": id, "reason": "the user changed their mind"}}),
                    );
                    let r = self.client.requests.get_mut(&id).expect("known");
                    r.cancelled = true;
                    r.cancel_end = Some(end);
                    self.tally.cancels += 1;
                    self.client_maybe_close();
                }
            }
            ClientAct::Answer(id) => {
                if !done {
                    self.client_write(&json!({"jsonrpc": "2.0", "id": id, "result": {
                        "role": "assistant", "content": {"type": "text", "text": "ok"}, "model": "m"}}));
                }
            }
            ClientAct::Close => {
                if !self.client.stdin_closed {
                    self.note(format_args!("client: closes stdin"));
                    self.client.stdin_closed = true;
                    self.kick_stdin();
                }
            }
            ClientAct::Patience => {
                if !done {
                    if self.now() > self.client.last_heard + Duration::from_secs(90) {
                        self.note(format_args!("client: gives up waiting"));
                        self.schedule(Duration::ZERO, Ev::Client(ClientAct::Close));
                    } else {
                        self.schedule(Duration::from_secs(20), Ev::Client(ClientAct::Patience));
                    }
                }
            }
        }
        Ok(())
    }

    fn client_tick(&mut self) {
        match self.client.init {
            Init::Failed => {
                self.client.init_tries += 1;
                let id = self.client_request(
                    "initialize",
                    json!({"protocolVersion": "2025-06-18", "capabilities": {"sampling": {}, "roots": {}},
                           "clientInfo": {"name": "sim", "version": "1"}}),
                );
                self.client.init = Init::Pending(id);
                return;
            }
            Init::Done => {}
            _ => return,
        }
        let in_flight = self
            .client
            .requests
            .values()
            .filter(|r| r.answers == 0 && !r.cancelled)
            .count();
        if self.client.calls_left > 0 && in_flight < self.client.max_in_flight {
            self.client.calls_left -= 1;
            let r = &mut self.client.rng;
            if r.chance(100) {
                self.client_write(
                    &json!({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}),
                );
            }
            let r = &mut self.client.rng;
            let (method, params) = match r.below(10) {
                0 => ("tools/list", json!({})),
                1 => ("ping", json!({})),
                _ => {
                    let id = self.client.next_id;
                    let meta = if r.chance(600) {
                        json!({"progressToken": format!("p{id}")})
                    } else {
                        json!({})
                    };
                    (
                        "tools/call",
                        json!({"name": "work", "arguments": {"n": id}, "_meta": meta}),
                    )
                }
            };
            let id = self.client_request(method, params);
            if self.client.rng.chance(self.client.cancel) {
                let d = ms(&mut self.client.rng, 10, 2000);
                self.schedule(d, Ev::Client(ClientAct::Cancel(id)));
            }
        }
        if self.client.calls_left > 0 {
            let d = ms(&mut self.client.rng, 0, 400);
            self.client_tick_later(d);
        }
        self.client_maybe_close();
    }

    fn client_tick_later(&mut self, d: Duration) {
        if !self.client.ticking {
            self.client.ticking = true;
            self.schedule(d, Ev::Client(ClientAct::Tick));
        }
    }

    /// Every call made and answered (or cancelled): the client closes stdin.
    fn client_maybe_close(&mut self) {
        let c = &self.client;
        let waiting = c.requests.values().any(|r| r.answers == 0 && !r.cancelled);
        let all_sent = c.calls_left == 0 || c.init == Init::GaveUp;
        if all_sent && !waiting && !c.closing && !c.stdin_closed {
            self.client.closing = true;
            let d = ms(&mut self.client.rng, 0, 300);
            self.schedule(d, Ev::Client(ClientAct::Close));
        }
    }

    /// Bytes of stdout reach the client: it reacts to whole lines.
    fn client_receives(&mut self, data: &[u8]) {
        self.client.rx.extend_from_slice(data);
        self.client.last_heard = self.now();
        while let Some(nl) = self.client.rx.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.client.rx.drain(..=nl).collect();
            let Ok(msg) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let method = msg.get("method").and_then(Value::as_str);
            match (remote::client_id(&msg), method, msg.get("id")) {
                (Some(id), None, _) => self.client_answered(id, msg.get("error").is_some()),
                (_, Some(_), Some(id)) => {
                    let d = ms(&mut self.client.rng, 0, 500);
                    self.schedule(d, Ev::Client(ClientAct::Answer(id.clone())));
                }
                _ => {}
            }
        }
    }

    fn client_answered(&mut self, id: i64, error: bool) {
        if self.client.init == Init::Pending(id) {
            if error && self.client.init_tries < 3 {
                self.client.init = Init::Failed;
                let d = ms(&mut self.client.rng, 100, 1000);
                self.client_tick_later(d);
            } else if error {
                self.client.init = Init::GaveUp;
            } else {
                self.client.init = Init::Done;
                self.client_write(
                    &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                );
                let d = ms(&mut self.client.rng, 0, 100);
                self.client_tick_later(d);
            }
        } else if self.client.calls_left > 0 {
            let d = ms(&mut self.client.rng, 0, 100);
            self.client_tick_later(d);
        }
        self.client_maybe_close();
    }

    /// What the relay sends the client, counted as it is sent (invariants 1 and 2).
    fn account(&mut self, data: &[u8]) {
        self.client.sent_rx.extend_from_slice(data);
        while let Some(nl) = self.client.sent_rx.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.client.sent_rx.drain(..=nl).collect();
            let msg: Value = match serde_json::from_slice(&line) {
                Ok(v) => v,
                Err(e) => {
                    return self.violate(format!(
                        "the relay wrote a line that is not JSON to the client ({e}): {}",
                        Bytes(&line)
                    ))
                }
            };
            let is_response = msg.get("result").is_some() || msg.get("error").is_some();
            if is_response {
                let Some(id) = remote::client_id(&msg) else {
                    return self.violate(format!(
                        "the relay answered an id the client never used: {}",
                        Bytes(&line)
                    ));
                };
                let step = self.step;
                let Some(req) = self.client.requests.get_mut(&id) else {
                    return self.violate(format!(
                        "the relay answered request {id}, which the client never sent: {}",
                        Bytes(&line)
                    ));
                };
                req.answers += 1;
                if req.answers > 1 {
                    let what = format!(
                        "request {id} ({}) answered a second time (invariant 1): {}",
                        req.method,
                        Bytes(&line)
                    );
                    return self.violate(what);
                }
                req.answered_step = Some(step);
                req.error = msg.get("error").is_some();
            }
            let marker = msg
                .pointer("/result/_m")
                .or_else(|| msg.pointer("/params/_m"))
                .and_then(Value::as_u64);
            if let Some(m) = marker {
                let n = self.client.received.entry(m).or_insert(0);
                *n += 1;
                if *n > 1 {
                    let what = self.remote.messages.get(&m).map_or("?", |s| &s.what);
                    return self.violate(format!(
                        "the remote's message m{m} ({what}) reached the client twice \
                         (invariant 2): {}",
                        Bytes(&line)
                    ));
                }
            }
        }
    }

    // ---- invariants ----

    fn after_step(&mut self) -> Result<(), String> {
        if let Some(v) = self.violation.take() {
            return Err(self.fail(v));
        }
        let bound = self.relay.buffer_bound();
        if let Some(b) = self.relay.buffered(STDIO) {
            self.max_buffered_seen = self.max_buffered_seen.max(b);
            if b > bound {
                return Err(self.fail(format!(
                    "the relay holds {b} bytes for the stdio session, more than buffer_bound() \
                     = {bound} (invariant 5)"
                )));
            }
        }
        if self.finished_at.is_none() && self.relay.is_finished() {
            self.finished_at = Some(self.now());
        }
        // Every request is answered in bounded time: the slowest call the remote makes, and
        // one round of every delay the relay may add (a connection that times out, a restart,
        // a probe that finds a hang, a stop).
        let now = self.now();
        let limit = self.answer_bound();
        let cut = self.given_up_step.unwrap_or(u64::MAX);
        if let Some((id, r)) = self.client.requests.iter().find(|(_, r)| {
            r.answers == 0
                && !r.cancelled
                && r.fed_step.is_some_and(|s| s < cut)
                && r.fed_at.is_some_and(|t| now > t + limit)
        }) {
            return Err(self.fail(format!(
                "request {id} ({}) read by the relay at {} is still unanswered at {} (bound {})",
                r.method,
                Ms(r.fed_at.unwrap_or_default()),
                Ms(now),
                Ms(limit)
            )));
        }
        // The relay waits for no more requests than the client has outstanding: read, not
        // answered, not cancelled. (Exact while stdin is not paused: the relay keeps it paused
        // while lines it read wait unframed, a cancellation among them.)
        let fed = if self.stdio.paused { 0 } else { self.stdio.fed };
        let outstanding = self
            .client
            .requests
            .values()
            .filter(|r| r.end <= fed && r.answers == 0)
            .filter(|r| r.cancel_end.is_none_or(|c| c > fed))
            .count();
        let waiting = self.relay.in_flight(STDIO).filter(|_| !self.stdio.paused);
        if let Some(waiting) = waiting.filter(|w| *w > outstanding) {
            return Err(self.fail(format!(
                "the relay counts {waiting} requests of the client waiting for an answer; the \
                 client has {outstanding} read, not answered and not cancelled"
            )));
        }
        // A stalled session is found hung and ended.
        let c = &self.config;
        let r = c.remote.as_ref().expect("client mode");
        let bound = c.ping_interval.unwrap_or_default()
            + c.ping_timeout
            + r.connect_timeout
            + c.shutdown_grace
            + Duration::from_secs(1);
        let now = self.now();
        for stall in &self.remote.stalls {
            if now <= stall.at + bound {
                continue;
            }
            let open: Vec<String> = self
                .ups
                .iter()
                .filter(|(k, u)| {
                    k.server.0 == stall.incarnation
                        && matches!(u.state, UpState::Open | UpState::Connecting)
                })
                .map(|(k, _)| k.to_string())
                .collect();
            if !open.is_empty() {
                return Err(self.fail(format!(
                    "session {} stalled at {} and the relay still holds {} open {} later \
                     (ping_interval + ping_timeout + connect_timeout + shutdown_grace + 1s = {})",
                    stall.session,
                    Ms(stall.at),
                    open.join(", "),
                    Ms(now - stall.at),
                    Ms(bound)
                )));
            }
        }
        Ok(())
    }

    /// How long a request may wait for its answer.
    fn answer_bound(&self) -> Duration {
        let c = &self.config;
        let r = c.remote.as_ref().expect("client mode");
        remote::SLOWEST_CALL
            + r.connect_timeout
            + c.max_restart_delay
            + c.ping_interval.unwrap_or_default()
            + c.ping_timeout
            + c.shutdown_grace
            + Duration::from_secs(5)
    }

    fn at_end(&mut self) -> Result<(), String> {
        // 6: finished, in time, everything closed.
        let Some(finished) = self.finished_at else {
            return Err("the run is over and the relay is not finished (invariant 6)".into());
        };
        if let Some(eof) = self.stdin_eof_at {
            let bound =
                self.config.shutdown_grace + Duration::from_secs(5) + self.read_delay_after_eof;
            if finished > eof + bound {
                return Err(format!(
                    "the relay finished {} after the client closed stdin, more than \
                     shutdown_grace + 5s + the client's reading ({}) = {} (invariant 6)",
                    Ms(finished - eof),
                    Ms(self.read_delay_after_eof),
                    Ms(bound)
                ));
            }
        }
        let left: Vec<String> = self
            .ups
            .iter()
            .filter(|(_, u)| matches!(u.state, UpState::Connecting | UpState::Open))
            .map(|(k, u)| {
                format!(
                    "{k} ({:?}{})",
                    u.state,
                    if u.eof_fed { ", end of file read" } else { "" }
                )
            })
            .collect();
        if !left.is_empty() {
            return Err(format!(
                "connections the relay opened and never closed (invariant 6): {}",
                left.join(", ")
            ));
        }
        // 1: every request answered once. Once the session was given up it closes the
        // connection, and what the client sent from then on may go unanswered (as over TCP:
        // see `invariants::completeness`).
        let cut = self.given_up_step.unwrap_or(u64::MAX);
        let unanswered: Vec<String> = self
            .client
            .requests
            .iter()
            .filter(|(_, r)| r.answers == 0 && !r.cancelled)
            .filter(|(_, r)| r.fed_step.is_some_and(|s| s < cut))
            .map(|(id, r)| format!("{id} ({})", r.method))
            .collect();
        if !unanswered.is_empty() {
            return Err(format!(
                "client requests never answered (invariant 1): {}",
                unanswered.join(", ")
            ));
        }
        // 2: every message the relay read reached the client once.
        for (m, step) in &self.reached {
            let got = self.client.received.get(m).copied().unwrap_or(0);
            if got == 1 {
                continue;
            }
            let sent = &self.remote.messages[m];
            let excused = sent.answers.is_some_and(|id| {
                let r = &self.client.requests[&id];
                r.cancelled || (r.error && r.answered_step.is_some_and(|s| s < *step))
            });
            let after_close = self.stdio_closed_step.is_some_and(|s| s <= *step);
            if got == 0 && !excused && !after_close {
                return Err(format!(
                    "the remote's message m{m} ({}) was read by the relay in step {step} and \
                     never reached the client (invariant 2)",
                    sent.what
                ));
            }
        }
        for (m, n) in &self.client.received {
            if !self.reached.contains_key(m) {
                return Err(format!(
                    "the client got m{m} {n} time(s), which the relay never read whole"
                ));
            }
        }
        Ok(())
    }
}

impl World for RemoteSim {
    const TALLY: &'static str = "remote messages delivered and resumptions checked";
    fn run_world(&mut self) -> Result<(), String> {
        self.run()
    }
    fn seed(&self) -> u64 {
        self.seed
    }
    fn steps(&self) -> u64 {
        self.step
    }
    fn trace(&self) -> &Trace {
        &self.trace
    }
    fn tally(&self) -> u64 {
        self.client.received.len() as u64 + self.remote.tally.resumes
    }
}
