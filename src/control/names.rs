//! Following host names: the re-resolution task, and what the controller does
//! with answers (hosts that follow one address move; hosts expanded from a name
//! are rebuilt). Beside the controller, not inside its apply: `dns` resolves,
//! this file decides what an answer changes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Instant;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{ControlState, Controller, Touched};
use crate::config::{HostAddress, HostConfig};
use crate::dns::{Answer, IDLE_RECHECK, NameState, Resolver};
use crate::events::Events;
use crate::state::HostStats;

/// Re-resolves names as their answers run out, until `shutdown` (or until the
/// balancer is dropped without one).
pub(crate) async fn run(controller: Weak<Controller>, shutdown: CancellationToken) {
    loop {
        let Some(strong) = controller.upgrade() else {
            break;
        };
        let (due, resolver, next) = strong.dns_due(Instant::now());
        drop(strong);
        if !due.is_empty() {
            let mut lookups = JoinSet::new();
            for name in due {
                let resolver = resolver.clone();
                lookups.spawn(async move {
                    let result = resolver.lookup(&name).await;
                    (name, result)
                });
            }
            let answers = tokio::select! {
                _ = shutdown.cancelled() => break,
                answers = lookups.join_all() => answers,
            };
            if let Some(controller) = controller.upgrade() {
                controller.dns_answers(&resolver, answers, Instant::now());
            }
            continue;
        }
        let pause = next
            .map_or(IDLE_RECHECK, |at| {
                at.saturating_duration_since(Instant::now())
            })
            .min(IDLE_RECHECK);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
    tracing::debug!("re-resolution stopped");
}

impl Controller {
    /// Names due for a new look-up at `now`, the resolver to ask, and when the
    /// next one is due otherwise.
    pub(crate) fn dns_due(
        &self,
        now: std::time::Instant,
    ) -> (Vec<String>, Arc<Resolver>, Option<std::time::Instant>) {
        let mut state = self.lock();
        let intervals = state.intervals.clone();
        state.names.retain(|name, _| intervals.contains_key(name));
        let mut due = Vec::new();
        let mut next: Option<std::time::Instant> = None;
        for name in intervals.keys() {
            let known = state
                .names
                .entry(name.clone())
                .or_insert_with(|| NameState::new(now));
            if known.next <= now {
                due.push(name.clone());
            } else {
                next = Some(next.map_or(known.next, |n| n.min(known.next)));
            }
        }
        (due, state.resolver.clone(), next)
    }

    /// Applies new answers from `resolver`: hosts that follow one address move
    /// (their stats' address), hosts expanded from a name whose addresses
    /// changed are rebuilt in a new snapshot.
    pub(crate) fn dns_answers(
        &self,
        resolver: &Arc<Resolver>,
        answers: Vec<(String, Result<Answer, String>)>,
        now: std::time::Instant,
    ) {
        let mut state = self.lock();
        if !Arc::ptr_eq(resolver, &state.resolver) {
            // A reload changed the settings meanwhile: ask again with the new ones.
            return;
        }
        let intervals = state.intervals.clone();
        let mut rebuild = false;
        for (name, result) in answers {
            let Some(interval) = intervals.get(&name).copied() else {
                continue; // no host uses it any more
            };
            let known = state
                .names
                .entry(name.clone())
                .or_insert_with(|| NameState::new(now));
            if !known.record(&name, result, resolver.options(), interval, now) {
                continue;
            }
            self.follow_name(&state, &name);
            rebuild |= state
                .running
                .services
                .iter()
                .flat_map(|s| &s.groups)
                .flat_map(|g| &g.hosts)
                .any(|h| h.options.expand && h.address.host == name);
        }
        if rebuild {
            let running = state.running.clone();
            let snapshot = self.build_snapshot(&mut state, &running, &Touched::All);
            self.data.snapshots.store(Arc::new(snapshot));
            self.publish(&state);
        }
    }

    /// Points every host that follows one address of `name` at its address now.
    pub(super) fn follow_name(&self, state: &ControlState, name: &str) {
        let Some(known) = state.names.get(name) else {
            return;
        };
        // The snapshot was built from the running configuration: they line up.
        let snapshot = self.data.snapshots.load();
        for (service, running) in state.running.services.iter().zip(snapshot.services()) {
            for (group, running) in service.groups.iter().zip(&running.groups) {
                let mut followers = group
                    .hosts
                    .iter()
                    .filter(|h| h.address.host == name && !h.options.expand)
                    .peekable();
                if followers.peek().is_none() {
                    continue;
                }
                let stats: HashMap<&str, &Arc<HostStats>> =
                    running.hosts.iter().map(|h| (&*h.name, &h.stats)).collect();
                for host in followers {
                    let Some(stats) = stats.get(host.name.as_str()) else {
                        continue;
                    };
                    let Some(ip) = known.pick(stats.resolved().map(|a| a.ip())) else {
                        continue;
                    };
                    let addr = SocketAddr::new(ip, host.address.port);
                    if stats.set_resolved(Some(addr)) {
                        tracing::info!(service = %service.name, group = %group.name, host = %host.name, address = %host.address, resolved = %addr, "host follows its name to a new address");
                        // A new address deserves a fresh chance.
                        if stats.mark_up() {
                            self.data
                                .events
                                .host_back(&service.name, &group.name, &host.name);
                        }
                    }
                }
            }
        }
    }
}

/// The hosts a configured host stands for, as (name, address): itself, or with
/// `expand` one per address its name resolves to, named `NAME@ADDRESS` (itself,
/// bad, while the name has never resolved).
pub(super) fn expand<'c>(
    host: &'c HostConfig,
    names: &HashMap<String, NameState>,
) -> impl Iterator<Item = (Cow<'c, str>, Cow<'c, HostAddress>)> {
    let known = match host.options.expand {
        true => names
            .get(&host.address.host)
            .filter(|known| !known.addrs.is_empty()),
        false => None,
    };
    // No allocation for a host that stands for itself (nearly all of them).
    let itself = known.is_none().then_some({
        (
            Cow::Borrowed(host.name.as_str()),
            Cow::Borrowed(&host.address),
        )
    });
    let expanded: Vec<_> = known
        .iter()
        .flat_map(|known| &known.addrs)
        .map(|ip| {
            let address = HostAddress {
                host: ip.to_string(),
                port: host.address.port,
            };
            (
                Cow::Owned(format!("{}@{ip}", host.name)),
                Cow::Owned(address),
            )
        })
        .collect();
    itself.into_iter().chain(expanded)
}

/// Records a host's new address: resolved now, or bad with the resolver's reason.
pub(super) fn set_address(
    (service, group, host): (&str, &str, &str),
    address: &HostAddress,
    stats: &HostStats,
    names: &HashMap<String, NameState>,
    events: &Events,
) {
    let result = match address.host.parse() {
        Ok(ip) => Ok(SocketAddr::new(ip, address.port)),
        Err(_) => match names.get(&address.host) {
            Some(known) => known
                .pick(stats.resolved().map(|a| a.ip()))
                .map(|ip| SocketAddr::new(ip, address.port))
                .ok_or_else(|| {
                    known
                        .error
                        .clone()
                        .unwrap_or_else(|| format!("name {:?} has no address", address.host))
                }),
            None => Err(format!("name {:?} was not resolved", address.host)),
        },
    };
    match result {
        Ok(addr) => {
            stats.set_resolved(Some(addr));
            // A new address deserves a fresh chance.
            if stats.mark_up() {
                events.host_back(service, group, host);
            }
        }
        Err(reason) => {
            stats.set_resolved(None);
            if stats.mark_bad(reason.clone()) {
                events.host_bad(service, group, host, &reason);
            }
        }
    }
}
