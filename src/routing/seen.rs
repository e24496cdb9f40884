//! What a client's first bytes say ([`Seen`]), the incremental [`Sniffer`]
//! that tells it, and the anomalies an operator sees counted.

use std::fmt;

use crate::config::ClientProtocol;

use super::{http, tls};

/// What a client's first bytes say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// What it speaks.
    pub protocol: ClientProtocol,
    /// The TLS server name (SNI) it asked for: lower case, without a trailing
    /// dot, a plausible DNS name (else `None` and [`Anomaly::BadServerName`]).
    pub sni: Option<Box<str>>,
    /// The TLS ALPN protocols it offers, in its order (at most
    /// [`MAX_ALPN`](Seen::MAX_ALPN); bytes that are not UTF-8 are replaced).
    pub alpn: Vec<Box<str>>,
    /// The HTTP/1.x `Host`: lower case, without its port, an IPv6 address
    /// without its brackets.
    pub host: Option<Box<str>>,
    /// What was wrong with the bytes, if anything.
    pub anomaly: Option<Anomaly>,
}

impl Seen {
    /// ALPN protocols kept of a ClientHello: real clients offer a handful; the
    /// rest of a longer list is ignored, so that 16 KiB of one-byte names cannot
    /// cost thousands of allocations.
    pub const MAX_ALPN: usize = 32;

    /// A client speaking `protocol`, nothing else known.
    pub fn new(protocol: ClientProtocol) -> Seen {
        Seen {
            protocol,
            sni: None,
            alpn: Vec::new(),
            host: None,
            anomaly: None,
        }
    }

    /// The same, with `anomaly`.
    pub(super) fn with(mut self, anomaly: Anomaly) -> Seen {
        self.anomaly = Some(anomaly);
        self
    }
}

/// The answer to the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// Not enough to decide: read more, then ask again with every byte
    /// received so far.
    NeedMore,
    /// Decided; bytes received later cannot change the verdict.
    Done(Seen),
}

/// Why the data path stops reading before the sniffer decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GiveUp {
    /// `inspectBytes` received.
    Limit,
    /// `inspectTimeout` passed.
    Timeout,
    /// The client closed (or half-closed) its side.
    Closed,
}

/// Something wrong with a client's first bytes, one per kind an operator
/// sees counted (`as_str` is the metrics label) and logged once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Anomaly {
    /// Nothing received.
    Silent,
    /// A few bytes that could still have been TLS, HTTP or SSH.
    Incomplete,
    /// A TLS ClientHello (or its records) breaking the format.
    MalformedHello,
    /// A TLS ClientHello cut short: the client stopped or closed.
    TruncatedHello,
    /// A TLS ClientHello longer than what may be read to decide.
    OversizedHello,
    /// An SSLv2-compatible ClientHello, which has no extensions (no SNI).
    Sslv2Hello,
    /// A TLS server name that is not a plausible DNS name, or more than one.
    BadServerName,
    /// An HTTP request whose headers end without a `Host`, or with an empty one.
    HttpWithoutHost,
    /// An HTTP request breaking HTTP/1.x syntax, or with an invalid `Host`.
    BadHttp,
    /// An HTTP request whose headers were cut short.
    TruncatedHttp,
    /// An HTTP request whose headers go on past what may be read to decide.
    OversizedHttp,
    /// A UDP client's first datagram on a listener with routes that is no
    /// QUIC Initial txlb can read: another protocol or version, a broken
    /// header, or a packet that does not decrypt with the initial keys.
    BadQuicInitial,
}

impl Anomaly {
    /// Every kind, in declaration order.
    pub const ALL: [Anomaly; 12] = [
        Anomaly::Silent,
        Anomaly::Incomplete,
        Anomaly::MalformedHello,
        Anomaly::TruncatedHello,
        Anomaly::OversizedHello,
        Anomaly::Sslv2Hello,
        Anomaly::BadServerName,
        Anomaly::HttpWithoutHost,
        Anomaly::BadHttp,
        Anomaly::TruncatedHttp,
        Anomaly::OversizedHttp,
        Anomaly::BadQuicInitial,
    ];

