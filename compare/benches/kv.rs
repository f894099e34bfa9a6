//! Key-value comparison: the phases of redb's own benchmark (`redb-bench`'s `benchmark`, the
//! engines of `redb-bench-compare`'s `lmdb_benchmark`) run on fjall, redb and LMDB (heed), with
//! RocksDB behind the cargo feature `rocksdb` and ringtide's key-value store behind
//! `ringtide-kv`. 24-byte random keys, 150-byte random values; every write transaction is durable
//! (fsync'd) when its commit returns. Prints markdown tables to stdout.
//!
//! Run (from the repository root): `cargo bench --manifest-path compare/Cargo.toml --bench kv`.
//! `KV_N` sets the keys of the bulk load (default 1,000,000), `KV_SECS` the measured seconds of
//! each timed row (default 3, after a 0.5 s warm-up), `KV_ENGINES` a comma-separated subset of
//! the engines. See compare/README.md.
//!
//! Each engine runs in a child process of its own (this binary again; `ringtide_compare::child`),
//! so that its resident-set figures start from a fresh heap and no engine's background threads or
//! caches outlive its rows. The engine trait, the fjall and ringtide engines, the executors and
//! the measurements are the library's (compare/src/), shared with `benches/ycsb.rs`.

use std::fs;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringtide_compare::Engine;
use ringtide_compare::child::{Metrics, Runs, emit, emit_ops, env_count, env_secs, run_comparison};
use ringtide_compare::exec::{Counter, Exec, WARMUP, counters, sum, window};
use ringtide_compare::fjall::{FjallOtx, FjallSw};
use ringtide_compare::fmt::{num, ratio, seconds};
use ringtide_compare::kvdata::{CACHE_SIZE, KEY, VALUE, counter, incremented, key, pair};
use ringtide_compare::measure::{disk_bytes, median, rss_kib, settle};
#[cfg(feature = "ringtide-kv")]
use ringtide_compare::ringtide_kv::Ringtide;

/// Phase 2: single-put transactions.
const INDIVIDUAL_WRITES: u64 = 1_000;
/// Phase 3: transactions of `BATCH_SIZE` puts.
const BATCH_WRITES: u64 = 100;
const BATCH_SIZE: u64 = 1_000;
/// Single-threaded read rows report the median of this many runs (as redb's benchmark does).
const READ_ITERATIONS: usize = 3;
/// Threads of the concurrent random-read rows.
const READ_THREADS: [usize; 2] = [8, 32];
/// Entries per range read.
const SCAN_LEN: usize = 10;
/// Writers of the durable single-put rows.
const DURABLE_WRITERS: [usize; 3] = [1, 16, 64];
/// Writers of the contended read-modify-write row.
const CONTENDED_WRITERS: usize = 64;
/// Keys of the timed durable rows are drawn from indexes at and above this one (the bulk load,
/// individual and batch writes use indexes below `N + 101,000`).
const FRESH: u64 = 1 << 48;

/// The engines this build can run, in table order. ringtide comes first when it is built in.
fn engines() -> Vec<&'static str> {
    let mut v = Vec::new();
    #[cfg(feature = "ringtide-kv")]
    v.push(Ringtide::NAME);
    v.extend([Redb::NAME, Lmdb::NAME, FjallSw::NAME, FjallOtx::NAME]);
    #[cfg(feature = "rocksdb")]
    v.push(rocks::Rocks::NAME);
    v
}

/// The versions in Cargo.toml, for the report's header.
const VERSIONS: &str = "redb 4.6.0, heed 0.23.1 (LMDB mdb.master via lmdb-master-sys 0.2.6), \
                        fjall 3.1.13, rocksdb 0.25.0 (RocksDB 11.8.1, feature `rocksdb`)";

// ---------------------------------------------------------------------------------------------
// redb

const REDB_TABLE: redb4::TableDefinition<'static, &'static [u8], &'static [u8]> =
    redb4::TableDefinition::new("x");

/// redb, as in redb's benchmark: 4 GiB cache, one table, `Durability::Immediate` (its default,
/// set explicitly); writers serialize on the write transaction.
struct Redb {
    db: redb4::Database,
}

impl Redb {
    fn write(&self) -> redb4::WriteTransaction {
        let mut tx = self.db.begin_write().expect("redb begin_write");
        tx.set_durability(redb4::Durability::Immediate)
            .expect("redb set_durability");
        tx
    }
}

impl Engine for Redb {
    const NAME: &'static str = "redb";
    const SETUP: &'static str = "4 GiB cache; Durability::Immediate";

