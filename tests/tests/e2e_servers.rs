//! End to end: many servers behind one relay (`mcp-relay --config servers.json`, issue 13),
//! with real peers on both sides.
//!
//! - Three servers behind one relay: the demo server (`mcp-relay demo-server`),
//!   @modelcontextprotocol/server-everything and @modelcontextprotocol/server-memory (stdio,
//!   from tests/node). The official MCP Python SDK (tests/python/servers_sdk_client.py, mcp
//!   2.x) opens a session on every route at once: `/servers/NAME/mcp` for each, `/mcp` for the
//!   default server, and the legacy HTTP+SSE transport at `/servers/NAME/sse`; each session
//!   must see its own server's serverInfo, tools and answers. The MCP Inspector CLI lists the
//!   tools of each route, three runs at once. A session id of one server is unknown to the
//!   others.
//! - The 2026-07-28 era on every route: the Python SDK 2.x pinned to it (no initialize, no
//!   session) on each `/servers/NAME/mcp` and `/mcp` at once, each answered by its own
//!   server; the TypeScript SDK 2.x's whole suite (tests/node/v2_client.mjs) on a route that
//!   is not the default.
//! - A removed server's session is drained after `retire_timeout`, and the server goes.
//! - No cross-talk under load: 10 sessions per server at once, each making 3 calls whose
//!   arguments name the session and the call; every answer must be the one asked for, from
//!   the server asked.
//! - `GET /servers` lists the servers and their session counts, behind the relay's token
//!   (and not behind a server's own token).
//! - A server's own tokens open that server only; the relay's open every server.
//! - A server's own `tcp://` listener serves that server, not the default one.
//! - Remote entries (`"type": "http"` and `"sse"`) reach another relay through client mode.
//! - The file itself: its errors (PATH:LINE:COLUMN, exit status 2), `${VAR}` and
//!   `${VAR:-default}` in a command, its arguments and its environment, and the file's
//!   `"relay": {"listen": …}` with a command-line `--listen` that wins over it.
//!
//! Needs the Python SDK 2.x virtual environment (tests/python/.venv-mcp2, made by .ci/run, or
//! $MCP_RELAY_PYTHON_V2) and `npm ci --prefix tests/node` (node, server-everything,
//! server-memory, the Inspector).
//!
//! The tests that need them are `#[ignore]`d, so that the test summary counts them (as
//! ignored) when they do not run; `cargo test -- --include-ignored` runs them (as .ci/run
//! does), and then a missing one fails the test, naming what to install.

mod http_support;

use http_support::{
    environ, everything_missing, everything_server, initialize_request, node22, node_missing,
    node_modules, python_of, python_sdk_missing_of, relay_bin, run_bounded, skip, tests_dir,
    tool_call, HttpRelay, Ran, Response, TempDir, DEADLINE, MCP_POST,
};
use serde_json::{json, Value};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// The Python client's own bound on its whole run; it is killed a little after it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Time for sessions to end and their children to go once the clients left (the Inspector's
/// sessions end by expiry: `session_timeout` below).
const GONE: Duration = Duration::from_secs(20);
/// The session timeout of the relays that the Inspector visits: it leaves its Streamable
/// HTTP sessions without a DELETE.
const SESSION_TIMEOUT: &str = "5s";

const DEMO: &str = "mcp-relay-demo";
const EVERYTHING: &str = "mcp-servers/everything";
const MEMORY: &str = "memory-server";

// ---------------------------------------------------------------------------------------
// Prerequisites, the servers file, the clients
// ---------------------------------------------------------------------------------------

fn memory_server() -> PathBuf {
    node_modules()
        .join("@modelcontextprotocol")
        .join("server-memory")
        .join("dist")
        .join("index.js")
}

fn inspector() -> PathBuf {
    node_modules()
        .join("@modelcontextprotocol")
        .join("inspector")
        .join("cli")
        .join("build")
        .join("cli.js")
}

/// Why a file of tests/node cannot be used, if it cannot.
fn node_file_missing(file: PathBuf) -> Option<String> {
    node_missing().or_else(|| {
        (!file.is_file())
            .then(|| format!("{} is missing (npm ci --prefix tests/node)", file.display()))
    })
}

fn memory_missing() -> Option<String> {
    node_file_missing(memory_server())
}

fn python_missing() -> Option<String> {
    python_sdk_missing_of(2)
}

/// The first thing missing among `checks`.
fn first_missing(checks: &[fn() -> Option<String>]) -> Option<String> {
    checks.iter().find_map(|check| check())
}

fn demo_entry() -> Value {
    json!({"command": relay_bin(), "args": ["demo-server"]})
}

fn everything_entry() -> Value {
    json!({"command": "node", "args": [everything_server(), "stdio"]})
}

/// server-memory, keeping its graph in the file that `$MCP_RELAY_E2E_MEMORY_FILE` names
/// (expanded by the relay: the file appearing there shows it).
fn memory_entry() -> Value {
    json!({"command": "node", "args": [memory_server()],
           "env": {"MEMORY_FILE_PATH": "${MCP_RELAY_E2E_MEMORY_FILE}"}})
}

/// Writes `config` as `servers.json` in `dir`.
fn write_config(dir: &TempDir, config: &Value) -> PathBuf {
    let path = dir.path().join("servers.json");
    let text = serde_json::to_string_pretty(config).expect("JSON");
    fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// `mcp-relay --listen http://127.0.0.1:0 --config FILE`, server-memory's file in `dir`.
fn start(dir: &TempDir, config: &Value, extra: &[&str]) -> HttpRelay {
    let path = write_config(dir, config);
    HttpRelay::builder()
        .arg("--config")
        .arg(&path)
        .args(extra)
        .env("MCP_RELAY_E2E_MEMORY_FILE", dir.path().join("memory.jsonl"))
        .start()
}

/// Runs tests/python/servers_sdk_client.py with `plan` (see its doc); the line of each
/// session. Fails the test if any session failed.
fn run_plan(test: &str, relay: &HttpRelay, plan: &Value) -> Vec<Value> {
    let mut cmd = Command::new(python_of(2));
    cmd.arg(tests_dir().join("python").join("servers_sdk_client.py"))
        .args(["--plan", &plan.to_string()])
        .args(["--timeout", &CLIENT_TIMEOUT.as_secs().to_string()]);
    let ran = run_bounded(&mut cmd, CLIENT_TIMEOUT + Duration::from_secs(15))
        .unwrap_or_else(|| panic!("{test}: cannot start the Python client"));
    let lines: Vec<Value> = ran
        .stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{test}: {e}: {l}")))
        .collect();
    assert!(
        ran.ok() && lines.iter().all(|l| l.get("error").is_none()),
        "{test}: the Python SDK client failed ({}).\nstdout:\n{}\nstderr:\n{}\nrelay log:\n{}",
        ran.status,
        ran.stdout,
        ran.stderr,
        relay.log_text()
    );
    eprintln!(
        "{test}: {} Python SDK sessions in {:.1} s",
        lines.len(),
        ran.took.as_secs_f64()
    );
    lines
}

/// What one session of a plan must have seen.
struct Expect<'a> {
    label: &'a str,
    sessions: usize,
    /// serverInfo.name.
    server: &'a str,
    /// Tools it must list, and tools of the other servers it must not.
    has: &'a [&'a str],
    lacks: &'a [&'a str],
    /// The answer to call `call`, repetition `c`, of session `s`: a string is the exact
    /// text; anything else, the JSON that the text must hold.
    answer: &'a dyn Fn(usize, usize, usize) -> Value,
    /// How many answers each session gets.
    answers: usize,
}

