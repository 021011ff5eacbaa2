//! Client mode: the whole `Relay` with `Config::remote` set (small limits), its sessions (the
//! relay's own stdio, and TCP or HTTP fronts in gateway mode) served by a remote the driver
//! plays over the connections the core opens. The driver keeps the contract (every `Connect`
//! answered once, unless the core closed it first; data, EOF, writes and failures only on
//! connections that are established and not closed; nothing read while paused) and mostly
//! speaks well-formed HTTP back: answers to the requests it actually got (JSON, event streams
//! chunked, length-delimited or until close, with ids, `retry:` and `endpoint` events),
//! 202/404/405/500, garbage heads, all cut at arbitrary points. Checked after every step:
//!
//! * nothing is sent to, closed, paused or resumed on a client connection after it was closed
//!   or broke; `StopAccepting` comes once; no child is ever spawned or signalled;
//! * a `Connect`'s `UpId` is new; nothing is sent to, closed, paused or resumed on an upstream
//!   connection that was never asked for, or after the core closed it, its connect failed
//!   or it broke; nothing is sent to one after its EOF;
//! * `buffered(conn) <= buffer_bound()` for the stdio connection and TCP fronts;
//! * after `handle_timeout(now)`, `poll_timeout()` is `None` or later than `now`;
//! * when the remote goes away (every connect answered, every write done, every upstream
//!   connection at EOF, time moving to the next deadline) while the clients stay, every
//!   request waiting is answered within `END_BOUND` of simulated time (unless a client sent
//!   a request id twice, see `note_client_bytes`);
//! * at the end (every client's input ends, a gateway is asked to shut down, every pending
//!   connect is answered, every write completes and every upstream connection reaches EOF),
//!   the relay is finished within `END_BOUND` of simulated time, and has closed every
//!   upstream connection that neither failed nor broke.
//!
//! Input format: two configuration bytes (see `fuzz_target!` below), then one operation per
//! byte, `op % 18`, each followed by its operands. Connections are chosen by index among
//! those for which the operation is legal. `FUZZ_TRACE=1` prints every input and output.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_relay_core::{
    Balance, Config, ConnId, Endpoint, HttpConfig, Input, Output, Relay, RemoteConfig,
    RemoteTransport, RemoteUrl, RestartPolicy, Transport, UpId,
};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// How long after the driver's end the relay may take to finish: the stop's grace, a
/// connect timeout for what is held, a restart delay, with room to spare (each step of the
/// end answers everything at once, so only the core's own deadlines take time).
const END_BOUND: Duration = Duration::from_secs(30);

const STDIO: ConnId = ConnId(1);

#[derive(Debug)]
struct Client {
    transport: Transport,
    /// Neither closed by the relay nor broken.
    open: bool,
    eof: bool,
    paused: bool,
    /// Bytes handed out in `Send` and not yet reported written.
    unwritten: usize,
    /// Bytes the client sent while the relay did not read (delivered once it resumes).
    backlog: Vec<u8>,
    /// What the client said, up to its last newline not yet read for ids.
    said: Vec<u8>,
}

/// A response in progress on an upstream connection: its event stream's head is out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    Chunked,
    UntilClose,
}

/// A request the remote got on an HTTP connection.
#[derive(Debug)]
struct Req {
    method: String,
    /// The JSON-RPC id of the (first) message in its body, and its method.
    id: Option<String>,
    rpc_method: Option<String>,
}

#[derive(Debug, Default)]
struct Up {
    /// `Connected` or `ConnectFailed` was reported.
    answered: bool,
    connected: bool,
    /// Neither closed by the core, nor failed, nor broken.
    open: bool,
    eof: bool,
    paused: bool,
    unwritten: usize,
    backlog: Vec<u8>,
    /// Bytes sent by the core not yet parsed into requests.
    tx: Vec<u8>,
    requests: VecDeque<Req>,
    stream: Option<Stream>,
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

    /// One of `items`, by the next byte (`Some(None)` when there is none: the operation is
    /// skipped, and the input goes on).
    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<Option<T>> {
        let b = self.byte()?;
        Some((!items.is_empty()).then(|| items[usize::from(b) % items.len()]))
    }
}

struct Driver {
    relay: Relay,
    now: Instant,
    clients: BTreeMap<ConnId, Client>,
    ups: BTreeMap<UpId, Up>,
    next_conn: u64,
    stopped_accepting: bool,
    max_read: usize,
    /// The remote speaks lines over TCP.
    tcp: bool,
    /// The relay serves its own stdio.
    stdio: bool,
    /// Requests the remote got (id, method) that the driver has not answered yet.
    asked: Vec<(String, String)>,
    /// The last `Mcp-Session-Id` the relay gave an HTTP front.
    front_sid: Option<String>,
    next_event: u32,
    /// Client lines made so far, and the last request id among them.
    seq: u32,
    last_id: String,
    /// Request ids each client sent (HTTP fronts together, under `ConnId(0)`), and whether
    /// one came twice, or may have (requests in raw bytes to an HTTP front are not read).
    client_ids: BTreeMap<ConnId, Vec<String>>,
    dup_ids: bool,
    trace: bool,
    start: Instant,
}

