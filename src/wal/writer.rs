//! The writer task: the one owner of the log's tail.
//!
//! Write path, step by step (each step that protects durability says so where it happens):
//! 1. Take every queued command (`recv_many`); under `SyncPolicy::Grouped`, wait up to the window
//!    for more.
//! 2. Make room: rotate to a new segment if the batch does not fit (after the batches in flight
//!    and syncing the old segment), or grow the segment for a batch larger than a segment.
//! 3. Assign lsns and encode every frame into one reusable buffer.
//! 4. Submit one `writev`, linked to one `fdatasync` when the policy or a caller asks for it. Up
//!    to two batches are in flight: the next is written while the previous one syncs.
//! 5. When a batch's I/O is done, in launch order: publish index offsets, then `written`, then
//!    `durable`; wake every waiter.
//!
//! A failed write or sync poisons the log: that batch and every later call fail with
//! [`Error::Poisoned`]; nothing retries an fsync.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use ringtide_platform::File;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::record::{Decoded, FrameFields};
use super::segment::{self, CutRecord, HEADER_LEN, Meta, SegmentHeader};
use super::{Lsn, Record, SegmentIndex, Shared, SyncPolicy};
use crate::error::{Error, Result};

/// Commands the queue holds at most; appenders beyond wait (the byte bound usually binds first).
pub(crate) const QUEUE_COMMANDS: usize = 4096;
/// Commands taken from the queue at once.
const TAKE_AT_ONCE: usize = 1024;

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

    fn len(&self) -> usize {
        match self {
            Records::One(_) => 1,
            Records::Many(v) => v.len(),
        }
    }
}

/// One queued append call.
pub(crate) struct AppendRequest {
    pub(crate) records: Records,
    /// The caller asked for an fdatasync whatever the policy.
    pub(crate) sync: bool,
    pub(crate) reply: oneshot::Sender<Result<Range<Lsn>>>,
    /// Released once the entries are written: the queue's byte bound.
    pub(crate) _permit: OwnedSemaphorePermit,
}

