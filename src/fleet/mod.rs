//! Fleet mode: instances that share one running configuration through etcd.
//!
//! With `<cluster etcd=… prefix=… name=…/>` every instance keeps these keys under
//! the prefix:
//!
//! - `{prefix}/config`: the shared configuration as TOML text (services, users,
//!   managers). Written by `txlb fleet push` and by every admin change, always
//!   with a compare-and-swap on the revision running at the writer; watched by
//!   every instance, which applies it live like a SIGHUP reload. An instance
//!   that cannot apply a revision (a listener's port taken on its machine) keeps
//!   the one it runs and is out of step: it says so and refuses changes, which
//!   would undo the newer revision, until it catches up.
//! - `{prefix}/instances/{name}`: JSON about each running instance, attached
//!   to its lease: it disappears a few seconds after the instance does.
//! - `{prefix}/status/{name}`: JSON of what the instance sees of each host (up,
//!   bad with the reason, admin-down), under the same lease.
//! - `{prefix}/acme/…`: the certificates from ACME, their account, the locks
//!   under which one instance orders and the challenges it publishes (see
//!   `acme.rs`).
//!
//! What stays each instance's own, from its file: `<cluster>`, `<logging>`,
//! `<control>` and the admin web and SSH listeners (they name this machine's
//! addresses and paths). An admin-down flag is also the instance's own.
//!
//! Three tasks talk to etcd, all on the control plane (the data path never
//! waits for them): the challenges task (`acme::follow_challenges`), the
//! config task, the one path between etcd and the
//! [`Controller`](crate::control::Controller) (it applies what the watch brings
//! and writes every change, in order), and the presence task (lease,
//! registration, status, and the fleet view the admin pages show). When etcd is
//! away the instance keeps serving its last configuration, refuses changes, and
//! retries with backoff; each configuration that arrives is also cached on disk
//! beside the configuration file (`FILE.fleet-cache`), so an instance that
//! starts while etcd is down serves the fleet's last configuration it knew.

mod acme;
mod etcd;
mod view;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::writeback::same_config;
use crate::config::{AdminConfig, ClusterConfig, Config, ConfigError, LoggingConfig};
use crate::control::{Command, ControlError, Controller};
use crate::events::Event;
use crate::state::HostHealth;
use etcd::{Client, EtcdError, Kv, Swap, Watch, WatchEvent};
pub(crate) use view::{FleetHostDown, FleetInstance, FleetSighting, FleetView};

/// How long an instance's registration outlives it (etcd lease TTL).
const LEASE_TTL: Duration = Duration::from_secs(5);
/// Period of the presence task: lease renewal, status, fleet view.
const PRESENCE_INTERVAL: Duration = Duration::from_secs(1);
/// First wait before reconnecting to etcd; doubled after each failure.
const RETRY_MIN: Duration = Duration::from_millis(200);
/// Longest wait between reconnection attempts.
const RETRY_MAX: Duration = Duration::from_secs(3);
/// Period of the config task's check of the configuration key besides its
/// watch: a watch on a connection that died silently (a network partition
/// rather than a closed socket) would otherwise miss changes for good.
const RESYNC_INTERVAL: Duration = Duration::from_secs(10);
/// Admin changes waiting for the config task.
const CHANGE_QUEUE: usize = 64;

/// Why `txlb fleet push` failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The file does not load.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The file has no `<cluster>` element, so there is no etcd to push to.
    #[error("{}: no <cluster> element ([cluster] in TOML): nothing says which etcd to use", .0.display())]
    NoCluster(PathBuf),
    /// etcd refused the write or cannot be reached.
    #[error("{0}")]
    Etcd(String),
    /// The configuration does not survive being written as TOML (a bug).
    #[error("{0}")]
    Unrepresentable(String),
}

/// The key holding the shared configuration.
fn config_key(prefix: &str) -> String {
    format!("{prefix}/config")
}

fn instances_prefix(prefix: &str) -> String {
    format!("{prefix}/instances/")
}

fn status_prefix(prefix: &str) -> String {
    format!("{prefix}/status/")
}

