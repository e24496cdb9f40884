//! A listener's routes: add one (at a position, or last) and remove one.

use super::service::listen_addr;
use super::{Args, LISTENER, OpError, Param, SERVICE, bad};
use crate::Command;
use crate::config::{
    ListenAddr, Route, parse_alpn, parse_client_protocol, parse_route_host, parse_sni,
};

/// The service a route sends to.
pub(super) const TO: Param = Param::new("to", "TO", super::Arg::Service);

/// A route's conditions and position: named parameters in the web API,
/// `NAME=VALUE` words in the console (as a listener's settings are).
pub(super) const ROUTE_KEYS: &[(&str, &str)] = &[
    ("sni", "sni"),
    ("alpn", "alpn"),
    ("protocol", "protocol"),
    ("host", "host"),
    ("position", "position"),
];

/// A route of a listener, to add or to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteChange {
    /// Service of the listener.
    pub service: String,
    /// The listener's address as configured.
    pub listen: ListenAddr,
    /// The route: its conditions and the service it sends to.
    pub route: Route,
    /// Adding: where among the listener's routes, 1 first; `None`: last.
    pub position: Option<usize>,
}

impl RouteChange {
    /// Reads its parameters: the listener, the service routed to, the
    /// conditions (at least one; the model's rules check them again with the
    /// rest of the configuration).
    pub fn parse(a: &Args) -> Result<RouteChange, OpError> {
        let service = a.required(&SERVICE)?.to_string();
        let listen = listen_addr(a, &LISTENER)?;
        let to = a.required(&TO)?.to_string();
        let mut route = Route::to(to);
        let mut position = None;
        for (key, value) in &a.settings {
            let value = value.trim();
            // A form's empty field: not given.
            if value.is_empty() {
                continue;
            }
            let Some(&(name, _)) = ROUTE_KEYS.iter().find(|(k, _)| k == key) else {
                let known: Vec<&str> = ROUTE_KEYS.iter().map(|(k, _)| *k).collect();
                return Err(bad(
                    &SETTING,
                    format!("unknown condition {key:?} (expected {})", known.join(", ")),
                ));
            };
            let read = |what: Result<String, String>| {
                what.map_err(|reason| OpError::Bad {
                    name,
                    label: SETTING.label,
                    reason,
                })
            };
            match name {
                "sni" => route.sni = Some(read(parse_sni(value))?),
                "alpn" => route.alpn = Some(read(parse_alpn(value))?),
                "host" => route.host = Some(read(parse_route_host(value))?),
                "protocol" => {
                    route.protocol =
                        Some(parse_client_protocol(value).map_err(|reason| OpError::Bad {
                            name,
                            label: SETTING.label,
                            reason,
                        })?)
                }
                _ => {
                    position = Some(read(
                        value
                            .parse::<usize>()
                            .ok()
                            .filter(|p| *p >= 1)
                            .map(|p| p.to_string())
                            .ok_or_else(|| format!("bad position {value:?}: expected 1 or more")),
                    )?);
                }
            }
        }
        if route.is_unconditional() {
            return Err(bad(
                &SETTING,
                "a route needs a condition: sni=, alpn=, protocol= or host=",
            ));
        }
        Ok(RouteChange {
            service,
            listen,
            route,
            position: position.and_then(|p| p.parse().ok()),
        })
    }

    pub(super) fn add(self) -> (Command, String) {
        let RouteChange {
            service,
            listen,
            route,
            position,
        } = self;
        let text = format!(
            "OK listener {listen} of service {service} routes {} to service {}",
            route.conditions(),
            route.service
        );
        (
            Command::AddRoute {
                service,
                listen,
                route,
                position: position.map(|p| p - 1),
            },
            text,
        )
    }

    pub(super) fn remove(self) -> (Command, String) {
        let RouteChange {
            service,
            listen,
            route,
            ..
        } = self;
        let text = format!(
            "OK listener {listen} of service {service} no longer routes {} to service {}",
            route.conditions(),
            route.service
        );
        (
            Command::RemoveRoute {
                service,
                listen,
                route,
            },
            text,
        )
    }
}

/// An unknown or bad condition.
const SETTING: Param = Param::new("condition", "CONDITION", super::Arg::Value);
