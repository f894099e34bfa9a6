//! The writer task: the one owner of the log's tail.
//!
//! Appenders stage their entries themselves (see `stage.rs`): lsns assigned, frames encoded into
//! the stage's buffer. The writer's part, step by step (each step that protects durability says
//! so where it happens):
//! 1. Take everything staged at once, when the pipeline has room: under `SyncPolicy::Grouped`
//!    after the window; after a synced batch, once the appenders it acknowledged had a moment to
//!    come back (closed-loop writers then share the next fdatasync instead of alternating).
//! 2. Where the stage started a new segment, install the spare segment (after the writes in
//!    flight, with the old segment synced first).
//! 3. Submit one write per piece, linked to one `fdatasync` when the policy or a caller asks
//!    for it (or with `RWF_DSYNC` when nothing earlier is unsynced).
//! 4. When a write is done, in launch order: publish index offsets, then `written`, then
//!    `durable`, then the tickets in [`Progress`](super::stage::Progress), which wakes the waiters.
//!
//! A failed write or sync poisons the log: that batch and every later call fail with
//! [`Error::Poisoned`]; nothing retries an fsync.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ringtide_platform::File;
use tokio::sync::{mpsc, oneshot};

use super::batch_io::Party;
use super::record::Decoded;
use super::segment::{self, CutRecord, DIRECT_BLOCK, HEADER_LEN, Meta, SegmentHeader};
use super::stage::{self, Taken};
use super::{Lsn, SegmentIndex, Shared, SyncPolicy};
use crate::error::{Error, Result};

/// Commands the queue holds at most; callers beyond wait.
pub(crate) const QUEUE_COMMANDS: usize = 1024;

/// What the writer is asked to do besides writing what is staged, in queue order. Each runs
/// after everything staged before it is written.
pub(crate) enum Command {
    /// Make a segment with room for a call (a spare, or the empty active segment grown), and
    /// stage the call there.
    MakeRoom(Box<stage::Call>, oneshot::Sender<Result<stage::Placed>>),
    Sync(oneshot::Sender<Result<Lsn>>),
    TruncateFront(Lsn, oneshot::Sender<Result<()>>),
    TruncateBack(Lsn, oneshot::Sender<Result<()>>),
    Reset(Lsn, oneshot::Sender<Result<()>>),
    Close(oneshot::Sender<Result<()>>),
}

/// The segment being written.
struct Active {
    file: File,
    write_offset: u64,
    allocated: u64,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    log_id: u64,
    epoch: u64,
    active: Active,
    /// Entries written since the last sync.
    unsynced_entries: u64,
    /// When the periodic policy syncs next.
    sync_deadline: Option<tokio::time::Instant>,
    /// Writes submitted and not yet published, in launch order.
    in_flight: VecDeque<InFlight>,
    /// The last tickets written and durable (see `stage::Progress`).
    written_ticket: u64,
    durable_ticket: u64,
    /// Calls acknowledged by the last synced batch: closed-loop writers come back within
    /// microseconds, and waiting for them makes the next batch (and its one fdatasync) serve
    /// them all instead of splitting writers into cohorts that alternate.
    expect_returns: usize,
    /// When the wait for them began, and how many times the writer yielded for them.
    gather_started: Option<Instant>,
    gather_yields: u32,
    /// Under `Grouped`, when the staged entries may go.
    launch_at: Option<tokio::time::Instant>,
    /// The next segment, being made ready in the background (zero-filled).
    preparing: Option<tokio::task::JoinHandle<Result<segment::Prepared>>>,
    /// Asks the preparation in flight to stop.
    prepare_cancel: Arc<std::sync::atomic::AtomicBool>,
    prepare_seq: u64,
    /// A background preparation failed: the next one waits for an append that needs it.
    prepare_failed: bool,
    /// Ready segments. The stage gives them to entries in order; every one but the last has
    /// been given (the stage's rotations name them), the last is given if the stage has no spare.
    spares: VecDeque<segment::Prepared>,
    /// A write failed: where the trustworthy log ends, to record (see `record_failure_cut`).
    failure_cut: Option<Lsn>,
    /// `Periodic` has too many unsynced entries: sync at the next chance.
    sync_soon: bool,
    /// Wakes the writer task (see [`WakeWriter`]).
    wake_writer: std::task::Waker,
    /// The writer task yielded once to a leader whose write is done.
    led_waited: bool,
    /// Writes launched by leaders, and that count when the writer task last looked: while
    /// leaders launch, the writer task looks every [`LEAD_GRACE`] (see [`InFlight::watched`]).
    leads: u64,
    leads_seen: u64,
    /// The writer task looks again at a deadline; a leader that finds it not looking wakes it.
    lead_looking: bool,
    /// Bytes of the active segment written through the page cache since the last background
    /// sync started (see `maybe_sync_early`); direct writes leave nothing to write back.
    buffered_unsynced: u64,
    /// An fdatasync of the active segment started in the background, for logs that do not sync
    /// every batch: it writes back early what the sync at the segment's rotation would otherwise
    /// wait for.
    early_sync: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// The log writes with `O_DIRECT` where the file system allows it: the write skips the page
    /// cache, and on io_uring it completes without a kernel worker thread.
    direct_io: bool,
    /// The smallest write made direct: every write under policies that sync every batch (the
    /// sync then costs no write-back); under the others, bulk writes only (see
    /// [`DIRECT_BULK_BYTES`]).
    direct_min: usize,
    direct: DirectTail,
    /// Block-aligned buffers of finished direct writes, for the next ones: fresh memory costs a
    /// page fault per 4 KiB (about a third of a 4 MiB write's copy).
    direct_bufs: Vec<BytesMut>,
}

/// The most direct-write buffers kept, and the largest kept.
const DIRECT_BUFS: usize = 2;
const DIRECT_BUF_MAX_BYTES: usize = 16 << 20;

/// Under policies that do not sync every batch, writes of at least this many bytes are direct:
/// buffered, a bulk writer is bound by the page cache's copy and write-back (~400 MiB/s here),
/// while the disk takes ~2 GB/s of direct writes of a MiB or more. Smaller writes stay buffered,
/// where a write returns at memory speed and a reader right behind finds the page cache warm.
const DIRECT_BULK_BYTES: usize = 128 << 10;

