//! Active checks (`<check>`): every host of a group with a check is probed
//! every `interval` (±10% jitter) by a task of its own, so one slow host never
//! delays another's probes; `fall` failures in a row make an up host bad and
//! `rise` passes in a row put a bad host back ([`step`], pure). A connection
//! failure on the data path still marks a host bad at once; the check's `rise`
//! then counts it back.
//!
//! One supervisor task ([`run`]) follows the snapshot: it starts a host's task
//! when the host or its group's check appears, restarts it when the check or
//! the host's address changes, and stops it when either goes. Host state is
//! `HostStats`' atomics, through the same transitions (and events) as the
//! managers use.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::exchange::{CheckTls, Kept, exchange};
use super::probe::address;
use crate::config::{CheckConfig, HostAddress, MarkedDown};
use crate::events::Events;
use crate::snapshot::Snapshot;
use crate::state::{AgentState, CloseRequest, ConnectionRegistry, HostId, HostSnapshot, HostStats};

/// How much longer than the check's `timeout` a probe may take before it is
/// abandoned (the exchange itself stops at the timeout).
const GUARD: Duration = Duration::from_millis(100);

/// Consecutive results of one host's check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Streak {
    /// Passes in a row (counted while the host is bad).
    pub passes: u32,
    /// Failures in a row (counted while the host is up).
    pub fails: u32,
}

/// What a probe's result does to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing changes.
    Stay,
    /// The host is back in rotation (`rise` passes while bad).
    Up,
    /// The host goes bad (`fall` failures while up).
    Bad,
}

/// The up/bad state machine: the streak after a probe that `passed` on a
/// host that `bad` is (or not), and what to do with the host. Passes count
/// only while the host is bad (so a host the data path marks bad needs
/// `rise` fresh passes), failures only while it is up.
pub(crate) fn step(
    streak: Streak,
    bad: bool,
    passed: bool,
    rise: u32,
    fall: u32,
) -> (Streak, Verdict) {
    match (passed, bad) {
        (true, true) if streak.passes + 1 >= rise => (Streak::default(), Verdict::Up),
        (true, true) => (
            Streak {
                passes: streak.passes + 1,
                fails: 0,
            },
            Verdict::Stay,
        ),
        (true, false) => (Streak::default(), Verdict::Stay),
        (false, false) if streak.fails + 1 >= fall => (Streak::default(), Verdict::Bad),
        (false, false) => (
            Streak {
                passes: 0,
                fails: streak.fails + 1,
            },
            Verdict::Stay,
        ),
        (false, true) => (Streak::default(), Verdict::Stay),
    }
}

/// What a host's check task probes: when any of it changes, the task is
/// started again.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    service: Arc<str>,
    group: Arc<str>,
    /// The host's name, which its events tell: a renamed host keeps its
    /// identity and counters, and its task starts again under the new name.
    host: Arc<str>,
    check: CheckConfig,
    port: Option<u16>,
    address: HostAddress,
    /// The group's `onMarkedDown`: close the host's connections when the
    /// check marks it bad.
    on_marked_down: MarkedDown,
    /// With TLS origination towards the host: the probe speaks TLS and
    /// verifies the host as connections do.
    tls: Option<CheckTls>,
}

/// Where a check's transitions are told: events, and the open connections
/// `onMarkedDown="close"` closes.
#[derive(Clone)]
pub(crate) struct Tell {
    /// Host bad / back events.
    pub events: Events,
    /// The open connections.
    pub registry: Arc<ConnectionRegistry>,
}

struct Running {
    target: Target,
    stop: CancellationToken,
}

/// Runs the active checks of the running configuration until `shutdown`.
pub(crate) async fn run(
    snapshots: Arc<ArcSwap<Snapshot>>,
    tell: Tell,
    shutdown: CancellationToken,
) {
    let mut running: HashMap<HostId, Running> = HashMap::new();
    super::follow_snapshots(&snapshots, &shutdown, |snapshot| {
        follow(snapshot, &mut running, &tell, &shutdown)
    })
    .await;
    tracing::debug!("active checks stopped");
}

