//! What a new configuration changes against the running one, counted per kind
//! (services, listeners, routes, groups, hosts, users) for the reload's log line: an
//! operator reading "configuration reloaded" wants to know whether it did what
//! they meant. Linear in the size of both configurations.

use std::collections::HashMap;
use std::fmt;

use super::model::{Config, GroupConfig, Listener, Route, ServiceConfig};

/// Added, removed and changed items of one kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Present only in the new configuration.
    pub added: usize,
    /// Present only in the old one.
    pub removed: usize,
    /// Present in both, with different settings.
    pub changed: usize,
}

impl Counts {
    fn is_empty(&self) -> bool {
        *self == Counts::default()
    }

    /// Compares two keyed lists: `same` says whether an item kept its settings.
    fn of<'a, K: std::hash::Hash + Eq, T: 'a>(
        old: impl IntoIterator<Item = (K, &'a T)>,
        new: impl IntoIterator<Item = (K, &'a T)>,
        same: impl Fn(&T, &T) -> bool,
    ) -> Counts {
        let old: HashMap<K, &T> = old.into_iter().collect();
        let mut counts = Counts::default();
        let mut kept = 0;
        for (key, item) in new {
            match old.get(&key) {
                None => counts.added += 1,
                Some(before) => {
                    kept += 1;
                    if !same(before, item) {
                        counts.changed += 1;
                    }
                }
            }
        }
        counts.removed = old.len() - kept;
        counts
    }
}

/// The keyed items of every service of `config`, `items` listing one service's.
fn in_services<'a, I: IntoIterator>(
    config: &'a Config,
    items: impl FnMut(&'a ServiceConfig) -> I,
) -> impl Iterator<Item = I::Item> {
    config.services.iter().flat_map(items)
}

/// What changed between two configurations, by kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Services (a change of its own settings: timeouts, limits, enabled group).
    pub services: Counts,
    /// Listeners, by service and address (their settings and TLS, and the
    /// order of their routes when only that changed; the routes themselves
    /// are counted apart).
    pub listeners: Counts,
    /// Routes, by service, listener and what they say (a route changed is one
    /// removed and one added; never `changed`).
    pub routes: Counts,
    /// Groups, by service and name (scheduler and options; not their hosts).
    pub groups: Counts,
    /// Hosts, by service, group and name.
    pub hosts: Counts,
    /// Admin users, by name.
    pub users: Counts,
    /// Anything else: admin servers, managers, logging, control socket,
    /// fleet, resolver.
    pub other: bool,
}

impl Changes {
    /// Counts what `new` adds, removes and changes against `old`.
    pub fn between<'a>(old: &'a Config, new: &'a Config) -> Changes {
        let services = |c: &'a Config| in_services(c, |s| [(s.name.as_str(), s)]);
        let listeners = |c: &'a Config| {
            in_services(c, |s| {
                s.listeners
                    .iter()
                    .map(move |l| ((s.name.as_str(), l.addr.to_string()), l))
            })
        };
        let routes = |c: &'a Config| {
            in_services(c, |s| {
                s.listeners.iter().flat_map(move |l| {
                    // The same route twice on a listener counts twice.
                    let mut seen: HashMap<&Route, usize> = HashMap::new();
                    l.routes.iter().map(move |r| {
                        let nth = seen.entry(r).or_default();
                        *nth += 1;
                        ((s.name.as_str(), &l.addr, r, *nth), r)
                    })
                })
            })
        };
        let groups = |c: &'a Config| {
            in_services(c, |s| {
                s.groups
                    .iter()
                    .map(move |g| ((s.name.as_str(), g.name.as_str()), g))
            })
        };
        let hosts = |c: &'a Config| {
            in_services(c, |s| {
                s.groups.iter().flat_map(move |g| {
                    g.hosts
                        .iter()
                        .map(move |h| ((s.name.as_str(), g.name.as_str(), h.name.as_str()), h))
                })
            })
        };
        let users = |c: &'a Config| {
            c.admin
                .iter()
                .flat_map(|a| a.users.iter().map(|u| (u.name.as_str(), u)))
        };
        let other = old.admin.as_ref().map(|a| (&a.web, &a.ssh))
            != new.admin.as_ref().map(|a| (&a.web, &a.ssh))
            || old.manager != new.manager
            || old.logging != new.logging
            || old.control != new.control
            || old.cluster != new.cluster
            || old.resolver != new.resolver;
        Changes {
            services: Counts::of(services(old), services(new), same_service),
            listeners: Counts::of(listeners(old), listeners(new), same_listener),
            routes: Counts::of(routes(old), routes(new), |_, _| true),
            groups: Counts::of(groups(old), groups(new), same_group),
            hosts: Counts::of(hosts(old), hosts(new), |a, b| a == b),
            users: Counts::of(users(old), users(new), |a, b| a == b),
            other,
        }
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        [
            self.services,
            self.listeners,
            self.routes,
            self.groups,
            self.hosts,
            self.users,
        ]
        .iter()
        .all(Counts::is_empty)
            && !self.other
    }
}

/// A service's own settings, leaving out its listeners and groups (counted apart).
fn same_service(a: &ServiceConfig, b: &ServiceConfig) -> bool {
    a.enabled_group == b.enabled_group
        && a.connect_timeout == b.connect_timeout
        && a.options == b.options
}

