//! The writer: the one owner of the log's tail.
//!
//! Appenders stage their entries themselves (see `stage.rs`): lsns assigned, frames encoded into
//! the stage's buffer. The writer's part, step by step (each step that protects durability says
//! so where it happens):
//! 1. **Take** everything staged at once, when the schedule says so (`schedule.rs`): under
//!    `SyncPolicy::Grouped` after the window; after a synced batch, once the appenders it
//!    acknowledged had a moment to come back.
//! 2. **Rotate** where the stage started a new segment: install the spare (`spare.rs`), after
//!    the write in flight, with the old segment synced first.
//! 3. **Write** one piece per segment and per `max_batch_bytes` (`write.rs`), linked to one
//!    `fdatasync` when the policy or a caller asks for it (or with `RWF_DSYNC` when nothing
//!    earlier is unsynced), through `O_DIRECT` where it pays (`direct.rs`).
//! 4. **Publish** a write once done: index offsets, then `written`, then `durable`, then the
//!    tickets in [`Progress`](super::stage::Progress), which wakes the waiters (`sync.rs`).
//!
//! An appender waiting for durability may do steps 1, 3 and 4 itself when the writer is idle
//! (`leader.rs`). Maintenance (`truncate.rs`, `close.rs`) runs as commands between batches,
//! appends paused.
//!
//! Each concern keeps its state in its own small struct, a field of [`Writer`]: the schedule
//! ([`schedule::Batching`]), the leaders ([`leader::Leading`]), syncs and tickets
//! ([`sync::Durability`]), spare segments ([`spare::Spares`]) and direct I/O
//! ([`direct::Direct`]).
//!
//! Invariants:
//! 1. At most one write is in flight ([`Writer::in_flight`] is an `Option`). Measured on ext4, a
//!    second one only made batches smaller (its fdatasync waits for the first anyway), and
//!    direct writes rewrite the last partial block from memory, which two writes in flight
//!    could land in either order. Writes are therefore published in launch order.
//! 2. Only the holder of the writer's lock changes its state. The writer task holds it across
//!    awaits while it works; a leader holds it only between awaits.
//! 3. A failed write or sync poisons the log (`failure.rs`): that batch and every later call fail
//!    with [`Error::Poisoned`]; nothing retries an fsync. A broken internal invariant is a panic,
//!    not a poisoned log.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use ringtide_platform::File;
use tokio::sync::{mpsc, oneshot};

use super::batch_io::Party;
use super::stage;
use super::{Lsn, Shared};
use crate::error::{Error, Result};

mod close;
mod direct;
mod failure;
mod leader;
mod schedule;
mod spare;
mod sync;
mod truncate;
mod write;

pub(crate) use leader::lead;

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

/// The writer, and what an appender that leads needs besides it (see `leader.rs`).
pub(crate) struct WriterCell {
    writer: tokio::sync::Mutex<Writer>,
    /// Set when a leader goes away before publishing its write (the writer task then watches
    /// it). Outside the lock: a dropped leader's future cannot wait for it.
    leader_left: Arc<AtomicBool>,
}

/// What `spawn` returns: the writer, for appenders that lead.
pub(crate) type SharedWriter = Arc<WriterCell>;

/// The owner of the log's tail. Its concerns keep their state in their own structs.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    log_id: u64,
    epoch: u64,
    active: Active,
    /// The one write submitted and not yet published, if any (invariant 1).
    in_flight: Option<write::InFlight>,
    batching: schedule::Batching,
    leading: leader::Leading,
    durability: sync::Durability,
    /// A write failed: where the trustworthy log ends, to record (see `record_failure_cut`).
    failure_cut: Option<Lsn>,
    spares: spare::Spares,
    direct: direct::Direct,
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
    let leader_left = Arc::new(AtomicBool::new(false));
    let writer = Writer {
        direct: direct::Direct::new(shared.options.sync_policy.syncs_each_batch()),
        leading: leader::Leading::new(&shared, leader_left.clone()),
        shared,
        log_id,
        epoch,
        active,
        in_flight: None,
        batching: schedule::Batching::default(),
        durability: sync::Durability::default(),
        failure_cut: None,
        spares: spare::Spares::default(),
    };
    let cell = Arc::new(WriterCell {
        writer: tokio::sync::Mutex::new(writer),
        leader_left,
    });
    tokio::spawn(run(cell.clone(), queue));
    cell
}

/// Where the writer's work left off.
enum Next {
    /// Nothing in flight but maybe a led write; wake for the stage, a command, or one of these
    /// times.
    Wait {
        launch_at: Option<tokio::time::Instant>,
        sync_due: Option<tokio::time::Instant>,
        /// Leaders launch writes: look at them again then (see `leader::Publisher`).
        lead_check: Option<tokio::time::Instant>,
        /// A leader's write is done: yield once for the leader to publish it, then look again.
        yield_first: bool,
    },
    /// The log is closed.
    Exit,
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The writer task: works while there is work, holding the writer; waits without holding it,
/// so that an appender may lead (see [`lead`]).
async fn run(cell: Arc<WriterCell>, mut queue: mpsc::Receiver<Command>) {
    let shared = cell.writer.lock().await.shared.clone();
    loop {
        let next = cell.writer.lock().await.work(&mut queue).await;
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
                if cell.writer.lock().await.command(command, &mut queue).await {
                    return;
                }
            }
            () = shared.stage.wake.notified() => {}
            () = sleep_until_some(launch_at), if launch_at.is_some() => {}
            () = sleep_until_some(lead_check), if lead_check.is_some() => {}
            () = sleep_until_some(sync_due), if sync_due.is_some() => {
                let _ = cell.writer.lock().await.sync_now().await;
            }
        }
    }
}

