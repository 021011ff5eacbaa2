//! The relay's HTTP listener byte for byte: raw HTTP/1.1 over `std::net::TcpStream` against
//! `mcp-relay --listen http://127.0.0.1:0 --demo`, no SDK needed.
//!
//! What each status code means follows the MCP transports specification (2025-03-26 …
//! 2025-11-25, basic/transports: "Streamable HTTP", "Session Management", "Resumability and
//! Redelivery", "Security Warning", and the 2024-11-05 "HTTP with SSE" transport) and
//! RFC 9110 for the generic ones (405 with Allow, 406, 408, 413, 415, 431, 401 with
//! WWW-Authenticate).
//!
//! No sleep is used to synchronise: every wait is for a response, an event, a log line or a
//! process, with a deadline. Only where a timeout is the thing under test (--header-timeout,
//! --session-timeout) does the test measure time.

mod http_support;

use http_support::{
    environ, open_session, read_proc, tool_call, tool_call_with_progress, tool_text, Conn,
    HttpRelay, DEADLINE, MCP_POST,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const V_2025_11_25: &str = "2025-11-25";
const V_2025_06_18: &str = "2025-06-18";

fn initialized() -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
}

fn assert_json_error(resp: &http_support::Response, status: u16, code: i64) {
    assert_eq!(resp.status(), status, "{resp:?}\n{}", resp.text());
    assert!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "an error answer has a JSON body: {resp:?}"
    );
    assert_eq!(resp.error_code(), code, "{}", resp.text());
    let message = resp.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        message.starts_with("mcp-relay:"),
        "errors the relay makes up say so: {message:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Status codes for bad input
// ---------------------------------------------------------------------------------------

#[test]
fn unknown_path_is_404() {
    let relay = HttpRelay::demo();
    let mut conn = relay.connect();
    let resp = conn.request("GET", "/nope", &[], b"");
    assert_json_error(&resp, 404, -32600);
    assert!(
        resp.text().contains("/mcp"),
        "says where MCP is: {}",
        resp.text()
    );
    // The connection goes on (keep-alive) after an error of the request, not the framing.
    let resp = conn.request("POST", "/mcp/extra", &MCP_POST, b"{}");
    assert_eq!(resp.status(), 404, "{resp:?}");
}

#[test]
fn wrong_method_is_405_with_allow() {
    let relay = HttpRelay::demo();
    let mut conn = relay.connect();
    let resp = conn.request("PUT", "/mcp", &MCP_POST, b"{}");
    assert_json_error(&resp, 405, -32600);
    let allow = resp
        .header("allow")
        .expect("405 carries Allow (RFC 9110 15.5.6)");
    for m in ["GET", "POST", "DELETE"] {
        assert!(allow.contains(m), "Allow: {allow} lacks {m}");
    }
    let resp = conn.request("POST", "/sse", &MCP_POST, b"{}");
    assert_eq!(resp.status(), 405, "{resp:?}");
    assert!(
        resp.header("allow").is_some_and(|a| a.contains("GET")),
        "{resp:?}"
    );
    let resp = conn.request("GET", "/messages?sessionId=x", &[], b"");
    assert_eq!(resp.status(), 405, "{resp:?}");
    assert!(
        resp.header("allow").is_some_and(|a| a.contains("POST")),
        "{resp:?}"
    );
}

#[test]
fn post_without_both_accept_types_is_406() {
    let relay = HttpRelay::demo();
    let mut conn = relay.connect();
    let body = http_support::initialize_request(V_2025_11_25).to_string();
    // Streamable HTTP: "The client MUST include an Accept header, listing both
    // application/json and text/event-stream".
    for accept in [None, Some("application/json"), Some("text/event-stream")] {
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = accept {
            headers.push(("Accept", a));
        }
        let resp = conn.request("POST", "/mcp", &headers, body.as_bytes());
        assert_json_error(&resp, 406, -32600);
    }
    assert!(relay.live_children().is_empty(), "no session was made");
    // GET without text/event-stream.
    let id = open_session(&mut conn, V_2025_11_25);
    let resp = conn.request(
        "GET",
        "/mcp",
        &[("Accept", "application/json"), ("Mcp-Session-Id", &id)],
        b"",
    );
    assert_json_error(&resp, 406, -32600);
}

#[test]
fn post_with_wrong_content_type_is_415() {
    let relay = HttpRelay::demo();
    let mut conn = relay.connect();
    let body = http_support::initialize_request(V_2025_11_25).to_string();
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let resp = conn.request(
            "POST",
            "/mcp",
            &[
                ("Content-Type", ct),
                ("Accept", "application/json, text/event-stream"),
            ],
            body.as_bytes(),
        );
        assert_json_error(&resp, 415, -32600);
    }
    // Parameters of the media type are fine.
    let resp = conn.request(
        "POST",
        "/mcp",
        &[
            ("Content-Type", "application/json; charset=utf-8"),
            ("Accept", "application/json, text/event-stream"),
        ],
        body.as_bytes(),
    );
    assert_eq!(resp.status(), 200, "{resp:?}");
}

