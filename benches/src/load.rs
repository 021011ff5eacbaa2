//! The load-generator workloads, each run against the direct-stdio lower bound and the relay
//! over TCP with the same code, repetitions interleaved (direct, relay, direct, relay, …) so
//! that a change in the machine's background load hits both alike.

use crate::client::{Echo, Session, INITIALIZED};
use crate::machine::{self, CpuSource, Pinning};
use crate::relay::{Error, RelayProc};
use crate::report::{Goal, Row, Unit};
use crate::transport::Target;
use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;

/// How much of each workload to run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub reps: usize,
    pub seq_small_calls: usize,
    pub seq_64k_calls: usize,
    pub pipe_depth: usize,
    pub pipe_calls: usize,
    pub sessions: usize,
    pub session_calls: usize,
    pub session_reps: usize,
    pub first_response_samples: usize,
    pub big_size: usize,
    pub big_reps: usize,
    pub huge_size: usize,
    pub huge_reps: usize,
    pub idle_sessions: usize,
    /// The message of the client-mode big calls, each way, and how many calls (on one
    /// session) each repetition makes; a repetition's figure is their median.
    pub connect_big_size: usize,
    pub connect_big_calls: usize,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            reps: 9,
            seq_small_calls: 4000,
            seq_64k_calls: 600,
            pipe_depth: 32,
            pipe_calls: 20_000,
            sessions: 20,
            session_calls: 200,
            session_reps: 9,
            first_response_samples: 30,
            big_size: 10 * MIB,
            big_reps: 7,
            huge_size: 64 * MIB,
            huge_reps: 3,
            idle_sessions: 1000,
            connect_big_size: MIB,
            connect_big_calls: 5,
        }
    }

    pub fn quick() -> Plan {
        Plan {
            reps: 3,
            seq_small_calls: 500,
            seq_64k_calls: 100,
            pipe_calls: 3000,
            session_reps: 2,
            first_response_samples: 8,
            big_reps: 2,
            huge_reps: 1,
            idle_sessions: 200,
            connect_big_calls: 2,
            ..Plan::full()
        }
    }
}

/// Which workloads to run (all by default; `--only` narrows it for development). `http` and
/// `sse` select the relay's Streamable HTTP and legacy HTTP+SSE transports (every workload
/// run over them, or those of [`PER_TRANSPORT`] also named); the other names, the workloads
/// over TCP.
pub const WORKLOADS: [&str; 11] = [
    "seq", "seq64k", "pipe", "sessions", "first", "prespawn", "big", "idle", "http", "sse",
    "connect",
];

/// The workloads run over each of the relay's transports (`pipe` over TCP only).
const PER_TRANSPORT: [&str; 6] = ["seq", "seq64k", "pipe", "sessions", "first", "big"];

/// The relay's transports, each measured with the same workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Newline-delimited JSON-RPC, one connection per session.
    Tcp,
    /// Streamable HTTP (`POST /mcp`), one keep-alive connection per session.
    Http,
    /// Legacy HTTP+SSE (`GET /sse`, POSTs to `/messages`), two connections per session.
    Sse,
}

impl Via {
    pub const ALL: [Via; 3] = [Via::Tcp, Via::Http, Via::Sse];

    /// Its name in `--only` and `soak --transport`.
    pub fn name(self) -> &'static str {
        match self {
            Via::Tcp => "tcp",
            Via::Http => "http",
            Via::Sse => "sse",
        }
    }

    pub fn from_name(name: &str) -> Option<Via> {
        Via::ALL.into_iter().find(|v| v.name() == name)
    }

    /// What its rows' names start with (nothing for TCP, the transport rows name no
    /// transport).
    fn prefix(self) -> &'static str {
        match self {
            Via::Tcp => "",
            Via::Http => "Streamable HTTP: ",
            Via::Sse => "legacy HTTP+SSE: ",
        }
    }

    /// How a session reaches `relay` over this transport.
    pub fn target(self, relay: &RelayProc) -> Target {
        match self {
            Via::Tcp => Target::Tcp { addr: relay.addr },
            Via::Http => Target::Http { addr: relay.http },
            Via::Sse => Target::Sse { addr: relay.http },
        }
    }
}

pub struct Env {
    pub relay_exe: PathBuf,
    pub pinning: Option<Pinning>,
    pub only: Option<Vec<String>>,
}

