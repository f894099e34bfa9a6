//! `Db::stats`: a snapshot of the store's figures, with a table as its `Display`.

use std::fmt;

use super::options::DbOptions;
use super::shared::{Counters, Shared};
use crate::types::SeqNo;
use crate::wal::WalStats;

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
    /// Versions in the memtable (tombstones included).
    pub memtable_versions: u64,
    /// Approximate bytes of the memtable.
    pub memtable_bytes: u64,
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
    DbStats {
        options: shared.options.clone(),
        last_seq: SeqNo(o.last_seq),
        committed_seq: SeqNo(o.visible),
        memtable_versions: shared.memtable.versions() as u64,
        memtable_bytes: shared.memtable.approximate_bytes(),
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
        let rows: [(&str, String); 22] = [
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
