//! The controller's listeners: which to bind or close when the configuration
//! changes, and the tasks that accept on them.
//!
//! A listener is known by its service and address: a command that keeps both
//! keeps the socket, and only the listener's settings (PROXY acceptance,
//! routes) are swapped in place by [`refresh`].

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::{ControlError, Controller};
use crate::config::{
    Config, ListenAddr, ListenHost, Listener, ListenerTls, ServiceConfig, Transport,
};
use crate::events::{Event, Events};
use crate::proxy::{
    AcceptProxy, ListenerSettings, ListenerTask, UdpListenerTask, bind, check_free,
    in_use_by_another, ipv6_unavailable,
};
use crate::tls::Terminator;

/// A listener that is accepting.
pub(super) struct RunningListener {
    pub(super) service: Arc<str>,
    pub(super) configured: ListenAddr,
    pub(super) local: SocketAddr,
    /// Cancelled to close this listener alone; a child of the engine's token.
    pub(super) stop: CancellationToken,
    /// The settings its accept tasks hand to each client; written by
    /// [`refresh`] under the controller's lock.
    pub(super) settings: Arc<ArcSwap<ListenerSettings>>,
    /// A UDP service's listener (one socket, `proxy/udp.rs`), whose settings
    /// are its service's, read per new session.
    pub(super) udp: bool,
}

/// A listener bound but not yet accepting: one socket per worker (or one).
pub(super) struct BoundSocket {
    service: Arc<str>,
    configured: ListenAddr,
    local: SocketAddr,
    sockets: Vec<std::net::TcpListener>,
    /// A UDP service's one socket (then `sockets` is empty).
    udp: Option<std::net::UdpSocket>,
    /// Whether `sockets` are copies of a socket handed over at start.
    from_inherited: bool,
    /// Settings from the first accepted client on.
    settings: ListenerSettings,
}

type ListenerKey = (Arc<str>, ListenAddr);

/// A listener's key and whether it is UDP: a service changing its protocol
/// changes its listeners.
pub(super) type RunningKey = (ListenerKey, bool);

fn is_udp(service: &ServiceConfig) -> bool {
    service.options.protocol == Transport::Udp
}

/// A listener of a configuration: its key, its service and itself.
pub(super) type NewListener<'a> = (ListenerKey, &'a ServiceConfig, &'a Listener);

/// Every listener of `config` in order.
fn wanted(config: &Config) -> impl Iterator<Item = NewListener<'_>> + '_ {
    config.services.iter().flat_map(|service| {
        let name: Arc<str> = Arc::from(service.name.as_str());
        service
            .listeners
            .iter()
            .map(move |l| ((name.clone(), l.addr.clone()), service, l))
    })
}

/// Listeners to add and to remove to go from `running` to `next`. Refuses a
/// configuration that names the same (non-zero port) address twice.
pub(super) fn diff<'a>(
    running: &[RunningListener],
    next: &'a Config,
) -> Result<(Vec<NewListener<'a>>, HashSet<RunningKey>), ControlError> {
    // Two services on one address were refused by the command's check
    // (`Config::check`), before anything is bound.
    let wanted_list: Vec<NewListener> = wanted(next).collect();
    let have: HashSet<RunningKey> = running
        .iter()
        .map(|l| ((l.service.clone(), l.configured.clone()), l.udp))
        .collect();
    let wanted_set: HashSet<RunningKey> = wanted_list
        .iter()
        .map(|(k, s, _)| (k.clone(), is_udp(s)))
        .collect();
    let added = wanted_list
        .into_iter()
        .filter(|(k, s, _)| !have.contains(&(k.clone(), is_udp(s))))
        .collect();
    let removed = have.difference(&wanted_set).cloned().collect();
    Ok((added, removed))
}

/// The TLS of every terminating listener of a configuration, by listener.
pub(super) type Terminators = HashMap<ListenerKey, Vec<Arc<Terminator>>>;

