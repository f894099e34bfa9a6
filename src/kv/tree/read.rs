//! Range reads over the whole tree: [`TreeIter`], a merging iterator that stays positioned
//! between its steps.
//!
//! It has one source per memtable, one per L0 table and per run of a tiered level that meets
//! the range, and one per leveled level (its tables walked in key order, the next one opened
//! only when the last one ends, and tables outside the range never opened). Each source stands on its *head*: the next user key
//! of the range that it holds a version of visible at the snapshot, with the newest such
//! version (a value or a tombstone). A step yields the nearest head. The sources hold
//! disjoint seq ranges, newest first (memtables, then L0 newest first, then L1, L2, …), so on a
//! tie the first source has the newest visible version and wins the key; the other sources'
//! versions of it are passed over, and a winning tombstone is passed over too, so that a delete
//! in a memtable hides the value in a table below.
//!
//! Only the sources standing on the key just yielded move, and only at the next step: a short
//! scan reads one seek per source and then little more than the keys it yields, mostly from
//! the one source (often the bottom level) that holds them. A head holds what its table stores
//! (a value, a tombstone or a value-log pointer); a pointer is read only for the version a step
//! yields, never for one a newer source shadows.
//!
//! Invariants:
//! 1. The iterator holds the tree's [`Super`] it started from (memtables and version) for its
//!    whole life: the tables it reads are not removed under it, and flushes and compactions
//!    meanwhile change nothing it sees. It takes no lock.
//! 2. A source's head is strictly after the heads it had before (in scan direction): each
//!    key is yielded once.
//! 3. A step dropped midway or failed leaves the sources out of step with each other: the
//!    iterator is then unusable (a later step is an assertion failure), and its owner drops
//!    it (a scan ends on its error; a cursor starts a new iterator).

use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

use super::memtable::{KeyValue, Value, above, below};
use super::table::{Stored, TableIter};
use super::version::TableFile;
use super::{Super, Tree, resolve};
use crate::error::Result;

/// Versions a memtable source reads ahead per refill: a few at first, doubling up to the most.
/// A memtable read is synchronous and cheap per key, but a short scan should not walk far into a
/// memtable whose keys it will not reach.
const MEM_FIRST_BATCH: usize = 8;
const MEM_MAX_BATCH: usize = 64;

/// A range of one bucket, in a direction.
#[derive(Debug, Clone)]
pub(crate) struct Range {
    pub(crate) bucket: u64,
    /// Where the read starts (the lower bound forward, the upper one in reverse).
    pub(crate) from: Bound<Bytes>,
    /// Where it ends.
    pub(crate) to: Bound<Bytes>,
    pub(crate) reverse: bool,
}

/// A range and the snapshot it is read at.
struct Query {
    range: Range,
    snapshot: u64,
}

/// A source's head: a key and its newest version visible at the snapshot, as stored.
struct Head {
    key: Bytes,
    value: Stored,
}

impl Tree {
    /// A merging iterator over `range` as `snapshot` sees it (see the module docs); it reads
    /// nothing until its first step.
    pub(crate) fn iter(&self, range: Range, snapshot: u64) -> TreeIter {
        let state = self.current();
        let query = Query { range, snapshot };
        let mut sources = Vec::new();
        for index in 0..state.memtables.len() {
            sources.push(Source::Mem(MemSource {
                index,
                buffer: VecDeque::new(),
                more: true,
                batch: MEM_FIRST_BATCH,
                head: None,
            }));
        }
        for (i, t) in state.version.l0.iter().enumerate() {
            if query.overlaps(t) {
                sources.push(Source::Run(Run::new(Tables::L0(i), 0, &query)));
            }
        }
        for (i, level) in state.version.levels.iter().enumerate() {
            if state.version.is_tiered(i + 1) {
                // Runs newest first, each a source of its own, as L0's tables.
                for (j, t) in level.iter().enumerate() {
                    if query.overlaps(t) {
                        sources.push(Source::Run(Run::new(Tables::TieredRun(i, j), 0, &query)));
                    }
                }
            } else if let Some(start) = query.start(level) {
                sources.push(Source::Run(Run::new(Tables::Level(i), start, &query)));
            }
        }
        TreeIter {
            state,
            query,
            sources,
            started: false,
            last: None,
            broken: false,
        }
    }
}

/// See the module docs.
pub(crate) struct TreeIter {
    /// The state read from, held for the iterator's life.
    state: Arc<Super>,
    query: Query,
    /// Newest first.
    sources: Vec<Source>,
    /// Every source has read its first head.
    started: bool,
    /// The key the last step settled (yielded, or passed over as a tombstone): the sources
    /// still on it move at the next step.
    last: Option<Bytes>,
    /// A step is under way, or one was dropped or failed (invariant 3).
    broken: bool,
}