#[test]
fn malformed_json_is_400_with_a_parse_error() {
    let relay = HttpRelay::demo();
    let mut conn = relay.connect();
    let resp = conn.request("POST", "/mcp", &MCP_POST, br#"{"jsonrpc": "2.0", "id": 1,"#);
    assert_json_error(&resp, 400, -32700);
    assert!(resp.json()["id"].is_null(), "{}", resp.text());
    // JSON that is no JSON-RPC message: invalid request.
    let resp = conn.request("POST", "/mcp", &MCP_POST, br#"{"hello": "world"}"#);
    assert_json_error(&resp, 400, -32600);
    assert!(relay.live_children().is_empty(), "no session was made");
}

#[test]
fn request_without_a_session_is_400_and_an_unknown_session_404() {
    let relay = HttpRelay::demo();
    let mut conn = relay.connect();
    let id = open_session(&mut conn, V_2025_11_25);
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    // "Servers that require a session ID SHOULD respond to requests without an
    // Mcp-Session-Id header (other than initialization) with HTTP 400 Bad Request."
    let resp = conn.post_mcp(None, &list);
    assert_json_error(&resp, 400, -32600);
    // "…MUST respond to requests containing [a terminated or unknown] session ID with HTTP
    // 404 Not Found" (the client then starts a new session).
    let resp = conn.post_mcp(Some("0123456789abcdef0123456789abcdef"), &list);
    assert_json_error(&resp, 404, -32600);
    let resp = conn.request(
        "GET",
        "/mcp",
        &[
            ("Accept", "text/event-stream"),
            ("Mcp-Session-Id", "0123456789abcdef0123456789abcdef"),
        ],
        b"",
    );
    assert_eq!(resp.status(), 404, "{resp:?}");
    let resp = conn.request("DELETE", "/mcp", &[("Mcp-Session-Id", "nope")], b"");
    assert_eq!(resp.status(), 404, "{resp:?}");
    // The real session still works.
    let resp = conn.post_mcp(Some(&id), &list);
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert!(
        resp.messages()[0]["result"]["tools"].is_array(),
        "{}",
        resp.text()
    );
}

#[test]
fn unsupported_protocol_version_header_is_400() {
    let relay = HttpRelay::demo();
    let mut conn = relay.connect();
    let id = open_session(&mut conn, V_2025_11_25);
    let body = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();
    let mut headers = MCP_POST.to_vec();
    headers.push(("Mcp-Session-Id", &id));
    headers.push(("MCP-Protocol-Version", "1999-01-01"));
    let resp = conn.request("POST", "/mcp", &headers, body.as_bytes());
    // "If the server receives a request with an invalid or unsupported
    // MCP-Protocol-Version, it MUST respond with 400 Bad Request" (2025-06-18); 2026-07-28
    // names the JSON-RPC code, -32022, with the supported versions in its data.
    assert_eq!(resp.status(), 400, "{resp:?}");
    let code = resp.error_code();
    assert!(code == -32600 || code == -32022, "{}", resp.text());
    headers.pop();
    headers.push(("MCP-Protocol-Version", V_2025_11_25));
    let resp = conn.request("POST", "/mcp", &headers, body.as_bytes());
    assert_eq!(resp.status(), 200, "{resp:?}");
}

#[test]
fn body_over_max_message_size_is_413() {
    let relay = HttpRelay::builder()
        .demo()
        .args(["--max-message-size", "1KiB"])
        .start();
    // Declared too long: answered from the head alone, and the connection closes.
    let mut conn = relay.connect();
    conn.send_raw(
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 4096\r\n\r\n",
            relay.host()
        )
        .as_bytes(),
    );
    let resp = conn.read_response();
    assert_json_error(&resp, 413, -32600);
    assert!(
        resp.text().contains("--max-message-size"),
        "{}",
        resp.text()
    );
    assert!(
        conn.closed_within(DEADLINE),
        "the connection closes after a 413"
    );
    // Chunked, growing past the limit.
    let mut conn = relay.connect();
    let chunk = "x".repeat(600);
    conn.send_raw(
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n",
            relay.host()
        )
        .as_bytes(),
    );
    let resp = conn.read_response();
    assert_json_error(&resp, 413, -32600);
    // Just under the limit is fine.
    let mut conn = relay.connect();
    let mut init = http_support::initialize_request(V_2025_11_25);
    init["params"]["clientInfo"]["name"] = json!("y".repeat(700));
    assert!(init.to_string().len() < 1024);
    let resp = conn.post_mcp(None, &init);
    assert_eq!(resp.status(), 200, "{resp:?}");
}

#[test]
fn huge_request_head_is_431() {
    let relay = HttpRelay::demo();
    let mut conn = relay.connect();
    let big = "a".repeat(20 * 1024);
    conn.send_raw(
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nX-Big: {big}\r\nContent-Type: application/json\r\n\r\n",
            relay.host()
        )
        .as_bytes(),
    );
    let resp = conn.read_response();
    assert_eq!(resp.status(), 431, "{resp:?}");
    assert!(
        conn.closed_within(DEADLINE),
        "the connection closes after a 431"
    );
    // Too many header lines, too.
    let mut conn = relay.connect();
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    conn.send_raw(
        format!(
            "GET /healthz HTTP/1.1\r\nHost: {}\r\n{many}\r\n",
            relay.host()
        )
        .as_bytes(),
    );
    assert_eq!(conn.read_response().status(), 431);
}