/// Builds the TLS of every terminating listener of `next` (`tls::load`:
/// certificates, keys and client CAs read from their files), or refuses the
/// change with the first that does not load. A running listener whose TLS
/// is unchanged keeps its own, unless `reread` (a reload re-reads every
/// file). Certificates near their expiry are warned about.
pub(super) fn terminators(
    running: &[RunningListener],
    next: &Config,
    reread: bool,
    acme: &crate::tls::AcmeCerts,
) -> Result<Terminators, ControlError> {
    let mut out: Terminators = HashMap::new();
    for (key, _, listener) in wanted(next) {
        let Some(tls) = &listener.tls else {
            continue;
        };
        let kept = (!reread)
            .then(|| {
                running
                    .iter()
                    .filter(|r| r.service == key.0 && r.configured == key.1)
                    .find_map(|r| {
                        let settings = r.settings.load();
                        let t = settings.tls.as_ref()?;
                        (t.terminator.config == *tls).then(|| t.terminator.clone())
                    })
            })
            .flatten();
        let terminator = match kept {
            Some(kept) => kept,
            None => {
                let loaded = crate::tls::load_in(tls, acme).map_err(|e| {
                    let at = e.at.map(|at| format!("{at}: ")).unwrap_or_default();
                    ControlError::Invalid(format!(
                        "{at}service {:?}, listener {}: {}",
                        key.0, key.1, e.message
                    ))
                })?;
                crate::tls::warn_expiring(
                    &key.1.to_string(),
                    &loaded.certs,
                    std::time::SystemTime::now(),
                );
                Arc::new(loaded)
            }
        };
        out.entry(key).or_default().push(terminator);
    }
    Ok(out)
}

/// The terminator built for a listener of `key` with `tls`.
fn terminator_for(
    terminators: &Terminators,
    key: &ListenerKey,
    tls: Option<&ListenerTls>,
) -> Option<Arc<Terminator>> {
    let tls = tls?;
    terminators
        .get(key)?
        .iter()
        .find(|t| t.config == *tls)
        .cloned()
}

/// Binds every listener or none, `copies` sockets each (one per worker). A
/// listener whose address matches a socket in `inherited` uses that socket instead
/// of binding; on failure such sockets go back for a later attempt. An address
/// another program listens on is refused, never shared; `own` are the addresses
/// this process's running listeners hold (one moving to another service may
/// share its address for the moment both exist).
pub(super) fn bind_all(
    keys: Vec<NewListener<'_>>,
    copies: usize,
    inherited: &Inherited,
    own: &[SocketAddr],
    terminators: &Terminators,
) -> Result<Vec<BoundSocket>, ControlError> {
    let mut all: Vec<BoundSocket> = Vec::new();
    for ((service, configured), service_config, listener) in keys {
        let terminator = terminator_for(
            terminators,
            &(service.clone(), configured.clone()),
            listener.tls.as_ref(),
        );
        if is_udp(service_config) {
            match bind_udp(&configured) {
                Ok((local, socket)) => {
                    all.push(BoundSocket {
                        from_inherited: false,
                        service,
                        configured,
                        local,
                        sockets: Vec::new(),
                        udp: Some(socket),
                        settings: ListenerSettings::new(
                            &service_config.options,
                            listener,
                            None,
                            None,
                        ),
                    });
                    continue;
                }
                Err(source) => {
                    for b in all.into_iter().filter(|b| b.from_inherited) {
                        inherited.give_back(b.sockets);
                    }
                    return Err(ControlError::BindListener {
                        listen: configured.to_string(),
                        source,
                    });
                }
            }
        }
        let bound = match inherited.take(&configured) {
            Some(socket) => inherited.share(socket, copies).map(|(l, s)| (l, s, true)),
            None => bind_copies(&configured, copies, own).map(|(l, s)| (l, s, false)),
        };
        match bound {
            Ok((local, sockets, from_inherited)) => all.push(BoundSocket {
                from_inherited,
                service,
                configured,
                local,
                sockets,
                udp: None,
                settings: ListenerSettings::new(
                    &service_config.options,
                    listener,
                    None,
                    terminator,
                ),
            }),
            Err(source) => {
                for b in all.into_iter().filter(|b| b.from_inherited) {
                    inherited.give_back(b.sockets);
                }
                return Err(ControlError::BindListener {
                    listen: configured.to_string(),
                    source,
                });
            }
        }
    }
    Ok(all)
}

/// Binds `listen` once, then `copies - 1` more times on the very address the first
/// got (port 0 becomes a real port), all with SO_REUSEPORT when there are copies.
fn bind_copies(
    listen: &ListenAddr,
    copies: usize,
    own: &[SocketAddr],
) -> std::io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let reuse_port = copies > 1;
    let first = bind_listen_addr(listen, reuse_port, own)?;
    let local = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..copies {
        sockets.push(bind(local, true)?);
    }
    Ok((local, sockets))
}

