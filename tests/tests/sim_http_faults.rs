//! Streamable HTTP sessions whose servers crash, hang, close their stdout or fail to start,
//! under every restart setting. A call in flight when its server fails gets the relay's
//! -32003; a session whose first server cannot start gets -32000; a session the relay gave up
//! (or ended under `--restart never`) answers 404, and its client initializes a new one.
//! Every such answer must have its cause (a fault of that session's server), restarts follow
//! the policy, budget and backoff as for TCP sessions, and what was not failed arrives once.

use mcp_relay_tests::{run_seeds, same_trace_twice, test_name, HttpProfile, HttpSim};

#[test]
fn sessions_whose_servers_fail() {
    run_seeds(
        test_name!("sessions_whose_servers_fail"),
        80,
        |seed, keep| HttpSim::new(seed, HttpProfile::faults(), keep),
        |_| Ok(()),
    );
}

#[test]
fn the_same_seed_gives_the_same_faulty_trace() {
    same_trace_twice(
        test_name!("the_same_seed_gives_the_same_faulty_trace"),
        6,
        40,
        |seed, keep| HttpSim::new(seed, HttpProfile::faults(), keep),
    );
}

/// Seeds that found core bugs, kept as they ran then.
///
/// * 8: a session ended (`--restart never`) while the last event of a call's stream was
///   still being written; closing the session ended that stream again (`0\r\n\r\n` twice).
/// * 297: a replacement server hung while reading its replayed `initialize` slowly; no
///   deadline ran during the replay (the stall timer only in `Serving`), and the session's
///   requests waited forever.
#[test]
fn seeds_that_found_bugs() {
    for seed in [8, 297] {
        let mut sim = HttpSim::new(seed, HttpProfile::faults(), false);
        if let Err(e) = mcp_relay_tests::runner::run_one(&mut sim) {
            panic!("seed {seed}: {e}");
        }
    }
}
