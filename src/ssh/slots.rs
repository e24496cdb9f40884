//! How many console scripts run at once: [`Scripts`] counts them for one
//! console server, a [`Slot`] holds one of the [`MAX_SCRIPTS`] places while
//! its script runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Scripts running at once (in the whole console); one more is refused.
pub const MAX_SCRIPTS: usize = 4;

/// The scripts running in one console server.
#[derive(Debug, Default)]
pub(crate) struct Scripts {
    /// How many run now; written by the [`Slot`]s of their threads.
    running: AtomicUsize,
}

impl Scripts {
    pub(crate) fn new() -> Arc<Scripts> {
        Arc::new(Scripts::default())
    }
}

/// One of the [`MAX_SCRIPTS`] places, held by a script's thread until it ends.
pub(crate) struct Slot(Arc<Scripts>);

impl Slot {
    /// A place, if fewer than [`MAX_SCRIPTS`] scripts run.
    pub(crate) fn take(scripts: &Arc<Scripts>) -> Option<Slot> {
        let taken = scripts
            .running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_SCRIPTS).then_some(n + 1)
            });
        taken.ok().map(|_| Slot(scripts.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}
