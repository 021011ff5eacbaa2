//! Hand-driven runs, for regression tests that need one exact sequence of inputs (a line cut
//! between `\r` and `\n`, a spawn that completes after a shutdown) rather than a seed.
//!
//! [`Script`] owns a relay and the fake clock, feeds one input at a time, drains every output
//! and returns them, and fires deadlines as the clock moves. It does not play the peers: the
//! test does.

use crate::clock::{Clock, Ms};
use crate::logger;
use crate::sim::ShowOutput;
use mcp_relay_core::{ChildId, Config, ConnId, Endpoint, Input, Output, Relay, Signal, Transport};
use std::time::Duration;

pub struct Script {
    pub clock: Clock,
    pub relay: Relay,
    /// Every output so far, with the simulated time it came out at.
    pub log: Vec<(Duration, Output)>,
    /// Every ERROR record so far.
    pub errors: Vec<String>,
}

impl Script {
    pub fn new(config: Config) -> Self {
        logger::start_capture();
        let clock = Clock::new();
        let relay = Relay::new(config, clock.now()).expect("a valid configuration");
        Script {
            clock,
            relay,
            log: Vec::new(),
            errors: Vec::new(),
        }
    }

    pub fn now(&self) -> Duration {
        self.clock.elapsed()
    }

    /// Feeds one input; returns what came out.
    pub fn input(&mut self, input: Input<'_>) -> Vec<Output> {
        self.relay.handle_input(self.clock.now(), input);
        self.drain()
    }

    fn drain(&mut self) -> Vec<Output> {
        for rec in logger::take() {
            if rec.level == log::Level::Error {
                self.errors.push(rec.message);
            }
        }
        let mut out = Vec::new();
        while let Some(o) = self.relay.poll_output() {
            out.push(o);
        }
        for o in &out {
            self.log.push((self.now(), clone_output(o)));
        }
        out
    }

    /// Moves the clock forward by `d`, firing every deadline on the way at its exact time.
    /// Returns what came out.
    pub fn advance(&mut self, d: Duration) -> Vec<Output> {
        let end = self.now() + d;
        let mut out = Vec::new();
        for _ in 0..10_000 {
            let Some(deadline) = self.relay.poll_timeout() else {
                break;
            };
            let at = self.clock.offset_of(deadline).max(self.now());
            if at > end {
                break;
            }
            self.clock.advance_to(at);
            self.relay.handle_timeout(self.clock.now());
            out.extend(self.drain());
        }
        self.clock.advance_to(end);
        out
    }

    /// One `handle_timeout` at the current time, whatever is due.
    pub fn timeout_now(&mut self) -> Vec<Output> {
        self.relay.handle_timeout(self.clock.now());
        self.drain()
    }

    // ---- shorthands for the usual inputs ----

    /// Accepts TCP connection `conn`; returns the child the relay asks to spawn.
    pub fn accept(&mut self, conn: u64) -> ChildId {
        let out = self.input(Input::Accepted {
            conn: ConnId(conn),
            local: "127.0.0.1:7000".parse().expect("valid address"),
            peer: format!("127.0.0.1:{}", 40000 + conn)
                .parse()
                .expect("valid address"),
            transport: Transport::Tcp,
            server: None,
        });
        out.iter()
            .find_map(|o| match o {
                Output::Spawn { child, .. } => Some(*child),
                _ => None,
            })
            .expect("an accepted connection gets a child")
    }

    pub fn spawned(&mut self, child: ChildId) -> Vec<Output> {
        self.input(Input::Spawned {
            child,
            pid: 10_000 + child.0 as u32,
        })
    }

    pub fn client_data(&mut self, conn: u64, data: &[u8]) -> Vec<Output> {
        self.input(Input::Data {
            from: Endpoint::Conn(ConnId(conn)),
            data,
        })
    }

    pub fn child_data(&mut self, child: ChildId, data: &[u8]) -> Vec<Output> {
        self.input(Input::Data {
            from: Endpoint::Child(child),
            data,
        })
    }

    pub fn written(&mut self, to: Endpoint, n: usize) -> Vec<Output> {
        self.input(Input::Written { to, n })
    }

    /// The signals sent so far, with their times.
    pub fn signals(&self) -> Vec<(Duration, ChildId, Signal)> {
        self.log
            .iter()
            .filter_map(|(t, o)| match o {
                Output::Signal { child, signal } => Some((*t, *child, *signal)),
                _ => None,
            })
            .collect()
    }

