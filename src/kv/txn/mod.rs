//! Transactions: a snapshot, a write buffer, the reads and scanned ranges a serializable commit
//! validates, and the commit path (validate and take a seq in the oracle's critical section,
//! append outside it, apply, publish in seq order).

pub(crate) mod commit;
pub(crate) mod oracle;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;

use super::bucket::{self, Bucket};
use super::options::{Durability, Isolation, TxnOptions};
use super::scan::{Cursor, Scan};
use super::shared::Shared;
use crate::error::{Error, Result};
use crate::types::SeqNo;
use oracle::{BucketKey, ScannedRange};

/// The root keyspace: keys put on a [`Txn`] directly, outside any bucket.
pub(crate) const ROOT: u64 = 0;

/// What a commit returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitInfo {
    /// The commit's sequence number; for a transaction that wrote nothing, its snapshot's.
    pub seq: SeqNo,
    /// The writes (puts and deletes) it committed.
    pub writes: u64,
}

/// Where a transaction is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Active,
    Committing,
    Prepared,
    Committed,
    RolledBack,
    Failed,
    Expired,
}

/// A transaction's writes: per bucket, per key, a value or a tombstone.
pub(crate) type WriteSet = BTreeMap<u64, BTreeMap<Bytes, Option<Bytes>>>;

/// Every write of a write set as `(bucket, key, value)`, in order.
pub(crate) fn writes_of(set: &WriteSet) -> impl Iterator<Item = (u64, &Bytes, &Option<Bytes>)> {
    set.iter()
        .flat_map(|(&bucket, keys)| keys.iter().map(move |(k, v)| (bucket, k, v)))
}

pub(crate) struct State {
    pub(crate) status: Status,
    pub(crate) writes: WriteSet,
    pub(crate) write_count: u64,
    pub(crate) write_bytes: u64,
    /// Keys read from the snapshot (serializable read-write transactions only).
    pub(crate) reads: Vec<BucketKey>,
    pub(crate) ranges: Vec<ScannedRange>,
    /// The catalog key of every bucket opened or created, by bucket id: validated at commit
    /// when the transaction wrote into the bucket or into a bucket nested in it (under both
    /// isolation levels), so that a write into a bucket deleted concurrently is a conflict,
    /// not a silent loss.
    pub(crate) bucket_keys: HashMap<u64, (BucketKey, Arc<str>)>,
    /// Buckets this transaction deleted: their handles refuse further use.
    pub(crate) deleted: HashSet<u64>,
}

pub(crate) struct Inner {
    pub(crate) db: Arc<Shared>,
    pub(crate) id: u64,
    pub(crate) snapshot: u64,
    pub(crate) isolation: Isolation,
    pub(crate) read_only: bool,
    pub(crate) deadline: Option<Instant>,
    pub(crate) durability: Option<Durability>,
    pub(crate) begun: Instant,
    pub(crate) state: Mutex<State>,
    ended: std::sync::atomic::AtomicBool,
}

impl Inner {
    /// Releases the snapshot and counts the transaction as ended (once; idempotent).
    pub(crate) fn release(&self) {
        if !self.ended.swap(true, std::sync::atomic::Ordering::AcqRel) {
            if self.read_only {
                self.db.oracle.release_reader(self.snapshot);
            } else {
                self.db.oracle.release(self.snapshot, self.id);
            }
            self.db.counters.txn_ended(self.begun.elapsed());
        }
    }

    /// Counts the transaction as ended, its snapshot already released by the oracle (in the
    /// critical section that assigned its commit's seq).
    pub(crate) fn released_by_oracle(&self) {
        if !self.ended.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.db.counters.txn_ended(self.begun.elapsed());
        }
    }
}

