//! Client mode under faults: the relay's stdio client in front of a scripted remote over
//! Streamable HTTP, HTTP+SSE and TCP ([`mcp_relay_tests::remote_sim`]). Connections cut
//! mid-stream, event streams ended before their answers and resumed, sessions forgotten,
//! connections refused, a remote that stalls, every byte stream split at random; every
//! request answered exactly once and in bounded time, no remote message lost or repeated,
//! resumptions at the advertised `retry`, buffers bounded, and the relay finished with every
//! connection closed.
//!
//! `SIM_SEEDS=<n>` runs more seeds per transport, `SIM_SEED=<n>` one.

use mcp_relay_tests::remote::Kind;
use mcp_relay_tests::remote_sim::{RemoteSim, Tally};
use mcp_relay_tests::{run_seeds, same_trace_twice, test_name};
use std::cell::RefCell;

const SEEDS: u64 = 100;

/// Runs the seeds of one transport; with enough of them, every fault must have happened.
fn family(name: mcp_relay_tests::TestName, kind: Kind) {
    let tally = RefCell::new(Tally::default());
    run_seeds(
        name,
        SEEDS,
        |seed, keep| RemoteSim::new(seed, kind, keep),
        |sim| {
            tally.borrow_mut().add(&sim.tally);
            Ok(())
        },
    );
    let t = tally.into_inner();
    eprintln!("{}: {t:?}", name.test);
    if mcp_relay_tests::runner::seeds(SEEDS).len() < 50 {
        return;
    }
    let r = &t.remote;
    let mut happened = vec![
        ("messages delivered", t.delivered),
        ("remotes found hung", t.hung),
        ("restarts", t.restarts),
        ("remote connections paused", t.upstream_pauses),
        ("connections refused", t.connect_failures),
        (
            "connections given up while connecting",
            t.connects_abandoned,
        ),
        ("requests cancelled", t.cancels),
        ("connections cut mid-message", r.cut_mid_message),
    ];
    if kind == Kind::Streamable {
        happened.extend([
            ("resumptions", r.resumes),
            ("resumptions timed", r.timed_resumes),
            ("requests sent again after a 404", r.resent_after_404),
            ("streams ended early", r.ended_early),
        ]);
    }
    for (what, n) in happened {
        assert!(
            n > 0,
            "no {what} in {SEEDS} runs: the family is vacuous there"
        );
    }
}

#[test]
fn streamable_http_remote() {
    family(test_name!("streamable_http_remote"), Kind::Streamable);
}

#[test]
fn legacy_sse_remote() {
    family(test_name!("legacy_sse_remote"), Kind::Sse);
}

#[test]
fn tcp_remote() {
    family(test_name!("tcp_remote"), Kind::Tcp);
}

/// One seed is one run, in client mode too.
#[test]
fn the_same_seed_gives_the_same_trace() {
    same_trace_twice(
        test_name!("the_same_seed_gives_the_same_trace"),
        6,
        100,
        |seed, keep| {
            let kind = [Kind::Streamable, Kind::Sse, Kind::Tcp][seed as usize % 3];
            RemoteSim::new(seed, kind, keep)
        },
    );
}
