//! The stage: where appenders put their entries, encoded, for the writer to take.
//!
//! An append does its own work on the caller's task: under one short lock it checks that the
//! entries have room, assigns their lsns, encodes every frame into the stage's buffer and takes
//! a ticket. Then it waits only as long as the sync policy asks: not at all under
//! `SyncPolicy::None`, until its ticket is written under `Periodic`, until it is durable under
//! `Immediate` and `Grouped`. The writer task takes everything staged at once and writes it with
//! one submission. No channel message, no allocation and no task switch per append.
//!
//! Lsns are only assigned once the entries are sure to have a place: the stage knows how much
//! room the segment its tail goes into has left, and whether the writer has a spare segment
//! ready. An append that fits neither asks the writer to make room first; a full disk then fails
//! that append with `Error::DiskFull`, and nothing was assigned.
//!
//! Tickets count staged calls, one each, and are never reused (unlike lsns, which a truncation
//! at the back gives out again): the writer publishes the last ticket written and the last one
//! durable in [`Progress`], and waiters watch it.

use std::ops::Range;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use tokio::sync::{Notify, watch};

use super::recent::{RecentEntries, StagedEntry};
use super::record::FrameFields;
use super::segment::HEADER_LEN;
use super::{Lsn, Record, Shared};
use crate::error::{Error, Result};

/// The entries of one append call.
pub(crate) enum Records {
    One(Record),
    Many(Vec<Record>),
}

impl Records {
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, Record> {
        match self {
            Records::One(r) => std::slice::from_ref(r).iter(),
            Records::Many(v) => v.iter(),
        }
    }

    fn iter_mut(&mut self) -> std::slice::IterMut<'_, Record> {
        match self {
            Records::One(r) => std::slice::from_mut(r).iter_mut(),
            Records::Many(v) => v.iter_mut(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Records::One(_) => 1,
            Records::Many(v) => v.len(),
        }
    }
}

/// One append call, encoded sizes included.
pub(crate) struct Call {
    pub(crate) records: Records,
    /// The encoded size of its frames.
    pub(crate) frame_bytes: u64,
    /// The size of its entries.
    pub(crate) payload_bytes: u64,
    /// It waits for a sync.
    pub(crate) sync: bool,
}

/// A staged call: its lsns and its ticket.
pub(crate) type Placed = (Range<Lsn>, u64);

/// What the writer has done, in tickets.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Progress {
    /// Every call up to this ticket is written (readable through the file).
    pub(crate) written: u64,
    /// Every call up to this ticket is durable.
    pub(crate) durable: u64,
}

/// A point in the staged frames where the next segment begins.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rotation {
    /// The first frame that goes into the new segment, as an index into the staged frames.
    pub(crate) frame: usize,
    /// Its position in the staged bytes.
    pub(crate) byte: usize,
    /// Its lsn: the new segment's first.
    pub(crate) lsn: Lsn,
}

/// Everything staged, as the writer takes it.
pub(crate) struct Taken {
    pub(crate) buf: Bytes,
    /// Each frame's offset in the segment it goes into.
    pub(crate) offsets: Vec<u32>,
    pub(crate) rotations: Vec<Rotation>,
    pub(crate) first_lsn: Lsn,
    /// The last ticket among the calls taken.
    pub(crate) ticket: u64,
    pub(crate) calls: usize,
    pub(crate) payload_bytes: u64,
    /// A call asked for an fdatasync whatever the policy.
    pub(crate) sync: bool,
    /// The taken entries' payloads for the window of recent entries, one per frame from
    /// `first_lsn` (empty if the log keeps no window).
    pub(crate) recent: Vec<StagedEntry>,
}

/// The stage buffer's first capacity.
const BUFFER_BYTES: usize = 1 << 20;
/// Buffers kept for reuse, and the largest kept.
const POOLED_BUFFERS: usize = 2;
const MAX_POOLED_BYTES: usize = 16 << 20;

/// Keeps `buf`, emptied, in `pool` if nothing else holds it, the pool has fewer than
/// `max_buffers` and it is at most `max_bytes`: reused memory costs no page faults.
pub(crate) fn keep_for_reuse(
    pool: &mut Vec<BytesMut>,
    buf: Bytes,
    max_buffers: usize,
    max_bytes: usize,
) {
    if pool.len() >= max_buffers {
        return;
    }
    if let Ok(mut buf) = buf.try_into_mut()
        && buf.capacity() <= max_bytes
    {
        buf.clear();
        pool.push(buf);
    }
}

