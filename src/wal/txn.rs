//! Log transactions: entries collected in memory and appended atomically, bounded in size and in
//! time.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Ack, Lsn, Record, Wal};
use crate::error::{Error, Result};

/// A log transaction from [`Wal::begin_log_txn`]: [`push`](Self::push) entries, then
/// [`commit`](Self::commit) them as one atomic batch or [`rollback`](Self::rollback). Dropping it
/// rolls back. Once its timeout passes it is expired: every later call fails with
/// [`Error::LogTxnExpired`], and it no longer counts in [`Wal::open_log_txns`]. Its entries are freed at
/// its first call after the timeout, or when it is dropped.
#[derive(Debug)]
pub struct LogTxn {
    wal: Wal,
    records: Vec<Record>,
    bytes: u64,
    deadline: Instant,
    /// Its key in the log's registry of open transactions.
    id: u64,
    /// Registered as open until it ends.
    open: bool,
}

impl LogTxn {
    pub(crate) fn new(wal: Wal, timeout: Duration) -> LogTxn {
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        let id = wal.shared.next_txn.fetch_add(1, Ordering::Relaxed);
        wal.shared
            .txns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, deadline);
        LogTxn {
            wal,
            records: Vec::new(),
            bytes: 0,
            deadline,
            id,
            open: true,
        }
    }

    fn end(&mut self) {
        if self.open {
            self.open = false;
            self.records = Vec::new();
            self.wal
                .shared
                .txns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.id);
        }
    }

    /// Fails with [`Error::LogTxnExpired`] (and releases the entries) once the deadline has passed.
    fn check(&mut self) -> Result<()> {
        if !self.open {
            return Err(Error::LogTxnExpired);
        }
        if Instant::now() >= self.deadline {
            self.end();
            return Err(Error::LogTxnExpired);
        }
        Ok(())
    }

    /// Adds an entry.
    ///
    /// # Errors
    ///
    /// [`Error::LogTxnExpired`]; [`Error::TooLarge`] for an entry over the log's limit;
    /// [`Error::LogTxnTooLarge`] if the transaction would exceed `max_log_txn_bytes` (the entry is not
    /// added; the transaction stays usable).
    pub fn push(&mut self, record: impl Into<Record>) -> Result<()> {
        self.check()?;
        let record = record.into();
        let len = record.data.len() as u64;
        let max = self.wal.shared.max_entry_bytes();
        if len > max {
            return Err(Error::TooLarge { len, max });
        }
        // A commit is one call: it may carry no more than `max_pending_bytes`.
        let shared = &self.wal.shared;
        let bound = shared
            .options
            .max_log_txn_bytes
            .min(shared.max_call_bytes());
        if self.bytes + len > bound {
            return Err(Error::LogTxnTooLarge {
                bytes: self.bytes + len,
                max: bound,
            });
        }
        self.bytes += len;
        self.records.push(record);
        Ok(())
    }

    /// Entries collected.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no entry was collected.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Payload bytes collected.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Time left before the transaction expires.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Appends every entry atomically (all or none after a crash) and returns their lsns.
    ///
    /// # Errors
    ///
    /// [`Error::LogTxnExpired`] if the deadline passed before the commit began; otherwise as
    /// [`Wal::append_batch`].
    ///
    /// # Cancel safety
    ///
    /// As [`Wal::append_batch`]: dropped before the batch is queued, nothing is written; after,
    /// the batch is written whole.
    pub async fn commit(self) -> Result<Range<Lsn>> {
        self.commit_with(Ack::Policy).await
    }

    /// [`commit`](Self::commit), acknowledged at `ack` or at what the log's policy gives,
    /// whichever is stronger (see [`Ack`](super::Ack)).
    ///
    /// # Errors
    ///
    /// As [`commit`](Self::commit).
    ///
    /// # Cancel safety
    ///
    /// As [`commit`](Self::commit).
    pub async fn commit_with(mut self, ack: Ack) -> Result<Range<Lsn>> {
        self.check()?;
        let records = std::mem::take(&mut self.records);
        self.end();
        self.wal.append_batch_with(records, ack).await
    }

    /// Discards the entries.
    pub fn rollback(mut self) {
        self.end();
    }
}

impl Drop for LogTxn {
    fn drop(&mut self) {
        self.end();
    }
}
