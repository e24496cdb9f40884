//! The value types of a group's `<check>` (its table is `options::CheckConfig`):
//! the check type, bytes written with escapes (`send`, `expect`), HTTP status
//! lists, and the rules across its settings ([`CheckConfig::rules`]).

use std::fmt::{self, Write as _};
use std::time::Duration;

use super::options::{AgentConfig, CheckConfig, OptionValue, RawValue};
use super::write::tstr;

/// Default time between two probes of one host (`interval`), before ±10% jitter.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Default time one probe may take, connect and exchange (`timeout`).
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Default consecutive successes that put a bad host back (`rise`).
pub const DEFAULT_RISE: u32 = 2;
/// Default consecutive failures that make an up host bad (`fall`).
pub const DEFAULT_FALL: u32 = 3;
/// Largest `rise` and `fall`.
pub const MAX_RISE_FALL: u32 = 100;
/// Shortest `interval`.
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Longest `interval`.
pub const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(3600);
/// Shortest `timeout`.
pub const MIN_CHECK_TIMEOUT: Duration = Duration::from_millis(10);
/// Longest `timeout`.
pub const MAX_CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest `send`, `expect`, `path` or `host` (bytes).
pub const MAX_CHECK_TEXT: usize = 1024;
/// Default `user` of a `postgres` check: the role `initdb` makes.
pub const DEFAULT_POSTGRES_USER: &str = "postgres";

/// What a probe does once connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CheckKind {
    /// The connect alone.
    #[default]
    Tcp,
    /// Write `send`, read until the reply contains `expect`.
    Send,
    /// `GET path`; the status code must be in `status` (over TLS with
    /// `tls="true"`; the connection kept between probes unless
    /// `reuse="false"`).
    Http,
    /// The TLS handshake completes (the certificate is not verified).
    Tls,
    /// Redis: `PING` answers `+PONG`; with `role`, `INFO replication` says it.
    Redis,
    /// PostgreSQL: a startup message for `user` gets an authentication
    /// request, not an error.
    Postgres,
    /// MySQL and MariaDB: the server's greeting, not an error packet.
    Mysql,
    /// SMTP: a `220` banner, then `QUIT`.
    Smtp,
    /// UDP: `send` in one datagram; a reply must come (containing `expect`
    /// or matching `expectRegex`, when set), not a refusal.
    Udp,
    /// DNS over UDP: a query for `name`; any answer but SERVFAIL or REFUSED.
    Dns,
}

impl CheckKind {
    /// Every type, in the order the documentation lists them.
    pub const ALL: [CheckKind; 10] = [
        CheckKind::Tcp,
        CheckKind::Send,
        CheckKind::Http,
        CheckKind::Tls,
        CheckKind::Redis,
        CheckKind::Postgres,
        CheckKind::Mysql,
        CheckKind::Smtp,
        CheckKind::Udp,
        CheckKind::Dns,
    ];

    /// The name in configuration files (`type`).
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Send => "send",
            CheckKind::Http => "http",
            CheckKind::Tls => "tls",
            CheckKind::Redis => "redis",
            CheckKind::Postgres => "postgres",
            CheckKind::Mysql => "mysql",
            CheckKind::Smtp => "smtp",
            CheckKind::Udp => "udp",
            CheckKind::Dns => "dns",
        }
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn text(raw: &RawValue, expected: &str) -> Result<String, String> {
    match raw {
        RawValue::Text(t) => Ok(t.clone()),
        RawValue::Toml(toml::Value::String(s)) => Ok(s.clone()),
        RawValue::Toml(_) => Err(format!("expected {expected}")),
    }
}

/// A `dns` check's `name`: labels of 1 to 63 bytes, at most 253 in all
/// (a trailing dot allowed), printable ASCII.
fn check_dns_name(name: &str) -> Result<(), String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let bad = trimmed.is_empty()
        || trimmed.len() > 253
        || trimmed
            .split('.')
            .any(|l| l.is_empty() || l.len() > 63 || !l.bytes().all(|b| b.is_ascii_graphic()));
    match bad {
        true => Err(format!(
            "name {name:?} is not a DNS name (expected labels of 1 to 63 characters, at most 253 in all, e.g. example.com)"
        )),
        false => Ok(()),
    }
}

