//! The storage under the transactions, which knows nothing of transactions or buckets:
//! internal keys `(bucket id, user key, seq)` → value or tombstone, in an LSM tree.
//!
//! - **Memtables**: the active one takes new commits; at `write_buffer_bytes` it becomes
//!   immutable and a new one takes over ([`Tree::rotate`]). Each memtable holds a contiguous
//!   range of seqs: a commit goes to the memtable of its seq, chosen by seq, not by the moment
//!   it inserts, so that when memtable *n* is flushed every seq up to its end is in it or
//!   older ones.
//! - **Tables** (`table/`): a flushed memtable becomes an L0 table; compaction takes L0 whole
//!   into L1 — a new run of a size-tiered level (L1–L2 by default), or merged with the tables
//!   it overlaps in a leveled one — a tiered level whole into the next, and a table of a
//!   leveled level over its size target into the level below (`job.rs`). The set of tables is a [`Version`], swapped whole; the manifest
//!   (`manifest.rs`) records each change durably before it is swapped in.
//! - **Reads** see memtables newest first, then L0 newest first, then L1, L2…: for one key the
//!   first source holding a version at or below the snapshot has the newest such version (the
//!   sources hold disjoint, descending seq ranges).
//!
//! The store (one level up) decides when to flush and what the oldest snapshot is; the tree
//! does the work and keeps its state consistent.

pub(crate) mod blob;
mod blob_jobs;
pub(crate) mod job;
pub(crate) mod manifest;
pub(crate) mod memtable;
pub(crate) mod range;
pub(crate) mod read;
pub(crate) mod table;
pub(crate) mod version;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use ringtide_platform::{EntryKind, IoDriver};

use self::manifest::Manifest;
use self::memtable::{Memtable, Value};
use self::table::{BlockCache, Table, TableOptions};
use self::version::{TableFile, Version};
use crate::error::{CorruptionKind, Error, Result};
use crate::kv::options::Compression;
use crate::kv::options::MemoryBudget;
use crate::types::Lsn;
use crate::wal::WalOptions;

/// How the tree is shaped (from the store's options).
#[derive(Debug, Clone)]
pub(crate) struct TreeOptions {
    pub(crate) write_buffer_bytes: u64,
    pub(crate) max_immutable_memtables: usize,
    pub(crate) l0_compaction_trigger: usize,
    pub(crate) l0_stop_writes_trigger: usize,
    pub(crate) max_concurrent_compactions: usize,
    pub(crate) compaction_score_size_weight: f64,
    pub(crate) compaction_score_count_weight: f64,
    pub(crate) compaction_cooldown: std::time::Duration,
    pub(crate) table_target_bytes: u64,
    pub(crate) l1_target_bytes: u64,
    pub(crate) level_size_multiplier: u64,
    /// Levels, L0 included.
    pub(crate) level_count: usize,
    /// Levels L1 to this one are size-tiered (`Version::is_tiered`); at open, the shape the
    /// store recorded replaces it.
    pub(crate) tiered_levels: usize,
    /// `tiered_levels` was asked for (not a default): a store recorded with another shape is
    /// refused instead of read with its own.
    pub(crate) tiered_levels_explicit: bool,
    pub(crate) block_cache_bytes: u64,
    /// Values of this many bytes or more go to value-log files (0: none).
    pub(crate) value_separation_threshold_bytes: u64,
    /// A value-log file this much garbage or more has its live values rewritten.
    pub(crate) value_log_garbage_ratio: f64,
    /// The split of `memory_limit_bytes`, if the store has one.
    pub(crate) memory: Option<MemoryBudget>,
    /// Per level (L0 first, `level_count` of them): the compression its new tables are written
    /// with.
    pub(crate) level_compression: Vec<Compression>,
    /// How tables are written; its compression is replaced by the level's.
    pub(crate) table: TableOptions,
}

impl TreeOptions {
    /// How the tables of `level` are written: `table` with the level's compression.
    pub(crate) fn table_options(&self, level: usize) -> TableOptions {
        let compression = self
            .level_compression
            .get(level)
            .copied()
            .unwrap_or(self.table.compression);
        self.table.clone().compression(compression)
    }
}

