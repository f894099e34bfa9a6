//! The key-value store's public contract, on both I/O backends: transactions and their
//! isolation, buckets, scans and cursors, limits, timeouts, prepared transactions, recovery.

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use ringtide::kv::{CursorEntry, Db, DbOptions, Isolation, TxnOptions};
use ringtide::platform::IoDriver;
use ringtide::wal::SyncPolicy;
use ringtide::{ConflictKind, Error, Result};

both_backends!(
    a_prepared_transactions_bucket_id_is_not_given_again_after_reopen,
    reads_see_the_snapshot_and_own_writes,
    commits_survive_reopen,
    snapshot_first_committer_wins,
    snapshot_allows_write_skew_serializable_refuses_it,
    serializable_detects_phantoms_in_scanned_ranges,
    read_only_transactions_never_conflict,
    scans_merge_own_writes_in_both_directions,
    cursors_move_both_ways_over_own_writes,
    entry_cursors_walk_keys_and_nested_buckets,
    buckets_nest_and_never_see_each_other,
    deleting_a_bucket_hides_everything_in_it,
    bucket_ids_are_never_reused_after_reopen,
    next_sequence_is_monotonic_and_transactional,
    limits_and_bad_input_are_errors_that_lose_nothing,
    finished_transactions_refuse_every_call,
    expired_transactions_refuse_calls_and_release_their_snapshot,
    update_retries_conflicts_until_it_commits,
    concurrent_commits_are_all_visible_and_dense,
    prepared_transactions_hold_keys_and_survive_reopen,
    prepared_serializable_reads_stay_held_after_reopen,
    a_prepared_transactions_buckets_cannot_be_deleted_until_it_is_resolved,
    prepared_transactions_sharing_a_bucket_each_hold_it,
    second_opener_waits_then_gets_locked,
    read_only_open_refuses_writes,
    large_transactions_span_several_records_and_recover,
);

