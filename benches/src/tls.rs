//! `tls`: what TLS costs, as a ratio to the same relay spoken to in plaintext in the same run.
//!
//! One relay (`mcp-relay --demo`, pings off) listens four ways: `tcp://`, `http://`, `tls://`
//! and `https://`, the TLS ones with a certificate made for the run with the `openssl` CLI (a
//! throwaway CA and a leaf for 127.0.0.1 and localhost signed by it; webpki refuses a
//! self-signed leaf as `CaUsedAsEndEntity`). The load generator's client is rustls (ring, its
//! default TLS 1.3 suites, session resumption on) over a blocking `TcpStream`, trusting only
//! that CA, and runs the very same workload code as in plaintext: the transports differ only
//! in the stream under them (`transport::Target::Https` against `Target::Http`).
//!
//! Repetitions alternate plain and TLS; medians are reported, with ratio = TLS ÷ plain:
//!
//! * **sequential, ~100 B**: one Streamable HTTP session on one keep-alive connection, one
//!   `echo` call at a time; p50, p99 and calls/s. The same over `tcp://` against `tls://`.
//! * **new session**: connect, TLS handshake (resumed after the first), `initialize`,
//!   `initialized`, the first call; p50 and p99. Dominated by starting the demo server.
//! * **20 sessions × 200 calls**: 20 sessions, each on its own keep-alive connection and
//!   thread, started together once all are open; total calls/s.
//! * **10 MiB each way**: one `echo` call whose message and answer are 10 MiB, on a fresh
//!   session; round trip.
//! * **relay memory per idle session**: groups of 200 Streamable HTTP sessions initialized
//!   and left idle with their keep-alive connection open (an HTTP session without a
//!   connection holds no TLS state at all); growth of the relay's VmRSS ÷ 200 per group.
//!   Measured first, and every group stays open until the last is measured: a group opened
//!   after others were closed would live in the memory they freed and grow nothing. Groups
//!   go plain, TLS, TLS, plain, plain, TLS, so that the relay's tables doubling land on
//!   both sides alike.
//!
//! Every repetition count is fixed, every socket has a 60 s timeout, and repetitions stop
//! early (the report says so) once the run passes its time budget.

use crate::client::{Echo, Session};
use crate::load::{self, Env};
use crate::machine;
use crate::relay::{Error, RelayProc};
use crate::report::{self, Row, Unit};
use crate::transport::Target;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;

/// How much of each workload to run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub reps: usize,
    pub seq_calls: usize,
    pub first_samples: usize,
    pub sessions: usize,
    pub session_calls: usize,
    pub big_size: usize,
    pub big_reps: usize,
    pub idle_sessions: usize,
    /// Rounds of idle sessions per side.
    pub idle_rounds: usize,
    /// Past this, repetitions stop early (each workload still runs once each way).
    pub budget: Duration,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            reps: 9,
            seq_calls: 4000,
            first_samples: 10,
            sessions: 20,
            session_calls: 200,
            big_size: 10 * MIB,
            big_reps: 7,
            idle_sessions: 200,
            idle_rounds: 3,
            budget: Duration::from_secs(100),
        }
    }

    pub fn quick() -> Plan {
        Plan {
            reps: 3,
            seq_calls: 500,
            first_samples: 4,
            big_reps: 2,
            idle_rounds: 1,
            budget: Duration::from_secs(40),
            ..Plan::full()
        }
    }
}

