//! The demo MCP server built into the `mcp-relay` binary (`mcp-relay demo-server`, and what
//! `--demo` serves), as a library of its own so that the CLI stays flags, validation, logging
//! and signals.
//!
//! [`run`] takes over the process's stdin and stdout: call it from a `main` (or a subcommand)
//! and return its exit code. When stdout breaks (the client went away) it ends the process
//! with status 0, and the `hang` tool parks it for good; it is not for running on a thread of
//! a program that has other work to do.
//!
//! A plain synchronous stdio MCP server: newline-delimited JSON-RPC 2.0, one
//! message per line, UTF-8. It exists so that README quick starts, tests and
//! benchmarks need nothing else installed, and it carries a few
//! fault-injection tools (`crash`, `hang`, `exit`, `garbage`, `stderr`) used by
//! the relay's own tests.
//!
//! Structure: `State` owns everything the protocol needs and writes through
//! a sink closure (`Fn(&str)`, one call per outgoing line). [`run`] wires that
//! sink to a locked, buffered stdout and feeds it stdin lines; the unit tests
//! wire it to a channel instead. Fast tools answer on the calling thread;
//! `slow`, `sample` and `elicit` run on their own thread and answer later
//! through the same sink, so every write is serialised by the sink's lock.
//!
//! Responses to deferred tools (`slow`, `sample`, `elicit`) that were part of
//! a batch are sent on their own when ready, not inside the batch array.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::HashMap;
use std::io::{self, BufRead, BufWriter, Stdout, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::Duration;

use serde_json::{json, Map, Number, Value};

/// Help text for `mcp-relay demo-server`.
pub const USAGE: &str = "\
mcp-relay demo-server [--banner] [--stderr-chatter]
  Built-in demo MCP server on stdio (newline-delimited JSON-RPC), for quick starts, tests, benchmarks.
  --banner          print a non-JSON banner line on stdout at start (the relay must drop it)
  --stderr-chatter  write a few extra lines to stderr at start
  tools:   echo, add, slow (progress, cancellable), bytes, flood, log, sample, elicit,
           notify_list_changed; fault injection: crash, hang, exit, garbage, stderr
  prompts: greet    resources: demo://readme, demo://counter";

const BANNER: &str = "demo MCP server ready (this banner is not JSON)";
const SERVER_NAME: &str = "mcp-relay-demo";
const LATEST_VERSION: &str = "2025-11-25";
const SUPPORTED_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
const DISCOVER_VERSIONS: [&str; 5] = [
    "2026-07-28",
    "2025-11-25",
    "2025-06-18",
    "2025-03-26",
    "2024-11-05",
];
const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];
const KNOWN_METHODS: [&str; 13] = [
    "initialize",
    "ping",
    "server/discover",
    "logging/setLevel",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
];

const PATTERN: &str = "abcdefghijklmnopqrstuvwxyz0123456789";
const MAX_BYTES: i64 = 256 * 1024 * 1024;
const MAX_FLOOD_COUNT: i64 = 10_000_000;
const MAX_FLOOD_SIZE: i64 = 64 * 1024 * 1024;
const MAX_FLOOD_TOTAL: i64 = 1024 * 1024 * 1024;
const MAX_SLOW_STEPS: i64 = 1_000_000;
const MAX_SLOW_INTERVAL_MS: i64 = 3_600_000;

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL_ERROR: i64 = -32603;
const RESOURCE_NOT_FOUND: i64 = -32002;

const README_TEXT: &str = "\
This is the mcp-relay demo MCP server.
It is built into the mcp-relay binary so that quick starts, tests and benchmarks
need nothing else installed. Try the `echo` tool, or read demo://counter.
";

/// Runs the demo server on stdin/stdout. `args` are the arguments after the
/// `demo-server` word. Returns the process exit code.
pub fn run(args: &[String]) -> i32 {
    let mut banner = false;
    let mut chatter = false;
    for arg in args {
        match arg.as_str() {
            "--banner" => banner = true,
            "--stderr-chatter" => chatter = true,
            "-h" | "--help" => {
                let mut out = io::stdout().lock();
                let _ = writeln!(out, "{USAGE}");
                let _ = out.flush();
                return 0;
            }
            other => {
                err_line(&format!(
                    "mcp-relay demo-server: unknown flag '{other}'\n{USAGE}"
                ));
                return 2;
            }
        }
    }

    err_line(&format!(
        "mcp-relay demo server started (pid {})",
        std::process::id()
    ));
    if chatter {
        err_line("demo: loading configuration from nowhere in particular");
        err_line("demo: warming up imaginary caches");
        err_line("WARN demo: this stderr chatter is intentional (--stderr-chatter)");
    }

    let out = Arc::new(Mutex::new(BufWriter::with_capacity(
        64 * 1024,
        io::stdout(),
    )));
    let sink_out = Arc::clone(&out);
    let state = State::new(move |line: &str| write_line(&sink_out, line));
    if banner {
        state.shared.send_line(BANNER);
    }

    let mut input = io::stdin().lock();
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        buf.clear();
        if buf.capacity() > 1024 * 1024 {
            // Do not keep a huge buffer around after one big message.
            buf = Vec::with_capacity(4096);
        }
        match input.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => match state.handle_bytes(&buf) {
                Action::Continue => {}
                Action::Exit(code) => {
                    flush_out(&out);
                    return code;
                }
                Action::Hang => {
                    flush_out(&out);
                    // Fault injection: never read or answer anything again.
                    loop {
                        thread::park();
                    }
                }
            },
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                err_line(&format!("mcp-relay demo server: reading stdin failed: {e}"));
                flush_out(&out);
                return 1;
            }
        }
    }
    flush_out(&out);
    0
}

/// Writes one line plus newline and flushes; a failed write (usually a broken
/// pipe: the client went away) ends the process quietly with status 0.
fn write_line(out: &Mutex<BufWriter<Stdout>>, line: &str) {
    let mut w = lock(out);
    let written = w
        .write_all(line.as_bytes())
        .and_then(|()| w.write_all(b"\n"))
        .and_then(|()| w.flush());
    if written.is_err() {
        std::process::exit(0);
    }
}

fn flush_out(out: &Mutex<BufWriter<Stdout>>) {
    let _ = lock(out).flush();
}

fn err_line(msg: &str) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "{msg}");
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking holder cannot leave these maps/writers logically broken,
    // so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the read loop must do after a line was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Continue,
    /// Stop reading and exit with this code (`crash`, `exit`).
    Exit(i32),
    /// Stop reading and never answer anything again (`hang`).
    Hang,
}

/// Outcome of a request handler.
enum Done {
    Result(Value),
    /// A tool thread owns the request and will answer (or not, if cancelled).
    Deferred,
    Exit(i32),
    Hang,
}

/// Message delivered to a deferred tool thread.
enum Event {
    Cancel,
    Reply(Value),
}

