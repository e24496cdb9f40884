//! A listener's routes compiled for look-up: indexed by the name, ALPN
//! protocol or client protocol they require, so that finding a client's route
//! costs a few hash look-ups however many routes there are.

use hashbrown::HashMap;

use crate::config::{ClientProtocol, Route};

use super::seen::Seen;

/// A name condition (`sni` or `host`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// This name.
    Exact(Box<str>),
    /// `*.SUFFIX`: one or more labels under SUFFIX.
    Under(Box<str>),
    /// `*`: any name, but a name.
    Any,
}

impl Pattern {
    fn new(text: &str) -> Pattern {
        let text = text.to_ascii_lowercase();
        let text = text.strip_suffix('.').unwrap_or(&text);
        if text == "*" {
            Pattern::Any
        } else if let Some(suffix) = text.strip_prefix("*.") {
            Pattern::Under(suffix.into())
        } else {
            // An IPv6 Host is kept without brackets.
            let text = text
                .strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .unwrap_or(text);
            Pattern::Exact(text.into())
        }
    }

    fn matches(&self, name: Option<&str>) -> bool {
        let Some(name) = name else {
            return false;
        };
        match self {
            Pattern::Exact(exact) => **exact == *name,
            Pattern::Under(suffix) => {
                name.len() > suffix.len() + 1
                    && name.ends_with(&**suffix)
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
            }
            Pattern::Any => true,
        }
    }
}

/// One route's conditions.
#[derive(Debug, Clone)]
struct Conditions {
    sni: Option<Pattern>,
    alpn: Option<Box<str>>,
    protocol: Option<ClientProtocol>,
    host: Option<Pattern>,
}

impl Conditions {
    fn matches(&self, seen: &Seen, sni: Option<&str>, host: Option<&str>) -> bool {
        self.sni.as_ref().is_none_or(|p| p.matches(sni))
            && self.host.as_ref().is_none_or(|p| p.matches(host))
            && self.protocol.is_none_or(|p| p == seen.protocol)
            && self
                .alpn
                .as_ref()
                .is_none_or(|a| seen.alpn.iter().any(|offered| offered == a))
    }
}

/// Route indices (each list in configuration order) under one key: those
/// without an `alpn` condition, and those with one by their protocol.
#[derive(Debug, Clone, Default)]
struct Bucket {
    plain: Vec<u32>,
    by_alpn: HashMap<Box<str>, Vec<u32>>,
}

impl Bucket {
    fn add(&mut self, alpn: Option<&str>, index: u32) {
        match alpn {
            None => self.plain.push(index),
            Some(alpn) => self.by_alpn.entry(alpn.into()).or_default().push(index),
        }
    }

    /// The lists that may hold routes for a client offering `alpn`.
    fn lists<'a>(&'a self, alpn: &'a [Box<str>]) -> impl Iterator<Item = &'a [u32]> + 'a {
        let offered = alpn
            .iter()
            .take(if self.by_alpn.is_empty() {
                0
            } else {
                alpn.len()
            })
            .filter_map(|a| self.by_alpn.get(a));
        std::iter::once(&self.plain)
            .chain(offered)
            .map(Vec::as_slice)
    }
}

/// Route indices by a name: the exact names, the suffixes of `*.SUFFIX`, and
/// `*`.
#[derive(Debug, Clone, Default)]
struct Names {
    exact: HashMap<Box<str>, Bucket>,
    under: HashMap<Box<str>, Bucket>,
    any: Bucket,
    /// Labels of the shortest and longest suffix in `under`: a client's
    /// parent names outside this range are not looked up, so a name of a
    /// hundred labels costs no more than one of three.
    under_labels: (usize, usize),
}

fn labels(name: &str) -> usize {
    name.bytes().filter(|&b| b == b'.').count() + 1
}

impl Names {
    fn add(&mut self, pattern: &Pattern, alpn: Option<&str>, index: u32) {
        let bucket = match pattern {
            Pattern::Exact(name) => self.exact.entry(name.clone()).or_default(),
            Pattern::Under(suffix) => {
                let n = labels(suffix);
                self.under_labels = if self.under.is_empty() {
                    (n, n)
                } else {
                    (self.under_labels.0.min(n), self.under_labels.1.max(n))
                };
                self.under.entry(suffix.clone()).or_default()
            }
            Pattern::Any => &mut self.any,
        };
        bucket.add(alpn, index);
    }

