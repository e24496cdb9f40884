//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a balancer puts in
//! front of a connection's bytes so the host sees the real client address.
//!
//! [`encode_v1`] and [`encode_v2`] build the header txlb sends to hosts;
//! [`parse`] reads one from a client (txlb behind another balancer). Parsing is
//! strict: anything that is not exactly a well-formed header is an error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12 bytes every version 2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest version 1 header, CRLF included (from the specification).
pub const V1_MAX: usize = 107;
/// Longest version 2 header txlb accepts: 16 bytes of header and addresses plus
/// TLVs. Real senders stay far below; a bound keeps a hostile peer from making
/// txlb wait for (or buffer) 64 KiB.
pub const V2_MAX: usize = 16 + 1024;

/// Which version of the header to send: a setting, so declared with the
/// configuration (which comes before the proxy).
pub use crate::config::ProxyVersion as Version;

/// What a received header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A proxied connection: the real client (`source`) and the address it reached.
    Proxy {
        /// The client's address.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// The sender's own connection (a health check, v2 `LOCAL`) or an unknown
    /// family (v1 `UNKNOWN`, v2 `UNSPEC`): use the connection's real addresses.
    Local,
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The bytes start with neither `PROXY ` nor the v2 signature.
    #[error("no PROXY protocol header")]
    Missing,
    /// A version 1 header that breaks the grammar.
    #[error("malformed PROXY v1 header: {0}")]
    MalformedV1(&'static str),
    /// A version 2 header that breaks the format.
    #[error("malformed PROXY v2 header: {0}")]
    MalformedV2(&'static str),
    /// Longer than txlb accepts.
    #[error("PROXY header longer than {0} bytes")]
    TooLong(usize),
}

/// Parses a header at the start of `buf`. `Ok(None)`: not enough bytes yet (and
/// nothing seen so far is wrong). `Ok(Some((header, n)))`: the header takes the
/// first `n` bytes; what follows is the client's data.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let sig = V2_SIGNATURE.len().min(buf.len());
    if buf[..sig] == V2_SIGNATURE[..sig] && !buf.is_empty() {
        return parse_v2(buf);
    }
    let prefix = b"PROXY ";
    let n = prefix.len().min(buf.len());
    if buf[..n] != prefix[..n] {
        return Err(ProxyError::Missing);
    }
    parse_v1(buf)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let Some(end) = buf.iter().take(V1_MAX).position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::TooLong(V1_MAX))
        } else {
            Ok(None)
        };
    };
    let line = &buf[..end];
    let line = line
        .strip_suffix(b"\r")
        .ok_or(ProxyError::MalformedV1("line must end with CRLF"))?;
    let line = std::str::from_utf8(line).map_err(|_| ProxyError::MalformedV1("not ASCII"))?;
    let mut fields = line.split(' ');
    fields.next(); // "PROXY"
    let header = match fields.next() {
        Some("UNKNOWN") => ProxyHeader::Local, // the rest of the line is ignored
        Some(family @ ("TCP4" | "TCP6")) => {
            let v6 = family == "TCP6";
            let mut next = || {
                fields
                    .next()
                    .ok_or(ProxyError::MalformedV1("missing field"))
            };
            let src = v1_ip(next()?, v6)?;
            let dst = v1_ip(next()?, v6)?;
            let sport = v1_port(next()?)?;
            let dport = v1_port(next()?)?;
            if fields.next().is_some() {
                return Err(ProxyError::MalformedV1("extra field"));
            }
            ProxyHeader::Proxy {
                source: SocketAddr::new(src, sport),
                destination: SocketAddr::new(dst, dport),
            }
        }
        _ => {
            return Err(ProxyError::MalformedV1(
                "protocol must be TCP4, TCP6 or UNKNOWN",
            ));
        }
    };
    Ok(Some((header, end + 1)))
}

fn v1_ip(text: &str, v6: bool) -> Result<IpAddr, ProxyError> {
    if v6 {
        text.parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| ProxyError::MalformedV1("bad IPv6 address"))
    } else {
        text.parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| ProxyError::MalformedV1("bad IPv4 address"))
    }
}

