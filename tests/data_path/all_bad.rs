//! `allBad="open"` end to end through the `txlb` binary: when every host of
//! the enabled group is bad (here by a check probing a port nobody listens
//! on, while the hosts themselves serve) and no backup group serves, clients
//! are tried on the bad hosts anyway; with the default, `close`, they are
//! refused.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::Hold;
use common::binary::Txlb;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// One service whose group has `attrs` and a check bound to fail: it probes
/// `probe`, where nothing listens.
fn config(attrs: &str, probe: SocketAddr, hosts: &[(&str, SocketAddr)]) -> String {
    format!(
        "<config>\n  <service name=\"svc\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
         <group name=\"g\" scheduler=\"leastc\" enable=\"true\" {attrs}>\n      \
         <check type=\"tcp\" interval=\"0.1\" timeout=\"0.5\" fall=\"1\" port=\"{}\"/>\n{}    \
         </group>\n  </service>\n</config>\n",
        probe.port(),
        common::host_lines(hosts)
    )
}

/// What a client gets: the serving host's name line, or nothing.
async fn answer(lb: SocketAddr) -> String {
    let mut s = TcpStream::connect(lb).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Starts txlb with `attrs` on the group and waits until both hosts are bad.
async fn all_bad(attrs: &str) -> Txlb {
    let h1 = common::named_backend("h1", Hold::Close).await;
    let h2 = common::named_backend("h2", Hold::Close).await;
    let txlb = Txlb::start_xml(
        &config(attrs, common::closed_port(), &[("h1", h1), ("h2", h2)]),
        None,
    );
    let both = common::eventually(Duration::from_secs(8), || async {
        txlb.count("host marked bad") == 2
    })
    .await;
    assert!(both, "both hosts go bad: {}", txlb.log_text());
    txlb
}

#[tokio::test]
async fn all_bad_open_serves_clients_on_bad_hosts() {
    let txlb = all_bad(r#"allBad="open""#).await;
    let lb = txlb.listener();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        let got = answer(lb).await;
        assert!(got == "h1\n" || got == "h2\n", "served: {got:?}");
        seen.insert(got);
    }
    assert_eq!(seen.len(), 2, "spread over the bad hosts: {seen:?}");
    assert_eq!(txlb.count("host back in rotation"), 0, "still bad");
}

#[tokio::test]
async fn all_bad_close_by_default_refuses_clients() {
    let txlb = all_bad("").await;
    let lb = txlb.listener();
    for _ in 0..3 {
        assert_eq!(answer(lb).await, "", "refused");
    }
}