    /// The buckets that may hold routes for `name`: its own, those of its
    /// parents with as many labels as a configured suffix, and `*`'s.
    fn buckets<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Bucket> + 'a {
        let (fewest, most) = self.under_labels;
        let all = labels(name);
        let parents = name
            .match_indices('.')
            .take(if self.under.is_empty() { 0 } else { all })
            .enumerate()
            // After the (i+1)-th dot: all - i - 1 labels.
            .filter(move |&(i, _)| (fewest..=most).contains(&(all - i - 1)))
            .filter_map(|(_, (dot, _))| self.under.get(&name[dot + 1..]));
        self.exact
            .get(name)
            .into_iter()
            .chain(parents)
            .chain(std::iter::once(&self.any))
    }
}

/// The compiled routes of one listener.
///
/// Each route is indexed once, by its most selective condition (its `sni`,
/// else its `host`, else its `alpn`, else its `protocol`) and, under a name,
/// by its `alpn`. [`find`](Self::find) looks up the client's own keys (its
/// name and the parent domains a configured wildcard could match, each ALPN
/// protocol it offers, its protocol) and checks the routes listed there in
/// configuration order, stopping at the first match of each list and
/// skipping routes after the best so far. Routes whose conditions contradict
/// each other (`sni` or `alpn` with a protocol other than `tls`, `host` with
/// one other than `http`, `host` with `sni` or `alpn`) match no client the
/// sniffer describes and are left out, so the first route of a list matches
/// (but for its protocol): the cost depends on the client's name and offers,
/// not on how many routes there are.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Conditions>,
    sni: Names,
    host: Names,
    alpn: HashMap<Box<str>, Vec<u32>>,
    protocol: [Vec<u32>; ClientProtocol::ALL.len()],
    /// Routes without a condition, which the configuration refuses: they
    /// match every client.
    any: Vec<u32>,
}

fn protocol_index(protocol: ClientProtocol) -> usize {
    ClientProtocol::ALL
        .iter()
        .position(|&p| p == protocol)
        .unwrap_or_default()
}

impl Conditions {
    /// Whether a client the sniffer describes could match: TLS alone has an
    /// SNI and ALPN, HTTP alone a Host.
    fn possible(&self) -> bool {
        let tls = self.sni.is_some() || self.alpn.is_some();
        let http = self.host.is_some();
        !(tls && http)
            && self.protocol.is_none_or(|p| {
                (!tls || p == ClientProtocol::Tls) && (!http || p == ClientProtocol::Http)
            })
    }
}

impl RouteTable {
    /// Compiles a listener's routes, in configuration order.
    pub fn new(routes: &[Route]) -> RouteTable {
        let mut table = RouteTable::default();
        for (index, route) in routes.iter().enumerate() {
            let Ok(index) = u32::try_from(index) else {
                break;
            };
            let conditions = Conditions {
                sni: route.sni.as_deref().map(Pattern::new),
                alpn: route.alpn.as_deref().map(Box::from),
                protocol: route.protocol,
                host: route.host.as_deref().map(Pattern::new),
            };
            let alpn = conditions.alpn.as_deref();
            if !conditions.possible() {
                // Never matches: kept for its index only.
            } else if let Some(sni) = &conditions.sni {
                table.sni.add(sni, alpn, index);
            } else if let Some(host) = &conditions.host {
                table.host.add(host, alpn, index);
            } else if let Some(alpn) = alpn {
                table.alpn.entry(alpn.into()).or_default().push(index);
            } else if let Some(protocol) = conditions.protocol {
                table.protocol[protocol_index(protocol)].push(index);
            } else {
                table.any.push(index);
            }
            table.routes.push(conditions);
        }
        table
    }

    /// Index (into the routes given to [`new`](Self::new)) of the first route,
    /// in order, whose every condition `seen` matches.
    pub fn find(&self, seen: &Seen) -> Option<usize> {
        // Names from the sniffer are lower case already; others are made so.
        let sni = seen.sni.as_deref().map(lower_case);
        let host = seen.host.as_deref().map(lower_case);
        let sni = sni.as_deref();
        let host = host.as_deref();
        let mut best = u32::MAX;
        let mut consider = |list: &[u32]| {
            for &index in list {
                if index >= best {
                    break;
                }
                if self.routes[index as usize].matches(seen, sni, host) {
                    best = index;
                    break;
                }
            }
        };
        for (names, name) in [(&self.sni, sni), (&self.host, host)] {
            if let Some(name) = name {
                for bucket in names.buckets(name) {
                    bucket.lists(&seen.alpn).for_each(&mut consider);
                }
            }
        }
        if !self.alpn.is_empty() {
            for offered in &seen.alpn {
                if let Some(list) = self.alpn.get(offered) {
                    consider(list);
                }
            }
        }
        consider(&self.protocol[protocol_index(seen.protocol)]);
        consider(&self.any);
        (best != u32::MAX).then_some(best as usize)
    }
}

/// `name` in lower case, borrowed when it already is.
fn lower_case(name: &str) -> std::borrow::Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        name.to_ascii_lowercase().into()
    } else {
        name.into()
    }
}
