//! The unvalidated configuration tree both readers produce, with byte offsets.
//!
//! The XML and TOML readers only deal with syntax and structure (which elements,
//! tables and keys exist); they fill these types and leave every rule about values
//! (addresses, schedulers, uniqueness, the enabled group, defaults) to
//! `read` and `check`, so both formats obey the same rules with the same messages.
//! Offsets are byte offsets into the source text; `at` is where the element or
//! table starts, used when something is missing rather than wrong.

pub(crate) use super::options::RawValue;

/// A value and the byte offset where it was written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct At<T> {
    /// The value as read.
    pub value: T,
    /// Byte offset of the value in the source.
    pub at: usize,
}

impl<T> At<T> {
    /// A value written at `at`.
    pub(crate) fn new(value: T, at: usize) -> Self {
        At { value, at }
    }
}

/// A number as written: XML gives text, TOML gives typed numbers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Number {
    /// Text still to parse (XML attributes).
    Text(String),
    /// A TOML integer.
    Int(i64),
    /// A TOML float.
    Float(f64),
}

/// The whole file.
#[derive(Debug, Default)]
pub(crate) struct RawConfig {
    /// Start of the root element (XML) or of the document (TOML).
    pub at: usize,
    pub services: Vec<RawService>,
    pub admin: Option<RawAdmin>,
    pub manager: Option<RawManager>,
    pub logging: Option<RawLogging>,
    pub control: Option<RawControl>,
    pub cluster: Option<RawCluster>,
    pub resolver: Option<RawResolver>,
    pub acme: Option<RawAcme>,
}

/// `<acme>` / `[acme]`.
#[derive(Debug, Default)]
pub(crate) struct RawAcme {
    pub at: usize,
    /// Settings of `options::AcmeConfig`.
    pub options: Vec<(At<String>, At<RawValue>)>,
}

/// `<resolver>` / `[resolver]`.
#[derive(Debug, Default)]
pub(crate) struct RawResolver {
    pub at: usize,
    /// Settings of `options::ResolverOptions`.
    pub options: Vec<(At<String>, At<RawValue>)>,
}

/// `<service>` / `[[service]]`.
#[derive(Debug, Default)]
pub(crate) struct RawService {
    pub at: usize,
    pub name: Option<At<String>>,
    pub listen: Vec<RawListen>,
    pub groups: Vec<RawGroup>,
    /// `<enable group=…/>` / `enabled_group = …`.
    pub enabled_group: Option<At<String>>,
    /// Per-service settings beyond txLoadBalancer's: add new ones here, in both
    /// readers, and in `read::service_settings`.
    pub connect_timeout: Option<At<Number>>,
    /// Settings of `options::ServiceOptions`, by XML attribute or TOML key.
    pub options: Vec<(At<String>, At<RawValue>)>,
}

/// `<listen>` / an entry of `listen` (a string, or a table with `ip`).
#[derive(Debug, Default)]
pub(crate) struct RawListen {
    pub at: usize,
    pub ip: Option<At<String>>,
    /// Settings of `options::ListenOptions`.
    pub options: Vec<(At<String>, At<RawValue>)>,
    /// `<route>` children / the `routes` array, in order.
    pub routes: Vec<RawRoute>,
    /// `<tls>` children / the `tls` array, in order.
    pub tls: Vec<RawTls>,
}

/// `<tls>` / an entry of a listen table's `tls`.
#[derive(Debug, Default)]
pub(crate) struct RawTls {
    pub at: usize,
    pub cert: Option<At<String>>,
    pub key: Option<At<String>>,
    /// `acme`: the names of a certificate from ACME, instead of files.
    pub acme: Option<At<String>>,
    /// Settings of `options::TlsOptions` (the first entry's apply).
    pub options: Vec<(At<String>, At<RawValue>)>,
}

/// `<route>` / an entry of a listen table's `routes`.
#[derive(Debug, Default)]
pub(crate) struct RawRoute {
    pub at: usize,
    pub service: Option<At<String>>,
    pub sni: Option<At<String>>,
    pub alpn: Option<At<String>>,
    pub protocol: Option<At<String>>,
    pub host: Option<At<String>>,
}

