//! mcp-relay benchmarks: a load generator that measures the relay against talking to the same
//! MCP server directly, and micro-benchmarks of the core.
//!
//! `cargo run --release -p mcp-relay-benches -- all` builds the relay
//! (`cargo build --release -p mcp-relay`), runs everything (about two and a half minutes on 2
//! cores; `--quick` for a ~30 s smoke run) and writes a Markdown report to stdout and to `--out`
//! (default `target/bench-report.md`). Other subcommands: `load` (only the load generator),
//! `connect` (only the client-mode workloads), `framing`, `core`, `soak`, `faults` (see
//! below), `tls` (what TLS costs, see `tls.rs`; not run by `all`, written to
//! `target/bench-tls-report.md`). Flags: `--quick`, `--out PATH`, `--relay PATH` (use this
//! binary, do not build),
//! `--no-build`, `--no-pin`,
//! `--only seq,seq64k,pipe,sessions,first,prespawn,big,idle,http,sse,connect,scale,socat`
//! (`http` and `sse` run every workload over that transport, or, if some of `seq,seq64k,
//! sessions,first,big` are named too, only those: `--only big,http,sse` gives the 10 MiB rows
//! of all three transports).
//!
//! # The back end and the two ways of reaching it
//!
//! The server is always the relay's built-in demo server (`mcp-relay demo-server`, tool
//! `echo`), which answers a small call in a few microseconds. Every workload runs twice with
//! the same code, through the [`transport::Transport`] trait (send bytes, read a line):
//!
//! * **direct**: the load generator spawns `mcp-relay demo-server` itself and talks over its
//!   stdin/stdout pipes. No relay at all: the lower bound.
//! * **relay**: `mcp-relay --listen 127.0.0.1:0 --demo --ping-interval 0` (pings off, to keep
//!   probes out of the figures), one TCP connection per session, each served by its own
//!   demo-server child of the relay.
//!
//! * **relay over Streamable HTTP**: the relay's `http://127.0.0.1:0` listener, one
//!   keep-alive connection per session (`POST /mcp`).
//! * **relay over legacy HTTP+SSE** (2024-11-05): the same listener; per session, one
//!   connection holds the `GET /sse` event stream (its first event names the
//!   `/messages?sessionId=…` endpoint, then every server message arrives on it as
//!   `event: message`) and one keep-alive connection POSTs each message there (202), as
//!   SDK clients of that transport do.
//! * **client mode** (its own rows): the remote is such a relay; direct is the load
//!   generator's own HTTP or TCP client speaking to it, and through is a stdio client of
//!   `mcp-relay --connect URL`, which carries the session to the same remote.
//!
//! **ratio** = relay figure ÷ direct figure, in the same unit, from the same run. For times
//! (latency, round trip) lower is better, so a ratio of 1.3 means the relay takes 30 % longer;
//! for throughputs higher is better, so 0.6 means the relay gets 60 % of the direct rate.
//!
//! Repetitions of a workload alternate direct and relay, and the report gives the median
//! over the repetitions. Where there are two or more CPUs, the load generator is pinned to
//! the first and the server side (the relay, whose children inherit its affinity, or the
//! directly spawned servers) to the others, so both sides get the same CPUs.
//!
//! # Workloads
//!
//! Each of these runs over TCP, Streamable HTTP and legacy HTTP+SSE (rows named
//! `Streamable HTTP: …` and `legacy HTTP+SSE: …`; unnamed rows are TCP), each against the
//! direct figure measured beside it, except 32 in flight (TCP only). Targets are for TCP
//! unless given per transport.
//!
//! * **sequential, ~100 B**: one session, one `echo` call at a time with a short message;
//!   p50 and p99 latency per call and calls/s. Target: relay p50 ≤ 1.6× direct (≤ 3× over
//!   HTTP and SSE).
//! * **relay CPU per request**: during those calls, the CPU time of the relay process alone
//!   (its threads' run time from `/proc/<pid>/task/*/schedstat`, or utime + stime from
//!   `/proc/<pid>/stat` where schedstat is missing; its demo servers are processes of their
//!   own and not counted) ÷ calls, in µs, and the requests/s one core would serve at that cost
//!   (10⁶ ÷ µs). No direct figure, no target.
//! * **sequential, 64 KiB**: the same with a 64 KiB message (64 KiB each way).
//! * **32 in flight**: one session, 32 calls always outstanding; calls/s. Target ≥ 0.6×.
//! * **20 sessions × 200 calls**: 20 sessions (20 TCP connections, 20 HTTP keep-alive
//!   connections, 20 SSE streams with their 20 POST connections, or 20 direct children),
//!   each driven by its own thread making sequential calls, started together; total calls/s.
//!   Target ≥ 0.4× (≥ 0.25× over HTTP and SSE).
//! * **new session**: connect (or spawn) + `initialize` + `initialized` + first call, repeated;
//!   the time to the first call's answer, dominated by starting the server (direct: a plain
//!   `posix_spawn` by the load generator, then its pipes); no `--prespawn`. Target ≤ 1.3×
//!   (none over HTTP and SSE).
//! * **10 MiB each way**: one call whose message and answer are 10 MiB; round-trip time.
//!   Target ≤ 1.5×. Each transport gets a relay of its own for this, and its peak RSS
//!   (VmHWM) after these calls is the row **relay peak RSS during 10 MiB each way**
//!   (target ≤ 8 MiB). Then **64 MiB each way** (TCP) through a relay run with
//!   `--max-message-size 128MiB`: it must not fail.
//! * **client mode, sequential ~100 B** (Streamable HTTP remote, and TCP remote): p50, p99,
//!   calls/s, through `--connect` against the same remote spoken to directly. Target: p50
//!   ≤ 2× direct (the added hop, pipes to a local relay and its own client, should cost no
//!   more than the whole remote round trip it is added to). **1 MiB each way** to the
//!   Streamable HTTP remote: 5 calls on one session per repetition, median round trip;
//!   target ≤ 1.5× (as for the other big messages).
//! * **relay memory**: the relay process's peak RSS (VmHWM in `/proc/<pid>/status`) after the
//!   20-session workload (target ≤ 8 MiB), and the growth of its RSS (VmRSS) per idle session
//!   with 1,000 sessions open, each initialized (target ≤ 64 KiB). The servers are separate
//!   processes and are not counted. No direct figure: there is no relay there.
//! * **with 1,000 idle sessions open**: while those sessions stay open, the sequential ~100 B
//!   p50 and the new-session time again (no targets: they show what idle sessions cost the
//!   busy ones).
//!
//! * **scale** (`scale.rs`, its own section): with N idle sessions open (N = 1,000, then the
//!   largest of 10,000 the descriptor limit allows; `--quick`: 200), TCP and Streamable HTTP,
//!   the sequential ~100 B p50 and p90 and the new-session p50 through a relay holding them,
//!   against a relay holding none run beside it (repetitions alternating direct, none, N).
//!   Target: ≤ 1.2× none idle. Also the relay's RSS growth per idle session at each N.
//! * **socat** (`socat.rs`, its own section): the same TCP workloads against `socat
//!   TCP-LISTEN:PORT,fork,…,nodelay EXEC:"mcp-relay demo-server"`, a C byte pump, as a
//!   reference, and the peak RSS of the forked socat during the 10 MiB call. Skipped with a
//!   note when `socat` is not on `PATH`.
//!
//! Each group of workloads gets a fresh relay (single-session workloads over TCP; all
//! workloads over HTTP; over SSE; 10 MiB over each transport; 20 TCP sessions; 64 MiB with
//! `--max-message-size 128MiB`; idle sessions), so each memory figure is its own.
//!
//! `soak` runs sequential (or `--depth N` pipelined) calls through a relay only, over
//! `--transport tcp|http|sse` (default tcp; optionally with `--idle N` idle sessions of that
//! transport open beside), printing its pid, so that `perf record -p`, `perf stat -p` or
//! `strace -c -p` can be attached to it.
//! Run it from the `profiling` profile (`cargo run --profile profiling -p mcp-relay-benches --
//! soak`): the release build with debug info and symbols, which the release profile strips.
//!
//! `faults` is a soak test rather than a benchmark (not run by `all`, not in CI): `--sessions N`
//! sessions (half TCP, half Streamable HTTP) at steady load for `--minutes M`, with a fault on
//! a seeded schedule every `--fault-every` seconds (a server crashed through the demo tool
//! `crash`, a server SIGKILLed, a server hung through `hang`, a session abandoned mid-call,
//! a slow reader of a multi-MiB answer). It samples the relay's RSS, open descriptors and
//! child processes every second and exits non-zero, saying why, if a request is lost or
//! answered twice or if any of the three trends upward. Listing the relay's `/proc/<pid>/fd`
//! needs root (the relay is non-dumpable). See `faults.rs` for the rules;
//! `cargo run --release -p mcp-relay-benches -- faults --minutes 30 --sessions 40` is the
//! long run recorded in `benches/SOAK.md`.
//!
//! # Micro-benchmarks of the core
//!
//! * **framing**: `LineFramer` (and `classify`) over randomly fragmented input, GB/s.
//! * **core loop**: `mcp_relay_core::Relay` driven without I/O (accept, spawned, client data,
//!   child data, writes completed, poll_timeout and handle_timeout after every input, as the
//!   mio loop does) with a fake clock and no-op I/O; messages/s (a request in and its response
//!   out count as two). One variant keeps 1,000 idle sessions open beside the busy one.

