//! The key-value store's LSM tree under its transactions: memtables flushed to tables (by size
//! and by `Db::flush`), L0 compacted into L1, reads served from tables, the wal cut below what
//! the tables hold, and all of it across reopen. On both I/O backends.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use futures::TryStreamExt;
use ringtide::kv::{Compression, Db, DbOptions, DbStats, TxnOptions};
use ringtide::platform::IoDriver;
use ringtide::{CorruptionKind, Error, Result};

both_backends!(
    reads_after_flush_and_compaction_match_a_model,
    small_write_buffers_flush_in_the_background_and_cut_the_wal,
    open_snapshots_see_their_versions_across_flush_and_compaction,
    prepared_transactions_survive_flushes_and_wal_cuts,
    orphan_tables_are_removed_and_missing_ones_refused,
    eio_at_every_step_of_a_flush_and_compaction_loses_nothing,
    levels_below_l1_fill_and_reads_stay_right,
    damage_in_a_table_is_found_by_the_check_and_never_read_as_data,
    a_checkpoint_under_concurrent_writes_opens_and_equals_the_store_at_its_seq,
    compact_range_reclaims_space_and_keeps_what_snapshots_see,
    a_deleted_bucket_is_reclaimed_by_compaction_once_no_snapshot_sees_it,
    compact_full_never_merges_tables_across_one_it_just_wrote,
    compressed_levels_read_back_across_flush_compaction_and_reopen,
    a_store_keeps_the_shape_of_levels_it_was_written_with,
);

fn options(driver: &IoDriver) -> DbOptions {
    DbOptions::default()
        .driver(driver.clone())
        .wal_segment_size_bytes(64 << 10)
        .write_buffer_bytes(64 << 10)
        .table_target_bytes(64 << 10)
        .block_size_bytes(512)
}

fn key(i: u32) -> Bytes {
    Bytes::from(format!("key{i:06}"))
}

fn val(i: u32, round: u32) -> Bytes {
    Bytes::from(format!(
        "value-{i}-{round}-{}",
        "x".repeat((i % 7) as usize * 10)
    ))
}

/// Every root key and value, forward and backward, checked against `model`; and point reads.
async fn check(db: &Db, model: &BTreeMap<Bytes, Bytes>) -> Result<()> {
    let txn = db.begin(TxnOptions::default().read_only(true))?;
    let all: Vec<(Bytes, Bytes)> = txn.scan::<&[u8]>(..).try_collect().await?;
    let expected: Vec<(Bytes, Bytes)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(all.len(), expected.len(), "scan length");
    assert!(all == expected, "forward scan differs from the model");
    let mut rev: Vec<(Bytes, Bytes)> = txn.scan::<&[u8]>(..).rev().try_collect().await?;
    rev.reverse();
    assert!(rev == expected, "reverse scan differs from the model");
    // A bounded range, both ways.
    let (lo, hi) = (key(100), key(260));
    let mid: Vec<(Bytes, Bytes)> = txn.scan(lo.clone()..hi.clone()).try_collect().await?;
    let want: Vec<(Bytes, Bytes)> = model
        .range(lo.clone()..hi.clone())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(mid == want, "range scan differs");
    let mut mid_rev: Vec<(Bytes, Bytes)> = txn.scan(lo..hi).rev().try_collect().await?;
    mid_rev.reverse();
    assert!(mid_rev == want, "reverse range scan differs");
    for i in (0..4000).step_by(7) {
        assert_eq!(
            txn.get(key(i)).await?,
            model.get(&key(i)).cloned(),
            "get {i}"
        );
    }
    let mut cursor = txn.cursor();
    let mut walked = Vec::new();
    let mut at = cursor.seek(key(500)).await?;
    while let Some((k, _)) = at {
        walked.push(k);
        if walked.len() == 20 {
            break;
        }
        at = cursor.next().await?;
    }
    let want: Vec<Bytes> = model
        .range(key(500)..)
        .take(20)
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(walked, want, "cursor walk");
    txn.rollback().await
}

