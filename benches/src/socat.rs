//! A reference: socat, the C byte pump, doing what the relay does for one TCP session
//! (`socat TCP-LISTEN:PORT,fork,reuseaddr,bind=127.0.0.1,nodelay EXEC:"mcp-relay
//! demo-server"`: a forked socat per connection, which starts the demo server and copies
//! bytes both ways). `nodelay` because the relay sets `TCP_NODELAY` too: without it socat
//! writes a 64 KiB answer in 8 KiB pieces and Nagle's algorithm, meeting the client's delayed
//! ACK, holds the last one back about 40 ms (measured: 44 ms p50 for 64 KiB each way). It
//! speaks newline JSON over TCP exactly as `mcp-relay --listen 127.0.0.1:0` does, so the
//! same TCP target and workloads run against it, alternating with direct; ratio = socat ÷
//! direct. What socat cannot do (framing, limits, restarts, HTTP, …) it does not pay for:
//! these rows show what a bare byte pump costs on this machine. Skipped, with a note, when
//! `socat` is not on `PATH`.

use crate::client::{Echo, Session};
use crate::load::{concurrent, median, percentile, pipelined, sequential, Env, Plan};
use crate::machine::{self, CpuSet};
use crate::relay::Error;
use crate::report::{table_named, Goal, Row, Unit};
use crate::scale::{direct_target, rounds};
use crate::transport::Target;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;

/// `socat` on `PATH`, if there is one.
fn find_socat() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("socat"))
        .find(|p| p.is_file())
}

/// The listening socat, killed and reaped when dropped.
struct Socat {
    child: Child,
    addr: SocketAddr,
}

