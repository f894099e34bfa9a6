//! Spare segments and rotation: the next segment is prepared in the background before the
//! stage needs it, and installed when the stage's entries reach it.
//!
//! A spare is prepared once the stage's tail segment is half full (fallocate; for logs that
//! sync every batch also written with zeros and synced), so a rotation does not wait for it and
//! its zeros do not compete with the log's own writes. The stage gives spares to entries
//! (recording a rotation point); [`Writer::rotate`] installs one where the writes reach it.
//! A call too large for the tail segment and the spare asks for room ([`Writer::make_room`]).
//!
//! Invariants:
//! 1. The stage holds at most one spare not yet given to an entry (`stage::State::spare`),
//!    and it is the last of [`Spares::ready`]; every earlier one is named by a rotation the
//!    stage recorded, in order.
//! 2. The old segment is durable before the next one holds data: otherwise a crash could keep
//!    the new segment's synced entries and lose the old one's unsynced tail — a gap.
//! 3. A segment gets its name only once its header is durable (`segment::install_segment`
//!    syncs it, renames it and syncs the directory).
//! 4. A background preparation is asked to stop and awaited, never aborted: an aborted task
//!    could leave its `open` running on the pool, creating the file after its removal.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard};

use ringtide_platform::File;

use super::{Active, Writer};
use crate::error::{Error, Result};
use crate::wal::segment::{self, DIRECT_BLOCK, HEADER_LEN, SegmentHeader};
use crate::wal::stage;
use crate::wal::{Lsn, SegmentIndex};

/// The background preparation's handle.
type Preparation = tokio::task::JoinHandle<Result<segment::Prepared>>;

/// The next segments.
#[derive(Default)]
pub(super) struct Spares {
    /// The next segment, being made ready in the background.
    preparing: Option<Preparation>,
    /// Asks the preparation in flight to stop.
    cancel: Arc<AtomicBool>,
    /// Numbers the prepared files' temporary names.
    seq: u64,
    /// A background preparation failed: the next one waits for an append that needs it.
    failed: bool,
    /// Ready segments, in the order the stage gives them out (invariant 1).
    ready: VecDeque<segment::Prepared>,
}

impl Spares {
    /// The temporary name of the next prepared file.
    fn next_name(&mut self) -> String {
        self.seq += 1;
        format!("next-{:06}", self.seq)
    }
}

impl Writer {
    /// Starts preparing the next segment in the background once the stage's tail segment is
    /// half full.
    pub(super) fn maybe_prepare(&mut self) {
        if !self.needs_preparing() {
            return;
        }
        let size = self.shared.options.segment_size_bytes;
        let name = self.spares.next_name();
        let shared = self.shared.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        self.spares.cancel = cancel.clone();
        self.spares.preparing = Some(tokio::spawn(async move {
            let res = segment::prepare_segment(
                &shared.driver,
                &shared.dir,
                &name,
                size,
                crate::wal::zero_fill(&shared.options),
                Some(&cancel),
            )
            .await;
            // The writer offers it as the spare next time it looks.
            shared.stage.wake.notify_one();
            res
        }));
    }

    /// Whether the next segment should start being prepared now.
    pub(super) fn needs_preparing(&self) -> bool {
        if self.spares.preparing.is_some() || self.spares.failed {
            return false;
        }
        let st = self.shared.stage.lock();
        st.spare.is_none() && !st.closed && st.seg_end >= st.seg_limit / 2
    }

    /// Offers the background preparation's segment as the spare, if it is done.
    pub(super) async fn collect_finished_preparation(&mut self) {
        if self
            .spares
            .preparing
            .as_ref()
            .is_some_and(|h| h.is_finished())
        {
            self.await_preparation().await;
        }
    }

