//! The rules every configuration obeys, whatever its format: raw tree → [`Config`].
//!
//! The value parsers (`parse_*`) are public so the admin API validates its
//! parameters exactly like the files are validated. Their `Err` is a reason
//! ("no port (expected …)") meant to follow the offending value in a message.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::error::{ConfigError, Source};
use super::model::*;
use super::names::{NameKind, check_name};
use super::options::OptionSet;
use super::raw::*;
use crate::config::SchedulerKind;

/// The scheduler of a group that names none. txLoadBalancer refused such a group
/// (it looked the empty name up among its schedulers); `roundr` is the least
/// surprising behaviour and matches what most sample files use.
pub const DEFAULT_SCHEDULER: SchedulerKind = SchedulerKind::RoundRobin;

/// The longest interval or timeout accepted, in seconds (one year). Larger values
/// are certainly typos, and would overflow time arithmetic downstream.
pub const MAX_SECONDS: u64 = 365 * 24 * 60 * 60;

const HOST_PORT_EXAMPLE: &str = "expected HOST:PORT, e.g. 10.0.0.1:80, name:80 or [::1]:80";
const SECONDS_EXPECTED: &str = "expected a number of seconds greater than 0, e.g. 10 or 0.5";

/// txLoadBalancer's boolean: `true`, `yes`, `on`, `1` and `enable` (any case) are
/// true; anything else is false.
pub fn parse_bool(s: &str) -> bool {
    let s = s.trim();
    ["true", "yes", "on", "1", "enable"]
        .iter()
        .any(|t| s.eq_ignore_ascii_case(t))
}

/// Splits `host:port` or `[v6]:port`; the host comes back without brackets.
fn split_host_port(s: &str) -> Result<(&str, bool, u16), String> {
    let (host, bracketed, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("unclosed '[' ({HOST_PORT_EXAMPLE})"));
        };
        let Some(port) = after.strip_prefix(':') else {
            return Err(if after.is_empty() {
                format!("no port ({HOST_PORT_EXAMPLE})")
            } else {
                format!("unexpected {after:?} after ']' ({HOST_PORT_EXAMPLE})")
            });
        };
        (host, true, port)
    } else {
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!("no port ({HOST_PORT_EXAMPLE})"));
        };
        if host.contains(':') {
            return Err(format!(
                "IPv6 addresses need brackets ({HOST_PORT_EXAMPLE})"
            ));
        }
        (host, false, port)
    };
    if port.is_empty() {
        return Err(format!("no port ({HOST_PORT_EXAMPLE})"));
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad port {port:?} (expected 1-65535)"));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("port {port} out of range (expected 1-65535)"))?;
    Ok((host, bracketed, port))
}

/// Checks the host part of an address that is not in brackets: an IPv4
/// literal, or a DNS name of labels made of ASCII letters, digits, `-` and `_`
/// (not starting or ending with `-`), at most 63 characters each and 253 in
/// all, with an optional final dot. Anything else (`a@b`, `a/b`, spaces,
/// non-ASCII, `1.2.3`) is not what a resolver should be asked.
fn check_host_name(host: &str) -> Result<(), String> {
    const EXPECTED: &str = "expected a host name or an IP address";
    if host.is_empty() {
        return Err(format!("empty host ({HOST_PORT_EXAMPLE})"));
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    if let Some(c) = host
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!("host {host:?} contains {c:?} ({EXPECTED})"));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.len() > 253 {
        return Err(format!(
            "host name of {} characters (expected at most 253)",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(format!("host {host:?} has an empty label ({EXPECTED})"));
        }
        if label.len() > 63 {
            return Err(format!(
                "host {host:?} has a label of {} characters (expected at most 63)",
                label.len()
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "host {host:?} has a label starting or ending with '-' ({EXPECTED})"
            ));
        }
    }
    // No top-level domain is numeric: digits and dots were meant as an IPv4
    // address, and a resolver would read `10.1` as 10.0.0.1.
    if name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("{host:?} is not an IPv4 address ({EXPECTED})"));
    }
    Ok(())
}

fn parse_bracketed_v6(host: &str) -> Result<Ipv6Addr, String> {
    host.parse::<Ipv6Addr>()
        .map_err(|_| format!("{host:?} in brackets is not an IPv6 address"))
}