/// `<group>` / `[[service.group]]`.
#[derive(Debug, Default)]
pub(crate) struct RawGroup {
    pub at: usize,
    pub name: Option<At<String>>,
    pub scheduler: Option<At<String>>,
    pub enable: Option<At<bool>>,
    pub hosts: Vec<RawHost>,
    /// Settings of `options::GroupOptions`.
    pub options: Vec<(At<String>, At<RawValue>)>,
    /// `<check>` / `check = { … }`.
    pub check: Option<RawCheck>,
    /// `<agent>` / `agent = { … }` (the same shape as a check).
    pub agent: Option<RawCheck>,
}

/// `<check>` / a group's `check` table.
#[derive(Debug, Default)]
pub(crate) struct RawCheck {
    pub at: usize,
    /// Settings of `options::CheckConfig`.
    pub options: Vec<(At<String>, At<RawValue>)>,
}

/// `<host>` / an entry of `hosts`.
#[derive(Debug, Default)]
pub(crate) struct RawHost {
    pub at: usize,
    pub name: Option<At<String>>,
    pub ip: Option<At<String>>,
    pub weight: Option<At<Number>>,
    /// Settings of `options::HostOptions`.
    pub options: Vec<(At<String>, At<RawValue>)>,
}

/// `<admin>` / `[admin]`.
#[derive(Debug, Default)]
pub(crate) struct RawAdmin {
    pub web: Option<RawWeb>,
    pub ssh: Option<RawSsh>,
    pub users: Vec<RawUser>,
}

/// `<web>` / `[admin.web]`.
#[derive(Debug, Default)]
pub(crate) struct RawWeb {
    pub at: usize,
    pub listen: Option<At<String>>,
    pub enable: Option<At<bool>>,
    pub secure: Option<At<bool>>,
    pub refresh: Option<At<Number>>,
    pub metrics_public: Option<At<bool>>,
    pub cert: Option<At<String>>,
    pub key: Option<At<String>>,
    pub allowed_hosts: Option<At<Vec<String>>>,
    pub changes_require_post: Option<At<bool>>,
}

/// `<ssh>` / `[admin.ssh]`.
#[derive(Debug, Default)]
pub(crate) struct RawSsh {
    pub at: usize,
    pub listen: Option<At<String>>,
    pub enable: Option<At<bool>>,
    pub authorized_keys: Option<At<String>>,
    pub host_key: Option<At<String>>,
    pub script_timeout: Option<At<Number>>,
}

/// `<user>` / `[[admin.user]]`.
#[derive(Debug, Default)]
pub(crate) struct RawUser {
    pub at: usize,
    pub name: Option<At<String>>,
    pub password: Option<At<String>>,
    pub access: Option<At<String>>,
}

/// `<manager>` / `[manager]`.
#[derive(Debug, Default)]
pub(crate) struct RawManager {
    pub host_check: Option<RawTask>,
    pub config_check: Option<RawTask>,
    pub heartbeat: Option<RawTask>,
}

/// `<hostCheck>`, `<configCheck>`, `<heartbeat>` and their TOML tables.
#[derive(Debug, Default)]
pub(crate) struct RawTask {
    pub interval: Option<At<Number>>,
    pub enable: Option<At<bool>>,
}

/// `<logging>` / `[logging]`.
#[derive(Debug, Default)]
pub(crate) struct RawLogging {
    pub file: Option<At<String>>,
    pub access: Option<At<String>>,
    pub format: Option<At<String>>,
}

/// `<control>` / `[control]`.
#[derive(Debug, Default)]
pub(crate) struct RawControl {
    pub at: usize,
    pub socket: Option<At<String>>,
}

/// `<cluster>` / `[cluster]`.
#[derive(Debug, Default)]
pub(crate) struct RawCluster {
    pub at: usize,
    pub etcd: Option<At<String>>,
    pub prefix: Option<At<String>>,
    pub name: Option<At<String>>,
}
