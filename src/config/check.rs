//! The rules of the model, in one place, whatever made the configuration: the
//! readers check what they built from a file, the builder what it assembled,
//! each command the part it changes.
//!
//! [`Config::check`] is made of [`ServiceConfig::check`], [`Listener::check`],
//! [`Route::check`], [`GroupConfig::check`], [`HostConfig::check`] and
//! [`UserConfig::check`], plus the rules across services (unique names, one
//! user per listen address, routes to services that exist). Each is linear in
//! what it looks at, so a command adding one host checks that host and never
//! walks the other 100,000. A broken rule is a [`CheckError`]: its text says what and
//! where in words; the place it carries lets a reader point at `FILE:LINE:COL`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use super::model::*;
use super::names::{NameKind, check_name};
use super::options::{AcmeChallenge, MAX_INSPECT_BYTES, MAX_SESSIONS, ProxyVersion, Transport};
use super::parse::{
    check_host_address, check_listen_addr, check_seconds, parse_alpn, parse_etcd_endpoint,
    parse_etcd_prefix, parse_instance_name, parse_route_host, parse_sni,
};

/// A rule of the model that a configuration breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError(Box<Broken>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Broken {
    place: Place,
    rule: Rule,
    /// Where, in words, when `message` does not say it: `group "g" of
    /// service "web"`. Empty when the message is complete.
    within: String,
    message: String,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.within.is_empty() {
            f.write_str(&self.0.message)
        } else {
            write!(f, "{}: {}", self.0.within, self.0.message)
        }
    }
}

impl std::error::Error for CheckError {}

impl CheckError {
    fn new(place: Place, rule: Rule, message: impl Into<String>) -> Self {
        CheckError(Box::new(Broken {
            place,
            rule,
            within: String::new(),
            message: message.into(),
        }))
    }

    /// A bad value at `place`.
    fn value(place: Place, message: impl Into<String>) -> Self {
        CheckError::new(place, Rule::Value, message)
    }

    /// What is wrong, as a file's error shows it after `FILE:LINE:COL`.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// Where it is in the configuration, for the readers.
    pub(crate) fn place(&self) -> Place {
        self.0.place
    }

    /// Which rule, for the controller's error.
    pub(crate) fn rule(&self) -> &Rule {
        &self.0.rule
    }

    /// Says where in words, unless the message says it already.
    pub(crate) fn within(mut self, words: impl FnOnce() -> String) -> Self {
        if self.0.within.is_empty() && self.0.rule == Rule::Value {
            self.0.within = words();
        }
        self
    }

    /// The same error at `place`.
    fn at(mut self, place: Place) -> Self {
        self.0.place = place;
        self
    }

    /// The error of a group's check, placed in group `index` of its service.
    fn in_group(mut self, index: usize) -> Self {
        if let Place::Service(_, InService::Group(g, _)) = &mut self.0.place {
            *g = index;
        }
        self
    }

    /// The error of a listener's check, placed in listener `index` of its
    /// service.
    fn in_listener(mut self, index: usize) -> Self {
        if let Place::Service(
            _,
            InService::Listener(l)
            | InService::ListenerSetting(l, _)
            | InService::Route(l, _, _)
            | InService::Tls(l, _),
        ) = &mut self.0.place
        {
            *l = index;
        }
        self
    }

    /// The error of a route's check, placed in route `index` of its listener.
    fn in_route(mut self, index: usize) -> Self {
        if let Place::Service(_, InService::Route(_, r, _)) = &mut self.0.place {
            *r = index;
        }
        self
    }

    /// The error of a service's check, placed in service `index`.
    fn in_service(mut self, index: usize) -> Self {
        if let Place::Service(s, _) = &mut self.0.place {
            *s = index;
        }
        self
    }
}

/// Which rule is broken, with the names the controller's errors carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rule {
    /// A bad value or name.
    Value,
    /// Two services of one name.
    DuplicateService(String),
    /// Two groups of one name in a service.
    DuplicateGroup { service: String, group: String },
    /// Two hosts of one name in a group.
    DuplicateHost {
        service: String,
        group: String,
        host: String,
    },
    /// Two users of one name.
    DuplicateUser(String),
    /// The enabled group is not one of the service's groups.
    UnknownEnabledGroup { service: String, group: String },
    /// The enabled group is a backup group.
    BackupEnabled { service: String, group: String },
    /// The enabled group has no host.
    EnabledGroupEmpty { service: String, group: String },
    /// A route names a service that does not exist.
    UnknownService(String),
    /// A listen address (with a fixed port) used twice; `service` is the one
    /// that had it, if a service did.
    ListenerInUse {
        listen: String,
        service: Option<String>,
    },
}

/// Where in a configuration a rule is broken, by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// The configuration as a whole.
    Config,
    /// Service `n`, or something in it.
    Service(usize, InService),
    /// User `n`'s name.
    User(usize),
    /// The admin web server's element.
    Web,
    /// The admin web server's listen address.
    WebListen,
    /// The admin web server's `allowedHosts`.
    AllowedHosts,
    /// The SSH console's element.
    Ssh,
    /// The SSH console's listen address.
    SshListen,
    /// The managers' intervals.
    Manager,
    /// The control socket.
    Control,
    /// The fleet's cluster settings.
    Cluster,
    /// The resolver's settings.
    Resolver,
    /// The ACME settings (`<acme>`).
    Acme,
}

