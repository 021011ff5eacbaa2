//! What a 2026-07-28 client must see that a session-era server does not say: pure functions
//! from the legacy server's messages to the modern era's, used only on the stateless path
//! (the session era forwards bytes untouched).
//!
//! - `server/discover` is answered from the server's `initialize` result ([`ServerFacts`]).
//! - Every result gets `resultType`; cacheable results get `ttlMs` and `cacheScope`.
//! - A server's requests to the client (elicitation, sampling, roots) become one
//!   `input_required` result; its notifications outside a request reach `subscriptions/listen`
//!   streams, tagged with the subscription's id and filtered as the client asked.

use crate::message::{codes, RawId};
use serde_json::{json, Map, Value};

/// The version this bridge speaks to modern clients.
pub(crate) const MODERN: &str = "2026-07-28";

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
const META_SUBSCRIPTION: &str = "io.modelcontextprotocol/subscriptionId";

/// Methods of the session era that 2026-07-28 removed: a modern client gets 404 and -32601.
pub(crate) const REMOVED_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
];

/// Results a client may cache (`CacheableResult` in the 2026-07-28 schema).
const CACHEABLE: &[&str] = &[
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
];

/// The answers a bridged server's results carry about caching. A session-era server may
/// change any list at any moment and says nothing about whose data an answer holds, so the
/// only true hints are "stale at once" and "not for sharing across clients".
const TTL_MS: u64 = 0;
const CACHE_SCOPE: &str = "private";

/// The code of "resource not found" before 2026-07-28.
const RESOURCE_NOT_FOUND_BEFORE: i64 = -32002;

/// What the server said of itself when a pool child was initialized.
#[derive(Clone, Debug)]
pub(crate) struct ServerFacts {
    capabilities: Value,
    server_info: Value,
    instructions: Option<Value>,
}

impl ServerFacts {
    /// Reads an `initialize` answer; `None` if it is an error or not an answer.
    pub(crate) fn from_initialize(answer: &[u8]) -> Option<ServerFacts> {
        let v: Value = serde_json::from_slice(answer).ok()?;
        let r = v.get("result")?.as_object()?;
        Some(ServerFacts {
            capabilities: r.get("capabilities").cloned().unwrap_or_else(|| json!({})),
            server_info: r
                .get("serverInfo")
                .cloned()
                .unwrap_or_else(|| json!({"name": "unknown", "version": "unknown"})),
            instructions: r.get("instructions").cloned(),
        })
    }

    /// The server has tools.
    pub(crate) fn tools(&self) -> bool {
        self.capabilities.get("tools").is_some()
    }

    /// The server takes `logging/setLevel`.
    pub(crate) fn logging(&self) -> bool {
        self.capabilities.get("logging").is_some()
    }

