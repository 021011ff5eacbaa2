//! Servers that cannot start. Every request the client sent, before or after the failure,
//! gets -32000 naming the cause (invariant 6); the connection closes once that is said (or
//! after a linger of `shutdown_grace` if the client says nothing); the failure is logged at
//! ERROR, the only ERROR a run may log.

use mcp_relay_core::{Config, ConnId, Endpoint, Input};
use mcp_relay_tests::{run_seeds, test_name, Profile, Script, Sim};

#[test]
fn requests_to_a_server_that_cannot_start_get_the_cause() {
    run_seeds(
        test_name!("requests_to_a_server_that_cannot_start_get_the_cause"),
        80,
        |seed, keep| Sim::new(seed, Profile::spawn_failures(), keep),
        |_| Ok(()),
    );
}

/// Regression test (fixed) for `linger-ended-by-notification` (core/src/session.rs, `Link::client_line`, the
/// `Phase::Ended` branch clears `linger` even when `answer_unavailable` answered nothing):
/// after the first start failed, the relay waits for the client's first request to tell it
/// why — but a notification ends that wait, the connection closes, and the request that
/// follows gets no answer.
#[test]
fn a_notification_does_not_end_the_wait_for_the_first_request() {
    let mut s = Script::new(Config::default());
    let conn = Endpoint::Conn(ConnId(1));
    let child = s.accept(1);
    s.input(Input::SpawnFailed {
        child,
        error: "`nope` was not found",
    });
    s.client_data(
        1,
        b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n",
    );
    s.client_data(
        1,
        b"{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"tools/list\"}\n",
    );
    let told = String::from_utf8_lossy(&s.sent_to(conn)).into_owned();
    assert!(
        told.contains("\"id\":9,\"error\":{\"code\":-32000")
            && told.contains("`nope` was not found"),
        "request 9 must be told why no server answers; the client got {told:?}\n{}",
        s.show()
    );
}
