//! Regressions of the key-value store found by its model test: fixed sequences on both
//! backends.

use std::ops::Bound;

use bytes::Bytes;
use futures::TryStreamExt;
use ringtide::kv::{Db, DbOptions, Isolation, TxnOptions};
use ringtide::platform::IoDriver;
use ringtide::{ConflictKind, Error};

type Entry = (Bytes, Bytes);

mod common;

both_backends!(
    scans_of_inverted_ranges_are_empty,
    handles_of_deleted_buckets_refuse_every_use,
    writes_into_buckets_deleted_concurrently_conflict,
);

fn fixed_options(driver: &IoDriver) -> DbOptions {
    DbOptions::default()
        .driver(driver.clone())
        .wal_segment_size_bytes(1 << 20)
}

fn is_not_found<T: std::fmt::Debug>(r: ringtide::Result<T>) -> bool {
    matches!(r, Err(Error::BucketNotFound { .. }))
}

/// A range that holds no key (inverted, or empty at one point) scans as empty, in either
/// direction. It used to panic in `BTreeMap::range` when the transaction had writes of its
/// own in the keyspace (and, recorded, would have panicked in the commit's validation).
async fn scans_of_inverted_ranges_are_empty(driver: IoDriver) -> ringtide::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), fixed_options(&driver)).await?;
    let txn = db.begin(TxnOptions::default())?;
    txn.put("b", "committed")?;
    txn.commit().await?;

    let txn = db.begin(TxnOptions::default())?;
    txn.put("a", "own")?;
    txn.put("c", "own")?;
    let bucket = txn.create_bucket("t").await?;
    bucket.put("b", "own")?;
    let (a, b, c) = (Bytes::from("a"), Bytes::from("b"), Bytes::from("c"));
    let empty = [
        (Bound::Included(c.clone()), Bound::Excluded(a.clone())),
        (Bound::Included(c.clone()), Bound::Included(a.clone())),
        (Bound::Excluded(c), Bound::Unbounded),
        (Bound::Unbounded, Bound::Excluded(a)),
        (Bound::Excluded(b.clone()), Bound::Excluded(b.clone())),
        (Bound::Included(b.clone()), Bound::Excluded(b.clone())),
        (Bound::Excluded(b.clone()), Bound::Included(b)),
    ];
    for range in empty {
        for rev in [false, true] {
            let scan = |s: ringtide::kv::Scan| if rev { s.rev() } else { s };
            let root: Vec<Entry> = scan(txn.scan(range.clone())).try_collect().await?;
            assert_eq!(root, vec![], "{range:?} rev {rev}");
            let inner: Vec<Entry> = scan(bucket.scan(range.clone())).try_collect().await?;
            assert_eq!(inner, vec![], "{range:?} rev {rev}");
        }
    }
    // A serializable commit validates what it scanned.
    txn.commit().await?;
    db.close().await
}