mod client;
mod core_loop;
mod faults;
mod framing;
mod load;
mod machine;
mod relay;
mod report;
mod scale;
mod socat;
mod tls;
mod transport;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: mcp-relay-benches [all|load|connect|tls|framing|core|soak|faults] [options]
  all       build the relay, run the load generator and the micro-benchmarks, write the report
  load      the load-generator workloads only (report written too)
  connect   the client-mode workloads only: a stdio client through `mcp-relay --connect URL`
            against the same remote (Streamable HTTP, TCP) spoken to directly (report too)
  tls       TLS against plaintext on one relay (https:// and http://, tls:// and tcp://):
            sequential calls, new sessions, 20 sessions, 10 MiB, RSS per idle session;
            needs the openssl CLI; report written to target/bench-tls-report.md (or --out)
  framing   framing throughput of the core on randomly fragmented input
  core      the core loop (messages/s) with no I/O
  soak      sequential calls through a relay only, printing its pid, to attach perf or strace
            (--seconds N, default 10; --payload BYTES, default 20; --depth N, default 1;
            --idle N: open N idle sessions first; --transport tcp|http|sse, default tcp)
  faults    soak with faults (not a benchmark; exit status 1 if a request is lost or RSS,
            descriptors or children trend upward; run as root to see the relay's descriptors):
            --sessions N (default 40, half TCP, half HTTP), --minutes M (default 30),
            --seed S (default 1), --fault-every SECS (default 2; crash, kill, hang, abandon,
            slow reader, chosen by the seed), --warmup MIN (default 2), --interval-ms MS
            between calls of a session (default 100), --depth N calls in flight on a TCP
            session (default 2), --slow-size BYTES (default 4194304), --request-timeout SECS
            (default 60); --out PATH writes the final report there too
options:
  --quick         a ~30 s smoke run
  --out PATH      where to write the report (default: target/bench-report.md)
  --relay PATH    the mcp-relay binary to measure (default: next to this one; not rebuilt)
  --no-build      do not run `cargo build --release -p mcp-relay` first
  --no-pin        do not pin the load generator and the server side to different CPUs
  --only LIST     comma-separated workloads:
                  seq,seq64k,pipe,sessions,first,prespawn,big,idle,http,sse,connect,scale,socat
                  (http and sse: every workload over that transport, or only the
                  seq,seq64k,sessions,first,big also named)";

/// Groups with their own section of the report (`scale.rs`, `socat.rs`), after the table.
const EXTRA_GROUPS: [&str; 2] = ["scale", "socat"];

struct Options {
    command: String,
    quick: bool,
    out: Option<PathBuf>,
    relay: Option<PathBuf>,
    build: bool,
    pin: bool,
    only: Option<Vec<String>>,
    seconds: f64,
    payload: usize,
    depth: usize,
    idle: usize,
    transport: load::Via,
    faults: FaultOptions,
}

/// The `faults` command's flags (see `faults.rs`).
struct FaultOptions {
    minutes: f64,
    sessions: usize,
    seed: u64,
    fault_every: f64,
    warmup: f64,
    interval_ms: u64,
    depth: Option<usize>,
    slow_size: usize,
    request_timeout: f64,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        command: "framing".into(),
        quick: false,
        out: None,
        relay: None,
        build: true,
        pin: true,
        only: None,
        seconds: 10.0,
        payload: 20,
        depth: 1,
        idle: 0,
        transport: load::Via::Tcp,
        faults: FaultOptions {
            minutes: 30.0,
            sessions: 40,
            seed: 1,
            fault_every: 2.0,
            warmup: 2.0,
            interval_ms: 100,
            depth: None,
            slow_size: 4 << 20,
            request_timeout: 60.0,
        },
    };
    let mut args = std::env::args().skip(1);
    let mut command = None;
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => o.quick = true,
            "--out" => o.out = Some(value("--out")?.into()),
            "--relay" => o.relay = Some(value("--relay")?.into()),
            "--no-build" => o.build = false,
            "--no-pin" => o.pin = false,
            "--only" => {
                let list: Vec<String> = value("--only")?
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect();
                let known = |w: &str| load::WORKLOADS.contains(&w) || EXTRA_GROUPS.contains(&w);
                if let Some(bad) = list.iter().find(|w| !known(w)) {
                    return Err(format!(
                        "unknown workload `{bad}`; known: {},{}",
                        load::WORKLOADS.join(","),
                        EXTRA_GROUPS.join(",")
                    ));
                }
                o.only = Some(list);
            }
            "--transport" => {
                let v = value("--transport")?;
                o.transport = load::Via::from_name(&v)
                    .ok_or(format!("--transport: `{v}` is not tcp, http or sse"))?;
            }
            "--seconds" | "--payload" | "--depth" | "--idle" => {
                let v = value(&a)?;
                let bad = || format!("{a}: bad number `{v}`");
                match a.as_str() {
                    "--seconds" => o.seconds = v.parse().map_err(|_| bad())?,
                    "--payload" => o.payload = v.parse().map_err(|_| bad())?,
                    "--idle" => o.idle = v.parse().map_err(|_| bad())?,
                    _ => {
                        o.depth = v.parse().map_err(|_| bad())?;
                        o.faults.depth = Some(o.depth);
                    }
                }
            }
            "--minutes" | "--sessions" | "--seed" | "--fault-every" | "--warmup"
            | "--interval-ms" | "--slow-size" | "--request-timeout" => {
                let v = value(&a)?;
                let bad = || format!("{a}: bad number `{v}`");
                let f = &mut o.faults;
                match a.as_str() {
                    "--minutes" => f.minutes = v.parse().map_err(|_| bad())?,
                    "--sessions" => f.sessions = v.parse().map_err(|_| bad())?,
                    "--seed" => f.seed = v.parse().map_err(|_| bad())?,
                    "--fault-every" => f.fault_every = v.parse().map_err(|_| bad())?,
                    "--warmup" => f.warmup = v.parse().map_err(|_| bad())?,
                    "--interval-ms" => f.interval_ms = v.parse().map_err(|_| bad())?,
                    "--slow-size" => f.slow_size = v.parse().map_err(|_| bad())?,
                    _ => f.request_timeout = v.parse().map_err(|_| bad())?,
                }
                let positive = [f.minutes, f.fault_every, f.request_timeout];
                if f.sessions == 0 || positive.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
                    return Err(format!("{a}: must be more than 0"));
                }
                if !(f.warmup.is_finite() && f.warmup >= 0.0) {
                    return Err("--warmup: must be 0 or more".into());
                }
            }
            "-h" | "--help" => return Err(String::new()),
            c if !c.starts_with('-') && command.is_none() => command = Some(c.to_string()),
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    if let Some(c) = command {
        o.command = c;
    }
    Ok(o)
}