    /// Everything sent to an endpoint so far, concatenated.
    pub fn sent_to(&self, to: Endpoint) -> Vec<u8> {
        let mut out = Vec::new();
        for (_, o) in &self.log {
            if let Output::Send { to: t, data } = o {
                if *t == to {
                    out.extend_from_slice(data);
                }
            }
        }
        out
    }

    /// The outputs so far, one per line, for assertion messages.
    pub fn show(&self) -> String {
        self.log
            .iter()
            .map(|(t, o)| format!("  [{}] {}\n", Ms(*t), ShowOutput(o)))
            .collect()
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        logger::stop_capture();
    }
}

fn clone_output(o: &Output) -> Output {
    match o {
        Output::Spawn { child, server } => Output::Spawn {
            child: *child,
            server: *server,
        },
        Output::Send { to, data } => Output::Send {
            to: *to,
            data: data.clone(),
        },
        Output::Close { endpoint } => Output::Close {
            endpoint: *endpoint,
        },
        Output::Pause { endpoint } => Output::Pause {
            endpoint: *endpoint,
        },
        Output::Resume { endpoint } => Output::Resume {
            endpoint: *endpoint,
        },
        Output::Signal { child, signal } => Output::Signal {
            child: *child,
            signal: *signal,
        },
        Output::StopAccepting => Output::StopAccepting,
        Output::RemoteLogin {
            status,
            challenge,
            generation,
        } => Output::RemoteLogin {
            status: *status,
            challenge: challenge.clone(),
            generation: *generation,
        },
        Output::Cancel { child } => Output::Cancel { child: *child },
        Output::Release { child } => Output::Release { child: *child },
        Output::Connect {
            conn,
            host,
            port,
            tls,
        } => Output::Connect {
            conn: *conn,
            host: host.clone(),
            port: *port,
            tls: *tls,
        },
    }
}

/// Streamable HTTP by hand: connections, POSTs and a session opened the way a client does.
impl Script {
    /// Accepts HTTP connection `n`.
    pub fn accept_http(&mut self, n: u64) {
        self.input(Input::Accepted {
            conn: ConnId(n),
            local: crate::http_client::LOCAL.parse().expect("an address"),
            peer: format!("127.0.0.1:{}", 40000 + n)
                .parse()
                .expect("an address"),
            transport: Transport::Http,
            server: None,
        });
    }

    /// Opens a session on HTTP connection 1 (its answer written); returns its id and child.
    pub fn open_http_session(&mut self) -> (String, ChildId) {
        self.accept_http(1);
        let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
        let out = self.client_data(1, http_post(None, init).as_bytes());
        let child = spawned_in(&out).expect("a child for the session");
        self.spawned(child);
        self.child_data(
            child,
            br#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"s","version":"0"}}}
"#,
        );
        let conn1 = Endpoint::Conn(ConnId(1));
        let sent = self.sent_to(conn1);
        let sid = String::from_utf8_lossy(&sent)
            .lines()
            .find_map(|l| l.strip_prefix("Mcp-Session-Id: "))
            .expect("a session id")
            .trim()
            .to_owned();
        self.written(conn1, sent.len());
        (sid, child)
    }
}

/// The child the relay asked to start among `outputs`, if it asked for one.
pub fn spawned_in(outputs: &[Output]) -> Option<ChildId> {
    outputs.iter().find_map(|o| match o {
        Output::Spawn { child, .. } => Some(*child),
        _ => None,
    })
}

/// A POST to `/mcp` with `body`, in session `sid` (protocol 2025-06-18) when given.
pub fn http_post(sid: Option<&str>, body: &str) -> String {
    let sid = sid.map_or(String::new(), |s| {
        format!("Mcp-Session-Id: {s}\r\nMCP-Protocol-Version: 2025-06-18\r\n")
    });
    format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{sid}Content-Length: {}\r\n\r\n{body}",
        crate::http_client::LOCAL,
        body.len()
    )
}

/// What these outputs send to `to`, as text.
pub fn sent_in(outputs: &[Output], to: Endpoint) -> String {
    let mut s = Vec::new();
    for o in outputs {
        if let Output::Send { to: t, data } = o {
            if *t == to {
                s.extend_from_slice(data);
            }
        }
    }
    String::from_utf8_lossy(&s).into_owned()
}

/// An HTTP response with a JSON body, as a remote server sends it.
pub fn json_response(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}
