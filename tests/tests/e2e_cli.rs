//! End to end: the command line. Mistakes exit 2 with one readable error line on stderr.

mod common;

use common::{run_cli, CliOutput};
use std::net::TcpListener;

/// Exit code 2, nothing on stdout, and stderr holds exactly one error line (starting
/// `mcp-relay: `) that contains every one of `mentions`; the only other line allowed is the
/// pointer to `--help`.
fn assert_usage_error(args: &[&str], mentions: &[&str]) {
    let out = run_cli(args);
    check_usage_error(args, &out, mentions);
}

fn check_usage_error(args: &[&str], out: &CliOutput, mentions: &[&str]) {
    assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    assert_eq!(out.stdout, "", "{args:?}: {out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    let errors: Vec<&&str> = lines
        .iter()
        .filter(|l| !l.starts_with("Run `mcp-relay --help`"))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "{args:?}: one error line expected: {lines:#?}"
    );
    let error = errors[0];
    assert!(error.starts_with("mcp-relay: "), "{args:?}: {error}");
    assert!(error.len() < 300, "{args:?}: not a readable line: {error}");
    for m in mentions {
        assert!(
            error.contains(m),
            "{args:?}: {error:?} does not mention {m:?}"
        );
    }
    assert!(lines.len() <= 2, "{args:?}: {lines:#?}");
}

#[test]
fn bad_listen_address() {
    assert_usage_error(
        &["--listen", "nonsense", "--demo"],
        &["--listen", "nonsense"],
    );
    assert_usage_error(
        &["--listen", "127.0.0.1:99999", "--demo"],
        &["127.0.0.1:99999"],
    );
    assert_usage_error(&["--listen", "udp://127.0.0.1:9000", "--demo"], &["udp"]);
}

#[test]
fn missing_listen_address() {
    assert_usage_error(&["--demo"], &["--listen"]);
}

#[test]
fn missing_server_command() {
    assert_usage_error(&["--listen", "127.0.0.1:0"], &["command"]);
    assert_usage_error(&["--listen", "127.0.0.1:0", "--"], &["command"]);
}

#[test]
fn demo_and_command_together() {
    assert_usage_error(
        &["--listen", "127.0.0.1:0", "--demo", "--", "x"],
        &["--demo"],
    );
}

#[test]
fn zero_max_message_size() {
    assert_usage_error(
        &[
            "--listen",
            "127.0.0.1:0",
            "--max-message-size",
            "0",
            "--demo",
        ],
        &["--max-message-size"],
    );
    assert_usage_error(
        &[
            "--listen",
            "127.0.0.1:0",
            "--max-message-size",
            "lots",
            "--demo",
        ],
        &["lots"],
    );
}

#[test]
fn bad_duration() {
    assert_usage_error(
        &[
            "--listen",
            "127.0.0.1:0",
            "--shutdown-grace",
            "5x",
            "--demo",
        ],
        &["--shutdown-grace", "5x"],
    );
    assert_usage_error(
        &[
            "--listen",
            "127.0.0.1:0",
            "--shutdown-grace",
            "-1",
            "--demo",
        ],
        &["-1"],
    );
}

#[test]
fn unknown_flag() {
    assert_usage_error(
        &["--listen", "127.0.0.1:0", "--frobnicate", "--demo"],
        &["--frobnicate"],
    );
}

#[test]
fn missing_cwd() {
    assert_usage_error(
        &[
            "--listen",
            "127.0.0.1:0",
            "--cwd",
            "/nonexistent/dir",
            "--demo",
        ],
        &["/nonexistent/dir"],
    );
}

#[test]
fn address_in_use_fails_to_start() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = run_cli(&["--listen", &addr, "--demo"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains(&addr), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
}

#[test]
fn version_and_help() {
    let out = run_cli(&["--version"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        out.stdout.trim(),
        format!("mcp-relay {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(out.stderr, "");

    let out = run_cli(&["--help"]);
    assert!(out.status.success(), "{out:?}");
    for flag in [
        "--listen",
        "--demo",
        "--shutdown-grace",
        "--max-message-size",
        "--max-buffered",
        "--version",
    ] {
        assert!(
            out.stdout.contains(flag),
            "--help lacks {flag}:\n{}",
            out.stdout
        );
    }
    assert_eq!(out.stderr, "");
}

#[test]
fn demo_server_help_lists_its_tools() {
    let out = run_cli(&["demo-server", "--help"]);
    assert!(out.status.success(), "{out:?}");
    for tool in ["echo", "flood", "hang", "crash"] {
        assert!(out.stdout.contains(tool), "{out:?}");
    }
}