async fn reads_after_flush_and_compaction_match_a_model(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = options(&driver).write_buffer_bytes(4 << 20);
    let mut db = Db::open(dir.path(), options.clone()).await?;
    let mut model = BTreeMap::new();
    for round in 0..4u32 {
        let txn = db.begin(TxnOptions::default())?;
        for i in (round..1000).step_by(1 + round as usize) {
            if (i + round) % 5 == 0 {
                txn.delete(key(i))?;
                model.remove(&key(i));
            } else {
                txn.put(key(i), val(i, round))?;
                model.insert(key(i), val(i, round));
            }
        }
        txn.commit().await?;
        check(&db, &model).await?;
        db.flush().await?;
        let stats = db.stats();
        assert_eq!(stats.memtable_versions, 0, "flushed: {stats}");
        check(&db, &model).await?;
        if round == 2 {
            db.compact().await?;
            let stats = db.stats();
            assert_eq!(stats.levels[0].tables, 0, "compacted: {stats}");
            assert!(stats.levels[1].tables >= 1, "compacted: {stats}");
            check(&db, &model).await?;
        }
        db.close().await?;
        db = Db::open(dir.path(), options.clone()).await?;
        check(&db, &model).await?;
    }
    // Everything deleted: the compaction into the bottom level keeps no tombstone.
    let txn = db.begin(TxnOptions::default())?;
    for k in model.keys() {
        txn.delete(k.clone())?;
    }
    txn.commit().await?;
    model.clear();
    db.flush().await?;
    db.compact().await?;
    check(&db, &model).await?;
    // L1 is tiered: the deletes are a run of their own over the older ones, until the level
    // is merged whole, which a full compaction does at once.
    db.compact_full().await?;
    check(&db, &model).await?;
    let stats = db.stats();
    assert_eq!(tables(&stats), 0, "nothing left to keep: {stats}");
    db.close().await
}

/// Checks `db` against `model`, closes it, opens the store again and checks it again.
async fn check_after_reopen(
    db: Db,
    dir: &Path,
    options: DbOptions,
    model: &BTreeMap<Bytes, Bytes>,
) -> Result<()> {
    check(&db, model).await?;
    db.close().await?;
    let db = Db::open(dir, options).await?;
    check(&db, model).await?;
    db.close().await
}

fn tables(stats: &DbStats) -> u64 {
    stats.levels.iter().map(|l| l.tables).sum()
}

async fn small_write_buffers_flush_in_the_background_and_cut_the_wal(
    driver: IoDriver,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = options(&driver).sync_policy(ringtide::wal::SyncPolicy::None);
    let db = Db::open(dir.path(), options.clone()).await?;
    let mut tasks = Vec::new();
    for t in 0..4u32 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..300u32 {
                let n = t * 1000 + i;
                db.update(|txn| async move {
                    txn.put(key(n), val(n, 0))?;
                    txn.put(key(n + 500), val(n, 1))?;
                    Ok(())
                })
                .await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await.expect("task")?;
    }
    let mut model = BTreeMap::new();
    for t in 0..4u32 {
        for i in 0..300u32 {
            let n = t * 1000 + i;
            model.insert(key(n), val(n, 0));
            model.insert(key(n + 500), val(n, 1));
        }
    }
    check(&db, &model).await?;
    // The flushes run in the background: wait for them (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let stats = db.stats();
        if stats.flushes >= 2 && stats.wal.first_lsn.0 > 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "background flushes cut the wal: {stats}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    db.close().await?;
    let db = Db::open(dir.path(), options).await?;
    check(&db, &model).await?;
    db.close().await
}