/// Checks every session of `want.label` in `lines`.
fn check_sessions(lines: &[Value], want: &Expect<'_>) {
    let mine: Vec<&Value> = lines.iter().filter(|l| l["label"] == want.label).collect();
    assert_eq!(
        mine.len(),
        want.sessions,
        "{}: {} session lines: {mine:#?}",
        want.label,
        mine.len()
    );
    for line in mine {
        let s = line["session"].as_u64().expect("session") as usize;
        assert_eq!(
            line["server"], want.server,
            "{} session {s} was answered by another server: {line}",
            want.label
        );
        let tools: Vec<&str> = line["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for t in want.has {
            assert!(
                tools.contains(t),
                "{} session {s}: no {t} among {tools:?}",
                want.label
            );
        }
        for t in want.lacks {
            assert!(
                !tools.contains(t),
                "{} session {s}: another server's tool {t} among {tools:?}",
                want.label
            );
        }
        let results = line["results"].as_array().expect("results");
        assert_eq!(
            results.len(),
            want.answers,
            "{} session {s}: {results:?}",
            want.label
        );
        for r in results {
            let call = r["call"].as_u64().expect("call") as usize;
            let c = r["repeat"].as_u64().expect("repeat") as usize;
            let text = r["text"].as_str().expect("text");
            let expected = (want.answer)(s, call, c);
            let matches = match &expected {
                Value::String(w) => text == w,
                other => serde_json::from_str::<Value>(text).ok().as_ref() == Some(other),
            };
            assert!(
                matches && r["is_error"] == false,
                "{} session {s} call {call}#{c}: got {text:?} (is_error {}), wanted {expected}",
                want.label,
                r["is_error"]
            );
        }
    }
}

/// A server-memory entity named `name`, as create_entities is asked for and answers it.
fn entity(name: &str) -> Value {
    json!({"name": name, "entityType": "e2e", "observations": [format!("seen by {name}")]})
}

/// One Inspector CLI run of `tools/list` at `url`; the tool names.
fn inspector_tools(url: &str) -> Vec<String> {
    let mut cmd = Command::new("node");
    cmd.arg(inspector()).args([
        "--cli",
        url,
        "--transport",
        "http",
        "--method",
        "tools/list",
    ]);
    let ran: Ran = run_bounded(&mut cmd, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("cannot start the Inspector for {url}"));
    assert!(
        ran.ok(),
        "the Inspector failed at {url} ({}):\nstdout:\n{}\nstderr:\n{}",
        ran.status,
        ran.stdout,
        ran.stderr
    );
    let out: Value = serde_json::from_str(&ran.stdout).unwrap_or_else(|e| {
        panic!(
            "the Inspector's output at {url} is not JSON ({e}): {}",
            ran.stdout
        )
    });
    out["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in the Inspector's output at {url}: {out}"))
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Raw HTTP to any route
// ---------------------------------------------------------------------------------------

fn bearer(token: Option<&str>) -> Option<String> {
    token.map(|t| format!("Bearer {t}"))
}

/// A JSON-RPC POST to `path`, on a connection of its own.
fn post(
    relay: &HttpRelay,
    path: &str,
    session: Option<&str>,
    token: Option<&str>,
    body: &Value,
) -> Response {
    let auth = bearer(token);
    let mut headers: Vec<(&str, &str)> = MCP_POST.to_vec();
    if let Some(s) = session {
        headers.push(("Mcp-Session-Id", s));
    }
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    relay
        .connect()
        .request("POST", path, &headers, body.to_string().as_bytes())
}

/// A request without a body, on a connection of its own.
fn bare(
    relay: &HttpRelay,
    method: &str,
    path: &str,
    session: Option<&str>,
    token: Option<&str>,
) -> Response {
    let auth = bearer(token);
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(s) = session {
        headers.push(("Mcp-Session-Id", s));
    }
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    relay.connect().request(method, path, &headers, b"")
}

/// `initialize` (answered with 200) and `notifications/initialized` at `path`: the session
/// id and the initialize result.
fn open_at(relay: &HttpRelay, path: &str, token: Option<&str>) -> (String, Value) {
    let resp = post(relay, path, None, token, &initialize_request("2025-06-18"));
    assert_eq!(resp.status(), 200, "initialize at {path}: {}", resp.text());
    let init = resp.messages().pop().expect("an initialize answer");
    assert!(init.get("result").is_some(), "initialize at {path}: {init}");
    let id = resp
        .header("mcp-session-id")
        .unwrap_or_else(|| panic!("no Mcp-Session-Id at {path}: {resp:?}"))
        .to_owned();
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let resp = post(relay, path, Some(&id), token, &note);
    assert_eq!(resp.status(), 202, "initialized at {path}: {}", resp.text());
    (id, init["result"].clone())
}

/// The status of an `initialize` at `path` with `token` (a session opened is deleted).
fn initialize_status(relay: &HttpRelay, path: &str, token: Option<&str>) -> u16 {
    let resp = post(relay, path, None, token, &initialize_request("2025-06-18"));
    if let Some(id) = resp.header("mcp-session-id") {
        let id = id.to_owned();
        bare(relay, "DELETE", path, Some(&id), token);
    }
    resp.status()
}

/// The tool names of a `tools/list` answer.
fn tool_names(msg: &Value) -> Vec<&str> {
    msg["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("not a tools/list answer: {msg}"))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect()
}

/// `GET /servers` (answered with 200): the servers, by name.
fn servers(relay: &HttpRelay, token: Option<&str>) -> Vec<Value> {
    let resp = bare(relay, "GET", "/servers", None, token);
    assert_eq!(resp.status(), 200, "GET /servers: {}", resp.text());
    resp.json()["servers"]
        .as_array()
        .unwrap_or_else(|| panic!("GET /servers: {}", resp.text()))
        .clone()
}

/// Each server's session count, in the order of the listing.
fn session_counts(relay: &HttpRelay, token: Option<&str>) -> Vec<(String, u64)> {
    servers(relay, token)
        .iter()
        .map(|s| {
            (
                s["name"].as_str().expect("name").to_owned(),
                s["sessions"].as_u64().expect("sessions"),
            )
        })
        .collect()
}

/// Waits until `GET /servers` shows `want` session counts.
fn wait_counts(relay: &HttpRelay, token: Option<&str>, want: &[(&str, u64)]) {
    let want: Vec<(String, u64)> = want.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect();
    let deadline = Instant::now() + GONE;
    loop {
        let got = session_counts(relay, token);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "GET /servers shows {got:?}, not {want:?}, after {GONE:?}; the relay's log:\n{}",
            relay.log_text()
        );
        // No event tells the test that the relay counted a session out.
        thread::sleep(Duration::from_millis(50));
    }
}

