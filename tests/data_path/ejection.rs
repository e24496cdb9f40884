//! Passive checks on live traffic (`failLimit`, `ejectTime`,
//! `maxEjectPercent`) end to end through the `txlb` binary: a host whose port
//! refuses is ejected after exactly `failLimit` failed clients and returns
//! after `ejectTime`, its next ejection lasts twice as long, a host resetting
//! before its first byte counts too, at most `maxEjectPercent` of a group is
//! ejected when every host fails, and a group without `failLimit` keeps
//! txLoadBalancer's rule (one failed connect marks the host bad).

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Hold;
use common::binary::Txlb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One service whose roundr group has `attrs` and `hosts`, with an admin web
/// server whose `/metrics` is public.
fn config(attrs: &str, hosts: &[(&str, SocketAddr)]) -> String {
    let user = &common::admin::users()[0];
    format!(
        "<config>\n  <service name=\"svc\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
         <group name=\"g\" scheduler=\"roundr\" enable=\"true\" {attrs}>\n{}    </group>\n  \
         </service>\n  <admin><web listen=\"127.0.0.1:0\" enable=\"true\" metricsPublic=\"true\"/>\
         <user name=\"{}\" password=\"{}\" access=\"full\"/></admin>\n</config>\n",
        common::host_lines(hosts),
        user.name,
        user.password_hash
    )
}

/// The admin web server's base URL, without the trailing slash.
async fn admin_base(txlb: &Txlb) -> String {
    let base = txlb.logged("admin web server up", "url").await;
    base.trim_end_matches('/').to_string()
}

/// The value of `family` for host `host` of group `g` in `/metrics`.
async fn metric(base: &str, family: &str, host: &str) -> f64 {
    let text = common::admin::get_as(base, common::admin::FULL, "/metrics")
        .await
        .1;
    let series = format!("{family}{{service=\"svc\",group=\"g\",host=\"{host}\"}} ");
    let line = text.lines().find(|l| l.starts_with(&series));
    line.unwrap_or_else(|| panic!("no {series} in {text}"))[series.len()..]
        .trim()
        .parse()
        .unwrap()
}

/// Lines of the log after `skip` that contain `what` and `host=NAME`.
fn count_after(txlb: &Txlb, what: &str, name: &str, skip: usize) -> usize {
    let host = format!("host=\"{name}\"");
    txlb.log
        .lock()
        .unwrap()
        .iter()
        .skip(skip)
        .filter(|l| l.contains(what) && l.contains(&host))
        .count()
}

/// Sends clients, each served by `h2`, until the log after `skip` says `h1`
/// was ejected; returns the clients it took and that line.
async fn clients_until_ejected(txlb: &Txlb, lb: SocketAddr, skip: usize) -> (usize, String) {
    for clients in 1..=40 {
        let (name, _) = common::which_backend(lb).await;
        assert_eq!(name, "h2", "every client is served by the live host");
        if count_after(txlb, "host ejected", "h1", skip) > 0 {
            let line = txlb.wait_for_async("host ejected", skip).await;
            return (clients, line);
        }
    }
    panic!("h1 never ejected:\n{}", txlb.log_text());
}

/// Waits for `h1`'s return after `skip`; returns when it was seen.
async fn returned(txlb: &Txlb, skip: usize) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(10);
    while count_after(txlb, "host ejection over", "h1", skip) == 0 {
        assert!(Instant::now() < deadline, "h1 never returned");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Instant::now()
}

