//! `compact_range` (RocksDB's `CompactRange`): the tables holding keys of a range pushed down
//! to the last level that holds data, level by level, and that level's tables in the range
//! rewritten — the compactions of `job.rs`, chosen by key range instead of by score.

use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

use super::Tree;
use super::job::{Horizon, Task, task_into_next, user_key};
use super::version::TableFile;
use crate::error::Result;

/// A range of user keys `(bucket, key)` to compact.
#[derive(Debug, Clone)]
pub(crate) struct KeyRange {
    pub(crate) start: Bound<(u64, Bytes)>,
    pub(crate) end: Bound<(u64, Bytes)>,
}

impl KeyRange {
    /// Whether `table` holds a key in the range (by its first and last key).
    fn overlaps(&self, table: &TableFile) -> bool {
        let (min, max) = (user_key(table.min_key()), user_key(table.max_key()));
        let after_start = match &self.start {
            Bound::Included(s) => max >= *s,
            Bound::Excluded(s) => max > *s,
            Bound::Unbounded => true,
        };
        let before_end = match &self.end {
            Bound::Included(e) => min <= *e,
            Bound::Excluded(e) => min < *e,
            Bound::Unbounded => true,
        };
        after_start && before_end
    }
}

impl Tree {
    /// Compacts every table holding keys in `range` down to the last level that holds data,
    /// and rewrites that level's tables in the range (dropping tombstones and versions no
    /// snapshot can see). L0 goes whole (its tables overlap in seqs, so a part of it cannot
    /// move below the rest). Tables of a level with nothing under them in the level below are
    /// moved down as they are. The caller flushed first and holds every compaction permit.
    ///
    /// # Errors
    /// As [`Tree::compact_next`]; the steps done before an error stay done.
    pub(crate) async fn compact_range(
        &self,
        range: &KeyRange,
        horizon: Horizon<'_>,
        closed: &std::sync::atomic::AtomicBool,
    ) -> Result<()> {
        // Tables written from here on: at the last level, only by compactions to the bottom,
        // which dropped what they could already.
        let first_new = self
            .next_table_id
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut level = 0;
        loop {
            let current = self.current();
            let version = &current.version;
            let Some(last) = version
                .levels
                .iter()
                .rposition(|l| !l.is_empty())
                .map(|i| i + 1)
            else {
                // Only L0 (or nothing): L0 into L1.
                if !version.l0.is_empty() && version.l0.iter().any(|t| range.overlaps(t)) {
                    let task =
                        task_into_next(version, 0, version.l0.clone()).expect("L0 is not empty");
                    self.compact(task, horizon, closed).await?;
                }
                return Ok(());
            };
            if level > last {
                return Ok(());
            }
            let upper: Vec<Arc<TableFile>> = if level == 0 {
                if version.l0.iter().any(|t| range.overlaps(t)) {
                    version.l0.clone()
                } else {
                    Vec::new()
                }
            } else if version.is_tiered(level) {
                // A tiered level goes whole, as L0: its runs overlap in keys.
                let runs = &version.levels[level - 1];
                if runs.iter().any(|t| range.overlaps(t)) {
                    runs.clone()
                } else {
                    Vec::new()
                }
            } else {
                version.levels[level - 1]
                    .iter()
                    .filter(|t| range.overlaps(t))
                    .cloned()
                    .collect()
            };
            if upper.is_empty() {
                level += 1;
                continue;
            }
            if level == last && version.is_tiered(level) {
                // The runs merged into one, in place (unless that one run is this call's).
                let done = upper.len() == 1 && upper[0].id >= first_new;
                drop(current);
                if !done {
                    let task = Task {
                        output_level: level as u8,
                        upper,
                        lower: Vec::new(),
                        bottom: true,
                        in_place: true,
                    };
                    self.compact(task, horizon, closed).await?;
                }
                return Ok(());
            }
            if level == last {
                // Runs of neighbouring tables, split at those this call wrote: a run's outputs
                // stay within its own key range, so no output overlaps a table it skips.
                let mut runs: Vec<Vec<Arc<TableFile>>> = vec![Vec::new()];
                for t in upper {
                    if t.id >= first_new {
                        runs.push(Vec::new());
                    } else {
                        runs.last_mut().expect("one run at least").push(t);
                    }
                }
                drop(current);
                for run in runs.into_iter().filter(|r| !r.is_empty()) {
                    let task = Task {
                        output_level: level as u8,
                        upper: run,
                        lower: Vec::new(),
                        bottom: true,
                        in_place: true,
                    };
                    self.compact(task, horizon, closed).await?;
                }
                return Ok(());
            }
            let task = task_into_next(version, level, upper).expect("upper is not empty");
            // Tables moved down as they are must not overlap each other: a sorted level's, or
            // a tiered level's one run.
            let movable = !version.is_tiered(level) || task.upper.len() == 1;
            drop(current);
            if task.lower.is_empty() && level > 0 && movable {
                for t in &task.upper {
                    self.move_down(t, task.output_level).await?;
                }
            } else {
                self.compact(task, horizon, closed).await?;
            }
            if closed.load(std::sync::atomic::Ordering::Acquire) {
                return Err(crate::Error::Closed);
            }
            level += 1;
        }
    }
}