/// Fails the test if the relay logged a warning or an error (none of these tests gives it
/// cause to).
fn assert_quiet(relay: &HttpRelay) {
    let text = relay.log_text();
    let loud: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Z WARN ]") || l.contains("Z ERROR]"))
        .collect();
    assert!(loud.is_empty(), "the relay warned: {loud:#?}");
}

// ---------------------------------------------------------------------------------------
// 1. Three servers, every route at once
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn three_servers_answer_their_own_clients_on_every_route_at_once() {
    let test = "three_servers_answer_their_own_clients_on_every_route_at_once";
    if let Some(why) = first_missing(&[python_missing, everything_missing, memory_missing, || {
        node_file_missing(inspector())
    }]) {
        return skip(test, &why);
    }
    let dir = TempDir::new("servers-three");
    let mut everything = everything_entry();
    everything["default"] = json!(true);
    let config = json!({
        "mcpServers": {"demo": demo_entry(), "everything": everything, "memory": memory_entry()},
        "relay": {"session_timeout": SESSION_TIMEOUT},
    });
    let relay = start(&dir, &config, &[]);

    // The Python SDK, every route at once.
    let plan = json!([
        {"label": "demo", "url": relay.url("/servers/demo/mcp"), "repeat": 2,
         "calls": [{"name": "echo", "arguments": {"message": "demo-{s}-{c}"}}]},
        {"label": "everything", "url": relay.url("/servers/everything/mcp"), "repeat": 2,
         "calls": [{"name": "echo", "arguments": {"message": "everything-{s}-{c}"}}]},
        {"label": "memory", "url": relay.url("/servers/memory/mcp"), "repeat": 2,
         "calls": [{"name": "create_entities",
                    "arguments": {"entities": [entity("memory-{s}-{c}")]}}]},
        {"label": "default", "url": relay.url("/mcp"),
         "calls": [{"name": "echo", "arguments": {"message": "default-{s}"}}]},
        {"label": "legacy", "url": relay.url("/servers/demo/sse"), "transport": "sse",
         "calls": [{"name": "echo", "arguments": {"message": "legacy-{s}"}}]},
    ]);
    let lines = run_plan(test, &relay, &plan);
    assert_eq!(lines.len(), 5, "{lines:#?}");
    let demo_tools: &[&str] = &["echo", "slow", "sample"];
    let everything_tools: &[&str] = &["echo", "get-sum", "get-env"];
    let memory_tools: &[&str] = &["create_entities", "read_graph", "open_nodes"];
    check_sessions(
        &lines,
        &Expect {
            label: "demo",
            sessions: 1,
            server: DEMO,
            has: demo_tools,
            lacks: &["get-sum", "create_entities"],
            answer: &|s, _, c| json!(format!("demo-{s}-{c}")),
            answers: 2,
        },
    );
    check_sessions(
        &lines,
        &Expect {
            label: "everything",
            sessions: 1,
            server: EVERYTHING,
            has: everything_tools,
            lacks: &["slow", "create_entities"],
            answer: &|s, _, c| json!(format!("Echo: everything-{s}-{c}")),
            answers: 2,
        },
    );
    check_sessions(
        &lines,
        &Expect {
            label: "memory",
            sessions: 1,
            server: MEMORY,
            has: memory_tools,
            lacks: &["echo", "slow", "get-sum"],
            answer: &|s, _, c| json!([entity(&format!("memory-{s}-{c}"))]),
            answers: 2,
        },
    );
    // The default server is everything, at /mcp.
    check_sessions(
        &lines,
        &Expect {
            label: "default",
            sessions: 1,
            server: EVERYTHING,
            has: everything_tools,
            lacks: &["slow", "create_entities"],
            answer: &|s, _, _| json!(format!("Echo: default-{s}")),
            answers: 1,
        },
    );
    // The legacy transport on a named route that is not the default.
    check_sessions(
        &lines,
        &Expect {
            label: "legacy",
            sessions: 1,
            server: DEMO,
            has: demo_tools,
            lacks: &["get-sum", "create_entities"],
            answer: &|s, _, _| json!(format!("legacy-{s}")),
            answers: 1,
        },
    );
    // server-memory kept its graph where the expanded ${MCP_RELAY_E2E_MEMORY_FILE} says.
    let graph = fs::read_to_string(dir.path().join("memory.jsonl")).unwrap_or_default();
    assert!(
        graph.contains("\"memory-0-0\"") && graph.contains("\"memory-0-1\""),
        "server-memory's file at $MCP_RELAY_E2E_MEMORY_FILE: {graph:?}"
    );

    // The Inspector CLI, the three routes at once.
    let routes = [
        ("demo", demo_tools, ["get-sum", "create_entities"]),
        ("everything", everything_tools, ["slow", "create_entities"]),
        ("memory", memory_tools, ["echo", "get-sum"]),
    ];
    let runs: Vec<_> = routes
        .iter()
        .map(|(name, _, _)| {
            let url = relay.url(&format!("/servers/{name}/mcp"));
            thread::spawn(move || inspector_tools(&url))
        })
        .collect();
    for ((name, has, lacks), run) in routes.iter().zip(runs) {
        let tools = run.join().expect("an Inspector run");
        for t in has.iter() {
            assert!(
                tools.iter().any(|x| x == t),
                "Inspector at /servers/{name}/mcp: no {t} among {tools:?}"
            );
        }
        for t in lacks {
            assert!(
                !tools.iter().any(|x| x == t),
                "Inspector at /servers/{name}/mcp: another server's tool {t} among {tools:?}"
            );
        }
    }

    // A session belongs to its server: its id is unknown on every other route.
    let (id, init) = open_at(&relay, "/servers/demo/mcp", None);
    assert_eq!(init["serverInfo"]["name"], DEMO, "{init}");
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    for other in ["/servers/everything/mcp", "/servers/memory/mcp", "/mcp"] {
        let resp = post(&relay, other, Some(&id), None, &list);
        assert_eq!(
            resp.status(),
            404,
            "demo's session id at {other}: {}",
            resp.text()
        );
    }
    let resp = post(&relay, "/servers/demo/mcp", Some(&id), None, &list);
    assert_eq!(resp.status(), 200, "{}", resp.text());
    let listed = resp.messages().pop().expect("an answer");
    assert!(tool_names(&listed).contains(&"slow"), "{listed}");
    let resp = bare(&relay, "DELETE", "/servers/demo/mcp", Some(&id), None);
    assert!(resp.status() < 300, "DELETE: {}", resp.text());
    // A name that is not in the file.
    let resp = post(
        &relay,
        "/servers/nope/mcp",
        None,
        None,
        &initialize_request("2025-06-18"),
    );
    assert_eq!(resp.status(), 404, "{}", resp.text());
    assert!(
        resp.text().contains("no server named \\\"nope\\\""),
        "{}",
        resp.text()
    );

    // Every session ended (the Inspector's by expiry), and its server with it.
    relay.wait_children(0, GONE);
    wait_counts(
        &relay,
        None,
        &[("demo", 0), ("everything", 0), ("memory", 0)],
    );
    assert_quiet(&relay);
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn the_2026_era_reaches_each_server_on_its_own_route() {
    let test = "the_2026_era_reaches_each_server_on_its_own_route";
    if let Some(why) = first_missing(&[python_missing, everything_missing, memory_missing, || {
        node_file_missing(node22())
    }]) {
        return skip(test, &why);
    }
    let dir = TempDir::new("servers-modern");
    let mut demo = demo_entry();
    demo["default"] = json!(true);
    let config = json!({
        "mcpServers": {"demo": demo, "everything": everything_entry(), "memory": memory_entry()},
    });
    let relay = start(&dir, &config, &[]);

    // The Python SDK 2.x pinned to 2026-07-28 (no initialize, no session), every route at once.
    let plan = json!([
        {"label": "demo", "url": relay.url("/servers/demo/mcp"), "transport": "modern",
         "sessions": 2, "repeat": 2,
         "calls": [{"name": "echo", "arguments": {"message": "demo-{s}-{c}"}}]},
        {"label": "everything", "url": relay.url("/servers/everything/mcp"), "transport": "modern",
         "sessions": 2, "repeat": 2,
         "calls": [{"name": "echo", "arguments": {"message": "everything-{s}-{c}"}}]},
        {"label": "memory", "url": relay.url("/servers/memory/mcp"), "transport": "modern",
         "calls": [{"name": "create_entities", "arguments": {"entities": [entity("modern-{s}-{c}")]}}]},
        {"label": "default", "url": relay.url("/mcp"), "transport": "modern",
         "calls": [{"name": "echo", "arguments": {"message": "default-{s}"}}]},
    ]);
    let lines = run_plan(test, &relay, &plan);
    let demo_tools: &[&str] = &["echo", "slow", "sample"];
    /// Label, sessions, serverInfo.name, tools it has, tools it lacks, answers per session.
    type Case<'a> = (&'a str, usize, &'a str, &'a [&'a str], &'a [&'a str], usize);
    let cases: [Case<'_>; 4] = [
        (
            "demo",
            2,
            DEMO,
            demo_tools,
            &["get-sum", "create_entities"],
            2,
        ),
        (
            "everything",
            2,
            EVERYTHING,
            &["echo", "get-sum"],
            &["slow", "create_entities"],
            2,
        ),
        (
            "memory",
            1,
            MEMORY,
            &["create_entities"],
            &["echo", "slow"],
            1,
        ),
        (
            "default",
            1,
            DEMO,
            demo_tools,
            &["get-sum", "create_entities"],
            1,
        ),
    ];
    for (label, sessions, server, has, lacks, answers) in cases {
        let answer = move |s: usize, _: usize, c: usize| match label {
            "everything" => json!(format!("Echo: everything-{s}-{c}")),
            "memory" => json!([entity(&format!("modern-{s}-{c}"))]),
            "default" => json!(format!("default-{s}")),
            _ => json!(format!("demo-{s}-{c}")),
        };
        check_sessions(
            &lines,
            &Expect {
                label,
                sessions,
                server,
                has,
                lacks,
                answer: &answer,
                answers,
            },
        );
    }

    // The TypeScript SDK 2.x's whole 2026-07-28 suite on a route that is not the default
    // (sampling, elicitation and roots through input_required, listen streams, 5 MiB).
    let url = relay.url("/servers/everything/mcp");
    let ran = run_bounded(
        Command::new(node22())
            .arg(tests_dir().join("node").join("v2_client.mjs"))
            .args(["--url", &url, "--timeout", "120"]),
        Duration::from_secs(135),
    )
    .unwrap_or_else(|| panic!("{test}: cannot start the TypeScript client"));
    let failed: Vec<&str> = ran
        .stdout
        .lines()
        .filter(|l| l.starts_with("FAIL "))
        .collect();
    let summary = ran.stdout.lines().rev().find(|l| l.starts_with("SUMMARY"));
    assert!(
        ran.ok() && failed.is_empty() && summary.is_some_and(|s| s.ends_with("failed=0")),
        "{test}: the TypeScript SDK 2.x client at {url}: {failed:?}\nstdout:\n{}\nrelay log:\n{}",
        ran.stdout,
        relay.log_text()
    );
    assert_quiet(&relay);
}

// ---------------------------------------------------------------------------------------
// 7. No cross-talk under load
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn ten_sessions_per_server_at_once_each_get_their_own_answers() {
    let test = "ten_sessions_per_server_at_once_each_get_their_own_answers";
    if let Some(why) = first_missing(&[python_missing, everything_missing, memory_missing]) {
        return skip(test, &why);
    }
    const SESSIONS: usize = 10;
    const CALLS: usize = 3;
    let dir = TempDir::new("servers-load");
    let config = json!({"mcpServers": {
        "demo": demo_entry(), "everything": everything_entry(), "memory": memory_entry(),
    }});
    let relay = start(&dir, &config, &[]);
    let plan = json!([
        {"label": "demo", "url": relay.url("/servers/demo/mcp"),
         "sessions": SESSIONS, "repeat": CALLS,
         "calls": [{"name": "echo", "arguments": {"message": "demo-{s}-{c}"}}]},
        {"label": "everything", "url": relay.url("/servers/everything/mcp"),
         "sessions": SESSIONS, "repeat": CALLS,
         "calls": [{"name": "echo", "arguments": {"message": "everything-{s}-{c}"}}]},
        {"label": "memory", "url": relay.url("/servers/memory/mcp"),
         "sessions": SESSIONS, "repeat": CALLS,
         "calls": [{"name": "create_entities",
                    "arguments": {"entities": [entity("memory-{s}-{c}")]}}]},
    ]);
    let lines = run_plan(test, &relay, &plan);
    check_sessions(
        &lines,
        &Expect {
            label: "demo",
            sessions: SESSIONS,
            server: DEMO,
            has: &["echo", "slow"],
            lacks: &["get-sum", "create_entities"],
            answer: &|s, _, c| json!(format!("demo-{s}-{c}")),
            answers: CALLS,
        },
    );
    check_sessions(
        &lines,
        &Expect {
            label: "everything",
            sessions: SESSIONS,
            server: EVERYTHING,
            has: &["echo", "get-sum"],
            lacks: &["slow", "create_entities"],
            answer: &|s, _, c| json!(format!("Echo: everything-{s}-{c}")),
            answers: CALLS,
        },
    );
    check_sessions(
        &lines,
        &Expect {
            label: "memory",
            sessions: SESSIONS,
            server: MEMORY,
            has: &["create_entities"],
            lacks: &["echo", "slow"],
            answer: &|s, _, c| json!([entity(&format!("memory-{s}-{c}"))]),
            answers: CALLS,
        },
    );
    // Each session ran a child of its own, and every one is gone with its session.
    let spawned = relay.log_count("session ended");
    assert!(
        relay.wait_for_log(GONE, |lines| {
            lines.iter().filter(|l| l.contains("session ended")).count() >= 3 * SESSIONS
        }),
        "{spawned} of {} sessions ended; the relay's log:\n{}",
        3 * SESSIONS,
        relay.log_text()
    );
    relay.wait_children(0, GONE);
    assert_quiet(&relay);
}

// ---------------------------------------------------------------------------------------
// 2. GET /servers
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn get_servers_lists_each_server_with_its_sessions_behind_the_relay_token() {
    let test = "get_servers_lists_each_server_with_its_sessions_behind_the_relay_token";
    if let Some(why) = memory_missing() {
        return skip(test, &why);
    }
    const RELAY_TOKEN: &str = "relay-token-for-servers";
    const MEMORY_TOKEN: &str = "memory-only-token";
    let dir = TempDir::new("servers-list");
    let mut everything = everything_entry();
    everything["default"] = json!(true);
    let mut memory = memory_entry();
    memory["relay"] = json!({"auth_token": [MEMORY_TOKEN]});
    let config = json!({"mcpServers": {
        "demo": demo_entry(), "everything": everything, "memory": memory,
    }});
    let relay = start(&dir, &config, &["--auth-token", RELAY_TOKEN]);

    // Behind the relay's token: not without it, not with a wrong one, not with a server's.
    for token in [None, Some("wrong"), Some(MEMORY_TOKEN)] {
        let resp = bare(&relay, "GET", "/servers", None, token);
        assert_eq!(
            resp.status(),
            401,
            "GET /servers with {token:?}: {}",
            resp.text()
        );
        assert_eq!(resp.header("www-authenticate"), Some("Bearer"), "{resp:?}");
    }

    let list = servers(&relay, Some(RELAY_TOKEN));
    let names: Vec<&str> = list.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["demo", "everything", "memory"], "{list:#?}");
    let bin = relay_bin().to_string_lossy().into_owned();
    for (s, (name, default, program)) in list.iter().zip([
        ("demo", false, bin.as_str()),
        ("everything", true, "node"),
        ("memory", false, "node"),
    ]) {
        assert_eq!(s["default"], default, "{name}: {s}");
        assert_eq!(s["transport"], "stdio", "{name}: {s}");
        // The program alone: arguments may carry secrets.
        assert_eq!(s["server"], program, "{name}: {s}");
        assert_eq!(s["mcp"], format!("/servers/{name}/mcp"), "{name}: {s}");
        assert_eq!(s["sse"], format!("/servers/{name}/sse"), "{name}: {s}");
        assert_eq!(s["sessions"], 0, "{name}: {s}");
        assert_eq!(s["prespawned"], 0, "{name}: {s}");
    }

    // Sessions are counted where they are: two on demo, one on memory (with its own token).
    let (d1, _) = open_at(&relay, "/servers/demo/mcp", Some(RELAY_TOKEN));
    let (d2, _) = open_at(&relay, "/servers/demo/mcp", Some(RELAY_TOKEN));
    let (m1, init) = open_at(&relay, "/servers/memory/mcp", Some(MEMORY_TOKEN));
    assert_eq!(init["serverInfo"]["name"], MEMORY, "{init}");
    assert_eq!(
        session_counts(&relay, Some(RELAY_TOKEN)),
        [
            ("demo".to_owned(), 2),
            ("everything".to_owned(), 0),
            ("memory".to_owned(), 1)
        ]
    );
    // And counted out when they end.
    let resp = bare(
        &relay,
        "DELETE",
        "/servers/demo/mcp",
        Some(&d1),
        Some(RELAY_TOKEN),
    );
    assert!(resp.status() < 300, "DELETE: {}", resp.text());
    wait_counts(
        &relay,
        Some(RELAY_TOKEN),
        &[("demo", 1), ("everything", 0), ("memory", 1)],
    );
    for (path, id, token) in [
        ("/servers/demo/mcp", &d2, RELAY_TOKEN),
        ("/servers/memory/mcp", &m1, MEMORY_TOKEN),
    ] {
        let resp = bare(&relay, "DELETE", path, Some(id), Some(token));
        assert!(resp.status() < 300, "DELETE at {path}: {}", resp.text());
    }
    wait_counts(
        &relay,
        Some(RELAY_TOKEN),
        &[("demo", 0), ("everything", 0), ("memory", 0)],
    );
    relay.wait_children(0, GONE);
}

// ---------------------------------------------------------------------------------------
// 3. Per-server tokens
// ---------------------------------------------------------------------------------------

#[test]
fn a_servers_own_token_opens_that_server_only_and_the_relay_token_opens_all() {
    const RELAY_TOKEN: &str = "relay-token-opens-all";
    const LOCKED_TOKEN: &str = "locked-only-token";
    let dir = TempDir::new("servers-tokens");
    let mut locked = demo_entry();
    locked["relay"] = json!({"auth_token": LOCKED_TOKEN});
    let config = json!({"mcpServers": {"locked": locked, "plain": demo_entry()}});
    let relay = start(&dir, &config, &["--auth-token", RELAY_TOKEN]);
    let cases = [
        ("/servers/locked/mcp", Some(LOCKED_TOKEN), 200),
        ("/servers/locked/mcp", Some(RELAY_TOKEN), 200),
        ("/servers/locked/mcp", None, 401),
        ("/servers/locked/mcp", Some("wrong"), 401),
        ("/servers/plain/mcp", Some(RELAY_TOKEN), 200),
        ("/servers/plain/mcp", Some(LOCKED_TOKEN), 401),
        ("/servers/plain/mcp", None, 401),
    ];
    for (path, token, want) in cases {
        let got = initialize_status(&relay, path, token);
        assert_eq!(got, want, "initialize at {path} with {token:?}");
    }
    // The legacy transport: its stream, the same; and its message endpoint is the route's,
    // where the session is known, and unknown at the other route's.
    let get_sse = |path: &str, token: &str| {
        let mut conn = relay.connect();
        let auth = format!("Bearer {token}");
        conn.send(
            "GET",
            path,
            &[("Accept", "text/event-stream"), ("Authorization", &auth)],
            b"",
        );
        let head = conn.read_head();
        (conn, head)
    };
    let (_, head) = get_sse("/servers/plain/sse", LOCKED_TOKEN);
    assert_eq!(
        head.status, 401,
        "GET /servers/plain/sse with locked's token"
    );
    let (mut stream, head) = get_sse("/servers/locked/sse", LOCKED_TOKEN);
    assert_eq!(head.status, 200, "GET /servers/locked/sse with its token");
    let endpoint = stream.next_event().expect("the endpoint event");
    assert_eq!(endpoint.event.as_deref(), Some("endpoint"), "{endpoint:?}");
    let messages = endpoint.data;
    assert!(
        messages.starts_with("/servers/locked/messages?sessionId="),
        "{messages}"
    );
    let init = initialize_request("2025-06-18");
    let elsewhere = messages.replace("/servers/locked/", "/servers/plain/");
    let resp = post(&relay, &elsewhere, None, Some(RELAY_TOKEN), &init);
    assert_eq!(resp.status(), 404, "POST {elsewhere}: {}", resp.text());
    let resp = post(&relay, &messages, None, Some(LOCKED_TOKEN), &init);
    assert_eq!(resp.status(), 202, "POST {messages}: {}", resp.text());
    let (_, answer) = stream.next_message();
    assert_eq!(answer["result"]["serverInfo"]["name"], DEMO, "{answer}");
    stream.close();
    // A session opened with a server's token stays that server's: the other one does not
    // know it, even with the relay's token.
    let (id, _) = open_at(&relay, "/servers/locked/mcp", Some(LOCKED_TOKEN));
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let resp = post(
        &relay,
        "/servers/plain/mcp",
        Some(&id),
        Some(RELAY_TOKEN),
        &list,
    );
    assert_eq!(resp.status(), 404, "{}", resp.text());
    let resp = post(
        &relay,
        "/servers/locked/mcp",
        Some(&id),
        Some(LOCKED_TOKEN),
        &list,
    );
    assert_eq!(resp.status(), 200, "{}", resp.text());
    bare(
        &relay,
        "DELETE",
        "/servers/locked/mcp",
        Some(&id),
        Some(LOCKED_TOKEN),
    );
    drop(relay);

    // Without a relay token, a server with its own wants it, and the others want none.
    let relay = start(&dir, &config, &[]);
    for (path, token, want) in [
        ("/servers/locked/mcp", None, 401),
        ("/servers/locked/mcp", Some(LOCKED_TOKEN), 200),
        ("/servers/plain/mcp", None, 200),
    ] {
        let got = initialize_status(&relay, path, token);
        assert_eq!(
            got, want,
            "no relay token: initialize at {path} with {token:?}"
        );
    }
    let list = servers(&relay, None);
    assert_eq!(list.len(), 2, "{list:#?}");
}

// ---------------------------------------------------------------------------------------
// 4. A server's own TCP listener
// ---------------------------------------------------------------------------------------

/// Sends `msg` as one line and reads lines until the answer with its id.
fn tcp_request(reader: &mut BufReader<TcpStream>, msg: &Value) -> Value {
    let mut line = msg.to_string();
    line.push('\n');
    reader
        .get_mut()
        .write_all(line.as_bytes())
        .expect("writing to the TCP listener");
    loop {
        let mut got = String::new();
        let n = reader
            .read_line(&mut got)
            .expect("an answer over TCP within the deadline");
        assert!(
            n > 0,
            "the TCP connection closed before the answer to {msg}"
        );
        let answer: Value = serde_json::from_str(&got).expect("a JSON line");
        if answer["id"] == msg["id"] {
            return answer;
        }
    }
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn a_servers_own_tcp_listener_serves_that_server() {
    let test = "a_servers_own_tcp_listener_serves_that_server";
    if let Some(why) = memory_missing() {
        return skip(test, &why);
    }
    let dir = TempDir::new("servers-tcp");
    let mut demo = demo_entry();
    demo["default"] = json!(true);
    let mut memory = memory_entry();
    memory["relay"] = json!({"listen": "tcp://127.0.0.1:0"});
    let config = json!({"mcpServers": {"demo": demo, "memory": memory}});
    let relay = start(&dir, &config, &[]);
    let line = relay.wait_log("listening on tcp://", DEADLINE);
    let addr: SocketAddr = line
        .split("listening on tcp://")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| c == ',' || c.is_whitespace()).next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));

    let stream = TcpStream::connect_timeout(&addr, DEADLINE).expect("connecting over TCP");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut reader = BufReader::new(stream);
    let init = tcp_request(&mut reader, &initialize_request("2025-06-18"));
    assert_eq!(
        init["result"]["serverInfo"]["name"], MEMORY,
        "initialize over memory's own tcp:// listener: {init}"
    );
    let note = "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n";
    reader
        .get_mut()
        .write_all(note.as_bytes())
        .expect("writing");
    let tools = tcp_request(
        &mut reader,
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    );
    let names = tool_names(&tools);
    assert!(
        names.contains(&"create_entities") && !names.contains(&"echo"),
        "{names:?}"
    );
    // The TCP session is memory's; HTTP's /mcp is still the default server, demo.
    assert_eq!(
        session_counts(&relay, None),
        [("demo".to_owned(), 0), ("memory".to_owned(), 1)]
    );
    let (id, init) = open_at(&relay, "/mcp", None);
    assert_eq!(init["serverInfo"]["name"], DEMO, "{init}");
    bare(&relay, "DELETE", "/mcp", Some(&id), None);
    drop(reader);
    relay.wait_children(0, GONE);
}

