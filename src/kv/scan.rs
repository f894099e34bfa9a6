//! Scans (`Stream`s) and cursors: the snapshot's entries merged with the transaction's own
//! writes, in key order either way.

use std::collections::VecDeque;
use std::ops::Bound;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, Stream};

use super::tree::memtable::{KeyValue, above, below};
use super::tree::read::{Range, TreeIter, as_ref};
use super::txn::oracle::ScannedRange;
use super::txn::{KeyBounds, Txn, check_not_deleted};
use crate::error::Result;

/// A batch read from the tree: live entries, and the key it is complete up to if more follow.
type Batch = Result<(Vec<KeyValue>, Option<Bytes>)>;

/// The tree's iterator, handed back with the batch it read.
type Fetched = (TreeIter, Batch);

/// Entries read from the tree by a scan's first poll that reads; each such poll doubles it, up
/// to [`MAX_BATCH`]. The tree's iterator stays positioned between batches, so a batch costs a
/// future, not a seek: small batches keep a short scan from reading entries it will not yield.
const FIRST_BATCH: usize = 4;
const MAX_BATCH: usize = 64;

/// Entries a cursor's held iterator may step over to reach a move's start before a new
/// iterator (a seek) is cheaper.
const CURSOR_WALK_MAX: usize = 8;

/// A transaction's own write in a scanned range: a value or a tombstone.
type OwnWrite = (Bytes, Option<Bytes>);

/// The entries of a key range, in key order (or reversed with [`Scan::rev`]), as a `Stream` of
/// `Result<(key, value)>`.
/// A range whose start is above its end (`"c".."a"`) holds no key: it yields nothing.
///
/// It sees the transaction's snapshot plus the transaction's own writes made before its first
/// poll. Values are `Bytes` shared with the memtable or a table's block, not copied. It reads
/// the tree through one merging iterator that stays positioned from poll to poll (no seek after
/// the first), a batch at a time (the first small, then doubling), through the I/O executor for
/// what is in tables. From its first poll it holds the tree's memtables and tables as they were
/// then (a flush or compaction meanwhile removes no table it reads), and no lock between polls;
/// dropping it releases everything it holds, at any point (mid-batch too: the batch and the
/// iterator reading it go together). In a serializable transaction the whole
/// range counts as read (a write committed into it after the snapshot is a conflict at commit),
/// however much of it is consumed. After the transaction's timeout it yields
/// [`Error::TxnExpired`](crate::Error::TxnExpired), then ends; over a bucket the transaction
/// deleted, [`Error::BucketNotFound`](crate::Error::BucketNotFound).
pub struct Scan {
    txn: Txn,
    bucket: u64,
    bounds: KeyBounds,
    reverse: bool,
    started: bool,
    /// The tree's iterator between batches (`None` before the first, or while one is read).
    iter: Option<TreeIter>,
    buffer: VecDeque<KeyValue>,
    own: Vec<OwnWrite>,
    own_next: usize,
    batch: usize,
    done: bool,
    /// The batch being read.
    pending: Option<BoxFuture<'static, Fetched>>,
}

impl std::fmt::Debug for Scan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scan")
            .field("bucket", &self.bucket)
            .field("bounds", &self.bounds)
            .field("reverse", &self.reverse)
            .finish_non_exhaustive()
    }
}

impl Scan {
    pub(crate) fn new(txn: Txn, bucket: u64, bounds: KeyBounds) -> Scan {
        Scan {
            txn,
            bucket,
            bounds,
            reverse: false,
            started: false,
            iter: None,
            buffer: VecDeque::new(),
            own: Vec::new(),
            own_next: 0,
            batch: FIRST_BATCH,
            done: false,
            pending: None,
        }
    }

    /// The same range in descending key order. Call it before consuming the scan: it starts
    /// over from the range's end.
    pub fn rev(mut self) -> Scan {
        self.reverse = !self.reverse;
        self.started = false;
        self.iter = None;
        self.buffer.clear();
        self.batch = FIRST_BATCH;
        self.done = false;
        self.pending = None;
        self
    }

