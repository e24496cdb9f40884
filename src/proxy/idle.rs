//! The idle sweeper: closes connections that moved no byte for longer than their
//! service allows (or stayed half-closed too long), asks those idle for a second
//! to park (`super::parking`), and forgets stale per-address limit entries. One
//! task for all connections, instead of a timer in each: an idle connection costs
//! no timer, and the data path only stores a timestamp.
//! After a burst of connections has ended it also has the workers free their
//! pooled copy buffers and hands the freed heap back to the kernel, so that RSS
//! follows the load down.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::DataPlane;
use super::parking::PARK_AFTER;
use crate::config::{DEFAULT_FIN_TIMEOUT, DEFAULT_IDLE_TIMEOUT};
use crate::snapshot::Snapshot;
use crate::state::{CloseRequest, clock_ms};

/// Fastest sweep: bounds the work for very short timeouts.
const MIN_PERIOD: Duration = Duration::from_millis(50);
/// Slowest sweep: with long timeouts, a connection overstays by at most this.
const MAX_PERIOD: Duration = Duration::from_secs(1);

/// Sweeps until `stop` is cancelled.
pub(crate) async fn sweep_idle(data: Arc<DataPlane>, stop: CancellationToken) {
    let mut trim = HeapTrim::default();
    let mut limits = Limits::default();
    loop {
        let snapshot = data.snapshots.load_full();
        limits.follow(&snapshot);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period(&snapshot)) => {}
        }
        let snapshot = data.snapshots.load_full();
        limits.follow(&snapshot);
        let now = clock_ms();
        let still_open = RefCell::new(Vec::new());
        data.registry.close_where(CloseRequest::Timeout, |c| {
            let (idle, fin) = limits.of(&c.place.service, &still_open);
            let limit = if c.half_closed.load(Relaxed) {
                fin
            } else {
                idle
            };
            now.saturating_sub(c.last_activity.load(Relaxed)) > limit
        });
        limits.forget_all_but(&still_open.into_inner());
        // Both ways open, and idle a while or open that long: out of the
        // runtime, the lot relaying its bytes while it can write them whole
        // (a while that grows for connections the lot gives back soon). A
        // busy one parks between two exchanges: its task is asked, and
        // parks it only with nothing in flight; one the lot gave back soon
        // (a stream), or that never parks (TLS), parks only once idle.
        let wall_ns = crate::state::unix_nanos(std::time::SystemTime::now());
        let first_wait = PARK_AFTER.as_millis() as u64;
        let parking = data.registry.park_where(|c| {
            let wait = c.parks_after(PARK_AFTER);
            let busy_may_park = wait == first_wait;
            !c.half_closed.load(Relaxed)
                && (now.saturating_sub(c.last_activity.load(Relaxed)) >= wait
                    || busy_may_park && wall_ns.saturating_sub(c.since_ns) / 1_000_000 >= wait)
        });
        for service in snapshot.services() {
            service.limiter.sweep();
        }
        if trim.due(data.registry.len()) | trim.parked(parking) {
            // The workers free their pooled buffers at their next tick.
            super::copy::release_pools();
            // Walks every arena: milliseconds for a large heap, so off the runtime.
            tokio::task::spawn_blocking(release_free_heap);
        }
    }
}

/// The (idle, half-closed) timeouts in milliseconds by service name: the
/// running services', and those of services a reload renamed or removed,
/// kept while connections of theirs are open (a connection keeps the names
/// it was made under), so that those still time out as configured.
#[derive(Debug, Default)]
struct Limits {
    running: HashMap<Arc<str>, (u64, u64)>,
    gone: HashMap<Arc<str>, (u64, u64)>,
}

impl Limits {
    /// Takes the services of `snapshot`; those no longer there keep their
    /// last timeouts.
    fn follow(&mut self, snapshot: &Snapshot) {
        let running: HashMap<Arc<str>, (u64, u64)> = snapshot
            .services()
            .iter()
            .map(|s| {
                let idle = s.options.client_timeout.min(s.options.server_timeout);
                let fin = s.options.client_fin_timeout;
                (
                    s.name.clone(),
                    (idle.as_millis() as u64, fin.as_millis() as u64),
                )
            })
            .collect();
        let before = std::mem::replace(&mut self.running, running);
        for (name, limits) in before {
            if !self.running.contains_key(&name) {
                self.gone.insert(name, limits);
            }
        }
        self.gone.retain(|name, _| !self.running.contains_key(name));
    }

