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

/// The Python interpreter that runs the MCP Python SDK of major version `major` (1 or 2)
/// for the end-to-end tests. `.ci/run` makes one virtual environment per SDK:
/// `tests/python/.venv-mcp1` (`requirements-v1.txt`, mcp 1.x) and `tests/python/.venv-mcp2`
/// (`requirements.txt`, mcp 2.x). In order: `$MCP_RELAY_PYTHON_V1` / `$MCP_RELAY_PYTHON_V2`;
/// for 2.x also `$MCP_RELAY_PYTHON` (its older name); that virtual environment's python
/// if it exists; else `python3` from PATH. The tests check which SDK the interpreter has.
pub fn python_for_sdk(major: u32) -> OsString {
    let own = if major == 1 {
        "MCP_RELAY_PYTHON_V1"
    } else {
        "MCP_RELAY_PYTHON_V2"
    };
    if let Some(py) = std::env::var_os(own) {
        return py;
    }
    if major != 1 {
        if let Some(py) = std::env::var_os("MCP_RELAY_PYTHON") {
            return py;
        }
    }
    let venv = workspace()
        .join("tests")
        .join("python")
        .join(format!(".venv-mcp{major}"))
        .join("bin")
        .join("python");
    if venv.is_file() {
        return venv.into_os_string();
    }
    "python3".into()
}

/// The script that tells which MCP Python SDK an interpreter has (the test helpers run it
/// with `python -c`): prints the version of the `mcp` distribution, fails without one.
pub const PYTHON_SDK_VERSION_PROBE: &str =
    "import importlib.metadata as m, mcp, anyio; print(m.version('mcp'))";

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
