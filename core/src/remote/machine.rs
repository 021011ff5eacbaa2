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

use super::modern::{self, ClientFacts, Outgoing};
use super::wire::{self, Framing, HeadParse, ResponseHead, SseParser};
use crate::framing::LineFramer;
use crate::http::wire::{Dechunk, Dechunked};
use crate::message::{self, classify, codes, Kind, Message, RawId};
use crate::outbound::Outbound;
use crate::remote_config::{RemoteConfig, RemoteTransport, RemoteUrl};
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
/// The longest messages wait for the first `GET` stream to be set up.
const GET_GATE: Duration = Duration::from_secs(1);
/// Requests held at most while a login is under way; more are refused as the remote said.
const MAX_HELD: usize = 256;
/// Logins one request may wait for (a token refused again after a login gets one more).
const MAX_LOGINS_PER_REQUEST: u8 = 3;
/// How much of an error body is quoted back to the client.
const SNIPPET: usize = 200;

/// A remote incarnation as logs name it (`remote#3`).
struct Tag(ChildId);

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "remote#{}", self.0 .0)
    }
}

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
    /// Stopping, and the session waits for nothing more.
    quiet: bool,
    /// Effects decided where no output queue was at hand (a cancellation in `stage_line`).
    deferred: Vec<Output>,
    /// Requests refused for want of a token, waiting for a login (`RemoteConfig::login`).
    held: Vec<Pending>,
    /// `Output::RemoteLogin` was asked and not answered yet.
    login_asked: bool,
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
    /// Streamable HTTP at 2026-07-28: no `initialize`, no session (see `modern.rs`).
    Modern(Box<Modern>),
}

/// A session-era client in front of a 2026-07-28 remote.
#[derive(Debug, PartialEq, Eq)]
struct Modern {
    client: ClientFacts,
    /// The client's `initialize`, answered once `server/discover` is.
    init_id: Option<RawId>,
    /// Input requests sent to the client: their ids → the request waiting and the key.
    asks: BTreeMap<RawId, (RawId, String)>,
    /// Requests answered `input_required`, by id: what to retry them with.
    rounds: BTreeMap<RawId, Round>,
    next_ask: u64,
    /// Retries out under ids of the relay's (the era wants a retry to be a request of its
    /// own, with an id of its own) → the client's request, whose id their answers go back
    /// under, and how many state-only rounds in a row led to it.
    retries: BTreeMap<RawId, (RawId, u32)>,
    next_retry: u64,
    /// `server/discover` was refused for its version once and sent again.
    discover_retried: bool,
    /// What the server offers (from `server/discover`), for the listen stream.
    capabilities: serde_json::Value,
    /// Resources the client subscribed to, watched through the listen stream.
    subscribed: Vec<String>,
    /// The listen stream's request id, while one is open or queued; when to open the next.
    listen: Option<RawId>,
    /// The listen stream must be (re)opened: now, or at `listen_at`.
    listen_dirty: bool,
    /// The listen stream ended: `listen_at` is to be set from the next `now`.
    listen_pending_retry: bool,
    listen_at: Option<Instant>,
    listen_failures: u32,
    next_listen: u64,
}

/// Most resources a client's subscriptions make the relay watch on a 2026-07-28 remote.
const MAX_SUBSCRIPTIONS: usize = 256;
/// Times a listen stream that keeps failing is reopened before the relay does without it.
const MAX_LISTEN_FAILURES: u32 = 5;
/// `input_required` answers with state only (no input requests) retried in a row, at once,
/// before the client's request gets an error instead (the official SDKs' bound on rounds).
const MAX_STATE_ONLY_ROUNDS: u32 = 10;

