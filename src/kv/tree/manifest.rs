//! The manifest: which tables make up the tree, as a log of version edits in a wal of its own
//! (`manifest/` in the store's directory), replayed at open.
//!
//! An edit is applied to the tree only after its append is durable (fdatasync), so a table is
//! visible only once the edit naming it survives a crash; every table an edit names was
//! written, fsynced and its name made durable before the edit was appended. Every
//! [`SNAPSHOT_EVERY`] edits the whole state is appended as one snapshot edit and the entries
//! before it are truncated away, so the manifest stays small.
//!
//! An edit (one wal entry; the wal checksums it):
//!
//! ```text
//! offset  size  field
//!  0       1    version (1)
//!  1       1    flags: bit 0 = flushed (the two fields below follow), bit 1 = snapshot
//!                      (the state is replaced: every live table is in `added`), bit 2 =
//!                      shape (the byte below follows); others 0
//! [2       8    flushed seq, u64 LE: every commit at or below it is in the tables]
//! [10      8    next transaction id, u64 LE]
//! […       1    shape: the tree's tiered levels (L1 to this one are size-tiered), < 16]
//!  …       4    removed count n, u32 LE; then n table ids, u64 LE
//!  …       4    added count m, u32 LE; then m × (level u8, table id u64 LE)
//! ```
//!
//! Nothing may follow. Replay refuses an edit that removes a table that is not live, adds one
//! that is, lowers the flushed seq, names a level beyond [`MAX_LEVELS`] or changes the shape.
//!
//! The shape is recorded once, by the first open of a store (and in every snapshot edit): how
//! the tables of a level are ordered and read depends on it (a tiered level's runs overlap in
//! keys, a leveled level's tables do not), so a store is always read with the shape it was
//! written with. A manifest that never recorded one is of a store written before shapes
//! existed: every level leveled.

use std::collections::BTreeMap;
use std::path::Path;

use futures::StreamExt;

use crate::error::{CorruptionKind, Error, Result};
use crate::types::Lsn;
use crate::wal::{Ack, Record, SyncPolicy, Wal, WalOptions};

const VERSION: u8 = 1;
const FLAG_FLUSHED: u8 = 1;
const FLAG_SNAPSHOT: u8 = 2;
const FLAG_SHAPE: u8 = 4;
/// Levels a table may be at (L0 and up).
pub(crate) const MAX_LEVELS: u8 = 16;
/// Edits between two snapshots of the whole state.
pub(crate) const SNAPSHOT_EVERY: u64 = 256;
/// The largest edit accepted: the ids of ~1M tables.
const MAX_EDIT_BYTES: usize = 16 << 20;

/// What the flush of the memtables up to a seq recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flushed {
    pub(crate) seq: u64,
    pub(crate) next_txn_id: u64,
}

/// One version edit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Edit {
    pub(crate) flushed: Option<Flushed>,
    pub(crate) snapshot: bool,
    pub(crate) removed: Vec<u64>,
    /// `(level, table id)`.
    pub(crate) added: Vec<(u8, u64)>,
    /// The tree's tiered levels (recorded once, and in snapshots).
    pub(crate) shape: Option<u8>,
}

impl Edit {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(2 + 16 + 8 + self.removed.len() * 8 + self.added.len() * 9);
        out.push(VERSION);
        let mut flags = 0;
        if self.flushed.is_some() {
            flags |= FLAG_FLUSHED;
        }
        if self.snapshot {
            flags |= FLAG_SNAPSHOT;
        }
        if self.shape.is_some() {
            flags |= FLAG_SHAPE;
        }
        out.push(flags);
        if let Some(f) = self.flushed {
            out.extend_from_slice(&f.seq.to_le_bytes());
            out.extend_from_slice(&f.next_txn_id.to_le_bytes());
        }
        if let Some(tiered) = self.shape {
            out.push(tiered);
        }
        out.extend_from_slice(&(self.removed.len() as u32).to_le_bytes());
        for id in &self.removed {
            out.extend_from_slice(&id.to_le_bytes());
        }
        out.extend_from_slice(&(self.added.len() as u32).to_le_bytes());
        for (level, id) in &self.added {
            out.push(*level);
            out.extend_from_slice(&id.to_le_bytes());
        }
        out
    }

    /// Decodes an edit; every malformed input is an error naming what is wrong.
    pub(crate) fn decode(b: &[u8]) -> std::result::Result<Edit, &'static str> {
        let mut r = Reader { b, at: 0 };
        if r.u8()? != VERSION {
            return Err("unknown edit version");
        }
        let flags = r.u8()?;
        if flags & !(FLAG_FLUSHED | FLAG_SNAPSHOT | FLAG_SHAPE) != 0 {
            return Err("unknown edit flags");
        }
        let flushed = if flags & FLAG_FLUSHED != 0 {
            Some(Flushed {
                seq: r.u64()?,
                next_txn_id: r.u64()?,
            })
        } else {
            None
        };
        let shape = if flags & FLAG_SHAPE != 0 {
            let tiered = r.u8()?;
            if tiered >= MAX_LEVELS {
                return Err("tiered levels out of range");
            }
            Some(tiered)
        } else {
            None
        };
        let n = r.count(8)?;
        let removed = (0..n).map(|_| r.u64()).collect::<Result<_, _>>()?;
        let m = r.count(9)?;
        let mut added = Vec::with_capacity(m);
        for _ in 0..m {
            let level = r.u8()?;
            if level >= MAX_LEVELS {
                return Err("table level out of range");
            }
            added.push((level, r.u64()?));
        }
        if r.at != b.len() {
            return Err("bytes after the edit");
        }
        Ok(Edit {
            flushed,
            snapshot: flags & FLAG_SNAPSHOT != 0,
            removed,
            added,
            shape,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> std::result::Result<&[u8], &'static str> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or("edit cut short")?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> std::result::Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> std::result::Result<u64, &'static str> {
        let s = self.take(8)?;
        Ok(u64::from_le_bytes(
            s.try_into().map_err(|_| "edit cut short")?,
        ))
    }
    /// A count of items of `each` bytes, checked against what is left.
    fn count(&mut self, each: usize) -> std::result::Result<usize, &'static str> {
        let s = self.take(4)?;
        let n = u32::from_le_bytes(s.try_into().map_err(|_| "edit cut short")?) as usize;
        if n.saturating_mul(each) > self.b.len() - self.at {
            return Err("edit count past its end");
        }
        Ok(n)
    }
}