// ---------------------------------------------------------------------------------------
// 5. Remote entries
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn remote_entries_reach_another_relay_over_streamable_http_and_sse() {
    let test = "remote_entries_reach_another_relay_over_streamable_http_and_sse";
    if let Some(why) = python_missing() {
        return skip(test, &why);
    }
    let remote = HttpRelay::demo();
    let dir = TempDir::new("servers-remote");
    let config = json!({"mcpServers": {
        "remote": {"type": "http", "url": remote.url("/mcp")},
        "remote-sse": {"type": "sse", "url": remote.url("/sse")},
    }});
    let relay = start(&dir, &config, &[]);
    let list = servers(&relay, None);
    assert_eq!(list.len(), 2, "{list:#?}");
    assert_eq!(list[0]["server"], remote.url("/mcp"), "{list:#?}");
    assert!(
        !["stdio", "sse"].contains(&list[0]["transport"].as_str().unwrap_or("")),
        "{list:#?}"
    );
    assert_eq!(list[1]["server"], remote.url("/sse"), "{list:#?}");
    assert_eq!(list[1]["transport"], "sse", "{list:#?}");
    // Two servers and none marked default: /mcp has none to reach.
    let resp = post(
        &relay,
        "/mcp",
        None,
        None,
        &initialize_request("2025-06-18"),
    );
    assert_eq!(resp.status(), 404, "{}", resp.text());

    let plan = json!([
        {"label": "remote", "url": relay.url("/servers/remote/mcp"), "sessions": 2,
         "repeat": 2, "calls": [{"name": "echo", "arguments": {"message": "remote-{s}-{c}"}}]},
        {"label": "remote-sse", "url": relay.url("/servers/remote-sse/mcp"),
         "calls": [{"name": "echo", "arguments": {"message": "remote-sse-{s}"}}]},
        {"label": "legacy", "url": relay.url("/servers/remote/sse"), "transport": "sse",
         "calls": [{"name": "echo", "arguments": {"message": "legacy-{s}"}}]},
    ]);
    let lines = run_plan(test, &relay, &plan);
    for (label, sessions, answers, prefix) in [
        ("remote", 2, 2, "remote"),
        ("remote-sse", 1, 1, "remote-sse"),
        ("legacy", 1, 1, "legacy"),
    ] {
        let answer = move |s: usize, _: usize, c: usize| {
            if answers == 2 {
                json!(format!("{prefix}-{s}-{c}"))
            } else {
                json!(format!("{prefix}-{s}"))
            }
        };
        check_sessions(
            &lines,
            &Expect {
                label,
                sessions,
                server: DEMO,
                has: &["echo", "slow"],
                lacks: &[],
                answer: &answer,
                answers,
            },
        );
    }
    // Each local session had a remote one of its own, which ended with it; and no process
    // ran here.
    let ended = remote.wait_for_log(GONE, |lines| {
        lines.iter().filter(|l| l.contains("session ended")).count() >= 4
    });
    assert!(
        ended,
        "the remote relay should have seen 4 sessions end; its log:\n{}\nthe local relay's log:\n{}",
        remote.log_text(),
        relay.log_text()
    );
    assert!(
        relay.live_children().is_empty(),
        "{:?}",
        relay.live_children()
    );
    wait_counts(&relay, None, &[("remote", 0), ("remote-sse", 0)]);
    assert_quiet(&relay);
    assert_quiet(&remote);
}

