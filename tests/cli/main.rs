//! The binary and what ships with it: the command line, systemd's protocols,
//! the package, the control socket, licenses, the examples, the embedding
//! handle and fleet mode. One test binary (each file a module) so the crate is
//! linked once.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod control_socket;
mod examples;
mod fleet;
mod handle;
mod licenses;
mod packaging;
mod systemd;
mod upgrade;
