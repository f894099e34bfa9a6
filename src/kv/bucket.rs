//! Buckets (as in BoltDB): named keyspaces, nested to any depth, kept in a catalog that lives in
//! the store itself, so that creating and deleting them is transactional and recovered like any
//! write.
//!
//! Every key of the store lives in a bucket id: 0 is the root keyspace, 1 the catalog, user
//! buckets take ids from [`FIRST_BUCKET_ID`] up, never reused. The catalog's keys:
//!
//! | key                                    | value                    |
//! |----------------------------------------|--------------------------|
//! | `b` ‖ parent id (u64 BE) ‖ name        | the bucket's id (u64 LE) |
//! | `s` ‖ bucket id (u64 BE)               | its last `next_sequence` (u64 LE) |
//! | `d` ‖ bucket id (u64 BE)               | empty: a deleted bucket (its keys are reclaimed by compaction; the entry stays) |
//!
//! Deleting a bucket removes its `b` entry and adds a `d` entry: O(1) whatever it holds. Its keys
//! and nested buckets are unreachable at once; compaction drops their keys once no snapshot from
//! before the delete is held ([`DeadBuckets`]). Their catalog entries stay.

use std::collections::BTreeSet;
use std::ops::RangeBounds;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{BufMut, Bytes, BytesMut};

use super::entries::EntryCursor;
use super::scan::{Cursor, Scan};
use super::tree::Tree;
use super::tree::job::Unreachable;
use super::tree::read::Range;
use super::txn::{Txn, bounds, prefix_bounds};
use crate::error::{CorruptionKind, Error, Result};

/// The catalog's bucket id.
pub(crate) const CATALOG: u64 = 1;
/// The first id given to a user bucket.
pub(crate) const FIRST_BUCKET_ID: u64 = 16;

/// A bucket, opened in one transaction: a keyspace of its own, ordered by key, that may hold
/// nested buckets. Its methods act in the transaction that opened it (the handle holds a clone
/// of the [`Txn`]).
#[derive(Clone)]
pub struct Bucket {
    txn: Txn,
    id: u64,
    path: Arc<str>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("path", &self.path)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

pub(crate) fn entry_key(parent: u64, name: &[u8]) -> Bytes {
    let mut k = BytesMut::with_capacity(9 + name.len());
    k.put_u8(b'b');
    k.put_u64(parent);
    k.put_slice(name);
    k.freeze()
}

/// The parent id a `b` entry's key names.
pub(crate) fn entry_parent(key: &[u8]) -> Option<u64> {
    match key {
        [b'b', id @ ..] if id.len() >= 8 => {
            Some(u64::from_be_bytes(id[..8].try_into().expect("8 bytes")))
        }
        _ => None,
    }
}

/// The bucket a catalog write belongs to: the parent a `b` entry is in, the bucket an `s`
/// entry counts for (none for a `d` entry: it goes with the `b` entry of its deletion).
pub(crate) fn catalog_owner(key: &[u8]) -> Option<u64> {
    match key {
        [b'b' | b's', id @ ..] if id.len() >= 8 => {
            Some(u64::from_be_bytes(id[..8].try_into().expect("8 bytes")))
        }
        _ => None,
    }
}

fn id_key(tag: u8, id: u64) -> Bytes {
    let mut k = BytesMut::with_capacity(9);
    k.put_u8(tag);
    k.put_u64(id);
    k.freeze()
}

/// Decodes a `b` entry's value.
pub(crate) fn decode_id(value: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = value.try_into().map_err(|_| {
        Error::corruption(
            "(bucket catalog)",
            0,
            CorruptionKind::BadHeader { field: "bucket id" },
        )
    })?;
    Ok(u64::from_le_bytes(bytes))
}

/// The highest bucket id a catalog entry (`b` value or `d` key) names, from its key and value.
pub(crate) fn id_in_entry(key: &[u8], value: Option<&[u8]>) -> Option<u64> {
    match key.first() {
        Some(b'b') => value.and_then(|v| decode_id(v).ok()),
        Some(b'd') => key
            .get(1..9)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes"))),
        _ => None,
    }
}

fn path_of(parent_path: &str, name: &[u8]) -> Arc<str> {
    format!("{parent_path}/{}", String::from_utf8_lossy(name)).into()
}

fn check_name(txn: &Txn, name: &[u8]) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid("bucket name", "must not be empty"));
    }
    let max = txn.inner.db.options.max_key_bytes.saturating_sub(9);
    if name.len() as u64 > max {
        return Err(Error::TooLarge {
            len: name.len() as u64,
            max,
        });
    }
    Ok(())
}

fn remember(txn: &Txn, id: u64, key: Bytes, path: Arc<str>) -> Bucket {
    txn.lock()
        .bucket_keys
        .insert(id, ((CATALOG, key), path.clone()));
    Bucket {
        txn: txn.clone(),
        id,
        path,
    }
}

