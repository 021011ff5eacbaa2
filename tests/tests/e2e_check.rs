//! End to end: `mcp-relay check`, the scriptable health check. It runs a session's opening
//! against a stdio command (or a URL, through client mode), reports it, exits 0 or 1 with a
//! reason, and never leaves the checked process running.

mod common;
mod http_support;

use common::{read_proc, relay_bin, run_cli, CliOutput};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A tiny stdio MCP server in Python, whose behaviour is its first argument:
/// - `error`: answers initialize with a JSON-RPC error;
/// - `requests`: before answering initialize, writes a banner, a notification and two
///   requests of its own (`ping`, `sampling/createMessage`), and names itself after whether
///   the answers were right; offers tools in three pages, and answers ping;
/// - `malformed`: answers initialize with neither a result nor an error.
const PY_SERVER: &str = r#"
import json, sys
mode = sys.argv[1]
def send(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()
def recv():
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)
    return json.loads(line)
init = recv()
if mode == "error":
    send({"jsonrpc": "2.0", "id": init["id"],
          "error": {"code": -32602, "message": "protocol 2025-11-25 is not\nsupported here"}})
elif mode == "malformed":
    send({"jsonrpc": "2.0", "id": init["id"]})
elif mode == "requests":
    print("a banner, not JSON", flush=True)
    send({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "hi"}})
    send({"jsonrpc": "2.0", "id": "s1", "method": "ping"})
    send({"jsonrpc": "2.0", "id": "s2", "method": "sampling/createMessage", "params": {}})
    got = {}
    while len(got) < 2:
        m = recv()
        got[m["id"]] = m
    right = got["s1"].get("result") == {} and got["s2"]["error"]["code"] == -32601
    send({"jsonrpc": "2.0", "id": init["id"], "result": {
        "protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
        "serverInfo": {"name": "answered" if right else "wrong:" + json.dumps(got), "version": "7"}}})
    while True:
        m = recv()
        if "id" not in m:
            continue
        if m["method"] == "tools/list":
            page = int(m.get("params", {}).get("cursor", "0"))
            result = {"tools": [{"name": "t%d" % page, "inputSchema": {"type": "object"}}]}
            if page < 2:
                result["nextCursor"] = str(page + 1)
            send({"jsonrpc": "2.0", "id": m["id"], "result": result})
        elif m["method"] == "ping":
            send({"jsonrpc": "2.0", "id": m["id"], "result": {}})
        else:
            send({"jsonrpc": "2.0", "id": m["id"], "error": {"code": -32601, "message": "no"}})
recv()
"#;

fn bin() -> &'static str {
    relay_bin().to_str().expect("the binary's path is UTF-8")
}

fn check(args: &[&str]) -> CliOutput {
    let mut argv = vec!["check"];
    argv.extend_from_slice(args);
    run_cli(&argv)
}

fn check_py(mode: &str, extra: &[&str]) -> CliOutput {
    let mut argv = extra.to_vec();
    argv.extend(["--", "python3", "-c", PY_SERVER, mode]);
    check(&argv)
}

/// A failed check: exit status 1, and stderr starts with one line, the reason.
fn failure_reason(out: &CliOutput) -> &str {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let reason = out.stderr.lines().next().unwrap_or_default();
    assert!(reason.starts_with("mcp-relay check: "), "{out:?}");
    reason
}

fn json_of(out: &CliOutput) -> Value {
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("--json printed no JSON object ({e}): {out:?}"))
}

/// A file in the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        TempFile(
            std::env::temp_dir().join(format!("mcp-relay-e2e-check-{}-{name}", std::process::id())),
        )
    }
    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temporary path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The process is gone: reaped, or a zombie waiting for its new parent to reap it.
fn assert_gone(pid: i32, what: &str) {
    if let Some(p) = read_proc(pid) {
        assert_eq!(p.state, 'Z', "{what} (pid {pid}) still runs: {p:?}");
    }
}

