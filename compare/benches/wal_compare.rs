//! ringtide's write-ahead log against okaywal, fjall and redb, all in one process run so that the
//! ratios are comparable. Prints markdown tables to stdout.
//!
//! Run: `cargo bench --manifest-path compare/Cargo.toml --bench wal_compare` (from the repository
//! root).
//! `COMPARE_SECS` sets the measured time of each row (default 3 s, after a 0.5 s warm-up);
//! `COMPARE_READ_MB` sets the size of the read-back log (default 1024 MiB, the size the goal names).
//! `COMPARE_ONLY=open-read` runs only the rows of opening a small log and of random reads.
//! Files go in a temporary directory under `compare/target/`, on the disk of the checkout.

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use ringtide::wal::{Lsn, SyncPolicy, Wal, WalOptions, WalStats};
use ringtide_compare::fmt::num;
use tokio::runtime::Runtime;

/// Bytes per entry.
const ENTRY: usize = 256;
/// Writer counts of the durable rows.
const WRITERS: [usize; 3] = [1, 16, 64];
/// Entries per `append_batch` call.
const BATCH: usize = 1000;
/// The fsyncs timed for the ceiling.
const CEILING_SYNCS: u64 = 2000;
/// Warm-up before each measured window.
const WARMUP: Duration = Duration::from_millis(500);
/// The memory-bound row's fixed length and sampling interval.
const MEM_SECS: Duration = Duration::from_secs(3);
const MEM_SAMPLE: Duration = Duration::from_millis(100);

const MIB: f64 = (1 << 20) as f64;

struct Cfg {
    secs: Duration,
    read_mib: u64,
    root: PathBuf,
    payload: Bytes,
}

impl Cfg {
    /// A fresh, empty directory for one row.
    fn dir(&self, name: &str) -> PathBuf {
        let d = self.root.join(name);
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("create row dir");
        d
    }
}

/// A counter on its own cache line.
#[repr(align(64))]
#[derive(Default)]
struct Counter(AtomicU64);

fn sum(counters: &[Counter]) -> u64 {
    counters.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
}

/// One measured window.
#[derive(Clone, Copy)]
struct Measure {
    /// Operations per second.
    rate: f64,
    /// CPU time of the whole process (user + system, every thread) per operation, µs.
    cpu_us_per_op: f64,
    /// CPU time of the whole process over the window, in cores (2 = both cores busy).
    cores: f64,
}