/// The tree's shape as the manifest describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct State {
    pub(crate) flushed: Flushed,
    /// Live tables: id → level.
    pub(crate) tables: BTreeMap<u64, u8>,
    /// The tree's tiered levels, once recorded.
    pub(crate) shape: Option<u8>,
}

impl Default for Flushed {
    fn default() -> Self {
        Flushed {
            seq: 0,
            next_txn_id: 1,
        }
    }
}

impl State {
    /// Applies one edit, refusing one that does not fit the state.
    pub(crate) fn apply(&mut self, edit: &Edit) -> std::result::Result<(), &'static str> {
        if edit.snapshot {
            if !edit.removed.is_empty() {
                return Err("a snapshot edit removes tables");
            }
            self.tables.clear();
        }
        if let Some(tiered) = edit.shape {
            if self.shape.is_some_and(|s| s != tiered) {
                return Err("the tree's shape changed");
            }
            self.shape = Some(tiered);
        }
        if let Some(f) = edit.flushed {
            if f.seq < self.flushed.seq {
                return Err("the flushed seq went back");
            }
            self.flushed = f;
        }
        for id in &edit.removed {
            if self.tables.remove(id).is_none() {
                return Err("removes a table that is not live");
            }
        }
        for &(level, id) in &edit.added {
            if self.tables.insert(id, level).is_some() {
                return Err("adds a table that is live");
            }
        }
        Ok(())
    }

    /// The state as one snapshot edit.
    pub(crate) fn snapshot(&self) -> Edit {
        Edit {
            flushed: Some(self.flushed),
            snapshot: true,
            removed: Vec::new(),
            added: self
                .tables
                .iter()
                .map(|(&id, &level)| (level, id))
                .collect(),
            shape: self.shape,
        }
    }
}

/// The open manifest: its wal and the state it holds.
pub(crate) struct Manifest {
    wal: Wal,
    state: tokio::sync::Mutex<(State, u64)>,
}

impl Manifest {
    /// Opens (or creates) the manifest in `dir` and replays it.
    ///
    /// # Errors
    /// [`Error::Corruption`] of kind `BadManifest` for an edit that cannot be decoded or
    /// applied; the wal's errors.
    ///
    /// # Cancel safety
    /// Safe: nothing is written.
    pub(crate) async fn open(
        dir: &Path,
        wal_options: WalOptions,
        read_only: bool,
    ) -> Result<Manifest> {
        let options = wal_options
            .sync_policy(SyncPolicy::Immediate)
            .segment_size_bytes(4 << 20)
            .max_entry_bytes(MAX_EDIT_BYTES as u64)
            .read_cache_bytes(0);
        let wal = if read_only {
            Wal::open_read_only(dir, options).await?
        } else {
            Wal::open(dir, options).await?
        };
        let mut state = State::default();
        let mut since_snapshot = 0;
        let mut entries = wal.stream(wal.first_lsn());
        while let Some(entry) = entries.next().await {
            let entry = entry?;
            let bad = |reason| bad_manifest(&wal, entry.lsn, reason);
            let edit = Edit::decode(&entry.data).map_err(bad)?;
            state.apply(&edit).map_err(bad)?;
            since_snapshot = if edit.snapshot { 0 } else { since_snapshot + 1 };
        }
        Ok(Manifest {
            wal,
            state: tokio::sync::Mutex::new((state, since_snapshot)),
        })
    }

    /// The state replayed or last recorded.
    pub(crate) async fn state(&self) -> State {
        self.state.lock().await.0.clone()
    }

