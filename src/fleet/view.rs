//! The fleet as one instance sees it, for the admin pages, `/api/v1/fleet` and
//! the metrics: plain data, there whether or not fleet mode is built in.

use serde::{Deserialize, Serialize};

use crate::state::HostHealth;

/// The fleet as one instance sees it: the admin page's and `/api/v1/fleet`'s.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub(crate) struct FleetView {
    /// Whether fleet mode is on (`<cluster>`); everything else is empty when not.
    pub enabled: bool,
    /// This instance's name.
    pub instance: String,
    /// The key prefix.
    pub prefix: String,
    /// etcd endpoints.
    pub etcd: Vec<String>,
    /// Whether etcd answered the last round.
    pub reachable: bool,
    /// Why it did not, when it did not.
    pub error: Option<String>,
    /// Revision of the shared configuration applied here, the one running
    /// (0: none from etcd).
    pub revision: i64,
    /// Newest revision of the shared configuration seen in etcd.
    pub latest_revision: i64,
    /// Whether the newest configuration seen in etcd runs here. When not, the
    /// instance serves `revision` and refuses changes, which would undo the
    /// newer one; it catches up by itself once the cause is gone.
    pub in_step: bool,
    /// Why the newest configuration does not run here, when it does not.
    pub out_of_step: Option<String>,
    /// Registered instances, by name.
    pub instances: Vec<FleetInstance>,
    /// Hosts that at least one instance sees bad or admin-down.
    pub hosts_down: Vec<FleetHostDown>,
}

/// One registered instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct FleetInstance {
    /// Its name.
    pub name: String,
    /// Its txlb version.
    pub version: String,
    /// When it started, in seconds since the Unix epoch.
    pub started: u64,
    /// Revision of the shared configuration it runs.
    pub revision: i64,
    /// Newest revision it saw in etcd (0 from instances that do not say).
    #[serde(default)]
    pub latest_revision: i64,
    /// Whether it runs the newest configuration it saw.
    #[serde(default = "yes")]
    pub in_step: bool,
    /// Why it does not, when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_of_step: Option<String>,
}

fn yes() -> bool {
    true
}

/// A host some instances see down.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct FleetHostDown {
    /// Service name.
    pub service: String,
    /// Group name.
    pub group: String,
    /// Host name.
    pub host: String,
    /// Instances that see it bad or admin-down, with their reason.
    pub down: Vec<FleetSighting>,
    /// Instances that see it up.
    pub up: Vec<String>,
}

/// One instance's view of a host that is not up.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct FleetSighting {
    /// The instance.
    pub instance: String,
    /// `bad` or `admin-down`.
    pub health: HostHealth,
    /// Why it is bad.
    pub reason: Option<String>,
}