    async fn open(dir: &Path) -> Self {
        let db = redb4::Database::builder()
            .set_cache_size(CACHE_SIZE)
            .create(dir.join("db.redb"))
            .expect("redb create");
        let tx = db.begin_write().expect("redb begin_write");
        tx.open_table(REDB_TABLE).expect("redb open_table");
        tx.commit().expect("redb commit");
        Self { db }
    }

    async fn put(&self, indexes: Range<u64>) {
        let tx = self.write();
        {
            let mut t = tx.open_table(REDB_TABLE).expect("redb open_table");
            for i in indexes {
                let (k, v) = pair(i);
                t.insert(k.as_slice(), v.as_slice()).expect("redb insert");
            }
        }
        tx.commit().expect("redb commit");
    }

    async fn remove(&self, indexes: Range<u64>) {
        let tx = self.write();
        {
            let mut t = tx.open_table(REDB_TABLE).expect("redb open_table");
            for i in indexes {
                t.remove(key(i).as_slice()).expect("redb remove");
            }
        }
        tx.commit().expect("redb commit");
    }

    async fn get(&self, indexes: Range<u64>, txn_per_read: bool) -> u64 {
        use redb4::ReadableDatabase;
        let read = |t: &redb4::ReadOnlyTable<&[u8], &[u8]>, i: u64| -> u64 {
            let v = t.get(key(i).as_slice()).expect("redb get");
            v.expect("key missing").value()[0] as u64
        };
        let mut sum = 0;
        if txn_per_read {
            for i in indexes {
                let tx = self.db.begin_read().expect("redb begin_read");
                sum += read(&tx.open_table(REDB_TABLE).expect("redb open_table"), i);
            }
        } else {
            let tx = self.db.begin_read().expect("redb begin_read");
            let t = tx.open_table(REDB_TABLE).expect("redb open_table");
            for i in indexes {
                sum += read(&t, i);
            }
        }
        sum
    }

    async fn scan(&self, indexes: Range<u64>, len: usize) -> u64 {
        use redb4::ReadableDatabase;
        let tx = self.db.begin_read().expect("redb begin_read");
        let t = tx.open_table(REDB_TABLE).expect("redb open_table");
        let mut sum = 0;
        for i in indexes {
            let k = key(i);
            for e in t.range(k.as_slice()..).expect("redb range").take(len) {
                sum += e.expect("redb range").1.value()[0] as u64;
            }
        }
        sum
    }

    async fn increment(&self, i: u64) -> u64 {
        use redb4::ReadableTable;
        let k = key(i);
        let tx = self.write();
        {
            let mut t = tx.open_table(REDB_TABLE).expect("redb open_table");
            let v = incremented(
                t.get(k.as_slice())
                    .expect("redb get")
                    .expect("key missing")
                    .value(),
            );
            t.insert(k.as_slice(), v.as_slice()).expect("redb insert");
        }
        tx.commit().expect("redb commit");
        0
    }

    async fn counters(&self, indexes: Range<u64>) -> u64 {
        use redb4::ReadableDatabase;
        let tx = self.db.begin_read().expect("redb begin_read");
        let t = tx.open_table(REDB_TABLE).expect("redb open_table");
        indexes.fold(0u64, |sum, i| {
            let v = t.get(key(i).as_slice()).expect("redb get");
            sum.wrapping_add(counter(v.expect("key missing").value()))
        })
    }

    async fn close(self) {
        drop(self.db);
    }
}

// ---------------------------------------------------------------------------------------------
// LMDB (heed)

type HeedDb = heed::Database<'static, heed::types::Bytes, heed::types::Bytes>;

/// LMDB through heed, as in redb's benchmark: default flags (each commit fdatasyncs), one
/// unnamed database, read transactions with thread-local reader slots; writers serialize on
/// LMDB's write lock. The map is 4 GiB (more for large `KV_N`).
struct Lmdb {
    env: heed::Env,
    db: HeedDb,
}

impl Engine for Lmdb {
    const NAME: &'static str = "lmdb";
    const SETUP: &'static str = "default flags (fdatasync per commit)";

