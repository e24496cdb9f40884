//! Per-host counters and health: atomics written by the data path and the managers,
//! read by schedulers and the admin plane.

use std::fmt;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed,
};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use serde::Serialize;

/// Why and since when a host is bad.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadInfo {
    /// When the host was marked bad.
    #[serde(with = "unix_seconds")]
    pub since: SystemTime,
    /// What failed, e.g. `connect: Connection refused (os error 111)`.
    pub reason: String,
}

/// A host's health as shown to people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostHealth {
    /// In rotation.
    Up,
    /// Failed; out of rotation until a manager sees it answer.
    Bad,
    /// Taken out of rotation by an administrator.
    AdminDown,
}

impl HostHealth {
    /// Every state, in the order pages and metrics list them.
    pub const ALL: [HostHealth; 3] = [HostHealth::Up, HostHealth::Bad, HostHealth::AdminDown];

    /// The state's one text (`up`, `bad`, `admin-down`): the same as its JSON
    /// name, in every table, page, metric label and fleet status.
    pub const fn name(self) -> &'static str {
        match self {
            HostHealth::Up => "up",
            HostHealth::Bad => "bad",
            HostHealth::AdminDown => "admin-down",
        }
    }

    /// The state named `text` ([`HostHealth::name`]).
    pub fn from_name(text: &str) -> Option<HostHealth> {
        HostHealth::ALL.into_iter().find(|h| h.name() == text)
    }
}

/// Counters and health of one host.
///
/// Every field is written without locks: counters by connection tasks, `bad` and
/// `bad_info` by whoever sees the host fail or recover (connections, managers),
/// `admin_down` by the controller, `resolved` by the managers. Readers (schedulers,
/// admin plane) tolerate momentarily inconsistent combinations; each value is exact.
///
/// Layout: what schedulers read on every pick (`open`, `bad`, `admin_down`,
/// `last_closed`, `up_since`) shares the struct's first cache line with fields
/// rarely written; the byte and latency counters the copy loop writes live
/// further on, so a pick costs one cache line per host it looks at.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub struct HostStats {
    open: AtomicU64,
    /// Nanoseconds on [`clock_nanos`]' clock when the last connection closed;
    /// 0 = never. leastc breaks ties with it.
    last_closed: AtomicU64,
    /// [`clock_nanos`] when the host last came back into rotation: created, marked
    /// up after bad, or admin-up. Written by whoever makes that transition, read
    /// by schedulers that ramp a returning host's weight (`slowStart`).
    up_since: AtomicU64,
    /// Set with `bad`; an `ArcSwapOption` so readers never block the writer.
    bad_info: ArcSwapOption<BadInfo>,
    /// The address connections go to; `None` until the name resolves.
    resolved: ArcSwapOption<SocketAddr>,
    /// The ranking this host takes part in (its group's leastc tree), told of
    /// every change that moves the host in it. Set when a snapshot's scheduler is
    /// built; an `ArcSwapOption` so the data path reads it without a lock.
    observer: ArcSwapOption<Observer>,
    bad: AtomicBool,
    admin_down: AtomicBool,
    /// What the group's agent last said of the host's state ([`AgentState`]
    /// as a byte), written by the host's agent task, read by every pick
    /// ([`HostStats::is_available`]): in the first cache line, in what was
    /// padding.
    agent_state: AtomicU8,
    /// Ejected by the passive checks (`failLimit`) until its return timer
    /// ends it: written by the connection that ejects and by the timer, read
    /// by every pick ([`HostStats::is_available`]), in what was padding.
    ejected: AtomicBool,
    /// The agent's `maxconn:N` (0: none, the host's own `maxconn` holds);
    /// read by every pick ([`HostStats::has_room`]).
    agent_maxconn: AtomicU32,
    total: AtomicU64,
    failures: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Consecutive failures on clients' connections for the passive checks
    /// (`failLimit`), cleared by the host's first byte to a client: read once
    /// per connection by the copy loop, beside `bytes_out` it writes anyway.
    passive_fails: AtomicU32,
    /// Times a scheduler picked this host (successful or not).
    picks: AtomicU64,
    /// Connect latency of successful connects, per [`CONNECT_BUCKETS`] bucket
    /// (the last one counts everything slower).
    connect_buckets: [AtomicU64; CONNECT_BUCKETS.len() + 1],
    /// Sum of successful connect latencies, in microseconds.
    connect_micros: AtomicU64,
    /// The group's active check, written only by the host's check task (one
    /// per host), read by the admin plane: consecutive passes and failures,
    /// the last probe's latency (µs + 1; 0 = never probed), its failure
    /// reason (`None`: it passed), and failed probes since start.
    check_passes: AtomicU32,
    check_fails: AtomicU32,
    check_micros: AtomicU64,
    check_failures: AtomicU64,
    check_last: ArcSwapOption<String>,
    /// What the agent takes off the host's weight, in percent (0 until an
    /// agent says a weight; 100 drains): stored as a cut so a fresh host's
    /// zero means its whole weight. Read by the weighted schedulers only
    /// while some host anywhere is scaled ([`scaled_hosts`]).
    agent_cut: AtomicU32,
    /// What the agent last said, for people (`None`: never asked).
    agent_view: ArcSwapOption<AgentView>,
    /// Passive checks (`failLimit`), written by connections: ejections in a
    /// row (each doubles the next one's time), when the last ejection ended
    /// ([`clock_nanos`], 0: never) and ejections since start.
    eject_level: AtomicU32,
    returned_at: AtomicU64,
    ejections: AtomicU64,
    /// The running ejection, for people; set before `ejected`.
    ejection: ArcSwapOption<Ejection>,
    /// When a drain's deadline closes the host's connections (`None`: not
    /// draining with one): written by the drain's timer task, read by an
    /// upgrade, which carries it over.
    drain_deadline: ArcSwapOption<SystemTime>,
}