async fn open_snapshots_see_their_versions_across_flush_and_compaction(
    driver: IoDriver,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    let txn = db.begin(TxnOptions::default())?;
    for i in 0..100 {
        txn.put(key(i), val(i, 0))?;
    }
    txn.commit().await?;
    let old = db.begin(TxnOptions::default().read_only(true))?;
    for round in 1..4 {
        let txn = db.begin(TxnOptions::default())?;
        for i in 0..100 {
            if i % 3 == 0 {
                txn.delete(key(i))?;
            } else {
                txn.put(key(i), val(i, round))?;
            }
        }
        txn.commit().await?;
        db.flush().await?;
    }
    db.compact().await?;
    for i in 0..100 {
        assert_eq!(
            old.get(key(i)).await?,
            Some(val(i, 0)),
            "old snapshot, key {i}"
        );
    }
    let seen: Vec<(Bytes, Bytes)> = old.scan::<&[u8]>(..).try_collect().await?;
    assert_eq!(seen.len(), 100);
    old.rollback().await?;
    let now = db.begin(TxnOptions::default().read_only(true))?;
    for i in 0..100 {
        let want = (i % 3 != 0).then(|| val(i, 3));
        assert_eq!(now.get(key(i)).await?, want, "new snapshot, key {i}");
    }
    now.rollback().await?;
    db.close().await
}

async fn prepared_transactions_survive_flushes_and_wal_cuts(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = options(&driver);
    let db = Db::open(dir.path(), options.clone()).await?;
    let prepared = db.begin(TxnOptions::default())?;
    prepared.put("held", "by 2pc")?;
    prepared.prepare().await?;
    let id = prepared.id();
    drop(prepared);
    // Enough commits to fill several memtables and wal segments.
    for round in 0..6u32 {
        let txn = db.begin(TxnOptions::default())?;
        for i in 0..400 {
            txn.put(key(i), val(i, round))?;
        }
        txn.commit().await?;
        db.flush().await?;
    }
    db.close().await?;
    let db = Db::open(dir.path(), options.clone()).await?;
    let listed = db.prepared();
    assert_eq!(listed.len(), 1, "the prepared transaction is restored");
    assert_eq!(listed[0].id(), id);
    listed[0].commit().await?;
    for round in 6..10u32 {
        let txn = db.begin(TxnOptions::default())?;
        for i in 0..400 {
            txn.put(key(i), val(i, round))?;
        }
        txn.commit().await?;
        db.flush().await?;
    }
    db.close().await?;
    let db = Db::open(dir.path(), options).await?;
    assert!(db.prepared().is_empty());
    let txn = db.begin(TxnOptions::default().read_only(true))?;
    assert_eq!(txn.get("held").await?, Some(Bytes::from("by 2pc")));
    assert_eq!(txn.get(key(5)).await?, Some(val(5, 9)));
    txn.rollback().await?;
    // Transaction ids are not reused after the records that carried them were cut.
    let next = db.begin(TxnOptions::default())?;
    assert!(next.id() > id);
    next.rollback().await?;
    db.close().await
}

async fn orphan_tables_are_removed_and_missing_ones_refused(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = options(&driver);
    let db = Db::open(dir.path(), options.clone()).await?;
    db.update(|txn| async move {
        txn.put("a", "1")?;
        Ok(())
    })
    .await?;
    db.flush().await?;
    db.close().await?;
    let tables = dir.path().join("tables");
    let orphan = tables.join("000000009999.sst");
    std::fs::write(&orphan, b"half a table from a crashed flush")?;
    let db = Db::open(dir.path(), options.clone()).await?;
    assert!(!orphan.exists(), "an orphan is removed at open");
    db.close().await?;
    let live = only_table(&tables);
    std::fs::remove_file(&live)?;
    match Db::open(dir.path(), options).await {
        Err(Error::Corruption {
            file,
            kind: CorruptionKind::BadManifest { .. },
            ..
        }) => assert_eq!(file, live),
        other => panic!("a missing table must be refused: {other:?}"),
    }
    Ok(())
}

fn only_table(dir: &Path) -> std::path::PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("tables dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.pop().expect("one")
}