/// A transaction on a [`Db`](super::Db): reads see the snapshot taken at begin plus its own
/// writes; writes are buffered until [`Txn::commit`].
///
/// A `Txn` is a cheap handle: clones share the same transaction (the closures of
/// [`Db::update`](super::Db::update) get one). Dropping the last handle of a transaction that
/// did not commit rolls it back. Every call after the transaction committed, rolled back or
/// failed returns [`Error::TxnFinished`]; after its timeout, [`Error::TxnExpired`].
#[derive(Clone)]
pub struct Txn {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Txn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Txn")
            .field("id", &self.inner.id)
            .field("snapshot", &self.inner.snapshot)
            .field("isolation", &self.inner.isolation)
            .field("read_only", &self.inner.read_only)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let state = self
            .state
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if matches!(state.status, Status::Active) {
            self.db.counters.rollback();
        }
        // Releasing twice is harmless; a prepared transaction keeps its holds (it survives its
        // handle, as it survives a crash).
        self.release();
    }
}

impl Txn {
    pub(crate) fn begin(db: &Arc<Shared>, options: TxnOptions) -> Txn {
        let id = db.next_txn_id();
        let timeout = options.timeout.or(db.options.default_timeout);
        let now = Instant::now();
        let deadline = timeout.map(|t| now + t);
        let read_only = options.read_only || db.read_only;
        // A read-only transaction never validates, so it needs no conflict history kept for it:
        // its snapshot is registered only so that the versions it sees are kept.
        let snapshot = if read_only {
            db.oracle.begin_reader()
        } else {
            db.oracle.begin(id, deadline)
        };
        db.counters.txn_begun();
        Txn {
            inner: Arc::new(Inner {
                db: db.clone(),
                id,
                snapshot,
                isolation: options.isolation,
                read_only,
                deadline,
                durability: options.durability,
                begun: now,
                ended: std::sync::atomic::AtomicBool::new(false),
                state: Mutex::new(State {
                    status: Status::Active,
                    writes: WriteSet::new(),
                    write_count: 0,
                    write_bytes: 0,
                    reads: Vec::new(),
                    ranges: Vec::new(),
                    bucket_keys: HashMap::new(),
                    deleted: HashSet::new(),
                }),
            }),
        }
    }

    /// The transaction's id (unique within an open store; prepared transactions keep theirs
    /// across restarts).
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The snapshot it reads: every commit at or below this seq, none above.
    pub fn snapshot(&self) -> SeqNo {
        SeqNo(self.inner.snapshot)
    }

    /// Its isolation level.
    pub fn isolation(&self) -> Isolation {
        self.inner.isolation
    }

    /// Locks the state of a transaction that is still active; expires it if its deadline
    /// passed.
    pub(crate) fn live(&self) -> Result<MutexGuard<'_, State>> {
        let mut state = self.lock();
        match state.status {
            Status::Active => {}
            Status::Expired => return Err(Error::TxnExpired),
            Status::Committing | Status::Committed => {
                return Err(Error::TxnFinished { state: "committed" });
            }
            Status::Prepared => return Err(Error::TxnFinished { state: "prepared" }),
            Status::RolledBack => {
                return Err(Error::TxnFinished {
                    state: "rolled back",
                });
            }
            Status::Failed => return Err(Error::TxnFinished { state: "failed" }),
        }
        if self.inner.deadline.is_some_and(|d| Instant::now() >= d) {
            state.status = Status::Expired;
            state.writes.clear();
            self.inner.release();
            self.inner.db.counters.expired();
            return Err(Error::TxnExpired);
        }
        Ok(state)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks that the transaction is active and did not delete `bucket` (see
    /// [`check_not_deleted`]).
    pub(crate) fn check_bucket(&self, bucket: u64) -> Result<()> {
        let state = self.live()?;
        check_not_deleted(&state, bucket)
    }

    /// Whether point reads and scans are recorded for validation.
    pub(crate) fn records_reads(&self) -> bool {
        self.inner.isolation == Isolation::Serializable && !self.inner.read_only
    }

    /// The value of `key` in the root keyspace, as this transaction sees it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty key; [`Error::TxnExpired`] /
    /// [`Error::TxnFinished`] on a transaction that is no longer active.
    ///
    /// # Cancel safety
    /// Safe: a read changes nothing but the transaction's read set.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        self.get_in(ROOT, key.as_ref()).await
    }