/// The active segment's direct-write state.
enum DirectTail {
    /// Not looked at since the active segment changed.
    Unknown,
    /// Buffered writes for this segment.
    Off,
    /// An `O_DIRECT` handle, and the bytes of the last, partly written block, which starts at
    /// `block`.
    On {
        file: File,
        tail: Vec<u8>,
        block: u64,
    },
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

/// The unit a disk writes whole (or not at all) on a power loss.
const SECTOR: u64 = 512;

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

/// A submitted write: what `complete` needs once its I/O is done.
struct Launched {
    first: Lsn,
    last: Lsn,
    offsets: Vec<u32>,
    end: u64,
    bytes: u64,
    sync: bool,
    /// Set on the last piece of what was taken: its ticket, calls and payload bytes.
    ticket: Option<u64>,
    calls: usize,
    payload_bytes: u64,
    started: Instant,
    /// On the last piece: the whole buffer taken, to give back to the stage once written.
    recycle: Option<Bytes>,
    /// The file system refused the write through `O_DIRECT` (`EINVAL`), so it was made
    /// buffered: the log writes buffered from now on.
    direct_refused: bool,
    /// A direct write's block buffer, back from the kernel, to be reused.
    direct_buf: Option<Bytes>,
}

/// A submitted write's outcome, taken by whoever publishes it.
type IoDone = (std::io::Result<()>, Launched);

/// A submitted write, as a future any task can drive: the writer task, or the appender that
/// launched it and waits for it (see [`lead`]).
type BatchIo = super::batch_io::BatchIo<IoDone>;

/// A write in flight.
struct InFlight {
    io: BatchIo,
    /// Launched by a leader, which publishes it when it completes. The writer task publishes it
    /// if the leader has not: the leader's future was dropped, or is not being polled.
    led: bool,
    /// The writer task watches a led write: its waker (see [`WakeWriter`]) is registered on
    /// `io`. That happens only once the writer task needs the completion: work waits behind the
    /// write, the leader went away, or [`LEAD_GRACE`] passed since the launch. A lone leader's
    /// completion then wakes one task, not two.
    watched: bool,
    launched: tokio::time::Instant,
}

/// How long a led write is left to its leader before the writer task watches it: the longest a
/// leader whose future is kept but no longer polled can hold up the publication of its write.
const LEAD_GRACE: std::time::Duration = std::time::Duration::from_millis(2);

/// Wakes the writer task: registered on a led write once the writer task needs its completion
/// (see [`InFlight::watched`]).
struct WakeWriter(Arc<Shared>);

impl std::task::Wake for WakeWriter {
    fn wake(self: Arc<Self>) {
        self.0.stage.wake.notify_one();
    }
}

/// How many writes may be in flight at once. Measured on ext4: with two, the second fdatasync
/// waits for the first anyway, and batches only get smaller; one in flight and gathering the
/// returning appenders (see `Writer::expect_returns`) makes larger batches. The machinery stays
/// general: writes are published in launch order.
const PIPELINE_DEPTH: usize = 1;

/// The longest wait for acknowledged appenders to come back (see `Writer::expect_returns`), in
/// time and in yields of the writer task.
const GATHER_MAX: std::time::Duration = std::time::Duration::from_micros(200);
const GATHER_YIELDS: u32 = 16;

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Starts the writer task for a recovered log.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    queue: mpsc::Receiver<Command>,
    epoch: u64,
    log_id: u64,
) -> SharedWriter {
    let active = {
        let index = shared.index.read().unwrap_or_else(|p| p.into_inner());
        let last = index
            .segments
            .last()
            .expect("recovery leaves at least one segment");
        Active {
            file: last.file.clone(),
            write_offset: last.end,
            allocated: last.allocated,
        }
    };
    let direct_min = if shared.options.sync_policy.syncs_each_batch() {
        0
    } else {
        DIRECT_BULK_BYTES
    };
    let shared_for_waker = shared.clone();
    let writer = Writer {
        shared,
        log_id,
        epoch,
        active,
        unsynced_entries: 0,
        sync_deadline: None,
        in_flight: VecDeque::new(),
        written_ticket: 0,
        durable_ticket: 0,
        expect_returns: 0,
        gather_started: None,
        gather_yields: 0,
        launch_at: None,
        preparing: None,
        prepare_cancel: Arc::default(),
        prepare_seq: 0,
        prepare_failed: false,
        spares: VecDeque::new(),
        failure_cut: None,
        sync_soon: false,
        wake_writer: std::task::Waker::from(Arc::new(WakeWriter(shared_for_waker))),
        led_waited: false,
        leads: 0,
        leads_seen: 0,
        lead_looking: false,
        early_sync: None,
        buffered_unsynced: 0,
        direct_io: true,
        direct_min,
        direct: DirectTail::Unknown,
        direct_bufs: Vec::new(),
    };
    let writer = Arc::new(tokio::sync::Mutex::new(writer));
    tokio::spawn(run(writer.clone(), queue));
    writer
}

/// What the writer should do with what is staged.
enum Decision {
    /// Nothing is staged.
    Nothing,
    /// The pipeline is full.
    Busy,
    /// Under `Grouped`, the window is still open.
    Window,
    /// Appenders just acknowledged are expected back: yield to them first.
    Gather,
    /// Take everything staged and write it.
    Launch,
}

/// Where the writer's work left off.
enum Next {
    /// Nothing in flight; wake for the stage, a command, or one of these times.
    Wait {
        launch_at: Option<tokio::time::Instant>,
        sync_due: Option<tokio::time::Instant>,
        /// Leaders launch writes: look at them again then (see [`InFlight::watched`]).
        lead_check: Option<tokio::time::Instant>,
        /// A leader's write is done: yield once for the leader to publish it, then look again.
        yield_first: bool,
    },
    /// The log is closed.
    Exit,
}

/// The writer task: works while there is work, holding the writer; waits without holding it,
/// so that an appender may lead (see [`lead`]).
async fn run(writer: Arc<tokio::sync::Mutex<Writer>>, mut queue: mpsc::Receiver<Command>) {
    let shared = writer.lock().await.shared.clone();
    loop {
        let next = writer.lock().await.work(&mut queue).await;
        let Next::Wait {
            launch_at,
            sync_due,
            lead_check,
            yield_first,
        } = next
        else {
            return;
        };
        if yield_first {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            biased;
            command = queue.recv() => {
                if writer.lock().await.command(command, &mut queue).await {
                    return;
                }
            }
            () = shared.stage.wake.notified() => {}
            () = sleep_until_some(launch_at), if launch_at.is_some() => {}
            () = sleep_until_some(lead_check), if lead_check.is_some() => {}
            () = sleep_until_some(sync_due), if sync_due.is_some() => {
                let _ = writer.lock().await.sync_now().await;
            }
        }
    }
}

/// The writer, held by an appender that leads: on the way out (also when the appender's future
/// is dropped), the writer task is woken if anything is left for it.
struct Leader<'a> {
    writer: tokio::sync::MutexGuard<'a, Writer>,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let w = &self.writer;
        let left = w.in_flight.front().is_some_and(|f| !f.led)
            || w.failure_cut.is_some()
            || w.sync_soon
            || w.needs_preparing()
            || w.shared.stage.lock().staged_bytes() > 0;
        if left {
            w.shared.stage.wake.notify_one();
        }
    }
}

/// An appender waiting for durability does the writer's work itself when the writer is idle: it
/// takes what is staged, submits it, waits for the write and publishes it, saving two task
/// wake-ups per batch (the writer task's, and the appender's again), which were a third of a
/// lone durable append's latency on a two-worker runtime. Only the simple case is led: nothing
/// in flight, no new segment to start, no window or gathering to wait for, nothing deferred.
///
/// The leader holds the writer only while it takes and submits, and while it publishes, never
/// across an await: an append future polled once and then left alone (a `select!` arm, say)
/// holds nothing up. Its write is a shared future, first polled with the leader's waker alone,
/// so that its completion wakes one task. If the leader goes away, or does not publish the
/// write within [`LEAD_GRACE`], the writer task does.
pub(crate) async fn lead(writer: &tokio::sync::Mutex<Writer>, shared: &Shared) {
    // Takes and submits under the writer, polling the write first with the leader's own waker.
    let launched = std::future::poll_fn(|cx| Poll::Ready(launch_led(writer, shared, cx))).await;
    let Some(io) = launched else {
        return;
    };
    let mut handover = Handover {
        shared,
        armed: true,
    };
    io.wait(Party::Leader).await;
    // Publish it, unless the writer task is at work (then it does).
    let Ok(guard) = writer.try_lock() else {
        drop(handover);
        return;
    };
    let mut leader = Leader { writer: guard };
    let w = &mut *leader.writer;
    if w.in_flight.front().is_some_and(|f| f.io.ptr_eq(&io)) {
        w.complete_front();
    }
    handover.armed = false;
}

