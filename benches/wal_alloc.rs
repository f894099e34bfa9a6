//! Heap allocations per append, counted by a global allocator wrapper: the cost of the append path
//! that the time figures hide. Prints one line per workload; a measurement, not a test.
//!
//! Run: `cargo bench --bench wal_alloc`.

#![allow(clippy::print_stdout, reason = "a bench reports its figures")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use ringtide::wal::{SyncPolicy, Wal, WalOptions};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temporary directory");
        for (name, policy) in [("None", SyncPolicy::None), ("Immediate", SyncPolicy::Immediate)] {
            let wal = Wal::open(dir.path().join(name), WalOptions::default().sync_policy(policy)).await.expect("open");
            let payload = Bytes::from(vec![7u8; 256]);
            for _ in 0..1000 {
                wal.append(payload.clone()).await.expect("warm-up append");
            }
            let n = 20_000u64;
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            for _ in 0..n {
                wal.append(payload.clone()).await.expect("append");
            }
            let per_append = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / n as f64;
            println!("wal append 256 B, 1 task, SyncPolicy::{name}: {per_append:.1} heap allocations per append (all threads, I/O included)");
            wal.close().await.expect("close");
        }
    });
}
