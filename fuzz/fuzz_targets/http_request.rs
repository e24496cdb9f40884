//! The first-bytes sniffer on HTTP/1.x requests (seeds from real clients, and
//! anything): never panics; fed in any pieces it decides as on the whole
//! input, at the same point; given up anywhere it still answers; it never
//! claims a Host (or server name) that is not in the input.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::http_request(data));
