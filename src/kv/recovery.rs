//! Opening a store: replay the wal's records into a new memtable, restore prepared transactions
//! as prepared, and find where sequence numbers, transaction ids and bucket ids resume.

use std::collections::BTreeMap;
use std::ops::Bound;

use futures::StreamExt;

use super::bucket::{self, CATALOG, FIRST_BUCKET_ID};
use super::record::{self, Kind};
use super::tree::memtable::Memtable;
use super::txn::WriteSet;
use super::txn::commit::{Prepared, deadline_from_unix_ms, write_set};
use crate::error::{CorruptionKind, Error, Result};
use crate::types::Lsn;
use crate::wal::Wal;

/// What replay found.
pub(crate) struct Replayed {
    pub(crate) memtable: Memtable,
    pub(crate) last_seq: u64,
    pub(crate) next_txn_id: u64,
    pub(crate) next_bucket_id: u64,
    pub(crate) prepared: BTreeMap<u64, Prepared>,
    pub(crate) records: u64,
}

/// Replays every record of `wal` (see the module docs).
pub(crate) async fn replay(wal: &Wal) -> Result<Replayed> {
    let memtable = Memtable::new();
    let mut last_seq = 0;
    let mut max_txn_id = 0;
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
            Kind::Commit => {
                let set = write_set(std::mem::take(&mut writes));
                apply(&memtable, header.seq, &set);
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
                    },
                );
            }
            Kind::CommitPrepared => {
                let Some(p) = prepared.remove(&header.txn_id) else {
                    return Err(bad(
                        wal,
                        first_lsn,
                        "commit of a transaction that was not prepared",
                    ));
                };
                apply(&memtable, header.seq, &p.writes);
                last_seq = last_seq.max(header.seq);
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
    let next_bucket_id = max_bucket_id(&memtable, last_seq)
        .max(FIRST_BUCKET_ID - 1)
        .saturating_add(1);
    Ok(Replayed {
        memtable,
        last_seq,
        next_txn_id: max_txn_id + 1,
        next_bucket_id,
        prepared,
        records,
    })
}

fn apply(memtable: &Memtable, seq: u64, writes: &WriteSet) {
    memtable.apply(seq, super::txn::writes_of(writes));
}

/// The highest bucket id the catalog names (live or deleted), so that ids are never reused.
fn max_bucket_id(memtable: &Memtable, snapshot: u64) -> u64 {
    let mut max = 0;
    let mut from: Option<bytes::Bytes> = None;
    loop {
        let start = from
            .as_ref()
            .map_or(Bound::Unbounded, |k| Bound::Excluded(&k[..]));
        let (batch, more) = memtable.scan_forward(CATALOG, start, Bound::Unbounded, snapshot, 1024);
        for (key, value) in &batch {
            if let Some(id) = bucket::id_in_entry(key, Some(value)) {
                max = max.max(id);
            }
        }
        match (more, batch.last()) {
            (true, Some((k, _))) => from = Some(k.clone()),
            _ => return max,
        }
    }
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
        let wal = Wal::open(dir.path(), WalOptions::default()).await.unwrap();
        let mut chunk = vec![0u8; record::HEADER_BYTES];
        chunk[0] = record::VERSION + 1;
        chunk[1] = Kind::Commit as u8;
        wal.append(bytes::Bytes::from(chunk)).await.unwrap();
        let err = replay(&wal)
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
