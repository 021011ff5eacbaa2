//! The stateless era (MCP 2026-07-28): no `initialize`, no session; every request carries
//! its protocol version, capabilities and client info in `_meta`, and mirrors its method and
//! name in headers.
//!
//! Requests are served by a pool of children, each serving one request at a time: whatever a
//! child says while it works on a request (progress, logging, requests to the client) can
//! then only belong to that request, so no client ever sees another's messages. A child is
//! initialized once, by the relay, on behalf of the first client it serves; closing a
//! response stream cancels its request.

use super::bridge::{self, Filter, RequestMeta, ServerFacts};
use super::wire::Head;
use super::{
    reject, ConnState, HttpEvent, HttpKey, HttpServer, HttpTimer, Reject, StreamId, StreamKind,
    IDLE_SESSION,
};
use crate::message::{self, codes, Envelope, Kind, RawId};
use crate::timer::Timer;
use crate::{ConnId, ServerId};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The stateless protocol version.
pub(crate) const STATELESS_VERSION: &str = bridge::MODERN;

/// The ids of the requests the relay itself sends a pool child while setting it up.
const INIT_ID: &str = "mcp-relay:stateless-init";
const SETTLE_ID: &str = "mcp-relay:stateless-settle";
const LOG_LEVEL_ID: &str = "mcp-relay:stateless-log-level";
const SUBSCRIPTION_ID: &str = "mcp-relay:stateless-subscription";

/// How long the requests a child sends the client are gathered into one `input_required`
/// round (a server that needs several answers usually asks for them back to back).
const INPUT_GATHER: Duration = Duration::from_millis(20);

/// How long a request is held for its retry before new work may take its server.
const EVICT_AFTER: Duration = Duration::from_secs(5);

/// Most requests to the client one request may have outstanding; more are refused to the
/// server (bounds what a server that asks without end makes the relay hold).
const MAX_INPUT_REQUESTS: usize = 16;

/// The part of the HTTP server that serves 2026-07-28 clients from session-era children.
/// Each server (`/mcp` for the default one, `/servers/NAME/mcp`) has its own pool children,
/// facts and listen streams; a request, a child and a listen stream each name their server.
#[derive(Default)]
pub(crate) struct Bridge {
    children: BTreeMap<HttpKey, PoolChild>,
    /// Open `subscriptions/listen` streams.
    listens: BTreeMap<StreamId, Listen>,
    /// Requests handed to children so far (names the ids children see).
    requests: u64,
    /// What each server said of itself, and what watches its resources.
    known: BTreeMap<ServerId, Known>,
}

/// What the bridge learnt of one server.
#[derive(Default)]
struct Known {
    /// What the server said of itself at its first pool child's `initialize`.
    facts: Option<ServerFacts>,
    /// Tools whose parameters are mirrored in `Mcp-Param-*` headers: parameter, header.
    mirrored: BTreeMap<String, Vec<(String, String)>>,
    /// The child that watches resources for every listen stream of this server, and what it
    /// was asked to watch.
    subscriber: Option<HttpKey>,
    subscribed: std::collections::BTreeSet<String>,
}

impl Bridge {
    /// A pool child held for a client's retry (an `input_required` round is open).
    pub(crate) fn holds(&self, key: HttpKey) -> bool {
        self.children.get(&key).is_some_and(|c| c.job.is_some())
    }

    /// The request a child serves, if any.
    fn job(&self, key: HttpKey) -> Option<&Job> {
        self.children.get(&key).and_then(|c| c.job.as_ref())
    }

    fn job_mut(&mut self, key: HttpKey) -> Option<&mut Job> {
        self.children.get_mut(&key).and_then(|c| c.job.as_mut())
    }

    /// Requests held for retries, for `/metrics`.
    pub(crate) fn awaiting_input(&self) -> usize {
        self.children
            .values()
            .filter(|c| c.job.as_ref().is_some_and(|j| j.secret.is_some()))
            .count()
    }

    /// Open listen streams.
    pub(crate) fn listens(&self) -> usize {
        self.listens.len()
    }

    /// The server a pool child serves.
    fn server_of(&self, key: HttpKey) -> Option<ServerId> {
        self.children.get(&key).map(|c| c.server)
    }

    fn known(&mut self, server: ServerId) -> &mut Known {
        self.known.entry(server).or_default()
    }

    fn facts(&self, server: ServerId) -> Option<&ServerFacts> {
        self.known.get(&server).and_then(|k| k.facts.as_ref())
    }

    /// A server is gone: what was learnt of it with it.
    pub(crate) fn forget(&mut self, server: ServerId) {
        self.known.remove(&server);
    }
}

impl Known {
    /// Learns from a `tools/list` answer which tool parameters travel in headers too.
    fn learn_tools(&mut self, answer: &[u8]) {
        for (tool, params) in bridge::mirrored_params(answer) {
            if params.is_empty() {
                self.mirrored.remove(&tool);
            } else if self.mirrored.len() < MAX_MIRRORED_TOOLS || self.mirrored.contains_key(&tool)
            {
                self.mirrored.insert(tool, params);
            }
        }
    }
}

/// Most tools whose header-mirrored parameters are remembered (bounds what a server's
/// `tools/list` makes the relay hold).
const MAX_MIRRORED_TOOLS: usize = 4096;

/// Where a pool child is in the relay's setup of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `initialize` sent; its answer is awaited.
    Initializing,
    /// `notifications/initialized` sent, and a request behind it (`logging/setLevel`, or
    /// `ping`) whose answer says the child has taken the notification in.
    Settling,
    /// Serves requests.
    Ready,
}

struct PoolChild {
    server: ServerId,
    phase: Phase,
    /// The client request it serves, from dispatch to its final answer.
    job: Option<Job>,
}

/// One client request on a pool child, across its `input_required` rounds.
struct Job {
    method: String,
    name: Option<String>,
    /// The id the child knows the request by (the first round's).
    child_id: RawId,
    /// The id of the HTTP request being answered now (a retry's, after the first round).
    client_id: RawId,
    meta: RequestMeta,
    /// The progress token the child was given, and the current request's.
    child_token: Option<Value>,
    client_token: Option<Value>,
    /// The child's requests to the client not yet put to it.
    round: Vec<Value>,
    /// Requests put to the client, awaiting its retry.
    asked: Vec<Asked>,
    next_key: u32,
    /// The secret half of the `requestState` handed out; taken by the retry that uses it.
    secret: Option<String>,
    /// The child's final answer, when it came while no HTTP request waited for it.
    answer: Option<Vec<u8>>,
    /// Progress and log notifications said while no HTTP request waited, and their size.
    held: std::collections::VecDeque<Value>,
    held_bytes: usize,
    /// The child was told this client's roots: servers keep them, and the next client must
    /// not be served by a process that holds another's.
    knows_roots: bool,
}

