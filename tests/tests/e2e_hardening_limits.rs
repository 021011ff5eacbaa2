//! End to end, issue 9 item 3: the caps a hostile or careless client meets over TCP —
//! `--max-sessions` (shared with HTTP), `--max-connections`, `--idle-timeout` — each with an
//! answer the client can read before the connection closes.

mod common;
mod http_support;

use common::{error_code, tool_text, Client, Relay};
use serde_json::{json, Value};
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn a_tcp_client_past_max_sessions_is_told_and_closed() {
    let relay = Relay::builder()
        .demo()
        .args(["--max-sessions", "2"])
        .start();
    let mut a = relay.connect();
    a.initialize();
    let mut b = relay.connect();
    b.initialize();
    let mut c = relay.connect();
    let (lines, _) = c.read_to_close();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let err: Value = serde_json::from_str(&lines[0]).expect("a JSON-RPC error line");
    assert_eq!(error_code(&err), -32000, "{err}");
    let text = err["error"]["message"].as_str().unwrap_or_default();
    assert!(text.contains("--max-sessions"), "{text}");
    // The two sessions are untouched, and a place frees up when one leaves.
    let resp = a.call_tool("echo", json!({"message": "a"}));
    assert_eq!(tool_text(&resp), "a");
    drop(b);
    relay.wait_log_count("session ended", 1, Duration::from_secs(10));
    let mut d = relay.connect();
    d.initialize();
    let resp = d.call_tool("echo", json!({"message": "d"}));
    assert_eq!(tool_text(&resp), "d");
}

#[test]
fn an_http_connection_past_max_connections_gets_503_and_is_closed() {
    let relay = http_support::HttpRelay::builder()
        .demo()
        .args(["--max-connections", "2"])
        .start();
    let _a = TcpStream::connect(relay.addr).expect("connect");
    let _b = TcpStream::connect(relay.addr).expect("connect");
    let mut c = TcpStream::connect(relay.addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut all = Vec::new();
    c.read_to_end(&mut all).expect("an answer, then the end");
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("Retry-After:"), "{text}");
    assert!(text.contains("--max-connections"), "{text}");
    // Once one leaves, a client is served again.
    drop(_a);
    let started = Instant::now();
    loop {
        let mut conn = relay.connect();
        let resp = conn.request("GET", "/healthz", &[], b"");
        if resp.status() == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still refused: {resp:?}"
        );
    }
}

#[test]
fn an_idle_tcp_client_is_closed_but_a_long_call_is_not_cut() {
    let relay = Relay::builder()
        .demo()
        .args(["--idle-timeout", "700ms"])
        .start();
    // A call longer than the idle timeout is not idleness.
    let mut busy = relay.connect();
    busy.initialize();
    let resp = busy.call_tool("slow", json!({"steps": 3, "interval_ms": 400}));
    assert!(resp.get("result").is_some(), "{resp}");
    // Then silence is.
    let started = Instant::now();
    let mut idle: Client = relay.connect();
    idle.set_read_timeout(Duration::from_secs(10));
    idle.initialize();
    let (lines, _) = idle.read_to_close();
    let after = started.elapsed();
    assert!(lines.is_empty(), "{lines:?}");
    assert!(
        after >= Duration::from_millis(700) && after < Duration::from_secs(5),
        "closed after {after:?}"
    );
    relay.wait_log("--idle-timeout", Duration::from_secs(5));
}

#[test]
fn the_default_max_connections_fits_the_descriptor_limit() {
    // (128 - 32) / 3 = 32 connections for a relay allowed 128 descriptors.
    let relay = Relay::builder().demo().nofile_limit(128).start();
    relay.wait_log("at most 32 connections at once", Duration::from_secs(10));
    let mut clients: Vec<TcpStream> = Vec::new();
    for _ in 0..32 {
        clients.push(TcpStream::connect(relay.addr).expect("connect"));
    }
    relay.wait_log_count("accepted from", 32, Duration::from_secs(20));
    let mut past = Client::connect(relay.addr);
    let (lines, _) = past.read_to_close();
    assert!(
        lines
            .first()
            .is_some_and(|l| l.contains("--max-connections")),
        "{lines:?}"
    );
}
