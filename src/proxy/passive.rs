//! Passive checks on live traffic (Envoy's outlier detection, a group's
//! `failLimit`): what a host failing a client does to the host.
//!
//! Only failures come here (a failed connect, a reset before the host's first
//! byte); the host's first byte to a client clears its streak in the copy
//! loop ([`HostStats::record_passive_success`]). An ejection is a flag the
//! schedulers read ([`HostStats::is_available`]) and a timer, spawned by the
//! connection that ejects, that clears it: no lock, no task per host.

use std::sync::Arc;

use super::DataPlane;
use crate::config::MAX_EJECT_TIME;
use crate::events::Event;
use crate::state::{HostPlace, HostStats, clock_nanos};

/// The host at `place` (service, group, host names) failed a client, for
/// `reason`. In a group with `failLimit` (`fail_limit` > 0), one more failure
/// in a row, ejecting the host at the limit when the group has room for one
/// more ejected host; without it, the host is marked bad at once
/// (txLoadBalancer's rule, until a manager sees it answer).
pub(super) fn host_failed(
    data: &DataPlane,
    place: &HostPlace,
    stats: &Arc<HostStats>,
    fail_limit: u32,
    reason: &str,
) {
    let HostPlace {
        service,
        group,
        host,
    } = place;
    if fail_limit == 0 {
        if stats.record_failure(reason) {
            data.events.host_bad(service, group, host, reason);
        }
        return;
    }
    let failures = stats.record_passive_failure();
    if failures < fail_limit {
        return;
    }
    // Rare from here on (a host at its limit): the group's settings and hosts
    // from the running snapshot.
    let snapshot = data.snapshots.load();
    let Some(g) = snapshot
        .service(service)
        .and_then(|s| s.groups.iter().find(|g| g.name == *group))
    else {
        return;
    };
    let allowed = g.hosts.len() * usize::from(g.options.max_eject_percent.0) / 100;
    let room = || g.hosts.iter().filter(|h| h.stats.is_ejected()).count() <= allowed;
    let Some((length, number)) = stats.eject(
        (g.options.eject_time, MAX_EJECT_TIME),
        failures,
        reason,
        clock_nanos(),
        room,
    ) else {
        return;
    };
    let reason = stats.ejection().map(|e| e.reason()).unwrap_or_default();
    data.events.emit(Event::HostEjected {
        service: service.to_string(),
        group: group.to_string(),
        host: host.to_string(),
        millis: length.as_millis() as u64,
        reason,
    });
    let (events, stats) = (data.events.clone(), stats.clone());
    let (service, group, host) = (service.clone(), group.clone(), host.clone());
    tokio::spawn(async move {
        tokio::time::sleep(length).await;
        if stats.end_ejection(number, clock_nanos()) {
            events.emit(Event::HostReturned {
                service: service.to_string(),
                group: group.to_string(),
                host: host.to_string(),
            });
        }
    });
}

/// A connection ended by an error before its host sent a byte, and the host's
/// socket is no longer connected (the host reset it, not the client): a
/// failure of the host under its group's `failLimit`. Without one, nothing
/// (such a host was never marked bad for it).
pub(super) fn host_reset(data: &DataPlane, place: &HostPlace, stats: &Arc<HostStats>) {
    let fail_limit = {
        let snapshot = data.snapshots.load();
        snapshot
            .service(&place.service)
            .and_then(|s| s.groups.iter().find(|g| g.name == place.group))
            .map_or(0, |g| g.options.fail_limit)
    };
    if fail_limit > 0 {
        host_failed(
            data,
            place,
            stats,
            fail_limit,
            "reset before its first byte",
        );
    }
}
