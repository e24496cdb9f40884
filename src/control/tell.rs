//! The events a change makes: what it added, removed or changed, found by
//! comparing the running configuration with the next one where the change can
//! have touched it (a host added walks its group, not the whole balancer).

use std::collections::HashMap;

use super::build::{ByName, Touched};
use crate::config::{Config, GroupConfig, ServiceConfig};
use crate::events::Event;
use crate::state::HostSnapshot;

/// What `after` adds, removes and changes against `before`, in that order per
/// service. `removed` are the hosts that left with connections still open.
pub(super) fn changes(
    before: &Config,
    after: &Config,
    touched: &Touched<'_>,
    removed: &[(std::sync::Arc<str>, std::sync::Arc<str>, HostSnapshot)],
) -> Vec<Event> {
    let mut events = Vec::new();
    let old: HashMap<&str, &ServiceConfig> = before
        .services
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    for service in &after.services {
        let Some(was) = old.get(service.name.as_str()) else {
            events.push(Event::ServiceAdded {
                service: service.name.clone(),
            });
            continue;
        };
        if (was.connect_timeout, &was.options) != (service.connect_timeout, &service.options) {
            events.push(Event::ServiceChanged {
                service: service.name.clone(),
            });
        }
        for group in &service.groups {
            match was.groups.iter().find(|g| g.name == group.name) {
                None => events.push(Event::GroupAdded {
                    service: service.name.clone(),
                    group: group.name.clone(),
                }),
                Some(old_group) if touched.may_differ(&service.name, old_group, group) => {
                    group_changes(&service.name, old_group, group, removed, &mut events);
                }
                Some(_) => {}
            }
        }
        for group in &was.groups {
            if !service.groups.iter().any(|g| g.name == group.name) {
                events.push(Event::GroupRemoved {
                    service: service.name.clone(),
                    group: group.name.clone(),
                });
            }
        }
    }
    for service in &before.services {
        if !after.services.iter().any(|s| s.name == service.name) {
            events.push(Event::ServiceRemoved {
                service: service.name.clone(),
            });
        }
    }
    let users = |c: &Config| -> Vec<String> {
        c.admin
            .iter()
            .flat_map(|a| a.users.iter().map(|u| u.name.clone()))
            .collect()
    };
    let (users_before, users_after) = (users(before), users(after));
    for user in &users_after {
        if !users_before.contains(user) {
            events.push(Event::UserAdded { user: user.clone() });
        }
    }
    for user in users_before {
        if !users_after.contains(&user) {
            events.push(Event::UserRemoved { user });
        }
    }
    events
}

/// The scheduler and host changes of one group present before and after.
fn group_changes(
    service: &str,
    before: &GroupConfig,
    after: &GroupConfig,
    removed: &[(std::sync::Arc<str>, std::sync::Arc<str>, HostSnapshot)],
    events: &mut Vec<Event>,
) {
    let names = || (service.to_string(), after.name.clone());
    if before.scheduler != after.scheduler {
        let (service, group) = names();
        events.push(Event::SchedulerChanged {
            service,
            group,
            scheduler: after.scheduler.name().to_string(),
        });
    }
    let mut old = ByName::new(&before.hosts, |h| &h.name);
    for (position, host) in after.hosts.iter().enumerate() {
        let (service, group) = names();
        match old.take(position, &host.name).map(|i| &before.hosts[i]) {
            None => events.push(Event::HostAdded {
                service,
                group,
                host: host.name.clone(),
                address: host.address.to_string(),
            }),
            Some(was) if was != host => events.push(Event::HostChanged {
                service,
                group,
                host: host.name.clone(),
            }),
            Some(_) => {}
        }
    }
    for host in old.left().map(|i| &before.hosts[i]) {
        let open = removed
            .iter()
            .filter(|(s, g, h)| **s == *service && **g == *after.name && *h.name == *host.name)
            .map(|(_, _, h)| h.stats.open())
            .sum();
        let (service, group) = names();
        events.push(Event::HostRemoved {
            service,
            group,
            host: host.name.clone(),
            open,
        });
    }
}
