//! The remote server side: one incarnation of a session with a remote server.
//!
//! A session hands it messages (lines) and takes back what the remote said, like a child's
//! stdin and stdout. Underneath it keeps the connections the relay opened and speaks the
//! remote's transport:
//!
//! * TCP: one connection, lines both ways. Its bytes are framed by the session's own reader,
//!   exactly as a child's stdout is.
//! * Streamable HTTP: each message is a `POST` on a free keep-alive connection (at most
//!   `max_connections` of them); an answer comes as JSON or as an event stream, which is
//!   resumed with `GET` + `Last-Event-ID` after the remote's `retry:` delay if it breaks
//!   before the answer. `Mcp-Session-Id` and `MCP-Protocol-Version` are taken from the
//!   `initialize` exchange; after `notifications/initialized` a `GET` stream carries the
//!   remote's own messages (405: it has none). A stop `DELETE`s the session.
//! * HTTP+SSE (legacy): a `GET` event stream whose `endpoint` event names where to `POST`.
//!   With [`RemoteTransport::Auto`] a refused `initialize` POST (400, 404, 405 without a
//!   JSON-RPC body) falls back to it.
//!
//! It never delivers a message twice: what it gives back as *undelivered* (a `404` for a
//! forgotten session, a connection that never opened) provably did not reach the remote, and
//! a request whose fate is unknown (its connection broke) is answered with an error instead.

use super::wire::{self, Framing, HeadParse, ResponseHead, SseParser};
use super::{RemoteConfig, RemoteTransport, RemoteUrl, Scheme};
use crate::framing::LineFramer;
use crate::http::wire::{Dechunk, Dechunked};
use crate::message::{self, classify, codes, Kind, Message, RawId};
use crate::outbound::Outbound;
use crate::timer::Timer;
use crate::{ChildId, Endpoint, Output, UpId};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

/// The protocol revision assumed in `MCP-Protocol-Version` until `initialize` says otherwise.
const DEFAULT_VERSION: &str = "2025-03-26";
/// Reconnection delay for an event stream when the remote set none.
const DEFAULT_RETRY: Duration = Duration::from_secs(1);
/// The longest reconnection delay honoured (a remote asking for more gets this).
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Idle keep-alive connections are closed after this long, before a remote's own idle
/// timeout (Node's is 5 s) can race a request sent on them.
const IDLE_CLOSE: Duration = Duration::from_secs(4);
/// Attempts to reopen a `GET` stream that keeps failing, before doing without it.
const MAX_GET_FAILURES: u32 = 5;
/// How much of an error body is quoted back to the client.
const SNIPPET: usize = 200;

/// Why a remote stopped serving. `Display` gives the text after `mcp-relay: `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RemoteEnd {
    /// No connection could be made.
    Unreachable { url: String, error: String },
    /// A connection took longer than `--connect-timeout`.
    ConnectTimeout { url: String, after: Duration },
    /// The remote closed the connection (TCP) or its event stream (HTTP+SSE).
    Closed,
    /// The remote answered `404` for the session: it forgot it.
    SessionExpired,
    /// The remote refused what the transport needs (its event stream, say).
    Refused { status: u16, why: String },
    /// The remote spoke something the relay cannot read.
    Malformed(String),
    /// The relay stopped it (the session ended).
    Stopped,
}

impl RemoteEnd {
    pub(crate) fn is_clean(&self) -> bool {
        *self == RemoteEnd::Stopped
    }
}

impl fmt::Display for RemoteEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteEnd::Unreachable { url, error } => {
                write!(f, "could not reach the remote server at {url}: {error}")
            }
            RemoteEnd::ConnectTimeout { url, after } => write!(
                f,
                "the remote server at {url} did not accept a connection within {after:?} (--connect-timeout)"
            ),
            RemoteEnd::Closed => f.write_str("the remote server closed the connection"),
            RemoteEnd::SessionExpired => {
                f.write_str("the remote server forgot the session (HTTP 404)")
            }
            RemoteEnd::Refused { status, why } => {
                write!(f, "the remote server refused {why} (HTTP {status})")
            }
            RemoteEnd::Malformed(what) => write!(f, "the remote server sent {what}"),
            RemoteEnd::Stopped => f.write_str("the remote session was closed"),
        }
    }
}

/// A message the remote sent, for the session.
#[derive(Debug)]
pub(crate) enum Inbound {
    Line(Vec<u8>),
    /// A message over the limit, dropped; the request it answered, when known.
    Oversize {
        len: usize,
        id: Option<RawId>,
    },
}

/// A message that provably never reached the remote: the session holds it for the next one.
#[derive(Debug)]
pub(crate) struct Undelivered {
    pub(crate) line: Vec<u8>,
    pub(crate) id: Option<RawId>,
    pub(crate) method: Option<String>,
    /// When it was first given to a remote.
    pub(crate) since: Option<Instant>,
}

/// What a remote server side is held to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RemoteLimits {
    pub(crate) max_message_size: usize,
    pub(crate) max_buffered: usize,
    /// How long a stop may take (in-flight answers, then `DELETE`).
    pub(crate) grace: Duration,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// No connection has opened yet.
    Connecting,
    Up,
    /// Finishing what is in flight, then `DELETE`; finished at the deadline at the latest.
    Stopping {
        deadline: Option<Instant>,
    },
    Finished,
}

/// A remote server serving one session.
#[derive(Debug)]
pub(crate) struct RemoteServer {
    id: ChildId,
    url: RemoteUrl,
    config: RemoteConfig,
    limits: RemoteLimits,
    state: State,
    end: Option<RemoteEnd>,
    /// It came up since the session last asked.
    became_up: bool,
    link: Link,
    next_n: u32,
    paused: bool,
    inbox: VecDeque<Inbound>,
    inbox_bytes: usize,
    undelivered: Vec<Undelivered>,
}

#[derive(Debug)]
enum Link {
    Tcp(TcpLink),
    Http(HttpLink),
}

#[derive(Debug)]
struct TcpLink {
    conn: UpId,
    connected: bool,
    deadline: Option<Instant>,
    out: Outbound,
    /// Frames what the remote says; lent to the session like a child's stdout framer.
    framer: LineFramer,
    /// Lines staged before the connection opened (never sent if it fails).
    unsent: Vec<Undelivered>,
}

/// Which HTTP transport is spoken.
#[derive(Debug, PartialEq, Eq)]
enum Proto {
    /// Streamable HTTP, or (auto) not known until the `initialize` POST is answered.
    Streamable { probing: bool },
    /// HTTP+SSE; the `POST` path once the `endpoint` event named it.
    Legacy { post_path: Option<String> },
}

#[derive(Debug)]
struct HttpLink {
    proto: Proto,
    conns: BTreeMap<u32, Conn>,
    queue: VecDeque<Pending>,
    queue_bytes: usize,
    session_id: Option<String>,
    version: Option<String>,
    /// An `initialize` is out: what follows waits for its answer (and the session id).
    init_out: bool,
    get: GetStream,
    /// Event streams of POSTs that broke before their answer: resumed with `GET`.
    resumes: Vec<Resume>,
    /// The legacy stream or the `DELETE` went out.
    delete_sent: bool,
    ever_connected: bool,
    /// The `GET` stream's last event id and the reconnection delay the remote asked for.
    get_last_id: Option<String>,
    get_retry: Option<Duration>,
}

#[derive(Debug, PartialEq, Eq)]
enum GetStream {
    /// Not wanted yet (the session is not initialized).
    Off,
    /// Open it when a connection allows.
    Wanted {
        at: Instant,
        failures: u32,
    },
    Open {
        n: u32,
        failures: u32,
    },
    /// The remote has none (405), or it kept failing.
    None,
}

#[derive(Debug)]
struct Resume {
    last_id: String,
    /// The reconnection delay the remote set on this stream (it holds for every attempt).
    retry: Option<Duration>,
    at: Instant,
    /// The requests still waiting for their answer on that stream.
    waiting: Vec<RawId>,
    /// The connection it is being resumed on.
    on: Option<u32>,
}

