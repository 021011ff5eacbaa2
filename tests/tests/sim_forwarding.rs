//! Healthy clients and servers, several connections at once, every byte stream cut into
//! random pieces: every message reaches the right peer, once, in order, byte for byte, and
//! every request gets exactly one answer.

use mcp_relay_tests::{run_seeds, test_name, Profile, Sim};

#[test]
fn healthy_sessions_deliver_everything() {
    run_seeds(
        test_name!("healthy_sessions_deliver_everything"),
        80,
        |seed, keep| Sim::new(seed, Profile::healthy(), keep),
        |_| Ok(()),
    );
}