    async fn open(dir: &Path) -> Self {
        let n = n_keys() as usize;
        let map_size = (CACHE_SIZE)
            .max(n.saturating_mul(2048))
            .next_multiple_of(4096);
        // SAFETY: the directory is new and private to this process; nothing else maps the file.
        let env = unsafe {
            heed::EnvOpenOptions::new()
                .map_size(map_size)
                .max_readers(256)
                .open(dir)
                .expect("lmdb open")
        };
        let wtxn = env.write_txn().expect("lmdb write_txn");
        let db: HeedDb = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| {
                dbo.create_database(wtxn, None)
                    .map(heed::CommitOrAbort::<_, ()>::Commit)
            })
            .expect("lmdb create_database")
            .unwrap_commit();
        Self { env, db }
    }

    async fn put(&self, indexes: Range<u64>) {
        let mut w = self.env.write_txn().expect("lmdb write_txn");
        for i in indexes {
            let (k, v) = pair(i);
            self.db.put(&mut w, &k, &v).expect("lmdb put");
        }
        w.commit().expect("lmdb commit");
    }

    async fn remove(&self, indexes: Range<u64>) {
        let mut w = self.env.write_txn().expect("lmdb write_txn");
        for i in indexes {
            self.db.delete(&mut w, &key(i)).expect("lmdb delete");
        }
        w.commit().expect("lmdb commit");
    }

    async fn get(&self, indexes: Range<u64>, txn_per_read: bool) -> u64 {
        let read = |r: &heed::RoTxn, i: u64| -> u64 {
            let v = self.db.get(r, &key(i)).expect("lmdb get");
            v.expect("key missing")[0] as u64
        };
        let mut sum = 0;
        if txn_per_read {
            for i in indexes {
                sum += read(&self.env.read_txn().expect("lmdb read_txn"), i);
            }
        } else {
            let r = self.env.read_txn().expect("lmdb read_txn");
            for i in indexes {
                sum += read(&r, i);
            }
        }
        sum
    }

    async fn scan(&self, indexes: Range<u64>, len: usize) -> u64 {
        use std::ops::Bound;
        let r = self.env.read_txn().expect("lmdb read_txn");
        let mut sum = 0;
        for i in indexes {
            let k = key(i);
            let range = (Bound::Included(&k[..]), Bound::Unbounded);
            for e in self.db.range(&r, &range).expect("lmdb range").take(len) {
                sum += e.expect("lmdb range").1[0] as u64;
            }
        }
        sum
    }

    async fn increment(&self, i: u64) -> u64 {
        let k = key(i);
        let mut w = self.env.write_txn().expect("lmdb write_txn");
        let v = incremented(self.db.get(&w, &k).expect("lmdb get").expect("key missing"));
        self.db.put(&mut w, &k, &v).expect("lmdb put");
        w.commit().expect("lmdb commit");
        0
    }

    async fn counters(&self, indexes: Range<u64>) -> u64 {
        let r = self.env.read_txn().expect("lmdb read_txn");
        indexes.fold(0u64, |sum, i| {
            let v = self.db.get(&r, &key(i)).expect("lmdb get");
            sum.wrapping_add(counter(v.expect("key missing")))
        })
    }

    async fn close(self) {
        self.env.prepare_for_closing().wait();
    }
}

// ---------------------------------------------------------------------------------------------
// RocksDB (feature `rocksdb`)

#[cfg(feature = "rocksdb")]
mod rocks {
    //! RocksDB's `OptimisticTransactionDB`, configured as in redb's benchmark (4 GiB LRU block
    //! cache shared with the write buffers, bloom filters); `WriteOptions::set_sync(true)` on
    //! every transaction; a read-modify-write reads with `get_for_update` and is retried when
    //! its commit fails with `Busy` (a conflict).

    use super::*;
    use std::thread;

    use rocksdb::{
        BlockBasedOptions, Cache, Direction, ErrorKind, IteratorMode, OptimisticTransactionDB,
        OptimisticTransactionOptions, Options, Transaction, WriteBufferManager, WriteOptions,
    };

    /// As redb's benchmark does ("RocksDB seems to have unbounded memory usage for bulk
    /// writes"): a bulk transaction is committed, durably, every this many writes.
    const MAX_WRITES_PER_TXN: u64 = 100_000;

    pub struct Rocks {
        db: OptimisticTransactionDB,
    }

    impl Rocks {
        fn txn(&self) -> Transaction<'_, OptimisticTransactionDB> {
            let mut w = WriteOptions::new();
            w.set_sync(true);
            let mut t = OptimisticTransactionOptions::new();
            t.set_snapshot(true);
            self.db.transaction_opt(&w, &t)
        }

