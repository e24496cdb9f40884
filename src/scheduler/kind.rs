//! Scheduler names as they appear in configuration files, with their aliases.

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
}

impl SchedulerKind {
    /// Every scheduler, in documentation order.
    pub const ALL: [SchedulerKind; 4] = [
        SchedulerKind::Random,
        SchedulerKind::RoundRobin,
        SchedulerKind::LeastConns,
        SchedulerKind::Weighted,
    ];

    /// The canonical name written back to configuration files.
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Random => "rand",
            SchedulerKind::RoundRobin => "roundr",
            SchedulerKind::LeastConns => "leastc",
            SchedulerKind::Weighted => "weightr",
        }
    }

    /// Accepted aliases besides the canonical name.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            SchedulerKind::Random => &["random"],
            SchedulerKind::RoundRobin => &["roundrobin"],
            SchedulerKind::LeastConns => &["leastconns"],
            SchedulerKind::Weighted => &["weighted", "lweighted"],
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
    "unknown scheduler {name:?} (expected one of: rand, random, roundr, roundrobin, leastc, leastconns, weightr, weighted, lweighted)"
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
}