#[derive(Debug, Clone)]
struct Pending {
    line: Vec<u8>,
    id: Option<RawId>,
    method: Option<String>,
    since: Option<Instant>,
    /// The relay's liveness probe: it waits neither for busy connections nor for an
    /// initialize's answer, since it is what finds a remote that never answers.
    probe: bool,
    /// The client cancelled it: its stream is not resumed.
    cancelled: bool,
}

impl Pending {
    fn undelivered(self) -> Undelivered {
        Undelivered {
            line: self.line,
            id: self.id,
            method: self.method,
            since: self.since,
        }
    }
    fn is_initialize(&self) -> bool {
        self.id.is_some() && self.method.as_deref() == Some("initialize")
    }
}

#[derive(Debug)]
struct Conn {
    up: UpId,
    connected: bool,
    out: Outbound,
    rx: Vec<u8>,
    /// Connect deadline while connecting; idle close while idle.
    deadline: Option<Instant>,
    job: Option<Job>,
    /// Something came back on this connection (so a request sent on it was read).
    got_bytes: bool,
    /// The response said the connection closes after it.
    closing: bool,
}

#[derive(Debug)]
enum Purpose {
    Post(Pending),
    /// The Streamable HTTP `GET` stream.
    Get,
    /// A POST's event stream resumed (index into `resumes` is found by `on`).
    Resume,
    /// The legacy transport's event stream.
    LegacyGet,
    Delete,
}

#[derive(Debug)]
struct Job {
    purpose: Purpose,
    body: Body,
    /// The POSTed request was answered (on its event stream).
    answered: bool,
}

#[derive(Debug)]
enum Body {
    Head,
    Reading {
        status: u16,
        framing: Framing,
        left: usize,
        dechunk: Option<Dechunk>,
        content: Box<Content>,
    },
}

#[derive(Debug)]
enum Content {
    Json { buf: Vec<u8>, len: usize },
    Events(SseParser),
    Discard { snippet: Vec<u8> },
}

/// What a finished (or broken) exchange left.
struct Done {
    purpose: Purpose,
    status: u16,
    content: Content,
    answered: bool,
    /// The body ended as framed (not cut off).
    complete: bool,
}

impl RemoteServer {
    /// A remote reached at `config.urls[index % n]`; the first connection is asked for at
    /// once.
    pub(crate) fn connect(
        id: ChildId,
        config: &RemoteConfig,
        index: usize,
        limits: RemoteLimits,
        out: &mut VecDeque<Output>,
    ) -> Self {
        let url = config.urls[index % config.urls.len().max(1)].clone();
        let tcp = url.scheme == Scheme::Tcp || config.transport == RemoteTransport::Tcp;
        let mut server = RemoteServer {
            id,
            config: config.clone(),
            limits,
            state: State::Connecting,
            end: None,
            became_up: false,
            link: Link::Http(HttpLink {
                proto: match config.transport {
                    RemoteTransport::Sse => Proto::Legacy { post_path: None },
                    RemoteTransport::Auto => Proto::Streamable { probing: true },
                    _ => Proto::Streamable { probing: false },
                },
                conns: BTreeMap::new(),
                queue: VecDeque::new(),
                queue_bytes: 0,
                session_id: None,
                version: None,
                init_out: false,
                get: GetStream::Off,
                resumes: Vec::new(),
                delete_sent: false,
                ever_connected: false,
                get_last_id: None,
                get_retry: None,
            }),
            url,
            next_n: 0,
            paused: false,
            inbox: VecDeque::new(),
            inbox_bytes: 0,
            undelivered: Vec::new(),
        };
        if tcp {
            let conn = server.new_up();
            out.push_back(Output::Connect {
                conn,
                host: server.url.host.clone(),
                port: server.url.port,
            });
            server.link = Link::Tcp(TcpLink {
                conn,
                connected: false,
                deadline: None,
                out: Outbound::new(Endpoint::Upstream(conn), false, limits.max_buffered),
                framer: LineFramer::new(limits.max_message_size),
                unsent: Vec::new(),
            });
        } else if let Link::Http(h) = &mut server.link {
            let n = server.next_n;
            server.next_n += 1;
            let mut c = Conn::new(UpId { server: id, n }, limits.max_buffered);
            if matches!(h.proto, Proto::Streamable { .. }) {
                // The first connection opens at once: it tells whether the remote is there.
                out.push_back(Output::Connect {
                    conn: c.up,
                    host: server.url.host.clone(),
                    port: server.url.port,
                });
                h.conns.insert(n, c);
            } else {
                let get = server_request(
                    &server.url,
                    &server.config,
                    "GET",
                    None,
                    &[("Accept", "text/event-stream")],
                    h,
                    &[],
                );
                c.out.stage(&get);
                c.job = Some(Job::new(Purpose::LegacyGet));
                out.push_back(Output::Connect {
                    conn: c.up,
                    host: server.url.host.clone(),
                    port: server.url.port,
                });
                h.conns.insert(n, c);
            }
        }
        server
    }

    fn new_up(&mut self) -> UpId {
        let n = self.next_n;
        self.next_n += 1;
        UpId { server: self.id, n }
    }

    // ---- getters ----

    pub(crate) fn id(&self) -> ChildId {
        self.id
    }

    pub(crate) fn url(&self) -> &RemoteUrl {
        &self.url
    }

