//! The restart policy: whether a child that ended is started again, after how long, and when
//! the budget is spent. A small value driven by `now`; no clock of its own. Its schedule is
//! tested to the nanosecond of simulated time by `tests/tests/sim_restarts.rs` (the core's
//! unit tests read no clock).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// When an ended child is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart after a crash, a kill or a hang; a clean exit (status 0) ends the session.
    OnFailure,
    /// Restart after any exit.
    Always,
    /// Never restart: the session ends with its child.
    Never,
}

/// The restart budget and backoff: at most `max` restarts within any `window`; the delay
/// before restart n (counting those still inside the window) is `first × 2^n`, at most
/// `cap`.
#[derive(Debug)]
pub(crate) struct Supervisor {
    policy: RestartPolicy,
    first: Duration,
    cap: Duration,
    max: u32,
    window: Duration,
    history: VecDeque<Instant>,
}

/// What to do with a child that ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Start a new one after this delay.
    RestartAfter(Duration),
    /// The policy does not restart this exit.
    Stop,
    /// The budget is spent.
    GiveUp,
}

impl Supervisor {
    pub(crate) fn new(
        policy: RestartPolicy,
        first: Duration,
        cap: Duration,
        max: u32,
        window: Duration,
    ) -> Self {
        Supervisor {
            policy,
            first,
            cap,
            max,
            window,
            history: VecDeque::new(),
        }
    }

    /// Decides about a child that ended at `now`; `failed` says whether it was a failure (not
    /// a clean exit). A restart decision is recorded against the budget.
    pub(crate) fn decide(&mut self, now: Instant, failed: bool) -> Decision {
        let wanted = match self.policy {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::Always => true,
        };
        if !wanted {
            return Decision::Stop;
        }
        while self
            .history
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            self.history.pop_front();
        }
        let recent = self.history.len() as u32;
        if recent >= self.max {
            return Decision::GiveUp;
        }
        self.history.push_back(now);
        let delay = self
            .first
            .checked_mul(1u32.checked_shl(recent).unwrap_or(u32::MAX))
            .unwrap_or(self.cap)
            .min(self.cap);
        Decision::RestartAfter(delay)
    }

    /// Restarts recorded inside the window ending at `now`.
    pub(crate) fn recent(&self, now: Instant) -> usize {
        self.history
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < self.window)
            .count()
    }
}
