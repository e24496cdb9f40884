//! Settings beyond txLoadBalancer's, declared once per element.
//!
//! Each options struct (service, listener, group, host) lists its settings in one
//! `options!` table: field, type, default, XML attribute and TOML key. The readers,
//! the validation, both writers and the write-back editor all go through that table,
//! so adding a setting is one line here plus the code that uses it.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

use super::health_check::{
    CheckKind, CheckRegex, DEFAULT_CHECK_INTERVAL, DEFAULT_CHECK_TIMEOUT, DEFAULT_FALL,
    DEFAULT_POSTGRES_USER, DEFAULT_RISE, Escaped, RedisRole, StatusList,
};
use super::parse::{check_seconds, parse_bool, parse_seconds};
use super::write::seconds;

/// A setting's value as written: XML text, or a typed TOML value.
#[derive(Debug, Clone)]
pub(crate) enum RawValue {
    /// An XML attribute's text.
    Text(String),
    /// A TOML value.
    Toml(toml::Value),
}

impl RawValue {
    fn describe(&self) -> String {
        match self {
            RawValue::Text(t) => format!("{t:?}"),
            RawValue::Toml(v) => v.to_string(),
        }
    }
}

/// A type a setting can have: how it is read, and written in each format.
pub(crate) trait OptionValue: Sized + Clone + PartialEq {
    /// Reads the value, or says what was expected.
    fn read(raw: &RawValue) -> Result<Self, String>;
    /// The XML attribute text.
    fn xml(&self) -> String;
    /// The TOML value, as TOML source text.
    fn toml(&self) -> String;
    /// Whether a value set in code is one a file could say (what `read`
    /// accepts), or why not.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Seconds, possibly fractional; zero and negative values are refused.
impl OptionValue for Duration {
    fn read(raw: &RawValue) -> Result<Self, String> {
        match raw {
            RawValue::Text(t) => parse_seconds(t),
            RawValue::Toml(toml::Value::Integer(i)) => parse_seconds(&i.to_string()),
            RawValue::Toml(toml::Value::Float(f)) => parse_seconds(&f.to_string()),
            RawValue::Toml(_) => Err("expected a number of seconds".into()),
        }
    }
    fn xml(&self) -> String {
        seconds(*self)
    }
    fn toml(&self) -> String {
        seconds(*self)
    }
    fn check(&self) -> Result<(), String> {
        check_seconds(*self)
    }
}

/// Seconds, or `0` (or `none`) for "not set".
impl OptionValue for Option<Duration> {
    fn read(raw: &RawValue) -> Result<Self, String> {
        let off = match raw {
            RawValue::Text(t) => matches!(t.trim(), "0" | "none" | ""),
            RawValue::Toml(toml::Value::Integer(0)) => true,
            RawValue::Toml(toml::Value::Float(f)) => *f == 0.0,
            RawValue::Toml(_) => false,
        };
        if off {
            return Ok(None);
        }
        <Duration as OptionValue>::read(raw).map(Some)
    }
    fn xml(&self) -> String {
        self.map_or_else(|| "0".to_string(), |d| d.xml())
    }
    fn toml(&self) -> String {
        self.map_or_else(|| "0".to_string(), |d| d.toml())
    }
    fn check(&self) -> Result<(), String> {
        // `Some(0)` would be written `0` and read back as `None`.
        self.map_or(Ok(()), check_seconds)
    }
}

/// A count; 0 usually means "no limit".
impl OptionValue for u32 {
    fn read(raw: &RawValue) -> Result<Self, String> {
        let bad = || "expected a whole number from 0 to 4294967295".to_string();
        match raw {
            RawValue::Text(t) => t.trim().parse().map_err(|_| bad()),
            RawValue::Toml(toml::Value::Integer(i)) => u32::try_from(*i).map_err(|_| bad()),
            RawValue::Toml(_) => Err(bad()),
        }
    }
    fn xml(&self) -> String {
        self.to_string()
    }
    fn toml(&self) -> String {
        self.to_string()
    }
}

impl OptionValue for bool {
    fn read(raw: &RawValue) -> Result<Self, String> {
        match raw {
            RawValue::Text(t) => Ok(parse_bool(t)),
            RawValue::Toml(toml::Value::Boolean(b)) => Ok(*b),
            RawValue::Toml(_) => Err("expected true or false".into()),
        }
    }
    fn xml(&self) -> String {
        self.to_string()
    }
    fn toml(&self) -> String {
        self.to_string()
    }
}

/// A list option's items as written: space or comma separated in XML, an array
/// of strings (or one string) in TOML; `what` names the items in the error.
fn read_list(raw: &RawValue, what: &str) -> Result<Vec<String>, String> {
    match raw {
        RawValue::Text(t) => Ok(t
            .split([',', ' ', '\t', '\n'])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()),
        RawValue::Toml(toml::Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("expected an array of {what}")),
        RawValue::Toml(toml::Value::String(s)) => Ok(vec![s.clone()]),
        RawValue::Toml(_) => Err(format!("expected an array of {what}")),
    }
}

/// A list option in XML: its items separated by spaces.
fn xml_list<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A list option in TOML: an array of strings.
fn toml_list<T: std::fmt::Display>(items: &[T]) -> String {
    let mut out = String::from("[");
    for (i, item) in items.iter().enumerate() {
        let _ = write!(out, "{}\"{item}\"", if i > 0 { ", " } else { "" });
    }
    out.push(']');
    out
}

/// A list of networks (`10.0.0.0/8`, `::1`, …). A bare address is a
/// single-address network.
impl OptionValue for Vec<IpNet> {
    fn read(raw: &RawValue) -> Result<Self, String> {
        read_list(raw, "network strings")?
            .iter()
            .map(|s| parse_net(s))
            .collect()
    }
    fn xml(&self) -> String {
        xml_list(self)
    }
    fn toml(&self) -> String {
        toml_list(self)
    }
}

/// Name servers: `IP` or `IP:PORT` (`[v6]:PORT`); the port defaults to 53.
impl OptionValue for Vec<SocketAddr> {
    fn read(raw: &RawValue) -> Result<Self, String> {
        read_list(raw, "name server addresses")?
            .iter()
            .map(|s| parse_nameserver(s))
            .collect()
    }
    fn xml(&self) -> String {
        xml_list(self)
    }
    fn toml(&self) -> String {
        toml_list(self)
    }
}

/// The port name servers listen on unless told otherwise.
pub const DNS_PORT: u16 = 53;

/// Parses a name server address: `10.0.0.53`, `127.0.0.1:5353`, `::1`, `[::1]:53`.
pub fn parse_nameserver(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .map_err(|_| {
            format!(
                "{text:?} is not a name server address (expected an IP address with an optional port, e.g. 10.0.0.53, 127.0.0.1:5353 or [::1]:53)"
            )
        })
}

/// Parses `10.0.0.0/8` or a bare address.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net);
    }
    text.parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|_| {
            format!("{text:?} is not a network (expected e.g. 10.0.0.0/8, 192.168.1.7 or ::1)")
        })
}