impl Env {
    fn wants(&self, name: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|x| x == name))
    }

    /// Whether to run `workload` (one of [`PER_TRANSPORT`]) over `via`: over TCP when the
    /// workload is selected; over HTTP or SSE when the transport is, and the workload too if
    /// any of [`PER_TRANSPORT`] is named.
    fn wants_on(&self, via: Via, workload: &str) -> bool {
        let Some(only) = &self.only else {
            return true;
        };
        let named = |w: &str| only.iter().any(|x| x == w);
        match via {
            Via::Tcp => named(workload),
            _ => named(via.name()) && (named(workload) || !PER_TRANSPORT.iter().any(|w| named(w))),
        }
    }

    fn direct(&self) -> Target {
        Target::Direct {
            program: self.relay_exe.clone(),
            args: vec!["demo-server".into()],
            cpus: self.pinning.as_ref().map(|p| p.server.clone()),
        }
    }

    /// A stdio client of `mcp-relay --connect URL`: the relay in client mode, the local
    /// client's server, carrying each session to the remote at `url`. It runs on the server
    /// side's CPUs, as the relay under test always does. Pings off, as for the remote.
    fn through(&self, url: String) -> Target {
        let args = [
            "--connect",
            &url,
            "--ping-interval",
            "0",
            "--log-level",
            "warn",
        ];
        Target::Direct {
            program: self.relay_exe.clone(),
            args: args.iter().map(|a| a.to_string()).collect(),
            cpus: self.pinning.as_ref().map(|p| p.server.clone()),
        }
    }

    fn start_relay(&self, extra: &[&str]) -> Result<RelayProc, Error> {
        RelayProc::start(
            &self.relay_exe,
            extra,
            self.pinning.as_ref().map(|p| &p.server),
        )
    }
}

/// Time between new sessions in the prespawn workload: long enough for the pool to refill
/// (the relay starts a replacement 20 ms after a child is taken), as when sessions arrive
/// now and then. Back to back on one pinned core, a prespawned child only moves the cost of
/// starting a process, it does not remove it.
const PRESPAWN_GAP: Duration = Duration::from_millis(40);

/// Median of the values (the mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64()
}

/// Runs `f` `reps` times on each target, interleaved; returns the results per target.
fn interleaved<T>(
    reps: usize,
    targets: [&Target; 2],
    mut f: impl FnMut(&Target) -> io::Result<T>,
) -> Result<[Vec<T>; 2], Error> {
    let mut out = [Vec::new(), Vec::new()];
    for _ in 0..reps {
        for (i, t) in targets.iter().enumerate() {
            let name = if i == 0 { "direct" } else { "relay" };
            out[i].push(f(t).map_err(|e| format!("{name}: {e}"))?);
        }
    }
    Ok(out)
}

/// One repetition of a sequential workload: p50 and p99 latency (s) and calls per second;
/// with a process to watch, the CPU time it used during the timed calls.
pub(crate) struct Seq {
    pub p50: f64,
    pub p99: f64,
    pub rate: f64,
    pub cpu: Option<(Duration, CpuSource)>,
}

pub(crate) fn sequential(target: &Target, payload: usize, calls: usize) -> io::Result<Seq> {
    sequential_watching(target, payload, calls, None)
}

/// [`sequential`], reading the CPU time of process `watch` (the relay) before and after the
/// timed calls.
fn sequential_watching(
    target: &Target,
    payload: usize,
    calls: usize,
    watch: Option<u32>,
) -> io::Result<Seq> {
    let mut s = Session::open(target)?;
    let mut echo = Echo::new(payload);
    let warmup = (calls / 10).clamp(10, 200) as u64;
    for id in 1..=warmup {
        s.call(&mut echo, id)?;
    }
    let mut lat = Vec::with_capacity(calls);
    let cpu_before = watch.and_then(machine::cpu_time);
    let start = Instant::now();
    for i in 0..calls as u64 {
        let t = Instant::now();
        s.call(&mut echo, warmup + 1 + i)?;
        lat.push(t.elapsed());
    }
    let rate = calls as f64 / start.elapsed().as_secs_f64();
    let cpu = match (cpu_before, watch.and_then(machine::cpu_time)) {
        (Some((a, source)), Some((b, same))) if source == same => {
            Some((b.saturating_sub(a), source))
        }
        _ => None,
    };
    lat.sort();
    Ok(Seq {
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        rate,
        cpu,
    })
}

pub(crate) fn seq_rows(
    name: &str,
    runs: Result<[Vec<Seq>; 2], Error>,
    p50_goal: Option<Goal>,
) -> Vec<Row> {
    let p50 = Row::new(name, "p50 latency", Unit::Micros);
    let p99 = Row::new(name, "p99 latency", Unit::Micros);
    let rate = Row::new(name, "throughput", Unit::ReqPerSec);
    let mut rows = match runs {
        Ok([d, r]) => {
            let m = |v: &[Seq], f: fn(&Seq) -> f64| Some(median(v.iter().map(f).collect()));
            vec![
                p50.values(m(&d, |s| s.p50 * 1e6), m(&r, |s| s.p50 * 1e6)),
                p99.values(m(&d, |s| s.p99 * 1e6), m(&r, |s| s.p99 * 1e6)),
                rate.values(m(&d, |s| s.rate), m(&r, |s| s.rate)),
            ]
        }
        Err(e) => vec![p50.failed(e.to_string()), p99, rate],
    };
    if let Some(g) = p50_goal {
        rows[0] = rows[0].clone().goal(g);
    }
    rows
}

