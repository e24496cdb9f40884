//! Events: the transitions worth telling about (a host going bad or coming back, a
//! group switched, a service on or off its backup group, a listener opened or
//! closed, an instance out of step with its fleet or back) and every change made
//! through any surface (services, groups, hosts, schedulers, users, admin-down),
//! logged once and broadcast to subscribers such as an embedding application or
//! the admin page.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::Serialize;
use tokio::sync::broadcast;
use tokio_stream::Stream;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

/// Events kept for a subscriber that falls behind; older ones are dropped for it.
const EVENT_BACKLOG: usize = 1024;

/// One transition of the running balancer. New kinds may be added: match with a
/// wildcard arm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Event {
    /// A host left rotation after a failure.
    HostBad {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
        /// Host name.
        host: String,
        /// What failed.
        reason: String,
    },
    /// A bad host answered again and is back in rotation.
    HostBack {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
        /// Host name.
        host: String,
    },
    /// The passive checks (`failLimit`) took a host out of rotation after
    /// consecutive failures on clients' connections.
    HostEjected {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
        /// Host name.
        host: String,
        /// How long the ejection lasts, in milliseconds.
        millis: u64,
        /// The host's reason while ejected (`ejected for 20 s after 3 failures (…)`).
        reason: String,
    },
    /// A host's ejection ran out: it is back in rotation (unless something
    /// else keeps it out).
    HostReturned {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
        /// Host name.
        host: String,
    },
    /// A host's agent (`<agent>`) said something new: another state, weight
    /// or `maxconn`.
    AgentSaid {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
        /// Host name.
        host: String,
        /// The state it gave: `up`, `drain`, `maint` or `down`.
        state: String,
        /// The weight, in percent of the configured weight.
        weight_percent: u32,
        /// Its `maxconn:N` (0: none).
        maxconn: u32,
    },
    /// A service's enabled group changed.
    GroupEnabled {
        /// Service name.
        service: String,
        /// The group now enabled.
        group: String,
    },
    /// No host of a service's enabled group is usable any more and a backup
    /// group takes its new connections (or another backup group took over from
    /// the one serving).
    BackupActive {
        /// Service name.
        service: String,
        /// The backup group now serving.
        group: String,
    },
    /// A service stopped using its backup group: a host of the enabled group is
    /// usable again (`group` is the enabled group), or no group has a usable
    /// host left (`group` is `None`).
    BackupEnded {
        /// Service name.
        service: String,
        /// The group serving now, if any.
        group: Option<String>,
    },
    /// Every host of a service's enabled group is bad, no backup group serves,
    /// and the group says `allBad="open"`: new clients are tried on the bad
    /// hosts anyway (txLoadBalancer's "forcing them back").
    AllBadForced {
        /// Service name.
        service: String,
        /// The enabled group, whose bad hosts take clients.
        group: String,
    },
    /// A service stopped trying its bad hosts: a host is usable again, a
    /// group serves, or the group no longer says `allBad="open"`.
    AllBadEnded {
        /// Service name.
        service: String,
        /// The group that was forced.
        group: String,
    },
    /// A listener started accepting.
    ListenerAdded {
        /// Service name.
        service: String,
        /// The address as configured.
        listen: String,
        /// The bound address.
        local: SocketAddr,
    },
    /// A listener stopped accepting.
    ListenerRemoved {
        /// Service name.
        service: String,
        /// The address as configured.
        listen: String,
    },
    /// A listener's settings changed in place, its socket kept: its PROXY
    /// protocol acceptance or its routes.
    ListenerChanged {
        /// Service name.
        service: String,
        /// The address as configured.
        listen: String,
        /// How many routes it has now.
        routes: usize,
    },
    /// A service was added.
    ServiceAdded {
        /// Service name.
        service: String,
    },
    /// A service was removed; its listeners close, its connections finish.
    ServiceRemoved {
        /// Service name.
        service: String,
    },
    /// A service's own settings changed (timeouts, limits, access lists).
    ServiceChanged {
        /// Service name.
        service: String,
    },
    /// A group was added to a service.
    GroupAdded {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
    },
    /// A group was removed from a service.
    GroupRemoved {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
    },
    /// A group's scheduler changed.
    SchedulerChanged {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
        /// The new scheduler's name (as in configuration files).
        scheduler: String,
    },
    /// A host was added to a group.
    HostAdded {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
        /// Host name.
        host: String,
        /// The address as configured.
        address: String,
    },
    /// A host was removed from a group; connections still open on it drain.
    HostRemoved {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
        /// Host name.
        host: String,
        /// Connections still open on it.
        open: u64,
    },
    /// A host's settings changed (address, weight, limits).
    HostChanged {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
        /// Host name.
        host: String,
    },
    /// A host was taken out of rotation by an operator (`down`), or put back.
    HostAdminDown {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
        /// Host name.
        host: String,
        /// Out of rotation (`true`) or back (`false`).
        down: bool,
    },
    /// A host is draining: out of rotation, its open connections cut after
    /// `deadline_ms` (none: they may finish).
    HostDraining {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
        /// Host name.
        host: String,
        /// Connections open when draining began.
        open: u64,
        /// When what is still open is closed, in milliseconds from now.
        deadline_ms: Option<u64>,
    },
    /// An admin user was added.
    UserAdded {
        /// Login name.
        user: String,
    },
    /// An admin user was removed.
    UserRemoved {
        /// Login name.
        user: String,
    },
    /// Fleet mode: the fleet's newest configuration cannot run on this
    /// instance (told once per revision); it keeps the one it runs and refuses
    /// changes until it catches up.
    FleetOutOfStep {
        /// Revision of the configuration running here.
        applied: i64,
        /// The fleet's newest revision.
        latest: i64,
        /// Why it cannot run here.
        reason: String,
    },
    /// A certificate was issued by ACME (a first one or a renewal), stored,
    /// and is served by new handshakes.
    AcmeIssued {
        /// Its DNS names, sorted.
        names: Vec<String>,
        /// Its issuer.
        issuer: String,
        /// End of validity, seconds since the Unix epoch.
        not_after: i64,
    },
    /// Ordering a certificate from ACME failed; the certificate served (if
    /// any) stays, and the order is tried again later.
    AcmeFailed {
        /// Its DNS names, sorted.
        names: Vec<String>,
        /// Why.
        reason: String,
        /// Seconds until the next try (doubling after each failure).
        retry_in: u64,
    },
    /// Fleet mode: an instance that was out of step runs the fleet's newest
    /// configuration again.
    FleetInStep {
        /// The revision now running.
        revision: i64,
    },
    /// An upgrade: this process handed its listening sockets and state to a
    /// new process, which serves now; this one stops accepting.
    HandedOver {
        /// The new process.
        pid: u32,
        /// Listening sockets handed over (each worker's copy counted).
        sockets: usize,
        /// Established connections moved at once (idle ones).
        connections_moved: u64,
    },
    /// An upgrade: established connections moved to the new process as they
    /// went quiet; `left` stay here and drain.
    ConnectionsMoved {
        /// Moved in all.
        moved: u64,
        /// Still open here (busy, or TLS-terminated).
        left: usize,
    },
    /// This process took over from a previous one (an upgrade) and took on
    /// the established connections it handed over.
    TookOver {
        /// The previous process.
        from_pid: u32,
        /// Connections taken on.
        connections: u64,
        /// Connections whose host or listener is gone here: closed.
        closed: u64,
    },
}

