//! The ClientHello inside a QUIC client's Initial packets (QUIC version 1,
//! RFC 9000 17.2.2 and RFC 9001 5; version 2, RFC 9369), read for its SNI
//! and ALPN: the initial keys derived from the client's Destination
//! Connection ID, header protection removed, the payload decrypted, its
//! CRYPTO frames gathered in any order across packets and datagrams (some
//! clients scatter them on purpose), then the ClientHello parsed as a TCP
//! one is ([`super::tls`]).
//!
//! Bounded: at most [`MAX_DATAGRAMS`] datagrams of a client, the first
//! [`MAX_PACKETS`] packets of each, and [`MAX_HELLO`] bytes of handshake are read; a hello that does not fit, or
//! is still incomplete when the caller stops waiting, is decided on what
//! came (the default route, unless the SNI was already in).

use std::sync::OnceLock;

use rustls::quic::{DirectionalKeys, Keys, Suite, Version};

use crate::config::ClientProtocol;

use super::seen::{Anomaly, Seen, Sniffed};
use super::tls;

/// Datagrams of one client read to find its ClientHello: real clients need
/// one, or two with post-quantum key shares.
pub const MAX_DATAGRAMS: usize = 4;
/// Coalesced packets read in one datagram: a client coalesces one packet
/// per packet type at most (Initial, 0-RTT, Handshake). Each Initial read
/// is a decryption: without a bound, one datagram of 1,700 tiny Initials
/// cost as much CPU as 1,700 datagrams.
pub const MAX_PACKETS: usize = 8;
/// Handshake bytes gathered from CRYPTO frames: a ClientHello with a
/// post-quantum key share is about 1.8 KB.
pub const MAX_HELLO: usize = 8 * 1024;

/// QUIC version 1's number.
const V1: u32 = 1;
/// QUIC version 2's number (RFC 9369, 3.1).
const V2: u32 = 0x6b33_43cf;
/// Longest connection ID of versions 1 and 2.
const MAX_CID: usize = 20;
/// The header protection sample's length (RFC 9001, 5.4.2).
const SAMPLE: usize = 16;
/// The handshake message header: type, 24-bit length.
const MESSAGE_HEADER: usize = 4;
const CLIENT_HELLO: u8 = 1;

/// Frame types an Initial may hold (RFC 9000, 12.4).
mod frame {
    pub const PADDING: u64 = 0x00;
    pub const PING: u64 = 0x01;
    pub const ACK: u64 = 0x02;
    pub const ACK_ECN: u64 = 0x03;
    pub const CRYPTO: u64 = 0x06;
}

/// The cipher suite of every Initial (RFC 9001, 5.2), from rustls' ring
/// provider.
fn initial_suite() -> Option<Suite> {
    static SUITE: OnceLock<Option<Suite>> = OnceLock::new();
    *SUITE.get_or_init(
        || match rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256 {
            rustls::SupportedCipherSuite::Tls13(suite) => suite.quic_suite(),
            _ => None,
        },
    )
}

/// The keys of the Initials a client protects for `dcid`.
fn client_keys(version: Version, dcid: &[u8]) -> Option<DirectionalKeys> {
    let keys: Keys = initial_suite()?.keys(dcid, rustls::Side::Server, version);
    Some(keys.remote)
}

/// What the client's first `datagrams` tell. `NeedMore` while a ClientHello
/// has begun but is incomplete and more datagrams may come; with `last` (no
/// more will be read) the verdict is made on what came.
pub fn sniff_initials<D: AsRef<[u8]>>(datagrams: &[D], last: bool) -> Sniffed {
    let last = last || datagrams.len() >= MAX_DATAGRAMS;
    let mut gathered = Gathered::default();
    for (index, datagram) in datagrams.iter().take(MAX_DATAGRAMS).enumerate() {
        if let Err(verdict) = gathered.datagram(datagram.as_ref(), index == 0) {
            return Sniffed::Done(verdict);
        }
    }
    gathered.verdict(last)
}

/// CRYPTO data of the Initials read so far.
#[derive(Default)]
struct Gathered {
    /// The first Initial's version and Destination Connection ID (which
    /// chose the keys); later packets must have the same.
    first: Option<(u32, Vec<u8>)>,
    keys: Option<DirectionalKeys>,
    /// Handshake bytes by their offset, and which of them came.
    hello: Vec<u8>,
    filled: Vec<u64>,
    /// An Initial decrypted.
    opened: bool,
}

