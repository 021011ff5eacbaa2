//! Scale: whether idle sessions make the busy ones slower. New-session latency and the cost
//! of a message must not grow with the number of sessions open: with 1,000 and 10,000 idle
//! sessions (TCP, and Streamable HTTP), the time to first response and the sequential small
//! p50 must stay within 1.2× of their values with none.
//!
//! For each transport two relays run side by side with the same flags: one that never holds
//! an idle session (the baseline, N = 0), and one filled with N idle sessions. Repetitions
//! alternate direct, baseline and filled, so that a change in the machine's load hits all
//! three alike; ratio = filled ÷ baseline. An idle TCP session is a connection, initialized,
//! with its own server; an idle HTTP session is an initialized Streamable HTTP session whose
//! connection was closed after `initialized` (a session lives without a connection), with
//! its own server. Each costs the relay a few descriptors (socket, the server's three pipes,
//! its pidfd), so N is capped by the relay's `RLIMIT_NOFILE` (and by memory and `pid_max`);
//! the row says so when 10,000 could not be reached.

use crate::client::{Echo, Session, INITIALIZE, INITIALIZED};
use crate::load::{first_responses, median, percentile, Env};
use crate::machine;
use crate::relay::{Error, RelayProc};
use crate::transport::Target;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How much to measure.
pub struct Plan {
    /// Idle sessions to open, ascending; the last is capped by what the machine allows.
    pub sizes: Vec<usize>,
    pub reps: usize,
    pub seq_calls: usize,
    /// New sessions per target per repetition.
    pub first_samples: usize,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                sizes: vec![200],
                reps: 2,
                seq_calls: 500,
                first_samples: 6,
            }
        } else {
            Plan {
                sizes: vec![1000, 10_000],
                reps: 3,
                seq_calls: 2000,
                first_samples: 10,
            }
        }
    }
}

/// Threads that open idle sessions, each with a batch of connections in flight.
const OPENERS: usize = 4;
const BATCH: usize = 16;

/// Descriptors kept free in the filled relay for the measuring sessions and its own use.
const FD_MARGIN: u64 = 300;

/// A demo server's private memory (measured: about 1.2 MiB dirty); with kernel overhead.
const SERVER_BYTES: u64 = 2 << 20;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp,
    Http,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Tcp => "TCP",
            Kind::Http => "Streamable HTTP",
        }
    }

    fn target(self, r: &RelayProc) -> Target {
        match self {
            Kind::Tcp => Target::Tcp { addr: r.addr },
            Kind::Http => Target::Http { addr: r.http },
        }
    }

    /// Descriptors an idle session holds in the relay, from its code: the server's stdin,
    /// stdout and stderr pipes and its pidfd, and for TCP the connection.
    fn fds_guess(self) -> f64 {
        match self {
            Kind::Tcp => 5.0,
            Kind::Http => 4.0,
        }
    }
}

/// The idle sessions held open: TCP connections, or HTTP session ids.
#[derive(Default)]
struct Idle {
    tcp: Vec<TcpStream>,
    http: Vec<String>,
}

impl Idle {
    fn len(&self) -> usize {
        self.tcp.len() + self.http.len()
    }
}

/// Figures of one stage, each `[direct, baseline relay, filled relay]`, in µs or ms.
struct Figures {
    seq_p50: [f64; 3],
    seq_p90: [f64; 3],
    first_p50: [f64; 3],
}

/// One measured number of idle sessions.
struct Stage {
    wanted: usize,
    open: usize,
    /// Why `open < wanted`, when it is.
    cap: Option<String>,
    open_secs: f64,
    rss_per_kib: f64,
    rss_mib: f64,
    fds: Option<u64>,
    servers: usize,
    figures: Result<Figures, Error>,
}

fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

/// Runs `f` `reps` times on each target in turn; the results per target.
pub(crate) fn rounds<T>(
    reps: usize,
    targets: &[(&str, &Target)],
    mut f: impl FnMut(usize, &Target) -> io::Result<T>,
) -> Result<Vec<Vec<T>>, Error> {
    let mut out: Vec<Vec<T>> = targets.iter().map(|_| Vec::new()).collect();
    for _ in 0..reps {
        for (i, (name, t)) in targets.iter().enumerate() {
            out[i].push(f(i, t).map_err(|e| format!("{name}: {e}"))?);
        }
    }
    Ok(out)
}