/// The leader's part under the writer: takes what is staged and submits it; the write, if it
/// did.
fn launch_led(
    writer: &tokio::sync::Mutex<Writer>,
    shared: &Shared,
    cx: &mut Context<'_>,
) -> Option<BatchIo> {
    let Ok(guard) = writer.try_lock() else {
        // The writer task (or another leader) works: it sees what is staged, but may be about
        // to wait, so wake it.
        shared.stage.wake.notify_one();
        return None;
    };
    // Dropping the leader wakes the writer task for what is left to it.
    let mut leader = Leader { writer: guard };
    let w = &mut *leader.writer;
    // Batches of many writers are the writer task's: it gathers the acknowledged appenders
    // coming back (see `Writer::expect_returns`), which a leader racing it for each batch cut
    // short.
    if w.shared.check_usable().is_err()
        || w.expect_returns > 1
        || !w.in_flight.is_empty()
        || w.failure_cut.is_some()
        || w.sync_soon
        || matches!(w.direct, DirectTail::Unknown)
    {
        return None;
    }
    let simple = {
        let st = w.shared.stage.lock();
        st.rotations_pending() == 0
            && st.staged_bytes() <= w.shared.options.max_batch_bytes as usize
    };
    if !simple || !matches!(w.decide(), Decision::Launch) {
        return None;
    }
    let taken = w.take_staged()?;
    let io = w.launch_simple(taken)?;
    // Submitted here, under the writer, so that writes reach the kernel in launch order.
    let _ = io.poll_as(Party::Leader, cx);
    w.in_flight.front_mut()?.led = true;
    w.leads += 1;
    if !w.lead_looking {
        w.lead_looking = true;
        w.shared.stage.wake.notify_one();
    }
    Some(io)
}

/// Hands a led write over to the writer task if its leader goes away before publishing it: the
/// writer task, woken, watches the write (see [`InFlight::watched`]).
struct Handover<'a> {
    shared: &'a Shared,
    armed: bool,
}

impl Drop for Handover<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.stage.leader_left.store(true, Ordering::Release);
            self.shared.stage.wake.notify_one();
        }
    }
}

/// Bytes of a segment written between two background syncs (see `Writer::maybe_sync_early`).
const EARLY_SYNC_BYTES: u64 = 16 << 20;

/// What `spawn` returns: the writer, for appenders that lead.
pub(crate) type SharedWriter = Arc<tokio::sync::Mutex<Writer>>;

/// An error for one of several waiters of a failed step.
fn error_for_waiter(err: &Error) -> Error {
    match err {
        Error::Poisoned { cause } => Error::Poisoned {
            cause: cause.clone(),
        },
        Error::DiskFull { dir, needed_bytes } => Error::DiskFull {
            dir: dir.clone(),
            needed_bytes: *needed_bytes,
        },
        Error::Closed => Error::Closed,
        other => Error::Io {
            path: None,
            source: std::io::Error::other(other.to_string()),
        },
    }
}

impl Writer {
    /// What to do next with what is staged.
    fn decide(&mut self) -> Decision {
        let (staged, calls, flush_wanted) = {
            let st = self.shared.stage.lock();
            (st.staged_bytes(), st.calls, st.flush_wanted)
        };
        if staged == 0 {
            return Decision::Nothing;
        }
        if self.in_flight.len() >= PIPELINE_DEPTH {
            return Decision::Busy;
        }
        if let SyncPolicy::Grouped { window } = self.shared.options.sync_policy
            && !window.is_zero()
            && self.launch_at.is_none()
            && self.in_flight.is_empty()
        {
            // Under `Grouped`, staged entries that find the pipeline idle wait for others.
            self.launch_at = Some(tokio::time::Instant::now() + window);
        }
        let now = Instant::now();
        let window_over = self
            .launch_at
            .is_none_or(|t| tokio::time::Instant::from_std(now) >= t);
        let gathering = calls < self.expect_returns
            && self.gather_yields < GATHER_YIELDS
            && self
                .gather_started
                .is_some_and(|t| now.duration_since(t) < GATHER_MAX);
        let max_batch = self.shared.options.max_batch_bytes as usize;
        if (window_over && !gathering) || staged >= max_batch || flush_wanted {
            self.launch_at = None;
            self.expect_returns = 0;
            self.gather_started = None;
            Decision::Launch
        } else if gathering {
            self.gather_yields += 1;
            Decision::Gather
        } else {
            Decision::Window
        }
    }

    /// Work left over from a step that could not wait (see `complete`).
    async fn deferred(&mut self) {
        if let Some(lsn) = self.failure_cut.take() {
            self.record_failure_cut(lsn).await;
        }
        if self
            .early_sync
            .as_ref()
            .is_some_and(|handle| handle.is_finished())
        {
            self.finish_early_sync().await;
        }
        if std::mem::take(&mut self.sync_soon) {
            let _ = self.sync_now().await;
        }
        if self.preparing.as_ref().is_some_and(|h| h.is_finished())
            && let Some(handle) = self.preparing.take()
        {
            let res = handle.await;
            self.prepared(res);
        }
    }

    /// Does everything there is to do now, holding the writer. Returns when there is nothing
    /// but waiting left (then nothing is in flight), or when the log is closed.
    async fn work(&mut self, queue: &mut mpsc::Receiver<Command>) -> Next {
        loop {
            self.deferred().await;
            self.maybe_prepare();
            match self.decide() {
                Decision::Launch => {
                    self.launch_staged().await;
                    continue;
                }
                Decision::Gather => {
                    // Let the woken appenders run (a yield, not a timer: tokio's timers tick in
                    // milliseconds), then look again.
                    tokio::task::yield_now().await;
                    continue;
                }
                Decision::Nothing | Decision::Busy | Decision::Window => {}
            }
            let staged = self.shared.stage.lock().staged_bytes() > 0;
            if !staged {
                // Taken by a flush or a leader meanwhile: no window is open.
                self.launch_at = None;
            }
            let launch_at = self.launch_at;
            // A poisoned log syncs nothing: its deadline must not fire again and again.
            let sync_due = self
                .sync_deadline
                .filter(|_| self.in_flight.is_empty() && self.shared.check_usable().is_ok());
            // A led write is its leader's to publish: the writer task waits without the writer
            // until the write is done, then lets the leader go first once. It watches the write
            // only once it needs the completion: work waits behind it, its leader went away, or
            // the leader had `LEAD_GRACE` to publish it.
            let wake_writer = self.wake_writer.clone();
            let now = tokio::time::Instant::now();
            let needed = staged || self.shared.stage.leader_left.swap(false, Ordering::AcqRel);
            let led = self.in_flight.front_mut().filter(|f| f.led).map(|f| {
                if f.watched || needed || now >= f.launched + LEAD_GRACE {
                    // Polled with the writer task's waker: drives the write, and keeps the
                    // waker registered until it is done.
                    f.watched = true;
                    let _ =
                        f.io.poll_as(Party::Writer, &mut Context::from_waker(&wake_writer));
                }
                f.io.is_done()
            });
            // While leaders launch, look again after `LEAD_GRACE`.
            let lead_check = (self.leads != self.leads_seen
                || self.in_flight.front().is_some_and(|f| f.led && !f.watched))
            .then(|| now + LEAD_GRACE);
            self.leads_seen = self.leads;
            self.lead_looking = lead_check.is_some();
            if self.in_flight.is_empty() || led.is_some() {
                let leader_first = led == Some(true) && !std::mem::take(&mut self.led_waited);
                if led == Some(true) && !leader_first {
                    self.complete_front();
                    continue;
                }
                self.led_waited = leader_first;
                return Next::Wait {
                    launch_at,
                    sync_due,
                    lead_check,
                    yield_first: leader_first,
                };
            }
            let shared = self.shared.clone();
            let front = self.in_flight.front().map(|f| f.io.clone());
            // Biased: finishing in-flight work comes first, and the order of choices does not
            // depend on tokio's random fairness, so a run on the simulated disk replays.
            tokio::select! {
                biased;
                () = async { front.expect("a write in flight").wait(Party::Writer).await } => {
                    self.complete_front();
                }
                () = sleep_until_some(launch_at), if launch_at.is_some() => {}
                command = queue.recv() => {
                    if self.command(command, queue).await {
                        return Next::Exit;
                    }
                }
                () = shared.stage.wake.notified() => {}
            }
        }
    }

