//! Host operations: add, remove, admin-down and up, retry, drain.

use std::time::Duration;

use super::{
    ADDRESS, Answer, Args, DEADLINE, GROUP, HOST, NAME, OpError, Param, SERVICE, WEIGHT, bad,
};
use crate::BalancerHandle;
use crate::config::{HostConfig, parse_host_address, parse_seconds, parse_weight};
use crate::control::Command;

/// A host of a group, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRef {
    /// Service name.
    pub service: String,
    /// Group name.
    pub group: String,
    /// Host name.
    pub host: String,
}

impl HostRef {
    /// The service, the group and the host (the operation's third parameter,
    /// whatever the web API calls it).
    pub(super) fn parse(a: &Args, host: &Param) -> Result<HostRef, OpError> {
        Ok(HostRef {
            service: a.required(&SERVICE)?.into(),
            group: a.required(&GROUP)?.into(),
            host: a.required(host)?.into(),
        })
    }

    pub(super) fn remove(self) -> (Command, String) {
        let HostRef {
            service,
            group,
            host,
        } = self;
        let text = format!("OK host {host} removed from group {group} of service {service}");
        let command = Command::RemoveHost {
            service,
            group,
            host,
        };
        (command, text)
    }

    pub(super) fn admin_down(self, down: bool) -> (Command, String) {
        let HostRef {
            service,
            group,
            host,
        } = self;
        let text = format!(
            "OK host {host} is {}",
            if down { "admin-down" } else { "admin-up" }
        );
        let command = Command::SetAdminDown {
            service,
            group,
            host,
            down,
        };
        (command, text)
    }

    pub(super) async fn retry(self, h: &BalancerHandle) -> Result<Answer, OpError> {
        let HostRef {
            service,
            group,
            host,
        } = &self;
        let answered = h.retry_host(service, group, host).await?;
        let text = if answered {
            format!("OK host {host} answered and is in rotation")
        } else {
            let reason = h
                .stats()
                .host(service, group, host)
                .and_then(|e| e.stats.bad.clone())
                .map(|b| b.reason)
                .unwrap_or_default();
            format!("OK host {host} did not answer and stays bad: {reason}")
        };
        Ok(Answer {
            text,
            answered: Some(answered),
        })
    }
}

/// Add a host to a group.
#[derive(Debug, Clone, PartialEq)]
pub struct AddHost {
    /// Service name.
    pub service: String,
    /// Group name.
    pub group: String,
    /// The new host.
    pub host: HostConfig,
}

impl AddHost {
    /// Reads its parameters.
    pub fn parse(a: &Args) -> Result<AddHost, OpError> {
        Ok(AddHost {
            service: a.required(&SERVICE)?.into(),
            group: a.required(&GROUP)?.into(),
            host: new_host(a)?,
        })
    }

    pub(super) fn change(self) -> (Command, String) {
        let AddHost {
            service,
            group,
            host,
        } = self;
        let text = format!(
            "OK host {} ({}, weight {}) added to group {group} of service {service}",
            host.name, host.address, host.weight
        );
        let command = Command::AddHost {
            service,
            group,
            host,
        };
        (command, text)
    }
}

/// A new host from `name`, `ip` and `weight` (default 1): `addHost`'s, a new
/// service's first host, a host in a JSON body.
pub fn new_host(a: &Args) -> Result<HostConfig, OpError> {
    let name = a.required(&NAME)?;
    let address = a.required(&ADDRESS)?;
    Ok(HostConfig {
        name: name.into(),
        address: parse_host_address(address).map_err(|r| bad(&ADDRESS, r))?,
        weight: a.parsed(&WEIGHT, parse_weight)?.unwrap_or(1),
        options: Default::default(),
    })
}

/// Drain a host: no new connections, and those still open after the deadline
/// are closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    /// The host.
    pub host: HostRef,
    /// When to close what is still open; `None`: never.
    pub deadline: Option<Duration>,
}

impl Drain {
    /// The host and the optional deadline in seconds.
    pub fn parse(a: &Args) -> Result<Drain, OpError> {
        Ok(Drain {
            host: HostRef::parse(a, &HOST)?,
            deadline: a.parsed(&DEADLINE, parse_seconds)?,
        })
    }

    pub(super) async fn run(self, h: &BalancerHandle) -> Result<String, OpError> {
        let HostRef {
            service,
            group,
            host,
        } = &self.host;
        h.drain_host(service, group, host, self.deadline).await?;
        let open = h
            .stats()
            .host(service, group, host)
            .map_or(0, |e| e.stats.open);
        Ok(match self.deadline {
            None => format!("OK host {host} draining ({open} open)"),
            Some(d) => format!(
                "OK host {host} draining ({open} open), the rest closed after {} s",
                d.as_secs_f64()
            ),
        })
    }
}
