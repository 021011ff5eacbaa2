//! Everything at once: malformed lines, crashes, hangs, restarts, spawn failures, resets,
//! stalls, heartbeats, one or two shutdowns, up to eight connections.

use mcp_relay_tests::{run_seeds, test_name, Profile, Sim};

#[test]
fn everything_at_once() {
    run_seeds(
        test_name!("everything_at_once"),
        100,
        |seed, keep| Sim::new(seed, Profile::chaos(), keep),
        |_| Ok(()),
    );
}
