//! ringtide's key-value store (`ringtide::kv`, cargo feature `ringtide-kv`, on by default) as an
//! engine of both comparisons.
//!
//! Key-value comparison: `DbOptions::default()` (every commit durable: an fdatasync covers it
//! before `commit` returns) with the other engines' 4 GiB block cache. YCSB comparison: a memory
//! budget ([`bounded_options`]) and `SyncPolicy::None` (writes not synced unless a transaction
//! asks for `Durability::Durable`).

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use ringtide::kv::{Db, DbOptions, Durability, Isolation, TxnOptions};
use ringtide::wal::SyncPolicy;

use crate::engine::{Engine, Ycsb};
use crate::kvdata::{CACHE_SIZE, KEY, counter, incremented, key, pair};

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
        let db = Db::open(dir, options).await.expect("ringtide open");
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

impl Ringtide {
    /// [`Ycsb::open_bounded`] with key-value separation's threshold set
    /// (`DbOptions::value_separation_threshold_bytes`: values of this many bytes or more go to
    /// value-log files; 0 turns it off); `None` keeps the store's default (4 KiB).
    pub async fn open_bounded_with(dir: &Path, budget: u64, threshold: Option<u64>) -> Self {
        let mut options = bounded_options(budget)
            .sync_policy(SyncPolicy::None)
            .max_update_attempts(100_000);
        if let Some(t) = threshold {
            options = options.value_separation_threshold_bytes(t);
        }
        let db = Db::open(dir, options).await.expect("ringtide open");
        Self { db }
    }
}

/// The one place that bounds ringtide's memory in the YCSB comparison: the store's own
/// `memory_limit_bytes` (memtables, block cache, the tables' indexes and filters, the conflict
/// history and the flush and compaction buffers under one bound; open transactions' write sets,
/// the wal's buffers and the allocator's overhead are outside it).
pub fn bounded_options(budget: u64) -> DbOptions {
    DbOptions::default().memory_limit_bytes(budget)
}

impl Ycsb for Ringtide {
    fn ycsb_setup(budget: u64) -> String {
        format!(
            "ringtide::kv; memory_limit_bytes {} MiB (memtables, block cache, tables' indexes and \
             filters, conflict history, job buffers; `bounded_options`); \
             `SyncPolicy::None` (durable: the update's transaction asks `Durability::Durable`); \
             a transaction per operation (reads: read-only, snapshot isolation)",
            budget >> 20,
        )
    }

    async fn open_bounded(dir: &Path, budget: u64) -> Self {
        Self::open_bounded_with(dir, budget, None).await
    }

    async fn read(&self, key: &[u8]) -> Option<u64> {
        let txn = self.db.begin(snapshot()).expect("ringtide begin");
        let v = txn.get(key).await.expect("ringtide get")?;
        Some(counter(&v))
    }

    /// Through `Db::update_with`, as a user would write it: two updates of one key that overlap
    /// conflict (first committer wins, blind writes too), and the loser is retried.
    async fn write(&self, key: Bytes, value: Bytes, durable: bool) {
        let mut options = TxnOptions::default();
        if durable {
            options = options.durability(Durability::Durable);
        }
        self.db
            .update_with(options, |txn| {
                let (k, v) = (key.clone(), value.clone());
                async move { txn.put(k, v) }
            })
            .await
            .expect("ringtide update");
    }

    async fn write_batch(&self, batch: Vec<(Bytes, Option<Bytes>)>) {
        let txn = self
            .db
            .begin(TxnOptions::default())
            .expect("ringtide begin");
        for (k, v) in batch {
            match v {
                Some(v) => txn.put(k, v).expect("ringtide put"),
                None => txn.delete(k).expect("ringtide delete"),
            }
        }
        txn.commit().await.expect("ringtide commit");
    }

    async fn scan_from(&self, key: &[u8], len: usize) -> usize {
        let txn = self.db.begin(snapshot()).expect("ringtide begin");
        let mut s = std::pin::pin!(txn.scan(key..).take(len));
        let mut n = 0;
        while let Some(e) = s.next().await {
            let (_, v) = e.expect("ringtide scan");
            assert!(!v.is_empty(), "ringtide: an empty value");
            n += 1;
        }
        n
    }

    fn figures(&self) -> Vec<(&'static str, f64)> {
        let s = self.db.stats();
        vec![
            ("retries", s.retries as f64),
            (
                "conflicts",
                (s.conflicts_snapshot + s.conflicts_serializable) as f64,
            ),
            ("stall_ms", s.stall_micros as f64 / 1e3),
            ("cache_hits", s.block_cache_hits as f64),
            ("cache_misses", s.block_cache_misses as f64),
            ("cache_bytes", s.block_cache_bytes as f64),
            ("memtable_bytes", s.memtable_bytes as f64),
            ("memtable_versions", s.memtable_versions as f64),
            ("history_bytes", s.history_bytes as f64),
            (
                "tables",
                s.levels.iter().map(|l| l.tables).sum::<u64>() as f64,
            ),
            ("l0_tables", s.levels.first().map_or(0, |l| l.tables) as f64),
            ("flushes", s.flushes as f64),
            ("compactions", s.compactions as f64),
            ("tree_write_amp", s.write_amplification),
            ("value_log_files", s.value_log_files as f64),
            ("value_log_bytes", s.value_log_bytes as f64),
            ("value_log_garbage_bytes", s.value_log_garbage_bytes as f64),
            ("value_log_bytes_written", s.value_log_bytes_written as f64),
        ]
    }

    /// `Db::flush`: the memtables written as tables, then compactions while any level is due.
    async fn quiesce(&self) {
        self.db.flush().await.expect("ringtide flush");
    }

    const COMPACTION: &'static str = "`Db::compact_full` (every table into the last level holding data, as fjall's major compaction)";

    async fn compact(&self) {
        self.db.compact_full().await.expect("ringtide compact_full");
    }
}
