//! `wrr`: smooth weighted round robin, nginx's sequence.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::slow_start::SlowStart;
use super::{Candidates, Scheduler};

/// Longest cycle [`SmoothWeighted`] precomputes. Weights whose sum (after dividing
/// by their greatest common divisor) exceeds it are scaled down to fit, keeping
/// each host at least one turn: the ratios are then approximate.
pub const MAX_CYCLE: usize = 1 << 16;

/// How many slots a pick looks past unavailable hosts before it falls back to the
/// next candidate in configuration order.
const SCAN: usize = 64;

/// Smooth weighted round robin: nginx's algorithm (each turn every host gains its
/// weight, the host with the most wins and pays the total) run once in [`new`]
/// over one whole cycle, so a pick is one atomic increment and one table read.
/// Weights 5, 1, 1 give A A B A C A A, repeated.
///
/// A host that is not a candidate passes its turns on: the pick takes the next
/// slot of the cycle and moves the shared counter past the skipped ones, so the
/// others keep their interleaving and their ratios.
///
/// [`new`]: SmoothWeighted::new
#[derive(Debug)]
pub struct SmoothWeighted {
    /// One cycle of host indices. Read-only after build.
    cycle: Box<[u32]>,
    /// How many hosts the cycle was built for.
    hosts: usize,
    /// The next slot (modulo the cycle's length). Written by every pick.
    next: AtomicUsize,
    slow_start: Option<SlowStart>,
}

