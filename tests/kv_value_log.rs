//! Key-value separation: values at or above `value_separation_threshold_bytes` live in
//! value-log files beside the tables. Reads of every kind find them through flushes,
//! compactions and reopen; garbage is reclaimed once values are overwritten or deleted (and
//! not before a snapshot that sees them ends); damage is `Corruption` naming the value-log
//! file; files no table names are removed at open and a named one missing is refused; a
//! checkpoint carries them; separation turned off brings values back into the tables; the disk
//! failing at any step of a flush or compaction that writes them loses nothing. On both I/O
//! backends.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::TryStreamExt;
use ringtide::kv::{Db, DbOptions, TxnOptions};
use ringtide::platform::IoDriver;
use ringtide::{CorruptionKind, Error, Result};

both_backends!(
    large_values_are_read_back_from_value_log_files_everywhere,
    garbage_is_reclaimed_once_no_snapshot_sees_it,
    damage_in_a_value_log_file_is_corruption_naming_it,
    orphan_value_log_files_are_removed_and_missing_ones_refused,
    a_checkpoint_carries_the_value_log_files,
    separation_turned_off_brings_values_back_into_the_tables,
    eio_at_every_step_of_a_flush_and_compaction_with_separated_values_loses_nothing,
);

const THRESHOLD: u64 = 1 << 10;

fn options(driver: &IoDriver) -> DbOptions {
    DbOptions::default()
        .driver(driver.clone())
        .wal_segment_size_bytes(256 << 10)
        .write_buffer_bytes(256 << 10)
        .table_target_bytes(64 << 10)
        .block_size_bytes(512)
        .value_separation_threshold_bytes(THRESHOLD)
}

fn key(i: u32) -> Bytes {
    Bytes::from(format!("key{i:05}"))
}

/// A value of round `round`: every third key's small (kept in the tables), the rest 1–9 KiB
/// (kept apart), its bytes telling key and round apart.
fn val(i: u32, round: u32) -> Bytes {
    let len = if i.is_multiple_of(3) {
        40
    } else {
        1024 + ((i * 7 + round * 13) % 9) as usize * 1000
    };
    let mut v = format!("{i}:{round}:").into_bytes();
    v.resize(len, b'a' + ((i + round) % 26) as u8);
    Bytes::from(v)
}

/// Puts keys `range` at `round` in one transaction, into the store and the model.
async fn put_round(
    db: &Db,
    model: &mut BTreeMap<Bytes, Bytes>,
    range: std::ops::Range<u32>,
    round: u32,
) -> Result<()> {
    let txn = db.begin(TxnOptions::default())?;
    for i in range {
        txn.put(key(i), val(i, round))?;
        model.insert(key(i), val(i, round));
    }
    txn.commit().await?;
    Ok(())
}

/// Every key and value by scans both ways, a bounded range, a cursor and point reads.
async fn check(db: &Db, model: &BTreeMap<Bytes, Bytes>) -> Result<()> {
    let txn = db.begin(TxnOptions::default().read_only(true))?;
    let expected: Vec<(Bytes, Bytes)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let all: Vec<(Bytes, Bytes)> = txn.scan::<&[u8]>(..).try_collect().await?;
    assert!(all == expected, "forward scan differs from the model");
    let mut rev: Vec<(Bytes, Bytes)> = txn.scan::<&[u8]>(..).rev().try_collect().await?;
    rev.reverse();
    assert!(rev == expected, "reverse scan differs from the model");
    let (lo, hi) = (key(40), key(170));
    let mid: Vec<(Bytes, Bytes)> = txn.scan(lo.clone()..hi.clone()).try_collect().await?;
    let want: Vec<(Bytes, Bytes)> = model
        .range(lo..hi)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(mid == want, "range scan differs");
    for i in 0..400 {
        assert_eq!(
            txn.get(key(i)).await?,
            model.get(&key(i)).cloned(),
            "get {i}"
        );
    }
    let mut cursor = txn.cursor();
    let mut seen = Vec::new();
    let mut at = cursor.first().await?;
    while let Some(kv) = at {
        seen.push(kv);
        at = cursor.next().await?;
    }
    assert!(seen == expected, "cursor walk differs");
    Ok(())
}

fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir.join("tables"))
        .expect("tables dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

fn bytes_of(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

/// A store written in rounds (overwrites, deletes), flushed and compacted into several levels:
/// every read matches the model, before and after reopen; the values above the threshold are
/// in value-log files and the check reads every one of them back.
async fn large_values_are_read_back_from_value_log_files_everywhere(
    driver: IoDriver,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = options(&driver)
        .l0_compaction_trigger(2)
        .l1_target_bytes(128 << 10)
        .level_size_multiplier(2)
        .level_count(4);
    let db = Db::open(dir.path(), options.clone()).await?;
    let mut model = BTreeMap::new();
    for round in 0..6u32 {
        put_round(&db, &mut model, (round * 40)..(round * 40 + 160), round).await?;
        let txn = db.begin(TxnOptions::default())?;
        for i in (round * 40..round * 40 + 160).step_by(11) {
            txn.delete(key(i))?;
            model.remove(&key(i));
        }
        txn.commit().await?;
        if round % 2 == 1 {
            db.flush().await?;
        }
        // Some reads while the data is spread over memtables and tables.
        check(&db, &model).await?;
    }
    db.flush().await?;
    db.compact().await?;
    check(&db, &model).await?;
    let stats = db.stats();
    assert!(stats.value_log_files > 0, "{stats}");
    assert!(stats.value_log_bytes_written > 0, "{stats}");
    assert!(stats.compactions > 0, "{stats}");
    // The tables hold pointers, not the values: far smaller than the values they reach.
    let table_bytes: u64 = stats.levels.iter().map(|l| l.bytes).sum();
    let separated: u64 = model
        .values()
        .filter(|v| v.len() as u64 >= THRESHOLD)
        .map(|v| v.len() as u64)
        .sum();
    assert!(
        table_bytes * 4 < separated,
        "tables {table_bytes} B for {separated} B of separated values"
    );
    let report = db.check_integrity(|_| {}).await?;
    assert!(report.is_sound(), "{report:?}");
    let live_separated = model
        .values()
        .filter(|v| v.len() as u64 >= THRESHOLD)
        .count() as u64;
    assert!(
        report.separated_values >= live_separated,
        "{} values read back, {live_separated} live",
        report.separated_values
    );
    db.close().await?;
    let db = Db::open(dir.path(), options).await?;
    check(&db, &model).await?;
    db.close().await
}

/// Most values overwritten, half the keys deleted: while a snapshot from before is open it
/// reads the old values (their files stay); once it ends, compaction moves the few live values
/// out of the old file (mostly garbage now) and the file is gone from the disk.
async fn garbage_is_reclaimed_once_no_snapshot_sees_it(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = options(&driver).l0_compaction_trigger(2);
    let db = Db::open(dir.path(), options.clone()).await?;
    let mut model = BTreeMap::new();
    put_round(&db, &mut model, 0..300, 0).await?;
    db.flush().await?;
    db.compact().await?;
    let first_files = files_with(dir.path(), "blob");
    assert!(!first_files.is_empty());
    let first_bytes = bytes_of(&first_files);
    let old_model = model.clone();
    let old = db.begin(TxnOptions::default().read_only(true))?;

    // Two thirds overwritten, half deleted: the first file keeps a few live values (odd keys
    // from 200 on), which must move before it can go.
    put_round(&db, &mut model, 0..200, 1).await?;
    let txn = db.begin(TxnOptions::default())?;
    for i in (0..300).step_by(2) {
        txn.delete(key(i))?;
        model.remove(&key(i));
    }
    txn.commit().await?;
    db.flush().await?;
    db.compact_full().await?;
    check(&db, &model).await?;
    // The snapshot still reads the overwritten values: their files are kept.
    for i in (0..300).step_by(13) {
        assert_eq!(old.get(key(i)).await?, old_model.get(&key(i)).cloned());
    }
    for f in &first_files {
        assert!(f.exists(), "{} removed under an open snapshot", f.display());
    }
    drop(old);

    // Nothing sees the old values now: a full compaction drops their pointers, and the files
    // mostly garbage have their live values moved out and go.
    db.compact_full().await?;
    // A rewrite in place may follow in the background: the files go once nothing points in.
    let mut stats = db.stats();
    for _ in 0..200 {
        if first_files.iter().all(|f| !f.exists()) {
            break;
        }
        db.compact().await?;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        stats = db.stats();
    }
    for f in &first_files {
        assert!(
            !f.exists(),
            "{} left after compaction: {stats}",
            f.display()
        );
    }
    check(&db, &model).await?;
    let live: u64 = model
        .values()
        .filter(|v| v.len() as u64 >= THRESHOLD)
        .map(|v| v.len() as u64)
        .sum();
    let on_disk = bytes_of(&files_with(dir.path(), "blob"));
    assert!(
        on_disk <= live * 2 + (64 << 10),
        "value logs {on_disk} B on disk for {live} B live (first round wrote {first_bytes}): {stats}"
    );
    assert!(
        stats.value_log_garbage_bytes * 2 <= stats.value_log_bytes,
        "{stats}"
    );
    assert_eq!(stats.value_log_bytes, on_disk, "{stats}");
    db.close().await?;
    let db = Db::open(dir.path(), options).await?;
    check(&db, &model).await?;
    assert!(db.check_integrity(|_| {}).await?.is_sound());
    db.close().await
}

/// A byte flipped inside a separated value: a read of it fails with `Corruption` naming the
/// value-log file and the value's offset (never returns a wrong value), other keys read fine,
/// and the check reports the file.
async fn damage_in_a_value_log_file_is_corruption_naming_it(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = options(&driver);
    let db = Db::open(dir.path(), options.clone()).await?;
    let mut model = BTreeMap::new();
    put_round(&db, &mut model, 0..30, 0).await?;
    db.flush().await?;
    db.close().await?;
    let blob = files_with(dir.path(), "blob")
        .pop()
        .expect("a value-log file");
    let mut bytes = std::fs::read(&blob)?;
    // Key 1's value is the first separated one (key 0's is small): it starts after the
    // 24-byte header.
    bytes[24 + 100] ^= 0x40;
    std::fs::write(&blob, &bytes)?;
    let db = Db::open(dir.path(), options).await?;
    match db.view(|txn| async move { txn.get(key(1)).await }).await {
        Err(Error::Corruption { file, offset, kind }) => {
            assert_eq!(file, blob);
            assert_eq!(offset, 24);
            assert!(
                matches!(kind, CorruptionKind::BadValueLog { .. }),
                "{kind:?}"
            );
        }
        other => panic!("a damaged value must be refused: {other:?}"),
    }
    for i in [0u32, 2, 3, 29] {
        let got = db.view(|txn| async move { txn.get(key(i)).await }).await?;
        assert_eq!(got, model.get(&key(i)).cloned());
    }
    let report = db.check_integrity(|_| {}).await?;
    assert!(!report.is_sound());
    assert!(report.problems.iter().any(|p| p.file == blob), "{report:?}");
    db.close().await
}

/// A value-log file no table names (a flush that crashed before its edit) is removed at open;
/// one a table names, missing, is refused naming it.
async fn orphan_value_log_files_are_removed_and_missing_ones_refused(
    driver: IoDriver,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = options(&driver);
    let db = Db::open(dir.path(), options.clone()).await?;
    let mut model = BTreeMap::new();
    put_round(&db, &mut model, 0..10, 0).await?;
    db.flush().await?;
    db.close().await?;
    let orphan = dir.path().join("tables").join("000000009999.blob");
    std::fs::write(&orphan, b"half a value log from a crashed flush")?;
    let db = Db::open(dir.path(), options.clone()).await?;
    assert!(!orphan.exists(), "an orphan is removed at open");
    check(&db, &model).await?;
    db.close().await?;
    let live = files_with(dir.path(), "blob")
        .pop()
        .expect("a value-log file");
    std::fs::remove_file(&live)?;
    match Db::open(dir.path(), options).await {
        Err(Error::Corruption {
            file,
            kind: CorruptionKind::BadManifest { .. },
            ..
        }) => assert_eq!(file, live),
        other => panic!("a missing value-log file must be refused: {other:?}"),
    }
    Ok(())
}

/// A checkpoint taken while values are in value-log files opens as a store with every value,
/// and keeps them after the source rewrites and removes its own files.
async fn a_checkpoint_carries_the_value_log_files(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = options(&driver).l0_compaction_trigger(2);
    let db = Db::open(dir.path(), options.clone()).await?;
    let mut model = BTreeMap::new();
    put_round(&db, &mut model, 0..200, 0).await?;
    db.flush().await?;
    put_round(&db, &mut model, 100..150, 1).await?;
    let copy = dir.path().join("copy");
    db.checkpoint(&copy).await?;
    assert!(!files_with(&copy, "blob").is_empty());
    // The source moves on: its files are rewritten and removed.
    put_round(&db, &mut model.clone(), 0..200, 2).await?;
    db.flush().await?;
    db.compact_full().await?;
    db.close().await?;
    let copy_db = Db::open(&copy, options).await?;
    check(&copy_db, &model).await?;
    assert!(copy_db.check_integrity(|_| {}).await?.is_sound());
    copy_db.close().await
}

/// Written with separation on, reopened with it off: values read back, and a full compaction
/// brings them into the tables and removes the value-log files.
async fn separation_turned_off_brings_values_back_into_the_tables(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    let mut model = BTreeMap::new();
    put_round(&db, &mut model, 0..120, 0).await?;
    db.flush().await?;
    db.close().await?;
    assert!(!files_with(dir.path(), "blob").is_empty());
    let off = options(&driver).value_separation_threshold_bytes(0);
    let db = Db::open(dir.path(), off.clone()).await?;
    check(&db, &model).await?;
    db.compact_full().await?;
    check(&db, &model).await?;
    assert_eq!(db.stats().value_log_files, 0);
    db.close().await?;
    assert!(files_with(dir.path(), "blob").is_empty());
    let db = Db::open(dir.path(), off).await?;
    check(&db, &model).await?;
    db.close().await
}

/// The disk fails (EIO from then on) at every operation number of a flush and a compaction
/// that write value-log files: after the disk heals and the store reopens, every acknowledged
/// commit is there and no file is left that nothing names.
async fn eio_at_every_step_of_a_flush_and_compaction_with_separated_values_loses_nothing(
    driver: IoDriver,
) -> Result<()> {
    let mut k = 0;
    loop {
        let dir = tempfile::tempdir()?;
        // A low garbage ratio: the compaction moves the first flush's live values too.
        let options = options(&driver)
            .l0_compaction_trigger(2)
            .value_log_garbage_ratio(0.1);
        let db = Db::open(dir.path(), options.clone()).await?;
        let mut model = BTreeMap::new();
        put_round(&db, &mut model, 0..40, 0).await?;
        db.flush().await?;
        put_round(&db, &mut model, 20..60, 1).await?;
        driver.fail_after(k);
        let flushed = db.flush().await;
        let compacted = db.compact().await;
        driver.clear_failures();
        let _ = db.close().await;
        drop(db);
        let db = Db::open(dir.path(), options.clone()).await?;
        check(&db, &model).await?;
        db.flush().await?;
        db.compact().await?;
        check(&db, &model).await?;
        assert!(db.check_integrity(|_| {}).await?.is_sound());
        db.close().await?;
        // Reopened once more: the files on disk are those the tables name.
        let db = Db::open(dir.path(), options).await?;
        let named = db.stats().value_log_files as usize;
        db.close().await?;
        assert_eq!(files_with(dir.path(), "blob").len(), named, "k = {k}");
        if flushed.is_ok() && compacted.is_ok() {
            assert!(
                k > 8,
                "a flush and a compaction take more than {k} operations"
            );
            return Ok(());
        }
        k += 1;
    }
}