/// User + system CPU seconds of the whole process so far.
fn cpu_secs() -> f64 {
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage` for the duration of the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Counts the operations finished and the CPU spent from now for `window`.
fn measure(window: Duration, counters: &[Counter]) -> Measure {
    let c0 = sum(counters);
    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    thread::sleep(window);
    let c1 = sum(counters);
    let cpu = cpu_secs() - cpu0;
    let elapsed = t0.elapsed().as_secs_f64();
    let ops = (c1 - c0) as f64;
    Measure {
        rate: ops / elapsed,
        cpu_us_per_op: if ops > 0.0 { cpu * 1e6 / ops } else { 0.0 },
        cores: cpu / elapsed,
    }
}

/// Lets the workers run through the warm-up, then measures for `secs`.
fn timed(secs: Duration, counters: &[Counter]) -> Measure {
    thread::sleep(WARMUP);
    measure(secs, counters)
}

/// Runs `op(thread, seq)` in a closed loop from `n` OS threads.
fn run_threads(n: usize, secs: Duration, op: Arc<dyn Fn(usize, u64) + Send + Sync>) -> Measure {
    let counters: Arc<Vec<Counter>> = Arc::new((0..n).map(|_| Counter::default()).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..n)
        .map(|t| {
            let (counters, stop, op) = (counters.clone(), stop.clone(), op.clone());
            thread::spawn(move || {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    op(t, seq);
                    seq += 1;
                    counters[t].0.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let rate = timed(secs, &counters);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("worker thread panicked");
    }
    rate
}

/// Distinct, ordered keys per thread.
fn key(thread: usize, seq: u64) -> u64 {
    ((thread as u64) << 40) | seq
}

// ---------------------------------------------------------------------------------------------
// ringtide

/// What one ringtide row measured.
struct RtResult {
    m: Measure,
    stats: WalStats,
    max_rss_kib: Option<u64>,
}

/// `n` tokio tasks each awaiting one `append` (or one `append_batch` of [`BATCH`] entries) at a
/// time. Returns calls per second. With `sample_rss`, the window is [`MEM_SECS`] without
/// warm-up, and VmRSS is sampled every [`MEM_SAMPLE`].
fn ringtide_run(
    rt: &Runtime,
    cfg: &Cfg,
    dir: &Path,
    policy: SyncPolicy,
    n: usize,
    batch: bool,
    sample_rss: bool,
) -> RtResult {
    let wal = rt
        .block_on(Wal::open(dir, WalOptions::default().sync_policy(policy)))
        .expect("open ringtide");
    let counters: Arc<Vec<Counter>> = Arc::new((0..n).map(|_| Counter::default()).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..n)
        .map(|t| {
            let (wal, counters, stop) = (wal.clone(), counters.clone(), stop.clone());
            let payload = cfg.payload.clone();
            rt.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if batch {
                        wal.append_batch(std::iter::repeat_n(payload.clone(), BATCH))
                            .await
                            .expect("append_batch");
                    } else {
                        wal.append(payload.clone()).await.expect("append");
                    }
                    counters[t].0.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let (m, max_rss_kib) = if sample_rss {
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = {
            let sampling = sampling.clone();
            thread::spawn(move || {
                let mut max = 0;
                while sampling.load(Ordering::Relaxed) {
                    max = max.max(rss_kib());
                    thread::sleep(MEM_SAMPLE);
                }
                max
            })
        };
        let m = measure(MEM_SECS, &counters);
        sampling.store(false, Ordering::Relaxed);
        (m, Some(sampler.join().expect("sampler")))
    } else {
        (timed(cfg.secs, &counters), None)
    };
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            t.await.expect("task panicked");
        }
    });
    let stats = wal.stats();
    rt.block_on(wal.close()).expect("close ringtide");
    RtResult {
        m,
        stats,
        max_rss_kib,
    }
}

// ---------------------------------------------------------------------------------------------
// peers

fn okaywal_durable(cfg: &Cfg, n: usize) -> Measure {
    let dir = cfg.dir(&format!("okaywal-{n}"));
    // Default configuration (1 MiB preallocated segments, checkpoint after 768 KiB); LogVoid
    // discards entries at checkpoint and recovers nothing.
    let log = okaywal::WriteAheadLog::recover(&dir, okaywal::LogVoid).expect("open okaywal");
    let payload = cfg.payload.clone();
    let op_log = log.clone();
    let rate = run_threads(
        n,
        cfg.secs,
        Arc::new(move |_, _| {
            let mut entry = op_log.begin_entry().expect("begin_entry");
            entry.write_chunk(&payload).expect("write_chunk");
            entry.commit().expect("commit"); // returns once fsynced
        }),
    );
    // `run_threads` joined its threads, but the closure holding `op_log` is gone only now.
    log.shutdown().expect("shutdown okaywal");
    let _ = fs::remove_dir_all(&dir);
    rate
}

fn fjall_open(dir: &Path) -> (fjall::Keyspace, fjall::PartitionHandle) {
    let keyspace = fjall::Config::new(dir).open().expect("open fjall");
    let part = keyspace
        .open_partition("log", fjall::PartitionCreateOptions::default())
        .expect("open partition");
    (keyspace, part)
}

/// `insert`, then, if `durable`, `persist(SyncData)`; from `n` threads.
fn fjall_inserts(cfg: &Cfg, n: usize, durable: bool) -> Measure {
    let dir = cfg.dir(&format!("fjall-{n}-{durable}"));
    let (keyspace, part) = fjall_open(&dir);
    let payload = cfg.payload.clone();
    let (ks, p) = (keyspace.clone(), part.clone());
    let rate = run_threads(
        n,
        cfg.secs,
        Arc::new(move |t, seq| {
            p.insert(key(t, seq).to_be_bytes(), &payload[..])
                .expect("insert");
            if durable {
                ks.persist(fjall::PersistMode::SyncData).expect("persist");
            }
        }),
    );
    drop(part);
    drop(keyspace);
    let _ = fs::remove_dir_all(&dir);
    rate
}

/// One `Batch` of [`BATCH`] inserts per commit (buffered: written to the OS, not synced).
fn fjall_batches(cfg: &Cfg) -> Measure {
    let dir = cfg.dir("fjall-batch");
    let (keyspace, part) = fjall_open(&dir);
    let payload = cfg.payload.clone();
    let (ks, p) = (keyspace.clone(), part.clone());
    let rate = run_threads(
        1,
        cfg.secs,
        Arc::new(move |t, seq| {
            let mut b = ks.batch();
            for i in 0..BATCH as u64 {
                b.insert(
                    &p,
                    key(t, seq * BATCH as u64 + i).to_be_bytes(),
                    &payload[..],
                );
            }
            b.commit().expect("batch commit");
        }),
    );
    drop(part);
    drop(keyspace);
    let _ = fs::remove_dir_all(&dir);
    rate
}

const REDB_TABLE: redb::TableDefinition<'static, u64, &'static [u8]> =
    redb::TableDefinition::new("log");

/// One write transaction per append, committed with `Durability::Immediate`.
fn redb_durable(cfg: &Cfg, n: usize) -> Measure {
    let dir = cfg.dir(&format!("redb-{n}"));
    let db = Arc::new(redb::Database::create(dir.join("db.redb")).expect("create redb"));
    let payload = cfg.payload.clone();
    let op_db = db.clone();
    let rate = run_threads(
        n,
        cfg.secs,
        Arc::new(move |t, seq| {
            let mut tx = op_db.begin_write().expect("begin_write");
            tx.set_durability(redb::Durability::Immediate);
            {
                let mut table = tx.open_table(REDB_TABLE).expect("open_table");
                table.insert(key(t, seq), &payload[..]).expect("insert");
            }
            tx.commit().expect("commit");
        }),
    );
    drop(db);
    let _ = fs::remove_dir_all(&dir);
    rate
}

// ---------------------------------------------------------------------------------------------
// the ceiling, memory, page cache

/// How the ceiling's file is preallocated.
#[derive(Clone, Copy, PartialEq)]
enum Prealloc {
    /// Zeros written and synced: later writes overwrite allocated, written blocks.
    ZeroFilled,
    /// `fallocate` mode 0 (as ringtide's segments): blocks allocated but unwritten, so the first
    /// fdatasync over each block also commits the extent conversion to the journal.
    Fallocated,
    /// No preallocation: each write extends the file (so each fdatasync also commits the size).
    Appending,
}

/// Mean µs of one 256 B `write_at` + `sync_data` at increasing offsets of a preallocated file.
fn fsync_latency_us(cfg: &Cfg, prealloc: Prealloc) -> f64 {
    let dir = cfg.dir("ceiling");
    let path = dir.join("file");
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("open ceiling file");
    let len = (100 + CEILING_SYNCS) * ENTRY as u64 + (1 << 20);
    match prealloc {
        Prealloc::ZeroFilled => f.write_all(&vec![0u8; len as usize]).expect("preallocate"),
        Prealloc::Fallocated => {
            // SAFETY: `f` owns a valid open descriptor for the whole call; fallocate only reads
            // its integer arguments.
            let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as libc::off_t) };
            assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());
        }
        Prealloc::Appending => {}
    }
    f.sync_all().expect("sync_all");
    let buf = [0xA5u8; ENTRY];
    for i in 0..100u64 {
        f.write_at(&buf, i * ENTRY as u64).expect("write_at");
        f.sync_data().expect("sync_data");
    }
    let t0 = Instant::now();
    for i in 100..100 + CEILING_SYNCS {
        f.write_at(&buf, i * ENTRY as u64).expect("write_at");
        f.sync_data().expect("sync_data");
    }
    let us = t0.elapsed().as_secs_f64() * 1e6 / CEILING_SYNCS as f64;
    drop(f);
    let _ = fs::remove_dir_all(&dir);
    us
}

/// Lets earlier rows' writeback drain (`syncfs` of the file system, then a short pause) so one
/// engine's dirty pages do not slow the next row's fsyncs.
fn settle(cfg: &Cfg) {
    if let Ok(d) = fs::File::open(&cfg.root) {
        // SAFETY: `d` owns a valid open descriptor for the whole call.
        unsafe { libc::syncfs(d.as_raw_fd()) };
    }
    thread::sleep(Duration::from_millis(200));
}

/// The process's resident set, in KiB.
fn rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The files directly under `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
}