impl Driver {
    fn input(&mut self, input: Input<'_>) {
        if self.trace {
            let shown = match &input {
                Input::Data { from, data } => format!("Data {from} {:?}", text(data)),
                other => format!("{other:?}"),
            };
            eprintln!("{:?} in  {shown}", self.now - self.start);
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
        for (id, c) in &self.clients {
            if c.transport == Transport::Tcp {
                if let Some(b) = self.relay.buffered(*id) {
                    assert!(b <= bound, "{id}: buffered {b} > buffer_bound() {bound}");
                }
            }
        }
    }

    fn client(&mut self, id: ConnId, what: &str) -> &mut Client {
        let c = self
            .clients
            .get_mut(&id)
            .unwrap_or_else(|| panic!("{what} of unknown {id}"));
        assert!(c.open, "{what} of {id} after it was closed or broke");
        c
    }

    fn up(&mut self, id: UpId, what: &str) -> &mut Up {
        let u = self
            .ups
            .get_mut(&id)
            .unwrap_or_else(|| panic!("{what} of {id}, which was never asked for"));
        assert!(
            u.open,
            "{what} of {id} after it was closed, failed to connect or broke"
        );
        u
    }

    fn perform(&mut self, out: Output) {
        if self.trace {
            let shown = match &out {
                Output::Send { to, data } => format!("Send {to} {:?}", text(data)),
                other => format!("{other:?}"),
            };
            eprintln!("{:?} out {shown}", self.now - self.start);
        }
        match out {
            Output::RemoteLogin { .. } => panic!("RemoteLogin from a remote that does not log in"),
            Output::Connect { conn, .. } => {
                let up = Up {
                    open: true,
                    ..Up::default()
                };
                assert!(
                    self.ups.insert(conn, up).is_none(),
                    "Connect of {conn}: ids must be new"
                );
            }
            Output::Send {
                to: Endpoint::Conn(c),
                data,
            } => {
                let transport = self.client(c, "Send").transport;
                self.client(c, "Send").unwritten += data.len();
                if transport == Transport::Http {
                    if let Some(sid) = header_value(&data, b"mcp-session-id") {
                        self.front_sid = Some(sid);
                    }
                }
            }
            Output::Send {
                to: Endpoint::Upstream(u),
                data,
            } => {
                let up = self.up(u, "Send");
                // Its remote closed it (HTTP: a response ends there; TCP: the remote is gone).
                assert!(!up.eof, "Send to {u} after its EOF");
                up.unwritten += data.len();
                up.tx.extend_from_slice(&data);
                self.parse_sent(u);
            }
            Output::Close {
                endpoint: Endpoint::Conn(c),
            } => self.client(c, "Close").open = false,
            Output::Close {
                endpoint: Endpoint::Upstream(u),
            } => self.up(u, "Close").open = false,
            Output::Pause {
                endpoint: Endpoint::Conn(c),
            } => self.client(c, "Pause").paused = true,
            Output::Resume {
                endpoint: Endpoint::Conn(c),
            } => self.client(c, "Resume").paused = false,
            Output::Pause {
                endpoint: Endpoint::Upstream(u),
            } => self.up(u, "Pause").paused = true,
            Output::Resume {
                endpoint: Endpoint::Upstream(u),
            } => self.up(u, "Resume").paused = false,
            Output::StopAccepting => {
                assert!(!self.stopped_accepting, "StopAccepting twice");
                self.stopped_accepting = true;
            }
            o @ (Output::Spawn { .. }
            | Output::Cancel { .. }
            | Output::Signal { .. }
            | Output::Release { .. }
            | Output::Send {
                to: Endpoint::Child(_),
                ..
            }
            | Output::Close {
                endpoint: Endpoint::Child(_),
            }
            | Output::Pause {
                endpoint: Endpoint::Child(_),
            }
            | Output::Resume {
                endpoint: Endpoint::Child(_),
            }) => panic!("{o:?}: a relay with a remote has no children"),
        }
    }

    /// Reads the requests the core sent on `u` so far (lines over TCP, HTTP requests).
    fn parse_sent(&mut self, u: UpId) {
        let tcp = self.tcp;
        let Some(up) = self.ups.get_mut(&u) else {
            return;
        };
        if tcp {
            while let Some(i) = up.tx.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = up.tx.drain(..=i).collect();
                note_rpc(&line, &mut self.asked);
            }
            return;
        }
        loop {
            let Some(end) = up.tx.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            let head = String::from_utf8_lossy(&up.tx[..end]).into_owned();
            let len = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if up.tx.len() < end + 4 + len {
                return;
            }
            let body: Vec<u8> = up.tx[end + 4..end + 4 + len].to_vec();
            up.tx.drain(..end + 4 + len);
            let method = head.split(' ').next().unwrap_or("").to_owned();
            let (id, rpc_method) = note_rpc(&body, &mut self.asked);
            up.requests.push_back(Req {
                method,
                id,
                rpc_method,
            });
        }
    }

    fn clients_where(&self, f: impl Fn(&Client) -> bool) -> Vec<ConnId> {
        self.clients
            .iter()
            .filter(|(_, c)| f(c))
            .map(|(id, _)| *id)
            .collect()
    }

