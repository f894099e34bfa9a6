//! The compaction side of key-value separation (`blob.rs` has the files themselves): where a
//! job puts a value (`Tree::place`), which value-log files are due to have their live values
//! moved (`Tree::blobs_to_rewrite`), the in-place rewrite picked when no level is due
//! (`Tree::value_log_task`), and the one value-log file a job writes (`BlobOut`).

use std::sync::Arc;

use super::Tree;
use super::blob::{BlobFile, BlobPtr, BlobWriter};
use super::job::Task;
use super::table::Stored;
use super::version::Version;
use crate::error::Result;

impl Tree {
    /// When no level is due: the rewrite in place of the sorted-level table, not in `busy`,
    /// that points to the most bytes in value-log files due to have their live values moved
    /// (see [`Tree::blobs_to_rewrite`]). Each such rewrite leaves one table fewer pointing into
    /// them; once none does, a file is removed. (L0's tables are compacted soon anyway.)
    pub(super) fn value_log_task(
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

    /// Where a compaction puts a version's value: a value at or above the separation threshold
    /// goes to the job's value-log file; a pointer into a file in `rewrite` (mostly garbage), or
    /// any pointer once separation is off, has its value read and placed again; the rest stays
    /// as it is (a pointer is copied, not its value).
    pub(super) async fn place(
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
}

/// The value-log file a job writes (at most one: a flush writes the values it separates, a
/// compaction those it separates or moves out of files mostly garbage), created on its first
/// value.
#[derive(Default)]
pub(super) struct BlobOut {
    pub(super) writer: Option<BlobWriter>,
}

impl BlobOut {
    /// Appends a value to the job's value-log file (created on the first).
    pub(super) async fn add(&mut self, tree: &Tree, value: &[u8]) -> Result<BlobPtr> {
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
    pub(super) async fn finish(
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
