//! Building a configuration in code. The builders assemble the same model a
//! file gives and [`ConfigBuilder::build`] checks it by the very rules a file is
//! checked by ([`Config::check`]); the error says what and where in words.
//!
//! ```
//! use txlb::config::{Config, GroupBuilder, ServiceBuilder};
//! use txlb::scheduler::SchedulerKind;
//!
//! let config = Config::builder()
//!     .service(
//!         ServiceBuilder::new("web")
//!             .listen("127.0.0.1:0")
//!             .group(
//!                 GroupBuilder::new("main", SchedulerKind::LeastConns)
//!                     .host("a", "127.0.0.1:8001")
//!                     .weighted_host("b", "127.0.0.1:8002", 3),
//!             )
//!             .group(GroupBuilder::new("spare", SchedulerKind::RoundRobin).host("c", "10.0.0.3:80"))
//!             .enable("main"),
//!     )
//!     .build()?;
//! assert_eq!(config.services[0].enabled_group, "main");
//!
//! // A listener may send clients to other services by what they send first;
//! // a service may have no listener (reached by routes only), and no group
//! // when all its listeners route (clients no route matches are closed).
//! use txlb::config::{ClientProtocol, RouteBuilder};
//! let edge = Config::builder()
//!     .service(ServiceBuilder::new("edge").listen_with_routes(
//!         "127.0.0.1:0",
//!         [
//!             RouteBuilder::to("api").sni("API.example.com"),
//!             RouteBuilder::to("bastion").protocol(ClientProtocol::Ssh),
//!         ],
//!     ))
//!     .service(ServiceBuilder::new("api").group(
//!         GroupBuilder::new("g", SchedulerKind::RoundRobin).host("a", "10.0.0.1:443"),
//!     ))
//!     .service(ServiceBuilder::new("bastion").group(
//!         GroupBuilder::new("g", SchedulerKind::RoundRobin).host("b", "10.0.0.2:22"),
//!     ))
//!     .build()?;
//! let routes = &edge.services[0].listeners[0].routes;
//! assert_eq!(routes[0].sni.as_deref(), Some("api.example.com"));
//! assert_eq!(edge.services[0].enabled_group, "");
//!
//! // A mistake is the error a file would give.
//! let error = Config::builder()
//!     .service(ServiceBuilder::new("web").listen("127.0.0.1:0").enable("nope"))
//!     .build()
//!     .unwrap_err();
//! assert!(error.message().contains("group"), "{error}");
//! # Ok::<(), txlb::config::ConfigError>(())
//! ```

use std::time::Duration;

use super::error::Location;
use super::{
    ClientProtocol, Config, ConfigError, GroupConfig, GroupOptions, HostConfig, HostOptions,
    Listener, Route, ServiceConfig, ServiceOptions, parse_alpn, parse_host_address,
    parse_listen_addr, parse_route_host, parse_sni,
};
use crate::config::SchedulerKind;

/// The file builder errors are located in (always at 1:1: their message says
/// where in words).
pub const BUILDER_SOURCE: &str = "<builder>";

impl Config {
    /// Starts a configuration built in code: see [`ConfigBuilder`].
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }
}

/// A whole configuration under construction: services, then [`ConfigBuilder::build`].
#[derive(Debug, Default)]
pub struct ConfigBuilder {
    services: Vec<ServiceBuilder>,
}

impl ConfigBuilder {
    /// Adds a service.
    pub fn service(mut self, service: ServiceBuilder) -> Self {
        self.services.push(service);
        self
    }

    /// The configuration, checked as a file would be: unique names, one
    /// enabled group per service with groups, hosts with ports, routes to
    /// services that exist, valid settings. The admin plane, managers and logging keep their
    /// defaults; set them on the result.
    pub fn build(self) -> Result<Config, ConfigError> {
        let mut services = Vec::new();
        for service in self.services {
            services.push(service.finish()?);
        }
        if services.is_empty() {
            // As a file with no service: the balancer would serve nothing.
            return Err(builder_error(
                "no service defined (expected at least one service)".to_string(),
            ));
        }
        let config = Config::new(services);
        config
            .check()
            .map_err(|error| builder_error(error.to_string()))?;
        Ok(config)
    }
}

/// A service under construction.
#[derive(Debug)]
pub struct ServiceBuilder {
    service: ServiceConfig,
    /// The first bad value given, reported by [`ConfigBuilder::build`].
    error: Option<String>,
}

impl ServiceBuilder {
    /// A service with no listener and no group yet; its first group is the
    /// enabled one unless [`ServiceBuilder::enable`] says otherwise. Left
    /// without listeners, it is reached only by other services' routes; left
    /// without groups, its listeners must all route.
    pub fn new(name: impl Into<String>) -> Self {
        ServiceBuilder {
            service: ServiceConfig {
                name: name.into(),
                listeners: Vec::new(),
                groups: Vec::new(),
                enabled_group: String::new(),
                connect_timeout: super::DEFAULT_CONNECT_TIMEOUT,
                options: ServiceOptions::default(),
            },
            error: None,
        }
    }

    /// Listens on `addr` (`HOST:PORT`, `*:PORT`, port 0 for any free port).
    pub fn listen(mut self, addr: &str) -> Self {
        match parse_listen_addr(addr) {
            Ok(listen) => self.service.listeners.push(listen.into()),
            Err(why) => self.fail(format!(
                "service {:?}: listen {addr:?}: {why}",
                self.service.name
            )),
        }
        self
    }