/// `depth` requests kept in flight on one session; returns calls per second.
pub(crate) fn pipelined(target: &Target, depth: usize, calls: usize) -> io::Result<f64> {
    let mut s = Session::open(target)?;
    let mut echo = Echo::new(20);
    for id in 1..=100 {
        s.call(&mut echo, id)?;
    }
    let base = 1000u64;
    let mut waiting = BTreeSet::new();
    let start = Instant::now();
    let mut sent = 0u64;
    while (sent as usize) < depth.min(calls) {
        s.send(echo.with_id(base + sent))?;
        waiting.insert(base + sent);
        sent += 1;
    }
    for _ in 0..calls {
        let (id, _) = s.recv_response()?;
        if !waiting.remove(&id) {
            return Err(io::Error::other(format!("unexpected response id {id}")));
        }
        if (sent as usize) < calls {
            s.send(echo.with_id(base + sent))?;
            waiting.insert(base + sent);
            sent += 1;
        }
    }
    Ok(calls as f64 / start.elapsed().as_secs_f64())
}

/// `n` sessions, each on its own thread making `calls` sequential calls, all starting
/// together once every session is open and warmed up; returns calls per second overall.
pub(crate) fn concurrent(target: &Target, n: usize, calls: usize) -> io::Result<f64> {
    let barrier = Arc::new(Barrier::new(n + 1));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                scope.spawn(move || -> io::Result<Instant> {
                    let mut echo = Echo::new(20);
                    let opened = Session::open(target).and_then(|mut s| {
                        for id in 1..=10 {
                            s.call(&mut echo, id)?;
                        }
                        Ok(s)
                    });
                    // Everyone waits at the barrier, even after a failure, so none hangs.
                    barrier.wait();
                    let mut s = opened?;
                    for i in 0..calls as u64 {
                        s.call(&mut echo, 11 + i)?;
                    }
                    Ok(Instant::now())
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut end = start;
        for h in handles {
            let t = h
                .join()
                .map_err(|_| io::Error::other("a session thread panicked"))??;
            end = end.max(t);
        }
        Ok((n * calls) as f64 / (end - start).as_secs_f64())
    })
}

/// Time from nothing to the answer of the first call: open (connect, or spawn), initialize,
/// initialized, one echo call. The session is closed (and for direct, reaped) untimed.
pub(crate) fn first_responses(
    target: &Target,
    samples: usize,
    relay: Option<(&RelayProc, usize)>,
    gap: Duration,
) -> io::Result<Vec<Duration>> {
    let mut echo = Echo::new(20);
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        // Sessions that arrive apart, as in life, rather than back to back.
        std::thread::sleep(gap);
        if let Some((r, keep)) = relay {
            // The previous session's server is gone before the next one starts, as in the
            // direct case where it is reaped before the next spawn.
            r.settle(keep, Duration::from_secs(5));
        }
        let t = Instant::now();
        let mut s = Session::raw(target)?;
        s.initialize()?;
        s.call(&mut echo, 1)?;
        out.push(t.elapsed());
        drop(s);
    }
    Ok(out)
}

/// One echo of `echo.payload()` bytes each way on a fresh session; returns the round trip.
pub(crate) fn big_round_trip(target: &Target, echo: &mut Echo) -> io::Result<Duration> {
    let mut s = Session::open(target)?;
    s.call(&mut Echo::new(1000), 1)?;
    let t = Instant::now();
    s.call(echo, 2)?;
    Ok(t.elapsed())
}