pub(crate) async fn create(
    txn: &Txn,
    parent: u64,
    parent_path: &str,
    name: &[u8],
    if_not_exists: bool,
) -> Result<Bucket> {
    check_name(txn, name)?;
    txn.check_bucket(parent)?;
    let key = entry_key(parent, name);
    let path = path_of(parent_path, name);
    if let Some(existing) = txn.get_in(CATALOG, &key).await? {
        if if_not_exists {
            return Ok(remember(txn, decode_id(&existing)?, key, path));
        }
        return Err(Error::BucketExists {
            name: path.to_string(),
        });
    }
    let id = txn.inner.db.next_bucket_id.fetch_add(1, Ordering::Relaxed);
    txn.write_in(
        CATALOG,
        key.clone(),
        Some(Bytes::copy_from_slice(&id.to_le_bytes())),
    )?;
    Ok(remember(txn, id, key, path))
}

/// The buckets whose keys no snapshot at or above a seq can reach: those deleted at or below
/// it (their `d` entries) and every bucket nested in one. Compaction drops their keys; their
/// catalog entries stay (see [`DeadBuckets::unreachable`]).
#[derive(Debug, Default)]
pub(crate) struct DeadBuckets(BTreeSet<u64>);

impl DeadBuckets {
    /// The dead buckets as of `snapshot`, read from the catalog in the tree.
    ///
    /// # Errors
    /// A damaged table or catalog entry; I/O errors.
    pub(crate) async fn at(tree: &Tree, snapshot: u64) -> Result<DeadBuckets> {
        let mut dead = BTreeSet::new();
        for (key, _) in scan_catalog(tree, b"d", snapshot).await? {
            if let Some(id) = id_in_entry(&key, None) {
                dead.insert(id);
            }
        }
        let mut queue: Vec<u64> = dead.iter().copied().collect();
        while let Some(id) = queue.pop() {
            for (_, value) in scan_catalog(tree, &entry_key(id, b""), snapshot).await? {
                let child = decode_id(&value)?;
                if dead.insert(child) {
                    queue.push(child);
                }
            }
        }
        Ok(DeadBuckets(dead))
    }
}

impl Unreachable for DeadBuckets {
    /// The keys of a dead bucket. Catalog entries all stay: the `b` entries under a dead
    /// bucket are how the buckets nested in it are found by later compactions (their keys may
    /// sit in levels not compacted yet), and every id the catalog names keeps the id counter
    /// above it at open (ids are never reused).
    fn unreachable(&self, bucket: u64, _key: &[u8]) -> bool {
        self.0.contains(&bucket)
    }
}

/// Every catalog entry with `prefix` visible at `snapshot`.
pub(crate) async fn scan_catalog(
    tree: &Tree,
    prefix: &[u8],
    snapshot: u64,
) -> Result<Vec<(Bytes, Bytes)>> {
    let (from, to) = prefix_bounds(prefix);
    let range = Range {
        bucket: CATALOG,
        from,
        to,
        reverse: false,
    };
    let mut iter = tree.iter(range, snapshot);
    let mut out = Vec::new();
    while let Some(entry) = iter.next().await? {
        out.push(entry);
    }
    Ok(out)
}

pub(crate) async fn open(
    txn: &Txn,
    parent: u64,
    parent_path: &str,
    name: &[u8],
) -> Result<Option<Bucket>> {
    txn.check_bucket(parent)?;
    if name.is_empty() {
        return Ok(None);
    }
    let key = entry_key(parent, name);
    match txn.get_in(CATALOG, &key).await? {
        Some(v) => Ok(Some(remember(
            txn,
            decode_id(&v)?,
            key,
            path_of(parent_path, name),
        ))),
        None => Ok(None),
    }
}

pub(crate) async fn delete(txn: &Txn, parent: u64, parent_path: &str, name: &[u8]) -> Result<()> {
    let Some(bucket) = open(txn, parent, parent_path, name).await? else {
        return Err(Error::BucketNotFound {
            name: path_of(parent_path, name).to_string(),
        });
    };
    txn.write_in(CATALOG, entry_key(parent, name), None)?;
    txn.write_in(CATALOG, id_key(b'd', bucket.id), Some(Bytes::new()))?;
    txn.lock().deleted.insert(bucket.id);
    Ok(())
}

pub(crate) async fn list(txn: &Txn, parent: u64) -> Result<Vec<Bytes>> {
    txn.check_bucket(parent)?;
    let prefix = entry_key(parent, &[]);
    let mut scan = Scan::new(txn.clone(), CATALOG, prefix_bounds(&prefix));
    let mut names = Vec::new();
    while let Some(entry) = scan.next_entry().await {
        let (key, _) = entry?;
        names.push(key.slice(prefix.len()..));
    }
    Ok(names)
}