struct Asked {
    key: String,
    /// The child's id for its request.
    child_req: Value,
    /// `{method, params}` as the client sees it.
    request: Value,
}

struct Listen {
    server: ServerId,
    id: RawId,
    filter: Filter,
    /// Resources whose updates it carries.
    resources: Vec<String>,
}

/// What a queued request is.
pub(crate) enum Work {
    /// Forwarded to a pool child.
    Forward,
    /// Answered by the relay once it knows the server (`server/discover`).
    Discover,
    /// Opened by the relay once it knows the server (`subscriptions/listen`).
    Listen(Value),
}

/// A request waiting for a free child (or for the server's facts).
pub(crate) struct Queued {
    pub(crate) conn: ConnId,
    server: ServerId,
    pub(crate) line: Vec<u8>,
    pub(crate) id: RawId,
    pub(crate) headers: Vec<(&'static str, String)>,
    work: Work,
    method: String,
    name: Option<String>,
    meta: RequestMeta,
    token: Option<Value>,
}

/// The stateless version a POST speaks, if it speaks it: an `MCP-Protocol-Version` of
/// 2026-07-28, or a version no session-era request would carry on a request that names its
/// version in `_meta` (so that it gets the modern era's errors).
pub(crate) fn modern_version(head: &Head, entries: &[Envelope<'_>]) -> Option<String> {
    let meta = match entries {
        [e] => parse_params(e.params)
            .as_ref()
            .and_then(|p| bridge::meta_version(Some(p)).map(str::to_owned)),
        _ => None,
    };
    match head.header("mcp-protocol-version") {
        Some(v) if v == STATELESS_VERSION => Some(v.to_owned()),
        Some(v) if super::SESSION_ERA_VERSIONS.contains(&v) => None,
        Some(v) => {
            (head.header("mcp-session-id").is_none() && meta.is_some()).then(|| v.to_owned())
        }
        None if head.header("mcp-session-id").is_some() => None,
        None => meta,
    }
}

fn parse_params(params: Option<&serde_json::value::RawValue>) -> Option<Value> {
    serde_json::from_str(params?.get()).ok()
}

/// 400 with -32022, the versions this relay speaks (the modern ones only, for a modern
/// request: those are the ones `server/discover` lists) and the one asked for.
pub(crate) fn unsupported_version(v: &str, id: Option<RawId>, modern: bool) -> Reject {
    let mut supported: Vec<&str> = Vec::new();
    if !modern {
        supported.extend_from_slice(&super::SESSION_ERA_VERSIONS);
    }
    supported.push(STATELESS_VERSION);
    let mut r = reject(
        400,
        codes::UNSUPPORTED_VERSION,
        format!(
            "mcp-relay: unsupported protocol version {v}; supported: {}",
            supported.join(", ")
        ),
    );
    r.data = Some(serde_json::json!({"supported": supported, "requested": v}).to_string());
    r.id = id;
    r
}

/// Decodes an `Mcp-Name` value: plain, or `=?base64?…?=` for values that are not header-safe.
fn header_value(v: &str) -> Option<String> {
    match v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => String::from_utf8(base64_decode(b64)?).ok(),
        None => Some(v.to_owned()),
    }
}

/// Standard base64 with its padding, strictly: a value with a character outside the
/// alphabet, or padding that is not where it must be, is refused (SEP-2243).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let pad = bytes.iter().rev().take_while(|c| **c == b'=').count();
    if pad > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in &bytes[..bytes.len() - pad] {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Checks the `Mcp-Param-*` headers of a `tools/call` against the body, for the tool's
/// parameters that its schema mirrors in headers (`x-mcp-header`, SEP-2243).
fn check_param_headers(
    head: &Head,
    id: &RawId,
    mirrored: &[(String, String)],
    arguments: Option<&Value>,
) -> Result<(), Reject> {
    for (param, header) in mirrored {
        let body = arguments.and_then(|a| a.get(param)).and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        });
        let name = format!("mcp-param-{}", header.to_ascii_lowercase());
        let sent = head.header(&name);
        let problem = match (sent, &body) {
            (None, None) => None,
            (None, Some(_)) => Some(format!("the Mcp-Param-{header} header is missing")),
            (Some(_), None) => Some(format!(
                "Mcp-Param-{header} is set but the body has no {param}"
            )),
            (Some(h), Some(b)) => match header_value(h) {
                None => Some(format!("Mcp-Param-{header} is not valid base64")),
                Some(v) if &v != b => Some(format!(
                    "Mcp-Param-{header} does not match the body's {param}"
                )),
                Some(_) => None,
            },
        };
        if let Some(what) = problem {
            let mut r = reject(400, codes::HEADER_MISMATCH, format!("mcp-relay: {what}"));
            r.id = Some(id.clone());
            return Err(r);
        }
    }
    Ok(())
}

/// Checks that the headers mirror the body, as 2026-07-28 requires.
fn check_headers(
    head: &Head,
    e: &Envelope<'_>,
    params: Option<&Value>,
    version: &str,
) -> Result<(), Reject> {
    let mismatch = |what: String| {
        let mut r = reject(400, codes::HEADER_MISMATCH, format!("mcp-relay: {what}"));
        r.id = e.id.map(RawId::from_raw);
        r
    };
    match head.header("mcp-protocol-version") {
        Some(h) if h != version => {
            return Err(mismatch(format!(
                "MCP-Protocol-Version {h} does not match _meta's {version}"
            )))
        }
        None => {
            return Err(mismatch(
                "the MCP-Protocol-Version header is missing".into(),
            ))
        }
        _ => {}
    }
    if bridge::meta_version(params) != Some(version) {
        return Err(mismatch(format!(
            "_meta[\"io.modelcontextprotocol/protocolVersion\"] must be {version}"
        )));
    }
    let method = e.method.as_deref().unwrap_or("");
    match head.header("mcp-method") {
        Some(m) if m == method => {}
        Some(m) => {
            return Err(mismatch(format!(
                "Mcp-Method {m} does not match the body's method {method}"
            )))
        }
        None => return Err(mismatch("the Mcp-Method header is missing".into())),
    }
    let name_field = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    if let Some(field) = name_field {
        let body_name = message::param_str(e.params, field).unwrap_or_default();
        let Some(sent) = head.header("mcp-name") else {
            return Err(mismatch("the Mcp-Name header is missing".into()));
        };
        match header_value(sent) {
            Some(n) if n == body_name => {}
            Some(n) => {
                return Err(mismatch(format!(
                    "Mcp-Name {n} does not match the body's {field} {body_name}"
                )))
            }
            None => return Err(mismatch("the Mcp-Name header is not valid base64".into())),
        }
    }
    Ok(())
}

