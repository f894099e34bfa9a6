//! Executors: OS threads for the blocking engines, tokio tasks for ringtide; per-worker
//! operation counters and the timed window that reads them.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Warm-up before each timed window.
pub const WARMUP: Duration = Duration::from_millis(500);

/// Runs an engine's futures: on a tokio multi-thread runtime (2 workers) for an async engine,
/// else each worker on an OS thread of its own polling a future that never waits.
pub struct Exec {
    rt: Option<tokio::runtime::Runtime>,
}

pub enum Worker<T> {
    Thread(thread::JoinHandle<T>),
    Task(tokio::task::JoinHandle<T>),
}

impl Exec {
    pub fn new(tokio: bool) -> Self {
        let rt = tokio.then(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime")
        });
        Self { rt }
    }

    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        match &self.rt {
            Some(rt) => rt.block_on(f),
            None => futures::executor::block_on(f),
        }
    }

    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl Future<Output = T> + Send + 'static,
    ) -> Worker<T> {
        match &self.rt {
            Some(rt) => Worker::Task(rt.spawn(f)),
            None => Worker::Thread(thread::spawn(move || futures::executor::block_on(f))),
        }
    }

    pub fn join<T>(&self, workers: Vec<Worker<T>>) -> Vec<T> {
        workers
            .into_iter()
            .map(|w| match w {
                Worker::Thread(h) => h.join().expect("worker thread panicked"),
                Worker::Task(h) => self.block_on(h).expect("worker task panicked"),
            })
            .collect()
    }
}

/// A counter on its own cache line.
#[repr(align(64))]
#[derive(Default)]
pub struct Counter(pub AtomicU64);

pub fn sum(counters: &[Counter]) -> u64 {
    counters.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
}

pub fn counters(n: usize) -> Arc<Vec<Counter>> {
    Arc::new((0..n).map(|_| Counter::default()).collect())
}

/// Lets the workers run through the warm-up, then counts their operations for `secs`.
/// Returns (operations, seconds).
pub fn window(secs: Duration, counters: &[Counter]) -> (f64, f64) {
    thread::sleep(WARMUP);
    let c0 = sum(counters);
    let t0 = Instant::now();
    thread::sleep(secs);
    let c1 = sum(counters);
    ((c1 - c0) as f64, t0.elapsed().as_secs_f64())
}