#[test]
fn unparseable_request_is_400_and_closes_the_connection() {
    let relay = HttpRelay::demo();
    for raw in [
        "\u{1}not http at all\r\n\r\n".to_owned(),
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Length: abc\r\n\r\n",
            relay.host()
        ),
    ] {
        let mut conn = relay.connect();
        conn.send_raw(raw.as_bytes());
        let resp = conn.read_response();
        assert_eq!(resp.status(), 400, "{raw:?}: {resp:?}");
        assert_eq!(resp.error_code(), -32600, "{}", resp.text());
        assert!(
            conn.closed_within(DEADLINE),
            "{raw:?}: the connection closes"
        );
    }
}

#[test]
fn slow_request_head_is_408() {
    let relay = HttpRelay::builder()
        .demo()
        .args(["--header-timeout", "300ms"])
        .start();
    let mut conn = relay.connect();
    let start = Instant::now();
    conn.send_raw(
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: app",
            relay.host()
        )
        .as_bytes(),
    );
    let resp = conn.read_response();
    let took = start.elapsed();
    assert_json_error(&resp, 408, -32600);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "408 after {took:?}, with --header-timeout 300ms"
    );
    assert!(
        conn.closed_within(DEADLINE),
        "the connection closes after a 408"
    );
}

#[test]
fn foreign_origin_is_403() {
    let relay = HttpRelay::demo();
    let mut conn = relay.connect();
    let body = http_support::initialize_request(V_2025_11_25).to_string();
    // "Servers MUST validate the Origin header on all incoming connections to prevent DNS
    // rebinding attacks"; 2025-11-25: "If the Origin header is present and invalid, servers
    // MUST respond with HTTP 403 Forbidden."
    for origin in [
        "http://evil.example",
        "http://localhost.evil.example",
        "null",
    ] {
        let mut headers = MCP_POST.to_vec();
        headers.push(("Origin", origin));
        let resp = conn.request("POST", "/mcp", &headers, body.as_bytes());
        assert_json_error(&resp, 403, -32600);
    }
    let mut conn = relay.connect();
    let resp = conn.request("GET", "/sse", &[("Origin", "http://evil.example")], b"");
    assert_eq!(resp.status(), 403, "{resp:?}");
    assert!(relay.live_children().is_empty(), "no session was made");
    // A loopback origin of a relay bound to loopback is allowed, and echoed for CORS.
    let origin = format!("http://localhost:{}", relay.addr.port());
    let mut headers = MCP_POST.to_vec();
    headers.push(("Origin", &origin));
    let resp = conn.request("POST", "/mcp", &headers, body.as_bytes());
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some(origin.as_str())
    );
    // A browser's preflight: allowed for a good origin, with the MCP headers; 403 for a bad.
    let preflight = |c: &mut Conn, origin: &str| {
        c.request(
            "OPTIONS",
            "/mcp",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "content-type, mcp-session-id",
                ),
            ],
            b"",
        )
    };
    let resp = preflight(&mut conn, &origin);
    assert!(matches!(resp.status(), 200 | 204), "{resp:?}");
    let allowed = resp
        .header("access-control-allow-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    for h in [
        "mcp-session-id",
        "mcp-protocol-version",
        "last-event-id",
        "content-type",
    ] {
        assert!(
            allowed.contains(h),
            "preflight does not allow {h}: {resp:?}"
        );
    }
    assert_eq!(preflight(&mut conn, "http://evil.example").status(), 403);
}

#[test]
fn foreign_host_is_403() {
    let relay = HttpRelay::demo();
    let body = http_support::initialize_request(V_2025_11_25).to_string();
    // DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 sends
    // `Host: evil.example:PORT` (and no Origin on a simple request).
    let port = relay.addr.port();
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_owned(),
        format!("127.0.0.2:{port}"),
    ] {
        let mut conn = relay.connect();
        let mut headers = MCP_POST.to_vec();
        headers.push(("Host", &host));
        let resp = conn.request("POST", "/mcp", &headers, body.as_bytes());
        assert_json_error(&resp, 403, -32600);
    }
    assert!(relay.live_children().is_empty(), "no session was made");
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let mut conn = relay.connect();
        let mut headers = MCP_POST.to_vec();
        headers.push(("Host", &host));
        let resp = conn.request("POST", "/mcp", &headers, body.as_bytes());
        assert_eq!(resp.status(), 200, "Host {host}: {resp:?}");
    }
}

