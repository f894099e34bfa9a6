//! The key-value store: an ordered, transactional store with MVCC transactions from many
//! concurrent writers (snapshot and serializable), nested buckets, cursors and scans as
//! `Stream`s, durable through the wal's grouped commit.
//!
//! # Example
//!
//! ```
//! use futures::TryStreamExt;
//! use ringtide::kv::{Db, DbOptions, TxnOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> ringtide::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let db = Db::open(dir.path(), DbOptions::default()).await?;
//!
//! let txn = db.begin(TxnOptions::default())?;
//! let users = txn.create_bucket("users").await?;
//! users.put("alice", "admin")?;
//! users.put("bob", "reader")?;
//! txn.commit().await?;
//!
//! // Managed: retried on conflicts.
//! db.update(|txn| async move {
//!     let users = txn.bucket("users").await?.expect("created above");
//!     let id = users.next_sequence().await?;
//!     users.put(format!("carol-{id}"), "writer")?;
//!     Ok(())
//! })
//! .await?;
//!
//! let all: Vec<_> = db
//!     .view(|txn| async move {
//!         let users = txn.bucket("users").await?.expect("created above");
//!         users.scan::<&[u8]>(..).try_collect::<Vec<_>>().await
//!     })
//!     .await?;
//! assert_eq!(all.len(), 3);
//! db.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Isolation
//!
//! Every transaction reads the snapshot taken at its begin, plus its own writes. At commit:
//! - [`Isolation::Snapshot`]: a key it writes that another transaction wrote and committed
//!   after its snapshot fails the commit with [`Error::Conflict`] (first committer wins). Write
//!   skew is possible: with `x + y ≥ 1` kept by the application, two transactions that each
//!   read both and each set a different one to 0 can both commit, breaking the rule.
//! - [`Isolation::Serializable`] (the default) also fails a commit if a key it read, or a key in
//!   a range it scanned, was written by a transaction that committed after its snapshot: the
//!   write-skew pair above has one commit fail. Read-only transactions never conflict.
//!
//! Commits from many tasks run concurrently: validation and the choice of a sequence number
//! take one short critical section, the wal append happens outside it (concurrent commits share
//! one fdatasync), and commits become visible in sequence order: no snapshot ever holds commit
//! N+1 without commit N.
//!
//! # Layout on disk
//!
//! A store's directory holds its wal in `wal/` (one record per commit, an atomic batch of
//! chunks), its tables in `tables/` and the manifest naming them in `manifest/` (byte tables in
//! docs/design.md). Commits go to the wal and the memtable; a full memtable is flushed to an L0
//! table in the background and the wal is cut below it; L0 tables are compacted into L1.
//! Opening replays the manifest, opens the tables and replays the wal's commits the tables do
//! not hold.

mod bucket;
mod checkpoint;
mod entries;
mod flush;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod integrity;
mod options;
mod record;
mod recovery;
mod scan;
mod shared;
mod stats;
mod tree;
mod txn;

use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::Instrument;

pub use bucket::Bucket;
pub use entries::{CursorEntry, EntryCursor};
pub use integrity::{KvIntegrityProgress, KvIntegrityReport, TableProblem};
pub use options::{Compression, DbOptions, Durability, Isolation, TxnOptions};
pub use scan::{Cursor, Scan};
pub use stats::{DbStats, LevelStats};
pub use txn::{CommitInfo, Txn};

use crate::error::{Error, Result};
use crate::types::SeqNo;
use crate::wal::Wal;
use shared::Shared;

/// An open key-value store. Cheap to clone (`Send + Sync`); every clone is the same store.
#[derive(Clone)]
pub struct Db {
    shared: Arc<Shared>,
    dir: Arc<PathBuf>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Opens the store in `dir`, creating it if needed, and recovers it: the wal's records are
    /// replayed, prepared transactions restored as prepared (those whose deadline passed are
    /// rolled back). The directory is locked while the store is open.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad options; [`Error::Locked`] if another handle holds
    /// the directory past `lock_timeout`; [`Error::Corruption`] naming the file for damage
    /// recovery cannot accept; I/O errors.
    ///
    /// # Cancel safety
    /// Safe: dropping the future releases everything; a later open recovers again.
    pub async fn open(dir: impl AsRef<Path>, options: DbOptions) -> Result<Db> {
        Self::open_with(dir.as_ref(), options, false).await
    }