/// A memtable and the seqs it holds: those above `after_seq` (and, once immutable, up to the
/// next memtable's `after_seq`).
#[derive(Clone)]
pub(crate) struct Slot {
    pub(crate) mem: Arc<Memtable>,
    pub(crate) after_seq: u64,
    /// A log position at or below that of every record whose writes this memtable holds (the
    /// store's wal lsn when it was made active): the log may be cut below it once every older
    /// memtable is flushed.
    pub(crate) log_from: Lsn,
}

/// The tree's state at one moment: memtables (newest first; the first is the active one) and
/// the tables. Swapped whole; readers hold the one they started with.
#[derive(Clone)]
pub(crate) struct Super {
    pub(crate) memtables: Vec<Slot>,
    pub(crate) version: Arc<Version>,
}

impl Super {
    /// The memtable that holds `seq`.
    pub(crate) fn memtable_for(&self, seq: u64) -> &Arc<Memtable> {
        &self
            .memtables
            .iter()
            .find(|s| s.after_seq < seq)
            .unwrap_or_else(|| self.memtables.last().expect("always an active memtable"))
            .mem
    }
}

/// See the module docs.
pub(crate) struct Tree {
    tables_dir: PathBuf,
    driver: IoDriver,
    pub(crate) options: TreeOptions,
    current: RwLock<Arc<Super>>,
    pub(crate) manifest: Manifest,
    next_table_id: AtomicU64,
    /// One flush at a time.
    pub(crate) flushing: tokio::sync::Mutex<()>,
    /// A permit per compaction running (`max_concurrent_compactions`); `Db::compact`,
    /// `compact_range` and close take them all.
    compacting: tokio::sync::Semaphore,
    /// Tables a running compaction reads: no other one picks them.
    pub(crate) busy: std::sync::Mutex<std::collections::HashSet<u64>>,
    /// Woken when an immutable memtable is flushed (writers waiting for room).
    pub(crate) room: tokio::sync::Notify,
    pub(crate) figures: Figures,
    /// Data blocks of every table, by (table id, offset).
    pub(crate) cache: BlockCache,
    /// Per sorted level, the last key compacted from it (compactions go round robin).
    compaction_cursors: std::sync::Mutex<Vec<Option<(u64, Bytes)>>>,
    /// What the commit path checks without taking the state's lock: the memtables' bytes
    /// (added by each commit, taken off by each flush) and the immutable ones' count.
    memtable_bytes: AtomicU64,
    immutable_count: AtomicUsize,
    l0_tables: AtomicUsize,
    /// The open tables' indexes and filters (held in memory outside the cache).
    table_meta_bytes: AtomicU64,
    /// The warning that the memory limit leaves the cache under 1 MiB was logged.
    warned_small_cache: std::sync::atomic::AtomicBool,
}

/// Counters of the tree's work.
#[derive(Default)]
pub(crate) struct Figures {
    pub(crate) flushes: AtomicU64,
    pub(crate) compactions: AtomicU64,
    pub(crate) bytes_flushed: AtomicU64,
    pub(crate) bytes_compacted_in: AtomicU64,
    pub(crate) bytes_compacted_out: AtomicU64,
    /// What flushes and compactions would have written with every data block uncompressed.
    pub(crate) bytes_written_uncompressed: AtomicU64,
    /// Value-log files' bytes written by flushes and compactions (counted in
    /// `bytes_flushed` and `bytes_compacted_out` too).
    pub(crate) value_log_bytes_written: AtomicU64,
    pub(crate) stall_micros: AtomicU64,
}

/// The tree's memory (see [`Tree::memory`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemoryFigures {
    pub(crate) memtable_bytes: u64,
    pub(crate) table_meta_bytes: u64,
    pub(crate) block_cache_capacity: u64,
}

/// What [`Tree::open`] found.
pub(crate) struct Opened {
    pub(crate) tree: Tree,
    pub(crate) flushed: manifest::Flushed,
}

