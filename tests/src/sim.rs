//! The simulation: the relay's core driven by a fake clock, seeded randomness and scripted
//! peers, with the harness playing the driver (the part `runtime-mio` plays in production).
//!
//! A run is a sequence of *steps*. A step is one [`Input`] (or one `handle_timeout`) given to
//! the core, followed by draining every [`Output`] and performing it. Performing an output
//! never feeds the core directly: it changes the driver's and the peers' state and schedules
//! events, each of which becomes a later step. Peers act at scheduled moments too (a client
//! writes, a child answers); those moments are events that need not touch the core.
//!
//! The clock only moves to the next scheduled event or the core's next deadline, whichever
//! comes first, so simulated seconds cost nothing.
//!
//! Modelled: fragmentation of every byte stream (1 byte to a few KiB per read), partial
//! writes and slow or stalled readers on both sides, backpressure (`Pause`/`Resume` stop and
//! start reads), spawn latency and failures, the stop sequence and signals, child crashes,
//! stdout closed early, grandchildren holding pipes, resets and half-closes, one or two
//! shutdowns, connections racing a shutdown.
//!
//! Not modelled: real pipe or socket capacities (writers never block), process groups beyond
//! "a grandchild holds pipes", the listener itself (the harness names connections), and
//! errors reading stderr.

use crate::client::{Client, Ending};
use crate::clock::{Clock, Ms};
use crate::http_sim::{Ev, HttpClients};
use crate::invariants;
use crate::jsonrpc::{is_relay_line, requests_in_line, ClientKind, ClientLine, ClientLines};
use crate::logger;
use crate::model::ConnModel;
use crate::profile::{HttpProfile, Profile};
use crate::rng::Rng;
use crate::server::{Act, Holds, ProcState, Server, Traits};
use crate::trace::{Bytes, Trace};
use mcp_relay_core::{
    ChildId, Config, ConnId, Endpoint, ExitStatus, HttpConfig, Input, Output, Relay, RestartPolicy,
    Signal, Stats, Transport,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

/// A failed run: what broke, where, and the end of the trace.
#[derive(Debug)]
pub struct Failure {
    pub step: u64,
    pub at: Duration,
    pub what: String,
    pub tail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step {} at {}: {}\nlast trace lines:\n{}",
            self.step,
            Ms(self.at),
            self.what,
            self.tail
        )
    }
}

/// Something scheduled to happen at a moment of simulated time.
#[derive(Debug)]
pub(crate) enum Event {
    /// Something of the Streamable HTTP clients ([`crate::http_sim`]).
    Http(Ev),
    /// A client connects.
    Connect,
    /// The client writes its next lines (or ends).
    ClientWrite(ConnId),
    /// The client sends its periodic heartbeat.
    ClientHeartbeat(ConnId),
    /// The driver reads what the client wrote.
    ReadConn(ConnId),
    /// The driver writes to the client.
    WriteConn(ConnId),
    /// The spawner reports.
    SpawnResult(ChildId),
    ReadStdout(ChildId),
    ReadStderr(ChildId),
    WriteStdin(ChildId),
    /// The child process does something.
    Child(ChildId, Act),
    /// The waiter reports the child's exit.
    ReportExit(ChildId),
    Shutdown,
    /// `handle_timeout` when nothing may be due.
    SpuriousTimeout,
}

/// The driver's view of a connection.
#[derive(Debug, Default)]
pub struct ConnDriver {
    /// Accepted and not closed or broken.
    pub open: bool,
    pub paused: bool,
    /// Handed out by `Send`, not yet written.
    pub queue: Vec<u8>,
    write_scheduled: bool,
}

/// One client connection: the peer, the driver's socket, and what is expected of it.
#[derive(Debug)]
pub struct ConnSide {
    pub client: Client,
    pub drv: ConnDriver,
    /// The session's children, oldest first (a replacement follows each restart).
    pub children: Vec<ChildId>,
    pub model: ConnModel,
    /// When the relay decided each restart so far (the supervisor's history).
    pub restart_decisions: Vec<Duration>,
}

/// The driver's view of a child.
#[derive(Debug, Default)]
pub struct ChildDriver {
    /// Decided when the spawn is asked for: the spawn will fail with this error.
    pub will_fail: Option<String>,
    pub spawned_at: Option<Duration>,
    pub failed_step: Option<u64>,
    pub released: bool,
    pub stdin_open: bool,
    /// The step in which the relay closed the child's stdin (`Close`).
    pub stdin_close_step: Option<u64>,
    pub queue: Vec<u8>,
    stdin_scheduled: bool,
    pub stdout_paused: bool,
    pub stdout_eof_step: Option<u64>,
    pub stdout_eof_at: Option<Duration>,
    pub stderr_eof: bool,
    pub stderr_eof_at: Option<Duration>,
    pub failed_at: Option<Duration>,
    /// The relay found it hung and sent SIGTERM at once.
    pub declared_hung: bool,
    pub hung_step: Option<u64>,
    /// The relay paused its stdout at some point after its exit was reported.
    pub paused_after_exit: bool,
    /// When the relay last resumed its stdout.
    pub resumed_at: Option<Duration>,
    /// The step in which the relay gave up on its output, and when.
    pub gave_up_step: Option<u64>,
    pub gave_up_at: Option<Duration>,
    /// Requests the relay sent it itself (probes, replays).
    pub own_requests_sent: usize,
    /// Step and time at which `Exited` was reported.
    pub exit_reported: Option<(u64, Duration)>,
    /// The step in which the relay cancelled its start (`Cancel`): it never runs.
    pub cancelled_step: Option<u64>,
    /// The relay released the child with stdout not at its end (it gave up on it).
    pub gave_up_stdout: bool,
}

/// When each stage of a child's stop sequence happened.
#[derive(Clone, Debug, Default)]
pub struct StopRecord {
    /// Its stdin was closed (`Close`) or broke.
    pub stdin_closed_at: Option<Duration>,
    pub term_at: Option<Duration>,
    pub kill_at: Option<Duration>,
}

#[derive(Debug)]
pub struct ChildSide {
    /// The session it serves; `None` while it waits in the prespawn pool.
    pub conn: Option<ConnId>,
    /// A prespawned child: the step a session took it, and how much of its stdout the driver
    /// had read by then (the relay drops what a child says before it serves anyone).
    pub adopted: Option<(u64, usize)>,
    pub server: Server,
    pub drv: ChildDriver,
    pub stop: StopRecord,
    /// The `Mcp-Session-Id` of the HTTP session it serves (the relay's word, once it serves one).
    pub http_sid: Option<String>,
}

/// What the current step is, for the checks that depend on it.
#[derive(Debug, Default)]
pub struct StepFacts {
    pub touched: bool,
    pub input: Option<&'static str>,
    pub child: Option<ChildId>,
    pub accepted: Option<ConnId>,
    pub kills: BTreeSet<ChildId>,
    pub spawns: Vec<ChildId>,
    /// The core's counters before this step's call, and after it (facts, not log text).
    pub stats_before: Stats,
    pub stats_after: Stats,
    /// Hang verdicts of this step (`Stats::servers_hung`) not yet matched to a SIGTERM.
    pub hangs_unmatched: u64,
    /// ERROR records of this step so far.
    pub errors: u64,
    /// Children released in this step whose output the core gave up on.
    pub gave_up: Vec<ChildId>,
}

impl StepFacts {
    /// A new step; `stats` are the core's counters before it.
    pub fn new(stats: Stats) -> Self {
        StepFacts {
            stats_before: stats.clone(),
            stats_after: stats,
            ..StepFacts::default()
        }
    }

    /// How much a counter of the core grew in this step.
    pub fn grew(&self, counter: impl Fn(&Stats) -> u64) -> u64 {
        counter(&self.stats_after).saturating_sub(counter(&self.stats_before))
    }
}

/// A deliberate driver fault, to check that the invariants catch it (the harness's own
/// tests). Each applies once, at the first chance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sabotage {
    /// Flips a byte of a chunk read from a client.
    CorruptClientByte,
    /// Reports a chunk read from one child as read from another (cross-talk).
    MisrouteChildOutput,
    /// Throws away a chunk read from a child.
    LoseChildOutput,
}

/// The whole simulated world.
pub struct Sim {
    pub seed: u64,
    pub profile: Profile,
    pub config: Config,
    pub(crate) rng: Rng,
    pub clock: Clock,
    pub relay: Relay,
    pub(crate) events: BTreeMap<(Duration, u64), Event>,
    seq: u64,
    pub trace: Trace,
    pub conns: BTreeMap<ConnId, ConnSide>,
    pub children: BTreeMap<ChildId, ChildSide>,
    /// The Streamable HTTP clients, their connections and what they saw.
    pub http: HttpClients,
    /// What the HTTP clients found wrong (checked after every step).
    pub(crate) violation: Option<String>,
    pub(crate) next_conn: u64,
    /// Connect events still scheduled.
    connects_pending: usize,
    pub step: u64,
    pub max_steps: u64,
    pub shutdowns: u32,
    pub stop_accepting_step: Option<u64>,
    /// Connections that were to come after the relay stopped accepting (never made).
    pub connects_refused: usize,
    pub immediate_step: Option<u64>,
    final_shutdown_scheduled: bool,
    /// Children that must get SIGKILL as soon as they are spawned (immediate shutdown).
    pub kill_on_spawn: BTreeSet<ChildId>,
    pub cur: StepFacts,
    /// Every signal sent, in order.
    pub signals: Vec<(Duration, ChildId, Signal)>,
    /// Highest `buffered(conn)` seen, and the bound.
    pub max_buffered_seen: usize,
    /// Every ERROR record seen (expected ones included).
    pub errors_logged: usize,
    last_child: u64,
    /// A deliberate driver fault (harness self-tests only).
    pub sabotage: Option<Sabotage>,
    /// Per mille of non-JSON lines a child of this run answers with an `"id": null` error.
    pub child_parse_error: u32,
}