/// A host taken out of rotation by the passive checks (`failLimit`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ejection {
    /// When it was ejected.
    #[serde(with = "unix_seconds")]
    pub since: SystemTime,
    /// How long the ejection lasts, in seconds.
    pub seconds: f64,
    /// The consecutive failures that ejected it.
    pub failures: u32,
    /// The last of them.
    pub last_failure: String,
}

// `seconds` is never NaN.
impl Eq for Ejection {}

impl Ejection {
    /// The host's reason while it is ejected, the same on every surface:
    /// `ejected for 20 s after 3 failures (connect to …: refused)`.
    pub fn reason(&self) -> String {
        format!(
            "ejected for {} s after {} failures ({})",
            self.seconds, self.failures, self.last_failure
        )
    }
}

/// When a host's ejections stop doubling: once it stayed in rotation, not
/// ejected again, this long after its last ejection ended (the longest an
/// ejection lasts), its next ejection lasts the group's `ejectTime` again.
pub const EJECT_DOUBLING_RESET: Duration = crate::config::MAX_EJECT_TIME;

/// A host's state as its group's agent (`<agent>`) says it, in the order
/// of how strongly it keeps the host out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
#[repr(u8)]
pub enum AgentState {
    /// No word against the host (`up`, `ready`, only a weight, or no agent).
    #[default]
    Up = 0,
    /// `drain` (or `0%`): open connections go on, no new ones.
    Drain = 1,
    /// `maint`: out of rotation, as admin-down.
    Maint = 2,
    /// `down`: the host is bad until the agent says otherwise.
    Down = 3,
}

impl AgentState {
    /// Every state, in the order metrics list them.
    pub const ALL: [AgentState; 4] = [
        AgentState::Up,
        AgentState::Drain,
        AgentState::Maint,
        AgentState::Down,
    ];

    fn from_u8(b: u8) -> AgentState {
        match b {
            1 => AgentState::Drain,
            2 => AgentState::Maint,
            3 => AgentState::Down,
            _ => AgentState::Up,
        }
    }

    /// The word (`up`, `drain`, `maint`, `down`).
    pub fn name(self) -> &'static str {
        match self {
            AgentState::Up => "up",
            AgentState::Drain => "drain",
            AgentState::Maint => "maint",
            AgentState::Down => "down",
        }
    }
}

/// What a host's agent last said, and whether it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentView {
    /// The state it gave (the last answer's, kept while it does not answer).
    pub state: AgentState,
    /// The weight in percent of the configured weight.
    pub weight_percent: u32,
    /// Its `maxconn:N` (0: none).
    pub maxconn: u32,
    /// Its last line as it came (trimmed, at most 128 bytes, escaped).
    pub said: String,
    /// Why the last question got no answer; `None`: it answered.
    pub failure: Option<String>,
}

impl AgentView {
    /// What the agent says in a few words, the same on every surface:
    /// `up`, `drain 50%`, `up 75% maxconn:30`, with `, no answer` when the
    /// last question got none.
    pub fn summary(&self) -> String {
        let mut out = self.state.name().to_string();
        if self.weight_percent != 100 {
            out.push_str(&format!(" {}%", self.weight_percent));
        }
        if self.maxconn != 0 {
            out.push_str(&format!(" maxconn:{}", self.maxconn));
        }
        if self.failure.is_some() {
            out.push_str(", no answer");
        }
        out
    }
}

/// Hosts (in any group) whose agent weight is not 100%: while there are
/// none, weighted schedulers never read a host's agent weight.
static SCALED_HOSTS: AtomicUsize = AtomicUsize::new(0);

/// How many hosts (in any group) an agent gives a weight other than 100%.
#[inline]
pub fn scaled_hosts() -> usize {
    SCALED_HOSTS.load(Relaxed)
}

/// An order over a group's hosts kept current by their counters (the leastc
/// tournament tree): [`HostStats`] tells it whenever the host's availability or
/// open connections change. Declared here so host state needs no scheduler.
pub(crate) trait Ranking: Send + Sync + fmt::Debug {
    /// The host at `slot` (its place in the ranking) changed.
    fn host_changed(&self, slot: usize);
}

/// A host's link to its ranking. Weak because the ranking holds the hosts:
/// when the snapshot owning the ranking goes, the ranking and any host no other
/// snapshot or connection holds are freed, with no unhooking.
#[derive(Debug)]
struct Observer {
    ranking: Weak<dyn Ranking>,
    slot: usize,
}

/// [`clock_nanos`] of the latest moment any host came back into rotation, in any
/// group. Lets a scheduler with `slowStart` skip per-host ramp checks when nobody
/// came back recently (one load instead of one per host).
static LAST_CAME_UP: AtomicU64 = AtomicU64::new(0);

/// Nanoseconds on a process-local monotonic clock (never 0). Only differences are
/// meaningful.
#[inline]
pub fn clock_nanos() -> u64 {
    (epoch().elapsed().as_nanos() as u64).max(1)
}

/// [`clock_nanos`] of the latest moment any host (in any group) came back into
/// rotation; 0 = never.
#[inline]
pub fn last_came_up() -> u64 {
    LAST_CAME_UP.load(Relaxed)
}

