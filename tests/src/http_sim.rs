//! The Streamable HTTP clients of the simulation (session era), and the driver's side of their
//! connections. They run in the one event loop of [`crate::sim::Sim`], against the same relay
//! and the same child model ([`crate::server::Server`], which serves their tools once an
//! HTTP client's `initialize` reaches it) as the TCP clients: one driver performs every
//! output, one module drives every child.
//!
//! One seed drives everything: how many sessions and calls, which calls are slow (progress
//! notifications before the answer) or instant, which go pipelined on one keep-alive
//! connection and which concurrently on connections of their own, how request bytes are split
//! into reads (1 byte and up, request bodies sometimes chunked), how much of what the relay
//! sends is written at a time, and which event streams the client drops (end of file or a
//! reset) to resume with `GET /mcp` + `Last-Event-ID`, which notifications clients POST
//! (202), which connections a client half-closes after its one request while still
//! reading the answer (as distinct from a client that leaves), and which calls of a
//! 2025-03-26 session go together as one JSON-RPC batch.
//!
//! The invariants are listed and checked in [`crate::invariants`] (`http_*`) and, as the
//! clients read, here. Seeds run through [`crate::runner`], as the TCP runs do.

use crate::http_client::{self, contains, Rx, RxEv, LOCAL};
use crate::profile::{HttpProfile, Profile};
use crate::rng::Rng;
use crate::sim::{Event, Sim};
use crate::trace::Bytes;
use mcp_relay_core::{ConnId, Endpoint, Input, Output, Transport, SESSION_ERA_VERSIONS};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

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
    /// The client sends a request again, on a new connection, after a 503 told it to come
    /// back later (`Retry-After`).
    Retry(Pending, Vec<u8>),
    /// The client finds that its requests on a connection will get no response: the
    /// connection was refused, or the relay closed it while shutting down.
    Lost(u64),
    /// A call's client has waited [`HttpProfile::call_timeout`] for it.
    CallTimeout(usize, usize),
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
    /// It ended without its server's answer: the relay answered with an error (its server
    /// failed, could not start, or answered too large), its session was gone (404), its body
    /// was too large (413), or it was never sent (its session could not be initialized).
    pub(crate) failed: bool,
    /// The client gave up waiting ([`HttpProfile::call_timeout`]) and cancelled it: an answer
    /// may still come (at most one), or the relay ends its stream without one.
    pub(crate) cancelled: bool,
    /// The client's timeout, while the call is not done (the key of its event).
    pub(crate) timer: Option<(Duration, u64)>,
    /// A 503 told the client to send it again later, and it has not yet.
    pub(crate) retry_wait: bool,
}

/// How many times a client initializes a session after the relay ended the last one.
const MAX_INITS: u32 = 3;

pub(crate) struct Group {
    pub(crate) calls: Vec<usize>,
    pub(crate) pipelined: bool,
    pub(crate) close_last: bool,
    /// Its calls go as one JSON-RPC batch (an index into [`Sess::batches`]).
    pub(crate) batch: Option<usize>,
}

/// Calls sent as one JSON-RPC batch in one POST: each must get exactly one answer on that
/// POST's stream (in a batch of answers or alone, in any order), none twice, none foreign.
pub(crate) struct Batch {
    pub(crate) calls: Vec<usize>,
    /// A notification goes inside the batch too.
    pub(crate) note: bool,
}

/// Whose event stream a stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    Call(usize),
    Batch(usize),
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
    /// Every batch the client sent or will send (never cleared).
    pub(crate) batches: Vec<Batch>,
    pub(crate) doomed: bool,
    pub(crate) delete_at_end: bool,
    pub(crate) phase: Phase,
    pub(crate) next_id: u64,
    pub(crate) init_answered: bool,
    pub(crate) finish_left: usize,
    /// The stream of the call the doomed session abandoned, for its `Last-Event-ID` probe.
    pub(crate) abandoned_event: Option<(u64, u64)>,
    /// `initialize`s sent (one per session the client opened), and the id of the last.
    pub(crate) inits: u32,
    pub(crate) init_id: u64,
    /// The last `initialize` got an error instead of its answer, or its body was too large.
    pub(crate) init_failed: bool,
    pub(crate) init_too_large: bool,
    /// The relay said the current session is over (404, -32000): the client initializes a
    /// new one once its calls are settled.
    pub(crate) lost: bool,
    /// The id of each session the client opened, by its `initialize` count.
    pub(crate) sids: BTreeMap<u32, String>,
    /// Sessions (by `initialize` count) the client deleted or let expire: a request of
    /// theirs still on its way (a retry) gets 404.
    pub(crate) ended_by_client: Vec<u32>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Expect {
    Init,
    Initialized,
    Call(usize),
    /// A batch of calls (an index into [`Sess::batches`]).
    Batch(usize),
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
    /// Which of the client's sessions it went to (its `initialize` count then; 0: not yet
    /// written).
    pub(crate) era: u32,
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
    /// The bytes of each pending request (a 503 makes the client send it again).
    pub(crate) sent: VecDeque<Vec<u8>>,
    pub(crate) later: VecDeque<(Pending, Vec<u8>)>,
    pub(crate) head: Option<RespHead>,
    pub(crate) events_here: usize,
    /// The client asked for `Connection: close`.
    pub(crate) expect_close: bool,
    /// A slow reader: small writes, far apart (backpressure).
    pub(crate) slow: bool,
    /// The client half-closes once its request is written, and still reads the answer.
    pub(crate) half_close: bool,
    /// The relay had stopped accepting: the connection was refused, and every request
    /// written on it fails.
    pub(crate) refused: bool,
}

/// The Streamable HTTP side of a run: its clients' sessions and connections, and what they
/// received.
#[derive(Default)]
pub struct HttpClients {
    pub(crate) profile: Option<HttpProfile>,
    pub(crate) conns: BTreeMap<u64, Cn>,
    pub(crate) sessions: Vec<Sess>,
    /// Every tagged message a child wrote: tag → (session, request id).
    pub(crate) emitted: BTreeMap<String, (usize, u64)>,
    /// How often each tag reached a client.
    pub(crate) seen: BTreeMap<String, u32>,
    /// Event stream number → (session, call, last sequence number seen).
    pub(crate) streams: BTreeMap<u64, (usize, Owner, u64)>,
    pub http_responses: u64,
    /// Batches of calls the clients POSTed (each time, retries included).
    pub batches_sent: u64,
    /// Batches whose response ended with every call settled.
    pub batches_completed: u64,
    /// Batches of answers (JSON arrays) received on a batch's stream.
    pub batch_answer_lines: u64,
    /// Calls of batches answered by the server (not by the relay's error).
    pub batch_calls_answered: u64,
    /// Calls of batches that ended without the server's answer (the relay's error, 404,
    /// cancelled).
    pub batch_calls_failed: u64,
    /// Tagged messages a child wrote too large for the relay: tag → (session, request id).
    pub(crate) oversize: BTreeMap<String, (usize, u64)>,
    /// The children and restarts of each HTTP session, by `Mcp-Session-Id`.
    pub runs: BTreeMap<String, HttpRun>,
}