    /// The notifications of a listen filter this server can send (the rest are left out of
    /// the acknowledgement, as 2026-07-28 asks).
    pub(crate) fn honored(&self, requested: &Value) -> Filter {
        let caps = &self.capabilities;
        let list_changed = |cap: &str| {
            caps.get(cap)
                .and_then(|c| c.get("listChanged"))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        let asked = |field: &str| requested.get(field).and_then(Value::as_bool) == Some(true);
        Filter {
            tools: asked("toolsListChanged") && list_changed("tools"),
            prompts: asked("promptsListChanged") && list_changed("prompts"),
            resources: asked("resourcesListChanged") && list_changed("resources"),
        }
    }

    /// The resources of a listen filter's `resourceSubscriptions` the relay will watch: all
    /// of them (up to [`MAX_RESOURCE_SUBSCRIPTIONS`]) if the server takes subscriptions, else
    /// none.
    pub(crate) fn honored_resources(&self, requested: &Value) -> Vec<String> {
        let subscribe = self
            .capabilities
            .pointer("/resources/subscribe")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut uris: Vec<String> = Vec::new();
        if !subscribe {
            return uris;
        }
        let asked = requested
            .get("resourceSubscriptions")
            .and_then(Value::as_array);
        for uri in asked.into_iter().flatten().filter_map(Value::as_str) {
            if uris.len() >= MAX_RESOURCE_SUBSCRIPTIONS {
                break;
            }
            if !uris.iter().any(|u| u == uri) {
                uris.push(uri.to_owned());
            }
        }
        uris
    }
}

/// Most resources one listen stream watches (bounds what a client's filter makes the relay
/// hold and the server watch).
pub(crate) const MAX_RESOURCE_SUBSCRIPTIONS: usize = 256;

/// Whether an update of `updated` is news to a client watching `watched` (the same resource,
/// or one below it).
pub(crate) fn update_matches(watched: &str, updated: &str) -> bool {
    match updated.strip_prefix(watched) {
        Some("") => true,
        Some(rest) => watched.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// The notifications one `subscriptions/listen` stream receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    tools: bool,
    prompts: bool,
    resources: bool,
}

impl Filter {
    /// Whether a server notification with this method belongs on the stream.
    pub(crate) fn wants(&self, method: &str) -> bool {
        match method {
            "notifications/tools/list_changed" => self.tools,
            "notifications/prompts/list_changed" => self.prompts,
            "notifications/resources/list_changed" => self.resources,
            _ => false,
        }
    }

    fn to_json(self) -> Value {
        let mut m = Map::new();
        for (on, name) in [
            (self.tools, "toolsListChanged"),
            (self.prompts, "promptsListChanged"),
            (self.resources, "resourcesListChanged"),
        ] {
            if on {
                m.insert(name.into(), Value::Bool(true));
            }
        }
        Value::Object(m)
    }
}

/// A modern client's request as a pool child gets it: with the relay's id and, if it asked
/// for progress, the relay's token. `None` if the line is not a JSON object.
pub(crate) fn for_child(line: &[u8], id: &RawId, token: Option<&Value>) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(line).ok()?;
    let obj = v.as_object_mut()?;
    obj.insert("id".into(), serde_json::from_str(id.as_str()).ok()?);
    if let Some(token) = token {
        if let Some(meta) = obj
            .get_mut("params")
            .and_then(|p| p.get_mut("_meta"))
            .and_then(Value::as_object_mut)
        {
            meta.insert("progressToken".into(), token.clone());
        }
    }
    serde_json::to_vec(&v).ok()
}

/// The tools of a `tools/list` answer with the parameters their input schema mirrors in
/// `Mcp-Param-*` headers (`x-mcp-header`): tool, [(parameter, header suffix)].
pub(crate) fn mirrored_params(answer: &[u8]) -> Vec<(String, Vec<(String, String)>)> {
    let Ok(v) = serde_json::from_slice::<Value>(answer) else {
        return Vec::new();
    };
    let Some(tools) = v.pointer("/result/tools").and_then(Value::as_array) else {
        return Vec::new();
    };
    tools
        .iter()
        .filter_map(|t| {
            let name = t.get("name")?.as_str()?.to_owned();
            let props = t
                .pointer("/inputSchema/properties")
                .and_then(Value::as_object);
            let params = props
                .into_iter()
                .flatten()
                .filter_map(|(p, schema)| {
                    let h = schema.get("x-mcp-header")?.as_str()?;
                    Some((p.clone(), h.to_owned()))
                })
                .collect();
            Some((name, params))
        })
        .collect()
}

/// Whether a server notification is one that only listen streams carry.
pub(crate) fn is_listen_notification(method: &str) -> bool {
    matches!(
        method,
        "notifications/tools/list_changed"
            | "notifications/prompts/list_changed"
            | "notifications/resources/list_changed"
            | "notifications/resources/updated"
    )
}

/// What a modern request's `_meta` says, once checked.
#[derive(Clone, Debug)]
pub(crate) struct RequestMeta {
    pub(crate) capabilities: Value,
    /// The least severe log level the client wants (`None`: no log messages at all).
    pub(crate) log_level: Option<u8>,
}

/// Why a modern request's `_meta` is unusable (-32602).
pub(crate) fn check_meta(params: Option<&Value>) -> Result<RequestMeta, String> {
    let Some(meta) = params.and_then(|p| p.get("_meta")) else {
        return Err(
            "the request has no _meta; MCP 2026-07-28 requires one on every request".into(),
        );
    };
    let Some(meta) = meta.as_object() else {
        return Err("_meta must be an object".into());
    };
    if !meta.get(META_VERSION).is_some_and(Value::is_string) {
        return Err(format!("_meta[\"{META_VERSION}\"] is missing"));
    }
    let capabilities = match meta.get(META_CAPABILITIES) {
        Some(c) if c.is_object() => c.clone(),
        _ => return Err(format!("_meta[\"{META_CAPABILITIES}\"] is missing")),
    };
    let log_level = meta
        .get(META_LOG_LEVEL)
        .and_then(Value::as_str)
        .and_then(log_rank);
    Ok(RequestMeta {
        capabilities,
        log_level,
    })
}

/// The protocol version a request's `_meta` names.
pub(crate) fn meta_version(params: Option<&Value>) -> Option<&str> {
    params?.get("_meta")?.get(META_VERSION)?.as_str()
}

/// Severity of a log level, least severe first.
pub(crate) fn log_rank(level: &str) -> Option<u8> {
    const LEVELS: [&str; 8] = [
        "debug",
        "info",
        "notice",
        "warning",
        "error",
        "critical",
        "alert",
        "emergency",
    ];
    LEVELS.iter().position(|l| *l == level).map(|p| p as u8)
}

/// Whether a `notifications/message` goes to a client that asked for `wanted` and up.
pub(crate) fn log_passes(notification: &Value, wanted: Option<u8>) -> bool {
    let Some(wanted) = wanted else {
        return false;
    };
    notification
        .pointer("/params/level")
        .and_then(Value::as_str)
        .and_then(log_rank)
        .is_some_and(|r| r >= wanted)
}

/// The client capability a server-to-client request needs, and a short name for its key.
pub(crate) fn input_kind(method: &str) -> Option<(&'static str, &'static str)> {
    match method {
        "elicitation/create" => Some(("elicitation", "elicitation")),
        "sampling/createMessage" => Some(("sampling", "sampling")),
        "roots/list" => Some(("roots", "roots")),
        _ => None,
    }
}

/// The client capability a server-to-client request needs: its name and, where the request
/// uses a part of it that a client declares separately, that part (elicitation's `url` mode,
/// sampling with `tools`).
pub(crate) fn needed(request: &Value) -> Option<(&'static str, Option<&'static str>)> {
    let method = request.get("method")?.as_str()?;
    let params = request.get("params");
    let (cap, _) = input_kind(method)?;
    let part = match cap {
        "elicitation" => match params.and_then(|p| p.get("mode")).and_then(Value::as_str) {
            Some("url") => Some("url"),
            _ => Some("form"),
        },
        "sampling" => params
            .is_some_and(|p| p.get("tools").is_some() || p.get("toolChoice").is_some())
            .then_some("tools"),
        _ => None,
    };
    Some((cap, part))
}

/// Whether `capabilities` declares what [`needed`] named. An empty `elicitation` object means
/// form mode only, as the spec says.
pub(crate) fn declared(capabilities: &Value, cap: &str, part: Option<&str>) -> bool {
    let Some(c) = capabilities.get(cap).filter(|c| c.is_object()) else {
        return false;
    };
    match (cap, part) {
        ("elicitation", Some("form")) => {
            c.get("form").is_some() || c.as_object().is_some_and(|m| m.is_empty())
        }
        (_, Some(part)) => c.get(part).is_some(),
        (_, None) => true,
    }
}

/// The modern answer to `server/discover`, from what the server said at `initialize`.
pub(crate) fn discover(id: &RawId, facts: &ServerFacts) -> Vec<u8> {
    let mut result = Map::new();
    result.insert("resultType".into(), json!("complete"));
    result.insert("supportedVersions".into(), json!([MODERN]));
    result.insert("capabilities".into(), facts.capabilities.clone());
    if let Some(i) = &facts.instructions {
        result.insert("instructions".into(), i.clone());
    }
    result.insert("ttlMs".into(), json!(TTL_MS));
    result.insert("cacheScope".into(), json!(CACHE_SCOPE));
    result.insert(
        "_meta".into(),
        json!({ META_SERVER_INFO: facts.server_info.clone() }),
    );
    answer(id, Value::Object(result))
}

/// Completes a legacy server's answer for a modern client: `resultType` on a result, caching
/// hints on a cacheable one, and the id the client used (a retry's id differs from the
/// original request's, which the server knows). An answer that is not JSON goes as it is.
pub(crate) fn complete(msg: &[u8], method: &str, id: &RawId) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<Value>(msg) else {
        return msg.to_vec();
    };
    if let Some(obj) = v.as_object_mut() {
        if let Ok(id) = serde_json::from_str::<Value>(id.as_str()) {
            obj.insert("id".into(), id);
        }
        // 2026-07-28 retired -32002 ("resource not found") for -32602.
        if let Some(code) = obj.get_mut("error").and_then(|e| e.get_mut("code")) {
            if code.as_i64() == Some(RESOURCE_NOT_FOUND_BEFORE) {
                *code = json!(codes::INVALID_PARAMS);
            }
        }
        if let Some(Value::Object(r)) = obj.get_mut("result") {
            r.entry("resultType").or_insert_with(|| json!("complete"));
            if CACHEABLE.contains(&method) {
                r.entry("ttlMs").or_insert_with(|| json!(TTL_MS));
                r.entry("cacheScope").or_insert_with(|| json!(CACHE_SCOPE));
            }
        }
    }
    serde_json::to_vec(&v).unwrap_or_else(|_| msg.to_vec())
}