/// Upper bounds (seconds) of the connect latency histogram's buckets.
pub const CONNECT_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// Monotonic origin for `last_closed` and connection activity times.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Where [`clock_ms`] starts (ms, about 35 years): far enough from 0 that
/// a connection or session moved in an upgrade, idle or open for longer
/// than the new process has run, keeps its times rather than having them
/// saturate at 0.
const CLOCK_START_MS: u64 = 1 << 40;

/// Milliseconds on a process-local monotonic clock, from [`CLOCK_START_MS`];
/// only differences mean anything.
#[cfg(not(target_os = "linux"))]
#[inline]
pub fn clock_ms() -> u64 {
    CLOCK_START_MS + epoch().elapsed().as_millis() as u64
}

/// Milliseconds on a process-local monotonic clock, from [`CLOCK_START_MS`];
/// only differences mean anything. Read per chunk copied (activity stamps), so it is the kernel's
/// tick-granular clock (a few ms, read in the vDSO without the TSC): a tenth
/// of `Instant::elapsed`'s cost, and idle timeouts need no finer. Not inlined:
/// inside the copy loop it made the loop's code larger than the call saves
/// (callgrind: 270 more instructions per request).
#[cfg(target_os = "linux")]
#[inline(never)]
pub fn clock_ms() -> u64 {
    fn coarse_ms() -> u64 {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC_COARSE
        // exists on every Linux since 2.6.32.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
        now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000
    }
    static BASE: OnceLock<u64> = OnceLock::new();
    CLOCK_START_MS + coarse_ms().saturating_sub(*BASE.get_or_init(coarse_ms))
}

impl HostStats {
    /// A fresh host: up, no traffic, address unknown.
    pub fn new() -> Arc<Self> {
        let stats = HostStats::default();
        stats.came_up();
        Arc::new(stats)
    }

    /// Records that the host just came (back) into rotation.
    fn came_up(&self) {
        let now = clock_nanos();
        self.up_since.store(now, Relaxed);
        LAST_CAME_UP.fetch_max(now, Relaxed);
    }

    /// [`clock_nanos`] when the host last came (back) into rotation: created,
    /// marked up after bad, or admin-up.
    #[inline]
    pub(crate) fn up_since(&self) -> u64 {
        self.up_since.load(Relaxed)
    }

    /// Whether schedulers may pick this host: neither bad nor admin-down. (A host
    /// whose name does not resolve is marked bad.)
    #[inline]
    pub fn is_available(&self) -> bool {
        !self.bad.load(Relaxed)
            && !self.admin_down.load(Relaxed)
            && self.agent_state.load(Relaxed) == AgentState::Up as u8
            && !self.ejected.load(Relaxed)
    }

    /// Whether the host may take one more connection: under its agent's
    /// `maxconn:N` when it said one, else under `maxconn` (0: no limit).
    #[inline]
    pub fn has_room(&self, maxconn: u32) -> bool {
        let agent = self.agent_maxconn.load(Relaxed);
        let limit = if agent != 0 { agent } else { maxconn };
        limit == 0 || self.open() < u64::from(limit)
    }

    /// Open connections (including ones still connecting).
    #[inline]
    pub fn open(&self) -> u64 {
        self.open.load(Relaxed)
    }

    /// When the last connection closed, as nanoseconds on a process-local clock
    /// (0 = never). Only comparisons between hosts are meaningful.
    #[inline]
    pub(crate) fn last_closed(&self) -> u64 {
        self.last_closed.load(Relaxed)
    }

    /// Current health.
    pub fn health(&self) -> HostHealth {
        if self.admin_down.load(Relaxed) || self.agent_state() == AgentState::Maint {
            HostHealth::AdminDown
        } else if self.bad.load(Relaxed) || self.ejected.load(Relaxed) {
            HostHealth::Bad
        } else {
            HostHealth::Up
        }
    }

    /// Makes `ranking` hear of this host's changes from now on, as its `slot`th
    /// host (replacing the ranking of an earlier snapshot), and tells it once.
    pub(crate) fn observe(&self, ranking: Weak<dyn Ranking>, slot: usize) {
        self.observer
            .store(Some(Arc::new(Observer { ranking, slot })));
        self.rank_changed();
    }

    /// Tells the host's ranking, if it still exists, that this host moved.
    #[inline]
    fn rank_changed(&self) {
        if let Some(observer) = &*self.observer.load()
            && let Some(ranking) = observer.ranking.upgrade()
        {
            ranking.host_changed(observer.slot);
        }
    }

    /// Whether the host is marked bad (whatever its admin state).
    pub fn is_bad(&self) -> bool {
        self.bad.load(Relaxed)
    }

    /// Whether the host is administratively down.
    pub fn is_admin_down(&self) -> bool {
        self.admin_down.load(Relaxed)
    }

    /// Why the host is bad, if it is.
    pub fn bad_info(&self) -> Option<Arc<BadInfo>> {
        self.bad_info.load_full()
    }

    /// Marks the host bad. Returns true if it was up before (the caller logs the
    /// transition once); a host already bad keeps its first reason and time.
    pub fn mark_bad(&self, reason: impl Into<String>) -> bool {
        let was_bad = self.bad.swap(true, Relaxed);
        if !was_bad {
            self.bad_info.store(Some(Arc::new(BadInfo {
                since: SystemTime::now(),
                reason: reason.into(),
            })));
            self.rank_changed();
        }
        !was_bad
    }

    /// Counts one failed connection attempt and marks the host bad.
    /// Returns true if this made the host go bad.
    pub(crate) fn record_failure(&self, reason: impl Into<String>) -> bool {
        self.failures.fetch_add(1, Relaxed);
        self.mark_bad(reason)
    }

