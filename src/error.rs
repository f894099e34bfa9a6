//! The one error type of ringtide.
//!
//! I/O errors keep their `io::ErrorKind` (and the path they concern); corruption names the file,
//! the byte offset and what was wrong, as a [`CorruptionKind`] a caller can match on.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::types::Lsn;

/// The result type of ringtide.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in ringtide.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed. `path` names the file or directory when one is concerned.
    #[error("I/O error{}: {source}", path.as_ref().map(|p| format!(" on {}", p.display())).unwrap_or_default())]
    Io {
        /// The file or directory concerned, if any.
        path: Option<PathBuf>,
        /// The system's error, with its kind.
        #[source]
        source: io::Error,
    },

    /// Stored data failed a check: a checksum, a magic number, a sequence number.
    #[error("corruption in {} at offset {offset}: {kind}", file.display())]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Where in the file the damage starts.
        offset: u64,
        /// What is wrong.
        kind: CorruptionKind,
    },

    /// A write or sync failed earlier, so the handle refuses all further work: the state of the
    /// data on disk is unknown and a retried fsync could report success without the data being
    /// durable. Reopen to run recovery.
    #[error(
        "the log is poisoned by an earlier failed write or sync ({cause}); reopen it to recover"
    )]
    Poisoned {
        /// The failure that poisoned the handle, whole: its kind, path and source.
        #[source]
        cause: Arc<Error>,
    },

    /// The disk has no room for a new segment. Nothing was written and the handle is not
    /// poisoned: appends work again once space is freed.
    #[error("disk full while preallocating a segment of {needed_bytes} bytes in {}", dir.display())]
    DiskFull {
        /// The log directory.
        dir: PathBuf,
        /// The size that could not be allocated.
        needed_bytes: u64,
    },

    /// A sequence number outside the log.
    #[error("lsn {lsn} is outside the log ({first}..={last})")]
    OutOfRange {
        /// The lsn asked for.
        lsn: Lsn,
        /// The first lsn in the log.
        first: Lsn,
        /// The last lsn in the log (`first - 1` when the log is empty).
        last: Lsn,
    },

    /// An entry larger than the log accepts, one call's entries together larger than one
    /// call may carry (they go into one segment, within `max_pending_bytes`), or a range read
    /// larger than one read may hold in memory (`max_range_bytes`).
    #[error(
        "{len} bytes exceed the limit of {max} bytes (of one entry, of one call's entries together, or of one range read)"
    )]
    TooLarge {
        /// The entry's size, the call's entries' together, or the range's frames' on disk.
        len: u64,
        /// The largest size accepted: for an entry, the smaller of `max_entry_bytes` and the
        /// length encoding's range; for a call, the smaller of `max_pending_bytes` and 1 GiB;
        /// for a range, `max_range_bytes`.
        max: u64,
    },

    /// The log transaction's timeout passed; it was rolled back.
    #[error("the log transaction expired after its timeout and was rolled back")]
    LogTxnExpired,

    /// The log transaction would exceed its size bound (`max_log_txn_bytes`).
    #[error("the log transaction would hold {bytes} bytes, more than its bound of {max} bytes")]
    LogTxnTooLarge {
        /// The size it would reach.
        bytes: u64,
        /// The bound.
        max: u64,
    },

    /// The directory is locked by another open handle (in this or another process).
    #[error("{} is locked by another open handle", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// The handle was closed.
    #[error("the handle is closed")]
    Closed,

    /// The handle was opened read-only.
    #[error("the handle is read-only")]
    ReadOnly,

    /// A key-value transaction's commit (or prepare) was refused because it conflicts with a
    /// transaction that committed (or prepared) after its snapshot was taken. Nothing of it was
    /// written; retry it from the start (`Db::update` does).
    #[error("conflict on key {key:?} in bucket {bucket}: {kind}")]
    Conflict {
        /// The bucket of the key (its path, `/` for the root keyspace).
        bucket: String,
        /// The key (for a scanned range: the key written into it).
        key: bytes::Bytes,
        /// What conflicted.
        kind: ConflictKind,
    },

    /// The key-value transaction's timeout passed: it was rolled back and its snapshot released.
    #[error("the transaction expired after its timeout and was rolled back")]
    TxnExpired,

    /// An operation on a key-value transaction that already committed, rolled back or failed.
    #[error("the transaction has already {state}")]
    TxnFinished {
        /// `committed`, `rolled back` or `failed`.
        state: &'static str,
    },

    /// A write to a read-only transaction.
    #[error("the transaction is read-only")]
    TxnReadOnly,

    /// `Db::update` gave up after retrying conflicts.
    #[error("gave up after {attempts} attempts, each ending in a conflict; the last: {last}")]
    RetriesExhausted {
        /// The attempts made.
        attempts: u32,
        /// The last conflict.
        #[source]
        last: Box<Error>,
    },

    /// A bucket that does not exist.
    #[error("no bucket {name:?}")]
    BucketNotFound {
        /// The bucket's path.
        name: String,
    },

    /// A bucket that exists already (`create_bucket`).
    #[error("the bucket {name:?} exists already")]
    BucketExists {
        /// The bucket's path.
        name: String,
    },

    /// An option or argument is invalid.
    #[error("invalid {name}: {reason}")]
    InvalidArgument {
        /// The option or argument.
        name: &'static str,
        /// Why it is refused.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            path: Some(path.into()),
            source,
        }
    }

    pub(crate) fn corruption(file: impl Into<PathBuf>, offset: u64, kind: CorruptionKind) -> Error {
        Error::Corruption {
            file: file.into(),
            offset,
            kind,
        }
    }

    pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> Error {
        Error::InvalidArgument {
            name,
            reason: reason.into(),
        }
    }

    /// The I/O error kind, for I/O errors.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. } => Some(source.kind()),
            Error::Poisoned { cause } => cause.io_kind(),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(source: io::Error) -> Error {
        Error::Io { path: None, source }
    }
}