/// The `input_required` result asking the client for `requests` (key, `{method, params}`).
pub(crate) fn input_required(id: &RawId, requests: &[(String, Value)], state: &str) -> Vec<u8> {
    let mut asks = Map::new();
    for (key, request) in requests {
        asks.insert(key.clone(), request.clone());
    }
    answer(
        id,
        json!({
            "resultType": "input_required",
            "inputRequests": Value::Object(asks),
            "requestState": state,
        }),
    )
}

/// The `{method, params}` of a server request, as `inputRequests` carries it.
pub(crate) fn as_input_request(request: &Value) -> Value {
    let mut m = Map::new();
    if let Some(method) = request.get("method") {
        m.insert("method".into(), method.clone());
    }
    m.insert(
        "params".into(),
        request.get("params").cloned().unwrap_or_else(|| json!({})),
    );
    Value::Object(m)
}

/// -32021: the request needs capabilities the client did not declare.
pub(crate) fn missing_capabilities(
    id: &RawId,
    caps: &[(&'static str, Option<&'static str>)],
) -> Vec<u8> {
    let mut required = Map::new();
    for (c, part) in caps {
        let entry = required.entry(*c).or_insert_with(|| json!({}));
        if let (Some(part), Some(m)) = (part, entry.as_object_mut()) {
            // Form mode is what an empty elicitation object declares.
            if !(*c == "elicitation" && *part == "form") {
                m.insert((*part).into(), json!({}));
            }
        }
    }
    let names: Vec<&str> = caps.iter().map(|(c, _)| *c).collect();
    let mut out = Vec::new();
    crate::message::write_error_data(
        &mut out,
        Some(id.as_str()),
        codes::MISSING_CLIENT_CAPABILITY,
        &format!(
            "mcp-relay: the server asked the client for {}, which the request did not declare in its client capabilities",
            names.join(" and ")
        ),
        Some(&json!({ "requiredCapabilities": Value::Object(required) }).to_string()),
    );
    out
}