/// Which version of the PROXY protocol header to send to hosts (the
/// `proxyProtocol` setting); [`crate::proxy_protocol`] writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyVersion {
    /// Human-readable text.
    V1,
    /// Binary.
    V2,
}

/// `v1`, `v2`, or `none`.
impl OptionValue for Option<ProxyVersion> {
    fn read(raw: &RawValue) -> Result<Self, String> {
        let text = match raw {
            RawValue::Text(t) => t.as_str(),
            RawValue::Toml(toml::Value::String(s)) => s.as_str(),
            RawValue::Toml(_) => return Err("expected \"v1\", \"v2\" or \"none\"".into()),
        };
        match text.trim().to_ascii_lowercase().as_str() {
            "v1" | "1" => Ok(Some(ProxyVersion::V1)),
            "v2" | "2" => Ok(Some(ProxyVersion::V2)),
            "none" | "" | "off" | "no" => Ok(None),
            _ => Err("expected v1, v2 or none".into()),
        }
    }
    fn xml(&self) -> String {
        match self {
            Some(ProxyVersion::V1) => "v1",
            Some(ProxyVersion::V2) => "v2",
            None => "none",
        }
        .to_string()
    }
    fn toml(&self) -> String {
        format!("\"{}\"", self.xml())
    }
}

/// What the readers need of any options table.
pub(crate) trait OptionSet {
    /// See the tables' `set`.
    fn set_option(&mut self, key: &str, raw: &RawValue) -> Result<bool, String>;
}

/// One setting of an options table, written out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Written {
    /// XML attribute name.
    pub xml_name: &'static str,
    /// TOML key.
    pub toml_key: &'static str,
    /// XML attribute text.
    pub xml: String,
    /// TOML value source.
    pub toml: String,
    /// The value is the setting's default (a writer may leave it out).
    pub default: bool,
}

macro_rules! options {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $field:ident: $ty:ty = $default:expr, $xml:literal, $toml:literal;
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $( $field: $default, )* }
            }
        }

        impl $name {
            /// (XML attribute, TOML key) of every setting.
            pub(crate) const KEYS: &'static [(&'static str, &'static str)] = &[$(($xml, $toml),)*];

            /// Sets the setting named `key` (XML attribute or TOML key). `Ok(false)`:
            /// no such setting.
            pub(crate) fn set(&mut self, key: &str, raw: &RawValue) -> Result<bool, String> {
                match key {
                    $(
                        k if k == $xml || k == $toml => {
                            self.$field = OptionValue::read(raw)
                                .map_err(|why| format!("bad {} {}: {why}", $xml, raw.describe()))?;
                            Ok(true)
                        }
                    )*
                    _ => Ok(false),
                }
            }

            /// Whether every setting is one a file could say, or the first
            /// that is not and why.
            pub(crate) fn check(&self) -> Result<(), String> {
                $(
                    OptionValue::check(&self.$field).map_err(|why| {
                        format!("bad {} {}: {why}", $xml, OptionValue::xml(&self.$field))
                    })?;
                )*
                Ok(())
            }

            /// Every setting whose value differs from `base`, written out.
            pub(crate) fn differing(&self, base: &Self) -> Vec<Written> {
                let mut out = Vec::new();
                let defaults = Self::default();
                $(
                    if self.$field != base.$field {
                        out.push(Written {
                            xml_name: $xml,
                            toml_key: $toml,
                            xml: OptionValue::xml(&self.$field),
                            toml: OptionValue::toml(&self.$field),
                            default: self.$field == defaults.$field,
                        });
                    }
                )*
                out
            }

            /// Settings that differ from their defaults (what a writer writes).
            #[allow(dead_code)]
            pub(crate) fn non_default(&self) -> Vec<Written> {
                self.differing(&Self::default())
            }
        }

        impl OptionSet for $name {
            fn set_option(&mut self, key: &str, raw: &RawValue) -> Result<bool, String> {
                self.set(key, raw)
            }
        }
    };
}

/// Default idle time allowed in either direction before a connection is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default time a half-closed connection may linger.
pub const DEFAULT_FIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest wait in a service's queue.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default queue length when a service is at `maxconn`.
pub const DEFAULT_QUEUE: u32 = 1024;
/// Default most client bytes kept for a `retryEmpty` replay.
pub const DEFAULT_RETRY_EMPTY_BYTES: u32 = 16 * 1024;
/// Default longest wait for a host's first byte under `retryEmpty`.
pub const DEFAULT_RETRY_EMPTY_TIMEOUT: Duration = Duration::from_secs(5);

