//! Host names: resolved with hickory-resolver (the system's name servers, or those
//! of `<resolver nameserver=…>`), and re-resolved off the data path whenever their
//! answer runs out: the record's TTL kept within `minTtl`..`maxTtl`, or a host's
//! own `resolve` interval.
//!
//! The controller keeps what is known of each name ([`NameState`]) and applies
//! every new answer like any other change: a host given by name follows its first
//! address (its stats' resolved address, a store of one atomic pointer), and a
//! host with `expand="true"` becomes one host per address in a new snapshot.
//! Established connections keep the address they connected to. A name that stops
//! resolving keeps its last known addresses; the failure is logged at most once a
//! minute per name.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RecordType;

use crate::config::{Config, HostAddress, HostConfig, ResolverOptions};

/// Longest wait for one look-up (every name server and attempt included).
pub(crate) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest sleep of the re-resolution task: names added by a change are
/// scheduled by then even when no answer runs out sooner.
pub(crate) const IDLE_RECHECK: Duration = Duration::from_secs(1);
/// Most one warning per name about failed look-ups, per this period.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// An answer: the name's addresses (IPv4 first) and how long it may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// Addresses, as the name server ordered them within each family.
    pub addrs: Vec<IpAddr>,
    /// The record's remaining TTL (not yet kept within the floor and ceiling).
    pub ttl: Duration,
}

/// A resolver built from one `<resolver>` setting.
pub(crate) struct Resolver {
    options: ResolverOptions,
    /// `None`: the system's configuration could not be read; the system's
    /// own resolver (getaddrinfo) answers, without TTLs.
    hickory: Option<TokioResolver>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("options", &self.options)
            .field("hickory", &self.hickory.is_some())
            .finish()
    }
}

impl Resolver {
    /// A resolver asking `options.nameservers`, or the system's name servers.
    pub(crate) fn new(options: &ResolverOptions) -> Resolver {
        let builder = if options.nameservers.is_empty() {
            match TokioResolver::builder_tokio() {
                Ok(builder) => Some(builder),
                Err(error) => {
                    tracing::warn!(%error, "cannot read the system's resolver configuration: names are resolved by the system, without TTLs");
                    None
                }
            }
        } else {
            let servers = options
                .nameservers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            Some(TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            ))
        };
        let hickory = builder.and_then(|mut builder| {
            let opts = builder.options_mut();
            // IPv4 first, as the system resolver orders them on most hosts, and
            // /etc/hosts before DNS, as glibc's "files dns".
            opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
            opts.use_hosts_file = ResolveHosts::Always;
            opts.timeout = Duration::from_secs(2);
            opts.attempts = 2;
            match builder.build() {
                Ok(resolver) => Some(resolver),
                Err(error) => {
                    tracing::warn!(%error, "cannot build the resolver: names are resolved by the system, without TTLs");
                    None
                }
            }
        });
        Resolver {
            options: options.clone(),
            hickory,
        }
    }

    /// The settings this resolver was built from.
    pub(crate) fn options(&self) -> &ResolverOptions {
        &self.options
    }

    /// Asks for `name`'s addresses now (never from a cache), or says why not.
    pub(crate) async fn lookup(&self, name: &str) -> Result<Answer, String> {
        let answer = tokio::time::timeout(LOOKUP_TIMEOUT, self.ask(name))
            .await
            .map_err(|_| format!("name {name:?} did not resolve within {LOOKUP_TIMEOUT:?}"))??;
        if answer.addrs.is_empty() {
            return Err(format!("name {name:?} has no address"));
        }
        Ok(answer)
    }

    async fn ask(&self, name: &str) -> Result<Answer, String> {
        let Some(resolver) = &self.hickory else {
            let found = tokio::net::lookup_host((name, 0))
                .await
                .map_err(|e| format!("name {name:?} does not resolve: {e}"))?;
            let mut addrs: Vec<IpAddr> = Vec::new();
            for addr in found {
                if !addrs.contains(&addr.ip()) {
                    addrs.push(addr.ip());
                }
            }
            // No TTL known: the ceiling, kept within the bounds later.
            return Ok(Answer {
                addrs,
                ttl: self.options.max_ttl,
            });
        };
        // Our own schedule decides when to ask again: a cached answer would hide
        // a change made before the cached TTL ran out.
        for kind in [RecordType::A, RecordType::AAAA] {
            resolver.clear_lookup_cache(name, kind);
        }
        let answer = resolver
            .lookup_ip(name)
            .await
            .map_err(|e| lookup_failure(name, &e))?;
        let ttl = answer
            .valid_until()
            .saturating_duration_since(Instant::now());
        let mut addrs: Vec<IpAddr> = Vec::new();
        for ip in answer.iter() {
            if !addrs.contains(&ip) {
                addrs.push(ip);
            }
        }
        Ok(Answer { addrs, ttl })
    }
}

