//! Truncation at both ends, and reset: the maintenance steps that change where the log starts
//! or ends. Each runs with appends paused and everything staged written (see `Command`).
//!
//! Invariants (the steps are listed in `docs/design.md`, *Truncation and reset*):
//! 1. Every step is recorded atomically before anything is destroyed: the new start in
//!    `wal.meta` (`truncate_front`), the cut record `wal.cut` (`truncate_back`), the new epoch
//!    in `wal.meta` (`reset`). A crash at any later step leaves files that recovery finishes.
//! 2. Segments are deleted one directory fsync at a time, so that a crash always leaves a
//!    prefix of the log.
//! 3. A failure once the files and the handle may disagree poisons the log: only a reopen
//!    (recovery) goes on.

use std::sync::atomic::Ordering;

use bytes::BytesMut;
use ringtide_platform::File;

use super::{Active, Writer};
use crate::error::{Error, Result};
use crate::wal::record::Decoded;
use crate::wal::segment::{CutRecord, HEADER_LEN, Meta, SegmentHeader};
use crate::wal::{Lsn, SegmentIndex};

impl Writer {
    /// Deletes segment files in the order given, each deletion made durable (directory fsync)
    /// before the next, and keeps the disk count.
    async fn delete_segments<'a>(
        &self,
        segments: impl Iterator<Item = &'a SegmentIndex>,
    ) -> std::io::Result<()> {
        let mut deleted = false;
        for segment in segments {
            if deleted {
                // fsync the directory: one deletion durable before the next, so a crash keeps
                // them in order (a truncation from the back then always leaves a prefix).
                self.shared.driver.sync_dir(&self.shared.dir).await?;
            }
            self.shared.driver.remove_file(&segment.path).await?;
            self.shared.observe.disk_shrank(segment.allocated);
            deleted = true;
        }
        if deleted {
            // fsync the directory: the last deletion survives a crash.
            self.shared.driver.sync_dir(&self.shared.dir).await?;
        }
        Ok(())
    }

    pub(super) async fn truncate_front(&mut self, lsn: Lsn) -> Result<()> {
        self.shared.check_usable()?;
        let (first, last) = (self.shared.first_lsn(), self.shared.written_lsn());
        if lsn < first || lsn > last.next() {
            return Err(Error::OutOfRange { lsn, first, last });
        }
        if lsn == first {
            return Ok(());
        }
        // The entries up to the new start must be durable before the start is recorded, or a
        // crash could leave a start beyond the log's end.
        self.sync_now().await?;
        // Record the new start atomically first: after a crash, recovery ignores what is below
        // it, whichever segments are still there.
        let meta = Meta {
            format: self.shared.format,
            log_id: self.log_id,
            epoch: self.epoch,
            first_lsn: lsn,
        };
        meta.write(&self.shared.driver, &self.shared.dir).await?;
        let victims: Vec<SegmentIndex> = {
            let mut index = self.shared.index.write().unwrap_or_else(|p| p.into_inner());
            index.first_lsn = lsn;
            // Whole segments below the new start, never the active one.
            let keep_from = index
                .segments
                .iter()
                .position(|s| s.next_lsn() > lsn)
                .unwrap_or(index.segments.len() - 1);
            index.segments.drain(..keep_from).collect()
        };
        // Deletions need not survive a crash: recovery deletes whole segments below the start.
        self.delete_segments(victims.iter())
            .await
            .map_err(|e| Error::io(&self.shared.dir, e))?;
        tracing::info!(
            first_lsn = lsn.0,
            deleted_segments = victims.len(),
            "wal truncated at the front"
        );
        Ok(())
    }

    pub(super) async fn truncate_back(&mut self, lsn: Lsn) -> Result<()> {
        self.shared.check_usable()?;
        let (first, last) = (self.shared.first_lsn(), self.shared.written_lsn());
        if lsn.next() < first || lsn > last {
            return Err(Error::OutOfRange { lsn, first, last });
        }
        if lsn == last {
            return Ok(());
        }
        // Record the cut durably before destroying anything: frames past it are removed by
        // steps that a power loss may leave half done (a frame rewritten in place and torn at a
        // sector boundary, a truncation whose sectors land in any mix), and recovery must know
        // where the log ends to finish the job instead of taking the remains for damage.
        let record = CutRecord {
            format: self.shared.format,
            log_id: self.log_id,
            epoch: self.epoch,
            lsn,
        };
        record
            .write(&self.shared.driver, &self.shared.dir)
            .await
            .map_err(|e| self.poison(e))?;
        // Readers stop at `lsn` from now on; streams past it end.
        self.shared.stage.forget_recent_after(lsn);
        self.shared.written.store(lsn.0, Ordering::Release);
        self.shared.appended.store(lsn.0, Ordering::Release);
        self.shared.cut_lsn.store(lsn.0, Ordering::Release);
        self.shared.cuts.fetch_add(1, Ordering::AcqRel);
        if self.shared.durable_lsn() > lsn {
            self.shared.durable.send_replace(lsn.0);
        }
        let (keep, cut_segment, later) = {
            let index = self.shared.index.read().unwrap_or_else(|p| p.into_inner());
            // The segment that holds lsn + 1 keeps its frames up to lsn; later ones go.
            let k = index
                .segments
                .iter()
                .rposition(|s| s.first_lsn <= lsn.next())
                .unwrap_or(0);
            let seg = &index.segments[k];
            let keep = usize::try_from(lsn.next().0 - seg.first_lsn.0)
                .expect("a segment's entries are indexed in memory");
            (keep, seg.clone(), index.segments[k + 1..].to_vec())
        };
        // Delete later segments from the last backwards, so a crash leaves a prefix of the log.
        self.delete_segments(later.iter().rev())
            .await
            .map_err(|e| self.poison(e))?;
        let cut = cut_segment
            .offsets
            .get(keep)
            .map_or(cut_segment.end, |&o| u64::from(o));
        // If the kept part ends inside a batch, make its last frame the batch's end, so recovery
        // keeps it.
        if keep > 0 {
            let start = u64::from(cut_segment.offsets[keep - 1]);
            self.end_batch_at(&cut_segment.file, start, cut).await?;
        }
        self.cut_segment_at(&cut_segment, cut).await?;
        CutRecord::remove(&self.shared.driver, &self.shared.dir)
            .await
            .map_err(|e| self.poison(e))?;
        {
            let mut index = self.shared.index.write().unwrap_or_else(|p| p.into_inner());
            let k = index
                .segments
                .iter()
                .position(|s| s.first_lsn == cut_segment.first_lsn)
                .unwrap_or(0);
            index.segments.truncate(k + 1);
            let seg = &mut index.segments[k];
            seg.offsets.truncate(keep);
            seg.end = cut;
        }
        self.set_active(Active {
            file: cut_segment.file.clone(),
            write_offset: cut,
            allocated: cut_segment.allocated.max(cut + 1),
        });
        self.durability.forget_unsynced();
        self.shared
            .durable
            .send_replace(lsn.0.min(self.shared.durable_lsn().0));
        tracing::info!(last_lsn = lsn.0, "wal truncated at the back");
        Ok(())
    }

    /// Cuts `segment` at `cut` and re-extends it with zeros: frames past the cut must never be
    /// read again, not even by recovery's search for valid data after damage.
    async fn cut_segment_at(&self, segment: &SegmentIndex, cut: u64) -> Result<()> {
        // The cut and the zeros after it are durable before the cut record goes.
        crate::wal::segment::cut_tail(&segment.file, cut, segment.allocated)
            .await
            .map_err(|e| self.poison(e))
    }

    /// Clears the "batch continues" flag of the frame at `start..end` if it is set. The cut record
    /// written before lets recovery repair a rewrite torn by a power loss.
    async fn end_batch_at(&self, file: &File, start: u64, end: u64) -> Result<()> {
        let len = usize::try_from(end - start).expect("a frame fits in memory");
        let (res, buf) = file
            .read_exact_at(BytesMut::with_capacity(len), start)
            .await;
        res.map_err(|e| self.poison(e))?;
        let mut frame = buf;
        let continues = matches!(
            self.shared.format.decode(&frame, 0, u64::MAX),
            Decoded::Frame(ref f) if f.continues
        );
        if !continues {
            return Ok(());
        }
        self.shared.format.clear_continues(&mut frame);
        // Written with its fdatasync: the batch's new end is durable before the cut.
        let (res, _) = file.writev_sync_at(vec![frame.freeze()], start).await;
        res.map(drop).map_err(|e| self.poison(e))
    }

    pub(super) async fn reset(&mut self, next: Lsn) -> Result<()> {
        self.shared.check_usable()?;
        // Once the new epoch may be recorded, the handle and the files can disagree on any
        // failure: poison, so that only a reopen (recovery) goes on.
        self.reset_steps(next).await.map_err(|e| self.poison(e))
    }

    async fn reset_steps(&mut self, next: Lsn) -> Result<()> {
        let epoch = self.epoch + 1;
        // Record the reset atomically first: from here recovery ignores (and deletes) the older
        // epoch's segments.
        let meta = Meta {
            format: self.shared.format,
            log_id: self.log_id,
            epoch,
            first_lsn: next,
        };
        meta.write(&self.shared.driver, &self.shared.dir).await?;
        self.shared.stage.forget_recent_after(Lsn(next.0 - 1));
        self.shared.written.store(next.0 - 1, Ordering::Release);
        self.shared.appended.store(next.0 - 1, Ordering::Release);
        self.shared.cut_lsn.store(0, Ordering::Release);
        self.shared.cuts.fetch_add(1, Ordering::AcqRel);
        self.shared.durable.send_replace(next.0 - 1);
        let size = self.shared.options.segment_size_bytes;
        let header = SegmentHeader {
            format: self.shared.format,
            log_id: self.log_id,
            epoch,
            first_lsn: next,
        };
        let (file, path) = self.new_segment(header, size).await?;
        let old: Vec<SegmentIndex> = {
            let mut index = self.shared.index.write().unwrap_or_else(|p| p.into_inner());
            index.first_lsn = next;
            let new = SegmentIndex {
                first_lsn: next,
                path: path.clone(),
                file: file.clone(),
                offsets: Vec::new(),
                end: HEADER_LEN,
                allocated: size,
                patch: None,
            };
            std::mem::replace(&mut index.segments, vec![new])
        };
        self.epoch = epoch;
        self.set_active(Active {
            file,
            write_offset: HEADER_LEN,
            allocated: size,
        });
        self.durability.forget_unsynced();
        self.shared.observe.disk_grew(size);
        // The old epoch's files are leftovers from here on: recovery deletes any a crash keeps.
        self.delete_segments(old.iter())
            .await
            .map_err(|e| Error::io(&self.shared.dir, e))?;
        tracing::info!(next_lsn = next.0, epoch, "wal reset");
        Ok(())
    }
}