    /// The transport spoken, as far as it is known.
    pub(crate) fn transport(&self) -> &'static str {
        match &self.link {
            Link::Tcp(_) => "tcp",
            Link::Http(h) => match h.proto {
                Proto::Streamable { probing: true } => "streamable-http (probing)",
                Proto::Streamable { probing: false } => "streamable-http",
                Proto::Legacy { .. } => "sse",
            },
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.state == State::Up
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    pub(crate) fn ended(&self) -> Option<&RemoteEnd> {
        self.end.as_ref().filter(|_| self.is_finished())
    }

    /// Lines are framed by the session's reader (TCP), not handed out as [`Inbound`]s.
    pub(crate) fn frames_lines(&self) -> bool {
        matches!(self.link, Link::Tcp(_))
    }

    pub(crate) fn load(&self) -> usize {
        match &self.link {
            Link::Tcp(t) => t.out.load(),
            Link::Http(h) => h.queue_bytes + h.conns.values().map(|c| c.out.load()).sum::<usize>(),
        }
    }

    pub(crate) fn buffered(&self) -> usize {
        self.load()
            + self.inbox_bytes
            + match &self.link {
                Link::Tcp(t) => t.framer.buffered(),
                Link::Http(h) => h.conns.values().map(Conn::buffered).sum(),
            }
    }

    pub(crate) fn is_loaded(&self) -> bool {
        self.load() > self.limits.max_buffered
    }

    /// What was handed to connections is written, no probe waits for one, and no broken
    /// stream waits out its `retry:`: the remote can answer a probe (messages queued behind
    /// busy connections are the remote's to work through; a stream not resumed yet is the
    /// relay's own wait).
    pub(crate) fn can_answer(&self) -> bool {
        match &self.link {
            Link::Tcp(t) => t.out.load() == 0,
            Link::Http(h) => {
                h.conns.values().all(|c| c.out.load() == 0)
                    && !h.queue.iter().any(|p| p.probe)
                    && h.resumes.iter().all(|r| r.on.is_some())
            }
        }
    }

    pub(crate) fn accepts(&self) -> bool {
        matches!(self.state, State::Connecting | State::Up)
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused
    }

    pub(crate) fn has_backlog(&self) -> bool {
        match &self.link {
            Link::Tcp(t) => t.framer.has_backlog(),
            Link::Http(_) => !self.inbox.is_empty(),
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        if self.is_finished() {
            return None;
        }
        let mut all: Vec<(Instant, Timer)> = Vec::new();
        if let State::Stopping {
            deadline: Some(d), ..
        } = self.state
        {
            all.push((d, Timer::RemoteStop));
        }
        match &self.link {
            Link::Tcp(t) => all.extend(t.deadline.map(|d| (d, Timer::RemoteConnect))),
            Link::Http(h) => {
                for c in h.conns.values() {
                    if let Some(d) = c.deadline {
                        let why = if c.connected {
                            Timer::RemoteIdle
                        } else {
                            Timer::RemoteConnect
                        };
                        all.push((d, why));
                    }
                }
                // Streams are (re)opened only while it is up (see `dispatch`).
                let up = self.state == State::Up;
                if let (GetStream::Wanted { at, .. }, true) = (&h.get, up) {
                    all.push((*at, Timer::RemoteRetry));
                }
                all.extend(
                    h.resumes
                        .iter()
                        .filter(|r| r.on.is_none() && up)
                        .map(|r| (r.at, Timer::RemoteRetry)),
                );
            }
        }
        all.into_iter().min_by_key(|(d, _)| *d)
    }

    /// It came up (its first connection opened) since last asked.
    pub(crate) fn take_up(&mut self) -> bool {
        std::mem::take(&mut self.became_up)
    }

    /// The next message it sent, for the session.
    pub(crate) fn next_inbound(&mut self) -> Option<Inbound> {
        let m = self.inbox.pop_front()?;
        self.inbox_bytes -= match &m {
            Inbound::Line(l) => l.len(),
            Inbound::Oversize { .. } => 0,
        };
        Some(m)
    }

    /// What provably never reached it, once it is finished.
    pub(crate) fn take_undelivered(&mut self) -> Vec<Undelivered> {
        std::mem::take(&mut self.undelivered)
    }

    /// The framer of a TCP remote's lines, lent to the session.
    pub(crate) fn framer_mut(&mut self) -> Option<&mut LineFramer> {
        match &mut self.link {
            Link::Tcp(t) => Some(&mut t.framer),
            Link::Http(_) => None,
        }
    }

    // ---- mutators ----

    pub(crate) fn stage_line(&mut self, line: &[u8]) {
        self.queue_line(line, false);
    }

    /// The relay's liveness probe: it goes first.
    pub(crate) fn stage_probe(&mut self, line: &[u8]) {
        self.queue_line(line, true);
    }

    fn queue_line(&mut self, line: &[u8], probe: bool) {
        if !self.accepts() {
            return;
        }
        let (id, method, cancels) = match classify(line) {
            Ok(Message::Single(e)) => (
                (e.kind == Kind::Request)
                    .then(|| e.id.map(RawId::from_raw))
                    .flatten(),
                e.method.as_deref().map(str::to_owned),
                (e.method.as_deref() == Some("notifications/cancelled"))
                    .then(|| message::cancelled_request_id(e.params))
                    .flatten(),
            ),
            _ => (None, None, None),
        };
        if let (Some(cancelled), Link::Http(h)) = (&cancels, &mut self.link) {
            // No answer will come for it: its broken stream is not resumed for it (nor will
            // be, if it breaks later).
            h.resumes.retain_mut(|r| {
                r.waiting.retain(|w| w != cancelled);
                !r.waiting.is_empty() || r.on.is_some()
            });
            let posts = h.conns.values_mut().filter_map(|c| match &mut c.job {
                Some(Job {
                    purpose: Purpose::Post(p),
                    ..
                }) => Some(p),
                _ => None,
            });
            for p in posts.chain(h.queue.iter_mut()) {
                if p.id.as_ref() == Some(cancelled) {
                    p.cancelled = true;
                }
            }
        }
        let p = Pending {
            line: line.to_vec(),
            id,
            method,
            since: None,
            probe,
            cancelled: false,
        };
        match &mut self.link {
            Link::Tcp(t) => {
                if !t.connected {
                    t.unsent.push(p.clone().undelivered());
                }
                t.out.stage_line(line);
            }
            Link::Http(h) => {
                h.queue_bytes += p.line.len();
                if p.probe {
                    h.queue.push_front(p);
                } else {
                    h.queue.push_back(p);
                }
            }
        }
    }

    /// Bytes of whole lines (what a session held during a restart).
    pub(crate) fn stage(&mut self, lines: &[u8]) {
        for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            self.stage_line(line);
        }
    }

    pub(crate) fn flush(&mut self, out: &mut VecDeque<Output>) {
        match &mut self.link {
            Link::Tcp(t) => t.out.flush(out),
            Link::Http(h) => h.conns.values_mut().for_each(|c| c.out.flush(out)),
        }
    }

    /// After every event: hand queued messages to connections (opening them as allowed),
    /// arm deadlines, and move a stop along.
    pub(crate) fn settle(&mut self, now: Instant, out: &mut VecDeque<Output>) {
        if self.is_finished() {
            return;
        }
        if let State::Stopping { deadline } = &mut self.state {
            if deadline.is_none() {
                *deadline = Some(now + self.limits.grace);
            }
        }
        let timeout = self.config.connect_timeout;
        match &mut self.link {
            Link::Tcp(t) => {
                if !t.connected && t.deadline.is_none() {
                    t.deadline = Some(now + timeout);
                }
                for u in &mut t.unsent {
                    u.since.get_or_insert(now);
                }
                if self.state != State::Connecting && t.out.is_finished() && t.connected {
                    // Closed after a stop: nothing more will come that matters.
                }
            }
            Link::Http(_) => self.dispatch(now, out),
        }
        if matches!(self.state, State::Stopping { .. }) {
            self.advance_stop(now, out);
        }
        self.flush(out);
    }

    /// Stops reading it (or reads it again); true if that changed what the driver does.
    pub(crate) fn pause_reading(&mut self, paused: bool, out: &mut VecDeque<Output>) -> bool {
        if self.is_finished() || paused == self.paused {
            return false;
        }
        self.paused = paused;
        let ups: Vec<UpId> = match &self.link {
            // Not once the relay closed it (a stop): the driver has it no more.
            Link::Tcp(t) => (t.connected && !t.out.is_finished())
                .then_some(t.conn)
                .into_iter()
                .collect(),
            Link::Http(h) => h
                .conns
                .values()
                .filter(|c| c.connected)
                .map(|c| c.up)
                .collect(),
        };
        for up in ups {
            let endpoint = Endpoint::Upstream(up);
            out.push_back(if paused {
                Output::Pause { endpoint }
            } else {
                Output::Resume { endpoint }
            });
        }
        true
    }

    /// Graceful stop: what is in flight may still be answered (within the grace), then the
    /// session is deleted and the connections closed.
    pub(crate) fn stop(&mut self, out: &mut VecDeque<Output>) {
        match self.state {
            State::Connecting => {
                self.cancel(out);
            }
            State::Up => {
                self.state = State::Stopping { deadline: None };
                if let Link::Tcp(t) = &mut self.link {
                    t.out.close_when_flushed(out);
                }
            }
            _ => {}
        }
    }

    /// Not wanted any more: if no connection opened yet, it never will; false once one did.
    pub(crate) fn cancel(&mut self, out: &mut VecDeque<Output>) -> bool {
        if self.state != State::Connecting {
            return false;
        }
        self.close_all(out);
        self.finish(RemoteEnd::Stopped);
        true
    }

    /// Closes everything at once (shutdown, or found hung).
    pub(crate) fn kill(&mut self, out: &mut VecDeque<Output>) {
        if !self.is_finished() {
            self.close_all(out);
            self.finish(RemoteEnd::Stopped);
        }
        // What it said and the session has not taken is dropped (it was found hung, or the
        // relay stops at once).
        self.inbox.clear();
        self.inbox_bytes = 0;
        if let Link::Tcp(t) = &mut self.link {
            t.framer = LineFramer::new(self.limits.max_message_size);
        }
    }

    fn close_all(&mut self, out: &mut VecDeque<Output>) {
        match &mut self.link {
            Link::Tcp(t) => {
                if !t.out.is_finished() {
                    out.push_back(Output::Close {
                        endpoint: Endpoint::Upstream(t.conn),
                    });
                }
                t.out.set_gone();
            }
            Link::Http(h) => {
                for (_, mut c) in std::mem::take(&mut h.conns) {
                    c.close(out);
                }
            }
        }
    }

    fn finish(&mut self, why: RemoteEnd) {
        if self.is_finished() {
            return;
        }
        self.state = State::Finished;
        self.end = Some(why);
        // What it sent and the relay read still goes to the client (see
        // `ServerSide::is_finished`).
        if let Link::Tcp(t) = &mut self.link {
            t.out.set_gone();
        }
    }

    /// Ends it: what never went out is kept for the next one.
    fn fail(&mut self, why: RemoteEnd, out: &mut VecDeque<Output>) {
        if self.is_finished() {
            return;
        }
        match &mut self.link {
            Link::Tcp(t) => {
                if !t.connected {
                    self.undelivered.append(&mut t.unsent);
                }
            }
            Link::Http(h) => {
                for (_, c) in h.conns.iter_mut() {
                    // A POST whose connection never opened never left.
                    if !c.connected {
                        if let Some(Job {
                            purpose: Purpose::Post(p),
                            ..
                        }) = c.job.take()
                        {
                            self.undelivered.push(p.undelivered());
                        }
                    }
                }
                self.undelivered
                    .extend(h.queue.drain(..).map(Pending::undelivered));
                h.queue_bytes = 0;
            }
        }
        // What was still in flight on open connections is answered by the session.
        self.close_all(out);
        self.finish(why);
    }

    // ---- handle_* ----

    pub(crate) fn connected(&mut self, up: UpId, now: Instant, out: &mut VecDeque<Output>) {
        let idle = now + IDLE_CLOSE;
        match &mut self.link {
            Link::Tcp(t) if t.conn == up && !t.connected => {
                t.connected = true;
                t.deadline = None;
                t.unsent.clear();
                t.out.open(out);
            }
            Link::Http(h) => {
                let Some(c) = h.conns.get_mut(&up.n) else {
                    return;
                };
                c.connected = true;
                h.ever_connected = true;
                c.deadline = c.job.is_none().then_some(idle);
                c.out.open(out);
            }
            Link::Tcp(_) => return,
        }
        if self.state == State::Connecting {
            self.state = State::Up;
            self.became_up = true;
            if self.paused {
                out.push_back(Output::Pause {
                    endpoint: Endpoint::Upstream(up),
                });
            }
        } else if self.paused {
            out.push_back(Output::Pause {
                endpoint: Endpoint::Upstream(up),
            });
        }
    }

    pub(crate) fn connect_failed(&mut self, up: UpId, error: &str, out: &mut VecDeque<Output>) {
        let ours = match &mut self.link {
            Link::Tcp(t) => t.conn == up,
            Link::Http(h) => h.conns.contains_key(&up.n),
        };
        if ours {
            // The driver expects nothing more about it.
            match &mut self.link {
                Link::Http(h) => {
                    if let Some(c) = h.conns.get_mut(&up.n) {
                        c.out.set_gone();
                    }
                }
                Link::Tcp(t) => t.out.set_gone(),
            }
            let why = RemoteEnd::Unreachable {
                url: self.url.to_string(),
                error: error.to_owned(),
            };
            self.fail(why, out);
        }
    }

    pub(crate) fn written(&mut self, up: UpId, n: usize, out: &mut VecDeque<Output>) {
        match &mut self.link {
            Link::Tcp(t) if t.conn == up => t.out.written(n, out),
            Link::Http(h) => {
                if let Some(c) = h.conns.get_mut(&up.n) {
                    c.out.written(n, out);
                }
            }
            Link::Tcp(_) => {}
        }
    }

    /// Bytes from one of its connections (HTTP; a TCP remote's go to the session's reader).
    pub(crate) fn data(&mut self, up: UpId, data: &[u8], now: Instant, out: &mut VecDeque<Output>) {
        let Link::Http(h) = &mut self.link else {
            return;
        };
        let Some(c) = h.conns.get_mut(&up.n) else {
            return;
        };
        if c.job.is_none() {
            // Bytes nobody asked for: the connection cannot be trusted any more.
            log::debug!("{up}: unexpected bytes from the remote on an idle connection");
            if let Some(mut c) = h.conns.remove(&up.n) {
                c.close(out);
            }
            return;
        }
        c.got_bytes = true;
        c.rx.extend_from_slice(data);
        self.process(up.n, now, out);
    }

    /// One of its connections reached end of file.
    pub(crate) fn eof(&mut self, up: UpId, now: Instant, out: &mut VecDeque<Output>) {
        match &mut self.link {
            Link::Tcp(t) if t.conn == up => {
                let why = if matches!(self.state, State::Stopping { .. }) {
                    RemoteEnd::Stopped
                } else {
                    RemoteEnd::Closed
                };
                // The remote closed its side; the driver still holds the socket until told.
                self.close_all(out);
                self.finish(why);
            }
            Link::Http(_) => self.conn_lost(up.n, None, now, out),
            Link::Tcp(_) => {}
        }
    }

    /// One of its connections failed.
    pub(crate) fn broken(
        &mut self,
        up: UpId,
        reason: &str,
        now: Instant,
        out: &mut VecDeque<Output>,
    ) {
        match &mut self.link {
            Link::Tcp(t) if t.conn == up => {
                t.out.set_gone();
                let why = if matches!(self.state, State::Stopping { .. }) {
                    RemoteEnd::Stopped
                } else {
                    RemoteEnd::Unreachable {
                        url: self.url.to_string(),
                        error: reason.to_owned(),
                    }
                };
                self.close_all(out);
                self.finish(why);
            }
            Link::Http(h) => {
                if let Some(c) = h.conns.get_mut(&up.n) {
                    c.out.set_gone();
                }
                self.conn_lost(up.n, Some(reason), now, out)
            }
            Link::Tcp(_) => {}
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, out: &mut VecDeque<Output>) {
        if self.is_finished() {
            return;
        }
        if let State::Stopping {
            deadline: Some(d), ..
        } = self.state
        {
            if d <= now {
                self.close_all(out);
                self.finish(RemoteEnd::Stopped);
                return;
            }
        }
        let after = self.config.connect_timeout;
        let url = self.url.to_string();
        match &mut self.link {
            Link::Tcp(t) => {
                if t.deadline.is_some_and(|d| d <= now) {
                    t.deadline = None;
                    self.fail(RemoteEnd::ConnectTimeout { url, after }, out);
                }
            }
            Link::Http(h) => {
                let due: Vec<(u32, bool)> = h
                    .conns
                    .iter()
                    .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
                    .map(|(n, c)| (*n, c.connected))
                    .collect();
                for (n, connected) in due {
                    if !connected {
                        return self.fail(RemoteEnd::ConnectTimeout { url, after }, out);
                    }
                    if let Some(mut c) = h.conns.remove(&n) {
                        c.close(out);
                    }
                }
                self.dispatch(now, out);
            }
        }
    }

    // ---- HTTP ----

    /// Hands queued messages, the `GET` stream and due resumptions to connections.
    fn dispatch(&mut self, now: Instant, out: &mut VecDeque<Output>) {
        let limits = self.limits;
        let max = self.config.max_connections;
        let Link::Http(h) = &mut self.link else {
            return;
        };
        for p in h.queue.iter_mut() {
            p.since.get_or_insert(now);
        }
        if self.state == State::Finished {
            return;
        }
        while let Some(front) = h.queue.front() {
            // What follows an initialize waits for its answer (and the session id it brings);
            // the probe does not: it may find a remote that never answers.
            if h.init_out && !front.probe {
                break;
            }
            if let Proto::Legacy { post_path: None } = h.proto {
                break;
            }
            let is_init = front.is_initialize();
            let Some(n) = h.free_conn(max) else {
                // The probe gets a connection of its own: a remote that holds every
                // connection with calls it does not answer must still be probed.
                if h.post_conns() >= max && !front.probe {
                    break;
                }
                let n = self.next_n;
                self.next_n += 1;
                let c = Conn::new(UpId { server: self.id, n }, limits.max_buffered);
                out.push_back(Output::Connect {
                    conn: c.up,
                    host: self.url.host.clone(),
                    port: self.url.port,
                });
                h.conns.insert(n, c);
                continue;
            };
            let Some(p) = h.queue.pop_front() else { break };
            h.queue_bytes -= p.line.len();
            if is_init {
                h.init_out = true;
                // A new initialize opens a new session: it goes without the old one's id
                // (a server does not initialize a session twice).
                h.session_id = None;
            }
            let path = match &h.proto {
                Proto::Legacy {
                    post_path: Some(path),
                } => path.clone(),
                _ => self.url.path.clone(),
            };
            let extra = [
                ("Content-Type", "application/json"),
                ("Accept", "application/json, text/event-stream"),
            ];
            let bytes = server_request(
                &self.url,
                &self.config,
                "POST",
                Some(&path),
                &extra,
                h,
                &p.line,
            );
            if let Some(c) = h.conns.get_mut(&n) {
                c.out.stage(&bytes);
                c.job = Some(Job::new(Purpose::Post(p)));
                if c.connected {
                    c.deadline = None;
                }
            }
        }
        // Connections still connecting get their deadline.
        for c in h.conns.values_mut() {
            if !c.connected && c.deadline.is_none() {
                c.deadline = Some(now + self.config.connect_timeout);
            }
        }
        if self.state != State::Up {
            return;
        }
        // The GET stream.
        if let GetStream::Wanted { at, failures } = h.get {
            if at <= now {
                let n = self.next_n;
                self.next_n += 1;
                let mut c = Conn::new(UpId { server: self.id, n }, limits.max_buffered);
                let last = h.get_last_id.clone();
                let mut extra = vec![("Accept", "text/event-stream")];
                if let Some(last) = &last {
                    extra.push(("Last-Event-ID", last));
                }
                let bytes = server_request(&self.url, &self.config, "GET", None, &extra, h, &[]);
                c.out.stage(&bytes);
                c.job = Some(Job::new(Purpose::Get));
                c.deadline = Some(now + self.config.connect_timeout);
                out.push_back(Output::Connect {
                    conn: c.up,
                    host: self.url.host.clone(),
                    port: self.url.port,
                });
                h.conns.insert(n, c);
                h.get = GetStream::Open { n, failures };
            }
        }
        // Due resumptions of POST streams.
        for i in 0..h.resumes.len() {
            if h.resumes[i].on.is_some() || h.resumes[i].at > now {
                continue;
            }
            let n = self.next_n;
            self.next_n += 1;
            let mut c = Conn::new(UpId { server: self.id, n }, limits.max_buffered);
            let last = h.resumes[i].last_id.clone();
            let extra = [("Accept", "text/event-stream"), ("Last-Event-ID", &last)];
            let bytes = server_request(&self.url, &self.config, "GET", None, &extra, h, &[]);
            c.out.stage(&bytes);
            c.job = Some(Job::new(Purpose::Resume));
            c.deadline = Some(now + self.config.connect_timeout);
            out.push_back(Output::Connect {
                conn: c.up,
                host: self.url.host.clone(),
                port: self.url.port,
            });
            h.conns.insert(n, c);
            h.resumes[i].on = Some(n);
        }
    }

    /// Reads what arrived on connection `n`: heads, bodies, events.
    fn process(&mut self, n: u32, now: Instant, out: &mut VecDeque<Output>) {
        let max = self.limits.max_message_size;
        loop {
            let Link::Http(h) = &mut self.link else {
                return;
            };
            let Some(c) = h.conns.get_mut(&n) else { return };
            let Some(job) = c.job.as_mut() else { return };
            match &mut job.body {
                Body::Head => {
                    let (head, len) = match wire::parse_head(&c.rx) {
                        HeadParse::Partial => return,
                        HeadParse::Error(e) => {
                            return self.protocol_error(n, &e, out);
                        }
                        HeadParse::Complete(head, len) => (head, len),
                    };
                    c.rx.drain(..len);
                    if head.status < 200 {
                        continue;
                    }
                    let framing = match wire::framing(&head, false) {
                        Ok(f) => f,
                        Err(e) => return self.protocol_error(n, &e, out),
                    };
                    c.closing = head.close;
                    let content = self.content_for(n, &head, max);
                    let Link::Http(h) = &mut self.link else {
                        return;
                    };
                    let Some(c) = h.conns.get_mut(&n) else { return };
                    let Some(job) = c.job.as_mut() else { return };
                    job.body = Body::Reading {
                        status: head.status,
                        framing,
                        left: match framing {
                            Framing::Length(l) => l,
                            _ => 0,
                        },
                        dechunk: (framing == Framing::Chunked).then(Dechunk::default),
                        content: Box::new(content),
                    };
                    if head.status == 404 && h.session_id.is_some() {
                        // Noted now: the session is gone, whatever the body says.
                    }
                }
                Body::Reading {
                    framing,
                    left,
                    dechunk,
                    content,
                    ..
                } => {
                    let mut events: Vec<Inbound> = Vec::new();
                    let mut complete = false;
                    // What is left of `rx` cannot be decoded before more bytes come.
                    let mut starved = false;
                    match framing {
                        Framing::Length(_) => {
                            let take = (*left).min(c.rx.len());
                            feed(content, &c.rx[..take], max, &mut events);
                            c.rx.drain(..take);
                            *left -= take;
                            complete = *left == 0;
                        }
                        Framing::UntilClose => {
                            feed(content, &c.rx, max, &mut events);
                            c.rx.clear();
                        }
                        Framing::Chunked => {
                            let mut body = Vec::new();
                            let Some(d) = dechunk.as_mut() else { return };
                            match d.feed(&c.rx, &mut body) {
                                Dechunked::More(used) => {
                                    c.rx.drain(..used);
                                    starved = true;
                                }
                                Dechunked::Done(used) => {
                                    c.rx.drain(..used);
                                    complete = true;
                                }
                                Dechunked::Error => {
                                    return self.protocol_error(n, "a malformed chunked body", out)
                                }
                            }
                            feed(content, &body, max, &mut events);
                        }
                    }
                    let answered_id = match &job.purpose {
                        Purpose::Post(p) => p.id.clone(),
                        _ => None,
                    };
                    let mut endpoint = None;
                    for e in events {
                        match e {
                            Inbound::Line(line) if line.starts_with(b"\x00endpoint ") => {
                                endpoint = Some(line[10..].to_vec());
                            }
                            Inbound::Line(line) => {
                                if let Some(id) = &answered_id {
                                    if answers(&line, id) {
                                        job.answered = true;
                                    }
                                }
                                h.resumes.retain_mut(|r| {
                                    r.waiting.retain(|w| !answers(&line, w));
                                    !r.waiting.is_empty() || r.on.is_some()
                                });
                                self.inbox_bytes += line.len();
                                self.inbox.push_back(Inbound::Line(line));
                            }
                            other => self.inbox.push_back(other),
                        }
                    }
                    if let Some(path) = endpoint {
                        self.legacy_endpoint(&path, out);
                    }
                    if complete {
                        self.exchange_done(n, true, now, out);
                        continue;
                    }
                    let Link::Http(h) = &self.link else { return };
                    if starved || h.conns.get(&n).is_none_or(|c| c.rx.is_empty()) {
                        return;
                    }
                }
            }
        }
    }

    /// What to do with a response body.
    fn content_for(&mut self, n: u32, head: &ResponseHead, max: usize) -> Content {
        let Link::Http(h) = &mut self.link else {
            return Content::Discard {
                snippet: Vec::new(),
            };
        };
        let media = head.media_type();
        let Some(job) = h.conns.get(&n).and_then(|c| c.job.as_ref()) else {
            return Content::Discard {
                snippet: Vec::new(),
            };
        };
        let ok = (200..300).contains(&head.status);
        match &job.purpose {
            Purpose::Post(p) => {
                if p.is_initialize() && ok {
                    if let Some(sid) = head.header("mcp-session-id") {
                        if is_visible_ascii(sid) {
                            h.session_id = Some(sid.to_owned());
                        }
                    }
                    if let Proto::Streamable { probing } = &mut h.proto {
                        *probing = false;
                    }
                }
                if ok && media == "text/event-stream" {
                    Content::Events(SseParser::new(max))
                } else if media == "application/json" || (!ok && head.status != 404) {
                    Content::Json {
                        buf: Vec::new(),
                        len: 0,
                    }
                } else {
                    Content::Discard {
                        snippet: Vec::new(),
                    }
                }
            }
            Purpose::Get | Purpose::Resume | Purpose::LegacyGet
                if ok && media == "text/event-stream" =>
            {
                Content::Events(SseParser::new(max))
            }
            _ => Content::Discard {
                snippet: Vec::new(),
            },
        }
    }

    /// An exchange on connection `n` ended: as framed (`complete`), or cut off.
    fn exchange_done(&mut self, n: u32, complete: bool, now: Instant, out: &mut VecDeque<Output>) {
        let Link::Http(h) = &mut self.link else {
            return;
        };
        let Some(c) = h.conns.get_mut(&n) else { return };
        let Some(job) = c.job.take() else { return };
        let (status, content) = match job.body {
            Body::Head => (
                0,
                Content::Discard {
                    snippet: Vec::new(),
                },
            ),
            Body::Reading {
                status, content, ..
            } => (status, *content),
        };
        let reuse =
            complete && !c.closing && c.rx.is_empty() && c.connected && !c.out.is_finished();
        if reuse {
            c.deadline = Some(now + IDLE_CLOSE);
        } else if let Some(mut c) = h.conns.remove(&n) {
            c.close(out);
        }
        let done = Done {
            purpose: job.purpose,
            status,
            content,
            answered: job.answered,
            complete,
        };
        self.conclude(n, done, now, out);
    }

    /// Acts on a finished exchange.
    fn conclude(&mut self, n: u32, done: Done, now: Instant, out: &mut VecDeque<Output>) {
        let Link::Http(h) = &mut self.link else {
            return;
        };
        let status = done.status;
        let ok = (200..300).contains(&status);
        match done.purpose {
            Purpose::Post(p) => {
                if status == 404 && h.session_id.is_some() {
                    self.undelivered.push(p.undelivered());
                    return self.fail(RemoteEnd::SessionExpired, out);
                }
                if p.is_initialize() {
                    h.init_out = false;
                }
                let probing = h.proto == Proto::Streamable { probing: true };
                if probing && p.is_initialize() && matches!(status, 400 | 404 | 405) {
                    let jsonrpc = match &done.content {
                        Content::Json { buf, .. } => is_jsonrpc_error(buf),
                        _ => false,
                    };
                    if !jsonrpc {
                        log::info!(
                            "{}: {} answered the initialize POST with HTTP {status}: trying the HTTP+SSE transport",
                            self.id,
                            self.url
                        );
                        h.queue_bytes += p.line.len();
                        h.queue.push_front(p);
                        h.proto = Proto::Legacy { post_path: None };
                        return self.open_legacy_get(now, out);
                    }
                }
                if p.is_initialize() && h.proto == (Proto::Streamable { probing: true }) {
                    h.proto = Proto::Streamable { probing: false };
                }
                if ok && matches!(h.proto, Proto::Legacy { .. }) {
                    // HTTP+SSE: a POST is only acknowledged; answers come on the stream.
                    return;
                }
                match (ok, done.content) {
                    (true, Content::Json { .. }) if !done.complete => {
                        // Cut off: what came is not the answer.
                        self.unanswered(
                            &p,
                            "closed the connection in the middle of its answer",
                            out,
                        )
                    }
                    (true, Content::Json { buf, len }) => {
                        if let Some(id) = &p.id {
                            if len > self.limits.max_message_size {
                                self.inbox.push_back(Inbound::Oversize {
                                    len,
                                    id: Some(id.clone()),
                                });
                            } else if buf.is_empty() {
                                self.answer_error(id, "answered the request with an empty body");
                            } else {
                                self.note_initialize(&p, &buf);
                                self.inbox_bytes += buf.len();
                                self.inbox.push_back(Inbound::Line(buf));
                            }
                        } else if !buf.is_empty() {
                            // A response to a notification: pass it on as the remote's word.
                            self.inbox_bytes += buf.len();
                            self.inbox.push_back(Inbound::Line(buf));
                        }
                    }
                    (true, Content::Events(parser)) => {
                        if let Some(id) = p.id.clone() {
                            if !done.answered {
                                self.stream_broke(id, parser, &p, now, out);
                            }
                        }
                    }
                    (true, _) => {
                        if let Some(id) = &p.id {
                            self.answer_error(
                                id,
                                &format!("answered the request with HTTP {status} and no message"),
                            );
                        } else if p.method.as_deref() == Some("notifications/initialized") {
                            self.want_get(now);
                        }
                    }
                    (false, content) => {
                        let body = match content {
                            Content::Json { buf, .. } => buf,
                            Content::Discard { snippet } => snippet,
                            Content::Events(_) => Vec::new(),
                        };
                        self.refused(&p, status, &body, done.complete);
                    }
                }
            }
            Purpose::Get => {
                let failures = match h.get {
                    GetStream::Open { failures, .. } => failures,
                    _ => 0,
                };
                if status == 405 {
                    log::debug!("{}: the remote has no GET stream (405)", self.id);
                    h.get = GetStream::None;
                } else if status == 404 && h.session_id.is_some() {
                    self.fail(RemoteEnd::SessionExpired, out);
                } else {
                    let (retry, streamed) = match &done.content {
                        Content::Events(p) => {
                            if let Some(id) = &p.last_id {
                                h.get_last_id = Some(id.clone());
                            }
                            (p.retry.map(Duration::from_millis), true)
                        }
                        _ => (None, false),
                    };
                    let failures = if ok && streamed { 0 } else { failures + 1 };
                    if failures >= MAX_GET_FAILURES {
                        log::warn!(
                            "{}: the remote's GET stream failed {failures} times (last: HTTP {status}); going on without it",
                            self.id
                        );
                        h.get = GetStream::None;
                    } else {
                        let delay = retry
                            .or(h.get_retry)
                            .unwrap_or(DEFAULT_RETRY * 2u32.pow(failures))
                            .min(MAX_RETRY);
                        if let Some(r) = retry {
                            h.get_retry = Some(r);
                        }
                        h.get = GetStream::Wanted {
                            at: now + delay,
                            failures,
                        };
                    }
                }
            }
            Purpose::Resume => {
                let Some(i) = h.resumes.iter().position(|r| r.on == Some(n)) else {
                    return;
                };
                let mut r = h.resumes.remove(i);
                if r.waiting.is_empty() {
                    return;
                }
                match done.content {
                    Content::Events(parser) if ok => {
                        if let Some(id) = parser.last_id.clone() {
                            r.last_id = id;
                        }
                        r.retry = parser.retry.map(Duration::from_millis).or(r.retry);
                        r.at = now + r.retry.unwrap_or(DEFAULT_RETRY).min(MAX_RETRY);
                        r.on = None;
                        h.resumes.push(r);
                    }
                    _ => {
                        if status == 404 && h.session_id.is_some() {
                            return self.fail(RemoteEnd::SessionExpired, out);
                        }
                        for id in r.waiting {
                            self.answer_error(
                                &id,
                                &format!(
                                    "broke its event stream before answering, and refused to resume it (HTTP {status})"
                                ),
                            );
                        }
                    }
                }
            }
            Purpose::LegacyGet => {
                if !ok {
                    let why = RemoteEnd::Refused {
                        status,
                        why: "the event stream (HTTP+SSE transport)".into(),
                    };
                    return self.fail(why, out);
                }
                if matches!(self.state, State::Stopping { .. }) {
                    self.close_all(out);
                    return self.finish(RemoteEnd::Stopped);
                }
                self.fail(RemoteEnd::Closed, out);
            }
            Purpose::Delete => {
                self.close_all(out);
                self.finish(RemoteEnd::Stopped);
            }
        }
    }

    fn note_initialize(&mut self, p: &Pending, line: &[u8]) {
        if !p.is_initialize() {
            return;
        }
        if let Ok(version) = message::initialize_outcome(line) {
            let transport = self.transport();
            let Link::Http(h) = &mut self.link else {
                return;
            };
            log::info!(
                "{}: the remote speaks {transport} at {} (protocol {version})",
                self.id,
                self.url
            );
            h.version = Some(version);
        }
    }

    /// A POST's event stream ended before its answer: resume it, or answer with an error.
    fn stream_broke(
        &mut self,
        id: RawId,
        parser: SseParser,
        p: &Pending,
        now: Instant,
        out: &mut VecDeque<Output>,
    ) {
        let Link::Http(h) = &mut self.link else {
            return;
        };
        match parser.last_id.filter(|_| !p.cancelled) {
            Some(last_id) => {
                let retry = parser.retry.map(Duration::from_millis);
                let delay = retry.unwrap_or(DEFAULT_RETRY).min(MAX_RETRY);
                log::debug!(
                    "{}: the event stream of request {} ended before its answer; resuming after {delay:?}",
                    self.id,
                    id.as_str()
                );
                h.resumes.push(Resume {
                    last_id,
                    retry,
                    at: now + delay,
                    waiting: vec![id],
                    on: None,
                });
            }
            None if p.cancelled => {
                self.unanswered(p, "ended the event stream of a cancelled request", out)
            }
            None => self.unanswered(
                p,
                "closed the event stream before answering, and it cannot be resumed (no event ids)",
                out,
            ),
        }
    }

    /// A request whose answer will not come (its connection or stream ended first; whether
    /// the remote got it is unknown) is answered with an error. Not an `initialize`: the
    /// session would take that for the remote refusing it (and end); whether the remote set
    /// up a session is unknown, so this remote is given up on instead, and the session
    /// restarts it (and replays `initialize`).
    fn unanswered(&mut self, p: &Pending, what: &str, out: &mut VecDeque<Output>) {
        match &p.id {
            Some(_) if p.is_initialize() => self.fail(RemoteEnd::Closed, out),
            Some(id) => self.answer_error(id, what),
            None => {}
        }
    }

    /// A POST refused with `status`.
    fn refused(&mut self, p: &Pending, status: u16, body: &[u8], complete: bool) {
        let _ = complete;
        let Some(id) = &p.id else {
            log::warn!(
                "{}: the remote refused a {} with HTTP {status}: {}",
                self.id,
                p.method.as_deref().unwrap_or("message"),
                snippet(body)
            );
            return;
        };
        // A JSON-RPC error in the body is the remote's own answer.
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            if let Some(err) = v.get("error") {
                let message = err
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("error");
                let code = err
                    .get("code")
                    .and_then(|c| c.as_i64())
                    .unwrap_or(codes::SERVER_UNAVAILABLE);
                let line = message::error_line(Some(id.as_str()), code, message);
                let line = line[..line.len() - 1].to_vec();
                self.inbox_bytes += line.len();
                self.inbox.push_back(Inbound::Line(line));
                return;
            }
        }
        let hint = match status {
            401 | 403 => " (check --bearer-token or --header)",
            _ => "",
        };
        self.answer_error(
            id,
            &format!(
                "refused the request: HTTP {status} {}{hint}{}",
                crate::http::wire::reason(status),
                match snippet(body) {
                    s if s.is_empty() => String::new(),
                    s => format!(": {s}"),
                }
            ),
        );
    }

    /// Answers request `id` with an error the relay makes.
    fn answer_error(&mut self, id: &RawId, what: &str) {
        let text = format!("mcp-relay: the remote server {what}");
        let line = message::error_line(Some(id.as_str()), codes::SERVER_FAILED, &text);
        let line = line[..line.len() - 1].to_vec();
        self.inbox_bytes += line.len();
        self.inbox.push_back(Inbound::Line(line));
    }

    fn want_get(&mut self, now: Instant) {
        if let Link::Http(h) = &mut self.link {
            if h.get == GetStream::Off && matches!(h.proto, Proto::Streamable { .. }) {
                h.get = GetStream::Wanted {
                    at: now,
                    failures: 0,
                };
            }
        }
    }

    fn open_legacy_get(&mut self, now: Instant, out: &mut VecDeque<Output>) {
        let n = self.next_n;
        self.next_n += 1;
        let Link::Http(h) = &mut self.link else {
            return;
        };
        let mut c = Conn::new(UpId { server: self.id, n }, self.limits.max_buffered);
        let bytes = server_request(
            &self.url,
            &self.config,
            "GET",
            None,
            &[("Accept", "text/event-stream")],
            h,
            &[],
        );
        c.out.stage(&bytes);
        c.job = Some(Job::new(Purpose::LegacyGet));
        c.deadline = Some(now + self.config.connect_timeout);
        out.push_back(Output::Connect {
            conn: c.up,
            host: self.url.host.clone(),
            port: self.url.port,
        });
        h.conns.insert(n, c);
    }

    /// The legacy stream named where to POST.
    fn legacy_endpoint(&mut self, uri: &[u8], out: &mut VecDeque<Output>) {
        let uri = String::from_utf8_lossy(uri).trim().to_owned();
        let path = if uri.starts_with("http://") || uri.starts_with("https://") {
            match RemoteUrl::parse(&uri) {
                Ok(u) if u.host.eq_ignore_ascii_case(&self.url.host) && u.port == self.url.port => {
                    u.path
                }
                _ => {
                    let why = format!("an endpoint on another origin ({uri:?})");
                    return self.fail(RemoteEnd::Malformed(why), out);
                }
            }
        } else if uri.starts_with('/') {
            uri
        } else {
            let base = self.url.path.split('?').next().unwrap_or("/");
            let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{uri}")
        };
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            let why = format!("an unusable endpoint ({path:?})");
            return self.fail(RemoteEnd::Malformed(why), out);
        }
        log::info!(
            "{}: the remote speaks sse at {} (messages to {path})",
            self.id,
            self.url
        );
        if let Link::Http(h) = &mut self.link {
            h.proto = Proto::Legacy {
                post_path: Some(path),
            };
        }
    }

