//! Appenders that lead: an appender waiting for durability does the writer's work itself when
//! the writer is idle. It takes what is staged, writes it, waits for the write and publishes it,
//! saving two task wake-ups per batch (the writer task's, and the appender's again), which were
//! a third of a lone durable append's latency on a two-worker runtime.
//!
//! Invariants:
//! 1. Only the simple case is led ([`Writer::may_lead`]): nothing in flight, no new segment to
//!    start, one write, no window or gathering to wait for, nothing deferred. Batches of many
//!    writers stay the writer task's: it gathers the acknowledged appenders coming back, which
//!    leaders racing it for each batch cut short.
//! 2. A leader holds the writer only while it takes and writes, and while it publishes, never
//!    across an await: an append future polled once and then left alone (a `select!` arm, say)
//!    holds nothing up.
//! 3. Every led write is published exactly once, by its leader or by the writer task, which
//!    takes over as [`Publisher`] describes: at the latest [`LEAD_GRACE`] after the launch.
//! 4. A lone leader's completion wakes one task: the writer task registers its waker on a led
//!    write only once it needs the completion (see `batch_io.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::write::BatchIo;
use super::{Writer, WriterCell};
use crate::wal::Shared;
use crate::wal::batch_io::Party;

/// How long a led write is left to its leader before the writer task watches it: the longest a
/// leader whose future is kept but no longer polled can hold up the publication of its write.
const LEAD_GRACE: Duration = Duration::from_millis(2);

/// Who publishes the write in flight: the leader hand-off, as a state machine.
///
/// ```text
///   the writer task writes          a leader writes
///            │                             │
///            ▼                             ▼
///       WriterTask               Leader { launched }
///  (it waits for the write,               │  the writer task needs the completion: work waits
///   then publishes it)                    │  behind the write, the leader went away, or
///                                         ▼  LEAD_GRACE passed since `launched`
///                                      Watched
///                                         │
///          Leader or Watched, the write done when the writer task looks:
///          it yields once, for the leader to publish first
///                                         ▼
///                                      Yielded
///                                         │  still in flight at the writer task's next look
///                                         ▼
///                             the writer task publishes it
/// ```
///
/// In every led state the leader, coming back, publishes the write itself if it is still in
/// flight; the write then leaves `Writer::in_flight`, and with it this state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Publisher {
    /// Written by the writer task, which publishes it.
    WriterTask,
    /// Written by a leader, which is to publish it; the writer task does not poll it, so that
    /// its completion wakes the leader alone.
    Leader { launched: tokio::time::Instant },
    /// Written by a leader; the writer task polls it too (its waker registered), as it needs
    /// the completion.
    Watched,
    /// Done, and the writer task yielded once to let the leader publish it.
    Yielded,
}

/// The writer task's watch over leaders.
pub(super) struct Leading {
    /// A leader wrote since the writer task last looked: while leaders write, the writer task
    /// looks every [`LEAD_GRACE`].
    wrote_since_look: bool,
    /// The writer task will look again at a deadline; a leader that finds it not looking wakes
    /// it.
    looking: bool,
    /// Set by a leader that went away before publishing its write (see [`Handover`]).
    left: Arc<AtomicBool>,
    /// The writer task's waker for a led write it watches: wakes the writer task's loop.
    wake_writer: Waker,
}

impl Leading {
    pub(super) fn new(shared: &Arc<Shared>, left: Arc<AtomicBool>) -> Leading {
        Leading {
            wrote_since_look: false,
            looking: false,
            left,
            wake_writer: Waker::from(Arc::new(WakeWriter(shared.clone()))),
        }
    }
}

/// Wakes the writer task: registered on a led write once the writer task needs its completion.
struct WakeWriter(Arc<Shared>);

impl std::task::Wake for WakeWriter {
    fn wake(self: Arc<Self>) {
        self.0.stage.wake.notify_one();
    }
}

/// What the writer task found when it looked at the write in flight.
pub(super) enum Look {
    /// Its own write is in flight: wait for it.
    OwnWrite(BatchIo),
    /// A led write is done and its leader had its chance: publish it now.
    Publish,
    /// Nothing in flight, or a led write: wait (without the writer) for the stage, a command,
    /// or `lead_check`; first yield once if `yield_first`.
    Wait {
        lead_check: Option<tokio::time::Instant>,
        yield_first: bool,
    },
}

impl Writer {
    /// The writer task's look at the write in flight (see [`Publisher`]). `staged`: work waits
    /// behind a led write, so the writer task needs its completion.
    pub(super) fn look_at_leaders(&mut self, staged: bool) -> Look {
        let now = tokio::time::Instant::now();
        let needed = staged || self.leading.left.swap(false, Ordering::AcqRel);
        let wake_writer = &self.leading.wake_writer;
        let led_done = match self.in_flight.as_mut() {
            Some(f) if f.publisher != Publisher::WriterTask => {
                if let Publisher::Leader { launched } = f.publisher
                    && (needed || now >= launched + LEAD_GRACE)
                {
                    f.publisher = Publisher::Watched;
                }
                if f.publisher == Publisher::Watched {
                    // Polled with the writer task's waker: drives the write, and keeps the
                    // waker registered until it is done.
                    let _ =
                        f.io.poll_as(Party::Writer, &mut Context::from_waker(wake_writer));
                }
                Some(f.io.is_done())
            }
            _ => None,
        };
        // While leaders write, look again after `LEAD_GRACE`.
        let unwatched = self
            .in_flight
            .as_ref()
            .is_some_and(|f| matches!(f.publisher, Publisher::Leader { .. }));
        let lead_check = (self.leading.wrote_since_look || unwatched).then(|| now + LEAD_GRACE);
        self.leading.wrote_since_look = false;
        self.leading.looking = lead_check.is_some();
        let wait = |yield_first| Look::Wait {
            lead_check,
            yield_first,
        };
        match (self.in_flight.as_mut(), led_done) {
            (None, _) | (Some(_), Some(false)) => wait(false),
            (Some(f), None) => Look::OwnWrite(f.io.clone()),
            (Some(f), Some(true)) if f.publisher == Publisher::Yielded => Look::Publish,
            (Some(f), Some(true)) => {
                f.publisher = Publisher::Yielded;
                wait(true)
            }
        }
    }

