//! The deployment kit (deploy/) and socket activation, end to end.
//!
//! - The systemd units pass `systemd-analyze verify`, and their hardening keeps
//!   `systemd-analyze security` at "OK". The tests that need systemd's tools are `#[ignore]`d
//!   (CI runs them with `--include-ignored`; there a missing tool fails the test).
//! - Under `systemd-socket-activate`, the relay serves on the sockets it is given (a TCP
//!   and an HTTP one, matched to `--listen` by address), MCP works over both, and its server
//!   sees neither the `LISTEN_*` variables nor the sockets.
//! - A relay restarted on the same socket (as systemd does with a socket unit) answers the
//!   connection that waited in the backlog while no relay ran.
//! - A socket that no `--listen` names is refused at start, naming it.

mod http_support;

// `skip` fails a test that was asked for and cannot find its tool.
use http_support::{open_session, skip, Conn, TempDir, DEADLINE, MCP_POST};
use mcp_relay_tests::process::{relay_bin, workspace, Log};
use serde_json::{json, Value};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The path of `program` on `$PATH`, if it is there.
fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// The unit files with `ExecStart=` pointing at the binary under test (verify checks that
/// the program exists), in a directory of the test's own.
fn units_under_test(test: &str) -> (TempDir, [PathBuf; 2]) {
    let dir = TempDir::new(test);
    let deploy = workspace().join("deploy");
    let bin = relay_bin().to_str().expect("a UTF-8 path").to_owned();
    let mut paths = Vec::new();
    for name in ["mcp-relay.socket", "mcp-relay.service"] {
        let text = std::fs::read_to_string(deploy.join(name))
            .unwrap_or_else(|e| panic!("reading deploy/{name}: {e}"));
        let path = dir.path().join(name);
        std::fs::write(&path, text.replace("/usr/local/bin/mcp-relay", &bin))
            .expect("writing a unit");
        paths.push(path);
    }
    let paths = [paths[0].clone(), paths[1].clone()];
    (dir, paths)
}

/// Runs a command to completion within [`DEADLINE`]; its status, stdout and stderr.
fn run(cmd: &mut Command) -> (ExitStatus, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let out = Log::collect(child.stdout.take().expect("stdout"), "stdout".into());
    let err = Log::collect(child.stderr.take().expect("stderr"), "stderr".into());
    let status = wait(&mut child, DEADLINE).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("{cmd:?} did not finish within {DEADLINE:?}")
    });
    // Both pipes are closed once the process is gone (nothing else holds them).
    out.wait(DEADLINE, |_| false);
    err.wait(DEADLINE, |_| false);
    (status, out.lines().join("\n"), err.lines().join("\n"))
}

fn wait(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
#[ignore = "interop: needs systemd-analyze and systemd-socket-activate (Debian's systemd); run with --include-ignored"]
fn the_units_pass_systemd_analyze_verify() {
    let Some(analyze) = which("systemd-analyze") else {
        return skip(
            "the_units_pass_systemd_analyze_verify",
            "systemd-analyze is not installed (Debian: apt-get install systemd)",
        );
    };
    let (_dir, units) = units_under_test("units-verify");
    let (status, out, err) = run(Command::new(&analyze).arg("verify").args(&units));
    // verify exits 0 on unknown keys and bad values (it ignores them): every line about
    // our units is a finding.
    let findings: Vec<&str> = out
        .lines()
        .chain(err.lines())
        .filter(|l| l.contains("mcp-relay"))
        .collect();
    assert!(
        status.success() && findings.is_empty(),
        "systemd-analyze verify: {status}\n{out}\n{err}"
    );
}

#[test]
#[ignore = "interop: needs systemd-analyze and systemd-socket-activate (Debian's systemd); run with --include-ignored"]
fn the_service_is_hardened() {
    let Some(analyze) = which("systemd-analyze") else {
        return skip(
            "the_service_is_hardened",
            "systemd-analyze is not installed (Debian: apt-get install systemd)",
        );
    };
    let (_dir, [_, service]) = units_under_test("units-security");
    // Exposure from 0 (locked down) to 10 (none); 1.5 when written. Above 2.0 a hardening
    // option was lost.
    let (status, out, err) = run(Command::new(&analyze)
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&service));
    let overall = out
        .lines()
        .chain(err.lines())
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}\n{err}"));
    assert!(status.success(), "{overall}\n{out}\n{err}");
}

// ---------------------------------------------------------------------------------------
// Socket activation
// ---------------------------------------------------------------------------------------

/// A relay started on inherited sockets, its stderr collected; killed on drop.
struct Activated {
    child: Child,
    log: Arc<Log>,
}