    fn ups_where(&self, f: impl Fn(&Up) -> bool) -> Vec<UpId> {
        self.ups
            .iter()
            .filter(|(_, c)| f(c))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Reads `data` from a client, in reads cut by `split`; what comes while the relay does
    /// not read waits for its `Resume`.
    fn client_data(&mut self, conn: ConnId, data: &[u8], split: u8) {
        let mut cuts = Cuts::new(split, self.max_read);
        let mut rest = data;
        while !rest.is_empty() {
            let c = &self.clients[&conn];
            if !c.open {
                return;
            }
            if c.paused || !c.backlog.is_empty() {
                self.clients
                    .get_mut(&conn)
                    .unwrap()
                    .backlog
                    .extend_from_slice(rest);
                return;
            }
            let (read, after) = rest.split_at(cuts.next().min(rest.len()));
            rest = after;
            self.input(Input::Data {
                from: Endpoint::Conn(conn),
                data: read,
            });
        }
    }

    fn up_data(&mut self, conn: UpId, data: &[u8], split: u8) {
        let mut cuts = Cuts::new(split, self.max_read);
        let mut rest = data;
        while !rest.is_empty() {
            let u = &self.ups[&conn];
            if !u.open {
                return;
            }
            if u.paused || !u.backlog.is_empty() {
                self.ups
                    .get_mut(&conn)
                    .unwrap()
                    .backlog
                    .extend_from_slice(rest);
                return;
            }
            let (read, after) = rest.split_at(cuts.next().min(rest.len()));
            rest = after;
            self.input(Input::Data {
                from: Endpoint::Upstream(conn),
                data: read,
            });
        }
    }

    /// Delivers what waited while the relay did not read; true if anything was.
    fn flush_backlogs(&mut self) -> bool {
        let mut any = false;
        for conn in self.clients_where(|c| c.open && !c.paused && !c.backlog.is_empty()) {
            let data = std::mem::take(&mut self.clients.get_mut(&conn).unwrap().backlog);
            self.client_data(conn, &data, 0);
            any = true;
        }
        for conn in self.ups_where(|u| u.open && !u.paused && !u.backlog.is_empty()) {
            let data = std::mem::take(&mut self.ups.get_mut(&conn).unwrap().backlog);
            self.up_data(conn, &data, 0);
            any = true;
        }
        any
    }

    /// Notes the request ids in what a client says (`whole`: one message without its
    /// newline), to know whether one came twice: JSON-RPC forbids it while the first waits,
    /// and then the relay cannot tell their answers apart (one of two requests with the
    /// same id, both resumed on broken streams, may wait for the session's end).
    fn note_client_bytes(&mut self, conn: ConnId, data: &[u8], whole: bool) {
        let http = self.clients[&conn].transport == Transport::Http;
        if http && !whole {
            self.dup_ids = true;
            return;
        }
        let c = self.clients.get_mut(&conn).unwrap();
        c.said.extend_from_slice(data);
        if whole {
            c.said.push(b'\n');
        }
        let ids = self
            .client_ids
            .entry(if http { ConnId(0) } else { conn })
            .or_default();
        while let Some(i) = c.said.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = c.said.drain(..=i).collect();
            let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let all: Vec<&Value> = match &v {
                Value::Array(a) => a.iter().collect(),
                one => vec![one],
            };
            for m in all {
                if let (Some(id), Some(_)) = (m.get("id").filter(|i| !i.is_null()), m.get("method"))
                {
                    let id = id.to_string();
                    self.dup_ids |= ids.contains(&id);
                    ids.push(id);
                }
            }
        }
    }