    /// Connection `n` ended (EOF, or broken with `reason`).
    fn conn_lost(
        &mut self,
        n: u32,
        reason: Option<&str>,
        now: Instant,
        out: &mut VecDeque<Output>,
    ) {
        let Link::Http(h) = &mut self.link else {
            return;
        };
        let Some(c) = h.conns.get_mut(&n) else { return };
        let Some(job) = c.job.as_ref() else {
            // An idle keep-alive connection the remote closed.
            if let Some(mut c) = h.conns.remove(&n) {
                c.close(out);
            }
            return;
        };
        // A body delimited by the close is complete now.
        if reason.is_none() {
            if let Body::Reading {
                framing: Framing::UntilClose,
                ..
            } = job.body
            {
                return self.exchange_done(n, true, now, out);
            }
        }
        let got_bytes = c.got_bytes;
        let job_is_post = matches!(job.purpose, Purpose::Post(_));
        if job_is_post && !got_bytes && !c.connected {
            // Never connected: handled by connect_failed.
            return;
        }
        if let Body::Head = job.body {
            if let Some(mut c) = h.conns.remove(&n) {
                c.close(out);
                if let Some(job) = c.job.take() {
                    match job.purpose {
                        Purpose::Post(p) => {
                            if matches!(self.state, State::Stopping { .. }) && p.id.is_none() {
                                return;
                            }
                            if p.id.is_some() {
                                let why = reason.map_or_else(
                                    || "closed the connection before answering".to_owned(),
                                    |r| format!("connection failed before it answered: {r}"),
                                );
                                if p.is_initialize() {
                                    h.init_out = false;
                                }
                                return self.unanswered(&p, &why, out);
                            }
                        }
                        Purpose::Get => {
                            let failures = match h.get {
                                GetStream::Open { failures, .. } => failures + 1,
                                _ => 1,
                            };
                            h.get = if failures >= MAX_GET_FAILURES {
                                GetStream::None
                            } else {
                                let backoff = DEFAULT_RETRY * 2u32.pow(failures);
                                GetStream::Wanted {
                                    at: now + h.get_retry.unwrap_or(backoff).min(MAX_RETRY),
                                    failures,
                                }
                            };
                        }
                        Purpose::Resume => {
                            if let Some(i) = h.resumes.iter().position(|r| r.on == Some(n)) {
                                h.resumes[i].on = None;
                                let retry = h.resumes[i].retry.unwrap_or(DEFAULT_RETRY);
                                h.resumes[i].at = now + retry.min(MAX_RETRY);
                            }
                        }
                        Purpose::LegacyGet => {
                            let why = if matches!(self.state, State::Stopping { .. }) {
                                RemoteEnd::Stopped
                            } else {
                                RemoteEnd::Closed
                            };
                            return self.fail(why, out);
                        }
                        Purpose::Delete => {
                            self.close_all(out);
                            return self.finish(RemoteEnd::Stopped);
                        }
                    }
                }
            }
            return;
        }
        // Cut off in the middle of a body.
        self.exchange_done(n, false, now, out);
    }

