//! The admin plane: an axum router with the HTML running page, txLoadBalancer's
//! legacy web API, the JSON API under `/api/v1/`, server-sent events and
//! Prometheus metrics, and the server that runs it over HTTP or HTTPS.
//!
//! Every change goes through [`BalancerHandle::apply`]; the admin plane keeps no
//! state of its own besides login bookkeeping, throughput history and request
//! counters.
//!
//! - `auth`: basic auth, crypt hashes, throttling, read-only and cross-site checks.
//! - `legacy`: the calls of txLoadBalancer's web API (`addHost`, `running.txt`, …).
//! - `pages`: the running page, the boot-vs-running diff, security headers.
//! - `api`: the JSON API and its OpenAPI document (`openapi`).
//! - `history`: the per-host throughput sampler behind the graphs.
//! - `html`: escaping, times and diffs as HTML, for the pages and the panels.
//! - `metrics`: `/metrics` in Prometheus text format.
//! - `tls`: rustls server configuration, certificate files or a kept self-signed one.
//! - `limits`: request head and body size limits, timeouts on slow clients.
//! - `status`: the last reload and the write-back conflict, as panels and JSON.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let backend = txlb::demo::Backend::start("web-1").await?;
//! # let config = txlb::demo::demo_config(([127, 0, 0, 1], 0).into(), &[backend]);
//! # let handle = txlb::Balancer::start(config).await?;
//! use txlb::admin::{AdminSettings, bind, start};
//! let listener = bind(&txlb::config::parse_listen_addr("127.0.0.1:0")?).await?;
//! let server = start(handle.clone(), AdminSettings::default(), listener).await?;
//! println!("admin pages at {}", server.url());
//! // The server stops with the balancer.
//! handle.shutdown(std::time::Duration::from_secs(1)).await;
//! server.stopped().await;
//! # Ok(()) }
//! ```

mod api;
pub(crate) mod auth;
mod error;
mod history;
mod html;
mod legacy;
mod limits;
mod metrics;
mod openapi;
mod pages;
pub(crate) mod params;
mod status;
mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::ConnectInfo;
use axum::middleware;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::BalancerHandle;
use crate::config::{AdminWebConfig, DEFAULT_ADMIN_REFRESH, ListenAddr, ListenHost};

pub use crate::ops::{ReopenLog, SaveConfig};
pub(crate) use auth::Principal;
pub use auth::{
    FAILURE_WINDOW, Logins, MAX_FAILURES, crypt_scheme, hash_password, verify_password,
};
pub use error::AdminError;
pub use limits::{CLIENT_TIMEOUT, MAX_BODY_BYTES, MAX_CONNECTIONS, MAX_HEADER_BYTES};
pub use openapi::openapi_document;
pub use status::{
    ConflictSource, Reload, ReloadStatus, readable_config, readable_text, redact_passwords,
};
pub use tls::{certificate_paths, server_config as tls_server_config};

