//! Scans and cursors over every kind of source the tree merges: the active memtable, L0 tables,
//! and several sorted levels, with a key's versions (values and tombstones) spread over them,
//! read forward and backward from many bounds and compared with a `BTreeMap` model, at the
//! latest snapshot and at an older one; and scans and cursors that a flush and a compaction
//! overtake mid-way, which must go on seeing their snapshot (the tables they read stay on disk
//! until they are dropped). On both I/O backends.
//!
//! Method: a fixed pseudo-random sequence of queries (bounds on keys present and absent, both
//! directions, partial consumption) and cursor walks (first, last, seek, next, prev in runs and
//! turns), each checked entry by entry against the model.

mod common;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use ringtide::Result;
use ringtide::kv::{Db, DbOptions, Txn, TxnOptions};
use ringtide::platform::IoDriver;

both_backends!(
    scans_and_cursors_across_memtable_l0_and_levels_match_a_model,
    a_scan_and_a_cursor_overtaken_by_a_flush_and_a_compaction_keep_their_snapshot,
);

type Model = BTreeMap<Bytes, Bytes>;

/// Keys `key000000`, `key000002`, …: the odd numbers are absent, as bounds between keys.
const KEYS: u32 = 6000;

fn key(i: u32) -> Bytes {
    Bytes::from(format!("key{i:06}"))
}

/// A value naming its key and round, then filler that does not compress (the levels below L0
/// are lz4-compressed, and the test needs bytes enough to fill several levels).
fn val(i: u32, round: u32) -> Bytes {
    let mut v = format!("v-{i}-{round}-").into_bytes();
    let mut rng = Rng(u64::from(i) << 32 | u64::from(round) | 1 << 63);
    v.extend((0..60 + (i % 5) * 20).map(|_| b'a' + (rng.next() % 26) as u8));
    Bytes::from(v)
}

fn options(driver: &IoDriver) -> DbOptions {
    DbOptions::default()
        .driver(driver.clone())
        .wal_segment_size_bytes(64 << 10)
        .write_buffer_bytes(4 << 20)
        .table_target_bytes(64 << 10)
        .block_size_bytes(512)
        .l1_target_bytes(64 << 10)
        .level_size_multiplier(2)
        .level_count(5)
}