#[derive(Debug)]
struct RpcError {
    code: i64,
    message: String,
    data: Option<Value>,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }

    fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(INVALID_REQUEST, message)
    }

    fn into_json(self) -> Value {
        let mut err = Map::new();
        err.insert("code".into(), Value::from(self.code));
        err.insert("message".into(), Value::String(self.message));
        if let Some(data) = self.data {
            err.insert("data".into(), data);
        }
        Value::Object(err)
    }
}

fn response(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn error_response(id: Value, err: RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": err.into_json()})
}

fn text_result(text: impl Into<String>) -> Value {
    json!({"content": [{"type": "text", "text": text.into()}]})
}

fn tool_error(text: impl Into<String>) -> Value {
    json!({"content": [{"type": "text", "text": text.into()}], "isError": true})
}

fn is_valid_id(id: &Value) -> bool {
    matches!(id, Value::String(_) | Value::Number(_))
}

/// Canonical map key of a JSON-RPC id (`1` and `"1"` stay distinct).
fn id_key(id: &Value) -> String {
    id.to_string()
}

type Sink = Box<dyn Fn(&str) + Send + Sync>;

struct Shared {
    sink: Sink,
    /// Set by `hang`: nothing is written any more.
    silenced: AtomicBool,
    /// Requests received so far (shown by demo://counter).
    served: AtomicU64,
    /// Counter for ids of server→client requests.
    next_outgoing: AtomicU64,
    /// Deferred tool threads still running.
    active_tools: AtomicUsize,
    /// Client request id key → deferred tool call (for cancellation).
    inflight: Mutex<HashMap<String, mpsc::Sender<Event>>>,
    /// Our server→client request id key → tool thread waiting for the reply.
    awaiting: Mutex<HashMap<String, mpsc::Sender<Event>>>,
}

impl Shared {
    fn send_line(&self, line: &str) {
        if !self.silenced.load(Ordering::Relaxed) {
            (self.sink)(line);
        }
    }

    fn send(&self, msg: &Value) {
        if !self.silenced.load(Ordering::Relaxed) {
            (self.sink)(&msg.to_string());
        }
    }

    fn notify(&self, method: &str, params: Option<Value>) {
        let msg = match params {
            Some(params) => json!({"jsonrpc": "2.0", "method": method, "params": params}),
            None => json!({"jsonrpc": "2.0", "method": method}),
        };
        self.send(&msg);
    }

    /// Unregisters a deferred call; false if it was cancelled meanwhile (then
    /// no response must be sent).
    fn finish(&self, key: &str) -> bool {
        lock(&self.inflight).remove(key).is_some()
    }
}

/// Decrements the running-tool count when a tool thread ends.
struct ActiveGuard(Arc<Shared>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active_tools.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Copy)]
enum ClientRequest {
    Sample,
    Elicit,
}

/// The demo server's protocol state; drive it with [`State::handle_line`].
struct State {
    shared: Arc<Shared>,
}

impl State {
    fn new(sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        State {
            shared: Arc::new(Shared {
                sink: Box::new(sink),
                silenced: AtomicBool::new(false),
                served: AtomicU64::new(0),
                next_outgoing: AtomicU64::new(0),
                active_tools: AtomicUsize::new(0),
                inflight: Mutex::new(HashMap::new()),
                awaiting: Mutex::new(HashMap::new()),
            }),
        }
    }

    #[cfg(test)]
    fn handle_line(&self, line: &str) -> Action {
        self.handle_bytes(line.as_bytes())
    }

    /// Handles one input line (with or without its `\n` / `\r\n`).
    fn handle_bytes(&self, raw: &[u8]) -> Action {
        let line = raw.trim_ascii();
        if line.is_empty() {
            return Action::Continue;
        }
        match serde_json::from_slice::<Value>(line) {
            Err(e) => {
                self.shared.send(&error_response(
                    Value::Null,
                    RpcError::new(PARSE_ERROR, format!("Parse error: {e}")),
                ));
                Action::Continue
            }
            Ok(Value::Array(items)) => self.handle_batch(items),
            Ok(msg) => {
                let (reply, action) = self.handle_message(msg);
                if let Some(reply) = reply {
                    self.shared.send(&reply);
                }
                action
            }
        }
    }

    fn handle_batch(&self, items: Vec<Value>) -> Action {
        if items.is_empty() {
            self.shared.send(&error_response(
                Value::Null,
                RpcError::invalid_request("Invalid Request: empty batch"),
            ));
            return Action::Continue;
        }
        let mut replies = Vec::new();
        for item in items {
            let (reply, action) = self.handle_message(item);
            if let Some(reply) = reply {
                replies.push(reply);
            }
            if action != Action::Continue {
                return action;
            }
        }
        if !replies.is_empty() {
            self.shared.send(&Value::Array(replies));
        }
        Action::Continue
    }

    /// Handles one parsed message; returns the reply to send, if any.
    fn handle_message(&self, msg: Value) -> (Option<Value>, Action) {
        let Value::Object(mut obj) = msg else {
            let err = RpcError::invalid_request("Invalid Request: expected a JSON-RPC object");
            return (Some(error_response(Value::Null, err)), Action::Continue);
        };
        let id = obj.remove("id");
        let params = obj.remove("params");
        match obj.remove("method") {
            Some(Value::String(method)) => match id {
                None => {
                    self.handle_notification(&method, params.as_ref());
                    (None, Action::Continue)
                }
                Some(id) if is_valid_id(&id) => {
                    self.shared.served.fetch_add(1, Ordering::Relaxed);
                    match self.handle_request(&id, &method, params.as_ref()) {
                        Ok(Done::Result(result)) => (Some(response(id, result)), Action::Continue),
                        Ok(Done::Deferred) => (None, Action::Continue),
                        Ok(Done::Exit(code)) => (None, Action::Exit(code)),
                        Ok(Done::Hang) => (None, Action::Hang),
                        Err(err) => (Some(error_response(id, err)), Action::Continue),
                    }
                }
                Some(_) => {
                    let err =
                        RpcError::invalid_request("Invalid Request: id must be a string or number");
                    (Some(error_response(Value::Null, err)), Action::Continue)
                }
            },
            Some(_) => {
                let id = id.filter(is_valid_id).unwrap_or(Value::Null);
                let err = RpcError::invalid_request("Invalid Request: method must be a string");
                (Some(error_response(id, err)), Action::Continue)
            }
            None if obj.contains_key("result") || obj.contains_key("error") => {
                // A client's response to one of our server→client requests.
                match id {
                    Some(id) if is_valid_id(&id) => {
                        let key = id_key(&id);
                        obj.insert("id".into(), id);
                        let waiter = lock(&self.shared.awaiting).remove(&key);
                        match waiter {
                            Some(tx) => {
                                let _ = tx.send(Event::Reply(Value::Object(obj)));
                            }
                            None => log::debug!("demo server: response for unknown id {key}"),
                        }
                    }
                    _ => log::debug!("demo server: dropping response without usable id"),
                }
                (None, Action::Continue)
            }
            None => {
                let id = id.filter(is_valid_id).unwrap_or(Value::Null);
                let err = RpcError::invalid_request("Invalid Request: missing method");
                (Some(error_response(id, err)), Action::Continue)
            }
        }
    }

