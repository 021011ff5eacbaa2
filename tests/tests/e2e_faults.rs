//! End to end: misbehaving or missing servers; the relay keeps serving.

mod common;

use common::{error_code, relay_bin, tool_text, Closed, Relay, DEADLINE};
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn missing_server_command_is_reported_to_each_client() {
    let mut relay = Relay::builder()
        .args(["--shutdown-grace", "300ms"])
        .command(["/nonexistent/server", "--stdio"])
        .start();
    for attempt in 1..=2 {
        let mut c = relay.connect();
        c.send(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"0"}}}"#);
        let resp = c.read_json();
        assert_eq!(resp["id"], 1, "attempt {attempt}: {resp}");
        assert_eq!(error_code(&resp), -32000, "attempt {attempt}: {resp}");
        let message = resp["error"]["message"].as_str().expect("message");
        assert!(
            message.contains("could not start the server"),
            "attempt {attempt}: {message}"
        );
        assert!(message.contains("/nonexistent/server"), "{message}");
        // Nothing will ever answer: the relay closes the connection.
        assert_eq!(c.expect_closed(), Closed::Eof, "attempt {attempt}");
        assert!(relay.is_running(), "the relay died after attempt {attempt}");
    }
    relay.wait_log_count("could not start", 2, DEADLINE);
    relay.wait_log_count("session ended", 2, DEADLINE);
    assert!(relay.is_running());
}

#[test]
fn missing_server_with_a_silent_client_closes_after_the_grace() {
    let mut relay = Relay::builder()
        .args(["--shutdown-grace", "300ms"])
        .command(["/nonexistent/server"])
        .start();
    let mut c = relay.connect();
    let start = Instant::now();
    // A notification asks for no answer; the relay still does not keep the client forever.
    c.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    assert_eq!(c.expect_closed(), Closed::Eof);
    assert!(start.elapsed() < Duration::from_secs(5));
    relay.wait_log("session ended", DEADLINE);
    assert!(relay.is_running());
}

const BATCH: &str = r#"[{"jsonrpc":"2.0","id":"a","method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":7,"method":"tools/list"}]"#;

/// A batch is answered with one array holding an error for each of its requests.
fn assert_batch_of_unavailable(c: &mut common::Client) {
    let line = c.read_line();
    let resp: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    let items = resp
        .as_array()
        .unwrap_or_else(|| panic!("a batch must be answered with an array: {line}"));
    assert_eq!(items.len(), 2, "{resp}");
    assert_eq!(items[0]["id"], "a");
    assert_eq!(items[1]["id"], 7);
    for item in items {
        assert_eq!(error_code(item), -32000, "{item}");
    }
    assert_eq!(c.expect_closed(), Closed::Eof);
}

#[test]
fn missing_server_answers_a_batch_with_a_batch() {
    let relay = Relay::builder().command(["/nonexistent/server"]).start();
    let mut c = relay.connect();
    // Once the relay knows that the server cannot start.
    relay.wait_log("could not start", DEADLINE);
    c.send(BATCH);
    assert_batch_of_unavailable(&mut c);
}

#[test]
fn batch_sent_before_the_spawn_failure_is_answered_with_a_batch() {
    let relay = Relay::builder().command(["/nonexistent/server"]).start();
    let mut c = relay.connect();
    // Before the relay could know: the batch waits for the server, then gets its errors.
    c.send(BATCH);
    assert_batch_of_unavailable(&mut c);
}

#[test]
fn non_json_banner_on_stdout_is_not_forwarded() {
    let relay = Relay::builder()
        .command([
            relay_bin().as_os_str(),
            "demo-server".as_ref(),
            "--banner".as_ref(),
        ])
        .start();
    let mut c = relay.connect();
    // The banner is written before any request; the first line the client sees must be the
    // answer to its first request.
    c.send(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"0"}}}"#);
    let first = c.read_json();
    assert_eq!(first["id"], 1, "{first}");
    assert!(first.get("result").is_some(), "{first}");
    let resp = c.call_tool("echo", json!({"message": "after the banner"}));
    assert_eq!(tool_text(&resp), "after the banner");
    relay.wait_log("not a JSON-RPC message: demo MCP server ready", DEADLINE);
}