/// The cargo target directory this binary was built into (`…/target`).
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn build_relay() -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    eprintln!("[bench] cargo build --release -p mcp-relay");
    let status = Command::new(&cargo)
        .args(["build", "--release", "-p", "mcp-relay", "--manifest-path"])
        .arg(&manifest)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {}: {e}", cargo.to_string_lossy()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`cargo build --release -p mcp-relay` failed ({status})"
        ))
    }
}

fn relay_exe(o: &Options) -> Result<PathBuf, String> {
    let exe = match &o.relay {
        Some(p) => p.clone(),
        None => {
            if o.build {
                build_relay()?;
            }
            std::env::current_exe()
                .map_err(|e| format!("cannot find this program's path: {e}"))?
                .with_file_name("mcp-relay")
        }
    };
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(format!(
            "the relay binary {} is missing: build it with `cargo build --release -p mcp-relay`, \
             or pass --relay PATH",
            exe.display()
        ))
    }
}

/// Pins this process to the load generator's CPU (unless `--no-pin` or too few CPUs); returns
/// the plan, if it is in force, and a line saying how things are pinned.
fn pin(o: &Options) -> (Option<machine::Pinning>, String) {
    let pinning = if o.pin { machine::plan_pinning() } else { None };
    let pin_note = match &pinning {
        Some(p) => match p.generator.apply(0) {
            Ok(()) => format!(
                "load generator (all its threads) on CPU {}; server side on CPU {} (the relay, \
                 set before exec, so its threads and its server children inherit it; the \
                 directly spawned servers, set right after spawn)",
                p.generator, p.server
            ),
            Err(e) => {
                eprintln!("[bench] cannot pin the load generator: {e}");
                "not pinned (sched_setaffinity failed)".into()
            }
        },
        None if !o.pin => "not pinned (--no-pin)".into(),
        None => "not pinned (fewer than 2 CPUs available)".into(),
    };
    let pinning = pinning.filter(|_| pin_note.starts_with("load generator"));
    (pinning, pin_note)
}

