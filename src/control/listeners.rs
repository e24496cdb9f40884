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
    clients_speak_first, in_use_by_another, ipv6_unavailable, set_inherited_options,
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
    /// A duplicate of each of its sockets (one per worker), for an upgrade to
    /// hand over: the accept tasks own theirs. Closed with the listener.
    pub(super) sockets: Vec<std::os::fd::OwnedFd>,
    /// A UDP service's listener (one socket, `proxy/udp.rs`), whose settings
    /// are its service's, read per new session, and its routes (QUIC).
    pub(super) udp: bool,
    /// Shared with its accept loops: the service its socket was lent to.
    pub(super) successor: Successor,
}

/// Where a listener notes the service its socket was lent to (shared with
/// its accept loops, `ListenerTask::successor`).
pub(super) type Successor = Arc<std::sync::OnceLock<Arc<str>>>;

/// A listener bound but not yet accepting: one socket per worker (or one).
pub(super) struct BoundSocket {
    service: Arc<str>,
    configured: ListenAddr,
    local: SocketAddr,
    sockets: Vec<std::net::TcpListener>,
    /// How many of `sockets` were handed over at start (the others are
    /// duplicates of them), which go back if the change fails.
    from_inherited: usize,
    /// A UDP service's one socket (then `sockets` is empty).
    udp: Option<std::net::UdpSocket>,
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

/// Lends the sockets of running listeners a change moves to another service
/// at the same address (a service renamed, or an address handed from one
/// service to another) to the listener that takes over: it accepts on them
/// (`bind_all` takes them), so no client waiting in their queues is reset
/// and an address bound without `SO_REUSEPORT` (one worker, UDP) is not
/// refused as in use. Those `bind_all` did not take are dropped by
/// [`Inherited::drop_lent`]. Returns, for each lending listener, where to
/// note its successor once the change is sure to apply.
pub(super) fn lend_moved(
    running: &[RunningListener],
    added: &[NewListener<'_>],
    removed: &HashSet<RunningKey>,
    inherited: &Inherited,
) -> Vec<(Successor, Arc<str>)> {
    let mut successors = Vec::new();
    for ((service, configured), service_config, _) in added {
        let udp = is_udp(service_config);
        let Some(from) = running.iter().find(|l| {
            l.configured == *configured
                && l.udp == udp
                && l.service != *service
                && removed.contains(&((l.service.clone(), l.configured.clone()), l.udp))
        }) else {
            continue;
        };
        let copies: Vec<std::net::TcpListener> = from
            .sockets
            .iter()
            .filter_map(|fd| fd.try_clone().ok())
            .map(std::net::TcpListener::from)
            .collect();
        if copies.len() == from.sockets.len() && !copies.is_empty() {
            tracing::debug!(from = %from.service, to = %service, listen = %configured, "listener moves to another service");
            successors.push((from.successor.clone(), service.clone()));
            let key = (service.clone(), configured.clone());
            let mut sockets = inherited.lock();
            sockets.lent_to.push(key.clone());
            sockets.lent.push((key, copies));
        }
    }
    successors
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
            // An upgrade hands a UDP listener's socket over as the TCP ones.
            let handed = inherited
                .take(&service, &configured)
                .and_then(|(group, _)| group.into_iter().next())
                .map(std::os::fd::OwnedFd::from)
                .filter(|fd| socket2::SockRef::from(fd).r#type().ok() == Some(socket2::Type::DGRAM))
                .map(std::net::UdpSocket::from)
                .map(|socket| Ok((socket.local_addr()?, socket)));
            match handed.unwrap_or_else(|| bind_udp(&configured)) {
                Ok((local, socket)) => {
                    all.push(BoundSocket {
                        from_inherited: 0,
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
                Err(source) => return Err(give_back(all, inherited, &configured, source)),
            }
        }
        let bound = match inherited.take(&service, &configured) {
            Some((group, from)) => {
                let count = group.len();
                inherited
                    .share(group, copies, from)
                    .map(|(l, s)| (l, s, count))
            }
            None => bind_copies(&configured, copies, own).map(|(l, s)| (l, s, 0)),
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
            Err(source) => return Err(give_back(all, inherited, &configured, source)),
        }
    }
    Ok(all)
}

/// A bind of `listen` failed: the sockets handed over at start that `bound`
/// took go back for a later attempt; the error says which listener.
fn give_back(
    bound: Vec<BoundSocket>,
    inherited: &Inherited,
    listen: &ListenAddr,
    source: std::io::Error,
) -> ControlError {
    for b in bound.into_iter().filter(|b| b.from_inherited > 0) {
        inherited.give_back(&b.service, &b.configured, b.sockets, b.from_inherited);
    }
    ControlError::BindListener {
        listen: listen.to_string(),
        source,
    }
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
        // For an upgrade to hand over (the new process stops this one's
        // receiving when it serves).
        let handover = std::os::fd::AsFd::as_fd(&socket)
            .try_clone_to_owned()
            .into_iter()
            .collect();
        controller.data.events.emit(Event::ListenerAdded {
            service: bound.service.to_string(),
            listen: bound.configured.to_string(),
            local,
        });
        let task = UdpListenerTask {
            service: bound.service.clone(),
            settings: settings.clone(),
            data: controller.data.clone(),
            stop: stop.clone(),
            handed_over: controller.handed_over.clone(),
            moves: controller.udp_moves.clone(),
        };
        let receive = task.run(socket);
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
            sockets: handover,
            udp: true,
            successor: Arc::default(),
        };
    }
    let successor: Successor = Arc::default();
    let task = ListenerTask {
        service: bound.service.clone(),
        settings: settings.clone(),
        data: controller.data.clone(),
        stop_accepting: stop.clone(),
        stop_connections: controller.stop_connections.clone(),
        tracker: controller.connections.clone(),
        successor: successor.clone(),
    };
    let local = bound.local;
    let sockets = bound
        .sockets
        .iter()
        .filter_map(|s| std::os::fd::AsFd::as_fd(s).try_clone_to_owned().ok())
        .collect();
    controller.data.events.emit(Event::ListenerAdded {
        service: bound.service.to_string(),
        listen: bound.configured.to_string(),
        local,
    });
    for (index, socket) in bound.sockets.into_iter().enumerate() {
        let task = task.clone();
        let client_first = settings.load().client_first;
        if let Err(error) = set_inherited_options(std::os::fd::AsFd::as_fd(&socket), client_first) {
            tracing::debug!(%local, %error, "options of the listening socket");
        }
        // The accept loop counts as a connection until it has stopped: a
        // client it accepts as shutdown (or an upgrade's hand-over) begins is
        // spawned before the wait for open connections can end, rather than
        // on a worker that stops under it.
        let tracked = task.tracker.token();
        // Registered with the reactor of the runtime that will poll it.
        let accept = async move {
            let _tracked = tracked;
            match tokio::net::TcpListener::from_std(socket) {
                Ok(listener) => task.run(listener).await,
                Err(error) => {
                    tracing::error!(service = %task.service, %local, %error, "cannot start accepting")
                }
            }
        };
        // Handed-over sockets may outnumber the workers: each gets a task.
        let worker = (!controller.workers.is_empty())
            .then(|| &controller.workers[index % controller.workers.len()]);
        match worker {
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
        sockets,
        udp: false,
        successor,
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
        let client_first = clients_speak_first(&service.options, wanted);
        if current.client_first != client_first && !listener.udp {
            for socket in &listener.sockets {
                if let Err(error) =
                    set_inherited_options(std::os::fd::AsFd::as_fd(socket), client_first)
                {
                    tracing::warn!(service = %listener.service, local = %listener.local, %error, "clientFirst: options of the listening socket");
                }
            }
        }
        if current.same_as(&proxy, terminator.as_ref(), wanted)
            && current.client_first == client_first
        {
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

// --- Sockets handed over at start (socket activation, an upgrade) -----------
//
// The process may start with listening sockets it did not bind: systemd's
// `LISTEN_FDS`, or the previous process's in an upgrade. They wait here until
// a listener is added that takes them instead of binding.
//
// systemd's are matched by address. One kernel socket cannot be split into
// `SO_REUSEPORT` copies, and binding extra copies beside it may be impossible
// (a privileged port without the capability), so every worker gets a
// duplicate descriptor of the same socket: the workers share its one accept
// queue.
//
// An upgrade's come by listener (service and configured address, so port 0
// finds its port again), each with all its copies: closing one copy of a
// `SO_REUSEPORT` group would reset the clients waiting in its queue, so the
// new process accepts on every one (one task per copy, spread over the
// workers). A listener removed by a reload closes its sockets; adding it back
// binds afresh.

/// Sockets handed over at start, waiting for the listener with their address.
#[derive(Default)]
pub(crate) struct Inherited {
    /// Written by the builder before the first command and by `bind_all` (take,
    /// give back), both under the controller's state lock or before it exists;
    /// a lock because the controller is shared.
    sockets: Mutex<InheritedSockets>,
}

#[derive(Default)]
struct InheritedSockets {
    /// By address (socket activation): one socket each.
    by_address: Vec<std::net::TcpListener>,
    /// By listener (an upgrade): every copy of its socket.
    by_listener: Vec<(ListenerKey, Vec<std::net::TcpListener>)>,
    /// By listener, for the change being made: the sockets of a running
    /// listener its address moves from (see [`lend_moved`]).
    lent: Vec<(ListenerKey, Vec<std::net::TcpListener>)>,
    /// The listeners sockets were lent to, for [`Inherited::drop_lent`].
    lent_to: Vec<ListenerKey>,
}

impl Inherited {
    /// Adds sockets to wait for the listener with their address.
    pub(crate) fn put(&self, sockets: Vec<std::net::TcpListener>) {
        self.lock().by_address.extend(sockets);
    }

    /// Adds the copies of a running listener's socket handed over by an
    /// upgrade, for the listener `configured` of `service`.
    pub(crate) fn put_listener(
        &self,
        service: &str,
        configured: ListenAddr,
        copies: Vec<std::net::TcpListener>,
    ) {
        self.lock()
            .by_listener
            .push(((Arc::from(service), configured), copies));
    }

    /// Addresses of the sockets no listener has taken.
    pub(crate) fn unused(&self) -> Vec<SocketAddr> {
        let sockets = self.lock();
        sockets
            .by_address
            .iter()
            .chain(
                sockets
                    .by_listener
                    .iter()
                    .flat_map(|(_, copies)| copies.first()),
            )
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InheritedSockets> {
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes and returns the sockets for listener `listen` of `service`: the
    /// copies handed over for it by an upgrade, else the socket bound to its
    /// address, if any. A configured `*` matches a socket on any unspecified
    /// address, a name matches a socket on one of its addresses; port 0 never
    /// matches an address.
    fn take(
        &self,
        service: &Arc<str>,
        listen: &ListenAddr,
    ) -> Option<(Vec<std::net::TcpListener>, &'static str)> {
        let mut sockets = self.lock();
        if let Some(index) = sockets
            .lent
            .iter()
            .position(|((s, l), _)| s == service && l == listen)
        {
            return Some((sockets.lent.remove(index).1, "the listener it takes over"));
        }
        if let Some(index) = sockets
            .by_listener
            .iter()
            .position(|((s, l), _)| s == service && l == listen)
        {
            return Some((sockets.by_listener.remove(index).1, "the previous process"));
        }
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
        let index = sockets
            .by_address
            .iter()
            .position(|s| s.local_addr().is_ok_and(matches))?;
        Some((
            vec![sockets.by_address.swap_remove(index)],
            "the service manager",
        ))
    }

    /// At least `copies` descriptors of the sockets of `group` (duplicates
    /// made round the group when it has fewer), with their address; `from`
    /// says who passed them, for the log. On failure the sockets go back.
    fn share(
        &self,
        group: Vec<std::net::TcpListener>,
        copies: usize,
        from: &str,
    ) -> std::io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
        let shared = group.first().map_or_else(
            || Err(std::io::Error::other("no socket")),
            |first| {
                let local = first.local_addr()?;
                let dups = (group.len()..copies)
                    .map(|i| group[i % group.len()].try_clone())
                    .collect::<std::io::Result<Vec<_>>>()?;
                Ok((local, dups))
            },
        );
        match shared {
            Ok((local, dups)) => {
                tracing::info!(%local, sockets = group.len(), "listening on a socket passed by {from}");
                let mut sockets = group;
                sockets.extend(dups);
                Ok((local, sockets))
            }
            Err(error) => {
                let mut inherited = self.lock();
                if group.len() == 1 {
                    inherited.by_address.extend(group);
                }
                Err(error)
            }
        }
    }

    /// Drops the sockets lent for a change that did not take them (it was
    /// refused): they must not hold the address once their listener closes.
    pub(super) fn drop_lent(&self) {
        let mut sockets = self.lock();
        let lent: Vec<ListenerKey> = std::mem::take(&mut sockets.lent_to);
        sockets.lent.clear();
        // A refused change gave back what it had taken, as if inherited.
        sockets.by_listener.retain(|(key, _)| !lent.contains(key));
    }

    /// Puts back the first `count` of `sockets` (the others are duplicates),
    /// for the listener they were taken for.
    fn give_back(
        &self,
        service: &Arc<str>,
        listen: &ListenAddr,
        mut sockets: Vec<std::net::TcpListener>,
        count: usize,
    ) {
        sockets.truncate(count);
        self.lock()
            .by_listener
            .push(((service.clone(), listen.clone()), sockets));
    }
}