    /// Opens an existing store for reading only, without taking its lock or changing any file:
    /// transactions may read; writes fail with [`Error::ReadOnly`].
    ///
    /// # Errors
    /// As [`Db::open`], without `Locked`.
    ///
    /// # Cancel safety
    /// Safe, as [`Db::open`].
    pub async fn open_read_only(dir: impl AsRef<Path>, options: DbOptions) -> Result<Db> {
        Self::open_with(dir.as_ref(), options, true).await
    }

    async fn open_with(dir: &Path, options: DbOptions, read_only: bool) -> Result<Db> {
        options.validate()?;
        let span = tracing::info_span!("kv_open", dir = %dir.display(), read_only);
        async move {
            // One executor for the wal, the manifest and the tables.
            let driver = match &options.driver {
                Some(driver) => driver.clone(),
                None => {
                    ringtide_platform::IoDriver::new(ringtide_platform::DriverOptions::default())?
                }
            };
            let options = options.driver(driver.clone());
            let wal_dir = dir.join("wal");
            let wal = if read_only {
                Wal::open_read_only(&wal_dir, options.wal_options()).await?
            } else {
                Wal::open(&wal_dir, options.wal_options()).await?
            };
            let opened = tree::Tree::open(
                dir,
                driver,
                options.tree_options(),
                options.wal_options(),
                read_only,
                wal.first_lsn(),
            )
            .await?;
            let tree = opened.tree;
            let replayed = recovery::replay(&wal, &tree, opened.flushed).await?;
            tracing::info!(
                records = replayed.records,
                last_seq = replayed.last_seq,
                prepared = replayed.prepared.len(),
                "recovered"
            );
            let oracle =
                txn::oracle::Oracle::new(replayed.last_seq, options.conflict_history_bytes());
            for (&id, p) in &replayed.prepared {
                // Its writes, and what it read (its buckets' catalog keys; serializable: every
                // read and range): held as before the restart.
                let written = txn::commit::written_keys(&p.writes);
                let (mut read, mut ranges) = (Vec::new(), Vec::new());
                for held in &p.held {
                    match held {
                        record::Held::Key(key) => read.push(key.clone()),
                        record::Held::Range(range) => ranges.push(range.clone()),
                    }
                }
                oracle.hold(id, written, read, ranges);
            }
            let expired: Vec<u64> = replayed
                .prepared
                .iter()
                .filter(|(_, p)| p.deadline.is_some_and(|d| d <= std::time::Instant::now()))
                .map(|(&id, _)| id)
                .collect();
            let shared = Arc::new(Shared::new(
                wal,
                tree,
                oracle,
                options,
                read_only,
                (replayed.next_txn_id, replayed.next_bucket_id),
                replayed.prepared,
            ));
            for &(id, floor, seq) in &replayed.log_holds {
                shared.background.hold_log(id, floor, seq);
            }
            if !read_only {
                // Replay may have filled the memtable past its size.
                shared.rotate_and_flush();
                for id in expired {
                    tracing::info!(
                        txn = id,
                        "rolling back a prepared transaction past its deadline"
                    );
                    shared.rollback_prepared(id).await?;
                }
            }
            Ok(Db {
                shared,
                dir: Arc::new(dir.to_path_buf()),
            })
        }
        .instrument(span)
        .await
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Begins a transaction: takes its snapshot at the newest visible commit.
    ///
    /// # Errors
    /// [`Error::Closed`] after [`Db::close`].
    pub fn begin(&self, options: TxnOptions) -> Result<Txn> {
        if self
            .shared
            .closed
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(Error::Closed);
        }
        Ok(Txn::begin(&self.shared, options))
    }