fn run_report(o: &Options, with_micro: bool) -> Result<(), String> {
    let started = Instant::now();
    let account = machine::CpuAccount::start();
    let load_start = machine::load_average();
    let exe = relay_exe(o)?;
    let (pinning, pin_note) = pin(o);
    let plan = if o.quick {
        load::Plan::quick()
    } else {
        load::Plan::full()
    };
    let env = load::Env {
        relay_exe: exe.clone(),
        pinning,
        only: o.only.clone(),
    };
    let (rows, notes) = load::run(&env, &plan);
    let wants = |g: &str| o.only.as_ref().is_none_or(|l| l.iter().any(|x| x == g));
    let mut sections = String::new();
    if wants("scale") {
        sections += &scale::run(&env, o.quick);
    }
    if wants("socat") {
        sections += &socat::run(&env, &plan);
    }

    let mut micro = String::new();
    if with_micro {
        let budget = if o.quick {
            Duration::from_millis(300)
        } else {
            Duration::from_secs(2)
        };
        eprintln!("[bench] framing micro-benchmark");
        micro += &framing::run(budget);
        micro.push('\n');
        eprintln!("[bench] core loop micro-benchmark");
        micro += &core_loop::table(&core_loop::run(budget / 2));
    }

    let (other_cpu, other_share, wall) = account.others();
    let mut r = String::new();
    let _ = writeln!(r, "# mcp-relay benchmark report\n");
    let _ = writeln!(r, "- date: {}", machine::utc_now());
    let _ = writeln!(r, "- machine: {}", machine::description());
    let _ = writeln!(
        r,
        "- run: {} ({} repetitions of each workload unless its row says otherwise; medians reported; direct and relay repetitions alternate)",
        if o.quick { "--quick" } else { "full" },
        plan.reps
    );
    let _ = writeln!(
        r,
        "- relay: `{} {}`; back end: its built-in demo server (`mcp-relay demo-server`, tool `echo`); direct: the load generator spawns the same demo server and uses its stdin/stdout",
        exe.display(),
        relay::BASE_ARGS.join(" ")
    );
    let _ = writeln!(r, "- pinning: {pin_note}");
    let _ = writeln!(
        r,
        "- background load: load average {load_start} at start, {} at end; processes other than this benchmark used {other_cpu:.1} CPU-s ({:.0} % of the machine) during the {wall:.0} s run{}",
        machine::load_average(),
        other_share * 100.0,
        if other_share > 0.1 {
            " — **the machine was busy with other work: figures are noisy**"
        } else {
            ""
        }
    );
    let _ = writeln!(
        r,
        "- columns: direct = the server without the relay in between (its stdin/stdout; in client-mode rows, the remote spoken to over HTTP or TCP by the load generator); relay = through the relay (over TCP unless the row names Streamable HTTP or legacy HTTP+SSE; in client-mode rows, a stdio client through `mcp-relay --connect`, see the note below the table)"
    );
    let _ = writeln!(
        r,
        "- ratio = relay figure ÷ direct figure (times: lower is better; throughputs: higher is better)\n"
    );
    r += &report::table(&rows);
    let passed = rows.iter().filter(|x| x.verdict() == Some(true)).count();
    let judged = rows.iter().filter(|x| x.verdict().is_some()).count();
    let _ = writeln!(r, "\nTargets met: {passed} of {judged}.\n");
    for n in &notes {
        let _ = writeln!(r, "- {n}");
    }
    r += &sections;
    if !micro.is_empty() {
        let _ = writeln!(r, "\n## Micro-benchmarks of the core\n\n{micro}");
    }
    let _ = writeln!(r, "\nTotal time: {:.0} s.", started.elapsed().as_secs_f64());

    print!("{r}");
    let out = o
        .out
        .clone()
        .unwrap_or_else(|| target_dir().join("bench-report.md"));
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&out, &r).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    eprintln!("[bench] report written to {}", out.display());
    Ok(())
}