/// `calls` echoes of `echo.payload()` bytes each way, one at a time on a fresh session;
/// returns the median round trip.
fn big_round_trips(target: &Target, echo: &mut Echo, calls: usize) -> io::Result<Duration> {
    let mut s = Session::open(target)?;
    s.call(&mut Echo::new(1000), 1)?;
    let mut times = Vec::with_capacity(calls);
    for id in 0..calls as u64 {
        let t = Instant::now();
        s.call(echo, 2 + id)?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(Duration::from_secs_f64(median(times)))
}

/// What [`idle_sessions`] measured.
struct Idle {
    rss_before: u64,
    rss_after: u64,
    peak: u64,
    servers: usize,
    threads: u64,
    seq: Result<[Vec<Seq>; 2], Error>,
    first: Result<[Vec<Duration>; 2], Error>,
}

/// Opens `n` sessions that stay idle; measures the relay's RSS before and with them open,
/// then, while they stay open, a short sequential workload and new-session timings (each
/// interleaved with the direct figure, which idle relay sessions do not affect).
fn idle_sessions(env: &Env, relay: &RelayProc, n: usize, plan: &Plan) -> Result<Idle, Error> {
    let tcp = Target::Tcp { addr: relay.addr };
    // Fault in the code paths of a session first, so they are not counted per session.
    {
        let mut s = Session::open(&tcp)?;
        s.call(&mut Echo::new(20), 1)?;
    }
    relay.settle(0, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(100));
    let rss_before = relay.rss().ok_or("cannot read the relay's VmRSS")?;
    let mut sessions = Vec::with_capacity(n);
    // Connect in batches: the relay starts servers one at a time anyway.
    let mut opened = 0;
    while opened < n {
        let batch = (n - opened).min(32);
        let mut pending = Vec::with_capacity(batch);
        for _ in 0..batch {
            let mut s = Session::raw(&tcp).map_err(|e| {
                format!(
                    "connection {} of {n} failed: {e}",
                    opened + pending.len() + 1
                )
            })?;
            s.send(crate::client::INITIALIZE)?;
            pending.push(s);
        }
        for mut s in pending {
            s.expect(0)
                .map_err(|e| format!("initialize on session {} failed: {e}", opened + 1))?;
            s.send(INITIALIZED)?;
            sessions.push(s);
            opened += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let rss_after = relay.rss().ok_or("cannot read the relay's VmRSS")?;
    let peak = relay.peak_rss().ok_or("cannot read the relay's VmHWM")?;
    let servers = machine::child_count(relay.pid()).unwrap_or(0);
    let threads = machine::proc_status_value(relay.pid(), "Threads").unwrap_or(0);

    let direct = env.direct();
    let targets = [&direct, &tcp];
    let reps = plan.reps.min(3);
    let seq = interleaved(reps, targets, |t| {
        sequential(t, 20, plan.seq_small_calls / 2)
    });
    let first = interleaved(reps, targets, |t| {
        let r = matches!(t, Target::Tcp { .. }).then_some((relay, n));
        first_responses(t, plan.first_response_samples / 2 + 1, r, Duration::ZERO)
    })
    .map(|[d, r]| [d.concat(), r.concat()]);

    drop(sessions);
    relay.settle(0, Duration::from_secs(30));
    Ok(Idle {
        rss_before,
        rss_after,
        peak,
        servers,
        threads,
        seq,
        first,
    })
}

/// Sequential calls against the relay only, over `via`, for `seconds`, so that `perf` or
/// `strace -c` can be attached to the relay (its pid is printed first). Returns calls per
/// second.
pub fn soak(
    env: &Env,
    seconds: f64,
    payload: usize,
    depth: usize,
    idle: usize,
    via: Via,
) -> Result<f64, Error> {
    let relay = env.start_relay(&[])?;
    let target = via.target(&relay);
    let mut idle_sessions = Vec::with_capacity(idle);
    if idle > 0 {
        machine::raise_nofile(65_536);
        for _ in 0..idle {
            idle_sessions.push(Session::open(&target)?);
        }
        eprintln!("[bench] {idle} idle sessions open");
    }
    let addr = if via == Via::Tcp {
        relay.addr
    } else {
        relay.http
    };
    eprintln!(
        "[bench] relay pid {} on {}://{addr}: {}-byte echo calls, {depth} in flight, for {seconds} s",
        relay.pid(),
        via.name(),
        payload
    );
    let mut s = Session::open(&target)?;
    let mut echo = Echo::new(payload);
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut calls = 0u64;
    let mut id = 1u64;
    while Instant::now() < until {
        if depth <= 1 {
            s.call(&mut echo, id)?;
            id += 1;
            calls += 1;
        } else {
            for _ in 0..depth {
                s.send(echo.with_id(id))?;
                id += 1;
            }
            for _ in 0..depth {
                s.recv_response()?;
            }
            calls += depth as u64;
        }
    }
    let rate = calls as f64 / start.elapsed().as_secs_f64();
    drop(s);
    drop(idle_sessions);
    relay.settle(0, Duration::from_secs(30));
    relay.stop()?;
    Ok(rate)
}

fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

fn ms(d: &[Duration]) -> String {
    let v: Vec<String> = d
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64() * 1e3))
        .collect();
    v.join(" ")
}

/// Times to first response, sorted, direct and through `relay` (which is settled to `keep`
/// children before each of its samples), `plan.reps` rounds alternating between the two.
fn first_response_runs(
    plan: &Plan,
    targets: [&Target; 2],
    relay: &RelayProc,
    keep: usize,
    gap: Duration,
) -> Result<[Vec<Duration>; 2], String> {
    let mut samples = [Vec::new(), Vec::new()];
    for _ in 0..plan.reps {
        for (i, target) in targets.iter().enumerate() {
            let r = (i == 1).then_some((relay, keep));
            let v = first_responses(target, plan.first_response_samples, r, gap)
                .map_err(|e| e.to_string())?;
            samples[i].extend(v);
        }
    }
    for s in &mut samples {
        s.sort();
    }
    Ok(samples)
}

/// Runs the selected workloads; returns the table rows and notes for the report.
pub fn run(env: &Env, plan: &Plan) -> (Vec<Row>, Vec<String>) {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let direct = env.direct();

    // Relay A: the single-session workloads and the first-response timing, over TCP.
    let group_a = ["seq", "seq64k", "pipe", "first"];
    if group_a.iter().any(|w| env.wants(w)) {
        match env.start_relay(&[]) {
            Err(e) => {
                for w in group_a.iter().filter(|w| env.wants(w)) {
                    rows.push(Row::new(w, "relay start", Unit::Millis).failed(e.to_string()));
                }
            }
            Ok(relay) => {
                rows.extend(per_transport(
                    env,
                    plan,
                    Via::Tcp,
                    &relay,
                    &direct,
                    &mut notes,
                ));
                let peak = relay.peak_rss();
                if let Err(e) = relay.stop() {
                    notes.push(format!("relay A did not stop cleanly: {e}"));
                }
                if let Some(p) = peak {
                    notes.push(format!(
                        "Relay A (single-session workloads over TCP) peaked at {:.2} MiB RSS.",
                        p as f64 / MIB as f64
                    ));
                }
            }
        }
    }

    // Relay P: time to first response when servers are started ahead of need.
    if env.wants("prespawn") {
        progress("time to first response with --prespawn 4");
        let name = format!(
            "new session with --prespawn 4, sessions {} ms apart ({} samples)",
            PRESPAWN_GAP.as_millis(),
            plan.reps * plan.first_response_samples
        );
        let p50 = Row::new(&name, "p50 time to first response", Unit::Millis)
            .goal(Goal::RatioAtMost(0.5));
        match env.start_relay(&["--prespawn", "4"]) {
            Err(e) => rows.push(p50.failed(e.to_string())),
            Ok(relay) => {
                let tcp = Target::Tcp { addr: relay.addr };
                // Each sample starts with the pool full again (4 servers waiting).
                match first_response_runs(plan, [&direct, &tcp], &relay, 4, PRESPAWN_GAP) {
                    Err(e) => rows.push(p50.failed(e)),
                    Ok([d, r]) => {
                        let pct = |v: &[Duration], p| Some(percentile(v, p) * 1e3);
                        rows.push(p50.values(pct(&d, 0.5), pct(&r, 0.5)));
                    }
                }
                if let Err(e) = relay.stop() {
                    notes.push(format!("relay P did not stop cleanly: {e}"));
                }
            }
        }
    }

    // Relays H and S: the same workloads over Streamable HTTP (POST /mcp, keep-alive, JSON
    // or SSE replies, Mcp-Session-Id) and over legacy HTTP+SSE (GET /sse, POST /messages).
    for via in [Via::Http, Via::Sse] {
        let wanted = ["seq", "seq64k", "first", "sessions"];
        if !wanted.iter().any(|w| env.wants_on(via, w)) {
            continue;
        }
        let p = via.prefix();
        match env.start_relay(&[]) {
            Err(e) => rows.push(Row::new(p, "relay start", Unit::Millis).failed(e.to_string())),
            Ok(relay) => {
                rows.extend(per_transport(env, plan, via, &relay, &direct, &mut notes));
                if let Err(e) = relay.stop() {
                    notes.push(format!(
                        "the {} relay did not stop cleanly: {e}",
                        via.name()
                    ));
                }
            }
        }
    }

    // Relays T, U and V: 10 MiB each way over each transport, each on a fresh relay whose
    // peak memory is then that of the big messages.
    for via in Via::ALL {
        if env.wants_on(via, "big") {
            rows.extend(big_messages(env, plan, via, &direct, &mut notes));
        }
    }

    // Relay R: the remote for client mode, spoken to directly and through `--connect`.
    if env.wants("connect") {
        progress("client mode (--connect)");
        match env.start_relay(&[]) {
            Err(e) => rows.push(
                Row::new("client mode", "remote relay start", Unit::Millis).failed(e.to_string()),
            ),
            Ok(remote) => {
                rows.extend(client_mode(env, plan, &remote));
                if let Err(e) = remote.stop() {
                    notes.push(format!("relay R did not stop cleanly: {e}"));
                }
            }
        }
        notes.push(format!(
            "Client-mode rows: the remote is a relay like the others (`{}`), serving the demo on \
             Streamable HTTP and TCP. Their direct column is the load generator's own client \
             speaking to that remote (POST /mcp on one keep-alive connection, or one TCP \
             connection); their relay column is a stdio client of `mcp-relay --connect URL \
             --ping-interval 0`, run on the server side's CPU, which \
             carries the session to the same remote: one more hop (pipes to the local relay, \
             then its own HTTP or TCP client). Ratio = through ÷ direct.",
            crate::relay::BASE_ARGS.join(" ")
        ));
    }

    // Relay B: 20 concurrent sessions, and its peak memory.
    if env.wants("sessions") {
        progress("20 concurrent sessions");
        let name = format!(
            "{} sessions × {} calls, concurrent ({} reps)",
            plan.sessions, plan.session_calls, plan.session_reps
        );
        let tput = Row::new(&name, "throughput", Unit::ReqPerSec).goal(Goal::RatioAtLeast(0.4));
        let mem = Row::new(
            &format!("relay memory, {} sessions", plan.sessions),
            "peak RSS of the relay (VmHWM)",
            Unit::MiB,
        )
        .goal(Goal::AtMost(8.0));
        match env.start_relay(&[]) {
            Err(e) => {
                rows.push(tput.failed(e.to_string()));
                rows.push(mem.failed(e.to_string()));
            }
            Ok(relay) => {
                let tcp = Target::Tcp { addr: relay.addr };
                let runs = interleaved(plan.session_reps, [&direct, &tcp], |t| {
                    let r = concurrent(t, plan.sessions, plan.session_calls);
                    relay.settle(0, Duration::from_secs(10));
                    r
                });
                let peak = relay.peak_rss();
                match runs {
                    Ok([d, r]) => rows.push(tput.values(Some(median(d)), Some(median(r)))),
                    Err(e) => rows.push(tput.failed(e.to_string())),
                }
                rows.push(match peak {
                    Some(p) => mem.values(None, Some(p as f64 / MIB as f64)),
                    None => mem.failed("cannot read VmHWM".into()),
                });
                if let Err(e) = relay.stop() {
                    notes.push(format!("relay B did not stop cleanly: {e}"));
                }
            }
        }
    }

    // Relay C: one huge message each way with the limit raised.
    if env.wants("big") {
        progress("64 MiB each way, --max-message-size 128MiB");
        let name = format!(
            "{} MiB each way, --max-message-size 128MiB ({} reps)",
            plan.huge_size / MIB,
            plan.huge_reps
        );
        match env.start_relay(&["--max-message-size", "128MiB"]) {
            Err(e) => rows.push(Row::new(&name, "round trip", Unit::Millis).failed(e.to_string())),
            Ok(relay) => {
                let tcp = Target::Tcp { addr: relay.addr };
                let mut echo = Echo::new(plan.huge_size);
                let runs = interleaved(plan.huge_reps, [&direct, &tcp], |t| {
                    big_round_trip(t, &mut echo)
                });
                drop(echo);
                rows.extend(big_rows(&name, plan.huge_size, runs, Goal::Succeeds));
                let peak = relay.peak_rss();
                if let Err(e) = relay.stop() {
                    notes.push(format!("relay C did not stop cleanly: {e}"));
                }
                if let Some(p) = peak {
                    notes.push(format!(
                        "Relay C (64 MiB messages) peaked at {:.1} MiB RSS.",
                        p as f64 / MIB as f64
                    ));
                }
            }
        }
    }

    // Relay D: idle sessions.
    if env.wants("idle") {
        let n = plan.idle_sessions;
        progress(&format!("{n} idle sessions"));
        let row = Row::new(
            &format!("relay memory, {n} idle sessions"),
            "RSS per idle session (VmRSS delta ÷ sessions)",
            Unit::KiB,
        )
        .goal(Goal::AtMost(64.0));
        let limit = machine::raise_nofile(65_536);
        let result = if limit < (n as u64) * 5 + 100 {
            Err(format!(
                "RLIMIT_NOFILE is {limit}, too low for {n} sessions (the relay needs about 4 descriptors per session)"
            )
            .into())
        } else {
            // Room for the idle sessions and the busy ones beside them.
            let room = (n + 100).to_string();
            let args = [
                "--max-sessions",
                room.as_str(),
                "--max-connections",
                room.as_str(),
            ];
            env.start_relay(&args).and_then(|relay| {
                let r = idle_sessions(env, &relay, n, plan);
                if let Err(e) = relay.stop() {
                    notes.push(format!("relay D did not stop cleanly: {e}"));
                }
                r
            })
        };
        match result {
            Ok(idle) => {
                let per = idle.rss_after.saturating_sub(idle.rss_before) as f64 / n as f64 / 1024.0;
                rows.push(row.values(None, Some(per)));
                rows.extend(
                    seq_rows(
                        &format!("sequential, ~100 B, with {n} idle sessions open"),
                        idle.seq,
                        None,
                    )
                    .into_iter()
                    .take(1),
                );
                let first = Row::new(
                    &format!("new session, with {n} idle sessions open"),
                    "p50 time to first response",
                    Unit::Millis,
                );
                rows.push(match idle.first {
                    Ok([mut d, mut r]) => {
                        d.sort();
                        r.sort();
                        first.values(
                            Some(percentile(&d, 0.5) * 1e3),
                            Some(percentile(&r, 0.5) * 1e3),
                        )
                    }
                    Err(e) => first.failed(e.to_string()),
                });
                let mib = |b: u64| b as f64 / MIB as f64;
                notes.push(format!(
                    "Relay D: VmRSS {:.2} MiB after one warm-up session, {:.2} MiB with {n} idle sessions open \
                     ({} servers running, {} relay threads), VmHWM {:.2} MiB; by VmHWM that is {:.1} KiB per session.",
                    mib(idle.rss_before),
                    mib(idle.rss_after),
                    idle.servers,
                    idle.threads,
                    mib(idle.peak),
                    idle.peak.saturating_sub(idle.rss_before) as f64 / n as f64 / 1024.0
                ));
            }
            Err(e) => rows.push(row.failed(e.to_string())),
        }
    }
    (rows, notes)
}

/// The workloads over `via` against `relay`, each interleaved with direct: sequential
/// ~100 B (and the relay's CPU time per request), sequential 64 KiB, 32 in flight (TCP
/// only), new sessions, and 20 concurrent sessions (HTTP and SSE; over TCP, relay B runs
/// them and measures its memory too).
fn per_transport(
    env: &Env,
    plan: &Plan,
    via: Via,
    relay: &RelayProc,
    direct: &Target,
    notes: &mut Vec<String>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let target = via.target(relay);
    let t = [direct, &target];
    let p = via.prefix();
    if env.wants_on(via, "seq") {
        progress(&format!("{p}sequential round trips, small payload"));
        let pid = relay.pid();
        let runs = interleaved(plan.reps, t, |t| {
            let watch = (!matches!(t, Target::Direct { .. })).then_some(pid);
            sequential_watching(t, 20, plan.seq_small_calls, watch)
        });
        let cpu = cpu_rows(via, &runs, plan.seq_small_calls, notes);
        let goal = if via == Via::Tcp { 1.6 } else { 3.0 };
        rows.extend(seq_rows(
            &format!("{p}sequential, ~100 B ({} calls)", plan.seq_small_calls),
            runs,
            Some(Goal::RatioAtMost(goal)),
        ));
        rows.extend(cpu);
    }
    if env.wants_on(via, "seq64k") {
        progress(&format!("{p}sequential round trips, 64 KiB payload"));
        let runs = interleaved(plan.reps, t, |t| {
            sequential(t, 64 * 1024, plan.seq_64k_calls)
        });
        rows.extend(seq_rows(
            &format!(
                "{p}sequential, 64 KiB each way ({} calls)",
                plan.seq_64k_calls
            ),
            runs,
            None,
        ));
    }
    if via == Via::Tcp && env.wants_on(via, "pipe") {
        progress("32 in flight on one session");
        let runs = interleaved(plan.reps, t, |t| {
            pipelined(t, plan.pipe_depth, plan.pipe_calls)
        });
        let row = Row::new(
            &format!(
                "{} in flight, one session ({} calls)",
                plan.pipe_depth, plan.pipe_calls
            ),
            "throughput",
            Unit::ReqPerSec,
        )
        .goal(Goal::RatioAtLeast(0.6));
        rows.push(match runs {
            Ok([d, r]) => row.values(Some(median(d)), Some(median(r))),
            Err(e) => row.failed(e.to_string()),
        });
    }
    if env.wants_on(via, "first") {
        progress(&format!("{p}time to first response"));
        let name = format!(
            "{p}new session: connect/spawn + initialize + first call ({} samples)",
            plan.reps * plan.first_response_samples
        );
        let mut p50 = Row::new(&name, "p50 time to first response", Unit::Millis);
        if via == Via::Tcp {
            p50 = p50.goal(Goal::RatioAtMost(1.3));
        }
        let p99 = Row::new(&name, "p99 time to first response", Unit::Millis);
        match first_response_runs(plan, t, relay, 0, Duration::ZERO) {
            Err(e) => rows.push(p50.failed(e)),
            Ok([d, r]) => {
                let pct = |v: &[Duration], p| Some(percentile(v, p) * 1e3);
                rows.push(p50.values(pct(&d, 0.5), pct(&r, 0.5)));
                rows.push(p99.values(pct(&d, 0.99), pct(&r, 0.99)));
            }
        }
    }
    if via != Via::Tcp && env.wants_on(via, "sessions") {
        progress(&format!("{p}{} concurrent sessions", plan.sessions));
        let name = format!(
            "{p}{} sessions × {} calls, concurrent ({} reps)",
            plan.sessions, plan.session_calls, plan.session_reps
        );
        let tput = Row::new(&name, "throughput", Unit::ReqPerSec).goal(Goal::RatioAtLeast(0.25));
        let runs = interleaved(plan.session_reps, t, |t| {
            let r = concurrent(t, plan.sessions, plan.session_calls);
            relay.settle(0, Duration::from_secs(10));
            r
        });
        rows.push(match runs {
            Ok([d, r]) => tput.values(Some(median(d)), Some(median(r))),
            Err(e) => tput.failed(e.to_string()),
        });
    }
    rows
}

/// The relay's CPU time per request in the relay repetitions of a sequential workload of
/// `calls` calls each (the relay process only: its servers are processes of their own), and
/// the requests per second one core would serve at that cost. No rows if the workload
/// failed (its own rows say why).
fn cpu_rows(
    via: Via,
    runs: &Result<[Vec<Seq>; 2], Error>,
    calls: usize,
    notes: &mut Vec<String>,
) -> Vec<Row> {
    let Ok([_, relay]) = runs else {
        return Vec::new();
    };
    let name = format!(
        "{}sequential, ~100 B: CPU time of the relay process only (not its servers)",
        via.prefix()
    );
    let per = Row::new(&name, "relay CPU per request", Unit::Micros);
    let core = Row::new(&name, "requests/s per core (10⁶ ÷ µs)", Unit::ReqPerSec);
    let measured: Vec<_> = relay.iter().filter_map(|s| s.cpu).collect();
    let total: Duration = measured.iter().map(|(d, _)| *d).sum();
    let n = measured.len() * calls;
    if n == 0 || total.is_zero() {
        let why = if n == 0 {
            "cannot read the relay's CPU time from /proc"
        } else {
            "the relay used less than one clock tick of CPU"
        };
        return vec![per.failed(why.into())];
    }
    if via == Via::Tcp {
        let how = match measured[0].1 {
            CpuSource::Schedstat => {
                "the run time of its threads, summed from /proc/<pid>/task/*/schedstat (ns)"
            }
            CpuSource::Stat => "utime + stime from /proc/<pid>/stat (clock ticks)",
        };
        notes.push(format!(
            "Relay CPU per request: the CPU time the relay process (not its demo servers) used \
             during the timed calls of its sequential ~100 B repetitions ({how}), divided by \
             those calls; requests/s per core = 10⁶ ÷ that."
        ));
    }
    let us = total.as_secs_f64() * 1e6 / n as f64;
    vec![
        per.values(None, Some(us)),
        core.values(None, Some(1e6 / us)),
    ]
}

/// One 10 MiB call each way per repetition over `via`, on a relay of its own, interleaved
/// with direct; then the relay's peak RSS, which is that of the big messages.
fn big_messages(
    env: &Env,
    plan: &Plan,
    via: Via,
    direct: &Target,
    notes: &mut Vec<String>,
) -> Vec<Row> {
    let p = via.prefix();
    let mib = plan.big_size / MIB;
    progress(&format!("{p}{mib} MiB each way, fresh relay"));
    let name = format!("{p}{mib} MiB each way, one call ({} reps)", plan.big_reps);
    let mem = Row::new(
        &format!("{p}relay peak RSS during {mib} MiB each way (a relay of its own)"),
        "peak RSS of the relay (VmHWM)",
        Unit::MiB,
    )
    .goal(Goal::AtMost(8.0));
    let relay = match env.start_relay(&[]) {
        Ok(r) => r,
        Err(e) => {
            return vec![
                Row::new(&name, "round trip", Unit::Millis).failed(e.to_string()),
                mem.failed(e.to_string()),
            ]
        }
    };
    let target = via.target(&relay);
    let mut echo = Echo::new(plan.big_size);
    let runs = interleaved(plan.big_reps, [direct, &target], |t| {
        big_round_trip(t, &mut echo)
    });
    drop(echo);
    let ok = runs.is_ok();
    let mut rows = big_rows(&name, plan.big_size, runs, Goal::RatioAtMost(1.5));
    rows.push(match relay.peak_rss() {
        Some(_) if !ok => mem.failed(format!("the {mib} MiB calls failed")),
        Some(b) => mem.values(None, Some(b as f64 / MIB as f64)),
        None => mem.failed("cannot read VmHWM".into()),
    });
    if let Err(e) = relay.stop() {
        notes.push(format!(
            "the {} relay of the {mib} MiB calls did not stop cleanly: {e}",
            via.name()
        ));
    }
    rows
}

/// Client mode: each workload against `remote` directly (the load generator's own HTTP or
/// TCP client) and through a stdio client of `mcp-relay --connect` to it, interleaved. The
/// remote is settled (its servers of closed sessions gone) after every repetition.
fn client_mode(env: &Env, plan: &Plan, remote: &RelayProc) -> Vec<Row> {
    let settled = |r: io::Result<Seq>| {
        remote.settle(0, Duration::from_secs(10));
        r
    };
    let mut rows = Vec::new();
    let http = Target::Http { addr: remote.http };
    let via_http = env.through(format!("http://{}/mcp", remote.http));
    let t = [&http, &via_http];
    progress("  Streamable HTTP remote: sequential, ~100 B");
    let runs = interleaved(plan.reps, t, |t| {
        settled(sequential(t, 20, plan.seq_small_calls))
    });
    rows.extend(seq_rows(
        &format!(
            "client mode, Streamable HTTP remote: sequential, ~100 B ({} calls)",
            plan.seq_small_calls
        ),
        runs,
        Some(Goal::RatioAtMost(2.0)),
    ));
    let size = plan.connect_big_size;
    progress(&format!(
        "  Streamable HTTP remote: {} KiB each way",
        size / 1024
    ));
    let mut echo = Echo::new(size);
    let runs = interleaved(plan.reps, t, |t| {
        let r = big_round_trips(t, &mut echo, plan.connect_big_calls);
        remote.settle(0, Duration::from_secs(10));
        r
    });
    drop(echo);
    rows.extend(big_rows(
        &format!(
            "client mode, Streamable HTTP remote: {} MiB each way ({} reps × {} calls)",
            size as f64 / MIB as f64,
            plan.reps,
            plan.connect_big_calls
        ),
        size,
        runs,
        Goal::RatioAtMost(1.5),
    ));
    let tcp = Target::Tcp { addr: remote.addr };
    let via_tcp = env.through(format!("tcp://{}", remote.addr));
    progress("  TCP remote: sequential, ~100 B");
    let runs = interleaved(plan.reps, [&tcp, &via_tcp], |t| {
        settled(sequential(t, 20, plan.seq_small_calls))
    });
    rows.extend(seq_rows(
        &format!(
            "client mode, TCP remote: sequential, ~100 B ({} calls)",
            plan.seq_small_calls
        ),
        runs,
        Some(Goal::RatioAtMost(2.0)),
    ));
    rows
}

fn big_rows(
    name: &str,
    size: usize,
    runs: Result<[Vec<Duration>; 2], Error>,
    goal: Goal,
) -> Vec<Row> {
    let rt = Row::new(name, "round trip", Unit::Millis).goal(goal);
    let bw = Row::new(name, "throughput each way", Unit::MiBPerSec);
    match runs {
        Ok([d, r]) => {
            progress(&format!("  direct: {} ms; relay: {} ms", ms(&d), ms(&r)));
            let med = |v: &[Duration]| median(v.iter().map(Duration::as_secs_f64).collect());
            let (dm, rm) = (med(&d), med(&r));
            let mib = size as f64 / MIB as f64;
            vec![
                rt.values(Some(dm * 1e3), Some(rm * 1e3)),
                bw.values(Some(mib / dm), Some(mib / rm)),
            ]
        }
        Err(e) => vec![rt.failed(e.to_string())],
    }
}