/// Where in a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InService {
    /// The service's element.
    Element,
    /// Its name.
    Name,
    /// Where it names its enabled group.
    Enabled,
    /// Listener `n`'s address.
    Listener(usize),
    /// Listener `n`'s setting of this XML name (or its address when the
    /// setting was not written).
    ListenerSetting(usize, &'static str),
    /// Route `r` of listener `n`, or a part of it.
    Route(usize, usize, InRoute),
    /// The `<tls>` `t` of listener `n`.
    Tls(usize, usize),
    /// Group `n`, or something in it.
    Group(usize, InGroup),
}

/// Where in a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InRoute {
    /// The route's element.
    Element,
    /// Its `service`.
    Service,
    /// Its `sni`.
    Sni,
    /// Its `alpn`.
    Alpn,
    /// Its `host`.
    Host,
}

/// Where in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InGroup {
    /// The group's name.
    Name,
    /// Its `backup` setting.
    Backup,
    /// Host `n`'s name.
    Host(usize),
    /// Its `<check>`'s setting of this XML name (the element when the
    /// setting was not written).
    Check(&'static str),
    /// Its `<agent>`'s setting of this XML name (the element when the
    /// setting was not written).
    Agent(&'static str),
}

fn in_service(part: InService) -> Place {
    Place::Service(0, part)
}

fn in_group(part: InGroup) -> Place {
    Place::Service(0, InService::Group(0, part))
}

/// A name by the one name rule ([`check_name`]).
fn name(place: Place, kind: NameKind, name: &str) -> Result<(), CheckError> {
    let what = kind.word();
    if name.is_empty() {
        return Err(CheckError::value(place, format!("empty {what} name")));
    }
    check_name(kind, name)
        .map_err(|why| CheckError::value(place, format!("bad {what} name {name:?}: {why}")))
}

/// A duration a file could say: `what` names it in the message.
fn seconds(place: Place, what: &str, d: Duration) -> Result<(), CheckError> {
    check_seconds(d).map_err(|why| {
        CheckError::value(
            place,
            format!("bad {what} {}: {why}", super::write::seconds(d)),
        )
    })
}

impl HostConfig {
    /// The rules of one host: its name, an address a file could hold, a
    /// weight of at least 1, its settings in range.
    pub fn check(&self) -> Result<(), CheckError> {
        let place = in_group(InGroup::Host(0));
        name(place, NameKind::Host, &self.name)?;
        let host = &self.name;
        check_host_address(&self.address).map_err(|why| {
            CheckError::value(
                place,
                format!(
                    "host {host:?}: bad address {:?}: {why}",
                    self.address.to_string()
                ),
            )
        })?;
        if self.weight == 0 {
            return Err(CheckError::value(
                place,
                format!("host {host:?}: bad weight 0: expected an integer of at least 1"),
            ));
        }
        self.options
            .check()
            .map_err(|why| CheckError::value(place, format!("host {host:?}: {why}")))
    }
}

impl GroupConfig {
    /// The rules of one group of `service`: its name, its settings, each
    /// host's rules, and host names unique within it.
    pub fn check(&self, service: &str) -> Result<(), CheckError> {
        let group = &self.name;
        let place = in_group(InGroup::Name);
        name(place, NameKind::Group, group)?;
        self.options
            .check()
            .map_err(|why| CheckError::value(place, format!("group {group:?}: {why}")))?;
        if let Some(check) = &self.check {
            check
                .check()
                .map_err(|why| ("", why))
                .and_then(|()| check.rules())
                .map_err(|(setting, why)| {
                    CheckError::value(
                        in_group(InGroup::Check(setting)),
                        format!("group {group:?}: check: {why}"),
                    )
                })?;
        }
        if let Some(agent) = &self.agent {
            agent
                .check()
                .map_err(|why| ("", why))
                .and_then(|()| agent.rules())
                .and_then(|()| {
                    if agent.port.is_none()
                        && self.hosts.iter().any(|h| h.options.agent_port.is_none())
                    {
                        return Err((
                            "port",
                            "agent has no port and a host has no agentPort".to_string(),
                        ));
                    }
                    Ok(())
                })
                .map_err(|(setting, why)| {
                    CheckError::value(
                        in_group(InGroup::Agent(setting)),
                        format!("group {group:?}: agent: {why}"),
                    )
                })?;
        }
        // A set, so 100,000 hosts are checked in linear time.
        let mut names = HashSet::with_capacity(self.hosts.len());
        for (index, host) in self.hosts.iter().enumerate() {
            let place = in_group(InGroup::Host(index));
            host.check().map_err(|e| {
                e.at(place)
                    .within(|| format!("group {group:?} of service {service:?}"))
            })?;
            if !names.insert(host.name.as_str()) {
                return Err(CheckError::new(
                    place,
                    Rule::DuplicateHost {
                        service: service.to_string(),
                        group: group.clone(),
                        host: host.name.clone(),
                    },
                    format!(
                        "duplicate host name {:?} in group {group:?} of service {service:?}",
                        host.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl ServiceConfig {
    /// The rules of one service: its name and settings, its listeners' rules
    /// (none twice; none at all when other services' routes reach it), each
    /// group's rules, group names unique, and an enabled group that exists
    /// and is no backup; it may have no host yet (a service `newService`
    /// made, saved or handed over by an upgrade before its hosts came: its
    /// clients are closed meanwhile, and `txlb check` warns). Commands keep
    /// a host in it ([`ServiceConfig::check_enabled`]). A service without groups
    /// must have listeners, each with routes (a client no route matches is
    /// closed). Whether the services its routes name exist is the
    /// configuration's rule ([`Config::check`]).
    pub fn check(&self) -> Result<(), CheckError> {
        self.check_with(Enabled::MayStartEmpty)
    }

    fn check_with(&self, enabled: Enabled) -> Result<(), CheckError> {
        let service = &self.name;
        name(in_service(InService::Name), NameKind::Service, service)?;
        let mut listening = Listening::default();
        for (index, listener) in self.listeners.iter().enumerate() {
            let place = in_service(InService::Listener(index));
            listener.check(service).map_err(|e| e.in_listener(index))?;
            listening.add(place, &listener.addr, Owner::Service(service))?;
        }
        seconds(
            in_service(InService::Element),
            "connect timeout",
            self.connect_timeout,
        )
        .and_then(|()| {
            self.options
                .check()
                .map_err(|why| CheckError::value(in_service(InService::Element), why))
        })
        .map_err(|e| e.within(|| format!("service {service:?}")))?;
        self.check_udp()?;
        let mut names = HashSet::with_capacity(self.groups.len());
        for (index, group) in self.groups.iter().enumerate() {
            group
                .check(service)
                .map_err(|e| e.in_group(index).within(|| format!("service {service:?}")))?;
            if !names.insert(group.name.as_str()) {
                return Err(CheckError::new(
                    in_service(InService::Group(index, InGroup::Name)),
                    Rule::DuplicateGroup {
                        service: service.clone(),
                        group: group.name.clone(),
                    },
                    format!(
                        "duplicate group name {:?} in service {service:?}",
                        group.name
                    ),
                ));
            }
        }
        if self.groups.is_empty() {
            return self.check_without_groups();
        }
        self.check_enabled_with(enabled)
    }

    /// `maxSessions` within its bounds, and for a UDP service what UDP does
    /// not have yet refused where it is written rather than ignored: TLS,
    /// routes by other than SNI or ALPN, PROXY acceptance on its listeners,
    /// TLS and PROXY v1 headers towards its hosts.
    fn check_udp(&self) -> Result<(), CheckError> {
        let service = &self.name;
        let sessions = self.options.max_sessions;
        if sessions == 0 || sessions > MAX_SESSIONS {
            return Err(CheckError::value(
                in_service(InService::Element),
                format!(
                    "service {service:?}: bad maxSessions {sessions} (expected 1 to {MAX_SESSIONS})"
                ),
            ));
        }
        if self.options.protocol != Transport::Udp {
            return Ok(());
        }
        let refuse = |place, what: &str| {
            Err(CheckError::value(
                in_service(place),
                format!("service {service:?} is protocol=\"udp\": {what} is not supported on UDP"),
            ))
        };
        if self.options.accept_proxy {
            return refuse(InService::Element, "acceptProxy");
        }
        // Settings of TCP connections' admission and copy, written.
        const TCP_ONLY: [&str; 9] = [
            "clientFirst",
            "clientTimeout",
            "serverTimeout",
            "clientFinTimeout",
            "maxconn",
            "queue",
            "queueTimeout",
            "sourceMaxconn",
            "sourceRate",
        ];
        let defaults = super::options::ServiceOptions::default();
        if let Some(written) = self
            .options
            .differing(&defaults)
            .into_iter()
            .find(|w| TCP_ONLY.contains(&w.xml_name))
        {
            // Their UDP counterparts, per client address.
            let what = match written.xml_name {
                "sourceMaxconn" => "sourceMaxconn (expected maxSessionsPerSource)",
                "sourceRate" => "sourceRate (expected datagramRate)",
                other => other,
            };
            return refuse(InService::Element, what);
        }
        for (index, listener) in self.listeners.iter().enumerate() {
            if listener.tls.is_some() {
                return refuse(InService::Tls(index, 0), "TLS on a listener");
            }
            // QUIC Initials tell their ClientHello's SNI and ALPN, no more.
            if let Some(r) = listener.routes.iter().position(|r| {
                r.host.is_some() || r.protocol.is_some_and(|p| p != ClientProtocol::Tls)
            }) {
                return refuse(
                    InService::Route(index, r, InRoute::Element),
                    "a route by protocol or host (expected sni or alpn: what a QUIC Initial tells)",
                );
            }
            if listener.options.accept_proxy == Some(true) {
                return refuse(
                    InService::ListenerSetting(index, "acceptProxy"),
                    "acceptProxy",
                );
            }
            if listener.options.acme_http {
                return refuse(InService::ListenerSetting(index, "acmeHttp"), "acmeHttp");
            }
        }
        for (index, group) in self.groups.iter().enumerate() {
            let at = InService::Group(index, InGroup::Name);
            let hosts = || group.hosts.iter();
            if group.options.tls || hosts().any(|h| h.options.tls == Some(true)) {
                return refuse(at, "TLS towards hosts");
            }
            if let Some(check) = &group.check
                && !matches!(check.kind, CheckKind::Udp | CheckKind::Dns)
            {
                let what = format!("a type=\"{}\" check (expected udp or dns)", check.kind);
                return refuse(InService::Group(index, InGroup::Check("type")), &what);
            }
            // Version 2 has a datagram family; version 1 has none.
            let v1 = Some(ProxyVersion::V1);
            if group.options.proxy_protocol == v1 {
                return refuse(at, "proxyProtocol=\"v1\" (expected v2)");
            }
            if let Some(host) = hosts().position(|h| h.options.proxy_protocol == Some(v1)) {
                let at = InService::Group(index, InGroup::Host(host));
                return refuse(at, "proxyProtocol=\"v1\" (expected v2)");
            }
        }
        Ok(())
    }

    /// A service without groups: only listeners that route, and no enabled
    /// group named.
    fn check_without_groups(&self) -> Result<(), CheckError> {
        let service = &self.name;
        if self.listeners.is_empty() {
            return Err(CheckError::value(
                in_service(InService::Element),
                format!(
                    "service {service:?} has no group and no listener (expected a group, or listeners with routes)"
                ),
            ));
        }
        if let Some((index, listener)) = self
            .listeners
            .iter()
            .enumerate()
            .find(|(_, l)| l.routes.is_empty())
        {
            return Err(CheckError::value(
                in_service(InService::Listener(index)),
                format!(
                    "service {service:?} has no group, and its listener {listener} has no route (expected a group, or routes on every listener)"
                ),
            ));
        }
        if !self.enabled_group.is_empty() {
            return Err(CheckError::new(
                in_service(InService::Enabled),
                Rule::UnknownEnabledGroup {
                    service: service.clone(),
                    group: self.enabled_group.clone(),
                },
                format!(
                    "service {service:?} has no group named {:?} to enable (it has no group)",
                    self.enabled_group
                ),
            ));
        }
        Ok(())
    }

    /// The rule of the enabled group: one of the service's groups, not a
    /// backup group (a backup stands in for it), with at least one host
    /// (other groups may be empty: the admin API empties standby groups).
    pub fn check_enabled(&self) -> Result<(), CheckError> {
        self.check_enabled_with(Enabled::NeedsHost)
    }

    fn check_enabled_with(&self, rule: Enabled) -> Result<(), CheckError> {
        let service = &self.name;
        let enabled = &self.enabled_group;
        let Some((index, group)) = self
            .groups
            .iter()
            .enumerate()
            .find(|(_, g)| g.name == *enabled)
        else {
            let known: Vec<_> = self.groups.iter().map(|g| g.name.as_str()).collect();
            return Err(CheckError::new(
                in_service(InService::Enabled),
                Rule::UnknownEnabledGroup {
                    service: service.clone(),
                    group: enabled.clone(),
                },
                format!(
                    "service {service:?} has no group named {enabled:?} to enable (groups: {})",
                    known.join(", ")
                ),
            ));
        };
        if group.options.backup {
            return Err(CheckError::new(
                in_service(InService::Group(index, InGroup::Backup)),
                Rule::BackupEnabled {
                    service: service.clone(),
                    group: enabled.clone(),
                },
                format!(
                    "service {service:?}: group {enabled:?} is both enabled and a backup group (expected the enabled group without backup)"
                ),
            ));
        }
        if group.hosts.is_empty() && rule == Enabled::NeedsHost {
            return Err(CheckError::new(
                in_service(InService::Element),
                Rule::EnabledGroupEmpty {
                    service: service.clone(),
                    group: enabled.clone(),
                },
                format!("service {service:?}: enabled group {enabled:?} has no host"),
            ));
        }
        Ok(())
    }
}

/// Whether the enabled group must have a host already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enabled {
    /// It must: a command enabling a group, or taking hosts from it.
    NeedsHost,
    /// It may be empty: a file, a builder, a service a command creates,
    /// hosts to follow.
    MayStartEmpty,
}

impl Listener {
    /// The rules of one listener of `service`: an address and settings a file
    /// could say (`inspectBytes` from 1 to [`MAX_INSPECT_BYTES`]), at most
    /// [`MAX_ROUTES`] routes, each by its rules ([`Route::check`]) and none
    /// back to `service`. Whether another uses the address
    /// ([`Config::check_listen_free`]) and whether the services its routes
    /// name exist ([`Config::check_listener`]) are the configuration's rules.
    pub fn check(&self, service: &str) -> Result<(), CheckError> {
        let place = in_service(InService::Listener(0));
        let setting = |xml| in_service(InService::ListenerSetting(0, xml));
        let addr = &self.addr;
        check_listen_addr(addr).map_err(|why| {
            CheckError::value(
                place,
                format!(
                    "service {service:?}: bad listen address {:?}: {why}",
                    addr.to_string()
                ),
            )
        })?;
        let within = || format!("service {service:?}, listener {addr}");
        seconds(
            setting("inspectTimeout"),
            "inspectTimeout",
            self.options.inspect_timeout,
        )
        .map_err(|e| e.within(within))?;
        let bytes = self.options.inspect_bytes;
        if bytes == 0 || bytes > MAX_INSPECT_BYTES {
            return Err(CheckError::value(
                setting("inspectBytes"),
                format!("bad inspectBytes {bytes}: expected 1 to {MAX_INSPECT_BYTES}"),
            )
            .within(within));
        }
        self.options
            .check()
            .map_err(|why| CheckError::value(place, format!("service {service:?}: {why}")))?;
        if self.routes.len() > MAX_ROUTES {
            return Err(CheckError::value(
                in_service(InService::Route(0, MAX_ROUTES, InRoute::Element)),
                format!(
                    "service {service:?}: listener {addr} has {} routes (expected at most {MAX_ROUTES})",
                    self.routes.len()
                ),
            ));
        }
        for (index, route) in self.routes.iter().enumerate() {
            route
                .check()
                .map_err(|e| e.in_route(index).within(within))?;
            if route.service == *service {
                return Err(CheckError::value(
                    in_service(InService::Route(0, index, InRoute::Service)),
                    format!(
                        "service {service:?} routes to itself on {addr} (expected another service: its own groups serve the clients no route matches)"
                    ),
                ));
            }
        }
        if let Some(tls) = &self.tls {
            tls.check().map_err(|e| e.within(within))?;
            // The handshake tells only the SNI and the ALPN protocols.
            let plain = self.routes.iter().position(|r| {
                r.host.is_some() || r.protocol.is_some_and(|p| p != ClientProtocol::Tls)
            });
            if let Some(index) = plain {
                return Err(CheckError::value(
                    in_service(InService::Route(0, index, InRoute::Element)),
                    format!(
                        "service {service:?}: route {} on {addr} ({}) cannot match on a listener that terminates TLS (expected sni or alpn: what its handshake tells)",
                        index + 1,
                        self.routes[index].conditions()
                    ),
                ));
            }
        }
        // A route whose conditions an earlier one has never matches, and
        // removing "the" route would leave it to take over.
        let mut seen = HashMap::with_capacity(self.routes.len());
        for (index, route) in self.routes.iter().enumerate() {
            if let Some(first) = seen.insert(route.effective_conditions(), index) {
                return Err(CheckError::value(
                    in_service(InService::Route(0, index, InRoute::Element)),
                    format!(
                        "service {service:?}: route {} on {addr} ({}) has the conditions of route {}: it would never match (expected other conditions, or one of them removed)",
                        index + 1,
                        route.conditions(),
                        first + 1
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl ListenerTls {
    /// The rules of a terminating listener's TLS: one to [`MAX_TLS_CERTS`]
    /// certificates, file names given, settings a file could say. Whether
    /// the files load is `tls::load`'s (it reads them).
    pub fn check(&self) -> Result<(), CheckError> {
        let place = |t| in_service(InService::Tls(0, t));
        if !self.acme.is_empty() {
            if !self.certs.is_empty() {
                return Err(CheckError::value(
                    place(0),
                    "a tls with acme names and certificate files (expected one or the other)",
                ));
            }
            if self.acme.len() > MAX_TLS_CERTS {
                return Err(CheckError::value(
                    place(0),
                    format!(
                        "{} certificates (expected 1 to {MAX_TLS_CERTS})",
                        self.acme.len()
                    ),
                ));
            }
            for (index, cert) in self.acme.iter().enumerate() {
                if cert.names.is_empty() || cert.names.len() > MAX_ACME_NAMES {
                    return Err(CheckError::value(
                        place(index),
                        format!(
                            "{} acme names (expected 1 to {MAX_ACME_NAMES})",
                            cert.names.len()
                        ),
                    ));
                }
                for name in &cert.names {
                    check_acme_name(name).map_err(|why| {
                        CheckError::value(place(index), format!("bad acme name {name:?}: {why}"))
                    })?;
                }
            }
        } else if self.certs.is_empty() || self.certs.len() > MAX_TLS_CERTS {
            return Err(CheckError::value(
                place(0),
                format!(
                    "{} certificates (expected 1 to {MAX_TLS_CERTS})",
                    self.certs.len()
                ),
            ));
        }
        for (index, pair) in self.certs.iter().enumerate() {
            for (what, path) in [("cert", &pair.cert), ("key", &pair.key)] {
                if path.as_os_str().is_empty() || path.to_str().is_none() {
                    return Err(CheckError::value(
                        place(index),
                        format!("tls {}: bad {what} (expected a PEM file name)", index + 1),
                    ));
                }
            }
        }
        seconds(place(0), "handshakeTimeout", self.options.handshake_timeout)?;
        self.options
            .check()
            .map_err(|why| CheckError::value(place(0), why))
    }
}

/// A route's conditions with the protocol its `sni` or `alpn` implies.
type Conditions<'r> = (
    Option<&'r str>,
    Option<&'r str>,
    Option<ClientProtocol>,
    Option<&'r str>,
);

impl Route {
    /// What a client must show to match: `sni=a` and `sni=a protocol=tls`
    /// match the same clients.
    fn effective_conditions(&self) -> Conditions<'_> {
        let implied = (self.sni.is_some() || self.alpn.is_some()).then_some(ClientProtocol::Tls);
        (
            self.sni.as_deref(),
            self.alpn.as_deref(),
            self.protocol.or(implied),
            self.host.as_deref(),
        )
    }
    /// The rules of one route, apart from the service it names (which must
    /// exist: [`Config::check_listener`]): a service name by the name rule, at
    /// least one condition, each a value a file could say ([`parse_sni`],
    /// [`parse_alpn`], [`parse_route_host`]: lower case where those lower
    /// it), `sni` and `alpn` only with `protocol` tls or none, `host` only
    /// with `protocol` http.
    ///
    /// [`parse_sni`]: crate::config::parse_sni
    /// [`parse_alpn`]: crate::config::parse_alpn
    /// [`parse_route_host`]: crate::config::parse_route_host
    pub fn check(&self) -> Result<(), CheckError> {
        let place = |part| in_service(InService::Route(0, 0, part));
        let target = &self.service;
        name(place(InRoute::Service), NameKind::Service, target)?;
        if self.is_unconditional() {
            return Err(CheckError::value(
                place(InRoute::Element),
                format!(
                    "route to {target:?} has no condition (expected one or more of sni, alpn, protocol, host)"
                ),
            ));
        }
        /// A value's parser: its canonical form, or why it is wrong.
        type Parse = fn(&str) -> Result<String, String>;
        let values: [(&str, &Option<String>, InRoute, Parse); 3] = [
            ("sni", &self.sni, InRoute::Sni, parse_sni),
            ("alpn", &self.alpn, InRoute::Alpn, parse_alpn),
            ("host", &self.host, InRoute::Host, parse_route_host),
        ];
        for (key, value, part, parse) in values {
            let Some(value) = value else { continue };
            let why = match parse(value) {
                Ok(canonical) if canonical == *value => continue,
                Ok(canonical) => format!("expected {canonical:?}"),
                Err(why) => why,
            };
            return Err(CheckError::value(
                place(part),
                format!("route to {target:?}: bad {key} {value:?}: {why}"),
            ));
        }
        let protocol = self.protocol;
        for (key, value, part) in [
            ("sni", &self.sni, InRoute::Sni),
            ("alpn", &self.alpn, InRoute::Alpn),
        ] {
            if value.is_some()
                && let Some(other) = protocol.filter(|p| *p != ClientProtocol::Tls)
            {
                return Err(CheckError::value(
                    place(part),
                    format!(
                        "route to {target:?}: {key} is only seen in TLS, not with protocol {other} (expected protocol tls, or none)"
                    ),
                ));
            }
        }
        if self.host.is_some() && protocol != Some(ClientProtocol::Http) {
            return Err(CheckError::value(
                place(InRoute::Host),
                format!(
                    "route to {target:?}: host needs protocol http (expected protocol=\"http\" with it)"
                ),
            ));
        }
        Ok(())
    }
}

impl UserConfig {
    /// The rules of one admin user: a login name by the name rule.
    pub fn check(&self) -> Result<(), CheckError> {
        name(Place::User(0), NameKind::User, &self.name)
    }
}

/// Who listens on an address, for the message when another wants it.
#[derive(Debug, Clone, Copy)]
enum Owner<'c> {
    Service(&'c str),
    Web,
    Ssh,
}

impl fmt::Display for Owner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Service(name) => write!(f, "service {name:?}"),
            Owner::Web => f.write_str("the admin web server"),
            Owner::Ssh => f.write_str("the admin SSH console"),
        }
    }
}

/// The listen addresses taken so far: two listeners on one address would fail
/// at bind time, far from what caused it. Port 0 picks a fresh port at each
/// bind, so such listeners never collide.
#[derive(Default)]
struct Listening<'c> {
    taken: HashMap<&'c ListenAddr, Owner<'c>>,
}

impl<'c> Listening<'c> {
    fn add(
        &mut self,
        place: Place,
        addr: &'c ListenAddr,
        owner: Owner<'c>,
    ) -> Result<(), CheckError> {
        if addr.port == 0 {
            return Ok(());
        }
        if let Some(other) = self.taken.insert(addr, owner) {
            return Err(in_use(place, addr, other));
        }
        Ok(())
    }
}

fn in_use(place: Place, addr: &ListenAddr, other: Owner<'_>) -> CheckError {
    let service = match other {
        Owner::Service(name) => Some(name.to_string()),
        Owner::Web | Owner::Ssh => None,
    };
    CheckError::new(
        place,
        Rule::ListenerInUse {
            listen: addr.to_string(),
            service,
        },
        format!("listen address {addr} is already used by {other}"),
    )
}

impl Config {
    /// Every rule of the model: each service's ([`ServiceConfig::check`]),
    /// service names unique, no listen address used twice (services and the
    /// admin plane alike), every route naming a service that exists and has
    /// groups, the admin plane's settings, users' names unique,
    /// the managers', control socket's, cluster's and resolver's settings.
    /// Linear in the size of the configuration.
    pub fn check(&self) -> Result<(), CheckError> {
        let mut names = HashMap::with_capacity(self.services.len());
        let mut listening = Listening::default();
        for (index, service) in self.services.iter().enumerate() {
            service.check().map_err(|e| e.in_service(index))?;
            if names.insert(service.name.as_str(), service).is_some() {
                return Err(CheckError::new(
                    Place::Service(index, InService::Name),
                    Rule::DuplicateService(service.name.clone()),
                    format!("duplicate service name {:?}", service.name),
                ));
            }
            for (l, listener) in service.listeners.iter().enumerate() {
                listening.add(
                    Place::Service(index, InService::Listener(l)),
                    &listener.addr,
                    Owner::Service(&service.name),
                )?;
            }
        }
        for (s, service) in self.services.iter().enumerate() {
            for (l, listener) in service.listeners.iter().enumerate() {
                for (r, route) in listener.routes.iter().enumerate() {
                    let protocol = service.options.protocol;
                    let target = names.get(&*route.service);
                    check_target(&service.name, protocol, listener, route, target).map_err(
                        |e| e.at(Place::Service(s, InService::Route(l, r, InRoute::Service))),
                    )?;
                }
            }
        }
        if let Some(admin) = &self.admin {
            self.check_admin(admin, &mut listening)?;
        }
        for (task, what) in [
            (&self.manager.host_check, "hostCheck interval"),
            (&self.manager.config_check, "configCheck interval"),
            (&self.manager.heartbeat, "heartbeat interval"),
        ] {
            seconds(Place::Manager, what, task.interval)?;
        }
        if let Some(control) = &self.control
            && control.socket.as_os_str().is_empty()
        {
            return Err(CheckError::value(
                Place::Control,
                "empty control socket path",
            ));
        }
        if let Some(cluster) = &self.cluster {
            check_cluster(cluster)?;
        }
        check_acme(self)?;
        let resolver = &self.resolver;
        resolver
            .check()
            .map_err(|why| CheckError::value(Place::Resolver, format!("resolver: {why}")))?;
        if resolver.min_ttl > resolver.max_ttl {
            return Err(CheckError::value(
                Place::Resolver,
                format!(
                    "resolver minTtl ({}) is longer than maxTtl ({}) (expected minTtl <= maxTtl)",
                    super::write::seconds(resolver.min_ttl),
                    super::write::seconds(resolver.max_ttl)
                ),
            ));
        }
        Ok(())
    }

    fn check_admin<'c>(
        &'c self,
        admin: &'c AdminConfig,
        listening: &mut Listening<'c>,
    ) -> Result<(), CheckError> {
        if let Some(web) = &admin.web {
            check_listen_addr(&web.listen).map_err(|why| {
                CheckError::value(
                    Place::WebListen,
                    format!(
                        "admin web: bad listen address {:?}: {why}",
                        web.listen.to_string()
                    ),
                )
            })?;
            listening.add(Place::WebListen, &web.listen, Owner::Web)?;
            seconds(Place::Web, "refresh", web.refresh)?;
            if let Some(name) = web.allowed_hosts.iter().find(|n| !allowed_host(n)) {
                return Err(CheckError::value(
                    Place::AllowedHosts,
                    format!("bad allowed host {name:?} (expected NAME or NAME:PORT)"),
                ));
            }
        }
        if let Some(ssh) = &admin.ssh {
            check_listen_addr(&ssh.listen).map_err(|why| {
                CheckError::value(
                    Place::SshListen,
                    format!(
                        "admin SSH: bad listen address {:?}: {why}",
                        ssh.listen.to_string()
                    ),
                )
            })?;
            listening.add(Place::SshListen, &ssh.listen, Owner::Ssh)?;
            seconds(Place::Ssh, "scriptTimeout", ssh.script_timeout)?;
        }
        let mut names = HashSet::with_capacity(admin.users.len());
        for (index, user) in admin.users.iter().enumerate() {
            user.check().map_err(|e| e.at(Place::User(index)))?;
            if !names.insert(user.name.as_str()) {
                return Err(CheckError::new(
                    Place::User(index),
                    Rule::DuplicateUser(user.name.clone()),
                    format!("duplicate user name {:?}", user.name),
                ));
            }
        }
        Ok(())
    }

    /// The rule across services for one listen address a command brings in:
    /// no service and no admin server of this configuration uses it. Walks the
    /// listeners only.
    pub fn check_listen_free(&self, addr: &ListenAddr) -> Result<(), CheckError> {
        if addr.port == 0 {
            return Ok(());
        }
        let place = Place::Config;
        for service in &self.services {
            if service.listeners.iter().any(|l| l.addr == *addr) {
                return Err(in_use(place, addr, Owner::Service(&service.name)));
            }
        }
        let admin = self.admin.as_ref();
        if admin
            .and_then(|a| a.web.as_ref())
            .is_some_and(|w| w.listen == *addr)
        {
            return Err(in_use(place, addr, Owner::Web));
        }
        if admin
            .and_then(|a| a.ssh.as_ref())
            .is_some_and(|s| s.listen == *addr)
        {
            return Err(in_use(place, addr, Owner::Ssh));
        }
        Ok(())
    }

    /// The rules of one listener of `service` in this configuration, for a
    /// command adding it or changing its routes: its own
    /// ([`Listener::check`]), and every route naming a service of this
    /// configuration that has groups. Whether its address is free is
    /// [`Config::check_listen_free`]'s. Walks the services once, not the hosts.
    pub fn check_listener(&self, service: &str, listener: &Listener) -> Result<(), CheckError> {
        listener.check(service)?;
        let protocol = self
            .services
            .iter()
            .find(|s| s.name == service)
            .map_or(Transport::Tcp, |s| s.options.protocol);
        self.check_targets(service, protocol, listener)
    }

    /// Every route of `listener` (of `service`) names a service of this
    /// configuration that has groups.
    fn check_targets(
        &self,
        service: &str,
        protocol: Transport,
        listener: &Listener,
    ) -> Result<(), CheckError> {
        if listener.routes.is_empty() {
            return Ok(());
        }
        let names: HashMap<&str, &ServiceConfig> =
            self.services.iter().map(|s| (s.name.as_str(), s)).collect();
        for (index, route) in listener.routes.iter().enumerate() {
            check_target(
                service,
                protocol,
                listener,
                route,
                names.get(&*route.service),
            )
            .map_err(|e| e.at(in_service(InService::Route(0, index, InRoute::Service))))?;
        }
        Ok(())
    }

    /// The rule a command removing `service` must keep: no route of another
    /// service names it. Walks the listeners.
    pub fn check_unrouted(&self, service: &str) -> Result<(), CheckError> {
        for other in &self.services {
            for listener in &other.listeners {
                if listener.routes.iter().any(|r| r.service == service) {
                    return Err(CheckError::value(
                        Place::Config,
                        format!(
                            "service {service:?} is named by a route of service {:?} on {listener} (expected that route removed first)",
                            other.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The rules for a service a command adds: its own
    /// ([`ServiceConfig::check`]), a name no other service has, listen
    /// addresses no one uses, routes to services that exist. Walks the
    /// services and listeners, not the hosts.
    ///
    /// One exception: its enabled group may start without a host (the APIs'
    /// `newService` and the console's `service add` create a service, then
    /// hosts are added to it); a file or a whole configuration may not.
    pub fn check_new_service(&self, service: &ServiceConfig) -> Result<(), CheckError> {
        if self.services.iter().any(|s| s.name == service.name) {
            return Err(CheckError::new(
                Place::Config,
                Rule::DuplicateService(service.name.clone()),
                format!("duplicate service name {:?}", service.name),
            ));
        }
        service.check()?;
        for (index, listener) in service.listeners.iter().enumerate() {
            self.check_listen_free(&listener.addr)?;
            self.check_targets(&service.name, service.options.protocol, listener)
                .map_err(|e| e.in_listener(index))?;
        }
        Ok(())
    }
}

/// The rule of a route's target: `target` (the service it names, if one has
/// that name) exists, has groups to serve the clients sent to it, and speaks
/// the transport (`protocol`) of the listener's service.
fn check_target(
    service: &str,
    protocol: Transport,
    listener: &Listener,
    route: &Route,
    target: Option<&&ServiceConfig>,
) -> Result<(), CheckError> {
    let place = in_service(InService::Route(0, 0, InRoute::Service));
    let name = &route.service;
    match target {
        None => Err(CheckError::new(
            place,
            Rule::UnknownService(name.clone()),
            format!("service {service:?}: route on {listener} to unknown service {name:?}"),
        )),
        Some(target) if target.groups.is_empty() => Err(CheckError::value(
            place,
            format!(
                "service {service:?}: route on {listener} to service {name:?}, which has no group to serve the clients (expected a service with groups)"
            ),
        )),
        Some(target) if target.options.protocol != protocol => Err(CheckError::value(
            place,
            format!(
                "service {service:?}: route on {listener} to service {name:?}, which is protocol=\"{}\" (expected a {} service like this one)",
                target.options.protocol.as_str(),
                protocol.as_str()
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// `allowedHosts`: a name or address with an optional `:port`, as it appears in
/// a `Host` header (`[…]` around an IPv6 address).
fn allowed_host(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 300
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c))
}

/// Whether `name` can be ordered from ACME with `tls-alpn-01` or `http-01`:
/// a DNS name of at least two labels, lower case, no wildcard (those need
/// `dns-01`), not an IP address.
fn check_acme_name(name: &str) -> Result<(), String> {
    const EXPECTED: &str = "expected a DNS name like www.example.com";
    if name.starts_with("*.") {
        return Err("wildcard names need the dns-01 challenge, which txlb does not answer (expected the names themselves)".into());
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("an IP address ({EXPECTED})"));
    }
    let valid = name.len() <= 253
        && name.contains('.')
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    match valid {
        true => Ok(()),
        false => Err(EXPECTED.into()),
    }
}

/// The rules of `<acme>` and its users: a directory and a storage given,
/// settings a file could say; a `<tls acme>` only with
/// an `<acme>`; `acmeHttp` only on plain listeners, and `http-01` only with
/// one of them.
fn check_acme(config: &Config) -> Result<(), CheckError> {
    let mut acme_tls = None;
    let mut acme_http = None;
    for (s, service) in config.services.iter().enumerate() {
        for (l, listener) in service.listeners.iter().enumerate() {
            let tls = listener.tls.as_ref();
            if acme_tls.is_none() && tls.is_some_and(|t| !t.acme.is_empty()) {
                acme_tls = Some(Place::Service(s, InService::Tls(l, 0)));
            }
            if listener.options.acme_http {
                let place = Place::Service(s, InService::ListenerSetting(l, "acmeHttp"));
                if tls.is_some() {
                    return Err(CheckError::value(
                        place,
                        format!(
                            "service {:?}: acmeHttp on listener {}, which terminates TLS (expected it on a plain listener: ACME's http-01 is plain HTTP, on port 80)",
                            service.name, listener.addr
                        ),
                    ));
                }
                acme_http.get_or_insert(place);
            }
        }
    }
    let Some(acme) = &config.acme else {
        if let Some(place) = acme_tls.or(acme_http) {
            return Err(CheckError::value(
                place,
                "certificates from ACME need an <acme> element in <config> (expected <acme directory=\"https://…\" storage=\"DIR\"/>, TOML [acme])",
            ));
        }
        return Ok(());
    };
    let bad = |message: String| CheckError::value(Place::Acme, message);
    acme.check().map_err(|why| bad(format!("acme: {why}")))?;
    if acme.directory.0.is_empty() {
        return Err(bad(
            "acme directory is missing (expected directory=\"https://…/directory\", the ACME server's directory URL)".into(),
        ));
    }
    match &acme.storage {
        Some(dir) if dir.to_str().is_some() => {}
        _ => {
            return Err(bad(
                "acme storage is missing (expected storage=\"DIR\", where the account key and certificates are kept)".into(),
            ));
        }
    }
    seconds(Place::Acme, "renewBefore", acme.renew_before)?;
    if acme.challenge == AcmeChallenge::Http01 && acme_tls.is_some() && acme_http.is_none() {
        return Err(bad(
            "challenge http-01 with no listener answering it (expected acmeHttp=\"true\" on a plain listener, reached on port 80 of the names)".into(),
        ));
    }
    Ok(())
}

fn check_cluster(cluster: &ClusterConfig) -> Result<(), CheckError> {
    let bad = |message: String| CheckError::value(Place::Cluster, message);
    if cluster.endpoints.is_empty() {
        return Err(bad(
            "etcd endpoint (etcd=\"http://HOST:PORT\") is missing".to_string()
        ));
    }
    for endpoint in &cluster.endpoints {
        match parse_etcd_endpoint(endpoint) {
            Ok(parsed) if parsed == *endpoint => {}
            Ok(_) => {
                return Err(bad(format!(
                    "bad etcd endpoint {endpoint:?}: expected http://HOST:PORT without a trailing '/'"
                )));
            }
            Err(why) => return Err(bad(format!("bad etcd endpoint {endpoint:?}: {why}"))),
        }
    }
    match parse_etcd_prefix(&cluster.prefix) {
        Ok(parsed) if parsed == cluster.prefix => {}
        Ok(_) => {
            return Err(bad(format!(
                "bad key prefix {:?}: expected no trailing '/'",
                cluster.prefix
            )));
        }
        Err(why) => return Err(bad(format!("bad key prefix {:?}: {why}", cluster.prefix))),
    }
    parse_instance_name(&cluster.name)
        .map_err(|why| bad(format!("bad instance name {:?}: {why}", cluster.name)))
}