fn v1_port(text: &str) -> Result<u16, ProxyError> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) {
        return Err(ProxyError::MalformedV1("bad port"));
    }
    text.parse()
        .map_err(|_| ProxyError::MalformedV1("bad port"))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let version = buf[12] >> 4;
    let command = buf[12] & 0x0f;
    if version != 2 {
        return Err(ProxyError::MalformedV2("version must be 2"));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + len;
    if total > V2_MAX {
        return Err(ProxyError::TooLong(V2_MAX));
    }
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[16..total];
    let header = match command {
        0 => ProxyHeader::Local,
        1 => match buf[13] {
            // TCP over IPv4.
            0x11 => {
                if body.len() < 12 {
                    return Err(ProxyError::MalformedV2("address block too short for IPv4"));
                }
                let ip = |at: usize| {
                    IpAddr::V4(Ipv4Addr::new(
                        body[at],
                        body[at + 1],
                        body[at + 2],
                        body[at + 3],
                    ))
                };
                let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
                ProxyHeader::Proxy {
                    source: SocketAddr::new(ip(0), port(8)),
                    destination: SocketAddr::new(ip(4), port(10)),
                }
            }
            // TCP over IPv6.
            0x21 => {
                if body.len() < 36 {
                    return Err(ProxyError::MalformedV2("address block too short for IPv6"));
                }
                let ip = |at: usize| {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&body[at..at + 16]);
                    IpAddr::V6(Ipv6Addr::from(octets))
                };
                let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
                ProxyHeader::Proxy {
                    source: SocketAddr::new(ip(0), port(32)),
                    destination: SocketAddr::new(ip(16), port(34)),
                }
            }
            // Unspecified family: the specification says to use the real addresses.
            0x00 => ProxyHeader::Local,
            _ => {
                return Err(ProxyError::MalformedV2(
                    "only TCP over IPv4 or IPv6 is supported",
                ));
            }
        },
        _ => return Err(ProxyError::MalformedV2("command must be LOCAL or PROXY")),
    };
    Ok(Some((header, total)))
}

/// Both addresses in one family: IPv4 ones are mapped into IPv6 when the other is
/// IPv6 (a dual-stack listener).
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => (source, destination),
        _ => (v6(source), v6(destination)),
    }
}

/// The version 1 header for a client at `source` that reached `destination`.
pub fn encode_v1(source: SocketAddr, destination: SocketAddr) -> String {
    let (s, d) = same_family(source, destination);
    let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        s.ip(),
        d.ip(),
        s.port(),
        d.port()
    )
}

/// The version 2 header (command PROXY, TCP) for a client at `source` that reached
/// `destination`.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    encode_v2_transport(source, destination, STREAM)
}

/// The version 2 header (command PROXY, UDP: family `DGRAM`) put in front of
/// each datagram of a client at `source` that reached `destination`.
pub fn encode_v2_datagram(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    encode_v2_transport(source, destination, DGRAM)
}

/// [`encode_v2_datagram`] into `out` (cleared first): a relay writes each
/// datagram's header in one buffer rather than keep one per session.
pub fn write_v2_datagram(source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    out.clear();
    write_v2_transport(source, destination, DGRAM, out);
}

/// The transport half of a v2 header's family byte.
const STREAM: u8 = 0x1;
const DGRAM: u8 = 0x2;

fn encode_v2_transport(source: SocketAddr, destination: SocketAddr, transport: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    write_v2_transport(source, destination, transport, &mut out);
    out
}

fn write_v2_transport(
    source: SocketAddr,
    destination: SocketAddr,
    transport: u8,
    out: &mut Vec<u8>,
) {
    let (s, d) = same_family(source, destination);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21); // version 2, PROXY
    match (s.ip(), d.ip()) {
        (IpAddr::V4(si), IpAddr::V4(di)) => {
            out.push(0x10 | transport);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&si.octets());
            out.extend_from_slice(&di.octets());
        }
        (IpAddr::V6(si), IpAddr::V6(di)) => {
            out.push(0x20 | transport);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&si.octets());
            out.extend_from_slice(&di.octets());
        }
        _ => unreachable!("same_family returns one family"),
    }
    out.extend_from_slice(&s.port().to_be_bytes());
    out.extend_from_slice(&d.port().to_be_bytes());
}

