//! Reads the TOML configuration format (for new users) into the raw tree.
//!
//! The TOML format carries the same model as txLoadBalancer's XML, with
//! snake_case keys and real booleans and numbers:
//!
//! ```toml
//! [[service]]
//! name = "web"
//! listen = ["0.0.0.0:8080"]   # or tables, with settings of their own:
//! # listen = ["0.0.0.0:80", { ip = "0.0.0.0:8080", accept_proxy = true,
//! #                           trusted_proxies = ["10.0.0.0/8"] }]
//! # and routes: clients sent to other services by what they send first
//! # (see `Route`; tried in order, the first match wins):
//! # listen = [{ ip = "0.0.0.0:443", inspect_timeout = 5.0, routes = [
//! #     { sni = "api.example.com", service = "api" },
//! #     { sni = "*.example.org", alpn = "h2", service = "org" },
//! #     { protocol = "http", host = "app.example.com", service = "app" },
//! #     { protocol = "ssh", service = "bastion" },
//! # ] }]
//! # A listener with `tls` terminates TLS (the hosts receive plaintext); the
//! # certificate is chosen by the client's SNI, the first when none matches;
//! # settings on the first entry apply to the listener:
//! # listen = [{ ip = "0.0.0.0:6380", tls = [
//! #     { cert = "redis.pem", key = "redis.key", alpn = ["redis"], min_version = "1.3",
//! #       client_ca = "clients.pem", client_auth = "required", handshake_timeout = 10 },
//! #     { cert = "other.pem", key = "other.key" },
//! # ] }]
//! # Or certificates txlb orders and renews from ACME ([acme] below), one per
//! # entry, chosen by SNI too:
//! # listen = [{ ip = "0.0.0.0:443", tls = [{ acme = "example.com www.example.com" },
//! #     { acme = "api.example.com" }] }]
//! # Listeners may also be written [[service.listen]] tables (ip = …, routes
//! # = […] or [[service.listen.routes]] tables).
//! enabled_group = "prod"      # optional if exactly one group has enable = true
//! connect_timeout = 3.0       # seconds, optional (default 3)
//!
//!   [[service.group]]
//!   name = "prod"
//!   scheduler = "leastc"      # rand, roundr, leastc, weightr, hash, p2c, wleastc, wrr
//!                             # or an alias; default roundr
//!   enable = true
//!   slow_start = 30           # seconds, optional: ramp a returning host's share
//!   hosts = [ { name = "h1", ip = "10.0.0.1:80", weight = 5 } ]
//!
//!   [[service.group]]
//!   name = "standby"
//!   hosts = [ { name = "h2", ip = "[2001:db8::2]:80" } ]
//!
//! [admin.web]
//! listen = "localhost:7000"
//! enable = true               # default true
//! secure = false              # default false
//! refresh = 10                # seconds, default 10
//! metrics_public = false      # /metrics without auth, default false
//! # cert = "admin.crt"        # PEM files for secure; without them a
//! # key = "admin.key"         # self-signed pair is kept beside this file
//! # allowed_hosts = ["lb.example.com"]  # Host names besides its address, localhost
//! # changes_require_post = true         # legacy changes by GET refused
//!
//! [admin.ssh]
//! listen = "localhost:2222"
//! # authorized_keys = "keys"  # OpenSSH authorized_keys; access=readonly per key
//! # host_key = "host.key"     # default: <stem>-ssh_host_ed25519_key beside this file
//! # script_timeout = 10       # seconds one `script` may run
//!
//! [[admin.user]]
//! name = "admin"
//! password = "..xpoEyRReGzk"  # crypt(3) hash
//! access = "full"             # full or readonly, default full
//!
//! [manager]
//! host_check = { interval = 10, enable = true }
//! config_check = { interval = 10, enable = false }
//! heartbeat = { interval = 20, enable = false }
//!
//! [logging]
//! file = "txlb.log"           # relative to the configuration file's directory
//!
//! [control]
//! socket = "/run/txlb.sock"
//!
//! [cluster]                   # fleet mode: the configuration lives in etcd
//! etcd = "http://127.0.0.1:2379"   # comma-separated endpoints
//! prefix = "/txlb/prod"
//! name = "lb1"                # this instance, unique in the fleet
//!
//! [resolver]                  # optional: how host names are (re-)resolved
//! nameserver = ["127.0.0.1:5353"]  # default: the system's (/etc/resolv.conf)
//! min_ttl = 5                 # seconds: floor of the record TTL
//! max_ttl = 300               # seconds: ceiling of the record TTL
//!
//! # Certificates of `tls = [{ acme = "…" }]` (not with [cluster]):
//! # [acme]
//! # directory = "https://acme-v02.api.letsencrypt.org/directory"
//! # email = "ops@example.com"
//! # storage = "/var/lib/txlb/acme"   # account key and certificates (0600)
//! # challenge = "tls-alpn-01"   # or "http-01" (listeners with acme_http = true)
//! # renew_before = 2592000      # seconds before expiry (30 days)
//! ```
//!
//! Unknown keys are errors, so typos are caught. Only structure and types are
//! checked here; values go through the same `read` and `check` rules as XML.

