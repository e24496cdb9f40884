//! The idle sweeper: closes connections that moved no byte for longer than their
//! service allows (or stayed half-closed too long), and forgets stale per-address
//! limit entries. One task for all connections, instead of a timer in each: an
//! idle connection costs no timer, and the data path only stores a timestamp.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::DataPlane;
use crate::state::{CloseRequest, Snapshot, clock_ms};

/// Fastest sweep: bounds the work for very short timeouts.
const MIN_PERIOD: Duration = Duration::from_millis(50);
/// Slowest sweep: with long timeouts, a connection overstays by at most this.
const MAX_PERIOD: Duration = Duration::from_secs(1);

/// Sweeps until `stop` is cancelled.
pub(crate) async fn sweep_idle(data: Arc<DataPlane>, stop: CancellationToken) {
    loop {
        let snapshot = data.snapshots.load_full();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period(&snapshot)) => {}
        }
        let snapshot = data.snapshots.load_full();
        // (idle, half-closed) limits in milliseconds, by service.
        let limits: HashMap<&str, (u64, u64)> = snapshot
            .services
            .iter()
            .map(|s| {
                let idle = s.options.client_timeout.min(s.options.server_timeout);
                (
                    &*s.name,
                    (
                        idle.as_millis() as u64,
                        s.options.client_fin_timeout.as_millis() as u64,
                    ),
                )
            })
            .collect();
        let now = clock_ms();
        data.registry.close_where(CloseRequest::Timeout, |c| {
            let Some(&(idle, fin)) = limits.get(&*c.service) else {
                return false;
            };
            let limit = if c.half_closed.load(Relaxed) {
                fin
            } else {
                idle
            };
            now.saturating_sub(c.last_activity.load(Relaxed)) > limit
        });
        for service in &snapshot.services {
            service.limiter.sweep();
        }
    }
}

/// A quarter of the shortest timeout, within bounds.
fn period(snapshot: &Snapshot) -> Duration {
    snapshot
        .services
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
