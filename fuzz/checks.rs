//! The properties each fuzz target checks, as plain functions: the targets in
//! `fuzz_targets/` call them on libFuzzer's inputs, and `src/fuzzing/replay.rs`
//! calls them on the seeds and on every input a fuzzer once crashed on
//! (`tests/fixtures/fuzz/TARGET/`), so a normal `cargo test` replays them.
#![allow(dead_code)]

use std::str::FromStr;

use txlb::config::{
    Config, parse_access, parse_host_address, parse_listen_addr, parse_net, parse_seconds,
    parse_weight,
};
use txlb::fuzzing::decode_params;
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
