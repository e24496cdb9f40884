//! txLoadBalancer's web API: the same call names and parameters, GET or POST,
//! answering `OK …` in plain text or an error status with a one-line reason. Posts
//! from the running page's forms are redirected back to the page instead.
//!
//! txlb adds `delService`, `addListener`, `delListener`, `drainHost` and
//! `closeConnection` in the same style.

use std::fmt::Write as _;
use std::future::Future;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get, on};
use axum::{Extension, Router};

use super::error::AdminError;
use super::params::Params;
use super::status::readable_config;
use super::{AdminState, Principal};
use crate::config::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_SCHEDULER, GroupConfig, HostConfig, ServiceConfig, UserConfig,
    parse_seconds,
};
use crate::control::Command;
use crate::state::HostHealth;
use crate::{Stats, config::Config};

/// The legacy routes.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/running.txt", get(running_txt))
        .route("/running.xml", get(running_xml))
        .route("/config.xml", get(config_xml))
        .route("/addHost", call(add_host))
        .route("/delHost", call(del_host))
        .route("/delAllHosts", call(del_all_hosts))
        .route("/enableGroup", call(enable_group))
        .route("/changeScheduler", call(change_scheduler))
        .route("/addUser", call(add_user))
        .route("/delUser", call(del_user))
        .route("/newService", call(new_service))
        .route("/delService", call(del_service))
        .route("/addListener", call(add_listener))
        .route("/delListener", call(del_listener))
        .route("/newGroup", call(new_group))
        .route("/delGroup", call(del_group))
        .route("/retryHost", call(retry_host))
        .route("/hostAdminDown", call(host_admin_down))
        .route("/hostAdminUp", call(host_admin_up))
        .route("/drainHost", call(drain_host))
        .route("/closeConnection", call(close_connection))
        .route("/closeLog", call(close_log))
        .route("/saveConfig", call(save_config))
}

/// A legacy call on GET and POST: `OK …` text, or a redirect to the page for
/// posts from its forms.
fn call<F, Fut>(f: F) -> MethodRouter<AdminState>
where
    F: Fn(AdminState, Params) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<String, AdminError>> + Send + 'static,
{
    on(
        MethodFilter::GET.or(MethodFilter::POST),
        move |State(state): State<AdminState>, params: Params| {
            let f = f.clone();
            async move {
                let from_page = params.is_from_page();
                let back_to = params.back_to();
                let result = f(state, params).await;
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
            }
        },
    )
}

