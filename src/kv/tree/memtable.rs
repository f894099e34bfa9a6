//! The memtable: every version of every key, ordered by internal key, in a lock-free skiplist.
//!
//! An internal key is `(bucket id, user key, seq)`, ordered by bucket, then key ascending, then
//! seq **descending**, so that the first version at or after `(bucket, key, snapshot)` is the
//! newest one a snapshot sees. Readers never block writers: inserts and lookups run
//! concurrently (crossbeam's epoch-based skiplist).
//!
//! Lookups borrow the key as `&dyn KeyView` so that a read does not allocate an owned key.

use std::borrow::Borrow;
use std::cmp::{Ordering, Reverse};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use bytes::Bytes;
use crossbeam_skiplist::SkipMap;

/// A version's payload: a value, or a tombstone.
pub(crate) type Value = Option<Bytes>;

/// Bytes a version costs in the memtable beyond its key and value: the skiplist node (~112 B
/// with its tower), and the shared headers the key's and the value's `Bytes` get when the
/// memtable clones them from the write set (~24 B each, plus the allocator's rounding).
/// Measured: 16-byte keys with 100-byte values cost 287 B a version (counting allocator).
const VERSION_OVERHEAD_BYTES: u64 = 170;

/// A key of the memtable: one version of a user key in a bucket.
///
/// `prefix` holds the key's first 8 bytes (zero-padded, big-endian) inline: most comparisons
/// in a skiplist search end there, without following the pointer to the key's bytes (a cache
/// miss per node otherwise). Ordering by `(prefix, key)` is ordering by `key`.
#[derive(Debug, Clone)]
pub(crate) struct InternalKey {
    pub(crate) bucket: u64,
    prefix: u64,
    pub(crate) key: Bytes,
    pub(crate) seq: u64,
}

impl InternalKey {
    pub(crate) fn new(bucket: u64, key: Bytes, seq: u64) -> InternalKey {
        InternalKey {
            bucket,
            prefix: prefix(&key),
            key,
            seq,
        }
    }
}

fn prefix(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

/// The parts an internal key is ordered by.
type Parts<'a> = (u64, u64, &'a [u8], Reverse<u64>);

/// A borrowed view of an internal key, for lookups without an owned key.
pub(crate) trait KeyView {
    fn parts(&self) -> Parts<'_>;
}

impl KeyView for InternalKey {
    fn parts(&self) -> Parts<'_> {
        (self.bucket, self.prefix, &self.key, Reverse(self.seq))
    }
}

/// A lookup key: `(bucket, user key, seq)`.
pub(crate) struct Probe<'a> {
    bucket: u64,
    prefix: u64,
    key: &'a [u8],
    seq: u64,
}

pub(crate) fn probe(bucket: u64, key: &[u8], seq: u64) -> Probe<'_> {
    Probe {
        bucket,
        prefix: prefix(key),
        key,
        seq,
    }
}

impl KeyView for Probe<'_> {
    fn parts(&self) -> Parts<'_> {
        (self.bucket, self.prefix, self.key, Reverse(self.seq))
    }
}

impl<'a> Borrow<dyn KeyView + 'a> for InternalKey {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}
impl Eq for dyn KeyView + '_ {}
impl PartialOrd for dyn KeyView + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for dyn KeyView + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts().cmp(&other.parts())
    }
}

impl PartialEq for InternalKey {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}
impl Eq for InternalKey {}
impl PartialOrd for InternalKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InternalKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts().cmp(&other.parts())
    }
}

/// One entry a scan step returns: a user key and the value a snapshot sees.
pub(crate) type KeyValue = (Bytes, Bytes);

/// The memtable. Part 1 of the store keeps every version here; the LSM below it (flush,
/// tables) takes over the versions no snapshot needs.
#[derive(Default)]
pub(crate) struct Memtable {
    map: SkipMap<InternalKey, Value>,
    bytes: AtomicU64,
}

impl Memtable {
    pub(crate) fn new() -> Memtable {
        Memtable::default()
    }

