//! `weightr`: random, with probability proportional to each host's weight.

use super::slow_start::{Ramp, SlowStart};
use super::{Candidates, RANDOM_DRAWS, Scheduler};

/// Weighted random choice through an alias table (Vose's method, in exact integer
/// arithmetic) built once per snapshot: two random numbers and one table slot per
/// pick, O(1) whatever the host count (txLoadBalancer walked the whole population;
/// a binary search over cumulative weights costs O(log n) cache misses).
#[derive(Debug)]
pub struct Weighted {
    /// One slot per host, read-only after build.
    slots: Box<[Slot]>,
    /// Each host's weight, for the exact draw among candidates.
    weights: Box<[u64]>,
    /// Sum of the weights; every slot holds `total` units.
    total: u64,
    slow_start: Option<SlowStart>,
}

/// Slot `i` of the alias table: a draw `r` in `0..total` lands on host `i` when
/// `r < threshold`, on host `alias` otherwise.
#[derive(Debug, Clone, Copy)]
struct Slot {
    threshold: u64,
    alias: u32,
}

impl Weighted {
    /// Builds the table for hosts with these weights, in order.
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let weights: Box<[u64]> = weights.into_iter().map(u64::from).collect();
        let total: u64 = weights.iter().sum();
        Weighted {
            slots: alias_table(&weights, total),
            weights,
            total,
            slow_start: None,
        }
    }

    /// Ramps returning hosts' shares over this slow-start period.
    pub fn with_slow_start(mut self, slow_start: Option<SlowStart>) -> Self {
        self.slow_start = slow_start;
        self
    }

    /// A host drawn with probability weight / total.
    #[inline]
    fn draw(&self) -> usize {
        let i = fastrand::usize(..self.slots.len());
        let slot = self.slots[i];
        if fastrand::u64(..self.total) < slot.threshold {
            i
        } else {
            slot.alias as usize
        }
    }

    /// An exact draw among the candidates, each weighted by weight × share (at
    /// most 2^32 × 2^10 each: the sum fits a u64).
    fn exact(&self, candidates: &Candidates<'_>, ramp: Option<Ramp>) -> Option<usize> {
        let hosts = candidates.hosts();
        let effective = |i: usize| match ramp {
            None => self.weights[i],
            Some(r) => self.weights[i] * r.share(&hosts[i].stats),
        };
        let live: u64 = candidates.iter().map(effective).sum();
        if live == 0 {
            return None;
        }
        let mut r = fastrand::u64(..live);
        candidates.iter().find(|&i| {
            let w = effective(i);
            if r < w {
                true
            } else {
                r -= w;
                false
            }
        })
    }
}

/// Vose's alias table in integers: host `i` owns `weight[i] × n` units, every slot
/// holds `total` units, and each slot is filled by at most two hosts.
fn alias_table(weights: &[u64], total: u64) -> Box<[Slot]> {
    let n = weights.len();
    if total == 0 || u32::try_from(n).is_err() {
        return Box::new([]);
    }
    let capacity = u128::from(total);
    let mut units: Vec<u128> = weights.iter().map(|&w| u128::from(w) * n as u128).collect();
    let mut slots: Vec<Slot> = (0..n)
        .map(|i| Slot {
            threshold: total,
            alias: i as u32,
        })
        .collect();
    let (mut small, mut large): (Vec<usize>, Vec<usize>) =
        (0..n).partition(|&i| units[i] < capacity);
    while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
        small.pop();
        // units[s] < capacity, so it fits a u64 threshold.
        slots[s] = Slot {
            threshold: units[s] as u64,
            alias: l as u32,
        };
        units[l] -= capacity - units[s];
        if units[l] < capacity {
            large.pop();
            small.push(l);
        }
    }
    // Whatever is left fills its own slot exactly (up to rounding, none in integers).
    slots.into_boxed_slice()
}

impl Scheduler for Weighted {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        // The table belongs to the snapshot's host list; a mismatch would be a bug
        // in the controller, so pick nothing rather than index out of bounds.
        if self.slots.is_empty() || self.slots.len() != candidates.hosts().len() {
            return None;
        }
        let ramp = self.slow_start.as_ref().and_then(SlowStart::now);
        for _ in 0..RANDOM_DRAWS {
            let i = self.draw();
            if candidates.is_candidate(i)
                && ramp.is_none_or(|r| r.admits(&candidates.hosts()[i].stats))
            {
                return Some(i);
            }
        }
        // Many hosts out (or ramping): an exact weighted draw among the candidates.
        self.exact(candidates, ramp)
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

    #[test]
    fn slow_start_shrinks_a_returning_host_only() {
        use std::time::Duration;
        fastrand::seed(41);
        // Ramping together (all just created): weights as usual.
        let h = hosts(&[1, 3]);
        let slow = || SlowStart::new(Some(Duration::from_millis(300))).map(|s| s.for_hosts(&h));
        let s = Weighted::new(h.iter().map(|h| h.weight)).with_slow_start(slow());
        let counts = histogram(&s, &h, 8_000);
        assert!((1_800..2_200).contains(&counts[0]), "{counts:?}");
        // After the ramp, h0 comes back: a few percent instead of a quarter.
        std::thread::sleep(Duration::from_millis(300));
        let s = Weighted::new(h.iter().map(|h| h.weight)).with_slow_start(slow());
        h[0].stats.mark_bad("x");
        h[0].stats.mark_up();
        let counts = histogram(&s, &h, 4_000);
        assert!(counts[0] < 4_000 / 20, "{counts:?}");
    }

    /// The table gives every host exactly its share of the n × total units.
    #[test]
    fn alias_table_is_exact() {
        for weights in [
            vec![1u64],
            vec![1, 1, 1],
            vec![1, 5, 20],
            vec![7, 0, 3, 1_000_000, 2],
            (1..=100).collect(),
            vec![u64::from(u32::MAX); 5],
        ] {
            let total: u64 = weights.iter().sum();
            let slots = alias_table(&weights, total);
            let n = weights.len() as u128;
            let mut owned = vec![0u128; weights.len()];
            for (i, slot) in slots.iter().enumerate() {
                assert!(slot.threshold <= total);
                owned[i] += u128::from(slot.threshold);
                owned[slot.alias as usize] += u128::from(total - slot.threshold);
            }
            for (i, &w) in weights.iter().enumerate() {
                assert_eq!(owned[i], u128::from(w) * n, "{weights:?}");
            }
        }
        assert!(alias_table(&[], 0).is_empty());
    }
}