impl std::fmt::Debug for TreeIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeIter")
            .field("range", &self.query.range)
            .field("snapshot", &self.query.snapshot)
            .field("sources", &self.sources.len())
            .finish_non_exhaustive()
    }
}

impl TreeIter {
    /// The next live entry, in scan order (`None`: the range is exhausted).
    ///
    /// # Errors
    /// A damaged table; I/O errors. The iterator is unusable after one.
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped call leaves the iterator unusable (module docs, invariant 3).
    ///
    /// # Panics
    /// On an iterator whose last call was dropped or failed.
    pub(crate) async fn next(&mut self) -> Result<Option<KeyValue>> {
        assert!(
            !self.broken,
            "a tree iterator used after a dropped or failed step"
        );
        self.broken = true;
        let next = self.step().await?;
        self.broken = false;
        Ok(next)
    }

    async fn step(&mut self) -> Result<Option<KeyValue>> {
        let TreeIter {
            state,
            query,
            sources,
            started,
            last,
            ..
        } = self;
        if !*started {
            for s in sources.iter_mut() {
                s.fill(state, query).await?;
            }
            *started = true;
        }
        loop {
            if let Some(key) = last.take() {
                for s in sources.iter_mut() {
                    if s.head().is_some_and(|h| h.key == key) {
                        s.fill(state, query).await?;
                    }
                }
            }
            // The nearest head; on a tie the first (newest) source's.
            let mut winner: Option<&Source> = None;
            for source in sources.iter() {
                let Some(h) = source.head() else { continue };
                if winner
                    .and_then(Source::head)
                    .is_none_or(|w| query.before(&h.key, &w.key))
                {
                    winner = Some(source);
                }
            }
            let Some(source) = winner else {
                return Ok(None);
            };
            let head = source.head().expect("a winner has a head");
            *last = Some(head.key.clone());
            if !head.value.is_tombstone() {
                return produce(state, source, head).await.map(Some);
            }
        }
    }
}

/// The entry yielded for a key whose winning version is `head`, of `source`: the one place
/// where a version's stored value becomes the caller's (only versions a read returns get here),
/// read from its value-log file if the table holds a pointer.
async fn produce(state: &Super, source: &Source, head: &Head) -> Result<KeyValue> {
    let value = match (&head.value, source) {
        (Stored::Value(v), _) => v.clone(),
        (Stored::Blob(_), Source::Run(run)) => {
            let table = run
                .iter
                .as_ref()
                .expect("a run's head is of the table it reads")
                .table();
            resolve(&state.version, table, head.value.clone())
                .await?
                .unwrap_or_default()
        }
        (Stored::Blob(_) | Stored::Tombstone, _) => Bytes::new(),
    };
    Ok((head.key.clone(), value))
}

#[expect(
    clippy::large_enum_variant,
    reason = "most sources are runs, held inline in one Vec; boxing would add an allocation per run"
)]
enum Source {
    Mem(MemSource),
    Run(Run),
}

impl Source {
    fn head(&self) -> Option<&Head> {
        match self {
            Source::Mem(m) => m.head.as_ref(),
            Source::Run(r) => r.head.as_ref(),
        }
    }

    /// Moves to the next head (none: the source is exhausted).
    async fn fill(&mut self, state: &Super, query: &Query) -> Result<()> {
        match self {
            Source::Mem(m) => {
                m.fill(state, query);
                Ok(())
            }
            Source::Run(r) => r.fill(state, query).await,
        }
    }
}

/// A memtable, read a batch of heads at a time from the key after the last one.
struct MemSource {
    /// Which memtable of the held `Super`.
    index: usize,
    /// Heads read ahead, in scan order.
    buffer: VecDeque<(Bytes, Value)>,
    /// Whether the memtable may hold more of the range after the buffer.
    more: bool,
    batch: usize,
    head: Option<Head>,
}

impl MemSource {
    fn fill(&mut self, state: &Super, query: &Query) {
        let r = &query.range;
        if self.buffer.is_empty() && self.more {
            let from = match &self.head {
                Some(h) => Bound::Excluded(&h.key[..]),
                None => as_ref(&r.from),
            };
            let mem = &state.memtables[self.index].mem;
            let (to, limit) = (as_ref(&r.to), self.batch);
            let (versions, more) = if r.reverse {
                mem.versions_backward(r.bucket, from, to, query.snapshot, limit, true)
            } else {
                mem.versions_forward(r.bucket, from, to, query.snapshot, limit, true)
            };
            self.buffer = versions.into();
            self.more = more;
            self.batch = (self.batch * 2).min(MEM_MAX_BATCH);
        }
        self.head = self.buffer.pop_front().map(|(key, value)| Head {
            key,
            value: Stored::from(value),
        });
    }
}