impl Writer {
    /// Does everything there is to do now, holding the writer. Returns when there is nothing
    /// but waiting left (then nothing is in flight but maybe a led write), or when the log is
    /// closed.
    async fn work(&mut self, queue: &mut mpsc::Receiver<Command>) -> Next {
        loop {
            self.deferred().await;
            self.maybe_prepare();
            match self.decide() {
                schedule::Decision::Launch => {
                    self.write_staged().await;
                    continue;
                }
                schedule::Decision::Gather => {
                    // Let the woken appenders run (a yield, not a timer: tokio's timers tick in
                    // milliseconds), then look again.
                    tokio::task::yield_now().await;
                    continue;
                }
                schedule::Decision::Nothing
                | schedule::Decision::Busy
                | schedule::Decision::Window => {}
            }
            let staged = self.shared.stage.lock().staged_bytes() > 0;
            if !staged {
                // Taken by a flush or a leader meanwhile: no window is open.
                self.batching.close_window();
            }
            let launch_at = self.batching.launch_at();
            // A poisoned log syncs nothing: its deadline must not fire again and again.
            let sync_due = self
                .durability
                .sync_deadline()
                .filter(|_| self.in_flight.is_none() && self.shared.check_usable().is_ok());
            let own = match self.look_at_leaders(staged) {
                leader::Look::Publish => {
                    self.publish_done();
                    continue;
                }
                leader::Look::Wait {
                    lead_check,
                    yield_first,
                } => {
                    return Next::Wait {
                        launch_at,
                        sync_due,
                        lead_check,
                        yield_first,
                    };
                }
                leader::Look::OwnWrite(io) => io,
            };
            let shared = self.shared.clone();
            // Biased: finishing in-flight work comes first, and the order of choices does not
            // depend on tokio's random fairness, so a run on the simulated disk replays.
            tokio::select! {
                biased;
                () = own.wait(Party::Writer) => self.publish_done(),
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

    /// Work left over from a step that could not wait (publication does not await).
    async fn deferred(&mut self) {
        if let Some(lsn) = self.failure_cut.take() {
            self.record_failure_cut(lsn).await;
        }
        if self.durability.early_sync_finished() {
            self.finish_early_sync().await;
        }
        if self.durability.take_sync_soon() {
            let _ = self.sync_now().await;
        }
        self.collect_finished_preparation().await;
    }

    /// What the schedule says to do with what is staged now.
    fn decide(&mut self) -> schedule::Decision {
        let staged = {
            let st = self.shared.stage.lock();
            schedule::Staged {
                bytes: st.staged_bytes(),
                calls: st.calls,
                flush_wanted: st.flush_wanted,
            }
        };
        let options = &self.shared.options;
        let window = match options.sync_policy {
            super::SyncPolicy::Grouped { window } if !window.is_zero() => Some(window),
            _ => None,
        };
        self.batching.decide(
            staged,
            self.in_flight.is_some(),
            window,
            options.max_batch_bytes as usize,
            std::time::Instant::now,
        )
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
                    refuse(command);
                }
                true
            }
            Some(command) => {
                self.handle(command).await;
                false
            }
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Close(_) => unreachable!("handled by `command`"),
            Command::MakeRoom(mut call, reply) => {
                let res = self.make_room(&mut call).await;
                let _ = reply.send(res);
            }
            Command::Sync(reply) => {
                self.flush().await;
                let res = self.sync_now().await.map(|()| self.shared.durable_lsn());
                let _ = reply.send(res);
            }
            Command::TruncateFront(lsn, reply) => {
                self.pause_appends().await;
                let res = self.truncate_front(lsn).await;
                self.move_stage_tail();
                self.resume_appends();
                let _ = reply.send(res);
            }
            Command::TruncateBack(lsn, reply) => {
                self.pause_appends().await;
                let res = self.truncate_back(lsn).await;
                self.move_stage_tail();
                self.resume_appends();
                let _ = reply.send(res);
            }
            Command::Reset(lsn, reply) => {
                self.pause_appends().await;
                let res = self.reset(lsn).await;
                self.move_stage_tail();
                self.resume_appends();
                let _ = reply.send(res);
            }
        }
    }

    /// Holds appends back, then writes everything staged: the start of every maintenance step.
    async fn pause_appends(&mut self) {
        self.shared.stage.lock().frozen = true;
        self.flush().await;
    }

    /// Points the stage at where the log's tail now is, after maintenance that may have moved
    /// it (and deleted or made segments). Appends are paused, so nothing is staged.
    fn move_stage_tail(&mut self) {
        {
            let next = self.next_lsn();
            let mut st = self.shared.stage.lock();
            st.restart(next, self.active.write_offset, self.active.allocated);
        }
        self.shared.report_space();
    }

    /// Lets appends go on from the stage's tail.
    fn resume_appends(&self) {
        self.shared.stage.lock().frozen = false;
        self.shared.stage.notify_waiters();
    }

    /// The lsn after the last written.
    fn next_lsn(&self) -> Lsn {
        self.shared.written_lsn().next()
    }
}

/// Answers a command queued behind the close: the log is closed.
fn refuse(command: Command) {
    match command {
        Command::Sync(reply) => drop(reply.send(Err(Error::Closed))),
        Command::MakeRoom(_, reply) => drop(reply.send(Err(Error::Closed))),
        Command::TruncateFront(_, reply)
        | Command::TruncateBack(_, reply)
        | Command::Reset(_, reply)
        | Command::Close(reply) => drop(reply.send(Err(Error::Closed))),
    }
}