#[test]
fn the_demo_server_passes_and_its_lists_are_shown() {
    let out = check(&["--", bin(), "demo-server"]);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.last(), Some(&"OK"), "{}", out.stdout);
    for expect in [
        "server     mcp-relay-demo ",
        "protocol   2025-11-25",
        "transport  stdio",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(expect)),
            "{expect:?} in {}",
            out.stdout
        );
    }
    for step in [
        "initialize",
        "tools/list",
        "resources/list",
        "prompts/list",
        "ping",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.trim_start().starts_with(step) && l.contains(" ms")),
            "step {step} in {}",
            out.stdout
        );
    }
    let tools = lines
        .iter()
        .find(|l| l.starts_with("tools ("))
        .unwrap_or_else(|| panic!("no tools line: {}", out.stdout));
    assert!(tools.contains("echo, add"), "{tools}");
    assert!(out.stdout.contains("prompts (1): greet"), "{}", out.stdout);
    assert_eq!(out.stderr, "", "{out:?}");
}

#[test]
fn json_report_of_the_demo_server() {
    let out = check(&["--json", "--", bin(), "demo-server"]);
    assert!(out.status.success(), "{out:?}");
    let report = json_of(&out);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["server"]["name"], "mcp-relay-demo", "{report}");
    assert_eq!(report["protocolVersion"], "2025-11-25", "{report}");
    assert_eq!(report["transport"], "stdio", "{report}");
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            assert_eq!(s["ok"], true, "{s}");
            assert!(s["ms"].as_f64().is_some(), "{s}");
            s["name"].as_str().expect("a step name")
        })
        .collect();
    assert_eq!(
        steps,
        [
            "initialize",
            "tools/list",
            "resources/list",
            "prompts/list",
            "ping"
        ]
    );
    let tools = report["tools"].as_array().expect("tools");
    assert!(tools.contains(&"echo".into()), "{report}");
    assert_eq!(report["prompts"], serde_json::json!(["greet"]), "{report}");
    assert_eq!(
        report["resources"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
}

/// The server's own requests are answered (ping with `{}`, others with -32601), its
/// notifications and a non-JSON line are passed over, pages are followed, and a list the
/// server does not offer is not asked for.
#[test]
fn server_requests_are_answered_and_pages_followed() {
    let out = check_py("requests", &["--json"]);
    assert!(out.status.success(), "{out:?}");
    let report = json_of(&out);
    assert_eq!(report["server"]["name"], "answered", "{report}");
    assert_eq!(
        report["tools"],
        serde_json::json!(["t0", "t1", "t2"]),
        "{report}"
    );
    assert_eq!(report["resources"], Value::Null, "{report}");
    assert_eq!(report["prompts"], Value::Null, "{report}");
    assert_eq!(report["nonJsonLines"], 1, "{report}");
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(steps, ["initialize", "tools/list", "ping"]);
}

#[test]
fn a_server_that_exits_at_once_fails_with_its_status_and_last_words() {
    let out = check(&[
        "--",
        "sh",
        "-c",
        r"printf 'starting\n' >&2; printf 'fatal: no config\033[31m\n' >&2; exit 3",
    ]);
    let reason = failure_reason(&out);
    assert!(reason.contains("exited"), "{reason}");
    assert!(reason.contains("exit status 3"), "{reason}");
    assert!(
        out.stderr.contains(r"fatal: no config\u{1b}[31m"),
        "the last stderr lines, escaped: {out:?}"
    );
    assert!(
        !out.stderr.contains('\x1b'),
        "a raw escape sequence: {out:?}"
    );
    assert!(out.stdout.ends_with("FAILED\n"), "{out:?}");
}

#[test]
fn a_command_that_cannot_start_fails() {
    let out = check(&["--json", "--", "/nonexistent/mcp-server"]);
    let reason = failure_reason(&out);
    assert!(reason.contains("cannot start"), "{reason}");
    assert!(reason.contains("/nonexistent/mcp-server"), "{reason}");
    assert_eq!(json_of(&out)["ok"], false);
}

/// A server that never answers fails the step that waited, within about --timeout; it and
/// its own child are killed even though they ignore their closed stdin.
#[test]
fn a_server_that_never_answers_times_out_and_is_killed() {
    let pids = TempFile::new("pids");
    let script = format!("sleep 30 & echo $$ $! > {}; exec sleep 30", pids.path());
    let start = Instant::now();
    let out = check(&["--timeout", "1s", "--json", "--", "sh", "-c", &script]);
    let elapsed = start.elapsed();
    let reason = failure_reason(&out);
    assert!(reason.contains("timed out"), "{reason}");
    assert!(reason.contains("initialize"), "{reason}");
    assert!(reason.contains("1s"), "{reason}");
    // 1s of waiting, 2s of grace after stdin is closed, then SIGKILL.
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
    let report = json_of(&out);
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["steps"][0]["name"], "initialize", "{report}");
    assert_eq!(report["steps"][0]["ok"], false, "{report}");
    assert!(
        report["steps"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "{report}"
    );
    let written = std::fs::read_to_string(&pids.0).expect("the script wrote its pids");
    let pids: Vec<i32> = written
        .split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect();
    assert_eq!(pids.len(), 2, "{written:?}");
    assert_gone(pids[0], "the checked process");
    assert_gone(pids[1], "its child, in its process group");
}

/// A server that reads but never answers stops when its stdin is closed: the check does not
/// wait out the grace.
#[test]
fn a_silent_reader_is_stopped_by_closing_its_stdin() {
    let start = Instant::now();
    let out = check(&["--timeout", "1s", "--", "sh", "-c", "cat >/dev/null"]);
    let elapsed = start.elapsed();
    let reason = failure_reason(&out);
    assert!(reason.contains("timed out"), "{reason}");
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(2800),
        "closing stdin should have ended it well before the 2s grace: {elapsed:?}"
    );
}

