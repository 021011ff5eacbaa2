//! Faults on both sides, without restarts: servers that crash, close their stdout, hang or
//! leave a grandchild holding their pipes; clients that reset or close their socket. Each
//! fault ends its session cleanly: every request still gets exactly one answer (the
//! server's, or -32003/-32000 from the relay), nothing is written after a close, every child
//! is reaped and released, and nothing leaks into another connection.

use mcp_relay_tests::{run_seeds, test_name, Profile, Sim};
use std::cell::Cell;

#[test]
fn every_fault_ends_its_session_cleanly() {
    let faults = Cell::new(0usize);
    let default = 80;
    run_seeds(
        test_name!("every_fault_ends_its_session_cleanly"),
        default,
        |seed, keep| Sim::new(seed, Profile::crashes(), keep),
        |sim| {
            let n = sim
                .children
                .values()
                .filter(|c| {
                    let t = &c.server.traits;
                    t.crash.is_some() || t.close_stdout.is_some() || t.hang.is_some()
                })
                .count()
                + sim
                    .conns
                    .values()
                    .filter(|c| c.model.broken_step.is_some())
                    .count();
            faults.set(faults.get() + n);
            Ok(())
        },
    );
    if mcp_relay_tests::runner::seeds(default).len() as u64 >= default {
        assert!(faults.get() > 0, "no fault was injected: vacuous");
    }
}