impl Activated {
    fn start(cmd: &mut Command) -> Activated {
        let mut child = cmd
            .env("RUST_LOG", "info")
            // Its HTTP sessions are open when it is stopped: they are drained for a second.
            .env("MCP_RELAY_DRAIN_TIMEOUT", "1s")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let log = Log::collect(child.stderr.take().expect("stderr"), "relay".into());
        Activated { child, log }
    }

    fn wait_log(&self, needle: &str) -> String {
        let mut found = None;
        self.log.wait(DEADLINE, |lines| {
            found = lines.iter().find(|l| l.contains(needle)).cloned();
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "no log line with {needle:?} within {DEADLINE:?}; the log:\n{}",
                self.log.lines().join("\n")
            )
        })
    }

    fn text(&self) -> String {
        self.log.lines().join("\n")
    }

    /// SIGTERM, and the exit status (SIGKILL, and a failure, past the deadline).
    fn stop(&mut self) -> ExitStatus {
        let pid = i32::try_from(self.child.id()).expect("pid fits i32");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        wait(&mut self.child, DEADLINE).unwrap_or_else(|| {
            let _ = self.child.kill();
            panic!(
                "the relay did not stop on SIGTERM; its log:\n{}",
                self.text()
            )
        })
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server command that reports, on stderr (which the relay logs), what it inherited:
/// `LISTEN_*` and its descriptors' kinds, then runs the demo server.
fn reporting_server() -> Vec<String> {
    let bin = relay_bin().to_str().expect("a UTF-8 path").to_owned();
    let script =
        "echo \"server-inherited: LISTEN_PID=${LISTEN_PID-unset} LISTEN_FDS=${LISTEN_FDS-unset} \
                  LISTEN_FDNAMES=${LISTEN_FDNAMES-unset} fds:$(for f in /proc/$$/fd/*; do \
                  printf ' %s' \"$(readlink \"$f\")\"; done)\" >&2; exec \"$0\" demo-server";
    vec!["sh".into(), "-c".into(), script.into(), bin]
}

/// What the server reported: no `LISTEN_*` variable, no socket among its descriptors.
fn assert_server_inherited_nothing(relay: &Activated) {
    let line = relay.wait_log("] server-inherited: ");
    assert!(
        line.contains("LISTEN_PID=unset LISTEN_FDS=unset LISTEN_FDNAMES=unset"),
        "the server saw the LISTEN_* variables: {line}"
    );
    assert!(
        !line.contains("socket:"),
        "the server inherited a socket: {line}"
    );
}

/// An MCP session over HTTP at `addr`: initialize, then tools/list, which has `echo`.
fn http_session_lists_tools(addr: SocketAddr) {
    let mut conn = Conn::connect(addr);
    let session = open_session(&mut conn, "2025-06-18");
    let resp = conn.post_mcp(
        Some(&session),
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    );
    assert_eq!(resp.status(), 200, "tools/list: {resp:?}");
    let list = resp.messages().pop().expect("a tools/list answer");
    let tools: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {list}"))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(tools.contains(&"echo"), "tools/list: {list}");
}

/// An MCP session over raw TCP at `addr`: initialize, then a tools/call of `echo`.
fn tcp_session_echoes(addr: SocketAddr) {
    let stream = TcpStream::connect_timeout(&addr, DEADLINE).expect("connecting over TCP");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    // Sends a message; reads the answer if it is a request.
    let mut send = |msg: Value| -> Option<Value> {
        writeln!(writer, "{msg}").expect("writing");
        msg.get("id")?;
        let mut line = String::new();
        reader.read_line(&mut line).expect("an answer line");
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
    };
    let init = send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "e2e-deploy", "version": "0"}}}),
    )
    .expect("an answer");
    assert!(init.get("result").is_some(), "initialize: {init}");
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let echo = send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "through systemd's socket"}}}))
    .expect("an answer");
    assert_eq!(
        echo["result"]["content"][0]["text"], "through systemd's socket",
        "echo: {echo}"
    );
}

/// Two addresses of 127.0.0.1 free a moment ago (for a program that binds them itself).
fn free_addrs() -> (SocketAddr, SocketAddr) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind");
    (a.local_addr().expect("addr"), b.local_addr().expect("addr"))
}

