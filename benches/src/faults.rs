//! `faults`: a soak of the relay under steady load with faults on a schedule, watching its
//! resources for anything that only goes up.
//!
//! One relay (`mcp-relay --demo`, TCP and Streamable HTTP listeners, pings every 2 s so that
//! hung servers are found, `--session-timeout 20s` so that abandoned HTTP sessions end soon)
//! serves `--sessions N` sessions, even-numbered over TCP, odd-numbered over HTTP, each a
//! thread of this program making calls to the demo server at a steady pace (`echo` mostly,
//! some `bytes` of 64 KiB, short `slow` calls and small `flood`s; TCP sessions keep up to
//! `--depth` calls in flight, HTTP sessions one). A session lives 20 to 90 s, then ends
//! cleanly (TCP close, HTTP `DELETE`) and is opened again, so sessions are always coming and
//! going.
//!
//! Every `--fault-every` seconds one fault, chosen with the target session by a generator
//! seeded with `--seed` (the schedule is the same for a seed; what the relay is doing at that
//! moment is not):
//!
//! * **crash**: the session calls the demo tool `crash` (its server exits with status 1);
//! * **kill**: SIGKILL to one of the relay's child processes (`/proc/<relay>/task/*/children`);
//! * **hang**: the session calls `hang` (its server stops reading and answering; the relay's
//!   ping finds it);
//! * **abandon**: the session sends a 3 s `slow` call and closes its connection 0.3 s later,
//!   without a `DELETE` over HTTP;
//! * **slow reader**: one more session (TCP or HTTP) with an 8 KiB receive buffer asks for
//!   `--slow-size` bytes (`bytes`) and reads its answer 4 KiB every 2 ms.
//!
//! **Every request must get exactly one answer**, a result or an error (the relay's -32003 when
//! its server crashed, was killed or hung). A request with no answer after
//! `--request-timeout` (60 s) while its connection stays open is **lost**; so is one
//! unanswered when the relay closes the connection more than 2 s after it was sent (the relay
//! answers everything in flight before it closes a connection). An answer to an id not in
//! flight is a **duplicate**. Requests on a connection this program abandoned are not
//! counted either way.
//!
//! Once a second, the relay's RSS (`VmRSS` in `/proc/<pid>/status`), its open descriptors
//! (entries of `/proc/<pid>/fd`) and its child processes are sampled. The relay makes itself
//! non-dumpable, so `/proc/<pid>/fd` of it can only be listed by root (or with
//! CAP_SYS_PTRACE): run the soak as root, or the descriptor column stays empty and its trend
//! is not judged. A line per minute shows the counts; at the end, a table.
//!
//! **Verdict** (exit status 1 with the reasons, 0 otherwise): after `--warmup` minutes (2 by
//! default), the mean of the last third of the samples is compared with the mean of the first
//! third: RSS may grow by at most 20 % + 2 MiB; children by at most `3 + N/10`; descriptors by at
//! most five times that (a session holds about five: its socket and its server's three pipes
//! and pidfd). Then the load stops, every session ends, and within `--session-timeout` + 20 s
//! the relay must be back to no children and the descriptors it had before the first
//! session. Any lost or duplicate answer, and a relay that exits, fail the run too.
//!
//! The relay inherits this program's environment, so glibc's `MALLOC_*` variables reach it:
//! with the default dynamic mmap threshold, freed multi-MiB message buffers stay in the heap
//! and the RSS floor creeps (see `benches/SOAK.md`); `MALLOC_MMAP_THRESHOLD_=1048576` pins the
//! threshold and tells that apart from a leak.

use crate::client::{find, parse_reply, Reply};
use crate::machine;
use crate::relay::{Error, RelayProc};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const MIB: f64 = 1024.0 * 1024.0;

/// The relay's flags for the soak.
const RELAY_ARGS: [&str; 13] = [
    "--listen",
    "127.0.0.1:0",
    "--listen",
    "http://127.0.0.1:0",
    "--demo",
    "--ping-interval",
    "2s",
    "--ping-timeout",
    "3s",
    "--session-timeout",
    "20s",
    "--log-level",
    "info",
];
/// Descriptors the relay may keep after its last session beyond those it had before the
/// first (something opened once, on first use).
const DRAIN_FD_SLACK: usize = 2;
/// `--session-timeout` above.
const SESSION_TIMEOUT: Duration = Duration::from_secs(20);
/// A request unanswered when the relay closes the connection counts as lost only if it was
/// sent at least this long before (one sent at the very moment may not have been read).
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub duration: Duration,
    pub sessions: usize,
    pub seed: u64,
    pub fault_every: Duration,
    pub warmup: Duration,
    /// Pause between two calls of one session.
    pub interval: Duration,
    /// Calls kept in flight on a TCP session.
    pub depth: usize,
    pub slow_size: usize,
    pub request_timeout: Duration,
}

/// The faults, in the order of the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Crash,
    Kill,
    Hang,
    Abandon,
    SlowReader,
}

const FAULTS: [Fault; 5] = [
    Fault::Crash,
    Fault::Kill,
    Fault::Hang,
    Fault::Abandon,
    Fault::SlowReader,
];

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Crash => "crash",
            Fault::Kill => "kill",
            Fault::Hang => "hang",
            Fault::Abandon => "abandon",
            Fault::SlowReader => "slow reader",
        }
    }
}

/// splitmix64: small, seeded, good enough for a schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Everything counted during the run.
#[derive(Clone, Default)]
struct Counts {
    sent: u64,
    results: u64,
    errors: BTreeMap<i64, u64>,
    lost: u64,
    duplicates: u64,
    /// Unanswered when the relay closed the connection, sent less than `CLOSE_GRACE` before.
    cut_off: u64,
    /// In flight on a connection this program abandoned.
    abandoned: u64,
    /// HTTP requests refused with a status other than 200/202 (by status).
    refused: BTreeMap<u16, u64>,
    opened: u64,
    open_failures: u64,
    ended_clean: u64,
    closed_by_relay: u64,
    faults: BTreeMap<Fault, u64>,
    kills_without_child: u64,
    slow_ok: u64,
    slow_failed: u64,
    problems: Vec<String>,
}

