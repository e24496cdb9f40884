//! The sniffers on hand-made and captured first bytes, and the route table
//! against a plain linear matcher.

use std::time::{Duration, Instant};

use crate::config::{ClientProtocol, Route};

use super::*;

// ---- ClientHellos made by hand ----

/// An extension: type, data.
type Ext = (u16, Vec<u8>);

fn vec16(data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(data);
    out
}

fn sni_ext(names: &[&[u8]]) -> Ext {
    let mut list = Vec::new();
    for name in names {
        list.push(0);
        list.extend(vec16(name));
    }
    (0, vec16(&list))
}

fn alpn_ext(names: &[&str]) -> Ext {
    let mut list = Vec::new();
    for name in names {
        list.push(name.len() as u8);
        list.extend_from_slice(name.as_bytes());
    }
    (16, vec16(&list))
}

/// A ClientHello handshake message (header included) with `extensions`.
fn message(extensions: &[Ext]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend([7; 32]);
    body.push(32);
    body.extend([9; 32]);
    body.extend(vec16(&[0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f]));
    body.extend([1, 0]);
    let mut exts = Vec::new();
    for (kind, data) in extensions {
        exts.extend(kind.to_be_bytes());
        exts.extend(vec16(data));
    }
    body.extend(vec16(&exts));
    let mut out = vec![1];
    out.extend(&(body.len() as u32).to_be_bytes()[1..]);
    out.extend(body);
    out
}

/// `handshake` in records of `sizes` bytes (the last one takes the rest).
fn records(handshake: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = handshake;
    for (i, &size) in sizes.iter().enumerate() {
        let size = if i + 1 == sizes.len() {
            rest.len()
        } else {
            size.min(rest.len())
        };
        out.extend([22, 3, 1]);
        out.extend((size as u16).to_be_bytes());
        out.extend(&rest[..size]);
        rest = &rest[size..];
    }
    out
}

/// A whole hello in one record: SNI, ALPN and a few other extensions.
fn hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
    records(
        &message(&[
            (0x0a0a, vec![]), // GREASE
            sni_ext(&[sni.as_bytes()]),
            (23, vec![]),
            alpn_ext(alpn),
            (43, vec![4, 3, 4, 3, 3]),
        ]),
        &[usize::MAX],
    )
}

fn done(bytes: &[u8]) -> Seen {
    match sniff(bytes) {
        Sniffed::Done(seen) => seen,
        Sniffed::NeedMore => panic!("needs more: {:?}", String::from_utf8_lossy(bytes)),
    }
}

fn tls(sni: Option<&str>, alpn: &[&str]) -> Seen {
    Seen {
        sni: sni.map(Box::from),
        alpn: alpn.iter().map(|&a| Box::from(a)).collect(),
        ..Seen::new(ClientProtocol::Tls)
    }
}

fn with(protocol: ClientProtocol, anomaly: Anomaly) -> Seen {
    Seen::new(protocol).with(anomaly)
}

/// Every strict prefix of `bytes` needs more; the whole is `expected`; and
/// one sniffer fed a byte at a time agrees.
fn exactly_at_end(bytes: &[u8], expected: &Seen) {
    for cut in 0..bytes.len() {
        assert_eq!(sniff(&bytes[..cut]), Sniffed::NeedMore, "prefix of {cut}");
    }
    assert_eq!(&done(bytes), expected);
    assert_eq!(fed_by(bytes, 1), Some(expected.clone()));
}

/// One sniffer fed `bytes` `step` bytes at a time: its first verdict.
fn fed_by(bytes: &[u8], step: usize) -> Option<Seen> {
    let mut sniffer = Sniffer::new();
    let mut end = 0;
    loop {
        end = (end + step).min(bytes.len());
        if let Sniffed::Done(seen) = sniffer.sniff(&bytes[..end]) {
            return Some(seen);
        }
        if end == bytes.len() {
            return None;
        }
    }
}

#[test]
fn tls_sni_and_alpn_when_the_hello_is_whole() {
    let bytes = hello("Api.Example.COM", &["h2", "http/1.1"]);
    exactly_at_end(&bytes, &tls(Some("api.example.com"), &["h2", "http/1.1"]));
    // What follows the hello changes nothing.
    let mut more = bytes.clone();
    more.extend([23, 3, 3, 0, 5, 1, 2, 3, 4, 5]);
    assert_eq!(done(&more), done(&bytes));
}