    /// Counts one failed connection attempt and, for the passive checks, one
    /// more consecutive failure: returns how many in a row now. The host
    /// stays in rotation ([`HostStats::eject`] takes it out).
    pub(crate) fn record_passive_failure(&self) -> u32 {
        self.failures.fetch_add(1, Relaxed);
        self.passive_fails.fetch_add(1, Relaxed).saturating_add(1)
    }

    /// The host sent a client its first byte: its failures are no longer
    /// consecutive. A load, and a store only after failures.
    #[inline]
    pub(crate) fn record_passive_success(&self) {
        if self.passive_fails.load(Relaxed) != 0 {
            self.passive_fails.store(0, Relaxed);
        }
    }

    /// Whether the passive checks took the host out of rotation.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Relaxed)
    }

    /// The running ejection, if the host is ejected.
    pub fn ejection(&self) -> Option<Arc<Ejection>> {
        if self.is_ejected() {
            self.ejection.load_full()
        } else {
            None
        }
    }

    /// Ejections since start.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Relaxed)
    }

    /// Ejects the host after `failures` consecutive failures (the last one
    /// `reason`), unless it already is or `room` says the group has no room
    /// for one more ejected host: `room(n)` gets how many hosts of the group
    /// are ejected counting this one. The ejection lasts `base` doubled once
    /// per ejection in a row, up to `max` (never below `base`); `now` is
    /// [`clock_nanos`]. Returns the ejection's length and its number (for
    /// [`HostStats::end_ejection`]).
    pub(crate) fn eject(
        &self,
        (base, max): (Duration, Duration),
        failures: u32,
        reason: &str,
        now: u64,
        room: impl FnOnce() -> bool,
    ) -> Option<(Duration, u64)> {
        if self.ejected.swap(true, Relaxed) {
            return None;
        }
        // Counted with this host marked: two hosts ejected at once both see
        // each other, so the group never goes over its share (at worst both
        // step back, and the next failure tries again).
        if !room() {
            self.ejected.store(false, Relaxed);
            return None;
        }
        let returned = self.returned_at.load(Relaxed);
        let clean = returned != 0
            && Duration::from_nanos(now.saturating_sub(returned)) >= EJECT_DOUBLING_RESET;
        let level = if clean {
            0
        } else {
            self.eject_level.load(Relaxed)
        };
        self.eject_level
            .store(level.saturating_add(1).min(31), Relaxed);
        let length = base
            .saturating_mul(1u32 << level.min(20))
            .min(max.max(base));
        self.passive_fails.store(0, Relaxed);
        self.ejection.store(Some(Arc::new(Ejection {
            since: SystemTime::now(),
            seconds: length.as_secs_f64(),
            failures,
            last_failure: reason.to_string(),
        })));
        let number = self.ejections.fetch_add(1, Relaxed) + 1;
        self.rank_changed();
        Some((length, number))
    }

    /// Ends ejection `number` (its timer ran out): the host is back in
    /// rotation. False if that ejection is not the running one.
    pub(crate) fn end_ejection(&self, number: u64, now: u64) -> bool {
        if self.ejections.load(Relaxed) != number || !self.ejected.swap(false, Relaxed) {
            return false;
        }
        self.returned_at.store(now, Relaxed);
        self.passive_fails.store(0, Relaxed);
        self.came_up();
        self.rank_changed();
        true
    }

    /// Puts a bad host back in rotation. Returns true if it was bad.
    pub fn mark_up(&self) -> bool {
        let was_bad = self.bad.swap(false, Relaxed);
        if was_bad {
            self.bad_info.store(None);
            self.came_up();
            self.rank_changed();
        }
        was_bad
    }

    /// Takes the host out of rotation (or back in) by administrator's order.
    /// Returns true if that changed anything.
    pub fn set_admin_down(&self, down: bool) -> bool {
        let changed = self.admin_down.swap(down, Relaxed) != down;
        if changed {
            if !down {
                self.came_up();
            }
            self.rank_changed();
        }
        changed
    }

    /// The address connections go to now.
    #[inline]
    pub(crate) fn resolved(&self) -> Option<SocketAddr> {
        self.resolved.load().as_deref().copied()
    }

    /// Records a (re-)resolved address; returns true if it changed.
    pub(crate) fn set_resolved(&self, addr: Option<SocketAddr>) -> bool {
        if self.resolved() == addr {
            return false;
        }
        self.resolved.store(addr.map(Arc::new));
        true
    }

    /// Adds bytes sent by the client to this host.
    #[inline]
    pub(crate) fn add_bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Relaxed);
    }

    /// Adds bytes sent by this host to the client.
    #[inline]
    pub(crate) fn add_bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Relaxed);
    }

    /// Counts a connection that reached this host after `latency`.
    #[inline]
    pub(crate) fn record_connected(&self, latency: Duration) {
        self.total.fetch_add(1, Relaxed);
        let seconds = latency.as_secs_f64();
        let bucket = CONNECT_BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(CONNECT_BUCKETS.len());
        self.connect_buckets[bucket].fetch_add(1, Relaxed);
        self.connect_micros
            .fetch_add(latency.as_micros() as u64, Relaxed);
    }

    /// Counts one UDP session started on this host (its `total`, without
    /// a connect time: a connected UDP socket does not wait for the host).
    #[inline]
    pub(crate) fn record_session(&self) {
        self.total.fetch_add(1, Relaxed);
    }

    /// Counts one pick of this host by a scheduler.
    #[inline]
    pub(crate) fn record_pick(&self) {
        self.picks.fetch_add(1, Relaxed);
    }

    /// The active check's consecutive (passes, failures).
    pub(crate) fn check_streak(&self) -> (u32, u32) {
        (
            self.check_passes.load(Relaxed),
            self.check_fails.load(Relaxed),
        )
    }

    /// Records one probe of the active check: its latency, its failure reason
    /// (`None`: passed) and the streak after it.
    pub(crate) fn record_check(
        &self,
        latency: Duration,
        failure: Option<String>,
        (passes, fails): (u32, u32),
    ) {
        self.check_micros
            .store(latency.as_micros() as u64 + 1, Relaxed);
        if failure.is_some() {
            self.check_failures.fetch_add(1, Relaxed);
        }
        self.check_last.store(failure.map(Arc::new));
        self.check_passes.store(passes, Relaxed);
        self.check_fails.store(fails, Relaxed);
    }

    /// The active check's state, once the host was probed.
    pub fn check_view(&self) -> Option<CheckStateView> {
        let micros = self.check_micros.load(Relaxed);
        if micros == 0 {
            return None;
        }
        Some(CheckStateView {
            passes: self.check_passes.load(Relaxed),
            fails: self.check_fails.load(Relaxed),
            last_micros: micros - 1,
            last_failure: self.check_last.load_full().map(|r| (*r).clone()),
            failures: self.check_failures.load(Relaxed),
        })
    }

    /// What the agent last said of the host's state.
    pub fn agent_state(&self) -> AgentState {
        AgentState::from_u8(self.agent_state.load(Relaxed))
    }

    /// The agent's weight, in 1/`scale` of the configured weight.
    #[inline]
    pub fn agent_share(&self, scale: u64) -> u64 {
        u64::from(100 - self.agent_cut.load(Relaxed).min(100)) * scale / 100
    }

    /// Records what the agent said (its state, weight in percent, capped at
    /// 100, and `maxconn:N`, 0 for none); true when the state changed.
    pub(crate) fn set_agent(&self, state: AgentState, weight: u32, maxconn: u32) -> bool {
        let cut = 100 - weight.min(100);
        let before = self.agent_cut.swap(cut, Relaxed);
        match (before == 0, cut == 0) {
            (true, false) => {
                SCALED_HOSTS.fetch_add(1, Relaxed);
            }
            (false, true) => {
                SCALED_HOSTS.fetch_sub(1, Relaxed);
            }
            _ => {}
        }
        self.agent_maxconn.store(maxconn, Relaxed);
        let was = self.agent_state.swap(state as u8, Relaxed);
        let changed = was != state as u8;
        if changed {
            if state == AgentState::Up {
                self.came_up();
            }
            self.rank_changed();
        }
        changed
    }

    /// Records the agent's last line, or why it did not answer.
    pub(crate) fn set_agent_view(&self, view: AgentView) {
        self.agent_view.store(Some(Arc::new(view)));
    }

    /// Forgets what the agent said (its group has no agent any more).
    pub(crate) fn clear_agent_view(&self) {
        self.agent_view.store(None);
    }

    /// What the agent last said (`None`: never asked).
    pub fn agent_view(&self) -> Option<AgentView> {
        self.agent_view.load_full().map(|v| (*v).clone())
    }

    /// What an upgrade carries of this host to the next process: health
    /// (bad with its reason and time, admin-down, the running ejection) and
    /// counters. Open connections stay counted where they are.
    pub(crate) fn carried(&self) -> CarriedHost {
        CarriedHost {
            bad: self.bad_info().map(|b| CarriedBad {
                since_ns: unix_nanos(b.since),
                reason: b.reason.clone(),
            }),
            admin_down: self.is_admin_down(),
            drain_deadline_ms: self
                .drain_deadline
                .load_full()
                .filter(|_| self.is_admin_down())
                .map(|at| unix_ms(*at)),
            total: self.total.load(Relaxed),
            failures: self.failures.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            picks: self.picks.load(Relaxed),
            connect_buckets: self
                .connect_buckets
                .iter()
                .map(|c| c.load(Relaxed))
                .collect(),
            connect_micros: self.connect_micros.load(Relaxed),
            check_failures: self.check_failures.load(Relaxed),
            ejections: self.ejections(),
            eject_level: self.eject_level.load(Relaxed),
            ejection: self
                .ejection()
                .map(|e| (*e).clone())
                .map(|e| CarriedEjection {
                    since_ns: unix_nanos(e.since),
                    seconds: e.seconds,
                    failures: e.failures,
                    last_failure: e.last_failure,
                }),
        }
    }

    /// Takes on what the previous process carried of this host (a fresh
    /// host of the new process, before its first client). A running
    /// ejection is restored as it was; the caller ends it when its time
    /// runs out ([`HostStats::end_ejection`] with the number returned).
    pub(crate) fn restore(&self, carried: &CarriedHost) -> Option<(Duration, u64)> {
        if let Some(bad) = &carried.bad {
            self.bad.store(true, Relaxed);
            self.bad_info.store(Some(Arc::new(BadInfo {
                since: from_unix_nanos(bad.since_ns),
                reason: bad.reason.clone(),
            })));
        }
        self.admin_down.store(carried.admin_down, Relaxed);
        self.total.store(carried.total, Relaxed);
        self.failures.store(carried.failures, Relaxed);
        self.bytes_in.store(carried.bytes_in, Relaxed);
        self.bytes_out.store(carried.bytes_out, Relaxed);
        self.picks.store(carried.picks, Relaxed);
        for (bucket, count) in self.connect_buckets.iter().zip(&carried.connect_buckets) {
            bucket.store(*count, Relaxed);
        }
        self.connect_micros.store(carried.connect_micros, Relaxed);
        self.check_failures.store(carried.check_failures, Relaxed);
        self.ejections.store(carried.ejections, Relaxed);
        self.eject_level.store(carried.eject_level, Relaxed);
        let resumed = carried.ejection.as_ref().map(|e| {
            let since = from_unix_nanos(e.since_ns);
            let length = Duration::try_from_secs_f64(e.seconds).unwrap_or_default();
            let left = (since + length)
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            self.ejection.store(Some(Arc::new(Ejection {
                since,
                seconds: e.seconds,
                failures: e.failures,
                last_failure: e.last_failure.clone(),
            })));
            self.ejected.store(true, Relaxed);
            (left, carried.ejections)
        });
        self.rank_changed();
        resumed
    }

    /// Adds the counts an upgrade's old process made after it handed over
    /// (`delta` from [`CarriedHost::counts_since`]).
    pub(crate) fn add_counts(&self, delta: &CarriedHost) {
        self.total.fetch_add(delta.total, Relaxed);
        self.failures.fetch_add(delta.failures, Relaxed);
        self.bytes_in.fetch_add(delta.bytes_in, Relaxed);
        self.bytes_out.fetch_add(delta.bytes_out, Relaxed);
        self.picks.fetch_add(delta.picks, Relaxed);
        for (bucket, count) in self.connect_buckets.iter().zip(&delta.connect_buckets) {
            bucket.fetch_add(*count, Relaxed);
        }
        self.connect_micros.fetch_add(delta.connect_micros, Relaxed);
        self.check_failures.fetch_add(delta.check_failures, Relaxed);
    }

    /// Records a drain's deadline (`None`: over or cancelled).
    pub(crate) fn set_drain_deadline(&self, at: Option<SystemTime>) {
        self.drain_deadline.store(at.map(Arc::new));
    }

    /// A plain copy of the counters, for display and serialisation.
    pub fn view(&self) -> HostStatsView {
        HostStatsView {
            health: self.health(),
            open: self.open(),
            total: self.total.load(Relaxed),
            failures: self.failures.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            picks: self.picks.load(Relaxed),
            connect_latency: LatencyView {
                le_seconds: CONNECT_BUCKETS.to_vec(),
                counts: self
                    .connect_buckets
                    .iter()
                    .map(|c| c.load(Relaxed))
                    .collect(),
                sum_seconds: self.connect_micros.load(Relaxed) as f64 / 1e6,
            },
            bad: self.bad_info().map(|b| (*b).clone()).or_else(|| {
                self.ejection().map(|e| BadInfo {
                    since: e.since,
                    reason: e.reason(),
                })
            }),
            ejection: self.ejection().map(|e| (*e).clone()),
            ejections: self.ejections(),
            resolved: self.resolved(),
            check: self.check_view(),
            agent: self.agent_view(),
        }
    }
}