#[test]
fn missing_or_wrong_bearer_token_is_401() {
    let relay = HttpRelay::builder()
        .demo()
        .args(["--auth-token", "s3cret-token"])
        .start();
    let mut conn = relay.connect();
    let body = http_support::initialize_request(V_2025_11_25).to_string();
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic czNjcmV0LXRva2Vu"),
        Some("Bearer s3cret-toke"),
    ] {
        let mut headers = MCP_POST.to_vec();
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        let resp = conn.request("POST", "/mcp", &headers, body.as_bytes());
        assert_json_error(&resp, 401, -32600);
        let challenge = resp
            .header("www-authenticate")
            .expect("401 carries WWW-Authenticate");
        assert!(
            challenge.starts_with("Bearer"),
            "WWW-Authenticate: {challenge}"
        );
    }
    let resp = conn.request("GET", "/sse", &[], b"");
    assert_eq!(resp.status(), 401, "{resp:?}");
    let resp = conn.request("GET", "/metrics", &[], b"");
    assert_eq!(resp.status(), 401, "/metrics needs the token too: {resp:?}");
    assert!(relay.live_children().is_empty(), "no session was made");
    let mut headers = MCP_POST.to_vec();
    headers.push(("Authorization", "Bearer s3cret-token"));
    let resp = conn.request("POST", "/mcp", &headers, body.as_bytes());
    assert_eq!(resp.status(), 200, "{resp:?}");
    // The session belongs to the token: without it, its id is not enough.
    let id = resp
        .header("mcp-session-id")
        .expect("session id")
        .to_owned();
    let resp = conn.post_mcp(Some(&id), &initialized());
    assert_eq!(resp.status(), 401, "{resp:?}");
}

/// The server sees JSON-RPC only: the bearer token is in no message written to its stdin,
/// and not in its environment or command line. The "server" is a shell that copies its
/// stdin to a file on the way to the demo server.
#[test]
fn the_bearer_token_never_reaches_the_server() {
    let token = "tok-7f3a9c1e55d04b2a";
    let dir = http_support::TempDir::new("auth");
    let capture = dir.path().join("stdin.log");
    let relay = HttpRelay::builder()
        .args(["--auth-token", token])
        .command([
            "sh".as_ref(),
            "-c".as_ref(),
            r#"tee -a "$0" | exec "$1" demo-server"#.as_ref(),
            capture.as_os_str(),
            http_support::relay_bin().as_os_str(),
        ])
        .start();
    let bearer = format!("Bearer {token}");
    let mut conn = relay.connect();
    let mut headers = MCP_POST.to_vec();
    headers.push(("Authorization", &bearer));
    let resp = conn.request(
        "POST",
        "/mcp",
        &headers,
        http_support::initialize_request(V_2025_11_25)
            .to_string()
            .as_bytes(),
    );
    assert_eq!(resp.status(), 200, "{resp:?}");
    let id = resp
        .header("mcp-session-id")
        .expect("session id")
        .to_owned();
    headers.push(("Mcp-Session-Id", &id));
    let resp = conn.request(
        "POST",
        "/mcp",
        &headers,
        initialized().to_string().as_bytes(),
    );
    assert_eq!(resp.status(), 202, "{resp:?}");
    let resp = conn.request(
        "POST",
        "/mcp",
        &headers,
        tool_call(2, "echo", json!({"message": "marker-after-auth"}))
            .to_string()
            .as_bytes(),
    );
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(tool_text(&resp.messages()[0]), "marker-after-auth");
    // The echo was answered, so tee has it; it writes the file just after the pipe, so the
    // file is looked at until the line is there (a file write has no event to wait on).
    let deadline = Instant::now() + DEADLINE;
    let seen = loop {
        let seen = std::fs::read_to_string(&capture).unwrap_or_default();
        if seen.contains("marker-after-auth") || Instant::now() >= deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        seen.contains("marker-after-auth") && seen.contains("\"initialize\""),
        "{seen}"
    );
    assert!(
        !seen.contains(token),
        "the token reached the server's stdin:\n{seen}"
    );
    assert!(
        !seen.to_ascii_lowercase().contains("authorization"),
        "{seen}"
    );
    let group = relay.live_children()[0].pgrp;
    for p in http_support::all_procs()
        .into_iter()
        .filter(|p| p.pgrp == group)
    {
        assert!(
            !environ(p.pid).iter().any(|e| e.contains(token)),
            "the token is in the environment of {p:?}"
        );
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", p.pid)).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(token),
            "the token is on the command line of {p:?}"
        );
    }
    // The relay (and the shell writing into the directory) goes before the directory.
    drop(relay);
    drop(dir);
}

