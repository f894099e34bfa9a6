//! `Db::stats`: a snapshot of the store's figures, with a table as its `Display`.

use std::fmt;

use super::options::DbOptions;
use super::shared::{Counters, Shared};
use crate::types::SeqNo;
use crate::wal::WalStats;

/// One level of the tree.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LevelStats {
    /// Tables in the level.
    pub tables: u64,
    /// Their bytes on disk.
    pub bytes: u64,
    /// Its compaction score (L0: tables over `l0_compaction_trigger`; below: bytes over the
    /// level's target; 1 or more: due). 0 for the last level.
    pub score: f64,
}

/// A snapshot of a store's figures ([`Db::stats`](super::Db::stats)).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DbStats {
    /// The options the store was opened with.
    pub options: DbOptions,
    /// The last sequence number assigned to a commit.
    pub last_seq: SeqNo,
    /// The newest commit visible to new transactions.
    pub committed_seq: SeqNo,
    /// Versions in the memtables, active and immutable (tombstones included).
    pub memtable_versions: u64,
    /// Approximate bytes of the memtables.
    pub memtable_bytes: u64,
    /// Immutable memtables waiting for their flush.
    pub immutable_memtables: u64,
    /// Per level (L0 first): table count and bytes on disk.
    pub levels: Vec<LevelStats>,
    /// Flushes done (memtables written as L0 tables).
    pub flushes: u64,
    /// Compactions done.
    pub compactions: u64,
    /// Bytes written by flushes.
    pub bytes_flushed: u64,
    /// Bytes read and written by compactions.
    pub bytes_compacted_in: u64,
    /// Bytes written by compactions.
    pub bytes_compacted_out: u64,
    /// What flushes and compactions would have written had every data block been stored
    /// uncompressed: against `bytes_flushed + bytes_compacted_out` (what they wrote), what
    /// compression saved ([`DbOptions::compression`]).
    pub bytes_written_uncompressed: u64,
    /// Write amplification of the tree: bytes written to tables (flushes and compactions) per
    /// byte flushed (0 before the first flush). The wal's bytes are not counted.
    pub write_amplification: f64,
    /// Block cache: hits, misses, bytes held and its budget.
    pub block_cache_hits: u64,
    /// See `block_cache_hits`.
    pub block_cache_misses: u64,
    /// See `block_cache_hits`.
    pub block_cache_bytes: u64,
    /// The block cache's budget now (under a memory limit it shrinks as the tables' indexes
    /// and filters grow).
    pub block_cache_capacity_bytes: u64,
    /// The open tables' indexes and filters, held in memory outside the block cache.
    pub table_meta_bytes: u64,
    /// What the store counts against `memory_limit_bytes`: memtables, block cache, tables'
    /// indexes and filters, conflict history.
    pub memory_bytes: u64,
    /// `DbOptions::memory_limit_bytes`, if set.
    pub memory_limit_bytes: Option<u64>,
    /// Space amplification of the tables: their bytes over the last non-empty level's (the
    /// estimate RocksDB reports; 1 when everything is in one level, 0 with no table).
    pub space_amplification: f64,
    /// Value-log files (key-value separation, [`DbOptions::value_separation_threshold_bytes`])
    /// and their bytes on disk.
    pub value_log_files: u64,
    /// See `value_log_files`.
    pub value_log_bytes: u64,
    /// Of `value_log_bytes`, the values no table points to any more (overwritten, deleted or
    /// dropped by compaction): removed once their file is rewritten
    /// ([`DbOptions::value_log_garbage_ratio`]) or wholly garbage.
    pub value_log_garbage_bytes: u64,
    /// Bytes written to value-log files by flushes and compactions (counted in
    /// `bytes_flushed` and `bytes_compacted_out` too).
    pub value_log_bytes_written: u64,
    /// Whether a flush is running now.
    pub flush_running: bool,
    /// Compaction tasks running now (at most `max_concurrent_compactions`).
    pub compactions_running: u64,
    /// Microseconds commits waited for a flush (backpressure).
    pub stall_micros: u64,
    /// The background work's error, if a flush or compaction failed (commits that must wait
    /// for room then fail with it).
    pub background_error: Option<String>,
    /// Transactions begun and not yet ended.
    pub active_txns: u64,
    /// Snapshots held by read-write transactions not yet ended or expired (they keep conflict
    /// history; read-only transactions hold none).
    pub active_snapshots: u64,
    /// The oldest snapshot held, if any.
    pub oldest_snapshot: Option<SeqNo>,
    /// Commits through this handle (read-only ones not counted).
    pub commits: u64,
    /// Conflicts of snapshot-isolation transactions.
    pub conflicts_snapshot: u64,
    /// Conflicts of serializable transactions.
    pub conflicts_serializable: u64,
    /// Retries made by `Db::update`.
    pub retries: u64,
    /// Transactions rolled back (explicitly or dropped).
    pub rollbacks: u64,
    /// Transactions that expired.
    pub expired: u64,
    /// Prepared transactions not yet resolved.
    pub prepared: u64,
    /// Keys in the conflict history.
    pub history_keys: u64,
    /// Approximate bytes of the conflict history.
    pub history_bytes: u64,
    /// Transactions with snapshots below this seq can no longer be validated.
    pub history_floor: SeqNo,
    /// The wal's figures.
    pub wal: WalStats,
}

