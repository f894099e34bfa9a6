//! The tree's background work: flushing the oldest immutable memtable into an L0 table, and
//! compacting L0 with the L1 tables it overlaps into new L1 tables.
//!
//! Each job writes its new tables in full (data fsynced, names made durable), records one
//! manifest edit, and only then swaps the new version in. A job that fails before its edit
//! leaves files no edit names, which the next open removes (and the job removes those it can):
//! nothing half done is ever visible, and the wal still holds every commit a failed flush did
//! not take. The store runs jobs in tasks of their own, so a job is never dropped between its
//! edit and its swap; a failed edit leaves its tables for the next open to judge.
//!
//! Both jobs drop versions no reader can see: of a key's versions at or below the oldest
//! snapshot, only the newest is kept (a reader at that snapshot or later sees it or a newer
//! one); a compaction into the bottom level also drops that version if it is a tombstone, as
//! nothing below it can be shadowed.

use std::cmp::{Ordering, Reverse};
use std::sync::Arc;

use bytes::Bytes;

use super::Tree;
use super::manifest::{Edit, Flushed};
use super::table::{Table, TableEntry, TableIter, TableWriter, sync_table_dir};
use super::version::{TableFile, Version};
use crate::error::Result;
use crate::types::Lsn;

/// What a flush did.
#[derive(Debug)]
pub(crate) struct FlushDone {
    /// The seqs up to this one are in the tables now.
    pub(crate) flushed_seq: u64,
    /// The oldest memtable left starts at this log position: the log below it may be cut.
    pub(crate) log_from: Lsn,
}

/// Decides, version by version in internal-key order, which versions a new table keeps.
struct Keep {
    oldest_snapshot: u64,
    bottom: bool,
    last: Option<(u64, Bytes)>,
    /// A version at or below the oldest snapshot was kept for the current key.
    settled: bool,
}

impl Keep {
    fn new(oldest_snapshot: u64, bottom: bool) -> Keep {
        Keep {
            oldest_snapshot,
            bottom,
            last: None,
            settled: false,
        }
    }

    fn keep(&mut self, bucket: u64, key: &Bytes, seq: u64, is_tombstone: bool) -> bool {
        let same = self
            .last
            .as_ref()
            .is_some_and(|(b, k)| *b == bucket && k == key);
        if !same {
            self.last = Some((bucket, key.clone()));
            self.settled = false;
        }
        if seq > self.oldest_snapshot {
            return true;
        }
        if self.settled {
            return false;
        }
        self.settled = true;
        !(self.bottom && is_tombstone)
    }
}