    /// Something the remote says on `conn`, shaped by `style` and `extra`.
    fn respond(&mut self, conn: UpId, style: u8, extra: u8) -> Vec<u8> {
        if self.tcp {
            return self.tcp_line(style, extra);
        }
        let up = &self.ups[&conn];
        if let Some(stream) = up.stream {
            let event = self.event(style, extra);
            let up = self.ups.get_mut(&conn).unwrap();
            if style % 8 == 7 {
                // The stream ends (an until-close stream ends with the connection's EOF).
                if stream == Stream::Chunked {
                    up.stream = None;
                    up.requests.pop_front();
                    return b"0\r\n\r\n".to_vec();
                }
                return Vec::new();
            }
            return match stream {
                Stream::Chunked => chunk(&event),
                Stream::UntilClose => event,
            };
        }
        let Some(req) = up.requests.front() else {
            // Bytes nobody asked for.
            return json_response(200, "", br#"{"jsonrpc":"2.0","method":"x"}"#);
        };
        let interim: &[u8] = if extra & 0x80 != 0 {
            b"HTTP/1.1 100 Continue\r\n\r\n"
        } else {
            b""
        };
        let close = if extra & 0x40 != 0 {
            "Connection: close\r\n"
        } else {
            ""
        };
        let method = req.method.clone();
        let id = req.id.clone();
        let rpc_method = req.rpc_method.clone().unwrap_or_default();
        let mut stream = None;
        let mut bytes = interim.to_vec();
        match (method.as_str(), &id) {
            ("POST", Some(id)) => {
                if matches!(style % 8, 0 | 1 | 2 | 6) {
                    // Answered here: not on another stream.
                    self.asked.retain(|(i, _)| i != id);
                }
                let answer = answer(id, &rpc_method, extra);
                let sid = if rpc_method == "initialize" && extra & 1 == 0 {
                    format!("Mcp-Session-Id: s{}\r\n{close}", extra >> 1 & 3)
                } else {
                    close.to_owned()
                };
                match style % 8 {
                    0 => bytes.extend(json_response(200, &sid, &answer)),
                    1 | 3 => {
                        bytes.extend(sse_head(Stream::Chunked, &sid));
                        bytes.extend(chunk(&self.event(2, extra)));
                        if style % 8 == 1 {
                            bytes.extend(chunk(&self.sse_event(Some(extra), &answer)));
                            bytes.extend(b"0\r\n\r\n");
                        } else {
                            // Left open after a progress event: an EOF now is a broken stream.
                            stream = Some(Stream::Chunked);
                        }
                    }
                    2 => {
                        let mut body = self.event(2, extra);
                        body.extend(self.sse_event(None, &answer));
                        bytes.extend(format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n{sid}Content-Length: {}\r\n\r\n",
                            body.len()
                        ).into_bytes());
                        bytes.extend(body);
                    }
                    4 => {
                        let status =
                            [400, 404, 405, 500, 401, 403, 429, 502][usize::from(extra & 7)];
                        let body: Vec<u8> = match extra >> 3 & 3 {
                            0 => Vec::new(),
                            1 => format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32600,"message":"no"}}}}"#).into_bytes(),
                            2 => b"Bad Request: \x1b[31mno\r\n".to_vec(),
                            _ => br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"Bad Request: No valid session ID"}}"#.to_vec(),
                        };
                        bytes.extend(json_response(status, close, &body));
                    }
                    5 => bytes.extend(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"),
                    6 => {
                        bytes.extend(sse_head(Stream::UntilClose, &sid));
                        bytes.extend(self.sse_event(Some(extra), &answer));
                        stream = Some(Stream::UntilClose);
                    }
                    _ => {
                        let body = if extra & 1 == 0 {
                            br#"{"jsonrpc":"2.0","id":"other","result":{}}"#.to_vec()
                        } else {
                            b"<html>not json</html>".to_vec()
                        };
                        bytes.extend(json_response(200, &sid, &body));
                    }
                }
            }
            ("POST", None) => match style % 4 {
                0 | 1 => bytes.extend(
                    format!("HTTP/1.1 202 Accepted\r\n{close}Content-Length: 0\r\n\r\n")
                        .into_bytes(),
                ),
                2 => bytes.extend(json_response(200, close, b"")),
                _ => bytes.extend(json_response(
                    [400, 404, 500, 405][usize::from(extra & 3)],
                    close,
                    b"",
                )),
            },
            ("GET", _) => match style % 8 {
                0 | 1 => {
                    bytes.extend(sse_head(Stream::Chunked, close));
                    if style % 8 == 1 {
                        bytes.extend(chunk(&endpoint_event(extra)));
                    }
                    stream = Some(Stream::Chunked);
                }
                2 => bytes.extend(json_response(405, close, b"")),
                3 => bytes.extend(json_response(404, close, b"")),
                4 | 5 => {
                    bytes.extend(sse_head(Stream::UntilClose, ""));
                    if style % 8 == 4 {
                        bytes.extend(endpoint_event(extra));
                    }
                    stream = Some(Stream::UntilClose);
                }
                6 => bytes.extend(json_response(200, close, b"{}")),
                _ => bytes.extend(json_response(500, close, b"oops")),
            },
            _ => match style % 4 {
                0 => bytes.extend(
                    format!("HTTP/1.1 200 OK\r\n{close}Content-Length: 0\r\n\r\n").into_bytes(),
                ),
                1 => bytes.extend(b"HTTP/1.1 204 No Content\r\n\r\n"),
                2 => bytes.extend(json_response(405, close, b"")),
                _ => bytes.extend(json_response(404, close, b"")),
            },
        }
        let up = self.ups.get_mut(&conn).unwrap();
        up.stream = stream;
        if stream.is_none() {
            up.requests.pop_front();
        }
        bytes
    }

    /// An event of an open stream.
    fn event(&mut self, style: u8, extra: u8) -> Vec<u8> {
        match style % 8 {
            0 | 1 if !self.asked.is_empty() => {
                // The answer to something asked (HTTP+SSE answers on its stream).
                let i = usize::from(extra) % self.asked.len();
                let (id, method) = self.asked.remove(i);
                self.sse_event(Some(extra), &answer(&id, &method, extra))
            }
            2 => self.sse_event(
                Some(extra),
                br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}"#,
            ),
            3 => self.sse_event(None, &server_request(extra)),
            4 => b": keepalive\n\n".to_vec(),
            5 => endpoint_event(extra),
            6 => format!("retry: {}\n\n", u32::from(extra) * 10).into_bytes(),
            _ => self.sse_event(
                None,
                br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#,
            ),
        }
    }

    /// `data` as an event, with an id (and a `retry:`) when `meta` says so.
    fn sse_event(&mut self, meta: Option<u8>, data: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        if let Some(m) = meta {
            if m & 2 == 0 {
                self.next_event += 1;
                e.extend(format!("id: e{}\n", self.next_event).into_bytes());
            }
            if m & 4 != 0 {
                e.extend(format!("retry: {}\n", u32::from(m >> 3) * 20).into_bytes());
            }
            if m & 8 != 0 {
                e.extend(b"event: message\n");
            }
        }
        e.extend(b"data: ");
        e.extend(data);
        e.extend(b"\n\n");
        e
    }

    /// A line a TCP remote says.
    fn tcp_line(&mut self, style: u8, extra: u8) -> Vec<u8> {
        let mut line = match style % 6 {
            0 | 1 if !self.asked.is_empty() => {
                let i = usize::from(extra) % self.asked.len();
                let (id, method) = self.asked.remove(i);
                answer(&id, &method, extra)
            }
            2 => server_request(extra),
            3 => br#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"hi"}}"#.to_vec(),
            4 => b"not json at all".to_vec(),
            _ => format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"data":"{}"}}}}"#,
                "x".repeat(usize::from(extra) * 8)
            )
            .into_bytes(),
        };
        if extra & 1 == 0 {
            line.push(b'\r');
        }
        line.push(b'\n');
        line
    }

    /// Performs one operation; `None` when the input is used up.
    fn step(&mut self, ops: &mut Bytes<'_>) -> Option<()> {
        self.flush_backlogs();
        let op = ops.byte()? % 18;
        match op {
            0 => {
                // A client message.
                let Some(conn) = ops.pick(&self.clients_where(|c| c.open && !c.eof))? else {
                    return Some(());
                };
                self.seq += 1;
                let line = client_line(ops, self.seq, &self.last_id)?;
                if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&line) {
                    if let Some(id) = m.get("id").filter(|_| m.contains_key("method")) {
                        self.last_id = id.to_string();
                    }
                }
                self.note_client_bytes(conn, &line, true);
                let split = ops.byte()?;
                let data = if self.clients[&conn].transport == Transport::Http {
                    front_post(&line, self.front_sid.as_deref())
                } else {
                    let mut l = line;
                    l.push(b'\n');
                    l
                };
                self.client_data(conn, &data, split);
            }
            1 => {
                let Some(conn) = ops.pick(&self.clients_where(|c| c.open && !c.eof))? else {
                    return Some(());
                };
                let data = ops.data()?;
                let split = ops.byte()?;
                self.note_client_bytes(conn, data, false);
                self.client_data(conn, data, split);
            }
            2 => {
                let Some(conn) =
                    ops.pick(&self.clients_where(|c| c.open && !c.eof && c.backlog.is_empty()))?
                else {
                    return Some(());
                };
                self.client(conn, "Eof").eof = true;
                self.input(Input::Eof {
                    from: Endpoint::Conn(conn),
                });
            }
            3 => {
                let Some(conn) = ops.pick(&self.clients_where(|c| c.open && c.unwritten > 0))?
                else {
                    return Some(());
                };
                let n = written(ops.byte()?, self.clients[&conn].unwritten);
                self.client(conn, "Written").unwritten -= n;
                self.input(Input::Written {
                    to: Endpoint::Conn(conn),
                    n,
                });
            }
            4 => {
                let Some(conn) = ops.pick(&self.clients_where(|c| c.open))? else {
                    return Some(());
                };
                self.client(conn, "Broken").open = false;
                self.input(Input::Broken {
                    endpoint: Endpoint::Conn(conn),
                    reason: "reset",
                });
            }
            5 => {
                let Some(conn) = ops.pick(&self.ups_where(|u| u.open && !u.answered))? else {
                    return Some(());
                };
                let ok = ops.byte()? < 192;
                let u = self.ups.get_mut(&conn)?;
                u.answered = true;
                if ok {
                    u.connected = true;
                    self.input(Input::Connected { conn });
                } else {
                    u.open = false;
                    self.input(Input::ConnectFailed {
                        conn,
                        error: "connection refused",
                    });
                }
            }
            6 | 7 => {
                let Some(conn) = ops.pick(&self.ups_where(|u| u.open && u.connected && !u.eof))?
                else {
                    return Some(());
                };
                let style = ops.byte()?;
                let extra = ops.byte()?;
                let split = ops.byte()?;
                let data = self.respond(conn, style, extra);
                self.up_data(conn, &data, split);
            }
            8 => {
                let Some(conn) = ops.pick(&self.ups_where(|u| u.open && u.connected && !u.eof))?
                else {
                    return Some(());
                };
                let data = ops.data()?;
                let split = ops.byte()?;
                self.up_data(conn, data, split);
            }
            9 => {
                let Some(conn) = ops.pick(&self.ups_where(|u| u.open && u.unwritten > 0))? else {
                    return Some(());
                };
                let n = written(ops.byte()?, self.ups[&conn].unwritten);
                self.up(conn, "Written").unwritten -= n;
                self.input(Input::Written {
                    to: Endpoint::Upstream(conn),
                    n,
                });
            }
            10 => {
                let Some(conn) = ops.pick(
                    &self.ups_where(|u| u.open && u.connected && !u.eof && u.backlog.is_empty()),
                )?
                else {
                    return Some(());
                };
                self.up(conn, "Eof").eof = true;
                self.input(Input::Eof {
                    from: Endpoint::Upstream(conn),
                });
            }
            11 => {
                let Some(conn) = ops.pick(&self.ups_where(|u| u.open && u.connected))? else {
                    return Some(());
                };
                self.up(conn, "Broken").open = false;
                self.input(Input::Broken {
                    endpoint: Endpoint::Upstream(conn),
                    reason: "connection reset",
                });
            }
            12 => {
                // Time passes: up to about 16 s, in quarter milliseconds.
                self.now += Duration::from_micros(u64::from(ops.u16()?) * 250);
                self.timeout();
            }
            13 => {
                if let Some(t) = self.relay.poll_timeout() {
                    self.now = self.now.max(t);
                }
                self.timeout();
            }
            14 => {
                // A front connection (gateway mode).
                let http = ops.byte()? & 1 != 0;
                if self.stopped_accepting {
                    return Some(());
                }
                self.next_conn += 1;
                let conn = ConnId(self.next_conn);
                let transport = if http {
                    Transport::Http
                } else {
                    Transport::Tcp
                };
                self.clients.insert(conn, new_client(transport));
                self.input(Input::Accepted {
                    conn,
                    local: "127.0.0.1:8080".parse().expect("an address"),
                    peer: "127.0.0.1:40000".parse().expect("an address"),
                    transport,
                    server: None,
                });
            }
            15 => {
                // A remote's message of its own on an open stream, or a line over TCP.
                let Some(conn) = ops.pick(&self.ups_where(|u| {
                    u.open && u.connected && !u.eof && (u.stream.is_some() || u.requests.is_empty())
                }))?
                else {
                    return Some(());
                };
                let extra = ops.byte()?;
                // A request over TCP; an event asking the client something on a stream.
                let style = if self.tcp { 2 } else { 3 };
                let data = self.respond(conn, style, extra);
                self.up_data(conn, &data, extra);
            }
            16 => self.input(Input::Shutdown),
            _ => {
                // Several things answered at once: every pending connect, and every write.
                for conn in self.ups_where(|u| u.open && !u.answered) {
                    let u = self.ups.get_mut(&conn)?;
                    if !u.open {
                        continue;
                    }
                    u.answered = true;
                    u.connected = true;
                    self.input(Input::Connected { conn });
                }
                self.write_all();
            }
        }
        Some(())
    }

    /// Reports every byte handed out as written.
    fn write_all(&mut self) {
        for conn in self.ups_where(|u| u.open && u.connected && u.unwritten > 0) {
            let Some(u) = self.ups.get_mut(&conn).filter(|u| u.open) else {
                continue;
            };
            let n = std::mem::take(&mut u.unwritten);
            if n > 0 {
                self.input(Input::Written {
                    to: Endpoint::Upstream(conn),
                    n,
                });
            }
        }
        for conn in self.clients_where(|c| c.open && c.unwritten > 0) {
            let Some(c) = self.clients.get_mut(&conn).filter(|c| c.open) else {
                continue;
            };
            let n = std::mem::take(&mut c.unwritten);
            if n > 0 {
                self.input(Input::Written {
                    to: Endpoint::Conn(conn),
                    n,
                });
            }
        }
    }

    /// Before the end, the remote goes away while the clients stay: every connect is
    /// answered, every write completes, every upstream connection reaches EOF, and time goes
    /// to the relay's next deadline, until no client request waits any more. A request the
    /// remote will never answer must get the relay's error, within `END_BOUND`.
    fn remote_gone(&mut self) {
        if self.trace {
            eprintln!("{:?} the remote goes away", self.now - self.start);
        }
        let start = self.now;
        for _ in 0..10_000 {
            let waiting = self.relay.requests_in_flight();
            if waiting == 0 || self.relay.is_finished() || self.dup_ids {
                // With a request id sent twice, see `note_client_bytes`.
                return;
            }
            assert!(
                self.now - start <= END_BOUND,
                "{waiting} requests still wait {:?} after the remote went away",
                self.now - start
            );
            let mut acted = self.flush_backlogs();
            for conn in self.ups_where(|u| u.open && !u.answered) {
                let Some(u) = self.ups.get_mut(&conn).filter(|u| u.open) else {
                    continue;
                };
                u.answered = true;
                u.connected = true;
                self.input(Input::Connected { conn });
                acted = true;
            }
            if self.ups.values().any(|u| u.open && u.unwritten > 0)
                || self.clients.values().any(|c| c.open && c.unwritten > 0)
            {
                self.write_all();
                acted = true;
            }
            for conn in self
                .ups_where(|u| u.open && u.connected && !u.eof && !u.paused && u.backlog.is_empty())
            {
                if !self.ups[&conn].open {
                    continue;
                }
                self.up(conn, "Eof").eof = true;
                self.input(Input::Eof {
                    from: Endpoint::Upstream(conn),
                });
                acted = true;
            }
            if acted {
                continue;
            }
            let Some(t) = self.relay.poll_timeout() else {
                panic!("{waiting} requests wait, the remote went away, and nothing is due");
            };
            self.now = self.now.max(t);
            self.timeout();
        }
        panic!("requests still wait after 10000 rounds with the remote gone");
    }

    /// The driver's end: every client's input ends (a gateway is also asked to shut down);
    /// then every connect is answered, every write completes, every upstream connection
    /// reaches EOF, and time goes to the relay's next deadline, until it is finished.
    fn finish(&mut self) {
        if self.trace {
            eprintln!("{:?} the end", self.now - self.start);
        }
        let end = self.now;
        if !self.stdio {
            self.input(Input::Shutdown);
        }
        for _ in 0..10_000 {
            if self.relay.is_finished() {
                // The driver drops an upstream connection only when told to (`Close`), or
                // when it failed: none may be left behind.
                let left = self.ups_where(|u| u.open);
                assert!(left.is_empty(), "finished, yet never closed: {left:?}");
                return;
            }
            assert!(
                self.now - end <= END_BOUND,
                "the relay is not finished {:?} after the driver's end",
                self.now - end
            );
            let mut acted = self.flush_backlogs();
            for conn in self.ups_where(|u| u.open && !u.answered) {
                let Some(u) = self.ups.get_mut(&conn).filter(|u| u.open) else {
                    continue;
                };
                u.answered = true;
                u.connected = true;
                self.input(Input::Connected { conn });
                acted = true;
            }
            if self.ups.values().any(|u| u.open && u.unwritten > 0)
                || self.clients.values().any(|c| c.open && c.unwritten > 0)
            {
                self.write_all();
                acted = true;
            }
            for conn in
                self.clients_where(|c| c.open && !c.eof && !c.paused && c.backlog.is_empty())
            {
                if !self.clients[&conn].open {
                    continue;
                }
                self.client(conn, "Eof").eof = true;
                self.input(Input::Eof {
                    from: Endpoint::Conn(conn),
                });
                acted = true;
            }
            for conn in self
                .ups_where(|u| u.open && u.connected && !u.eof && !u.paused && u.backlog.is_empty())
            {
                if !self.ups[&conn].open {
                    continue;
                }
                self.up(conn, "Eof").eof = true;
                self.input(Input::Eof {
                    from: Endpoint::Upstream(conn),
                });
                acted = true;
            }
            if acted {
                continue;
            }
            let Some(t) = self.relay.poll_timeout() else {
                panic!(
                    "the relay is not finished, waits for no deadline, and the driver has \
                     nothing left to report"
                );
            };
            self.now = self.now.max(t);
            self.timeout();
        }
        panic!("the relay is not finished after 10000 rounds of the driver's end");
    }
}

