//! Writing what was taken from the stage, and publishing it once written.
//!
//! One verb per step: [`Writer::take_staged`] takes everything staged; [`Writer::write_taken`]
//! splits it into [`Pieces`] (one per segment it reaches into and per `max_batch_bytes`),
//! rotates to each new segment before its first piece, and sends each piece with
//! [`Writer::write_piece`], the one place a write is sent; [`Writer::publish_done`] publishes a
//! finished write.
//!
//! Invariants:
//! 1. One write in flight at a time (`Writer::in_flight`; see the module documentation of
//!    `writer`).
//! 2. A piece starts where the last write ended and ends within the active segment's allocated
//!    bytes: asserted before every write, where the frames meet the disk.
//! 3. Publication does not await (a leader's future may be dropped at any await): what needs
//!    I/O after it (a cut record, a `Periodic` sync) is left for the writer task.
//! 4. Once the log is poisoned no write is acknowledged, whatever its own I/O did.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use ringtide_platform::File;

use super::Writer;
use super::leader::Publisher;
use crate::wal::Lsn;
use crate::wal::batch_io::Party;
use crate::wal::recent::StagedEntry;
use crate::wal::stage::{Rotation, Taken};

/// A submitted write: what its publication needs once its I/O is done.
pub(super) struct Launched {
    first: Lsn,
    last: Lsn,
    offsets: Vec<u32>,
    end: u64,
    bytes: u64,
    pub(super) sync: bool,
    /// Set on the last piece of what was taken: its ticket, calls and payload bytes.
    ticket: Option<u64>,
    calls: usize,
    payload_bytes: u64,
    started: Instant,
    /// On the last piece: the whole buffer taken, to give back to the stage once written.
    recycle: Option<Bytes>,
    /// On the last piece: every taken entry from this lsn on, for the window of recent entries.
    recent: (Lsn, Vec<StagedEntry>),
    /// The file system refused the write through `O_DIRECT` (`EINVAL`), so it was made
    /// buffered: the log writes buffered from now on.
    pub(super) direct_refused: bool,
    /// A direct write's block buffer, back from the kernel, to be reused.
    pub(super) direct_buf: Option<Bytes>,
}

/// A submitted write's outcome, taken by whoever publishes it.
type IoDone = (std::io::Result<()>, Launched);

/// A submitted write, as a future two parties can drive: the writer task, or the appender that
/// launched it and waits for it (see `leader.rs`).
pub(super) type BatchIo = crate::wal::batch_io::BatchIo<IoDone>;

/// The write in flight.
pub(super) struct InFlight {
    pub(super) io: BatchIo,
    /// Who publishes it (the leader hand-off).
    pub(super) publisher: Publisher,
}

/// How a write is made.
#[derive(Debug, Clone, Copy)]
enum WriteMode {
    /// No sync.
    Plain,
    /// `RWF_DSYNC`: this range durable; nothing earlier is unsynced.
    Dsync,
    /// Linked to an fdatasync of the whole segment.
    ThenSync,
}

/// Writes `chunk` at `base` as `mode` says; gives the buffer back.
async fn write_with(
    mode: WriteMode,
    file: &File,
    chunk: Bytes,
    base: u64,
) -> (std::io::Result<()>, Option<Bytes>) {
    let (res, mut bufs) = match mode {
        WriteMode::Plain => file.writev_at(vec![chunk], base).await,
        WriteMode::Dsync => file.writev_dsync_at(vec![chunk], base).await,
        WriteMode::ThenSync => file.writev_sync_at(vec![chunk], base).await,
    };
    (res.map(drop), bufs.pop())
}

/// One write's share of what was taken: frames `frames`, at `bytes` of the taken buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Piece {
    pub(super) frames: Range<usize>,
    pub(super) bytes: Range<usize>,
    /// The piece is the first of a new segment, whose first lsn this is.
    pub(super) starts_segment: Option<Lsn>,
}

impl Piece {
    /// Everything taken, as one piece (it must start no segment).
    pub(super) fn whole(taken: &Taken) -> Piece {
        Piece {
            frames: 0..taken.offsets.len(),
            bytes: 0..taken.buf.len(),
            starts_segment: None,
        }
    }
}

/// Splits taken frames into pieces: at every rotation, and after the frames that start within
/// `max_batch_bytes` of a piece's first (a piece holds at least one frame). Pure; allocates
/// nothing.
pub(super) struct Pieces<'a> {
    /// Each frame's offset in its segment.
    offsets: &'a [u32],
    rotations: &'a [Rotation],
    /// The taken bytes.
    len: usize,
    max_batch_bytes: usize,
    next_rotation: usize,
    frame: usize,
    byte: usize,
}