/// The disk fails (EIO from then on) at every operation number of a flush and a compaction in
/// turn: the call fails or succeeds, and after the disk heals and the store reopens every
/// acknowledged commit is there, nothing else, and the store flushes again.
async fn eio_at_every_step_of_a_flush_and_compaction_loses_nothing(driver: IoDriver) -> Result<()> {
    let mut k = 0;
    loop {
        let dir = tempfile::tempdir()?;
        let options = options(&driver).l0_compaction_trigger(2);
        let db = Db::open(dir.path(), options.clone()).await?;
        let mut model = BTreeMap::new();
        for round in 0..2u32 {
            let txn = db.begin(TxnOptions::default())?;
            for i in (round * 50)..(round * 50 + 120) {
                txn.put(key(i), val(i, round))?;
                model.insert(key(i), val(i, round));
            }
            txn.commit().await?;
            if round == 0 {
                db.flush().await?;
            }
        }
        driver.fail_after(k);
        let flushed = db.flush().await;
        let compacted = db.compact().await;
        driver.clear_failures();
        let _ = db.close().await;
        drop(db);
        let db = Db::open(dir.path(), options).await?;
        check(&db, &model).await?;
        db.flush().await?;
        db.compact().await?;
        check(&db, &model).await?;
        db.close().await?;
        if flushed.is_ok() && compacted.is_ok() {
            // The failure point is past the whole flush and compaction: every step was hit.
            assert!(
                k > 5,
                "a flush and a compaction take more than {k} operations"
            );
            return Ok(());
        }
        k += 1;
    }
}

/// Small level targets: compactions move data through L1 into L2 and below, under overwrites
/// and deletes, every read matching the model, before and after reopen; once with every level
/// leveled (merges and moves of whole tables, round robin), once with L1–L2 size-tiered (runs
/// added whole, levels merged whole into the next, L3 leveled), where the check also reads
/// every table back and checks the runs' seq ranges.
async fn levels_below_l1_fill_and_reads_stay_right(driver: IoDriver) -> Result<()> {
    for tiered in [0, 2] {
        let dir = tempfile::tempdir()?;
        let options = options(&driver)
            .l0_compaction_trigger(2)
            .l1_target_bytes(64 << 10)
            .level_size_multiplier(2)
            .level_count(5)
            .tiered_levels(tiered);
        let db = Db::open(dir.path(), options.clone()).await?;
        let mut model = BTreeMap::new();
        for round in 0..12u32 {
            write_round(&db, &mut model, round).await?;
            db.flush().await?;
            if round % 4 == 3 {
                check(&db, &model).await?;
            }
        }
        db.compact().await?;
        let stats = db.stats();
        let deep = stats.levels.iter().skip(if tiered == 0 { 2 } else { 3 });
        assert!(stats.compactions >= 4, "{stats}");
        assert!(
            deep.map(|l| l.tables).sum::<u64>() > 0,
            "data reached the levels below: {stats}"
        );
        let report = db.check_integrity(|_| {}).await?;
        assert!(report.is_sound(), "{report:?}");
        check_after_reopen(db, dir.path(), options, &model).await?;
    }
    Ok(())
}

/// A byte flipped in a table's data region: the store still opens (data blocks are checked when
/// read), `check_integrity` reports the table and the block's offset, and every read returns
/// the right value or a `Corruption` naming the table: never a wrong value.
async fn damage_in_a_table_is_found_by_the_check_and_never_read_as_data(
    driver: IoDriver,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = options(&driver).block_cache_bytes(0);
    let db = Db::open(dir.path(), options.clone()).await?;
    let mut model = BTreeMap::new();
    let txn = db.begin(TxnOptions::default())?;
    for i in 0..1000 {
        txn.put(key(i), val(i, 0))?;
        model.insert(key(i), val(i, 0));
    }
    txn.commit().await?;
    db.flush().await?;
    let report = db.check_integrity(|_| {}).await?;
    assert!(report.is_sound(), "{report:?}");
    assert_eq!(report.entries, 1000);
    db.close().await?;
    let table = only_table(&dir.path().join("tables"));
    let mut bytes = std::fs::read(&table)?;
    let at = bytes.len() / 3;
    bytes[at] ^= 0x40;
    std::fs::write(&table, &bytes)?;

    let db = Db::open(dir.path(), options).await?;
    let report = db.check_integrity(|_| {}).await?;
    assert_eq!(report.problems.len(), 1, "{report:?}");
    let problem = &report.problems[0];
    assert_eq!(problem.file, table);
    assert!(problem.offset <= at as u64, "{problem}");
    let txn = db.begin(TxnOptions::default().read_only(true))?;
    let mut failed = 0;
    for i in 0..1000 {
        match txn.get(key(i)).await {
            Ok(v) => assert_eq!(v, model.get(&key(i)).cloned(), "key {i}"),
            Err(Error::Corruption { file, .. }) => {
                assert_eq!(file, table);
                failed += 1;
            }
            Err(e) => panic!("key {i}: {e}"),
        }
    }
    assert!(
        failed > 0 && failed < 100,
        "{failed} reads hit the damaged block"
    );
    txn.rollback().await?;
    db.close().await
}

