//! End to end: the relay bridges a TCP client to its own server process, transparently.

mod common;

use common::{relay_bin, tool_text, Relay, StdioServer, DEADLINE};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::thread;

#[test]
fn initialize_and_echo_round_trip() {
    let relay = Relay::demo();
    let mut c = relay.connect();
    c.send(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"0"}}}"#);
    let init = c.read_json();
    assert_eq!(init["id"], 1, "{init}");
    assert_eq!(
        init["result"]["serverInfo"]["name"], "mcp-relay-demo",
        "{init}"
    );
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18", "{init}");
    c.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    c.send(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello through the relay"}}}"#);
    // The notification has no answer: the next line is the echo's response.
    let resp = c.read_json();
    assert_eq!(resp["id"], 2, "{resp}");
    assert_eq!(tool_text(&resp), "hello through the relay");
    relay.wait_log("server started as", DEADLINE);
    assert_eq!(relay.children().len(), 1);
}

/// A scripted session: each line and how many lines it is answered with.
fn script() -> Vec<(String, usize)> {
    let lines: Vec<(Value, usize)> = vec![
        (
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-03-26", "capabilities": {"sampling": {}},
                "clientInfo": {"name": "e2e", "version": "1"}}}),
            1,
        ),
        (
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            0,
        ),
        (
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
            1,
        ),
        (
            json!({"jsonrpc": "2.0", "id": "three", "method": "tools/call", "params": {
                "name": "echo", "arguments": {"message":
                "unicode é ü 🎉, escapes \" \\ \n \t \u{2028} and \u{0001}"}}}),
            1,
        ),
        (
            json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {
                "name": "add", "arguments": {"a": 2.5, "b": -7}}}),
            1,
        ),
        (
            json!({"jsonrpc": "2.0", "id": 5, "method": "prompts/get", "params": {
                "name": "greet", "arguments": {"name": "Ada"}}}),
            1,
        ),
        (
            json!({"jsonrpc": "2.0", "id": 6, "method": "resources/read", "params": {
                "uri": "demo://readme"}}),
            1,
        ),
        (
            json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
                "name": "log", "arguments": {"level": "warning", "message": "careful"}}}),
            2,
        ),
        (
            json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {
                "name": "flood", "arguments": {"count": 3, "size": 100}}}),
            4,
        ),
        (
            json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {
                "name": "bytes", "arguments": {"n": 5000}}}),
            1,
        ),
        (
            json!({"jsonrpc": "2.0", "id": 10, "method": "no/such/method"}),
            1,
        ),
        (
            json!([{"jsonrpc": "2.0", "id": 11, "method": "ping"},
                   {"jsonrpc": "2.0", "id": 12, "method": "tools/call", "params": {
                       "name": "echo", "arguments": {"message": "in a batch"}}}]),
            1,
        ),
        (
            json!({"jsonrpc": "2.0", "id": 13, "method": "resources/read", "params": {
                "uri": "demo://counter"}}),
            1,
        ),
    ];
    let mut out: Vec<(String, usize)> =
        lines.into_iter().map(|(v, n)| (v.to_string(), n)).collect();
    // Odd but valid input is forwarded as it is: spacing and key order are the client's.
    out.push((
        r#"  { "method" : "ping" , "id" : 14 , "jsonrpc" : "2.0" }  "#.into(),
        1,
    ));
    out
}

#[test]
fn relay_is_byte_for_byte_transparent() {
    let script = script();

    let mut direct = StdioServer::start(relay_bin(), ["demo-server"]);
    let mut expected = Vec::new();
    for (line, answers) in &script {
        direct.send(line);
        for _ in 0..*answers {
            expected.push(direct.read_line());
        }
    }

    let relay = Relay::demo();
    let mut c = relay.connect();
    let mut got = Vec::new();
    for (line, answers) in &script {
        c.send(line);
        for _ in 0..*answers {
            got.push(c.read_line());
        }
    }
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "reply line {i} differs");
    }
    // A sanity check that the comparison is not vacuous.
    assert!(expected.iter().any(|l| l.contains("unicode")));
}

#[test]
fn concurrent_connections_see_only_their_own_traffic() {
    const CONNS: usize = 16;
    const CALLS: usize = 50;
    let relay = Relay::demo();
    let addr = relay.addr;
    let workers: Vec<_> = (0..CONNS)
        .map(|t| {
            thread::spawn(move || {
                let mut c = common::Client::connect(addr);
                c.initialize();
                // The same ids on every connection, distinct payloads: a reply crossing over
                // would carry another connection's payload. Pipelined in two halves, so
                // that requests and replies of all connections interleave in the relay.
                let payload =
                    |i: usize| format!("conn {t} call {i} {}", "x".repeat((t * 37 + i * 11) % 300));
                for half in [0..CALLS / 2, CALLS / 2..CALLS] {
                    for i in half.clone() {
                        c.send_json(&json!({
                            "jsonrpc": "2.0", "id": i, "method": "tools/call",
                            "params": {"name": "echo", "arguments": {"message": payload(i)}},
                        }));
                    }
                    let mut seen = BTreeSet::new();
                    for _ in half.clone() {
                        let resp = c.read_json();
                        let id = resp["id"].as_u64().expect("numeric id") as usize;
                        assert!(half.contains(&id), "conn {t}: unexpected id in {resp}");
                        assert!(seen.insert(id), "conn {t}: id {id} answered twice");
                        assert_eq!(tool_text(&resp), payload(id), "conn {t}: wrong payload");
                    }
                }
                // Nothing else is pending for this connection: a ping is answered next.
                let ping = c.request("ping", json!({}));
                assert_eq!(ping["result"], json!({}));
            })
        })
        .collect();
    let mut failures = Vec::new();
    for (t, w) in workers.into_iter().enumerate() {
        if let Err(e) = w.join() {
            failures.push(format!("connection {t}: {e:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    relay.wait_log_count("session ended", CONNS, DEADLINE);
    relay.wait_children(0, DEADLINE);
}