/// Bytes as text, for traces.
fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

fn new_client(transport: Transport) -> Client {
    Client {
        transport,
        open: true,
        eof: false,
        paused: false,
        unwritten: 0,
        backlog: Vec::new(),
        said: Vec::new(),
    }
}

/// The id (as JSON) and method of the first JSON-RPC message in `body`; every request in it
/// is noted in `asked`.
fn note_rpc(body: &[u8], asked: &mut Vec<(String, String)>) -> (Option<String>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    let all: Vec<&Value> = match &v {
        Value::Array(a) => a.iter().collect(),
        one => vec![one],
    };
    let mut first = None;
    for m in all {
        let id = m.get("id").filter(|i| !i.is_null()).map(Value::to_string);
        let method = m.get("method").and_then(Value::as_str).map(str::to_owned);
        if let (Some(id), Some(method)) = (&id, &method) {
            asked.push((id.clone(), method.clone()));
        }
        first.get_or_insert((id, method));
    }
    first.unwrap_or((None, None))
}

/// A JSON-RPC answer to request `id` (a JSON value) of `method`.
fn answer(id: &str, method: &str, extra: u8) -> Vec<u8> {
    let result = match method {
        "initialize" => {
            let v = ["2025-03-26", "2025-06-18", "2025-11-25", "1999-01-01"][usize::from(extra >> 4 & 3)];
            format!(
                r#"{{"protocolVersion":"{v}","capabilities":{{"tools":{{"listChanged":true}}}},"serverInfo":{{"name":"r","version":"1"}}}}"#
            )
        }
        "tools/list" => r#"{"tools":[{"name":"echo","inputSchema":{"type":"object"}}]}"#.to_owned(),
        _ if extra & 0x20 != 0 => {
            return format!(
                r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32601,"message":"Method not found"}}}}"#
            )
            .into_bytes()
        }
        _ => r#"{"content":[{"type":"text","text":"hi"}]}"#.to_owned(),
    };
    format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#).into_bytes()
}