impl<'a> Pieces<'a> {
    pub(super) fn new(
        offsets: &'a [u32],
        rotations: &'a [Rotation],
        len: usize,
        max_batch_bytes: usize,
    ) -> Pieces<'a> {
        Pieces {
            offsets,
            rotations,
            len,
            max_batch_bytes,
            next_rotation: 0,
            frame: 0,
            byte: 0,
        }
    }
}

impl Iterator for Pieces<'_> {
    type Item = Piece;

    fn next(&mut self) -> Option<Piece> {
        let (frame, byte, offsets) = (self.frame, self.byte, self.offsets);
        if frame >= offsets.len() {
            return None;
        }
        let mut starts_segment = None;
        if let Some(rot) = self.rotations.get(self.next_rotation)
            && rot.frame == frame
        {
            self.next_rotation += 1;
            starts_segment = Some(rot.lsn);
        }
        // The segment's frames end at the next rotation.
        let next = self.rotations.get(self.next_rotation);
        let (mut end, mut byte_end) = next.map_or((offsets.len(), self.len), |r| (r.frame, r.byte));
        if byte_end - byte > self.max_batch_bytes {
            // The frames that start within the batch size (at least one).
            let limit = u64::from(offsets[frame]) + self.max_batch_bytes as u64;
            let fit = offsets[frame..end].partition_point(|&o| u64::from(o) < limit);
            let cut = frame + fit.max(1);
            if cut < end {
                byte_end = byte + (offsets[cut] - offsets[frame]) as usize;
                end = cut;
            }
        }
        self.frame = end;
        self.byte = byte_end;
        Some(Piece {
            frames: frame..end,
            bytes: byte..byte_end,
            starts_segment,
        })
    }
}

impl Writer {
    /// Takes everything staged; appenders held back by a full stage may go on.
    pub(super) fn take_staged(&self) -> Option<Taken> {
        let (taken, was_full) = {
            let mut st = self.shared.stage.lock();
            // Appenders wait once their call would take the stage past the bound; wake them
            // whenever a nearly full stage empties (the bytes of one more call are not known).
            let full = st.staged_bytes() as u64 * 2 >= self.shared.options.max_batch_bytes;
            (st.take(), full)
        };
        if was_full {
            self.shared.stage.notify_waiters();
        }
        taken
    }

    /// Takes everything staged and writes it.
    pub(super) async fn write_staged(&mut self) {
        if let Some(taken) = self.take_staged() {
            self.write_taken(taken).await;
        }
    }

    /// Writes everything staged and waits for it.
    pub(super) async fn flush(&mut self) {
        while let Some(taken) = self.take_staged() {
            self.write_taken(taken).await;
        }
        self.finish_write().await;
    }

    /// Writes what was taken from the stage, piece by piece (after installing each new
    /// segment); the last piece linked to an fdatasync where asked. Each is published by
    /// [`publish_done`](Self::publish_done) when its I/O is done.
    async fn write_taken(&mut self, mut taken: Taken) {
        if !self.usable_for(&taken, 0) {
            return;
        }
        let mut recent = std::mem::take(&mut taken.recent);
        let max_batch = self.shared.options.max_batch_bytes as usize;
        let pieces = Pieces::new(&taken.offsets, &taken.rotations, taken.buf.len(), max_batch);
        for piece in pieces {
            if let Some(first_lsn) = piece.starts_segment {
                // The writes before go into the old segment, which must be durable before the
                // new one holds data.
                self.finish_write().await;
                if let Err(err) = self.rotate(first_lsn).await {
                    tracing::debug!(error = %err, "wal rotation failed");
                    self.release((taken.buf.len() - piece.bytes.start) as u64);
                    self.shared.stage.notify_waiters();
                    return;
                }
            }
            // One write in flight at a time.
            self.finish_write().await;
            if !self.usable_for(&taken, piece.bytes.start) {
                return;
            }
            self.direct.ensure(&self.shared, &self.active).await;
            // The writer task drives it from `in_flight`.
            drop(self.write_piece(&taken, piece, &mut recent));
        }
    }

    /// Whether the log can still be written; if not, gives back the queue room of what was taken
    /// from `from` on and wakes the waiters (they find the poison).
    pub(super) fn usable_for(&self, taken: &Taken, from: usize) -> bool {
        if self.shared.check_usable().is_ok() {
            return true;
        }
        self.release((taken.buf.len() - from) as u64);
        self.shared.stage.notify_waiters();
        false
    }

    /// Gives back queue room for bytes that will not be written, or were.
    fn release(&self, bytes: u64) {
        let mut st = self.shared.stage.lock();
        st.pending_bytes = st.pending_bytes.saturating_sub(bytes);
    }