/// A small deterministic generator (xorshift), so that a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Puts and deletes over every `step`-th even key from `first`: a value in round `round`, or a
/// tombstone for one key in `delete_every`.
async fn write(
    db: &Db,
    model: &mut Model,
    round: u32,
    first: u32,
    step: u32,
    delete_every: u32,
) -> Result<()> {
    let txn = db.begin(TxnOptions::default())?;
    for i in (first..KEYS).step_by(step as usize) {
        let i = i & !1;
        if (i / 2 + round).is_multiple_of(delete_every) {
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

fn bound(rng: &mut Rng) -> Bound<Bytes> {
    let k = key(rng.below(u64::from(KEYS) + 20) as u32);
    match rng.below(5) {
        0 => Bound::Unbounded,
        1 | 2 => Bound::Included(k),
        _ => Bound::Excluded(k),
    }
}

/// `count` scans of random ranges in random directions, each consumed for a random number of
/// entries (or to the end), checked against `model`.
async fn check_scans(txn: &Txn, model: &Model, rng: &mut Rng, count: usize) -> Result<()> {
    for n in 0..count {
        let (lower, upper) = (bound(rng), bound(rng));
        let reverse = rng.below(2) == 1;
        let take = match rng.below(4) {
            0 => usize::MAX,
            _ => 1 + rng.below(120) as usize,
        };
        let empty = match (&lower, &upper) {
            (Bound::Included(l), Bound::Included(u)) => l > u,
            (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(u))
            | (Bound::Excluded(l), Bound::Included(u)) => l >= u,
            _ => false,
        };
        let want: Vec<(Bytes, Bytes)> = if empty {
            Vec::new()
        } else if reverse {
            let r = model.range((lower.clone(), upper.clone())).rev();
            r.take(take).map(|(k, v)| (k.clone(), v.clone())).collect()
        } else {
            let r = model.range((lower.clone(), upper.clone()));
            r.take(take).map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let scan = txn.scan((lower.clone(), upper.clone()));
        let scan = if reverse { scan.rev() } else { scan };
        let got: Vec<(Bytes, Bytes)> = scan.take(take).try_collect().await?;
        assert!(
            got == want,
            "scan {n}: {lower:?}..{upper:?} reverse {reverse} take {take}: {} entries, want {} \
             (first {:?}, want {:?})",
            got.len(),
            want.len(),
            got.first().map(|(k, _)| k),
            want.first().map(|(k, _)| k),
        );
    }
    Ok(())
}

/// `count` cursor walks of random moves (runs one way, turns, seeks), each move checked
/// against `model`.
async fn check_cursors(txn: &Txn, model: &Model, rng: &mut Rng, count: usize) -> Result<()> {
    for walk in 0..count {
        let mut cursor = txn.cursor();
        let mut current: Option<Bytes> = None;
        for step in 0..40 {
            let after = current.clone().map_or(Bound::Unbounded, Bound::Excluded);
            let (name, got, want) = match rng.below(12) {
                0 => ("first", cursor.first().await?, model.iter().next()),
                1 => ("last", cursor.last().await?, model.iter().next_back()),
                2 | 3 => {
                    let k = key(rng.below(u64::from(KEYS) + 20) as u32);
                    let want = model.range(k.clone()..).next();
                    ("seek", cursor.seek(&k).await?, want)
                }
                4..=8 => (
                    "next",
                    cursor.next().await?,
                    model.range((after, Bound::Unbounded)).next(),
                ),
                _ => (
                    "prev",
                    cursor.prev().await?,
                    model.range((Bound::Unbounded, after)).next_back(),
                ),
            };
            let want = want.map(|(k, v)| (k.clone(), v.clone()));
            assert_eq!(
                got, want,
                "walk {walk} step {step}: {name} from {current:?}"
            );
            if let Some((k, _)) = got {
                current = Some(k);
            }
        }
    }
    Ok(())
}

async fn scans_and_cursors_across_memtable_l0_and_levels_match_a_model(
    driver: IoDriver,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut model = Model::new();
    // Sorted levels: rounds flushed and compacted down.
    let db = Db::open(dir.path(), options(&driver).l0_compaction_trigger(2)).await?;
    for round in 0..6 {
        write(
            &db,
            &mut model,
            round,
            round * 3,
            2 + round % 3 * 2,
            7 + round,
        )
        .await?;
        db.flush().await?;
    }
    db.compact().await?;
    db.close().await?;
    // L0 tables over them, left uncompacted, each overwriting and deleting some keys.
    let options = options(&driver)
        .l0_compaction_trigger(64)
        .l0_stop_writes_trigger(128);
    let db = Db::open(dir.path(), options).await?;
    write(&db, &mut model, 10, 0, 6, 3).await?;
    db.flush().await?;
    let old_model = model.clone();
    let old = db.begin(TxnOptions::default().read_only(true))?;
    write(&db, &mut model, 11, 2, 10, 2).await?;
    db.flush().await?;
    // The active memtable over everything: overwrites, deletes, and keys new to the store.
    write(&db, &mut model, 12, 4, 14, 3).await?;
    let txn = db.begin(TxnOptions::default())?;
    for i in (1..KEYS).step_by(97) {
        txn.put(key(i), val(i, 13))?;
        model.insert(key(i), val(i, 13));
    }
    txn.commit().await?;
    let stats = db.stats();
    assert!(stats.memtable_versions > 0, "{stats}");
    assert!(stats.levels[0].tables >= 2, "L0 tables: {stats}");
    let sorted = stats.levels.iter().skip(1).filter(|l| l.tables > 0).count();
    assert!(sorted >= 2, "two sorted levels or more: {stats}");

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let txn = db.begin(TxnOptions::default().read_only(true))?;
    check_scans(&txn, &model, &mut rng, 300).await?;
    check_cursors(&txn, &model, &mut rng, 30).await?;
    // The older snapshot: the second L0 table and the memtable are newer than it.
    check_scans(&old, &old_model, &mut rng, 150).await?;
    check_cursors(&old, &old_model, &mut rng, 15).await?;
    drop((txn, old));
    db.close().await
}

/// The table files in `dir/tables`.
fn table_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("tables"))
        .expect("tables dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .collect();
    files.sort();
    files
}

async fn a_scan_and_a_cursor_overtaken_by_a_flush_and_a_compaction_keep_their_snapshot(
    driver: IoDriver,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = options(&driver)
        .l0_compaction_trigger(64)
        .l0_stop_writes_trigger(128);
    let db = Db::open(dir.path(), options).await?;
    let mut model = Model::new();
    write(&db, &mut model, 0, 0, 2, 11).await?;
    db.flush().await?;
    db.compact().await?;
    write(&db, &mut model, 1, 0, 6, 4).await?;
    db.flush().await?;
    write(&db, &mut model, 2, 2, 10, 3).await?;

    let txn = db.begin(TxnOptions::default().read_only(true))?;
    let want: Vec<(Bytes, Bytes)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut forward = txn.scan::<&[u8]>(..);
    let mut backward = txn.scan::<&[u8]>(..).rev();
    let mut got = Vec::new();
    let mut got_back = Vec::new();
    for _ in 0..100 {
        got.push(forward.next().await.expect("an entry")?);
        got_back.push(backward.next().await.expect("an entry")?);
    }
    let mut cursor = txn.cursor();
    let middle = want[want.len() / 2].0.clone();
    assert_eq!(cursor.seek(&middle).await?.map(|(k, _)| k), Some(middle));
    let mut at = want.len() / 2;
    for _ in 0..10 {
        at += 1;
        assert_eq!(cursor.next().await?, Some(want[at].clone()));
    }
    let before = table_files(dir.path());

    // Every key rewritten or deleted, flushed, and everything compacted into new tables.
    let mut later = model.clone();
    for round in 3..5 {
        write(&db, &mut later, round, 0, 2, 5).await?;
        db.flush().await?;
    }
    db.compact().await?;
    let after = table_files(dir.path());
    assert!(
        after.iter().any(|f| !before.contains(f)),
        "the compaction wrote new tables: {before:?} → {after:?}"
    );
    assert!(
        before.iter().all(|f| f.exists()),
        "tables the open scans read stay until they are dropped"
    );

    // The scans and the cursor go on over the tables they started with.
    while let Some(entry) = forward.next().await {
        got.push(entry?);
    }
    while let Some(entry) = backward.next().await {
        got_back.push(entry?);
    }
    got_back.reverse();
    assert!(got == want, "forward scan across the compaction");
    assert!(got_back == want, "reverse scan across the compaction");
    for _ in 0..10 {
        at += 1;
        assert_eq!(cursor.next().await?, Some(want[at].clone()), "cursor next");
    }
    for _ in 0..15 {
        at -= 1;
        assert_eq!(cursor.prev().await?, Some(want[at].clone()), "cursor prev");
    }
    // A new scan of the same transaction reads the new tables, at the same snapshot.
    let again: Vec<(Bytes, Bytes)> = txn.scan::<&[u8]>(..).try_collect().await?;
    assert!(again == want, "a new scan at the old snapshot");
    let now = db.begin(TxnOptions::default().read_only(true))?;
    let latest: Vec<(Bytes, Bytes)> = now.scan::<&[u8]>(..).try_collect().await?;
    let want_latest: Vec<(Bytes, Bytes)> =
        later.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert!(
        latest == want_latest,
        "a new transaction sees the new writes"
    );

    // Dropped, they let the replaced tables go: only the tree's own remain.
    drop((forward, backward, cursor));
    let live = |db: &Db| db.stats().levels.iter().map(|l| l.tables).sum::<u64>() as usize;
    let mut waited = Duration::ZERO;
    while table_files(dir.path()).len() != live(&db) {
        assert!(
            waited < Duration::from_secs(10),
            "replaced tables still on disk after their readers were dropped: {:?}, {}",
            table_files(dir.path()),
            db.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    assert!(
        before.iter().any(|f| !f.exists()),
        "some table the scans read was replaced: {before:?}"
    );
    drop((txn, now));
    db.close().await
}