/// The part of `config` the fleet shares: everything but what names this
/// machine (cluster, logging, control socket, admin listeners).
pub(crate) fn shared_part(config: &Config) -> Config {
    let mut shared = config.clone();
    shared.source = None;
    shared.cluster = None;
    shared.logging = LoggingConfig::default();
    shared.control = None;
    shared.admin = shared
        .admin
        .take()
        .map(|a| a.users)
        .filter(|users| !users.is_empty())
        .map(|users| AdminConfig {
            web: None,
            ssh: None,
            users,
        });
    shared
}

/// The fleet's `shared` configuration with this instance's own parts from
/// `local`.
pub(crate) fn with_local(shared: Config, local: &Config) -> Config {
    let mut config = shared;
    config.source = local.source.clone();
    config.cluster = local.cluster.clone();
    config.logging = local.logging.clone();
    config.control = local.control.clone();
    let (web, ssh) = local
        .admin
        .as_ref()
        .map_or((None, None), |a| (a.web.clone(), a.ssh.clone()));
    let users = config.admin.take().map(|a| a.users).unwrap_or_default();
    config.admin = (web.is_some() || ssh.is_some() || !users.is_empty()).then_some(AdminConfig {
        web,
        ssh,
        users,
    });
    config
}

/// The shared configuration as the text stored in etcd, checked to load back.
fn shared_text(shared: &Config) -> Result<String, String> {
    let text = format!(
        "# txlb fleet configuration: services, users and managers shared by every instance.\n{}",
        shared.to_toml()
    );
    match Config::from_toml_str(&text) {
        Ok(back) if same_config(&back, shared) => Ok(text),
        _ => Err("the configuration does not survive being written as TOML".into()),
    }
}

/// Where the last configuration from etcd is kept: beside the configuration
/// file, `FILE.fleet-cache` (TOML).
fn cache_path(local: &Config) -> Option<PathBuf> {
    let source = local.source.as_ref()?;
    let mut name = source.file_name()?.to_os_string();
    name.push(".fleet-cache");
    Some(source.with_file_name(name))
}

/// Writes the cache atomically: a temporary file, synced, renamed over it.
async fn write_cache(path: Option<&Path>, text: &str) {
    let Some(path) = path else { return };
    let (path, text) = (path.to_path_buf(), text.to_string());
    let written = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path).map(|()| path)
    })
    .await;
    match written {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(%error, "cannot write the fleet configuration cache"),
        Err(_) => tracing::warn!("cannot write the fleet configuration cache"),
    }
}