/// The servers of one HTTP session, as the relay started them.
#[derive(Debug, Default)]
pub struct HttpRun {
    /// Oldest first: a replacement follows each restart.
    pub children: Vec<mcp_relay_core::ChildId>,
    /// When the relay decided each restart (the end of the child it replaced).
    pub restart_decisions: Vec<Duration>,
}

impl HttpClients {
    pub(crate) fn new(profile: Option<HttpProfile>) -> Self {
        HttpClients {
            profile,
            ..HttpClients::default()
        }
    }

    /// The run has HTTP clients.
    pub fn active(&self) -> bool {
        self.profile.is_some()
    }

    /// Every session finished its script (or there are none).
    pub fn all_done(&self) -> bool {
        self.sessions.iter().all(|s| s.phase == Phase::Done)
    }

    /// Sessions whose client began.
    pub fn sessions_started(&self) -> usize {
        self.sessions
            .iter()
            .filter(|s| s.phase != Phase::NotStarted)
            .count()
    }

    fn profile(&self) -> &HttpProfile {
        self.profile
            .as_ref()
            .expect("only a run with HTTP clients has HTTP events")
    }
}

/// A run of Streamable HTTP sessions only: [`Sim`] with no TCP connections, its configuration
/// and its children's traits drawn from an [`HttpProfile`].
pub struct HttpSim;

impl HttpSim {
    /// A run of `profile` drawn from `seed`. `keep_trace` keeps every trace line.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(seed: u64, profile: HttpProfile, keep_trace: bool) -> Sim {
        Sim::build(seed, Profile::for_http(&profile), Some(profile), keep_trace)
    }
}