impl Tree {
    /// Opens the tree of the store in `dir`: replays the manifest, opens every table it names
    /// (one missing is `Corruption`), removes table files no edit names (unless read-only) and
    /// starts with one empty memtable for the seqs after the flushed one.
    ///
    /// # Errors
    /// [`Error::Corruption`] for a damaged manifest or table, or a table named but missing;
    /// I/O errors.
    ///
    /// # Cancel safety
    /// Safe to drop; orphan removal may be half done, which the next open finishes.
    pub(crate) async fn open(
        dir: &Path,
        driver: IoDriver,
        options: TreeOptions,
        wal_options: WalOptions,
        read_only: bool,
        log_from: Lsn,
    ) -> Result<Opened> {
        options.table.validate()?;
        let tables_dir = dir.join("tables");
        if !read_only {
            driver
                .create_dir_all(&tables_dir)
                .await
                .map_err(|e| Error::io(&tables_dir, e))?;
        }
        let manifest = Manifest::open(&dir.join("manifest"), wal_options, read_only).await?;
        let state = manifest.state().await;
        let mut options = options;
        options.tiered_levels = shape(&options, &state, &manifest, read_only).await?;
        let present = list_files(&driver, &tables_dir, ".sst").await?;
        let present_blobs = list_files(&driver, &tables_dir, ".blob").await?;
        let mut max_id = present
            .iter()
            .chain(&present_blobs)
            .map(|(id, _)| *id)
            .max()
            .unwrap_or(0);
        let cache = BlockCache::new(options.block_cache_bytes);
        let mut files = Vec::new();
        for (&id, &level) in &state.tables {
            max_id = max_id.max(id);
            let path = table_path(&tables_dir, id);
            if !present.iter().any(|(p, _)| *p == id) {
                return Err(Error::corruption(
                    path,
                    0,
                    CorruptionKind::BadManifest {
                        lsn: Lsn(0),
                        reason: "a table the manifest names is missing",
                    },
                ));
            }
            let table = Table::open(&driver, &path, id, cache.clone()).await?;
            files.push(TableFile::new(id, level, table, driver.clone()));
        }
        // The value-log files the live tables name: each must be there; the others are left
        // by a job that never recorded its edit, or no longer reached.
        let named: BTreeSet<u64> = files
            .iter()
            .flat_map(|t| t.table.meta().blobs.iter().map(|r| r.file))
            .collect();
        let mut blobs = Vec::new();
        for &id in &named {
            let path = blob::blob_path(&tables_dir, id);
            if !present_blobs.iter().any(|(p, _)| *p == id) {
                return Err(Error::corruption(
                    path,
                    0,
                    CorruptionKind::BadManifest {
                        lsn: Lsn(0),
                        reason: "a value-log file a table names is missing",
                    },
                ));
            }
            blobs.push(blob::BlobFile::open(&driver, path, id, cache.clone()).await?);
        }
        if !read_only {
            let orphans = present
                .iter()
                .filter(|(id, _)| !state.tables.contains_key(id))
                .map(|(_, p)| ("a table no edit names", p))
                .chain(
                    present_blobs
                        .iter()
                        .filter(|(id, _)| !named.contains(id))
                        .map(|(_, p)| ("a value-log file no table names", p)),
                );
            for (what, path) in orphans {
                tracing::info!(path = %path.display(), "removing {what}");
                driver
                    .remove_file(path)
                    .await
                    .map_err(|e| Error::io(path, e))?;
            }
        }
        let next_id = max_id.checked_add(1).ok_or_else(|| {
            Error::corruption(
                &tables_dir,
                0,
                CorruptionKind::BadManifest {
                    lsn: Lsn(0),
                    reason: "a table id at the end of the id space",
                },
            )
        })?;
        // L0 newest first: a later flush has a larger id.
        files.sort_by_key(|t| std::cmp::Reverse(t.id));
        let version = Version::new(options.tiered_levels).edit(&[], files, blobs);
        if let Some(reason) = version.misshapen() {
            return Err(Error::corruption(
                dir.join("manifest"),
                0,
                CorruptionKind::BadManifest {
                    lsn: Lsn(0),
                    reason,
                },
            ));
        }
        let slot = Slot {
            mem: Arc::new(Memtable::new()),
            after_seq: state.flushed.seq,
            log_from,
        };
        let compaction_slots = options.max_concurrent_compactions;
        let tree = Tree {
            tables_dir,
            driver,
            options,
            current: RwLock::new(Arc::new(Super {
                memtables: vec![slot],
                version: Arc::new(version),
            })),
            manifest,
            next_table_id: AtomicU64::new(next_id),
            flushing: tokio::sync::Mutex::new(()),
            compacting: tokio::sync::Semaphore::new(compaction_slots),
            busy: std::sync::Mutex::new(std::collections::HashSet::new()),
            room: tokio::sync::Notify::new(),
            figures: Figures::default(),
            cache,
            compaction_cursors: std::sync::Mutex::new(Vec::new()),
            memtable_bytes: AtomicU64::new(0),
            immutable_count: AtomicUsize::new(0),
            l0_tables: AtomicUsize::new(0),
            table_meta_bytes: AtomicU64::new(0),
            warned_small_cache: std::sync::atomic::AtomicBool::new(false),
        };
        tree.note_version(&tree.current().version);
        Ok(Opened {
            tree,
            flushed: state.flushed,
        })
    }

