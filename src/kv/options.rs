//! Options of a store and of its transactions: builders with units in their names, defaults
//! documented, checked at open.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::platform::IoDriver;
use crate::wal::{RecoveryMode, SyncPolicy, WalOptions};

/// The largest `max_txn_bytes` accepted: the wal appends one transaction as one atomic batch,
/// and a batch is at most 1 GiB.
const MAX_TXN_BYTES_LIMIT: u64 = 1 << 30;

/// How a level's tables store their data blocks ([`DbOptions::compression`],
/// [`DbOptions::level_compression`]).
///
/// Each block says how it is stored, so a store reads tables of any compression whatever its
/// options: a change applies to the tables written from then on (flushes into L0, compactions
/// into the level), and a table moved down to a level as it is keeps its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compression {
    /// Blocks stored as they are: the cheapest to write and read.
    None,
    /// Blocks compressed with LZ4 (its raw block format): fast to compress and faster to
    /// decompress, for a modest ratio. A block that LZ4 does not shrink by at least 1/8 is stored as
    /// it is, and so is one whose contents exceed 64 MiB (a block of one very large value).
    Lz4,
}

/// Options of a [`Db`](super::Db).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DbOptions {
    pub(crate) sync_policy: SyncPolicy,
    pub(crate) recovery_mode: RecoveryMode,
    pub(crate) lock_timeout: Duration,
    pub(crate) max_key_bytes: u64,
    pub(crate) max_value_bytes: u64,
    pub(crate) max_txn_bytes: u64,
    pub(crate) max_conflict_history_bytes: u64,
    pub(crate) default_timeout: Option<Duration>,
    pub(crate) max_update_attempts: u32,
    pub(crate) wal_segment_size_bytes: u64,
    pub(crate) write_buffer_bytes: u64,
    pub(crate) max_immutable_memtables: usize,
    pub(crate) l0_compaction_trigger: usize,
    pub(crate) l0_stop_writes_trigger: Option<usize>,
    pub(crate) max_concurrent_compactions: usize,
    pub(crate) compaction_score_size_weight: f64,
    pub(crate) compaction_score_count_weight: f64,
    pub(crate) compaction_cooldown: Duration,
    pub(crate) table_target_bytes: u64,
    pub(crate) l1_target_bytes: u64,
    pub(crate) level_size_multiplier: u64,
    pub(crate) level_count: usize,
    pub(crate) tiered_levels: Option<usize>,
    pub(crate) block_size_bytes: usize,
    pub(crate) bloom_bits_per_key: u32,
    pub(crate) block_cache_bytes: u64,
    pub(crate) value_separation_threshold_bytes: u64,
    pub(crate) value_log_garbage_ratio: f64,
    pub(crate) memory_limit_bytes: Option<u64>,
    /// Every level's compression but those in `level_compression`.
    pub(crate) compression: Compression,
    /// Per level, set by [`DbOptions::level_compression`]; checked against `level_count` at
    /// open.
    pub(crate) level_compression: BTreeMap<usize, Compression>,
    pub(crate) driver: Option<IoDriver>,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            sync_policy: SyncPolicy::Immediate,
            recovery_mode: RecoveryMode::default(),
            lock_timeout: Duration::from_secs(1),
            max_key_bytes: 32 << 10,
            max_value_bytes: 16 << 20,
            max_txn_bytes: 256 << 20,
            max_conflict_history_bytes: 64 << 20,
            default_timeout: None,
            max_update_attempts: 32,
            wal_segment_size_bytes: 64 << 20,
            write_buffer_bytes: 64 << 20,
            max_immutable_memtables: 2,
            l0_compaction_trigger: 4,
            l0_stop_writes_trigger: None,
            max_concurrent_compactions: 2,
            compaction_score_size_weight: 1.0,
            compaction_score_count_weight: 0.0,
            compaction_cooldown: Duration::ZERO,
            table_target_bytes: 32 << 20,
            l1_target_bytes: 256 << 20,
            level_size_multiplier: 10,
            level_count: 7,
            tiered_levels: None,
            block_size_bytes: 4 << 10,
            bloom_bits_per_key: 10,
            block_cache_bytes: 64 << 20,
            value_separation_threshold_bytes: 4 << 10,
            value_log_garbage_ratio: 0.5,
            memory_limit_bytes: None,
            compression: Compression::Lz4,
            level_compression: BTreeMap::from([(0, Compression::None)]),
            driver: None,
        }
    }
}