    /// The next entry: from the buffer, or after the next batch is read.
    pub(crate) fn poll_entry(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<KeyValue>>> {
        loop {
            if let Some(kv) = self.buffer.pop_front() {
                return Poll::Ready(Some(Ok(kv)));
            }
            if self.done {
                return Poll::Ready(None);
            }
            if self.pending.is_none() {
                match self.fetch() {
                    Ok(Some(fetch)) => self.pending = Some(fetch),
                    Ok(None) => continue,
                    Err(e) => {
                        self.done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
            let (iter, fetched) = match self.pending.as_mut().map(|f| f.poll_unpin(cx)) {
                Some(Poll::Ready(fetched)) => fetched,
                _ => return Poll::Pending,
            };
            self.pending = None;
            self.iter = Some(iter);
            match fetched {
                Ok((batch, resume)) => self.merge_own(batch, resume),
                Err(e) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    /// The next entry.
    pub(crate) async fn next_entry(&mut self) -> Option<Result<KeyValue>> {
        std::future::poll_fn(|cx| self.poll_entry(cx)).await
    }

    fn start(&mut self) -> Result<()> {
        let state = self.txn.live()?;
        check_not_deleted(&state, self.bucket)?;
        if holds_no_key(&self.bounds) {
            // An empty or inverted range (`"c".."a"`): nothing to yield, nothing to validate
            // (and `BTreeMap::range` panics on inverted bounds).
            self.started = true;
            self.done = true;
            return Ok(());
        }
        let (lower, upper) = (as_ref(&self.bounds.0), as_ref(&self.bounds.1));
        let mut own: Vec<OwnWrite> = state
            .writes
            .get(&self.bucket)
            .map(|w| {
                w.range::<[u8], _>((lower, upper))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        drop(state);
        if self.reverse {
            own.reverse();
        }
        self.own = own;
        self.own_next = 0;
        self.started = true;
        self.txn.record_range(ScannedRange {
            bucket: self.bucket,
            lower: self.bounds.0.clone(),
            upper: self.bounds.1.clone(),
        });
        Ok(())
    }

    /// Starts reading the next batch (`None`: the range holds nothing).
    fn fetch(&mut self) -> Result<Option<BoxFuture<'static, Fetched>>> {
        if !self.started {
            self.start()?;
            if self.done {
                return Ok(None);
            }
        } else {
            drop(self.txn.live()?);
        }
        let mut iter = match self.iter.take() {
            Some(iter) => iter,
            None => {
                let (from, to) = if self.reverse {
                    (self.bounds.1.clone(), self.bounds.0.clone())
                } else {
                    (self.bounds.0.clone(), self.bounds.1.clone())
                };
                let range = Range {
                    bucket: self.bucket,
                    from,
                    to,
                    reverse: self.reverse,
                };
                let inner = &self.txn.inner;
                inner.db.tree.iter(range, inner.snapshot)
            }
        };
        let limit = self.batch;
        self.batch = (self.batch * 2).min(MAX_BATCH);
        Ok(Some(
            async move {
                let batch = read_batch(&mut iter, limit).await;
                (iter, batch)
            }
            .boxed(),
        ))
    }

    /// Merges a batch read from the tree with the transaction's own writes up to where the
    /// batch is complete (`resume`; `None`: the range's end).
    fn merge_own(&mut self, batch: Vec<KeyValue>, resume: Option<Bytes>) {
        let limit = resume;
        let reverse = self.reverse;
        let before = |a: &[u8], b: &[u8]| if reverse { a > b } else { a < b };
        let mut mem = batch.into_iter().peekable();
        loop {
            let own = self
                .own
                .get(self.own_next)
                .filter(|(k, _)| limit.as_ref().is_none_or(|l| k == l || before(k, l)));
            match (mem.peek(), own) {
                (None, None) => break,
                (Some((mk, _)), Some((ok, ov))) if mk == ok => {
                    if let Some(v) = ov {
                        self.buffer.push_back((ok.clone(), v.clone()));
                    }
                    mem.next();
                    self.own_next += 1;
                }
                (Some((mk, _)), Some((ok, ov))) if before(ok, mk) => {
                    if let Some(v) = ov {
                        self.buffer.push_back((ok.clone(), v.clone()));
                    }
                    self.own_next += 1;
                }
                (Some(_), _) => self.buffer.extend(mem.next()),
                (None, Some((ok, ov))) => {
                    if let Some(v) = ov {
                        self.buffer.push_back((ok.clone(), v.clone()));
                    }
                    self.own_next += 1;
                }
            }
        }
        if limit.is_none() {
            self.done = true;
        }
    }
}

/// Up to `limit` entries from the tree's iterator, and the last one's key if it may have more.
async fn read_batch(iter: &mut TreeIter, limit: usize) -> Batch {
    let mut batch = Vec::with_capacity(limit);
    while batch.len() < limit {
        match iter.next().await? {
            Some(entry) => batch.push(entry),
            None => return Ok((batch, None)),
        }
    }
    let resume = batch.last().map(|(k, _)| k.clone());
    Ok((batch, resume))
}

impl Stream for Scan {
    type Item = Result<(Bytes, Bytes)>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_entry(cx)
    }
}

/// Whether no key lies within `bounds`: the lower bound above the upper one, or equal to it
/// with either excluded.
fn holds_no_key((lower, upper): &KeyBounds) -> bool {
    match (lower, upper) {
        (Bound::Included(l), Bound::Included(u)) => l > u,
        (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(u))
        | (Bound::Excluded(l), Bound::Included(u)) => l >= u,
        _ => false,
    }
}

/// A cursor over the keys of one bucket (or of the root keyspace), as in BoltDB: move to the
/// `first`, `last` or a `seek`ed key, then `next` or `prev`. Each move returns the entry it
/// lands on, or `None` past either end.
///
/// It sees the transaction's snapshot plus the transaction's own writes as they are at each
/// move. In a serializable transaction each move counts the keys it passed over as read.
/// Nested buckets are not entries of this cursor: [`EntryCursor`](crate::kv::EntryCursor)
/// (`entry_cursor()`) walks keys and nested buckets together.
///
/// Moves in one direction go on with the tree's merging iterator of the move before (no seek);
/// a change of direction, or a seek away from where it stands, starts a new one. Between moves
/// the cursor holds that iterator, and with it the tree's memtables and tables as they were
/// when it started (a flush or compaction meanwhile removes none of them until the cursor moves
/// away or is dropped).
#[derive(Debug)]
pub struct Cursor {
    txn: Txn,
    bucket: u64,
    current: Option<Bytes>,
    /// The tree's iterator of the last moves.
    held: Option<Held>,
}

/// A cursor's tree iterator, and where it stands: `head` is the tree's first entry within
/// `low` in the iterator's direction (`None`: none up to the bucket's end).
#[derive(Debug)]
struct Held {
    iter: TreeIter,
    reverse: bool,
    low: Bound<Bytes>,
    head: Option<KeyValue>,
}

impl Cursor {
    pub(crate) fn new(txn: Txn, bucket: u64) -> Cursor {
        Cursor {
            txn,
            bucket,
            current: None,
            held: None,
        }
    }

    /// Moves to the first entry.
    ///
    /// # Errors
    /// [`Error::TxnExpired`](crate::Error::TxnExpired) /
    /// [`Error::TxnFinished`](crate::Error::TxnFinished);
    /// [`Error::BucketNotFound`](crate::Error::BucketNotFound) over a bucket the transaction
    /// deleted.
    ///
    /// # Cancel safety
    /// Safe: a move reads only, and one dropped midway leaves the cursor where it was.
    pub async fn first(&mut self) -> Result<Option<(Bytes, Bytes)>> {
        self.step(Bound::Unbounded, false).await
    }

    /// Moves to the last entry.
    ///
    /// # Errors
    /// As [`Cursor::first`].
    ///
    /// # Cancel safety
    /// Safe: a move reads only, and one dropped midway leaves the cursor where it was.
    pub async fn last(&mut self) -> Result<Option<(Bytes, Bytes)>> {
        self.step(Bound::Unbounded, true).await
    }

    /// Moves to the first entry whose key is at or after `key`.
    ///
    /// # Errors
    /// As [`Cursor::first`].
    ///
    /// # Cancel safety
    /// Safe: a move reads only, and one dropped midway leaves the cursor where it was.
    pub async fn seek(&mut self, key: impl AsRef<[u8]>) -> Result<Option<(Bytes, Bytes)>> {
        let key = Bytes::copy_from_slice(key.as_ref());
        self.step(Bound::Included(key), false).await
    }

    /// Moves to the next entry (the first one if the cursor has not moved yet).
    ///
    /// # Errors
    /// As [`Cursor::first`].
    ///
    /// # Cancel safety
    /// Safe: a move reads only, and one dropped midway leaves the cursor where it was.
    pub async fn next(&mut self) -> Result<Option<(Bytes, Bytes)>> {
        let from = self
            .current
            .clone()
            .map_or(Bound::Unbounded, Bound::Excluded);
        self.step(from, false).await
    }

    /// Moves to the previous entry (the last one if the cursor has not moved yet).
    ///
    /// # Errors
    /// As [`Cursor::first`].
    ///
    /// # Cancel safety
    /// Safe: a move reads only, and one dropped midway leaves the cursor where it was.
    pub async fn prev(&mut self) -> Result<Option<(Bytes, Bytes)>> {
        let from = self
            .current
            .clone()
            .map_or(Bound::Unbounded, Bound::Excluded);
        self.step(from, true).await
    }

    pub(crate) async fn step(
        &mut self,
        from: Bound<Bytes>,
        reverse: bool,
    ) -> Result<Option<KeyValue>> {
        let found = self.find(from.clone(), reverse).await?;
        // What this move read: from its start to the entry it found (or the end).
        let to = found
            .as_ref()
            .map_or(Bound::Unbounded, |(k, _)| Bound::Included(k.clone()));
        let (lower, upper) = if reverse { (to, from) } else { (from, to) };
        self.txn.record_range(ScannedRange {
            bucket: self.bucket,
            lower,
            upper,
        });
        if let Some((k, _)) = &found {
            self.current = Some(k.clone());
        }
        Ok(found)
    }

    async fn find(&mut self, mut from: Bound<Bytes>, reverse: bool) -> Result<Option<KeyValue>> {
        loop {
            let own = {
                let state = self.txn.live()?;
                check_not_deleted(&state, self.bucket)?;
                state.writes.get(&self.bucket).and_then(|w| {
                    let mut range = if reverse {
                        w.range::<[u8], _>((Bound::Unbounded, as_ref(&from)))
                    } else {
                        w.range::<[u8], _>((as_ref(&from), Bound::Unbounded))
                    };
                    let next = if reverse {
                        range.next_back()
                    } else {
                        range.next()
                    };
                    next.map(|(k, v)| (k.clone(), v.clone()))
                })
            };
            let mem = self.tree_next(&from, reverse).await?;
            let own_first = match (&mem, &own) {
                (_, None) => return Ok(mem),
                (None, Some(_)) => true,
                (Some((mk, _)), Some((ok, _))) => ok == mk || ((ok < mk) != reverse),
            };
            if !own_first {
                return Ok(mem);
            }
            let (key, value) = own.expect("own write present");
            match value {
                Some(v) => return Ok(Some((key, v))),
                // Deleted by this transaction: look past it.
                None => from = Bound::Excluded(key),
            }
        }
    }

    /// The tree's first entry within `from` in the direction: the held iterator's if it stands
    /// there or a few entries before, else a new iterator's.
    async fn tree_next(&mut self, from: &Bound<Bytes>, reverse: bool) -> Result<Option<KeyValue>> {
        // Taken out for the move: a move dropped midway leaves no iterator (one it had moved
        // halfway is unusable), and the next move starts a new one.
        let reusable = self
            .held
            .take()
            .filter(|h| h.reverse == reverse && covers(&h.low, from, reverse));
        if let Some(mut held) = reusable {
            for _ in 0..=CURSOR_WALK_MAX {
                match &held.head {
                    Some((k, _)) if !within(k, from, reverse) => {
                        held.low = Bound::Excluded(k.clone());
                        held.head = held.iter.next().await?;
                    }
                    _ => {
                        let head = held.head.clone();
                        self.held = Some(held);
                        return Ok(head);
                    }
                }
            }
        }
        let range = Range {
            bucket: self.bucket,
            from: from.clone(),
            to: Bound::Unbounded,
            reverse,
        };
        let inner = &self.txn.inner;
        let mut iter = inner.db.tree.iter(range, inner.snapshot);
        let head = iter.next().await?;
        self.held = Some(Held {
            iter,
            reverse,
            low: from.clone(),
            head: head.clone(),
        });
        Ok(head)
    }
}

/// Whether `key` is within `from` in the direction.
fn within(key: &[u8], from: &Bound<Bytes>, reverse: bool) -> bool {
    if reverse {
        below(key, as_ref(from))
    } else {
        above(key, as_ref(from))
    }
}

/// Whether every key within `from` is within `low` (in the direction).
fn covers(low: &Bound<Bytes>, from: &Bound<Bytes>, reverse: bool) -> bool {
    // `a` is at or past `b` in the direction.
    let past = |a: &Bytes, b: &Bytes| if reverse { a <= b } else { a >= b };
    match (low, from) {
        (Bound::Unbounded, _) => true,
        (_, Bound::Unbounded) => false,
        (Bound::Included(l), Bound::Included(f) | Bound::Excluded(f))
        | (Bound::Excluded(l), Bound::Excluded(f)) => past(f, l),
        (Bound::Excluded(l), Bound::Included(f)) => f != l && past(f, l),
    }
}
