//! What a log reports through the `metrics` facade, read back with `metrics-util`'s debugging
//! recorder (installed for this whole test binary): every series carries the log's directory as
//! its `dir` label, the counters agree with `Wal::stats`, the gauges follow segments made and
//! deleted, and recovery reports what it found, a torn tail included.
//!
//! One test, running each backend in turn: a snapshot drains the recorder, so two tests running
//! at once would take each other's numbers.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use ringtide::platform::{Backend, DriverOptions, IoDriver};
use ringtide::wal::{Lsn, SyncPolicy, Wal, WalOptions};

/// The values of one log's series, by name; histograms as (count, sum).
#[derive(Debug, Default)]
struct Series {
    counters: HashMap<String, u64>,
    gauges: HashMap<String, f64>,
    histograms: HashMap<String, (usize, f64)>,
}

/// Drains the recorder and keeps what carries `dir` as its label.
fn take(snapshotter: &Snapshotter, dir: &Path) -> Series {
    let want = dir.display().to_string();
    let mut out = Series::default();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        if !key.labels().any(|l| l.key() == "dir" && l.value() == want) {
            continue;
        }
        let name = key.name().to_string();
        match value {
            DebugValue::Counter(v) => {
                out.counters.insert(name, v);
            }
            DebugValue::Gauge(v) => {
                out.gauges.insert(name, v.into_inner());
            }
            DebugValue::Histogram(vs) => {
                let sum = vs.iter().map(|v| v.into_inner()).sum();
                out.histograms.insert(name, (vs.len(), sum));
            }
        }
    }
    out
}

fn opts(driver: &IoDriver) -> WalOptions {
    WalOptions::default()
        .driver(driver.clone())
        .lock_timeout(Duration::from_millis(50))
        .segment_size_bytes(64 << 10)
        .sync_policy(SyncPolicy::Immediate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_reports_its_numbers_labelled_by_directory() -> ringtide::Result<()> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this binary");
    for backend in [Backend::IoUring, Backend::ThreadPool] {
        let Some(driver) = common::driver_for(backend) else {
            continue;
        };
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("log");
        // Another log in the same process: its numbers stay apart.
        let other = Wal::open(tmp.path().join("other"), opts(&driver)).await?;
        other.append(Bytes::from_static(b"elsewhere")).await?;

        let wal = Wal::open(&dir, opts(&driver)).await?;
        let payload = Bytes::from(vec![7u8; 300]);
        for i in 0..200 {
            wal.append(payload.clone()).await?;
            if i % 50 == 0 {
                wal.append_batch(vec![payload.clone(); 25]).await?;
            }
        }
        wal.sync().await?;
        let segments_before = wal.stats().segments;
        wal.truncate_front(Lsn(250)).await?;
        let stats = wal.stats();
        assert!(stats.segments < segments_before, "{stats:?}");

        let s = take(&snapshotter, &dir);
        let c = |name: &str| s.counters.get(name).copied().unwrap_or(0);
        assert_eq!(c("ringtide_wal_appends_total"), 300);
        assert_eq!(c("ringtide_wal_appends_total"), stats.appends);
        assert_eq!(c("ringtide_wal_appended_bytes_total"), 300 * 300);
        assert_eq!(c("ringtide_wal_batches_total"), stats.batches);
        assert_eq!(
            s.histograms["ringtide_wal_batch_entries"],
            (stats.batches as usize, 300.0)
        );
        assert_eq!(c("ringtide_wal_syncs_total"), stats.syncs);
        assert_eq!(
            s.histograms["ringtide_wal_sync_seconds"].0,
            stats.syncs as usize
        );
        assert_eq!(
            s.gauges["ringtide_wal_segments"], stats.segments as f64,
            "the gauge follows the deletion"
        );
        assert_eq!(s.gauges["ringtide_wal_disk_bytes"], stats.disk_bytes as f64);
        assert_eq!(c("ringtide_wal_recoveries_total"), 1);
        assert_eq!(c("ringtide_wal_recovered_entries_total"), 0);
        assert_eq!(c("ringtide_wal_torn_tails_total"), 0);
        wal.close().await?;
        other.close().await?;

        // A torn tail: stray bytes after the last frame (and the seal `close` wrote).
        let last = wal.segments().pop().expect("a segment").path;
        let mut bytes = std::fs::read(&last)?;
        let end = bytes.iter().rposition(|&b| b != 0).expect("data") + 1;
        bytes[end + 8..end + 24].fill(0xab);
        std::fs::write(&last, &bytes)?;
        let wal = Wal::open(&dir, opts(&driver)).await?;
        let stats = wal.stats();
        let torn = stats.torn_tail.clone().expect("a torn tail");
        let s = take(&snapshotter, &dir);
        let c = |name: &str| s.counters.get(name).copied().unwrap_or(0);
        assert_eq!(c("ringtide_wal_recoveries_total"), 1);
        assert_eq!(c("ringtide_wal_recovered_entries_total"), 51);
        assert_eq!(c("ringtide_wal_torn_tails_total"), 1);
        assert_eq!(c("ringtide_wal_torn_tail_bytes_total"), torn.bytes);
        assert_eq!(s.gauges["ringtide_wal_segments"], stats.segments as f64);
        assert_eq!(c("ringtide_wal_appends_total"), 0);
        wal.close().await?;

        // A failed write poisons the log, once: a driver of its own, shut down under the log,
        // fails every later I/O.
        let own = IoDriver::new(
            DriverOptions::default()
                .use_env(false)
                .backend(driver.backend()),
        )?;
        let dir = tmp.path().join("poisoned");
        let wal = Wal::open(&dir, opts(&own)).await?;
        wal.append(Bytes::from_static(b"kept")).await?;
        own.shutdown().await;
        assert!(wal.append(Bytes::from_static(b"lost")).await.is_err());
        assert!(wal.append(Bytes::from_static(b"lost")).await.is_err());
        let s = take(&snapshotter, &dir);
        assert_eq!(s.counters.get("ringtide_wal_poisoned_total"), Some(&1));
        assert_eq!(s.counters.get("ringtide_wal_appends_total"), Some(&1));
    }
    Ok(())
}