    fn handle_notification(&self, method: &str, params: Option<&Value>) {
        if method != "notifications/cancelled" {
            return;
        }
        if let Some(request_id) = params.and_then(|p| p.get("requestId")) {
            let call = lock(&self.shared.inflight).remove(&id_key(request_id));
            if let Some(tx) = call {
                let _ = tx.send(Event::Cancel);
            }
        }
    }

    fn handle_request(
        &self,
        id: &Value,
        method: &str,
        params: Option<&Value>,
    ) -> Result<Done, RpcError> {
        if !KNOWN_METHODS.contains(&method) {
            return Err(RpcError::new(
                METHOD_NOT_FOUND,
                format!("Method not found: {method}"),
            ));
        }
        let empty = Map::new();
        let params = match params {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(map)) => map,
            Some(_) => return Err(RpcError::invalid_params("params must be an object")),
        };
        let result = match method {
            "initialize" => {
                let requested = params.get("protocolVersion").and_then(Value::as_str);
                let version = requested
                    .filter(|v| SUPPORTED_VERSIONS.contains(v))
                    .unwrap_or(LATEST_VERSION);
                json!({
                    "protocolVersion": version,
                    "capabilities": capabilities(),
                    "serverInfo": server_info(),
                })
            }
            "server/discover" => json!({
                "supportedVersions": DISCOVER_VERSIONS,
                "capabilities": capabilities(),
                "serverInfo": server_info(),
            }),
            "logging/setLevel" => {
                match params.get("level").and_then(Value::as_str) {
                    Some(level) if LOG_LEVELS.contains(&level) => {}
                    _ => {
                        return Err(RpcError::invalid_params(format!(
                            "level must be one of {}",
                            LOG_LEVELS.join(", ")
                        )))
                    }
                }
                json!({})
            }
            "resources/subscribe" | "resources/unsubscribe" => {
                required_str(params, "uri")?;
                json!({})
            }
            "tools/list" => tool_list().clone(),
            "tools/call" => return self.call_tool(id, params),
            "prompts/list" => json!({"prompts": [{
                "name": "greet",
                "title": "Greeting",
                "description": "Asks the model to say hello to someone.",
                "arguments": [{"name": "name", "description": "Who to greet", "required": true}],
            }]}),
            "prompts/get" => get_prompt(params)?,
            "resources/list" => json!({"resources": [
                {
                    "uri": "demo://readme",
                    "name": "readme",
                    "title": "Demo server readme",
                    "description": "A short text about this demo server.",
                    "mimeType": "text/plain",
                },
                {
                    "uri": "demo://counter",
                    "name": "counter",
                    "title": "Request counter",
                    "description": "Number of requests this server has received so far.",
                    "mimeType": "text/plain",
                },
            ]}),
            "resources/read" => self.read_resource(params)?,
            "resources/templates/list" => json!({"resourceTemplates": []}),
            "ping" => json!({}),
            _ => {
                return Err(RpcError::new(
                    METHOD_NOT_FOUND,
                    format!("Method not found: {method}"),
                ))
            }
        };
        Ok(Done::Result(result))
    }

    fn read_resource(&self, params: &Map<String, Value>) -> Result<Value, RpcError> {
        let uri = required_str(params, "uri")?;
        let text = match uri {
            "demo://readme" => README_TEXT.to_string(),
            "demo://counter" => self.shared.served.load(Ordering::Relaxed).to_string(),
            _ => {
                let mut err = RpcError::new(RESOURCE_NOT_FOUND, "Resource not found");
                err.data = Some(json!({"uri": uri}));
                return Err(err);
            }
        };
        Ok(json!({"contents": [{"uri": uri, "mimeType": "text/plain", "text": text}]}))
    }

    fn call_tool(&self, id: &Value, params: &Map<String, Value>) -> Result<Done, RpcError> {
        let name = required_str(params, "name")?;
        let empty = Map::new();
        let args = match params.get("arguments") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(map)) => map,
            Some(_) => return Err(RpcError::invalid_params("arguments must be an object")),
        };
        let progress_token = params
            .get("_meta")
            .and_then(|meta| meta.get("progressToken"))
            .filter(|token| !token.is_null())
            .cloned();
        let result = match name {
            "echo" => text_result(required_str(args, "message")?),
            "add" => add(args)?,
            "slow" => return self.start_slow(id, args, progress_token),
            "bytes" => {
                let n = int_arg(args, "n", None, 0, i64::MAX)?;
                if n > MAX_BYTES {
                    tool_error(format!("n = {n} is above the limit of {MAX_BYTES} bytes"))
                } else {
                    // In range 0..=MAX_BYTES, so it fits usize on any platform
                    // this runs on (at least 32-bit).
                    text_result(pattern_string(n as usize))
                }
            }
            "flood" => self.flood(args)?,
            "log" => {
                let level = match args.get("level") {
                    None | Some(Value::Null) => "info",
                    Some(Value::String(level)) if LOG_LEVELS.contains(&level.as_str()) => level,
                    Some(_) => {
                        return Err(RpcError::invalid_params(format!(
                            "level must be one of {}",
                            LOG_LEVELS.join(", ")
                        )))
                    }
                };
                let message = required_str(args, "message")?;
                self.shared.notify(
                    "notifications/message",
                    Some(json!({"level": level, "logger": "demo", "data": message})),
                );
                text_result("logged")
            }
            "sample" => return self.start_client_request(id, ClientRequest::Sample, args),
            "elicit" => return self.start_client_request(id, ClientRequest::Elicit, args),
            "crash" => {
                let code = int_arg(args, "code", Some(1), i32::MIN.into(), i32::MAX.into())?;
                let code = i32::try_from(code)
                    .map_err(|_| RpcError::invalid_params("code must fit in 32 bits"))?;
                return Ok(Done::Exit(code));
            }
            "hang" => {
                self.shared.silenced.store(true, Ordering::SeqCst);
                return Ok(Done::Hang);
            }
            "exit" => return Ok(Done::Exit(0)),
            "garbage" => {
                self.shared.send_line("this is not json");
                text_result("wrote a non-JSON line to stdout")
            }
            "stderr" => {
                err_line(required_str(args, "message")?);
                text_result("written to stderr")
            }
            "notify_list_changed" => {
                self.shared.notify("notifications/tools/list_changed", None);
                text_result("sent notifications/tools/list_changed")
            }
            other => return Err(RpcError::invalid_params(format!("Unknown tool: {other}"))),
        };
        Ok(Done::Result(result))
    }

    fn flood(&self, args: &Map<String, Value>) -> Result<Value, RpcError> {
        let count = int_arg(args, "count", None, 0, i64::MAX)?;
        let size = int_arg(args, "size", None, 0, i64::MAX)?;
        if count > MAX_FLOOD_COUNT || size > MAX_FLOOD_SIZE || count * size > MAX_FLOOD_TOTAL {
            return Ok(tool_error(format!(
                "flood too large: at most {MAX_FLOOD_COUNT} messages, {MAX_FLOOD_SIZE} bytes \
                 each, {MAX_FLOOD_TOTAL} bytes in total"
            )));
        }
        // size <= MAX_FLOOD_SIZE, so it fits usize.
        let data = pattern_string(size as usize);
        let line = json!({
            "jsonrpc": "2.0",
            "method": "notifications/message",
            "params": {"level": "info", "logger": "demo", "data": data},
        })
        .to_string();
        for _ in 0..count {
            self.shared.send_line(&line);
        }
        Ok(text_result(format!(
            "sent {count} notifications of {size} bytes"
        )))
    }

    /// Registers a deferred call under its request id so it can be cancelled.
    fn register(
        &self,
        id: &Value,
    ) -> Result<(String, mpsc::Sender<Event>, mpsc::Receiver<Event>), RpcError> {
        let key = id_key(id);
        let mut inflight = lock(&self.shared.inflight);
        if inflight.contains_key(&key) {
            return Err(RpcError::invalid_request(format!(
                "Invalid Request: request id {key} is already in flight"
            )));
        }
        let (tx, rx) = mpsc::channel();
        inflight.insert(key.clone(), tx.clone());
        Ok((key, tx, rx))
    }

    /// Runs a deferred tool body on its own thread.
    fn spawn(
        &self,
        name: &str,
        key: &str,
        body: impl FnOnce(&Shared) + Send + 'static,
    ) -> Result<Done, RpcError> {
        self.shared.active_tools.fetch_add(1, Ordering::SeqCst);
        let guard = ActiveGuard(Arc::clone(&self.shared));
        let spawned = thread::Builder::new()
            .name(format!("demo-{name}"))
            .spawn(move || {
                body(&guard.0);
                drop(guard);
            });
        match spawned {
            Ok(_) => Ok(Done::Deferred),
            Err(e) => {
                // The closure (and its guard) were dropped by the failed spawn.
                self.shared.finish(key);
                Err(RpcError::new(
                    INTERNAL_ERROR,
                    format!("cannot start tool thread: {e}"),
                ))
            }
        }
    }

    fn start_slow(
        &self,
        id: &Value,
        args: &Map<String, Value>,
        progress_token: Option<Value>,
    ) -> Result<Done, RpcError> {
        let steps = int_arg(args, "steps", Some(5), 0, MAX_SLOW_STEPS)?;
        let interval_ms = int_arg(args, "interval_ms", Some(100), 0, MAX_SLOW_INTERVAL_MS)?;
        // Both were checked to be non-negative.
        let interval = Duration::from_millis(interval_ms.unsigned_abs());
        let (key, _tx, rx) = self.register(id)?;
        let id = id.clone();
        let thread_key = key.clone();
        self.spawn("slow", &key, move |shared| {
            for step in 1..=steps {
                match rx.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {}
                    // Cancelled (the canceller already unregistered the call).
                    Ok(_) | Err(RecvTimeoutError::Disconnected) => return,
                }
                if let Some(token) = &progress_token {
                    shared.notify(
                        "notifications/progress",
                        Some(json!({
                            "progressToken": token,
                            "progress": step,
                            "total": steps,
                            "message": format!("step {step} of {steps}"),
                        })),
                    );
                }
            }
            if shared.finish(&thread_key) {
                let result = text_result(format!("done after {steps} steps"));
                shared.send(&response(id, result));
            }
        })
    }

    fn start_client_request(
        &self,
        id: &Value,
        kind: ClientRequest,
        args: &Map<String, Value>,
    ) -> Result<Done, RpcError> {
        let (method, params, prefix) = match kind {
            ClientRequest::Sample => {
                let prompt = required_str(args, "prompt")?;
                let params = json!({
                    "messages": [{"role": "user", "content": {"type": "text", "text": prompt}}],
                    "maxTokens": 100,
                });
                ("sampling/createMessage", params, "demo-s")
            }
            ClientRequest::Elicit => {
                let message = required_str(args, "message")?;
                let params = json!({
                    "message": message,
                    "requestedSchema": {
                        "type": "object",
                        "properties": {"answer": {"type": "string"}},
                    },
                });
                ("elicitation/create", params, "demo-e")
            }
        };
        let (key, tx, rx) = self.register(id)?;
        let n = self.shared.next_outgoing.fetch_add(1, Ordering::Relaxed) + 1;
        let out_id = Value::String(format!("{prefix}-{n}"));
        let out_key = id_key(&out_id);
        lock(&self.shared.awaiting).insert(out_key.clone(), tx);
        let cleanup_key = out_key.clone();
        let id = id.clone();
        let thread_key = key.clone();
        let spawned = self.spawn(prefix, &key, move |shared| {
            let request =
                json!({"jsonrpc": "2.0", "id": out_id, "method": method, "params": params});
            shared.send(&request);
            let reply = match rx.recv() {
                Ok(Event::Reply(reply)) => reply,
                Ok(Event::Cancel) | Err(_) => {
                    lock(&shared.awaiting).remove(&out_key);
                    shared.notify(
                        "notifications/cancelled",
                        Some(json!({"requestId": out_id, "reason": "tool call was cancelled"})),
                    );
                    return;
                }
            };
            let result = match kind {
                ClientRequest::Sample => sample_result(&reply),
                ClientRequest::Elicit => elicit_result(&reply),
            };
            if shared.finish(&thread_key) {
                shared.send(&response(id, result));
            }
        });
        if spawned.is_err() {
            lock(&self.shared.awaiting).remove(&cleanup_key);
        }
        spawned
    }
}