/// The answer the relay gives the server for a request the client cannot be asked.
pub(crate) fn refuse_input(id: &Value, message: &str) -> Vec<u8> {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": codes::METHOD_NOT_FOUND, "message": message },
    })
    .to_string()
    .into_bytes()
}

/// A client's result for one of the server's requests, as the server expects it.
pub(crate) fn input_answer(id: &Value, result: &Value) -> Vec<u8> {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
        .to_string()
        .into_bytes()
}

/// The first event of a listen stream: which notifications it will carry.
pub(crate) fn listen_ack(id: &RawId, honored: Filter, resources: &[String]) -> Vec<u8> {
    let sub: Value = serde_json::from_str(id.as_str()).unwrap_or(Value::Null);
    let mut notifications = honored.to_json();
    if let (false, Some(n)) = (resources.is_empty(), notifications.as_object_mut()) {
        n.insert("resourceSubscriptions".into(), json!(resources));
    }
    json!({
        "jsonrpc": "2.0",
        "method": "notifications/subscriptions/acknowledged",
        "params": {
            "notifications": notifications,
            "_meta": { META_SUBSCRIPTION: sub },
        },
    })
    .to_string()
    .into_bytes()
}

/// A server notification as a listen stream carries it: tagged with the subscription.
pub(crate) fn tag_subscription(notification: &Value, id: &RawId) -> Vec<u8> {
    let mut n = notification.clone();
    let sub: Value = serde_json::from_str(id.as_str()).unwrap_or(Value::Null);
    if let Some(obj) = n.as_object_mut() {
        let params = obj.entry("params").or_insert_with(|| json!({}));
        if let Some(p) = params.as_object_mut() {
            let meta = p.entry("_meta").or_insert_with(|| json!({}));
            if let Some(m) = meta.as_object_mut() {
                m.insert(META_SUBSCRIPTION.into(), sub);
            }
        }
    }
    serde_json::to_vec(&n).unwrap_or_default()
}

