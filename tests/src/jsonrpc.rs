//! The lines peers write and read: generators for every kind of line a client or a server may
//! send (with the reaction the relay owes each), and a parser for what the relay writes back.

use crate::rng::Rng;
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::BTreeMap;

/// What the relay must do with one line a client sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// A JSON-RPC message (or batch) for the server: forwarded byte for byte. `requests` are
    /// the raw ids of the requests in it, each owed exactly one answer (the server's, or an
    /// error from the relay); `cancels` is the id of an earlier request this line cancels
    /// (that request is then owed at most one answer).
    Forward {
        requests: Vec<String>,
        batch: bool,
        cancels: Option<String>,
    },
    /// A response to a request the server never made: dropped by the relay.
    StrayResponse,
    /// `{"type":"heartbeat"}`: turns the relay's heartbeats on; never forwarded.
    Heartbeat,
    /// Not JSON: answered with -32700 and id null.
    NotJson,
    /// JSON but not a JSON-RPC message: answered with -32600 and this raw id (or null).
    Invalid { id: Option<String> },
    /// Longer than `max_message_size`: answered with -32600 and the top-level raw id, if the
    /// line has one.
    Oversize { id: Option<String> },
}

impl ClientKind {
    /// The error code the relay answers this line with, if it always answers it.
    pub fn bad_line_code(&self) -> Option<i64> {
        match self {
            ClientKind::NotJson => Some(-32700),
            ClientKind::Invalid { .. } | ClientKind::Oversize { .. } => Some(-32600),
            _ => None,
        }
    }

    /// The raw id the relay's answer to a bad line carries.
    pub fn bad_line_id(&self) -> Option<&str> {
        match self {
            ClientKind::Invalid { id } | ClientKind::Oversize { id } => id.as_deref(),
            _ => None,
        }
    }

    pub fn requests(&self) -> &[String] {
        match self {
            ClientKind::Forward { requests, .. } => requests,
            _ => &[],
        }
    }
}

/// One line a client writes: `content`, then `\r\n` or `\n`.
#[derive(Clone, Debug)]
pub struct ClientLine {
    pub content: Vec<u8>,
    pub crlf: bool,
    pub kind: ClientKind,
}

impl ClientLine {
    pub fn wire(&self) -> Vec<u8> {
        let mut w = self.content.clone();
        if self.crlf {
            w.push(b'\r');
        }
        w.push(b'\n');
        w
    }
}

/// How often each kind of client line appears, per mille.
#[derive(Clone, Debug)]
pub struct LineMix {
    pub not_json: u32,
    pub invalid: u32,
    pub oversize: u32,
    /// Forwardable lines whose length is the limit, or one byte either side of it.
    pub near_limit: u32,
    pub batch: u32,
    pub notification: u32,
    /// `notifications/cancelled` for an earlier request.
    pub cancel: u32,
    /// Responses to requests the server never made.
    pub stray_response: u32,
    pub heartbeat: u32,
    /// `logging/setLevel` and `resources/subscribe`, which the relay replays to a
    /// replacement server.
    pub setup: u32,
    pub crlf: u32,
    /// Per mille of clients that start with `initialize` and `notifications/initialized`.
    pub initialize: u32,
}

/// The relay's own marker in the ids of messages it sends to a server itself.
pub const OWN_ID_MARK: &str = "mcp-relay:";

/// The protocol version the clients ask for.
pub const PROTOCOL_VERSION: &str = "2025-06-18";

/// Generates the lines of one client. Ids are unique per client (they carry a counter), so
/// the relay's answers can be matched to the lines they answer.
#[derive(Debug)]
pub struct ClientLines {
    rng: Rng,
    conn: u64,
    counter: u64,
    max: usize,
    mix: LineMix,
    /// The opening lines (`initialize`, `notifications/initialized`), if any are left.
    opening: Vec<Vec<u8>>,
    /// Ids of requests sent so far (for cancellations).
    sent_requests: Vec<String>,
}

