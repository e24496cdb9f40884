//! The legacy web API's parameter parsing on arbitrary query strings / form
//! bodies: the decoding every call goes through, then each value through the
//! typed parsers the handlers use (host and listen addresses, scheduler,
//! weight, access, seconds, networks). Never panics; decoded pairs survive
//! re-encoding; addresses, schedulers and durations that parse print back to
//! text that parses to the same value.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::legacy_params(data));