/// A host's address: `name:port`, `10.0.0.1:80` or `[::1]:80`, port 1–65535.
/// Names are not resolved here.
pub fn parse_host_address(s: &str) -> Result<HostAddress, String> {
    let (host, bracketed, port) = split_host_port(s)?;
    if bracketed {
        parse_bracketed_v6(host)?;
    } else {
        check_host_name(host)?;
    }
    if port == 0 {
        return Err("port 0 is not allowed for a host (expected 1-65535)".to_string());
    }
    Ok(HostAddress {
        host: host.to_string(),
        port,
    })
}

/// A listening address: `*:8080`, `:8080`, `0.0.0.0:8080` and `[::]:8080` mean
/// every address; other IP literals and names (`localhost:7000`) are kept.
/// Port 0 asks the system for a free port.
pub fn parse_listen_addr(s: &str) -> Result<ListenAddr, String> {
    let (host, bracketed, port) = split_host_port(s)?;
    let ip = if bracketed {
        Some(IpAddr::V6(parse_bracketed_v6(host)?))
    } else if host == "*" || host.is_empty() {
        // txLoadBalancer turned "*" into Twisted's "" interface, so "" means the same.
        None
    } else {
        match host.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                check_host_name(host)?;
                return Ok(ListenAddr {
                    host: ListenHost::Name(host.to_string()),
                    port,
                });
            }
        }
    };
    let host = match ip {
        None => ListenHost::Any,
        Some(ip) if ip.is_unspecified() => ListenHost::Any,
        Some(ip) => ListenHost::Ip(ip),
    };
    Ok(ListenAddr { host, port })
}

/// Parses a decimal `123.456` exactly, so written intervals load back unchanged.
/// Digits past nanoseconds are dropped.
fn exact_decimal_seconds(s: &str) -> Option<Result<Duration, String>> {
    let s = s.strip_prefix('+').unwrap_or(s);
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if int.len() + frac.len() == 0 || !digits(int) || !digits(frac) {
        return None;
    }
    let too_large = || Err(format!("too large (at most {MAX_SECONDS} seconds)"));
    let secs = match int.trim_start_matches('0') {
        "" => 0,
        int if int.len() > 19 => return Some(too_large()),
        int => int.parse::<u64>().unwrap_or(u64::MAX),
    };
    let mut nanos = 0u32;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
    }
    let d = Duration::new(secs.min(MAX_SECONDS + 1), nanos);
    Some(if d > Duration::from_secs(MAX_SECONDS) {
        too_large()
    } else if d.is_zero() {
        Err(format!("zero ({SECONDS_EXPECTED})"))
    } else {
        Ok(d)
    })
}

fn seconds_from_f64(f: f64) -> Result<Duration, String> {
    if f.is_nan() {
        Err(format!("not a number ({SECONDS_EXPECTED})"))
    } else if f == 0.0 {
        // Also catches -0.0, which the decimal parser below would not recognise.
        Err(format!("zero ({SECONDS_EXPECTED})"))
    } else if f < 0.0 {
        Err(format!("negative ({SECONDS_EXPECTED})"))
    } else if f > MAX_SECONDS as f64 {
        Err(format!("too large (at most {MAX_SECONDS} seconds)"))
    } else {
        // Nine decimals recover the decimal the user wrote ("0.1" is not exact in
        // binary), then the exact parser does the rest.
        exact_decimal_seconds(&format!("{f:.9}"))
            .unwrap_or_else(|| Err(format!("not a number ({SECONDS_EXPECTED})")))
    }
}

/// A positive number of seconds, possibly fractional (`"10"`, `"0.5"`), at most
/// [`MAX_SECONDS`].
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Some(result) = exact_decimal_seconds(s) {
        return result;
    }
    match s.parse::<f64>() {
        Ok(f) => seconds_from_f64(f),
        Err(_) => Err(format!("not a number ({SECONDS_EXPECTED})")),
    }
}

/// A host weight: an integer of at least 1.
pub fn parse_weight(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(0) | Err(_) => Err("expected an integer of at least 1".to_string()),
        Ok(w) => Ok(w),
    }
}

