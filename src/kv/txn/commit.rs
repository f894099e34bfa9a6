//! The commit path, and two-phase commit (prepare, then commit or roll back).
//!
//! In order: (1) validate and take a seq in the oracle's critical section; (2) append one wal
//! record (an atomic batch of chunks) outside any lock, so that concurrent commits share the
//! wal's fdatasyncs; (3) insert the writes into the memtable; (4) publish the seq: the
//! watermark advances in seq order; (5) acknowledge once the watermark covers the seq.
//!
//! Steps 2–5 run to their end even if the caller is dropped (`run_detached`: polled inline,
//! handed to a task only if the caller goes away first): once a commit has its seq, the
//! watermark can never be left waiting for a seq that nobody finishes.

use std::collections::{BTreeMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tracing::Instrument;

use super::oracle::{BucketKey, CommitCheck, ScannedRange};
use super::{CommitInfo, Status, Txn, WriteSet};
use crate::error::{Error, Result};
use crate::kv::bucket;
use crate::kv::options::{Durability, Isolation};
use crate::kv::record::{Encoded, Header, Held, Kind, WriteRef};
use crate::kv::shared::Shared;
use crate::types::SeqNo;
use crate::wal::{Ack, Record};

/// What a commit or prepare takes out of the transaction's state.
struct Taken {
    writes: WriteSet,
    count: u64,
    reads: Vec<BucketKey>,
    ranges: Vec<ScannedRange>,
}

/// A prepared transaction: its writes and deadline, until it commits or rolls back.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) writes: WriteSet,
    /// What it read and stays held with its writes (serializable), as its prepare record
    /// says: restored into the oracle at open.
    pub(crate) held: Vec<Held>,
    pub(crate) deadline: Option<Instant>,
    /// Set while its commit or rollback runs, so that a second one is refused.
    pub(crate) resolving: bool,
    /// A wal position at or below its prepare record (the wal keeps it while it is needed).
    pub(crate) log_floor: crate::types::Lsn,
}

impl Txn {
    /// Commits the transaction: validates it, appends its writes to the wal as one atomic
    /// record, makes them visible in sequence order, and returns once its durability is met
    /// (the store's sync policy, or the transaction's [`Durability`]).
    ///
    /// # Errors
    /// [`Error::Conflict`] (nothing written; retry the transaction), [`Error::TxnExpired`],
    /// [`Error::TxnFinished`]; the wal's errors ([`Error::Poisoned`], I/O): the commit's fate
    /// is then unknown until the store is reopened, as with any failed fsync.
    ///
    /// # Cancel safety
    /// If the future is dropped before the commit was validated, nothing is written and the
    /// transaction is left as it was (committing); once validated, the commit runs to its end
    /// in the background, and whether it became durable can be learned after
    /// [`Db::committed_seq`](crate::kv::Db::committed_seq) passes its seq (a later transaction
    /// sees its writes). A `tokio::time::timeout` around `commit` is thus safe.
    pub async fn commit(&self) -> Result<CommitInfo> {
        let span = tracing::debug_span!("kv_commit", txn = self.inner.id);
        self.commit_inner().instrument(span).await
    }

    async fn commit_inner(&self) -> Result<CommitInfo> {
        let db = self.inner.db.clone();
        let prepared = self.lock().status == Status::Prepared;
        if prepared {
            let result = db.commit_prepared(self.inner.id, self.ack()).await;
            self.lock().status = match &result {
                Ok(_) => Status::Committed,
                Err(Error::TxnExpired) => Status::Expired,
                Err(_) => Status::Failed,
            };
            return result;
        }
        let started = Instant::now();
        // Backpressure: before anything is taken, so that a dropped wait changes nothing.
        let writes = !self.lock().writes.is_empty();
        if writes {
            db.wait_for_room().await?;
        }
        let taken = self.take()?;
        if taken.writes.is_empty() {
            self.inner.release();
            self.lock().status = Status::Committed;
            return Ok(CommitInfo {
                seq: SeqNo(self.inner.snapshot),
                writes: 0,
            });
        }
        let encoded = Encoded::new(self.header(Kind::Commit, 0), write_refs(&taken.writes));
        let written = written_keys(&taken.writes);
        let check = CommitCheck {
            snapshot: self.inner.snapshot,
            reads: &taken.reads,
            ranges: &taken.ranges,
            own_hold: None,
        };
        let seq = match db.oracle.validate_and_assign(check, written, self.inner.id) {
            Ok(seq) => seq,
            Err(refusal) => return Err(self.refused(refusal)),
        };
        self.inner.released_by_oracle();
        let result = finish(&db, seq, encoded.finish(seq), taken.writes, self.ack()).await;
        self.lock().status = if result.is_ok() {
            Status::Committed
        } else {
            Status::Failed
        };
        result?;
        db.counters.commit(started.elapsed(), self.inner.isolation);
        tracing::trace!(seq, writes = taken.count, "committed");
        Ok(CommitInfo {
            seq: SeqNo(seq),
            writes: taken.count,
        })
    }

