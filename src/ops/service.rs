//! Service operations: add and remove services, and their listeners.

use super::{
    Args, LISTEN, LISTENER, NAME, NEW_GROUP, NEW_SERVICE, OpError, Param, SERVICE, SERVICE_LISTEN,
    bad,
};
use crate::BalancerHandle;
use crate::config::{
    DEFAULT_CONNECT_TIMEOUT, GroupConfig, HostConfig, ListenAddr, ListenOptions, Listener,
    RawValue, ServiceConfig, parse_listen_addr,
};
use crate::control::Command;
use crate::scheduler::SchedulerKind;

/// The group a new service gets when none is named.
pub const NEW_SERVICE_GROUP: &str = "main";

/// A listen address read from `param`.
pub(super) fn listen_addr(a: &Args, param: &Param) -> Result<ListenAddr, OpError> {
    parse_listen_addr(a.required(param)?).map_err(|r| bad(param, r))
}

/// The address a listener is bound to, or as configured when it is not found.
fn bound(h: &BalancerHandle, service: &str, listen: &ListenAddr) -> String {
    h.local_addr(service, Some(listen))
        .map_or_else(|| listen.to_string(), |a| a.to_string())
}

/// Add a service with one group, enabled.
#[derive(Debug, Clone, PartialEq)]
pub struct AddService {
    /// Service name.
    pub name: String,
    /// Its listeners (at least one).
    pub listeners: Vec<Listener>,
    /// Its group's name.
    pub group: String,
    /// Its group's scheduler.
    pub scheduler: SchedulerKind,
    /// Its group's hosts.
    pub hosts: Vec<HostConfig>,
}

impl AddService {
    /// Reads its parameters.
    pub fn parse(a: &Args) -> Result<AddService, OpError> {
        let name = a.required(&NEW_SERVICE)?.to_string();
        let listen = listen_addr(a, &SERVICE_LISTEN)?;
        let group = a.get(&NEW_GROUP).unwrap_or(NEW_SERVICE_GROUP).to_string();
        let scheduler = super::group::scheduler(a, true)?;
        let hosts = match a.get(&NAME) {
            Some(_) => vec![super::host::new_host(a)?],
            None => Vec::new(),
        };
        Ok(AddService {
            name,
            listeners: vec![Listener::new(listen)],
            group,
            scheduler,
            hosts,
        })
    }

    /// The service as the configuration holds it: every setting at its default.
    pub fn service_config(&self) -> ServiceConfig {
        ServiceConfig {
            name: self.name.clone(),
            listeners: self.listeners.clone(),
            groups: vec![GroupConfig::new(
                self.group.clone(),
                self.scheduler,
                self.hosts.clone(),
            )],
            enabled_group: self.group.clone(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            options: Default::default(),
        }
    }

    pub(super) async fn run(self, h: &BalancerHandle) -> Result<String, OpError> {
        h.apply(Command::AddService(Box::new(self.service_config())))
            .await?;
        let listening = self
            .listeners
            .first()
            .map(|l| bound(h, &self.name, &l.addr))
            .unwrap_or_default();
        Ok(format!(
            "OK service {} listening on {listening}, group {} enabled",
            self.name, self.group
        ))
    }
}

pub(super) fn remove(service: String) -> (Command, String) {
    let text = format!("OK service {service} removed");
    (Command::RemoveService { service }, text)
}

/// Listen on one more address for a service.
#[derive(Debug, Clone, PartialEq)]
pub struct AddListener {
    /// Service name.
    pub service: String,
    /// The address and its settings.
    pub listener: Listener,
}

/// An unknown listener setting.
const SETTING: Param = Param::new("setting", "SETTING", super::Arg::Value);

impl AddListener {
    /// Reads its parameters.
    pub fn parse(a: &Args) -> Result<AddListener, OpError> {
        let service = a.required(&SERVICE)?.to_string();
        let mut listener = Listener::new(listen_addr(a, &LISTEN)?);
        for (key, value) in &a.settings {
            // By its static name (as given: XML or TOML), so that the error
            // names the setting.
            let name = ListenOptions::KEYS
                .iter()
                .flat_map(|(xml, toml)| [*xml, *toml])
                .find(|name| key == name);
            let Some(name) = name else {
                let known: Vec<&str> = ListenOptions::KEYS.iter().map(|(x, _)| *x).collect();
                return Err(bad(
                    &SETTING,
                    format!("unknown setting {key:?} (expected {})", known.join(" or ")),
                ));
            };
            listener
                .options
                .set(key, &RawValue::Text(value.trim().to_string()))
                .map_err(|why| OpError::Bad {
                    name,
                    label: SETTING.label,
                    reason: why,
                })?;
        }
        Ok(AddListener { service, listener })
    }

    pub(super) async fn run(self, h: &BalancerHandle) -> Result<String, OpError> {
        let listen = self.listener.addr.clone();
        let service = self.service;
        h.apply(Command::AddListener {
            service: service.clone(),
            listen: self.listener,
        })
        .await?;
        Ok(format!(
            "OK service {service} now also listens on {}",
            bound(h, &service, &listen)
        ))
    }
}

/// Stop listening on an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveListener {
    /// Service name.
    pub service: String,
    /// The address as configured.
    pub listen: ListenAddr,
}

impl RemoveListener {
    /// Reads its parameters.
    pub fn parse(a: &Args) -> Result<RemoveListener, OpError> {
        Ok(RemoveListener {
            service: a.required(&SERVICE)?.into(),
            listen: listen_addr(a, &LISTENER)?,
        })
    }

    pub(super) fn change(self) -> (Command, String) {
        let RemoveListener { service, listen } = self;
        let text = format!("OK service {service} no longer listens on {listen}");
        (Command::RemoveListener { service, listen }, text)
    }
}
