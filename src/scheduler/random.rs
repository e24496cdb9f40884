//! `rand`: a uniformly random available host.

use super::{Candidates, RANDOM_DRAWS, Scheduler};

/// Uniform random choice among the candidates. Draws a few times among all hosts
/// (O(1) while most are up), then falls back to an exact draw among the candidates,
/// so hosts next to a bad one get no extra share.
#[derive(Debug, Default)]
pub struct Random;

impl Scheduler for Random {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        let n = candidates.hosts().len();
        if n == 0 {
            return None;
        }
        for _ in 0..RANDOM_DRAWS {
            let i = fastrand::usize(..n);
            if candidates.is_candidate(i) {
                return Some(i);
            }
        }
        let count = candidates.iter().count();
        if count == 0 {
            return None;
        }
        candidates.iter().nth(fastrand::usize(..count))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn uniform_within_bounds() {
        fastrand::seed(7);
        let h = hosts(&[1, 1, 1]);
        let counts = histogram(&Random, &h, 30_000);
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{c}");
        }
    }

    #[test]
    fn uniform_over_survivors_when_most_are_bad() {
        fastrand::seed(11);
        let h = hosts(&[1; 10]);
        for host in h.iter().take(8) {
            host.stats.mark_bad("x");
        }
        let counts = histogram(&Random, &h, 20_000);
        assert_eq!(counts[..8].iter().sum::<usize>(), 0);
        assert!((9_000..11_000).contains(&counts[8]), "{counts:?}");
    }
}
