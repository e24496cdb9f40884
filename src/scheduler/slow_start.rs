//! `slowStart`: a host that comes back into rotation ramps its share up over a
//! period instead of taking a full share at once.
//!
//! A host's share grows linearly with the time since it came back
//! ([`HostStats::up_since`]: created, marked up after bad, or admin-up), from
//! [`FLOOR`] / [`SCALE`] to the whole of its weight at the end of the period.
//! Schedulers that honour it ([`SchedulerKind::honours_slow_start`]) first ask
//! [`SlowStart::now`]: while no host of any group came back since the last ramp
//! ended (the usual case) it answers `None` after two atomic loads, without
//! reading the clock, and the pick takes its fast path.
//!
//! [`SchedulerKind::honours_slow_start`]: super::SchedulerKind::honours_slow_start

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::state::{HostStats, Hosts, clock_nanos, last_came_up, scaled_hosts};

/// Shares are counted in 1/`SCALE` of a host's weight.
pub const SCALE: u64 = 1024;

/// The share (in 1/[`SCALE`]) of a host that just came back: about 3%.
pub const FLOOR: u64 = 32;

/// A group's slow-start period.
#[derive(Debug)]
pub struct SlowStart {
    /// The period in nanoseconds (> 0).
    period: u64,
    /// The [`last_came_up`] value whose ramp is known to be over: while it has not
    /// moved, no host can be ramping and the clock need not be read. Written by
    /// picks that find a ramp over (a racy store only costs a clock read).
    quiet: AtomicU64,
    /// The earliest `up_since` among the group's hosts when the scheduler was
    /// built: no host's share can exceed that host's (hosts only come back
    /// later), so random schedulers admit a ramping host with probability
    /// share / that share. When the whole group ramps together (at start) that
    /// ratio is about 1 and picks stay O(1).
    settled: u64,
}

impl PartialEq for SlowStart {
    fn eq(&self, other: &Self) -> bool {
        self.period == other.period
    }
}

impl SlowStart {
    /// The ramp for `period`; `None` when the period is absent or zero.
    pub fn new(period: Option<Duration>) -> Option<Self> {
        let period = u64::try_from(period?.as_nanos()).unwrap_or(u64::MAX);
        (period > 0).then_some(SlowStart {
            period,
            quiet: AtomicU64::new(u64::MAX),
            settled: 0,
        })
    }

    /// No ramp, only the agents' weights (`<agent>`'s `NN%`): a group
    /// without `slowStart`. [`SlowStart::now`] answers `None` after one
    /// atomic load while no host anywhere has a scaled weight.
    pub fn agents_only() -> Self {
        SlowStart {
            period: 0,
            quiet: AtomicU64::new(u64::MAX),
            settled: 0,
        }
    }

    /// Notes when the group's longest-up host came back: its share bounds every
    /// host's, and random schedulers admit a ramping host relative to it.
    pub fn for_hosts(mut self, hosts: &Hosts) -> Self {
        if self.period == 0 {
            // No ramp: nothing to bound (and a host added to a big group
            // costs no walk over the others).
            return self;
        }
        self.settled = hosts.iter().map(|h| h.stats.up_since()).min().unwrap_or(0);
        self
    }

    /// The ramp as of now, or `None` when no host anywhere came back within the
    /// period (every host then has its full weight).
    #[inline]
    pub fn now(&self) -> Option<Ramp> {
        // Shares scaled by agents, without a ramp: every host's time share
        // is whole (period 0).
        let scaled = scaled_hosts() > 0;
        let whole = Ramp {
            now: 0,
            period: 0,
            ceiling: SCALE,
            scaled,
        };
        if self.period == 0 {
            return scaled.then_some(whole);
        }
        let last = last_came_up();
        if last == self.quiet.load(Relaxed) {
            return scaled.then_some(whole);
        }
        let now = clock_nanos();
        if now.saturating_sub(last) >= self.period {
            self.quiet.store(last, Relaxed);
            scaled.then_some(whole)
        } else {
            let mut ramp = Ramp {
                now,
                period: self.period,
                ceiling: SCALE,
                scaled,
            };
            ramp.ceiling = ramp.share_at(self.settled);
            Some(ramp)
        }
    }
}

