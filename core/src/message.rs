//! JSON-RPC message classification and the error responses the relay makes up itself.
//!
//! Messages are forwarded byte for byte; the relay only needs to know what a line is
//! (request, notification, response), its id and its method. [`classify`] finds that with a
//! borrowed parse that validates the JSON but allocates nothing for the payload.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// Error codes of the errors mcp-relay produces itself. JSON-RPC reserves -32000..-32099 for
/// implementations; MCP 2026-07-28 claims -32020 and up, and MCP uses -32002 for "resource not
/// found", so the relay keeps to a few codes below -32020 that MCP does not use.
pub mod codes {
    /// The line was not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// The message was not a valid JSON-RPC message, or it was larger than the relay accepts.
    pub const INVALID_REQUEST: i64 = -32600;
    /// The server could not be started, or is gone and will not come back for this session.
    pub const SERVER_UNAVAILABLE: i64 = -32000;
    /// The server's answer to this request could not be delivered (for instance it was larger
    /// than the relay accepts).
    pub const RESPONSE_LOST: i64 = -32001;
    /// The server crashed, exited or hung before answering this request.
    pub const SERVER_FAILED: i64 = -32003;
    /// No answer within `--request-timeout` (the MCP SDKs' own code for a request timeout).
    pub const REQUEST_TIMEOUT: i64 = -32001;
    /// MCP 2026-07-28: an HTTP header does not match the body.
    pub const HEADER_MISMATCH: i64 = -32020;
    /// MCP 2026-07-28: the request needs a client capability its `_meta` did not declare
    /// (`data.requiredCapabilities` names it).
    pub const MISSING_CLIENT_CAPABILITY: i64 = -32021;
    /// MCP 2026-07-28: the protocol version is not supported (`data.supported` lists them).
    pub const UNSUPPORTED_VERSION: i64 = -32022;
    /// JSON-RPC: the parameters are invalid (MCP 2026-07-28: a request without its `_meta`
    /// fields, or with a `requestState` the relay did not issue or no longer holds).
    pub const INVALID_PARAMS: i64 = -32602;
    /// JSON-RPC: the method does not exist.
    pub const METHOD_NOT_FOUND: i64 = -32601;
}

/// What kind of JSON-RPC message a line (or one entry of a batch) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Has a method and a non-null id: expects a response.
    Request,
    /// Has a method and no id.
    Notification,
    /// Has `result` or `error` and no method.
    Response,
    /// `{"type":"heartbeat"}` or `{"type":"handshake"}`: the relay's own keep-alive, from the
    /// original mcp TCP proxy's protocol. Never forwarded.
    Heartbeat,
    /// Valid JSON, but none of the above.
    Invalid,
}

/// The facts about one JSON-RPC message that the relay acts on. Borrows from the line.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// Request, notification, response, the relay's heartbeat, or none of these.
    pub kind: Kind,
    /// The id as raw JSON text (`7`, `"abc"`), if present and not null.
    pub id: Option<&'a RawValue>,
    /// The method, unescaped (borrowed unless it had escapes).
    pub method: Option<Cow<'a, str>>,
    /// The params, unparsed.
    pub params: Option<&'a RawValue>,
}

/// A classified line: one message, or a batch of them (MCP 2025-03-26 allowed arrays).
#[derive(Debug)]
pub enum Message<'a> {
    /// A JSON object: one message.
    Single(Envelope<'a>),
    /// A JSON array: each of its entries, in order.
    Batch(Vec<Envelope<'a>>),
}

/// Why a line could not be classified.
#[derive(Debug, PartialEq, Eq)]
pub enum ClassifyError {
    /// Not valid JSON (or not UTF-8).
    NotJson(String),
    /// Valid JSON, but neither an object nor an array.
    NotAMessage,
}

/// Classifies one line. Validates the whole line as JSON; copies nothing but escaped methods.
pub fn classify(line: &[u8]) -> Result<Message<'_>, ClassifyError> {
    // The whole line first: serde_json checks UTF-8 only in the strings it reads, not in the
    // values it skips (`result`, `error`, unknown keys), which would let invalid UTF-8 through.
    let line = std::str::from_utf8(line).map_err(|e| ClassifyError::NotJson(e.to_string()))?;
    let mut de = serde_json::Deserializer::from_str(line);
    let top = match de.deserialize_any(TopVisitor) {
        Ok(top) => top,
        Err(e) => return Err(ClassifyError::NotJson(e.to_string())),
    };
    if let Err(e) = de.end() {
        return Err(ClassifyError::NotJson(e.to_string()));
    }
    top.ok_or(ClassifyError::NotAMessage)
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Option<Message<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-RPC message")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(Some(Message::Single(read_envelope(map)?)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = seq.next_element::<Entry<'de>>()? {
            entries.push(entry.0);
        }
        Ok(Some(Message::Batch(entries)))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// One entry of a batch; anything that is not an object is an invalid entry.
