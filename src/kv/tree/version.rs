//! A version: the set of tables that make up the tree at one moment, immutable and shared by
//! reference count. A reader holds the version it started with, so a compaction that replaces
//! tables never pulls a file from under it: a replaced table's file is removed when the last
//! version naming it is dropped.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::collections::BTreeMap;

use ringtide_platform::IoDriver;

use super::blob::BlobFile;
use super::memtable::InternalKey;
use super::table::Table;

/// One table file of the tree.
pub(crate) struct TableFile {
    pub(crate) id: u64,
    pub(crate) level: u8,
    pub(crate) table: Table,
    /// Set when a recorded edit removed it: its file goes when the last reference does.
    obsolete: AtomicBool,
    driver: IoDriver,
}

impl std::fmt::Debug for TableFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableFile")
            .field("id", &self.id)
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

impl TableFile {
    pub(crate) fn new(id: u64, level: u8, table: Table, driver: IoDriver) -> Arc<TableFile> {
        Arc::new(TableFile {
            id,
            level,
            table,
            obsolete: AtomicBool::new(false),
            driver,
        })
    }

    pub(crate) fn min_key(&self) -> &InternalKey {
        &self.table.meta().min_key
    }

    pub(crate) fn max_key(&self) -> &InternalKey {
        &self.table.meta().max_key
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.table.path().to_path_buf()
    }

    /// Marks the table removed from the tree (its edit is durable).
    pub(crate) fn retire(&self) {
        self.obsolete.store(true, Ordering::Release);
    }

    /// Whether `(bucket, key)` is within the table's key range.
    pub(crate) fn covers(&self, bucket: u64, key: &[u8]) -> bool {
        let (min, max) = (self.min_key(), self.max_key());
        (min.bucket, &min.key[..]) <= (bucket, key) && (bucket, key) <= (max.bucket, &max.key[..])
    }
}

impl Drop for TableFile {
    fn drop(&mut self) {
        if !self.obsolete.load(Ordering::Acquire) {
            return;
        }
        self.table.evict_cached();
        let path = self.path();
        let driver = self.driver.clone();
        // Removed through the executor, off this (possibly synchronous) path; without a
        // runtime the file stays behind and the next open removes it (no edit names it).
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = driver.remove_file(&path).await {
                    tracing::warn!(path = %path.display(), error = %e, "removing a replaced table failed");
                }
            });
        }
    }
}

/// The tables of the tree at one moment, and the value-log files they point into.
#[derive(Debug, Default, Clone)]
pub(crate) struct Version {
    /// Level 0: flushed memtables, newest first; their key ranges overlap.
    pub(crate) l0: Vec<Arc<TableFile>>,
    /// Levels 1 and up. A *tiered* level (1 to `tiered`): sorted runs of one table each, newest
    /// first (by seq: the runs of a level hold disjoint seq ranges), their key ranges
    /// overlapping, as L0's. A *sorted* level (below): tables sorted by key, ranges disjoint.
    pub(crate) levels: Vec<Vec<Arc<TableFile>>>,
    /// Levels 1 to `tiered` are tiered.
    pub(crate) tiered: usize,
    /// The value-log files some table names, by id: exactly those (see `blob.rs`).
    pub(crate) blobs: BTreeMap<u64, Arc<BlobFile>>,
}

/// What the live tables' pointers reach in one value-log file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlobLive {
    pub(crate) values: u64,
    pub(crate) bytes: u64,
}

impl Version {
    /// An empty version whose levels 1 to `tiered` are tiered.
    pub(crate) fn new(tiered: usize) -> Version {
        Version {
            tiered,
            ..Version::default()
        }
    }

    /// Whether level `n` (1 and up) holds sorted runs that overlap (size-tiered), not one
    /// sorted run (leveled).
    pub(crate) fn is_tiered(&self, n: usize) -> bool {
        (1..=self.tiered).contains(&n)
    }

