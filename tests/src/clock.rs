//! The fake clock: one real `Instant` captured when the run starts, and simulated time as an
//! offset from it. Nothing in a run reads the OS clock after that.

use std::fmt;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Clock {
    base: Instant,
    now: Duration,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            base: Instant::now(),
            now: Duration::ZERO,
        }
    }

    /// Simulated time since the start of the run.
    pub fn elapsed(&self) -> Duration {
        self.now
    }

    /// The `Instant` handed to the core for the current simulated time.
    pub fn now(&self) -> Instant {
        self.base + self.now
    }

    /// An `Instant` from the core, as an offset from the start of the run.
    pub fn offset_of(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.base)
    }

    /// Moves the clock forward to `t` (never backward).
    pub fn advance_to(&mut self, t: Duration) {
        assert!(
            t >= self.now,
            "the clock went backward: {t:?} < {:?}",
            self.now
        );
        self.now = t;
    }
}

/// A duration printed as milliseconds with microseconds (`1234.567ms`), the form every trace
/// uses, so that two runs of one seed print the same text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ms(pub Duration);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0.as_micros();
        write!(f, "{}.{:03}ms", us / 1000, us % 1000)
    }
}
