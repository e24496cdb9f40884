//! The data path: listeners accept clients (a listener with routes first reads
//! what the client sends to choose its service), each connection picks a host
//! of its service's enabled group, connects (failing over to other hosts), then copies;
//! a connection idle for a second waits in its worker's parking lot, out of the
//! runtime, until a byte comes. UDP services have their own flow (`udp.rs`).

mod acme_http;
mod admission;
mod connection;
mod copy;
mod idle;
mod inspect;
mod listener;
pub(crate) mod moved;
mod parking;
mod passive;
pub mod proxy_protocol;
mod quic;
mod retry_empty;
mod terminate;
mod tls13;
mod udp;
pub(crate) mod udp_moved;
mod udp_sources;
mod udp_table;
mod workers;

pub(crate) use admission::{AcceptProxy, hold};
pub(crate) use connection::ConnectionRecord;
pub(crate) use idle::sweep_idle;
pub(crate) use listener::{
    ListenerSettings, ListenerTask, Terminating, bind, check_free, clients_speak_first,
    in_use_by_another, ipv6_unavailable, set_inherited_options,
};
pub(crate) use udp::UdpListenerTask;
pub(crate) use workers::WorkerPool;

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use crate::events::Events;
use crate::snapshot::Snapshot;
use crate::state::ConnectionRegistry;

/// What every connection task shares: built once by the controller.
#[derive(Debug)]
pub(crate) struct DataPlane {
    /// The running snapshot. Written only by the controller; read lock-free once
    /// per new connection.
    pub snapshots: Arc<ArcSwap<Snapshot>>,
    /// Host transitions seen by connections are reported here.
    pub events: Events,
    /// Open connections.
    pub registry: Arc<ConnectionRegistry>,
    /// Where finished connections are sent for the access log, when one is kept.
    /// A bounded channel: a slow log drops records (counted) rather than slowing
    /// connections.
    pub access_log: Option<mpsc::Sender<ConnectionRecord>>,
    /// Whether a control socket may look connections up by txlb's address on the
    /// host side (costs a `getsockname` per connection, so only when needed).
    pub index_host_side: bool,
    /// The ACME challenges being answered (`acmeHttp` listeners read them).
    pub challenges: Arc<crate::tls::acme::Challenges>,
}