/// The names of every type, for errors: `tcp, send, http, …`.
fn kind_names() -> String {
    CheckKind::ALL.map(CheckKind::name).join(", ")
}

/// `tcp`, `send`, `http`, `tls`, `redis`, `postgres`, `mysql`, `smtp`, `udp` or `dns`.
impl OptionValue for CheckKind {
    fn read(raw: &RawValue) -> Result<Self, String> {
        let name = text(raw, &format!("a check type ({})", kind_names()))?;
        CheckKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| format!("unknown check type (expected one of: {})", kind_names()))
    }
    fn xml(&self) -> String {
        self.name().to_string()
    }
    fn toml(&self) -> String {
        tstr(self.name())
    }
}

/// A port (1..=65535), or not set.
impl OptionValue for Option<u16> {
    fn read(raw: &RawValue) -> Result<Self, String> {
        let bad = || "expected a port from 1 to 65535".to_string();
        let port = match raw {
            RawValue::Text(t) => t.trim().parse::<u16>().map_err(|_| bad())?,
            RawValue::Toml(toml::Value::Integer(i)) => u16::try_from(*i).map_err(|_| bad())?,
            RawValue::Toml(_) => return Err(bad()),
        };
        if port == 0 {
            return Err(bad());
        }
        Ok(Some(port))
    }
    fn xml(&self) -> String {
        self.map(|p| p.to_string()).unwrap_or_default()
    }
    fn toml(&self) -> String {
        self.map(|p| p.to_string()).unwrap_or_default()
    }
    fn check(&self) -> Result<(), String> {
        match self {
            Some(0) => Err("expected a port from 1 to 65535".into()),
            _ => Ok(()),
        }
    }
}

/// Plain text (a path, a header value).
impl OptionValue for String {
    fn read(raw: &RawValue) -> Result<Self, String> {
        text(raw, "a string")
    }
    fn xml(&self) -> String {
        self.clone()
    }
    fn toml(&self) -> String {
        tstr(self)
    }
}

/// Bytes written as text with escapes: `\r`, `\n`, `\t`, `\\` and `\xHH`; any
/// other character stands for its UTF-8 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Escaped(pub Vec<u8>);

impl Escaped {
    /// Decodes `text`, or says which escape is wrong.
    pub fn parse(text: &str) -> Result<Escaped, String> {
        let mut out = Vec::with_capacity(text.len());
        let mut chars = text.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '\\' {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                continue;
            }
            let bad = |what: &str| {
                format!(
                    "bad escape {what:?} at character {} (expected \\r, \\n, \\t, \\\\ or \\xHH)",
                    text[..i].chars().count() + 1
                )
            };
            match chars.next().map(|(_, c)| c) {
                Some('r') => out.push(b'\r'),
                Some('n') => out.push(b'\n'),
                Some('t') => out.push(b'\t'),
                Some('\\') => out.push(b'\\'),
                Some('x') => {
                    let hex: String = chars.by_ref().take(2).map(|(_, c)| c).collect();
                    match u8::from_str_radix(&hex, 16) {
                        Ok(b) if hex.len() == 2 => out.push(b),
                        _ => return Err(bad(&format!("\\x{hex}"))),
                    }
                }
                Some(other) => return Err(bad(&format!("\\{other}"))),
                None => return Err(bad("\\")),
            }
        }
        Ok(Escaped(out))
    }

    /// The bytes as text with escapes: what [`Escaped::parse`] reads back.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(self.0.len());
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\r' => out.push_str("\\r"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    '\\' => out.push_str("\\\\"),
                    c if c.is_control() && (c as u32) < 0x80 => {
                        let _ = write!(out, "\\x{:02x}", c as u32);
                    }
                    c => out.push(c),
                }
            }
            for b in chunk.invalid() {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
        out
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Escaped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl OptionValue for Escaped {
    fn read(raw: &RawValue) -> Result<Self, String> {
        Escaped::parse(&text(raw, "a string")?)
    }
    fn xml(&self) -> String {
        self.to_text()
    }
    fn toml(&self) -> String {
        tstr(&self.to_text())
    }
}

/// Most bytes a compiled `expectRegex` may take (its program; the lazy DFA's
/// cache has the same bound): a pattern like `a{1000}{1000}` is refused when
/// read instead of taking memory at every probe.
pub const MAX_REGEX_SIZE: usize = 256 * 1024;

/// A regular expression a reply must match (`expectRegex`), over bytes: a
/// host's reply need not be UTF-8. Compiled once, when read, within
/// [`MAX_REGEX_SIZE`]; matching is linear in the reply (at most the 4 KiB a
/// probe reads). Equal when written the same.
#[derive(Debug, Clone, Default)]
pub struct CheckRegex(pub Option<regex::bytes::Regex>);

impl CheckRegex {
    /// Compiles `pattern` (empty: none), or says why it cannot.
    pub fn parse(pattern: &str) -> Result<CheckRegex, String> {
        if pattern.is_empty() {
            return Ok(CheckRegex(None));
        }
        regex::bytes::RegexBuilder::new(pattern)
            .size_limit(MAX_REGEX_SIZE)
            .dfa_size_limit(MAX_REGEX_SIZE)
            .build()
            .map(|r| CheckRegex(Some(r)))
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(limit) => {
                    format!("the expression compiles to more than {limit} bytes")
                }
                // The syntax error's own text points at the place, over
                // several lines: one line here.
                e => e
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            })
    }

    /// The pattern as written (empty: none).
    pub fn as_str(&self) -> &str {
        self.0.as_ref().map_or("", |r| r.as_str())
    }

    /// Whether there is no expression.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Whether `reply` matches (true without an expression).
    pub fn is_match(&self, reply: &[u8]) -> bool {
        self.0.as_ref().is_none_or(|r| r.is_match(reply))
    }
}

