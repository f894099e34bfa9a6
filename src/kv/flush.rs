//! When the tree's work runs: a full memtable is rotated out and flushed in a background task,
//! which then compacts L0 if it reached its trigger; [`Db::flush`](super::Db::flush) runs the
//! same work and waits for it. One job runs at a time (the tree's `jobs` lock).
//!
//! After a flush the wal's records of the flushed seqs are no longer needed, with one
//! exception: a prepare record is needed until its transaction is rolled back or its commit is
//! flushed (replay rebuilds the prepared transaction from it). The wal is cut at the lowest
//! position anything still needs ([`Background::log_holds`]).
//!
//! Commits wait (backpressure) while more than `max_immutable_memtables` memtables wait for
//! their flush. A failed flush or compaction leaves the tree as it was (the wal still holds
//! every commit); the error is kept and returned to commits that would have to wait for room,
//! and to [`Db::flush`](super::Db::flush).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::shared::Shared;
use super::tree::job::FlushDone;
use crate::error::{Error, Result};
use crate::types::Lsn;

/// The state of the background work.
#[derive(Default)]
pub(crate) struct Background {
    running: AtomicBool,
    error: Mutex<Option<Arc<Error>>>,
    /// Prepare records the wal must keep: txn id → (a position at or below the record, the
    /// seq of its commit once committed).
    log_holds: Mutex<BTreeMap<u64, (Lsn, Option<u64>)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Background {
    /// A prepare record about to be appended (or replayed at `floor`): the wal keeps it.
    pub(crate) fn hold_log(&self, txn_id: u64, floor: Lsn, commit_seq: Option<u64>) {
        lock(&self.log_holds).insert(txn_id, (floor, commit_seq));
    }

    /// A prepared transaction committed at `seq`: its prepare record is needed until `seq` is
    /// flushed.
    pub(crate) fn log_committed(&self, txn_id: u64, seq: u64) {
        if let Some(h) = lock(&self.log_holds).get_mut(&txn_id) {
            h.1 = Some(seq);
        }
    }

    /// A prepare record no longer needed (rolled back, or its append failed).
    pub(crate) fn release_log(&self, txn_id: u64) {
        lock(&self.log_holds).remove(&txn_id);
    }

    /// The lowest position still needed once the seqs up to `flushed` are in tables.
    fn log_floor(&self, flushed: u64) -> Option<Lsn> {
        let mut holds = lock(&self.log_holds);
        holds.retain(|_, (_, seq)| seq.is_none_or(|s| s > flushed));
        holds.values().map(|(lsn, _)| *lsn).min()
    }

    fn failed(&self) -> Option<Arc<Error>> {
        lock(&self.error).clone()
    }
}

impl Shared {
    /// Rotates a full active memtable out and starts the background work.
    pub(crate) fn rotate_and_flush(self: &Arc<Self>) {
        if self.read_only || self.closed.load(Ordering::Acquire) {
            return;
        }
        self.rotate(false);
        self.start_background();
    }

    /// Rotates the active memtable (if `force`, whenever it holds anything; otherwise only if
    /// it is full).
    pub(crate) fn rotate(&self, force: bool) -> bool {
        // Read before the seq: every record of a later seq is appended after this position.
        let log_from = Lsn(self.wal.last_lsn().0 + 1);
        self.tree
            .rotate(log_from, force, || self.oracle.last_assigned())
    }

    fn start_background(self: &Arc<Self>) {
        if self.background.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let db = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = db.run_jobs().await {
                    tracing::error!(error = %e, "background flush or compaction failed");
                    *lock(&db.background.error) = Some(Arc::new(e));
                    db.tree.room.notify_waiters();
                }
                db.background.running.store(false, Ordering::Release);
                // A rotation after the last check must not be left waiting.
                let more = db.tree.immutables() > 0 || db.tree.needs_compaction();
                let stop = db.closed.load(Ordering::Acquire) || db.background.failed().is_some();
                if stop || !more || db.background.running.swap(true, Ordering::AcqRel) {
                    break;
                }
            }
        });
    }

    /// Flushes every immutable memtable (oldest first) and cuts the wal after each, then
    /// compacts L0 while it is at its trigger.
    ///
    /// # Errors
    /// The jobs' errors; what was done before stays done.
    pub(crate) async fn run_jobs(&self) -> Result<()> {
        let _job = self.tree.jobs.lock().await;
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Ok(());
            }
            let current = self.tree.current();
            let n = current.memtables.len();
            if n < 2 {
                break;
            }
            // Every seq of the memtable is inserted (or abandoned) once the watermark passes
            // its end.
            self.oracle
                .wait_visible(current.memtables[n - 2].after_seq)
                .await;
            drop(current);
            let next_txn_id = self.peek_next_txn_id();
            let Some(done) = self
                .tree
                .flush_oldest(self.oracle.oldest_needed(), next_txn_id)
                .await?
            else {
                break;
            };
            self.cut_wal(&done).await?;
        }
        while self.tree.needs_compaction() && !self.closed.load(Ordering::Acquire) {
            if !self.tree.compact_l0(self.oracle.oldest_needed()).await? {
                break;
            }
        }
        Ok(())
    }

    async fn cut_wal(&self, done: &FlushDone) -> Result<()> {
        let floor = self
            .background
            .log_floor(done.flushed_seq)
            .map_or(done.log_from, |held| held.min(done.log_from));
        if floor > self.wal.first_lsn() {
            self.wal.truncate_front(floor).await?;
            tracing::debug!(lsn = floor.0, "wal cut below the flushed commits");
        }
        Ok(())
    }

    /// Waits while too many memtables wait for their flush.
    ///
    /// # Errors
    /// [`Error::Poisoned`] if the background work failed while commits had to wait.
    pub(crate) async fn wait_for_room(&self) -> Result<()> {
        if !self.tree.stalled() {
            return Ok(());
        }
        let started = Instant::now();
        let result = loop {
            let notified = self.tree.room.notified();
            if let Some(cause) = self.background.failed() {
                break Err(Error::Poisoned { cause });
            }
            if !self.tree.stalled() || self.closed.load(Ordering::Acquire) {
                break Ok(());
            }
            notified.await;
        };
        let waited = started.elapsed().as_micros() as u64;
        self.tree
            .figures
            .stall_micros
            .fetch_add(waited, Ordering::Relaxed);
        metrics::counter!("ringtide_kv_stall_micros_total").increment(waited);
        result
    }

    /// The background work's error, if it failed.
    pub(crate) fn background_error(&self) -> Option<Arc<Error>> {
        self.background.failed()
    }
}
