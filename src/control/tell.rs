//! The events a change makes: what it added, removed or changed, found by
//! comparing the running configuration with the next one where the change can
//! have touched it (a host added to a group is told as it is: no walk at all).

use std::collections::HashMap;

use super::build::{ByName, Touched};
use crate::config::{Config, GroupConfig, HostConfig};
use crate::events::Event;
use crate::state::HostSnapshot;

/// Connections still open on hosts that left, by (service, group, host).
type Draining<'a> = HashMap<(&'a str, &'a str, &'a str), u64>;

/// What `after` adds, removes and changes against `before`, in that order per
/// service. `removed` are the hosts that left with connections still open.
pub(super) fn changes<'a>(
    before: &'a Config,
    after: &'a Config,
    touched: &Touched<'_>,
    removed: &[(std::sync::Arc<str>, std::sync::Arc<str>, HostSnapshot)],
) -> Vec<Event> {
    let mut draining = Draining::new();
    for (service, group, host) in removed {
        *draining.entry((service, group, &host.name)).or_default() += host.stats.open();
    }
    let mut events = Vec::new();
    let mut old_services = ByName::new(&before.services, |s| &s.name);
    for (position, service) in after.services.iter().enumerate() {
        let Some(was) = old_services
            .take(position, &service.name)
            .map(|i| &before.services[i])
        else {
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
        let mut old_groups = ByName::new(&was.groups, |g| &g.name);
        for (position, group) in service.groups.iter().enumerate() {
            match old_groups
                .take(position, &group.name)
                .map(|i| &was.groups[i])
            {
                None => events.push(Event::GroupAdded {
                    service: service.name.clone(),
                    group: group.name.clone(),
                }),
                Some(old_group) if touched.may_differ(&service.name, old_group, group) => {
                    match touched {
                        Touched::HostAdded { host, .. } => events.push(Event::HostAdded {
                            service: service.name.clone(),
                            group: group.name.clone(),
                            host: host.name.clone(),
                            address: host.address.to_string(),
                        }),
                        _ => group_changes(&service.name, old_group, group, &draining, &mut events),
                    }
                }
                Some(_) => {}
            }
        }
        for group in old_groups.left().map(|i| &was.groups[i]) {
            events.push(Event::GroupRemoved {
                service: service.name.clone(),
                group: group.name.clone(),
            });
        }
    }
    for service in old_services.left().map(|i| &before.services[i]) {
        events.push(Event::ServiceRemoved {
            service: service.name.clone(),
        });
    }
    let users = |c: &'a Config| c.admin.as_ref().map_or(&[][..], |a| &a.users[..]);
    let (users_before, users_after) = (users(before), users(after));
    let mut old_users = ByName::new(users_before, |u| &u.name);
    for (position, user) in users_after.iter().enumerate() {
        if old_users.take(position, &user.name).is_none() {
            events.push(Event::UserAdded {
                user: user.name.clone(),
            });
        }
    }
    for user in old_users.left().map(|i| &users_before[i]) {
        events.push(Event::UserRemoved {
            user: user.name.clone(),
        });
    }
    events
}

/// The scheduler and host changes of one group present before and after.
fn group_changes(
    service: &str,
    before: &GroupConfig,
    after: &GroupConfig,
    draining: &Draining<'_>,
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
    let old_hosts: Vec<&HostConfig> = before.hosts.iter().collect();
    let mut old = ByName::new(&old_hosts, |h| &h.name);
    for (position, host) in after.hosts.iter().enumerate() {
        match old.take(position, &host.name).map(|i| old_hosts[i]) {
            None => {
                let (service, group) = names();
                events.push(Event::HostAdded {
                    service,
                    group,
                    host: host.name.clone(),
                    address: host.address.to_string(),
                });
            }
            Some(was) if was != host => {
                let (service, group) = names();
                events.push(Event::HostChanged {
                    service,
                    group,
                    host: host.name.clone(),
                });
            }
            Some(_) => {}
        }
    }
    for host in old.left().map(|i| old_hosts[i]) {
        let key = (service, after.name.as_str(), host.name.as_str());
        let open = draining.get(&key).copied().unwrap_or(0);
        let (service, group) = names();
        events.push(Event::HostRemoved {
            service,
            group,
            host: host.name.clone(),
            open,
        });
    }
}
