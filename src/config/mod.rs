//! Configuration: XML and TOML readers producing one validated model.
//!
//! - `model`: the validated [`Config`] every reader produces.
//! - `xml`, `toml`: syntax and structure of each format → an unvalidated tree.
//! - `parse`: the value parsers, shared by the readers, the builder and the
//!   admin API ([`parse_listen_addr`], [`parse_host_address`], a route's
//!   [`parse_sni`], [`parse_alpn`], [`parse_route_host`], …).
//! - `read`: a raw tree → the model, keeping where each part was written.
//! - `check`: the rules of the model ([`Config::check`] and the checks of one
//!   service, group, host or user it is made of), the same for a file, a
//!   builder and every command.
//! - `builder`: [`ConfigBuilder`], a configuration built in code (routes with
//!   [`RouteBuilder`]).
//! - `write`: the model back to XML or TOML.
//! - `changes`: what a new configuration adds, removes and changes ([`Changes`]),
//!   for the reload's log line.
//! - [`writeback`]: the configCheck manager and `saveConfig`: the running
//!   configuration back into its file, keeping the operator's comments and layout.
//! - `error`: [`ConfigError`], always with `FILE:LINE:COL` for content problems.
//! - `file`: [`read_text`], the one way a configuration file is read (a regular
//!   file of bounded size, never blocking on a FIFO).
//! - `names`: the one rule for service, group, host and user names and for
//!   passwords ([`check_name`], [`check_password`]), shared by the files and the
//!   controller's commands.
//! - `depth`: the nesting limit ([`MAX_DEPTH`]) both readers enforce before
//!   anything recursive sees the text.

mod builder;
mod changes;
mod check;
mod depth;
mod error;
mod file;
mod health_check;
mod host_list;
mod model;
mod names;
mod options;
mod parse;
mod raw;
mod read;
mod scheduler_kind;
mod toml;
mod write;
pub mod writeback;
mod xml;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use builder::{BUILDER_SOURCE, ConfigBuilder, GroupBuilder, RouteBuilder, ServiceBuilder};
pub use changes::{Changes, Counts};
pub use check::CheckError;
pub(crate) use check::Rule;
pub use depth::MAX_DEPTH;
pub use error::{ConfigError, Location, STRING_SOURCE};
pub use file::{MAX_FILE_BYTES, read_text};
pub use health_check::{
    DEFAULT_CHECK_INTERVAL, DEFAULT_CHECK_TIMEOUT, DEFAULT_FALL, DEFAULT_POSTGRES_USER,
    DEFAULT_RISE, MAX_REGEX_SIZE, MAX_RISE_FALL,
};
pub use model::*;
pub use names::{MAX_NAME_LEN, MAX_PASSWORD_LEN, NameKind, check_name, check_password};
pub use options::{
    AcmeChallenge, AcmeConfig, AcmeEmail, AcmeUrl, AllBad, ClientAuth, DEFAULT_ACME_RENEW_BEFORE,
    DEFAULT_AGENT_INTERVAL, DEFAULT_AGENT_TIMEOUT, DEFAULT_EJECT_TIME, DEFAULT_FIN_TIMEOUT,
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_INSPECT_TIMEOUT,
    DEFAULT_MAX_EJECT_PERCENT, DEFAULT_MAX_SESSIONS, DEFAULT_MAX_TTL, DEFAULT_MIN_TTL,
    DEFAULT_QUEUE, DEFAULT_QUEUE_TIMEOUT, DEFAULT_RETRY_EMPTY_BYTES, DEFAULT_RETRY_EMPTY_TIMEOUT,
    DEFAULT_SESSION_TIMEOUT, DNS_PORT, MAX_EJECT_TIME, MAX_INSPECT_BYTES, MAX_SESSIONS,
    MAX_TLS_ALPN, MarkedDown, NamedFile, Percent, ProxyVersion, TlsVerify, TlsVersion, Transport,
    parse_nameserver, parse_net,
};
pub use parse::{
    MAX_ALPN_LEN, MAX_SECONDS, parse_access, parse_alpn, parse_bool, parse_client_protocol,
    parse_host_address, parse_listen_addr, parse_route_host, parse_seconds, parse_sni,
    parse_weight,
};
pub use read::DEFAULT_SCHEDULER;
pub use scheduler_kind::{SchedulerKind, UnknownScheduler};
pub(crate) use write::seconds;
pub use write::{to_toml, to_xml};

use error::Source;
pub(crate) use options::RawValue;

/// Which reader a file goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Xml,
    Toml,
}

impl Format {
    /// TOML when the name ends in `.toml`, XML otherwise.
    pub(crate) fn of(path: &Path) -> Format {
        match path.extension() {
            Some(ext) if ext.eq_ignore_ascii_case("toml") => Format::Toml,
            _ => Format::Xml,
        }
    }
}

fn load(src: &Source<'_>, format: Format, base_dir: Option<&Path>) -> Result<Config, ConfigError> {
    let raw = match format {
        Format::Xml => xml::read(src)?,
        Format::Toml => toml::read(src)?,
    };
    read::read(raw, src, base_dir)
}

impl Config {
    /// Loads a configuration file: TOML when the name ends in `.toml`, XML
    /// otherwise. Relative log and control-socket paths are resolved against the
    /// file's directory; `source` is set to `path`.
    pub fn from_path(path: &Path) -> Result<Config, ConfigError> {
        let text = read_text(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_text(path, &text)
    }

    /// Loads `text` as the content of the file `path`, exactly as
    /// [`Config::from_path`] would (format from the name, paths resolved against
    /// its directory, errors located in it), without reading the file. Write-back
    /// needs the very text the running configuration came from.
    pub fn from_text(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let src = Source::new(path.display().to_string(), text);
        let base_dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        let mut config = load(&src, Format::of(path), base_dir)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Loads txLoadBalancer XML from a string; errors are located in `<string>`
    /// and paths are kept as written.
    pub fn from_xml_str(text: &str) -> Result<Config, ConfigError> {
        load(&Source::new(STRING_SOURCE, text), Format::Xml, None)
    }

    /// Loads TOML from a string; errors are located in `<string>` and paths are
    /// kept as written.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        load(&Source::new(STRING_SOURCE, text), Format::Toml, None)
    }

    /// This configuration as txLoadBalancer XML, loadable again.
    pub fn to_xml(&self) -> String {
        write::to_xml(self)
    }

    /// This configuration as TOML, loadable again.
    pub fn to_toml(&self) -> String {
        write::to_toml(self)
    }
}