#[test]
fn tls_hello_split_over_records() {
    let message = message(&[sni_ext(&[b"a.example.org"]), alpn_ext(&["h2"])]);
    let expected = tls(Some("a.example.org"), &["h2"]);
    for sizes in [
        &[3, 40, usize::MAX][..],
        &[1, 1, 1, 1, usize::MAX],
        &[4, usize::MAX],
        &[60, 1, usize::MAX],
    ] {
        let bytes = records(&message, sizes);
        exactly_at_end(&bytes, &expected);
    }
    // Tiny records, within the limit on their number.
    let bytes = records(&message, &[message.len().div_ceil(60); 60]);
    assert_eq!(done(&bytes), expected);
    // One-byte records: too many.
    let bytes = records(&message, &vec![1; message.len()]);
    assert_eq!(
        done(&bytes),
        with(ClientProtocol::Tls, Anomaly::MalformedHello)
    );
}

#[test]
fn tls_without_sni_or_alpn() {
    let bytes = records(&message(&[(23, vec![])]), &[usize::MAX]);
    exactly_at_end(&bytes, &tls(None, &[]));
    let bytes = records(&message(&[]), &[usize::MAX]);
    assert_eq!(done(&bytes), tls(None, &[]));
}

#[test]
fn tls_bad_server_names() {
    let long = "a".repeat(60) + "." + &*"b".repeat(60);
    let long = [&*long, &*long, &*long].join(".");
    assert!(long.len() > 253);
    let names: [&[u8]; 8] = [
        b"exa mple.com",
        b"a..b",
        b".a",
        b"",
        b"caf\xc3\xa9.fr",
        b"a/b",
        long.as_bytes(),
        &[b'a'; 64],
    ];
    for name in names {
        let bytes = records(&message(&[sni_ext(&[name])]), &[usize::MAX]);
        assert_eq!(
            done(&bytes),
            with(ClientProtocol::Tls, Anomaly::BadServerName),
            "{name:?}"
        );
    }
    // Two host names: which would the host use?
    let bytes = records(&message(&[sni_ext(&[b"a.com", b"b.com"])]), &[usize::MAX]);
    assert_eq!(
        done(&bytes),
        with(ClientProtocol::Tls, Anomaly::BadServerName)
    );
    // A trailing dot, an underscore, digits: plausible.
    let bytes = records(&message(&[sni_ext(&[b"_x.1.Example.com."])]), &[usize::MAX]);
    assert_eq!(done(&bytes).sni.as_deref(), Some("_x.1.example.com"));
}

#[test]
fn tls_malformed_hellos() {
    let malformed = with(ClientProtocol::Tls, Anomaly::MalformedHello);
    let one = |exts: &[Ext]| records(&message(exts), &[usize::MAX]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("duplicated extension", one(&[(23, vec![]), (23, vec![])])),
        (
            "two SNI extensions",
            one(&[sni_ext(&[b"a"]), sni_ext(&[b"a"])]),
        ),
        ("empty SNI extension", one(&[(0, vec![])])),
        ("empty ALPN name", one(&[alpn_ext(&["h2", ""])])),
        ("empty ALPN list", one(&[(16, vec![0, 0])])),
        ("ALPN list length", one(&[(16, vec![0, 9, 2, b'h', b'2'])])),
        ("SNI list length", one(&[(0, vec![0, 1, 0, 0, 1, b'a'])])),
        ("extension past the end", {
            let mut m = message(&[(23, vec![])]);
            let n = m.len();
            m[n - 1] = 9; // its length
            records(&m, &[usize::MAX])
        }),
        ("bytes after the extensions", {
            let mut m = message(&[(23, vec![])]);
            m.push(0);
            m[3] += 1;
            records(&m, &[usize::MAX])
        }),
        ("not a ClientHello", {
            let mut m = message(&[]);
            m[0] = 2;
            records(&m, &[usize::MAX])
        }),
        ("legacy version", {
            let mut m = message(&[]);
            m[4] = 2;
            records(&m, &[usize::MAX])
        }),
        ("empty record", vec![22, 3, 1, 0, 0]),
        ("record too long", vec![22, 3, 1, 0x40, 1]),
        ("an alert in the middle", {
            let m = message(&[]);
            let mut bytes = records(&m[..10], &[usize::MAX]);
            bytes.extend([21, 3, 3, 0, 2, 2, 40]);
            bytes
        }),
    ];
    for (what, bytes) in cases {
        assert_eq!(done(&bytes), malformed, "{what}");
        assert_eq!(
            fed_by(&bytes, 1),
            Some(malformed.clone()),
            "{what}, a byte at a time"
        );
    }
}

#[test]
fn many_extensions() {
    let mut exts: Vec<Ext> = (100..160).map(|kind| (kind, vec![])).collect();
    exts.push(sni_ext(&[b"many.example"]));
    let bytes = records(&message(&exts), &[usize::MAX]);
    assert_eq!(done(&bytes), tls(Some("many.example"), &[]));
    for dup in [100, 140, 159] {
        let mut with_dup = exts.clone();
        with_dup.push((dup, vec![]));
        let bytes = records(&message(&with_dup), &[usize::MAX]);
        assert_eq!(
            done(&bytes),
            with(ClientProtocol::Tls, Anomaly::MalformedHello),
            "{dup}"
        );
    }
}

