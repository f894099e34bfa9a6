//! The oracle: snapshots, validation, commit sequence numbers and the visibility watermark.
//!
//! Everything here runs in one short critical section per call (a `std` mutex, never held
//! across an await):
//! - `begin` reads the watermark and registers the snapshot, so that the conflict history is
//!   never collected above a snapshot still in use;
//! - `validate_and_assign` checks a commit against the keys written by commits newer than its
//!   snapshot (and against keys held by prepared transactions), then takes the next seq,
//!   records the commit's keys and releases the commit's snapshot;
//! - `publish` marks a seq finished (applied, or abandoned after a failed append) and advances
//!   the watermark over every finished seq in order, so that a snapshot never sees commit N+1
//!   without commit N.
//!
//! The conflict history holds, per key, the seq of the newest commit that wrote it, for commits
//! newer than the oldest active snapshot; it is bounded by bytes: past the bound the oldest
//! commits are forgotten and `floor` rises, and a transaction whose snapshot is below `floor`
//! cannot be validated ([`ConflictKind::TooOld`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Poll, Waker};
use std::time::Instant;

use bytes::Bytes;

use crate::error::ConflictKind;

/// A key of a bucket: `(bucket id, user key)`.
pub(crate) type BucketKey = (u64, Bytes);

/// Bytes a key costs in the history beyond its own length.
const HISTORY_KEY_OVERHEAD: u64 = 64;
/// A commit of at least this many keys is kept in the history whole, as its sorted key list,
/// rather than key by key: recording and forgetting it cost O(1) under the lock instead of a
/// B-tree insert and remove per key, and the rare commits validated against it search it.
const LARGE_COMMIT_KEYS: usize = 256;

/// A commit recorded in the history, for collection.
enum Logged {
    /// Its keys, each also in `history`.
    Keys(Vec<BucketKey>),
    /// A large commit, kept whole in `large`; the bytes it counts for.
    Large(u64),
}

/// The first key of `keys` (sorted) within `range`.
fn first_within<'a>(
    keys: &'a [BucketKey],
    (lower, upper): &(Bound<BucketKey>, Bound<BucketKey>),
) -> Option<&'a BucketKey> {
    let i = match lower {
        Bound::Included(l) => keys.partition_point(|k| k < l),
        Bound::Excluded(l) => keys.partition_point(|k| k <= l),
        Bound::Unbounded => 0,
    };
    let key = keys.get(i)?;
    let below_upper = match upper {
        Bound::Included(u) => key <= u,
        Bound::Excluded(u) => key < u,
        Bound::Unbounded => true,
    };
    below_upper.then_some(key)
}

/// A range of a bucket a transaction scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScannedRange {
    pub(crate) bucket: u64,
    pub(crate) lower: Bound<Bytes>,
    pub(crate) upper: Bound<Bytes>,
}

impl ScannedRange {
    fn contains(&self, bucket: u64, key: &[u8]) -> bool {
        bucket == self.bucket
            && match &self.lower {
                Bound::Included(l) => key >= &l[..],
                Bound::Excluded(l) => key > &l[..],
                Bound::Unbounded => true,
            }
            && match &self.upper {
                Bound::Included(u) => key <= &u[..],
                Bound::Excluded(u) => key < &u[..],
                Bound::Unbounded => true,
            }
    }

    fn history_range(&self) -> (Bound<BucketKey>, Bound<BucketKey>) {
        let lower = match &self.lower {
            Bound::Included(l) => Bound::Included((self.bucket, l.clone())),
            Bound::Excluded(l) => Bound::Excluded((self.bucket, l.clone())),
            Bound::Unbounded => Bound::Included((self.bucket, Bytes::new())),
        };
        let upper = match &self.upper {
            Bound::Included(u) => Bound::Included((self.bucket, u.clone())),
            Bound::Excluded(u) => Bound::Excluded((self.bucket, u.clone())),
            Bound::Unbounded => match self.bucket.checked_add(1) {
                Some(next) => Bound::Excluded((next, Bytes::new())),
                None => Bound::Unbounded,
            },
        };
        (lower, upper)
    }
}

