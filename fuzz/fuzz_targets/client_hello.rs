//! The first-bytes sniffer on TLS ClientHellos (seeds from real clients, and
//! anything): never panics; fed in any pieces it decides as on the whole
//! input, at the same point; given up anywhere it still answers; it never
//! claims a server name, ALPN protocol or Host that is not in the input; and a
//! hello it parsed decides the same in records of other sizes.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::client_hello(data));
