//! Routing by what a client says first: its first bytes told apart (TLS with
//! SNI and ALPN, HTTP/1.x with its `Host`, SSH, anything else) and a listener's
//! routes compiled for a look-up that stays flat with thousands of them.
//!
//! Both halves are pure and synchronous. The data path reads a client's first
//! bytes without consuming them, gives everything received so far to a
//! [`Sniffer`] until it answers [`Sniffed::Done`] (or calls [`give_up`] at the
//! listener's `inspectBytes`, its `inspectTimeout`, or the client's close), then
//! asks the listener's [`RouteTable`] which route the [`Seen`] matches. A UDP
//! listener with routes gives a client's first datagrams to
//! [`sniff_initials`] instead: the ClientHello of QUIC Initial packets.

mod http;
mod quic;
mod seen;
mod table;
mod tls;

#[cfg(test)]
mod tests;

pub use seen::{Anomaly, GiveUp, Seen, Sniffed, Sniffer, give_up};
// The data path keeps one `Sniffer` per client; a one-shot verdict is for the
// fuzz targets and tests.
pub use quic::sniff_initials;
#[cfg(any(test, feature = "fuzzing"))]
pub use quic::{crypto_frame, protect_initial};
#[cfg(any(test, feature = "fuzzing"))]
pub use seen::sniff;
pub use table::RouteTable;
