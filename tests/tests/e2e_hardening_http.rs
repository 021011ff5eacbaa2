//! End to end, issue 9's HTTP items: a refused request costs no buffer, a half-closed client
//! still gets its answer, `Expect: 100-continue` is honoured, and host names and the auth
//! scheme are compared as the RFCs say (case-insensitively).

mod http_support;

use http_support::{
    head_of, initialize_request, open_session, rss_kib, tool_call, tool_text, HttpRelay, MCP_POST,
};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

#[test]
fn a_request_without_its_token_is_refused_before_its_body_is_read() {
    const CONNS: usize = 40;
    let relay = HttpRelay::builder()
        .demo()
        .args(["--auth-token", "s3cret-token"])
        .start();
    let base = rss_kib(relay.pid());
    let declared = 16 * 1024 * 1024 - 1024;
    let sent = 15 * 1024 * 1024;
    let chunk = vec![b'x'; 1 << 20];
    let mut streams = Vec::new();
    let mut peak = base;
    for _ in 0..CONNS {
        let mut s = TcpStream::connect(relay.addr).expect("connect");
        let head = format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {declared}\r\n\r\n",
            relay.addr
        );
        s.write_all(head.as_bytes()).expect("head");
        // The answer comes on the head alone.
        let answer = head_of(&s, Duration::from_secs(5)).expect("an answer to the head");
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        let mut left = sent;
        while left > 0 {
            let n = left.min(chunk.len());
            if s.write_all(&chunk[..n]).is_err() {
                break;
            }
            left -= n;
        }
        peak = peak.max(rss_kib(relay.pid()));
        streams.push(s);
    }
    eprintln!("unauthenticated bodies: relay RSS {base} -> peak {peak} KiB");
    assert!(
        peak < base + 16 * 1024,
        "the relay grew from {base} to {peak} KiB holding bodies it refused"
    );
    drop(streams);
    // The relay still serves a client with the token.
    let mut c = relay.connect();
    let mut headers = MCP_POST.to_vec();
    headers.push(("Authorization", "Bearer s3cret-token"));
    let resp = c.request(
        "POST",
        "/mcp",
        &headers,
        initialize_request("2025-06-18").to_string().as_bytes(),
    );
    assert_eq!(resp.status(), 200, "{resp:?}");
}

#[test]
fn a_client_that_half_closes_after_its_post_gets_the_answer() {
    let relay = HttpRelay::demo();
    let mut setup = relay.connect();
    let session = open_session(&mut setup, "2025-06-18");
    for i in 0..20 {
        let mut s = TcpStream::connect(relay.addr).expect("connect");
        let body = tool_call(i, "echo", json!({"message": format!("half-closed {i}")})).to_string();
        let req = format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nMcp-Session-Id: {session}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            relay.addr,
            body.len()
        );
        s.write_all(req.as_bytes()).expect("request");
        s.shutdown(Shutdown::Write).expect("half-close");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut all = Vec::new();
        s.read_to_end(&mut all).expect("the answer, then the end");
        let text = String::from_utf8_lossy(&all);
        assert!(text.starts_with("HTTP/1.1 200"), "call {i}: {text}");
        assert!(
            text.contains(&format!("half-closed {i}")),
            "call {i}: {text}"
        );
    }
}

#[test]
fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let relay = HttpRelay::demo();
    let body = initialize_request("2025-06-18").to_string();
    let mut s = TcpStream::connect(relay.addr).expect("connect");
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nExpect: 100-continue\r\n\
         Content-Length: {}\r\n\r\n",
        relay.addr,
        body.len()
    );
    s.write_all(head.as_bytes()).expect("head");
    let started = Instant::now();
    let interim = head_of(&s, Duration::from_secs(5)).expect("100 Continue");
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    assert!(started.elapsed() < Duration::from_millis(900));
    s.write_all(body.as_bytes()).expect("body");
    let answer = head_of(&s, Duration::from_secs(5)).expect("the answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn host_names_and_the_auth_scheme_are_case_insensitive() {
    let relay = HttpRelay::builder()
        .demo()
        .args(["--auth-token", "CaseMatters"])
        .start();
    let host = format!("LOCALHOST:{}", relay.addr.port());
    let body = initialize_request("2025-06-18").to_string();
    for auth in [
        "BEARER CaseMatters",
        "bearer CaseMatters",
        "Bearer CaseMatters",
    ] {
        let mut c = relay.connect();
        let mut headers = MCP_POST.to_vec();
        headers.push(("Host", &host));
        headers.push(("Authorization", auth));
        let resp = c.request("POST", "/mcp", &headers, body.as_bytes());
        assert_eq!(resp.status(), 200, "{auth}: {resp:?}");
    }
    // The token itself is not.
    let mut c = relay.connect();
    let mut headers = MCP_POST.to_vec();
    headers.push(("Authorization", "Bearer casematters"));
    let resp = c.request("POST", "/mcp", &headers, body.as_bytes());
    assert_eq!(resp.status(), 401, "{resp:?}");
    // And the session still works end to end.
    let mut c = relay.connect();
    let mut headers = MCP_POST.to_vec();
    headers.push(("Authorization", "Bearer CaseMatters"));
    let resp = c.request("POST", "/mcp", &headers, body.as_bytes());
    let session = resp.header("mcp-session-id").expect("a session").to_owned();
    headers.push(("Mcp-Session-Id", &session));
    let call = tool_call(7, "echo", json!({"message": "still here"})).to_string();
    let resp = c.request("POST", "/mcp", &headers, call.as_bytes());
    let msg = resp.messages().pop().expect("an answer");
    assert_eq!(tool_text(&msg), "still here");
}