#[test]
fn an_initialize_error_fails_with_its_message() {
    let out = check_py("error", &[]);
    let reason = failure_reason(&out);
    assert!(reason.contains("initialize failed"), "{reason}");
    assert!(reason.contains("-32602"), "{reason}");
    // The message's newline is escaped: the reason stays one line.
    assert!(
        reason.contains(r"protocol 2025-11-25 is not\nsupported here"),
        "{reason}"
    );
}

#[test]
fn malformed_output_fails() {
    let out = check_py("malformed", &[]);
    let reason = failure_reason(&out);
    assert!(reason.contains("malformed"), "{reason}");
    assert!(reason.contains("initialize"), "{reason}");
}

#[test]
fn usage_mistakes_exit_2() {
    for args in [
        &[][..],
        &["--"],
        &["http://127.0.0.1:1/mcp", "--", "srv"],
        &["--bearer-token", "t", "--", "srv"],
        &["--timeout", "0", "http://127.0.0.1:1/mcp"],
    ] {
        let out = check(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(
            out.stderr.starts_with("mcp-relay check: "),
            "{args:?}: {out:?}"
        );
    }
    let help = check(&["--help"]);
    assert!(help.status.success(), "{help:?}");
    assert!(help.stdout.contains("-- COMMAND"), "{}", help.stdout);
    let main_help = run_cli(&["--help"]);
    assert!(
        main_help.stdout.contains("mcp-relay check"),
        "{}",
        main_help.stdout
    );
}

/// Through client mode: `check URL` runs `mcp-relay --connect URL` and reports the transport
/// the relay found.
#[test]
fn a_url_is_checked_through_client_mode() {
    let relay = http_support::HttpRelay::demo();
    let url = relay.url("/mcp");
    let out = check(&["--json", "--timeout", "10s", &url]);
    assert!(
        out.status.success(),
        "{out:?}\nthe serving relay's log:\n{}",
        relay.log_text()
    );
    let report = json_of(&out);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["server"]["name"], "mcp-relay-demo", "{report}");
    assert_eq!(report["transport"], "streamable-http", "{report}");
    let tools = report["tools"].as_array().expect("tools");
    assert!(tools.contains(&"echo".into()), "{report}");
}