/// `MCP_RELAY_AUTH_TOKEN` configures the token from the relay's environment; the server,
/// which inherits that environment (without --clean-env), must not get it.
#[test]
fn the_bearer_token_from_the_environment_is_not_inherited_by_the_server() {
    let token = "env-tok-0b8d2f6a91";
    let relay = HttpRelay::builder()
        .demo()
        .env("MCP_RELAY_AUTH_TOKEN", token)
        .start();
    let bearer = format!("Bearer {token}");
    let mut conn = relay.connect();
    let mut headers = MCP_POST.to_vec();
    headers.push(("Authorization", &bearer));
    let resp = conn.request(
        "POST",
        "/mcp",
        &headers,
        http_support::initialize_request(V_2025_11_25)
            .to_string()
            .as_bytes(),
    );
    assert_eq!(resp.status(), 200, "{resp:?}");
    let child = relay.wait_children(1, DEADLINE).remove(0);
    let env = environ(child.pid);
    assert!(
        !env.iter().any(|e| e.contains(token)),
        "the server {child:?} was started with the relay's bearer token in its environment: {:?}",
        env.iter().filter(|e| e.contains(token)).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------
// Framing and connections
// ---------------------------------------------------------------------------------------

#[test]
fn chunked_request_bodies_are_read() {
    let relay = HttpRelay::demo();
    let mut conn = relay.connect();
    let body = http_support::initialize_request(V_2025_11_25).to_string();
    let (a, rest) = body.split_at(10);
    let (b, c) = rest.split_at(rest.len() / 2);
    conn.send_raw(
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            relay.host()
        )
        .as_bytes(),
    );
    // Chunks in separate writes, one with an extension, then trailers.
    conn.send_raw(format!("{:x}\r\n{a}\r\n", a.len()).as_bytes());
    conn.send_raw(format!("{:x};ext=1\r\n{b}\r\n", b.len()).as_bytes());
    conn.send_raw(format!("{:x}\r\n{c}\r\n0\r\nX-Trailer: t\r\n\r\n", c.len()).as_bytes());
    let resp = conn.read_response();
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(
        resp.messages()[0]["result"]["serverInfo"]["name"],
        "mcp-relay-demo"
    );
    let id = resp
        .header("mcp-session-id")
        .expect("session id")
        .to_owned();
    // A chunked tools/call on the same connection.
    let call = tool_call(2, "echo", json!({"message": "chunky"})).to_string();
    conn.send_raw(
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: {id}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{call}\r\n0\r\n\r\n",
            relay.host(),
            call.len()
        )
        .as_bytes(),
    );
    let resp = conn.read_response();
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(tool_text(&resp.messages()[0]), "chunky");
    // Malformed chunking is a 400.
    let mut conn = relay.connect();
    conn.send_raw(
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n",
            relay.host()
        )
        .as_bytes(),
    );
    assert_eq!(conn.read_response().status(), 400);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let relay = HttpRelay::demo();
    let mut conn = relay.connect();
    let local = conn.stream().local_addr().expect("local address");
    let id = open_session(&mut conn, V_2025_11_25);
    for i in 0..5 {
        let resp = conn.post_mcp(
            Some(&id),
            &tool_call(
                10 + i,
                "echo",
                json!({"message": format!("keep-alive {i}")}),
            ),
        );
        assert_eq!(resp.status(), 200, "{resp:?}");
        assert!(
            resp.header("connection")
                .is_none_or(|c| !c.eq_ignore_ascii_case("close")),
            "{resp:?}"
        );
        assert_eq!(tool_text(&resp.messages()[0]), format!("keep-alive {i}"));
    }
    let resp = conn.request("GET", "/healthz", &[], b"");
    assert_eq!(resp.status(), 200);
    assert_eq!(conn.stream().local_addr().expect("local address"), local);
    // Two requests in one write (pipelining) are answered in order.
    let a = tool_call(20, "echo", json!({"message": "first"})).to_string();
    let b = tool_call(21, "echo", json!({"message": "second"})).to_string();
    let head = |body: &str| {
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: {id}\r\nContent-Length: {}\r\n\r\n{body}",
            relay.host(),
            body.len()
        )
    };
    conn.send_raw(format!("{}{}", head(&a), head(&b)).as_bytes());
    assert_eq!(tool_text(&conn.read_response().messages()[0]), "first");
    assert_eq!(tool_text(&conn.read_response().messages()[0]), "second");
    // Connection: close is honoured.
    conn.send("GET", "/healthz", &[("Connection", "close")], b"");
    let resp = conn.read_response();
    assert_eq!(resp.status(), 200);
    assert!(conn.closed_within(DEADLINE));
}

// ---------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------

#[test]
fn get_stream_opens_once_per_session() {
    let relay = HttpRelay::builder()
        .demo()
        .args(["--restart-delay", "0"])
        .start();
    let mut conn = relay.connect();
    let id = open_session(&mut conn, V_2025_11_25);
    let get = |c: &mut Conn| {
        c.send(
            "GET",
            "/mcp",
            &[("Accept", "text/event-stream"), ("Mcp-Session-Id", &id)],
            b"",
        );
        c.read_head()
    };
    let mut stream = relay.connect();
    let head = get(&mut stream);
    assert_eq!(head.status, 200, "{head:?}");
    assert!(head.is_sse(), "{head:?}");
    // 2025-11-25: a priming event (an id and empty data) comes first.
    let priming = stream.next_event().expect("a priming event");
    assert!(
        priming.id.is_some() && priming.data.is_empty(),
        "{priming:?}"
    );
    // A second GET stream for the same session: 409 Conflict.
    let mut second = relay.connect();
    let resp = {
        let head = get(&mut second);
        let body = second.read_body(&head);
        http_support::Response { head, body }
    };
    assert_json_error(&resp, 409, -32600);
    // Messages that answer no request go to the GET stream: the server crashes in the
    // middle of a call, the call gets an error, and the relay's restart notice arrives on
    // the GET stream.
    let resp = conn.post_mcp(Some(&id), &tool_call(5, "crash", json!({})));
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(
        resp.messages()[0]["error"]["code"],
        -32003,
        "{}",
        resp.text()
    );
    let (ev, msg) = stream.next_message();
    assert_eq!(msg["method"], "$/mcp/serverRestarted", "{msg}");
    assert!(ev.id.is_some(), "GET stream events have ids: {ev:?}");
    let resp = conn.post_mcp(
        Some(&id),
        &tool_call(6, "echo", json!({"message": "after"})),
    );
    assert_eq!(tool_text(&resp.messages()[0]), "after");
    // Once the first GET stream's connection is gone, a new GET is accepted.
    stream.close();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut again = relay.connect();
        let head = get(&mut again);
        if head.status == 200 {
            break;
        }
        assert_eq!(head.status, 409, "{head:?}");
        assert!(
            Instant::now() < deadline,
            "the closed GET stream was never released"
        );
        // The relay has not seen the close yet: each attempt is one more round trip.
    }
}