    /// Sends `piece` of what was taken as one write at the active segment's end, and makes it
    /// the write in flight. The last piece carries the ticket and, where asked, the sync: if
    /// everything before is already durable the write carries `RWF_DSYNC` (durable for its own
    /// range, one request); otherwise it is linked to an fdatasync that covers everything
    /// written before it in this segment (earlier segments were synced at rotation).
    /// `recent` holds the taken entries for the window of recent entries: the last piece takes
    /// them.
    pub(super) fn write_piece(
        &mut self,
        taken: &Taken,
        piece: Piece,
        recent: &mut Vec<StagedEntry>,
    ) -> BatchIo {
        assert!(self.in_flight.is_none(), "one write in flight at a time");
        let last_piece = piece.frames.end == taken.offsets.len();
        let sync = last_piece && (taken.sync || self.shared.options.sync_policy.syncs_each_batch());
        let chunk = taken.buf.slice(piece.bytes);
        let base = self.active.write_offset;
        let end = base + chunk.len() as u64;
        // Where the frames meet the disk: they go where the stage placed them, inside the
        // segment.
        assert_eq!(
            u64::from(taken.offsets[piece.frames.start]),
            base,
            "a piece starts where the last write ended"
        );
        assert!(
            end <= self.active.allocated,
            "a write ending at {end} past the segment's {} bytes",
            self.active.allocated
        );
        let frames = piece.frames;
        let launched = Launched {
            first: Lsn(taken.first_lsn.0 + frames.start as u64),
            last: Lsn(taken.first_lsn.0 + frames.end as u64 - 1),
            offsets: taken.offsets[frames].to_vec(),
            end,
            bytes: chunk.len() as u64,
            sync,
            ticket: last_piece.then_some(taken.ticket),
            calls: if last_piece { taken.calls } else { 0 },
            payload_bytes: if last_piece { taken.payload_bytes } else { 0 },
            started: Instant::now(),
            recycle: last_piece.then(|| taken.buf.clone()),
            recent: (
                taken.first_lsn,
                if last_piece {
                    std::mem::take(recent)
                } else {
                    Vec::new()
                },
            ),
            direct_refused: false,
            direct_buf: None,
        };
        self.active.write_offset = end;
        let mode = match (sync, self.durability.nothing_unsynced()) {
            (false, _) => WriteMode::Plain,
            (true, true) => WriteMode::Dsync,
            (true, false) => WriteMode::ThenSync,
        };
        let io = self.piece_io(chunk, base, mode, launched);
        self.in_flight = Some(InFlight {
            io: io.clone(),
            publisher: Publisher::WriterTask,
        });
        io
    }

    /// The I/O of one piece: direct where the active segment allows it and the piece is large
    /// enough, buffered otherwise (and after a refused direct write).
    fn piece_io(
        &mut self,
        chunk: Bytes,
        base: u64,
        mode: WriteMode,
        launched: Launched,
    ) -> BatchIo {
        let direct = if chunk.len() >= self.direct.min_bytes() {
            self.direct.blocks_for(&chunk, base)
        } else {
            None
        };
        // A direct write keeps what a buffered one needs, in case the file system refuses it.
        let (file, chunk, base, buffered) = match direct {
            Some((file, blocks, start)) => (
                file,
                blocks,
                start,
                Some((self.active.file.clone(), chunk, base)),
            ),
            None => {
                self.direct.track_tail(&chunk, base);
                self.durability.wrote_buffered(chunk.len() as u64);
                (self.active.file.clone(), chunk, base, None)
            }
        };
        let io: Pin<Box<dyn Future<Output = IoDone> + Send>> = Box::pin(async move {
            let mut launched = launched;
            let (mut res, buf) = write_with(mode, &file, chunk, base).await;
            if buffered.is_some() {
                launched.direct_buf = buf;
            }
            // `EINVAL` from a direct write: the request was refused before any I/O (alignment
            // the file system wants and the log cannot know); the same bytes are written
            // buffered instead. Anything already written of it is written again, unchanged.
            if let (Err(e), Some((file, chunk, base))) = (&res, buffered)
                && e.kind() == std::io::ErrorKind::InvalidInput
            {
                launched.direct_refused = true;
                res = write_with(mode, &file, chunk, base).await.0;
            }
            (res, launched)
        });
        BatchIo::new(io)
    }

    /// Waits for the write in flight, if any, and publishes it.
    pub(super) async fn finish_write(&mut self) {
        let Some(io) = self.in_flight.as_ref().map(|f| f.io.clone()) else {
            return;
        };
        io.wait(Party::Writer).await;
        self.publish_done();
    }

    /// Publishes the write in flight, which must be done.
    pub(super) fn publish_done(&mut self) {
        let in_flight = self.in_flight.take().expect("a write in flight to publish");
        let (res, launched) = in_flight
            .io
            .take_outcome()
            .expect("a write is published once, and only once done");
        self.publish(res, launched);
    }

