//! The backup watcher: tells (once, at the edge) when a service starts or stops
//! serving from a backup group. The data path needs no watcher (it falls back on
//! its own when the enabled group has no usable host); this task only turns
//! those moments into [`Event::BackupActive`] and [`Event::BackupEnded`], and
//! `allBad="open"`'s into [`Event::AllBadForced`] and [`Event::AllBadEnded`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::events::{Event, Events};
use crate::snapshot::Snapshot;

/// How often the watcher looks even without an event: admin-down and
/// configuration changes emit none of their own.
const RECHECK: Duration = Duration::from_secs(1);

/// Watches every service until `shutdown`: after each transition event, and
/// every [`RECHECK`].
pub(crate) async fn watch(
    snapshots: Arc<ArcSwap<Snapshot>>,
    events: Events,
    shutdown: CancellationToken,
) {
    let mut transitions = events.subscribe();
    let mut serving = Serving::default();
    loop {
        serving.check(&snapshots.load(), &events);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(RECHECK) => {}
            // Any transition (a lag means several) may have moved a service.
            received = transitions.recv() => {
                if matches!(received, Err(RecvError::Closed)) {
                    break;
                }
            }
        }
    }
}

/// The backup group each service was last seen serving from (absent: none),
/// and the group each was last seen forcing (`allBad="open"`).
#[derive(Debug, Default)]
pub(crate) struct Serving {
    on_backup: HashMap<Arc<str>, Arc<str>>,
    forcing: HashMap<Arc<str>, Arc<str>>,
}

impl Serving {
    /// Compares every service with what was last seen and reports the changes.
    pub(crate) fn check(&mut self, snapshot: &Snapshot, events: &Events) {
        for service in snapshot.services() {
            let serving = service.serving_group();
            let backup = serving
                .filter(|&i| i != service.enabled)
                .map(|i| service.groups[i].name.clone());
            let before = self.on_backup.get(&service.name);
            if before == backup.as_ref() {
                continue;
            }
            match &backup {
                Some(group) => {
                    events.emit(Event::BackupActive {
                        service: service.name.to_string(),
                        group: group.to_string(),
                    });
                    self.on_backup.insert(service.name.clone(), group.clone());
                }
                None => {
                    events.emit(Event::BackupEnded {
                        service: service.name.to_string(),
                        group: serving.map(|i| service.groups[i].name.to_string()),
                    });
                    self.on_backup.remove(&service.name);
                }
            }
        }
        self.on_backup
            .retain(|name, _| snapshot.service(name).is_some());
        self.check_forced(snapshot, events);
    }

    /// The same at `allBad="open"`'s edges.
    fn check_forced(&mut self, snapshot: &Snapshot, events: &Events) {
        for service in snapshot.services() {
            let forced = service.forced_group().map(|g| g.name.clone());
            let before = self.forcing.get(&service.name);
            if before == forced.as_ref() {
                continue;
            }
            if let Some(group) = before {
                events.emit(Event::AllBadEnded {
                    service: service.name.to_string(),
                    group: group.to_string(),
                });
            }
            match forced {
                Some(group) => {
                    events.emit(Event::AllBadForced {
                        service: service.name.to_string(),
                        group: group.to_string(),
                    });
                    self.forcing.insert(service.name.clone(), group);
                }
                None => {
                    self.forcing.remove(&service.name);
                }
            }
        }
        self.forcing
            .retain(|name, _| snapshot.service(name).is_some());
    }
}
