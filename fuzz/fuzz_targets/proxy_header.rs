//! The PROXY protocol parser on arbitrary bytes: never panics, never claims more
//! bytes than it was given, and is consistent with itself: a header it accepts
//! parses the same with anything appended, and every prefix of it asks for more
//! bytes or fails, never yields another header.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::proxy_header(data));
