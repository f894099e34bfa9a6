//! Regressions of the key-value store found by its model test: fixed sequences on both
//! backends.

use std::ops::Bound;

use bytes::Bytes;
use futures::TryStreamExt;
use ringtide::kv::{Db, DbOptions, TxnOptions};
use ringtide::platform::IoDriver;

type Entry = (Bytes, Bytes);

mod common;

both_backends!(scans_of_inverted_ranges_are_empty,);

fn fixed_options(driver: &IoDriver) -> DbOptions {
    DbOptions::default()
        .driver(driver.clone())
        .wal_segment_size_bytes(1 << 20)
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
