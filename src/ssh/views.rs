//! What the console's `show` commands and `watch stats` print: aligned tables
//! of the balancer's stats, hosts and connections (their `--json` forms are
//! the same data serialized).

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::state::HostHealth;
use crate::{BalancerHandle, HostStatsEntry, ServiceStats, Stats};

/// An aligned table: columns as wide as their widest cell, numbers right-aligned.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let n = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    let mut numeric = vec![!rows.is_empty(); n];
    for row in &rows {
        for (i, cell) in row.iter().enumerate().take(n) {
            widths[i] = widths[i].max(cell.chars().count());
            if cell.parse::<f64>().is_err() {
                numeric[i] = false;
            }
        }
    }
    let mut t = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i > 0 {
                l.push_str("  ");
            }
            if numeric[i] {
                l.push_str(&" ".repeat(pad));
                l.push_str(cell);
            } else {
                l.push_str(cell);
                if i + 1 < cells.len() {
                    l.push_str(&" ".repeat(pad));
                }
            }
        }
        t.push_str(l.trim_end());
        t.push('\n');
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    t
}

pub(super) fn services_table(stats: &Stats) -> String {
    let rows = stats
        .services
        .iter()
        .map(|s| {
            let hosts: Vec<&HostStatsEntry> = s
                .groups
                .iter()
                .filter(|g| g.enabled)
                .flat_map(|g| &g.hosts)
                .collect();
            let up = hosts
                .iter()
                .filter(|h| h.stats.health == HostHealth::Up)
                .count();
            let open: u64 = s
                .groups
                .iter()
                .flat_map(|g| &g.hosts)
                .map(|h| h.stats.open)
                .sum();
            let listeners: Vec<String> = s.listeners.iter().map(|l| l.local.to_string()).collect();
            vec![
                s.name.clone(),
                listeners.join(","),
                match (&s.serving_group, s.on_backup) {
                    (Some(backup), true) => format!("{} (on backup {backup})", s.enabled_group),
                    _ if s.enabled_group.is_empty() => "-".into(),
                    _ => s.enabled_group.clone(),
                },
                s.groups.len().to_string(),
                format!("{up}/{}", hosts.len()),
                open.to_string(),
                s.counters.accepted.to_string(),
                s.counters.failovers.to_string(),
                s.counters.no_host.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "SERVICE",
            "LISTENING",
            "ENABLED",
            "GROUPS",
            "UP",
            "OPEN",
            "ACCEPTED",
            "FAILOVERS",
            "NO-HOST",
        ],
        rows,
    )
}

/// `show udp`: each UDP service's sessions, datagrams and drops.
pub(super) fn udp_table(services: &[&ServiceStats]) -> String {
    let rows = services
        .iter()
        .map(|s| {
            let c = &s.counters;
            let listeners: Vec<String> = s.listeners.iter().map(|l| l.local.to_string()).collect();
            vec![
                s.name.clone(),
                listeners.join(","),
                c.sessions_open.to_string(),
                c.sessions_total.to_string(),
                c.datagrams_in.to_string(),
                c.datagrams_out.to_string(),
                c.dropped_no_host.to_string(),
                c.dropped_limit.to_string(),
                c.dropped_oversize.to_string(),
                c.dropped_source_limit.to_string(),
                c.dropped_rate.to_string(),
                c.denied.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "SERVICE",
            "LISTENING",
            "SESSIONS",
            "TOTAL",
            "DGRAMS-IN",
            "DGRAMS-OUT",
            "NO-HOST",
            "LIMIT",
            "OVERSIZE",
            "PER-SOURCE",
            "RATE",
            "DENIED",
        ],
        rows,
    )
}

pub(super) fn stats_table(stats: &Stats) -> String {
    let mut rows = Vec::new();
    for s in &stats.services {
        for g in &s.groups {
            let group = if g.enabled {
                format!("{}*", g.name)
            } else {
                g.name.clone()
            };
            for (h, draining) in g
                .hosts
                .iter()
                .map(|h| (h, false))
                .chain(g.draining.iter().map(|h| (h, true)))
            {
                let v = &h.stats;
                let state = if draining { "removed" } else { v.health.name() };
                rows.push(vec![
                    s.name.clone(),
                    group.clone(),
                    h.name.clone(),
                    state.to_string(),
                    v.open.to_string(),
                    v.total.to_string(),
                    v.failures.to_string(),
                    v.picks.to_string(),
                    v.bytes_in.to_string(),
                    v.bytes_out.to_string(),
                ]);
            }
        }
    }
    let mut t = table(
        &[
            "SERVICE",
            "GROUP",
            "HOST",
            "STATE",
            "OPEN",
            "TOTAL",
            "FAILED",
            "PICKS",
            "BYTES-IN",
            "BYTES-OUT",
        ],
        rows,
    );
    t.push_str("(* the enabled group)\n");
    t
}

/// One host in `show hosts --json`.
#[derive(Debug, Serialize)]
pub(super) struct HostRow<'a> {
    service: &'a str,
    group: &'a str,
    /// Whether the host's group is the enabled one.
    enabled_group: bool,
    #[serde(flatten)]
    host: &'a HostStatsEntry,
}

pub(super) fn host_rows<'a>(
    stats: &'a Stats,
    service: Option<&str>,
    group: Option<&str>,
) -> Vec<HostRow<'a>> {
    let mut rows = Vec::new();
    for s in stats
        .services
        .iter()
        .filter(|s| service.is_none_or(|n| s.name == n))
    {
        for g in s
            .groups
            .iter()
            .filter(|g| group.is_none_or(|n| g.name == n))
        {
            for h in &g.hosts {
                rows.push(HostRow {
                    service: &s.name,
                    group: &g.name,
                    enabled_group: g.enabled,
                    host: h,
                });
            }
        }
    }
    rows
}