/// The first socket of a listener. With SO_REUSEPORT (several workers) the
/// address is first checked free, so that no other program's listener on it is
/// joined: the kernel would split its clients between the two. A port 0 bind is
/// given a port no one uses.
///
/// Every configured form of "every address" (`*`, `0.0.0.0`, `[::]`, none)
/// binds one dual-stack `[::]` socket; only on a machine without IPv6 does it
/// bind `0.0.0.0` instead. Never when another program holds the IPv6 (or IPv4)
/// side: serving IPv4 alone would silently leave IPv6 clients to that program.
fn bind_listen_addr(
    listen: &ListenAddr,
    reuse_port: bool,
    own: &[SocketAddr],
) -> std::io::Result<std::net::TcpListener> {
    let bind_first = |addr: SocketAddr| {
        let ours = addr.port() == 0 || own.contains(&addr);
        if reuse_port && !ours {
            check_free(addr)?;
        }
        bind(addr, reuse_port).map_err(|error| match error.kind() {
            std::io::ErrorKind::AddrInUse if !ours => in_use_by_another(),
            _ => error,
        })
    };
    let ip = match &listen.host {
        ListenHost::Any => {
            let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), listen.port);
            let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), listen.port);
            return match bind_first(v6) {
                Err(error) if ipv6_unavailable(&error) => {
                    tracing::debug!(%error, "no IPv6 on this machine: listening on IPv4 only");
                    bind_first(v4)
                }
                bound => bound,
            };
        }
        ListenHost::Ip(ip) => *ip,
        ListenHost::Name(name) => (name.as_str(), listen.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{name:?} has no address")))?
            .ip(),
    };
    bind_first(SocketAddr::new(ip, listen.port))
}

/// A UDP service's socket on `listen`: one socket (no `SO_REUSEPORT` copies:
/// its sessions are keyed by client in one table); "every address" is one
/// dual-stack `[::]` socket, or `0.0.0.0` on a machine without IPv6.
fn bind_udp(listen: &ListenAddr) -> std::io::Result<(SocketAddr, std::net::UdpSocket)> {
    let ip = match &listen.host {
        ListenHost::Any => {
            let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), listen.port);
            let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), listen.port);
            let socket = match std::net::UdpSocket::bind(v6) {
                Err(error) if ipv6_unavailable(&error) => std::net::UdpSocket::bind(v4)?,
                bound => bound?,
            };
            return Ok((socket.local_addr()?, socket));
        }
        ListenHost::Ip(ip) => *ip,
        ListenHost::Name(name) => (name.as_str(), listen.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{name:?} has no address")))?
            .ip(),
    };
    let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, listen.port))?;
    Ok((socket.local_addr()?, socket))
}

/// Starts accepting: each socket on its own worker (or on the current runtime).
pub(super) fn start(bound: BoundSocket, controller: &Controller) -> RunningListener {
    let stop = controller.stop_accepting.child_token();
    let settings = Arc::new(ArcSwap::from_pointee(bound.settings));
    let local = bound.local;
    if let Some(socket) = bound.udp {
        controller.data.events.emit(Event::ListenerAdded {
            service: bound.service.to_string(),
            listen: bound.configured.to_string(),
            local,
        });
        let task = UdpListenerTask {
            service: bound.service.clone(),
            data: controller.data.clone(),
            stop: stop.clone(),
        };
        let receive = async move {
            let socket = socket
                .set_nonblocking(true)
                .and_then(|()| tokio::net::UdpSocket::from_std(socket));
            match socket {
                Ok(socket) => task.run(socket).await,
                Err(error) => {
                    tracing::error!(service = %task.service, %local, %error, "cannot start receiving")
                }
            }
        };
        match controller.workers.first() {
            Some(worker) => drop(worker.spawn(receive)),
            None => drop(tokio::spawn(receive)),
        }
        return RunningListener {
            service: bound.service,
            configured: bound.configured,
            local,
            stop,
            settings,
            udp: true,
        };
    }
    let task = ListenerTask {
        service: bound.service.clone(),
        settings: settings.clone(),
        data: controller.data.clone(),
        stop_accepting: stop.clone(),
        stop_connections: controller.stop_connections.clone(),
        tracker: controller.connections.clone(),
    };
    controller.data.events.emit(Event::ListenerAdded {
        service: bound.service.to_string(),
        listen: bound.configured.to_string(),
        local,
    });
    for (index, socket) in bound.sockets.into_iter().enumerate() {
        let task = task.clone();
        // Accepted sockets inherit TCP_NODELAY from the listener on Linux: one
        // setsockopt here instead of one per connection.
        if let Err(error) = socket2::SockRef::from(&socket).set_tcp_nodelay(true) {
            tracing::debug!(%local, %error, "TCP_NODELAY on the listener");
        }
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
        settings,
        udp: false,
    }
}