/// Drops the (clean) page-cache pages of every file under `dir`, so the next read goes to the
/// disk (or at least to the hypervisor's cache).
fn drop_page_cache(dir: &Path) {
    for path in files(dir) {
        let Ok(f) = fs::File::open(&path) else {
            continue;
        };
        let _ = f.sync_all();
        // SAFETY: `f` owns a valid open descriptor for the whole call; posix_fadvise only reads
        // its integer arguments.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise({})", path.display());
    }
}

// ---------------------------------------------------------------------------------------------
// read-back

struct ReadBack {
    bytes: u64,
    entries: u64,
    write_s: f64,
    recover_cold_s: f64,
    stream_warm_s: f64,
    stream_cold_s: f64,
    /// The log's files read straight through with `O_DIRECT` from a cold page cache: the
    /// disk's ceiling for recovery and a cold stream. Bytes of log data and seconds.
    raw_read: (u64, f64),
}

/// Reads every file under `dir` from the start with `O_DIRECT`, [`RAW_READ_CHUNK`] at a time,
/// stopping a file at its end or at its first chunk of only zeros (a segment's preallocated,
/// never written tail, which costs the disk nothing to read). Returns the bytes read before
/// that tail and the seconds it all took.
fn raw_read(dir: &Path) -> (u64, f64) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut buf = ringtide::platform::aligned_bytes_mut(RAW_READ_CHUNK, 4096);
    buf.resize(RAW_READ_CHUNK, 0);
    let (mut bytes, t0) = (0u64, Instant::now());
    for path in files(dir) {
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .expect("open with O_DIRECT");
        let mut at = 0u64;
        loop {
            let n = file.read_at(&mut buf, at).expect("direct read");
            if n == 0 || buf[..n].iter().all(|&b| b == 0) {
                break;
            }
            bytes += n as u64;
            at += n as u64;
        }
    }
    (bytes, t0.elapsed().as_secs_f64())
}