impl SlowStart {
    /// Whether, at `ramp`, hosts of a group whose latest come-back was at `newest`
    /// may have different shares: one came back within the period, and not
    /// together with the rest (all within one share unit of the longest-up host
    /// at build).
    #[inline]
    pub fn uneven(&self, ramp: &Ramp, newest: u64) -> bool {
        ramp.scaled
            || ramp.now.saturating_sub(newest) < self.period
                && newest.saturating_sub(self.settled) >= self.period / SCALE
    }
}

/// Slow start at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Ramp {
    now: u64,
    period: u64,
    /// The largest share any host of the group can have now.
    ceiling: u64,
    /// Some host (in any group) has an agent weight below 100%: shares are
    /// scaled by it.
    scaled: bool,
}

impl Ramp {
    /// The share of its weight `stats`' host gets now, in 1/`SCALE`:
    /// `FLOOR..=SCALE`.
    #[inline]
    pub fn share(&self, stats: &HostStats) -> u64 {
        let share = self.share_at(stats.up_since());
        if self.scaled {
            share * stats.agent_share(SCALE) / SCALE
        } else {
            share
        }
    }

    /// The share of a host that came back at `up_since`.
    #[inline]
    fn share_at(&self, up_since: u64) -> u64 {
        let age = self.now.saturating_sub(up_since);
        if age >= self.period {
            SCALE
        } else {
            let linear = u128::from(age) * u128::from(SCALE) / u128::from(self.period);
            (linear as u64).max(FLOOR)
        }
    }

    /// True with probability share / (the largest share in the group): random
    /// schedulers draw a host by weight, then keep a ramping host only this
    /// often, which makes the draw proportional to weight × share.
    #[inline]
    pub fn admits(&self, stats: &HostStats) -> bool {
        let share = self.share(stats);
        share >= self.ceiling || fastrand::u64(..self.ceiling) < share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_or_zero_period_means_no_ramp() {
        assert_eq!(SlowStart::new(None), None);
        assert_eq!(SlowStart::new(Some(Duration::ZERO)), None);
        assert!(SlowStart::new(Some(Duration::from_secs(1))).is_some());
    }

    #[test]
    fn share_grows_from_the_floor_to_full() {
        let stats = HostStats::new();
        let up = stats.up_since();
        let period = 1_000_000_000;
        let at = |age: u64| {
            Ramp {
                now: up + age,
                period,
                ceiling: SCALE,
                scaled: false,
            }
            .share(&stats)
        };
        assert_eq!(at(0), FLOOR);
        assert_eq!(at(period / 2), SCALE / 2);
        assert_eq!(at(period * 3 / 4), SCALE * 3 / 4);
        assert_eq!(at(period), SCALE);
        assert_eq!(at(u64::MAX - up), SCALE);
        // A clock read before up_since (another thread stored it later) is age 0.
        let early = Ramp {
            now: 1,
            period,
            ceiling: SCALE,
            scaled: false,
        };
        assert_eq!(early.share(&stats), FLOOR);
    }

    #[test]
    fn a_group_ramping_together_is_admitted_at_once() {
        let hosts = super::super::testing::hosts(&[1, 1, 1]);
        let slow = SlowStart::new(Some(Duration::from_secs(3600)))
            .unwrap()
            .for_hosts(&hosts);
        let ramp = slow.now().unwrap();
        // Created within microseconds of each other: all at the floor share,
        // and that floor is the ceiling.
        assert_eq!(ramp.ceiling, FLOOR);
        for h in &hosts {
            assert!(ramp.admits(&h.stats));
        }
    }

    #[test]
    fn a_fresh_host_opens_the_window() {
        let slow = SlowStart::new(Some(Duration::from_secs(3600))).unwrap();
        let _fresh = HostStats::new();
        assert!(slow.now().is_some());
        assert!(slow.now().is_some(), "still open");
    }
}
