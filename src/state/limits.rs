//! Per-service admission: the service-wide connection limit with its bounded queue,
//! and per-client-address limits (concurrent connections, new connections per
//! second). Carried across snapshots by service name, like the counters.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a client was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The service is at `maxconn` and its queue is full.
    QueueFull,
    /// The client waited `queueTimeout` without a slot freeing.
    QueueTimeout,
    /// The client address has `sourceMaxconn` connections open.
    SourceConnections,
    /// The client address opened more than `sourceRate` connections this second.
    SourceRate,
}

impl Refusal {
    /// A short reason for logs.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::QueueFull => "service at maxconn and queue full",
            Refusal::QueueTimeout => "waited too long in the service queue",
            Refusal::SourceConnections => "too many connections from this address",
            Refusal::SourceRate => "too many new connections per second from this address",
        }
    }
}

/// The service-wide slots while `maxconn` is set.
#[derive(Debug)]
struct Slots {
    max: u32,
    semaphore: Arc<Semaphore>,
    /// Clients waiting for a slot.
    waiting: AtomicU32,
}

/// One client address's recent activity.
#[derive(Debug, Default)]
struct Source {
    open: u32,
    /// The second (on the limiter's clock) `count` belongs to.
    second: u64,
    count: u32,
}

/// Admission state of one service. Read and written by connection tasks at
/// accept and close; `configure` is called by the controller.
#[derive(Debug)]
pub struct Limiter {
    /// Replaced (not resized) when `maxconn` changes: connections holding a
    /// permit of the old pool release it there, harmlessly.
    slots: ArcSwapOption<Slots>,
    /// Only addresses with open connections or activity this second; a sharded
    /// map so accepts from many clients don't contend.
    sources: DashMap<IpAddr, Source>,
    clock: Instant,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            slots: ArcSwapOption::empty(),
            sources: DashMap::new(),
            clock: Instant::now(),
        }
    }
}

/// A client admitted under the service limits; releases its place on drop.
/// One pointer, boxed only when it holds a place: most services set no limits,
/// and every open (and parked) connection keeps one.
#[derive(Debug)]
pub struct Admission {
    _held: Option<Box<Held>>,
}

/// The places an admitted client holds.
#[derive(Debug, Default)]
struct Held {
    _slot: Option<OwnedSemaphorePermit>,
    source: Option<(Arc<Limiter>, IpAddr)>,
}

impl Admission {
    fn of(held: Held) -> Admission {
        if held._slot.is_none() && held.source.is_none() {
            return Admission { _held: None };
        }
        Admission {
            _held: Some(Box::new(held)),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some((limiter, ip)) = self.source.take()
            && let Some(mut source) = limiter.sources.get_mut(&ip)
        {
            source.open = source.open.saturating_sub(1);
        }
    }
}

impl Limiter {
    /// Sets the service-wide limit (0 = none).
    pub fn configure(&self, maxconn: u32) {
        let current = self.slots.load().as_ref().map_or(0, |s| s.max);
        if current == maxconn {
            return;
        }
        self.slots.store((maxconn > 0).then(|| {
            Arc::new(Slots {
                max: maxconn,
                semaphore: Arc::new(Semaphore::new(maxconn as usize)),
                waiting: AtomicU32::new(0),
            })
        }));
    }

    /// Admits a client from `ip`: per-address limits first (cheap, no wait), then
    /// a service slot, waiting in the queue (at most `queue` clients, each at most
    /// `queue_timeout`).
    pub async fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: (u32, u32),
        queue: u32,
        queue_timeout: Duration,
    ) -> Result<Admission, Refusal> {
        let (source_maxconn, source_rate) = limits;
        let mut admission = Held::default();
        if source_maxconn > 0 || source_rate > 0 {
            let second = self.clock.elapsed().as_secs();
            let mut source = self.sources.entry(ip).or_default();
            if source.second != second {
                source.second = second;
                source.count = 0;
            }
            if source_rate > 0 && source.count >= source_rate {
                return Err(Refusal::SourceRate);
            }
            if source_maxconn > 0 && source.open >= source_maxconn {
                return Err(Refusal::SourceConnections);
            }
            source.count += 1;
            source.open += 1;
            drop(source);
            admission.source = Some((self.clone(), ip));
        }
        let Some(slots) = self.slots.load_full() else {
            return Ok(Admission::of(admission));
        };
        if let Ok(permit) = slots.semaphore.clone().try_acquire_owned() {
            admission._slot = Some(permit);
            return Ok(Admission::of(admission));
        }
        if slots.waiting.fetch_add(1, Relaxed) >= queue {
            slots.waiting.fetch_sub(1, Relaxed);
            return Err(Refusal::QueueFull);
        }
        let waited =
            tokio::time::timeout(queue_timeout, slots.semaphore.clone().acquire_owned()).await;
        slots.waiting.fetch_sub(1, Relaxed);
        match waited {
            Ok(Ok(permit)) => {
                admission._slot = Some(permit);
                Ok(Admission::of(admission))
            }
            _ => Err(Refusal::QueueTimeout),
        }
    }