/// Brings the host tasks in line with `snapshot`.
fn follow(
    snapshot: &Snapshot,
    running: &mut HashMap<HostId, Running>,
    tell: &Tell,
    shutdown: &CancellationToken,
) {
    let mut wanted: HashMap<HostId, (Target, HostSnapshot)> = HashMap::new();
    for service in snapshot.services() {
        for group in &service.groups {
            let Some(check) = &group.check else { continue };
            for (i, host) in group.hosts.iter().enumerate() {
                let target = Target {
                    service: service.name.clone(),
                    group: group.name.clone(),
                    host: host.name.clone(),
                    check: check.config.clone(),
                    port: check.ports.get(i).copied().flatten(),
                    address: host.address.clone(),
                    on_marked_down: group.options.on_marked_down,
                    tls: host
                        .tls
                        .as_ref()
                        .zip(group.origin.as_ref())
                        .map(|(name, origin)| CheckTls {
                            client: origin.client.clone(),
                            name: name.clone(),
                        }),
                };
                wanted.insert(host.id, (target, host.clone()));
            }
        }
    }
    running.retain(|id, r| {
        let keep = wanted.get(id).is_some_and(|(t, _)| *t == r.target);
        if !keep {
            r.stop.cancel();
        }
        keep
    });
    for (id, (target, host)) in wanted {
        if running.contains_key(&id) {
            continue;
        }
        let stop = shutdown.child_token();
        tokio::spawn(watch(target.clone(), host, tell.clone(), stop.clone()));
        running.insert(id, Running { target, stop });
    }
}

/// A pause of `interval` ±10%.
pub(crate) fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + fastrand::f64() * 0.2)
}

/// Probes start on a grid whose step is a twentieth of their interval, at
/// most this: the probes of many hosts due within one step start on one
/// wake-up of the control plane's thread, not one each (at 1,000 hosts a
/// second, a wake-up per probe cost more than the probes' own work).
const MAX_PROBE_TICK: Duration = Duration::from_millis(50);

/// `at`, put off to the next tick of the grid for `interval`.
pub(crate) fn on_tick(at: tokio::time::Instant, interval: Duration) -> tokio::time::Instant {
    static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(tokio::time::Instant::now);
    let since = at.saturating_duration_since(epoch).as_nanos();
    let tick = (interval / 20)
        .clamp(Duration::from_millis(1), MAX_PROBE_TICK)
        .as_nanos();
    let late = (tick - since % tick) % tick;
    at + Duration::from_nanos(late as u64)
}

/// When a probe that was `due` is next due: a jittered interval later (from
/// when it was due, so starting on the grid's ticks does not slow the rate),
/// and not before now (a probe that overran starts its next at once).
pub(crate) fn next_due(due: tokio::time::Instant, interval: Duration) -> tokio::time::Instant {
    (due + jittered(interval)).max(tokio::time::Instant::now())
}

/// Probes one host until `stop`: the first probe within one interval (spread
/// at random, so a group's hosts are not probed at once), then every interval.
async fn watch(target: Target, host: HostSnapshot, tell: Tell, stop: CancellationToken) {
    let check = &target.check;
    let mut kept = Kept::default();
    let mut due = tokio::time::Instant::now() + check.interval.mul_f64(fastrand::f64());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(on_tick(due, check.interval)) => {}
        }
        let started = Instant::now();
        // The exchange keeps to the deadline and says what it got by then;
        // the guard, a little later, bounds what it cannot (a name look-up).
        let deadline = tokio::time::Instant::from_std(started) + check.timeout;
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout_at(deadline + GUARD, probe(&target, &host, deadline, &mut kept)) => r.unwrap_or_else(|_| {
                Err(format!("timeout after {} s", check.timeout.as_secs_f64()))
            }),
        };
        apply(&target, &host, result, started.elapsed(), &tell);
        due = next_due(due, check.interval);
    }
}

/// One probe: the host's address (with the check's port), then the exchange
/// (over the connection the last one `kept`, if any).
async fn probe(
    target: &Target,
    host: &HostSnapshot,
    deadline: tokio::time::Instant,
    kept: &mut Kept,
) -> Result<(), String> {
    let addr = address(host).await?;
    let addr = SocketAddr::new(addr.ip(), target.port.unwrap_or(addr.port()));
    exchange(
        &target.check,
        &host.address.host,
        addr,
        target.tls.as_ref(),
        deadline,
        kept,
    )
    .await
}

