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
//! Each engine runs in a child process of its own (this binary again, with `KV_ENGINE` set), so
//! that its resident-set figures start from a fresh heap and no engine's background threads or
//! caches outlive its rows. The child prints `@kv <metric> <value>` lines on stdout; the parent
//! gathers them and prints the tables.

use std::collections::BTreeMap;
use std::fs;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Key and value sizes, as in redb's benchmark.
const KEY: usize = 24;
const VALUE: usize = 150;
type Key = [u8; KEY];
type Val = [u8; VALUE];

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
/// Warm-up before each timed window.
const WARMUP: Duration = Duration::from_millis(500);
/// Block cache / page cache of the engines that take one: redb's benchmark gives each 4 GiB.
const CACHE_SIZE: usize = 4 << 30;
/// Keys of the timed durable rows are drawn from indexes at and above this one (the bulk load,
/// individual and batch writes use indexes below `N + 101,000`).
const FRESH: u64 = 1 << 48;

/// The engines this build can run, in table order. ringtide comes first when it is built in.
fn engines() -> Vec<&'static str> {
    let mut v = Vec::new();
    #[cfg(feature = "ringtide-kv")]
    v.push(ringtide_engine::Ringtide::NAME);
    v.extend([Redb::NAME, Lmdb::NAME, FjallSw::NAME, FjallOtx::NAME]);
    #[cfg(feature = "rocksdb")]
    v.push(rocks::Rocks::NAME);
    v
}

/// The versions in Cargo.toml, for the report's header.
const VERSIONS: &str = "redb 4.6.0, heed 0.23.1 (LMDB mdb.master via lmdb-master-sys 0.2.6), \
                        fjall 3.1.13, rocksdb 0.25.0 (RocksDB 11.8.1, feature `rocksdb`)";

/// The key and value of index `i`: a function of the index alone, so any subset of the keys
/// written can be read back (and checked) in any order or from any thread.
fn pair(i: u64) -> (Key, Val) {
    let mut rng = fastrand::Rng::with_seed(3 ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut k = [0u8; KEY];
    rng.fill(&mut k);
    let mut v = [0u8; VALUE];
    rng.fill(&mut v);
    (k, v)
}

fn key(i: u64) -> Key {
    pair(i).0
}

/// The read-modify-write counter: the first 8 bytes of a value, little-endian.
fn counter(v: &[u8]) -> u64 {
    u64::from_le_bytes(v[..8].try_into().expect("values are 150 bytes"))
}

/// `v` with its counter incremented.
fn incremented(v: &[u8]) -> Vec<u8> {
    let mut out = v.to_vec();
    out[..8].copy_from_slice(&counter(v).wrapping_add(1).to_le_bytes());
    out
}

// ---------------------------------------------------------------------------------------------
// The engine trait

/// One engine under test. Every write transaction is durable when the future returns.
///
/// The methods are coarse (a whole transaction, or a whole loop of reads) and `async`, so that
/// one set of phases drives both kinds of engine: the peers' blocking implementations never
/// await, and their workers are OS threads polling them with a trivial executor; ringtide's
/// (`ASYNC = true`) are tokio tasks on a multi-thread runtime.
trait Engine: Send + Sync + Sized + 'static {
    const NAME: &'static str;
    /// Workers are tokio tasks on a multi-thread runtime (2 workers) instead of OS threads.
    const ASYNC: bool = false;
    /// What the tables say of the engine's setup.
    const SETUP: &'static str;

    fn open(dir: &Path) -> impl Future<Output = Self> + Send;
    /// One transaction putting the pairs of `indexes`.
    fn put(&self, indexes: Range<u64>) -> impl Future<Output = ()> + Send;
    /// One transaction removing the keys of `indexes`.
    fn remove(&self, indexes: Range<u64>) -> impl Future<Output = ()> + Send;
    /// A point read of each key of `indexes`, all in one read transaction (snapshot) or each in
    /// a transaction of its own. Returns the sum of the first byte of the values read; panics on
    /// a missing key.
    fn get(&self, indexes: Range<u64>, txn_per_read: bool) -> impl Future<Output = u64> + Send;
    /// One read transaction; from each key of `indexes`, a forward range read of up to `len`
    /// entries. Returns the sum of the first byte of the values read.
    fn scan(&self, indexes: Range<u64>, len: usize) -> impl Future<Output = u64> + Send;
    /// One read-modify-write transaction adding 1 to the counter of key `i`'s value. Returns the
    /// retries it took (conflicts of an optimistic engine; 0 where writers are serialized).
    fn increment(&self, i: u64) -> impl Future<Output = u64> + Send;
    /// The engine also runs the contended row under snapshot isolation (a second row).
    const SNAPSHOT_ISOLATION: bool = false;
    /// As `increment`, under snapshot isolation where the engine offers it (`SNAPSHOT_ISOLATION`).
    fn increment_snapshot(&self, i: u64) -> impl Future<Output = u64> + Send {
        self.increment(i)
    }
    /// One read transaction: the wrapping sum of the counters of the keys of `indexes`.
    fn counters(&self, indexes: Range<u64>) -> impl Future<Output = u64> + Send;
    /// Closes the engine, waiting for its background work.
    fn close(self) -> impl Future<Output = ()> + Send;
}

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
// fjall