pub(crate) fn collect(shared: &Shared) -> DbStats {
    let o = shared.oracle.figures();
    let c = &shared.counters;
    let current = shared.tree.current();
    let t = &shared.tree.figures;
    let cache = shared.tree.cache.figures();
    let scores = shared.tree.scores();
    let memory = shared.tree.memory();
    let levels: Vec<LevelStats> = std::iter::once(&current.version.l0)
        .chain(current.version.levels.iter())
        .enumerate()
        .map(|(n, tables)| LevelStats {
            tables: tables.len() as u64,
            bytes: tables.iter().map(|t| t.table.file_bytes()).sum(),
            score: scores.get(n).copied().unwrap_or(0.0),
        })
        .collect();
    let table_bytes: u64 = levels.iter().map(|l| l.bytes).sum();
    let last_level_bytes = levels.iter().rev().map(|l| l.bytes).find(|&b| b > 0);
    let (flush_running, compactions_running) = shared.background_running();
    let blob_live = current.version.blob_live();
    let value_log_bytes: u64 = current.version.blobs.values().map(|b| b.file_bytes()).sum();
    let value_log_garbage_bytes: u64 = current
        .version
        .blobs
        .values()
        .map(|b| {
            let values = b
                .file_bytes()
                .saturating_sub(super::tree::blob::BLOB_HEADER_LEN);
            values.saturating_sub(blob_live.get(&b.id).map_or(0, |l| l.bytes))
        })
        .sum();
    let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    DbStats {
        options: shared.options.clone(),
        last_seq: SeqNo(o.last_seq),
        committed_seq: SeqNo(o.visible),
        memtable_versions: current
            .memtables
            .iter()
            .map(|m| m.mem.versions() as u64)
            .sum(),
        memtable_bytes: memory.memtable_bytes,
        immutable_memtables: current.memtables.len() as u64 - 1,
        levels,
        flushes: get(&t.flushes),
        compactions: get(&t.compactions),
        bytes_flushed: get(&t.bytes_flushed),
        bytes_compacted_in: get(&t.bytes_compacted_in),
        bytes_compacted_out: get(&t.bytes_compacted_out),
        bytes_written_uncompressed: get(&t.bytes_written_uncompressed),
        write_amplification: {
            let flushed = get(&t.bytes_flushed);
            if flushed == 0 {
                0.0
            } else {
                (flushed + get(&t.bytes_compacted_out)) as f64 / flushed as f64
            }
        },
        block_cache_hits: cache.hits,
        block_cache_misses: cache.misses,
        block_cache_bytes: cache.bytes,
        block_cache_capacity_bytes: memory.block_cache_capacity,
        table_meta_bytes: memory.table_meta_bytes,
        memory_bytes: memory.memtable_bytes
            + cache.bytes
            + memory.table_meta_bytes
            + o.history_bytes,
        memory_limit_bytes: shared.options.memory_limit_bytes,
        space_amplification: last_level_bytes.map_or(0.0, |b| table_bytes as f64 / b as f64),
        value_log_files: current.version.blobs.len() as u64,
        value_log_bytes,
        value_log_garbage_bytes,
        value_log_bytes_written: get(&t.value_log_bytes_written),
        flush_running,
        compactions_running: compactions_running as u64,
        stall_micros: get(&t.stall_micros),
        background_error: shared.background_error().map(|e| e.to_string()),
        active_txns: Counters::get(&c.active),
        active_snapshots: o.active_snapshots,
        oldest_snapshot: o.oldest_snapshot.map(SeqNo),
        commits: Counters::get(&c.commits),
        conflicts_snapshot: Counters::get(&c.conflicts_snapshot),
        conflicts_serializable: Counters::get(&c.conflicts_serializable),
        retries: Counters::get(&c.retries),
        rollbacks: Counters::get(&c.rollbacks),
        expired: Counters::get(&c.expired),
        prepared: o.prepared,
        history_keys: o.history_keys,
        history_bytes: o.history_bytes,
        history_floor: SeqNo(o.history_floor),
        wal: shared.wal.stats(),
    }
}

