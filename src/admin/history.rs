//! Per-host throughput history: a task samples every host's byte counters once a
//! second into a bounded ring, for the running page's graphs and current rates.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{AdminState, Inner};

/// How often the counters are sampled.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(1);
/// Samples kept per host (one minute at [`SAMPLE_PERIOD`]).
pub const HISTORY_LEN: usize = 60;

/// (service, group, host).
pub(crate) type HostKey = (String, String, String);

/// One sample: bytes per second in each direction over the last period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Rate {
    /// Client → host, bytes per second.
    pub bytes_in: f64,
    /// Host → client, bytes per second.
    pub bytes_out: f64,
}

struct Ring {
    last: (u64, u64),
    samples: VecDeque<Rate>,
}

/// The rings of every host. Written by the sampler once a second, read by page and
/// event requests; a mutex is fine at that rate.
#[derive(Default)]
pub(crate) struct History {
    rings: Mutex<HashMap<HostKey, Ring>>,
}

impl History {
    /// Records counters read `elapsed` after the previous sample; hosts not in
    /// `now` are forgotten.
    pub(crate) fn record(&self, now: Vec<(HostKey, u64, u64)>, elapsed: Duration) {
        let secs = elapsed.as_secs_f64().max(1e-3);
        let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::with_capacity(now.len());
        for (key, bytes_in, bytes_out) in now {
            let mut ring = rings.remove(&key).unwrap_or(Ring {
                last: (bytes_in, bytes_out),
                samples: VecDeque::with_capacity(HISTORY_LEN),
            });
            let rate = Rate {
                bytes_in: bytes_in.saturating_sub(ring.last.0) as f64 / secs,
                bytes_out: bytes_out.saturating_sub(ring.last.1) as f64 / secs,
            };
            if ring.samples.len() == HISTORY_LEN {
                ring.samples.pop_front();
            }
            ring.samples.push_back(rate);
            ring.last = (bytes_in, bytes_out);
            next.insert(key, ring);
        }
        *rings = next;
    }

    /// The samples of one host, oldest first.
    pub(crate) fn samples(&self, key: &HostKey) -> Vec<Rate> {
        let rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        rings
            .get(key)
            .map(|r| r.samples.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// Starts the sampler on the current runtime. It holds the state weakly: it stops
/// when the router is dropped or the balancer shuts down.
pub(crate) fn spawn_sampler(state: &AdminState) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak: Weak<Inner> = Arc::downgrade(&state.0);
    let stop = state.handle.shutdown_token();
    runtime.spawn(async move {
        let mut ticks = tokio::time::interval(SAMPLE_PERIOD);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let Some(inner) = weak.upgrade() else { return };
            let elapsed = last.elapsed();
            last = Instant::now();
            // Every host is read: with many thousands that takes a while, so on
            // the blocking pool, never holding up the admin's requests.
            let sampled = tokio::task::spawn_blocking(move || {
                let now = inner
                    .handle
                    .stats()
                    .services
                    .into_iter()
                    .flat_map(|s| {
                        s.groups.into_iter().flat_map(move |g| {
                            let service = s.name.clone();
                            g.hosts.into_iter().map(move |h| {
                                (
                                    (service.clone(), g.name.clone(), h.name),
                                    h.stats.bytes_in,
                                    h.stats.bytes_out,
                                )
                            })
                        })
                    })
                    .collect();
                inner.history.record(now, elapsed);
            });
            if sampled.await.is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(h: &str) -> HostKey {
        ("s".into(), "g".into(), h.into())
    }

    #[test]
    fn rates_are_deltas_and_the_ring_is_bounded() {
        let h = History::default();
        h.record(vec![(key("a"), 100, 10)], SAMPLE_PERIOD);
        assert_eq!(h.samples(&key("a")), vec![Rate::default()]);
        h.record(vec![(key("a"), 300, 20)], Duration::from_secs(2));
        assert_eq!(
            h.samples(&key("a"))[1],
            Rate {
                bytes_in: 100.0,
                bytes_out: 5.0
            }
        );
        for i in 0..200 {
            h.record(vec![(key("a"), 300 + i, 20)], SAMPLE_PERIOD);
        }
        assert_eq!(h.samples(&key("a")).len(), HISTORY_LEN);
        h.record(vec![(key("b"), 1, 1)], SAMPLE_PERIOD);
        assert!(h.samples(&key("a")).is_empty());
    }
}