    /// Whether `key` exists in the root keyspace, as this transaction sees it.
    ///
    /// # Errors
    /// As [`Txn::get`].
    ///
    /// # Cancel safety
    /// Safe, as [`Txn::get`].
    pub async fn contains(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        Ok(self.get_in(ROOT, key.as_ref()).await?.is_some())
    }

    /// Puts `key` → `value` in the root keyspace (buffered until commit).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty key; [`Error::TooLarge`] for a key or value over
    /// its bound or a write set that would exceed `max_txn_bytes` (the write is not taken, the
    /// transaction stays usable); [`Error::TxnReadOnly`]; [`Error::TxnExpired`] /
    /// [`Error::TxnFinished`].
    pub fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<()> {
        self.write_in(ROOT, key.into(), Some(value.into()))
    }

    /// Deletes `key` from the root keyspace (buffered until commit).
    ///
    /// # Errors
    /// As [`Txn::put`].
    pub fn delete(&self, key: impl Into<Bytes>) -> Result<()> {
        self.write_in(ROOT, key.into(), None)
    }

    /// The entries of the root keyspace in `range`, in key order, as a `Stream` (see [`Scan`]).
    pub fn scan<K: AsRef<[u8]>>(&self, range: impl RangeBounds<K>) -> Scan {
        Scan::new(self.clone(), ROOT, bounds(range))
    }

    /// The entries of the root keyspace whose keys start with `prefix` (see [`Scan`]).
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Scan {
        Scan::new(self.clone(), ROOT, prefix_bounds(prefix.as_ref()))
    }

    /// A cursor over the root keyspace.
    pub fn cursor(&self) -> Cursor {
        Cursor::new(self.clone(), ROOT)
    }

    /// A cursor over the root keyspace's keys and the top-level buckets, in one order
    /// (BoltDB's cursor).
    pub fn entry_cursor(&self) -> super::EntryCursor {
        super::EntryCursor::new(self.clone(), ROOT)
    }

    /// Creates the top-level bucket `name`.
    ///
    /// # Errors
    /// [`Error::BucketExists`]; [`Error::InvalidArgument`] for an empty or over-long name;
    /// and as [`Txn::put`].
    ///
    /// # Cancel safety
    /// Safe: the bucket exists in this transaction only once the call returns.
    pub async fn create_bucket(&self, name: impl AsRef<[u8]>) -> Result<Bucket> {
        bucket::create(self, ROOT, "", name.as_ref(), false).await
    }

    /// Creates the top-level bucket `name` unless it exists; returns it either way.
    ///
    /// # Errors
    /// As [`Txn::create_bucket`], without [`Error::BucketExists`].
    ///
    /// # Cancel safety
    /// Safe, as [`Txn::create_bucket`].
    pub async fn create_bucket_if_not_exists(&self, name: impl AsRef<[u8]>) -> Result<Bucket> {
        bucket::create(self, ROOT, "", name.as_ref(), true).await
    }

    /// The top-level bucket `name`, if it exists.
    ///
    /// # Errors
    /// As [`Txn::get`].
    ///
    /// # Cancel safety
    /// Safe, as [`Txn::get`].
    pub async fn bucket(&self, name: impl AsRef<[u8]>) -> Result<Option<Bucket>> {
        bucket::open(self, ROOT, "", name.as_ref()).await
    }

    /// Deletes the top-level bucket `name`, its keys and its nested buckets: O(1) to commit and
    /// to see (the space is reclaimed later).
    ///
    /// # Errors
    /// [`Error::BucketNotFound`], and as [`Txn::put`].
    ///
    /// # Cancel safety
    /// Safe, as [`Txn::create_bucket`].
    pub async fn delete_bucket(&self, name: impl AsRef<[u8]>) -> Result<()> {
        bucket::delete(self, ROOT, "", name.as_ref()).await
    }

