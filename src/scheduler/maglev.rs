//! `hash`: client-address affinity through Maglev consistent hashing.
//!
//! Maglev (Eisenbud et al., NSDI 2016) fills a lookup table of prime size `M` with
//! host indices: each host walks its own permutation of the slots (an offset and a
//! skip derived from its address) and, turn by turn, claims the next free slot of
//! its walk. A client's address hashes to a slot; the slot names its host. Every
//! host gets an almost equal share of the table (proportional to its weight here,
//! by giving heavier hosts turns more often, as Envoy does), and removing one of N
//! hosts reassigns its slots while moving only a few others: about 1/N of clients
//! change host.
//!
//! The table is built by the controller in [`Maglev::new`]; a pick hashes the
//! client's IP (never the port) with XXH3, a fixed, specified hash, so every txlb
//! instance with the same hosts sends a client to the same host, whichever
//! instance it reaches, across versions and restarts.
//!
//! While a client's host is not a candidate (bad, admin-down, or tried for this
//! client) the pick rehashes the address with the next seeds, so that host's
//! clients spread over the others while everyone else stays put; after
//! [`REHASHES`] misses it takes the next candidate in configuration order. Each
//! step depends on the address alone: the same client keeps landing on the same
//! host while its own is down.

use std::net::IpAddr;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{Candidates, Scheduler};
use crate::state::Hosts;

/// The smallest table: a prime, large enough for ~650 hosts at 100 slots each.
pub const MIN_TABLE: usize = 65_537;

/// Slots per host (unit weight) the table aims for; more slots, finer balance.
const SLOTS_PER_HOST: usize = 100;

/// The largest table aimed for (beyond it, balance degrades gracefully).
const MAX_TABLE: usize = 1 << 22;

/// Seeds: a host's offset, a host's skip, and clients' first slot. Rehashes use
/// `CLIENT_SEED + 1`, `+ 2`, …
const OFFSET_SEED: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
const SKIP_SEED: u64 = 0x6d61_676c_6576_736b; // "maglevsk"
const CLIENT_SEED: u64 = 0x7478_6c62_6869_7031; // "txlbhip1"

/// How many other slots a client tries before falling back to configuration
/// order.
pub const REHASHES: u64 = 8;

/// Maglev consistent hashing on the client's IP address.
#[derive(Debug)]
pub struct Maglev {
    /// `table[slot]` = host index; prime length, or empty without hosts.
    /// Read-only after build.
    table: Box<[u32]>,
    /// How many hosts the table was built for.
    hosts: usize,
}

impl Maglev {
    /// Builds the lookup table for `hosts`, identified by their configured
    /// address (so a renamed host keeps its clients) and weighted by `weight`.
    pub fn new(hosts: &Hosts) -> Self {
        let keys: Vec<(String, u32)> = hosts
            .iter()
            .map(|h| (h.address.to_string(), h.weight))
            .collect();
        Self::from_keys(keys.iter().map(|(k, w)| (k.as_bytes(), *w)))
    }

    /// Builds the lookup table for hosts identified by `key`, with these weights,
    /// in order.
    pub fn from_keys<'a>(hosts: impl IntoIterator<Item = (&'a [u8], u32)>) -> Self {
        let hosts: Vec<(&[u8], u32)> = hosts.into_iter().collect();
        let n = hosts.len();
        if n == 0 || u32::try_from(n).is_err() {
            return Maglev {
                table: Box::new([]),
                hosts: n,
            };
        }
        let size = next_prime(
            n.saturating_mul(SLOTS_PER_HOST)
                .clamp(MIN_TABLE, MAX_TABLE)
                .max(n + 1),
        );
        Maglev {
            table: populate(&hosts, size),
            hosts: n,
        }
    }

    /// The table's size (a prime), 0 without hosts.
    #[cfg(test)]
    pub fn table_size(&self) -> usize {
        self.table.len()
    }

    /// How many slots each host owns: its share of clients.
    #[cfg(test)]
    pub fn slots_per_host(&self) -> Vec<usize> {
        let mut counts = vec![0; self.hosts];
        for &i in self.table.iter() {
            counts[i as usize] += 1;
        }
        counts
    }

    /// The host the table gives `ip` to, ignoring health (a pick starts there).
    #[cfg(test)]
    pub fn lookup(&self, ip: IpAddr) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        Some(self.table[slot(client_hash(ip, 0), self.table.len())] as usize)
    }
}

/// The slot of a 64-bit hash in a table of `len` slots: the high half of
/// `hash × len` (Lemire's reduction), uniform like `hash % len` without a
/// division on the pick path.
#[inline]
fn slot(hash: u64, len: usize) -> usize {
    ((u128::from(hash) * len as u128) >> 64) as usize
}