/// Resumability: a POST stream whose connection dropped mid-call is resumed with GET and
/// `Last-Event-ID`; the events after that id and the final answer arrive, nothing twice.
#[test]
fn last_event_id_resumes_a_dropped_post_stream() {
    let relay = HttpRelay::builder().demo().log_level("debug").start();
    let mut conn = relay.connect();
    let id = open_session(&mut conn, V_2025_11_25);
    let mut post = relay.connect();
    post.send(
        "POST",
        "/mcp",
        &[MCP_POST[0], MCP_POST[1], ("Mcp-Session-Id", &id)],
        tool_call_with_progress(
            7,
            "slow",
            json!({"steps": 5, "interval_ms": 150}),
            "resume-me",
        )
        .to_string()
        .as_bytes(),
    );
    let head = post.read_head();
    assert_eq!(head.status, 200, "{head:?}");
    assert!(
        head.is_sse(),
        "a call with progress answers as an event stream: {head:?}"
    );
    let (first, msg) = post.next_message();
    assert_eq!(msg["method"], "notifications/progress", "{msg}");
    assert_eq!(msg["params"]["progress"], 1, "{msg}");
    let last_id = first
        .id
        .clone()
        .expect("events of a resumable stream have ids");
    // The client loses the connection mid-call.
    post.close();
    // Resume. The relay may not have seen the first connection close yet; then it opens a
    // plain GET stream instead, and logs so: the client tries again.
    const RESUMED: &str = "resuming stream";
    const MISSED: &str = "names no stream of this session to resume";
    let count =
        |lines: &[String], needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    let resumed_before = relay.log_count(RESUMED);
    let mut resumed = loop {
        let missed_before = relay.log_count(MISSED);
        let mut c = relay.connect();
        c.send(
            "GET",
            "/mcp",
            &[
                ("Accept", "text/event-stream"),
                ("Mcp-Session-Id", &id),
                ("Last-Event-ID", &last_id),
            ],
            b"",
        );
        let head = c.read_head();
        assert_eq!(head.status, 200, "{head:?}");
        assert!(head.is_sse(), "{head:?}");
        let decided = relay.wait_for_log(DEADLINE, |lines| {
            count(lines, RESUMED) > resumed_before || count(lines, MISSED) > missed_before
        });
        assert!(decided, "no resume log line:\n{}", relay.log_text());
        if relay.log_count(RESUMED) > resumed_before {
            break c;
        }
        c.close();
    };
    let mut progress = Vec::new();
    let answer = loop {
        let (ev, msg) = resumed.next_message();
        assert_ne!(
            ev.id.as_deref(),
            Some(last_id.as_str()),
            "event {last_id} came twice"
        );
        if msg["method"] == "notifications/progress" {
            assert_eq!(msg["params"]["progressToken"], "resume-me", "{msg}");
            progress.push(msg["params"]["progress"].as_i64().expect("progress"));
        } else {
            break msg;
        }
    };
    assert_eq!(
        progress,
        vec![2, 3, 4, 5],
        "the progress after event {last_id}"
    );
    assert_eq!(answer["id"], 7, "{answer}");
    assert_eq!(tool_text(&answer), "done after 5 steps");
    assert!(
        resumed.next_event().is_none(),
        "the resumed stream ends after its answer"
    );
    // The connection serves the next request.
    let resp = resumed.post_mcp(Some(&id), &tool_call(8, "echo", json!({"message": "next"})));
    assert_eq!(tool_text(&resp.messages()[0]), "next");
}

/// The client POSTs a tools/call, then `notifications/cancelled` for it. The server stops
/// and, as the cancellation utility requires, never answers; the relay then ends the POST's
/// event stream (Streamable HTTP: the server SHOULD close the stream once every request on
/// it is settled) rather than keep it open for an answer that will not come.
#[test]
fn cancelling_a_request_ends_its_post_stream() {
    let relay = HttpRelay::demo();
    let mut conn = relay.connect();
    let id = open_session(&mut conn, V_2025_06_18);
    let mut post = relay.connect();
    post.send(
        "POST",
        "/mcp",
        &[MCP_POST[0], MCP_POST[1], ("Mcp-Session-Id", &id)],
        tool_call_with_progress(9, "slow", json!({"steps": 100, "interval_ms": 50}), "c")
            .to_string()
            .as_bytes(),
    );
    let head = post.read_head();
    assert_eq!(head.status, 200);
    let (_, msg) = post.next_message();
    assert_eq!(msg["method"], "notifications/progress");
    let resp = conn.post_mcp(
        Some(&id),
        &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": 9, "reason": "test"}}),
    );
    assert_eq!(resp.status(), 202);
    post.set_read_timeout(Duration::from_secs(5));
    while let Some(ev) = post.next_event() {
        let msg = ev.json();
        assert_eq!(
            msg["method"], "notifications/progress",
            "no answer after a cancel: {msg}"
        );
    }
}

