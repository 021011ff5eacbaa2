//! Prespawned children (`--prespawn N`): servers started ahead of need, so that a new
//! session does not wait for one to start. A child taken by a session is replaced at once; a
//! child that dies while idle is replaced under the restart budget and backoff.

use crate::child::Child;
use crate::relay::Relay;
use crate::supervisor::{Decision, Supervisor};
use crate::{ChildId, Endpoint, ExitStatus, Output};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long after a child is taken its replacement starts.
const REFILL_DELAY: Duration = Duration::from_millis(20);

pub(crate) struct Warm {
    children: BTreeMap<ChildId, Child>,
    supervisor: Supervisor,
    /// No new child before then (backoff after failures).
    respawn_at: Option<Instant>,
    /// The budget is spent: the relay stops prespawning.
    given_up: bool,
}

impl Warm {
    pub(crate) fn new(supervisor: Supervisor) -> Self {
        Warm {
            children: BTreeMap::new(),
            supervisor,
            respawn_at: None,
            given_up: false,
        }
    }

    pub(crate) fn contains(&self, child: ChildId) -> bool {
        self.children.contains_key(&child)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    pub(crate) fn idle_running(&self) -> usize {
        self.children.values().filter(|c| c.is_running()).count()
    }

    pub(crate) fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        self.children
            .values()
            .filter_map(|c| c.poll_timeout().map(|(d, why)| (d, why.as_str())))
            .chain(self.respawn_at.map(|d| (d, "prespawn: replace a child")))
            .min_by_key(|(d, _)| *d)
    }
}

impl Relay {
    /// Starts children until `--prespawn` are waiting (unless backing off or shutting down).
    pub(crate) fn pool_fill(&mut self, now: Instant) {
        let target = self.config.prespawn;
        if self.shutting_down() || self.warm.given_up {
            self.warm.respawn_at = None;
            return;
        }
        if self.warm.respawn_at.is_some_and(|t| t > now) {
            return;
        }
        self.warm.respawn_at = None;
        while self.warm.children.len() < target {
            let id = ChildId(self.next_child);
            self.next_child += 1;
            self.stats_mut().children_spawned += 1;
            log::debug!("prespawning {id}");
            let child = Child::spawn(id, &mut self.out);
            self.warm.children.insert(id, child);
        }
    }

    /// A started child for a new session, if one is waiting; its replacement starts now.
    pub(crate) fn pool_take(&mut self, now: Instant) -> Option<Child> {
        let id = self
            .warm
            .children
            .iter()
            .find(|(_, c)| c.is_running())
            .or_else(|| {
                self.warm
                    .children
                    .iter()
                    .find(|(_, c)| c.pid().is_none() && !c.is_finished())
            })
            .map(|(id, _)| *id)?;
        let child = self.warm.children.remove(&id);
        // The replacement starts a moment later: starting a process right now would compete
        // for the CPU with the session that just began (its first answer is the point).
        let at = now + REFILL_DELAY;
        if self.warm.respawn_at.is_none_or(|t| t < at) {
            self.warm.respawn_at = Some(at);
        }
        child
    }

    pub(crate) fn pool_spawned(&mut self, now: Instant, child: ChildId, pid: u32) {
        let grace = self.config.shutdown_grace;
        if let Some(c) = self.warm.children.get_mut(&child) {
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

    pub(crate) fn pool_spawn_failed(&mut self, now: Instant, child: ChildId, error: &str) {
        if let Some(mut c) = self.warm.children.remove(&child) {
            c.spawn_failed(error);
            log::error!(
                "could not prespawn the server ({}): {error}",
                self.config.server_label
            );
            self.stats_mut().spawn_failures += 1;
            self.out.push_back(Output::Release { child });
            if !self.shutting_down() {
                self.pool_decide(now, true);
            }
        }
    }

    pub(crate) fn pool_exited(&mut self, now: Instant, child: ChildId, status: ExitStatus) {
        let grace = self.config.shutdown_grace;
        let quiet = self.shutting_down();
        if let Some(c) = self.warm.children.get_mut(&child) {
            if !quiet {
                log::warn!("prespawned {child} {status} while idle");
            }
            c.exited(status, now, grace, &mut self.out);
        }
        self.pool_reap(now);
    }

    pub(crate) fn pool_stdout_eof(&mut self, now: Instant, child: ChildId) {
        let grace = self.config.shutdown_grace;
        if let Some(c) = self.warm.children.get_mut(&child) {
            c.stdout_eof();
            if c.is_running() {
                // A server that closed its stdout can serve nobody: stop it (its exit brings
                // a replacement).
                log::warn!("prespawned {child} closed its stdout while idle; stopping it");
                self.out.push_back(Output::Close {
                    endpoint: Endpoint::Child(child),
                });
                c.stop();
                c.stdin_closed(now, grace);
            }
        }
        self.pool_reap(now);
    }

    pub(crate) fn pool_stderr(&mut self, child: ChildId, data: &[u8]) {
        if let Some(c) = self.warm.children.get_mut(&child) {
            c.stderr("prespawned", data);
        }
    }

    pub(crate) fn pool_stderr_eof(&mut self, now: Instant, child: ChildId) {
        if let Some(c) = self.warm.children.get_mut(&child) {
            c.stderr_eof("prespawned");
        }
        self.pool_reap(now);
    }

    /// Forgets finished children and replaces them.
    fn pool_reap(&mut self, now: Instant) {
        let done: Vec<ChildId> = self
            .warm
            .children
            .iter()
            .filter(|(_, c)| c.is_finished())
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            self.warm.children.remove(&id);
            self.out.push_back(Output::Release { child: id });
            if !self.shutting_down() {
                self.pool_decide(now, true);
            }
        }
    }

    fn pool_decide(&mut self, now: Instant, failed: bool) {
        match self.warm.supervisor.decide(now, failed) {
            Decision::RestartAfter(delay) => {
                self.warm.respawn_at = Some(now + delay);
            }
            Decision::Stop => {}
            Decision::GiveUp => {
                log::error!(
                    "prespawned servers keep failing ({} within {:?}); no longer prespawning",
                    self.config.max_restarts,
                    self.config.restart_window
                );
                self.warm.given_up = true;
            }
        }
    }

    pub(crate) fn pool_handle_timeout(&mut self, now: Instant) {
        let grace = self.config.shutdown_grace;
        for c in self.warm.children.values_mut() {
            c.handle_timeout(now, grace, &mut self.out);
        }
        self.pool_reap(now);
        self.pool_fill(now);
    }

    /// Shutdown: stop every waiting child (stdin closed, then the usual signals).
    pub(crate) fn pool_stop(&mut self, now: Instant, immediate: bool) {
        let grace = self.config.shutdown_grace;
        for (id, c) in self.warm.children.iter_mut() {
            if immediate {
                c.kill(&mut self.out);
                c.abandon_output();
            } else if c.is_running() {
                self.out.push_back(Output::Close {
                    endpoint: Endpoint::Child(*id),
                });
                c.stop();
                c.stdin_closed(now, grace);
            } else {
                c.stop();
            }
        }
        self.warm.respawn_at = None;
        self.pool_reap(now);
    }
}