/// The shared configuration in `text` (from etcd or the cache).
fn parse_shared(text: &[u8]) -> Result<Config, String> {
    let text = std::str::from_utf8(text).map_err(|_| "not UTF-8 text".to_string())?;
    Config::from_toml_str(text).map_err(|e| e.to_string())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `txlb fleet push`: writes the shared part of the configuration file `path`
/// to the etcd its `<cluster>` names, replacing what is there; every running
/// instance of the fleet applies it. Returns the new revision.
pub async fn fleet_push(path: &Path) -> Result<i64, FleetError> {
    let config = Config::from_path(path)?;
    let cluster = config
        .cluster
        .clone()
        .ok_or_else(|| FleetError::NoCluster(path.to_path_buf()))?;
    let text = shared_text(&shared_part(&config)).map_err(FleetError::Unrepresentable)?;
    let client = Client::new(&cluster.endpoints);
    client
        .put(&config_key(&cluster.prefix), text.as_bytes(), None)
        .await
        .map_err(|e| FleetError::Etcd(e.to_string()))
}

/// What the balancer starts with in fleet mode.
pub(crate) struct Boot {
    /// The configuration to start: the fleet's (from etcd, else the cache),
    /// else the file's, with this instance's own parts from the file.
    pub(crate) config: Config,
    cluster: ClusterConfig,
    client: Arc<Client>,
    /// Where the configuration started with stands against etcd's.
    step: Step,
    cache: Option<PathBuf>,
}

/// Finds the configuration to start with: etcd's, else the cached one, else
/// the file's. Never fails: an instance serves whatever it has.
pub(crate) async fn boot(local: Config, cluster: ClusterConfig) -> Boot {
    let client = Arc::new(Client::new(&cluster.endpoints));
    let cache = cache_path(&local);
    let key = config_key(&cluster.prefix);
    let mut boot = Boot {
        config: local.clone(),
        cluster,
        client,
        step: Step::default(),
        cache,
    };
    match boot.client.get(&key).await {
        Ok((Some(kv), _)) => match parse_shared(&kv.value) {
            Ok(shared) => {
                tracing::info!(
                    key,
                    revision = kv.mod_revision,
                    "fleet: configuration from etcd"
                );
                boot.config = with_local(shared, &local);
                boot.step = Step::at(kv.mod_revision);
                write_cache(boot.cache.as_deref(), &String::from_utf8_lossy(&kv.value)).await;
            }
            Err(error) => {
                tracing::error!(key, %error, "fleet: the configuration in etcd does not load; serving the file's");
                boot.step.latest = kv.mod_revision;
                boot.step.reason =
                    Some(format!("the configuration in etcd does not load: {error}"));
            }
        },
        Ok((None, _)) => tracing::warn!(
            key,
            "fleet: no configuration in etcd yet; serving the file's (`txlb fleet push` seeds it)"
        ),
        Err(error) => {
            let cached = match &boot.cache {
                Some(path) => std::fs::read(path)
                    .ok()
                    .map(|text| (path, parse_shared(&text))),
                None => None,
            };
            match cached {
                Some((path, Ok(shared))) => {
                    tracing::warn!(%error, cache = %path.display(), "fleet: etcd unreachable; serving the last configuration from etcd (cached); retrying");
                    boot.config = with_local(shared, &local);
                }
                Some((path, Err(reason))) => {
                    tracing::warn!(%error, cache = %path.display(), %reason, "fleet: etcd unreachable and the cache does not load; serving the file's; retrying")
                }
                None => {
                    tracing::warn!(%error, "fleet: etcd unreachable and nothing cached; serving the file's; retrying")
                }
            }
        }
    }
    boot
}

/// One admin change waiting for the config task.
struct Change {
    command: Command,
    reply: oneshot::Sender<Result<(), ControlError>>,
}

/// What the controller and the admin plane hold of fleet mode: the way in for
/// changes, and what the fleet looks like.
pub(crate) struct FleetLink {
    requests: mpsc::Sender<Change>,
    /// Where this instance stands: written by the config task, read by the
    /// presence task and admin pages; the lock is held only to copy.
    step: Mutex<Step>,
    /// Written by the presence task every round, read by admin pages; the lock
    /// is held only to copy.
    view: Mutex<FleetView>,
}

impl FleetLink {
    /// Sends a change through etcd and waits for the outcome.
    pub(crate) async fn change(&self, command: Command) -> Result<(), ControlError> {
        let (reply, outcome) = oneshot::channel();
        self.requests
            .send(Change { command, reply })
            .await
            .map_err(|_| ControlError::ShuttingDown)?;
        outcome.await.unwrap_or(Err(ControlError::ShuttingDown))
    }

    /// The fleet as last seen.
    pub(crate) fn view(&self) -> FleetView {
        let mut view = self
            .view
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let step = self.step();
        view.revision = step.applied;
        view.latest_revision = step.latest;
        view.in_step = step.reason.is_none();
        view.out_of_step = step.reason;
        view
    }

    fn step(&self) -> Step {
        self.step.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update_view(&self, edit: impl FnOnce(&mut FleetView)) {
        edit(&mut self.view.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// Where an instance stands against the fleet's configuration in etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Step {
    /// Revision of the configuration running here (0: none from etcd). Every
    /// change written from here is a compare-and-swap on it, so a change based
    /// on an older configuration can never replace a newer one.
    applied: i64,
    /// Newest revision of the configuration key seen.
    latest: i64,
    /// Why `latest` does not run here, while it does not.
    reason: Option<String>,
}

impl Step {
    /// In step at `revision`.
    fn at(revision: i64) -> Step {
        Step {
            applied: revision,
            latest: revision,
            reason: None,
        }
    }
}

/// What an instance publishes of one host in `{prefix}/status/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct HostStatus {
    service: String,
    group: String,
    host: String,
    /// `up`, `bad` or `admin-down`.
    health: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// The fleet's store of certificates from ACME (etcd), for the ordering
/// task (`control::acme::run`).
pub(crate) fn acme_store(boot: &Boot) -> Option<Arc<dyn crate::control::acme::Store>> {
    Some(Arc::new(acme::EtcdStore::new(
        boot.client.clone(),
        &boot.cluster.prefix,
        &boot.cluster.name,
    )))
}

/// Starts fleet mode on a started controller; the returned link is where every
/// configuration change goes from now on (through etcd).
pub(crate) fn start(controller: &Arc<Controller>, boot: Boot) -> Option<Arc<FleetLink>> {
    let (requests, receiver) = mpsc::channel(CHANGE_QUEUE);
    let link = Arc::new(FleetLink {
        requests,
        step: Mutex::new(boot.step.clone()),
        view: Mutex::new(FleetView {
            enabled: true,
            instance: boot.cluster.name.clone(),
            prefix: boot.cluster.prefix.clone(),
            etcd: boot.cluster.endpoints.clone(),
            ..FleetView::default()
        }),
    });
    if let Some(reason) = &boot.step.reason {
        controller.data.events.emit(Event::FleetOutOfStep {
            applied: boot.step.applied,
            latest: boot.step.latest,
            reason: reason.clone(),
        });
    }
    let stop = controller.stop_accepting.clone();
    tokio::spawn(acme::follow_challenges(
        boot.client.clone(),
        boot.cluster.prefix.clone(),
        controller.acme.challenges.clone(),
        stop.clone(),
    ));
    let config_task = ConfigTask {
        controller: controller.clone(),
        client: boot.client.clone(),
        key: config_key(&boot.cluster.prefix),
        cache: boot.cache,
        link: link.clone(),
        step: boot.step,
    };
    tokio::spawn(config_task.run(receiver, stop.clone()));
    let presence = Presence {
        controller: controller.clone(),
        client: boot.client,
        cluster: boot.cluster,
        link: link.clone(),
        lease: None,
        published: None,
        started: unix_now(),
    };
    tokio::spawn(presence.run(stop));
    Some(link)
}

/// The one path between etcd's configuration key and the controller.
struct ConfigTask {
    controller: Arc<Controller>,
    client: Arc<Client>,
    key: String,
    cache: Option<PathBuf>,
    link: Arc<FleetLink>,
    /// Where this instance stands; copied to `link` on every change.
    step: Step,
}

/// The next event of the watch, or never when there is none.
async fn next_event(watch: &mut Option<Watch>) -> Result<Option<WatchEvent>, EtcdError> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

impl ConfigTask {
    async fn run(mut self, mut requests: mpsc::Receiver<Change>, stop: CancellationToken) {
        let mut watch: Option<Watch> = None;
        let mut backoff = RETRY_MIN;
        let mut retry_at = Instant::now();
        // Set while etcd is away, so the transition is logged once each way.
        let mut away: Option<String> = None;
        let mut resync = tokio::time::interval(RESYNC_INTERVAL);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if watch.is_none() && Instant::now() >= retry_at {
                match self.sync().await {
                    Ok(w) => {
                        watch = Some(w);
                        backoff = RETRY_MIN;
                        if away.take().is_some() {
                            tracing::info!(key = %self.key, revision = self.step.applied, "fleet: etcd reachable again; watching the configuration");
                        }
                    }
                    Err(error) => {
                        if away.is_none() {
                            tracing::warn!(%error, "fleet: etcd unreachable; serving the last configuration, changes refused; retrying");
                        }
                        away = Some(error.to_string());
                        retry_at = Instant::now() + backoff;
                        backoff = (backoff * 2).min(RETRY_MAX);
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(change) = requests.recv() => {
                    let outcome = self.change(change.command).await;
                    let _ = change.reply.send(outcome);
                }
                event = next_event(&mut watch) => match event {
                    Ok(Some(WatchEvent::Put(kv))) => self.arrived(kv).await,
                    Ok(Some(WatchEvent::Delete(revision))) => {
                        tracing::warn!(key = %self.key, revision, "fleet: the configuration was deleted from etcd; keeping the running one");
                        self.in_step(0);
                    }
                    Ok(None) | Err(_) => {
                        let error = match event {
                            Err(e) => e.to_string(),
                            _ => "etcd closed the watch".to_string(),
                        };
                        tracing::warn!(%error, "fleet: lost the watch on etcd; serving the last configuration; retrying");
                        away = Some(error);
                        watch = None;
                        retry_at = Instant::now() + backoff;
                    }
                },
                _ = tokio::time::sleep_until(retry_at), if watch.is_none() => {}
                _ = resync.tick(), if watch.is_some() => match self.client.get(&self.key).await {
                    Ok((Some(kv), _)) => self.arrived(kv).await,
                    Ok((None, _)) => {}
                    Err(error) => {
                        tracing::warn!(%error, "fleet: etcd unreachable; serving the last configuration, changes refused; retrying");
                        away = Some(error.to_string());
                        watch = None;
                        retry_at = Instant::now() + backoff;
                    }
                },
            }
        }
    }

    fn publish(&self) {
        *self.link.step.lock().unwrap_or_else(|p| p.into_inner()) = self.step.clone();
    }

    /// Revision `revision` runs here.
    fn in_step(&mut self, revision: i64) {
        let was_out = self.step.reason.is_some();
        self.step = Step::at(revision);
        self.publish();
        if was_out {
            self.controller
                .data
                .events
                .emit(Event::FleetInStep { revision });
        }
    }

    /// Revision `latest` cannot run here: the one applied stays, and changes
    /// are refused until it can. Told once per revision, not on every retry.
    fn out_of_step(&mut self, latest: i64, reason: String) {
        let news = self.step.reason.is_none() || self.step.latest != latest;
        self.step.latest = latest;
        self.step.reason = Some(reason.clone());
        self.publish();
        if news {
            self.controller.data.events.emit(Event::FleetOutOfStep {
                applied: self.step.applied,
                latest,
                reason,
            });
        } else {
            tracing::debug!(latest, %reason, "fleet: still out of step");
        }
    }

    /// Reads the configuration key (applying it when it is newer than what runs
    /// here) and watches it from there on.
    async fn sync(&mut self) -> Result<Watch, EtcdError> {
        let (kv, revision) = self.client.get(&self.key).await?;
        match kv {
            Some(kv) => self.arrived(kv).await,
            None if self.step != Step::default() => self.in_step(0),
            None => {}
        }
        self.client.watch(&self.key, revision + 1).await
    }

    /// A configuration from etcd: applied here like a reload, unless it is the
    /// one running (this instance's own write comes back through the watch).
    /// One that cannot run here (it does not load, or a listener's port is
    /// taken on this machine) leaves the instance out of step; the periodic
    /// check tries it again.
    async fn arrived(&mut self, kv: Kv) {
        let revision = kv.mod_revision;
        if revision <= self.step.applied {
            return;
        }
        let shared = match parse_shared(&kv.value) {
            Ok(shared) => shared,
            Err(error) => {
                self.out_of_step(
                    revision,
                    format!("the configuration in etcd does not load: {error}"),
                );
                return;
            }
        };
        let next = with_local(shared, &self.controller.running());
        match self
            .controller
            .apply(Command::Replace(Box::new(next)))
            .await
        {
            Ok(()) => {
                tracing::info!(revision, "fleet: configuration applied");
                self.in_step(revision);
                write_cache(self.cache.as_deref(), &String::from_utf8_lossy(&kv.value)).await;
            }
            Err(error) => self.out_of_step(revision, format!("cannot apply it here: {error}")),
        }
    }

    /// An admin change: written to etcd if it changes what the fleet shares
    /// (compare-and-swap on the revision running here), then applied here.
    async fn change(&mut self, command: Command) -> Result<(), ControlError> {
        let running = self.controller.running();
        let command = match command {
            // A reload takes this instance's own settings from its file; what
            // the fleet shares comes from etcd.
            Command::Replace(file) => {
                if !same_config(&shared_part(&file), &shared_part(&running)) {
                    tracing::info!(
                        "fleet: services, users and managers come from etcd, not from the file (`txlb fleet push` publishes the file's)"
                    );
                }
                Command::Replace(Box::new(with_local(shared_part(&running), &file)))
            }
            other => other,
        };
        let next = self.controller.preview(&command)?;
        let shared = shared_part(&next);
        if same_config(&shared, &shared_part(&running)) {
            return self.controller.apply(command).await;
        }
        // Out of step, this instance's configuration is older than the fleet's:
        // a change made from it would undo the newer one.
        if let Some(reason) = &self.step.reason {
            return Err(ControlError::FleetOutOfStep {
                applied: self.step.applied,
                latest: self.step.latest,
                reason: reason.clone(),
            });
        }
        let text = shared_text(&shared).map_err(ControlError::Invalid)?;
        let expected = self.step.applied;
        match self
            .client
            .put_if(&self.key, text.as_bytes(), expected)
            .await
        {
            Err(error) => Err(ControlError::FleetUnavailable(error.to_string())),
            Ok(Swap::Conflict(current)) => {
                tracing::warn!(
                    expected,
                    current,
                    "fleet: change refused: the configuration was changed elsewhere"
                );
                Err(ControlError::FleetConflict { expected, current })
            }
            Ok(Swap::Done(revision)) => match self.controller.apply(command).await {
                Ok(()) => {
                    self.in_step(revision);
                    write_cache(self.cache.as_deref(), &text).await;
                    Ok(())
                }
                Err(error) => {
                    self.out_of_step(revision, format!("cannot apply it here: {error}"));
                    Err(ControlError::Invalid(format!(
                        "the change is saved in the fleet (revision {revision}) but this instance cannot apply it: {error}"
                    )))
                }
            },
        }
    }
}

/// Registration, status and the fleet view, once per [`PRESENCE_INTERVAL`].
struct Presence {
    controller: Arc<Controller>,
    client: Arc<Client>,
    cluster: ClusterConfig,
    link: Arc<FleetLink>,
    lease: Option<i64>,
    /// The registration and status last written under the current lease.
    published: Option<(String, String)>,
    started: u64,
}

impl Presence {
    async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(PRESENCE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let round = self.round().await;
            self.link.update_view(|view| match round {
                Ok((instances, hosts_down)) => {
                    view.reachable = true;
                    view.error = None;
                    view.instances = instances;
                    view.hosts_down = hosts_down;
                }
                Err(error) => {
                    view.reachable = false;
                    view.error = Some(error.to_string());
                }
            });
        }
        // Leave the fleet at once rather than when the lease runs out.
        if let Some(lease) = self.lease {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.client.revoke(lease)).await;
        }
    }

    /// This instance's hosts as published.
    fn hosts(&self) -> Vec<HostStatus> {
        let snapshot = self.controller.data.snapshots.load();
        let mut hosts = Vec::new();
        for service in snapshot.services() {
            for group in &service.groups {
                for host in &group.hosts {
                    let view = host.stats.view();
                    hosts.push(HostStatus {
                        service: service.name.to_string(),
                        group: group.name.to_string(),
                        host: host.name.to_string(),
                        health: view.health.name().to_string(),
                        reason: view.bad.map(|b| b.reason),
                    });
                }
            }
        }
        hosts
    }

    async fn round(&mut self) -> Result<(Vec<FleetInstance>, Vec<FleetHostDown>), EtcdError> {
        let prefix = &self.cluster.prefix;
        let lease = match self.lease {
            Some(lease) if self.client.keep_alive(lease).await? => lease,
            _ => {
                let lease = self.client.grant(LEASE_TTL).await?;
                self.lease = Some(lease);
                self.published = None;
                lease
            }
        };
        let step = self.link.step();
        let me = FleetInstance {
            name: self.cluster.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started: self.started,
            revision: step.applied,
            latest_revision: step.latest,
            in_step: step.reason.is_none(),
            out_of_step: step.reason,
        };
        let instance = serde_json::to_string(&me).unwrap_or_default();
        let status = serde_json::to_string(&self.hosts()).unwrap_or_default();
        let now = (instance, status);
        if self.published.as_ref() != Some(&now) {
            let name = &self.cluster.name;
            let key = format!("{}{name}", instances_prefix(prefix));
            self.client.put(&key, now.0.as_bytes(), Some(lease)).await?;
            let key = format!("{}{name}", status_prefix(prefix));
            self.client.put(&key, now.1.as_bytes(), Some(lease)).await?;
            self.published = Some(now);
        }
        let instances: Vec<FleetInstance> = self
            .client
            .get_prefix(&instances_prefix(prefix))
            .await?
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect();
        let status_prefix = status_prefix(prefix);
        let statuses: Vec<(String, Vec<HostStatus>)> = self
            .client
            .get_prefix(&status_prefix)
            .await?
            .iter()
            .filter_map(|kv| {
                let name = kv.key.strip_prefix(&status_prefix)?.to_string();
                Some((name, serde_json::from_slice(&kv.value).ok()?))
            })
            .collect();
        Ok((instances, hosts_down(&statuses)))
    }
}

/// Hosts that at least one instance sees bad or admin-down, with who sees what.
fn hosts_down(statuses: &[(String, Vec<HostStatus>)]) -> Vec<FleetHostDown> {
    let mut by_host: BTreeMap<(String, String, String), FleetHostDown> = BTreeMap::new();
    for (instance, hosts) in statuses {
        for h in hosts {
            let entry = by_host
                .entry((h.service.clone(), h.group.clone(), h.host.clone()))
                .or_insert_with(|| FleetHostDown {
                    service: h.service.clone(),
                    group: h.group.clone(),
                    host: h.host.clone(),
                    down: Vec::new(),
                    up: Vec::new(),
                });
            let health = match HostHealth::from_name(&h.health) {
                Some(health @ (HostHealth::Bad | HostHealth::AdminDown)) => health,
                _ => {
                    entry.up.push(instance.clone());
                    continue;
                }
            };
            entry.down.push(FleetSighting {
                instance: instance.clone(),
                health,
                reason: h.reason.clone(),
            });
        }
    }
    by_host
        .into_values()
        .filter(|h| !h.down.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"<config>
  <service name="web">
    <listen ip="127.0.0.1:0"/>
    <group name="g" enable="true"><host name="h1" ip="127.0.0.1:9"/></group>
  </service>
  <admin>
    <web listen="127.0.0.1:0"/>
    <user name="admin" password="..xpoEyRReGzk" access="full"/>
  </admin>
  <logging file="/var/log/txlb.log"/>
  <cluster etcd="http://127.0.0.1:2379" prefix="/txlb/test" name="lb1"/>
</config>"#;

    #[test]
    fn shared_part_leaves_the_instance_its_own() {
        let local = Config::from_xml_str(FILE).unwrap();
        let shared = shared_part(&local);
        assert_eq!(shared.cluster, None);
        assert_eq!(shared.logging, LoggingConfig::default());
        let admin = shared.admin.as_ref().unwrap();
        assert!(admin.web.is_none());
        assert_eq!(admin.users.len(), 1);
        // Through etcd's text and back, with the local parts put back: the same.
        let text = shared_text(&shared).unwrap();
        let back = parse_shared(text.as_bytes()).unwrap();
        assert!(same_config(&with_local(back, &local), &local));
    }

    #[test]
    fn fleet_changes_keep_local_parts() {
        let local = Config::from_xml_str(FILE).unwrap();
        let mut other = local.clone();
        other.services[0].groups[0].hosts.edit(0).weight = 7;
        other.cluster = None;
        other.admin.as_mut().unwrap().web = None;
        let merged = with_local(shared_part(&other), &local);
        assert_eq!(merged.services[0].groups[0].hosts[0].weight, 7);
        assert_eq!(merged.cluster, local.cluster);
        assert_eq!(merged.admin.unwrap().web, local.admin.unwrap().web);
    }

    #[test]
    fn hosts_down_lists_who_sees_what() {
        let host = |name: &str, health: &str| HostStatus {
            service: "web".into(),
            group: "g".into(),
            host: name.into(),
            health: health.into(),
            reason: (health == "bad").then(|| "refused".to_string()),
        };
        let statuses = vec![
            ("lb1".to_string(), vec![host("h1", "up"), host("h2", "bad")]),
            ("lb2".to_string(), vec![host("h1", "up"), host("h2", "up")]),
        ];
        let down = hosts_down(&statuses);
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].host, "h2");
        assert_eq!(down[0].down[0].instance, "lb1");
        assert_eq!(down[0].up, ["lb2"]);
    }

    #[test]
    fn instances_that_do_not_say_are_in_step() {
        let old = r#"{"name":"lb1","version":"0.1.0","started":1,"revision":7}"#;
        let instance: FleetInstance = serde_json::from_str(old).unwrap();
        assert!(instance.in_step);
        assert_eq!(instance.out_of_step, None);
        let stuck = FleetInstance {
            latest_revision: 9,
            in_step: false,
            out_of_step: Some("cannot apply it here".into()),
            ..instance
        };
        let back: FleetInstance =
            serde_json::from_str(&serde_json::to_string(&stuck).unwrap()).unwrap();
        assert_eq!(back, stuck);
    }

    #[test]
    fn cache_sits_beside_the_file() {
        let mut c = Config::from_xml_str(FILE).unwrap();
        assert_eq!(cache_path(&c), None);
        c.source = Some(PathBuf::from("/etc/txlb/config.xml"));
        assert_eq!(
            cache_path(&c),
            Some(PathBuf::from("/etc/txlb/config.xml.fleet-cache"))
        );
    }
}
