//! The raw tree both readers produce → the model, then the model's rules.
//!
//! Here live what only a file can get wrong: a value missing or unreadable
//! (through the value parsers of `parse`), two groups flagged `enable`, no
//! service at all. Every rule of the model is [`Config::check`]'s, the same a
//! builder or a command obeys; this module keeps where each element was
//! written so such an error still points at `FILE:LINE:COL`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Location;
use super::check::{InGroup, InRoute, InService, Place};
use super::error::{ConfigError, Source};
use super::model::*;
use super::options::{GroupOptions, NamedFile, OptionSet, TlsVerify};
use super::parse::{
    MAX_SECONDS, SECONDS_EXPECTED, parse_access, parse_alpn, parse_client_protocol,
    parse_etcd_endpoint, parse_etcd_prefix, parse_host_address, parse_listen_addr,
    parse_route_host, parse_seconds, parse_sni, parse_weight, seconds_from_f64,
};
use super::raw::*;
use crate::config::SchedulerKind;

/// The scheduler of a group that names none. txLoadBalancer refused such a group
/// (it looked the empty name up among its schedulers); `roundr` is the least
/// surprising behaviour and matches what most sample files use.
pub const DEFAULT_SCHEDULER: SchedulerKind = SchedulerKind::RoundRobin;

/// How a raw number is shown in messages: text quoted as written, numbers plain.
fn show(n: &Number) -> String {
    match n {
        Number::Text(s) => format!("{s:?}"),
        Number::Int(i) => i.to_string(),
        Number::Float(f) => f.to_string(),
    }
}

/// Builds the model from a raw tree and checks its rules. `base_dir` is the
/// directory of the configuration file, against which relative log and socket
/// paths are resolved.
pub(crate) fn read(
    raw: RawConfig,
    src: &Source<'_>,
    base_dir: Option<&Path>,
) -> Result<Config, ConfigError> {
    let mut reader = Reader {
        src,
        base_dir,
        spans: Spans {
            config: raw.at,
            ..Spans::default()
        },
    };
    let config = reader.config(raw)?;
    config
        .check()
        .map_err(|e| reader.err(reader.spans.of(e.place()), e.message()))?;
    Ok(config)
}

/// Where the parts of the model were written (byte offsets), for the errors
/// of [`Config::check`]: one offset per host, a few per service.
#[derive(Debug, Default)]
struct Spans {
    config: usize,
    services: Vec<ServiceSpans>,
    users: Vec<usize>,
    web: Option<usize>,
    web_listen: Option<usize>,
    allowed_hosts: Option<usize>,
    ssh: Option<usize>,
    ssh_listen: Option<usize>,
    control: Option<usize>,
    cluster: Option<usize>,
    resolver: Option<usize>,
    acme: Option<usize>,
}

#[derive(Debug, Default)]
struct ServiceSpans {
    at: usize,
    name: usize,
    enabled: usize,
    listeners: Vec<ListenerSpans>,
    groups: Vec<GroupSpans>,
}