/// The verdict on a datagram that is no client Initial.
fn bad() -> Seen {
    Seen::new(ClientProtocol::Other).with(Anomaly::BadQuicInitial)
}

impl Gathered {
    /// Reads the packets of one datagram; `Err` with the verdict when they
    /// decide it (not QUIC, or broken beyond reading).
    fn datagram(&mut self, mut bytes: &[u8], first_datagram: bool) -> Result<(), Seen> {
        let mut first_packet = true;
        let mut packets = 0;
        // Coalesced packets (RFC 9000, 12.2): each long header says its length.
        while let Some(&byte) = bytes.first() {
            if packets == MAX_PACKETS {
                return Ok(());
            }
            packets += 1;
            if byte & 0x80 == 0 {
                // A short header (1-RTT), or padding after the packets.
                if first_datagram && first_packet {
                    return Err(bad());
                }
                return Ok(());
            }
            let header = match LongHeader::read(bytes) {
                Some(header) => header,
                None if first_datagram && first_packet => return Err(bad()),
                None => return Ok(()),
            };
            if header.initial {
                let opened = self.initial(&bytes[..header.end], &header);
                if !opened && first_datagram && first_packet {
                    return Err(bad());
                }
            } else if first_datagram && first_packet {
                // A client starts with an Initial.
                return Err(bad());
            }
            bytes = &bytes[header.end..];
            first_packet = false;
        }
        Ok(())
    }

    /// Decrypts one Initial and keeps its CRYPTO data; whether it opened.
    fn initial(&mut self, packet: &[u8], header: &LongHeader<'_>) -> bool {
        let version = header.version;
        match &self.first {
            None => {
                let quic_version = if version == V2 {
                    Version::V2
                } else {
                    Version::V1
                };
                self.keys = client_keys(quic_version, header.dcid);
                self.first = Some((version, header.dcid.to_vec()));
            }
            // Another connection's (or a forged) Initial: not this hello's.
            Some((v, dcid)) if *v != version || dcid != header.dcid => return false,
            Some(_) => {}
        }
        let Some(keys) = &self.keys else {
            return false;
        };
        let mut packet = packet.to_vec();
        let pn_at = header.pn_offset;
        // The sample starts 4 bytes after the packet number's start, as if
        // it were 4 bytes long (RFC 9001, 5.4.2).
        let Some(sample) = packet.get(pn_at + 4..pn_at + 4 + SAMPLE) else {
            return false;
        };
        let sample: [u8; SAMPLE] = sample.try_into().unwrap_or([0; SAMPLE]);
        let (head, rest) = packet.split_at_mut(pn_at);
        if keys
            .header
            .decrypt_in_place(&sample, &mut head[0], &mut rest[..4])
            .is_err()
        {
            return false;
        }
        let pn_len = usize::from(head[0] & 0x03) + 1;
        // The first packets of a connection: the truncated number is the
        // number (RFC 9000, A.3, with no packet received before).
        let number = rest[..pn_len]
            .iter()
            .fold(0u64, |n, &b| (n << 8) | u64::from(b));
        let (aad, payload) = packet.split_at_mut(pn_at + pn_len);
        let Ok(plain) = keys.packet.decrypt_in_place(number, aad, payload) else {
            return false;
        };
        let plain = plain.to_vec();
        if self.frames(&plain).is_err() {
            return false;
        }
        self.opened = true;
        true
    }

