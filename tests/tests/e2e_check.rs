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

// ---------------------------------------------------------------------------------------
// check --config FILE
// ---------------------------------------------------------------------------------------

/// A servers file with `servers` (the `mcpServers` object, in this order) and `relay`
/// settings, removed on drop.
fn servers_file(name: &str, servers: &[(&str, Value)], relay: Value) -> TempFile {
    let file = TempFile::new(name);
    let entries: Vec<String> = servers
        .iter()
        .map(|(name, entry)| format!("\n    {}: {entry}", Value::from(*name)))
        .collect();
    let text = format!(
        "{{\"mcpServers\": {{{}\n  }},\n  \"relay\": {relay}}}\n",
        entries.join(",")
    );
    std::fs::write(&file.0, text).expect("writing the servers file");
    file
}

fn demo_entry() -> Value {
    serde_json::json!({"command": bin(), "args": ["demo-server"]})
}

/// The table's row of server `name`, split into cells at runs of two spaces or more (no cell
/// of these rows has two spaces in it).
fn row<'a>(out: &'a CliOutput, name: &str) -> Vec<&'a str> {
    let line = out
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row for {name}: {out:?}"));
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

/// Two command entries and one remote (a relay serving the demo server): a row each, all
/// ok, in file order; a command that does not exist fails its row alone and the exit status.
#[test]
fn a_servers_file_is_checked_server_by_server() {
    let relay = http_support::HttpRelay::demo();
    let mut servers = vec![
        ("one", demo_entry()),
        ("two", demo_entry()),
        ("remote", serde_json::json!({"url": relay.url("/mcp")})),
    ];
    let file = servers_file("three", &servers, serde_json::json!({}));
    let out = check(&["--config", file.path()]);
    assert!(
        out.status.success(),
        "{out:?}\nthe serving relay's log:\n{}",
        relay.log_text()
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "a heading, 3 rows, a summary: {out:?}");
    let headings: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        headings,
        [
            "NAME",
            "KIND",
            "RESULT",
            "SERVER",
            "TOOLS",
            "RESOURCES",
            "PROMPTS",
            "TIME"
        ]
    );
    for (i, (name, kind)) in [("one", "stdio"), ("two", "stdio"), ("remote", "http")]
        .into_iter()
        .enumerate()
    {
        assert!(lines[i + 1].starts_with(name), "row {i}: {out:?}");
        let cells = row(&out, name);
        assert_eq!(cells.len(), 8, "{cells:?}");
        assert_eq!(&cells[1..3], [kind, "ok"], "{cells:?}");
        assert!(cells[3].starts_with("mcp-relay-demo "), "{cells:?}");
        assert_eq!(&cells[5..7], ["2", "1"], "resources and prompts: {cells:?}");
        assert!(cells[4].parse::<usize>().is_ok_and(|n| n > 0), "{cells:?}");
        assert!(cells[7].ends_with(" ms"), "{cells:?}");
    }
    assert_eq!(lines[4], "OK: 3 of 3 servers answered", "{out:?}");
    assert_eq!(out.stderr, "", "{out:?}");

    servers.insert(
        1,
        (
            "broken",
            serde_json::json!({"command": "/nonexistent/mcp-server"}),
        ),
    );
    let file = servers_file("broken", &servers, serde_json::json!({}));
    let out = check(&["--config", file.path()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let cells = row(&out, "broken");
    assert!(
        cells[2].starts_with("FAILED: cannot start `/nonexistent/mcp-server`"),
        "{cells:?}"
    );
    assert_eq!(&cells[3..7], ["-", "-", "-", "-"], "{cells:?}");
    for name in ["one", "two", "remote"] {
        assert_eq!(row(&out, name)[2], "ok", "{name}: {out:?}");
    }
    assert_eq!(
        out.stdout.lines().last(),
        Some("FAILED: 1 of 4 servers"),
        "{out:?}"
    );
    // The whole reason, on stderr, named after the server.
    assert!(
        out.stderr.starts_with(
            "mcp-relay check: broken: cannot start `/nonexistent/mcp-server`: not found"
        ),
        "{out:?}"
    );
}

#[test]
fn json_report_of_a_servers_file() {
    let file = servers_file(
        "json",
        &[
            ("demo", demo_entry()),
            (
                "gone",
                serde_json::json!({"command": "sh", "args": ["-c", "exit 3"], "env": {"API_KEY": "env-secret-value"}}),
            ),
        ],
        serde_json::json!({}),
    );
    let out = check(&["--json", "--timeout", "5s", "--config", file.path()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report = json_of(&out);
    assert_eq!(report["ok"], false, "{report}");
    let servers = report["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 2, "{report}");
    let demo = &servers[0];
    assert_eq!(demo["name"], "demo", "{demo}");
    assert_eq!(demo["kind"], "stdio", "{demo}");
    assert_eq!(demo["ok"], true, "{demo}");
    assert_eq!(demo["transport"], "stdio", "{demo}");
    assert_eq!(demo["server"]["name"], "mcp-relay-demo", "{demo}");
    assert_eq!(demo["protocolVersion"], "2025-11-25", "{demo}");
    assert_eq!(demo["prompts"], serde_json::json!(["greet"]), "{demo}");
    assert_eq!(demo["steps"].as_array().map(Vec::len), Some(5), "{demo}");
    assert!(demo["ms"].as_f64().is_some(), "{demo}");
    assert!(
        demo["target"]
            .as_str()
            .is_some_and(|t| t.ends_with("demo-server")),
        "{demo}"
    );
    let gone = &servers[1];
    assert_eq!(gone["name"], "gone", "{gone}");
    assert_eq!(gone["ok"], false, "{gone}");
    assert!(
        gone["error"]
            .as_str()
            .is_some_and(|e| e.contains("exit status 3")),
        "{gone}"
    );
    assert!(!out.stdout.contains("env-secret-value"), "{out:?}");
    assert!(!out.stderr.contains("env-secret-value"), "{out:?}");
}

/// A header reaches the remote as the file says, expanded once: its value holds `${HOME}`,
/// which a second expansion would replace (and the remote would refuse the token). Neither
/// value is printed. A wrong token fails that entry alone.
#[test]
fn a_remote_entrys_headers_are_sent_as_written_and_never_shown() {
    let token = "tok-${HOME}-x";
    let relay = http_support::HttpRelay::builder()
        .demo()
        .arg("--auth-token")
        .arg(token)
        .start();
    let file = servers_file(
        "headers",
        &[
            (
                "right",
                serde_json::json!({"url": relay.url("/mcp"), "headers": {"Authorization": "Bearer ${MCP_CHECK_E2E_TOKEN}"}}),
            ),
            (
                "wrong",
                serde_json::json!({"type": "http", "url": relay.url("/mcp"), "headers": {"Authorization": "Bearer not-it"}}),
            ),
        ],
        serde_json::json!({}),
    );
    let child = std::process::Command::new(relay_bin())
        .args(["check", "--timeout", "5s", "--config", file.path()])
        .env("MCP_CHECK_E2E_TOKEN", token)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning mcp-relay check");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = rx
        .recv_timeout(common::DEADLINE)
        .unwrap_or_else(|_| {
            common::signal(pid as i32, libc::SIGKILL);
            panic!("mcp-relay check did not exit within {:?}", common::DEADLINE)
        })
        .expect("waiting for mcp-relay check");
    let out = CliOutput {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert_eq!(
        out.status.code(),
        Some(1),
        "{out:?}\nthe serving relay's log:\n{}",
        relay.log_text()
    );
    assert_eq!(row(&out, "right")[2], "ok", "{out:?}");
    let wrong = row(&out, "wrong");
    assert!(wrong[2].starts_with("FAILED: "), "{wrong:?}");
    for secret in [token, "not-it"] {
        assert!(!out.stdout.contains(secret), "{secret} in {out:?}");
        assert!(!out.stderr.contains(secret), "{secret} in {out:?}");
    }
}

#[test]
fn a_servers_file_mistake_exits_2_with_its_message() {
    let file = TempFile::new("bad");
    std::fs::write(
        &file.0,
        "{\"mcpServers\": {\"a\": {\"command\": \"srv\", \"bogus\": 1}}}",
    )
    .expect("writing the servers file");
    let out = check(&["--config", file.path()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(out.stdout, "", "{out:?}");
    let expect = format!(
        "mcp-relay check: {}:1:41: server \"a\": unknown key \"bogus\"",
        file.path()
    );
    assert!(out.stderr.starts_with(&expect), "{expect:?} in {out:?}");

    let missing = TempFile::new("missing");
    let out = check(&["--config", missing.path()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("cannot read it"), "{out:?}");

    // With a URL or a command: a usage error.
    for args in [
        &["--config", file.path(), "http://127.0.0.1:1/mcp"][..],
        &["--config", file.path(), "--", "srv"],
    ] {
        let out = check(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains("leave out"), "{args:?}: {out:?}");
    }
}