impl DbOptions {
    /// When a commit is acknowledged, for commits that do not choose a [`Durability`]: the wal's
    /// policy. Default: [`SyncPolicy::Immediate`]: a commit returns once an fdatasync covers it,
    /// and commits that queue up while a sync runs share the next one (grouped commit).
    pub fn sync_policy(mut self, policy: SyncPolicy) -> Self {
        self.sync_policy = policy;
        self
    }

    /// What opening does with a damaged wal tail (see [`RecoveryMode`]). Default:
    /// [`RecoveryMode::TolerateTornTail`].
    pub fn recovery_mode(mut self, mode: RecoveryMode) -> Self {
        self.recovery_mode = mode;
        self
    }

    /// How long [`Db::open`](super::Db::open) waits for another handle to release the
    /// directory before it fails with [`Error::Locked`]. Default: 1 s.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// The largest key accepted ([`Error::TooLarge`] beyond). Default: 32 KiB; accepted:
    /// 1 B to 16 MiB.
    pub fn max_key_bytes(mut self, bytes: u64) -> Self {
        self.max_key_bytes = bytes;
        self
    }

    /// The largest value accepted ([`Error::TooLarge`] beyond). Default: 16 MiB; accepted: up
    /// to `max_txn_bytes`.
    pub fn max_value_bytes(mut self, bytes: u64) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    /// The largest write set of one transaction, as encoded in its wal record (keys, values and
    /// 17 bytes per write); a write beyond it fails with [`Error::TooLarge`] and is not taken,
    /// the transaction stays usable. Default: 256 MiB; accepted: 1 KiB to 1 GiB.
    pub fn max_txn_bytes(mut self, bytes: u64) -> Self {
        self.max_txn_bytes = bytes;
        self
    }

    /// The memory kept for conflict detection: the keys written by commits newer than the
    /// oldest active snapshot. When it is full, the oldest commits are forgotten, and a
    /// transaction whose snapshot is older than what is kept fails its commit with a retryable
    /// [`Error::Conflict`] ([`ConflictKind::TooOld`](crate::ConflictKind::TooOld)).
    /// Default: 64 MiB; accepted: at least 64 KiB.
    pub fn max_conflict_history_bytes(mut self, bytes: u64) -> Self {
        self.max_conflict_history_bytes = bytes;
        self
    }

