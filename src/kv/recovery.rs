//! Opening a store: replay the wal's records of the commits the tables do not hold yet (seqs
//! above the flushed one) into the memtable, restore prepared transactions as prepared, and
//! find where sequence numbers, transaction ids and bucket ids resume.

use std::collections::BTreeMap;

use futures::StreamExt;

use super::bucket::{self, FIRST_BUCKET_ID};
use super::record::{self, Kind};
use super::tree::Tree;
use super::tree::manifest::Flushed;
use super::txn::WriteSet;
use super::txn::commit::{Prepared, deadline_from_unix_ms, write_set};
use crate::error::{CorruptionKind, Error, Result};
use crate::types::Lsn;
use crate::wal::Wal;

/// What replay found.
pub(crate) struct Replayed {
    pub(crate) last_seq: u64,
    pub(crate) next_txn_id: u64,
    pub(crate) next_bucket_id: u64,
    pub(crate) prepared: BTreeMap<u64, Prepared>,
    pub(crate) records: u64,
    /// Prepare records the wal must keep: txn id → (its position, its commit's seq if it
    /// committed after the flushed seq).
    pub(crate) log_holds: Vec<(u64, Lsn, Option<u64>)>,
}

/// Replays every record of `wal` (see the module docs).
pub(crate) async fn replay(wal: &Wal, tree: &Tree, flushed: Flushed) -> Result<Replayed> {
    let mut last_seq = flushed.seq;
    let mut max_txn_id = flushed.next_txn_id.saturating_sub(1);
    let mut log_holds = Vec::new();
    let mut prepared: BTreeMap<u64, Prepared> = BTreeMap::new();
    let mut records = 0;
    let mut pending: Option<(record::Header, Vec<record::Write>, Vec<record::Held>, Lsn)> = None;
    let mut entries = wal.stream(wal.first_lsn());
    while let Some(entry) = entries.next().await {
        let entry = entry?;
        let chunk = record::decode(entry.lsn, wal.dir(), &entry.data)
            .map_err(|e| locate(wal, entry.lsn, e))?;
        let (header, mut writes, mut held, first_lsn) = match pending.take() {
            Some((header, mut writes, mut held, first)) => {
                if chunk.header != header {
                    return Err(bad(wal, entry.lsn, "a record's chunks disagree"));
                }
                if !held.is_empty() && !chunk.writes.is_empty() {
                    return Err(bad(wal, entry.lsn, "a write after a hold"));
                }
                writes.extend(chunk.writes);
                held.extend(chunk.held);
                (header, writes, held, first)
            }
            None => (chunk.header, chunk.writes, chunk.held, entry.lsn),
        };
        if chunk.more {
            pending = Some((header, writes, held, first_lsn));
            continue;
        }
        records += 1;
        max_txn_id = max_txn_id.max(header.txn_id);
        match header.kind {
            // In the tables already.
            Kind::Commit if header.seq <= flushed.seq => {}
            Kind::Commit => {
                let set = write_set(std::mem::take(&mut writes));
                apply(tree, header.seq, &set);
                last_seq = last_seq.max(header.seq);
            }
            Kind::Prepare => {
                prepared.insert(
                    header.txn_id,
                    Prepared {
                        writes: write_set(std::mem::take(&mut writes)),
                        held: std::mem::take(&mut held),
                        deadline: deadline_from_unix_ms(header.aux),
                        resolving: false,
                        log_floor: first_lsn,
                    },
                );
            }
            Kind::CommitPrepared if header.seq <= flushed.seq => {
                // Its writes are in the tables (its prepare record may have been cut).
                prepared.remove(&header.txn_id);
            }
            Kind::CommitPrepared => {
                let Some(p) = prepared.remove(&header.txn_id) else {
                    return Err(bad(
                        wal,
                        first_lsn,
                        "commit of a transaction that was not prepared",
                    ));
                };
                apply(tree, header.seq, &p.writes);
                last_seq = last_seq.max(header.seq);
                log_holds.push((header.txn_id, p.log_floor, Some(header.seq)));
            }
            Kind::Rollback => {
                prepared.remove(&header.txn_id);
            }
        }
    }
    if let Some((_, _, _, first)) = pending {
        // The wal appends a record's chunks as one atomic batch: a record cut short is damage.
        return Err(bad(wal, first, "a record's last chunk is missing"));
    }
    // Buckets made by prepared transactions not yet resolved count too: their ids must not be
    // given again (a commit of both would put two buckets' keys under one id).
    let prepared_max = prepared
        .values()
        .filter_map(|p| p.writes.get(&bucket::CATALOG))
        .flat_map(|catalog| catalog.iter())
        .filter_map(|(key, value)| bucket::id_in_entry(key, value.as_deref()))
        .max()
        .unwrap_or(0);
    let next_bucket_id = max_bucket_id(tree, last_seq)
        .await?
        .max(prepared_max)
        .max(FIRST_BUCKET_ID - 1)
        .saturating_add(1);
    log_holds.extend(prepared.iter().map(|(&id, p)| (id, p.log_floor, None)));
    Ok(Replayed {
        log_holds,
        last_seq,
        next_txn_id: max_txn_id + 1,
        next_bucket_id,
        prepared,
        records,
    })
}