/// What the writer is asked to do, in queue order.
pub(crate) enum Command {
    Append(AppendRequest),
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

struct Writer {
    shared: Arc<Shared>,
    log_id: u64,
    epoch: u64,
    active: Active,
    next_lsn: Lsn,
    /// Entries written since the last sync.
    unsynced_entries: u64,
    /// When the periodic policy syncs next.
    sync_deadline: Option<tokio::time::Instant>,
    /// The reusable encoding buffer.
    buf: BytesMut,
    /// Appends waiting for the next launch.
    batch: Vec<AppendRequest>,
    batch_bytes: u64,
    /// Batches submitted and not yet published, in launch order.
    in_flight: FuturesOrdered<BatchIo>,
    /// Appenders acknowledged by the last batch: closed-loop writers come back within
    /// microseconds, and waiting for them makes the next batch (and its one fdatasync) serve
    /// them all instead of splitting writers into cohorts that alternate.
    expect_returns: usize,
    /// When the wait for them began, and how many times the writer yielded for them.
    gather_started: Option<Instant>,
    gather_yields: u32,
    /// Under `Grouped`, when the pending batch may go.
    launch_at: Option<tokio::time::Instant>,
    /// The next segment, being made ready in the background (zero-filled).
    preparing: Option<tokio::task::JoinHandle<Result<segment::Prepared>>>,
    /// Asks the preparation in flight to stop.
    prepare_cancel: Arc<std::sync::atomic::AtomicBool>,
    prepare_seq: u64,
}

/// How a batch is written.
#[derive(Debug, Clone, Copy)]
enum WriteMode {
    /// No sync.
    Plain,
    /// `RWF_DSYNC`: this range durable; nothing earlier is unsynced.
    Dsync,
    /// Linked to an fdatasync of the whole segment.
    ThenSync,
}

/// A submitted batch: what `complete` needs once its I/O is done.
struct Launched {
    requests: Vec<AppendRequest>,
    first: Lsn,
    last: Lsn,
    offsets: Vec<u32>,
    end: u64,
    sync: bool,
    entries: u64,
    payload_bytes: u64,
    started: Instant,
}

type BatchIo = Pin<Box<dyn Future<Output = (std::io::Result<()>, Launched)> + Send + Sync>>;

/// How many batches may be written at once. Measured on ext4: with two, the second fdatasync
/// waits for the first anyway, and batches only get smaller; one in flight and gathering the
/// returning appenders (see `Writer::expect_returns`) makes larger batches. The machinery stays
/// general: batches are published and acknowledged in launch order.
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

fn reply_all(requests: &mut Vec<AppendRequest>, err: &Error) {
    for request in requests.drain(..) {
        let _ = request.reply.send(Err(error_for_waiter(err)));
    }
}

/// Starts the writer task for a recovered log.
pub(crate) fn spawn(shared: Arc<Shared>, queue: mpsc::Receiver<Command>, epoch: u64, log_id: u64) {
    let (active, next_lsn) = {
        let index = shared.index.read().unwrap_or_else(|p| p.into_inner());
        let last = index
            .segments
            .last()
            .expect("recovery leaves at least one segment");
        (
            Active {
                file: last.file.clone(),
                write_offset: last.end,
                allocated: last.allocated,
            },
            last.next_lsn(),
        )
    };
    let writer = Writer {
        shared,
        log_id,
        epoch,
        active,
        next_lsn,
        unsynced_entries: 0,
        sync_deadline: None,
        buf: BytesMut::with_capacity(1 << 20),
        batch: Vec::new(),
        batch_bytes: 0,
        in_flight: FuturesOrdered::new(),
        expect_returns: 0,
        gather_started: None,
        gather_yields: 0,
        launch_at: None,
        preparing: None,
        prepare_cancel: Arc::default(),
        prepare_seq: 0,
    };
    tokio::spawn(writer.run(queue));
}

/// An error for one of several waiters of a failed batch.
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

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<Command>) {
        let mut commands = Vec::with_capacity(TAKE_AT_ONCE);
        let max_batch = self.shared.options.max_batch_bytes;
        loop {
            // Launch what is pending while the pipeline has room, once the window (if any) is
            // over and the appenders just acknowledged had their chance to come back.
            let now = Instant::now();
            let window_over = self
                .launch_at
                .is_none_or(|t| tokio::time::Instant::from_std(now) >= t);
            let gathering = self.batch.len() < self.expect_returns
                && self.gather_yields < GATHER_YIELDS
                && self
                    .gather_started
                    .is_some_and(|t| now.duration_since(t) < GATHER_MAX);
            if !self.batch.is_empty()
                && self.in_flight.len() < PIPELINE_DEPTH
                && ((window_over && !gathering) || self.batch_bytes >= max_batch)
            {
                self.launch_at = None;
                self.expect_returns = 0;
                self.gather_started = None;
                self.launch().await;
                continue;
            }
            if gathering && self.in_flight.len() < PIPELINE_DEPTH {
                // Let the woken appenders run (a yield, not a timer: tokio's timers tick in
                // milliseconds), then take what they queued.
                self.gather_yields += 1;
                tokio::task::yield_now().await;
                while let Ok(command) = queue.try_recv() {
                    if self.accept(command, &mut queue).await {
                        return;
                    }
                }
                continue;
            }
            let launch_at = self.launch_at.filter(|_| !self.batch.is_empty());
            let sync_due = self.sync_deadline.filter(|_| self.in_flight.is_empty());
            // Biased: finishing in-flight work comes first, and the order of choices does not
            // depend on tokio's random fairness, so a run on the simulated disk replays.
            tokio::select! {
                biased;
                Some((res, launched)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.complete(res, launched).await;
                }
                () = sleep_until_some(launch_at), if launch_at.is_some() => {}
                () = sleep_until_some(sync_due), if sync_due.is_some() => {
                    let _ = self.sync_now().await;
                }
                received = queue.recv_many(&mut commands, TAKE_AT_ONCE), if self.batch_bytes < max_batch => {
                    if received == 0 {
                        // Every handle was dropped without `close`: finish like a close.
                        self.drain_all().await;
                        let _ = self.close().await;
                        return;
                    }
                    let mut taken = std::mem::take(&mut commands);
                    for command in taken.drain(..) {
                        if self.accept(command, &mut queue).await {
                            return;
                        }
                    }
                    commands = taken;
                }
            }
        }
    }

    /// Takes one command: appends join the pending batch, anything else runs after every
    /// earlier append is written. Returns true once the log is closed and the task must end.
    async fn accept(&mut self, command: Command, queue: &mut mpsc::Receiver<Command>) -> bool {
        match command {
            Command::Append(request) => {
                if let SyncPolicy::Grouped { window } = self.shared.options.sync_policy
                    && !window.is_zero()
                    && self.batch.is_empty()
                    && self.in_flight.is_empty()
                {
                    // Under `Grouped`, a batch that starts an idle pipeline waits for others.
                    self.launch_at = Some(tokio::time::Instant::now() + window);
                }
                self.batch_bytes += request
                    .records
                    .iter()
                    .map(|r| r.data.len() as u64)
                    .sum::<u64>();
                self.batch.push(request);
                false
            }
            Command::Close(reply) => {
                self.drain_all().await;
                let res = self.close().await;
                let _ = reply.send(res);
                // Whatever was queued behind the close finds the log closed.
                queue.close();
                while let Some(command) = queue.recv().await {
                    refuse(command, &Error::Closed);
                }
                true
            }
            other => {
                // Maintenance sees every earlier append written.
                self.drain_all().await;
                self.launch_at = None;
                self.handle(other).await;
                false
            }
        }
    }

    /// Waits for every batch in flight.
    async fn drain(&mut self) {
        while let Some((res, launched)) = self.in_flight.next().await {
            self.complete(res, launched).await;
        }
    }

    /// Writes everything pending and waits for it.
    async fn drain_all(&mut self) {
        while !self.batch.is_empty() {
            self.drain().await;
            self.launch().await;
        }
        self.drain().await;
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Append(_) | Command::Close(_) => unreachable!("handled by the run loop"),
            Command::Sync(reply) => {
                let res = self.sync_now().await.map(|()| self.shared.durable_lsn());
                let _ = reply.send(res);
            }
            Command::TruncateFront(lsn, reply) => {
                let _ = reply.send(self.truncate_front(lsn).await);
            }
            Command::TruncateBack(lsn, reply) => {
                let _ = reply.send(self.truncate_back(lsn).await);
            }
            Command::Reset(lsn, reply) => {
                let _ = reply.send(self.reset(lsn).await);
            }
        }
    }

    /// Poisons the log with `err` and returns the error for the current caller.
    fn poison(&self, err: std::io::Error) -> Error {
        let cause = Arc::new(err);
        if self.shared.poisoned.set(cause.clone()).is_ok() {
            tracing::error!(dir = %self.shared.dir.display(), error = %cause, "wal poisoned: a write or sync failed");
        }
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

    fn mark_durable(&mut self, lsn: Lsn) {
        self.unsynced_entries = 0;
        self.sync_deadline = None;
        self.shared.durable.send_replace(lsn.0);
    }

    /// fdatasync of the active segment, making everything written durable.
    async fn sync_now(&mut self) -> Result<()> {
        self.shared.check_usable()?;
        let written = self.shared.last_lsn();
        if self.unsynced_entries == 0 && self.shared.durable_lsn() >= written {
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
        metrics::counter!("ringtide_wal_syncs_total").increment(1);
        metrics::histogram!("ringtide_wal_sync_seconds").record(elapsed.as_secs_f64());
    }

    /// Encodes the pending appends and submits them as one write (linked to an fdatasync where
    /// asked); the batch is published by [`complete`](Self::complete) when the I/O is done.
    async fn launch(&mut self) {
        let mut requests = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if let Err(err) = self.shared.check_usable() {
            reply_all(&mut requests, &err);
            return;
        }
        let format = self.shared.format;
        let policy = self.shared.options.sync_policy;
        let mut bytes = 0u64;
        let mut entries = 0u64;
        let mut payload_bytes = 0u64;
        let mut sync = policy.syncs_each_batch();
        for request in &requests {
            sync |= request.sync;
            for r in request.records.iter() {
                bytes += format.frame_len(r.data.len(), r.term.is_some()) as u64;
                payload_bytes += r.data.len() as u64;
                entries += 1;
            }
        }
        // Room first: lsns are assigned only once the batch is sure to have a place. A rotation
        // waits for the batches in flight, which must be in the old segment, durable, first.
        if self.needs_rotation(bytes) {
            self.drain().await;
        }
        if let Err(err) = self.ensure_room(bytes).await {
            reply_all(&mut requests, &err);
            return;
        }
        let first = self.next_lsn;
        let base = self.active.write_offset;
        let timestamp = if format.timestamps { now_micros() } else { 0 };
        // Every frame records what was durable before it was written (see `record.rs`).
        let synced = self.shared.durable_lsn().min(Lsn(first.0 - 1));
        self.buf.clear();
        self.buf.reserve(bytes as usize);
        let mut offsets = Vec::with_capacity(entries as usize);
        let mut lsn = first.0;
        for request in &requests {
            let n = request.records.len();
            for (i, r) in request.records.iter().enumerate() {
                offsets.push((base + self.buf.len() as u64) as u32);
                // Every frame but the last of a call says "the batch continues": recovery keeps
                // a call's entries only when its last frame is there.
                let fields = FrameFields {
                    lsn: Lsn(lsn),
                    synced_lsn: synced,
                    term: r.term,
                    timestamp_us: timestamp,
                    continues: i + 1 < n,
                };
                format.encode(&mut self.buf, fields, &r.data);
                lsn += 1;
            }
        }
        debug_assert_eq!(self.buf.len() as u64, bytes);
        // The space and the lsns are taken now; readers see the batch only once it completes.
        self.active.write_offset = base + bytes;
        self.start_preparing();
        self.next_lsn = Lsn(lsn);
        let chunk: Bytes = self.buf.split().freeze();
        let launched = Launched {
            requests,
            first,
            last: Lsn(lsn - 1),
            offsets,
            end: base + bytes,
            sync,
            entries,
            payload_bytes,
            started: Instant::now(),
        };
        let file = self.active.file.clone();
        // One writev. Where durability is asked: if everything before is already durable, the
        // write carries RWF_DSYNC (durable for its own range, one request); otherwise it is
        // linked to an fdatasync that covers everything written before it in this segment
        // (earlier segments were synced at rotation).
        let mode = match (sync, self.unsynced_entries == 0) {
            (false, _) => WriteMode::Plain,
            (true, true) => WriteMode::Dsync,
            (true, false) => WriteMode::ThenSync,
        };
        self.in_flight.push_back(Box::pin(async move {
            let (res, _) = match mode {
                WriteMode::Plain => file.writev_at(vec![chunk], base).await,
                WriteMode::Dsync => file.writev_dsync_at(vec![chunk], base).await,
                WriteMode::ThenSync => file.writev_sync_at(vec![chunk], base).await,
            };
            (res.map(drop), launched)
        }));
    }

    /// Publishes a batch whose I/O is done, in launch order: index, last lsn, durable lsn, then
    /// the waiters' replies.
    async fn complete(&mut self, res: std::io::Result<()>, mut launched: Launched) {
        if let Err(err) = self.shared.check_usable() {
            // An earlier batch failed: this one is not acknowledged, whatever its own I/O did.
            reply_all(&mut launched.requests, &err);
            return;
        }
        if let Err(e) = res {
            let err = self.poison(e);
            reply_all(&mut launched.requests, &err);
            // A failed sync may have dropped any unsynced page; a failed write only its own.
            let trusted = if launched.sync {
                self.shared.durable_lsn()
            } else {
                self.shared.last_lsn()
            };
            self.record_failure_cut(trusted).await;
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
        let c = &self.shared.counters;
        c.appends.fetch_add(launched.entries, Ordering::Relaxed);
        c.appended_bytes
            .fetch_add(launched.payload_bytes, Ordering::Relaxed);
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.max_batch_entries
            .fetch_max(launched.entries, Ordering::Relaxed);
        metrics::counter!("ringtide_wal_appends_total").increment(launched.entries);
        metrics::counter!("ringtide_wal_appended_bytes_total").increment(launched.payload_bytes);
        metrics::histogram!("ringtide_wal_batch_entries").record(launched.entries as f64);
        if launched.sync {
            self.record_sync(launched.started);
            self.mark_durable(launched.last);
        } else {
            self.unsynced_entries += launched.entries;
            if let SyncPolicy::Periodic {
                interval,
                max_unsynced_entries,
            } = self.shared.options.sync_policy
            {
                if self.unsynced_entries >= max_unsynced_entries {
                    if let Err(err) = self.sync_now().await {
                        reply_all(&mut launched.requests, &err);
                        return;
                    }
                } else if self.sync_deadline.is_none() {
                    self.sync_deadline = Some(tokio::time::Instant::now() + interval);
                }
            }
        }
        let mut lsn = launched.first.0;
        let acknowledged = launched.requests.len();
        for request in launched.requests.drain(..) {
            let n = request.records.len() as u64;
            let _ = request.reply.send(Ok(Lsn(lsn)..Lsn(lsn + n)));
            lsn += n;
        }
        if self.in_flight.is_empty() {
            // The appenders that queued during the I/O are already here; the ones just
            // acknowledged are on their way back.
            self.expect_returns = self.batch.len() + acknowledged;
            self.gather_started = Some(Instant::now());
            self.gather_yields = 0;
        }
    }

    fn needs_rotation(&self, bytes: u64) -> bool {
        self.active.write_offset > HEADER_LEN
            && self.active.write_offset + bytes > self.shared.options.segment_size_bytes
    }

    /// Makes room for `bytes` more in the active segment: rotates when it is full, grows it
    /// for a batch larger than a segment.
    async fn ensure_room(&mut self, bytes: u64) -> Result<()> {
        if self.needs_rotation(bytes) {
            self.rotate(bytes).await?;
        }
        let end = self.active.write_offset + bytes;
        if end > self.active.allocated {
            let grow = end - self.active.allocated;
            match self.active.file.allocate(self.active.allocated, grow).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => {
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
            self.active.allocated = end;
            let mut index = self.shared.index.write().unwrap_or_else(|p| p.into_inner());
            if let Some(segment) = index.segments.last_mut() {
                segment.allocated = end;
            }
        }
        Ok(())
    }

    /// Starts a new segment at the next lsn.
    async fn rotate(&mut self, bytes: u64) -> Result<()> {
        // The old segment must be durable before the next one holds data: otherwise a crash could
        // keep the new segment's synced entries and lose the old one's unsynced tail — a gap.
        if self.unsynced_entries > 0 {
            self.sync_now().await?;
        }
        let size = self
            .shared
            .options
            .segment_size_bytes
            .max(HEADER_LEN + bytes);
        let header = SegmentHeader {
            format: self.shared.format,
            log_id: self.log_id,
            epoch: self.epoch,
            first_lsn: self.next_lsn,
        };
        let created = self.new_segment(header, size).await;
        let (file, path) = match created {
            Ok(created) => created,
            Err(e @ Error::DiskFull { .. }) => {
                tracing::warn!(dir = %self.shared.dir.display(), "disk full: no room for a new wal segment");
                return Err(e);
            }
            Err(Error::Io { source, .. }) => return Err(self.poison(source)),
            Err(e) => return Err(e),
        };
        tracing::debug!(segment = %path.display(), first_lsn = self.next_lsn.0, "wal segment created");
        self.shared
            .counters
            .disk_bytes
            .fetch_add(size, Ordering::Relaxed);
        let mut index = self.shared.index.write().unwrap_or_else(|p| p.into_inner());
        index.segments.push(SegmentIndex {
            first_lsn: self.next_lsn,
            path: path.clone(),
            file: file.clone(),
            offsets: Vec::new(),
            end: HEADER_LEN,
            allocated: size,
            patch: None,
        });
        metrics::gauge!("ringtide_wal_segments").set(index.segments.len() as f64);
        drop(index);
        self.active = Active {
            file,
            write_offset: HEADER_LEN,
            allocated: size,
        };
        Ok(())
    }

    /// A new segment for `header`: the one prepared in the background if it is large enough,
    /// else one made now.
    async fn new_segment(
        &mut self,
        header: SegmentHeader,
        size: u64,
    ) -> Result<(File, std::path::PathBuf)> {
        match self.take_prepared(size).await {
            Some(prepared) => {
                segment::install_segment(&self.shared.driver, &self.shared.dir, prepared, header)
                    .await
                    .map(|(file, path, _)| (file, path))
            }
            None => {
                segment::create_segment(&self.shared.driver, &self.shared.dir, header, size).await
            }
        }
    }

    /// Starts preparing the next segment in the background once the active one is half full,
    /// so a rotation does not wait for its zeros to be written (and the zeros do not compete
    /// with the log's own writes when the log is young).
    fn start_preparing(&mut self) {
        if self.preparing.is_some()
            || self.active.write_offset < self.shared.options.segment_size_bytes / 2
        {
            return;
        }
        self.prepare_seq += 1;
        let name = format!("next-{:06}", self.prepare_seq);
        let (driver, dir) = (self.shared.driver.clone(), self.shared.dir.clone());
        let size = self.shared.options.segment_size_bytes;
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.prepare_cancel = cancel.clone();
        self.preparing = Some(tokio::spawn(async move {
            segment::prepare_segment(&driver, &dir, &name, size, Some(&cancel)).await
        }));
    }

    /// The prepared segment, if it is at least `size` bytes and its preparation succeeded;
    /// starts preparing the one after.
    async fn take_prepared(&mut self, size: u64) -> Option<segment::Prepared> {
        let handle = self.preparing.take()?;
        let prepared = match handle.await {
            Ok(Ok(prepared)) => Some(prepared),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "preparing the next wal segment failed; creating it now");
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "the wal segment preparation task ended early");
                None
            }
        };
        match prepared {
            Some(p) if p.size >= size => Some(p),
            Some(p) => {
                // Too small for this batch: it is dropped and a large enough one made now.
                let _ = self.shared.driver.remove_file(&p.path).await;
                None
            }
            None => None,
        }
    }

    /// Stops the background preparation and removes its file. The task is asked to stop and
    /// awaited, not aborted: an aborted task could leave its `open` running on the pool, creating
    /// the file after the removal.
    async fn discard_prepared(&mut self) {
        if let Some(handle) = self.preparing.take() {
            self.prepare_cancel
                .store(true, std::sync::atomic::Ordering::Release);
            // On failure or cancellation the task removed its own file.
            if let Ok(Ok(prepared)) = handle.await {
                let _ = prepared.file.close().await;
                let _ = self.shared.driver.remove_file(&prepared.path).await;
            }
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
        let (first, last) = (self.shared.first_lsn(), self.shared.last_lsn());
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
        let (first, last) = (self.shared.first_lsn(), self.shared.last_lsn());
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
        self.active = Active {
            file: cut_segment.file.clone(),
            write_offset: cut,
            allocated: cut_segment.allocated.max(cut + 1),
        };
        self.next_lsn = lsn.next();
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
        self.active = Active {
            file,
            write_offset: HEADER_LEN,
            allocated: size,
        };
        self.next_lsn = next;
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

    /// Syncs what is written, marks the log closed, releases the lock and wakes every tail.
    async fn close(&mut self) -> Result<()> {
        self.discard_prepared().await;
        let synced = match self.shared.poisoned.get() {
            // Closing does not clear the poison: the caller learns the log needs a reopen.
            Some(cause) => Err(Error::Poisoned {
                cause: cause.clone(),
            }),
            None if self.shared.last_lsn() > self.shared.durable_lsn() => self.sync_now().await,
            None => Ok(()),
        };
        self.shared.closed.store(true, Ordering::Release);
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
        Command::Append(r) => drop(r.reply.send(Err(error_for_waiter(err)))),
        Command::Sync(reply) => drop(reply.send(Err(error_for_waiter(err)))),
        Command::TruncateFront(_, reply)
        | Command::TruncateBack(_, reply)
        | Command::Reset(_, reply)
        | Command::Close(reply) => drop(reply.send(Err(error_for_waiter(err)))),
    }
}