/// A request from the remote to the client.
fn server_request(extra: u8) -> Vec<u8> {
    let method = [
        "sampling/createMessage",
        "roots/list",
        "ping",
        "elicitation/create",
    ][usize::from(extra & 3)];
    format!(
        r#"{{"jsonrpc":"2.0","id":"srv-{}","method":"{method}","params":{{}}}}"#,
        extra >> 2 & 3
    )
    .into_bytes()
}

fn endpoint_event(extra: u8) -> Vec<u8> {
    let uri = [
        "/messages?session=7",
        "messages?session=8",
        "http://127.0.0.1:9/m?s=1",
        "http://elsewhere:1/m",
        "/bad path",
        "/messages?session=7",
        "",
        "/a/../b",
    ][usize::from(extra >> 5)];
    format!("event: endpoint\ndata: {uri}\n\n").into_bytes()
}

fn json_response(status: u16, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn sse_head(stream: Stream, headers: &str) -> Vec<u8> {
    let framing = match stream {
        Stream::Chunked => "Transfer-Encoding: chunked\r\n",
        Stream::UntilClose => "",
    };
    format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n{headers}{framing}\r\n")
        .into_bytes()
}

fn chunk(data: &[u8]) -> Vec<u8> {
    if data.is_empty() {
        return Vec::new();
    }
    let mut c = format!("{:x}\r\n", data.len()).into_bytes();
    c.extend_from_slice(data);
    c.extend_from_slice(b"\r\n");
    c
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        _ => "Whatever",
    }
}

