//! The validated configuration model: what every file format becomes.
//!
//! The XML (txLoadBalancer's format) and TOML readers both produce a [`Config`];
//! nothing downstream knows which format it came from. Every value here has been
//! checked: names are unique where they must be, each service with groups has
//! exactly one enabled group, addresses have ports, schedulers exist, routes
//! name services that exist.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use super::health_check::{CheckKind, CheckRegex, Escaped, RedisRole, StatusList};
pub use super::host_list::{HostEdit, HostList};
pub use super::options::{
    AcmeConfig, AgentConfig, CheckConfig, GroupOptions, HostOptions, ListenOptions,
    ResolverOptions, ServiceOptions, TlsOptions,
};
use crate::config::SchedulerKind;

/// Default connect timeout towards a host.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default period of the hostCheck manager (re-probe bad hosts).
pub const DEFAULT_HOST_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Default period of the configCheck manager (write the running config back).
pub const DEFAULT_CONFIG_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Default period of the heartbeat manager (probe every host).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(20);
/// Default wall time of one SSH console `script` (`<ssh scriptTimeout>`).
pub const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default auto-refresh period of the admin page.
pub const DEFAULT_ADMIN_REFRESH: Duration = Duration::from_secs(10);

/// A whole balancer configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this configuration was read from, if any (used for write-back).
    pub source: Option<PathBuf>,
    /// The load-balanced services, in file order.
    pub services: Vec<ServiceConfig>,
    /// The admin plane (web UI, SSH console, users), if configured.
    pub admin: Option<AdminConfig>,
    /// The background managers.
    pub manager: ManagerConfig,
    /// Where logs go.
    pub logging: LoggingConfig,
    /// The control socket for client-address look-ups, if configured.
    pub control: Option<ControlConfig>,
    /// Fleet mode: the etcd cluster this instance shares its configuration
    /// through, if configured.
    pub cluster: Option<ClusterConfig>,
    /// How host names are resolved and re-resolved (`<resolver>`).
    pub resolver: ResolverOptions,
    /// Where the certificates of `<tls acme="…">` come from (`<acme>`), if
    /// configured.
    pub acme: Option<AcmeConfig>,
}

impl Config {
    /// A configuration with these services and every other part at its default
    /// (no admin plane, default managers, logs to stderr): the start of a
    /// configuration built in code.
    pub fn new(services: Vec<ServiceConfig>) -> Config {
        Config {
            source: None,
            services,
            admin: None,
            manager: ManagerConfig::default(),
            logging: LoggingConfig::default(),
            control: None,
            cluster: None,
            resolver: ResolverOptions::default(),
            acme: None,
        }
    }
}

/// One load-balanced service: listeners in front, groups of hosts behind.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// Unique service name.
    pub name: String,
    /// Where this service accepts clients, each with its own settings. None:
    /// the service is reached only by other services' routes.
    pub listeners: Vec<Listener>,
    /// Groups of hosts; exactly one is enabled. None only when the service has
    /// listeners and every one of them has routes: a client no route matches
    /// is then closed.
    pub groups: Vec<GroupConfig>,
    /// Name of the enabled group: always one of `groups`, or empty (`""`)
    /// when the service has no group.
    pub enabled_group: String,
    /// How long to wait for a host to accept a connection before marking it bad.
    pub connect_timeout: Duration,
    /// Timeouts, limits, access lists, PROXY protocol.
    pub options: ServiceOptions,
}

/// One listener of a service: an address, and settings that override the
/// service's for the clients arriving there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Where to listen.
    pub addr: ListenAddr,
    /// PROXY protocol acceptance and inspection limits for this listener alone.
    pub options: ListenOptions,
    /// Rules sending clients to other services by what they send first (TLS
    /// SNI and ALPN, HTTP `Host`, the protocol), tried in order; empty: every
    /// client is this service's and nothing is read before a host is picked.
    pub routes: Vec<Route>,
    /// `Some`: the listener terminates TLS (`<tls>` children) and its service's
    /// hosts receive the plaintext.
    pub tls: Option<ListenerTls>,
}

impl Listener {
    /// A listener on `addr` that follows its service's settings.
    pub fn new(addr: ListenAddr) -> Self {
        Listener {
            addr,
            options: ListenOptions::default(),
            routes: Vec::new(),
            tls: None,
        }
    }
}

/// Most certificates one terminating listener may have.
pub const MAX_TLS_CERTS: usize = 1_000;

/// Most names one certificate from ACME may have (Let's Encrypt's limit).
pub const MAX_ACME_NAMES: usize = 100;