    /// Whether an appender may lead now: the simple case only (invariant 1).
    fn may_lead(&mut self) -> bool {
        if self.shared.check_usable().is_err()
            || self.batching.gathers_many()
            || self.in_flight.is_some()
            || self.failure_cut.is_some()
            || self.durability.sync_soon()
            || self.direct.is_unknown()
        {
            return false;
        }
        let simple = {
            let st = self.shared.stage.lock();
            st.rotations_pending() == 0
                && st.staged_bytes() <= self.shared.options.max_batch_bytes as usize
        };
        simple && self.decide() == super::schedule::Decision::Launch
    }

    /// Whether the writer task has anything to do once a leader lets go of the writer.
    fn left_for_writer_task(&self) -> bool {
        self.in_flight
            .as_ref()
            .is_some_and(|f| f.publisher == Publisher::WriterTask)
            || self.failure_cut.is_some()
            || self.durability.sync_soon()
            || self.needs_preparing()
            || self.shared.stage.lock().staged_bytes() > 0
    }
}

/// The writer, held by an appender that leads: on the way out (also when the appender's future
/// is dropped), the writer task is woken if anything is left for it.
struct Leader<'a> {
    writer: tokio::sync::MutexGuard<'a, Writer>,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if self.writer.left_for_writer_task() {
            self.writer.shared.stage.wake.notify_one();
        }
    }
}

/// Hands a led write over to the writer task if its leader goes away before publishing it: the
/// writer task, woken, watches the write.
struct Handover<'a> {
    cell: &'a WriterCell,
    shared: &'a Shared,
    armed: bool,
}

impl Drop for Handover<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.cell.leader_left.store(true, Ordering::Release);
            self.shared.stage.wake.notify_one();
        }
    }
}

/// Leads, if the writer is idle: takes what is staged, writes it, waits for the write and
/// publishes it. Its write is first polled with the leader's waker alone, so that its
/// completion wakes one task. If the leader goes away, or does not publish the write within
/// [`LEAD_GRACE`], the writer task does.
///
/// # Cancel safety
///
/// Cancel safe: a leader dropped after writing hands its write over to the writer task.
pub(crate) async fn lead(cell: &WriterCell, shared: &Shared) {
    // Takes and writes under the writer, polling the write first with the leader's own waker.
    let written = std::future::poll_fn(|cx| Poll::Ready(try_write(cell, shared, cx))).await;
    let Some(io) = written else {
        return;
    };
    let mut handover = Handover {
        cell,
        shared,
        armed: true,
    };
    io.wait(Party::Leader).await;
    // Publish it, unless the writer task is at work (then it does).
    let Ok(guard) = cell.writer.try_lock() else {
        drop(handover);
        return;
    };
    let mut leader = Leader { writer: guard };
    let w = &mut *leader.writer;
    if w.in_flight.as_ref().is_some_and(|f| f.io.ptr_eq(&io)) {
        w.publish_done();
    }
    handover.armed = false;
}

/// The leader's part under the writer: takes what is staged and writes it; the write, if it
/// did.
fn try_write(cell: &WriterCell, shared: &Shared, cx: &mut Context<'_>) -> Option<BatchIo> {
    let Ok(guard) = cell.writer.try_lock() else {
        // The writer task (or another leader) works: it sees what is staged, but may be about
        // to wait, so wake it.
        shared.stage.wake.notify_one();
        return None;
    };
    // Dropping the leader wakes the writer task for what is left to it.
    let mut leader = Leader { writer: guard };
    let w = &mut *leader.writer;
    if !w.may_lead() {
        return None;
    }
    let mut taken = w.take_staged()?;
    assert!(
        taken.rotations.is_empty(),
        "a led write starts no segment: the stage had no rotation pending"
    );
    if !w.usable_for(&taken, 0) {
        return None;
    }
    let mut recent = std::mem::take(&mut taken.recent);
    let io = w.write_piece(&taken, super::write::Piece::whole(&taken), &mut recent);
    // Polled here, under the writer, so that writes reach the kernel in launch order.
    let _ = io.poll_as(Party::Leader, cx);
    let in_flight = w.in_flight.as_mut()?;
    in_flight.publisher = Publisher::Leader {
        launched: tokio::time::Instant::now(),
    };
    w.leading.wrote_since_look = true;
    if !w.leading.looking {
        w.leading.looking = true;
        shared.stage.wake.notify_one();
    }
    Some(io)
}