// ---------------------------------------------------------------------------------------
// 6. The file: errors, ${VAR}, listen
// ---------------------------------------------------------------------------------------

#[test]
fn config_errors_name_the_place_and_exit_with_status_2() {
    let dir = TempDir::new("servers-errors");
    // (file, text, line:column, what the message says)
    let cases: [(&str, String, &str, &str); 6] = [
        (
            "bad-json.json",
            "{\n  \"mcpServers\": {\n    \"a\": {\"command\": \"x\",}\n  }\n}\n".into(),
            "3:26",
            "invalid JSON: trailing comma",
        ),
        (
            "unknown-key.json",
            "{\"mcpServers\": {\n  \"a\": {\"command\": \"x\", \"comand\": \"y\"}}}\n".into(),
            "2:25",
            "server \"a\": unknown key \"comand\"",
        ),
        (
            "bad-name.json",
            "{\"mcpServers\": {\"a b\": {\"command\": \"x\"}}}\n".into(),
            "1:17",
            "server name \"a b\": use 1 to 64 letters, digits",
        ),
        (
            "unset-var.json",
            "{\"mcpServers\": {\"a\": {\"command\": \"x\",\n  \"args\": [\"--token=${MCP_RELAY_E2E_NEVER_SET}\"]}}}\n".into(),
            "2:12",
            "server \"a\": \"args\"[0]: ${MCP_RELAY_E2E_NEVER_SET} is not set (write ${MCP_RELAY_E2E_NEVER_SET:-default}",
        ),
        (
            "unknown-setting.json",
            "{\"mcpServers\": {\"a\": {\"command\": \"x\"}},\n \"relay\": {\"listne\": \"http://127.0.0.1:0\"}}\n".into(),
            "2:12",
            "relay \"listne\": no such setting",
        ),
        (
            "no-servers.json",
            "{\"servers\": {}}\n".into(),
            "1:1",
            "no \"mcpServers\"",
        ),
    ];
    for (name, text, at, message) in cases {
        let path = dir.path().join(name);
        fs::write(&path, text).expect("writing the file");
        let mut cmd = Command::new(relay_bin());
        cmd.arg("--config")
            .arg(&path)
            .env_remove("MCP_RELAY_E2E_NEVER_SET");
        let ran = run_bounded(&mut cmd, DEADLINE).expect("running mcp-relay");
        let want = format!("mcp-relay: {}:{at}: {message}", path.display());
        assert_eq!(
            ran.status.code(),
            Some(2),
            "{name}: exit status; stderr:\n{}",
            ran.stderr
        );
        assert!(
            ran.stderr.starts_with(&want),
            "{name}: stderr should start with\n  {want}\nbut is\n  {}",
            ran.stderr
        );
        assert!(!ran.stderr.contains("listening"), "{name}: {}", ran.stderr);
    }
    // --config with a server of the command line's.
    let path = dir.path().join("ok.json");
    fs::write(&path, "{\"mcpServers\": {\"a\": {\"command\": \"x\"}}}").expect("writing");
    let mut cmd = Command::new(relay_bin());
    cmd.arg("--config").arg(&path).arg("--demo");
    let ran = run_bounded(&mut cmd, DEADLINE).expect("running mcp-relay");
    assert_eq!(
        ran.status.code(),
        Some(2),
        "--config --demo: {}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("--config names the servers"),
        "{}",
        ran.stderr
    );
}

