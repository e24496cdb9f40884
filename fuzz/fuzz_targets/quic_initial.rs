//! The QUIC Initial reader (UDP listeners with routes): never panics on a
//! datagram; on a handshake stream in CRYPTO frames of real Initials it
//! decides, claims only names in the input, and agrees with the TCP sniffer.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::quic_initial(data));