impl Counts {
    fn answered(&self) -> u64 {
        self.results + self.errors.values().sum::<u64>()
    }

    fn problem(&mut self, what: String) {
        eprintln!("[faults] PROBLEM: {what}");
        if self.problems.len() < 50 {
            self.problems.push(what);
        }
    }
}

/// What the threads share.
struct Ctx {
    tcp: SocketAddr,
    http: SocketAddr,
    cfg: Config,
    stop: AtomicBool,
    counts: Mutex<Counts>,
}

impl Ctx {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// One resource sample of the relay.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: f64,
    rss: u64,
    fds: Option<usize>,
    children: usize,
}

fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    out.sort_unstable();
    out
}

fn sample(pid: u32, start: Instant) -> Option<Sample> {
    Some(Sample {
        at: start.elapsed().as_secs_f64(),
        rss: machine::proc_status_bytes(pid, "VmRSS")?,
        fds: open_fds(pid),
        children: children(pid).len(),
    })
}

// ---------------------------------------------------------------------------------------------
// A connection with deadlines

/// Why a read gave up.
enum ReadEnd {
    /// The deadline passed.
    Timeout,
    /// End of stream or an error: the connection is gone.
    Closed(String),
}

/// A TCP connection read with deadlines (a short socket timeout, checked in a loop), and
/// optionally slowly (small reads with pauses).
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    start: usize,
    /// Bytes after `start` known to hold no newline.
    scanned: usize,
    slow: Option<(usize, Duration)>,
    /// What one read goes into (the chunk size for a slow reader).
    scratch: Vec<u8>,
}

