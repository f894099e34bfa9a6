//! The write-ahead log: segments of checksummed frames, grouped commit, reads by sequence
//! number, `Stream` readers and live tails, crash-safe truncation at both ends, Raft terms and
//! log transactions.
//!
//! Appenders encode their entries themselves into a bounded stage (lsns assigned under one short
//! lock) and wait as long as the sync policy asks. The writer owns the tail: it takes everything
//! staged at once, writes it with one `writev` (linked to one `fdatasync`, or with `RWF_DSYNC`,
//! where the policy asks for durability), publishes the new last and durable sequence numbers and
//! wakes every waiter. While that write and sync run, the next batch fills. When the writer is
//! idle, an appender waiting for durability does the writer's work itself, saving two task
//! wake-ups (see `docs/design.md`, *Write path*).
//!
//! The on-disk format is described in `docs/design.md` and, field by field, in
//! [`record`](self) and `segment.rs`.
//!
//! # Metrics
//!
//! Each log reports through the [`metrics`](https://docs.rs/metrics) facade, every series with the
//! label `dir` (the log's directory), so that several logs in one process stay apart; with no
//! recorder installed this costs nothing. The series are registered when the log is opened: install
//! the recorder before. [`Wal::stats`] gives the same counts for one handle.
//!
//! | name | kind | what |
//! |---|---|---|
//! | `ringtide_wal_appends_total` | counter | entries written |
//! | `ringtide_wal_appended_bytes_total` | counter | their payload bytes |
//! | `ringtide_wal_batches_total` | counter | write submissions |
//! | `ringtide_wal_batch_entries` | histogram | entries per write submission |
//! | `ringtide_wal_syncs_total` | counter | syncs (an fdatasync, or a write with `RWF_DSYNC`) |
//! | `ringtide_wal_sync_seconds` | histogram | time of a write that syncs, or of a sync |
//! | `ringtide_wal_segments` | gauge | segment files |
//! | `ringtide_wal_disk_bytes` | gauge | bytes the segment files take on disk |
//! | `ringtide_wal_recoveries_total` | counter | opens (each recovers the log) |
//! | `ringtide_wal_recovered_entries_total` | counter | entries found by those recoveries |
//! | `ringtide_wal_torn_tails_total` | counter | torn tails found (and cut, by a writable open) |
//! | `ringtide_wal_torn_tail_bytes_total` | counter | their bytes |
//! | `ringtide_wal_poisoned_total` | counter | a write or sync failed and poisoned the log |

mod batch_io;
mod clean_close;
mod entry;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod integrity;
mod observe;
mod options;
mod reader;
mod recent;
mod record;
mod recovery;
mod segment;
mod shared;
mod stage;
mod submit;
mod txn;
mod writer;