    /// The first phase of a two-phase commit: validates the transaction as [`Txn::commit`]
    /// would, makes its writes durable in the wal as *prepared*, and holds its keys (and, if
    /// serializable, what it read and scanned): until it is committed or rolled back, any other
    /// commit that writes them fails with [`Error::Conflict`]
    /// ([`ConflictKind::Prepared`](crate::ConflictKind::Prepared)). Then call
    /// [`Txn::commit`] or [`Txn::rollback`]; after a crash, [`Db::prepared`](crate::kv::Db::prepared)
    /// lists it. Its timeout still applies: committed after its deadline, it rolls back and
    /// fails with [`Error::TxnExpired`]. Dropping the `Txn` of a prepared transaction leaves it
    /// prepared.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if it wrote nothing; as [`Txn::commit`].
    ///
    /// # Cancel safety
    /// Once validated, the prepare record is appended in the background; the transaction is
    /// then prepared (listed by `Db::prepared`) even if this future was dropped.
    pub async fn prepare(&self) -> Result<()> {
        let db = self.inner.db.clone();
        let taken = self.take()?;
        if taken.writes.is_empty() {
            self.lock().status = Status::Failed;
            self.inner.release();
            return Err(Error::invalid(
                "prepare",
                "the transaction wrote nothing: commit it instead",
            ));
        }
        let deadline_ms = self.inner.deadline.map_or(0, |d| {
            let left = d.saturating_duration_since(Instant::now());
            unix_ms(SystemTime::now() + left)
        });
        // Held until it is resolved: what a serializable transaction read and scanned, and under
        // either level the catalog keys of the buckets it writes into (`take` adds them to
        // `reads`; a snapshot transaction's `reads` hold nothing else), so that no bucket it
        // writes into can be deleted between its prepare and its commit.
        let held_reads = taken.reads.as_slice();
        let held_ranges = if self.inner.isolation == Isolation::Serializable {
            taken.ranges.as_slice()
        } else {
            &[][..]
        };
        // What it read stays held after a restart too: recorded with its writes.
        let held: Vec<Held> = held_reads
            .iter()
            .cloned()
            .map(Held::Key)
            .chain(held_ranges.iter().cloned().map(Held::Range))
            .collect();
        let encoded = Encoded::prepare(
            self.header(Kind::Prepare, deadline_ms),
            write_refs(&taken.writes),
            &held,
        );
        let check = CommitCheck {
            snapshot: self.inner.snapshot,
            reads: &taken.reads,
            ranges: &taken.ranges,
            own_hold: None,
        };
        let written = written_keys(&taken.writes);
        let id = self.inner.id;
        if let Err(refusal) =
            db.oracle
                .validate_and_hold(check, written, held_reads, held_ranges, id)
        {
            return Err(self.refused(refusal));
        }
        self.inner.release();
        // Read before the append: the record lands after it.
        let log_floor = crate::types::Lsn(db.wal.last_lsn().0 + 1);
        db.background.hold_log(id, log_floor, None);
        db.prepared_txns().insert(
            id,
            Prepared {
                writes: taken.writes,
                held: Vec::new(),
                deadline: self.inner.deadline,
                resolving: false,
                log_floor,
            },
        );
        let chunks = encoded.finish(0);
        let task_db = db.clone();
        let appended = run_detached(async move {
            let result = append(&task_db, chunks, Ack::Durable).await;
            if result.is_err() {
                task_db.prepared_txns().remove(&id);
                task_db.oracle.unhold(id);
                task_db.background.release_log(id);
            }
            result.map(drop)
        })
        .await;
        self.lock().status = if appended.is_ok() {
            Status::Prepared
        } else {
            Status::Failed
        };
        appended
    }

