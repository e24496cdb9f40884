//! Routing by what a client says first: its first bytes told apart (TLS with
//! SNI and ALPN, HTTP/1.x with its `Host`, SSH, anything else) and a listener's
//! routes compiled for a look-up that stays flat with thousands of them.
//!
//! Both halves are pure and synchronous. The data path reads a client's first
//! bytes without consuming them, gives everything received so far to a
//! [`Sniffer`] until it answers [`Sniffed::Done`] (or calls [`give_up`] at the
//! listener's `inspectBytes`, its `inspectTimeout`, or the client's close), then
//! asks the listener's [`RouteTable`] which route the [`Seen`] matches.

mod http;
mod seen;
mod table;
mod tls;

#[cfg(test)]
mod tests;

pub use seen::{Anomaly, GiveUp, Seen, Sniffed, Sniffer, give_up, sniff};
pub use table::RouteTable;