impl Sim {
    /// Draws the run's HTTP sessions (none without an HTTP profile).
    pub(crate) fn plan_sessions(&mut self) {
        let Some(p) = self.http.profile.clone() else {
            return;
        };
        let n = self.rng.range_usize(p.sessions.0, p.sessions.1);
        for s in 0..n {
            let doomed = p.doomed && s == 0;
            let sess = self.plan_session(doomed);
            self.http.sessions.push(sess);
        }
    }
    fn plan_session(&mut self, doomed: bool) -> Sess {
        let p = self.http.profile().clone();
        // Batches are drawn from a generator of their own: a run that forms none replays
        // exactly as it did before batches existed (its seeds keep their meaning).
        let at = self.http.sessions.len() as u64;
        let mut br = Rng::new(self.seed ^ 0xba7c_4e5d_0000_0000 ^ at);
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
                failed: false,
                cancelled: false,
                timer: None,
                retry_wait: false,
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
                failed: false,
                cancelled: false,
                timer: None,
                retry_wait: false,
            });
            singles.push(c);
        }
        let mut groups: Vec<Group> = singles
            .into_iter()
            .map(|c| Group {
                calls: vec![c],
                pipelined: false,
                close_last: false,
                batch: None,
            })
            .collect();
        let mut batches = Vec::new();
        if version == "2025-03-26" && p.batches > 0 {
            // Batches were part of this version only (2025-06-18 removed them).
            while shared.len() >= 2 && br.chance(p.batches) {
                let n = br.range_usize(2, shared.len().min(4));
                let calls: Vec<usize> = shared.drain(..n).collect();
                groups.push(Group {
                    calls: calls.clone(),
                    pipelined: false,
                    close_last: br.chance(200),
                    batch: Some(batches.len()),
                });
                batches.push(Batch {
                    calls,
                    note: br.chance(300),
                });
            }
        }
        if !shared.is_empty() {
            let g = r.range_usize(1, shared.len().min(3));
            let first = groups.len();
            for _ in 0..g {
                groups.push(Group {
                    calls: Vec::new(),
                    pipelined: r.chance(500),
                    close_last: r.chance(200),
                    batch: None,
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
            batches,
            doomed,
            delete_at_end: !doomed && r.chance(400),
            phase: Phase::NotStarted,
            next_id,
            init_answered: false,
            finish_left: 0,
            abandoned_event: None,
            inits: 0,
            init_id: 1,
            init_failed: false,
            init_too_large: false,
            lost: false,
            sids: BTreeMap::new(),
            ended_by_client: Vec::new(),
        }
    }

    // ---- plumbing ----

    fn violate(&mut self, what: String) {
        self.note(format_args!("VIOLATION: {what}"));
        self.violation.get_or_insert(what);
    }

    fn input(&mut self, input: Input<'_>) {
        if let Err(f) = self.feed(input) {
            self.violation.get_or_insert(f.what);
        }
    }

    fn failed(&self) -> bool {
        self.violation.is_some()
    }

    // ---- the driver performs outputs on HTTP connections ----

    /// Performs an output on an HTTP connection; errors describe a broken invariant.
    pub(crate) fn http_output(&mut self, o: Output) -> Result<(), String> {
        match o {
            Output::Send {
                to: Endpoint::Conn(c),
                data,
            } => {
                let Some(cn) = self.http.conns.get_mut(&c.0).filter(|cn| cn.open) else {
                    return Err(format!("Send to {c}, which is closed or unknown"));
                };
                cn.out_queue.extend_from_slice(&data);
                if !cn.write_scheduled {
                    cn.write_scheduled = true;
                    let d = ms(self.rng.range(0, 5));
                    self.schedule(d, Event::Http(Ev::WriteConn(c.0)));
                }
            }
            Output::Close {
                endpoint: Endpoint::Conn(c),
            } => {
                let Some(cn) = self.http.conns.get_mut(&c.0).filter(|cn| cn.open) else {
                    return Err(format!("Close of {c}, which is closed or unknown"));
                };
                cn.open = false;
                let unwritten = cn.out_queue.len();
                if self.immediate_step.is_some() {
                    // An immediate shutdown closes every connection at once.
                    cn.out_queue.clear();
                } else if unwritten > 0 {
                    return Err(format!(
                        "Close of {c} with {unwritten} bytes sent and not yet written"
                    ));
                }
                let waiting = !cn.pending.is_empty() || !cn.later.is_empty();
                if self.shutdowns > 0 && waiting && !cn.deaf {
                    // Shutting down, the relay answers what it read and closes: the rest
                    // gets no response.
                    cn.deaf = true;
                    self.schedule(Duration::ZERO, Event::Http(Ev::Lost(c.0)));
                }
            }
            Output::Pause {
                endpoint: Endpoint::Conn(c),
            }
            | Output::Resume {
                endpoint: Endpoint::Conn(c),
            } => {
                let pause = matches!(o, Output::Pause { .. });
                let Some(cn) = self.http.conns.get_mut(&c.0).filter(|cn| cn.open) else {
                    return Err(format!("Pause/Resume of {c}, which is closed"));
                };
                cn.paused = pause;
                if !pause && !cn.read_scheduled && !cn.to_relay.is_empty() {
                    cn.read_scheduled = true;
                    self.schedule(ms(1), Event::Http(Ev::ReadConn(c.0)));
                }
            }
            other => return Err(format!("not an output on an HTTP connection: {other:?}")),
        }
        Ok(())
    }
    // ---- connections ----

    fn http_open_conn(&mut self) -> u64 {
        let id = self.next_conn;
        self.next_conn += 1;
        if self.stop_accepting_step.is_some() {
            // The relay stopped listening: the connection is refused.
            self.note(format_args!("client conn#{id}: connection refused"));
            self.http.conns.insert(
                id,
                Cn {
                    refused: true,
                    deaf: true,
                    ..Cn::default()
                },
            );
            return id;
        }
        let slow = self.rng.chance(self.http.profile().slow_readers);
        self.http.conns.insert(
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
            server: None,
        });
        id
    }

    fn write_req(&mut self, conn: u64, mut p: Pending, bytes: Vec<u8>) {
        if p.era == 0 {
            p.era = self.http.sessions[p.session].inits;
        }
        if let Expect::Call(_) | Expect::Batch(_) = p.expect {
            for c in self.calls_of(p.session, p.expect) {
                // The client's clock for this call starts when it is first sent.
                let call = &self.http.sessions[p.session].calls[c];
                if call.timer.is_none() && !call.done {
                    let after = self.http.profile().call_timeout;
                    let key = self.schedule(after, Event::Http(Ev::CallTimeout(p.session, c)));
                    self.http.sessions[p.session].calls[c].timer = Some(key);
                }
            }
        }
        let closed = self
            .http
            .conns
            .get(&conn)
            .is_some_and(|cn| !cn.open && !cn.refused);
        // A connection the relay closed: the client connects again.
        let conn = if closed { self.http_open_conn() } else { conn };
        if let Some(cn) = self.http.conns.get_mut(&conn).filter(|cn| cn.refused) {
            cn.pending.push_back(p);
            cn.sent.push_back(bytes);
            self.schedule(Duration::ZERO, Event::Http(Ev::Lost(conn)));
            return;
        }
        self.note(format_args!(
            "client conn#{conn} s{} writes {:?}: {}",
            p.session,
            p.expect,
            Bytes(&bytes)
        ));
        let d = ms(self.rng.range(0, 3));
        let Some(cn) = self.http.conns.get_mut(&conn) else {
            return;
        };
        cn.to_relay.extend_from_slice(&bytes);
        cn.pending.push_back(p);
        cn.sent.push_back(bytes);
        if !cn.read_scheduled && !cn.paused {
            cn.read_scheduled = true;
            self.schedule(d, Event::Http(Ev::ReadConn(conn)));
        }
    }

    fn http_read_conn(&mut self, conn: u64) {
        let n = self.rng.skewed_size(4096);
        let Some(cn) = self.http.conns.get_mut(&conn) else {
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
                self.note(format_args!("client conn#{conn} half-closes"));
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
            self.schedule(d, Event::Http(Ev::ReadConn(conn)));
        }
    }

    fn http_write_conn(&mut self, conn: u64) {
        let slow = self.http.conns.get(&conn).is_some_and(|cn| cn.slow);
        let (n, d) = if slow {
            (self.rng.range_usize(1, 64), ms(self.rng.range(5, 40)))
        } else {
            (self.rng.skewed_size(8192), ms(self.rng.range(0, 8)))
        };
        let Some(cn) = self.http.conns.get_mut(&conn) else {
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
        if let Some(cn) = self.http.conns.get_mut(&conn) {
            if !cn.deaf {
                cn.rx.buf.extend_from_slice(&data);
            }
            if !cn.out_queue.is_empty() && !cn.write_scheduled {
                cn.write_scheduled = true;
                self.schedule(d, Event::Http(Ev::WriteConn(conn)));
            }
        }
        self.client_rx(conn);
    }

    /// The client reads what reached it, event by event.
    fn client_rx(&mut self, conn: u64) {
        loop {
            if self.failed() {
                return;
            }
            let Some(cn) = self.http.conns.get_mut(&conn) else {
                return;
            };
            if cn.deaf {
                return;
            }
            let ev = match cn.rx.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => return,
                Err(e) => return self.violate(format!("conn#{conn}: unreadable response: {e}")),
            };
            let Some(p) = cn.pending.front().copied() else {
                return self.violate(format!("conn#{conn}: a response nobody asked for: {ev:?}"));
            };
            match ev {
                RxEv::Head { status, sid, sse } => {
                    self.http.http_responses += 1;
                    self.note(format_args!(
                        "client conn#{conn} s{} {:?}: HTTP {status}{}",
                        p.session,
                        p.expect,
                        if sse { " (event stream)" } else { "" }
                    ));
                    if let Some(cn) = self.http.conns.get_mut(&conn) {
                        cn.head = Some(RespHead { status });
                    }
                    self.on_head(conn, p, status, sid, sse);
                }
                RxEv::Body(body) => {
                    let status = self.http.conns[&conn].head.as_ref().map_or(0, |h| h.status);
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
        let retryable = matches!(
            p.expect,
            Expect::Init
                | Expect::Initialized
                | Expect::Call(_)
                | Expect::Batch(_)
                | Expect::Notified
        );
        if status == 503 && retryable {
            // The relay cannot take it now (its server's input is full, too many requests
            // wait, too many sessions): a real client comes back later.
            return;
        }
        let want = match p.expect {
            Expect::Init
            | Expect::Call(_)
            | Expect::Batch(_)
            | Expect::Resume(_)
            | Expect::Delete => 200,
            Expect::Initialized | Expect::Notified => 202,
            Expect::Gone => 404,
        };
        let also = match (status, p.expect) {
            // The session ended under the client: its server failed for good.
            (
                404,
                Expect::Initialized
                | Expect::Call(_)
                | Expect::Batch(_)
                | Expect::Resume(_)
                | Expect::Notified
                | Expect::Delete,
            ) => {
                self.session_faulted(p.session, p.era)
                    || self.http.sessions[p.session]
                        .ended_by_client
                        .contains(&p.era)
            }
            // A body over `max_message_size`.
            (413, Expect::Init | Expect::Call(_) | Expect::Batch(_) | Expect::Notified) => {
                let len = self.http.conns[&conn]
                    .sent
                    .front()
                    .map_or(0, |b| http_client::body_len(b));
                len > self.config.max_message_size
            }
            _ => false,
        };
        if status != want && also {
            return;
        }
        if status != want {
            return self.violate(format!(
                "conn#{conn} s{} {:?}: HTTP {status}, expected {want}",
                p.session, p.expect
            ));
        }
        if matches!(p.expect, Expect::Resume(_)) && !sse {
            return self.violate(format!(
                "conn#{conn}: a resumption answered without a stream"
            ));
        }
        if let Expect::Init = p.expect {
            let Some(sid) = sid else {
                return self.violate(format!(
                    "conn#{conn}: initialize answered without Mcp-Session-Id"
                ));
            };
            if sid.len() != 32 || !sid.bytes().all(|b| b.is_ascii_hexdigit()) {
                return self.violate(format!(
                    "conn#{conn}: session id {sid:?} is not 32 hex digits"
                ));
            }
            if self
                .http
                .sessions
                .iter()
                .any(|s| s.sid.as_deref() == Some(&sid))
            {
                return self.violate(format!("session id {sid} handed out twice"));
            }
            self.http.sessions[p.session].sid = Some(sid.clone());
            self.http.sessions[p.session].sids.insert(p.era, sid);
        }
    }

    fn on_event(&mut self, conn: u64, p: Pending, id: Option<String>, data: Option<String>) {
        let owner = match p.expect {
            Expect::Call(c) | Expect::Resume(c) => Owner::Call(c),
            Expect::Batch(b) => Owner::Batch(b),
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
                return self.violate(format!("conn#{conn}: event id {id:?} is not <stream>-<n>"));
            };
            if let Expect::Resume(call) = p.expect {
                let want = self.http.sessions[s].calls[call]
                    .last_event
                    .map(|(st, _)| st);
                if want != Some(stream) {
                    return self.violate(format!(
                        "conn#{conn} s{s}: resuming the stream of call {call} ({want:?}) brought events of stream {stream}"
                    ));
                }
            }
            match self.http.streams.get_mut(&stream) {
                None => {
                    if n != 1 {
                        return self.violate(format!(
                            "conn#{conn} s{s}: the first event seen of stream {stream} is {n}, not 1"
                        ));
                    }
                    self.http.streams.insert(stream, (s, owner, 1));
                }
                Some(entry) => {
                    let (s2, c2, last) = *entry;
                    if (s2, c2) != (s, owner) {
                        return self.violate(format!(
                            "conn#{conn}: stream {stream} of session {s2} {c2:?} delivered to session {s} {owner:?} (cross-talk)"
                        ));
                    }
                    if n != last + 1 {
                        return self.violate(format!(
                            "conn#{conn} s{s}: event {stream}-{n} follows {stream}-{last} ({})",
                            if n <= last { "a repeat" } else { "a gap" }
                        ));
                    }
                    entry.2 = n;
                }
            }
            if let Owner::Call(call) = owner {
                self.http.sessions[s].calls[call].last_event = Some((stream, n));
            }
        }
        if let Some(d) = data.filter(|d| !d.is_empty()) {
            self.on_message(conn, p, d.as_bytes());
        }
        if id.is_some() {
            if let Some(cn) = self.http.conns.get_mut(&conn) {
                cn.events_here += 1;
            }
            if let Owner::Call(call) = owner {
                self.maybe_drop(conn, s, call);
            }
        }
    }

    /// A JSON-RPC message received on a response to a request of this client.
    fn on_message(&mut self, conn: u64, p: Pending, data: &[u8]) {
        let s = p.session;
        let v: Value = match serde_json::from_slice(data) {
            Ok(v) => v,
            Err(e) => {
                return self.violate(format!(
                    "conn#{conn}: a message that is not JSON ({e}): {}",
                    Bytes(data)
                ))
            }
        };
        let notification = v.get("id").is_none() && v["method"].is_string();
        if notification && v["method"] != json!("notifications/progress") {
            // A real client takes a server's notification on any stream of its session
            // (a child may log, or say its lists changed, whenever it likes).
            self.note(format_args!("client conn#{conn} s{s}: a notification {v}"));
            return;
        }
        match p.expect {
            Expect::Init => {
                let sess = &self.http.sessions[s];
                let (version, id) = (sess.version, sess.init_id);
                if sess.init_answered {
                    return self.violate(format!("s{s}: initialize answered twice"));
                }
                if v["id"] == json!(id) && v.get("error").is_some() {
                    let tag = format!("s{s}/r{id}/answer");
                    if let Err(e) = self.relay_error_justified(p, &v, &tag) {
                        return self.violate(format!("conn#{conn} s{s} initialize: {e}"));
                    }
                    let sess = &mut self.http.sessions[s];
                    sess.init_answered = true;
                    sess.init_failed = true;
                    return;
                }
                if v["id"] != json!(id) || v["result"]["protocolVersion"] != json!(version) {
                    return self.violate(format!("s{s}: unexpected answer to initialize: {v}"));
                }
                self.http.sessions[s].init_answered = true;
            }
            Expect::Call(c) | Expect::Resume(c) => self.on_call_message(conn, p, c, &v),
            Expect::Batch(b) => self.on_batch_message(conn, p, b, &v),
            _ => self.violate(format!(
                "conn#{conn} s{s} {:?}: unexpected message {v}",
                p.expect
            )),
        }
    }

    /// A message on a batch's stream: a batch of answers, or one answer or progress
    /// notification, each of one of the batch's calls.
    fn on_batch_message(&mut self, conn: u64, p: Pending, b: usize, v: &Value) {
        let s = p.session;
        let calls = self.http.sessions[s].batches[b].calls.clone();
        let of = |sim: &Sim, m: &Value| -> Option<usize> {
            let sess = &sim.http.sessions[s];
            calls.iter().copied().find(|&c| {
                let call = &sess.calls[c];
                if m["method"] == json!("notifications/progress") {
                    call.token.as_ref() == Some(&m["params"]["progressToken"])
                } else {
                    m["id"] == json!(call.id)
                }
            })
        };
        let one: Vec<Value> = match v {
            Value::Array(a) if a.is_empty() => {
                return self.violate(format!("conn#{conn} s{s} batch {b}: an empty batch"))
            }
            Value::Array(a) => {
                if a.iter().any(|m| m.get("id").is_none()) {
                    return self.violate(format!(
                        "conn#{conn} s{s} batch {b}: a batch of answers with something else in it: {v}"
                    ));
                }
                self.http.batch_answer_lines += 1;
                a.clone()
            }
            m => vec![m.clone()],
        };
        for m in &one {
            let Some(c) = of(self, m) else {
                return self.violate(format!(
                    "conn#{conn} s{s} batch {b} (calls {calls:?}): a message for none of its calls (foreign): {m}"
                ));
            };
            self.on_call_message(conn, p, c, m);
            if self.failed() {
                return;
            }
        }
    }

    fn on_call_message(&mut self, conn: u64, p: Pending, c: usize, v: &Value) {
        let s = p.session;
        let sid = self.http.sessions[s].sid.clone().unwrap_or_default();
        let call = &self.http.sessions[s].calls[c];
        let id = call.id;
        let tag;
        if v["method"] == json!("notifications/progress") {
            self.skip_oversize_progress(s, c);
            let call = &self.http.sessions[s].calls[c];
            let want = format!("s{s}/r{id}/p{}", call.progress_seen + 1);
            if Some(&v["params"]["progressToken"]) != call.token.as_ref()
                || v["params"]["message"] != json!(want)
            {
                return self.violate(format!(
                    "conn#{conn} s{s} call {c}: expected progress {want} with token {:?}, got {v}",
                    call.token
                ));
            }
            tag = want;
            self.http.sessions[s].calls[c].progress_seen += 1;
        } else if v["id"] == json!(id) && v.get("result").is_some() {
            self.skip_oversize_progress(s, c);
            let call = &self.http.sessions[s].calls[c];
            let want = format!("s{s}/r{id}/final");
            let r = &v["result"];
            if r["tag"] != json!(want)
                || r["session"] != json!(s)
                || r["args"]["sid"] != json!(sid)
                || r["args"]["call"] != json!(c)
            {
                return self.violate(format!(
                    "conn#{conn} s{s} call {c}: a wrong answer (cross-talk?): {v}"
                ));
            }
            let k = call.slow.map_or(0, |(k, _)| k);
            if call.progress_seen != k {
                return self.violate(format!(
                    "conn#{conn} s{s} call {c}: the answer came after {} of {k} progress notifications",
                    call.progress_seen
                ));
            }
            tag = want;
            let call = &mut self.http.sessions[s].calls[c];
            call.answered += 1;
            if call.answered > 1 {
                return self.violate(format!("s{s} call {c}: answered twice"));
            }
        } else if v["id"] == json!(id) && v.get("error").is_some() {
            // The relay's answer instead of the server's: final, and the call failed.
            let tag = format!("s{s}/r{id}/final");
            if let Err(e) = self.relay_error_justified(p, v, &tag) {
                return self.violate(format!("conn#{conn} s{s} call {c}: {e}"));
            }
            let call = &mut self.http.sessions[s].calls[c];
            call.answered += 1;
            call.failed = true;
            if call.answered > 1 {
                return self.violate(format!("s{s} call {c}: answered twice"));
            }
            return;
        } else {
            return self.violate(format!("conn#{conn} s{s} call {c}: unexpected message {v}"));
        }
        match self.http.emitted.get(&tag) {
            Some(&(s2, id2)) if (s2, id2) == (s, id) => {}
            other => {
                return self.violate(format!(
                "message {tag} received by s{s}, but no child of that session wrote it ({other:?})"
            ))
            }
        }
        let n = self.http.seen.entry(tag.clone()).or_default();
        *n += 1;
        let n = *n;
        if n > 1 {
            self.violate(format!("message {tag} delivered {n} times"));
        }
    }

    /// Progress notifications the child wrote too large for the relay never come: the next
    /// one expected is the one after them.
    fn skip_oversize_progress(&mut self, s: usize, c: usize) {
        let call = &self.http.sessions[s].calls[c];
        let (id, k) = (call.id, call.slow.map_or(0, |(k, _)| k));
        let mut seen = call.progress_seen;
        while seen < k
            && self
                .http
                .oversize
                .contains_key(&format!("s{s}/r{id}/p{}", seen + 1))
        {
            seen += 1;
        }
        self.http.sessions[s].calls[c].progress_seen = seen;
    }

    /// Whether the relay may tell session `s`'s client that its server is gone: a server of
    /// the session failed to start, crashed, hung, closed its stdout, or left output the relay
    /// gave up on; or the relay is shutting down.
    pub(crate) fn session_faulted(&self, s: usize, era: u32) -> bool {
        if self.shutdowns > 0 {
            return true;
        }
        let Some(sid) = self.http.sessions[s].sids.get(&era).map(String::as_str) else {
            return false;
        };
        self.children.values().any(|c| {
            c.http_sid.as_deref() == Some(sid)
                && (c.drv.failed_step.is_some()
                    || c.drv.declared_hung
                    || c.drv.gave_up_step.is_some()
                    || c.server.crashed
                    || c.server.closed_early
                    || c.server.hung)
        })
    }

    /// An error the relay answered a request of session `s` with (the request whose answer
    /// would carry `tag`) has a cause: -32003 and -32000 a fault of the session's server,
    /// -32001 an answer the child wrote too large.
    fn relay_error_justified(&mut self, p: Pending, v: &Value, tag: &str) -> Result<(), String> {
        let s = p.session;
        let code = v["error"]["code"].as_i64().unwrap_or(0);
        let text = v["error"]["message"].as_str().unwrap_or("");
        if !text.starts_with("mcp-relay:") {
            return Err(format!("an error not made by the relay: {v}"));
        }
        self.note(format_args!(
            "client s{s} {:?}: the relay's error {code} ({text})",
            p.expect
        ));
        match code {
            -32003 | -32000 if self.session_faulted(s, p.era) => {
                if code == -32000 && p.era == self.http.sessions[s].inits {
                    // The session is over: the next request gets 404.
                    self.http.sessions[s].lost = true;
                }
                Ok(())
            }
            -32001 if self.http.oversize.contains_key(tag) => Ok(()),
            _ => Err(format!(
                "the relay answered with an error, and nothing explains it (no fault of the \
                 session's server, no answer too large): {v}"
            )),
        }
    }

    /// The client may drop the connection of a slow call's stream after some events.
    fn maybe_drop(&mut self, conn: u64, s: usize, c: usize) {
        let call = &self.http.sessions[s].calls[c];
        let cn = &self.http.conns[&conn];
        if call.drops_left == 0
            || call.answered > 0
            || call.cancelled
            || cn.events_here < call.drop_at
        {
            return;
        }
        // A stream whose end was written may be forgotten by the relay: written bytes may
        // have been lost in the network, which the relay cannot know, so the client only
        // drops before the end was written. It does drop when the end was handed to the
        // driver and not yet written (see
        // `a_stream_dropped_before_its_end_was_written_can_be_resumed`).
        // The last answer is the server's (tagged) or the relay's error.
        let fin = format!("s{s}/r{}/final", call.id);
        let error = format!(r#""id":{},"error""#, call.id);
        let written = [fin.as_bytes(), error.as_bytes()]
            .iter()
            .any(|p| contains(&cn.rx.buf, p) || contains(&cn.rx.sse, p));
        if written {
            return;
        }
        let (how, resume, last) = (call.how, call.resume, call.last_event);
        self.note(format_args!(
            "client conn#{conn} s{s} call {c}: drops the stream ({how:?}) after event {last:?}"
        ));
        let cn = self.http.conns.get_mut(&conn).expect("the connection");
        cn.deaf = true;
        cn.rx = Rx::default();
        let pending: Vec<Pending> = cn.pending.drain(..).collect();
        cn.sent.clear();
        cn.later.clear();
        if pending.len() != 1 {
            return self.violate(format!(
                "conn#{conn}: dropped with {} requests pending",
                pending.len()
            ));
        }
        let call = &mut self.http.sessions[s].calls[c];
        call.drops_left -= 1;
        if resume {
            let d = ms(self.rng.range(1, 300));
            self.schedule(d, Event::Http(Ev::Resume(s, c)));
        } else {
            call.abandoned = true;
            self.http.sessions[s].abandoned_event = self.http.sessions[s].calls[c].last_event;
        }
        match how {
            DropHow::Eof => {
                if let Some(cn) = self.http.conns.get_mut(&conn) {
                    cn.eof_sent = true;
                    cn.left = true;
                }
                self.input(Input::Eof {
                    from: Endpoint::Conn(ConnId(conn)),
                });
            }
            DropHow::Broken => {
                if let Some(cn) = self.http.conns.get_mut(&conn) {
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
        let Some(cn) = self.http.conns.get_mut(&conn) else {
            return;
        };
        let Some(p) = cn.pending.pop_front() else {
            return;
        };
        let bytes = cn.sent.pop_front().unwrap_or_default();
        let status = cn.head.take().map_or(0, |h| h.status);
        let s = p.session;
        self.note(format_args!(
            "client conn#{conn} s{s}: {:?} complete",
            p.expect
        ));
        if status == 413 {
            // The relay closes the connection after a 413: what the client pipelined behind
            // it was never read, and goes again on new connections.
            self.resend_rest(conn);
        }
        if status == 503 {
            // Told to come back later: the client sends it again on a new connection, and
            // goes on with what else it had for this one.
            self.retry_later(ms(1000), p, bytes);
            let more = self
                .http
                .conns
                .get(&conn)
                .is_some_and(|cn| !cn.later.is_empty());
            if more {
                let d = ms(self.rng.range(0, 20));
                self.schedule(d, Event::Http(Ev::SendNext(conn)));
            }
            return self.idle_check(conn);
        }
        match p.expect {
            Expect::Init if status == 413 || self.http.sessions[s].init_failed => {
                // No session to work in: its calls fail, and the client may try again.
                let sess = &mut self.http.sessions[s];
                sess.init_too_large |= status == 413;
                sess.lost = true;
                self.era_failed(s);
            }
            Expect::Initialized | Expect::Notified if status == 404 => {
                let sess = &mut self.http.sessions[s];
                sess.lost |= p.era == sess.inits;
                if let Expect::Initialized = p.expect {
                    self.era_failed(s);
                }
            }
            Expect::Call(c) | Expect::Resume(c) if status == 404 || status == 413 => {
                let sess = &mut self.http.sessions[s];
                sess.lost |= status == 404 && p.era == sess.inits;
                let call = &mut sess.calls[c];
                call.failed = true;
                call.done = true;
                self.send_next_later(conn);
                self.maybe_finish(s);
            }
            Expect::Batch(b) if status == 404 || status == 413 => {
                let sess = &mut self.http.sessions[s];
                sess.lost |= status == 404 && p.era == sess.inits;
                for c in sess.batches[b].calls.clone() {
                    let call = &mut sess.calls[c];
                    call.failed = true;
                    call.done = true;
                    self.http.batch_calls_failed += 1;
                }
                self.send_next_later(conn);
                self.maybe_finish(s);
            }
            Expect::Batch(b) => {
                // Each call of the batch got exactly one answer on this stream (the server's
                // or the relay's error), unless the client cancelled it (at most one then).
                let sess = &mut self.http.sessions[s];
                for c in sess.batches[b].calls.clone() {
                    let call = &mut sess.calls[c];
                    let k = call.slow.map_or(0, |(k, _)| k);
                    let ok = if call.cancelled {
                        call.failed |= call.answered == 0;
                        call.answered <= 1
                    } else if call.failed {
                        call.answered == 1
                    } else {
                        call.answered == 1 && call.progress_seen == k
                    };
                    if call.failed {
                        self.http.batch_calls_failed += 1;
                    } else {
                        self.http.batch_calls_answered += 1;
                    }
                    if !ok {
                        let (a, n) = (call.answered, call.progress_seen);
                        return self.violate(format!(
                            "conn#{conn} s{s} batch {b} call {c}: the response ended with {a} answers and {n} of {k} progress notifications"
                        ));
                    }
                    call.done = true;
                }
                self.http.batches_completed += 1;
                self.send_next_later(conn);
                self.maybe_finish(s);
            }
            Expect::Call(c) | Expect::Resume(c) if self.http.sessions[s].calls[c].failed => {
                let call = &mut self.http.sessions[s].calls[c];
                if call.answered != 1 {
                    let n = call.answered;
                    return self.violate(format!(
                        "conn#{conn} s{s} call {c}: the response ended with {n} answers"
                    ));
                }
                call.done = true;
                self.send_next_later(conn);
                self.maybe_finish(s);
            }
            Expect::Init => {
                if !self.http.sessions[s].init_answered || self.http.sessions[s].sid.is_none() {
                    return self.violate(format!("s{s}: initialize got no answer"));
                }
                self.http.sessions[s].phase = Phase::Initialized;
                let reuse = !self.http.conns[&conn].expect_close && self.rng.chance(600);
                let target = if reuse { conn } else { self.http_open_conn() };
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
                        era: 0,
                    },
                    req,
                );
            }
            Expect::Initialized => {
                self.http.sessions[s].phase = Phase::Calls;
                let reuse =
                    (!self.http.conns[&conn].expect_close && self.rng.chance(500)).then_some(conn);
                for g in 0..self.http.sessions[s].groups.len() {
                    let d = ms(self.rng.range(0, 30));
                    self.schedule(
                        d,
                        Event::Http(Ev::StartGroup(s, g, if g == 0 { reuse } else { None })),
                    );
                }
                if self.http.sessions[s].groups.is_empty() {
                    self.maybe_finish(s);
                }
            }
            Expect::Call(c) | Expect::Resume(c) if self.http.sessions[s].calls[c].cancelled => {
                // Cancelled: the relay ends the stream, with the answer if it came first.
                let call = &mut self.http.sessions[s].calls[c];
                call.failed |= call.answered == 0;
                call.done = true;
                self.send_next_later(conn);
                self.maybe_finish(s);
            }
            Expect::Call(c) | Expect::Resume(c) => {
                let call = &mut self.http.sessions[s].calls[c];
                let k = call.slow.map_or(0, |(k, _)| k);
                if call.answered != 1 || call.progress_seen != k {
                    let (a, n) = (call.answered, call.progress_seen);
                    return self.violate(format!(
                        "conn#{conn} s{s} call {c}: the response ended with {a} answers and {n} of {k} progress notifications"
                    ));
                }
                call.done = true;
                self.send_next_later(conn);
                self.maybe_finish(s);
            }
            Expect::Notified => {}
            Expect::Gone | Expect::Delete => {
                if let (Expect::Gone, true) = (p.expect, self.http.sessions[s].doomed) {
                    let kids: Vec<_> = self
                        .children
                        .iter()
                        .filter(|(_, k)| k.server.session == Some(s))
                        .map(|(id, _)| *id)
                        .collect();
                    for k in kids {
                        let d = &self.children[&k].drv;
                        let stopped = d.stdin_close_step.is_some()
                            || d.spawned_at.is_some() && !d.stdin_open
                            || self.signals.iter().any(|(_, c, _)| *c == k);
                        if !stopped {
                            return self.violate(format!(
                                "s{s} expired (its requests get 404) but its {k} still has its stdin open"
                            ));
                        }
                    }
                }
                let sess = &mut self.http.sessions[s];
                sess.finish_left -= 1;
                if sess.finish_left == 0 {
                    sess.phase = Phase::Done;
                }
            }
        }
        self.idle_check(conn);
    }

    /// The next sequential request of a connection goes out a little later.
    fn send_next_later(&mut self, conn: u64) {
        let more = self
            .http
            .conns
            .get(&conn)
            .is_some_and(|cn| !cn.later.is_empty());
        if more {
            let d = ms(self.rng.range(0, 20));
            self.schedule(d, Event::Http(Ev::SendNext(conn)));
        }
    }

    /// Requests written or queued behind one the relay refused by closing the connection go
    /// again, each on a new connection.
    fn resend_rest(&mut self, conn: u64) {
        let Some(cn) = self.http.conns.get_mut(&conn) else {
            return;
        };
        let mut rest: Vec<(Pending, Vec<u8>)> =
            cn.pending.drain(..).zip(cn.sent.drain(..)).collect();
        rest.extend(cn.later.drain(..));
        cn.to_relay.clear();
        cn.deaf = true;
        for (p, bytes) in rest {
            let d = ms(self.rng.range(1, 20));
            self.retry_later(d, p, bytes);
        }
    }

    /// The client will send a request again after `d`.
    fn retry_later(&mut self, d: Duration, p: Pending, bytes: Vec<u8>) {
        if let Expect::Call(_) | Expect::Batch(_) = p.expect {
            for c in self.calls_of(p.session, p.expect) {
                self.http.sessions[p.session].calls[c].retry_wait = true;
            }
        }
        self.schedule(d, Event::Http(Ev::Retry(p, bytes)));
    }

    /// The client has waited `call_timeout` for call `c`: it cancels it, as an SDK client
    /// does, and keeps reading its stream (which the relay ends, with the answer if it came
    /// first). A call waiting to be sent again after a 503 is not sent again.
    fn call_timeout(&mut self, s: usize, c: usize) {
        let call = &mut self.http.sessions[s].calls[c];
        call.timer = None;
        if call.done || call.abandoned {
            return;
        }
        let id = call.id;
        if call.retry_wait {
            call.cancelled = true;
            call.failed = true;
            call.done = true;
            self.note(format_args!(
                "client s{s} call {c}: timed out, and is not sent again"
            ));
            return self.maybe_finish(s);
        }
        let waiting = self.http.conns.values().any(|cn| {
            cn.open
                && !cn.deaf
                && cn.pending.iter().any(|p| {
                    p.session == s
                        && match p.expect {
                            Expect::Call(x) | Expect::Resume(x) => x == c,
                            Expect::Batch(b) => self.http.sessions[s].batches[b].calls.contains(&c),
                            _ => false,
                        }
                })
        });
        if waiting {
            self.http.sessions[s].calls[c].cancelled = true;
            self.note(format_args!("client s{s} call {c}: timed out, cancels it"));
            let body = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": id, "reason": "sim: timed out"}})
            .to_string();
            let conn = self.http_open_conn();
            let req = self.post(s, body.as_bytes(), false);
            self.write_req(
                conn,
                Pending {
                    session: s,
                    expect: Expect::Notified,
                    era: 0,
                },
                req,
            );
        }
        // Not done yet (or not sent, or being resumed): the client looks again later.
        let after = self.http.profile().call_timeout;
        let key = self.schedule(after, Event::Http(Ev::CallTimeout(s, c)));
        self.http.sessions[s].calls[c].timer = Some(key);
    }

    /// The session could not be initialized (or ended before its calls began): its calls not
    /// yet sent fail.
    fn era_failed(&mut self, s: usize) {
        let sess = &mut self.http.sessions[s];
        for call in sess.calls.iter_mut().filter(|c| !c.done && !c.abandoned) {
            call.failed = true;
            call.done = true;
        }
        sess.phase = Phase::Calls;
        self.maybe_finish(s);
    }

    fn idle_check(&mut self, conn: u64) {
        let Some(cn) = self.http.conns.get(&conn) else {
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
            self.schedule(d, Event::Http(Ev::Hangup(conn)));
        }
    }

    fn hangup(&mut self, conn: u64) {
        let Some(cn) = self.http.conns.get_mut(&conn) else {
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
        let sess = &self.http.sessions[s];
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
        let sess = &self.http.sessions[s];
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
        let sess = &mut self.http.sessions[s];
        sess.phase = Phase::Init;
        sess.inits += 1;
        let id = sess.init_id;
        let conn = self.http_open_conn();
        let body = json!({
            "jsonrpc": "2.0", "id": id, "method": "initialize",
            "params": {
                "protocolVersion": self.http.sessions[s].version,
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
                era: 0,
            },
            req,
        );
    }

    fn start_group(&mut self, s: usize, g: usize, reuse: Option<u64>) {
        let reuse = reuse.filter(|c| {
            self.http
                .conns
                .get(c)
                .is_some_and(|cn| cn.open && !cn.eof_sent && cn.pending.is_empty())
        });
        let conn = match reuse {
            Some(c) => c,
            None => self.http_open_conn(),
        };
        let calls = self.http.sessions[s].groups[g].calls.clone();
        let pipelined = self.http.sessions[s].groups[g].pipelined;
        let close_last = self.http.sessions[s].groups[g].close_last;
        if reuse.is_none() && self.rng.chance(self.http.profile().notify_posts) {
            // A notification POSTed on its own connection (202, no body).
            let n = self.http_open_conn();
            let body = json!({"jsonrpc": "2.0", "method": "notifications/roots/list_changed",
                "params": {"session": s, "group": g}})
            .to_string();
            let close = self.rng.chance(300);
            let req = self.post(s, body.as_bytes(), close);
            let half = self.http.profile().half_close;
            if let Some(cn) = self.http.conns.get_mut(&n) {
                cn.expect_close = close;
                cn.half_close = !close && self.rng.chance(half);
            }
            self.write_req(
                n,
                Pending {
                    session: s,
                    expect: Expect::Notified,
                    era: 0,
                },
                req,
            );
        }
        if let Some(b) = self.http.sessions[s].groups[g].batch {
            return self.send_batch(s, b, conn, close_last);
        }
        let lone = calls.len() == 1 && self.http.sessions[s].calls[calls[0]].drops_left == 0;
        if reuse.is_none() && lone && !close_last && self.rng.chance(self.http.profile().half_close)
        {
            self.http.conns.get_mut(&conn).expect("conn").half_close = true;
        }
        for (i, &c) in calls.iter().enumerate() {
            let last = i + 1 == calls.len();
            let body = self.call_body(s, c);
            let req = self.post(s, &body, last && close_last);
            let p = Pending {
                session: s,
                expect: Expect::Call(c),
                era: 0,
            };
            if i == 0 || pipelined {
                if last && close_last {
                    self.http.conns.get_mut(&conn).expect("conn").expect_close = true;
                }
                self.write_req(conn, p, req);
            } else {
                self.http
                    .conns
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

    /// A batch's calls (and sometimes a notification among them) in one POST.
    fn send_batch(&mut self, s: usize, b: usize, conn: u64, close: bool) {
        let batch = &self.http.sessions[s].batches[b];
        let (calls, note) = (batch.calls.clone(), batch.note);
        let mut items: Vec<Value> = calls
            .iter()
            .map(|&c| serde_json::from_slice(&self.call_body(s, c)).expect("a call's body is JSON"))
            .collect();
        if note {
            let at = self.rng.range_usize(0, items.len());
            items.insert(
                at,
                json!({"jsonrpc": "2.0", "method": "notifications/roots/list_changed",
                    "params": {"session": s, "batch": b}}),
            );
        }
        let body = Value::Array(items).to_string();
        self.http.batches_sent += 1;
        let req = self.post(s, body.as_bytes(), close);
        if close {
            self.http.conns.get_mut(&conn).expect("conn").expect_close = true;
        }
        self.write_req(
            conn,
            Pending {
                session: s,
                expect: Expect::Batch(b),
                era: 0,
            },
            req,
        );
    }

    /// The calls a request carries.
    fn calls_of(&self, s: usize, e: Expect) -> Vec<usize> {
        match e {
            Expect::Call(c) | Expect::Resume(c) => vec![c],
            Expect::Batch(b) => self.http.sessions[s].batches[b].calls.clone(),
            _ => Vec::new(),
        }
    }

    fn send_next(&mut self, conn: u64) {
        let Some(cn) = self.http.conns.get_mut(&conn) else {
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
        let Some(last) = self.http.sessions[s].calls[c].last_event else {
            return self.violate(format!("s{s} call {c}: nothing to resume from"));
        };
        let conn = self.http_open_conn();
        let req = self.get_resume(s, last);
        let k = self.http.sessions[s].calls[c]
            .slow
            .map_or(1, |(k, _)| k as usize);
        let at = self.rng.range_usize(1, k.max(1));
        self.http.sessions[s].calls[c].drop_at = at;
        self.write_req(
            conn,
            Pending {
                session: s,
                expect: Expect::Resume(c),
                era: 0,
            },
            req,
        );
    }

    fn maybe_finish(&mut self, s: usize) {
        let sess = &mut self.http.sessions[s];
        if sess.phase != Phase::Calls || !sess.calls.iter().all(|c| c.done || c.abandoned) {
            return;
        }
        // Settled: the client's timeouts are off.
        for call in &mut sess.calls {
            if let Some(key) = call.timer.take() {
                self.events.remove(&key);
            }
        }
        if sess.lost && sess.inits < MAX_INITS && !sess.init_too_large {
            // The relay ended the session: the client initializes a new one, and makes one
            // more call in it.
            let c = sess.calls.len();
            let id = sess.next_id;
            sess.next_id += 2;
            sess.init_id = id;
            sess.calls.push(Call {
                id: id + 1,
                slow: None,
                token: None,
                pad: 0,
                drops_left: 0,
                resume: true,
                drop_at: 1,
                how: DropHow::Eof,
                progress_seen: 0,
                answered: 0,
                last_event: None,
                done: false,
                abandoned: false,
                failed: false,
                cancelled: false,
                timer: None,
                retry_wait: false,
            });
            sess.groups = vec![Group {
                calls: vec![c],
                pipelined: false,
                close_last: false,
                batch: None,
            }];
            sess.sid = None;
            sess.lost = false;
            sess.init_answered = false;
            sess.init_failed = false;
            sess.phase = Phase::NotStarted;
            let d = ms(self.rng.range(1, 200));
            self.schedule(d, Event::Http(Ev::Begin(s)));
            return;
        }
        sess.phase = Phase::Finishing;
        if sess.lost {
            // Nothing left to delete.
            sess.phase = Phase::Done;
        } else if sess.doomed {
            let after = self.http.profile().session_timeout + ms(1000);
            self.schedule(after, Event::Http(Ev::Finish(s)));
        } else if sess.delete_at_end {
            let d = ms(self.rng.range(0, 20));
            self.schedule(d, Event::Http(Ev::Finish(s)));
        } else {
            sess.phase = Phase::Done;
        }
    }

    fn finish(&mut self, s: usize) {
        let conn = self.http_open_conn();
        let id = self.http.sessions[s].next_id;
        self.http.sessions[s].next_id += 1;
        let probe = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"session": s}}})
        .to_string();
        let gone = Pending {
            session: s,
            expect: Expect::Gone,
            era: 0,
        };
        self.http.sessions[s].finish_left = 2;
        let era = self.http.sessions[s].inits;
        self.http.sessions[s].ended_by_client.push(era);
        if self.http.sessions[s].doomed {
            let req = self.post(s, probe.as_bytes(), false);
            self.write_req(conn, gone, req);
            let last = self.http.sessions[s].abandoned_event.unwrap_or((1, 1));
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
                    era: 0,
                },
                req.into_bytes(),
            );
            let req = self.post(s, probe.as_bytes(), false);
            self.write_req(conn, gone, req);
        }
    }

    // ---- the loop ----

    pub(crate) fn http_event(&mut self, ev: Ev) {
        match &ev {
            Ev::Retry(p, bytes) => self.note(format_args!(
                "ev  Retry s{} {:?} {}",
                p.session,
                p.expect,
                Bytes(bytes)
            )),
            other => self.note(format_args!("ev  {other:?}")),
        }
        match ev {
            Ev::Begin(s) => self.begin(s),
            Ev::StartGroup(s, g, reuse) => self.start_group(s, g, reuse),
            Ev::SendNext(c) => self.send_next(c),
            Ev::ReadConn(c) => self.http_read_conn(c),
            Ev::WriteConn(c) => self.http_write_conn(c),
            Ev::Hangup(c) => self.hangup(c),
            Ev::Resume(s, c) => self.resume(s, c),
            Ev::Finish(s) => self.finish(s),
            Ev::Retry(p, bytes) => {
                if let Expect::Call(_) | Expect::Batch(_) = p.expect {
                    let calls = self.calls_of(p.session, p.expect);
                    let sess = &mut self.http.sessions[p.session];
                    for &c in &calls {
                        sess.calls[c].retry_wait = false;
                    }
                    // A batch goes again while any of its calls is still wanted.
                    if calls.iter().all(|&c| sess.calls[c].cancelled) {
                        return;
                    }
                }
                let conn = self.http_open_conn();
                if let Some(cn) = self.http.conns.get_mut(&conn) {
                    cn.expect_close = contains(&bytes, b"Connection: close");
                }
                self.write_req(conn, p, bytes);
            }
            Ev::Lost(conn) => self.requests_lost(conn),
            Ev::CallTimeout(s, c) => self.call_timeout(s, c),
        }
    }

    /// The requests of a connection that will get no response fail (the relay is shutting
    /// down: a new connection would be refused too).
    fn requests_lost(&mut self, conn: u64) {
        let Some(cn) = self.http.conns.get_mut(&conn) else {
            return;
        };
        let mut lost: Vec<Pending> = cn.pending.drain(..).collect();
        lost.extend(cn.later.drain(..).map(|(p, _)| p));
        cn.sent.clear();
        cn.rx = Rx::default();
        for p in lost {
            let s = p.session;
            self.note(format_args!(
                "client conn#{conn} s{s}: {:?} gets no response",
                p.expect
            ));
            match p.expect {
                Expect::Init | Expect::Initialized => self.era_failed(s),
                Expect::Call(_) | Expect::Resume(_) | Expect::Batch(_) => {
                    for c in self.calls_of(s, p.expect) {
                        let call = &mut self.http.sessions[s].calls[c];
                        if !call.done {
                            call.failed = true;
                            call.done = true;
                        }
                    }
                    self.maybe_finish(s);
                }
                Expect::Notified => {}
                Expect::Gone | Expect::Delete => {
                    let sess = &mut self.http.sessions[s];
                    sess.finish_left -= 1;
                    if sess.finish_left == 0 {
                        sess.phase = Phase::Done;
                    }
                }
            }
        }
    }

    pub(crate) fn unfinished(&self) -> String {
        let mut out = Vec::new();
        for (s, sess) in self.http.sessions.iter().enumerate() {
            if sess.phase != Phase::Done {
                let open: Vec<String> = sess
                    .calls
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| !c.done && !c.abandoned)
                    .map(|(i, c)| {
                        format!(
                            "call {i} (id {}, {:?}, {} progress, last event {:?}{})",
                            c.id,
                            c.slow,
                            c.progress_seen,
                            c.last_event,
                            if c.cancelled { ", cancelled" } else { "" }
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
        if self.shutdowns > 0 {
            out.push(format!(
                "shut down, relay finished {}",
                self.relay.is_finished()
            ));
        }
        out.join("; ")
    }
}
