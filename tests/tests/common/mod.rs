//! Shared helpers of the end-to-end tests (`tests/tests/e2e_*.rs`).
//!
//! They start the real `mcp-relay` binary on `127.0.0.1:0`, talk to it over real TCP
//! sockets, and watch its real child processes through `/proc`. Every wait has a deadline
//! and waits for an event (a log line, a socket read, a process appearing or disappearing),
//! never a bare sleep. Each [`Relay`] is killed (with whatever it left behind) when dropped.

// Every e2e file compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// The default bound of every wait: generous for a loaded 2-core machine, yet a hang fails
/// the test instead of the whole run.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// How often `/proc` is looked at while waiting for processes to come or go (there is no
/// event to wait on for another process's children).
const PROC_POLL: Duration = Duration::from_millis(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------

#[allow(unused_imports)]
pub use mcp_relay_tests::process::relay_bin;

/// Runs `mcp-relay` with `args` to completion (bounded by [`DEADLINE`]); for CLI checks.
pub fn run_cli(args: &[&str]) -> CliOutput {
    run_cli_with(args, |_| {})
}

/// [`run_cli`], with the command set up further by `setup` first (its environment, say).
pub fn run_cli_with(args: &[&str], setup: impl FnOnce(&mut Command)) -> CliOutput {
    let mut cmd = Command::new(relay_bin());
    setup(&mut cmd);
    let mut child = cmd
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning mcp-relay");
    let stdout = drain_in_thread(child.stdout.take().expect("stdout"));
    let stderr = drain_in_thread(child.stderr.take().expect("stderr"));
    let status = wait_child(&mut child, DEADLINE).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("mcp-relay {args:?} did not exit within {DEADLINE:?}");
    });
    CliOutput {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

fn drain_in_thread(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Waits for a process we spawned to exit, up to `timeout`.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(PROC_POLL);
    }
}

// ---------------------------------------------------------------------------------------
// The relay process
// ---------------------------------------------------------------------------------------

/// How to start a relay: `mcp-relay --listen 127.0.0.1:0 <args> [-- <command>]`.
pub struct RelayBuilder {
    args: Vec<OsString>,
    command: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    nofile: Option<u64>,
    unprivileged: bool,
}

impl RelayBuilder {
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Serves the built-in demo server (`--demo`).
    pub fn demo(self) -> Self {
        self.arg("--demo")
    }