/// Records a probe's result on the host and makes the transition it calls for.
fn apply(
    target: &Target,
    host: &HostSnapshot,
    result: Result<(), String>,
    latency: Duration,
    tell: &Tell,
) {
    let events = &tell.events;
    let stats = &host.stats;
    let (passes, fails) = stats.check_streak();
    let before = Streak { passes, fails };
    let (after, verdict) = step(
        before,
        stats.is_bad(),
        result.is_ok(),
        target.check.rise,
        target.check.fall,
    );
    let failure = result.err();
    let reason = failure.as_ref().map(|why| format!("check: {why}"));
    stats.record_check(latency, failure, (after.passes, after.fails));
    match verdict {
        Verdict::Stay => {}
        // A host its agent says is down stays bad until the agent says
        // otherwise (the streak starts again).
        Verdict::Up if stats.agent_state() == AgentState::Down => {}
        Verdict::Up => {
            if stats.mark_up() {
                events.host_back(&target.service, &target.group, &host.name);
            }
        }
        Verdict::Bad => {
            let reason = reason.unwrap_or_default();
            if stats.mark_bad(reason.clone()) {
                events.host_bad(&target.service, &target.group, &host.name, &reason);
                if target.on_marked_down == MarkedDown::Close {
                    close_marked_down(tell, &target.service, &target.group, &host.name, stats);
                }
            }
        }
    }
}

/// `onMarkedDown="close"`: ends the connections and the UDP sessions on
/// the host just marked bad, and logs how many. The relays end sessions on
/// their next turn (a bounded wait, kept off the check's task).
pub(super) fn close_marked_down(
    tell: &Tell,
    service: &str,
    group: &str,
    host: &str,
    stats: &Arc<HostStats>,
) {
    let closed = tell.registry.close_where(CloseRequest::HostDown, |c| {
        Arc::ptr_eq(&c.host_stats, stats)
    });
    let (registry, stats) = (tell.registry.clone(), stats.clone());
    let (service, group, host) = (service.to_string(), group.to_string(), host.to_string());
    tokio::spawn(async move {
        let sessions = tokio::task::spawn_blocking(move || registry.close_sessions_on(&stats))
            .await
            .unwrap_or(0);
        let closed = closed + sessions;
        tracing::info!(
            service,
            group,
            host,
            closed,
            "connections of a host marked bad closed (onMarkedDown)"
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `results` through the machine from an up host; the verdicts.
    fn run(results: &str, rise: u32, fall: u32) -> String {
        let (mut streak, mut bad) = (Streak::default(), false);
        let mut out = String::new();
        for c in results.chars() {
            let (s, v) = match c {
                'D' => {
                    // The data path marks the host bad.
                    bad = true;
                    out.push('d');
                    continue;
                }
                _ => step(streak, bad, c == '+', rise, fall),
            };
            streak = s;
            out.push(match v {
                Verdict::Stay => '.',
                Verdict::Up => 'U',
                Verdict::Bad => 'B',
            });
            match v {
                Verdict::Up => bad = false,
                Verdict::Bad => bad = true,
                Verdict::Stay => {}
            }
        }
        out
    }

    #[test]
    fn a_host_takes_fall_failures_to_go_bad_and_rise_passes_to_come_back() {
        assert_eq!(run("---+++", 2, 3), "..B.U.");
        // A pass in between starts the failures again, a failure the passes.
        assert_eq!(run("--+---+-++", 2, 3), ".....B...U");
        assert_eq!(run("-+-+-+", 1, 1), "BUBUBU");
        // A host the data path marks bad comes back after rise passes.
        assert_eq!(run("++D+++", 3, 3), "..d..U");
    }

    #[test]
    fn a_flapping_host_never_moves_with_rise_and_fall_above_one() {
        assert_eq!(run(&"+-".repeat(20), 2, 2), ".".repeat(40));
    }

    #[tokio::test]
    async fn probes_due_within_one_tick_start_together_and_never_early() {
        for (interval, tick) in [
            (Duration::from_secs(2), MAX_PROBE_TICK),
            (Duration::from_millis(100), Duration::from_millis(5)),
        ] {
            let due = tokio::time::Instant::now() + Duration::from_millis(1000);
            let a = on_tick(due, interval);
            let b = on_tick(due + Duration::from_micros(300), interval);
            for at in [a, b] {
                assert!(at >= due && at <= due + Duration::from_micros(300) + tick);
            }
            // On the same grid: whole ticks apart.
            let apart = a.max(b) - a.min(b);
            assert_eq!(apart.as_nanos() % tick.as_nanos(), 0, "{apart:?}");
        }
    }
}