    /// What is wrong with the order of the levels' tables, if anything: a tiered level's runs
    /// must hold disjoint seq ranges, a leveled level's tables disjoint key ranges (checked at
    /// open, in release builds too: a version that breaks either would answer reads wrongly).
    pub(crate) fn misshapen(&self) -> Option<&'static str> {
        for (i, level) in self.levels.iter().enumerate() {
            let sound = if self.is_tiered(i + 1) {
                level
                    .windows(2)
                    .all(|w| w[0].table.meta().seq_min > w[1].table.meta().seq_max)
            } else {
                level.windows(2).all(|w| {
                    let (end, start) = (w[0].max_key(), w[1].min_key());
                    (end.bucket, &end.key) < (start.bucket, &start.key)
                })
            };
            if !sound {
                return Some(if self.is_tiered(i + 1) {
                    "the runs of a tiered level overlap in seqs"
                } else {
                    "the tables of a leveled level overlap in keys"
                });
            }
        }
        None
    }

    /// Every table, L0 first.
    pub(crate) fn tables(&self) -> impl Iterator<Item = &Arc<TableFile>> {
        self.l0.iter().chain(self.levels.iter().flatten())
    }

    /// The table of a sorted level that may hold `(bucket, key)`.
    pub(crate) fn find_in_level<'a>(
        level: &'a [Arc<TableFile>],
        bucket: u64,
        key: &[u8],
    ) -> Option<&'a Arc<TableFile>> {
        let i = level.partition_point(|t| {
            let max = t.max_key();
            (max.bucket, &max.key[..]) < (bucket, key)
        });
        level.get(i).filter(|t| t.covers(bucket, key))
    }

    /// Per value-log file, the values and bytes the tables' pointers reach (their meta blocks'
    /// counts): what is not reached is garbage.
    pub(crate) fn blob_live(&self) -> BTreeMap<u64, BlobLive> {
        let mut live: BTreeMap<u64, BlobLive> = BTreeMap::new();
        for t in self.tables() {
            for r in &t.table.meta().blobs {
                let l = live.entry(r.file).or_default();
                l.values = l.values.saturating_add(r.values);
                l.bytes = l.bytes.saturating_add(r.bytes);
            }
        }
        live
    }

    /// The value-log file `id`, if a table of this version names it.
    pub(crate) fn blob(&self, id: u64) -> Option<&Arc<BlobFile>> {
        self.blobs.get(&id)
    }

    /// The version with the tables of `removed` gone and `added` in place (L0 tables added are
    /// newer than every L0 table present), and the value-log files its tables name: those of
    /// this version and `new_blobs`. A file no table names any more is *retired* (removed once
    /// the last version naming it is dropped): call this only once the edit is durable.
    pub(crate) fn edit(
        &self,
        removed: &[u64],
        added: Vec<Arc<TableFile>>,
        new_blobs: Vec<Arc<BlobFile>>,
    ) -> Version {
        let mut next = self.edit_tables(removed, added);
        let named: std::collections::BTreeSet<u64> = next
            .tables()
            .flat_map(|t| t.table.meta().blobs.iter().map(|r| r.file))
            .collect();
        for b in self.blobs.values().chain(&new_blobs) {
            if named.contains(&b.id) {
                next.blobs.insert(b.id, b.clone());
            } else {
                b.retire();
            }
        }
        next
    }

    fn edit_tables(&self, removed: &[u64], added: Vec<Arc<TableFile>>) -> Version {
        let keep = |t: &&Arc<TableFile>| !removed.contains(&t.id);
        let mut l0: Vec<_> = added.iter().filter(|t| t.level == 0).cloned().collect();
        l0.extend(self.l0.iter().filter(keep).cloned());
        let depth = self
            .levels
            .len()
            .max(added.iter().map(|t| t.level as usize).max().unwrap_or(0));
        let mut levels = Vec::with_capacity(depth);
        for n in 1..=depth {
            let mut level: Vec<_> = self
                .levels
                .get(n - 1)
                .into_iter()
                .flatten()
                .filter(keep)
                .cloned()
                .collect();
            level.extend(added.iter().filter(|t| t.level as usize == n).cloned());
            if self.is_tiered(n) {
                // Newest run first. Runs hold disjoint seq ranges (each was made of data newer
                // than every run already in the level), which ids do not order: two
                // compactions may allocate their outputs' ids in either order.
                level.sort_by_key(|t| std::cmp::Reverse(t.table.meta().seq_max));
            } else {
                level.sort_by(|a, b| {
                    let (x, y) = (a.min_key(), b.min_key());
                    (x.bucket, &x.key).cmp(&(y.bucket, &y.key))
                });
            }
            levels.push(level);
        }
        Version {
            l0,
            levels,
            tiered: self.tiered,
            blobs: BTreeMap::new(),
        }
    }
}