    /// The frames of a decrypted Initial: CRYPTO data kept, padding, PING
    /// and ACK skipped; any other frame breaks it.
    fn frames(&mut self, mut plain: &[u8]) -> Result<(), ()> {
        while !plain.is_empty() {
            let kind = varint(&mut plain).ok_or(())?;
            match kind {
                frame::PADDING | frame::PING => {}
                frame::ACK | frame::ACK_ECN => {
                    // Largest, delay, range count, first range; then pairs.
                    let mut fields = [0u64; 4];
                    for field in &mut fields {
                        *field = varint(&mut plain).ok_or(())?;
                    }
                    let ranges = fields[2];
                    // Each range takes two bytes at least: more than the
                    // packet holds is broken, and no loop runs past it.
                    if ranges > plain.len() as u64 / 2 {
                        return Err(());
                    }
                    let ecn = if kind == frame::ACK_ECN { 3 } else { 0 };
                    for _ in 0..ranges * 2 + ecn {
                        varint(&mut plain).ok_or(())?;
                    }
                }
                frame::CRYPTO => {
                    let offset = varint(&mut plain).ok_or(())?;
                    let len = varint(&mut plain).ok_or(())?;
                    let len = usize::try_from(len).map_err(|_| ())?;
                    let (data, rest) = plain.split_at_checked(len).ok_or(())?;
                    plain = rest;
                    self.crypto(offset, data);
                }
                _ => return Err(()),
            }
        }
        Ok(())
    }

    /// Keeps the handshake bytes at `offset` that fall within [`MAX_HELLO`].
    fn crypto(&mut self, offset: u64, data: &[u8]) {
        if self.hello.is_empty() {
            self.hello = vec![0; MAX_HELLO];
            self.filled = vec![0; MAX_HELLO / 64];
        }
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if start >= MAX_HELLO {
            return;
        }
        let data = &data[..data.len().min(MAX_HELLO - start)];
        self.hello[start..start + data.len()].copy_from_slice(data);
        for at in start..start + data.len() {
            self.filled[at / 64] |= 1 << (at % 64);
        }
    }

    /// Handshake bytes in from offset 0 without a gap.
    fn contiguous(&self) -> usize {
        let mut n = 0;
        for word in &self.filled {
            if *word == u64::MAX {
                n += 64;
            } else {
                return n + word.trailing_ones() as usize;
            }
        }
        n
    }

    fn verdict(&self, last: bool) -> Sniffed {
        if !self.opened {
            return Sniffed::Done(bad());
        }
        let have = self.contiguous();
        let tls = || Seen::new(ClientProtocol::Tls);
        if have >= 1 && self.hello[0] != CLIENT_HELLO {
            return Sniffed::Done(tls().with(Anomaly::MalformedHello));
        }
        if have >= MESSAGE_HEADER {
            let h = &self.hello;
            let total = MESSAGE_HEADER + u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
            if total > MAX_HELLO {
                let seen = tls::client_hello(&h[MESSAGE_HEADER..have], false);
                return Sniffed::Done(truncated(seen, Anomaly::OversizedHello));
            }
            if have >= total {
                return Sniffed::Done(tls::client_hello(&h[MESSAGE_HEADER..total], true));
            }
        }
        if !last {
            return Sniffed::NeedMore;
        }
        let body = self.hello.get(MESSAGE_HEADER..have).unwrap_or_default();
        Sniffed::Done(truncated(
            tls::client_hello(body, false),
            Anomaly::TruncatedHello,
        ))
    }
}

/// A partial hello's verdict: its anomaly `cut`, unless it broke the format.
fn truncated(seen: Seen, cut: Anomaly) -> Seen {
    if seen.anomaly == Some(Anomaly::MalformedHello) {
        seen
    } else {
        Seen {
            anomaly: Some(cut),
            ..seen
        }
    }
}

/// A long header's fields that matter here.
struct LongHeader<'a> {
    version: u32,
    /// An Initial of version 1 or 2.
    initial: bool,
    dcid: &'a [u8],
    /// Where the (protected) packet number starts; Initials only.
    pn_offset: usize,
    /// Where the packet ends in its datagram.
    end: usize,
}

