//! Reads the surfaces share: a service, group or host of the stats by name,
//! refused in the controller's words (and so with the same status and text
//! everywhere) when there is none; a host's checks ([`host_check`]); and the
//! connections list ([`connections`]).

use std::fmt::Write as _;

use serde::Serialize;

use super::OpError;
use crate::config::Config;
use crate::control::ControlError;
use crate::state::{AgentView, CheckStateView, Ejection, HostHealth};
use crate::{GroupStats, HostStatsEntry, ServiceStats, Stats};

/// Open connections and UDP sessions of `service` and `host` (`None`: any),
/// as [`BalancerHandle::connections`](crate::BalancerHandle::connections)
/// lists them, read on the blocking pool: the UDP relays are waited for (at
/// most 100 ms), and the control plane's runtime must not be.
pub async fn connections(
    h: &crate::BalancerHandle,
    service: Option<&str>,
    host: Option<&str>,
) -> Vec<crate::ConnectionInfo> {
    let (h, service, host) = (h.clone(), service.map(String::from), host.map(String::from));
    tokio::task::spawn_blocking(move || h.connections(service.as_deref(), host.as_deref()))
        .await
        .unwrap_or_default()
}

/// The service named `service`.
pub fn service<'a>(stats: &'a Stats, service: &str) -> Result<&'a ServiceStats, OpError> {
    stats
        .services
        .iter()
        .find(|s| s.name == service)
        .ok_or_else(|| ControlError::UnknownService(service.into()).into())
}

/// The group named `group` of the service named `service`.
pub fn group<'a>(stats: &'a Stats, service: &str, group: &str) -> Result<&'a GroupStats, OpError> {
    self::service(stats, service)?
        .groups
        .iter()
        .find(|g| g.name == group)
        .ok_or_else(|| {
            ControlError::UnknownGroup {
                service: service.into(),
                group: group.into(),
            }
            .into()
        })
}

/// The host named `host` of that group.
pub fn host<'a>(
    stats: &'a Stats,
    service: &str,
    group: &str,
    host: &str,
) -> Result<&'a HostStatsEntry, OpError> {
    self::group(stats, service, group)?
        .hosts
        .iter()
        .find(|h| h.name == host)
        .ok_or_else(|| {
            ControlError::UnknownHost {
                service: service.into(),
                group: group.into(),
                host: host.into(),
            }
            .into()
        })
}

/// What a host's checks say of it (the `hostCheck` read): its state and
/// reason, the group's active check and its progress, what the agent said,
/// and the passive checks' ejection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostCheck {
    /// Up, bad or admin-down (an ejected host is bad).
    pub health: HostHealth,
    /// Why it is bad, when it is (an ejection's reason while ejected).
    pub reason: Option<String>,
    /// The group's `<check>`, if it has one.
    pub check: Option<ActiveCheck>,
    /// What the group's agent last said, once asked.
    pub agent: Option<AgentView>,
    /// The group's `failLimit` (0: no passive checks).
    pub fail_limit: u32,
    /// The running ejection, if any.
    pub ejection: Option<Ejection>,
    /// Ejections since start.
    pub ejections: u64,
}

/// A group's active check as it stands for one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActiveCheck {
    /// Its `type` (`tcp`, `http`, `redis`, …).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Passes in a row that put a bad host back.
    pub rise: u32,
    /// Failures in a row that make an up host bad.
    pub fall: u32,
    /// Its progress on the host, once probed.
    pub state: Option<CheckStateView>,
}

impl HostCheck {
    /// The legacy API's and the console's line: `OK host h1 state=bad
    /// reason="…" check=http rise=2 fall=3 passes=0 fails=3 …`.
    pub fn text(&self, host: &str) -> String {
        let mut t = format!("OK host {host} state={}", self.health.name());
        if let Some(reason) = &self.reason {
            let _ = write!(t, " reason={reason:?}");
        }
        match &self.check {
            None => t.push_str(" check=none"),
            Some(c) => {
                let _ = write!(t, " check={} rise={} fall={}", c.kind, c.rise, c.fall);
                if let Some(s) = &c.state {
                    let _ = write!(
                        t,
                        " passes={} fails={} check_ms={:.3} check_failures={}",
                        s.passes,
                        s.fails,
                        s.last_micros as f64 / 1e3,
                        s.failures
                    );
                    if let Some(why) = &s.last_failure {
                        let _ = write!(t, " last_failure={why:?}");
                    }
                }
            }
        }
        if let Some(agent) = &self.agent {
            let _ = write!(t, " agent={:?}", agent.summary());
        }
        let _ = write!(
            t,
            " fail_limit={} ejections={}",
            self.fail_limit, self.ejections
        );
        t
    }
}

/// The `hostCheck` read of host `host` of group `group` of service
/// `service`, from the running `config` and `stats`.
pub fn host_check(
    stats: &Stats,
    config: &Config,
    service: &str,
    group: &str,
    host: &str,
) -> Result<HostCheck, OpError> {
    let entry = self::host(stats, service, group, host)?;
    let settings = config
        .services
        .iter()
        .find(|s| s.name == service)
        .and_then(|s| s.groups.iter().find(|g| g.name == group));
    let v = &entry.stats;
    Ok(HostCheck {
        health: v.health,
        reason: v.bad.as_ref().map(|b| b.reason.clone()),
        check: settings
            .and_then(|g| g.check.as_ref())
            .map(|c| ActiveCheck {
                kind: c.kind.name(),
                rise: c.rise,
                fall: c.fall,
                state: v.check.clone(),
            }),
        agent: v.agent.clone(),
        fail_limit: settings.map_or(0, |g| g.options.fail_limit),
        ejection: v.ejection.clone(),
        ejections: v.ejections,
    })
}
