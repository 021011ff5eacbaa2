//! The relay under test: `mcp-relay --listen 127.0.0.1:0 --demo --ping-interval 0`, started
//! as a child of the load generator, its port read from its log, its memory from `/proc`.

use crate::machine::{self, CpuSet};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The flags every relay of the suite gets (plus per-workload extras).
pub const BASE_ARGS: [&str; 9] = [
    "--listen",
    "127.0.0.1:0",
    "--listen",
    "http://127.0.0.1:0",
    "--demo",
    "--ping-interval",
    "0",
    "--log-level",
    "info",
];

pub struct RelayProc {
    child: Child,
    pub addr: SocketAddr,
    /// Its Streamable HTTP listener.
    pub http: SocketAddr,
    /// Every listener, as logged: (scheme, address), `tcp` and `http` among them.
    pub listeners: Vec<(String, SocketAddr)>,
    log_tail: Arc<Mutex<VecDeque<String>>>,
    /// Warning and error lines logged so far.
    log_counts: Arc<[AtomicU64; 2]>,
    /// The last warning or error lines.
    log_problems: Arc<Mutex<VecDeque<String>>>,
}

impl RelayProc {
    /// Starts the relay (on `cpus`, which its threads and children inherit) and waits for
    /// its `listening on tcp://…` line.
    pub fn start(exe: &Path, extra: &[&str], cpus: Option<&CpuSet>) -> Result<RelayProc, Error> {
        let args: Vec<&str> = BASE_ARGS.iter().chain(extra).copied().collect();
        RelayProc::start_args(exe, &args, cpus)
    }

    /// Starts the relay with exactly `args` (which must listen on one `tcp://` and one
    /// `http://` address, and may listen on more) and waits for the `listening on …` line of
    /// every `--listen`.
    pub fn start_args(
        exe: &Path,
        args: &[&str],
        cpus: Option<&CpuSet>,
    ) -> Result<RelayProc, Error> {
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let expected = args.iter().filter(|a| **a == "--listen").count();
        // The relay (and through its own PR_SET_PDEATHSIG, its servers) must not outlive an
        // interrupted benchmark; it is always started from the main thread.
        machine::pinned_and_tied(&mut cmd, cpus);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the relay {}: {e}", exe.display()))?;
        let stderr = child.stderr.take().ok_or("the relay has no stderr pipe")?;
        let log_tail = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        let tail = Arc::clone(&log_tail);
        let log_counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let log_problems = Arc::new(Mutex::new(VecDeque::new()));
        let (counts, problems) = (Arc::clone(&log_counts), Arc::clone(&log_problems));
        // Drains the relay's log for its whole life: a full pipe would block the relay.
        std::thread::Builder::new()
            .name("relay-log".into())
            .spawn(move || {
                let mut tx = Some(tx);
                let mut listeners = Vec::new();
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some((scheme, addr)) = listening(&line) {
                        listeners.push((scheme.to_string(), addr));
                        if listeners.len() >= expected {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(listeners.clone());
                            }
                        }
                    }
                    let head = &line[..line.len().min(40)];
                    let level = if head.contains(" WARN") {
                        Some(0)
                    } else if head.contains(" ERROR") {
                        Some(1)
                    } else {
                        None
                    };
                    if let Some(i) = level {
                        counts[i].fetch_add(1, Ordering::Relaxed);
                        let mut p = problems.lock().unwrap_or_else(|e| e.into_inner());
                        if p.len() == 20 {
                            p.pop_front();
                        }
                        p.push_back(line.clone());
                    }
                    let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if t.len() == 40 {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            })?;
        let mut relay = RelayProc {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            listeners: Vec::new(),
            log_tail,
            log_counts,
            log_problems,
        };
        let listeners = rx.recv_timeout(Duration::from_secs(15)).ok();
        let find = |scheme: &str| {
            let l = listeners.as_ref()?;
            l.iter().find(|(s, _)| s == scheme).map(|(_, a)| *a)
        };
        match (find("tcp"), find("http")) {
            (Some(tcp), Some(http)) => {
                relay.addr = tcp;
                relay.http = http;
                relay.listeners = listeners.unwrap_or_default();
                Ok(relay)
            }
            _ => {
                let _ = relay.child.kill();
                let _ = relay.child.wait();
                std::thread::sleep(Duration::from_millis(50));
                Err(format!(
                    "the relay did not report `listening on tcp://…` and `http://…` (and every \
                     other --listen) within 15 s; its log:\n{}",
                    relay.log()
                )
                .into())
            }
        }
    }

    /// The address of its listener for `scheme` (`tls`, `https`, …), if it has one.
    pub fn listener(&self, scheme: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(s, _)| s == scheme)
            .map(|(_, a)| *a)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited (it is reaped then).
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }

    /// Warning and error lines the relay has logged so far, and the last 20 of them.
    pub fn log_problems(&self) -> (u64, u64, Vec<String>) {
        let p = self.log_problems.lock().unwrap_or_else(|e| e.into_inner());
        (
            self.log_counts[0].load(Ordering::Relaxed),
            self.log_counts[1].load(Ordering::Relaxed),
            p.iter().cloned().collect(),
        )
    }

    /// The last lines the relay logged.
    pub fn log(&self) -> String {
        let t = self.log_tail.lock().unwrap_or_else(|e| e.into_inner());
        t.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Peak resident set size so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        machine::proc_status_bytes(self.pid(), "VmHWM")
    }

    /// Current resident set size (VmRSS), in bytes.
    pub fn rss(&self) -> Option<u64> {
        machine::proc_status_bytes(self.pid(), "VmRSS")
    }

    /// Waits until the relay's servers of closed sessions are gone (at most `n` left).
    pub fn settle(&self, n: usize, timeout: Duration) -> bool {
        machine::wait_children_at_most(self.pid(), n, timeout)
    }

    /// SIGTERM (graceful drain), SIGKILL after 10 s; reaps it.
    pub fn stop(mut self) -> Result<(), Error> {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("the relay exited with {status}; its log:\n{}", self.log()).into())
                };
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err("the relay did not stop within 10 s of SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The scheme and address in `… listening on tcp://127.0.0.1:PORT, serving …`.
fn listening(line: &str) -> Option<(&str, SocketAddr)> {
    let marker = "listening on ";
    let rest = &line[line.find(marker)? + marker.len()..];
    let (scheme, rest) = rest.split_once("://")?;
    let end = rest.find([',', ' ']).unwrap_or(rest.len());
    Some((scheme, rest[..end].trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn listening_line() {
        assert_eq!(
            super::listening(
                "[2026-11-21T06:23:41Z INFO ] listening on tcp://127.0.0.1:41821, serving `x`"
            ),
            Some(("tcp", ([127, 0, 0, 1], 41821).into()))
        );
        assert_eq!(super::listening("something else"), None);
        assert_eq!(
            super::listening(
                "listening on https://127.0.0.1:8080 (Streamable HTTP at /mcp, HTTP+SSE at /sse), serving `x`"
            ),
            Some(("https", ([127, 0, 0, 1], 8080).into()))
        );
    }
}
