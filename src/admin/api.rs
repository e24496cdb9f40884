//! The JSON API under `/api/v1/`: services, listeners, groups, hosts and users as
//! resources; every change is an operation of [`crate::ops`], the same the
//! legacy calls and the console run: this file reads paths and bodies into its
//! parameters and answers with the resource it changed. Errors
//! are `{"error": {"code": …, "message": …}}`. The routes are documented in
//! `openapi` (served at `/api/v1/openapi.json`), and a test walks that document.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::AdminState;
use super::error::{AdminError, ApiError};
use crate::config::{HostConfig, UserConfig};
use crate::ops::{
    AddGroup, AddHost, AddListener, AddService, AddUser, Answer, Args, Drain, GroupRef, HostRef,
    Op, RemoveListener, RouteChange, SetScheduler, connection_id, new_host, read,
};
use crate::{GroupStats, HostStatsEntry, ServiceStats};

type ApiResult = Result<Response, ApiError>;

/// The JSON API routes (with their `/api/v1` prefix).
pub(crate) fn routes() -> Router<AdminState> {
    const S: &str = "/api/v1/services/{service}";
    const G: &str = "/api/v1/services/{service}/groups/{group}";
    const H: &str = "/api/v1/services/{service}/groups/{group}/hosts/{host}";
    Router::new()
        .route("/api/v1", get(index))
        .route("/api/v1/", get(index))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/events", get(super::pages::events))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/status", get(status))
        .route("/api/v1/services", get(list_services).post(create_service))
        .route(S, get(get_service).delete(delete_service))
        .route(
            &format!("{S}/listeners"),
            get(list_listeners).post(create_listener),
        )
        .route(
            &format!("{S}/listeners/{{listen}}"),
            axum::routing::delete(delete_listener),
        )
        .route(
            &format!("{S}/listeners/{{listen}}/certificates/{{index}}"),
            put(replace_certificate),
        )
        .route(
            &format!("{S}/listeners/{{listen}}/routes"),
            get(list_routes).post(create_route),
        )
        .route(
            &format!("{S}/listeners/{{listen}}/routes/{{position}}"),
            axum::routing::delete(delete_route),
        )
        .route(&format!("{S}/groups"), get(list_groups).post(create_group))
        .route(G, get(get_group).delete(delete_group))
        .route(&format!("{G}/scheduler"), put(set_scheduler))
        .route(&format!("{G}/enable"), post(enable_group))
        .route(
            &format!("{G}/hosts"),
            get(list_hosts).post(create_host).delete(delete_all_hosts),
        )
        .route(H, get(get_host).delete(delete_host))
        .route(&format!("{H}/check"), get(get_host_check))
        .route(&format!("{H}/admin-down"), post(admin_down))
        .route(&format!("{H}/admin-up"), post(admin_up))
        .route(&format!("{H}/retry"), post(retry_host))
        .route(&format!("{H}/drain"), post(drain_host))
        .route("/api/v1/certificates", get(list_certificates))
        .route("/api/v1/connections", get(list_connections))
        .route(
            "/api/v1/connections/{id}",
            axum::routing::delete(close_connection),
        )
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{name}", axum::routing::delete(delete_user))
        .route("/api/v1/log/reopen", post(reopen_log))
        .route("/api/v1/config/save", post(save_config))
        .route("/api/v1/config/reload", post(reload_config))
        .route("/api/v1/config/status", get(super::status::handler))
        .route("/api/v1/fleet", get(fleet))
}

/// Path parameters, with the JSON error body on rejection.
pub(crate) struct P<T>(T);

impl<T, S> FromRequestParts<S> for P<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| P(t))
            .map_err(|e: PathRejection| ApiError(AdminError::BadRequest(e.body_text())))
    }
}

/// A JSON body, with the JSON error body on rejection (the message names the
/// missing or bad field).
pub(crate) struct J<T>(T);

impl<T, S> FromRequest<S> for J<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Json::<T>::from_request(request, state)
            .await
            .map(|Json(t)| J(t))
            .map_err(|e: JsonRejection| ApiError(AdminError::BadRequest(e.body_text())))
    }
}