/// Four tasks commit (each its own keys, every commit's seq logged) while a checkpoint is
/// taken: the checkpoint opens as a store, and holds exactly the commits at or below the seq it
/// returned (replayed from the logs in seq order), its own files apart from the store's.
async fn a_checkpoint_under_concurrent_writes_opens_and_equals_the_store_at_its_seq(
    driver: IoDriver,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = options(&driver).sync_policy(ringtide::wal::SyncPolicy::None);
    let db = Db::open(dir.path().join("db"), options.clone()).await?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for t in 0..4u32 {
        let (db, stop) = (db.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            // (seq, key, value) of every acknowledged commit.
            let mut log = Vec::new();
            let mut round = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || round < 20 {
                let txn = db.begin(TxnOptions::default())?;
                let mut writes = Vec::new();
                for j in 0..5u32 {
                    let k = key(t * 10_000 + (round * 5 + j) % 400);
                    let v = val(t, round);
                    txn.put(k.clone(), v.clone())?;
                    writes.push((k, v));
                }
                let info = txn.commit().await?;
                log.push((info.seq.get(), writes));
                round += 1;
                tokio::task::yield_now().await;
            }
            Ok::<_, Error>(log)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let target = dir.path().join("checkpoint");
    let seq = db.checkpoint(&target).await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut commits = Vec::new();
    for w in writers {
        commits.extend(w.await.expect("task")?);
    }
    commits.sort_by_key(|(s, _)| *s);
    let mut model = BTreeMap::new();
    for (s, writes) in &commits {
        if *s <= seq.get() {
            model.extend(writes.iter().cloned());
        }
    }
    assert!(!model.is_empty());
    // A checkpoint into a directory that exists is refused.
    assert!(db.checkpoint(&target).await.is_err());
    db.close().await?;
    let copy = Db::open(&target, options.clone()).await?;
    assert_eq!(copy.committed_seq(), seq);
    check(&copy, &model).await?;
    let report = copy.check_integrity(|_| {}).await?;
    assert!(report.is_sound(), "{report:?}");
    // The copy is a store of its own: it takes writes, survives a reopen.
    copy.update(|txn| async move {
        txn.put("after", "checkpoint")?;
        Ok(())
    })
    .await?;
    copy.close().await?;
    let copy = Db::open(&target, options).await?;
    let txn = copy.begin(TxnOptions::default().read_only(true))?;
    assert_eq!(txn.get("after").await?, Some(Bytes::from("checkpoint")));
    txn.rollback().await?;
    copy.close().await
}

fn table_bytes(stats: &DbStats) -> u64 {
    stats.levels.iter().map(|l| l.bytes).sum()
}

/// Overwrites and deletes spread over several levels; `compact_range` on a part of the keys,
/// then on a bucket, then `compact_full`: reads stay right, the whole store ends in one level
/// with the garbage gone, and an old snapshot still reads what it saw.
async fn compact_range_reclaims_space_and_keeps_what_snapshots_see(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = options(&driver)
        .l0_compaction_trigger(2)
        .l1_target_bytes(64 << 10)
        .level_size_multiplier(2)
        .level_count(5);
    let db = Db::open(dir.path(), options.clone()).await?;
    let mut model = BTreeMap::new();
    let write_round =
        |txn: &ringtide::kv::Txn, model: &mut BTreeMap<Bytes, Bytes>, round: u32| -> Result<()> {
            for i in 0..3000u32 {
                if round > 0 && i % 2 == 0 {
                    txn.delete(key(i))?;
                    model.remove(&key(i));
                } else {
                    txn.put(key(i), val(i, round))?;
                    model.insert(key(i), val(i, round));
                }
            }
            Ok(())
        };
    let txn = db.begin(TxnOptions::default())?;
    write_round(&txn, &mut model, 0)?;
    let side = txn.create_bucket("side").await?;
    side.put("b1", "v1")?;
    side.put("b2", "v2")?;
    side.delete("b2")?;
    txn.commit().await?;
    db.flush().await?;
    db.compact().await?;
    let old_model = model.clone();
    let old = db.begin(TxnOptions::default().read_only(true))?;
    for round in 1..4u32 {
        let txn = db.begin(TxnOptions::default())?;
        write_round(&txn, &mut model, round)?;
        txn.commit().await?;
        db.flush().await?;
    }

    // A part of the root bucket's keys.
    db.compact_range(key(1000)..key(2000)).await?;
    check(&db, &model).await?;
    // A bucket's keys (the bucket's own versions only).
    let txn = db.begin(TxnOptions::default())?;
    let bucket = txn.bucket("side").await?.expect("created above");
    db.compact_bucket_range::<&[u8]>(&bucket, ..).await?;
    assert_eq!(bucket.get("b1").await?, Some(Bytes::from("v1")));
    txn.rollback().await?;

    // Everything, while `old` still holds its snapshot: what it saw stays.
    let before = db.stats();
    db.compact_full().await?;
    let stats = db.stats();
    let nonempty: Vec<usize> = (0..stats.levels.len())
        .filter(|&n| stats.levels[n].tables > 0)
        .collect();
    assert_eq!(nonempty.len(), 1, "one level holds everything: {stats}");
    assert!((stats.space_amplification - 1.0).abs() < 1e-9, "{stats}");
    check(&db, &model).await?;
    for i in (0..3000).step_by(13) {
        assert_eq!(
            old.get(key(i)).await?,
            old_model.get(&key(i)).cloned(),
            "old {i}"
        );
    }
    drop(old);

    // With no snapshot left, a full compaction drops every overwritten version and tombstone.
    db.compact_full().await?;
    let after = db.stats();
    assert!(
        table_bytes(&after) < table_bytes(&before) * 2 / 3,
        "garbage reclaimed: {} B before, {} B after",
        table_bytes(&before),
        table_bytes(&after)
    );
    check_after_reopen(db, dir.path(), options, &model).await
}

/// A bucket (with one nested in it) deleted: its keys stay while a snapshot from before the
/// delete is open, and a compaction after it ends drops them all, nested bucket and catalog
/// entries included. A bucket made again under the name is empty.
async fn a_deleted_bucket_is_reclaimed_by_compaction_once_no_snapshot_sees_it(
    driver: IoDriver,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = options(&driver);
    let db = Db::open(dir.path(), options.clone()).await?;
    let txn = db.begin(TxnOptions::default())?;
    txn.put("root-key", "stays")?;
    let big = txn.create_bucket("big").await?;
    let inner = big.create_bucket("inner").await?;
    for i in 0..2000u32 {
        big.put(key(i), val(i, 0))?;
        inner.put(key(i), val(i, 1))?;
    }
    big.next_sequence().await?;
    txn.commit().await?;
    db.compact_full().await?;
    let full = table_bytes(&db.stats());

    let old = db.begin(TxnOptions::default().read_only(true))?;
    db.update(|txn| async move { txn.delete_bucket("big").await })
        .await?;
    db.compact_full().await?;
    let old_big = old.bucket("big").await?.expect("the old snapshot sees it");
    let old_inner = old_big.bucket("inner").await?.expect("and the nested one");
    for i in (0..2000).step_by(97) {
        assert_eq!(old_big.get(key(i)).await?, Some(val(i, 0)));
        assert_eq!(old_inner.get(key(i)).await?, Some(val(i, 1)));
    }
    assert!(
        table_bytes(&db.stats()) >= full / 2,
        "kept while a snapshot sees it"
    );
    drop((old_big, old_inner, old));

    db.compact_full().await?;
    let after = table_bytes(&db.stats());
    assert!(
        after < full / 20,
        "reclaimed: {full} B before, {after} B after"
    );
    let txn = db.begin(TxnOptions::default())?;
    assert!(txn.bucket("big").await?.is_none());
    assert_eq!(txn.get("root-key").await?, Some(Bytes::from("stays")));
    let again = txn.create_bucket("big").await?;
    assert_eq!(again.get(key(5)).await?, None);
    assert!(again.buckets().await?.is_empty());
    assert_eq!(again.next_sequence().await?, 1);
    txn.commit().await?;
    db.close().await?;
    let db = Db::open(dir.path(), options).await?;
    assert!(db.check_integrity(|_| {}).await?.is_sound());
    db.view(|txn| async move {
        assert!(
            txn.bucket("big")
                .await?
                .expect("made again")
                .buckets()
                .await?
                .is_empty()
        );
        Ok(())
    })
    .await?;
    db.close().await
}

/// Bytes flushes and compactions wrote.
fn written(stats: &DbStats) -> u64 {
    stats.bytes_flushed + stats.bytes_compacted_out
}

/// Commits one round of puts and deletes over keys 0..4000, into `model` too.
async fn write_round(db: &Db, model: &mut BTreeMap<Bytes, Bytes>, round: u32) -> Result<()> {
    let txn = db.begin(TxnOptions::default())?;
    for j in 0..1000u32 {
        let i = (j * 7 + round * 131) % 4000;
        if (i + round).is_multiple_of(9) {
            txn.delete(key(i))?;
            model.remove(&key(i));
        } else {
            txn.put(key(i), val(i, round))?;
            model.insert(key(i), val(i, round));
        }
    }
    txn.commit().await?;
    Ok(())
}

/// Compression per level: by default flushes (L0) are stored uncompressed and compactions
/// (L1 and below) lz4; then every level lz4 but L1; reads match the model throughout, across
/// reopens with other compression options (each block says how it is stored), and
/// `check_integrity` reads every table back clean. A level past `level_count` is refused.
async fn compressed_levels_read_back_across_flush_compaction_and_reopen(
    driver: IoDriver,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let refused = Db::open(
        dir.path(),
        options(&driver)
            .level_count(4)
            .level_compression(4, Compression::Lz4),
    )
    .await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument { .. })),
        "{refused:?}"
    );
    // The defaults: L0 uncompressed, L1 and below lz4. No compaction but those asked for.
    let defaults = options(&driver)
        .write_buffer_bytes(4 << 20)
        .l0_compaction_trigger(64);
    let db = Db::open(dir.path(), defaults.clone()).await?;
    let mut model = BTreeMap::new();
    for round in 0..2 {
        write_round(&db, &mut model, round).await?;
        db.flush().await?;
    }
    let stats = db.stats();
    assert_eq!(stats.levels[0].tables, 2, "{stats}");
    assert_eq!(stats.bytes_written_uncompressed, written(&stats), "{stats}");
    check(&db, &model).await?;
    db.compact().await?;
    let stats = db.stats();
    assert_eq!(stats.levels[0].tables, 0, "{stats}");
    let l1 = stats.levels[1].bytes;
    assert!(l1 > 0, "{stats}");
    // What the compaction wrote is lz4: well under its uncompressed size.
    let saved = stats.bytes_written_uncompressed - written(&stats);
    assert!(saved > l1 / 2, "saved {saved} of L1's {l1} bytes: {stats}");
    check(&db, &model).await?;
    db.close().await?;

    // Every level lz4 but L1; small levels, so that data moves through L1 into L2 and L3.
    let mixed = options(&driver)
        .compression(Compression::Lz4)
        .level_compression(1, Compression::None)
        .l0_compaction_trigger(2)
        .l1_target_bytes(64 << 10)
        .level_size_multiplier(2)
        .level_count(4);
    let db = Db::open(dir.path(), mixed.clone()).await?;
    check(&db, &model).await?;
    let before = db.stats();
    db.flush().await?;
    for round in 2..10 {
        write_round(&db, &mut model, round).await?;
        db.flush().await?;
    }
    db.compact().await?;
    let stats = db.stats();
    let deep = stats.levels.iter().skip(2).map(|l| l.tables).sum::<u64>();
    assert!(deep > 0, "data reached L2 or below: {stats}");
    assert!(stats.compactions > before.compactions, "{stats}");
    assert!(
        stats.bytes_written_uncompressed > written(&stats),
        "{stats}"
    );
    check(&db, &model).await?;
    let report = db.check_integrity(|_| {}).await?;
    assert!(report.is_sound(), "{report:?}");
    assert!(report.tables >= 2, "{report:?}");
    db.close().await?;

    // Reopened without compression: every table reads as it was written.
    let none = options(&driver)
        .compression(Compression::None)
        .level_count(4);
    for options in [none, mixed] {
        let db = Db::open(dir.path(), options).await?;
        check(&db, &model).await?;
        let report = db.check_integrity(|_| {}).await?;
        assert!(report.is_sound(), "{report:?}");
        db.close().await?;
    }
    Ok(())
}