impl Modern {
    /// The id of a new retry of the client's request `client`, kept to answer it under.
    fn retry_id(&mut self, client: RawId, state_only_rounds: u32) -> RawId {
        self.next_retry += 1;
        let id = RawId::string(&format!("mcp-relay:retry:{}", self.next_retry));
        self.retries.insert(id.clone(), (client, state_only_rounds));
        id
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Round {
    sent: Pending,
    state: Option<serde_json::Value>,
    waiting: usize,
    answers: serde_json::Map<String, serde_json::Value>,
}

/// The id of the relay's own `server/discover`.
const DISCOVER_ID: &str = "\"mcp-relay:discover\"";

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
    /// Until the first `GET` stream is set up (its answer's head, or its failure, or this
    /// deadline), messages after `notifications/initialized` wait: what the remote sends
    /// outside any request from then on has a stream to arrive on.
    get_gate: Option<Instant>,
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
    /// Attempts in a row that brought no new event.
    failures: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    line: Vec<u8>,
    id: Option<RawId>,
    method: Option<String>,
    since: Option<Instant>,
    /// Headers of its own (2026-07-28: `Mcp-Method`, ...).
    headers: Vec<(String, String)>,
    /// The requests of a batch (`id` is for a lone request).
    batch: Vec<RawId>,
    /// The relay's liveness probe: it waits neither for busy connections nor for an
    /// initialize's answer, since it is what finds a remote that never answers.
    probe: bool,
    /// The client cancelled it: its stream is not resumed.
    cancelled: bool,
    /// Times it was refused for want of a token and held for a login.
    logins: u8,
    /// The token generation it was last sent with (`RemoteConfig::login_generation`).
    token_gen: u32,
}

impl Pending {
    /// A request the relay makes itself (2026-07-28: `server/discover`, the listen stream).
    fn own(request: modern::Request, id: &str, method: &str) -> Pending {
        let (line, headers) = request;
        Pending {
            line,
            id: RawId::parse(id),
            method: Some(method.to_owned()),
            since: None,
            headers,
            batch: Vec::new(),
            probe: false,
            cancelled: false,
            logins: 0,
            token_gen: 0,
        }
    }

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
    /// A 401 or 403's `WWW-Authenticate`.
    challenge: Option<String>,
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
    /// A 401 or 403's `WWW-Authenticate`.
    challenge: Option<String>,
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
        let tcp = url.scheme.is_stream() || config.transport == RemoteTransport::Tcp;
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
                get_gate: None,
                get_last_id: None,
                get_retry: None,
            }),
            url,
            next_n: 0,
            paused: false,
            inbox: VecDeque::new(),
            inbox_bytes: 0,
            undelivered: Vec::new(),
            quiet: false,
            deferred: Vec::new(),
            held: Vec::new(),
            login_asked: false,
        };
        if tcp {
            let conn = server.new_up();
            out.push_back(Output::Connect {
                conn,
                host: server.url.host.clone(),
                port: server.url.port,
                tls: server.url.scheme.is_tls(),
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
            let dial = Dial {
                id,
                url: &server.url,
                high_water: limits.max_buffered,
            };
            // Streamable HTTP: the first connection opens at once (it tells whether the remote
            // is there); HTTP+SSE: its event stream.
            let job = matches!(h.proto, Proto::Legacy { .. }).then(|| {
                let get = stream_get(&server.url, &server.config, h, None);
                (Purpose::LegacyGet, get)
            });
            dial.open(&mut server.next_n, h, job, None, out);
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
                Proto::Streamable { .. } if self.config.transport == RemoteTransport::Stateless => {
                    "streamable-http (2026-07-28)"
                }
                Proto::Streamable { probing: true } => "streamable-http (probing)",
                Proto::Streamable { probing: false } => "streamable-http",
                Proto::Modern(_) => "streamable-http (2026-07-28)",
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
                if let Some(d) = h.get_gate {
                    all.push((d, Timer::RemoteRetry));
                }
                if let Proto::Modern(m) = &h.proto {
                    all.extend(m.listen_at.map(|d| (d, Timer::RemoteRetry)));
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
        let (id, method, batch, cancels) = match classify(line) {
            Ok(Message::Single(e)) => (
                (e.kind == Kind::Request)
                    .then(|| e.id.map(RawId::from_raw))
                    .flatten(),
                e.method.as_deref().map(str::to_owned),
                Vec::new(),
                (e.method.as_deref() == Some("notifications/cancelled"))
                    .then(|| message::cancelled_request_id(e.params))
                    .flatten(),
            ),
            Ok(Message::Batch(es)) => (
                None,
                None,
                es.iter()
                    .filter(|e| e.kind == Kind::Request)
                    .filter_map(|e| e.id.map(RawId::from_raw))
                    .collect(),
                None,
            ),
            Err(_) => (None, None, Vec::new(), None),
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
            headers: Vec::new(),
            batch,
            probe,
            cancelled: false,
            logins: 0,
            token_gen: 0,
        };
        if let Link::Http(h) = &self.link {
            match h.proto {
                Proto::Modern(_) => return self.stage_modern(p),
                Proto::Streamable { .. }
                    if self.config.transport == RemoteTransport::Stateless && p.is_initialize() =>
                {
                    return self.switch_to_modern(p);
                }
                _ => {}
            }
        }
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

    /// A client message in front of a 2026-07-28 remote: rewritten, answered here, an
    /// input answer gathered, or dropped (see `modern.rs`).
    fn stage_modern(&mut self, p: Pending) {
        let Link::Http(h) = &mut self.link else {
            return;
        };
        let Proto::Modern(m) = &mut h.proto else {
            return;
        };
        // An answer to one of the relay's input requests.
        if p.method.is_none() {
            if let Ok(Message::Single(e)) = classify(&p.line) {
                if let Some(ask) = e.id.map(RawId::from_raw) {
                    if let Some((request, key)) = m.asks.remove(&ask) {
                        if let Some(round) = m.rounds.get_mut(&request) {
                            round.answers.insert(key, modern::input_response(&p.line));
                            round.waiting = round.waiting.saturating_sub(1);
                            if round.waiting == 0 {
                                if let Some(round) = m.rounds.remove(&request) {
                                    let retry_id = m.retry_id(request, 0);
                                    let mut again = round.sent;
                                    again.line = modern::retry(
                                        &again.line,
                                        retry_id.as_str(),
                                        round.answers,
                                        round.state.as_ref(),
                                    );
                                    again.id = Some(retry_id);
                                    again.since = None;
                                    h.queue_bytes += again.line.len();
                                    h.queue.push_back(again);
                                }
                            }
                        }
                        return;
                    }
                }
            }
        }
        if let Some((subscribe, uri)) = modern::subscription(&p.line) {
            // Watched through the listen stream, which is opened again with the new set.
            let known = m.subscribed.iter().position(|u| *u == uri);
            match (subscribe, known) {
                (true, None) if m.subscribed.len() < MAX_SUBSCRIPTIONS => m.subscribed.push(uri),
                (false, Some(i)) => {
                    m.subscribed.remove(i);
                }
                _ => {}
            }
            m.listen_dirty = true;
        }
        match modern::outgoing(&p.line, &m.client) {
            Outgoing::Send(line, headers) => {
                let q = Pending { line, headers, ..p };
                h.queue_bytes += q.line.len();
                h.queue.push_back(q);
            }
            Outgoing::Answer(line) => {
                self.inbox_bytes += line.len();
                self.inbox.push_back(Inbound::Line(line));
            }
            Outgoing::Drop => {}
            Outgoing::Cancel(request) => {
                // Closing its stream is how the era cancels; one still queued is dropped.
                let mut request = RawId::parse(&request);
                let retry = m
                    .retries
                    .iter()
                    .find(|(_, (client, _))| Some(client) == request.as_ref())
                    .map(|(retry, _)| retry.clone());
                if let Some(retry) = retry {
                    m.retries.remove(&retry);
                    request = Some(retry);
                }
                h.queue.retain(|q| q.id.is_none() || q.id != request);
                h.queue_bytes = h.queue.iter().map(|q| q.line.len()).sum();
                let busy: Vec<u32> = h
                    .conns
                    .iter()
                    .filter(|(_, c)| {
                        matches!(&c.job, Some(Job { purpose: Purpose::Post(q), .. }) if q.id.is_some() && q.id == request)
                    })
                    .map(|(n, _)| *n)
                    .collect();
                let mut out = VecDeque::new();
                for n in busy {
                    if let Some(mut c) = h.conns.remove(&n) {
                        c.close(&mut out);
                    }
                }
                self.deferred.extend(out);
            }
        }
    }

    /// The remote refused `initialize` the way a 2026-07-28 server does: discover it, and
    /// speak that era from now on (what waits is rewritten).
    fn switch_to_modern(&mut self, init: Pending) {
        let Some(client) = ClientFacts::from_initialize(&init.line) else {
            return;
        };
        log::info!(
            "{}: {} speaks 2026-07-28: discovering it with server/discover",
            Tag(self.id),
            self.url
        );
        let Link::Http(h) = &mut self.link else {
            return;
        };
        let request = modern::discover(DISCOVER_ID, &client);
        h.proto = Proto::Modern(Box::new(Modern {
            client,
            init_id: init.id.clone(),
            asks: BTreeMap::new(),
            rounds: BTreeMap::new(),
            next_ask: 0,
            retries: BTreeMap::new(),
            next_retry: 0,
            discover_retried: false,
            capabilities: serde_json::Value::Null,
            subscribed: Vec::new(),
            listen: None,
            listen_dirty: false,
            listen_pending_retry: false,
            listen_at: None,
            listen_failures: 0,
            next_listen: 0,
        }));
        let waiting: Vec<Pending> = h.queue.drain(..).collect();
        h.queue_bytes = 0;
        let discover = Pending::own(request, DISCOVER_ID, "server/discover");
        h.queue_bytes += discover.line.len();
        h.queue.push_back(discover);
        for p in waiting {
            self.stage_modern(p);
        }
    }

    /// A message from the remote, for the client: in front of a 2026-07-28 remote, the
    /// discover answer becomes the `initialize` answer, and `input_required` becomes
    /// requests to the client (`sent`: the request as it went, to retry it with).
    fn remote_said(&mut self, mut line: Vec<u8>, sent: Option<&Pending>) {
        if let Link::Http(h) = &mut self.link {
            let Proto::Modern(m) = &mut h.proto else {
                self.inbox_bytes += line.len();
                self.inbox.push_back(Inbound::Line(line));
                return;
            };
            // The answer to a retry belongs to the client's request.
            let original = response_id(&line).and_then(|i| m.retries.remove(&i));
            if modern::is_listen_ack(&line) {
                return;
            }
            if let Some(id) =
                response_id(&line).filter(|i| i.as_str().starts_with("\"mcp-relay:listen:"))
            {
                // The listen stream ended (its answer, or the relay's error for it): it is
                // opened again after a pause, fewer times if it keeps failing.
                if m.listen.as_ref() == Some(&id) {
                    m.listen = None;
                    m.listen_failures += u32::from(is_error_line(&line));
                    if m.listen_failures < MAX_LISTEN_FAILURES {
                        m.listen_pending_retry = true;
                    }
                }
                return;
            }
            if let Some(discover) = sent.filter(|p| p.id == RawId::parse(DISCOVER_ID)) {
                if !m.discover_retried && modern::unsupported_version(&line) {
                    // The remote refused the version: once more, as its answer allows.
                    m.discover_retried = true;
                    let again = Pending {
                        since: None,
                        ..discover.clone()
                    };
                    h.queue_bytes += again.line.len();
                    h.queue.push_front(again);
                    return;
                }
                let Some(init_id) = m.init_id.take() else {
                    return;
                };
                let answer = modern::initialize_answer(init_id.as_str(), &m.client, &line)
                    .unwrap_or_else(|| modern::discover_error(init_id.as_str(), &line));
                m.capabilities = modern::discovered_capabilities(&line);
                m.listen_dirty = true;
                self.inbox_bytes += answer.len();
                self.inbox.push_back(Inbound::Line(answer));
                return;
            }
            if let (Some(sent), Some((requests, state))) = (sent, modern::input_required(&line)) {
                let client = original.as_ref().map(|(c, _)| c.clone());
                if let Some(id) = client.or_else(|| sent.id.clone()) {
                    let rounds = original.as_ref().map_or(0, |(_, n)| *n) + 1;
                    if requests.is_empty() && state.is_some() && rounds <= MAX_STATE_ONLY_ROUNDS {
                        // State only (a server shedding load, say): the era lets the client
                        // retry at once, with that state and no answers.
                        let retry_id = m.retry_id(id, rounds);
                        let mut again = sent.clone();
                        again.line = modern::retry(
                            &again.line,
                            retry_id.as_str(),
                            serde_json::Map::new(),
                            state.as_ref(),
                        );
                        again.id = Some(retry_id);
                        again.since = None;
                        h.queue_bytes += again.line.len();
                        h.queue.push_back(again);
                        return;
                    }
                    if requests.is_empty() {
                        let what = if state.is_some() {
                            "kept answering input_required with no input requests"
                        } else {
                            "asked for input without saying which"
                        };
                        return self.answer_error(&id, what);
                    }
                    let mut asks = Vec::new();
                    for (key, request) in &requests {
                        m.next_ask += 1;
                        let ask = format!("\"mcp-relay:input:{}\"", m.next_ask);
                        if let Some(ask_id) = RawId::parse(&ask) {
                            m.asks.insert(ask_id, (id.clone(), key.clone()));
                        }
                        asks.push(modern::input_request(&ask, request));
                    }
                    m.rounds.insert(
                        id,
                        Round {
                            sent: sent.clone(),
                            state,
                            waiting: requests.len(),
                            answers: serde_json::Map::new(),
                        },
                    );
                    for ask in asks {
                        self.inbox_bytes += ask.len();
                        self.inbox.push_back(Inbound::Line(ask));
                    }
                    return;
                }
            }
            if let Some((client, _)) = original {
                line = modern::answer_as(&line, client.as_str());
            }
        }
        self.inbox_bytes += line.len();
        self.inbox.push_back(Inbound::Line(line));
    }

    /// Bytes of whole lines (what a session held during a restart).
    pub(crate) fn stage(&mut self, lines: &[u8]) {
        for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            self.stage_line(line);
        }
    }

    pub(crate) fn flush(&mut self, out: &mut VecDeque<Output>) {
        out.extend(self.deferred.drain(..));
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
    pub(crate) fn stop(&mut self) {
        if matches!(self.state, State::Connecting | State::Up) {
            // What is queued still goes out (a connection still opening opens), and answers
            // still come, until the session has nothing waiting (`quiet`) or the grace ends.
            self.state = State::Stopping { deadline: None };
        }
    }

    /// The session waits for nothing more: a stopping remote may close now (TCP: once what
    /// is queued is written; HTTP: once its POSTs are done, with a `DELETE`).
    pub(crate) fn quiet(&mut self, now: Instant, out: &mut VecDeque<Output>) {
        if !matches!(self.state, State::Stopping { .. }) {
            return;
        }
        self.quiet = true;
        match &mut self.link {
            Link::Tcp(t) => {
                if !t.connected || t.out.load() == 0 {
                    self.close_all(out);
                    self.finish(RemoteEnd::Stopped);
                }
            }
            Link::Http(_) => self.advance_stop(now, out),
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
            // The driver expects nothing more about it (not even a `Close`).
            match &mut self.link {
                Link::Tcp(t) => t.out.set_gone(),
                Link::Http(h) => {
                    if let Some(c) = h.conns.get_mut(&up.n) {
                        c.out.set_gone();
                    }
                }
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
                // The remote closed its side: the relay closes its own (`close_all`), or
                // the driver would hold the connection for ever.
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
        if h.get_gate.is_some_and(|d| d <= now)
            || !matches!(h.get, GetStream::Wanted { .. } | GetStream::Open { .. })
        {
            h.get_gate = None;
        }
        if let (Proto::Modern(m), State::Up) = (&mut h.proto, &self.state) {
            if std::mem::take(&mut m.listen_pending_retry) {
                m.listen_at = Some(now + DEFAULT_RETRY * 2u32.pow(m.listen_failures));
            }
            if m.listen_at.is_some_and(|t| t <= now) {
                m.listen_at = None;
                m.listen_dirty = true;
            }
            if std::mem::take(&mut m.listen_dirty) && m.init_id.is_none() {
                // The old stream (if any) is closed, the new one queued.
                if let Some(old) = m.listen.take() {
                    h.queue.retain(|q| q.id.as_ref() != Some(&old));
                    let stale: Vec<u32> = h
                        .conns
                        .iter()
                        .filter(|(_, c)| matches!(&c.job, Some(Job { purpose: Purpose::Post(q), .. }) if q.id.as_ref() == Some(&old)))
                        .map(|(n, _)| *n)
                        .collect();
                    for n in stale {
                        if let Some(mut c) = h.conns.remove(&n) {
                            c.close(out);
                        }
                    }
                }
                m.next_listen += 1;
                let id = format!("\"mcp-relay:listen:{}\"", m.next_listen);
                if let Some(request) =
                    modern::listen(&id, &m.client, &m.capabilities, &m.subscribed)
                {
                    m.listen = RawId::parse(&id);
                    let mut listen = Pending::own(request, &id, "subscriptions/listen");
                    listen.since = Some(now);
                    h.queue.push_back(listen);
                }
                h.queue_bytes = h.queue.iter().map(|q| q.line.len()).sum();
            }
        }
        while let Some(front) = h.queue.front() {
            // What follows an initialize waits for its answer (and the session id it brings),
            // and what follows notifications/initialized for the GET stream; the probe does
            // not: it may find a remote that never answers.
            if (h.init_out || h.get_gate.is_some()) && !front.probe {
                break;
            }
            if let Proto::Legacy { post_path: None } = h.proto {
                break;
            }
            let is_init = front.is_initialize();
            let Some(n) = h.free_conn() else {
                // The probe gets a connection of its own: a remote that holds every
                // connection with calls it does not answer must still be probed.
                if h.post_conns() >= max && !front.probe {
                    break;
                }
                let dial = Dial {
                    id: self.id,
                    url: &self.url,
                    high_water: limits.max_buffered,
                };
                dial.open(&mut self.next_n, h, None, None, out);
                continue;
            };
            let Some(mut p) = h.queue.pop_front() else {
                break;
            };
            h.queue_bytes -= p.line.len();
            p.token_gen = self.config.login_generation;
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
            let mut extra = vec![
                ("Content-Type", "application/json"),
                ("Accept", "application/json, text/event-stream"),
            ];
            extra.extend(p.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
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
        if !matches!(self.state, State::Up | State::Stopping { .. }) {
            return;
        }
        // The GET stream (not wanted any more once stopping).
        if matches!(self.state, State::Stopping { .. }) && matches!(h.get, GetStream::Wanted { .. })
        {
            h.get = GetStream::None;
        }
        if let GetStream::Wanted { at, failures } = h.get {
            if at <= now {
                let get = stream_get(&self.url, &self.config, h, h.get_last_id.as_deref());
                let dial = Dial {
                    id: self.id,
                    url: &self.url,
                    high_water: limits.max_buffered,
                };
                let deadline = Some(now + self.config.connect_timeout);
                let n = dial.open(
                    &mut self.next_n,
                    h,
                    Some((Purpose::Get, get)),
                    deadline,
                    out,
                );
                h.get = GetStream::Open { n, failures };
            }
        }
        // Due resumptions of POST streams.
        for i in 0..h.resumes.len() {
            if h.resumes[i].on.is_some() || h.resumes[i].at > now {
                continue;
            }
            let get = stream_get(&self.url, &self.config, h, Some(&h.resumes[i].last_id));
            let dial = Dial {
                id: self.id,
                url: &self.url,
                high_water: limits.max_buffered,
            };
            let deadline = Some(now + self.config.connect_timeout);
            let n = dial.open(
                &mut self.next_n,
                h,
                Some((Purpose::Resume, get)),
                deadline,
                out,
            );
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
                    if matches!(job.purpose, Purpose::Get) {
                        h.get_gate = None;
                    }
                    let content = self.content_for(n, &head, max);
                    let Link::Http(h) = &mut self.link else {
                        return;
                    };
                    let Some(c) = h.conns.get_mut(&n) else { return };
                    let Some(job) = c.job.as_mut() else { return };
                    if matches!(head.status, 401 | 403) {
                        job.challenge = head.header("www-authenticate").map(str::to_owned);
                    }
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
                    let (answered_id, initialize) = match &job.purpose {
                        Purpose::Post(p) => (p.id.clone(), p.is_initialize()),
                        _ => (None, false),
                    };
                    // In front of a 2026-07-28 remote an answer may need the request it
                    // answers (to retry it after an input round).
                    let sent = match (&h.proto, &job.purpose) {
                        (Proto::Modern(_), Purpose::Post(p)) => Some(p.clone()),
                        _ => None,
                    };
                    // Only the legacy transport's stream names where to POST.
                    let legacy_stream = matches!(job.purpose, Purpose::LegacyGet);
                    let mut endpoint = None;
                    let mut init_answer = None;
                    let mut lines = Vec::new();
                    for e in events {
                        match e {
                            Inbound::Line(line) if line.starts_with(b"\x00endpoint ") => {
                                endpoint = Some(line[10..].to_vec());
                            }
                            Inbound::Line(line) => {
                                if let Some(id) = &answered_id {
                                    if answers(&line, id) {
                                        job.answered = true;
                                        if initialize {
                                            init_answer = Some(line.clone());
                                        }
                                    }
                                }
                                h.resumes.retain_mut(|r| {
                                    r.waiting.retain(|w| !answers(&line, w));
                                    !r.waiting.is_empty() || r.on.is_some()
                                });
                                lines.push(Inbound::Line(line));
                            }
                            other => lines.push(other),
                        }
                    }
                    for msg in lines {
                        match msg {
                            Inbound::Line(line) => self.remote_said(line, sent.as_ref()),
                            other => self.inbox.push_back(other),
                        }
                    }
                    if let Some(path) = endpoint.filter(|_| legacy_stream) {
                        self.legacy_endpoint(&path, out);
                    }
                    if let Some(line) = init_answer {
                        self.note_initialize(true, &line);
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
            challenge: job.challenge,
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
                if h.session_id.is_some() && session_gone(status, &done.content) {
                    self.undelivered.push(p.undelivered());
                    return self.fail(RemoteEnd::SessionExpired, out);
                }
                if p.is_initialize() {
                    h.init_out = false;
                }
                let modern_refusal = match &done.content {
                    Content::Json { buf, .. } => is_modern_refusal(buf),
                    _ => false,
                };
                if p.is_initialize()
                    && modern_refusal
                    && matches!(status, 400 | 404)
                    && matches!(h.proto, Proto::Streamable { .. })
                {
                    self.switch_to_modern(p);
                    return;
                }
                let probing = h.proto == Proto::Streamable { probing: true };
                if probing && p.is_initialize() && matches!(status, 400 | 404 | 405) {
                    let modern = match &done.content {
                        Content::Json { buf, .. } => is_modern_refusal(buf),
                        _ => false,
                    };
                    if !modern {
                        log::info!(
                            "{}: {} answered the initialize POST with HTTP {status}: trying the HTTP+SSE transport",
                            Tag(self.id),
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
                if ok && p.method.as_deref() == Some("notifications/initialized") {
                    self.want_get(now);
                }
                match (ok, done.content) {
                    (true, Content::Json { .. }) if !done.complete => {
                        // Cut off: what came is not the answer.
                        let what = "closed the connection in the middle of its answer";
                        self.answer_batch(&p, what);
                        self.unanswered(&p, what, out)
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
                            } else if answers(&buf, id) {
                                self.note_initialize(p.is_initialize(), &buf);
                                self.remote_said(buf, Some(&p));
                            } else {
                                // Passed on as the remote's word; the request gets no other.
                                self.inbox_bytes += buf.len();
                                self.inbox.push_back(Inbound::Line(buf));
                                self.answer_error(
                                    id,
                                    "answered the request with a message that is not its answer",
                                );
                            }
                        } else {
                            if !buf.is_empty() && !p.batch.is_empty() {
                                // A batch's answers: the remote's word.
                                self.inbox_bytes += buf.len();
                                self.inbox.push_back(Inbound::Line(buf));
                            } else if !buf.is_empty() {
                                // A body for a notification or a response (some servers send
                                // `{"result":{}}` where 202 is meant): nobody asked; dropped.
                                log::debug!(
                                    "{}: a body for a {} POST was dropped",
                                    Tag(self.id),
                                    p.method.as_deref().unwrap_or("response")
                                );
                            }
                            // A batch's requests it did not answer never will be.
                            self.answer_batch(
                                &p,
                                "answered the batch without answering this request",
                            );
                        }
                    }
                    (true, Content::Events(parser)) => {
                        if let Some(id) = p.id.clone() {
                            if !done.answered {
                                self.stream_broke(id, parser, &p, now, out);
                            }
                        }
                        // What the stream answered was passed on; the rest never will be.
                        self.answer_batch(&p, "ended the event stream before answering");
                    }
                    (true, _) => {
                        if let Some(id) = &p.id {
                            self.answer_error(
                                id,
                                &format!("answered the request with HTTP {status} and no message"),
                            );
                        }
                        self.answer_batch(
                            &p,
                            &format!("answered the batch with HTTP {status} and no message"),
                        );
                    }
                    (false, content) => {
                        let body = match content {
                            Content::Json { buf, .. } => buf,
                            Content::Discard { snippet } => snippet,
                            Content::Events(_) => Vec::new(),
                        };
                        if let Some(p) = self.hold_for_login(p, status, done.challenge, out) {
                            self.refused(&p, status, &body);
                        }
                    }
                }
            }
            Purpose::Get => {
                let failures = match h.get {
                    GetStream::Open { failures, .. } => failures,
                    _ => 0,
                };
                if status == 405 {
                    log::debug!("{}: the remote has no GET stream (405)", Tag(self.id));
                    h.get = GetStream::None;
                } else if h.session_id.is_some() && session_gone(status, &done.content) {
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
                        match parser.last_id.clone() {
                            Some(id) if id != r.last_id => {
                                r.last_id = id;
                                r.failures = 0;
                            }
                            _ => r.failures += 1,
                        }
                        if r.failures >= MAX_GET_FAILURES {
                            return self.resume_given_up(r);
                        }
                        r.retry = parser.retry.map(Duration::from_millis).or(r.retry);
                        r.at = now + r.retry.unwrap_or(DEFAULT_RETRY).min(MAX_RETRY);
                        r.on = None;
                        h.resumes.push(r);
                    }
                    _ => {
                        if h.session_id.is_some() && session_gone(status, &done.content) {
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

    /// The answer to an `initialize` (`is_initialize`): the protocol version agreed goes
    /// into every later request's `MCP-Protocol-Version`.
    fn note_initialize(&mut self, is_initialize: bool, line: &[u8]) {
        if !is_initialize {
            return;
        }
        if let Ok(version) = message::initialize_outcome(line) {
            let transport = self.transport();
            let Link::Http(h) = &mut self.link else {
                return;
            };
            log::info!(
                "{}: the remote speaks {transport} at {} (protocol {version})",
                Tag(self.id),
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
                    Tag(self.id),
                    id.as_str()
                );
                h.resumes.push(Resume {
                    last_id,
                    retry,
                    at: now + delay,
                    waiting: vec![id],
                    on: None,
                    failures: 0,
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

    /// A broken event stream that could not be resumed (`MAX_GET_FAILURES` attempts in a
    /// row brought nothing new): what waited on it gets the relay's error.
    fn resume_given_up(&mut self, r: Resume) {
        for id in r.waiting {
            self.answer_error(
                &id,
                &format!(
                    "broke its event stream before answering, and {MAX_GET_FAILURES} attempts to resume it brought nothing"
                ),
            );
        }
    }

    /// A POST refused with `status`.
    /// A request refused with 401, or 403 `insufficient_scope`, waits for a login (once per
    /// login, a bounded number of them); what cannot wait is given back.
    fn hold_for_login(
        &mut self,
        mut p: Pending,
        status: u16,
        challenge: Option<String>,
        out: &mut VecDeque<Output>,
    ) -> Option<Pending> {
        let step_up = status == 403
            && challenge
                .as_deref()
                .is_some_and(|c| c.contains("insufficient_scope"));
        let wanted = status == 401 || step_up;
        if !self.config.login || !wanted || p.probe || !p.batch.is_empty() {
            return Some(p);
        }
        p.since = None;
        if p.token_gen < self.config.login_generation {
            // Refused with a token replaced since: again, with the newest, no login.
            if let Link::Http(h) = &mut self.link {
                h.queue_bytes += p.line.len();
                h.queue.push_front(p);
                return None;
            }
            return Some(p);
        }
        if p.logins >= MAX_LOGINS_PER_REQUEST || self.held.len() >= MAX_HELD {
            return Some(p);
        }
        p.logins += 1;
        if !self.login_asked {
            self.login_asked = true;
            log::info!(
                "{}: {} answered HTTP {status}: logging in",
                Tag(self.id),
                self.url
            );
            out.push_back(Output::RemoteLogin {
                status,
                challenge,
                generation: p.token_gen,
            });
        }
        self.held.push(p);
        None
    }

    /// A login's outcome: the held requests go again with the token, or get the error.
    pub(crate) fn remote_token(&mut self, token: Result<&str, &str>) {
        if !self.config.login {
            // Not a remote the relay logs in to: its own headers stay.
            return;
        }
        self.login_asked = false;
        let held = std::mem::take(&mut self.held);
        match token {
            Ok(token) => {
                self.config.set_bearer(token);
                let Link::Http(h) = &mut self.link else {
                    return;
                };
                for p in held.into_iter().rev() {
                    h.queue_bytes += p.line.len();
                    h.queue.push_front(p);
                }
            }
            Err(why) => {
                for p in held {
                    match &p.id {
                        Some(id) => {
                            self.answer_error(id, &format!("needs a login, which failed: {why}"))
                        }
                        None => log::warn!(
                            "{}: a {} was not delivered: the login failed",
                            Tag(self.id),
                            p.method.as_deref().unwrap_or("message")
                        ),
                    }
                }
            }
        }
    }

    fn refused(&mut self, p: &Pending, status: u16, body: &[u8]) {
        let Some(id) = &p.id else {
            self.answer_batch(p, &format!("refused the batch: HTTP {status}"));
            log::warn!(
                "{}: the remote refused a {} with HTTP {status}: {}",
                Tag(self.id),
                p.method.as_deref().unwrap_or("message"),
                snippet(body)
            );
            return;
        };
        // A JSON-RPC error in the body is the remote's own answer (an OAuth error body,
        // `{"error": "invalid_token"}`, is not one: its `error` is a string).
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            if let Some(err) = v.get("error").filter(|e| e.is_object()) {
                let message = err
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("error");
                let code = err
                    .get("code")
                    .and_then(|c| c.as_i64())
                    .unwrap_or(codes::SERVER_UNAVAILABLE);
                let line = match err.get("data") {
                    Some(data) => {
                        let mut line = Vec::new();
                        message::write_error_data(
                            &mut line,
                            Some(id.as_str()),
                            code,
                            message,
                            Some(&data.to_string()),
                        );
                        line
                    }
                    None => {
                        let line = message::error_line(Some(id.as_str()), code, message);
                        line[..line.len() - 1].to_vec()
                    }
                };
                self.remote_said(line, Some(p));
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

    /// Answers every request of a batch with an error the relay makes: its exchange ended, and
    /// what it did answer already reached the session, which drops answers to ids no longer
    /// waiting.
    fn answer_batch(&mut self, p: &Pending, what: &str) {
        for id in &p.batch {
            self.answer_error(id, what);
        }
    }

    /// Answers request `id` with an error the relay makes.
    fn answer_error(&mut self, id: &RawId, what: &str) {
        let text = format!("mcp-relay: the remote server {what}");
        let line = message::error_line(Some(id.as_str()), codes::SERVER_FAILED, &text);
        let line = line[..line.len() - 1].to_vec();
        self.remote_said(line, None);
    }

    fn want_get(&mut self, now: Instant) {
        if let Link::Http(h) = &mut self.link {
            if h.get == GetStream::Off && matches!(h.proto, Proto::Streamable { .. }) {
                h.get = GetStream::Wanted {
                    at: now,
                    failures: 0,
                };
                h.get_gate = Some(now + GET_GATE);
            }
        }
    }

    fn open_legacy_get(&mut self, now: Instant, out: &mut VecDeque<Output>) {
        let Link::Http(h) = &mut self.link else {
            return;
        };
        let get = stream_get(&self.url, &self.config, h, None);
        let dial = Dial {
            id: self.id,
            url: &self.url,
            high_water: self.limits.max_buffered,
        };
        let deadline = Some(now + self.config.connect_timeout);
        dial.open(
            &mut self.next_n,
            h,
            Some((Purpose::LegacyGet, get)),
            deadline,
            out,
        );
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
            Tag(self.id),
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
                // And the connection ends with it: it is not reused.
                c.closing = true;
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
                            let why = reason.map_or_else(
                                || "closed the connection before answering".to_owned(),
                                |r| format!("connection failed before it answered: {r}"),
                            );
                            if p.id.is_some() {
                                if p.is_initialize() {
                                    h.init_out = false;
                                }
                                return self.unanswered(&p, &why, out);
                            }
                            self.answer_batch(&p, &why);
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
                                let r = &mut h.resumes[i];
                                r.on = None;
                                r.at = now + r.retry.unwrap_or(DEFAULT_RETRY).min(MAX_RETRY);
                                r.failures += 1;
                                if r.failures >= MAX_GET_FAILURES {
                                    let r = h.resumes.remove(i);
                                    self.resume_given_up(r);
                                }
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
        log::warn!("{}: {} sent {what}", Tag(self.id), self.url);
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
                self.answer_batch(&p, &format!("sent {what}"));
                return;
            }
        }
        self.fail(RemoteEnd::Malformed(what.to_owned()), out);
    }

    /// A stop: wait for POSTs in flight, then DELETE the session (or close the legacy
    /// stream), then finish.
    fn advance_stop(&mut self, now: Instant, out: &mut VecDeque<Output>) {
        let Link::Http(h) = &mut self.link else {
            return;
        };
        // A listen stream never ends by itself: it does not hold a stop back.
        let posts_busy = h.conns.values().any(|c| {
            matches!(c.job.as_ref().map(|j| &j.purpose),
                Some(Purpose::Post(p)) if p.method.as_deref() != Some("subscriptions/listen"))
        });
        if !self.quiet || posts_busy || !h.queue.is_empty() || h.delete_sent {
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
        let n = match h.free_conn() {
            Some(n) => n,
            None => {
                let dial = Dial {
                    id: self.id,
                    url: &self.url,
                    high_water: self.limits.max_buffered,
                };
                dial.open(&mut self.next_n, h, None, None, out)
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

/// What a new connection of one remote needs: whose it is, where, and its queue's mark.
#[derive(Clone, Copy)]
struct Dial<'a> {
    id: ChildId,
    url: &'a RemoteUrl,
    high_water: usize,
}

impl Dial<'_> {
    /// Asks the driver for connection `next_n` (taking the number), with `job` and its request
    /// bytes staged for when it opens; returns its number.
    fn open(
        self,
        next_n: &mut u32,
        h: &mut HttpLink,
        job: Option<(Purpose, Vec<u8>)>,
        deadline: Option<Instant>,
        out: &mut VecDeque<Output>,
    ) -> u32 {
        let n = *next_n;
        *next_n += 1;
        let mut c = Conn::new(UpId { server: self.id, n }, self.high_water);
        if let Some((purpose, bytes)) = job {
            c.out.stage(&bytes);
            c.job = Some(Job::new(purpose));
        }
        c.deadline = deadline;
        out.push_back(Output::Connect {
            conn: c.up,
            host: self.url.host.clone(),
            port: self.url.port,
            tls: self.url.scheme.is_tls(),
        });
        h.conns.insert(n, c);
        n
    }
}

/// A `GET` for an event stream (resumed after `last_id` when there is one).
fn stream_get(
    url: &RemoteUrl,
    config: &RemoteConfig,
    h: &HttpLink,
    last_id: Option<&str>,
) -> Vec<u8> {
    let mut extra = vec![("Accept", "text/event-stream")];
    if let Some(last) = last_id {
        extra.push(("Last-Event-ID", last));
    }
    server_request(url, config, "GET", None, &extra, h, &[])
}

impl HttpLink {
    /// An open idle connection (or one connecting with nothing to do), if there is one.
    fn free_conn(&self) -> Option<u32> {
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
            challenge: None,
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

/// The remote no longer knows the session: `404` as the spec says, or the `400` some servers
/// answer instead (the TypeScript SDK 1.x: "Bad Request: No valid session ID provided"),
/// recognised by its body naming the session.
fn session_gone(status: u16, content: &Content) -> bool {
    let body: &[u8] = match content {
        Content::Json { buf, .. } => buf,
        Content::Discard { snippet } => snippet,
        Content::Events(_) => &[],
    };
    status == 404
        || (status == 400
            && String::from_utf8_lossy(body)
                .to_ascii_lowercase()
                .contains("session"))
}

/// A refusal of `initialize` by a 2026-07-28 server (which has no `initialize`): a JSON-RPC
/// error with a code that era uses for it (method not found, unsupported version). Any other
/// 400, 404 or 405 (an HTML page, "method not allowed", "bad request") means an HTTP+SSE server.
fn is_modern_refusal(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.get("code")?.as_i64())
        // -32020 (headers do not match the body: here, no MCP-Protocol-Version) exists only
        // in 2026-07-28, so a session-era server never answers with it.
        .is_some_and(|code| matches!(code, -32601 | -32022 | -32020))
}

/// The id of a response line.
fn response_id(line: &[u8]) -> Option<RawId> {
    match classify(line) {
        Ok(Message::Single(e)) if e.kind == Kind::Response => e.id.map(RawId::from_raw),
        _ => None,
    }
}

/// A JSON-RPC error response.
fn is_error_line(line: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .is_some_and(|v| v.get("error").is_some())
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