/// A listener's own settings and TLS (its certificates' files and settings),
/// leaving out its routes (counted apart) unless they only moved: the same
/// routes in another order match differently.
fn same_listener(a: &Listener, b: &Listener) -> bool {
    a.options == b.options
        && a.tls == b.tls
        && (a.routes == b.routes || !same_routes(&a.routes, &b.routes))
}

/// Whether two lists hold the same routes, in any order.
fn same_routes(a: &[Route], b: &[Route]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut counts: HashMap<&Route, isize> = HashMap::with_capacity(a.len());
    for r in a {
        *counts.entry(r).or_default() += 1;
    }
    for r in b {
        *counts.entry(r).or_default() -= 1;
    }
    counts.values().all(|&n| n == 0)
}

/// A group's own settings, leaving out its hosts (counted apart).
fn same_group(a: &GroupConfig, b: &GroupConfig) -> bool {
    a.scheduler == b.scheduler && a.options == b.options && a.check == b.check && a.agent == b.agent
}

/// `services +1 ~2, hosts +3 -1` (added, removed, changed; kinds without a
/// change left out), or `no changes`.
impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no changes");
        }
        let mut parts = Vec::new();
        for (kind, counts) in [
            ("services", self.services),
            ("listeners", self.listeners),
            ("routes", self.routes),
            ("groups", self.groups),
            ("hosts", self.hosts),
            ("users", self.users),
        ] {
            if counts.is_empty() {
                continue;
            }
            let mut part = kind.to_string();
            for (sign, n) in [
                ("+", counts.added),
                ("-", counts.removed),
                ("~", counts.changed),
            ] {
                if n > 0 {
                    part.push_str(&format!(" {sign}{n}"));
                }
            }
            parts.push(part);
        }
        if self.other {
            parts.push("other settings changed".into());
        }
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(xml: &str) -> Config {
        Config::from_xml_str(xml).unwrap()
    }

    #[test]
    fn counts_added_removed_and_changed_by_kind() {
        let old = parse(
            r#"<config><service name="a"><listen ip="127.0.0.1:1"/>
               <group name="g" enable="true"><host name="h1" ip="127.0.0.1:9"/>
               <host name="h2" ip="127.0.0.1:10"/></group></service></config>"#,
        );
        assert!(Changes::between(&old, &old).is_empty());
        assert_eq!(Changes::between(&old, &old).to_string(), "no changes");
        let new = parse(
            r#"<config><service name="a"><listen ip="127.0.0.1:1"/>
               <group name="g" scheduler="leastc" enable="true"><host name="h1" ip="127.0.0.1:9" weight="3"/>
               <host name="h3" ip="127.0.0.1:11"/><host name="h4" ip="127.0.0.1:12"/></group></service>
               <service name="b"><listen ip="127.0.0.1:2"/><group name="g" enable="true">
               <host name="x" ip="127.0.0.1:9"/></group></service></config>"#,
        );
        let changes = Changes::between(&old, &new);
        assert_eq!(
            changes.services,
            Counts {
                added: 1,
                removed: 0,
                changed: 0
            }
        );
        assert_eq!(
            changes.groups,
            Counts {
                added: 1,
                removed: 0,
                changed: 1
            }
        );
        assert_eq!(
            changes.hosts,
            Counts {
                added: 3,
                removed: 1,
                changed: 1
            }
        );
        assert_eq!(
            changes.to_string(),
            "services +1, listeners +1, groups +1 ~1, hosts +3 -1 ~1"
        );
        let back = Changes::between(&new, &old);
        assert_eq!(
            back.hosts,
            Counts {
                added: 1,
                removed: 3,
                changed: 1
            }
        );
    }

    #[test]
    fn a_check_added_or_changed_changes_its_group() {
        let config = |check: &str| {
            parse(&format!(
                r#"<config><service name="a"><listen ip="127.0.0.1:1"/>
                   <group name="g" enable="true">{check}<host name="h" ip="127.0.0.1:9"/></group></service></config>"#
            ))
        };
        let none = config("");
        let tcp = config(r#"<check type="tcp"/>"#);
        let http = config(r#"<check type="http" rise="3"/>"#);
        assert_eq!(Changes::between(&none, &tcp).to_string(), "groups ~1");
        assert_eq!(Changes::between(&tcp, &http).to_string(), "groups ~1");
        assert!(Changes::between(&http, &http).is_empty());
    }

    #[test]
    fn routes_counted_apart_from_their_listeners() {
        let config = |routes: &str| {
            parse(&format!(
                r#"<config><service name="edge"><listen ip="127.0.0.1:1">{routes}</listen>
                   <group name="g" enable="true"><host name="h" ip="127.0.0.1:9"/></group></service>
                   <service name="api"><group name="g" enable="true">
                   <host name="a" ip="127.0.0.1:10"/></group></service></config>"#
            ))
        };
        let a = r#"<route sni="a.example.com" service="api"/>"#;
        let b = r#"<route sni="b.example.com" service="api"/>"#;
        let c = r#"<route protocol="ssh" service="api"/>"#;
        let old = config(&format!("{a}{b}"));
        let added = Changes::between(&old, &config(&format!("{a}{c}{b}")));
        assert_eq!(added.to_string(), "routes +1");
        let changed = Changes::between(&old, &config(&format!("{a}{c}")));
        assert_eq!(changed.to_string(), "routes +1 -1");
        // The same routes in another order match differently: the listener changed.
        let moved = Changes::between(&old, &config(&format!("{b}{a}")));
        assert_eq!(moved.to_string(), "listeners ~1");
        assert_eq!(Changes::between(&old, &config("")).routes.removed, 2);
    }
}