    /// Inserts one version. Each `(bucket, key, seq)` is inserted once (a commit's seq is its
    /// own, and a transaction's write set holds each key once).
    /// Returns the bytes it added (see [`Memtable::approximate_bytes`]).
    pub(crate) fn insert(&self, bucket: u64, key: Bytes, seq: u64, value: Value) -> u64 {
        let cost = key.len() as u64
            + value.as_ref().map_or(0, |v| v.len() as u64)
            + VERSION_OVERHEAD_BYTES;
        self.map.insert(InternalKey::new(bucket, key, seq), value);
        self.bytes.fetch_add(cost, AtomicOrdering::Relaxed);
        cost
    }

    /// Inserts a commit's writes (per bucket, per key) at `seq`; returns the bytes added.
    pub(crate) fn apply<'a>(
        &self,
        seq: u64,
        writes: impl IntoIterator<Item = (u64, &'a Bytes, &'a Value)>,
    ) -> u64 {
        writes
            .into_iter()
            .map(|(bucket, key, value)| self.insert(bucket, key.clone(), seq, value.clone()))
            .sum()
    }

    /// The newest version of `key` at or below `snapshot`: `None` if there is none, `Some(None)`
    /// for a tombstone.
    pub(crate) fn get(&self, bucket: u64, key: &[u8], snapshot: u64) -> Option<Value> {
        let p = probe(bucket, key, snapshot);
        let entry = self.map.lower_bound(Bound::Included(&p as &dyn KeyView))?;
        let found = entry.key();
        (found.bucket == bucket && found.key.as_ref() == key).then(|| entry.value().clone())
    }

    /// The newest seq of any version of `key` (committed or not yet visible), if any.
    #[cfg(test)]
    pub(crate) fn newest_seq(&self, bucket: u64, key: &[u8]) -> Option<u64> {
        let p = probe(bucket, key, u64::MAX);
        let entry = self.map.lower_bound(Bound::Included(&p as &dyn KeyView))?;
        let found = entry.key();
        (found.bucket == bucket && found.key.as_ref() == key).then_some(found.seq)
    }

    /// Up to `limit` live entries of `bucket` visible at `snapshot`, in key order from `from`
    /// (ascending) and below `to`; `None` bounds are the bucket's ends. Returns the entries and
    /// whether the range may hold more.
    #[cfg(test)]
    pub(crate) fn scan_forward(
        &self,
        bucket: u64,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        snapshot: u64,
        limit: usize,
    ) -> (Vec<KeyValue>, bool) {
        let (versions, more) = self.versions_forward(bucket, from, to, snapshot, limit, false);
        (live(versions), more)
    }

    /// Up to `limit` keys of `bucket` in key order from `from` (ascending) and below `to` (`None`
    /// bounds are the bucket's ends), each with its newest version visible at `snapshot`: a
    /// value, or a tombstone too if `tombstones`; and whether the range may hold more.
    pub(crate) fn versions_forward(
        &self,
        bucket: u64,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        snapshot: u64,
        limit: usize,
        tombstones: bool,
    ) -> (Vec<(Bytes, Value)>, bool) {
        let mut out = Vec::new();
        let mut cursor = match from {
            Bound::Included(k) => self.seek_key(bucket, k),
            // The first version of the next key: every version of `k` sorts before (k, seq 0).
            Bound::Excluded(k) => self.seek_after_key(bucket, k),
            Bound::Unbounded => self.seek_key(bucket, &[]),
        };
        while let Some(entry) = cursor {
            let ikey = entry.key();
            if ikey.bucket != bucket || !below(&ikey.key, to) {
                return (out, false);
            }
            if out.len() == limit {
                return (out, true);
            }
            // The newest version of this key that the snapshot sees.
            let visible = if ikey.seq <= snapshot {
                Some(entry.value().clone())
            } else {
                self.get(bucket, &ikey.key, snapshot)
            };
            push_visible(&mut out, &ikey.key, visible, tombstones);
            cursor = self.next_key(bucket, &entry);
        }
        (out, false)
    }

    /// Like [`Memtable::scan_forward`], in descending key order from `from` down to `to`.
    #[cfg(test)]
    pub(crate) fn scan_backward(
        &self,
        bucket: u64,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        snapshot: u64,
        limit: usize,
    ) -> (Vec<KeyValue>, bool) {
        let (versions, more) = self.versions_backward(bucket, from, to, snapshot, limit, false);
        (live(versions), more)
    }

    /// [`Memtable::versions_forward`] in descending key order.
    pub(crate) fn versions_backward(
        &self,
        bucket: u64,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        snapshot: u64,
        limit: usize,
        tombstones: bool,
    ) -> (Vec<(Bytes, Value)>, bool) {
        let mut out = Vec::new();
        let mut cursor = match from {
            // The last version of `k` is (k, seq 0); the entry at or before it.
            Bound::Included(k) => self.seek_last_at_or_before(bucket, k),
            Bound::Excluded(k) => self.seek_before_key(bucket, k),
            Bound::Unbounded => self.seek_before_bucket_end(bucket),
        };
        while let Some(entry) = cursor {
            let ikey = entry.key();
            if ikey.bucket != bucket || !above(&ikey.key, to) {
                return (out, false);
            }
            if out.len() == limit {
                return (out, true);
            }
            let visible = self.get(bucket, &ikey.key, snapshot);
            push_visible(&mut out, &ikey.key, visible, tombstones);
            cursor = self.seek_before_key(bucket, &ikey.key);
        }
        (out, false)
    }

    /// The first version of the key after `entry`'s: a step or a few along the list, a seek
    /// past the versions when there are many.
    fn next_key<'a>(&'a self, bucket: u64, entry: &Entry<'a>) -> Option<Entry<'a>> {
        let key = &entry.key().key;
        let mut next = entry.next();
        for _ in 0..4 {
            match next {
                Some(e) if e.key().bucket == bucket && e.key().key == *key => next = e.next(),
                other => return other,
            }
        }
        self.seek_after_key(bucket, key)
    }

    fn seek_key(&self, bucket: u64, key: &[u8]) -> Option<Entry<'_>> {
        let p = probe(bucket, key, u64::MAX);
        self.map.lower_bound(Bound::Included(&p as &dyn KeyView))
    }

    fn seek_after_key(&self, bucket: u64, key: &[u8]) -> Option<Entry<'_>> {
        let p = probe(bucket, key, 0);
        self.map.lower_bound(Bound::Excluded(&p as &dyn KeyView))
    }

    fn seek_before_key(&self, bucket: u64, key: &[u8]) -> Option<Entry<'_>> {
        let p = probe(bucket, key, u64::MAX);
        self.map.upper_bound(Bound::Excluded(&p as &dyn KeyView))
    }

    fn seek_last_at_or_before(&self, bucket: u64, key: &[u8]) -> Option<Entry<'_>> {
        let p = probe(bucket, key, 0);
        self.map.upper_bound(Bound::Included(&p as &dyn KeyView))
    }

    fn seek_before_bucket_end(&self, bucket: u64) -> Option<Entry<'_>> {
        match bucket.checked_add(1) {
            Some(next) => {
                let p = probe(next, &[], u64::MAX);
                self.map.upper_bound(Bound::Excluded(&p as &dyn KeyView))
            }
            None => self.map.back(),
        }
    }

    /// Every version in internal-key order: `(bucket, key, seq, value)`.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, Bytes, u64, Value)> + '_ {
        self.map.iter().map(|e| {
            let k = e.key();
            (k.bucket, k.key.clone(), k.seq, e.value().clone())
        })
    }

    /// Versions held (all buckets, tombstones included).
    pub(crate) fn versions(&self) -> usize {
        self.map.len()
    }

    /// Approximate bytes held: keys, values and per-version overhead.
    pub(crate) fn approximate_bytes(&self) -> u64 {
        self.bytes.load(AtomicOrdering::Relaxed)
    }
}

