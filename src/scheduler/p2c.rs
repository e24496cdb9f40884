//! `p2c`: the power of two random choices on open connections.

use super::slow_start::{Ramp, SCALE, SlowStart};
use super::{Candidates, RANDOM_DRAWS, Scheduler};
use crate::state::HostStats;

/// Draws two different random hosts and picks the one with fewer open
/// connections (the first drawn on a tie). Nearly as even as `leastc` under load,
/// without a shared ranking: O(1) per pick while most hosts are up, then an exact
/// draw among the candidates.
#[derive(Debug, Default)]
pub struct PowerOfTwo {
    slow_start: Option<SlowStart>,
}

impl PowerOfTwo {
    /// Ramps returning hosts over this slow-start period: a ramping host counts
    /// its open connections (plus one) divided by its share.
    pub fn with_slow_start(slow_start: Option<SlowStart>) -> Self {
        PowerOfTwo { slow_start }
    }
}

/// What p2c compares, in 1/[`SCALE`] connections: open connections, or while a
/// host ramps up, (open + 1) / share, so even an idle returning host looks busy.
#[inline]
fn load(stats: &HostStats, ramp: Option<Ramp>) -> u64 {
    let open = stats.open();
    match ramp {
        Some(r) => {
            let share = r.share(stats);
            if share >= SCALE {
                open.saturating_mul(SCALE)
            } else {
                (open + 1).saturating_mul(SCALE * SCALE) / share
            }
        }
        None => open,
    }
}

impl PowerOfTwo {
    /// The less loaded of `a` and `b`, `a` on a tie.
    #[inline]
    fn better(&self, candidates: &Candidates<'_>, a: usize, b: usize, ramp: Option<Ramp>) -> usize {
        let hosts = candidates.hosts();
        if load(&hosts[b].stats, ramp) < load(&hosts[a].stats, ramp) {
            b
        } else {
            a
        }
    }
}

impl Scheduler for PowerOfTwo {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        let n = candidates.hosts().len();
        if n < 2 {
            return candidates.iter().next();
        }
        let ramp = self.slow_start.as_ref().and_then(SlowStart::now);
        // A uniform candidate, then a uniform other candidate: together a
        // uniform pair of different candidates.
        let first = (0..RANDOM_DRAWS)
            .map(|_| fastrand::usize(..n))
            .find(|&a| candidates.is_candidate(a));
        if let Some(a) = first {
            let second = (0..RANDOM_DRAWS)
                .map(|_| {
                    let b = fastrand::usize(..n - 1);
                    if b >= a { b + 1 } else { b }
                })
                .find(|&b| candidates.is_candidate(b));
            if let Some(b) = second {
                return Some(self.better(candidates, a, b, ramp));
            }
        }
        // Many hosts out: two different random candidates, exactly.
        let count = candidates.iter().count();
        match count {
            0 => None,
            1 => candidates.iter().next(),
            _ => {
                let ra = fastrand::usize(..count);
                let mut rb = fastrand::usize(..count - 1);
                if rb >= ra {
                    rb += 1;
                }
                let a = candidates.iter().nth(ra)?;
                let b = candidates.iter().nth(rb)?;
                Some(self.better(candidates, a, b, ramp))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::state::ConnectionGuard;

    /// With one connection held per pick, p2c spreads load far more evenly than
    /// uniform random: the busiest host stays close to the mean.
    #[test]
    fn held_connections_stay_balanced() {
        fastrand::seed(23);
        let h = hosts(&[1; 10]);
        let s = PowerOfTwo::default();
        let mut guards = Vec::new();
        for _ in 0..1_000 {
            let i = s.pick(&Candidates::new(&h, &[], None)).unwrap();
            guards.push(ConnectionGuard::new(h[i].stats.clone()));
        }
        let open: Vec<u64> = h.iter().map(|h| h.stats.open()).collect();
        let (min, max) = (open.iter().min().unwrap(), open.iter().max().unwrap());
        // Mean 100; two choices keep the gap to a few connections (uniform random
        // would typically be ±20 or more).
        assert!(max - min <= 6, "{open:?}");
    }

    /// Without held connections every host ties at 0 open and p2c is uniform.
    #[test]
    fn uniform_when_idle() {
        fastrand::seed(29);
        let h = hosts(&[1, 1, 1]);
        let counts = histogram(&PowerOfTwo::default(), &h, 30_000);
        for c in &counts {
            assert!((9_000..11_000).contains(c), "{counts:?}");
        }
    }

    #[test]
    fn the_less_loaded_of_two_always_wins_with_two_hosts() {
        fastrand::seed(31);
        let h = hosts(&[1, 1]);
        let _g = ConnectionGuard::new(h[0].stats.clone());
        let s = PowerOfTwo::default();
        for _ in 0..100 {
            assert_eq!(s.pick(&Candidates::new(&h, &[], None)), Some(1));
        }
    }

    #[test]
    fn survivors_only_when_most_are_bad() {
        fastrand::seed(37);
        let h = hosts(&[1; 10]);
        for host in h.iter().take(8) {
            host.stats.mark_bad("x");
        }
        let counts = histogram(&PowerOfTwo::default(), &h, 4_000);
        assert_eq!(counts[..8].iter().sum::<usize>(), 0);
        assert!((1_800..2_200).contains(&counts[8]), "{counts:?}");
        let tried = [h[8].id];
        for _ in 0..50 {
            assert_eq!(
                PowerOfTwo::default().pick(&Candidates::new(&h, &tried, None)),
                Some(9)
            );
        }
    }

    #[test]
    fn a_ramping_host_looks_busier() {
        let fresh = HostStats::new();
        let ramp = SlowStart::new(Some(std::time::Duration::from_secs(3600)))
            .unwrap()
            .now()
            .unwrap();
        // Idle but at the floor share: heavier than a full host with 20 open.
        assert!(load(&fresh, Some(ramp)) > 20 * SCALE);
        assert_eq!(load(&fresh, None), 0);
    }
}
