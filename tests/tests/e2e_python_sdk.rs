//! End to end with the official MCP Python SDK as the client (tests/python/sdk_tcp_client.py,
//! `ClientSession` over a TCP stream) against (a) the demo server and (b) the reference
//! "everything" server from npm (tests/node), both behind the relay.
//!
//! Each test runs with both SDK majors, mcp 2.x and mcp 1.x, each from its own virtual
//! environment (tests/python/.venv-mcp2 and .venv-mcp1, made by .ci/run; or
//! $MCP_RELAY_PYTHON_V2 and $MCP_RELAY_PYTHON_V1, see `python_for_sdk`).
//!
//! Needs those virtual environments and `npm ci --prefix tests/node`.
//!
//! The tests that need them are `#[ignore]`d, so that the test summary counts them (as
//! ignored) when they do not run; `cargo test -- --include-ignored` runs them (as .ci/run
//! does), and then a missing one fails the test, naming what to install.

mod common;

use common::{wait_child, Relay, DEADLINE};
use mcp_relay_tests::process::{python_for_sdk, PYTHON_SDK_VERSION_PROBE};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

/// The script's own bound; the process is killed a little after it.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

fn tests_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The SDK majors every test runs with.
const SDK_MAJORS: [u32; 2] = [2, 1];

fn python(major: u32) -> String {
    python_for_sdk(major).to_string_lossy().into_owned()
}

/// Fails the test for a missing prerequisite, naming it (the tests are `#[ignore]`d: one that
/// runs was asked for).
fn skip(test: &str, why: &str) {
    panic!("{test}: {why} (an interop test: install its peers as README's Tests section says, or leave out --include-ignored)");
}

/// Runs a command to completion with a deadline; returns (success, stdout, stderr).
fn run_bounded(cmd: &mut Command, timeout: Duration) -> Option<(bool, String, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let mut out = child.stdout.take()?;
    let mut err = child.stderr.take()?;
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let status = match wait_child(&mut child, timeout) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
    };
    Some((
        status.success(),
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    ))
}

/// Whether the Python SDK `major`.x can be imported; the reason if not.
fn python_sdk_missing(major: u32) -> Option<String> {
    let py = python(major);
    let hint = format!("python3 -m venv tests/python/.venv-mcp{major} and install tests/python/requirements*.txt in it, as .ci/run does");
    match run_bounded(
        Command::new(&py).args(["-c", PYTHON_SDK_VERSION_PROBE]),
        DEADLINE,
    ) {
        None => Some(format!("{py} not found ({hint})")),
        Some((false, _, err)) => Some(format!(
            "the MCP Python SDK is not installed for {py} ({hint}): {}",
            err.lines().last().unwrap_or("")
        )),
        Some((true, out, _)) if !out.trim().starts_with(&format!("{major}.")) => Some(format!(
            "{py} has mcp {}, not {major}.x ({hint})",
            out.trim()
        )),
        Some((true, _, _)) => None,
    }
}

/// Runs the SDK script against the relay and checks it printed OK.
fn run_sdk_client(relay: &Relay, major: u32) {
    let script = tests_dir().join("python").join("sdk_tcp_client.py");
    let (ok, out, err) = run_bounded(
        Command::new(python(major))
            .arg(&script)
            .arg("--host")
            .arg(relay.addr.ip().to_string())
            .arg("--port")
            .arg(relay.addr.port().to_string())
            .arg("--timeout")
            .arg(SCRIPT_TIMEOUT.as_secs().to_string()),
        SCRIPT_TIMEOUT + Duration::from_secs(15),
    )
    .expect("running the SDK client");
    assert!(
        ok && out.lines().last() == Some("OK"),
        "the SDK {major}.x client failed.\nstdout:\n{out}\nstderr:\n{err}\nrelay log:\n{}",
        relay.log_text()
    );
    // What it did, for the test log (shown with --nocapture).
    println!("{err}");
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn python_sdk_against_the_demo_server() {
    for major in SDK_MAJORS {
        if let Some(why) = python_sdk_missing(major) {
            skip("python_sdk_against_the_demo_server", &why);
            continue;
        }
        let relay = Relay::demo();
        run_sdk_client(&relay, major);
        relay.wait_log("session ended", DEADLINE);
        relay.wait_children(0, DEADLINE);
    }
}

fn everything_server() -> PathBuf {
    tests_dir()
        .join("node")
        .join("node_modules")
        .join("@modelcontextprotocol")
        .join("server-everything")
        .join("dist")
        .join("index.js")
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn python_sdk_against_the_everything_server() {
    let server = everything_server();
    if !server.is_file() {
        return skip(
            "python_sdk_against_the_everything_server",
            &format!(
                "{} is missing (npm ci --prefix tests/node)",
                server.display()
            ),
        );
    }
    if !matches!(
        run_bounded(Command::new("node").arg("--version"), DEADLINE),
        Some((true, _, _))
    ) {
        return skip(
            "python_sdk_against_the_everything_server",
            "node is not installed",
        );
    }
    for major in SDK_MAJORS {
        if let Some(why) = python_sdk_missing(major) {
            skip("python_sdk_against_the_everything_server", &why);
            continue;
        }
        let relay = Relay::builder()
            .command(["node".as_ref(), server.as_os_str(), "stdio".as_ref()])
            .start();
        run_sdk_client(&relay, major);
        relay.wait_log("session ended", DEADLINE);
        relay.wait_children(0, DEADLINE);
    }
}
