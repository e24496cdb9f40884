//! Per-source limits of a UDP listener's clients: sessions open per client
//! address (`maxSessionsPerSource`) and datagrams per second per client
//! address (`datagramRate`, a window of one second, as TCP's `sourceRate`).
//! Owned by the listener's relay thread with its table of sessions: no lock.
//!
//! Nothing is kept for a listener without these limits. With them, an
//! address is kept while it has a session counted here (at most
//! `maxSessions` of them) or, for the rate alone, at most
//! [`MAX_RATE_SOURCES`] more: some 40-90 B each, so spoofed sources cannot
//! grow the map past that.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Client addresses followed for their rate alone (without a session) at
/// once: past it, a new address's datagrams are not rate-limited that second
/// (spoofed floods of new addresses are bounded by `maxSessions` instead),
/// and the map stays bounded.
pub(crate) const MAX_RATE_SOURCES: usize = 1 << 17;

/// What one client address uses.
#[derive(Debug, Default)]
struct Use {
    /// Sessions open.
    sessions: u32,
    /// The second (of [`Sources::clock`]) `datagrams` counts.
    second: u64,
    datagrams: u32,
}

/// The client addresses of one UDP listener with sessions open or datagrams
/// this second.
#[derive(Debug)]
pub(crate) struct Sources {
    by_ip: HashMap<IpAddr, Use>,
    clock: Instant,
    /// The second addresses with nothing open were last forgotten.
    swept: u64,
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            by_ip: HashMap::new(),
            clock: Instant::now(),
            swept: 0,
        }
    }
}

impl Sources {
    fn second(&self) -> u64 {
        self.clock.elapsed().as_secs()
    }

    /// Counts a datagram from `ip`: whether it is within `rate` datagrams
    /// this second (0: no limit, nothing counted).
    pub(crate) fn datagram(&mut self, ip: IpAddr, rate: u32) -> bool {
        if rate == 0 {
            return true;
        }
        let second = self.second();
        if second != self.swept {
            self.forget_idle();
        }
        if !self.by_ip.contains_key(&ip) && self.by_ip.len() >= MAX_RATE_SOURCES {
            return true;
        }
        let used = self.by_ip.entry(ip).or_default();
        if used.second != second {
            used.second = second;
            used.datagrams = 0;
        }
        if used.datagrams >= rate {
            return false;
        }
        used.datagrams += 1;
        true
    }

    /// Forgets the addresses with no counted session and no datagram this
    /// second, and the room they took after a flood. Called at least once a
    /// second (by the relay's sweep too: a reload may have lifted the rate).
    pub(crate) fn forget_idle(&mut self) {
        if self.by_ip.capacity() == 0 {
            return;
        }
        let second = self.second();
        self.swept = second;
        self.by_ip
            .retain(|_, u| u.sessions > 0 || u.second == second);
        if self.by_ip.len() < self.by_ip.capacity() / 4 {
            self.by_ip.shrink_to_fit();
        }
    }

    /// Whether `ip` may open another session under `max` (0: no limit).
    pub(crate) fn may_open(&self, ip: IpAddr, max: u32) -> bool {
        max == 0 || self.by_ip.get(&ip).map_or(0, |u| u.sessions) < max
    }

    /// A session of `ip` opened under a limit of `max` sessions per address:
    /// whether it is counted (not without a limit, 0). Only a counted one is
    /// to be [`closed`](Sources::closed): a reload may set or lift the limit
    /// while it is open.
    pub(crate) fn opened(&mut self, ip: IpAddr, max: u32) -> bool {
        if max == 0 {
            return false;
        }
        self.by_ip.entry(ip).or_default().sessions += 1;
        true
    }

    /// A counted session of `ip` ended.
    pub(crate) fn closed(&mut self, ip: IpAddr) {
        let second = self.second();
        if let Some(used) = self.by_ip.get_mut(&ip) {
            used.sessions = used.sessions.saturating_sub(1);
            // Kept while its datagrams of this second still count.
            if used.sessions == 0 && (used.datagrams == 0 || used.second != second) {
                self.by_ip.remove(&ip);
            }
        }
    }

    /// Addresses followed now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_ip.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn sessions_per_address_are_counted_and_forgotten_when_closed() {
        let mut sources = Sources::default();
        assert!(sources.may_open(ip(1), 2));
        assert!(sources.opened(ip(1), 2));
        assert!(sources.opened(ip(1), 2));
        assert!(!sources.may_open(ip(1), 2));
        assert!(sources.may_open(ip(1), 0), "0: no limit");
        assert!(sources.may_open(ip(2), 2), "per address");
        sources.closed(ip(1));
        assert!(sources.may_open(ip(1), 2));
        sources.closed(ip(1));
        sources.closed(ip(1)); // never below zero
        assert_eq!(sources.len(), 0);
    }

    #[test]
    fn nothing_is_kept_per_address_without_limits() {
        let mut sources = Sources::default();
        for n in 0..1000 {
            assert!(!sources.opened(ip(n), 0), "not counted");
            assert!(sources.datagram(ip(n), 0));
        }
        assert_eq!(sources.len(), 0);
        assert_eq!(sources.by_ip.capacity(), 0, "not even allocated");
    }

    #[test]
    fn the_rate_counts_datagrams_of_one_second_per_address() {
        let mut sources = Sources::default();
        let second = sources.second();
        let passed = (0..10).filter(|_| sources.datagram(ip(1), 4)).count();
        // Within one second (the test may cross a second's edge: then at
        // most twice the rate).
        if sources.second() == second {
            assert_eq!(passed, 4);
        } else {
            assert!((4..=8).contains(&passed), "{passed}");
        }
        assert!(sources.datagram(ip(2), 4), "another address");
        assert!(sources.datagram(ip(1), 0), "0: no limit");
    }

    #[test]
    fn addresses_followed_for_their_rate_alone_are_bounded() {
        let mut sources = Sources::default();
        for n in 0..(MAX_RATE_SOURCES as u32 + 1000) {
            assert!(sources.datagram(ip(n), 1));
        }
        assert!(sources.len() <= MAX_RATE_SOURCES);
    }

    #[test]
    fn addresses_followed_for_their_rate_are_forgotten_the_next_second() {
        let mut sources = Sources::default();
        for n in 0..1000 {
            sources.datagram(ip(n), 5);
        }
        assert!(sources.opened(ip(1), 3));
        // A second later (the clock moved back instead of sleeping).
        sources.clock -= std::time::Duration::from_secs(1);
        sources.forget_idle();
        assert_eq!(sources.len(), 1, "the address with a session stays");
        assert!(sources.by_ip.capacity() < 1000, "room given back");
        sources.closed(ip(1));
        assert_eq!(sources.len(), 0);
    }
}