#[test]
fn not_tls_after_all() {
    for bytes in [&[22, 2][..], &[22, 3, 0], &[22, 3, 5], &[22, 0x16]] {
        assert_eq!(done(bytes), Seen::new(ClientProtocol::Other), "{bytes:?}");
    }
    assert_eq!(sniff(&[22]), Sniffed::NeedMore);
    assert_eq!(sniff(&[22, 3, 3, 1]), Sniffed::NeedMore);
}

#[test]
fn oversized_hello_is_told_from_its_header() {
    let mut m = message(&[sni_ext(&[b"big.example"])]);
    m[1..4].copy_from_slice(&20_000u32.to_be_bytes()[1..]);
    let bytes = records(&m, &[usize::MAX]);
    let oversized = with(ClientProtocol::Tls, Anomaly::OversizedHello);
    assert_eq!(sniff(&bytes[..8]), Sniffed::NeedMore);
    assert_eq!(done(&bytes[..9]), oversized);
    // The largest that fits in 16 KiB with one record header: still waited for.
    let fits = 16 * 1024 - 5 - 4;
    m[1..4].copy_from_slice(&(fits as u32).to_be_bytes()[1..]);
    assert_eq!(sniff(&records(&m, &[usize::MAX])[..9]), Sniffed::NeedMore);
    m[1..4].copy_from_slice(&(fits as u32 + 1).to_be_bytes()[1..]);
    assert_eq!(done(&records(&m, &[usize::MAX])[..9]), oversized);
}

#[test]
fn sslv2_compatible_hello() {
    let bytes = [0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15];
    assert_eq!(sniff(&bytes[..2]), Sniffed::NeedMore);
    assert_eq!(
        done(&bytes[..3]),
        with(ClientProtocol::Tls, Anomaly::Sslv2Hello)
    );
    assert_eq!(done(&[0x80, 0x2e, 0x04]), Seen::new(ClientProtocol::Other));
}

#[test]
fn partial_hello_given_up() {
    let bytes = hello("part.example", &["h2"]);
    // Cut inside the ALPN extension: the SNI, complete, still counts.
    let cut = &bytes[..bytes.len() - 12];
    assert_eq!(sniff(cut), Sniffed::NeedMore);
    let seen = give_up(cut, GiveUp::Timeout);
    assert_eq!(
        seen,
        Seen {
            anomaly: Some(Anomaly::TruncatedHello),
            ..tls(Some("part.example"), &[])
        }
    );
    assert_eq!(
        give_up(cut, GiveUp::Limit).anomaly,
        Some(Anomaly::OversizedHello)
    );
    assert_eq!(
        give_up(&bytes[..3], GiveUp::Closed),
        with(ClientProtocol::Tls, Anomaly::TruncatedHello)
    );
    // A partial SNI is no SNI.
    let at = bytes.windows(4).position(|w| w == b"part").unwrap();
    assert_eq!(give_up(&bytes[..at + 3], GiveUp::Timeout).sni, None);
    // Every cut: no panic, TLS.
    for cut in 0..bytes.len() {
        let seen = give_up(&bytes[..cut], GiveUp::Timeout);
        let expected = if cut == 0 {
            ClientProtocol::Other
        } else {
            ClientProtocol::Tls
        };
        assert_eq!(seen.protocol, expected);
        assert!(seen.anomaly.is_some());
    }
}

// ---- HTTP ----

fn http(host: Option<&str>) -> Seen {
    Seen {
        host: host.map(Box::from),
        ..Seen::new(ClientProtocol::Http)
    }
}

#[test]
fn http_host() {
    let cases = [
        ("GET / HTTP/1.1\r\nHost: Example.COM\r\n", "example.com"),
        (
            "GET / HTTP/1.1\r\nHost: app.example.com:8080\r\n",
            "app.example.com",
        ),
        (
            "POST /x?y HTTP/1.0\r\nUser-Agent: t\r\nhOsT:\t a.b  \r\n",
            "a.b",
        ),
        ("GET / HTTP/1.1\nHost: lf.only\n", "lf.only"),
        (
            "HEAD / HTTP/1.1\r\nHost: [2001:DB8::1]:443\r\n",
            "2001:db8::1",
        ),
        ("OPTIONS * HTTP/1.1\r\nHost: [::1]\r\n", "::1"),
        ("GET / HTTP/1.1\r\nHost: 10.0.0.1:80\r\n", "10.0.0.1"),
        ("GET / HTTP/1.1\r\nHostname: no\r\nHost: yes\r\n", "yes"),
        ("CONNECT a.b:443 HTTP/1.1\r\nHost: a.b:443\r\n", "a.b"),
    ];
    for (request, host) in cases {
        exactly_at_end(request.as_bytes(), &http(Some(host)));
    }
    // The first Host counts.
    let bytes = b"GET / HTTP/1.1\r\nHost: first\r\nHost: second\r\n\r\n";
    assert_eq!(done(bytes), http(Some("first")));
}

