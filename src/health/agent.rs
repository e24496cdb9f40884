//! Agents (`<agent>`, HAProxy's agent protocol): every `interval` (±10%)
//! each host of a group with an agent is asked, by a task of its own, on its
//! agent port: connect, read one line. Its words, separated by spaces or
//! commas ([`parse`]): `up` or `ready` (in rotation), `drain` (no new
//! connections), `maint` (out, as admin-down), `down` (bad), `NN%` (the
//! weight as a percentage of the configured one; `0%` drains) and
//! `maxconn:N`. Each answer replaces the last: what it leaves out goes back
//! to its default (up, 100%, no `maxconn`). An agent that does not answer
//! changes nothing.
//!
//! The state lives in `HostStats` (`agent_state`, read by every pick; the
//! weight, read by the weighted schedulers as a share, like slow start);
//! `down` marks the host bad, and a check or the hostCheck manager cannot
//! put it back until the agent stops saying it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;

use super::checks::{Tell, close_marked_down, next_due, on_tick};
use super::exchange::{Talk, line_end, trim_line};
use super::probe::address;
use crate::config::{AgentConfig, Escaped, MarkedDown};
use crate::snapshot::Snapshot;
use crate::state::{AgentState, AgentView, HostId, HostSnapshot};

/// Most bytes of an agent's line kept for people to read.
const SAID: usize = 128;

/// The reason a host its agent says is down is bad for.
const AGENT_DOWN: &str = "agent: down";

/// One answer of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The state it gives (up when it names none).
    pub state: AgentState,
    /// The weight in percent (100 when it names none).
    pub weight: u32,
    /// `maxconn:N` (0 when it names none).
    pub maxconn: u32,
}

/// Reads an agent's line: words separated by spaces, tabs or commas,
/// anything after `#` a comment; unknown words are ignored. Of several
/// states, the strongest holds (down, then maint, then drain).
pub(crate) fn parse(line: &[u8]) -> Reply {
    let line = line.split(|&b| b == b'#').next().unwrap_or_default();
    let mut reply = Reply {
        state: AgentState::Up,
        weight: 100,
        maxconn: 0,
    };
    let mut state = AgentState::Up;
    for word in line
        .split(|&b| matches!(b, b' ' | b'\t' | b',' | b'\r' | b'\n'))
        .filter(|w| !w.is_empty())
    {
        let word = word.to_ascii_lowercase();
        let said = match word.as_slice() {
            b"up" | b"ready" => AgentState::Up,
            b"drain" => AgentState::Drain,
            b"maint" => AgentState::Maint,
            b"down" | b"fail" | b"stopped" => AgentState::Down,
            w => {
                if let Some(pct) = w.strip_suffix(b"%") {
                    if let Some(n) = number(pct) {
                        reply.weight = n.min(100);
                    }
                } else if let Some(n) = w.strip_prefix(b"maxconn:").and_then(number) {
                    reply.maxconn = n;
                }
                continue;
            }
        };
        state = state.max(said);
    }
    if state == AgentState::Up && reply.weight == 0 {
        state = AgentState::Drain;
    }
    reply.state = state;
    reply
}

/// A whole number of at most 9 digits.
fn number(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// What a host's agent task asks: when any of it changes, the task starts
/// again.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    service: Arc<str>,
    group: Arc<str>,
    /// The host's name, which its events tell: a renamed host keeps its
    /// identity and counters, and its task starts again under the new name.
    host: Arc<str>,
    agent: AgentConfig,
    port: u16,
    address: crate::config::HostAddress,
    on_marked_down: MarkedDown,
}

/// Runs the agents of the running configuration until `shutdown`.
pub(crate) async fn run(
    snapshots: Arc<ArcSwap<Snapshot>>,
    tell: Tell,
    shutdown: CancellationToken,
) {
    let mut running: HashMap<HostId, (Target, CancellationToken)> = HashMap::new();
    super::follow_snapshots(&snapshots, &shutdown, |snapshot| {
        follow(snapshot, &mut running, &tell, &shutdown)
    })
    .await;
}