    /// Takes the write set, reads and ranges out of an active transaction, marking it
    /// committing.
    fn take(&self) -> Result<Taken> {
        let mut state = self.live()?;
        state.status = Status::Committing;
        let writes = std::mem::take(&mut state.writes);
        let mut reads = if self.inner.isolation == Isolation::Serializable {
            std::mem::take(&mut state.reads)
        } else {
            Vec::new()
        };
        // Writing into a bucket depends on the bucket still existing, and on the buckets it is
        // nested in: their catalog keys are validated under both isolation levels. Taking a
        // sequence and creating or deleting a nested bucket write into the bucket too (through
        // catalog keys).
        let mut written_buckets: Vec<u64> = writes.keys().copied().collect();
        if let Some(catalog) = writes.get(&bucket::CATALOG) {
            written_buckets.extend(catalog.keys().filter_map(|k| bucket::catalog_owner(k)));
        }
        let mut validated = HashSet::new();
        for mut id in written_buckets {
            while validated.insert(id) {
                let Some((catalog_key, _)) = state.bucket_keys.get(&id) else {
                    break;
                };
                reads.push(catalog_key.clone());
                match bucket::entry_parent(&catalog_key.1) {
                    Some(parent) => id = parent,
                    None => break,
                }
            }
        }
        let ranges = if self.inner.isolation == Isolation::Serializable {
            std::mem::take(&mut state.ranges)
        } else {
            Vec::new()
        };
        Ok(Taken {
            writes,
            count: state.write_count,
            reads,
            ranges,
        })
    }

    fn refused(&self, (kind, (bucket, key)): (crate::ConflictKind, BucketKey)) -> Error {
        self.lock().status = Status::Failed;
        self.inner.release();
        self.inner.db.counters.conflict(self.inner.isolation);
        tracing::debug!(?kind, bucket, "conflict");
        Error::Conflict {
            bucket: self.bucket_path(bucket),
            key,
            kind,
        }
    }

    fn header(&self, kind: Kind, aux: u64) -> Header {
        Header {
            kind,
            seq: 0,
            txn_id: self.inner.id,
            aux,
        }
    }

    fn ack(&self) -> Ack {
        match self.inner.durability {
            None => Ack::Policy,
            Some(Durability::Buffered) => Ack::Written,
            Some(Durability::Durable) => Ack::Durable,
        }
    }
}

impl Shared {
    /// The second phase of a prepared transaction: a seq (validated at prepare, its keys held
    /// since), a commit record, its writes applied and published.
    pub(crate) async fn commit_prepared(self: &Arc<Self>, id: u64, ack: Ack) -> Result<CommitInfo> {
        let writes = self.start_resolving(id, true)?;
        let Some(writes) = writes else {
            // Past its deadline: it rolls back.
            self.rollback_prepared(id).await?;
            self.counters.expired();
            return Err(Error::TxnExpired);
        };
        let count = writes.values().map(|w| w.len() as u64).sum();
        let seq = self.oracle.assign_prepared(id, written_keys(&writes));
        let header = Header {
            kind: Kind::CommitPrepared,
            seq: 0,
            txn_id: id,
            aux: 0,
        };
        let chunks = Encoded::new(header, std::iter::empty()).finish(seq);
        let result = finish(self, seq, chunks, writes, ack).await;
        self.prepared_txns().remove(&id);
        result?;
        self.background.log_committed(id, seq);
        Ok(CommitInfo {
            seq: SeqNo(seq),
            writes: count,
        })
    }

    /// Marks a prepared transaction as being resolved, so that a second commit or rollback is
    /// refused, and returns its writes. For a commit (`committing`) past the deadline it returns
    /// `None` and marks nothing: the caller rolls it back instead.
    fn start_resolving(&self, id: u64, committing: bool) -> Result<Option<WriteSet>> {
        let mut prepared = self.prepared_txns();
        let entry = prepared.get_mut(&id).ok_or(Error::TxnFinished {
            state: "rolled back",
        })?;
        if entry.resolving {
            return Err(Error::TxnFinished { state: "committed" });
        }
        if committing && entry.deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        entry.resolving = true;
        Ok(Some(entry.writes.clone()))
    }

