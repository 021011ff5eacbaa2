//! One configured server as the relay runs it: its name and settings, the children started
//! ahead of need for it, and which of its remote URLs new sessions skip for now.

use crate::config::{Config, NamedServer};
use crate::pool::Warm;
use crate::remote_config::Balance;
use crate::timer::Timer;
use crate::ServerId;
use std::collections::BTreeMap;
use std::time::Instant;

pub(crate) struct Served {
    pub(crate) id: ServerId,
    /// `""` for the one server of a plain configuration.
    pub(crate) name: String,
    /// Served at `/mcp` and `/sse` too.
    pub(crate) default: bool,
    /// Its settings (the relay's with its overrides).
    pub(crate) config: Config,
    pub(crate) warm: Warm,
    /// Left out of a reloaded configuration: it takes no new session, and goes once its
    /// last one has ended.
    pub(crate) retired: bool,
    /// When a retired server's sessions that are left are drained.
    drain_at: Option<Instant>,
    /// Sessions it has served.
    pub(crate) sessions_total: u64,
    /// Remote URLs (by index) found unreachable, skipped by new sessions until then.
    remote_down: BTreeMap<usize, Instant>,
    /// The next URL for `--balance round-robin`.
    next_remote: usize,
}

impl Served {
    pub(crate) fn new(id: ServerId, named: NamedServer) -> Self {
        Served {
            warm: Warm::new(&named.config, id),
            retired: false,
            drain_at: None,
            sessions_total: 0,
            id,
            name: named.name,
            default: named.default,
            config: named.config,
            remote_down: BTreeMap::new(),
            next_remote: 0,
        }
    }

    /// Left out by a reload: no new session, and those left are drained after
    /// `--retire-timeout`.
    pub(crate) fn retire(&mut self, now: Instant) {
        self.retired = true;
        self.drain_at = self.config.retire_timeout.map(|d| now + d);
        self.warm.stop(now, false);
    }

    /// When it next wants [`Relay::handle_timeout`](crate::Relay::handle_timeout).
    pub(crate) fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        self.warm
            .poll_timeout()
            .into_iter()
            .chain(self.drain_at.map(|d| (d, Timer::RetiredDrain)))
            .min_by_key(|(d, _)| *d)
    }

    /// Whether its retired sessions are due to be drained now (once).
    pub(crate) fn drain_due(&mut self, now: Instant) -> bool {
        let due = self.drain_at.is_some_and(|d| d <= now);
        if due {
            self.drain_at = None;
        }
        due
    }

    /// How it is named in logs and reports.
    pub(crate) fn display_name(&self) -> &str {
        if self.name.is_empty() {
            "server"
        } else {
            &self.name
        }
    }

    /// The remote URL a new session starts with: by the balance policy, among those not
    /// found unreachable lately (all of them if every one was). `load(i)`: sessions on URL
    /// `i` now.
    pub(crate) fn pick_remote(&mut self, now: Instant, load: impl Fn(usize) -> usize) -> usize {
        let Some(remote) = &self.config.remote else {
            return 0;
        };
        let n = remote.urls.len().max(1);
        self.remote_down.retain(|_, until| *until > now);
        let up: Vec<usize> = (0..n)
            .filter(|i| !self.remote_down.contains_key(i))
            .collect();
        let candidates = if up.is_empty() { (0..n).collect() } else { up };
        match remote.balance {
            Balance::Failover => candidates[0],
            Balance::RoundRobin => {
                let start = self.next_remote % n;
                self.next_remote = self.next_remote.wrapping_add(1);
                (0..n)
                    .map(|k| (start + k) % n)
                    .find(|i| candidates.contains(i))
                    .unwrap_or(candidates[0])
            }
            Balance::LeastSessions => candidates
                .iter()
                .copied()
                .min_by_key(|i| (load(*i), *i))
                .unwrap_or(0),
        }
    }

    /// Remote URL `index` could not be reached: new sessions skip it for a while.
    pub(crate) fn remote_unreachable(&mut self, index: usize, now: Instant) {
        if let Some(remote) = &self.config.remote {
            log::warn!(
                "{} is skipped by new sessions for {:?}: it could not be reached",
                remote.urls[index % remote.urls.len().max(1)],
                remote.down_for
            );
            self.remote_down.insert(index, now + remote.down_for);
        }
    }
}