#[test]
fn variables_expand_in_the_command_its_arguments_and_its_environment() {
    let dir = TempDir::new("servers-vars");
    let config = json!({"mcpServers": {"demo": {
        "command": "${MCP_RELAY_E2E_BIN}",
        "args": ["${MCP_RELAY_E2E_NEVER_SET:-demo-server}"],
        "env": {
            "E2E_DEFAULTED": "${MCP_RELAY_E2E_NEVER_SET:-fallback}",
            "E2E_SET": "${MCP_RELAY_E2E_SET:-unused}",
            "E2E_EMPTY": "${MCP_RELAY_E2E_EMPTY:-was-empty}",
            "E2E_MIXED": "a-${MCP_RELAY_E2E_SET}-b",
        },
    }}});
    let path = write_config(&dir, &config);
    let relay = HttpRelay::builder()
        .arg("--config")
        .arg(&path)
        .env("MCP_RELAY_E2E_BIN", relay_bin())
        .env("MCP_RELAY_E2E_SET", "given")
        .env("MCP_RELAY_E2E_EMPTY", "")
        .start();
    // The command and its argument expanded: the demo server answers.
    let (id, init) = open_at(&relay, "/mcp", None);
    assert_eq!(init["serverInfo"]["name"], DEMO, "{init}");
    let kids = relay.wait_children(1, DEADLINE);
    let env = environ(kids[0].pid);
    for want in [
        "E2E_DEFAULTED=fallback",
        "E2E_SET=given",
        "E2E_EMPTY=was-empty",
        "E2E_MIXED=a-given-b",
    ] {
        assert!(
            env.iter().any(|e| e == want),
            "the demo server's environment lacks {want}: {env:?}"
        );
    }
    let resp = post(
        &relay,
        "/mcp",
        Some(&id),
        None,
        &tool_call(2, "echo", json!({"message": "expanded"})),
    );
    let answer = resp.messages().pop().expect("an answer");
    assert_eq!(
        answer["result"]["content"][0]["text"], "expanded",
        "{answer}"
    );
}

