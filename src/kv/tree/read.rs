//! Range reads over the whole tree: each source (a memtable, an L0 table, a sorted level)
//! yields the newest version of each key it holds that the snapshot sees, tombstones
//! included, a batch at a time; the batches are merged, the newest source winning a key, and
//! tombstones dropped last, so that a delete in a memtable hides the value in a table below.
//!
//! A batch is complete up to the nearest last key among the sources that stopped at their
//! limit: keys past it may still come from those sources, so the merged batch ends there and
//! the next one resumes after it.

use std::ops::Bound;

use bytes::Bytes;

use super::memtable::{KeyValue, Value, above, below, live};
use super::table::{Stored, Table};
use super::version::{TableFile, Version};
use super::{Tree, resolve};
use crate::error::Result;

/// Versions of one source: `(key, value or tombstone)` in scan order, and whether it stopped
/// at its limit.
type Batch = (Vec<(Bytes, Value)>, bool);

/// A range of one bucket, in a direction.
#[derive(Clone, Copy)]
pub(crate) struct Range<'a> {
    pub(crate) bucket: u64,
    /// Where the scan starts (the lower bound forward, the upper one in reverse).
    pub(crate) from: Bound<&'a [u8]>,
    /// Where it ends.
    pub(crate) to: Bound<&'a [u8]>,
    pub(crate) reverse: bool,
}

impl Tree {
    /// At least one (unless the range is exhausted) and about `limit` live entries of `range`
    /// visible at `snapshot`, in scan order, and where the batch ends: `Some(key)` if keys
    /// after `key` may follow (resume after it), `None` if the range is exhausted.
    ///
    /// # Errors
    /// A damaged table; I/O errors.
    pub(crate) async fn scan(
        &self,
        range: Range<'_>,
        snapshot: u64,
        limit: usize,
    ) -> Result<(Vec<KeyValue>, Option<Bytes>)> {
        let current = self.current();
        let version = &current.version;
        if current.memtables.len() == 1 && version.tables().next().is_none() {
            // Everything is in the active memtable.
            let mem = &current.memtables[0].mem;
            let Range {
                bucket, from, to, ..
            } = range;
            let (batch, more) = if range.reverse {
                mem.scan_backward(bucket, from, to, snapshot, limit)
            } else {
                mem.scan_forward(bucket, from, to, snapshot, limit)
            };
            let resume = if more {
                batch.last().map(|(k, _)| k.clone())
            } else {
                None
            };
            return Ok((batch, resume));
        }
        let mut from_owned: Option<Bytes> = None;
        loop {
            let from = from_owned
                .as_ref()
                .map_or(range.from, |k| Bound::Excluded(&k[..]));
            let r = Range { from, ..range };
            let mut batches: Vec<Batch> = Vec::new();
            for slot in &current.memtables {
                batches.push(if r.reverse {
                    slot.mem
                        .versions_backward(r.bucket, r.from, r.to, snapshot, limit, true)
                } else {
                    slot.mem
                        .versions_forward(r.bucket, r.from, r.to, snapshot, limit, true)
                });
            }
            for t in &version.l0 {
                if overlaps(t, r) {
                    batches.push(table_versions(version, &t.table, r, snapshot, limit).await?);
                }
            }
            for (i, level) in version.levels.iter().enumerate() {
                if version.is_tiered(i + 1) {
                    // Runs newest first, each a source of its own, as L0's tables.
                    for t in level {
                        if overlaps(t, r) {
                            batches
                                .push(table_versions(version, &t.table, r, snapshot, limit).await?);
                        }
                    }
                } else {
                    batches.push(level_versions(version, level, r, snapshot, limit).await?);
                }
            }
            let (out, resume) = merge(batches, r.reverse);
            match resume {
                Some(k) if out.is_empty() => from_owned = Some(k),
                resume => return Ok((out, resume)),
            }
        }
    }
}

/// Merges the sources' batches (the first source newest): the live entries up to where every
/// source is complete, and that key if some source has more.
fn merge(mut batches: Vec<Batch>, reverse: bool) -> (Vec<KeyValue>, Option<Bytes>) {
    // Most ranges find their keys in one source: nothing to merge.
    let mut holding = batches.iter().filter(|(v, _)| !v.is_empty());
    if let (Some(_), None) = (holding.next(), holding.next()) {
        let i = batches
            .iter()
            .position(|(v, _)| !v.is_empty())
            .expect("one");
        let (versions, more) = batches.swap_remove(i);
        let bound = if more {
            versions.last().map(|(k, _)| k.clone())
        } else {
            None
        };
        return (live(versions), bound);
    }
    let before = |a: &Bytes, b: &Bytes| if reverse { a > b } else { a < b };
    let mut bound: Option<Bytes> = None;
    for (versions, more) in &batches {
        if *more
            && let Some((last, _)) = versions.last()
            && bound.as_ref().is_none_or(|b| before(last, b))
        {
            bound = Some(last.clone());
        }
    }
    let mut all: Vec<(Bytes, usize, Value)> = Vec::new();
    for (source, (versions, _)) in batches.into_iter().enumerate() {
        for (k, v) in versions {
            if bound.as_ref().is_none_or(|b| !before(b, &k)) {
                all.push((k, source, v));
            }
        }
    }
    all.sort_by(|a, b| {
        let by_key = if reverse {
            b.0.cmp(&a.0)
        } else {
            a.0.cmp(&b.0)
        };
        by_key.then(a.1.cmp(&b.1))
    });
    all.dedup_by(|later, first| later.0 == first.0);
    let out = all
        .into_iter()
        .filter_map(|(k, _, v)| v.map(|v| (k, v)))
        .collect();
    (out, bound)
}