    /// The timeout of transactions that do not set their own. Default: none.
    pub fn default_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.default_timeout = timeout.into();
        self
    }

    /// How many times [`Db::update`](super::Db::update) runs a transaction that ends in a
    /// conflict before it gives up with [`Error::RetriesExhausted`]. Default: 32; accepted: 1
    /// and more. Optimistic transactions on one hot key have one winner per round: with many
    /// tasks updating the same key, raise it.
    pub fn max_update_attempts(mut self, attempts: u32) -> Self {
        self.max_update_attempts = attempts;
        self
    }

    /// The size of the wal's segment files. Default: 64 MiB (see
    /// [`WalOptions::segment_size_bytes`]).
    pub fn wal_segment_size_bytes(mut self, bytes: u64) -> Self {
        self.wal_segment_size_bytes = bytes;
        self
    }

    /// The size at which the active memtable becomes immutable and is flushed to a table in
    /// the background (its commits are then dropped from the wal). Default: 64 MiB; accepted:
    /// 64 KiB to 4 GiB. A commit larger than it fills a memtable of its own.
    pub fn write_buffer_bytes(mut self, bytes: u64) -> Self {
        self.write_buffer_bytes = bytes;
        self
    }

    /// How many immutable memtables may wait for their flush before commits wait (a future
    /// that resolves when a flush finishes; the time is counted in `DbStats::stall_micros`).
    /// Default: 2; accepted: 1 to 64.
    pub fn max_immutable_memtables(mut self, count: usize) -> Self {
        self.max_immutable_memtables = count;
        self
    }

    /// How many L0 tables (flushed memtables) start a compaction into L1. Default: 4;
    /// accepted: 1 to 64. Compactions run in a background task of their own, one at a time,
    /// the level with the highest score first (L0: tables over this trigger; L1 and below:
    /// bytes over the level's target).
    pub fn l0_compaction_trigger(mut self, tables: usize) -> Self {
        self.l0_compaction_trigger = tables;
        self
    }

    /// How many L0 tables make commits wait until a compaction brings L0 back under it (every
    /// L0 table is one more place a read looks; RocksDB's `level0_stop_writes_trigger`).
    /// Default: 12, or 3 × `l0_compaction_trigger` if that is more; accepted: above
    /// `l0_compaction_trigger`, up to 1024.
    pub fn l0_stop_writes_trigger(mut self, tables: usize) -> Self {
        self.l0_stop_writes_trigger = Some(tables);
        self
    }

    /// How many compactions may run at once (each in a task of its own, on tables no other one
    /// touches; flushes run apart from them). Default: 2; accepted: 1 to 64.
    pub fn max_concurrent_compactions(mut self, count: usize) -> Self {
        self.max_concurrent_compactions = count;
        self
    }

    /// How a sorted level's compaction score weighs its size and its table count (wildcat's
    /// scoring): `bytes / target × size_weight + tables / (target / table_target_bytes) ×
    /// count_weight`; a level scoring 1 or more is due, the highest first. L0 scores its table
    /// count over `l0_compaction_trigger`. Default: 1 and 0 (size alone, as RocksDB); a count
    /// weight favours levels of many small tables (after deletes shrank them). Accepted: finite,
    /// 0 or more, not both 0.
    pub fn compaction_score_weights(mut self, size_weight: f64, count_weight: f64) -> Self {
        self.compaction_score_size_weight = size_weight;
        self.compaction_score_count_weight = count_weight;
        self
    }

    /// A pause between a background compaction task's compactions, to leave the disk to
    /// foreground work (wildcat's cooldown); skipped while commits wait for room. Default: none;
    /// accepted: up to 1 hour.
    pub fn compaction_cooldown(mut self, pause: Duration) -> Self {
        self.compaction_cooldown = pause;
        self
    }

    /// The size compaction closes a table at. Default: 32 MiB; accepted: 64 KiB to 4 GiB.
    pub fn table_target_bytes(mut self, bytes: u64) -> Self {
        self.table_target_bytes = bytes;
        self
    }

    /// The size L1 is kept under: past it, compaction moves a table of L1 (round robin by key)
    /// into L2. Default: 256 MiB; accepted: 64 KiB to 1 TiB.
    pub fn l1_target_bytes(mut self, bytes: u64) -> Self {
        self.l1_target_bytes = bytes;
        self
    }

    /// How much larger each level's target is than the one above it (L2 = L1 × this, …).
    /// Default: 10; accepted: 2 to 100.
    pub fn level_size_multiplier(mut self, multiplier: u64) -> Self {
        self.level_size_multiplier = multiplier;
        self
    }

    /// Levels of the tree, L0 included: the last one is never compacted further. Default: 7
    /// (L0–L6); accepted: 2 to 16.
    pub fn level_count(mut self, levels: usize) -> Self {
        self.level_count = levels;
        self
    }

    /// Levels L1 to L*n* are *size-tiered*, those below *leveled* (wildcat's shape). A tiered
    /// level holds several sorted runs whose key ranges overlap, each one table: a compaction
    /// into it writes its inputs as a new run without rewriting the runs already there, and the
    /// level is merged whole into the next once it holds `l0_compaction_trigger` runs or its
    /// target size. Fewer rewrites (lower write amplification, faster loads) for more runs to
    /// look in on a read (each run has a bloom filter; a scan merges them). A leveled level is
    /// one sorted run kept at its target by compacting one table at a time into the next.
    /// Default: 2, or `level_count − 2` if less; 0 (every level leveled, as RocksDB's default)
    /// under [`DbOptions::memory_limit_bytes`]: a tiered level keeps the older versions of its
    /// runs until it is merged, so the tables hold more (1.84× the data after a 10M-record load
    /// against 1.21× leveled), and their indexes and filters, which a limit must hold, grow
    /// with them. Accepted: 0 to `level_count − 2` (the last level and the one above it are
    /// leveled). A store keeps the shape it was created with: asked for another, its open is
    /// refused; left to the default, the store's own is used.
    pub fn tiered_levels(mut self, levels: usize) -> Self {
        self.tiered_levels = Some(levels);
        self
    }

    /// The size of a table's data blocks, the unit of a read from disk. Default: 4 KiB;
    /// accepted: 64 B to 4 MiB.
    pub fn block_size_bytes(mut self, bytes: usize) -> Self {
        self.block_size_bytes = bytes;
        self
    }

    /// Bloom filter bits per key of each table (10: about 1% false positives; 0: no filter).
    /// Default: 10; accepted: 0 to 32.
    pub fn bloom_bits_per_key(mut self, bits: u32) -> Self {
        self.bloom_bits_per_key = bits;
        self
    }

    /// The memory for tables' data blocks read from disk (shared by every table; index and
    /// filter blocks are held apart, per open table). Default: 64 MiB; 0: no cache (every
    /// read goes to the file).
    pub fn block_cache_bytes(mut self, bytes: u64) -> Self {
        self.block_cache_bytes = bytes;
        self
    }

    /// Key-value separation (WiscKey's, RocksDB's BlobDB): a value of this many bytes or more
    /// is written by the flush that takes it into a value-log file beside the tables, and the
    /// table holds a pointer to it; compactions then move the pointer, not the value, so a
    /// large value is written twice in all (the wal and its value-log file) instead of once
    /// per level. A read of such a value costs one more read from disk. Values already in
    /// tables are moved out when a compaction rewrites them. Default: 4 KiB (a value that
    /// fills a data block of its own gains nothing from sitting in one); 0: off (values stay
    /// in the tables; pointers already written stay readable, and compactions that rewrite
    /// them bring the values back into the tables).
    pub fn value_separation_threshold_bytes(mut self, bytes: u64) -> Self {
        self.value_separation_threshold_bytes = bytes;
        self
    }

    /// When a value-log file's live values are rewritten: once at least this fraction of its
    /// bytes is garbage (values no table points to: overwritten, deleted, or dropped by
    /// compaction), every compaction that meets a pointer into it moves the value into a new
    /// file, and when no compaction is due the tables still pointing into it are rewritten in
    /// place, one at a time; the file is removed once nothing points into it. Default: 0.5;
    /// accepted: above 0 up to 1 (1: only files wholly garbage go, without rewriting).
    pub fn value_log_garbage_ratio(mut self, ratio: f64) -> Self {
        self.value_log_garbage_ratio = ratio;
        self
    }

    /// A bound on the store's memory: memtables, block cache, the tables' indexes and filters,
    /// the conflict history and the buffers of flushes and compactions together stay under it.
    /// Writers wait (the commit's future resolves once a flush frees room) instead of memory
    /// growing. Default: none (each part bounded by its own option); accepted: 16 MiB to 1 TiB.
    ///
    /// The limit is split: half for memtables (`write_buffer_bytes` is lowered to fit
    /// `max_immutable_memtables + 2` of them), up to a sixteenth for the conflict history
    /// (`max_conflict_history_bytes` lowered to fit), the flush and compaction buffers, and the
    /// rest for the tables' indexes and filters (held in memory while a table is open) and the
    /// block cache, whose budget shrinks as the tables' indexes and filters grow (never above
    /// `block_cache_bytes`). What is not counted: open transactions' write sets (bounded by
    /// `max_txn_bytes` each), the wal's buffers and the allocator's own overhead. With more
    /// data than the indexes and filters fit in, the limit cannot hold; `DbStats::memory`
    /// reports it.
    pub fn memory_limit_bytes(mut self, bytes: u64) -> Self {
        self.memory_limit_bytes = Some(bytes);
        self
    }

    /// The compression of every level's tables' data blocks; clears what
    /// [`level_compression`](Self::level_compression) set before. Default: L0
    /// [`Compression::None`] (a flush, which commits may wait for, stays cheap, and L0 tables
    /// are short-lived), L1 and below [`Compression::Lz4`].
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self.level_compression.clear();
        self
    }

    /// The compression of one level's tables' data blocks (0: L0, the flushed memtables), over
    /// what [`compression`](Self::compression) set. Default: see `compression`; accepted:
    /// levels below `level_count` (checked at open, so the two may be set in either order).
    pub fn level_compression(mut self, level: usize, compression: Compression) -> Self {
        self.level_compression.insert(level, compression);
        self
    }

    /// The compression level `level`'s tables are written with.
    pub(crate) fn compression_of(&self, level: usize) -> Compression {
        self.level_compression
            .get(&level)
            .copied()
            .unwrap_or(self.compression)
    }

    /// The I/O executor to use (e.g. one shared by several stores); default: one of its own.
    pub fn driver(mut self, driver: IoDriver) -> Self {
        self.driver = Some(driver);
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_key_bytes == 0 || self.max_key_bytes > 16 << 20 {
            return Err(Error::invalid("max_key_bytes", "must be 1 B to 16 MiB"));
        }
        if !(1 << 10..=MAX_TXN_BYTES_LIMIT).contains(&self.max_txn_bytes) {
            return Err(Error::invalid("max_txn_bytes", "must be 1 KiB to 1 GiB"));
        }
        if self.max_value_bytes > self.max_txn_bytes {
            return Err(Error::invalid(
                "max_value_bytes",
                "must not exceed max_txn_bytes",
            ));
        }
        if self.max_conflict_history_bytes < 64 << 10 {
            return Err(Error::invalid(
                "max_conflict_history_bytes",
                "must be at least 64 KiB",
            ));
        }
        if self.max_update_attempts == 0 {
            return Err(Error::invalid("max_update_attempts", "must be at least 1"));
        }
        if !(64 << 10..=4 << 30).contains(&self.write_buffer_bytes) {
            return Err(Error::invalid(
                "write_buffer_bytes",
                "must be 64 KiB to 4 GiB",
            ));
        }
        if !(1..=64).contains(&self.max_immutable_memtables) {
            return Err(Error::invalid("max_immutable_memtables", "must be 1 to 64"));
        }
        if !(1..=64).contains(&self.l0_compaction_trigger) {
            return Err(Error::invalid("l0_compaction_trigger", "must be 1 to 64"));
        }
        if self.l0_stop_writes() <= self.l0_compaction_trigger || self.l0_stop_writes() > 1024 {
            return Err(Error::invalid(
                "l0_stop_writes_trigger",
                "must be above l0_compaction_trigger, up to 1024",
            ));
        }
        if !(1..=64).contains(&self.max_concurrent_compactions) {
            return Err(Error::invalid(
                "max_concurrent_compactions",
                "must be 1 to 64",
            ));
        }
        let (size_w, count_w) = (
            self.compaction_score_size_weight,
            self.compaction_score_count_weight,
        );
        if !(size_w.is_finite() && count_w.is_finite())
            || size_w < 0.0
            || count_w < 0.0
            || size_w + count_w == 0.0
        {
            return Err(Error::invalid(
                "compaction_score_weights",
                "must be finite, 0 or more, and not both 0",
            ));
        }
        if self.compaction_cooldown > Duration::from_secs(3600) {
            return Err(Error::invalid(
                "compaction_cooldown",
                "must be at most 1 hour",
            ));
        }
        if !(64 << 10..=4 << 30).contains(&self.table_target_bytes) {
            return Err(Error::invalid(
                "table_target_bytes",
                "must be 64 KiB to 4 GiB",
            ));
        }
        if !(64 << 10..=1 << 40).contains(&self.l1_target_bytes) {
            return Err(Error::invalid("l1_target_bytes", "must be 64 KiB to 1 TiB"));
        }
        if !(2..=100).contains(&self.level_size_multiplier) {
            return Err(Error::invalid("level_size_multiplier", "must be 2 to 100"));
        }
        if !(2..=16).contains(&self.level_count) {
            return Err(Error::invalid("level_count", "must be 2 to 16"));
        }
        if !(self.value_log_garbage_ratio > 0.0 && self.value_log_garbage_ratio <= 1.0) {
            return Err(Error::invalid(
                "value_log_garbage_ratio",
                "must be above 0, up to 1",
            ));
        }
        if let Some(n) = self.tiered_levels
            && n > self.level_count.saturating_sub(2)
        {
            return Err(Error::invalid(
                "tiered_levels",
                format!(
                    "must be at most level_count − 2 ({}): the last level and the one above it are leveled",
                    self.level_count.saturating_sub(2)
                ),
            ));
        }
        if let Some(limit) = self.memory_limit_bytes
            && !(16 << 20..=1 << 40).contains(&limit)
        {
            return Err(Error::invalid(
                "memory_limit_bytes",
                "must be 16 MiB to 1 TiB",
            ));
        }
        if let Some(level) = self
            .level_compression
            .keys()
            .find(|&&l| l >= self.level_count)
        {
            return Err(Error::invalid(
                "level_compression",
                format!(
                    "level {level} is not below level_count ({})",
                    self.level_count
                ),
            ));
        }
        self.tree_options().table.validate()
    }

    /// `tiered_levels`, or its default: 0 under a memory limit, else 2 (or `level_count − 2`
    /// if less).
    fn tiered(&self) -> usize {
        self.tiered_levels.unwrap_or_else(|| {
            if self.memory_limit_bytes.is_some() {
                0
            } else {
                self.level_count.saturating_sub(2).min(2)
            }
        })
    }

    /// `l0_stop_writes_trigger`, or its default: 12, or 3 × `l0_compaction_trigger` if more.
    fn l0_stop_writes(&self) -> usize {
        self.l0_stop_writes_trigger
            .unwrap_or_else(|| (3 * self.l0_compaction_trigger).max(12))
    }

    /// How `memory_limit_bytes` is split (see there); `None` without a limit.
    pub(crate) fn memory_budget(&self) -> Option<MemoryBudget> {
        let limit = self.memory_limit_bytes?;
        let slots = self.max_immutable_memtables as u64 + 2;
        let memtables = limit / 2;
        let write_buffer_bytes = self.write_buffer_bytes.min(memtables / slots).max(64 << 10);
        let conflict_history = self
            .max_conflict_history_bytes
            .min(limit / 16)
            .max(64 << 10);
        // A flush and `max_concurrent_compactions` compactions at once: each two write buffers
        // (a table's, a value-log file's) and its table's index and filter builders (about an
        // eighth of the table it writes).
        let table = super::tree::table::TableOptions::default();
        let compactions = self.max_concurrent_compactions as u64;
        // Each job's write buffers: its table's and its value-log file's.
        let jobs = (1 + compactions) * 2 * table.write_buffer_bytes as u64
            + write_buffer_bytes / 8
            + compactions * self.table_target_bytes / 8;
        Some(MemoryBudget {
            limit,
            memtables,
            write_buffer_bytes,
            conflict_history,
            tables: limit.saturating_sub(memtables + conflict_history + jobs),
        })
    }

    /// The conflict history's bound (lowered under a memory limit).
    pub(crate) fn conflict_history_bytes(&self) -> u64 {
        self.memory_budget()
            .map_or(self.max_conflict_history_bytes, |b| b.conflict_history)
    }

    /// The tree's shape.
    pub(crate) fn tree_options(&self) -> super::tree::TreeOptions {
        let budget = self.memory_budget();
        super::tree::TreeOptions {
            write_buffer_bytes: budget
                .as_ref()
                .map_or(self.write_buffer_bytes, |b| b.write_buffer_bytes),
            memory: budget,
            max_immutable_memtables: self.max_immutable_memtables,
            l0_compaction_trigger: self.l0_compaction_trigger,
            l0_stop_writes_trigger: self.l0_stop_writes(),
            max_concurrent_compactions: self.max_concurrent_compactions,
            compaction_score_size_weight: self.compaction_score_size_weight,
            compaction_score_count_weight: self.compaction_score_count_weight,
            compaction_cooldown: self.compaction_cooldown,
            table_target_bytes: self.table_target_bytes,
            l1_target_bytes: self.l1_target_bytes,
            level_size_multiplier: self.level_size_multiplier,
            level_count: self.level_count,
            tiered_levels: self.tiered(),
            tiered_levels_explicit: self.tiered_levels.is_some(),
            block_cache_bytes: self.block_cache_bytes,
            value_separation_threshold_bytes: self.value_separation_threshold_bytes,
            value_log_garbage_ratio: self.value_log_garbage_ratio,
            level_compression: (0..self.level_count)
                .map(|l| self.compression_of(l))
                .collect(),
            table: super::tree::table::TableOptions::default()
                .block_size_bytes(self.block_size_bytes)
                .bloom_bits_per_key(self.bloom_bits_per_key),
        }
    }

    /// The wal's options: a transaction is one atomic batch of record chunks of at most ~1 MiB
    /// (plus one write), so the wal's entry and batch bounds follow from the store's.
    pub(crate) fn wal_options(&self) -> WalOptions {
        let chunk_max = super::record::CHUNK_BYTES as u64
            + super::record::HEADER_BYTES as u64
            + self.max_key_bytes
            + self.max_value_bytes
            + super::record::WRITE_OVERHEAD_BYTES as u64;
        let batch_max = (self.max_txn_bytes + (self.max_txn_bytes >> 4) + (1 << 20))
            .clamp(64 << 20, MAX_TXN_BYTES_LIMIT);
        let mut wal = WalOptions::default()
            .segment_size_bytes(self.wal_segment_size_bytes)
            .max_entry_bytes(chunk_max)
            .max_pending_bytes(batch_max)
            .sync_policy(self.sync_policy)
            .recovery_mode(self.recovery_mode)
            .lock_timeout(self.lock_timeout)
            // The store reads its wal only at open: a window of recent entries would cost every
            // commit its bookkeeping and serve nothing.
            .read_cache_bytes(0);
        if let Some(driver) = &self.driver {
            wal = wal.driver(driver.clone());
        }
        wal
    }
}

