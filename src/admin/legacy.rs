//! txLoadBalancer's web API: the same call names and parameters, GET or POST,
//! answering `OK …` in plain text or an error status with a one-line reason. Posts
//! from the running page's forms are redirected back to the page instead.
//!
//! txlb adds `delService`, `addListener`, `delListener`, `drainHost` and
//! `closeConnection` in the same style. Each call is an operation of
//! [`crate::ops`]: this file only reads its parameters and writes its answer.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get, on};
use axum::{Extension, Router};

use super::error::AdminError;
use super::params::{FROM_PAGE, Params};
use super::status::readable_config;
use super::{AdminState, Principal};
use crate::ops::{Args, OPERATIONS, Operation};
use crate::{Stats, config::Config};

/// The legacy routes: the reads, and one call per operation
/// ([`OPERATIONS`]).
pub(crate) fn routes() -> Router<AdminState> {
    let mut router = Router::new()
        .route("/running.txt", get(running_txt))
        .route("/running.xml", get(running_xml))
        .route("/config.xml", get(config_xml))
        .route("/hostCheck", get(host_check));
    for op in OPERATIONS {
        if let Some(name) = op.call {
            router = router.route(&format!("/{name}"), call(op));
        }
    }
    router
}

/// A legacy call on GET and POST: `OK …` text, or a redirect to the page for
/// posts from its forms.
fn call(op: &'static Operation) -> MethodRouter<AdminState> {
    on(
        MethodFilter::GET.or(MethodFilter::POST),
        move |State(state): State<AdminState>, params: Params| async move {
            let from_page = params.is_from_page();
            let back_to = params.back_to();
            let result = run(&state, op, &params).await;
            if from_page {
                let (text, error) = match &result {
                    Ok(text) => (text.clone(), false),
                    Err(e) => (e.to_string(), true),
                };
                return super::pages::back_to_page(back_to, &text, error);
            }
            match result {
                Ok(text) => plain(format!("{text}\n")),
                Err(e) => e.plain(),
            }
        },
    )
}

/// The call's parameters by their names (or a legacy alias), and the listener
/// settings by theirs, run as the operation.
async fn run(state: &AdminState, op: &'static Operation, p: &Params) -> Result<String, AdminError> {
    if !op.settings.is_empty() {
        refuse_unknown(op, p)?;
    }
    let mut args = Args::new();
    for param in op.params {
        let value = std::iter::once(&param.name)
            .chain(param.aliases)
            .find_map(|name| p.optional(name));
        if let Some(value) = value {
            args.set(param.name, value);
        }
    }
    for (key, _) in op.settings {
        if let Some(value) = p.optional(key) {
            args.setting(*key, value);
        }
    }
    let answer = op.parse(&args)?.run(&state.op_context()).await?;
    Ok(answer.text)
}

/// Where settings give a call its meaning, a misspelt one is refused rather
/// than dropped: `sin=` would leave a route matching every TLS client, a
/// misspelt `trustedProxies` a listener trusting any source.
fn refuse_unknown(op: &Operation, p: &Params) -> Result<(), AdminError> {
    let known = |name: &str| {
        name == FROM_PAGE
            || op
                .params
                .iter()
                .any(|param| param.name == name || param.aliases.contains(&name))
            || op.settings.iter().any(|(key, _)| *key == name)
    };
    let Some(unknown) = p.names().filter(|name| !known(name)).min() else {
        return Ok(());
    };
    let expected: Vec<&str> = op
        .params
        .iter()
        .map(|param| param.name)
        .chain(op.settings.iter().map(|(key, _)| *key))
        .collect();
    let shown: String = unknown.chars().take(64).collect();
    Err(AdminError::BadRequest(format!(
        "unknown parameter {shown:?} (expected {})",
        expected.join(", ")
    )))
}

/// `hostCheck?service=&group=&host=` (`name` for `host`, as the other
/// calls): what the host's checks say, one `OK host …` line
/// ([`crate::ops::read::host_check`]).
async fn host_check(State(state): State<AdminState>, p: Params) -> Response {
    let found = || -> Result<String, AdminError> {
        let need = |name: &'static str, alias: Option<&str>| {
            p.optional(name)
                .or_else(|| alias.and_then(|a| p.optional(a)))
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| AdminError::BadRequest(format!("missing parameter {name}")))
        };
        let (service, group, host) = (need("service", None)?, need("group", None)?, {
            need("host", Some("name"))?
        });
        let (stats, config) = (state.handle.stats(), state.handle.config());
        let read = crate::ops::read::host_check(&stats, &config, service, group, host)?;
        Ok(read.text(host))
    };
    match found() {
        Ok(text) => plain(format!("{text}\n")),
        Err(e) => e.plain(),
    }
}