fn capabilities() -> Value {
    json!({
        "tools": {"listChanged": true},
        "prompts": {"listChanged": false},
        "resources": {"subscribe": true, "listChanged": false},
        "logging": {},
    })
}

fn server_info() -> Value {
    json!({"name": SERVER_NAME, "version": env!("CARGO_PKG_VERSION")})
}

fn tool(name: &str, description: &str, properties: Value, required: &[&str]) -> Value {
    let mut schema = json!({"type": "object", "properties": properties});
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    json!({"name": name, "description": description, "inputSchema": schema})
}

/// The `tools/list` result, built once.
fn tool_list() -> &'static Value {
    static TOOLS: OnceLock<Value> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let none = json!({});
        let tools = vec![
            tool(
                "echo",
                "Returns the given message unchanged.",
                json!({"message": {"type": "string", "description": "Text to echo back"}}),
                &["message"],
            ),
            tool(
                "add",
                "Adds two numbers and returns the sum as text.",
                json!({"a": {"type": "number"}, "b": {"type": "number"}}),
                &["a", "b"],
            ),
            tool(
                "slow",
                "Works for steps x interval_ms on its own thread, reporting progress when the \
                 request carries _meta.progressToken; cancellable with notifications/cancelled.",
                json!({
                    "steps": {"type": "integer", "minimum": 0, "maximum": MAX_SLOW_STEPS,
                              "default": 5},
                    "interval_ms": {"type": "integer", "minimum": 0,
                                    "maximum": MAX_SLOW_INTERVAL_MS, "default": 100},
                }),
                &[],
            ),
            tool(
                "bytes",
                "Returns one text content of exactly n bytes (at most 256 MiB).",
                json!({"n": {"type": "integer", "minimum": 0}}),
                &["n"],
            ),
            tool(
                "flood",
                "Sends count notifications/message (level info, data of size bytes) before \
                 answering; for testing clients that read slowly.",
                json!({
                    "count": {"type": "integer", "minimum": 0},
                    "size": {"type": "integer", "minimum": 0},
                }),
                &["count", "size"],
            ),
            tool(
                "log",
                "Sends a notifications/message log entry, then answers \"logged\".",
                json!({
                    "level": {"type": "string", "enum": LOG_LEVELS, "default": "info"},
                    "message": {"type": "string"},
                }),
                &["message"],
            ),
            tool(
                "sample",
                "Asks the client to sample an LLM (sampling/createMessage) with the prompt and \
                 returns the sampled text.",
                json!({"prompt": {"type": "string"}}),
                &["prompt"],
            ),
            tool(
                "elicit",
                "Asks the user for an answer through the client (elicitation/create) and returns \
                 the action and content.",
                json!({"message": {"type": "string"}}),
                &["message"],
            ),
            tool(
                "notify_list_changed",
                "Sends notifications/tools/list_changed, then answers.",
                none.clone(),
                &[],
            ),
            tool(
                "crash",
                "Fault injection for the relay's own tests: the server process exits at once \
                 with the given code, without answering.",
                json!({"code": {"type": "integer", "default": 1}}),
                &[],
            ),
            tool(
                "hang",
                "Fault injection for the relay's own tests: the server stops reading stdin and \
                 never answers anything again.",
                none.clone(),
                &[],
            ),
            tool(
                "exit",
                "Fault injection for the relay's own tests: the server exits cleanly with status \
                 0, without answering.",
                none.clone(),
                &[],
            ),
            tool(
                "garbage",
                "Fault injection for the relay's own tests: writes the non-JSON line \
                 \"this is not json\" to stdout, then answers normally.",
                none,
                &[],
            ),
            tool(
                "stderr",
                "Fault injection for the relay's own tests: writes the message to the server's \
                 stderr, then answers.",
                json!({"message": {"type": "string"}}),
                &["message"],
            ),
        ];
        json!({"tools": tools})
    })
}