/// A host's health and counters as an upgrade hands them to the next
/// process (part of its versioned state: fields are only ever added, with
/// defaults, so the next release reads this one's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CarriedHost {
    /// Why and since when it is bad.
    pub bad: Option<CarriedBad>,
    /// Taken out of rotation by an administrator.
    pub admin_down: bool,
    /// Draining until then (milliseconds since the Unix epoch), when its
    /// connections still open are closed.
    pub drain_deadline_ms: Option<u64>,
    /// Connections since start.
    pub total: u64,
    /// Failed connection attempts.
    pub failures: u64,
    /// Bytes from clients.
    pub bytes_in: u64,
    /// Bytes to clients.
    pub bytes_out: u64,
    /// Picks.
    pub picks: u64,
    /// Connect latency per bucket.
    pub connect_buckets: Vec<u64>,
    /// Sum of connect latencies, in microseconds.
    pub connect_micros: u64,
    /// Failed probes of the active check.
    pub check_failures: u64,
    /// Ejections since start.
    pub ejections: u64,
    /// Ejections in a row (each doubles the next one's length).
    pub eject_level: u32,
    /// The running ejection.
    pub ejection: Option<CarriedEjection>,
}

impl CarriedHost {
    /// The counts made since `earlier` (the same host's, read before), health
    /// left out: what the old process adds after it handed over.
    pub fn counts_since(&self, earlier: &CarriedHost) -> CarriedHost {
        CarriedHost {
            total: self.total.saturating_sub(earlier.total),
            failures: self.failures.saturating_sub(earlier.failures),
            bytes_in: self.bytes_in.saturating_sub(earlier.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(earlier.bytes_out),
            picks: self.picks.saturating_sub(earlier.picks),
            connect_buckets: self
                .connect_buckets
                .iter()
                .zip(earlier.connect_buckets.iter().chain(std::iter::repeat(&0)))
                .map(|(now, was)| now.saturating_sub(*was))
                .collect(),
            connect_micros: self.connect_micros.saturating_sub(earlier.connect_micros),
            check_failures: self.check_failures.saturating_sub(earlier.check_failures),
            ..CarriedHost::default()
        }
    }
}

/// [`BadInfo`] in the upgrade state.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct CarriedBad {
    /// When it was marked bad, in nanoseconds since the Unix epoch.
    pub since_ns: u64,
    /// Why.
    pub reason: String,
}

