//! The whole `Relay`, driven by an arbitrary sequence of inputs from a driver that keeps the
//! contract (it only reports what can happen: data from an open, unpaused endpoint, writes of
//! bytes it was given, a spawn result once per `Spawn`, one exit per child…), with the
//! simulation's model-free invariants checked after every output and every step:
//!
//! * nothing is sent to, closed, paused or resumed on a connection after it was closed or
//!   broke; nothing is sent to a child's stdin before it was spawned, after it exited, after
//!   its stdin was closed, or after it was released; a child is signalled only while spawned
//!   and not released, and released only once, after its exit (or failed spawn);
//! * `Spawn` ids are new and increasing; `StopAccepting` comes once;
//! * `buffered(conn) <= buffer_bound()` for every TCP connection;
//! * after `handle_timeout(now)`, `poll_timeout()` is `None` or later than `now`.
//!
//! Input format (so that seeds can be written by hand, see `seeds.py`): byte 0 configures
//! (limits, prespawn); then one operation per byte, `op % 19`, each followed by its operands.
//! Endpoints are chosen by index among those for which the operation is legal. The op byte
//! 255 is apart: data to a connection like op 2, with the first `"$state"` in it replaced by
//! the last `requestState` the relay sent to any connection (and as many of the spaces right
//! after it dropped as the data grew, so that a `Content-Length` stays right): a stateless
//! client's retry must echo what the relay made up.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_relay_core::{
    ChildId, Config, ConnId, Endpoint, ExitStatus, HttpConfig, Input, Output, Relay, RestartPolicy,
    Transport,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Conn {
    transport: Transport,
    /// Neither closed by the relay nor broken.
    open: bool,
    eof: bool,
    paused: bool,
    /// Bytes handed out in `Send` and not yet reported written.
    unwritten: usize,
}

#[derive(Debug, Default)]
struct Child {
    spawned: bool,
    failed: bool,
    /// The relay cancelled its start: the driver never starts it and reports nothing of it.
    cancelled: bool,
    exited: bool,
    released: bool,
    stdin_open: bool,
    /// The relay closed the stdin.
    stdin_closed: bool,
    /// The driver reported the stdin broken: the relay must neither write nor close it.
    stdin_broken: bool,
    stdout_eof: bool,
    stderr_eof: bool,
    paused: bool,
    unwritten: usize,
}

impl Child {
    fn alive(&self) -> bool {
        self.spawned && !self.released
    }
}

struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }

    /// A length (little-endian u16) and that many bytes, or what is left.
    fn data(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u16()?).min(self.0.len());
        let (d, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(d)
    }

    /// One of `items`, by the next byte.
    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        let b = self.byte()?;
        (!items.is_empty()).then(|| items[usize::from(b) % items.len()])
    }
}

struct Driver {
    relay: Relay,
    now: Instant,
    conns: BTreeMap<ConnId, Conn>,
    children: BTreeMap<ChildId, Child>,
    next_conn: u64,
    last_spawn: Option<u64>,
    stopped_accepting: bool,
    max_read: usize,
    /// The last `requestState` value (the bytes inside its JSON string) sent to a connection.
    last_state: Option<Vec<u8>>,
    /// `FUZZ_TRACE=1`: print every input and output (to replay a crash).
    trace: bool,
    start: Instant,
}

impl Driver {
    fn input(&mut self, input: Input<'_>) {
        if self.trace {
            eprintln!("{:?} in  {input:?}", self.now - self.start);
        }
        self.relay.handle_input(self.now, input);
        self.drain();
    }

    fn timeout(&mut self) {
        if self.trace {
            eprintln!("{:?} timeout", self.now - self.start);
        }
        self.relay.handle_timeout(self.now);
        self.drain();
        if let Some(t) = self.relay.poll_timeout() {
            assert!(
                t > self.now,
                "poll_timeout() {:?} after handle_timeout(now) is not after now ({:?})",
                t - self.now.min(t),
                self.relay.next_deadline()
            );
        }
    }

    fn drain(&mut self) {
        while let Some(out) = self.relay.poll_output() {
            self.perform(out);
        }
        let bound = self.relay.buffer_bound();
        for (id, c) in &self.conns {
            if c.transport == Transport::Tcp {
                if let Some(b) = self.relay.buffered(*id) {
                    assert!(b <= bound, "{id}: buffered {b} > buffer_bound() {bound}");
                }
            }
        }
    }

    fn conn(&mut self, id: ConnId, what: &str) -> &mut Conn {
        let c = self
            .conns
            .get_mut(&id)
            .unwrap_or_else(|| panic!("{what} of unknown {id}"));
        assert!(c.open, "{what} of {id} after it was closed or broke");
        c
    }

