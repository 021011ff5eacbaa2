//! A session-era local client in front of a 2026-07-28 remote: pure functions from the
//! client's messages to the modern era's and back (the mirror of `http::bridge`).
//!
//! The modern era has no `initialize` and no session: every request carries the client's
//! facts in `_meta` and its method (and name) in headers; `server/discover` says what the
//! server is; a server that needs input from the client answers `input_required` and the
//! client retries with `inputResponses`.

use serde_json::{json, Map, Value};

/// The revision spoken to the remote.
pub(crate) const MODERN: &str = "2026-07-28";
/// The newest revision a session-era client is answered with.
const NEWEST_SESSION_ERA: &str = "2025-11-25";
const SESSION_ERA: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// The client's facts from its `initialize`, sent with every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClientFacts {
    capabilities: Value,
    info: Value,
    /// The version it asked for.
    requested: String,
}

impl ClientFacts {
    /// From the client's `initialize` request line.
    pub(crate) fn from_initialize(line: &[u8]) -> Option<ClientFacts> {
        let v: Value = serde_json::from_slice(line).ok()?;
        let params = v.get("params")?;
        Some(ClientFacts {
            capabilities: params
                .get("capabilities")
                .cloned()
                .unwrap_or_else(|| json!({})),
            info: params.get("clientInfo").cloned().unwrap_or_else(
                || json!({"name": "mcp-relay", "version": env!("CARGO_PKG_VERSION")}),
            ),
            requested: params
                .get("protocolVersion")
                .and_then(Value::as_str)
                .unwrap_or(NEWEST_SESSION_ERA)
                .to_owned(),
        })
    }

    /// The version the client is told it speaks: what it asked for if the session era has
    /// it, else the newest of that era.
    fn agreed(&self) -> &str {
        if SESSION_ERA.contains(&self.requested.as_str()) {
            &self.requested
        } else {
            NEWEST_SESSION_ERA
        }
    }

    fn meta(&self) -> Value {
        json!({
            META_VERSION: MODERN,
            META_CAPABILITIES: self.capabilities,
            META_CLIENT_INFO: self.info,
        })
    }
}

/// What the relay does with a client message in front of a modern remote.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outgoing {
    /// Send this line, with these headers.
    Send(Vec<u8>, Vec<(String, String)>),
    /// Answer the client at once with this line (a method the modern era removed).
    Answer(Vec<u8>),
    /// A notification with no meaning there (`notifications/initialized`, ...): dropped.
    Drop,
    /// `notifications/cancelled` for this request id (raw JSON): close its stream.
    Cancel(String),
}

/// A request line and the headers it goes with.
pub(crate) type Request = (Vec<u8>, Vec<(String, String)>);

/// The `server/discover` request, with id `id` (raw JSON).
pub(crate) fn discover(id: &str, client: &ClientFacts) -> Request {
    let line = json!({
        "jsonrpc": "2.0",
        "id": raw(id),
        "method": "server/discover",
        "params": { "_meta": client.meta() },
    });
    (to_vec(&line), headers("server/discover", None))
}

/// The client's `initialize` answered (id `id`, raw JSON) from a `server/discover` answer;
/// `None` if the discover answer is an error or unreadable.
pub(crate) fn initialize_answer(
    id: &str,
    client: &ClientFacts,
    discover: &[u8],
) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(discover).ok()?;
    let r = v.get("result")?;
    let server_info = r
        .get("serverInfo")
        .or_else(|| r.get("_meta").and_then(|m| m.get(META_SERVER_INFO)))
        .cloned()
        .unwrap_or_else(|| json!({"name": "unknown", "version": "0"}));
    let mut result = Map::new();
    result.insert("protocolVersion".into(), json!(client.agreed()));
    result.insert(
        "capabilities".into(),
        r.get("capabilities").cloned().unwrap_or_else(|| json!({})),
    );
    result.insert("serverInfo".into(), server_info);
    if let Some(i) = r.get("instructions") {
        result.insert("instructions".into(), i.clone());
    }
    Some(to_vec(
        &json!({"jsonrpc": "2.0", "id": raw(id), "result": result}),
    ))
}

/// The discover answer is an error: the client's `initialize` gets it.
pub(crate) fn discover_error(id: &str, discover: &[u8]) -> Vec<u8> {
    let error = serde_json::from_slice::<Value>(discover)
        .ok()
        .and_then(|v| v.get("error").cloned())
        .unwrap_or_else(|| json!({"code": -32000, "message": "mcp-relay: the remote's server/discover answer is unreadable"}));
    to_vec(&json!({"jsonrpc": "2.0", "id": raw(id), "error": error}))
}

