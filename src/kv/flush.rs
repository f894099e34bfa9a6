//! When the tree's work runs: a full memtable is rotated out and flushed by a background task;
//! a flush that fills L0 to its trigger starts a compaction task. Flushes and compactions run
//! apart (a flush never waits behind a long compaction), each kind one at a time (the tree's
//! `flushing` and `compacting` locks). [`Db::flush`](super::Db::flush) and
//! [`Db::compact`](super::Db::compact) run the same work in a task of their own and wait for it,
//! so that a dropped call never splits a manifest edit from the swap after it.
//!
//! After a flush the wal's records of the flushed seqs are no longer needed, with one
//! exception: a prepare record is needed until its transaction is rolled back or its commit is
//! flushed (replay rebuilds the prepared transaction from it). The wal is cut at the lowest
//! position anything still needs ([`Background::log_holds`]).
//!
//! Commits wait (backpressure) while more than `max_immutable_memtables` memtables wait for
//! their flush, while L0 holds `l0_stop_writes_trigger` tables or more, or while the memtables
//! fill their share of `memory_limit_bytes`. A failed flush or compaction leaves the tree as it
//! was (the wal still holds every commit); the error is kept and returned to commits that would
//! have to wait for room until a later job succeeds (the next rotation starts one).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::bucket::DeadBuckets;
use super::shared::Shared;
use super::tree::job::{FlushDone, Horizon};
use super::tree::range::KeyRange;
use crate::error::{Error, Result};
use crate::types::Lsn;

