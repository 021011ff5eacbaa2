//! TCP clients and Streamable HTTP clients against one relay, in one event loop: one driver
//! performs every output, one child model serves both (a child turns into the HTTP clients'
//! tools server when one of their `initialize`s reaches it), prespawned children go to
//! whichever kind of client comes first. Every invariant of both worlds holds at once.

use mcp_relay_tests::{run_seeds, same_trace_twice, test_name, HttpProfile, Profile, Sim};

/// Chaos on the TCP side, and so for the whole relay: message limits from 128 bytes (HTTP
/// bodies over them get 413, answers over them -32001), one to a few requests in flight (503,
/// come back later), buffer marks from one byte, servers that fail to start, crash, hang or
/// close their stdout, early and double shutdowns (connections refused, requests left without
/// a response). The HTTP clients take each of these as a real client would.
fn tcp() -> Profile {
    Profile::chaos()
}

#[test]
fn tcp_and_http_clients_share_one_relay() {
    run_seeds(
        test_name!("tcp_and_http_clients_share_one_relay"),
        80,
        |seed, keep| Sim::mixed(seed, tcp(), HttpProfile::resumption(), keep),
        |sim| {
            // (An early shutdown may refuse the TCP clients before they come.)
            let tcp = !sim.conns.is_empty() || sim.connects_refused > 0;
            if !tcp || sim.http.sessions_started() == 0 {
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

/// Seeds that found core bugs, kept as they ran then.
///
/// * 14: messages waiting for a GET stream (that no client opens) counted as the session's
///   unwritten load: once above half of `max_buffered` they kept its server paused for good.
/// * 47: after an immediate shutdown the HTTP sessions kept their idle timers, and expired
///   again every `session_timeout`, forever.
/// * 124: with `--max-in-flight 1` and a hung server nothing probes, a POST of only
///   notifications got 503 like a request: the client's `notifications/cancelled`, the one
///   way to free the place, was refused, and the session's other calls waited forever.
/// * 2 (once 124 was fixed): after an immediate shutdown, an event stream not yet done kept
///   the SSE keep-alive timer going every `sse_keepalive` over a connection already gone.
#[test]
fn seeds_that_found_bugs() {
    for seed in [2, 14, 47, 124] {
        let mut sim = Sim::mixed(seed, tcp(), HttpProfile::resumption(), false);
        if let Err(e) = mcp_relay_tests::runner::run_one(&mut sim) {
            panic!("seed {seed}: {e}");
        }
    }
}
