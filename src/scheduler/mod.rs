//! Schedulers: pick a host of a group for each new client connection.
//!
//! Every algorithm implements [`Scheduler`] on `&self` with interior atomics, so one
//! instance serves every connection at once. It sees the group's hosts through
//! [`Candidates`], which hides hosts that are bad, admin-down or already tried for
//! this client: no algorithm can forget the health check. Tables (alias tables,
//! Maglev tables, weighted round-robin cycles, leastc rankings) are built by
//! [`build_group`] when the controller makes a snapshot, never per pick; picking
//! allocates nothing (`tests/no_alloc_pick.rs` checks every scheduler).

mod least_conns;
mod maglev;
mod p2c;
#[cfg(test)]
mod properties;
mod random;
mod round_robin;
mod slow_start;
mod weighted;
mod wrr;

pub use crate::config::{SchedulerKind, UnknownScheduler};
pub(crate) use least_conns::LeastConns;
pub(crate) use maglev::Maglev;
pub(crate) use p2c::PowerOfTwo;
pub(crate) use random::Random;
pub(crate) use round_robin::RoundRobin;
pub(crate) use slow_start::SlowStart;
pub(crate) use weighted::Weighted;
pub(crate) use wrr::SmoothWeighted;

// What a scheduler sees of a host, and what a test of one needs to build hosts
// and hold connections open on them.
pub use crate::state::{ConnectionGuard, HostId, HostPlace, HostSnapshot, HostStats, Hosts};

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// How many random draws a random scheduler makes before it falls back to an exact
/// (linear) draw among the candidates. With most hosts up the first draw wins;
/// the fallback chases every host's counters (tens of µs with 1,000 hosts), so
/// with 10% of hosts bad it must be rare: 0.1^8 of picks.
const RANDOM_DRAWS: usize = 8;

/// A policy that picks one host for a new client connection.
pub trait Scheduler: Send + Sync + fmt::Debug {
    /// Returns the index (into [`Candidates::hosts`]) of a host that
    /// [`Candidates::is_candidate`] accepts, or `None` when there is none.
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize>;
}

/// The hosts of the enabled group as one client connection sees them.
#[derive(Debug, Clone, Copy)]
pub struct Candidates<'a> {
    hosts: &'a Hosts,
    tried: &'a [HostId],
    client: Option<SocketAddr>,
}

impl<'a> Candidates<'a> {
    /// Candidates among `hosts`, excluding those in `tried` (hosts this client was
    /// already sent to and that failed).
    pub fn new(hosts: &'a Hosts, tried: &'a [HostId], client: Option<SocketAddr>) -> Self {
        Candidates {
            hosts,
            tried,
            client,
        }
    }

    /// Every host of the group, candidates or not, in configuration order.
    pub fn hosts(&self) -> &'a Hosts {
        self.hosts
    }

    /// The client's address, when known.
    pub fn client(&self) -> Option<SocketAddr> {
        self.client
    }

    /// Whether host `index` may be picked: available, not full, not yet tried.
    #[inline]
    pub fn is_candidate(&self, index: usize) -> bool {
        let host = &self.hosts[index];
        host.stats.is_available()
            && host.stats.has_room(host.maxconn)
            && !self.tried.contains(&host.id)
    }

    /// Candidate indices starting at `start` (modulo the host count) and wrapping
    /// around, each at most once.
    pub fn from(&self, start: usize) -> impl Iterator<Item = usize> + '_ {
        let n = self.hosts.len();
        let start = if n == 0 { 0 } else { start % n };
        (start..n)
            .chain(0..start)
            .filter(move |&i| self.is_candidate(i))
    }

    /// Every candidate index in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.from(0)
    }
}

/// Builds the scheduler of `kind` for a group with these hosts, without slow
/// start.
pub fn build(kind: SchedulerKind, hosts: &Hosts) -> Box<dyn Scheduler> {
    build_group(kind, hosts, None)
}