    /// The kind's name in snake case: a metrics label, a log field.
    pub fn as_str(&self) -> &'static str {
        match self {
            Anomaly::Silent => "silent",
            Anomaly::Incomplete => "incomplete",
            Anomaly::MalformedHello => "malformed_hello",
            Anomaly::TruncatedHello => "truncated_hello",
            Anomaly::OversizedHello => "oversized_hello",
            Anomaly::Sslv2Hello => "sslv2_hello",
            Anomaly::BadServerName => "bad_server_name",
            Anomaly::HttpWithoutHost => "http_without_host",
            Anomaly::BadHttp => "bad_http",
            Anomaly::TruncatedHttp => "truncated_http",
            Anomaly::OversizedHttp => "oversized_http",
            Anomaly::BadQuicInitial => "bad_quic_initial",
        }
    }
}

/// A short sentence for logs.
impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Anomaly::Silent => "the client sent nothing",
            Anomaly::Incomplete => "the client sent too few bytes to tell its protocol",
            Anomaly::MalformedHello => "malformed TLS ClientHello",
            Anomaly::TruncatedHello => "truncated TLS ClientHello",
            Anomaly::OversizedHello => "TLS ClientHello too long to inspect",
            Anomaly::Sslv2Hello => "SSLv2-compatible ClientHello (no SNI)",
            Anomaly::BadServerName => "TLS server name is not a valid DNS name",
            Anomaly::HttpWithoutHost => "HTTP request without Host",
            Anomaly::BadHttp => "malformed HTTP request",
            Anomaly::TruncatedHttp => "truncated HTTP request headers",
            Anomaly::OversizedHttp => "HTTP request headers too long to inspect",
            Anomaly::BadQuicInitial => "not a QUIC Initial that can be read",
        })
    }
}

/// Tells what a client speaks from its first bytes, keeping its progress
/// between calls so that a client sending one byte at a time costs linear
/// time over all calls, not quadratic.
///
/// Each call gets every byte received so far: the previous call's bytes and
/// what came since. Stop at the first [`Sniffed::Done`].
#[derive(Debug, Clone, Default)]
pub struct Sniffer {
    state: State,
    /// Length of the previous call's bytes: a shorter call starts over.
    len: usize,
}

#[derive(Debug, Clone, Copy, Default)]
enum State {
    /// Nothing told yet: the first few bytes are looked at again each call.
    #[default]
    Start,
    /// A TLS record: reading the ClientHello.
    Tls(tls::Progress),
    /// An HTTP method: reading the request line and headers.
    Http(http::Progress),
}

/// HTTP methods recognised, each followed by a space: case-sensitive as the
/// RFC says, which also keeps text protocols (`get`, `HELO`) out.
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
];

/// The HTTP/2 connection preface (prior knowledge, "h2c"): HTTP, without a Host.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An SSH client's identification string starts so.
const SSH: &[u8] = b"SSH-";

/// What the first bytes say before a TLS or HTTP parser takes over.
enum First {
    NeedMore,
    Tls,
    /// An HTTP method and its space, this long.
    Http(usize),
    Done(Seen),
}

