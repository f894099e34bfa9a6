//! The I/O executor against plain `std::fs` calls: the same workloads on io_uring, on the thread
//! pool and on blocking `std::fs` calls from OS threads, from 1 and from 16 concurrent tasks.
//!
//! Workloads (4 KiB blocks):
//! - `read_4k_random`: random reads of a 64 MiB file held in the page cache;
//! - `write_4k`: sequential writes, no sync (wrapping at 64 MiB so the file stays in the cache);
//! - `write_4k_fdatasync`: each write followed by an fdatasync (linked in one submission on
//!   io_uring, one job on the pool, `write_at` + `sync_data` on std);
//! - `batch64_fdatasync`: 64 blocks written with one writev and one fdatasync (std: one 256 KiB
//!   `write_at` of the same bytes, pre-joined, + `sync_data`).
//!
//! With 16 tasks each task has its own file, so the figures show the executor's concurrency rather
//! than the file system's per-inode lock. Throughput is in operations (blocks) per second.
//!
//! Run: `cargo bench --bench io` (set `RINGTIDE_BENCH_QUICK=1` for a short smoke run). Files go
//! under `target/tmp` on the disk of the checkout; `RINGTIDE_BENCH_DIR` puts them elsewhere (not on
//! tmpfs, where fdatasync costs nothing).

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringtide::platform::{Backend, DriverOptions, File, IoDriver, OpenOptions};

const BLOCK: usize = 4096;
const FILE_BYTES: u64 = 64 << 20;
const BLOCKS: u64 = FILE_BYTES / BLOCK as u64;
const BATCH: usize = 64;

#[derive(Clone, Copy, Debug)]
enum Engine {
    IoUring,
    ThreadPool,
    Std,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::IoUring => "io_uring",
            Engine::ThreadPool => "threadpool",
            Engine::Std => "std_fs",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Work {
    Read4kRandom,
    Write4k,
    Write4kFdatasync,
    Batch64Fdatasync,
}

impl Work {
    fn name(self) -> &'static str {
        match self {
            Work::Read4kRandom => "read_4k_random",
            Work::Write4k => "write_4k",
            Work::Write4kFdatasync => "write_4k_fdatasync",
            Work::Batch64Fdatasync => "batch64_fdatasync",
        }
    }

    fn synced(self) -> bool {
        matches!(self, Work::Write4kFdatasync | Work::Batch64Fdatasync)
    }

    /// Blocks moved by one iteration.
    fn blocks(self) -> u64 {
        if self == Work::Batch64Fdatasync {
            BATCH as u64
        } else {
            1
        }
    }
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    uring: IoDriver,
    pool: IoDriver,
    _dir: tempfile::TempDir,
    /// One file per task slot, each 64 MiB and written once, so reads hit the page cache.
    files: Vec<PathBuf>,
    block: Bytes,
    batch: Vec<Bytes>,
    joined: Bytes,
}

impl Fixture {
    fn new() -> Fixture {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (uring, pool) = rt.block_on(async {
            let opts = DriverOptions::default().use_env(false);
            (
                IoDriver::new(opts.clone().backend(Backend::IoUring)).expect("io_uring available"),
                IoDriver::new(opts.backend(Backend::ThreadPool)).unwrap(),
            )
        });
        let dir = tempfile::tempdir_in(
            std::env::var_os("RINGTIDE_BENCH_DIR")
                .unwrap_or_else(|| env!("CARGO_TARGET_TMPDIR").into()),
        )
        .expect("temporary directory for bench files");
        let chunk = vec![0xA5u8; 1 << 20];
        let files = (0..16)
            .map(|i| {
                let path = dir.path().join(format!("f{i}"));
                let file = fs::File::create(&path).unwrap();
                for n in 0..FILE_BYTES / chunk.len() as u64 {
                    file.write_all_at(&chunk, n * chunk.len() as u64).unwrap();
                }
                file.sync_all().unwrap();
                path
            })
            .collect();
        let block = Bytes::from(vec![0x5Au8; BLOCK]);
        let batch = vec![block.clone(); BATCH];
        let joined = Bytes::from(vec![0x5Au8; BLOCK * BATCH]);
        Fixture {
            rt,
            uring,
            pool,
            _dir: dir,
            files,
            block,
            batch,
            joined,
        }
    }