/// [`Ejection`] in the upgrade state.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct CarriedEjection {
    /// When it began, in nanoseconds since the Unix epoch.
    pub since_ns: u64,
    /// Its length, in seconds.
    pub seconds: f64,
    /// The failures that caused it.
    pub failures: u32,
    /// The last of them.
    pub last_failure: String,
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Nanoseconds since the Unix epoch (0 before it; saturating in 2554).
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The time `ns` nanoseconds after the Unix epoch.
pub fn from_unix_nanos(ns: u64) -> SystemTime {
    std::time::UNIX_EPOCH + Duration::from_nanos(ns)
}

/// The time `ms` milliseconds after the Unix epoch.
pub fn from_unix_ms(ms: u64) -> SystemTime {
    std::time::UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod carried_tests {
    use super::*;

    #[test]
    fn health_and_counts_survive_the_trip_and_later_counts_add() {
        let old = HostStats::new();
        old.record_failure("connect: refused");
        old.set_admin_down(true);
        old.set_drain_deadline(Some(SystemTime::now() + Duration::from_secs(60)));
        old.add_bytes_in(10);
        old.record_connected(Duration::from_micros(300));
        let ejected = old.eject(
            (Duration::from_secs(30), Duration::from_secs(300)),
            3,
            "reset",
            clock_nanos(),
            || true,
        );
        assert!(ejected.is_some());
        let carried = old.carried();
        // Through the versioned state's JSON, as an upgrade sends it.
        let carried: CarriedHost =
            serde_json::from_str(&serde_json::to_string(&carried).unwrap()).unwrap();
        let new = HostStats::new();
        let (left, number) = new.restore(&carried).expect("the ejection goes on");
        assert!(left > Duration::from_secs(25) && left <= Duration::from_secs(30));
        assert_eq!(number, 1);
        assert!(new.is_bad() && new.is_admin_down() && new.is_ejected());
        assert_eq!(new.bad_info(), old.bad_info(), "reason and time kept");
        assert_eq!(new.ejection(), old.ejection());
        // The drain's deadline travels; the controller arms its timer again.
        assert!(carried.drain_deadline_ms.is_some());
        let (was, now) = (old.view(), new.view());
        assert_eq!(
            (was.failures, was.bytes_in, was.connect_latency.clone()),
            (now.failures, now.bytes_in, now.connect_latency.clone())
        );
        // What the old process counts after the hand-over adds on.
        old.add_bytes_in(5);
        old.record_failure("again");
        new.add_counts(&old.carried().counts_since(&carried));
        assert_eq!(new.view().bytes_in, 15);
        assert_eq!(new.view().failures, 2);
        // The ejection ends on the timer's number, as a local one would.
        assert!(new.end_ejection(number, clock_nanos()));
        assert!(!new.is_ejected());
    }
}

/// The active check's state of one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckStateView {
    /// Consecutive passed probes (towards `rise` while the host is bad).
    pub passes: u32,
    /// Consecutive failed probes (towards `fall` while the host is up).
    pub fails: u32,
    /// How long the last probe took, in microseconds.
    pub last_micros: u64,
    /// Why the last probe failed; `None`: it passed.
    pub last_failure: Option<String>,
    /// Failed probes since start.
    pub failures: u64,
}

