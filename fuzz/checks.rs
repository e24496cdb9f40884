//! The properties each fuzz target checks, as plain functions: the targets in
//! `fuzz_targets/` call them on libFuzzer's inputs, and `src/fuzzing/replay.rs`
//! calls them on the seeds and on every input a fuzzer once crashed on
//! (`tests/fixtures/fuzz/TARGET/`), so a normal `cargo test` replays them.
#![allow(dead_code)]

use std::str::FromStr;

use txlb::config::{
    ClientProtocol, Config, parse_access, parse_host_address, parse_listen_addr, parse_net,
    parse_seconds, parse_weight,
};
use txlb::fuzzing::{
    Anomaly, GiveUp, Seen, Sniffed, Sniffer, crypto_frame, decode_params, give_up, protect_initial,
    sniff, sniff_initials,
};
use txlb::proxy_protocol::parse;
use txlb::scheduler::SchedulerKind;

/// The PROXY protocol parser on arbitrary bytes: never panics, never claims more
/// bytes than it was given, and is consistent with itself: a header it accepts
/// parses the same with anything appended, and every prefix of it asks for more
/// bytes or fails, never yields another header.
pub fn proxy_header(data: &[u8]) {
    let Ok(Some((header, len))) = parse(data) else {
        return;
    };
    assert!(len > 0 && len <= data.len());
    let mut longer = data[..len].to_vec();
    longer.extend_from_slice(b"trailing client bytes");
    assert_eq!(parse(&longer), Ok(Some((header, len))));
    for cut in 0..len {
        assert!(
            !matches!(parse(&data[..cut]), Ok(Some(_))),
            "prefix of {cut} bytes parsed as a header"
        );
    }
}

/// The XML configuration reader on arbitrary text: never panics, and a
/// configuration it accepts is written back (as XML and as TOML) to text that
/// loads again into the same configuration.
pub fn config_xml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_xml_str(text) else {
        return;
    };
    let xml = config.to_xml();
    let again = Config::from_xml_str(&xml)
        .unwrap_or_else(|e| panic!("written XML does not load: {e}\n{xml}"));
    assert_eq!(again, config, "XML round trip\n{xml}");
    let toml = config.to_toml();
    let again = Config::from_toml_str(&toml)
        .unwrap_or_else(|e| panic!("written TOML does not load: {e}\n{toml}"));
    assert_eq!(again, config, "TOML round trip\n{toml}");
}

/// The TOML configuration reader on arbitrary text: never panics, and a
/// configuration it accepts is written back (as TOML and as XML) to text that
/// loads again into the same configuration.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_toml_str(text) else {
        return;
    };
    let toml = config.to_toml();
    let again = Config::from_toml_str(&toml)
        .unwrap_or_else(|e| panic!("written TOML does not load: {e}\n{toml}"));
    assert_eq!(again, config, "TOML round trip\n{toml}");
    let xml = config.to_xml();
    let again = Config::from_xml_str(&xml)
        .unwrap_or_else(|e| panic!("written XML does not load: {e}\n{xml}"));
    assert_eq!(again, config, "XML round trip\n{xml}");
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The legacy web API's parameter parsing on arbitrary query strings / form
/// bodies: the decoding every call goes through, then each value through the
/// typed parsers the handlers use (host and listen addresses, scheduler,
/// weight, access, seconds, networks). Never panics; decoded pairs survive
/// re-encoding; addresses, schedulers and durations that parse print back to
/// text that parses to the same value.
pub fn legacy_params(data: &[u8]) {
    let pairs = decode_params(data);
    let encoded: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    assert_eq!(decode_params(encoded.join("&").as_bytes()), pairs);

    for (_, value) in &pairs {
        let value = value.trim();
        if let Ok(a) = parse_host_address(value) {
            assert_eq!(
                parse_host_address(&a.to_string()),
                Ok(a.clone()),
                "{value:?}"
            );
        }
        if let Ok(l) = parse_listen_addr(value) {
            assert_eq!(
                parse_listen_addr(&l.to_string()),
                Ok(l.clone()),
                "{value:?}"
            );
        }
        if let Ok(s) = SchedulerKind::from_str(value) {
            assert_eq!(
                SchedulerKind::from_str(&s.to_string()).ok(),
                Some(s),
                "{value:?}"
            );
        }
        if let Ok(d) = parse_seconds(value) {
            assert!(!d.is_zero(), "{value:?}");
        }
        let _ = parse_weight(value);
        let _ = parse_access(value);
        let _ = parse_net(value);
    }
}