options! {
    /// Per-service settings beyond txLoadBalancer's (attributes of `<service>`).
    pub struct ServiceOptions {
        /// Idle time allowed from the client before the connection is closed.
        client_timeout: Duration = DEFAULT_IDLE_TIMEOUT, "clientTimeout", "client_timeout";
        /// Idle time allowed from the host before the connection is closed.
        server_timeout: Duration = DEFAULT_IDLE_TIMEOUT, "serverTimeout", "server_timeout";
        /// How long a connection may stay half-closed (one side sent FIN).
        client_fin_timeout: Duration = DEFAULT_FIN_TIMEOUT, "clientFinTimeout", "client_fin_timeout";
        /// Most open connections for the service (0 = no limit).
        maxconn: u32 = 0, "maxconn", "maxconn";
        /// Clients that may wait when the service is at `maxconn`.
        queue: u32 = DEFAULT_QUEUE, "queue", "queue";
        /// Longest wait in the queue before the client is closed.
        queue_timeout: Duration = DEFAULT_QUEUE_TIMEOUT, "queueTimeout", "queue_timeout";
        /// Most open connections from one client address (0 = no limit).
        source_maxconn: u32 = 0, "sourceMaxconn", "source_maxconn";
        /// Most new connections per second from one client address (0 = no limit).
        source_rate: u32 = 0, "sourceRate", "source_rate";
        /// Client networks allowed (empty: all, unless denied).
        allow: Vec<IpNet> = Vec::new(), "allow", "allow";
        /// Client networks refused (checked before `allow`).
        deny: Vec<IpNet> = Vec::new(), "deny", "deny";
        /// Clients start with a PROXY protocol header (v1 or v2) from another balancer.
        accept_proxy: bool = false, "acceptProxy", "accept_proxy";
        /// Clients speak first, each sending its first request at once (HTTP,
        /// TLS): a client is accepted once its first bytes have come, its bytes
        /// are acknowledged with the answer, and the host's handshake with the
        /// first bytes sent to it, saving two segments per connection. Never
        /// for protocols where the server speaks first (SMTP, SSH, MySQL): their
        /// clients would wait a second to be accepted.
        client_first: bool = false, "clientFirst", "client_first";
        /// Sources allowed to send PROXY headers (empty: any).
        trusted_proxies: Vec<IpNet> = Vec::new(), "trustedProxies", "trusted_proxies";
        /// What the service carries: TCP connections (the default) or UDP
        /// datagrams, in sessions (`proxy/udp.rs`).
        protocol: Transport = Transport::Tcp, "protocol", "protocol";
        /// UDP: a session ends after this long without a datagram either way.
        session_timeout: Duration = DEFAULT_SESSION_TIMEOUT, "sessionTimeout", "session_timeout";
        /// UDP: a session ends after this many replies from its host (0 = no
        /// limit; 1 suits DNS).
        responses: u32 = 0, "responses", "responses";
        /// UDP: most sessions open at once, from 1 to [`MAX_SESSIONS`]; a
        /// datagram that would open one more is dropped (counted).
        max_sessions: u32 = DEFAULT_MAX_SESSIONS, "maxSessions", "max_sessions";
        /// UDP: most sessions open at once from one client address (any
        /// port; 0 = no limit); a datagram that would open one more is
        /// dropped (counted as `source_limit`).
        max_sessions_per_source: u32 = 0, "maxSessionsPerSource", "max_sessions_per_source";
        /// UDP: most datagrams per second from one client address, to every
        /// session of it (0 = no limit); the rest of the second's are
        /// dropped (counted as `rate`).
        datagram_rate: u32 = 0, "datagramRate", "datagram_rate";
    }
}

/// Default `sessionTimeout` of a UDP service.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `maxSessions` of a UDP service.
pub const DEFAULT_MAX_SESSIONS: u32 = 100_000;
/// Largest `maxSessions`: bounds the session table whatever a file says.
pub const MAX_SESSIONS: u32 = 1_000_000;

/// What a service carries (its `protocol`), and a listed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP connections.
    #[default]
    Tcp,
    /// UDP datagrams, grouped into sessions by client address and port.
    Udp,
}

impl Transport {
    /// The name in configuration files and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

impl OptionValue for Transport {
    fn read(raw: &RawValue) -> Result<Self, String> {
        let text = match raw {
            RawValue::Text(t) => t.as_str(),
            RawValue::Toml(toml::Value::String(s)) => s.as_str(),
            RawValue::Toml(_) => return Err("expected \"tcp\" or \"udp\"".into()),
        };
        match text.trim().to_ascii_lowercase().as_str() {
            "tcp" => Ok(Transport::Tcp),
            "udp" => Ok(Transport::Udp),
            _ => Err("expected tcp or udp".into()),
        }
    }
    fn xml(&self) -> String {
        self.as_str().to_string()
    }
    fn toml(&self) -> String {
        format!("\"{}\"", self.as_str())
    }
}

options! {
    /// Per-group settings beyond txLoadBalancer's (attributes of `<group>`).
    pub struct GroupOptions {
        /// How long a host coming back into rotation (created, marked up after
        /// bad, admin-up) takes to ramp from a small share to its full weight
        /// (`None`, written `0`: no ramp). Honoured by `weightr`, `wrr`, `wleastc`
        /// and `p2c` ([`crate::scheduler::SchedulerKind::honours_slow_start`]).
        slow_start: Option<Duration> = None, "slowStart", "slow_start";
        /// Send a PROXY protocol header to the group's hosts.
        proxy_protocol: Option<ProxyVersion> = None, "proxyProtocol", "proxy_protocol";
        /// Replay the client's first bytes to another host when a host closes or
        /// resets before sending anything.
        retry_empty: bool = false, "retryEmpty", "retry_empty";
        /// Most client bytes kept for a replay; beyond that, no retry.
        retry_empty_bytes: u32 = DEFAULT_RETRY_EMPTY_BYTES, "retryEmptyBytes", "retry_empty_bytes";
        /// Longest wait for a host's first byte while a replay is still possible.
        retry_empty_timeout: Duration = DEFAULT_RETRY_EMPTY_TIMEOUT, "retryEmptyTimeout", "retry_empty_timeout";
        /// A backup group: it takes the service's new connections while no host
        /// of the enabled group is usable (every one bad or admin-down), and gives
        /// them back as soon as one is. With several, the first (in configuration
        /// order) that has a usable host serves. The enabled group cannot be one.
        backup: bool = false, "backup", "backup";
        /// What happens to a host's open connections when its group's
        /// `<check>` marks it bad: kept (`keep`, the default) or closed
        /// (`close`, HAProxy's `on-marked-down shutdown-sessions`).
        on_marked_down: MarkedDown = MarkedDown::Keep, "onMarkedDown", "on_marked_down";
        /// Passive checks on live traffic (Envoy's outlier detection): this
        /// many consecutive failures of a host on clients' connections (a
        /// failed connect, or a reset before the host's first byte) eject it
        /// for `ejectTime` (0, the default: off, and one failed connect marks
        /// the host bad, txLoadBalancer's rule).
        fail_limit: u32 = 0, "failLimit", "fail_limit";
        /// How long a host's first ejection lasts; each further one lasts
        /// twice the one before, up to [`MAX_EJECT_TIME`].
        eject_time: Duration = DEFAULT_EJECT_TIME, "ejectTime", "eject_time";
        /// At most this share of the group's hosts (in percent, rounded
        /// down) ejected at once.
        max_eject_percent: Percent = Percent(DEFAULT_MAX_EJECT_PERCENT), "maxEjectPercent", "max_eject_percent";
        /// When every host of the enabled group is bad (or admin-down, ejected,
        /// drained) and no backup group serves: refuse new clients (`close`,
        /// the default) or try them on every host anyway (`open`).
        all_bad: AllBad = AllBad::Close, "allBad", "all_bad";
        /// Connect to the group's hosts with TLS (origination): the client's
        /// plaintext goes to them encrypted.
        tls: bool = false, "tls", "tls";
        /// How the hosts' certificates are verified: the system's roots, a CA
        /// file, or `none` (only when written so; warned about at load).
        tls_verify: TlsVerify = TlsVerify::System, "tlsVerify", "tls_verify";
        /// The name sent (SNI) and checked in the hosts' certificates (else
        /// each host's name in `ip`, else its IP).
        tls_sni: Option<String> = None, "tlsSni", "tls_sni";
        /// A client certificate (PEM chain) shown to hosts that ask for one.
        tls_cert: Option<NamedFile> = None, "tlsCert", "tls_cert";
        /// The private key of `tlsCert` (PEM).
        tls_key: Option<NamedFile> = None, "tlsKey", "tls_key";
        /// ALPN protocols offered to the hosts, in order (empty: none).
        tls_alpn: Vec<String> = Vec::new(), "tlsAlpn", "tls_alpn";
    }
}

/// Default `ejectTime`: a host's first ejection.
pub const DEFAULT_EJECT_TIME: Duration = Duration::from_secs(10);
/// The longest an ejection lasts, however often the host was ejected.
pub const MAX_EJECT_TIME: Duration = Duration::from_secs(300);
/// Default `maxEjectPercent`.
pub const DEFAULT_MAX_EJECT_PERCENT: u8 = 50;

/// A share in percent, 0 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Percent(pub u8);

impl OptionValue for Percent {
    fn read(raw: &RawValue) -> Result<Self, String> {
        let bad = || "expected a whole number from 0 to 100".to_string();
        let n = match raw {
            RawValue::Text(t) => t.trim().trim_end_matches('%').parse::<u8>().ok(),
            RawValue::Toml(toml::Value::Integer(i)) => u8::try_from(*i).ok(),
            RawValue::Toml(_) => None,
        };
        n.filter(|&n| n <= 100).map(Percent).ok_or_else(bad)
    }
    fn xml(&self) -> String {
        self.0.to_string()
    }
    fn toml(&self) -> String {
        self.0.to_string()
    }
    fn check(&self) -> Result<(), String> {
        if self.0 <= 100 {
            Ok(())
        } else {
            Err("expected a whole number from 0 to 100".into())
        }
    }
}

/// `allBad`: what new clients get when no host of the enabled group is in
/// rotation and no backup group serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AllBad {
    /// They are refused (txlb's behaviour before `allBad`).
    #[default]
    Close,
    /// They are tried on every host anyway (txLoadBalancer's "All hosts are
    /// down! Forcing them back").
    Open,
}