impl PartialEq for CheckRegex {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for CheckRegex {}

impl OptionValue for CheckRegex {
    fn read(raw: &RawValue) -> Result<Self, String> {
        CheckRegex::parse(&text(raw, "a regular expression")?)
    }
    fn xml(&self) -> String {
        self.as_str().to_string()
    }
    fn toml(&self) -> String {
        tstr(self.as_str())
    }
    fn check(&self) -> Result<(), String> {
        CheckRegex::parse(self.as_str()).map(|_| ())
    }
}

/// `role` of a `redis` check: what `INFO replication` must say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedisRole {
    /// Any role.
    #[default]
    Any,
    /// `role:master`.
    Master,
    /// `role:slave` (a replica).
    Replica,
}

impl RedisRole {
    /// The name in configuration files (empty: any).
    pub fn name(self) -> &'static str {
        match self {
            RedisRole::Any => "",
            RedisRole::Master => "master",
            RedisRole::Replica => "replica",
        }
    }
}

/// `master`, `replica` (or `slave`), or empty for any.
impl OptionValue for RedisRole {
    fn read(raw: &RawValue) -> Result<Self, String> {
        match text(raw, "master or replica")?
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "" | "any" => Ok(RedisRole::Any),
            "master" => Ok(RedisRole::Master),
            "replica" | "slave" => Ok(RedisRole::Replica),
            _ => Err("expected master or replica".into()),
        }
    }
    fn xml(&self) -> String {
        self.name().to_string()
    }
    fn toml(&self) -> String {
        tstr(self.name())
    }
}

/// HTTP status codes a check accepts: codes and inclusive ranges
/// (`200-399,404`), each within 100..=599.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusList(pub Vec<(u16, u16)>);

impl Default for StatusList {
    /// `200-399`.
    fn default() -> Self {
        StatusList(vec![(200, 399)])
    }
}

impl StatusList {
    /// Parses `200-399,404` (items separated by commas or spaces).
    pub fn parse(text: &str) -> Result<StatusList, String> {
        let code = |s: &str| -> Result<u16, String> {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| format!("{s:?} is not an HTTP status code (100 to 599)"))
        };
        let mut out = Vec::new();
        for item in text.split([',', ' ']).filter(|s| !s.is_empty()) {
            let (lo, hi) = match item.split_once('-') {
                Some((lo, hi)) => (code(lo)?, code(hi)?),
                None => (code(item)?, code(item)?),
            };
            if lo > hi {
                return Err(format!("range {item:?} ends before it starts"));
            }
            out.push((lo, hi));
        }
        if out.is_empty() {
            return Err("expected status codes or ranges, e.g. 200-399,404".into());
        }
        Ok(StatusList(out))
    }

    /// Whether `code` is accepted.
    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&code))
    }
}

