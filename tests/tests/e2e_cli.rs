//! End to end: the command line. Every startup mistake exits 2 with one readable error line
//! on stderr, `mcp-relay: …`: bad and unknown flags, a port in use, a TLS listener without
//! its certificate, bearer tokens with nothing to guard. A missing server command is only a
//! warning: the relay serves anyway.

mod common;

use common::{run_cli, CliOutput, Relay, DEADLINE};
use std::net::TcpListener;

/// Exit code 2, nothing on stdout, and stderr is exactly one error line (starting
/// `mcp-relay: `) that contains every one of `mentions`.
fn assert_usage_error(args: &[&str], mentions: &[&str]) {
    let out = run_cli(args);
    check_usage_error(args, &out, mentions);
}

fn check_usage_error(args: &[&str], out: &CliOutput, mentions: &[&str]) {
    assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    assert_eq!(out.stdout, "", "{args:?}: {out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: one error line expected: {lines:#?}"
    );
    let error = lines[0];
    assert!(error.starts_with("mcp-relay: "), "{args:?}: {error}");
    assert!(error.len() < 300, "{args:?}: not a readable line: {error}");
    for m in mentions {
        assert!(
            error.contains(m),
            "{args:?}: {error:?} does not mention {m:?}"
        );
    }
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
        &["unknown flag --frobnicate", "mcp-relay --help"],
    );
    assert_usage_error(
        &["--listen=127.0.0.1:0", "--demo"],
        &["unknown flag --listen=127.0.0.1:0", "--listen VALUE"],
    );
    assert_usage_error(&["--demo", "--listen"], &["--listen needs a value"]);
}

#[test]
fn bad_log_level_and_counts() {
    assert_usage_error(
        &[
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "verbose",
            "--demo",
        ],
        &["--log-level: `verbose` is not a log level (error, warn, info, debug, trace or off)"],
    );
    assert_usage_error(
        &[
            "--listen",
            "127.0.0.1:0",
            "--max-sessions",
            "lots",
            "--demo",
        ],
        &["--max-sessions: `lots` is not a whole number"],
    );
    assert_usage_error(
        &[
            "--listen",
            "127.0.0.1:0",
            "--max-message-size",
            "1.5MB",
            "--demo",
        ],
        &["`1.5MB` is not a size", "MB is 10^6 bytes"],
    );
}

/// TLS exists: an https:// or tls:// listener without its certificate says what it needs.
#[test]
fn tls_listener_without_a_certificate() {
    for listen in ["https://127.0.0.1:0", "tls://127.0.0.1:0"] {
        assert_usage_error(
            &["--listen", listen, "--demo"],
            &["needs --tls-cert FULLCHAIN.pem and --tls-key KEY.pem"],
        );
    }
}

/// Bearer tokens guard HTTP; with TCP listeners only they would guard nothing.
#[test]
fn auth_token_without_an_http_listener() {
    assert_usage_error(
        &["--listen", "127.0.0.1:0", "--auth-token", "t0k", "--demo"],
        &["--auth-token: bearer tokens guard HTTP listeners, and there is none"],
    );
    assert_usage_error(
        &["--connect", "http://127.0.0.1:9/mcp", "--auth-token", "t0k"],
        &["--auth-token: bearer tokens guard HTTP listeners"],
    );
}

/// A server command that cannot be run is a warning naming it; the relay serves anyway
/// (every session gets an error saying why), as the command may appear later.
#[test]
fn a_missing_server_command_is_a_warning() {
    let relay = Relay::builder()
        .command(["/nonexistent/mcp-server"])
        .start();
    relay.wait_log(
        "the server command `/nonexistent/mcp-server` does not exist; serving anyway",
        DEADLINE,
    );
    let relay = Relay::builder()
        .command(["no-such-mcp-server-e2e", "--stdio"])
        .start();
    relay.wait_log(
        "the server command `no-such-mcp-server-e2e` is not found in PATH",
        DEADLINE,
    );
    let mut client = relay.connect();
    client.send(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#);
    let (lines, _) = client.read_to_close();
    assert!(
        lines.iter().any(|l| l.contains("no-such-mcp-server-e2e")),
        "{lines:?}"
    );

    // Not executable.
    let dir = std::env::temp_dir().join(format!("mcp-relay-e2e-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let script = dir.join("server.sh");
    std::fs::write(&script, "#!/bin/sh\nexec cat\n").expect("write");
    let shown = script.display().to_string();
    let relay = Relay::builder().command([shown.as_str()]).start();
    relay.wait_log(&format!("`{shown}` is not executable"), DEADLINE);
    drop(relay);

    // A --config entry, by name.
    let config = dir.join("servers.json");
    std::fs::write(
        &config,
        r#"{"mcpServers": {"gone": {"command": "no-such-mcp-server-e2e", "default": true}}}"#,
    )
    .expect("write");
    let relay = Relay::builder().arg("--config").arg(&config).start();
    relay.wait_log(
        "server \"gone\": its command `no-such-mcp-server-e2e` is not found in PATH; serving anyway",
        DEADLINE,
    );
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
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
    assert_usage_error(&["--listen", &addr, "--demo"], &[&addr, "in use"]);
    let http = format!("http://{addr}");
    assert_usage_error(&["--listen", &http, "--demo"], &[&addr, "in use"]);
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
        // The notes: variables, units, signals.
        "MCP_RELAY_MAX_SESSIONS",
        "1h",
        "GB powers of 1000",
        "SIGHUP re-reads --tls-cert, --tls-key, --tls-client-ca and --config",
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