/// Sequential ~100 B calls on one fresh session; the latencies, sorted.
fn latencies(target: &Target, calls: usize) -> io::Result<Vec<Duration>> {
    let mut s = Session::open(target)?;
    let mut echo = Echo::new(20);
    let warmup = (calls / 10).clamp(10, 200) as u64;
    for id in 1..=warmup {
        s.call(&mut echo, id)?;
    }
    let mut lat = Vec::with_capacity(calls);
    for i in 0..calls as u64 {
        let t = Instant::now();
        s.call(&mut echo, warmup + 1 + i)?;
        lat.push(t.elapsed());
    }
    lat.sort();
    Ok(lat)
}

/// Sequential p50 and p90 and new-session p50 on direct, `base` and `filled` (which holds
/// `n` idle sessions), repetitions alternating.
fn measure(
    env: &Env,
    plan: &Plan,
    kind: Kind,
    base: &RelayProc,
    filled: &RelayProc,
    n: usize,
) -> Result<Figures, Error> {
    let direct = direct_target(env);
    let (tb, tf) = (kind.target(base), kind.target(filled));
    let targets = [
        ("direct", &direct),
        ("relay", &tb),
        ("relay with idle", &tf),
    ];
    let seq = rounds(plan.reps, &targets, |_, t| latencies(t, plan.seq_calls))?;
    let pct = |runs: &[Vec<Duration>], p: f64| {
        median(runs.iter().map(|l| percentile(l, p) * 1e6).collect())
    };
    let mut seq_p50 = [0.0; 3];
    let mut seq_p90 = [0.0; 3];
    for (i, runs) in seq.iter().enumerate() {
        seq_p50[i] = pct(runs, 0.5);
        seq_p90[i] = pct(runs, 0.9);
    }
    let first = rounds(plan.reps, &targets, |i, t| {
        let settle = match i {
            1 => Some((base, 0)),
            2 => Some((filled, n)),
            _ => None,
        };
        first_responses(t, plan.first_samples, settle, Duration::ZERO)
    })?;
    let mut first_p50 = [0.0; 3];
    for (i, runs) in first.into_iter().enumerate() {
        let mut all = runs.concat();
        all.sort();
        first_p50[i] = percentile(&all, 0.5) * 1e3;
    }
    Ok(Figures {
        seq_p50,
        seq_p90,
        first_p50,
    })
}

pub(crate) fn direct_target(env: &Env) -> Target {
    Target::Direct {
        program: env.relay_exe.clone(),
        args: vec!["demo-server".into()],
        cpus: env.pinning.as_ref().map(|p| p.server.clone()),
    }
}

/// A connection with time limits, so that a stuck relay fails the run instead of hanging it.
fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.set_write_timeout(Some(Duration::from_secs(60)))?;
    Ok(s)
}

/// Opens `k` TCP sessions at once: connect all, send `initialize` on each, then read each
/// answer and send `initialized`.
fn tcp_batch(addr: SocketAddr, k: usize) -> io::Result<Vec<TcpStream>> {
    let mut conns = Vec::with_capacity(k);
    for _ in 0..k {
        let mut s = connect(addr)?;
        s.write_all(INITIALIZE)?;
        conns.push(s);
    }
    let mut line = Vec::new();
    for s in &mut conns {
        line.clear();
        // One byte at a time: nothing past the answer may be swallowed by a buffer (there
        // is nothing after it anyway, and this is untimed).
        let mut byte = [0u8; 1];
        while line.last() != Some(&b'\n') {
            if s.read(&mut byte)? == 0 {
                return Err(io::Error::other("the relay closed a new session"));
            }
            line.push(byte[0]);
        }
        if crate::client::find(&line, b"\"result\"").is_none() {
            let text = String::from_utf8_lossy(&line);
            return Err(io::Error::other(format!(
                "initialize failed: {}",
                text.trim_end()
            )));
        }
        s.write_all(INITIALIZED)?;
    }
    Ok(conns)
}

fn post(s: &mut TcpStream, addr: SocketAddr, session: Option<&str>, body: &[u8]) -> io::Result<()> {
    let mut r = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(id) = session {
        let _ = write!(
            r,
            "Mcp-Session-Id: {id}\r\nMCP-Protocol-Version: 2025-06-18\r\n"
        );
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes)
}