#[test]
#[ignore = "interop: needs systemd-analyze and systemd-socket-activate (Debian's systemd); run with --include-ignored"]
fn systemd_socket_activate_hands_the_relay_its_sockets() {
    let Some(activate) = which("systemd-socket-activate") else {
        return skip(
            "systemd_socket_activate_hands_the_relay_its_sockets",
            "systemd-socket-activate is not installed (Debian: apt-get install systemd)",
        );
    };
    let (tcp, http) = free_addrs();
    // The sockets in one order, the --listen flags in the other: matched by address.
    let mut relay = Activated::start(
        Command::new(activate)
            .arg(format!("--listen={http}"))
            .arg(format!("--listen={tcp}"))
            .arg("--fdname=web:raw")
            // It passes on only the variables it is told to.
            .args([
                "--setenv=RUST_LOG",
                "--setenv=PATH",
                "--setenv=MCP_RELAY_DRAIN_TIMEOUT",
            ])
            .arg(relay_bin())
            .args(["--listen", &format!("tcp://{tcp}")])
            .args(["--listen", &format!("http://{http}")])
            .arg("--")
            .args(reporting_server()),
    );
    // It binds both, then waits for a first connection to start the relay in its place.
    relay.wait_log(&format!("Listening on {tcp}"));
    http_session_lists_tools(http);
    tcp_session_echoes(tcp);
    let text = relay.text();
    for (addr, name) in [(http, "web"), (tcp, "raw")] {
        assert!(
            text.contains(&format!(
                "{addr}: using the socket passed by the service manager"
            )) && text.contains(&format!("({name:?})")),
            "no word of the socket for {addr}; the log:\n{text}"
        );
    }
    assert!(
        text.contains(&format!("listening on http://{http}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("listening on tcp://{tcp}")),
        "{text}"
    );
    assert_server_inherited_nothing(&relay);
    relay.stop();
}

/// `mcp-relay <args>` started as systemd starts a service of a socket unit: `socket` at
/// descriptor 3, `LISTEN_FDS=1`, `LISTEN_PID` its own pid (set by a shell that then execs
/// the relay, keeping the pid), `LISTEN_FDNAMES=web`.
fn with_socket(socket: &TcpListener, args: &[String]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(
            "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=web; \
             export LISTEN_PID LISTEN_FDS LISTEN_FDNAMES; exec \"$@\"",
        )
        .arg("sh")
        .arg(relay_bin())
        .args(args);
    let fd = socket.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and makes only
    // async-signal-safe calls (dup2, fcntl) on descriptor numbers.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 clears close-on-exec on the copy; a socket already at 3 is kept open
            // across exec by clearing it there.
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

#[test]
fn a_relay_restarted_on_the_same_socket_answers_what_waited_for_it() {
    // The test holds the socket, as a socket unit does.
    let socket = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = socket.local_addr().expect("addr");
    let mut args = vec!["--listen".to_owned(), format!("http://{addr}"), "--".into()];
    args.extend(reporting_server());

    let mut first = Activated::start(&mut with_socket(&socket, &args));
    first.wait_log(&format!("listening on http://{addr}"));
    assert!(
        first.text().contains(&format!(
            "{addr}: using the socket passed by the service manager (descriptor 3 (\"web\"))"
        )),
        "{}",
        first.text()
    );
    http_session_lists_tools(addr);
    assert_server_inherited_nothing(&first);
    first.stop();

    // No relay runs: the connection is queued by the kernel, and its request waits.
    let mut waiting = Conn::connect(addr);
    let init = http_support::initialize_request("2025-06-18");
    waiting.send("POST", "/mcp", &MCP_POST, init.to_string().as_bytes());

    let second = Activated::start(&mut with_socket(&socket, &args));
    let resp = waiting.read_response();
    assert_eq!(resp.status(), 200, "{resp:?}");
    let answer = resp.messages().pop().expect("an initialize answer");
    assert!(answer.get("result").is_some(), "initialize: {answer}");
    http_session_lists_tools(addr);
    drop(second);
}

#[test]
fn a_socket_no_listen_names_is_refused_at_start() {
    let socket = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = socket.local_addr().expect("addr");
    let other = TcpListener::bind("127.0.0.1:0").expect("bind");
    let other = other.local_addr().expect("addr");
    let args = [
        "--listen".to_owned(),
        format!("http://{other}"),
        "--demo".into(),
    ];
    let (status, _, err) = run(&mut with_socket(&socket, &args));
    assert_eq!(status.code(), Some(2), "{err}");
    let expected = format!(
        "mcp-relay: socket activation: descriptor 3 (\"web\") is bound to {addr}, and no \
         --listen names that address"
    );
    assert!(err.contains(&expected), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn listen_variables_for_another_process_are_ignored_and_removed() {
    // LISTEN_PID names another process (pid 1): the relay binds its own socket, touches no
    // descriptor, and its server does not see the variables.
    let (addr, _) = free_addrs();
    let mut relay = Activated::start(
        Command::new(relay_bin())
            .env("LISTEN_PID", "1")
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDNAMES", "web")
            .args(["--listen", &format!("http://{addr}"), "--"])
            .args(reporting_server()),
    );
    relay.wait_log(&format!("listening on http://{addr}"));
    http_session_lists_tools(addr);
    assert!(
        !relay.text().contains("service manager"),
        "{}",
        relay.text()
    );
    assert_server_inherited_nothing(&relay);
    relay.stop();
}