impl HttpServer {
    /// A POST of the 2026-07-28 era: checked, then answered by the relay (`server/discover`,
    /// `subscriptions/listen`, removed methods, a retry of a held request) or queued for a
    /// pool child. `batch`: the body is a JSON array, even of one message (which would
    /// otherwise reach the child as it came, with the client's id).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stateless_post(
        &mut self,
        now: Instant,
        conn: ConnId,
        server: ServerId,
        head: &Head,
        body: &[u8],
        entries: &[Envelope<'_>],
        batch: bool,
        version: String,
        cors: &[(&'static str, String)],
    ) -> Result<(), Reject> {
        let ([e], false) = (entries, batch) else {
            return Err(reject(
                400,
                codes::INVALID_REQUEST,
                "mcp-relay: batches are not part of MCP 2026-07-28",
            ));
        };
        let id = e.id.map(RawId::from_raw);
        let params = parse_params(e.params);
        if version != STATELESS_VERSION {
            let meta = bridge::meta_version(params.as_ref());
            if meta.is_none() || meta == Some(version.as_str()) {
                return Err(unsupported_version(&version, id, true));
            }
        }
        let (Kind::Request, Some(id)) = (e.kind, id) else {
            check_headers(head, e, params.as_ref(), STATELESS_VERSION)?;
            // Notifications need no child: nothing in this era waits on them.
            self.respond_headers(conn, 202, cors, None, b"");
            return Ok(());
        };
        let invalid = |message: String| {
            let mut r = reject(400, codes::INVALID_PARAMS, format!("mcp-relay: {message}"));
            r.id = Some(id.clone());
            r
        };
        let meta = bridge::check_meta(params.as_ref()).map_err(invalid)?;
        check_headers(head, e, params.as_ref(), &version)?;
        let method = e.method.as_deref().unwrap_or("");
        if bridge::REMOVED_METHODS.contains(&method) {
            let mut r = reject(
                404,
                codes::METHOD_NOT_FOUND,
                format!("Method not found: {method} is not part of MCP 2026-07-28"),
            );
            r.id = Some(id);
            return Err(r);
        }
        let name = ["name", "uri"]
            .iter()
            .find_map(|f| params.as_ref()?.get(*f)?.as_str().map(str::to_owned));
        let token = params
            .as_ref()
            .and_then(|p| p.pointer("/_meta/progressToken"))
            .cloned();
        if method == "tools/call" {
            let mirrored = self.bridge.known.get(&server).map(|k| &k.mirrored);
            if let Some(mirrored) = name.as_ref().and_then(|n| mirrored?.get(n)) {
                let arguments = params.as_ref().and_then(|p| p.get("arguments"));
                check_param_headers(head, &id, mirrored, arguments)?;
            }
        }
        if let Some(responses) = params.as_ref().and_then(|p| p.get("inputResponses")) {
            let well_formed = responses
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_object));
            if !well_formed {
                return Err(invalid(
                    "inputResponses must be an object of results, one per input request".into(),
                ));
            }
        }
        if let Some(state) = params
            .as_ref()
            .and_then(|p| p.get("requestState"))
            .and_then(Value::as_str)
        {
            return self.retry(
                now,
                conn,
                RetryOf {
                    server,
                    id,
                    state: state.to_owned(),
                    method: method.to_owned(),
                    name,
                    meta,
                    token,
                    responses: params
                        .as_ref()
                        .and_then(|p| p.get("inputResponses"))
                        .cloned(),
                    headers: cors.to_vec(),
                },
            );
        }
        if self.draining {
            // New work goes elsewhere; a retry above still reaches the request it resumes.
            let mut r = reject(
                503,
                codes::SERVER_UNAVAILABLE,
                "mcp-relay: the relay is shutting down; send the request to another relay",
            );
            r.id = Some(id);
            return Err(r);
        }
        let work = match method {
            "server/discover" => Work::Discover,
            "subscriptions/listen" => Work::Listen(
                params
                    .as_ref()
                    .and_then(|p| p.get("notifications"))
                    .cloned()
                    .unwrap_or(Value::Null),
            ),
            _ => Work::Forward,
        };
        let queued = Queued {
            conn,
            server,
            line: body.to_vec(),
            id,
            headers: cors.to_vec(),
            work,
            method: method.to_owned(),
            name,
            meta,
            token,
        };
        if !matches!(queued.work, Work::Forward) && self.bridge.facts(server).is_some() {
            self.answer_locally(queued);
            return Ok(());
        }
        let waiting = self.pool_queue.len();
        // The bytes waiting are bounded too: each request holds its whole body.
        let queued_bytes: usize = self.pool_queue.iter().map(|q| q.line.len()).sum();
        let byte_limit = 4 * (self.config.max_buffered + self.config.max_message_size);
        if waiting >= self.config.http.max_sessions || queued_bytes + queued.line.len() > byte_limit
        {
            let mut r = reject(
                503,
                codes::SERVER_UNAVAILABLE,
                format!("mcp-relay: {waiting} stateless requests ({queued_bytes} bytes) already wait for a server; try again later"),
            );
            r.headers.push(("Retry-After", "1".into()));
            r.id = Some(queued.id);
            return Err(r);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnState::Queued;
        }
        self.pool_queue.push_back(queued);
        self.pool_dispatch(now);
        Ok(())
    }

    /// `server/discover` and `subscriptions/listen`, once the server's facts are known.
    fn answer_locally(&mut self, q: Queued) {
        let Some(facts) = self.bridge.facts(q.server).cloned() else {
            return;
        };
        match q.work {
            Work::Discover => {
                let answer = bridge::discover(&q.id, &facts);
                self.respond_headers(q.conn, 200, &q.headers, Some("application/json"), &answer);
                self.after_response(q.conn);
            }
            Work::Listen(requested) => {
                let filter = facts.honored(&requested);
                let resources = facts.honored_resources(&requested);
                let stream = self.new_stream(LISTENERS, StreamKind::Post, Some(q.conn), false);
                if let Some(st) = self.streams.get_mut(&stream) {
                    st.waiting = vec![q.id.clone()];
                    st.extra_headers = q.headers;
                    st.stateless = true;
                }
                let ack = bridge::listen_ack(&q.id, filter, &resources);
                self.bridge.listens.insert(
                    stream,
                    Listen {
                        server: q.server,
                        id: q.id,
                        filter,
                        resources,
                    },
                );
                self.stream_send(stream, ack, false);
                self.sync_subscriptions(q.server);
            }
            Work::Forward => {}
        }
    }