impl Tree {
    /// Flushes the oldest immutable memtable into an L0 table and records it with
    /// `next_txn_id`; `None` if there is no immutable memtable. The caller has made sure every
    /// seq up to the memtable's end is inserted (the watermark passed it).
    ///
    /// # Errors
    /// The table's or the manifest's I/O errors; nothing changes then (the memtable stays).
    ///
    /// # Cancel safety
    /// Dropped before its edit is recorded, nothing changes but a file no edit names.
    pub(crate) async fn flush_oldest(
        &self,
        oldest_snapshot: u64,
        next_txn_id: u64,
    ) -> Result<Option<FlushDone>> {
        let current = self.current();
        let n = current.memtables.len();
        if n < 2 {
            return Ok(None);
        }
        let slot = &current.memtables[n - 1];
        let next = &current.memtables[n - 2];
        let until = next.after_seq;
        let mut keep = Keep::new(oldest_snapshot, false);
        let versions = slot
            .mem
            .iter()
            .filter(|(b, k, seq, v)| keep.keep(*b, k, *seq, v.is_none()));
        let mut writer = None;
        let mut id = 0;
        for (bucket, key, seq, value) in versions {
            if writer.is_none() {
                let (new_id, path) = self.new_table_path();
                id = new_id;
                writer = Some(TableWriter::create(self.driver(), path, &self.options.table).await?);
            }
            let w = writer.as_mut().expect("created above");
            if let Err(e) = w.add(bucket, &key, seq, value.as_deref()).await {
                return Err(self.abandon(writer, e).await);
            }
        }
        let mut added = Vec::new();
        let mut table_bytes = 0;
        if let Some(w) = writer {
            let path = w.path().to_path_buf();
            let table = match self.finish_table(id, w).await {
                Ok(t) => t,
                Err(e) => return Err(self.remove_quietly(&path, e).await),
            };
            table_bytes = table.file_bytes();
            added.push(TableFile::new(id, 0, table, self.driver().clone()));
        }
        let edit = Edit {
            flushed: Some(Flushed {
                seq: until,
                next_txn_id,
            }),
            added: added.iter().map(|t| (0, t.id)).collect(),
            ..Edit::default()
        };
        self.manifest.record(&edit).await?;
        let flushed = slot.mem.clone();
        self.swap(|s| {
            let mut next = s.clone();
            next.memtables.retain(|m| !Arc::ptr_eq(&m.mem, &flushed));
            next.version = Arc::new(s.version.edit(&[], added));
            next
        });
        self.figures
            .flushes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.figures
            .bytes_flushed
            .fetch_add(table_bytes, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("ringtide_kv_flushes_total").increment(1);
        self.room.notify_waiters();
        tracing::debug!(seq = until, table_bytes, "memtable flushed");
        Ok(Some(FlushDone {
            flushed_seq: until,
            log_from: next.log_from,
        }))
    }

    /// Whether L0 has reached its compaction trigger.
    pub(crate) fn needs_compaction(&self) -> bool {
        self.current().version.l0.len() >= self.options.l0_compaction_trigger
    }

    /// Compacts every L0 table with the L1 tables their key range overlaps into new L1 tables
    /// (split at `table_target_bytes`, never inside one key's versions); returns whether there
    /// was anything to do.
    ///
    /// # Errors
    /// Damaged tables; I/O errors: nothing changes then.
    ///
    /// # Cancel safety
    /// Dropped before its edit is recorded, nothing changes but files no edit names.
    pub(crate) async fn compact_l0(
        &self,
        oldest_snapshot: u64,
        closed: &std::sync::atomic::AtomicBool,
    ) -> Result<bool> {
        let current = self.current();
        let version = &current.version;
        if version.l0.is_empty() {
            return Ok(false);
        }
        let inputs = compaction_inputs(version);
        let bytes_in: u64 = inputs.iter().map(|t| t.table.file_bytes()).sum();
        let bottom = version.levels.iter().skip(1).all(|l| l.is_empty());
        let mut merge = Merge::new(inputs.iter().map(|t| t.table.clone()).collect()).await?;
        let mut keep = Keep::new(oldest_snapshot, bottom);
        let mut outputs: Vec<Arc<TableFile>> = Vec::new();
        let mut writer: Option<(u64, TableWriter)> = None;
        let mut last_key: Option<(u64, Bytes)> = None;
        let result: Result<()> = async {
            while let Some(e) = merge.next().await? {
                if !keep.keep(e.bucket, &e.key, e.seq, e.value.is_none()) {
                    continue;
                }
                let new_key = last_key
                    .as_ref()
                    .is_none_or(|(b, k)| *b != e.bucket || *k != e.key);
                if new_key
                    && let Some((_, w)) = &writer
                    && w.estimated_file_bytes() >= self.options.table_target_bytes
                {
                    // Closing: stop between tables (what was written is left to the next open).
                    if closed.load(std::sync::atomic::Ordering::Acquire) {
                        return Err(crate::Error::Closed);
                    }
                    let (id, w) = writer.take().expect("checked above");
                    let table = self.finish_table(id, w).await?;
                    outputs.push(TableFile::new(id, 1, table, self.driver().clone()));
                }
                if writer.is_none() {
                    let (id, path) = self.new_table_path();
                    writer = Some((
                        id,
                        TableWriter::create(self.driver(), path, &self.options.table).await?,
                    ));
                }
                let (_, w) = writer.as_mut().expect("created above");
                w.add(e.bucket, &e.key, e.seq, e.value.as_deref()).await?;
                if new_key {
                    last_key = Some((e.bucket, e.key));
                }
            }
            if let Some((id, w)) = writer.take() {
                let table = self.finish_table(id, w).await?;
                outputs.push(TableFile::new(id, 1, table, self.driver().clone()));
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            for t in &outputs {
                t.retire();
            }
            return Err(e);
        }
        let removed: Vec<u64> = inputs.iter().map(|t| t.id).collect();
        let edit = Edit {
            removed: removed.clone(),
            added: outputs.iter().map(|t| (1, t.id)).collect(),
            ..Edit::default()
        };
        // An error here may come after the edit became durable (a failed fsync): the outputs
        // are left as they are, and the next open keeps or removes them by what the manifest
        // says.
        self.manifest.record(&edit).await?;
        let bytes_out: u64 = outputs.iter().map(|t| t.table.file_bytes()).sum();
        self.swap(|s| {
            let mut next = s.clone();
            next.version = Arc::new(s.version.edit(&removed, outputs));
            next
        });
        for t in &inputs {
            t.retire();
        }
        use std::sync::atomic::Ordering::Relaxed;
        self.figures.compactions.fetch_add(1, Relaxed);
        self.figures.bytes_compacted_in.fetch_add(bytes_in, Relaxed);
        self.figures
            .bytes_compacted_out
            .fetch_add(bytes_out, Relaxed);
        metrics::counter!("ringtide_kv_compactions_total").increment(1);
        tracing::debug!(
            tables_in = removed.len(),
            bytes_in,
            bytes_out,
            "compacted L0 into L1"
        );
        Ok(true)
    }

    /// Finishes a table, makes its name durable and opens it for reading.
    async fn finish_table(&self, id: u64, writer: TableWriter) -> Result<Table> {
        let path = writer.path().to_path_buf();
        writer.finish().await?;
        sync_table_dir(self.driver(), self.tables_dir()).await?;
        Table::open(self.driver(), &path, id, self.cache.clone()).await
    }

    async fn abandon(&self, writer: Option<TableWriter>, error: crate::Error) -> crate::Error {
        match writer {
            Some(w) => {
                let path = w.path().to_path_buf();
                drop(w);
                self.remove_quietly(&path, error).await
            }
            None => error,
        }
    }

    async fn remove_quietly(&self, path: &std::path::Path, error: crate::Error) -> crate::Error {
        if let Err(e) = self.driver().remove_file(path).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "removing an unfinished table failed");
        }
        error
    }
}