fn ms(rng: &mut Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_micros(rng.range(lo * 1000, hi * 1000))
}

impl Sim {
    /// A run of `profile` drawn from `seed`. `keep_trace` keeps every trace line (otherwise
    /// only the last ones and a digest).
    pub fn new(seed: u64, profile: Profile, keep_trace: bool) -> Self {
        Sim::build(seed, profile, None, keep_trace)
    }

    /// TCP clients as `profile` says and Streamable HTTP sessions as `http` says, against one
    /// relay, with one child model, in one event loop.
    pub fn mixed(seed: u64, profile: Profile, http: HttpProfile, keep_trace: bool) -> Self {
        Sim::build(seed, profile, Some(http), keep_trace)
    }

    /// A run drawn from `seed`: the TCP side from `profile`, the HTTP side (if any) from `http`.
    /// A run with HTTP sessions and no TCP connections draws its configuration from `http`.
    pub(crate) fn build(
        seed: u64,
        profile: Profile,
        http: Option<HttpProfile>,
        keep_trace: bool,
    ) -> Self {
        let mut rng = Rng::new(seed);
        // Draws added after a profile's others come from a stream of their own, so that
        // they change no seed's earlier draws (a seed that found a bug keeps finding it).
        let mut later = Rng::new(seed ^ 0x9e37_79b9_7f4a_7c15);
        let mut config = match &http {
            Some(h) if profile.conns.1 == 0 => {
                let mut key = [0u8; 32];
                key[..8].copy_from_slice(&seed.to_le_bytes());
                let base = if h.faulty() {
                    // Failing servers: every restart setting, and probes that find a hang.
                    let mut p = Profile::restarts();
                    p.restart.push(RestartPolicy::Never);
                    p.max_restarts.push(0);
                    let c = p.config(&mut rng);
                    Config {
                        restart: c.restart,
                        restart_delay: c.restart_delay,
                        max_restart_delay: c.max_restart_delay,
                        max_restarts: c.max_restarts,
                        restart_window: c.restart_window,
                        ping_interval: c.ping_interval,
                        ping_timeout: c.ping_timeout,
                        shutdown_grace: c.shutdown_grace,
                        ..Config::default()
                    }
                } else {
                    Config::default()
                };
                Config {
                    max_buffered: *rng.pick(&h.max_buffered),
                    prespawn: rng.range_usize(0, 1),
                    seed: key,
                    http: HttpConfig {
                        session_timeout: h.session_timeout,
                        sse_keepalive: Duration::from_secs(rng.range(1, 20)),
                        ..HttpConfig::default()
                    },
                    ..base
                }
            }
            Some(h) => {
                let mut c = profile.config(&mut rng);
                c.http.session_timeout = h.session_timeout;
                c.http.sse_keepalive = Duration::from_secs(rng.range(1, 20));
                c
            }
            None => profile.config(&mut rng),
        };
        // Cut-through: only TCP sessions use it.
        let child_parse_error = if profile.conns.1 > 0 {
            config.cut_through_from = *later.pick(&profile.cut_through_from);
            *later.pick(&profile.child_parse_error)
        } else {
            0
        };
        logger::start_capture();
        let clock = Clock::new();
        let mut sim = Sim {
            seed,
            relay: Relay::new(config.clone(), clock.now()).expect("a valid configuration"),
            config,
            profile,
            rng,
            clock,
            events: BTreeMap::new(),
            seq: 0,
            trace: Trace::new(keep_trace),
            conns: BTreeMap::new(),
            children: BTreeMap::new(),
            http: HttpClients::new(http),
            violation: None,
            next_conn: 1,
            connects_pending: 0,
            step: 0,
            max_steps: 400_000,
            shutdowns: 0,
            stop_accepting_step: None,
            connects_refused: 0,
            immediate_step: None,
            final_shutdown_scheduled: false,
            kill_on_spawn: BTreeSet::new(),
            cur: StepFacts::default(),
            signals: Vec::new(),
            max_buffered_seen: 0,
            errors_logged: 0,
            last_child: 0,
            sabotage: None,
            child_parse_error,
        };
        let c = &sim.config;
        let line = format!(
            "seed {seed}: max_message_size={} max_buffered={} max_in_flight={} shutdown_grace={} \
             restart={:?} restart_delay={} max_restarts={} restart_window={} ping_interval={:?} \
             ping_timeout={} heartbeat_interval={} cut_through_from={} child_parse_error={}",
            c.max_message_size,
            c.max_buffered,
            c.max_in_flight,
            Ms(c.shutdown_grace),
            c.restart,
            Ms(c.restart_delay),
            c.max_restarts,
            Ms(c.restart_window),
            c.ping_interval.map(Ms),
            Ms(c.ping_timeout),
            Ms(c.heartbeat_interval),
            c.cut_through_from,
            sim.child_parse_error,
        );
        sim.note(format_args!("{line}"));
        sim.plan_sessions();
        sim.plan();
        sim
    }

    /// Schedules the run's connections, early shutdowns and spurious timeouts.
    fn plan(&mut self) {
        let p = &self.profile;
        let n = self.rng.range_usize(p.conns.0, p.conns.1);
        for _ in 0..n {
            let at = ms(&mut self.rng, 0, 300);
            self.schedule_at(at, Event::Connect);
        }
        if self.rng.chance(self.profile.shutdown_early) {
            let at = ms(&mut self.rng, 0, 400);
            self.schedule_at(at, Event::Shutdown);
            self.final_shutdown_scheduled = true;
        }
        if self.rng.chance(self.profile.spurious_timeout * 10) {
            for _ in 0..self.rng.range(1, 5) {
                let at = ms(&mut self.rng, 0, 3000);
                self.schedule_at(at, Event::SpuriousTimeout);
            }
        }
        for s in 0..self.http.sessions.len() {
            let at = ms(&mut self.rng, 0, 50);
            self.schedule_at(at, Event::Http(Ev::Begin(s)));
        }
    }

    // ---- running ----

    /// Runs to the end and checks the end-of-run invariants.
    pub fn run(&mut self) -> Result<(), Failure> {
        if self.step == 0 {
            // The driver starts the relay before it accepts anyone (prespawned children).
            self.step += 1;
            self.cur = StepFacts {
                touched: true,
                input: Some("start"),
                ..StepFacts::new(self.relay.stats())
            };
            self.note(format_args!("in  start"));
            let now = self.clock.now();
            self.relay.start(now);
            self.drain()?;
            invariants::after_step(self).map_err(|e| self.fail(e))?;
        }
        loop {
            if !self.step()? {
                if !self.http.all_done() {
                    let what = self.unfinished();
                    return Err(self.fail(format!("nothing more will happen, yet: {what}")));
                }
                if self.shutdowns == 0 {
                    // Quiet before anyone asked to stop: the operator does now.
                    self.schedule(Duration::ZERO, Event::Shutdown);
                    self.final_shutdown_scheduled = true;
                    continue;
                }
                break;
            }
            if !self.final_shutdown_scheduled
                && self.connects_pending == 0
                && self.conns.values().all(|c| c.client.finished())
                && self.http.all_done()
            {
                self.final_shutdown_scheduled = true;
                let d = ms(&mut self.rng, 0, 200);
                self.schedule(d, Event::Shutdown);
            }
            if self.step >= self.max_steps || self.clock.elapsed() > Duration::from_secs(7200) {
                let what = self.unfinished();
                return Err(self.fail(format!(
                    "livelock: still running after {} steps and {} of simulated time: {what}",
                    self.step,
                    Ms(self.clock.elapsed())
                )));
            }
        }
        let steps = self.step;
        self.note(format_args!("quiet after {steps} steps"));
        invariants::at_end(self).map_err(|e| self.fail(e))?;
        invariants::http_at_end(self).map_err(|e| self.fail(e))
    }

