//! The scripted remote MCP server of the client-mode simulation ([`crate::remote_sim`]).
//!
//! One remote serves every incarnation the relay connects (each restart opens a new session):
//!
//! * Streamable HTTP: a POST per message; `initialize` opens a session (`Mcp-Session-Id`);
//!   a request is answered with JSON or with an event stream (a priming event with an id and
//!   `retry:`, progress, sometimes a request to the client, then the answer); notifications
//!   and responses get 202; a GET opens the session's own stream (or 405); a GET with
//!   `Last-Event-ID` resumes the stream that id names; a forgotten session gets 404.
//! * HTTP+SSE (legacy): a GET stream whose `endpoint` event names where to POST; POSTs get
//!   202 and every answer comes on the stream; a POST to the stream's URL gets 405 (which is
//!   how `--transport auto` finds out).
//! * TCP: newline-delimited JSON-RPC, one connection per incarnation.
//!
//! It faults as its per-seed [`Faults`] say: a connection cut (end of file or reset,
//! sometimes in the middle of a message) before an event, an answer or a line; an event stream
//! ended before its answer; a session forgotten; connections refused for a while; a session
//! that stops answering for good. Requests are answered after random delays, so out of order.
//!
//! Everything it means for the client carries a unique marker (`"_m"`), registered in
//! [`Remote::messages`]. Every write carries [`Mark`]s: facts the relay knows once it has read
//! the bytes up to each mark (a message complete, an event dispatched, a `retry:` read, a
//! body ended). The driver hands them back as it feeds the bytes ([`Remote::relay_read`]), so
//! the remote knows exactly what the relay has seen, and judges what the relay sends it
//! against that: a client request received twice, a resumption that would skip or repeat an
//! event, or that comes at another time than `retry` after the stream broke. What it finds
//! goes to [`Remote::violations`].

use crate::rng::Rng;
use mcp_relay_core::UpId;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Which transport the remote speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Streamable,
    Sse,
    Tcp,
}

/// How often the remote faults (per mille unless said otherwise), drawn per seed.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Before an event, an answer or a line: the connection is cut.
    pub cut: u32,
    /// A cut ends an event stream's body cleanly instead (Streamable HTTP).
    pub end_body: u32,
    /// A cut happens in the middle of what was about to be written.
    pub mid: u32,
    /// A cut is a reset (unread bytes are lost) rather than an end of file.
    pub reset: u32,
    /// POST streams carry event ids (resumable).
    pub ids: u32,
    /// Requests answered with JSON rather than an event stream.
    pub json: u32,
    /// Event stream bodies are chunked (else delimited by the connection's end).
    pub chunked: u32,
    /// The remote has no GET stream (405).
    pub no_get: bool,
    /// A tool call sends a request to the client.
    pub ask: u32,
    /// A tool call takes long (longer than the relay's ping interval).
    pub slow: u32,
}

impl Faults {
    fn draw(rng: &mut Rng) -> Self {
        let calm = rng.chance(150);
        Faults {
            cut: if calm {
                0
            } else {
                *rng.pick(&[10, 30, 80, 150])
            },
            end_body: *rng.pick(&[0, 200, 500]),
            mid: *rng.pick(&[0, 300, 700]),
            reset: *rng.pick(&[0, 300, 700]),
            ids: *rng.pick(&[0, 700, 1000, 1000]),
            json: *rng.pick(&[0, 300, 700]),
            chunked: *rng.pick(&[500, 900, 1000]),
            no_get: rng.chance(250),
            ask: *rng.pick(&[0, 100, 300]),
            slow: *rng.pick(&[0, 50, 150]),
        }
    }
}

/// A fact the relay knows once it has read the bytes up to the mark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mark {
    /// A message for the client (its marker) is complete.
    Message(u64),
    /// Event `seq` of stream `stream` is complete (dispatched).
    Event { stream: u32, seq: u32 },
    /// The `retry:` field of stream `stream` is read.
    Retry { stream: u32, ms: u64 },
    /// The body of the response carrying stream `stream` ended.
    BodyEnd { stream: u32 },
}

/// What the remote does; the driver performs it.
#[derive(Debug)]
pub enum Wire {
    /// Bytes written on a connection; marks at offsets into `bytes` (just past the byte that
    /// completes each fact).
    Write {
        conn: UpId,
        bytes: Vec<u8>,
        marks: Vec<(usize, Mark)>,
    },
    /// The remote closes the connection: a reset (what the relay has not read is lost), or an
    /// end of file after what was written.
    Close { conn: UpId, reset: bool },
    /// Something the remote does later.
    Later { delay: Duration, act: Act },
}

/// Something the remote does at a scheduled moment.
#[derive(Clone, Debug)]
pub enum Act {
    /// The next step of a call (progress, a request to the client, the answer).
    Step(u32),
    /// A message of a session's own (on the GET stream, the legacy stream, the TCP line);
    /// ticks of an older generation are dropped.
    Tick { session: u32, generation: u32 },
    /// The newest session is forgotten (404 from now on; maybe its connections dropped).
    Forget,
    /// Connections are refused for this long.
    Refuse(Duration),
    /// The newest session stops answering anything, for good.
    Stall,
}

/// A message meant for the client.
#[derive(Clone, Debug)]
pub struct Sent {
    /// What it is, for reports.
    pub what: String,
    /// The client request it answers.
    pub answers: Option<i64>,
}

/// What the remote saw happen in a run.
#[derive(Clone, Debug, Default)]
pub struct RemoteTally {
    /// Resumptions (`GET` with `Last-Event-ID`), and those whose timing was checked.
    pub resumes: u64,
    pub timed_resumes: u64,
    /// Client requests served again after a 404 (a forgotten session).
    pub resent_after_404: u64,
    /// Connections cut in the middle of a message.
    pub cut_mid_message: u64,
    /// Event streams ended before their answer.
    pub ended_early: u64,
}

/// A session that stopped answering, and the relay incarnation it served.
#[derive(Clone, Debug)]
pub struct Stall {
    pub session: String,
    pub incarnation: u64,
    pub at: Duration,
}

#[derive(Debug)]
struct Conn {
    rx: Vec<u8>,
    open: bool,
    /// When the relay asked for it (`Output::Connect`).
    asked_at: Duration,
    busy: Busy,
    /// The stream it carries, until the relay saw that attempt end.
    carries: Option<u32>,
}