impl SmoothWeighted {
    /// Builds the cycle for hosts with these weights, in order.
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let weights: Vec<u64> = weights.into_iter().map(u64::from).collect();
        SmoothWeighted {
            cycle: cycle(&fit(&weights)),
            hosts: weights.len(),
            next: AtomicUsize::new(0),
            slow_start: None,
        }
    }

    /// Ramps returning hosts over this slow-start period: while a host ramps, it
    /// keeps each of its turns only with probability equal to its share.
    pub fn with_slow_start(mut self, slow_start: Option<SlowStart>) -> Self {
        self.slow_start = slow_start;
        self
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Weights divided by their greatest common divisor, then scaled down (each at
/// least 1) if their sum exceeds [`MAX_CYCLE`].
fn fit(weights: &[u64]) -> Vec<u64> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let reduced: Vec<u64> = weights.iter().map(|w| w / g).collect();
    let sum: u64 = reduced.iter().sum();
    if sum as usize <= MAX_CYCLE {
        return reduced;
    }
    let room = MAX_CYCLE as u128;
    reduced
        .iter()
        .map(|&w| ((u128::from(w) * room / u128::from(sum)) as u64).max(1))
        .collect()
}

/// Most steps (hosts × cycle length) nginx's algorithm may take to build a
/// cycle (a few tens of milliseconds); beyond, [`deadlines`] builds it.
const MAX_NGINX_STEPS: u64 = 1 << 25;

/// One cycle of nginx's smooth weighted round robin (ties to the first host).
/// nginx's algorithm looks at every host for every slot: with 80,000 hosts
/// that took 8 s. Equal weights make plain round robin at once, and big
/// groups take [`deadlines`], the same shares in O(slots × log hosts).
fn cycle(weights: &[u64]) -> Box<[u32]> {
    let total: u64 = weights.iter().sum();
    if weights.iter().all(|&w| w == weights[0]) {
        // nginx gives equal weights their configuration order, `w` times.
        let (n, turns) = (weights.len() as u32, weights.first().copied().unwrap_or(0));
        return (0..turns).flat_map(|_| 0..n).collect();
    }
    if total.saturating_mul(weights.len() as u64) > MAX_NGINX_STEPS {
        return deadlines(weights, total);
    }
    let mut current = vec![0i128; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += i128::from(w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= i128::from(total);
        out.push(best as u32);
    }
    out.into_boxed_slice()
}

/// A cycle in which host `i`'s `k`-th turn falls at its deadline
/// `(k + ½) · total / weight_i` (earliest first, ties to the first host):
/// each host gets exactly its weight's turns, spread evenly over the cycle.
fn deadlines(weights: &[u64], total: u64) -> Box<[u32]> {
    use std::cmp::{Ordering, Reverse};
    use std::collections::BinaryHeap;
    /// Host `host`'s next turn, due at `(2·turn + 1) · total / (2·weight)`.
    #[derive(PartialEq, Eq)]
    struct Due {
        turn: u64,
        weight: u64,
        host: u32,
    }
    impl Ord for Due {
        fn cmp(&self, other: &Self) -> Ordering {
            // (2a+1)/(2wa) against (2b+1)/(2wb), in integers.
            let a = u128::from(2 * self.turn + 1) * u128::from(other.weight);
            let b = u128::from(2 * other.turn + 1) * u128::from(self.weight);
            a.cmp(&b).then(self.host.cmp(&other.host))
        }
    }
    impl PartialOrd for Due {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }
    let mut due: BinaryHeap<Reverse<Due>> = weights
        .iter()
        .enumerate()
        .filter(|(_, w)| **w > 0)
        .map(|(i, &weight)| {
            Reverse(Due {
                turn: 0,
                weight,
                host: i as u32,
            })
        })
        .collect();
    let mut out = Vec::with_capacity(total as usize);
    while let Some(Reverse(mut next)) = due.pop() {
        out.push(next.host);
        next.turn += 1;
        if next.turn < next.weight {
            due.push(Reverse(next));
        }
    }
    out.into_boxed_slice()
}

impl Scheduler for SmoothWeighted {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        let len = self.cycle.len();
        if len == 0 || self.hosts != candidates.hosts().len() {
            return None;
        }
        let ramp = self.slow_start.as_ref().and_then(SlowStart::now);
        let start = self.next.fetch_add(1, Relaxed);
        let hosts = candidates.hosts();
        for k in 0..SCAN.min(len) {
            let i = self.cycle[start.wrapping_add(k) % len] as usize;
            if candidates.is_candidate(i) && ramp.is_none_or(|r| r.admits(&hosts[i].stats)) {
                if k > 0 {
                    // Skipped turns are consumed, unless another pick moved on.
                    let _ = self.next.compare_exchange(
                        start.wrapping_add(1),
                        start.wrapping_add(k + 1),
                        Relaxed,
                        Relaxed,
                    );
                }
                return Some(i);
            }
        }
        // Long runs of unavailable (or ramping) hosts: the next candidate after
        // this turn's host, in configuration order.
        candidates.from(self.cycle[start % len] as usize + 1).next()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn sequence(s: &SmoothWeighted, h: &crate::state::Hosts, n: usize) -> String {
        (0..n)
            .map(|_| (b'a' + s.pick(&Candidates::new(h, &[], None)).unwrap() as u8) as char)
            .collect()
    }

    #[test]
    fn big_groups_get_their_shares_without_nginx_s_quadratic_build() {
        // Equal weights: round robin in order, as nginx.
        assert_eq!(&*cycle(&[2, 2, 2]), &[0, 1, 2, 0, 1, 2]);
        // Deadlines on a small case: the same shares as nginx's, spread out.
        let weights = [5, 1, 1];
        let mut shares = [0; 3];
        for &i in deadlines(&weights, 7).iter() {
            shares[i as usize] += 1;
        }
        assert_eq!(shares, [5, 1, 1]);
        // A's turns at 0.7, 2.1, 3.5, 4.9, 6.3; B's and C's at 3.5.
        assert_eq!(&*deadlines(&weights, 7), &[0, 0, 0, 1, 2, 0, 0]);
        // 80,000 hosts of mixed weights: built at once (nginx's took seconds).
        let weights: Vec<u64> = (0..80_000).map(|i| 1 + i % 3).collect();
        let start = std::time::Instant::now();
        let built = cycle(&fit(&weights));
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        assert!(built.len() <= MAX_CYCLE + 80_000);
    }

    #[test]
    fn nginx_sequence() {
        let h = hosts(&[5, 1, 1]);
        let s = SmoothWeighted::new(h.iter().map(|h| h.weight));
        assert_eq!(sequence(&s, &h, 14), "aabacaaaabacaa");
        let h = hosts(&[1, 1, 1]);
        let s = SmoothWeighted::new(h.iter().map(|h| h.weight));
        assert_eq!(sequence(&s, &h, 7), "abcabca");
        let h = hosts(&[4, 2, 1]);
        let s = SmoothWeighted::new(h.iter().map(|h| h.weight));
        assert_eq!(sequence(&s, &h, 7), "abacaba");
    }

    #[test]
    fn common_factors_do_not_lengthen_the_cycle() {
        assert_eq!(cycle(&fit(&[500, 100, 100])).len(), 7);
        assert_eq!(fit(&[0, 0]), vec![0, 0]);
    }

    #[test]
    fn huge_weights_fit_the_cycle_and_keep_every_host() {
        let weights = [u64::from(u32::MAX), 1, 3_000_000_000, 7];
        let fitted = fit(&weights);
        assert!(fitted.iter().sum::<u64>() as usize <= MAX_CYCLE + weights.len());
        assert!(fitted.iter().all(|&w| w >= 1));
        let c = cycle(&fitted);
        for i in 0..weights.len() as u32 {
            assert!(c.contains(&i));
        }
    }

    #[test]
    fn unavailable_hosts_pass_their_turns_on() {
        let h = hosts(&[5, 1, 1]);
        h[0].stats.mark_bad("x");
        let s = SmoothWeighted::new(h.iter().map(|h| h.weight));
        assert_eq!(sequence(&s, &h, 6), "bcbcbc");
        h[0].stats.mark_up();
        h[1].stats.set_admin_down(true);
        let s = SmoothWeighted::new(h.iter().map(|h| h.weight));
        assert_eq!(sequence(&s, &h, 12), "aaacaaaaacaa");
    }

    #[test]
    fn falls_back_past_long_runs() {
        // Host a owns 1,000 consecutive-ish turns; with it down the scan of 64
        // slots may end on a's turns only and must still find b.
        let h = hosts(&[1_000, 1]);
        h[0].stats.mark_bad("x");
        let s = SmoothWeighted::new(h.iter().map(|h| h.weight));
        for _ in 0..3_000 {
            assert_eq!(s.pick(&Candidates::new(&h, &[], None)), Some(1));
        }
        let tried = [h[1].id];
        assert_eq!(s.pick(&Candidates::new(&h, &tried, None)), None);
    }
}
