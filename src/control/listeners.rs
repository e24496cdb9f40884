//! The controller's listeners: which to bind or close when the configuration
//! changes, and the tasks that accept on them.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{ControlError, Controller};
use crate::config::{Config, ListenAddr, ListenHost};
use crate::events::Event;
use crate::proxy::{ListenerTask, bind};

/// A listener that is accepting.
pub(super) struct RunningListener {
    pub(super) service: Arc<str>,
    pub(super) configured: ListenAddr,
    pub(super) local: SocketAddr,
    /// Cancelled to close this listener alone; a child of the engine's token.
    pub(super) stop: CancellationToken,
}

/// A listener bound but not yet accepting: one socket per worker (or one).
pub(super) struct BoundSocket {
    service: Arc<str>,
    configured: ListenAddr,
    local: SocketAddr,
    sockets: Vec<std::net::TcpListener>,
}

type ListenerKey = (Arc<str>, ListenAddr);

/// Listeners to add and to remove to go from `running` to `next`. Refuses a
/// configuration that names the same (non-zero port) address twice.
pub(super) fn diff(
    running: &[RunningListener],
    next: &Config,
) -> Result<(Vec<ListenerKey>, HashSet<ListenerKey>), ControlError> {
    let mut wanted: Vec<ListenerKey> = Vec::new();
    for service in &next.services {
        for listen in &service.listeners {
            if listen.port != 0
                && let Some((owner, _)) = wanted.iter().find(|(_, l)| l == listen)
            {
                return Err(ControlError::DuplicateListener {
                    service: owner.to_string(),
                    listen: listen.to_string(),
                });
            }
            wanted.push((Arc::from(service.name.as_str()), listen.clone()));
        }
    }
    let have: HashSet<ListenerKey> = running
        .iter()
        .map(|l| (l.service.clone(), l.configured.clone()))
        .collect();
    let wanted_set: HashSet<ListenerKey> = wanted.iter().cloned().collect();
    let added = wanted.into_iter().filter(|k| !have.contains(k)).collect();
    let removed = have.difference(&wanted_set).cloned().collect();
    Ok((added, removed))
}

/// Binds every listener or none, `copies` sockets each (one per worker).
pub(super) fn bind_all(
    keys: Vec<ListenerKey>,
    copies: usize,
) -> Result<Vec<BoundSocket>, ControlError> {
    keys.into_iter()
        .map(|(service, configured)| {
            let bound =
                bind_copies(&configured, copies).map_err(|source| ControlError::BindListener {
                    listen: configured.to_string(),
                    source,
                })?;
            Ok(BoundSocket {
                service,
                configured,
                local: bound.0,
                sockets: bound.1,
            })
        })
        .collect()
}

/// Binds `listen` once, then `copies - 1` more times on the very address the first
/// got (port 0 becomes a real port), all with SO_REUSEPORT when there are copies.
fn bind_copies(
    listen: &ListenAddr,
    copies: usize,
) -> std::io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let reuse_port = copies > 1;
    let first = bind_listen_addr(listen, reuse_port)?;
    let local = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..copies {
        sockets.push(bind(local, true)?);
    }
    Ok((local, sockets))
}

fn bind_listen_addr(
    listen: &ListenAddr,
    reuse_port: bool,
) -> std::io::Result<std::net::TcpListener> {
    let ip = match &listen.host {
        ListenHost::Any => {
            // Every address: dual-stack IPv6 where the system has it.
            let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), listen.port);
            let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), listen.port);
            return bind(v6, reuse_port).or_else(|_| bind(v4, reuse_port));
        }
        ListenHost::Ip(ip) => *ip,
        ListenHost::Name(name) => (name.as_str(), listen.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{name:?} has no address")))?
            .ip(),
    };
    bind(SocketAddr::new(ip, listen.port), reuse_port)
}

/// Starts accepting: each socket on its own worker (or on the current runtime).
pub(super) fn start(bound: BoundSocket, controller: &Controller) -> RunningListener {
    let stop = controller.stop_accepting.child_token();
    let task = ListenerTask {
        service: bound.service.clone(),
        data: controller.data.clone(),
        stop_accepting: stop.clone(),
        stop_connections: controller.stop_connections.clone(),
        tracker: controller.connections.clone(),
    };
    let local = bound.local;
    controller.data.events.emit(Event::ListenerAdded {
        service: bound.service.to_string(),
        listen: bound.configured.to_string(),
        local,
    });
    for (index, socket) in bound.sockets.into_iter().enumerate() {
        let task = task.clone();
        // Registered with the reactor of the runtime that will poll it.
        let accept = async move {
            match tokio::net::TcpListener::from_std(socket) {
                Ok(listener) => task.run(listener).await,
                Err(error) => {
                    tracing::error!(service = %task.service, %local, %error, "cannot start accepting")
                }
            }
        };
        match controller.workers.get(index) {
            Some(worker) => drop(worker.spawn(accept)),
            None => drop(tokio::spawn(accept)),
        }
    }
    RunningListener {
        service: bound.service,
        configured: bound.configured,
        local,
        stop,
    }
}