impl OptionValue for AllBad {
    fn read(raw: &RawValue) -> Result<Self, String> {
        let text = match raw {
            RawValue::Text(t) => t.as_str(),
            RawValue::Toml(toml::Value::String(s)) => s.as_str(),
            RawValue::Toml(_) => return Err("expected \"close\" or \"open\"".into()),
        };
        match text.trim().to_ascii_lowercase().as_str() {
            "close" => Ok(AllBad::Close),
            "open" => Ok(AllBad::Open),
            _ => Err("expected close or open".into()),
        }
    }
    fn xml(&self) -> String {
        match self {
            AllBad::Close => "close",
            AllBad::Open => "open",
        }
        .to_string()
    }
    fn toml(&self) -> String {
        format!("\"{}\"", self.xml())
    }
}

/// A file a setting names, with where the configuration named it: the
/// errors of reading it later (start, reload) say `FILE:LINE:COL`. Two
/// compare equal when they name the same path, wherever written.
#[derive(Debug, Clone, Eq)]
pub struct NamedFile {
    /// The file (relative ones resolved against the configuration's
    /// directory by the reader).
    pub path: std::path::PathBuf,
    /// Its name as the configuration wrote it (relative names stay
    /// relative when written back); `None`: `path`.
    pub written: Option<String>,
    /// Where its name was written, if read from a file.
    pub at: Option<super::Location>,
}

impl NamedFile {
    /// `path`, written nowhere.
    pub fn new(path: impl Into<std::path::PathBuf>) -> NamedFile {
        NamedFile {
            path: path.into(),
            written: None,
            at: None,
        }
    }
}

impl NamedFile {
    /// The name a configuration file writes.
    fn as_written(&self) -> String {
        self.written
            .clone()
            .unwrap_or_else(|| self.path.display().to_string())
    }
}

impl PartialEq for NamedFile {
    fn eq(&self, other: &NamedFile) -> bool {
        self.path == other.path
    }
}

/// A file name; empty: none.
impl OptionValue for Option<NamedFile> {
    fn read(raw: &RawValue) -> Result<Self, String> {
        <Option<std::path::PathBuf> as OptionValue>::read(raw).map(|p| p.map(NamedFile::new))
    }
    fn xml(&self) -> String {
        self.as_ref().map(NamedFile::as_written).unwrap_or_default()
    }
    fn toml(&self) -> String {
        super::write::tstr(&self.xml())
    }
    fn check(&self) -> Result<(), String> {
        match self {
            Some(f) if f.path.to_str().is_none() => Err("expected a file name in UTF-8".into()),
            _ => Ok(()),
        }
    }
}

/// `tlsVerify`: how an originating group verifies its hosts' certificates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TlsVerify {
    /// Against the system's trusted roots (read from the system's store).
    #[default]
    System,
    /// Not at all (only the handshake's signatures are checked): written
    /// `none`, warned about at load.
    None,
    /// Against the CA certificates of this PEM file.
    Ca(NamedFile),
}

