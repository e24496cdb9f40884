//! `leastc`: the host with the fewest open connections, and `wleastc`: the fewest
//! per unit of weight.
//!
//! A tournament tree over the group's hosts keeps the current best host at its
//! root, so a pick is one atomic load (O(1)). Whoever changes what the ranking
//! reads (a connection opening or closing, a host going bad, up or admin-down)
//! replays the matches on that host's path to the root: O(log n) atomic loads and
//! stores, no lock. Concurrent updates may leave a node briefly stale; the next
//! update on its path repairs it, and a pick never returns a host that is not a
//! candidate (that falls back to an exact scan).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};

use super::slow_start::{Ramp, SlowStart};
use super::{Candidates, Scheduler};
use crate::state::{HostStats, Hosts, Ranking};

/// Marks an empty slot of the tree (padding beyond the last host).
const NONE: u32 = u32::MAX;

/// Fewest open connections (`leastc`), or fewest per unit of weight (`wleastc`);
/// ties go to the host whose last connection closed longest ago (so idle hosts
/// share work in turn).
#[derive(Debug)]
pub struct LeastConns {
    tree: Arc<Tree>,
    /// Only for `wleastc`: while a host ramps up, picks scan with effective
    /// weights (the tree cannot see time pass).
    slow_start: Option<SlowStart>,
}

impl LeastConns {
    /// `leastc`: builds the tree for `hosts` and hooks each host's counters to it,
    /// so their changes keep it current. The controller calls this for every
    /// snapshot.
    pub fn new(hosts: &Hosts) -> Self {
        Self::with_weights(hosts, None)
    }

    /// `wleastc`: like [`LeastConns::new`], ranking hosts by open connections
    /// divided by weight.
    pub fn weighted(hosts: &Hosts) -> Self {
        Self::with_weights(hosts, Some(hosts.iter().map(|h| h.weight).collect()))
    }

    fn with_weights(hosts: &Hosts, weights: Option<Box<[u32]>>) -> Self {
        let tree = Arc::new(Tree::new(
            hosts.iter().map(|h| h.stats.clone()).collect(),
            weights,
        ));
        let ranking: Weak<dyn Ranking> = Arc::downgrade(&tree) as _;
        for (slot, host) in hosts.iter().enumerate() {
            host.stats.observe(ranking.clone(), slot);
        }
        LeastConns {
            tree,
            slow_start: None,
        }
    }

    /// Ramps returning hosts' weights over this slow-start period (`wleastc`
    /// only; `leastc` keeps txLoadBalancer's behaviour and ignores it).
    pub fn with_slow_start(mut self, slow_start: Option<SlowStart>) -> Self {
        if self.tree.weights.is_some() {
            self.slow_start = slow_start;
        }
        self
    }

    /// The exact scan: O(n), for failover and slow start.
    fn scan(&self, candidates: &Candidates<'_>, ramp: Option<Ramp>) -> Option<usize> {
        candidates
            .iter()
            .reduce(|a, b| if self.tree.beats(b, a, ramp) { b } else { a })
    }
}

impl Scheduler for LeastConns {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        if candidates.hosts().len() != self.tree.hosts.len() {
            // The tree belongs to another host list: a controller bug; pick nothing
            // rather than index out of bounds.
            return None;
        }
        // The tree ranks by base weights: right unless a host of this group ramps
        // at a share different from the others'.
        let ramp = self.slow_start.as_ref().and_then(|s| {
            s.now()
                .filter(|r| s.uneven(r, self.tree.newest_up.load(Relaxed)))
        });
        if ramp.is_none() {
            let best = self.tree.best();
            if best != NONE && candidates.is_candidate(best as usize) {
                return Some(best as usize);
            }
        }
        // Failover (the best was tried), every host out, or a host ramping up.
        self.scan(candidates, ramp)
    }
}

/// What orders hosts for `leastc`: available first, then fewest open, then closed
/// longest ago.
#[inline]
fn rank(stats: &HostStats) -> (bool, u64, u64) {
    (!stats.is_available(), stats.open(), stats.last_closed())
}

/// Each host's counters replay the matches from its leaf to the root when they
/// change.
impl Ranking for Tree {
    #[inline]
    fn host_changed(&self, slot: usize) {
        self.update(slot);
    }
}

/// A complete binary tree in an array: node 1 is the root, node `k` has children
/// `2k` and `2k + 1`, and the leaves start at `width`. Each node holds the index of
/// the best host of its subtree.
#[derive(Debug)]
struct Tree {
    /// The group's hosts, held strongly; they hold the tree only weakly, so
    /// dropping the scheduler frees both.
    hosts: Box<[Arc<HostStats>]>,
    /// `wleastc`: each host's weight; `None` for `leastc`.
    weights: Option<Box<[u32]>>,
    /// The latest [`HostStats::up_since`] among the hosts: raised by updates
    /// (a host coming back is an update), read by `wleastc` picks to tell
    /// whether one of *this* group's hosts is ramping.
    newest_up: AtomicU64,
    width: usize,
    nodes: Box<[AtomicU32]>,
}