/// A terminating listener's TLS: its certificates, the first of which serves
/// clients whose SNI matches none (or who send none), and its settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListenerTls {
    /// Certificates with their keys, in file order; at least one, unless
    /// the certificates come from ACME (`acme`), when there is none.
    pub certs: Vec<TlsCert>,
    /// Settings (written on the first `<tls>`).
    pub options: TlsOptions,
    /// The certificates txlb orders from ACME for this listener, one per
    /// `<tls acme="a.example b.example"/>`, in order (chosen by SNI as
    /// files are); empty: the certificates are files (`certs`).
    pub acme: Vec<AcmeCert>,
}

impl ListenerTls {
    /// A listener's TLS with one certificate from ACME for `names`.
    pub fn acme<S: Into<String>>(names: impl IntoIterator<Item = S>) -> ListenerTls {
        ListenerTls {
            acme: vec![AcmeCert::new(names)],
            ..ListenerTls::default()
        }
    }

    /// How many `<tls>` elements it is written as.
    pub(crate) fn entries(&self) -> usize {
        self.certs.len() + self.acme.len()
    }

    /// Every name ordered from ACME for it, certificate after certificate.
    pub fn acme_names(&self) -> impl Iterator<Item = &String> {
        self.acme.iter().flat_map(|c| &c.names)
    }
}

/// One certificate from ACME (`<tls acme="NAME …">`): the DNS names it is
/// ordered for. Which of a listener's certificates a client gets is chosen
/// by its SNI against these names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AcmeCert {
    /// Its DNS names, lower case, in the order written, without repeats.
    pub names: Vec<String>,
    /// Where its `<tls acme>` was written, for the errors of reading the
    /// listener's `clientCa` (on the first).
    pub written: WrittenAt,
}

impl AcmeCert {
    /// A certificate from ACME for `names`, written nowhere.
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> AcmeCert {
        AcmeCert {
            names: names.into_iter().map(Into::into).collect(),
            written: WrittenAt::default(),
        }
    }
}

/// A certificate chain and its private key, as PEM files (`<tls cert key>`).
/// Which names it serves is read from the certificate itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCert {
    /// The certificate chain (PEM), the leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Where the file said so, for the errors of reading them.
    pub written: WrittenAt,
}

impl TlsCert {
    /// A pair of files, written nowhere.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsCert {
        TlsCert {
            cert: cert.into(),
            key: key.into(),
            written: WrittenAt::default(),
        }
    }
}

/// Where a part of the configuration was written (`FILE:LINE:COL`), kept for
/// errors found after reading (a certificate file that does not load). Not
/// part of what a configuration says: any two compare equal.
#[derive(Debug, Clone, Default)]
pub struct WrittenAt {
    /// The element (`<tls>` or its table).
    pub element: Option<super::Location>,
    /// Its `cert` value.
    pub cert: Option<super::Location>,
    /// Its `key` value.
    pub key: Option<super::Location>,
    /// Its `clientCa` value (on the first only).
    pub client_ca: Option<super::Location>,
}

impl PartialEq for WrittenAt {
    fn eq(&self, _: &WrittenAt) -> bool {
        true
    }
}

impl Eq for WrittenAt {}

impl From<ListenAddr> for Listener {
    fn from(addr: ListenAddr) -> Self {
        Listener::new(addr)
    }
}

/// The most routes one listener may have. Matching does not slow down with
/// more; the bound keeps a mistaken generated file from costing without limit.
pub const MAX_ROUTES: usize = 10_000;

/// A listener's rule: the clients it matches are served by `service` (its
/// groups, scheduler, limits and stats), not by the listener's own. Every
/// condition given must match; a route gives at least one. `sni` and `alpn`
/// go with `protocol` tls or none, `host` only with `protocol` http.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    /// The service that serves the clients this route matches.
    pub service: String,
    /// The TLS server name (SNI), lower case: exact, `*.SUFFIX` (one or more
    /// labels under SUFFIX) or `*` (any client that sent one). A client
    /// without SNI matches only routes without `sni`.
    pub sni: Option<String>,
    /// An ALPN protocol the client must offer (`h2`, `http/1.1`, …).
    pub alpn: Option<String>,
    /// What the client speaks.
    pub protocol: Option<ClientProtocol>,
    /// The HTTP/1.x `Host`, lower case, without a port (a file refuses one;
    /// the client's port is ignored), IPv6 literals without brackets; only
    /// with `protocol = http`.
    pub host: Option<String>,
}

impl Route {
    /// A route to `service` with no condition yet (set at least one).
    pub fn to(service: impl Into<String>) -> Route {
        Route {
            service: service.into(),
            sni: None,
            alpn: None,
            protocol: None,
            host: None,
        }
    }

    /// Whether the route sets no condition (which the rules refuse).
    pub fn is_unconditional(&self) -> bool {
        self.sni.is_none() && self.alpn.is_none() && self.protocol.is_none() && self.host.is_none()
    }