    /// Waits for the background preparation, if any, and offers its segment as the spare.
    async fn await_preparation(&mut self) {
        let Some(handle) = self.spares.preparing.take() else {
            return;
        };
        match handle.await {
            Ok(Ok(prepared)) => drop(self.offer_spare(prepared)),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "preparing the next wal segment failed; an append that needs it will try again");
                self.spares.failed = true;
            }
            Err(e) => {
                tracing::debug!(error = %e, "the wal segment preparation task ended early");
                self.spares.failed = true;
            }
        }
    }

    /// Makes a ready segment the stage's spare; gives back the stage, still locked.
    fn offer_spare(&mut self, prepared: segment::Prepared) -> MutexGuard<'_, stage::State> {
        let size = prepared.size;
        self.spares.ready.push_back(prepared);
        let mut st = self.shared.stage.lock();
        assert!(st.spare.is_none(), "the stage holds one spare at a time");
        st.spare = Some(size);
        st
    }

    /// Takes back the spare the stage has not given to any entry, if any.
    fn withdraw_spare(&mut self) -> Option<segment::Prepared> {
        let offered = self.shared.stage.lock().spare.take().is_some();
        if offered {
            self.spares.ready.pop_back()
        } else {
            None
        }
    }

    /// Stages a call that fits neither the stage's tail segment nor the spare, making room for
    /// it first: grows the tail segment if it is empty, else makes a spare large enough.
    ///
    /// The call is staged under the lock that offers the room, so a call larger than a segment
    /// cannot lose the spare made for it to smaller calls that rotate into it first.
    pub(super) async fn make_room(&mut self, call: &mut stage::Call) -> Result<stage::Placed> {
        // The call passed the bounds on queued bytes when it asked for room, but other calls
        // may have been staged since (other large calls among them): if it no longer fits the
        // bounds, what is staged is written first, appends held back meanwhile.
        let over = self
            .shared
            .stage
            .lock()
            .over_bounds(call.frame_bytes, &self.shared.options);
        if over {
            self.pause_appends().await;
        }
        let placed = loop {
            if let Some(placed) = self.make_room_once(call).await.transpose() {
                break placed;
            }
        };
        if over {
            // Nothing moved the tail but this call: appends go on after it.
            self.resume_appends();
        }
        placed
    }

    /// One attempt of `make_room`: `None` if other calls took the room made (only after
    /// growing the empty tail segment, which they may fill before this call is staged).
    async fn make_room_once(&mut self, call: &mut stage::Call) -> Result<Option<stage::Placed>> {
        self.shared.check_usable()?;
        // A whole number of blocks, so that the segment can be written directly.
        let needed = (HEADER_LEN + call.frame_bytes).next_multiple_of(DIRECT_BLOCK);
        // A preparation in flight: its result first.
        self.await_preparation().await;
        let (grow, small) = {
            let mut st = self.shared.stage.lock();
            if let Some(placed) = stage::stage_made_room(&self.shared, &mut st, call)? {
                return Ok(Some(placed));
            }
            let grow = st.seg_end == HEADER_LEN;
            // A spare too small for this call is given up; a larger one is made below.
            let small = if !grow && st.spare.take().is_some() {
                self.spares.ready.pop_back()
            } else {
                None
            };
            (grow, small)
        };
        if let Some(small) = small {
            self.remove_prepared(small).await;
        }
        if grow {
            self.grow_active(needed).await?;
            let mut st = self.shared.stage.lock();
            return stage::stage_made_room(&self.shared, &mut st, call);
        }
        let name = self.spares.next_name();
        let size = self.shared.options.segment_size_bytes.max(needed);
        let prepared = segment::prepare_segment(
            &self.shared.driver,
            &self.shared.dir,
            &name,
            size,
            crate::wal::zero_fill(&self.shared.options),
            None,
        )
        .await;
        match prepared {
            Ok(prepared) => {
                self.spares.failed = false;
                let shared = self.shared.clone();
                let mut st = self.offer_spare(prepared);
                stage::stage_made_room(&shared, &mut st, call)
            }
            Err(e @ Error::DiskFull { .. }) => {
                tracing::warn!(dir = %self.shared.dir.display(), "disk full: no room for a new wal segment");
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Grows the active segment, which holds no entry yet, to `size` bytes.
    async fn grow_active(&mut self, size: u64) -> Result<()> {
        if size > self.active.allocated {
            let grow = size - self.active.allocated;
            match self.active.file.allocate(self.active.allocated, grow).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                    tracing::warn!(dir = %self.shared.dir.display(), "disk full: no room to grow the wal segment");
                    return Err(Error::DiskFull {
                        dir: self.shared.dir.clone(),
                        needed_bytes: grow,
                    });
                }
                Err(e) => return Err(self.poison(e)),
            }
            self.shared.observe.disk_grew(grow);
            self.active.allocated = size;
            self.shared.report_space();
            // Direct writes need a whole number of blocks: look again.
            self.direct.forget();
            let mut index = self.shared.index.write().unwrap_or_else(|p| p.into_inner());
            if let Some(segment) = index.segments.last_mut() {
                segment.allocated = size;
            }
        }
        let mut st = self.shared.stage.lock();
        // Only if the stage's tail is still this segment: while the space was allocated, later
        // calls may have moved the tail into the spare (the writer, busy here, has not yet
        // started it); then the caller tries again.
        if st.rotations_pending() == 0 {
            st.seg_limit = st.seg_limit.max(self.active.allocated);
        }
        Ok(())
    }

    /// Starts the segment the stage gave `first_lsn` to, on the spare it took.
    pub(super) async fn rotate(&mut self, first_lsn: Lsn) -> Result<()> {
        self.finish_early_sync().await;
        // A write to the old segment that failed (the caller waited for it), or the early sync
        // just finished, poisoned the log: a new segment now would hold entries after a gap,
        // and recovery would refuse the log ("a segment is missing") until the cut record is
        // written. Under the policies that sync every batch nothing is left unsynced, so the
        // sync below would not notice.
        self.shared.check_usable()?;
        // Invariant 2: the old segment durable before the next one holds data.
        if !self.durability.nothing_unsynced() {
            self.sync_now().await?;
        }
        let prepared = self
            .spares
            .ready
            .pop_front()
            .expect("the stage rotates only into a spare the writer offered");
        let size = prepared.size;
        let header = SegmentHeader {
            format: self.shared.format,
            log_id: self.log_id,
            epoch: self.epoch,
            first_lsn,
        };
        let (file, path, _) =
            segment::install_segment(&self.shared.driver, &self.shared.dir, prepared, header)
                .await
                .map_err(|e| self.poison(e))?;
        tracing::debug!(segment = %path.display(), first_lsn = first_lsn.0, "wal segment created");
        self.shared.observe.disk_grew(size);
        let mut index = self.shared.index.write().unwrap_or_else(|p| p.into_inner());
        index.segments.push(SegmentIndex {
            first_lsn,
            path,
            file: file.clone(),
            offsets: Vec::new(),
            end: HEADER_LEN,
            allocated: size,
            patch: None,
        });
        drop(index);
        self.shared.report_space();
        self.set_active(Active {
            file,
            write_offset: HEADER_LEN,
            allocated: size,
        });
        Ok(())
    }

    /// Makes `active` the segment the log writes to, forgetting what was known of the last one's
    /// direct writes and write-back.
    pub(super) fn set_active(&mut self, active: Active) {
        self.direct.forget();
        self.durability.new_segment();
        self.active = active;
    }

    /// A new segment for `header` outside the stage's rotations (a reset): the spare if it is
    /// large enough, else one made now.
    pub(super) async fn new_segment(
        &mut self,
        header: SegmentHeader,
        size: u64,
    ) -> Result<(File, std::path::PathBuf)> {
        self.await_preparation().await;
        match self.withdraw_spare() {
            Some(prepared) if prepared.size >= size => {
                segment::install_segment(&self.shared.driver, &self.shared.dir, prepared, header)
                    .await
                    .map(|(file, path, _)| (file, path))
            }
            other => {
                if let Some(small) = other {
                    self.remove_prepared(small).await;
                }
                segment::create_segment(
                    &self.shared.driver,
                    &self.shared.dir,
                    header,
                    size,
                    crate::wal::zero_fill(&self.shared.options),
                )
                .await
            }
        }
    }

    async fn remove_prepared(&self, prepared: segment::Prepared) {
        let _ = prepared.file.close().await;
        let _ = self.shared.driver.remove_file(&prepared.path).await;
    }

    /// Stops the background preparation (invariant 4) and removes every spare.
    pub(super) async fn discard_spares(&mut self) {
        if let Some(handle) = self.spares.preparing.take() {
            self.spares.cancel.store(true, Ordering::Release);
            // On failure or cancellation the task removed its own file.
            if let Ok(Ok(prepared)) = handle.await {
                self.remove_prepared(prepared).await;
            }
        }
        self.shared.stage.lock().spare = None;
        while let Some(prepared) = self.spares.ready.pop_front() {
            self.remove_prepared(prepared).await;
        }
    }
}
