//! Managers that watch host health: `hostCheck` re-probes bad hosts and puts back
//! those that answer; `heartbeat` probes every host and marks failing ones bad.
//! Both watch the groups without a `<check>` (a UDP service's hosts with
//! `probe_udp`: up unless their port refuses a datagram); the active checks (`checks`, one
//! task per host, `exchange` for one probe) watch the others. All are plain
//! tasks on the balancer's runtime that stop on shutdown, like the backup
//! watcher (`backup`), which reports services moving to or from a backup group.

pub(crate) mod agent;
pub(crate) mod backup;
pub(crate) mod checks;
mod exchange;
mod probe;
mod protocols;

pub(crate) use probe::probe;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::events::Events;
use crate::snapshot::Snapshot;
use crate::state::HostSnapshot;

/// How often a supervisor of per-host tasks (checks, agents) looks whether the
/// snapshot changed.
const FOLLOW: Duration = Duration::from_millis(200);

/// Runs `follow` on the running snapshot, and again each time it changes,
/// until `shutdown`: how the check and agent supervisors keep one task per
/// host of the running configuration.
pub(crate) async fn follow_snapshots(
    snapshots: &ArcSwap<Snapshot>,
    shutdown: &CancellationToken,
    mut follow: impl FnMut(&Snapshot),
) {
    let mut seen: Option<Arc<Snapshot>> = None;
    loop {
        let snapshot = snapshots.load_full();
        if seen.as_ref().is_none_or(|s| !Arc::ptr_eq(s, &snapshot)) {
            follow(&snapshot);
            seen = Some(snapshot);
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(FOLLOW) => {}
        }
    }
}

/// Which hosts a manager looks at, and what it does with the probe's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    /// Probe bad hosts; put back those that answer.
    HostCheck,
    /// Probe hosts in rotation; mark those that fail bad.
    Heartbeat,
}

impl Manager {
    fn name(self) -> &'static str {
        match self {
            Manager::HostCheck => "hostCheck",
            Manager::Heartbeat => "heartbeat",
        }
    }

    fn settings(self, snapshot: &Snapshot) -> crate::config::ManagerTask {
        match self {
            Manager::HostCheck => snapshot.manager.host_check,
            Manager::Heartbeat => snapshot.manager.heartbeat,
        }
    }

    fn wants(self, host: &HostSnapshot) -> bool {
        match self {
            Manager::HostCheck => host.stats.is_bad(),
            Manager::Heartbeat => !host.stats.is_bad() && !host.stats.is_admin_down(),
        }
    }
}

/// How often a disabled manager looks whether a reload enabled it.
const DISABLED_RECHECK: Duration = Duration::from_secs(1);

/// Runs `manager` until `shutdown` is cancelled, with the interval and the
/// enable flag of the running configuration (read from the snapshot every round,
/// so a reload changes them live).
pub(crate) async fn run(
    manager: Manager,
    snapshots: Arc<ArcSwap<Snapshot>>,
    events: Events,
    shutdown: CancellationToken,
) {
    loop {
        let settings = manager.settings(&snapshots.load());
        let pause = if settings.enable {
            settings.interval
        } else {
            DISABLED_RECHECK
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
        let snapshot = snapshots.load_full();
        if !manager.settings(&snapshot).enable {
            continue;
        }
        let round = check_round(manager, &snapshot, &events);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = round => {}
        }
    }
    tracing::debug!(manager = manager.name(), "manager stopped");
}

/// Probes, concurrently, every host `manager` wants, and applies the results.
pub(crate) async fn check_round(manager: Manager, snapshot: &Snapshot, events: &Events) {
    let mut probes = JoinSet::new();
    for service in snapshot.services() {
        // A group with an active check is the check's alone.
        for group in service.groups.iter().filter(|g| g.check.is_none()) {
            for host in group.hosts.iter().filter(|h| manager.wants(h)) {
                let host = host.clone();
                let service_name = service.name.clone();
                let group_name = group.name.clone();
                let timeout = service.connect_timeout;
                let origin = group.origin.clone();
                let events = events.clone();
                let udp = service.options.protocol == crate::config::Transport::Udp;
                probes.spawn(async move {
                    let result = match udp {
                        true => probe::probe_udp(&host, timeout).await,
                        false => probe(&host, origin.as_deref(), timeout).await,
                    };
                    apply(manager, &service_name, &group_name, &host, result, &events);
                });
            }
        }
    }
    while probes.join_next().await.is_some() {}
}

fn apply(
    manager: Manager,
    service: &str,
    group: &str,
    host: &HostSnapshot,
    result: Result<(), String>,
    events: &Events,
) {
    match manager {
        Manager::HostCheck => {
            // A host its agent says is down stays bad until the agent says
            // otherwise.
            if result.is_ok()
                && host.stats.agent_state() != crate::state::AgentState::Down
                && host.stats.mark_up()
            {
                events.host_back(service, group, &host.name);
            }
        }
        Manager::Heartbeat => {
            if let Err(reason) = result {
                let reason = format!("heartbeat: {reason}");
                if host.stats.record_failure(reason.clone()) {
                    events.host_bad(service, group, &host.name, &reason);
                }
            }
        }
    }
}
