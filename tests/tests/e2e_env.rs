//! End to end: flags from `MCP_RELAY_<FLAG>` variables. They configure the relay as the flags
//! would, the command line wins over them, their mistakes name the variable, and the servers
//! never see them.

mod common;
mod http_support;

use common::{relay_bin, run_cli_with, CliOutput, Client, Log, Relay, DEADLINE};
use http_support::{initialize_request, open_session, HttpRelay};
use serde_json::{json, Value};
use std::process::{Command, Stdio};

/// Runs `mcp-relay args` with `env` added to the environment (and every `MCP_RELAY_`
/// variable of the test's own environment removed), to completion.
fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    run_cli_with(args, |cmd| {
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("MCP_RELAY_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().copied());
    })
}

/// Exit status 2 and exactly one line on stderr, `mcp-relay: …`, holding `expect`.
fn assert_refused(args: &[&str], env: &[(&str, &str)], expect: &str) {
    let out = run_with_env(args, env);
    assert_eq!(out.status.code(), Some(2), "{env:?}: {out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{env:?}: {lines:#?}");
    assert!(
        lines[0].starts_with("mcp-relay: ") && lines[0].contains(expect),
        "{env:?}: {:?} does not hold {expect:?}",
        lines[0]
    );
}

/// A relay configured by variables alone: where it listens, what it serves, its limits.
#[test]
fn variables_alone_configure_the_relay() {
    let mut cmd = Command::new(relay_bin());
    let child = cmd
        .env("MCP_RELAY_LISTEN", "127.0.0.1:0")
        .env("MCP_RELAY_DEMO", "true")
        .env("MCP_RELAY_MAX_SESSIONS", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning mcp-relay");
    let mut child = KillOnDrop(child);
    let log = Log::collect(child.0.stderr.take().expect("stderr"), "relay-env".into());
    let listening = |lines: &[String]| lines.iter().any(|l| l.contains("listening on tcp://"));
    assert!(log.wait(DEADLINE, listening), "{:?}", log.lines());
    let line = log
        .lines()
        .into_iter()
        .find(|l| l.contains("listening on tcp://"))
        .expect("the line waited for");
    let addr = line
        .split("listening on tcp://")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|a| a.trim().parse().ok())
        .expect("an address");
    assert!(line.contains("demo-server"), "{line}");
    let mut a = Client::connect(addr);
    a.initialize();
    // MCP_RELAY_MAX_SESSIONS=1: a second client is told and closed.
    let mut b = Client::connect(addr);
    let (lines, _) = b.read_to_close();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let err: Value = serde_json::from_str(&lines[0]).expect("a JSON-RPC error line");
    assert!(err["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("--max-sessions")));
    let resp = a.call_tool("echo", json!({"message": "still here"}));
    assert_eq!(resp["result"]["content"][0]["text"], "still here");
}

/// A relay started here, killed when the test ends however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A flag on the command line wins over its variable; the other variables still apply.
#[test]
fn the_command_line_wins_over_a_variable() {
    let relay = Relay::builder()
        .demo()
        .env("MCP_RELAY_LISTEN", "http://127.0.0.1:0")
        .env("MCP_RELAY_MAX_SESSIONS", "1")
        .args(["--max-sessions", "2"])
        .start();
    let mut a = relay.connect();
    a.initialize();
    let mut b = relay.connect();
    b.initialize();
    assert_eq!(
        relay.log_count("listening on http://"),
        0,
        "{}",
        relay.log_text()
    );
}

/// The server sees none of the variables the relay read (nor the bearer token); an unknown
/// one is a warning naming it, and is left alone.
#[test]
fn servers_do_not_see_the_relays_variables() {
    let relay = Relay::builder()
        .env("MCP_RELAY_SHUTDOWN_GRACE", "2s")
        // Overridden by the command line's --listen, and removed all the same.
        .env("MCP_RELAY_LISTEN", "127.0.0.1:1")
        .env("MCP_RELAY_AUTH_TOKEN", "tok-e2e-env-4d1f")
        .args(["--listen", "http://127.0.0.1:0"])
        .env("MCP_RELAY_MAX_SESION", "3")
        .command([
            "sh",
            "-c",
            "env | grep '^MCP_RELAY_' | sed 's/^/seen: /' >&2; p=env-probe; echo \"$p: done\" >&2; exec cat >/dev/null",
        ])
        .start();
    relay.wait_log(
        "MCP_RELAY_MAX_SESION is not one of mcp-relay's variables (ignored): did you mean MCP_RELAY_MAX_SESSIONS?",
        DEADLINE,
    );
    let _client = relay.connect();
    // Spelled out at run time: the relay's line quoting the command does not match.
    relay.wait_log("env-probe: done", DEADLINE);
    let text = relay.log_text();
    for gone in [
        "seen: MCP_RELAY_SHUTDOWN_GRACE",
        "seen: MCP_RELAY_LISTEN",
        "seen: MCP_RELAY_AUTH_TOKEN",
        "tok-e2e-env-4d1f",
    ] {
        assert!(!text.contains(gone), "{gone}: {text}");
    }
    assert!(text.contains("seen: MCP_RELAY_MAX_SESION=3"), "{text}");
    assert_eq!(relay.log_count("listening on http://"), 1, "{text}");
    assert_eq!(relay.log_count("127.0.0.1:1"), 0, "{text}");
}

#[test]
fn mistakes_name_the_variable() {
    let base = ["--listen", "127.0.0.1:0", "--demo"];
    assert_refused(
        &base,
        &[("MCP_RELAY_DEBUG", "maybe")],
        "MCP_RELAY_DEBUG=maybe: expected 1, true or yes (or 0, false or no)",
    );
    assert_refused(
        &base,
        &[("MCP_RELAY_SHUTDOWN_GRACE", "5x")],
        "MCP_RELAY_SHUTDOWN_GRACE: `5x` is not a duration",
    );
    assert_refused(
        &base,
        &[("MCP_RELAY_MAX_SESSIONS", "0")],
        "--max-sessions must be at least 1 (from MCP_RELAY_MAX_SESSIONS)",
    );
    assert_refused(
        &["--demo"],
        &[("MCP_RELAY_LISTEN", "127.0.0.1:0,nonsense")],
        "MCP_RELAY_LISTEN, item 2: --listen nonsense",
    );
    assert_refused(
        &base,
        &[("MCP_RELAY_AUTH_TOKEN", "t")],
        "MCP_RELAY_AUTH_TOKEN: bearer tokens guard HTTP listeners, and there is none",
    );
    // The command line's value is used, and the variable's is not even looked at.
    let out = run_with_env(
        &["--shutdown-grace", "x5", "--demo"],
        &[("MCP_RELAY_SHUTDOWN_GRACE", "5x")],
    );
    assert!(
        out.stderr.contains("`x5`") && !out.stderr.contains("`5x`"),
        "{out:?}"
    );
    // --help answers whatever the environment holds.
    let out = run_with_env(&["--help"], &[("MCP_RELAY_DEBUG", "maybe")]);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("MCP_RELAY_MAX_SESSIONS"), "{out:?}");
}

/// A servers file whose `"relay"` says `relay`, in a directory of its own.
fn servers_file(name: &str, relay: Value) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mcp-relay-e2e-env-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("servers.json");
    let bin = relay_bin().display().to_string();
    let file = json!({
        "mcpServers": {"demo": {"command": bin, "args": ["demo-server"], "default": true}},
        "relay": relay,
    });
    std::fs::write(&path, file.to_string()).expect("write");
    path
}

