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

/// Starts txlb with `attrs` on the group and waits until both hosts are bad;
/// also says where the check probes.
async fn all_bad(attrs: &str) -> (Txlb, SocketAddr) {
    let h1 = common::named_backend("h1", Hold::Close).await;
    let h2 = common::named_backend("h2", Hold::Close).await;
    let probe = common::closed_port();
    let txlb = Txlb::start_xml(&config(attrs, probe, &[("h1", h1), ("h2", h2)]), None);
    let both = common::eventually(Duration::from_secs(8), || async {
        txlb.count("host marked bad") == 2
    })
    .await;
    assert!(both, "both hosts go bad: {}", txlb.log_text());
    (txlb, probe)
}

/// The log line of `Event::AllBadForced`, and of its end.
const FORCED: &str = "every host of the group is bad: trying them anyway";
const FORCED_ENDED: &str = "no longer trying bad hosts";

#[tokio::test]
async fn all_bad_open_serves_clients_on_bad_hosts_and_says_so_once() {
    let (txlb, probe) = all_bad(r#"allBad="open""#).await;
    let lb = txlb.listener();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        let got = answer(lb).await;
        assert!(got == "h1\n" || got == "h2\n", "served: {got:?}");
        seen.insert(got);
    }
    assert_eq!(seen.len(), 2, "spread over the bad hosts: {seen:?}");
    assert_eq!(txlb.count("host back in rotation"), 0, "still bad");
    // Said once, at the edge, not per client.
    let said =
        common::eventually(Duration::from_secs(3), || async { txlb.count(FORCED) == 1 }).await;
    assert!(said, "the forcing is said once: {}", txlb.log_text());
    // The checks pass again: the hosts are back and the forcing ends, once.
    let _probe = std::net::TcpListener::bind(probe).unwrap();
    let ended = common::eventually(Duration::from_secs(8), || async {
        txlb.count(FORCED_ENDED) == 1 && txlb.count("host back in rotation") == 2
    })
    .await;
    assert!(ended, "the forcing ends: {}", txlb.log_text());
    assert_eq!(txlb.count(FORCED), 1, "{}", txlb.log_text());
}

#[tokio::test]
async fn all_bad_close_by_default_refuses_clients() {
    let (txlb, _) = all_bad("").await;
    let lb = txlb.listener();
    for _ in 0..3 {
        assert_eq!(answer(lb).await, "", "refused");
    }
    assert_eq!(txlb.count(FORCED), 0, "nothing is forced");
}