/// An etcd client URL: `http://HOST:PORT` (a trailing `/` is dropped).
fn parse_etcd_endpoint(s: &str) -> Result<String, String> {
    const EXPECTED: &str = "expected http://HOST:PORT";
    if s.is_empty() {
        return Err(format!("empty ({EXPECTED})"));
    }
    let Some(rest) = s.strip_prefix("http://") else {
        return Err(if s.starts_with("https://") {
            format!("TLS to etcd is not supported ({EXPECTED})")
        } else {
            format!("not an http:// URL ({EXPECTED})")
        });
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let port = authority
        .rsplit_once(':')
        .map(|(host, port)| (host, port.parse::<u16>()));
    match port {
        Some((host, Ok(port))) if !host.is_empty() && port > 0 && !host.contains('/') => {
            Ok(format!("http://{authority}"))
        }
        _ => Err(format!("no host and port ({EXPECTED})")),
    }
}

/// An etcd key prefix: starts with `/`, printable, no spaces; a trailing `/` is
/// dropped.
fn parse_etcd_prefix(s: &str) -> Result<String, String> {
    let trimmed = s.strip_suffix('/').unwrap_or(s);
    if !s.starts_with('/') || trimmed.is_empty() {
        return Err("expected a path such as /txlb/prod".to_string());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("spaces and control characters are not allowed".to_string());
    }
    Ok(trimmed.to_string())
}

/// An instance name: letters, digits, `.`, `_` and `-` (it is part of an etcd
/// key).
fn parse_instance_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty".to_string());
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("expected letters, digits, '.', '_' or '-'".to_string());
    }
    Ok(())
}

/// An admin access level: `full` or `readonly`.
pub fn parse_access(s: &str) -> Result<Access, String> {
    Access::from_str(s)
}

impl Access {
    /// The name written in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Access::Full => "full",
            Access::ReadOnly => "readonly",
        }
    }
}

impl FromStr for Access {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(Access::Full),
            "readonly" => Ok(Access::ReadOnly),
            _ => Err("expected full or readonly".to_string()),
        }
    }
}

/// How a raw number is shown in messages: text quoted as written, numbers plain.
fn show(n: &Number) -> String {
    match n {
        Number::Text(s) => format!("{s:?}"),
        Number::Int(i) => i.to_string(),
        Number::Float(f) => f.to_string(),
    }
}

/// Builds the validated model from a raw tree. `base_dir` is the directory of the
/// configuration file, against which relative log and socket paths are resolved.
pub(crate) fn build(
    raw: RawConfig,
    src: &Source<'_>,
    base_dir: Option<&Path>,
) -> Result<Config, ConfigError> {
    Builder {
        src,
        base_dir,
        listeners: HashMap::new(),
    }
    .config(raw)
}

struct Builder<'s, 'a> {
    src: &'s Source<'a>,
    base_dir: Option<&'s Path>,
    /// Every listen address seen so far and who uses it: two listeners on one
    /// address would fail at bind time, far from the line that caused it.
    listeners: HashMap<ListenAddr, String>,
}

impl Builder<'_, '_> {
    fn err(&self, at: usize, message: impl Into<String>) -> ConfigError {
        self.src.error(at, message)
    }

    /// Reads an element's options; an error points at the bad value.
    fn options<T: OptionSet + Default>(
        &self,
        raw: Vec<(At<String>, At<RawValue>)>,
    ) -> Result<T, ConfigError> {
        let mut options = T::default();
        for (key, value) in raw {
            match options.set_option(&key.value, &value.value) {
                Ok(true) => {}
                // The readers only pass known names; be safe anyway.
                Ok(false) => {
                    return Err(self.err(key.at, format!("unknown setting {:?}", key.value)));
                }
                Err(why) => return Err(self.err(value.at, why)),
            }
        }
        Ok(options)
    }

