//! The restart policy: whether a child that ended is started again, after how long, and when
//! the budget is spent. A small value driven by `now`; no clock of its own.

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

#[cfg(test)]
// The tests need some instant to count from; nothing here reads the clock otherwise.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn sup(policy: RestartPolicy) -> Supervisor {
        Supervisor::new(
            policy,
            Duration::from_secs(1),
            Duration::from_secs(30),
            5,
            Duration::from_secs(60),
        )
    }

    #[test]
    fn backoff_doubles_then_gives_up() {
        let t0 = Instant::now();
        let mut s = sup(RestartPolicy::OnFailure);
        let delays: Vec<_> = (0..6)
            .map(|i| s.decide(t0 + Duration::from_millis(i), true))
            .collect();
        let secs = |n| Decision::RestartAfter(Duration::from_secs(n));
        assert_eq!(
            delays,
            [
                secs(1),
                secs(2),
                secs(4),
                secs(8),
                secs(16),
                Decision::GiveUp
            ]
        );
        // Once the window has passed, the budget is back, and so is the short delay.
        assert_eq!(s.decide(t0 + Duration::from_secs(61), true), secs(1));
    }

    #[test]
    fn delay_is_capped() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(
            RestartPolicy::Always,
            Duration::from_secs(1),
            Duration::from_secs(30),
            100,
            Duration::from_secs(3600),
        );
        let last = (0..10).map(|_| s.decide(t0, true)).last();
        assert_eq!(last, Some(Decision::RestartAfter(Duration::from_secs(30))));
    }

    #[test]
    fn policies() {
        let t0 = Instant::now();
        assert_eq!(
            sup(RestartPolicy::OnFailure).decide(t0, false),
            Decision::Stop
        );
        assert!(matches!(
            sup(RestartPolicy::Always).decide(t0, false),
            Decision::RestartAfter(_)
        ));
        assert_eq!(sup(RestartPolicy::Never).decide(t0, true), Decision::Stop);
    }
}