/// Whether a table's key range meets `range` (a cheap filter before any block is read).
fn overlaps(t: &TableFile, r: Range<'_>) -> bool {
    let (min, max) = (t.min_key(), t.max_key());
    if r.bucket < min.bucket || r.bucket > max.bucket {
        return false;
    }
    if t.table.meta().buckets.binary_search(&r.bucket).is_err() {
        return false;
    }
    let (lower, upper) = if r.reverse {
        (r.to, r.from)
    } else {
        (r.from, r.to)
    };
    // Below the range's lower bound: the table ends before it.
    let ends_before = max.bucket == r.bucket
        && match lower {
            Bound::Included(l) => &max.key[..] < l,
            Bound::Excluded(l) => &max.key[..] <= l,
            Bound::Unbounded => false,
        };
    let starts_after = min.bucket == r.bucket
        && match upper {
            Bound::Included(u) => &min.key[..] > u,
            Bound::Excluded(u) => &min.key[..] >= u,
            Bound::Unbounded => false,
        };
    !ends_before && !starts_after
}

/// A sorted level read as one source: its tables in scan order, each continuing the last.
async fn level_versions(
    version: &Version,
    level: &[std::sync::Arc<TableFile>],
    r: Range<'_>,
    snapshot: u64,
    limit: usize,
) -> Result<Batch> {
    let mut out = Vec::new();
    let order: Vec<&std::sync::Arc<TableFile>> = if r.reverse {
        level.iter().rev().filter(|t| overlaps(t, r)).collect()
    } else {
        level.iter().filter(|t| overlaps(t, r)).collect()
    };
    for t in order {
        let (mut versions, more) =
            table_versions(version, &t.table, r, snapshot, limit - out.len()).await?;
        out.append(&mut versions);
        if more {
            return Ok((out, true));
        }
        if out.len() >= limit {
            // Complete up to here, and the next table may hold more.
            return Ok((out, true));
        }
    }
    Ok((out, false))
}

/// The newest version the snapshot sees of each key of one table in `r`, up to `limit` keys;
/// values kept apart (value-log pointers) are read.
async fn table_versions(
    version: &Version,
    table: &Table,
    r: Range<'_>,
    snapshot: u64,
    limit: usize,
) -> Result<Batch> {
    let (stored, more) = if r.reverse {
        table_backward(table, r, snapshot, limit).await?
    } else {
        table_forward(table, r, snapshot, limit).await?
    };
    let mut out = Vec::with_capacity(stored.len());
    for (k, v) in stored {
        out.push((k, resolve(version, table, v).await?));
    }
    Ok((out, more))
}

/// Versions of one table as stored: `(key, value, tombstone or pointer)` in scan order, and
/// whether it stopped at its limit.
type StoredBatch = (Vec<(Bytes, Stored)>, bool);

async fn table_forward(
    table: &Table,
    r: Range<'_>,
    snapshot: u64,
    limit: usize,
) -> Result<StoredBatch> {
    let mut it = table.iter();
    let mut skip: Option<Bytes> = None;
    match r.from {
        Bound::Included(k) => it.seek(r.bucket, k, u64::MAX).await?,
        Bound::Excluded(k) => {
            it.seek(r.bucket, k, u64::MAX).await?;
            skip = Some(Bytes::copy_from_slice(k));
        }
        Bound::Unbounded => it.seek(r.bucket, &[], u64::MAX).await?,
    }
    let mut out: Vec<(Bytes, Stored)> = Vec::new();
    while let Some(e) = it.entry()? {
        if e.bucket != r.bucket || !below(&e.key, r.to) {
            break;
        }
        let passed = skip.as_ref().is_some_and(|s| *s == e.key)
            || out.last().is_some_and(|(k, _)| *k == e.key)
            || e.seq > snapshot;
        if !passed {
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push((e.key, e.value));
        }
        it.next().await?;
    }
    Ok((out, false))
}

async fn table_backward(
    table: &Table,
    r: Range<'_>,
    snapshot: u64,
    limit: usize,
) -> Result<StoredBatch> {
    let mut it = table.iter();
    match r.from {
        // The oldest version of `k` sorts last among its versions.
        Bound::Included(k) => it.seek_for_prev(r.bucket, k, 0).await?,
        Bound::Excluded(k) => it.seek_for_prev(r.bucket, k, u64::MAX).await?,
        Bound::Unbounded => match r.bucket.checked_add(1) {
            Some(next) => it.seek_for_prev(next, &[], u64::MAX).await?,
            None => it.seek_to_last().await?,
        },
    }
    let excluded = match r.from {
        Bound::Excluded(k) => Some(k),
        _ => None,
    };
    let mut out: Vec<(Bytes, Stored)> = Vec::new();
    // The key being read and the newest version of it seen so far (versions come oldest
    // first moving back).
    let mut current: Option<(Bytes, Option<Stored>)> = None;
    while let Some(e) = it.entry()? {
        if e.bucket != r.bucket || !above(&e.key, r.to) {
            break;
        }
        if excluded.is_some_and(|x| x == &e.key[..]) {
            it.prev().await?;
            continue;
        }
        if current.as_ref().is_some_and(|(k, _)| *k != e.key) {
            let (k, best) = current.take().expect("checked above");
            if let Some(v) = best {
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push((k, v));
            }
        }
        let slot = current.get_or_insert_with(|| (e.key.clone(), None));
        if e.seq <= snapshot {
            slot.1 = Some(e.value);
        }
        it.prev().await?;
    }
    if let Some((k, Some(v))) = current {
        out.push((k, v));
    }
    Ok((out, false))
}