    fn config(mut self, raw: RawConfig) -> Result<Config, ConfigError> {
        let mut services = Vec::with_capacity(raw.services.len());
        let mut names = HashSet::new();
        for service in raw.services {
            let built = self.service(service, &mut names)?;
            services.push(built);
        }
        if services.is_empty() {
            return Err(self.err(raw.at, "no service defined (expected at least one service)"));
        }
        let admin = raw.admin.map(|a| self.admin(a)).transpose()?;
        let manager = self.manager(raw.manager)?;
        let logging = match raw.logging {
            Some(l) => LoggingConfig {
                file: l.file.map(|f| self.path(f.value)),
                access: l.access.map(|f| self.path(f.value)),
                access_format: match l.format {
                    None => AccessFormat::Text,
                    Some(f) => match f.value.as_str() {
                        "text" => AccessFormat::Text,
                        "json" => AccessFormat::Json,
                        other => {
                            return Err(self.err(
                                f.at,
                                format!("bad access log format {other:?} (expected text or json)"),
                            ));
                        }
                    },
                },
            },
            None => LoggingConfig::default(),
        };
        let control = raw.control.map(|c| self.control(c)).transpose()?;
        let cluster = raw.cluster.map(|c| self.cluster(c)).transpose()?;
        let resolver = match raw.resolver {
            Some(r) => {
                let options: ResolverOptions = self.options(r.options)?;
                if options.min_ttl > options.max_ttl {
                    return Err(self.err(
                        r.at,
                        format!(
                            "resolver minTtl ({}) is longer than maxTtl ({}) (expected minTtl <= maxTtl)",
                            super::write::seconds(options.min_ttl),
                            super::write::seconds(options.max_ttl)
                        ),
                    ));
                }
                options
            }
            None => ResolverOptions::default(),
        };
        Ok(Config {
            source: None,
            services,
            admin,
            manager,
            logging,
            control,
            cluster,
            resolver,
        })
    }

    fn required<T>(
        &self,
        value: Option<At<T>>,
        at: usize,
        what: &str,
    ) -> Result<At<T>, ConfigError> {
        value.ok_or_else(|| self.err(at, format!("{what} is missing")))
    }

    /// A required name, checked by the one name rule ([`check_name`]).
    fn name(
        &self,
        value: Option<At<String>>,
        at: usize,
        kind: NameKind,
    ) -> Result<At<String>, ConfigError> {
        let what = kind.word();
        let name = self.required(value, at, &format!("{what} name"))?;
        if name.value.is_empty() {
            return Err(self.err(name.at, format!("empty {what} name")));
        }
        if let Err(why) = check_name(kind, &name.value) {
            return Err(self.err(name.at, format!("bad {what} name {:?}: {why}", name.value)));
        }
        Ok(name)
    }

    fn seconds(&self, value: &At<Number>, what: &str) -> Result<Duration, ConfigError> {
        let parsed = match &value.value {
            Number::Text(s) => parse_seconds(s),
            Number::Int(i) => match u64::try_from(*i) {
                Ok(0) => Err(format!("zero ({SECONDS_EXPECTED})")),
                Ok(s) if s <= MAX_SECONDS => Ok(Duration::from_secs(s)),
                Ok(_) => Err(format!("too large (at most {MAX_SECONDS} seconds)")),
                Err(_) => Err(format!("negative ({SECONDS_EXPECTED})")),
            },
            Number::Float(f) => seconds_from_f64(*f),
        };
        parsed.map_err(|why| {
            self.err(
                value.at,
                format!("bad {what} {}: {why}", show(&value.value)),
            )
        })
    }

    fn listen(&mut self, value: &At<String>, user: &str) -> Result<ListenAddr, ConfigError> {
        let addr = parse_listen_addr(&value.value).map_err(|why| {
            self.err(
                value.at,
                format!("bad listen address {:?}: {why}", value.value),
            )
        })?;
        // Port 0 picks a fresh port at each bind, so such listeners never collide.
        if addr.port != 0 {
            if let Some(other) = self.listeners.get(&addr) {
                return Err(self.err(
                    value.at,
                    format!("listen address {addr} is already used by {other}"),
                ));
            }
            self.listeners.insert(addr.clone(), user.to_string());
        }
        Ok(addr)
    }