/// The size of each read of [`raw_read`].
const RAW_READ_CHUNK: usize = 4 << 20;

/// Reads the whole log with `stream(Lsn(1))`; returns (entries, payload bytes).
async fn stream_all(wal: &Wal) -> (u64, u64) {
    let mut s = wal.stream(Lsn(1));
    let (mut n, mut bytes) = (0u64, 0u64);
    while let Some(e) = s.next().await {
        let e = e.expect("stream entry");
        n += 1;
        bytes += e.data.len() as u64;
    }
    (n, bytes)
}

fn read_back(rt: &Runtime, cfg: &Cfg) -> ReadBack {
    let dir = cfg.dir("ringtide-read");
    let opts = WalOptions::default().sync_policy(SyncPolicy::None);
    let target = cfg.read_mib << 20;
    let per_batch = (BATCH * ENTRY) as u64;
    let batches = target.div_ceil(per_batch);
    let entries = batches * BATCH as u64;
    let bytes = entries * ENTRY as u64;

    let write_s = rt.block_on(async {
        let wal = Wal::open(&dir, opts.clone()).await.expect("open");
        let t0 = Instant::now();
        for _ in 0..batches {
            wal.append_batch(std::iter::repeat_n(cfg.payload.clone(), BATCH))
                .await
                .expect("append_batch");
        }
        wal.close().await.expect("close"); // syncs
        t0.elapsed().as_secs_f64()
    });

    // Recovery from a cold page cache.
    drop_page_cache(&dir);
    let (recover_cold_s, stream_warm_s) = rt.block_on(async {
        let t0 = Instant::now();
        let wal = Wal::open(&dir, opts.clone()).await.expect("reopen");
        let recover = t0.elapsed().as_secs_f64();
        assert_eq!(wal.last_lsn(), Lsn(entries), "recovered entries");
        // Straight after recovery: whatever recovery read is in the page cache.
        let t0 = Instant::now();
        let (n, b) = stream_all(&wal).await;
        let stream = t0.elapsed().as_secs_f64();
        assert_eq!((n, b), (entries, bytes), "streamed entries");
        wal.close().await.expect("close");
        (recover, stream)
    });

    // Streaming from a cold page cache.
    let stream_cold_s = rt.block_on(async {
        let wal = Wal::open(&dir, opts.clone()).await.expect("reopen");
        drop_page_cache(&dir);
        let t0 = Instant::now();
        let (n, b) = stream_all(&wal).await;
        let stream = t0.elapsed().as_secs_f64();
        assert_eq!((n, b), (entries, bytes), "streamed entries");
        wal.close().await.expect("close");
        stream
    });
    drop_page_cache(&dir);
    let raw_read = raw_read(&dir);
    let _ = fs::remove_dir_all(&dir);
    ReadBack {
        bytes,
        entries,
        write_s,
        recover_cold_s,
        stream_warm_s,
        stream_cold_s,
        raw_read,
    }
}

// ---------------------------------------------------------------------------------------------
// opening a small log; random reads by lsn

/// Entries of the small log that `Wal::open` is timed on (256 B each, one 64 MiB segment).
const SMALL_LOG_ENTRIES: usize = 32_000;
/// Opens timed per case; the table gives their median and range.
const OPENS: usize = 15;
/// Entries of the log random reads go over, and the newest ones the "recent" rows read.
const READ_LOG_ENTRIES: u64 = 1_000_000;
const RECENT_ENTRIES: u64 = 10_000;
/// Task counts of the random-read rows.
const READERS: [usize; 2] = [1, 16];