impl ClientLines {
    pub fn new(mut rng: Rng, conn: u64, max_message_size: usize, mix: LineMix) -> Self {
        let mut opening = Vec::new();
        if rng.chance(mix.initialize) {
            opening.push(
                format!(
                    r#"{{"jsonrpc":"2.0","id":"init-c{conn}","method":"initialize","params":{{"protocolVersion":"{PROTOCOL_VERSION}","capabilities":{{}},"clientInfo":{{"name":"sim-client","version":"1"}}}}}}"#
                )
                .into_bytes(),
            );
            opening.push(
                br#"{"jsonrpc":"2.0","method":"notifications/initialized","params":{}}"#.to_vec(),
            );
        }
        opening.reverse();
        ClientLines {
            rng,
            conn,
            counter: 0,
            max: max_message_size,
            mix,
            opening,
            sent_requests: Vec::new(),
        }
    }

    pub fn next_line(&mut self) -> ClientLine {
        self.counter += 1;
        let crlf = self.rng.chance(self.mix.crlf);
        if let Some(content) = self.opening.pop() {
            let requests = requests_in(&content)
                .unwrap_or_default()
                .into_iter()
                .map(|(id, _)| id)
                .collect::<Vec<_>>();
            if content.len() > self.max {
                return ClientLine {
                    content,
                    crlf,
                    kind: ClientKind::Oversize {
                        id: requests.first().cloned(),
                    },
                };
            }
            self.sent_requests.extend(requests.iter().cloned());
            return ClientLine {
                content,
                crlf,
                kind: ClientKind::Forward {
                    requests,
                    batch: false,
                    cancels: None,
                },
            };
        }
        let roll = self.rng.below(1000) as u32;
        let m = self.mix.clone();
        let mut t = 0;
        let mut next = |p: u32| {
            t += p;
            roll < t
        };
        let (content, kind) = if next(m.not_json) {
            self.not_json()
        } else if next(m.invalid) {
            self.invalid()
        } else if next(m.heartbeat) {
            let kind = if self.rng.chance(800) {
                "heartbeat"
            } else {
                "handshake"
            };
            (
                format!(r#"{{"type":"{kind}"}}"#).into_bytes(),
                ClientKind::Heartbeat,
            )
        } else if next(m.stray_response) {
            let id = self.id();
            (
                format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"answer":"to nothing"}}}}"#)
                    .into_bytes(),
                ClientKind::StrayResponse,
            )
        } else if next(m.cancel) && !self.sent_requests.is_empty() {
            let of = self.rng.pick(&self.sent_requests).clone();
            (
                format!(
                    r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{of},"reason":"sim"}}}}"#
                )
                .into_bytes(),
                ClientKind::Forward {
                    requests: vec![],
                    batch: false,
                    cancels: Some(of),
                },
            )
        } else if next(m.oversize) {
            let len = self.rng.range_usize(self.max + 1, self.max * 3 + 16);
            self.forwardable(Some(len))
        } else if next(m.near_limit) {
            let len = self
                .rng
                .range_usize(self.max.saturating_sub(1), self.max + 1);
            self.forwardable(Some(len))
        } else {
            self.forwardable(None)
        };
        debug_assert!(!content.contains(&b'\n'));
        // A short malformed line can still be too long for a small limit: then it is an
        // oversize line, whose id the relay finds with its scanner (not modelled here).
        if content.len() > self.max && !matches!(kind, ClientKind::Oversize { .. }) {
            return ClientLine {
                content: b"x".repeat(self.max + 1),
                crlf,
                kind: ClientKind::Oversize { id: None },
            };
        }
        if let ClientKind::Forward { requests, .. } = &kind {
            self.sent_requests.extend(requests.iter().cloned());
        }
        ClientLine {
            content,
            crlf,
            kind,
        }
    }

    fn id(&mut self) -> String {
        let k = self.counter;
        let r = self.rng.below(1000);
        match self.rng.below(8) {
            0..=3 => format!("{}", k * 1000 + r),
            4 => format!("-{}", k * 1000 + r),
            5 | 6 => format!("\"c{}-{k}-{}\"", self.conn, alnum(&mut self.rng, 0, 6)),
            _ => format!("\"c{}-{k}-\\\"q\\u00e9\u{e9}\"", self.conn),
        }
    }

    fn method(&mut self) -> String {
        if self.rng.chance(self.mix.setup) {
            return self
                .rng
                .pick(&["logging/setLevel", "resources/subscribe"])
                .to_string();
        }
        self.rng
            .pick(&[
                "tools/call",
                "tools/list",
                "resources/read",
                "ping",
                "prompts/get",
                "a\\/b",
            ])
            .to_string()
    }

    /// A request, notification or batch; padded to `len` bytes when given. Longer than the
    /// limit, it is an oversize line.
    fn forwardable(&mut self, len: Option<usize>) -> (Vec<u8>, ClientKind) {
        let m = self.mix.clone();
        let roll = self.rng.below(1000) as u32;
        let (frame, requests, batch, id_findable): (Template, Vec<String>, bool, Option<String>) =
            if roll < m.batch && len.is_none() {
                let n = self.rng.range_usize(1, 4);
                let mut parts = Vec::new();
                let mut ids = Vec::new();
                for i in 0..n {
                    if self.rng.chance(150) {
                        parts.push(b"3".to_vec());
                        continue;
                    }
                    if self.rng.chance(300) {
                        parts.push(
                            br#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#
                                .to_vec(),
                        );
                        continue;
                    }
                    let id = self.id_with_suffix(i);
                    let method = self.method();
                    parts.push(
                        format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{{"i":{i}}}}}"#)
                            .into_bytes(),
                    );
                    ids.push(id);
                }
                let mut body = b"[".to_vec();
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        body.extend_from_slice(if self.rng.chance(300) { b", " } else { b"," });
                    }
                    body.extend_from_slice(p);
                }
                body.push(b']');
                (Template::fixed(body), ids, true, None)
            } else if roll < m.batch + m.notification {
                let method = self.method();
                (
                    Template::padded(
                        format!(
                            r#"{{"jsonrpc":"2.0","method":"notifications/{method}","params":{{"pad":""#
                        ),
                        r#""}}"#.into(),
                    ),
                    vec![],
                    false,
                    None,
                )
            } else {
                let id = self.id();
                let method = self.method();
                let uri = format!("sim://c{}/{}", self.conn, self.counter);
                let t = match self.rng.below(3) {
                    0 => Template::padded(
                        format!(
                            r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{{"uri":"{uri}","level":"info","pad":""#
                        ),
                        r#""}}"#.into(),
                    ),
                    1 => Template::padded(
                        format!(
                            r#"{{"jsonrpc":"2.0","method":"{method}","params":{{"id":"nested","uri":"{uri}","pad":""#
                        ),
                        format!(r#""}},"id":{id}}}"#),
                    ),
                    _ => Template::padded(
                        format!(
                            r#"  {{ "method" : "{method}", "id" : {id}, "params" : {{"text":""#
                        ),
                        r#""} } "#.into(),
                    ),
                };
                (t, vec![id.clone()], false, Some(id))
            };
        let len = len.unwrap_or_else(|| self.rng.range_usize(0, 200));
        let content = frame.build(&mut self.rng, len);
        debug_assert!(
            serde_json::from_slice::<Value>(&content).is_ok(),
            "generated an invalid forwardable line: {}",
            content.escape_ascii()
        );
        if content.len() > self.max {
            (content, ClientKind::Oversize { id: id_findable })
        } else {
            (
                content,
                ClientKind::Forward {
                    requests,
                    batch,
                    cancels: None,
                },
            )
        }
    }

    fn id_with_suffix(&mut self, i: usize) -> String {
        let k = self.counter;
        if self.rng.chance(500) {
            format!("{}", 1_000_000_000_000 + k * 10 + i as u64)
        } else {
            format!("\"c{}-{k}-b{i}\"", self.conn)
        }
    }

    fn not_json(&mut self) -> (Vec<u8>, ClientKind) {
        let r = alnum(&mut self.rng, 1, 12);
        let k = self.counter;
        let text: Vec<u8> = match self.rng.below(9) {
            0 => format!("hello world {r}").into_bytes(),
            1 => format!(r#"{{"jsonrpc":"2.0","id":{k},"method":"cut"#).into_bytes(),
            2 => b"{'single':'quotes'}".to_vec(),
            3 => format!("[1,2,{k}").into_bytes(),
            4 => {
                let mut b = vec![0u8, 1, 0xfe, 0xff, b'{'];
                b.extend_from_slice(r.as_bytes());
                b
            }
            5 => br#"{"a":1}}"#.to_vec(),
            6 => format!(r#"{{"id":{k}}} trailing"#).into_bytes(),
            7 => b"NaN".to_vec(),
            _ => format!("GET /{r} HTTP/1.1").into_bytes(),
        };
        debug_assert!(serde_json::from_slice::<Value>(&text).is_err());
        (text, ClientKind::NotJson)
    }

    fn invalid(&mut self) -> (Vec<u8>, ClientKind) {
        match self.rng.below(7) {
            0 => (b"42".to_vec(), ClientKind::Invalid { id: None }),
            1 => (
                b"\"just a string\"".to_vec(),
                ClientKind::Invalid { id: None },
            ),
            2 => (b"null".to_vec(), ClientKind::Invalid { id: None }),
            3 => (
                br#"{"type":"ping-me"}"#.to_vec(),
                ClientKind::Invalid { id: None },
            ),
            4 => {
                let id = self.id();
                (
                    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":5}}"#).into_bytes(),
                    ClientKind::Invalid { id: Some(id) },
                )
            }
            5 => {
                let id = self.id();
                (
                    format!(r#"{{"jsonrpc":"2.0","id":{id}}}"#).into_bytes(),
                    ClientKind::Invalid { id: Some(id) },
                )
            }
            _ => {
                let id = self.id();
                (
                    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"x","result":1}}"#)
                        .into_bytes(),
                    ClientKind::Invalid { id: Some(id) },
                )
            }
        }
    }
}

/// A line with a padding string in the middle, so that it can be built to an exact length.
struct Template {
    head: Vec<u8>,
    tail: Vec<u8>,
    pad: bool,
}

impl Template {
    fn padded(head: String, tail: String) -> Self {
        Template {
            head: head.into_bytes(),
            tail: tail.into_bytes(),
            pad: true,
        }
    }

    fn fixed(body: Vec<u8>) -> Self {
        Template {
            head: body,
            tail: Vec::new(),
            pad: false,
        }
    }

    /// The line, `len` bytes long if the template allows it (at least its frame).
    fn build(&self, rng: &mut Rng, len: usize) -> Vec<u8> {
        let mut out = self.head.clone();
        if self.pad {
            let n = len.saturating_sub(self.head.len() + self.tail.len());
            out.extend_from_slice(&padding(rng, n));
            out.extend_from_slice(&self.tail);
        }
        out
    }
}

/// `n` bytes valid inside a JSON string: mostly letters, some escapes and some UTF-8.
pub fn padding(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let left = n - out.len();
        match rng.below(40) {
            0 if left >= 2 => out.extend_from_slice(b"\\\""),
            1 if left >= 2 => out.extend_from_slice("é".as_bytes()),
            2 if left >= 3 => out.extend_from_slice("✓".as_bytes()),
            3 if left >= 2 => out.extend_from_slice(b"\\n"),
            _ => out.push(b'a' + rng.below(26) as u8),
        }
    }
    out
}

pub fn alnum(rng: &mut Rng, min: usize, max: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let n = rng.range_usize(min, max);
    (0..n).map(|_| *rng.pick(CHARS) as char).collect()
}

/// An error the relay made up itself (its message starts with `mcp-relay:`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayError {
    pub code: i64,
    /// The raw JSON text of the id, `None` for null.
    pub id: Option<String>,
    pub message: String,
}