/// Every use of a handle of a bucket the transaction deleted, or of a bucket nested in it, is
/// refused. Scans, cursors, sequences and nested buckets used to go on as if it were there
/// (nested buckets created through it were left orphaned in the catalog).
async fn handles_of_deleted_buckets_refuse_every_use(driver: IoDriver) -> ringtide::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), fixed_options(&driver)).await?;
    let txn = db.begin(TxnOptions::default())?;
    let t = txn.create_bucket("t").await?;
    t.put("k", "v")?;
    t.next_sequence().await?;
    t.create_bucket("n").await?.put("k", "v")?;
    txn.commit().await?;

    for isolation in [Isolation::Snapshot, Isolation::Serializable] {
        let txn = db.begin(TxnOptions::default().isolation(isolation))?;
        let t = txn.bucket("t").await?.expect("t");
        let n = t.bucket("n").await?.expect("t/n");
        txn.delete_bucket("t").await?;
        assert!(is_not_found(t.get("k").await));
        assert!(is_not_found(t.put("k", "w")));
        assert!(is_not_found(
            t.scan::<&[u8]>(..).try_collect::<Vec<_>>().await
        ));
        assert!(is_not_found(
            t.scan_prefix("k").rev().try_collect::<Vec<_>>().await
        ));
        assert!(is_not_found(t.cursor().first().await));
        assert!(is_not_found(t.next_sequence().await));
        assert!(is_not_found(t.buckets().await));
        assert!(is_not_found(t.bucket("n").await));
        assert!(is_not_found(t.create_bucket("m").await));
        assert!(is_not_found(t.create_bucket_if_not_exists("n").await));
        assert!(is_not_found(t.delete_bucket("n").await));
        // Deleted with its parent.
        assert!(is_not_found(n.get("k").await));
        assert!(is_not_found(n.put("k2", "w")));
        assert!(is_not_found(
            n.scan::<&[u8]>(..).try_collect::<Vec<_>>().await
        ));
        assert!(is_not_found(n.cursor().last().await));
        assert!(is_not_found(n.next_sequence().await));
        assert!(txn.bucket("t").await?.is_none());
        // Nothing but the deletion is written: its catalog entry and its reclaim marker.
        assert_eq!(txn.commit().await?.writes, 2);
        // Back for the next round.
        let txn = db.begin(TxnOptions::default())?;
        let t = txn.create_bucket("t").await?;
        t.create_bucket("n").await?;
        txn.commit().await?;
    }
    db.close().await
}

/// A write into a bucket conflicts with a concurrent deletion of the bucket or of a bucket it
/// is nested in, at either isolation level, whether the write is a key, a sequence taken or a
/// nested bucket created or deleted. Under snapshot isolation only a key written straight into
/// the deleted bucket used to conflict: the others committed into a bucket no longer there.
async fn writes_into_buckets_deleted_concurrently_conflict(
    driver: IoDriver,
) -> ringtide::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), fixed_options(&driver)).await?;
    let mut round = 0;
    for isolation in [Isolation::Snapshot, Isolation::Serializable] {
        for write in [
            "key in nested",
            "sequence",
            "nested bucket",
            "nested deletion",
        ] {
            round += 1;
            let name = format!("t{round}");
            let setup = db.begin(TxnOptions::default())?;
            setup.create_bucket(&name).await?.create_bucket("n").await?;
            setup.commit().await?;

            let txn = db.begin(TxnOptions::default().isolation(isolation))?;
            let t = txn.bucket(&name).await?.expect("created");
            match write {
                "key in nested" => t.bucket("n").await?.expect("n").put("k", "v")?,
                "sequence" => drop(t.next_sequence().await?),
                "nested bucket" => drop(t.create_bucket("m").await?),
                _ => t.delete_bucket("n").await?,
            }
            // An unrelated change in the bucket commits in between (alone, it does not
            // conflict: see the end), then the deletion.
            let other = db.begin(TxnOptions::default())?;
            let ot = other.bucket(&name).await?.expect("created");
            ot.create_bucket("o").await?;
            ot.put("other", "v")?;
            other.commit().await?;
            let deleter = db.begin(TxnOptions::default())?;
            deleter.delete_bucket(&name).await?;
            deleter.commit().await?;
            match txn.commit().await {
                Err(Error::Conflict {
                    kind: ConflictKind::ReadWrite,
                    ..
                }) => {}
                other => panic!("{isolation:?}, {write}: {other:?}"),
            }
        }
    }
    // Without the deletion, the same writes commit (snapshot isolation).
    let setup = db.begin(TxnOptions::default())?;
    setup.create_bucket("u").await?.create_bucket("n").await?;
    setup.commit().await?;
    let txn = db.begin(TxnOptions::default().isolation(Isolation::Snapshot))?;
    let u = txn.bucket("u").await?.expect("created");
    u.bucket("n").await?.expect("n").put("k", "v")?;
    u.next_sequence().await?;
    u.create_bucket("m").await?;
    let other = db.begin(TxnOptions::default())?;
    let ou = other.bucket("u").await?.expect("created");
    ou.create_bucket("o").await?;
    ou.put("other", "v")?;
    other.commit().await?;
    txn.commit().await?;
    db.close().await
}
