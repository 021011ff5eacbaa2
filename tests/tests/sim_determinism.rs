//! One seed is one run: the same seed twice gives the same trace, byte for byte (every input,
//! output, log record and peer action, with simulated times). This is what makes a failing
//! seed replayable.

use mcp_relay_tests::{run_seeds, test_name, Profile, Sim};

#[test]
fn the_same_seed_gives_the_same_trace() {
    run_seeds(
        test_name!("the_same_seed_gives_the_same_trace"),
        20,
        |seed, _| Sim::new(seed, Profile::chaos(), true),
        |first| {
            let mut second = Sim::new(first.seed, Profile::chaos(), true);
            second
                .run()
                .map_err(|f| format!("the second run failed: {f}"))?;
            let (a, b) = (
                first.trace.lines().expect("kept"),
                second.trace.lines().expect("kept"),
            );
            if let Some(i) = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)) {
                return Err(format!(
                    "the traces differ at line {i} of {}/{}:\n  first:  {:?}\n  second: {:?}",
                    a.len(),
                    b.len(),
                    a.get(i),
                    b.get(i)
                ));
            }
            if first.trace.digest() != second.trace.digest() {
                return Err("same lines, different digests".into());
            }
            Ok(())
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