    /// Makes `edit` durable and applies it to the recorded state; every
    /// [`SNAPSHOT_EVERY`] edits, also writes a snapshot and drops the entries before it.
    /// Edits are recorded one at a time, in the order of their calls.
    ///
    /// # Errors
    /// `InvalidArgument` for an edit that does not fit the state (a bug of the caller); the
    /// wal's errors (the edit may or may not have become durable: the caller must not apply it,
    /// and the store poisons itself as the wal does).
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped call may have recorded the edit without the caller knowing.
    /// The store runs it in tasks that are never dropped midway.
    pub(crate) async fn record(&self, edit: &Edit) -> Result<()> {
        let mut guard = self.state.lock().await;
        let (state, since) = &mut *guard;
        let mut next = state.clone();
        next.apply(edit)
            .map_err(|reason| Error::invalid("manifest edit", reason))?;
        self.wal
            .append_with(Record::new(bytes::Bytes::from(edit.encode())), Ack::Durable)
            .await?;
        *state = next;
        *since += 1;
        if *since >= SNAPSHOT_EVERY {
            // The edit is durable: a failure from here on is not the edit's (the manifest is
            // only longer than it could be, and the next edit tries again).
            let snapshot = Record::new(bytes::Bytes::from(state.snapshot().encode()));
            match self.wal.append_with(snapshot, Ack::Durable).await {
                Ok(lsn) => {
                    *since = 0;
                    if let Err(e) = self.wal.truncate_front(lsn).await {
                        tracing::warn!(error = %e, "cutting the manifest below its snapshot failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "writing the manifest's snapshot failed"),
            }
        }
        Ok(())
    }

    /// Closes the manifest's wal.
    ///
    /// # Errors
    /// The wal's.
    pub(crate) async fn close(&self) -> Result<()> {
        self.wal.close().await
    }
}

fn bad_manifest(wal: &Wal, lsn: Lsn, reason: &'static str) -> Error {
    let file = wal
        .segments()
        .into_iter()
        .rev()
        .find(|s| s.first_lsn <= lsn)
        .map_or_else(|| wal.dir().to_path_buf(), |s| s.path);
    Error::corruption(file, 0, CorruptionKind::BadManifest { lsn, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_round_trip_and_damage_is_refused() {
        let edit = Edit {
            flushed: Some(Flushed {
                seq: 42,
                next_txn_id: 7,
            }),
            snapshot: false,
            removed: vec![1, 2],
            added: vec![(0, 9), (1, 10)],
            shape: Some(2),
        };
        let bytes = edit.encode();
        assert_eq!(Edit::decode(&bytes), Ok(edit.clone()));
        let bad_shape = Edit {
            shape: Some(MAX_LEVELS),
            ..Edit::default()
        };
        assert_eq!(
            Edit::decode(&bad_shape.encode()),
            Err("tiered levels out of range")
        );
        for cut in 0..bytes.len() {
            assert!(Edit::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Edit::decode(&longer).is_err());
        let mut bad_level = Edit {
            added: vec![(MAX_LEVELS, 1)],
            ..Edit::default()
        }
        .encode();
        assert_eq!(Edit::decode(&bad_level), Err("table level out of range"));
        bad_level[1] = 0x80;
        assert_eq!(Edit::decode(&bad_level), Err("unknown edit flags"));
    }

    #[test]
    fn state_refuses_edits_that_do_not_fit() {
        let mut s = State::default();
        let shape = |tiered| Edit {
            shape: Some(tiered),
            ..Edit::default()
        };
        s.apply(&shape(2)).unwrap();
        s.apply(&shape(2)).unwrap();
        assert_eq!(s.apply(&shape(0)), Err("the tree's shape changed"));
        assert_eq!(s.snapshot().shape, Some(2));
        let add = |id| Edit {
            added: vec![(0, id)],
            ..Edit::default()
        };
        s.apply(&add(1)).unwrap();
        assert!(s.apply(&add(1)).is_err());
        let remove = Edit {
            removed: vec![2],
            ..Edit::default()
        };
        assert!(s.apply(&remove).is_err());
        let flushed = |seq| Edit {
            flushed: Some(Flushed {
                seq,
                next_txn_id: 1,
            }),
            ..Edit::default()
        };
        s.apply(&flushed(10)).unwrap();
        assert!(s.apply(&flushed(9)).is_err());
        let snap = s.snapshot();
        let mut t = State::default();
        t.apply(&add(5)).unwrap();
        t.apply(&snap).unwrap();
        assert_eq!(t, s);
    }

    #[tokio::test]
    async fn a_manifest_replays_its_edits_across_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::open(dir.path(), WalOptions::default(), false)
            .await
            .unwrap();
        for id in 0..(SNAPSHOT_EVERY * 2 + 5) {
            let mut edit = Edit {
                added: vec![(0, id)],
                ..Edit::default()
            };
            if id > 0 && id % 2 == 0 {
                edit.removed.push(id - 1);
            }
            m.record(&edit).await.unwrap();
        }
        let expected = m.state().await;
        assert!(m.wal.first_lsn().0 > 1, "snapshots truncate the manifest");
        m.close().await.unwrap();
        let again = Manifest::open(dir.path(), WalOptions::default(), false)
            .await
            .unwrap();
        assert_eq!(again.state().await, expected);
        again.close().await.unwrap();
    }
}