struct OpenTimes {
    /// Seconds per open: closed cleanly read-write, closed cleanly read-only, crashed read-only,
    /// crashed read-write (each on a fresh copy of the crashed files).
    clean_rw: Vec<f64>,
    clean_ro: Vec<f64>,
    crashed_ro: Vec<f64>,
    crashed_rw: Vec<f64>,
}

/// Copies the files of the log in `from` (open, synced) to `to`: what a crash leaves.
fn copy_log(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    fs::create_dir_all(to).expect("create copy dir");
    for f in files(from) {
        let name = f.file_name().expect("file name");
        if name == "LOCK" || name.to_string_lossy().ends_with(".lock") {
            continue;
        }
        fs::copy(&f, to.join(name)).expect("copy log file");
    }
}

fn open_times(rt: &Runtime, cfg: &Cfg) -> OpenTimes {
    let dir = cfg.dir("ringtide-small");
    let crashed = cfg.dir("ringtide-small-crashed");
    let copy = cfg.dir("ringtide-small-copy");
    let opts = WalOptions::default()
        .sync_policy(SyncPolicy::None)
        .segment_size_bytes(64 << 20);
    rt.block_on(async {
        let wal = Wal::open(&dir, opts.clone()).await.expect("open small log");
        for _ in 0..SMALL_LOG_ENTRIES / BATCH {
            wal.append_batch(std::iter::repeat_n(cfg.payload.clone(), BATCH))
                .await
                .expect("append_batch");
        }
        wal.sync().await.expect("sync");
        copy_log(&dir, &crashed);
        wal.close().await.expect("close");
    });
    let time = |dir: &Path, read_only: bool| {
        rt.block_on(async {
            let t0 = Instant::now();
            let wal = if read_only {
                Wal::open_read_only(dir, opts.clone()).await
            } else {
                Wal::open(dir, opts.clone()).await
            }
            .expect("open");
            let s = t0.elapsed().as_secs_f64();
            assert_eq!(
                wal.last_lsn(),
                Lsn(SMALL_LOG_ENTRIES as u64),
                "entries after open"
            );
            wal.close().await.expect("close");
            s
        })
    };
    let mut out = OpenTimes {
        clean_rw: Vec::new(),
        clean_ro: Vec::new(),
        crashed_ro: Vec::new(),
        crashed_rw: Vec::new(),
    };
    for _ in 0..OPENS {
        out.clean_rw.push(time(&dir, false));
        out.clean_ro.push(time(&dir, true));
        out.crashed_ro.push(time(&crashed, true));
        copy_log(&crashed, &copy);
        out.crashed_rw.push(time(&copy, false));
    }
    for d in [dir, crashed, copy] {
        let _ = fs::remove_dir_all(d);
    }
    out
}