/// 2025-03-26 allows JSON-RPC batches: a POST of several requests gets a stream that
/// "SHOULD eventually include one JSON-RPC response per each JSON-RPC request sent in the
/// POST body" and that the server "SHOULD close" after the last. The demo server answers a
/// batch with a batch, and that one message answers every request of the POST.
#[test]
fn a_batch_of_requests_gets_its_answers_and_an_ended_stream() {
    // The answer batch settles both requests (Route::Responses), so the stream ends.
    let relay = HttpRelay::demo();
    let mut conn = relay.connect();
    let id = open_session(&mut conn, "2025-03-26");
    let batch = json!([
        {"jsonrpc": "2.0", "id": 2, "method": "ping"},
        tool_call(3, "echo", json!({"message": "batched"})),
    ]);
    let mut post = relay.connect();
    post.set_read_timeout(Duration::from_secs(5));
    let resp = post.post_mcp(Some(&id), &batch);
    assert_eq!(resp.status(), 200, "{resp:?}");
    let mut answered: Vec<Value> = Vec::new();
    for msg in resp.messages() {
        match msg {
            Value::Array(items) => answered.extend(items),
            one => answered.push(one),
        }
    }
    let ids: Vec<&Value> = answered.iter().map(|m| &m["id"]).collect();
    assert!(
        ids.contains(&&json!(2)) && ids.contains(&&json!(3)),
        "{answered:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Session lifecycle
// ---------------------------------------------------------------------------------------

#[test]
fn delete_ends_the_session_and_its_server() {
    let relay = HttpRelay::demo();
    let mut conn = relay.connect();
    let id = open_session(&mut conn, V_2025_11_25);
    let child = relay.wait_children(1, DEADLINE).remove(0);
    let resp = conn.request("DELETE", "/mcp", &[("Mcp-Session-Id", &id)], b"");
    assert!(matches!(resp.status(), 200 | 204), "{resp:?}");
    relay.wait_children(0, DEADLINE);
    assert!(read_proc(child.pid).is_none_or(|p| p.state == 'Z' || p.ppid != relay.pid()));
    relay.wait_log("the client deleted it", DEADLINE);
    let resp = conn.post_mcp(
        Some(&id),
        &json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}),
    );
    assert_json_error(&resp, 404, -32600);
}

#[test]
fn idle_session_expires_after_session_timeout() {
    let relay = HttpRelay::builder()
        .demo()
        .args(["--session-timeout", "500ms"])
        .start();
    let mut conn = relay.connect();
    // The session's last activity is no earlier than this.
    let idle_from = Instant::now();
    let id = open_session(&mut conn, V_2025_11_25);
    relay.wait_children(1, DEADLINE);
    relay.wait_children(0, DEADLINE);
    let took = idle_from.elapsed();
    assert!(
        took >= Duration::from_millis(480),
        "expired after {took:?}, before its 500ms of idleness"
    );
    relay.wait_log("idle for longer than --session-timeout", DEADLINE);
    let resp = conn.post_mcp(
        Some(&id),
        &json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}),
    );
    assert_json_error(&resp, 404, -32600);
    // An open GET stream keeps a session alive however long it is idle.
    let id = open_session(&mut conn, V_2025_11_25);
    let mut stream = relay.connect();
    stream.send(
        "GET",
        "/mcp",
        &[("Accept", "text/event-stream"), ("Mcp-Session-Id", &id)],
        b"",
    );
    assert_eq!(stream.read_head().status, 200);
    // Three timeouts of silence (the thing under test is a timeout).
    assert!(
        !stream.closed_within(Duration::from_millis(1500)),
        "the session's GET stream was closed while open"
    );
    let resp = conn.post_mcp(
        Some(&id),
        &json!({"jsonrpc": "2.0", "id": 4, "method": "ping"}),
    );
    assert_eq!(
        resp.status(),
        200,
        "a session with an open stream does not expire: {resp:?}"
    );
}

#[test]
fn max_sessions_answers_503() {
    let relay = HttpRelay::builder()
        .demo()
        .args(["--max-sessions", "1"])
        .start();
    let mut conn = relay.connect();
    let first = open_session(&mut conn, V_2025_11_25);
    let resp = conn.post_mcp(None, &http_support::initialize_request(V_2025_11_25));
    assert_json_error(&resp, 503, -32000);
    assert!(
        resp.header("retry-after").is_some(),
        "503 carries Retry-After: {resp:?}"
    );
    let resp = conn.request("GET", "/sse", &[], b"");
    assert_eq!(resp.status(), 503, "legacy sessions count too: {resp:?}");
    assert_eq!(relay.live_children().len(), 1);
    // Ending the first makes room, once it has ended (its server gone: a DELETEd session
    // counts until then).
    let resp = conn.request("DELETE", "/mcp", &[("Mcp-Session-Id", &first)], b"");
    assert!(matches!(resp.status(), 200 | 204), "{resp:?}");
    relay.wait_log("session ended", DEADLINE);
    let resp = conn.post_mcp(None, &http_support::initialize_request(V_2025_11_25));
    assert_eq!(resp.status(), 200, "{resp:?}");
}

// ---------------------------------------------------------------------------------------
// Legacy HTTP+SSE (2024-11-05)
// ---------------------------------------------------------------------------------------

