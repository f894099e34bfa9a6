//! fjall 3 (crate `fjall3`): its single-writer transactions ([`FjallSw`], engine `fjall`, in both
//! comparisons) and its optimistic ones ([`FjallOtx`], engine `fjall-otx`, in the key-value
//! comparison).

use std::ops::Range;
use std::path::Path;
use std::thread;
use std::time::Duration;

use bytes::Bytes;

use crate::engine::{Engine, MemorySplit, Ycsb};
use crate::kvdata::{CACHE_SIZE, counter, incremented, key, pair};

/// fjall's single-writer transactions, as in redb's benchmark: 4 GiB cache, one keyspace; each
/// write transaction commits to the journal (buffered) under the writer lock, then
/// `persist(SyncData)` outside it, so concurrent writers' fsyncs may cover each other's commits.
pub struct FjallSw {
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
pub struct FjallOtx {
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

impl FjallSw {
    /// [`Ycsb::open_bounded`], with key-value separation if `separated`: the keyspace created
    /// with `with_kv_separation(Some(KvSeparationOptions::default()))` (fjall 3.1.13 / lsm-tree
    /// 3.1.10: values of 1 KiB or more go to blob files of 64 MiB, lz4; a compaction relocates
    /// the live values of the oldest quarter of the blob files its tables point into that are
    /// at least 25% stale). Without, as `open_bounded`.
    pub fn open_bounded_separated(dir: &Path, budget: u64, separated: bool) -> Self {
        let m = MemorySplit::of(budget);
        let db = fjall3::SingleWriterTxDatabase::builder(dir)
            .cache_size(m.cache)
            .open()
            .expect("fjall open");
        let ks = db
            .keyspace("kv", || {
                fjall3::KeyspaceCreateOptions::default()
                    .max_memtable_size(m.write_buffer)
                    .with_kv_separation(separated.then(fjall3::KvSeparationOptions::default))
            })
            .expect("fjall keyspace");
        Self { db, ks }
    }
}

/// fjall's memtables and cache under a budget: the same sizes as ringtide's
/// ([`MemorySplit::of`]): memtables of `write_buffer` bytes (`max_memtable_size`), a block
/// cache of `cache` bytes. fjall lets up to 4 sealed memtables wait for their flush before it
/// halts writes (ringtide: `immutables`, 2); its total write-buffer cap
/// (`max_write_buffer_size`) is hidden and deprecated, so it is left unset.
impl Ycsb for FjallSw {
    fn ycsb_setup(budget: u64) -> String {
        let m = MemorySplit::of(budget);
        format!(
            "SingleWriterTxDatabase; cache_size {} MiB, max_memtable_size {} MiB (up to 4 sealed \
             memtables before writes halt: at most {} MiB of memtables + cache); writes to the OS, \
             not synced (durable: `persist(SyncData)` after the insert); point reads \
             `Keyspace::get`, scans in a `read_tx` snapshot; data blocks as fjall's defaults",
            m.cache >> 20,
            m.write_buffer >> 20,
            (5 * m.write_buffer + m.cache) >> 20,
        )
    }

    async fn open_bounded(dir: &Path, budget: u64) -> Self {
        Self::open_bounded_separated(dir, budget, false)
    }

    async fn read(&self, key: &[u8]) -> Option<u64> {
        let v = self.ks.get(key).expect("fjall get")?;
        Some(counter(&v))
    }

    async fn write(&self, key: Bytes, value: Bytes, durable: bool) {
        self.ks
            .insert(key.as_ref(), value.as_ref())
            .expect("fjall insert");
        if durable {
            self.persist();
        }
    }

    async fn write_batch(&self, batch: Vec<(Bytes, Option<Bytes>)>) {
        let mut tx = self.db.write_tx();
        for (k, v) in batch {
            match v {
                Some(v) => tx.insert(&self.ks, k.as_ref(), v.as_ref()),
                None => tx.remove(&self.ks, k.as_ref()),
            }
        }
        tx.commit().expect("fjall commit");
    }

    async fn scan_from(&self, key: &[u8], len: usize) -> usize {
        use fjall3::Readable;
        let s = self.db.read_tx();
        let mut n = 0;
        for g in s.range(&self.ks, key..).take(len) {
            let v = g.value().expect("fjall range");
            assert!(!v.is_empty(), "fjall: an empty value");
            n += 1;
        }
        n
    }

    fn figures(&self) -> Vec<(&'static str, f64)> {
        let (db, ks) = (self.db.inner(), self.ks.inner());
        let mut figures = vec![
            ("cache_bytes", db.cache_size() as f64),
            ("write_buffer_bytes", db.write_buffer_size() as f64),
            ("tables", ks.table_count() as f64),
            ("l0_tables", ks.l0_table_count() as f64),
            ("journals", db.journal_count() as f64),
            ("compactions", db.compactions_completed() as f64),
        ];
        if ks.is_kv_separated() {
            figures.extend([
                ("blob_files", ks.blob_file_count() as f64),
                ("blob_stale_bytes", ks.fragmented_blob_bytes() as f64),
            ]);
        }
        figures
    }

    /// The active memtable rotated and flushed (`rotate_memtable_and_wait`), then polled until
    /// no flush is queued and no compaction runs, nor has completed, for half a second (fjall
    /// starts compactions from its workers after each flush, one pass per message).
    async fn quiesce(&self) {
        self.ks
            .inner()
            .rotate_memtable_and_wait()
            .expect("fjall rotate");
        let db = self.db.inner();
        let mut quiet = 0;
        let mut completed = db.compactions_completed();
        while quiet < 10 {
            thread::sleep(Duration::from_millis(50));
            let now = db.compactions_completed();
            if db.outstanding_flushes() == 0 && db.active_compactions() == 0 && now == completed {
                quiet += 1;
            } else {
                quiet = 0;
            }
            completed = now;
        }
    }

    const COMPACTION: &'static str =
        "`major_compact` of the keyspace (every table into the last level)";

    async fn compact(&self) {
        self.ks
            .inner()
            .major_compact()
            .expect("fjall major_compact");
    }
}
