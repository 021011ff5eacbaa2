//! One child process's life: spawning, running, the stop sequence (stdin closed, then SIGTERM,
//! then SIGKILL to the process group, each after the grace period) and its exit.

use crate::timer::Timer;
use crate::{ChildId, ExitStatus, Output, ServerId, Signal};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Child {
    pub(crate) id: ChildId,
    state: State,
    stdout_eof: bool,
    stderr_eof: bool,
    /// After the exit, how long the remaining output may take to reach end of file (a
    /// grandchild may hold the pipes open).
    drain_deadline: Option<Instant>,
    stderr: StderrLines,
    /// The relay stopped reading stdout (backpressure): what is left in the pipe is not the
    /// child's fault, so the drain deadline waits.
    output_paused: bool,
}

#[derive(Debug)]
enum State {
    /// `stop`: stop it as soon as it runs; `kill`: kill it then.
    Spawning {
        stop: bool,
        kill: bool,
    },
    Running {
        pid: u32,
    },
    /// In the stop sequence; `deadline` is when the next stage is due (`None` while waiting
    /// for stdin to be closed, or after SIGKILL).
    Stopping {
        pid: u32,
        stage: Stage,
        deadline: Option<Instant>,
    },
    Exited {
        status: ExitStatus,
    },
    Failed {
        error: String,
    },
    /// Its start was cancelled before it ran ([`Output::Cancel`]): nothing more of it comes.
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    StdinClosed,
    Termed,
    Killed,
}