fn apply(tree: &Tree, seq: u64, writes: &WriteSet) {
    tree.apply(seq, super::txn::writes_of(writes));
}

/// The highest bucket id the catalog names (live or deleted), so that ids are never reused.
async fn max_bucket_id(tree: &Tree, snapshot: u64) -> Result<u64> {
    let catalog = bucket::scan_catalog(tree, b"", snapshot).await?;
    Ok(catalog
        .iter()
        .filter_map(|(key, value)| bucket::id_in_entry(key, Some(value)))
        .max()
        .unwrap_or(0))
}

fn bad(wal: &Wal, lsn: Lsn, reason: &'static str) -> Error {
    locate(
        wal,
        lsn,
        Error::corruption(wal.dir(), 0, CorruptionKind::BadRecord { lsn, reason }),
    )
}

/// Names the segment file that holds the entry at `lsn` (a bad record, or one of a version this
/// build does not read) instead of the wal's directory.
fn locate(wal: &Wal, lsn: Lsn, error: Error) -> Error {
    let Error::Corruption { kind, offset, file } = error else {
        return error;
    };
    let segment = wal
        .segments()
        .into_iter()
        .rev()
        .find(|s| s.first_lsn <= lsn)
        .map(|s| s.path);
    Error::Corruption {
        file: segment.unwrap_or(file),
        offset,
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::WalOptions;

    /// Regression: a record of an unknown version named the wal's directory, not its segment
    /// file (only `BadRecord` errors were located).
    #[tokio::test]
    async fn a_record_of_an_unknown_version_names_its_segment() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path().join("wal"), WalOptions::default())
            .await
            .unwrap();
        let options = crate::kv::DbOptions::default();
        let tree = Tree::open(
            dir.path(),
            ringtide_platform::IoDriver::new(Default::default()).unwrap(),
            options.tree_options(),
            WalOptions::default(),
            false,
            wal.first_lsn(),
        )
        .await
        .unwrap()
        .tree;
        let mut chunk = vec![0u8; record::HEADER_BYTES];
        chunk[0] = record::VERSION + 1;
        chunk[1] = Kind::Commit as u8;
        wal.append(bytes::Bytes::from(chunk)).await.unwrap();
        let err = replay(&wal, &tree, Flushed::default())
            .await
            .err()
            .expect("an unknown version is refused");
        let Error::Corruption { file, kind, .. } = err else {
            panic!("not a corruption: {err}");
        };
        assert!(
            matches!(kind, CorruptionKind::UnsupportedVersion { .. }),
            "{kind:?}"
        );
        assert_eq!(Some(file), wal.segments().pop().map(|s| s.path));
        wal.close().await.unwrap();
    }
}