/// fjall's single-writer transactions, as in redb's benchmark: 4 GiB cache, one keyspace; each
/// write transaction commits to the journal (buffered) under the writer lock, then
/// `persist(SyncData)` outside it, so concurrent writers' fsyncs may cover each other's commits.
struct FjallSw {
    db: fjall3::SingleWriterTxDatabase,
    ks: fjall3::SingleWriterTxKeyspace,
}

impl FjallSw {
    fn persist(&self) {
        self.db
            .persist(fjall3::PersistMode::SyncData)
            .expect("fjall persist");
    }
}

impl Engine for FjallSw {
    const NAME: &'static str = "fjall";
    const SETUP: &'static str =
        "SingleWriterTxDatabase, 4 GiB cache; commit, then persist(SyncData)";

    async fn open(dir: &Path) -> Self {
        let db = fjall3::SingleWriterTxDatabase::builder(dir)
            .cache_size(CACHE_SIZE as u64)
            .open()
            .expect("fjall open");
        let ks = db
            .keyspace("kv", fjall3::KeyspaceCreateOptions::default)
            .expect("fjall keyspace");
        Self { db, ks }
    }

    async fn put(&self, indexes: Range<u64>) {
        let mut tx = self.db.write_tx();
        for i in indexes {
            let (k, v) = pair(i);
            tx.insert(&self.ks, k.as_slice(), v.as_slice());
        }
        tx.commit().expect("fjall commit");
        self.persist();
    }

    async fn remove(&self, indexes: Range<u64>) {
        let mut tx = self.db.write_tx();
        for i in indexes {
            tx.remove(&self.ks, key(i).as_slice());
        }
        tx.commit().expect("fjall commit");
        self.persist();
    }

    async fn get(&self, indexes: Range<u64>, txn_per_read: bool) -> u64 {
        fjall_get(|| self.db.read_tx(), &self.ks, indexes, txn_per_read)
    }

    async fn scan(&self, indexes: Range<u64>, len: usize) -> u64 {
        fjall_scan(&self.db.read_tx(), &self.ks, indexes, len)
    }

    async fn increment(&self, i: u64) -> u64 {
        use fjall3::Readable;
        let k = key(i);
        let mut tx = self.db.write_tx();
        let v = tx
            .get(&self.ks, k)
            .expect("fjall get")
            .expect("key missing");
        tx.insert(&self.ks, k.as_slice(), incremented(&v));
        tx.commit().expect("fjall commit");
        self.persist();
        0
    }

    async fn counters(&self, indexes: Range<u64>) -> u64 {
        fjall_counters(&self.db.read_tx(), &self.ks, indexes)
    }

    async fn close(self) {
        drop(self.ks);
        drop(self.db);
    }
}

/// fjall's optimistic (serializable snapshot isolation) transactions: writers run concurrently
/// and a commit whose reads were overwritten fails with `Conflict` and is retried. Otherwise as
/// [`FjallSw`].
struct FjallOtx {
    db: fjall3::OptimisticTxDatabase,
    ks: fjall3::OptimisticTxKeyspace,
}

impl FjallOtx {
    fn persist(&self) {
        self.db
            .persist(fjall3::PersistMode::SyncData)
            .expect("fjall persist");
    }

    /// Runs `body` in a write transaction until it commits; returns the retries.
    fn with_retry(&self, body: impl Fn(&mut fjall3::OptimisticWriteTx)) -> u64 {
        let mut retries = 0;
        loop {
            let mut tx = self.db.write_tx().expect("fjall write_tx");
            body(&mut tx);
            match tx.commit().expect("fjall commit") {
                Ok(()) => break,
                Err(fjall3::Conflict) => retries += 1,
            }
        }
        self.persist();
        retries
    }
}