use std::fmt;
use std::ops::{Bound, Range, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use futures::Stream;
use ringtide_platform::{DriverOptions, IoDriver};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

pub use crate::types::Lsn;
pub use entry::{Ack, Entry, Record, SegmentInfo, TornTail, WalFormat, WalStats};
pub use integrity::{IntegrityProblem, IntegrityProgress, IntegrityReport};
use options::MAX_CALL_BYTES;
pub use options::{ChecksumKind, LengthEncoding, RecoveryMode, SyncPolicy, Timestamps, WalOptions};
use shared::{Index, SegmentIndex, Shared, zero_fill};
pub use submit::PendingAppend;
pub use txn::LogTxn;

/// The on-disk format version this build writes, and the only one it reads (recorded in every
/// segment header and in the meta file; see `docs/design.md`).
pub const FORMAT_VERSION: u16 = segment::FORMAT_VERSION;

use crate::error::{Error, Result};

/// A write-ahead log. Cheap to clone (`Arc` inside), `Send + Sync`, shared by many tasks.
#[derive(Clone)]
pub struct Wal {
    shared: Arc<Shared>,
    commands: mpsc::Sender<writer::Command>,
    /// The writer, which an appender may lead (none for a read-only log).
    writer: Option<writer::SharedWriter>,
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir)
            .field("first_lsn", &self.first_lsn())
            .field("last_lsn", &self.last_lsn())
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens the log in `dir`, creating the directory and a new log if there is none, or
    /// recovering the existing one.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for options out of range; [`Error::Locked`] if another handle
    /// holds the directory past `lock_timeout`; [`Error::Corruption`] for damage recovery may not
    /// repair (see [`RecoveryMode`]); [`Error::Io`] for failed I/O.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops recovery between steps; every step leaves the files
    /// recoverable by the next open, and the directory lock is released.
    pub async fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<Wal> {
        Self::open_with(dir.as_ref(), options, recovery::Access::ReadWrite).await
    }

    /// Opens an existing log for reading only, without taking its lock and without changing any
    /// file: leftovers of interrupted operations are skipped and a torn tail is reported (in
    /// [`WalStats::torn_tail`]) but not cut. Appends and maintenance fail with
    /// [`Error::ReadOnly`]. Reads see the log as it was when opened. For tools (the `ringtide`
    /// command) and for reading a log another process writes.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open) (never [`Error::Locked`]); [`Error::InvalidArgument`] if the
    /// directory holds no log.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing.
    pub async fn open_read_only(dir: impl AsRef<Path>, options: WalOptions) -> Result<Wal> {
        Self::open_with(dir.as_ref(), options, recovery::Access::ReadOnly).await
    }

    async fn open_with(dir: &Path, options: WalOptions, access: recovery::Access) -> Result<Wal> {
        options.validate()?;
        let driver = match &options.driver {
            Some(driver) => driver.clone(),
            None => IoDriver::new(DriverOptions::default())?,
        };
        let dir = dir.to_path_buf();
        let span = tracing::info_span!("wal_open", dir = %dir.display());
        let recovered = recovery::recover(&driver, &dir, &options, access)
            .instrument(span)
            .await?;
        let (durable, _) = watch::channel(recovered.last_lsn.0);
        let (tail_end, tail_allocated) = recovered
            .segments
            .last()
            .map_or((segment::HEADER_LEN, segment::HEADER_LEN), |s| {
                (s.end, s.allocated)
            });
        let observe = observe::Observe::open(
            &dir,
            recovered.recovered_entries,
            recovered.torn_tail.as_ref().map(|t| t.bytes),
            recovered.disk_bytes,
        );
        let shared = Arc::new(Shared {
            dir,
            driver,
            format: recovered.format,
            options: options.clone(),
            index: RwLock::new(Index {
                first_lsn: recovered.first_lsn,
                segments: recovered.segments,
            }),
            written: AtomicU64::new(recovered.last_lsn.0),
            appended: AtomicU64::new(recovered.last_lsn.0),
            stage: stage::Stage::new(
                recovered.last_lsn.next(),
                tail_end,
                tail_allocated,
                options.read_cache_bytes,
            ),
            durable,
            poisoned: OnceLock::new(),
            closed: AtomicBool::new(false),
            observe,
            recovered_segments: recovered.recovered_segments,
            recovered_entries: recovered.recovered_entries,
            torn_tail: recovered.torn_tail,
            txns: Mutex::new(std::collections::HashMap::new()),
            next_txn: AtomicU64::new(0),
            lock: Mutex::new(recovered.lock),
            read_only: access == recovery::Access::ReadOnly,
            cuts: AtomicU64::new(0),
            cut_lsn: AtomicU64::new(0),
        });
        shared.report_space();
        let (commands, queue) = mpsc::channel(writer::QUEUE_COMMANDS);
        let writer = (access == recovery::Access::ReadWrite)
            .then(|| writer::spawn(shared.clone(), queue, recovered.epoch, recovered.log_id));
        Ok(Wal {
            shared,
            commands,
            writer,
        })
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Appends one entry and returns its lsn once the log's sync policy is met.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] (nothing queued); [`Error::Poisoned`] after a failed write or sync;
    /// [`Error::DiskFull`] if a new segment could not be allocated (nothing written, the log
    /// stays usable); [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// An append dropped before its entry was queued writes nothing. Once queued (the first
    /// poll usually queues it), the entry is written whether or not the future is still there;
    /// its fate can be learned from [`last_lsn`](Self::last_lsn) and
    /// [`durable_lsn`](Self::durable_lsn). The same holds under `tokio::time::timeout`.
    pub async fn append(&self, record: impl Into<Record>) -> Result<Lsn> {
        self.append_with(record, Ack::Policy).await
    }

    /// [`append`](Self::append), acknowledged at `ack` or at what the log's policy gives,
    /// whichever is stronger (see [`Ack`]).
    ///
    /// # Errors
    ///
    /// As [`append`](Self::append).
    ///
    /// # Cancel safety
    ///
    /// As [`append`](Self::append).
    pub async fn append_with(&self, record: impl Into<Record>, ack: Ack) -> Result<Lsn> {
        let range = self.submit(stage::Records::One(record.into()), ack).await?;
        Ok(range.start)
    }

    /// Appends entries atomically: after a crash either all of them are in the log or none.
    /// Returns their lsns (dense, in order). An empty batch returns an empty range at the next
    /// lsn and writes nothing.
    ///
    /// # Errors
    ///
    /// As [`append`](Self::append); [`Error::TooLarge`] if any entry is too large (nothing is
    /// queued).
    ///
    /// # Cancel safety
    ///
    /// As [`append`](Self::append), for the batch as a whole.
    pub async fn append_batch<R: Into<Record>>(
        &self,
        records: impl IntoIterator<Item = R>,
    ) -> Result<Range<Lsn>> {
        self.append_batch_with(records, Ack::Policy).await
    }

    /// [`append_batch`](Self::append_batch), acknowledged at `ack` or at what the log's policy
    /// gives, whichever is stronger (see [`Ack`]).
    ///
    /// # Errors
    ///
    /// As [`append_batch`](Self::append_batch).
    ///
    /// # Cancel safety
    ///
    /// As [`append`](Self::append).
    pub async fn append_batch_with<R: Into<Record>>(
        &self,
        records: impl IntoIterator<Item = R>,
        ack: Ack,
    ) -> Result<Range<Lsn>> {
        let records: Vec<Record> = records.into_iter().map(Into::into).collect();
        if records.is_empty() {
            self.shared.check_usable()?;
            let next = self.shared.last_lsn().next();
            return Ok(next..next);
        }
        self.submit(stage::Records::Many(records), ack).await
    }

    /// The first lsn in the log.
    pub fn first_lsn(&self) -> Lsn {
        self.shared.first_lsn()
    }

    /// The last lsn written (`first_lsn - 1` when the log is empty). Entries up to it can be
    /// read; they are durable up to [`durable_lsn`](Self::durable_lsn).
    pub fn last_lsn(&self) -> Lsn {
        self.shared.last_lsn()
    }

    /// The last lsn known to be durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.durable_lsn()
    }

    /// Reads one entry.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] naming the log's bounds; [`Error::Corruption`] if the frame fails
    /// its checks; [`Error::Io`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn read(&self, lsn: Lsn) -> Result<Entry> {
        let mut entries = reader::read_range(&self.shared, lsn, lsn.next(), u64::MAX).await?;
        entries.pop().ok_or(Error::OutOfRange {
            lsn,
            first: self.first_lsn(),
            last: self.last_lsn(),
        })
    }

    /// Reads a range of entries, in order. Each entry's data is a slice of one read buffer per
    /// segment, without a copy per entry.
    ///
    /// One call holds the whole range in memory, so it is bounded: a range whose frames take
    /// more than [`max_range_bytes`](WalOptions::max_range_bytes) on disk (default 64 MiB) is
    /// refused before anything is read, unless it holds a single entry. To read more, read in
    /// smaller ranges, or use [`stream`](Self::stream), which reads in bounded chunks.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] if the range reaches outside the log; [`Error::TooLarge`] (with the
    /// range's frame bytes and the bound) if it holds more than one entry and its frames take
    /// more than `max_range_bytes`; as [`read`](Self::read).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn range(&self, range: impl RangeBounds<Lsn>) -> Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(l) => *l,
            Bound::Excluded(l) => l.next(),
            Bound::Unbounded => self.first_lsn(),
        };
        let end = match range.end_bound() {
            Bound::Included(l) => l.next(),
            Bound::Excluded(l) => *l,
            Bound::Unbounded => self.last_lsn().next(),
        };
        if end <= start {
            return Ok(Vec::new());
        }
        reader::read_range(
            &self.shared,
            start,
            end,
            self.shared.options.max_range_bytes,
        )
        .await
    }

    /// Reads forward from `from` to the entries written so far, in chunks of up to 4 MiB.
    /// Dropping the stream stops it.
    ///
    /// The stream yields [`Error::OutOfRange`] first if `from` is below the log's start or past
    /// its end + 1 when first polled, and an error for any damaged frame it meets, then ends.
    /// If the log is closed before the stream has yielded what it was to yield, it yields
    /// [`Error::Closed`] and ends.
    pub fn stream(&self, from: Lsn) -> EntryStream {
        EntryStream {
            inner: Box::pin(reader::stream(
                self.shared.clone(),
                from,
                reader::Follow::No,
            )),
        }
    }

    /// Like [`stream`](Self::stream), but follows the log: after the entries written so far it
    /// waits for new durable entries and yields them as they arrive (a change feed).
    ///
    /// When the log is closed, a tail that has yielded every entry durable at the close ends
    /// (`None`). A tail still behind yields [`Error::Closed`] instead, then ends: a change feed
    /// can tell being complete from being cut off, and resume after its last lsn on a reopened
    /// log.
    pub fn tail(&self, from: Lsn) -> EntryStream {
        EntryStream {
            inner: Box::pin(reader::stream(
                self.shared.clone(),
                from,
                reader::Follow::Durable,
            )),
        }
    }

    /// Checks the whole log: reads every entry back through the read path, checking each
    /// frame's checksum, its lsn and its place, and calls `progress` after each chunk (at most
    /// 4 MiB of frames). Segment headers, and frames below the first lsn, were checked when the
    /// handle was opened (recovery reads every segment). Entries appended while the check runs
    /// are not included. What `ringtide wal verify` runs.
    ///
    /// Damage is not an error: the check stops at the first, and the report names its file,
    /// offset and kind, after what was read sound before it. On a read-only handle, a torn tail
    /// found at open (which a writable open would cut) is reported as a problem of kind
    /// [`CorruptionKind::TornTail`](crate::CorruptionKind::TornTail).
    ///
    /// ```
    /// # use ringtide::wal::{Wal, WalOptions};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ringtide::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let wal = Wal::open(dir.path(), WalOptions::default()).await?;
    /// wal.append_batch(["a", "b", "c"]).await?;
    /// let mut checked = 0;
    /// let report = wal.check_integrity(|p| checked = p.entries_checked).await?;
    /// assert!(report.is_sound() && checked == 3);
    /// assert_eq!(report.entries, 3);
    /// # wal.close().await
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] or [`Error::Poisoned`] for a handle that cannot read; [`Error::Io`] if
    /// a read fails; [`Error::OutOfRange`] if the log is truncated under the check.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads; dropping it stops the check.
    pub async fn check_integrity(
        &self,
        progress: impl FnMut(IntegrityProgress),
    ) -> Result<IntegrityReport> {
        integrity::check(self, progress).await
    }

    /// Makes every written entry durable (fdatasync) and returns the durable lsn.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`] if the sync fails (and for every later call); [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// Once queued the sync happens; [`durable_lsn`](Self::durable_lsn) tells its outcome.
    pub async fn sync(&self) -> Result<Lsn> {
        self.command(writer::Command::Sync).await
    }

    /// Drops every entry below `lsn` (after the user's checkpoint): whole segments below it are
    /// deleted, and the new start survives a crash. `lsn` may be `last_lsn + 1` to empty the
    /// log; entries keep their numbers.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] if `lsn` is not in `first_lsn..=last_lsn + 1`; [`Error::Io`] or
    /// [`Error::Poisoned`] if a step fails.
    ///
    /// # Cancel safety
    ///
    /// Once queued it runs to the end. Each step is crash-safe: the new start is recorded
    /// atomically before any segment is deleted.
    pub async fn truncate_front(&self, lsn: Lsn) -> Result<()> {
        self.command(|reply| writer::Command::TruncateFront(lsn, reply))
            .await
    }

    /// Drops every entry after `lsn` (Raft conflict resolution); the next append gets
    /// `lsn + 1`. `lsn` may be `first_lsn - 1` to drop everything.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] if `lsn` is not in `first_lsn - 1..=last_lsn`; [`Error::Poisoned`]
    /// if a step fails (reopen to recover: the log then holds a prefix of the old one that is at
    /// least `..=lsn`).
    ///
    /// # Cancel safety
    ///
    /// Once queued it runs to the end; after a crash in the middle the log holds a prefix of the
    /// old log that is at least `..=lsn`.
    pub async fn truncate_back(&self, lsn: Lsn) -> Result<()> {
        self.command(|reply| writer::Command::TruncateBack(lsn, reply))
            .await
    }

    /// Empties the log so that the next append gets `next_lsn` (after installing a Raft
    /// snapshot).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for `next_lsn` 0; [`Error::Io`] or [`Error::Poisoned`] if a
    /// step fails.
    ///
    /// # Cancel safety
    ///
    /// Once queued it runs to the end. Crash-safe: the reset is recorded atomically (a new epoch
    /// in the meta file) before old segments are deleted.
    pub async fn reset(&self, next_lsn: Lsn) -> Result<()> {
        if next_lsn.0 == 0 || next_lsn.0 > record::MAX_LSN {
            return Err(Error::invalid(
                "next_lsn",
                format!("lsns run from 1 to {}", record::MAX_LSN),
            ));
        }
        self.command(|reply| writer::Command::Reset(next_lsn, reply))
            .await
    }

    /// Begins a log transaction: entries collected in memory and appended atomically by
    /// [`LogTxn::commit`]. After `timeout` it expires: every later call fails with
    /// [`Error::LogTxnExpired`].
    pub fn begin_log_txn(&self, timeout: Duration) -> LogTxn {
        LogTxn::new(self.clone(), timeout)
    }

    /// Log transactions begun and not yet committed, rolled back, expired or dropped.
    pub fn open_log_txns(&self) -> usize {
        self.shared.open_txns()
    }

    /// Flushes and syncs everything written, waits for in-flight work, and releases the directory
    /// lock. Every later call on any clone fails with [`Error::Closed`]; streams and tails
    /// end (see [`tail`](Self::tail)).
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`] if the final sync fails; [`Error::Io`] if releasing the lock fails.
    ///
    /// # Cancel safety
    ///
    /// Once queued the close completes in the writer task.
    pub async fn close(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.shared.read_only {
            self.shared.closed.store(true, Ordering::Release);
            self.shared.durable.send_modify(|_| {});
            return Ok(());
        }
        // Sent even to a poisoned log, so the writer releases the lock.
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(writer::Command::Close(reply))
            .await
            .is_err()
        {
            return Ok(());
        }
        match answer.await {
            Ok(res) => res,
            Err(_) => Ok(()),
        }
    }

    /// The segment files, in log order.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let index = self.shared.index.read().unwrap_or_else(|p| p.into_inner());
        index
            .segments
            .iter()
            .map(|s| SegmentInfo {
                path: s.path.clone(),
                first_lsn: s.first_lsn,
                entries: s.offsets.len() as u64,
                data_bytes: s.end,
                file_bytes: s.allocated,
            })
            .collect()
    }

    /// The log's on-disk format, as recorded in its files.
    pub fn format(&self) -> WalFormat {
        let f = self.shared.format;
        WalFormat {
            version: FORMAT_VERSION,
            length_encoding: f.length,
            checksum: f.checksum,
            timestamps: if f.timestamps {
                Timestamps::UnixMicros
            } else {
                Timestamps::Off
            },
        }
    }

    /// A snapshot of the log's state and counters.
    pub fn stats(&self) -> WalStats {
        let s = &self.shared;
        let c = s.observe.counters();
        let index = s.index.read().unwrap_or_else(|p| p.into_inner());
        WalStats {
            first_lsn: index.first_lsn,
            last_lsn: s.last_lsn(),
            durable_lsn: s.durable_lsn(),
            appends: c.appends.load(Ordering::Relaxed),
            appended_bytes: c.appended_bytes.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            max_batch_entries: c.max_batch_entries.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            sync_time_us: c.sync_time_us.load(Ordering::Relaxed),
            segments: index.segments.len() as u64,
            disk_bytes: c.disk_bytes.load(Ordering::Relaxed),
            recovered_segments: s.recovered_segments,
            recovered_entries: s.recovered_entries,
            torn_tail: s.torn_tail.clone(),
            open_log_txns: s.open_txns(),
            pending_bytes: s.stage.lock().pending_bytes,
            backend: s.driver.backend(),
        }
    }
}

/// A stream of entries from [`Wal::stream`] or [`Wal::tail`]. `Unpin`, so `StreamExt::next` works
/// on it directly; dropping it stops it.
pub struct EntryStream {
    inner: futures::stream::BoxStream<'static, Result<Entry>>,
}

impl fmt::Debug for EntryStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntryStream").finish_non_exhaustive()
    }
}

impl Stream for EntryStream {
    type Item = Result<Entry>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}