fn tls_report(o: &Options) -> Result<(), String> {
    let exe = relay_exe(o)?;
    let (pinning, pin_note) = pin(o);
    let env = load::Env {
        relay_exe: exe,
        pinning,
        only: None,
    };
    let plan = if o.quick {
        tls::Plan::quick()
    } else {
        tls::Plan::full()
    };
    let r = tls::report(&env, &plan, o.quick, &pin_note).map_err(|e| e.to_string())?;
    print!("{r}");
    let out = o
        .out
        .clone()
        .unwrap_or_else(|| target_dir().join("bench-tls-report.md"));
    std::fs::write(&out, &r).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    eprintln!("[bench] report written to {}", out.display());
    Ok(())
}

fn soak(o: &Options) -> Result<(), String> {
    let exe = relay_exe(o)?;
    let pinning = if o.pin { machine::plan_pinning() } else { None };
    if let Some(p) = &pinning {
        p.generator
            .apply(0)
            .map_err(|e| format!("cannot pin: {e}"))?;
    }
    let env = load::Env {
        relay_exe: exe,
        pinning,
        only: None,
    };
    let rate = load::soak(&env, o.seconds, o.payload, o.depth, o.idle, o.transport)
        .map_err(|e| e.to_string())?;
    println!("{rate:.0} calls/s");
    Ok(())
}