    /// Runs `work` in a read-write transaction (the store's default options) and commits it;
    /// on a conflict (in `work` or at commit) runs it again in a new transaction, up to
    /// `max_update_attempts` times. Before each retry it waits until the commits that won are
    /// visible, then for a jittered, growing pause. An error
    /// from `work` other than a conflict rolls the transaction back and is returned.
    ///
    /// # Errors
    /// [`Error::RetriesExhausted`] holding the last conflict; `work`'s own errors; as
    /// [`Txn::commit`].
    ///
    /// # Cancel safety
    /// As [`Txn::commit`]: dropped while `work` runs, nothing is written; dropped during the
    /// commit, the commit's fate is decided in the background.
    pub async fn update<F, Fut, T>(&self, work: F) -> Result<T>
    where
        F: FnMut(Txn) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.update_with(TxnOptions::default(), work).await
    }

    /// [`Db::update`] with the transactions' options.
    ///
    /// # Errors
    /// As [`Db::update`].
    ///
    /// # Cancel safety
    /// As [`Db::update`].
    pub async fn update_with<F, Fut, T>(&self, options: TxnOptions, mut work: F) -> Result<T>
    where
        F: FnMut(Txn) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let attempts = self.shared.options.max_update_attempts;
        let mut pause = Duration::from_micros(100);
        for attempt in 1..=attempts {
            let txn = self.begin(options.clone())?;
            let outcome = match work(txn.clone()).await {
                Ok(value) => txn.commit().await.map(|_| value),
                Err(e) => {
                    let _ = txn.rollback().await;
                    Err(e)
                }
            };
            match outcome {
                Err(e @ Error::Conflict { .. }) => {
                    if attempt == attempts {
                        return Err(Error::RetriesExhausted {
                            attempts,
                            last: Box::new(e),
                        });
                    }
                    self.shared.counters.retry();
                    // The commit that won may not be visible yet (its sync is running): a
                    // retry begun before it is would read the old value and conflict again.
                    let winner = self.shared.oracle.last_assigned();
                    self.shared.oracle.wait_visible(winner).await;
                    let jitter = fastrand::u64(0..=pause.as_micros() as u64);
                    tokio::time::sleep(Duration::from_micros(jitter)).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                other => return other,
            }
        }
        unreachable!("the loop returns on its last attempt")
    }

    /// Runs `work` in a read-only transaction.
    ///
    /// # Errors
    /// `work`'s errors.
    ///
    /// # Cancel safety
    /// Safe: it reads only.
    pub async fn view<F, Fut, T>(&self, work: F) -> Result<T>
    where
        F: FnOnce(Txn) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let txn = self.begin(TxnOptions::default().read_only(true))?;
        let result = work(txn.clone()).await;
        let _ = txn.rollback().await;
        result
    }

    /// The newest commit visible to new transactions: every commit at or below it is visible
    /// (and acknowledged or about to be), none above.
    pub fn committed_seq(&self) -> SeqNo {
        SeqNo(self.shared.oracle.visible())
    }

    /// The prepared transactions not yet committed or rolled back (those restored after a
    /// restart included).
    pub fn prepared(&self) -> Vec<PreparedTxn> {
        self.shared
            .prepared_txns()
            .iter()
            .filter(|(_, p)| !p.resolving)
            .map(|(&id, p)| PreparedTxn {
                shared: self.shared.clone(),
                id,
                writes: p
                    .writes
                    .iter()
                    .flat_map(|(&bucket, keys)| {
                        keys.iter()
                            .map(move |(k, v)| (bucket, k.clone(), v.clone()))
                    })
                    .collect(),
            })
            .collect()
    }

    /// A snapshot of the store's figures (see [`DbStats`]; its `Display` is a table).
    pub fn stats(&self) -> DbStats {
        stats::collect(&self.shared)
    }

    /// Closes the store: stops the flush or compaction under way at its next step, waits for
    /// queued commits, syncs the wal and releases the directory.
    /// Later calls on any clone fail with [`Error::Closed`].
    ///
    /// # Errors
    /// The wal's errors on its final sync.
    ///
    /// # Cancel safety
    /// Dropped, the close still completes in a task of its own.
    pub async fn close(&self) -> Result<()> {
        self.shared
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        let shared = self.shared.clone();
        self.shared
            .detached(async move {
                // A flush or compaction under way stops at its next step (its work is either
                // recorded or left as files the next open removes); commits waiting for room
                // fail with `Closed`.
                shared.stop_jobs().await;
                let wal = shared.wal.close().await;
                let manifest = shared.tree.manifest.close().await;
                wal.and(manifest)
            })
            .await
    }

    /// Flushes the memtables to tables (wildcat's `ForceFlush`) and waits: the active memtable
    /// is made immutable, every immutable memtable is written as an L0 table, the wal is cut
    /// below what the tables hold, and then (once the compactions already running end) every
    /// level due is compacted. Commits made meanwhile go to the new memtable.
    ///
    /// # Errors
    /// [`Error::ReadOnly`] on a read-only store; [`Error::Closed`]; [`Error::Poisoned`] whose
    /// cause is the tables', manifest's or wal's error (the data stays in the wal and the
    /// memtables: nothing is lost; a later flush that succeeds clears it).
    ///
    /// # Cancel safety
    /// Safe: the work runs in a task of its own, which a dropped call leaves running to its
    /// end.
    pub async fn flush(&self) -> Result<()> {
        self.check_writable()?;
        self.shared.flush_now().await
    }

    /// Compacts L0 (every flushed table) into L1 now, whether or not it reached its trigger,
    /// then every level due (after the compactions already running end): versions no snapshot
    /// can see are dropped, tombstones that shadow nothing, and deleted buckets' keys.
    ///
    /// # Errors
    /// As [`Db::flush`].
    ///
    /// # Cancel safety
    /// Safe, as [`Db::flush`].
    pub async fn compact(&self) -> Result<()> {
        self.check_writable()?;
        self.shared.compact_now().await
    }

    /// Compacts the root bucket's keys in `range` down to the last level that holds data
    /// (RocksDB's `CompactRange`): the memtables are flushed first, then every table holding
    /// keys in the range is merged into the level below, level by level, and the last level's
    /// tables in the range are rewritten. Versions no snapshot can see and tombstones are
    /// dropped, so the space they took is reclaimed. Tables partly in the range are compacted
    /// whole (keys outside the range with them); L0 goes whole.
    ///
    /// # Errors
    /// As [`Db::flush`]; the steps done before an error stay done.
    ///
    /// # Cancel safety
    /// Safe, as [`Db::flush`].
    pub async fn compact_range<K: AsRef<[u8]>>(&self, range: impl RangeBounds<K>) -> Result<()> {
        self.compact_bucket_id_range(txn::ROOT, range).await
    }

    /// [`Db::compact_range`] over the keys of `bucket` (a handle opened in any transaction).
    ///
    /// # Errors
    /// As [`Db::compact_range`].
    ///
    /// # Cancel safety
    /// Safe, as [`Db::flush`].
    pub async fn compact_bucket_range<K: AsRef<[u8]>>(
        &self,
        bucket: &Bucket,
        range: impl RangeBounds<K>,
    ) -> Result<()> {
        self.compact_bucket_id_range(bucket.id(), range).await
    }

    /// [`Db::compact_range`] over every key of every bucket: the whole store in its last level.
    ///
    /// # Errors
    /// As [`Db::compact_range`].
    ///
    /// # Cancel safety
    /// Safe, as [`Db::flush`].
    pub async fn compact_full(&self) -> Result<()> {
        self.check_writable()?;
        let range = tree::range::KeyRange {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
        };
        self.shared.compact_range_now(range).await
    }

    async fn compact_bucket_id_range<K: AsRef<[u8]>>(
        &self,
        bucket: u64,
        range: impl RangeBounds<K>,
    ) -> Result<()> {
        self.check_writable()?;
        let key = |k: &K| (bucket, Bytes::copy_from_slice(k.as_ref()));
        let range = tree::range::KeyRange {
            start: match range.start_bound() {
                Bound::Included(k) => Bound::Included(key(k)),
                Bound::Excluded(k) => Bound::Excluded(key(k)),
                Bound::Unbounded => Bound::Included((bucket, Bytes::new())),
            },
            end: match range.end_bound() {
                Bound::Included(k) => Bound::Included(key(k)),
                Bound::Excluded(k) => Bound::Excluded(key(k)),
                Bound::Unbounded => Bound::Excluded((bucket.saturating_add(1), Bytes::new())),
            },
        };
        self.shared.compact_range_now(range).await
    }

    /// Writes an online, consistent copy of the store into `dir` (which must not exist) and
    /// returns the sequence number it holds: every commit at or below it, none above. The copy
    /// opens as a store of its own ([`Db::open`]). Commits go on meanwhile. The memtables are
    /// flushed first; then the tables of one moment are hard-linked (copied where `dir` is on
    /// another file system) beside a manifest naming them.
    /// Prepared transactions not yet resolved are not in the copy. Everything is synced before
    /// it returns.
    ///
    /// # Errors
    /// [`Error::ReadOnly`], [`Error::Closed`]; I/O errors naming the file (`AlreadyExists` if
    /// `dir` exists); the flush's errors. A failed checkpoint may leave a partial `dir`: remove
    /// it.
    ///
    /// # Cancel safety
    /// Dropped, it may leave a partial `dir` (never a change to the store itself): remove it.
    pub async fn checkpoint(&self, dir: impl AsRef<Path>) -> Result<SeqNo> {
        self.check_writable()?;
        checkpoint::checkpoint(&self.shared, dir.as_ref()).await
    }

    /// Reads every table back whole and checks it: each data block's checksum, the order of
    /// its versions, its meta block's claims (count, first and last key, seq range, buckets);
    /// each sorted level's tables in order and disjoint; then the wal's frames
    /// ([`Wal::check_integrity`](crate::wal::Wal::check_integrity)). Damage is reported, not
    /// repaired; the check goes on past a damaged table. `progress` is called as it goes.
    /// The store stays usable meanwhile (the check reads the tables of the moment it starts;
    /// a compaction cannot remove them under it).
    ///
    /// # Errors
    /// I/O errors (damage is in the report, not an error).
    ///
    /// # Cancel safety
    /// Safe: it reads only.
    pub async fn check_integrity(
        &self,
        progress: impl FnMut(KvIntegrityProgress),
    ) -> Result<KvIntegrityReport> {
        integrity::check(&self.shared, progress).await
    }

    fn check_writable(&self) -> Result<()> {
        if self.shared.read_only {
            return Err(Error::ReadOnly);
        }
        if self
            .shared
            .closed
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(Error::Closed);
        }
        Ok(())
    }
}

