//! The key-value store end to end, with its defaults, as a small service would use it:
//!
//! 1. 64 tokio tasks place orders concurrently: each order is one serializable transaction that
//!    writes the order into the `orders` bucket and updates the customer's running total in the
//!    nested bucket `customers/eu` (200 customers, so concurrent orders of one customer
//!    conflict and `Db::update` retries them). Every commit is durable (grouped commit shares
//!    each fdatasync among the tasks).
//! 2. A report reads one snapshot: the orders as a `Stream`, checked against the totals.
//! 3. A transaction with a 50 ms timeout that outlives it is refused.
//! 4. The store is closed, reopened (recovery replays the wal) and checked again.
//!
//! Run: `cargo run --release --example kv [-- DIR]` (default: a temporary directory, removed at
//! the end). `RINGTIDE_IO_BACKEND=threadpool` forces the pool backend.

#![allow(clippy::print_stdout, reason = "an example reports to its user")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use ringtide::kv::{Db, DbOptions, TxnOptions};
use ringtide::{Error, Result};

const TASKS: u64 = 64;
const ORDERS_PER_TASK: u64 = 40;
const CUSTOMERS: u64 = 200;

fn amount(task: u64, i: u64) -> u64 {
    1 + (task * 7919 + i * 104_729) % 500
}

async fn place_order(db: &Db, task: u64, i: u64) -> Result<()> {
    let customer = format!("customer-{:03}", (task * 31 + i * 17) % CUSTOMERS);
    db.update(|txn| {
        let customer = customer.clone();
        async move {
            let orders = txn.bucket("orders").await?.expect("created at setup");
            let totals = txn
                .bucket("customers")
                .await?
                .expect("created at setup")
                .bucket("eu")
                .await?
                .expect("created at setup");
            let cents = amount(task, i);
            orders.put(format!("{task:03}-{i:05}"), format!("{customer}:{cents}"))?;
            let total = match totals.get(&customer).await? {
                Some(v) => parse(&v),
                None => 0,
            };
            totals.put(customer, (total + cents).to_string())?;
            Ok(())
        }
    })
    .await?;
    Ok(())
}

fn parse(v: &Bytes) -> u64 {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("a number written by this example")
}

/// Reads one snapshot: sums the orders per customer from a scan and compares with the totals.
async fn check(db: &Db) -> Result<(usize, u64)> {
    db.view(|txn| async move {
        let orders = txn.bucket("orders").await?.expect("orders");
        let eu = txn
            .bucket("customers")
            .await?
            .expect("customers")
            .bucket("eu")
            .await?
            .expect("eu");
        let mut sums: BTreeMap<String, u64> = BTreeMap::new();
        let mut count = 0;
        let mut scan = orders.scan::<&[u8]>(..);
        while let Some((_, order)) = scan.try_next().await? {
            let text = std::str::from_utf8(&order).expect("utf-8");
            let (customer, cents) = text.split_once(':').expect("customer:cents");
            *sums.entry(customer.to_owned()).or_default() += cents.parse::<u64>().expect("cents");
            count += 1;
        }
        let mut grand = 0;
        let stored: Vec<(Bytes, Bytes)> = eu.scan::<&[u8]>(..).try_collect().await?;
        assert_eq!(stored.len(), sums.len(), "a total per customer with orders");
        for (customer, total) in stored {
            let customer = String::from_utf8(customer.to_vec()).expect("utf-8");
            assert_eq!(sums.get(&customer), Some(&parse(&total)), "{customer}");
            grand += parse(&total);
        }
        Ok((count, grand))
    })
    .await
}

#[tokio::main]
async fn main() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(|| tmp.path().join("store"));
    let db = Db::open(&dir, DbOptions::default()).await?;

    db.update(|txn| async move {
        txn.create_bucket_if_not_exists("orders").await?;
        txn.create_bucket_if_not_exists("customers")
            .await?
            .create_bucket_if_not_exists("eu")
            .await?;
        Ok(())
    })
    .await?;

    // 1. Concurrent durable transactions.
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let db = db.clone();
            tokio::spawn(async move {
                for i in 0..ORDERS_PER_TASK {
                    place_order(&db, task, i).await?;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task")?;
    }
    let elapsed = started.elapsed();
    let orders = TASKS * ORDERS_PER_TASK;
    let stats = db.stats();
    println!(
        "{orders} orders from {TASKS} tasks in {:.2} s: {:.0} durable transactions/s, {} conflicts retried, {} fdatasyncs",
        elapsed.as_secs_f64(),
        orders as f64 / elapsed.as_secs_f64(),
        stats.retries,
        stats.wal.syncs,
    );

    // 2. A consistent report from one snapshot.
    let (count, grand) = check(&db).await?;
    println!("report: {count} orders, totals add up to {grand} cents");
    assert_eq!(count as u64, orders);

    // 3. A transaction bounded by a timeout.
    let slow = db.begin(TxnOptions::default().timeout(Duration::from_millis(50)))?;
    slow.put("draft", "never committed")?;
    tokio::time::sleep(Duration::from_millis(60)).await;
    match slow.commit().await {
        Err(Error::TxnExpired) => {
            println!("a transaction that outlived its 50 ms timeout was refused")
        }
        other => panic!("expected TxnExpired, got {other:?}"),
    }

    println!("\n{}", db.stats());

    // 4. Close, reopen (recovery), check again.
    db.close().await?;
    drop(db);
    let started = Instant::now();
    let db = Db::open(&dir, DbOptions::default()).await?;
    let reopened = started.elapsed();
    let (count_after, grand_after) = check(&db).await?;
    assert_eq!((count_after, grand_after), (count, grand));
    println!(
        "reopened in {:.1} ms (recovery replayed {} wal entries): the same {count_after} orders and totals",
        reopened.as_secs_f64() * 1e3,
        db.stats().wal.recovered_entries,
    );
    db.close().await
}