/// Brings the host tasks in line with `snapshot`. A host whose agent goes
/// away (removed, or its group's agent removed) gets back its whole weight
/// and state.
fn follow(
    snapshot: &Snapshot,
    running: &mut HashMap<HostId, (Target, CancellationToken)>,
    tell: &Tell,
    shutdown: &CancellationToken,
) {
    let mut wanted: HashMap<HostId, (Target, HostSnapshot)> = HashMap::new();
    for service in snapshot.services() {
        for group in &service.groups {
            let Some(agent) = &group.agent else { continue };
            for (i, host) in group.hosts.iter().enumerate() {
                let Some(port) = agent.ports.get(i).copied().flatten() else {
                    continue;
                };
                let target = Target {
                    service: service.name.clone(),
                    group: group.name.clone(),
                    host: host.name.clone(),
                    agent: agent.config.clone(),
                    port,
                    address: host.address.clone(),
                    on_marked_down: group.options.on_marked_down,
                };
                wanted.insert(host.id, (target, host.clone()));
            }
        }
    }
    running.retain(|id, (target, stop)| {
        let keep = wanted.get(id).is_some_and(|(t, _)| t == target);
        if !keep {
            stop.cancel();
        }
        keep
    });
    // Hosts still in the snapshot whose agent went: nothing holds them out.
    for service in snapshot.services() {
        for group in service.groups.iter().filter(|g| g.agent.is_none()) {
            for host in &group.hosts {
                if host.stats.agent_view().is_some() {
                    forget(host, &service.name, &group.name, tell);
                }
            }
        }
    }
    for (id, (target, host)) in wanted {
        if running.contains_key(&id) {
            continue;
        }
        let stop = shutdown.child_token();
        tokio::spawn(watch(target.clone(), host, tell.clone(), stop.clone()));
        running.insert(id, (target, stop));
    }
}

/// A host whose group no longer has an agent: its state as if the agent
/// said `up`, and no agent shown.
fn forget(host: &HostSnapshot, service: &str, group: &str, tell: &Tell) {
    let stats = &host.stats;
    if stats.set_agent(AgentState::Up, 100, 0) {
        say(tell, service, group, &host.name, AgentState::Up, 100, 0);
    }
    if stats.bad_info().is_some_and(|b| b.reason == AGENT_DOWN) && stats.mark_up() {
        tell.events.host_back(service, group, &host.name);
    }
    stats.clear_agent_view();
}

/// Asks one host's agent until `stop`: the first time within one interval
/// (spread at random), then every interval.
async fn watch(target: Target, host: HostSnapshot, tell: Tell, stop: CancellationToken) {
    let interval = target.agent.interval;
    let mut due = Instant::now() + interval.mul_f64(fastrand::f64());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(on_tick(due, interval)) => {}
        }
        due = next_due(due, interval);
        let deadline = Instant::now() + target.agent.timeout;
        let answer = tokio::select! {
            _ = stop.cancelled() => return,
            a = timeout_at(deadline + Duration::from_millis(100), ask(&target, &host, deadline)) => {
                a.unwrap_or_else(|_| Err(format!("timeout after {} s", target.agent.timeout.as_secs_f64())))
            }
        };
        apply(&target, &host, answer, &tell);
    }
}

/// Connects to the host's agent and reads its line (a line cut by the
/// agent closing counts).
async fn ask(target: &Target, host: &HostSnapshot, deadline: Instant) -> Result<Vec<u8>, String> {
    let addr = address(host).await?;
    let addr = SocketAddr::new(addr.ip(), target.port);
    let timeout = target.agent.timeout;
    let late = || format!("timeout after {} s", timeout.as_secs_f64());
    let stream = timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect to {addr}: {}", late()))?
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let mut talk = Talk::new(stream, addr, deadline, timeout);
    match talk.read_until(line_end).await {
        Ok(n) => Ok(trim_line(talk.take(n)).to_vec()),
        Err((got, why)) if why == " then EOF" && !got.is_empty() => Ok(got),
        Err((got, why)) => Err(format!(
            "no line from {addr}: got {}{why}",
            super::exchange::quote(&got)
        )),
    }
}