/// What a commit asks the oracle to check.
pub(crate) struct CommitCheck<'a> {
    pub(crate) snapshot: u64,
    /// Keys read (serializable), plus the catalog keys of buckets written into (both levels).
    pub(crate) reads: &'a [BucketKey],
    /// Ranges scanned (serializable).
    pub(crate) ranges: &'a [ScannedRange],
    /// The prepared transaction committing now (its own holds do not conflict with it).
    pub(crate) own_hold: Option<u64>,
}

/// Why a check failed: the kind and the key.
pub(crate) type Refusal = (ConflictKind, BucketKey);

/// Keys and ranges a prepared transaction holds until it commits or rolls back.
#[derive(Debug, Default)]
struct Hold {
    /// Keys it holds (written or read), each once.
    keys: Vec<BucketKey>,
    ranges: Vec<ScannedRange>,
}

/// The prepared transactions holding one key: those that write it and those that read it.
/// Several may hold a key (two prepared writers of one bucket both read its catalog key), and
/// each releases only its own hold.
#[derive(Default, Debug)]
struct Holders {
    writers: Vec<u64>,
    readers: Vec<u64>,
}

impl Holders {
    fn is_empty(&self) -> bool {
        self.writers.is_empty() && self.readers.is_empty()
    }

    /// Whether a transaction other than `own` holds the key at all.
    fn other_than(&self, own: Option<u64>) -> bool {
        self.writers
            .iter()
            .chain(&self.readers)
            .any(|&id| Some(id) != own)
    }

    /// Whether a transaction other than `own` writes the key.
    fn other_writer_than(&self, own: Option<u64>) -> bool {
        self.writers.iter().any(|&id| Some(id) != own)
    }
}

#[derive(Default)]
struct State {
    /// The last seq assigned.
    last_seq: u64,
    /// The watermark: every seq at or below it is finished.
    visible: u64,
    /// Finished seqs above the watermark.
    finished: BTreeSet<u64>,
    /// Per key, the newest seq that wrote it (commits of fewer than `LARGE_COMMIT_KEYS`).
    history: BTreeMap<BucketKey, u64>,
    /// Large commits, whole: their seq and sorted keys, in seq order.
    large: VecDeque<(u64, Vec<BucketKey>)>,
    /// The commits recorded in the history, in seq order, for collection.
    log: VecDeque<(u64, Logged)>,
    history_bytes: u64,
    /// Commits at or below it are no longer in the history.
    floor: u64,
    /// Active snapshots: (snapshot, txn id) → deadline.
    snapshots: BTreeMap<(u64, u64), Option<Instant>>,
    /// Keys held by prepared transactions: key → the transactions holding it.
    held: HashMap<BucketKey, Holders>,
    /// Every prepared transaction's holds, by txn id.
    holds: HashMap<u64, Hold>,
    /// Tasks waiting for the watermark to reach a seq: woken once, when it does.
    waiters: BTreeMap<u64, Vec<Waker>>,
}

/// See the module docs.
pub(crate) struct Oracle {
    state: Mutex<State>,
    /// Snapshots of read-only transactions (snapshot → count): they need no conflict history,
    /// only their versions kept, so they register here, off the commit path's lock.
    readers: Mutex<BTreeMap<u64, u32>>,
    visible: AtomicU64,
    max_history_bytes: u64,
}

