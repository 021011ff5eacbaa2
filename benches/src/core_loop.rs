//! The whole core loop with no I/O: `mcp_relay_core::Relay` driven the way the mio runtime
//! drives it (input, drain outputs, report writes as done, poll_timeout, handle_timeout), with
//! a fake clock, a fake child and a fake client. Measures messages/s through it (a request
//! in and a response out are two messages).

use mcp_relay_core::{ChildId, Config, ConnId, Endpoint, Input, Output, Relay, Transport};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct Harness {
    relay: Relay,
    base: Instant,
    tick: u64,
    conn: ConnId,
    child: ChildId,
    /// Writes handed out and not yet reported done: (endpoint, bytes).
    pending: Vec<(Endpoint, usize)>,
    to_child: usize,
    to_client: usize,
}

impl Harness {
    /// A relay with `idle` idle sessions besides the active one, every child spawned and
    /// the active session initialized.
    fn new(idle: usize) -> Harness {
        let mut config = Config {
            ping_interval: None,
            max_connections: idle + 16,
            ..Config::default()
        };
        config.http.max_sessions = idle + 16;
        let base = Instant::now();
        let mut h = Harness {
            relay: Relay::new(config, base).expect("a valid configuration"),
            base,
            tick: 0,
            conn: ConnId(0),
            child: ChildId(0),
            pending: Vec::new(),
            to_child: 0,
            to_client: 0,
        };
        let local: SocketAddr = ([127, 0, 0, 1], 9000).into();
        for i in 0..=idle as u64 {
            let conn = ConnId(i + 1);
            let peer: SocketAddr = ([127, 0, 0, 1], 10_000 + (i % 50_000) as u16).into();
            let now = h.now();
            h.relay.handle_input(
                now,
                Input::Accepted {
                    conn,
                    local,
                    peer,
                    transport: Transport::Tcp,
                    server: None,
                },
            );
            let mut child = None;
            while let Some(out) = h.relay.poll_output() {
                if let Output::Spawn { child: c, .. } = out {
                    child = Some(c);
                }
            }
            let child = child.expect("the relay spawns a child for every connection");
            h.input(Input::Spawned {
                child,
                pid: 1000 + i as u32,
            });
            h.conn = conn;
            h.child = child;
        }
        let init = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}}
{"jsonrpc":"2.0","method":"notifications/initialized"}
"#;
        let reply = br#"{"id":0,"jsonrpc":"2.0","result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"bench","version":"0"}}}
"#;
        h.round(init, reply);
        h
    }

    fn now(&mut self) -> Instant {
        self.tick += 1;
        self.base + Duration::from_micros(self.tick)
    }

    /// One input, then what the runtime does after it: perform the outputs (every write
    /// completes at once), then the loop's poll_timeout and handle_timeout.
    fn input(&mut self, input: Input<'_>) {
        let now = self.now();
        self.relay.handle_input(now, input);
        self.perform(now);
        while let Some((to, n)) = self.pending.pop() {
            self.relay.handle_input(now, Input::Written { to, n });
            self.perform(now);
        }
        black_box(self.relay.poll_timeout());
        self.relay.handle_timeout(now);
        self.perform(now);
    }

    fn perform(&mut self, _now: Instant) {
        while let Some(out) = self.relay.poll_output() {
            if let Output::Send { to, data } = out {
                match to {
                    Endpoint::Child(_) => self.to_child += data.len(),
                    Endpoint::Conn(_) => self.to_client += data.len(),
                    Endpoint::Upstream(_) => {}
                }
                self.pending.push((to, data.len()));
                black_box(data);
            }
        }
    }

    /// The client sends `requests`, the child answers `responses`.
    fn round(&mut self, requests: &[u8], responses: &[u8]) {
        let (conn, child) = (self.conn, self.child);
        self.input(Input::Data {
            from: Endpoint::Conn(conn),
            data: requests,
        });
        self.input(Input::Data {
            from: Endpoint::Child(child),
            data: responses,
        });
    }
}

/// `k` echo requests (ids 1..=k) of `payload` bytes and their responses, each as one buffer.
fn batch(k: usize, payload: usize) -> (Vec<u8>, Vec<u8>) {
    let text: String = (0..payload)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let mut req = Vec::new();
    let mut resp = Vec::new();
    for id in 1..=k {
        req.extend_from_slice(
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"{text}"}}}}}}"#)
                .as_bytes(),
        );
        req.push(b'\n');
        resp.extend_from_slice(
            format!(r#"{{"id":{id},"jsonrpc":"2.0","result":{{"content":[{{"type":"text","text":"{text}"}}]}}}}"#)
                .as_bytes(),
        );
        resp.push(b'\n');
    }
    (req, resp)
}

pub struct CoreResult {
    pub name: String,
    pub msgs_per_sec: f64,
    pub mib_per_sec: f64,
}

/// Each variant: (name, messages per read, payload bytes, idle sessions besides).
const VARIANTS: [(&str, usize, usize, usize); 4] = [
    ("1 message per read, ~100 B", 1, 20, 0),
    ("32 messages per read, ~100 B", 32, 20, 0),
    ("1 message per read, 64 KiB", 1, 64 * 1024, 0),
    (
        "1 message per read, ~100 B, 1,000 idle sessions open",
        1,
        20,
        1000,
    ),
];

pub fn run(budget: Duration) -> Vec<CoreResult> {
    let mut results = Vec::new();
    for (name, k, payload, idle) in VARIANTS {
        let mut h = Harness::new(idle);
        let (req, resp) = batch(k, payload);
        // Check the harness really moves the bytes through.
        let (c0, s0) = (h.to_child, h.to_client);
        h.round(&req, &resp);
        assert_eq!(
            h.to_child - c0,
            req.len(),
            "requests did not reach the child"
        );
        assert_eq!(
            h.to_client - s0,
            resp.len(),
            "responses did not reach the client"
        );
        // Calibrate a batch of rounds to ~5 ms, then take the median of many batches.
        let mut rounds = 1usize;
        loop {
            let t = Instant::now();
            for _ in 0..rounds {
                h.round(&req, &resp);
            }
            if t.elapsed() > Duration::from_millis(5) {
                break;
            }
            rounds *= 2;
        }
        let mut rates = Vec::new();
        let start = Instant::now();
        while start.elapsed() < budget || rates.len() < 5 {
            let t = Instant::now();
            for _ in 0..rounds {
                h.round(&req, &resp);
            }
            rates.push((rounds * k * 2) as f64 / t.elapsed().as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);
        let msgs = rates[rates.len() / 2];
        let bytes_per_msg = (req.len() + resp.len()) as f64 / (2 * k) as f64;
        results.push(CoreResult {
            name: name.into(),
            msgs_per_sec: msgs,
            mib_per_sec: msgs * bytes_per_msg / (1024.0 * 1024.0),
        });
    }
    results
}

pub fn table(results: &[CoreResult]) -> String {
    let mut s = String::from("| core loop (no I/O, fake clock) | messages/s | ns/message | MiB/s |\n|---|---:|---:|---:|\n");
    for r in results {
        s.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} |\n",
            r.name,
            r.msgs_per_sec,
            1e9 / r.msgs_per_sec,
            r.mib_per_sec
        ));
    }
    s
}