/// The first-bytes sniffer on a ClientHello (or anything): the properties of
/// [`sniffer`], and a hello it parsed gives the same verdict when its
/// handshake message is cut into other records.
pub fn client_hello(data: &[u8]) {
    sniffer(data);
    resplit_records(data);
}

/// The first-bytes sniffer on an HTTP request (or anything): the properties
/// of [`sniffer`].
pub fn http_request(data: &[u8]) {
    sniffer(data);
}

/// Cut points of `data`, from a generator seeded by its bytes: the same
/// input always gets the same cuts (xorshift; the fuzz crate has no RNG).
fn cuts(data: &[u8], n: usize) -> Vec<usize> {
    let mut state = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) | 1;
    let mut out: Vec<usize> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % (data.len() as u64 + 1)) as usize
        })
        .collect();
    out.sort_unstable();
    out
}

/// One sniffer fed `data` cut at `cuts` (then whole): its first verdict and
/// the length it was given then.
fn fed(data: &[u8], cuts: impl IntoIterator<Item = usize>) -> Option<(Seen, usize)> {
    let mut sniffer = Sniffer::new();
    for end in cuts.into_iter().chain([data.len()]) {
        if let Sniffed::Done(seen) = sniffer.sniff(&data[..end]) {
            return Some((seen, end));
        }
    }
    None
}