/// `ip` hashed with the `attempt`-th client seed. IPv4-mapped IPv6 addresses hash
/// as the IPv4 address they carry.
#[inline]
fn client_hash(ip: IpAddr, attempt: u64) -> u64 {
    let seed = CLIENT_SEED.wrapping_add(attempt);
    match ip.to_canonical() {
        IpAddr::V4(v4) => xxh3_64_with_seed(&v4.octets(), seed),
        IpAddr::V6(v6) => xxh3_64_with_seed(&v6.octets(), seed),
    }
}

fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

fn next_prime(mut n: usize) -> usize {
    while !is_prime(n) {
        n += 1;
    }
    n
}

/// Maglev's population with weighted turns. Hosts take turns in the order of
/// their keys' hashes (not configuration order), so two instances listing the
/// same hosts in a different order still build the same table.
fn populate(hosts: &[(&[u8], u32)], size: usize) -> Box<[u32]> {
    const EMPTY: u32 = u32::MAX;
    let m = size as u64;
    struct Walk {
        host: u32,
        weight: u64,
        /// Next slot of the host's permutation.
        position: u64,
        skip: u64,
        /// Turns are taken while `iteration × weight ≥ target`.
        target: u64,
    }
    let mut walks: Vec<Walk> = hosts
        .iter()
        .enumerate()
        .map(|(i, &(key, weight))| Walk {
            host: i as u32,
            weight: u64::from(weight.max(1)),
            position: xxh3_64_with_seed(key, OFFSET_SEED) % m,
            skip: xxh3_64_with_seed(key, SKIP_SEED) % (m - 1) + 1,
            target: 0,
        })
        .collect();
    walks.sort_by_key(|w| {
        (
            xxh3_64_with_seed(hosts[w.host as usize].0, OFFSET_SEED),
            w.host,
        )
    });
    let max_weight = walks.iter().map(|w| w.weight).max().unwrap_or(1);
    let mut table = vec![EMPTY; size];
    let mut filled = 0;
    let mut iteration: u64 = 1;
    while filled < size {
        for walk in walks.iter_mut() {
            if filled == size {
                break;
            }
            // A host of weight w takes a turn in w of every max_weight iterations.
            if iteration * walk.weight < walk.target {
                continue;
            }
            walk.target += max_weight;
            while table[walk.position as usize] != EMPTY {
                walk.position = (walk.position + walk.skip) % m;
            }
            table[walk.position as usize] = walk.host;
            walk.position = (walk.position + walk.skip) % m;
            filled += 1;
        }
        iteration += 1;
    }
    table.into_boxed_slice()
}