impl fmt::Display for StatusList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

impl OptionValue for StatusList {
    fn read(raw: &RawValue) -> Result<Self, String> {
        match raw {
            RawValue::Text(t) => StatusList::parse(t),
            RawValue::Toml(toml::Value::String(s)) => StatusList::parse(s),
            RawValue::Toml(toml::Value::Integer(i)) => StatusList::parse(&i.to_string()),
            RawValue::Toml(toml::Value::Array(items)) => {
                let parts: Option<Vec<String>> = items
                    .iter()
                    .map(|v| match v {
                        toml::Value::String(s) => Some(s.clone()),
                        toml::Value::Integer(i) => Some(i.to_string()),
                        _ => None,
                    })
                    .collect();
                let parts = parts.ok_or("expected status codes or ranges")?;
                StatusList::parse(&parts.join(","))
            }
            RawValue::Toml(_) => {
                Err("expected status codes or ranges, e.g. \"200-399,404\"".into())
            }
        }
    }
    fn xml(&self) -> String {
        self.to_string()
    }
    fn toml(&self) -> String {
        tstr(&self.to_string())
    }
    fn check(&self) -> Result<(), String> {
        StatusList::parse(&self.to_string()).map(|_| ())
    }
}

impl AgentConfig {
    /// The rules across the agent's settings: `interval` and `timeout` in
    /// the ranges a check's take. The error names the XML attribute.
    pub fn rules(&self) -> Result<(), (&'static str, String)> {
        let check = CheckConfig {
            interval: self.interval,
            timeout: self.timeout,
            ..CheckConfig::default()
        };
        check.rules()
    }
}

impl CheckConfig {
    /// A check of this type with every other setting at its default.
    pub fn of(kind: CheckKind) -> CheckConfig {
        CheckConfig {
            kind,
            ..CheckConfig::default()
        }
    }