impl Bucket {
    /// Its path from the root, e.g. `/users/eu`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Its id: stable for its life, never reused after it is deleted.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The value of `key` in this bucket.
    ///
    /// # Errors
    /// As [`Txn::get`], and [`Error::BucketNotFound`] if this transaction deleted the bucket (or
    /// a bucket it is nested in).
    ///
    /// # Cancel safety
    /// Safe, as [`Txn::get`].
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        self.txn.get_in(self.id, key.as_ref()).await
    }

    /// Whether `key` exists in this bucket.
    ///
    /// # Errors
    /// As [`Bucket::get`].
    ///
    /// # Cancel safety
    /// Safe, as [`Txn::get`].
    pub async fn contains(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        Ok(self.txn.get_in(self.id, key.as_ref()).await?.is_some())
    }

    /// Puts `key` → `value` in this bucket.
    ///
    /// # Errors
    /// As [`Txn::put`], and [`Error::BucketNotFound`] as [`Bucket::get`].
    pub fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<()> {
        self.txn.write_in(self.id, key.into(), Some(value.into()))
    }

    /// Deletes `key` from this bucket.
    ///
    /// # Errors
    /// As [`Bucket::put`].
    pub fn delete(&self, key: impl Into<Bytes>) -> Result<()> {
        self.txn.write_in(self.id, key.into(), None)
    }

    /// The entries of this bucket in `range` (see [`Scan`]).
    pub fn scan<K: AsRef<[u8]>>(&self, range: impl RangeBounds<K>) -> Scan {
        Scan::new(self.txn.clone(), self.id, bounds(range))
    }

    /// The entries of this bucket whose keys start with `prefix` (see [`Scan`]).
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Scan {
        Scan::new(self.txn.clone(), self.id, prefix_bounds(prefix.as_ref()))
    }

    /// A cursor over this bucket's keys.
    pub fn cursor(&self) -> Cursor {
        Cursor::new(self.txn.clone(), self.id)
    }

    /// A cursor over this bucket's keys and the buckets nested in it, in one order (BoltDB's
    /// cursor).
    pub fn entry_cursor(&self) -> EntryCursor {
        EntryCursor::new(self.txn.clone(), self.id)
    }

    /// Creates the nested bucket `name`.
    ///
    /// # Errors
    /// As [`Txn::create_bucket`], and [`Error::BucketNotFound`] as [`Bucket::get`].
    ///
    /// # Cancel safety
    /// Safe, as [`Txn::create_bucket`].
    pub async fn create_bucket(&self, name: impl AsRef<[u8]>) -> Result<Bucket> {
        create(&self.txn, self.id, &self.path, name.as_ref(), false).await
    }

    /// Creates the nested bucket `name` unless it exists; returns it either way.
    ///
    /// # Errors
    /// As [`Txn::create_bucket_if_not_exists`], and [`Error::BucketNotFound`] as [`Bucket::get`].
    ///
    /// # Cancel safety
    /// Safe, as [`Txn::create_bucket`].
    pub async fn create_bucket_if_not_exists(&self, name: impl AsRef<[u8]>) -> Result<Bucket> {
        create(&self.txn, self.id, &self.path, name.as_ref(), true).await
    }

    /// The nested bucket `name`, if it exists.
    ///
    /// # Errors
    /// As [`Txn::bucket`], and [`Error::BucketNotFound`] as [`Bucket::get`].
    ///
    /// # Cancel safety
    /// Safe, as [`Txn::get`].
    pub async fn bucket(&self, name: impl AsRef<[u8]>) -> Result<Option<Bucket>> {
        open(&self.txn, self.id, &self.path, name.as_ref()).await
    }

    /// Deletes the nested bucket `name` with everything in it, in O(1).
    ///
    /// # Errors
    /// As [`Txn::delete_bucket`].
    ///
    /// # Cancel safety
    /// Safe, as [`Txn::create_bucket`].
    pub async fn delete_bucket(&self, name: impl AsRef<[u8]>) -> Result<()> {
        delete(&self.txn, self.id, &self.path, name.as_ref()).await
    }

    /// The names of the nested buckets, in order.
    ///
    /// # Errors
    /// As [`Txn::buckets`], and [`Error::BucketNotFound`] as [`Bucket::get`].
    ///
    /// # Cancel safety
    /// Safe, as [`Txn::get`].
    pub async fn buckets(&self) -> Result<Vec<Bytes>> {
        list(&self.txn, self.id).await
    }

    /// The bucket's next sequence number: 1, 2, 3, … Transactional: it advances only if the
    /// transaction commits, and two transactions that both take one conflict (one of them
    /// fails its commit), so committed numbers are unique and increase in commit order.
    ///
    /// # Errors
    /// As [`Bucket::put`].
    ///
    /// # Cancel safety
    /// Safe, as [`Txn::get`].
    pub async fn next_sequence(&self) -> Result<u64> {
        self.txn.check_bucket(self.id)?;
        let key = id_key(b's', self.id);
        let current = match self.txn.get_in(CATALOG, &key).await? {
            Some(v) => decode_id(&v)?,
            None => 0,
        };
        let next = current + 1;
        self.txn.write_in(
            CATALOG,
            key,
            Some(Bytes::copy_from_slice(&next.to_le_bytes())),
        )?;
        Ok(next)
    }
}
