//! Fleet mode left out (built without the `fleet` feature): the configuration
//! readers refuse `<cluster>`, and what the rest of the crate names of fleet
//! mode is here without a way to turn it on (no etcd client, no tasks).

mod view;

use std::sync::Arc;

use crate::config::{ClusterConfig, Config};
use crate::control::{Command, ControlError, Controller};
pub(crate) use view::FleetView;

/// The way into fleet mode; it cannot exist in this build.
pub(crate) enum FleetLink {}

impl FleetLink {
    /// Sends a change through etcd: never called, there is no link.
    pub(crate) async fn change(&self, _: Command) -> Result<(), ControlError> {
        match *self {}
    }

    /// The fleet as last seen: never called, there is no link.
    pub(crate) fn view(&self) -> FleetView {
        match *self {}
    }
}

/// What the balancer starts with: the configuration as given.
pub(crate) struct Boot {
    /// The configuration to start.
    pub(crate) config: Config,
}

/// A configuration built in code with a `<cluster>` (the readers refuse one)
/// runs alone, and says so.
pub(crate) async fn boot(local: Config, cluster: ClusterConfig) -> Boot {
    tracing::warn!(
        instance = %cluster.name,
        "this txlb is built without fleet mode (cargo feature \"fleet\"): <cluster> ignored, running alone"
    );
    Boot { config: local }
}

/// No fleet, no shared store: certificates from ACME are this instance's.
pub(crate) fn acme_store(_: &Boot) -> Option<Arc<dyn crate::control::acme::Store>> {
    None
}

/// Nothing to start: no link.
pub(crate) fn start(_: &Arc<Controller>, _: Boot) -> Option<Arc<FleetLink>> {
    None
}