    fn protocol_error(&mut self, n: u32, what: &str, out: &mut VecDeque<Output>) {
        log::warn!("{}: {} sent {what}", self.id, self.url);
        let Link::Http(h) = &mut self.link else {
            return;
        };
        if let Some(mut c) = h.conns.remove(&n) {
            c.close(out);
            if let Some(Job {
                purpose: Purpose::Post(p),
                ..
            }) = c.job
            {
                if let Some(id) = &p.id {
                    if p.is_initialize() {
                        h.init_out = false;
                    }
                    self.answer_error(id, &format!("sent {what}"));
                }
                return;
            }
        }
        self.fail(RemoteEnd::Malformed(what.to_owned()), out);
    }

    /// A stop: wait for POSTs in flight, then DELETE the session (or close the legacy
    /// stream), then finish.
    fn advance_stop(&mut self, now: Instant, out: &mut VecDeque<Output>) {
        let Link::Http(h) = &mut self.link else {
            if let Link::Tcp(t) = &self.link {
                if t.out.is_finished() && !t.out.is_gone() {
                    // Closed our side; the remote's EOF finishes it.
                }
            }
            return;
        };
        let posts_busy = h
            .conns
            .values()
            .any(|c| matches!(c.job.as_ref().map(|j| &j.purpose), Some(Purpose::Post(_))));
        if posts_busy || !h.queue.is_empty() || h.delete_sent {
            return;
        }
        h.delete_sent = true;
        // Event streams are closed.
        let streams: Vec<u32> = h
            .conns
            .iter()
            .filter(|(_, c)| c.job.is_some())
            .map(|(n, _)| *n)
            .collect();
        for n in streams {
            if let Some(mut c) = h.conns.remove(&n) {
                c.close(out);
            }
        }
        h.resumes.clear();
        let Some(_) = h
            .session_id
            .as_ref()
            .filter(|_| matches!(h.proto, Proto::Streamable { .. }))
        else {
            self.close_all(out);
            return self.finish(RemoteEnd::Stopped);
        };
        let free = h.free_conn(usize::MAX);
        let n = match free {
            Some(n) => n,
            None => {
                let n = self.next_n;
                self.next_n += 1;
                let c = Conn::new(UpId { server: self.id, n }, self.limits.max_buffered);
                out.push_back(Output::Connect {
                    conn: c.up,
                    host: self.url.host.clone(),
                    port: self.url.port,
                });
                h.conns.insert(n, c);
                n
            }
        };
        let bytes = server_request(&self.url, &self.config, "DELETE", None, &[], h, &[]);
        if let Some(c) = h.conns.get_mut(&n) {
            c.out.stage(&bytes);
            c.job = Some(Job::new(Purpose::Delete));
            c.deadline = Some(now + self.limits.grace);
        }
    }
}