fn plain(text: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

async fn add_host(state: AdminState, p: Params) -> Result<String, AdminError> {
    let (service, group, name) = (
        p.required("service")?,
        p.required("group")?,
        p.required("name")?,
    );
    let host = HostConfig {
        name: name.to_string(),
        address: p.host_address("ip")?,
        weight: p.weight("weight")?,
        options: Default::default(),
    };
    let address = host.address.to_string();
    state
        .handle
        .apply(Command::AddHost {
            service: service.into(),
            group: group.into(),
            host,
        })
        .await?;
    Ok(format!(
        "OK host {name} ({address}) added to group {group} of service {service}"
    ))
}

async fn del_host(state: AdminState, p: Params) -> Result<String, AdminError> {
    let (service, group, name) = (
        p.required("service")?,
        p.required("group")?,
        p.required_any(&["name", "host"])?,
    );
    state
        .handle
        .apply(Command::RemoveHost {
            service: service.into(),
            group: group.into(),
            host: name.into(),
        })
        .await?;
    Ok(format!(
        "OK host {name} removed from group {group} of service {service}"
    ))
}

async fn del_all_hosts(state: AdminState, p: Params) -> Result<String, AdminError> {
    let (service, group) = (p.required("service")?, p.required("group")?);
    state
        .handle
        .apply(Command::RemoveAllHosts {
            service: service.into(),
            group: group.into(),
        })
        .await?;
    Ok(format!(
        "OK every host removed from group {group} of service {service}"
    ))
}

async fn enable_group(state: AdminState, p: Params) -> Result<String, AdminError> {
    let (service, group) = (p.required("service")?, p.required("group")?);
    state
        .handle
        .apply(Command::EnableGroup {
            service: service.into(),
            group: group.into(),
        })
        .await?;
    Ok(format!("OK group {group} of service {service} enabled"))
}

async fn change_scheduler(state: AdminState, p: Params) -> Result<String, AdminError> {
    let (service, group) = (p.required("service")?, p.required("group")?);
    let scheduler = p.scheduler("scheduler", None)?;
    state
        .handle
        .apply(Command::SetScheduler {
            service: service.into(),
            group: group.into(),
            scheduler,
        })
        .await?;
    Ok(format!(
        "OK group {group} of service {service} now uses scheduler {scheduler}"
    ))
}

async fn add_user(state: AdminState, p: Params) -> Result<String, AdminError> {
    let name = p.required("name")?.to_string();
    let password = p.required("password")?.to_string();
    let access = p.access("access")?;
    let password_hash = tokio::task::spawn_blocking(move || super::hash_password(&password))
        .await
        .map_err(|_| AdminError::Internal("password hashing failed"))??;
    state
        .handle
        .apply(Command::AddUser(UserConfig {
            name: name.clone(),
            password_hash,
            access,
        }))
        .await?;
    Ok(format!(
        "OK user {name} added with {} access",
        access.name()
    ))
}

async fn del_user(state: AdminState, p: Params) -> Result<String, AdminError> {
    let name = p.required("name")?;
    state
        .handle
        .apply(Command::RemoveUser { name: name.into() })
        .await?;
    Ok(format!("OK user {name} removed"))
}

async fn new_service(state: AdminState, p: Params) -> Result<String, AdminError> {
    let service = p.required("service")?;
    let listen = p.listen("listen")?;
    let group = p.optional("group").unwrap_or("main");
    let scheduler = p.scheduler("scheduler", Some(DEFAULT_SCHEDULER))?;
    let mut hosts = Vec::new();
    if let Some(name) = p.optional("name") {
        hosts.push(HostConfig {
            name: name.into(),
            address: p.host_address("ip")?,
            weight: p.weight("weight")?,
            options: Default::default(),
        });
    }
    state
        .handle
        .apply(Command::AddService(Box::new(ServiceConfig {
            name: service.into(),
            listeners: vec![listen.clone().into()],
            groups: vec![GroupConfig {
                name: group.into(),
                scheduler,
                hosts: hosts.into(),
                options: Default::default(),
            }],
            enabled_group: group.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            options: Default::default(),
        })))
        .await?;
    let bound = state
        .handle
        .local_addr(service, Some(&listen))
        .map_or_else(|| listen.to_string(), |a| a.to_string());
    Ok(format!(
        "OK service {service} listening on {bound}, group {group} enabled"
    ))
}

async fn del_service(state: AdminState, p: Params) -> Result<String, AdminError> {
    let service = p.required("service")?;
    state
        .handle
        .apply(Command::RemoveService {
            service: service.into(),
        })
        .await?;
    Ok(format!("OK service {service} removed"))
}

async fn add_listener(state: AdminState, p: Params) -> Result<String, AdminError> {
    let service = p.required("service")?;
    let listener = p.listener("listen")?;
    let listen = listener.addr.clone();
    state
        .handle
        .apply(Command::AddListener {
            service: service.into(),
            listen: listener,
        })
        .await?;
    let bound = state
        .handle
        .local_addr(service, Some(&listen))
        .map_or_else(|| listen.to_string(), |a| a.to_string());
    Ok(format!("OK service {service} now also listens on {bound}"))
}

async fn del_listener(state: AdminState, p: Params) -> Result<String, AdminError> {
    let service = p.required("service")?;
    let listen = p.listen("listen")?;
    state
        .handle
        .apply(Command::RemoveListener {
            service: service.into(),
            listen: listen.clone(),
        })
        .await?;
    Ok(format!(
        "OK service {service} no longer listens on {listen}"
    ))
}

async fn new_group(state: AdminState, p: Params) -> Result<String, AdminError> {
    let (service, group) = (p.required("service")?, p.required("group")?);
    let scheduler = p.scheduler("scheduler", Some(DEFAULT_SCHEDULER))?;
    state
        .handle
        .apply(Command::AddGroup {
            service: service.into(),
            group: GroupConfig::new(group, scheduler, Vec::new()),
        })
        .await?;
    Ok(format!(
        "OK group {group} ({scheduler}) added to service {service}"
    ))
}

async fn del_group(state: AdminState, p: Params) -> Result<String, AdminError> {
    let (service, group) = (p.required("service")?, p.required("group")?);
    state
        .handle
        .apply(Command::RemoveGroup {
            service: service.into(),
            group: group.into(),
        })
        .await?;
    Ok(format!("OK group {group} removed from service {service}"))
}

async fn retry_host(state: AdminState, p: Params) -> Result<String, AdminError> {
    let (service, group, host) = (
        p.required("service")?,
        p.required("group")?,
        p.required_any(&["host", "name"])?,
    );
    let answered = state.handle.retry_host(service, group, host).await?;
    Ok(if answered {
        format!("OK host {host} answered and is in rotation")
    } else {
        let reason = state
            .handle
            .stats()
            .host(service, group, host)
            .and_then(|h| h.stats.bad.clone())
            .map(|b| b.reason)
            .unwrap_or_default();
        format!("OK host {host} did not answer and stays bad: {reason}")
    })
}

async fn set_admin_down(state: AdminState, p: Params, down: bool) -> Result<String, AdminError> {
    let (service, group, host) = (
        p.required("service")?,
        p.required("group")?,
        p.required_any(&["name", "host"])?,
    );
    state
        .handle
        .apply(Command::SetAdminDown {
            service: service.into(),
            group: group.into(),
            host: host.into(),
            down,
        })
        .await?;
    Ok(if down {
        format!("OK host {host} is admin-down")
    } else {
        format!("OK host {host} is admin-up")
    })
}

async fn host_admin_down(state: AdminState, p: Params) -> Result<String, AdminError> {
    set_admin_down(state, p, true).await
}

async fn host_admin_up(state: AdminState, p: Params) -> Result<String, AdminError> {
    set_admin_down(state, p, false).await
}

async fn drain_host(state: AdminState, p: Params) -> Result<String, AdminError> {
    let (service, group, host) = (
        p.required("service")?,
        p.required("group")?,
        p.required_any(&["name", "host"])?,
    );
    let deadline = p
        .optional("deadline")
        .map(|d| parse_seconds(d).map_err(|r| super::params::bad("deadline", r)))
        .transpose()?;
    state
        .handle
        .drain_host(service, group, host, deadline)
        .await?;
    let open = state
        .handle
        .stats()
        .host(service, group, host)
        .map_or(0, |h| h.stats.open);
    Ok(match deadline {
        None => format!("OK host {host} draining ({open} open)"),
        Some(d) => format!(
            "OK host {host} draining ({open} open), the rest closed after {} s",
            d.as_secs_f64()
        ),
    })
}

async fn close_connection(state: AdminState, p: Params) -> Result<String, AdminError> {
    let id = p.required("id")?;
    let id: u64 = id
        .parse()
        .map_err(|_| super::params::bad("id", "expected a connection id (a number)"))?;
    if state.handle.close_connection(id) {
        Ok(format!("OK connection {id} closing"))
    } else {
        Err(AdminError::NotFound(format!("no open connection {id}")))
    }
}

pub(crate) async fn close_log(state: AdminState, _: Params) -> Result<String, AdminError> {
    let Some(reopen) = state.settings.reopen_log.clone() else {
        return Ok("OK no log file: logging goes to stderr".into());
    };
    tokio::task::spawn_blocking(move || reopen())
        .await
        .map_err(|_| AdminError::Internal("reopening the log file failed"))?
        .map_err(|error| {
            tracing::error!(%error, "reopening the log file failed");
            AdminError::Internal("reopening the log file failed")
        })?;
    tracing::info!("log file reopened");
    Ok("OK log file reopened".into())
}

pub(crate) async fn save_config(state: AdminState, _: Params) -> Result<String, AdminError> {
    let Some(save) = state.settings.save_config.clone() else {
        return Err(AdminError::NotConfigured(
            "saving the configuration is not set up for this server",
        ));
    };
    let running = state.handle.config();
    let message = tokio::task::spawn_blocking(move || save(&running))
        .await
        .map_err(|_| AdminError::Internal("saving the configuration failed"))?
        .map_err(|reason| {
            tracing::error!(%reason, "saveConfig failed");
            AdminError::Conflict(format!("configuration not saved: {reason}"))
        })?;
    Ok(format!("OK {message}"))
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
        let _ = write!(t, "service {} enabled={}", s.name, s.enabled_group);
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
                let state = match v.health {
                    HostHealth::Up => "up",
                    HostHealth::Bad => "bad",
                    HostHealth::AdminDown => "admin-down",
                };
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
}