/// `system`, `none` or a CA file.
impl OptionValue for TlsVerify {
    fn read(raw: &RawValue) -> Result<Self, String> {
        const EXPECTED: &str = "expected system, none or a CA file (PEM)";
        let text = match raw {
            RawValue::Text(t) => t.trim(),
            RawValue::Toml(toml::Value::String(s)) => s.trim(),
            RawValue::Toml(_) => return Err(EXPECTED.into()),
        };
        match text {
            "" => Err(EXPECTED.into()),
            "system" => Ok(TlsVerify::System),
            "none" => Ok(TlsVerify::None),
            file => Ok(TlsVerify::Ca(NamedFile::new(file))),
        }
    }
    fn xml(&self) -> String {
        match self {
            TlsVerify::System => "system".into(),
            TlsVerify::None => "none".into(),
            TlsVerify::Ca(f) => f.as_written(),
        }
    }
    fn toml(&self) -> String {
        super::write::tstr(&self.xml())
    }
    fn check(&self) -> Result<(), String> {
        match self {
            TlsVerify::Ca(f) if f.path.to_str().is_none() => {
                Err("expected a file name in UTF-8".into())
            }
            TlsVerify::Ca(f) if matches!(f.path.to_str(), Some("" | "system" | "none")) => {
                Err("expected a CA file's name".into())
            }
            _ => Ok(()),
        }
    }
}

/// A TLS server name (`tlsSni`): a DNS name or an IP address; absent: none.
impl OptionValue for Option<String> {
    fn read(raw: &RawValue) -> Result<Self, String> {
        let text = text_of(raw, "expected a DNS name")?;
        if text.is_empty() {
            return Ok(None);
        }
        check_server_name(&text)?;
        Ok(Some(text.to_ascii_lowercase()))
    }
    fn xml(&self) -> String {
        self.clone().unwrap_or_default()
    }
    fn toml(&self) -> String {
        super::write::tstr(&self.xml())
    }
    fn check(&self) -> Result<(), String> {
        self.as_deref().map_or(Ok(()), check_server_name)
    }
}

/// Whether `name` can be a TLS server name (SNI).
fn check_server_name(name: &str) -> Result<(), String> {
    rustls::pki_types::ServerName::try_from(name)
        .map(|_| ())
        .map_err(|_| "expected a DNS name or an IP address".to_string())
}

/// `onMarkedDown`: what a host's open connections do when a check marks the
/// host bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MarkedDown {
    /// They continue until they end (txLoadBalancer's behaviour).
    #[default]
    Keep,
    /// They are closed at once.
    Close,
}

impl OptionValue for MarkedDown {
    fn read(raw: &RawValue) -> Result<Self, String> {
        let text = match raw {
            RawValue::Text(t) => t.as_str(),
            RawValue::Toml(toml::Value::String(s)) => s.as_str(),
            RawValue::Toml(_) => return Err("expected \"keep\" or \"close\"".into()),
        };
        match text.trim().to_ascii_lowercase().as_str() {
            "keep" => Ok(MarkedDown::Keep),
            "close" => Ok(MarkedDown::Close),
            _ => Err("expected keep or close".into()),
        }
    }
    fn xml(&self) -> String {
        match self {
            MarkedDown::Keep => "keep",
            MarkedDown::Close => "close",
        }
        .to_string()
    }
    fn toml(&self) -> String {
        format!("\"{}\"", self.xml())
    }
}

options! {
    /// Per-host settings beyond txLoadBalancer's (attributes of `<host>`).
    pub struct HostOptions {
        /// Most open connections on the host (0 = no limit); over it, the
        /// scheduler picks another host.
        maxconn: u32 = 0, "maxconn", "maxconn";
        /// PROXY protocol header for this host, overriding the group's.
        proxy_protocol: Option<Option<ProxyVersion>> = None, "proxyProtocol", "proxy_protocol";
        /// A host given by name becomes one host per address the name resolves
        /// to (named `NAME@ADDRESS`), following the record as it changes: new
        /// addresses become hosts, addresses gone drain.
        expand: bool = false, "expand", "expand";
        /// Re-resolve the host's name every this many seconds, whatever the
        /// record's TTL (`None`, written `0`: follow the TTL within the
        /// `<resolver>`'s `minTtl`..`maxTtl`).
        resolve: Option<Duration> = None, "resolve", "resolve";
        /// The port the group's `<check>` probes on this host, overriding the
        /// check's `port` (`None`: the check's, else the host's own).
        check_port: Option<u16> = None, "checkPort", "check_port";
        /// The port the group's `<agent>` asks on this host, overriding the
        /// agent's `port`.
        agent_port: Option<u16> = None, "agentPort", "agent_port";
        /// Connect to this host with TLS (or not), overriding the group's `tls`.
        tls: Option<bool> = None, "tls", "tls";
        /// The TLS server name for this host, overriding the group's `tlsSni`.
        tls_sni: Option<String> = None, "tlsSni", "tls_sni";
    }
}

/// Default time between two questions to a host's agent (`<agent interval>`).
pub const DEFAULT_AGENT_INTERVAL: Duration = Duration::from_secs(2);
/// Default longest wait for an agent's line (`<agent timeout>`).
pub const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(1);

options! {
    /// A group's agent (`<agent>`, TOML `agent = { … }`, HAProxy's
    /// `agent-check`): every `interval` each host's agent is asked, on
    /// `port` (a host's `agentPort` wins), for one line saying its state
    /// and weight; see `health::agent`.
    pub struct AgentConfig {
        /// The port the agent answers on (`None`: every host names its own
        /// `agentPort`).
        port: Option<u16> = None, "port", "port";
        /// Time between two questions to one host's agent, ±10% jitter.
        interval: Duration = DEFAULT_AGENT_INTERVAL, "interval", "interval";
        /// Longest wait for the agent's line, connect included.
        timeout: Duration = DEFAULT_AGENT_TIMEOUT, "timeout", "timeout";
    }
}

