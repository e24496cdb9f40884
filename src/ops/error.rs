//! [`OpError`]: why an operation was not done, said once for every surface. The
//! admin plane turns it into an HTTP status (`admin/error.rs`), the console into
//! its exit status and text (`ssh/commands.rs`).

use crate::control::ControlError;

/// Why an operation was not done.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// A required parameter is absent or empty.
    #[error("missing parameter {name:?}")]
    Missing {
        /// Its name in the web API and forms (`ip`).
        name: &'static str,
        /// Its name in the console (`ADDRESS`).
        label: &'static str,
    },
    /// A parameter has a value that cannot be used.
    #[error("bad parameter {name:?}: {reason}")]
    Bad {
        /// Its name in the web API and forms (`ip`).
        name: &'static str,
        /// Its name in the console (`ADDRESS`).
        label: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The controller refused the change (unknown name, a rule of the model, a
    /// listener that cannot be bound, …); nothing changed.
    #[error("{}", refusal_text(.0))]
    Refused(ControlError),
    /// What the operation is about does not exist (an open connection).
    #[error("{0}")]
    NotFound(String),
    /// A hook refused (saving the configuration failed), or a reload was refused.
    #[error("{0}")]
    Failed(String),
    /// A feature this server was not set up with (no save hook, no file).
    #[error("{0}")]
    NotConfigured(&'static str),
    /// Something failed inside; the details were logged.
    #[error("{0}")]
    Internal(&'static str),
}

impl From<ControlError> for OpError {
    fn from(e: ControlError) -> Self {
        OpError::Refused(e)
    }
}

/// What a refusal says: the controller's words, except a bind failure, whose
/// system error is replaced by a short, safe description.
fn refusal_text(e: &ControlError) -> String {
    match e {
        ControlError::BindListener { listen, source } => {
            format!("cannot listen on {listen}: {}", bind_reason(source))
        }
        e => e.to_string(),
    }
}

/// A short, safe description of a bind failure.
fn bind_reason(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => "address already in use",
        std::io::ErrorKind::AddrNotAvailable => "address not available on this machine",
        std::io::ErrorKind::PermissionDenied => "permission denied",
        _ => "the system refused the address",
    }
}

/// The kind of failure, which each surface shows its own way (an HTTP status,
/// a console exit status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request itself is wrong: a parameter, or a value the model refuses.
    Invalid,
    /// No such service, group, host, listener, user or connection.
    NotFound,
    /// A rule of the model or the machine refuses it (the enabled group, a
    /// duplicate name, a port in use, a failed save).
    Conflict,
    /// Not set up on this server.
    NotConfigured,
    /// The balancer is shutting down.
    ShuttingDown,
    /// Something the change needs cannot be reached now (fleet mode: etcd).
    Unavailable,
    /// Something failed inside.
    Internal,
}

impl OpError {
    /// The kind of failure.
    pub fn kind(&self) -> Kind {
        match self {
            OpError::Missing { .. } | OpError::Bad { .. } => Kind::Invalid,
            OpError::NotFound(_) => Kind::NotFound,
            OpError::Failed(_) => Kind::Conflict,
            OpError::NotConfigured(_) => Kind::NotConfigured,
            OpError::Internal(_) => Kind::Internal,
            OpError::Refused(e) => match e {
                ControlError::UnknownService(_)
                | ControlError::UnknownGroup { .. }
                | ControlError::UnknownHost { .. }
                | ControlError::UnknownListener { .. }
                | ControlError::UnknownRoute { .. }
                | ControlError::UnknownUser(_) => Kind::NotFound,
                ControlError::Invalid(_) => Kind::Invalid,
                ControlError::ShuttingDown => Kind::ShuttingDown,
                ControlError::FleetUnavailable(_) => Kind::Unavailable,
                _ => Kind::Conflict,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_safe_texts() {
        assert_eq!(
            OpError::from(ControlError::UnknownService("x".into())).kind(),
            Kind::NotFound
        );
        let e = OpError::from(ControlError::LastHostOfEnabledGroup {
            service: "s".into(),
            group: "g".into(),
        });
        assert_eq!(e.kind(), Kind::Conflict);
        let e = OpError::from(ControlError::BindListener {
            listen: "127.0.0.1:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        });
        assert_eq!(
            e.to_string(),
            "cannot listen on 127.0.0.1:1: address already in use"
        );
    }
}