struct Entry<'a>(Envelope<'a>);

impl<'de> de::Deserialize<'de> for Entry<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entry<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON-RPC message")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Ok(Entry(read_envelope(map)?))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Entry(Envelope::invalid()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Entry(Envelope::invalid()))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Entry(Envelope::invalid()))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Entry(Envelope::invalid()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Entry(Envelope::invalid()))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Entry(Envelope::invalid()))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Entry(Envelope::invalid()))
            }
        }
        d.deserialize_any(V)
    }
}

impl Envelope<'_> {
    fn invalid() -> Self {
        Envelope {
            kind: Kind::Invalid,
            id: None,
            method: None,
            params: None,
        }
    }
}

fn read_envelope<'de, A: MapAccess<'de>>(mut map: A) -> Result<Envelope<'de>, A::Error> {
    let mut id: Option<&'de RawValue> = None;
    let mut method: Option<Option<Cow<'de, str>>> = None;
    let mut has_outcome = false;
    let mut params: Option<&'de RawValue> = None;
    let mut heartbeat = false;
    while let Some(key) = map.next_key::<Key>()? {
        match key {
            Key::Id => {
                let raw: &'de RawValue = map.next_value()?;
                id = (raw.get() != "null").then_some(raw);
            }
            Key::Method => method = Some(map.next_value::<MaybeStr<'de>>()?.0),
            Key::Result | Key::Error => {
                map.next_value::<IgnoredAny>()?;
                has_outcome = true;
            }
            Key::Params => params = Some(map.next_value()?),
            Key::Type => {
                let t = map.next_value::<MaybeStr<'de>>()?.0;
                heartbeat = matches!(t.as_deref(), Some("heartbeat" | "handshake"));
            }
            Key::Other => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    let kind = match (&method, has_outcome) {
        (Some(Some(_)), false) if id.is_some() => Kind::Request,
        (Some(Some(_)), false) => Kind::Notification,
        (None, true) => Kind::Response,
        (None, false) if heartbeat => Kind::Heartbeat,
        _ => Kind::Invalid,
    };
    Ok(Envelope {
        kind,
        id,
        method: method.flatten(),
        params,
    })
}

/// The keys the relay cares about, recognised without allocating.
enum Key {
    Id,
    Method,
    Result,
    Error,
    Params,
    Type,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, s: &str) -> Result<Key, E> {
                Ok(match s {
                    "id" => Key::Id,
                    "method" => Key::Method,
                    "result" => Key::Result,
                    "error" => Key::Error,
                    "params" => Key::Params,
                    "type" => Key::Type,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// A value that is a string (borrowed when it has no escapes) or something else (`None`).
struct MaybeStr<'a>(Option<Cow<'a, str>>);

impl<'de> de::Deserialize<'de> for MaybeStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(MaybeStr(Some(Cow::Borrowed(s))))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(MaybeStr(Some(Cow::Owned(s.to_owned()))))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MaybeStr(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeStr(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A JSON-RPC id kept beyond the line it came in: its raw JSON text (`7`, `"a\"b"`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RawId(Box<str>);

impl RawId {
    /// Keeps an id found in a line (such as [`Envelope::id`]), as it was written.
    pub fn from_raw(raw: &RawValue) -> Self {
        RawId(raw.get().into())
    }

    /// Accepts raw JSON text if it is a valid id: a string or a number.
    pub fn parse(text: &str) -> Option<Self> {
        match serde_json::from_str::<serde_json::Value>(text).ok()? {
            serde_json::Value::String(_) | serde_json::Value::Number(_) => {
                Some(RawId(text.trim().into()))
            }
            _ => None,
        }
    }

    /// The id that is the JSON string `text`.
    pub fn string(text: &str) -> Self {
        RawId(
            serde_json::Value::String(text.to_owned())
                .to_string()
                .into(),
        )
    }

    /// The raw JSON text, ready to be written into a message.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RawId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `requestId` of a `notifications/cancelled`, as an id.
pub fn cancelled_request_id(params: Option<&RawValue>) -> Option<RawId> {
    #[derive(serde::Deserialize)]
    struct P<'a> {
        #[serde(borrow, rename = "requestId")]
        request_id: &'a RawValue,
    }
    let p: P<'_> = serde_json::from_str(params?.get()).ok()?;
    RawId::parse(p.request_id.get())
}

/// The id-like field `field` of the params (`progressToken` in `notifications/progress`).
pub fn param_raw(params: Option<&RawValue>, field: &str) -> Option<RawId> {
    let v: serde_json::Value = serde_json::from_str(params?.get()).ok()?;
    match v.get(field)? {
        t @ (serde_json::Value::String(_) | serde_json::Value::Number(_)) => {
            RawId::parse(&t.to_string())
        }
        _ => None,
    }
}

/// The `_meta.progressToken` of a request's params.
pub fn meta_progress_token(params: Option<&RawValue>) -> Option<RawId> {
    let v: serde_json::Value = serde_json::from_str(params?.get()).ok()?;
    match v.pointer("/_meta/progressToken")? {
        t @ (serde_json::Value::String(_) | serde_json::Value::Number(_)) => {
            RawId::parse(&t.to_string())
        }
        _ => None,
    }
}

/// The string field `field` of the params (`uri` of `resources/subscribe`, for instance).
pub fn param_str(params: Option<&RawValue>, field: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(params?.get()).ok()?;
    v.get(field)?.as_str().map(str::to_owned)
}

/// The `result.protocolVersion` of an `initialize` response line, or why there is none.
pub fn initialize_outcome(line: &[u8]) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("unreadable response: {e}"))?;
    if let Some(err) = v.get("error") {
        return Err(format!("it answered with an error: {err}"));
    }
    v.pointer("/result/protocolVersion")
        .and_then(|p| p.as_str())
        .map(str::to_owned)
        .ok_or_else(|| "its answer has no protocolVersion".to_owned())
}

/// The same request line with its id replaced by `id` (raw JSON text), re-serialised. Used
/// only for the few messages the relay replays itself.
pub fn with_id(line: &[u8], id: &str) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let id: serde_json::Value = serde_json::from_str(id).ok()?;
    v.as_object_mut()?.insert("id".into(), id);
    serde_json::to_vec(&v).ok()
}

/// Builds one error response line (with its trailing newline). `id` is raw JSON text; `None`
/// gives `"id":null`, as JSON-RPC asks when the id could not be read.
pub fn error_line(id: Option<&str>, code: i64, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + message.len());
    write_error(&mut out, id, code, message);
    out.push(b'\n');
    out
}

/// Writes one error response object (no newline).
pub fn write_error(out: &mut Vec<u8>, id: Option<&str>, code: i64, message: &str) {
    write_error_data(out, id, code, message, None);
}

/// Writes one error response object with optional `data` (raw JSON).
pub fn write_error_data(
    out: &mut Vec<u8>,
    id: Option<&str>,
    code: i64,
    message: &str,
    data: Option<&str>,
) {
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.extend_from_slice(id.unwrap_or("null").as_bytes());
    out.extend_from_slice(br#","error":{"code":"#);
    out.extend_from_slice(code.to_string().as_bytes());
    out.extend_from_slice(br#","message":"#);
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, message);
    if let Some(data) = data {
        out.extend_from_slice(br#","data":"#);
        out.extend_from_slice(data.as_bytes());
    }
    out.extend_from_slice(b"}}");
}

/// Finds the top-level `"id"` of a JSON object streamed through it in pieces, without keeping
/// the object. Used on lines too long to buffer, so that their sender can still be answered.
#[derive(Debug, Default)]
pub struct IdScanner {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// The top-level value is not an object: there is no id to find.
    not_object: bool,
    state: ScanState,
    key: Vec<u8>,
    value: Vec<u8>,
    found: Option<RawId>,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum ScanState {
    /// Between tokens at depth 1, expecting a key.
    #[default]
    ExpectKey,
    /// Reading a key string at depth 1.
    Key,
    /// After a key at depth 1, before its colon.
    AfterKey,
    /// After the colon of an `"id"` key, before its value.
    BeforeIdValue,
    /// Reading the id value.
    IdValue,
    /// Skipping any other value at depth 1, up to its comma.
    Skip,
}

/// Longest id the scanner keeps; longer ones are given up on.
const MAX_ID_LEN: usize = 256;

impl IdScanner {
    /// The next bytes of the object, in any pieces.
    pub fn feed(&mut self, data: &[u8]) {
        for &b in data {
            self.byte(b);
        }
    }

    fn byte(&mut self, b: u8) {
        if self.not_object || self.found.is_some() {
            return;
        }
        if self.in_string {
            match self.state {
                ScanState::Key if !self.escaped && b != b'"' && b != b'\\' => {
                    if self.key.len() < 3 {
                        self.key.push(b);
                    } else {
                        self.key.clear();
                        self.key.push(0);
                    }
                }
                ScanState::Key if b == b'\\' => {
                    // An escaped key is never the plain `id`.
                    self.key.clear();
                    self.key.push(0);
                }
                ScanState::IdValue => self.push_value(b),
                _ => {}
            }
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                match self.state {
                    ScanState::Key => self.state = ScanState::AfterKey,
                    ScanState::IdValue => self.finish_value(),
                    _ => {}
                }
            }
            return;
        }
        if b.is_ascii_whitespace() {
            if self.state == ScanState::IdValue && self.depth == 1 {
                self.finish_value();
            }
            return;
        }
        match b {
            b'"' => {
                self.in_string = true;
                if self.depth == 1 {
                    match self.state {
                        ScanState::ExpectKey => {
                            self.state = ScanState::Key;
                            self.key.clear();
                        }
                        ScanState::BeforeIdValue => {
                            self.state = ScanState::IdValue;
                            self.push_value(b);
                        }
                        _ => {}
                    }
                }
            }
            b'{' | b'[' => {
                if self.depth == 0 && b == b'[' {
                    self.not_object = true;
                }
                if self.depth == 1 && self.state == ScanState::BeforeIdValue {
                    self.state = ScanState::Skip;
                }
                self.depth += 1;
            }
            b'}' | b']' => {
                if self.depth == 1 && self.state == ScanState::IdValue {
                    self.finish_value();
                }
                self.depth = self.depth.saturating_sub(1);
            }
            b':' if self.depth == 1 && self.state == ScanState::AfterKey => {
                self.state = if self.key == b"id" {
                    ScanState::BeforeIdValue
                } else {
                    ScanState::Skip
                };
            }
            b',' if self.depth == 1 => {
                if self.state == ScanState::IdValue {
                    self.finish_value();
                }
                self.state = ScanState::ExpectKey;
            }
            _ if self.depth == 0 => self.not_object = true,
            _ if self.depth == 1 => match self.state {
                ScanState::BeforeIdValue => {
                    self.state = ScanState::IdValue;
                    self.push_value(b);
                }
                ScanState::IdValue => self.push_value(b),
                _ => {}
            },
            _ => {}
        }
    }

    fn push_value(&mut self, b: u8) {
        if self.value.len() < MAX_ID_LEN {
            self.value.push(b);
        } else {
            self.state = ScanState::Skip;
            self.value.clear();
        }
    }

    fn finish_value(&mut self) {
        self.found = std::str::from_utf8(&self.value).ok().and_then(RawId::parse);
        self.value.clear();
        self.state = ScanState::Skip;
    }

    /// The id, if the bytes so far held a top-level one.
    pub fn finish(self) -> Option<RawId> {
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Classifies `line` and renders it as `kind id method` per message.
    fn check(line: &str, expect: &str) {
        let render = |e: &Envelope| {
            format!(
                "{:?} {} {}",
                e.kind,
                e.id.map_or("-", |i| i.get()),
                e.method.as_deref().unwrap_or("-")
            )
        };
        let got = match classify(line.as_bytes()) {
            Ok(Message::Single(e)) => render(&e),
            Ok(Message::Batch(es)) => {
                format!("[{}]", es.iter().map(render).collect::<Vec<_>>().join(", "))
            }
            Err(ClassifyError::NotJson(_)) => "not json".into(),
            Err(ClassifyError::NotAMessage) => "not a message".into(),
        };
        assert_eq!(got, expect, "for {line}");
    }

    #[test]
    fn classifies() {
        check(
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            "Request 1 ping",
        );
        check(
            r#"{"method":"tools/call","params":{"id":9},"jsonrpc":"2.0","id":"a"}"#,
            r#"Request "a" tools/call"#,
        );
        check(
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            "Notification - notifications/initialized",
        );
        check(
            r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#,
            "Notification - x",
        );
        check(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#, "Response 3 -");
        check(
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":1}}"#,
            "Response - -",
        );
        check(r#"{"jsonrpc":"2.0","id":3,"result":null}"#, "Response 3 -");
        check(r#"{"type":"heartbeat"}"#, "Heartbeat - -");
        check(r#"{"type":"handshake","x":1}"#, "Heartbeat - -");
        check(r#"{"type":"other"}"#, "Invalid - -");
        check(r#"{"id":1,"method":5}"#, "Invalid 1 -");
        check(r#"{"method":"a\/b","id":2}"#, "Request 2 a/b");
        check(
            r#"[{"id":1,"method":"a"},{"method":"b"},3]"#,
            "[Request 1 a, Notification - b, Invalid - -]",
        );
        check("42", "not a message");
        check("hello", "not json");
        check(r#"{"id":1} x"#, "not json");
        check(r#"{"id":1,"method":"a""#, "not json");
    }

    /// Found by the `classify` fuzz target: invalid UTF-8 inside a skipped value.
    #[test]
    fn invalid_utf8_anywhere_is_not_json() {
        let line = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"nam\xff\":\"s\"}}";
        assert!(matches!(classify(line), Err(ClassifyError::NotJson(_))));
        let line = b"{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"other\":\"\xc3\"}";
        assert!(matches!(classify(line), Err(ClassifyError::NotJson(_))));
    }

    #[test]
    fn helpers() {
        let params = |s: &str| serde_json::from_str::<Box<RawValue>>(s).unwrap();
        let p = params(r#"{"requestId":"a\"b","reason":"x"}"#);
        assert_eq!(
            cancelled_request_id(Some(&p)).unwrap().as_str(),
            r#""a\"b""#
        );
        assert_eq!(cancelled_request_id(Some(&params("{}"))), None);
        let p = params(r#"{"uri":"demo://x"}"#);
        assert_eq!(param_str(Some(&p), "uri").as_deref(), Some("demo://x"));
        assert_eq!(
            initialize_outcome(br#"{"id":1,"result":{"protocolVersion":"2025-06-18"}}"#),
            Ok("2025-06-18".into())
        );
        assert!(initialize_outcome(br#"{"id":1,"error":{"code":1}}"#).is_err());
        let line = with_id(br#"{"jsonrpc":"2.0","id":7,"method":"m"}"#, r#""r1""#).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["id"], "r1");
        assert_eq!(v["method"], "m");
    }

    #[test]
    fn error_lines_are_valid_json() {
        let line = error_line(Some("\"x\""), codes::PARSE_ERROR, "bad \"thing\"\n");
        let v: serde_json::Value = serde_json::from_slice(&line).expect("valid JSON");
        assert_eq!(v["id"], "x");
        assert_eq!(v["error"]["code"], -32700);
        assert_eq!(v["error"]["message"], "bad \"thing\"\n");
        assert_eq!(line.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&error_line(None, 1, "m")).unwrap();
        assert!(v["id"].is_null());
    }

    fn scan(chunks: &[&str]) -> Option<String> {
        let mut s = IdScanner::default();
        for c in chunks {
            s.feed(c.as_bytes());
        }
        s.finish().map(|i| i.as_str().to_owned())
    }

    #[test]
    fn scanner_finds_top_level_ids_only() {
        assert_eq!(scan(&[r#"{"id":5}"#]).as_deref(), Some("5"));
        assert_eq!(
            scan(&[r#"{ "id" : "a,b" , "x":1}"#]).as_deref(),
            Some(r#""a,b""#)
        );
        assert_eq!(
            scan(&[r#"{"params":{"id":1},"x":"\"id\":2","#, r#""id":-3.5e2}"#]).as_deref(),
            Some("-3.5e2")
        );
        assert_eq!(scan(&[r#"{"i"#, r#"d":4"#, "2}"]).as_deref(), Some("42"));
        assert_eq!(scan(&[r#"{"idx":1,"id":null}"#]), None);
        assert_eq!(scan(&[r#"{"id":{"a":1}}"#]), None);
        assert_eq!(scan(&[r#"[{"id":1}]"#]), None);
        assert_eq!(scan(&[r#"{"params":"xxxxxxxx"#]), None);
        // Truncated: the value is only known once it ends.
        assert_eq!(scan(&[r#"{"id":12"#]), None);
    }
}