use serde::Deserialize;
use serde_spanned::Spanned;

use super::error::{ConfigError, Source};
use super::raw::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    service: Vec<Spanned<Service>>,
    admin: Option<Admin>,
    manager: Option<Manager>,
    logging: Option<Logging>,
    control: Option<Spanned<Control>>,
    cluster: Option<Spanned<Cluster>>,
    /// Keys read with the options (`Options::read`).
    resolver: Option<Spanned<serde::de::IgnoredAny>>,
    /// Keys read with the options (`Options::read`).
    acme: Option<Spanned<serde::de::IgnoredAny>>,
}

#[derive(Deserialize)]
// Unknown keys: checked with the options (`options_of`).
struct Service {
    name: Option<Spanned<String>>,
    #[serde(default)]
    listen: Vec<Spanned<ListenEntry>>,
    enabled_group: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<f64>>,
    #[serde(default)]
    group: Vec<Spanned<Group>>,
}

/// An entry of `listen`: an address, or a table with `ip`, `routes` and
/// settings (which the second pass reads, with their positions).
enum ListenEntry {
    Addr(String),
    Table {
        ip: Option<Spanned<String>>,
        routes: Vec<Spanned<Route>>,
        tls: Vec<Spanned<Tls>>,
    },
}

/// An entry of a listen table's `tls`: the files (its settings are read
/// with the options, [`Options::read`]).
#[derive(Deserialize)]
// Unknown keys: checked with the options (`options_of`).
struct Tls {
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    acme: Option<Spanned<String>>,
}

/// An entry of a listen table's `routes`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Route {
    service: Option<Spanned<String>>,
    sni: Option<Spanned<String>>,
    alpn: Option<Spanned<String>>,
    protocol: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for ListenEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entry;
        impl<'de> serde::de::Visitor<'de> for Entry {
            type Value = ListenEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a listen address or a table with ip")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ListenEntry, E> {
                Ok(ListenEntry::Addr(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ListenEntry, A::Error> {
                let mut ip = None;
                let mut routes = Vec::new();
                let mut tls = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "ip" => ip = Some(map.next_value::<Spanned<String>>()?),
                        "routes" => routes = map.next_value()?,
                        "tls" => tls = map.next_value()?,
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(ListenEntry::Table { ip, routes, tls })
            }
        }
        d.deserialize_any(Entry)
    }
}

#[derive(Deserialize)]
// Unknown keys: checked with the options (`options_of`).
struct Group {
    name: Option<Spanned<String>>,
    scheduler: Option<Spanned<String>>,
    enable: Option<Spanned<bool>>,
    #[serde(default)]
    hosts: Vec<Spanned<Host>>,
    /// Keys read with the options (`Options::read`).
    check: Option<Spanned<serde::de::IgnoredAny>>,
    /// Keys read with the options (`Options::read`).
    agent: Option<Spanned<serde::de::IgnoredAny>>,
}