    /// The server command, given after `--`.
    pub fn command<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, command: I) -> Self {
        self.command = command.into_iter().map(|a| a.as_ref().to_owned()).collect();
        self
    }

    /// An environment variable of the relay process.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Runs the relay with `RLIMIT_NOFILE` set to `limit` (soft and hard).
    pub fn nofile_limit(mut self, limit: u64) -> Self {
        self.nofile = Some(limit);
        self
    }

    /// Runs the relay as an ordinary user: when the tests run as root, as `nobody`
    /// (65534), so that what root's capabilities would allow (reading any process's
    /// `/proc` files) does not hide what an ordinary user cannot do.
    pub fn unprivileged(mut self) -> Self {
        self.unprivileged = true;
        self
    }

    /// Starts the relay and waits for its `listening on tcp://…` log line.
    pub fn start(self) -> Relay {
        let mut cmd = Command::new(relay_bin());
        cmd.arg("--listen").arg("127.0.0.1:0").args(&self.args);
        if !self.command.is_empty() {
            cmd.arg("--").args(&self.command);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let nofile = self.nofile;
        // SAFETY: getuid(2) is always safe.
        let drop_root = self.unprivileged && unsafe { libc::getuid() } == 0;
        if nofile.is_some() || drop_root {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs in the forked child before exec and only makes
            // async-signal-safe system calls (setrlimit, setgroups, setgid, setuid).
            unsafe {
                cmd.pre_exec(move || {
                    if let Some(limit) = nofile {
                        let rlim = libc::rlimit {
                            rlim_cur: limit as libc::rlim_t,
                            rlim_max: limit as libc::rlim_t,
                        };
                        if libc::setrlimit(libc::RLIMIT_NOFILE, &rlim) != 0 {
                            return Err(io::Error::last_os_error());
                        }
                    }
                    if drop_root
                        && (libc::setgroups(0, std::ptr::null()) != 0
                            || libc::setgid(65534) != 0
                            || libc::setuid(65534) != 0)
                    {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning mcp-relay");
        let stderr = child.stderr.take().expect("stderr");
        let log = Log::collect(stderr, format!("relay-{}-stderr", child.id()));
        let mut relay = Relay {
            pid: i32::try_from(child.id()).expect("pid fits i32"),
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            groups: Mutex::new(Vec::new()),
            status: None,
        };
        let line = relay
            .try_wait_log("listening on tcp://", DEADLINE)
            .unwrap_or_else(|| {
                panic!(
                    "the relay did not report its address within {DEADLINE:?}; its log:\n{}",
                    relay.log_text()
                )
            });
        let addr = line
            .split("listening on tcp://")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("cannot parse the address out of {line:?}"));
        relay.addr = addr;
        relay
    }
}

/// A running `mcp-relay`; killed (SIGKILL), with its leftover process groups, on drop.
pub struct Relay {
    child: Child,
    pid: i32,
    pub addr: SocketAddr,
    log: Arc<Log>,
    /// Process groups of children seen so far, killed on drop if anything is left in them.
    groups: Mutex<Vec<i32>>,
    status: Option<ExitStatus>,
}

impl Relay {
    pub fn builder() -> RelayBuilder {
        RelayBuilder {
            args: Vec::new(),
            command: Vec::new(),
            env: Vec::new(),
            nofile: None,
            unprivileged: false,
        }
    }

    /// `mcp-relay --listen 127.0.0.1:0 --demo`.
    pub fn demo() -> Relay {
        Relay::builder().demo().start()
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    // ---- log ----

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lines()
    }

    pub fn log_text(&self) -> String {
        self.log_lines().join("\n")
    }

    /// The first log line containing `needle`, waiting up to `timeout` for it.
    pub fn try_wait_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let mut found = None;
        self.log.wait(timeout, |lines| {
            found = lines.iter().find(|l| l.contains(needle)).cloned();
            found.is_some()
        });
        found
    }

    /// Like [`Relay::try_wait_log`], but a missing line fails the test (showing the log).
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        self.try_wait_log(needle, timeout).unwrap_or_else(|| {
            panic!(
                "no log line containing {needle:?} within {timeout:?}; the relay's log:\n{}",
                self.log_text()
            )
        })
    }

    /// Waits until at least `n` log lines contain `needle`.
    pub fn wait_log_count(&self, needle: &str, n: usize, timeout: Duration) {
        let ok = self.log.wait(timeout, |lines| {
            lines.iter().filter(|l| l.contains(needle)).count() >= n
        });
        assert!(
            ok,
            "fewer than {n} log lines contain {needle:?} after {timeout:?}; the relay's log:\n{}",
            self.log_text()
        );
    }

    pub fn log_count(&self, needle: &str) -> usize {
        self.log.count(needle)
    }

    // ---- processes ----

    /// The relay's child processes right now (zombies included).
    pub fn children(&self) -> Vec<Proc> {
        let kids: Vec<Proc> = all_procs()
            .into_iter()
            .filter(|p| p.ppid == self.pid)
            .collect();
        let mut groups = lock(&self.groups);
        for k in &kids {
            if k.pgrp != self.pid && k.pgrp > 1 && !groups.contains(&k.pgrp) {
                groups.push(k.pgrp);
            }
        }
        kids
    }

    /// Waits until the relay has exactly `n` children; returns them.
    pub fn wait_children(&self, n: usize, timeout: Duration) -> Vec<Proc> {
        let deadline = Instant::now() + timeout;
        loop {
            let kids = self.children();
            if kids.len() == n {
                return kids;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the relay has {} children, not {n}, after {timeout:?}: {kids:#?}\nits log:\n{}",
                    kids.len(),
                    self.log_text()
                );
            }
            thread::sleep(PROC_POLL);
        }
    }

    /// The relay's children that are zombies (exited, not reaped).
    pub fn zombies(&self) -> Vec<Proc> {
        self.children()
            .into_iter()
            .filter(|p| p.state == 'Z')
            .collect()
    }

    /// Remembers a process group so that drop kills what is left in it.
    pub fn track_group(&self, pgrp: i32) {
        let mut groups = lock(&self.groups);
        if pgrp > 1 && pgrp != self.pid && !groups.contains(&pgrp) {
            groups.push(pgrp);
        }
    }

    /// RSS of the relay in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid).expect("the relay's VmRSS")
    }

    // ---- lifetime ----

    pub fn signal(&self, sig: libc::c_int) {
        signal(self.pid, sig);
    }

    /// The relay's exit status, if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits for the relay to exit: first for its stderr to close (the event), then for the
    /// process to be reaped.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        self.log.wait(timeout, |_| false);
        wait_child(&mut self.child, timeout.saturating_sub(start.elapsed())).inspect(|s| {
            self.status = Some(*s);
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            signal(self.pid, libc::SIGKILL);
            let _ = self.child.wait();
        }
        // Whatever a failed test left behind (children die with the relay through
        // PR_SET_PDEATHSIG; grandchildren in their groups may not).
        for pgrp in lock(&self.groups).iter() {
            if !live_group_members(*pgrp).is_empty() {
                // SAFETY: kill(2) has no memory-safety preconditions; pgrp > 1 was checked.
                unsafe {
                    libc::kill(-pgrp, libc::SIGKILL);
                }
            }
        }
    }
}

pub fn signal(pid: i32, sig: libc::c_int) {
    assert!(pid > 1, "refusing to signal pid {pid}");
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}): {}", io::Error::last_os_error());
}

