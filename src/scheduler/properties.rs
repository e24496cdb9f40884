//! Property tests over every scheduler: never a host that is not a candidate,
//! always one when one exists, and weights honoured by the weighted ones.

use std::net::{Ipv4Addr, SocketAddr};

use proptest::prelude::*;

use super::testing::hosts;
use super::*;
use crate::state::ConnectionGuard;

/// One host's state in a generated group.
#[derive(Debug, Clone, Copy)]
enum State {
    Up,
    Bad,
    AdminDown,
    Tried,
}

fn state() -> impl Strategy<Value = State> {
    prop_oneof![
        4 => Just(State::Up),
        1 => Just(State::Bad),
        1 => Just(State::AdminDown),
        1 => Just(State::Tried),
    ]
}

fn kind() -> impl Strategy<Value = SchedulerKind> {
    (0..SchedulerKind::ALL.len()).prop_map(|i| SchedulerKind::ALL[i])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn picks_only_candidates_and_finds_one_when_there_is_one(
        kind in kind(),
        group in prop::collection::vec((1u32..10, state(), 0u32..6), 0..40),
        client in any::<u32>(),
        with_client in any::<bool>(),
        seed in any::<u64>(),
        slow in any::<bool>(),
    ) {
        fastrand::seed(seed);
        let weights: Vec<u32> = group.iter().map(|g| g.0).collect();
        let h = hosts(&weights);
        let mut tried = Vec::new();
        let mut guards = Vec::new();
        for (host, &(_, state, open)) in h.iter().zip(&group) {
            match state {
                State::Up => {}
                State::Bad => {
                    host.stats.mark_bad("x");
                }
                State::AdminDown => {
                    host.stats.set_admin_down(true);
                }
                State::Tried => tried.push(host.id),
            }
            for _ in 0..open {
                guards.push(ConnectionGuard::new(host.stats.clone()));
            }
        }
        let slow_start = slow.then(|| Duration::from_secs(60));
        let s = build_group(kind, &h, slow_start);
        let client = with_client.then(|| SocketAddr::from((Ipv4Addr::from(client), 1)));
        let c = Candidates::new(&h, &tried, client);
        let any_candidate = c.iter().next().is_some();
        for _ in 0..20 {
            match s.pick(&c) {
                Some(i) => {
                    prop_assert!(i < h.len(), "{kind}: {i} out of range");
                    prop_assert!(c.is_candidate(i), "{kind}: picked {i}, not a candidate");
                }
                None => prop_assert!(!any_candidate, "{kind}: none picked among candidates"),
            }
        }
        // A table for another host list picks nothing rather than panicking.
        let other = hosts(&[1; 3]);
        let _ = s.pick(&Candidates::new(&other, &[], client));
    }

    /// `wrr`: over whole cycles every host gets exactly its (reduced) weight.
    #[test]
    fn wrr_gives_exact_shares_per_cycle(weights in prop::collection::vec(1u32..20, 1..30)) {
        let h = hosts(&weights);
        let s = build(SchedulerKind::WeightedRoundRobin, &h);
        let g = weights.iter().copied().fold(0, gcd);
        let cycle: u32 = weights.iter().map(|w| w / g).sum();
        let mut counts = vec![0u32; h.len()];
        for _ in 0..2 * cycle {
            counts[s.pick(&Candidates::new(&h, &[], None)).unwrap()] += 1;
        }
        let expected: Vec<u32> = weights.iter().map(|w| 2 * w / g).collect();
        prop_assert_eq!(counts, expected);
    }

    /// `wleastc`: holding every connection, k × (sum of weights) picks leave each
    /// host with exactly k × its weight open.
    #[test]
    fn wleastc_fills_exactly_by_weight(
        weights in prop::collection::vec(1u32..8, 1..20),
        k in 1u32..4,
    ) {
        let h = hosts(&weights);
        let s = build(SchedulerKind::WeightedLeastConns, &h);
        let total: u32 = weights.iter().sum();
        let mut guards = Vec::new();
        for _ in 0..k * total {
            let i = s.pick(&Candidates::new(&h, &[], None)).unwrap();
            guards.push(ConnectionGuard::new(h[i].stats.clone()));
        }
        for (host, w) in h.iter().zip(&weights) {
            prop_assert_eq!(host.stats.open(), u64::from(k * w));
        }
    }

    /// `weightr`: counts within six standard deviations of weight / total.
    #[test]
    fn weightr_follows_weights(
        weights in prop::collection::vec(1u32..20, 1..20),
        seed in any::<u64>(),
    ) {
        fastrand::seed(seed);
        let h = hosts(&weights);
        let s = build(SchedulerKind::Weighted, &h);
        let n = 20_000usize;
        let total: u32 = weights.iter().sum();
        let mut counts = vec![0usize; h.len()];
        for _ in 0..n {
            counts[s.pick(&Candidates::new(&h, &[], None)).unwrap()] += 1;
        }
        for (count, &w) in counts.iter().zip(&weights) {
            let p = f64::from(w) / f64::from(total);
            let mean = n as f64 * p;
            let sigma = (n as f64 * p * (1.0 - p)).sqrt();
            prop_assert!(
                (*count as f64 - mean).abs() <= 6.0 * sigma + 1.0,
                "{counts:?} for {weights:?}"
            );
        }
    }

    /// `hash`: each host's share of the table is its share of the weights, within
    /// 2% of the table (Maglev balances to within a slot or so per turn).
    #[test]
    fn hash_table_shares_follow_weights(weights in prop::collection::vec(1u32..6, 1..12)) {
        let s = Maglev::new(&hosts(&weights));
        let slots = s.slots_per_host();
        let size = s.table_size() as f64;
        let total: u32 = weights.iter().sum();
        for (count, &w) in slots.iter().zip(&weights) {
            let expected = size * f64::from(w) / f64::from(total);
            prop_assert!(
                (*count as f64 - expected).abs() <= 0.02 * size,
                "{slots:?} for {weights:?}"
            );
        }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}