/// The value of header `name` (lower case) in an HTTP message's head.
fn header_value(data: &[u8], name: &[u8]) -> Option<String> {
    let head = &data[..data.windows(4).position(|w| w == b"\r\n\r\n")?];
    head.split(|b| *b == b'\n').find_map(|line| {
        let colon = line.iter().position(|b| *b == b':')?;
        line[..colon].eq_ignore_ascii_case(name).then(|| {
            String::from_utf8_lossy(&line[colon + 1..])
                .trim()
                .to_owned()
        })
    })
}

/// A client's POST of `line` to an HTTP front.
fn front_post(line: &[u8], sid: Option<&str>) -> Vec<u8> {
    let sid = sid.map_or(String::new(), |s| format!("Mcp-Session-Id: {s}\r\n"));
    let mut r = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\n{sid}Content-Length: {}\r\n\r\n",
        line.len()
    )
    .into_bytes();
    r.extend_from_slice(line);
    r
}

/// A client's line, chosen by the next bytes.
///
/// Request ids are new (`seq` counts the lines made); a cancellation names `last`, the
/// previous request's id.
fn client_line(ops: &mut Bytes<'_>, seq: u32, last: &str) -> Option<Vec<u8>> {
    let kind = ops.byte()?;
    let n = ops.byte()?;
    let id = if n >= 200 {
        format!("\"c{n}-{seq}\"")
    } else {
        (u32::from(n) + 256 * seq).to_string()
    };
    Some(match kind % 10 {
        0 => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"f","version":"1"}}}}}}"#).into_bytes(),
        1 => br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_vec(),
        2 => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#).into_bytes(),
        3 => format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{}"}}}}}}"#,
            "y".repeat(usize::from(kind) * 4)
        )
        .into_bytes(),
        4 => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#).into_bytes(),
        5 => format!(r#"{{"jsonrpc":"2.0","id":"srv-{}","result":{{}}}}"#, n & 3).into_bytes(),
        6 => format!(r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{last}}}}}"#).into_bytes(),
        7 => format!(r#"[{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}},{{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}}]"#).into_bytes(),
        8 => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"resources/subscribe","params":{{"uri":"file:///a"}}}}"#).into_bytes(),
        _ => ops.data()?.to_vec(),
    })
}