/// L1 holds three tables, A < M < B; an L0 table overlaps M only. `compact_full` compacts L0
/// with M into a new table N of L1, then rewrites the last level's other tables: A and B apart
/// (one table from both would span N's range and hide it from reads). Found in review.
async fn compact_full_never_merges_tables_across_one_it_just_wrote(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    let mut model = BTreeMap::new();
    for (prefix, round) in [("a", 0u32), ("z", 0), ("m", 0), ("m", 1)] {
        let txn = db.begin(TxnOptions::default())?;
        for i in 0..40u32 {
            let (k, v) = (
                Bytes::from(format!("{prefix}{i:03}")),
                Bytes::from(format!("{prefix}-{i}-{round}")),
            );
            txn.put(k.clone(), v.clone())?;
            model.insert(k, v);
        }
        txn.commit().await?;
        db.flush().await?;
        if round == 0 {
            db.compact().await?;
        }
    }
    let stats = db.stats();
    assert_eq!(
        (stats.levels[0].tables, stats.levels[1].tables),
        (1, 3),
        "{stats}"
    );
    db.compact_full().await?;
    let txn = db.begin(TxnOptions::default().read_only(true))?;
    for (k, v) in &model {
        assert_eq!(txn.get(k.clone()).await?.as_ref(), Some(v), "{k:?}");
    }
    let all: Vec<(Bytes, Bytes)> = txn.scan::<&[u8]>(..).try_collect().await?;
    assert_eq!(all.len(), model.len());
    drop(txn);
    db.close().await
}

