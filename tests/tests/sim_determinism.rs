//! One seed is one run: the same seed twice gives the same trace, byte for byte (every input,
//! output, log record and peer action, with simulated times), over TCP and over HTTP. This is
//! what makes a failing seed replayable.

use mcp_relay_tests::{same_trace_twice, test_name, HttpProfile, HttpSim, Profile, Sim};

#[test]
fn the_same_seed_gives_the_same_trace() {
    same_trace_twice(
        test_name!("the_same_seed_gives_the_same_trace"),
        20,
        1,
        |seed, keep| Sim::new(seed, Profile::chaos(), keep),
    );
}

/// The same over Streamable HTTP, across its three families.
#[test]
fn the_same_seed_gives_the_same_http_trace() {
    same_trace_twice(
        test_name!("the_same_seed_gives_the_same_http_trace"),
        6,
        40,
        |seed, keep| {
            let profile = match seed % 3 {
                0 => HttpProfile::sessions(),
                1 => HttpProfile::resumption(),
                _ => HttpProfile::expiry(),
            };
            HttpSim::new(seed, profile, keep)
        },
    );
}

#[test]
fn different_seeds_give_different_runs() {
    let digest = |seed| {
        let mut sim = Sim::new(seed, Profile::chaos(), false);
        sim.run().expect("a chaos run passes");
        sim.trace.digest()
    };
    let digests: std::collections::BTreeSet<u64> = (0..8).map(digest).collect();
    assert_eq!(digests.len(), 8, "eight seeds, eight different traces");
}
