//! Criterion benches of the key-value store's paths, one task at a time: a point read in a
//! read-only transaction, a range read of 10, a single-put commit with `SyncPolicy::None` (the
//! CPU cost of the commit path, no fsync) and with the default `Immediate` (one fdatasync each),
//! over 100k keys of 24 bytes with 150-byte values (the redb benchmark's shapes); and range
//! reads of 1 and 50 over the same keys laid out in sorted levels, three L0 tables and the
//! memtable (the merge of every kind of source a scan reads).
//!
//! Run: `cargo bench --bench kv`. The comparison against other engines is in `compare/`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use ringtide::kv::{Db, DbOptions, TxnOptions};
use ringtide::wal::SyncPolicy;

const KEYS: u64 = 100_000;

fn key(i: u64) -> Bytes {
    // 24 bytes, spread over the keyspace by a multiplicative hash.
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut k = Vec::with_capacity(24);
    k.extend_from_slice(&h.to_be_bytes());
    k.extend_from_slice(&i.to_be_bytes());
    k.extend_from_slice(&(!h).to_be_bytes());
    Bytes::from(k)
}

/// Runs `op` `iters` times inside one `block_on` and returns the time taken (for criterion's
/// `iter_custom`): entering the runtime is not measured per operation.
fn timed<F: Future<Output = ()>>(
    runtime: &tokio::runtime::Runtime,
    iters: u64,
    mut op: impl FnMut() -> F,
) -> Duration {
    runtime.block_on(async {
        let started = Instant::now();
        for _ in 0..iters {
            op().await;
        }
        started.elapsed()
    })
}

/// One transaction putting one key.
async fn commit_one(db: &Db, key: Bytes, value: Bytes) {
    let txn = db.begin(TxnOptions::default()).expect("begin");
    txn.put(key, value).expect("put");
    black_box(txn.commit().await.expect("commit"));
}

fn bench_kv(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temporary directory");
    let value = Bytes::from(vec![0x5a; 150]);
    let db = runtime.block_on(async {
        let db = Db::open(
            dir.path().join("none"),
            DbOptions::default().sync_policy(SyncPolicy::None),
        )
        .await
        .expect("open");
        let txn = db.begin(TxnOptions::default()).expect("begin");
        for i in 0..KEYS {
            txn.put(key(i), value.clone()).expect("put");
        }
        txn.commit().await.expect("bulk load");
        db
    });

    let mut group = c.benchmark_group("kv");
    group.throughput(Throughput::Elements(1));
    let next = &AtomicU64::new(0);
    let (db_ref, value_ref) = (&db, &value);
    group.bench_function("get (read-only txn per read)", |b| {
        b.iter_custom(|iters| {
            timed(&runtime, iters, move || async move {
                let i = next.fetch_add(7919, Ordering::Relaxed) % KEYS;
                let txn = db_ref
                    .begin(TxnOptions::default().read_only(true))
                    .expect("begin");
                black_box(txn.get(key(i)).await.expect("get").expect("present"));
            })
        });
    });
    group.bench_function("range of 10 (read-only txn per range)", |b| {
        b.iter_custom(|iters| {
            timed(&runtime, iters, move || async move {
                let i = next.fetch_add(7919, Ordering::Relaxed) % KEYS;
                let txn = db_ref
                    .begin(TxnOptions::default().read_only(true))
                    .expect("begin");
                black_box(txn.scan(key(i)..).take(10).count().await);
            })
        });
    });
    let layered = runtime.block_on(layered(dir.path(), &value));
    let layered_ref = &layered;
    for len in [1, 50] {
        let name = format!("range of {len} over levels, L0 and memtable (read-only txn per range)");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                timed(&runtime, iters, move || async move {
                    let i = next.fetch_add(7919, Ordering::Relaxed) % KEYS;
                    let txn = layered_ref
                        .begin(TxnOptions::default().read_only(true))
                        .expect("begin");
                    black_box(txn.scan(key(i)..).take(len).count().await);
                })
            });
        });
    }
    group.bench_function("single-put commit, SyncPolicy::None", |b| {
        b.iter_custom(|iters| {
            timed(&runtime, iters, move || async move {
                let i = KEYS + next.fetch_add(1, Ordering::Relaxed);
                commit_one(db_ref, key(i), value_ref.clone()).await;
            })
        });
    });
    let durable = runtime.block_on(async {
        Db::open(dir.path().join("immediate"), DbOptions::default())
            .await
            .expect("open")
    });
    group.sample_size(20);
    let durable_ref = &durable;
    group.bench_function("single-put commit, Immediate (fdatasync)", |b| {
        b.iter_custom(|iters| {
            timed(&runtime, iters, move || async move {
                let i = next.fetch_add(1, Ordering::Relaxed);
                commit_one(durable_ref, key(i), value_ref.clone()).await;
            })
        });
    });
    group.finish();
    runtime.block_on(async {
        db.close().await.expect("close");
        layered.close().await.expect("close");
        durable.close().await.expect("close");
    });
}

/// The keys with `value` in sorted levels (L1 to L3), every 10th key overwritten in an L0 table,
/// every 7th in two more, and every 13th in the memtable.
async fn layered(dir: &std::path::Path, value: &Bytes) -> Db {
    let options = DbOptions::default()
        .sync_policy(SyncPolicy::None)
        .write_buffer_bytes(4 << 20)
        .table_target_bytes(256 << 10)
        .l1_target_bytes(1 << 20)
        .level_size_multiplier(4)
        .l0_compaction_trigger(64)
        .l0_stop_writes_trigger(128);
    let db = Db::open(dir.join("layered"), options).await.expect("open");
    let put_every = |every: u64| {
        let db = &db;
        async move {
            for chunk in (0..KEYS)
                .step_by(every as usize)
                .collect::<Vec<_>>()
                .chunks(10_000)
            {
                let txn = db.begin(TxnOptions::default()).expect("begin");
                for &i in chunk {
                    txn.put(key(i), value.clone()).expect("put");
                }
                txn.commit().await.expect("commit");
                db.flush().await.expect("flush");
            }
        }
    };
    put_every(1).await;
    db.compact().await.expect("compact");
    put_every(10).await;
    put_every(7).await;
    let txn = db.begin(TxnOptions::default()).expect("begin");
    for i in (0..KEYS).step_by(13) {
        txn.put(key(i), value.clone()).expect("put");
    }
    txn.commit().await.expect("commit");
    db
}

criterion_group!(benches, bench_kv);
criterion_main!(benches);