// ---------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------

// Each e2e file uses a different part of these.
#[allow(unused_imports)]
pub use mcp_relay_tests::process::{all_procs, read_proc, Log, Proc};

/// Every process (zombies included) in process group `pgrp`.
pub fn group_members(pgrp: i32) -> Vec<Proc> {
    all_procs().into_iter().filter(|p| p.pgrp == pgrp).collect()
}

/// The processes of group `pgrp` that still run: zombies are dead already. (A killed
/// grandchild is reparented to PID 1, which may take its time to reap it; a zombie child of
/// the relay itself shows up in [`Relay::children`] instead.)
pub fn live_group_members(pgrp: i32) -> Vec<Proc> {
    group_members(pgrp)
        .into_iter()
        .filter(|p| p.state != 'Z')
        .collect()
}

/// Waits until nothing runs any more in process group `pgrp`; returns how long that took, or
/// what still runs.
pub fn wait_group_gone(pgrp: i32, timeout: Duration) -> Result<Duration, Vec<Proc>> {
    let start = Instant::now();
    loop {
        let left = live_group_members(pgrp);
        if left.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(left);
        }
        thread::sleep(PROC_POLL);
    }
}

/// Waits until `pid` is no longer a live process (gone, or a zombie).
pub fn wait_pid_gone(pid: i32, timeout: Duration) -> Result<Duration, Proc> {
    let start = Instant::now();
    loop {
        match read_proc(pid) {
            None => return Ok(start.elapsed()),
            Some(p) if p.state == 'Z' => return Ok(start.elapsed()),
            Some(p) if start.elapsed() >= timeout => return Err(p),
            Some(_) => thread::sleep(PROC_POLL),
        }
    }
}

