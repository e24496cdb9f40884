//! Why a command was refused: one error type for every surface, which each
//! renders in its own way (an HTTP status, a console line).

use std::io;

/// Why a command was refused. Nothing changed when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No service of that name.
    #[error("no service {0:?}")]
    UnknownService(String),
    /// No group of that name in the service.
    #[error("service {service:?} has no group {group:?}")]
    UnknownGroup {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
    },
    /// No host of that name in the group.
    #[error("group {group:?} of service {service:?} has no host {host:?}")]
    UnknownHost {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
        /// Host name.
        host: String,
    },
    /// The service has no such listener.
    #[error("service {service:?} does not listen on {listen}")]
    UnknownListener {
        /// Service name.
        service: String,
        /// Listen address.
        listen: String,
    },
    /// The listener has no such route.
    #[error("listener {listen} of service {service:?} has no route {route}")]
    UnknownRoute {
        /// Service name.
        service: String,
        /// Listen address.
        listen: String,
        /// The route asked for, as a file writes it
        /// (`sni=api.example.com service=api`).
        route: String,
    },
    /// A service of that name exists already.
    #[error("service {0:?} exists already")]
    DuplicateService(String),
    /// A group of that name exists already.
    #[error("service {service:?} has a group {group:?} already")]
    DuplicateGroup {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
    },
    /// A host of that name exists already in the group.
    #[error("group {group:?} of service {service:?} has a host {host:?} already")]
    DuplicateHost {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
        /// Host name.
        host: String,
    },
    /// The operation is not allowed on the enabled group.
    #[error("group {group:?} is the enabled group of service {service:?}")]
    GroupIsEnabled {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
    },
    /// A backup group stands in for the enabled group; it cannot be it.
    #[error(
        "group {group:?} of service {service:?} is a backup group: it cannot be the enabled group"
    )]
    BackupGroupEnabled {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
    },
    /// A group without hosts cannot be enabled.
    #[error("group {group:?} of service {service:?} has no hosts")]
    EmptyGroup {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
    },
    /// The enabled group must keep at least one host.
    #[error("cannot remove the last host of the enabled group {group:?} of service {service:?}")]
    LastHostOfEnabledGroup {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
    },
    /// No admin user of that name.
    #[error("no user {0:?}")]
    UnknownUser(String),
    /// The last user with full access cannot be removed by a command: nobody
    /// could change anything through the web any more.
    #[error("user {0:?} is the last with full access: add another first")]
    LastFullUser(String),
    /// An admin user of that name exists already.
    #[error("user {0:?} exists already")]
    DuplicateUser(String),
    /// A service must keep at least one listener.
    #[error("cannot remove the last listener of service {0:?}")]
    LastListener(String),
    /// Two services, or one twice, on the same address.
    #[error("{listen} is already a listener of service {service:?}")]
    DuplicateListener {
        /// Service that has it.
        service: String,
        /// The address.
        listen: String,
    },
    /// A listen address could not be bound.
    #[error("cannot listen on {listen}: {source}")]
    BindListener {
        /// The address as configured.
        listen: String,
        /// What the system said.
        source: io::Error,
    },
    /// A value that breaks a rule of the model.
    #[error("{0}")]
    Invalid(String),
    /// The data-path worker threads could not be started.
    #[error("cannot start worker threads: {0}")]
    StartWorkers(#[source] io::Error),
    /// The balancer is shutting down.
    #[error("the balancer is shutting down")]
    ShuttingDown,
    /// Fleet mode: another instance changed the shared configuration since this
    /// one last saw it. Nothing was changed; retry on the current configuration.
    #[error(
        "conflict: the fleet's configuration was changed elsewhere (now at revision {current}, \
         this instance had {expected}); nothing was changed: look again and retry"
    )]
    FleetConflict {
        /// The revision this instance's change was based on.
        expected: i64,
        /// The revision in etcd.
        current: i64,
    },
    /// Fleet mode: this instance could not apply the fleet's newest
    /// configuration, so it runs an older one; a change made from that one
    /// would undo the newer. Nothing was changed.
    #[error(
        "this instance is out of step with the fleet: it runs revision {applied} of the fleet's \
         configuration but could not apply revision {latest} ({reason}); changes made here are \
         refused so they cannot undo it: remove the cause (the instance then catches up by \
         itself) or make the change on an instance in step"
    )]
    FleetOutOfStep {
        /// The revision running here.
        applied: i64,
        /// The fleet's newest revision.
        latest: i64,
        /// Why it does not run here.
        reason: String,
    },
    /// Fleet mode: etcd cannot be reached, so the change cannot be shared.
    /// Nothing was changed; the running configuration stays.
    #[error("the fleet's etcd cannot be reached, so changes are refused until it is back ({0})")]
    FleetUnavailable(String),
}
