//! End to end: what a production lifecycle needs. Ctrl-C lets requests in flight finish
//! (`--drain-timeout`), and an HTTP session is served until its client ends it (a new one
//! gets 503); a half-closed TCP client gets its answers from a slow-starting
//! server; restart notices only for a replacement that came up; prespawned children are
//! counted; `--request-timeout`; orphans of a server's wrapper are reaped (no `<defunct>`).

mod common;
mod http_support;

use common::{Relay, DEADLINE};
use http_support::{open_session, tool_call, tool_call_with_progress, HttpRelay, MCP_POST};
use mcp_relay_tests::process::relay_bin;
use serde_json::{json, Value};
use std::thread;
use std::time::{Duration, Instant};

/// The answer with this id among an HTTP response's messages.
fn answer(messages: &[Value], id: i64) -> Value {
    messages
        .iter()
        .find(|m| m["id"] == json!(id))
        .cloned()
        .unwrap_or_else(|| panic!("no answer to id {id} among {messages:#?}"))
}

#[test]
fn sigint_lets_an_http_call_in_flight_finish_then_exits_zero() {
    let mut relay = HttpRelay::demo();
    let mut conn = relay.connect();
    conn.set_read_timeout(DEADLINE);
    let session = open_session(&mut conn, "2025-06-18");
    let mut headers: Vec<(&str, &str)> = MCP_POST.to_vec();
    headers.push(("Mcp-Session-Id", &session));
    // A 4 s call; Ctrl-C 1.5 s into it.
    let call = tool_call(2, "slow", json!({"steps": 4, "interval_ms": 1000}));
    conn.send("POST", "/mcp", &headers, call.to_string().as_bytes());
    thread::sleep(Duration::from_millis(1500));
    relay.signal(libc::SIGINT);
    let resp = conn.read_response();
    let got = answer(&resp.messages(), 2);
    assert_eq!(
        got["result"]["content"][0]["text"],
        "done after 4 steps",
        "the call in flight did not get its real answer: {got}\nlog:\n{}",
        relay.log_text()
    );
    // The session is still served while the relay drains (its client's next request, as a
    // balancer keeps sending them here); a new session is not, and /healthz says why.
    let list = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"});
    // (A new connection: a draining relay closes each one after its response.)
    let mut conn = relay.connect();
    conn.set_read_timeout(DEADLINE);
    let resp = conn.request("POST", "/mcp", &headers, list.to_string().as_bytes());
    assert_eq!(resp.status(), 200, "{}", resp.text());
    let mut other = relay.connect();
    other.set_read_timeout(DEADLINE);
    let init = http_support::initialize_request("2025-06-18");
    let resp = other.post_mcp(None, &init);
    assert_eq!(
        resp.status(),
        503,
        "a new session while draining: {}",
        resp.text()
    );
    let mut other = relay.connect();
    other.set_read_timeout(DEADLINE);
    let resp = other.request("GET", "/healthz", &[], b"");
    assert_eq!(resp.status(), 503, "{}", resp.text());
    // Its client ends it (as SDK clients do): nothing is left, and the relay exits.
    let mut delete: Vec<(&str, &str)> = vec![("Mcp-Session-Id", &session)];
    delete.push(("MCP-Protocol-Version", "2025-06-18"));
    let mut conn = relay.connect();
    conn.set_read_timeout(DEADLINE);
    let resp = conn.request("DELETE", "/mcp", &delete, b"");
    assert!(resp.status() < 300, "DELETE: {}", resp.text());
    let status = relay
        .wait_exit(DEADLINE)
        .unwrap_or_else(|| panic!("the relay did not exit; log:\n{}", relay.log_text()));
    assert!(status.success(), "{status:?}; log:\n{}", relay.log_text());
    relay.wait_log("--drain-timeout", DEADLINE);
}

#[test]
fn a_call_cut_off_by_the_drain_timeout_says_the_relay_is_shutting_down() {
    let mut relay = HttpRelay::builder()
        .demo()
        .args(["--drain-timeout", "300ms"])
        .start();
    let mut conn = relay.connect();
    conn.set_read_timeout(DEADLINE);
    let session = open_session(&mut conn, "2025-06-18");
    let mut headers: Vec<(&str, &str)> = MCP_POST.to_vec();
    headers.push(("Mcp-Session-Id", &session));
    let call = tool_call(2, "slow", json!({"steps": 20, "interval_ms": 500}));
    conn.send("POST", "/mcp", &headers, call.to_string().as_bytes());
    thread::sleep(Duration::from_millis(300));
    relay.signal(libc::SIGINT);
    let resp = conn.read_response();
    let got = answer(&resp.messages(), 2);
    let text = got["error"]["message"].as_str().unwrap_or_default();
    assert!(
        text.contains("the relay is shutting down"),
        "the error does not say why: {got}"
    );
    let status = relay.wait_exit(DEADLINE).expect("the relay exits");
    assert!(status.success(), "{status:?}; log:\n{}", relay.log_text());
}

