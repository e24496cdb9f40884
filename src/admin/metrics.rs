//! `/metrics` in the Prometheus text exposition format (version 0.0.4), written by
//! hand: per service, group and host connections, bytes and state, and the admin
//! plane's own requests by route and status.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AdminState;
use crate::state::{AgentState, HostHealth, LatencyView};
use crate::{GroupStats, ServiceStats, Stats};

/// Admin requests by (route, status). Written once per request; a mutex is fine.
#[derive(Default)]
pub(crate) struct RequestCounts(Mutex<BTreeMap<(String, u16), u64>>);

/// Counts every request by matched route (not by raw path, which would let clients
/// grow the map without bound) and status.
pub(crate) async fn count_requests(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let mut counts = state.requests.0.lock().unwrap_or_else(|p| p.into_inner());
    *counts.entry((route, status)).or_default() += 1;
    response
}

pub(crate) async fn handler(State(state): State<AdminState>) -> Response {
    let requests = state
        .requests
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut text = render(&state.handle.stats(), &requests);
    if let Some(fleet) = state.handle.fleet() {
        render_fleet(&mut text, &fleet);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Fleet mode: whether this instance runs the fleet's newest configuration.
fn render_fleet(out: &mut String, fleet: &crate::fleet::FleetView) {
    let mut f = Family { out };
    let gauges = [
        (
            "txlb_fleet_in_step",
            "1 when this instance runs the fleet's newest configuration, 0 when it could \
             not apply it (changes are refused here then).",
            u64::from(fleet.in_step),
        ),
        (
            "txlb_fleet_applied_revision",
            "etcd revision of the fleet configuration running here.",
            u64::try_from(fleet.revision).unwrap_or(0),
        ),
        (
            "txlb_fleet_latest_revision",
            "Newest etcd revision of the fleet configuration seen here.",
            u64::try_from(fleet.latest_revision).unwrap_or(0),
        ),
    ];
    for (name, help, value) in gauges {
        f.head(name, "gauge", help);
        f.sample(name, &[], value);
    }
}

/// A label value, escaped as the exposition format requires.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.sample_text(name, labels, &value.to_string());
    }

    fn sample_text(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// One histogram series from per-bucket (not cumulative) counts.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &LatencyView) {
        let mut cumulative = 0;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count;
            let le = h
                .le_seconds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &with_le, cumulative);
        }
        self.sample_text(&format!("{name}_sum"), labels, &h.sum_seconds.to_string());
        self.sample(&format!("{name}_count"), labels, cumulative);
    }

    /// A family with one sample per service.
    fn per_service(
        &mut self,
        stats: &Stats,
        name: &str,
        kind: &str,
        help: &str,
        value: impl Fn(&ServiceStats) -> u64,
    ) {
        self.head(name, kind, help);
        for s in &stats.services {
            self.sample(name, &[("service", &s.name)], value(s));
        }
    }

    /// A family with one sample per group of every service.
    fn per_group(
        &mut self,
        stats: &Stats,
        name: &str,
        kind: &str,
        help: &str,
        value: impl Fn(&ServiceStats, &GroupStats) -> u64,
    ) {
        self.head(name, kind, help);
        for s in &stats.services {
            for g in &s.groups {
                self.sample(
                    name,
                    &[("service", &s.name), ("group", &g.name)],
                    value(s, g),
                );
            }
        }
    }

    /// A family with samples per listener of every service: `samples` gives
    /// a listener's, as (labels beside `listener`, value).
    fn per_listener(
        &mut self,
        stats: &Stats,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl Fn(&crate::BoundListener) -> Vec<(Vec<(&'static str, String)>, String)>,
    ) {
        self.head(name, kind, help);
        for l in stats.services.iter().flat_map(|s| &s.listeners) {
            for (labels, value) in samples(l) {
                let mut all: Vec<(&str, &str)> = vec![("listener", &l.configured)];
                all.extend(labels.iter().map(|(k, v)| (*k, v.as_str())));
                self.sample_text(name, &all, &value);
            }
        }
    }

    /// A family with one sample per host of every group, for the hosts
    /// `value` has one for (its text).
    fn per_host(
        &mut self,
        stats: &Stats,
        name: &str,
        kind: &str,
        help: &str,
        value: impl Fn(&crate::state::HostStatsView) -> Option<String>,
    ) {
        self.head(name, kind, help);
        for s in &stats.services {
            for g in &s.groups {
                for h in &g.hosts {
                    if let Some(v) = value(&h.stats) {
                        self.sample_text(
                            name,
                            &[("service", &s.name), ("group", &g.name), ("host", &h.name)],
                            &v,
                        );
                    }
                }
            }
        }
    }
}

/// Per-host values of one family.
type HostValue = fn(&crate::state::HostStatsView) -> u64;
/// Per-service values of one family.
type ServiceValue = fn(&crate::state::ServiceCountersView) -> u64;

/// The whole exposition.
pub(crate) fn render(stats: &Stats, requests: &BTreeMap<(String, u16), u64>) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    let families: [(&str, &str, &str, HostValue); 6] = [
        (
            "connections_open",
            "gauge",
            "Open client connections.",
            |v| v.open,
        ),
        (
            "connections_total",
            "counter",
            "Client connections that reached a host.",
            |v| v.total,
        ),
        (
            "connections_failed_total",
            "counter",
            "Failed connection attempts to hosts.",
            |v| v.failures,
        ),
        (
            "bytes_in_total",
            "counter",
            "Bytes sent by clients to hosts.",
            |v| v.bytes_in,
        ),
        (
            "bytes_out_total",
            "counter",
            "Bytes sent by hosts to clients.",
            |v| v.bytes_out,
        ),
        (
            "picks_total",
            "counter",
            "Times a scheduler picked a host.",
            |v| v.picks,
        ),
    ];
    for (suffix, kind, help, value) in families {
        f.per_service(
            stats,
            &format!("txlb_service_{suffix}"),
            kind,
            &format!("{help} Per service."),
            |s| {
                s.groups
                    .iter()
                    .flat_map(|g| &g.hosts)
                    .map(|h| value(&h.stats))
                    .sum()
            },
        );
        f.per_group(
            stats,
            &format!("txlb_group_{suffix}"),
            kind,
            &format!("{help} Per group."),
            |_, g| g.hosts.iter().map(|h| value(&h.stats)).sum(),
        );
        f.per_host(
            stats,
            &format!("txlb_host_{suffix}"),
            kind,
            &format!("{help} Per host."),
            |h| Some(value(h).to_string()),
        );
    }
    f.head(
        "txlb_host_connect_latency_seconds",
        "histogram",
        "Time to connect to a host, successful connects only.",
    );
    for s in &stats.services {
        for g in &s.groups {
            for h in &g.hosts {
                f.histogram(
                    "txlb_host_connect_latency_seconds",
                    &[("service", &s.name), ("group", &g.name), ("host", &h.name)],
                    &h.stats.connect_latency,
                );
            }
        }
    }
    // Only groups that originate TLS.
    f.head(
        "txlb_group_tls_handshakes_total",
        "counter",
        "TLS handshakes of clients' connections with the group's hosts, by result: ok, verify_failed (the host's certificate did not verify), handshake_error, timeout. Per group that originates TLS.",
    );
    for s in &stats.services {
        for g in &s.groups {
            for (result, count) in g.tls.iter().flat_map(|t| &t.handshakes) {
                f.sample(
                    "txlb_group_tls_handshakes_total",
                    &[("service", &s.name), ("group", &g.name), ("result", result)],
                    *count,
                );
            }
        }
    }
    f.head(
        "txlb_group_tls_handshake_seconds",
        "histogram",
        "Time of the completed TLS handshakes with the group's hosts. Per group that originates TLS.",
    );
    for s in &stats.services {
        for g in &s.groups {
            if let Some(tls) = &g.tls {
                f.histogram(
                    "txlb_group_tls_handshake_seconds",
                    &[("service", &s.name), ("group", &g.name)],
                    &tls.handshake_latency,
                );
            }
        }
    }
    let service_counters: [(&str, &str, ServiceValue); 16] = [
        ("txlb_service_accepted_total", "Clients accepted.", |c| {
            c.accepted
        }),
        (
            "txlb_service_failovers_total",
            "Clients served by another host after the first choice failed.",
            |c| c.failovers,
        ),
        (
            "txlb_service_no_host_total",
            "Clients closed because no host was available.",
            |c| c.no_host,
        ),
        (
            "txlb_service_no_route_total",
            "Clients of the service's routing listeners that no route matched, closed (the service has no group of its own).",
            |c| c.no_route,
        ),
        (
            "txlb_service_denied_total",
            "Clients (UDP: new sessions) refused by the allow and deny lists.",
            |c| c.denied,
        ),
        (
            "txlb_service_over_limit_total",
            "Clients refused by connection limits (maxConnections, per-address limits, the accept queue).",
            |c| c.over_limit,
        ),
        (
            "txlb_service_proxy_errors_total",
            "Clients closed for a missing, malformed or untrusted PROXY header.",
            |c| c.proxy_errors,
        ),
        (
            "txlb_service_timeouts_total",
            "Connections closed for being idle too long.",
            |c| c.timeouts,
        ),
        (
            "txlb_service_sessions_total",
            "UDP sessions started.",
            |c| c.sessions_total,
        ),
        (
            "txlb_service_datagrams_in_total",
            "UDP datagrams from clients passed to hosts.",
            |c| c.datagrams_in,
        ),
        (
            "txlb_service_datagrams_out_total",
            "UDP datagrams from hosts passed to clients.",
            |c| c.datagrams_out,
        ),
        (
            "txlb_service_dropped_no_host_total",
            "UDP datagrams from clients dropped for want of a host.",
            |c| c.dropped_no_host,
        ),
        (
            "txlb_service_dropped_limit_total",
            "UDP datagrams dropped at a limit (maxSessions, a full socket buffer).",
            |c| c.dropped_limit,
        ),
        (
            "txlb_service_dropped_oversize_total",
            "UDP datagrams dropped for being larger than 65,535 bytes.",
            |c| c.dropped_oversize,
        ),
        (
            "txlb_service_dropped_source_limit_total",
            "UDP datagrams that would have opened a session past maxSessionsPerSource, dropped.",
            |c| c.dropped_source_limit,
        ),
        (
            "txlb_service_dropped_rate_total",
            "UDP datagrams past a client address's datagramRate, dropped.",
            |c| c.dropped_rate,
        ),
    ];
    for (name, help, value) in service_counters {
        f.per_service(stats, name, "counter", help, |s| value(&s.counters));
    }
    f.per_service(
        stats,
        "txlb_service_sessions_open",
        "gauge",
        "UDP sessions open.",
        |s| s.counters.sessions_open,
    );
    f.per_service(
        stats,
        "txlb_service_on_backup",
        "gauge",
        "1 while a backup group serves the service (no host of the enabled group is usable), 0 otherwise.",
        |s| u64::from(s.on_backup),
    );
    f.per_group(
        stats,
        "txlb_group_serving",
        "gauge",
        "1 for the group new connections go to now (the enabled group, or a backup group standing in for it), 0 otherwise.",
        |s, g| u64::from(s.serving_group.as_deref() == Some(g.name.as_str())),
    );
    f.per_group(
        stats,
        "txlb_group_draining_hosts",
        "gauge",
        "Hosts removed from a group whose connections are still open.",
        |_, g| g.draining.len() as u64,
    );
    f.head(
        "txlb_host_state",
        "gauge",
        "Host state: 1 for the state the host is in (up, bad, admin-down), 0 otherwise.",
    );
    for s in &stats.services {
        for g in &s.groups {
            for h in &g.hosts {
                for health in HostHealth::ALL {
                    f.sample(
                        "txlb_host_state",
                        &[
                            ("service", &s.name),
                            ("group", &g.name),
                            ("host", &h.name),
                            ("state", health.name()),
                        ],
                        u64::from(h.stats.health == health),
                    );
                }
            }
        }
    }
    // Only hosts of groups with a `<check>`, once probed.
    f.per_host(
        stats,
        "txlb_host_check_seconds",
        "gauge",
        "How long the last probe of the group's active check took. Per host.",
        |h| Some((h.check.as_ref()?.last_micros as f64 / 1e6).to_string()),
    );
    f.per_host(
        stats,
        "txlb_host_check_failures_total",
        "counter",
        "Failed probes of the group's active check. Per host.",
        |h| Some(h.check.as_ref()?.failures.to_string()),
    );
    // Only hosts of groups with an `<agent>`, once asked.
    f.head(
        "txlb_host_agent_state",
        "gauge",
        "What the group's agent last said: 1 for the state it gave (up, drain, maint, down), 0 otherwise.",
    );
    for s in &stats.services {
        for g in &s.groups {
            for h in &g.hosts {
                let Some(agent) = &h.stats.agent else {
                    continue;
                };
                for state in AgentState::ALL {
                    f.sample(
                        "txlb_host_agent_state",
                        &[
                            ("service", &s.name),
                            ("group", &g.name),
                            ("host", &h.name),
                            ("state", state.name()),
                        ],
                        u64::from(agent.state == state),
                    );
                }
            }
        }
    }
    f.per_host(
        stats,
        "txlb_host_agent_weight_percent",
        "gauge",
        "The weight the group's agent last gave, in percent of the configured weight. Per host.",
        |h| Some(h.agent.as_ref()?.weight_percent.to_string()),
    );
    f.per_host(
        stats,
        "txlb_host_agent_answering",
        "gauge",
        "1 if the group's agent answered its last question, 0 if not. Per host.",
        |h| Some(u64::from(h.agent.as_ref()?.failure.is_none()).to_string()),
    );
    f.per_host(
        stats,
        "txlb_host_ejections_total",
        "counter",
        "Times the passive checks (the group's failLimit) ejected the host. Per host.",
        |h| Some(h.ejections.to_string()),
    );
    f.per_group(
        stats,
        "txlb_group_enabled",
        "gauge",
        "1 for the enabled group of each service, 0 for the others.",
        |_, g| u64::from(g.enabled),
    );
    f.per_service(
        stats,
        "txlb_listeners",
        "gauge",
        "Listeners accepting clients, per service.",
        |s| s.listeners.len() as u64,
    );
    f.per_listener(
        stats,
        "txlb_route_hits_total",
        "counter",
        "Clients each route of a listener sent to its service.",
        |l| {
            l.routes
                .iter()
                .map(|r| {
                    let labels = vec![("route", r.route.clone()), ("service", r.service.clone())];
                    (labels, r.hits.to_string())
                })
                .collect()
        },
    );
    f.per_listener(
        stats,
        "txlb_inspect_anomalies_total",
        "counter",
        "Clients of a listener with routes whose first bytes were odd (a malformed, \
         truncated or oversized ClientHello, an HTTP request without Host, nothing in \
         time…), by kind.",
        |l| {
            l.anomalies
                .iter()
                .map(|(kind, n)| (vec![("kind", kind.to_string())], n.to_string()))
                .collect()
        },
    );
    f.per_listener(
        stats,
        "txlb_tls_handshakes_total",
        "counter",
        "TLS handshakes of a terminating listener, by version and result (ok; a failed \
         handshake has no version: it is counted under version=\"none\", result=\"failed\").",
        |l| {
            let Some(tls) = &l.tls else { return Vec::new() };
            let failed: u64 = tls.handshake_errors.iter().map(|(_, n)| n).sum();
            let ok = tls.handshakes.iter().map(|(version, n)| {
                let labels = vec![("version", version.to_string()), ("result", "ok".into())];
                (labels, n.to_string())
            });
            let failed = (
                vec![("version", "none".into()), ("result", "failed".into())],
                failed.to_string(),
            );
            ok.chain([failed]).collect()
        },
    );
    f.per_listener(
        stats,
        "txlb_tls_handshake_errors_total",
        "counter",
        "Failed TLS handshakes of a terminating listener, by reason (timeout, not_tls, closed, \
         incompatible, no_client_cert, bad_client_cert, client_alert, protocol, no_certificate).",
        |l| {
            let Some(tls) = &l.tls else { return Vec::new() };
            tls.handshake_errors
                .iter()
                .map(|(reason, n)| (vec![("reason", reason.to_string())], n.to_string()))
                .collect()
        },
    );
    f.per_listener(
        stats,
        "txlb_tls_certificate_expiry_seconds",
        "gauge",
        "Seconds until each certificate of a terminating listener expires (negative: expired).",
        |l| {
            let Some(tls) = &l.tls else { return Vec::new() };
            tls.certificates
                .iter()
                .map(|c| (vec![("name", c.name.clone())], c.expires_in.to_string()))
                .collect()
        },
    );
    f.head(
        "txlb_admin_requests_total",
        "counter",
        "Admin plane requests by route and HTTP status.",
    );
    for ((route, status), n) in requests {
        f.sample(
            "txlb_admin_requests_total",
            &[("route", route), ("status", &status.to_string())],
            *n,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::{send, test_router};
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn fleet_step_is_well_formed() {
        let view = crate::fleet::FleetView {
            enabled: true,
            revision: 4,
            latest_revision: 9,
            out_of_step: Some("cannot apply it here".into()),
            ..Default::default()
        };
        let mut text = String::new();
        render_fleet(&mut text, &view);
        assert_exposition(&text);
        for line in [
            "txlb_fleet_in_step 0",
            "txlb_fleet_applied_revision 4",
            "txlb_fleet_latest_revision 9",
        ] {
            assert!(text.lines().any(|l| l == line), "{text}");
        }
    }

    /// Every line is a comment with HELP/TYPE before its samples, or a well-formed
    /// sample `name{labels} value`.
    pub(crate) fn assert_exposition(text: &str) {
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let name = parts.next().unwrap();
                assert!(
                    matches!(parts.next(), Some("gauge" | "counter" | "histogram")),
                    "{line}"
                );
                typed.insert(name.to_string());
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect(line);
            value.parse::<f64>().expect(line);
            let name = series.split('{').next().unwrap();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| typed.contains(*b)))
                .unwrap_or(name);
            assert!(typed.contains(base), "sample before TYPE: {line}");
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
        }
    }

    #[tokio::test]
    async fn metrics_are_well_formed_and_count_admin_requests() {
        let (app, _handle, _b) = test_router().await;
        let _ = send(&app, "GET", "/running.txt", None).await;
        let (status, text) = send(&app, "GET", "/metrics", None).await;
        assert_eq!(status, axum::http::StatusCode::OK);
        assert_exposition(&text);
        for needle in [
            "txlb_host_connections_open{service=\"svc\",group=\"g\",host=\"a\"} 0",
            "txlb_host_state{service=\"svc\",group=\"g\",host=\"a\",state=\"up\"} 1",
            "txlb_group_enabled{service=\"svc\",group=\"g\"} 1",
            "txlb_admin_requests_total{route=\"/running.txt\",status=\"200\"} 1",
            "txlb_host_connect_latency_seconds_bucket{service=\"svc\",group=\"g\",host=\"a\",le=\"+Inf\"} 0",
            "txlb_host_connect_latency_seconds_count{service=\"svc\",group=\"g\",host=\"a\"} 0",
            "txlb_service_failovers_total{service=\"svc\"} 0",
            "txlb_host_picks_total{service=\"svc\",group=\"g\",host=\"a\"} 0",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