fn faults(o: &Options) -> Result<(), String> {
    let exe = relay_exe(o)?;
    let f = &o.faults;
    let cfg = faults::Config {
        duration: Duration::from_secs_f64(f.minutes * 60.0),
        sessions: f.sessions,
        seed: f.seed,
        fault_every: Duration::from_secs_f64(f.fault_every),
        warmup: Duration::from_secs_f64(f.warmup * 60.0),
        interval: Duration::from_millis(f.interval_ms),
        depth: f.depth.unwrap_or(2),
        slow_size: f.slow_size,
        request_timeout: Duration::from_secs_f64(f.request_timeout),
    };
    let (report, result) = match faults::run(&exe, cfg) {
        Ok(r) => (r, Ok(())),
        Err(e) => {
            let text = e.to_string();
            let first = text
                .lines()
                .find_map(|l| l.strip_prefix("- verdict: "))
                .unwrap_or("the soak failed")
                .to_string();
            (text, Err(first))
        }
    };
    write_optional(o, &report)?;
    result
}

fn write_optional(o: &Options, text: &str) -> Result<(), String> {
    print!("{text}");
    if let Some(out) = &o.out {
        std::fs::write(out, text).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("mcp-relay-benches: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let budget = if o.quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(2)
    };
    let command = o.command.clone();
    let result = match command.as_str() {
        "all" => run_report(&o, true),
        "load" => run_report(&o, false),
        "connect" => {
            let o = Options {
                only: o.only.or_else(|| Some(vec!["connect".into()])),
                ..o
            };
            run_report(&o, false)
        }
        "tls" => tls_report(&o),
        "framing" => write_optional(&o, &framing::run(budget)),
        "core" => write_optional(&o, &core_loop::table(&core_loop::run(budget / 2))),
        "soak" => soak(&o),
        "faults" => faults(&o),
        other => Err(format!("unknown benchmark `{other}`\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-relay-benches: {e}");
            ExitCode::FAILURE
        }
    }
}
