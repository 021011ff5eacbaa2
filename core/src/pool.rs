//! Prespawned children (`--prespawn N`): servers started ahead of need, so that a new
//! session does not wait for one to start. A child taken by a session is replaced at once; a
//! child that dies while idle is replaced under the restart budget and backoff.

use crate::child::Child;
use crate::config::Config;
use crate::supervisor::{Decision, RestartPolicy, Supervisor};
use crate::timer::Timer;
use crate::{ChildId, Endpoint, ExitStatus, Output, ServerId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// How long after a child is taken its replacement starts.
const REFILL_DELAY: Duration = Duration::from_millis(20);

pub(crate) struct Warm {
    children: BTreeMap<ChildId, Child>,
    /// Children whose stdin broke: nothing more is written to it, nor is it closed.
    stdin_gone: BTreeSet<ChildId>,
    supervisor: Supervisor,
    /// No new child before then (backoff after failures).
    respawn_at: Option<Instant>,
    /// The budget is spent: the relay stops prespawning.
    given_up: bool,
    /// The relay is shutting down: nothing new is started.
    stopping: bool,
    /// How many to keep, and the stop sequence's grace.
    target: usize,
    grace: Duration,
    server_label: String,
    max_restarts: u32,
    restart_window: Duration,
    /// Children started and starts that failed, for the relay's counters.
    pub(crate) spawned: u64,
    pub(crate) spawn_failures: u64,
    /// Children whose output it gave up on (`Stats::outputs_abandoned`).
    pub(crate) outputs_abandoned: u64,
    out: VecDeque<Output>,
    /// Whose children these are.
    server: ServerId,
}

impl Warm {
    pub(crate) fn new(config: &Config, server: ServerId) -> Self {
        Warm {
            server,
            children: BTreeMap::new(),
            stdin_gone: BTreeSet::new(),
            supervisor: Supervisor::new(
                RestartPolicy::OnFailure,
                config.restart_delay,
                config.max_restart_delay,
                config.max_restarts,
                config.restart_window,
            ),
            respawn_at: None,
            given_up: false,
            stopping: false,
            target: config.prespawn,
            grace: config.shutdown_grace,
            server_label: config.server_label.clone(),
            max_restarts: config.max_restarts,
            restart_window: config.restart_window,
            spawned: 0,
            spawn_failures: 0,
            outputs_abandoned: 0,
            out: VecDeque::new(),
        }
    }

    pub(crate) fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub(crate) fn contains(&self, child: ChildId) -> bool {
        self.children.contains_key(&child)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// The pool stopped prespawning: its servers kept failing.
    pub(crate) fn given_up(&self) -> bool {
        self.given_up
    }

    /// Children up and waiting for a session.
    pub(crate) fn idle_running(&self) -> usize {
        self.children.values().filter(|c| c.is_running()).count()
    }

    pub(crate) fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        self.children
            .values()
            .filter_map(Child::poll_timeout)
            .chain(self.respawn_at.map(|d| (d, Timer::PrespawnReplace)))
            .min_by_key(|(d, _)| *d)
    }

    /// Starts children until `--prespawn` are waiting (unless backing off or shutting down).
    pub(crate) fn fill(&mut self, now: Instant, next_child: &mut u64) {
        if self.stopping || self.given_up {
            self.respawn_at = None;
            return;
        }
        if self.respawn_at.is_some_and(|t| t > now) {
            return;
        }
        self.respawn_at = None;
        while self.children.len() < self.target {
            let id = ChildId(*next_child);
            *next_child += 1;
            self.spawned += 1;
            log::debug!("prespawning {id}");
            let child = Child::spawn(id, self.server, &mut self.out);
            self.children.insert(id, child);
        }
    }

    /// A started child for a new session, if one is waiting; its replacement starts soon.
    pub(crate) fn take(&mut self, now: Instant) -> Option<Child> {
        let id = self
            .children
            .iter()
            .find(|(_, c)| c.is_running())
            .or_else(|| {
                self.children
                    .iter()
                    .find(|(_, c)| c.pid().is_none() && !c.is_finished())
            })
            .map(|(id, _)| *id)?;
        let child = self.children.remove(&id);
        // The replacement starts a moment later: starting a process right now would compete
        // for the CPU with the session that just began (its first answer is the point).
        let at = now + REFILL_DELAY;
        if self.respawn_at.is_none_or(|t| t < at) {
            self.respawn_at = Some(at);
        }
        child
    }

    pub(crate) fn handle_spawned(&mut self, now: Instant, child: ChildId, pid: u32) {
        let grace = self.grace;
        if let Some(c) = self.children.get_mut(&child) {
            log::debug!("prespawned {child} is up (pid {pid})");
            if c.spawned(pid, &mut self.out) {
                // Asked to stop while it was starting (shutdown).
                self.out.push_back(Output::Close {
                    endpoint: Endpoint::Child(child),
                });
                c.stop();
                c.stdin_closed(now, grace);
            }
        }
    }

    pub(crate) fn handle_spawn_failed(&mut self, now: Instant, child: ChildId, error: &str) {
        if let Some(mut c) = self.children.remove(&child) {
            c.spawn_failed(error);
            log::error!(
                "could not prespawn the server ({}): {error}",
                self.server_label
            );
            self.spawn_failures += 1;
            self.out.push_back(Output::Release { child });
            if !self.stopping {
                self.decide(now, true);
            }
        }
    }

    pub(crate) fn handle_exited(&mut self, now: Instant, child: ChildId, status: ExitStatus) {
        let grace = self.grace;
        if let Some(c) = self.children.get_mut(&child) {
            if !self.stopping {
                log::warn!("prespawned {child} {status} while idle");
            }
            c.exited(status, now, grace, &mut self.out);
        }
        self.reap(now);
    }

    pub(crate) fn handle_stdout_eof(&mut self, now: Instant, child: ChildId) {
        let grace = self.grace;
        if let Some(c) = self.children.get_mut(&child) {
            c.stdout_eof();
            if c.is_running() {
                // A server that closed its stdout can serve nobody: stop it (its exit brings
                // a replacement).
                log::warn!("prespawned {child} closed its stdout while idle; stopping it");
                if !self.stdin_gone.contains(&child) {
                    self.out.push_back(Output::Close {
                        endpoint: Endpoint::Child(child),
                    });
                }
                c.stop();
                c.stdin_closed(now, grace);
            }
        }
        self.reap(now);
    }

    /// Its stdin broke while it waited: it can serve nobody, so it is stopped (without
    /// closing a stdin that is already gone), and its exit brings a replacement.
    pub(crate) fn handle_stdin_broken(&mut self, now: Instant, child: ChildId) {
        let grace = self.grace;
        let Some(c) = self.children.get_mut(&child) else {
            return;
        };
        self.stdin_gone.insert(child);
        if c.is_running() {
            log::warn!("prespawned {child} stopped reading its stdin while idle; stopping it");
            c.stop();
            c.stdin_closed(now, grace);
        }
    }

    pub(crate) fn handle_stderr(&mut self, child: ChildId, data: &[u8]) {
        if let Some(c) = self.children.get_mut(&child) {
            c.stderr("prespawned", data);
        }
    }

    pub(crate) fn handle_stderr_eof(&mut self, now: Instant, child: ChildId) {
        if let Some(c) = self.children.get_mut(&child) {
            c.stderr_eof("prespawned");
        }
        self.reap(now);
    }

    /// Forgets finished children and replaces them.
    fn reap(&mut self, now: Instant) {
        let done: Vec<ChildId> = self
            .children
            .iter()
            .filter(|(_, c)| c.is_finished())
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            self.children.remove(&id);
            self.stdin_gone.remove(&id);
            self.out.push_back(Output::Release { child: id });
            if !self.stopping {
                self.decide(now, true);
            }
        }
    }

    fn decide(&mut self, now: Instant, failed: bool) {
        if self.given_up {
            // Said once; the children that end after it are not replaced.
            return;
        }
        match self.supervisor.decide(now, failed) {
            Decision::RestartAfter(delay) => {
                self.respawn_at = Some(now + delay);
            }
            Decision::Stop => {}
            Decision::GiveUp => {
                log::error!(
                    "prespawned servers keep failing ({} within {:?}); no longer prespawning",
                    self.max_restarts,
                    self.restart_window
                );
                self.given_up = true;
            }
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, next_child: &mut u64) {
        let grace = self.grace;
        for c in self.children.values_mut() {
            if c.handle_timeout(now, grace, &mut self.out) {
                self.outputs_abandoned += 1;
            }
        }
        self.reap(now);
        self.fill(now, next_child);
    }

    /// Shutdown: stop every waiting child (stdin closed, then the usual signals).
    pub(crate) fn stop(&mut self, now: Instant, immediate: bool) {
        self.stopping = true;
        let grace = self.grace;
        for (id, c) in self.children.iter_mut() {
            if immediate {
                c.kill(&mut self.out);
                c.abandon_output();
            } else if c.is_running() {
                if !self.stdin_gone.contains(id) {
                    self.out.push_back(Output::Close {
                        endpoint: Endpoint::Child(*id),
                    });
                }
                c.stop();
                c.stdin_closed(now, grace);
            } else {
                c.stop();
            }
        }
        self.respawn_at = None;
        self.reap(now);
    }
}
