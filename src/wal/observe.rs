//! What a log reports through the `metrics` facade (the table is in the module documentation of
//! `wal`). Counters and histograms are recorded as things happen; the gauges are set from the
//! log's own state whenever it changes.

use std::path::Path;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, SharedString};

/// One log's series, registered once at open: recording is then an atomic update, with no
/// allocation. (So a recorder installed after a log was opened does not see that log.)
#[derive(Debug, Clone)]
pub(crate) struct Observe {
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
    /// tail of `torn_bytes` if it found one.
    pub(crate) fn open(dir: &Path, entries: u64, torn_bytes: Option<u64>) -> Observe {
        let dir = SharedString::from(dir.display().to_string());
        let labels = [("dir", dir)];
        metrics::counter!("ringtide_wal_recoveries_total", &labels).increment(1);
        metrics::counter!("ringtide_wal_recovered_entries_total", &labels).increment(entries);
        if let Some(bytes) = torn_bytes {
            metrics::counter!("ringtide_wal_torn_tails_total", &labels).increment(1);
            metrics::counter!("ringtide_wal_torn_tail_bytes_total", &labels).increment(bytes);
        }
        Observe {
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

    /// One write submission published.
    pub(crate) fn batch(&self, entries: u64, payload_bytes: u64) {
        self.appends.increment(entries);
        self.appended_bytes.increment(payload_bytes);
        self.batches.increment(1);
        self.batch_entries.record(entries as f64);
    }

    pub(crate) fn sync(&self, took: Duration) {
        self.syncs.increment(1);
        self.sync_seconds.record(took.as_secs_f64());
    }

    /// The log's files now: how many, and the bytes they take.
    pub(crate) fn space(&self, segments: usize, disk_bytes: u64) {
        self.segments.set(segments as f64);
        self.disk_bytes.set(disk_bytes as f64);
    }

    pub(crate) fn poisoned(&self) {
        self.poisoned.increment(1);
    }
}