/// How long a TLS handshake may take before the connection is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request head (the default of
/// [`AdminSettings::client_timeout`]).
pub const HEADER_READ_TIMEOUT: Duration = CLIENT_TIMEOUT;
/// How long open admin connections may take to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How the admin plane behaves, beyond what the running configuration says.
#[derive(Clone)]
pub struct AdminSettings {
    /// Period of the page's live updates (`<web refresh=…>`); zero turns the
    /// periodic updates off (transitions are still pushed).
    pub refresh: Duration,
    /// Serve `/metrics` without authentication (`<web metricsPublic="true">`).
    pub metrics_public: bool,
    /// Let every request in as a full user while no user is configured. [`serve`]
    /// sets this itself on a loopback address, and refuses other addresses.
    pub open_without_users: bool,
    /// Serve HTTPS with this configuration ([`tls_server_config`]); `None` is HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The `closeLog` hook; `None` answers that there is no log file to reopen.
    pub reopen_log: Option<ReopenLog>,
    /// The `saveConfig` hook; `None` answers that saving is not set up.
    pub save_config: Option<SaveConfig>,
    /// Reads the write-back conflict (a file edited on disk since it was
    /// loaded), shown on the pages and in `/api/v1/config/status`; `None`: no
    /// write-back, never a conflict.
    pub conflict: Option<ConflictSource>,
    /// The outcome of the last reload of the configuration file, written by
    /// whoever reloads (SIGHUP); `None`: reloads are not reported.
    pub reload: Option<Arc<ReloadStatus>>,
    /// How long a client may take to send a request head, and then its body
    /// (default [`CLIENT_TIMEOUT`]); a slower one is disconnected (head) or
    /// answered 408 (body).
    pub client_timeout: Duration,
    /// The failed-login budget per source address; give the SSH console the
    /// same one ([`SshSettings::logins`](crate::ssh::SshSettings::logins)) so
    /// guesses on either count against both.
    pub logins: Logins,
    /// Names clients may use in `Host` besides the server's own address and the
    /// loopback names (`<web allowedHosts=…>`); any other `Host` is refused (421).
    pub allowed_hosts: Vec<String>,
    /// Refuse legacy changing calls sent as GET (`<web changesRequirePost>`).
    pub changes_require_post: bool,
    /// Most admin connections open at once (default [`max_connections`]): past
    /// it new connections wait in the listen backlog until one closes, so the
    /// admin plane never holds the descriptors the data path needs; past half of
    /// it connections are not kept alive.
    pub max_connections: usize,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            refresh: DEFAULT_ADMIN_REFRESH,
            metrics_public: false,
            open_without_users: false,
            tls: None,
            reopen_log: None,
            save_config: None,
            conflict: None,
            reload: None,
            client_timeout: CLIENT_TIMEOUT,
            logins: Logins::new(),
            allowed_hosts: Vec::new(),
            changes_require_post: false,
            max_connections: max_connections(),
        }
    }
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("refresh", &self.refresh)
            .field("metrics_public", &self.metrics_public)
            .field("open_without_users", &self.open_without_users)
            .field("tls", &self.tls.is_some())
            .field("reopen_log", &self.reopen_log.is_some())
            .field("save_config", &self.save_config.is_some())
            .field("conflict", &self.conflict.is_some())
            .field("reload", &self.reload)
            .field("client_timeout", &self.client_timeout)
            .field("logins", &self.logins)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("changes_require_post", &self.changes_require_post)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl AdminSettings {
    /// Settings from `<web …>` (refresh, metricsPublic, allowedHosts — with the
    /// listen address when it is a name —, changesRequirePost); TLS and hooks
    /// stay unset.
    pub fn from_web(web: &AdminWebConfig) -> Self {
        let mut allowed_hosts = web.allowed_hosts.clone();
        if let ListenHost::Name(name) = &web.listen.host {
            allowed_hosts.push(format!("{name}:{}", web.listen.port));
        }
        AdminSettings {
            refresh: web.refresh,
            metrics_public: web.metrics_public,
            allowed_hosts,
            changes_require_post: web.changes_require_post,
            ..AdminSettings::default()
        }
    }
}

/// Everything handlers share; cheap to clone.
#[derive(Clone)]
pub(crate) struct AdminState(Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) handle: BalancerHandle,
    pub(crate) settings: AdminSettings,
    pub(crate) auth: auth::Logins,
    pub(crate) history: history::History,
    pub(crate) requests: metrics::RequestCounts,
    /// Places for event streams (`/events`), which stay open: a quarter of
    /// the connections, so that streams, whoever opens them, cannot take
    /// every connection from the other requests.
    pub(crate) event_streams: Arc<tokio::sync::Semaphore>,
}