    /// One step; `false` when nothing is left to do.
    pub fn step(&mut self) -> Result<bool, Failure> {
        let next_event = self.events.first_key_value().map(|(k, _)| k.0);
        let deadline = self.relay.poll_timeout().map(|d| self.clock.offset_of(d));
        let timeout_first = match (next_event, deadline) {
            (None, None) => return Ok(false),
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(e), Some(d)) => d <= e,
        };
        self.step += 1;
        self.cur = StepFacts::new(self.relay.stats());
        if timeout_first {
            let d = deadline.expect("checked above").max(self.clock.elapsed());
            self.clock.advance_to(d);
            self.timeout(false)?;
        } else {
            let ((at, _), event) = self.events.pop_first().expect("checked above");
            self.clock.advance_to(at);
            self.handle(event)?;
        }
        if let Some(what) = self.violation.take() {
            return Err(self.fail(what));
        }
        if self.cur.touched {
            invariants::after_step(self).map_err(|e| self.fail(e))?;
        }
        invariants::http_after_step(self).map_err(|e| self.fail(e))?;
        Ok(true)
    }

    pub fn now(&self) -> Duration {
        self.clock.elapsed()
    }

    pub fn fail(&self, what: String) -> Failure {
        Failure {
            step: self.step,
            at: self.clock.elapsed(),
            what,
            tail: self.trace.tail(),
        }
    }

    pub(crate) fn note(&mut self, args: fmt::Arguments<'_>) {
        let at = self.clock.elapsed();
        self.trace.push(at, args);
    }

    /// Schedules `event` after `delay`; the key unschedules it (`events.remove`).
    pub(crate) fn schedule(&mut self, delay: Duration, event: Event) -> (Duration, u64) {
        let at = self.clock.elapsed() + delay;
        self.schedule_at(at, event)
    }

    fn schedule_at(&mut self, at: Duration, event: Event) -> (Duration, u64) {
        if matches!(event, Event::Connect) {
            self.connects_pending += 1;
        }
        self.seq += 1;
        self.events.insert((at, self.seq), event);
        (at, self.seq)
    }

    // ---- feeding the core ----

    pub(crate) fn feed(&mut self, input: Input<'_>) -> Result<(), Failure> {
        self.cur.touched = true;
        let now = self.clock.elapsed();
        self.trace
            .push(now, format_args!("in  {}", ShowInput(&input)));
        self.cur.input = Some(input_name(&input));
        self.relay.handle_input(self.clock.now(), input);
        self.drain()
    }

    fn timeout(&mut self, spurious: bool) -> Result<(), Failure> {
        self.cur.touched = true;
        self.cur.input = Some("timeout");
        let reason = self
            .relay
            .next_deadline()
            .filter(|(d, _)| *d <= self.clock.now())
            .map_or("nothing due", |(_, r)| r.as_str());
        let kind = if spurious { "spurious " } else { "" };
        self.note(format_args!("in  {kind}timeout ({reason})"));
        let now = self.clock.now();
        self.relay.handle_timeout(now);
        self.drain()?;
        if let Some((d, why)) = self.relay.next_deadline() {
            if d <= now {
                return Err(self.fail(format!(
                    "after handle_timeout({}), poll_timeout() is {} ({why}): not after now \
                     (invariant 4)",
                    Ms(self.clock.offset_of(now)),
                    Ms(self.clock.offset_of(d)),
                )));
            }
        }
        Ok(())
    }

    /// Takes the log records of the last call into the core, then performs every output.
    ///
    /// Facts come from the core's counters (`Relay::stats`), not from log text: an ERROR record
    /// is expected only when a counter that stands for an operator-worthy failure grew in this
    /// step (a failed start, a session or the prespawn pool given up), one record per count.
    fn drain(&mut self) -> Result<(), Failure> {
        let stats = self.relay.stats();
        self.check_counters(&stats).map_err(|e| self.fail(e))?;
        self.cur.hangs_unmatched += stats
            .servers_hung
            .saturating_sub(self.cur.stats_after.servers_hung);
        self.cur.stats_after = stats;
        self.given_up_on().map_err(|e| self.fail(e))?;
        let mut outputs = Vec::new();
        while let Some(output) = self.relay.poll_output() {
            outputs.push(output);
        }
        for rec in logger::take() {
            let now = self.clock.elapsed();
            self.trace.push(
                now,
                format_args!("log {} {}: {}", rec.level, rec.target, rec.message),
            );
            if rec.level == log::Level::Error {
                self.errors_logged += 1;
                self.cur.errors += 1;
                let expected = self.cur.grew(|s| s.spawn_failures)
                    + self.cur.grew(|s| s.prespawn_given_up)
                    + self.cur.grew(|s| s.sessions_given_up);
                if self.cur.errors > expected {
                    return Err(self.fail(format!(
                        "unexpected ERROR log (no failed start, no session or pool given up in \
                         this step to explain it): {}",
                        rec.message
                    )));
                }
            }
        }
        self.map_http_children();
        for output in outputs {
            let now = self.clock.elapsed();
            self.trace
                .push(now, format_args!("out {}", ShowOutput(&output)));
            self.perform(output).map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    /// The children whose output the core gave up on in this step: as many as
    /// `Stats::outputs_abandoned` grew, among those exited with output still open — the ones
    /// whose `shutdown_grace` since the exit (or since the relay resumed reading them) is
    /// over, when there are more. Facts from the counter, not from log text.
    fn given_up_on(&mut self) -> Result<(), String> {
        let counted = self.cur.grew(|s| s.outputs_abandoned) as usize;
        if counted == 0 {
            return Ok(());
        }
        let (now, grace) = (self.now(), self.config.shutdown_grace);
        let open: Vec<ChildId> = self
            .children
            .iter()
            .filter(|(_, c)| {
                let (out, err) = (&c.server.stdout, &c.server.stderr);
                c.drv.spawned_at.is_some()
                    && c.drv.exit_reported.is_some()
                    && !c.drv.released
                    && c.drv.gave_up_step.is_none()
                    && (!out.eof_seen || !err.eof_seen)
            })
            .map(|(id, _)| *id)
            .collect();
        let due = |c: &ChildSide| {
            let exit = c.drv.exit_reported.map_or(now, |(_, t)| t);
            let since = c
                .drv
                .resumed_at
                .filter(|_| c.drv.paused_after_exit)
                .map_or(exit, |r| r.max(exit));
            !c.drv.stdout_paused && since + grace <= now
        };
        let chosen: Vec<ChildId> = if open.len() == counted {
            open
        } else {
            open.into_iter()
                .filter(|id| due(&self.children[id]))
                .collect()
        };
        if chosen.len() != counted {
            return Err(format!(
                "the core gave up on the output of {counted} exited server(s) \
                 (Stats::outputs_abandoned) in a {} step; the harness finds {chosen:?} whose \
                 output is still open and due",
                self.cur.input.unwrap_or("?")
            ));
        }
        let step = self.step;
        for id in &chosen {
            let drv = &mut self.children.get_mut(id).expect("listed above").drv;
            drv.gave_up_step = Some(step);
            drv.gave_up_at = Some(now);
        }
        self.cur.gave_up = chosen;
        Ok(())
    }

    /// The core's counters agree with what the harness knows of this step.
    fn check_counters(&self, now: &Stats) -> Result<(), String> {
        let before = &self.cur.stats_before;
        let grew = |f: fn(&Stats) -> u64| f(now).saturating_sub(f(before));
        let input = self.cur.input.unwrap_or("?");
        if grew(|s| s.spawn_failures) > 0 && input != "SpawnFailed" {
            return Err(format!(
                "Stats::spawn_failures grew in a {input} step: only a failed start counts"
            ));
        }
        if grew(|s| s.sessions_given_up) > 0 && !self.budget_spent() {
            return Err(format!(
                "a session was given up (Stats::sessions_given_up) in a {input} step, but no \
                 session has used its restart budget (--max-restarts {} within {})",
                self.config.max_restarts,
                Ms(self.config.restart_window)
            ));
        }
        if grew(|s| s.servers_hung) > 0 && input != "timeout" {
            return Err(format!(
                "a server was found hung (Stats::servers_hung) in a {input} step: only a \
                 deadline (an unanswered probe, a stdin not read) finds a hang"
            ));
        }
        if grew(|s| s.heartbeat_failures) > 0 && input != "timeout" {
            return Err(format!(
                "a client was dropped for silence (Stats::heartbeat_failures) in a {input} step"
            ));
        }
        Ok(())
    }

    // ---- events ----

    fn handle(&mut self, event: Event) -> Result<(), Failure> {
        match event {
            Event::Http(ev) => {
                self.http_event(ev);
                Ok(())
            }
            Event::Connect => self.connect(),
            Event::ClientWrite(conn) => {
                self.client_write(conn);
                Ok(())
            }
            Event::ClientHeartbeat(conn) => {
                self.client_heartbeat(conn);
                Ok(())
            }
            Event::ReadConn(conn) => self.read_conn(conn),
            Event::WriteConn(conn) => self.write_conn(conn),
            Event::SpawnResult(child) => self.spawn_result(child),
            Event::ReadStdout(child) => self.read_stdout(child),
            Event::ReadStderr(child) => self.read_stderr(child),
            Event::WriteStdin(child) => self.write_stdin(child),
            Event::Child(child, act) => {
                self.child_act(child, act);
                Ok(())
            }
            Event::ReportExit(child) => {
                let status = match self.children[&child].server.state {
                    ProcState::Exited(s) => s,
                    ProcState::Running => unreachable!("exit reported while running"),
                };
                let (step, now) = (self.step, self.now());
                let drv = &mut self.children.get_mut(&child).expect("known child").drv;
                drv.exit_reported = Some((step, now));
                drv.paused_after_exit = drv.stdout_paused;
                self.cur.child = Some(child);
                self.feed(Input::Exited { child, status })
            }
            Event::Shutdown => self.shutdown(),
            Event::SpuriousTimeout => self.timeout(true),
        }
    }

    fn connect(&mut self) -> Result<(), Failure> {
        self.connects_pending -= 1;
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let p = &self.profile;
        let lines = self.rng.range_usize(p.lines.0, p.lines.1);
        let ending = if self.rng.chance(p.client_reset) {
            Ending::Reset {
                after_lines: self.rng.range_usize(0, lines),
            }
        } else if self.rng.chance(p.client_quit) {
            Ending::Quit
        } else {
            Ending::HalfClose
        };
        let gen = ClientLines::new(
            self.rng.fork(),
            conn.0,
            self.config.max_message_size,
            self.profile.mix.clone(),
        );
        self.conns.insert(
            conn,
            ConnSide {
                client: Client::new(conn, gen, lines, ending),
                drv: ConnDriver {
                    open: true,
                    ..ConnDriver::default()
                },
                children: Vec::new(),
                model: ConnModel::default(),
                restart_decisions: Vec::new(),
            },
        );
        self.note(format_args!(
            "sim {conn} connects: {lines} lines, then {ending:?}"
        ));
        self.cur.accepted = Some(conn);
        self.feed(Input::Accepted {
            conn,
            local: "127.0.0.1:7000".parse().expect("valid address"),
            peer: format!("127.0.0.1:{}", 40000 + conn.0)
                .parse()
                .expect("valid address"),
            transport: Transport::Tcp,
            server: None,
        })?;
        if let Some(child) = self.relay.child_of(conn) {
            self.adopt(child);
        }
        let think = ms(&mut self.rng, 0, 20);
        self.schedule(think, Event::ClientWrite(conn));
        Ok(())
    }

    /// A prespawned child a session took: it now belongs to that connection.
    fn adopt(&mut self, child: ChildId) {
        let Some(side) = self.children.get(&child) else {
            return;
        };
        if side.conn.is_some() {
            return;
        }
        let Some(conn) = self
            .conns
            .keys()
            .copied()
            .find(|c| self.relay.child_of(*c) == Some(child))
        else {
            return;
        };
        let step = self.step;
        let side = self.children.get_mut(&child).expect("known child");
        side.conn = Some(conn);
        side.adopted = Some((step, side.server.stdout.taken()));
        self.conns
            .get_mut(&conn)
            .expect("known conn")
            .children
            .push(child);
        self.note(format_args!("sim {conn} is served by prespawned {child}"));
    }

    fn client_write(&mut self, conn: ConnId) {
        let Some(side) = self.conns.get_mut(&conn) else {
            return;
        };
        let c = &mut side.client;
        if c.finished() {
            return;
        }
        if let Ending::Reset { after_lines } = c.ending {
            if c.sent.len() >= after_lines {
                c.reset = true;
                c.tx.discard();
                self.note(format_args!("sim {conn}: the client resets the connection"));
                self.kick_conn_read(conn);
                return;
            }
        }
        if c.remaining == 0 {
            if !c.lingered {
                c.lingered = true;
                let d = ms(&mut self.rng, 0, self.profile.linger_ms);
                self.schedule(d, Event::ClientWrite(conn));
                return;
            }
            c.tx.closed = true;
            let how = if c.ending == Ending::Quit {
                "closes its socket"
            } else {
                "half-closes"
            };
            self.note(format_args!("sim {conn}: the client {how}"));
            self.kick_conn_read(conn);
            self.kick_conn_write(conn);
            return;
        }
        let n = self.rng.range_usize(1, 3).min(c.remaining);
        for _ in 0..n {
            let client = &mut self.conns.get_mut(&conn).expect("known conn").client;
            let line = client.write_next().line.clone();
            let idx = client.sent.len() - 1;
            self.wrote_line(conn, idx, &line);
        }
        self.kick_conn_read(conn);
        let think = ms(&mut self.rng, 0, 20);
        self.schedule(think, Event::ClientWrite(conn));
    }

    /// Bookkeeping for a line a client just wrote.
    fn wrote_line(&mut self, conn: ConnId, idx: usize, line: &ClientLine) {
        let now = self.clock.elapsed();
        let side = self.conns.get_mut(&conn).expect("known conn");
        side.model.on_client_line(idx, &line.kind);
        if line.kind == ClientKind::Heartbeat {
            side.client.last_heartbeat = Some(now);
        }
        if line.kind == ClientKind::Heartbeat && !side.client.heartbeats {
            side.client.heartbeats = true;
            let d = self.config.heartbeat_interval / 2;
            self.schedule(d, Event::ClientHeartbeat(conn));
        }
        let at = self.clock.elapsed();
        self.trace.push(
            at,
            format_args!(
                "sim {conn}: client writes line {idx} {:?}{} {}",
                line.kind,
                if line.crlf { " crlf" } else { "" },
                Bytes(&line.content)
            ),
        );
    }

    /// A client that asked for heartbeats keeps sending them until it ends.
    fn client_heartbeat(&mut self, conn: ConnId) {
        let side = self.conns.get_mut(&conn).expect("known conn");
        if side.client.finished() {
            return;
        }
        let line = ClientLine {
            content: br#"{"type":"heartbeat"}"#.to_vec(),
            crlf: false,
            kind: ClientKind::Heartbeat,
        };
        side.client.write(line.clone());
        let idx = side.client.sent.len() - 1;
        self.wrote_line(conn, idx, &line);
        self.kick_conn_read(conn);
        let d = self.config.heartbeat_interval / 2;
        self.schedule(d, Event::ClientHeartbeat(conn));
    }

    fn read_conn(&mut self, conn: ConnId) -> Result<(), Failure> {
        let side = self.conns.get_mut(&conn).expect("known conn");
        side.client.tx.scheduled = false;
        if !side.drv.open || side.drv.paused || side.client.tx.eof_seen {
            return Ok(());
        }
        if side.client.reset {
            side.drv.open = false;
            side.model.broken_step = Some(self.step);
            side.model.client_left(self.clock.elapsed());
            side.client.gone = true;
            return self.feed(Input::Broken {
                endpoint: Endpoint::Conn(conn),
                reason: "Connection reset by peer (os error 104)",
            });
        }
        let pending = side.client.tx.pending();
        if pending > 0 {
            let n = self.rng.skewed_size(self.profile.max_chunk).min(pending);
            let side = self.conns.get_mut(&conn).expect("known conn");
            let mut data = side.client.tx.take(n);
            side.client.mark_delivered(self.step, self.clock.elapsed());
            if self.sabotage == Some(Sabotage::CorruptClientByte) {
                if let Some(b) = data.iter_mut().find(|b| b.is_ascii_lowercase()) {
                    *b = b.to_ascii_uppercase();
                    self.sabotage = None;
                }
            }
            self.feed(Input::Data {
                from: Endpoint::Conn(conn),
                data: &data,
            })?;
            self.kick_conn_read(conn);
        } else if side.client.tx.at_eof() {
            side.client.tx.eof_seen = true;
            side.model.eof_step = Some(self.step);
            side.model.client_left(self.clock.elapsed());
            self.feed(Input::Eof {
                from: Endpoint::Conn(conn),
            })?;
        }
        Ok(())
    }

    fn write_conn(&mut self, conn: ConnId) -> Result<(), Failure> {
        let now = self.now();
        let side = self.conns.get_mut(&conn).expect("known conn");
        side.drv.write_scheduled = false;
        if !side.drv.open || side.drv.queue.is_empty() {
            return Ok(());
        }
        let c = &mut side.client;
        if c.reset || (c.ending == Ending::Quit && c.tx.closed) {
            side.drv.open = false;
            side.drv.queue.clear();
            side.model.broken_step = Some(self.step);
            side.model.client_left(now);
            c.gone = true;
            return self.feed(Input::Broken {
                endpoint: Endpoint::Conn(conn),
                reason: "Broken pipe (os error 32)",
            });
        }
        if c.stall_until > now {
            let at = c.stall_until;
            side.drv.write_scheduled = true;
            self.schedule_at(at, Event::WriteConn(conn));
            return Ok(());
        }
        let len = side.drv.queue.len();
        let n = if self.rng.chance(500) {
            len
        } else {
            self.rng.range_usize(1, len)
        };
        let side = self.conns.get_mut(&conn).expect("known conn");
        let bytes: Vec<u8> = side.drv.queue.drain(..n).collect();
        side.client.rx.extend_from_slice(&bytes);
        if self.rng.chance(self.profile.client_stall) {
            let stall = ms(&mut self.rng, 10, self.profile.stall_ms.max(10));
            let side = self.conns.get_mut(&conn).expect("known conn");
            side.client.stall_until = now + stall;
            self.note(format_args!(
                "sim {conn}: the client stops reading for {}",
                Ms(stall)
            ));
        }
        self.feed(Input::Written {
            to: Endpoint::Conn(conn),
            n,
        })?;
        self.kick_conn_write(conn);
        Ok(())
    }

    fn spawn_result(&mut self, child: ChildId) -> Result<(), Failure> {
        self.cur.child = Some(child);
        let side = self.children.get_mut(&child).expect("known child");
        if side.drv.cancelled_step.is_some() {
            // The relay cancelled it before its start was reported: the driver never starts it.
            return Ok(());
        }
        if let Some(error) = side.drv.will_fail.clone() {
            side.drv.failed_step = Some(self.step);
            side.drv.failed_at = Some(self.clock.elapsed());
            return self.feed(Input::SpawnFailed {
                child,
                error: &error,
            });
        }
        side.drv.spawned_at = Some(self.clock.elapsed());
        side.drv.stdin_open = true;
        let pid = 10_000 + child.0 as u32;
        self.feed(Input::Spawned { child, pid })?;
        let acts = self
            .children
            .get_mut(&child)
            .expect("known child")
            .server
            .on_start();
        self.schedule_acts(child, acts);
        self.kick_stdin(child);
        Ok(())
    }

    fn read_stdout(&mut self, child: ChildId) -> Result<(), Failure> {
        let side = self.children.get_mut(&child).expect("known child");
        side.server.stdout.scheduled = false;
        if side.drv.released || side.drv.stdout_paused || side.server.stdout.eof_seen {
            return Ok(());
        }
        let pending = side.server.stdout.pending();
        if pending > 0 {
            let n = self.rng.skewed_size(self.profile.max_chunk).min(pending);
            let side = self.children.get_mut(&child).expect("known child");
            let data = side.server.stdout.take(n);
            side.server.mark_delivered(self.step);
            let mut from = child;
            match self.sabotage {
                Some(Sabotage::LoseChildOutput) if data.contains(&b'\n') => {
                    self.sabotage = None;
                    self.kick_stdout(child);
                    return Ok(());
                }
                Some(Sabotage::MisrouteChildOutput) => {
                    let other = self.children.iter().find(|(id, c)| {
                        **id != child && c.drv.spawned_at.is_some() && !c.drv.released
                    });
                    if let Some((other, _)) = other {
                        from = *other;
                        self.sabotage = None;
                    }
                }
                _ => {}
            }
            self.feed(Input::Data {
                from: Endpoint::Child(from),
                data: &data,
            })?;
            self.kick_stdout(child);
        } else if side.server.stdout.at_eof() {
            side.server.stdout.eof_seen = true;
            side.drv.stdout_eof_step = Some(self.step);
            side.drv.stdout_eof_at = Some(self.clock.elapsed());
            self.feed(Input::Eof {
                from: Endpoint::Child(child),
            })?;
        }
        Ok(())
    }

    fn read_stderr(&mut self, child: ChildId) -> Result<(), Failure> {
        let side = self.children.get_mut(&child).expect("known child");
        side.server.stderr.scheduled = false;
        if side.drv.released || side.server.stderr.eof_seen {
            return Ok(());
        }
        let pending = side.server.stderr.pending();
        if pending > 0 {
            let n = self.rng.range_usize(1, 64).min(pending);
            let side = self.children.get_mut(&child).expect("known child");
            let data = side.server.stderr.take(n);
            self.feed(Input::Stderr { child, data: &data })?;
            self.kick_stderr(child);
        } else if side.server.stderr.at_eof() {
            side.server.stderr.eof_seen = true;
            side.drv.stderr_eof = true;
            side.drv.stderr_eof_at = Some(self.clock.elapsed());
            self.feed(Input::StderrEof { child })?;
        }
        Ok(())
    }

    fn write_stdin(&mut self, child: ChildId) -> Result<(), Failure> {
        let now = self.now();
        let side = self.children.get_mut(&child).expect("known child");
        side.drv.stdin_scheduled = false;
        if side.drv.released || !side.drv.stdin_open || side.drv.queue.is_empty() {
            return Ok(());
        }
        if !side.server.alive() {
            side.drv.stdin_open = false;
            side.drv.queue.clear();
            side.stop.stdin_closed_at.get_or_insert(now);
            return self.feed(Input::Broken {
                endpoint: Endpoint::Child(child),
                reason: "Broken pipe (os error 32)",
            });
        }
        if side.server.hung {
            // It stopped reading: the bytes wait (until it dies and the pipe breaks).
            return Ok(());
        }
        let len = side.drv.queue.len();
        let n = if side.server.traits.slow_stdin {
            self.rng.range_usize(1, 16).min(len)
        } else if self.rng.chance(500) {
            len
        } else {
            self.rng.range_usize(1, len)
        };
        let side = self.children.get_mut(&child).expect("known child");
        let bytes: Vec<u8> = side.drv.queue.drain(..n).collect();
        let acts = side.server.on_stdin(now, &bytes);
        if let Some(c) = side.server.complaints.drain(..).next() {
            self.violation.get_or_insert(c);
        }
        self.schedule_acts(child, acts);
        self.feed(Input::Written {
            to: Endpoint::Child(child),
            n,
        })?;
        self.kick_stdin(child);
        Ok(())
    }

    fn child_act(&mut self, child: ChildId, act: Act) {
        let now = self.now();
        let side = self.children.get_mut(&child).expect("known child");
        if !side.server.alive() {
            return;
        }
        let shown = match &act {
            Act::Answer { req, .. } => format!("answers {}", req.id),
            Act::AnswerBatch(r) => format!("answers a batch of {}", r.len()),
            Act::Stderr(b) => format!("writes {} to stderr", Bytes(b)),
            Act::Say { line, .. } | Act::SayAll { line, .. } => format!("says {}", Bytes(line)),
            other => format!("{other:?}"),
        };
        let exited = side.server.act(now, act);
        for (tag, s, rid) in side.server.tagged.drain(..) {
            self.http.emitted.insert(tag, (s, rid));
        }
        for (tag, s, rid) in side.server.oversize.drain(..) {
            self.http.oversize.insert(tag, (s, rid));
        }
        self.note(format_args!("sim {child}: {shown}"));
        if exited {
            let d = ms(&mut self.rng, 0, 3);
            self.schedule(d, Event::ReportExit(child));
            self.kick_stdin(child);
        }
        self.kick_stdout(child);
        self.kick_stderr(child);
    }

    fn shutdown(&mut self) -> Result<(), Failure> {
        self.shutdowns += 1;
        if self.shutdowns == 1 {
            let now = self.clock.elapsed();
            for side in self.conns.values_mut() {
                side.model.drain_step = Some(self.step);
                side.model.client_left(now);
            }
            if self.rng.chance(self.profile.shutdown_twice) {
                let grace = self.config.shutdown_grace.as_millis() as u64;
                let d = ms(&mut self.rng, 0, 2 * grace + 50);
                self.schedule(d, Event::Shutdown);
            }
            if self.rng.chance(self.profile.late_accept) {
                self.schedule(Duration::ZERO, Event::Connect);
            }
        } else if self.shutdowns == 2 {
            self.immediate_step = Some(self.step);
            let now = self.clock.elapsed();
            for side in self.conns.values_mut() {
                side.model.aborted = true;
                side.model.client_left(now);
            }
        }
        self.feed(Input::Shutdown)
    }

    fn schedule_acts(&mut self, child: ChildId, acts: Vec<(Duration, Act)>) {
        for (delay, act) in acts {
            self.schedule(delay, Event::Child(child, act));
        }
    }

    // ---- what makes the driver read or write ----

    fn kick_conn_read(&mut self, conn: ConnId) {
        let Some(side) = self.conns.get_mut(&conn) else {
            return;
        };
        let tx = &side.client.tx;
        let readable = tx.pending() > 0 || tx.at_eof() || side.client.reset;
        if side.drv.open && !side.drv.paused && !tx.scheduled && !tx.eof_seen && readable {
            side.client.tx.scheduled = true;
            let d = ms(&mut self.rng, 0, 2);
            self.schedule(d, Event::ReadConn(conn));
        }
    }

    fn kick_conn_write(&mut self, conn: ConnId) {
        let Some(side) = self.conns.get_mut(&conn) else {
            return;
        };
        if side.drv.open && !side.drv.write_scheduled && !side.drv.queue.is_empty() {
            side.drv.write_scheduled = true;
            let d = ms(&mut self.rng, 0, 3);
            self.schedule(d, Event::WriteConn(conn));
        }
    }

    fn kick_stdout(&mut self, child: ChildId) {
        let side = self.children.get_mut(&child).expect("known child");
        let out = &side.server.stdout;
        if side.drv.spawned_at.is_some()
            && !side.drv.released
            && !side.drv.stdout_paused
            && !out.scheduled
            && (out.pending() > 0 || out.at_eof())
        {
            side.server.stdout.scheduled = true;
            let d = ms(&mut self.rng, 0, 2);
            self.schedule(d, Event::ReadStdout(child));
        }
    }

    fn kick_stderr(&mut self, child: ChildId) {
        let side = self.children.get_mut(&child).expect("known child");
        let err = &side.server.stderr;
        if side.drv.spawned_at.is_some()
            && !side.drv.released
            && !err.scheduled
            && (err.pending() > 0 || err.at_eof())
        {
            side.server.stderr.scheduled = true;
            let d = ms(&mut self.rng, 0, 2);
            self.schedule(d, Event::ReadStderr(child));
        }
    }

    fn kick_stdin(&mut self, child: ChildId) {
        let side = self.children.get_mut(&child).expect("known child");
        if side.drv.stdin_open
            && !side.drv.released
            && !side.drv.stdin_scheduled
            && !side.drv.queue.is_empty()
        {
            side.drv.stdin_scheduled = true;
            let d = if side.server.traits.slow_stdin {
                ms(&mut self.rng, 5, 60)
            } else {
                ms(&mut self.rng, 0, 3)
            };
            self.schedule(d, Event::WriteStdin(child));
        }
    }

    // ---- performing outputs ----

    /// Performs one output, after checking that it is allowed (invariant 2 and the stop
    /// sequence). Errors describe a broken invariant.
    fn perform(&mut self, output: Output) -> Result<(), String> {
        let now = self.now();
        let conn = match &output {
            Output::Send {
                to: Endpoint::Conn(c),
                ..
            }
            | Output::Close {
                endpoint: Endpoint::Conn(c),
            }
            | Output::Pause {
                endpoint: Endpoint::Conn(c),
            }
            | Output::Resume {
                endpoint: Endpoint::Conn(c),
            } => Some(*c),
            _ => None,
        };
        if conn.is_some_and(|c| self.http.conns.contains_key(&c.0)) {
            return self.http_output(output);
        }
        let touched = match &output {
            Output::Send {
                to: Endpoint::Child(c),
                ..
            }
            | Output::Close {
                endpoint: Endpoint::Child(c),
            }
            | Output::Pause {
                endpoint: Endpoint::Child(c),
            }
            | Output::Resume {
                endpoint: Endpoint::Child(c),
            }
            | Output::Signal { child: c, .. }
            | Output::Cancel { child: c }
            | Output::Release { child: c } => Some(*c),
            _ => None,
        };
        if let Some(child) = touched {
            self.adopt(child);
        }
        match output {
            Output::Spawn { child, .. } => self.perform_spawn(child),
            Output::Connect { conn, .. } => {
                Err(format!("Connect {conn}: the simulated relay has no remote"))
            }
            Output::Send {
                to: Endpoint::Upstream(up),
                ..
            }
            | Output::Close {
                endpoint: Endpoint::Upstream(up),
            } => Err(format!("{up}: the simulated relay has no remote")),
            Output::Cancel { child } => {
                let step = self.step;
                let side = self
                    .children
                    .get_mut(&child)
                    .ok_or_else(|| format!("Cancel of {child}, which was never spawned"))?;
                if side.drv.spawned_at.is_some()
                    || side.drv.failed_step.is_some()
                    || side.drv.cancelled_step.is_some()
                {
                    return Err(format!(
                        "Cancel of {child} after its start was reported (or cancelled)"
                    ));
                }
                side.drv.cancelled_step = Some(step);
                Ok(())
            }
            Output::Send {
                to: Endpoint::Conn(conn),
                data,
            } => {
                let side = self
                    .conns
                    .get_mut(&conn)
                    .ok_or_else(|| format!("Send to {conn}, which was never accepted"))?;
                if !side.drv.open {
                    return Err(format!("Send to {conn} after it was closed or broke"));
                }
                let servers: Vec<&Server> = side
                    .children
                    .iter()
                    .map(|c| &self.children[c].server)
                    .collect();
                // Only the first child's failure makes the relay say "could not start".
                let spawn_error = side
                    .children
                    .first()
                    .and_then(|c| self.children[c].drv.will_fail.as_deref());
                side.model
                    .check_send_client(&data, &side.client, &servers, spawn_error, self.step)
                    .map_err(|e| format!("{conn}: {e}"))?;
                side.drv.queue.extend_from_slice(&data);
                self.kick_conn_write(conn);
                Ok(())
            }
            Output::Send {
                to: Endpoint::Child(child),
                data,
            } => {
                let side = self.children.get_mut(&child).ok_or_else(|| {
                    format!("Send to {child}, which the relay never asked to spawn")
                })?;
                if side.drv.spawned_at.is_none() {
                    return Err(format!("Send to {child} before it was Spawned"));
                }
                if side.drv.released || side.drv.exit_reported.is_some() {
                    return Err(format!("Send to {child} after it exited or was released"));
                }
                if !side.drv.stdin_open {
                    return Err(format!(
                        "Send to {child} after its stdin was closed or broke"
                    ));
                }
                side.drv.queue.extend_from_slice(&data);
                side.drv.own_requests_sent += data
                    .split(|b| *b == b'\n')
                    .filter(|l| is_relay_line(l))
                    .map(|l| requests_in_line(l).map_or(0, |r| r.len()))
                    .sum::<usize>();
                let Some(conn) = side.conn else {
                    // An HTTP session's child: what it is sent is checked by what it answers
                    // (its complaints) and by what the HTTP clients receive.
                    if self.http.sessions.is_empty() {
                        return Err(format!("Send to {child}, which serves no session"));
                    }
                    self.kick_stdin(child);
                    return Ok(());
                };
                let cs = self.conns.get_mut(&conn).expect("known conn");
                let replacement = cs.children.first() != Some(&child);
                cs.model
                    .check_send_child(child, replacement, &data, &cs.client)
                    .map_err(|e| format!("{conn}: {e}"))?;
                self.kick_stdin(child);
                Ok(())
            }
            Output::Close {
                endpoint: Endpoint::Conn(conn),
            } => {
                let immediate = self.immediate_step == Some(self.step);
                let silenced = self.cur.grew(|s| s.heartbeat_failures) > 0;
                let side = self
                    .conns
                    .get_mut(&conn)
                    .ok_or_else(|| format!("Close of {conn}, which was never accepted"))?;
                // A client the relay drops for missing heartbeats is one that asked for them.
                let silent = silenced && side.client.heartbeats;
                if !side.drv.open {
                    return Err(format!("Close of {conn} after it was closed or broke"));
                }
                if silent {
                    side.model.silent_close_step = Some(self.step);
                    side.model.client_left(now);
                    let limit = 2 * self.config.heartbeat_interval;
                    let heard = side.client.last_heartbeat.filter(|t| now < *t + limit);
                    if let Some(t) = heard {
                        return Err(format!(
                            "{conn} closed for not sending heartbeats, but it sent one {} ago \
                             (limit {}); it waits unread (paused socket: {}, {} bytes unread)",
                            Ms(now - t),
                            Ms(limit),
                            side.drv.paused,
                            side.client.tx.pending()
                        ));
                    }
                }
                if !side.drv.queue.is_empty() && !immediate && !silent {
                    return Err(format!(
                        "Close of {conn} with {} bytes not yet written",
                        side.drv.queue.len()
                    ));
                }
                side.drv.open = false;
                side.drv.queue.clear();
                side.model.closed_step = Some(self.step);
                side.model.client_left(now);
                side.client.gone = true;
                Ok(())
            }
            Output::Close {
                endpoint: Endpoint::Child(child),
            } => {
                let step = self.step;
                let side = self.child_alive_for("Close", child)?;
                if !side.drv.stdin_open {
                    return Err(format!(
                        "Close of {child}'s stdin after it was closed or broke"
                    ));
                }
                if !side.drv.queue.is_empty() {
                    return Err(format!(
                        "Close of {child}'s stdin with {} bytes not yet written",
                        side.drv.queue.len()
                    ));
                }
                side.drv.stdin_open = false;
                side.drv.stdin_close_step = Some(step);
                side.stop.stdin_closed_at.get_or_insert(now);
                let acts = side.server.on_stdin_eof(now);
                self.schedule_acts(child, acts);
                Ok(())
            }
            Output::Pause { endpoint } => self.perform_pause(endpoint, true),
            Output::Resume { endpoint } => self.perform_pause(endpoint, false),
            Output::Signal { child, signal } => self.perform_signal(child, signal),
            // The simulated remotes never ask for a token (no `RemoteConfig::login`).
            Output::RemoteLogin { status, .. } => {
                Err(format!("RemoteLogin ({status}) without login configured"))
            }
            Output::StopAccepting => {
                if self.stop_accepting_step.is_some() {
                    return Err("StopAccepting twice".into());
                }
                if self.cur.input != Some("Shutdown") {
                    return Err("StopAccepting outside a Shutdown step".into());
                }
                self.stop_accepting_step = Some(self.step);
                let later: Vec<(Duration, u64)> = self
                    .events
                    .iter()
                    .filter(|((at, _), e)| matches!(e, Event::Connect) && *at > now)
                    .map(|(k, _)| *k)
                    .collect();
                for k in later {
                    self.events.remove(&k);
                    self.connects_pending -= 1;
                    self.connects_refused += 1;
                }
                Ok(())
            }
            Output::Release { child } => {
                let grace = self.config.shutdown_grace;
                let aborted = self.immediate_step.is_some();
                let side = self
                    .children
                    .get_mut(&child)
                    .ok_or_else(|| format!("Release of {child}, which was never spawned"))?;
                if side.drv.released {
                    return Err(format!("Release of {child} twice"));
                }
                if side.drv.exit_reported.is_none()
                    && side.drv.failed_step.is_none()
                    && side.drv.cancelled_step.is_none()
                {
                    return Err(format!("Release of {child}, which has not exited"));
                }
                side.drv.released = true;
                let out = &side.server.stdout;
                if side.drv.spawned_at.is_some() && !out.eof_seen {
                    side.drv.gave_up_stdout = true;
                    let (_, exit_at) = side.drv.exit_reported.expect("checked above");
                    if !aborted && now < exit_at + grace {
                        return Err(format!(
                            "{child} released {} after its exit with stdout still open: the relay \
                             gave up on its output before shutdown_grace ({})",
                            Ms(now - exit_at),
                            Ms(grace)
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    fn perform_spawn(&mut self, child: ChildId) -> Result<(), String> {
        if child.0 <= self.last_child {
            return Err(format!(
                "Spawn of {child}: child ids must be new and increasing"
            ));
        }
        self.last_child = child.0;
        let owner = self
            .conns
            .keys()
            .copied()
            .find(|c| self.relay.child_of(*c) == Some(child));
        let conn = match (owner, self.cur.accepted) {
            (None, _) => None,
            (Some(c), Some(a)) if c == a && self.conns[&c].children.is_empty() => Some(c),
            (Some(_), _) => Some(self.restart_owner(child)?),
        };
        if let Some(conn) = conn {
            self.conns
                .get_mut(&conn)
                .expect("known conn")
                .children
                .push(child);
        }
        let http_sid = self.relay.http_session_of(child).map(str::to_owned);
        if let Some(sid) = &http_sid {
            // An HTTP session's child: its first, or a restart that follows the policy.
            let run = self.http.runs.entry(sid.clone()).or_default();
            if let Some(&prev) = run.children.last() {
                let decisions = run.restart_decisions.clone();
                let whom = format!("HTTP session {sid}");
                let finished_at = self.restart_check(child, &whom, prev, &decisions)?;
                let run = self.http.runs.get_mut(sid).expect("entered above");
                run.restart_decisions.push(finished_at);
            }
            self.http
                .runs
                .get_mut(sid)
                .expect("entered above")
                .children
                .push(child);
        }
        let p = &self.profile;
        let r = &mut self.rng;
        let traits = Traits {
            stubborn: r.chance(p.stubborn),
            banner: r.chance(p.banner),
            slow_stdin: r.chance(p.slow_stdin),
            holds: if r.chance(p.grandchild) {
                if r.chance(500) {
                    Holds::Both
                } else {
                    Holds::Stderr
                }
            } else {
                Holds::Nothing
            },
            crash: if r.chance(p.crash) {
                let status = *r.pick(&[
                    ExitStatus::Code(1),
                    ExitStatus::Signal(11),
                    ExitStatus::Code(0),
                    ExitStatus::Signal(6),
                ]);
                Some((ms(r, 1, 500), status))
            } else {
                None
            },
            close_stdout: r.chance(p.close_stdout).then(|| ms(r, 1, 500)),
            hang: r.chance(p.hang).then(|| ms(r, 1, 500)),
            noise: p.child_noise,
            notify: p.child_notify,
            oversize: p.child_oversize,
            near_limit: p.child_near_limit,
            crlf: p.child_crlf,
            parse_error: self.child_parse_error,
            // Serves the HTTP clients' tools once one of them initializes it.
            tools: self.http.active(),
        };
        let will_fail = r.chance(p.spawn_fail).then(|| {
            format!(
                "`sim-server` was not found: No such file or directory (os error 2) [sim {child}]"
            )
        });
        let server = Server::new(child, r.fork(), traits, self.config.max_message_size);
        let whom = match (conn, &http_sid) {
            (Some(c), _) => c.to_string(),
            (None, Some(sid)) => format!("HTTP session {sid}"),
            (None, None) => "the prespawn pool".to_owned(),
        };
        self.note(format_args!(
            "sim {child} for {whom}: {:?}{}",
            server.traits,
            if will_fail.is_some() {
                ", will fail to spawn"
            } else {
                ""
            }
        ));
        self.children.insert(
            child,
            ChildSide {
                conn,
                adopted: None,
                server,
                drv: ChildDriver {
                    will_fail,
                    ..ChildDriver::default()
                },
                stop: StopRecord::default(),
                http_sid,
            },
        );
        self.cur.spawns.push(child);
        let d = ms(&mut self.rng, 0, 30);
        self.schedule(d, Event::SpawnResult(child));
        Ok(())
    }

    /// A Spawn outside an accept is a restart: finds the session and checks that the restart
    /// follows the policy (one child at a time, only after a failure unless `Always`, never
    /// once the client left, within the budget, after exactly the backoff delay).
    fn restart_owner(&mut self, child: ChildId) -> Result<ConnId, String> {
        let conn = self
            .conns
            .iter()
            .find(|(c, _)| self.relay.child_of(**c) == Some(child))
            .map(|(c, _)| *c)
            .ok_or_else(|| format!("Spawn of {child}, which serves no connection"))?;
        let side = &self.conns[&conn];
        let prev_id = *side
            .children
            .last()
            .ok_or_else(|| format!("Spawn of {child} for {conn} outside its accept"))?;
        let m = &side.model;
        if let Some(step) = [m.eof_step, m.broken_step, m.drain_step]
            .into_iter()
            .flatten()
            .min()
        {
            return Err(format!(
                "{child} spawned for {conn}, whose client left at step {step}: no restart once \
                 the client is gone"
            ));
        }
        let finished_at =
            self.restart_check(child, &conn.to_string(), prev_id, &side.restart_decisions)?;
        self.conns
            .get_mut(&conn)
            .expect("known conn")
            .restart_decisions
            .push(finished_at);
        Ok(conn)
    }

    /// A restart of a session (named `whom`) whose last child was `prev_id`, with these restart
    /// decisions so far, follows the policy: one child at a time, only after a failure unless
    /// `Always`, within the budget, after exactly the backoff delay. Returns when `prev_id`
    /// finished (the new decision).
    fn restart_check(
        &self,
        child: ChildId,
        whom: &str,
        prev_id: ChildId,
        decisions: &[Duration],
    ) -> Result<Duration, String> {
        let now = self.now();
        let prev = &self.children[&prev_id];
        if !prev.drv.released {
            return Err(format!(
                "{child} spawned for {whom} while {prev_id} was not released (at most one child \
                 per session)"
            ));
        }
        let finished_at = self.finished_at(prev_id).ok_or_else(|| {
            format!("{child} spawned for {whom} while {prev_id} had not finished")
        })?;
        let failed = prev.drv.declared_hung
            || prev.drv.failed_step.is_some()
            || !matches!(prev.server.state, ProcState::Exited(ExitStatus::Code(0)));
        match self.config.restart {
            RestartPolicy::Never => {
                return Err(format!("{child} spawned for {whom} under --restart never"))
            }
            RestartPolicy::OnFailure if !failed => {
                return Err(format!(
                "{child} spawned for {whom} after {prev_id} exited cleanly (--restart on-failure)"
            ))
            }
            _ => {}
        }
        let window = self.config.restart_window;
        let recent = decisions
            .iter()
            .filter(|t| finished_at.saturating_sub(**t) < window)
            .count() as u32;
        if recent >= self.config.max_restarts {
            return Err(format!(
                "{child} spawned for {whom} with {recent} restarts within {} already \
                 (--max-restarts {})",
                Ms(window),
                self.config.max_restarts
            ));
        }
        let delay = self
            .config
            .restart_delay
            .checked_mul(1u32.checked_shl(recent).unwrap_or(u32::MAX))
            .unwrap_or(self.config.max_restart_delay)
            .min(self.config.max_restart_delay);
        if now != finished_at + delay {
            return Err(format!(
                "{child} spawned for {whom} at {}; {prev_id} finished at {} and restart {} wants \
                 a delay of {}",
                Ms(now),
                Ms(finished_at),
                recent + 1,
                Ms(delay)
            ));
        }
        Ok(finished_at)
    }

    /// When the relay had everything of a child: its exit and both ends of file, or its
    /// failed spawn, or the moment it gave up on its output.
    pub fn finished_at(&self, child: ChildId) -> Option<Duration> {
        let d = &self.children[&child].drv;
        if let Some(t) = d.failed_at {
            return Some(t);
        }
        let (_, exit) = d.exit_reported?;
        if let Some(g) = d.gave_up_at {
            return Some(g);
        }
        match (d.stdout_eof_at, d.stderr_eof_at) {
            (Some(o), Some(e)) => Some(exit.max(o).max(e)),
            _ => None,
        }
    }

    /// Some session has used its whole restart budget (its ERROR log is expected).
    fn budget_spent(&self) -> bool {
        let window = self.config.restart_window;
        let now = self.now();
        let spent = |decisions: &[Duration]| {
            decisions
                .iter()
                .filter(|t| now.saturating_sub(**t) < window)
                .count() as u32
                >= self.config.max_restarts
        };
        self.conns.values().any(|c| spent(&c.restart_decisions))
            || self.http.runs.values().any(|r| spent(&r.restart_decisions))
    }

    /// Children that began to serve an HTTP session (a prespawned one a session took, or one
    /// started for it) are tied to that session's id, as the relay says.
    fn map_http_children(&mut self) {
        if !self.http.active() {
            return;
        }
        let unmapped: Vec<ChildId> = self
            .children
            .iter()
            .filter(|(_, c)| c.conn.is_none() && c.http_sid.is_none() && !c.drv.released)
            .map(|(id, _)| *id)
            .collect();
        for id in unmapped {
            if let Some(sid) = self.relay.http_session_of(id).map(str::to_owned) {
                self.note(format_args!("sim {id} serves HTTP session {sid}"));
                let run = self.http.runs.entry(sid.clone()).or_default();
                if !run.children.contains(&id) {
                    run.children.push(id);
                }
                self.children.get_mut(&id).expect("listed above").http_sid = Some(sid);
            }
        }
    }

    /// The child exists for the driver: spawned and not released.
    fn child_alive_for(&mut self, what: &str, child: ChildId) -> Result<&mut ChildSide, String> {
        let side = self
            .children
            .get_mut(&child)
            .ok_or_else(|| format!("{what} of {child}, which the relay never asked to spawn"))?;
        if side.drv.failed_step.is_some() {
            return Err(format!("{what} of {child}, whose spawn failed"));
        }
        if side.drv.spawned_at.is_none() {
            return Err(format!(
                "{what} of {child} before it was Spawned (the driver has nothing to act on)"
            ));
        }
        if side.drv.released {
            return Err(format!("{what} of {child} after it was released"));
        }
        Ok(side)
    }

    fn perform_pause(&mut self, endpoint: Endpoint, pause: bool) -> Result<(), String> {
        let what = if pause { "Pause" } else { "Resume" };
        match endpoint {
            Endpoint::Upstream(up) => {
                return Err(format!("{what} of {up}: the simulation has no remote"))
            }
            Endpoint::Conn(conn) => {
                let side = self
                    .conns
                    .get_mut(&conn)
                    .ok_or_else(|| format!("{what} of {conn}, which was never accepted"))?;
                if !side.drv.open {
                    return Err(format!("{what} of {conn} after it was closed or broke"));
                }
                side.drv.paused = pause;
                if !pause {
                    self.kick_conn_read(conn);
                }
            }
            Endpoint::Child(child) => {
                let now = self.clock.elapsed();
                let side = self.child_alive_for(what, child)?;
                side.drv.stdout_paused = pause;
                if pause && side.drv.exit_reported.is_some() {
                    side.drv.paused_after_exit = true;
                }
                if !pause {
                    side.drv.resumed_at = Some(now);
                }
                if !pause {
                    self.kick_stdout(child);
                }
            }
        }
        Ok(())
    }

    fn perform_signal(&mut self, child: ChildId, signal: Signal) -> Result<(), String> {
        let now = self.now();
        let grace = self.config.shutdown_grace;
        let exit_step = self.cur.input == Some("Exited") && self.cur.child == Some(child);
        let immediate = self.immediate_step.is_some();
        let ping_timeout = self.config.ping_timeout;
        let step = self.step;
        let hangs = self.cur.hangs_unmatched;
        let side = self.child_alive_for("Signal", child)?;
        // A SIGTERM is either the stop sequence's (exactly `shutdown_grace` after stdin was
        // closed) or a hang verdict the core counted in this step (`Stats::servers_hung`).
        let in_sequence = side.stop.term_at.is_none()
            && side.drv.exit_reported.is_none()
            && side.stop.stdin_closed_at.is_some_and(|c| now == c + grace);
        let hung_verdict = signal == Signal::Term && !in_sequence && hangs > 0;
        if hung_verdict {
            self.cur.hangs_unmatched -= 1;
        }
        let side = self.child_alive_for("Signal", child)?;
        match signal {
            Signal::Term if hung_verdict => {
                if side.stop.term_at.is_some() {
                    return Err(format!("a second SIGTERM to {child}"));
                }
                let unread = side.server.stdout.pending();
                // The server needs `ping_timeout` from reading the probe to answer it.
                let probe_queued = side.server.own_requests_read < side.drv.own_requests_sent
                    || side
                        .server
                        .probe_read_at
                        .is_none_or(|r| now < r + ping_timeout);
                if !side.server.hung && side.server.alive() {
                    if side.drv.stdout_paused && unread > 0 {
                        return Err(format!(
                            "{child} was declared hung, but it answered: the relay itself \
                             paused reading its stdout, where {unread} bytes wait unread"
                        ));
                    } else if probe_queued {
                        return Err(format!(
                            "{child} was declared hung for not answering a probe it read {} \
                             ago (less than ping_timeout {}): the probe waited in its stdin \
                             queue behind input it was reading",
                            side.server
                                .probe_read_at
                                .map_or("never".into(), |r| Ms(now - r).to_string()),
                            Ms(ping_timeout)
                        ));
                    } else {
                        return Err(format!("{child} was declared hung, and it is not"));
                    }
                }
                side.drv.declared_hung = true;
                side.drv.hung_step = Some(step);
                side.stop.term_at = Some(now);
            }
            Signal::Term => {
                if side.drv.exit_reported.is_some() {
                    return Err(format!("SIGTERM to {child} after its exit was reported"));
                }
                if side.stop.term_at.is_some() {
                    return Err(format!("a second SIGTERM to {child}"));
                }
                match side.stop.stdin_closed_at {
                    Some(c) if now == c + grace => {}
                    Some(c) => {
                        return Err(format!(
                            "SIGTERM to {child} {} after its stdin was closed (at {}); the stop \
                             sequence wants exactly shutdown_grace ({})",
                            Ms(now - c),
                            Ms(c),
                            Ms(grace)
                        ))
                    }
                    None => {
                        return Err(format!(
                            "SIGTERM to {child} while its stdin is still open ({} bytes waiting \
                             to be written): the stop sequence closes stdin first, then waits \
                             shutdown_grace ({})",
                            side.drv.queue.len(),
                            Ms(grace)
                        ))
                    }
                }
                side.stop.term_at = Some(now);
            }
            Signal::Kill => {
                let in_sequence = side.stop.term_at.is_some_and(|t| now == t + grace);
                if !(exit_step || immediate || in_sequence) {
                    return Err(format!(
                        "SIGKILL to {child} at {}: not at its exit, not after an immediate \
                         shutdown, and not shutdown_grace ({}) after SIGTERM (sent at {:?})",
                        Ms(now),
                        Ms(grace),
                        side.stop.term_at.map(Ms)
                    ));
                }
                if !exit_step {
                    side.stop.kill_at.get_or_insert(now);
                }
            }
        }
        let acts = side.server.on_signal(signal);
        self.cur.kills.insert(child);
        self.signals.push((now, child, signal));
        self.schedule_acts(child, acts);
        Ok(())
    }
}

fn input_name(input: &Input<'_>) -> &'static str {
    match input {
        Input::Accepted { .. } => "Accepted",
        Input::Data { .. } => "Data",
        Input::Eof { .. } => "Eof",
        Input::Written { .. } => "Written",
        Input::Broken { .. } => "Broken",
        Input::Stderr { .. } => "Stderr",
        Input::StderrEof { .. } => "StderrEof",
        Input::Spawned { .. } => "Spawned",
        Input::SpawnFailed { .. } => "SpawnFailed",
        Input::Exited { .. } => "Exited",
        Input::Shutdown => "Shutdown",
        Input::AcceptTrouble { .. } => "AcceptTrouble",
        Input::RemoteToken { .. } => "RemoteToken",
        Input::Attached { .. } => "Attached",
        Input::Connected { .. } => "Connected",
        Input::ConnectFailed { .. } => "ConnectFailed",
        Input::Reconfigure { .. } => "Reconfigure",
    }
}

/// An input as one short line of text.
pub(crate) struct ShowInput<'a, 'b>(pub(crate) &'a Input<'b>);

impl fmt::Display for ShowInput<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Input::Accepted { conn, peer, .. } => write!(f, "Accepted {conn} from {peer}"),
            Input::Data { from, data } => write!(f, "Data {from} {}", Bytes(data)),
            Input::Eof { from } => write!(f, "Eof {from}"),
            Input::Written { to, n } => write!(f, "Written {to} {n}"),
            Input::Broken { endpoint, reason } => write!(f, "Broken {endpoint} ({reason})"),
            Input::Stderr { child, data } => write!(f, "Stderr {child} {}", Bytes(data)),
            Input::StderrEof { child } => write!(f, "StderrEof {child}"),
            Input::Spawned { child, pid } => write!(f, "Spawned {child} pid {pid}"),
            Input::SpawnFailed { child, error } => write!(f, "SpawnFailed {child} ({error})"),
            Input::Exited { child, status } => write!(f, "Exited {child} ({status})"),
            Input::Shutdown => write!(f, "Shutdown"),
            Input::AcceptTrouble { listeners } => write!(f, "AcceptTrouble {listeners}"),
            // The token itself is never shown.
            Input::RemoteToken { token } => write!(f, "RemoteToken ok={}", token.is_ok()),
            Input::Attached { conn } => write!(f, "Attached {conn}"),
            Input::Connected { conn } => write!(f, "Connected {conn}"),
            Input::ConnectFailed { conn, error } => write!(f, "ConnectFailed {conn} ({error})"),
            Input::Reconfigure { servers } => write!(f, "Reconfigure ({} servers)", servers.len()),
        }
    }
}

/// An output as one short line of text.
pub struct ShowOutput<'a>(pub &'a Output);

impl fmt::Display for ShowOutput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Output::Spawn { child, server } => write!(f, "Spawn {child} of {server}"),
            Output::Send { to, data } => write!(f, "Send {to} {}", Bytes(data)),
            Output::Close { endpoint } => write!(f, "Close {endpoint}"),
            Output::Pause { endpoint } => write!(f, "Pause {endpoint}"),
            Output::Resume { endpoint } => write!(f, "Resume {endpoint}"),
            Output::Signal { child, signal } => write!(f, "Signal {child} {signal:?}"),
            Output::StopAccepting => write!(f, "StopAccepting"),
            Output::RemoteLogin { status, .. } => write!(f, "RemoteLogin {status}"),
            Output::Cancel { child } => write!(f, "Cancel {child}"),
            Output::Release { child } => write!(f, "Release {child}"),
            Output::Connect {
                conn,
                host,
                port,
                tls,
            } => {
                let tls = if *tls { " (TLS)" } else { "" };
                write!(f, "Connect {conn} {host}:{port}{tls}")
            }
        }
    }
}