/// How a memory limit is split (see [`DbOptions::memory_limit_bytes`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemoryBudget {
    pub(crate) limit: u64,
    /// Every memtable together: commits wait at this.
    pub(crate) memtables: u64,
    /// The active memtable's size at rotation.
    pub(crate) write_buffer_bytes: u64,
    pub(crate) conflict_history: u64,
    /// The tables' indexes and filters, and the block cache.
    pub(crate) tables: u64,
}

/// The isolation level of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Isolation {
    /// Snapshot isolation: reads see the snapshot taken at begin; a commit fails with
    /// [`Error::Conflict`] if another transaction wrote one of its keys and committed after
    /// that snapshot (first committer wins). Write skew is possible: two transactions that each
    /// read what the other writes can both commit (see the [module docs](super)).
    Snapshot,
    /// Serializable (the default): snapshot isolation plus, at commit, a check that no key it
    /// read and no range it scanned was written by a transaction that committed after its
    /// snapshot. Optimistic: nothing blocks, a conflict is found at commit.
    #[default]
    Serializable,
}

/// How durable one commit is before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Acknowledged once the record is written to the OS: it survives a crash of the process,
    /// not of the machine. Under a sync policy that syncs every batch ([`SyncPolicy::Immediate`],
    /// [`SyncPolicy::Grouped`]) the commit still waits for that sync: `Buffered` makes a
    /// commit faster only in stores whose policy is [`SyncPolicy::None`] or
    /// [`SyncPolicy::Periodic`], and never makes it wait longer than the policy.
    Buffered,
    /// Acknowledged once an fdatasync covers the record, whatever the store's policy.
    Durable,
}

