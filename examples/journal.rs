//! A durable journal on ringtide's I/O executor, end to end: preallocate a file, append records
//! from many tokio tasks in batches (each batch one `writev` linked to one `fdatasync`), read the
//! whole file back and verify every record, then report what it measured.
//!
//! Run: `cargo run --release --example journal [-- DIR]` (default: a temporary directory, removed
//! at the end). `RINGTIDE_IO_BACKEND=threadpool` forces the pool backend.

#![allow(clippy::print_stdout, reason = "an example reports to its user")]

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ringtide::platform::{DriverOptions, IoDriver, OpenOptions};

const RECORD: usize = 256;
const TASKS: u64 = 16;
const BATCHES_PER_TASK: u64 = 64;
const RECORDS_PER_BATCH: u64 = 32;

/// A record: its number in the first 8 bytes, then a fill derived from it.
fn record(n: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(RECORD);
    buf.extend_from_slice(&n.to_le_bytes());
    buf.resize(RECORD, (n % 251) as u8);
    buf.freeze()
}

#[tokio::main]
async fn main() -> io::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let driver = IoDriver::new(DriverOptions::default())?;
    driver.create_dir_all(&dir).await?;
    let path = dir.join("journal.dat");
    let total_records = TASKS * BATCHES_PER_TASK * RECORDS_PER_BATCH;
    let total_bytes = total_records * RECORD as u64;

    let file = driver
        .open(
            &path,
            &OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true),
        )
        .await?;
    // Reserve the space up front, and make the file's name durable.
    file.allocate(0, total_bytes).await?;
    file.sync_all().await?;
    driver.sync_dir(&dir).await?;

    // Tasks claim batch slots in order from a shared cursor and write them durably.
    let next_batch = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (file, next_batch) = (file.clone(), next_batch.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies_us = Vec::new();
            loop {
                let batch = next_batch.fetch_add(1, Ordering::Relaxed);
                if batch >= TASKS * BATCHES_PER_TASK {
                    return Ok::<_, io::Error>(latencies_us);
                }
                let first = batch * RECORDS_PER_BATCH;
                let records: Vec<Bytes> = (first..first + RECORDS_PER_BATCH).map(record).collect();
                let t = Instant::now();
                let (res, _) = file.writev_sync_at(records, first * RECORD as u64).await;
                res?;
                latencies_us.push(t.elapsed().as_micros() as u64);
            }
        }));
    }
    let mut latencies_us = Vec::new();
    for task in tasks {
        latencies_us.extend(task.await.expect("writer task panicked")?);
    }
    let write_secs = started.elapsed().as_secs_f64();
    latencies_us.sort_unstable();

    // Read everything back in 1 MiB reads and check every record.
    let started = Instant::now();
    let mut offset = 0u64;
    let mut seen = 0u64;
    while offset < total_bytes {
        let len = (total_bytes - offset).min(1 << 20) as usize;
        let (res, buf) = file
            .read_exact_at(BytesMut::with_capacity(len), offset)
            .await;
        res?;
        for chunk in buf.chunks(RECORD) {
            let n = u64::from_le_bytes(chunk[..8].try_into().expect("8 bytes"));
            if chunk != &record(seen)[..] || n != seen {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("record {seen} is damaged"),
                ));
            }
            seen += 1;
        }
        offset += len as u64;
    }
    let read_secs = started.elapsed().as_secs_f64();
    file.close().await?;

    let stats = driver.stats();
    let pct = |p: usize| latencies_us[(latencies_us.len() * p / 100).min(latencies_us.len() - 1)];
    println!("ringtide journal example");
    println!("  backend            {}", stats.backend);
    println!("  file               {}", path.display());
    println!(
        "  wrote              {total_records} records of {RECORD} B from {TASKS} tasks, {RECORDS_PER_BATCH} per durable batch"
    );
    println!(
        "  durable writes     {:.0} records/s, {:.1} MB/s, {:.0} batches/s",
        total_records as f64 / write_secs,
        total_bytes as f64 / write_secs / 1e6,
        (TASKS * BATCHES_PER_TASK) as f64 / write_secs
    );
    println!(
        "  batch latency      p50 {} us, p99 {} us, max {} us",
        pct(50),
        pct(99),
        pct(100)
    );
    println!(
        "  verified           {seen} records read back in {:.1} ms",
        read_secs * 1e3
    );
    println!(
        "  I/O operations     {} submitted, {} in flight at the end",
        stats.submitted, stats.in_flight
    );
    driver.shutdown().await;
    Ok(())
}