    /// Listens on `addr` (as [`ServiceBuilder::listen`]) with routes sending
    /// the clients they match to other services, tried in order. The services
    /// they name must be in the configuration built.
    pub fn listen_with_routes(
        mut self,
        addr: &str,
        routes: impl IntoIterator<Item = RouteBuilder>,
    ) -> Self {
        let mut listener = match parse_listen_addr(addr) {
            Ok(listen) => Listener::new(listen),
            Err(why) => {
                self.fail(format!(
                    "service {:?}: listen {addr:?}: {why}",
                    self.service.name
                ));
                return self;
            }
        };
        for route in routes {
            match route.error {
                Some(why) => {
                    self.fail(format!(
                        "service {:?}: listen {addr:?}: {why}",
                        self.service.name
                    ));
                    return self;
                }
                None => listener.routes.push(route.route),
            }
        }
        self.service.listeners.push(listener);
        self
    }

    /// Adds a group.
    pub fn group(mut self, group: GroupBuilder) -> Self {
        match group.error {
            Some(why) => self.fail(format!("service {:?}: {why}", self.service.name)),
            None => self.service.groups.push(group.group),
        }
        self
    }

    /// Makes `group` the enabled one.
    pub fn enable(mut self, group: impl Into<String>) -> Self {
        self.service.enabled_group = group.into();
        self
    }

    /// How long a host may take to accept a connection (default 3 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.service.connect_timeout = timeout;
        self
    }

    /// Sets timeouts, limits, access lists or PROXY acceptance.
    pub fn options(mut self, set: impl FnOnce(&mut ServiceOptions)) -> Self {
        set(&mut self.service.options);
        self
    }

    fn fail(&mut self, why: String) {
        self.error.get_or_insert(why);
    }

    fn finish(mut self) -> Result<ServiceConfig, ConfigError> {
        if let Some(message) = self.error {
            return Err(builder_error(message));
        }
        if self.service.enabled_group.is_empty()
            && let Some(first) = self.service.groups.first()
        {
            self.service.enabled_group = first.name.clone();
        }
        Ok(self.service)
    }
}

/// A route under construction: the service it sends clients to, and one or
/// more conditions (all must match). Values are read as a file's are
/// (`sni` and `host` lower-cased).
#[derive(Debug)]
pub struct RouteBuilder {
    route: Route,
    error: Option<String>,
}

impl RouteBuilder {
    /// A route to `service`, with no condition yet.
    pub fn to(service: impl Into<String>) -> Self {
        RouteBuilder {
            route: Route::to(service),
            error: None,
        }
    }

    /// Matches the TLS server name: exact, `*.SUFFIX` or `*`.
    pub fn sni(mut self, sni: &str) -> Self {
        match parse_sni(sni) {
            Ok(sni) => self.route.sni = Some(sni),
            Err(why) => self.fail(format!("bad sni {sni:?}: {why}")),
        }
        self
    }

    /// Matches a client offering this ALPN protocol (`h2`, `http/1.1`, …).
    pub fn alpn(mut self, alpn: &str) -> Self {
        match parse_alpn(alpn) {
            Ok(alpn) => self.route.alpn = Some(alpn),
            Err(why) => self.fail(format!("bad alpn {alpn:?}: {why}")),
        }
        self
    }

    /// Matches what the client speaks.
    pub fn protocol(mut self, protocol: ClientProtocol) -> Self {
        self.route.protocol = Some(protocol);
        self
    }

    /// Matches the HTTP/1.x `Host` (with `protocol(ClientProtocol::Http)`).
    pub fn host(mut self, host: &str) -> Self {
        match parse_route_host(host) {
            Ok(host) => self.route.host = Some(host),
            Err(why) => self.fail(format!("bad host {host:?}: {why}")),
        }
        self
    }

    fn fail(&mut self, why: String) {
        let service = &self.route.service;
        self.error
            .get_or_insert_with(|| format!("route to {service:?}: {why}"));
    }
}

/// A group of hosts under construction.
#[derive(Debug)]
pub struct GroupBuilder {
    group: GroupConfig,
    error: Option<String>,
}

impl GroupBuilder {
    /// A group with no hosts yet, picking with `scheduler`.
    pub fn new(name: impl Into<String>, scheduler: SchedulerKind) -> Self {
        GroupBuilder {
            group: GroupConfig::new(name, scheduler, Vec::new()),
            error: None,
        }
    }

    /// Adds a host of weight 1 at `addr` (`NAME_OR_IP:PORT`; names are
    /// resolved by the engine).
    pub fn host(self, name: impl Into<String>, addr: &str) -> Self {
        self.weighted_host(name, addr, 1)
    }

    /// Adds a host with a weight (for the weighted schedulers).
    pub fn weighted_host(mut self, name: impl Into<String>, addr: &str, weight: u32) -> Self {
        let name = name.into();
        match parse_host_address(addr) {
            Ok(address) => self.group.hosts.push(HostConfig {
                name,
                address,
                weight,
                options: HostOptions::default(),
            }),
            Err(why) => {
                let why = format!(
                    "group {:?}: host {name:?}: {addr:?}: {why}",
                    self.group.name
                );
                self.error.get_or_insert(why);
            }
        }
        self
    }

    /// Sets slow start, PROXY protocol towards hosts, backup, replays.
    pub fn options(mut self, set: impl FnOnce(&mut GroupOptions)) -> Self {
        set(&mut self.group.options);
        self
    }
}

fn builder_error(message: String) -> ConfigError {
    ConfigError::Invalid {
        location: Location {
            file: BUILDER_SOURCE.into(),
            line: 1,
            column: 1,
        },
        message,
    }
}