impl Config {
    /// Every address `address` resolves to, asked now the way this
    /// configuration's `<resolver>` asks (its name servers, or the system's),
    /// in the order the balancer uses them; an IP literal is itself. For checks
    /// such as `txlb check`; a running balancer re-resolves names on its own.
    pub async fn resolve_host(&self, address: &HostAddress) -> Result<Vec<SocketAddr>, String> {
        if let Ok(ip) = address.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, address.port)]);
        }
        let answer = Resolver::new(&self.resolver).lookup(&address.host).await?;
        Ok(answer
            .addrs
            .into_iter()
            .map(|ip| SocketAddr::new(ip, address.port))
            .collect())
    }
}

/// Whether a configured host address is a name to resolve (not an IP literal).
pub(crate) fn is_name(address: &HostAddress) -> bool {
    address.host.parse::<IpAddr>().is_err()
}

/// What the controller knows of one name.
#[derive(Debug, Clone)]
pub(crate) struct NameState {
    /// The last addresses it resolved to; empty: it never resolved.
    pub addrs: Vec<IpAddr>,
    /// Why the last look-up failed, if it did.
    pub error: Option<String>,
    /// When to ask again.
    pub next: Instant,
    /// When a failure was last logged.
    last_warned: Option<Instant>,
}

impl NameState {
    /// A name not asked about yet: due now.
    pub(crate) fn new(now: Instant) -> Self {
        NameState {
            addrs: Vec::new(),
            error: None,
            next: now,
            last_warned: None,
        }
    }

    /// Records a look-up's result; returns whether the addresses changed.
    /// `interval` is the hosts' own `resolve` period, if any.
    pub(crate) fn record(
        &mut self,
        name: &str,
        result: Result<Answer, String>,
        options: &ResolverOptions,
        interval: Option<Duration>,
        now: Instant,
    ) -> bool {
        match result {
            Ok(answer) => {
                let wait =
                    interval.unwrap_or_else(|| answer.ttl.clamp(options.min_ttl, options.max_ttl));
                self.next = now + wait;
                if self.error.take().is_some() && !self.addrs.is_empty() {
                    tracing::info!(name, "name resolves again");
                }
                let changed = !same_set(&self.addrs, &answer.addrs);
                if changed {
                    tracing::info!(name, before = ?self.addrs, after = ?answer.addrs, next_in = ?wait, "name resolves to new addresses");
                }
                self.addrs = answer.addrs;
                changed
            }
            Err(reason) => {
                // Keep the last known addresses; ask again at the floor.
                self.next = now + interval.unwrap_or(options.min_ttl).min(options.min_ttl);
                if self
                    .last_warned
                    .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
                {
                    if self.addrs.is_empty() {
                        tracing::warn!(
                            name,
                            reason,
                            "name does not resolve: its hosts stay bad until it does (next warning in a minute at the earliest)"
                        );
                    } else {
                        tracing::warn!(name, reason, kept = ?self.addrs, "look-up failed: the last known addresses stay in use (next warning in a minute at the earliest)");
                    }
                    self.last_warned = Some(now);
                }
                self.error = Some(reason);
                false
            }
        }
    }

    /// The address a host that follows one address uses: `current` while the
    /// name still resolves to it (answers rotate; the host should not), else the
    /// first.
    pub(crate) fn pick(&self, current: Option<IpAddr>) -> Option<IpAddr> {
        match current {
            Some(ip) if self.addrs.contains(&ip) => Some(ip),
            _ => self.addrs.first().copied(),
        }
    }
}

