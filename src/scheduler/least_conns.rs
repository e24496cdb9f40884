//! `leastc`: the host with the fewest open connections.

use super::{Candidates, Scheduler};

/// Fewest open connections; ties go to the host whose last connection closed
/// longest ago (so idle hosts share work in turn). A scan of the hosts' atomic
/// counters: O(n) reads, no allocation, no lock. Groups are small, and an ordered
/// structure would put a lock or a CAS loop on every connection close instead.
#[derive(Debug, Default)]
pub struct LeastConns;

impl Scheduler for LeastConns {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        let hosts = candidates.hosts();
        candidates
            .iter()
            .min_by_key(|&i| (hosts[i].stats.open(), hosts[i].stats.last_closed()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::state::ConnectionGuard;

    #[test]
    fn fewest_open_wins() {
        let h = hosts(&[1, 1, 1]);
        let _a = ConnectionGuard::new(h[0].stats.clone());
        let _b = ConnectionGuard::new(h[0].stats.clone());
        let _c = ConnectionGuard::new(h[2].stats.clone());
        assert_eq!(LeastConns.pick(&Candidates::new(&h, &[], None)), Some(1));
    }

    #[test]
    fn ties_go_to_least_recently_closed() {
        let h = hosts(&[1, 1, 1]);
        for i in [2, 0, 1] {
            drop(ConnectionGuard::new(h[i].stats.clone()));
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let s = LeastConns;
        assert_eq!(s.pick(&Candidates::new(&h, &[], None)), Some(2));
        // Sequential connections rotate.
        let mut seq = Vec::new();
        for _ in 0..6 {
            let i = s.pick(&Candidates::new(&h, &[], None)).unwrap();
            seq.push(i);
            drop(ConnectionGuard::new(h[i].stats.clone()));
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(seq, vec![2, 0, 1, 2, 0, 1]);
    }
}
