//! The SSH console: the OpenSSH client against it, its commands and scripts,
//! and its hardening. One test binary (each file a module) so the crate is
//! linked once.

#[path = "../common/mod.rs"]
mod common;

mod ssh_cli;
mod ssh_console;
mod ssh_hardening;
