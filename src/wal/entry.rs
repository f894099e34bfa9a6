//! What goes into the log and what comes out: records to append, entries read back, the
//! per-call acknowledgement level, and the descriptions a log gives of itself.

use std::path::PathBuf;

use bytes::Bytes;

use super::{ChecksumKind, LengthEncoding, Lsn, Timestamps};
#[cfg(doc)]
use super::{FORMAT_VERSION, SyncPolicy, Wal};

/// An entry to append: its payload and, optionally, a Raft term and a timestamp.
///
/// Built with [`Record::new`] and the setters, [`Record::with_term`], or `From` a payload
/// (`Bytes`, `Vec<u8>`, `&'static [u8]`, `&'static str`):
///
/// ```
/// use ringtide::wal::Record;
///
/// let r = Record::new("payload").term(3).timestamp_us(1_700_000_000_000_000);
/// assert_eq!((r.term, r.timestamp_us), (Some(3), Some(1_700_000_000_000_000)));
/// assert_eq!(Record::with_term(3, "payload").timestamp_us(None), Record::new("payload").term(3));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Record {
    /// The Raft term, if the log is used by Raft.
    pub term: Option<u64>,
    /// The entry's time in microseconds since the Unix epoch, if the caller sets it (e.g. the
    /// time an event happened, or the leader's stamp replicated to a follower). Kept only by a
    /// log that records timestamps ([`Timestamps::UnixMicros`]); without one, such a log stamps
    /// the entry itself. Ignored by a log without timestamps.
    pub timestamp_us: Option<u64>,
    /// The payload; may be empty.
    pub data: Bytes,
}

impl Record {
    /// A record with this payload, no term and no timestamp of its own.
    pub fn new(data: impl Into<Bytes>) -> Record {
        Record {
            term: None,
            timestamp_us: None,
            data: data.into(),
        }
    }

    /// A record with a term.
    pub fn with_term(term: u64, data: impl Into<Bytes>) -> Record {
        Record::new(data).term(term)
    }

    /// Sets the Raft term (`None` for none).
    pub fn term(mut self, term: impl Into<Option<u64>>) -> Record {
        self.term = term.into();
        self
    }

    /// Sets the entry's timestamp, in microseconds since the Unix epoch (`None`: the log's own
    /// stamp). See [`timestamp_us`](Record#structfield.timestamp_us).
    pub fn timestamp_us(mut self, timestamp_us: impl Into<Option<u64>>) -> Record {
        self.timestamp_us = timestamp_us.into();
        self
    }
}

impl From<Bytes> for Record {
    fn from(data: Bytes) -> Record {
        Record::new(data)
    }
}

impl From<Vec<u8>> for Record {
    fn from(data: Vec<u8>) -> Record {
        Record::new(data)
    }
}

impl From<&'static [u8]> for Record {
    fn from(data: &'static [u8]) -> Record {
        Record::new(data)
    }
}

impl From<&'static str> for Record {
    fn from(data: &'static str) -> Record {
        Record::new(data)
    }
}

/// An entry read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    /// Its sequence number.
    pub lsn: Lsn,
    /// Its Raft term, if one was given.
    pub term: Option<u64>,
    /// Its time (µs since the Unix epoch), if the log records timestamps: the one its
    /// [`Record`] carried, or else the time its append call was staged.
    pub timestamp_us: Option<u64>,
    /// The payload, sliced from the read buffer without a copy.
    pub data: Bytes,
}

/// When one append call is acknowledged: a floor under the log's [`SyncPolicy`], per call.
///
/// The call waits for the stronger of what it asks and what the policy gives: a level weaker
/// than the policy's changes nothing. The policies give: [`SyncPolicy::None`] returns once the
/// entries are staged in memory (readable at once, not yet handed to the OS);
/// [`SyncPolicy::Periodic`] gives [`Ack::Written`]; [`SyncPolicy::Immediate`] and
/// [`SyncPolicy::Grouped`] give [`Ack::Durable`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ack {
    /// What the log's [`SyncPolicy`] gives (the default).
    #[default]
    Policy,
    /// Returns once the entries are written to the OS (the page cache): they survive a crash of
    /// the process, not a power loss or a crash of the machine.
    Written,
    /// Returns once an fdatasync covers the entries: they survive a power loss. Under a policy
    /// that does not sync each batch, the writer syncs the batch that holds them.
    Durable,
}

/// A log's on-disk format, as [`Wal::format`] reads it from the log's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalFormat {
    /// The format version (this build reads and writes only [`FORMAT_VERSION`]).
    pub version: u16,
    /// How frame lengths are stored.
    pub length_encoding: LengthEncoding,
    /// The frame checksum.
    pub checksum: ChecksumKind,
    /// Whether entries carry a timestamp.
    pub timestamps: Timestamps,
}

/// One segment file, as [`Wal::segments`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// The file.
    pub path: PathBuf,
    /// The lsn of its first frame.
    pub first_lsn: Lsn,
    /// Frames in it (some may lie below the log's first lsn after `truncate_front`).
    pub entries: u64,
    /// Bytes of header and frames.
    pub data_bytes: u64,
    /// Bytes allocated on disk.
    pub file_bytes: u64,
}

/// A torn tail found and cut by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TornTail {
    /// The segment it was in.
    pub file: PathBuf,
    /// Where the cut was made.
    pub offset: u64,
    /// Bytes removed (from the cut to the end of the written data).
    pub bytes: u64,
    /// Entries of a batch left incomplete before the cut, dropped with it. Frames past damage
    /// (unsynced writes that reached the disk out of order) are not counted: they are in `bytes`.
    pub dropped_entries: u64,
}

/// A snapshot of a log's state and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalStats {
    /// The first lsn in the log.
    pub first_lsn: Lsn,
    /// The last lsn written (`first_lsn - 1` if empty).
    pub last_lsn: Lsn,
    /// The last lsn known durable.
    pub durable_lsn: Lsn,
    /// Entries appended through this handle.
    pub appends: u64,
    /// Payload bytes appended through this handle.
    pub appended_bytes: u64,
    /// Write submissions made by the writer.
    pub batches: u64,
    /// The largest batch, in entries.
    pub max_batch_entries: u64,
    /// fdatasync calls made.
    pub syncs: u64,
    /// Total time spent in write + sync submissions that synced, in microseconds.
    pub sync_time_us: u64,
    /// Segment files.
    pub segments: u64,
    /// Bytes of segment files on disk (preallocated size).
    pub disk_bytes: u64,
    /// Segments read by recovery at open.
    pub recovered_segments: u64,
    /// Entries in the log when recovery at open ended (frames below its first lsn not counted).
    pub recovered_entries: u64,
    /// The torn tail cut by recovery at open, if any.
    pub torn_tail: Option<TornTail>,
    /// Log transactions begun and not yet committed, rolled back or expired.
    pub open_log_txns: usize,
    /// Bytes of frames appended and not yet written (staged, or being written): at most
    /// `max_pending_bytes`, or one call's alone.
    pub pending_bytes: u64,
    /// The I/O backend in use.
    pub backend: ringtide_platform::Backend,
}
