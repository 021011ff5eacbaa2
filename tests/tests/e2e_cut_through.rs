//! End to end: a long message is forwarded as it arrives (cut-through), both ways over TCP,
//! and one that turns out bad after its start was forwarded is cut short at the receiver,
//! with the same answer to the client as before and nothing stray after it.
//!
//! The server is a small Python script that reads its stdin in raw chunks, so that it can say
//! (with a notification) when it holds part of a line that has not ended yet, and can write
//! the start of a long response and finish it only when told.

mod common;

use common::{error_code, Relay, DEADLINE};
use serde_json::{json, Value};
use std::io::Read;
use std::time::Instant;

const SERVER: &str = r#"
import json, os, sys
out = sys.stdout
def send(obj):
    out.write(json.dumps(obj) + "\n"); out.flush()
buf = b""
told = False
waiting = None  # the id of a long response whose end waits for "go"
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    buf += chunk
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        told = False
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
        except Exception:
            send({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "server parse error"}})
            continue
        method = msg.get("method")
        if method == "initialize":
            send({"jsonrpc": "2.0", "id": msg["id"], "result": {"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {}, "serverInfo": {"name": "chunky", "version": "1"}}})
        elif method == "echo":
            send({"jsonrpc": "2.0", "id": msg["id"], "result": {"len": len(msg["params"]["data"])}})
        elif method == "big":
            out.write('{"jsonrpc":"2.0","id":%s,"result":{"data":"' % json.dumps(msg["id"]))
            out.write("y" * msg["params"]["size"]); out.flush()
            waiting = msg["id"]
        elif method == "go" and waiting is not None:
            out.write('"}}\n'); out.flush()
            waiting = None
    if len(buf) >= 256 * 1024 and not told:
        told = True
        send({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "partial"}})
"#;

fn relay(extra: &[&str]) -> Relay {
    Relay::builder()
        .args(extra.iter().copied())
        .command(["python3", "-c", SERVER])
        .start()
}

fn is_partial_notice(v: &Value) -> bool {
    v["method"] == "notifications/message" && v["params"]["data"] == "partial"
}

/// The next message that is not the server's "I hold part of a line" notice.
fn next_answer(c: &mut common::Client) -> Value {
    loop {
        let v = c.read_json();
        if !is_partial_notice(&v) {
            return v;
        }
    }
}

fn start_of_line(id: u64) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"echo","params":{{"data":""#)
}

#[test]
fn a_long_request_reaches_the_server_before_it_ends() {
    let relay = relay(&[]);
    let mut c = relay.connect();
    c.initialize();
    let fill = "x".repeat(512 * 1024);
    c.send_raw(format!("{}{fill}", start_of_line(1)).as_bytes());
    // The server says it holds part of the line: the relay did not wait for its end.
    let notice = c.read_json();
    assert!(is_partial_notice(&notice), "{notice}");
    c.send_raw(b"\"}}\n");
    let resp = next_answer(&mut c);
    assert_eq!(resp["id"], 1, "{resp}");
    assert_eq!(resp["result"]["len"], fill.len(), "{resp}");
}

#[test]
fn a_long_response_reaches_the_client_before_it_ends() {
    let relay = relay(&[]);
    let mut c = relay.connect();
    c.initialize();
    let size = 512 * 1024;
    c.send_json(&json!({"jsonrpc": "2.0", "id": 2, "method": "big", "params": {"size": size}}));
    // Read the start of the response: it arrives while the server has not finished it.
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // Raw reads: the client's line reader would wait for the newline.
    let mut raw = c.stream().try_clone().expect("clone");
    while got.len() < 256 * 1024 {
        assert!(start.elapsed() < DEADLINE, "only {} bytes came", got.len());
        let n = raw.read(&mut buf).expect("read");
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        !got.contains(&b'\n'),
        "the line ended before the server finished it"
    );
    assert!(got.starts_with(br#"{"jsonrpc":"2.0","id":2,"result":{"data":"yyy"#));
    c.send_json(&json!({"jsonrpc": "2.0", "method": "go"}));
    // The rest, up to and with its newline.
    while !got.ends_with(b"\n") {
        assert!(start.elapsed() < DEADLINE, "the end never came");
        let n = raw.read(&mut buf).expect("read");
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    let resp: Value = serde_json::from_slice(&got).expect("one whole JSON line");
    assert_eq!(resp["id"], 2);
    assert_eq!(resp["result"]["data"].as_str().map(str::len), Some(size));
    // The session goes on.
    c.send(&format!("{}short\"}}}}", start_of_line(3)));
    let resp = next_answer(&mut c);
    assert_eq!(resp["result"]["len"], 5, "{resp}");
}

#[test]
fn a_long_request_that_turns_out_invalid_is_cut_short_and_answered_once() {
    let relay = relay(&[]);
    let mut c = relay.connect();
    c.initialize();
    let fill = "x".repeat(512 * 1024);
    // Forwarded as it came, then its end makes it invalid JSON.
    c.send_raw(format!("{}{fill}\"}}}}}}}}\n", start_of_line(4)).as_bytes());
    let resp = next_answer(&mut c);
    assert_eq!(error_code(&resp), -32700, "{resp}");
    assert_eq!(resp["id"], Value::Null, "{resp}");
    assert!(
        resp["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("mcp-relay:")),
        "the relay's own error, not the server's: {resp}"
    );
    // The server's answer to the line it got cut short is not passed on: the next answer is
    // the next request's.
    c.send(&format!("{}after\"}}}}", start_of_line(5)));
    let resp = next_answer(&mut c);
    assert_eq!(resp["id"], 5, "{resp}");
    assert_eq!(resp["result"]["len"], 5, "{resp}");
    relay.wait_log("cut short", DEADLINE);
}

#[test]
fn a_long_request_over_the_limit_after_its_start_went_gets_the_size_error() {
    let relay = relay(&["--max-message-size", "1MiB"]);
    let mut c = relay.connect();
    c.initialize();
    let fill = "x".repeat(2 * 1024 * 1024);
    c.send_raw(format!("{}{fill}\"}}}}\n", start_of_line(6)).as_bytes());
    let resp = next_answer(&mut c);
    assert_eq!(resp["id"], 6, "{resp}");
    assert_eq!(error_code(&resp), -32600, "{resp}");
    c.send(&format!("{}after\"}}}}", start_of_line(7)));
    let resp = next_answer(&mut c);
    assert_eq!(resp["id"], 7, "{resp}");
    assert_eq!(resp["result"]["len"], 5, "{resp}");
}