    /// The names of the top-level buckets, in order.
    ///
    /// # Errors
    /// As [`Txn::get`].
    ///
    /// # Cancel safety
    /// Safe, as [`Txn::get`].
    pub async fn buckets(&self) -> Result<Vec<Bytes>> {
        bucket::list(self, ROOT).await
    }

    /// Rolls the transaction back: its writes are dropped and its snapshot released. A prepared
    /// transaction is rolled back durably (a record in the wal).
    ///
    /// # Errors
    /// [`Error::TxnFinished`] if it committed or already rolled back; for a prepared
    /// transaction, the wal's errors.
    ///
    /// # Cancel safety
    /// Safe for an active transaction (nothing awaits). For a prepared one, if dropped after the
    /// rollback record was queued, the rollback completes; `Db::prepared` tells.
    pub async fn rollback(&self) -> Result<()> {
        if self.rollback_unprepared()? {
            return Ok(());
        }
        self.inner.db.rollback_prepared(self.inner.id).await?;
        self.lock().status = Status::RolledBack;
        Ok(())
    }

    /// Rolls back a transaction that is not prepared; `false` if it is prepared.
    fn rollback_unprepared(&self) -> Result<bool> {
        let mut state = self.lock();
        match state.status {
            Status::Active | Status::Expired => {
                state.status = Status::RolledBack;
                state.writes.clear();
                drop(state);
                self.inner.release();
                self.inner.db.counters.rollback();
                Ok(true)
            }
            Status::Prepared => Ok(false),
            Status::RolledBack => Err(Error::TxnFinished {
                state: "rolled back",
            }),
            Status::Failed => Err(Error::TxnFinished { state: "failed" }),
            Status::Committing | Status::Committed => {
                Err(Error::TxnFinished { state: "committed" })
            }
        }
    }

    pub(crate) async fn get_in(&self, bucket: u64, key: &[u8]) -> Result<Option<Bytes>> {
        check_key(key)?;
        {
            let mut state = self.live()?;
            check_not_deleted(&state, bucket)?;
            if let Some(own) = state.writes.get(&bucket).and_then(|w| w.get(key)) {
                return Ok(own.clone());
            }
            // Recorded before the read: a commit running concurrently validates it.
            if self.records_reads() {
                state.reads.push((bucket, Bytes::copy_from_slice(key)));
            }
        }
        self.inner
            .db
            .tree
            .get(bucket, key, self.inner.snapshot)
            .await
    }

    pub(crate) fn write_in(&self, bucket: u64, key: Bytes, value: Option<Bytes>) -> Result<()> {
        check_key(&key)?;
        let options = &self.inner.db.options;
        if key.len() as u64 > options.max_key_bytes {
            return Err(Error::TooLarge {
                len: key.len() as u64,
                max: options.max_key_bytes,
            });
        }
        if let Some(v) = &value
            && v.len() as u64 > options.max_value_bytes
        {
            return Err(Error::TooLarge {
                len: v.len() as u64,
                max: options.max_value_bytes,
            });
        }
        let mut state = self.live()?;
        if self.inner.read_only {
            return Err(if self.inner.db.read_only {
                Error::ReadOnly
            } else {
                Error::TxnReadOnly
            });
        }
        check_not_deleted(&state, bucket)?;
        let key_len = key.len();
        let cost = |v: &Option<Bytes>| {
            super::record::write_bytes(key_len, v.as_ref().map(Bytes::len)) as u64
        };
        let new_cost = cost(&value);
        let max = options.max_txn_bytes;
        let st = &mut *state;
        // One search of the write set: the key's entry is found once, then written or left.
        let keys = st.writes.entry(bucket).or_default();
        let bucket_was_empty = keys.is_empty();
        let total = match keys.entry(key) {
            std::collections::btree_map::Entry::Occupied(mut old) => {
                let total = st.write_bytes - cost(old.get()) + new_cost;
                if total <= max {
                    old.insert(value);
                }
                total
            }
            std::collections::btree_map::Entry::Vacant(slot) => {
                let total = st.write_bytes + new_cost;
                if total <= max {
                    slot.insert(value);
                    st.write_count += 1;
                }
                total
            }
        };
        if total > max {
            if bucket_was_empty {
                // No write set entry for a bucket the transaction wrote nothing into.
                st.writes.remove(&bucket);
            }
            return Err(Error::TooLarge { len: total, max });
        }
        st.write_bytes = total;
        Ok(())
    }

