//! `leastc`: the host with the fewest open connections.
//!
//! A tournament tree over the group's hosts keeps the current best host at its
//! root, so a pick is one atomic load (O(1)). Whoever changes what the ranking
//! reads (a connection opening or closing, a host going bad, up or admin-down)
//! replays the matches on that host's path to the root: O(log n) atomic loads and
//! stores, no lock. Concurrent updates may leave a node briefly stale; the next
//! update on its path repairs it, and a pick never returns a host that is not a
//! candidate (that falls back to an exact scan).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use super::{Candidates, Scheduler};
use crate::state::{HostSnapshot, HostStats};

/// Marks an empty slot of the tree (padding beyond the last host).
const NONE: u32 = u32::MAX;

/// Fewest open connections; ties go to the host whose last connection closed
/// longest ago (so idle hosts share work in turn).
#[derive(Debug)]
pub struct LeastConns {
    tree: Arc<Tree>,
}

impl LeastConns {
    /// Builds the tree for `hosts` and hooks each host's counters to it, so their
    /// changes keep it current. The controller calls this for every snapshot.
    pub fn new(hosts: &[HostSnapshot]) -> Self {
        let tree = Arc::new(Tree::new(hosts.iter().map(|h| h.stats.clone()).collect()));
        for (leaf, host) in hosts.iter().enumerate() {
            host.stats.attach_ranking(Some(Ranking {
                tree: tree.clone(),
                leaf,
            }));
        }
        LeastConns { tree }
    }
}

impl Scheduler for LeastConns {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        if candidates.hosts().len() == self.tree.hosts.len() {
            let best = self.tree.best();
            if best != NONE && candidates.is_candidate(best as usize) {
                return Some(best as usize);
            }
        }
        // Failover (the best was tried) or every host out: the exact scan.
        let hosts = candidates.hosts();
        candidates.iter().min_by_key(|&i| rank(&hosts[i].stats))
    }
}

/// What orders hosts: available first, then fewest open, then closed longest ago.
#[inline]
fn rank(stats: &HostStats) -> (bool, u64, u64) {
    (!stats.is_available(), stats.open(), stats.last_closed())
}

/// A host's place in a group's tree: its counters call [`Ranking::update`] when
/// they change.
#[derive(Debug)]
pub struct Ranking {
    tree: Arc<Tree>,
    leaf: usize,
}

impl Ranking {
    /// Replays the matches from this host's leaf to the root.
    #[inline]
    pub fn update(&self) {
        self.tree.update(self.leaf);
    }
}

/// A complete binary tree in an array: node 1 is the root, node `k` has children
/// `2k` and `2k + 1`, and the leaves start at `width`. Each node holds the index of
/// the best host of its subtree.
#[derive(Debug)]
struct Tree {
    hosts: Box<[Arc<HostStats>]>,
    width: usize,
    nodes: Box<[AtomicU32]>,
}

impl Tree {
    fn new(hosts: Vec<Arc<HostStats>>) -> Self {
        let width = hosts.len().next_power_of_two().max(1);
        let nodes: Box<[AtomicU32]> = (0..2 * width)
            .map(|k| {
                let leaf = k.wrapping_sub(width);
                AtomicU32::new(if k >= width && leaf < hosts.len() {
                    leaf as u32
                } else {
                    NONE
                })
            })
            .collect();
        let tree = Tree {
            hosts: hosts.into_boxed_slice(),
            width,
            nodes,
        };
        for k in (1..width).rev() {
            tree.replay(k);
        }
        tree
    }

    fn best(&self) -> u32 {
        self.nodes[1].load(Relaxed)
    }

    fn update(&self, leaf: usize) {
        let mut k = (self.width + leaf) / 2;
        while k >= 1 {
            self.replay(k);
            k /= 2;
        }
    }

    /// Recomputes node `k` from its two children.
    fn replay(&self, k: usize) {
        let a = self.nodes[2 * k].load(Relaxed);
        let b = self.nodes[2 * k + 1].load(Relaxed);
        let winner = match (a, b) {
            (NONE, x) | (x, NONE) => x,
            (a, b) => {
                if rank(&self.hosts[b as usize]) < rank(&self.hosts[a as usize]) {
                    b
                } else {
                    a
                }
            }
        };
        self.nodes[k].store(winner, Relaxed);
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
        let s = LeastConns::new(&h);
        let _a = ConnectionGuard::new(h[0].stats.clone());
        let _b = ConnectionGuard::new(h[0].stats.clone());
        let _c = ConnectionGuard::new(h[2].stats.clone());
        assert_eq!(s.pick(&Candidates::new(&h, &[], None)), Some(1));
    }

    #[test]
    fn ties_go_to_least_recently_closed() {
        let h = hosts(&[1, 1, 1]);
        let s = LeastConns::new(&h);
        for i in [2, 0, 1] {
            drop(ConnectionGuard::new(h[i].stats.clone()));
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
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

    #[test]
    fn bad_and_tried_hosts_are_passed_over() {
        let h = hosts(&[1, 1, 1, 1, 1]);
        let s = LeastConns::new(&h);
        let _g: Vec<_> = (0..3)
            .map(|_| ConnectionGuard::new(h[4].stats.clone()))
            .collect();
        h[0].stats.mark_bad("x");
        let tried = [h[1].id];
        let pick = s.pick(&Candidates::new(&h, &tried, None)).unwrap();
        assert_eq!(pick, 2);
        h[2].stats.set_admin_down(true);
        h[3].stats.mark_bad("y");
        assert_eq!(s.pick(&Candidates::new(&h, &[], None)), Some(1));
        h[1].stats.mark_bad("z");
        assert_eq!(s.pick(&Candidates::new(&h, &[], None)), Some(4));
        h[4].stats.mark_bad("w");
        assert_eq!(s.pick(&Candidates::new(&h, &[], None)), None);
    }

    #[test]
    fn root_matches_an_exact_scan_after_random_changes() {
        fastrand::seed(17);
        for n in [1usize, 2, 3, 7, 64, 100] {
            let h = hosts(&vec![1; n]);
            let s = LeastConns::new(&h);
            let mut guards: Vec<Vec<ConnectionGuard>> = (0..n).map(|_| Vec::new()).collect();
            for _ in 0..2_000 {
                let i = fastrand::usize(..n);
                match fastrand::u8(..10) {
                    0..=4 => guards[i].push(ConnectionGuard::new(h[i].stats.clone())),
                    5..=7 => drop(guards[i].pop()),
                    8 => {
                        h[i].stats.mark_bad("x");
                    }
                    _ => {
                        h[i].stats.mark_up();
                    }
                }
                let c = Candidates::new(&h, &[], None);
                let exact = c.iter().min_by_key(|&i| rank(&h[i].stats));
                let picked = s.pick(&c);
                assert_eq!(
                    picked.map(|i| rank(&h[i].stats)),
                    exact.map(|i| rank(&h[i].stats)),
                    "n={n}"
                );
            }
        }
    }
}