/// One line the relay wrote to a client, sorted by who made it.
#[derive(Debug)]
pub enum ToClient {
    /// An error made by the relay, answering a request or a malformed line.
    Error(RelayError),
    /// An array of the relay's errors answering the requests of a batch.
    Batch(Vec<RelayError>),
    /// `{"type":"heartbeat_response",…}`.
    HeartbeatResponse,
    /// `$/mcp/serverRestarted`.
    Restarted { reason: String },
    /// Not made by the relay: it must be a line one of the session's servers wrote.
    Server,
    /// Looks like the relay's but is not well formed: always a failure.
    Malformed(String),
}

/// Sorts one line (without its newline) the relay sent to a client.
pub fn classify_to_client(line: &[u8]) -> ToClient {
    if line.starts_with(br#"{"type":"heartbeat_response""#) {
        return ToClient::HeartbeatResponse;
    }
    if memchr_find(line, br#""method":"$/mcp/serverRestarted""#).is_some() {
        let v: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => return ToClient::Malformed(format!("serverRestarted: {e}")),
        };
        return match v.pointer("/params/reason").and_then(Value::as_str) {
            Some(r) => ToClient::Restarted {
                reason: r.to_owned(),
            },
            None => ToClient::Malformed("serverRestarted without params.reason".into()),
        };
    }
    if memchr_find(line, b"\"mcp-relay: ").is_none() {
        return ToClient::Server;
    }
    let obj = |raw: &RawValue| -> Result<RelayError, String> {
        let map: BTreeMap<String, Box<RawValue>> =
            serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
        if map.get("jsonrpc").map(|v| v.get()) != Some("\"2.0\"") {
            return Err("no \"jsonrpc\":\"2.0\"".into());
        }
        let id = match map.get("id").map(|v| v.get()) {
            None => return Err("no id".into()),
            Some("null") => None,
            Some(raw) => Some(raw.to_owned()),
        };
        let error: Value = serde_json::from_str(map.get("error").ok_or("no error")?.get())
            .map_err(|e| e.to_string())?;
        let code = error["code"].as_i64().ok_or("no error.code")?;
        let message = error["message"].as_str().ok_or("no error.message")?;
        if !message.starts_with("mcp-relay: ") {
            return Err(format!(
                "message {message:?} does not start with `mcp-relay: `"
            ));
        }
        Ok(RelayError {
            code,
            id,
            message: message.to_owned(),
        })
    };
    let raw: Box<RawValue> = match serde_json::from_slice(line) {
        Ok(raw) => raw,
        Err(e) => return ToClient::Malformed(format!("not JSON: {e}")),
    };
    if raw.get().trim_start().starts_with('[') {
        let items: Vec<Box<RawValue>> = match serde_json::from_str(raw.get()) {
            Ok(items) => items,
            Err(e) => return ToClient::Malformed(e.to_string()),
        };
        match items.iter().map(|i| obj(i)).collect() {
            Ok(errors) => ToClient::Batch(errors),
            Err(e) => ToClient::Malformed(e),
        }
    } else {
        match obj(&raw) {
            Ok(e) => ToClient::Error(e),
            Err(e) => ToClient::Malformed(e),
        }
    }
}

