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
//! Each job writes its tables with the compression of the level they go to
//! ([`TreeOptions::table_options`](super::TreeOptions::table_options)); a table moved down a
//! level as it is keeps its own (every block says how it is stored).
//!
//! Both jobs drop versions no reader can see: of a key's versions at or below the oldest
//! snapshot, only the newest is kept (a reader at that snapshot or later sees it or a newer
//! one); a compaction into the bottom level also drops that version if it is a tombstone, as
//! nothing below it can be shadowed.

use std::cmp::{Ordering, Reverse};
use std::sync::Arc;

use bytes::Bytes;

use super::Tree;
use super::blob::BlobFile;
use super::blob_jobs::BlobOut;
use super::manifest::{Edit, Flushed};
use super::table::{Stored, Table, TableEntry, TableIter, TableWriter, sync_table_dir};
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

/// Keys the store says no snapshot at or above a horizon can reach (its deleted buckets'
/// keys): compaction drops every version of them. The tree knows nothing of buckets.
pub(crate) trait Unreachable: Send + Sync {
    fn unreachable(&self, bucket: u64, key: &[u8]) -> bool;
}

/// Every key reachable.
struct NoneUnreachable;

impl Unreachable for NoneUnreachable {
    fn unreachable(&self, _: u64, _: &[u8]) -> bool {
        false
    }
}

/// What a compaction may drop: versions below `oldest_snapshot` that no snapshot sees, and
/// every version of the keys `unreachable` names (as of `oldest_snapshot`).
#[derive(Clone, Copy)]
pub(crate) struct Horizon<'a> {
    pub(crate) oldest_snapshot: u64,
    pub(crate) unreachable: &'a dyn Unreachable,
}

impl Horizon<'_> {
    /// Versions below `oldest_snapshot`, and no key unreachable.
    pub(crate) fn at(oldest_snapshot: u64) -> Horizon<'static> {
        Horizon {
            oldest_snapshot,
            unreachable: &NoneUnreachable,
        }
    }
}

/// Decides, version by version in internal-key order, which versions a new table keeps.
struct Keep<'a> {
    oldest_snapshot: u64,
    unreachable: &'a dyn Unreachable,
    bottom: bool,
    last: Option<(u64, Bytes)>,
    /// A version at or below the oldest snapshot was kept for the current key.
    settled: bool,
}