/// Options of one transaction ([`Db::begin`](super::Db::begin)).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TxnOptions {
    pub(crate) isolation: Isolation,
    pub(crate) read_only: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) durability: Option<Durability>,
}

impl TxnOptions {
    /// The isolation level. Default: [`Isolation::Serializable`].
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// A read-only transaction: writes fail with [`Error::TxnReadOnly`]; it never conflicts.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// The time after which the transaction expires: every later call fails with
    /// [`Error::TxnExpired`] and its snapshot is released. Default: the store's
    /// [`DbOptions::default_timeout`].
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeout = timeout.into();
        self
    }

    /// The durability of its commit. Default: the store's sync policy.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = Some(durability);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_is_per_level_and_checked_against_the_level_count() {
        let levels = |o: &DbOptions| o.tree_options().level_compression;
        let (none, lz4) = (Compression::None, Compression::Lz4);
        let defaults = DbOptions::default();
        assert_eq!(levels(&defaults), [none, lz4, lz4, lz4, lz4, lz4, lz4]);
        let every = DbOptions::default().level_count(3).compression(lz4);
        assert_eq!(levels(&every), [lz4, lz4, lz4]);
        // `compression` clears what `level_compression` set before it, not after.
        let one = DbOptions::default()
            .level_compression(2, lz4)
            .compression(none)
            .level_compression(1, lz4)
            .level_count(3);
        assert_eq!(levels(&one), [none, lz4, none]);
        assert!(one.validate().is_ok());
        let table = one.tree_options();
        assert_eq!(table.table_options(1).compression, lz4);
        assert_eq!(table.table_options(2).compression, none);
        // A level past the count is refused at open, whichever was set first.
        let past = DbOptions::default()
            .level_compression(5, lz4)
            .level_count(5);
        assert!(matches!(
            past.validate(),
            Err(Error::InvalidArgument {
                name: "level_compression",
                ..
            })
        ));
        assert!(past.level_count(6).validate().is_ok());
    }
}
