//! Value parsers: one written value (an address, a number of seconds, a
//! weight, …) → its model type, whatever brings it in (a file, an API
//! parameter, a console word, a builder call).
//!
//! They are public so the admin API reads its parameters exactly as the files
//! are read. Their `Err` is a reason ("no port (expected …)") meant to follow
//! the offending value in a message.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use super::model::*;

/// The longest interval or timeout accepted, in seconds (one year). Larger values
/// are certainly typos, and would overflow time arithmetic downstream.
pub const MAX_SECONDS: u64 = 365 * 24 * 60 * 60;

const HOST_PORT_EXAMPLE: &str = "expected HOST:PORT, e.g. 10.0.0.1:80, name:80 or [::1]:80";
pub(super) const SECONDS_EXPECTED: &str =
    "expected a number of seconds greater than 0, e.g. 10 or 0.5";

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
    // Unbracketed hosts with a ':' were refused by the split; brackets hold
    // an IPv6 address and nothing else.
    let (host, bracketed, port) = split_host_port(s)?;
    if bracketed {
        parse_bracketed_v6(host)?;
    }
    let address = HostAddress {
        host: host.to_string(),
        port,
    };
    check_host_address(&address)?;
    Ok(address)
}

/// Whether an address set in code is one a file could say: what
/// [`parse_host_address`] accepts (so it writes out and reads back the same).
pub(super) fn check_host_address(address: &HostAddress) -> Result<(), String> {
    if address.host.contains(':') {
        parse_bracketed_v6(&address.host)?;
    } else {
        check_host_name(&address.host)?;
    }
    if address.port == 0 {
        return Err("port 0 is not allowed for a host (expected 1-65535)".to_string());
    }
    Ok(())
}

/// Whether a listening address set in code is one a file could say: a name
/// must be a host name, not an IP literal or `*` written as a name.
pub(super) fn check_listen_addr(addr: &ListenAddr) -> Result<(), String> {
    match &addr.host {
        ListenHost::Any | ListenHost::Ip(_) => Ok(()),
        ListenHost::Name(name) if name == "*" || name.parse::<IpAddr>().is_ok() => Err(format!(
            "{name:?} is an address, not a name ({HOST_PORT_EXAMPLE})"
        )),
        ListenHost::Name(name) => check_host_name(name),
    }
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

pub(super) fn seconds_from_f64(f: f64) -> Result<Duration, String> {
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

/// Whether a duration set in code is one a file could say: more than zero, at
/// most [`MAX_SECONDS`].
pub(super) fn check_seconds(d: Duration) -> Result<(), String> {
    if d.is_zero() {
        Err(format!("zero ({SECONDS_EXPECTED})"))
    } else if d > Duration::from_secs(MAX_SECONDS) {
        Err(format!("too large (at most {MAX_SECONDS} seconds)"))
    } else {
        Ok(())
    }
}

/// The most characters of a DNS name (a route's `sni` or `host`).
const MAX_DNS_NAME: usize = 253;
/// The most characters of one label of a DNS name.
const MAX_DNS_LABEL: usize = 63;

/// A DNS name as a route matches it: labels of letters, digits, `-` and `_`,
/// separated by dots, none empty (so no final dot), at most 63 characters
/// each and [`MAX_DNS_NAME`] in all. `what` names the value in messages.
fn check_dns_name(name: &str, what: &str, expected: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("empty {what} ({expected})"));
    }
    if name.len() > MAX_DNS_NAME {
        return Err(format!(
            "{what} of {} characters (expected at most {MAX_DNS_NAME})",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!("{what} {name:?} contains {c:?} ({expected})"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(format!("{what} {name:?} has an empty label ({expected})"));
        }
        if label.len() > MAX_DNS_LABEL {
            return Err(format!(
                "{what} {name:?} has a label of {} characters (expected at most {MAX_DNS_LABEL})",
                label.len()
            ));
        }
    }
    Ok(())
}

/// A route's `sni`, lower-cased: `*` (any client that sent one), `*.SUFFIX`
/// (one or more labels under SUFFIX) or a DNS name, matched exactly. A `*`
/// anywhere else (`a.*.b`, `*foo.com`) is refused: it would never match what
/// the operator meant.
pub fn parse_sni(s: &str) -> Result<String, String> {
    const EXPECTED: &str = "expected a server name, *.SUFFIX or *";
    let sni = s.trim().to_ascii_lowercase();
    if sni == "*" {
        return Ok(sni);
    }
    let name = sni.strip_prefix("*.").unwrap_or(&sni);
    if name.contains('*') {
        return Err(format!(
            "'*' only as the whole name or as the first label, e.g. *.example.org ({EXPECTED})"
        ));
    }
    check_dns_name(name, "server name", EXPECTED)?;
    if sni.len() > MAX_DNS_NAME {
        return Err(format!(
            "server name of {} characters (expected at most {MAX_DNS_NAME})",
            sni.len()
        ));
    }
    Ok(sni)
}

/// The longest ALPN protocol name (its length is one byte on the wire).
pub const MAX_ALPN_LEN: usize = 255;

/// A route's `alpn`: an ALPN protocol name as the client offers it (`h2`,
/// `http/1.1`, `acme-tls/1`), 1 to [`MAX_ALPN_LEN`] bytes of printable ASCII
/// without spaces. Case matters (ALPN names are byte strings).
pub fn parse_alpn(s: &str) -> Result<String, String> {
    const EXPECTED: &str = "expected a protocol name such as h2 or http/1.1";
    if s.is_empty() {
        return Err(format!("empty ({EXPECTED})"));
    }
    if s.len() > MAX_ALPN_LEN {
        return Err(format!(
            "{} bytes long (expected at most {MAX_ALPN_LEN})",
            s.len()
        ));
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "contains {c:?} (expected printable ASCII without spaces; {EXPECTED})"
        ));
    }
    Ok(s.to_string())
}