impl<'a> Keep<'a> {
    fn new(horizon: Horizon<'a>, bottom: bool) -> Keep<'a> {
        Keep {
            oldest_snapshot: horizon.oldest_snapshot,
            unreachable: horizon.unreachable,
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
        if self.unreachable.unreachable(bucket, key) {
            return false;
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
        let mut keep = Keep::new(Horizon::at(oldest_snapshot), false);
        let versions = slot
            .mem
            .iter()
            .filter(|(b, k, seq, v)| keep.keep(*b, k, *seq, v.is_none()));
        let mut writer = None;
        let mut blobs = BlobOut::default();
        let mut id = 0;
        for (bucket, key, seq, value) in versions {
            if writer.is_none() {
                let (new_id, path) = self.new_table_path();
                id = new_id;
                // L0's compression (none by default: commits may wait for a flush).
                let options = self.options.table_options(0);
                match TableWriter::create(self.driver(), path, &options).await {
                    Ok(w) => writer = Some(w),
                    Err(e) => return Err(self.abandon(None, blobs, e).await),
                }
            }
            let w = writer.as_mut().expect("created above");
            let added = async {
                let stored = match value {
                    Some(v) if self.separates(&v) => Stored::Blob(blobs.add(self, &v).await?),
                    v => Stored::from(v),
                };
                w.add_stored(bucket, &key, seq, &stored).await
            }
            .await;
            if let Err(e) = added {
                return Err(self.abandon(writer, blobs, e).await);
            }
        }
        let mut added = Vec::new();
        let (mut table_bytes, mut uncompressed_bytes) = (0, 0);
        let new_blobs = match blobs.finish(self).await {
            Ok(b) => b,
            Err((e, blobs)) => return Err(self.abandon(writer, blobs, e).await),
        };
        if let Some(w) = writer {
            let path = w.path().to_path_buf();
            let (table, uncompressed) = match self.finish_table(id, w).await {
                Ok(t) => t,
                Err(e) => {
                    let e = self.remove_quietly(&path, e).await;
                    return Err(self.drop_blobs(&new_blobs, e).await);
                }
            };
            table_bytes = table.file_bytes();
            uncompressed_bytes = uncompressed;
            added.push(TableFile::new(id, 0, table, self.driver().clone()));
        }
        let blob_bytes: u64 = new_blobs.iter().map(|b| b.file_bytes()).sum();
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
            next.version = Arc::new(s.version.edit(&[], added, new_blobs));
            next
        });
        self.figures
            .flushes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.figures.bytes_flushed.fetch_add(
            table_bytes + blob_bytes,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.figures
            .value_log_bytes_written
            .fetch_add(blob_bytes, std::sync::atomic::Ordering::Relaxed);
        self.figures
            .bytes_written_uncompressed
            .fetch_add(uncompressed_bytes, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("ringtide_kv_flushes_total").increment(1);
        self.room.notify_waiters();
        tracing::debug!(seq = until, table_bytes, "memtable flushed");
        Ok(Some(FlushDone {
            flushed_seq: until,
            log_from: next.log_from,
        }))
    }

    /// The target size of level `n` (1 and up): `l1_target_bytes`, times
    /// `level_size_multiplier` per level below L1.
    fn level_target(&self, n: usize) -> u64 {
        let mut target = self.options.l1_target_bytes;
        for _ in 1..n {
            target = target.saturating_mul(self.options.level_size_multiplier);
        }
        target
    }

    /// Each level's compaction score: L0's table count over its trigger; a sorted level's
    /// bytes over its target and its tables over the count its target holds, weighed by
    /// `compaction_score_weights`. A level scoring 1 or more needs a compaction; the last
    /// level never does (there is nothing below it).
    pub(crate) fn scores(&self) -> Vec<f64> {
        self.scores_of(&self.current().version)
    }

    fn scores_of(&self, version: &Version) -> Vec<f64> {
        let o = &self.options;
        let mut scores = vec![version.l0.len() as f64 / o.l0_compaction_trigger as f64];
        for n in 1..o.level_count - 1 {
            let level = version.levels.get(n - 1).map_or(&[][..], |l| &l[..]);
            let bytes: u64 = level.iter().map(|t| t.table.file_bytes()).sum();
            let target = self.level_target(n);
            if version.is_tiered(n) {
                // Merged whole once it holds as many runs as L0 may, or its size.
                scores.push(
                    (level.len() as f64 / o.l0_compaction_trigger as f64)
                        .max(bytes as f64 / target as f64),
                );
                continue;
            }
            let tables_at_target = (target / o.table_target_bytes).max(1);
            scores.push(
                bytes as f64 / target as f64 * o.compaction_score_size_weight
                    + level.len() as f64 / tables_at_target as f64
                        * o.compaction_score_count_weight,
            );
        }
        scores
    }

    /// Whether some level scores 1 or more, or a table of a sorted level points into a
    /// value-log file whose live values are due to move (see [`Tree::value_log_task`]).
    pub(crate) fn needs_compaction(&self) -> bool {
        let current = self.current();
        self.scores_of(&current.version).iter().any(|&s| s >= 1.0)
            || self
                .value_log_task(&current.version, &Default::default())
                .is_some()
    }

    /// The compaction to run next, with its tables marked busy until the guard is dropped:
    /// of the level with the highest score (at least 1) that has one whose tables no running
    /// compaction reads, or of L0 whatever its score if `force_l0` and nothing else is due.
    fn pick(&self, force_l0: bool) -> Option<(Task, Busy<'_>)> {
        // The busy marks first, then the state: a compaction swaps its outputs in before it
        // frees its marks, so a table found free here is in the state read after.
        let mut busy = self
            .busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.current();
        let version = &current.version;
        let mut due: Vec<(usize, f64)> = self
            .scores_of(version)
            .into_iter()
            .enumerate()
            .filter(|(_, s)| *s >= 1.0)
            .collect();
        due.sort_by(|a, b| b.1.total_cmp(&a.1));
        if due.is_empty() && force_l0 && !version.l0.is_empty() {
            due.push((0, 0.0));
        }
        for (level, _) in due {
            let candidates: Vec<Vec<Arc<TableFile>>> = if level == 0 {
                vec![version.l0.clone()]
            } else if version.is_tiered(level) {
                // A tiered level goes whole: its runs overlap.
                vec![version.levels[level - 1].clone()]
            } else {
                self.round_robin(version, level)
                    .into_iter()
                    .map(|t| vec![t])
                    .collect()
            };
            for upper in candidates {
                let Some(task) = task_into_next(version, level, upper) else {
                    continue;
                };
                let ids: Vec<u64> = task.upper.iter().chain(&task.lower).map(|t| t.id).collect();
                if ids.iter().any(|id| busy.contains(id)) {
                    continue;
                }
                busy.extend(&ids);
                if level > 0 && !version.is_tiered(level) {
                    self.set_cursor(level, user_key(task.upper[0].max_key()));
                }
                return Some((task, Busy { tree: self, ids }));
            }
        }
        let task = self.value_log_task(version, &busy)?;
        let ids = vec![task.upper[0].id];
        busy.extend(&ids);
        Some((task, Busy { tree: self, ids }))
    }

    /// The tables of sorted level `n` in the order compaction takes them: round robin by key,
    /// from the one after the last compacted from that level.
    fn round_robin(&self, version: &Version, n: usize) -> Vec<Arc<TableFile>> {
        let Some(level) = version.levels.get(n - 1) else {
            return Vec::new();
        };
        let after = self
            .compaction_cursors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(n)
            .cloned()
            .flatten();
        let first = level
            .iter()
            .position(|t| after.as_ref().is_none_or(|a| user_key(t.min_key()) > *a))
            .unwrap_or(0);
        level[first..]
            .iter()
            .chain(&level[..first])
            .cloned()
            .collect()
    }

    fn set_cursor(&self, n: usize, key: (u64, Bytes)) {
        let mut cursors = self
            .compaction_cursors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cursors.len() <= n {
            cursors.resize(n + 1, None);
        }
        cursors[n] = Some(key);
    }

    /// Runs the next compaction (see [`Tree::pick`]); returns whether there was one.
    ///
    /// # Errors
    /// Damaged tables; I/O errors: nothing changes then; [`crate::Error::Closed`] if `closed`
    /// is set between two output tables.
    pub(crate) async fn compact_next(
        &self,
        horizon: Horizon<'_>,
        closed: &std::sync::atomic::AtomicBool,
        force_l0: bool,
    ) -> Result<bool> {
        let Some((task, _busy)) = self.pick(force_l0) else {
            return Ok(false);
        };
        if !task.in_place && task.upper.len() == 1 && task.lower.is_empty() && task.output_level > 1
        {
            self.move_down(&task.upper[0], task.output_level).await?;
        } else {
            self.compact(task, horizon, closed).await?;
        }
        Ok(true)
    }

    /// Moves a table of a sorted level one level down, as is: nothing below overlaps it.
    pub(super) async fn move_down(&self, table: &Arc<TableFile>, level: u8) -> Result<()> {
        let edit = Edit {
            removed: vec![table.id],
            added: vec![(level, table.id)],
            ..Edit::default()
        };
        self.manifest.record(&edit).await?;
        // The same file under a new level; the old entry is not retired (the file stays).
        let moved = TableFile::new(table.id, level, table.table.clone(), self.driver().clone());
        self.swap(|s| {
            let mut next = s.clone();
            next.version = Arc::new(s.version.edit(&[table.id], vec![moved], Vec::new()));
            next
        });
        tracing::debug!(table = table.id, level, "table moved down");
        Ok(())
    }

    /// Merges a compaction's inputs into new tables of its output level (split at
    /// `table_target_bytes`, never inside one key's versions) and records the exchange.
    pub(super) async fn compact(
        &self,
        task: Task,
        horizon: Horizon<'_>,
        closed: &std::sync::atomic::AtomicBool,
    ) -> Result<()> {
        let level = task.output_level;
        // A run of a tiered level is one table, however large.
        let one_run = self.options.tiered_levels >= usize::from(level) && level >= 1;
        let inputs: Vec<Arc<TableFile>> = task.upper.into_iter().chain(task.lower).collect();
        let bytes_in: u64 = inputs.iter().map(|t| t.table.file_bytes()).sum();
        // Held for the job: the value-log files its inputs point into stay open. The version
        // only, not the state: a state would keep every memtable of the job's start alive (and
        // its memory) until the job ended, however many flushes came meanwhile.
        let version = self.current().version.clone();
        let rewrite = self.blobs_to_rewrite(&version);
        let mut blobs = BlobOut::default();
        let mut merge = Merge::new(inputs.iter().map(|t| t.table.clone()).collect()).await?;
        let mut keep = Keep::new(horizon, task.bottom);
        // The output level's compression.
        let table_options = self.options.table_options(usize::from(level));
        let mut outputs: Vec<Arc<TableFile>> = Vec::new();
        let mut writer: Option<(u64, TableWriter)> = None;
        let mut last_key: Option<(u64, Bytes)> = None;
        let mut uncompressed_out = 0;
        let result: Result<()> = async {
            while let Some(e) = merge.next().await? {
                if !keep.keep(e.bucket, &e.key, e.seq, e.value.is_tombstone()) {
                    continue;
                }
                let new_key = last_key
                    .as_ref()
                    .is_none_or(|(b, k)| *b != e.bucket || *k != e.key);
                if new_key
                    && !one_run
                    && let Some((_, w)) = &writer
                    && w.estimated_file_bytes() >= self.options.table_target_bytes
                {
                    // Closing: stop between tables (what was written is left to the next open).
                    if closed.load(std::sync::atomic::Ordering::Acquire) {
                        return Err(crate::Error::Closed);
                    }
                    let (id, w) = writer.take().expect("checked above");
                    let (table, uncompressed) = self.finish_table(id, w).await?;
                    uncompressed_out += uncompressed;
                    outputs.push(TableFile::new(id, level, table, self.driver().clone()));
                }
                if writer.is_none() {
                    let (id, path) = self.new_table_path();
                    writer = Some((
                        id,
                        TableWriter::create(self.driver(), path, &table_options).await?,
                    ));
                }
                let stored = self.place(e.value, &version, &rewrite, &mut blobs).await?;
                let (_, w) = writer.as_mut().expect("created above");
                w.add_stored(e.bucket, &e.key, e.seq, &stored).await?;
                if new_key {
                    last_key = Some((e.bucket, e.key));
                }
            }
            if let Some((id, w)) = writer.take() {
                let (table, uncompressed) = self.finish_table(id, w).await?;
                uncompressed_out += uncompressed;
                outputs.push(TableFile::new(id, level, table, self.driver().clone()));
            }
            Ok(())
        }
        .await;
        let new_blobs = match result {
            Ok(()) => match std::mem::take(&mut blobs).finish(self).await {
                // The value-log file's name made durable before the edit names it.
                Ok(b) => match sync_table_dir(self.driver(), self.tables_dir()).await {
                    Ok(()) => Ok(b),
                    Err(e) => Err(self.drop_blobs(&b, e).await),
                },
                Err((e, rest)) => Err(self.abandon(None, rest, e).await),
            },
            // The table being written (if any) and the value-log file go with the job.
            Err(e) => {
                let unfinished = writer.take().map(|(_, w)| w);
                Err(self.abandon(unfinished, blobs, e).await)
            }
        };
        let new_blobs = match new_blobs {
            Ok(b) => b,
            Err(e) => {
                for t in &outputs {
                    t.retire();
                }
                return Err(e);
            }
        };
        let blob_bytes: u64 = new_blobs.iter().map(|b| b.file_bytes()).sum();
        let removed: Vec<u64> = inputs.iter().map(|t| t.id).collect();
        let edit = Edit {
            removed: removed.clone(),
            added: outputs.iter().map(|t| (level, t.id)).collect(),
            ..Edit::default()
        };
        // An error here may come after the edit became durable (a failed fsync): the outputs
        // are left as they are, and the next open keeps or removes them by what the manifest
        // says.
        self.manifest.record(&edit).await?;
        let bytes_out: u64 = outputs.iter().map(|t| t.table.file_bytes()).sum();
        self.swap(|s| {
            let mut next = s.clone();
            next.version = Arc::new(s.version.edit(&removed, outputs, new_blobs));
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
            .fetch_add(bytes_out + blob_bytes, Relaxed);
        self.figures
            .value_log_bytes_written
            .fetch_add(blob_bytes, Relaxed);
        self.figures
            .bytes_written_uncompressed
            .fetch_add(uncompressed_out, Relaxed);
        metrics::counter!("ringtide_kv_compactions_total").increment(1);
        // Commits waiting for L0 to shrink.
        self.room.notify_waiters();
        tracing::debug!(
            tables_in = removed.len(),
            level,
            bytes_in,
            bytes_out,
            "compacted"
        );
        Ok(())
    }

    /// Finishes a table, makes its name durable and opens it for reading; returns it and what
    /// its size would be with its data blocks uncompressed.
    async fn finish_table(&self, id: u64, writer: TableWriter) -> Result<(Table, u64)> {
        let path = writer.path().to_path_buf();
        let info = writer.finish().await?;
        sync_table_dir(self.driver(), self.tables_dir()).await?;
        let table = Table::open(self.driver(), &path, id, self.cache.clone()).await?;
        Ok((table, info.uncompressed_file_bytes))
    }

    /// Removes the files of a job that failed before its edit: its table being written and its
    /// value-log file.
    async fn abandon(
        &self,
        writer: Option<TableWriter>,
        blobs: BlobOut,
        error: crate::Error,
    ) -> crate::Error {
        let mut error = error;
        if let Some(w) = writer {
            let path = w.path().to_path_buf();
            drop(w);
            error = self.remove_quietly(&path, error).await;
        }
        if let Some(w) = blobs.writer {
            let path = w.path().to_path_buf();
            drop(w);
            error = self.remove_quietly(&path, error).await;
        }
        error
    }

    /// Removes finished value-log files no edit will name (their job failed).
    async fn drop_blobs(&self, blobs: &[Arc<BlobFile>], error: crate::Error) -> crate::Error {
        let mut error = error;
        for b in blobs {
            error = self.remove_quietly(b.path(), error).await;
        }
        error
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

/// A compaction: tables of one level (all of L0, or one of a sorted level) and the tables of
/// the level below that their key range meets, merged into that level.
pub(super) struct Task {
    pub(super) output_level: u8,
    pub(super) upper: Vec<Arc<TableFile>>,
    pub(super) lower: Vec<Arc<TableFile>>,
    /// No level below the output holds data: tombstones can go.
    pub(super) bottom: bool,
    /// The inputs' level is the output's: a table rewritten where it is (its value-log
    /// pointers moved), never moved down as it is.
    pub(super) in_place: bool,
}

/// Tables a running compaction reads, unmarked when it ends (however it ends).
struct Busy<'a> {
    tree: &'a Tree,
    ids: Vec<u64>,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut busy = self
            .tree
            .busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in &self.ids {
            busy.remove(id);
        }
    }
}

/// The compaction of `upper` (tables of `level`) into the next level: with the tables of that
/// level they overlap. `None` if `upper` is empty.
pub(super) fn task_into_next(
    version: &Version,
    level: usize,
    upper: Vec<Arc<TableFile>>,
) -> Option<Task> {
    let lo = upper.iter().map(|t| user_key(t.min_key())).min()?;
    let hi = upper.iter().map(|t| user_key(t.max_key())).max()?;
    let output = level + 1;
    let below_empty = version.levels.iter().skip(output).all(|l| l.is_empty());
    if version.is_tiered(output) {
        // A new run of the tiered level below: its runs stay as they are. Tombstones can go
        // only if it is the level's first run and nothing is below.
        let empty = version.levels.get(level).is_none_or(|l| l.is_empty());
        return Some(Task {
            output_level: output as u8,
            upper,
            lower: Vec::new(),
            bottom: empty && below_empty,
            in_place: false,
        });
    }
    let lower: Vec<Arc<TableFile>> = version
        .levels
        .get(level)
        .into_iter()
        .flatten()
        .filter(|t| user_key(t.max_key()) >= lo && user_key(t.min_key()) <= hi)
        .cloned()
        .collect();
    let bottom = below_empty;
    Some(Task {
        output_level: level as u8 + 1,
        upper,
        lower,
        bottom,
        in_place: false,
    })
}

/// A table key's user part, `(bucket, key)`, for range overlaps.
pub(super) fn user_key(k: &super::memtable::InternalKey) -> (u64, Bytes) {
    (k.bucket, k.key.clone())
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
#[path = "job_tests.rs"]
mod tests;