#[test]
fn http_without_host() {
    let without = with(ClientProtocol::Http, Anomaly::HttpWithoutHost);
    for request in [
        "GET / HTTP/1.0\r\n\r\n",
        "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
        "GET / HTTP/1.1\n\n",
        "GET / HTTP/1.1\r\nHost:  \r\n",
    ] {
        exactly_at_end(request.as_bytes(), &without);
    }
}

#[test]
fn bad_http() {
    let bad = with(ClientProtocol::Http, Anomaly::BadHttp);
    for request in [
        "GET  / HTTP/1.1\r\n",
        "GET / HTTP/2.0\r\n",
        "GET / http/1.1\r\n",
        "GET / HTTP/1.1 \r\n",
        "GET /\r\n",
        "GET / HTTP/1.1\r\r\n",
        "GET / HTTP/1.1\r\nHost : a\r\n",
        "GET / HTTP/1.1\r\n Host: a\r\n",
        "GET / HTTP/1.1\r\nA: b\r\n folded\r\n",
        "GET / HTTP/1.1\r\nA: b\x00\r\n",
        "GET / HTTP/1.1\r\nHost: a b\r\n",
        "GET / HTTP/1.1\r\nHost: a:b\r\n",
        "GET / HTTP/1.1\r\nHost: a:123456\r\n",
        "GET / HTTP/1.1\r\nHost: [::1\r\n",
        "GET / HTTP/1.1\r\nHost: [nope]\r\n",
        "GET / HTTP/1.1\r\nHost: user@a\r\n",
        "GET / HTTP/1.1\r\nHost: caf\u{e9}.fr\r\n",
        "GET /\x7f HTTP/1.1\r\n",
        "PRI * HTTP/1.1\r\n",
    ] {
        assert_eq!(done(request.as_bytes()), bad, "{request:?}");
        assert_eq!(
            fed_by(request.as_bytes(), 1),
            Some(bad.clone()),
            "{request:?}"
        );
    }
}

#[test]
fn http2_preface_is_http() {
    exactly_at_end(
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        &Seen::new(ClientProtocol::Http),
    );
}

#[test]
fn http_given_up() {
    let request = b"GET / HTTP/1.1\r\nAccept: */*\r\nHost: exa";
    assert_eq!(sniff(request), Sniffed::NeedMore);
    assert_eq!(
        give_up(request, GiveUp::Closed),
        with(ClientProtocol::Http, Anomaly::TruncatedHttp)
    );
    assert_eq!(
        give_up(request, GiveUp::Limit),
        with(ClientProtocol::Http, Anomaly::OversizedHttp)
    );
}

// ---- SSH, other, nothing ----

#[test]
fn ssh_and_other_decided_early() {
    exactly_at_end(b"SSH-", &Seen::new(ClientProtocol::Ssh));
    assert_eq!(
        done(b"SSH-2.0-OpenSSH_9.6\r\n"),
        Seen::new(ClientProtocol::Ssh)
    );
    let other = Seen::new(ClientProtocol::Other);
    for (bytes, decided_at) in [
        (&b"SSX-"[..], 3),
        (b"\x00\x00\x00\x01", 1),
        (b"get / HTTP/1.1\r\n", 1),
        (b"GEX / HTTP/1.1", 3),
        (b"GET/ HTTP/1.1", 4),
        (b"HELO mail.example\r\n", 3),
        (b"\r\n", 1),
        (b"{\"jsonrpc\"", 1),
    ] {
        for cut in 0..decided_at {
            assert_eq!(
                sniff(&bytes[..cut]),
                Sniffed::NeedMore,
                "{bytes:?} at {cut}"
            );
        }
        assert_eq!(done(&bytes[..decided_at]), other, "{bytes:?}");
        assert_eq!(done(bytes), other, "{bytes:?}");
    }
}

#[test]
fn nothing_or_too_little() {
    assert_eq!(sniff(b""), Sniffed::NeedMore);
    for why in [GiveUp::Limit, GiveUp::Timeout, GiveUp::Closed] {
        assert_eq!(
            give_up(b"", why),
            with(ClientProtocol::Other, Anomaly::Silent)
        );
    }
    for few in [&b"S"[..], b"SSH", b"GE", b"PRI * HTTP/2.0", b"\x80"] {
        assert_eq!(sniff(few), Sniffed::NeedMore);
        assert_eq!(
            give_up(few, GiveUp::Timeout),
            with(ClientProtocol::Other, Anomaly::Incomplete)
        );
    }
    // Given up on bytes that had decided: their verdict.
    assert_eq!(
        give_up(b"SSH-2", GiveUp::Closed),
        Seen::new(ClientProtocol::Ssh)
    );
}

