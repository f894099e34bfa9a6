//! What a log counts, kept in one place: each event is recorded once, by one call that updates
//! both the handle's own counters (read back by `Wal::stats`) and the series of the `metrics`
//! facade (the table is in the module documentation of `wal`). The gauges are set from the
//! log's own state whenever it changes.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, SharedString};

/// The handle's counts, as `Wal::stats` reports them. Only [`Observe`] updates them, together
/// with the facade's series, so the two cannot disagree.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) appends: AtomicU64,
    pub(crate) appended_bytes: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) max_batch_entries: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) sync_time_us: AtomicU64,
    pub(crate) disk_bytes: AtomicU64,
}

/// One log's counts and series, registered once at open: recording is then an atomic update,
/// with no allocation. (So a recorder installed after a log was opened does not see that log.)
#[derive(Debug)]
pub(crate) struct Observe {
    counters: Counters,
    appends: Counter,
    appended_bytes: Counter,
    batches: Counter,
    batch_entries: Histogram,
    syncs: Counter,
    sync_seconds: Histogram,
    segments: Gauge,
    disk_bytes: Gauge,
    poisoned: Counter,
}

impl Observe {
    /// Registers the log's series; records that an open recovered `entries` entries, and a torn
    /// tail of `torn_bytes` if it found one. The log's files take `disk_bytes` on disk.
    pub(crate) fn open(
        dir: &Path,
        entries: u64,
        torn_bytes: Option<u64>,
        disk_bytes: u64,
    ) -> Observe {
        let dir = SharedString::from(dir.display().to_string());
        let labels = [("dir", dir)];
        metrics::counter!("ringtide_wal_recoveries_total", &labels).increment(1);
        metrics::counter!("ringtide_wal_recovered_entries_total", &labels).increment(entries);
        if let Some(bytes) = torn_bytes {
            metrics::counter!("ringtide_wal_torn_tails_total", &labels).increment(1);
            metrics::counter!("ringtide_wal_torn_tail_bytes_total", &labels).increment(bytes);
        }
        let counters = Counters::default();
        counters.disk_bytes.store(disk_bytes, Ordering::Relaxed);
        Observe {
            counters,
            appends: metrics::counter!("ringtide_wal_appends_total", &labels),
            appended_bytes: metrics::counter!("ringtide_wal_appended_bytes_total", &labels),
            batches: metrics::counter!("ringtide_wal_batches_total", &labels),
            batch_entries: metrics::histogram!("ringtide_wal_batch_entries", &labels),
            syncs: metrics::counter!("ringtide_wal_syncs_total", &labels),
            sync_seconds: metrics::histogram!("ringtide_wal_sync_seconds", &labels),
            segments: metrics::gauge!("ringtide_wal_segments", &labels),
            disk_bytes: metrics::gauge!("ringtide_wal_disk_bytes", &labels),
            poisoned: metrics::counter!("ringtide_wal_poisoned_total", &labels),
        }
    }

    /// The handle's counts, for `Wal::stats`.
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// One write submission of `entries` entries, `payload_bytes` of payload, published.
    pub(crate) fn batch(&self, entries: u64, payload_bytes: u64) {
        let c = &self.counters;
        c.appends.fetch_add(entries, Ordering::Relaxed);
        c.appended_bytes.fetch_add(payload_bytes, Ordering::Relaxed);
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.max_batch_entries.fetch_max(entries, Ordering::Relaxed);
        self.appends.increment(entries);
        self.appended_bytes.increment(payload_bytes);
        self.batches.increment(1);
        self.batch_entries.record(entries as f64);
    }

    /// One sync (an fdatasync, or a write with `RWF_DSYNC`) that took `took`.
    pub(crate) fn sync(&self, took: Duration) {
        let c = &self.counters;
        c.syncs.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        c.sync_time_us.fetch_add(us, Ordering::Relaxed);
        self.syncs.increment(1);
        self.sync_seconds.record(took.as_secs_f64());
    }

    /// Segment files of `bytes` were created (or grown by `bytes`).
    pub(crate) fn disk_grew(&self, bytes: u64) {
        self.counters.disk_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A segment file of `bytes` was deleted.
    pub(crate) fn disk_shrank(&self, bytes: u64) {
        self.counters.disk_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Sets the gauges of the log's files: `segments` files, and the bytes they take.
    pub(crate) fn space(&self, segments: usize) {
        let disk_bytes = self.counters.disk_bytes.load(Ordering::Relaxed);
        self.segments.set(segments as f64);
        self.disk_bytes.set(disk_bytes as f64);
    }

    pub(crate) fn poisoned(&self) {
        self.poisoned.increment(1);
    }
}