    /// Runs one command (`None`: every handle is gone). Returns true once the log is closed.
    async fn command(
        &mut self,
        command: Option<Command>,
        queue: &mut mpsc::Receiver<Command>,
    ) -> bool {
        match command {
            None => {
                // Every handle was dropped without `close`: finish like a close.
                let _ = self.close().await;
                true
            }
            Some(Command::Close(reply)) => {
                let res = self.close().await;
                let _ = reply.send(res);
                // Whatever was queued behind the close finds the log closed.
                queue.close();
                while let Some(command) = queue.recv().await {
                    refuse(command, &Error::Closed);
                }
                true
            }
            Some(command) => {
                self.handle(command).await;
                false
            }
        }
    }

    /// Waits for every write in flight.
    async fn drain(&mut self) {
        while self.complete_next().await {}
    }

    /// Waits for the oldest write in flight and publishes it; false if there is none.
    async fn complete_next(&mut self) -> bool {
        let Some(front) = self.in_flight.front().map(|f| f.io.clone()) else {
            return false;
        };
        front.wait(Party::Writer).await;
        self.complete_front();
        true
    }

    /// Publishes the oldest write in flight, which must be done.
    fn complete_front(&mut self) {
        let Some(front) = self.in_flight.pop_front() else {
            return;
        };
        let done = front.io.take_outcome();
        match done {
            Some((res, launched)) => self.complete(res, launched),
            None => {
                // Not done (a bug) or published twice (impossible under the writer lock): the
                // log cannot tell what reached the disk.
                let _ = self.poison(std::io::Error::other("wal: a write in flight was lost"));
            }
        }
    }

    /// Writes everything staged and waits for it.
    async fn flush(&mut self) {
        loop {
            let taken = self.take_staged();
            match taken {
                Some(taken) => self.launch(taken).await,
                None => break,
            }
        }
        self.drain().await;
    }

    /// Stops appends, then writes everything staged: the start of every maintenance step.
    async fn freeze(&mut self) {
        self.shared.stage.lock().frozen = true;
        self.flush().await;
    }

    /// Lets appends go on from where the log's tail now is.
    fn thaw(&mut self) {
        {
            let next = self.next_lsn();
            let mut st = self.shared.stage.lock();
            st.restart(next, self.active.write_offset, self.active.allocated);
        }
        // Maintenance may have deleted or made segments.
        self.shared.report_space();
        self.unfreeze();
    }

    /// Lets appends go on, the tail where it is.
    fn unfreeze(&self) {
        self.shared.stage.lock().frozen = false;
        self.shared.stage.notify_waiters();
    }