    /// Hands queued requests to free children of their servers, starting children up to the
    /// pool size (per server). Requests for one server are handed out in order; one that must
    /// wait holds back only its own server's.
    pub(crate) fn pool_dispatch(&mut self, now: Instant) {
        for s in self.sessions.values_mut() {
            if s.cooldown_until.is_some_and(|t| t <= now) {
                s.cooldown_until = None;
            }
        }
        let mut blocked: std::collections::BTreeSet<ServerId> = Default::default();
        let mut at = 0;
        while let Some(next) = self.pool_queue.get(at) {
            let server = next.server;
            if blocked.contains(&server) {
                at += 1;
                continue;
            }
            let still_waiting = self
                .conns
                .get(&next.conn)
                .is_some_and(|c| matches!(c.state, ConnState::Queued));
            if !still_waiting {
                self.pool_queue.remove(at);
                continue;
            }
            let forward = matches!(next.work, Work::Forward);
            if !forward && self.bridge.facts(server).is_some() {
                if let Some(q) = self.pool_queue.remove(at) {
                    self.answer_locally(q);
                }
                continue;
            }
            let ready = self
                .bridge
                .children
                .values()
                .any(|c| c.server == server && c.phase == Phase::Ready);
            if !forward && ready {
                // A child is serving, yet the server told nothing of itself: it refused
                // initialize. There is nothing to answer from.
                if let Some(q) = self.pool_queue.remove(at) {
                    let mut r = reject(
                        500,
                        codes::SERVER_UNAVAILABLE,
                        "mcp-relay: the server refused initialize, so there is nothing to discover",
                    );
                    r.id = Some(q.id);
                    self.fail(q.conn, r, false);
                    self.after_response(q.conn);
                }
                continue;
            }
            let free = forward
                .then(|| {
                    self.sessions
                        .iter()
                        .find(|(k, s)| {
                            s.pool
                                && !s.finished
                                && s.busy.is_none()
                                && s.cooldown_until.is_none()
                                && self.bridge.children.get(k).is_some_and(|c| {
                                    c.server == server && c.phase == Phase::Ready && c.job.is_none()
                                })
                        })
                        .map(|(k, _)| *k)
                })
                .flatten();
            let Some(key) = free else {
                // Nothing can take it yet: a child is started if none is on its way.
                let live: Vec<HttpKey> = self
                    .sessions
                    .iter()
                    .filter(|(k, s)| {
                        s.pool && !s.finished && self.bridge.server_of(**k) == Some(server)
                    })
                    .map(|(k, _)| *k)
                    .collect();
                let starting = live
                    .iter()
                    .filter(|k| {
                        self.bridge
                            .children
                            .get(k)
                            .is_some_and(|c| c.phase != Phase::Ready)
                    })
                    .count();
                let wanted = self
                    .pool_queue
                    .iter()
                    .filter(|q| q.server == server)
                    .count();
                if starting < wanted && live.len() < self.config.http.stateless_pool {
                    self.new_pool_child(now, server);
                } else if forward && starting == 0 {
                    // Every child is busy or held for a retry: the longest-held request gives
                    // way (its retry will be told its requestState expired), so that clients
                    // that never retry cannot take the pool.
                    if let Some(held) = self.longest_held(server) {
                        log::info!("stateless: every server is busy or held for a retry; the longest-held input_required request is given up");
                        self.evict(now, held);
                        continue;
                    }
                }
                blocked.insert(server);
                at += 1;
                continue;
            };
            let Some(q) = self.pool_queue.remove(at) else {
                return;
            };
            // No resumability in this era: no priming event.
            let stream = self.new_stream(key, StreamKind::Post, Some(q.conn), false);
            if let Some(st) = self.streams.get_mut(&stream) {
                st.waiting = vec![q.id.clone()];
                st.extra_headers = q.headers;
                st.stateless = true;
            }
            if let Some(s) = self.sessions.get_mut(&key) {
                s.busy = Some(stream);
                s.last_activity = now;
            }
            self.timers.set(
                HttpTimer::Session(key),
                Some((now + self.config.http.session_timeout, IDLE_SESSION)),
            );
            // The child knows the request by an id and a progress token of the relay's own,
            // so that nothing it says late about an earlier request can pass for this one's.
            self.bridge.requests += 1;
            let n = self.bridge.requests;
            let child_id = RawId::string(&format!("mcp-relay:{n}"));
            let child_token = q
                .token
                .as_ref()
                .map(|_| Value::from(format!("mcp-relay:{n}")));
            let line =
                bridge::for_child(&q.line, &child_id, child_token.as_ref()).unwrap_or(q.line);
            if let Some(c) = self.bridge.children.get_mut(&key) {
                c.job = Some(Job {
                    method: q.method,
                    name: q.name,
                    child_id,
                    client_id: q.id,
                    meta: q.meta,
                    child_token,
                    client_token: q.token,
                    round: Vec::new(),
                    asked: Vec::new(),
                    next_key: 1,
                    secret: None,
                    answer: None,
                    held: Default::default(),
                    held_bytes: 0,
                    knows_roots: false,
                });
            }
            self.events
                .push_back(HttpEvent::Message { key, body: line });
        }
    }

    /// Starts a pool child and initializes it with every client capability (see
    /// [`bridge::pool_initialize`]); it serves once it has settled.
    fn new_pool_child(&mut self, now: Instant, server: ServerId) -> HttpKey {
        let key = self.new_key();
        self.pool_started += 1;
        let label = format!("stateless#{}", self.pool_started);
        self.events
            .push_back(HttpEvent::Opened { key, label, server });
        self.sessions.insert(
            key,
            super::HttpSession {
                id: format!("stateless-{}", key.0),
                legacy: false,
                pool: true,
                busy: None,
                cooldown_until: None,
                token: super::Grant {
                    server,
                    token: None,
                },
                get_stream: None,
                streams: Vec::new(),
                pending: Default::default(),
                pending_bytes: 0,
                progress: BTreeMap::new(),
                last_activity: now,
                protocol_version: STATELESS_VERSION.to_owned(),
                finished: false,
                conns: Default::default(),
                ready: false,
                parked: Default::default(),
                parked_bytes: 0,
            },
        );
        self.bridge.children.insert(
            key,
            PoolChild {
                server,
                phase: Phase::Initializing,
                job: None,
            },
        );
        let idle = now + self.config.http.session_timeout;
        self.timers
            .set(HttpTimer::Session(key), Some((idle, IDLE_SESSION)));
        self.tell_child(key, bridge::pool_initialize(INIT_ID));
        key
    }

