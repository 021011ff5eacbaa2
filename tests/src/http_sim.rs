//! The simulation of Streamable HTTP (session era): the relay's core driven by a fake clock,
//! seeded randomness, MCP clients speaking HTTP/1.1 ([`crate::http_client`]) and MCP servers
//! as children — [`crate::server::Server`] in tools mode, the same child model as the TCP runs
//! (slow stdin, stubborn, banners, noise, `\r\n`, grandchildren holding pipes) — with the
//! harness playing the driver for connections and children.
//!
//! One seed drives everything: how many sessions and calls, which calls are slow (progress
//! notifications before the answer) or instant, which go pipelined on one keep-alive
//! connection and which concurrently on connections of their own, how request bytes are split
//! into reads (1 byte and up, request bodies sometimes chunked), how much of what the relay
//! sends is written at a time, spawn and child latencies, and which event streams the client
//! drops (end of file or a reset) to resume with `GET /mcp` + `Last-Event-ID`, which
//! notifications clients POST (202), and which connections a client half-closes after its
//! one request while still reading the answer (as distinct from a client that leaves).
//!
//! The invariants are listed and checked in [`crate::invariants`] (`http_*`) and, as the
//! clients read, here. Seeds run through [`crate::runner`], as the TCP runs do.

use crate::clock::Clock;
use crate::http_client::{self, contains, Rx, RxEv, LOCAL};
use crate::invariants;
use crate::logger;
use crate::profile::HttpProfile;
use crate::rng::Rng;
use crate::server::{Act, Holds, ProcState, Server, Traits};
use crate::trace::{Bytes, Trace};
use mcp_relay_core::{
    ChildId, Config, ConnId, Endpoint, HttpConfig, Input, Output, Relay, Signal, Transport,
    SESSION_ERA_VERSIONS,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Simulated time after which a run that has not finished is declared stuck.
const TIME_CAP: Duration = Duration::from_secs(30 * 60);
const STEP_CAP: u64 = 400_000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------------------
// The world
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DropHow {
    Eof,
    Broken,
}

#[derive(Debug)]
pub(crate) enum Ev {
    /// A session's client starts: it connects and sends `initialize`.
    Begin(usize),
    /// A session's client opens the connection of one group of calls.
    StartGroup(usize, usize, Option<u64>),
    /// A client writes its next (sequential) request on a connection.
    SendNext(u64),
    /// The driver reads what the client wrote.
    ReadConn(u64),
    /// The driver writes what the relay sent to the client.
    WriteConn(u64),
    /// The client closes an idle connection.
    Hangup(u64),
    /// The client resumes a dropped call stream.
    Resume(usize, usize),
    /// The session's last act: probes after expiry, or DELETE.
    Finish(usize),
    SpawnReport(u64),
    WriteStdin(u64),
    ReadStdout(u64),
    ReadStderr(u64),
    /// The child process does something ([`crate::server`]).
    Child(u64, Act),
    ReportExit(u64),
    Shutdown,
}

pub(crate) struct Call {
    pub(crate) id: u64,
    /// `(k, interval in ms)`: k progress notifications, then the answer.
    pub(crate) slow: Option<(u64, u64)>,
    pub(crate) token: Option<Value>,
    pub(crate) pad: usize,
    pub(crate) drops_left: u32,
    pub(crate) resume: bool,
    /// Events to see on a connection before dropping it.
    pub(crate) drop_at: usize,
    pub(crate) how: DropHow,
    pub(crate) progress_seen: u64,
    pub(crate) answered: u32,
    pub(crate) last_event: Option<(u64, u64)>,
    pub(crate) done: bool,
    pub(crate) abandoned: bool,
}

pub(crate) struct Group {
    pub(crate) calls: Vec<usize>,
    pub(crate) pipelined: bool,
    pub(crate) close_last: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    NotStarted,
    Init,
    Initialized,
    Calls,
    Finishing,
    Done,
}

pub(crate) struct Sess {
    pub(crate) version: &'static str,
    pub(crate) sid: Option<String>,
    pub(crate) calls: Vec<Call>,
    pub(crate) groups: Vec<Group>,
    pub(crate) doomed: bool,
    pub(crate) delete_at_end: bool,
    pub(crate) phase: Phase,
    pub(crate) next_id: u64,
    pub(crate) init_answered: bool,
    pub(crate) finish_left: usize,
    /// The stream of the call the doomed session abandoned, for its `Last-Event-ID` probe.
    pub(crate) abandoned_event: Option<(u64, u64)>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Expect {
    Init,
    Initialized,
    Call(usize),
    Resume(usize),
    /// 404: the session expired or was deleted.
    Gone,
    Delete,
    /// 202: a notification POSTed.
    Notified,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Pending {
    pub(crate) session: usize,
    pub(crate) expect: Expect,
}

/// The head of the response being read.
pub(crate) struct RespHead {
    pub(crate) status: u16,
}

/// One connection: the driver's socket and the client using it.
#[derive(Default)]
pub(crate) struct Cn {
    /// Accepted, and neither closed by the relay nor broken.
    pub(crate) open: bool,
    pub(crate) eof_sent: bool,
    /// The client closed this connection and left (not a half-close): like a real socket, the
    /// next write to it fails (the peer answers with a reset).
    pub(crate) left: bool,
    pub(crate) paused: bool,
    pub(crate) to_relay: Vec<u8>,
    pub(crate) read_scheduled: bool,
    pub(crate) out_queue: Vec<u8>,
    pub(crate) write_scheduled: bool,
    /// The client stopped reading (it dropped the connection).
    pub(crate) deaf: bool,
    pub(crate) rx: Rx,
    pub(crate) pending: VecDeque<Pending>,
    pub(crate) later: VecDeque<(Pending, Vec<u8>)>,
    pub(crate) head: Option<RespHead>,
    pub(crate) events_here: usize,
    /// The client asked for `Connection: close`.
    pub(crate) expect_close: bool,
    /// A slow reader: small writes, far apart (backpressure).
    pub(crate) slow: bool,
    /// The client half-closes once its request is written, and still reads the answer.
    pub(crate) half_close: bool,
}

/// A child process ([`Server`], the same model as the TCP runs') and the driver's pipes to it.
pub(crate) struct Kid {
    pub(crate) server: Server,
    pub(crate) reported: bool,
    pub(crate) stdin_queue: Vec<u8>,
    pub(crate) write_scheduled: bool,
    pub(crate) stdin_closed: bool,
    pub(crate) stdin_broken: bool,
    pub(crate) signalled: bool,
    pub(crate) stdout_paused: bool,
    pub(crate) exit_reported: bool,
    pub(crate) released: bool,
    /// The relay cancelled its start before it was reported: it never runs.
    pub(crate) cancelled: bool,
}

impl Kid {
    /// The client session it serves (from `clientInfo.name` of `initialize`).
    pub(crate) fn session(&self) -> Option<usize> {
        self.server.session
    }
}

/// The simulated world of a Streamable HTTP run.
pub struct HttpSim {
    pub seed: u64,
    pub(crate) profile: HttpProfile,
    pub(crate) rng: Rng,
    pub clock: Clock,
    pub relay: Relay,
    pub trace: Trace,
    pub step: u64,
    pub(crate) events: BTreeMap<(Duration, u64), Ev>,
    pub(crate) next_ev: u64,
    pub(crate) conns: BTreeMap<u64, Cn>,
    pub(crate) next_conn: u64,
    pub(crate) kids: BTreeMap<u64, Kid>,
    pub(crate) sessions: Vec<Sess>,
    /// Every tagged message a child wrote: tag → (session, request id).
    pub(crate) emitted: BTreeMap<String, (usize, u64)>,
    /// How often each tag reached a client.
    pub(crate) seen: BTreeMap<String, u32>,
    /// Event stream number → (session, call, last sequence number seen).
    pub(crate) streams: BTreeMap<u64, (usize, usize, u64)>,
    pub(crate) shutdown_scheduled: bool,
    pub(crate) shutdown_sent: bool,
    pub(crate) stop_accepting: bool,
    pub(crate) failure: Option<String>,
    pub http_responses: u64,
    /// The child whose exit is being reported in this step.
    pub(crate) exit_step: Option<u64>,
    relay_max_message: usize,
}

impl HttpSim {
    /// A run of `profile` drawn from `seed`. `keep_trace` keeps every trace line.
    pub fn new(seed: u64, profile: HttpProfile, keep_trace: bool) -> Self {
        let mut rng = Rng::new(seed);
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        let config = Config {
            max_buffered: *rng.pick(&profile.max_buffered),
            prespawn: rng.range_usize(0, 1),
            seed: key,
            http: HttpConfig {
                session_timeout: profile.session_timeout,
                sse_keepalive: Duration::from_secs(rng.range(1, 20)),
                ..HttpConfig::default()
            },
            ..Config::default()
        };
        let clock = Clock::new();
        let relay_max_message = config.max_message_size;
        let relay = Relay::new(config, clock.now()).expect("a valid configuration");
        let n = rng.range_usize(profile.sessions.0, profile.sessions.1);
        let mut sim = HttpSim {
            seed,
            rng,
            clock,
            relay,
            trace: Trace::new(keep_trace),
            step: 0,
            events: BTreeMap::new(),
            next_ev: 0,
            conns: BTreeMap::new(),
            next_conn: 1,
            kids: BTreeMap::new(),
            sessions: Vec::new(),
            emitted: BTreeMap::new(),
            seen: BTreeMap::new(),
            streams: BTreeMap::new(),
            shutdown_scheduled: false,
            shutdown_sent: false,
            stop_accepting: false,
            failure: None,
            http_responses: 0,
            exit_step: None,
            relay_max_message,
            profile,
        };
        for s in 0..n {
            let doomed = sim.profile.doomed && s == 0;
            let sess = sim.plan_session(doomed);
            sim.sessions.push(sess);
        }
        sim
    }

    fn plan_session(&mut self, doomed: bool) -> Sess {
        let p = self.profile.clone();
        let r = &mut self.rng;
        let version = *r.pick(&SESSION_ERA_VERSIONS);
        let n = r.range_usize(p.calls.0, p.calls.1);
        let mut calls = Vec::new();
        let mut singles = Vec::new();
        let mut shared = Vec::new();
        for c in 0..n {
            let slow = r.chance(500).then(|| (r.range(1, 5), r.range(1, 60)));
            let token = (slow.is_some() || r.chance(300)).then(|| {
                if r.chance(500) {
                    json!(c)
                } else {
                    json!(format!("tok-{c}"))
                }
            });
            let drops = if slow.is_some() && r.chance(p.drops) {
                r.range(1, 2) as u32
            } else {
                0
            };
            let k = slow.map_or(0, |(k, _)| k as usize);
            calls.push(Call {
                id: 2 + c as u64,
                slow,
                token,
                pad: if r.chance(300) {
                    r.skewed_size(2000)
                } else {
                    0
                },
                drops_left: drops,
                resume: true,
                drop_at: r.range_usize(1, k.max(1)),
                how: if r.chance(500) {
                    DropHow::Eof
                } else {
                    DropHow::Broken
                },
                progress_seen: 0,
                answered: 0,
                last_event: None,
                done: false,
                abandoned: false,
            });
            if drops > 0 {
                singles.push(c);
            } else {
                shared.push(c);
            }
        }
        if doomed {
            let c = calls.len();
            calls.push(Call {
                id: 2 + c as u64,
                slow: Some((40, 400)),
                token: Some(json!("doomed")),
                pad: 0,
                drops_left: 1,
                resume: false,
                drop_at: 1,
                how: if r.chance(500) {
                    DropHow::Eof
                } else {
                    DropHow::Broken
                },
                progress_seen: 0,
                answered: 0,
                last_event: None,
                done: false,
                abandoned: false,
            });
            singles.push(c);
        }
        let mut groups: Vec<Group> = singles
            .into_iter()
            .map(|c| Group {
                calls: vec![c],
                pipelined: false,
                close_last: false,
            })
            .collect();
        if !shared.is_empty() {
            let g = r.range_usize(1, shared.len().min(3));
            let first = groups.len();
            for _ in 0..g {
                groups.push(Group {
                    calls: Vec::new(),
                    pipelined: r.chance(500),
                    close_last: r.chance(200),
                });
            }
            for c in shared {
                let at = first + r.range_usize(0, g - 1);
                groups[at].calls.push(c);
            }
            groups.retain(|g| !g.calls.is_empty());
        }
        let next_id = 2 + calls.len() as u64;
        Sess {
            version,
            sid: None,
            calls,
            groups,
            doomed,
            delete_at_end: !doomed && r.chance(400),
            phase: Phase::NotStarted,
            next_id,
            init_answered: false,
            finish_left: 0,
            abandoned_event: None,
        }
    }

    // ---- plumbing ----

    fn now(&self) -> Duration {
        self.clock.elapsed()
    }

    fn schedule(&mut self, after: Duration, ev: Ev) {
        let at = self.now() + after;
        self.events.insert((at, self.next_ev), ev);
        self.next_ev += 1;
    }

    fn log(&mut self, args: std::fmt::Arguments<'_>) {
        let now = self.now();
        self.trace.push(now, args);
    }

    fn violation(&mut self, what: String) {
        self.log(format_args!("VIOLATION: {what}"));
        if self.failure.is_none() {
            self.failure = Some(what);
        }
    }

    fn input(&mut self, input: Input<'_>) {
        self.log(format_args!("in  {}", show_input(&input)));
        let now = self.clock.now();
        self.relay.handle_input(now, input);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(o) = self.relay.poll_output() {
            self.perform(o);
        }
        for rec in logger::take() {
            self.log(format_args!("log {} {}", rec.level, rec.message));
            if rec.level == log::Level::Error {
                self.violation(format!("the relay logged an ERROR: {}", rec.message));
            }
        }
    }

    // ---- the driver performs outputs ----

    fn perform(&mut self, o: Output) {
        match &o {
            Output::Send { to, data } => self.log(format_args!("out send {to} {}", Bytes(data))),
            other => self.log(format_args!("out {other:?}")),
        }
        match o {
            Output::Spawn { child } => {
                let server = self.new_server(child);
                let kid = Kid {
                    server,
                    reported: false,
                    stdin_queue: Vec::new(),
                    write_scheduled: false,
                    stdin_closed: false,
                    stdin_broken: false,
                    signalled: false,
                    stdout_paused: false,
                    exit_reported: false,
                    released: false,
                    cancelled: false,
                };
                self.log(format_args!("sim {child}: {:?}", kid.server.traits));
                if self.kids.insert(child.0, kid).is_some() {
                    self.violation(format!("{child} spawned twice"));
                }
                let d = ms(self.rng.range(0, 30));
                self.schedule(d, Ev::SpawnReport(child.0));
            }
            Output::Send {
                to: Endpoint::Conn(c),
                data,
            } => {
                let Some(cn) = self.conns.get_mut(&c.0).filter(|cn| cn.open) else {
                    return self.violation(format!("Send to {c}, which is closed or unknown"));
                };
                cn.out_queue.extend_from_slice(&data);
                if !cn.write_scheduled {
                    cn.write_scheduled = true;
                    let d = ms(self.rng.range(0, 5));
                    self.schedule(d, Ev::WriteConn(c.0));
                }
            }
            Output::Send {
                to: Endpoint::Child(k),
                data,
            } => {
                let Some(kid) = self.kids.get_mut(&k.0) else {
                    return self.violation(format!("Send to unknown {k}"));
                };
                if !kid.reported || kid.stdin_closed || kid.stdin_broken || kid.released {
                    let what = format!(
                        "Send to the stdin of {k} (spawned {}, stdin closed {}, broken {}, released {})",
                        kid.reported, kid.stdin_closed, kid.stdin_broken, kid.released
                    );
                    return self.violation(what);
                }
                kid.stdin_queue.extend_from_slice(&data);
                self.poke_stdin(k.0);
            }
            Output::Close {
                endpoint: Endpoint::Conn(c),
            } => {
                let Some(cn) = self.conns.get_mut(&c.0).filter(|cn| cn.open) else {
                    return self.violation(format!("Close of {c}, which is closed or unknown"));
                };
                cn.open = false;
                let unwritten = cn.out_queue.len();
                if unwritten > 0 {
                    self.violation(format!(
                        "Close of {c} with {unwritten} bytes sent and not yet written"
                    ));
                }
            }
            Output::Close {
                endpoint: Endpoint::Child(k),
            } => {
                let Some(kid) = self.kids.get_mut(&k.0) else {
                    return self.violation(format!("Close of the stdin of unknown {k}"));
                };
                if kid.stdin_closed || kid.released || !kid.reported {
                    return self.violation(format!(
                        "Close of the stdin of {k} twice, after release or before spawn"
                    ));
                }
                kid.stdin_closed = true;
                if !kid.stdin_queue.is_empty() {
                    let n = kid.stdin_queue.len();
                    return self.violation(format!(
                        "Close of the stdin of {k} with {n} bytes not yet written"
                    ));
                }
                let acts = kid.server.on_stdin_eof(self.clock.elapsed());
                self.schedule_acts(k.0, acts);
            }
            Output::Pause { endpoint } | Output::Resume { endpoint } => {
                let pause = matches!(o, Output::Pause { .. });
                match endpoint {
                    Endpoint::Conn(c) => {
                        let Some(cn) = self.conns.get_mut(&c.0).filter(|cn| cn.open) else {
                            return self.violation(format!("Pause/Resume of {c}, which is closed"));
                        };
                        cn.paused = pause;
                        if !pause && !cn.read_scheduled && !cn.to_relay.is_empty() {
                            cn.read_scheduled = true;
                            self.schedule(ms(1), Ev::ReadConn(c.0));
                        }
                    }
                    Endpoint::Child(k) => {
                        let Some(kid) = self.kids.get_mut(&k.0).filter(|k| !k.released) else {
                            return self
                                .violation(format!("Pause/Resume of {k}, released or unknown"));
                        };
                        kid.stdout_paused = pause;
                        if !pause {
                            self.poke_stdout(k.0);
                        }
                    }
                }
            }
            Output::Signal { child, signal } => {
                let Some(kid) = self.kids.get_mut(&child.0) else {
                    return self.violation(format!("Signal to unknown {child}"));
                };
                if kid.exit_reported && self.exit_step == Some(child.0) && signal == Signal::Kill {
                    // The process group goes with the child (grandchildren must not leak).
                    return;
                }
                if kid.released || kid.exit_reported || !kid.reported {
                    let what = format!(
                        "{signal:?} to {child} (spawned {}, exit reported {}, released {})",
                        kid.reported, kid.exit_reported, kid.released
                    );
                    return self.violation(what);
                }
                kid.signalled = true;
                let acts = kid.server.on_signal(signal);
                self.schedule_acts(child.0, acts);
            }
            Output::StopAccepting => self.stop_accepting = true,
            Output::Release { child } => {
                let Some(kid) = self.kids.get_mut(&child.0) else {
                    return self.violation(format!("Release of unknown {child}"));
                };
                if kid.released {
                    return self.violation(format!("{child} released twice"));
                }
                kid.released = true;
                if !kid.exit_reported && !kid.cancelled {
                    self.violation(format!("{child} released before its exit was reported"));
                }
            }
            Output::Cancel { child } => {
                let Some(kid) = self.kids.get_mut(&child.0) else {
                    return self.violation(format!("Cancel of unknown {child}"));
                };
                if kid.reported || kid.cancelled {
                    return self
                        .violation(format!("Cancel of {child} after its start was reported"));
                }
                kid.cancelled = true;
            }
        }
    }

    // ---- connections ----

    fn open_conn(&mut self) -> u64 {
        let id = self.next_conn;
        self.next_conn += 1;
        if self.stop_accepting {
            self.violation("a client connects after StopAccepting".into());
        }
        let slow = self.rng.chance(self.profile.slow_readers);
        self.conns.insert(
            id,
            Cn {
                open: true,
                slow,
                ..Cn::default()
            },
        );
        let port = 40000 + id as u16;
        self.input(Input::Accepted {
            conn: ConnId(id),
            local: LOCAL.parse().expect("an address"),
            peer: format!("127.0.0.1:{port}").parse().expect("an address"),
            transport: Transport::Http,
        });
        id
    }

    fn write_req(&mut self, conn: u64, p: Pending, bytes: Vec<u8>) {
        self.log(format_args!(
            "client conn#{conn} s{} writes {:?}: {}",
            p.session,
            p.expect,
            Bytes(&bytes)
        ));
        let d = ms(self.rng.range(0, 3));
        let Some(cn) = self.conns.get_mut(&conn) else {
            return;
        };
        cn.to_relay.extend_from_slice(&bytes);
        cn.pending.push_back(p);
        if !cn.read_scheduled && !cn.paused {
            cn.read_scheduled = true;
            self.schedule(d, Ev::ReadConn(conn));
        }
    }

    fn read_conn(&mut self, conn: u64) {
        let n = self.rng.skewed_size(4096);
        let Some(cn) = self.conns.get_mut(&conn) else {
            return;
        };
        cn.read_scheduled = false;
        if !cn.open || cn.paused {
            return;
        }
        if cn.to_relay.is_empty() {
            if cn.half_close && !cn.eof_sent {
                // Half-closed: no more requests, and it still reads the answer.
                cn.eof_sent = true;
                self.log(format_args!("client conn#{conn} half-closes"));
                self.input(Input::Eof {
                    from: Endpoint::Conn(ConnId(conn)),
                });
            }
            return;
        }
        let n = n.min(cn.to_relay.len());
        let data: Vec<u8> = cn.to_relay.drain(..n).collect();
        let more = !cn.to_relay.is_empty() || (cn.half_close && !cn.eof_sent);
        if more {
            cn.read_scheduled = true;
        }
        self.input(Input::Data {
            from: Endpoint::Conn(ConnId(conn)),
            data: &data,
        });
        if more {
            let d = ms(self.rng.range(0, 3));
            self.schedule(d, Ev::ReadConn(conn));
        }
    }

    fn write_conn(&mut self, conn: u64) {
        let slow = self.conns.get(&conn).is_some_and(|cn| cn.slow);
        let (n, d) = if slow {
            (self.rng.range_usize(1, 64), ms(self.rng.range(5, 40)))
        } else {
            (self.rng.skewed_size(8192), ms(self.rng.range(0, 8)))
        };
        let Some(cn) = self.conns.get_mut(&conn) else {
            return;
        };
        cn.write_scheduled = false;
        if cn.out_queue.is_empty() {
            return;
        }
        if cn.left {
            cn.open = false;
            cn.out_queue.clear();
            self.input(Input::Broken {
                endpoint: Endpoint::Conn(ConnId(conn)),
                reason: "connection reset by peer",
            });
            return;
        }
        let n = n.min(cn.out_queue.len());
        let data: Vec<u8> = cn.out_queue.drain(..n).collect();
        self.input(Input::Written {
            to: Endpoint::Conn(ConnId(conn)),
            n,
        });
        if let Some(cn) = self.conns.get_mut(&conn) {
            if !cn.deaf {
                cn.rx.buf.extend_from_slice(&data);
            }
            if !cn.out_queue.is_empty() && !cn.write_scheduled {
                cn.write_scheduled = true;
                self.schedule(d, Ev::WriteConn(conn));
            }
        }
        self.client_rx(conn);
    }

    /// The client reads what reached it, event by event.
    fn client_rx(&mut self, conn: u64) {
        loop {
            if self.failure.is_some() {
                return;
            }
            let Some(cn) = self.conns.get_mut(&conn) else {
                return;
            };
            if cn.deaf {
                return;
            }
            let ev = match cn.rx.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => return,
                Err(e) => return self.violation(format!("conn#{conn}: unreadable response: {e}")),
            };
            let Some(p) = cn.pending.front().copied() else {
                return self.violation(format!("conn#{conn}: a response nobody asked for: {ev:?}"));
            };
            match ev {
                RxEv::Head { status, sid, sse } => {
                    self.http_responses += 1;
                    self.log(format_args!(
                        "client conn#{conn} s{} {:?}: HTTP {status}{}",
                        p.session,
                        p.expect,
                        if sse { " (event stream)" } else { "" }
                    ));
                    if let Some(cn) = self.conns.get_mut(&conn) {
                        cn.head = Some(RespHead { status });
                    }
                    self.on_head(conn, p, status, sid, sse);
                }
                RxEv::Body(body) => {
                    let status = self.conns[&conn].head.as_ref().map_or(0, |h| h.status);
                    if status == 200 && !body.is_empty() {
                        self.on_message(conn, p, &body);
                    }
                    self.on_complete(conn);
                }
                RxEv::Event { id, data } => self.on_event(conn, p, id, data),
                RxEv::End => self.on_complete(conn),
            }
        }
    }

    fn on_head(&mut self, conn: u64, p: Pending, status: u16, sid: Option<String>, sse: bool) {
        let want = match p.expect {
            Expect::Init | Expect::Call(_) | Expect::Resume(_) | Expect::Delete => 200,
            Expect::Initialized | Expect::Notified => 202,
            Expect::Gone => 404,
        };
        if status != want {
            return self.violation(format!(
                "conn#{conn} s{} {:?}: HTTP {status}, expected {want}",
                p.session, p.expect
            ));
        }
        if matches!(p.expect, Expect::Resume(_)) && !sse {
            return self.violation(format!(
                "conn#{conn}: a resumption answered without a stream"
            ));
        }
        if let Expect::Init = p.expect {
            let Some(sid) = sid else {
                return self.violation(format!(
                    "conn#{conn}: initialize answered without Mcp-Session-Id"
                ));
            };
            if sid.len() != 32 || !sid.bytes().all(|b| b.is_ascii_hexdigit()) {
                return self.violation(format!(
                    "conn#{conn}: session id {sid:?} is not 32 hex digits"
                ));
            }
            if self.sessions.iter().any(|s| s.sid.as_deref() == Some(&sid)) {
                return self.violation(format!("session id {sid} handed out twice"));
            }
            self.sessions[p.session].sid = Some(sid);
        }
    }

    fn on_event(&mut self, conn: u64, p: Pending, id: Option<String>, data: Option<String>) {
        let call = match p.expect {
            Expect::Call(c) | Expect::Resume(c) => c,
            _ => {
                if let Some(d) = data.filter(|d| !d.is_empty()) {
                    self.on_message(conn, p, d.as_bytes());
                }
                return;
            }
        };
        let s = p.session;
        if let Some(id) = &id {
            let Some((stream, n)) = id
                .split_once('-')
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
            else {
                return self.violation(format!("conn#{conn}: event id {id:?} is not <stream>-<n>"));
            };
            if let Expect::Resume(_) = p.expect {
                let want = self.sessions[s].calls[call].last_event.map(|(st, _)| st);
                if want != Some(stream) {
                    return self.violation(format!(
                        "conn#{conn} s{s}: resuming the stream of call {call} ({want:?}) brought events of stream {stream}"
                    ));
                }
            }
            match self.streams.get_mut(&stream) {
                None => {
                    if n != 1 {
                        return self.violation(format!(
                            "conn#{conn} s{s}: the first event seen of stream {stream} is {n}, not 1"
                        ));
                    }
                    self.streams.insert(stream, (s, call, 1));
                }
                Some(entry) => {
                    let (s2, c2, last) = *entry;
                    if (s2, c2) != (s, call) {
                        return self.violation(format!(
                            "conn#{conn}: stream {stream} of session {s2} call {c2} delivered to session {s} call {call} (cross-talk)"
                        ));
                    }
                    if n != last + 1 {
                        return self.violation(format!(
                            "conn#{conn} s{s}: event {stream}-{n} follows {stream}-{last} ({})",
                            if n <= last { "a repeat" } else { "a gap" }
                        ));
                    }
                    entry.2 = n;
                }
            }
            self.sessions[s].calls[call].last_event = Some((stream, n));
        }
        if let Some(d) = data.filter(|d| !d.is_empty()) {
            self.on_message(conn, p, d.as_bytes());
        }
        if id.is_some() {
            if let Some(cn) = self.conns.get_mut(&conn) {
                cn.events_here += 1;
            }
            self.maybe_drop(conn, s, call);
        }
    }

    /// A JSON-RPC message received on a response to a request of this client.
    fn on_message(&mut self, conn: u64, p: Pending, data: &[u8]) {
        let s = p.session;
        let v: Value = match serde_json::from_slice(data) {
            Ok(v) => v,
            Err(e) => {
                return self.violation(format!(
                    "conn#{conn}: a message that is not JSON ({e}): {}",
                    Bytes(data)
                ))
            }
        };
        match p.expect {
            Expect::Init => {
                let version = self.sessions[s].version;
                if v["id"] != json!(1) || v["result"]["protocolVersion"] != json!(version) {
                    return self.violation(format!("s{s}: unexpected answer to initialize: {v}"));
                }
                if self.sessions[s].init_answered {
                    return self.violation(format!("s{s}: initialize answered twice"));
                }
                self.sessions[s].init_answered = true;
            }
            Expect::Call(c) | Expect::Resume(c) => self.on_call_message(conn, s, c, &v),
            _ => self.violation(format!(
                "conn#{conn} s{s} {:?}: unexpected message {v}",
                p.expect
            )),
        }
    }

    fn on_call_message(&mut self, conn: u64, s: usize, c: usize, v: &Value) {
        let sid = self.sessions[s].sid.clone().unwrap_or_default();
        let call = &self.sessions[s].calls[c];
        let id = call.id;
        let tag;
        if v["method"] == json!("notifications/progress") {
            let want = format!("s{s}/r{id}/p{}", call.progress_seen + 1);
            if Some(&v["params"]["progressToken"]) != call.token.as_ref()
                || v["params"]["message"] != json!(want)
            {
                return self.violation(format!(
                    "conn#{conn} s{s} call {c}: expected progress {want} with token {:?}, got {v}",
                    call.token
                ));
            }
            tag = want;
            self.sessions[s].calls[c].progress_seen += 1;
        } else if v["id"] == json!(id) && v.get("result").is_some() {
            let want = format!("s{s}/r{id}/final");
            let r = &v["result"];
            if r["tag"] != json!(want)
                || r["session"] != json!(s)
                || r["args"]["sid"] != json!(sid)
                || r["args"]["call"] != json!(c)
            {
                return self.violation(format!(
                    "conn#{conn} s{s} call {c}: a wrong answer (cross-talk?): {v}"
                ));
            }
            let k = call.slow.map_or(0, |(k, _)| k);
            if call.progress_seen != k {
                return self.violation(format!(
                    "conn#{conn} s{s} call {c}: the answer came after {} of {k} progress notifications",
                    call.progress_seen
                ));
            }
            tag = want;
            let call = &mut self.sessions[s].calls[c];
            call.answered += 1;
            if call.answered > 1 {
                return self.violation(format!("s{s} call {c}: answered twice"));
            }
        } else {
            return self.violation(format!("conn#{conn} s{s} call {c}: unexpected message {v}"));
        }
        match self.emitted.get(&tag) {
            Some(&(s2, id2)) if (s2, id2) == (s, id) => {}
            other => {
                return self.violation(format!(
                "message {tag} received by s{s}, but no child of that session wrote it ({other:?})"
            ))
            }
        }
        let n = self.seen.entry(tag.clone()).or_default();
        *n += 1;
        let n = *n;
        if n > 1 {
            self.violation(format!("message {tag} delivered {n} times"));
        }
    }

    /// The client may drop the connection of a slow call's stream after some events.
    fn maybe_drop(&mut self, conn: u64, s: usize, c: usize) {
        let call = &self.sessions[s].calls[c];
        let cn = &self.conns[&conn];
        if call.drops_left == 0 || call.answered > 0 || cn.events_here < call.drop_at {
            return;
        }
        // A stream whose end was written may be forgotten by the relay: written bytes may
        // have been lost in the network, which the relay cannot know, so the client only
        // drops before the end was written. It does drop when the end was handed to the
        // driver and not yet written (see
        // `a_stream_dropped_before_its_end_was_written_can_be_resumed`).
        let fin = format!("s{s}/r{}/final", call.id);
        let written = contains(&cn.rx.buf, fin.as_bytes()) || contains(&cn.rx.sse, fin.as_bytes());
        if written {
            return;
        }
        let (how, resume, last) = (call.how, call.resume, call.last_event);
        self.log(format_args!(
            "client conn#{conn} s{s} call {c}: drops the stream ({how:?}) after event {last:?}"
        ));
        let cn = self.conns.get_mut(&conn).expect("the connection");
        cn.deaf = true;
        cn.rx = Rx::default();
        let pending: Vec<Pending> = cn.pending.drain(..).collect();
        cn.later.clear();
        if pending.len() != 1 {
            return self.violation(format!(
                "conn#{conn}: dropped with {} requests pending",
                pending.len()
            ));
        }
        let call = &mut self.sessions[s].calls[c];
        call.drops_left -= 1;
        if resume {
            let d = ms(self.rng.range(1, 300));
            self.schedule(d, Ev::Resume(s, c));
        } else {
            call.abandoned = true;
            self.sessions[s].abandoned_event = self.sessions[s].calls[c].last_event;
        }
        match how {
            DropHow::Eof => {
                if let Some(cn) = self.conns.get_mut(&conn) {
                    cn.eof_sent = true;
                    cn.left = true;
                }
                self.input(Input::Eof {
                    from: Endpoint::Conn(ConnId(conn)),
                });
            }
            DropHow::Broken => {
                if let Some(cn) = self.conns.get_mut(&conn) {
                    cn.open = false;
                    cn.out_queue.clear();
                }
                self.input(Input::Broken {
                    endpoint: Endpoint::Conn(ConnId(conn)),
                    reason: "connection reset by peer",
                });
            }
        }
        if !resume {
            self.maybe_finish(s);
        }
    }

    /// A response is complete.
    fn on_complete(&mut self, conn: u64) {
        let Some(cn) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(p) = cn.pending.pop_front() else {
            return;
        };
        cn.head = None;
        let s = p.session;
        self.log(format_args!(
            "client conn#{conn} s{s}: {:?} complete",
            p.expect
        ));
        match p.expect {
            Expect::Init => {
                if !self.sessions[s].init_answered || self.sessions[s].sid.is_none() {
                    return self.violation(format!("s{s}: initialize got no answer"));
                }
                self.sessions[s].phase = Phase::Initialized;
                let reuse = !self.conns[&conn].expect_close && self.rng.chance(600);
                let target = if reuse { conn } else { self.open_conn() };
                let req = self.post(
                    s,
                    br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                    false,
                );
                self.write_req(
                    target,
                    Pending {
                        session: s,
                        expect: Expect::Initialized,
                    },
                    req,
                );
            }
            Expect::Initialized => {
                self.sessions[s].phase = Phase::Calls;
                let reuse =
                    (!self.conns[&conn].expect_close && self.rng.chance(500)).then_some(conn);
                for g in 0..self.sessions[s].groups.len() {
                    let d = ms(self.rng.range(0, 30));
                    self.schedule(d, Ev::StartGroup(s, g, if g == 0 { reuse } else { None }));
                }
                if self.sessions[s].groups.is_empty() {
                    self.maybe_finish(s);
                }
            }
            Expect::Call(c) | Expect::Resume(c) => {
                let call = &mut self.sessions[s].calls[c];
                let k = call.slow.map_or(0, |(k, _)| k);
                if call.answered != 1 || call.progress_seen != k {
                    let (a, n) = (call.answered, call.progress_seen);
                    return self.violation(format!(
                        "conn#{conn} s{s} call {c}: the response ended with {a} answers and {n} of {k} progress notifications"
                    ));
                }
                call.done = true;
                let more = self.conns.get(&conn).is_some_and(|cn| !cn.later.is_empty());
                if more {
                    let d = ms(self.rng.range(0, 20));
                    self.schedule(d, Ev::SendNext(conn));
                }
                self.maybe_finish(s);
            }
            Expect::Notified => {}
            Expect::Gone | Expect::Delete => {
                if let (Expect::Gone, true) = (p.expect, self.sessions[s].doomed) {
                    let kids: Vec<u64> = self
                        .kids
                        .iter()
                        .filter(|(_, k)| k.session() == Some(s))
                        .map(|(id, _)| *id)
                        .collect();
                    for k in kids {
                        let kid = &self.kids[&k];
                        if !(kid.stdin_closed || kid.signalled || kid.stdin_broken) {
                            return self.violation(format!(
                                "s{s} expired (its requests get 404) but its child#{k} still has its stdin open"
                            ));
                        }
                    }
                }
                let sess = &mut self.sessions[s];
                sess.finish_left -= 1;
                if sess.finish_left == 0 {
                    sess.phase = Phase::Done;
                    self.maybe_shutdown();
                }
            }
        }
        self.idle_check(conn);
    }

    fn idle_check(&mut self, conn: u64) {
        let Some(cn) = self.conns.get(&conn) else {
            return;
        };
        if cn.pending.is_empty()
            && cn.later.is_empty()
            && cn.open
            && !cn.deaf
            && !cn.eof_sent
            && !cn.expect_close
            && self.rng.chance(700)
        {
            let d = ms(self.rng.range(0, 50));
            self.schedule(d, Ev::Hangup(conn));
        }
    }

    fn hangup(&mut self, conn: u64) {
        let Some(cn) = self.conns.get_mut(&conn) else {
            return;
        };
        if !cn.pending.is_empty() || !cn.later.is_empty() || !cn.open || cn.eof_sent {
            return;
        }
        cn.eof_sent = true;
        cn.deaf = true;
        self.input(Input::Eof {
            from: Endpoint::Conn(ConnId(conn)),
        });
    }

    // ---- the clients' scripts ----

    fn headers(&self, s: usize) -> String {
        let sess = &self.sessions[s];
        let version = (sess.phase != Phase::Init).then_some(sess.version);
        http_client::session_headers(sess.sid.as_deref(), version)
    }

    /// A POST to `/mcp`, its body sometimes chunked.
    fn post(&mut self, s: usize, body: &[u8], close: bool) -> Vec<u8> {
        let headers = self.headers(s);
        http_client::post(&mut self.rng, &headers, body, close)
    }

    fn get_resume(&self, s: usize, last: (u64, u64)) -> Vec<u8> {
        http_client::get_resume(&self.headers(s), last)
    }

    fn call_body(&self, s: usize, c: usize) -> Vec<u8> {
        let sess = &self.sessions[s];
        let call = &sess.calls[c];
        let (name, k, interval) = match call.slow {
            Some((k, i)) => ("slow", k, i),
            None => ("echo", 0, 0),
        };
        let mut params = json!({
            "name": name,
            "arguments": {
                "session": s, "sid": sess.sid, "call": c, "k": k, "interval_ms": interval,
                "pad": "x".repeat(call.pad),
            },
        });
        if let Some(t) = &call.token {
            params["_meta"] = json!({ "progressToken": t });
        }
        let msg =
            json!({"jsonrpc": "2.0", "id": call.id, "method": "tools/call", "params": params});
        msg.to_string().into_bytes()
    }

    fn begin(&mut self, s: usize) {
        self.sessions[s].phase = Phase::Init;
        let conn = self.open_conn();
        let body = json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {
                "protocolVersion": self.sessions[s].version,
                "capabilities": {},
                "clientInfo": {"name": format!("sim-s{s}"), "version": "0"},
            },
        })
        .to_string();
        let req = self.post(s, body.as_bytes(), false);
        self.write_req(
            conn,
            Pending {
                session: s,
                expect: Expect::Init,
            },
            req,
        );
    }

    fn start_group(&mut self, s: usize, g: usize, reuse: Option<u64>) {
        let reuse = reuse.filter(|c| {
            self.conns
                .get(c)
                .is_some_and(|cn| cn.open && !cn.eof_sent && cn.pending.is_empty())
        });
        let conn = match reuse {
            Some(c) => c,
            None => self.open_conn(),
        };
        let calls = self.sessions[s].groups[g].calls.clone();
        let pipelined = self.sessions[s].groups[g].pipelined;
        let close_last = self.sessions[s].groups[g].close_last;
        if reuse.is_none() && self.rng.chance(self.profile.notify_posts) {
            // A notification POSTed on its own connection (202, no body).
            let n = self.open_conn();
            let body = json!({"jsonrpc": "2.0", "method": "notifications/roots/list_changed",
                "params": {"session": s, "group": g}})
            .to_string();
            let close = self.rng.chance(300);
            let req = self.post(s, body.as_bytes(), close);
            if let Some(cn) = self.conns.get_mut(&n) {
                cn.expect_close = close;
                cn.half_close = !close && self.rng.chance(self.profile.half_close);
            }
            self.write_req(
                n,
                Pending {
                    session: s,
                    expect: Expect::Notified,
                },
                req,
            );
        }
        let lone = calls.len() == 1 && self.sessions[s].calls[calls[0]].drops_left == 0;
        if reuse.is_none() && lone && !close_last && self.rng.chance(self.profile.half_close) {
            self.conns.get_mut(&conn).expect("conn").half_close = true;
        }
        for (i, &c) in calls.iter().enumerate() {
            let last = i + 1 == calls.len();
            let body = self.call_body(s, c);
            let req = self.post(s, &body, last && close_last);
            let p = Pending {
                session: s,
                expect: Expect::Call(c),
            };
            if i == 0 || pipelined {
                if last && close_last {
                    self.conns.get_mut(&conn).expect("conn").expect_close = true;
                }
                self.write_req(conn, p, req);
            } else {
                self.conns
                    .get_mut(&conn)
                    .expect("conn")
                    .later
                    .push_back((p, req));
            }
        }
        if !pipelined && close_last && calls.len() > 1 {
            // Marked when the last one is written.
        }
    }

    fn send_next(&mut self, conn: u64) {
        let Some(cn) = self.conns.get_mut(&conn) else {
            return;
        };
        if !cn.open || cn.deaf || !cn.pending.is_empty() {
            return;
        }
        let Some((p, req)) = cn.later.pop_front() else {
            return;
        };
        if cn.later.is_empty() && contains(&req, b"Connection: close") {
            cn.expect_close = true;
        }
        self.write_req(conn, p, req);
    }

    fn resume(&mut self, s: usize, c: usize) {
        let Some(last) = self.sessions[s].calls[c].last_event else {
            return self.violation(format!("s{s} call {c}: nothing to resume from"));
        };
        let conn = self.open_conn();
        let req = self.get_resume(s, last);
        let k = self.sessions[s].calls[c]
            .slow
            .map_or(1, |(k, _)| k as usize);
        let at = self.rng.range_usize(1, k.max(1));
        self.sessions[s].calls[c].drop_at = at;
        self.write_req(
            conn,
            Pending {
                session: s,
                expect: Expect::Resume(c),
            },
            req,
        );
    }

    fn maybe_finish(&mut self, s: usize) {
        let sess = &mut self.sessions[s];
        if sess.phase != Phase::Calls || !sess.calls.iter().all(|c| c.done || c.abandoned) {
            return;
        }
        sess.phase = Phase::Finishing;
        if sess.doomed {
            let after = self.profile.session_timeout + ms(1000);
            self.schedule(after, Ev::Finish(s));
        } else if sess.delete_at_end {
            let d = ms(self.rng.range(0, 20));
            self.schedule(d, Ev::Finish(s));
        } else {
            sess.phase = Phase::Done;
            self.maybe_shutdown();
        }
    }

    fn finish(&mut self, s: usize) {
        let conn = self.open_conn();
        let id = self.sessions[s].next_id;
        self.sessions[s].next_id += 1;
        let probe = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"session": s}}})
        .to_string();
        let gone = Pending {
            session: s,
            expect: Expect::Gone,
        };
        self.sessions[s].finish_left = 2;
        if self.sessions[s].doomed {
            let req = self.post(s, probe.as_bytes(), false);
            self.write_req(conn, gone, req);
            let last = self.sessions[s].abandoned_event.unwrap_or((1, 1));
            let req = self.get_resume(s, last);
            self.write_req(conn, gone, req);
        } else {
            let req = format!(
                "DELETE /mcp HTTP/1.1\r\nHost: {LOCAL}\r\n{}\r\n",
                self.headers(s)
            );
            self.write_req(
                conn,
                Pending {
                    session: s,
                    expect: Expect::Delete,
                },
                req.into_bytes(),
            );
            let req = self.post(s, probe.as_bytes(), false);
            self.write_req(conn, gone, req);
        }
    }

    fn maybe_shutdown(&mut self) {
        if !self.shutdown_scheduled && self.sessions.iter().all(|s| s.phase == Phase::Done) {
            self.shutdown_scheduled = true;
            let d = ms(self.rng.range(0, 100));
            self.schedule(d, Ev::Shutdown);
        }
    }

    // ---- children ----

    /// A new child's behaviour, drawn from the profile.
    fn new_server(&mut self, child: ChildId) -> Server {
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
            noise: p.child_noise,
            crlf: p.child_crlf,
            tools: true,
            ..Traits::default()
        };
        let max = self.relay_max_message;
        Server::new(child, r.fork(), traits, max)
    }

    fn schedule_acts(&mut self, k: u64, acts: Vec<(Duration, Act)>) {
        for (d, act) in acts {
            self.schedule(d, Ev::Child(k, act));
        }
    }

    fn child_act(&mut self, k: u64, act: Act) {
        let now = self.now();
        let Some(kid) = self.kids.get_mut(&k) else {
            return;
        };
        if !kid.server.alive() {
            return;
        }
        let exited = kid.server.act(now, act);
        for tag in kid.server.tagged.drain(..) {
            let (t, s, rid) = tag;
            self.emitted.insert(t, (s, rid));
        }
        if exited {
            let d = ms(self.rng.range(0, 10));
            self.schedule(d, Ev::ReportExit(k));
            self.poke_stdin(k);
        }
        self.poke_stdout(k);
        self.poke_stderr(k);
    }

    fn poke_stdin(&mut self, k: u64) {
        let Some(kid) = self.kids.get_mut(&k) else {
            return;
        };
        if kid.write_scheduled || kid.stdin_queue.is_empty() || kid.released {
            return;
        }
        kid.write_scheduled = true;
        let d = if kid.server.traits.slow_stdin {
            ms(self.rng.range(5, 60))
        } else {
            ms(self.rng.range(0, 3))
        };
        self.schedule(d, Ev::WriteStdin(k));
    }

    fn write_stdin(&mut self, k: u64) {
        let n = self.rng.skewed_size(4096);
        let Some(kid) = self.kids.get_mut(&k) else {
            return;
        };
        kid.write_scheduled = false;
        if kid.stdin_queue.is_empty() || kid.released {
            return;
        }
        if !kid.server.alive() {
            kid.stdin_queue.clear();
            kid.stdin_broken = true;
            return self.input(Input::Broken {
                endpoint: Endpoint::Child(ChildId(k)),
                reason: "broken pipe",
            });
        }
        if !kid.server.reading() {
            // A hung server reads nothing: the bytes wait until it exits.
            return;
        }
        let n = if kid.server.traits.slow_stdin {
            n.min(64)
        } else {
            n
        };
        let n = n.min(kid.stdin_queue.len());
        let data: Vec<u8> = kid.stdin_queue.drain(..n).collect();
        let acts = kid.server.on_stdin(self.clock.elapsed(), &data);
        let complaints: Vec<String> = kid.server.complaints.drain(..).collect();
        self.schedule_acts(k, acts);
        for c in complaints {
            self.violation(c);
        }
        self.input(Input::Written {
            to: Endpoint::Child(ChildId(k)),
            n,
        });
        self.poke_stdin(k);
    }

    fn read_stdout(&mut self, k: u64) {
        let n = self.rng.skewed_size(8192);
        let Some(kid) = self.kids.get_mut(&k) else {
            return;
        };
        let out = &mut kid.server.stdout;
        out.scheduled = false;
        if kid.released || kid.stdout_paused || !kid.reported || out.eof_seen {
            return;
        }
        if out.at_eof() {
            out.eof_seen = true;
            return self.input(Input::Eof {
                from: Endpoint::Child(ChildId(k)),
            });
        }
        if out.pending() == 0 {
            return;
        }
        let data = out.take(n);
        self.input(Input::Data {
            from: Endpoint::Child(ChildId(k)),
            data: &data,
        });
        self.poke_stdout(k);
    }

    fn read_stderr(&mut self, k: u64) {
        let n = self.rng.skewed_size(512);
        let Some(kid) = self.kids.get_mut(&k) else {
            return;
        };
        let err = &mut kid.server.stderr;
        err.scheduled = false;
        if kid.released || !kid.reported || err.eof_seen {
            return;
        }
        if err.at_eof() {
            err.eof_seen = true;
            return self.input(Input::StderrEof { child: ChildId(k) });
        }
        if err.pending() == 0 {
            return;
        }
        let data = err.take(n);
        self.input(Input::Stderr {
            child: ChildId(k),
            data: &data,
        });
        self.poke_stderr(k);
    }

    fn poke_stdout(&mut self, k: u64) {
        let d = ms(self.rng.range(0, 3));
        if let Some(kid) = self.kids.get_mut(&k) {
            let out = &mut kid.server.stdout;
            if kid.reported
                && !kid.released
                && !kid.stdout_paused
                && !out.scheduled
                && (out.pending() > 0 || out.at_eof())
            {
                out.scheduled = true;
                self.schedule(d, Ev::ReadStdout(k));
            }
        }
    }

    fn poke_stderr(&mut self, k: u64) {
        let d = ms(self.rng.range(0, 3));
        if let Some(kid) = self.kids.get_mut(&k) {
            let err = &mut kid.server.stderr;
            if kid.reported
                && !kid.released
                && !err.scheduled
                && (err.pending() > 0 || err.at_eof())
            {
                err.scheduled = true;
                self.schedule(d, Ev::ReadStderr(k));
            }
        }
    }

    // ---- the loop ----

    fn event(&mut self, ev: Ev) {
        match &ev {
            Ev::Child(k, Act::Stderr(b)) => {
                self.log(format_args!("ev  child#{k} writes {} to stderr", Bytes(b)))
            }
            Ev::Child(k, Act::Say { line, .. }) => {
                self.log(format_args!("ev  child#{k} says {}", Bytes(line)))
            }
            other => self.log(format_args!("ev  {other:?}")),
        }
        match ev {
            Ev::Begin(s) => self.begin(s),
            Ev::StartGroup(s, g, reuse) => self.start_group(s, g, reuse),
            Ev::SendNext(c) => self.send_next(c),
            Ev::ReadConn(c) => self.read_conn(c),
            Ev::WriteConn(c) => self.write_conn(c),
            Ev::Hangup(c) => self.hangup(c),
            Ev::Resume(s, c) => self.resume(s, c),
            Ev::Finish(s) => self.finish(s),
            Ev::SpawnReport(k) => {
                let kid = self.kids.get_mut(&k).expect("kid");
                if kid.cancelled {
                    return;
                }
                kid.reported = true;
                let acts = kid.server.on_start();
                self.schedule_acts(k, acts);
                self.input(Input::Spawned {
                    child: ChildId(k),
                    pid: 1000 + k as u32,
                });
                self.poke_stdin(k);
            }
            Ev::WriteStdin(k) => self.write_stdin(k),
            Ev::ReadStdout(k) => self.read_stdout(k),
            Ev::ReadStderr(k) => self.read_stderr(k),
            Ev::Child(k, act) => self.child_act(k, act),
            Ev::ReportExit(k) => {
                let kid = self.kids.get_mut(&k).expect("kid");
                kid.exit_reported = true;
                let ProcState::Exited(status) = kid.server.state else {
                    unreachable!("an exit reported while running")
                };
                self.exit_step = Some(k);
                self.input(Input::Exited {
                    child: ChildId(k),
                    status,
                });
                self.exit_step = None;
            }
            Ev::Shutdown => {
                self.shutdown_sent = true;
                self.input(Input::Shutdown);
            }
        }
    }

    /// Runs to the end and checks the end-of-run invariants.
    pub fn run(&mut self) -> Result<(), String> {
        logger::start_capture();
        let now = self.clock.now();
        self.relay.start(now);
        self.drain();
        for s in 0..self.sessions.len() {
            let d = ms(self.rng.range(0, 50));
            self.schedule(d, Ev::Begin(s));
        }
        loop {
            if self.failure.is_some() {
                break;
            }
            if self.shutdown_sent && self.relay.is_finished() && self.events.is_empty() {
                break;
            }
            let next_ev = self.events.keys().next().map(|(t, _)| *t);
            let next_to = self.relay.poll_timeout().map(|t| self.clock.offset_of(t));
            let timeout_first = match (next_ev, next_to) {
                (None, None) => {
                    let what = self.unfinished();
                    self.violation(format!("nothing more will happen, yet: {what}"));
                    break;
                }
                (Some(e), Some(t)) => t <= e,
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            self.step += 1;
            if timeout_first {
                let t = next_to.expect("a deadline").max(self.now());
                self.clock.advance_to(t);
                self.log(format_args!("handle_timeout"));
                let now = self.clock.now();
                self.relay.handle_timeout(now);
                self.drain();
                if let Some(next) = self.relay.poll_timeout() {
                    if next <= now {
                        let why = self.relay.next_deadline().map_or("?", |(_, w)| w.as_str());
                        self.violation(format!(
                            "after handle_timeout(now), poll_timeout() is not later than now ({why})"
                        ));
                    }
                }
            } else {
                let (key, ev) = self.events.pop_first().expect("an event");
                self.clock.advance_to(key.0);
                self.event(ev);
            }
            if let Err(e) = invariants::http_after_step(self) {
                self.violation(e);
            }
            if self.now() > TIME_CAP || self.step > STEP_CAP {
                let what = self.unfinished();
                self.violation(format!("the run did not finish: {what}"));
            }
        }
        logger::stop_capture();
        if let Some(f) = &self.failure {
            return Err(f.clone());
        }
        invariants::http_at_end(self)
    }

    pub(crate) fn unfinished(&self) -> String {
        let mut out = Vec::new();
        for (s, sess) in self.sessions.iter().enumerate() {
            if sess.phase != Phase::Done {
                let open: Vec<String> = sess
                    .calls
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| !c.done && !c.abandoned)
                    .map(|(i, c)| {
                        format!(
                            "call {i} (id {}, {:?}, {} progress, last event {:?})",
                            c.id, c.slow, c.progress_seen, c.last_event
                        )
                    })
                    .collect();
                out.push(format!(
                    "s{s} in phase {:?} with {}",
                    sess.phase,
                    open.join(", ")
                ));
            }
        }
        if self.shutdown_sent {
            out.push(format!(
                "shut down, relay finished {}",
                self.relay.is_finished()
            ));
        }
        out.join("; ")
    }
}

fn show_input(i: &Input<'_>) -> String {
    match i {
        Input::Data { from, data } => format!("Data {from} {}", Bytes(data)),
        Input::Accepted { conn, peer, .. } => format!("Accepted {conn} from {peer}"),
        Input::Stderr { child, data } => format!("Stderr {child} {}", Bytes(data)),
        other => format!("{other:?}"),
    }
}
