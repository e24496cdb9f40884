//! A TLS ClientHello read from its records: reassembled across records and
//! reads, then parsed once for its server name (SNI) and ALPN protocols.

use std::borrow::Cow;

use crate::config::{ClientProtocol, MAX_INSPECT_BYTES};

use super::seen::{Anomaly, GiveUp, Seen, Sniffed, dns_name};

/// The content type of a handshake record (a TLS client's first byte).
pub(super) const HANDSHAKE: u8 = 22;
/// The handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// A record header: type, version, length.
const RECORD_HEADER: usize = 5;
/// A handshake message header: type, 24-bit length.
const MESSAGE_HEADER: usize = 4;
/// A plaintext record's largest payload (RFC 8446, 5.1).
const MAX_FRAGMENT: usize = 1 << 14;
/// Records a ClientHello may span: real clients use one (two or three with
/// huge key shares at small record sizes); more is an attack on the reader.
const MAX_RECORDS: u16 = 64;

const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;

/// How far the records of a ClientHello were read: the records before
/// `record` are complete and hold `before` bytes of handshake.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Progress {
    /// Offset of the record being read (its header).
    record: usize,
    /// Complete records before it.
    records: u16,
    /// Handshake bytes in those records.
    before: usize,
    /// The handshake message header, as far as received.
    header: [u8; MESSAGE_HEADER],
}

fn malformed() -> Sniffed {
    Sniffed::Done(Seen::new(ClientProtocol::Tls).with(Anomaly::MalformedHello))
}

/// Whether a record header's version bytes (as many as given) are those of
/// TLS 1.0 to 1.3.
fn version_ok(version: &[u8]) -> bool {
    version.first().is_none_or(|&major| major == 3)
        && version.get(1).is_none_or(|minor| (1..=4).contains(minor))
}

impl Progress {
    /// Reads the records received since the last call; parses the ClientHello
    /// once it is all in.
    pub(super) fn advance(&mut self, received: &[u8]) -> Sniffed {
        loop {
            let rest = &received[self.record.min(received.len())..];
            let header = &rest[..rest.len().min(RECORD_HEADER)];
            if header.first().is_some_and(|&t| t != HANDSHAKE) {
                // An alert or other record before the hello is complete.
                return malformed();
            }
            if !version_ok(header.get(1..).unwrap_or_default()) {
                // The first record decides whether this is TLS at all.
                return if self.record == 0 {
                    Sniffed::Done(Seen::new(ClientProtocol::Other))
                } else {
                    malformed()
                };
            }
            if header.len() < RECORD_HEADER {
                return Sniffed::NeedMore;
            }
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if len == 0 || len > MAX_FRAGMENT {
                return malformed();
            }
            let fragment = &rest[RECORD_HEADER..rest.len().min(RECORD_HEADER + len)];
            for (i, byte) in self.header.iter_mut().enumerate().skip(self.before) {
                if let Some(&b) = fragment.get(i - self.before) {
                    *byte = b;
                }
            }
            let known = self.before + fragment.len();
            if known >= 1 && self.header[0] != CLIENT_HELLO {
                return malformed();
            }
            if known >= MESSAGE_HEADER {
                let body = u32::from_be_bytes([0, self.header[1], self.header[2], self.header[3]]);
                let total = MESSAGE_HEADER + body as usize;
                // Where the hello would end if the rest came in this record:
                // past what may be read, it can never be read whole.
                let end = self.record + RECORD_HEADER + (total - self.before.min(total));
                if end > MAX_INSPECT_BYTES as usize {
                    return Sniffed::Done(
                        Seen::new(ClientProtocol::Tls).with(Anomaly::OversizedHello),
                    );
                }
                if known >= total {
                    let (handshake, _) = handshake(received, total);
                    return Sniffed::Done(client_hello(&handshake[MESSAGE_HEADER..], true));
                }
            }
            if fragment.len() < len {
                return Sniffed::NeedMore;
            }
            self.records += 1;
            self.before += len;
            self.record += RECORD_HEADER + len;
            if self.records >= MAX_RECORDS {
                return malformed();
            }
        }
    }
}

/// The first `limit` handshake bytes of the records in `received` (fewer if
/// fewer are there), borrowed when one record holds them; whether the records
/// broke the format on the way.
fn handshake(received: &[u8], limit: usize) -> (Cow<'_, [u8]>, bool) {
    let mut out: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    let mut rest = received;
    while out.len() < limit && rest.len() > RECORD_HEADER {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if rest[0] != HANDSHAKE || !version_ok(&rest[1..3]) || len == 0 || len > MAX_FRAGMENT {
            return (out, true);
        }
        let fragment = &rest[RECORD_HEADER..rest.len().min(RECORD_HEADER + len)];
        let fragment = &fragment[..fragment.len().min(limit - out.len())];
        if out.is_empty() {
            out = Cow::Borrowed(fragment);
        } else {
            out.to_mut().extend_from_slice(fragment);
        }
        rest = &rest[(RECORD_HEADER + len).min(rest.len())..];
    }
    (out, false)
}

