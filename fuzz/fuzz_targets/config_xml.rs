//! The XML configuration reader on arbitrary text: never panics, and a
//! configuration it accepts is written back (as XML and as TOML) to text that
//! loads again into the same configuration.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::config_xml(data));