/// The stage's state, under its lock.
pub(crate) struct State {
    buf: BytesMut,
    offsets: Vec<u32>,
    rotations: Vec<Rotation>,
    /// The lsn the next staged entry gets.
    pub(crate) next_lsn: Lsn,
    /// The last ticket given out.
    pub(crate) last_ticket: u64,
    /// Calls staged since the writer last took.
    pub(crate) calls: usize,
    payload_bytes: u64,
    sync_wanted: bool,
    /// A reader waits for staged entries to be written.
    pub(crate) flush_wanted: bool,
    /// Where the segment the stage's tail goes into ends so far, and its size.
    pub(crate) seg_end: u64,
    pub(crate) seg_limit: u64,
    /// The size of the spare segment the writer has ready, not yet given to any entry.
    pub(crate) spare: Option<u64>,
    /// Bytes staged or being written: the bound on what producers may queue.
    pub(crate) pending_bytes: u64,
    /// Maintenance runs: appends wait.
    pub(crate) frozen: bool,
    /// The log is closing or closed: appends fail.
    pub(crate) closed: bool,
    /// Buffers written and given back, for the next takes: fresh memory would cost a page
    /// fault per 4 KiB on a bulk append's path.
    pool: Vec<BytesMut>,
    /// The staged entries' payloads (moved out of their calls, not copied), one per staged
    /// frame, for the window of recent entries: the writer gives them to it once written.
    recent: Vec<StagedEntry>,
    /// The log keeps a window of recent entries.
    keep_recent: bool,
}

impl State {
    /// Bytes staged and not yet taken.
    pub(crate) fn staged_bytes(&self) -> usize {
        self.buf.len()
    }

    /// New segments the staged entries start.
    pub(crate) fn rotations_pending(&self) -> usize {
        self.rotations.len()
    }

    /// Takes everything staged.
    pub(crate) fn take(&mut self) -> Option<Taken> {
        if self.buf.is_empty() {
            return None;
        }
        let frames = self.offsets.len();
        let next = self
            .pool
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(BUFFER_BYTES));
        let taken = Taken {
            buf: std::mem::replace(&mut self.buf, next).freeze(),
            offsets: std::mem::replace(&mut self.offsets, Vec::with_capacity(frames)),
            rotations: std::mem::take(&mut self.rotations),
            // The staged frames are the last ones before `next_lsn`.
            first_lsn: Lsn(self.next_lsn.0 - frames as u64),
            ticket: self.last_ticket,
            calls: self.calls,
            payload_bytes: self.payload_bytes,
            sync: self.sync_wanted,
            recent: std::mem::replace(
                &mut self.recent,
                Vec::with_capacity(if self.keep_recent { frames } else { 0 }),
            ),
        };
        self.calls = 0;
        self.payload_bytes = 0;
        self.sync_wanted = false;
        self.flush_wanted = false;
        Some(taken)
    }

    /// Takes back a buffer the writer is done with, if nothing else holds it and it is not too
    /// large to keep.
    pub(crate) fn recycle(&mut self, buf: Bytes) {
        keep_for_reuse(&mut self.pool, buf, POOLED_BUFFERS, MAX_POOLED_BYTES);
    }

    /// Whether a call of `frame_bytes` must wait for the writer. The bounds: the bytes queued
    /// in all (`max_pending_bytes`), and the stage buffer itself, which the writer takes as one
    /// write (`max_batch_bytes`): the producer fills the next buffer while the writer writes the
    /// last, and buffers stay small enough to be reused. A call alone always fits.
    pub(crate) fn over_bounds(&self, frame_bytes: u64, options: &super::WalOptions) -> bool {
        let staged = self.buf.len() as u64;
        (staged > 0 && staged + frame_bytes > options.max_batch_bytes)
            || (self.pending_bytes > 0
                && self.pending_bytes + frame_bytes > options.max_pending_bytes)
    }

    /// Moves the tail to a new place (after a truncation or a reset): nothing may be staged.
    pub(crate) fn restart(&mut self, next_lsn: Lsn, seg_end: u64, seg_limit: u64) {
        debug_assert!(self.buf.is_empty());
        self.next_lsn = next_lsn;
        self.seg_end = seg_end;
        self.seg_limit = seg_limit;
    }
}