impl<'a> LongHeader<'a> {
    /// Reads a client's long header packet of version 1 or 2 at the start of
    /// `bytes`: `None` for another version, a Retry or Version Negotiation
    /// (a server's), or a header that breaks the format.
    fn read(bytes: &'a [u8]) -> Option<LongHeader<'a>> {
        let mut r = bytes;
        let first = take(&mut r, 1)?[0];
        let version = u32::from_be_bytes(take(&mut r, 4)?.try_into().ok()?);
        let kind = (first >> 4) & 0x03;
        // Packet types: v1 Initial 0, 0-RTT 1, Handshake 2, Retry 3; v2
        // rotates them (Initial 1, 0-RTT 2, Handshake 3, Retry 0).
        let (initial, retry) = match version {
            V1 => (kind == 0, kind == 3),
            V2 => (kind == 1, kind == 0),
            _ => return None,
        };
        if retry {
            return None;
        }
        let dcid_len = usize::from(take(&mut r, 1)?[0]);
        if dcid_len > MAX_CID {
            return None;
        }
        let dcid = take(&mut r, dcid_len)?;
        let scid_len = usize::from(take(&mut r, 1)?[0]);
        if scid_len > MAX_CID {
            return None;
        }
        take(&mut r, scid_len)?;
        if initial {
            // A client's first Initial has a DCID of 8 bytes at least
            // (RFC 9000, 7.2); the keys come from it.
            if dcid_len < 8 {
                return None;
            }
            let token = usize::try_from(varint(&mut r)?).ok()?;
            take(&mut r, token)?;
        }
        let length = usize::try_from(varint(&mut r)?).ok()?;
        let pn_offset = bytes.len() - r.len();
        let end = pn_offset.checked_add(length)?;
        if end > bytes.len() {
            return None;
        }
        Some(LongHeader {
            version,
            initial,
            dcid,
            pn_offset,
            end,
        })
    }
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, tail) = bytes.split_at_checked(n)?;
    *bytes = tail;
    Some(head)
}

/// A variable-length integer (RFC 9000, 16).
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let first = *bytes.first()?;
    let len = 1usize << (first >> 6);
    let raw = take(bytes, len)?;
    Some(
        raw.iter()
            .skip(1)
            .fold(u64::from(first & 0x3f), |n, &b| (n << 8) | u64::from(b)),
    )
}

/// Client Initials made for tests and fuzz targets: `payload` (frames) in
/// one Initial of `version` for `dcid`, protected as a client protects it,
/// the datagram padded to 1,200 bytes as clients pad theirs.
#[cfg(any(test, feature = "fuzzing"))]
pub fn protect_initial(v2: bool, dcid: &[u8], packet_number: u8, payload: &[u8]) -> Vec<u8> {
    let Some(suite) = initial_suite() else {
        return Vec::new();
    };
    let version = if v2 { Version::V2 } else { Version::V1 };
    let keys = suite.keys(dcid, rustls::Side::Client, version).local;
    let mut payload = payload.to_vec();
    // Enough for a sample, and the datagram to 1,200 bytes (PADDING frames).
    let header_guess = 1 + 4 + 1 + dcid.len() + 1 + 1 + 2 + 1;
    let target = 1200usize.saturating_sub(header_guess + 16);
    if payload.len() < target {
        payload.resize(target, 0);
    }
    let kind: u8 = if v2 { 1 } else { 0 };
    let mut packet = vec![0xc0 | (kind << 4)]; // 1-byte packet number
    packet.extend_from_slice(&(if v2 { V2 } else { V1 }).to_be_bytes());
    packet.push(dcid.len() as u8);
    packet.extend_from_slice(dcid);
    packet.push(0); // no source connection ID
    packet.push(0); // no token
    let Ok(length) = u16::try_from(1 + payload.len() + 16) else {
        return Vec::new();
    };
    if length > 0x3fff {
        return Vec::new(); // past a 2-byte varint
    }
    packet.extend_from_slice(&(0x4000 | length).to_be_bytes());
    let pn_at = packet.len();
    packet.push(packet_number);
    let Ok(tag) = keys
        .packet
        .encrypt_in_place(u64::from(packet_number), &packet, &mut payload)
    else {
        return Vec::new();
    };
    packet.extend_from_slice(&payload);
    packet.extend_from_slice(tag.as_ref());
    let sample: [u8; SAMPLE] = packet[pn_at + 4..pn_at + 4 + SAMPLE]
        .try_into()
        .unwrap_or([0; SAMPLE]);
    let (head, rest) = packet.split_at_mut(pn_at);
    let _ = keys
        .header
        .encrypt_in_place(&sample, &mut head[0], &mut rest[..1]);
    packet
}

/// A CRYPTO frame of `data` at `offset`.
#[cfg(any(test, feature = "fuzzing"))]
pub fn crypto_frame(offset: u64, data: &[u8]) -> Vec<u8> {
    let mut out = vec![frame::CRYPTO as u8];
    push_varint(&mut out, offset);
    push_varint(&mut out, data.len() as u64);
    out.extend_from_slice(data);
    out
}