    fn path(&self, written: String) -> PathBuf {
        let path = PathBuf::from(written);
        match self.base_dir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path,
        }
    }

    fn service(
        &mut self,
        raw: RawService,
        names: &mut HashSet<String>,
    ) -> Result<ServiceConfig, ConfigError> {
        let name = self.name(raw.name, raw.at, NameKind::Service)?;
        if !names.insert(name.value.clone()) {
            return Err(self.err(name.at, format!("duplicate service name {:?}", name.value)));
        }
        let label = format!("service {:?}", name.value);
        let mut listeners = Vec::with_capacity(raw.listen.len());
        for listen in raw.listen {
            let ip = self.required(
                listen.ip,
                listen.at,
                "listen address (expected ip = \"HOST:PORT\")",
            )?;
            listeners.push(Listener {
                addr: self.listen(&ip, &label)?,
                options: self.options(listen.options)?,
            });
        }
        if listeners.is_empty() {
            return Err(self.err(raw.at, format!("{label} has no listen address")));
        }

        let mut groups: Vec<GroupConfig> = Vec::with_capacity(raw.groups.len());
        // Names seen: a set, so a file of many groups or hosts is checked in
        // linear time (a scan of those before each took minutes for 100,000).
        let mut group_names = HashSet::with_capacity(raw.groups.len());
        // The group flagged `enable`, with where the flag is, for the messages below.
        let mut flagged: Option<(String, usize)> = None;
        // Where each group says `backup`, for the message if it is the enabled one.
        let mut backup_at: HashMap<String, usize> = HashMap::new();
        for group in raw.groups {
            let name_at = group.name.as_ref().map_or(group.at, |n| n.at);
            let enable = group.enable.clone();
            let backup_key = group
                .options
                .iter()
                .find(|(key, _)| key.value == "backup")
                .map(|(key, _)| key.at);
            let built = self.group(group, &label)?;
            if !group_names.insert(built.name.clone()) {
                return Err(self.err(
                    name_at,
                    format!("duplicate group name {:?} in {label}", built.name),
                ));
            }
            if let Some(At { value: true, at }) = enable {
                if let Some((first, _)) = &flagged {
                    return Err(self.err(
                        at,
                        format!(
                            "{label} has more than one enabled group: {first:?} and {:?} (expected exactly one)",
                            built.name
                        ),
                    ));
                }
                flagged = Some((built.name.clone(), at));
            }
            if let Some(at) = backup_key {
                backup_at.insert(built.name.clone(), at);
            }
            groups.push(built);
        }
        if groups.is_empty() {
            return Err(self.err(raw.at, format!("{label} has no group")));
        }

        let enabled_group = match (raw.enabled_group, flagged) {
            (Some(named), flagged) => {
                if !groups.iter().any(|g| g.name == named.value) {
                    let known: Vec<_> = groups.iter().map(|g| g.name.as_str()).collect();
                    return Err(self.err(
                        named.at,
                        format!(
                            "{label} has no group named {:?} to enable (groups: {})",
                            named.value,
                            known.join(", ")
                        ),
                    ));
                }
                if let Some((flagged, at)) = flagged
                    && flagged != named.value
                {
                    return Err(self.err(
                        at,
                        format!(
                            "{label} enables group {flagged:?} here but group {:?} elsewhere (expected exactly one)",
                            named.value
                        ),
                    ));
                }
                named.value
            }
            (None, Some((flagged, _))) => flagged,
            (None, None) => {
                return Err(self.err(
                    raw.at,
                    format!(
                        "{label} has no enabled group (expected one group with enable true, or the name of the group to enable)"
                    ),
                ));
            }
        };
        if let Some(group) = groups.iter().find(|g| g.name == enabled_group)
            && group.options.backup
        {
            // A backup group stands in for the enabled one; it cannot be it.
            return Err(self.err(
                backup_at.get(&enabled_group).copied().unwrap_or(raw.at),
                format!(
                    "{label}: group {enabled_group:?} is both enabled and a backup group (expected the enabled group without backup)"
                ),
            ));
        }
        if let Some(group) = groups.iter().find(|g| g.name == enabled_group)
            && group.hosts.is_empty()
        {
            // Other groups may be empty (the admin API empties standby groups), but
            // the enabled one must be able to take traffic.
            return Err(self.err(
                raw.at,
                format!("{label}: enabled group {enabled_group:?} has no host"),
            ));
        }

        let mut service = ServiceConfig {
            name: name.value,
            listeners,
            groups,
            enabled_group,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            options: self.options(raw.options)?,
        };
        self.service_settings(&mut service, raw.connect_timeout)?;
        Ok(service)
    }

    /// Optional per-service settings: the place to add new ones.
    fn service_settings(
        &self,
        service: &mut ServiceConfig,
        connect_timeout: Option<At<Number>>,
    ) -> Result<(), ConfigError> {
        if let Some(timeout) = connect_timeout {
            service.connect_timeout = self.seconds(&timeout, "connect timeout")?;
        }
        Ok(())
    }

    fn group(&self, raw: RawGroup, service: &str) -> Result<GroupConfig, ConfigError> {
        let name = self.name(raw.name, raw.at, NameKind::Group)?;
        let scheduler = match raw.scheduler {
            None => DEFAULT_SCHEDULER,
            Some(s) => s
                .value
                .parse::<SchedulerKind>()
                .map_err(|e| self.err(s.at, e.to_string()))?,
        };
        let mut hosts: Vec<HostConfig> = Vec::with_capacity(raw.hosts.len());
        let mut host_names = HashSet::with_capacity(raw.hosts.len());
        for (index, host) in raw.hosts.into_iter().enumerate() {
            let name_at = host.name.as_ref().map_or(host.at, |n| n.at);
            let built = self.host(host, index)?;
            if !host_names.insert(built.name.clone()) {
                return Err(self.err(
                    name_at,
                    format!(
                        "duplicate host name {:?} in group {:?} of {service}",
                        built.name, name.value
                    ),
                ));
            }
            hosts.push(built);
        }
        Ok(GroupConfig {
            name: name.value,
            scheduler,
            hosts: hosts.into(),
            options: self.options(raw.options)?,
        })
    }

    fn host(&self, raw: RawHost, index: usize) -> Result<HostConfig, ConfigError> {
        // txLoadBalancer named anonymous hosts after their position.
        let name = match raw.name {
            None => format!("host.{index}"),
            Some(_) => self.name(raw.name, raw.at, NameKind::Host)?.value,
        };
        let ip = self.required(raw.ip, raw.at, &format!("ip of host {name:?}"))?;
        let address = parse_host_address(&ip.value)
            .map_err(|why| self.err(ip.at, format!("bad ip {:?}: {why}", ip.value)))?;
        let weight = match raw.weight {
            None => 1,
            Some(w) => {
                let parsed = match &w.value {
                    Number::Text(s) => parse_weight(s),
                    Number::Int(i) => u32::try_from(*i)
                        .ok()
                        .filter(|&w| w >= 1)
                        .ok_or_else(|| "expected an integer of at least 1".to_string()),
                    Number::Float(_) => Err("expected an integer of at least 1".to_string()),
                };
                parsed.map_err(|why| {
                    self.err(w.at, format!("bad weight {}: {why}", show(&w.value)))
                })?
            }
        };
        Ok(HostConfig {
            name,
            address,
            weight,
            options: self.options(raw.options)?,
        })
    }

    /// `allowedHosts`: each a name or address with an optional `:port`, as it
    /// appears in a `Host` header (`[…]` around an IPv6 address).
    fn allowed_hosts(&self, names: At<Vec<String>>) -> Result<Vec<String>, ConfigError> {
        let bad = |name: &str| {
            name.is_empty()
                || name.len() > 300
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c))
        };
        if let Some(name) = names.value.iter().find(|n| bad(n)) {
            return Err(self.err(
                names.at,
                format!("bad allowed host {name:?} (expected NAME or NAME:PORT)"),
            ));
        }
        Ok(names.value)
    }

    fn admin(&mut self, raw: RawAdmin) -> Result<AdminConfig, ConfigError> {
        let web = match raw.web {
            None => None,
            Some(web) => {
                let listen = self.required(web.listen, web.at, "listen address of web")?;
                Some(AdminWebConfig {
                    listen: self.listen(&listen, "the admin web server")?,
                    enable: web.enable.is_none_or(|e| e.value),
                    secure: web.secure.is_some_and(|s| s.value),
                    refresh: match web.refresh {
                        None => DEFAULT_ADMIN_REFRESH,
                        Some(r) => self.seconds(&r, "refresh")?,
                    },
                    metrics_public: web.metrics_public.is_some_and(|m| m.value),
                    cert: web.cert.map(|c| self.path(c.value)),
                    key: web.key.map(|k| self.path(k.value)),
                    allowed_hosts: match web.allowed_hosts {
                        None => Vec::new(),
                        Some(names) => self.allowed_hosts(names)?,
                    },
                    changes_require_post: web.changes_require_post.is_some_and(|c| c.value),
                })
            }
        };
        let ssh = match raw.ssh {
            None => None,
            Some(ssh) => {
                let listen = self.required(ssh.listen, ssh.at, "listen address of ssh")?;
                Some(AdminSshConfig {
                    listen: self.listen(&listen, "the admin SSH console")?,
                    enable: ssh.enable.is_none_or(|e| e.value),
                    authorized_keys: ssh.authorized_keys.map(|p| self.path(p.value)),
                    host_key: ssh.host_key.map(|p| self.path(p.value)),
                    script_timeout: match ssh.script_timeout {
                        None => DEFAULT_SCRIPT_TIMEOUT,
                        Some(t) => self.seconds(&t, "scriptTimeout")?,
                    },
                })
            }
        };
        let mut users: Vec<UserConfig> = Vec::with_capacity(raw.users.len());
        let mut user_names = HashSet::with_capacity(raw.users.len());
        for user in raw.users {
            let name = self.name(user.name, user.at, NameKind::User)?;
            if !user_names.insert(name.value.clone()) {
                return Err(self.err(name.at, format!("duplicate user name {:?}", name.value)));
            }
            let password = self.required(
                user.password,
                user.at,
                &format!("password of user {:?}", name.value),
            )?;
            let access = match user.access {
                None => Access::Full,
                Some(a) => parse_access(&a.value)
                    .map_err(|why| self.err(a.at, format!("bad access {:?}: {why}", a.value)))?,
            };
            users.push(UserConfig {
                name: name.value,
                password_hash: password.value,
                access,
            });
        }
        Ok(AdminConfig { web, ssh, users })
    }

    fn manager(&self, raw: Option<RawManager>) -> Result<ManagerConfig, ConfigError> {
        let mut manager = ManagerConfig::default();
        let Some(raw) = raw else {
            return Ok(manager);
        };
        for (task, raw) in [
            (&mut manager.host_check, raw.host_check),
            (&mut manager.config_check, raw.config_check),
            (&mut manager.heartbeat, raw.heartbeat),
        ] {
            // What is not written keeps the task's default.
            let Some(raw) = raw else { continue };
            if let Some(enable) = raw.enable {
                task.enable = enable.value;
            }
            if let Some(interval) = raw.interval {
                task.interval = self.seconds(&interval, "interval")?;
            }
        }
        Ok(manager)
    }

    fn control(&self, raw: RawControl) -> Result<ControlConfig, ConfigError> {
        let socket = self.required(raw.socket, raw.at, "control socket path")?;
        if socket.value.is_empty() {
            return Err(self.err(socket.at, "empty control socket path"));
        }
        Ok(ControlConfig {
            socket: self.path(socket.value),
        })
    }

    fn cluster(&self, raw: RawCluster) -> Result<ClusterConfig, ConfigError> {
        if !cfg!(feature = "fleet") {
            return Err(self.err(
                raw.at,
                "fleet mode (<cluster>) is not built into this txlb (cargo feature \"fleet\")",
            ));
        }
        let etcd = self.required(
            raw.etcd,
            raw.at,
            "etcd endpoint (etcd=\"http://HOST:PORT\")",
        )?;
        let mut endpoints = Vec::new();
        for endpoint in etcd.value.split(',').map(str::trim) {
            endpoints.push(parse_etcd_endpoint(endpoint).map_err(|reason| {
                self.err(etcd.at, format!("bad etcd endpoint {endpoint:?}: {reason}"))
            })?);
        }
        let prefix = self.required(raw.prefix, raw.at, "key prefix (prefix=\"/txlb/NAME\")")?;
        let prefix = At::new(
            parse_etcd_prefix(&prefix.value).map_err(|reason| {
                self.err(
                    prefix.at,
                    format!("bad key prefix {:?}: {reason}", prefix.value),
                )
            })?,
            prefix.at,
        );
        let name = self.required(raw.name, raw.at, "instance name (name=\"NAME\")")?;
        if let Err(reason) = parse_instance_name(&name.value) {
            return Err(self.err(
                name.at,
                format!("bad instance name {:?}: {reason}", name.value),
            ));
        }
        Ok(ClusterConfig {
            endpoints,
            prefix: prefix.value,
            name: name.value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_follow_txloadbalancer() {
        for t in ["true", "YES", "On", "1", "enable", " True "] {
            assert!(parse_bool(t), "{t}");
        }
        for f in ["false", "no", "0", "", "enabled", "2", "tru"] {
            assert!(!parse_bool(f), "{f}");
        }
    }

    #[test]
    fn host_addresses() {
        let ok = |s: &str| parse_host_address(s).unwrap();
        assert_eq!(ok("lorien:1901").host, "lorien");
        assert_eq!(ok("10.0.0.1:80").port, 80);
        assert_eq!(ok("[::1]:80").host, "::1");
        assert_eq!(ok("[::1]:80").to_string(), "[::1]:80");
        assert_eq!(ok("db-1.example.com.:5432").host, "db-1.example.com.");
        assert_eq!(ok("_srv.x1:80").host, "_srv.x1");
        assert_eq!(ok(&format!("{}:1", "a".repeat(63))).port, 1);
        assert!(parse_host_address(&format!("{}:1", "a".repeat(64))).is_err());
        assert!(
            parse_host_address("a@127.0.0.1:9")
                .unwrap_err()
                .contains("'@'")
        );
        for bad in [
            "lorien",
            "lorien:",
            ":80",
            "a:70000",
            "a:0",
            "a:x1",
            "::1:80",
            "[::1]",
            "[nope]:1",
            "a b:1",
            "[::1:80",
            "a@127.0.0.1:9",
            "a/b:1",
            "-a:1",
            "a-:1",
            "a..b:1",
            ".a:1",
            "1.2.3:80",
            "256.1.1.1:80",
            "10.1:80",
            "héllo:80",
            "a\u{0}:1",
        ] {
            assert!(parse_host_address(bad).is_err(), "{bad}");
        }
        assert!(
            parse_host_address("a:70000")
                .unwrap_err()
                .contains("out of range")
        );
    }

    #[test]
    fn listen_addresses() {
        let host = |s: &str| parse_listen_addr(s).unwrap().host;
        assert_eq!(host("*:8080"), ListenHost::Any);
        assert_eq!(host(":8080"), ListenHost::Any);
        assert_eq!(host("0.0.0.0:8080"), ListenHost::Any);
        assert_eq!(host("[::]:8080"), ListenHost::Any);
        assert_eq!(
            host("127.0.0.1:0"),
            ListenHost::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(host("[::1]:1"), ListenHost::Ip("::1".parse().unwrap()));
        assert_eq!(host("localhost:7000"), ListenHost::Name("localhost".into()));
        assert_eq!(parse_listen_addr("*:0").unwrap().port, 0);
        assert!(parse_listen_addr("localhost").is_err());
        assert!(parse_listen_addr("*:65536").is_err());
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_seconds(".25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_seconds("1.000000001"), Ok(Duration::new(1, 1)));
        assert_eq!(parse_seconds("1e1"), Ok(Duration::from_secs(10)));
        for bad in [
            "-1",
            "NaN",
            "inf",
            "",
            "ten",
            "0",
            "0.0",
            "1e30",
            "99999999999999999999999",
        ] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(seconds_from_f64(0.1), Ok(Duration::from_millis(100)));
        assert!(seconds_from_f64(-0.0).unwrap_err().starts_with("zero"));
    }

    #[test]
    fn weights_and_access() {
        assert_eq!(parse_weight("20"), Ok(20));
        for bad in ["0", "-1", "1.5", "", "x"] {
            assert!(parse_weight(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_access("readonly"), Ok(Access::ReadOnly));
        assert!(parse_access("admin").is_err());
        assert_eq!(Access::Full.name().parse::<Access>(), Ok(Access::Full));
    }
}