/// A request a server read.
#[derive(Clone, Debug)]
pub struct Request {
    /// Raw JSON text of the id.
    pub id: String,
    /// Raw JSON text of the method (a string).
    pub method: String,
    /// `params.protocolVersion` of an `initialize`.
    pub version: Option<String>,
}

/// The requests in one line a server read, in order: objects with a string method and a
/// non-null id. `None` if the line is not JSON.
pub fn requests_in_line(line: &[u8]) -> Option<Vec<Request>> {
    let raw: Box<RawValue> = serde_json::from_slice(line).ok()?;
    let one = |raw: &RawValue| -> Option<Request> {
        let map: BTreeMap<String, Box<RawValue>> = serde_json::from_str(raw.get()).ok()?;
        let id = map.get("id")?.get();
        let method = map.get("method")?.get();
        if id == "null" || !method.starts_with('"') || map.contains_key("result") {
            return None;
        }
        let version = (method == "\"initialize\"")
            .then(|| {
                let params: Value = serde_json::from_str(map.get("params")?.get()).ok()?;
                params["protocolVersion"].as_str().map(str::to_owned)
            })
            .flatten();
        Some(Request {
            id: id.to_owned(),
            method: method.to_owned(),
            version,
        })
    };
    if raw.get().trim_start().starts_with('[') {
        let items: Vec<Box<RawValue>> = serde_json::from_str(raw.get()).ok()?;
        Some(items.iter().filter_map(|i| one(i)).collect())
    } else {
        Some(one(&raw).into_iter().collect())
    }
}