    /// A compaction's permit (see `compacting`).
    pub(crate) async fn compaction_permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.compacting
            .acquire()
            .await
            .expect("the compaction semaphore is never closed")
    }

    /// Every compaction's permit: no compaction runs while it is held.
    pub(crate) async fn all_compactions(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.compacting
            .acquire_many(self.options.max_concurrent_compactions as u32)
            .await
            .expect("the compaction semaphore is never closed")
    }

    /// The current state (memtables and tables), for a read or a job.
    pub(crate) fn current(&self) -> Arc<Super> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn swap(&self, f: impl FnOnce(&Super) -> Super) {
        let mut guard = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = f(&guard);
        // A job's edit keeps every level in order (the state read at open is checked apart,
        // as damage, not a bug).
        debug_assert_eq!(next.version.misshapen(), None, "a version out of order");
        self.immutable_count
            .store(next.memtables.len() - 1, Ordering::Release);
        let flushed: u64 = guard
            .memtables
            .iter()
            .filter(|old| !next.memtables.iter().any(|m| Arc::ptr_eq(&m.mem, &old.mem)))
            .map(|old| old.mem.approximate_bytes())
            .sum();
        self.memtable_bytes.fetch_sub(flushed, Ordering::AcqRel);
        let version_changed = !Arc::ptr_eq(&guard.version, &next.version);
        *guard = Arc::new(next);
        if version_changed {
            self.note_version(&guard.version);
        }
    }

    /// A new set of tables: their indexes and filters are counted, and under a memory limit the
    /// block cache gets what they leave of the tables' share (never above `block_cache_bytes`).
    fn note_version(&self, version: &Version) {
        self.l0_tables.store(version.l0.len(), Ordering::Release);
        let meta: u64 = version.tables().map(|t| t.table.resident_bytes()).sum();
        self.table_meta_bytes.store(meta, Ordering::Relaxed);
        if let Some(budget) = &self.options.memory {
            let room = budget.tables.saturating_sub(meta);
            let capacity = self.options.block_cache_bytes.min(room);
            if capacity != self.cache.capacity() {
                if capacity < (1 << 20) && !self.warned_small_cache.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        limit = budget.limit,
                        table_meta_bytes = meta,
                        "the tables' indexes and filters leave the block cache under 1 MiB of the memory limit"
                    );
                }
                self.cache.set_capacity(capacity);
            }
        }
    }

    /// What memory the tree holds, against its limit.
    pub(crate) fn memory(&self) -> MemoryFigures {
        MemoryFigures {
            memtable_bytes: self.memtable_bytes.load(Ordering::Relaxed),
            table_meta_bytes: self.table_meta_bytes.load(Ordering::Relaxed),
            block_cache_capacity: self.cache.capacity(),
        }
    }

    /// Inserts a commit's writes at `seq` into the memtable that holds `seq`; returns whether
    /// the active memtable is now full.
    pub(crate) fn apply<'a>(
        &self,
        seq: u64,
        writes: impl IntoIterator<Item = (u64, &'a Bytes, &'a Value)>,
    ) -> bool {
        let current = self.current();
        let mem = current.memtable_for(seq);
        let added = mem.apply(seq, writes);
        self.memtable_bytes.fetch_add(added, Ordering::AcqRel);
        let active = &current.memtables[0].mem;
        Arc::ptr_eq(mem, active) && active.approximate_bytes() >= self.options.write_buffer_bytes
    }

    /// The newest version of `key` at or below `snapshot` (`None`: none or a tombstone).
    ///
    /// # Errors
    /// A damaged table; I/O errors.
    pub(crate) async fn get(
        &self,
        bucket: u64,
        key: &[u8],
        snapshot: u64,
    ) -> Result<Option<Bytes>> {
        let current = self.current();
        for slot in &current.memtables {
            if let Some(v) = slot.mem.get(bucket, key, snapshot) {
                return Ok(v);
            }
        }
        let version = &current.version;
        for t in &version.l0 {
            if let Some(v) = t.table.get(bucket, key, snapshot).await? {
                return resolve(version, &t.table, v).await;
            }
        }
        for (i, level) in version.levels.iter().enumerate() {
            if version.is_tiered(i + 1) {
                // Runs newest first, as L0.
                for t in level {
                    if let Some(v) = t.table.get(bucket, key, snapshot).await? {
                        return resolve(version, &t.table, v).await;
                    }
                }
            } else if let Some(t) = Version::find_in_level(level, bucket, key)
                && let Some(v) = t.table.get(bucket, key, snapshot).await?
            {
                return resolve(version, &t.table, v).await;
            }
        }
        Ok(None)
    }

    /// Makes the active memtable immutable and starts a new one for the seqs after
    /// `last_assigned()` (read under the tree's lock, so that no seq above it can have chosen
    /// the old memtable). `log_from` is read *before*: every record of a later seq is appended
    /// after it. Does nothing if the active memtable is empty.
    /// Unless `force`, only a full memtable is rotated (many commits may see it full).
    pub(crate) fn rotate(
        &self,
        log_from: Lsn,
        force: bool,
        last_assigned: impl FnOnce() -> u64,
    ) -> bool {
        let mut rotated = false;
        self.swap(|s| {
            let mut next = s.clone();
            let active = &s.memtables[0].mem;
            let full = active.approximate_bytes() >= self.options.write_buffer_bytes;
            if active.versions() == 0 || !(force || full) {
                return next;
            }
            rotated = true;
            next.memtables.insert(
                0,
                Slot {
                    mem: Arc::new(Memtable::new()),
                    after_seq: last_assigned(),
                    log_from,
                },
            );
            next
        });
        rotated
    }

    /// Immutable memtables waiting for their flush.
    pub(crate) fn immutables(&self) -> usize {
        self.immutable_count.load(Ordering::Acquire)
    }

    /// Whether writers should wait: too many immutable memtables, too many L0 tables, or
    /// (under a memory limit) the memtables' share of it used up. Free of locks: every commit
    /// with writes asks.
    pub(crate) fn stalled(&self) -> bool {
        self.immutables() > self.options.max_immutable_memtables
            || self.l0_tables.load(Ordering::Acquire) >= self.options.l0_stop_writes_trigger
            || self.options.memory.is_some_and(|m| {
                // Only while a flush can free room (an immutable memtable waits for it): the
                // active one alone is rotated when full, whatever its size.
                self.immutables() > 0 && self.memtable_bytes.load(Ordering::Acquire) >= m.memtables
            })
    }

    pub(crate) fn new_table_path(&self) -> (u64, PathBuf) {
        let id = self.next_table_id.fetch_add(1, Ordering::Relaxed);
        (id, table_path(&self.tables_dir, id))
    }

    /// A new value-log file's id and path (ids shared with the tables: never reused).
    pub(crate) fn new_blob_path(&self) -> (u64, PathBuf) {
        let id = self.next_table_id.fetch_add(1, Ordering::Relaxed);
        (id, blob::blob_path(&self.tables_dir, id))
    }

    /// Whether a value goes to a value-log file.
    pub(crate) fn separates(&self, value: &[u8]) -> bool {
        let t = self.options.value_separation_threshold_bytes;
        t > 0 && value.len() as u64 >= t
    }

    pub(crate) fn tables_dir(&self) -> &Path {
        &self.tables_dir
    }

    pub(crate) fn driver(&self) -> &IoDriver {
        &self.driver
    }
}

