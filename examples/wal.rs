//! The write-ahead log end to end, with its defaults: 64 tokio tasks append 256-byte entries, each
//! awaiting durability (grouped commit shares each fdatasync among them); a tail follows the log
//! as a change feed; then the log is closed, reopened (recovery) and read back through a stream,
//! checking every entry.
//!
//! Run: `cargo run --release --example wal [-- DIR]` (default: a temporary directory, removed at
//! the end). `RINGTIDE_IO_BACKEND=threadpool` forces the pool backend.

#![allow(clippy::print_stdout, reason = "an example reports to its user")]

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use ringtide::wal::{Wal, WalOptions};

const WRITERS: u64 = 64;
const PER_WRITER: u64 = 500;
const ENTRY: usize = 256;

/// An entry names its writer and sequence, then fills up to 256 bytes.
fn entry(writer: u64, seq: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(ENTRY);
    b.put_u64_le(writer);
    b.put_u64_le(seq);
    b.resize(ENTRY, (writer * 31 + seq) as u8);
    b.freeze()
}

#[tokio::main]
async fn main() -> ringtide::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(|| tmp.path().join("wal"));
    let wal = Wal::open(&dir, WalOptions::default()).await?;
    let start_lsn = wal.last_lsn().next();

    // A change feed: follows durable entries as they arrive, until the log closes.
    let feed = {
        let mut tail = wal.tail(start_lsn);
        tokio::spawn(async move {
            let mut seen = 0u64;
            while let Some(entry) = tail.next().await {
                entry?;
                seen += 1;
            }
            Ok::<_, ringtide::Error>(seen)
        })
    };

    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let wal = wal.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(PER_WRITER as usize);
                for seq in 0..PER_WRITER {
                    let t = Instant::now();
                    wal.append(entry(w, seq)).await?;
                    latencies.push(t.elapsed());
                }
                Ok::<_, ringtide::Error>(latencies)
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::new();
    for w in writers {
        latencies.extend(w.await.expect("writer task")?);
    }
    let write_secs = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let stats = wal.stats();
    wal.close().await?;
    let fed = feed.await.expect("feed task")?;

    // Reopen: recovery scans and checks every frame.
    let started = Instant::now();
    let wal = Wal::open(&dir, WalOptions::default()).await?;
    let recovery = started.elapsed();
    let started = Instant::now();
    let mut stream = wal.stream(start_lsn);
    let mut next_seq = vec![0u64; WRITERS as usize];
    let mut read = 0u64;
    while let Some(e) = stream.next().await {
        let e = e?;
        let writer = u64::from_le_bytes(e.data[..8].try_into().expect("8 bytes"));
        let seq = u64::from_le_bytes(e.data[8..16].try_into().expect("8 bytes"));
        // Each writer's entries are in its own order, and intact.
        assert_eq!(
            seq, next_seq[writer as usize],
            "writer {writer} out of order at lsn {}",
            e.lsn
        );
        assert_eq!(
            e.data,
            entry(writer, seq),
            "entry at lsn {} is damaged",
            e.lsn
        );
        next_seq[writer as usize] += 1;
        read += 1;
    }
    let read_secs = started.elapsed().as_secs_f64();
    let total = WRITERS * PER_WRITER;
    assert_eq!(read, total);
    // The library's integrity check: every frame's checksum again, with progress per chunk.
    let started = Instant::now();
    let mut chunks = 0u64;
    let report = wal.check_integrity(|_| chunks += 1).await?;
    let check_secs = started.elapsed().as_secs_f64();
    assert!(report.is_sound(), "{report:?}");
    assert_eq!(fed, total, "the tail saw every entry");

    let pct =
        |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)].as_micros();
    println!("ringtide wal example ({} backend)", stats.backend);
    println!("  log                {}", dir.display());
    println!(
        "  durable appends    {total} x {ENTRY} B from {WRITERS} tasks in {write_secs:.2} s: {:.0} appends/s",
        total as f64 / write_secs
    );
    println!(
        "  grouped commit     {} batches, {} fdatasyncs, {:.1} entries per batch (max {})",
        stats.batches,
        stats.syncs,
        stats.appends as f64 / stats.batches.max(1) as f64,
        stats.max_batch_entries
    );
    println!(
        "  append latency     p50 {} us, p99 {} us, max {} us",
        pct(50),
        pct(99),
        pct(100)
    );
    println!("  change feed        {fed} entries followed live");
    println!(
        "  recovery           {} entries in {} segment(s) checked in {:.1} ms",
        wal.stats().recovered_entries,
        wal.stats().recovered_segments,
        recovery.as_secs_f64() * 1e3
    );
    println!(
        "  read back          {read} entries verified in {:.1} ms",
        read_secs * 1e3
    );
    println!(
        "  integrity check    {} entries, {} bytes of frames in {chunks} chunks, sound, in {:.1} ms",
        report.entries,
        report.bytes,
        check_secs * 1e3
    );
    println!(
        "  lsns               {}..={} (next append gets {})",
        wal.first_lsn(),
        wal.last_lsn(),
        wal.last_lsn().next()
    );
    wal.close().await?;
    Ok(())
}