options! {
    /// A group's active check (`<check>`, TOML `check = { … }`): every host of
    /// the group is probed every `interval`; `fall` failures in a row make an up
    /// host bad, `rise` successes in a row put a bad host back. The rules across
    /// settings are [`CheckConfig::rules`].
    pub struct CheckConfig {
        /// What a probe does once connected (`type`).
        kind: CheckKind = CheckKind::Tcp, "type", "type";
        /// Time between two probes of one host, ±10% jitter.
        interval: Duration = DEFAULT_CHECK_INTERVAL, "interval", "interval";
        /// Longest time one probe may take, connect and exchange together.
        timeout: Duration = DEFAULT_CHECK_TIMEOUT, "timeout", "timeout";
        /// Consecutive successes that put a bad host back.
        rise: u32 = DEFAULT_RISE, "rise", "rise";
        /// Consecutive failures that make an up host bad.
        fall: u32 = DEFAULT_FALL, "fall", "fall";
        /// The port probed (`None`: each host's own; a host's `checkPort` wins).
        port: Option<u16> = None, "port", "port";
        /// `type="send"`: the bytes written once connected (may be empty: the
        /// host speaks first).
        send: Escaped = Escaped::default(), "send", "send";
        /// `type="send"`: the reply must contain these bytes.
        expect: Escaped = Escaped::default(), "expect", "expect";
        /// `type="send"`: the reply must match this regular expression
        /// (instead of `expect`).
        expect_regex: CheckRegex = CheckRegex::default(), "expectRegex", "expect_regex";
        /// `type="http"`: the path requested.
        path: String = "/".to_string(), "path", "path";
        /// `type="http"`: the `Host` header (empty: the host's name).
        host: String = String::new(), "host", "host";
        /// `type="http"`: the status codes that pass.
        status: StatusList = StatusList::default(), "status", "status";
        /// `type="http"`: over TLS (HTTPS; the certificate is not verified).
        tls: bool = false, "tls", "tls";
        /// `type="http"`: keep the connection open between probes (HTTP/1.1
        /// keep-alive, as Envoy's checks do) while the host allows it; `false`:
        /// a new connection per probe, closed once the status line is in.
        reuse: bool = true, "reuse", "reuse";
        /// `type="redis"`: the replication role `INFO replication` must say
        /// (empty: any).
        role: RedisRole = RedisRole::default(), "role", "role";
        /// `type="postgres"`: the user named in the startup message.
        user: String = DEFAULT_POSTGRES_USER.to_string(), "user", "user";
        /// `type="dns"`: the name queried (an `A` record).
        name: String = String::new(), "name", "name";
    }
}

/// Default shortest time an answer is kept before the name is asked again,
/// whatever its TTL (seconds); also the retry period after a failed look-up.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(5);
/// Default longest time an answer is kept before the name is asked again,
/// whatever its TTL (seconds).
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(300);

options! {
    /// `<resolver>` (TOML `[resolver]`): how host names are resolved and
    /// re-resolved.
    pub struct ResolverOptions {
        /// Name servers to ask (`IP` or `IP:PORT`); empty: the system's
        /// (`/etc/resolv.conf`).
        nameservers: Vec<SocketAddr> = Vec::new(), "nameserver", "nameserver";
        /// Floor of the record TTL: a name is not asked again sooner.
        min_ttl: Duration = DEFAULT_MIN_TTL, "minTtl", "min_ttl";
        /// Ceiling of the record TTL: a name is asked again at least this often.
        max_ttl: Duration = DEFAULT_MAX_TTL, "maxTtl", "max_ttl";
    }
}

options! {
    /// Per-listener settings (attributes of `<listen>`, keys of a `listen` table).
    /// Each one, when set, overrides the service's setting of the same name for
    /// this listener alone; unset, the service's applies.
    pub struct ListenOptions {
        /// Clients of this listener start with a PROXY protocol header (v1 or v2).
        accept_proxy: Option<bool> = None, "acceptProxy", "accept_proxy";
        /// Sources allowed to send PROXY headers to this listener (empty: any).
        trusted_proxies: Option<Vec<IpNet>> = None, "trustedProxies", "trusted_proxies";
        /// On a listener with routes: the longest wait for the client's first
        /// bytes (a client silent that long goes to the listener's own service).
        inspect_timeout: Duration = DEFAULT_INSPECT_TIMEOUT, "inspectTimeout", "inspect_timeout";
        /// On a listener with routes: the most bytes read to choose one, at
        /// most [`MAX_INSPECT_BYTES`].
        inspect_bytes: u32 = MAX_INSPECT_BYTES, "inspectBytes", "inspect_bytes";
        /// Answers ACME `http-01` validations (`GET /.well-known/acme-challenge/…`)
        /// of the certificates txlb orders, and passes every other client on.
        acme_http: bool = false, "acmeHttp", "acme_http";
    }
}

/// Default `inspectTimeout`: how long a listener with routes waits for a
/// client's first bytes.
pub const DEFAULT_INSPECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest (and default) `inspectBytes`: a TLS record's largest payload, so a
/// ClientHello in one record always fits.
pub const MAX_INSPECT_BYTES: u32 = 16 * 1024;

impl ListenOptions {
    /// Whether this listener's clients must start with a PROXY header: its own
    /// `acceptProxy`, or the service's.
    pub fn accepts_proxy(&self, service: &ServiceOptions) -> bool {
        self.accept_proxy.unwrap_or(service.accept_proxy)
    }

    /// The sources this listener takes PROXY headers from (empty: any): its own
    /// `trustedProxies`, or the service's.
    pub fn trusted_proxies<'a>(&'a self, service: &'a ServiceOptions) -> &'a [IpNet] {
        self.trusted_proxies
            .as_deref()
            .unwrap_or(&service.trusted_proxies)
    }
}

/// A listener's override of a service flag: absent, or a value.
impl OptionValue for Option<bool> {
    fn read(raw: &RawValue) -> Result<Self, String> {
        <bool as OptionValue>::read(raw).map(Some)
    }
    fn xml(&self) -> String {
        self.map(|v| v.xml()).unwrap_or_default()
    }
    fn toml(&self) -> String {
        self.map(|v| v.toml()).unwrap_or_default()
    }
}

/// A listener's override of a service's networks: absent, or a list (possibly
/// empty, meaning "any").
impl OptionValue for Option<Vec<IpNet>> {
    fn read(raw: &RawValue) -> Result<Self, String> {
        <Vec<IpNet> as OptionValue>::read(raw).map(Some)
    }
    fn xml(&self) -> String {
        self.as_ref().map(|v| v.xml()).unwrap_or_default()
    }
    fn toml(&self) -> String {
        self.as_ref().map(|v| v.toml()).unwrap_or_default()
    }
}