/// What to do with one message from the client (a single message; a batch is sent as it is).
pub(crate) fn outgoing(line: &[u8], client: &ClientFacts) -> Outgoing {
    let Ok(mut v) = serde_json::from_slice::<Value>(line) else {
        return Outgoing::Send(line.to_vec(), headers("", None));
    };
    let method = v.get("method").and_then(Value::as_str).map(str::to_owned);
    let id = v.get("id").filter(|i| !i.is_null()).cloned();
    match (method.as_deref(), id) {
        (
            Some("ping" | "logging/setLevel" | "resources/subscribe" | "resources/unsubscribe"),
            Some(id),
        ) => {
            // Removed in 2026-07-28: the relay answers (a level or subscription cannot be
            // kept by a server without sessions).
            Outgoing::Answer(to_vec(&json!({"jsonrpc": "2.0", "id": id, "result": {}})))
        }
        (Some("notifications/cancelled"), None) => match v.pointer("/params/requestId") {
            Some(rid) => Outgoing::Cancel(rid.to_string()),
            None => Outgoing::Drop,
        },
        (Some(_), None) => Outgoing::Drop,
        (Some(m), Some(_)) => {
            let name = match m {
                "tools/call" | "prompts/get" => v.pointer("/params/name"),
                "resources/read" => v.pointer("/params/uri"),
                _ => None,
            }
            .and_then(Value::as_str)
            .map(str::to_owned);
            if let Some(obj) = v.as_object_mut() {
                let params = obj.entry("params").or_insert_with(|| json!({}));
                if let Some(p) = params.as_object_mut() {
                    let meta = p.entry("_meta").or_insert_with(|| json!({}));
                    if let (Some(meta), Value::Object(add)) = (meta.as_object_mut(), client.meta())
                    {
                        for (k, val) in add {
                            meta.insert(k, val);
                        }
                    }
                }
            }
            Outgoing::Send(to_vec(&v), headers(m, name.as_deref()))
        }
        // A response (to an input request: the caller handles those first) or garbage.
        (None, _) => Outgoing::Drop,
    }
}

/// The `subscriptions/listen` request (id `id`, raw JSON) for what a session-era client
/// hears without asking: the list changes the server's `capabilities` offer, and updates of
/// the resources in `resources`. `None` if there is nothing to listen for.
pub(crate) fn listen(
    id: &str,
    client: &ClientFacts,
    capabilities: &Value,
    resources: &[String],
) -> Option<Request> {
    let offers = |cap: &str| {
        capabilities
            .pointer(&format!("/{cap}/listChanged"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let mut notifications = Map::new();
    for (cap, field) in [
        ("tools", "toolsListChanged"),
        ("prompts", "promptsListChanged"),
        ("resources", "resourcesListChanged"),
    ] {
        if offers(cap) {
            notifications.insert(field.into(), json!(true));
        }
    }
    if !resources.is_empty() {
        notifications.insert("resourceSubscriptions".into(), json!(resources));
    }
    if notifications.is_empty() {
        return None;
    }
    let line = json!({
        "jsonrpc": "2.0",
        "id": raw(id),
        "method": "subscriptions/listen",
        "params": { "notifications": notifications, "_meta": client.meta() },
    });
    Some((to_vec(&line), headers("subscriptions/listen", None)))
}

/// The capabilities in a `server/discover` answer.
pub(crate) fn discovered_capabilities(discover: &[u8]) -> Value {
    serde_json::from_slice::<Value>(discover)
        .ok()
        .and_then(|v| v.pointer("/result/capabilities").cloned())
        .unwrap_or_else(|| json!({}))
}

/// `resources/subscribe` or `resources/unsubscribe`: which, and the URI.
pub(crate) fn subscription(line: &[u8]) -> Option<(bool, String)> {
    let v: Value = serde_json::from_slice(line).ok()?;
    let subscribe = match v.get("method")?.as_str()? {
        "resources/subscribe" => true,
        "resources/unsubscribe" => false,
        _ => return None,
    };
    Some((subscribe, v.pointer("/params/uri")?.as_str()?.to_owned()))
}

/// A message a listen stream carries that the session-era client must not see: its
/// acknowledgement.
pub(crate) fn is_listen_ack(line: &[u8]) -> bool {
    serde_json::from_slice::<Value>(line)
        .ok()
        .and_then(|v| v.get("method")?.as_str().map(str::to_owned))
        .is_some_and(|m| m == "notifications/subscriptions/acknowledged")
}

/// An answer refusing the protocol version (-32022) while naming 2026-07-28 as supported.
pub(crate) fn unsupported_version(line: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(line) else {
        return false;
    };
    let Some(e) = v.get("error") else {
        return false;
    };
    e.get("code").and_then(Value::as_i64) == Some(-32022)
        && e.pointer("/data/supported")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|v| v.as_str() == Some(MODERN)))
}

/// What an `input_required` answer asks: its input requests (key, `{method, params}`) and
/// its `requestState`.
pub(crate) type InputRound = (Vec<(String, Value)>, Option<Value>);

/// An `input_required` answer: its input requests (key, `{method, params}`) and state.
pub(crate) fn input_required(line: &[u8]) -> Option<InputRound> {
    let v: Value = serde_json::from_slice(line).ok()?;
    let r = v.get("result")?;
    if r.get("resultType").and_then(Value::as_str) != Some("input_required") {
        return None;
    }
    let requests = r
        .get("inputRequests")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    // A `null` state is no state.
    let state = r.get("requestState").filter(|s| !s.is_null()).cloned();
    Some((requests, state))
}

/// An input request as a request to the client, with id `id` (raw JSON).
pub(crate) fn input_request(id: &str, request: &Value) -> Vec<u8> {
    to_vec(&json!({
        "jsonrpc": "2.0",
        "id": raw(id),
        "method": request.get("method").cloned().unwrap_or(Value::Null),
        "params": request.get("params").cloned().unwrap_or_else(|| json!({})),
    }))
}

/// The client's answer to an input request: its result, or its error as the modern era
/// carries one.
pub(crate) fn input_response(answer: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(answer).unwrap_or(Value::Null);
    match (v.get("result"), v.get("error")) {
        (Some(r), _) => r.clone(),
        (None, Some(e)) => json!({"error": e}),
        _ => json!({}),
    }
}

/// The original request (as sent, `_meta` included) retried with the client's answers (none
/// after a state-only round: the last round's are left out too), as a request of its own:
/// with id `id` (raw JSON), since the era wants the retry's id to differ from the first
/// request's.
pub(crate) fn retry(
    sent: &[u8],
    id: &str,
    responses: Map<String, Value>,
    state: Option<&Value>,
) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<Value>(sent) else {
        return sent.to_vec();
    };
    if let Some(obj) = v.as_object_mut() {
        obj.insert("id".into(), raw(id));
    }
    if let Some(p) = v.get_mut("params").and_then(Value::as_object_mut) {
        if responses.is_empty() {
            p.remove("inputResponses");
        } else {
            p.insert("inputResponses".into(), Value::Object(responses));
        }
        match state {
            Some(s) => p.insert("requestState".into(), s.clone()),
            None => p.remove("requestState"),
        };
    }
    to_vec(&v)
}