    /// Rolls a prepared transaction back: the rollback record is made durable before its holds
    /// are released, so that no conflicting commit can precede a rollback a crash would undo.
    pub(crate) async fn rollback_prepared(self: &Arc<Self>, id: u64) -> Result<()> {
        self.start_resolving(id, false)?;
        let header = Header {
            kind: Kind::Rollback,
            seq: 0,
            txn_id: id,
            aux: 0,
        };
        let chunks = Encoded::new(header, std::iter::empty()).finish(0);
        let db = self.clone();
        run_detached(async move {
            let result = append(&db, chunks, Ack::Durable).await;
            if result.is_ok() {
                db.prepared_txns().remove(&id);
                db.oracle.unhold(id);
                db.background.release_log(id);
                db.counters.rollback();
            } else if let Some(entry) = db.prepared_txns().get_mut(&id) {
                entry.resolving = false;
            }
            result.map(drop)
        })
        .await
    }
}

/// Steps 2–5 of the commit path, in a task of its own (see the module docs).
async fn finish(
    db: &Arc<Shared>,
    seq: u64,
    chunks: Vec<Bytes>,
    writes: WriteSet,
    ack: Ack,
) -> Result<()> {
    let db = db.clone();
    run_detached(async move {
        let appended = append(&db, chunks, ack).await;
        if let Err(e) = appended {
            // Abandoned: the watermark must not wait for it.
            db.oracle.publish(seq);
            return Err(e);
        }
        db.apply(seq, &writes);
        db.oracle.publish(seq);
        db.oracle.wait_visible(seq).await;
        Ok(())
    })
    .await
}

/// Appends a record's chunks: one entry, or an atomic batch of several.
async fn append(db: &Shared, mut chunks: Vec<Bytes>, ack: Ack) -> Result<()> {
    if chunks.len() == 1 {
        let chunk = chunks.pop().expect("one chunk");
        return db.wal.append_with(Record::new(chunk), ack).await.map(drop);
    }
    db.wal
        .append_batch_with(chunks.into_iter().map(Record::new), ack)
        .await
        .map(drop)
}

/// Runs `work` to its end even if the caller is dropped: polled inline (no task switch in the
/// common case); if the caller is dropped first, what is left of it is handed to a task.
fn run_detached<F>(work: F) -> Detached
where
    F: Future<Output = Result<()>> + Send + 'static,
{
    Detached {
        work: Some(Box::pin(work)),
        runtime: tokio::runtime::Handle::current(),
    }
}

/// See [`run_detached`].
struct Detached {
    work: Option<Pin<Box<dyn Future<Output = Result<()>> + Send>>>,
    runtime: tokio::runtime::Handle,
}

impl Future for Detached {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let work = self.work.as_mut().expect("polled after completion");
        let result = std::task::ready!(work.as_mut().poll(cx));
        self.work = None;
        Poll::Ready(result)
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        if let Some(work) = self.work.take() {
            self.runtime.spawn(async move {
                // Its caller is gone: the outcome is learned from the store.
                let _ = work.await;
            });
        }
    }
}

pub(crate) fn write_refs(writes: &WriteSet) -> impl Iterator<Item = WriteRef<'_>> {
    super::writes_of(writes).map(|(bucket, key, value)| WriteRef {
        bucket,
        key,
        value: value.as_deref(),
    })
}

pub(crate) fn written_keys(writes: &WriteSet) -> Vec<BucketKey> {
    super::writes_of(writes)
        .map(|(bucket, key, _)| (bucket, key.clone()))
        .collect()
}

/// Builds a write set from decoded writes (recovery).
pub(crate) fn write_set(writes: Vec<crate::kv::record::Write>) -> WriteSet {
    let mut set: WriteSet = BTreeMap::new();
    for w in writes {
        set.entry(w.bucket).or_default().insert(w.key, w.value);
    }
    set
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .max(1)
}

/// The `Instant` of a deadline recorded as ms since the Unix epoch (0 = none).
pub(crate) fn deadline_from_unix_ms(ms: u64) -> Option<Instant> {
    if ms == 0 {
        return None;
    }
    let now_ms = unix_ms(SystemTime::now());
    let left = std::time::Duration::from_millis(ms.saturating_sub(now_ms));
    Some(Instant::now() + left)
}