impl Oracle {
    /// An oracle whose every seq up to `last_seq` is committed and visible.
    pub(crate) fn new(last_seq: u64, max_history_bytes: u64) -> Oracle {
        Oracle {
            state: Mutex::new(State {
                last_seq,
                visible: last_seq,
                floor: last_seq,
                ..State::default()
            }),
            visible: AtomicU64::new(last_seq),
            readers: Mutex::new(BTreeMap::new()),
            max_history_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock would be a bug in this module; the state is kept
        // consistent at every return, so a poisoned lock is taken as is.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The watermark: every commit at or below it is visible.
    pub(crate) fn visible(&self) -> u64 {
        self.visible.load(Ordering::Acquire)
    }

    /// The oldest snapshot any reader holds or can take: versions it cannot see that a newer
    /// version at or below it shadows are needed by no one.
    pub(crate) fn oldest_needed(&self) -> u64 {
        let writers = {
            let s = self.lock();
            s.snapshots
                .keys()
                .next()
                .map_or(s.visible, |&(snap, _)| snap.min(s.visible))
        };
        // The watermark read under the readers' lock: a reader registering later takes it or
        // a newer one.
        let readers = self.lock_readers();
        let visible = self.visible();
        let readers = readers
            .keys()
            .next()
            .map_or(visible, |&snap| snap.min(visible));
        writers.min(readers)
    }

    fn lock_readers(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u32>> {
        self.readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a read-only transaction's snapshot (the watermark) and registers it.
    pub(crate) fn begin_reader(&self) -> u64 {
        let mut readers = self.lock_readers();
        let snapshot = self.visible();
        *readers.entry(snapshot).or_insert(0) += 1;
        snapshot
    }

    /// Releases a read-only transaction's snapshot.
    pub(crate) fn release_reader(&self, snapshot: u64) {
        let mut readers = self.lock_readers();
        if let Some(n) = readers.get_mut(&snapshot) {
            *n -= 1;
            if *n == 0 {
                readers.remove(&snapshot);
            }
        }
    }

    /// The last seq assigned (visible or not yet).
    pub(crate) fn last_assigned(&self) -> u64 {
        self.lock().last_seq
    }

    /// Takes a snapshot at the watermark and registers it under `txn_id`.
    pub(crate) fn begin(&self, txn_id: u64, deadline: Option<Instant>) -> u64 {
        let mut s = self.lock();
        let snapshot = s.visible;
        s.snapshots.insert((snapshot, txn_id), deadline);
        snapshot
    }

    /// Releases a snapshot (commit, rollback, expiry or drop). Idempotent.
    pub(crate) fn release(&self, snapshot: u64, txn_id: u64) {
        let mut s = self.lock();
        let oldest = s.snapshots.keys().next() == Some(&(snapshot, txn_id));
        // Only the oldest snapshot holds history back.
        if s.snapshots.remove(&(snapshot, txn_id)).is_some() && oldest {
            self.collect(&mut s);
        }
    }

    /// Validates a commit and, if it passes, assigns its seq, records its written keys and
    /// releases its snapshot (registered under `txn_id`), all in one critical section.
    pub(crate) fn validate_and_assign(
        &self,
        check: CommitCheck<'_>,
        written: Vec<BucketKey>,
        txn_id: u64,
    ) -> Result<u64, Refusal> {
        let mut s = self.lock();
        let snapshot = check.snapshot;
        Self::validate(&s, check, &written)?;
        s.snapshots.remove(&(snapshot, txn_id));
        s.last_seq += 1;
        let seq = s.last_seq;
        self.record(&mut s, seq, written);
        Ok(seq)
    }

    /// Validates a prepare and, if it passes, holds under `txn_id` the keys it writes and the
    /// keys and ranges it read (`held_reads`, `held_ranges`), in the same critical section.
    pub(crate) fn validate_and_hold(
        &self,
        check: CommitCheck<'_>,
        mut written: Vec<BucketKey>,
        held_reads: &[BucketKey],
        held_ranges: &[ScannedRange],
        txn_id: u64,
    ) -> Result<(), Refusal> {
        let mut s = self.lock();
        Self::validate(&s, check, &written)?;
        // What it holds as read must not be written by another prepared transaction either:
        // its commit is not validated again, so a prepared delete of a bucket it writes into
        // (the bucket's catalog key) committed first would leave its writes in a dead bucket.
        for key in held_reads {
            if s.held
                .get(key)
                .is_some_and(|h| h.other_writer_than(Some(txn_id)))
            {
                return Err((ConflictKind::Prepared, key.clone()));
            }
        }
        Self::hold_locked(
            &mut s,
            txn_id,
            std::mem::take(&mut written),
            held_reads.to_vec(),
            held_ranges.to_vec(),
        );
        Ok(())
    }

    /// Holds keys and ranges for a prepared transaction restored by recovery: the keys it
    /// writes and those it read.
    pub(crate) fn hold(
        &self,
        txn_id: u64,
        written: Vec<BucketKey>,
        read: Vec<BucketKey>,
        ranges: Vec<ScannedRange>,
    ) {
        let mut s = self.lock();
        Self::hold_locked(&mut s, txn_id, written, read, ranges);
    }

    fn hold_locked(
        s: &mut State,
        txn_id: u64,
        written: Vec<BucketKey>,
        read: Vec<BucketKey>,
        ranges: Vec<ScannedRange>,
    ) {
        let mut keys = Vec::with_capacity(written.len() + read.len());
        for (k, writes) in written
            .into_iter()
            .map(|k| (k, true))
            .chain(read.into_iter().map(|k| (k, false)))
        {
            let holders = s.held.entry(k.clone()).or_default();
            let list = if writes {
                &mut holders.writers
            } else {
                &mut holders.readers
            };
            if !list.contains(&txn_id) {
                list.push(txn_id);
                keys.push(k);
            }
        }
        let hold = s.holds.entry(txn_id).or_default();
        hold.keys.extend(keys);
        hold.ranges.extend(ranges);
    }

    /// Releases a prepared transaction's holds (after its commit was assigned, or rollback):
    /// its own, not another's on the same keys.
    pub(crate) fn unhold(&self, txn_id: u64) {
        let mut s = self.lock();
        if let Some(hold) = s.holds.remove(&txn_id) {
            for k in hold.keys {
                if let Some(h) = s.held.get_mut(&k) {
                    h.writers.retain(|&id| id != txn_id);
                    h.readers.retain(|&id| id != txn_id);
                    if h.is_empty() {
                        s.held.remove(&k);
                    }
                }
            }
        }
    }

    /// Assigns the seq of a prepared transaction's commit (validated at prepare; its keys were
    /// held since) and releases its holds.
    pub(crate) fn assign_prepared(&self, txn_id: u64, written: Vec<BucketKey>) -> u64 {
        let mut s = self.lock();
        s.last_seq += 1;
        let seq = s.last_seq;
        self.record(&mut s, seq, written);
        drop(s);
        self.unhold(txn_id);
        seq
    }

    fn validate(s: &State, check: CommitCheck<'_>, written: &[BucketKey]) -> Result<(), Refusal> {
        let snapshot = check.snapshot;
        // The large commits newer than the snapshot (the newest last).
        let large_newer = || {
            let from = s.large.partition_point(|(seq, _)| *seq <= snapshot);
            s.large.range(from..).map(|(_, keys)| keys.as_slice())
        };
        let newer = |key: &BucketKey| {
            s.history.get(key).is_some_and(|&seq| seq > snapshot)
                || large_newer().any(|keys| keys.binary_search(key).is_ok())
        };
        let too_old = check.snapshot < s.floor;
        for key in written {
            if too_old {
                return Err((ConflictKind::TooOld, key.clone()));
            }
            if newer(key) {
                return Err((ConflictKind::WriteWrite, key.clone()));
            }
        }
        for key in written {
            if s.held
                .get(key)
                .is_some_and(|h| h.other_than(check.own_hold))
            {
                return Err((ConflictKind::Prepared, key.clone()));
            }
            for (&id, hold) in &s.holds {
                if Some(id) != check.own_hold
                    && hold.ranges.iter().any(|r| r.contains(key.0, &key.1))
                {
                    return Err((ConflictKind::Prepared, key.clone()));
                }
            }
        }
        for key in check.reads {
            if too_old {
                return Err((ConflictKind::TooOld, key.clone()));
            }
            if newer(key) {
                return Err((ConflictKind::ReadWrite, key.clone()));
            }
        }
        for range in check.ranges {
            if too_old {
                return Err((ConflictKind::TooOld, (range.bucket, Bytes::new())));
            }
            let bounds = range.history_range();
            let hit = s
                .history
                .range(bounds.clone())
                .find(|(_, seq)| **seq > snapshot)
                .map(|(key, _)| key)
                .or_else(|| large_newer().find_map(|keys| first_within(keys, &bounds)));
            if let Some(key) = hit {
                return Err((ConflictKind::Phantom, key.clone()));
            }
        }
        Ok(())
    }

    fn record(&self, s: &mut State, seq: u64, written: Vec<BucketKey>) {
        let bytes: u64 = written
            .iter()
            .map(|key| key.1.len() as u64 + HISTORY_KEY_OVERHEAD)
            .sum();
        s.history_bytes += bytes;
        if written.len() >= LARGE_COMMIT_KEYS {
            // A write set's keys come sorted and unique (see `written_keys`).
            debug_assert!(written.windows(2).all(|w| w[0] < w[1]));
            s.large.push_back((seq, written));
            s.log.push_back((seq, Logged::Large(bytes)));
        } else {
            for key in &written {
                s.history.insert(key.clone(), seq);
            }
            s.log.push_back((seq, Logged::Keys(written)));
        }
        self.collect(s);
    }

    /// Forgets the commits no active snapshot needs, then the oldest ones while the history is
    /// over its byte bound (raising `floor`). Expired snapshots are released here.
    fn collect(&self, s: &mut State) {
        // The clock is read only if the oldest snapshot has a deadline.
        let mut now = None;
        while let Some((&(snapshot, id), &Some(deadline))) = s.snapshots.first_key_value() {
            if deadline <= *now.get_or_insert_with(Instant::now) {
                s.snapshots.remove(&(snapshot, id));
            } else {
                break;
            }
        }
        let oldest = s
            .snapshots
            .keys()
            .find(|_| true)
            .map_or(s.visible, |&(snapshot, _)| snapshot);
        while let Some((seq, _)) = s.log.front() {
            let needed = *seq > oldest;
            if needed && s.history_bytes <= self.max_history_bytes {
                break;
            }
            let (seq, logged) = s.log.pop_front().expect("front exists");
            match logged {
                Logged::Keys(keys) => {
                    for key in keys {
                        s.history_bytes -= key.1.len() as u64 + HISTORY_KEY_OVERHEAD;
                        if s.history.get(&key) == Some(&seq) {
                            s.history.remove(&key);
                        }
                    }
                }
                Logged::Large(bytes) => {
                    s.history_bytes -= bytes;
                    let (large_seq, _) = s.large.pop_front().expect("a large commit logged");
                    debug_assert_eq!(large_seq, seq);
                }
            }
            s.floor = s.floor.max(seq);
        }
        if s.log.is_empty() {
            s.floor = s.floor.max(oldest.min(s.last_seq));
        }
    }

    /// Marks `seq` finished (its writes are in the memtable, or its append failed and it never
    /// will be) and advances the watermark over every finished seq in order, waking exactly the
    /// waiters it passes.
    pub(crate) fn publish(&self, seq: u64) {
        let mut s = self.lock();
        // In order (the common case): no detour through `finished`.
        let mut advanced = seq == s.visible + 1;
        if advanced {
            s.visible = seq;
        } else {
            s.finished.insert(seq);
        }
        while s.finished.first() == Some(&(s.visible + 1)) {
            s.finished.pop_first();
            s.visible += 1;
            advanced = true;
        }
        if advanced {
            self.visible.store(s.visible, Ordering::Release);
            self.collect(&mut s);
            let above = s.visible + 1;
            let still_waiting = s.waiters.split_off(&above);
            let reached = std::mem::replace(&mut s.waiters, still_waiting);
            drop(s);
            for waker in reached.into_values().flatten() {
                waker.wake();
            }
        }
    }

    /// Waits until the watermark reaches `seq`.
    pub(crate) fn wait_visible(&self, seq: u64) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.visible() >= seq {
                return Poll::Ready(());
            }
            let mut s = self.lock();
            if s.visible >= seq {
                return Poll::Ready(());
            }
            let wakers = s.waiters.entry(seq).or_default();
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
    }

    /// Figures for `Db::stats`.
    pub(crate) fn figures(&self) -> OracleFigures {
        let s = self.lock();
        OracleFigures {
            last_seq: s.last_seq,
            visible: s.visible,
            active_snapshots: s.snapshots.len() as u64,
            oldest_snapshot: s.snapshots.keys().next().map(|&(snap, _)| snap),
            history_keys: s.history.len() as u64
                + s.large
                    .iter()
                    .map(|(_, keys)| keys.len() as u64)
                    .sum::<u64>(),
            history_bytes: s.history_bytes,
            history_floor: s.floor,
            prepared: s.holds.len() as u64,
        }
    }
}

/// The oracle's figures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OracleFigures {
    pub(crate) last_seq: u64,
    pub(crate) visible: u64,
    pub(crate) active_snapshots: u64,
    pub(crate) oldest_snapshot: Option<u64>,
    pub(crate) history_keys: u64,
    pub(crate) history_bytes: u64,
    pub(crate) history_floor: u64,
    pub(crate) prepared: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> BucketKey {
        (0, Bytes::copy_from_slice(k.as_bytes()))
    }

    fn commit(o: &Oracle, snapshot: u64, writes: &[&str], reads: &[&str]) -> Result<u64, Refusal> {
        let w: Vec<BucketKey> = writes.iter().map(|k| key(k)).collect();
        let r: Vec<BucketKey> = reads.iter().map(|k| key(k)).collect();
        o.validate_and_assign(
            CommitCheck {
                snapshot,
                reads: &r,
                ranges: &[],
                own_hold: None,
            },
            w.clone(),
            // No snapshot registered under it: the tests release theirs themselves.
            u64::MAX,
        )
    }

    #[test]
    fn first_committer_wins_and_reads_are_validated() {
        let o = Oracle::new(0, 1 << 20);
        let s1 = o.begin(1, None);
        let s2 = o.begin(2, None);
        assert_eq!(commit(&o, s1, &["x"], &[]), Ok(1));
        assert_eq!(
            commit(&o, s2, &["x"], &[]).unwrap_err().0,
            ConflictKind::WriteWrite
        );
        assert_eq!(
            commit(&o, s2, &["y"], &["x"]).unwrap_err().0,
            ConflictKind::ReadWrite
        );
        assert_eq!(commit(&o, s2, &["y"], &["z"]), Ok(2));
    }

    #[test]
    fn the_watermark_advances_in_seq_order() {
        let o = Oracle::new(10, 1 << 20);
        let a = commit(&o, 10, &["a"], &[]).unwrap();
        let b = commit(&o, 10, &["b"], &[]).unwrap();
        o.publish(b);
        assert_eq!(o.visible(), 10, "commit 12 is not visible before commit 11");
        o.publish(a);
        assert_eq!(o.visible(), 12);
    }

    #[test]
    fn history_is_collected_below_the_oldest_snapshot_and_bounded() {
        let o = Oracle::new(0, 1 << 20);
        let old = o.begin(1, None);
        for i in 0..100 {
            let seq = commit(&o, o.visible(), &[&format!("k{i}")], &[]).unwrap();
            o.publish(seq);
        }
        assert_eq!(o.figures().history_keys, 100, "kept for the snapshot at 0");
        o.release(old, 1);
        assert_eq!(o.figures().history_keys, 0);

        let small = Oracle::new(0, 64 << 10);
        let snap = small.begin(1, None);
        for i in 0..2000 {
            let seq = commit(&small, small.visible(), &[&format!("key-{i:06}")], &[]).unwrap();
            small.publish(seq);
        }
        let f = small.figures();
        assert!(f.history_bytes <= 64 << 10, "{}", f.history_bytes);
        assert!(f.history_floor > 0);
        assert_eq!(
            commit(&small, snap, &["new"], &[]).unwrap_err().0,
            ConflictKind::TooOld
        );
    }

    #[test]
    fn large_commits_are_validated_against_whole() {
        let o = Oracle::new(0, 1 << 30);
        let before = o.begin(1, None);
        // 300 keys k000..k299 but k150: one large commit, kept as its sorted key list.
        let names: Vec<String> = (0..300)
            .filter(|&i| i != 150)
            .map(|i| format!("k{i:03}"))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let seq = commit(&o, before, &refs, &[]).unwrap();
        o.publish(seq);
        assert_eq!(o.figures().history_keys, 299);
        // Written or read by a transaction whose snapshot predates it: a conflict.
        assert_eq!(
            commit(&o, before, &["k007"], &[]).unwrap_err().0,
            ConflictKind::WriteWrite
        );
        assert_eq!(
            commit(&o, before, &["other"], &["k299"]).unwrap_err().0,
            ConflictKind::ReadWrite
        );
        let range = |lower: &str, upper: &str| ScannedRange {
            bucket: 0,
            lower: Bound::Included(Bytes::copy_from_slice(lower.as_bytes())),
            upper: Bound::Excluded(Bytes::copy_from_slice(upper.as_bytes())),
        };
        let scan = |ranges: &[ScannedRange], written: &str| {
            o.validate_and_assign(
                CommitCheck {
                    snapshot: before,
                    reads: &[],
                    ranges,
                    own_hold: None,
                },
                vec![key(written)],
                u64::MAX,
            )
        };
        assert_eq!(
            scan(&[range("k1485", "k151")], "elsewhere").unwrap_err(),
            (ConflictKind::Phantom, key("k149"))
        );
        // Not in it: k150 was never written, and "j".."k" holds none of its keys.
        for (ranges, written) in [([range("k1495", "k1505")], "w1"), ([range("j", "k")], "w2")] {
            o.publish(scan(&ranges, written).unwrap());
        }
        // Not a conflict for a snapshot that saw it; collected once no snapshot needs it.
        o.publish(commit(&o, o.visible(), &["k007"], &[]).unwrap());
        o.release(before, 1);
        assert_eq!(o.figures().history_keys, 0);
    }

    #[test]
    fn expired_snapshots_do_not_hold_history() {
        let o = Oracle::new(0, 1 << 20);
        o.begin(1, Some(Instant::now()));
        let seq = commit(&o, 0, &["a"], &[]).unwrap();
        o.publish(seq);
        assert_eq!(o.figures().history_keys, 0);
        assert_eq!(o.figures().active_snapshots, 0);
    }

    #[test]
    fn prepared_holds_refuse_conflicting_commits() {
        let o = Oracle::new(0, 1 << 20);
        let w = vec![key("x")];
        o.validate_and_hold(
            CommitCheck {
                snapshot: 0,
                reads: &[],
                ranges: &[],
                own_hold: None,
            },
            w.clone(),
            &[],
            &[],
            7,
        )
        .unwrap();
        assert_eq!(
            commit(&o, 0, &["x"], &[]).unwrap_err().0,
            ConflictKind::Prepared
        );
        let seq = o.assign_prepared(7, w);
        assert_eq!(seq, 1);
        assert_eq!(
            commit(&o, 0, &["x"], &[]).unwrap_err().0,
            ConflictKind::WriteWrite
        );
        assert!(commit(&o, 1, &["x"], &[]).is_ok());
    }
}