impl Engine for FjallOtx {
    const NAME: &'static str = "fjall-otx";
    const SETUP: &'static str =
        "OptimisticTxDatabase, 4 GiB cache; commit (retried on conflict), then persist(SyncData)";

    async fn open(dir: &Path) -> Self {
        let db = fjall3::OptimisticTxDatabase::builder(dir)
            .cache_size(CACHE_SIZE as u64)
            .open()
            .expect("fjall open");
        let ks = db
            .keyspace("kv", fjall3::KeyspaceCreateOptions::default)
            .expect("fjall keyspace");
        Self { db, ks }
    }

    async fn put(&self, indexes: Range<u64>) {
        self.with_retry(|tx| {
            for i in indexes.clone() {
                let (k, v) = pair(i);
                tx.insert(&self.ks, k.as_slice(), v.as_slice());
            }
        });
    }

    async fn remove(&self, indexes: Range<u64>) {
        self.with_retry(|tx| {
            for i in indexes.clone() {
                tx.remove(&self.ks, key(i).as_slice());
            }
        });
    }

    async fn get(&self, indexes: Range<u64>, txn_per_read: bool) -> u64 {
        fjall_get(|| self.db.read_tx(), &self.ks, indexes, txn_per_read)
    }

    async fn scan(&self, indexes: Range<u64>, len: usize) -> u64 {
        fjall_scan(&self.db.read_tx(), &self.ks, indexes, len)
    }

    async fn increment(&self, i: u64) -> u64 {
        use fjall3::Readable;
        let k = key(i);
        self.with_retry(|tx| {
            let v = tx
                .get(&self.ks, k)
                .expect("fjall get")
                .expect("key missing");
            tx.insert(&self.ks, k.as_slice(), incremented(&v));
        })
    }

    async fn counters(&self, indexes: Range<u64>) -> u64 {
        fjall_counters(&self.db.read_tx(), &self.ks, indexes)
    }

    async fn close(self) {
        drop(self.ks);
        drop(self.db);
    }
}

fn fjall_get<K: AsRef<fjall3::Keyspace>>(
    snapshot: impl Fn() -> fjall3::Snapshot,
    ks: &K,
    indexes: Range<u64>,
    txn_per_read: bool,
) -> u64 {
    use fjall3::Readable;
    let read = |s: &fjall3::Snapshot, i: u64| -> u64 {
        let v = s.get(ks, key(i)).expect("fjall get");
        v.expect("key missing")[0] as u64
    };
    let mut sum = 0;
    if txn_per_read {
        for i in indexes {
            sum += read(&snapshot(), i);
        }
    } else {
        let s = snapshot();
        for i in indexes {
            sum += read(&s, i);
        }
    }
    sum
}

fn fjall_scan<K: AsRef<fjall3::Keyspace>>(
    s: &fjall3::Snapshot,
    ks: &K,
    indexes: Range<u64>,
    len: usize,
) -> u64 {
    use fjall3::Readable;
    let mut sum = 0;
    for i in indexes {
        let k = key(i);
        for g in s.range(ks, k.as_slice()..).take(len) {
            sum += g.value().expect("fjall range")[0] as u64;
        }
    }
    sum
}