/// The tree's tiered levels: the shape the store recorded (a store with tables and no record
/// was written before shapes existed: every level leveled), or else the options' (recorded now
/// unless read-only). A shape asked for explicitly that differs from the store's is refused:
/// the tables of a level are laid out for the shape they were written with.
async fn shape(
    options: &TreeOptions,
    state: &manifest::State,
    manifest: &Manifest,
    read_only: bool,
) -> Result<usize> {
    let recorded = state
        .shape
        .map(usize::from)
        .or_else(|| (!state.tables.is_empty()).then_some(0));
    let Some(recorded) = recorded else {
        if !read_only {
            let edit = manifest::Edit {
                shape: Some(options.tiered_levels as u8),
                ..manifest::Edit::default()
            };
            manifest.record(&edit).await?;
        }
        return Ok(options.tiered_levels);
    };
    if options.tiered_levels_explicit && options.tiered_levels != recorded {
        return Err(Error::invalid(
            "tiered_levels",
            format!(
                "this store's levels are shaped with {recorded} tiered levels (asked: {}); \
                 changing the shape of an existing store is not supported",
                options.tiered_levels
            ),
        ));
    }
    if recorded + 2 > options.level_count {
        return Err(Error::invalid(
            "level_count",
            format!(
                "this store has {recorded} tiered levels: level_count must be at least {}",
                recorded + 2
            ),
        ));
    }
    if state.shape.is_none() && !read_only {
        let edit = manifest::Edit {
            shape: Some(recorded as u8),
            ..manifest::Edit::default()
        };
        manifest.record(&edit).await?;
    }
    Ok(recorded)
}

