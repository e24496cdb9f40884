//! Listeners handed over at start (`BalancerBuilder::inherited_listeners`, what
//! systemd socket activation feeds): matched to configured listeners by address,
//! shared by every worker, kept for a later reload, and given back when a change
//! that took one fails.

use crate::common;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use common::{Hold, config, host, named_backend, which_backend};
use txlb::Balancer;
use txlb::Command;
use txlb::config::{ListenAddr, ListenHost};
use txlb::scheduler::SchedulerKind;

/// A listening socket as a service manager would pass it.
fn passed(addr: &str) -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind(addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let local = listener.local_addr().unwrap();
    (listener, local)
}

fn listen(host: ListenHost, port: u16) -> ListenAddr {
    ListenAddr { host, port }
}

#[tokio::test]
async fn a_wildcard_listener_takes_a_passed_wildcard_socket_on_every_worker() {
    let backend = named_backend("h", Hold::Close).await;
    let (socket, local) = passed("0.0.0.0:0");
    let mut config = config(SchedulerKind::RoundRobin, vec![host("h", backend, 1)]);
    config.services[0].listeners = vec![listen(ListenHost::Any, local.port()).into()];
    // Binding *:PORT itself would fail: the passed socket holds the port.
    let balancer = Balancer::builder(config)
        .workers(2)
        .inherited_listeners(vec![socket])
        .start()
        .await
        .unwrap();
    assert_eq!(balancer.local_addr("svc", None), Some(local));
    let through = SocketAddr::from(([127, 0, 0, 1], local.port()));
    for _ in 0..6 {
        assert_eq!(which_backend(through).await.0, "h");
    }
    balancer.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_socket_no_listener_wants_waits_for_a_reload_and_survives_a_failed_one() {
    let backend = named_backend("h", Hold::Close).await;
    let (socket, local) = passed("127.0.0.1:0");
    // The test keeps a duplicate: were the passed socket closed and the port bound
    // afresh, that bind would fail.
    let _holder = socket.try_clone().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = config(SchedulerKind::RoundRobin, vec![host("h", backend, 1)]);
    let balancer = Balancer::builder(config.clone())
        .workers(1)
        .inherited_listeners(vec![socket])
        .start()
        .await
        .unwrap();
    assert_eq!(balancer.listeners().len(), 1);

    let wanted = listen(ListenHost::Ip(local.ip()), local.port());
    let busy = listen(
        ListenHost::Ip(local.ip()),
        taken.local_addr().unwrap().port(),
    );
    // A change that takes the passed socket but fails on another listener…
    let mut failing = config.clone();
    failing.services[0]
        .listeners
        .extend([wanted.clone().into(), busy.into()]);
    let refused = balancer.apply(Command::Replace(Box::new(failing))).await;
    assert!(refused.is_err());
    // …gives it back: the next change still finds it.
    let mut next = config;
    next.services[0].listeners.push(wanted.clone().into());
    balancer
        .apply(Command::Replace(Box::new(next)))
        .await
        .unwrap();
    assert_eq!(balancer.local_addr("svc", Some(&wanted)), Some(local));
    assert_eq!(which_backend(local).await.0, "h");
    balancer.shutdown(Duration::from_secs(1)).await;
}
