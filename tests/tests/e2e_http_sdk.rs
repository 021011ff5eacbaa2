//! End to end over HTTP with the official MCP SDKs as clients: the Python SDK
//! (tests/python/http_sdk_client.py: `streamable_http_client` and `sse_client`) and the
//! TypeScript SDK (tests/node/http_ts_client.mjs: `StreamableHTTPClientTransport` and
//! `SSEClientTransport`), each against (a) the demo server and (b) the reference
//! @modelcontextprotocol/server-everything, behind `mcp-relay --listen http://127.0.0.1:0`.
//!
//! Each client run checks initialize, tools, resources, prompts, progress, logging, the
//! sampling and elicitation round trips, ping, cancellation, 20 concurrent requests on one
//! session, two sessions without cross-talk and a 5 MiB payload each way, printing a
//! PASS/FAIL line per check. Afterwards every session must have ended (DELETE for
//! Streamable HTTP, the closed event stream for HTTP+SSE) and taken its child with it.
//!
//! The Python client runs with both SDK majors: mcp 2.x and mcp 1.x, each from its own
//! virtual environment (tests/python/.venv-mcp2 and .venv-mcp1, made by .ci/run; or
//! $MCP_RELAY_PYTHON_V2 and $MCP_RELAY_PYTHON_V1, see `python_for_sdk`).
//!
//! Needs those virtual environments and `npm ci --prefix tests/node`.
//!
//! The tests that need them are `#[ignore]`d, so that the test summary counts them (as
//! ignored) when they do not run; `cargo test -- --include-ignored` runs them (as .ci/run
//! does), and then a missing one fails the test, naming what to install.

mod http_support;

use http_support::{
    everything_missing, everything_relay, python_of, python_sdk_missing_of, run_bounded, show,
    skip, tests_dir, ts_sdk_missing, HttpRelay,
};
use std::process::Command;
use std::time::Duration;

/// The clients' own bound; the process is killed a little after it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(80);
/// Time for the sessions' children to go once the client left (a server that ignores the
/// end of its stdin gets SIGTERM after --shutdown-grace, 5 s by default).
const CHILDREN_GONE: Duration = Duration::from_secs(20);

#[derive(Clone, Copy)]
enum Sdk {
    /// The Python SDK of this major version (1 or 2).
    Python(u32),
    TypeScript,
}

fn client_command(sdk: Sdk, url: &str) -> Command {
    let timeout = CLIENT_TIMEOUT.as_secs().to_string();
    match sdk {
        Sdk::Python(major) => {
            let mut cmd = Command::new(python_of(major));
            cmd.arg(tests_dir().join("python").join("http_sdk_client.py"))
                .args(["--url", url, "--timeout", &timeout]);
            cmd
        }
        Sdk::TypeScript => {
            let mut cmd = Command::new("node");
            cmd.arg(tests_dir().join("node").join("http_ts_client.mjs"))
                .args(["--url", url, "--timeout", &timeout]);
            cmd
        }
    }
}

/// Runs the client over Streamable HTTP, then over HTTP+SSE, against the relay; each run
/// must pass every check, and leave no session and no child behind.
fn run_both_transports(test: &str, sdk: Sdk, relay: &HttpRelay) {
    for (round, path) in ["/mcp", "/sse"].into_iter().enumerate() {
        let url = relay.url(path);
        let ran = run_bounded(
            &mut client_command(sdk, &url),
            CLIENT_TIMEOUT + Duration::from_secs(15),
        )
        .unwrap_or_else(|| panic!("{test}: cannot start the client"));
        let summary = ran.stdout.lines().rev().find(|l| l.starts_with("SUMMARY"));
        assert!(
            ran.ok() && summary.is_some_and(|s| s.ends_with("failed=0")),
            "{test}: the SDK client failed at {url} ({}).\nstdout:\n{}\nstderr:\n{}\nrelay log:\n{}",
            ran.status,
            ran.stdout,
            ran.stderr,
            relay.log_text()
        );
        show(&format!("{test} {path}"), &ran);
        // Every session (two per run) ended when its client left, and its server with it.
        let want = 2 * (round + 1);
        let ended = relay.wait_for_log(CHILDREN_GONE, |lines| {
            lines.iter().filter(|l| l.contains("session ended")).count() >= want
        });
        assert!(
            ended,
            "{test}: {want} sessions should have ended by now; the relay's log:\n{}",
            relay.log_text()
        );
        relay.wait_children(0, CHILDREN_GONE);
    }
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn python_sdk_over_http_against_the_demo_server() {
    let test = "python_sdk_over_http_against_the_demo_server";
    if let Some(why) = python_sdk_missing_of(2) {
        return skip(test, &why);
    }
    let relay = HttpRelay::demo();
    run_both_transports(test, Sdk::Python(2), &relay);
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn python_sdk_over_http_against_the_everything_server() {
    let test = "python_sdk_over_http_against_the_everything_server";
    if let Some(why) = python_sdk_missing_of(2).or_else(everything_missing) {
        return skip(test, &why);
    }
    let relay = everything_relay();
    run_both_transports(test, Sdk::Python(2), &relay);
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn python_sdk1_over_http_against_the_demo_server() {
    let test = "python_sdk1_over_http_against_the_demo_server";
    if let Some(why) = python_sdk_missing_of(1) {
        return skip(test, &why);
    }
    let relay = HttpRelay::demo();
    run_both_transports(test, Sdk::Python(1), &relay);
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn python_sdk1_over_http_against_the_everything_server() {
    let test = "python_sdk1_over_http_against_the_everything_server";
    if let Some(why) = python_sdk_missing_of(1).or_else(everything_missing) {
        return skip(test, &why);
    }
    let relay = everything_relay();
    run_both_transports(test, Sdk::Python(1), &relay);
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn typescript_sdk_over_http_against_the_demo_server() {
    let test = "typescript_sdk_over_http_against_the_demo_server";
    if let Some(why) = ts_sdk_missing() {
        return skip(test, &why);
    }
    let relay = HttpRelay::demo();
    run_both_transports(test, Sdk::TypeScript, &relay);
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn typescript_sdk_over_http_against_the_everything_server() {
    let test = "typescript_sdk_over_http_against_the_everything_server";
    if let Some(why) = ts_sdk_missing().or_else(everything_missing) {
        return skip(test, &why);
    }
    let relay = everything_relay();
    run_both_transports(test, Sdk::TypeScript, &relay);
}
