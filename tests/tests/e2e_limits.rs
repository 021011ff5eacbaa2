//! End to end: bad input, size limits and backpressure; the session survives each of them.

mod common;

use common::{bytes_written, error_code, tool_text, Relay, DEADLINE};
use serde_json::{json, Value};
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn non_json_client_line_gets_a_parse_error_and_the_session_continues() {
    let relay = Relay::demo();
    let mut c = relay.connect();
    c.initialize();
    c.send("this is not json {");
    let resp = c.read_json();
    assert_eq!(error_code(&resp), -32700, "{resp}");
    assert_eq!(resp["id"], Value::Null, "{resp}");
    assert!(
        resp.as_object().is_some_and(|o| o.contains_key("id")),
        "{resp}"
    );
    // Valid JSON that is no JSON-RPC message.
    c.send("42");
    let resp = c.read_json();
    assert_eq!(error_code(&resp), -32600, "{resp}");
    // Invalid UTF-8.
    c.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"\xff\xfe\"}\n");
    let resp = c.read_json();
    assert_eq!(error_code(&resp), -32700, "{resp}");
    let resp = c.call_tool("echo", json!({"message": "still fine"}));
    assert_eq!(tool_text(&resp), "still fine");
}

#[test]
fn oversize_client_line_is_refused_with_its_id_and_the_session_continues() {
    let relay = Relay::builder()
        .demo()
        .args(["--max-message-size", "1KiB"])
        .start();
    let mut c = relay.connect();
    c.initialize();
    let big = "x".repeat(2000);
    // The id before the payload, and (next) after it: the relay finds it either way.
    c.send_json(&json!({"jsonrpc": "2.0", "id": 77, "method": "tools/call",
                        "params": {"name": "echo", "arguments": {"message": big}}}));
    let resp = c.read_json();
    assert_eq!(resp["id"], 77, "{resp}");
    assert_eq!(error_code(&resp), -32600, "{resp}");
    let message = resp["error"]["message"].as_str().expect("message");
    assert!(message.contains("1024"), "{message}");
    c.send(&format!(
        r#"{{"jsonrpc":"2.0","method":"tools/call","params":{{"name":"echo","arguments":{{"message":"{big}"}}}},"id":"late-id"}}"#
    ));
    let resp = c.read_json();
    assert_eq!(resp["id"], "late-id", "{resp}");
    assert_eq!(error_code(&resp), -32600, "{resp}");
    // Exactly at the limit is accepted (1024 bytes without the newline).
    let prefix = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","arguments":{"message":""#;
    let suffix = r#""}}}"#;
    let fill = "y".repeat(1024 - prefix.len() - suffix.len());
    let line = format!("{prefix}{fill}{suffix}");
    assert_eq!(line.len(), 1024);
    c.send(&line);
    let resp = c.read_json();
    assert_eq!(resp["id"], 5, "{resp}");
    assert_eq!(tool_text(&resp), fill);
    let resp = c.call_tool("echo", json!({"message": "after the big one"}));
    assert_eq!(tool_text(&resp), "after the big one");
    relay.wait_log("dropped a", DEADLINE);
}

#[test]
fn oversize_server_response_becomes_an_error_for_its_id() {
    let relay = Relay::builder()
        .demo()
        .args(["--max-message-size", "2KiB"])
        .start();
    let mut c = relay.connect();
    c.initialize();
    c.send(r#"{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"name":"bytes","arguments":{"n":4096}}}"#);
    let resp = c.read_json();
    assert_eq!(resp["id"], 41, "{resp}");
    assert_eq!(error_code(&resp), -32001, "{resp}");
    // Below the limit still passes, and the session goes on.
    let resp = c.call_tool("bytes", json!({"n": 1500}));
    assert_eq!(tool_text(&resp).len(), 1500);
    let resp = c.call_tool("echo", json!({"message": "after the big one"}));
    assert_eq!(tool_text(&resp), "after the big one");
}

#[test]
fn slow_reader_backpressure_keeps_the_relay_small() {
    const COUNT: usize = 2000;
    const SIZE: usize = 64 * 1024;
    const RSS_LIMIT_KIB: u64 = 64 * 1024;
    let relay = Relay::demo();
    let mut c = relay.connect();
    c.initialize();
    let child = relay.wait_children(1, DEADLINE).remove(0);
    let base_rss = relay.rss_kib();
    // 128 MiB of notifications, far more than the relay's queue (4 MiB by default), the
    // pipe and both sockets' buffers can hold; the client reads nothing for now.
    c.send_json(
        &json!({"jsonrpc": "2.0", "id": "flood", "method": "tools/call",
                        "params": {"name": "flood", "arguments": {"count": COUNT, "size": SIZE}}}),
    );

    // Wait for the server to be blocked: what it has written stops growing, short of all.
    let total = (COUNT * SIZE) as u64;
    let start = Instant::now();
    let mut last = (0, Instant::now());
    let mut max_rss = base_rss;
    loop {
        let written = bytes_written(child.pid).expect("the server's /proc/<pid>/io");
        max_rss = max_rss.max(relay.rss_kib());
        if written != last.0 {
            last = (written, Instant::now());
        } else if written > 0 && last.1.elapsed() > Duration::from_millis(500) {
            break;
        }
        assert!(
            written < total,
            "the server wrote everything: nothing held it back"
        );
        assert!(
            start.elapsed() < DEADLINE,
            "the server never stalled ({written} bytes written)"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let stalled_at = last.0;
    eprintln!(
        "backpressure: server stalled after {stalled_at} bytes; relay RSS {base_rss} KiB at start"
    );
    // Held back, and stays held back while the relay's memory stays bounded. (Equality
    // would be too strict on a loaded machine: a stall may have been a scheduling pause.)
    for _ in 0..10 {
        max_rss = max_rss.max(relay.rss_kib());
        thread::sleep(Duration::from_millis(20));
    }
    let written = bytes_written(child.pid).expect("the server's /proc/<pid>/io");
    assert!(
        written < total / 2,
        "{written} bytes got through to a client that reads nothing"
    );
    assert!(
        max_rss < RSS_LIMIT_KIB,
        "the relay grew to {max_rss} KiB (from {base_rss} KiB) with a slow reader"
    );
    assert!(
        stalled_at < total / 2,
        "{stalled_at} bytes got through before the server was held back"
    );

    // Now read everything: every notification, in order, then the result.
    c.set_read_timeout(DEADLINE);
    let expected_data = "abcdefghijklmnopqrstuvwxyz0123456789"
        .chars()
        .cycle()
        .take(SIZE)
        .collect::<String>();
    let expected_line = json!({"jsonrpc": "2.0", "method": "notifications/message",
                               "params": {"level": "info", "logger": "demo", "data": expected_data}})
    .to_string();
    for i in 0..COUNT {
        let line = c.read_line();
        if line != expected_line {
            panic!(
                "notification {i} differs: {}…",
                &line[..line.len().min(200)]
            );
        }
        if i % 256 == 0 {
            max_rss = max_rss.max(relay.rss_kib());
        }
    }
    let resp = c.read_json();
    assert_eq!(resp["id"], "flood", "{resp}");
    assert_eq!(
        tool_text(&resp),
        format!("sent {COUNT} notifications of {SIZE} bytes")
    );
    eprintln!("backpressure: relay RSS peaked at {max_rss} KiB");
    assert!(max_rss < RSS_LIMIT_KIB, "the relay grew to {max_rss} KiB");
    let resp = c.call_tool("echo", json!({"message": "done"}));
    assert_eq!(tool_text(&resp), "done");
}