    /// Publishes a write whose I/O is done: index, last lsn, durable lsn, then the tickets,
    /// which wake the waiters. Does not await (invariant 3).
    fn publish(&mut self, res: std::io::Result<()>, mut launched: Launched) {
        self.release(launched.bytes);
        self.direct.write_returned(&mut launched, &self.shared.dir);
        if let Some(buf) = launched.recycle.take() {
            self.shared.stage.lock().recycle(buf);
        }
        if self.shared.check_usable().is_err() {
            // An earlier write failed: this one is not acknowledged, whatever its own I/O did.
            self.shared.stage.notify_waiters();
            return;
        }
        if let Err(e) = res {
            self.write_failed(e, launched.sync);
            return;
        }
        {
            let mut index = self.shared.index.write().unwrap_or_else(|p| p.into_inner());
            let segment = index.segments.last_mut().expect("an active segment");
            segment.offsets.extend_from_slice(&launched.offsets);
            segment.end = launched.end;
        }
        // Into the window once the waiters are on their way: readers that find an entry
        // written but not in the window read it from the file (see `recent.rs`).
        let recent = std::mem::take(&mut launched.recent);
        self.shared
            .written
            .store(launched.last.0, Ordering::Release);
        let entries = launched.last.0 + 1 - launched.first.0;
        self.shared.observe.batch(entries, launched.payload_bytes);
        if let Some(ticket) = launched.ticket {
            self.durability.written(ticket);
        }
        if launched.sync {
            self.record_sync(launched.started);
            self.mark_durable(launched.last);
        } else if self.unsynced_written(entries) {
            // A sync is due first; the waiters hear of this write after it.
            self.shared.stage.keep_recent(recent);
            return;
        }
        self.publish_progress();
        self.shared.stage.keep_recent(recent);
        if launched.sync {
            // Nothing is in flight now. The appenders that staged during the I/O are already
            // there; the ones just acknowledged are on their way back.
            let calls = self.shared.stage.lock().calls + launched.calls;
            self.batching.expect_returns(calls, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation(frame: usize, byte: usize, lsn: u64) -> Rotation {
        Rotation {
            frame,
            byte,
            lsn: Lsn(lsn),
        }
    }

    fn piece(frames: Range<usize>, bytes: Range<usize>, starts: Option<u64>) -> Piece {
        Piece {
            frames,
            bytes,
            starts_segment: starts.map(Lsn),
        }
    }

    #[test]
    fn frames_within_one_segment_and_batch_are_one_piece() {
        let offsets = [64, 164, 264];
        let pieces: Vec<_> = Pieces::new(&offsets, &[], 300, 4096).collect();
        assert_eq!(pieces, vec![piece(0..3, 0..300, None)]);
    }

    #[test]
    fn pieces_split_at_the_batch_size_with_at_least_one_frame_each() {
        // Frames of 100 bytes from offset 64, batches of 250 bytes: a piece takes the frames
        // that start within the batch size of its first.
        let offsets = [64, 164, 264, 364, 464, 564, 664];
        let pieces: Vec<_> = Pieces::new(&offsets, &[], 700, 250).collect();
        assert_eq!(
            pieces,
            vec![
                piece(0..3, 0..300, None),
                piece(3..6, 300..600, None),
                piece(6..7, 600..700, None),
            ]
        );
        // A frame larger than a batch is a piece of its own.
        let offsets = [64, 1064];
        let pieces: Vec<_> = Pieces::new(&offsets, &[], 1100, 250).collect();
        assert_eq!(
            pieces,
            vec![piece(0..1, 0..1000, None), piece(1..2, 1000..1100, None)]
        );
    }

    #[test]
    fn pieces_split_at_rotations_and_name_the_new_segment() {
        // Two frames in the old segment, then two in a new one from lsn 12 (offsets restart
        // after the 64-byte header).
        let offsets = [900, 1000, 64, 164];
        let rotations = [rotation(2, 200, 12)];
        let pieces: Vec<_> = Pieces::new(&offsets, &rotations, 400, 4096).collect();
        assert_eq!(
            pieces,
            vec![piece(0..2, 0..200, None), piece(2..4, 200..400, Some(12))]
        );
        // Everything staged starts a new segment.
        let offsets = [64, 164];
        let rotations = [rotation(0, 0, 5)];
        let pieces: Vec<_> = Pieces::new(&offsets, &rotations, 200, 4096).collect();
        assert_eq!(pieces, vec![piece(0..2, 0..200, Some(5))]);
    }

    #[test]
    fn no_frames_no_pieces() {
        assert_eq!(Pieces::new(&[], &[], 0, 4096).count(), 0);
    }
}