/// The answer that ends a listen stream gracefully (the relay is shutting down).
pub(crate) fn listen_closed(id: &RawId) -> Vec<u8> {
    let sub: Value = serde_json::from_str(id.as_str()).unwrap_or(Value::Null);
    answer(
        id,
        json!({ "resultType": "complete", "_meta": { META_SUBSCRIPTION: sub } }),
    )
}

/// The `initialize` a pool child gets: every client capability a server may ask for, so that
/// it registers everything it has (a modern client declares its own capabilities per request,
/// and the relay answers for those it lacks).
pub(crate) fn pool_initialize(id: &str) -> Vec<u8> {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {
                "roots": { "listChanged": true },
                "sampling": { "context": {}, "tools": {} },
                "elicitation": { "form": {}, "url": {} },
            },
            "clientInfo": {
                "name": "mcp-relay",
                "title": "mcp-relay (bridging MCP 2026-07-28 clients)",
                "version": env!("CARGO_PKG_VERSION"),
            },
        },
    })
    .to_string()
    .into_bytes()
}

fn answer(id: &RawId, result: Value) -> Vec<u8> {
    let id: Value = serde_json::from_str(id.as_str()).unwrap_or(Value::Null);
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn results_are_completed() {
        let id = RawId::parse("7").unwrap();
        let out = parse(&complete(
            br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[]}}"#,
            "tools/list",
            &id,
        ));
        assert_eq!(out["id"], 7);
        assert_eq!(out["result"]["resultType"], "complete");
        assert_eq!(out["result"]["ttlMs"], 0);
        assert_eq!(out["result"]["cacheScope"], "private");
        let call = parse(&complete(
            br#"{"jsonrpc":"2.0","id":3,"result":{"content":[]}}"#,
            "tools/call",
            &id,
        ));
        assert_eq!(call["result"]["resultType"], "complete");
        assert!(call["result"].get("ttlMs").is_none());
        let err = parse(&complete(
            br#"{"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"x"}}"#,
            "tools/call",
            &id,
        ));
        assert_eq!(err["id"], 7);
        assert!(err.get("result").is_none());
    }

    #[test]
    fn discover_comes_from_initialize() {
        let facts = ServerFacts::from_initialize(
            br#"{"jsonrpc":"2.0","id":"i","result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{"listChanged":true},"logging":{}},"serverInfo":{"name":"s","version":"1"},"instructions":"hi"}}"#,
        )
        .unwrap();
        assert!(facts.logging());
        let d = parse(&discover(&RawId::string("d"), &facts));
        assert_eq!(d["id"], "d");
        assert_eq!(d["result"]["supportedVersions"], json!([MODERN]));
        assert_eq!(d["result"]["capabilities"]["tools"]["listChanged"], true);
        assert_eq!(d["result"]["instructions"], "hi");
        assert_eq!(d["result"]["_meta"][META_SERVER_INFO]["name"], "s");
        let honored = facts.honored(&json!({"toolsListChanged": true, "promptsListChanged": true}));
        assert!(honored.wants("notifications/tools/list_changed"));
        assert!(!honored.wants("notifications/prompts/list_changed"));
        let ack = parse(&listen_ack(&RawId::parse("5").unwrap(), honored, &[]));
        assert_eq!(
            ack["params"]["notifications"],
            json!({"toolsListChanged": true})
        );
        assert_eq!(ack["params"]["_meta"][META_SUBSCRIPTION], 5);
    }

    #[test]
    fn resource_updates_match_what_was_watched() {
        assert!(update_matches("file:///a", "file:///a"));
        assert!(update_matches("file:///a", "file:///a/b.txt"));
        assert!(update_matches("file:///a/", "file:///a/b.txt"));
        assert!(!update_matches("file:///a", "file:///ab"));
        assert!(!update_matches("file:///a/b", "file:///a"));
    }

    #[test]
    fn meta_is_checked() {
        assert!(check_meta(Some(&json!({}))).is_err());
        assert!(check_meta(Some(&json!({"_meta": {META_VERSION: MODERN}}))).is_err());
        let m = check_meta(Some(&json!({"_meta": {
            META_VERSION: MODERN, META_CAPABILITIES: {}, META_LOG_LEVEL: "warning"
        }})))
        .unwrap();
        assert_eq!(m.log_level, Some(3));
        let n = json!({"method": "notifications/message", "params": {"level": "error"}});
        assert!(log_passes(&n, m.log_level));
        assert!(!log_passes(&n, None));
        assert!(!log_passes(
            &json!({"params": {"level": "info"}}),
            m.log_level
        ));
    }

    #[test]
    fn missing_capability_names_it() {
        let e = parse(&missing_capabilities(
            &RawId::parse("4").unwrap(),
            &[("sampling", None), ("elicitation", Some("url"))],
        ));
        assert_eq!(e["id"], 4);
        assert_eq!(e["error"]["code"], -32021);
        assert_eq!(
            e["error"]["data"]["requiredCapabilities"],
            json!({"sampling": {}, "elicitation": {"url": {}}})
        );
        let url = json!({"method": "elicitation/create", "params": {"mode": "url"}});
        let form = json!({"method": "elicitation/create", "params": {}});
        let tools = json!({"method": "sampling/createMessage", "params": {"tools": []}});
        let caps = json!({"elicitation": {}, "sampling": {}});
        let (c, p) = needed(&url).unwrap();
        assert!(!declared(&caps, c, p));
        let (c, p) = needed(&form).unwrap();
        assert!(declared(&caps, c, p));
        let (c, p) = needed(&tools).unwrap();
        assert!(!declared(&caps, c, p));
        assert!(declared(&json!({"sampling": {"tools": {}}}), c, p));
    }
}