impl Tree {
    fn new(hosts: Vec<Arc<HostStats>>, weights: Option<Box<[u32]>>) -> Self {
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
        let newest = hosts.iter().map(|h| h.up_since()).max().unwrap_or(0);
        let tree = Tree {
            hosts: hosts.into_boxed_slice(),
            weights,
            newest_up: AtomicU64::new(newest),
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
        let up = self.hosts[leaf].up_since();
        if up > self.newest_up.load(Relaxed) {
            self.newest_up.fetch_max(up, Relaxed);
        }
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
                if self.beats(b as usize, a as usize, None) {
                    b
                } else {
                    a
                }
            }
        };
        self.nodes[k].store(winner, Relaxed);
    }

    /// Whether host `b` ranks strictly before host `a`: available first, then
    /// fewest open (per unit of effective weight for `wleastc`), then closed
    /// longest ago.
    #[inline]
    fn beats(&self, b: usize, a: usize, ramp: Option<Ramp>) -> bool {
        let (sa, sb) = (&self.hosts[a], &self.hosts[b]);
        let Some(weights) = &self.weights else {
            return rank(sb) < rank(sa);
        };
        let (ua, ub) = (!sa.is_available(), !sb.is_available());
        if ua != ub {
            return ua;
        }
        let (mut wa, mut wb) = (u128::from(weights[a]), u128::from(weights[b]));
        if let Some(r) = ramp {
            wa *= u128::from(r.share(sa));
            wb *= u128::from(r.share(sb));
        }
        // open_b / w_b < open_a / w_a, without division.
        let lb = u128::from(sb.open()) * wa;
        let la = u128::from(sa.open()) * wb;
        if lb != la {
            return lb < la;
        }
        sb.last_closed() < sa.last_closed()
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
    fn weighted_fills_hosts_in_proportion_to_weight() {
        let h = hosts(&[1, 2, 3]);
        let s = LeastConns::weighted(&h);
        let mut guards = Vec::new();
        for _ in 0..60 {
            let i = s.pick(&Candidates::new(&h, &[], None)).unwrap();
            guards.push(ConnectionGuard::new(h[i].stats.clone()));
        }
        let open: Vec<u64> = h.iter().map(|h| h.stats.open()).collect();
        assert_eq!(open, vec![10, 20, 30]);
        // A host with headroom per weight wins: free three on the heaviest.
        let mut freed = 0;
        guards.retain(|g| {
            let heavy = Arc::ptr_eq(g.stats(), &h[2].stats);
            if heavy && freed < 3 {
                freed += 1;
                false
            } else {
                true
            }
        });
        assert_eq!(s.pick(&Candidates::new(&h, &[], None)), Some(2));
    }

    #[test]
    fn weighted_ramp_shrinks_a_returning_hosts_weight() {
        use std::time::Duration;
        let period = Duration::from_millis(300);
        let h = hosts(&[1, 1]);
        let s = LeastConns::weighted(&h).with_slow_start(SlowStart::new(Some(period)));
        std::thread::sleep(period);
        let _g0: Vec<_> = (0..5)
            .map(|_| ConnectionGuard::new(h[0].stats.clone()))
            .collect();
        h[1].stats.mark_bad("x");
        h[1].stats.mark_up();
        let _g1 = ConnectionGuard::new(h[1].stats.clone());
        let c = Candidates::new(&h, &[], None);
        // h1 just came back: 1 open at a share under 1/5 weighs more than 5 open
        // on h0 (true for the first fifth of the period: 60 ms).
        assert_eq!(s.pick(&c), Some(0));
        assert_eq!(LeastConns::weighted(&h).pick(&c), Some(1), "without ramp");
        std::thread::sleep(period);
        assert_eq!(s.pick(&c), Some(1), "ramp over");
    }

    #[test]
    fn dropping_the_scheduler_frees_its_hosts_without_unhooking() {
        let h = hosts(&[1, 2, 3]);
        let freed: Vec<_> = h.iter().map(|h| Arc::downgrade(&h.stats)).collect();
        let s = LeastConns::weighted(&h);
        let tree = Arc::downgrade(&s.tree);
        let guard = ConnectionGuard::new(h[1].stats.clone());
        // The tree holds each host once; the hosts hold the tree only weakly.
        assert_eq!(Arc::strong_count(&h[0].stats), 2);
        assert_eq!(tree.strong_count(), 1);
        drop(s);
        assert_eq!(tree.strong_count(), 0, "the tree went with its scheduler");
        assert_eq!(Arc::strong_count(&h[0].stats), 1);
        // A connection still open on a host of the dropped group closes quietly.
        drop(guard);
        drop(h);
        assert!(freed.iter().all(|w| w.upgrade().is_none()), "hosts freed");
    }

    #[test]
    fn a_later_scheduler_takes_over_its_hosts() {
        let h = hosts(&[1, 1]);
        let old = LeastConns::new(&h);
        let new = LeastConns::new(&h);
        drop(old);
        let _g = ConnectionGuard::new(h[0].stats.clone());
        assert_eq!(new.pick(&Candidates::new(&h, &[], None)), Some(1));
        let _g = ConnectionGuard::new(h[1].stats.clone());
        let _g = ConnectionGuard::new(h[1].stats.clone());
        assert_eq!(new.pick(&Candidates::new(&h, &[], None)), Some(0));
    }

    #[test]
    fn root_matches_an_exact_scan_after_random_changes() {
        fastrand::seed(17);
        for n in [1usize, 2, 3, 7, 64, 100] {
            let weights: Vec<u32> = (0..n).map(|_| fastrand::u32(1..5)).collect();
            let h = hosts(&weights);
            let s = if n % 2 == 0 {
                LeastConns::weighted(&h)
            } else {
                LeastConns::new(&h)
            };
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
                let exact = s.scan(&c, None);
                let picked = s.pick(&c);
                // Same rank: neither beats the other.
                match (picked, exact) {
                    (Some(p), Some(e)) => assert!(
                        !s.tree.beats(p, e, None) && !s.tree.beats(e, p, None),
                        "n={n}"
                    ),
                    (p, e) => assert_eq!(p, e, "n={n}"),
                }
            }
        }
    }
}
