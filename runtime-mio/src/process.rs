//! Starting, watching and signalling child processes, off the event loop's thread.
//!
//! One spawner thread starts children (fork/exec can block on a slow file system); one small
//! waiter thread per child blocks in `wait()` and reports the exit. Both report over the
//! event channel and wake the loop.

pub(crate) use crate::spawn::ChildHandle;
use crate::spawn::Spawned;
use crate::Event;
use crossbeam_channel::{Receiver, Sender};
use mcp_relay_core::{ChildId, ExitStatus, ServerId, Signal};
use mio::unix::pipe;
use mio::Waker;
use std::ffi::OsString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
#[cfg(not(target_os = "linux"))]
use std::os::unix::process::CommandExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

/// The server command, exactly as given: no shell in between.
#[derive(Clone, Debug, Default)]
pub struct CommandSpec {
    /// The program, looked up in `PATH` when it has no slash.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra variables (`--env`), applied after the inherited ones.
    pub env: Vec<(OsString, OsString)>,
    /// Its working directory (default: the relay's).
    pub cwd: Option<PathBuf>,
    /// Start from an empty environment (keeping only `PATH`) instead of the relay's.
    pub clean_env: bool,
    /// Variables of the relay's environment the child must not inherit (its own secrets).
    pub env_remove: Vec<OsString>,
}

/// A child the spawner started: its pid and its three pipes, already non-blocking.
pub(crate) struct Started {
    pub(crate) pid: u32,
    pub(crate) stdin: pipe::Sender,
    pub(crate) stdout: pipe::Receiver,
    pub(crate) stderr: pipe::Receiver,
    /// How its exit will be observed.
    pub(crate) reaper: Reaper,
}

/// Who waits for a child's exit.
pub(crate) enum Reaper {
    /// The event loop: the pidfd becomes readable when the child exits, and the loop reaps
    /// it with a non-blocking wait. No thread per child (Linux 5.3 and later).
    Pidfd(OwnedFd, ChildHandle),
    /// A small thread blocked in `wait()` (where pidfds are not available).
    Thread,
}

/// Turns a reaped status into the core's terms.
pub(crate) fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(sig)) => ExitStatus::Signal(sig),
        (None, None) => ExitStatus::Code(-1),
    }
}

#[cfg(target_os = "linux")]
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1; it
    // touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(not(target_os = "linux"))]
fn pidfd_open(_pid: u32) -> Option<OwnedFd> {
    None
}

/// Runs the spawner thread until the request channel closes or `cancelled` is set; once it
/// is set, queued requests are dropped, and a child started meanwhile is killed.
/// Each server's command, by id; the loop adds to it when the servers change.
pub(crate) type Commands =
    Arc<std::sync::RwLock<std::collections::BTreeMap<ServerId, CommandSpec>>>;

pub(crate) fn spawner(
    specs: Commands,
    requests: Receiver<(ChildId, ServerId)>,
    events: Sender<Event>,
    waker: Arc<Waker>,
    cancelled: Arc<AtomicBool>,
    unwanted: Unwanted,
) -> io::Result<thread::JoinHandle<()>> {
    // The spawn slots are taken now, while the relay holds few descriptors.
    #[cfg(target_os = "linux")]
    crate::spawn::prepare();
    thread::Builder::new()
        .name("mcp-relay-spawner".into())
        .spawn(move || {
            for (child, server) in requests {
                // The core names only servers it was configured with; the first otherwise.
                let spec = {
                    let table = match specs.read() {
                        Ok(table) => table,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    match table.get(&server).or_else(|| table.values().next()) {
                        Some(spec) => spec.clone(),
                        None => return,
                    }
                };
                let spec = &spec;
                if cancelled.load(Ordering::SeqCst) {
                    return;
                }
                if unwanted.take(child) {
                    // The core cancelled it before its turn came: never started.
                    continue;
                }
                let event = match start(spec, child, &events, &waker) {
                    Ok(started) if cancelled.load(Ordering::SeqCst) => {
                        // The runtime went away while it was starting.
                        signal_group(started.pid, Signal::Kill);
                        if let Reaper::Pidfd(_, mut c) = started.reaper {
                            let _ = c.wait();
                        }
                        return;
                    }
                    Ok(started) => Event::Spawned(child, started),
                    Err(e) => Event::SpawnFailed(child, describe_spawn_error(spec, &e)),
                };
                if events.send(event).is_err() {
                    return;
                }
                let _ = waker.wake();
            }
        })
}

/// Children whose start the core cancelled ([`mcp_relay_core::Output::Cancel`]) before the
/// spawner got to them: shared between the loop (which adds) and the spawner (which skips).
#[derive(Clone, Default)]
pub(crate) struct Unwanted(Arc<std::sync::Mutex<std::collections::BTreeSet<ChildId>>>);

impl Unwanted {
    pub(crate) fn add(&self, child: ChildId) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(child);
    }

    /// Whether the child was unwanted (and forgets it).
    pub(crate) fn take(&self, child: ChildId) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&child)
    }
}

