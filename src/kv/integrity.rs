//! `Db::check_integrity`: every table read back whole — each data block's checksum, the order
//! of its entries, its meta block's claims (entry count, first and last key, seq range,
//! buckets, the values it points to in each value-log file) — every value kept apart read back
//! against its pointer's checksum, each sorted level's tables in order and disjoint, and the
//! wal's frames.

use std::sync::Arc;

use super::shared::Shared;
use super::tree::resolve;
use super::tree::table::Stored;
use super::tree::version::{TableFile, Version};
use crate::error::{CorruptionKind, Error, Result};
use crate::wal::{IntegrityProblem, IntegrityReport};

/// How far a check has come ([`Db::check_integrity`](super::Db::check_integrity)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KvIntegrityProgress {
    /// Tables read back so far.
    pub tables_checked: u64,
    /// Tables the check will read (the tree's when it started).
    pub tables_total: u64,
    /// Versions read back so far.
    pub entries_checked: u64,
}

/// Damage a check found in one table (or in the order of a level's tables): the file, the
/// offset of the damaged block (0 for a problem of the whole table) and what is wrong — the
/// wal's [`IntegrityProblem`], the same three facts.
pub type TableProblem = IntegrityProblem;

/// What a check read and found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KvIntegrityReport {
    /// Tables read back.
    pub tables: u64,
    /// Versions read back.
    pub entries: u64,
    /// Bytes of the tables read.
    pub table_bytes: u64,
    /// Values read back from value-log files (key-value separation), and their bytes.
    pub separated_values: u64,
    /// See `separated_values`.
    pub separated_value_bytes: u64,
    /// Every damaged table (the check goes on past one).
    pub problems: Vec<TableProblem>,
    /// The wal's check.
    pub wal: IntegrityReport,
}

impl KvIntegrityReport {
    /// Whether nothing is damaged.
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty() && self.wal.problem.is_none()
    }
}

pub(crate) async fn check(
    shared: &Shared,
    mut progress: impl FnMut(KvIntegrityProgress),
) -> Result<KvIntegrityReport> {
    let current = shared.tree.current();
    let version = &current.version;
    let tables: Vec<&Arc<TableFile>> = version.tables().collect();
    let mut at = KvIntegrityProgress {
        tables_checked: 0,
        tables_total: tables.len() as u64,
        entries_checked: 0,
    };
    let mut problems = Vec::new();
    let mut table_bytes = 0;
    let mut separated = (0u64, 0u64);
    for t in &tables {
        match check_table(version, t, &mut at, &mut separated, &mut progress).await {
            Ok(()) => {}
            Err(Error::Corruption { file, offset, kind }) => {
                problems.push(TableProblem { file, offset, kind });
            }
            Err(e) => return Err(e),
        }
        table_bytes += t.table.file_bytes();
        at.tables_checked += 1;
        progress(at);
    }
    for (i, level) in version.levels.iter().enumerate() {
        if version.is_tiered(i + 1) {
            // Runs newest first, their seq ranges disjoint.
            for pair in level.windows(2) {
                if pair[0].table.meta().seq_min <= pair[1].table.meta().seq_max {
                    problems.push(TableProblem {
                        file: pair[1].path(),
                        offset: 0,
                        kind: CorruptionKind::BadTable {
                            reason: "a run of a tiered level overlaps the newer one in seqs",
                        },
                    });
                }
            }
            continue;
        }
        for pair in level.windows(2) {
            let (a, b) = (pair[0].max_key(), pair[1].min_key());
            if (a.bucket, &a.key) >= (b.bucket, &b.key) {
                problems.push(TableProblem {
                    file: pair[1].path(),
                    offset: 0,
                    kind: CorruptionKind::BadTable {
                        reason: "a table of a sorted level overlaps the one before it",
                    },
                });
            }
        }
    }
    let wal = shared.wal.check_integrity(|_| {}).await?;
    Ok(KvIntegrityReport {
        tables: at.tables_checked,
        entries: at.entries_checked,
        table_bytes,
        separated_values: separated.0,
        separated_value_bytes: separated.1,
        problems,
        wal,
    })
}

/// Reads a table from its first version to its last and checks the meta block's claims.
async fn check_table(
    version: &Version,
    t: &TableFile,
    at: &mut KvIntegrityProgress,
    separated: &mut (u64, u64),
    progress: &mut impl FnMut(KvIntegrityProgress),
) -> Result<()> {
    let meta = t.table.meta();
    let wrong = |reason| {
        Err(Error::corruption(
            t.path(),
            0,
            CorruptionKind::BadTable { reason },
        ))
    };
    let mut it = t.table.iter();
    it.seek_to_first().await?;
    let (mut entries, mut tombstones) = (0u64, 0u64);
    let mut first = None;
    let mut last = None;
    let mut blobs: std::collections::BTreeMap<u64, (u64, u64)> = Default::default();
    while let Some(e) = it.entry()? {
        if e.seq < meta.seq_min || e.seq > meta.seq_max {
            return wrong("a version's seq outside the table's seq range");
        }
        if meta.buckets.binary_search(&e.bucket).is_err() {
            return wrong("a version in a bucket the table does not list");
        }
        entries += 1;
        tombstones += u64::from(e.value.is_tombstone());
        if let Stored::Blob(ptr) = &e.value {
            // Read back and checked against the pointer's checksum (an error names the
            // value-log file and the value's offset).
            let value = resolve(version, &t.table, e.value.clone()).await?;
            let len = value.map_or(0, |v| v.len() as u64);
            let r = blobs.entry(ptr.file).or_default();
            r.0 += 1;
            r.1 += len;
            separated.0 += 1;
            separated.1 += len;
        }
        if first.is_none() {
            first = Some((e.bucket, e.key.clone(), e.seq));
        }
        last = Some((e.bucket, e.key, e.seq));
        at.entries_checked += 1;
        if at.entries_checked.is_multiple_of(65_536) {
            progress(*at);
        }
        it.next().await?;
    }
    if entries != meta.entries || tombstones != meta.tombstones {
        return wrong("the table holds another count of versions than its meta block says");
    }
    let named = meta.blobs.iter().map(|r| (r.file, (r.values, r.bytes)));
    if !blobs.into_iter().eq(named) {
        return wrong("the table points to other values than its meta block says");
    }
    let bound = |k: &super::tree::memtable::InternalKey| (k.bucket, k.key.clone(), k.seq);
    if first != Some(bound(&meta.min_key)) || last != Some(bound(&meta.max_key)) {
        return wrong("the table's first or last version is not its meta block's");
    }
    Ok(())
}