fn get_prompt(params: &Map<String, Value>) -> Result<Value, RpcError> {
    let name = required_str(params, "name")?;
    if name != "greet" {
        return Err(RpcError::invalid_params(format!("Unknown prompt: {name}")));
    }
    let who = match params.get("arguments") {
        Some(Value::Object(args)) => args.get("name").and_then(Value::as_str),
        _ => None,
    }
    .ok_or_else(|| {
        RpcError::invalid_params("prompt 'greet' requires the string argument 'name'")
    })?;
    Ok(json!({
        "description": "Asks the model to say hello to someone.",
        "messages": [{
            "role": "user",
            "content": {"type": "text", "text": format!("Say hello to {who}.")},
        }],
    }))
}

fn required_str<'a>(map: &'a Map<String, Value>, name: &str) -> Result<&'a str, RpcError> {
    map.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params(format!("'{name}' must be a string")))
}

fn number_arg<'a>(args: &'a Map<String, Value>, name: &str) -> Result<&'a Number, RpcError> {
    match args.get(name) {
        Some(Value::Number(n)) => Ok(n),
        _ => Err(RpcError::invalid_params(format!(
            "argument '{name}' must be a number"
        ))),
    }
}

/// Integer argument in `min..=max`; `default` is used when it is absent.
fn int_arg(
    args: &Map<String, Value>,
    name: &str,
    default: Option<i64>,
    min: i64,
    max: i64,
) -> Result<i64, RpcError> {
    let bad = || {
        RpcError::invalid_params(format!(
            "argument '{name}' must be an integer in {min}..={max}"
        ))
    };
    let value = match args.get(name) {
        None | Some(Value::Null) => return default.ok_or_else(bad),
        Some(value) => value,
    };
    let n = value
        .as_i64()
        .or_else(|| {
            // Accept integral floats such as 5.0 (sent by some clients).
            value
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        })
        .ok_or_else(bad)?;
    if n < min || n > max {
        return Err(bad());
    }
    Ok(n)
}

fn add(args: &Map<String, Value>) -> Result<Value, RpcError> {
    let a = number_arg(args, "a")?;
    let b = number_arg(args, "b")?;
    let int_sum = match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x.checked_add(y),
        _ => None,
    };
    let text = match int_sum {
        Some(sum) => sum.to_string(),
        None => {
            let sum = a.as_f64().unwrap_or(f64::NAN) + b.as_f64().unwrap_or(f64::NAN);
            if !sum.is_finite() {
                return Ok(tool_error("the sum is not a finite number"));
            }
            Value::from(sum).to_string()
        }
    };
    Ok(text_result(text))
}

/// Exactly `n` bytes of the repeating alphanumeric pattern.
fn pattern_string(n: usize) -> String {
    let mut s = PATTERN.repeat(n / PATTERN.len() + 1);
    s.truncate(n);
    s
}

/// A tool error if the client answered our request with a JSON-RPC error.
fn client_error(what: &str, reply: &Value) -> Option<Value> {
    let err = reply.get("error")?;
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("no message");
    let code = err
        .get("code")
        .map_or_else(|| "none".to_string(), Value::to_string);
    Some(tool_error(format!(
        "{what} request failed: {message} (code {code})"
    )))
}

fn text_of(content: &Value) -> Option<&str> {
    if content.get("type").and_then(Value::as_str) == Some("text") {
        content.get("text").and_then(Value::as_str)
    } else {
        None
    }
}

fn sample_result(reply: &Value) -> Value {
    if let Some(err) = client_error("sampling/createMessage", reply) {
        return err;
    }
    let Some(content) = reply.get("result").and_then(|r| r.get("content")) else {
        return tool_error("sampling/createMessage result has no content");
    };
    let texts: Vec<&str> = match content {
        Value::Array(blocks) => blocks.iter().filter_map(text_of).collect(),
        block => text_of(block).into_iter().collect(),
    };
    if texts.is_empty() {
        // Not text (an image, say): show what came back.
        text_result(content.to_string())
    } else {
        text_result(texts.join("\n"))
    }
}

fn elicit_result(reply: &Value) -> Value {
    if let Some(err) = client_error("elicitation/create", reply) {
        return err;
    }
    let result = reply.get("result");
    let Some(action) = result.and_then(|r| r.get("action")).and_then(Value::as_str) else {
        return tool_error("elicitation/create result has no action");
    };
    match result.and_then(|r| r.get("content")) {
        Some(content) if !content.is_null() => text_result(format!("{action}: {content}")),
        _ => text_result(action),
    }
}