    /// The lsn after the last written.
    fn next_lsn(&self) -> Lsn {
        self.shared.written_lsn().next()
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Close(_) => unreachable!("handled by the run loop"),
            Command::MakeRoom(call, reply) => {
                let res = self.make_room(&call).await;
                let _ = reply.send(res);
            }
            Command::Sync(reply) => {
                self.flush().await;
                let res = self.sync_now().await.map(|()| self.shared.durable_lsn());
                let _ = reply.send(res);
            }
            Command::TruncateFront(lsn, reply) => {
                self.freeze().await;
                let res = self.truncate_front(lsn).await;
                self.thaw();
                let _ = reply.send(res);
            }
            Command::TruncateBack(lsn, reply) => {
                self.freeze().await;
                let res = self.truncate_back(lsn).await;
                self.thaw();
                let _ = reply.send(res);
            }
            Command::Reset(lsn, reply) => {
                self.freeze().await;
                let res = self.reset(lsn).await;
                self.thaw();
                let _ = reply.send(res);
            }
        }
    }

    /// Poisons the log with `err` and returns the error for the current caller.
    fn poison(&self, err: std::io::Error) -> Error {
        let cause = Arc::new(err);
        if self.shared.poisoned.set(cause.clone()).is_ok() {
            tracing::error!(dir = %self.shared.dir.display(), error = %cause, "wal poisoned: a write or sync failed");
            self.shared.observe.poisoned();
        }
        {
            // Nothing staged will be written: the log ends at what was.
            let _stage = self.shared.stage.lock();
            let written = self.shared.written.load(Ordering::Acquire);
            self.shared.appended.store(written, Ordering::Release);
        }
        // Waiters look again and find the log poisoned.
        self.shared.stage.notify_waiters();
        Error::Poisoned {
            cause: self.shared.poisoned.get().cloned().unwrap_or(cause),
        }
    }

    /// Poisons the log with a failed step's error (its I/O error when it has one).
    fn poison_with(&self, e: Error) -> Error {
        match e {
            Error::Io { source, .. } => self.poison(source),
            e @ Error::Poisoned { .. } => e,
            e => self.poison(std::io::Error::other(e.to_string())),
        }
    }

    fn publish_progress(&self) {
        let (written, durable) = (self.written_ticket, self.durable_ticket);
        self.shared.stage.progress.send_modify(|p| {
            p.written = written;
            p.durable = durable;
        });
    }

    fn mark_durable(&mut self, lsn: Lsn) {
        self.unsynced_entries = 0;
        self.sync_deadline = None;
        self.durable_ticket = self.written_ticket;
        self.shared.durable.send_replace(lsn.0);
    }

    /// fdatasync of the active segment, making everything written durable.
    async fn sync_now(&mut self) -> Result<()> {
        // Whatever comes of this call, the periodic deadline it answers is over.
        self.sync_deadline = None;
        self.shared.check_usable()?;
        let written = self.shared.written_lsn();
        if self.unsynced_entries == 0 && self.shared.durable_lsn() >= written {
            if self.durable_ticket < self.written_ticket {
                self.durable_ticket = self.written_ticket;
                self.publish_progress();
            }
            return Ok(());
        }
        let started = Instant::now();
        if let Err(e) = self.active.file.sync_data().await {
            let err = self.poison(e);
            self.record_failure_cut(self.shared.durable_lsn()).await;
            return Err(err);
        }
        self.record_sync(started);
        self.mark_durable(written);
        self.publish_progress();
        Ok(())
    }

    /// After a failed write or sync, records (best effort) where the trustworthy log ends. Linux
    /// marks the pages of a failed writeback clean without writing them, so a reopen in the same
    /// boot would read frames the disk does not have, take them for durable, and append after
    /// them — until a power loss turns them into a hole before acknowledged data. The cut
    /// record makes that reopen end the log at `lsn` and zero what follows. If the disk fails
    /// this write too, nothing better can be done; the failure is logged.
    async fn record_failure_cut(&self, lsn: Lsn) {
        let record = CutRecord {
            format: self.shared.format,
            log_id: self.log_id,
            epoch: self.epoch,
            lsn,
        };
        if let Err(e) = record.write(&self.shared.driver, &self.shared.dir).await {
            tracing::warn!(error = %e, lsn = lsn.0, "wal: could not record where the log ends after a failed write");
        }
    }

    fn record_sync(&self, started: Instant) {
        let elapsed = started.elapsed();
        let c = &self.shared.counters;
        c.syncs.fetch_add(1, Ordering::Relaxed);
        c.sync_time_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.shared.observe.sync(elapsed);
    }

    /// Gives back queue room for bytes that will not be written, or were.
    fn release(&self, bytes: u64) {
        let mut st = self.shared.stage.lock();
        st.pending_bytes = st.pending_bytes.saturating_sub(bytes);
    }

    /// Takes everything staged; appenders held back by a full stage may go on.
    fn take_staged(&self) -> Option<Taken> {
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

    /// Takes everything staged and launches it.
    async fn launch_staged(&mut self) {
        let taken = self.take_staged();
        if let Some(taken) = taken {
            self.launch(taken).await;
        }
    }

    /// Submits what was taken from the stage: one write per segment it reaches into (after
    /// installing each new segment), and per `max_batch_bytes`; the last one linked to an
    /// fdatasync where asked. Each is published by [`complete`](Self::complete) when its I/O is
    /// done.
    async fn launch(&mut self, taken: Taken) {
        if !self.usable_for(&taken, 0) {
            return;
        }
        let sync = taken.sync || self.shared.options.sync_policy.syncs_each_batch();
        let max_batch = self.shared.options.max_batch_bytes as usize;
        let (offsets, rotations) = (&taken.offsets, &taken.rotations);
        let frames = offsets.len();
        // Pieces: frames `frame..end` at bytes `byte..byte_end`, split at rotations and at the
        // batch size.
        let mut next_rotation = 0usize;
        let mut frame = 0usize;
        let mut byte = 0usize;
        while frame < frames {
            if let Some(rot) = rotations.get(next_rotation)
                && rot.frame == frame
            {
                next_rotation += 1;
                // The writes before go into the old segment, which must be durable before the
                // new one holds data.
                self.drain().await;
                if let Err(err) = self.rotate(rot.lsn).await {
                    tracing::debug!(error = %err, "wal rotation failed");
                    self.release((taken.buf.len() - byte) as u64);
                    self.shared.stage.notify_waiters();
                    return;
                }
            }
            let segment_end = rotations.get(next_rotation).map_or(frames, |r| r.frame);
            let segment_byte_end = rotations
                .get(next_rotation)
                .map_or(taken.buf.len(), |r| r.byte);
            // As many frames as fit the batch size (at least one).
            let (mut end, mut byte_end) = (segment_end, segment_byte_end);
            if segment_byte_end - byte > max_batch {
                let limit = u64::from(offsets[frame]) + max_batch as u64;
                let fit = offsets[frame..segment_end].partition_point(|&o| u64::from(o) < limit);
                let cut = frame + fit.max(1);
                if cut < segment_end {
                    end = cut;
                    byte_end = byte + (offsets[cut] - offsets[frame]) as usize;
                }
            }
            while self.in_flight.len() >= PIPELINE_DEPTH {
                if !self.complete_next().await {
                    break;
                }
            }
            if !self.usable_for(&taken, byte) {
                return;
            }
            self.ensure_direct().await;
            // The writer task drives it from `in_flight`.
            drop(self.start_piece(&taken, frame..end, byte..byte_end, sync));
            frame = end;
            byte = byte_end;
        }
    }

    /// Whether the log can still be written; if not, gives back the queue room of what was taken
    /// from `from` on and wakes the waiters (they find the poison).
    fn usable_for(&self, taken: &Taken, from: usize) -> bool {
        if self.shared.check_usable().is_ok() {
            return true;
        }
        self.release((taken.buf.len() - from) as u64);
        self.shared.stage.notify_waiters();
        false
    }

    /// Launches what was taken as one write, without awaiting: for a leader, and only when it
    /// needs no new segment and fits one write.
    fn launch_simple(&mut self, taken: Taken) -> Option<BatchIo> {
        debug_assert!(taken.rotations.is_empty());
        if !self.usable_for(&taken, 0) {
            return None;
        }
        let sync = taken.sync || self.shared.options.sync_policy.syncs_each_batch();
        let (frames, bytes) = (taken.offsets.len(), taken.buf.len());
        Some(self.start_piece(&taken, 0..frames, 0..bytes, sync))
    }

    /// Submits the frames `frames` of what was taken, at `bytes` of its buffer, as one write
    /// at the active segment's end; the last piece carries the ticket and, where asked, the sync.
    fn start_piece(
        &mut self,
        taken: &Taken,
        frames: std::ops::Range<usize>,
        bytes: std::ops::Range<usize>,
        sync: bool,
    ) -> BatchIo {
        let last_piece = frames.end == taken.offsets.len();
        let chunk = taken.buf.slice(bytes);
        let base = self.active.write_offset;
        debug_assert_eq!(
            u64::from(taken.offsets[frames.start]),
            base,
            "the stage placed the frames"
        );
        let launched = Launched {
            first: Lsn(taken.first_lsn.0 + frames.start as u64),
            last: Lsn(taken.first_lsn.0 + frames.end as u64 - 1),
            offsets: taken.offsets[frames].to_vec(),
            end: base + chunk.len() as u64,
            bytes: chunk.len() as u64,
            sync: sync && last_piece,
            ticket: last_piece.then_some(taken.ticket),
            calls: if last_piece { taken.calls } else { 0 },
            payload_bytes: if last_piece { taken.payload_bytes } else { 0 },
            started: Instant::now(),
            recycle: last_piece.then(|| taken.buf.clone()),
            direct_refused: false,
            direct_buf: None,
        };
        self.active.write_offset = launched.end;
        self.submit(chunk, base, launched)
    }

    /// Submits one write. Where durability is asked: if everything before is already durable,
    /// the write carries `RWF_DSYNC` (durable for its own range, one request); otherwise it is
    /// linked to an fdatasync that covers everything written before it in this segment (earlier
    /// segments were synced at rotation).
    fn submit(&mut self, chunk: Bytes, base: u64, launched: Launched) -> BatchIo {
        let direct = if chunk.len() >= self.direct_min {
            self.direct_write(&chunk, base)
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
                self.track_tail(&chunk, base);
                self.buffered_unsynced += chunk.len() as u64;
                (self.active.file.clone(), chunk, base, None)
            }
        };
        let mode = match (launched.sync, self.unsynced_entries == 0) {
            (false, _) => WriteMode::Plain,
            (true, true) => WriteMode::Dsync,
            (true, false) => WriteMode::ThenSync,
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
        let io = BatchIo::new(io);
        self.in_flight.push_back(InFlight {
            io: io.clone(),
            led: false,
            watched: false,
            launched: tokio::time::Instant::now(),
        });
        io
    }

    /// The write of `chunk` at `base` as an `O_DIRECT` write of whole blocks, where the active
    /// segment is open for it: the partly written block before `base` is written again with the
    /// same bytes (a torn write of it leaves each sector old or new, which are equal), the last
    /// block is padded with zeros (which is what the segment holds there: zero-filled, or
    /// allocated unwritten, which reads as zeros).
    fn direct_write(&mut self, chunk: &[u8], base: u64) -> Option<(File, Bytes, u64)> {
        // The partial block is rewritten from memory: the write before must be done (one write
        // in flight at a time), or the two could land in either order.
        const _: () = assert!(PIPELINE_DEPTH == 1, "direct writes rewrite the last block");
        debug_assert!(self.in_flight.is_empty());
        let DirectTail::On { file, tail, block } = &mut self.direct else {
            return None;
        };
        if *block + tail.len() as u64 != base {
            // Not where this segment's writes left off: never guess.
            self.direct = DirectTail::Off;
            return None;
        }
        let start = *block;
        let total = tail.len() + chunk.len();
        let padded = total.div_ceil(DIRECT_BLOCK as usize) * DIRECT_BLOCK as usize;
        let mut buf = match self.direct_bufs.pop() {
            Some(buf)
                if buf.capacity() >= padded
                    && (buf.as_ptr() as usize).is_multiple_of(DIRECT_BLOCK as usize) =>
            {
                buf
            }
            _ => ringtide_platform::aligned_bytes_mut(padded, DIRECT_BLOCK as usize),
        };
        buf.extend_from_slice(tail);
        buf.extend_from_slice(chunk);
        buf.resize(padded, 0);
        let file = file.clone();
        self.track_tail(chunk, base);
        Some((file, buf.freeze(), start))
    }

    /// Keeps the last, partly written block of the active segment in memory as `chunk` is
    /// written at `base` (directly or not), for the next direct write to write again.
    fn track_tail(&mut self, chunk: &[u8], base: u64) {
        let DirectTail::On { tail, block, .. } = &mut self.direct else {
            return;
        };
        if *block + tail.len() as u64 != base {
            // Not where this segment's writes left off: never guess.
            self.direct = DirectTail::Off;
            return;
        }
        let end = base + chunk.len() as u64;
        let last_block = end - end % DIRECT_BLOCK;
        if last_block == *block {
            tail.extend_from_slice(chunk);
        } else {
            tail.clear();
            tail.extend_from_slice(&chunk[(last_block - base) as usize..]);
            *block = last_block;
        }
    }

    /// Decides, once per active segment, whether its writes go direct: opens it with `O_DIRECT`
    /// and reads its last, partly written block. Buffered where the log does not use direct
    /// I/O, the segment is not a whole number of blocks, or the file system refuses it.
    async fn ensure_direct(&mut self) {
        if !matches!(self.direct, DirectTail::Unknown) {
            return;
        }
        self.direct = DirectTail::Off;
        if !self.direct_io || !self.active.allocated.is_multiple_of(DIRECT_BLOCK) {
            return;
        }
        let path = {
            let index = self.shared.index.read().unwrap_or_else(|p| p.into_inner());
            match index.segments.last() {
                Some(segment) => segment.path.clone(),
                None => return,
            }
        };
        let options = ringtide_platform::OpenOptions::new()
            .write(true)
            .direct(true);
        let file = match self.shared.driver.open(&path, &options).await {
            Ok(file) => file,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::InvalidInput {
                    // The file system has no O_DIRECT (tmpfs): buffered writes from now on.
                    self.direct_io = false;
                }
                tracing::debug!(error = %e, "wal: no direct I/O for this segment; buffered writes");
                return;
            }
        };
        let offset = self.active.write_offset;
        let block = offset - offset % DIRECT_BLOCK;
        let (res, tail) = self
            .active
            .file
            .read_exact_at(BytesMut::with_capacity((offset - block) as usize), block)
            .await;
        if let Err(e) = res {
            tracing::debug!(error = %e, "wal: could not read the last block; buffered writes");
            return;
        }
        self.direct = DirectTail::On {
            file,
            tail: tail.to_vec(),
            block,
        };
    }

    /// Publishes a write whose I/O is done, in launch order: index, last lsn, durable lsn, then
    /// the tickets, which wake the waiters.
    /// Does not await (a leader's future may be dropped at any await): what needs I/O after a
    /// failure, or a sync due under `Periodic`, is left in `failure_cut` and `sync_soon` for the
    /// writer task.
    fn complete(&mut self, res: std::io::Result<()>, mut launched: Launched) {
        self.release(launched.bytes);
        if let Some(buf) = launched.direct_buf.take() {
            stage::keep_for_reuse(
                &mut self.direct_bufs,
                buf,
                DIRECT_BUFS,
                DIRECT_BUF_MAX_BYTES,
            );
        }
        if launched.direct_refused && self.direct_io {
            tracing::warn!(dir = %self.shared.dir.display(), "wal: the file system refused a direct write; writing buffered from now on");
            self.direct_io = false;
            self.direct = DirectTail::Off;
        }
        if let Some(buf) = launched.recycle.take() {
            self.shared.stage.lock().recycle(buf);
        }
        if self.shared.check_usable().is_err() {
            // An earlier write failed: this one is not acknowledged, whatever its own I/O did.
            self.shared.stage.notify_waiters();
            return;
        }
        if let Err(e) = res {
            let _ = self.poison(e);
            // A failed sync may have dropped any unsynced page; a failed write only its own.
            let trusted = if launched.sync {
                self.shared.durable_lsn()
            } else {
                self.shared.written_lsn()
            };
            self.failure_cut = Some(trusted);
            self.shared.stage.wake.notify_one();
            return;
        }
        {
            let mut index = self.shared.index.write().unwrap_or_else(|p| p.into_inner());
            let segment = index.segments.last_mut().expect("an active segment");
            segment.offsets.extend_from_slice(&launched.offsets);
            segment.end = launched.end;
        }
        self.shared
            .written
            .store(launched.last.0, Ordering::Release);
        let entries = launched.last.0 + 1 - launched.first.0;
        let c = &self.shared.counters;
        c.appends.fetch_add(entries, Ordering::Relaxed);
        c.appended_bytes
            .fetch_add(launched.payload_bytes, Ordering::Relaxed);
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.max_batch_entries.fetch_max(entries, Ordering::Relaxed);
        self.shared.observe.batch(entries, launched.payload_bytes);
        if let Some(ticket) = launched.ticket {
            self.written_ticket = ticket;
        }
        if launched.sync {
            self.record_sync(launched.started);
            self.mark_durable(launched.last);
        } else {
            self.unsynced_entries += entries;
            self.maybe_sync_early();
            if let SyncPolicy::Periodic {
                interval,
                max_unsynced_entries,
            } = self.shared.options.sync_policy
            {
                if self.unsynced_entries >= max_unsynced_entries {
                    // The sync comes first, then the waiters hear of the write: an append that
                    // reaches the bound returns synced. (`deferred` publishes after the sync.)
                    self.sync_soon = true;
                    self.shared.stage.wake.notify_one();
                    return;
                } else if self.sync_deadline.is_none() {
                    self.sync_deadline = Some(tokio::time::Instant::now() + interval);
                }
            }
        }
        self.publish_progress();
        if launched.sync && self.in_flight.is_empty() {
            // The appenders that staged during the I/O are already there; the ones just
            // acknowledged are on their way back.
            self.expect_returns = self.shared.stage.lock().calls + launched.calls;
            self.gather_started = Some(Instant::now());
            self.gather_yields = 0;
        }
    }

    /// For logs that do not sync every batch: once another [`EARLY_SYNC_BYTES`] of the active
    /// segment are written through the page cache, starts an fdatasync of it in the background.
    /// Nothing is published as durable from it; it only gets the page cache written back while
    /// the log goes on, so the sync that a rotation must wait for finds little left to do. Direct
    /// writes do not count: they leave nothing to write back.
    fn maybe_sync_early(&mut self) {
        if self.early_sync.is_some() || self.shared.options.sync_policy.syncs_each_batch() {
            return;
        }
        if self.buffered_unsynced < EARLY_SYNC_BYTES {
            return;
        }
        self.buffered_unsynced = 0;
        let file = self.active.file.clone();
        let shared = self.shared.clone();
        self.early_sync = Some(tokio::spawn(async move {
            let res = file.sync_data().await;
            shared.stage.wake.notify_one();
            res
        }));
    }

    /// Waits for the background sync, if any. It failing means the kernel may have dropped dirty
    /// pages without writing them: the log is poisoned, as for any failed sync.
    async fn finish_early_sync(&mut self) {
        let Some(handle) = self.early_sync.take() else {
            return;
        };
        match handle.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = self.poison(e);
                self.failure_cut = Some(self.shared.durable_lsn());
            }
            Err(e) => {
                let _ = self.poison(std::io::Error::other(e.to_string()));
            }
        }
    }

    /// Starts preparing the next segment in the background once the stage's tail segment is
    /// half full, so a rotation does not wait for its zeros to be written (and the zeros do not
    /// compete with the log's own writes when the log is young).
    fn maybe_prepare(&mut self) {
        if self.needs_preparing() {
            self.start_preparing(self.shared.options.segment_size_bytes);
        }
    }

    /// Whether the next segment should start being prepared now.
    fn needs_preparing(&self) -> bool {
        if self.preparing.is_some() || self.prepare_failed {
            return false;
        }
        let st = self.shared.stage.lock();
        st.spare.is_none() && !st.closed && st.seg_end >= st.seg_limit / 2
    }

    fn start_preparing(&mut self, size: u64) {
        self.prepare_seq += 1;
        let name = format!("next-{:06}", self.prepare_seq);
        let shared = self.shared.clone();
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.prepare_cancel = cancel.clone();
        self.preparing = Some(tokio::spawn(async move {
            let res = segment::prepare_segment(
                &shared.driver,
                &shared.dir,
                &name,
                size,
                super::zero_fill(&shared.options),
                Some(&cancel),
            )
            .await;
            // The writer offers it as the spare next time it looks.
            shared.stage.wake.notify_one();
            res
        }));
    }

    /// A background preparation ended: its segment becomes the spare.
    fn prepared(
        &mut self,
        res: std::result::Result<Result<segment::Prepared>, tokio::task::JoinError>,
    ) {
        match res {
            Ok(Ok(prepared)) => {
                drop(self.offer_spare(prepared));
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "preparing the next wal segment failed; an append that needs it will try again");
                self.prepare_failed = true;
            }
            Err(e) => {
                tracing::debug!(error = %e, "the wal segment preparation task ended early");
                self.prepare_failed = true;
            }
        }
    }

    /// Makes a ready segment the stage's spare; gives back the stage, still locked.
    fn offer_spare(&mut self, prepared: segment::Prepared) -> MutexGuard<'_, stage::State> {
        let size = prepared.size;
        self.spares.push_back(prepared);
        let mut st = self.shared.stage.lock();
        debug_assert!(st.spare.is_none(), "one spare at a time");
        st.spare = Some(size);
        st
    }

    /// Stages a call that fits neither the stage's tail segment nor the spare, making room for
    /// it first: grows the tail segment if it is empty, else makes a spare large enough.
    ///
    /// The call is staged under the lock that offers the room, so a call larger than a segment
    /// cannot lose the spare made for it to smaller calls that rotate into it first.
    async fn make_room(&mut self, call: &stage::Call) -> Result<stage::Placed> {
        // The call passed the bounds on queued bytes when it asked for room, but other calls
        // may have been staged since (other large calls among them): if it no longer fits the
        // bounds, what is staged is written first, appends held back meanwhile.
        let over = self
            .shared
            .stage
            .lock()
            .over_bounds(call.frame_bytes, &self.shared.options);
        if over {
            self.freeze().await;
        }
        let placed = loop {
            if let Some(placed) = self.make_room_once(call).await.transpose() {
                break placed;
            }
        };
        if over {
            // Nothing moved the tail but this call: appends go on after it.
            self.unfreeze();
        }
        placed
    }

    /// One attempt of `make_room`: `None` if other calls took the room made (only after
    /// growing the empty tail segment, which they may fill before this call is staged).
    async fn make_room_once(&mut self, call: &stage::Call) -> Result<Option<stage::Placed>> {
        self.shared.check_usable()?;
        let bytes = call.frame_bytes;
        // A whole number of blocks, so that the segment can be written directly.
        let needed = (HEADER_LEN + bytes).next_multiple_of(DIRECT_BLOCK);
        // A preparation in flight: its result first.
        if let Some(handle) = self.preparing.take() {
            let res = handle.await;
            self.prepared(res);
        }
        let (grow, small) = {
            let mut st = self.shared.stage.lock();
            if let Some(placed) = stage::stage_made_room(&self.shared, &mut st, call)? {
                return Ok(Some(placed));
            }
            let grow = st.seg_end == HEADER_LEN;
            // A spare too small for this call is given up; a larger one is made below.
            let small = if !grow && st.spare.take().is_some() {
                self.spares.pop_back()
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
        self.prepare_seq += 1;
        let name = format!("next-{:06}", self.prepare_seq);
        let size = self.shared.options.segment_size_bytes.max(needed);
        match segment::prepare_segment(
            &self.shared.driver,
            &self.shared.dir,
            &name,
            size,
            super::zero_fill(&self.shared.options),
            None,
        )
        .await
        {
            Ok(prepared) => {
                self.prepare_failed = false;
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
            self.shared
                .counters
                .disk_bytes
                .fetch_add(grow, Ordering::Relaxed);
            self.active.allocated = size;
            self.shared.report_space();
            // Direct writes need a whole number of blocks: look again.
            self.direct = DirectTail::Unknown;
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
    async fn rotate(&mut self, first_lsn: Lsn) -> Result<()> {
        self.finish_early_sync().await;
        // A write to the old segment that failed (the caller drained them all), or the early
        // sync just finished, poisoned the log: a new segment now would hold entries after a
        // gap, and recovery would refuse the log ("a segment is missing") until the cut record
        // is written. Under the policies that sync every batch nothing is left unsynced, so the
        // sync below would not notice.
        self.shared.check_usable()?;
        // The old segment must be durable before the next one holds data: otherwise a crash could
        // keep the new segment's synced entries and lose the old one's unsynced tail — a gap.
        if self.unsynced_entries > 0 {
            self.sync_now().await?;
        }
        let Some(prepared) = self.spares.pop_front() else {
            return Err(self.poison(std::io::Error::other(
                "wal: a rotation found no spare segment",
            )));
        };
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
                .map_err(|e| self.poison_with(e))?;
        self.add_segment(file, path, first_lsn, size);
        Ok(())
    }

    /// Makes a new, empty segment the active one.
    fn add_segment(&mut self, file: File, path: std::path::PathBuf, first_lsn: Lsn, size: u64) {
        tracing::debug!(segment = %path.display(), first_lsn = first_lsn.0, "wal segment created");
        self.shared
            .counters
            .disk_bytes
            .fetch_add(size, Ordering::Relaxed);
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
    }

    /// Makes `active` the segment the log writes to, forgetting what was known of the last one's
    /// direct writes and write-back.
    fn set_active(&mut self, active: Active) {
        self.direct = DirectTail::Unknown;
        self.buffered_unsynced = 0;
        self.active = active;
    }

    /// A new segment for `header` outside the stage's rotations (a reset): the spare if it is
    /// large enough, else one made now.
    async fn new_segment(
        &mut self,
        header: SegmentHeader,
        size: u64,
    ) -> Result<(File, std::path::PathBuf)> {
        if let Some(handle) = self.preparing.take() {
            let res = handle.await;
            self.prepared(res);
        }
        let spare = {
            let mut st = self.shared.stage.lock();
            if st.spare.take().is_some() {
                self.spares.pop_back()
            } else {
                None
            }
        };
        match spare {
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
                    super::zero_fill(&self.shared.options),
                )
                .await
            }
        }
    }

    async fn remove_prepared(&self, prepared: segment::Prepared) {
        let _ = prepared.file.close().await;
        let _ = self.shared.driver.remove_file(&prepared.path).await;
    }

    /// Stops the background preparation and removes every spare. The task is asked to stop and
    /// awaited, not aborted: an aborted task could leave its `open` running on the pool, creating
    /// the file after the removal.
    async fn discard_spares(&mut self) {
        if let Some(handle) = self.preparing.take() {
            self.prepare_cancel
                .store(true, std::sync::atomic::Ordering::Release);
            // On failure or cancellation the task removed its own file.
            if let Ok(Ok(prepared)) = handle.await {
                self.remove_prepared(prepared).await;
            }
        }
        self.shared.stage.lock().spare = None;
        while let Some(prepared) = self.spares.pop_front() {
            self.remove_prepared(prepared).await;
        }
    }

    /// Deletes segment files in the order given, each deletion made durable (directory fsync)
    /// before the next, and keeps the disk counter.
    async fn delete_segments<'a>(
        &self,
        segments: impl Iterator<Item = &'a SegmentIndex>,
    ) -> std::io::Result<()> {
        let mut deleted = false;
        for segment in segments {
            if deleted {
                // One deletion durable before the next, so a crash keeps them in order (a
                // truncation from the back then always leaves a prefix of the log).
                self.shared.driver.sync_dir(&self.shared.dir).await?;
            }
            self.shared.driver.remove_file(&segment.path).await?;
            self.shared
                .counters
                .disk_bytes
                .fetch_sub(segment.allocated, Ordering::Relaxed);
            deleted = true;
        }
        if deleted {
            self.shared.driver.sync_dir(&self.shared.dir).await?;
        }
        Ok(())
    }

    async fn truncate_front(&mut self, lsn: Lsn) -> Result<()> {
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

    async fn truncate_back(&mut self, lsn: Lsn) -> Result<()> {
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
            .map_err(|e| self.poison_with(e))?;
        // Readers stop at `lsn` from now on; streams past it end.
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
            let keep = (lsn.next().0 - seg.first_lsn.0) as usize;
            (keep, seg.clone(), index.segments[k + 1..].to_vec())
        };
        let io = |w: &Writer, e: std::io::Error| w.poison(e);
        // Delete later segments from the last backwards, so a crash leaves a prefix of the log.
        self.delete_segments(later.iter().rev())
            .await
            .map_err(|e| io(self, e))?;
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
        // Cut and re-extend with zeros: frames past the cut must never be read again, not even
        // by recovery's search for valid data after damage.
        let file = &cut_segment.file;
        file.set_len(cut).await.map_err(|e| io(self, e))?;
        file.allocate(cut, cut_segment.allocated.saturating_sub(cut).max(1))
            .await
            .map_err(|e| io(self, e))?;
        file.sync_all().await.map_err(|e| io(self, e))?;
        CutRecord::remove(&self.shared.driver, &self.shared.dir)
            .await
            .map_err(|e| self.poison_with(e))?;
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
        self.unsynced_entries = 0;
        self.sync_deadline = None;
        self.shared
            .durable
            .send_replace(lsn.0.min(self.shared.durable_lsn().0));
        tracing::info!(last_lsn = lsn.0, "wal truncated at the back");
        Ok(())
    }

    /// Clears the "batch continues" flag of the frame at `start..end` if it is set. The cut record
    /// written before lets recovery repair a rewrite torn by a power loss.
    async fn end_batch_at(&self, file: &File, start: u64, end: u64) -> Result<()> {
        let (res, buf) = file
            .read_exact_at(BytesMut::with_capacity((end - start) as usize), start)
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
        let (res, _) = file.writev_sync_at(vec![frame.freeze()], start).await;
        res.map(drop).map_err(|e| self.poison(e))
    }

    async fn reset(&mut self, next: Lsn) -> Result<()> {
        self.shared.check_usable()?;
        // Once the new epoch may be recorded, the handle and the files can disagree on any
        // failure: poison, so that only a reopen (recovery) goes on.
        self.reset_steps(next)
            .await
            .map_err(|e| self.poison_with(e))
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
        let created = self.new_segment(header, size).await;
        let (file, path) = match created {
            Ok(created) => created,
            Err(Error::Io { source, .. }) => return Err(self.poison(source)),
            Err(e) => return Err(e),
        };
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
        self.unsynced_entries = 0;
        self.sync_deadline = None;
        self.shared
            .counters
            .disk_bytes
            .fetch_add(size, Ordering::Relaxed);
        // The old epoch's files are leftovers from here on: recovery deletes any a crash keeps.
        self.delete_segments(old.iter())
            .await
            .map_err(|e| Error::io(&self.shared.dir, e))?;
        tracing::info!(next_lsn = next.0, epoch, "wal reset");
        Ok(())
    }

    /// Writes a seal after the last entry, once everything is durable: recovery then knows the
    /// last sync's entries were durable too, and calls damage to them corruption rather than a
    /// torn tail (see `record.rs`). Only a hint: if it cannot be written, recovery knows less.
    async fn seal(&mut self) {
        let next = self.next_lsn();
        debug_assert_eq!(self.shared.durable_lsn(), Lsn(next.0 - 1));
        let mut seal = BytesMut::new();
        self.shared.format.encode_seal(&mut seal, next);
        let at = self.active.write_offset;
        let end = at + seal.len() as u64;
        // Only where it fits, and within one 512-byte sector: a seal torn by a power loss
        // during `close` would read as a torn tail, which `Strict` refuses.
        if end > self.active.allocated || at / SECTOR != (end - 1) / SECTOR {
            return;
        }
        let (res, _) = self
            .active
            .file
            .writev_dsync_at(vec![seal.freeze()], at)
            .await;
        if let Err(e) = res {
            tracing::warn!(dir = %self.shared.dir.display(), error = %e, "wal: the seal after the last entry could not be written; a later recovery cannot vouch for the last sync's entries");
        }
    }

    /// Syncs what is written, marks the log closed, releases the lock and wakes every tail.
    async fn close(&mut self) -> Result<()> {
        // Appends fail from here; what is staged is written.
        self.shared.stage.lock().closed = true;
        self.flush().await;
        self.finish_early_sync().await;
        self.discard_spares().await;
        let synced = match self.shared.poisoned.get() {
            // Closing does not clear the poison: the caller learns the log needs a reopen.
            Some(cause) => Err(Error::Poisoned {
                cause: cause.clone(),
            }),
            None if self.shared.written_lsn() > self.shared.durable_lsn() => self.sync_now().await,
            None => Ok(()),
        };
        if synced.is_ok() {
            self.seal().await;
            // Then record the clean close outside the last segment (see `clean_close.rs`).
            super::clean_close::record(&self.shared, self.log_id, self.epoch).await;
        }
        self.shared.closed.store(true, Ordering::Release);
        self.shared.stage.notify_waiters();
        let lock = self
            .shared
            .lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let released = match lock {
            Some(lock) => lock
                .close()
                .await
                .map_err(|e| Error::io(self.shared.dir.join(segment::LOCK_FILE), e)),
            None => Ok(()),
        };
        // Wake tails so they see the log closed.
        self.shared.durable.send_modify(|_| {});
        tracing::debug!(dir = %self.shared.dir.display(), "wal closed");
        synced.and(released)
    }
}

/// Answers a command that will not run.
fn refuse(command: Command, err: &Error) {
    match command {
        Command::Sync(reply) => drop(reply.send(Err(error_for_waiter(err)))),
        Command::MakeRoom(_, reply) => drop(reply.send(Err(error_for_waiter(err)))),
        Command::TruncateFront(_, reply)
        | Command::TruncateBack(_, reply)
        | Command::Reset(_, reply)
        | Command::Close(reply) => drop(reply.send(Err(error_for_waiter(err)))),
    }
}