impl HttpLink {
    /// An open idle connection (or one connecting with nothing to do), if there is one.
    fn free_conn(&self, _max: usize) -> Option<u32> {
        self.conns
            .iter()
            .find(|(_, c)| c.job.is_none() && !c.out.is_finished() && !c.closing)
            .map(|(n, _)| *n)
    }

    /// Connections that carry POSTs (or will): all but the event streams.
    fn post_conns(&self) -> usize {
        self.conns
            .values()
            .filter(|c| {
                !matches!(
                    c.job.as_ref().map(|j| &j.purpose),
                    Some(Purpose::Get | Purpose::Resume | Purpose::LegacyGet)
                )
            })
            .count()
    }
}

impl Conn {
    fn new(up: UpId, high_water: usize) -> Self {
        Conn {
            up,
            connected: false,
            out: Outbound::new(Endpoint::Upstream(up), false, high_water),
            rx: Vec::new(),
            deadline: None,
            job: None,
            got_bytes: false,
            closing: false,
        }
    }

    fn buffered(&self) -> usize {
        self.rx.len()
            + match &self.job {
                Some(Job {
                    body: Body::Reading { content, .. },
                    ..
                }) => match content.as_ref() {
                    Content::Json { buf, .. } => buf.len(),
                    Content::Events(p) => p.buffered(),
                    Content::Discard { snippet } => snippet.len(),
                },
                _ => 0,
            }
    }