/// The state of the background work.
#[derive(Default)]
pub(crate) struct Background {
    flushing: AtomicBool,
    /// Compaction tasks running (at most `max_concurrent_compactions`).
    compactions: AtomicUsize,
    error: Mutex<Option<Arc<Error>>>,
    /// Prepare records the wal must keep: txn id → (a position at or below the record, the
    /// seq of its commit once committed).
    log_holds: Mutex<BTreeMap<u64, (Lsn, Option<u64>)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Background {
    /// Counts one more task of `job` if fewer than `limit` run (one flush task at most).
    fn claim(&self, job: Job, limit: usize) -> bool {
        match job {
            Job::Flush => !self.flushing.swap(true, Ordering::AcqRel),
            Job::Compaction => self
                .compactions
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < limit).then_some(n + 1)
                })
                .is_ok(),
        }
    }

    fn release(&self, job: Job) {
        match job {
            Job::Flush => self.flushing.store(false, Ordering::Release),
            Job::Compaction => {
                self.compactions.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

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

/// How often a compaction task's cooldown looks whether commits wait or the store closes.
const COOLDOWN_STEP: std::time::Duration = std::time::Duration::from_millis(10);

/// See [`Shared::reach`].
struct Reach {
    oldest: u64,
    dead: DeadBuckets,
}

impl Reach {
    fn get(&self) -> Horizon<'_> {
        Horizon {
            oldest_snapshot: self.oldest,
            unreachable: &self.dead,
        }
    }
}

/// Which background job.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Job {
    Flush,
    Compaction,
}

impl Shared {
    /// Rotates a full active memtable out and starts the background work.
    pub(crate) fn rotate_and_flush(self: &Arc<Self>) {
        if self.read_only || self.closed.load(Ordering::Acquire) {
            return;
        }
        self.rotate(false);
        self.start(Job::Flush);
    }

    /// Rotates the active memtable (if `force`, whenever it holds anything; otherwise only if
    /// it is full).
    pub(crate) fn rotate(&self, force: bool) -> bool {
        // Read before the seq: every record of a later seq is appended after this position.
        let log_from = Lsn(self.wal.last_lsn().0 + 1);
        self.tree
            .rotate(log_from, force, || self.oracle.last_assigned())
    }

    /// Starts a background task for `job` unless as many run as may: one flush task,
    /// `max_concurrent_compactions` compaction tasks. Flushes and compactions run apart (a
    /// flush never waits behind a long compaction).
    fn start(self: &Arc<Self>, job: Job) {
        let limit = self.tree.options.max_concurrent_compactions;
        if !self.background.claim(job, limit) {
            return;
        }
        let db = self.clone();
        tokio::spawn(async move {
            loop {
                let (result, worked) = match job {
                    Job::Flush => (db.flush_all().await, true),
                    Job::Compaction => match db.compact_all().await {
                        Ok(worked) => (Ok(()), worked),
                        Err(e) => (Err(e), false),
                    },
                };
                // A compaction task that found nothing to run says nothing of the store's
                // health: it must not clear an error another job kept.
                let result = if worked || result.is_err() {
                    db.note_outcome(result)
                } else {
                    Ok(())
                };
                db.background.release(job);
                let stop = db.closed.load(Ordering::Acquire) || result.is_err();
                // A rotation (or a flush filling L0) after the last check must not be left
                // waiting. A compaction task that found nothing to run beside the others
                // ends (they look again when they finish).
                let more = match job {
                    Job::Flush => db.tree.immutables() > 0,
                    Job::Compaction => worked && db.tree.needs_compaction(),
                };
                if stop || !more || !db.background.claim(job, limit) {
                    break;
                }
            }
            if job == Job::Flush && db.tree.needs_compaction() && !db.closed.load(Ordering::Acquire)
            {
                db.start(Job::Compaction);
            }
            // Commits waiting for room see the outcome (or the close).
            db.tree.room.notify_waiters();
        });
    }

    /// Keeps a job's error for the commits that wait for room (as the cause of `Poisoned`,
    /// which `Db::flush` returns too); a later success clears it.
    fn note_outcome(&self, result: Result<()>) -> Result<()> {
        let mut error = lock(&self.background.error);
        match result {
            Ok(()) => {
                *error = None;
                Ok(())
            }
            Err(Error::Closed) => Err(Error::Closed),
            Err(e) => {
                tracing::error!(error = %e, "background flush or compaction failed");
                let cause = Arc::new(e);
                *error = Some(cause.clone());
                Err(Error::Poisoned { cause })
            }
        }
    }

    /// Runs `work` in a task of its own and waits for it: dropped, the caller leaves the work
    /// running to its end (a manifest edit and the swap after it are never split).
    pub(crate) async fn detached<F, T>(self: &Arc<Self>, work: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        match tokio::spawn(work).await {
            Ok(result) => result,
            Err(e) => Err(Error::Io {
                path: None,
                source: std::io::Error::other(format!("the store's job task ended: {e}")),
            }),
        }
    }

    /// What `Db::flush` runs: every immutable memtable flushed, then every level due compacted
    /// (after the compactions already running end).
    pub(crate) async fn flush_now(self: &Arc<Self>) -> Result<()> {
        let db = self.clone();
        self.detached(async move {
            db.rotate(true);
            let result = db.flush_all().await;
            db.note_outcome(result)?;
            if db.tree.needs_compaction() {
                let result = db.compact_due(false).await;
                db.note_outcome(result)?;
            }
            Ok(())
        })
        .await
    }

    /// What `Db::compact` runs: L0 into L1 whatever its size, then every level due.
    pub(crate) async fn compact_now(self: &Arc<Self>) -> Result<()> {
        let db = self.clone();
        self.detached(async move { db.compact_due(true).await })
            .await
    }

    /// With every compaction permit (no other compaction runs): L0 into L1 first whatever its
    /// size if `force_l0`, then compactions while a level is due.
    async fn compact_due(&self, mut force_l0: bool) -> Result<()> {
        let _all = self.tree.all_compactions().await;
        self.check_open()?;
        while self
            .tree
            .compact_next(self.reach().await?.get(), &self.closed, force_l0)
            .await?
        {
            force_l0 = false;
            self.check_open()?;
        }
        Ok(())
    }

    /// What `Db::compact_range` runs: a flush, then the range down to the last level.
    pub(crate) async fn compact_range_now(self: &Arc<Self>, range: KeyRange) -> Result<()> {
        let db = self.clone();
        self.detached(async move {
            db.rotate(true);
            let result = db.flush_all().await;
            db.note_outcome(result)?;
            let _all = db.tree.all_compactions().await;
            db.check_open()?;
            let result = match db.reach().await {
                Ok(reach) => db.tree.compact_range(&range, reach.get(), &db.closed).await,
                Err(e) => Err(e),
            };
            db.note_outcome(result)
        })
        .await
    }

    /// What a compaction may drop now: versions below the oldest snapshot anyone holds or can
    /// take, and the keys of the buckets deleted at or below it.
    async fn reach(&self) -> Result<Reach> {
        let oldest = self.oracle.oldest_needed();
        Ok(Reach {
            oldest,
            dead: DeadBuckets::at(&self.tree, oldest).await?,
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Flushes every immutable memtable (oldest first) and cuts the wal after each.
    ///
    /// # Errors
    /// The flush's errors; what was done before stays done.
    async fn flush_all(&self) -> Result<()> {
        let _job = self.tree.flushing.lock().await;
        loop {
            self.check_open()?;
            let current = self.tree.current();
            let n = current.memtables.len();
            if n < 2 {
                return Ok(());
            }
            // Every seq of the memtable is inserted (or abandoned) once the watermark passes
            // its end.
            let end = current.memtables[n - 2].after_seq;
            drop(current);
            self.oracle.wait_visible(end).await;
            // The flushed seq is recorded only once every record up to it is durable in the
            // wal: a table must not make durable a commit (a commit of a prepared transaction
            // above all) whose record a crash could still take.
            self.wal.sync().await?;
            let next_txn_id = self.peek_next_txn_id();
            let Some(done) = self
                .tree
                .flush_oldest(self.oracle.oldest_needed(), next_txn_id)
                .await?
            else {
                return Ok(());
            };
            self.tree.room.notify_waiters();
            self.cut_wal(&done).await?;
        }
    }

    /// Compacts while some level is over its target (L0: its table count over its trigger)
    /// and has a compaction no other task runs; starts another task (up to
    /// `max_concurrent_compactions`) to look for one that can run beside it.
    /// Returns whether it ran any.
    async fn compact_all(self: &Arc<Self>) -> Result<bool> {
        let cooldown = self.tree.options.compaction_cooldown;
        let mut worked = false;
        while self.tree.needs_compaction() {
            self.check_open()?;
            let permit = self.tree.compaction_permit().await;
            self.check_open()?;
            self.start(Job::Compaction);
            if !self
                .tree
                .compact_next(self.reach().await?.get(), &self.closed, false)
                .await?
            {
                break;
            }
            worked = true;
            drop(permit);
            // The pause ends early once commits wait or the store closes.
            let until = Instant::now() + cooldown;
            while !self.tree.stalled() && !self.closed.load(Ordering::Acquire) {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                tokio::time::sleep(left.min(COOLDOWN_STEP)).await;
            }
        }
        Ok(worked)
    }

    /// Waits for the background jobs under way to stop (the store is closing: they stop at
    /// their next step) and wakes the commits waiting for room.
    pub(crate) async fn stop_jobs(&self) {
        self.tree.room.notify_waiters();
        drop(self.tree.flushing.lock().await);
        drop(self.tree.all_compactions().await);
        self.tree.room.notify_waiters();
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

    /// Waits while the tree is stalled (see `Tree::stalled`): too many memtables wait for
    /// their flush, too many L0 tables for their compaction, or the memory limit is reached.
    ///
    /// # Errors
    /// [`Error::Poisoned`] if the background work failed while commits had to wait;
    /// [`Error::Closed`] if the store closed meanwhile.
    pub(crate) async fn wait_for_room(self: &Arc<Self>) -> Result<()> {
        if !self.tree.stalled() {
            return Ok(());
        }
        // The work that frees room runs (or starts now: nothing else may be left to start it).
        if !self.read_only && !self.closed.load(Ordering::Acquire) {
            if self.tree.immutables() > 0 {
                self.start(Job::Flush);
            }
            if self.tree.needs_compaction() {
                self.start(Job::Compaction);
            }
        }
        let started = Instant::now();
        let result = loop {
            let notified = self.tree.room.notified();
            if let Some(cause) = self.background.failed() {
                break Err(Error::Poisoned { cause });
            }
            if self.closed.load(Ordering::Acquire) {
                break Err(Error::Closed);
            }
            if !self.tree.stalled() {
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

    /// Whether a flush, and a compaction, runs now.
    pub(crate) fn background_running(&self) -> (bool, usize) {
        (
            self.background.flushing.load(Ordering::Relaxed),
            self.background.compactions.load(Ordering::Relaxed),
        )
    }

    /// The background work's error, if it failed.
    pub(crate) fn background_error(&self) -> Option<Arc<Error>> {
        self.background.failed()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::kv::{Db, DbOptions, TxnOptions};

    /// Commits wait while too many memtables wait for their flush, resume when one is
    /// flushed, and end with `Closed` if the store closes instead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_wait_for_room_and_end_when_the_store_closes() {
        let dir = tempfile::tempdir().unwrap();
        let options = DbOptions::default()
            .write_buffer_bytes(64 << 10)
            .max_immutable_memtables(1);
        let db = Db::open(dir.path(), options).await.unwrap();
        let shared = db.shared.clone();
        let commit_round = |round: u32| {
            let txn = db.begin(TxnOptions::default()).unwrap();
            for i in 0..400u32 {
                txn.put(format!("k{i:05}"), format!("{round}-{}", "x".repeat(100)))
                    .unwrap();
            }
            tokio::spawn(async move { txn.commit().await })
        };
        // No flush can run: memtables pile up until commits have to wait.
        let fill = |round: &mut u32| {
            let r = *round;
            *round += 1;
            commit_round(r)
        };
        let held = shared.tree.flushing.lock().await;
        let mut round = 0;
        while !shared.tree.stalled() {
            fill(&mut round).await.unwrap().unwrap();
            assert!(round < 20, "memtables pile up while no flush runs");
        }
        let waiting = fill(&mut round);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a commit waits while stalled");
        // Flushes resume: the waiting commit goes through.
        drop(held);
        tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("the commit resumes after a flush")
            .unwrap()
            .unwrap();
        assert!(db.stats().stall_micros > 0);
        // Again, and this time the store closes.
        let held = shared.tree.flushing.lock().await;
        while !shared.tree.stalled() {
            fill(&mut round).await.unwrap().unwrap();
            assert!(round < 60, "memtables pile up while no flush runs");
        }
        let waiting = fill(&mut round);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a commit waits while stalled");
        let closing = tokio::spawn({
            let db = db.clone();
            async move { db.close().await }
        });
        let result = tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("a waiting commit ends when the store closes")
            .unwrap();
        assert!(matches!(result, Err(crate::Error::Closed)), "{result:?}");
        drop(held);
        closing.await.unwrap().unwrap();
    }

    /// Commits wait while L0 holds `l0_stop_writes_trigger` tables (no compaction can run
    /// meanwhile), and resume once a compaction shrinks it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_wait_for_l0_to_shrink() {
        let dir = tempfile::tempdir().unwrap();
        let options = DbOptions::default()
            .l0_compaction_trigger(2)
            .l0_stop_writes_trigger(3);
        let db = Db::open(dir.path(), options).await.unwrap();
        let shared = db.shared.clone();
        let commit = |i: u32| {
            let txn = db.begin(TxnOptions::default()).unwrap();
            txn.put(format!("k{i}"), "v").unwrap();
            tokio::spawn(async move { txn.commit().await })
        };
        let held = shared.tree.all_compactions().await;
        let mut i = 0;
        while !shared.tree.stalled() {
            commit(i).await.unwrap().unwrap();
            // A flush without the compaction `Db::flush` would wait for.
            shared.rotate(true);
            shared.flush_all().await.unwrap();
            i += 1;
            assert!(i < 10, "L0 fills while no compaction runs");
        }
        let waiting = commit(i);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a commit waits while L0 is full");
        drop(held);
        tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("the commit resumes after a compaction")
            .unwrap()
            .unwrap();
        assert!(db.stats().levels[0].tables < 3);
        db.close().await.unwrap();
    }
}