fn status_field(pid: i32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resident set size in KiB (`VmRSS`).
pub fn rss_kib(pid: i32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// Bytes a process has written so far (`wchar` of `/proc/<pid>/io`).
pub fn bytes_written(pid: i32) -> Option<u64> {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))?
        .trim()
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

/// What ended a read.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// Orderly end of stream.
    Eof,
    /// The peer reset the connection.
    Reset,
}

/// A line-oriented JSON-RPC client over one TCP connection. Reads time out after
/// [`DEADLINE`] (a test failure, not a hang).
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_id: i64,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, DEADLINE)
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        stream.set_write_timeout(Some(DEADLINE)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            writer: stream.try_clone().expect("clone"),
            reader: BufReader::with_capacity(256 * 1024, stream),
            next_id: 1000,
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.writer
            .set_read_timeout(Some(timeout))
            .expect("set_read_timeout");
    }

    /// Sends `line` plus a newline.
    pub fn send(&mut self, line: &str) {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        self.send_raw(&buf);
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("writing {} bytes to the relay: {e}", bytes.len()));
    }

    pub fn send_json(&mut self, msg: &Value) {
        self.send(&msg.to_string());
    }

    /// The next line (without its newline), or how the stream ended.
    pub fn next_line(&mut self) -> Result<String, Closed> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => Err(Closed::Eof),
            Ok(_) => {
                assert!(
                    buf.ends_with(b"\n"),
                    "the connection ended in the middle of a line: {:?}",
                    String::from_utf8_lossy(&buf[..buf.len().min(200)])
                );
                buf.pop();
                Ok(String::from_utf8(buf).expect("the relay sent UTF-8"))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Err(Closed::Reset),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!("no line from the relay within the read timeout ({e})")
            }
            Err(e) => panic!("reading from the relay: {e}"),
        }
    }

    /// The next line; the connection must still be open.
    pub fn read_line(&mut self) -> String {
        self.next_line()
            .unwrap_or_else(|c| panic!("expected a line, the connection closed: {c:?}"))
    }

    pub fn read_json(&mut self) -> Value {
        let line = self.read_line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Reads until the response with `id` arrives; returns it and the messages before it.
    pub fn read_response(&mut self, id: &Value) -> (Value, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            let msg = self.read_json();
            if msg.get("method").is_none() && msg.get("id") == Some(id) {
                return (msg, before);
            }
            before.push(msg);
        }
    }

    /// Sends a request and waits for its response (other messages are skipped).
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = json!(self.next_id);
        self.send_json(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        self.read_response(&id).0
    }

    /// `tools/call` of `name`; returns the whole response.
    pub fn call_tool(&mut self, name: &str, arguments: Value) -> Value {
        self.request("tools/call", json!({"name": name, "arguments": arguments}))
    }

    /// The MCP handshake: `initialize` then `notifications/initialized`.
    pub fn initialize(&mut self) -> Value {
        let resp = self.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "mcp-relay-e2e", "version": "0"},
            }),
        );
        assert!(resp.get("result").is_some(), "initialize failed: {resp}");
        self.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        resp
    }

    /// Reads every remaining line until the relay closes the connection.
    pub fn read_to_close(&mut self) -> (Vec<String>, Closed) {
        let mut lines = Vec::new();
        loop {
            match self.next_line() {
                Ok(line) => lines.push(line),
                Err(closed) => return (lines, closed),
            }
        }
    }

    /// The connection must be closed by the relay with nothing more sent.
    pub fn expect_closed(&mut self) -> Closed {
        let (lines, closed) = self.read_to_close();
        assert!(
            lines.is_empty(),
            "expected the relay to close, got {lines:?}"
        );
        closed
    }

    /// Closes our sending side (the relay sees end of file) but keeps reading.
    pub fn shutdown_write(&self) {
        self.writer.shutdown(Shutdown::Write).expect("shutdown");
    }
}