    fn child(&mut self, id: ChildId, what: &str) -> &mut Child {
        let c = self
            .children
            .get_mut(&id)
            .unwrap_or_else(|| panic!("{what} of unknown {id}"));
        assert!(c.spawned, "{what} of {id}, which is not spawned");
        assert!(!c.released, "{what} of {id} after its release");
        c
    }

    fn perform(&mut self, out: Output) {
        if self.trace {
            eprintln!("{:?} out {out:?}", self.now - self.start);
        }
        match out {
            Output::RemoteLogin { .. } => panic!("RemoteLogin with no remote server"),
            Output::Spawn { child, .. } => {
                assert!(
                    self.last_spawn.is_none_or(|l| child.0 > l),
                    "Spawn of {child}: ids must be new and increasing"
                );
                self.last_spawn = Some(child.0);
                assert!(
                    self.children.insert(child, Child::default()).is_none(),
                    "{child} spawned twice"
                );
            }
            Output::Cancel { child } => {
                let ch = self
                    .children
                    .get_mut(&child)
                    .unwrap_or_else(|| panic!("Cancel of unknown {child}"));
                assert!(
                    !ch.spawned && !ch.failed && !ch.cancelled,
                    "Cancel of {child} after its start was reported (or cancelled)"
                );
                ch.cancelled = true;
            }
            Output::Send {
                to: Endpoint::Conn(c),
                data,
            } => {
                self.conn(c, "Send").unwritten += data.len();
                if let Some(state) = request_state(&data) {
                    self.last_state = Some(state.to_vec());
                }
            }
            Output::Send {
                to: Endpoint::Child(c),
                data,
            } => {
                let ch = self.child(c, "Send");
                assert!(!ch.exited, "Send to {c} after its exit");
                assert!(ch.stdin_open, "Send to {c} after its stdin was closed");
                ch.unwritten += data.len();
            }
            Output::Close {
                endpoint: Endpoint::Conn(c),
            } => self.conn(c, "Close").open = false,
            Output::Close {
                endpoint: Endpoint::Child(c),
            } => {
                let ch = self.child(c, "Close");
                assert!(!ch.stdin_closed, "Close of {c}'s stdin twice");
                assert!(!ch.stdin_broken, "Close of {c}'s stdin after it broke");
                ch.stdin_closed = true;
                ch.stdin_open = false;
                ch.unwritten = 0;
            }
            Output::Pause {
                endpoint: Endpoint::Conn(c),
            } => self.conn(c, "Pause").paused = true,
            Output::Resume {
                endpoint: Endpoint::Conn(c),
            } => self.conn(c, "Resume").paused = false,
            Output::Pause {
                endpoint: Endpoint::Child(c),
            } => self.child(c, "Pause").paused = true,
            Output::Resume {
                endpoint: Endpoint::Child(c),
            } => self.child(c, "Resume").paused = false,
            Output::Signal { child, .. } => {
                self.child(child, "Signal");
            }
            Output::StopAccepting => {
                assert!(!self.stopped_accepting, "StopAccepting twice");
                self.stopped_accepting = true;
            }
            Output::Release { child } => {
                let ch = self
                    .children
                    .get_mut(&child)
                    .unwrap_or_else(|| panic!("Release of unknown {child}"));
                assert!(!ch.released, "Release of {child} twice");
                assert!(
                    ch.exited || ch.failed || ch.cancelled,
                    "Release of {child}, which has not exited"
                );
                ch.released = true;
            }
            // Client mode only: this relay has no remote.
            o @ (Output::Connect { .. }
            | Output::Send {
                to: Endpoint::Upstream(_),
                ..
            }
            | Output::Close {
                endpoint: Endpoint::Upstream(_),
            }
            | Output::Pause {
                endpoint: Endpoint::Upstream(_),
            }
            | Output::Resume {
                endpoint: Endpoint::Upstream(_),
            }) => panic!("{o:?} from a relay without a remote"),
        }
    }

