//! Reads the surfaces share: a service, group or host of the stats by name,
//! refused in the controller's words (and so with the same status and text
//! everywhere) when there is none.

use super::OpError;
use crate::control::ControlError;
use crate::{GroupStats, HostStatsEntry, ServiceStats, Stats};

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