    fn close(&mut self, out: &mut VecDeque<Output>) {
        if !self.out.is_gone() {
            out.push_back(Output::Close {
                endpoint: Endpoint::Upstream(self.up),
            });
        }
        self.out.set_gone();
    }
}

impl Job {
    fn new(purpose: Purpose) -> Self {
        Job {
            purpose,
            body: Body::Head,
            answered: false,
        }
    }
}

/// Feeds body bytes to what reads them; messages found go to `events` (the legacy
/// `endpoint` event as a line marked with a NUL prefix).
fn feed(content: &mut Content, bytes: &[u8], max: usize, events: &mut Vec<Inbound>) {
    match content {
        Content::Json { buf, len } => {
            *len += bytes.len();
            if *len <= max {
                buf.extend_from_slice(bytes);
            } else {
                *buf = Vec::new();
            }
        }
        Content::Events(parser) => parser.push(bytes, |e| {
            if e.len > max {
                events.push(Inbound::Oversize {
                    len: e.len,
                    id: None,
                });
            } else if e.event == "endpoint" {
                let mut line = b"\x00endpoint ".to_vec();
                line.extend_from_slice(e.data);
                events.push(Inbound::Line(line));
            } else if e.event == "message" && !e.data.iter().all(u8::is_ascii_whitespace) {
                events.push(Inbound::Line(e.data.to_vec()));
            }
        }),
        Content::Discard { snippet } => {
            let room = SNIPPET.saturating_sub(snippet.len());
            snippet.extend_from_slice(&bytes[..room.min(bytes.len())]);
        }
    }
}