    /// The timeouts of connections of `service`; a service that is gone is
    /// noted in `still_open`. One never seen here (made and gone between two
    /// sweeps) gets the default timeouts: no connection is left without.
    fn of(&self, service: &Arc<str>, still_open: &RefCell<Vec<Arc<str>>>) -> (u64, u64) {
        if let Some(&limits) = self.running.get(service) {
            return limits;
        }
        let Some(&limits) = self.gone.get(service) else {
            return (
                DEFAULT_IDLE_TIMEOUT.as_millis() as u64,
                DEFAULT_FIN_TIMEOUT.as_millis() as u64,
            );
        };
        let mut open = still_open.borrow_mut();
        if !open.contains(service) {
            open.push(service.clone());
        }
        limits
    }

    /// Forgets the services that are gone but `still_open`.
    fn forget_all_but(&mut self, still_open: &[Arc<str>]) {
        self.gone.retain(|name, _| still_open.contains(name));
    }
}

/// A quarter of the shortest timeout, within bounds.
fn period(snapshot: &Snapshot) -> Duration {
    snapshot
        .services()
        .iter()
        .flat_map(|s| {
            [
                s.options.client_timeout,
                s.options.server_timeout,
                s.options.client_fin_timeout,
            ]
        })
        .min()
        .map_or(MAX_PERIOD, |shortest| shortest / 4)
        .clamp(MIN_PERIOD, MAX_PERIOD)
}

/// Open connections a burst must have reached before its end is worth a trim.
const TRIM_PEAK: usize = 1000;

/// Connections that must have parked since the last trim for their freed
/// tasks to be worth one.
const TRIM_PARKED: usize = 256;

/// Decides when to trim: once a burst of at least [`TRIM_PEAK`] connections has
/// fallen to a quarter of its peak, then again each time the open count falls to
/// a quarter of what it was at the last trim, and at zero: a few trims per
/// burst, each returning what the connections closed since the last one freed.
#[derive(Debug, Default)]
struct HeapTrim {
    peak: usize,
    /// The open count at the last trim of the current burst.
    last: Option<usize>,
    /// Connections asked to park at the last sweep: they have parked by the next.
    parking: usize,
}

impl HeapTrim {
    /// After many connections parked (asked at the last sweep), the heap their
    /// tasks held is free: trim once. `asked`: how many were asked this sweep.
    fn parked(&mut self, asked: usize) -> bool {
        std::mem::replace(&mut self.parking, asked) >= TRIM_PARKED
    }

    fn due(&mut self, open: usize) -> bool {
        if self.last.is_some_and(|at| open > at) {
            // Rising again: a new burst.
            self.last = None;
            self.peak = 0;
        }
        self.peak = self.peak.max(open);
        let threshold = match self.last {
            Some(at) => at / 4,
            None if self.peak >= TRIM_PEAK => self.peak / 4,
            None => return false,
        };
        if open > threshold {
            return false;
        }
        self.last = (open > 0).then_some(open);
        if open == 0 {
            self.peak = 0;
        }
        true
    }
}

/// glibc keeps freed memory in its arenas (one per thread that allocated);
/// `malloc_trim` returns the free pages of all of them to the kernel.
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory no allocation refers to.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::HeapTrim;

    #[test]
    fn trims_a_few_times_as_a_burst_ends() {
        let mut trim = HeapTrim::default();
        // Small loads never trim.
        assert!(!(0..900).any(|open| trim.due(open)));
        assert!(!trim.due(0));
        // A burst to 5,000 falling back: at 1,250, then each quarter, then zero.
        assert!(!trim.due(5000));
        assert!(!trim.due(2000));
        assert!(trim.due(1250));
        assert!(!trim.due(1000));
        assert!(trim.due(300));
        assert!(!trim.due(100));
        assert!(trim.due(70));
        assert!(trim.due(0));
        assert!(!trim.due(0));
        // A steady small load after a burst: no trim at every sweep.
        assert!(!trim.due(3000));
        assert!(trim.due(700));
        assert!((0..100).filter(|_| trim.due(100)).count() == 1);
        assert!(!trim.due(100));
        // The next burst trims again.
        assert!(!trim.due(4000));
        assert!(trim.due(10));
    }
}
