//! A minimal driver of the core, with no I/O library: one TCP client and one child server
//! faked in memory, and a fake clock.
//!
//! Everything a real driver does is here in small: it hands facts to [`Relay::handle_input`],
//! drains [`Relay::poll_output`] after every call and performs each [`Output`] in order
//! (performing one may produce new facts, which go back in), and when nothing else happens it
//! moves its clock to [`Relay::poll_timeout`] and calls [`Relay::handle_timeout`]. The "child"
//! is a few lines of Rust that answer JSON-RPC lines written to its "stdin"; the "client" is a
//! script of lines. A real driver would read sockets and pipes where this one reads vectors.
//!
//! Run it with `cargo run -p mcp-relay-core --example minimal_driver`. It prints the exchange,
//! and checks what it saw (`cargo test -p mcp-relay-core` runs it too).

use mcp_relay_core::{
    ChildId, Config, ConnId, Endpoint, ExitStatus, Input, Output, Relay, Signal, Transport,
};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// A fact the fake world produced while the driver performed an output, waiting to be handed
/// to the relay. (`Input` borrows its bytes; the driver owns them until then.)
enum Fact {
    Data(Endpoint, Vec<u8>),
    Eof(Endpoint),
    Written(Endpoint, usize),
    Spawned(ChildId),
    StderrEof(ChildId),
    Exited(ChildId, ExitStatus),
}

/// The tiny stdio "server": answers each complete line on its stdin, like a real MCP server
/// would, and ends when its stdin is closed.
struct EchoServer {
    id: ChildId,
    stdin: Vec<u8>,
}

impl EchoServer {
    /// The lines it writes to stdout in answer to what it has read so far.
    fn answer(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(end) = self.stdin.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.stdin.drain(..=end).collect();
            let Ok(msg) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let Some(id) = msg.get("id").cloned() else {
                continue; // a notification: nothing to answer
            };
            let result = match msg["method"].as_str() {
                Some("initialize") => json!({
                    "protocolVersion": msg["params"]["protocolVersion"],
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "echo", "version": "0"},
                }),
                Some("ping") => json!({}),
                Some("tools/call") => json!({
                    "content": [{"type": "text", "text": msg["params"]["arguments"]["text"]}],
                }),
                _ => {
                    out.push(
                        json!({"jsonrpc": "2.0", "id": id,
                               "error": {"code": -32601, "message": "method not found"}})
                        .to_string(),
                    );
                    continue;
                }
            };
            out.push(json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string());
        }
        out
    }
}

/// The driver: the relay, the fake world around it, and a clock that only moves when told.
struct Driver {
    relay: Relay,
    start: Instant,
    now: Instant,
    facts: VecDeque<Fact>,
    server: Option<EchoServer>,
    /// Lines the client received.
    client_got: Vec<Value>,
    client_buf: Vec<u8>,
    client_closed: bool,
    /// Lines the relay wrote to the server, as the server saw them.
    server_got: Vec<Value>,
    finished_children: usize,
}

const CLIENT: ConnId = ConnId(1);

impl Driver {
    fn new(start: Instant) -> Self {
        let config = Config {
            server_label: "echo".into(),
            // Only HTTP session ids use the seed; a real driver fills it from the OS.
            seed: [7; 32],
            ..Config::default()
        };
        Driver {
            relay: Relay::new(config, start).expect("the default configuration is valid"),
            start,
            now: start,
            facts: VecDeque::new(),
            server: None,
            client_got: Vec::new(),
            client_buf: Vec::new(),
            client_closed: false,
            server_got: Vec::new(),
            finished_children: 0,
        }
    }

    fn say(&self, what: &str) {
        println!("[{:>7.3}s] {what}", (self.now - self.start).as_secs_f64());
    }

    /// Hands one fact to the relay, then drains its outputs and every fact they cause.
    fn input(&mut self, input: Input<'_>) {
        self.relay.handle_input(self.now, input);
        self.settle();
    }

