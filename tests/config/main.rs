//! Configuration files: reading and its hardening, the JSON schema, write-back
//! and reloads of files. One test binary (each file a module) so the crate is
//! linked once. (`tests/large_config.rs` stays apart: it counts allocations
//! with its own global allocator.)

#[path = "../common/mod.rs"]
mod common;

mod config_hardening;
mod reload_files;
mod routes;
mod schema;
mod writeback;
