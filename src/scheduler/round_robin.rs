//! `roundr`: available hosts in turn, A B C A B C …

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::{Candidates, Scheduler};

/// Round robin over the candidates. One shared counter; a host that is skipped
/// (bad, admin-down) passes its turn to the next candidate.
#[derive(Debug, Default)]
pub struct RoundRobin {
    /// Written by every pick (fetch_add); no other reader.
    next: AtomicUsize,
}

impl Scheduler for RoundRobin {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        let start = self.next.fetch_add(1, Relaxed);
        let picked = candidates.from(start).next()?;
        let n = candidates.hosts().len();
        if picked != start % n {
            // Skipped unavailable hosts: continue after the one picked, so the
            // remaining hosts keep their strict rotation.
            let _ = self
                .next
                .compare_exchange(start.wrapping_add(1), picked + 1, Relaxed, Relaxed);
        }
        Some(picked)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn strict_rotation() {
        let h = hosts(&[1, 1, 1]);
        let s = RoundRobin::default();
        let seq: Vec<usize> = (0..7)
            .map(|_| s.pick(&Candidates::new(&h, &[], None)).unwrap())
            .collect();
        assert_eq!(seq, vec![0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn rotation_over_remaining_hosts_when_one_is_bad() {
        let h = hosts(&[1, 1, 1, 1]);
        h[1].stats.mark_bad("down");
        let s = RoundRobin::default();
        let seq: Vec<usize> = (0..9)
            .map(|_| s.pick(&Candidates::new(&h, &[], None)).unwrap())
            .collect();
        assert_eq!(seq, vec![0, 2, 3, 0, 2, 3, 0, 2, 3]);
    }
}
