//! JSON-RPC batches in 2025-03-26 sessions: a client POSTs 2 to 4 calls (sometimes with a
//! notification among them) as one array, and each call gets exactly one answer on that
//! POST's stream (a batch of answers from the server, single answers in any order, or the
//! relay's error per request), none twice and none of another request.

use mcp_relay_tests::{run_seeds, test_name, HttpProfile, HttpSim};
use std::cell::Cell;

/// The sessions profile with many batches (in its 2025-03-26 sessions), and proof that the
/// seeds did send batches and got both batches of answers and single answers back.
#[test]
fn batches_get_one_answer_per_call() {
    let (sent, done, arrays, answered) = (Cell::new(0), Cell::new(0), Cell::new(0), Cell::new(0));
    run_seeds(
        test_name!("batches_get_one_answer_per_call"),
        60,
        |seed, keep| {
            let p = HttpProfile {
                calls: (2, 7),
                batches: 900,
                ..HttpProfile::sessions()
            };
            HttpSim::new(seed, p, keep)
        },
        |sim| {
            sent.set(sent.get() + sim.http.batches_sent);
            done.set(done.get() + sim.http.batches_completed);
            arrays.set(arrays.get() + sim.http.batch_answer_lines);
            answered.set(answered.get() + sim.http.batch_calls_answered);
            Ok(())
        },
    );
    eprintln!(
        "batches: {} sent, {} completed, {} batches of answers, {} calls answered",
        sent.get(),
        done.get(),
        arrays.get(),
        answered.get()
    );
    if std::env::var_os("SIM_SEED").is_none() {
        assert!(
            done.get() >= 10,
            "too few batches completed: {}",
            done.get()
        );
        assert!(
            arrays.get() >= 3,
            "too few batches of answers: {}",
            arrays.get()
        );
        assert!(
            answered.get() > 2 * arrays.get(),
            "batch calls were not also answered one by one"
        );
    }
}

/// Servers that crash, hang or fail to start under batches: the relay's errors (-32003,
/// -32000, 404) count once per request.
#[test]
fn batches_under_server_faults() {
    let (answered, failed) = (Cell::new(0), Cell::new(0));
    run_seeds(
        test_name!("batches_under_server_faults"),
        40,
        |seed, keep| {
            let p = HttpProfile {
                batches: 900,
                ..HttpProfile::faults()
            };
            HttpSim::new(seed, p, keep)
        },
        |sim| {
            answered.set(answered.get() + sim.http.batch_calls_answered);
            failed.set(failed.get() + sim.http.batch_calls_failed);
            Ok(())
        },
    );
    eprintln!(
        "batch calls: {} answered, {} ended without an answer",
        answered.get(),
        failed.get()
    );
    if std::env::var_os("SIM_SEED").is_none() {
        assert!(failed.get() > 0, "no batch call met a fault");
        assert!(answered.get() > 0, "no batch call was answered");
    }
}