/// A response line with its id replaced by `id` (raw JSON), the rest of it byte for byte;
/// re-serialised only if the id cannot be found in place.
pub(crate) fn answer_as(line: &[u8], id: &str) -> Vec<u8> {
    #[derive(serde::Deserialize)]
    struct IdOf<'a> {
        #[serde(borrow)]
        id: &'a serde_json::value::RawValue,
    }
    let found = serde_json::from_slice::<IdOf<'_>>(line).ok().and_then(|m| {
        let old = m.id.get().as_bytes();
        // Where the id lies in `line` (it borrows from it).
        let start = (old.as_ptr() as usize).checked_sub(line.as_ptr() as usize)?;
        (line.get(start..start + old.len()) == Some(old)).then_some((start, old.len()))
    });
    match found {
        Some((start, len)) => [&line[..start], id.as_bytes(), &line[start + len..]].concat(),
        None => crate::message::with_id(line, id).unwrap_or_else(|| line.to_vec()),
    }
}

/// The headers a 2026-07-28 POST carries.
pub(crate) fn headers(method: &str, name: Option<&str>) -> Vec<(String, String)> {
    let mut h = vec![("MCP-Protocol-Version".to_owned(), MODERN.to_owned())];
    if !method.is_empty() {
        h.push(("Mcp-Method".to_owned(), header_value(method)));
    }
    if let Some(name) = name {
        h.push(("Mcp-Name".to_owned(), header_value(name)));
    }
    h
}