/// Reads one response (with a `Content-Length` body); its status and `Mcp-Session-Id`.
fn response(r: &mut impl BufRead) -> io::Result<(u16, Option<String>)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP response: {line:?}")))?;
    let (mut length, mut session) = (0usize, None);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::other("the relay closed the connection"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':') {
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "mcp-session-id" => session = Some(value.trim().to_string()),
                "transfer-encoding" => {
                    return Err(io::Error::other("a chunked answer to initialize"));
                }
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body)?;
    Ok((status, session))
}

/// Opens `k` Streamable HTTP sessions at once: POST `initialize` on `k` connections, then on
/// each read the answer, POST `initialized`, read its 202 and close the connection.
fn http_batch(addr: SocketAddr, k: usize) -> io::Result<Vec<String>> {
    let mut conns = Vec::with_capacity(k);
    for _ in 0..k {
        let mut s = connect(addr)?;
        post(&mut s, addr, None, INITIALIZE.trim_ascii_end())?;
        conns.push(s);
    }
    let mut ids = Vec::with_capacity(k);
    for s in conns {
        let mut r = BufReader::new(s);
        let (status, id) = response(&mut r)?;
        let id = match (status, id) {
            (200, Some(id)) => id,
            (s, _) => return Err(io::Error::other(format!("initialize: HTTP {s}"))),
        };
        post(r.get_mut(), addr, Some(&id), INITIALIZED.trim_ascii_end())?;
        let (status, _) = response(&mut r)?;
        if status != 202 {
            return Err(io::Error::other(format!("initialized: HTTP {status}")));
        }
        ids.push(id);
    }
    Ok(ids)
}

/// Opens `k` more idle sessions on `addr`, on [`OPENERS`] threads.
fn open_idle(kind: Kind, addr: SocketAddr, k: usize, idle: &mut Idle) -> Result<(), Error> {
    let results: Vec<io::Result<Idle>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..OPENERS)
            .map(|i| {
                let share = k / OPENERS + usize::from(i < k % OPENERS);
                scope.spawn(move || -> io::Result<Idle> {
                    let mut got = Idle::default();
                    while got.len() < share {
                        let b = (share - got.len()).min(BATCH);
                        match kind {
                            Kind::Tcp => got.tcp.extend(tcp_batch(addr, b)?),
                            Kind::Http => got.http.extend(http_batch(addr, b)?),
                        }
                    }
                    Ok(got)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("an opener panicked")))
            })
            .collect()
    });
    for r in results {
        let got = r.map_err(|e| format!("opening idle sessions ({} open): {e}", idle.len()))?;
        idle.tcp.extend(got.tcp);
        idle.http.extend(got.http);
    }
    Ok(())
}