#[tokio::test]
async fn a_refusing_host_is_ejected_after_fail_limit_failures_and_each_ejection_doubles() {
    let h1 = common::closed_port();
    let h2 = common::named_backend("h2", Hold::Close).await;
    let txlb = Txlb::start_xml(
        &config(r#"failLimit="3" ejectTime="1""#, &[("h1", h1), ("h2", h2)]),
        None,
    );
    let lb = txlb.listener();
    let base = admin_base(&txlb).await;

    let (_, line) = clients_until_ejected(&txlb, lb, 0).await;
    let ejected_at = Instant::now();
    assert!(
        line.contains("ejected for 1 s after 3 failures"),
        "the reason tells the length and the count: {line}"
    );
    // Exactly failLimit failed connects, and none while ejected; never marked
    // bad by one failed connect.
    for _ in 0..5 {
        assert_eq!(common::which_backend(lb).await.0, "h2");
    }
    let failed = "txlb_host_connections_failed_total";
    assert_eq!(metric(&base, failed, "h1").await, 3.0);
    assert_eq!(metric(&base, "txlb_host_ejections_total", "h1").await, 1.0);
    assert_eq!(metric(&base, "txlb_host_ejections_total", "h2").await, 0.0);
    assert_eq!(txlb.count("host marked bad"), 0, "{}", txlb.log_text());
    let skip = txlb.log_len();
    let back = returned(&txlb, 0).await;
    let first = back - ejected_at;
    assert!(
        first >= Duration::from_millis(900) && first < Duration::from_millis(1800),
        "the first ejection lasts ejectTime: {first:?}"
    );
    assert_eq!(metric(&base, failed, "h1").await, 3.0);

    // Still refusing: three more failures eject it for twice as long.
    let (clients, line) = clients_until_ejected(&txlb, lb, skip).await;
    let ejected_at = Instant::now();
    let skip = txlb.log_len();
    assert!(clients >= 3, "{clients} clients");
    assert!(line.contains("ejected for 2 s after 3 failures"), "{line}");
    assert_eq!(metric(&base, failed, "h1").await, 6.0);
    let second = returned(&txlb, skip).await - ejected_at;
    assert!(
        second >= Duration::from_millis(1900) && second < Duration::from_millis(2900),
        "the second ejection lasts twice ejectTime: {second:?}"
    );
    assert_eq!(metric(&base, "txlb_host_ejections_total", "h1").await, 2.0);
}

#[tokio::test]
async fn a_host_resetting_before_its_first_byte_counts_as_failing() {
    // h1 accepts, then resets (SO_LINGER 0) before sending anything: a little
    // later, so the connect is over and the reset reaches the copy.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let h1 = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                drop(s);
            });
        }
    });
    let h2 = common::named_backend("h2", Hold::Close).await;
    let txlb = Txlb::start_xml(
        &config(r#"failLimit="2" ejectTime="30""#, &[("h1", h1), ("h2", h2)]),
        None,
    );
    let lb = txlb.listener();
    let mut reset = 0;
    for _ in 0..20 {
        let mut s = TcpStream::connect(lb).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        if out.is_empty() {
            reset += 1;
        } else {
            assert_eq!(out, b"h2\n");
        }
        if txlb.count("host ejected") > 0 {
            break;
        }
    }
    let line = txlb.wait_for_async("host ejected", 0).await;
    assert!(
        line.contains("host=\"h1\"")
            && line.contains("after 2 failures (reset before its first byte)"),
        "{line}"
    );
    assert_eq!(reset, 2, "the second reset ejects: {}", txlb.log_text());
    for _ in 0..4 {
        assert_eq!(common::which_backend(lb).await.0, "h2");
    }
    let base = admin_base(&txlb).await;
    // The reason shows where people look: running.txt and the JSON host stats.
    let running = common::admin::get_as(&base, common::admin::FULL, "/running.txt")
        .await
        .1;
    let h1_line = running.lines().find(|l| l.contains("host h1 ")).unwrap();
    assert!(
        h1_line.contains(" state=bad ")
            && h1_line.contains("reason=\"ejected for 30 s after 2 failures")
            && h1_line.contains(" ejections=1"),
        "{running}"
    );
    let json = common::admin::get_as(&base, common::admin::FULL, "/api/v1/stats")
        .await
        .1;
    assert!(json.contains("\"ejection\":{"), "{json}");
    // The hostCheck read: the legacy call and the JSON API say the same.
    let (status, text) = common::admin::get_as(
        &base,
        common::admin::FULL,
        "/hostCheck?service=svc&group=g&host=h1",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.starts_with("OK host h1 state=bad reason=\"ejected for 30 s after 2 failures")
            && text.contains(" check=none ")
            && text.trim_end().ends_with(" fail_limit=2 ejections=1"),
        "{text}"
    );
    let path = "/api/v1/services/svc/groups/g/hosts/h1/check";
    let (status, body) = common::admin::get_as(&base, common::admin::FULL, path).await;
    assert_eq!(status, 200, "{body}");
    let read: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(read["health"], "bad", "{body}");
    assert_eq!(read["fail_limit"], 2, "{body}");
    assert_eq!(read["ejection"]["failures"], 2, "{body}");
    assert_eq!(read["ejection"]["seconds"], 30.0, "{body}");
    let (status, _) = common::admin::get_as(
        &base,
        common::admin::FULL,
        "/api/v1/services/svc/groups/g/hosts/nope/check",
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn max_eject_percent_keeps_half_the_hosts_in_rotation_when_all_fail() {
    let hosts: Vec<(String, SocketAddr)> = (1..=4)
        .map(|i| (format!("h{i}"), common::closed_port()))
        .collect();
    let named: Vec<(&str, SocketAddr)> = hosts.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    let txlb = Txlb::start_xml(&config(r#"failLimit="1" ejectTime="30""#, &named), None);
    let lb = txlb.listener();
    let base = admin_base(&txlb).await;
    // Every client fails on every host in rotation: after a few, each host
    // reached its limit, and two (50% of 4) are ejected, never more.
    for _ in 0..8 {
        let mut s = TcpStream::connect(lb).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        assert!(out.is_empty(), "nothing serves");
        let _ = s.shutdown().await;
    }
    assert_eq!(
        txlb.count_reaching("host ejected", 2).await,
        2,
        "{}",
        txlb.log_text()
    );
    let mut ejected = 0.0;
    let mut up = 0.0;
    for (name, _) in &named {
        ejected += metric(&base, "txlb_host_ejections_total", name).await;
        up += metric_state(&base, name, "up").await;
    }
    assert_eq!(ejected, 2.0);
    assert_eq!(up, 2.0, "half the hosts stay in rotation");
    assert_eq!(txlb.count("host marked bad"), 0);
}

/// `txlb_host_state` of `host` for `state` (1 or 0).
async fn metric_state(base: &str, host: &str, state: &str) -> f64 {
    let text = common::admin::get_as(base, common::admin::FULL, "/metrics")
        .await
        .1;
    let series = format!(
        "txlb_host_state{{service=\"svc\",group=\"g\",host=\"{host}\",state=\"{state}\"}} "
    );
    let line = text.lines().find(|l| l.starts_with(&series));
    line.unwrap_or_else(|| panic!("no {series} in {text}"))[series.len()..]
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_group_without_fail_limit_marks_a_host_bad_on_one_failed_connect() {
    let h1 = common::closed_port();
    let h2 = common::named_backend("h2", Hold::Close).await;
    let txlb = Txlb::start_xml(&config("", &[("h1", h1), ("h2", h2)]), None);
    let lb = txlb.listener();
    for _ in 0..3 {
        assert_eq!(common::which_backend(lb).await.0, "h2");
    }
    let line = txlb.wait_for_async("host marked bad", 0).await;
    assert!(line.contains("host=\"h1\""), "{line}");
    let base = admin_base(&txlb).await;
    assert_eq!(
        metric(&base, "txlb_host_connections_failed_total", "h1").await,
        1.0,
        "one failed connect, then out of rotation"
    );
    assert_eq!(txlb.count("host ejected"), 0);
}
