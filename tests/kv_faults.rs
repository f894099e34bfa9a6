//! Random disk faults under the key-value store's flushes and compactions, on the simulated
//! disk (feature `sim`): while writers commit (small memtables, so flushes, L0 compactions,
//! tiered runs and value-log files keep coming), the disk fails a fraction of its operations —
//! `ENOSPC` on writes and allocations, `EIO` on writes, on syncs or on reads, short writes —
//! then heals. Whatever the calls returned meanwhile, after a reopen on the healed disk every
//! commit that was acknowledged is there with its value, a commit that failed is there whole or
//! not at all, nothing that was never written appears, `check_integrity` finds nothing wrong,
//! and the store takes writes, flushes and compacts again.
//!
//! `RINGTIDE_KV_FAULT_SEEDS` runs more seeds (default 6 per fault kind).

#![cfg(feature = "sim")]
#![allow(
    clippy::print_stderr,
    reason = "the test reports how many commits the faults failed"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use ringtide::kv::{Db, DbOptions, TxnOptions};
use ringtide::platform::sim::{FaultKind, SimDisk, Trigger};
use ringtide::wal::SyncPolicy;

const DIR: &str = "/db";
const WRITERS: u64 = 3;
const COMMITS: u64 = 40;

fn options(disk: &SimDisk) -> DbOptions {
    DbOptions::default()
        .driver(disk.driver())
        .sync_policy(SyncPolicy::Immediate)
        .wal_segment_size_bytes(128 << 10)
        .write_buffer_bytes(64 << 10)
        .l0_compaction_trigger(2)
        .table_target_bytes(64 << 10)
        .l1_target_bytes(64 << 10)
        .level_size_multiplier(2)
        .value_separation_threshold_bytes(1 << 10)
        .value_log_garbage_ratio(0.3)
}

/// Commit `c` of writer `w`: five keys of its own, one of them with a value kept apart.
fn commit_writes(w: u64, c: u64) -> Vec<(Bytes, Bytes)> {
    (0..5u64)
        .map(|i| {
            let key = Bytes::from(format!("w{w}-c{c:03}-{i}"));
            let len = if i == 0 {
                1500
            } else {
                40 + (c * 7 + i) as usize % 200
            };
            let mut v = format!("{w}:{c}:{i}:").into_bytes();
            v.resize(len, b'a' + (i as u8));
            (key, Bytes::from(v))
        })
        .collect()
}

/// What one writer saw: each commit acknowledged (`true`) or failed.
async fn writer(db: Db, w: u64) -> Vec<bool> {
    let mut out = Vec::new();
    for c in 0..COMMITS {
        let result = async {
            let txn = db.begin(TxnOptions::default())?;
            for (k, v) in commit_writes(w, c) {
                txn.put(k, v)?;
            }
            txn.commit().await
        }
        .await;
        out.push(result.is_ok());
        tokio::task::yield_now().await;
    }
    out
}

/// One run; returns how many commits failed (the faults reached the commit path).
async fn run(seed: u64, kind: FaultKind) -> Result<usize, String> {
    let disk = SimDisk::new(seed);
    let db = Db::open(DIR, options(&disk))
        .await
        .map_err(|e| format!("open: {e}"))?;
    // Faults from the first commit on, at a rate that fails a few operations of each flush or
    // compaction, until the writers are done.
    let rate = 0.01 * (1 + seed % 4) as f64;
    disk.inject(kind, Trigger::Rate(rate));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(db.clone(), w)))
        .collect();
    let background = {
        let db = db.clone();
        tokio::spawn(async move {
            for _ in 0..4 {
                let _ = db.flush().await;
                let _ = db.compact().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let mut acked = Vec::new();
    for (w, h) in writers.into_iter().enumerate() {
        acked.push((w as u64, h.await.map_err(|e| format!("writer: {e}"))?));
    }
    let _ = background.await;
    disk.clear_faults();
    let _ = db.close().await;
    drop(db);

    let db = Db::open(DIR, options(&disk))
        .await
        .map_err(|e| format!("reopen on the healed disk: {e}"))?;
    let txn = db
        .begin(TxnOptions::default().read_only(true))
        .map_err(|e| e.to_string())?;
    let all: BTreeMap<Bytes, Bytes> = txn
        .scan::<&[u8]>(..)
        .try_collect()
        .await
        .map_err(|e| format!("scan after reopen: {e}"))?;
    let mut expected = 0;
    for (w, commits) in &acked {
        for (c, ok) in commits.iter().enumerate() {
            let writes = commit_writes(*w, c as u64);
            let present = writes.iter().filter(|(k, _)| all.contains_key(k)).count();
            for (k, v) in &writes {
                if let Some(got) = all.get(k)
                    && got != v
                {
                    return Err(format!("{k:?}: a wrong value after reopen"));
                }
            }
            if *ok && present != writes.len() {
                return Err(format!(
                    "writer {w} commit {c} acknowledged, {present} of {} keys after reopen",
                    writes.len()
                ));
            }
            if present != 0 && present != writes.len() {
                return Err(format!("writer {w} commit {c}: {present} keys of 5 (torn)"));
            }
            expected += present;
        }
    }
    if all.len() != expected {
        return Err(format!("{} keys, {expected} from commits", all.len()));
    }
    drop(txn);
    let report = db
        .check_integrity(|_| {})
        .await
        .map_err(|e| e.to_string())?;
    if !report.is_sound() {
        return Err(format!("integrity after reopen: {report:?}"));
    }
    // It takes writes, flushes and compacts again.
    db.update(|t| async move { t.put("after", "faults") })
        .await
        .map_err(|e| format!("a commit after reopen: {e}"))?;
    db.flush().await.map_err(|e| format!("flush after: {e}"))?;
    db.compact()
        .await
        .map_err(|e| format!("compact after: {e}"))?;
    db.close().await.map_err(|e| format!("close: {e}"))?;
    Ok(acked.iter().flat_map(|(_, c)| c).filter(|ok| !**ok).count())
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn random_faults_during_flushes_and_compactions_lose_no_acknowledged_commit() {
    let seeds: u64 = std::env::var("RINGTIDE_KV_FAULT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let mut failures = Vec::new();
    let mut failed_commits = BTreeMap::new();
    for kind in [
        FaultKind::NoSpace,
        FaultKind::WriteError,
        FaultKind::SyncError,
        FaultKind::ReadError,
        FaultKind::ShortWrite,
    ] {
        for seed in 0..seeds {
            let outcome = tokio::time::timeout(Duration::from_secs(120), run(seed, kind)).await;
            match outcome {
                Ok(Ok(failed)) => *failed_commits.entry(format!("{kind:?}")).or_insert(0) += failed,
                Ok(Err(why)) => failures.push(format!("{kind:?} seed {seed}: {why}")),
                Err(_) => failures.push(format!("{kind:?} seed {seed}: hung")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("kv_faults: commits failed by the faults, per kind: {failed_commits:?}");
    // The faults reached the commit path (a fault only in background work would leave every
    // commit acknowledged and this test toothless).
    let total: usize = failed_commits.values().sum();
    assert!(total > 0, "no commit failed: {failed_commits:?}");
}