/// The line is a response to request `id`.
fn answers(line: &[u8], id: &RawId) -> bool {
    match classify(line) {
        Ok(Message::Single(e)) => {
            e.kind == Kind::Response && e.id.is_some_and(|i| RawId::from_raw(i) == *id)
        }
        Ok(Message::Batch(es)) => es
            .iter()
            .any(|e| e.kind == Kind::Response && e.id.is_some_and(|i| RawId::from_raw(i) == *id)),
        Err(_) => false,
    }
}

fn is_jsonrpc_error(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .is_some_and(|v| v.get("jsonrpc").is_some() && v.get("error").is_some())
}

fn is_visible_ascii(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// The start of an error body, printable.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(SNIPPET)]);
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A request to the remote with the session's headers: the user's, the session id and the
/// protocol version once known.
fn server_request(
    url: &RemoteUrl,
    config: &RemoteConfig,
    method: &str,
    path: Option<&str>,
    extra: &[(&str, &str)],
    h: &HttpLink,
    body: &[u8],
) -> Vec<u8> {
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(sid) = &h.session_id {
        headers.push(("Mcp-Session-Id", sid));
    }
    if matches!(h.proto, Proto::Streamable { .. })
        && (h.session_id.is_some() || h.version.is_some())
    {
        headers.push((
            "MCP-Protocol-Version",
            h.version.as_deref().unwrap_or(DEFAULT_VERSION),
        ));
    }
    for (n, v) in &config.headers {
        headers.push((n, v));
    }
    wire::request(
        method,
        path.unwrap_or(&url.path),
        &url.authority(),
        &headers,
        body,
    )
}