#[test]
fn a_half_closed_tcp_client_gets_its_answers_from_a_slow_starting_server() {
    // The server takes 2 s to start, longer than the stop sequence would give it.
    let wrapper = format!("sleep 2; exec '{}' demo-server", relay_bin().display());
    let relay = Relay::builder()
        .args(["--shutdown-grace", "500ms"])
        .command(["sh", "-c", &wrapper])
        .start();
    let mut client = relay.connect();
    client.set_read_timeout(DEADLINE);
    client.send_json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "nc", "version": "0"}}}));
    client.send_json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    client.send_json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "still here"}}}));
    client.shutdown_write();
    let (lines, _) = client.read_to_close();
    let msgs: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert!(
        answer(&msgs, 1).get("result").is_some(),
        "initialize: {msgs:#?}\nlog:\n{}",
        relay.log_text()
    );
    assert_eq!(
        answer(&msgs, 2)["result"]["content"][0]["text"],
        "still here",
        "log:\n{}",
        relay.log_text()
    );
}

#[test]
fn a_replacement_that_never_comes_up_is_not_announced() {
    let relay = Relay::builder()
        .args(["--restart-delay", "10ms", "--max-restarts", "3"])
        .command(["false"])
        .start();
    let mut client = relay.connect();
    client.set_read_timeout(DEADLINE);
    client.send_json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "0"}}}));
    relay.wait_log("giving up after 3 restarts", DEADLINE);
    client.send_json(&json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}));
    let (lines, _) = client.read_to_close();
    assert!(
        !lines.iter().any(|l| l.contains("serverRestarted")),
        "a restart was announced for a server that never came up: {lines:#?}"
    );
    assert_eq!(
        relay.log_count("the server is back"),
        0,
        "{}",
        relay.log_text()
    );
}

#[test]
fn healthz_and_metrics_count_prespawned_children() {
    let relay = HttpRelay::builder()
        .demo()
        .args(["--prespawn", "2"])
        .start();
    relay.wait_children(2, DEADLINE);
    // Started is not yet running: wait until the relay says both are up.
    let deadline = Instant::now() + DEADLINE;
    let health = loop {
        let mut conn = relay.connect();
        let host = relay.host();
        let resp = conn.request("GET", "/healthz", &[("Host", &host)], b"");
        let health = resp.json();
        if health["children_alive"] == json!(2) || Instant::now() >= deadline {
            break health;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(health["children_alive"], json!(2), "{health}");
    let mut conn = relay.connect();
    let host = relay.host();
    let metrics = conn
        .request("GET", "/metrics", &[("Host", &host)], b"")
        .text();
    assert!(metrics.contains("mcp_relay_children_alive 2"), "{metrics}");
}

#[test]
fn request_timeout_answers_and_progress_keeps_a_call_alive() {
    let relay = HttpRelay::builder()
        .demo()
        .args(["--request-timeout", "800ms"])
        .start();
    let mut conn = relay.connect();
    conn.set_read_timeout(DEADLINE);
    let session = open_session(&mut conn, "2025-06-18");
    // No progress: cut off at 800 ms, with an error that says so.
    let started = Instant::now();
    let call = tool_call(2, "slow", json!({"steps": 5, "interval_ms": 1000}));
    let resp = conn.post_mcp(Some(&session), &call);
    let got = answer(&resp.messages(), 2);
    assert_eq!(got["error"]["code"], json!(-32001), "{got}");
    assert!(
        got["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--request-timeout")),
        "{got}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    relay.wait_log("got no answer within", DEADLINE);
    // Progress every 500 ms: the call runs its 2.5 s and gets its answer.
    let call = tool_call_with_progress(3, "slow", json!({"steps": 5, "interval_ms": 500}), "p");
    let resp = conn.post_mcp(Some(&session), &call);
    let got = answer(&resp.messages(), 3);
    assert_eq!(
        got["result"]["content"][0]["text"], "done after 5 steps",
        "{got}"
    );
}

#[test]
fn orphans_of_a_wrapper_are_reaped_and_none_is_left_defunct() {
    // The wrapper leaves an orphan at once (a subshell's background `sleep`), which the relay
    // adopts as a subreaper.
    let wrapper = format!("(sleep 30 &); exec '{}' demo-server", relay_bin().display());
    let relay = Relay::builder().command(["sh", "-c", &wrapper]).start();
    let mut client = relay.connect();
    client.set_read_timeout(DEADLINE);
    client.initialize();
    // The orphan is the relay's child now, beside the server.
    let deadline = Instant::now() + DEADLINE;
    while relay.children().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the orphan was not adopted: {:#?}",
            relay.children()
        );
        thread::sleep(Duration::from_millis(20));
    }
    drop(client);
    relay.wait_log("session ended", DEADLINE);
    // Its group was killed; what died is reaped within the scan period.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = relay.children();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left under the relay: {left:#?}");
        thread::sleep(Duration::from_millis(50));
    }
    assert!(relay.zombies().is_empty());
}
