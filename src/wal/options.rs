//! The options of a log: its format, sync policy, recovery mode and bounds, as a builder with
//! documented defaults, validated at open.

use std::time::Duration;

use ringtide_platform::IoDriver;

use super::record::{self, FrameFormat};
#[cfg(doc)]
use super::{Record, Wal, WalStats};
use crate::error::{Error, Result};
#[cfg(doc)]
use ringtide_platform::DriverOptions;

/// The most payload bytes one append call (a batch, a log transaction) may carry: a call's
/// frames share one segment, whose frame offsets are 32-bit.
pub(crate) const MAX_CALL_BYTES: u64 = 1 << 30;

/// How a frame's payload length is stored. Recorded in each segment's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LengthEncoding {
    /// 2 bytes: entries up to 65,535 bytes.
    U16,
    /// 4 bytes: entries up to 4 GiB − 1 (the default).
    #[default]
    U32,
    /// 8 bytes.
    U64,
    /// 1 to 10 bytes (LEB128): compact for small entries.
    Uvarint,
}

/// The checksum of every frame. Recorded in each segment's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ChecksumKind {
    /// CRC-32 (IEEE), 4 bytes, hardware-accelerated by `crc32fast` (the default).
    #[default]
    Crc32,
    /// CRC-64/XZ, 8 bytes.
    Crc64,
}

/// Whether each entry records the time it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Timestamps {
    /// No timestamps (the default).
    #[default]
    Off,
    /// Microseconds since the Unix epoch: the entry's [`Record::timestamp_us`] if the caller set
    /// one, else the system clock (so not monotonic) read when the append call is staged: every
    /// entry of one call without a stamp of its own gets the same time.
    UnixMicros,
}

/// When an append is acknowledged, and when the log syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[derive(Default)]
pub enum SyncPolicy {
    /// Never fsync; appends return once their entries are staged in memory (readable at once;
    /// the writer writes them to the page cache right after, in large writes). For caches and
    /// tests: a crash of the process may lose the entries not yet written, a crash of the machine
    /// any of it. [`Wal::sync`] and [`Wal::close`] write and sync everything staged.
    None,
    /// Each append returns after an fdatasync that covers it. Appends that queue up while a sync
    /// runs share the next one (the default).
    #[default]
    Immediate,
    /// Appends return once written; the writer syncs every `interval`, or as soon as
    /// `max_unsynced_entries` entries are written but not synced.
    Periodic {
        /// The longest time written entries stay unsynced.
        interval: Duration,
        /// The most entries left unsynced.
        max_unsynced_entries: u64,
    },
    /// Like `Immediate`, but the writer waits up to `window` after the first pending entry for
    /// others to join, then syncs once for all of them.
    Grouped {
        /// How long to wait for more entries.
        window: Duration,
    },
}

impl SyncPolicy {
    pub(crate) fn syncs_each_batch(&self) -> bool {
        matches!(self, SyncPolicy::Immediate | SyncPolicy::Grouped { .. })
    }
}

/// What recovery does with a damaged tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RecoveryMode {
    /// A torn tail (a bad frame or an incomplete batch with nothing valid after it, in the last
    /// segment) is cut off and reported in [`WalStats::torn_tail`] and through `tracing` (the
    /// default). Damage followed by valid frames is always an error.
    #[default]
    TolerateTornTail,
    /// Any damage, a torn tail included, is an error.
    Strict,
}

/// Options of a log, as a builder. Format options (length encoding, checksum, timestamps) apply
/// when a log is created; an existing log keeps the format recorded in its files.
#[derive(Debug, Clone)]
pub struct WalOptions {
    pub(crate) segment_size_bytes: u64,
    pub(crate) max_entry_bytes: u64,
    pub(crate) length_encoding: LengthEncoding,
    pub(crate) checksum: ChecksumKind,
    pub(crate) timestamps: Timestamps,
    pub(crate) sync_policy: SyncPolicy,
    pub(crate) recovery_mode: RecoveryMode,
    pub(crate) lock_timeout: Duration,
    pub(crate) max_pending_bytes: u64,
    pub(crate) max_batch_bytes: u64,
    pub(crate) max_log_txn_bytes: u64,
    pub(crate) max_range_bytes: u64,
    pub(crate) read_cache_bytes: u64,
    pub(crate) driver: Option<IoDriver>,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size_bytes: 64 << 20,
            max_entry_bytes: 16 << 20,
            length_encoding: LengthEncoding::default(),
            checksum: ChecksumKind::default(),
            timestamps: Timestamps::default(),
            sync_policy: SyncPolicy::default(),
            recovery_mode: RecoveryMode::default(),
            lock_timeout: Duration::from_secs(1),
            max_pending_bytes: 64 << 20,
            max_batch_bytes: 1 << 20,
            max_log_txn_bytes: 64 << 20,
            max_range_bytes: 64 << 20,
            read_cache_bytes: 4 << 20,
            driver: None,
        }
    }
}

impl WalOptions {
    /// Size at which the log starts a new segment; each segment is preallocated to this size.
    /// A batch larger than a segment gets a segment of its own, as large as it needs.
    /// Default: 64 MiB; accepted: 64 KiB to 1 GiB.
    pub fn segment_size_bytes(mut self, bytes: u64) -> Self {
        self.segment_size_bytes = bytes;
        self
    }

    /// Largest entry accepted; larger ones fail with [`Error::TooLarge`]. Default: 16 MiB;
    /// accepted: 1 byte to 1 GiB (and never more than the length encoding can express).
    pub fn max_entry_bytes(mut self, bytes: u64) -> Self {
        self.max_entry_bytes = bytes;
        self
    }

