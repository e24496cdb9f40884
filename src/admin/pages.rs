//! The HTML pages: the running page (every service, listener, group and host with
//! live counters, throughput graphs and a form for every change), the boot vs
//! running diff, the server-sent events that keep the page live, and the security
//! headers every answer carries.
//!
//! The forms are plain HTML posting to the legacy calls, so the page works without
//! JavaScript; the small inline script only applies live updates.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use tokio_stream::StreamExt as _;

use super::history::{HISTORY_LEN, HostKey, Rate};
use super::html::{ago, esc, unified_html, utc};
use super::status::Snapshot;
use super::status::readable_config;
use super::{AdminState, Principal};
use crate::config::Config;
use crate::config::writeback::unified_diff;
use crate::scheduler::SchedulerKind;
use crate::state::HostHealth;
use crate::{HostStatsEntry, Stats};

/// Width and height of a throughput graph, in SVG user units.
const GRAPH_W: f64 = 120.0;
const GRAPH_H: f64 = 24.0;

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:0 1.5em 2em;color:#222;background:#fafafa}
header{display:flex;gap:1em;align-items:baseline;flex-wrap:wrap;border-bottom:1px solid #ccc}
h1{font-size:1.4em;margin:.5em 0} h2{margin:1.2em 0 .3em} h3{margin:.8em 0 .3em;font-size:1.05em}
nav a{margin-right:.8em} #live{color:#777;font-size:.9em}
section.service{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.2em 1em 1em;margin:1em 0}
.group{border-left:4px solid #ddd;padding-left:.8em;margin:.8em 0}
.group.enabled{border-left-color:#2a7}
.badge{background:#2a7;color:#fff;border-radius:3px;padding:0 .4em;font-size:.8em}
.badge.backup{background:#777} .badge.serving{background:#d80} .badge.down{background:#c33}
.group.serving{border-left-color:#d80}
table{border-collapse:collapse;margin:.3em 0} th,td{padding:.2em .4em;border-bottom:1px solid #eee;text-align:left;vertical-align:middle}
td.n{text-align:right;font-variant-numeric:tabular-nums} th,td.nw{white-space:nowrap}
td.state span,td.actions form{white-space:nowrap} td.wrap{overflow-wrap:anywhere;min-width:5em} td.wrap code{display:block;min-width:9.5em} td.actions{min-width:16em} td.state small{display:block;min-width:9em;max-width:22em;overflow-wrap:anywhere}
section.service{overflow-x:auto} div.listeners{margin:.6em 0}
.up{color:#2a7;font-weight:600} .bad{color:#c33;font-weight:600} .admin-down{color:#a70;font-weight:600}
small{color:#666}
form{display:inline-block;margin:0 .2em .2em 0} form.row{display:block;margin:.4em 0}
input,select,button{font:inherit;padding:.1em .3em}
svg.g polyline{fill:none;stroke-width:1.2} svg.g .i{stroke:#27c} svg.g .o{stroke:#e80}
svg.g{background:#f4f6f8;border:1px solid #e4e6e8}
.flash{padding:.4em .8em;border-radius:4px;background:#e8f6ee;margin:.8em 0}
.flash.err{background:#fbeaea}
pre.diff{background:#fff;border:1px solid #ddd;padding:.5em;overflow:auto}
pre.diff span{display:block;min-height:1.2em} pre.diff .a{background:#e8f6ee} pre.diff .d{background:#fbeaea}
pre.diff .h{color:#27c} pre.diff .f{color:#666}
section.warn{background:#fff8e5;border:1px solid #e8c468;border-radius:6px;padding:.2em 1em .6em;margin:1em 0}
section.warn.err{background:#fdf0f0;border-color:#d88}
section.warn h2{margin:.5em 0 .2em;font-size:1.15em}
pre.error{white-space:pre-wrap;background:#fff;border:1px solid #ddd;padding:.5em}
p.note{color:#555;margin:.6em 0}
";

const SCRIPT: &str = r#"
(function(){
  var body=document.body, sig=body.getAttribute("data-sig");
  var live=document.getElementById("live");
  if(!window.EventSource){return;}
  var rows={};
  document.querySelectorAll("tr[data-host]").forEach(function(r){rows[r.getAttribute("data-host")]=r;});
  function set(row,k,v){var c=row.querySelector('[data-k="'+k+'"]');if(c){c.textContent=v;}}
  var es=new EventSource(body.getAttribute("data-events"));
  es.addEventListener("stats",function(e){
    var d=JSON.parse(e.data);
    if(d.sig!==sig){es.close();location.reload();return;}
    var t=new Date().toISOString();
    live.textContent="live, updated "+t.slice(0,10)+" "+t.slice(11,19)+" UTC";
    d.hosts.forEach(function(h){
      var row=rows[h.key]; if(!row){return;}
      ["open","total","failures","bytes_in","bytes_out","rate"].forEach(function(k){set(row,k,h[k]);});
      var s=row.querySelector('[data-k="state"]');
      if(s){s.textContent=h.state;s.className=h.state_class;}
      set(row,"detail",h.detail);
      var pi=row.querySelector("polyline.i"), po=row.querySelector("polyline.o");
      if(pi){pi.setAttribute("points",h.points_in);} if(po){po.setAttribute("points",h.points_out);}
    });
  });
  es.onerror=function(){live.textContent="live updates interrupted, retrying";};
})();
"#;

fn csp_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The page's Content-Security-Policy: nothing from elsewhere, and only this
/// module's own inline style and script (by hash).
fn page_csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        format!(
            "default-src 'none'; style-src {}; script-src {}; connect-src 'self'; \
             img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            csp_hash(STYLE),
            csp_hash(SCRIPT)
        )
    })
}

/// How long browsers keep to HTTPS for the admin server once they saw it
/// (`Strict-Transport-Security`, HTTPS only): one year, in seconds.
const HSTS_MAX_AGE_SECS: u64 = 365 * 24 * 3600;

/// Headers on every admin answer: no framing, no sniffing, no caching, HTTPS
/// only once seen (when served over TLS); pages bring their own CSP, everything
/// else gets one that allows nothing.
pub(crate) async fn security_headers(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    if state.settings.tls.is_some()
        && let Ok(v) = HeaderValue::from_str(&format!("max-age={HSTS_MAX_AGE_SECS}"))
    {
        h.insert(header::STRICT_TRANSPORT_SECURITY, v);
    }
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    response
}

/// The page routes.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/", get(running))
        .route("/running", get(running))
        .route("/all", get(running))
        .route("/diff", get(diff))
        .route("/connections", get(connections))
        .route("/events", get(events))
}

fn html(body: String) -> Response {
    let mut r = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response();
    if let Ok(v) = HeaderValue::from_str(page_csp()) {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

/// Percent-encodes a query value.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The answer to a form post: back to the running page, with the outcome shown.
pub(crate) fn back_to_page(page: &str, message: &str, error: bool) -> Response {
    let first_line = message.lines().next().unwrap_or("");
    let location = format!(
        "{page}?msg={}{}",
        pct(first_line),
        if error { "&err=1" } else { "" }
    );
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The answer of the operation a form ran, shown atop the page it came back to
/// ([`back_to_page`]).
fn flash_line(msg: Option<&str>, error: bool) -> String {
    let class = if error { "flash err" } else { "flash" };
    msg.map_or_else(String::new, |msg| {
        format!("<p class=\"{class}\" role=\"status\">{}</p>", esc(msg))
    })
}

/// The key of a host row, as the page and the events name it.
fn host_key(service: &str, group: &str, host: &str) -> String {
    format!("{service}\u{1f}{group}\u{1f}{host}")
}

/// The certificates of a terminating listener, with their expiry (a warning
/// within 14 days), and its handshakes.
fn listener_certificates(p: &mut String, listen: &str, tls: &crate::TlsStats) {
    let _ = write!(
        p,
        "<div class=\"certs\">TLS on <code>{}</code>:<ul>",
        esc(listen)
    );
    for c in &tls.certificates {
        let days = c.expires_in.div_euclid(86_400);
        let when = if c.expires_in <= 0 {
            "<strong class=\"bad\">expired</strong>".to_string()
        } else if c.expiring {
            format!("<strong class=\"bad\">expires in {days} days</strong>")
        } else {
            format!("expires in {days} days")
        };
        let source = match c.source {
            "acme" => "from ACME, stored in ",
            _ => "",
        };
        let _ = write!(
            p,
            "<li><code>{}</code> ({}) issued by {}, {when} <small>{source}{}</small></li>",
            esc(&c.name),
            esc(&c.names.join(" ")),
            esc(&c.issuer),
            esc(&c.file)
        );
    }
    for names in &tls.acme_pending {
        let _ = write!(
            p,
            "<li><strong class=\"bad\">certificate from ACME for {} not issued yet</strong>: its TLS clients are refused until it is</li>",
            esc(&names.join(" "))
        );
    }
    let handshakes: Vec<String> = tls
        .handshakes
        .iter()
        .map(|(v, n)| format!("TLS {v} {n}"))
        .collect();
    let failed: Vec<String> = tls
        .handshake_errors
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(why, n)| format!("{why} {n}"))
        .collect();
    let _ = write!(
        p,
        "</ul><small>handshakes: {}{}</small></div>",
        esc(&handshakes.join(", ")),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; failed: {}", esc(&failed.join(", ")))
        }
    );
}

/// The routes of listener `l` of service `sv`, each with its hits and a form
/// removing it, then a form adding one.
fn listener_routes(p: &mut String, sv: &str, l: &crate::BoundListener) {
    let _ = write!(
        p,
        "<div class=\"routes\">Routes of <code>{}</code>:<ol>",
        esc(&l.configured)
    );
    for r in &l.routes {
        let mut hidden = vec![
            ("service", sv),
            ("listen", l.configured.as_str()),
            ("to", r.service.as_str()),
        ];
        let conditions: Vec<(&str, &str)> = r
            .route
            .split(' ')
            .filter_map(|c| c.split_once('='))
            .collect();
        hidden.extend(conditions);
        let _ = write!(
            p,
            "<li><code>{}</code> &rarr; {} <small>({} clients)</small> {}</li>",
            esc(&r.route),
            esc(&r.service),
            r.hits,
            form("delRoute", &hidden, "", "remove")
        );
    }
    p.push_str("</ol>");
    if !l.anomalies.is_empty() {
        let seen: Vec<String> = l
            .anomalies
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        let _ = write!(
            p,
            "<small>odd first bytes: {}</small>",
            esc(&seen.join(", "))
        );
    }
    p.push_str(&form(
        "addRoute",
        &[("service", sv), ("listen", l.configured.as_str())],
        "<input name=\"to\" placeholder=\"service\" required size=\"10\"> \
         <input name=\"sni\" placeholder=\"sni\" size=\"14\"> \
         <input name=\"alpn\" placeholder=\"alpn\" size=\"6\"> \
         <input name=\"protocol\" placeholder=\"protocol\" size=\"6\"> \
         <input name=\"host\" placeholder=\"http host\" size=\"14\"> \
         <input name=\"position\" placeholder=\"position\" size=\"4\"> ",
        "add route",
    ));
    p.push_str("</div>");
}

/// A signature of the page's structure (services, listeners, groups, hosts,
/// enabled groups, schedulers, users) and of the status panels (reload,
/// conflict): when it changes, the page reloads.
fn signature(stats: &Stats, config: &Config, status: &Snapshot) -> String {
    let mut d = Sha256::new();
    d.update(status.token().as_bytes());
    for s in &stats.services {
        d.update(s.name.as_bytes());
        d.update(s.enabled_group.as_bytes());
        // Moving to or from a backup group redraws the page (badges).
        d.update(s.serving_group.as_deref().unwrap_or("\x00").as_bytes());
        for l in &s.listeners {
            d.update(l.configured.as_bytes());
            d.update([u8::from(l.accept_proxy)]);
            for r in &l.routes {
                d.update(b"\x1d");
                d.update(r.route.as_bytes());
                d.update(r.service.as_bytes());
            }
        }
        for g in &s.groups {
            d.update(b"\x1e");
            d.update(g.name.as_bytes());
            d.update(g.scheduler.as_bytes());
            for h in &g.hosts {
                d.update(b"\x1f");
                d.update(h.name.as_bytes());
                d.update(h.address.as_bytes());
            }
        }
    }
    for u in config.admin.iter().flat_map(|a| &a.users) {
        d.update(b"\x1d");
        d.update(u.name.as_bytes());
        d.update(u.access.name().as_bytes());
    }
    let digest = d.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A service's own counters in one line: clients for TCP, sessions and
/// datagrams for UDP, with what was refused or dropped and why.
fn service_counters(s: &crate::ServiceStats) -> String {
    let c = &s.counters;
    let text = if s.protocol == "udp" {
        format!(
            "UDP sessions: {} open, {} total; datagrams: {} in, {} out; dropped: {} no host, \
             {} at a limit, {} oversize, {} over a source's sessions, {} over a source's rate; \
             {} denied",
            c.sessions_open,
            c.sessions_total,
            c.datagrams_in,
            c.datagrams_out,
            c.dropped_no_host,
            c.dropped_limit,
            c.dropped_oversize,
            c.dropped_source_limit,
            c.dropped_rate,
            c.denied
        )
    } else {
        format!(
            "Clients: {} accepted, {} failed over; refused: {} no host, {} no route, {} denied, \
             {} over a limit, {} bad PROXY header; {} timed out",
            c.accepted,
            c.failovers,
            c.no_host,
            c.no_route,
            c.denied,
            c.over_limit,
            c.proxy_errors,
            c.timeouts
        )
    };
    format!("<p class=\"counters\"><small>{text}</small></p>")
}

fn human_bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} {}", UNITS[0])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `↓IN/s ↑OUT/s`, breakable only between the two (the page's column may wrap
/// it onto two lines).
fn rate_text(r: Rate) -> String {
    format!(
        "↓{}/s ↑{}/s",
        human_bytes(r.bytes_in),
        human_bytes(r.bytes_out)
    )
    .replacen(' ', "\u{a0}", 1)
    .replacen("/s ↑", "/s\u{1}↑", 1)
    .replace(' ', "\u{a0}")
    .replace('\u{1}', " ")
}

/// (text, CSS class, detail) of a host's state: its name, both as text and as
/// class. An admin-down host with open connections is draining.
fn state_of(h: &HostStatsEntry) -> (String, &'static str, String) {
    let health = h.stats.health;
    let text = match health {
        HostHealth::AdminDown if h.stats.open > 0 => format!("draining ({} open)", h.stats.open),
        _ => health.name().to_string(),
    };
    let detail = match (&h.stats.bad, health) {
        (Some(b), HostHealth::Bad) => format!(
            "{} — since {} UTC ({})",
            b.reason,
            utc(b.since),
            ago(b.since)
        ),
        _ => String::new(),
    };
    // The active check's progress: passes in a row count towards `rise`
    // while the host is bad, failures towards `fall` while it is up.
    let detail = match &h.stats.check {
        Some(c) => {
            let last = match &c.last_failure {
                Some(why) => format!("failed: {why}"),
                None => "passed".to_string(),
            };
            let check = format!(
                "check {last} in {:.1} ms; {} passed, {} failed in a row",
                c.last_micros as f64 / 1e3,
                c.passes,
                c.fails
            );
            if detail.is_empty() {
                check
            } else {
                format!("{detail}; {check}")
            }
        }
        None => detail,
    };
    // What the agent says, beside the check.
    let detail = match &h.stats.agent {
        Some(a) if detail.is_empty() => format!("agent says {}", a.summary()),
        Some(a) => format!("{detail}; agent says {}", a.summary()),
        None => detail,
    };
    (text, health.name(), detail)
}

/// Polyline points of one direction of a history, scaled to the largest sample
/// of both directions.
fn points(samples: &[Rate], pick: fn(&Rate) -> f64) -> String {
    let max = samples
        .iter()
        .map(|r| r.bytes_in.max(r.bytes_out))
        .fold(0.0, f64::max)
        .max(1.0);
    let step = GRAPH_W / (HISTORY_LEN.saturating_sub(1).max(1)) as f64;
    let offset = HISTORY_LEN.saturating_sub(samples.len());
    let mut out = String::new();
    for (i, r) in samples.iter().enumerate() {
        let x = (offset + i) as f64 * step;
        let y = GRAPH_H - 1.0 - pick(r) / max * (GRAPH_H - 2.0);
        let _ = write!(out, "{x:.1},{y:.1} ");
    }
    out.trim_end().to_string()
}

/// A form posting to a legacy call and coming back to the page.
fn form(action: &str, hidden: &[(&str, &str)], fields: &str, button: &str) -> String {
    let mut f = format!(
        "<form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"_page\" value=\"1\">",
        esc(action)
    );
    for (k, v) in hidden {
        let _ = write!(
            f,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            esc(k),
            esc(v)
        );
    }
    let _ = write!(f, "{fields}<button>{}</button></form>", esc(button));
    f
}

fn scheduler_select(current: Option<&str>) -> String {
    let mut s = String::from("<select name=\"scheduler\">");
    for k in SchedulerKind::ALL {
        let selected = if Some(k.name()) == current {
            " selected"
        } else {
            ""
        };
        let _ = write!(s, "<option{selected}>{}</option>", k.name());
    }
    s.push_str("</select>");
    s
}

#[derive(serde::Deserialize)]
struct Flash {
    msg: Option<String>,
    err: Option<String>,
}

async fn running(
    State(state): State<AdminState>,
    Extension(who): Extension<Principal>,
    Query(flash): Query<Flash>,
) -> Response {
    let stats = state.handle.stats();
    let config = state.handle.config();
    let status = Snapshot::read(&state).readable_by(who.access);
    html(render_running(&state, &stats, &config, &status, &flash))
}

fn render_running(
    state: &AdminState,
    stats: &Stats,
    config: &Config,
    status: &Snapshot,
    flash: &Flash,
) -> String {
    let refresh = state.settings.refresh.as_secs();
    let mut p = String::new();
    let _ = write!(
        p,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>txlb: running</title>"
    );
    if refresh > 0 {
        let _ = write!(
            p,
            "<noscript><meta http-equiv=\"refresh\" content=\"{refresh}\"></noscript>"
        );
    }
    let _ = write!(
        p,
        "<style>{STYLE}</style></head><body data-sig=\"{}\" data-events=\"api/v1/events\">",
        signature(stats, config, status)
    );
    p.push_str(
        "<header><h1>txlb</h1><nav><a href=\"running\">running</a>\
         <a href=\"running.txt\">running.txt</a><a href=\"running.xml\">running.xml</a>\
         <a href=\"config.xml\">config.xml</a><a href=\"diff\">boot vs running</a>\
         <a href=\"connections\">connections</a><a href=\"metrics\">metrics</a><a href=\"api/v1/openapi.json\">API</a></nav>\
         <span id=\"live\"></span></header>",
    );
    p.push_str(&flash_line(flash.msg.as_deref(), flash.err.is_some()));
    p.push_str(&process_line(&state.handle.started()));
    p.push_str(&status.panels());
    if let Some(fleet) = state.handle.fleet() {
        p.push_str(&fleet_section(&fleet));
    }
    for s in &stats.services {
        let sv = s.name.as_str();
        let serving = match (&s.serving_group, s.on_backup) {
            (Some(group), true) => format!(
                " <span class=\"badge serving\" title=\"no host of the enabled group is usable\">on backup: {}</span>",
                esc(group)
            ),
            (None, _) => " <span class=\"badge down\">no usable host</span>".to_string(),
            _ => String::new(),
        };
        let _ = write!(
            p,
            "<section class=\"service\"><h2>Service {}{serving}</h2><div class=\"listeners\">Listeners: ",
            esc(sv)
        );
        for l in &s.listeners {
            let proxy = if l.accept_proxy {
                ", accepts PROXY headers"
            } else {
                ""
            };
            let _ = write!(
                p,
                "<code>{}</code> <small>(bound {}{proxy})</small> {} ",
                esc(&l.configured),
                l.local,
                form(
                    "delListener",
                    &[("service", sv), ("listen", &l.configured)],
                    "",
                    "remove"
                )
            );
        }
        // A div, not a p: the forms inside would close a paragraph early.
        p.push_str("</div>");
        p.push_str(&service_counters(s));
        for l in s.listeners.iter().filter(|l| !l.routes.is_empty()) {
            listener_routes(&mut p, sv, l);
        }
        for l in &s.listeners {
            if let Some(tls) = &l.tls {
                listener_certificates(&mut p, &l.configured, tls);
            }
        }
        p.push_str(&form(
            "addListener",
            &[("service", sv)],
            "<input name=\"listen\" placeholder=\"host:port\" required size=\"16\"> ",
            "add listener",
        ));
        for g in &s.groups {
            let gr = g.name.as_str();
            let serving_backup = s.on_backup && s.serving_group.as_deref() == Some(gr);
            let _ = write!(
                p,
                "<div class=\"group{}{}\"><h3>Group {} {}{}</h3>",
                if g.enabled { " enabled" } else { "" },
                if serving_backup { " serving" } else { "" },
                esc(gr),
                if g.enabled {
                    "<span class=\"badge\">enabled</span>".to_string()
                } else if g.backup {
                    // A backup group cannot be enabled: no form.
                    "<span class=\"badge backup\">backup</span>".to_string()
                } else {
                    form(
                        "enableGroup",
                        &[("service", sv), ("group", gr)],
                        "",
                        "enable",
                    )
                },
                if serving_backup {
                    " <span class=\"badge serving\">serving</span>"
                } else {
                    ""
                }
            );
            p.push_str(&form(
                "changeScheduler",
                &[("service", sv), ("group", gr)],
                &format!("scheduler {} ", scheduler_select(Some(&g.scheduler))),
                "change",
            ));
            p.push_str(
                "<table><thead><tr><th>host</th><th>address</th><th>weight</th><th>state</th>\
                 <th>open</th><th>total</th><th>failed</th><th>bytes in</th><th>bytes out</th>\
                 <th>throughput</th><th>last minute</th><th>actions</th></tr></thead><tbody>",
            );
            for h in &g.hosts {
                let key: HostKey = (sv.into(), gr.into(), h.name.clone());
                let samples = state.history.samples(&key);
                let current = samples.last().copied().unwrap_or_default();
                let (text, class, detail) = state_of(h);
                let v = &h.stats;
                let hidden = [("service", sv), ("group", gr), ("name", h.name.as_str())];
                let toggle = if v.health == HostHealth::AdminDown {
                    form("hostAdminUp", &hidden, "", "admin-up")
                } else {
                    form("hostAdminDown", &hidden, "", "admin-down")
                };
                let _ = write!(
                    p,
                    "<tr data-host=\"{key}\"><td class=\"wrap\">{name}</td><td class=\"wrap\"><code>{addr}</code></td>\
                     <td class=\"n\">{weight}</td><td class=\"state\"><span data-k=\"state\" class=\"{class}\">{text}</span> \
                     <small data-k=\"detail\">{detail}</small></td>\
                     <td class=\"n\" data-k=\"open\">{open}</td><td class=\"n\" data-k=\"total\">{total}</td>\
                     <td class=\"n\" data-k=\"failures\">{failures}</td>\
                     <td class=\"n\" data-k=\"bytes_in\">{bin}</td><td class=\"n\" data-k=\"bytes_out\">{bout}</td>\
                     <td data-k=\"rate\">{rate}</td>\
                     <td><svg class=\"g\" viewBox=\"0 0 {GRAPH_W} {GRAPH_H}\" width=\"{GRAPH_W}\" height=\"{GRAPH_H}\" \
                     role=\"img\" aria-label=\"throughput, last minute\">\
                     <polyline class=\"i\" points=\"{pin}\"/><polyline class=\"o\" points=\"{pout}\"/></svg></td>\
                     <td class=\"actions\">{toggle}{retry}{remove}{drain}</td></tr>",
                    key = esc(&host_key(sv, gr, &h.name)),
                    name = esc(&h.name),
                    addr = esc(&h.address),
                    weight = h.weight,
                    detail = esc(&detail),
                    open = v.open,
                    total = v.total,
                    failures = v.failures,
                    bin = v.bytes_in,
                    bout = v.bytes_out,
                    rate = esc(&rate_text(current)),
                    pin = points(&samples, |r| r.bytes_in),
                    pout = points(&samples, |r| r.bytes_out),
                    retry = form(
                        "retryHost",
                        &[("service", sv), ("group", gr), ("host", h.name.as_str())],
                        "",
                        "retry"
                    ),
                    remove = form("delHost", &hidden, "", "remove"),
                    drain = form(
                        "drainHost",
                        &hidden,
                        "<input name=\"deadline\" placeholder=\"seconds\" size=\"6\" \
                         aria-label=\"drain deadline in seconds\" \
                         title=\"drain deadline in seconds: close what is left after this many seconds\"> ",
                        "drain"
                    ),
                );
            }
            for h in &g.draining {
                let _ = write!(
                    p,
                    "<tr><td>{}</td><td><code>{}</code></td><td class=\"n\">{}</td>\
                     <td><span class=\"admin-down\">removed, draining ({} open)</span></td>\
                     <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                     <td class=\"n\">{}</td><td class=\"n\">{}</td><td></td><td></td>\
                     <td><a href=\"connections?service={}&amp;host={}\">connections</a></td></tr>",
                    esc(&h.name),
                    esc(&h.address),
                    h.weight,
                    h.stats.open,
                    h.stats.open,
                    h.stats.total,
                    h.stats.failures,
                    h.stats.bytes_in,
                    h.stats.bytes_out,
                    pct(sv),
                    pct(&h.name)
                );
            }
            p.push_str("</tbody></table>");
            p.push_str(&form(
                "addHost",
                &[("service", sv), ("group", gr)],
                "<input name=\"name\" placeholder=\"name\" required size=\"10\"> \
                 <input name=\"ip\" placeholder=\"host:port\" required size=\"16\"> \
                 <input name=\"weight\" placeholder=\"weight\" size=\"4\"> ",
                "add host",
            ));
            if !g.enabled {
                p.push_str(&form(
                    "delAllHosts",
                    &[("service", sv), ("group", gr)],
                    "",
                    "remove all hosts",
                ));
                p.push_str(&form(
                    "delGroup",
                    &[("service", sv), ("group", gr)],
                    "",
                    "remove group",
                ));
            }
            p.push_str("</div>");
        }
        p.push_str(&form(
            "newGroup",
            &[("service", sv)],
            &format!(
                "<input name=\"group\" placeholder=\"group\" required size=\"10\"> {} ",
                scheduler_select(None)
            ),
            "add group",
        ));
        p.push_str(&form(
            "delService",
            &[("service", sv)],
            "",
            "remove service",
        ));
        p.push_str("</section>");
    }
    p.push_str("<section class=\"service\"><h2>New service</h2>");
    p.push_str(&form(
        "newService",
        &[],
        &format!(
            "<input name=\"service\" placeholder=\"service\" required size=\"10\"> \
             <input name=\"listen\" placeholder=\"listen host:port\" required size=\"16\"> \
             <input name=\"group\" placeholder=\"group (main)\" size=\"10\"> {} \
             <input name=\"name\" placeholder=\"first host\" size=\"10\"> \
             <input name=\"ip\" placeholder=\"host:port\" size=\"16\"> ",
            scheduler_select(None)
        ),
        "create",
    ));
    p.push_str("</section><section class=\"service\"><h2>Users</h2><table><tbody>");
    for u in config.admin.iter().flat_map(|a| &a.users) {
        let _ = write!(
            p,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&u.name),
            u.access.name(),
            form("delUser", &[("name", &u.name)], "", "remove")
        );
    }
    p.push_str("</tbody></table>");
    p.push_str(&form(
        "addUser",
        &[],
        "<input name=\"name\" placeholder=\"name\" required size=\"10\" autocomplete=\"off\"> \
         <input name=\"password\" type=\"password\" placeholder=\"password\" required autocomplete=\"new-password\"> \
         <select name=\"access\"><option>full</option><option>readonly</option></select> ",
        "add user",
    ));
    p.push_str("</section><section class=\"service\"><h2>Maintenance</h2>");
    p.push_str(&form("closeLog", &[], "", "reopen log file"));
    p.push_str(&form("saveConfig", &[], "", "save configuration"));
    let _ = write!(p, "</section><script>{SCRIPT}</script></body></html>");
    p
}

/// Fleet mode: this instance, the registered instances, and the hosts some
/// instance sees down.
fn fleet_section(fleet: &crate::fleet::FleetView) -> String {
    let mut p = String::from("<section class=\"service\"><h2>Fleet</h2><p>");
    let _ = write!(
        p,
        "This instance: <b>{}</b> · etcd <code>{}</code> prefix <code>{}</code> · \
         configuration revision {} · ",
        esc(&fleet.instance),
        esc(&fleet.etcd.join(",")),
        esc(&fleet.prefix),
        fleet.revision
    );
    if let Some(reason) = &fleet.out_of_step {
        let _ = write!(
            p,
            "<span class=\"bad\">out of step: the fleet is at revision {}, which cannot run \
             here ({}); changes made here are refused until it does</span> · ",
            fleet.latest_revision,
            esc(reason)
        );
    }
    match &fleet.error {
        None if fleet.reachable => p.push_str("etcd reachable"),
        None => p.push_str("etcd not reached yet"),
        Some(error) => {
            let _ = write!(
                p,
                "<span class=\"bad\">etcd unreachable: changes are refused, the running \
                 configuration stays ({})</span>",
                esc(error)
            );
        }
    }
    p.push_str(
        "</p><table><thead><tr><th>instance</th><th>version</th><th>configuration revision</th>\
         <th>started</th></tr></thead><tbody>",
    );
    for i in &fleet.instances {
        let started = UNIX_EPOCH + Duration::from_secs(i.started);
        let _ = write!(
            p,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} UTC</td></tr>",
            esc(&i.name),
            esc(&i.version),
            match &i.out_of_step {
                None => i.revision.to_string(),
                Some(reason) => format!(
                    "{} <span class=\"bad\">out of step: cannot run {} ({})</span>",
                    i.revision,
                    i.latest_revision,
                    esc(reason)
                ),
            },
            utc(started)
        );
    }
    p.push_str("</tbody></table><h3>Hosts some instances see down</h3>");
    if fleet.hosts_down.is_empty() {
        p.push_str("<p>none</p>");
    } else {
        p.push_str(
            "<table><thead><tr><th>service</th><th>group</th><th>host</th><th>down on</th>\
             <th>up on</th></tr></thead><tbody>",
        );
        for h in &fleet.hosts_down {
            let down: Vec<String> = h
                .down
                .iter()
                .map(|d| {
                    let how = match d.health {
                        HostHealth::Bad => format!("bad: {}", d.reason.as_deref().unwrap_or("")),
                        health => health.name().to_string(),
                    };
                    format!("{} ({})", esc(&d.instance), esc(&how))
                })
                .collect();
            let _ = write!(
                p,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&h.service),
                esc(&h.group),
                esc(&h.host),
                down.join(", "),
                esc(&h.up.join(", "))
            );
        }
        p.push_str("</tbody></table>");
    }
    p.push_str("</section>");
    p
}

/// The live data the page's script applies.
#[derive(serde::Serialize)]
struct LiveHost {
    key: String,
    state: String,
    state_class: &'static str,
    detail: String,
    open: u64,
    total: u64,
    failures: u64,
    bytes_in: u64,
    bytes_out: u64,
    rate: String,
    points_in: String,
    points_out: String,
}

pub(crate) fn live_update(state: &AdminState) -> serde_json::Value {
    let stats = state.handle.stats();
    let config = state.handle.config();
    let status = Snapshot::read(state);
    let mut hosts = Vec::new();
    for s in &stats.services {
        for g in &s.groups {
            for h in &g.hosts {
                let key: HostKey = (s.name.clone(), g.name.clone(), h.name.clone());
                let samples = state.history.samples(&key);
                let (text, class, detail) = state_of(h);
                hosts.push(LiveHost {
                    key: host_key(&s.name, &g.name, &h.name),
                    state: text,
                    state_class: class,
                    detail,
                    open: h.stats.open,
                    total: h.stats.total,
                    failures: h.stats.failures,
                    bytes_in: h.stats.bytes_in,
                    bytes_out: h.stats.bytes_out,
                    rate: rate_text(samples.last().copied().unwrap_or_default()),
                    points_in: points(&samples, |r| r.bytes_in),
                    points_out: points(&samples, |r| r.bytes_out),
                });
            }
        }
    }
    serde_json::json!({
        "sig": signature(&stats, &config, &status),
        "hosts": hosts,
    })
}

/// Server-sent events: a `stats` event at once and every `refresh` period, and on
/// every transition a `change` event (the transition) followed by `stats`. Ends
/// when the client goes or the balancer shuts down.
pub(crate) async fn events(State(state): State<AdminState>) -> Response {
    // Held by the stream's task: its place is free once the stream ends.
    let Ok(place) = state.event_streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many event streams open: close one (each page keeps one)\n",
        )
            .into_response();
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(16);
    let period = state.settings.refresh;
    let stop = state.handle.shutdown_token();
    tokio::spawn(async move {
        let _place = place;
        let mut transitions = state.handle.events();
        let mut ticks = tokio::time::interval(period.max(Duration::from_secs(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stats = |state: &AdminState| {
            SseEvent::default()
                .event("stats")
                .data(live_update(state).to_string())
        };
        if tx.send(stats(&state)).await.is_err() {
            return;
        }
        ticks.reset();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tx.closed() => return,
                _ = ticks.tick(), if !period.is_zero() => {}
                t = transitions.next() => match t {
                    None => return,
                    Some(Ok(event)) => {
                        let data = serde_json::to_string(&event).unwrap_or_default();
                        if tx.send(SseEvent::default().event("change").data(data)).await.is_err() {
                            return;
                        }
                    }
                    // Fell behind: the stats below bring the page up to date.
                    Some(Err(_)) => {}
                },
            }
            if tx.send(stats(&state)).await.is_err() {
                return;
            }
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(serde::Deserialize)]
struct ConnectionsQuery {
    service: Option<String>,
    host: Option<String>,
    msg: Option<String>,
    err: Option<String>,
}

/// Open connections and UDP sessions (client, listener, host, since, idle,
/// datagrams and bytes each way), filterable by service and host, each with a
/// close button.
async fn connections(
    State(state): State<AdminState>,
    Query(q): Query<ConnectionsQuery>,
) -> Response {
    let service = q.service.as_deref().filter(|s| !s.is_empty());
    let host = q.host.as_deref().filter(|s| !s.is_empty());
    let list = crate::ops::read::connections(&state.handle, service, host).await;
    let mut p = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>txlb: connections</title>\
         <style>{STYLE}</style></head><body><header><h1>txlb</h1><nav><a href=\"running\">running</a>\
         <a href=\"connections\">connections</a></nav></header>"
    );
    p.push_str(&flash_line(q.msg.as_deref(), q.err.is_some()));
    let _ = write!(
        p,
        "<h2>Open connections: {}</h2><form method=\"get\" action=\"connections\">\
         <input name=\"service\" placeholder=\"service\" value=\"{}\" size=\"10\"> \
         <input name=\"host\" placeholder=\"host\" value=\"{}\" size=\"10\"> <button>filter</button></form>\
         <table><thead><tr><th>id</th><th>proto</th><th>client</th><th>listener</th><th>service</th><th>group</th>\
         <th>host</th><th>since</th><th>idle</th><th>datagrams in</th><th>datagrams out</th>\
         <th>bytes in</th><th>bytes out</th><th></th></tr></thead><tbody>",
        list.len(),
        esc(service.unwrap_or("")),
        esc(host.unwrap_or(""))
    );
    for c in &list {
        let since = UNIX_EPOCH + Duration::from_secs_f64(c.since.max(0.0));
        let id = c.id.to_string();
        let count = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
        let _ = write!(
            p,
            "<tr><td class=\"n\">{id}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} <small>{}</small></td>\
             <td>{} UTC <small>({}{})</small></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            c.transport.as_str(),
            c.client,
            c.listener,
            esc(&c.service),
            esc(&c.group),
            esc(&c.host),
            c.host_addr,
            utc(since),
            ago(since),
            match (c.parked, c.draining_in) {
                (true, _) => ", idle: parked".to_string(),
                (false, Some(pid)) => format!(", draining in PID {pid}"),
                (false, None) => String::new(),
            },
            c.idle_seconds
                .map(|s| format!("{s:.0} s"))
                .unwrap_or_default(),
            count(c.datagrams_in),
            count(c.datagrams_out),
            c.bytes_in,
            c.bytes_out,
            form_back(
                "closeConnection",
                "connections",
                &[("id", &id)],
                "",
                "close"
            ),
        );
    }
    p.push_str("</tbody></table></body></html>");
    html(p)
}

/// [`form`], coming back to `page` instead of the running page.
fn form_back(
    action: &str,
    page: &str,
    hidden: &[(&str, &str)],
    fields: &str,
    button: &str,
) -> String {
    form(action, hidden, fields, button).replacen(
        "name=\"_page\" value=\"1\"",
        &format!("name=\"_page\" value=\"{}\"", esc(page)),
        1,
    )
}

async fn diff(State(state): State<AdminState>, Extension(who): Extension<Principal>) -> Response {
    let boot = (*state.handle.boot_config()).clone();
    let boot = readable_config(who.access, boot).to_xml();
    let running = readable_config(who.access, state.handle.config()).to_xml();
    let diff = unified_diff("boot", &boot, "running", &running);
    let mut p = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>txlb: boot vs running</title>\
         <style>{STYLE}</style></head><body><header><h1>txlb</h1><nav><a href=\"running\">running</a>\
         <a href=\"config.xml\">config.xml</a><a href=\"running.xml\">running.xml</a></nav></header>\
         {}<h2>Boot configuration → running configuration</h2>",
        Snapshot::read(&state).readable_by(who.access).panels(),
    );
    if diff.is_empty() {
        p.push_str("<p>No change since start.</p>");
    } else {
        p.push_str(
            "<p>Lines marked - are only in the configuration loaded at start, + only in the \
             running one.</p>",
        );
        p.push_str(&unified_html(&diff));
    }
    p.push_str("</body></html>");
    html(p)
}

/// The process line: id, version, start and how it started.
fn process_line(started: &crate::Started) -> String {
    let how = match &started.upgraded_from {
        None => "fresh".to_string(),
        Some(from) => format!(
            "upgraded from PID {} (txlb {}) at {}, {} connections moved",
            from.pid,
            esc(&from.version),
            utc(from.at),
            from.connections_moved
        ),
    };
    format!(
        "<p class=\"process\" id=\"process\">PID {} · txlb {} · started {} · {how}</p>",
        started.pid,
        esc(started.version),
        utc(started.at)
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{send, test_router};
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00:00");
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661)),
            "2000-02-29 01:01:01"
        );
    }

    #[test]
    fn escaping_and_points() {
        assert_eq!(
            esc("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
        assert_eq!(pct("a b/é"), "a%20b%2F%C3%A9");
        assert_eq!(points(&[], |r| r.bytes_in), "");
        let p = points(
            &[Rate {
                bytes_in: 10.0,
                bytes_out: 0.0,
            }],
            |r| r.bytes_in,
        );
        assert_eq!(p, "120.0,1.0");
    }

    #[tokio::test]
    async fn running_page_has_every_host_a_form_per_change_and_headers() {
        let (app, _handle, _b) = test_router().await;
        for path in ["/", "/running", "/all"] {
            let response = super::super::tests::request(&app, "GET", path, None).await;
            assert_eq!(response.status(), StatusCode::OK);
            let h = response.headers();
            assert!(
                h[header::CONTENT_SECURITY_POLICY]
                    .to_str()
                    .unwrap()
                    .contains("frame-ancestors 'none'")
            );
            assert_eq!(h["x-content-type-options"], "nosniff");
            assert_eq!(h["x-frame-options"], "DENY");
        }
        let (_, page) = send(&app, "GET", "/running", None).await;
        for needle in [
            "Service svc",
            "<span class=\"badge\">enabled</span>",
            "data-host=\"svc\u{1f}g\u{1f}a\"",
            "action=\"addHost\"",
            "action=\"hostAdminDown\"",
            "action=\"retryHost\"",
            "action=\"delHost\"",
            "action=\"changeScheduler\"",
            "action=\"newGroup\"",
            "action=\"newService\"",
            "action=\"addUser\"",
            "action=\"closeLog\"",
            "action=\"saveConfig\"",
            "<svg class=\"g\"",
        ] {
            assert!(page.contains(needle), "missing {needle}");
        }
    }

    /// The forms are the operations' own: each posts to an operation's call
    /// with fields named as its parameters.
    #[tokio::test]
    async fn every_form_is_an_operation_with_its_parameters() {
        let (app, _handle, _b) = test_router().await;
        let (_, page) = send(&app, "GET", "/running", None).await;
        let (_, connections) = send(&app, "GET", "/connections", None).await;
        let attr = |tag: &str, name: &str| {
            let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
            Some(tag[at..].split('"').next()?.to_string())
        };
        let mut forms = 0;
        for form in format!("{page}{connections}").split("<form ").skip(1) {
            // The tag's attributes, each after a blank.
            let form = format!(" {}", form.split("</form>").next().unwrap());
            if attr(&form, "method").as_deref() == Some("get") {
                continue;
            }
            let action = attr(&form, "action").unwrap();
            let op = crate::ops::by_call(&action).unwrap_or_else(|| panic!("{action}"));
            for field in form
                .split('<')
                .filter(|t| t.starts_with("input") || t.starts_with("select"))
            {
                let name = attr(field, "name").unwrap();
                let known = name == super::super::params::FROM_PAGE
                    || op
                        .params
                        .iter()
                        .any(|p| p.name == name || p.aliases.contains(&name.as_str()))
                    || op.settings.iter().any(|(xml, _)| *xml == name);
                assert!(known, "{action}: field {name}");
            }
            forms += 1;
        }
        assert!(forms > 10, "{forms}");
    }

    #[tokio::test]
    async fn hsts_only_over_tls() {
        let (app, _handle, _b) = test_router().await;
        let response = super::super::tests::request(&app, "GET", "/running", None).await;
        assert!(
            !response
                .headers()
                .contains_key(header::STRICT_TRANSPORT_SECURITY)
        );
        let web = crate::config::AdminWebConfig {
            listen: crate::config::parse_listen_addr("127.0.0.1:0").unwrap(),
            enable: true,
            secure: true,
            refresh: Duration::from_secs(10),
            metrics_public: false,
            cert: None,
            key: None,
            allowed_hosts: Vec::new(),
            changes_require_post: false,
        };
        let settings = super::super::AdminSettings {
            tls: Some(super::super::tls_server_config(&web, None).unwrap()),
            ..Default::default()
        };
        let (app, _handle, _b) = super::super::tests::test_router_with(settings).await;
        for path in ["/running", "/api/v1/stats", "/nope"] {
            let response = super::super::tests::request(&app, "GET", path, None).await;
            let hsts = response.headers()[header::STRICT_TRANSPORT_SECURITY]
                .to_str()
                .unwrap();
            assert_eq!(hsts, "max-age=31536000", "{path}");
        }
    }

    #[tokio::test]
    async fn form_posts_redirect_back_to_the_page() {
        let (app, handle, _b) = test_router().await;
        let response = super::super::tests::request(
            &app,
            "POST",
            "/hostAdminDown",
            Some("_page=1&service=svc&group=g&name=a"),
        )
        .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let location = response.headers()[header::LOCATION].to_str().unwrap();
        assert!(location.starts_with("running?msg=OK"), "{location}");
        assert_eq!(
            handle.stats().host("svc", "g", "a").unwrap().stats.health,
            HostHealth::AdminDown
        );
        let (_, page) = send(&app, "GET", &format!("/{location}"), None).await;
        assert!(page.contains("class=\"flash\""), "{page}");
    }

    #[tokio::test]
    async fn diff_page_shows_changes() {
        let (app, _handle, _b) = test_router().await;
        let (_, page) = send(&app, "GET", "/diff", None).await;
        assert!(page.contains("No change since start"));
        send(
            &app,
            "GET",
            "/addHost?service=svc&group=g&name=zz&ip=127.0.0.1:7",
            None,
        )
        .await;
        let (_, page) = send(&app, "GET", "/diff", None).await;
        assert!(page.contains("<span class=\"a\">+ "), "{page}");
        assert!(page.contains("zz"), "{page}");
    }
}