/// Where a run's tables are in the held `Super`.
#[derive(Clone, Copy)]
enum Tables {
    L0(usize),
    /// A run (one table) of a tiered level: the level's index and the run's.
    TieredRun(usize, usize),
    /// A leveled level, by its index in `levels`.
    Level(usize),
}

impl Tables {
    fn of(self, state: &Super) -> &[Arc<TableFile>] {
        match self {
            Tables::L0(i) => std::slice::from_ref(&state.version.l0[i]),
            Tables::TieredRun(i, j) => std::slice::from_ref(&state.version.levels[i][j]),
            Tables::Level(i) => &state.version.levels[i],
        }
    }
}

/// Tables of disjoint key ranges read one after the other in scan order: one L0 table, one run
/// of a tiered level, or a leveled level. A key's versions never span two tables of a level (its ranges are
/// disjoint), so each key is read whole from one table.
struct Run {
    tables: Tables,
    /// The table being read.
    iter: Option<TableIter>,
    /// The next table to open, by its index in the run (`None`: none left).
    next: Option<usize>,
    /// The last head's key, or the range's start if excluded: keys up to it are passed.
    passed: Option<Bytes>,
    head: Option<Head>,
}

/// What reading one table for a head found.
enum Found {
    Head(Head),
    /// The table ended: the next one may go on.
    TableEnd,
    /// The range ended.
    RangeEnd,
}

impl Run {
    fn new(tables: Tables, start: usize, query: &Query) -> Run {
        Run {
            tables,
            iter: None,
            next: Some(start),
            passed: match &query.range.from {
                Bound::Excluded(k) => Some(k.clone()),
                _ => None,
            },
            head: None,
        }
    }

    async fn fill(&mut self, state: &Super, query: &Query) -> Result<()> {
        self.head = None;
        loop {
            let Some(it) = self.iter.as_mut() else {
                let Some(i) = self.next else {
                    return Ok(());
                };
                let tables = self.tables.of(state);
                let t = &tables[i];
                if query.past_end(t) {
                    self.next = None;
                    return Ok(());
                }
                self.next = if query.range.reverse {
                    i.checked_sub(1)
                } else {
                    Some(i + 1).filter(|&n| n < tables.len())
                };
                if query.overlaps(t) {
                    let mut it = t.table.iter();
                    query.position(&mut it).await?;
                    self.iter = Some(it);
                }
                continue;
            };
            let found = if query.range.reverse {
                query.read_backward(it, self.passed.as_ref()).await?
            } else {
                query.read_forward(it, self.passed.as_ref()).await?
            };
            match found {
                Found::Head(head) => {
                    self.passed = Some(head.key.clone());
                    self.head = Some(head);
                    return Ok(());
                }
                Found::TableEnd => self.iter = None,
                Found::RangeEnd => {
                    self.iter = None;
                    self.next = None;
                    return Ok(());
                }
            }
        }
    }
}

impl Query {
    /// Whether `a` comes before `b` in scan order.
    fn before(&self, a: &[u8], b: &[u8]) -> bool {
        if self.range.reverse { a > b } else { a < b }
    }