    /// Its conditions as one line, as logs, metrics and answers show them,
    /// in the order a file writes them: `protocol=http host=app.example.com`.
    pub fn conditions(&self) -> String {
        let conditions = [
            ("protocol", self.protocol.map(ClientProtocol::as_str)),
            ("sni", self.sni.as_deref()),
            ("alpn", self.alpn.as_deref()),
            ("host", self.host.as_deref()),
        ];
        let parts: Vec<String> = conditions
            .iter()
            .filter_map(|(key, value)| value.map(|v| format!("{key}={v}")))
            .collect();
        parts.join(" ")
    }
}

/// Its conditions then its service, as a configuration file writes them:
/// `protocol=http host=app.example.com service=app`.
impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_unconditional() {
            return write!(f, "service={}", self.service);
        }
        write!(f, "{} service={}", self.conditions(), self.service)
    }
}

/// What a client speaks, told from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientProtocol {
    /// A TLS ClientHello.
    Tls,
    /// An HTTP/1.x request line.
    Http,
    /// An SSH identification string (`SSH-2.0-…`).
    Ssh,
    /// Anything else, or nothing in time.
    Other,
}

impl ClientProtocol {
    /// Every protocol, in the order the configuration documents them.
    pub const ALL: [ClientProtocol; 4] = [
        ClientProtocol::Tls,
        ClientProtocol::Http,
        ClientProtocol::Ssh,
        ClientProtocol::Other,
    ];

    /// The name in configuration files and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientProtocol::Tls => "tls",
            ClientProtocol::Http => "http",
            ClientProtocol::Ssh => "ssh",
            ClientProtocol::Other => "other",
        }
    }

    /// The protocol called `name` (case-insensitive).
    pub fn from_name(name: &str) -> Option<ClientProtocol> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(name))
    }
}

impl serde::Serialize for ClientProtocol {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl fmt::Display for ClientProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The address, as configured (the settings are not shown).
impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr.fmt(f)
    }
}

/// A named set of hosts with the scheduler that picks among them.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    /// Group name, unique within its service.
    pub name: String,
    /// The algorithm that picks a host for each new client connection.
    pub scheduler: SchedulerKind,
    /// Hosts of the group, in file order; names unique within the group.
    pub hosts: HostList,
    /// Slow start, PROXY protocol towards hosts, replays on empty answers.
    pub options: GroupOptions,
    /// The active check of the group's hosts (`<check>`), if any. Without one,
    /// the hostCheck and heartbeat managers watch them.
    pub check: Option<CheckConfig>,
    /// The agent each host is asked for its state and weight (`<agent>`),
    /// if any.
    pub agent: Option<AgentConfig>,
}

impl GroupConfig {
    /// A group with these hosts and every optional setting at its default.
    pub fn new(name: impl Into<String>, scheduler: SchedulerKind, hosts: Vec<HostConfig>) -> Self {
        GroupConfig {
            name: name.into(),
            scheduler,
            hosts: hosts.into(),
            options: GroupOptions::default(),
            check: None,
            agent: None,
        }
    }
}

/// One backend host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// Host name, unique within its group.
    pub name: String,
    /// Where the host listens: a name or IP literal, and a port.
    pub address: HostAddress,
    /// Relative weight for weighted schedulers (at least 1; default 1).
    pub weight: u32,
    /// Connection limit, PROXY protocol override.
    pub options: HostOptions,
}

/// A host's address as written in the configuration: a DNS name or an IP literal,
/// and a port. Names are resolved by the engine, not here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostAddress {
    /// DNS name or IP literal (IPv6 literals without brackets).
    pub host: String,
    /// TCP port (1..=65535).
    pub port: u16,
}

impl fmt::Display for HostAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A listening address as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenAddr {
    /// Which local address to bind.
    pub host: ListenHost,
    /// TCP port; 0 asks the system for a free one (useful in tests).
    pub port: u16,
}

/// The address part of a listener.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenHost {
    /// `*`, `0.0.0.0` or `[::]` style: every local address.
    Any,
    /// An IP literal.
    Ip(std::net::IpAddr),
    /// A name such as `localhost`, resolved when binding.
    Name(String),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            ListenHost::Any => write!(f, "*:{}", self.port),
            ListenHost::Ip(std::net::IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            ListenHost::Ip(ip) => write!(f, "{ip}:{}", self.port),
            ListenHost::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

/// The admin plane settings (served by a later part of txlb).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AdminConfig {
    /// The web UI and API, if configured.
    pub web: Option<AdminWebConfig>,
    /// The SSH console, if configured.
    pub ssh: Option<AdminSshConfig>,
    /// Admin users.
    pub users: Vec<UserConfig>,
}