pub(super) fn hosts_table(rows: &[HostRow<'_>]) -> String {
    let now = SystemTime::now();
    let rows = rows
        .iter()
        .map(|r| {
            let v = &r.host.stats;
            let why = v.bad.as_ref().map_or_else(String::new, |b| {
                let ago = now.duration_since(b.since).map_or(0, |d| d.as_secs());
                format!("{} ({ago} s ago)", b.reason)
            });
            let group = if r.enabled_group {
                format!("{}*", r.group)
            } else {
                r.group.to_string()
            };
            // The active check: the last probe's result and time, then the
            // passes and failures in a row (towards rise and fall).
            let mut check = v.check.as_ref().map_or_else(
                || "-".to_string(),
                |c| {
                    format!(
                        "{} {:.1}ms +{}/-{}",
                        if c.last_failure.is_some() {
                            "fail"
                        } else {
                            "ok"
                        },
                        c.last_micros as f64 / 1e3,
                        c.passes,
                        c.fails
                    )
                },
            );
            // The agent's word beside it.
            if let Some(a) = &v.agent {
                check = if check == "-" {
                    format!("agent:{}", a.summary())
                } else {
                    format!("{check} agent:{}", a.summary())
                };
            }
            vec![
                r.service.to_string(),
                group,
                r.host.name.clone(),
                r.host.address.clone(),
                r.host.weight.to_string(),
                v.health.name().to_string(),
                v.open.to_string(),
                check,
                why,
            ]
        })
        .collect();
    table(
        &[
            "SERVICE", "GROUP", "HOST", "ADDRESS", "WEIGHT", "STATE", "OPEN", "CHECK", "WHY",
        ],
        rows,
    )
}

pub(super) fn certificates_table(list: &[crate::ops::CertificateEntry]) -> String {
    let rows = list
        .iter()
        .map(|c| {
            let place = match (&c.listener, &c.group) {
                (Some(listener), _) => format!("listen {listener}"),
                (None, Some(group)) => format!("group {group}"),
                (None, None) => String::new(),
            };
            let days = c.certificate.expires_in.div_euclid(86_400);
            let expires = if c.certificate.expires_in <= 0 {
                "expired".to_string()
            } else if c.certificate.expiring {
                format!("{days} days (soon)")
            } else {
                format!("{days} days")
            };
            vec![
                c.service.clone(),
                place,
                c.role.to_string(),
                c.certificate.names.join(" "),
                c.certificate.issuer.clone(),
                expires,
                c.certificate.source.to_string(),
                c.certificate.file.clone(),
            ]
        })
        .collect();
    table(
        &[
            "SERVICE", "WHERE", "ROLE", "NAMES", "ISSUER", "EXPIRES", "SOURCE", "FILE",
        ],
        rows,
    )
}

pub(super) fn connections_table(list: &[crate::state::ConnectionInfo]) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let count = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
    let rows = list
        .iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                c.transport.as_str().to_string(),
                c.service.clone(),
                c.group.clone(),
                c.host.clone(),
                c.client.to_string(),
                format!("{:.0}", (now - c.since).max(0.0)),
                c.idle_seconds
                    .map(|s| format!("{s:.0}"))
                    .unwrap_or_default(),
                count(c.datagrams_in),
                count(c.datagrams_out),
                c.bytes_in.to_string(),
                c.bytes_out.to_string(),
                match (c.draining_in, c.parked) {
                    // Still in the process an upgrade replaced, until it ends.
                    (Some(pid), _) => format!("draining in PID {pid}"),
                    (None, true) => "parked".to_string(),
                    (None, false) => String::new(),
                },
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "PROTO",
            "SERVICE",
            "GROUP",
            "HOST",
            "CLIENT",
            "AGE-S",
            "IDLE-S",
            "DGRAMS-IN",
            "DGRAMS-OUT",
            "BYTES-IN",
            "BYTES-OUT",
            "STATE",
        ],
        rows,
    )
}