impl Child {
    pub(crate) fn spawn(id: ChildId, server: ServerId, out: &mut VecDeque<Output>) -> Self {
        out.push_back(Output::Spawn { child: id, server });
        Child {
            id,
            state: State::Spawning {
                stop: false,
                kill: false,
            },
            stdout_eof: false,
            stderr_eof: false,
            drain_deadline: None,
            stderr: StderrLines::default(),
            output_paused: false,
        }
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        match self.state {
            State::Running { pid } | State::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// Started and not asked to stop.
    pub(crate) fn is_running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    /// Exited and reaped, or never started; all its output read (or given up on).
    pub(crate) fn is_finished(&self) -> bool {
        match self.state {
            State::Failed { .. } | State::Cancelled => true,
            State::Exited { .. } => self.stdout_eof && self.stderr_eof,
            _ => false,
        }
    }

    pub(crate) fn spawn_error(&self) -> Option<&str> {
        match &self.state {
            State::Failed { error } => Some(error),
            _ => None,
        }
    }

    pub(crate) fn exit_status(&self) -> Option<ExitStatus> {
        match self.state {
            State::Exited { status } => Some(status),
            _ => None,
        }
    }

    pub(crate) fn spawn_failed(&mut self, error: &str) {
        if let State::Spawning { .. } = self.state {
            self.state = State::Failed {
                error: error.to_owned(),
            };
        }
    }

    /// Returns whether the stop sequence must start now (it was asked for while spawning).
    /// A kill asked for while spawning is sent now.
    pub(crate) fn spawned(&mut self, pid: u32, out: &mut VecDeque<Output>) -> bool {
        match self.state {
            State::Spawning { stop, kill } => {
                self.state = State::Running { pid };
                if kill {
                    self.kill(out);
                    return false;
                }
                stop
            }
            _ => false,
        }
    }

    /// Starts the stop sequence. The caller closes stdin once what is queued for it is
    /// written and says so with [`Child::stdin_closed`]: the grace period before SIGTERM
    /// starts then, not before. Idempotent.
    pub(crate) fn stop(&mut self) {
        match self.state {
            State::Spawning { kill, .. } => self.state = State::Spawning { stop: true, kill },
            State::Running { pid } => {
                log::debug!(
                    "{} (pid {pid}): stopping: its stdin closes once what is queued is written",
                    self.id
                );
                self.state = State::Stopping {
                    pid,
                    stage: Stage::StdinClosed,
                    deadline: None,
                }
            }
            _ => {}
        }
    }

    /// Not wanted any more and not started yet: the driver is told not to start it, and it is
    /// finished at once. Returns false (and does nothing) once it has started.
    pub(crate) fn cancel(&mut self, out: &mut VecDeque<Output>) -> bool {
        if !matches!(self.state, State::Spawning { .. }) {
            return false;
        }
        log::debug!(
            "{}: no longer wanted before it started; not started",
            self.id
        );
        out.push_back(Output::Cancel { child: self.id });
        self.state = State::Cancelled;
        self.abandon_output();
        true
    }

    /// Stopping, and stdin not closed yet.
    pub(crate) fn awaits_stdin_close(&self) -> bool {
        matches!(
            self.state,
            State::Stopping {
                stage: Stage::StdinClosed,
                deadline: None,
                ..
            }
        )
    }

    /// Stdin is closed (or unusable): SIGTERM follows after the grace period.
    pub(crate) fn stdin_closed(&mut self, now: Instant, grace: Duration) {
        if let State::Stopping {
            pid,
            stage: Stage::StdinClosed,
            deadline: None,
        } = self.state
        {
            log::debug!(
                "{} (pid {pid}): stdin closed; SIGTERM in {grace:?} if it is still running",
                self.id
            );
            self.state = State::Stopping {
                pid,
                stage: Stage::StdinClosed,
                deadline: Some(now + grace),
            };
        }
    }

    /// Starts the stop sequence at SIGTERM (a hung child will not read its stdin).
    pub(crate) fn terminate(&mut self, now: Instant, grace: Duration, out: &mut VecDeque<Output>) {
        match self.state {
            State::Running { pid }
            | State::Stopping {
                pid,
                stage: Stage::StdinClosed,
                ..
            } => {
                log::debug!("{} (pid {pid}): sending SIGTERM at once (hung)", self.id);
                out.push_back(Output::Signal {
                    child: self.id,
                    signal: Signal::Term,
                });
                self.state = State::Stopping {
                    pid,
                    stage: Stage::Termed,
                    deadline: Some(now + grace),
                };
            }
            State::Spawning { .. } => self.stop(),
            _ => {}
        }
    }

    /// Skips the rest of the stop sequence: SIGKILL now (or as soon as it has started).
    pub(crate) fn kill(&mut self, out: &mut VecDeque<Output>) {
        match self.state {
            State::Spawning { .. } => {
                self.state = State::Spawning {
                    stop: true,
                    kill: true,
                }
            }
            State::Running { pid }
            | State::Stopping {
                pid,
                stage: Stage::StdinClosed | Stage::Termed,
                ..
            } => {
                log::debug!("{} (pid {pid}): sending SIGKILL at once", self.id);
                out.push_back(Output::Signal {
                    child: self.id,
                    signal: Signal::Kill,
                });
                self.state = State::Stopping {
                    pid,
                    stage: Stage::Killed,
                    deadline: None,
                };
            }
            _ => {}
        }
    }

    pub(crate) fn exited(
        &mut self,
        status: ExitStatus,
        now: Instant,
        grace: Duration,
        out: &mut VecDeque<Output>,
    ) {
        if matches!(self.state, State::Exited { .. } | State::Failed { .. }) {
            return;
        }
        log::debug!(
            "{} {status}; SIGKILL to what is left of its process group",
            self.id
        );
        // Grandchildren (npx, uvx, a shell) may outlive the process we started: the group goes
        // with it.
        out.push_back(Output::Signal {
            child: self.id,
            signal: Signal::Kill,
        });
        self.state = State::Exited { status };
        if !(self.stdout_eof && self.stderr_eof) {
            self.drain_deadline = Some(now + grace);
        }
    }

    /// Stop waiting for output (immediate shutdown, or the drain deadline).
    pub(crate) fn abandon_output(&mut self) {
        self.stdout_eof = true;
        self.stderr_eof = true;
        self.drain_deadline = None;
    }

    pub(crate) fn stdout_eof(&mut self) {
        self.stdout_eof = true;
        if self.stderr_eof {
            self.drain_deadline = None;
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        if let State::Stopping {
            deadline: Some(d),
            stage,
            ..
        } = self.state
        {
            let next = match stage {
                Stage::StdinClosed => Signal::Term,
                _ => Signal::Kill,
            };
            return Some((d, Timer::ChildStop(next)));
        }
        self.drain_deadline
            .filter(|_| !self.output_paused)
            .map(|d| (d, Timer::ChildOutputDrain))
    }

    /// The relay paused or resumed reading stdout. On resume, the output gets its full grace
    /// again to reach end of file.
    pub(crate) fn set_output_paused(&mut self, paused: bool, now: Instant, grace: Duration) {
        if self.output_paused && !paused && self.drain_deadline.is_some() {
            self.drain_deadline = Some(now + grace);
        }
        self.output_paused = paused;
    }

    /// Runs the due stages of the stop sequence, and gives up on output still open
    /// `grace` after the exit. Returns whether it gave up on the output now
    /// (`Stats::outputs_abandoned`).
    pub(crate) fn handle_timeout(
        &mut self,
        now: Instant,
        grace: Duration,
        out: &mut VecDeque<Output>,
    ) -> bool {
        // With no grace at all, every due stage fires now.
        while let State::Stopping {
            pid,
            stage,
            deadline: Some(d),
        } = self.state
        {
            if d > now {
                break;
            }
            let (signal, next, deadline) = match stage {
                Stage::StdinClosed => (Signal::Term, Stage::Termed, Some(now + grace)),
                _ => (Signal::Kill, Stage::Killed, None),
            };
            log::info!("{} (pid {pid}) still running: sending {signal:?}", self.id);
            out.push_back(Output::Signal {
                child: self.id,
                signal,
            });
            self.state = State::Stopping {
                pid,
                stage: next,
                deadline,
            };
        }
        if !self.output_paused && self.drain_deadline.is_some_and(|d| d <= now) {
            log::warn!(
                "{}: output still open {grace:?} after the server exited (a grandchild holds it?); giving up on it",
                self.id
            );
            self.abandon_output();
            return true;
        }
        false
    }

    /// Logs the child's stderr line by line.
    pub(crate) fn stderr(&mut self, label: &str, data: &[u8]) {
        let pid = self.pid();
        self.stderr.push(data, |line| log_stderr(label, pid, line));
    }

    pub(crate) fn stderr_eof(&mut self, label: &str) {
        let pid = self.pid();
        self.stderr.flush(|line| log_stderr(label, pid, line));
        self.stderr_eof = true;
        if self.stdout_eof {
            self.drain_deadline = None;
        }
    }
}

fn log_stderr(label: &str, pid: Option<u32>, line: &[u8]) {
    let decoded = String::from_utf8_lossy(line);
    let text = escape_controls(&decoded);
    match pid {
        Some(pid) => log::info!(target: "mcp_relay::server", "[{label} pid {pid}] {text}"),
        None => log::info!(target: "mcp_relay::server", "[{label}] {text}"),
    }
}

/// The child's text as it may reach the operator's terminal: control characters that could
/// move the cursor, rewrite a line or set the window title (C0 but tab, DEL, C1, and the
/// bidirectional overrides that reorder what is shown) are written as escapes, `\r`,
/// `\x1b`, `\u{9b}`. Everything else, backslashes included, is left as it is.
pub(crate) fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    fn is_control(c: char) -> bool {
        (c.is_control() && c != '\t')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    use std::fmt::Write as _;
    if !text.chars().any(is_control) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            // Writing to a String cannot fail.
            c if is_control(c) && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.into()
}

/// Splits stderr into lines for the log; a line longer than this is logged in pieces.
const MAX_STDERR_LINE: usize = 8 * 1024;

#[derive(Debug, Default)]
struct StderrLines {
    buf: Vec<u8>,
}

impl StderrLines {
    fn push(&mut self, mut data: &[u8], mut f: impl FnMut(&[u8])) {
        while !data.is_empty() {
            let room = MAX_STDERR_LINE - self.buf.len();
            match memchr::memchr(b'\n', &data[..room.min(data.len())]) {
                Some(i) => {
                    self.buf.extend_from_slice(&data[..i]);
                    data = &data[i + 1..];
                    self.flush(&mut f);
                }
                None => {
                    let take = room.min(data.len());
                    self.buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.buf.len() >= MAX_STDERR_LINE {
                        self.flush(&mut f);
                    }
                }
            }
        }
    }

    fn flush(&mut self, mut f: impl FnMut(&[u8])) {
        let line = self.buf.strip_suffix(b"\r").unwrap_or(&self.buf);
        if !line.is_empty() {
            f(line);
        }
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: &str) {
        assert_eq!(escape_controls(input), expect, "input {input:?}");
    }

    #[test]
    fn plain_text_is_left_alone() {
        check("", "");
        check("listening on stdio\tready", "listening on stdio\tready");
        check(r"C:\path\to\x1b", r"C:\path\to\x1b");
        check("naïve ünïcode ✓", "naïve ünïcode ✓");
    }

    #[test]
    fn terminal_controls_are_escaped() {
        // An OSC title, a bell, and a carriage return that would overwrite the line.
        check("\x1b]0;pwned\x07fake\rreal", r"\x1b]0;pwned\x07fake\rreal");
        check("a\x1b[2Kb", r"a\x1b[2Kb");
        check("nul\0 del\x7f", r"nul\x00 del\x7f");
        check("bs\x08", r"bs\x08");
        check("\n", r"\n");
        // C1 controls (CSI as one character) and bidirectional overrides.
        check("x\u{9b}31my", r"x\u{9b}31my");
        check("abc\u{202e}fed", r"abc\u{202e}fed");
    }

    #[test]
    fn logged_lines_are_escaped() {
        let mut lines = Vec::new();
        let mut s = StderrLines::default();
        s.push(b"\x1b]0;pwned\x07fake\rreal\nok\r\n", |l| {
            lines.push(escape_controls(&String::from_utf8_lossy(l)).into_owned())
        });
        assert_eq!(lines, [r"\x1b]0;pwned\x07fake\rreal", "ok"]);
    }
}
