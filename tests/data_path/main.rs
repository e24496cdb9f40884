//! The data path end to end: proxying, clientFirst, PROXY protocol, limits and access
//! lists, parked connections, faults, schedulers, shared ports, retries,
//! backup groups, inherited sockets, DNS-named hosts, TLS termination and
//! the soak test. One test binary (each file a module) so the crate is
//! linked once.

#[path = "../common/mod.rs"]
mod common;

mod acme;
mod agents;
mod all_bad;
mod backup_groups;
mod check_protocols;
mod checks;
mod client_first;
mod data_path;
mod dns;
mod ejection;
mod faults;
mod inherited;
mod limits;
mod parking;
mod proxy_protocol;
mod retry_empty;
mod routing;
mod routing_abuse;
mod schedulers;
mod schedulers_more;
mod shared_port;
mod soak;
mod splice;
mod tls;
mod tls_alerts;
mod tls_origination;
mod udp;
mod udp_list;
mod udp_more;
