//! A cursor over a bucket's keys *and* its nested buckets, in one order (BoltDB's cursor).
//!
//! Keys and nested bucket names are separate namespaces here (a bucket may hold a key `x` and a
//! nested bucket `x`), so the cursor lands on [`CursorEntry`]s ordered by name, a key before a
//! bucket of the same name. It is two [`Cursor`]s moved together: one over the bucket's keys,
//! one over the catalog's entries of the buckets nested in it; each move asks both for their
//! nearest entry past the current one and takes the nearer.

use std::ops::Bound;

use bytes::Bytes;

use super::bucket::{CATALOG, entry_key};
use super::scan::Cursor;
use super::txn::Txn;
use crate::error::Result;

/// What an [`EntryCursor`] lands on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CursorEntry {
    /// A key and its value.
    Key {
        /// The key.
        key: Bytes,
        /// Its value.
        value: Bytes,
    },
    /// A nested bucket; open it with `bucket(name)`.
    Bucket {
        /// The nested bucket's name.
        name: Bytes,
    },
}

impl CursorEntry {
    /// The key, or the nested bucket's name.
    pub fn name(&self) -> &Bytes {
        match self {
            CursorEntry::Key { key, .. } => key,
            CursorEntry::Bucket { name } => name,
        }
    }
}

/// A cursor over the keys and nested buckets of one bucket (or of the root keyspace), in name
/// order, a key before a nested bucket of the same name: move to the `first`, `last` or a
/// `seek`ed name, then `next` or `prev`. Each move returns the entry it lands on, or `None` past
/// either end. It sees what [`Cursor`] sees (the snapshot plus the transaction's own writes,
/// buckets created or deleted in it included); in a serializable transaction each move counts
/// the keys and bucket names it passed over as read.
#[derive(Debug)]
pub struct EntryCursor {
    keys: Cursor,
    buckets: Cursor,
    /// The catalog's key prefix of the buckets nested here: `b` ‖ parent id.
    prefix: Bytes,
    current: Option<CursorEntry>,
}

impl EntryCursor {
    pub(crate) fn new(txn: Txn, bucket: u64) -> EntryCursor {
        EntryCursor {
            keys: Cursor::new(txn.clone(), bucket),
            buckets: Cursor::new(txn, CATALOG),
            prefix: entry_key(bucket, b""),
            current: None,
        }
    }

    /// Moves to the first entry.
    ///
    /// # Errors
    /// As [`Cursor::first`].
    ///
    /// # Cancel safety
    /// Safe: a move reads only.
    pub async fn first(&mut self) -> Result<Option<CursorEntry>> {
        self.find(Bound::Unbounded, Bound::Unbounded, false).await
    }

    /// Moves to the last entry.
    ///
    /// # Errors
    /// As [`Cursor::first`].
    ///
    /// # Cancel safety
    /// Safe: a move reads only.
    pub async fn last(&mut self) -> Result<Option<CursorEntry>> {
        self.find(Bound::Unbounded, Bound::Unbounded, true).await
    }

    /// Moves to the first entry whose name is at or after `name`.
    ///
    /// # Errors
    /// As [`Cursor::first`].
    ///
    /// # Cancel safety
    /// Safe: a move reads only.
    pub async fn seek(&mut self, name: impl AsRef<[u8]>) -> Result<Option<CursorEntry>> {
        let name = Bytes::copy_from_slice(name.as_ref());
        self.find(Bound::Included(name.clone()), Bound::Included(name), false)
            .await
    }

    /// Moves to the next entry (the first one if the cursor has not moved yet).
    ///
    /// # Errors
    /// As [`Cursor::first`].
    ///
    /// # Cancel safety
    /// Safe: a move reads only.
    pub async fn next(&mut self) -> Result<Option<CursorEntry>> {
        let (keys_from, buckets_from) = match &self.current {
            None => (Bound::Unbounded, Bound::Unbounded),
            // After a key: later keys, and a bucket of the same name or later.
            Some(CursorEntry::Key { key, .. }) => {
                (Bound::Excluded(key.clone()), Bound::Included(key.clone()))
            }
            Some(CursorEntry::Bucket { name }) => {
                (Bound::Excluded(name.clone()), Bound::Excluded(name.clone()))
            }
        };
        self.find(keys_from, buckets_from, false).await
    }

    /// Moves to the previous entry (the last one if the cursor has not moved yet).
    ///
    /// # Errors
    /// As [`Cursor::first`].
    ///
    /// # Cancel safety
    /// Safe: a move reads only.
    pub async fn prev(&mut self) -> Result<Option<CursorEntry>> {
        let (keys_from, buckets_from) = match &self.current {
            None => (Bound::Unbounded, Bound::Unbounded),
            Some(CursorEntry::Key { key, .. }) => {
                (Bound::Excluded(key.clone()), Bound::Excluded(key.clone()))
            }
            // Before a bucket: a key of the same name or earlier, and earlier buckets.
            Some(CursorEntry::Bucket { name }) => {
                (Bound::Included(name.clone()), Bound::Excluded(name.clone()))
            }
        };
        self.find(keys_from, buckets_from, true).await
    }

    /// The nearest key and the nearest nested bucket from the given bounds (in the direction
    /// asked), and the nearer of the two (a key first on a tie going forward, the bucket first
    /// going back).
    async fn find(
        &mut self,
        keys_from: Bound<Bytes>,
        buckets_from: Bound<Bytes>,
        reverse: bool,
    ) -> Result<Option<CursorEntry>> {
        let key = self
            .keys
            .step(keys_from, reverse)
            .await?
            .map(|(key, value)| CursorEntry::Key { key, value });
        let bucket = self.nearest_bucket(buckets_from, reverse).await?;
        let found = match (key, bucket) {
            (None, other) | (other, None) => other,
            (Some(k), Some(b)) => {
                let key_first = if reverse {
                    k.name() > b.name()
                } else {
                    k.name() <= b.name()
                };
                Some(if key_first { k } else { b })
            }
        };
        if found.is_some() {
            self.current.clone_from(&found);
        }
        Ok(found)
    }

    /// The nearest nested bucket from `from` (a name bound), through the catalog.
    async fn nearest_bucket(
        &mut self,
        from: Bound<Bytes>,
        reverse: bool,
    ) -> Result<Option<CursorEntry>> {
        let prefixed = |name: Bytes| {
            let mut k = self.prefix.to_vec();
            k.extend_from_slice(&name);
            Bytes::from(k)
        };
        let from = match from {
            Bound::Included(name) => Bound::Included(prefixed(name)),
            Bound::Excluded(name) => Bound::Excluded(prefixed(name)),
            // From this bucket's end of the catalog: its prefix going forward, past every name
            // with it going back.
            Bound::Unbounded if !reverse => Bound::Included(self.prefix.clone()),
            Bound::Unbounded => match prefix_end(&self.prefix) {
                Some(end) => Bound::Excluded(end),
                None => Bound::Unbounded,
            },
        };
        let found = self.buckets.step(from, reverse).await?;
        Ok(found.and_then(|(key, _)| {
            // Past this bucket's entries (another parent's, or another kind of catalog key).
            let name = key.strip_prefix(&self.prefix[..])?;
            (!name.is_empty()).then(|| CursorEntry::Bucket {
                name: key.slice(self.prefix.len()..),
            })
        }))
    }
}

/// The first key after every key that starts with `prefix` (`None` if there is none).
fn prefix_end(prefix: &[u8]) -> Option<Bytes> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(Bytes::from(end));
        }
    }
    None
}