    fn conns_where(&self, f: impl Fn(&Conn) -> bool) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| f(c))
            .map(|(id, _)| *id)
            .collect()
    }

    fn children_where(&self, f: impl Fn(&Child) -> bool) -> Vec<ChildId> {
        self.children
            .iter()
            .filter(|(_, c)| f(c))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Reads `data` from `conn`, in reads of at most `max_read`, while it is open and unpaused.
    fn conn_data(&mut self, conn: ConnId, data: &[u8]) {
        for read in data.chunks(self.max_read) {
            if !self.conns[&conn].open || self.conns[&conn].paused {
                break;
            }
            self.input(Input::Data {
                from: Endpoint::Conn(conn),
                data: read,
            });
        }
    }

    /// Performs one operation; `None` when the input is used up.
    fn step(&mut self, ops: &mut Bytes<'_>) -> Option<()> {
        let byte = ops.byte()?;
        if byte == 255 {
            // Apart from the modulo, so that committed inputs keep their meaning.
            let conn = ops.pick(&self.conns_where(|c| c.open && !c.eof && !c.paused))?;
            let data = with_state(ops.data()?, self.last_state.as_deref());
            if self.trace {
                eprintln!("op 255: data with the last requestState to {conn}");
            }
            self.conn_data(conn, &data);
            return Some(());
        }
        let op = byte % 19;
        match op {
            0 | 1 => {
                if self.stopped_accepting {
                    return Some(());
                }
                self.next_conn += 1;
                let conn = ConnId(self.next_conn);
                let transport = if op == 0 {
                    Transport::Tcp
                } else {
                    Transport::Http
                };
                self.conns.insert(
                    conn,
                    Conn {
                        transport,
                        open: true,
                        eof: false,
                        paused: false,
                        unwritten: 0,
                    },
                );
                self.input(Input::Accepted {
                    conn,
                    local: "127.0.0.1:8080".parse().expect("an address"),
                    peer: "127.0.0.1:40000".parse().expect("an address"),
                    transport,
                    server: None,
                });
            }
            2 => {
                let conn = ops.pick(&self.conns_where(|c| c.open && !c.eof && !c.paused))?;
                let data = ops.data()?;
                self.conn_data(conn, data);
            }
            3 => {
                let child =
                    ops.pick(&self.children_where(|c| c.alive() && !c.stdout_eof && !c.paused))?;
                let data = ops.data()?;
                for read in data.chunks(self.max_read) {
                    let ch = &self.children[&child];
                    if !ch.alive() || ch.paused {
                        break;
                    }
                    self.input(Input::Data {
                        from: Endpoint::Child(child),
                        data: read,
                    });
                }
            }
            4 => {
                let conn = ops.pick(&self.conns_where(|c| c.open && c.unwritten > 0))?;
                let n = written(ops.byte()?, self.conns[&conn].unwritten);
                self.conn(conn, "Written").unwritten -= n;
                self.input(Input::Written {
                    to: Endpoint::Conn(conn),
                    n,
                });
            }
            5 => {
                let child =
                    ops.pick(&self.children_where(|c| c.alive() && !c.exited && c.unwritten > 0))?;
                let ch = self.children.get_mut(&child)?;
                let n = written(ops.byte()?, ch.unwritten);
                ch.unwritten -= n;
                self.input(Input::Written {
                    to: Endpoint::Child(child),
                    n,
                });
            }
            6 => {
                let conn = ops.pick(&self.conns_where(|c| c.open && !c.eof))?;
                self.conn(conn, "Eof").eof = true;
                self.input(Input::Eof {
                    from: Endpoint::Conn(conn),
                });
            }
            7 => {
                let child = ops.pick(&self.children_where(|c| c.alive() && !c.stdout_eof))?;
                self.children.get_mut(&child)?.stdout_eof = true;
                self.input(Input::Eof {
                    from: Endpoint::Child(child),
                });
            }
            8 => {
                let conn = ops.pick(&self.conns_where(|c| c.open))?;
                self.conn(conn, "Broken").open = false;
                self.input(Input::Broken {
                    endpoint: Endpoint::Conn(conn),
                    reason: "reset",
                });
            }
            9 => {
                // A runtime learns that a stdin broke only by writing to it.
                let child = ops
                    .pick(&self.children_where(|c| c.alive() && c.stdin_open && c.unwritten > 0))?;
                let ch = self.children.get_mut(&child)?;
                ch.stdin_open = false;
                ch.stdin_broken = true;
                ch.unwritten = 0;
                self.input(Input::Broken {
                    endpoint: Endpoint::Child(child),
                    reason: "broken pipe",
                });
            }
            10 | 11 => {
                let child =
                    ops.pick(&self.children_where(|c| !c.spawned && !c.failed && !c.cancelled))?;
                let ch = self.children.get_mut(&child)?;
                if op == 10 {
                    ch.spawned = true;
                    ch.stdin_open = true;
                    self.input(Input::Spawned {
                        child,
                        pid: 1000 + child.0 as u32,
                    });
                } else {
                    ch.failed = true;
                    self.input(Input::SpawnFailed {
                        child,
                        error: "no such file",
                    });
                }
            }
            12 => {
                let child = ops.pick(&self.children_where(|c| c.alive() && !c.exited))?;
                let status = match ops.byte()? {
                    s @ 0..=127 => ExitStatus::Code(i32::from(s % 4)),
                    s => ExitStatus::Signal(i32::from(s % 16)),
                };
                let ch = self.children.get_mut(&child)?;
                ch.exited = true;
                ch.unwritten = 0;
                self.input(Input::Exited { child, status });
            }
            13 => {
                let child = ops.pick(&self.children_where(|c| c.alive() && !c.stderr_eof))?;
                let data = ops.data()?;
                self.input(Input::Stderr { child, data });
            }
            14 => {
                let child = ops.pick(&self.children_where(|c| c.alive() && !c.stderr_eof))?;
                self.children.get_mut(&child)?.stderr_eof = true;
                self.input(Input::StderrEof { child });
            }
            15 => {
                // Time passes: up to about 65 s, in milliseconds.
                self.now += Duration::from_millis(u64::from(ops.u16()?));
                self.timeout();
            }
            16 => {
                // Straight to the next deadline.
                if let Some(t) = self.relay.poll_timeout() {
                    self.now = self.now.max(t);
                }
                self.timeout();
            }
            17 => self.input(Input::AcceptTrouble {
                listeners: usize::from(ops.byte()? % 3),
            }),
            _ => self.input(Input::Shutdown),
        }
        Some(())
    }
}