    /// A place for a connection the previous process admitted (an upgrade):
    /// taken without a wait or a refusal, since the connection is open
    /// already, so that new clients count it. Its address's open count
    /// (when `per_source`) and a service slot while one is free: past
    /// `maxconn` (a new configuration that lowered it) it holds none.
    pub fn hold(self: &Arc<Self>, ip: IpAddr, per_source: bool) -> Admission {
        let mut admission = Held::default();
        if per_source {
            self.sources.entry(ip).or_default().open += 1;
            admission.source = Some((self.clone(), ip));
        }
        if let Some(slots) = self.slots.load_full() {
            admission._slot = slots.semaphore.clone().try_acquire_owned().ok();
        }
        Admission::of(admission)
    }

    /// Forgets addresses with nothing open and no activity this second.
    pub fn sweep(&self) {
        let second = self.clock.elapsed().as_secs();
        self.sources.retain(|_, s| s.open > 0 || s.second == second);
    }

    /// Clients waiting for a service slot now.
    #[cfg(test)]
    pub fn queued(&self) -> u32 {
        self.slots
            .load()
            .as_ref()
            .map_or(0, |s| s.waiting.load(Relaxed))
    }
}

/// `max`, or the `1/divisor` share of the process's descriptor limit when
/// that is less (at least 4).
pub fn descriptor_share(max: usize, divisor: u64) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if !known || limit.rlim_cur == libc::RLIM_INFINITY {
        return max;
    }
    let share = usize::try_from(limit.rlim_cur / divisor).unwrap_or(usize::MAX);
    share.clamp(4, max.max(4)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn a_held_place_counts_against_new_clients_and_is_never_refused() {
        let l = Arc::new(Limiter::default());
        l.configure(1);
        let held = l.hold(IP, true);
        // Past every limit, a moved connection still holds (no slot left).
        let over = l.hold(IP, true);
        assert_eq!(
            l.admit(IP, (2, 0), 0, Duration::ZERO).await.unwrap_err(),
            Refusal::SourceConnections
        );
        drop(over);
        assert_eq!(
            l.admit(IP, (2, 0), 0, Duration::ZERO).await.unwrap_err(),
            Refusal::QueueFull
        );
        drop(held);
        assert!(l.admit(IP, (2, 0), 0, Duration::ZERO).await.is_ok());
    }

    #[tokio::test]
    async fn per_source_connections_and_rate() {
        let l = Arc::new(Limiter::default());
        let a = l.admit(IP, (2, 0), 0, Duration::ZERO).await.unwrap();
        let _b = l.admit(IP, (2, 0), 0, Duration::ZERO).await.unwrap();
        assert_eq!(
            l.admit(IP, (2, 0), 0, Duration::ZERO).await.unwrap_err(),
            Refusal::SourceConnections
        );
        drop(a);
        let _c = l.admit(IP, (2, 0), 0, Duration::ZERO).await.unwrap();
        let other = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
        // Ten attempts inside one second of the limiter's clock: five pass.
        loop {
            let second = l.clock.elapsed().as_secs();
            let mut refused = 0;
            for _ in 0..10 {
                match l.admit(other, (0, 5), 0, Duration::ZERO).await {
                    Err(why) => {
                        assert_eq!(why, Refusal::SourceRate);
                        refused += 1;
                    }
                    Ok(a) => drop(a),
                }
            }
            if l.clock.elapsed().as_secs() == second {
                assert_eq!(refused, 5);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn service_queue_waits_then_refuses() {
        let l = Arc::new(Limiter::default());
        l.configure(1);
        let first = l
            .admit(IP, (0, 0), 1, Duration::from_millis(50))
            .await
            .unwrap();
        // Queue of one: the second waits and times out, a third concurrent one is
        // refused at once.
        let waiter = {
            let l = l.clone();
            tokio::spawn(async move {
                l.admit(IP, (0, 0), 1, Duration::from_millis(300))
                    .await
                    .map(|_| ())
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(l.queued(), 1);
        assert_eq!(
            l.admit(IP, (0, 0), 1, Duration::from_millis(50))
                .await
                .unwrap_err(),
            Refusal::QueueFull
        );
        drop(first); // the waiter gets the slot
        assert!(waiter.await.unwrap().is_ok());
        let _held = l
            .admit(IP, (0, 0), 1, Duration::from_millis(50))
            .await
            .unwrap();
        let _held2_err = l.admit(IP, (0, 0), 1, Duration::from_millis(50)).await;
        assert_eq!(_held2_err.unwrap_err(), Refusal::QueueTimeout);
    }
}
