//! The one source of randomness of a simulation run: SplitMix64, seeded once.
//!
//! Every choice the harness makes (fragmentation, latency, faults, ids, payloads) is drawn
//! from a stream derived from the run's seed, so a seed names one run exactly.

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast and good enough for test schedules.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng {
            // Mixed once so that neighbouring seeds do not start with similar draws.
            state: seed ^ 0x6A09_E667_F3BC_C909,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// An independent stream, for a component whose choices should not shift when another
    /// component draws more or fewer numbers.
    pub fn fork(&mut self) -> Rng {
        Rng {
            state: self.next_u64(),
        }
    }

    /// Uniform in `0..n`; `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        // Lemire's multiply-shift; the bias is irrelevant at these sizes.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "Rng::range({lo}, {hi})");
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `lo..=hi`, as a `usize`.
    pub fn range_usize(&mut self, lo: usize, hi: usize) -> usize {
        self.range(lo as u64, hi as u64) as usize
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        per_mille > 0 && self.below(1000) < u64::from(per_mille)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A size that is usually small and sometimes large: uniform in `1..=cap` after picking
    /// `cap` among 16, 512 and `max`.
    pub fn skewed_size(&mut self, max: usize) -> usize {
        let cap = match self.below(10) {
            0..=4 => 16,
            5..=7 => 512,
            _ => max,
        }
        .min(max)
        .max(1);
        self.range_usize(1, cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn ranges_are_inclusive() {
        let mut r = Rng::new(1);
        let mut seen = [false; 3];
        for _ in 0..200 {
            seen[r.range_usize(0, 2)] = true;
        }
        assert_eq!(seen, [true; 3]);
    }
}