/// Builds the scheduler of `kind` for a group with these hosts and the group's
/// `slowStart` period (ignored by schedulers that do not
/// [honour it](SchedulerKind::honours_slow_start)).
pub fn build_group(
    kind: SchedulerKind,
    hosts: &Hosts,
    slow_start: Option<Duration>,
) -> Box<dyn Scheduler> {
    // Without a slow-start period, the agents' weights still scale shares.
    let slow_start = Some(
        SlowStart::new(slow_start)
            .unwrap_or_else(SlowStart::agents_only)
            .for_hosts(hosts),
    );
    let weights = || hosts.iter().map(|h| h.weight);
    match kind {
        SchedulerKind::Random => Box::new(Random),
        SchedulerKind::RoundRobin => Box::new(RoundRobin::default()),
        SchedulerKind::LeastConns => Box::new(LeastConns::new(hosts)),
        SchedulerKind::Weighted => Box::new(Weighted::new(weights()).with_slow_start(slow_start)),
        SchedulerKind::Hash => Box::new(Maglev::new(hosts)),
        SchedulerKind::PowerOfTwo => Box::new(PowerOfTwo::with_slow_start(slow_start)),
        SchedulerKind::WeightedLeastConns => {
            Box::new(LeastConns::weighted(hosts).with_slow_start(slow_start))
        }
        SchedulerKind::WeightedRoundRobin => {
            Box::new(SmoothWeighted::new(weights()).with_slow_start(slow_start))
        }
        // The controller builds custom schedulers with their factories and refuses
        // configurations naming an unregistered one, so this is not reached; a
        // round robin is the harmless answer if it ever were.
        SchedulerKind::Custom(_) => Box::new(RoundRobin::default()),
    }
}

/// Whether the scheduler of `kind` builds tables over its group's hosts (a
/// cost that grows with the group), rather than only counters.
pub(crate) fn builds_tables(kind: SchedulerKind) -> bool {
    !matches!(
        kind,
        SchedulerKind::Random | SchedulerKind::RoundRobin | SchedulerKind::PowerOfTwo
    )
}

/// Builds an application's scheduler for a group's hosts (see
/// [`crate::BalancerBuilder::scheduler`]). Called by the controller for every
/// snapshot, off the data path.
pub type SchedulerFactory = std::sync::Arc<dyn Fn(&Hosts) -> Box<dyn Scheduler> + Send + Sync>;

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for scheduler unit tests.
    use super::*;
    use crate::config::HostAddress;
    use crate::state::HostStats;
    use std::sync::Arc;

    /// `weights.len()` up hosts named h0, h1, … with these weights.
    pub fn hosts(weights: &[u32]) -> Hosts {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| {
                let name: Arc<str> = Arc::from(format!("h{i}"));
                HostSnapshot {
                    id: HostId(i as u64),
                    place: crate::state::HostPlace::new("s", "g", &name),
                    name,
                    address: HostAddress {
                        host: "127.0.0.1".into(),
                        port: 1000 + i as u16,
                    },
                    weight,
                    maxconn: 0,
                    proxy_protocol: None,
                    tls: None,
                    stats: HostStats::new(),
                }
            })
            .collect()
    }

    /// How often each host is picked in `n` picks.
    pub fn histogram(s: &dyn Scheduler, hosts: &Hosts, n: usize) -> Vec<usize> {
        let mut counts = vec![0; hosts.len()];
        for _ in 0..n {
            let i = s.pick(&Candidates::new(hosts, &[], None)).expect("a host");
            counts[i] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn candidates_skip_bad_admin_down_and_tried_and_never_repeat() {
        let h = hosts(&[1, 1, 1, 1]);
        h[1].stats.mark_bad("x");
        h[2].stats.set_admin_down(true);
        let tried = [h[3].id];
        let c = Candidates::new(&h, &tried, None);
        assert_eq!(c.from(2).collect::<Vec<_>>(), vec![0]);
        let c = Candidates::new(&h, &[], None);
        assert_eq!(c.from(1).collect::<Vec<_>>(), vec![3, 0]);
        assert_eq!(
            Candidates::new(&Hosts::default(), &[], None)
                .from(7)
                .count(),
            0
        );
    }

    #[test]
    fn no_scheduler_picks_an_unavailable_host() {
        let h = hosts(&[1, 3, 1]);
        h[0].stats.mark_bad("x");
        h[2].stats.set_admin_down(true);
        for kind in SchedulerKind::ALL {
            let s = build(kind, &h);
            for _ in 0..200 {
                assert_eq!(s.pick(&Candidates::new(&h, &[], None)), Some(1), "{kind}");
            }
            let tried = [h[1].id];
            assert_eq!(s.pick(&Candidates::new(&h, &tried, None)), None, "{kind}");
        }
    }
}