/// What a terminating listener learned of a client's TLS, passed on to the
/// host in a version 2 header's TLVs (version 1 has none).
#[derive(Debug, Clone, Copy)]
pub struct TlsFacts<'a> {
    /// The server name the client asked for (`PP2_TYPE_AUTHORITY`).
    pub sni: Option<&'a str>,
    /// What the handshake agreed: ALPN (`PP2_TYPE_ALPN`), version, cipher and
    /// the client certificate's common name (`PP2_TYPE_SSL` and its sub-TLVs).
    pub session: &'a crate::tls::Session,
}

/// The TLV types of the PROXY protocol's version 2 (section 2.2) that txlb
/// writes.
mod tlv {
    pub const ALPN: u8 = 0x01;
    pub const AUTHORITY: u8 = 0x02;
    pub const SSL: u8 = 0x20;
    pub const SSL_VERSION: u8 = 0x21;
    pub const SSL_CN: u8 = 0x22;
    pub const SSL_CIPHER: u8 = 0x23;
    /// `PP2_TYPE_SSL`'s client field: the connection is TLS, and the client
    /// showed a certificate on this connection and in this session.
    pub const CLIENT_SSL: u8 = 0x01;
    pub const CLIENT_CERT_CONN: u8 = 0x02;
    pub const CLIENT_CERT_SESS: u8 = 0x04;
}

/// Appends one TLV, its value cut at what the 16-bit length can say.
fn push_tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    let value = &value[..value.len().min(u16::MAX as usize)];
    out.push(kind);
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
}

/// The version 2 header with the TLVs of a terminated client's TLS: ALPN,
/// authority (SNI) and `PP2_TYPE_SSL` with the TLS version (`TLSv1.3`), the
/// cipher (its IANA name) and, when the client showed a certificate, its
/// common name; `verify` is 0 only for a client certificate that verified.
pub fn encode_v2_tls(source: SocketAddr, destination: SocketAddr, tls: TlsFacts<'_>) -> Vec<u8> {
    let mut out = encode_v2(source, destination);
    let session = tls.session;
    if let Some(alpn) = &session.alpn {
        push_tlv(&mut out, tlv::ALPN, alpn.as_bytes());
    }
    if let Some(sni) = tls.sni {
        push_tlv(&mut out, tlv::AUTHORITY, sni.as_bytes());
    }
    let mut ssl = Vec::with_capacity(64);
    let shown = session.client_subject.is_some();
    // A resumed session's certificate was shown when the session began,
    // not on this connection.
    ssl.push(match (shown, session.resumed) {
        (true, false) => tlv::CLIENT_SSL | tlv::CLIENT_CERT_CONN | tlv::CLIENT_CERT_SESS,
        (true, true) => tlv::CLIENT_SSL | tlv::CLIENT_CERT_SESS,
        (false, _) => tlv::CLIENT_SSL,
    });
    // A certificate shown got through the listener's verification (an
    // unverified one ends the handshake).
    ssl.extend_from_slice(&u32::from(!shown).to_be_bytes());
    push_tlv(
        &mut ssl,
        tlv::SSL_VERSION,
        format!("TLSv{}", session.version).as_bytes(),
    );
    if let Some(cn) = &session.client_cn {
        push_tlv(&mut ssl, tlv::SSL_CN, cn.as_bytes());
    }
    let cipher = session.cipher.replace("TLS13_", "TLS_");
    push_tlv(&mut ssl, tlv::SSL_CIPHER, cipher.as_bytes());
    push_tlv(&mut out, tlv::SSL, &ssl);
    // The header's length counts the addresses and every TLV.
    let len = (out.len() - 16).min(u16::MAX as usize) as u16;
    out[14..16].copy_from_slice(&len.to_be_bytes());
    out
}