/// The handshake bytes of the TLS records `data` starts with (as many as
/// there are), written here apart from the sniffer's own reassembly.
fn unrecord(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 5 && rest[0] == 22 {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        let end = rest.len().min(5 + len);
        out.extend_from_slice(&rest[5..end]);
        rest = &rest[end..];
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// What a verdict claims is backed by the bytes: an SNI and ALPN protocols
/// present in the input (or in its records' handshake bytes, reassembled), a
/// Host present in it, each only for its protocol.
fn claims(data: &[u8], seen: &Seen) {
    let lower = data.to_ascii_lowercase();
    let handshake = unrecord(data).to_ascii_lowercase();
    if let Some(sni) = &seen.sni {
        assert_eq!(seen.protocol, ClientProtocol::Tls);
        assert!(sni.len() <= 253, "{sni:?}");
        assert!(
            contains(&lower, sni.as_bytes()) || contains(&handshake, sni.as_bytes()),
            "SNI {sni:?} is not in the input"
        );
    }
    assert!(seen.alpn.len() <= Seen::MAX_ALPN);
    assert!(seen.alpn.is_empty() || seen.protocol == ClientProtocol::Tls);
    for alpn in seen.alpn.iter().filter(|a| !a.contains('\u{fffd}')) {
        let alpn = alpn.to_ascii_lowercase();
        assert!(
            contains(&lower, alpn.as_bytes()) || contains(&handshake, alpn.as_bytes()),
            "ALPN {alpn:?} is not in the input"
        );
    }
    if let Some(host) = &seen.host {
        assert_eq!(seen.protocol, ClientProtocol::Http);
        assert!(
            contains(&lower, host.as_bytes()),
            "Host {host:?} is not in the input"
        );
    }
}

/// The sniffer on arbitrary first bytes: never panics; fed in pieces (a byte
/// at a time, or cut anywhere) its first verdict is the whole input's, on
/// the bytes up to where it decided as on the whole, and every shorter
/// prefix needs more; given up on any prefix it still answers (the verdict
/// itself once decided, an anomaly before); and it never claims a name that
/// is not in the input.
pub fn sniffer(data: &[u8]) {
    let whole = match sniff(data) {
        Sniffed::Done(seen) => Some(seen),
        Sniffed::NeedMore => None,
    };
    let one_by_one = fed(data, 0..data.len());
    assert_eq!(
        one_by_one.as_ref().map(|(s, _)| s),
        whole.as_ref(),
        "a byte at a time"
    );
    for n in [1, 3, 20] {
        let pieces = fed(data, cuts(data, n)).map(|(s, _)| s);
        assert_eq!(pieces.as_ref(), whole.as_ref(), "in {n} pieces");
    }
    let decided_at = one_by_one.map_or(data.len() + 1, |(_, at)| at);
    if let Some(seen) = &whole {
        claims(data, seen);
        assert_eq!(sniff(&data[..decided_at]), Sniffed::Done(seen.clone()));
    }
    for cut in cuts(data, 16) {
        if cut < decided_at {
            assert_eq!(
                sniff(&data[..cut]),
                Sniffed::NeedMore,
                "prefix of {cut} bytes"
            );
        }
        for why in [GiveUp::Limit, GiveUp::Timeout, GiveUp::Closed] {
            let seen = give_up(&data[..cut], why);
            claims(&data[..cut], &seen);
            if cut >= decided_at {
                assert_eq!(Some(&seen), whole.as_ref(), "given up after deciding");
            } else {
                assert!(
                    seen.anomaly.is_some(),
                    "given up without an anomaly: {seen:?}"
                );
            }
        }
    }
}

/// A ClientHello the sniffer parsed (whatever its server name) gives the
/// same verdict in records of other sizes.
fn resplit_records(data: &[u8]) {
    let Sniffed::Done(seen) = sniff(data) else {
        return;
    };
    let parsed = seen.protocol == ClientProtocol::Tls
        && !matches!(
            seen.anomaly,
            Some(Anomaly::MalformedHello | Anomaly::OversizedHello | Anomaly::Sslv2Hello)
        );
    if !parsed {
        return;
    }
    let handshake = unrecord(data);
    let total = 4 + u32::from_be_bytes([0, handshake[1], handshake[2], handshake[3]]) as usize;
    let message = &handshake[..total];
    let odd = 1 + data.len() % 97;
    for size in [odd, 57, 300, total] {
        let records = total.div_ceil(size);
        if records > 60 || total + 5 * records > 16 * 1024 {
            continue;
        }
        let mut bytes = Vec::new();
        for part in message.chunks(size) {
            bytes.extend_from_slice(&[22, 3, 1]);
            bytes.extend_from_slice(&(part.len() as u16).to_be_bytes());
            bytes.extend_from_slice(part);
        }
        assert_eq!(
            sniff(&bytes),
            Sniffed::Done(seen.clone()),
            "in records of {size} bytes"
        );
    }
}

/// The QUIC Initial reader: on arbitrary bytes as a client's datagram it
/// never panics and, given up, always decides; on arbitrary bytes as a
/// client's handshake stream (cut into CRYPTO frames in a scrambled order,
/// over two Initials protected as a client protects them) it decides,
/// claims no name that is not in the input, and when both parse a hello it
/// agrees with the TCP sniffer on that stream in one TLS record.
pub fn quic_initial(data: &[u8]) {
    let _ = sniff_initials(&[data], false);
    assert!(matches!(sniff_initials(&[data], true), Sniffed::Done(_)));
    if data.len() > 4_000 {
        return;
    }
    let mut bounds = cuts(data, 3);
    bounds.insert(0, 0);
    bounds.push(data.len());
    let mut pieces: Vec<(u64, &[u8])> = bounds
        .windows(2)
        .map(|w| (w[0] as u64, &data[w[0]..w[1]]))
        .collect();
    if data.len() % 2 == 1 {
        pieces.reverse();
    }
    let frames = |pieces: &[(u64, &[u8])]| -> Vec<u8> {
        pieces
            .iter()
            .flat_map(|(offset, piece)| crypto_frame(*offset, piece))
            .collect()
    };
    let dcid = [0x5a; 8];
    let half = pieces.len() / 2;
    let first = protect_initial(false, &dcid, 0, &frames(&pieces[..half]));
    let second = protect_initial(false, &dcid, 1, &frames(&pieces[half..]));
    let Sniffed::Done(seen) = sniff_initials(&[first, second], true) else {
        panic!("given up, the reader must decide");
    };
    claims(data, &seen);
    let mut record = vec![22, 3, 1];
    record.extend_from_slice(&(data.len() as u16).to_be_bytes());
    record.extend_from_slice(data);
    if let Sniffed::Done(tcp) = sniff(&record)
        && tcp.anomaly.is_none()
        && seen.anomaly.is_none()
    {
        assert_eq!((&seen.sni, &seen.alpn), (&tcp.sni, &tcp.alpn));
    }
}
