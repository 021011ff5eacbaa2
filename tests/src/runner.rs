//! Running many seeds, and replaying one — for every kind of world ([`Sim`], with TCP clients,
//! Streamable HTTP clients or both).
//!
//! `SIM_SEED=<n>` runs exactly seed `n`; otherwise seeds `0..count` run, where `count` is the
//! test's default or `SIM_SEEDS=<count>`. `SIM_TRACE=<file>` writes the whole trace of the
//! last run (or of the failing one) to a file. A failure panics with the seed and the
//! command that replays it. Nothing is tolerated: every failure is a failure.

use crate::logger;
use crate::sim::Sim;
use crate::trace::Trace;
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
    /// The exact command that runs this test with one seed.
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

/// One seeded run of a simulated world, as the seed runner sees it.
pub trait World {
    /// Runs to the end and checks every invariant; the error says what broke, where, and
    /// shows the end of the trace.
    fn run_world(&mut self) -> Result<(), String>;
    fn seed(&self) -> u64;
    /// Steps taken so far.
    fn steps(&self) -> u64;
    fn trace(&self) -> &Trace;
    /// A count for the summary line, named by [`World::TALLY`].
    fn tally(&self) -> u64;
    /// What [`World::tally`] counts.
    const TALLY: &'static str;
}

impl World for Sim {
    const TALLY: &'static str = "expected ERROR records and HTTP responses read";
    fn run_world(&mut self) -> Result<(), String> {
        self.run().map_err(|f| f.to_string())
    }
    fn seed(&self) -> u64 {
        self.seed
    }
    fn steps(&self) -> u64 {
        self.step
    }
    fn trace(&self) -> &Trace {
        &self.trace
    }
    fn tally(&self) -> u64 {
        self.errors_logged as u64 + self.http.http_responses
    }
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

/// Runs one world, catching a panic as a failure.
pub fn run_one<W: World>(world: &mut W) -> Result<(), String> {
    let result = catch_unwind(AssertUnwindSafe(|| world.run_world()));
    logger::stop_capture();
    match result {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "(no message)".into());
            Err(format!(
                "panicked at step {}: {msg}\nlast trace lines:\n{}",
                world.steps(),
                world.trace().tail()
            ))
        }
    }
}

/// Builds a run for each seed with `make`, runs it, then applies `after` to the finished run.
/// Panics on the first failure with the seed and the replay command.
pub fn run_seeds<W: World>(
    name: TestName,
    default_seeds: u64,
    make: impl Fn(u64, bool) -> W,
    after: impl Fn(&W) -> Result<(), String>,
) {
    let started = Instant::now();
    let list = seeds(default_seeds);
    let (mut steps, mut tally) = (0, 0);
    for &seed in &list {
        let mut world = make(seed, keep_trace());
        let failure = match run_one(&mut world) {
            Ok(()) => after(&world)
                .err()
                .map(|e| format!("{e}\nlast trace lines:\n{}", world.trace().tail())),
            Err(e) => Some(e),
        };
        write_trace(world.trace());
        if let Some(f) = failure {
            panic!(
                "\n{}::{} failed with seed {seed}: {f}\nreplay: {}\n(SIM_TRACE=/tmp/sim.trace \
                 writes the whole trace)\n",
                name.file,
                name.test,
                name.replay(seed)
            );
        }
        steps += world.steps();
        tally += world.tally();
    }
    eprintln!(
        "{}::{}: {} seed(s), {steps} steps, {tally} {}, {:.2?}",
        name.file,
        name.test,
        list.len(),
        W::TALLY,
        started.elapsed()
    );
}

/// Runs each seed twice with whole traces kept and requires the two traces to be equal line
/// for line (one seed is one run: what makes a failing seed replayable). Each trace must
/// have at least `min_lines` lines.
pub fn same_trace_twice<W: World>(
    name: TestName,
    default_seeds: u64,
    min_lines: usize,
    make: impl Fn(u64, bool) -> W,
) {
    run_seeds(
        name,
        default_seeds,
        |seed, _| make(seed, true),
        |first| {
            let mut second = make(first.seed(), true);
            run_one(&mut second).map_err(|f| format!("the second run failed: {f}"))?;
            let (a, b) = (
                first.trace().lines().unwrap_or_default(),
                second.trace().lines().unwrap_or_default(),
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
            if first.trace().digest() != second.trace().digest() {
                return Err("same lines, different digests".into());
            }
            if a.len() < min_lines {
                return Err(format!("a run of only {} trace lines says little", a.len()));
            }
            Ok(())
        },
    );
}

fn write_trace(trace: &Trace) {
    let (Some(path), Some(lines)) = (std::env::var_os("SIM_TRACE"), trace.lines()) else {
        return;
    };
    let mut text = lines.join("\n");
    text.push('\n');
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("cannot write {}: {e}", path.to_string_lossy());
    }
}