/// The text of the first content item of a `tools/call` response.
pub fn tool_text(resp: &Value) -> &str {
    resp["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("not a text tool result: {resp}"))
}

/// The error code of a JSON-RPC error response.
pub fn error_code(resp: &Value) -> i64 {
    resp["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error response: {resp}"))
}

// ---------------------------------------------------------------------------------------
// A program on pipes: a server run directly over stdio (no relay), for comparisons; the relay
// itself as a local stdio server (`--connect`); a client script driven step by step
// ---------------------------------------------------------------------------------------

/// A program started with its stdin and stdout on pipes, in a process group of its own; its
/// stdout is read line by line by a thread so that reads can have a deadline, its stderr is
/// collected (or dropped). Its group is killed on drop (a script's children with it).
pub struct StdioServer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: Option<Arc<Log>>,
}

impl StdioServer {
    /// Starts `program args` with its stderr dropped.
    pub fn start<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(program: &Path, args: I) -> Self {
        Self::spawn_with(Command::new(program).args(args), Stdio::null())
    }

    /// Starts `cmd` with stdin and stdout on pipes, and its stderr collected (see
    /// [`StdioServer::stderr_text`]).
    pub fn spawn(cmd: &mut Command) -> Self {
        Self::spawn_with(cmd, Stdio::piped())
    }

    fn spawn_with(cmd: &mut Command, stderr: Stdio) -> Self {
        use std::os::unix::process::CommandExt;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let stderr = child
            .stderr
            .take()
            .map(|err| Log::collect(err, format!("stdio-{}-stderr", child.id())));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut buf = Vec::new();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if buf.ends_with(b"\n") {
                            buf.pop();
                        }
                        let line = String::from_utf8(buf).expect("UTF-8 on stdout");
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        StdioServer {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"))
            .and_then(|()| stdin.flush())
            .expect("writing to the program's stdin");
    }

    pub fn send_json(&mut self, msg: &Value) {
        self.send(&msg.to_string());
    }

    pub fn read_line(&mut self) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|e| panic!("no line from the stdio server: {e}"))
    }

    /// The next line of stdout within `timeout`; `None` at the deadline or at its end.
    pub fn try_read_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Reads lines until one satisfies `pred`, within `timeout`; returns it and the lines
    /// before it, or `Err` with every line read if the deadline passed or stdout ended.
    pub fn read_until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Result<(String, Vec<String>), Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return Ok((line, before)),
                Ok(line) => before.push(line),
                Err(_) => return Err(before),
            }
        }
    }

    /// Reads JSON lines until the response with `id`, within `timeout`; returns it and the
    /// messages before it.
    pub fn read_response(&mut self, id: &Value, timeout: Duration) -> (Value, Vec<Value>) {
        let got = self.read_until(timeout, |line| {
            serde_json::from_str::<Value>(line)
                .is_ok_and(|m| m.get("method").is_none() && m.get("id") == Some(id))
        });
        match got {
            Ok((line, before)) => (
                serde_json::from_str(&line).expect("checked above"),
                before
                    .iter()
                    .map(|l| serde_json::from_str(l).unwrap_or(Value::String(l.clone())))
                    .collect(),
            ),
            Err(lines) => panic!(
                "no response with id {id} within {timeout:?} (or stdout ended first); stdout had {lines:?}\nstderr:\n{}",
                self.stderr_text()
            ),
        }
    }

    /// Closes its stdin (the program sees end of file).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for it to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    /// What it wrote on stderr so far (empty if stderr was not collected).
    pub fn stderr_text(&self) -> String {
        self.stderr
            .as_ref()
            .map(|l| l.lines().join("\n"))
            .unwrap_or_default()
    }
}

impl Drop for StdioServer {
    fn drop(&mut self) {
        self.stdin = None;
        // SAFETY: kill(2) has no memory-safety preconditions; the group is the one
        // process_group(0) made for this child (its pid), so never ours.
        unsafe {
            libc::kill(-self.pid(), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