/// What is wrong with stored data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptionKind {
    /// The file does not start with the expected magic number.
    #[error("bad magic number")]
    BadMagic,
    /// The file's format version is not one this build reads.
    #[error("unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version in the file.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// A header field holds a value no writer produces.
    #[error("invalid header field {field}")]
    BadHeader {
        /// The field.
        field: &'static str,
    },
    /// A header's checksum does not match.
    #[error("header checksum mismatch")]
    HeaderChecksum,
    /// A frame's checksum does not match its contents.
    #[error("frame checksum mismatch")]
    FrameChecksum,
    /// A frame's length runs past the end of the file or above any size a writer produces.
    #[error("frame length {len} is impossible here")]
    FrameLength {
        /// The length read.
        len: u64,
    },
    /// A frame carries another sequence number than its place in the log.
    #[error("expected lsn {expected}, found {found}")]
    LsnMismatch {
        /// The lsn its place implies.
        expected: Lsn,
        /// The lsn it carries.
        found: Lsn,
    },
    /// A frame is damaged and valid frames follow it, so it cannot be a torn tail.
    #[error("damaged frame followed by a valid frame at offset {next_valid_offset}")]
    DamageBeforeValidData {
        /// Where the next valid frame starts.
        next_valid_offset: u64,
    },
    /// The tail of the last segment is torn and the recovery mode is `Strict`.
    #[error("torn tail ({bytes} bytes) under strict recovery")]
    TornTail {
        /// Bytes from the damage to the end of the written data.
        bytes: u64,
    },
    /// A segment belongs to another log.
    #[error("segment belongs to another log (id {found:#x}, expected {expected:#x})")]
    ForeignSegment {
        /// This log's id.
        expected: u64,
        /// The segment's id.
        found: u64,
    },
    /// Segments do not follow each other: one is missing or out of place.
    #[error("segment starts at lsn {found}, expected {expected}: a segment is missing")]
    MissingSegment {
        /// The lsn the previous segment ends before.
        expected: Lsn,
        /// The lsn this segment starts at.
        found: Lsn,
    },
    /// An atomic batch is cut short in the middle of the log.
    #[error("incomplete batch in the middle of the log")]
    IncompleteBatch,
    /// A record of the key-value store, read from its log, cannot be decoded (its frame's
    /// checksum held, so a writer bug or a foreign log). The error's `file` is the segment that
    /// holds the entry; `lsn` names the entry (the error's `offset` is 0).
    #[error("undecodable key-value record at lsn {lsn}: {reason}")]
    BadRecord {
        /// The log entry that holds the record.
        lsn: Lsn,
        /// What is wrong.
        reason: &'static str,
    },
    /// The log was closed cleanly (its `wal.meta` records the last lsn and where the last
    /// segment's entries end), but fewer entries are there: entries or a segment were lost after
    /// the close. A crash never leaves this record, so this is never a torn tail.
    #[error(
        "the log was closed cleanly after lsn {expected_last}, but its entries end at lsn {found_last}"
    )]
    ShortAfterCleanClose {
        /// The last lsn the clean close recorded.
        expected_last: Lsn,
        /// The last lsn found intact (for a missing segment: the lsn before its first).
        found_last: Lsn,
    },
    /// An entry of the key-value store's manifest (its log of table edits) that cannot be
    /// decoded or applied, or a table it names that is missing.
    #[error("damaged manifest at lsn {lsn}: {reason}")]
    BadManifest {
        /// The manifest entry.
        lsn: Lsn,
        /// What is wrong.
        reason: &'static str,
    },
    /// A table (SSTable) of the key-value store is damaged or holds what no writer produces: a
    /// block's checksum, a length past its block, keys out of order, a footer that does not fit
    /// the file. The error's `offset` is where the damaged block (or the footer) starts.
    #[error("damaged table: {reason}")]
    BadTable {
        /// What is wrong.
        reason: &'static str,
    },
    /// A value-log file of the key-value store (values kept apart from the tables) is damaged:
    /// its header, or a value whose checksum (held by the table's pointer to it) does not match,
    /// or a pointer past the file's end. The error's `offset` is where the value (or the
    /// header) starts.
    #[error("damaged value log: {reason}")]
    BadValueLog {
        /// What is wrong.
        reason: &'static str,
    },
}

/// Why a key-value transaction's commit was refused (see [`Error::Conflict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConflictKind {
    /// Another transaction wrote the same key and committed after this one's snapshot (both
    /// isolation levels: first committer wins).
    #[error("written by a transaction that committed after this one's snapshot")]
    WriteWrite,
    /// A key this serializable transaction read was written by a transaction that committed
    /// after its snapshot.
    #[error("read by this transaction, then written by one that committed after its snapshot")]
    ReadWrite,
    /// A key was written into a range this serializable transaction scanned (a phantom).
    #[error("written into a range this transaction scanned, after its snapshot")]
    Phantom,
    /// The key is held by a prepared (two-phase) transaction not yet committed or rolled back.
    #[error("held by a prepared transaction")]
    Prepared,
    /// The transaction's snapshot is older than the conflict history the store keeps
    /// (`DbOptions::max_conflict_history_bytes`): it cannot be validated.
    #[error("the transaction is older than the conflict history kept; retry it")]
    TooOld,
}
