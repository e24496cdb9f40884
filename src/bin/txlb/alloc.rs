//! The global allocator: mimalloc, asked by size alone wherever the
//! alignment allows.
//!
//! The `mimalloc` crate asks `mi_malloc_aligned` for every allocation. For a
//! block size that is not a power of two, mimalloc serves that call from the
//! size's class only while a page of the class has a free block; otherwise it
//! over-allocates (size + alignment − 1), one class up. A class nothing asks
//! for by size alone never gets a page, so its objects always land in the next
//! one: a 224-byte registry entry took a 256-byte block, among the blocks of
//! that size each connection frees when it parks, whose holes then kept the
//! entries' pages resident (`tests/data_path/parking.rs`, BENCHMARKS.md). Every
//! mimalloc block is aligned to a machine word, so up to that alignment
//! `mi_malloc` is exact.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{mi_free, mi_malloc, mi_realloc, mi_zalloc};

/// The alignment every mimalloc block has: its sizes are whole words.
const WORD: usize = std::mem::size_of::<usize>();

/// mimalloc, by size alone up to [`WORD`] alignment, through the `mimalloc`
/// crate's aligned calls above it.
pub struct Mimalloc;

// SAFETY: each call goes to mimalloc, whose blocks are word-aligned; larger
// alignments take the aligned calls. `mi_free` takes any of its blocks.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            // SAFETY: a plain allocation of `size` bytes.
            unsafe { mi_malloc(layout.size()).cast() }
        } else {
            // SAFETY: the caller's contract, forwarded.
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            // SAFETY: as in `alloc`.
            unsafe { mi_zalloc(layout.size()).cast() }
        } else {
            // SAFETY: the caller's contract, forwarded.
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` is a live block of mimalloc's.
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            // SAFETY: `ptr` is a live block of mimalloc's; word alignment holds.
            unsafe { mi_realloc(ptr.cast::<c_void>(), new_size).cast() }
        } else {
            // SAFETY: the caller's contract, forwarded.
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}
