//! Closing the log: everything staged written and synced, the seal after the last entry, the
//! directory lock released, every waiter and tail woken.
//!
//! Invariants:
//! 1. Appends fail from the start of the close (`stage::State::closed`); what was staged before
//!    is written.
//! 2. The seal is written only once everything before it is durable, and only where it fits
//!    within one 512-byte sector: a seal torn by a power loss would read as a torn tail.
//! 3. Closing does not clear the poison: a poisoned log's close fails, and the caller learns
//!    that the log needs a reopen.

use std::sync::atomic::Ordering;

use bytes::BytesMut;

use super::Writer;
use crate::error::{Error, Result};
use crate::wal::Lsn;
use crate::wal::segment;

/// The unit a disk writes whole (or not at all) on a power loss.
const SECTOR: u64 = 512;

impl Writer {
    /// Writes a seal after the last entry, once everything is durable: recovery then knows the
    /// last sync's entries were durable too, and calls damage to them corruption rather than a
    /// torn tail (see `record.rs`). Only a hint: if it cannot be written, recovery knows less.
    async fn seal(&mut self) {
        let next = self.next_lsn();
        assert_eq!(
            self.shared.durable_lsn(),
            Lsn(next.0 - 1),
            "the seal follows a sync of everything written"
        );
        let mut seal = BytesMut::new();
        self.shared.format.encode_seal(&mut seal, next);
        let at = self.active.write_offset;
        let end = at + seal.len() as u64;
        // Only where it fits, and within one 512-byte sector (invariant 2).
        if end > self.active.allocated || at / SECTOR != (end - 1) / SECTOR {
            return;
        }
        // Written with `RWF_DSYNC`: the seal is durable when close returns.
        let (res, _) = self
            .active
            .file
            .writev_dsync_at(vec![seal.freeze()], at)
            .await;
        if let Err(e) = res {
            tracing::warn!(dir = %self.shared.dir.display(), error = %e, "wal: the seal after the last entry could not be written; a later recovery cannot vouch for the last sync's entries");
        }
    }

    /// Syncs what is written, marks the log closed, releases the lock and wakes every tail.
    pub(super) async fn close(&mut self) -> Result<()> {
        // Appends fail from here; what is staged is written.
        self.shared.stage.lock().closed = true;
        self.flush().await;
        self.finish_early_sync().await;
        self.discard_spares().await;
        let synced = match self.shared.poisoned.get() {
            // Closing does not clear the poison: the caller learns the log needs a reopen.
            Some(cause) => Err(Error::Poisoned {
                cause: cause.clone(),
            }),
            None if self.shared.written_lsn() > self.shared.durable_lsn() => self.sync_now().await,
            None => Ok(()),
        };
        if synced.is_ok() {
            self.seal().await;
            // Then record the clean close outside the last segment (see `clean_close.rs`), so
            // that recovery takes any shortfall for corruption, never for a torn tail.
            crate::wal::clean_close::record(&self.shared, self.log_id, self.epoch).await;
        }
        self.shared.closed.store(true, Ordering::Release);
        self.shared.stage.notify_waiters();
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