#[derive(Debug, PartialEq, Eq)]
enum Busy {
    /// Reading the next request.
    Idle,
    /// A JSON answer to this call is due.
    Json(u32),
    /// Carrying this event stream.
    Stream(u32),
    /// The legacy transport's stream of this session.
    Legacy(u32),
    /// A request to a stalled session: never answered.
    Stalled,
}

#[derive(Debug)]
struct Session {
    name: String,
    incarnation: u64,
    /// `notifications/initialized` came: it may send messages of its own.
    initialized: bool,
    gone: bool,
    stalled: bool,
    /// Its GET stream (Streamable HTTP).
    get: Option<u32>,
    /// The legacy stream's connection, or the TCP connection.
    conn: Option<UpId>,
    /// The legacy stream's body is chunked.
    chunked: bool,
    generation: u32,
    ticks: u32,
}

#[derive(Debug)]
struct Stream {
    session: u32,
    /// The call it answers (`None`: the GET stream).
    call: Option<u32>,
    ids: bool,
    retry: Option<u64>,
    chunked: bool,
    events: Vec<Event>,
    conn: Option<UpId>,
    /// No more events will come: after them the body ends.
    finished: bool,
    /// Events the relay read completely, the `retry` it read, and when it last learned that
    /// an attempt ended.
    read: BTreeSet<u32>,
    relay_retry: Option<u64>,
    ended_at: Option<Duration>,
}

#[derive(Debug, Clone)]
struct Event {
    text: Vec<u8>,
    marks: Vec<(usize, Mark)>,
    /// It carries a message (not only a priming id).
    message: Option<u64>,
}

#[derive(Debug)]
enum Sink {
    Json(UpId),
    Stream(u32),
    Legacy(u32),
    Tcp(UpId),
}

#[derive(Debug)]
struct Call {
    session: u32,
    id: Value,
    client: Option<i64>,
    progress: Option<Value>,
    result: Value,
    steps: VecDeque<Step>,
    sink: Sink,
    cancelled: bool,
    /// When the remote learned of the cancellation (after the relay did: it forwarded it).
    cancelled_at: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Progress(u32),
    Ask,
    Answer,
}

/// How often one client request reached the remote.
#[derive(Debug, Default)]
struct Deliveries {
    processed: u32,
    not_found: u32,
    total: u32,
}

/// The scripted remote.
pub struct Remote {
    pub kind: Kind,
    pub faults: Faults,
    rng: Rng,
    now: Duration,
    conns: BTreeMap<UpId, Conn>,
    sessions: BTreeMap<u32, Session>,
    streams: BTreeMap<u32, Stream>,
    calls: BTreeMap<u32, Call>,
    next: u32,
    next_marker: u64,
    refuse_until: Duration,
    deliveries: BTreeMap<i64, Deliveries>,
    /// What it does, for the driver to perform.
    pub out: Vec<Wire>,
    /// What it found wrong with the relay.
    pub violations: Vec<String>,
    /// Every message it meant for the client, by marker.
    pub messages: BTreeMap<u64, Sent>,
    /// Sessions that stalled.
    pub stalls: Vec<Stall>,
    /// Notes for the trace.
    pub notes: Vec<String>,
    /// What happened, for the tests that check a family of runs is not vacuous.
    pub tally: RemoteTally,
}

/// The longest a call takes the remote.
pub const SLOWEST_CALL: Duration = Duration::from_secs(7);

const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n";

impl Remote {
    pub fn new(kind: Kind, mut rng: Rng) -> Self {
        let faults = Faults::draw(&mut rng);
        Remote {
            kind,
            faults,
            rng,
            now: Duration::ZERO,
            conns: BTreeMap::new(),
            sessions: BTreeMap::new(),
            streams: BTreeMap::new(),
            calls: BTreeMap::new(),
            next: 1,
            next_marker: 1,
            refuse_until: Duration::ZERO,
            deliveries: BTreeMap::new(),
            out: Vec::new(),
            violations: Vec::new(),
            messages: BTreeMap::new(),
            stalls: Vec::new(),
            notes: Vec::new(),
            tally: RemoteTally::default(),
        }
    }