/// A point-in-time copy of a host's counters and health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostStatsView {
    /// Up, bad or admin-down.
    pub health: HostHealth,
    /// Open connections.
    pub open: u64,
    /// Connections that reached the host since start.
    pub total: u64,
    /// Failed connection attempts since start.
    pub failures: u64,
    /// Bytes from clients to the host.
    pub bytes_in: u64,
    /// Bytes from the host to clients.
    pub bytes_out: u64,
    /// Times a scheduler picked the host.
    pub picks: u64,
    /// Connect latency of successful connects.
    pub connect_latency: LatencyView,
    /// Why the host is bad, when it is.
    pub bad: Option<BadInfo>,
    /// The address in use, if resolved.
    pub resolved: Option<SocketAddr>,
    /// The group's active check, once it probed the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckStateView>,
    /// What the group's agent last said, once it was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentView>,
    /// The passive checks' running ejection (`failLimit`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ejection: Option<Ejection>,
    /// Ejections by the passive checks since start.
    pub ejections: u64,
}

/// A latency histogram: `counts[i]` connects took at most `le_seconds[i]` (and more
/// than the bound before); the extra last count is everything slower.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyView {
    /// Upper bounds of the buckets, in seconds.
    pub le_seconds: Vec<f64>,
    /// Count per bucket (not cumulative), one more than `le_seconds`.
    pub counts: Vec<u64>,
    /// Sum of all latencies, in seconds.
    pub sum_seconds: f64,
}

impl Eq for LatencyView {}

impl Drop for HostStats {
    fn drop(&mut self) {
        // A scaled host that goes away no longer counts.
        if *self.agent_cut.get_mut() != 0 {
            SCALED_HOSTS.fetch_sub(1, Relaxed);
        }
    }
}

/// Holds one open connection on a host: counted on creation, released on drop,
/// whichever way the connection ends.
#[derive(Debug)]
pub struct ConnectionGuard {
    stats: Arc<HostStats>,
}

impl ConnectionGuard {
    /// Counts a new open connection on `stats`.
    pub fn new(stats: Arc<HostStats>) -> Self {
        stats.open.fetch_add(1, Relaxed);
        stats.rank_changed();
        ConnectionGuard { stats }
    }

    /// The host's stats.
    pub fn stats(&self) -> &Arc<HostStats> {
        &self.stats
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        // clock_nanos is never 0, which keeps 0 meaning "never closed".
        self.stats.last_closed.store(clock_nanos(), Relaxed);
        self.stats.open.fetch_sub(1, Relaxed);
        self.stats.rank_changed();
    }
}

