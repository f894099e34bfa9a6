//! Durability: syncs, the tickets that tell waiters what is written and durable, the
//! `Periodic` policy, and the early background sync.
//!
//! Invariants:
//! 1. The durable lsn and ticket move only after an fdatasync, or a write with `RWF_DSYNC`,
//!    completed. A failed sync poisons the log; nothing retries it (fsyncgate).
//! 2. Under `Periodic`, an append that brings the unsynced entries to `max_unsynced_entries`
//!    returns synced: the sync comes before the waiters hear of the write.
//! 3. The early background sync publishes nothing as durable: it only gets the page cache
//!    written back while the log goes on, so that the sync a rotation waits for finds little
//!    left to do.

use std::time::Instant;

use super::Writer;
use crate::error::Result;
use crate::wal::{Lsn, SyncPolicy};

/// Bytes of a segment written through the page cache between two background syncs.
const EARLY_SYNC_BYTES: u64 = 16 << 20;

/// What is written and what is durable, as the writer knows it.
#[derive(Default)]
pub(super) struct Durability {
    /// Entries written since the last sync.
    unsynced_entries: u64,
    /// When the periodic policy syncs next.
    sync_deadline: Option<tokio::time::Instant>,
    /// `Periodic` has too many unsynced entries: sync at the next chance.
    sync_soon: bool,
    /// The last tickets written and durable (see `stage::Progress`).
    written_ticket: u64,
    durable_ticket: u64,
    /// Bytes of the active segment written through the page cache since the last background
    /// sync started; direct writes leave nothing to write back.
    buffered_unsynced: u64,
    /// An fdatasync of the active segment started in the background, for logs that do not sync
    /// every batch.
    early_sync: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Durability {
    /// Nothing written is unsynced: a write that syncs may carry `RWF_DSYNC` alone.
    pub(super) fn nothing_unsynced(&self) -> bool {
        self.unsynced_entries == 0
    }

    /// When the periodic policy syncs next, if it waits for a deadline.
    pub(super) fn sync_deadline(&self) -> Option<tokio::time::Instant> {
        self.sync_deadline
    }

    /// A sync is due at the next chance (`Periodic` reached its bound).
    pub(super) fn sync_soon(&self) -> bool {
        self.sync_soon
    }

    pub(super) fn take_sync_soon(&mut self) -> bool {
        std::mem::take(&mut self.sync_soon)
    }

    /// Every call up to `ticket` is written.
    pub(super) fn written(&mut self, ticket: u64) {
        self.written_ticket = ticket;
    }

    /// `bytes` went through the page cache.
    pub(super) fn wrote_buffered(&mut self, bytes: u64) {
        self.buffered_unsynced += bytes;
    }

    /// The active segment changed: what was known of its write-back is void.
    pub(super) fn new_segment(&mut self) {
        self.buffered_unsynced = 0;
    }

    /// The log's tail was cut or moved, and what is left is durable: nothing is unsynced.
    pub(super) fn forget_unsynced(&mut self) {
        self.unsynced_entries = 0;
        self.sync_deadline = None;
    }

    /// The background sync ended and waits to be collected.
    pub(super) fn early_sync_finished(&self) -> bool {
        self.early_sync
            .as_ref()
            .is_some_and(|handle| handle.is_finished())
    }
}

impl Writer {
    /// Tells the waiters the last tickets written and durable.
    pub(super) fn publish_progress(&self) {
        let d = &self.durability;
        let (written, durable) = (d.written_ticket, d.durable_ticket);
        self.shared.stage.progress.send_modify(|p| {
            p.written = written;
            p.durable = durable;
        });
    }

    /// Everything written, up to `lsn`, is durable.
    pub(super) fn mark_durable(&mut self, lsn: Lsn) {
        let d = &mut self.durability;
        d.forget_unsynced();
        d.durable_ticket = d.written_ticket;
        self.shared.durable.send_replace(lsn.0);
    }