/// The value of the first `"requestState":"…"` in `data`, up to its closing quote.
fn request_state(data: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = br#""requestState":""#;
    let start = data.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = data[start..].iter().position(|b| *b == b'"')?;
    Some(&data[start..start + len])
}

/// `data` with its first `"$state"` replaced by `state` as a JSON string, and up to as many
/// of the spaces right after it dropped as that added; unchanged without both.
fn with_state(data: &[u8], state: Option<&[u8]>) -> Vec<u8> {
    const MARK: &[u8] = b"\"$state\"";
    let (Some(state), Some(at)) = (state, data.windows(MARK.len()).position(|w| w == MARK)) else {
        return data.to_vec();
    };
    let rest = &data[at + MARK.len()..];
    let grown = (state.len() + 2).saturating_sub(MARK.len());
    let spaces = rest.iter().take(grown).take_while(|b| **b == b' ').count();
    let mut out = data[..at].to_vec();
    out.push(b'"');
    out.extend_from_slice(state);
    out.push(b'"');
    out.extend_from_slice(&rest[spaces..]);
    out
}

/// How many of `unwritten` bytes a write reports: all of them from 128 up, else up to `b`.
fn written(b: u8, unwritten: usize) -> usize {
    if b >= 128 {
        unwritten
    } else {
        usize::from(b).clamp(1, unwritten)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut ops = Bytes(data);
    let Some(conf) = ops.byte() else {
        return;
    };
    let now = Instant::now();
    let max_message_size = [64, 256, 1024, 16 * 1024][usize::from(conf & 3)];
    let config = Config {
        max_message_size,
        max_buffered: [128, 512, 4096, 64 * 1024][usize::from(conf >> 2 & 3)],
        // Long lines cut through (forwarded before they end) in half the runs.
        cut_through_from: if conf & 64 != 0 { 24 } else { usize::MAX },
        max_read: 64,
        max_in_flight: 4,
        shutdown_grace: Duration::from_millis(50),
        server_label: "fuzz".into(),
        heartbeat_interval: Duration::from_millis(700),
        ping_interval: (conf & 16 != 0).then(|| Duration::from_millis(400)),
        ping_timeout: Duration::from_millis(150),
        restart: if conf & 32 != 0 {
            RestartPolicy::Always
        } else {
            RestartPolicy::OnFailure
        },
        restart_delay: Duration::from_millis(10),
        max_restart_delay: Duration::from_millis(80),
        max_restarts: 3,
        restart_window: Duration::from_secs(2),
        http: HttpConfig {
            auth_tokens: if conf & 64 != 0 {
                vec!["t0ken".into()]
            } else {
                Vec::new()
            },
            session_timeout: Duration::from_secs(3),
            max_sessions: 3,
            sse_keepalive: Duration::from_millis(300),
            header_timeout: Duration::from_millis(500),
            replay_buffer: 512,
            stateless_pool: 2,
            ..HttpConfig::default()
        },
        prespawn: usize::from(conf >> 7),
        // Small enough that connections past it are refused; idle closes when probes are on.
        max_connections: 6,
        idle_timeout: (conf & 16 != 0).then(|| Duration::from_millis(900)),
        retire_timeout: Some(Duration::from_millis(1500)),
        drain_timeout: Duration::from_millis(if conf & 4 != 0 { 0 } else { 700 }),
        request_timeout: (conf & 128 != 0).then(|| Duration::from_millis(1200)),
        seed: [7; 32],
        remote: None,
        servers: Vec::new(),
    };
    let mut d = Driver {
        relay: Relay::new(config, now).expect("a valid configuration"),
        now,
        conns: BTreeMap::new(),
        children: BTreeMap::new(),
        next_conn: 0,
        last_spawn: None,
        stopped_accepting: false,
        max_read: 64,
        last_state: None,
        trace: std::env::var_os("FUZZ_TRACE").is_some(),
        start: now,
    };
    d.relay.start(now);
    d.drain();
    let mut steps = 0;
    while steps < 2_000 && d.step(&mut ops).is_some() {
        steps += 1;
    }
});