/// The sending side, shared by the controller, the managers and connections.
/// Sending is used only on transitions, never per byte or per connection.
#[derive(Debug, Clone)]
pub(crate) struct Events {
    tx: broadcast::Sender<Event>,
}

impl Events {
    pub(crate) fn new() -> Self {
        Events {
            tx: broadcast::channel(EVENT_BACKLOG).0,
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Logs and broadcasts `event`.
    pub(crate) fn emit(&self, event: Event) {
        match &event {
            Event::HostBad {
                service,
                group,
                host,
                reason,
            } => tracing::warn!(service, group, host, reason, "host marked bad"),
            Event::HostBack {
                service,
                group,
                host,
            } => {
                tracing::info!(service, group, host, "host back in rotation")
            }
            Event::HostEjected {
                service,
                group,
                host,
                reason,
                ..
            } => tracing::warn!(service, group, host, reason, "host ejected"),
            Event::HostReturned {
                service,
                group,
                host,
            } => tracing::info!(service, group, host, "host ejection over"),
            Event::AgentSaid {
                service,
                group,
                host,
                state,
                weight_percent,
                maxconn,
            } => tracing::info!(
                service,
                group,
                host,
                state,
                weight_percent,
                maxconn,
                "host agent said"
            ),
            Event::GroupEnabled { service, group } => {
                tracing::info!(service, group, "group enabled")
            }
            Event::BackupActive { service, group } => {
                tracing::warn!(
                    service,
                    group,
                    "enabled group has no usable host: backup group serving"
                )
            }
            Event::BackupEnded {
                service,
                group: Some(group),
            } => tracing::info!(
                service,
                group,
                "back on the enabled group: backup group released"
            ),
            Event::BackupEnded {
                service,
                group: None,
            } => tracing::warn!(service, "backup group has no usable host left either"),
            Event::AllBadForced { service, group } => tracing::warn!(
                service,
                group,
                "every host of the group is bad: trying them anyway (allBad=\"open\")"
            ),
            Event::AllBadEnded { service, group } => {
                tracing::info!(service, group, "no longer trying bad hosts (allBad)")
            }
            Event::ListenerAdded {
                service,
                listen,
                local,
            } => tracing::info!(service, listen, %local, "listener up"),
            Event::ListenerRemoved { service, listen } => {
                tracing::info!(service, listen, "listener closing")
            }
            Event::ListenerChanged {
                service,
                listen,
                routes,
            } => tracing::info!(service, listen, routes, "listener settings changed"),
            Event::FleetOutOfStep {
                applied,
                latest,
                reason,
            } => tracing::error!(
                applied,
                latest,
                reason,
                "fleet: out of step: the fleet's newest configuration cannot run here; \
                 keeping the running one, changes refused here until it can"
            ),
            Event::HandedOver {
                pid,
                sockets,
                connections_moved,
            } => tracing::info!(
                pid,
                sockets,
                connections_moved,
                "upgrade: handed over to the new process; this one stops accepting and drains"
            ),
            Event::ConnectionsMoved { moved, left } => tracing::info!(
                moved,
                left,
                "upgrade: connections moved to the new process; those left drain here"
            ),
            Event::TookOver {
                from_pid,
                connections,
                closed,
            } => tracing::info!(
                from_pid,
                connections,
                closed,
                "upgrade: took over; connections taken on"
            ),
            Event::AcmeIssued {
                names,
                issuer,
                not_after,
            } => tracing::info!(
                names = %names.join(" "),
                issuer,
                not_after,
                "certificate issued by ACME: served from now on"
            ),
            Event::AcmeFailed {
                names,
                reason,
                retry_in,
            } => tracing::warn!(
                names = %names.join(" "),
                reason,
                retry_in,
                "ordering a certificate from ACME failed: the served one (if any) stays; retrying later"
            ),
            Event::FleetInStep { revision } => {
                tracing::info!(
                    revision,
                    "fleet: back in step with the fleet's configuration"
                )
            }
            Event::HostAdminDown {
                service,
                group,
                host,
                down,
            } => tracing::info!(service, group, host, down, "host admin state changed"),
            Event::HostDraining {
                service,
                group,
                host,
                open,
                deadline_ms,
            } => tracing::info!(service, group, host, open, ?deadline_ms, "host draining"),
            // What a change did to the configuration: the change's own log line
            // (e.g. the reload's counts) tells it; one line per host of a big
            // reload would flood the log.
            change => tracing::debug!(?change, "configuration changed"),
        }
        // No subscriber is fine: the log line is the record.
        let _ = self.tx.send(event);
    }

    /// Reports a host that just went bad.
    pub(crate) fn host_bad(&self, service: &str, group: &str, host: &str, reason: &str) {
        self.emit(Event::HostBad {
            service: service.to_string(),
            group: group.to_string(),
            host: host.to_string(),
            reason: reason.to_string(),
        });
    }

    /// Reports a host that just came back.
    pub(crate) fn host_back(&self, service: &str, group: &str, host: &str) {
        self.emit(Event::HostBack {
            service: service.to_string(),
            group: group.to_string(),
            host: host.to_string(),
        });
    }
}

/// A subscription to a balancer's events (`BalancerHandle::events`): read it
/// with [`EventStream::next`], or as a `Stream`.
#[derive(Debug)]
pub struct EventStream {
    inner: BroadcastStream<Event>,
}

/// A subscriber fell behind by more than the backlog (1,024 events) and missed
/// this many; it goes on with newer events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("fell behind and missed {0} events")]
pub struct Lagged(pub u64);

impl EventStream {
    pub(crate) fn new(receiver: broadcast::Receiver<Event>) -> Self {
        EventStream {
            inner: BroadcastStream::new(receiver),
        }
    }

    /// The next event; `None` once the balancer is gone.
    pub async fn next(&mut self) -> Option<Result<Event, Lagged>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for EventStream {
    type Item = Result<Event, Lagged>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner)
            .poll_next(cx)
            .map(|item| item.map(|r| r.map_err(|BroadcastStreamRecvError::Lagged(n)| Lagged(n))))
    }
}