/// The CA and the leaf of one run, in a directory of their own, removed on drop.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    /// A P-256 CA, and a P-256 leaf for 127.0.0.1 and localhost signed by it, valid two days.
    fn make() -> Result<Certs, Error> {
        let dir = std::env::temp_dir().join(format!("mcp-relay-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let certs = Certs { dir };
        std::fs::write(
            certs.path("leaf.ext"),
            "subjectAltName = IP:127.0.0.1, DNS:localhost\n\
             basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature\n\
             extendedKeyUsage = serverAuth\n",
        )?;
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            &certs.dir,
            &[
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
                &["-subj", "/CN=mcp-relay bench CA"],
                &["-addext", "basicConstraints=critical,CA:TRUE"],
                &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ]
            .concat(),
        )?;
        openssl(
            &certs.dir,
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "leaf.key",
                    "-out",
                    "leaf.csr",
                    "-subj",
                    "/CN=localhost",
                ],
            ]
            .concat(),
        )?;
        openssl(
            &certs.dir,
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                "2",
                "-days",
                "2",
                "-extfile",
                "leaf.ext",
                "-out",
                "leaf.pem",
            ],
        )?;
        Ok(certs)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A client trusting only this CA, offering `alpn`.
    fn client(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>, Error> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.path("ca.pem"))? {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), Error> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `openssl` (needed to make the certificates): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`openssl {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into())
    }
}

/// A connection to `addr` with its TLS handshake done.
fn handshake(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> Result<(rustls::ClientConnection, TcpStream), Error> {
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
    let name = ServerName::IpAddress(addr.ip().into());
    let mut conn = rustls::ClientConnection::new(Arc::clone(config), name)?;
    // Each step moves the handshake on or fails (timeouts bound the reads); a TLS 1.3
    // handshake takes two.
    for _ in 0..8 {
        if !conn.is_handshaking() {
            return Ok((conn, tcp));
        }
        conn.complete_io(&mut tcp)?;
    }
    Err("the TLS handshake did not finish".into())
}

/// What a handshake with `addr` settles on (protocol, cipher suite, key exchange, ALPN), and
/// whether the next connection resumes the session (as the workloads' later ones do).
fn negotiated(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> Result<String, Error> {
    let (mut conn, mut tcp) = handshake(addr, config)?;
    let text = format!(
        "{:?}, {:?}, key exchange {:?}, ALPN {}",
        conn.protocol_version().ok_or("no protocol version")?,
        conn.negotiated_cipher_suite()
            .ok_or("no cipher suite")?
            .suite(),
        conn.negotiated_key_exchange_group()
            .ok_or("no key exchange")?
            .name(),
        conn.alpn_protocol()
            .map_or("none".into(), |p| String::from_utf8_lossy(p).into_owned())
    );
    // The server's session tickets follow its handshake; a read takes them in (or times out).
    tcp.set_read_timeout(Some(Duration::from_millis(500)))?;
    let _ = conn.complete_io(&mut tcp);
    conn.send_close_notify();
    let _ = conn.complete_io(&mut tcp);
    let (mut next, mut tcp) = handshake(addr, config)?;
    let kind = next.handshake_kind();
    next.send_close_notify();
    let _ = next.complete_io(&mut tcp);
    Ok(match kind {
        Some(k) => format!("{text}; the next connection's handshake: {k:?}"),
        None => text,
    })
}

/// Runs `f` up to `reps` times each way, plain then TLS, and stops early once `deadline` has
/// passed (after one of each). Returns the results per side.
fn alternating<T>(
    reps: usize,
    deadline: Instant,
    pair: [&Target; 2],
    mut f: impl FnMut(&Target) -> io::Result<T>,
) -> Result<[Vec<T>; 2], Error> {
    let mut out = [Vec::new(), Vec::new()];
    for rep in 0..reps {
        if rep > 0 && Instant::now() > deadline {
            break;
        }
        for (i, t) in pair.iter().enumerate() {
            let name = if i == 0 { "plain" } else { "TLS" };
            out[i].push(f(t).map_err(|e| format!("{name}: {e}"))?);
        }
    }
    Ok(out)
}

/// "N reps", or "N of M reps: …" when the time budget cut the workload short.
fn reps_label(done: usize, planned: usize) -> String {
    if done < planned {
        format!("{done} of {planned} reps: time budget reached")
    } else {
        format!("{done} reps")
    }
}

fn progress(msg: &str) {
    eprintln!("[bench tls] {msg}");
}

/// Opens `n` sessions of `target` and leaves them idle, each on its keep-alive connection, in
/// `held`; returns the relay's growth in VmRSS per session. Nothing is closed between groups,
/// so no group lives in memory another freed: each grows the heap by what it holds.
fn idle_group(
    relay: &RelayProc,
    target: &Target,
    n: usize,
    held: &mut Vec<Session>,
) -> Result<f64, Error> {
    std::thread::sleep(Duration::from_millis(200));
    let before = relay.rss().ok_or("cannot read the relay's VmRSS")?;
    for i in 0..n {
        let s = Session::open(target).map_err(|e| format!("idle session {} of {n}: {e}", i + 1))?;
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = relay.rss().ok_or("cannot read the relay's VmRSS")?;
    Ok((after as f64 - before as f64) / n as f64)
}

/// Groups of `plan.idle_sessions` idle sessions, plain and TLS in the order plain, TLS, TLS,
/// plain, plain, TLS, …, all held open until the last group is measured; the row gives the
/// median growth per session of each side. Every session is ended (DELETE) before it returns.
fn idle_memory(
    relay: &RelayProc,
    pair: [&Target; 2],
    plan: &Plan,
    deadline: Instant,
) -> (Row, String) {
    let n = plan.idle_sessions;
    let mut per = [Vec::new(), Vec::new()];
    let mut held = Vec::with_capacity(2 * plan.idle_rounds * n);
    let mut failure = None;
    'rounds: for round in 0..plan.idle_rounds {
        if round > 0 && Instant::now() > deadline {
            break;
        }
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            match idle_group(relay, pair[side], n, &mut held) {
                Ok(bytes) => per[side].push(bytes / 1024.0),
                Err(e) => {
                    let name = if side == 0 { "plain" } else { "TLS" };
                    failure = Some(format!("{name}: {e}"));
                    break 'rounds;
                }
            }
        }
    }
    let total = held.len();
    drop(held);
    if !relay.settle(0, Duration::from_secs(60)) && failure.is_none() {
        failure = Some(format!(
            "the servers of {total} idle sessions did not all exit within 60 s"
        ));
    }
    let done = per[0].len().min(per[1].len());
    let row = Row::new(
        &format!(
            "relay memory, idle Streamable HTTP sessions with their keep-alive connection open ({done} groups of {n} each way{})",
            if done < plan.idle_rounds { ", time budget reached" } else { "" }
        ),
        "RSS per idle session (VmRSS delta ÷ sessions)",
        Unit::KiB,
    );
    let show = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let note = format!(
        "Idle sessions: KiB per session by group, in the order opened (plain: {}; TLS: {}), {total} sessions open at the end.",
        show(&per[0]),
        show(&per[1])
    );
    let row = match failure {
        Some(e) => row.failed(e),
        None => {
            let [p, t] = per;
            row.values(Some(load::median(p)), Some(load::median(t)))
        }
    };
    (row, note)
}

/// What the run measured, for the report.
struct Outcome {
    rows: Vec<Row>,
    notes: Vec<String>,
    negotiated: String,
    args: Vec<String>,
}

fn run(env: &Env, plan: &Plan, started: Instant) -> Result<Outcome, Error> {
    let deadline = started + plan.budget;
    let certs = Certs::make()?;
    let https_config = certs.client(&[b"http/1.1"])?;
    let tls_config = certs.client(&[])?;
    let n = plan.idle_sessions;
    let room = (2 * plan.idle_rounds * n + 100).to_string();
    let cert = certs.path("leaf.pem").to_string_lossy().into_owned();
    let key = certs.path("leaf.key").to_string_lossy().into_owned();
    let args: Vec<&str> = vec![
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "http://127.0.0.1:0",
        "--listen",
        "tls://127.0.0.1:0",
        "--listen",
        "https://127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--demo",
        "--ping-interval",
        "0",
        "--max-sessions",
        &room,
        "--max-connections",
        &room,
        "--log-level",
        "info",
    ];
    machine::raise_nofile(65_536);
    let relay = RelayProc::start_args(
        &env.relay_exe,
        &args,
        env.pinning.as_ref().map(|p| &p.server),
    )?;
    let shown: Vec<String> = args
        .iter()
        .map(|a| {
            if *a == cert {
                "LEAF.pem".into()
            } else if *a == key {
                "LEAF.key".into()
            } else {
                a.to_string()
            }
        })
        .collect();
    let (https, tls) = match (relay.listener("https"), relay.listener("tls")) {
        (Some(h), Some(t)) => (h, t),
        _ => return Err("the relay did not report its https:// and tls:// listeners".into()),
    };
    let negotiated = negotiated(https, &https_config)?;
    let http = Target::Http { addr: relay.http };
    let https = Target::Https {
        addr: https,
        config: https_config,
    };
    let tcp = Target::Tcp { addr: relay.addr };
    let tls = Target::Tls {
        addr: tls,
        config: tls_config,
    };

    // Fault in every path (and the TLS code) once before anything is timed.
    for t in [&http, &https, &tcp, &tls] {
        let mut s = Session::open(t)?;
        s.call(&mut Echo::new(20), 1)?;
    }
    relay.settle(0, Duration::from_secs(10));

    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let pair = [&http, &https];

    // First, while the relay's heap holds little that was freed.
    progress(&format!(
        "relay memory: {} groups of {n} idle sessions each way",
        plan.idle_rounds
    ));
    let (mem, note) = idle_memory(&relay, pair, plan, deadline);
    notes.push(note);

    progress("Streamable HTTP: sequential, ~100 B");
    let runs = alternating(plan.reps, deadline, pair, |t| {
        load::sequential(t, 20, plan.seq_calls)
    });
    let done = runs.as_ref().map_or(0, |r| r[0].len());
    rows.extend(load::seq_rows(
        &format!(
            "Streamable HTTP: sequential, ~100 B, one session ({} calls; {})",
            plan.seq_calls,
            reps_label(done, plan.reps)
        ),
        runs,
        None,
    ));

    progress("tcp:// against tls://: sequential, ~100 B");
    let runs = alternating(plan.reps, deadline, [&tcp, &tls], |t| {
        load::sequential(t, 20, plan.seq_calls)
    });
    let done = runs.as_ref().map_or(0, |r| r[0].len());
    rows.extend(load::seq_rows(
        &format!(
            "newline JSON-RPC, tcp:// against tls://: sequential, ~100 B ({} calls; {})",
            plan.seq_calls,
            reps_label(done, plan.reps)
        ),
        runs,
        None,
    ));

    progress("Streamable HTTP: new session");
    let runs = alternating(plan.reps, deadline, pair, |t| {
        load::first_responses(t, plan.first_samples, Some((&relay, 0)), Duration::ZERO)
    });
    let name = format!(
        "Streamable HTTP: new session, connect + handshake + initialize + first call ({} samples each way)",
        runs.as_ref().map_or(0, |r| r[0].len() * plan.first_samples)
    );
    let p50 = Row::new(&name, "p50 time to first response", Unit::Millis);
    let p99 = Row::new(&name, "p99 time to first response", Unit::Millis);
    match runs {
        Ok([p, t]) => {
            let pct = |v: Vec<Vec<Duration>>, q| {
                let mut all = v.concat();
                all.sort();
                Some(load::percentile(&all, q) * 1e3)
            };
            rows.push(p50.values(pct(p.clone(), 0.5), pct(t.clone(), 0.5)));
            rows.push(p99.values(pct(p, 0.99), pct(t, 0.99)));
        }
        Err(e) => rows.push(p50.failed(e.to_string())),
    }

    progress(&format!(
        "Streamable HTTP: {} sessions × {} calls",
        plan.sessions, plan.session_calls
    ));
    let runs = alternating(plan.reps, deadline, pair, |t| {
        let r = load::concurrent(t, plan.sessions, plan.session_calls);
        relay.settle(0, Duration::from_secs(10));
        r
    });
    let done = runs.as_ref().map_or(0, |r| r[0].len());
    let tput = Row::new(
        &format!(
            "Streamable HTTP: {} sessions × {} calls, concurrent ({})",
            plan.sessions,
            plan.session_calls,
            reps_label(done, plan.reps)
        ),
        "throughput",
        Unit::ReqPerSec,
    );
    rows.push(match runs {
        Ok([p, t]) => tput.values(Some(load::median(p)), Some(load::median(t))),
        Err(e) => tput.failed(e.to_string()),
    });

    progress(&format!(
        "Streamable HTTP: {} MiB each way",
        plan.big_size / MIB
    ));
    let mut echo = Echo::new(plan.big_size);
    let runs = alternating(plan.big_reps, deadline, pair, |t| {
        let r = load::big_round_trip(t, &mut echo);
        relay.settle(0, Duration::from_secs(10));
        r
    });
    drop(echo);
    let done = runs.as_ref().map_or(0, |r| r[0].len());
    let name = format!(
        "Streamable HTTP: {} MiB each way, one call ({})",
        plan.big_size / MIB,
        reps_label(done, plan.big_reps)
    );
    let rt = Row::new(&name, "round trip", Unit::Millis);
    let bw = Row::new(&name, "throughput each way", Unit::MiBPerSec);
    match runs {
        Ok([p, t]) => {
            let med = |v: &[Duration]| load::median(v.iter().map(Duration::as_secs_f64).collect());
            let (pm, tm) = (med(&p), med(&t));
            let mib = plan.big_size as f64 / MIB as f64;
            rows.push(rt.values(Some(pm * 1e3), Some(tm * 1e3)));
            rows.push(bw.values(Some(mib / pm), Some(mib / tm)));
        }
        Err(e) => rows.push(rt.failed(e.to_string())),
    }

    rows.push(mem);
    if let Some(peak) = relay.peak_rss() {
        notes.push(format!(
            "The relay peaked at {:.1} MiB RSS (VmHWM) over the whole run.",
            peak as f64 / MIB as f64
        ));
    }
    let (warnings, errors, last) = relay.log_problems();
    if warnings + errors > 0 {
        notes.push(format!(
            "The relay logged {warnings} warnings and {errors} errors; the last: {}",
            last.last().map_or("", String::as_str)
        ));
    }
    if let Err(e) = relay.stop() {
        notes.push(format!("The relay did not stop cleanly: {e}"));
    }
    Ok(Outcome {
        rows,
        notes,
        negotiated,
        args: shown,
    })
}

/// Runs the TLS workloads and renders the Markdown report.
pub fn report(env: &Env, plan: &Plan, quick: bool, pin_note: &str) -> Result<String, Error> {
    let started = Instant::now();
    let account = machine::CpuAccount::start();
    let load_start = machine::load_average();
    let out = run(env, plan, started)?;
    let (other_cpu, other_share, wall) = account.others();
    let mut r = String::new();
    let _ = writeln!(r, "# mcp-relay TLS benchmark report\n");
    let _ = writeln!(r, "- date: {}", machine::utc_now());
    let _ = writeln!(r, "- machine: {}", machine::description());
    let _ = writeln!(
        r,
        "- run: {} (up to {} repetitions each way, alternating plain and TLS; medians reported)",
        if quick { "--quick" } else { "full" },
        plan.reps
    );
    let _ = writeln!(
        r,
        "- relay: `{} {}` (one relay for every row), back end its demo server",
        env.relay_exe.display(),
        out.args.join(" ")
    );
    let _ = writeln!(
        r,
        "- TLS: a P-256 leaf signed by a CA made for the run (`openssl`); client rustls (ring), \
         blocking, trusting that CA, both sides with rustls's defaults; negotiated: {}",
        out.negotiated
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
        "- columns: plain = `http://` (or `tcp://`), TLS = `https://` (or `tls://`) on the same relay, same client code; ratio = TLS ÷ plain (times: lower is better; throughputs: higher is better)\n"
    );
    r += &report::table_named(&out.rows, "plain", "TLS");
    r.push('\n');
    for n in &out.notes {
        let _ = writeln!(r, "- {n}");
    }
    let _ = writeln!(r, "\nTotal time: {:.0} s.", started.elapsed().as_secs_f64());
    Ok(r)
}