fn first(received: &[u8]) -> First {
    let Some(&b0) = received.first() else {
        return First::NeedMore;
    };
    if b0 == tls::HANDSHAKE {
        return First::Tls;
    }
    if b0 & 0x80 != 0 {
        // SSLv2 record header: a two-byte length with the high bit set, then the
        // message type, 1 for CLIENT-HELLO.
        return match received.get(2) {
            None => First::NeedMore,
            Some(1) => First::Done(Seen::new(ClientProtocol::Tls).with(Anomaly::Sslv2Hello)),
            Some(_) => First::Done(Seen::new(ClientProtocol::Other)),
        };
    }
    let mut could_be = false;
    for literal in [SSH, H2_PREFACE] {
        if received.starts_with(literal) {
            return First::Done(Seen::new(if literal == SSH {
                ClientProtocol::Ssh
            } else {
                ClientProtocol::Http
            }));
        }
        could_be |= literal.starts_with(received);
    }
    for method in METHODS {
        if received.starts_with(method) {
            return First::Http(method.len());
        }
        could_be |= method.starts_with(received);
    }
    if could_be {
        First::NeedMore
    } else if received.starts_with(b"PRI ") {
        First::Done(Seen::new(ClientProtocol::Http).with(Anomaly::BadHttp))
    } else {
        First::Done(Seen::new(ClientProtocol::Other))
    }
}

impl Sniffer {
    /// A sniffer that has seen nothing.
    pub fn new() -> Sniffer {
        Sniffer::default()
    }

    /// The verdict on `received`, every byte received so far (starting with
    /// the previous call's). Work is proportional to what is new since then,
    /// but for one parse of a complete ClientHello.
    pub fn sniff(&mut self, received: &[u8]) -> Sniffed {
        if received.len() < self.len {
            // Not the previous bytes and more: start over rather than trust
            // offsets into other bytes.
            self.state = State::Start;
        }
        self.len = received.len();
        loop {
            match &mut self.state {
                State::Start => match first(received) {
                    First::NeedMore => return Sniffed::NeedMore,
                    First::Done(seen) => return Sniffed::Done(seen),
                    First::Tls => self.state = State::Tls(tls::Progress::default()),
                    First::Http(at) => self.state = State::Http(http::Progress::new(at)),
                },
                State::Tls(progress) => return progress.advance(received),
                State::Http(progress) => return progress.advance(received),
            }
        }
    }
}

/// The verdict on `received` as a whole (a [`Sniffer`] used once).
#[cfg(any(test, feature = "fuzzing"))]
pub fn sniff(received: &[u8]) -> Sniffed {
    Sniffer::new().sniff(received)
}

/// The best verdict on `received` when no more will be read (`why`), with an
/// anomaly saying what was missing: a partial ClientHello still gives the SNI
/// and ALPN of its complete extensions. Nothing received is
/// [`ClientProtocol::Other`] with [`Anomaly::Silent`].
pub fn give_up(received: &[u8], why: GiveUp) -> Seen {
    if received.is_empty() {
        return Seen::new(ClientProtocol::Other).with(Anomaly::Silent);
    }
    let mut sniffer = Sniffer::new();
    if let Sniffed::Done(seen) = sniffer.sniff(received) {
        return seen;
    }
    match sniffer.state {
        State::Start => Seen::new(ClientProtocol::Other).with(Anomaly::Incomplete),
        State::Tls(_) => tls::partial(received, why),
        State::Http(_) => Seen::new(ClientProtocol::Http).with(match why {
            GiveUp::Limit => Anomaly::OversizedHttp,
            GiveUp::Timeout | GiveUp::Closed => Anomaly::TruncatedHttp,
        }),
    }
}

/// `name` as a routing key if it is a plausible DNS name (letters, digits,
/// `-`, `_`, non-empty labels of at most 63 bytes, at most 253 bytes): lower
/// case, without one trailing dot.
pub(super) fn dns_name(name: &[u8]) -> Option<Box<str>> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    let plausible = !name.is_empty()
        && name.len() <= 253
        && name
            .split(|&b| b == b'.')
            .all(|label| !label.is_empty() && label.len() <= 63)
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    plausible.then(|| lower(name))
}

/// ASCII bytes in lower case (callers checked they are ASCII), in one
/// allocation.
pub(super) fn lower(bytes: &[u8]) -> Box<str> {
    match String::from_utf8(bytes.to_ascii_lowercase()) {
        Ok(text) => text.into_boxed_str(),
        Err(not_utf8) => String::from_utf8_lossy(not_utf8.as_bytes()).into(),
    }
}