    /// Performs outputs and feeds back what they cause until the world is quiet.
    fn settle(&mut self) {
        loop {
            while let Some(output) = self.relay.poll_output() {
                self.perform(output);
            }
            let Some(fact) = self.facts.pop_front() else {
                return;
            };
            let now = self.now;
            match &fact {
                Fact::Data(from, data) => self.relay.handle_input(
                    now,
                    Input::Data {
                        from: *from,
                        data: data.as_slice(),
                    },
                ),
                Fact::Eof(from) => self.relay.handle_input(now, Input::Eof { from: *from }),
                Fact::Written(to, n) => self
                    .relay
                    .handle_input(now, Input::Written { to: *to, n: *n }),
                Fact::Spawned(child) => self.relay.handle_input(
                    now,
                    Input::Spawned {
                        child: *child,
                        pid: 4242,
                    },
                ),
                Fact::StderrEof(child) => self
                    .relay
                    .handle_input(now, Input::StderrEof { child: *child }),
                Fact::Exited(child, status) => self.relay.handle_input(
                    now,
                    Input::Exited {
                        child: *child,
                        status: *status,
                    },
                ),
            }
        }
    }

    /// One effect, done the way a real driver would, in memory.
    fn perform(&mut self, output: Output) {
        match output {
            Output::Spawn { child, .. } => {
                self.say(&format!("relay: start the server as {child}"));
                self.server = Some(EchoServer {
                    id: child,
                    stdin: Vec::new(),
                });
                self.facts.push_back(Fact::Spawned(child));
            }
            Output::Send { to, data } => {
                // Everything is written at once here; a socket may take less, and the driver
                // reports each part with `Input::Written`.
                self.facts.push_back(Fact::Written(to, data.len()));
                match to {
                    Endpoint::Conn(_) => {
                        self.client_buf.extend_from_slice(&data);
                        while let Some(end) = self.client_buf.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = self.client_buf.drain(..=end).collect();
                            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                            self.say(&format!("relay  → client: {text}"));
                            if let Ok(msg) = serde_json::from_str(&text) {
                                self.client_got.push(msg);
                            }
                        }
                    }
                    Endpoint::Child(child) => {
                        let Some(server) = self.server.as_mut().filter(|s| s.id == child) else {
                            return;
                        };
                        server.stdin.extend_from_slice(&data);
                        let answers = server.answer();
                        for line in String::from_utf8_lossy(&data).lines() {
                            self.say(&format!("relay  → server: {line}"));
                            if let Ok(msg) = serde_json::from_str(line) {
                                self.server_got.push(msg);
                            }
                        }
                        for line in answers {
                            self.say(&format!("server → relay: {line}"));
                            let mut bytes = line.into_bytes();
                            bytes.push(b'\n');
                            self.facts
                                .push_back(Fact::Data(Endpoint::Child(child), bytes));
                        }
                    }
                    // This driver has no remote server (no `Config::remote`).
                    Endpoint::Upstream(_) => {}
                }
            }
            Output::Close { endpoint } => match endpoint {
                Endpoint::Conn(conn) => {
                    self.say(&format!("relay: close {conn}"));
                    self.client_closed = true;
                }
                Endpoint::Child(child) => {
                    // A well-behaved server exits when its stdin closes.
                    self.say(&format!("relay: close the stdin of {child}; it exits"));
                    self.child_ends(child, ExitStatus::Code(0));
                }
                Endpoint::Upstream(_) => {}
            },
            Output::Connect { .. } => {}
            Output::Signal { child, signal } => {
                self.say(&format!("relay: send {signal:?} to {child}"));
                let number = match signal {
                    Signal::Term => 15,
                    Signal::Kill => 9,
                };
                self.child_ends(child, ExitStatus::Signal(number));
            }
            Output::Cancel { child } => {
                // Here every start is reported at once, so there is never one to cancel.
                self.say(&format!("relay: do not start {child} after all"));
                if self.server.as_ref().is_some_and(|s| s.id == child) {
                    self.server = None;
                }
            }
            Output::Release { child } => {
                self.say(&format!("relay: done with {child}"));
                self.finished_children += 1;
            }
            // Nothing here is ever slow, so there is nothing to stop reading.
            Output::Pause { endpoint } => self.say(&format!("relay: stop reading {endpoint}")),
            Output::Resume { endpoint } => self.say(&format!("relay: read {endpoint} again")),
            Output::StopAccepting => self.say("relay: stop accepting connections"),
            // No remote here, so nobody asks for a login.
            Output::RemoteLogin { status, .. } => self.say(&format!("relay: log in ({status})")),
        }
    }

    fn child_ends(&mut self, child: ChildId, status: ExitStatus) {
        if self.server.as_ref().is_some_and(|s| s.id == child) {
            self.server = None;
            self.facts.push_back(Fact::Eof(Endpoint::Child(child)));
            self.facts.push_back(Fact::StderrEof(child));
            self.facts.push_back(Fact::Exited(child, status));
        }
    }

    fn client_sends(&mut self, msg: Value) {
        let mut line = msg.to_string();
        self.say(&format!("client → relay: {line}"));
        line.push('\n');
        self.input(Input::Data {
            from: Endpoint::Conn(CLIENT),
            data: line.as_bytes(),
        });
    }

    /// Nothing else to do: move the clock to the relay's next deadline and fire it.
    fn wait_for_deadline(&mut self) -> Result<(), String> {
        let deadline = self
            .relay
            .poll_timeout()
            .ok_or("the relay wants no timeout while a session is open")?;
        self.now = self.now.max(deadline);
        self.say("clock: the relay's next deadline");
        self.relay.handle_timeout(self.now);
        self.settle();
        Ok(())
    }
}

