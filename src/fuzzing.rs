//! Entry points of internal parsers for the fuzz targets in `fuzz/` (cargo
//! feature `fuzzing`). Not part of the stable API: they may change with any
//! release. The PROXY protocol parser is public anyway, in
//! [`crate::proxy_protocol`].

pub use crate::admin::params::decode_params;
/// The first-bytes sniffer of listeners with routes (TLS ClientHello, HTTP
/// request, SSH).
pub use crate::routing::{Anomaly, GiveUp, Seen, Sniffed, Sniffer, give_up, sniff};
/// The QUIC Initial reader of UDP listeners with routes, and client
/// Initials made for it.
pub use crate::routing::{crypto_frame, protect_initial, sniff_initials};

#[cfg(test)]
mod replay;
