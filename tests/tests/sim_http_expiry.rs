//! Session expiry: an abandoned session expires mid-call (its child's stdin is closed, its
//! later requests get 404); a session whose client is still reading, or that just finished a
//! long call, does not.

use mcp_relay_core::{Config, ConnId, Endpoint, HttpConfig};
use mcp_relay_tests::script::http_post;
use mcp_relay_tests::{run_seeds, test_name, HttpProfile, HttpSim, Script};
use std::time::Duration;

/// A short `session_timeout`; session 0 drops the stream of a long call and never comes back.
/// It expires mid-call: its child's stdin is closed, and its later requests (a POST, and a GET
/// resuming the abandoned stream) get 404. The other sessions, some with slow readers, must
/// not expire while their clients read (formerly the separate family
/// `sessions_do_not_expire_while_their_client_reads`).
#[test]
fn an_abandoned_session_expires_mid_call() {
    run_seeds(
        test_name!("an_abandoned_session_expires_mid_call"),
        200,
        |seed, keep| HttpSim::new(seed, HttpProfile::expiry(), keep),
        |_| Ok(()),
    );
}

fn conn(n: u64) -> Endpoint {
    Endpoint::Conn(ConnId(n))
}

/// Bug (core/src/http/mod.rs, `http_poll_timeout` / `http_handle_timeout` with
/// `HttpSession::last_activity`): idle time counts from the session's last *request* (or a
/// detach), never from the end of its last response. While a POST stream is attached the
/// session cannot expire, but when the stream ends, `last_activity + session_timeout` may
/// already be past: a session whose call took longer than `--session-timeout` (default 5 min)
/// expires at the next timeout check, right after answering, and the client's next request
/// gets 404. Also a client still reading a long answer slowly sees its session expire. Fix:
/// set `last_activity = now` when a stream of the session ends (`http_end_stream`) and when
/// its connection finishes writing it. Fixed in 066a813;
/// seeded form: `an_abandoned_session_expires_mid_call`.
#[test]
fn a_session_does_not_expire_right_after_a_long_call() {
    let mut s = Script::new(Config {
        ping_interval: None,
        http: HttpConfig {
            session_timeout: Duration::from_secs(2),
            ..HttpConfig::default()
        },
        ..Config::default()
    });
    let (sid, child) = s.open_http_session();
    s.accept_http(2);
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"long"}}"#;
    s.client_data(2, http_post(Some(&sid), call).as_bytes());
    // The tool works for 3 s (the stream is open: the session cannot expire meanwhile).
    s.advance(Duration::from_secs(3));
    s.child_data(
        child,
        br#"{"jsonrpc":"2.0","id":2,"result":{"content":[]}}
"#,
    );
    let n = s.sent_to(conn(2)).len();
    s.written(conn(2), n);
    // 10 ms later, the client asks again on the same connection.
    s.advance(Duration::from_millis(10));
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"quick"}}"#;
    s.client_data(2, http_post(Some(&sid), call).as_bytes());
    let text = String::from_utf8_lossy(&s.sent_to(conn(2))).into_owned();
    assert!(
        !text.contains("HTTP/1.1 404"),
        "the session was answering a call until 10 ms ago, yet it expired \
         (--session-timeout is 2 s):\n{text}"
    );
}