#[derive(Debug, Default)]
struct ListenerSpans {
    /// Its address.
    ip: usize,
    /// Each setting written, by XML name, with where its value is.
    settings: Vec<(&'static str, usize)>,
    routes: Vec<RouteSpans>,
    /// Each `<tls>` element.
    tls: Vec<usize>,
}

#[derive(Debug, Default)]
struct RouteSpans {
    at: usize,
    service: Option<usize>,
    sni: Option<usize>,
    alpn: Option<usize>,
    host: Option<usize>,
}

#[derive(Debug, Default)]
struct GroupSpans {
    name: usize,
    backup: Option<usize>,
    /// The `<check>` element, and each of its settings written, by XML name.
    check: Option<usize>,
    check_settings: Vec<(&'static str, usize)>,
    /// The `<agent>` element, and each of its settings written, by XML name.
    agent: Option<usize>,
    agent_settings: Vec<(&'static str, usize)>,
    /// Each host's name (its element's start when it has none).
    hosts: Vec<usize>,
}

impl Spans {
    /// Where `place` was written; the nearest enclosing element if that part
    /// was not written.
    fn of(&self, place: Place) -> usize {
        let at = |span: Option<usize>| span.unwrap_or(self.config);
        match place {
            Place::Config | Place::Manager => self.config,
            Place::Service(s, part) => {
                let Some(service) = self.services.get(s) else {
                    return self.config;
                };
                match part {
                    InService::Element => service.at,
                    InService::Name => service.name,
                    InService::Enabled => service.enabled,
                    InService::Listener(l) => service.listeners.get(l).map_or(service.at, |l| l.ip),
                    InService::ListenerSetting(l, xml) => {
                        let Some(listener) = service.listeners.get(l) else {
                            return service.at;
                        };
                        let setting = listener.settings.iter().find(|(name, _)| *name == xml);
                        setting.map_or(listener.ip, |(_, at)| *at)
                    }
                    InService::Tls(l, t) => {
                        let Some(listener) = service.listeners.get(l) else {
                            return service.at;
                        };
                        listener.tls.get(t).copied().unwrap_or(listener.ip)
                    }
                    InService::Route(l, r, part) => {
                        let Some(listener) = service.listeners.get(l) else {
                            return service.at;
                        };
                        let Some(route) = listener.routes.get(r) else {
                            return listener.ip;
                        };
                        let written = match part {
                            InRoute::Element => None,
                            InRoute::Service => route.service,
                            InRoute::Sni => route.sni,
                            InRoute::Alpn => route.alpn,
                            InRoute::Host => route.host,
                        };
                        written.unwrap_or(route.at)
                    }
                    InService::Group(g, part) => {
                        let Some(group) = service.groups.get(g) else {
                            return service.at;
                        };
                        match part {
                            InGroup::Name => group.name,
                            InGroup::Backup => group.backup.unwrap_or(service.at),
                            InGroup::Host(h) => group.hosts.get(h).copied().unwrap_or(group.name),
                            InGroup::Check(setting) => group
                                .check_settings
                                .iter()
                                .find(|(name, _)| *name == setting)
                                .map(|(_, at)| *at)
                                .or(group.check)
                                .unwrap_or(group.name),
                            InGroup::Agent(setting) => group
                                .agent_settings
                                .iter()
                                .find(|(name, _)| *name == setting)
                                .map(|(_, at)| *at)
                                .or(group.agent)
                                .unwrap_or(group.name),
                        }
                    }
                }
            }
            Place::User(u) => at(self.users.get(u).copied()),
            Place::Web => at(self.web),
            Place::WebListen => at(self.web_listen),
            Place::AllowedHosts => at(self.allowed_hosts.or(self.web)),
            Place::Ssh => at(self.ssh),
            Place::SshListen => at(self.ssh_listen),
            Place::Control => at(self.control),
            Place::Cluster => at(self.cluster),
            Place::Resolver => at(self.resolver),
            Place::Acme => at(self.acme),
        }
    }
}

struct Reader<'s, 'a> {
    src: &'s Source<'a>,
    base_dir: Option<&'s Path>,
    spans: Spans,
}

impl Reader<'_, '_> {
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

    fn config(&mut self, raw: RawConfig) -> Result<Config, ConfigError> {
        let mut services = Vec::with_capacity(raw.services.len());
        for service in raw.services {
            let built = self.service(service)?;
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
                self.spans.resolver = Some(r.at);
                self.options(r.options)?
            }
            None => ResolverOptions::default(),
        };
        let acme = match raw.acme {
            Some(a) => {
                self.spans.acme = Some(a.at);
                let mut acme: AcmeConfig = self.options(a.options)?;
                acme.storage = acme.storage.map(|p| self.path_buf(p));
                acme.ca_bundle = acme.ca_bundle.map(|p| self.path_buf(p));
                Some(acme)
            }
            None => None,
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
            acme,
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

    /// A required name (its rule is [`Config::check`]'s).
    fn name(
        &self,
        value: Option<At<String>>,
        at: usize,
        what: &str,
    ) -> Result<At<String>, ConfigError> {
        self.required(value, at, &format!("{what} name"))
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

    fn listen(&self, value: &At<String>) -> Result<ListenAddr, ConfigError> {
        parse_listen_addr(&value.value).map_err(|why| {
            self.err(
                value.at,
                format!("bad listen address {:?}: {why}", value.value),
            )
        })
    }

    fn path(&self, written: String) -> PathBuf {
        self.path_buf(PathBuf::from(written))
    }

    fn path_buf(&self, path: PathBuf) -> PathBuf {
        match self.base_dir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path,
        }
    }

    fn service(&mut self, raw: RawService) -> Result<ServiceConfig, ConfigError> {
        let name = self.name(raw.name, raw.at, "service")?;
        let label = format!("service {:?}", name.value);
        let mut spans = ServiceSpans {
            at: raw.at,
            name: name.at,
            enabled: raw.at,
            listeners: Vec::with_capacity(raw.listen.len()),
            groups: Vec::with_capacity(raw.groups.len()),
        };
        let mut listeners = Vec::with_capacity(raw.listen.len());
        for listen in raw.listen {
            let ip = self.required(
                listen.ip,
                listen.at,
                "listen address (expected ip = \"HOST:PORT\")",
            )?;
            let settings = listen
                .options
                .iter()
                .filter_map(|(key, value)| {
                    let (xml, _) = ListenOptions::KEYS
                        .iter()
                        .find(|(xml, toml)| key.value == *xml || key.value == *toml)?;
                    Some((*xml, value.at))
                })
                .collect();
            let mut listener_spans = ListenerSpans {
                ip: ip.at,
                settings,
                routes: Vec::with_capacity(listen.routes.len()),
                tls: listen.tls.iter().map(|t| t.at).collect(),
            };
            let mut routes = Vec::with_capacity(listen.routes.len());
            for route in listen.routes {
                let (route, route_spans) = self.route(route)?;
                routes.push(route);
                listener_spans.routes.push(route_spans);
            }
            let tls = self.tls(listen.tls)?;
            listeners.push(Listener {
                addr: self.listen(&ip)?,
                options: self.options(listen.options)?,
                routes,
                tls,
            });
            spans.listeners.push(listener_spans);
        }

        let mut groups: Vec<GroupConfig> = Vec::with_capacity(raw.groups.len());
        // The group flagged `enable`, with where the flag is, for the messages below.
        let mut flagged: Option<(String, usize)> = None;
        for group in raw.groups {
            let enable = group.enable.clone();
            let (built, group_spans) = self.group(group)?;
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
            groups.push(built);
            spans.groups.push(group_spans);
        }

        let enabled_group = match (raw.enabled_group, flagged) {
            (Some(named), flagged) => {
                // An unknown name is the model's rule (reported by the check).
                let known = groups.iter().any(|g| g.name == named.value);
                if let Some((flagged, at)) = flagged
                    && flagged != named.value
                    && known
                {
                    return Err(self.err(
                        at,
                        format!(
                            "{label} enables group {flagged:?} here but group {:?} elsewhere (expected exactly one)",
                            named.value
                        ),
                    ));
                }
                spans.enabled = named.at;
                named.value
            }
            (None, Some((flagged, at))) => {
                spans.enabled = at;
                flagged
            }
            (None, None) if groups.is_empty() => String::new(),
            (None, None) => {
                return Err(self.err(
                    raw.at,
                    format!(
                        "{label} has no enabled group (expected one group with enable true, or the name of the group to enable)"
                    ),
                ));
            }
        };

        let mut service = ServiceConfig {
            name: name.value,
            listeners,
            groups,
            enabled_group,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            options: self.options(raw.options)?,
        };
        self.service_settings(&mut service, raw.connect_timeout)?;
        self.spans.services.push(spans);
        Ok(service)
    }

    /// A route of a listener: its values read (lower-cased where they are
    /// matched without case); its rules are the check's.
    fn route(&self, raw: RawRoute) -> Result<(Route, RouteSpans), ConfigError> {
        let Some(service) = raw.service else {
            return Err(self.err(
                raw.at,
                "route without a service (expected service = the name of the service that serves the clients it matches)",
            ));
        };
        let value = |v: &Option<At<String>>,
                     key: &str,
                     parse: fn(&str) -> Result<String, String>|
         -> Result<Option<String>, ConfigError> {
            v.as_ref()
                .map(|v| {
                    parse(&v.value)
                        .map_err(|why| self.err(v.at, format!("bad {key} {:?}: {why}", v.value)))
                })
                .transpose()
        };
        let protocol = raw
            .protocol
            .as_ref()
            .map(|p| {
                parse_client_protocol(&p.value)
                    .map_err(|why| self.err(p.at, format!("bad protocol {:?}: {why}", p.value)))
            })
            .transpose()?;
        let route = Route {
            sni: value(&raw.sni, "sni", parse_sni)?,
            alpn: value(&raw.alpn, "alpn", parse_alpn)?,
            host: value(&raw.host, "host", parse_route_host)?,
            protocol,
            service: service.value,
        };
        let at = |v: &Option<At<String>>| v.as_ref().map(|v| v.at);
        let spans = RouteSpans {
            at: raw.at,
            service: Some(service.at),
            sni: at(&raw.sni),
            alpn: at(&raw.alpn),
            host: at(&raw.host),
        };
        Ok((route, spans))
    }

    /// A listener's `<tls>` elements: `None` without any. The files are named
    /// here (relative to the configuration's directory) and read later, by
    /// `tls::load` (`txlb check`, start, every reload); each remembers where it
    /// was written for the errors of reading it. Settings go on the first.
    fn tls(&self, raw: Vec<RawTls>) -> Result<Option<ListenerTls>, ConfigError> {
        let Some(first) = raw.first() else {
            return Ok(None);
        };
        let client_ca_at = first
            .options
            .iter()
            .find(|(key, _)| key.value == "clientCa" || key.value == "client_ca")
            .map(|(_, value)| self.src.locate(value.at));
        if raw.iter().any(|t| t.acme.is_some()) {
            return self.acme_tls(raw).map(Some);
        }
        let mut certs = Vec::with_capacity(raw.len());
        let mut options = TlsOptions::default();
        for (index, entry) in raw.into_iter().enumerate() {
            let file = |value: Option<At<String>>, what: &str| match value {
                Some(v) if !v.value.is_empty() => Ok(v),
                Some(v) => Err(self.err(v.at, format!("empty {what} (expected a PEM file)"))),
                None => Err(self.err(
                    entry.at,
                    format!("tls without {what} (expected cert=\"FILE\" key=\"FILE\", PEM files)"),
                )),
            };
            let cert = file(entry.cert.clone(), "cert")?;
            let key = file(entry.key.clone(), "key")?;
            if index == 0 {
                options = self.options(entry.options)?;
            } else if let Some((key, _)) = entry.options.first() {
                return Err(self.err(
                    key.at,
                    format!(
                        "{:?} on a listener's second or later tls (expected it on the first: its settings apply to the whole listener)",
                        key.value
                    ),
                ));
            }
            certs.push(TlsCert {
                cert: self.path(cert.value),
                key: self.path(key.value),
                written: WrittenAt {
                    element: Some(self.src.locate(entry.at)),
                    cert: Some(self.src.locate(cert.at)),
                    key: Some(self.src.locate(key.at)),
                    client_ca: if index == 0 {
                        client_ca_at.clone()
                    } else {
                        None
                    },
                },
            });
        }
        options.client_ca = options.client_ca.map(|ca| self.path_buf(ca));
        Ok(Some(ListenerTls {
            certs,
            options,
            ..ListenerTls::default()
        }))
    }

    /// A listener's `<tls acme="NAME …">` elements, each a certificate from
    /// ACME, with no files (every `<tls>` of the listener is one); the names
    /// are split here (spaces or commas) and checked by `ListenerTls::check`.
    /// Settings go on the first.
    fn acme_tls(&self, raw: Vec<RawTls>) -> Result<ListenerTls, ConfigError> {
        let mut tls = ListenerTls::default();
        for (index, entry) in raw.into_iter().enumerate() {
            if let Some(file) = entry.cert.as_ref().or(entry.key.as_ref()) {
                return Err(self.err(
                    file.at,
                    "cert or key on a listener whose certificates come from ACME (expected every tls of a listener either acme=\"NAMES\", whose certificate txlb orders, or cert and key files)",
                ));
            }
            let Some(names) = entry.acme else {
                return Err(self.err(
                    entry.at,
                    "tls without acme on a listener whose certificates come from ACME (expected every tls of a listener either acme=\"NAMES\" or cert and key files, not both)",
                ));
            };
            let mut acme: Vec<String> = Vec::new();
            for name in names
                .value
                .split([' ', ',', '\t', '\n'])
                .filter(|n| !n.is_empty())
            {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if !acme.contains(&name) {
                    acme.push(name);
                }
            }
            if acme.is_empty() {
                return Err(self.err(
                    names.at,
                    "empty acme (expected the certificate's DNS names, e.g. acme=\"example.com www.example.com\")",
                ));
            }
            let mut written = WrittenAt {
                element: Some(self.src.locate(entry.at)),
                ..WrittenAt::default()
            };
            if index == 0 {
                written.client_ca = entry
                    .options
                    .iter()
                    .find(|(key, _)| key.value == "clientCa" || key.value == "client_ca")
                    .map(|(_, value)| self.src.locate(value.at));
                tls.options = self.options(entry.options)?;
                tls.options.client_ca = tls.options.client_ca.map(|ca| self.path_buf(ca));
            } else if let Some((key, _)) = entry.options.first() {
                return Err(self.err(
                    key.at,
                    format!(
                        "{:?} on a listener's second or later tls (expected it on the first: its settings apply to the whole listener)",
                        key.value
                    ),
                ));
            }
            tls.acme.push(AcmeCert {
                names: acme,
                written,
            });
        }
        Ok(tls)
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

    fn group(&self, raw: RawGroup) -> Result<(GroupConfig, GroupSpans), ConfigError> {
        let name = self.name(raw.name, raw.at, "group")?;
        let scheduler = match raw.scheduler {
            None => DEFAULT_SCHEDULER,
            Some(s) => s
                .value
                .parse::<SchedulerKind>()
                .map_err(|e| self.err(s.at, e.to_string()))?,
        };
        let mut spans = GroupSpans {
            name: name.at,
            backup: raw
                .options
                .iter()
                .find(|(key, _)| key.value == "backup")
                .map(|(key, _)| key.at),
            hosts: Vec::with_capacity(raw.hosts.len()),
            check: raw.check.as_ref().map(|c| c.at),
            agent: raw.agent.as_ref().map(|c| c.at),
            agent_settings: raw
                .agent
                .as_ref()
                .map_or_else(Vec::new, |c| settings_at(&c.options, AgentConfig::KEYS)),
            check_settings: raw.check.as_ref().map_or_else(Vec::new, |c| {
                c.options
                    .iter()
                    .filter_map(|(key, value)| {
                        CheckConfig::KEYS
                            .iter()
                            .find(|(xml, toml)| key.value == *xml || key.value == *toml)
                            .map(|(xml, _)| (*xml, value.at))
                    })
                    .collect()
            }),
        };
        let mut hosts: Vec<HostConfig> = Vec::with_capacity(raw.hosts.len());
        for (index, host) in raw.hosts.into_iter().enumerate() {
            spans
                .hosts
                .push(host.name.as_ref().map_or(host.at, |n| n.at));
            hosts.push(self.host(host, index)?);
        }
        // Where the files of TLS origination are named, for the errors of
        // reading them (start, reloads).
        let file_at = |names: [&str; 2]| {
            raw.options
                .iter()
                .find(|(key, _)| names.contains(&key.value.as_str()))
                .map(|(_, value)| self.src.locate(value.at))
        };
        let cert_at = file_at(["tlsCert", "tls_cert"]);
        let key_at = file_at(["tlsKey", "tls_key"]);
        let verify_at = file_at(["tlsVerify", "tls_verify"]);
        let mut options: GroupOptions = self.options(raw.options)?;
        let locate = |file: &mut NamedFile, at: Option<Location>| {
            file.written = file.path.to_str().map(str::to_string);
            file.path = self.path_buf(std::mem::take(&mut file.path));
            file.at = at;
        };
        if let Some(file) = &mut options.tls_cert {
            locate(file, cert_at);
        }
        if let Some(file) = &mut options.tls_key {
            locate(file, key_at);
        }
        if let TlsVerify::Ca(file) = &mut options.tls_verify {
            locate(file, verify_at);
        }
        let group = GroupConfig {
            name: name.value,
            scheduler,
            hosts: hosts.into(),
            options,
            check: match raw.check {
                Some(check) => Some(self.options(check.options)?),
                None => None,
            },
            agent: match raw.agent {
                Some(agent) => Some(self.options(agent.options)?),
                None => None,
            },
        };
        Ok((group, spans))
    }

    fn host(&self, raw: RawHost, index: usize) -> Result<HostConfig, ConfigError> {
        // txLoadBalancer named anonymous hosts after their position.
        let name = match raw.name {
            None => format!("host.{index}"),
            Some(name) => name.value,
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

    fn admin(&mut self, raw: RawAdmin) -> Result<AdminConfig, ConfigError> {
        let web = match raw.web {
            None => None,
            Some(web) => {
                let listen = self.required(web.listen, web.at, "listen address of web")?;
                self.spans.web = Some(web.at);
                self.spans.web_listen = Some(listen.at);
                self.spans.allowed_hosts = web.allowed_hosts.as_ref().map(|a| a.at);
                Some(AdminWebConfig {
                    listen: self.listen(&listen)?,
                    enable: web.enable.is_none_or(|e| e.value),
                    secure: web.secure.is_some_and(|s| s.value),
                    refresh: match web.refresh {
                        None => DEFAULT_ADMIN_REFRESH,
                        Some(r) => self.seconds(&r, "refresh")?,
                    },
                    metrics_public: web.metrics_public.is_some_and(|m| m.value),
                    cert: web.cert.map(|c| self.path(c.value)),
                    key: web.key.map(|k| self.path(k.value)),
                    allowed_hosts: web.allowed_hosts.map(|a| a.value).unwrap_or_default(),
                    changes_require_post: web.changes_require_post.is_some_and(|c| c.value),
                })
            }
        };
        let ssh = match raw.ssh {
            None => None,
            Some(ssh) => {
                let listen = self.required(ssh.listen, ssh.at, "listen address of ssh")?;
                self.spans.ssh = Some(ssh.at);
                self.spans.ssh_listen = Some(listen.at);
                Some(AdminSshConfig {
                    listen: self.listen(&listen)?,
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
        for user in raw.users {
            let name = self.name(user.name, user.at, "user")?;
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
            self.spans.users.push(name.at);
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

    fn control(&mut self, raw: RawControl) -> Result<ControlConfig, ConfigError> {
        let socket = self.required(raw.socket, raw.at, "control socket path")?;
        self.spans.control = Some(socket.at);
        Ok(ControlConfig {
            socket: if socket.value.is_empty() {
                // Empty stays empty (not the base directory), for the rule.
                PathBuf::new()
            } else {
                self.path(socket.value)
            },
        })
    }

    fn cluster(&mut self, raw: RawCluster) -> Result<ClusterConfig, ConfigError> {
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
        let prefix = parse_etcd_prefix(&prefix.value).map_err(|reason| {
            self.err(
                prefix.at,
                format!("bad key prefix {:?}: {reason}", prefix.value),
            )
        })?;
        let name = self.required(raw.name, raw.at, "instance name (name=\"NAME\")")?;
        self.spans.cluster = Some(name.at);
        Ok(ClusterConfig {
            endpoints,
            prefix,
            name: name.value,
        })
    }
}

/// Where each setting of an element was written, by XML name.
fn settings_at(
    options: &[(At<String>, At<RawValue>)],
    keys: &[(&'static str, &'static str)],
) -> Vec<(&'static str, usize)> {
    options
        .iter()
        .filter_map(|(key, value)| {
            keys.iter()
                .find(|(xml, toml)| key.value == *xml || key.value == *toml)
                .map(|(xml, _)| (*xml, value.at))
        })
        .collect()
}
