//! What every handle of one open store shares: the wal, the tree (memtables and tables), the
//! oracle, the prepared transactions and the counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::options::{DbOptions, Isolation};
use super::tree::Tree;
use super::txn::WriteSet;
use super::txn::commit::Prepared;
use super::txn::oracle::Oracle;
use crate::wal::Wal;

pub(crate) struct Shared {
    pub(crate) wal: Wal,
    pub(crate) tree: Tree,
    pub(crate) oracle: Oracle,
    pub(crate) options: DbOptions,
    pub(crate) read_only: bool,
    next_txn_id: AtomicU64,
    pub(crate) next_bucket_id: AtomicU64,
    prepared: Mutex<BTreeMap<u64, Prepared>>,
    pub(crate) counters: Counters,
    pub(crate) closed: AtomicBool,
    /// Background flushes and compactions (see `flush.rs`).
    pub(crate) background: super::flush::Background,
}

impl Shared {
    pub(crate) fn new(
        wal: Wal,
        tree: Tree,
        oracle: Oracle,
        options: DbOptions,
        read_only: bool,
        ids: (u64, u64),
        prepared: BTreeMap<u64, Prepared>,
    ) -> Shared {
        Shared {
            wal,
            tree,
            oracle,
            options,
            read_only,
            next_txn_id: AtomicU64::new(ids.0),
            next_bucket_id: AtomicU64::new(ids.1),
            prepared: Mutex::new(prepared),
            counters: Counters::default(),
            closed: AtomicBool::new(false),
            background: super::flush::Background::default(),
        }
    }

    /// The id the next transaction will get (recorded with each flush, so that ids are not
    /// reused once the wal records that carried them are cut).
    pub(crate) fn peek_next_txn_id(&self) -> u64 {
        self.next_txn_id.load(Ordering::Relaxed)
    }

    pub(crate) fn next_txn_id(&self) -> u64 {
        self.next_txn_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn prepared_txns(&self) -> MutexGuard<'_, BTreeMap<u64, Prepared>> {
        self.prepared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Inserts a commit's writes into the memtable of `seq`; starts a flush if the active
    /// memtable is full.
    pub(crate) fn apply(self: &std::sync::Arc<Self>, seq: u64, writes: &WriteSet) {
        if self.tree.apply(seq, super::txn::writes_of(writes)) {
            self.rotate_and_flush();
        }
    }
}

/// Counters of one open store, mirrored to the `metrics` facade.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) conflicts_snapshot: AtomicU64,
    pub(crate) conflicts_serializable: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) rollbacks: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) active: AtomicU64,
}

impl Counters {
    pub(crate) fn commit(&self, latency: Duration, isolation: Isolation) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ringtide_kv_commits_total", "isolation" => isolation_label(isolation))
            .increment(1);
        metrics::histogram!("ringtide_kv_commit_seconds").record(latency.as_secs_f64());
    }

    pub(crate) fn conflict(&self, isolation: Isolation) {
        match isolation {
            Isolation::Snapshot => &self.conflicts_snapshot,
            Isolation::Serializable => &self.conflicts_serializable,
        }
        .fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ringtide_kv_conflicts_total", "isolation" => isolation_label(isolation))
            .increment(1);
    }

    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ringtide_kv_retries_total").increment(1);
    }

    pub(crate) fn rollback(&self) {
        self.rollbacks.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ringtide_kv_rollbacks_total").increment(1);
    }

    pub(crate) fn expired(&self) {
        self.expired.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ringtide_kv_expired_total").increment(1);
    }

    pub(crate) fn txn_begun(&self) {
        let active = self.active.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("ringtide_kv_active_txns").set(active as f64);
    }

    pub(crate) fn txn_ended(&self, lived: Duration) {
        let active = self
            .active
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        metrics::gauge!("ringtide_kv_active_txns").set(active as f64);
        metrics::histogram!("ringtide_kv_txn_seconds").record(lived.as_secs_f64());
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

fn isolation_label(isolation: Isolation) -> &'static str {
    match isolation {
        Isolation::Snapshot => "snapshot",
        Isolation::Serializable => "serializable",
    }
}