/// Every L0 table and the L1 tables whose key ranges overlap theirs.
fn compaction_inputs(version: &Version) -> Vec<Arc<TableFile>> {
    let mut inputs: Vec<Arc<TableFile>> = version.l0.clone();
    let lo = version
        .l0
        .iter()
        .map(|t| (t.min_key().bucket, t.min_key().key.clone()))
        .min()
        .expect("L0 not empty");
    let hi = version
        .l0
        .iter()
        .map(|t| (t.max_key().bucket, t.max_key().key.clone()))
        .max()
        .expect("L0 not empty");
    if let Some(l1) = version.levels.first() {
        for t in l1 {
            let (min, max) = (t.min_key(), t.max_key());
            let below = (max.bucket, &max.key) < (lo.0, &lo.1);
            let above = (min.bucket, &min.key) > (hi.0, &hi.1);
            if !below && !above {
                inputs.push(t.clone());
            }
        }
    }
    inputs
}

/// The versions of several tables merged into internal-key order.
pub(crate) struct Merge {
    iters: Vec<(TableIter, Option<TableEntry>)>,
}

impl Merge {
    pub(crate) async fn new(tables: Vec<Table>) -> Result<Merge> {
        let mut iters = Vec::with_capacity(tables.len());
        for t in tables {
            let mut it = t.iter();
            it.seek_to_first().await?;
            let head = it.entry()?;
            iters.push((it, head));
        }
        Ok(Merge { iters })
    }

    pub(crate) async fn next(&mut self) -> Result<Option<TableEntry>> {
        let mut best: Option<usize> = None;
        for (i, (_, head)) in self.iters.iter().enumerate() {
            let Some(e) = head else { continue };
            let better = match best.and_then(|b| self.iters[b].1.as_ref()) {
                None => true,
                Some(b) => order(e, b) == Ordering::Less,
            };
            if better {
                best = Some(i);
            }
        }
        let Some(i) = best else { return Ok(None) };
        let (it, head) = &mut self.iters[i];
        let out = head.take();
        it.next().await?;
        *head = it.entry()?;
        Ok(out)
    }
}

fn order(a: &TableEntry, b: &TableEntry) -> Ordering {
    (a.bucket, &a.key, Reverse(a.seq)).cmp(&(b.bucket, &b.key, Reverse(b.seq)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn keep_drops_versions_below_the_oldest_snapshot_but_the_newest() {
        let mut k = Keep::new(10, false);
        // key a: 15 (above), 9 (newest at or below 10), 5 (hidden)
        assert!(k.keep(1, &b("a"), 15, false));
        assert!(k.keep(1, &b("a"), 9, false));
        assert!(!k.keep(1, &b("a"), 5, false));
        // key b: a tombstone at 8 kept above the bottom
        assert!(k.keep(1, &b("b"), 8, true));
        assert!(!k.keep(1, &b("b"), 3, false));
        // the same key in another bucket is another key
        assert!(k.keep(2, &b("b"), 2, false));
        let mut bottom = Keep::new(10, true);
        assert!(!bottom.keep(1, &b("b"), 8, true));
        assert!(!bottom.keep(1, &b("b"), 3, false));
        assert!(bottom.keep(1, &b("b2"), 3, false));
        assert!(bottom.keep(1, &b("c"), 12, true));
        // a reader at 10 sees the value under the newer tombstone
        assert!(bottom.keep(1, &b("c"), 4, false));
    }
}