/// The stage, shared by appenders, readers and the writer.
pub(crate) struct Stage {
    state: Mutex<State>,
    /// Wakes the writer: something was staged, or a reader wants it written.
    pub(crate) wake: Notify,
    /// The newest written entries, for readers. Its own lock, not the stage's: the writer fills
    /// it once per write, and appenders never touch it.
    pub(crate) recent: Mutex<RecentEntries>,
    /// The oldest lsn the window of recent entries holds, as of the last write: a hint (readers
    /// of older entries skip the window's lock), never trusted for what it serves.
    pub(crate) recent_first: std::sync::atomic::AtomicU64,
    /// What the writer has done; appenders and readers wait on it. Also sent when room frees up,
    /// maintenance ends or the log fails, so that waiters look again.
    pub(crate) progress: watch::Sender<Progress>,
}

impl Stage {
    pub(crate) fn new(next_lsn: Lsn, seg_end: u64, seg_limit: u64, recent_bytes: u64) -> Stage {
        Stage {
            state: Mutex::new(State {
                buf: BytesMut::with_capacity(BUFFER_BYTES),
                offsets: Vec::new(),
                rotations: Vec::new(),
                next_lsn,
                last_ticket: 0,
                calls: 0,
                payload_bytes: 0,
                sync_wanted: false,
                flush_wanted: false,
                seg_end,
                seg_limit,
                spare: None,
                pending_bytes: 0,
                frozen: false,
                closed: false,
                pool: Vec::new(),
                recent: Vec::new(),
                keep_recent: recent_bytes > 0,
            }),
            recent: Mutex::new(RecentEntries::new(recent_bytes)),
            wake: Notify::new(),
            recent_first: std::sync::atomic::AtomicU64::new(0),
            progress: watch::channel(Progress::default()).0,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives the entries just written from `first` on to the window of recent entries.
    pub(crate) fn keep_recent(&self, (first, entries): (Lsn, Vec<StagedEntry>)) {
        if entries.is_empty() {
            return;
        }
        let mut window = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        window.push_written(first, entries);
        self.recent_first
            .store(window.first().0, std::sync::atomic::Ordering::Relaxed);
    }

    /// Drops the entries after `last` from the window of recent entries: the log was cut there
    /// (or reset to start after it). Called before readers can see the cut.
    pub(crate) fn forget_recent_after(&self, last: Lsn) {
        let mut window = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        window.cut_after(last);
        self.recent_first
            .store(window.first().0, std::sync::atomic::Ordering::Relaxed);
    }

    /// Wakes everyone who waits on the stage to look again.
    pub(crate) fn notify_waiters(&self) {
        self.progress.send_modify(|_| {});
    }
}

/// What became of an attempt to stage a call.
pub(crate) enum Staged {
    /// Staged: these lsns, this ticket.
    Done(Placed),
    /// Not now (maintenance runs, or too many bytes are queued): wait for a change, then retry.
    Wait(watch::Receiver<Progress>),
    /// No room: the writer is to make a segment with room for the call, and stage it there.
    NeedRoom,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Tries to stage one call; `wake_writer` false if the caller will (see `writer::lead`).
pub(crate) fn stage_call(shared: &Shared, call: &mut Call, wake_writer: bool) -> Result<Staged> {
    let stage = &shared.stage;
    let mut guard = stage.lock();
    let st = &mut *guard;
    check_open(shared, st)?;
    let frame_bytes = call.frame_bytes;
    if st.frozen || st.over_bounds(frame_bytes, &shared.options) {
        return Ok(Staged::Wait(stage.progress.subscribe()));
    }
    let was_empty = st.buf.is_empty();
    let Some(placed) = place(shared, st, call) else {
        return Ok(Staged::NeedRoom);
    };
    drop(guard);
    if wake_writer && (was_empty || call.sync) {
        stage.wake.notify_one();
    }
    Ok(Staged::Done(placed))
}

/// Stages a call for which the writer just made room, under the same lock that checked the
/// room (so no other call can take it first); `None` if there is still no room. The bounds on
/// queued bytes are not looked at again: the call passed them when it asked for room.
pub(crate) fn stage_made_room(
    shared: &Shared,
    st: &mut State,
    call: &mut Call,
) -> Result<Option<Placed>> {
    check_open(shared, st)?;
    Ok(place(shared, st, call))
}

/// Appends are refused once the log is closed or poisoned.
fn check_open(shared: &Shared, st: &State) -> Result<()> {
    if st.closed {
        return Err(Error::Closed);
    }
    shared.check_usable()
}

/// Gives the call its place: in the tail's segment, or in the spare that becomes the next one;
/// assigns its lsns, encodes its frames and takes its ticket; moves its payloads to the stage's
/// list for the window of recent entries. `None` if neither has room.
fn place(shared: &Shared, st: &mut State, call: &mut Call) -> Option<Placed> {
    let frame_bytes = call.frame_bytes;
    if st.seg_end + frame_bytes > st.seg_limit {
        if st.seg_end == HEADER_LEN {
            // An empty segment too small for this call: the writer grows it.
            return None;
        }
        match st.spare {
            Some(size) if HEADER_LEN + frame_bytes <= size => {
                let rotation = Rotation {
                    frame: st.offsets.len(),
                    byte: st.buf.len(),
                    lsn: st.next_lsn,
                };
                st.rotations.push(rotation);
                st.spare = None;
                st.seg_end = HEADER_LEN;
                st.seg_limit = size;
            }
            _ => return None,
        }
    }
    let records = &mut call.records;
    let format = shared.format;
    let first = st.next_lsn;
    // Every frame records what was durable before it was written (see `record.rs`): read under
    // the lock, after any truncation, and never past the entries before this call.
    let synced = shared.durable_lsn().min(Lsn(first.0 - 1));
    let timestamp = if format.timestamps { now_micros() } else { 0 };
    let n = records.len();
    st.buf.reserve(frame_bytes as usize);
    let mut at = st.seg_end;
    for (i, r) in records.iter_mut().enumerate() {
        st.offsets
            .push(u32::try_from(at).expect("segments are smaller than 4 GiB"));
        let before = st.buf.len();
        let lsn = Lsn(first.0 + i as u64);
        // The caller's stamp where it gave one (a log without timestamps ignores both).
        let timestamp_us = r.timestamp_us.unwrap_or(timestamp);
        // Every frame but the last of a call says "the batch continues": recovery keeps a call's
        // entries only when its last frame is there.
        let fields = FrameFields {
            lsn,
            synced_lsn: synced,
            term: r.term,
            timestamp_us,
            continues: i + 1 < n,
        };
        format.encode(&mut st.buf, fields, &r.data);
        let frame_len = (st.buf.len() - before) as u64;
        at += frame_len;
        if st.keep_recent {
            // The call is done with its payloads once staged: moved, so that the lock is not
            // held for a reference count (or the allocation that sharing a `Bytes` made from a
            // `Vec` costs).
            st.recent.push(StagedEntry {
                term: r.term,
                timestamp_us: format.timestamps.then_some(timestamp_us),
                data: std::mem::take(&mut r.data),
                frame_bytes: frame_len,
            });
        }
    }
    debug_assert_eq!(at - st.seg_end, frame_bytes);
    st.seg_end = at;
    st.next_lsn = Lsn(first.0 + n as u64);
    st.last_ticket += 1;
    st.calls += 1;
    st.payload_bytes += call.payload_bytes;
    st.pending_bytes += frame_bytes;
    debug_assert!(
        st.pending_bytes == frame_bytes || st.pending_bytes <= shared.options.max_pending_bytes,
        "{} bytes pending, over max_pending_bytes",
        st.pending_bytes
    );
    st.sync_wanted |= call.sync;
    let ticket = st.last_ticket;
    let last = st.next_lsn.0 - 1;
    shared
        .appended
        .store(last, std::sync::atomic::Ordering::Release);
    Some((first..Lsn(last + 1), ticket))
}

/// Waits until every entry up to `lsn` that is staged is written, so a reader finds it in the
/// file.
pub(crate) async fn flush_to(shared: &Shared, lsn: Lsn) -> Result<()> {
    if lsn <= shared.written_lsn() {
        return Ok(());
    }
    let (ticket, mut rx) = {
        let mut st = shared.stage.lock();
        if st.buf.is_empty() && st.pending_bytes == 0 {
            return Ok(());
        }
        st.flush_wanted = true;
        (st.last_ticket, shared.stage.progress.subscribe())
    };
    shared.stage.wake.notify_one();
    let _ = rx
        .wait_for(|p| {
            p.written >= ticket
                || shared.poisoned.get().is_some()
                || shared.closed.load(std::sync::atomic::Ordering::Acquire)
        })
        .await;
    shared.check_usable()
}