#[test]
fn anomaly_names() {
    let names: Vec<_> = Anomaly::ALL.iter().map(Anomaly::as_str).collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len());
    for anomaly in Anomaly::ALL {
        let name = anomaly.as_str();
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        );
        assert!(!anomaly.to_string().is_empty());
    }
}

#[test]
fn a_shorter_call_starts_over() {
    let mut sniffer = Sniffer::new();
    assert_eq!(sniffer.sniff(b"GET / HTTP/1.1\r\nHo"), Sniffed::NeedMore);
    assert_eq!(
        sniffer.sniff(b"SSH-2.0"),
        Sniffed::Done(Seen::new(ClientProtocol::Ssh))
    );
}

// ---- Cost ----

/// 16 KiB, one byte at a time, through one sniffer: linear over all calls.
/// Release builds take well under a millisecond for each; this bound is for
/// unoptimised test builds on a busy machine.
#[test]
fn one_byte_at_a_time_is_linear() {
    let mut request = b"GET / HTTP/1.1\r\n".to_vec();
    while request.len() < 16 * 1024 - 100 {
        request.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    request.extend_from_slice(b"Host: late.example\r\n");
    let mut ext = vec![0u8; 16 * 1024 - 200];
    ext.iter_mut().for_each(|b| *b = 0x41);
    let hello = records(
        &message(&[(0xfe0d, ext), sni_ext(&[b"big.example"]), alpn_ext(&["h2"])]),
        &[usize::MAX],
    );
    assert!(hello.len() <= 16 * 1024, "{}", hello.len());
    for (bytes, expected) in [
        (request, http(Some("late.example"))),
        (hello, tls(Some("big.example"), &["h2"])),
    ] {
        let start = Instant::now();
        assert_eq!(fed_by(&bytes, 1), Some(expected));
        let took = start.elapsed();
        println!("{} bytes one at a time: {took:?}", bytes.len());
        assert!(took < Duration::from_millis(500), "{took:?}");
    }
}

// ---- The route table ----

fn route(sni: Option<&str>, alpn: Option<&str>, protocol: Option<ClientProtocol>) -> Route {
    Route {
        service: "s".into(),
        sni: sni.map(Into::into),
        alpn: alpn.map(Into::into),
        protocol,
        host: None,
    }
}

fn client(sni: Option<&str>, alpn: &[&str]) -> Seen {
    tls(sni, alpn)
}

#[test]
fn wildcards() {
    let table = RouteTable::new(&[route(Some("*.example.org"), None, None)]);
    for (sni, matches) in [
        ("a.example.org", true),
        ("a.b.example.org", true),
        ("example.org", false),
        ("xexample.org", false),
        ("a.example.org.evil", false),
        ("org", false),
    ] {
        assert_eq!(
            table.find(&client(Some(sni), &[])).is_some(),
            matches,
            "{sni}"
        );
    }
    assert_eq!(table.find(&client(None, &[])), None);

    let any = RouteTable::new(&[route(Some("*"), None, None)]);
    assert_eq!(any.find(&client(Some("x"), &[])), Some(0));
    assert_eq!(any.find(&client(None, &[])), None);
}

#[test]
fn wildcards_of_several_depths() {
    let table = RouteTable::new(&[
        route(Some("*.a.b.c.d"), None, None),
        route(Some("*.org"), None, None),
        route(Some("*.example.org"), Some("h2"), None),
    ]);
    assert_eq!(table.find(&client(Some("x.y.a.b.c.d"), &[])), Some(0));
    assert_eq!(table.find(&client(Some("a.b.c.d"), &[])), None);
    assert_eq!(table.find(&client(Some("q.w.e.r.t.y.org"), &[])), Some(1));
    let deep = format!("{}example.org", "x.".repeat(100));
    assert_eq!(table.find(&client(Some(&deep), &[])), Some(1));
    let only = RouteTable::new(&[route(Some("*.example.org"), Some("h2"), None)]);
    assert_eq!(only.find(&client(Some(&deep), &["h2"])), Some(0));
    assert_eq!(only.find(&client(Some(&deep), &["http/1.1"])), None);
}

#[test]
fn contradictions_match_nothing() {
    let host = Route {
        host: Some("a.com".into()),
        ..route(None, None, Some(ClientProtocol::Tls))
    };
    let table = RouteTable::new(&[
        route(Some("a.com"), None, Some(ClientProtocol::Http)),
        route(None, Some("h2"), Some(ClientProtocol::Ssh)),
        host,
        route(Some("a.com"), None, Some(ClientProtocol::Tls)),
    ]);
    assert_eq!(table.find(&client(Some("a.com"), &["h2"])), Some(3));
    let from = |bytes: &[u8]| table.find(&done(bytes));
    assert_eq!(from(b"GET / HTTP/1.1\r\nHost: a.com\r\n"), None);
}

#[test]
fn case_insensitive_names() {
    let table = RouteTable::new(&[
        route(Some("API.Example.com"), None, None),
        route(Some("*.Example.ORG"), None, None),
    ]);
    assert_eq!(table.find(&client(Some("api.example.com"), &[])), Some(0));
    assert_eq!(table.find(&client(Some("API.EXAMPLE.COM"), &[])), Some(0));
    assert_eq!(table.find(&client(Some("X.example.org"), &[])), Some(1));
}

#[test]
fn without_sni_only_routes_without_sni() {
    let table = RouteTable::new(&[
        route(Some("a.com"), None, None),
        route(Some("*"), Some("h2"), None),
        route(None, Some("h2"), None),
        route(None, None, Some(ClientProtocol::Tls)),
    ]);
    assert_eq!(table.find(&client(None, &["h2"])), Some(2));
    assert_eq!(table.find(&client(None, &["http/1.1"])), Some(3));
    assert_eq!(table.find(&client(Some("b.com"), &["h2"])), Some(1));
    assert_eq!(table.find(&client(Some("a.com"), &["h2"])), Some(0));
    assert_eq!(table.find(&Seen::new(ClientProtocol::Ssh)), None);
}

#[test]
fn alpn_offered_among_several_and_order_wins() {
    let table = RouteTable::new(&[
        route(None, Some("h2"), None),
        route(Some("a.com"), None, None),
        route(None, Some("acme-tls/1"), None),
    ]);
    assert_eq!(
        table.find(&client(Some("a.com"), &["http/1.1", "h2"])),
        Some(0)
    );
    assert_eq!(table.find(&client(Some("a.com"), &["http/1.1"])), Some(1));
    assert_eq!(
        table.find(&client(None, &["x", "acme-tls/1", "y"])),
        Some(2)
    );
    // ALPN protocols are bytes: case matters.
    assert_eq!(table.find(&client(None, &["H2"])), None);
}

#[test]
fn http_host_and_protocols() {
    let host = |h: &str| Route {
        host: Some(h.into()),
        ..route(None, None, Some(ClientProtocol::Http))
    };
    let table = RouteTable::new(&[
        host("app.example.com"),
        host("[::1]"),
        route(None, None, Some(ClientProtocol::Ssh)),
        route(None, None, Some(ClientProtocol::Http)),
        route(None, None, Some(ClientProtocol::Other)),
    ]);
    let from = |bytes: &[u8]| table.find(&done(bytes));
    assert_eq!(
        from(b"GET / HTTP/1.1\r\nHost: App.Example.com:80\r\n"),
        Some(0)
    );
    assert_eq!(from(b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n"), Some(1));
    assert_eq!(from(b"SSH-2.0-x\r\n"), Some(2));
    assert_eq!(from(b"GET / HTTP/1.1\r\nHost: other\r\n"), Some(3));
    assert_eq!(from(b"GET / HTTP/1.1\r\n\r\n"), Some(3));
    assert_eq!(from(b"\x00garbage"), Some(4));
    assert_eq!(table.find(&client(Some("app.example.com"), &[])), None);
}

/// A route matcher written plainly: every route, in order.
fn linear(routes: &[Route], seen: &Seen) -> Option<usize> {
    let name_ok = |pattern: &Option<String>, name: &Option<Box<str>>| match (pattern, name) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(p), Some(n)) => {
            let (p, n) = (p.to_lowercase(), n.to_lowercase());
            p == "*"
                || p == n
                || p.strip_prefix('*').is_some_and(|dot_suffix| {
                    dot_suffix.starts_with('.')
                        && n.ends_with(dot_suffix)
                        && n.len() > dot_suffix.len()
                })
        }
    };
    routes.iter().position(|r| {
        name_ok(&r.sni, &seen.sni)
            && name_ok(&r.host, &seen.host)
            && r.protocol.is_none_or(|p| p == seen.protocol)
            && r.alpn
                .as_ref()
                .is_none_or(|a| seen.alpn.iter().any(|o| **o == **a))
    })
}

const DOMAINS: [&str; 5] = [
    "example.org",
    "example.com",
    "a.example.org",
    "test",
    "x.y.z",
];
const ALPNS: [&str; 6] = [
    "h2",
    "http/1.1",
    "acme-tls/1",
    "imap",
    "xmpp-client",
    "spdy/3",
];

/// `n` routes: exact names, wildcards, `*`, ALPN only, protocol only, hosts,
/// and mixtures of them.
fn many_routes(rng: &mut fastrand::Rng, n: usize) -> Vec<Route> {
    let name = |rng: &mut fastrand::Rng| {
        format!(
            "n{}.{}",
            rng.usize(..n / 4 + 1),
            DOMAINS[rng.usize(..DOMAINS.len())]
        )
    };
    let protocol = |rng: &mut fastrand::Rng| ClientProtocol::ALL[rng.usize(..4)];
    (0..n)
        .map(|_| {
            let mut r = route(None, None, None);
            // Routes matching most clients (`*`, a domain's wildcard, a
            // protocol) are rare, or every client would stop at the first few.
            match rng.usize(..20) {
                0..=9 => r.sni = Some(name(rng)),
                10 | 11 => r.sni = Some(format!("*.{}", name(rng))),
                12 => {
                    r.sni = Some(format!("*.{}", DOMAINS[rng.usize(..DOMAINS.len())]));
                    r.alpn = Some(ALPNS[rng.usize(..ALPNS.len())].into());
                }
                13 => {
                    r.sni = Some("*".into());
                    r.alpn = Some(ALPNS[rng.usize(..ALPNS.len())].into());
                }
                14 | 15 => r.alpn = Some(ALPNS[rng.usize(..ALPNS.len())].into()),
                16 if rng.u8(..20) == 0 => r.protocol = Some(protocol(rng)),
                _ => {
                    r.protocol = Some(ClientProtocol::Http);
                    r.host = Some(name(rng));
                }
            }
            if rng.u8(..4) == 0 {
                r.alpn = Some(ALPNS[rng.usize(..ALPNS.len())].into());
            }
            if rng.u8(..8) == 0 {
                r.protocol = Some(protocol(rng));
            }
            r
        })
        .collect()
}

/// A client whose name is often one the routes name (or under one).
fn random_client(rng: &mut fastrand::Rng, routes: &[Route]) -> Seen {
    let protocol = [
        ClientProtocol::Tls,
        ClientProtocol::Http,
        ClientProtocol::Ssh,
    ][rng.usize(..3)];
    let mut seen = Seen::new(protocol);
    let name = |rng: &mut fastrand::Rng| {
        let r = &routes[rng.usize(..routes.len())];
        let named = r.sni.as_deref().or(r.host.as_deref()).unwrap_or("*");
        let mut name = match named.strip_prefix('*') {
            Some(suffix) => format!("w{}{suffix}", rng.u8(..3)),
            None => named.to_string(),
        };
        if rng.u8(..4) == 0 {
            name = format!(
                "n{}.{}",
                rng.usize(..routes.len() / 4 + 1),
                DOMAINS[rng.usize(..DOMAINS.len())]
            );
        }
        if rng.u8(..8) == 0 {
            name = format!("w{}.{name}", rng.u8(..3));
        }
        if rng.u8(..10) == 0 {
            name = DOMAINS[rng.usize(..DOMAINS.len())].to_string();
        }
        if rng.u8(..10) == 0 {
            name = name.to_uppercase();
        }
        name
    };
    match protocol {
        ClientProtocol::Tls => {
            if rng.u8(..5) != 0 {
                seen.sni = Some(name(rng).into());
            }
            seen.alpn = (0..rng.usize(..3))
                .map(|_| ALPNS[rng.usize(..ALPNS.len())].into())
                .collect();
        }
        ClientProtocol::Http if rng.u8(..5) != 0 => seen.host = Some(name(rng).into()),
        _ => {}
    }
    seen
}

#[test]
fn table_agrees_with_a_linear_scan() {
    let mut rng = fastrand::Rng::with_seed(21);
    for n in [1, 10, 100, 1_000] {
        for _ in 0..3 {
            let routes = many_routes(&mut rng, n);
            let table = RouteTable::new(&routes);
            let mut answers = std::collections::BTreeMap::<Option<usize>, usize>::new();
            for _ in 0..3_000 {
                let seen = random_client(&mut rng, &routes);
                let expected = linear(&routes, &seen);
                assert_eq!(table.find(&seen), expected, "{seen:?}");
                *answers.entry(expected).or_default() += 1;
            }
            // Enough different answers to mean something.
            let none = answers.get(&None).copied().unwrap_or_default();
            assert!(n < 100 || answers.len() > n / 10, "{n} routes: {answers:?}");
            assert!(
                n < 100 || (300..2_700).contains(&none),
                "{n} routes: {answers:?}"
            );
        }
    }
}

/// `find` with 10, 1,000 and 10,000 routes (the numbers in the report of
/// issue 21), mixed as in the test above, then names only (exact and
/// wildcard, the client's name matching one in the middle):
/// `cargo test --release --lib routing::tests::find_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn find_cost() {
    fn time(table: &RouteTable, clients: &[Seen]) -> (Duration, usize) {
        let rounds = 1_000;
        let start = Instant::now();
        let mut hits = 0;
        for _ in 0..rounds {
            for seen in clients {
                hits += usize::from(std::hint::black_box(table.find(seen)).is_some());
            }
        }
        (start.elapsed() / (rounds * clients.len()) as u32, hits)
    }
    let mut rng = fastrand::Rng::with_seed(7);
    for n in [10, 1_000, 10_000] {
        let routes = many_routes(&mut rng, n);
        let clients: Vec<Seen> = (0..1_000)
            .map(|_| random_client(&mut rng, &routes))
            .collect();
        let (each, hits) = time(&RouteTable::new(&routes), &clients);
        println!("{n} mixed routes: {each:?} per find ({hits} hits)");
    }
    for n in [10, 1_000, 10_000] {
        let routes: Vec<Route> = (0..n)
            .map(|i| match i % 2 {
                0 => route(Some(&format!("h{i}.example.com")), None, None),
                _ => route(Some(&format!("*.d{i}.example.net")), None, None),
            })
            .collect();
        let clients = [
            client(
                Some(&format!("h{}.example.com", (n / 2) & !1)),
                &["h2", "http/1.1"],
            ),
            client(Some(&format!("a.b.d{}.example.net", (n / 2) | 1)), &["h2"]),
            client(Some("nowhere.example.org"), &["h2"]),
        ];
        let (each, hits) = time(&RouteTable::new(&routes), &clients);
        println!("{n} name routes: {each:?} per find ({hits} hits)");
    }
}