    fn tell_child(&mut self, key: HttpKey, body: Vec<u8>) {
        self.events.push_back(HttpEvent::Message { key, body });
    }

    /// A message from a pool child: the bridge decides where it goes (see [`bridge`]).
    pub(super) fn pool_message(&mut self, key: HttpKey, msg: Vec<u8>) {
        let Ok(v) = serde_json::from_slice::<Value>(&msg) else {
            log::debug!("stateless child: a message that is not a JSON object; dropped");
            return;
        };
        let method = v.get("method").and_then(Value::as_str).map(str::to_owned);
        match (method, v.get("id")) {
            (Some(method), Some(id)) => self.child_request(key, &method, id.clone(), &v),
            (Some(method), None) => self.child_notification(key, &method, &v),
            (None, Some(id)) => self.child_answer(key, id, &msg),
            (None, None) => log::debug!("stateless child: a message of no known kind; dropped"),
        }
    }

    fn child_answer(&mut self, key: HttpKey, id: &Value, msg: &[u8]) {
        let Some(child) = self.bridge.children.get_mut(&key) else {
            return;
        };
        let server = child.server;
        match id.as_str() {
            Some(INIT_ID) => {
                if child.phase != Phase::Initializing {
                    return;
                }
                let facts = ServerFacts::from_initialize(msg);
                if facts.is_none() {
                    log::warn!("stateless child: the server refused initialize; serving it anyway");
                }
                child.phase = Phase::Settling;
                let logging = facts.as_ref().is_some_and(ServerFacts::logging);
                let known = self.bridge.known(server);
                if known.facts.is_none() {
                    known.facts = facts;
                }
                self.tell_child(
                    key,
                    br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_vec(),
                );
                // Its answer says the notification was taken in (a server registers what the
                // capabilities allow on it); log levels are filtered per request here.
                if logging {
                    self.tell_child(key, format!(r#"{{"jsonrpc":"2.0","id":"{LOG_LEVEL_ID}","method":"logging/setLevel","params":{{"level":"debug"}}}}"#).into_bytes());
                }
                let tools = self.bridge.facts(server).is_some_and(ServerFacts::tools);
                let settle = if tools {
                    // Its tools' header-mirrored parameters are checked on every call.
                    format!(r#"{{"jsonrpc":"2.0","id":"{SETTLE_ID}","method":"tools/list"}}"#)
                } else {
                    format!(r#"{{"jsonrpc":"2.0","id":"{SETTLE_ID}","method":"ping"}}"#)
                };
                self.tell_child(key, settle.into_bytes());
                // What waits for the server's facts can be answered now.
                let now = self.now;
                self.pool_dispatch(now);
            }
            Some(LOG_LEVEL_ID | SUBSCRIPTION_ID) => {}
            Some(SETTLE_ID) => {
                self.bridge.known(server).learn_tools(msg);
                let Some(child) = self.bridge.children.get_mut(&key) else {
                    return;
                };
                if child.phase == Phase::Settling {
                    child.phase = Phase::Ready;
                    self.sync_subscriptions(server);
                    let now = self.now;
                    self.pool_dispatch(now);
                }
            }
            _ => {
                let Some(job) = child.job.as_mut() else {
                    log::debug!("stateless child: an answer no request waits for; dropped");
                    return;
                };
                if serde_json::to_string(id).ok().as_deref() != Some(job.child_id.as_str()) {
                    log::debug!("stateless child: an answer to {id}, not to its request; dropped");
                    return;
                }
                if job.method == "tools/list" {
                    self.bridge.known(server).learn_tools(msg);
                }
                let Some(job) = self.bridge.job_mut(key) else {
                    return;
                };
                let stream = self.sessions.get(&key).and_then(|s| s.busy);
                match stream {
                    Some(stream) => {
                        let answer = bridge::complete(msg, &job.method, &job.client_id);
                        self.stream_send(stream, answer, true);
                    }
                    // Held for a retry: the retry gets it.
                    None => job.answer = Some(msg.to_vec()),
                }
            }
        }
    }

    fn child_request(&mut self, key: HttpKey, method: &str, id: Value, v: &Value) {
        let serving = self.bridge.job(key).is_some();
        if method == "ping" {
            self.tell_child(key, bridge::input_answer(&id, &serde_json::json!({})));
            return;
        }
        let refuse = |why: String| bridge::refuse_input(&id, &format!("mcp-relay: {why}"));
        if bridge::input_kind(method).is_none() {
            let no = refuse(format!("a MCP 2026-07-28 client cannot be asked {method}"));
            self.tell_child(key, no);
            return;
        }
        if !serving {
            let no = refuse(format!(
                "{method} outside any client request: a MCP 2026-07-28 client can only be asked within one"
            ));
            self.tell_child(key, no);
            return;
        }
        let Some(job) = self.bridge.job_mut(key) else {
            return;
        };
        if job.round.len() + job.asked.len() >= MAX_INPUT_REQUESTS {
            let no = refuse(format!(
                "more than {MAX_INPUT_REQUESTS} requests to the client at once"
            ));
            self.tell_child(key, no);
            return;
        }
        job.round.push(v.clone());
        let attached = self.sessions.get(&key).is_some_and(|s| s.busy.is_some());
        if attached && self.timers.get(HttpTimer::Input(key)).is_none() {
            self.timers.set(
                HttpTimer::Input(key),
                Some((self.now + INPUT_GATHER, Timer::StatelessInputRound)),
            );
        }
    }

    fn child_notification(&mut self, key: HttpKey, method: &str, v: &Value) {
        if bridge::is_listen_notification(method) {
            let Some(server) = self
                .bridge
                .children
                .get(&key)
                .filter(|c| c.phase == Phase::Ready)
                .map(|c| c.server)
            else {
                // Said while it registered what its capabilities allow: not news to anyone.
                return;
            };
            let updated = (method == "notifications/resources/updated")
                .then(|| v.pointer("/params/uri").and_then(Value::as_str))
                .flatten();
            let subscriber = self.bridge.known.get(&server).and_then(|k| k.subscriber);
            if method == "notifications/resources/updated" && subscriber != Some(key) {
                // One child watches for all clients; another's word would be a repeat.
                return;
            }
            let targets: Vec<(StreamId, RawId)> = self
                .bridge
                .listens
                .iter()
                .filter(|(stream, l)| {
                    l.server == server
                        && self.streams.contains_key(stream)
                        && match updated {
                            Some(uri) => l.resources.iter().any(|w| bridge::update_matches(w, uri)),
                            None => l.filter.wants(method),
                        }
                })
                .map(|(stream, l)| (*stream, l.id.clone()))
                .collect();
            for (stream, id) in targets {
                let tagged = bridge::tag_subscription(v, &id);
                self.stream_send(stream, tagged, false);
            }
            return;
        }
        let stream = self.sessions.get(&key).and_then(|s| s.busy);
        let limit = self.config.max_buffered;
        let Some(job) = self.bridge.job_mut(key) else {
            return;
        };
        let Some(stream) = stream else {
            // Held for a retry, the child works on: what it says about the request waits
            // for the retry (within --max-buffered; the oldest goes first past it).
            if matches!(method, "notifications/progress" | "notifications/message") {
                job.held_bytes += v.to_string().len();
                job.held.push_back(v.clone());
                while job.held_bytes > limit {
                    match job.held.pop_front() {
                        Some(old) => job.held_bytes -= old.to_string().len(),
                        None => break,
                    }
                }
            }
            return;
        };
        let job = &*job;
        match method {
            "notifications/progress" => {
                let Some(token) = job.client_token.clone() else {
                    return;
                };
                if v.pointer("/params/progressToken") != job.child_token.as_ref() {
                    return;
                }
                let mut n = v.clone();
                if let Some(p) = n.get_mut("params").and_then(Value::as_object_mut) {
                    p.insert("progressToken".into(), token);
                }
                let bytes = serde_json::to_vec(&n).unwrap_or_default();
                self.stream_send(stream, bytes, false);
            }
            "notifications/message" => {
                if bridge::log_passes(v, job.meta.log_level) {
                    let bytes = serde_json::to_vec(v).unwrap_or_default();
                    self.stream_send(stream, bytes, false);
                }
            }
            _ => log::debug!("stateless child: {method} is not for a 2026-07-28 client; dropped"),
        }
    }

    /// The gathering of a round of requests to the client ended, or a held request's retry
    /// never came.
    pub(super) fn input_timer(&mut self, now: Instant, key: HttpKey) {
        let attached = self.sessions.get(&key).is_some_and(|s| s.busy.is_some());
        let Some(job) = self.bridge.job(key) else {
            return;
        };
        if attached {
            self.flush_round(now, key);
        } else if job.secret.is_some() {
            log::info!(
                "stateless: no retry came for an input_required answer within --session-timeout; the request is cancelled"
            );
            let child_id = job.child_id.clone();
            self.pool_release(
                now,
                key,
                Some((child_id, "the client did not retry in time")),
            );
        }
    }

    /// Puts the round's requests to the client as one `input_required` answer; those that
    /// need a capability the client did not declare are refused to the child, and if none is
    /// left the client gets -32021.
    fn flush_round(&mut self, now: Instant, key: HttpKey) {
        self.timers.set(HttpTimer::Input(key), None);
        let Some(stream) = self.sessions.get(&key).and_then(|s| s.busy) else {
            return;
        };
        let Some(job) = self.bridge.job_mut(key) else {
            return;
        };
        let mut refused = Vec::new();
        let mut missing: Vec<(&'static str, Option<&'static str>)> = Vec::new();
        for request in std::mem::take(&mut job.round) {
            let method = request.get("method").and_then(Value::as_str).unwrap_or("");
            let child_req = request.get("id").cloned().unwrap_or(Value::Null);
            let (Some((_, short)), Some((cap, part))) =
                (bridge::input_kind(method), bridge::needed(&request))
            else {
                continue;
            };
            if !bridge::declared(&job.meta.capabilities, cap, part) {
                let what = match part {
                    Some(p) => format!("{cap}.{p}"),
                    None => cap.to_owned(),
                };
                refused.push(bridge::refuse_input(
                    &child_req,
                    &format!("mcp-relay: the client did not declare the {what} capability"),
                ));
                if !missing.contains(&(cap, part)) {
                    missing.push((cap, part));
                }
                continue;
            }
            let k = format!("{short}-{}", job.next_key);
            job.next_key += 1;
            job.asked.push(Asked {
                key: k,
                child_req,
                request: bridge::as_input_request(&request),
            });
        }
        if job.asked.is_empty() {
            if missing.is_empty() {
                return;
            }
            // Nothing the client can be asked: the request fails as 2026-07-28 says.
            let answer = bridge::missing_capabilities(&job.client_id, &missing);
            let child_id = job.child_id.clone();
            if let Some(s) = self.sessions.get_mut(&key) {
                s.busy = None;
            }
            for no in refused {
                self.tell_child(key, no);
            }
            self.stream_send(stream, answer, true);
            let why = "the client lacks a capability the request needs";
            self.pool_release(now, key, Some((child_id, why)));
            return;
        }
        let secret = self.new_secret();
        let state = format!("{}{}.{secret}", self.instance_prefix(), key.0);
        let Some(job) = self.bridge.job_mut(key) else {
            return;
        };
        job.secret = Some(secret);
        let asks: Vec<(String, Value)> = job
            .asked
            .iter()
            .map(|a| (a.key.clone(), a.request.clone()))
            .collect();
        let answer = bridge::input_required(&job.client_id, &asks, &state);
        for no in refused {
            self.tell_child(key, no);
        }
        // The stream ends with this answer; the child stays with the request.
        if let Some(s) = self.sessions.get_mut(&key) {
            s.busy = None;
            s.last_activity = now;
        }
        self.stream_send(stream, answer, true);
        self.timers.set(
            HttpTimer::Input(key),
            Some((
                now + self.config.http.session_timeout,
                Timer::StatelessRetryWait,
            )),
        );
    }

    fn new_secret(&mut self) -> String {
        use rand_core::RngCore;
        let mut b = [0u8; 16];
        self.rng.fill_bytes(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// The client's retry of a request answered with `input_required`: its answers go to the
    /// child that asked, still waiting, and what the child says next is this retry's answer.
    fn retry(&mut self, now: Instant, conn: ConnId, r: RetryOf) -> Result<(), Reject> {
        let invalid = || {
            let mut e = reject(
                400,
                codes::INVALID_PARAMS,
                "mcp-relay: requestState is not one this relay issued, or it expired or was already used",
            );
            e.id = Some(r.id.clone());
            e
        };
        let (k, secret) = match r.state.rsplitn(3, '.').collect::<Vec<_>>()[..] {
            [secret, k] if self.config.http.instance_id.is_empty() => (k, secret),
            [secret, k, instance] if instance == self.config.http.instance_id => (k, secret),
            [_, _, instance] => {
                let mut e = invalid();
                e.message = format!(
                    "mcp-relay: this requestState was issued by relay instance {instance:?}, not by this one; a load balancer must send a retry to the relay that issued it"
                );
                return Err(e);
            }
            _ => return Err(invalid()),
        };
        let key = HttpKey(k.parse().map_err(|_| invalid())?);
        let attached = self
            .sessions
            .get(&key)
            .is_none_or(|s| s.busy.is_some() || s.finished);
        if self.bridge.server_of(key) != Some(r.server) {
            // Another server's request: its route is not where this one continues.
            return Err(invalid());
        }
        let job = self.bridge.job_mut(key).ok_or_else(invalid)?;
        let genuine = job
            .secret
            .as_deref()
            .is_some_and(|s| super::constant_time_eq(s.as_bytes(), secret.as_bytes()));
        if !genuine || attached {
            return Err(invalid());
        }
        if job.method != r.method || job.name != r.name {
            let mut e = invalid();
            e.message = format!(
                "mcp-relay: requestState belongs to a {} request, not to this {}",
                job.method, r.method
            );
            return Err(e);
        }
        job.secret = None;
        let held_notes = std::mem::take(&mut job.held);
        job.held_bytes = 0;
        job.client_id = r.id.clone();
        job.meta = r.meta;
        job.client_token = r.token;
        let held = job.answer.take();
        let method = job.method.clone();
        let mut answers = Vec::new();
        let responses = r.responses.unwrap_or(Value::Null);
        for a in std::mem::take(&mut job.asked) {
            match responses.get(&a.key) {
                Some(result) if result.is_object() => {
                    if a.request.get("method").and_then(Value::as_str) == Some("roots/list") {
                        job.knows_roots = true;
                    }
                    answers.push(bridge::input_answer(&a.child_req, result));
                }
                // Missing or not a result: asked again.
                _ => job.asked.push(a),
            }
        }
        let ask_again = !job.asked.is_empty();
        let pending_round = !job.round.is_empty();
        self.timers.set(HttpTimer::Input(key), None);
        let stream = self.new_stream(key, StreamKind::Post, Some(conn), false);
        if let Some(st) = self.streams.get_mut(&stream) {
            st.waiting = vec![r.id.clone()];
            st.extra_headers = r.headers;
            st.stateless = true;
        }
        if let Some(s) = self.sessions.get_mut(&key) {
            s.busy = Some(stream);
            s.last_activity = now;
        }
        self.timers.set(
            HttpTimer::Session(key),
            Some((now + self.config.http.session_timeout, IDLE_SESSION)),
        );
        for note in held_notes {
            if let Some(m) = note
                .get("method")
                .and_then(Value::as_str)
                .map(str::to_owned)
            {
                self.child_notification(key, &m, &note);
            }
        }
        if let Some(held) = held {
            let answer = bridge::complete(&held, &method, &r.id);
            self.stream_send(stream, answer, true);
            return Ok(());
        }
        for a in answers {
            self.tell_child(key, a);
        }
        if ask_again {
            self.flush_round(now, key);
        } else if pending_round {
            self.timers.set(
                HttpTimer::Input(key),
                Some((now + INPUT_GATHER, Timer::StatelessInputRound)),
            );
        }
        Ok(())
    }

    /// A pool child finished its request (answered, or the client gave up on it).
    pub(crate) fn pool_release(
        &mut self,
        now: Instant,
        key: HttpKey,
        cancelled: Option<(RawId, &'static str)>,
    ) {
        self.release_job(now, key, cancelled);
        self.pool_dispatch(now);
    }

    /// [`Self::pool_release`] without handing out the next request.
    fn release_job(
        &mut self,
        now: Instant,
        key: HttpKey,
        cancelled: Option<(RawId, &'static str)>,
    ) {
        let job = self
            .bridge
            .children
            .get_mut(&key)
            .and_then(|c| c.job.take());
        self.timers.set(HttpTimer::Input(key), None);
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        s.busy = None;
        if job.as_ref().is_some_and(|j| j.knows_roots) && !s.finished {
            // Retired: a fresh process takes its place when one is needed.
            s.finished = true;
            log::info!("stateless: a server process that was told a client's roots serves no other client; it is stopped");
            self.end_session_by_client(key, "it holds another client's roots");
            return;
        }
        let server = s.token.server;
        let why = if self.draining {
            Some("the relay is shutting down")
        } else if self.is_retired(server) {
            Some("its server was left out of the configuration")
        } else {
            None
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if let (false, Some(why)) = (s.finished, why) {
            s.finished = true;
            self.end_session_by_client(key, why);
            return;
        }
        // A request the server already answered (held for the retry; or answered for it by
        // the relay when its process died, whose replacement never saw the request) is over
        // on the server's side: there is nothing to cancel.
        let answered = job.as_ref().is_some_and(|j| j.answer.is_some());
        if let Some((id, why)) = cancelled.filter(|_| !answered) {
            // The id the child knows the request by.
            let id = job.as_ref().map_or(id, |j| j.child_id.clone());
            let why = serde_json::Value::from(why);
            // It may still be working on the request: let it settle before its next one, so
            // that nothing it says about this one reaches another client.
            s.cooldown_until = Some(now + self.config.ping_timeout);
            let note = format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{id},"reason":{why}}}}}"#
            );
            self.tell_child(key, note.into_bytes());
            // What it still waits for from the client will not come.
            if let Some(job) = job {
                let waiting = job
                    .asked
                    .iter()
                    .map(|a| a.child_req.clone())
                    .chain(job.round.iter().filter_map(|r| r.get("id").cloned()));
                let refusals: Vec<Vec<u8>> = waiting
                    .map(|id| {
                        bridge::refuse_input(&id, "mcp-relay: the client's request was cancelled")
                    })
                    .collect();
                for no in refusals {
                    self.tell_child(key, no);
                }
            }
        }
    }

    /// The child of `server` held longest for a retry, if any is.
    fn longest_held(&self, server: ServerId) -> Option<HttpKey> {
        self.bridge
            .children
            .iter()
            .filter(|(k, c)| {
                c.server == server
                    && c.job.as_ref().is_some_and(|j| j.secret.is_some())
                    && self
                        .sessions
                        .get(k)
                        .is_some_and(|s| s.busy.is_none() && !s.finished)
            })
            .filter_map(|(k, _)| Some((self.timers.get(HttpTimer::Input(*k))?.0, *k)))
            .min()
            .filter(|(deadline, _)| self.evictable_from(*deadline) <= self.now)
            .map(|(_, k)| k)
    }

    /// When a request held until `deadline` (its retry deadline) may be given up for new
    /// work: not before it has been held [`EVICT_AFTER`], so that a client that retries at
    /// once (as SDKs do) never loses its request to a burst of others.
    fn evictable_from(&self, deadline: Instant) -> Instant {
        deadline
            .checked_sub(self.config.http.session_timeout)
            .unwrap_or(deadline)
            + EVICT_AFTER
    }

    /// When a waiting request may next take a held child's place, if one waits.
    pub(super) fn next_eviction(&self) -> Option<Instant> {
        if self.pool_queue.is_empty() {
            return None;
        }
        self.bridge
            .children
            .iter()
            .filter(|(_, c)| c.job.as_ref().is_some_and(|j| j.secret.is_some()))
            .filter_map(|(k, _)| self.timers.get(HttpTimer::Input(*k)))
            .map(|(deadline, _)| self.evictable_from(deadline))
            // One already due was considered at the last dispatch.
            .filter(|t| *t > self.now)
            .min()
    }

    /// Gives up a held request: the child is told, and serves the next request at once (it
    /// was waiting for the client, and its ids are the relay's own, so nothing it says late
    /// can pass for another request's).
    fn evict(&mut self, now: Instant, key: HttpKey) {
        let Some(child_id) = self.bridge.job(key).map(|j| j.child_id.clone()) else {
            return;
        };
        // Not `pool_release`: its dispatch would find this child resting and give up the
        // next held request too; the caller's dispatch hands this child the request.
        self.release_job(
            now,
            key,
            Some((child_id, "another request needed the server")),
        );
        if let Some(s) = self.sessions.get_mut(&key) {
            s.cooldown_until = None;
        }
    }

    /// A pool child's session is gone: what it held is forgotten.
    pub(super) fn pool_child_gone(&mut self, key: HttpKey) {
        let Some(child) = self.bridge.children.remove(&key) else {
            return;
        };
        self.timers.set(HttpTimer::Input(key), None);
        let subscriber = self
            .bridge
            .known
            .get(&child.server)
            .and_then(|k| k.subscriber);
        if subscriber == Some(key) {
            self.sync_subscriptions(child.server);
        }
    }

    /// Shutdown: every listen stream gets the answer that closes it.
    pub(super) fn close_listens(&mut self) {
        let listens = std::mem::take(&mut self.bridge.listens);
        for (stream, l) in listens {
            if self.streams.contains_key(&stream) {
                let closed = bridge::listen_closed(&l.id);
                self.stream_send(stream, closed, true);
            }
        }
    }

    /// Forgets listen streams whose connection is gone.
    pub(super) fn listen_gone(&mut self, stream: StreamId) {
        if let Some(l) = self.bridge.listens.remove(&stream) {
            self.sync_subscriptions(l.server);
        }
    }

    /// Keeps one ready child of `server` subscribed to exactly the resources some listen
    /// stream of that server watches.
    fn sync_subscriptions(&mut self, server: ServerId) {
        let live: Vec<StreamId> = self.bridge.listens.keys().copied().collect();
        for stream in live {
            if !self.streams.contains_key(&stream) {
                self.bridge.listens.remove(&stream);
            }
        }
        let wanted: std::collections::BTreeSet<String> = self
            .bridge
            .listens
            .values()
            .filter(|l| l.server == server)
            .flat_map(|l| l.resources.iter().cloned())
            .collect();
        let usable = |k: &HttpKey| {
            self.bridge
                .children
                .get(k)
                .is_some_and(|c| c.server == server && c.phase == Phase::Ready)
                && self.sessions.get(k).is_some_and(|s| !s.finished)
        };
        let current = self.bridge.known.get(&server).and_then(|k| k.subscriber);
        let subscriber = match current.filter(usable) {
            Some(k) => Some(k),
            None if wanted.is_empty() => None,
            None => self.bridge.children.keys().copied().find(usable),
        };
        let known = self.bridge.known(server);
        if known.subscriber != subscriber || subscriber.is_none() {
            known.subscribed.clear();
        }
        known.subscriber = subscriber;
        let Some(key) = subscriber else {
            return;
        };
        let (add, drop): (Vec<String>, Vec<String>) = (
            wanted.difference(&known.subscribed).cloned().collect(),
            known.subscribed.difference(&wanted).cloned().collect(),
        );
        known.subscribed = wanted;
        for (uris, method) in [
            (add, "resources/subscribe"),
            (drop, "resources/unsubscribe"),
        ] {
            for uri in uris {
                let line = serde_json::json!({
                    "jsonrpc": "2.0", "id": SUBSCRIPTION_ID, "method": method, "params": {"uri": uri},
                });
                self.tell_child(key, line.to_string().into_bytes());
            }
        }
    }

    /// Writes a complete response with owned headers.
    pub(super) fn respond_headers(
        &mut self,
        conn: ConnId,
        status: u16,
        headers: &[(&'static str, String)],
        content_type: Option<&str>,
        body: &[u8],
    ) {
        let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        self.respond(conn, status, &h, content_type, body, false);
    }
}

/// The streams of `subscriptions/listen` belong to no session of their own.
pub(super) const LISTENERS: HttpKey = HttpKey(u64::MAX);

/// A retry of a request held for the client's input.
struct RetryOf {
    /// The server whose route the retry came to.
    server: ServerId,
    id: RawId,
    state: String,
    method: String,
    name: Option<String>,
    meta: RequestMeta,
    token: Option<Value>,
    responses: Option<Value>,
    headers: Vec<(&'static str, String)>,
}

/// The HTTP status of a stateless answer: 404 for "method not found", 400 for a missing
/// client capability (as 2026-07-28 requires), else 200.
pub(crate) fn status_for(msg: &[u8]) -> u16 {
    if !msg.windows(5).any(|w| w == b"-3260" || w == b"-3202") {
        return 200;
    }
    let v: Value = serde_json::from_slice(msg).unwrap_or_default();
    match v.pointer("/error/code").and_then(Value::as_i64) {
        Some(codes::METHOD_NOT_FOUND) => 404,
        Some(codes::MISSING_CLIENT_CAPABILITY) => 400,
        _ => 200,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_headers() {
        assert_eq!(header_value("echo").as_deref(), Some("echo"));
        assert_eq!(
            header_value("=?base64?aGVsbG8gd29ybGQ=?=").as_deref(),
            Some("hello world")
        );
        assert_eq!(header_value("=?base64?!!?="), None);
    }

    #[test]
    fn not_found_is_404() {
        assert_eq!(
            status_for(br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"x"}}"#),
            404
        );
        assert_eq!(status_for(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#), 200);
        assert_eq!(
            status_for(br#"{"jsonrpc":"2.0","id":1,"result":{"n":-32601}}"#),
            200
        );
    }
}