impl std::ops::Deref for AdminState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AdminState {
    /// What an operation runs with: the balancer and this server's hooks.
    pub(crate) fn op_context(&self) -> crate::ops::Context<'_> {
        crate::ops::Context {
            handle: &self.handle,
            reopen_log: self.settings.reopen_log.clone(),
            save_config: self.settings.save_config.clone(),
        }
    }

    /// The users of the running configuration (they change with addUser/delUser).
    pub(crate) fn users(&self) -> Vec<crate::config::UserConfig> {
        self.handle
            .config()
            .admin
            .map(|a| a.users)
            .unwrap_or_default()
    }
}

/// The admin router, to serve with [`serve`] or to nest in an application's own
/// router. Every route needs basic auth against the running configuration's
/// users (except `/metrics` when `metrics_public`); with no user configured,
/// requests are let in only when `settings.open_without_users` is set.
///
/// Starts the throughput sampler on the current tokio runtime, if any; it stops
/// with the balancer or when the router is dropped.
pub fn router(handle: BalancerHandle, settings: AdminSettings) -> Router {
    let streams = (settings.max_connections / 4).max(1);
    let state = AdminState(Arc::new(Inner {
        event_streams: Arc::new(tokio::sync::Semaphore::new(streams)),
        auth: settings.logins.clone(),
        handle,
        settings,
        history: history::History::default(),
        requests: metrics::RequestCounts::default(),
    }));
    history::spawn_sampler(&state);
    Router::new()
        .merge(pages::routes())
        .merge(legacy::routes())
        .merge(api::routes())
        .route("/metrics", axum::routing::get(metrics::handler))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limits::read_body,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::middleware,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            pages::security_headers,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::count_requests,
        ))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    let e = AdminError::NotFound(format!("no page {}", uri.path()));
    if uri.path().contains("/api/") {
        e.json()
    } else {
        e.plain()
    }
}

/// Binds the admin address from the configuration (`*` binds every address,
/// names resolve to their first address).
pub async fn bind(listen: &ListenAddr) -> Result<TcpListener, AdminError> {
    bind_plane(listen).await.map_err(|source| AdminError::Bind {
        listen: listen.to_string(),
        source,
    })
}

/// Binds an admin-plane address (web or SSH): `*` is every address (dual-stack;
/// IPv4 alone only on a machine without IPv6, never because another program
/// holds the IPv6 side), a name its first address.
pub(crate) async fn bind_plane(listen: &ListenAddr) -> io::Result<TcpListener> {
    match &listen.host {
        ListenHost::Any => match TcpListener::bind(("::", listen.port)).await {
            Err(error) if crate::proxy::ipv6_unavailable(&error) => {
                TcpListener::bind(("0.0.0.0", listen.port)).await
            }
            bound => bound,
        },
        ListenHost::Ip(ip) => TcpListener::bind(SocketAddr::new(*ip, listen.port)).await,
        ListenHost::Name(name) => TcpListener::bind((name.as_str(), listen.port)).await,
    }
}

/// A running admin server.
#[derive(Debug)]
pub struct AdminServer {
    local: SocketAddr,
    /// The TLS configuration of an HTTPS server, swapped whole by
    /// [`AdminServer::set_tls`].
    tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    /// Stops this server only (a child of the balancer's shutdown token).
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The server's base URL, e.g. `https://127.0.0.1:7000/`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/", self.local)
    }

    /// Serves new TLS handshakes with `config` (a renewed certificate);
    /// connections already open keep theirs. Returns false, changing nothing,
    /// for a plain-HTTP server.
    pub fn set_tls(&self, config: Arc<rustls::ServerConfig>) -> bool {
        match &self.tls {
            None => false,
            Some(acceptor) => {
                acceptor.store(config);
                true
            }
        }
    }

    /// Stops this server while the balancer runs on: no new connections (the
    /// listener is dropped at once), open ones are shut down gracefully in the
    /// background. For moving or re-configuring the admin plane at a reload.
    pub fn stop(self) {
        self.stop.cancel();
    }

    /// Resolves when the server has stopped (after the balancer's shutdown).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// Checks the settings against `listener`, then serves the admin router on it