// Tests drive `State` directly with an in-memory sink; a failed `expect` here
// is simply a failed test.
#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Upper bound for anything a test waits for.
    const WAIT: Duration = Duration::from_secs(10);

    struct Harness {
        state: State,
        rx: mpsc::Receiver<String>,
    }

    impl Harness {
        fn new() -> Self {
            let (tx, rx) = mpsc::channel::<String>();
            let state = State::new(move |line: &str| {
                let _ = tx.send(line.to_owned());
            });
            Harness { state, rx }
        }

        fn send(&self, line: &str) -> Action {
            self.state.handle_line(line)
        }

        fn send_json(&self, msg: &Value) -> Action {
            self.send(&msg.to_string())
        }

        fn next_raw(&self) -> String {
            self.rx
                .recv_timeout(WAIT)
                .expect("an output line within the time bound")
        }

        fn next(&self) -> Value {
            let line = self.next_raw();
            assert!(!line.contains('\n'), "one message per line: {line}");
            serde_json::from_str(&line).expect("output line is JSON")
        }

        /// Next message that is not a progress notification.
        fn next_reply(&self) -> Value {
            loop {
                let msg = self.next();
                if msg["method"] != "notifications/progress" {
                    return msg;
                }
            }
        }

        fn request(&self, msg: Value) -> Value {
            assert_eq!(self.send_json(&msg), Action::Continue);
            self.next()
        }

        fn call(&self, id: i64, name: &str, args: Value) -> Value {
            self.request(json!({
                "jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": name, "arguments": args},
            }))
        }

        fn assert_quiet(&self) {
            if let Ok(line) = self.rx.try_recv() {
                panic!("unexpected output: {line}");
            }
        }

        /// Waits (bounded) until no deferred tool thread is running, so that
        /// everything they sent is already in the channel.
        fn wait_idle(&self) {
            let deadline = Instant::now() + WAIT;
            while self.state.shared.active_tools.load(Ordering::SeqCst) != 0 {
                assert!(Instant::now() < deadline, "tool thread did not stop");
                thread::sleep(Duration::from_millis(1));
            }
        }
    }

    fn text(resp: &Value) -> &str {
        resp["result"]["content"][0]["text"]
            .as_str()
            .expect("a text content")
    }

    #[test]
    fn initialize_negotiates_version() {
        let h = Harness::new();
        let resp = h.request(json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-03-26", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "0"}},
        }));
        assert_eq!(resp["jsonrpc"], "2.0");
        assert_eq!(resp["id"], 1);
        let result = &resp["result"];
        assert_eq!(result["protocolVersion"], "2025-03-26");
        assert_eq!(result["serverInfo"]["name"], "mcp-relay-demo");
        assert_eq!(result["serverInfo"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(result["capabilities"]["tools"]["listChanged"], true);
        assert_eq!(result["capabilities"]["resources"]["subscribe"], true);
        assert!(result["capabilities"]["logging"].is_object());

        let resp = h.request(json!({
            "jsonrpc": "2.0", "id": "x", "method": "initialize",
            "params": {"protocolVersion": "1999-01-01"},
        }));
        assert_eq!(resp["id"], "x");
        assert_eq!(resp["result"]["protocolVersion"], LATEST_VERSION);

        // Notifications get no answer.
        assert_eq!(
            h.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Action::Continue
        );
        let resp = h.request(json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}));
        assert_eq!(resp, json!({"jsonrpc": "2.0", "id": 2, "result": {}}));
        h.assert_quiet();
    }

    #[test]
    fn discover_lists_versions() {
        let h = Harness::new();
        let resp = h.request(json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover"}));
        let versions = resp["result"]["supportedVersions"]
            .as_array()
            .expect("versions array");
        assert_eq!(versions[0], "2026-07-28");
        assert!(versions.contains(&json!("2025-11-25")));
        assert_eq!(resp["result"]["serverInfo"]["name"], SERVER_NAME);
    }

    #[test]
    fn tools_list_has_schemas() {
        let h = Harness::new();
        let resp = h.request(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
        let tools = resp["result"]["tools"].as_array().expect("tools array");
        let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
        for expected in [
            "echo",
            "add",
            "slow",
            "bytes",
            "flood",
            "log",
            "sample",
            "elicit",
            "notify_list_changed",
            "crash",
            "hang",
            "exit",
            "garbage",
            "stderr",
        ] {
            assert!(names.contains(&expected), "missing tool {expected}");
        }
        for t in tools {
            assert_eq!(t["inputSchema"]["type"], "object", "{t}");
            assert!(t["inputSchema"]["properties"].is_object(), "{t}");
            assert!(t["description"].as_str().is_some_and(|d| !d.is_empty()));
        }
        let echo = tools.iter().find(|t| t["name"] == "echo").expect("echo");
        assert_eq!(echo["inputSchema"]["required"], json!(["message"]));
    }

    #[test]
    fn echo_and_add() {
        let h = Harness::new();
        let resp = h.call(1, "echo", json!({"message": "héllo \"wörld\" ✓"}));
        assert_eq!(text(&resp), "héllo \"wörld\" ✓");
        assert!(resp["result"].get("isError").is_none());

        assert_eq!(text(&h.call(2, "add", json!({"a": 2, "b": 3}))), "5");
        assert_eq!(
            text(&h.call(3, "add", json!({"a": 1.5, "b": 2.25}))),
            "3.75"
        );
        assert_eq!(text(&h.call(4, "add", json!({"a": -7, "b": 2}))), "-5");

        let resp = h.call(5, "add", json!({"a": 1}));
        assert_eq!(resp["error"]["code"], INVALID_PARAMS);
        let resp = h.call(6, "echo", json!({"message": 12}));
        assert_eq!(resp["error"]["code"], INVALID_PARAMS);
        let resp = h.call(7, "nope", json!({}));
        assert_eq!(resp["error"]["code"], INVALID_PARAMS);
        assert_eq!(resp["id"], 7);
    }

    #[test]
    fn crlf_and_blank_lines() {
        let h = Harness::new();
        assert_eq!(h.send(""), Action::Continue);
        assert_eq!(h.send("  \r\n"), Action::Continue);
        h.assert_quiet();
        h.send("{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"ping\"}\r\n");
        assert_eq!(h.next()["id"], 9);
    }

    #[test]
    fn batch() {
        let h = Harness::new();
        let batch = json!([
            {"jsonrpc": "2.0", "id": 1, "method": "ping"},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
             "params": {"name": "echo", "arguments": {"message": "hi"}}},
            42,
            {"jsonrpc": "2.0", "id": 3, "method": "bogus"},
        ]);
        let resp = h.request(batch);
        let items = resp.as_array().expect("batch reply is an array");
        assert_eq!(items.len(), 4);
        assert_eq!(items[0]["id"], 1);
        assert_eq!(items[1]["id"], 2);
        assert_eq!(text(&items[1]), "hi");
        assert_eq!(items[2]["id"], Value::Null);
        assert_eq!(items[2]["error"]["code"], INVALID_REQUEST);
        assert_eq!(items[3]["error"]["code"], METHOD_NOT_FOUND);

        // Only notifications: no reply at all.
        h.send(r#"[{"jsonrpc":"2.0","method":"notifications/initialized"}]"#);
        h.assert_quiet();
        // Empty batch: one invalid-request error.
        let resp = h.request(json!([]));
        assert_eq!(resp["error"]["code"], INVALID_REQUEST);
    }

    #[test]
    fn parse_and_request_errors() {
        let h = Harness::new();
        h.send("{not json");
        let resp = h.next();
        assert_eq!(resp["error"]["code"], PARSE_ERROR);
        assert_eq!(resp["id"], Value::Null);

        assert_eq!(h.state.handle_bytes(b"\xff\xfe\n"), Action::Continue);
        assert_eq!(h.next()["error"]["code"], PARSE_ERROR);

        let resp = h.request(json!({"jsonrpc": "2.0", "id": 5}));
        assert_eq!(resp["error"]["code"], INVALID_REQUEST);
        assert_eq!(resp["id"], 5);
        let resp = h.request(json!("just a string"));
        assert_eq!(resp["error"]["code"], INVALID_REQUEST);
        assert_eq!(resp["id"], Value::Null);
        let resp = h.request(json!({"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"}));
        assert_eq!(resp["error"]["code"], INVALID_REQUEST);
        assert_eq!(resp["id"], Value::Null);
        let resp = h.request(json!({"jsonrpc": "2.0", "id": 6, "method": "tools/list",
                                    "params": [1]}));
        assert_eq!(resp["error"]["code"], INVALID_PARAMS);
    }

    #[test]
    fn unknown_method() {
        let h = Harness::new();
        let resp = h.request(json!({"jsonrpc": "2.0", "id": 1, "method": "foo/bar"}));
        assert_eq!(resp["error"]["code"], METHOD_NOT_FOUND);
        assert_eq!(resp["error"]["message"], "Method not found: foo/bar");
        assert_eq!(resp["id"], 1);
        // Unknown notifications are ignored.
        h.send(r#"{"jsonrpc":"2.0","method":"foo/bar"}"#);
        h.assert_quiet();
    }

    #[test]
    fn bytes_length() {
        let h = Harness::new();
        for n in [0usize, 1, 36, 37, 1000, 100_003] {
            let resp = h.call(1, "bytes", json!({"n": n}));
            let t = text(&resp);
            assert_eq!(t.len(), n);
            assert!(PATTERN.repeat(n / PATTERN.len() + 1).starts_with(t));
        }
        let resp = h.call(2, "bytes", json!({"n": MAX_BYTES + 1}));
        assert_eq!(resp["result"]["isError"], true);
        let resp = h.call(3, "bytes", json!({"n": -1}));
        assert_eq!(resp["error"]["code"], INVALID_PARAMS);
    }

    #[test]
    fn slow_reports_progress() {
        let h = Harness::new();
        h.send_json(&json!({
            "jsonrpc": "2.0", "id": 10, "method": "tools/call",
            "params": {"name": "slow", "arguments": {"steps": 3, "interval_ms": 1},
                       "_meta": {"progressToken": "tok"}},
        }));
        for step in 1..=3 {
            let note = h.next();
            assert_eq!(note["method"], "notifications/progress");
            assert_eq!(note["params"]["progressToken"], "tok");
            assert_eq!(note["params"]["progress"], step);
            assert_eq!(note["params"]["total"], 3);
            assert!(note["params"]["message"].is_string());
        }
        let resp = h.next();
        assert_eq!(resp["id"], 10);
        assert_eq!(text(&resp), "done after 3 steps");
        h.wait_idle();
        h.assert_quiet();

        // Without a token: no progress, defaults are accepted.
        let resp = h.call(11, "slow", json!({"steps": 2, "interval_ms": 0}));
        assert_eq!(text(&resp), "done after 2 steps");
        let resp = h.call(12, "slow", json!({"steps": -1}));
        assert_eq!(resp["error"]["code"], INVALID_PARAMS);
    }

    #[test]
    fn slow_cancellation_sends_no_response() {
        let h = Harness::new();
        // 1000 x 20 ms: far beyond the test's time bound if not cancelled.
        h.send_json(&json!({
            "jsonrpc": "2.0", "id": "s1", "method": "tools/call",
            "params": {"name": "slow", "arguments": {"steps": 1000, "interval_ms": 20},
                       "_meta": {"progressToken": 7}},
        }));
        let note = h.next();
        assert_eq!(note["method"], "notifications/progress");
        assert_eq!(note["params"]["progressToken"], 7);

        // Other requests are served meanwhile (progress may interleave).
        h.send(r#"{"jsonrpc":"2.0","id":0,"method":"tools/call","params":{"name":"echo","arguments":{"message":"x"}}}"#);
        assert_eq!(h.next_reply()["id"], 0);
        // A duplicate id while in flight is refused.
        h.send_json(&json!({
            "jsonrpc": "2.0", "id": "s1", "method": "tools/call",
            "params": {"name": "slow", "arguments": {}},
        }));
        let dup = h.next_reply();
        assert_eq!(dup["id"], "s1");
        assert_eq!(dup["error"]["code"], INVALID_REQUEST);

        h.send(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"s1","reason":"test"}}"#);
        // Other requests are still served.
        h.send(r#"{"jsonrpc":"2.0","id":99,"method":"ping"}"#);
        h.wait_idle();
        let mut saw_ping = false;
        while let Ok(line) = h.rx.try_recv() {
            let msg: Value = serde_json::from_str(&line).expect("JSON");
            if msg["id"] == 99 {
                saw_ping = true;
            } else {
                assert_eq!(msg["method"], "notifications/progress", "unexpected {msg}");
            }
        }
        assert!(saw_ping);
        assert!(lock(&h.state.shared.inflight).is_empty());
    }

    #[test]
    fn sample_round_trip() {
        let h = Harness::new();
        h.send_json(&json!({
            "jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "sample", "arguments": {"prompt": "Say hi"}},
        }));
        let req = h.next();
        assert_eq!(req["method"], "sampling/createMessage");
        assert_eq!(req["params"]["maxTokens"], 100);
        assert_eq!(
            req["params"]["messages"],
            json!([{"role": "user", "content": {"type": "text", "text": "Say hi"}}])
        );
        let out_id = req["id"].as_str().expect("string id").to_owned();
        assert!(out_id.starts_with("demo-s-"));

        // Other requests are served while the tool waits.
        assert_eq!(h.call(8, "echo", json!({"message": "m"}))["id"], 8);

        h.send_json(&json!({
            "jsonrpc": "2.0", "id": out_id,
            "result": {"role": "assistant", "model": "test",
                       "content": {"type": "text", "text": "hi there"}},
        }));
        let resp = h.next();
        assert_eq!(resp["id"], 7);
        assert_eq!(text(&resp), "hi there");

        // The client answers with an error: the tool reports isError.
        h.send_json(&json!({
            "jsonrpc": "2.0", "id": 8, "method": "tools/call",
            "params": {"name": "sample", "arguments": {"prompt": "again"}},
        }));
        let req = h.next();
        h.send_json(&json!({
            "jsonrpc": "2.0", "id": req["id"],
            "error": {"code": -1, "message": "User rejected sampling request"},
        }));
        let resp = h.next();
        assert_eq!(resp["id"], 8);
        assert_eq!(resp["result"]["isError"], true);
        assert!(text(&resp).contains("User rejected"));
        h.wait_idle();
        h.assert_quiet();
    }

    #[test]
    fn sample_cancellation_cancels_client_request() {
        let h = Harness::new();
        h.send_json(&json!({
            "jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "sample", "arguments": {"prompt": "p"}},
        }));
        let req = h.next();
        h.send(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}"#);
        let note = h.next();
        assert_eq!(note["method"], "notifications/cancelled");
        assert_eq!(note["params"]["requestId"], req["id"]);
        h.wait_idle();
        // A late reply from the client is dropped silently.
        h.send_json(&json!({"jsonrpc": "2.0", "id": req["id"], "result": {}}));
        h.assert_quiet();
        assert!(lock(&h.state.shared.awaiting).is_empty());
    }

    #[test]
    fn elicit_round_trip() {
        let h = Harness::new();
        h.send_json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "elicit", "arguments": {"message": "Your name?"}},
        }));
        let req = h.next();
        assert_eq!(req["method"], "elicitation/create");
        assert_eq!(req["params"]["message"], "Your name?");
        assert_eq!(req["params"]["requestedSchema"]["type"], "object");
        assert!(req["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("demo-e-")));
        h.send_json(&json!({
            "jsonrpc": "2.0", "id": req["id"],
            "result": {"action": "accept", "content": {"answer": "Ada"}},
        }));
        let resp = h.next();
        assert_eq!(resp["id"], 1);
        assert_eq!(text(&resp), r#"accept: {"answer":"Ada"}"#);
    }

    #[test]
    fn notifications_from_tools() {
        let h = Harness::new();
        h.send_json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "flood", "arguments": {"count": 3, "size": 10}},
        }));
        for _ in 0..3 {
            let note = h.next();
            assert_eq!(note["method"], "notifications/message");
            assert_eq!(note["params"]["level"], "info");
            assert_eq!(note["params"]["data"], "abcdefghij");
        }
        assert_eq!(h.next()["id"], 1);
        let resp = h.call(2, "flood", json!({"count": 2, "size": MAX_FLOOD_SIZE + 1}));
        assert_eq!(resp["result"]["isError"], true);

        h.send_json(&json!({
            "jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "log", "arguments": {"level": "warning", "message": "careful"}},
        }));
        let note = h.next();
        assert_eq!(note["params"]["level"], "warning");
        assert_eq!(note["params"]["data"], "careful");
        assert_eq!(text(&h.next()), "logged");

        h.send_json(&json!({
            "jsonrpc": "2.0", "id": 4, "method": "tools/call",
            "params": {"name": "notify_list_changed"},
        }));
        assert_eq!(h.next()["method"], "notifications/tools/list_changed");
        assert_eq!(h.next()["id"], 4);
    }

    #[test]
    fn fault_injection_tools() {
        let h = Harness::new();
        h.send_json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "garbage", "arguments": {}},
        }));
        assert_eq!(h.next_raw(), "this is not json");
        assert_eq!(h.next()["id"], 1);

        let crash = json!({
            "jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "crash", "arguments": {"code": 3}},
        });
        assert_eq!(h.send_json(&crash), Action::Exit(3));
        let exit = json!({
            "jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "exit"},
        });
        assert_eq!(h.send_json(&exit), Action::Exit(0));
        h.assert_quiet();

        let hang = json!({
            "jsonrpc": "2.0", "id": 4, "method": "tools/call",
            "params": {"name": "hang", "arguments": {}},
        });
        assert_eq!(h.send_json(&hang), Action::Hang);
        // Nothing is ever answered again.
        h.send(r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#);
        h.assert_quiet();
    }

    #[test]
    fn prompts_and_resources() {
        let h = Harness::new();
        let resp = h.request(json!({"jsonrpc": "2.0", "id": 1, "method": "prompts/list"}));
        assert_eq!(resp["result"]["prompts"][0]["name"], "greet");
        let resp = h.request(json!({
            "jsonrpc": "2.0", "id": 2, "method": "prompts/get",
            "params": {"name": "greet", "arguments": {"name": "Ada"}},
        }));
        assert_eq!(
            resp["result"]["messages"],
            json!([{"role": "user", "content": {"type": "text", "text": "Say hello to Ada."}}])
        );
        let resp = h.request(json!({
            "jsonrpc": "2.0", "id": 3, "method": "prompts/get", "params": {"name": "greet"},
        }));
        assert_eq!(resp["error"]["code"], INVALID_PARAMS);

        let resp = h.request(json!({"jsonrpc": "2.0", "id": 4, "method": "resources/list"}));
        assert_eq!(
            resp["result"]["resources"].as_array().map(Vec::len),
            Some(2)
        );
        let resp = h.request(json!({
            "jsonrpc": "2.0", "id": 5, "method": "resources/read",
            "params": {"uri": "demo://readme"},
        }));
        assert_eq!(resp["result"]["contents"][0]["mimeType"], "text/plain");
        assert!(resp["result"]["contents"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("demo")));
        let resp = h.request(json!({
            "jsonrpc": "2.0", "id": 6, "method": "resources/read",
            "params": {"uri": "demo://counter"},
        }));
        assert_eq!(resp["result"]["contents"][0]["text"], "6");
        let resp = h.request(json!({
            "jsonrpc": "2.0", "id": 7, "method": "resources/read",
            "params": {"uri": "demo://nope"},
        }));
        assert_eq!(resp["error"]["code"], RESOURCE_NOT_FOUND);
        assert_eq!(resp["error"]["message"], "Resource not found");
        let resp = h.request(json!({
            "jsonrpc": "2.0", "id": 8, "method": "resources/templates/list",
        }));
        assert_eq!(resp["result"]["resourceTemplates"], json!([]));
        let resp = h.request(json!({
            "jsonrpc": "2.0", "id": 9, "method": "resources/subscribe",
            "params": {"uri": "demo://counter"},
        }));
        assert_eq!(resp["result"], json!({}));
        let resp = h.request(json!({
            "jsonrpc": "2.0", "id": 10, "method": "logging/setLevel",
            "params": {"level": "debug"},
        }));
        assert_eq!(resp["result"], json!({}));
        let resp = h.request(json!({
            "jsonrpc": "2.0", "id": 11, "method": "logging/setLevel",
            "params": {"level": "loud"},
        }));
        assert_eq!(resp["error"]["code"], INVALID_PARAMS);
    }
}