#[test]
fn legacy_sse_endpoint_event_post_202_and_message_events() {
    let relay = HttpRelay::demo();
    let mut sse = relay.connect();
    sse.send("GET", "/sse", &[("Accept", "text/event-stream")], b"");
    let head = sse.read_head();
    assert_eq!(head.status, 200, "{head:?}");
    assert!(head.is_sse(), "{head:?}");
    let endpoint = sse.next_event().expect("the endpoint event");
    assert_eq!(endpoint.event.as_deref(), Some("endpoint"), "{endpoint:?}");
    assert!(
        endpoint.data.starts_with("/messages?sessionId="),
        "{endpoint:?}"
    );
    let path = endpoint.data.clone();
    let mut conn = relay.connect();
    let post = |c: &mut Conn, body: &Value| {
        c.request(
            "POST",
            &path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    };
    let resp = post(&mut conn, &http_support::initialize_request("2024-11-05"));
    assert_eq!(resp.status(), 202, "{resp:?}");
    let (ev, msg) = sse.next_message();
    assert_eq!(ev.event.as_deref(), Some("message"), "{ev:?}");
    assert_eq!(msg["id"], 1, "{msg}");
    assert_eq!(msg["result"]["protocolVersion"], "2024-11-05", "{msg}");
    assert_eq!(post(&mut conn, &initialized()).status(), 202);
    let resp = post(
        &mut conn,
        &tool_call_with_progress(2, "slow", json!({"steps": 2, "interval_ms": 10}), "p"),
    );
    assert_eq!(resp.status(), 202, "{resp:?}");
    let mut events = Vec::new();
    loop {
        let (ev, msg) = sse.next_message();
        assert_eq!(ev.event.as_deref(), Some("message"), "{ev:?}");
        let done = msg["id"] == 2;
        events.push(msg);
        if done {
            break;
        }
    }
    assert_eq!(
        events.len(),
        3,
        "two progress notifications, then the answer: {events:?}"
    );
    assert_eq!(tool_text(&events[2]), "done after 2 steps");
    // Server → client request and its answer over the legacy transport.
    assert_eq!(
        post(&mut conn, &tool_call(3, "sample", json!({"prompt": "hi"}))).status(),
        202
    );
    let (_, req) = sse.next_message();
    assert_eq!(req["method"], "sampling/createMessage", "{req}");
    let answer = json!({"jsonrpc": "2.0", "id": req["id"], "result": {
        "role": "assistant", "content": {"type": "text", "text": "hello from the test"},
        "model": "m", "stopReason": "endTurn"}});
    assert_eq!(post(&mut conn, &answer).status(), 202);
    let (_, msg) = sse.next_message();
    assert_eq!(msg["id"], 3, "{msg}");
    assert!(tool_text(&msg).contains("hello from the test"), "{msg}");
    // Bad posts.
    let resp = conn.request(
        "POST",
        "/messages?sessionId=0000",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(resp.status(), 404, "{resp:?}");
    let resp = conn.request(
        "POST",
        "/messages",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(resp.status(), 400, "{resp:?}");
    let resp = conn.request(
        "POST",
        &path,
        &[("Content-Type", "application/json")],
        b"{oops",
    );
    assert_json_error(&resp, 400, -32700);
}

#[test]
fn closing_the_legacy_stream_ends_the_server() {
    let relay = HttpRelay::demo();
    let mut sse = relay.connect();
    sse.send("GET", "/sse", &[("Accept", "text/event-stream")], b"");
    assert_eq!(sse.read_head().status, 200);
    let path = sse.next_event().expect("the endpoint event").data;
    let mut conn = relay.connect();
    let resp = conn.request(
        "POST",
        &path,
        &[("Content-Type", "application/json")],
        http_support::initialize_request("2024-11-05")
            .to_string()
            .as_bytes(),
    );
    assert_eq!(resp.status(), 202);
    sse.next_message();
    relay.wait_children(1, DEADLINE);
    sse.close();
    relay.wait_children(0, DEADLINE);
    relay.wait_log("its event stream closed", DEADLINE);
    let resp = conn.request(
        "POST",
        &path,
        &[("Content-Type", "application/json")],
        json!({"jsonrpc": "2.0", "id": 2, "method": "ping"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(resp.status(), 404, "{resp:?}");
}

// ---------------------------------------------------------------------------------------
// Observability
// ---------------------------------------------------------------------------------------

#[test]
fn healthz_and_metrics() {
    let relay = HttpRelay::demo();
    let mut conn = relay.connect();
    let _id = open_session(&mut conn, V_2025_11_25);
    let resp = conn.request("GET", "/healthz", &[], b"");
    assert_eq!(resp.status(), 200, "{resp:?}");
    let health = resp.json();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["sessions"], 1, "{health}");
    let resp = conn.request("GET", "/metrics", &[], b"");
    assert_eq!(resp.status(), 200, "{resp:?}");
    let text = resp.text();
    for metric in [
        "mcp_relay_sessions_open 1",
        "mcp_relay_children_alive 1",
        "mcp_relay_http_responses_total{status=\"200\"}",
    ] {
        assert!(text.contains(metric), "/metrics lacks {metric}:\n{text}");
    }
}
