//! Scheduler names as they appear in configuration files, with their aliases.
//! A setting, so declared with the configuration; [`crate::scheduler`] builds
//! the algorithm each names.

use std::fmt;
use std::str::FromStr;

/// Which algorithm a group uses to pick a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// `rand` (`random`): a uniformly random available host.
    Random,
    /// `roundr` (`roundrobin`): available hosts in turn.
    RoundRobin,
    /// `leastc` (`leastconns`): fewest open connections; ties go to the host whose
    /// last connection closed longest ago.
    LeastConns,
    /// `weightr` (`weighted`, `lweighted`): random, proportional to weight.
    Weighted,
    /// `hash` (`maglev`): client-address affinity by Maglev consistent hashing;
    /// weights decide each host's share of the table. Not in txLoadBalancer.
    Hash,
    /// `p2c` (`twochoices`): of two random available hosts, the one with fewer open
    /// connections. Not in txLoadBalancer.
    PowerOfTwo,
    /// `wleastc` (`wleastconns`): fewest open connections per unit of weight; ties
    /// as `leastc`. Not in txLoadBalancer.
    WeightedLeastConns,
    /// `wrr` (`wroundr`): smooth weighted round robin (nginx's sequence, e.g. weights
    /// 5, 1, 1 give A A B A C A A). Not in txLoadBalancer.
    WeightedRoundRobin,
    /// An application's own scheduler, registered under this name with
    /// [`crate::BalancerBuilder::scheduler`]. Never read from a file.
    Custom(&'static str),
}

impl SchedulerKind {
    /// Every scheduler, in documentation order.
    pub const ALL: [SchedulerKind; 8] = [
        SchedulerKind::Random,
        SchedulerKind::RoundRobin,
        SchedulerKind::LeastConns,
        SchedulerKind::Weighted,
        SchedulerKind::Hash,
        SchedulerKind::PowerOfTwo,
        SchedulerKind::WeightedLeastConns,
        SchedulerKind::WeightedRoundRobin,
    ];

    /// Whether host weights change what this scheduler picks.
    pub fn uses_weight(self) -> bool {
        matches!(
            self,
            SchedulerKind::Weighted
                | SchedulerKind::Hash
                | SchedulerKind::WeightedLeastConns
                | SchedulerKind::WeightedRoundRobin
        )
    }

    /// Whether a group's `slowStart` ramps a returning host's share with this
    /// scheduler. `hash` does not (ramping would move clients between hosts), nor
    /// do txLoadBalancer's `rand`, `roundr` and `leastc`, which keep its behaviour.
    pub fn honours_slow_start(self) -> bool {
        matches!(
            self,
            SchedulerKind::Weighted
                | SchedulerKind::PowerOfTwo
                | SchedulerKind::WeightedLeastConns
                | SchedulerKind::WeightedRoundRobin
        )
    }

    /// The canonical name written back to configuration files.
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Random => "rand",
            SchedulerKind::RoundRobin => "roundr",
            SchedulerKind::LeastConns => "leastc",
            SchedulerKind::Weighted => "weightr",
            SchedulerKind::Hash => "hash",
            SchedulerKind::PowerOfTwo => "p2c",
            SchedulerKind::WeightedLeastConns => "wleastc",
            SchedulerKind::WeightedRoundRobin => "wrr",
            SchedulerKind::Custom(name) => name,
        }
    }

    /// Accepted aliases besides the canonical name.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            SchedulerKind::Random => &["random"],
            SchedulerKind::RoundRobin => &["roundrobin"],
            SchedulerKind::LeastConns => &["leastconns"],
            SchedulerKind::Weighted => &["weighted", "lweighted"],
            SchedulerKind::Hash => &["maglev"],
            SchedulerKind::PowerOfTwo => &["twochoices"],
            SchedulerKind::WeightedLeastConns => &["wleastconns"],
            SchedulerKind::WeightedRoundRobin => &["wroundr"],
            SchedulerKind::Custom(_) => &[],
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for a scheduler name that txlb does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scheduler {name:?} (expected one of: rand, random, roundr, roundrobin, leastc, leastconns, weightr, weighted, lweighted, hash, maglev, p2c, twochoices, wleastc, wleastconns, wrr, wroundr)"
)]
pub struct UnknownScheduler {
    /// The name as written.
    pub name: String,
}

impl FromStr for SchedulerKind {
    type Err = UnknownScheduler;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        SchedulerKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name || kind.aliases().contains(&name))
            .ok_or_else(|| UnknownScheduler {
                name: name.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_round_trip() {
        for kind in SchedulerKind::ALL {
            assert_eq!(kind.name().parse::<SchedulerKind>(), Ok(kind));
            for alias in kind.aliases() {
                assert_eq!(alias.parse::<SchedulerKind>(), Ok(kind));
            }
        }
        assert!("fastest".parse::<SchedulerKind>().is_err());
    }

    #[test]
    fn the_error_lists_every_name() {
        let message = "fastest".parse::<SchedulerKind>().unwrap_err().to_string();
        for kind in SchedulerKind::ALL {
            assert!(message.contains(kind.name()), "{message}");
            for alias in kind.aliases() {
                assert!(message.contains(alias), "{message}");
            }
        }
    }
}
