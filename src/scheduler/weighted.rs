//! `weightr`: random, with probability proportional to each host's weight.

use super::{Candidates, RANDOM_DRAWS, Scheduler};

/// Weighted random choice: a binary search in a cumulative weight table built once
/// per snapshot (O(log n) per pick; txLoadBalancer walked the whole population).
#[derive(Debug)]
pub struct Weighted {
    /// `cumulative[i]` = sum of weights of hosts 0..=i. Read-only after build.
    cumulative: Box<[u64]>,
}

impl Weighted {
    /// Builds the table for hosts with these weights, in order.
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let mut sum = 0u64;
        let cumulative = weights
            .into_iter()
            .map(|w| {
                sum += u64::from(w);
                sum
            })
            .collect();
        Weighted { cumulative }
    }

    fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    fn weight(&self, i: usize) -> u64 {
        self.cumulative[i] - if i == 0 { 0 } else { self.cumulative[i - 1] }
    }
}

impl Scheduler for Weighted {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        let total = self.total();
        // The table belongs to the snapshot's host list; a mismatch would be a bug
        // in the controller, so pick nothing rather than index out of bounds.
        if total == 0 || self.cumulative.len() != candidates.hosts().len() {
            return None;
        }
        for _ in 0..RANDOM_DRAWS {
            let r = fastrand::u64(..total);
            let i = self.cumulative.partition_point(|&c| c <= r);
            if candidates.is_candidate(i) {
                return Some(i);
            }
        }
        // Many hosts out: an exact weighted draw among the candidates.
        let live: u64 = candidates.iter().map(|i| self.weight(i)).sum();
        if live == 0 {
            return None;
        }
        let mut r = fastrand::u64(..live);
        candidates.iter().find(|&i| {
            let w = self.weight(i);
            if r < w {
                true
            } else {
                r -= w;
                false
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn proportional_to_weight() {
        fastrand::seed(3);
        let h = hosts(&[1, 5, 20]);
        let s = Weighted::new(h.iter().map(|h| h.weight));
        let counts = histogram(&s, &h, 26_000);
        for (c, w) in counts.iter().zip([1usize, 5, 20]) {
            let expected = w * 1_000;
            assert!(c.abs_diff(expected) < expected / 10 + 100, "{counts:?}");
        }
    }

    #[test]
    fn proportional_among_survivors() {
        fastrand::seed(5);
        let h = hosts(&[100, 1, 3]);
        h[0].stats.mark_bad("x");
        let s = Weighted::new(h.iter().map(|h| h.weight));
        let counts = histogram(&s, &h, 8_000);
        assert_eq!(counts[0], 0);
        assert!((1_800..2_200).contains(&counts[1]), "{counts:?}");
    }
}