/// A variable wins over the `--config` file's `"relay"` (a switch set to false included).
#[test]
fn a_variable_wins_over_the_config_file() {
    const VERSION: &str = "2025-06-18";
    let path = servers_file("file", json!({"max_sessions": 1, "no_healthz": true}));
    // The file alone: no /healthz, one session.
    let relay = HttpRelay::builder().arg("--config").arg(&path).start();
    let mut conn = relay.connect();
    assert_eq!(conn.request("GET", "/healthz", &[], b"").head.status, 404);
    open_session(&mut conn, VERSION);
    let second = conn.post_mcp(None, &initialize_request(VERSION));
    assert_eq!(second.status(), 503, "{second:?}");
    drop(relay);
    // The variables over it.
    let relay = HttpRelay::builder()
        .arg("--config")
        .arg(&path)
        .env("MCP_RELAY_NO_HEALTHZ", "no")
        .env("MCP_RELAY_MAX_SESSIONS", "3")
        .start();
    let mut conn = relay.connect();
    let resp = conn.request("GET", "/healthz", &[], b"");
    assert_eq!(resp.head.status, 200, "{}", relay.log_text());
    open_session(&mut conn, VERSION);
    open_session(&mut conn, VERSION);
    let _ = std::fs::remove_dir_all(path.parent().expect("its directory"));
}

/// `mcp-relay check` is not configured by the relay's variables, nor is the relay it runs
/// (which would otherwise listen, and refuse the token, instead of checking).
#[test]
fn check_ignores_the_relays_variables() {
    let relay = HttpRelay::builder().demo().start();
    let url = relay.url("/mcp");
    let out = run_with_env(
        &["check", &url],
        &[
            ("MCP_RELAY_LISTEN", "127.0.0.1:0"),
            ("MCP_RELAY_AUTH_TOKEN", "t0k"),
            ("MCP_RELAY_DEBUG", "maybe"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}
