//! The state the handle, the writer task, readers and log transactions share: the segment
//! index readers look frames up in, the stage, the durable and written lsns, the poison latch.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use ringtide_platform::{File, IoDriver};
use tokio::sync::watch;

use super::record::FrameFormat;
use super::{Lsn, MAX_CALL_BYTES, TornTail, WalOptions, observe, stage};
use crate::error::{Error, Result};

/// One segment as readers see it.
#[derive(Debug, Clone)]
pub(crate) struct SegmentIndex {
    pub(crate) first_lsn: Lsn,
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    /// Start offset of each frame: `offsets[i]` is the frame of lsn `first_lsn + i`.
    pub(crate) offsets: Vec<u32>,
    /// End offset of the last frame.
    pub(crate) end: u64,
    /// Bytes allocated on disk.
    pub(crate) allocated: u64,
    /// Bytes readers see instead of the file's at an offset: set only by a read-only open that
    /// found a frame torn by an interrupted `truncate_back`, which it may not repair on disk.
    pub(crate) patch: Option<(u64, bytes::Bytes)>,
}

impl SegmentIndex {
    pub(crate) fn next_lsn(&self) -> Lsn {
        Lsn(self.first_lsn.0 + self.offsets.len() as u64)
    }
}

/// What readers need: the segments in order and the logical start of the log.
#[derive(Debug)]
pub(crate) struct Index {
    pub(crate) first_lsn: Lsn,
    pub(crate) segments: Vec<SegmentIndex>,
}

/// State shared by the handle, the writer task, readers and transactions.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) driver: IoDriver,
    pub(crate) format: FrameFormat,
    pub(crate) options: WalOptions,
    pub(crate) index: RwLock<Index>,
    /// The last lsn written to the file.
    pub(crate) written: AtomicU64,
    /// The last lsn appended (staged or written).
    pub(crate) appended: AtomicU64,
    /// Where appenders put their entries for the writer.
    pub(crate) stage: stage::Stage,
    /// The last lsn durable; tails subscribe to it.
    pub(crate) durable: watch::Sender<u64>,
    /// The failure that poisoned the log (see `writer/failure.rs`).
    pub(crate) poisoned: OnceLock<Arc<Error>>,
    pub(crate) closed: AtomicBool,
    /// The log's counts: for `stats`, and for the `metrics` facade.
    pub(crate) observe: observe::Observe,
    pub(crate) recovered_segments: u64,
    pub(crate) recovered_entries: u64,
    pub(crate) torn_tail: Option<TornTail>,
    /// Open log transactions and their deadlines.
    pub(crate) txns: Mutex<std::collections::HashMap<u64, std::time::Instant>>,
    pub(crate) next_txn: AtomicU64,
    /// The directory lock, released by `close`.
    pub(crate) lock: Mutex<Option<File>>,
    /// Opened by `open_read_only`: no writer task.
    pub(crate) read_only: bool,
    /// Counts cuts at the back of the log (`truncate_back`, `reset`); `cut_lsn` is the last one's
    /// new end. Streams use them to notice the log changed under them.
    pub(crate) cuts: AtomicU64,
    pub(crate) cut_lsn: AtomicU64,
}

impl Shared {
    /// The most payload one call may carry: its entries go into one segment (32-bit offsets),
    /// within `max_pending_bytes`.
    pub(crate) fn max_call_bytes(&self) -> u64 {
        MAX_CALL_BYTES.min(self.options.max_pending_bytes)
    }

    pub(crate) fn max_entry_bytes(&self) -> u64 {
        self.options.max_entry_bytes.min(self.format.max_payload())
    }

    /// Sets the gauges of the log's files.
    pub(crate) fn report_space(&self) {
        let segments = self
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .segments
            .len();
        self.observe.space(segments);
    }

    pub(crate) fn check_usable(&self) -> Result<()> {
        if let Some(cause) = self.poisoned.get() {
            return Err(Error::Poisoned {
                cause: cause.clone(),
            });
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    pub(crate) fn last_lsn(&self) -> Lsn {
        Lsn(self.appended.load(Ordering::Acquire))
    }

    pub(crate) fn written_lsn(&self) -> Lsn {
        Lsn(self.written.load(Ordering::Acquire))
    }

    pub(crate) fn durable_lsn(&self) -> Lsn {
        Lsn(*self.durable.borrow())
    }

    pub(crate) fn first_lsn(&self) -> Lsn {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .first_lsn
    }

    pub(crate) fn open_txns(&self) -> usize {
        let now = std::time::Instant::now();
        self.txns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|&&deadline| deadline > now)
            .count()
    }
}

/// Whether new segments are written with zeros before use (see `segment::prepare_segment`).
pub(crate) fn zero_fill(options: &WalOptions) -> bool {
    options.sync_policy.syncs_each_batch()
}