fn describe_spawn_error(spec: &CommandSpec, e: &io::Error) -> String {
    let program = spec.program.to_string_lossy();
    match e.kind() {
        io::ErrorKind::NotFound => format!("`{program}` was not found: {e}"),
        io::ErrorKind::PermissionDenied => format!("`{program}` is not executable: {e}"),
        _ => format!("`{program}` failed to start: {e}"),
    }
}

fn start(
    spec: &CommandSpec,
    id: ChildId,
    events: &Sender<Event>,
    waker: &Arc<Waker>,
) -> io::Result<Started> {
    // Registered as the relay's own before the orphan reaper can look (it holds the same
    // lock): a child that exits at once is never taken for an adopted orphan.
    let mut own = own_children();
    let Spawned {
        mut child,
        stdin,
        stdout,
        stderr,
    } = launch(spec)?;
    let pid = child.id();
    own.insert(pid);
    drop(own);
    let stdin = pipe::Sender::from(stdin);
    let stdout = pipe::Receiver::from(stdout);
    let stderr = pipe::Receiver::from(stderr);
    let nonblocking = stdin
        .set_nonblocking(true)
        .and_then(|_| stdout.set_nonblocking(true))
        .and_then(|_| stderr.set_nonblocking(true));
    if let Err(e) = nonblocking {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    if let Some(pidfd) = pidfd_open(pid) {
        return Ok(Started {
            pid,
            stdin,
            stdout,
            stderr,
            reaper: Reaper::Pidfd(pidfd, child),
        });
    }
    let events = events.clone();
    let waker = Arc::clone(waker);
    let waiter = thread::Builder::new()
        .name(format!("mcp-relay-wait-{pid}"))
        .stack_size(64 * 1024)
        .spawn(move || {
            let status = match child.wait() {
                Ok(status) => exit_status(status),
                Err(e) => {
                    log::error!("waiting for pid {pid} failed: {e}");
                    ExitStatus::Code(-1)
                }
            };
            forget_own(pid);
            if events.send(Event::Exited(id, status)).is_ok() {
                let _ = waker.wake();
            }
        });
    if let Err(e) = waiter {
        // Without a waiter nobody would reap it: stop it here, where blocking is allowed.
        signal_group(pid, Signal::Kill);
        return Err(e);
    }
    Ok(Started {
        pid,
        stdin,
        stdout,
        stderr,
        reaper: Reaper::Thread,
    })
}

/// Starts the child (see [`crate::spawn`]): on Linux without fork, set to die with the
/// spawner thread.
#[cfg(target_os = "linux")]
fn launch(spec: &CommandSpec) -> io::Result<Spawned> {
    crate::spawn::spawn(spec)
}

/// Starts the child with `std::process::Command`.
#[cfg(not(target_os = "linux"))]
fn launch(spec: &CommandSpec) -> io::Result<Spawned> {
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that the stop signals reach grandchildren too.
        .process_group(0);
    if spec.clean_env {
        let path = std::env::var_os("PATH");
        cmd.env_clear();
        if let Some(path) = path {
            cmd.env("PATH", path);
        }
    }
    for k in &spec.env_remove {
        cmd.env_remove(k);
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn()?;
    // Dropping a std Child neither kills nor reaps it: the handle takes over.
    let handle = libc::pid_t::try_from(child.id())
        .map(ChildHandle::from_pid)
        .map_err(io::Error::other);
    let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (Ok(child), (Some(stdin), Some(stdout), Some(stderr))) = (handle, pipes) else {
        // All three were asked for as pipes above, so std always provides them, and pids
        // are pid_t's.
        let _ = child.kill();
        let _ = child.wait();
        return Err(io::Error::other("the child's pipes were not created"));
    };
    Ok(Spawned {
        child,
        stdin: stdin.into(),
        stdout: stdout.into(),
        stderr: stderr.into(),
    })
}

/// Sends a signal to a child's whole process group (the child leads its own group).
pub(crate) fn signal_group(pid: u32, signal: Signal) {
    let Ok(pgid) = i32::try_from(pid) else {
        return;
    };
    // kill(0, …) and kill(-1, …) would reach the relay's own group or every process.
    if pgid <= 1 {
        return;
    }
    let sig = match signal {
        Signal::Term => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
    };
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names a group.
    let rc = unsafe { libc::kill(-pgid, sig) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        // ESRCH: the group is already empty, which is the usual case after an exit.
        if err.raw_os_error() != Some(libc::ESRCH) {
            log::warn!("signalling process group {pgid} failed: {err}");
        }
    }
}

/// The pids of the children the relay started and has not reaped: the orphan reaper leaves
/// them to their own waiter (the loop's pidfd or a waiter thread), which needs their status.
static OWN_CHILDREN: std::sync::Mutex<std::collections::BTreeSet<u32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn own_children() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<u32>> {
    OWN_CHILDREN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A child of the relay's own was reaped: its pid may name someone else's process next.
pub(crate) fn forget_own(pid: u32) {
    own_children().remove(&pid);
}

#[cfg(target_os = "linux")]
/// How often adopted orphans are looked for.
const ORPHAN_SCAN: std::time::Duration = std::time::Duration::from_millis(500);

/// Makes the relay the reaper of its servers' orphans and starts the thread that reaps them.
///
/// A server started through a wrapper (`sh -c 'helper & exec server'`, `npx`) can leave
/// processes whose parent exits first. Their new parent is the nearest *subreaper* above
/// them, else PID 1; in a container without an init the relay *is* PID 1, and such orphans
/// stay `<defunct>` forever unless it waits for them. On Linux the relay declares itself a
/// subreaper (`PR_SET_CHILD_SUBREAPER`), so this holds wherever it runs, and a thread waits,
/// every half second, for each of its children that it did not start itself (by pid, never
/// `wait(-1)`: the relay's own children are left to the waiter that reports their status).
/// A process-wide setting, so it is the binary's choice: a host program that starts children
/// of its own, outside the runtime, must not call it (they would be reaped as orphans and
/// their status lost). A no-op elsewhere.
pub fn reap_orphans() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes integers only and touches no memory.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        thread::Builder::new()
            .name("mcp-relay-orphans".into())
            .stack_size(64 * 1024)
            .spawn(|| loop {
                thread::sleep(ORPHAN_SCAN);
                reap_adopted();
            })?;
    }
    Ok(())
}

/// Waits for every exited child of the relay's that it did not start; returns how many.
#[cfg(target_os = "linux")]
pub(crate) fn reap_adopted() -> usize {
    // Held throughout: the spawner cannot start (and so register) a child meanwhile.
    let own = own_children();
    let mut reaped = 0;
    for pid in children_of_self() {
        if own.contains(&pid) {
            continue;
        }
        let Ok(raw) = libc::pid_t::try_from(pid) else {
            continue;
        };
        let mut status = 0;
        // SAFETY: waitpid(2) on one pid with WNOHANG writes only to `status`, which we own.
        let rc = unsafe { libc::waitpid(raw, &mut status, libc::WNOHANG) };
        if rc == raw {
            reaped += 1;
            log::debug!("reaped pid {pid}, an orphan of a server adopted by the relay");
        }
    }
    reaped
}

/// The relay's direct children: from `/proc/self/task/*/children`, or, without that file
/// (`CONFIG_PROC_CHILDREN`), from every process's `stat`.
#[cfg(target_os = "linux")]
fn children_of_self() -> Vec<u32> {
    let mut pids = Vec::new();
    let mut listed = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                listed = true;
                pids.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    if listed {
        return pids;
    }
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses: split after the last `)`.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(me) {
            pids.push(pid);
        }
    }
    pids
}