/// A value as a header carries it: as it is if it is visible ASCII with no leading or
/// trailing space, else `=?base64?…?=`.
fn header_value(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !s.starts_with(' ')
        && !s.ends_with(' ')
        && !s.starts_with("=?");
    if safe {
        s.to_owned()
    } else {
        format!("=?base64?{}?=", base64(s.as_bytes()))
    }
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn raw(id: &str) -> Value {
    serde_json::from_str(id).unwrap_or_else(|_| Value::String(id.to_owned()))
}

fn to_vec(v: &Value) -> Vec<u8> {
    // A `Value` always serializes.
    serde_json::to_vec(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INIT: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"sampling":{}},"clientInfo":{"name":"c","version":"1"}}}"#;

    fn parse(line: &[u8]) -> Value {
        serde_json::from_slice(line).unwrap()
    }

    #[test]
    fn initialize_comes_from_discover() {
        let client = ClientFacts::from_initialize(INIT).unwrap();
        let (d, h) = discover("\"mcp-relay:discover\"", &client);
        let d = parse(&d);
        assert_eq!(d["method"], "server/discover");
        assert_eq!(d["params"]["_meta"][META_VERSION], MODERN);
        assert_eq!(
            d["params"]["_meta"][META_CAPABILITIES]["sampling"],
            json!({})
        );
        assert_eq!(d["params"]["_meta"][META_CLIENT_INFO]["name"], "c");
        assert!(h.contains(&("Mcp-Method".into(), "server/discover".into())));
        let answer = initialize_answer(
            "1",
            &client,
            br#"{"jsonrpc":"2.0","id":"mcp-relay:discover","result":{"resultType":"complete","supportedVersions":["2026-07-28"],"capabilities":{"tools":{}},"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"s","version":"2"}},"instructions":"hi"}}"#,
        )
        .unwrap();
        let a = parse(&answer);
        assert_eq!(a["id"], 1);
        assert_eq!(a["result"]["protocolVersion"], "2025-06-18");
        assert_eq!(a["result"]["serverInfo"]["name"], "s");
        assert_eq!(a["result"]["capabilities"]["tools"], json!({}));
        assert_eq!(a["result"]["instructions"], "hi");
    }

    #[test]
    fn requests_carry_meta_and_headers() {
        let client = ClientFacts::from_initialize(INIT).unwrap();
        let call = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"caf\u00e9","arguments":{}}}"#;
        let Outgoing::Send(line, h) = outgoing(call, &client) else {
            panic!()
        };
        let v = parse(&line);
        assert_eq!(v["params"]["_meta"][META_VERSION], MODERN);
        assert_eq!(v["params"]["arguments"], json!({}));
        assert!(h.contains(&("Mcp-Method".into(), "tools/call".into())));
        assert!(h.contains(&("Mcp-Name".into(), "=?base64?Y2Fmw6k=?=".into())));
        assert_eq!(
            outgoing(br#"{"jsonrpc":"2.0","id":8,"method":"ping"}"#, &client),
            Outgoing::Answer(br#"{"id":8,"jsonrpc":"2.0","result":{}}"#.to_vec())
        );
        assert_eq!(
            outgoing(
                br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                &client
            ),
            Outgoing::Drop
        );
        assert_eq!(
            outgoing(
                br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"x"}}"#,
                &client
            ),
            Outgoing::Cancel("\"x\"".into())
        );
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    #[test]
    fn input_required_rounds() {
        let line = br#"{"jsonrpc":"2.0","id":7,"result":{"resultType":"input_required","inputRequests":{"a":{"method":"elicitation/create","params":{"message":"?"}}},"requestState":"s1"}}"#;
        let (reqs, state) = input_required(line).unwrap();
        assert_eq!(reqs[0].0, "a");
        assert_eq!(state, Some(json!("s1")));
        let ask = parse(&input_request("\"mcp-relay:input:1\"", &reqs[0].1));
        assert_eq!(ask["method"], "elicitation/create");
        assert_eq!(ask["id"], "mcp-relay:input:1");
        let mut answers = Map::new();
        answers.insert(
            "a".into(),
            input_response(
                br#"{"jsonrpc":"2.0","id":"mcp-relay:input:1","result":{"action":"accept"}}"#,
            ),
        );
        let again = parse(&retry(
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"t"}}"#,
            "\"mcp-relay:retry:1\"",
            answers,
            state.as_ref(),
        ));
        assert_eq!(again["id"], "mcp-relay:retry:1");
        assert_eq!(again["params"]["inputResponses"]["a"]["action"], "accept");
        assert_eq!(again["params"]["requestState"], "s1");
        assert!(input_required(br#"{"jsonrpc":"2.0","id":7,"result":{}}"#).is_none());
    }

    #[test]
    fn a_retry_s_answer_goes_back_under_the_client_s_id_byte_for_byte() {
        let answer = br#"{"jsonrpc":"2.0", "id" : "mcp-relay:retry:1","result":{"n":12345678901234567890123,"id":1}}"#;
        assert_eq!(
            answer_as(answer, "7"),
            br#"{"jsonrpc":"2.0", "id" : 7,"result":{"n":12345678901234567890123,"id":1}}"#
        );
        assert_eq!(
            answer_as(br#"{"id":"mcp-relay:retry:2","result":{}}"#, r#""a"b""#),
            br#"{"id":"a"b","result":{}}"#
        );
    }
}
