//! `/healthz` says `degraded` (503) while the relay cannot accept connections or cannot start
//! its server, and `ok` again once it can (issue 9 item 3).

use mcp_relay_core::{Config, ConnId, Endpoint, Input};
use mcp_relay_tests::script::{http_post, spawned_in, Script};

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:7000\r\n\r\n";

/// Asks `/healthz` on a fresh connection; the status line and the body.
fn health(s: &mut Script, conn: u64) -> (String, String) {
    s.accept_http(conn);
    s.client_data(conn, HEALTH);
    let answer = String::from_utf8_lossy(&s.sent_to(Endpoint::Conn(ConnId(conn)))).into_owned();
    let status = answer.lines().next().unwrap_or_default().to_owned();
    let body = answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

#[test]
fn health_is_degraded_while_accepts_fail() {
    let mut s = Script::new(Config::default());
    let (status, body) = health(&mut s, 1);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(body.contains(r#""status":"ok""#), "{body}");
    s.input(Input::AcceptTrouble { listeners: 1 });
    let (status, body) = health(&mut s, 2);
    assert!(status.starts_with("HTTP/1.1 503"), "{status}");
    assert!(body.contains(r#""status":"degraded""#), "{body}");
    assert!(body.contains("cannot accept"), "{body}");
    s.input(Input::AcceptTrouble { listeners: 0 });
    let (status, _) = health(&mut s, 3);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
}

#[test]
fn health_is_degraded_while_the_server_cannot_start() {
    let mut s = Script::new(Config::default());
    s.accept_http(1);
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
    let out = s.client_data(1, http_post(None, init).as_bytes());
    let child = spawned_in(&out).expect("a server is asked for");
    s.input(Input::SpawnFailed {
        child,
        error: "`nope` was not found",
    });
    let (status, body) = health(&mut s, 2);
    assert!(status.starts_with("HTTP/1.1 503"), "{status}");
    assert!(body.contains("cannot be started"), "{body}");
    assert!(body.contains("`nope` was not found"), "{body}");
    // The next start that works clears it.
    s.accept_http(3);
    let out = s.client_data(3, http_post(None, init).as_bytes());
    if let Some(child) = spawned_in(&out) {
        s.spawned(child);
    }
    let (status, _) = health(&mut s, 4);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
}

/// Once the relay drains, `/healthz` on a connection still open answers 503 `draining`
/// (a request that was arriving as the signal came is answered, then the connection closes).
#[test]
fn health_says_draining_once_the_relay_shuts_down() {
    let mut s = Script::new(Config::default());
    s.accept_http(1);
    s.client_data(1, b"GET /healthz HTTP/1.1\r\n");
    s.input(Input::Shutdown);
    s.client_data(1, b"Host: 127.0.0.1:7000\r\n\r\n");
    let answer = String::from_utf8_lossy(&s.sent_to(Endpoint::Conn(ConnId(1)))).into_owned();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains(r#""status":"draining""#), "{answer}");
}