/// Gives every running listener the settings (PROXY acceptance, routes)
/// `config` now asks of it, without touching its socket; clients accepted from
/// then on get them (one accepted while the command is applied may still get
/// the old ones, as with any reload). Route counters carry over. Listeners
/// sharing a key (port 0 twice) are matched to the configuration's in order.
pub(super) fn refresh(
    running: &[RunningListener],
    config: &Config,
    terminators: &Terminators,
    events: &Events,
) {
    let mut wanted: Vec<Option<NewListener>> = wanted(config).map(Some).collect();
    for listener in running {
        let found = wanted.iter_mut().find(|w| {
            w.as_ref().is_some_and(|((service, listen), ..)| {
                *service == listener.service && *listen == listener.configured
            })
        });
        let Some((_, service, wanted)) = found.and_then(Option::take) else {
            continue; // being removed
        };
        let proxy = AcceptProxy::of(&service.options, &wanted.options);
        let key = (listener.service.clone(), listener.configured.clone());
        let terminator = terminator_for(terminators, &key, wanted.tls.as_ref());
        let current = listener.settings.load();
        if current.same_as(&proxy, terminator.as_ref(), wanted) {
            continue;
        }
        events.emit(Event::ListenerChanged {
            service: listener.service.to_string(),
            listen: listener.configured.to_string(),
            routes: wanted.routes.len(),
        });
        let next = ListenerSettings::new(&service.options, wanted, Some(&current), terminator);
        listener.settings.store(Arc::new(next));
    }
}

// --- Sockets handed over at start (systemd socket activation) ----------------
//
// The process may start with listening sockets it did not bind (systemd's
// `LISTEN_FDS`). They wait here until a listener with their address is added,
// which then uses one instead of binding. One kernel socket cannot be split into
// `SO_REUSEPORT` copies, and binding extra copies beside it may be impossible (a
// privileged port without the capability), so every worker gets a duplicate
// descriptor of the same socket: the workers share its one accept queue. A
// listener removed by a reload closes its socket; adding it back binds afresh.

/// Sockets handed over at start, waiting for the listener with their address.
#[derive(Default)]
pub(crate) struct Inherited {
    /// Written by the builder before the first command and by `bind_all` (take,
    /// give back), both under the controller's state lock or before it exists;
    /// a lock because the controller is shared.
    sockets: Mutex<Vec<std::net::TcpListener>>,
}

impl Inherited {
    /// Adds sockets to wait for their listener.
    pub(crate) fn put(&self, sockets: Vec<std::net::TcpListener>) {
        self.lock().extend(sockets);
    }

    /// Addresses of the sockets no listener has taken.
    pub(crate) fn unused(&self) -> Vec<SocketAddr> {
        self.lock()
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<std::net::TcpListener>> {
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes and returns the socket bound to `listen`'s address, if any. A
    /// configured `*` matches a socket on any unspecified address, a name matches
    /// a socket on one of its addresses; port 0 never matches.
    fn take(&self, listen: &ListenAddr) -> Option<std::net::TcpListener> {
        if listen.port == 0 {
            return None;
        }
        let matches = |local: SocketAddr| {
            local.port() == listen.port
                && match &listen.host {
                    ListenHost::Any => local.ip().is_unspecified(),
                    ListenHost::Ip(ip) => local.ip() == *ip,
                    ListenHost::Name(name) => (name.as_str(), listen.port)
                        .to_socket_addrs()
                        .is_ok_and(|mut addrs| addrs.any(|a| a.ip() == local.ip())),
                }
        };
        let mut sockets = self.lock();
        let index = sockets
            .iter()
            .position(|s| s.local_addr().is_ok_and(matches))?;
        Some(sockets.swap_remove(index))
    }

    /// `copies` descriptors of `socket`, with its address. On failure the socket
    /// goes back.
    fn share(
        &self,
        socket: std::net::TcpListener,
        copies: usize,
    ) -> std::io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
        let shared = socket.local_addr().and_then(|local| {
            let dups = (1..copies)
                .map(|_| socket.try_clone())
                .collect::<std::io::Result<Vec<_>>>()?;
            Ok((local, dups))
        });
        match shared {
            Ok((local, dups)) => {
                tracing::info!(%local, "listening on a socket passed by the service manager");
                let mut sockets = vec![socket];
                sockets.extend(dups);
                Ok((local, sockets))
            }
            Err(error) => {
                self.lock().push(socket);
                Err(error)
            }
        }
    }

    /// Puts back the first of `sockets` (the others are duplicates).
    fn give_back(&self, sockets: Vec<std::net::TcpListener>) {
        if let Some(socket) = sockets.into_iter().next() {
            self.lock().push(socket);
        }
    }
}