#[derive(Deserialize)]
// Unknown keys: checked with the options (`options_of`).
struct Host {
    name: Option<Spanned<String>>,
    ip: Option<Spanned<String>>,
    weight: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Admin {
    web: Option<Spanned<Web>>,
    ssh: Option<Spanned<Ssh>>,
    #[serde(default)]
    user: Vec<Spanned<User>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Web {
    listen: Option<Spanned<String>>,
    enable: Option<Spanned<bool>>,
    secure: Option<Spanned<bool>>,
    refresh: Option<Spanned<f64>>,
    metrics_public: Option<Spanned<bool>>,
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    allowed_hosts: Option<Spanned<Vec<String>>>,
    changes_require_post: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ssh {
    listen: Option<Spanned<String>>,
    enable: Option<Spanned<bool>>,
    authorized_keys: Option<Spanned<String>>,
    host_key: Option<Spanned<String>>,
    script_timeout: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct User {
    name: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    access: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manager {
    host_check: Option<Task>,
    config_check: Option<Task>,
    heartbeat: Option<Task>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Task {
    interval: Option<Spanned<f64>>,
    enable: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Logging {
    file: Option<Spanned<String>>,
    access: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Control {
    socket: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Cluster {
    etcd: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
}

/// Where a value starts: past its opening quote(s) for strings, so a column
/// points at the same character as in XML, where the quote is not part of it.
fn at<T>(text: &str, s: Spanned<T>) -> At<T> {
    let start = s.span().start;
    value_at(text, start, s.into_inner())
}

/// `value`, written at byte `start` of `text` (see [`at`]).
fn value_at<T>(text: &str, start: usize, value: T) -> At<T> {
    let rest = text.get(start..).unwrap_or("");
    let skip = ["\"\"\"", "'''", "\"", "'"]
        .iter()
        .find(|q| rest.starts_with(*q))
        .map_or(0, |q| q.len());
    At::new(value, start + skip)
}

fn opt<T>(text: &str, s: Option<Spanned<T>>) -> Option<At<T>> {
    s.map(|s| at(text, s))
}

fn float(text: &str, s: Option<Spanned<f64>>) -> Option<At<Number>> {
    s.map(|s| {
        let a = at(text, s);
        At::new(Number::Float(a.value), a.at)
    })
}

fn route(text: &str, r: Spanned<Route>) -> RawRoute {
    let at = r.span().start;
    let r = r.into_inner();
    RawRoute {
        at,
        service: opt(text, r.service),
        sni: opt(text, r.sni),
        alpn: opt(text, r.alpn),
        protocol: opt(text, r.protocol),
        host: opt(text, r.host),
    }
}

fn task(text: &str, t: Option<Task>) -> Option<RawTask> {
    t.map(|t| RawTask {
        interval: float(text, t.interval),
        enable: opt(text, t.enable),
    })
}

/// Parses TOML text into the raw tree.
pub(crate) fn read(src: &Source<'_>) -> Result<RawConfig, ConfigError> {
    let t = src.text();
    super::depth::check_toml(src)?;
    let file: File = ::toml::from_str(t).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        // The message alone: the location is ours, and toml's Display would
        // repeat the source line.
        src.error(at, e.message().trim_end().to_string())
    })?;
    let mut options = Options::read(src)?;
    let services = file
        .service
        .into_iter()
        .enumerate()
        .map(|(si, s)| {
            let service_at = s.span().start;
            let s = s.into_inner();
            RawService {
                at: service_at,
                name: opt(t, s.name),
                listen: s
                    .listen
                    .into_iter()
                    .enumerate()
                    .map(|(li, l)| {
                        let entry_at = l.span().start;
                        match l.into_inner() {
                            ListenEntry::Addr(ip) => RawListen {
                                at: entry_at,
                                ip: Some(value_at(t, entry_at, ip)),
                                options: Vec::new(),
                                routes: Vec::new(),
                                tls: Vec::new(),
                            },
                            ListenEntry::Table { ip, routes, tls } => RawListen {
                                at: entry_at,
                                ip: opt(t, ip),
                                options: options.take_listen(si, li),
                                routes: routes.into_iter().map(|r| route(t, r)).collect(),
                                tls: tls
                                    .into_iter()
                                    .enumerate()
                                    .map(|(ti, entry)| {
                                        let tls_at = entry.span().start;
                                        let entry = entry.into_inner();
                                        RawTls {
                                            at: tls_at,
                                            cert: opt(t, entry.cert),
                                            key: opt(t, entry.key),
                                            acme: opt(t, entry.acme),
                                            options: options.take(&tls_path(si, li, ti)),
                                        }
                                    })
                                    .collect(),
                            },
                        }
                    })
                    .collect(),
                groups: s
                    .group
                    .into_iter()
                    .enumerate()
                    .map(|(gi, g)| {
                        let group_at = g.span().start;
                        let g = g.into_inner();
                        RawGroup {
                            at: group_at,
                            name: opt(t, g.name),
                            scheduler: opt(t, g.scheduler),
                            enable: opt(t, g.enable),
                            hosts: g
                                .hosts
                                .into_iter()
                                .enumerate()
                                .map(|(hi, h)| {
                                    let host_at = h.span().start;
                                    let h = h.into_inner();
                                    RawHost {
                                        at: host_at,
                                        name: opt(t, h.name),
                                        ip: opt(t, h.ip),
                                        weight: h.weight.map(|w| {
                                            let w = at(t, w);
                                            At::new(Number::Int(w.value), w.at)
                                        }),
                                        options: options.take(&[si, gi, hi]),
                                    }
                                })
                                .collect(),
                            options: options.take(&[si, gi]),
                            check: g.check.map(|c| RawCheck {
                                at: c.span().start,
                                options: options.take(&check_path(si, gi)),
                            }),
                            agent: g.agent.map(|c| RawCheck {
                                at: c.span().start,
                                options: options.take(&agent_path(si, gi)),
                            }),
                        }
                    })
                    .collect(),
                enabled_group: opt(t, s.enabled_group),
                connect_timeout: float(t, s.connect_timeout),
                options: options.take(&[si]),
            }
        })
        .collect();
    let admin = file.admin.map(|a| RawAdmin {
        web: a.web.map(|w| {
            let web_at = w.span().start;
            let w = w.into_inner();
            RawWeb {
                at: web_at,
                listen: opt(t, w.listen),
                enable: opt(t, w.enable),
                secure: opt(t, w.secure),
                refresh: float(t, w.refresh),
                metrics_public: opt(t, w.metrics_public),
                cert: opt(t, w.cert),
                key: opt(t, w.key),
                allowed_hosts: opt(t, w.allowed_hosts),
                changes_require_post: opt(t, w.changes_require_post),
            }
        }),
        ssh: a.ssh.map(|s| {
            let ssh_at = s.span().start;
            let s = s.into_inner();
            RawSsh {
                at: ssh_at,
                listen: opt(t, s.listen),
                enable: opt(t, s.enable),
                authorized_keys: opt(t, s.authorized_keys),
                host_key: opt(t, s.host_key),
                script_timeout: float(t, s.script_timeout),
            }
        }),
        users: a
            .user
            .into_iter()
            .map(|u| {
                let user_at = u.span().start;
                let u = u.into_inner();
                RawUser {
                    at: user_at,
                    name: opt(t, u.name),
                    password: opt(t, u.password),
                    access: opt(t, u.access),
                }
            })
            .collect(),
    });
    let manager = file.manager.map(|m| RawManager {
        host_check: task(t, m.host_check),
        config_check: task(t, m.config_check),
        heartbeat: task(t, m.heartbeat),
    });
    Ok(RawConfig {
        at: 0,
        services,
        admin,
        manager,
        logging: file.logging.map(|l| RawLogging {
            file: opt(t, l.file),
            access: opt(t, l.access),
            format: opt(t, l.format),
        }),
        control: file.control.map(|c| {
            let control_at = c.span().start;
            RawControl {
                at: control_at,
                socket: opt(t, c.into_inner().socket),
            }
        }),
        cluster: file.cluster.map(|c| {
            let cluster_at = c.span().start;
            let c = c.into_inner();
            RawCluster {
                at: cluster_at,
                etcd: opt(t, c.etcd),
                prefix: opt(t, c.prefix),
                name: opt(t, c.name),
            }
        }),
        resolver: file.resolver.map(|r| RawResolver {
            at: r.span().start,
            options: options.take(&[]),
        }),
        acme: file.acme.map(|a| RawAcme {
            at: a.span().start,
            options: options.take(ACME_PATH),
        }),
    })
}

/// The option keys of every service, group and host, with their positions: a
/// second pass over the document, since serde's typed pass cannot keep spans for
/// keys it does not know in advance.
struct Options {
    /// By path: `[service]`, `[service, group]`, `[service, group, host]`,
    /// [`listen_path`] for a table in `listen`; `[]` for `[resolver]`.
    found: std::collections::HashMap<Vec<usize>, RawOptions>,
}

type RawOptions = Vec<(At<String>, At<RawValue>)>;

impl Options {
    fn read(src: &Source<'_>) -> Result<Options, ConfigError> {
        use ::toml::de::DeTable;
        const SERVICE: &[&str] = &[
            "name",
            "listen",
            "enabled_group",
            "connect_timeout",
            "group",
        ];
        const GROUP: &[&str] = &["name", "scheduler", "enable", "hosts", "check", "agent"];
        const HOST: &[&str] = &["name", "ip", "weight"];
        const LISTEN: &[&str] = &["ip", "routes", "tls"];
        const TLS: &[&str] = &["cert", "key", "acme"];
        let doc = DeTable::parse(src.text()).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            src.error(at, e.message().trim_end().to_string())
        })?;
        let mut options = Options {
            found: std::collections::HashMap::new(),
        };
        if let Some(resolver) = get(doc.get_ref(), "resolver")
            && let ::toml::de::DeValue::Table(table) = resolver.get_ref()
        {
            let keys = (&[][..], crate::config::ResolverOptions::KEYS, "[resolver]");
            options.keep(Vec::new(), Self::collect(src, table, keys)?);
        }
        if let Some(acme) = get(doc.get_ref(), "acme") {
            let ::toml::de::DeValue::Table(table) = acme.get_ref() else {
                return Err(src.error(
                    acme.span().start,
                    "expected a table for acme, e.g. [acme] directory = \"https://…\"",
                ));
            };
            let keys = (&[][..], crate::config::AcmeConfig::KEYS, "[acme]");
            options.keep(ACME_PATH.to_vec(), Self::collect(src, table, keys)?);
        }
        for (si, service) in tables(get(doc.get_ref(), "service")).enumerate() {
            let keys = (SERVICE, crate::config::ServiceOptions::KEYS, "[[service]]");
            options.keep(vec![si], Self::collect(src, service, keys)?);
            if let Some(::toml::de::DeValue::Array(entries)) =
                get(service, "listen").map(|v| v.get_ref())
            {
                for (li, entry) in entries.iter().enumerate() {
                    if let ::toml::de::DeValue::Table(table) = entry.get_ref() {
                        let keys = (LISTEN, crate::config::ListenOptions::KEYS, "a listen table");
                        options.keep(listen_path(si, li), Self::collect(src, table, keys)?);
                        for (ti, tls) in tables(get(table, "tls")).enumerate() {
                            let keys = (TLS, crate::config::TlsOptions::KEYS, "a tls table");
                            options.keep(tls_path(si, li, ti), Self::collect(src, tls, keys)?);
                        }
                    }
                }
            }
            for (gi, group) in tables(get(service, "group")).enumerate() {
                let keys = (
                    GROUP,
                    crate::config::GroupOptions::KEYS,
                    "[[service.group]]",
                );
                options.keep(vec![si, gi], Self::collect(src, group, keys)?);
                if let Some(check) = get(group, "check") {
                    let ::toml::de::DeValue::Table(table) = check.get_ref() else {
                        return Err(src.error(
                            check.span().start,
                            "expected a table for check, e.g. check = { type = \"tcp\" }",
                        ));
                    };
                    let keys = (&[][..], crate::config::CheckConfig::KEYS, "a check table");
                    options.keep(check_path(si, gi), Self::collect(src, table, keys)?);
                }
                if let Some(agent) = get(group, "agent") {
                    let ::toml::de::DeValue::Table(table) = agent.get_ref() else {
                        return Err(src.error(
                            agent.span().start,
                            "expected a table for agent, e.g. agent = { port = 9000 }",
                        ));
                    };
                    let keys = (&[][..], crate::config::AgentConfig::KEYS, "an agent table");
                    options.keep(agent_path(si, gi), Self::collect(src, table, keys)?);
                }
                for (hi, host) in tables(get(group, "hosts")).enumerate() {
                    let keys = (HOST, crate::config::HostOptions::KEYS, "a host");
                    options.keep(vec![si, gi, hi], Self::collect(src, host, keys)?);
                }
            }
        }
        Ok(options)
    }

    /// Keeps the options found at `path`; most tables have none, and keeping
    /// no entry for them keeps this map small.
    fn keep(&mut self, path: Vec<usize>, options: RawOptions) {
        if !options.is_empty() {
            self.found.insert(path, options);
        }
    }

    /// The keys of `table` beyond `core`, which must be options.
    fn collect(
        src: &Source<'_>,
        table: &::toml::de::DeTable<'_>,
        (core, options, what): (&[&str], &[(&str, &str)], &str),
    ) -> Result<RawOptions, ConfigError> {
        let mut out = Vec::new();
        for (key, value) in table.iter() {
            let name = key.get_ref().as_ref();
            if core.contains(&name) {
                continue;
            }
            if !options.iter().any(|(_, toml)| *toml == name) {
                let expected: Vec<&str> = core
                    .iter()
                    .copied()
                    .chain(options.iter().map(|(_, t)| *t))
                    .collect();
                return Err(src.error(
                    key.span().start,
                    format!(
                        "unknown key {name:?} in {what} (expected one of: {})",
                        expected.join(", ")
                    ),
                ));
            }
            let raw = to_value(value.get_ref()).ok_or_else(|| {
                src.error(value.span().start, format!("unsupported value for {name}"))
            })?;
            out.push((
                At::new(name.to_string(), key.span().start),
                At::new(RawValue::Toml(raw), value.span().start),
            ));
        }
        Ok(out)
    }

    fn take(&mut self, path: &[usize]) -> RawOptions {
        self.found.remove(path).unwrap_or_default()
    }

    /// The settings of table `listen` of service `service`'s `listen` array.
    fn take_listen(&mut self, service: usize, listen: usize) -> RawOptions {
        self.take(&listen_path(service, listen))
    }
}

/// Where [`Options`] keeps the settings of `[acme]`: a path nothing else has.
const ACME_PATH: &[usize] = &[usize::MAX];

/// Where [`Options`] keeps the settings of a table in a service's `listen`
/// array: a path no group or host has.
fn listen_path(service: usize, listen: usize) -> Vec<usize> {
    vec![service, usize::MAX, listen]
}

/// Where [`Options`] keeps the settings of entry `tls` of a listen table's
/// `tls`: a path nothing else has.
fn tls_path(service: usize, listen: usize, tls: usize) -> Vec<usize> {
    vec![service, usize::MAX, listen, tls]
}

/// Where [`Options`] keeps the settings of a group's `check` table: a path
/// no host has.
fn check_path(service: usize, group: usize) -> Vec<usize> {
    vec![service, group, usize::MAX]
}

/// Where [`Options`] keeps the settings of a group's `agent` table.
fn agent_path(service: usize, group: usize) -> Vec<usize> {
    vec![service, group, usize::MAX - 1]
}

/// The tables of an array of tables (an absent or other value: none),
/// borrowed: the document is walked, never copied.
fn tables<'a, 'i>(
    v: Option<&'a ::toml::Spanned<::toml::de::DeValue<'i>>>,
) -> impl Iterator<Item = &'a ::toml::de::DeTable<'i>> {
    let items: &'a [::toml::Spanned<::toml::de::DeValue<'i>>] = match v.map(|v| v.get_ref()) {
        Some(::toml::de::DeValue::Array(items)) => items,
        _ => &[],
    };
    items.iter().filter_map(|i| match i.get_ref() {
        ::toml::de::DeValue::Table(t) => Some(t),
        _ => None,
    })
}

fn get<'a, 'i>(
    t: &'a ::toml::de::DeTable<'i>,
    key: &str,
) -> Option<&'a ::toml::Spanned<::toml::de::DeValue<'i>>> {
    t.iter().find(|(k, _)| k.get_ref() == key).map(|(_, v)| v)
}

/// A parsed TOML value as a `toml::Value` (what the option types read).
fn to_value(v: &::toml::de::DeValue<'_>) -> Option<::toml::Value> {
    use ::toml::de::DeValue;
    Some(match v {
        DeValue::String(s) => ::toml::Value::String(s.to_string()),
        DeValue::Integer(i) => {
            ::toml::Value::Integer(i64::from_str_radix(i.as_str(), i.radix()).ok()?)
        }
        DeValue::Float(f) => ::toml::Value::Float(f.as_str().replace('_', "").parse().ok()?),
        DeValue::Boolean(b) => ::toml::Value::Boolean(*b),
        DeValue::Array(items) => ::toml::Value::Array(
            items
                .iter()
                .map(|i| to_value(i.get_ref()))
                .collect::<Option<_>>()?,
        ),
        DeValue::Datetime(_) | DeValue::Table(_) => return None,
    })
}