/// The value a table holds for a version (`None`: a tombstone), read from its value-log file
/// if the table holds a pointer.
///
/// # Errors
/// [`Error::Corruption`] for a damaged value, or a pointer into a file `version` does not hold
/// (the table's meta block names every file its pointers reach; each is opened with it); I/O
/// errors.
pub(crate) async fn resolve(
    version: &Version,
    table: &Table,
    stored: table::Stored,
) -> Result<Option<Bytes>> {
    match stored {
        table::Stored::Value(v) => Ok(Some(v)),
        table::Stored::Tombstone => Ok(None),
        table::Stored::Blob(ptr) => match version.blob(ptr.file) {
            Some(f) => f.read(&ptr).await.map(Some),
            None => Err(Error::corruption(
                table.path(),
                0,
                CorruptionKind::BadTable {
                    reason: "a value-log pointer to a file the tree does not hold",
                },
            )),
        },
    }
}

fn table_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:012}.sst"))
}

/// The files in `dir` named `<id><suffix>` (tables, value-log files), by id.
async fn list_files(driver: &IoDriver, dir: &Path, suffix: &str) -> Result<Vec<(u64, PathBuf)>> {
    let entries = match driver.read_dir(dir).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for e in entries {
        if e.kind != EntryKind::File {
            continue;
        }
        let id = e
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(suffix))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(id) = id
            && seen.insert(id)
        {
            out.push((id, e.path));
        }
    }
    Ok(out)
}
