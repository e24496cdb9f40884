//! Memory metering of `script` threads: a global allocator wrapper that counts
//! the bytes a metered thread holds, so a script holding more than its budget
//! is stopped between two of its operations, whatever holds the memory
//! (strings, arrays, maps, variables, map keys, output).

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;

/// The counter of a thread that is not metered.
const OFF: isize = isize::MIN;

thread_local! {
    /// Bytes allocated minus bytes freed on this thread since its meter
    /// started, or [`OFF`]. Written and read by this thread only: a `Cell`,
    /// const-initialised and without destructor, so the allocator may touch it
    /// at any time.
    static HELD: Cell<isize> = const { Cell::new(OFF) };
}

/// A global allocator that meters the threads running scripts and passes
/// everything to `A`. Other threads pay one thread-local read per allocation.
/// The `txlb` binary installs it around mimalloc; an application embedding the
/// SSH console installs it to bound its scripts' total memory (without it,
/// only Rhai's per-value limits apply):
///
/// ```ignore
/// #[global_allocator]
/// static GLOBAL: txlb::ssh::MeteredAlloc<std::alloc::System> =
///     txlb::ssh::MeteredAlloc(std::alloc::System);
/// ```
#[derive(Debug, Default)]
pub struct MeteredAlloc<A>(pub A);

#[inline]
fn charge(bytes: isize) {
    // try_with: nothing to count while the thread's locals are torn down.
    let _ = HELD.try_with(|held| {
        let now = held.get();
        if now != OFF {
            held.set(now.saturating_add(bytes));
        }
    });
}

// SAFETY: every call is passed to `A` unchanged; the wrapper only counts.
unsafe impl<A: GlobalAlloc> GlobalAlloc for MeteredAlloc<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        charge(layout.size() as isize);
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.0.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(layout.size() as isize);
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        charge(-(layout.size() as isize));
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        charge(new_size as isize - layout.size() as isize);
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

/// Meters the current thread while it lives.
pub(crate) struct Meter(());

impl Meter {
    /// Starts metering this thread; `None` when the global allocator is not a
    /// [`MeteredAlloc`] (nothing would be counted).
    pub(crate) fn start() -> Option<Meter> {
        HELD.with(|h| h.set(0));
        let probe = std::hint::black_box(vec![0u8; 64]);
        let counted = HELD.with(Cell::get) >= 64;
        drop(probe);
        if counted {
            Some(Meter(()))
        } else {
            HELD.with(|h| h.set(OFF));
            None
        }
    }

    /// Bytes this thread holds beyond what it held when the meter started.
    pub(crate) fn held(&self) -> isize {
        HELD.with(Cell::get)
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        HELD.with(|h| h.set(OFF));
    }
}