    /// The range's lower and upper bounds.
    fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        let r = &self.range;
        if r.reverse {
            (as_ref(&r.to), as_ref(&r.from))
        } else {
            (as_ref(&r.from), as_ref(&r.to))
        }
    }

    /// Whether a table's key range meets the range (a cheap filter before any block is read).
    fn overlaps(&self, t: &TableFile) -> bool {
        let bucket = self.range.bucket;
        let (min, max) = (t.min_key(), t.max_key());
        if bucket < min.bucket || bucket > max.bucket {
            return false;
        }
        if t.table.meta().buckets.binary_search(&bucket).is_err() {
            return false;
        }
        let (lower, upper) = self.bounds();
        let ends_before = max.bucket == bucket && !above(&max.key, lower);
        let starts_after = min.bucket == bucket && !below(&min.key, upper);
        !ends_before && !starts_after
    }

    /// Whether a table, and every one after it in scan order in its level, lies past the
    /// range's end.
    fn past_end(&self, t: &TableFile) -> bool {
        let r = &self.range;
        if r.reverse {
            let max = t.max_key();
            max.bucket < r.bucket || (max.bucket == r.bucket && !above(&max.key, as_ref(&r.to)))
        } else {
            let min = t.min_key();
            min.bucket > r.bucket || (min.bucket == r.bucket && !below(&min.key, as_ref(&r.to)))
        }
    }

    /// The first table of a sorted level to read, by binary search (`None`: none).
    fn start(&self, level: &[Arc<TableFile>]) -> Option<usize> {
        let b = self.range.bucket;
        let i = match (&self.range.from, self.range.reverse) {
            // The first table that ends at or after the start.
            (Bound::Included(k) | Bound::Excluded(k), false) => level.partition_point(|t| {
                let max = t.max_key();
                (max.bucket, &max.key[..]) < (b, &k[..])
            }),
            (Bound::Unbounded, false) => level.partition_point(|t| t.max_key().bucket < b),
            // The last table that starts at or before the start.
            (Bound::Included(k) | Bound::Excluded(k), true) => {
                return level
                    .partition_point(|t| {
                        let min = t.min_key();
                        (min.bucket, &min.key[..]) <= (b, &k[..])
                    })
                    .checked_sub(1);
            }
            (Bound::Unbounded, true) => {
                return level
                    .partition_point(|t| t.min_key().bucket <= b)
                    .checked_sub(1);
            }
        };
        (i < level.len()).then_some(i)
    }

    /// Puts a table's cursor on the range's first entry in it (or near it: the reads skip
    /// the versions of an excluded start).
    async fn position(&self, it: &mut TableIter) -> Result<()> {
        let b = self.range.bucket;
        match (&self.range.from, self.range.reverse) {
            (Bound::Included(k), false) => it.seek(b, k, u64::MAX).await,
            (Bound::Excluded(k), false) => it.seek(b, k, 0).await,
            (Bound::Unbounded, false) => it.seek(b, &[], u64::MAX).await,
            // The oldest version of `k` sorts last among its versions.
            (Bound::Included(k), true) => it.seek_for_prev(b, k, 0).await,
            (Bound::Excluded(k), true) => it.seek_for_prev(b, k, u64::MAX).await,
            (Bound::Unbounded, true) => match b.checked_add(1) {
                Some(next) => it.seek_for_prev(next, &[], u64::MAX).await,
                None => it.seek_to_last().await,
            },
        }
    }

    /// From the cursor forward: the next key after `passed` with a version the snapshot sees,
    /// and that version (the first of the key's versions, newest first, at or below the
    /// snapshot). Leaves the cursor past the key's versions.
    async fn read_forward(&self, it: &mut TableIter, passed: Option<&Bytes>) -> Result<Found> {
        let (bucket, to) = (self.range.bucket, as_ref(&self.range.to));
        loop {
            let key = match it.peek()? {
                None => return Ok(Found::TableEnd),
                Some(e) if e.bucket != bucket || !below(e.key, to) => return Ok(Found::RangeEnd),
                Some(e) if passed.is_some_and(|p| e.key <= &p[..]) => None,
                Some(e) => Some(Bytes::copy_from_slice(e.key)),
            };
            let Some(key) = key else {
                it.next().await?;
                continue;
            };
            let mut visible: Option<Stored> = None;
            loop {
                match it.peek()? {
                    Some(e) if e.bucket == bucket && e.key == &key[..] => {
                        if visible.is_none() && e.seq <= self.snapshot {
                            visible = Some(e.value()?);
                        }
                    }
                    _ => break,
                }
                it.next().await?;
            }
            if let Some(value) = visible {
                return Ok(Found::Head(Head { key, value }));
            }
        }
    }

    /// [`Query::read_forward`] moving back: a key's versions come oldest first, the last one
    /// at or below the snapshot is the newest it sees.
    async fn read_backward(&self, it: &mut TableIter, passed: Option<&Bytes>) -> Result<Found> {
        let (bucket, to) = (self.range.bucket, as_ref(&self.range.to));
        loop {
            let key = match it.peek()? {
                None => return Ok(Found::TableEnd),
                Some(e) if e.bucket != bucket || !above(e.key, to) => return Ok(Found::RangeEnd),
                Some(e) if passed.is_some_and(|p| e.key >= &p[..]) => None,
                Some(e) => Some(Bytes::copy_from_slice(e.key)),
            };
            let Some(key) = key else {
                it.prev().await?;
                continue;
            };
            let mut visible: Option<Stored> = None;
            loop {
                match it.peek()? {
                    Some(e) if e.bucket == bucket && e.key == &key[..] => {
                        if e.seq <= self.snapshot {
                            visible = Some(e.value()?);
                        }
                    }
                    _ => break,
                }
                it.prev().await?;
            }
            if let Some(value) = visible {
                return Ok(Found::Head(Head { key, value }));
            }
        }
    }
}

pub(crate) fn as_ref(b: &Bound<Bytes>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(&k[..]),
        Bound::Excluded(k) => Bound::Excluded(&k[..]),
        Bound::Unbounded => Bound::Unbounded,
    }
}