    /// fdatasync of the active segment, making everything written durable.
    pub(super) async fn sync_now(&mut self) -> Result<()> {
        // Whatever comes of this call, the periodic deadline it answers is over.
        self.durability.sync_deadline = None;
        self.shared.check_usable()?;
        let written = self.shared.written_lsn();
        let d = &mut self.durability;
        if d.unsynced_entries == 0 && self.shared.durable_lsn() >= written {
            if d.durable_ticket < d.written_ticket {
                d.durable_ticket = d.written_ticket;
                self.publish_progress();
            }
            return Ok(());
        }
        let started = Instant::now();
        // fdatasync the active segment: the entries written to it become durable (earlier
        // segments were synced when the log rotated away from them).
        if let Err(e) = self.active.file.sync_data().await {
            let err = self.poison(e);
            self.record_failure_cut(self.shared.durable_lsn()).await;
            return Err(err);
        }
        self.record_sync(started);
        self.mark_durable(written);
        self.publish_progress();
        Ok(())
    }

    /// Counts a sync that started at `started`.
    pub(super) fn record_sync(&self, started: Instant) {
        self.shared.observe.sync(started.elapsed());
    }

    /// `entries` were written without a sync. True if a sync must come before the waiters
    /// hear of them (invariant 2; `deferred` publishes after the sync).
    pub(super) fn unsynced_written(&mut self, entries: u64) -> bool {
        self.durability.unsynced_entries += entries;
        self.maybe_sync_early();
        let SyncPolicy::Periodic {
            interval,
            max_unsynced_entries,
        } = self.shared.options.sync_policy
        else {
            return false;
        };
        let d = &mut self.durability;
        if d.unsynced_entries >= max_unsynced_entries {
            d.sync_soon = true;
            self.shared.stage.wake.notify_one();
            return true;
        }
        if d.sync_deadline.is_none() {
            d.sync_deadline = Some(tokio::time::Instant::now() + interval);
        }
        false
    }

    /// For logs that do not sync every batch: once another [`EARLY_SYNC_BYTES`] of the active
    /// segment are written through the page cache, starts an fdatasync of it in the background
    /// (invariant 3). Direct writes do not count: they leave nothing to write back.
    fn maybe_sync_early(&mut self) {
        let d = &mut self.durability;
        if d.early_sync.is_some() || self.shared.options.sync_policy.syncs_each_batch() {
            return;
        }
        if d.buffered_unsynced < EARLY_SYNC_BYTES {
            return;
        }
        d.buffered_unsynced = 0;
        let file = self.active.file.clone();
        let shared = self.shared.clone();
        d.early_sync = Some(tokio::spawn(async move {
            // fdatasync in the background: writes back early what the sync at the segment's
            // rotation would otherwise wait for; it vouches for nothing.
            let res = file.sync_data().await;
            shared.stage.wake.notify_one();
            res
        }));
    }

    /// Waits for the background sync, if any. It failing means the kernel may have dropped dirty
    /// pages without writing them: the log is poisoned, as for any failed sync.
    pub(super) async fn finish_early_sync(&mut self) {
        let Some(handle) = self.durability.early_sync.take() else {
            return;
        };
        match handle.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = self.poison(e);
                self.failure_cut = Some(self.shared.durable_lsn());
            }
            Err(e) => {
                // The task panicked or was cancelled: whether the sync ran is unknown.
                let _ = self.poison(std::io::Error::other(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_or_a_sync_leaves_nothing_unsynced() {
        let mut d = Durability {
            unsynced_entries: 5,
            sync_deadline: Some(tokio::time::Instant::now()),
            ..Durability::default()
        };
        assert!(!d.nothing_unsynced());
        d.forget_unsynced();
        assert!(d.nothing_unsynced());
        assert_eq!(d.sync_deadline(), None);
        d.sync_soon = true;
        assert!(d.take_sync_soon());
        assert!(!d.sync_soon());
    }
}
