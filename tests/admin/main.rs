//! The web admin plane: the JSON API, the legacy API, the page in a browser,
//! the command line against it, its guards, hardening and status. One test
//! binary (each file a module) so the crate is linked once.

#[path = "../common/mod.rs"]
mod common;

mod admin_api;
mod admin_browser;
mod admin_cli;
mod admin_guards;
mod admin_hardening;
mod admin_legacy;
mod admin_status;