        /// `op` on each index of `indexes`, committing every [`MAX_WRITES_PER_TXN`].
        fn write(
            &self,
            indexes: Range<u64>,
            op: impl Fn(&Transaction<'_, OptimisticTransactionDB>, u64),
        ) {
            let mut txn = self.txn();
            for (n, i) in indexes.enumerate() {
                if n > 0 && n as u64 % MAX_WRITES_PER_TXN == 0 {
                    std::mem::replace(&mut txn, self.txn())
                        .commit()
                        .expect("rocksdb commit");
                }
                op(&txn, i);
            }
            txn.commit().expect("rocksdb commit");
        }
    }

    impl Engine for Rocks {
        const NAME: &'static str = "rocksdb";
        const SETUP: &'static str = "OptimisticTransactionDB, 4 GiB block cache, sync writes";

        async fn open(dir: &Path) -> Self {
            let cache = Cache::new_lru_cache(CACHE_SIZE);
            let write_buffer = WriteBufferManager::new_write_buffer_manager_with_cache(
                CACHE_SIZE / 2,
                false,
                cache.clone(),
            );
            let mut bb = BlockBasedOptions::default();
            bb.set_block_cache(&cache);
            bb.set_bloom_filter(10.0, false);
            bb.set_cache_index_and_filter_blocks(true);
            bb.set_pin_l0_filter_and_index_blocks_in_cache(false);
            bb.set_pin_top_level_index_and_filter(false);
            let mut opts = Options::default();
            opts.set_block_based_table_factory(&bb);
            opts.set_write_buffer_manager(&write_buffer);
            opts.set_max_write_buffer_size_to_maintain((CACHE_SIZE / 2) as i64);
            opts.create_if_missing(true);
            opts.increase_parallelism(thread::available_parallelism().map_or(1, |n| n.get()) as i32);
            let db = OptimisticTransactionDB::open(&opts, dir).expect("rocksdb open");
            Self { db }
        }

        async fn put(&self, indexes: Range<u64>) {
            self.write(indexes, |txn, i| {
                let (k, v) = pair(i);
                txn.put(k, v).expect("rocksdb put");
            });
        }

        async fn remove(&self, indexes: Range<u64>) {
            self.write(indexes, |txn, i| {
                txn.delete(key(i)).expect("rocksdb delete")
            });
        }

        async fn get(&self, indexes: Range<u64>, txn_per_read: bool) -> u64 {
            let mut sum = 0;
            if txn_per_read {
                for i in indexes {
                    let v = self.db.snapshot().get(key(i)).expect("rocksdb get");
                    sum += v.expect("key missing")[0] as u64;
                }
            } else {
                let s = self.db.snapshot();
                for i in indexes {
                    let v = s.get(key(i)).expect("rocksdb get");
                    sum += v.expect("key missing")[0] as u64;
                }
            }
            sum
        }

        async fn scan(&self, indexes: Range<u64>, len: usize) -> u64 {
            let s = self.db.snapshot();
            let mut sum = 0;
            for i in indexes {
                let k = key(i);
                for e in s
                    .iterator(IteratorMode::From(&k, Direction::Forward))
                    .take(len)
                {
                    sum += e.expect("rocksdb iterator").1[0] as u64;
                }
            }
            sum
        }

        async fn increment(&self, i: u64) -> u64 {
            let k = key(i);
            let mut retries = 0;
            loop {
                let txn = self.txn();
                let v = txn
                    .get_for_update(k, true)
                    .expect("rocksdb get_for_update")
                    .expect("key missing");
                txn.put(k, incremented(&v)).expect("rocksdb put");
                match txn.commit() {
                    Ok(()) => return retries,
                    Err(e) if matches!(e.kind(), ErrorKind::Busy | ErrorKind::TryAgain) => {
                        retries += 1
                    }
                    Err(e) => panic!("rocksdb commit: {e}"),
                }
            }
        }

        async fn counters(&self, indexes: Range<u64>) -> u64 {
            let s = self.db.snapshot();
            indexes.fold(0u64, |sum, i| {
                let v = s.get(key(i)).expect("rocksdb get");
                sum.wrapping_add(counter(&v.expect("key missing")))
            })
        }