/// `<web listen=… enable=… secure=… refresh=…/>`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminWebConfig {
    /// Where the admin web server listens.
    pub listen: ListenAddr,
    /// Whether it runs at all.
    pub enable: bool,
    /// Serve over TLS.
    pub secure: bool,
    /// Auto-refresh period of the HTML page.
    pub refresh: Duration,
    /// Serve `/metrics` without authentication (`metricsPublic`, default false).
    pub metrics_public: bool,
    /// PEM certificate chain for `secure` (`cert`); with neither `cert` nor `key`
    /// a self-signed pair is generated next to the configuration file.
    pub cert: Option<PathBuf>,
    /// PEM private key for `secure` (`key`).
    pub key: Option<PathBuf>,
    /// Names (`host` or `host:port`) clients may use in `Host` besides the admin's
    /// own address and the loopback names (`allowedHosts`, comma-separated; TOML
    /// `allowed_hosts`, a list): any other `Host` is refused, against DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// Changes only by POST, DELETE or PUT: a legacy changing call sent as GET is
    /// refused with 405 (`changesRequirePost`, default false: txLoadBalancer's
    /// scripts use GET).
    pub changes_require_post: bool,
}

/// `<ssh listen=… enable=… authorizedKeys=… hostKey=…/>`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSshConfig {
    /// Where the SSH console listens.
    pub listen: ListenAddr,
    /// Whether it runs at all.
    pub enable: bool,
    /// OpenSSH `authorized_keys` file of the public keys that may log in
    /// (`authorizedKeys`); a line saying `access=readonly` (as an option or in its
    /// comment) gives read-only access. Without it only passwords log in.
    pub authorized_keys: Option<PathBuf>,
    /// The server's OpenSSH private host key (`hostKey`), generated (Ed25519) on
    /// first start when missing; without it the key is kept next to the
    /// configuration file.
    pub host_key: Option<PathBuf>,
    /// How long one `script` may run before it is stopped (`scriptTimeout`,
    /// default [`DEFAULT_SCRIPT_TIMEOUT`]).
    pub script_timeout: Duration,
}

/// An admin user with a crypt(3) password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserConfig {
    /// Login name, unique.
    pub name: String,
    /// Unix crypt() hash (DES, `$1$`, `$5$`, `$6$` or `$2b$`).
    pub password_hash: String,
    /// What the user may do.
    pub access: Access,
}

/// Admin access level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// May read and change everything.
    Full,
    /// May read every page, change nothing.
    ReadOnly,
}

/// One periodic manager: enabled or not, and how often it runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ManagerTask {
    /// Whether the manager runs.
    pub enable: bool,
    /// Period between runs.
    pub interval: Duration,
}

/// `<manager>`: the background tasks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ManagerConfig {
    /// Re-probe bad hosts and put back those that answer (default on, 10 s).
    pub host_check: ManagerTask,
    /// Write the running configuration back to its file (default off, 10 s).
    pub config_check: ManagerTask,
    /// Probe every host and mark failing ones bad (default off, 20 s).
    pub heartbeat: ManagerTask,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            host_check: ManagerTask {
                enable: true,
                interval: DEFAULT_HOST_CHECK_INTERVAL,
            },
            config_check: ManagerTask {
                enable: false,
                interval: DEFAULT_CONFIG_CHECK_INTERVAL,
            },
            heartbeat: ManagerTask {
                enable: false,
                interval: DEFAULT_HEARTBEAT_INTERVAL,
            },
        }
    }
}

/// `<logging file=… access=… format=…/>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoggingConfig {
    /// Log file; `None` logs to stderr.
    pub file: Option<PathBuf>,
    /// Access log: one line per finished connection; `None`: none kept.
    pub access: Option<PathBuf>,
    /// How access log lines are written.
    pub access_format: AccessFormat,
}

impl LoggingConfig {
    /// Whether nothing is set (no `<logging>` element needed).
    pub fn is_empty(&self) -> bool {
        *self == LoggingConfig::default()
    }
}

/// The access log's line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessFormat {
    /// `key=value` pairs, for people and grep.
    #[default]
    Text,
    /// One JSON object per line, for programs.
    Json,
}

impl AccessFormat {
    /// The name in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            AccessFormat::Text => "text",
            AccessFormat::Json => "json",
        }
    }
}

/// `<control socket=…/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// Path of the Unix socket.
    pub socket: PathBuf,
}

/// `<cluster etcd=… prefix=… name=…/>`: fleet mode. The running configuration is
/// kept in etcd under `prefix`, shared by every instance of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// etcd client URLs (`http://HOST:PORT`), tried in order (`etcd`, a
    /// comma-separated list).
    pub endpoints: Vec<String>,
    /// The key prefix the fleet's keys live under, e.g. `/txlb/prod`: starts
    /// with `/`, no trailing `/`.
    pub prefix: String,
    /// This instance's name in the fleet, unique within it.
    pub name: String,
}
