//! `DbOptions::memory_limit_bytes`: the memtables stay within their share of the limit while
//! writers outpace the flushes (writers wait instead), the block cache shrinks to what the
//! tables' indexes and filters leave, and nothing written is lost. On both I/O backends.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use ringtide::kv::{Db, DbOptions, TxnOptions};
use ringtide::platform::IoDriver;
use ringtide::{Error, Result};

both_backends!(writers_wait_within_the_memory_limit_and_lose_nothing);

const LIMIT: u64 = 16 << 20;
const WRITERS: u32 = 4;
const COMMITS: u32 = 600;
const KEYS_PER_COMMIT: u32 = 10;

fn key(w: u32, c: u32, k: u32) -> Bytes {
    Bytes::from(format!("w{w}-c{c:05}-k{k:02}"))
}

fn value(w: u32, c: u32, k: u32) -> Bytes {
    let mut v = format!("{w}/{c}/{k}/").into_bytes();
    v.resize(1000, b'v' + (k % 8) as u8);
    Bytes::from(v)
}

/// ~24 MB from 4 writers into a store limited to 16 MiB (8 MiB of it for memtables): a
/// sampler watches the figures the whole time.
async fn writers_wait_within_the_memory_limit_and_lose_nothing(driver: IoDriver) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = DbOptions::default()
        .driver(driver)
        .sync_policy(ringtide::wal::SyncPolicy::None)
        .memory_limit_bytes(LIMIT)
        .table_target_bytes(1 << 20)
        .l1_target_bytes(4 << 20);
    let db = Db::open(dir.path(), options.clone()).await?;
    let share = LIMIT / 2;
    // A commit checks for room before it inserts: commits in flight at once may each pass the
    // check and then insert (at most one commit per writer here).
    let overshoot = u64::from(WRITERS * KEYS_PER_COMMIT) * (1000 + 32 + 200);

    let done = Arc::new(AtomicBool::new(false));
    let max_memtables = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (db, done, max_memtables) = (db.clone(), done.clone(), max_memtables.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let s = db.stats();
                max_memtables.fetch_max(s.memtable_bytes, Ordering::Relaxed);
                assert!(
                    s.block_cache_capacity_bytes <= 64 << 20,
                    "never above block_cache_bytes"
                );
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        })
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let db = db.clone();
        writers.push(tokio::spawn(async move {
            for c in 0..COMMITS {
                let txn = db.begin(TxnOptions::default())?;
                for k in 0..KEYS_PER_COMMIT {
                    txn.put(key(w, c, k), value(w, c, k))?;
                }
                txn.commit().await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for w in writers {
        w.await.expect("writer")?;
    }
    done.store(true, Ordering::Relaxed);
    sampler.await.expect("sampler");

    let stats = db.stats();
    let max = max_memtables.load(Ordering::Relaxed);
    assert!(
        max <= share + overshoot,
        "memtables peaked at {max} B, over their share {share} B (+{overshoot}): {stats}"
    );
    assert!(
        stats.flushes >= 3,
        "the writes did not fit the memtables: {stats}"
    );
    assert_eq!(stats.memory_limit_bytes, Some(LIMIT));

    // Reads fill the cache: it stays within what the tables' indexes and filters leave.
    check(&db).await?;
    let stats = db.stats();
    assert!(
        stats.block_cache_bytes <= stats.block_cache_capacity_bytes,
        "the cache holds {} B over its budget {} B",
        stats.block_cache_bytes,
        stats.block_cache_capacity_bytes
    );
    assert!(
        stats.block_cache_capacity_bytes + stats.table_meta_bytes <= LIMIT - share,
        "cache budget and table metadata exceed the tables' share: {stats}"
    );
    db.close().await?;

    let db = Db::open(dir.path(), options).await?;
    check(&db).await?;
    db.close().await
}

/// Every key written is there with its value.
async fn check(db: &Db) -> Result<()> {
    let txn = db.begin(TxnOptions::default().read_only(true))?;
    let all: Vec<(Bytes, Bytes)> = txn.scan::<&[u8]>(..).try_collect().await?;
    assert_eq!(all.len() as u32, WRITERS * COMMITS * KEYS_PER_COMMIT);
    for w in 0..WRITERS {
        for c in (0..COMMITS).step_by(37) {
            let k = c % KEYS_PER_COMMIT;
            assert_eq!(txn.get(key(w, c, k)).await?, Some(value(w, c, k)));
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_memory_limit_out_of_range_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for limit in [0, 1 << 20, (1 << 40) + 1] {
        let Err(err) = Db::open(dir.path(), DbOptions::default().memory_limit_bytes(limit)).await
        else {
            panic!("a limit of {limit} B is refused");
        };
        assert!(
            matches!(
                err,
                Error::InvalidArgument {
                    name: "memory_limit_bytes",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