/// What sniffing costs per connection, on real clients' first bytes:
/// `cargo test --release --lib routing::tests::sniff_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn sniff_cost() {
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for name in [
        "client_hello/chromium",
        "client_hello/curl",
        "http_request/curl",
    ] {
        let bytes = std::fs::read(seeds.join(name)).unwrap();
        let rounds = 100_000;
        let start = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(sniff(std::hint::black_box(&bytes)));
        }
        let each = start.elapsed() / rounds;
        println!("{name} ({} bytes): {each:?} per sniff", bytes.len());
    }
}

// ---- Real clients' first bytes (fuzz/seeds/, fuzz/capture_seeds.py) ----

#[test]
fn captured_first_bytes() {
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let h2 = &["h2", "http/1.1"][..];
    let cases: [(&str, Seen); 20] = [
        (
            "client_hello/openssl-sni-alpn",
            tls(Some("api.example.com"), h2),
        ),
        (
            "client_hello/openssl-tls12",
            tls(Some("legacy.example.com"), &[]),
        ),
        ("client_hello/openssl-no-sni", tls(None, &[])),
        ("client_hello/curl", tls(Some("curl.example"), h2)),
        ("client_hello/python-ssl", tls(Some("python.example"), h2)),
        ("client_hello/wget", tls(None, &[])),
        ("client_hello/chromium", tls(Some("chromium.example"), h2)),
        (
            "client_hello/ech-outer",
            tls(Some("public.example.net"), h2),
        ),
        (
            "client_hello/firefox-like",
            tls(Some("www.mozilla.example"), h2),
        ),
        (
            "client_hello/grease",
            tls(Some("grease.example"), &["::", "h2"]),
        ),
        (
            "client_hello/three-records",
            tls(Some("split.example.org"), &["http/1.1", "h2"]),
        ),
        (
            "client_hello/huge-length",
            with(ClientProtocol::Tls, Anomaly::OversizedHello),
        ),
        (
            "client_hello/sslv2-compatible",
            with(ClientProtocol::Tls, Anomaly::Sslv2Hello),
        ),
        ("http_request/curl", http(Some("curl.example"))),
        ("http_request/wget", http(Some("::ffff:127.0.0.1"))),
        ("http_request/python-urllib", http(Some("127.0.0.1"))),
        ("http_request/ipv6-host", http(Some("2001:db8::1"))),
        (
            "http_request/no-host",
            with(ClientProtocol::Http, Anomaly::HttpWithoutHost),
        ),
        ("http_request/h2-preface", Seen::new(ClientProtocol::Http)),
        ("http_request/ssh", Seen::new(ClientProtocol::Ssh)),
    ];
    for (name, expected) in cases {
        let bytes = std::fs::read(seeds.join(name)).unwrap();
        assert_eq!(done(&bytes), expected, "{name}");
        assert_eq!(
            fed_by(&bytes, 1),
            Some(expected.clone()),
            "{name}, a byte at a time"
        );
        assert_eq!(
            fed_by(&bytes, 7),
            Some(expected),
            "{name}, 7 bytes at a time"
        );
    }
}