    /// Records a scanned range for validation (serializable read-write transactions).
    pub(crate) fn record_range(&self, range: ScannedRange) {
        if self.records_reads() {
            self.lock().ranges.push(range);
        }
    }

    /// The path of a bucket, for errors: `/` for the root keyspace.
    pub(crate) fn bucket_path(&self, bucket: u64) -> String {
        if bucket == ROOT {
            return "/".to_owned();
        }
        if bucket == bucket::CATALOG {
            return "(catalog)".to_owned();
        }
        self.lock()
            .bucket_keys
            .get(&bucket)
            .map_or_else(|| format!("#{bucket}"), |(_, path)| path.to_string())
    }
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid("key", "keys must not be empty"));
    }
    Ok(())
}

/// Refuses a bucket this transaction deleted, or one nested in it (deleted with it): their
/// handles refuse further use.
pub(crate) fn check_not_deleted(state: &State, bucket: u64) -> Result<()> {
    let mut id = bucket;
    loop {
        if state.deleted.contains(&id) {
            return Err(Error::BucketNotFound {
                name: state
                    .bucket_keys
                    .get(&bucket)
                    .map_or_else(|| format!("#{bucket}"), |(_, p)| p.to_string()),
            });
        }
        // Up to the parent, named by the bucket's catalog key (ids of buckets opened here).
        match state
            .bucket_keys
            .get(&id)
            .and_then(|((_, key), _)| bucket::entry_parent(key))
        {
            Some(parent) => id = parent,
            None => return Ok(()),
        }
    }
}

/// Owned bounds of a range of keys.
pub(crate) type KeyBounds = (Bound<Bytes>, Bound<Bytes>);

pub(crate) fn bounds<K: AsRef<[u8]>>(range: impl RangeBounds<K>) -> KeyBounds {
    let own = |b: Bound<&K>| match b {
        Bound::Included(k) => Bound::Included(Bytes::copy_from_slice(k.as_ref())),
        Bound::Excluded(k) => Bound::Excluded(Bytes::copy_from_slice(k.as_ref())),
        Bound::Unbounded => Bound::Unbounded,
    };
    (own(range.start_bound()), own(range.end_bound()))
}

/// The range of keys that start with `prefix`.
pub(crate) fn prefix_bounds(prefix: &[u8]) -> KeyBounds {
    let lower = if prefix.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Included(Bytes::copy_from_slice(prefix))
    };
    // The smallest key above every key with the prefix: the prefix with its last byte below
    // 0xff incremented and what follows dropped; none if it is all 0xff.
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last == 0xff {
            end.pop();
        } else {
            *end.last_mut().expect("not empty") += 1;
            return (lower, Bound::Excluded(Bytes::from(end)));
        }
    }
    (lower, Bound::Unbounded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_bounds_cover_exactly_the_prefix() {
        assert_eq!(
            prefix_bounds(b"ab"),
            (
                Bound::Included(Bytes::from_static(b"ab")),
                Bound::Excluded(Bytes::from_static(b"ac"))
            )
        );
        assert_eq!(
            prefix_bounds(b"a\xff"),
            (
                Bound::Included(Bytes::from_static(b"a\xff")),
                Bound::Excluded(Bytes::from_static(b"b"))
            )
        );
        assert_eq!(
            prefix_bounds(b"\xff\xff"),
            (
                Bound::Included(Bytes::from_static(b"\xff\xff")),
                Bound::Unbounded
            )
        );
        assert_eq!(prefix_bounds(b""), (Bound::Unbounded, Bound::Unbounded));
    }
}
