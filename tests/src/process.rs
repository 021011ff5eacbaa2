//! What the end-to-end tests share: the `mcp-relay` binary they run, its log, and the
//! processes they watch through `/proc` (the TCP helpers in `tests/tests/common` and the HTTP ones in
//! `tests/tests/http_support` both use these).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
}

/// The `mcp-relay` binary: `$MCP_RELAY_BIN` if set, otherwise built once per test process
/// with `$CARGO build -p mcp-relay --bin mcp-relay` into the target directory this test
/// binary lives in (`.../target/debug/deps/<test>` → `.../target/debug/mcp-relay`).
pub fn relay_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("MCP_RELAY_BIN") {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "MCP_RELAY_BIN={} is not a file",
                path.display()
            );
            return path;
        }
        let exe = std::env::current_exe().expect("the test binary's own path");
        // .../target/<profile>/deps/<test-hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lives in <target>/<profile>/deps")
            .to_path_buf();
        let target_dir = profile_dir
            .parent()
            .expect("<target>/<profile> has a parent");
        let workspace = workspace();
        let cargo = std::env::var_os("CARGO")
            .or_else(|| option_env!("CARGO").map(OsString::from))
            .unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace)
            .args(["build", "--quiet", "-p", "mcp-relay", "--bin", "mcp-relay"])
            .arg("--manifest-path")
            .arg(workspace.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir);
        match profile_dir.file_name().and_then(OsStr::to_str) {
            Some("debug") | None => {}
            Some("release") => {
                cmd.arg("--release");
            }
            Some(other) => {
                cmd.args(["--profile", other]);
            }
        }
        let out = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .output()
            .expect("running cargo build for mcp-relay");
        assert!(
            out.status.success(),
            "cargo build -p mcp-relay failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = profile_dir.join("mcp-relay");
        assert!(bin.is_file(), "{} was not built", bin.display());
        bin
    })
}

/// One process as `/proc/<pid>/stat` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

pub fn read_proc(pid: i32) -> Option<Proc> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some(Proc {
        pid,
        comm,
        state,
        ppid,
        pgrp,
    })
}

pub fn all_procs() -> Vec<Proc> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_proc)
        .collect()
}

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    closed: bool,
}

/// A process's stderr, collected line by line by a reader thread, with waits on it.
#[derive(Default)]
pub struct Log {
    state: Mutex<LogState>,
    changed: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Log {
    /// Starts collecting `stderr` on a thread named `name`.
    pub fn collect(stderr: impl Read + Send + 'static, name: String) -> Arc<Log> {
        let log = Arc::new(Log::default());
        let reader = Arc::clone(&log);
        thread::Builder::new()
            .name(name)
            .spawn(move || {
                let mut r = BufReader::new(stderr);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match r.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                            lock(&reader.state).lines.push(line);
                            reader.changed.notify_all();
                        }
                    }
                }
                lock(&reader.state).closed = true;
                reader.changed.notify_all();
            })
            .expect("starting the stderr reader");
        log
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.state).lines.clone()
    }

    /// How many lines so far contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        lock(&self.state)
            .lines
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until `pred` holds for the lines so far; false if the deadline passed or the
    /// log ended without it.
    pub fn wait(&self, timeout: Duration, mut pred: impl FnMut(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.state);
        loop {
            if pred(&state.lines) {
                return true;
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}