    /// How frame lengths are stored (new logs only). Default: [`LengthEncoding::U32`].
    pub fn length_encoding(mut self, encoding: LengthEncoding) -> Self {
        self.length_encoding = encoding;
        self
    }

    /// The frame checksum (new logs only). Default: [`ChecksumKind::Crc32`].
    pub fn checksum(mut self, checksum: ChecksumKind) -> Self {
        self.checksum = checksum;
        self
    }

    /// Whether entries record their write time (new logs only). Default: [`Timestamps::Off`].
    pub fn timestamps(mut self, timestamps: Timestamps) -> Self {
        self.timestamps = timestamps;
        self
    }

    /// When appends are acknowledged. Default: [`SyncPolicy::Immediate`]. Refused at open:
    /// `Periodic` with a zero `interval` or `max_unsynced_entries`, and `Grouped` with a
    /// `window` above 1 s.
    pub fn sync_policy(mut self, policy: SyncPolicy) -> Self {
        self.sync_policy = policy;
        self
    }

    /// What recovery does with a torn tail. Default: [`RecoveryMode::TolerateTornTail`].
    pub fn recovery_mode(mut self, mode: RecoveryMode) -> Self {
        self.recovery_mode = mode;
        self
    }

    /// How long `open` waits for another handle to release the directory before failing with
    /// [`Error::Locked`]. Default: 1 s.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Bytes of entries queued for the writer and not yet written; appenders beyond it wait
    /// (backpressure). This bounds the memory held by pending appends, and one call's entries.
    /// Default: 64 MiB; accepted: 1 MiB to 4 GiB − 1.
    pub fn max_pending_bytes(mut self, bytes: u64) -> Self {
        self.max_pending_bytes = bytes;
        self
    }

    /// Most bytes the writer puts into one write submission, and most bytes the stage (the
    /// buffer appenders encode into) holds before appenders wait for the writer to take it.
    /// Default: 1 MiB; accepted: 4 KiB to 1 GiB. On the disk it was tuned on, one write at a
    /// time, 1–2 MiB writes moved ~15% more bytes per second than 4 MiB ones (a MiB of stage and
    /// its write buffer stay in a core's cache); under half a MiB, the fixed cost per write
    /// shows.
    pub fn max_batch_bytes(mut self, bytes: u64) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// Most bytes one log transaction may collect ([`Error::LogTxnTooLarge`] beyond). Default:
    /// 64 MiB; accepted: 1 byte to 1 GiB. The bound applied is the smaller of this and
    /// `max_pending_bytes` (one commit is one call).
    pub fn max_log_txn_bytes(mut self, bytes: u64) -> Self {
        self.max_log_txn_bytes = bytes;
        self
    }

    /// Most bytes of frames one [`Wal::range`] call reads into memory; a larger range of more
    /// than one entry fails with [`Error::TooLarge`] (a single entry is always read).
    /// Default: 64 MiB; accepted: 4 KiB to 4 GiB.
    pub fn max_range_bytes(mut self, bytes: u64) -> Self {
        self.max_range_bytes = bytes;
        self
    }

    /// Bytes of the newest entries kept in memory for reads (`read`, `range`, streams and
    /// tails), counted as their payloads plus 48 bytes each: reading an entry this window holds
    /// costs no I/O (Raft leaders read back what they just appended; tails follow the end).
    /// Older entries are read from the files. Payloads are kept as the `Bytes` appended, not
    /// copied: a payload that is a slice of a larger buffer keeps that buffer alive while its
    /// entry is in the window. Default: 4 MiB; 0 keeps nothing; accepted: up to 1 GiB.
    pub fn read_cache_bytes(mut self, bytes: u64) -> Self {
        self.read_cache_bytes = bytes;
        self
    }

    /// The I/O driver to use; by default the log builds its own with [`DriverOptions::default`]
    /// (io_uring where available, `RINGTIDE_IO_BACKEND` obeyed).
    pub fn driver(mut self, driver: IoDriver) -> Self {
        self.driver = Some(driver);
        self
    }

    pub(crate) fn format(&self) -> FrameFormat {
        FrameFormat {
            length: self.length_encoding,
            checksum: self.checksum,
            timestamps: self.timestamps == Timestamps::UnixMicros,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let range = |name, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(Error::invalid(name, format!("{v} is outside {lo}..={hi}")))
            }
        };
        range(
            "segment_size_bytes",
            self.segment_size_bytes,
            64 << 10,
            1 << 30,
        )?;
        range(
            "max_entry_bytes",
            self.max_entry_bytes,
            1,
            record::ACCEPT_MAX_PAYLOAD,
        )?;
        range("max_batch_bytes", self.max_batch_bytes, 4 << 10, 1 << 30)?;
        range(
            "max_pending_bytes",
            self.max_pending_bytes,
            1 << 20,
            u64::from(u32::MAX),
        )?;
        range(
            "max_log_txn_bytes",
            self.max_log_txn_bytes,
            1,
            MAX_CALL_BYTES,
        )?;
        range("max_range_bytes", self.max_range_bytes, 4 << 10, 4 << 30)?;
        range("read_cache_bytes", self.read_cache_bytes, 0, 1 << 30)?;
        match self.sync_policy {
            SyncPolicy::Periodic {
                interval,
                max_unsynced_entries,
            } if (interval.is_zero() || max_unsynced_entries == 0) => {
                return Err(Error::invalid(
                    "sync_policy",
                    "Periodic needs a non-zero interval and max_unsynced_entries",
                ));
            }
            SyncPolicy::Grouped { window } if window > Duration::from_secs(1) => {
                return Err(Error::invalid(
                    "sync_policy",
                    "a Grouped window above 1 s is refused",
                ));
            }
            _ => {}
        }
        Ok(())
    }
}