fn options(driver: &IoDriver) -> DbOptions {
    DbOptions::default()
        .driver(driver.clone())
        .wal_segment_size_bytes(1 << 20)
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn serializable() -> TxnOptions {
    TxnOptions::default()
}

fn snapshot() -> TxnOptions {
    TxnOptions::default().isolation(Isolation::Snapshot)
}

async fn put(db: &Db, key: &str, value: &str) -> Result<()> {
    let txn = db.begin(serializable())?;
    txn.put(b(key), b(value))?;
    txn.commit().await?;
    Ok(())
}

async fn get(db: &Db, key: &str) -> Result<Option<Bytes>> {
    let txn = db.begin(TxnOptions::default().read_only(true))?;
    txn.get(key).await
}

fn conflict_kind(e: &Error) -> Option<ConflictKind> {
    match e {
        Error::Conflict { kind, .. } => Some(*kind),
        _ => None,
    }
}

async fn reads_see_the_snapshot_and_own_writes(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    put(&db, "a", "1").await?;
    let reader = db.begin(serializable())?;
    put(&db, "a", "2").await?;
    put(&db, "b", "3").await?;
    assert_eq!(
        reader.get("a").await?,
        Some(b("1")),
        "the snapshot of its begin"
    );
    assert_eq!(reader.get("b").await?, None);
    reader.put(b("b"), b("own"))?;
    assert_eq!(reader.get("b").await?, Some(b("own")), "its own write");
    reader.delete(b("a"))?;
    assert_eq!(reader.get("a").await?, None);
    assert!(!reader.contains("a").await?);
    reader.rollback().await?;
    assert_eq!(get(&db, "a").await?, Some(b("2")));
    assert_eq!(get(&db, "b").await?, Some(b("3")));
    db.close().await
}

async fn commits_survive_reopen(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    for i in 0..100 {
        put(&db, &format!("k{i:03}"), &format!("v{i}")).await?;
    }
    let txn = db.begin(serializable())?;
    txn.delete(b("k050"))?;
    let info = txn.commit().await?;
    assert_eq!(info.seq.get(), 101);
    let before = db.committed_seq();
    db.close().await?;
    drop(db);
    let db = Db::open(dir.path(), options(&driver)).await?;
    assert_eq!(db.committed_seq(), before);
    assert_eq!(get(&db, "k007").await?, Some(b("v7")));
    assert_eq!(get(&db, "k050").await?, None);
    let txn = db.begin(serializable())?;
    let n = txn.scan::<&[u8]>(..).count().await;
    assert_eq!(n, 99);
    txn.put(b("after"), b("reopen"))?;
    assert_eq!(
        txn.commit().await?.seq.get(),
        102,
        "seqs resume after the last"
    );
    db.close().await
}

async fn snapshot_first_committer_wins(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    let t1 = db.begin(snapshot())?;
    let t2 = db.begin(snapshot())?;
    t1.put(b("x"), b("1"))?;
    t2.put(b("x"), b("2"))?;
    t1.commit().await?;
    let err = t2.commit().await.unwrap_err();
    assert_eq!(conflict_kind(&err), Some(ConflictKind::WriteWrite), "{err}");
    assert!(err.to_string().contains("\"x\""), "names the key: {err}");
    assert!(matches!(t2.get("x").await, Err(Error::TxnFinished { .. })));
    assert_eq!(get(&db, "x").await?, Some(b("1")));
    assert_eq!(db.stats().conflicts_snapshot, 1);
    db.close().await
}

/// The classic write skew: x + y ≥ 1 is kept by each transaction reading both and zeroing
/// one. Snapshot isolation lets both commit; serializable refuses the second.
async fn snapshot_allows_write_skew_serializable_refuses_it(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    for isolation in [Isolation::Snapshot, Isolation::Serializable] {
        put(&db, "x", "1").await?;
        put(&db, "y", "1").await?;
        let opts = TxnOptions::default().isolation(isolation);
        let t1 = db.begin(opts.clone())?;
        let t2 = db.begin(opts)?;
        for t in [&t1, &t2] {
            assert_eq!(t.get("x").await?, Some(b("1")));
            assert_eq!(t.get("y").await?, Some(b("1")));
        }
        t1.put(b("x"), b("0"))?;
        t2.put(b("y"), b("0"))?;
        t1.commit().await?;
        let second = t2.commit().await;
        match isolation {
            Isolation::Snapshot => {
                second?;
                assert_eq!(get(&db, "x").await?, Some(b("0")));
                assert_eq!(get(&db, "y").await?, Some(b("0")), "write skew under SI");
            }
            _ => {
                let err = second.unwrap_err();
                assert_eq!(conflict_kind(&err), Some(ConflictKind::ReadWrite), "{err}");
                assert_eq!(get(&db, "y").await?, Some(b("1")));
            }
        }
    }
    db.close().await
}

async fn serializable_detects_phantoms_in_scanned_ranges(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    put(&db, "user:1", "a").await?;
    let t1 = db.begin(serializable())?;
    let seen: Vec<_> = t1.scan_prefix("user:").try_collect().await?;
    assert_eq!(seen.len(), 1);
    t1.put(b("count"), b("1"))?;
    // A key written outside the range does not conflict; one inside does.
    put(&db, "zzz", "x").await?;
    let t_ok = db.begin(serializable())?;
    let _: Vec<_> = t_ok.scan_prefix("user:").try_collect().await?;
    t_ok.put(b("count2"), b("1"))?;
    put(&db, "user:2", "b").await?;
    let err = t1.commit().await.unwrap_err();
    assert_eq!(conflict_kind(&err), Some(ConflictKind::Phantom), "{err}");
    assert!(matches!(t_ok.commit().await, Err(Error::Conflict { .. })));
    let t2 = db.begin(serializable())?;
    let _: Vec<_> = t2.scan(&b"a"[..]..&b"b"[..]).try_collect().await?;
    t2.put(b("other"), b("1"))?;
    put(&db, "user:3", "c").await?;
    t2.commit().await?;
    db.close().await
}

async fn read_only_transactions_never_conflict(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    put(&db, "a", "1").await?;
    let ro = db.begin(TxnOptions::default().read_only(true))?;
    assert_eq!(ro.get("a").await?, Some(b("1")));
    put(&db, "a", "2").await?;
    assert_eq!(ro.get("a").await?, Some(b("1")));
    assert!(matches!(ro.put(b("a"), b("3")), Err(Error::TxnReadOnly)));
    let info = ro.commit().await?;
    assert_eq!(info.writes, 0);
    // A read-write serializable transaction that wrote nothing commits too.
    let rw = db.begin(serializable())?;
    rw.get("a").await?;
    put(&db, "a", "3").await?;
    rw.commit().await?;
    db.close().await
}

async fn scans_merge_own_writes_in_both_directions(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    let txn = db.begin(serializable())?;
    for i in (0..1000).step_by(2) {
        txn.put(format!("k{i:04}"), format!("v{i}"))?;
    }
    txn.commit().await?;
    let txn = db.begin(serializable())?;
    for i in (1..1000).step_by(2) {
        txn.put(format!("k{i:04}"), format!("own{i}"))?;
    }
    for i in (0..1000).step_by(10) {
        txn.delete(format!("k{i:04}"))?;
    }
    txn.put(b("k0002"), b("overwritten"))?;
    let mut expected: Vec<(String, String)> = Vec::new();
    for i in 0..1000 {
        if i % 10 == 0 {
            continue;
        }
        let v = if i == 2 {
            "overwritten".to_string()
        } else if i % 2 == 1 {
            format!("own{i}")
        } else {
            format!("v{i}")
        };
        expected.push((format!("k{i:04}"), v));
    }
    let as_strings = |v: Vec<(Bytes, Bytes)>| -> Vec<(String, String)> {
        v.into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8(k.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect()
    };
    let forward = as_strings(txn.scan::<&[u8]>(..).try_collect().await?);
    assert_eq!(forward, expected);
    let backward = as_strings(txn.scan::<&[u8]>(..).rev().try_collect().await?);
    let mut rev = expected.clone();
    rev.reverse();
    assert_eq!(backward, rev);
    let mid = as_strings(
        txn.scan(&b"k0100"[..]..=&b"k0199"[..])
            .try_collect()
            .await?,
    );
    assert_eq!(
        mid,
        expected
            .iter()
            .filter(|(k, _)| k.as_str() >= "k0100" && k.as_str() <= "k0199")
            .cloned()
            .collect::<Vec<_>>()
    );
    let prefix = as_strings(txn.scan_prefix("k09").rev().try_collect().await?);
    assert_eq!(prefix.len(), 90);
    assert_eq!(prefix[0].0, "k0999");
    txn.commit().await?;
    db.close().await
}

/// A short form of a cursor entry: `k:name` or `b:name`.
fn entry(e: Option<CursorEntry>) -> Option<String> {
    e.map(|e| match e {
        CursorEntry::Key { key, .. } => format!("k:{}", String::from_utf8_lossy(&key)),
        CursorEntry::Bucket { name } => format!("b:{}", String::from_utf8_lossy(&name)),
        _ => unreachable!("no other entry"),
    })
}

async fn entry_cursors_walk_keys_and_nested_buckets(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    db.update(|txn| async move {
        for k in ["a", "m", "z"] {
            txn.put(b(k), b("v"))?;
        }
        let bk = txn.create_bucket("b").await?;
        bk.put(b("k"), b("v"))?;
        bk.create_bucket("inner").await?;
        txn.create_bucket("m").await?;
        Ok(())
    })
    .await?;
    let txn = db.begin(serializable())?;
    let mut c = txn.entry_cursor();
    let mut forward = Vec::new();
    while let Some(e) = entry(c.next().await?) {
        forward.push(e);
    }
    // A key before a bucket of the same name; a nested bucket's own entries stay inside it.
    assert_eq!(forward, ["k:a", "b:b", "k:m", "b:m", "k:z"]);
    let mut back = Vec::new();
    let mut c = txn.entry_cursor();
    while let Some(e) = entry(c.prev().await?) {
        back.push(e);
    }
    assert_eq!(back, ["k:z", "b:m", "k:m", "b:b", "k:a"]);
    let mut c = txn.entry_cursor();
    assert_eq!(entry(c.seek("m").await?).as_deref(), Some("k:m"));
    assert_eq!(entry(c.next().await?).as_deref(), Some("b:m"));
    assert_eq!(entry(c.prev().await?).as_deref(), Some("k:m"));
    assert_eq!(entry(c.seek("c").await?).as_deref(), Some("k:m"));
    assert_eq!(entry(c.last().await?).as_deref(), Some("k:z"));
    assert_eq!(entry(c.first().await?).as_deref(), Some("k:a"));
    assert_eq!(entry(c.prev().await?), None);
    let inner = txn.bucket("b").await?.expect("created");
    let mut c = inner.entry_cursor();
    assert_eq!(entry(c.first().await?).as_deref(), Some("b:inner"));
    assert_eq!(entry(c.next().await?).as_deref(), Some("k:k"));
    assert_eq!(entry(c.next().await?), None);
    // The transaction's own bucket changes, as any write.
    txn.create_bucket("c").await?;
    txn.delete_bucket("m").await?;
    txn.delete(b("a"))?;
    let mut c = txn.entry_cursor();
    let mut own = Vec::new();
    while let Some(e) = entry(c.next().await?) {
        own.push(e);
    }
    assert_eq!(own, ["b:b", "b:c", "k:m", "k:z"]);
    txn.rollback().await?;
    // Serializable: a bucket created where a cursor passed is a phantom.
    let reader = db.begin(serializable())?;
    let mut c = reader.entry_cursor();
    while c.next().await?.is_some() {}
    reader.put(b("seen"), b("all"))?;
    db.update(|txn| async move { txn.create_bucket("d").await.map(drop) })
        .await?;
    let err = reader.commit().await.unwrap_err();
    assert_eq!(conflict_kind(&err), Some(ConflictKind::Phantom), "{err}");
    db.close().await
}

async fn cursors_move_both_ways_over_own_writes(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    let txn = db.begin(serializable())?;
    for k in ["b", "d", "f"] {
        txn.put(b(k), b(k))?;
    }
    txn.commit().await?;
    let txn = db.begin(serializable())?;
    txn.put(b("a"), b("own"))?;
    txn.delete(b("d"))?;
    txn.put(b("e"), b("own"))?;
    let mut c = txn.cursor();
    let key = |e: Option<(Bytes, Bytes)>| e.map(|(k, _)| String::from_utf8(k.to_vec()).unwrap());
    assert_eq!(key(c.first().await?), Some("a".into()));
    assert_eq!(key(c.next().await?), Some("b".into()));
    assert_eq!(key(c.next().await?), Some("e".into()), "d is deleted here");
    assert_eq!(key(c.next().await?), Some("f".into()));
    assert_eq!(key(c.next().await?), None);
    assert_eq!(key(c.last().await?), Some("f".into()));
    assert_eq!(key(c.prev().await?), Some("e".into()));
    assert_eq!(key(c.prev().await?), Some("b".into()));
    assert_eq!(key(c.seek("c").await?), Some("e".into()));
    assert_eq!(key(c.seek("g").await?), None);
    assert_eq!(key(c.seek("b").await?), Some("b".into()));
    assert_eq!(key(c.prev().await?), Some("a".into()));
    assert_eq!(key(c.prev().await?), None);
    db.close().await
}

async fn buckets_nest_and_never_see_each_other(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    let txn = db.begin(serializable())?;
    let users = txn.create_bucket("users").await?;
    let eu = users.create_bucket("eu").await?;
    let deep = eu.create_bucket("a").await?.create_bucket("b").await?;
    assert_eq!(deep.path(), "/users/eu/a/b");
    txn.put(b("k"), b("root"))?;
    users.put(b("k"), b("users"))?;
    eu.put(b("k"), b("eu"))?;
    deep.put(b("k"), b("deep"))?;
    assert!(matches!(
        txn.create_bucket("users").await,
        Err(Error::BucketExists { .. })
    ));
    let again = txn.create_bucket_if_not_exists("users").await?;
    assert_eq!(again.id(), users.id());
    txn.commit().await?;
    db.close().await?;
    drop(db);

    let db = Db::open(dir.path(), options(&driver)).await?;
    let txn = db.begin(serializable())?;
    assert_eq!(txn.get("k").await?, Some(b("root")));
    let users = txn.bucket("users").await?.expect("users");
    assert_eq!(users.get("k").await?, Some(b("users")));
    let eu = users.bucket("eu").await?.expect("eu");
    assert_eq!(eu.get("k").await?, Some(b("eu")));
    let deep = eu.bucket("a").await?.unwrap().bucket("b").await?.unwrap();
    assert_eq!(deep.get("k").await?, Some(b("deep")));
    assert_eq!(txn.buckets().await?, vec![b("users")]);
    assert_eq!(users.buckets().await?, vec![b("eu")]);
    let root: Vec<_> = txn.scan::<&[u8]>(..).try_collect().await?;
    assert_eq!(
        root,
        vec![(b("k"), b("root"))],
        "buckets are not keys of the root"
    );
    let in_users: Vec<_> = users.scan::<&[u8]>(..).try_collect().await?;
    assert_eq!(in_users, vec![(b("k"), b("users"))]);
    assert!(txn.bucket("nope").await?.is_none());
    db.close().await
}

async fn deleting_a_bucket_hides_everything_in_it(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    let txn = db.begin(serializable())?;
    let big = txn.create_bucket("big").await?;
    for i in 0..10_000 {
        big.put(format!("{i:08}"), "x")?;
    }
    big.create_bucket("child").await?.put(b("c"), b("c"))?;
    txn.commit().await?;

    let reader = db.begin(serializable())?;
    let txn = db.begin(serializable())?;
    let handle = txn.bucket("big").await?.unwrap();
    txn.delete_bucket("big").await?;
    assert!(matches!(
        handle.get("00000001").await,
        Err(Error::BucketNotFound { .. })
    ));
    assert!(matches!(
        txn.delete_bucket("big").await,
        Err(Error::BucketNotFound { .. })
    ));
    let info = txn.commit().await?;
    assert_eq!(
        info.writes, 2,
        "O(1): the catalog entry and a reclaim marker"
    );
    assert!(db.begin(serializable())?.bucket("big").await?.is_none());
    // An older snapshot still sees it.
    let old = reader.bucket("big").await?.expect("in the old snapshot");
    assert_eq!(old.get("00000001").await?, Some(b("x")));
    // A new bucket of the same name starts empty.
    let txn = db.begin(serializable())?;
    let fresh = txn.create_bucket("big").await?;
    assert_ne!(fresh.id(), old.id());
    assert_eq!(fresh.scan::<&[u8]>(..).count().await, 0);
    assert!(fresh.bucket("child").await?.is_none());
    txn.commit().await?;
    db.close().await
}

async fn bucket_ids_are_never_reused_after_reopen(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    let txn = db.begin(serializable())?;
    let first = txn.create_bucket("a").await?;
    first.put(b("k"), b("old"))?;
    txn.commit().await?;
    let txn = db.begin(serializable())?;
    txn.delete_bucket("a").await?;
    txn.commit().await?;
    db.close().await?;
    drop(db);
    let db = Db::open(dir.path(), options(&driver)).await?;
    let txn = db.begin(serializable())?;
    let second = txn.create_bucket("b").await?;
    assert!(second.id() > first.id(), "{} > {}", second.id(), first.id());
    assert_eq!(second.get("k").await?, None);
    db.close().await
}

async fn next_sequence_is_monotonic_and_transactional(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    let txn = db.begin(serializable())?;
    let q = txn.create_bucket("q").await?;
    assert_eq!(q.next_sequence().await?, 1);
    assert_eq!(q.next_sequence().await?, 2);
    txn.commit().await?;
    let txn = db.begin(serializable())?;
    let q = txn.bucket("q").await?.unwrap();
    assert_eq!(q.next_sequence().await?, 3);
    txn.rollback().await?;
    // Concurrent takers: one wins, the other conflicts (both isolation levels).
    for opts in [snapshot(), serializable()] {
        let t1 = db.begin(opts.clone())?;
        let t2 = db.begin(opts)?;
        let n1 = t1.bucket("q").await?.unwrap().next_sequence().await?;
        let n2 = t2.bucket("q").await?.unwrap().next_sequence().await?;
        assert_eq!(n1, n2);
        t1.commit().await?;
        assert!(matches!(t2.commit().await, Err(Error::Conflict { .. })));
    }
    let n = db
        .update(|txn| async move { txn.bucket("q").await?.unwrap().next_sequence().await })
        .await?;
    assert_eq!(n, 5);
    db.close().await
}

async fn limits_and_bad_input_are_errors_that_lose_nothing(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(
        dir.path(),
        options(&driver)
            .max_key_bytes(16)
            .max_value_bytes(1024)
            .max_txn_bytes(4096),
    )
    .await?;
    let txn = db.begin(serializable())?;
    txn.put(b("ok"), b("1"))?;
    assert!(matches!(
        txn.put(Bytes::new(), b("1")),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        txn.get("").await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        txn.put(Bytes::from(vec![b'k'; 17]), b("1")),
        Err(Error::TooLarge { len: 17, max: 16 })
    ));
    assert!(matches!(
        txn.put(b("v"), Bytes::from(vec![0; 1025])),
        Err(Error::TooLarge {
            len: 1025,
            max: 1024
        })
    ));
    for i in 0..3 {
        txn.put(format!("big{i}"), Bytes::from(vec![0; 1000]))?;
    }
    let over = txn.put(b("big3"), Bytes::from(vec![0; 1000]));
    assert!(
        matches!(over, Err(Error::TooLarge { max: 4096, .. })),
        "{over:?}"
    );
    // Overwriting a key replaces its cost rather than adding to it.
    txn.put(b("big0"), Bytes::from(vec![1; 1000]))?;
    txn.commit().await?;
    assert_eq!(get(&db, "ok").await?, Some(b("1")));
    assert_eq!(get(&db, "big0").await?.map(|v| v[0]), Some(1));
    assert_eq!(get(&db, "big3").await?, None);
    // A write refused into a bucket the transaction had not written into leaves nothing of it
    // in the write set.
    db.update(|txn| async move { txn.create_bucket("b").await.map(drop) })
        .await?;
    let txn = db.begin(serializable())?;
    let bucket = txn.bucket("b").await?.expect("created");
    for i in 0..3 {
        txn.put(format!("root{i}"), Bytes::from(vec![0; 1010]))?;
    }
    let over = bucket.put(b("k"), Bytes::from(vec![0; 1000]));
    assert!(matches!(over, Err(Error::TooLarge { .. })), "{over:?}");
    assert_eq!(txn.commit().await?.writes, 3);
    let txn = db.begin(serializable())?;
    assert_eq!(txn.bucket("b").await?.expect("kept").get("k").await?, None);
    txn.rollback().await?;
    assert!(matches!(
        Db::open(
            tempfile::tempdir()?.path(),
            DbOptions::default().max_key_bytes(0)
        )
        .await,
        Err(Error::InvalidArgument { .. })
    ));
    db.close().await
}

async fn finished_transactions_refuse_every_call(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    let committed = db.begin(serializable())?;
    committed.put(b("a"), b("1"))?;
    committed.commit().await?;
    let rolled = db.begin(serializable())?;
    rolled.rollback().await?;
    for (txn, state) in [(&committed, "committed"), (&rolled, "rolled back")] {
        let finished = |r: Result<()>| match r {
            Err(Error::TxnFinished { state: s }) => assert_eq!(s, state),
            other => panic!("expected TxnFinished, got {other:?}"),
        };
        finished(txn.put(b("x"), b("1")));
        finished(txn.get("a").await.map(drop));
        finished(txn.commit().await.map(drop));
        finished(txn.rollback().await);
        finished(txn.create_bucket("b").await.map(drop));
        let mut scan = txn.scan::<&[u8]>(..);
        finished(scan.next().await.expect("an error").map(drop));
        assert!(scan.next().await.is_none());
        finished(txn.cursor().first().await.map(drop));
    }
    // Dropping an uncommitted transaction rolls it back.
    let dropped = db.begin(serializable())?;
    dropped.put(b("d"), b("1"))?;
    drop(dropped);
    assert_eq!(get(&db, "d").await?, None);
    assert_eq!(db.stats().active_txns, 0);
    db.close().await?;
    assert!(matches!(db.begin(serializable()), Err(Error::Closed)));
    Ok(())
}

async fn expired_transactions_refuse_calls_and_release_their_snapshot(
    driver: IoDriver,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    let txn = db.begin(TxnOptions::default().timeout(Duration::from_millis(50)))?;
    txn.put(b("a"), b("1"))?;
    assert_eq!(db.stats().active_snapshots, 1);
    tokio::time::sleep(Duration::from_millis(80)).await;
    // Released at once, before any call on it.
    put(&db, "other", "x").await?;
    assert_eq!(db.stats().active_snapshots, 0);
    assert!(matches!(txn.get("a").await, Err(Error::TxnExpired)));
    assert!(matches!(txn.put(b("b"), b("2")), Err(Error::TxnExpired)));
    assert!(matches!(txn.commit().await, Err(Error::TxnExpired)));
    assert_eq!(get(&db, "a").await?, None);
    // A store-wide default applies to transactions without their own.
    db.close().await?;
    drop(db);
    let db = Db::open(
        dir.path(),
        options(&driver).default_timeout(Duration::from_millis(1)),
    )
    .await?;
    let txn = db.begin(serializable())?;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(matches!(txn.get("a").await, Err(Error::TxnExpired)));
    assert!(db.stats().expired >= 1);
    db.close().await
}

async fn update_retries_conflicts_until_it_commits(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    // 16 tasks on one hot key: each round of optimistic commits has one winner, so a task may
    // lose many rounds in a row; what matters here is that no increment is lost.
    let db = Db::open(dir.path(), options(&driver).max_update_attempts(10_000)).await?;
    put(&db, "counter", "0").await?;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    db.update(|txn| async move {
                        let n: u64 = std::str::from_utf8(&txn.get("counter").await?.unwrap())
                            .unwrap()
                            .parse()
                            .unwrap();
                        txn.put(b("counter"), Bytes::from((n + 1).to_string()))?;
                        Ok(())
                    })
                    .await?;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task")?;
    }
    assert_eq!(get(&db, "counter").await?, Some(b("160")), "no lost update");
    // A closure that always conflicts exhausts its attempts.
    let db2 = Db::open(
        tempfile::tempdir()?.path(),
        options(&driver).max_update_attempts(3),
    )
    .await?;
    let d = db2.clone();
    let err = db2
        .update(move |txn| {
            let d = d.clone();
            async move {
                txn.get("x").await?;
                put(&d, "x", "other").await?;
                txn.put(b("x"), b("mine"))?;
                Ok(())
            }
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::RetriesExhausted { attempts: 3, .. }),
        "{err}"
    );
    db2.close().await?;
    db.close().await
}

async fn concurrent_commits_are_all_visible_and_dense(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..20 {
                    let txn = db.begin(snapshot())?;
                    txn.put(format!("t{t:02}-{i:02}"), "v")?;
                    let info = txn.commit().await?;
                    // Acknowledged means visible to a new transaction.
                    let check = db.begin(serializable())?;
                    assert!(check.snapshot() >= info.seq);
                    assert!(check.get(format!("t{t:02}-{i:02}")).await?.is_some());
                    seqs.push(info.seq.get());
                }
                Ok::<_, Error>(seqs)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task")?);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=640).collect::<Vec<_>>());
    let stats = db.stats();
    assert_eq!(stats.commits, 640);
    assert!(
        stats.wal.syncs < 640,
        "concurrent commits share fdatasyncs: {} syncs",
        stats.wal.syncs
    );
    db.close().await?;
    drop(db);
    let db = Db::open(dir.path(), options(&driver)).await?;
    let txn = db.begin(serializable())?;
    assert_eq!(txn.scan::<&[u8]>(..).count().await, 640);
    db.close().await
}

async fn prepared_transactions_hold_keys_and_survive_reopen(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    let p1 = db.begin(serializable())?;
    p1.put(b("held"), b("p1"))?;
    p1.prepare().await?;
    let id1 = p1.id();
    assert!(matches!(
        p1.put(b("x"), b("1")),
        Err(Error::TxnFinished { .. })
    ));
    let err = {
        let t = db.begin(snapshot())?;
        t.put(b("held"), b("other"))?;
        t.commit().await.unwrap_err()
    };
    assert_eq!(conflict_kind(&err), Some(ConflictKind::Prepared), "{err}");
    assert_eq!(
        get(&db, "held").await?,
        None,
        "not visible before its commit"
    );
    let p2 = db.begin(serializable())?;
    p2.put(b("second"), b("p2"))?;
    p2.prepare().await?;
    let p3 = db.begin(serializable())?;
    p3.put(b("third"), b("p3"))?;
    p3.prepare().await?;
    p3.commit().await?;
    assert_eq!(get(&db, "third").await?, Some(b("p3")));
    drop((p1, p2, p3));
    db.close().await?;
    drop(db);

    let db = Db::open(dir.path(), options(&driver)).await?;
    let prepared = db.prepared();
    assert_eq!(prepared.len(), 2);
    assert_eq!(prepared[0].id(), id1);
    assert_eq!(prepared[0].writes(), &[(0, b("held"), Some(b("p1")))]);
    let t = db.begin(snapshot())?;
    t.put(b("held"), b("other"))?;
    assert!(
        matches!(t.commit().await, Err(Error::Conflict { .. })),
        "held after reopen"
    );
    prepared[0].commit().await?;
    prepared[1].rollback().await?;
    assert!(matches!(
        prepared[1].commit().await,
        Err(Error::TxnFinished { .. })
    ));
    assert_eq!(get(&db, "held").await?, Some(b("p1")));
    assert_eq!(get(&db, "second").await?, None);
    assert!(db.prepared().is_empty());
    put(&db, "held", "free").await?;
    db.close().await?;
    drop(db);
    let db = Db::open(dir.path(), options(&driver)).await?;
    assert!(db.prepared().is_empty());
    assert_eq!(get(&db, "held").await?, Some(b("free")));
    assert_eq!(get(&db, "third").await?, Some(b("p3")));

    // Expiry applies to prepared transactions.
    let p = db.begin(serializable().timeout(Duration::from_millis(30)))?;
    p.put(b("late"), b("1"))?;
    p.prepare().await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(matches!(p.commit().await, Err(Error::TxnExpired)));
    assert!(db.prepared().is_empty());
    assert_eq!(get(&db, "late").await?, None);
    db.close().await
}

/// A prepared serializable transaction's reads (keys and scanned ranges) are held like its
/// writes, and still after a restart: a commit that writes what it read must fail until it
/// commits, or its own commit would no longer be serializable.
async fn prepared_serializable_reads_stay_held_after_reopen(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    put(&db, "read", "0").await?;
    let p = db.begin(serializable())?;
    assert_eq!(p.get("read").await?, Some(b("0")));
    let scanned: Vec<_> = p.scan("m".."p").collect().await;
    assert!(scanned.is_empty());
    p.put(b("written"), b("1"))?;
    p.prepare().await?;
    drop(p);
    db.close().await?;
    drop(db);

    let db = Db::open(dir.path(), options(&driver)).await?;
    for key in ["read", "n", "written"] {
        let t = db.begin(snapshot())?;
        t.put(b(key), b("other"))?;
        let err = t.commit().await.unwrap_err();
        assert_eq!(
            conflict_kind(&err),
            Some(ConflictKind::Prepared),
            "{key}: {err}"
        );
    }
    // Outside what it read and wrote: free.
    put(&db, "q", "free").await?;
    let prepared = db.prepared();
    assert_eq!(prepared.len(), 1);
    prepared[0].commit().await?;
    put(&db, "read", "after").await?;
    put(&db, "n", "after").await?;
    assert_eq!(get(&db, "written").await?, Some(b("1")));
    db.close().await
}

/// A bucket made by a transaction left prepared across a restart keeps its id: a bucket made
/// after the reopen gets another (both committed, one id would hold both buckets' keys).
async fn a_prepared_transactions_bucket_id_is_not_given_again_after_reopen(
    driver: IoDriver,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    let p = db.begin(serializable())?;
    let pending = p.create_bucket("pending").await?;
    let pending_id = pending.id();
    pending.put(b("k"), b("from the prepared one"))?;
    p.prepare().await?;
    drop((pending, p));
    db.close().await?;
    drop(db);

    let db = Db::open(dir.path(), options(&driver)).await?;
    let t = db.begin(snapshot())?;
    let other = t.create_bucket("other").await?;
    assert_ne!(other.id(), pending_id, "a prepared bucket's id given again");
    other.put(b("k"), b("from the new one"))?;
    t.commit().await?;
    let prepared = db.prepared();
    assert_eq!(prepared.len(), 1);
    prepared[0].commit().await?;
    db.view(|txn| async move {
        let pending = txn.bucket("pending").await?.expect("committed");
        assert_eq!(pending.get("k").await?, Some(b("from the prepared one")));
        let other = txn.bucket("other").await?.expect("committed");
        assert_eq!(other.get("k").await?, Some(b("from the new one")));
        Ok(())
    })
    .await?;
    db.close().await
}

async fn second_opener_waits_then_gets_locked(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    let started = std::time::Instant::now();
    let second = Db::open(
        dir.path(),
        options(&driver).lock_timeout(Duration::from_millis(100)),
    )
    .await;
    assert!(matches!(second, Err(Error::Locked { .. })), "{second:?}");
    assert!(started.elapsed() >= Duration::from_millis(100));
    db.close().await?;
    drop(db);
    let again = Db::open(dir.path(), options(&driver)).await?;
    again.close().await
}

async fn read_only_open_refuses_writes(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    put(&db, "a", "1").await?;
    db.close().await?;
    drop(db);
    let ro = Db::open_read_only(dir.path(), options(&driver)).await?;
    let txn = ro.begin(serializable())?;
    assert_eq!(txn.get("a").await?, Some(b("1")));
    assert!(matches!(txn.put(b("b"), b("2")), Err(Error::ReadOnly)));
    ro.close().await
}

async fn large_transactions_span_several_records_and_recover(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    let txn = db.begin(serializable())?;
    let value = Bytes::from(vec![7u8; 4096]);
    for i in 0..2000 {
        txn.put(format!("{i:06}"), value.clone())?;
    }
    txn.commit().await?;
    db.close().await?;
    drop(db);
    let db = Db::open(dir.path(), options(&driver)).await?;
    assert!(db.stats().wal.last_lsn.get() > 1, "several chunks");
    let txn = db.begin(serializable())?;
    let all: Vec<_> = txn.scan::<&[u8]>(..).try_collect().await?;
    assert_eq!(all.len(), 2000);
    assert!(all.iter().all(|(_, v)| *v == value));
    db.close().await?;
    let _ = SyncPolicy::Immediate;
    Ok(())
}

/// A prepared transaction (snapshot isolation as serializable) holds the catalog keys of the
/// buckets it writes into, nested ones' parents too: deleting one before its commit is a
/// `Prepared` conflict, before and after a restart, so its commit never lands in a deleted
/// bucket (whose keys compaction reclaims). Once it is committed the delete goes through.
async fn a_prepared_transactions_buckets_cannot_be_deleted_until_it_is_resolved(
    driver: IoDriver,
) -> Result<()> {
    for serializable_txn in [false, true] {
        let dir = tempfile::tempdir()?;
        let db = Db::open(dir.path(), options(&driver)).await?;
        db.update(|txn| async move {
            txn.create_bucket("outer")
                .await?
                .create_bucket("inner")
                .await?;
            Ok(())
        })
        .await?;
        let p = db.begin(if serializable_txn {
            serializable()
        } else {
            snapshot()
        })?;
        let outer = p.bucket("outer").await?.expect("outer");
        outer
            .bucket("inner")
            .await?
            .expect("inner")
            .put(b("k"), b("v"))?;
        p.prepare().await?;
        for nested in [false, true] {
            let t = db.begin(snapshot())?;
            if nested {
                let outer = t.bucket("outer").await?.expect("outer");
                outer.delete_bucket("inner").await?;
            } else {
                t.delete_bucket("outer").await?;
            }
            let err = t.commit().await.unwrap_err();
            assert_eq!(
                conflict_kind(&err),
                Some(ConflictKind::Prepared),
                "nested {nested}: {err}"
            );
        }
        drop((p, outer));
        db.close().await?;
        drop(db);
        let db = Db::open(dir.path(), options(&driver)).await?;
        let t = db.begin(snapshot())?;
        t.delete_bucket("outer").await?;
        let err = t.commit().await.unwrap_err();
        assert_eq!(
            conflict_kind(&err),
            Some(ConflictKind::Prepared),
            "after a restart: {err}"
        );
        let prepared = db.prepared();
        assert_eq!(prepared.len(), 1);
        prepared[0].commit().await?;
        let got = db
            .view(|txn| async move {
                let outer = txn.bucket("outer").await?.expect("outer");
                let inner = outer.bucket("inner").await?.expect("inner");
                inner.get(b("k")).await
            })
            .await?;
        assert_eq!(got, Some(b("v")));
        db.update(|txn| async move { txn.delete_bucket("outer").await })
            .await?;
        db.close().await?;
    }
    Ok(())
}

/// Two prepared transactions write into one bucket: each holds its catalog key, so the
/// bucket cannot be deleted until both are resolved (one resolving releases only its own
/// hold); and a transaction writing into a bucket whose delete is prepared is refused at its
/// prepare (its commit would not be validated again, and would land after the delete).
async fn prepared_transactions_sharing_a_bucket_each_hold_it(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    db.update(|t| async move { t.create_bucket("B").await.map(drop) })
        .await?;
    let t1 = db.begin(snapshot())?;
    t1.bucket("B").await?.expect("B").put(b("k1"), b("v1"))?;
    t1.prepare().await?;
    let t2 = db.begin(snapshot())?;
    t2.bucket("B").await?.expect("B").put(b("k2"), b("v2"))?;
    t2.prepare().await?;
    t2.rollback().await?;
    let delete = async || -> Result<()> {
        let d = db.begin(snapshot())?;
        d.delete_bucket("B").await?;
        d.commit().await.map(drop)
    };
    let err = delete().await.unwrap_err();
    assert_eq!(conflict_kind(&err), Some(ConflictKind::Prepared), "{err}");
    t1.commit().await?;
    let got = db
        .view(|t| async move { t.bucket("B").await?.expect("B").get(b("k1")).await })
        .await?;
    assert_eq!(got, Some(b("v1")));
    delete().await?;

    db.update(|t| async move { t.create_bucket("C").await.map(drop) })
        .await?;
    let d = db.begin(snapshot())?;
    d.delete_bucket("C").await?;
    d.prepare().await?;
    let t = db.begin(snapshot())?;
    t.bucket("C").await?.expect("C").put(b("k"), b("v"))?;
    let err = t.prepare().await.unwrap_err();
    assert_eq!(conflict_kind(&err), Some(ConflictKind::Prepared), "{err}");
    d.commit().await?;
    db.close().await
}