/// `show stats` for `watch stats`: the table under a title line.
pub fn watch_frame(handle: &BalancerHandle, period: Duration) -> String {
    format!(
        "Every {} s: show stats   (press any key to stop)\n\n{}",
        period.as_secs_f64(),
        stats_table(&handle.stats())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connections_table_says_which_are_parked_or_draining_elsewhere() {
        let one = |id: u64, parked: bool, draining_in: Option<u32>| crate::state::ConnectionInfo {
            id,
            transport: crate::state::Transport::Tcp,
            service: "svc".into(),
            group: "g".into(),
            host: "a".into(),
            client: "127.0.0.1:5000".parse().unwrap(),
            listener: "127.0.0.1:80".parse().unwrap(),
            host_addr: "127.0.0.1:8080".parse().unwrap(),
            since: 0.0,
            bytes_in: 1,
            bytes_out: 2,
            idle_seconds: Some(0.0),
            datagrams_in: None,
            datagrams_out: None,
            parked,
            inspection: None,
            draining_in,
        };
        let session = crate::state::ConnectionInfo {
            transport: crate::state::Transport::Udp,
            datagrams_in: Some(5),
            datagrams_out: Some(4),
            bytes_in: 50,
            bytes_out: 40,
            ..one(4, false, None)
        };
        let t = connections_table(&[
            one(1, true, None),
            one(2, false, Some(42)),
            one(3, false, None),
            session,
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].ends_with("STATE"), "{t}");
        assert!(lines[1].trim_end().ends_with("parked"), "{t}");
        assert!(lines[2].trim_end().ends_with("draining in PID 42"), "{t}");
        assert!(lines[3].trim_end().ends_with(" 2"), "{t}");
        let words: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(words[..2], ["4", "udp"], "{t}");
        assert_eq!(words[words.len() - 4..], ["5", "4", "50", "40"], "{t}");
    }

    #[test]
    fn tables_align_columns_and_right_align_numbers() {
        let t = table(
            &["NAME", "OPEN"],
            vec![
                vec!["a".into(), "7".into()],
                vec!["long".into(), "123".into()],
            ],
        );
        assert_eq!(t, "NAME  OPEN\na        7\nlong   123\n");
    }

    #[test]
    fn the_hosts_table_shows_the_active_check() {
        let mut checked = HostStatsEntry {
            name: "h1".into(),
            address: "127.0.0.1:80".into(),
            weight: 1,
            stats: crate::state::HostStats::new().view(),
        };
        let unchecked = HostStatsEntry {
            name: "h2".into(),
            ..checked.clone()
        };
        checked.stats.check = Some(crate::state::CheckStateView {
            passes: 0,
            fails: 2,
            last_micros: 1500,
            last_failure: Some("HTTP 503".into()),
            failures: 2,
        });
        let row = |host| HostRow {
            service: "svc",
            group: "g",
            enabled_group: true,
            host,
        };
        let t = hosts_table(&[row(&checked), row(&unchecked)]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains(" CHECK "), "{t}");
        assert!(lines[1].contains(" fail 1.5ms +0/-2"), "{t}");
        assert!(lines[2].trim_end().ends_with(" -"), "{t}");
    }

    #[test]
    fn the_certificates_table_says_where_each_comes_from() {
        let entry = |source: &'static str, file: &str| crate::ops::CertificateEntry {
            service: "web".into(),
            role: "server",
            listener: Some("*:443".into()),
            group: None,
            certificate: crate::CertificateStats {
                name: "a.test".into(),
                names: vec!["a.test".into()],
                issuer: "CN=Pebble Intermediate CA".into(),
                source,
                file: file.into(),
                not_after: 0,
                expires_in: 90 * 86_400,
                expiring: false,
            },
        };
        let t = certificates_table(&[
            entry("acme", "/var/lib/txlb/acme/a.test-0123.pem"),
            entry("file", "/etc/txlb/a.pem"),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].contains(" SOURCE ") && lines[0].ends_with("FILE"),
            "{t}"
        );
        assert!(
            lines[1].contains(" acme ") && lines[1].contains("Pebble"),
            "{t}"
        );
        assert!(
            lines[2].contains(" file ") && lines[2].contains("90 days"),
            "{t}"
        );
    }
}