impl fmt::Display for DbStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        let levels = self
            .levels
            .iter()
            .enumerate()
            .map(|(n, l)| format!("L{n} {}/{}/{:.2}", l.tables, l.bytes, l.score))
            .collect::<Vec<_>>()
            .join(", ");
        let rows: [(&str, String); 33] = [
            ("sync policy", format!("{:?}", o.sync_policy)),
            (
                "max key / value / txn bytes",
                format!(
                    "{} / {} / {}",
                    o.max_key_bytes, o.max_value_bytes, o.max_txn_bytes
                ),
            ),
            ("default timeout", format!("{:?}", o.default_timeout)),
            ("last seq", self.last_seq.to_string()),
            ("committed seq", self.committed_seq.to_string()),
            ("memtable versions", self.memtable_versions.to_string()),
            ("memtable bytes", self.memtable_bytes.to_string()),
            ("immutable memtables", self.immutable_memtables.to_string()),
            ("levels (tables/bytes/score)", levels),
            (
                "flushes / compactions",
                format!("{} / {}", self.flushes, self.compactions),
            ),
            (
                "table bytes written / uncompressed",
                format!(
                    "{} / {}",
                    self.bytes_flushed + self.bytes_compacted_out,
                    self.bytes_written_uncompressed
                ),
            ),
            (
                "write amplification / stall µs",
                format!("{:.2} / {}", self.write_amplification, self.stall_micros),
            ),
            (
                "block cache hits / misses / bytes",
                format!(
                    "{} / {} / {}",
                    self.block_cache_hits, self.block_cache_misses, self.block_cache_bytes
                ),
            ),
            (
                "memory bytes / limit",
                format!(
                    "{} / {}",
                    self.memory_bytes,
                    self.memory_limit_bytes
                        .map_or("-".into(), |l| l.to_string())
                ),
            ),
            (
                "block cache capacity / table meta bytes",
                format!(
                    "{} / {}",
                    self.block_cache_capacity_bytes, self.table_meta_bytes
                ),
            ),
            (
                "space amplification / flushing / compactions running",
                format!(
                    "{:.2} / {} / {}",
                    self.space_amplification, self.flush_running, self.compactions_running
                ),
            ),
            (
                "value-log files / bytes / garbage",
                format!(
                    "{} / {} / {}",
                    self.value_log_files, self.value_log_bytes, self.value_log_garbage_bytes
                ),
            ),
            (
                "background error",
                self.background_error.clone().unwrap_or_else(|| "-".into()),
            ),
            ("active transactions", self.active_txns.to_string()),
            ("active snapshots", self.active_snapshots.to_string()),
            (
                "oldest snapshot",
                self.oldest_snapshot.map_or("-".into(), |s| s.to_string()),
            ),
            ("commits", self.commits.to_string()),
            ("conflicts (snapshot)", self.conflicts_snapshot.to_string()),
            (
                "conflicts (serializable)",
                self.conflicts_serializable.to_string(),
            ),
            ("update retries", self.retries.to_string()),
            ("rollbacks", self.rollbacks.to_string()),
            ("expired", self.expired.to_string()),
            ("prepared", self.prepared.to_string()),
            (
                "conflict history keys / bytes",
                format!("{} / {}", self.history_keys, self.history_bytes),
            ),
            ("conflict history floor", self.history_floor.to_string()),
            (
                "wal lsn first / last / durable",
                format!(
                    "{} / {} / {}",
                    self.wal.first_lsn, self.wal.last_lsn, self.wal.durable_lsn
                ),
            ),
            (
                "wal syncs / batches",
                format!("{} / {}", self.wal.syncs, self.wal.batches),
            ),
            (
                "wal segments / disk bytes",
                format!("{} / {}", self.wal.segments, self.wal.disk_bytes),
            ),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in rows {
            writeln!(f, "{k:<width$}  {v}")?;
        }
        Ok(())
    }
}