#[test]
fn the_files_listen_is_used_and_a_command_line_listen_wins_over_it() {
    let dir = TempDir::new("servers-listen");
    // A port taken: a relay that tried to listen there too would fail to start.
    let taken = TcpListener::bind("127.0.0.1:0").expect("binding");
    let taken_port = taken.local_addr().expect("address").port();
    let config = json!({
        "mcpServers": {"demo": demo_entry()},
        "relay": {"listen": [format!("http://127.0.0.1:{taken_port}")]},
    });
    let path = write_config(&dir, &config);
    // `--listen http://127.0.0.1:0` on the command line (the builder's): that one only.
    let relay = HttpRelay::builder().arg("--config").arg(&path).start();
    assert_ne!(relay.addr.port(), taken_port);
    assert_eq!(relay.log_count("listening on"), 1, "{}", relay.log_text());
    let (_, init) = open_at(&relay, "/mcp", None);
    assert_eq!(init["serverInfo"]["name"], DEMO, "{init}");
    drop(relay);
    drop(taken);

    // Without --listen, the file's.
    let free = TcpListener::bind("127.0.0.1:0").expect("binding");
    let port = free.local_addr().expect("address").port();
    drop(free);
    let config = json!({
        "mcpServers": {"demo": demo_entry()},
        "relay": {"listen": [format!("http://127.0.0.1:{port}")]},
    });
    let path = write_config(&dir, &config);
    let relay = HttpRelay::builder()
        .listen_from_config()
        .arg("--config")
        .arg(&path)
        .start();
    assert_eq!(relay.addr.port(), port, "{}", relay.log_text());
    let (_, init) = open_at(&relay, "/mcp", None);
    assert_eq!(init["serverInfo"]["name"], DEMO, "{init}");
}