/// A route's `host` (the HTTP/1.x `Host` header, port ignored), lower-cased:
/// a DNS name, an IPv4 literal, or an IPv6 literal with or without brackets
/// (kept without, in its usual short form). A port is refused, not dropped:
/// the route matches the name whatever port the client's `Host` carries, and
/// `app.example.com:8080` would say otherwise.
pub fn parse_route_host(s: &str) -> Result<String, String> {
    const EXPECTED: &str = "expected a host name or an IP address, without a port";
    let host = s.trim().to_ascii_lowercase();
    let inner = host
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'));
    if let Ok(ip) = inner.unwrap_or(&host).parse::<Ipv6Addr>() {
        return Ok(ip.to_string());
    }
    if host.starts_with('[') {
        return Err(match host.split_once("]:") {
            Some(_) => format!("a port is not allowed: the client's is ignored ({EXPECTED})"),
            None => format!("not an IPv6 address in brackets ({EXPECTED})"),
        });
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(host);
    }
    if let Some((_, port)) = host.rsplit_once(':')
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "a port is not allowed: the client's is ignored ({EXPECTED})"
        ));
    }
    check_dns_name(&host, "host", EXPECTED)?;
    // Digits and dots were meant as an IPv4 address (see `check_host_name`).
    if host
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("not an IPv4 address ({EXPECTED})"));
    }
    Ok(host)
}

/// A route's `protocol`: `tls`, `http`, `ssh` or `other`, any case.
pub fn parse_client_protocol(s: &str) -> Result<ClientProtocol, String> {
    ClientProtocol::from_name(s.trim()).ok_or_else(|| {
        let names: Vec<&str> = ClientProtocol::ALL.iter().map(|p| p.as_str()).collect();
        format!("expected one of: {}", names.join(", "))
    })
}

/// A host weight: an integer of at least 1.
pub fn parse_weight(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(0) | Err(_) => Err("expected an integer of at least 1".to_string()),
        Ok(w) => Ok(w),
    }
}

/// An etcd client URL: `http://HOST:PORT` (a trailing `/` is dropped).
pub(super) fn parse_etcd_endpoint(s: &str) -> Result<String, String> {
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
pub(super) fn parse_etcd_prefix(s: &str) -> Result<String, String> {
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
pub(super) fn parse_instance_name(s: &str) -> Result<(), String> {
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