/// `(raw id, method)` of each request in a line; see [`requests_in_line`].
pub fn requests_in(line: &[u8]) -> Option<Vec<(String, String)>> {
    Some(
        requests_in_line(line)?
            .into_iter()
            .map(|r| (r.id, r.method))
            .collect(),
    )
}

/// The raw ids of the responses in a line (an object with `result` or `error`, or an array
/// of them).
pub fn response_ids(line: &[u8]) -> Vec<String> {
    let Ok(raw) = serde_json::from_slice::<Box<RawValue>>(line) else {
        return Vec::new();
    };
    let one = |raw: &RawValue| -> Option<String> {
        let map: BTreeMap<String, Box<RawValue>> = serde_json::from_str(raw.get()).ok()?;
        let id = map.get("id")?.get();
        (id != "null" && (map.contains_key("result") || map.contains_key("error")))
            .then(|| id.to_owned())
    };
    if raw.get().trim_start().starts_with('[') {
        serde_json::from_str::<Vec<Box<RawValue>>>(raw.get())
            .map(|items| items.iter().filter_map(|i| one(i)).collect())
            .unwrap_or_default()
    } else {
        one(&raw).into_iter().collect()
    }
}

/// Whether a raw id is one the relay made for its own requests to a server.
pub fn is_own_id(raw: &str) -> bool {
    serde_json::from_str::<String>(raw)
        .is_ok_and(|s| s.trim_start_matches('_').starts_with(OWN_ID_MARK))
}