fn same_set(a: &[IpAddr], b: &[IpAddr]) -> bool {
    a.len() == b.len() && a.iter().all(|ip| b.contains(ip))
}

/// Every name the configuration's hosts use, with the shortest `resolve`
/// interval any of its hosts asks for.
pub(crate) fn names_of(config: &Config) -> HashMap<String, Option<Duration>> {
    let mut names: HashMap<String, Option<Duration>> = HashMap::new();
    for host in config
        .services
        .iter()
        .flat_map(|s| &s.groups)
        .flat_map(|g| &g.hosts)
    {
        add_name(&mut names, host);
    }
    names
}

/// Adds `host`'s name, if it has one, to `names` (see [`names_of`]): what a
/// host added to the configuration changes.
pub(crate) fn add_name(names: &mut HashMap<String, Option<Duration>>, host: &HostConfig) {
    if !is_name(&host.address) {
        return;
    }
    let interval = names.entry(host.address.host.clone()).or_default();
    *interval = match (*interval, host.options.resolve) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
}

/// Why a look-up failed, in words: hickory's own text of "no records" prints its
/// query as a debug structure (`Query { name: Name(…) }`).
fn lookup_failure(name: &str, error: &NetError) -> String {
    if error.is_nx_domain() {
        format!("name {name:?} does not exist (NXDOMAIN)")
    } else if error.is_no_records_found() {
        format!("name {name:?} has no address records")
    } else if matches!(error, NetError::Proto(_)) {
        // hickory's text of a malformed name is a debug structure.
        format!("name {name:?} is not a valid DNS name")
    } else {
        format!("name {name:?} does not resolve: {error}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn answers_are_kept_within_the_bounds_and_failures_keep_the_last_addresses() {
        let options = ResolverOptions {
            min_ttl: Duration::from_secs(2),
            max_ttl: Duration::from_secs(60),
            ..ResolverOptions::default()
        };
        let now = Instant::now();
        let mut state = NameState::new(now);
        let answer = |addrs: &[&str], ttl: u64| {
            Ok(Answer {
                addrs: addrs.iter().map(|a| ip(a)).collect(),
                ttl: Duration::from_secs(ttl),
            })
        };
        assert!(state.record("n", answer(&["10.0.0.1"], 0), &options, None, now));
        assert_eq!(state.next, now + Duration::from_secs(2), "floor");
        assert!(!state.record("n", answer(&["10.0.0.1"], 3600), &options, None, now));
        assert_eq!(state.next, now + Duration::from_secs(60), "ceiling");
        assert!(!state.record("n", answer(&["10.0.0.1"], 30), &options, None, now));
        assert_eq!(state.next, now + Duration::from_secs(30), "the TTL");
        let fixed = Some(Duration::from_secs(7));
        state.record("n", answer(&["10.0.0.1"], 30), &options, fixed, now);
        assert_eq!(state.next, now + Duration::from_secs(7), "the host's own");
        // Order does not matter; membership does.
        assert!(state.record(
            "n",
            answer(&["10.0.0.2", "10.0.0.1"], 30),
            &options,
            None,
            now
        ));
        assert!(!state.record(
            "n",
            answer(&["10.0.0.1", "10.0.0.2"], 30),
            &options,
            None,
            now
        ));
        assert!(!state.record("n", Err("timeout".into()), &options, None, now));
        assert_eq!(state.addrs, [ip("10.0.0.1"), ip("10.0.0.2")]);
        assert_eq!(state.error.as_deref(), Some("timeout"));
        assert_eq!(state.next, now + Duration::from_secs(2));
        // A host keeps its address while the name still has it.
        assert_eq!(state.pick(Some(ip("10.0.0.2"))), Some(ip("10.0.0.2")));
        assert_eq!(state.pick(Some(ip("10.0.0.9"))), Some(ip("10.0.0.1")));
        assert_eq!(state.pick(None), Some(ip("10.0.0.1")));
    }
}