/// A host's override: absent, or a version (or an explicit `none`).
impl OptionValue for Option<Option<ProxyVersion>> {
    fn read(raw: &RawValue) -> Result<Self, String> {
        <Option<ProxyVersion> as OptionValue>::read(raw).map(Some)
    }
    fn xml(&self) -> String {
        self.map(|v| v.xml()).unwrap_or_default()
    }
    fn toml(&self) -> String {
        self.map(|v| v.toml()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_from_text_and_toml_and_write_back() {
        let mut o = ServiceOptions::default();
        assert!(
            o.set("clientTimeout", &RawValue::Text("1.5".into()))
                .unwrap()
        );
        assert!(
            o.set(
                "allow",
                &RawValue::Text("10.0.0.0/8, ::1 192.168.1.7".into())
            )
            .unwrap()
        );
        assert!(
            o.set("source_rate", &RawValue::Toml(toml::Value::Integer(20)))
                .unwrap()
        );
        assert!(!o.set("nonsense", &RawValue::Text("1".into())).unwrap());
        assert_eq!(o.client_timeout, Duration::from_millis(1500));
        assert_eq!(o.allow.len(), 3);
        assert_eq!(o.source_rate, 20);
        let written = o.non_default();
        assert_eq!(written.len(), 3);
        assert_eq!(written[2].xml, "10.0.0.0/8 ::1/128 192.168.1.7/32");
        assert_eq!(
            written[2].toml,
            "[\"10.0.0.0/8\", \"::1/128\", \"192.168.1.7/32\"]"
        );
        let mut again = ServiceOptions::default();
        for w in &written {
            again
                .set(w.xml_name, &RawValue::Text(w.xml.clone()))
                .unwrap();
        }
        assert_eq!(again, o);
    }

    #[test]
    fn bad_values_say_what_was_expected() {
        let mut o = ServiceOptions::default();
        let e = o.set("maxconn", &RawValue::Text("-1".into())).unwrap_err();
        assert!(e.contains("bad maxconn \"-1\""), "{e}");
        let e = o
            .set("deny", &RawValue::Text("10.0.0.0/33".into()))
            .unwrap_err();
        assert!(e.contains("not a network"), "{e}");
        let mut g = GroupOptions::default();
        let e = g
            .set("proxyProtocol", &RawValue::Text("v3".into()))
            .unwrap_err();
        assert!(e.contains("expected v1, v2 or none"), "{e}");
        g.set("proxyProtocol", &RawValue::Text("v2".into()))
            .unwrap();
        assert_eq!(g.proxy_protocol, Some(ProxyVersion::V2));
        let mut h = HostOptions::default();
        h.set("proxyProtocol", &RawValue::Text("none".into()))
            .unwrap();
        assert_eq!(h.proxy_protocol, Some(None));
    }
}

/// Default `handshakeTimeout`: the longest a terminating listener waits for a
/// client's TLS handshake to complete.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

options! {
    /// A terminating listener's TLS settings (attributes of its first `<tls>`,
    /// keys of the first entry of a listen table's `tls`).
    pub struct TlsOptions {
        /// ALPN protocols offered, in order of preference (empty: none).
        alpn: Vec<String> = Vec::new(), "alpn", "alpn";
        /// The oldest TLS version accepted.
        min_version: TlsVersion = TlsVersion::V1_2, "minVersion", "min_version";
        /// CA certificates (PEM) client certificates are verified against:
        /// mutual TLS. `None`: clients are not asked for a certificate.
        client_ca: Option<std::path::PathBuf> = None, "clientCa", "client_ca";
        /// With `clientCa`: whether a client must show a certificate.
        client_auth: ClientAuth = ClientAuth::Required, "clientAuth", "client_auth";
        /// Longest time for a client's handshake to complete.
        handshake_timeout: Duration = DEFAULT_HANDSHAKE_TIMEOUT, "handshakeTimeout", "handshake_timeout";
    }
}

/// A TLS protocol version txlb speaks (`minVersion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    V1_2,
    /// TLS 1.3.
    V1_3,
}

impl TlsVersion {
    /// As written: `1.2`, `1.3`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        }
    }
}

/// Text of a string option, or what it expected.
fn text_of<'r>(raw: &'r RawValue, expected: &str) -> Result<std::borrow::Cow<'r, str>, String> {
    match raw {
        RawValue::Text(t) => Ok(t.trim().into()),
        RawValue::Toml(toml::Value::String(s)) => Ok(s.trim().into()),
        RawValue::Toml(toml::Value::Float(f)) => Ok(f.to_string().into()),
        RawValue::Toml(_) => Err(expected.to_string()),
    }
}

/// `1.2` or `1.3` (a TOML string or number).
impl OptionValue for TlsVersion {
    fn read(raw: &RawValue) -> Result<Self, String> {
        const EXPECTED: &str = "expected 1.2 or 1.3";
        match text_of(raw, EXPECTED)?.as_ref() {
            "1.2" | "TLSv1.2" | "tls1.2" => Ok(TlsVersion::V1_2),
            "1.3" | "TLSv1.3" | "tls1.3" => Ok(TlsVersion::V1_3),
            _ => Err(EXPECTED.into()),
        }
    }
    fn xml(&self) -> String {
        self.as_str().to_string()
    }
    fn toml(&self) -> String {
        format!("\"{}\"", self.as_str())
    }
}

/// Whether a terminating listener with `clientCa` requires a client
/// certificate (`clientAuth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientAuth {
    /// A client without a certificate that verifies is refused.
    Required,
    /// A client may show none; one it shows must verify.
    Optional,
}

impl ClientAuth {
    /// As written: `required`, `optional`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Required => "required",
            ClientAuth::Optional => "optional",
        }
    }
}

/// `required` or `optional`.
impl OptionValue for ClientAuth {
    fn read(raw: &RawValue) -> Result<Self, String> {
        const EXPECTED: &str = "expected required or optional";
        match text_of(raw, EXPECTED)?.to_ascii_lowercase().as_str() {
            "required" => Ok(ClientAuth::Required),
            "optional" => Ok(ClientAuth::Optional),
            _ => Err(EXPECTED.into()),
        }
    }
    fn xml(&self) -> String {
        self.as_str().to_string()
    }
    fn toml(&self) -> String {
        format!("\"{}\"", self.as_str())
    }
}

/// A file (relative paths are resolved against the configuration's
/// directory by the reader); empty: none.
impl OptionValue for Option<std::path::PathBuf> {
    fn read(raw: &RawValue) -> Result<Self, String> {
        let text = match raw {
            RawValue::Text(t) => t.as_str(),
            RawValue::Toml(toml::Value::String(s)) => s.as_str(),
            RawValue::Toml(_) => return Err("expected a file name".into()),
        };
        Ok((!text.is_empty()).then(|| std::path::PathBuf::from(text)))
    }
    fn xml(&self) -> String {
        self.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }
    fn toml(&self) -> String {
        super::write::tstr(&self.xml())
    }
    fn check(&self) -> Result<(), String> {
        match self {
            Some(p) if p.to_str().is_none() => Err("expected a file name in UTF-8".into()),
            _ => Ok(()),
        }
    }
}