/// Rewrites the file and sends SIGHUP; waits until `GET /servers` lists `names` as live.
fn reload(relay: &HttpRelay, dir: &TempDir, config: &Value, names: &[&str]) {
    write_config(dir, config);
    // SAFETY: kill(2) on the relay's own pid, which this test started and still holds.
    unsafe {
        libc::kill(relay.pid(), libc::SIGHUP);
    }
    let deadline = Instant::now() + GONE;
    loop {
        let live: Vec<String> = servers(relay, None)
            .iter()
            .filter(|s| s["retired"] != true)
            .filter_map(|s| s["name"].as_str().map(str::to_owned))
            .collect();
        if live == names {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after SIGHUP the live servers are {live:?}, not {names:?}; log:\n{}",
            relay.log_text()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_reload_under_load_keeps_unchanged_servers_and_their_calls() {
    let dir = TempDir::new("reload");
    let demo = |extra: &[&str]| {
        let mut args = vec!["demo-server".to_owned()];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        json!({"command": relay_bin(), "args": args})
    };
    let first = json!({"mcpServers": {
        "a": demo(&[]), "b": demo(&[]), "c": demo(&[]),
    }, "relay": {"listen": ["http://127.0.0.1:0"]}});
    let relay = HttpRelay::builder()
        .listen_from_config()
        .arg("--config")
        .arg(write_config(&dir, &first))
        .start();
    // Busy sessions on a, which every reload leaves alone.
    let sessions: Vec<String> = (0..24)
        .map(|_| open_at(&relay, "/servers/a/mcp", None).0)
        .collect();
    let (b_old, _) = open_at(&relay, "/servers/b/mcp", None);
    let (c_old, _) = open_at(&relay, "/servers/c/mcp", None);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let answered = std::sync::atomic::AtomicUsize::new(0);
    /// Stops the callers however the main thread leaves the scope (a failed assertion
    /// included), so that the scope can end.
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        for (t, chunk) in sessions.chunks(3).enumerate() {
            let (relay, stop, answered) = (&relay, &stop, &answered);
            scope.spawn(move || {
                let mut n = 0u64;
                // A failed call stops the others and the test.
                let _stop = StopOnDrop(stop);
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    for sid in chunk {
                        n += 1;
                        let text = format!("t{t}-{n}");
                        let call = json!({"jsonrpc": "2.0", "id": n, "method": "tools/call",
                            "params": {"name": "echo", "arguments": {"message": text}}});
                        let resp = post(relay, "/servers/a/mcp", Some(sid), None, &call);
                        assert_eq!(resp.status(), 200, "call {text}: {}", resp.text());
                        let body = resp.text();
                        assert!(body.contains(&text), "call {text} answered {body}");
                        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
        // Reload 1: b changes, c goes, d comes.
        let second = json!({"mcpServers": {
            "a": demo(&[]), "b": demo(&["--banner"]), "d": demo(&[]),
        }, "relay": {"listen": ["http://127.0.0.1:0"]}});
        reload(&relay, &dir, &second, &["a", "b", "d"]);
        assert_eq!(initialize_status(&relay, "/servers/c/mcp", None), 404);
        assert_eq!(initialize_status(&relay, "/servers/d/mcp", None), 200);
        // The sessions of the retired b and c go on.
        for (path, sid) in [("/servers/b/mcp", &b_old), ("/servers/c/mcp", &c_old)] {
            let list = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list"});
            let resp = post(&relay, path, Some(sid), None, &list);
            assert_eq!(
                resp.status(),
                200,
                "{path} after the reload: {}",
                resp.text()
            );
        }
        let retired: Vec<String> = servers(&relay, None)
            .iter()
            .filter(|s| s["retired"] == true)
            .filter_map(|s| s["name"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(retired, ["b", "c"]);
        // Once its last session ends, a retired server is gone.
        let resp = bare(&relay, "DELETE", "/servers/c/mcp", Some(&c_old), None);
        assert_eq!(resp.status(), 200, "{}", resp.text());
        let deadline = Instant::now() + GONE;
        while servers(&relay, None).iter().any(|s| s["name"] == "c") {
            assert!(Instant::now() < deadline, "c is still listed");
            thread::sleep(Duration::from_millis(20));
        }
        // Reload 2: the same file (nothing changes); reload 3: back to the first.
        reload(&relay, &dir, &second, &["a", "b", "d"]);
        reload(&relay, &dir, &first, &["a", "b", "c"]);
        assert!(
            relay.log_text().contains("2 unchanged") || relay.log_text().contains("3 unchanged"),
            "{}",
            relay.log_text()
        );
        let before = answered.load(std::sync::atomic::Ordering::SeqCst);
        let deadline = Instant::now() + GONE;
        while answered.load(std::sync::atomic::Ordering::SeqCst) < before + 24 {
            assert!(Instant::now() < deadline, "the calls on a stopped");
            thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    assert!(answered.into_inner() >= 24);
    // Every session of a is still the one it was.
    let counts = session_counts(&relay, None);
    assert!(counts.contains(&("a".to_owned(), 24)), "{counts:?}");
}

#[test]
fn a_removed_servers_sessions_end_after_the_retire_timeout() {
    let dir = TempDir::new("retire");
    let demo = json!({"command": relay_bin(), "args": ["demo-server"]});
    let relay_settings = json!({"listen": ["http://127.0.0.1:0"], "retire_timeout": "1s"});
    let first = json!({"mcpServers": {"a": demo, "b": demo}, "relay": relay_settings});
    let relay = HttpRelay::builder()
        .listen_from_config()
        .arg("--config")
        .arg(write_config(&dir, &first))
        .start();
    let (b_old, _) = open_at(&relay, "/servers/b/mcp", None);
    let second = json!({"mcpServers": {"a": demo}, "relay": relay_settings});
    reload(&relay, &dir, &second, &["a"]);
    // Its session is drained a second later: its child ends, its id is forgotten, and the
    // retired server is gone with it.
    let deadline = Instant::now() + GONE;
    let list = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list"});
    loop {
        let resp = post(&relay, "/servers/b/mcp", Some(&b_old), None, &list);
        let listed = servers(&relay, None).iter().any(|s| s["name"] == "b");
        if resp.status() == 404 && !listed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "b's session still answers ({}) or b is still listed ({listed}); log:\n{}",
            resp.status(),
            relay.log_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        relay
            .log_text()
            .contains("b: retired 1s ago; draining its 1 session(s)"),
        "{}",
        relay.log_text()
    );
    relay.wait_children(0, GONE);
}
