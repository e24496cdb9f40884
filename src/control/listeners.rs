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

/// A listener bound but not yet accepting.
pub(super) struct BoundSocket {
    service: Arc<str>,
    configured: ListenAddr,
    local: SocketAddr,
    listener: tokio::net::TcpListener,
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

/// Binds every listener or none.
pub(super) fn bind_all(keys: Vec<ListenerKey>) -> Result<Vec<BoundSocket>, ControlError> {
    keys.into_iter()
        .map(|(service, configured)| {
            let bound = bind_listen_addr(&configured).and_then(|socket| {
                let local = socket.local_addr()?;
                // Registering with the reactor needs the runtime context, which
                // every caller of the controller has.
                Ok((local, tokio::net::TcpListener::from_std(socket)?))
            });
            let (local, listener) = bound.map_err(|source| ControlError::BindListener {
                listen: configured.to_string(),
                source,
            })?;
            Ok(BoundSocket {
                service,
                configured,
                local,
                listener,
            })
        })
        .collect()
}

fn bind_listen_addr(listen: &ListenAddr) -> std::io::Result<std::net::TcpListener> {
    let ip = match &listen.host {
        ListenHost::Any => {
            // Every address: dual-stack IPv6 where the system has it.
            return bind(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                listen.port,
            ))
            .or_else(|_| {
                bind(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    listen.port,
                ))
            });
        }
        ListenHost::Ip(ip) => *ip,
        ListenHost::Name(name) => (name.as_str(), listen.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{name:?} has no address")))?
            .ip(),
    };
    bind(SocketAddr::new(ip, listen.port))
}

/// Starts accepting on a bound socket.
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
    tokio::spawn(task.run(bound.listener));
    RunningListener {
        service: bound.service,
        configured: bound.configured,
        local,
        stop,
    }
}