/// (HTTPS when `settings.tls` is set) in a task until the balancer shuts down;
/// open requests then get up to [`SHUTDOWN_GRACE`] to finish.
///
/// With no user configured, the server only runs on a loopback address, open to
/// local clients (and says so in the log); on any other address it refuses with
/// [`AdminError::NoUsersOnPublicAddress`].
///
/// Requests are answered only when their `Host` names this server: the address
/// the client reached, a loopback name, the machine's host name (with the port)
/// or one of `settings.allowed_hosts`; at most `settings.max_connections` are
/// open at once (more wait to be accepted).
pub async fn start(
    handle: BalancerHandle,
    mut settings: AdminSettings,
    listener: TcpListener,
) -> Result<AdminServer, AdminError> {
    let local = listener.local_addr().map_err(|source| AdminError::Bind {
        listen: "admin listener".into(),
        source,
    })?;
    let no_users = handle.config().admin.is_none_or(|a| a.users.is_empty());
    if no_users {
        if !local.ip().is_loopback() {
            return Err(AdminError::NoUsersOnPublicAddress(local));
        }
        tracing::warn!(
            %local,
            "no admin users configured: the admin web server accepts every local \
             client without a password (loopback only)"
        );
        settings.open_without_users = true;
    }
    // The machine's own name reaches it too (`http://lb1:7000/`): a page of
    // another site cannot take that name.
    if let Some(name) = system_host_name() {
        settings
            .allowed_hosts
            .push(format!("{name}:{}", local.port()));
    }
    let tls = settings
        .tls
        .clone()
        .map(|config| Arc::new(ArcSwap::new(config)));
    let stop = handle.shutdown_token().child_token();
    let task = accept_loop(
        handle.clone(),
        settings,
        listener,
        tls.clone(),
        stop.clone(),
    );
    let server = AdminServer {
        local,
        tls,
        stop,
        task: tokio::spawn(task),
    };
    tracing::info!(url = %server.url(), "admin web server up");
    Ok(server)
}

/// The system's host name (`gethostname`), if it has a usable one.
fn system_host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|b| *b == 0)?;
    let name = std::str::from_utf8(&buf[..end]).ok()?;
    (ok && !name.is_empty() && name != "localhost").then(|| name.to_string())
}

/// [`start`], then wait until the server has stopped.
pub async fn serve(
    handle: BalancerHandle,
    settings: AdminSettings,
    listener: TcpListener,
) -> Result<(), AdminError> {
    start(handle, settings, listener).await?.stopped().await;
    Ok(())
}

/// Serves until `shutdown` (the balancer's shutdown, or [`AdminServer::stop`]).
async fn accept_loop(
    handle: BalancerHandle,
    settings: AdminSettings,
    listener: TcpListener,
    tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    shutdown: CancellationToken,
) {
    let client_timeout = settings.client_timeout;
    let max_connections = settings.max_connections;
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let app = router(handle, settings);
    let connections = TaskTracker::new();
    loop {
        // A place first: past the cap, new connections wait in the listen
        // backlog, holding none of our descriptors, until one closes.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Past half the cap a connection serves one request and closes, so
        // kept-alive idle clients cannot keep the others waiting.
        let keep_alive = slots.available_permits() >= max_connections / 2;
        let local = stream.local_addr().unwrap_or(peer);
        let app = app.clone();
        let tls = tls
            .as_ref()
            .map(|config| tokio_rustls::TlsAcceptor::from(config.load_full()));
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let ends = (peer, local, keep_alive);
            match tls {
                None => serve_connection(stream, ends, app, client_timeout, shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, ends, app, client_timeout, shutdown).await
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "admin TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "admin TLS handshake timed out"),
                    }
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connections.wait()).await;
    tracing::info!("admin web server stopped");
}

/// The default of [`AdminSettings::max_connections`]: 64, or a sixteenth of
/// the descriptor limit when that is less (at least 4).
pub fn max_connections() -> usize {
    crate::lookup::management_cap(MAX_CONNECTIONS)
}

