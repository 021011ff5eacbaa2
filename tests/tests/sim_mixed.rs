//! TCP clients and Streamable HTTP clients against one relay, in one event loop: one driver
//! performs every output, one child model serves both (a child turns into the HTTP clients'
//! tools server when one of their `initialize`s reaches it), prespawned children go to
//! whichever kind of client comes first. Every invariant of both worlds holds at once.

use mcp_relay_tests::{run_seeds, same_trace_twice, test_name, HttpProfile, Profile, Sim};

/// Chaos on the TCP side. Not yet here, because the HTTP clients' script does not yet
/// accept the relay's errors for them (413 for a message over `max_message_size`, 503 to
/// come back later past `max_in_flight` or `max_buffered`, -32000 for a server that cannot
/// start, 404 once a crash ended the session, the answers of a shutdown mid-session): tiny
/// message, in-flight and buffer limits, servers that fail to start, crash, hang or close
/// their stdout, and early shutdowns. TCP-only runs cover those.
fn tcp() -> Profile {
    let mut p = Profile::chaos();
    p.max_message_size = vec![16 * 1024];
    p.max_in_flight = vec![1024];
    p.max_buffered = HttpProfile::sessions().max_buffered;
    p.spawn_fail = 0;
    p.crash = 0;
    p.hang = 0;
    p.close_stdout = 0;
    p.shutdown_early = 0;
    p.shutdown_twice = 0;
    p
}

#[test]
fn tcp_and_http_clients_share_one_relay() {
    run_seeds(
        test_name!("tcp_and_http_clients_share_one_relay"),
        80,
        |seed, keep| Sim::mixed(seed, tcp(), HttpProfile::resumption(), keep),
        |sim| {
            if sim.conns.is_empty() || sim.http.sessions_started() == 0 {
                return Err("a mixed run needs both kinds of client".into());
            }
            Ok(())
        },
    );
}

#[test]
fn the_same_seed_gives_the_same_mixed_trace() {
    same_trace_twice(
        test_name!("the_same_seed_gives_the_same_mixed_trace"),
        8,
        40,
        |seed, keep| Sim::mixed(seed, tcp(), HttpProfile::sessions(), keep),
    );
}