impl Socat {
    fn start(socat: &Path, relay: &Path, cpus: Option<&CpuSet>) -> Result<Socat, Error> {
        // A free port: bound, read, released, then given to socat (a race with other programs
        // that is harmless here: socat would fail to bind, and the run says so).
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let exec = format!("EXEC:{} demo-server", relay.display());
        let mut cmd = Command::new(socat);
        cmd.arg(format!(
            "TCP-LISTEN:{port},fork,reuseaddr,bind=127.0.0.1,nodelay"
        ))
        .arg(exec)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        machine::pinned_and_tied(&mut cmd, cpus);
        let mut s = Socat {
            child: cmd.spawn()?,
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if TcpStream::connect(addr).is_ok() {
                // That connection started a server; let it go before measuring.
                s.settle();
                return Ok(s);
            }
            if let Some(status) = s.child.try_wait()? {
                return Err(format!("socat exited at start ({status})").into());
            }
            if Instant::now() > deadline {
                return Err(format!("socat is not listening on {addr} after 5 s").into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until socat's forked children (one per connection) are gone.
    fn settle(&self) -> bool {
        machine::wait_children_at_most(self.pid(), 0, Duration::from_secs(5))
    }
}

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The children of `pid`, from `/proc/<pid>/task/*/children`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// Connect (or spawn) + initialize + initialized + first call, `samples` times; socat is
/// settled (the previous connection's socat and server gone) before each.
fn first_responses(
    target: &Target,
    samples: usize,
    socat: Option<&Socat>,
) -> std::io::Result<Vec<Duration>> {
    let mut echo = Echo::new(20);
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        if let Some(s) = socat {
            s.settle();
        }
        let t = Instant::now();
        let mut s = Session::raw(target)?;
        s.initialize()?;
        s.call(&mut echo, 1)?;
        out.push(t.elapsed());
    }
    Ok(out)
}

/// One echo of `echo.payload()` bytes each way on a fresh session: the round trip, and the
/// peak RSS (VmHWM) of the forked socat serving it (read before the session closes).
fn big(
    target: &Target,
    echo: &mut Echo,
    socat: Option<&Socat>,
) -> std::io::Result<(Duration, Option<u64>)> {
    let mut s = Session::open(target)?;
    s.call(&mut Echo::new(1000), 1)?;
    let t = Instant::now();
    s.call(echo, 2)?;
    let rt = t.elapsed();
    let peak = socat.and_then(|sc| {
        children(sc.pid())
            .into_iter()
            .filter_map(|c| machine::proc_status_bytes(c, "VmHWM"))
            .max()
    });
    drop(s);
    if let Some(sc) = socat {
        sc.settle();
    }
    Ok((rt, peak))
}

fn rows(env: &Env, plan: &Plan, socat: &Socat, notes: &mut Vec<String>) -> Vec<Row> {
    let direct = direct_target(env);
    let tcp = Target::Tcp { addr: socat.addr };
    let t = [("direct", &direct), ("socat", &tcp)];
    // After each repetition, socat's forked children of its sessions are gone.
    let settled = |r: std::io::Result<f64>| {
        socat.settle();
        r
    };
    let mut rows = Vec::new();
    let two = |v: Vec<Vec<f64>>| -> (Option<f64>, Option<f64>) {
        let mut it = v.into_iter().map(|x| Some(median(x)));
        (it.next().flatten(), it.next().flatten())
    };
    let mut push = |name: String,
                    metric: &str,
                    unit: Unit,
                    goal: Option<Goal>,
                    r: Result<Vec<Vec<f64>>, Error>| {
        let mut row = Row::new(&name, metric, unit);
        if let Some(g) = goal {
            row = row.goal(g);
        }
        rows.push(match r {
            Ok(v) => {
                let (d, s) = two(v);
                row.values(d, s)
            }
            Err(e) => row.failed(e.to_string()),
        });
    };

    eprintln!("[bench] socat: sequential, ~100 B");
    let r = rounds(plan.reps, &t, |_, t| {
        settled(sequential(t, 20, plan.seq_small_calls).map(|s| s.p50 * 1e6))
    });
    push(
        format!("socat: sequential, ~100 B ({} calls)", plan.seq_small_calls),
        "p50 latency",
        Unit::Micros,
        None,
        r,
    );

    eprintln!("[bench] socat: sequential, 64 KiB");
    let r = rounds(plan.reps, &t, |_, t| {
        settled(sequential(t, 64 * 1024, plan.seq_64k_calls).map(|s| s.p50 * 1e6))
    });
    push(
        format!(
            "socat: sequential, 64 KiB each way ({} calls)",
            plan.seq_64k_calls
        ),
        "p50 latency",
        Unit::Micros,
        None,
        r,
    );

    eprintln!("[bench] socat: {} in flight", plan.pipe_depth);
    let r = rounds(plan.reps, &t, |_, t| {
        settled(pipelined(t, plan.pipe_depth, plan.pipe_calls))
    });
    push(
        format!(
            "socat: {} in flight, one session ({} calls)",
            plan.pipe_depth, plan.pipe_calls
        ),
        "throughput",
        Unit::ReqPerSec,
        None,
        r,
    );

    eprintln!("[bench] socat: {} sessions", plan.sessions);
    let r = rounds(plan.session_reps, &t, |_, t| {
        settled(concurrent(t, plan.sessions, plan.session_calls))
    });
    push(
        format!(
            "socat: {} sessions × {} calls, concurrent ({} reps)",
            plan.sessions, plan.session_calls, plan.session_reps
        ),
        "throughput",
        Unit::ReqPerSec,
        None,
        r,
    );

    eprintln!("[bench] socat: new sessions");
    let r = rounds(plan.reps, &t, |i, t| {
        first_responses(t, plan.first_response_samples, (i == 1).then_some(socat))
    });
    let r = r.map(|v| {
        v.into_iter()
            .map(|runs| {
                let mut all = runs.concat();
                all.sort();
                vec![percentile(&all, 0.5) * 1e3]
            })
            .collect()
    });
    push(
        format!(
            "socat: new session: connect/spawn + initialize + first call ({} samples)",
            plan.reps * plan.first_response_samples
        ),
        "p50 time to first response",
        Unit::Millis,
        None,
        r,
    );

    eprintln!("[bench] socat: {} MiB each way", plan.big_size / MIB);
    let mut echo = Echo::new(plan.big_size);
    let r = rounds(plan.big_reps, &t, |i, t| {
        big(t, &mut echo, (i == 1).then_some(socat))
    });
    drop(echo);
    let name = format!(
        "socat: {} MiB each way, one call ({} reps)",
        plan.big_size / MIB,
        plan.big_reps
    );
    let mem = Row::new(
        &format!("socat: {} MiB each way", plan.big_size / MIB),
        "peak RSS of the forked socat serving the connection (VmHWM, max over reps)",
        Unit::MiB,
    );
    match r {
        Ok(v) => {
            let peak = v
                .get(1)
                .and_then(|s| s.iter().filter_map(|(_, p)| *p).max());
            let times: Vec<Vec<f64>> = v
                .into_iter()
                .map(|x| x.into_iter().map(|(d, _)| d.as_secs_f64() * 1e3).collect())
                .collect();
            push(name, "round trip", Unit::Millis, None, Ok(times));
            rows.push(match peak {
                Some(p) => mem.values(None, Some(p as f64 / MIB as f64)),
                None => mem.failed("cannot read the forked socat's VmHWM".into()),
            });
        }
        Err(e) => {
            push(name, "round trip", Unit::Millis, None, Err(e));
        }
    }
    if let Some(p) = machine::proc_status_bytes(socat.pid(), "VmHWM") {
        notes.push(format!(
            "The listening socat (which only accepts and forks) peaked at {:.2} MiB; the peak RSS row is its forked child that copied the bytes of the 10 MiB call (the demo server it started is not counted).",
            p as f64 / MIB as f64
        ));
    }
    rows
}

/// Runs the socat rows; the report's section for them.
pub fn run(env: &Env, plan: &Plan) -> String {
    let mut r = String::from("\n## Reference: socat\n\n");
    let Some(path) = find_socat() else {
        r += "socat is not on PATH: the socat rows are skipped (`apt-get install -y socat`).\n";
        return r;
    };
    let cpus = env.pinning.as_ref().map(|p| &p.server);
    let socat = match Socat::start(&path, &env.relay_exe, cpus) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(r, "socat did not start: {e}; the socat rows are skipped.");
            return r;
        }
    };
    let version = Command::new(&path)
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines()
                .find(|l| l.starts_with("socat version"))
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "socat".into());
    let mut notes = Vec::new();
    let rows = rows(env, plan, &socat, &mut notes);
    drop(socat);
    let _ = writeln!(
        r,
        "`socat TCP-LISTEN:PORT,fork,reuseaddr,bind=127.0.0.1,nodelay EXEC:\"{} demo-server\"` ({version}), \
         on the server side's CPUs like the relay: a forked socat per connection copies bytes \
         between the socket and the demo server it starts (over a socketpair, socat's default \
         for `EXEC`, not pipes); no framing, limits or restarts. \
         `nodelay` as the relay sets `TCP_NODELAY`: without it, 64 KiB each way takes about \
         40 ms (Nagle's algorithm against the client's delayed ACK). \
         Spoken to with the relay's TCP workloads, repetitions alternating with direct; ratio = \
         socat ÷ direct. Compare with the relay's ratios in the table above.\n",
        env.relay_exe.display()
    );
    r += &table_named(&rows, "direct", "socat");
    r.push('\n');
    for n in notes {
        let _ = writeln!(r, "- {n}");
    }
    r
}