        async fn close(self) {
            drop(self.db);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Workers

/// Durable single-put transactions of fresh keys, in a closed loop until `stop`.
async fn durable_worker<E: Engine>(
    db: Arc<E>,
    t: usize,
    stop: Arc<AtomicBool>,
    done: Arc<Vec<Counter>>,
) {
    let mut i = FRESH + ((t as u64) << 32);
    while !stop.load(Ordering::Relaxed) {
        db.put(i..i + 1).await;
        i += 1;
        done[t].0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Read-modify-write transactions of keys drawn uniformly from `hot`, in a closed loop until
/// `stop`.
async fn rmw_worker<E: Engine>(
    db: Arc<E>,
    t: usize,
    hot: Range<u64>,
    stop: Arc<AtomicBool>,
    done: Arc<Vec<Counter>>,
    retries: Arc<Vec<Counter>>,
    snapshot: bool,
) {
    let mut rng = fastrand::Rng::with_seed(1000 + t as u64);
    while !stop.load(Ordering::Relaxed) {
        let i = rng.u64(hot.clone());
        let r = if snapshot {
            db.increment_snapshot(i).await
        } else {
            db.increment(i).await
        };
        retries[t].0.fetch_add(r, Ordering::Relaxed);
        done[t].0.fetch_add(1, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// The phases (in the child process of one engine)

fn n_keys() -> u64 {
    env_count("KV_N", 1_000_000, 1000)
}

fn secs() -> Duration {
    env_secs("KV_SECS", 3.0)
}

fn run<E: Engine>(root: &Path) {
    let n = n_keys();
    let secs = secs();
    let name = E::NAME;
    let exec = Exec::new(E::ASYNC);
    let dir = root.join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create engine dir");
    let log = |what: String| eprintln!("  {name}: {what}");

    // 1 (and 9). Bulk load: N keys in one transaction; the resident set before and after.
    let (rss0, anon0) = rss_kib();
    let db = Arc::new(exec.block_on(E::open(&dir)));
    let t = Instant::now();
    exec.block_on(db.put(0..n));
    let s = t.elapsed().as_secs_f64();
    let (rss1, anon1) = rss_kib();
    emit_ops("bulk", n as f64, s);
    emit("mem.rss_before_kib", rss0 as f64);
    emit("mem.rss_after_kib", rss1 as f64);
    emit("mem.anon_before_kib", anon0 as f64);
    emit("mem.anon_after_kib", anon1 as f64);
    emit("mem.disk_bytes", disk_bytes(&dir) as f64);
    log(format!("bulk load of {n} keys in {s:.2} s"));

    settle(&dir);
    // 2. Individual writes: single-put transactions.
    let base = n;
    let t = Instant::now();
    exec.block_on(async {
        for i in base..base + INDIVIDUAL_WRITES {
            db.put(i..i + 1).await;
        }
    });
    emit_ops(
        "individual",
        INDIVIDUAL_WRITES as f64,
        t.elapsed().as_secs_f64(),
    );

    settle(&dir);
    // 3. Batch writes.
    let base = n + INDIVIDUAL_WRITES;
    let t = Instant::now();
    exec.block_on(async {
        for b in 0..BATCH_WRITES {
            let from = base + b * BATCH_SIZE;
            db.put(from..from + BATCH_SIZE).await;
        }
    });
    emit_ops(
        "batch",
        (BATCH_WRITES * BATCH_SIZE) as f64,
        t.elapsed().as_secs_f64(),
    );
    log("individual and batch writes done".into());

    settle(&dir);
    // 4. Random reads of the bulk-loaded keys (random keys, so any order is random): one thread
    // (median of READ_ITERATIONS), with one read transaction for all reads as redb's benchmark
    // does, and with one per read; then READ_THREADS threads, each reading its share in one
    // read transaction.
    let expected: u64 = (0..n).map(|i| pair(i).1[0] as u64).sum();
    for (metric, per_read) in [("read1", false), ("read1_txn_per_read", true)] {
        let times = (0..READ_ITERATIONS)
            .map(|_| {
                let t = Instant::now();
                let sum = exec.block_on(db.get(0..n, per_read));
                assert_eq!(sum, expected, "{name}: read back different values");
                t.elapsed().as_secs_f64()
            })
            .collect();
        emit_ops(metric, n as f64, median(times));
    }
    for threads in READ_THREADS {
        let share = n / threads as u64;
        let t = Instant::now();
        let workers = (0..threads as u64)
            .map(|w| {
                let db = db.clone();
                let r = w * share..(w + 1) * share;
                exec.spawn(async move { db.get(r, false).await })
            })
            .collect();
        let sum: u64 = exec.join(workers).into_iter().sum();
        let s = t.elapsed().as_secs_f64();
        let want: u64 = (0..share * threads as u64)
            .map(|i| pair(i).1[0] as u64)
            .sum();
        assert_eq!(sum, want, "{name}: read back different values");
        emit_ops(
            &format!("read{threads}"),
            (share * threads as u64) as f64,
            s,
        );
    }
    log("random reads done".into());

    settle(&dir);
    // 5. Range reads: N/2 of them (500,000 at the default N, as in redb's benchmark), of
    // SCAN_LEN entries each, from the first N/2 keys; one read transaction; median of
    // READ_ITERATIONS.
    let scans = n / 2;
    let times = (0..READ_ITERATIONS)
        .map(|_| {
            let t = Instant::now();
            let sum = exec.block_on(db.scan(0..scans, SCAN_LEN));
            assert!(sum > 0, "{name}: range reads found nothing");
            t.elapsed().as_secs_f64()
        })
        .collect();
    emit_ops("scan", scans as f64, median(times));
    log("range reads done".into());

    settle(&dir);
    // 6. Removals: half the bulk-loaded keys in one transaction (redb's benchmark removes half
    // of all the keys written, also in one transaction).
    let removals = n / 2;
    let t = Instant::now();
    exec.block_on(db.remove(0..removals));
    emit_ops("remove", removals as f64, t.elapsed().as_secs_f64());
    log("removals done".into());

    // 7. Durable single-put transactions of fresh keys from 1, 16 and 64 writers.
    for writers in DURABLE_WRITERS {
        settle(&dir);
        let stop = Arc::new(AtomicBool::new(false));
        let done = counters(writers);
        let workers = (0..writers)
            .map(|t| exec.spawn(durable_worker(db.clone(), t, stop.clone(), done.clone())))
            .collect();
        let (ops, s) = window(secs, &done);
        stop.store(true, Ordering::Relaxed);
        exec.join(workers);
        emit_ops(&format!("durable{writers}"), ops, s);
        log(format!(
            "{writers} durable writers: {:.0} commits/s",
            ops / s
        ));
    }

    settle(&dir);
    // 8. Contended read-modify-write: 64 writers, each transaction incrementing the counter of
    // a key drawn uniformly from a hot set of 1% of the bulk-loaded keys (ones not removed).
    // The counters' sum before and after must differ by the commits: no update lost.
    let hot = removals..removals + (n / 100).max(1);
    contended_phase(&exec, &db, hot.clone(), secs, "rmw", false);
    if E::SNAPSHOT_ISOLATION {
        // The same row under snapshot isolation (write-write conflicts only).
        settle(&dir);
        contended_phase(&exec, &db, hot, secs, "rmw_si", true);
    }

    let db = Arc::into_inner(db).expect("no worker holds the engine");
    exec.block_on(db.close());
    let _ = fs::remove_dir_all(&dir);
}

/// Phase 8: contended read-modify-write from `CONTENDED_WRITERS` writers over `hot`, reported
/// under `name`; `snapshot` runs the engine's snapshot-isolation variant.
fn contended_phase<E: Engine>(
    exec: &Exec,
    db: &Arc<E>,
    hot: Range<u64>,
    secs: Duration,
    name: &str,
    snapshot: bool,
) {
    let before = exec.block_on(db.counters(hot.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let done = counters(CONTENDED_WRITERS);
    let retries = counters(CONTENDED_WRITERS);
    let workers = (0..CONTENDED_WRITERS)
        .map(|t| {
            exec.spawn(rmw_worker(
                db.clone(),
                t,
                hot.clone(),
                stop.clone(),
                done.clone(),
                retries.clone(),
                snapshot,
            ))
        })
        .collect();
    let (ops, s) = window(secs, &done);
    stop.store(true, Ordering::Relaxed);
    exec.join(workers);
    let after = exec.block_on(db.counters(hot.clone()));
    let commits = sum(&done);
    emit_ops(name, ops, s);
    emit(&format!("{name}.commits"), commits as f64);
    emit(&format!("{name}.retries"), sum(&retries) as f64);
    emit(&format!("{name}.hot_keys"), (hot.end - hot.start) as f64);
    emit(
        &format!("{name}.lost"),
        commits.wrapping_sub(after.wrapping_sub(before)) as i64 as f64,
    );
    eprintln!(
        "  {}: contended read-modify-write ({name}): {:.0} commits/s",
        E::NAME,
        ops / s
    );
}

/// The child process: runs every phase on one engine.
fn run_engine(engine: &str, root: &Path) {
    match engine {
        #[cfg(feature = "ringtide-kv")]
        Ringtide::NAME => run::<Ringtide>(root),
        Redb::NAME => run::<Redb>(root),
        Lmdb::NAME => run::<Lmdb>(root),
        FjallSw::NAME => run::<FjallSw>(root),
        FjallOtx::NAME => run::<FjallOtx>(root),
        #[cfg(feature = "rocksdb")]
        rocks::Rocks::NAME => run::<rocks::Rocks>(root),
        other => panic!("unknown engine {other:?}; this build has {:?}", engines()),
    }
}

fn setup(engine: &str) -> &'static str {
    match engine {
        #[cfg(feature = "ringtide-kv")]
        Ringtide::NAME => Ringtide::SETUP,
        Redb::NAME => Redb::SETUP,
        Lmdb::NAME => Lmdb::SETUP,
        FjallSw::NAME => FjallSw::SETUP,
        FjallOtx::NAME => FjallOtx::SETUP,
        #[cfg(feature = "rocksdb")]
        rocks::Rocks::NAME => rocks::Rocks::SETUP,
        _ => "",
    }
}

// ---------------------------------------------------------------------------------------------
// The parent: one child per engine, then the tables

struct Report<'a> {
    runs: &'a Runs,
}

impl Report<'_> {
    /// One table of throughput rows: for each (variant, metric), a row per engine.
    fn table(&self, title: &str, unit: &str, variants: &[(&str, &str)]) {
        println!("## {title}\n");
        println!("| variant | engine | {unit} | time | {unit}/s | ringtide ÷ this | this ÷ best |");
        println!("|---|---|---:|---:|---:|---:|---:|");
        for (variant, metric) in variants {
            let best = self
                .runs
                .results
                .iter()
                .filter_map(|(_, m)| Runs::rate(m.as_ref()?, metric))
                .fold(None, |b: Option<f64>, r| Some(b.map_or(r, |b| b.max(r))));
            let rt = self.runs.ringtide().and_then(|m| Runs::rate(m, metric));
            for (engine, m) in &self.runs.results {
                let Some(m) = m else {
                    println!("| {variant} | {engine} | failed | | | | |");
                    continue;
                };
                let (Some(ops), Some(s), Some(rate)) = (
                    m.get(&format!("{metric}.ops")),
                    m.get(&format!("{metric}.s")),
                    Runs::rate(m, metric),
                ) else {
                    println!("| {variant} | {engine} | — | | | | |");
                    continue;
                };
                println!(
                    "| {variant} | {engine} | {} | {} | {} | {} | {} |",
                    num(*ops),
                    seconds(*s),
                    num(rate),
                    ratio(rt, Some(rate)),
                    ratio(Some(rate), best),
                );
            }
        }
        println!();
    }

    fn contended(&self) {
        println!("## 8. Contended read-modify-write ({CONTENDED_WRITERS} writers, durable)\n");
        println!(
            "| engine | hot keys | commits/s | retries per commit | conflict rate | lost updates \
             | ringtide ÷ this |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        let rt = self.runs.ringtide().and_then(|m| Runs::rate(m, "rmw"));
        for (engine, m) in &self.runs.results {
            let Some(m) = m else {
                println!("| {engine} | failed | | | | | |");
                continue;
            };
            for (row, label) in [
                ("rmw", String::new()),
                ("rmw_si", " (snapshot isolation)".into()),
            ] {
                let get = |k: &str| m.get(&format!("{row}.{k}")).copied();
                let Some(commits) = get("commits") else {
                    continue;
                };
                let retries = get("retries").unwrap_or(0.0);
                let rate = Runs::rate(m, row);
                println!(
                    "| {engine}{label} | {} | {} | {:.3} | {:.1}% | {} | {} |",
                    num(get("hot_keys").unwrap_or(0.0)),
                    rate.map_or("—".into(), num),
                    retries / commits.max(1.0),
                    100.0 * retries / (commits + retries).max(1.0),
                    num(get("lost").unwrap_or(0.0)),
                    ratio(rt, rate),
                );
            }
        }
        println!(
            "\nEach transaction reads a key drawn uniformly from the hot set (1% of the bulk-loaded \
             keys), adds 1 to a counter in its value and writes it back. A retry is a commit that \
             failed with a conflict (optimistic engines); redb, LMDB and fjall's single-writer \
             transactions serialize writers instead. ringtide runs the row twice: serializable \
             (its default) and snapshot isolation, which validates write-write conflicts only \
             (a read-modify-write of one key conflicts under both). \"Lost updates\" compares the counters' sum \
             before and after with the commits counted (warm-up included): it must be 0.\n"
        );
    }

    fn memory(&self, n: u64) {
        println!("## 9. Memory: resident set after the bulk load\n");
        println!(
            "| engine | VmRSS before open | VmRSS after load | Δ VmRSS per 1M keys | Δ RssAnon per \
             1M keys | files per 1M keys | ringtide ÷ this (Δ VmRSS) |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        let per_m = 1e6 / n as f64;
        let delta = |m: &Metrics, a: &str, b: &str| -> Option<f64> {
            Some((m.get(b)? - m.get(a)?) * per_m / 1024.0)
        };
        let rt = self
            .runs
            .ringtide()
            .and_then(|m| delta(m, "mem.rss_before_kib", "mem.rss_after_kib"));
        let mib = |v: Option<f64>| v.map_or("—".into(), |v| format!("{v:.1} MiB"));
        for (engine, m) in &self.runs.results {
            let Some(m) = m else {
                println!("| {engine} | failed | | | | | |");
                continue;
            };
            let rss = delta(m, "mem.rss_before_kib", "mem.rss_after_kib");
            println!(
                "| {engine} | {} | {} | {} | {} | {} | {} |",
                mib(m.get("mem.rss_before_kib").map(|v| v / 1024.0)),
                mib(m.get("mem.rss_after_kib").map(|v| v / 1024.0)),
                mib(rss),
                mib(delta(m, "mem.anon_before_kib", "mem.anon_after_kib")),
                mib(m.get("mem.disk_bytes").map(|v| v * per_m / 1048576.0)),
                ratio(rt, rss),
            );
        }
        println!(
            "\nVmRSS counts file pages mapped into the process too (LMDB reads through a memory \
             map); RssAnon is the heap (caches, memtables). Files: the engine's directory right \
             after the bulk load's commit (background flushes or compactions may still change \
             it).\n"
        );
    }
}

fn main() {
    let Some(parent) = run_comparison("KV_ENGINES", &engines(), "kv-compare-", run_engine) else {
        return;
    };
    let n = n_keys();
    let secs = secs();
    let report = Report { runs: &parent.runs };

    println!("# Key-value comparison\n");
    println!(
        "The phases of redb's benchmark; {}-byte random keys, {}-byte random values; every write \
         transaction durable (fsync'd) when its commit returns. N = {} keys bulk-loaded; timed \
         rows {} s after a {:.1} s warm-up; {}. Engines: {VERSIONS}.\n",
        KEY,
        VALUE,
        num(n as f64),
        secs.as_secs_f64(),
        WARMUP.as_secs_f64(),
        parent.conditions(),
    );
    report.runs.print_setups(setup);
    if report.runs.ringtide().is_none() {
        println!(
            "\nringtide's key-value store is not in this run (cargo feature `ringtide-kv`): the \
             \"ringtide ÷ this\" columns are empty."
        );
    }
    println!(
        "\n\"ringtide ÷ this\": ringtide's rate over the row's (above 1 = ringtide faster); \
         \"this ÷ best\": the row's rate over the best engine's in that variant.\n"
    );

    report.table(
        "1. Bulk load (one transaction)",
        "keys",
        &[("N keys, 1 txn", "bulk")],
    );
    report.table(
        "2. Individual writes (one put per durable transaction)",
        "txns",
        &[("1 thread", "individual")],
    );
    report.table(
        &format!("3. Batch writes ({BATCH_WRITES} durable transactions of {BATCH_SIZE} puts)"),
        "keys",
        &[("1 thread", "batch")],
    );
    report.table(
        "4. Random reads of the bulk-loaded keys",
        "reads",
        &[
            ("1 thread, 1 read txn (median of 3)", "read1"),
            (
                "1 thread, 1 txn per read (median of 3)",
                "read1_txn_per_read",
            ),
            ("8 threads, 1 read txn each", "read8"),
            ("32 threads, 1 read txn each", "read32"),
        ],
    );
    report.table(
        &format!("5. Range reads ({SCAN_LEN} entries each, 1 read txn, median of 3)"),
        "ranges",
        &[("1 thread", "scan")],
    );
    report.table(
        "6. Removals (half the bulk-loaded keys, one transaction)",
        "keys",
        &[("1 thread", "remove")],
    );
    report.table(
        "7. Durable single-put transactions, concurrent writers",
        "commits",
        &[
            ("1 writer", "durable1"),
            ("16 writers", "durable16"),
            ("64 writers", "durable64"),
        ],
    );
    report.contended();
    report.memory(n);
    eprintln!("total {:.0} s", parent.started.elapsed().as_secs_f64());
}