/// Descriptors `pid` has open (readable for the relay, which is non-dumpable, only as root).
fn fd_count(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// The soft `RLIMIT_NOFILE` of `pid`, from `/proc/<pid>/limits`.
fn nofile_of(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn meminfo_bytes(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|l| {
        let kib: u64 = l
            .strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    })
}

/// Tasks (processes and threads) on the machine, from `/proc/loadavg`.
fn tasks() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace()
        .nth(3)?
        .split('/')
        .nth(1)?
        .parse()
        .ok()
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// How many idle sessions `filled` can take in all (at most `wanted`), and what binds.
fn fit(
    filled: &RelayProc,
    fds0: Option<u64>,
    per_fd: f64,
    wanted: usize,
) -> (usize, Option<String>) {
    let mut n = wanted;
    let mut why = None;
    let limit = nofile_of(filled.pid()).unwrap_or(machine::raise_nofile(u64::MAX));
    let used = fds0.unwrap_or(64);
    let by_fd = (limit.saturating_sub(used + FD_MARGIN) as f64 / per_fd) as usize;
    if by_fd < n {
        n = by_fd;
        why = Some(format!(
            "{} not reachable: descriptor limit {}, {per_fd:.1} per session",
            thousands(wanted),
            thousands(limit as usize),
        ));
    }
    if let Some(avail) = meminfo_bytes("MemAvailable") {
        let by_mem = (avail / 2 / SERVER_BYTES) as usize;
        if by_mem < n {
            n = by_mem;
            why = Some(format!(
                "{} not reachable: half the available memory fits about {} servers",
                thousands(wanted),
                thousands(by_mem)
            ));
        }
    }
    let pid_max: Option<u64> = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    if let (Some(max), Some(now)) = (pid_max, tasks()) {
        let by_pid = max.saturating_sub(now + 2000) as usize;
        if by_pid < n {
            n = by_pid;
            why = Some(format!(
                "{} not reachable: pid_max {max} with {now} tasks running",
                thousands(wanted)
            ));
        }
    }
    (n, why)
}

fn stages(
    env: &Env,
    plan: &Plan,
    kind: Kind,
    notes: &mut Vec<String>,
) -> Result<Vec<Stage>, Error> {
    let biggest = plan.sizes.iter().copied().max().unwrap_or(0);
    let room = (biggest + 100).to_string();
    let args = [
        "--max-sessions",
        room.as_str(),
        "--max-connections",
        room.as_str(),
        "--drain-timeout",
        "0",
        "--session-timeout",
        "1h",
    ];
    let cpus = env.pinning.as_ref().map(|p| &p.server);
    let base = RelayProc::start(&env.relay_exe, &args, cpus)?;
    let filled = RelayProc::start(&env.relay_exe, &args, cpus)?;
    for r in [&base, &filled] {
        let mut s = Session::open(&kind.target(r))?;
        s.call(&mut Echo::new(20), 1)?;
        drop(s);
        r.settle(0, Duration::from_secs(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let rss0 = filled.rss().ok_or("cannot read the relay's VmRSS")?;
    let fds0 = fd_count(filled.pid());
    let addr = match kind {
        Kind::Tcp => filled.addr,
        Kind::Http => filled.http,
    };
    let mut idle = Idle::default();
    let mut out = Vec::new();
    let mut per_fd = kind.fds_guess();
    for &wanted in &plan.sizes {
        let (n, cap) = fit(&filled, fds0, per_fd, wanted);
        progress(&format!(
            "scale, {}: opening {n} idle sessions",
            kind.name()
        ));
        let t = Instant::now();
        open_idle(kind, addr, n.saturating_sub(idle.len()), &mut idle)?;
        let open_secs = t.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(300));
        let rss = filled.rss().ok_or("cannot read the relay's VmRSS")?;
        let fds = fd_count(filled.pid());
        if let (Some(a), Some(b)) = (fds0, fds) {
            if n > 0 && b > a {
                per_fd = (b - a) as f64 / n as f64;
            }
        }
        let servers = machine::child_count(filled.pid()).unwrap_or(0);
        progress(&format!(
            "scale, {}: {n} idle sessions open in {open_secs:.1} s; measuring",
            kind.name()
        ));
        let figures = measure(env, plan, kind, &base, &filled, n);
        out.push(Stage {
            wanted,
            open: n,
            cap,
            open_secs,
            rss_per_kib: rss.saturating_sub(rss0) as f64 / n.max(1) as f64 / 1024.0,
            rss_mib: rss as f64 / (1 << 20) as f64,
            fds,
            servers,
            figures,
        });
    }
    let t = Instant::now();
    drop(idle);
    for (name, r) in [("baseline", base), ("filled", filled)] {
        if let Err(e) = r.stop() {
            notes.push(format!(
                "scale, {}: the {name} relay did not stop cleanly: {e}",
                kind.name()
            ));
        }
    }
    progress(&format!(
        "scale, {}: relays stopped in {:.1} s",
        kind.name(),
        t.elapsed().as_secs_f64()
    ));
    Ok(out)
}

/// Runs the scale group on TCP and on Streamable HTTP; the report's section for it.
pub fn run(env: &Env, quick: bool) -> String {
    let plan = Plan::new(quick);
    let limit = machine::raise_nofile(u64::MAX);
    let mut notes = Vec::new();
    let mut table = String::from(
        "| transport | idle sessions open | metric | direct | relay, none idle | relay, N idle | ratio N idle ÷ none | target | result |\n\
         |---|---|---|---:|---:|---:|---:|---|---|\n",
    );
    let (mut met, mut judged) = (0, 0);
    for kind in [Kind::Tcp, Kind::Http] {
        progress(&format!("scale: {}", kind.name()));
        let stages = match stages(env, &plan, kind, &mut notes) {
            Ok(s) => s,
            Err(e) => {
                let e = e.to_string().replace('|', "/").replace('\n', " ");
                let _ = writeln!(
                    table,
                    "| {} | — | — | — | — | FAILED: {e} | — | | **MISS** |",
                    kind.name()
                );
                judged += 1;
                continue;
            }
        };
        for st in stages {
            let label = match &st.cap {
                Some(why) => format!("**{}** ({why})", thousands(st.open)),
                None => thousands(st.open),
            };
            let f = match st.figures {
                Ok(f) => f,
                Err(e) => {
                    let e = e.to_string().replace('|', "/").replace('\n', " ");
                    let _ = writeln!(
                        table,
                        "| {} | {label} | — | — | — | FAILED: {e} | — | | **MISS** |",
                        kind.name()
                    );
                    judged += 1;
                    continue;
                }
            };
            let rows: [(&str, [f64; 3], &str, bool); 3] = [
                ("sequential ~100 B, p50", f.seq_p50, "µs", true),
                ("sequential ~100 B, p90", f.seq_p90, "µs", false),
                (
                    "new session, p50 time to first response",
                    f.first_p50,
                    "ms",
                    true,
                ),
            ];
            for (metric, v, unit, target) in rows {
                let ratio = v[2] / v[1];
                let fmt = |x: f64| {
                    if unit == "µs" {
                        format!("{x:.1} {unit}")
                    } else {
                        format!("{x:.2} {unit}")
                    }
                };
                let (goal, verdict) = if target {
                    judged += 1;
                    let ok = ratio <= 1.2;
                    met += usize::from(ok);
                    ("≤ 1.2× none idle", if ok { "PASS" } else { "**MISS**" })
                } else {
                    ("", "")
                };
                let _ = writeln!(
                    table,
                    "| {} | {label} | {metric} | {} | {} | {} | {ratio:.2}× | {goal} | {verdict} |",
                    kind.name(),
                    fmt(v[0]),
                    fmt(v[1]),
                    fmt(v[2]),
                );
            }
            let _ = writeln!(
                table,
                "| {} | {label} | relay RSS per idle session (VmRSS growth ÷ N) | — | — | {:.1} KiB | — | | |",
                kind.name(),
                st.rss_per_kib
            );
            notes.push(format!(
                "{}, {} idle sessions (wanted {}): opened in {:.1} s ({:.0}/s, {OPENERS} threads); \
                 relay VmRSS {:.1} MiB, {} servers, {} descriptors.",
                kind.name(),
                thousands(st.open),
                thousands(st.wanted),
                st.open_secs,
                st.open as f64 / st.open_secs.max(1e-9),
                st.rss_mib,
                thousands(st.servers),
                st.fds.map_or_else(|| "? (not root)".to_string(), |n| thousands(n as usize)),
            ));
        }
    }
    let mut r = String::from("\n## Scale: idle sessions open\n\n");
    let _ = writeln!(
        r,
        "Two relays with the same flags (`--max-sessions`/`--max-connections` above N, \
         `--drain-timeout 0`, `--session-timeout 1h`) side by side: one never holds an idle \
         session (\"none idle\"), the other is filled with N idle sessions of the transport of \
         the row (TCP: a connection, initialized, with its server; Streamable HTTP: an \
         initialized session whose connection was closed, with its server). {} repetitions \
         alternating direct, none idle, N idle ({} sequential calls; {} new sessions each); \
         medians of the repetitions' percentiles for sequential calls, the p50 of all samples \
         for new sessions. Descriptor limit of this run: {} (each idle session holds about 4–5 \
         in the relay: its socket, the server's three pipes and pidfd; the relay's limit is \
         `ulimit -Hn`, which cannot be raised in this container). Targets met: {met} of {judged}.\n",
        plan.reps,
        plan.seq_calls,
        plan.first_samples,
        thousands(limit as usize)
    );
    r += &table;
    r.push('\n');
    for n in notes {
        let _ = writeln!(r, "- {n}");
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(3937), "3,937");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn response_reads_status_session_and_body() {
        let wire = b"HTTP/1.1 200 OK\r\nMcp-Session-Id: vm-1.abc\r\nContent-Type: application/json\r\n\
                     Content-Length: 5\r\n\r\n{\"a\"}HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n";
        let mut r = &wire[..];
        assert_eq!(response(&mut r).unwrap(), (200, Some("vm-1.abc".into())));
        assert_eq!(response(&mut r).unwrap(), (202, None));
        assert!(r.is_empty());
        let mut chunked = &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..];
        assert!(response(&mut chunked).is_err());
    }
}