#[test]
fn non_json_server_output_mid_session_is_dropped() {
    let relay = Relay::demo();
    let mut c = relay.connect();
    c.initialize();
    c.send(r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"garbage"}}"#);
    // The garbage line comes first on the server's stdout; the client sees only the answer.
    let resp = c.read_json();
    assert_eq!(resp["id"], 5, "{resp}");
    assert_eq!(tool_text(&resp), "wrote a non-JSON line to stdout");
    relay.wait_log("not a JSON-RPC message: this is not json", DEADLINE);
    let resp = c.call_tool("echo", json!({"message": "still here"}));
    assert_eq!(tool_text(&resp), "still here");
}

#[test]
fn server_stderr_goes_to_the_log_not_the_client() {
    let relay = Relay::demo();
    let mut c = relay.connect();
    c.initialize();
    let resp = c.call_tool(
        "stderr",
        json!({"message": "a diagnostic for the operator"}),
    );
    assert_eq!(tool_text(&resp), "written to stderr");
    relay.wait_log("a diagnostic for the operator", DEADLINE);
    let resp = c.request("ping", json!({}));
    assert_eq!(resp["result"], json!({}));
}

#[test]
fn server_writing_stderr_after_startup_survives() {
    let bin = relay_bin().to_str().expect("UTF-8 path").to_owned();
    // The shell writes to stderr only once the client's first line has arrived (long after
    // the relay first looked at the pipe), then becomes the demo server. A shell that writes
    // into a closed pipe dies of SIGPIPE, as most servers not written in Rust would.
    let relay = Relay::builder()
        .command([
            "sh",
            "-c",
            &format!("IFS= read -r first; echo \"late diagnostic: $first\" >&2; exec '{bin}' demo-server"),
        ])
        .start();
    let mut c = relay.connect();
    c.send(r#"{"jsonrpc":"2.0","method":"notifications/hello"}"#);
    // (The command line itself is in the log too: look for what only the shell's echo makes.)
    relay.wait_log(r#"late diagnostic: {"jsonrpc""#, DEADLINE);
    c.initialize();
    let resp = c.call_tool("echo", json!({"message": "alive"}));
    assert_eq!(tool_text(&resp), "alive");
    assert_eq!(
        relay.log_count("killed by signal"),
        0,
        "{}",
        relay.log_text()
    );
}

/// A server that exits at once on every start: restarted with backoff until the budget is
/// spent, then every request gets an error and the connection closes, with one error-level
/// log line saying why; no child is left.
#[test]
fn a_server_that_always_exits_spends_the_restart_budget() {
    let mut relay = Relay::builder()
        .args([
            "--restart-delay",
            "10ms",
            "--max-restarts",
            "2",
            "--restart-window",
            "60s",
            "--shutdown-grace",
            "300ms",
        ])
        .command(["sh", "-c", "exit 3"])
        .start();
    let mut c = relay.connect();
    c.send(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
    // The request gets the relay's answer (its server died under it); each replacement is
    // announced; once the budget is spent the relay closes the connection.
    let (lines, closed) = c.read_to_close();
    assert_eq!(closed, Closed::Eof, "{lines:?}");
    let msgs: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let answers: Vec<&serde_json::Value> = msgs.iter().filter(|m| m["id"] == 1).collect();
    assert_eq!(answers.len(), 1, "exactly one answer: {lines:?}");
    let code = error_code(answers[0]);
    assert!(code == -32000 || code == -32003, "{}", answers[0]);
    let message = answers[0]["error"]["message"].as_str().expect("message");
    assert!(message.starts_with("mcp-relay:"), "{message}");
    for m in msgs.iter().filter(|m| m["id"] != 1) {
        assert_eq!(m["method"], "$/mcp/serverRestarted", "{m}");
    }
    let line = relay.wait_log("giving up after 2 restarts", DEADLINE);
    assert!(line.contains("ERROR"), "{line}");
    assert_eq!(relay.log_count("restarting it in"), 2);
    relay.wait_children(0, DEADLINE);
    assert!(relay.is_running());
}