/// Whether a line on a server's stdin was written by the relay itself (a probe, a replayed
/// request, the replayed `notifications/initialized`) rather than by the client.
pub fn is_relay_line(line: &[u8]) -> bool {
    if line == br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"# {
        return true;
    }
    requests_in_line(line)
        .is_some_and(|r| r.len() == 1 && is_own_id(&r[0].id) && !line.starts_with(b"["))
}

pub fn memchr_find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix() -> LineMix {
        LineMix {
            not_json: 100,
            invalid: 100,
            oversize: 100,
            near_limit: 100,
            batch: 100,
            notification: 100,
            cancel: 50,
            stray_response: 50,
            heartbeat: 50,
            setup: 100,
            crlf: 300,
            initialize: 500,
        }
    }

    #[test]
    fn generated_lines_are_what_they_claim() {
        let mut lines = ClientLines::new(Rng::new(3), 1, 120, mix());
        for _ in 0..2000 {
            let l = lines.next_line();
            let json = serde_json::from_slice::<Value>(&l.content);
            match &l.kind {
                ClientKind::Forward { requests, .. } => {
                    assert!(l.content.len() <= 120);
                    let found = requests_in(&l.content).unwrap();
                    assert_eq!(
                        found.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>(),
                        *requests
                    );
                }
                ClientKind::NotJson => assert!(json.is_err()),
                ClientKind::Invalid { .. } | ClientKind::Heartbeat | ClientKind::StrayResponse => {
                    assert!(json.is_ok())
                }
                ClientKind::Oversize { .. } => assert!(l.content.len() > 120),
            }
        }
    }

    #[test]
    fn sorts_what_clients_get() {
        let line =
            br#"{"jsonrpc":"2.0","id":"a\"b","error":{"code":-32000,"message":"mcp-relay: x"}}"#;
        match classify_to_client(line) {
            ToClient::Error(e) => {
                assert_eq!(e.id.as_deref(), Some(r#""a\"b""#));
                assert_eq!(e.code, -32000);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify_to_client(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            ToClient::Server
        ));
        assert_eq!(
            response_ids(br#"[{"id":1,"result":{}},{"id":"x","error":{}}]"#),
            ["1", "\"x\""]
        );
        assert!(is_own_id(r#""__mcp-relay:probe:3""#));
        assert!(is_relay_line(
            br#"{"jsonrpc":"2.0","id":"mcp-relay:probe:1","method":"ping"}"#
        ));
        assert!(!is_relay_line(
            br#"{"jsonrpc":"2.0","id":"c1-2","method":"ping"}"#
        ));
    }
}