/// The best verdict on a ClientHello cut short (the caller gives up on it).
pub(super) fn partial(received: &[u8], why: GiveUp) -> Seen {
    let cut = match why {
        GiveUp::Limit => Anomaly::OversizedHello,
        GiveUp::Timeout | GiveUp::Closed => Anomaly::TruncatedHello,
    };
    let (handshake, broken) = handshake(received, MAX_INSPECT_BYTES as usize);
    if broken {
        return Seen::new(ClientProtocol::Tls).with(Anomaly::MalformedHello);
    }
    let Some(header) = handshake.get(..MESSAGE_HEADER) else {
        return Seen::new(ClientProtocol::Tls).with(cut);
    };
    let total = MESSAGE_HEADER + u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
    let body = &handshake[MESSAGE_HEADER..total.min(handshake.len())];
    let seen = client_hello(body, false);
    if seen.anomaly.is_some_and(|a| a == Anomaly::MalformedHello) {
        seen
    } else {
        Seen {
            anomaly: Some(cut),
            ..seen
        }
    }
}

/// A cursor over bytes whose every read is checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a `width`-byte length: its bytes.
    fn vector(&mut self, width: usize) -> Option<&'a [u8]> {
        let len = match width {
            1 => usize::from(self.u8()?),
            _ => usize::from(self.u16()?),
        };
        self.take(len)
    }
}

/// Why a ClientHello's parse stopped early.
enum Stop {
    /// Broke the format.
    Malformed,
    /// Ran out of bytes: the end of a partial hello, the format broken in a
    /// complete one.
    Short,
}

/// The SNI and ALPN of a ClientHello's body (after the message header).
/// `complete`: the body is the whole message (else a prefix of it, whose
/// complete extensions count).
pub(super) fn client_hello(body: &[u8], complete: bool) -> Seen {
    let mut seen = Seen::new(ClientProtocol::Tls);
    match parse(body, &mut seen) {
        Ok(()) => seen,
        Err(Stop::Short) if !complete => seen,
        Err(_) => Seen::new(ClientProtocol::Tls).with(Anomaly::MalformedHello),
    }
}

fn parse(body: &[u8], seen: &mut Seen) -> Result<(), Stop> {
    let mut r = Reader(body);
    let short = || Stop::Short;
    let legacy_version = r.u16().ok_or_else(short)?;
    if legacy_version >> 8 != 3 {
        return Err(Stop::Malformed);
    }
    r.take(32).ok_or_else(short)?;
    let session_id = r.vector(1).ok_or_else(short)?;
    if session_id.len() > 32 {
        return Err(Stop::Malformed);
    }
    let suites = r.vector(2).ok_or_else(short)?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(Stop::Malformed);
    }
    let compression = r.vector(1).ok_or_else(short)?;
    if compression.is_empty() {
        return Err(Stop::Malformed);
    }
    if r.0.is_empty() {
        // A hello without extensions (or a partial one cut right here).
        return Ok(());
    }
    let declared = usize::from(r.u16().ok_or_else(short)?);
    let (mut extensions, mut cut) = match r.take(declared) {
        Some(all) if r.0.is_empty() => (Reader(all), false),
        // Bytes after the extensions.
        Some(_) => return Err(Stop::Malformed),
        None => (Reader(std::mem::take(&mut r.0)), true),
    };
    // Extension types, to find duplicates: on the stack for real hellos
    // (twenty or so), on the heap past that.
    let mut few = [0u16; 48];
    let mut count = 0;
    let mut many = Vec::new();
    while !extensions.0.is_empty() {
        let (Some(kind), Some(data)) = (extensions.u16(), extensions.vector(2)) else {
            cut = true;
            break;
        };
        if count < few.len() {
            few[count] = kind;
        } else {
            if many.is_empty() {
                many.extend_from_slice(&few);
            }
            many.push(kind);
        }
        count += 1;
        match kind {
            EXT_SERVER_NAME => server_name(data, seen)?,
            EXT_ALPN => alpn(data, seen)?,
            _ => {}
        }
    }
    let types = if many.is_empty() {
        &mut few[..count]
    } else {
        &mut many[..]
    };
    types.sort_unstable();
    if types.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err(Stop::Malformed);
    }
    if cut { Err(Stop::Short) } else { Ok(()) }
}

/// The server_name extension (RFC 6066, 3): one `host_name` entry.
fn server_name(data: &[u8], seen: &mut Seen) -> Result<(), Stop> {
    let mut r = Reader(data);
    let list = r.vector(2).ok_or(Stop::Malformed)?;
    if list.is_empty() || !r.0.is_empty() {
        return Err(Stop::Malformed);
    }
    let mut list = Reader(list);
    let mut names = 0;
    while !list.0.is_empty() {
        let kind = list.u8().ok_or(Stop::Malformed)?;
        // Every name type's data starts with a 16-bit length.
        let name = list.vector(2).ok_or(Stop::Malformed)?;
        if kind == 0 {
            names += 1;
            seen.sni = dns_name(name);
        }
    }
    if names > 1 || (names == 1 && seen.sni.is_none()) {
        // Which name would the host use? Route on none of them.
        seen.sni = None;
        seen.anomaly = Some(Anomaly::BadServerName);
    }
    Ok(())
}

/// The ALPN extension (RFC 7301, 3.1): a non-empty list of non-empty names.
fn alpn(data: &[u8], seen: &mut Seen) -> Result<(), Stop> {
    let mut r = Reader(data);
    let list = r.vector(2).ok_or(Stop::Malformed)?;
    if list.is_empty() || !r.0.is_empty() {
        return Err(Stop::Malformed);
    }
    let mut list = Reader(list);
    while !list.0.is_empty() {
        let name = list.vector(1).ok_or(Stop::Malformed)?;
        if name.is_empty() {
            return Err(Stop::Malformed);
        }
        if seen.alpn.len() < Seen::MAX_ALPN {
            seen.alpn.push(String::from_utf8_lossy(name).into());
        }
    }
    Ok(())
}