#[cfg(any(test, feature = "fuzzing"))]
fn push_varint(out: &mut Vec<u8>, n: u64) {
    if n < 1 << 6 {
        out.push(n as u8);
    } else if n < 1 << 14 {
        out.extend_from_slice(&(0x4000 | n as u16).to_be_bytes());
    } else if n < 1 << 30 {
        out.extend_from_slice(&(0x8000_0000 | n as u32).to_be_bytes());
    } else {
        out.extend_from_slice(&(0xc000_0000_0000_0000 | n).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The ClientHello a real QUIC client (rustls') writes for `sni`,
    /// offering `alpn`: the handshake message, as CRYPTO frames carry it.
    pub(crate) fn client_hello(sni: &str, alpn: &[&[u8]]) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
        let mut client =
            rustls::quic::ClientConnection::new(Arc::new(config), Version::V1, name, vec![])
                .unwrap();
        let mut hello = Vec::new();
        client.write_hs(&mut hello);
        assert_eq!(hello[0], CLIENT_HELLO);
        hello
    }

    const DCID: [u8; 8] = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];

    fn done(sniffed: Sniffed) -> Seen {
        match sniffed {
            Sniffed::Done(seen) => seen,
            Sniffed::NeedMore => panic!("undecided"),
        }
    }

    #[test]
    fn a_real_client_hello_in_one_initial_tells_its_sni_and_alpn_in_both_versions() {
        let hello = client_hello("api.example.com", &[b"h3", b"hq-interop"]);
        for v2 in [false, true] {
            let datagram = protect_initial(v2, &DCID, 0, &crypto_frame(0, &hello));
            assert!(datagram.len() >= 1200);
            let seen = done(sniff_initials(&[&datagram], false));
            assert_eq!(seen.protocol, ClientProtocol::Tls);
            assert_eq!(seen.sni.as_deref(), Some("api.example.com"), "v2: {v2}");
            assert_eq!(
                seen.alpn,
                vec!["h3".into(), "hq-interop".into()] as Vec<Box<str>>
            );
            assert_eq!(seen.anomaly, None);
        }
        // Keys are the DCID's: another DCID's keys do not open it.
        let mut other = protect_initial(false, &DCID, 0, &crypto_frame(0, &hello));
        other[6] ^= 1;
        assert_eq!(
            done(sniff_initials(&[&other], false)).anomaly,
            Some(Anomaly::BadQuicInitial)
        );
    }

    /// RFC 9001 A.2's client Initial (keys from DCID 8394c8f03e515708,
    /// packet number 2 in 4 bytes): made by no code of ours.
    #[test]
    fn the_client_initial_of_rfc_9001_tells_example_com() {
        let rfc = include_bytes!("../../fuzz/seeds/quic_initial/rfc9001-a2-client-initial");
        let seen = done(sniff_initials(&[rfc], false));
        assert_eq!(seen.protocol, ClientProtocol::Tls);
        assert_eq!(seen.sni.as_deref(), Some("example.com"));
        assert_eq!(seen.alpn, vec!["alpn".into()] as Vec<Box<str>>);
        assert_eq!(seen.anomaly, None);
    }

    #[test]
    fn a_hello_over_two_datagrams_in_scattered_frames_waits_for_the_second() {
        // Many ALPN names: a hello of about 2.5 KB, as with post-quantum
        // key shares.
        let names: Vec<Vec<u8>> = (0..120)
            .map(|i| format!("proto-{i:04}").into_bytes())
            .collect();
        let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        let hello = client_hello("quic.example.net", &names);
        assert!(hello.len() > 1500, "{}", hello.len());
        let (a, b) = hello.split_at(hello.len() / 2);
        let (a1, a2) = a.split_at(300);
        // The second half first, the first half's two pieces reversed.
        let mut first = crypto_frame(a1.len() as u64, a2);
        first.extend(crypto_frame(0, a1));
        let d1 = protect_initial(false, &DCID, 0, &first);
        let d2 = protect_initial(false, &DCID, 1, &crypto_frame(a.len() as u64, b));
        assert_eq!(sniff_initials(&[&d1], false), Sniffed::NeedMore);
        assert_eq!(sniff_initials(&[&d2], false), Sniffed::NeedMore);
        for order in [[&d1, &d2], [&d2, &d1]] {
            let seen = done(sniff_initials(&order, false));
            assert_eq!(seen.sni.as_deref(), Some("quic.example.net"));
            assert_eq!(seen.alpn.len(), Seen::MAX_ALPN);
        }
        // Given up after the first: its SNI came (the extension is early).
        let seen = done(sniff_initials(&[&d1], true));
        assert_eq!(seen.anomaly, Some(Anomaly::TruncatedHello));
        // The same datagram again does not complete it; the limit decides.
        let same = [&d1, &d1, &d1, &d1];
        assert_eq!(
            done(sniff_initials(&same, false)).anomaly,
            Some(Anomaly::TruncatedHello)
        );
        // Coalesced into one datagram: one read.
        let mut both = d1.clone();
        both.extend_from_slice(&d2);
        assert_eq!(
            done(sniff_initials(&[&both], false)).sni.as_deref(),
            Some("quic.example.net")
        );
    }

    #[test]
    fn what_is_not_a_readable_initial_is_decided_at_once() {
        let hello = client_hello("a.example", &[]);
        let good = protect_initial(false, &DCID, 0, &crypto_frame(0, &hello));
        let bad_one = |bytes: &[u8]| {
            let seen = done(sniff_initials(&[bytes], false));
            assert_eq!(seen.anomaly, Some(Anomaly::BadQuicInitial), "{bytes:?}");
            assert_eq!(seen.sni, None);
        };
        // Nothing, DNS-like bytes, a short header, another version.
        bad_one(b"");
        bad_one(b"\x12\x34\x01\x00\x00\x01\x00\x00");
        bad_one(&[0x40; 1200]);
        let mut v = good.clone();
        v[1..5].copy_from_slice(&0x1a2a_3a4au32.to_be_bytes());
        bad_one(&v);
        // Every cut of a real Initial, and every single-byte change after
        // its header (decryption fails or the header breaks).
        for cut in 0..good.len() {
            bad_one(&good[..cut]);
        }
        let mut rng = fastrand::Rng::with_seed(26);
        for _ in 0..300 {
            let mut flipped = good.clone();
            let at = rng.usize(..flipped.len());
            flipped[at] ^= rng.u8(1..);
            // A change in the DCID changes the keys; in a protected bit,
            // the tag. Whatever it is, never a panic nor a wrong name.
            let seen = done(sniff_initials(&[&flipped], false));
            assert!(seen.sni.is_none() || seen.sni.as_deref() == Some("a.example"));
        }
        // Frames an Initial may not hold.
        for frames in [
            vec![0x08, 0, 0],
            vec![0x1c, 0, 0, 0],
            vec![0x02, 0, 0, 0x7f, 0xff, 0],
        ] {
            bad_one(&protect_initial(false, &DCID, 0, &frames));
        }
    }

    #[test]
    fn hellos_past_the_bound_or_not_hellos_are_anomalies() {
        // A handshake message claiming 64 KiB.
        let mut huge = vec![CLIENT_HELLO, 0x01, 0x00, 0x00];
        huge.extend_from_slice(&[0x03, 0x03]);
        let d = protect_initial(false, &DCID, 0, &crypto_frame(0, &huge));
        assert_eq!(
            done(sniff_initials(&[&d], false)).anomaly,
            Some(Anomaly::OversizedHello)
        );
        // A ServerHello, and data far past the bound (ignored: no gap filled).
        let d = protect_initial(false, &DCID, 0, &crypto_frame(0, &[2, 0, 0, 4, 3, 3, 0, 0]));
        assert_eq!(
            done(sniff_initials(&[&d], false)).anomaly,
            Some(Anomaly::MalformedHello)
        );
        let far = crypto_frame(1 << 40, &[1; 64]);
        let d = protect_initial(false, &DCID, 0, &far);
        assert_eq!(sniff_initials(&[&d], false), Sniffed::NeedMore);
        assert_eq!(
            done(sniff_initials(&[&d], true)).anomaly,
            Some(Anomaly::TruncatedHello)
        );
    }
}
