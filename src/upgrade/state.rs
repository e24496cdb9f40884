//! The state an upgrade hands to the new process, versioned: what the old
//! process sends (its sockets' manifest and its running state) and what the
//! new one answers.
//!
//! [`FORMAT_VERSION`] grows when a change would make an older reader
//! misunderstand the message; fields only added (with their defaults) keep
//! it. A process reads every version from [`OLDEST_READ`] to its own, so the
//! previous release's state is always readable; a newer one is refused with
//! both numbers, and the old process keeps serving.

use serde::{Deserialize, Serialize};

use crate::state::{CarriedHost, ServiceCountersView};

/// The version of the state this txlb writes.
pub const FORMAT_VERSION: u32 = 1;

/// The oldest version of the state this txlb reads.
pub const OLDEST_READ: u32 = 1;

/// What the old process sends, beside the descriptors.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Handover {
    /// [`FORMAT_VERSION`] of the writer.
    pub version: u32,
    /// Who hands over.
    pub from: Predecessor,
    /// The descriptors sent with this message, in their order.
    pub sockets: Vec<SocketEntry>,
    /// The running configuration, rendered in its file's format (unsaved
    /// changes included).
    pub config: String,
    /// Write-back's base: the file's text as last loaded or written.
    #[serde(default)]
    pub baseline: Option<String>,
    /// Every host's health and counters.
    #[serde(default)]
    pub hosts: Vec<HostEntry>,
    /// Every service's counters.
    #[serde(default)]
    pub services: Vec<ServiceEntry>,
    /// Fleet mode: the configuration revision the old process ran.
    #[serde(default)]
    pub fleet_revision: Option<i64>,
    /// The old process sends its UDP sessions after [`Answer::Ready`] (if
    /// that says the new one takes them): UDP listeners wait for them.
    #[serde(default)]
    pub udp_sessions: bool,
    /// What the hosts' names resolved to: the new process serves with these
    /// at once (asking again soon), not after fresh look-ups that a name
    /// server down at that moment would fail.
    #[serde(default)]
    pub names: Vec<NameEntry>,
    /// The new process numbers its connections after this id: past every id
    /// the old one gave, with a block left for those it accepts until it
    /// stops (its moved connections keep their ids; none may be taken).
    #[serde(default)]
    pub numbered_after: u64,
}

/// One host name and the addresses it last resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NameEntry {
    pub name: String,
    pub addrs: Vec<std::net::IpAddr>,
}

/// The process handing over.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Predecessor {
    /// Its process id.
    pub pid: u32,
    /// Its txlb version.
    pub version: String,
    /// When it handed over, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// What one handed descriptor is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(crate) enum SocketEntry {
    /// One copy of a service listener's socket.
    Listener {
        /// The service.
        service: String,
        /// Its configured address, as written in the configuration.
        listen: String,
    },
    /// The control socket (`<control socket>`).
    Control,
    /// A socket of the embedding application's (the binary's admin web
    /// server, SSH console, upgrade socket), by its name.
    Named {
        /// Its name.
        name: String,
    },
}

/// One host's carried state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HostEntry {
    pub service: String,
    pub group: String,
    pub host: String,
    #[serde(flatten)]
    pub carried: CarriedHost,
}

/// One service's counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ServiceEntry {
    pub service: String,
    #[serde(flatten)]
    pub counters: ServiceCountersView,
}

/// The new process's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Answer {
    /// It serves: every listener accepts.
    Ready {
        /// Its process id.
        pid: u32,
        /// It takes UDP sessions ([`Transfer::UdpSessions`]); an older
        /// process does not say so, and the old one ends them instead.
        #[serde(default)]
        udp_sessions: bool,
        /// It reads [`Transfer::Draining`].
        #[serde(default)]
        draining: bool,
    },
    /// It cannot take over, and says why.
    Failed {
        /// Why.
        reason: String,
    },
}

/// What follows the new process's [`Answer::Ready`] on the socket, from the
/// old process: established connections as they become movable, then the end.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Transfer {
    /// Connections, each with two descriptors (client, host) in this order.
    Connections(Vec<crate::proxy::moved::MovedConnection>),
    /// UDP sessions, each with its connected socket, before any connection
    /// that goes quiet later; `last` on the final message (sent even when
    /// there are none), after which the new process's UDP listeners receive.
    UdpSessions {
        sessions: Vec<crate::proxy::udp_moved::MovedSession>,
        last: bool,
    },
    /// The connections open in the old process after a move, each time
    /// they changed: the new process lists them, closes them through
    /// [`Ask::Close`] and its control socket answers for them (those that
    /// move later are its own) until `Done`.
    Draining(Vec<crate::state::DrainingConnection>),
    /// Nothing more will move and nothing is left in the old process;
    /// `moved` moved in all. With what the old process counted since it
    /// handed over (its last clients, the bytes of connections before they
    /// moved and of those that drained there), for the new one to add.
    Done {
        /// Connections moved in all.
        moved: u64,
        /// Hosts' counts since the hand-over.
        #[serde(default)]
        hosts: Vec<HostEntry>,
        /// Services' counts since the hand-over.
        #[serde(default)]
        services: Vec<ServiceEntry>,
    },
}