type Entry<'a> = crossbeam_skiplist::map::Entry<'a, InternalKey, Value>;

/// Adds the version a snapshot sees of `key` (a tombstone only if `tombstones`).
fn push_visible(
    out: &mut Vec<(Bytes, Value)>,
    key: &Bytes,
    visible: Option<Value>,
    tombstones: bool,
) {
    match visible {
        Some(Some(value)) => out.push((key.clone(), Some(value))),
        Some(None) if tombstones => out.push((key.clone(), None)),
        _ => {}
    }
}

/// The values of `versions`, tombstones dropped.
#[cfg(test)]
fn live(versions: Vec<(Bytes, Value)>) -> Vec<KeyValue> {
    versions
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

/// Whether `key` is within an upper bound.
pub(crate) fn below(key: &[u8], to: Bound<&[u8]>) -> bool {
    match to {
        Bound::Included(end) => key <= end,
        Bound::Excluded(end) => key < end,
        Bound::Unbounded => true,
    }
}

/// Whether `key` is within a lower bound.
pub(crate) fn above(key: &[u8], to: Bound<&[u8]>) -> bool {
    match to {
        Bound::Included(end) => key >= end,
        Bound::Excluded(end) => key > end,
        Bound::Unbounded => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn keys(v: &[KeyValue]) -> Vec<&[u8]> {
        v.iter().map(|(k, _)| k.as_ref()).collect()
    }

    #[test]
    fn get_sees_the_newest_version_at_or_below_the_snapshot() {
        let m = Memtable::new();
        m.insert(1, b("k"), 3, Some(b("v3")));
        m.insert(1, b("k"), 5, None);
        m.insert(1, b("k"), 7, Some(b("v7")));
        assert_eq!(m.get(1, b"k", 2), None);
        assert_eq!(m.get(1, b"k", 3), Some(Some(b("v3"))));
        assert_eq!(m.get(1, b"k", 6), Some(None));
        assert_eq!(m.get(1, b"k", 100), Some(Some(b("v7"))));
        assert_eq!(m.get(0, b"k", 100), None);
        assert_eq!(m.get(1, b"k\0", 100), None);
        assert_eq!(m.newest_seq(1, b"k"), Some(7));
    }

    #[test]
    fn scans_skip_tombstones_newer_versions_and_other_buckets() {
        let m = Memtable::new();
        for (i, k) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            m.insert(1, b(k), 1 + i as u64, Some(b(k)));
        }
        m.insert(0, b("a0"), 1, Some(b("x")));
        m.insert(2, b("z"), 1, Some(b("x")));
        m.insert(1, b("c"), 10, None);
        m.insert(1, b("d"), 11, Some(b("d2")));
        let (all, more) = m.scan_forward(1, Bound::Unbounded, Bound::Unbounded, 20, 100);
        assert!(!more);
        assert_eq!(keys(&all), [b"a", b"b", b"d", b"e"]);
        assert_eq!(all[2].1, b("d2"));
        let (old, _) = m.scan_forward(1, Bound::Unbounded, Bound::Unbounded, 5, 100);
        assert_eq!(keys(&old), [b"a", b"b", b"c", b"d", b"e"]);
        assert_eq!(old[3].1, b("d"));
        let (mid, _) = m.scan_forward(1, Bound::Excluded(b"a"), Bound::Included(b"d"), 5, 100);
        assert_eq!(keys(&mid), [b"b", b"c", b"d"]);
        let (page, more) = m.scan_forward(1, Bound::Unbounded, Bound::Unbounded, 20, 2);
        assert!(more);
        assert_eq!(keys(&page), [b"a", b"b"]);
        let (rev, _) = m.scan_backward(1, Bound::Unbounded, Bound::Unbounded, 20, 100);
        assert_eq!(keys(&rev), [b"e", b"d", b"b", b"a"]);
        assert_eq!(rev[1].1, b("d2"));
        let (rev_mid, _) = m.scan_backward(1, Bound::Included(b"d"), Bound::Excluded(b"a"), 5, 100);
        assert_eq!(keys(&rev_mid), [b"d", b"c", b"b"]);
        let (rev_top, _) = m.scan_backward(u64::MAX, Bound::Unbounded, Bound::Unbounded, 5, 9);
        assert!(rev_top.is_empty());
    }
}
