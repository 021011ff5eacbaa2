//! Running many seeds, and replaying one.
//!
//! `SIM_SEED=<n>` runs exactly seed `n`; otherwise seeds `0..count` run, where `count` is the
//! test's default or `SIM_SEEDS=<count>`. `SIM_TRACE=<file>` writes the whole trace of the
//! last run (or of the failing one) to a file. A failure panics with the seed and the
//! command that replays it.

use crate::logger;
use crate::sim::Sim;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

/// Which test is running, for the replay command.
#[derive(Clone, Copy, Debug)]
pub struct TestName {
    /// The test target: the file name under `tests/tests/` without `.rs`.
    pub file: &'static str,
    /// The test function.
    pub test: &'static str,
}

impl TestName {
    pub fn replay(&self, seed: u64) -> String {
        format!(
            "SIM_SEED={seed} cargo test -p mcp-relay-tests --test {} -- {} --exact --nocapture",
            self.file, self.test
        )
    }
}

/// Names the calling test: `test_name!("random_runs")`.
#[macro_export]
macro_rules! test_name {
    ($test:literal) => {
        $crate::runner::TestName {
            file: env!("CARGO_CRATE_NAME"),
            test: $test,
        }
    };
}

/// The seeds to run: `SIM_SEED`, or `0..SIM_SEEDS`, or `0..default`.
pub fn seeds(default: u64) -> Vec<u64> {
    let var = |name: &str| -> Option<u64> {
        let v = std::env::var(name).ok()?;
        Some(
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        )
    };
    if let Some(seed) = var("SIM_SEED") {
        return vec![seed];
    }
    (0..var("SIM_SEEDS").unwrap_or(default)).collect()
}

/// Whether to keep whole traces (`SIM_TRACE` is set).
pub fn keep_trace() -> bool {
    std::env::var_os("SIM_TRACE").is_some()
}

/// Builds a run for each seed with `make`, runs it, then applies `after` to the finished run.
/// Panics on the first failure with the seed and the replay command.
pub fn run_seeds(
    name: TestName,
    default_seeds: u64,
    make: impl Fn(u64, bool) -> Sim,
    after: impl Fn(&Sim) -> Result<(), String>,
) {
    let started = Instant::now();
    let list = seeds(default_seeds);
    let mut steps = 0;
    let mut errors_logged = 0;
    let mut skipped = 0;
    for &seed in &list {
        let mut sim = make(seed, keep_trace());
        let result = catch_unwind(AssertUnwindSafe(|| sim.run()));
        logger::stop_capture();
        let failure = match result {
            Ok(Ok(())) => match after(&sim) {
                Ok(()) => None,
                Err(e) => Some(format!("{e}\nlast trace lines:\n{}", sim.trace.tail())),
            },
            Ok(Err(f)) if f.known.is_some() => {
                skipped += 1;
                eprintln!(
                    "{}::{}: seed {seed} skipped: known bug {} ({})",
                    name.file,
                    name.test,
                    f.known.unwrap_or_default(),
                    f.what
                );
                None
            }
            Ok(Err(f)) => Some(f.to_string()),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "(no message)".into());
                Some(format!(
                    "panicked at step {}: {msg}\nlast trace lines:\n{}",
                    sim.step,
                    sim.trace.tail()
                ))
            }
        };
        write_trace(&sim);
        if let Some(f) = failure {
            panic!(
                "\n{}::{} failed with seed {seed}: {f}\nreplay: {}\n(SIM_TRACE=/tmp/sim.trace \
                 writes the whole trace; SIM_STRICT=1 tolerates no known bug)\n",
                name.file,
                name.test,
                name.replay(seed)
            );
        }
        steps += sim.step;
        errors_logged += sim.errors_logged;
    }
    eprintln!(
        "{}::{}: {} seed(s) ({skipped} skipped), {steps} steps, {errors_logged} expected ERROR \
         records, {:.2?}",
        name.file,
        name.test,
        list.len(),
        started.elapsed()
    );
    assert!(
        skipped * 4 <= list.len().max(4),
        "{skipped} of {} seeds were skipped because of known bugs: the test no longer says much",
        list.len()
    );
}

fn write_trace(sim: &Sim) {
    let (Some(path), Some(lines)) = (std::env::var_os("SIM_TRACE"), sim.trace.lines()) else {
        return;
    };
    let mut text = lines.join("\n");
    text.push('\n');
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("cannot write {}: {e}", path.to_string_lossy());
    }
}