/// Encodes the header of `version`, with `tls`'s TLVs in version 2.
pub fn encode(
    version: Version,
    source: SocketAddr,
    destination: SocketAddr,
    tls: Option<TlsFacts<'_>>,
) -> Vec<u8> {
    match (version, tls) {
        (Version::V1, _) => encode_v1(source, destination).into_bytes(),
        (Version::V2, None) => encode_v2(source, destination),
        (Version::V2, Some(tls)) => encode_v2_tls(source, destination, tls),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_round_trips_for_both_families() {
        for (s, d) in [
            ("1.2.3.4:5678", "10.0.0.1:80"),
            ("[2001:db8::1]:65535", "[::1]:1"),
        ] {
            let text = encode_v1(a(s), a(d));
            let mut bytes = text.clone().into_bytes();
            bytes.extend_from_slice(b"GET /");
            let (header, n) = parse(&bytes).unwrap().unwrap();
            assert_eq!(n, text.len());
            assert_eq!(
                header,
                ProxyHeader::Proxy {
                    source: a(s),
                    destination: a(d)
                }
            );
        }
        assert_eq!(
            encode_v1(a("192.168.0.1:56324"), a("192.168.0.11:443")),
            "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        );
    }

    /// The TLVs after the addresses of an IPv4 header, as (type, value).
    fn tlvs(mut rest: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while rest.len() >= 3 {
            let len = u16::from_be_bytes([rest[1], rest[2]]) as usize;
            out.push((rest[0], rest[3..3 + len].to_vec()));
            rest = &rest[3 + len..];
        }
        assert!(rest.is_empty(), "TLVs end where the header says");
        out
    }

    #[test]
    fn v2_carries_a_terminated_clients_tls_in_tlvs_that_parsers_skip() {
        let session = crate::tls::Session {
            version: "1.3",
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
            alpn: Some("h2".into()),
            client_subject: Some("CN=alice, O=Example".into()),
            client_cn: Some("alice".into()),
            resumed: false,
        };
        let facts = TlsFacts {
            sni: Some("api.example.com"),
            session: &session,
        };
        let (s, d) = (a("1.2.3.4:5678"), a("10.0.0.1:443"));
        let mut bytes = encode(Version::V2, s, d, Some(facts));
        let header_len = bytes.len();
        assert_eq!(
            u16::from_be_bytes([bytes[14], bytes[15]]) as usize,
            header_len - 16
        );
        let found = tlvs(&bytes[16 + 12..]);
        assert_eq!(found[0], (0x01, b"h2".to_vec()));
        assert_eq!(found[1], (0x02, b"api.example.com".to_vec()));
        let (kind, ssl) = &found[2];
        assert_eq!(*kind, 0x20);
        assert_eq!(
            ssl[0], 0x07,
            "TLS, certificate on the connection and session"
        );
        assert_eq!(&ssl[1..5], &[0, 0, 0, 0], "verified");
        assert_eq!(
            tlvs(&ssl[5..]),
            [
                (0x21, b"TLSv1.3".to_vec()),
                (0x22, b"alice".to_vec()),
                (0x23, b"TLS_AES_128_GCM_SHA256".to_vec()),
            ]
        );
        // txlb's own parser (a host that is another txlb) skips them.
        bytes.extend_from_slice(b"GET /");
        let (header, n) = parse(&bytes).unwrap().unwrap();
        assert_eq!(n, header_len);
        assert_eq!(
            header,
            ProxyHeader::Proxy {
                source: s,
                destination: d
            }
        );
        // Resumed: the certificate was shown on the session, not on this
        // connection.
        let resumed = crate::tls::Session {
            resumed: true,
            ..session.clone()
        };
        let facts = TlsFacts {
            sni: None,
            session: &resumed,
        };
        let bytes = encode(Version::V2, s, d, Some(facts));
        assert_eq!(tlvs(&bytes[16 + 12..])[1].1[0], 0x05, "TLS, on the session");
        // No client certificate: no CN, and `verify` is not 0.
        let anonymous = crate::tls::Session {
            client_subject: None,
            client_cn: None,
            alpn: None,
            ..session
        };
        let facts = TlsFacts {
            sni: None,
            session: &anonymous,
        };
        let bytes = encode(Version::V2, s, d, Some(facts));
        let found = tlvs(&bytes[16 + 12..]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(&found[0].1[..5], &[0x01, 0, 0, 0, 1]);
        // Version 1 has no TLVs.
        assert_eq!(
            encode(Version::V1, s, d, Some(facts)),
            encode_v1(s, d).into_bytes()
        );
    }

    #[test]
    fn v2_round_trips_for_both_families_and_mixed_ones_map_to_v6() {
        for (s, d) in [
            ("1.2.3.4:5678", "10.0.0.1:80"),
            ("[2001:db8::1]:65535", "[::1]:1"),
        ] {
            let bytes = encode_v2(a(s), a(d));
            let (header, n) = parse(&bytes).unwrap().unwrap();
            assert_eq!(n, bytes.len());
            assert_eq!(
                header,
                ProxyHeader::Proxy {
                    source: a(s),
                    destination: a(d)
                }
            );
        }
        let bytes = encode_v2(a("1.2.3.4:5"), a("[::1]:6"));
        let (header, _) = parse(&bytes).unwrap().unwrap();
        assert_eq!(
            header,
            ProxyHeader::Proxy {
                source: a("[::ffff:1.2.3.4]:5"),
                destination: a("[::1]:6")
            }
        );
    }

    #[test]
    fn v2_datagram_headers_differ_from_stream_ones_in_the_family_byte_alone() {
        for (s, d, family) in [
            ("1.2.3.4:5678", "10.0.0.1:53", 0x12),
            ("[2001:db8::1]:65535", "[::1]:1", 0x22),
        ] {
            let stream = encode_v2(a(s), a(d));
            let datagram = encode_v2_datagram(a(s), a(d));
            assert_eq!(datagram[13], family);
            assert_eq!(datagram[..13], stream[..13]);
            assert_eq!(datagram[14..], stream[14..]);
        }
    }

    #[test]
    fn partial_headers_ask_for_more_bytes() {
        let v1 = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
        let v2 = encode_v2(a("1.2.3.4:1"), a("5.6.7.8:2"));
        for cut in 0..v1.len() {
            assert_eq!(parse(&v1[..cut]), Ok(None), "v1 cut at {cut}");
        }
        for cut in 1..v2.len() {
            assert_eq!(parse(&v2[..cut]), Ok(None), "v2 cut at {cut}");
        }
    }

    #[test]
    fn local_unknown_and_tlvs() {
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(Some((ProxyHeader::Local, 15)))
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN whatever follows\r\n"),
            Ok(Some((ProxyHeader::Local, 32)))
        );
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local), Ok(Some((ProxyHeader::Local, 16))));
        // TLVs after the addresses are skipped.
        let mut tlv = encode_v2(a("1.2.3.4:1"), a("5.6.7.8:2"));
        tlv[15] += 5;
        tlv.extend_from_slice(&[0x04, 0x00, 0x02, b'h', b'i']);
        let (header, n) = parse(&tlv).unwrap().unwrap();
        assert_eq!(n, tlv.len());
        assert!(matches!(header, ProxyHeader::Proxy { .. }));
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(&[b'P'; 200]), Err(ProxyError::Missing));
        let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(200));
        assert_eq!(parse(long.as_bytes()), Err(ProxyError::TooLong(V1_MAX)));
        let mut v2 = encode_v2(a("1.2.3.4:1"), a("5.6.7.8:2"));
        v2[12] = 0x31;
        assert!(parse(&v2).is_err());
        v2[12] = 0x22;
        assert!(parse(&v2).is_err());
        v2[12] = 0x21;
        v2[13] = 0x12; // UDP
        assert!(parse(&v2).is_err());
        v2[13] = 0x11;
        v2[15] = 4; // addresses cut short
        assert!(parse(&v2[..20]).is_err());
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&huge), Err(ProxyError::TooLong(V2_MAX)));
    }

    #[test]
    fn random_bytes_never_panic() {
        fastrand::seed(99);
        let good = encode_v2(a("[2001:db8::1]:80"), a("[::1]:443"));
        for _ in 0..20_000 {
            let mut bytes = if fastrand::bool() {
                good.clone()
            } else {
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec()
            };
            for _ in 0..fastrand::usize(1..4) {
                let i = fastrand::usize(..bytes.len());
                bytes[i] = fastrand::u8(..);
            }
            bytes.truncate(fastrand::usize(..=bytes.len()));
            let _ = parse(&bytes);
        }
    }
}
