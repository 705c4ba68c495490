//! A global allocator that keeps, per thread, the net number of heap bytes allocated.
//!
//! rustls does not say how much heap a connection holds, and that figure is one of the
//! things a ceiling test is for (`ws_tls_state_bytes`). Each core measures it exactly: the
//! difference of this thread's counter across a rustls call, minus what our own buffers
//! grew by, is what rustls kept (or gave back) for that connection. A core's thread is the
//! only one that touches its connections, so a per-thread counter needs no atomics: the cost
//! is one add to a thread-local per allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static NET: Cell<i64> = const { Cell::new(0) };
}

fn count(delta: i64) {
    // `try_with`: allocations during thread teardown are simply not counted.
    let _ = NET.try_with(|n| n.set(n.get().wrapping_add(delta)));
}

/// Net heap bytes this thread has allocated so far (only meaningful as a difference).
pub fn net() -> i64 {
    NET.try_with(|n| n.get()).unwrap_or(0)
}

/// The system allocator, counting. Installed by the `ws-server` binary.
pub struct Counting;

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as i64));
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            count(new_size as i64 - layout.size() as i64);
        }
        p
    }
}