fn plain(text: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

async fn running_txt(State(state): State<AdminState>) -> Response {
    plain(running_text(&state.handle.stats(), &state.handle.config()))
}

async fn running_xml(
    State(state): State<AdminState>,
    Extension(who): Extension<Principal>,
) -> Response {
    xml(readable_config(who.access, state.handle.config()).to_xml())
}

async fn config_xml(
    State(state): State<AdminState>,
    Extension(who): Extension<Principal>,
) -> Response {
    let boot = (*state.handle.boot_config()).clone();
    xml(readable_config(who.access, boot).to_xml())
}

fn xml(text: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        text,
    )
        .into_response()
}

/// `running.txt`: one line per service, listener, group and host, with keys
/// programs can split on whitespace (`key=value`, reasons last and quoted).
pub(crate) fn running_text(stats: &Stats, config: &Config) -> String {
    let mut t = String::new();
    for s in &stats.services {
        // A service without groups (reached through routes) enables none.
        let enabled = if s.enabled_group.is_empty() {
            "none"
        } else {
            &s.enabled_group
        };
        let _ = write!(t, "service {} enabled={enabled}", s.name);
        // Only when it matters, so the lines of services without backups stay
        // as they were.
        match (&s.serving_group, s.on_backup) {
            (Some(group), true) => {
                let _ = write!(t, " on_backup=true serving={group}");
            }
            (None, _) => t.push_str(" serving=none"),
            _ => {}
        }
        t.push('\n');
        for l in &s.listeners {
            let _ = writeln!(
                t,
                "  listen {} bound={} accept_proxy={}",
                l.configured, l.local, l.accept_proxy
            );
            for r in &l.routes {
                let _ = writeln!(
                    t,
                    "    route {} service={} hits={}",
                    r.route, r.service, r.hits
                );
            }
        }
        for g in &s.groups {
            let _ = writeln!(
                t,
                "  group {} scheduler={} enabled={}{}",
                g.name,
                g.scheduler,
                g.enabled,
                if g.backup { " backup=true" } else { "" }
            );
            for h in &g.hosts {
                let v = &h.stats;
                let state = v.health.name();
                let _ = write!(
                    t,
                    "    host {} ip={} weight={} state={state} open={} total={} failed={} bytes_in={} bytes_out={}",
                    h.name,
                    h.address,
                    h.weight,
                    v.open,
                    v.total,
                    v.failures,
                    v.bytes_in,
                    v.bytes_out
                );
                if let Some(check) = &v.check {
                    let _ = write!(
                        t,
                        " check_passes={} check_fails={} check_ms={:.3} check_failures={}",
                        check.passes,
                        check.fails,
                        check.last_micros as f64 / 1e3,
                        check.failures
                    );
                }
                if let Some(agent) = &v.agent {
                    let _ = write!(
                        t,
                        " agent={} agent_weight={} agent_maxconn={} agent_said={:?}",
                        agent.state.name(),
                        agent.weight_percent,
                        agent.maxconn,
                        agent.said
                    );
                    if let Some(why) = &agent.failure {
                        let _ = write!(t, " agent_failure={why:?}");
                    }
                }
                if v.ejections > 0 {
                    let _ = write!(t, " ejections={}", v.ejections);
                }
                if let Some(bad) = &v.bad {
                    let since = bad
                        .since
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    let _ = write!(t, " bad_since={since} reason={:?}", bad.reason);
                }
                t.push('\n');
            }
        }
    }
    if let Some(admin) = &config.admin {
        for u in &admin.users {
            let _ = writeln!(t, "user {} access={}", u.name, u.access.name());
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::super::tests::{body_text, send, test_router};
    use axum::http::StatusCode;

    #[tokio::test]
    async fn add_and_delete_host_through_get() {
        let (app, handle, _backends) = test_router().await;
        let (status, body) = send(
            &app,
            "GET",
            "/addHost?service=svc&group=g&name=h9&ip=127.0.0.1:9",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.starts_with("OK host h9"), "{body}");
        assert!(handle.stats().host("svc", "g", "h9").is_some());
        let (status, body) = send(
            &app,
            "POST",
            "/delHost",
            Some("service=svc&group=g&name=h9"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(handle.stats().host("svc", "g", "h9").is_none());
    }

    #[tokio::test]
    async fn refusals_have_the_right_status_and_one_line() {
        let (app, _handle, _backends) = test_router().await;
        for (uri, status, needle) in [
            (
                "/addHost?service=svc&group=g&name=x",
                StatusCode::BAD_REQUEST,
                "\"ip\"",
            ),
            (
                "/addHost?service=svc&group=g&name=x&ip=nope",
                StatusCode::BAD_REQUEST,
                "\"ip\"",
            ),
            (
                "/delHost?service=nope&group=g&name=a",
                StatusCode::NOT_FOUND,
                "nope",
            ),
            (
                "/delGroup?service=svc&group=g",
                StatusCode::CONFLICT,
                "enabled",
            ),
            (
                "/changeScheduler?service=svc&group=g&scheduler=zz",
                StatusCode::BAD_REQUEST,
                "scheduler",
            ),
            ("/saveConfig", StatusCode::NOT_IMPLEMENTED, "not set up"),
        ] {
            let (got, body) = send(&app, "GET", uri, None).await;
            assert_eq!(got, status, "{uri}: {body}");
            assert!(body.contains(needle), "{uri}: {body}");
            assert_eq!(body.trim_end().lines().count(), 1, "{body}");
        }
    }

    /// The test router with a second service, `api`, for routes to send to.
    async fn with_api_service() -> (axum::Router, crate::BalancerHandle, ()) {
        let (app, handle, backends) = test_router().await;
        let (status, body) = send(
            &app,
            "GET",
            "/newService?service=api&listen=127.0.0.4:0&name=a1&ip=127.0.0.1:9",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (app, handle, backends)
    }

    #[tokio::test]
    async fn routes_are_added_shown_and_removed_by_the_legacy_calls() {
        let (app, handle, _backends) = with_api_service().await;
        let add = "/addRoute?service=svc&listen=127.0.0.1:0&to=api&sni=API.example.com";
        let (status, body) = send(&app, "GET", add, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body.trim_end(),
            "OK listener 127.0.0.1:0 of service svc routes sni=api.example.com to service api"
        );
        let routes = &handle.config().services[0].listeners[0].routes;
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].sni.as_deref(), Some("api.example.com"));
        let (_, text) = send(&app, "GET", "/running.txt", None).await;
        assert!(
            text.contains("    route sni=api.example.com service=api hits=0\n"),
            "{text}"
        );
        // The page shows it under its listener, with its hits and a form
        // removing it.
        let (_, page) = send(&app, "GET", "/", None).await;
        assert!(
            page.contains("Routes of <code>127.0.0.1:0</code>")
                && page.contains(
                    "<code>sni=api.example.com</code> &rarr; api <small>(0 clients)</small>"
                )
                && page.contains("action=\"delRoute\""),
            "{page}"
        );
        // Refused, each with its reason and nothing changed: an unknown
        // service, a route to itself, a bad name, no condition, a bad protocol.
        for (uri, needle) in [
            (
                "/addRoute?service=svc&listen=127.0.0.1:0&to=nope&sni=x.example.com",
                "nope",
            ),
            (
                "/addRoute?service=svc&listen=127.0.0.1:0&to=svc&sni=x.example.com",
                "itself",
            ),
            (
                "/addRoute?service=svc&listen=127.0.0.1:0&to=api&sni=a.*.com",
                "sni",
            ),
            (
                "/addRoute?service=svc&listen=127.0.0.1:0&to=api",
                "condition",
            ),
            (
                "/addRoute?service=svc&listen=127.0.0.1:0&to=api&protocol=gopher",
                "protocol",
            ),
            (
                "/addRoute?service=svc&listen=127.0.0.9:1&to=api&alpn=h2",
                "does not listen",
            ),
        ] {
            let (status, body) = send(&app, "GET", uri, None).await;
            assert!(status.is_client_error(), "{uri}: {status} {body}");
            assert!(body.contains(needle), "{uri}: {body}");
            assert_eq!(handle.config().services[0].listeners[0].routes.len(), 1);
        }
        // A service a route names cannot be removed before the route.
        let (status, body) = send(&app, "GET", "/delService?service=api", None).await;
        assert!(status.is_client_error(), "{body}");
        let del = "/delRoute?service=svc&listen=127.0.0.1:0&to=api&sni=api.example.com";
        let (status, body) = send(&app, "GET", del, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(handle.config().services[0].listeners[0].routes.is_empty());
        let (status, _) = send(&app, "GET", del, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn add_listener_takes_proxy_settings_and_running_txt_shows_them() {
        let (app, handle, _backends) = test_router().await;
        let (status, body) = send(
            &app,
            "GET",
            "/addListener?service=svc&listen=127.0.0.3:0&acceptProxy=true&trustedProxies=10.0.0.0/8,::1",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let config = handle.config();
        let added = &config.services[0].listeners[1];
        assert_eq!(added.options.accept_proxy, Some(true));
        assert_eq!(
            added.options.trusted_proxies.as_ref().map(Vec::len),
            Some(2)
        );
        let (_, text) = send(&app, "GET", "/running.txt", None).await;
        assert!(
            text.contains("listen 127.0.0.1:0 bound=127.0.0.1:")
                && text.contains(" accept_proxy=false\n"),
            "{text}"
        );
        assert!(
            text.lines().any(
                |l| l.starts_with("  listen 127.0.0.3:0 ") && l.ends_with(" accept_proxy=true")
            ),
            "{text}"
        );
        let (status, body) = send(
            &app,
            "GET",
            "/addListener?service=svc&listen=127.0.0.3:0&trustedProxies=10.0.0.0/99",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.contains("trustedProxies"), "{body}");
    }

    #[tokio::test]
    async fn running_txt_lists_hosts() {
        let (app, _handle, _backends) = test_router().await;
        let (status, body) = send(&app, "GET", "/running.txt", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("service svc enabled=g"), "{body}");
        assert!(body.contains("host a ip=127.0.0.1:"), "{body}");
        let (_, xml) = send(&app, "GET", "/running.xml", None).await;
        assert!(crate::config::Config::from_xml_str(&xml).is_ok(), "{xml}");
        let _ = body_text;
    }

    #[tokio::test]
    async fn hostile_route_values_are_refused_on_one_line_and_change_nothing() {
        let (app, handle, _backends) = with_api_service().await;
        let add = "/addRoute?service=svc&listen=127.0.0.1:0&to=api";
        let (status, body) = send(&app, "GET", &format!("{add}&sni=a.example.com"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let huge = "a".repeat(30_000);
        for (query, needle) in [
            (format!("sni={huge}"), "sni"),
            (format!("sni={huge}.example.com"), "sni"),
            ("sni=a%00b.example.com".into(), "sni"),
            ("sni=a%0Ab.example.com".into(), "sni"),
            ("sni=a%1B%5B31mb.example.com".into(), "sni"),
            ("sni=b%C3%BCcher.example.com".into(), "sni"),
            ("sni=a.example.com:443".into(), "sni"),
            ("sni=*.*.example.com".into(), "sni"),
            ("sni=.".into(), "sni"),
            ("sni=..".into(), "sni"),
            ("protocol=http&host=app.example.com:8080".into(), "port"),
            ("protocol=http&host=%5B::1%5D:80".into(), "port"),
            ("protocol=http&host=a%0Db.example.com".into(), "host"),
            ("protocol=http&host=b%C3%BCcher.example".into(), "host"),
            ("alpn=h2%20h3".into(), "alpn"),
            ("alpn=h2%00".into(), "alpn"),
            (format!("alpn={}", "x".repeat(256)), "alpn"),
            ("alpn=%C3%BC".into(), "alpn"),
            ("protocol=ssh&sni=a.example.com".into(), "sni"),
            ("protocol=tl%00s".into(), "protocol"),
            ("sni=b.example.com&position=0".into(), "position"),
            ("sni=b.example.com&position=-1".into(), "position"),
            (
                "sni=b.example.com&position=99999999999999999999999".into(),
                "position",
            ),
            ("sni=b.example.com&nonsense=1".into(), "nonsense"),
            // The very route again: it could never match (the first one
            // always would), and removing "it" would leave the other.
            ("sni=a.example.com".into(), "a.example.com"),
            ("sni=A.EXAMPLE.COM.".into(), "a.example.com"),
            // The same in effect: only TLS clients send a server name.
            (
                "sni=a.example.com&protocol=tls".into(),
                "conditions of route 1",
            ),
        ] {
            let uri = format!("{add}&{query}");
            let (status, body) = send(&app, "GET", &uri, None).await;
            let short = &uri[..uri.len().min(120)];
            assert!(status.is_client_error(), "{short}: {status} {body:.300}");
            assert!(body.contains(needle), "{short}: {body:.300}");
            assert_eq!(body.trim_end().lines().count(), 1, "{short}: {body:.300}");
            assert!(body.len() < 2000, "{short}: {} bytes", body.len());
            assert_eq!(handle.config().services[0].listeners[0].routes.len(), 1);
        }
        // Another condition is another route.
        let (status, body) = send(
            &app,
            "GET",
            &format!("{add}&sni=a.example.com&alpn=h2"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}