/// Plays the exchange; the driver, for what it saw.
fn run() -> Result<Driver, String> {
    // The one reading of a real clock: the origin of the fake one. Nothing reads it again.
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut d = Driver::new(start);
    d.relay.start(d.now);
    d.settle();

    let local = "127.0.0.1:9000".parse().map_err(|e| format!("{e}"))?;
    let peer = "127.0.0.1:50000".parse().map_err(|e| format!("{e}"))?;
    d.say("client connects");
    d.input(Input::Accepted {
        conn: CLIENT,
        local,
        peer,
        transport: Transport::Tcp,
        server: None,
    });
    d.client_sends(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "example", "version": "0"}}}));
    d.client_sends(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    d.client_sends(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "hello through the core"}}}));

    // The session is quiet now: the next deadline is the liveness probe of the server.
    let before = d.now;
    d.wait_for_deadline()?;
    let waited = d.now - before;

    d.say("client hangs up");
    d.input(Input::Eof {
        from: Endpoint::Conn(CLIENT),
    });
    d.say("operator: shut down");
    d.input(Input::Shutdown);
    d.say(&format!("relay finished: {}", d.relay.is_finished()));

    // What a driver of this contract must have seen.
    let answer = |id: i64| d.client_got.iter().find(|m| m["id"] == id).cloned();
    let echoed = answer(2).ok_or("the client got no answer to tools/call")?;
    if echoed["result"]["content"][0]["text"] != "hello through the core" {
        return Err(format!("unexpected echo: {echoed}"));
    }
    if answer(1).is_none() {
        return Err("the client got no answer to initialize".into());
    }
    if waited != Duration::from_secs(30) {
        return Err(format!(
            "the first deadline came after {waited:?}, not the 30s ping"
        ));
    }
    if !d.server_got.iter().any(|m| m["method"] == "ping") {
        return Err("the relay did not probe the quiet server".into());
    }
    if d.client_got.iter().any(|m| m["result"] == json!({})) {
        return Err("the relay's own ping answer reached the client".into());
    }
    if !d.client_closed || d.finished_children != 1 || !d.relay.is_finished() {
        return Err("the relay did not wind down".into());
    }
    Ok(d)
}

fn main() -> ExitCode {
    match run() {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("minimal_driver: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_exchange_runs_to_completion() {
        let d = super::run().expect("the example's own checks");
        assert_eq!(d.relay.stats().messages_to_client, 2);
    }
}