fn fjall_counters<K: AsRef<fjall3::Keyspace>>(
    s: &fjall3::Snapshot,
    ks: &K,
    indexes: Range<u64>,
) -> u64 {
    use fjall3::Readable;
    indexes.fold(0u64, |sum, i| {
        let v = s.get(ks, key(i)).expect("fjall get");
        sum.wrapping_add(counter(&v.expect("key missing")))
    })
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
// ringtide (feature `ringtide-kv`)
//
// On by default (feature `ringtide-kv`). Default `DbOptions`: every commit is durable (an
// fdatasync covers it before `commit` returns). Part 1 of the store keeps everything in memory.

#[cfg(feature = "ringtide-kv")]
mod ringtide_engine {
    use super::*;
    use bytes::Bytes;
    use futures::StreamExt;
    use ringtide::kv::{Db, DbOptions, Isolation, TxnOptions};

    pub struct Ringtide {
        db: Db,
    }

    fn b(k: &[u8]) -> Bytes {
        Bytes::copy_from_slice(k)
    }

    fn snapshot() -> TxnOptions {
        TxnOptions::default()
            .isolation(Isolation::Snapshot)
            .read_only(true)
    }

    impl Ringtide {
        /// One read-modify-write through `Db::update_with`, as a user would write it (it waits
        /// for the winner of a conflict to be visible before retrying); the closure counts its
        /// runs, so the retries are the runs but one.
        async fn increment_with(&self, i: u64, options: TxnOptions) -> u64 {
            let k = b(&key(i));
            let runs = AtomicU64::new(0);
            self.db
                .update_with(options, |txn| {
                    runs.fetch_add(1, Ordering::Relaxed);
                    let k = k.clone();
                    async move {
                        let v = txn.get(k.clone()).await?;
                        txn.put(k, incremented(&v.expect("key missing")))?;
                        Ok(())
                    }
                })
                .await
                .expect("ringtide update");
            runs.load(Ordering::Relaxed) - 1
        }
    }

    impl Engine for Ringtide {
        const NAME: &'static str = "ringtide";
        const ASYNC: bool = true;
        const SETUP: &'static str =
            "ringtide::kv, DbOptions::default(), block cache 4 GiB (as the other engines' caches)";

        async fn open(dir: &Path) -> Self {
            // Default options (durable commits, `SyncPolicy::Immediate`); the hot-key row needs
            // more retries than the default 32 with 64 writers on 1% of the keys.
            let options = DbOptions::default()
                .max_update_attempts(100_000)
                .block_cache_bytes(CACHE_SIZE as u64);
            let db = Db::open(dir, options)
                .await
                .expect("ringtide open");
            Self { db }
        }

        async fn put(&self, indexes: Range<u64>) {
            let txn = self
                .db
                .begin(TxnOptions::default())
                .expect("ringtide begin");
            for i in indexes {
                let (k, v) = pair(i);
                txn.put(b(&k), b(&v)).expect("ringtide put");
            }
            txn.commit().await.expect("ringtide commit");
        }

        async fn remove(&self, indexes: Range<u64>) {
            let txn = self
                .db
                .begin(TxnOptions::default())
                .expect("ringtide begin");
            for i in indexes {
                txn.delete(b(&key(i))).expect("ringtide delete");
            }
            txn.commit().await.expect("ringtide commit");
        }

        async fn get(&self, indexes: Range<u64>, txn_per_read: bool) -> u64 {
            let mut sum = 0;
            let mut shared = None;
            for i in indexes {
                if txn_per_read || shared.is_none() {
                    shared = Some(self.db.begin(snapshot()).expect("ringtide begin"));
                }
                let txn = shared.as_ref().expect("a read transaction");
                let v = txn.get(b(&key(i))).await.expect("ringtide get");
                sum += v.expect("key missing")[0] as u64;
            }
            sum
        }

        async fn scan(&self, indexes: Range<u64>, len: usize) -> u64 {
            let txn = self.db.begin(snapshot()).expect("ringtide begin");
            // Past every 24-byte key.
            let end = Bytes::from_static(&[0xFF; KEY + 1]);
            let mut sum = 0;
            for i in indexes {
                let s = txn.scan(b(&key(i))..end.clone()).take(len);
                let mut s = std::pin::pin!(s);
                while let Some(e) = s.next().await {
                    sum += e.expect("ringtide scan").1[0] as u64;
                }
            }
            sum
        }

        async fn increment(&self, i: u64) -> u64 {
            self.increment_with(i, TxnOptions::default()).await
        }

        const SNAPSHOT_ISOLATION: bool = true;

        async fn increment_snapshot(&self, i: u64) -> u64 {
            let options = TxnOptions::default().isolation(Isolation::Snapshot);
            self.increment_with(i, options).await
        }

        async fn counters(&self, indexes: Range<u64>) -> u64 {
            let txn = self.db.begin(snapshot()).expect("ringtide begin");
            let mut sum = 0u64;
            for i in indexes {
                let v = txn.get(b(&key(i))).await.expect("ringtide get");
                sum = sum.wrapping_add(counter(&v.expect("key missing")));
            }
            sum
        }

        async fn close(self) {
            self.db.close().await.expect("ringtide close");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Executors: OS threads for the blocking engines, tokio tasks for ringtide

struct Exec {
    rt: Option<tokio::runtime::Runtime>,
}

enum Worker<T> {
    Thread(thread::JoinHandle<T>),
    Task(tokio::task::JoinHandle<T>),
}

impl Exec {
    fn new(tokio: bool) -> Self {
        let rt = tokio.then(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime")
        });
        Self { rt }
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        match &self.rt {
            Some(rt) => rt.block_on(f),
            None => futures::executor::block_on(f),
        }
    }

    fn spawn<T: Send + 'static>(&self, f: impl Future<Output = T> + Send + 'static) -> Worker<T> {
        match &self.rt {
            Some(rt) => Worker::Task(rt.spawn(f)),
            None => Worker::Thread(thread::spawn(move || futures::executor::block_on(f))),
        }
    }

    fn join<T>(&self, workers: Vec<Worker<T>>) -> Vec<T> {
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
struct Counter(AtomicU64);

fn sum(counters: &[Counter]) -> u64 {
    counters.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
}

fn counters(n: usize) -> Arc<Vec<Counter>> {
    Arc::new((0..n).map(|_| Counter::default()).collect())
}

/// Lets the workers run through the warm-up, then counts their operations for `secs`.
/// Returns (operations, seconds).
fn window(secs: Duration, counters: &[Counter]) -> (f64, f64) {
    thread::sleep(WARMUP);
    let c0 = sum(counters);
    let t0 = Instant::now();
    thread::sleep(secs);
    let c1 = sum(counters);
    ((c1 - c0) as f64, t0.elapsed().as_secs_f64())
}

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
    std::env::var("KV_N")
        .ok()
        .and_then(|s| s.replace(['_', ','], "").parse::<u64>().ok())
        .filter(|n| *n >= 1000)
        .unwrap_or(1_000_000)
}

fn secs() -> Duration {
    let s = std::env::var("KV_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(3.0);
    Duration::from_secs_f64(s)
}

/// One result line for the parent.
fn emit(metric: &str, value: f64) {
    println!("@kv {metric} {value}");
}

/// A timed phase: `ops` operations in `secs` seconds.
fn emit_ops(metric: &str, ops: f64, secs: f64) {
    emit(&format!("{metric}.ops"), ops);
    emit(&format!("{metric}.s"), secs);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (VmRSS, RssAnon) of this process, KiB.
fn rss_kib() -> (u64, u64) {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"))
}

/// Bytes allocated to the files under `dir`, recursively (blocks, not lengths: fjall's journal
/// is a sparse file of a preset length).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => disk_bytes(&e.path()),
                    Ok(m) => m.blocks() * 512,
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
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
fn child(engine: &str) {
    let root = PathBuf::from(std::env::var("KV_ROOT").expect("KV_ROOT"));
    match engine {
        #[cfg(feature = "ringtide-kv")]
        ringtide_engine::Ringtide::NAME => run::<ringtide_engine::Ringtide>(&root),
        Redb::NAME => run::<Redb>(&root),
        Lmdb::NAME => run::<Lmdb>(&root),
        FjallSw::NAME => run::<FjallSw>(&root),
        FjallOtx::NAME => run::<FjallOtx>(&root),
        #[cfg(feature = "rocksdb")]
        rocks::Rocks::NAME => run::<rocks::Rocks>(&root),
        other => panic!("unknown engine {other:?}; this build has {:?}", engines()),
    }
}

fn setup(engine: &str) -> &'static str {
    match engine {
        #[cfg(feature = "ringtide-kv")]
        ringtide_engine::Ringtide::NAME => ringtide_engine::Ringtide::SETUP,
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

type Metrics = BTreeMap<String, f64>;

/// Lets earlier phases' (or engines') writeback drain: `syncfs` of the file system holding
/// `dir`, then a short pause, so that one phase's dirty pages do not slow the next one's fsyncs.
fn settle(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        // SAFETY: `d` owns a valid open descriptor for the whole call.
        unsafe { libc::syncfs(d.as_raw_fd()) };
    }
    thread::sleep(Duration::from_millis(300));
}

fn run_child(engine: &str, root: &Path) -> Result<Metrics, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .env("KV_ENGINE", engine)
        .env("KV_ROOT", root)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut m = Metrics::new();
    let out = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(out).lines() {
        let line = line.map_err(|e| e.to_string())?;
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some("@kv"), Some(k), Some(v)) => {
                m.insert(k.to_string(), v.parse().map_err(|_| line.clone())?);
            }
            _ => eprintln!("  {engine}: {line}"),
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(m)
    } else {
        Err(format!("{status}"))
    }
}

/// An integer with thousands separators.
fn num(v: f64) -> String {
    let s = format!("{:.0}", v);
    let (sign, digits) = s.strip_prefix('-').map_or(("", &s[..]), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "—".into(),
    }
}

fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

struct Report {
    /// (engine, its metrics) in table order; a failed engine has none.
    results: Vec<(&'static str, Option<Metrics>)>,
}

impl Report {
    fn rate(m: &Metrics, metric: &str) -> Option<f64> {
        let ops = m.get(&format!("{metric}.ops"))?;
        let s = m.get(&format!("{metric}.s"))?;
        (*s > 0.0).then(|| ops / s)
    }

    fn ringtide(&self) -> Option<&Metrics> {
        self.results
            .iter()
            .find(|(e, _)| *e == "ringtide")
            .and_then(|(_, m)| m.as_ref())
    }

    /// One table of throughput rows: for each (variant, metric), a row per engine.
    fn table(&self, title: &str, unit: &str, variants: &[(&str, &str)]) {
        println!("## {title}\n");
        println!("| variant | engine | {unit} | time | {unit}/s | ringtide ÷ this | this ÷ best |");
        println!("|---|---|---:|---:|---:|---:|---:|");
        for (variant, metric) in variants {
            let best = self
                .results
                .iter()
                .filter_map(|(_, m)| Self::rate(m.as_ref()?, metric))
                .fold(None, |b: Option<f64>, r| Some(b.map_or(r, |b| b.max(r))));
            let rt = self.ringtide().and_then(|m| Self::rate(m, metric));
            for (engine, m) in &self.results {
                let Some(m) = m else {
                    println!("| {variant} | {engine} | failed | | | | |");
                    continue;
                };
                let (Some(ops), Some(s), Some(rate)) = (
                    m.get(&format!("{metric}.ops")),
                    m.get(&format!("{metric}.s")),
                    Self::rate(m, metric),
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
        let rt = self.ringtide().and_then(|m| Self::rate(m, "rmw"));
        for (engine, m) in &self.results {
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
                let rate = Self::rate(m, row);
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
            .ringtide()
            .and_then(|m| delta(m, "mem.rss_before_kib", "mem.rss_after_kib"));
        let mib = |v: Option<f64>| v.map_or("—".into(), |v| format!("{v:.1} MiB"));
        for (engine, m) in &self.results {
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
    if let Ok(engine) = std::env::var("KV_ENGINE") {
        child(&engine);
        return;
    }
    let n = n_keys();
    let secs = secs();
    let all = engines();
    let chosen: Vec<&'static str> = match std::env::var("KV_ENGINES") {
        Ok(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                *all.iter()
                    .find(|e| **e == s)
                    .unwrap_or_else(|| panic!("KV_ENGINES: {s:?} is not one of {all:?}"))
            })
            .collect(),
        Err(_) => all.clone(),
    };

    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    fs::create_dir_all(&target).expect("create compare/target");
    let tmp = tempfile::Builder::new()
        .prefix("kv-compare-")
        .tempdir_in(&target)
        .expect("tempdir_in compare/target");

    let started = Instant::now();
    let mut report = Report {
        results: Vec::new(),
    };
    for engine in chosen {
        settle(tmp.path());
        eprintln!("{engine}:");
        let t = Instant::now();
        match run_child(engine, tmp.path()) {
            Ok(m) => {
                eprintln!("  {engine}: done in {:.0} s", t.elapsed().as_secs_f64());
                report.results.push((engine, Some(m)));
            }
            Err(e) => {
                eprintln!("  {engine}: FAILED ({e})");
                report.results.push((engine, None));
            }
        }
    }

    println!("# Key-value comparison\n");
    println!(
        "The phases of redb's benchmark; {}-byte random keys, {}-byte random values; every write \
         transaction durable (fsync'd) when its commit returns. N = {} keys bulk-loaded; timed \
         rows {} s after a {:.1} s warm-up; each engine in a process of its own; files under {}; \
         {} cores. Engines: {VERSIONS}.\n",
        KEY,
        VALUE,
        num(n as f64),
        secs.as_secs_f64(),
        WARMUP.as_secs_f64(),
        target.display(),
        thread::available_parallelism().map_or(0, |n| n.get()),
    );
    for (engine, _) in &report.results {
        println!("- {engine}: {}", setup(engine));
    }
    if report.ringtide().is_none() {
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
    eprintln!("total {:.0} s", started.elapsed().as_secs_f64());
}
