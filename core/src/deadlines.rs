//! Deadlines of many keyed things (sessions, connections), indexed by time: the next one and
//! the ones due are found without walking every thing, and each carries why it is set.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// At most one deadline per key, with its reason. (`T` is a time; the core uses `Instant`.)
#[derive(Debug)]
pub(crate) struct Deadlines<K, R, T = Instant> {
    by_time: BTreeSet<(T, K)>,
    of: BTreeMap<K, (T, R)>,
}

impl<K: Ord + Copy, R: Copy, T: Ord + Copy> Default for Deadlines<K, R, T> {
    fn default() -> Self {
        Deadlines {
            by_time: BTreeSet::new(),
            of: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Copy, R: Copy, T: Ord + Copy> Deadlines<K, R, T> {
    /// Sets (or, with `None`, clears) the deadline of `key`.
    pub(crate) fn set(&mut self, key: K, deadline: Option<(T, R)>) {
        if let Some((old, _)) = self.of.remove(&key) {
            self.by_time.remove(&(old, key));
        }
        if let Some((at, why)) = deadline {
            self.by_time.insert((at, key));
            self.of.insert(key, (at, why));
        }
    }

    /// The deadline of `key`, if one is set.
    pub(crate) fn get(&self, key: K) -> Option<(T, R)> {
        self.of.get(&key).copied()
    }

    /// The earliest deadline and its reason.
    pub(crate) fn first(&self) -> Option<(T, R)> {
        let (_, key) = self.by_time.first()?;
        self.of.get(key).copied()
    }

    /// The keys whose deadline is at or before `now`, earliest first.
    pub(crate) fn due(&self, now: T) -> Vec<K> {
        self.by_time
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, k)| *k)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_one_per_key() {
        let s = |n: u64| n;
        let mut d: Deadlines<u32, &str, u64> = Deadlines::default();
        assert_eq!(d.first(), None);
        d.set(1, Some((s(5), "a")));
        d.set(2, Some((s(3), "b")));
        assert_eq!(d.first(), Some((s(3), "b")));
        d.set(2, Some((s(9), "c")));
        assert_eq!(d.first(), Some((s(5), "a")));
        assert_eq!(d.due(s(5)), vec![1]);
        assert_eq!(d.due(s(9)), vec![1, 2]);
        d.set(1, None);
        assert_eq!(d.due(s(9)), vec![2]);
        d.set(2, None);
        assert_eq!(d.first(), None);
    }
}