    /// Runs `iters` iterations of `work` split over `tasks` concurrent tasks; returns the time.
    fn run(&self, engine: Engine, work: Work, tasks: usize, iters: u64) -> Duration {
        let per_task = iters.div_ceil(tasks as u64);
        match engine {
            Engine::Std => {
                let files: Vec<fs::File> = self.files[..tasks]
                    .iter()
                    .map(|p| {
                        fs::OpenOptions::new()
                            .read(true)
                            .write(true)
                            .open(p)
                            .unwrap()
                    })
                    .collect();
                if work.synced() {
                    // Flush what earlier unsynced benches left dirty, so the first sync does not pay for it.
                    files.iter().for_each(|f| f.sync_data().unwrap());
                }
                let start = Instant::now();
                std::thread::scope(|s| {
                    for (t, file) in files.iter().enumerate() {
                        s.spawn(move || std_task(file, work, t as u64, per_task, self));
                    }
                });
                start.elapsed()
            }
            Engine::IoUring | Engine::ThreadPool => {
                let driver = if matches!(engine, Engine::IoUring) {
                    &self.uring
                } else {
                    &self.pool
                };
                self.rt.block_on(async {
                    let mut files = Vec::new();
                    for path in &self.files[..tasks] {
                        let file = open(driver, path).await;
                        if work.synced() {
                            file.sync_data().await.unwrap();
                        }
                        files.push(file);
                    }
                    let shared = Arc::new((self.block.clone(), self.batch.clone()));
                    let start = Instant::now();
                    let handles: Vec<_> = files
                        .into_iter()
                        .enumerate()
                        .map(|(t, file)| {
                            let shared = shared.clone();
                            tokio::spawn(async move {
                                async_task(&file, work, t as u64, per_task, &shared).await
                            })
                        })
                        .collect();
                    for h in handles {
                        h.await.unwrap();
                    }
                    start.elapsed()
                })
            }
        }
    }
}

async fn open(driver: &IoDriver, path: &Path) -> File {
    driver
        .open(path, &OpenOptions::new().read(true).write(true))
        .await
        .unwrap()
}

/// A cheap deterministic block index sequence (xorshift).
fn next_block(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state % BLOCKS
}

async fn async_task(file: &File, work: Work, task: u64, iters: u64, shared: &(Bytes, Vec<Bytes>)) {
    let mut rng = 0x9E37_79B9_7F4A_7C15 ^ (task + 1);
    let mut read_buf = BytesMut::with_capacity(BLOCK);
    let mut batch = shared.1.clone();
    for i in 0..iters {
        match work {
            Work::Read4kRandom => {
                read_buf.clear();
                let (res, buf) = file
                    .read_exact_at(read_buf, next_block(&mut rng) * BLOCK as u64)
                    .await;
                res.unwrap();
                read_buf = buf;
            }
            Work::Write4k => {
                let (res, _) = file
                    .write_all_at(shared.0.clone(), (i % BLOCKS) * BLOCK as u64)
                    .await;
                res.unwrap();
            }
            Work::Write4kFdatasync => {
                let (res, _) = file
                    .writev_sync_at(vec![shared.0.clone()], (i % BLOCKS) * BLOCK as u64)
                    .await;
                res.unwrap();
            }
            Work::Batch64Fdatasync => {
                let offset = (i % (BLOCKS / BATCH as u64)) * (BLOCK * BATCH) as u64;
                let (res, back) = file.writev_sync_at(batch, offset).await;
                res.unwrap();
                batch = back;
            }
        }
    }
}

fn std_task(file: &fs::File, work: Work, task: u64, iters: u64, fx: &Fixture) {
    let mut rng = 0x9E37_79B9_7F4A_7C15 ^ (task + 1);
    let mut buf = vec![0u8; BLOCK];
    for i in 0..iters {
        match work {
            Work::Read4kRandom => file
                .read_exact_at(&mut buf, next_block(&mut rng) * BLOCK as u64)
                .unwrap(),
            Work::Write4k => file
                .write_all_at(&fx.block, (i % BLOCKS) * BLOCK as u64)
                .unwrap(),
            Work::Write4kFdatasync => {
                file.write_all_at(&fx.block, (i % BLOCKS) * BLOCK as u64)
                    .unwrap();
                file.sync_data().unwrap();
            }
            Work::Batch64Fdatasync => {
                let offset = (i % (BLOCKS / BATCH as u64)) * (BLOCK * BATCH) as u64;
                file.write_all_at(&fx.joined, offset).unwrap();
                file.sync_data().unwrap();
            }
        }
    }
}

fn bench_io(c: &mut Criterion) {
    let fx = Fixture::new();
    let quick = std::env::var_os("RINGTIDE_BENCH_QUICK").is_some();
    for work in [
        Work::Read4kRandom,
        Work::Write4k,
        Work::Write4kFdatasync,
        Work::Batch64Fdatasync,
    ] {
        let mut group = c.benchmark_group(work.name());
        let synced = work.synced();
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(if quick { 100 } else { 500 }));
        group.measurement_time(Duration::from_secs(match (quick, synced) {
            (true, _) => 1,
            (false, true) => 4,
            (false, false) => 2,
        }));
        for tasks in [1usize, 16] {
            group.throughput(Throughput::Elements(work.blocks()));
            for engine in [Engine::IoUring, Engine::ThreadPool, Engine::Std] {
                let id = BenchmarkId::new(engine.name(), format!("{tasks}_tasks"));
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| fx.run(engine, work, tasks, iters))
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench_io);
criterion_main!(benches);