impl Conn {
    fn connect(addr: SocketAddr, slow: bool) -> io::Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        if slow {
            let size: libc::c_int = 8 * 1024;
            // SAFETY: a valid socket descriptor and a pointer to a c_int of the given length.
            let rc = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Conn {
            s,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            scanned: 0,
            slow: slow.then_some((4096, Duration::from_millis(2))),
            scratch: vec![0; if slow { 4096 } else { 64 * 1024 }],
        })
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), ReadEnd> {
        self.s
            .write_all(bytes)
            .map_err(|e| ReadEnd::Closed(format!("write failed: {e}")))
    }

    /// Reads more bytes; `Timeout` once `deadline` has passed with nothing read.
    fn fill(&mut self, deadline: Instant) -> Result<(), ReadEnd> {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        loop {
            match self.s.read(&mut self.scratch) {
                Ok(0) => return Err(ReadEnd::Closed("end of stream".into())),
                Ok(n) => {
                    self.buf.extend_from_slice(&self.scratch[..n]);
                    if let Some((_, pause)) = self.slow {
                        std::thread::sleep(pause);
                    }
                    return Ok(());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return Err(ReadEnd::Timeout);
                    }
                }
                Err(e) => return Err(ReadEnd::Closed(format!("read failed: {e}"))),
            }
        }
    }

    /// The next line, without its line end (`\n` or `\r\n`).
    fn line(&mut self, deadline: Instant) -> Result<Vec<u8>, ReadEnd> {
        loop {
            let from = self.start + self.scanned;
            if let Some(i) = self.buf[from..].iter().position(|b| *b == b'\n') {
                let end = from + i;
                let mut line = self.buf[self.start..end].to_vec();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.start = end + 1;
                self.scanned = 0;
                return Ok(line);
            }
            self.scanned = self.buf.len() - self.start;
            self.fill(deadline)?;
        }
    }

    /// Exactly `n` bytes.
    fn take(&mut self, n: usize, deadline: Instant) -> Result<Vec<u8>, ReadEnd> {
        while self.buf.len() - self.start < n {
            self.fill(deadline)?;
        }
        let out = self.buf[self.start..self.start + n].to_vec();
        self.start += n;
        self.scanned = 0;
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Requests and answers

fn call_line(id: u64, tool: &str, args: &str) -> Vec<u8> {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
    )
    .into_bytes()
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"mcp-relay-faults","version":"0"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// A call of the steady load: mostly small echoes, some 64 KiB answers, short slow calls
/// and small floods of notifications.
fn steady_call(rng: &mut Rng, id: u64) -> (Vec<u8>, &'static str) {
    match rng.below(100) {
        0..=84 => {
            let n = rng.between(20, 2000) as usize;
            let msg: String = (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            (
                call_line(id, "echo", &format!(r#"{{"message":"{msg}"}}"#)),
                "echo",
            )
        }
        85..=91 => (call_line(id, "bytes", r#"{"n":65536}"#), "bytes"),
        92..=96 => (
            call_line(id, "slow", r#"{"steps":2,"interval_ms":50}"#),
            "slow",
        ),
        _ => (
            call_line(id, "flood", r#"{"count":20,"size":200}"#),
            "flood",
        ),
    }
}

/// The JSON-RPC error code of an error response.
fn error_code(line: &[u8]) -> Option<i64> {
    let at = find(line, b"\"error\":")?;
    let rest = &line[at..];
    let c = find(rest, b"\"code\":")? + 7;
    let text: String = rest[c..]
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| b.is_ascii_digit() || **b == b'-')
        .map(|b| *b as char)
        .collect();
    text.parse().ok()
}

/// A message that is not a response (a notification, or a request from the relay).
fn is_notification(line: &[u8]) -> bool {
    find(&line[..line.len().min(80)], b"\"method\":").is_some()
}

struct Pending {
    at: Instant,
    method: &'static str,
}

/// The requests of one session in flight, and the counting of their answers.
struct Tracker<'a> {
    ctx: &'a Ctx,
    who: String,
    inflight: BTreeMap<u64, Pending>,
    next_id: u64,
}

impl<'a> Tracker<'a> {
    fn new(ctx: &'a Ctx, who: String) -> Self {
        Tracker {
            ctx,
            who,
            inflight: BTreeMap::new(),
            next_id: 1,
        }
    }

    fn sent(&mut self, id: u64, method: &'static str) {
        self.inflight.insert(
            id,
            Pending {
                at: Instant::now(),
                method,
            },
        );
        self.ctx.counts().sent += 1;
    }

    /// Counts a message from the relay. Returns the id it answered, with its error code if
    /// it is an error.
    fn received(&mut self, line: &[u8]) -> Option<(u64, Option<i64>)> {
        if is_notification(line) {
            return None;
        }
        let Reply::Response { id, ok } = parse_reply(line) else {
            return None;
        };
        let code = if ok {
            None
        } else {
            Some(error_code(line).unwrap_or(0))
        };
        let mut c = self.ctx.counts();
        if self.inflight.remove(&id).is_none() {
            c.duplicates += 1;
            let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
            c.problem(format!(
                "{}: an answer to id {id}, which is not in flight: {shown}",
                self.who
            ));
            return None;
        }
        match code {
            None => c.results += 1,
            Some(code) => *c.errors.entry(code).or_default() += 1,
        }
        Some((id, code))
    }

    /// The oldest request in flight.
    fn oldest(&self) -> Option<(u64, &Pending)> {
        self.inflight
            .iter()
            .min_by_key(|(_, p)| p.at)
            .map(|(id, p)| (*id, p))
    }

    /// Whether a request has waited past the timeout: then everything in flight is counted
    /// lost.
    fn check_lost(&mut self) -> bool {
        match self.oldest() {
            Some((_, p)) if p.at.elapsed() >= self.ctx.cfg.request_timeout => self.lost_now(),
            _ => false,
        }
    }

    /// The connection is open and its deadline has passed: what is in flight is lost.
    fn lost_now(&mut self) -> bool {
        let Some((id, p)) = self.oldest() else {
            return false;
        };
        let what = format!(
            "{}: request {id} ({}) has had no answer for {:.0} s while its connection is open \
             ({} in flight)",
            self.who,
            p.method,
            p.at.elapsed().as_secs_f64(),
            self.inflight.len()
        );
        let n = self.inflight.len() as u64;
        self.inflight.clear();
        let mut c = self.ctx.counts();
        c.lost += n;
        c.problem(what);
        true
    }

    /// The connection was closed by the relay (or broke): what was in flight was not answered.
    fn closed(&mut self, why: &str) {
        let mut c = self.ctx.counts();
        c.closed_by_relay += 1;
        for (id, p) in std::mem::take(&mut self.inflight) {
            if p.at.elapsed() >= CLOSE_GRACE {
                c.lost += 1;
                c.problem(format!(
                    "{}: the connection closed ({why}) {:.1} s after request {id} ({}) was \
                     sent, without its answer",
                    self.who,
                    p.at.elapsed().as_secs_f64(),
                    p.method
                ));
            } else {
                c.cut_off += 1;
            }
        }
    }

    /// This program closes the connection on purpose.
    fn abandon(&mut self) {
        let n = self.inflight.len() as u64;
        self.inflight.clear();
        self.ctx.counts().abandoned += n;
    }

    fn take_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// A fault's request, if the fault is one a session carries out.
fn fault_call(f: Fault, id: u64) -> Option<(Vec<u8>, &'static str)> {
    match f {
        Fault::Crash => Some((call_line(id, "crash", "{}"), "crash")),
        Fault::Hang => Some((call_line(id, "hang", "{}"), "hang")),
        Fault::Abandon => Some((
            call_line(id, "slow", r#"{"steps":30,"interval_ms":100}"#),
            "slow (abandoned)",
        )),
        Fault::Kill | Fault::SlowReader => None,
    }
}

const ABANDON_AFTER: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// TCP sessions

/// One TCP session, from connect to its end. Returns when it has ended (for any reason).
fn tcp_session(ctx: &Ctx, who: &str, cmds: &Receiver<Fault>, rng: &mut Rng) {
    let mut conn = match Conn::connect(ctx.tcp, false) {
        Ok(c) => c,
        Err(e) => {
            let mut c = ctx.counts();
            c.open_failures += 1;
            c.problem(format!("{who}: cannot connect: {e}"));
            drop(c);
            std::thread::sleep(Duration::from_millis(500));
            return;
        }
    };
    ctx.counts().opened += 1;
    let mut t = Tracker::new(ctx, who.to_string());
    let life = Instant::now() + Duration::from_secs(rng.between(20, 90));
    let depth = ctx.cfg.depth.max(1);
    let mut ready = false;
    let mut next_send = Instant::now();
    let mut first = INITIALIZE.as_bytes().to_vec();
    first.push(b'\n');
    if let Err(ReadEnd::Closed(why)) = conn.send(&first) {
        t.closed(&why);
        return;
    }
    t.sent(0, "initialize");
    loop {
        if t.check_lost() {
            return;
        }
        let now = Instant::now();
        let ending = ctx.stopping() || now >= life;
        if ending && t.inflight.is_empty() {
            ctx.counts().ended_clean += 1;
            return;
        }
        if ready && !ending && t.inflight.len() < depth && now >= next_send {
            let id = t.take_id();
            let fault = cmds.try_recv().ok();
            let (mut line, method) = fault
                .and_then(|f| fault_call(f, id))
                .unwrap_or_else(|| steady_call(rng, id));
            line.push(b'\n');
            if let Err(ReadEnd::Closed(why)) = conn.send(&line) {
                t.closed(&why);
                return;
            }
            t.sent(id, method);
            if fault == Some(Fault::Abandon) {
                std::thread::sleep(ABANDON_AFTER);
                t.abandon();
                return;
            }
            next_send = now + ctx.cfg.interval;
            continue;
        }
        let mut deadline = now + Duration::from_millis(200);
        if ready && !ending && t.inflight.len() < depth {
            deadline = deadline.min(next_send);
        }
        match conn.line(deadline) {
            Ok(line) => {
                if let Some((0, code)) = t.received(&line) {
                    if code.is_some() {
                        // The session could not start (e.g. its server failed for good).
                        return;
                    }
                    let mut l = INITIALIZED.as_bytes().to_vec();
                    l.push(b'\n');
                    if let Err(ReadEnd::Closed(why)) = conn.send(&l) {
                        t.closed(&why);
                        return;
                    }
                    ready = true;
                }
            }
            Err(ReadEnd::Timeout) => {}
            Err(ReadEnd::Closed(why)) => {
                t.closed(&why);
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Streamable HTTP sessions

/// What one HTTP exchange gave.
struct Response {
    status: u16,
    /// The JSON-RPC messages in the body (a JSON body, or the `data:` of an event stream).
    messages: Vec<Vec<u8>>,
    session: Option<String>,
    close: bool,
}

/// A Streamable HTTP session: POSTs to `/mcp`, keep-alive, one exchange at a time.
struct HttpSession {
    addr: SocketAddr,
    conn: Option<Conn>,
    slow: bool,
    id: Option<String>,
}

impl HttpSession {
    fn new(addr: SocketAddr, slow: bool) -> Self {
        HttpSession {
            addr,
            conn: None,
            slow,
            id: None,
        }
    }

    /// Writes a request; opens the connection first if there is none.
    fn send(&mut self, method: &str, body: &[u8]) -> Result<(), ReadEnd> {
        if self.conn.is_none() {
            let c = Conn::connect(self.addr, self.slow)
                .map_err(|e| ReadEnd::Closed(format!("cannot connect: {e}")))?;
            self.conn = Some(c);
        }
        let mut req = format!(
            "{method} /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        )
        .into_bytes();
        if let Some(id) = &self.id {
            req.extend_from_slice(
                format!("Mcp-Session-Id: {id}\r\nMCP-Protocol-Version: 2025-06-18\r\n").as_bytes(),
            );
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        let conn = self
            .conn
            .as_mut()
            .ok_or(ReadEnd::Closed("no connection".into()))?;
        let r = conn.send(&req);
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    /// Reads the response to the request just sent.
    fn response(&mut self, deadline: Instant) -> Result<Response, ReadEnd> {
        let conn = self
            .conn
            .as_mut()
            .ok_or(ReadEnd::Closed("no connection".into()))?;
        let r = read_response(conn, deadline);
        match &r {
            Ok(resp) if !resp.close => {}
            _ => self.conn = None,
        }
        if let Ok(Response {
            session: Some(id), ..
        }) = &r
        {
            self.id = Some(id.clone());
        }
        r
    }

    fn exchange(
        &mut self,
        method: &str,
        body: &[u8],
        deadline: Instant,
    ) -> Result<Response, ReadEnd> {
        self.send(method, body)?;
        self.response(deadline)
    }

    /// Ends the session (DELETE), best effort.
    fn delete(&mut self, deadline: Instant) {
        if self.id.is_some() {
            let _ = self.exchange("DELETE", b"", deadline);
        }
    }
}

fn read_response(conn: &mut Conn, deadline: Instant) -> Result<Response, ReadEnd> {
    let status_line = conn.line(deadline)?;
    let status = std::str::from_utf8(&status_line)
        .ok()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ReadEnd::Closed("not an HTTP response".into()))?;
    let mut length = None;
    let mut chunked = false;
    let mut sse = false;
    let mut close = false;
    let mut session = None;
    loop {
        let line = conn.line(deadline)?;
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        let Some((name, value)) = text.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "content-type" => sse = value.starts_with("text/event-stream"),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "mcp-session-id" => session = Some(value.to_string()),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let line = conn.line(deadline)?;
            let text = String::from_utf8_lossy(&line);
            let size = usize::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| ReadEnd::Closed("bad chunk size".into()))?;
            if size == 0 {
                // Trailers end with an empty line.
                while !conn.line(deadline)?.is_empty() {}
                break;
            }
            body.extend_from_slice(&conn.take(size, deadline)?);
            conn.line(deadline)?;
        }
    } else if let Some(n) = length {
        body = conn.take(n, deadline)?;
    }
    let mut messages = Vec::new();
    if sse {
        for line in body.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(data) = line.strip_prefix(b"data:") {
                let data = data.strip_prefix(b" ").unwrap_or(data);
                if !data.is_empty() {
                    messages.push(data.to_vec());
                }
            }
        }
    } else if !body.is_empty() && (200..300).contains(&status) {
        messages.push(body);
    }
    Ok(Response {
        status,
        messages,
        session,
        close,
    })
}

/// POSTs one request and counts its answer. False when the session is over (closed, gone,
/// or a request was lost).
fn http_call(
    s: &mut HttpSession,
    t: &mut Tracker,
    id: u64,
    body: &[u8],
    method: &'static str,
) -> bool {
    let deadline = Instant::now() + t.ctx.cfg.request_timeout;
    if let Err(ReadEnd::Closed(why)) = s.send("POST", body) {
        let mut c = t.ctx.counts();
        c.open_failures += 1;
        c.problem(format!("{}: cannot send a POST: {why}", t.who));
        return false;
    }
    t.sent(id, method);
    match s.response(deadline) {
        Ok(r) => {
            let mut answered = false;
            for m in &r.messages {
                if let Some((got, _)) = t.received(m) {
                    answered |= got == id;
                }
            }
            if answered {
                return true;
            }
            // Not accepted: not in flight any more, and not an answer either.
            t.inflight.remove(&id);
            let mut c = t.ctx.counts();
            c.sent -= 1;
            *c.refused.entry(r.status).or_default() += 1;
            if r.status == 200 {
                c.problem(format!(
                    "{}: the response to POST of request {id} ({method}) has no answer to it",
                    t.who
                ));
                c.lost += 1;
                c.sent += 1;
            }
            // 404: the session is gone (the relay ended it); anything else: start over.
            false
        }
        Err(ReadEnd::Timeout) => {
            t.lost_now();
            false
        }
        Err(ReadEnd::Closed(why)) => {
            t.closed(&why);
            false
        }
    }
}

/// One HTTP session from `initialize` to its end; it is deleted unless it was abandoned.
fn http_session(ctx: &Ctx, who: &str, cmds: &Receiver<Fault>, rng: &mut Rng) {
    let mut s = HttpSession::new(ctx.http, false);
    if http_session_body(ctx, who, cmds, rng, &mut s) {
        s.delete(Instant::now() + Duration::from_secs(10));
    }
}

/// False when the session was abandoned on purpose.
fn http_session_body(
    ctx: &Ctx,
    who: &str,
    cmds: &Receiver<Fault>,
    rng: &mut Rng,
    s: &mut HttpSession,
) -> bool {
    let mut t = Tracker::new(ctx, who.to_string());
    let deadline = Instant::now() + ctx.cfg.request_timeout;
    if !http_call(s, &mut t, 0, INITIALIZE.as_bytes(), "initialize") || s.id.is_none() {
        ctx.counts().open_failures += 1;
        std::thread::sleep(Duration::from_millis(500));
        return true;
    }
    ctx.counts().opened += 1;
    match s.exchange("POST", INITIALIZED.as_bytes(), deadline) {
        Ok(r) if r.status == 202 => {}
        Ok(r) => {
            *ctx.counts().refused.entry(r.status).or_default() += 1;
            return true;
        }
        Err(_) => return true,
    }
    let life = Instant::now() + Duration::from_secs(rng.between(20, 90));
    loop {
        if ctx.stopping() || Instant::now() >= life {
            ctx.counts().ended_clean += 1;
            return true;
        }
        std::thread::sleep(ctx.cfg.interval);
        let id = t.take_id();
        let fault = cmds.try_recv().ok();
        let (line, method) = fault
            .and_then(|f| fault_call(f, id))
            .unwrap_or_else(|| steady_call(rng, id));
        if fault == Some(Fault::Abandon) {
            if s.send("POST", &line).is_ok() {
                t.sent(id, method);
                std::thread::sleep(ABANDON_AFTER);
                t.abandon();
            }
            // Dropped without DELETE: the relay ends the session after --session-timeout.
            return false;
        }
        if !http_call(s, &mut t, id, &line, method) {
            return true;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Slow readers

fn slow_reader(ctx: &Ctx, http: bool, n: usize, who: String) {
    let deadline = Instant::now() + ctx.cfg.request_timeout * 2;
    let mut t = Tracker::new(ctx, who.clone());
    let body = call_line(1, "bytes", &format!(r#"{{"n":{n}}}"#));
    let ok = if http {
        let mut s = HttpSession::new(ctx.http, true);
        let mut ok = http_call(&mut s, &mut t, 0, INITIALIZE.as_bytes(), "initialize")
            && s.exchange("POST", INITIALIZED.as_bytes(), deadline).is_ok();
        if ok {
            ok = false;
            if s.send("POST", &body).is_ok() {
                t.sent(1, "bytes (slow reader)");
                match s.response(deadline) {
                    Ok(r) => {
                        for m in &r.messages {
                            if let Some((1, code)) = t.received(m) {
                                ok = code.is_some() || m.len() >= n;
                            }
                        }
                        if !t.inflight.is_empty() {
                            t.closed(&format!("HTTP {} without the answer", r.status));
                        }
                    }
                    Err(ReadEnd::Timeout) => {
                        t.lost_now();
                    }
                    Err(ReadEnd::Closed(why)) => t.closed(&why),
                }
            }
        }
        s.delete(Instant::now() + Duration::from_secs(10));
        ok
    } else {
        slow_tcp(&mut t, &body, n, deadline)
    };
    let mut c = ctx.counts();
    if ok {
        c.slow_ok += 1;
    } else {
        c.slow_failed += 1;
        c.problem(format!("{who}: the {n}-byte answer did not arrive whole"));
    }
}

fn slow_tcp(t: &mut Tracker, body: &[u8], n: usize, deadline: Instant) -> bool {
    let Ok(mut conn) = Conn::connect(t.ctx.tcp, true) else {
        return false;
    };
    let mut out = INITIALIZE.as_bytes().to_vec();
    out.push(b'\n');
    out.extend_from_slice(INITIALIZED.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(body);
    out.push(b'\n');
    if conn.send(&out).is_err() {
        return false;
    }
    t.sent(0, "initialize");
    t.sent(1, "bytes (slow reader)");
    let mut ok = false;
    while !t.inflight.is_empty() {
        match conn.line(deadline) {
            Ok(line) => {
                if let Some((1, code)) = t.received(&line) {
                    ok = code.is_some() || line.len() >= n;
                }
            }
            Err(ReadEnd::Timeout) => {
                t.lost_now();
                return false;
            }
            Err(ReadEnd::Closed(why)) => {
                t.closed(&why);
                return false;
            }
        }
    }
    ok
}

// ---------------------------------------------------------------------------------------------
// The run

/// A session slot: opens sessions one after the other until the run stops.
fn worker(ctx: &Ctx, slot: usize, cmds: Receiver<Fault>, seed: u64) {
    let mut rng = Rng(seed ^ (slot as u64).wrapping_mul(0x1000_0000_01b3));
    let http = slot % 2 == 1;
    let mut n = 0;
    while !ctx.stopping() {
        n += 1;
        let who = format!(
            "session {slot} ({}, #{n})",
            if http { "HTTP" } else { "TCP" }
        );
        if http {
            http_session(ctx, &who, &cmds, &mut rng);
        } else {
            tcp_session(ctx, &who, &cmds, &mut rng);
        }
    }
}

/// The mean of one field over a part of the samples.
fn mean(samples: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = samples.iter().filter_map(f).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

struct Trend {
    name: &'static str,
    first: f64,
    last: f64,
    limit: f64,
    unit: &'static str,
}

impl Trend {
    fn failed(&self) -> bool {
        self.last > self.limit
    }
}

fn trends(samples: &[Sample], sessions: usize) -> Vec<Trend> {
    let third = samples.len() / 3;
    let (a, b) = (&samples[..third], &samples[samples.len() - third..]);
    let child_slack = 3.0 + (sessions / 10) as f64;
    let mut out = Vec::new();
    if let (Some(first), Some(last)) = (
        mean(a, |s| Some(s.rss as f64 / MIB)),
        mean(b, |s| Some(s.rss as f64 / MIB)),
    ) {
        out.push(Trend {
            name: "RSS",
            first,
            last,
            limit: first * 1.2 + 2.0,
            unit: "MiB",
        });
    }
    if let (Some(first), Some(last)) = (
        mean(a, |s| s.fds.map(|n| n as f64)),
        mean(b, |s| s.fds.map(|n| n as f64)),
    ) {
        out.push(Trend {
            name: "descriptors",
            first,
            last,
            limit: first + 5.0 * child_slack,
            unit: "",
        });
    }
    if let (Some(first), Some(last)) = (
        mean(a, |s| Some(s.children as f64)),
        mean(b, |s| Some(s.children as f64)),
    ) {
        out.push(Trend {
            name: "children",
            first,
            last,
            limit: first + child_slack,
            unit: "",
        });
    }
    out
}

fn fmt_errors(e: &BTreeMap<i64, u64>) -> String {
    if e.is_empty() {
        return "none".into();
    }
    e.iter()
        .map(|(code, n)| format!("{code}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn fmt_faults(f: &BTreeMap<Fault, u64>) -> String {
    FAULTS
        .iter()
        .map(|k| format!("{} {}", k.name(), f.get(k).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn range<T: Copy + Ord>(v: impl Iterator<Item = T>) -> Option<(T, T)> {
    v.fold(None, |acc, x| match acc {
        None => Some((x, x)),
        Some((lo, hi)) => Some((lo.min(x), hi.max(x))),
    })
}

fn minute_line(minute: u64, c: &Counts, prev: &Counts, window: &[Sample]) -> String {
    let rss = range(window.iter().map(|s| s.rss));
    let fds = range(window.iter().filter_map(|s| s.fds));
    let ch = range(window.iter().map(|s| s.children));
    let mut l = format!(
        "[faults] min {minute:>3}: {} answers (+{}), errors {}, faults {}, lost {}, dup {}",
        c.answered(),
        c.answered() - prev.answered(),
        fmt_errors(&c.errors),
        fmt_faults(&c.faults),
        c.lost,
        c.duplicates
    );
    if let Some((lo, hi)) = rss {
        let _ = write!(
            l,
            " | RSS {:.1}-{:.1} MiB",
            lo as f64 / MIB,
            hi as f64 / MIB
        );
    }
    if let Some((lo, hi)) = fds {
        let _ = write!(l, ", fds {lo}-{hi}");
    }
    if let Some((lo, hi)) = ch {
        let _ = write!(l, ", children {lo}-{hi}");
    }
    l
}

/// Runs the soak; `Ok(report)` when it passed, `Err(report with the reasons)` when not.
pub fn run(exe: &Path, cfg: Config) -> Result<String, Error> {
    machine::raise_nofile(16_384);
    let mut relay = RelayProc::start_args(exe, &RELAY_ARGS, None)?;
    let pid = relay.pid();
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let base = sample(pid, started).ok_or("cannot read the relay's /proc/<pid>/status")?;
    if base.fds.is_none() {
        eprintln!(
            "[faults] cannot list /proc/{pid}/fd (the relay is non-dumpable; run as root): \
             descriptors are not judged"
        );
    }
    eprintln!(
        "[faults] relay pid {pid}, tcp {} http {}; {} sessions for {:.1} min, a fault every \
         {:.1} s, seed {}; at start: RSS {:.1} MiB, {} descriptors, {} children",
        relay.addr,
        relay.http,
        cfg.sessions,
        cfg.duration.as_secs_f64() / 60.0,
        cfg.fault_every.as_secs_f64(),
        cfg.seed,
        base.rss as f64 / MIB,
        base.fds.map_or("?".into(), |n| n.to_string()),
        base.children
    );
    let ctx = Ctx {
        tcp: relay.addr,
        http: relay.http,
        cfg: cfg.clone(),
        stop: AtomicBool::new(false),
        counts: Mutex::new(Counts::default()),
    };
    let mut samples: Vec<Sample> = vec![base];
    let mut relay_exit = None;
    let mut schedule = Rng(cfg.seed);
    let mut slow_no = 0;
    let minutes_out = std::thread::scope(|scope| {
        let mut senders: Vec<Sender<Fault>> = Vec::new();
        for slot in 0..cfg.sessions {
            let (tx, rx) = mpsc::channel();
            senders.push(tx);
            let ctx = &ctx;
            let seed = cfg.seed;
            scope.spawn(move || worker(ctx, slot, rx, seed));
        }
        let mut minutes = Vec::new();
        let mut prev = Counts::default();
        let mut next_sample = started + Duration::from_secs(1);
        let mut next_fault = started + cfg.fault_every;
        let mut next_minute = started + Duration::from_secs(60);
        let end = started + cfg.duration;
        while Instant::now() < end {
            let now = Instant::now();
            if now >= next_sample {
                next_sample += Duration::from_secs(1);
                match sample(pid, started) {
                    Some(s) => samples.push(s),
                    None => {
                        relay_exit = Some("the relay's /proc entry is gone".to_string());
                        break;
                    }
                }
                if let Ok(Some(status)) = relay.try_wait() {
                    relay_exit = Some(format!("the relay exited with {status}"));
                    break;
                }
            }
            if now >= next_fault {
                next_fault += cfg.fault_every;
                let fault = FAULTS[schedule.below(FAULTS.len())];
                let target = schedule.below(cfg.sessions);
                let pick = schedule.next();
                match fault {
                    Fault::Kill => {
                        let kids = children(pid);
                        if kids.is_empty() {
                            ctx.counts().kills_without_child += 1;
                        } else {
                            let victim = kids[(pick % kids.len() as u64) as usize];
                            // SAFETY: kill has no memory-safety preconditions; the pid is a
                            // child of the relay (a demo server), read just now.
                            unsafe { libc::kill(victim as libc::pid_t, libc::SIGKILL) };
                        }
                    }
                    Fault::SlowReader => {
                        slow_no += 1;
                        let http = pick % 2 == 1;
                        let who = format!(
                            "slow reader #{slow_no} ({})",
                            if http { "HTTP" } else { "TCP" }
                        );
                        let ctx = &ctx;
                        let n = cfg.slow_size;
                        scope.spawn(move || slow_reader(ctx, http, n, who));
                    }
                    _ => {
                        let _ = senders[target].send(fault);
                    }
                }
                *ctx.counts().faults.entry(fault).or_default() += 1;
            }
            if now >= next_minute {
                next_minute += Duration::from_secs(60);
                let c = ctx.counts().clone();
                let m = minutes.len() as u64 + 1;
                let from = samples.len().saturating_sub(60);
                let line = minute_line(m, &c, &prev, &samples[from..]);
                eprintln!("{line}");
                minutes.push(line);
                prev = c;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        ctx.stop.store(true, Ordering::Relaxed);
        eprintln!("[faults] load stopped; waiting for the sessions to end");
        drop(senders);
        // The scope joins every session thread here.
        minutes
    });
    let load_end = samples.last().copied().unwrap_or(base);

    // Drain: no children, and the descriptors of before the first session.
    let drain_start = Instant::now();
    let drain_limit = SESSION_TIMEOUT + Duration::from_secs(20);
    let mut drained = None;
    while relay_exit.is_none() && drain_start.elapsed() < drain_limit {
        let Some(s) = sample(pid, started) else { break };
        let fds_back = match (s.fds, base.fds) {
            (Some(now), Some(was)) => now <= was + DRAIN_FD_SLACK,
            _ => true,
        };
        if s.children == 0 && fds_back {
            drained = Some((drain_start.elapsed(), s));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = sample(pid, started);

    // The verdict.
    let c = ctx.counts().clone();
    let mut reasons = Vec::new();
    if let Some(e) = &relay_exit {
        reasons.push(e.clone());
    }
    if c.lost > 0 {
        reasons.push(format!("{} requests lost", c.lost));
    }
    if c.duplicates > 0 {
        reasons.push(format!("{} answers to ids not in flight", c.duplicates));
    }
    if c.slow_failed > 0 {
        reasons.push(format!(
            "{} slow readers did not get their answer",
            c.slow_failed
        ));
    }
    let judged: Vec<Sample> = samples
        .iter()
        .copied()
        .filter(|s| s.at >= cfg.warmup.as_secs_f64())
        .collect();
    let trend = if judged.len() >= 30 {
        trends(&judged, cfg.sessions)
    } else {
        reasons.push(format!(
            "too short to judge a trend: {} samples after the warm-up (at least 30 needed)",
            judged.len()
        ));
        Vec::new()
    };
    for t in trend.iter().filter(|t| t.failed()) {
        reasons.push(format!(
            "{} trends upward: mean {:.1}{u} in the first third after the warm-up, {:.1}{u} in \
             the last (limit {:.1}{u})",
            t.name,
            t.first,
            t.last,
            t.limit,
            u = if t.unit.is_empty() {
                String::new()
            } else {
                format!(" {}", t.unit)
            }
        ));
    }
    if relay_exit.is_none() && drained.is_none() {
        reasons.push(format!(
            "{:.0} s after the last session ended the relay still had {} children and {} \
             descriptors ({} before the first session, {DRAIN_FD_SLACK} more allowed)",
            drain_limit.as_secs_f64(),
            after.map_or("?".into(), |s| s.children.to_string()),
            after
                .and_then(|s| s.fds)
                .map_or("?".into(), |n| n.to_string()),
            base.fds.map_or("?".into(), |n| n.to_string()),
        ));
    }
    let (warnings, errors, log_lines) = relay.log_problems();
    let stopped = relay.stop();
    if relay_exit.is_none() {
        if let Err(e) = stopped {
            reasons.push(format!("the relay did not stop cleanly: {e}"));
        }
    }

    // The report.
    let mut r = String::new();
    let _ = writeln!(r, "# mcp-relay soak with faults\n");
    let _ = writeln!(r, "- date: {}", machine::utc_now());
    let _ = writeln!(r, "- machine: {}", machine::description());
    let _ = writeln!(
        r,
        "- command: `mcp-relay-benches faults --minutes {} --sessions {} --seed {} --fault-every {} --depth {} --interval-ms {} --slow-size {}`",
        cfg.duration.as_secs_f64() / 60.0,
        cfg.sessions,
        cfg.seed,
        cfg.fault_every.as_secs_f64(),
        cfg.depth,
        cfg.interval.as_millis(),
        cfg.slow_size
    );
    let _ = writeln!(r, "- relay: `{} {}`", exe.display(), RELAY_ARGS.join(" "));
    let _ = writeln!(
        r,
        "- verdict: **{}**\n",
        if reasons.is_empty() {
            "passed".to_string()
        } else {
            format!("FAILED: {}", reasons.join("; "))
        }
    );
    let peak_rss = samples.iter().map(|s| s.rss).max().unwrap_or(0);
    let peak_fds = samples.iter().filter_map(|s| s.fds).max();
    let peak_ch = samples.iter().map(|s| s.children).max().unwrap_or(0);
    let fd = |v: Option<usize>| v.map_or("?".into(), |n| n.to_string());
    let _ = writeln!(
        r,
        "| | before the first session | end of load | peak | after drain |"
    );
    let _ = writeln!(r, "|---|---|---|---|---|");
    let _ = writeln!(
        r,
        "| RSS (MiB) | {:.1} | {:.1} | {:.1} | {} |",
        base.rss as f64 / MIB,
        load_end.rss as f64 / MIB,
        peak_rss as f64 / MIB,
        after.map_or("?".into(), |s| format!("{:.1}", s.rss as f64 / MIB))
    );
    let _ = writeln!(
        r,
        "| open descriptors | {} | {} | {} | {} |",
        fd(base.fds),
        fd(load_end.fds),
        fd(peak_fds),
        fd(after.and_then(|s| s.fds))
    );
    let _ = writeln!(
        r,
        "| child processes | {} | {} | {} | {} |",
        base.children,
        load_end.children,
        peak_ch,
        after.map_or("?".into(), |s| s.children.to_string())
    );
    let _ = writeln!(r);
    if !trend.is_empty() {
        let _ = writeln!(
            r,
            "Trend after the {}-minute warm-up ({} samples, one a second): mean of the first third → mean of the last third (limit):",
            cfg.warmup.as_secs_f64() / 60.0,
            judged.len()
        );
        for t in &trend {
            let _ = writeln!(
                r,
                "- {}: {:.2} → {:.2}{u} (limit {:.2}{u}){}",
                t.name,
                t.first,
                t.last,
                t.limit,
                if t.failed() { " **upward**" } else { "" },
                u = if t.unit.is_empty() {
                    String::new()
                } else {
                    format!(" {}", t.unit)
                }
            );
        }
        let _ = writeln!(r);
    }
    let total_faults: u64 = c.faults.values().sum();
    let _ = writeln!(r, "| count | value |");
    let _ = writeln!(r, "|---|---|");
    let rows: Vec<(&str, String)> = vec![
        (
            "session slots (half TCP, half HTTP)",
            cfg.sessions.to_string(),
        ),
        ("sessions opened", c.opened.to_string()),
        ("sessions ended cleanly", c.ended_clean.to_string()),
        (
            "connections closed by the relay",
            c.closed_by_relay.to_string(),
        ),
        ("session open failures", c.open_failures.to_string()),
        (
            "requests sent",
            format!(
                "{} ({:.0}/s over the load)",
                c.sent,
                c.sent as f64 / cfg.duration.as_secs_f64()
            ),
        ),
        ("answered with a result", c.results.to_string()),
        ("answered with an error (by code)", fmt_errors(&c.errors)),
        (
            "in flight on a connection closed on purpose",
            c.abandoned.to_string(),
        ),
        (
            "unanswered when the relay closed, sent < 2 s before",
            c.cut_off.to_string(),
        ),
        (
            "HTTP requests refused (by status)",
            if c.refused.is_empty() {
                "none".into()
            } else {
                c.refused
                    .iter()
                    .map(|(s, n)| format!("{s}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        ("**lost requests**", c.lost.to_string()),
        ("**duplicate answers**", c.duplicates.to_string()),
        (
            "faults",
            format!("{total_faults}: {}", fmt_faults(&c.faults)),
        ),
        (
            "kills with no child to kill",
            c.kills_without_child.to_string(),
        ),
        (
            "slow readers answered whole / failed",
            format!("{} / {}", c.slow_ok, c.slow_failed),
        ),
        (
            "drain after the load",
            match drained {
                Some((d, _)) => format!("{:.1} s to no children", d.as_secs_f64()),
                None => "did not drain".into(),
            },
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(r, "| {k} | {v} |");
    }
    let _ = writeln!(
        r,
        "\nThe relay logged {warnings} warnings and {errors} errors during the run{}",
        if log_lines.is_empty() {
            "."
        } else {
            "; the last of them:\n\n```"
        }
    );
    if !log_lines.is_empty() {
        for l in &log_lines {
            let _ = writeln!(r, "{l}");
        }
        let _ = writeln!(r, "```");
    }
    if !minutes_out.is_empty() {
        let _ = writeln!(r, "\nPer minute:\n\n```");
        for m in &minutes_out {
            let _ = writeln!(r, "{}", m.trim_start_matches("[faults] "));
        }
        let _ = writeln!(r, "```");
    }
    if !c.problems.is_empty() {
        let _ = writeln!(r, "\nProblems (first {}):\n", c.problems.len());
        for p in &c.problems {
            let _ = writeln!(r, "- {p}");
        }
    }
    if reasons.is_empty() {
        Ok(r)
    } else {
        Err(r.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_and_notifications() {
        assert_eq!(
            error_code(br#"{"jsonrpc":"2.0","id":3,"error":{"code":-32003,"message":"x"}}"#),
            Some(-32003)
        );
        assert_eq!(error_code(br#"{"id":3,"result":{}}"#), None);
        assert!(is_notification(
            br#"{"jsonrpc":"2.0","method":"$/mcp/serverRestarted","params":{}}"#
        ));
        assert!(!is_notification(br#"{"id":1,"jsonrpc":"2.0","result":{}}"#));
    }

    #[test]
    fn the_schedule_depends_on_the_seed_only() {
        let draw = |seed| {
            let mut r = Rng(seed);
            (0..20).map(|_| r.below(5)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn a_trend_is_judged_on_thirds() {
        let s = |i: usize, rss: u64, children: usize| Sample {
            at: i as f64,
            rss,
            fds: Some(10 + 5 * children),
            children,
        };
        let flat: Vec<Sample> = (0..90).map(|i| s(i, 8 << 20, 40 + i % 3)).collect();
        assert!(trends(&flat, 40).iter().all(|t| !t.failed()));
        let leaking: Vec<Sample> = (0..90)
            .map(|i| s(i, (8 << 20) + i as u64 * (1 << 18), 40 + i / 4))
            .collect();
        let t = trends(&leaking, 40);
        assert!(t.iter().all(Trend::failed), "every resource grows");
    }
}
