//! Clients that ask for heartbeats (`{"type":"heartbeat"}`): the relay answers each one, sends
//! its own every `heartbeat_interval`, never forwards them, and closes a connection whose
//! client went silent — but not one it stopped reading itself.

use mcp_relay_core::{Config, ConnId, Endpoint, Output};
use mcp_relay_tests::{run_seeds, test_name, Profile, Script, Sim};
use std::time::Duration;

#[test]
fn heartbeats_are_answered_and_never_forwarded() {
    run_seeds(
        test_name!("heartbeats_are_answered_and_never_forwarded"),
        80,
        |seed, keep| Sim::new(seed, Profile::heartbeats(), keep),
        |_| Ok(()),
    );
}

/// Regression (`silence-verdict-ignores-own-pause`): the "client silent" deadline must not
/// run while the relay itself has paused reading the connection (its server reads slowly),
/// since the client's heartbeats then wait unread in the socket.
#[test]
fn a_client_the_relay_stopped_reading_is_not_closed_for_silence() {
    let mut s = Script::new(Config {
        max_buffered: 64,
        heartbeat_interval: Duration::from_millis(100),
        ping_interval: None,
        ..Config::default()
    });
    let conn = Endpoint::Conn(ConnId(1));
    let child = s.accept(1);
    s.spawned(child);
    let out = s.client_data(1, b"{\"type\":\"heartbeat\"}\n");
    assert!(
        String::from_utf8_lossy(&s.sent_to(conn)).contains("heartbeat_response"),
        "{out:?}"
    );
    // A request the server is slow to read fills its queue: the relay stops reading the
    // client. The client's next heartbeats wait in the socket.
    let request = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\",\"params\":{{\"x\":\"{}\"}}}}\n",
        "z".repeat(100)
    );
    let paused_before = out.contains(&Output::Pause { endpoint: conn });
    let out = s.client_data(1, request.as_bytes());
    // (The relay may already have paused the client for not reading its heartbeat answer.)
    assert!(
        paused_before || out.contains(&Output::Pause { endpoint: conn }),
        "{out:?}"
    );
    let out = s.advance(Duration::from_secs(1));
    assert!(
        !out.contains(&Output::Close { endpoint: conn }),
        "the relay itself stopped reading the client, whose heartbeats wait unread; it must \
         not close the connection for silence:\n{}",
        s.show()
    );
}