impl Scheduler for Maglev {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        let n = candidates.hosts().len();
        if self.table.is_empty() || self.hosts != n {
            return None;
        }
        let Some(client) = candidates.client() else {
            // No address to be faithful to: any candidate will do.
            let count = candidates.iter().count();
            return candidates.iter().nth(fastrand::usize(..count.max(1)));
        };
        let ip = client.ip();
        let mut h = 0;
        for attempt in 0..=REHASHES {
            h = client_hash(ip, attempt);
            let i = self.table[slot(h, self.table.len())] as usize;
            if candidates.is_candidate(i) {
                return Some(i);
            }
        }
        candidates.from(slot(h, n)).next()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};

    fn client(i: u32) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + i), 40_000))
    }

    fn pick(s: &Maglev, h: &Hosts, c: SocketAddr) -> usize {
        s.pick(&Candidates::new(h, &[], Some(c))).unwrap()
    }

    #[test]
    fn the_same_client_always_gets_the_same_host() {
        let h = hosts(&[1; 5]);
        let a = Maglev::new(&h);
        let b = Maglev::new(&hosts(&[1; 5]));
        assert_eq!(a.table, b.table, "independent builds agree");
        for i in 0..1_000 {
            let c = client(i % 7);
            assert_eq!(pick(&a, &h, c), pick(&a, &h, client(i % 7)));
            assert_eq!(pick(&a, &h, c), pick(&b, &h, c));
        }
        // The port does not matter; IPv4-mapped IPv6 is the IPv4 address.
        let c = client(3);
        let other_port = SocketAddr::new(c.ip(), 1);
        assert_eq!(pick(&a, &h, c), pick(&a, &h, other_port));
        let IpAddr::V4(v4) = c.ip() else {
            unreachable!()
        };
        let mapped = SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), 9);
        assert_eq!(pick(&a, &h, c), pick(&a, &h, mapped));
    }

    #[test]
    fn host_order_does_not_change_the_table() {
        let keys = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"];
        let forward = Maglev::from_keys(keys.iter().map(|k| (k.as_bytes(), 1)));
        let backward = Maglev::from_keys(keys.iter().rev().map(|k| (k.as_bytes(), 1)));
        for i in 0..1_000 {
            let ip = client(i).ip();
            let f = forward.lookup(ip).unwrap();
            let b = backward.lookup(ip).unwrap();
            assert_eq!(keys[f], keys[keys.len() - 1 - b]);
        }
    }

    /// Pinned values: a change of hash or population would split a fleet whose
    /// instances run different txlb versions.
    #[test]
    fn the_table_is_stable_across_versions() {
        let keys = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"];
        let s = Maglev::from_keys(keys.iter().map(|k| (k.as_bytes(), 1)));
        assert_eq!(s.table_size(), 65_537);
        let first: Vec<u32> = s.table[..12].to_vec();
        let looked_up: Vec<usize> = (0..12).map(|i| s.lookup(client(i).ip()).unwrap()).collect();
        assert_eq!(first, vec![2, 2, 2, 1, 0, 0, 1, 0, 2, 2, 1, 0]);
        assert_eq!(looked_up, vec![2, 0, 0, 2, 1, 1, 0, 2, 1, 2, 2, 0]);
    }

    #[test]
    fn removing_one_of_ten_hosts_moves_few_clients() {
        let keys: Vec<String> = (1..=10).map(|i| format!("10.1.0.{i}:80")).collect();
        let all = Maglev::from_keys(keys.iter().map(|k| (k.as_bytes(), 1)));
        let gone = 4;
        let rest: Vec<&String> = keys
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != gone)
            .map(|(_, k)| k)
            .collect();
        let fewer = Maglev::from_keys(rest.iter().map(|k| (k.as_bytes(), 1)));
        let mut moved = 0;
        for i in 0..10_000 {
            let ip = client(i).ip();
            let before = &keys[all.lookup(ip).unwrap()];
            let after = rest[fewer.lookup(ip).unwrap()];
            if before != after {
                moved += 1;
            }
        }
        // The removed host's tenth must move; Maglev moves only a little more.
        eprintln!("removing 1 of 10 hosts moved {moved} of 10,000 clients");
        assert!(moved <= 1_500, "{moved} of 10,000 moved");
        assert!(moved >= 800, "{moved} of 10,000 moved");
    }

    #[test]
    fn weights_set_table_shares() {
        let s = Maglev::new(&hosts(&[1, 3]));
        let slots = s.slots_per_host();
        let ratio = slots[1] as f64 / slots[0] as f64;
        eprintln!("weights 1:3 own {slots:?} slots: 1:{ratio:.3}");
        assert!((2.7..=3.3).contains(&ratio), "{slots:?}");
        let even = Maglev::new(&hosts(&[1; 7])).slots_per_host();
        let (min, max) = (even.iter().min().unwrap(), even.iter().max().unwrap());
        assert!(max - min <= 1, "{even:?}");
    }

    #[test]
    fn a_down_hosts_clients_spread_and_come_back() {
        let h = hosts(&[1; 5]);
        let s = Maglev::new(&h);
        let home: Vec<usize> = (0..2_000).map(|i| pick(&s, &h, client(i))).collect();
        h[2].stats.mark_bad("x");
        let mut spread = [0usize; 5];
        for (i, &before) in home.iter().enumerate() {
            let now = pick(&s, &h, client(i as u32));
            assert_ne!(now, 2);
            if before == 2 {
                spread[now] += 1;
                // Consistent while down.
                assert_eq!(now, pick(&s, &h, client(i as u32)));
            } else {
                assert_eq!(now, before, "clients of up hosts stay put");
            }
        }
        let moved: usize = spread.iter().sum();
        for (i, &count) in spread.iter().enumerate() {
            if i != 2 {
                assert!(count > moved / 8, "{spread:?}");
            }
        }
        h[2].stats.mark_up();
        let back: Vec<usize> = (0..2_000).map(|i| pick(&s, &h, client(i))).collect();
        assert_eq!(back, home);
    }

    #[test]
    fn tried_hosts_are_skipped_and_all_out_is_none() {
        let h = hosts(&[1; 3]);
        let s = Maglev::new(&h);
        let c = client(1);
        let first = pick(&s, &h, c);
        let tried = [h[first].id];
        let second = s.pick(&Candidates::new(&h, &tried, Some(c))).unwrap();
        assert_ne!(second, first);
        let all: Vec<_> = h.iter().map(|h| h.id).collect();
        assert_eq!(s.pick(&Candidates::new(&h, &all, Some(c))), None);
        assert!(s.pick(&Candidates::new(&h, &[], None)).is_some());
        assert_eq!(
            Maglev::new(&Hosts::default()).pick(&Candidates::new(&Hosts::default(), &[], Some(c))),
            None
        );
    }
}
