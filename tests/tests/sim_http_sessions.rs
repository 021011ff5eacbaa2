//! Streamable HTTP sessions: many sessions side by side, calls concurrent on connections of
//! their own, pipelined on one keep-alive connection or sequential, bodies sometimes chunked,
//! answers and progress delivered exactly once to the right session, sessions deleted.

use mcp_relay_tests::{run_seeds, test_name, HttpProfile, HttpSim};

/// 1 to 6 sessions, each initialized, then echo and slow calls with progress, some concurrent
/// on connections of their own, some pipelined on one keep-alive connection, some sequential
/// on one; bodies sometimes chunked; some sessions deleted at the end.
#[test]
fn sessions_with_concurrent_and_pipelined_calls() {
    run_seeds(
        test_name!("sessions_with_concurrent_and_pipelined_calls"),
        60,
        |seed, keep| HttpSim::new(seed, HttpProfile::sessions(), keep),
        |_| Ok(()),
    );
}