/// Applies an agent's answer to the host (nothing but the shown failure when
/// it did not answer), with events on what changed.
fn apply(target: &Target, host: &HostSnapshot, answer: Result<Vec<u8>, String>, tell: &Tell) {
    let stats = &host.stats;
    let line = match answer {
        Ok(line) => line,
        Err(why) => {
            let mut view = stats.agent_view().unwrap_or(AgentView {
                state: AgentState::Up,
                weight_percent: 100,
                maxconn: 0,
                said: String::new(),
                failure: None,
            });
            view.failure = Some(why);
            stats.set_agent_view(view);
            return;
        }
    };
    let reply = parse(&line);
    let before = stats.agent_view();
    let said = Escaped(line[..line.len().min(SAID)].to_vec()).to_text();
    stats.set_agent_view(AgentView {
        state: reply.state,
        weight_percent: reply.weight,
        maxconn: reply.maxconn,
        said,
        failure: None,
    });
    stats.set_agent(reply.state, reply.weight, reply.maxconn);
    let (service, group, name) = (&*target.service, &*target.group, &*host.name);
    let changed = before.as_ref().is_none_or(|b| {
        (b.state, b.weight_percent, b.maxconn) != (reply.state, reply.weight, reply.maxconn)
    });
    if changed {
        say(
            tell,
            service,
            group,
            name,
            reply.state,
            reply.weight,
            reply.maxconn,
        );
    }
    if reply.state == AgentState::Down {
        if stats.mark_bad(AGENT_DOWN) {
            tell.events.host_bad(service, group, name, AGENT_DOWN);
            if target.on_marked_down == MarkedDown::Close {
                close_marked_down(tell, service, group, name, stats);
            }
        }
    } else if stats.bad_info().is_some_and(|b| b.reason == AGENT_DOWN)
        // HAProxy's rule: `up` puts a host back only if its checks agree.
        && stats.check_view().is_none_or(|c| c.last_failure.is_none())
        && stats.mark_up()
    {
        tell.events.host_back(service, group, name);
    }
}

/// The event of an agent saying something new.
fn say(
    tell: &Tell,
    service: &str,
    group: &str,
    host: &str,
    state: AgentState,
    weight: u32,
    maxconn: u32,
) {
    tell.events.emit(crate::events::Event::AgentSaid {
        service: service.to_string(),
        group: group.to_string(),
        host: host.to_string(),
        state: state.name().to_string(),
        weight_percent: weight,
        maxconn,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(state: AgentState, weight: u32, maxconn: u32) -> Reply {
        Reply {
            state,
            weight,
            maxconn,
        }
    }

    #[test]
    fn agent_lines_read_as_haproxy_reads_them() {
        use AgentState::*;
        assert_eq!(parse(b"up"), reply(Up, 100, 0));
        assert_eq!(parse(b"ready\n"), reply(Up, 100, 0));
        assert_eq!(parse(b"drain"), reply(Drain, 100, 0));
        assert_eq!(parse(b"MAINT"), reply(Maint, 100, 0));
        assert_eq!(parse(b"down#disk full"), reply(Down, 100, 0));
        assert_eq!(parse(b"50%"), reply(Up, 50, 0));
        assert_eq!(parse(b"up, 75% maxconn:30\r\n"), reply(Up, 75, 30));
        assert_eq!(parse(b"0%"), reply(Drain, 0, 0));
        assert_eq!(parse(b"250%"), reply(Up, 100, 0));
        assert_eq!(parse(b"drain down ready"), reply(Down, 100, 0));
        // Garbage changes nothing but is an answer: up, whole weight.
        assert_eq!(
            parse(b"\xff\x00 x% maxconn:-1 99999999999%"),
            reply(Up, 100, 0)
        );
        assert_eq!(parse(b""), reply(Up, 100, 0));
    }
}