mod unix_seconds {
    //! Serialises a `SystemTime` as fractional seconds since the Unix epoch.
    use std::time::{SystemTime, UNIX_EPOCH};

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let secs = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        s.serialize_f64(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_health_state_has_one_text_its_json_name() {
        for health in HostHealth::ALL {
            let json = serde_json::to_value(health).unwrap();
            assert_eq!(json, health.name());
            assert_eq!(HostHealth::from_name(health.name()), Some(health));
        }
        assert_eq!(HostHealth::from_name("down"), None);
    }

    #[test]
    fn the_activity_clock_follows_real_time_to_a_tick() {
        let (before, started) = (clock_ms(), Instant::now());
        std::thread::sleep(std::time::Duration::from_millis(60));
        let (after, waited) = (clock_ms(), started.elapsed().as_millis() as u64);
        // The coarse clock lags by at most one kernel tick (10 ms at HZ=100).
        assert!(after >= before, "monotonic: {before} then {after}");
        let moved = after - before;
        assert!(
            moved + 10 >= waited && moved <= waited + 10,
            "moved {moved} ms in {waited} ms"
        );
    }

    #[test]
    fn what_picks_read_shares_one_cache_line() {
        let h = HostStats::new();
        let base = Arc::as_ptr(&h) as usize;
        assert_eq!(base % 64, 0);
        for field in [
            &h.open as *const AtomicU64 as usize,
            &h.last_closed as *const AtomicU64 as usize,
            &h.up_since as *const AtomicU64 as usize,
            &h.bad as *const AtomicBool as usize,
            &h.admin_down as *const AtomicBool as usize,
            &h.ejected as *const AtomicBool as usize,
        ] {
            assert!(field - base < 64);
        }
        assert!(&h.bytes_in as *const AtomicU64 as usize - base >= 64);
        // The copy loop's first host chunk reads the streak beside what it writes.
        assert_eq!(
            (&h.passive_fails as *const AtomicU32 as usize - base) / 64,
            (&h.bytes_out as *const AtomicU64 as usize - base) / 64
        );
    }

    #[test]
    fn bad_and_up_transitions_are_reported_once() {
        let h = HostStats::new();
        assert!(h.is_available());
        assert!(h.record_failure("refused"));
        assert!(!h.record_failure("refused again"));
        assert_eq!(h.bad_info().unwrap().reason, "refused");
        assert_eq!(h.view().failures, 2);
        assert!(!h.is_available());
        assert!(h.mark_up());
        assert!(!h.mark_up());
        assert!(h.bad_info().is_none());
        assert!(h.is_available());
    }

    #[test]
    fn admin_down_wins_over_bad_in_health() {
        let h = HostStats::new();
        h.mark_bad("x");
        assert!(h.set_admin_down(true));
        assert!(!h.set_admin_down(true));
        assert_eq!(h.health(), HostHealth::AdminDown);
        h.set_admin_down(false);
        assert_eq!(h.health(), HostHealth::Bad);
    }

    #[test]
    fn up_since_moves_when_the_host_comes_back() {
        let h = HostStats::new();
        let created = h.up_since();
        assert!(created > 0 && last_came_up() >= created);
        std::thread::sleep(Duration::from_millis(2));
        h.mark_bad("x");
        assert_eq!(h.up_since(), created, "going bad is not coming back");
        h.mark_up();
        let back = h.up_since();
        assert!(back > created);
        std::thread::sleep(Duration::from_millis(2));
        h.set_admin_down(true);
        assert_eq!(h.up_since(), back);
        h.set_admin_down(false);
        assert!(h.up_since() > back);
        assert!(last_came_up() >= h.up_since());
    }

    #[test]
    fn ejections_double_up_to_the_cap_and_reset_after_a_clean_spell() {
        let h = HostStats::new();
        let times = (Duration::from_secs(10), Duration::from_secs(300));
        let sec = |s: u64| s * 1_000_000_000;
        assert_eq!(h.record_passive_failure(), 1);
        h.record_passive_success();
        assert_eq!(h.record_passive_failure(), 1, "a success breaks the streak");
        // No room in the group: not ejected, and the host stays available.
        assert_eq!(h.eject(times, 1, "x", sec(1), || false), None);
        assert!(h.is_available() && !h.is_ejected());
        let mut now = sec(1);
        let mut lengths = Vec::new();
        for _ in 0..7 {
            let (length, number) = h.eject(times, 3, "refused", now, || true).unwrap();
            assert!(!h.is_available());
            assert_eq!(h.health(), HostHealth::Bad);
            assert_eq!(
                h.view().bad.unwrap().reason,
                format!(
                    "ejected for {} s after 3 failures (refused)",
                    length.as_secs()
                )
            );
            assert_eq!(h.eject(times, 3, "again", now, || true), None, "once");
            assert!(!h.end_ejection(number + 1, now), "another ejection's timer");
            now += length.as_nanos() as u64;
            assert!(h.end_ejection(number, now));
            assert!(h.is_available() && h.view().bad.is_none());
            lengths.push(length.as_secs());
            now += sec(1);
        }
        assert_eq!(lengths, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(h.ejections(), 7);
        // A passing check does not end an ejection: mark_up leaves it.
        let (_, number) = h.eject(times, 3, "refused", now, || true).unwrap();
        assert!(!h.mark_up() && h.is_ejected());
        now += sec(300);
        h.end_ejection(number, now);
        // Clean for EJECT_DOUBLING_RESET after its return: back to ejectTime.
        now += EJECT_DOUBLING_RESET.as_nanos() as u64;
        let (length, _) = h.eject(times, 3, "refused", now, || true).unwrap();
        assert_eq!(length, Duration::from_secs(10));
    }

    #[test]
    fn guard_counts_open_and_close_time() {
        let h = HostStats::new();
        assert_eq!(h.last_closed(), 0);
        {
            let _a = ConnectionGuard::new(h.clone());
            let _b = ConnectionGuard::new(h.clone());
            assert_eq!(h.open(), 2);
        }
        assert_eq!(h.open(), 0);
        assert!(h.last_closed() > 0);
    }
}
