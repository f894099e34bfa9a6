//! The failure latch: a failed write or sync poisons the log, and the writer records where the
//! trustworthy log ends.
//!
//! Invariants:
//! 1. The poison is set once and never cleared: every later call fails with
//!    [`Error::Poisoned`], which carries the first failure whole (its kind, its path, its
//!    source). Nothing retries an fsync: Linux marks the pages of a failed writeback clean
//!    without writing them ("fsyncgate"), so a retried fsync may succeed without the data.
//! 2. Once poisoned, nothing staged is written: the log's last lsn goes back to the last
//!    written.
//! 3. After a failed write or sync the cut record names the last lsn that can be trusted (best
//!    effort: if the disk fails that write too, the risk remains and is logged).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Writer;
use crate::error::Error;
use crate::wal::Lsn;
use crate::wal::segment::CutRecord;

impl Writer {
    /// Poisons the log with `cause` (unless it is poisoned already) and returns the error for
    /// the current caller.
    pub(super) fn poison(&self, cause: impl Into<Error>) -> Error {
        let cause = cause.into();
        if let Error::Poisoned { .. } = cause {
            return cause;
        }
        let cause = Arc::new(cause);
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

    /// A write failed (`synced`: it carried a sync): poisons the log and leaves the cut record
    /// to the writer task (publication does not await).
    pub(super) fn write_failed(&mut self, e: std::io::Error, synced: bool) {
        let _ = self.poison(e);
        // A failed sync may have dropped any unsynced page; a failed write only its own.
        let trusted = if synced {
            self.shared.durable_lsn()
        } else {
            self.shared.written_lsn()
        };
        self.failure_cut = Some(trusted);
        self.shared.stage.wake.notify_one();
    }

    /// After a failed write or sync, records (best effort) where the trustworthy log ends. A
    /// reopen in the same boot would otherwise read frames the disk does not have (their pages
    /// were marked clean unwritten), take them for durable, and append after them — until a
    /// power loss turns them into a hole before acknowledged data. The cut record makes that
    /// reopen end the log at `lsn` and zero what follows.
    pub(super) async fn record_failure_cut(&self, lsn: Lsn) {
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
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Arc;

    use crate::error::Error;

    #[test]
    fn the_poison_keeps_the_failure_whole() {
        let failure = Error::io("seg.wal", io::Error::from(io::ErrorKind::StorageFull));
        let err = Error::Poisoned {
            cause: Arc::new(failure),
        };
        assert_eq!(err.io_kind(), Some(io::ErrorKind::StorageFull));
        let Error::Poisoned { cause } = &err else {
            unreachable!()
        };
        assert!(matches!(&**cause, Error::Io { path: Some(p), .. } if p.ends_with("seg.wal")));
        // The chain goes on to the system's error.
        let source = std::error::Error::source(&err).expect("the cause");
        let io = std::error::Error::source(source).expect("the I/O error");
        assert!(io.downcast_ref::<io::Error>().is_some());
    }
}