    /// The rules across the check's settings (each value alone was checked by
    /// its type): ranges, and settings that belong to another type. The error
    /// names the XML attribute it is about.
    pub fn rules(&self) -> Result<(), (&'static str, String)> {
        let range = |what: &'static str, d: Duration, min: Duration, max: Duration| {
            if d < min || d > max {
                return Err((
                    what,
                    format!(
                        "{what} {} s is out of range (expected {} to {} s)",
                        d.as_secs_f64(),
                        min.as_secs_f64(),
                        max.as_secs_f64()
                    ),
                ));
            }
            Ok(())
        };
        range(
            "interval",
            self.interval,
            MIN_CHECK_INTERVAL,
            MAX_CHECK_INTERVAL,
        )?;
        range(
            "timeout",
            self.timeout,
            MIN_CHECK_TIMEOUT,
            MAX_CHECK_TIMEOUT,
        )?;
        for (what, n) in [("rise", self.rise), ("fall", self.fall)] {
            if n == 0 || n > MAX_RISE_FALL {
                return Err((
                    what,
                    format!("{what} {n} is out of range (expected 1 to {MAX_RISE_FALL})"),
                ));
            }
        }
        let defaults = CheckConfig::default();
        let only = |what: &'static str, set: bool, kind: CheckKind| {
            // What a `send` check says, a `udp` check says in a datagram.
            let same =
                self.kind == kind || (kind == CheckKind::Send && self.kind == CheckKind::Udp);
            if set && !same {
                return Err((
                    what,
                    format!(
                        "{what} is for type=\"{kind}\" checks, not type=\"{}\"",
                        self.kind
                    ),
                ));
            }
            Ok(())
        };
        only("send", !self.send.is_empty(), CheckKind::Send)?;
        only("expect", !self.expect.is_empty(), CheckKind::Send)?;
        only(
            "expectRegex",
            !self.expect_regex.is_empty(),
            CheckKind::Send,
        )?;
        if !self.expect.is_empty() && !self.expect_regex.is_empty() {
            return Err((
                "expectRegex",
                "expect and expectRegex are set: one or the other".into(),
            ));
        }
        only("tls", self.tls, CheckKind::Http)?;
        only("reuse", self.reuse != defaults.reuse, CheckKind::Http)?;
        only("role", self.role != RedisRole::Any, CheckKind::Redis)?;
        only("user", self.user != defaults.user, CheckKind::Postgres)?;
        only("path", self.path != defaults.path, CheckKind::Http)?;
        only("host", self.host != defaults.host, CheckKind::Http)?;
        only("status", self.status != defaults.status, CheckKind::Http)?;
        for (what, len) in [
            ("send", self.send.0.len()),
            ("expect", self.expect.0.len()),
            ("path", self.path.len()),
            ("host", self.host.len()),
            ("expectRegex", self.expect_regex.as_str().len()),
            ("user", self.user.len()),
        ] {
            if len > MAX_CHECK_TEXT {
                return Err((
                    what,
                    format!("{what} is {len} bytes long (at most {MAX_CHECK_TEXT})"),
                ));
            }
        }
        if !self.path.starts_with('/') {
            return Err((
                "path",
                format!("path {:?} does not start with \"/\"", self.path),
            ));
        }
        let blank = |c: char| c.is_whitespace() || c.is_control();
        if self.path.contains(blank) {
            return Err((
                "path",
                format!("path {:?} has a space or a control character", self.path),
            ));
        }
        if self.host.contains(blank) {
            return Err((
                "host",
                format!("host {:?} has a space or a control character", self.host),
            ));
        }
        if self.user.is_empty() || self.user.contains(|c: char| c == '\0' || c.is_control()) {
            return Err((
                "user",
                format!("user {:?} is empty or has a control character", self.user),
            ));
        }
        only("name", !self.name.is_empty(), CheckKind::Dns)?;
        if self.kind == CheckKind::Dns {
            check_dns_name(&self.name).map_err(|why| ("name", why))?;
        }
        if self.status.0.is_empty() {
            return Err(("status", "status lists no code".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_decode_and_encode_back() {
        let e = Escaped::parse(r"PING\r\n\t\\\x00\xff é").unwrap();
        assert_eq!(e.0, b"PING\r\n\t\\\x00\xff \xc3\xa9");
        assert_eq!(e.to_text(), r"PING\r\n\t\\\x00\xff é");
        assert_eq!(Escaped::parse(&e.to_text()).unwrap(), e);
        assert_eq!(Escaped::parse("").unwrap(), Escaped::default());
        for bad in [r"\q", r"a\", r"\x", r"\x4", r"\xzz"] {
            let why = Escaped::parse(bad).unwrap_err();
            assert!(why.contains("bad escape"), "{bad}: {why}");
        }
        assert!(Escaped::parse(r"ab\q").unwrap_err().contains("character 3"));
    }

    #[test]
    fn status_lists_take_codes_and_ranges() {
        let s = StatusList::parse("200-399, 404").unwrap();
        assert!(s.contains(200) && s.contains(399) && s.contains(404));
        assert!(!s.contains(400) && !s.contains(503));
        assert_eq!(s.to_string(), "200-399,404");
        assert_eq!(StatusList::parse(&s.to_string()).unwrap(), s);
        for bad in ["", "abc", "99", "600", "300-200", "200-", "2xx"] {
            assert!(StatusList::parse(bad).is_err(), "{bad:?}");
        }
        let toml = RawValue::Toml(toml::Value::Array(vec![
            toml::Value::String("200-299".into()),
            toml::Value::Integer(404),
        ]));
        assert_eq!(
            StatusList::read(&toml).unwrap().0,
            vec![(200, 299), (404, 404)]
        );
    }

    #[test]
    fn rules_refuse_what_a_type_does_not_use_and_out_of_range_values() {
        assert_eq!(CheckConfig::default().rules(), Ok(()));
        let mut c = CheckConfig::of(CheckKind::Tcp);
        c.send = Escaped(b"x".to_vec());
        assert_eq!(c.rules().unwrap_err().0, "send");
        c.kind = CheckKind::Send;
        assert_eq!(c.rules(), Ok(()));
        c.path = "/x".into();
        assert_eq!(c.rules().unwrap_err().0, "path");
        let mut h = CheckConfig::of(CheckKind::Http);
        h.path = "healthz".into();
        assert_eq!(h.rules().unwrap_err().0, "path");
        h.path = "/a b".into();
        assert_eq!(h.rules().unwrap_err().0, "path");
        h.path = "/healthz".into();
        h.rise = 0;
        assert_eq!(h.rules().unwrap_err().0, "rise");
        h.rise = 101;
        assert_eq!(h.rules().unwrap_err().0, "rise");
        h.rise = 100;
        h.fall = 0;
        assert_eq!(h.rules().unwrap_err().0, "fall");
        h.fall = 1;
        h.interval = Duration::from_millis(50);
        assert_eq!(h.rules().unwrap_err().0, "interval");
        h.interval = Duration::from_millis(200);
        h.timeout = Duration::from_secs(61);
        assert_eq!(h.rules().unwrap_err().0, "timeout");
        h.timeout = Duration::from_millis(100);
        assert_eq!(h.rules(), Ok(()));
    }

    #[test]
    fn regexes_compile_within_their_bound_and_compare_by_text() {
        let r = CheckRegex::parse(r"^\+PONG\r?$|role:master").unwrap();
        assert!(r.is_match(b"x\nrole:master\r\n") && !r.is_match(b"-LOADING"));
        assert!(r.is_match(&[
            0xff, b'r', b'o', b'l', b'e', b':', b'm', b'a', b's', b't', b'e', b'r'
        ]));
        assert_eq!(r, CheckRegex::parse(r.as_str()).unwrap());
        assert!(CheckRegex::parse("").unwrap().is_empty());
        let bad = CheckRegex::parse("(unclosed").unwrap_err();
        assert!(
            bad.contains("unclosed group") && !bad.contains('\n'),
            "{bad}"
        );
        let big = CheckRegex::parse(r"\w{1000}{1000}").unwrap_err();
        assert!(big.contains("more than"), "{big}");
        let mut c = CheckConfig::of(CheckKind::Send);
        c.expect_regex = r;
        assert_eq!(c.rules(), Ok(()));
        c.expect = Escaped(b"+PONG".to_vec());
        assert_eq!(c.rules().unwrap_err().0, "expectRegex");
        c.kind = CheckKind::Http;
        c.expect = Escaped::default();
        assert_eq!(c.rules().unwrap_err().0, "expectRegex");
    }

    #[test]
    fn settings_of_the_protocol_types_belong_to_them() {
        let mut c = CheckConfig::of(CheckKind::Http);
        c.tls = true;
        assert_eq!(c.rules(), Ok(()));
        c.kind = CheckKind::Tls;
        assert_eq!(c.rules().unwrap_err().0, "tls");
        let mut r = CheckConfig::of(CheckKind::Redis);
        r.role = RedisRole::Master;
        assert_eq!(r.rules(), Ok(()));
        r.kind = CheckKind::Send;
        assert_eq!(r.rules().unwrap_err().0, "role");
        let mut p = CheckConfig::of(CheckKind::Postgres);
        p.user = "app".into();
        assert_eq!(p.rules(), Ok(()));
        p.user = "a\0b".into();
        assert_eq!(p.rules().unwrap_err().0, "user");
        p.kind = CheckKind::Mysql;
        p.user = "app".into();
        assert_eq!(p.rules().unwrap_err().0, "user");
        assert_eq!(
            RedisRole::read(&RawValue::Text("slave".into())),
            Ok(RedisRole::Replica)
        );
        assert!(RedisRole::read(&RawValue::Text("leader".into())).is_err());
    }

    #[test]
    fn types_and_ports_read_from_text_and_toml() {
        assert_eq!(
            CheckKind::read(&RawValue::Text("HTTP".into())),
            Ok(CheckKind::Http)
        );
        assert!(
            CheckKind::read(&RawValue::Text("ldap".into()))
                .unwrap_err()
                .contains("unknown check type (expected one of: tcp, send, http, tls, redis")
        );
        for kind in CheckKind::ALL {
            assert_eq!(
                CheckKind::read(&RawValue::Text(kind.name().into())),
                Ok(kind)
            );
        }
        assert_eq!(
            <Option<u16>>::read(&RawValue::Toml(toml::Value::Integer(8081))),
            Ok(Some(8081))
        );
        for bad in ["0", "65536", "x"] {
            assert!(<Option<u16>>::read(&RawValue::Text(bad.into())).is_err());
        }
    }
}