/// How many of `unwritten` bytes a write reports: all of them from 128 up, else up to `b`.
fn written(b: u8, unwritten: usize) -> usize {
    if b >= 128 {
        unwritten
    } else {
        usize::from(b).clamp(1, unwritten)
    }
}

/// Read sizes: all `max` with seed 0, else a small sequence of sizes in 1..=max.
struct Cuts {
    state: u32,
    max: usize,
}

impl Cuts {
    fn new(seed: u8, max: usize) -> Self {
        Cuts {
            state: u32::from(seed),
            max,
        }
    }

    fn next(&mut self) -> usize {
        if self.state == 0 {
            return self.max;
        }
        self.state = self.state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        1 + (self.state >> 16) as usize % self.max
    }
}

fuzz_target!(|data: &[u8]| {
    let mut ops = Bytes(data);
    // Byte 0: limits (bits 0-3), the transport (4-5), two URLs (6), probes (7).
    // Byte 1: no stdio (bit 0: gateway mode only), restart always (1), the remote's
    // connections (2-3), the balance (4-5), tcp:// with Auto (6), a header (7).
    let (Some(conf), Some(conf2)) = (ops.byte(), ops.byte()) else {
        return;
    };
    let now = Instant::now();
    let transport = [
        RemoteTransport::Auto,
        RemoteTransport::StreamableHttp,
        RemoteTransport::Sse,
        RemoteTransport::Tcp,
    ][usize::from(conf >> 4 & 3)];
    let tcp = transport == RemoteTransport::Tcp
        || (transport == RemoteTransport::Auto && conf2 & 64 != 0);
    let mut urls = if tcp {
        vec!["tcp://127.0.0.1:9", "tcp://remote.example:7000"]
    } else {
        vec!["http://127.0.0.1:9/mcp", "http://[::1]:8080/sse?key=x"]
    };
    if conf & 64 == 0 {
        urls.truncate(1);
    }
    let remote = RemoteConfig {
        urls: urls
            .iter()
            .map(|u| RemoteUrl::parse(u).expect("a URL"))
            .collect(),
        transport,
        headers: if conf2 & 128 != 0 {
            vec![("Authorization".into(), "Bearer k".into())]
        } else {
            Vec::new()
        },
        connect_timeout: Duration::from_millis(2_000),
        max_connections: 1 + usize::from(conf2 >> 2 & 3),
        balance: [
            Balance::Failover,
            Balance::RoundRobin,
            Balance::LeastSessions,
            Balance::Failover,
        ][usize::from(conf2 >> 4 & 3)],
        down_for: Duration::from_millis(3_000),
        login: false,
        login_generation: 0,
    };
    let max_read = 64;
    let config = Config {
        max_message_size: [64, 256, 1024, 16 * 1024][usize::from(conf & 3)],
        max_buffered: [128, 512, 4096, 64 * 1024][usize::from(conf >> 2 & 3)],
        cut_through_from: Config::default().cut_through_from,
        max_read,
        max_in_flight: 4,
        shutdown_grace: Duration::from_millis(300),
        server_label: "fuzz".into(),
        heartbeat_interval: Duration::from_millis(700),
        ping_interval: (conf & 128 != 0).then(|| Duration::from_millis(400)),
        ping_timeout: Duration::from_millis(150),
        restart: if conf2 & 2 != 0 {
            RestartPolicy::Always
        } else {
            RestartPolicy::OnFailure
        },
        restart_delay: Duration::from_millis(10),
        max_restart_delay: Duration::from_millis(80),
        max_restarts: 3,
        restart_window: Duration::from_secs(2),
        http: HttpConfig {
            session_timeout: Duration::from_secs(3),
            max_sessions: 3,
            sse_keepalive: Duration::from_millis(300),
            header_timeout: Duration::from_millis(500),
            replay_buffer: 512,
            ..HttpConfig::default()
        },
        prespawn: 0,
        max_connections: 6,
        idle_timeout: None,
        retire_timeout: None,
        drain_timeout: Duration::from_millis(300),
        request_timeout: None,
        seed: [7; 32],
        remote: Some(remote),
        servers: Vec::new(),
    };
    let stdio = conf2 & 1 == 0;
    let mut d = Driver {
        relay: Relay::new(config, now).expect("a valid configuration"),
        now,
        clients: BTreeMap::new(),
        ups: BTreeMap::new(),
        next_conn: 1,
        stopped_accepting: false,
        max_read,
        tcp,
        stdio,
        asked: Vec::new(),
        front_sid: None,
        next_event: 0,
        seq: 0,
        last_id: "0".into(),
        client_ids: BTreeMap::new(),
        dup_ids: false,
        trace: std::env::var_os("FUZZ_TRACE").is_some(),
        start: now,
    };
    d.relay.start(now);
    d.drain();
    if stdio {
        d.clients.insert(STDIO, new_client(Transport::Tcp));
        d.input(Input::Attached { conn: STDIO });
    }
    let mut steps = 0;
    while steps < 2_000 && d.step(&mut ops).is_some() {
        steps += 1;
    }
    d.remote_gone();
    d.finish();
});