/// One HTTP/1.1 connection: requests carry the peer address as [`ConnectInfo`]
/// and the address it reached as [`auth::LocalAddr`]; a request head larger than
/// [`MAX_HEADER_BYTES`] gets 431, one (or the next one on a kept-alive
/// connection) not sent within `client_timeout` closes the connection. Without
/// `keep_alive` the connection closes after its first answer.
async fn serve_connection<S>(
    stream: S,
    (peer, local, keep_alive): (SocketAddr, SocketAddr, bool),
    app: Router,
    client_timeout: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(auth::LocalAddr(local));
        app.clone().oneshot(request.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(client_timeout)
        .keep_alive(keep_alive)
        .max_header_size(MAX_HEADER_BYTES);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "admin connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Helpers for the `Router::oneshot` tests of the admin modules.
    use crate::config::Config;
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use axum::response::Response;

    use super::*;
    use crate::Balancer;
    use crate::config::{GroupConfig, HostAddress, HostConfig, ServiceConfig};
    use crate::scheduler::SchedulerKind;

    /// A balancer with service `svc` (listener on 127.0.0.1:0), enabled group `g`
    /// with hosts `a` and `b` on closed ports, and its admin router without users.
    pub(crate) async fn test_router() -> (Router, BalancerHandle, ()) {
        test_router_with(AdminSettings::default()).await
    }

    /// [`test_router`] with `settings` (let in without users all the same).
    pub(crate) async fn test_router_with(settings: AdminSettings) -> (Router, BalancerHandle, ()) {
        let host = |name: &str, port| HostConfig {
            name: name.into(),
            address: HostAddress {
                host: "127.0.0.1".into(),
                port,
            },
            weight: 1,
            options: Default::default(),
        };
        let config = Config {
            source: None,
            services: vec![ServiceConfig {
                name: "svc".into(),
                listeners: vec![
                    crate::config::parse_listen_addr("127.0.0.1:0")
                        .unwrap()
                        .into(),
                ],
                groups: vec![GroupConfig {
                    name: "g".into(),
                    scheduler: SchedulerKind::RoundRobin,
                    hosts: vec![host("a", 1), host("b", 2)].into(),
                    options: Default::default(),
                    check: None,
                    agent: None,
                }],
                enabled_group: "g".into(),
                connect_timeout: Duration::from_secs(1),
                options: Default::default(),
            }],
            admin: None,
            manager: Default::default(),
            logging: Default::default(),
            control: None,
            cluster: None,
            resolver: Default::default(),
            acme: None,
        };
        let handle = Balancer::start(config).await.unwrap();
        let settings = AdminSettings {
            open_without_users: true,
            ..settings
        };
        (router(handle.clone(), settings), handle, ())
    }

    /// Sends one request; a body starting with `json:` is sent as JSON, any other
    /// as a form.
    pub(crate) async fn request(
        app: &Router,
        method: &str,
        uri: &str,
        body: Option<&str>,
    ) -> Response {
        let mut builder = Request::builder().method(method).uri(uri);
        let body = match body {
            None => Body::empty(),
            Some(b) => match b.strip_prefix("json:") {
                Some(json) => {
                    builder = builder.header(header::CONTENT_TYPE, "application/json");
                    Body::from(json.to_string())
                }
                None => {
                    builder =
                        builder.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                    Body::from(b.to_string())
                }
            },
        };
        app.clone()
            .oneshot(builder.body(body).unwrap())
            .await
            .unwrap()
    }

    pub(crate) async fn body_text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
            .await
            .unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Sends one request and returns its status and body text.
    pub(crate) async fn send(
        app: &Router,
        method: &str,
        uri: &str,
        body: Option<&str>,
    ) -> (StatusCode, String) {
        let r = request(app, method, uri, body).await;
        (r.status(), body_text(r).await)
    }
}