/// What the new process asks of the old one, on the same socket, once the
/// old one told it what drains there.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Ask {
    /// Close connection `id` (an administrator's close in the new process).
    Close {
        /// The connection.
        id: u64,
    },
}

/// Reads a handover message, refusing a version this txlb does not read
/// before looking at the rest.
pub(crate) fn read(body: &[u8]) -> Result<Handover, String> {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let Version { version } = serde_json::from_slice(body)
        .map_err(|e| format!("the handed-over state has no format version: {e}"))?;
    if !(OLDEST_READ..=FORMAT_VERSION).contains(&version) {
        return Err(format!(
            "the handed-over state is format version {version}; this txlb reads versions \
             {OLDEST_READ} to {FORMAT_VERSION}"
        ));
    }
    serde_json::from_slice(body).map_err(|e| format!("the handed-over state: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(version: u32) -> Vec<u8> {
        serde_json::to_vec(&Handover {
            version,
            from: Predecessor {
                pid: 7,
                version: "0.1.0".into(),
                at_ms: 1,
            },
            sockets: vec![
                SocketEntry::Listener {
                    service: "web".into(),
                    listen: "127.0.0.1:0".into(),
                },
                SocketEntry::Control,
            ],
            config: "<config/>".into(),
            baseline: None,
            hosts: vec![HostEntry {
                service: "web".into(),
                group: "g".into(),
                host: "h".into(),
                carried: CarriedHost {
                    admin_down: true,
                    total: 5,
                    ..CarriedHost::default()
                },
            }],
            services: Vec::new(),
            fleet_revision: None,
            numbered_after: 0,
            udp_sessions: false,
            names: vec![NameEntry {
                name: "app.test".into(),
                addrs: vec!["127.0.0.1".parse().unwrap()],
            }],
        })
        .unwrap()
    }

    #[test]
    fn its_own_version_reads_back() {
        let read = read(&message(FORMAT_VERSION)).unwrap();
        assert_eq!(read.sockets[1], SocketEntry::Control);
        assert!(read.hosts[0].carried.admin_down);
        assert_eq!(read.hosts[0].carried.total, 5);
        assert_eq!(
            read.names[0].addrs,
            ["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    #[test]
    fn a_newer_version_is_refused_with_both_numbers() {
        let error = read(&message(FORMAT_VERSION + 1)).unwrap_err();
        assert!(
            error.contains(&format!("format version {}", FORMAT_VERSION + 1)),
            "{error}"
        );
        assert!(error.contains(&format!("{OLDEST_READ} to {FORMAT_VERSION}")));
        assert!(read(b"{}").unwrap_err().contains("no format version"));
        assert!(read(b"not json").is_err());
    }

    #[test]
    fn the_first_version_without_later_fields_reads() {
        // What version 1 must always accept: only the required fields.
        let minimal = br#"{"version":1,"from":{"pid":3,"version":"0.1.0","at_ms":0},
            "sockets":[],"config":"<config/>"}"#;
        let read = read(minimal).unwrap();
        assert!(read.hosts.is_empty() && read.baseline.is_none());
        // An old process that does not send its UDP sessions: nobody waits.
        assert!(!read.udp_sessions);
    }

    #[test]
    fn an_older_new_process_is_sent_only_what_it_reads() {
        // Its ready answer names neither UDP sessions nor draining lists.
        let answer: Answer = serde_json::from_str(r#"{"ready":{"pid":7}}"#).unwrap();
        let Answer::Ready {
            pid,
            udp_sessions,
            draining,
        } = answer
        else {
            panic!("not ready: {answer:?}");
        };
        assert_eq!(pid, 7);
        assert!(!udp_sessions && !draining);
        let ours = serde_json::to_string(&Answer::Ready {
            pid: 7,
            udp_sessions: true,
            draining: true,
        })
        .unwrap();
        assert_eq!(
            ours,
            r#"{"ready":{"pid":7,"udp_sessions":true,"draining":true}}"#
        );
    }
}
