//! What reading a new QUIC client's ClientHello costs a UDP listener with
//! routes (`routing/quic.rs`): deriving the initial keys from the client's
//! DCID, removing header protection, decrypting a 1,200-byte Initial and
//! parsing the hello; and what a garbage datagram costs (the flood case).
//!
//! Informs where the read runs: on the listener's own task, inline with its
//! datagrams (no hand-off to another thread), as long as a real Initial costs
//! a few microseconds and garbage less; a flood of Initials is bounded by
//! `datagramRate` per source and `maxSessions` overall. Measured (release, a
//! shared 2-core machine at load 5): one Initial 7.9 µs, a hello over two
//! datagrams 10.5 µs, an Initial whose tag fails 5.3 µs, a datagram that is
//! no Initial 28 ns. So one
//! listener's task reads about 100,000 new QUIC clients a second: spoofed
//! Initials from many addresses can take that task (not the TCP workers).
//!
//! Run: `cargo bench --bench quic_initial --no-default-features --features fuzzing`.

// The reader's entry points are the fuzzing ones: without the feature this
// bench only says so (so `cargo test --bench '*'` builds it either way).
#[cfg(feature = "fuzzing")]
mod with_fuzzing {
    use std::hint::black_box;

    use criterion::{Criterion, criterion_group};
    use txlb::fuzzing::{crypto_frame, protect_initial, sniff_initials};

    /// A ClientHello of a real client (Chromium's, from the fuzz seeds).
    const HELLO: &[u8] = include_bytes!("../fuzz/seeds/quic_initial/chromium-handshake");

    fn initials(c: &mut Criterion) {
        let dcid = [0x5a; 8];
        let one = protect_initial(false, &dcid, 0, &crypto_frame(0, HELLO));
        let (a, b) = HELLO.split_at(HELLO.len() / 2);
        let two = [
            protect_initial(false, &dcid, 0, &crypto_frame(0, a)),
            protect_initial(false, &dcid, 1, &crypto_frame(a.len() as u64, b)),
        ];
        let mut garbage = one.clone();
        let last = garbage.len() - 1;
        garbage[last] ^= 1; // the tag fails: decrypted for nothing
        let not_quic = vec![0x12u8; 1200];
        let mut group = c.benchmark_group("quic_initial");
        group.bench_function("one_datagram", |bench| {
            bench.iter(|| sniff_initials(black_box(&[&one]), false))
        });
        group.bench_function("two_datagrams", |bench| {
            bench.iter(|| sniff_initials(black_box(&two), false))
        });
        group.bench_function("bad_tag", |bench| {
            bench.iter(|| sniff_initials(black_box(&[&garbage]), false))
        });
        group.bench_function("not_quic", |bench| {
            bench.iter(|| sniff_initials(black_box(&[&not_quic]), false))
        });
        group.finish();
    }

    criterion_group!(benches, initials);
}

#[cfg(feature = "fuzzing")]
criterion::criterion_main!(with_fuzzing::benches);

#[cfg(not(feature = "fuzzing"))]
fn main() {
    eprintln!("quic_initial: run with --features fuzzing (the QUIC reader's entry points)");
}
