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
use super::blob::{BlobFile, BlobPtr, BlobWriter};
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

    /// When no level is due: the rewrite in place of the sorted-level table, not in `busy`,
    /// that points to the most bytes in value-log files due to have their live values moved
    /// (see [`Tree::blobs_to_rewrite`]). Each such rewrite leaves one table fewer pointing into
    /// them; once none does, a file is removed. (L0's tables are compacted soon anyway.)
    fn value_log_task(
        &self,
        version: &Version,
        busy: &std::collections::HashSet<u64>,
    ) -> Option<Task> {
        if version.blobs.is_empty() {
            return None;
        }
        let rewrite = self.blobs_to_rewrite(version);
        if rewrite.is_empty() {
            return None;
        }
        let (n, table, _) = version
            .levels
            .iter()
            .enumerate()
            .flat_map(|(i, level)| level.iter().map(move |t| (i + 1, t)))
            .filter(|(_, t)| !busy.contains(&t.id))
            .map(|(n, t)| {
                let bytes: u64 = t
                    .table
                    .meta()
                    .blobs
                    .iter()
                    .filter(|r| rewrite.contains(&r.file))
                    .map(|r| r.bytes)
                    .sum();
                (n, t, bytes)
            })
            .filter(|(_, _, bytes)| *bytes > 0)
            .max_by_key(|(_, _, bytes)| *bytes)?;
        // Tombstones can go if nothing below the table holds data: no level below, and no
        // older run beside it in a tiered level.
        let alone = !version.is_tiered(n) || version.levels[n - 1].len() == 1;
        Some(Task {
            output_level: n as u8,
            upper: vec![table.clone()],
            lower: Vec::new(),
            bottom: alone && version.levels.iter().skip(n).all(|l| l.is_empty()),
            in_place: true,
        })
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
                let stored = self
                    .place(e.value, &version, &rewrite, &mut blobs)
                    .await?;
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

    /// Where a compaction puts a version's value: a value at or above the separation threshold
    /// goes to the job's value-log file; a pointer into a file in `rewrite` (mostly garbage), or
    /// any pointer once separation is off, has its value read and placed again; the rest stays
    /// as it is (a pointer is copied, not its value).
    async fn place(
        &self,
        stored: Stored,
        version: &Version,
        rewrite: &std::collections::HashSet<u64>,
        blobs: &mut BlobOut,
    ) -> Result<Stored> {
        let off = self.options.value_separation_threshold_bytes == 0;
        let value = match stored {
            Stored::Blob(ptr) if off || rewrite.contains(&ptr.file) => {
                let Some(file) = version.blob(ptr.file) else {
                    return Err(crate::Error::corruption(
                        self.tables_dir(),
                        0,
                        crate::error::CorruptionKind::BadTable {
                            reason: "a value-log pointer to a file the tree does not hold",
                        },
                    ));
                };
                file.read(&ptr).await?
            }
            Stored::Value(v) => v,
            other => return Ok(other),
        };
        Ok(if self.separates(&value) {
            Stored::Blob(blobs.add(self, &value).await?)
        } else {
            Stored::Value(value)
        })
    }

    /// The value-log files whose live values compactions move out: at least
    /// `value_log_garbage_ratio` of their values' bytes no table points to.
    pub(crate) fn blobs_to_rewrite(&self, version: &Version) -> std::collections::HashSet<u64> {
        let live = version.blob_live();
        version
            .blobs
            .values()
            .filter(|f| {
                let total = f.file_bytes().saturating_sub(super::blob::BLOB_HEADER_LEN);
                let live = live.get(&f.id).map_or(0, |l| l.bytes);
                total > 0
                    && total.saturating_sub(live) as f64
                        >= total as f64 * self.options.value_log_garbage_ratio
            })
            .map(|f| f.id)
            .collect()
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

/// The value-log file a job writes (at most one: a flush writes the values it separates, a
/// compaction those it separates or moves out of files mostly garbage), created on its first
/// value.
#[derive(Default)]
pub(super) struct BlobOut {
    writer: Option<BlobWriter>,
}

impl BlobOut {
    /// Appends a value to the job's value-log file (created on the first).
    async fn add(&mut self, tree: &Tree, value: &[u8]) -> Result<BlobPtr> {
        if self.writer.is_none() {
            let (id, path) = tree.new_blob_path();
            let buffer = tree.options.table.write_buffer_bytes;
            self.writer = Some(BlobWriter::create(tree.driver(), path, id, buffer).await?);
        }
        self.writer
            .as_mut()
            .expect("created above")
            .add(value)
            .await
    }

    /// Finishes the file (fdatasync; its name is made durable with the tables') and opens it
    /// for reading; on an error, hands itself back for the caller to remove.
    async fn finish(
        mut self,
        tree: &Tree,
    ) -> std::result::Result<Vec<Arc<BlobFile>>, (crate::Error, BlobOut)> {
        let Some(w) = self.writer.take() else {
            return Ok(Vec::new());
        };
        let (id, path) = (w.id(), w.path().to_path_buf());
        let finished = async {
            w.finish().await?;
            BlobFile::open(tree.driver(), path.clone(), id, tree.cache.clone()).await
        }
        .await;
        match finished {
            Ok(f) => Ok(vec![f]),
            Err(e) => {
                let _ = tree.driver().remove_file(&path).await;
                Err((e, self))
            }
        }
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
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn keep_drops_versions_below_the_oldest_snapshot_but_the_newest() {
        let mut k = Keep::new(Horizon::at(10), false);
        // key a: 15 (above), 9 (newest at or below 10), 5 (hidden)
        assert!(k.keep(1, &b("a"), 15, false));
        assert!(k.keep(1, &b("a"), 9, false));
        assert!(!k.keep(1, &b("a"), 5, false));
        // key b: a tombstone at 8 kept above the bottom
        assert!(k.keep(1, &b("b"), 8, true));
        assert!(!k.keep(1, &b("b"), 3, false));
        // the same key in another bucket is another key
        assert!(k.keep(2, &b("b"), 2, false));
        let mut bottom = Keep::new(Horizon::at(10), true);
        assert!(!bottom.keep(1, &b("b"), 8, true));
        assert!(!bottom.keep(1, &b("b"), 3, false));
        assert!(bottom.keep(1, &b("b2"), 3, false));
        assert!(bottom.keep(1, &b("c"), 12, true));
        // a reader at 10 sees the value under the newer tombstone
        assert!(bottom.keep(1, &b("c"), 4, false));
    }

    /// Compactions picked while others hold their tables take other tables, never one a
    /// running compaction reads; the tables are free again once each ends.
    #[tokio::test]
    async fn concurrent_picks_take_disjoint_tables() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let driver = ringtide_platform::IoDriver::new(Default::default())?;
        let options = crate::kv::DbOptions::default()
            .write_buffer_bytes(64 << 10)
            .table_target_bytes(64 << 10)
            .l1_target_bytes(64 << 10)
            .l0_compaction_trigger(2)
            .max_concurrent_compactions(4)
            // Sizes as written: the level scores below count file bytes.
            .compression(crate::kv::Compression::None)
            .tree_options();
        let tree = Tree::open(
            dir.path(),
            driver,
            options,
            crate::wal::WalOptions::default(),
            false,
            Lsn(1),
        )
        .await?
        .tree;
        let mut seq = 0;
        let mut flush = async |keys: std::ops::Range<u32>| -> Result<()> {
            seq += 1;
            let value: super::super::memtable::Value = Some(Bytes::from(vec![7u8; 200]));
            let keys: Vec<Bytes> = keys.map(|i| Bytes::from(format!("k{i:06}"))).collect();
            tree.apply(seq, keys.iter().map(|k| (0, k, &value)));
            let last = seq;
            tree.rotate(Lsn(1), true, || last);
            tree.flush_oldest(0, 1).await?;
            Ok(())
        };
        // L1 of ~6 tables (6 times its target), then two L0 tables over the first of them.
        flush(0..1500).await?;
        let closed = std::sync::atomic::AtomicBool::new(false);
        assert!(tree.compact_next(Horizon::at(0), &closed, true).await?);
        flush(0..50).await?;
        flush(10..60).await?;
        let scores = tree.scores();
        assert!(scores[0] >= 1.0 && scores[1] >= 1.0, "{scores:?}");

        let mut picks = Vec::new();
        while let Some(pick) = tree.pick(false) {
            picks.push(pick);
            assert!(picks.len() < 64);
        }
        assert!(
            picks.len() >= 2,
            "compactions run side by side: {}",
            picks.len()
        );
        let mut seen = std::collections::HashSet::new();
        for (task, _) in &picks {
            for t in task.upper.iter().chain(&task.lower) {
                assert!(seen.insert(t.id), "table {} in two compactions", t.id);
            }
        }
        drop(picks);
        assert!(tree.busy.lock().unwrap().is_empty());
        assert!(tree.pick(false).is_some());
        Ok(())
    }

    /// A tiered L1 takes each L0 compaction as a new run (one table, however large) without
    /// rewriting the runs already there; at `l0_compaction_trigger` runs it is merged whole
    /// into one run of L2; reads see the newest version throughout.
    #[tokio::test]
    async fn a_tiered_level_takes_runs_whole_and_is_merged_whole() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let driver = ringtide_platform::IoDriver::new(Default::default())?;
        let options = crate::kv::DbOptions::default()
            .write_buffer_bytes(64 << 10)
            .table_target_bytes(64 << 10)
            .l1_target_bytes(16 << 20)
            .l0_compaction_trigger(2)
            .level_count(5)
            .tiered_levels(2)
            .tree_options();
        let tree = Tree::open(
            dir.path(),
            driver,
            options,
            crate::wal::WalOptions::default(),
            false,
            Lsn(1),
        )
        .await?
        .tree;
        let mut seq = 0;
        let mut flush = async |keys: std::ops::Range<u32>| -> Result<()> {
            seq += 1;
            let value: super::super::memtable::Value = Some(Bytes::from(seq.to_string()));
            let keys: Vec<Bytes> = keys.map(|i| Bytes::from(format!("k{i:06}"))).collect();
            tree.apply(seq, keys.iter().map(|k| (0, k, &value)));
            let last = seq;
            tree.rotate(Lsn(1), true, || last);
            tree.flush_oldest(0, 1).await?;
            Ok(())
        };
        let closed = std::sync::atomic::AtomicBool::new(false);
        let level = |n: usize| -> Vec<u64> {
            let v = tree.current().version.clone();
            v.levels
                .get(n - 1)
                .map_or(Vec::new(), |l| l.iter().map(|t| t.id).collect())
        };
        flush(0..3000).await?;
        flush(1000..4000).await?;
        assert!(tree.compact_next(Horizon::at(0), &closed, false).await?);
        let first = level(1);
        assert_eq!(
            first.len(),
            1,
            "one run, one table (larger than the table target)"
        );
        flush(2000..2500).await?;
        flush(3500..5000).await?;
        assert!(tree.compact_next(Horizon::at(0), &closed, false).await?);
        let two = level(1);
        assert_eq!(two.len(), 2, "a second run");
        assert_eq!(two[1], first[0], "the older run untouched, after the newer");
        assert_eq!(
            tree.get(0, b"k002100", u64::MAX).await?,
            Some(Bytes::from("3"))
        );
        assert_eq!(
            tree.get(0, b"k001100", u64::MAX).await?,
            Some(Bytes::from("2"))
        );
        // Two runs: L1 is due, merged whole into one run of L2.
        assert!(tree.scores()[1] >= 1.0, "{:?}", tree.scores());
        assert!(tree.compact_next(Horizon::at(0), &closed, false).await?);
        assert!(level(1).is_empty());
        assert_eq!(level(2).len(), 1);
        for (k, v) in [
            ("k000100", "1"),
            ("k001100", "2"),
            ("k002100", "3"),
            ("k004500", "4"),
        ] {
            assert_eq!(
                tree.get(0, k.as_bytes(), u64::MAX).await?,
                Some(Bytes::from(v)),
                "{k}"
            );
        }
        Ok(())
    }
}