/// Random `read(lsn)` from `n` tasks over the last `span` entries of `wal`; reads per second.
fn random_reads(rt: &Runtime, cfg: &Cfg, wal: &Wal, n: usize, span: u64) -> Measure {
    let counters: Arc<Vec<Counter>> = Arc::new((0..n).map(|_| Counter::default()).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let last = wal.last_lsn().get();
    let tasks: Vec<_> = (0..n)
        .map(|t| {
            let (wal, counters, stop) = (wal.clone(), counters.clone(), stop.clone());
            rt.spawn(async move {
                // xorshift64: cheap, and each task its own sequence.
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let lsn = Lsn(last - x % span);
                    let e = wal.read(lsn).await.expect("read");
                    assert_eq!(e.data.len(), ENTRY);
                    counters[t].0.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let m = timed(cfg.secs, &counters);
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            t.await.expect("reader task panicked");
        }
    });
    m
}

/// Random reads: (tasks, recent entries, any entry) for each of [`READERS`].
fn read_rows(rt: &Runtime, cfg: &Cfg) -> Vec<(usize, Measure, Measure)> {
    let dir = cfg.dir("ringtide-reads");
    let opts = WalOptions::default().sync_policy(SyncPolicy::None);
    let wal = rt.block_on(async {
        let wal = Wal::open(&dir, opts).await.expect("open");
        for _ in 0..READ_LOG_ENTRIES / BATCH as u64 {
            wal.append_batch(std::iter::repeat_n(cfg.payload.clone(), BATCH))
                .await
                .expect("append_batch");
        }
        wal.sync().await.expect("sync");
        // Bulk writes go around the page cache (direct I/O): one pass warms it.
        let (n, _) = stream_all(&wal).await;
        assert_eq!(n, READ_LOG_ENTRIES, "streamed entries");
        wal
    });
    let rows = READERS
        .iter()
        .map(|&n| {
            let recent = random_reads(rt, cfg, &wal, n, RECENT_ENTRIES);
            let any = random_reads(rt, cfg, &wal, n, READ_LOG_ENTRIES);
            (n, recent, any)
        })
        .collect();
    rt.block_on(wal.close()).expect("close");
    let _ = fs::remove_dir_all(&dir);
    rows
}

fn print_open_and_reads(open: &OpenTimes, reads: &[(usize, Measure, Measure)]) {
    let ms = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        format!(
            "{:.1} | {:.1}–{:.1}",
            v[v.len() / 2] * 1e3,
            v[0] * 1e3,
            v[v.len() - 1] * 1e3
        )
    };
    println!(
        "## Opening a small log ({} entries of 256 B in one 64 MiB segment, page cache warm, {OPENS} opens each)\n",
        num(SMALL_LOG_ENTRIES as f64)
    );
    println!("| log | open | median ms | range ms |");
    println!("|---|---|---:|---:|");
    println!("| closed cleanly | `open` | {} |", ms(&open.clean_rw));
    println!(
        "| closed cleanly | `open_read_only` | {} |",
        ms(&open.clean_ro)
    );
    println!(
        "| crashed (files copied after a sync, no close) | `open_read_only` | {} |",
        ms(&open.crashed_ro)
    );
    println!(
        "| crashed, a fresh copy each time | `open` | {} |",
        ms(&open.crashed_rw)
    );
    println!();
    println!(
        "## Random `read(lsn)` ({} entries of 256 B, page cache warm; \"recent\" = the newest {} entries)\n",
        num(READ_LOG_ENTRIES as f64),
        num(RECENT_ENTRIES as f64)
    );
    println!(
        "| tasks | recent reads/s | any entry reads/s | CPU µs/read recent | CPU µs/read any |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for (n, recent, any) in reads {
        println!(
            "| {n} | {} | {} | {:.2} | {:.2} |",
            num(recent.rate),
            num(any.rate),
            recent.cpu_us_per_op,
            any.cpu_us_per_op
        );
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// output

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "n/a".into()
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn main() {
    let secs = std::env::var("COMPARE_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(3.0);
    let read_mib = std::env::var("COMPARE_READ_MB")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(1024);
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    fs::create_dir_all(&target).expect("create compare/target");
    let tmp = tempfile::Builder::new()
        .prefix("wal-compare-")
        .tempdir_in(&target)
        .expect("tempdir_in compare/target");
    let cfg = Cfg {
        secs: Duration::from_secs_f64(secs),
        read_mib,
        root: tmp.path().to_path_buf(),
        payload: Bytes::from((0..ENTRY).map(|i| i as u8).collect::<Vec<u8>>()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");

    // `COMPARE_ONLY=open-read` runs only the open-time and random-read rows.
    if std::env::var("COMPARE_ONLY").is_ok_and(|v| v == "open-read") {
        let open = open_times(&rt, &cfg);
        let reads = read_rows(&rt, &cfg);
        print_open_and_reads(&open, &reads);
        return;
    }

    // The memory row runs first, on a heap no other engine has grown yet.
    let rss_before = rss_kib();
    let dir = cfg.dir("ringtide-mem");
    let mem = ringtide_run(&rt, &cfg, &dir, SyncPolicy::Immediate, 64, false, true);
    let _ = fs::remove_dir_all(&dir);

    let ceiling_before = fsync_latency_us(&cfg, Prealloc::ZeroFilled);
    let fallocated_us = fsync_latency_us(&cfg, Prealloc::Fallocated);
    let appending_us = fsync_latency_us(&cfg, Prealloc::Appending);

    struct Durable {
        n: usize,
        /// The ceiling's fsync latency, measured just before ringtide's row.
        ceiling_us: f64,
        rt: RtResult,
        okaywal: Measure,
        fjall: Measure,
        redb: Measure,
    }
    let mut durable = Vec::new();
    for n in WRITERS {
        settle(&cfg);
        let ceiling_us = fsync_latency_us(&cfg, Prealloc::ZeroFilled);
        let dir = cfg.dir(&format!("ringtide-imm-{n}"));
        let r = ringtide_run(&rt, &cfg, &dir, SyncPolicy::Immediate, n, false, false);
        let _ = fs::remove_dir_all(&dir);
        settle(&cfg);
        let okaywal = okaywal_durable(&cfg, n);
        settle(&cfg);
        let fjall = fjall_inserts(&cfg, n, true);
        settle(&cfg);
        let redb = redb_durable(&cfg, n);
        durable.push(Durable {
            n,
            ceiling_us,
            rt: r,
            okaywal,
            fjall,
            redb,
        });
    }

    settle(&cfg);
    let ceiling_after = fsync_latency_us(&cfg, Prealloc::ZeroFilled);
    let all: Vec<f64> = std::iter::once(ceiling_before)
        .chain(durable.iter().map(|d| d.ceiling_us))
        .chain(std::iter::once(ceiling_after))
        .collect();
    let ceiling_us = all.iter().sum::<f64>() / all.len() as f64;
    let ceiling_list = all
        .iter()
        .map(|us| format!("{us:.0}"))
        .collect::<Vec<_>>()
        .join(", ");

    settle(&cfg);
    let dir = cfg.dir("ringtide-none");
    let rt_none = ringtide_run(&rt, &cfg, &dir, SyncPolicy::None, 1, false, false);
    let _ = fs::remove_dir_all(&dir);
    settle(&cfg);
    let fjall_buffered = fjall_inserts(&cfg, 1, false);
    settle(&cfg);

    let dir = cfg.dir("ringtide-batch");
    let rt_batch = ringtide_run(&rt, &cfg, &dir, SyncPolicy::None, 1, true, false);
    let _ = fs::remove_dir_all(&dir);
    settle(&cfg);
    let fjall_batch = fjall_batches(&cfg);
    settle(&cfg);

    let rb = read_back(&rt, &cfg);
    settle(&cfg);
    let open = open_times(&rt, &cfg);
    let reads = read_rows(&rt, &cfg);

    // ------------------------------------------------------------------ print
    let backend = mem.stats.backend;
    println!("# ringtide WAL comparison\n");
    println!(
        "256 B entries; {secs} s measured per row after a {:.1} s warm-up; files under {}; \
         ringtide I/O backend: {backend}; tokio multi-thread runtime, 2 workers.\n",
        WARMUP.as_secs_f64(),
        target.display()
    );
    println!(
        "Ceiling: one 256 B write_at + fdatasync on a preallocated (zero-filled) file, mean of \
         {CEILING_SYNCS}, measured {} times in this run (at the start, just before each ringtide \
         durable row, at the end): {ceiling_list} µs; mean {ceiling_us:.1} µs. N writers can at \
         best reach N / latency ops/s with perfect group commit; each row's ceiling uses the \
         latency measured just before it.\n",
        all.len()
    );
    println!(
        "For reference, the same loop at the start of the run on a file preallocated with \
         `fallocate` (unwritten extents, as ringtide preallocates its segments): \
         {fallocated_us:.1} µs; appending to a file that grows with each write (no \
         preallocation): {appending_us:.1} µs.\n"
    );

    println!("## Durable appends (acknowledged after fdatasync)\n");
    println!(
        "| workload | writers | ringtide ops/s | okaywal | fjall | redb | ringtide ÷ okaywal \
         | ringtide ÷ fjall | ringtide ÷ redb | fsync µs | ceiling ops/s | % of ceiling |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for d in &durable {
        let ceiling = d.n as f64 * 1e6 / d.ceiling_us;
        let r = d.rt.m.rate;
        println!(
            "| append 256 B, durable | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {:.0}% |",
            d.n,
            num(r),
            num(d.okaywal.rate),
            num(d.fjall.rate),
            num(d.redb.rate),
            ratio(r, d.okaywal.rate),
            ratio(r, d.fjall.rate),
            ratio(r, d.redb.rate),
            d.ceiling_us,
            num(ceiling),
            100.0 * r / ceiling
        );
    }
    println!();
    println!(
        "CPU per acknowledged append (whole process, user + system, all threads; cores busy in \
         parentheses, of 2):\n"
    );
    println!("| writers | ringtide | okaywal | fjall | redb |");
    println!("|---:|---:|---:|---:|---:|");
    let cpu = |m: &Measure| format!("{:.1} µs ({:.2})", m.cpu_us_per_op, m.cores);
    for d in &durable {
        println!(
            "| {} | {} | {} | {} | {} |",
            d.n,
            cpu(&d.rt.m),
            cpu(&d.okaywal),
            cpu(&d.fjall),
            cpu(&d.redb)
        );
    }
    println!();
    println!("ringtide's group commit in these rows (from `Wal::stats`, warm-up included):\n");
    println!("| writers | appends | fsyncs | entries per fsync | mean write+fsync µs | fsyncs/s |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for d in &durable {
        let s = &d.rt.stats;
        let syncs = s.syncs.max(1) as f64;
        let window = cfg.secs.as_secs_f64() + WARMUP.as_secs_f64();
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {} |",
            d.n,
            num(s.appends as f64),
            num(s.syncs as f64),
            s.appends as f64 / syncs,
            s.sync_time_us as f64 / syncs,
            num(s.syncs as f64 / window)
        );
    }
    println!();

    println!("## Non-durable appends (no fsync)\n");
    println!(
        "| workload | writers | ringtide ops/s | fjall ops/s | ringtide ÷ fjall | CPU µs/op ringtide | CPU µs/op fjall |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| ringtide `SyncPolicy::None` append vs fjall `insert` (no persist) | 1 | {} | {} | {} | {:.1} | {:.1} |",
        num(rt_none.m.rate),
        num(fjall_buffered.rate),
        ratio(rt_none.m.rate, fjall_buffered.rate),
        rt_none.m.cpu_us_per_op,
        fjall_buffered.cpu_us_per_op
    );
    println!();

    let batch_mib = |calls: f64| calls * (BATCH * ENTRY) as f64 / MIB;
    println!("## Batched appends ({BATCH} × 256 B per call, not synced)\n");
    println!("| workload | writers | ringtide MiB/s | fjall MiB/s | ringtide ÷ fjall |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| ringtide `append_batch` (None) vs fjall `Batch::commit` (buffered) | 1 | {:.0} | {:.0} | {} |",
        batch_mib(rt_batch.m.rate),
        batch_mib(fjall_batch.rate),
        ratio(rt_batch.m.rate, fjall_batch.rate)
    );
    println!(
        "\n({} batches/s ringtide, {} batches/s fjall; payload bytes only; CPU {:.0} µs / {:.0} µs \
         per batch.)\n",
        num(rt_batch.m.rate),
        num(fjall_batch.rate),
        rt_batch.m.cpu_us_per_op,
        fjall_batch.cpu_us_per_op
    );

    let size = rb.bytes as f64 / MIB;
    println!(
        "## Read-back ({:.0} MiB of payload, {} entries, written with `append_batch`, policy None)\n",
        size,
        num(rb.entries as f64)
    );
    println!("| phase | seconds | MiB/s |");
    println!("|---|---:|---:|");
    for (phase, s) in [
        ("write (append_batch + final sync at close)", rb.write_s),
        (
            "reopen = recovery, page cache dropped first",
            rb.recover_cold_s,
        ),
        (
            "`stream(Lsn(1))` to the end, right after recovery",
            rb.stream_warm_s,
        ),
        (
            "`stream(Lsn(1))` to the end, page cache dropped first",
            rb.stream_cold_s,
        ),
        (
            format!(
                "the log's files read straight through (`O_DIRECT`, {} MiB reads), page cache dropped first",
                RAW_READ_CHUNK >> 20
            )
            .as_str(),
            rb.raw_read.1,
        ),
    ] {
        println!("| {phase} | {s:.3} | {:.0} |", size / s);
    }
    let (raw_bytes, raw_s) = rb.raw_read;
    println!(
        "\nThe last row is the disk's ceiling for the read rows: {:.0} MiB of log data ({:.3} bytes per payload byte) at {:.0} MiB/s. \
         Recovery reached {:.0}% of it, the cold stream {:.0}%.\n",
        raw_bytes as f64 / MIB,
        raw_bytes as f64 / rb.bytes as f64,
        raw_bytes as f64 / MIB / raw_s,
        100.0 * raw_s / rb.recover_cold_s,
        100.0 * raw_s / rb.stream_cold_s
    );

    print_open_and_reads(&open, &reads);

    println!("## Memory bound (`SyncPolicy::Immediate`, as fast as possible)\n");
    println!(
        "| workload | writers | seconds | ops/s | RSS before | max RSS (100 ms samples) | growth |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let max = mem.max_rss_kib.unwrap_or(0);
    println!(
        "| append 256 B, durable | 64 | {} | {} | {} | {} | {} |",
        MEM_SECS.as_secs(),
        num(mem.m.rate),
        mib(rss_before),
        mib(max),
        mib(max.saturating_sub(rss_before))
    );
    println!(
        "\n(`max_pending_bytes` = 64 MiB by default; 64 closed-loop writers keep at most 64 × 256 B \
         queued.)"
    );
}