    /// The faults planned for a run: when the remote forgets, refuses and stalls.
    pub fn plan(&mut self, horizon: Duration) -> Vec<(Duration, Act)> {
        let mut acts = Vec::new();
        let h = horizon.as_millis() as u64;
        let forgets = if self.kind == Kind::Tcp {
            0
        } else {
            *self.rng.pick(&[0, 0, 1, 2])
        };
        for _ in 0..forgets {
            acts.push((self.ms(200, h), Act::Forget));
        }
        for _ in 0..*self.rng.pick(&[0, 0, 1, 2]) {
            let d = self.ms(100, 3000);
            acts.push((self.ms(0, h / 3), Act::Refuse(d)));
        }
        if self.rng.chance(100) {
            // Not there yet when the relay starts.
            let d = self.ms(100, 2000);
            acts.push((Duration::ZERO, Act::Refuse(d)));
        }
        if self.rng.chance(250) {
            // Early enough that the relay is still serving, most of the time.
            acts.push((self.ms(300, h / 4), Act::Stall));
        }
        acts
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.rng.range(lo, hi.max(lo)))
    }

    fn id(&mut self) -> u32 {
        self.next += 1;
        self.next
    }

    fn note(&mut self, what: String) {
        self.notes.push(what);
    }

    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    // ---- the driver's facts ----

    /// A connection is asked for: refused (`false`) while the remote refuses.
    pub fn accepts(&self, now: Duration) -> bool {
        now >= self.refuse_until
    }

    /// A connection the relay asked for at `asked_at` is established.
    pub fn connected(&mut self, conn: UpId, asked_at: Duration, now: Duration) {
        self.now = now;
        self.conns.insert(
            conn,
            Conn {
                rx: Vec::new(),
                open: true,
                asked_at,
                busy: Busy::Idle,
                carries: None,
            },
        );
        if self.kind == Kind::Tcp {
            let s = self.new_session(conn, format!("tcp-{}", conn));
            self.sessions.get_mut(&s).expect("just made").conn = Some(conn);
        }
    }

    /// Bytes the relay wrote to `conn` reached the remote.
    pub fn received(&mut self, conn: UpId, bytes: &[u8], now: Duration) {
        self.now = now;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.open {
            return;
        }
        c.rx.extend_from_slice(bytes);
        self.pump(conn);
    }

    /// The relay closed `conn`.
    pub fn relay_closed(&mut self, conn: UpId, now: Duration) {
        self.now = now;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.carries = None;
        }
        self.drop_conn(conn);
    }

    /// The relay read bytes up to `mark`.
    pub fn relay_read(&mut self, conn: UpId, mark: &Mark, now: Duration) {
        self.now = now;
        match *mark {
            Mark::Message(_) => {}
            Mark::Event { stream, seq } => {
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.read.insert(seq);
                }
            }
            Mark::Retry { stream, ms } => {
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.relay_retry = Some(ms);
                }
            }
            Mark::BodyEnd { stream } => {
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.ended_at = Some(now);
                }
                if let Some(c) = self.conns.get_mut(&conn) {
                    if c.carries == Some(stream) {
                        c.carries = None;
                    }
                }
            }
        }
    }

    /// The relay was told that `conn` ended (end of file, or reset).
    pub fn relay_saw_end(&mut self, conn: UpId, now: Duration) {
        self.now = now;
        let carried = self.conns.get_mut(&conn).and_then(|c| c.carries.take());
        if let Some(s) = carried.and_then(|s| self.streams.get_mut(&s)) {
            s.ended_at = Some(now);
        }
        self.drop_conn(conn);
    }

    /// A scheduled act.
    pub fn act(&mut self, act: Act, now: Duration) {
        self.now = now;
        match act {
            Act::Step(call) => self.step(call),
            Act::Tick {
                session,
                generation,
            } => self.tick(session, generation),
            Act::Forget => self.forget(),
            Act::Refuse(d) => {
                self.note(format!("refuses connections for {}ms", d.as_millis()));
                self.refuse_until = now + d;
            }
            Act::Stall => self.stall(),
        }
    }

    // ---- connections ----

    fn drop_conn(&mut self, conn: UpId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.open {
            return;
        }
        c.open = false;
        match std::mem::replace(&mut c.busy, Busy::Idle) {
            Busy::Stream(s) => {
                if let Some(st) = self.streams.get_mut(&s) {
                    if st.conn == Some(conn) {
                        st.conn = None;
                    }
                }
            }
            Busy::Legacy(s) => self.end_session(s),
            _ => {}
        }
        if self.kind == Kind::Tcp {
            if let Some(s) = self.session_of_conn(conn) {
                self.end_session(s);
            }
        }
    }

    fn session_of_conn(&self, conn: UpId) -> Option<u32> {
        self.sessions
            .iter()
            .find(|(_, s)| s.conn == Some(conn))
            .map(|(k, _)| *k)
    }

    fn end_session(&mut self, s: u32) {
        if let Some(sess) = self.sessions.get_mut(&s) {
            sess.gone = true;
        }
    }

    fn write(&mut self, conn: UpId, bytes: Vec<u8>, marks: Vec<(usize, Mark)>) {
        if self.conns.get(&conn).is_some_and(|c| c.open) {
            self.out.push(Wire::Write { conn, bytes, marks });
        }
    }

    /// Cuts `conn`: maybe after a prefix of `bytes` (the marks past the cut are lost).
    fn cut(&mut self, conn: UpId, bytes: &[u8], marks: &[(usize, Mark)], why: &str) {
        let reset = self.rng.chance(self.faults.reset);
        let prefix = if bytes.len() > 1 && self.rng.chance(self.faults.mid) {
            self.rng.range_usize(1, bytes.len() - 1)
        } else {
            0
        };
        self.note(format!(
            "cuts {conn} ({}) {why}, {prefix} of {} bytes written",
            if reset { "reset" } else { "end of file" },
            bytes.len()
        ));
        if prefix > 0 {
            self.tally.cut_mid_message += 1;
            let marks = marks
                .iter()
                .filter(|(at, _)| *at <= prefix)
                .cloned()
                .collect();
            self.write(conn, bytes[..prefix].to_vec(), marks);
        }
        self.out.push(Wire::Close { conn, reset });
        self.drop_conn(conn);
    }

    fn cuts_now(&mut self) -> bool {
        self.rng.chance(self.faults.cut)
    }

    // ---- reading requests ----

    fn pump(&mut self, conn: UpId) {
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            if !c.open || c.busy != Busy::Idle && self.kind != Kind::Tcp {
                return;
            }
            if self.kind == Kind::Tcp {
                let Some(nl) = c.rx.iter().position(|b| *b == b'\n') else {
                    return;
                };
                let line: Vec<u8> = c.rx.drain(..=nl).collect();
                let Some(s) = self.session_of_conn(conn) else {
                    return;
                };
                match serde_json::from_slice::<Value>(&line) {
                    Ok(v) => self.message(s, &v, Sink::Tcp(conn)),
                    Err(e) => self.violation(format!(
                        "{conn}: the relay sent a line that is not JSON ({e}): {}",
                        String::from_utf8_lossy(&line)
                    )),
                }
                continue;
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            let head_len = match req.parse(&c.rx) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return,
                Err(e) => {
                    let text = String::from_utf8_lossy(&c.rx).into_owned();
                    c.rx.clear();
                    self.violation(format!("{conn}: a malformed request ({e}): {text:?}"));
                    return;
                }
            };
            let method = req.method.unwrap_or("").to_owned();
            let path = req.path.unwrap_or("").to_owned();
            let hdrs: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let len: usize = header(&hdrs, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if c.rx.len() < head_len + len {
                return;
            }
            let body: Vec<u8> = c.rx[head_len..head_len + len].to_vec();
            c.rx.drain(..head_len + len);
            self.request(conn, &method, &path, &hdrs, &body);
        }
    }

    fn request(
        &mut self,
        conn: UpId,
        method: &str,
        path: &str,
        hdrs: &[(String, String)],
        body: &[u8],
    ) {
        match (self.kind, method) {
            (Kind::Streamable, "POST") => self.post(conn, hdrs, body),
            (Kind::Streamable, "GET") => self.get(conn, hdrs),
            (Kind::Streamable, "DELETE") => {
                if let Some(s) = self.session_named(header(hdrs, "mcp-session-id")) {
                    self.note(format!("session {} deleted", self.sessions[&s].name));
                    self.end_session(s);
                }
                self.respond(conn, "200 OK", "");
            }
            (Kind::Sse, "GET") => self.legacy_get(conn),
            (Kind::Sse, "POST") if path.starts_with("/messages") => {
                self.legacy_post(conn, path, body)
            }
            (Kind::Sse, "POST") => self.respond(conn, "405 Method Not Allowed", ""),
            _ => {
                self.violation(format!("{conn}: unexpected {method} {path}"));
                self.respond(conn, "405 Method Not Allowed", "");
            }
        }
    }

    fn respond(&mut self, conn: UpId, status: &str, json: &str) {
        let kind = if json.is_empty() {
            ""
        } else {
            "Content-Type: application/json\r\n"
        };
        let text = format!(
            "HTTP/1.1 {status}\r\n{kind}Content-Length: {}\r\n\r\n{json}",
            json.len()
        );
        self.write(conn, text.into_bytes(), Vec::new());
    }

    fn session_named(&self, name: Option<&str>) -> Option<u32> {
        let name = name?;
        self.sessions
            .iter()
            .find(|(_, s)| s.name == name)
            .map(|(k, _)| *k)
    }

    fn new_session(&mut self, conn: UpId, name: String) -> u32 {
        let k = self.id();
        self.note(format!("session {name} opened"));
        self.sessions.insert(
            k,
            Session {
                name,
                incarnation: conn.server.0,
                initialized: false,
                gone: false,
                stalled: false,
                get: None,
                conn: None,
                chunked: false,
                generation: 0,
                ticks: 0,
            },
        );
        k
    }

    /// Counts a client request's arrival (invariant 3): processed at most once, and sent
    /// again only after a 404.
    fn delivered(&mut self, msg: &Value, session: &str, processed: bool) {
        let Some(id) = client_id(msg) else {
            return;
        };
        if msg.get("method").is_none() {
            return;
        }
        let d = self.deliveries.entry(id).or_default();
        let allowed = d.not_found + 1;
        d.total += 1;
        let mut wrong = Vec::new();
        if d.total > allowed {
            wrong.push(format!(
                "the remote received client request {id} {} times (session {session}), after \
                 only {} 404 answer(s) (invariant 3)",
                d.total, d.not_found
            ));
        }
        if processed && d.not_found > 0 {
            self.tally.resent_after_404 += 1;
        }
        if processed {
            d.processed += 1;
            if d.processed > 1 {
                wrong.push(format!(
                    "the remote received client request {id} a second time and served it again \
                     (session {session}) (invariant 3)"
                ));
            }
        } else {
            d.not_found += 1;
        }
        for w in wrong {
            self.violation(w);
        }
    }

    // ---- Streamable HTTP ----

    fn post(&mut self, conn: UpId, hdrs: &[(String, String)], body: &[u8]) {
        let msg: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                self.violation(format!("{conn}: a POST body that is not JSON ({e})"));
                return self.respond(conn, "400 Bad Request", "");
            }
        };
        let is_init = msg.get("method").and_then(Value::as_str) == Some("initialize");
        let sid = header(hdrs, "mcp-session-id");
        if is_init {
            if sid.is_some() {
                self.violation(format!("{conn}: initialize POSTed with a session id"));
            }
            let name = format!("S{}", self.next + 1);
            let s = self.new_session(conn, name);
            self.delivered(&msg, &self.sessions[&s].name.clone(), true);
            return self.call(s, &msg, conn);
        }
        let Some(sid) = sid else {
            // The relay's probe may go before there is a session (while initialize is out);
            // the client's messages wait for one.
            if !relay_own(&msg) {
                self.violation(format!(
                    "{conn}: a POST without Mcp-Session-Id: {}",
                    String::from_utf8_lossy(body)
                ));
            }
            let refusal = r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"Bad Request: No valid session ID provided"}}"#;
            return self.respond(conn, "400 Bad Request", refusal);
        };
        let s = match self.session_named(Some(sid)) {
            Some(s) if !self.sessions[&s].gone => s,
            _ => {
                self.delivered(&msg, sid, false);
                let body = if self.rng.chance(500) {
                    r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"Session not found"}}"#
                } else {
                    ""
                };
                return self.respond(conn, "404 Not Found", body);
            }
        };
        if self.sessions[&s].stalled {
            self.conns.get_mut(&conn).expect("open").busy = Busy::Stalled;
            return;
        }
        if msg.get("id").is_some() && msg.get("method").is_some() {
            self.delivered(&msg, sid, true);
            return self.call(s, &msg, conn);
        }
        // A notification or a response.
        self.respond(conn, "202 Accepted", "");
        self.notification(s, &msg);
    }

    /// A request over Streamable HTTP: answered with JSON or an event stream on `conn`.
    fn call(&mut self, s: u32, msg: &Value, conn: UpId) {
        let json_mode = self.rng.chance(self.faults.json);
        if json_mode {
            let c = self.new_call(s, msg, Sink::Json(conn));
            self.conns.get_mut(&conn).expect("open").busy = Busy::Json(c);
            return;
        }
        let st = self.id();
        let ids = self.rng.chance(self.faults.ids);
        let retry = Some(self.rng.range(20, 1500));
        let chunked = self.rng.chance(self.faults.chunked);
        self.streams.insert(
            st,
            Stream {
                session: s,
                call: None,
                ids,
                retry,
                chunked,
                events: Vec::new(),
                conn: None,
                finished: false,
                read: BTreeSet::new(),
                relay_retry: None,
                ended_at: None,
            },
        );
        let c = self.new_call(s, msg, Sink::Stream(st));
        self.streams.get_mut(&st).expect("made").call = Some(c);
        if ids {
            self.priming(st);
        }
        self.attach(st, conn, None);
    }

    fn priming(&mut self, st: u32) {
        let s = &self.streams[&st];
        let seq = s.events.len() as u32;
        let mut text = format!("id: {st}-{seq}\n").into_bytes();
        let mut marks = Vec::new();
        if let Some(ms) = s.retry {
            text.extend_from_slice(format!("retry: {ms}\n").as_bytes());
            marks.push((text.len(), Mark::Retry { stream: st, ms }));
        }
        text.extend_from_slice(b"data: \n\n");
        marks.push((text.len(), Mark::Event { stream: st, seq }));
        self.streams
            .get_mut(&st)
            .expect("known")
            .events
            .push(Event {
                text,
                marks,
                message: None,
            });
    }

    /// Puts stream `st` on `conn`: its head, the events after `after` (all without), and the
    /// end of its body if it is finished.
    fn attach(&mut self, st: u32, conn: UpId, after: Option<u32>) {
        let (chunked, sid) = {
            let s = &self.streams[&st];
            (s.chunked, self.sessions[&s.session].name.clone())
        };
        let c = self.conns.get_mut(&conn).expect("open");
        c.busy = Busy::Stream(st);
        c.carries = Some(st);
        self.streams.get_mut(&st).expect("known").conn = Some(conn);
        let framing = if chunked {
            "Transfer-Encoding: chunked\r\n"
        } else {
            "Connection: close\r\n"
        };
        let head = format!("{SSE_HEAD}Mcp-Session-Id: {sid}\r\n{framing}\r\n");
        self.write(conn, head.into_bytes(), Vec::new());
        let events: Vec<(u32, Event)> = self.streams[&st]
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| (i as u32, e.clone()))
            .filter(|(i, _)| after.is_none_or(|a| *i > a))
            .collect();
        for (_, e) in events {
            self.put_event(st, conn, &e);
        }
        if self.streams[&st].finished {
            self.end_body(st, conn);
        }
    }

    /// Writes one event of `st` on `conn` (in a chunk when chunked).
    fn put_event(&mut self, st: u32, conn: UpId, e: &Event) {
        let (bytes, marks) = self.framed(st, e);
        self.write(conn, bytes, marks);
    }

    fn end_body(&mut self, st: u32, conn: UpId) {
        if self.streams[&st].chunked {
            let mark = Mark::BodyEnd { stream: st };
            self.write(conn, b"0\r\n\r\n".to_vec(), vec![(5, mark)]);
            if let Some(s) = self.streams.get_mut(&st) {
                s.conn = None;
            }
            if let Some(c) = self.conns.get_mut(&conn) {
                c.busy = Busy::Idle;
            }
            self.pump(conn);
        } else {
            self.out.push(Wire::Close { conn, reset: false });
            self.drop_conn(conn);
        }
    }

    /// Adds an event to stream `st` (its log) and writes it if the stream is on a connection;
    /// a fault may cut it first.
    fn emit(&mut self, st: u32, msg: &Value, marker: Option<u64>) {
        let s = &self.streams[&st];
        let seq = s.events.len() as u32;
        let mut text = b"event: message\n".to_vec();
        if s.ids {
            text.extend_from_slice(format!("id: {st}-{seq}\n").as_bytes());
        }
        text.extend_from_slice(b"data: ");
        text.extend_from_slice(msg.to_string().as_bytes());
        text.extend_from_slice(b"\n\n");
        let mut marks = vec![(text.len(), Mark::Event { stream: st, seq })];
        if let Some(m) = marker {
            marks.push((text.len(), Mark::Message(m)));
        }
        let e = Event {
            text,
            marks,
            message: marker,
        };
        let conn = s.conn;
        self.streams
            .get_mut(&st)
            .expect("known")
            .events
            .push(e.clone());
        let Some(conn) = conn else { return };
        if self.cuts_now() {
            if self.kind == Kind::Streamable && self.rng.chance(self.faults.end_body) {
                self.note(format!("ends the body of stream {st} early on {conn}"));
                self.tally.ended_early += 1;
                return self.end_body_early(st, conn);
            }
            let (bytes, marks) = self.framed(st, &e);
            return self.cut(conn, &bytes, &marks, &format!("before event {st}-{seq}"));
        }
        self.put_event(st, conn, &e);
    }

    fn framed(&self, st: u32, e: &Event) -> (Vec<u8>, Vec<(usize, Mark)>) {
        chunk_if(self.streams[&st].chunked, &e.text, &e.marks)
    }

    /// Ends the body of `st` on `conn` before it is finished (the relay resumes it, if it
    /// can).
    fn end_body_early(&mut self, st: u32, conn: UpId) {
        if let Some(s) = self.streams.get_mut(&st) {
            s.conn = None;
        }
        if self.streams[&st].chunked {
            let mark = Mark::BodyEnd { stream: st };
            self.write(conn, b"0\r\n\r\n".to_vec(), vec![(5, mark)]);
            if let Some(c) = self.conns.get_mut(&conn) {
                c.busy = Busy::Idle;
            }
            self.pump(conn);
        } else {
            self.out.push(Wire::Close { conn, reset: false });
            self.drop_conn(conn);
        }
    }

    fn get(&mut self, conn: UpId, hdrs: &[(String, String)]) {
        let sid = header(hdrs, "mcp-session-id");
        let s = match self.session_named(sid) {
            Some(s) if !self.sessions[&s].gone => s,
            _ => return self.respond(conn, "404 Not Found", ""),
        };
        if self.sessions[&s].stalled {
            self.conns.get_mut(&conn).expect("open").busy = Busy::Stalled;
            return;
        }
        if let Some(last) = header(hdrs, "last-event-id") {
            return self.resume(conn, s, last);
        }
        if self.faults.no_get {
            return self.respond(conn, "405 Method Not Allowed", "");
        }
        let st = self.id();
        let ids = self.rng.chance(self.faults.ids);
        self.streams.insert(
            st,
            Stream {
                session: s,
                call: None,
                ids,
                retry: Some(self.rng.range(20, 1500)),
                chunked: self.rng.chance(self.faults.chunked),
                events: Vec::new(),
                conn: None,
                finished: false,
                read: BTreeSet::new(),
                relay_retry: None,
                ended_at: None,
            },
        );
        if ids {
            self.priming(st);
        }
        self.sessions.get_mut(&s).expect("known").get = Some(st);
        self.attach(st, conn, None);
        self.tick_later(s);
    }

    /// A GET with `Last-Event-ID`: checked against what the relay read of that stream, and
    /// when; then the stream goes on on `conn`.
    fn resume(&mut self, conn: UpId, s: u32, last: &str) {
        self.tally.resumes += 1;
        let parsed = last
            .split_once('-')
            .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
        let Some((st, seq)) = parsed.filter(|(st, _)| self.streams.contains_key(st)) else {
            self.violation(format!(
                "{conn}: Last-Event-ID {last:?} names no stream of this remote"
            ));
            return self.respond(conn, "400 Bad Request", "");
        };
        let stream = &self.streams[&st];
        if stream.session != s {
            let other = self.sessions[&stream.session].name.clone();
            self.violations.push(format!(
                "{conn}: Last-Event-ID {last} names a stream of session {other}, not of {}",
                self.sessions[&s].name
            ));
        }
        // Invariant 2: resuming after `seq` must neither skip an event the relay did not read
        // completely, nor repeat one it did.
        for (i, e) in stream.events.iter().enumerate() {
            let i = i as u32;
            let read = stream.read.contains(&i);
            if i <= seq && !read && e.message.is_some() {
                self.violations.push(format!(
                    "{conn}: resumes stream {st} after event {seq}, but the relay never read \
                     event {st}-{i} completely: its message m{} is lost (invariant 2)",
                    e.message.unwrap_or(0)
                ));
            }
            if i > seq && read && e.message.is_some() {
                self.violations.push(format!(
                    "{conn}: resumes stream {st} after event {seq}, but the relay already read \
                     event {st}-{i}: its message m{} would come twice (invariant 2)",
                    e.message.unwrap_or(0)
                ));
            }
        }
        // A stream is resumed for its request's answer: not once the client cancelled it.
        let cancelled = stream.call.and_then(|c| self.calls[&c].cancelled_at);
        if let Some(at) = cancelled.filter(|at| self.conns[&conn].asked_at > *at) {
            self.violations.push(format!(
                "{conn}: resumes stream {st}, whose request the client cancelled (the remote \
                 learned it at {}us, from the relay)",
                at.as_micros()
            ));
        }
        // Invariant 4: exactly `retry` after the relay learned the stream broke.
        let asked = self.conns[&conn].asked_at;
        let stream = &self.streams[&st];
        if let (Some(retry), Some(ended)) = (stream.relay_retry, stream.ended_at) {
            self.tally.timed_resumes += 1;
            let due = ended + Duration::from_millis(retry);
            if asked != due {
                self.violations.push(format!(
                    "{conn}: the GET resuming stream {st} (Last-Event-ID {last}) was asked for \
                     at {}us; the stream broke at {}us and advertised retry: {retry} ms, so it \
                     was due at {}us (invariant 4)",
                    asked.as_micros(),
                    ended.as_micros(),
                    due.as_micros()
                ));
            }
        }
        if let Some(old) = self.streams[&st].conn {
            // The relay resumes a stream it still holds: the remote drops the old connection.
            self.note(format!("stream {st} moves from {old} to {conn}"));
            self.out.push(Wire::Close {
                conn: old,
                reset: true,
            });
            self.drop_conn(old);
        }
        self.note(format!("resumes stream {st} after event {seq} on {conn}"));
        self.attach(st, conn, Some(seq));
        if self.streams[&st].call.is_none() {
            self.tick_later(s);
        }
    }

    // ---- HTTP+SSE ----

    fn legacy_get(&mut self, conn: UpId) {
        let name = format!("L{}", self.next + 1);
        let s = self.new_session(conn, name.clone());
        let chunked = self.rng.chance(self.faults.chunked);
        let sess = self.sessions.get_mut(&s).expect("made");
        sess.conn = Some(conn);
        sess.chunked = chunked;
        self.conns.get_mut(&conn).expect("open").busy = Busy::Legacy(s);
        let framing = if chunked {
            "Transfer-Encoding: chunked\r\n"
        } else {
            "Connection: close\r\n"
        };
        self.write(
            conn,
            format!("{SSE_HEAD}{framing}\r\n").into_bytes(),
            Vec::new(),
        );
        let text = format!("event: endpoint\ndata: /messages?sessionId={name}\n\n");
        self.legacy_put(s, text.into_bytes(), Vec::new());
    }

    fn legacy_put(&mut self, s: u32, text: Vec<u8>, marks: Vec<(usize, Mark)>) {
        let Some(conn) = self.sessions[&s].conn else {
            return;
        };
        let (bytes, marks) = chunk_if(self.sessions[&s].chunked, &text, &marks);
        self.write(conn, bytes, marks);
    }

    fn legacy_post(&mut self, conn: UpId, path: &str, body: &[u8]) {
        let name = path.split("sessionId=").nth(1).unwrap_or("");
        let msg: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                self.violation(format!("{conn}: a POST body that is not JSON ({e})"));
                return self.respond(conn, "400 Bad Request", "");
            }
        };
        let s = match self.session_named(Some(name)) {
            Some(s) if !self.sessions[&s].gone => s,
            _ => {
                self.delivered(&msg, name, false);
                return self.respond(conn, "404 Not Found", "");
            }
        };
        if self.sessions[&s].stalled {
            self.conns.get_mut(&conn).expect("open").busy = Busy::Stalled;
            return;
        }
        self.respond(conn, "202 Accepted", "");
        self.message(s, &msg, Sink::Legacy(s));
    }

    /// Writes a message on a legacy session's stream; a fault may cut the stream first.
    fn legacy_emit(&mut self, s: u32, msg: &Value, marker: Option<u64>) {
        let Some(conn) = self.sessions[&s].conn.filter(|_| !self.sessions[&s].gone) else {
            return;
        };
        let mut text = b"event: message\ndata: ".to_vec();
        text.extend_from_slice(msg.to_string().as_bytes());
        text.extend_from_slice(b"\n\n");
        let marks = marker
            .map(|m| vec![(text.len(), Mark::Message(m))])
            .unwrap_or_default();
        if self.cuts_now() {
            let (bytes, marks) = chunk_if(self.sessions[&s].chunked, &text, &marks);
            return self.cut(conn, &bytes, &marks, "(the legacy stream)");
        }
        self.legacy_put(s, text, marks);
    }

    // ---- TCP ----

    fn tcp_emit(&mut self, conn: UpId, msg: &Value, marker: Option<u64>) {
        if !self.conns.get(&conn).is_some_and(|c| c.open) {
            return;
        }
        let mut line = msg.to_string().into_bytes();
        line.push(b'\n');
        let marks = marker
            .map(|m| vec![(line.len(), Mark::Message(m))])
            .unwrap_or_default();
        if self.cuts_now() {
            return self.cut(conn, &line, &marks, "before a line");
        }
        self.write(conn, line, marks);
    }

    // ---- MCP ----

    /// A message for session `s` (legacy or TCP; Streamable HTTP requests come through
    /// [`Remote::call`]).
    fn message(&mut self, s: u32, msg: &Value, sink: Sink) {
        if self.sessions[&s].stalled || self.sessions[&s].gone {
            return;
        }
        if msg.get("id").is_some() && msg.get("method").is_some() {
            let name = self.sessions[&s].name.clone();
            self.delivered(msg, &name, true);
            self.new_call(s, msg, sink);
        } else {
            self.notification(s, msg);
        }
    }

    fn notification(&mut self, s: u32, msg: &Value) {
        let method = msg.get("method").and_then(Value::as_str);
        if method == Some("notifications/initialized") && !self.sessions[&s].initialized {
            // Messages of its own only once initialized (Streamable HTTP: on the GET stream,
            // which the relay opens after this).
            self.sessions.get_mut(&s).expect("known").initialized = true;
            if self.kind != Kind::Streamable {
                self.tick_later(s);
            }
        }
        if method != Some("notifications/cancelled") {
            return;
        }
        let Some(id) = msg.pointer("/params/requestId") else {
            return;
        };
        let found = self
            .calls
            .iter()
            .find(|(_, c)| c.session == s && c.id == *id && !c.cancelled)
            .map(|(k, _)| *k);
        if let Some(k) = found {
            self.note(format!("call {id} cancelled"));
            let call = self.calls.get_mut(&k).expect("found");
            call.cancelled = true;
            call.cancelled_at = Some(self.now);
            self.finish_call(k);
        }
    }

    fn new_call(&mut self, s: u32, msg: &Value, sink: Sink) -> u32 {
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        let client = client_id(msg);
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        let mut steps = VecDeque::new();
        let progress = msg.pointer("/params/_meta/progressToken").cloned();
        let result = match method {
            "initialize" => json!({
                "protocolVersion": msg.pointer("/params/protocolVersion").cloned()
                    .unwrap_or(json!("2025-06-18")),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "scripted", "version": "1"},
            }),
            "tools/call" => {
                let streams = !matches!(sink, Sink::Json(_));
                if streams && progress.is_some() {
                    for n in 0..self.rng.range(0, 3) {
                        steps.push_back(Step::Progress(n as u32 + 1));
                    }
                }
                if streams && self.rng.chance(self.faults.ask) {
                    let at = self.rng.range_usize(0, steps.len());
                    steps.insert(at, Step::Ask);
                }
                json!({"content": [{"type": "text", "text": format!("done {id}")}]})
            }
            "tools/list" => json!({"tools": [{"name": "work", "inputSchema": {"type": "object"}}]}),
            _ => json!({}),
        };
        steps.push_back(Step::Answer);
        let k = self.id();
        self.calls.insert(
            k,
            Call {
                session: s,
                id,
                client,
                progress,
                result,
                steps,
                sink,
                cancelled: false,
                cancelled_at: None,
            },
        );
        self.step_later(k, method == "tools/call", true);
        k
    }

    /// Schedules a call's next step: a tool call's steps take a while (its first one, now and
    /// then, long: the whole call stays within [`SLOWEST_CALL`]), other requests are quick.
    fn step_later(&mut self, call: u32, work: bool, first: bool) {
        let delay = if work && first && self.rng.chance(self.faults.slow) {
            self.ms(2000, SLOWEST_CALL.as_millis() as u64 / 2)
        } else if work {
            self.ms(0, 800)
        } else {
            self.ms(0, 60)
        };
        self.out.push(Wire::Later {
            delay,
            act: Act::Step(call),
        });
    }

    fn marker(&mut self, what: String, answers: Option<i64>) -> u64 {
        let m = self.next_marker;
        self.next_marker += 1;
        self.messages.insert(m, Sent { what, answers });
        m
    }

    fn step(&mut self, k: u32) {
        let Some(call) = self.calls.get(&k) else {
            return;
        };
        let sess = &self.sessions[&call.session];
        if call.cancelled || sess.stalled || sess.gone && self.kind != Kind::Streamable {
            return;
        }
        if sess.gone {
            // A forgotten session's work is dropped with it.
            return;
        }
        let Some(step) = self.calls.get_mut(&k).and_then(|c| c.steps.pop_front()) else {
            return;
        };
        let call = &self.calls[&k];
        let (id, client) = (call.id.clone(), call.client);
        let msg = match step {
            Step::Progress(n) => {
                let m = self.marker(format!("progress {n} of request {id}"), None);
                let token = self.calls[&k].progress.clone();
                (
                    json!({"jsonrpc": "2.0", "method": "notifications/progress",
                           "params": {"progressToken": token, "progress": n, "_m": m}}),
                    Some(m),
                )
            }
            Step::Ask => {
                let n = self.id();
                let m = self.marker(format!("sampling request srv-{n} of request {id}"), None);
                (
                    json!({"jsonrpc": "2.0", "id": format!("srv-{n}"),
                           "method": "sampling/createMessage",
                           "params": {"messages": [], "maxTokens": 5, "_m": m}}),
                    Some(m),
                )
            }
            Step::Answer => {
                let marker = client.map(|c| self.marker(format!("answer to request {c}"), Some(c)));
                let mut result = self.calls[&k].result.clone();
                if let Some(m) = marker {
                    result["_m"] = json!(m);
                }
                (
                    json!({"jsonrpc": "2.0", "id": id, "result": result}),
                    marker,
                )
            }
        };
        let last = self.calls[&k].steps.is_empty();
        self.send(k, &msg.0, msg.1);
        if last {
            self.finish_call(k);
        } else {
            self.step_later(k, true, false);
        }
    }

    /// Sends a message of call `k` where its answers go.
    fn send(&mut self, k: u32, msg: &Value, marker: Option<u64>) {
        match self.calls[&k].sink {
            Sink::Stream(st) => self.emit(st, msg, marker),
            Sink::Legacy(s) => self.legacy_emit(s, msg, marker),
            Sink::Tcp(conn) => self.tcp_emit(conn, msg, marker),
            Sink::Json(conn) => {
                if !self
                    .conns
                    .get(&conn)
                    .is_some_and(|c| c.open && c.busy == Busy::Json(k))
                {
                    return;
                }
                let body = msg.to_string();
                let sid = self.sessions[&self.calls[&k].session].name.clone();
                let text = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: {sid}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let marks = marker
                    .map(|m| vec![(text.len(), Mark::Message(m))])
                    .unwrap_or_default();
                if self.cuts_now() {
                    return self.cut(conn, text.as_bytes(), &marks, "before a JSON answer");
                }
                self.write(conn, text.into_bytes(), marks);
                self.conns.get_mut(&conn).expect("open").busy = Busy::Idle;
                self.pump(conn);
            }
        }
    }

    /// No more messages of call `k`: its stream's body ends after what it has; a cancelled
    /// JSON call is acknowledged without a message.
    fn finish_call(&mut self, k: u32) {
        match self.calls[&k].sink {
            Sink::Stream(st) => {
                let s = self.streams.get_mut(&st).expect("known");
                s.finished = true;
                if let Some(conn) = s.conn {
                    self.end_body(st, conn);
                }
            }
            Sink::Json(conn)
                if self.calls[&k].cancelled
                    && self
                        .conns
                        .get(&conn)
                        .is_some_and(|c| c.open && c.busy == Busy::Json(k)) =>
            {
                self.respond(conn, "202 Accepted", "");
                self.conns.get_mut(&conn).expect("open").busy = Busy::Idle;
                self.pump(conn);
            }
            _ => {}
        }
    }

    /// Messages of a session's own: on the GET stream, the legacy stream or the TCP line.
    fn tick_later(&mut self, s: u32) {
        let sess = self.sessions.get_mut(&s).expect("known");
        sess.generation += 1;
        let generation = sess.generation;
        let delay = self.ms(100, 2000);
        self.out.push(Wire::Later {
            delay,
            act: Act::Tick {
                session: s,
                generation,
            },
        });
    }

    fn tick(&mut self, s: u32, generation: u32) {
        let sess = &self.sessions[&s];
        if sess.gone || sess.stalled || sess.generation != generation || sess.ticks >= 25 {
            return;
        }
        let live = match self.kind {
            Kind::Streamable => sess.get.is_some_and(|g| self.streams[&g].conn.is_some()),
            _ => sess.conn.is_some_and(|c| self.conns[&c].open),
        };
        if !live {
            return;
        }
        self.sessions.get_mut(&s).expect("known").ticks += 1;
        let msg = if self.rng.chance(200) {
            let n = self.id();
            let m = self.marker(format!("roots request srv-{n}"), None);
            (
                json!({"jsonrpc": "2.0", "id": format!("srv-{n}"), "method": "roots/list",
                       "params": {"_m": m}}),
                m,
            )
        } else {
            let m = self.marker("log message".into(), None);
            (
                json!({"jsonrpc": "2.0", "method": "notifications/message",
                       "params": {"level": "info", "data": "tick", "_m": m}}),
                m,
            )
        };
        match self.kind {
            Kind::Streamable => {
                let g = self.sessions[&s].get.expect("live");
                self.emit(g, &msg.0, Some(msg.1));
            }
            Kind::Sse => self.legacy_emit(s, &msg.0, Some(msg.1)),
            Kind::Tcp => {
                let conn = self.sessions[&s].conn.expect("live");
                self.tcp_emit(conn, &msg.0, Some(msg.1));
            }
        }
        // Same generation: the chain goes on.
        let delay = self.ms(100, 2000);
        self.out.push(Wire::Later {
            delay,
            act: Act::Tick {
                session: s,
                generation,
            },
        });
    }

    fn newest_session(&self) -> Option<u32> {
        self.sessions
            .iter()
            .rev()
            .find(|(_, s)| !s.gone && !s.stalled)
            .map(|(k, _)| *k)
    }

    fn forget(&mut self) {
        let Some(s) = self.newest_session() else {
            return;
        };
        let drop_conns = self.rng.chance(500);
        self.note(format!(
            "forgets session {}{}",
            self.sessions[&s].name,
            if drop_conns {
                " and drops its streams"
            } else {
                ""
            }
        ));
        self.end_session(s);
        if self.kind == Kind::Sse || drop_conns {
            let conns: Vec<UpId> = self
                .conns
                .iter()
                .filter(|(k, c)| c.open && self.conn_session(**k, c) == Some(s))
                .map(|(k, _)| *k)
                .collect();
            for conn in conns {
                self.cut(conn, &[], &[], "(session forgotten)");
            }
        }
    }

    /// The session a connection works for now, if any.
    fn conn_session(&self, conn: UpId, c: &Conn) -> Option<u32> {
        match c.busy {
            Busy::Stream(st) => Some(self.streams[&st].session),
            Busy::Json(k) => Some(self.calls[&k].session),
            Busy::Legacy(s) => Some(s),
            _ => self.session_of_conn(conn),
        }
    }

    fn stall(&mut self) {
        let Some(s) = self.newest_session() else {
            return;
        };
        let sess = self.sessions.get_mut(&s).expect("known");
        sess.stalled = true;
        self.stalls.push(Stall {
            session: sess.name.clone(),
            incarnation: sess.incarnation,
            at: self.now,
        });
        let name = sess.name.clone();
        self.note(format!("session {name} stalls for good"));
    }
}

/// `text` in a chunk of its own (its marks moved along) when `chunked`.
fn chunk_if(chunked: bool, text: &[u8], marks: &[(usize, Mark)]) -> (Vec<u8>, Vec<(usize, Mark)>) {
    if !chunked {
        return (text.to_vec(), marks.to_vec());
    }
    let mut bytes = format!("{:x}\r\n", text.len()).into_bytes();
    let head = bytes.len();
    bytes.extend_from_slice(text);
    bytes.extend_from_slice(b"\r\n");
    let marks = marks.iter().map(|(at, m)| (at + head, m.clone())).collect();
    (bytes, marks)
}

fn header<'a>(hdrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hdrs.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A request the relay made itself (a probe, a replayed request).
fn relay_own(msg: &Value) -> bool {
    msg.get("id")
        .and_then(Value::as_str)
        .is_some_and(|id| id.trim_start_matches('_').starts_with("mcp-relay:"))
}

/// The id of a request the local client made (its ids are numbers; the relay's own are
/// strings).
pub fn client_id(msg: &Value) -> Option<i64> {
    msg.get("id").and_then(Value::as_i64)
}
