//! End to end with the MCP Inspector's command-line mode (`@modelcontextprotocol/inspector`
//! 1.x, the session-era Inspector, `--cli`) as the client, over Streamable HTTP and HTTP+SSE,
//! against the demo server behind `mcp-relay --listen http://127.0.0.1:0`.
//!
//! Needs `npm ci --prefix tests/node`.
//!
//! The tests that need them are `#[ignore]`d, so that the test summary counts them (as
//! ignored) when they do not run; `cargo test -- --include-ignored` runs them (as .ci/run
//! does), and then a missing one fails the test, naming what to install.

mod http_support;

use http_support::{node_missing, node_modules, run_bounded, show, skip, HttpRelay};
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

fn inspector() -> std::path::PathBuf {
    node_modules()
        .join("@modelcontextprotocol")
        .join("inspector")
        .join("cli")
        .join("build")
        .join("cli.js")
}

/// Runs one Inspector CLI method against `url`; its standard output.
fn inspect(url: &str, transport: &str, method: &[&str]) -> String {
    let mut cmd = Command::new("node");
    cmd.arg(inspector())
        .args(["--cli", url, "--transport", transport, "--method"])
        .args(method);
    let ran = run_bounded(&mut cmd, TIMEOUT).expect("the Inspector finished in time");
    if !ran.ok() {
        show(&format!("inspector {method:?}"), &ran);
        panic!("the Inspector failed: {method:?} over {transport}");
    }
    ran.stdout
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn the_inspector_cli_lists_and_calls_over_streamable_http_and_sse() {
    let test = "the_inspector_cli_lists_and_calls_over_streamable_http_and_sse";
    if let Some(why) = node_missing() {
        return skip(test, &why);
    }
    if !inspector().is_file() {
        return skip(
            test,
            &format!(
                "{} is missing (npm ci --prefix tests/node)",
                inspector().display()
            ),
        );
    }
    // The Inspector leaves its Streamable HTTP sessions without a DELETE: they expire.
    let relay = HttpRelay::builder()
        .demo()
        .args(["--session-timeout", "2s"])
        .start();
    for (path, transport) in [("/mcp", "http"), ("/sse", "sse")] {
        let url = relay.url(path);
        let tools = inspect(&url, transport, &["tools/list"]);
        assert!(tools.contains("\"echo\""), "{transport}: {tools}");
        let call = inspect(
            &url,
            transport,
            &[
                "tools/call",
                "--tool-name",
                "echo",
                "--tool-arg",
                "message=through the relay",
            ],
        );
        assert!(call.contains("through the relay"), "{transport}: {call}");
        let resources = inspect(&url, transport, &["resources/list"]);
        assert!(
            resources.contains("\"resources\""),
            "{transport}: {resources}"
        );
        let prompts = inspect(&url, transport, &["prompts/list"]);
        assert!(prompts.contains("\"prompts\""), "{transport}: {prompts}");
    }
    // Every session ended (the SSE ones with their stream, the others by expiry), and its
    // server with it.
    relay.wait_children(0, Duration::from_secs(20));
}