/// A prepared transaction (see [`Txn::prepare`]), as [`Db::prepared`] lists it.
#[derive(Clone)]
pub struct PreparedTxn {
    shared: Arc<Shared>,
    id: u64,
    writes: Vec<(u64, Bytes, Option<Bytes>)>,
}

impl std::fmt::Debug for PreparedTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedTxn")
            .field("id", &self.id)
            .field("writes", &self.writes.len())
            .finish_non_exhaustive()
    }
}

impl PreparedTxn {
    /// Its transaction id ([`Txn::id`] of the transaction that prepared it).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its writes: `(bucket id, key, value or None for a delete)` (bucket ids as
    /// [`Bucket::id`] gives them; 0 is the root keyspace).
    pub fn writes(&self) -> &[(u64, Bytes, Option<Bytes>)] {
        &self.writes
    }

    /// Commits it.
    ///
    /// # Errors
    /// [`Error::TxnExpired`] past its deadline (it is rolled back); [`Error::TxnFinished`] if
    /// it was resolved already; the wal's errors.
    ///
    /// # Cancel safety
    /// Once started, the commit completes in the background.
    pub async fn commit(&self) -> Result<CommitInfo> {
        self.shared
            .commit_prepared(self.id, crate::wal::Ack::Policy)
            .await
    }

    /// Rolls it back (durably).
    ///
    /// # Errors
    /// [`Error::TxnFinished`] if it was resolved already; the wal's errors.
    ///
    /// # Cancel safety
    /// Once started, the rollback completes in the background.
    pub async fn rollback(&self) -> Result<()> {
        self.shared.rollback_prepared(self.id).await
    }
}
