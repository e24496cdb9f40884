//! Data-path workers: threads that each run a single-threaded tokio runtime with
//! their own accept loops (on `SO_REUSEPORT` copies of every listener) and the
//! connections those accept. Nothing is shared between workers but atomics, and
//! the control plane (controller, managers, admin) never runs on their threads.

use std::io;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// How often an otherwise idle worker wakes up; see [`keep_timers_armed`].
const TIMER_TICK: Duration = Duration::from_secs(1);

/// Runs until `stop`, with a timer always due within [`TIMER_TICK`]. Tokio wakes
/// its driver (a write to an eventfd, then one more `epoll_wait`) whenever a new
/// timer is due earlier than every other; with this one armed, a connection's
/// connect timeout (seconds) never is, and costs no system call. Each tick also
/// frees the worker's pooled copy buffers once a burst has ended.
async fn keep_timers_armed(stop: CancellationToken) {
    let mut tick = tokio::time::interval(TIMER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => super::copy::release_pool_if_asked(),
        }
    }
}

/// A set of worker threads with their runtimes.
#[derive(Debug)]
pub struct WorkerPool {
    handles: Vec<Handle>,
    stop: CancellationToken,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl WorkerPool {
    /// Starts `count` worker threads (at least one), named `txlb-worker-N`.
    pub fn start(count: usize) -> io::Result<WorkerPool> {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for index in 0..count.max(1) {
            // Sockets and timers only: the signal and child-process drivers that
            // `enable_all` adds would be checked on every park, for nothing a
            // worker uses (signals are the control plane's).
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("txlb-worker-{index}"))
                    .spawn(move || runtime.block_on(keep_timers_armed(stop)))?,
            );
        }
        Ok(WorkerPool {
            handles,
            stop,
            threads: Mutex::new(threads),
        })
    }

    /// The workers' runtimes.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Stops the workers: their runtimes drop whatever tasks are left.
    pub fn stop(&self) {
        self.stop.cancel();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