/// The levels' shape (`tiered_levels`) is recorded by the store's first open: a store written
/// leveled and then tiered, each reopened with the default, is read with its own shape (values
/// right, the runs or tables kept in their order); asked explicitly for the other shape, the
/// open is refused with `InvalidArgument` naming the option, and the store opens again after.
/// (A review found stale reads when a store was read with another shape than it was written
/// with.)
async fn a_store_keeps_the_shape_of_levels_it_was_written_with(driver: IoDriver) -> Result<()> {
    for (written, other) in [(0, 2), (2, 0)] {
        let dir = tempfile::tempdir()?;
        let shaped = |tiered: Option<usize>| {
            let o = options(&driver)
                .l0_compaction_trigger(2)
                .l1_target_bytes(64 << 10)
                .level_size_multiplier(2)
                .level_count(5);
            match tiered {
                Some(t) => o.tiered_levels(t),
                None => o,
            }
        };
        let db = Db::open(dir.path(), shaped(Some(written))).await?;
        let mut model = BTreeMap::new();
        for round in 0..6u32 {
            write_round(&db, &mut model, round).await?;
            db.flush().await?;
        }
        db.close().await?;
        match Db::open(dir.path(), shaped(Some(other))).await {
            Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, "tiered_levels"),
            other => panic!("another shape must be refused: {other:?}"),
        }
        // The default shape gives way to the store's.
        let db = Db::open(dir.path(), shaped(None)).await?;
        for round in 6..10u32 {
            write_round(&db, &mut model, round).await?;
            db.flush().await?;
        }
        db.compact().await?;
        check(&db, &model).await?;
        assert!(db.check_integrity(|_| {}).await?.is_sound());
        check_after_reopen(db, dir.path(), shaped(Some(written)), &model).await?;
    }
    Ok(())
}