/// ALPN protocol names: comma or space separated in XML, an array of strings
/// in TOML; each as a route's `alpn` ([`super::parse::parse_alpn`]).
impl OptionValue for Vec<String> {
    fn read(raw: &RawValue) -> Result<Self, String> {
        let names = read_list(raw, "protocol names")?;
        if names.len() > MAX_TLS_ALPN {
            return Err(format!(
                "{} protocols (expected at most {MAX_TLS_ALPN})",
                names.len()
            ));
        }
        names
            .iter()
            .map(|n| super::parse::parse_alpn(n).map_err(|why| format!("{n:?}: {why}")))
            .collect()
    }
    fn xml(&self) -> String {
        self.join(",")
    }
    fn toml(&self) -> String {
        let items: Vec<String> = self.iter().map(|s| super::write::tstr(s)).collect();
        format!("[{}]", items.join(", "))
    }
    fn check(&self) -> Result<(), String> {
        if self.len() > MAX_TLS_ALPN {
            return Err(format!("expected at most {MAX_TLS_ALPN} protocols"));
        }
        for name in self {
            super::parse::parse_alpn(name).map_err(|why| format!("{name:?}: {why}"))?;
        }
        Ok(())
    }
}

/// Most ALPN protocols a terminating listener offers.
pub const MAX_TLS_ALPN: usize = 16;

/// Default `renewBefore`: a certificate from ACME is renewed from this long
/// before it expires (30 days, as Let's Encrypt advises for 90-day ones).
pub const DEFAULT_ACME_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

options! {
    /// `<acme>` (TOML `[acme]`): where the certificates of `<tls acme="…">`
    /// come from, and where they are kept.
    pub struct AcmeConfig {
        /// The ACME server's directory URL (`https://…`); required.
        directory: AcmeUrl = AcmeUrl::default(), "directory", "directory";
        /// The account's contact address, if any.
        email: AcmeEmail = AcmeEmail::default(), "email", "email";
        /// The directory the account key and the certificates are kept in
        /// (created 0700, files 0600); required.
        storage: Option<std::path::PathBuf> = None, "storage", "storage";
        /// CA certificates (PEM) the ACME server's own certificate is
        /// verified against (a private ACME server); `None`: the system's.
        ca_bundle: Option<std::path::PathBuf> = None, "caBundle", "ca_bundle";
        /// How txlb proves it holds the names.
        challenge: AcmeChallenge = AcmeChallenge::TlsAlpn01, "challenge", "challenge";
        /// A certificate is renewed from this long before its expiry.
        renew_before: Duration = DEFAULT_ACME_RENEW_BEFORE, "renewBefore", "renew_before";
    }
}

/// Longest ACME directory URL or contact address.
const MAX_ACME_TEXT: usize = 2048;

/// An ACME directory URL: `https://…`, no spaces; empty: not given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AcmeUrl(pub String);

impl AcmeUrl {
    fn valid(text: &str) -> Result<(), String> {
        if text.is_empty() {
            return Ok(());
        }
        let rest = text
            .strip_prefix("https://")
            .ok_or("expected an https:// URL (ACME is spoken over TLS)")?;
        if rest.is_empty()
            || text.len() > MAX_ACME_TEXT
            || text.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("expected an https:// URL".into());
        }
        Ok(())
    }
}

impl OptionValue for AcmeUrl {
    fn read(raw: &RawValue) -> Result<Self, String> {
        let text = text_of(raw, "expected an https:// URL")?;
        AcmeUrl::valid(&text)?;
        Ok(AcmeUrl(text.into_owned()))
    }
    fn xml(&self) -> String {
        self.0.clone()
    }
    fn toml(&self) -> String {
        super::write::tstr(&self.0)
    }
    fn check(&self) -> Result<(), String> {
        AcmeUrl::valid(&self.0)
    }
}

/// An ACME account's contact address (`ops@example.com`); empty: none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AcmeEmail(pub String);

impl AcmeEmail {
    fn valid(text: &str) -> Result<(), String> {
        const EXPECTED: &str = "expected an e-mail address, like ops@example.com";
        if text.is_empty() {
            return Ok(());
        }
        match text.split_once('@') {
            Some((user, domain))
                if !user.is_empty()
                    && !domain.is_empty()
                    && text.len() <= MAX_ACME_TEXT
                    && !text
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control() || c == ',') =>
            {
                Ok(())
            }
            _ => Err(EXPECTED.into()),
        }
    }
}

impl OptionValue for AcmeEmail {
    fn read(raw: &RawValue) -> Result<Self, String> {
        let text = text_of(raw, "expected an e-mail address")?;
        AcmeEmail::valid(&text)?;
        Ok(AcmeEmail(text.into_owned()))
    }
    fn xml(&self) -> String {
        self.0.clone()
    }
    fn toml(&self) -> String {
        super::write::tstr(&self.0)
    }
    fn check(&self) -> Result<(), String> {
        AcmeEmail::valid(&self.0)
    }
}

/// How txlb proves to the ACME server that it holds a name (RFC 8555 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AcmeChallenge {
    /// `tls-alpn-01` (RFC 8737): answered by the terminating listener itself,
    /// which must be reachable on port 443 of the name.
    #[default]
    TlsAlpn01,
    /// `http-01`: answered by the listeners with `acmeHttp="true"`, one of
    /// which must be reachable on port 80 of the name.
    Http01,
}

impl AcmeChallenge {
    /// As written: `tls-alpn-01`, `http-01`.
    pub fn as_str(self) -> &'static str {
        match self {
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
            AcmeChallenge::Http01 => "http-01",
        }
    }
}

impl OptionValue for AcmeChallenge {
    fn read(raw: &RawValue) -> Result<Self, String> {
        const EXPECTED: &str = "expected tls-alpn-01 or http-01";
        match text_of(raw, EXPECTED)?.to_ascii_lowercase().as_str() {
            "tls-alpn-01" => Ok(AcmeChallenge::TlsAlpn01),
            "http-01" => Ok(AcmeChallenge::Http01),
            _ => Err(EXPECTED.into()),
        }
    }
    fn xml(&self) -> String {
        self.as_str().to_string()
    }
    fn toml(&self) -> String {
        format!("\"{}\"", self.as_str())
    }
}