fn ok(status: StatusCode, value: impl serde::Serialize) -> ApiResult {
    Ok((status, Json(value)).into_response())
}

fn no_content() -> ApiResult {
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Runs one operation, so that every write handler turns a refusal into the
/// same error body.
async fn run(state: &AdminState, op: Op) -> Result<Answer, AdminError> {
    Ok(op.run(&state.op_context()).await?)
}

fn host_ref((service, group, host): (String, String, String)) -> HostRef {
    HostRef {
        service,
        group,
        host,
    }
}

fn find_service(state: &AdminState, service: &str) -> Result<ServiceStats, AdminError> {
    Ok(read::service(&state.handle.stats(), service)?.clone())
}

fn find_group(state: &AdminState, service: &str, group: &str) -> Result<GroupStats, AdminError> {
    Ok(read::group(&state.handle.stats(), service, group)?.clone())
}

fn find_host(
    state: &AdminState,
    service: &str,
    group: &str,
    host: &str,
) -> Result<HostStatsEntry, AdminError> {
    Ok(read::host(&state.handle.stats(), service, group, host)?.clone())
}

async fn openapi() -> Json<Value> {
    Json(super::openapi_document())
}

/// `GET /api/v1/`: where the description is, and every endpoint as
/// `METHOD /path`, read from that description so the two cannot differ.
async fn index() -> Json<Value> {
    let document = super::openapi_document();
    let mut endpoints = Vec::new();
    if let Some(paths) = document["paths"].as_object() {
        for (path, operations) in paths {
            for method in operations.as_object().into_iter().flat_map(|o| o.keys()) {
                endpoints.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    Json(serde_json::json!({
        "openapi": "/api/v1/openapi.json",
        "endpoints": endpoints,
    }))
}

async fn stats(State(state): State<AdminState>) -> Json<crate::Stats> {
    Json(state.handle.stats())
}

/// The process: its id, start time, version and how it started (fresh, or
/// upgraded from a previous process).
async fn status(State(state): State<AdminState>) -> Json<Value> {
    let started = state.handle.started();
    Json(serde_json::json!({
        "pid": started.pid,
        "version": started.version,
        "started_at": crate::state::unix_ms(started.at) / 1000,
        "started": match &started.upgraded_from {
            None => serde_json::json!({"how": "fresh"}),
            Some(from) => serde_json::json!({
                "how": "upgraded",
                "from_pid": from.pid,
                "from_version": from.version,
                "at": crate::state::unix_ms(from.at) / 1000,
                "connections_moved": from.connections_moved,
            }),
        },
    }))
}

async fn list_services(State(state): State<AdminState>) -> Json<Vec<ServiceStats>> {
    Json(state.handle.stats().services)
}

async fn get_service(State(state): State<AdminState>, P(service): P<String>) -> ApiResult {
    ok(StatusCode::OK, find_service(&state, &service)?)
}

/// A host as sent in a request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewHost {
    name: String,
    ip: String,
    weight: Option<u32>,
}

impl NewHost {
    fn into_config(self) -> Result<HostConfig, AdminError> {
        let args = Args::new()
            .with("name", Some(self.name))
            .with("ip", Some(self.ip))
            .with("weight", self.weight.map(|w| w.to_string()));
        Ok(new_host(&args)?)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewService {
    name: String,
    listen: Vec<String>,
    group: Option<String>,
    scheduler: Option<String>,
    #[serde(default)]
    hosts: Vec<NewHost>,
}

async fn create_service(State(state): State<AdminState>, J(body): J<NewService>) -> ApiResult {
    if body.name.trim().is_empty() {
        return Err(AdminError::MissingParameter("name").into());
    }
    let mut listen = body.listen.iter();
    let args = Args::new()
        .with("service", Some(body.name.as_str()))
        .with("listen", listen.next())
        .with("group", body.group)
        .with("scheduler", body.scheduler);
    let mut op = AddService::parse(&args)?;
    for more in listen {
        let args = args.clone().with("listen", Some(more));
        op.listeners.extend(AddService::parse(&args)?.listeners);
    }
    op.hosts = body
        .hosts
        .into_iter()
        .map(NewHost::into_config)
        .collect::<Result<Vec<_>, _>>()?;
    let name = op.name.clone();
    run(&state, Op::AddService(op)).await?;
    ok(StatusCode::CREATED, find_service(&state, &name)?)
}

async fn delete_service(State(state): State<AdminState>, P(service): P<String>) -> ApiResult {
    run(&state, Op::RemoveService(service)).await?;
    no_content()
}

async fn list_listeners(State(state): State<AdminState>, P(service): P<String>) -> ApiResult {
    ok(StatusCode::OK, find_service(&state, &service)?.listeners)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewListener {
    listen: String,
    /// Overrides the service's `acceptProxy` for this listener.
    accept_proxy: Option<bool>,
    /// Overrides the service's `trustedProxies` for this listener.
    trusted_proxies: Option<Vec<String>>,
}

async fn create_listener(
    State(state): State<AdminState>,
    P(service): P<String>,
    J(body): J<NewListener>,
) -> ApiResult {
    let mut args = Args::new()
        .with("service", Some(service.as_str()))
        .with("listen", Some(body.listen));
    if let Some(accept) = body.accept_proxy {
        args.setting("accept_proxy", accept.to_string());
    }
    if let Some(nets) = body.trusted_proxies {
        args.setting("trusted_proxies", nets.join(","));
    }
    let op = AddListener::parse(&args)?;
    let listen = op.listener.addr.to_string();
    run(&state, Op::AddListener(op)).await?;
    let bound = state
        .handle
        .listeners()
        .into_iter()
        .find(|l| l.service == service && l.configured == listen);
    ok(StatusCode::CREATED, bound)
}

async fn delete_listener(
    State(state): State<AdminState>,
    P((service, listen)): P<(String, String)>,
) -> ApiResult {
    let args = Args::new()
        .with("service", Some(service))
        .with("listen", Some(listen));
    run(&state, Op::RemoveListener(RemoveListener::parse(&args)?)).await?;
    no_content()
}

/// The listener `listen` (as configured) of `service`, with its routes.
fn find_listener(
    state: &AdminState,
    service: &str,
    listen: &str,
) -> Result<crate::BoundListener, AdminError> {
    let listener = find_service(state, service)?
        .listeners
        .into_iter()
        .find(|l| l.configured == listen || l.local.to_string() == listen);
    listener.ok_or_else(|| {
        AdminError::from(crate::ops::OpError::Refused(
            crate::ControlError::UnknownListener {
                service: service.to_string(),
                listen: listen.to_string(),
            },
        ))
    })
}

async fn list_routes(
    State(state): State<AdminState>,
    P((service, listen)): P<(String, String)>,
) -> ApiResult {
    ok(
        StatusCode::OK,
        find_listener(&state, &service, &listen)?.routes,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRoute {
    /// The service the route sends to.
    to: String,
    sni: Option<String>,
    alpn: Option<String>,
    protocol: Option<String>,
    host: Option<String>,
    /// Where among the listener's routes, 1 first; absent: last.
    position: Option<u64>,
}

async fn create_route(
    State(state): State<AdminState>,
    P((service, listen)): P<(String, String)>,
    J(body): J<NewRoute>,
) -> ApiResult {
    let configured = find_listener(&state, &service, &listen)?.configured;
    let mut args = Args::new()
        .with("service", Some(service.as_str()))
        .with("listen", Some(configured.as_str()))
        .with("to", Some(body.to));
    let conditions = [
        ("sni", body.sni),
        ("alpn", body.alpn),
        ("protocol", body.protocol),
        ("host", body.host),
        ("position", body.position.map(|p| p.to_string())),
    ];
    for (key, value) in conditions {
        if let Some(value) = value {
            args.setting(key, value);
        }
    }
    run(&state, Op::AddRoute(RouteChange::parse(&args)?)).await?;
    ok(
        StatusCode::CREATED,
        find_listener(&state, &service, &configured)?.routes,
    )
}

/// Removes the route at `position` (1 first) of the listener.
async fn delete_route(
    State(state): State<AdminState>,
    P((service, listen, position)): P<(String, String, usize)>,
) -> ApiResult {
    let configured = find_listener(&state, &service, &listen)?.configured;
    let config = state.handle.config_shared();
    let route = config
        .services
        .iter()
        .find(|s| s.name == service)
        .and_then(|s| {
            s.listeners
                .iter()
                .find(|l| l.addr.to_string() == configured)
        })
        .and_then(|l| l.routes.get(position.checked_sub(1)?))
        .cloned()
        .ok_or_else(|| {
            AdminError::from(crate::ops::OpError::NotFound(format!(
                "listener {configured} of service {service:?} has no route {position}"
            )))
        })?;
    let op = crate::ops::RouteChange {
        service,
        listen: crate::config::parse_listen_addr(&configured).map_err(|_| {
            AdminError::from(crate::ops::OpError::Internal(
                "a listener's address does not read back",
            ))
        })?,
        route,
        position: None,
    };
    run(&state, Op::RemoveRoute(op)).await?;
    no_content()
}

async fn list_groups(State(state): State<AdminState>, P(service): P<String>) -> ApiResult {
    ok(StatusCode::OK, find_service(&state, &service)?.groups)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGroup {
    name: String,
    scheduler: Option<String>,
    #[serde(default)]
    hosts: Vec<NewHost>,
    /// A backup group (see `GroupOptions::backup`).
    #[serde(default)]
    backup: bool,
}

async fn create_group(
    State(state): State<AdminState>,
    P(service): P<String>,
    J(body): J<NewGroup>,
) -> ApiResult {
    if body.name.trim().is_empty() {
        return Err(AdminError::MissingParameter("name").into());
    }
    let args = Args::new()
        .with("service", Some(service.as_str()))
        .with("group", Some(body.name.as_str()))
        .with("scheduler", body.scheduler);
    let scheduler = AddGroup::parse(&args)?.group.scheduler;
    let hosts = body
        .hosts
        .into_iter()
        .map(NewHost::into_config)
        .collect::<Result<Vec<_>, _>>()?;
    let op = AddGroup::new(&service, &body.name, scheduler, hosts, body.backup);
    run(&state, Op::AddGroup(op)).await?;
    ok(
        StatusCode::CREATED,
        find_group(&state, &service, &body.name)?,
    )
}

async fn get_group(
    State(state): State<AdminState>,
    P((service, group)): P<(String, String)>,
) -> ApiResult {
    ok(StatusCode::OK, find_group(&state, &service, &group)?)
}

async fn delete_group(
    State(state): State<AdminState>,
    P((service, group)): P<(String, String)>,
) -> ApiResult {
    run(&state, Op::RemoveGroup(GroupRef { service, group })).await?;
    no_content()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SchedulerBody {
    scheduler: String,
}

async fn set_scheduler(
    State(state): State<AdminState>,
    P((service, group)): P<(String, String)>,
    J(body): J<SchedulerBody>,
) -> ApiResult {
    let args = Args::new()
        .with("service", Some(service.as_str()))
        .with("group", Some(group.as_str()))
        .with("scheduler", Some(body.scheduler));
    run(&state, Op::SetScheduler(SetScheduler::parse(&args)?)).await?;
    ok(StatusCode::OK, find_group(&state, &service, &group)?)
}

async fn enable_group(
    State(state): State<AdminState>,
    P((service, group)): P<(String, String)>,
) -> ApiResult {
    let op = Op::EnableGroup(GroupRef {
        service: service.clone(),
        group: group.clone(),
    });
    run(&state, op).await?;
    ok(StatusCode::OK, find_group(&state, &service, &group)?)
}

async fn list_hosts(
    State(state): State<AdminState>,
    P((service, group)): P<(String, String)>,
) -> ApiResult {
    ok(StatusCode::OK, find_group(&state, &service, &group)?.hosts)
}

async fn create_host(
    State(state): State<AdminState>,
    P((service, group)): P<(String, String)>,
    J(body): J<NewHost>,
) -> ApiResult {
    let host = body.into_config()?;
    let name = host.name.clone();
    let op = AddHost {
        service: service.clone(),
        group: group.clone(),
        host,
    };
    run(&state, Op::AddHost(op)).await?;
    ok(
        StatusCode::CREATED,
        find_host(&state, &service, &group, &name)?,
    )
}

async fn delete_all_hosts(
    State(state): State<AdminState>,
    P((service, group)): P<(String, String)>,
) -> ApiResult {
    run(&state, Op::ClearGroup(GroupRef { service, group })).await?;
    no_content()
}

async fn get_host(
    State(state): State<AdminState>,
    P((service, group, host)): P<(String, String, String)>,
) -> ApiResult {
    ok(StatusCode::OK, find_host(&state, &service, &group, &host)?)
}

/// What the host's checks say of it ([`read::host_check`]).
async fn get_host_check(
    State(state): State<AdminState>,
    P((service, group, host)): P<(String, String, String)>,
) -> ApiResult {
    let (stats, config) = (state.handle.stats(), state.handle.config());
    let read =
        read::host_check(&stats, &config, &service, &group, &host).map_err(AdminError::from)?;
    ok(StatusCode::OK, read)
}

async fn delete_host(
    State(state): State<AdminState>,
    P(names): P<(String, String, String)>,
) -> ApiResult {
    run(&state, Op::RemoveHost(host_ref(names))).await?;
    no_content()
}

async fn set_admin_down(
    state: AdminState,
    names: (String, String, String),
    down: bool,
) -> ApiResult {
    let host = host_ref(names);
    run(&state, Op::AdminDown(host.clone(), down)).await?;
    ok(
        StatusCode::OK,
        find_host(&state, &host.service, &host.group, &host.host)?,
    )
}

async fn admin_down(
    State(state): State<AdminState>,
    P(names): P<(String, String, String)>,
) -> ApiResult {
    set_admin_down(state, names, true).await
}

async fn admin_up(
    State(state): State<AdminState>,
    P(names): P<(String, String, String)>,
) -> ApiResult {
    set_admin_down(state, names, false).await
}

async fn retry_host(
    State(state): State<AdminState>,
    P(names): P<(String, String, String)>,
) -> ApiResult {
    let host = host_ref(names);
    let answer = run(&state, Op::Retry(host.clone())).await?;
    let found = find_host(&state, &host.service, &host.group, &host.host)?;
    ok(
        StatusCode::OK,
        json!({ "answered": answer.answered, "host": found }),
    )
}

#[derive(Deserialize)]
struct DrainQuery {
    deadline: Option<String>,
}

/// A drain's JSON body, when it has one: `{"deadline": 30}` (seconds, or
/// the query's text).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    deadline: Option<Value>,
}

async fn drain_host(
    State(state): State<AdminState>,
    P((service, group, host)): P<(String, String, String)>,
    query: Result<Query<DrainQuery>, QueryRejection>,
    body: axum::body::Bytes,
) -> ApiResult {
    let Query(query) = query.map_err(|e| AdminError::BadRequest(e.body_text()))?;
    // The deadline comes in the query or in a JSON body, not both: a body
    // is never ignored.
    let in_body = match body.iter().all(u8::is_ascii_whitespace) {
        true => None,
        false => serde_json::from_slice::<DrainBody>(&body)
            .map_err(|e| AdminError::BadRequest(format!("bad JSON body: {e}")))?
            .deadline
            .map(|d| match d {
                Value::String(text) => text,
                other => other.to_string(),
            }),
    };
    let deadline = match (query.deadline, in_body) {
        (Some(_), Some(_)) => {
            return Err(ApiError(AdminError::BadRequest(
                "deadline given both in the query and in the body".into(),
            )));
        }
        (query, body) => query.or(body),
    };
    let args = Args::new()
        .with("service", Some(service.as_str()))
        .with("group", Some(group.as_str()))
        .with("name", Some(host.as_str()))
        .with("deadline", deadline);
    run(&state, Op::Drain(Drain::parse(&args)?)).await?;
    ok(StatusCode::OK, find_host(&state, &service, &group, &host)?)
}

#[derive(Deserialize)]
struct ConnectionFilter {
    service: Option<String>,
    host: Option<String>,
}

async fn list_certificates(
    State(state): State<AdminState>,
) -> Json<Vec<crate::ops::CertificateEntry>> {
    Json(crate::ops::certificates(&state.handle))
}

/// A certificate and its key as sent in a request body (PEM text).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCertificate {
    cert: String,
    key: String,
}

async fn replace_certificate(
    State(state): State<AdminState>,
    P((service, listen, index)): P<(String, String, usize)>,
    J(body): J<NewCertificate>,
) -> ApiResult {
    let configured = find_listener(&state, &service, &listen)?.configured;
    let listen = crate::config::parse_listen_addr(&configured)
        .map_err(|e| AdminError::BadRequest(format!("bad listener {configured:?}: {e}")))?;
    let replaced = crate::ops::ReplaceCertificate {
        service,
        listen,
        index,
        cert: body.cert,
        key: body.key,
    }
    .run(&state.handle)
    .await?;
    ok(StatusCode::OK, replaced)
}

async fn list_connections(
    State(state): State<AdminState>,
    filter: Result<Query<ConnectionFilter>, QueryRejection>,
) -> ApiResult {
    let Query(f) = filter.map_err(|e| AdminError::BadRequest(e.body_text()))?;
    let list =
        crate::ops::read::connections(&state.handle, f.service.as_deref(), f.host.as_deref()).await;
    ok(StatusCode::OK, list)
}

async fn close_connection(State(state): State<AdminState>, P(id): P<String>) -> ApiResult {
    let id = connection_id(&Args::new().with("id", Some(id)))?;
    run(&state, Op::CloseConnection(id)).await?;
    no_content()
}

fn user_json(u: &UserConfig) -> Value {
    json!({ "name": u.name, "access": u.access.name() })
}

async fn list_users(State(state): State<AdminState>) -> Json<Vec<Value>> {
    Json(state.users().iter().map(user_json).collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    password: String,
    access: Option<String>,
}

async fn create_user(State(state): State<AdminState>, J(body): J<NewUser>) -> ApiResult {
    let args = Args::new()
        .with("name", Some(body.name))
        .with("password", Some(body.password))
        .with("access", body.access);
    let op = AddUser::parse(&args)?;
    let answer = json!({ "name": op.name, "access": op.access.name() });
    run(&state, Op::AddUser(op)).await?;
    ok(StatusCode::CREATED, answer)
}

async fn delete_user(State(state): State<AdminState>, P(name): P<String>) -> ApiResult {
    run(&state, Op::RemoveUser(name)).await?;
    no_content()
}

/// An operation's answer without its `OK ` prefix.
fn message(answer: Answer) -> Value {
    let text = answer.text.strip_prefix("OK ").unwrap_or(&answer.text);
    json!({ "message": text })
}

async fn fleet(State(state): State<AdminState>) -> Json<crate::fleet::FleetView> {
    Json(state.handle.fleet().unwrap_or_default())
}

async fn reopen_log(State(state): State<AdminState>) -> ApiResult {
    ok(StatusCode::OK, message(run(&state, Op::ReopenLog).await?))
}

async fn save_config(State(state): State<AdminState>) -> ApiResult {
    ok(StatusCode::OK, message(run(&state, Op::SaveConfig).await?))
}

/// The library's one reload, as SIGHUP and the console's `config reload`.
async fn reload_config(State(state): State<AdminState>) -> ApiResult {
    ok(StatusCode::OK, message(run(&state, Op::Reload).await?))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{request, test_router};
    use axum::http::StatusCode;

    async fn json(
        app: &axum::Router,
        method: &str,
        uri: &str,
        body: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let r = request(
            app,
            method,
            uri,
            body.map(|b| format!("json:{b}")).as_deref(),
        )
        .await;
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let v = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("{uri}: not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, v)
    }

    #[tokio::test]
    async fn routes_resource_round_trip() {
        let (app, handle, _b) = test_router().await;
        let (s, v) = json(
            &app,
            "POST",
            "/api/v1/services",
            Some(r#"{"name":"app","listen":["127.0.0.5:0"],"hosts":[{"name":"a","ip":"127.0.0.1:9"}]}"#),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let routes = "/api/v1/services/svc/listeners/127.0.0.1:0/routes";
        let (s, v) = json(&app, "GET", routes, None).await;
        assert_eq!((s, v), (StatusCode::OK, serde_json::json!([])));
        for body in [
            r#"{"to":"app","protocol":"http","host":"app.example.com"}"#,
            r#"{"to":"app","sni":"*.example.org","position":1}"#,
        ] {
            let (s, v) = json(&app, "POST", routes, Some(body)).await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
        }
        let (_, v) = json(&app, "GET", routes, None).await;
        assert_eq!(v[0]["route"], "sni=*.example.org", "{v}");
        assert_eq!(v[1]["route"], "protocol=http host=app.example.com", "{v}");
        assert_eq!(v[1]["service"], "app");
        assert_eq!(v[1]["hits"], 0);
        let (s, v) = json(
            &app,
            "POST",
            routes,
            Some(r#"{"to":"app","host":"x.example.com"}"#),
        )
        .await;
        assert_eq!(
            s,
            StatusCode::BAD_REQUEST,
            "host without protocol http: {v}"
        );
        let (s, v) = json(
            &app,
            "POST",
            routes,
            Some(r#"{"to":"app","sni":"x","bogus":1}"#),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        let (s, _) = json(&app, "DELETE", &format!("{routes}/1"), None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, _) = json(&app, "DELETE", &format!("{routes}/7"), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let left = &handle.config().services[0].listeners[0].routes;
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].host.as_deref(), Some("app.example.com"));
    }

    #[tokio::test]
    async fn hosts_resource_round_trip() {
        let (app, handle, _b) = test_router().await;
        let (s, v) = json(&app, "GET", "/api/v1/services/svc/groups/g/hosts", None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v.as_array().unwrap().len(), 2);
        let (s, v) = json(
            &app,
            "POST",
            "/api/v1/services/svc/groups/g/hosts",
            Some(r#"{"name":"c","ip":"127.0.0.1:3","weight":2}"#),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["name"], "c");
        assert_eq!(v["weight"], 2);
        let (s, v) = json(
            &app,
            "POST",
            "/api/v1/services/svc/groups/g/hosts/c/admin-down",
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["health"], "admin-down");
        let (s, _) = json(
            &app,
            "DELETE",
            "/api/v1/services/svc/groups/g/hosts/c",
            None,
        )
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        assert!(handle.stats().host("svc", "g", "c").is_none());
    }

    #[tokio::test]
    async fn errors_are_the_stable_json_body() {
        let (app, _handle, _b) = test_router().await;
        for (method, uri, body, status, code) in [
            (
                "GET",
                "/api/v1/services/nope",
                None,
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                "GET",
                "/api/v1/nothing",
                None,
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                "POST",
                "/api/v1/services/svc/groups/g/hosts",
                Some(r#"{"name":"c"}"#),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                "POST",
                "/api/v1/services/svc/groups/g/hosts",
                Some(r#"{"name":"c","ip":"x"}"#),
                StatusCode::BAD_REQUEST,
                "bad_parameter",
            ),
            (
                "DELETE",
                "/api/v1/services/svc/groups/g",
                None,
                StatusCode::CONFLICT,
                "conflict",
            ),
        ] {
            let (s, v) = json(&app, method, uri, body).await;
            assert_eq!(s, status, "{uri}: {v}");
            assert_eq!(v["error"]["code"], code, "{uri}: {v}");
            assert!(v["error"]["message"].is_string());
        }
        let (_, v) = json(
            &app,
            "POST",
            "/api/v1/services/svc/groups/g/hosts",
            Some(r#"{"name":"c"}"#),
        )
        .await;
        assert!(
            v["error"]["message"].as_str().unwrap().contains("ip"),
            "{v}"
        );
    }
}
