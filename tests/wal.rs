//! The write-ahead log's public contract, on both I/O backends.
//!
//! Method: each test is an `async fn(IoDriver) -> ringtide::Result<()>` run by `both_backends!`
//! once with io_uring and once with the thread pool. Damage is made with `std::fs` on closed logs
//! (cutting and zeroing the last frames, flipping bytes in the middle), then the log is reopened.

#![allow(clippy::print_stderr, reason = "tests report what they measured")]

mod common;

use common::segments;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use ringtide::platform::{DriverOptions, IoDriver};
use ringtide::wal::{
    Ack, ChecksumKind, Entry, LengthEncoding, Lsn, Record, RecoveryMode, SyncPolicy, Timestamps,
    Wal, WalOptions,
};
use ringtide::{CorruptionKind, Error, Result};

both_backends!(
    appends_are_dense_and_read_back,
    enqueued_batches_keep_call_order_and_share_syncs,
    every_length_encoding_and_checksum_round_trips,
    caller_timestamps_are_kept_and_the_log_stamps_the_rest,
    entries_too_large_are_refused_and_nothing_is_lost,
    concurrent_appends_get_dense_unique_lsns,
    reopen_after_close_and_after_drop,
    leftover_temporary_records_are_removed_at_open,
    segments_rotate_and_recover,
    bulk_writes_mixed_with_small_ones_read_back_and_recover,
    calls_larger_than_a_segment_are_staged_while_small_ones_rotate,
    torn_tails_are_cut_at_every_byte,
    strict_mode_refuses_a_torn_tail,
    damage_before_valid_frames_is_corruption,
    a_clean_close_lets_recovery_tell_damage_from_a_torn_tail,
    truncate_front_back_and_reset_survive_reopen,
    truncate_back_inside_a_batch_keeps_the_prefix,
    log_transactions_commit_roll_back_and_expire,
    a_second_open_is_locked_out,
    streams_read_everything_and_tails_follow,
    a_stream_never_yields_what_a_cut_replaced_past_its_chunk,
    appends_under_timeouts_keep_the_log_consistent,
    concurrent_appends_under_timeouts_across_rotations_lose_nothing,
    staged_entries_are_readable_at_once_and_the_stage_stays_bounded,
    an_append_polled_once_and_left_alone_holds_nothing_up,
    sync_policies_do_what_they_say,
    ack_levels_are_a_floor_under_the_policy,
    out_of_range_reads_name_the_bounds,
    a_range_is_bounded_in_bytes,
    check_integrity_reads_every_entry_and_names_the_first_damage,
    a_failed_write_poisons_the_log_until_reopened,
    regression_1_truncate_front_syncs_what_it_keeps,
    regression_2_a_missing_first_segment_is_corruption,
    regression_3_an_impossibly_large_segment_is_corruption_not_an_allocation,
    regression_4_a_tail_ends_when_the_log_is_cut_below_it,
    truncations_and_resets_interrupted_at_every_step_recover,
);

/// Small segments keep the damage tests' file copies small.
fn opts(driver: &IoDriver) -> WalOptions {
    WalOptions::default()
        .driver(driver.clone())
        .lock_timeout(Duration::from_millis(50))
        .segment_size_bytes(256 << 10)
}

fn payload(i: u64) -> Bytes {
    let len = (i * 37 % 300) as usize;
    Bytes::from(
        (0..len)
            .map(|j| (i as usize + j) as u8)
            .collect::<Vec<u8>>(),
    )
}

async fn check_all(wal: &Wal, expect: impl Fn(u64) -> Bytes) -> Result<()> {
    let entries = wal.range(..).await?;
    let first = wal.first_lsn().0;
    assert_eq!(entries.len() as u64, wal.last_lsn().0 + 1 - first);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.lsn, Lsn(first + i as u64));
        assert_eq!(e.data, expect(e.lsn.0), "lsn {}", e.lsn);
    }
    Ok(())
}

/// `enqueue_batch`: lsns fixed in call order before anything is waited for; every pending
/// append resolves once durable; the batches queued behind a sync share the next ones; an empty
/// batch and a closed log behave as `append_batch` does.
async fn enqueued_batches_keep_call_order_and_share_syncs(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let options = opts(&driver).sync_policy(SyncPolicy::Grouped {
        window: Duration::ZERO,
    });
    let wal = Wal::open(tmp.path(), options.clone()).await?;
    let mut pending = Vec::new();
    let mut next = 1;
    for i in 0..200u64 {
        let n = 1 + i % 3;
        let p = wal
            .enqueue_batch((next..next + n).map(payload), Ack::Durable)
            .await?;
        assert_eq!(p.lsns(), Lsn(next)..Lsn(next + n), "lsns in call order");
        pending.push(p);
        next += n;
    }
    let empty = wal.enqueue_batch(Vec::<Bytes>::new(), Ack::Durable).await?;
    assert_eq!(empty.lsns(), Lsn(next)..Lsn(next));
    assert_eq!(empty.wait().await?, Lsn(next)..Lsn(next));
    for p in pending {
        let lsns = p.lsns();
        assert_eq!(p.wait().await?, lsns.clone());
        assert!(
            wal.durable_lsn() >= Lsn(lsns.end.0 - 1),
            "acknowledged once durable"
        );
    }
    let stats = wal.stats();
    assert!(
        stats.syncs < 200,
        "200 batches queued without waiting share syncs: {} syncs",
        stats.syncs
    );
    for e in wal.range(Lsn(1)..Lsn(next)).await? {
        assert_eq!(e.data, payload(e.lsn.0), "entry {}", e.lsn.0);
    }
    wal.close().await?;
    assert!(matches!(
        wal.enqueue_batch([payload(1)], Ack::Durable).await,
        Err(Error::Closed)
    ));
    let wal = Wal::open(tmp.path(), options).await?;
    assert_eq!(
        wal.last_lsn(),
        Lsn(next - 1),
        "every entry survives a reopen"
    );
    wal.close().await
}

async fn appends_are_dense_and_read_back(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let wal = Wal::open(tmp.path(), opts(&driver)).await?;
    assert_eq!(
        (wal.first_lsn(), wal.last_lsn(), wal.durable_lsn()),
        (Lsn(1), Lsn(0), Lsn(0))
    );
    for i in 1..=100 {
        assert_eq!(wal.append(payload(i)).await?, Lsn(i));
    }
    let batch = wal.append_batch((101..=110).map(payload)).await?;
    assert_eq!(batch, Lsn(101)..Lsn(111));
    assert_eq!(
        wal.append_batch(Vec::<Bytes>::new()).await?,
        Lsn(111)..Lsn(111)
    );
    assert_eq!(
        wal.append(Bytes::new()).await?,
        Lsn(111),
        "empty entries are allowed"
    );
    assert_eq!((wal.last_lsn(), wal.durable_lsn()), (Lsn(111), Lsn(111)));
    for i in [1, 50, 100, 105, 110] {
        assert_eq!(wal.read(Lsn(i)).await?.data, payload(i));
    }
    assert!(wal.read(Lsn(111)).await?.data.is_empty());
    let mid = wal.range(Lsn(10)..Lsn(20)).await?;
    assert_eq!(
        mid.iter().map(|e| e.lsn.0).collect::<Vec<_>>(),
        (10..20).collect::<Vec<_>>()
    );
    let stats = wal.stats();
    assert_eq!(stats.appends, 111);
    assert!(stats.batches >= 1 && stats.syncs >= 1);
    wal.close().await?;
    assert!(matches!(wal.append(Bytes::new()).await, Err(Error::Closed)));
    Ok(())
}

async fn every_length_encoding_and_checksum_round_trips(driver: IoDriver) -> Result<()> {
    for length in [
        LengthEncoding::U16,
        LengthEncoding::U32,
        LengthEncoding::U64,
        LengthEncoding::Uvarint,
    ] {
        for checksum in [ChecksumKind::Crc32, ChecksumKind::Crc64] {
            for timestamps in [Timestamps::Off, Timestamps::UnixMicros] {
                let tmp = tempfile::tempdir()?;
                let o = opts(&driver)
                    .length_encoding(length)
                    .checksum(checksum)
                    .timestamps(timestamps);
                let wal = Wal::open(tmp.path(), o.clone()).await?;
                for i in 1..=20 {
                    wal.append(Record::with_term(i / 5, payload(i))).await?;
                }
                wal.append_batch((21..=30).map(payload)).await?;
                wal.close().await?;
                // Reopened with other format options: the log's own format wins.
                let other = opts(&driver)
                    .length_encoding(LengthEncoding::U64)
                    .checksum(ChecksumKind::Crc64);
                let wal = Wal::open(tmp.path(), other).await?;
                check_all(&wal, payload).await?;
                let e = wal.read(Lsn(12)).await?;
                assert_eq!(e.term, Some(2));
                assert_eq!(wal.read(Lsn(25)).await?.term, None);
                assert_eq!(
                    e.timestamp_us.is_some(),
                    timestamps == Timestamps::UnixMicros
                );
                wal.append(payload(31)).await?;
                wal.close().await?;
            }
        }
    }
    Ok(())
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_micros() as u64
}

async fn caller_timestamps_are_kept_and_the_log_stamps_the_rest(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("stamped");
    let wal = Wal::open(&dir, opts(&driver).timestamps(Timestamps::UnixMicros)).await?;
    let before = now_us();
    wal.append(Record::new("own").timestamp_us(42)).await?;
    wal.append("log's").await?;
    wal.append_batch([
        Record::new("b1").term(2).timestamp_us(7),
        Record::new("b2").term(2),
        Record::with_term(2, "b3").timestamp_us(0),
    ])
    .await?;
    let mut txn = wal.begin_log_txn(Duration::from_secs(10));
    txn.push(Record::new("t1").timestamp_us(u64::MAX))?;
    txn.push("t2")?;
    txn.commit().await?;
    let after = now_us();
    let stamped = |e: &Entry| {
        e.timestamp_us
            .is_some_and(|t| (before..=after).contains(&t))
    };
    for reopen in [false, true] {
        let wal = if reopen {
            wal.close().await?;
            Wal::open(&dir, opts(&driver)).await?
        } else {
            wal.clone()
        };
        let entries = wal.range(..).await?;
        let stamps: Vec<Option<u64>> = entries.iter().map(|e| e.timestamp_us).collect();
        assert_eq!(
            stamps[0],
            Some(42),
            "the caller's stamp, reopened: {reopen}"
        );
        assert!(stamped(&entries[1]), "the log's stamp: {:?}", entries[1]);
        assert_eq!((stamps[2], entries[2].term), (Some(7), Some(2)));
        assert!(stamped(&entries[3]) && entries[3].term == Some(2));
        assert_eq!(stamps[4], Some(0), "a zero stamp is the caller's too");
        assert_eq!(stamps[5], Some(u64::MAX));
        assert!(stamped(&entries[6]));
        assert_eq!(wal.read(Lsn(1)).await?.timestamp_us, Some(42));
        let streamed: Vec<Option<u64>> = wal
            .stream(Lsn(1))
            .map(|e| e.map(|e| e.timestamp_us))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        assert_eq!(streamed, stamps);
        if reopen {
            wal.close().await?;
        }
    }
    // A log without timestamps keeps none, the caller's included.
    let wal = Wal::open(tmp.path().join("plain"), opts(&driver)).await?;
    wal.append(Record::new("own").timestamp_us(42)).await?;
    assert_eq!(wal.read(Lsn(1)).await?.timestamp_us, None);
    wal.close().await
}

async fn entries_too_large_are_refused_and_nothing_is_lost(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let wal = Wal::open(
        tmp.path(),
        opts(&driver).length_encoding(LengthEncoding::U16),
    )
    .await?;
    wal.append(payload(1)).await?;
    let big = Bytes::from(vec![0u8; 70_000]);
    assert!(matches!(
        wal.append(big.clone()).await,
        Err(Error::TooLarge {
            len: 70_000,
            max: 65_535
        })
    ));
    assert!(matches!(
        wal.append_batch([payload(2), big]).await,
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(wal.append(Bytes::from(vec![1u8; 65_535])).await?, Lsn(2));
    assert_eq!(wal.last_lsn(), Lsn(2));
    wal.close().await?;
    let tmp = tempfile::tempdir()?;
    let wal = Wal::open(tmp.path(), opts(&driver).max_entry_bytes(1000)).await?;
    assert!(matches!(
        wal.append(vec![0u8; 1001]).await,
        Err(Error::TooLarge {
            len: 1001,
            max: 1000
        })
    ));
    let err = Wal::open(tmp.path().join("x"), opts(&driver).segment_size_bytes(10))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidArgument {
            name: "segment_size_bytes",
            ..
        }
    ));
    Ok(())
}

async fn concurrent_appends_get_dense_unique_lsns(driver: IoDriver) -> Result<()> {
    const TASKS: u64 = 64;
    const EACH: u64 = 100;
    let tmp = tempfile::tempdir()?;
    let wal = Wal::open(tmp.path(), opts(&driver)).await?;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let wal = wal.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..EACH {
                let data = Bytes::from(format!("{t}:{i}"));
                let lsn = if i % 10 == 0 {
                    wal.append_batch([data.clone(), data.clone()]).await?.start
                } else {
                    wal.append(data.clone()).await?
                };
                got.push((lsn, data));
            }
            Result::<_, Error>::Ok(got)
        }));
    }
    let mut by_lsn = HashMap::new();
    for task in tasks {
        let got = task.await.expect("task")?;
        // One task's appends, each awaited before the next, get increasing lsns.
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "in order");
        for (lsn, data) in got {
            assert!(by_lsn.insert(lsn, data).is_none(), "lsn {lsn} given twice");
        }
    }
    let total = TASKS * EACH + TASKS * EACH / 10;
    assert_eq!(wal.last_lsn(), Lsn(total));
    let entries = wal.range(..).await?;
    assert_eq!(entries.len() as u64, total);
    for e in &entries {
        if let Some(data) = by_lsn.get(&e.lsn) {
            assert_eq!(&e.data, data);
        }
    }
    let stats = wal.stats();
    eprintln!(
        "{:?}: {} appends in {} batches, {} syncs",
        stats.backend, stats.appends, stats.batches, stats.syncs
    );
    assert!(
        stats.batches < total,
        "grouped commit put several entries in a batch"
    );
    wal.close().await
}

async fn reopen_after_close_and_after_drop(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let wal = Wal::open(tmp.path(), opts(&driver)).await?;
    wal.append_batch((1..=50).map(payload)).await?;
    wal.close().await?;
    let wal = Wal::open(tmp.path(), opts(&driver)).await?;
    check_all(&wal, payload).await?;
    assert_eq!(wal.append(payload(51)).await?, Lsn(51));
    drop(wal);
    // The dropped handle's writer finishes and releases the lock.
    let wal = loop {
        match Wal::open(tmp.path(), opts(&driver)).await {
            Err(Error::Locked { .. }) => tokio::time::sleep(Duration::from_millis(10)).await,
            other => break other?,
        }
    };
    assert_eq!(wal.last_lsn(), Lsn(51));
    check_all(&wal, payload).await?;
    assert_eq!(wal.stats().recovered_entries, 51);
    wal.close().await
}

/// A crash while the meta or cut record is written leaves its temporary file: opening the log
/// removes it (the real record, or none, stands), and a read-only open leaves the directory be.
async fn leftover_temporary_records_are_removed_at_open(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let wal = Wal::open(tmp.path(), opts(&driver)).await?;
    wal.append(payload(1)).await?;
    wal.close().await?;
    for name in ["wal.meta.tmp", "wal.cut.tmp"] {
        std::fs::write(tmp.path().join(name), [7u8; 48])?;
    }
    let ro = Wal::open_read_only(tmp.path(), opts(&driver)).await?;
    assert_eq!(ro.read(Lsn(1)).await?.data, payload(1));
    drop(ro);
    assert!(tmp.path().join("wal.cut.tmp").exists());
    let wal = Wal::open(tmp.path(), opts(&driver)).await?;
    assert_eq!(wal.read(Lsn(1)).await?.data, payload(1));
    for name in ["wal.meta.tmp", "wal.cut.tmp"] {
        assert!(!tmp.path().join(name).exists(), "{name} left behind");
    }
    wal.close().await
}

async fn segments_rotate_and_recover(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let o = opts(&driver).segment_size_bytes(64 << 10);
    let wal = Wal::open(tmp.path(), o.clone()).await?;
    for chunk in 0..40u64 {
        wal.append_batch((chunk * 50 + 1..=chunk * 50 + 50).map(payload))
            .await?;
    }
    // A batch larger than a segment gets a segment of its own.
    let big: Vec<Bytes> = (0..10).map(|_| Bytes::from(vec![9u8; 20_000])).collect();
    let range = wal.append_batch(big).await?;
    assert_eq!(range, Lsn(2001)..Lsn(2011));
    let stats = wal.stats();
    assert!(stats.segments > 5, "{stats:?}");
    wal.close().await?;
    assert_eq!(segments(tmp.path()).len() as u64, stats.segments);
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".prepared"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "close removes the segment prepared ahead: {leftovers:?}"
    );
    let wal = Wal::open(tmp.path(), o).await?;
    let expect = |l: u64| {
        if l <= 2000 {
            payload(l)
        } else {
            Bytes::from(vec![9u8; 20_000])
        }
    };
    check_all(&wal, expect).await?;
    assert_eq!(wal.stats().recovered_segments, stats.segments);
    wal.close().await
}

/// Under policies that do not sync every batch, bulk writes go direct and small ones through the
/// page cache (see `DIRECT_BULK_BYTES` in the writer): mixed, across rotations, every entry reads
/// back at once, from a stream running alongside, and after reopening.
async fn bulk_writes_mixed_with_small_ones_read_back_and_recover(driver: IoDriver) -> Result<()> {
    for policy in [
        SyncPolicy::None,
        SyncPolicy::Periodic {
            interval: Duration::from_millis(5),
            max_unsynced_entries: 10_000,
        },
    ] {
        let tmp = tempfile::tempdir()?;
        let o = opts(&driver)
            .segment_size_bytes(1 << 20)
            .sync_policy(policy);
        let wal = Wal::open(tmp.path(), o.clone()).await?;
        let rounds = 0..12u64;
        let last = rounds
            .clone()
            .map(|r| 2000 + r * 37 + r % 4 + 1)
            .sum::<u64>();
        // A change feed from the start follows every entry as it becomes durable.
        let reader = {
            let wal = wal.clone();
            tokio::spawn(async move {
                let mut tail = Box::pin(wal.tail(Lsn(1)));
                for want in 1..=last {
                    let e = tail.next().await.expect("the tail ends only at close")?;
                    assert_eq!((e.lsn, &e.data), (Lsn(want), &payload(want)));
                }
                Ok::<(), Error>(())
            })
        };
        let mut next = 1u64;
        for round in rounds {
            // ~300 KiB in one call, then a few small appends, then a read of both.
            let n = 2000 + round * 37;
            let range = wal.append_batch((next..next + n).map(payload)).await?;
            assert_eq!(range, Lsn(next)..Lsn(next + n));
            next += n;
            for _ in 0..(round % 4 + 1) {
                assert_eq!(wal.append(payload(next)).await?, Lsn(next));
                next += 1;
            }
            for lsn in [range.start.0, range.end.0 - 1, next - 1] {
                assert_eq!(wal.read(Lsn(lsn)).await?.data, payload(lsn), "lsn {lsn}");
            }
        }
        assert_eq!(next - 1, last);
        wal.sync().await?;
        tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the tail delivers every durable entry")
            .expect("reader task")?;
        let stats = wal.stats();
        assert!(stats.segments > 3, "{stats:?}");
        wal.close().await?;
        let wal = Wal::open(tmp.path(), o).await?;
        assert_eq!(wal.last_lsn(), Lsn(next - 1));
        check_all(&wal, payload).await?;
        wal.close().await?;
    }
    Ok(())
}

/// A call larger than a segment needs a segment made for it. Small appenders that fill their
/// segments meanwhile must not take that room first (and again each time it is made): each large
/// call is staged in the segment made for it, within a bound, and everything reads back, in
/// order, after a reopen.
async fn calls_larger_than_a_segment_are_staged_while_small_ones_rotate(
    driver: IoDriver,
) -> Result<()> {
    const SMALL_TASKS: u64 = 3;
    const LARGE_CALLS: u64 = 8;
    const LARGE_ENTRIES: u64 = 220;
    let tmp = tempfile::tempdir()?;
    let o = opts(&driver)
        .segment_size_bytes(64 << 10)
        .sync_policy(SyncPolicy::None);
    let wal = Wal::open(tmp.path(), o.clone()).await?;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut small = Vec::new();
    for t in 0..SMALL_TASKS {
        let (wal, done) = (wal.clone(), done.clone());
        small.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                wal.append(Bytes::from(format!("s{t}:{n}:{}", "x".repeat(90))))
                    .await?;
                n += 1;
                if n.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            Result::<_, Error>::Ok(n)
        }));
    }
    let mut large = Vec::new();
    for c in 0..LARGE_CALLS {
        // ~1 KiB entries: each call is ~3.5 segments.
        let batch =
            (0..LARGE_ENTRIES).map(|i| Bytes::from(format!("L{c}:{i}:{}", "y".repeat(1000))));
        let range = tokio::time::timeout(Duration::from_secs(20), wal.append_batch(batch))
            .await
            .expect("a large call gets its room while small calls rotate")?;
        assert_eq!(range.end.0 - range.start.0, LARGE_ENTRIES);
        large.push(range);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut small_counts = Vec::new();
    for task in small {
        small_counts.push(task.await.expect("small task")?);
    }
    wal.close().await?;

    let wal = Wal::open(tmp.path(), o).await?;
    let entries = wal.range(..).await?;
    assert_eq!(
        entries.len() as u64,
        LARGE_CALLS * LARGE_ENTRIES + small_counts.iter().sum::<u64>()
    );
    let mut next_small = vec![0u64; SMALL_TASKS as usize];
    for e in &entries {
        let text = std::str::from_utf8(&e.data).expect("utf-8");
        let mut parts = text.split(':');
        let who = parts.next().expect("writer");
        let seq: u64 = parts.next().expect("seq").parse().expect("number");
        if let Some(c) = who.strip_prefix('L') {
            let c: usize = c.parse().expect("call");
            assert_eq!(
                e.lsn,
                Lsn(large[c].start.0 + seq),
                "large call {c} is contiguous"
            );
        } else {
            let t: usize = who[1..].parse().expect("task");
            assert_eq!(seq, next_small[t], "task {t}'s appends in order");
            next_small[t] += 1;
        }
    }
    assert_eq!(next_small, small_counts);
    eprintln!(
        "{} large calls of {} entries among {:?} small appends; {} segments",
        LARGE_CALLS,
        LARGE_ENTRIES,
        small_counts,
        wal.stats().segments
    );
    wal.close().await
}

/// Writes `n` entries and closes, then removes the seal `close` writes after the last entry, so
/// that the files are as a crash after the last append leaves them; returns the last segment.
async fn small_log(driver: &IoDriver, dir: &Path, n: u64) -> Result<PathBuf> {
    let wal = Wal::open(dir, opts(driver)).await?;
    for i in 1..=n {
        wal.append(payload(i)).await?;
    }
    wal.close().await?;
    let seg = segments(dir).pop().expect("a segment");
    remove_seal(driver, dir, &seg).await?;
    Ok(seg)
}

/// Zeroes what follows the last entry of `seg`, the last segment of the closed log in `dir`, and
/// removes the clean-close record from `wal.meta`: the files as a crash leaves them.
async fn remove_seal(driver: &IoDriver, dir: &Path, seg: &Path) -> Result<()> {
    common::strip_clean_close(dir);
    let wal = Wal::open_read_only(dir, opts(driver)).await?;
    let info = wal.segments().pop().expect("a segment");
    assert_eq!(info.path, seg);
    wal.close().await?;
    // (`close` writes none where it would cross a 512-byte sector.)
    let end = data_end(seg).max(info.data_bytes);
    let f = std::fs::OpenOptions::new().write(true).open(seg)?;
    f.write_all_at(
        &vec![0u8; (end - info.data_bytes) as usize],
        info.data_bytes,
    )?;
    Ok(())
}

fn data_end(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1)
}

async fn torn_tails_are_cut_at_every_byte(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let master = tmp.path().join("master");
    let seg = small_log(&driver, &master, 12).await?;
    let end = data_end(&seg);
    let original = std::fs::read(&seg)?;
    // Offsets of the last three frames: read them from a reopened log's stats indirectly by
    // trying every cut point across the last ~3 frames' bytes.
    let from = end.saturating_sub(3 * 340).max(64);
    let mut cuts = 0;
    let mut prev_last = 0;
    let mut torn_reported = 0;
    for cut in from..end {
        let dir = tmp.path().join(format!("cut{cut}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(master.join("wal.meta"), dir.join("wal.meta"))?;
        let copy = dir.join(seg.file_name().unwrap());
        let mut bytes = original.clone();
        // A torn write: everything from `cut` on never reached the disk.
        bytes[cut as usize..].fill(0);
        std::fs::write(&copy, &bytes)?;
        let wal = Wal::open(&dir, opts(&driver)).await?;
        let last = wal.last_lsn();
        assert!(
            last.0 < 12,
            "cut at {cut} inside the last frame keeps it: last lsn {last}"
        );
        assert!(last.0 >= prev_last, "a later cut keeps no fewer entries");
        prev_last = last.0;
        check_all(&wal, payload).await?;
        // A cut exactly at a frame boundary is a clean end; any other cut is a torn tail.
        if let Some(torn) = wal.stats().torn_tail {
            assert!(torn.offset <= cut);
            torn_reported += 1;
        }
        // The log takes appends again, right after the cut.
        assert_eq!(wal.append(payload(last.0 + 1)).await?, last.next());
        wal.close().await?;
        let wal = Wal::open(&dir, opts(&driver)).await?;
        assert_eq!(wal.last_lsn(), last.next());
        check_all(&wal, payload).await?;
        wal.close().await?;
        std::fs::remove_dir_all(&dir)?;
        cuts += 1;
    }
    // Shortening the file itself (not just zeroing) is a torn tail too.
    let dir = tmp.path().join("short");
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(master.join("wal.meta"), dir.join("wal.meta"))?;
    let copy = dir.join(seg.file_name().unwrap());
    std::fs::write(&copy, &original[..(end - 7) as usize])?;
    let wal = Wal::open(&dir, opts(&driver)).await?;
    assert_eq!(wal.last_lsn(), Lsn(11));
    wal.close().await?;
    assert_eq!(prev_last, 11, "a cut in the last frame loses only it");
    assert!(
        torn_reported + 8 >= cuts,
        "{torn_reported} of {cuts} cuts reported as torn"
    );
    eprintln!("{cuts} cut points recovered");
    Ok(())
}

async fn strict_mode_refuses_a_torn_tail(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let seg = small_log(&driver, tmp.path(), 5).await?;
    let end = data_end(&seg);
    let f = std::fs::OpenOptions::new().write(true).open(&seg)?;
    f.write_all_at(&[0u8; 10], end - 10)?;
    drop(f);
    let err = Wal::open(
        tmp.path(),
        opts(&driver).recovery_mode(RecoveryMode::Strict),
    )
    .await
    .unwrap_err();
    match err {
        Error::Corruption {
            file,
            kind: CorruptionKind::TornTail { .. },
            ..
        } => assert_eq!(file, seg),
        other => panic!("expected a torn-tail corruption, got {other:?}"),
    }
    // The default mode repairs it.
    let wal = Wal::open(tmp.path(), opts(&driver)).await?;
    assert_eq!(wal.last_lsn(), Lsn(4));
    wal.close().await
}

/// Entries of the last sync before `close` have no later frame to vouch that they were durable;
/// the seal `close` writes does. Damage to them, whether valid frames follow or not, is then
/// corruption under both recovery modes, never a torn tail to cut. Without the seal (as a crash
/// leaves the files) the same damage cannot be told from a torn write, and is cut.
async fn a_clean_close_lets_recovery_tell_damage_from_a_torn_tail(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    for policy in [SyncPolicy::None, SyncPolicy::Immediate] {
        let master = tmp.path().join(format!("{policy:?}"));
        let o = opts(&driver).sync_policy(policy);
        let wal = Wal::open(&master, o.clone()).await?;
        // Under `None` nothing is synced before `close`; under `Immediate` the last append is
        // the last sync, and each earlier one is vouched for by the frames after it.
        for i in 1..=10 {
            wal.append(payload(i)).await?;
        }
        wal.close().await?;
        let seg = segments(&master).pop().expect("a segment");
        let original = std::fs::read(&seg)?;
        assert!(
            data_end(&seg) > common::wal_data_end(&master, opts(&driver)).await?,
            "{policy:?}: close wrote a seal (these sizes keep it within a sector)"
        );
        // The last occurrence: an entry's payload may also be part of an earlier one's.
        let at = |lsn: u64| {
            let p = payload(lsn);
            original
                .windows(p.len())
                .rposition(|w| w == &p[..])
                .expect("payload in the file")
        };
        for (lsn, sealed) in [(5, true), (10, true), (5, false), (10, false)] {
            let dir = tmp.path().join(format!("{policy:?}-{lsn}-{sealed}"));
            std::fs::create_dir_all(&dir)?;
            std::fs::copy(master.join("wal.meta"), dir.join("wal.meta"))?;
            let copy = dir.join(seg.file_name().unwrap());
            std::fs::write(&copy, &original)?;
            if !sealed {
                remove_seal(&driver, &dir, &copy).await?;
            }
            let mut bytes = std::fs::read(&copy)?;
            bytes[at(lsn)] ^= 0x40;
            std::fs::write(&copy, &bytes)?;
            let vouched_without_seal = policy == SyncPolicy::Immediate && lsn < 10;
            if sealed || vouched_without_seal {
                for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
                    match Wal::open(&dir, o.clone().recovery_mode(mode)).await {
                        Err(Error::Corruption { file, kind, .. }) => {
                            assert_eq!(file, copy);
                            assert!(
                                matches!(kind, CorruptionKind::DamageBeforeValidData { .. }),
                                "{policy:?} lsn {lsn} {mode:?}: {kind:?}"
                            );
                        }
                        other => panic!("{policy:?} lsn {lsn} {mode:?}: {other:?}"),
                    }
                }
                if !sealed {
                    continue;
                }
                // Nothing was cut: with the byte back, every entry is there.
                std::fs::write(&copy, &original)?;
                let wal = Wal::open(&dir, o.clone()).await?;
                assert_eq!(wal.last_lsn(), Lsn(10));
                assert!(wal.stats().torn_tail.is_none());
                check_all(&wal, payload).await?;
                // The next append overwrites the seal; the log reopens with both.
                assert_eq!(wal.append(payload(11)).await?, Lsn(11));
                wal.close().await?;
                let wal = Wal::open(&dir, o.clone()).await?;
                assert_eq!(wal.last_lsn(), Lsn(11));
                assert!(wal.stats().torn_tail.is_none());
                check_all(&wal, payload).await?;
                wal.close().await?;
            } else {
                let wal = Wal::open(&dir, o.clone()).await?;
                assert_eq!(
                    wal.last_lsn(),
                    Lsn(lsn - 1),
                    "{policy:?}: cut as a torn tail"
                );
                assert!(wal.stats().torn_tail.is_some());
                wal.close().await?;
            }
        }
    }
    Ok(())
}

async fn damage_before_valid_frames_is_corruption(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let seg = small_log(&driver, tmp.path(), 40).await?;
    let end = data_end(&seg);
    let original = std::fs::read(&seg)?;
    let mut failures = 0;
    // Flip a byte at many places in the first half of the data: every later frame was written
    // after the damaged one was durable, so this is corruption, never a torn tail.
    for at in (80..end / 2).step_by(97) {
        let mut bytes = original.clone();
        bytes[at as usize] ^= 0x5a;
        std::fs::write(&seg, &bytes)?;
        for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
            match Wal::open(tmp.path(), opts(&driver).recovery_mode(mode)).await {
                Err(Error::Corruption { file, offset, .. }) => {
                    assert_eq!(file, seg);
                    assert!(offset <= at, "damage at {at} reported at {offset}");
                    failures += 1;
                }
                Ok(_) => panic!("flip at {at} accepted"),
                Err(other) => panic!("flip at {at}: {other:?}"),
            }
        }
    }
    std::fs::write(&seg, &original)?;
    let wal = Wal::open(tmp.path(), opts(&driver)).await?;
    assert_eq!(wal.last_lsn(), Lsn(40));
    wal.close().await?;
    assert!(failures > 10);
    Ok(())
}

async fn truncate_front_back_and_reset_survive_reopen(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let o = opts(&driver).segment_size_bytes(64 << 10);
    let wal = Wal::open(tmp.path(), o.clone()).await?;
    for chunk in 0..20u64 {
        wal.append_batch((chunk * 50 + 1..=chunk * 50 + 50).map(payload))
            .await?;
    }
    let before = segments(tmp.path()).len();
    wal.truncate_front(Lsn(600)).await?;
    assert_eq!(wal.first_lsn(), Lsn(600));
    assert!(
        segments(tmp.path()).len() < before,
        "whole segments below the start are deleted"
    );
    assert!(matches!(
        wal.read(Lsn(599)).await,
        Err(Error::OutOfRange {
            first: Lsn(600),
            ..
        })
    ));
    wal.truncate_back(Lsn(900)).await?;
    assert_eq!(wal.last_lsn(), Lsn(900));
    assert_eq!(wal.append(Bytes::from_static(b"new 901")).await?, Lsn(901));
    assert!(matches!(
        wal.truncate_back(Lsn(10)).await,
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        wal.truncate_front(Lsn(5000)).await,
        Err(Error::OutOfRange { .. })
    ));
    wal.close().await?;

    let wal = Wal::open(tmp.path(), o.clone()).await?;
    assert_eq!((wal.first_lsn(), wal.last_lsn()), (Lsn(600), Lsn(901)));
    assert_eq!(
        wal.read(Lsn(901)).await?.data,
        Bytes::from_static(b"new 901")
    );
    check_all(&wal, |l| {
        if l == 901 {
            Bytes::from_static(b"new 901")
        } else {
            payload(l)
        }
    })
    .await?;
    wal.reset(Lsn(5000)).await?;
    assert_eq!((wal.first_lsn(), wal.last_lsn()), (Lsn(5000), Lsn(4999)));
    assert_eq!(wal.append(payload(5000)).await?, Lsn(5000));
    wal.close().await?;

    let wal = Wal::open(tmp.path(), o.clone()).await?;
    assert_eq!((wal.first_lsn(), wal.last_lsn()), (Lsn(5000), Lsn(5000)));
    assert_eq!(segments(tmp.path()).len(), 1);
    // Reset backwards works too, and truncating to empty.
    wal.reset(Lsn(3)).await?;
    wal.append_batch((3..=10).map(payload)).await?;
    wal.truncate_front(Lsn(11)).await?;
    assert_eq!((wal.first_lsn(), wal.last_lsn()), (Lsn(11), Lsn(10)));
    wal.close().await?;
    let wal = Wal::open(tmp.path(), o).await?;
    assert_eq!((wal.first_lsn(), wal.last_lsn()), (Lsn(11), Lsn(10)));
    assert_eq!(wal.append(payload(11)).await?, Lsn(11));
    wal.close().await
}

async fn truncate_back_inside_a_batch_keeps_the_prefix(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let wal = Wal::open(tmp.path(), opts(&driver)).await?;
    wal.append_batch((1..=10).map(payload)).await?;
    wal.truncate_back(Lsn(4)).await?;
    wal.close().await?;
    let wal = Wal::open(tmp.path(), opts(&driver)).await?;
    assert_eq!(
        wal.last_lsn(),
        Lsn(4),
        "the kept part of the batch survives recovery"
    );
    assert!(wal.stats().torn_tail.is_none());
    check_all(&wal, payload).await?;
    wal.truncate_back(Lsn(0)).await?;
    assert_eq!(wal.last_lsn(), Lsn(0));
    assert_eq!(wal.append(payload(1)).await?, Lsn(1));
    wal.close().await
}

async fn log_transactions_commit_roll_back_and_expire(driver: IoDriver) -> Result<()> {
    // A commit is one call: with less room for pending appends than `max_log_txn_bytes`, the
    // transaction is bounded by that room, and says so with `LogTxnTooLarge` at `push`.
    {
        let tmp = tempfile::tempdir()?;
        let o = opts(&driver).max_pending_bytes(1 << 20);
        let wal = Wal::open(tmp.path(), o).await?;
        let mut txn = wal.begin_log_txn(Duration::from_secs(10));
        txn.push(vec![1u8; 600 << 10])?;
        assert!(matches!(
            txn.push(vec![2u8; 600 << 10]),
            Err(Error::LogTxnTooLarge { max, .. }) if max == 1 << 20
        ));
        assert_eq!(txn.commit().await?.end, Lsn(2));
        wal.close().await?;
    }
    let tmp = tempfile::tempdir()?;
    let wal = Wal::open(tmp.path(), opts(&driver).max_log_txn_bytes(1000)).await?;
    let mut txn = wal.begin_log_txn(Duration::from_secs(10));
    let mut other = wal.begin_log_txn(Duration::from_secs(10));
    assert_eq!(wal.open_log_txns(), 2);
    txn.push(payload(1))?;
    txn.push(payload(2))?;
    other.push(Bytes::from_static(b"never"))?;
    assert!(matches!(
        txn.push(vec![0u8; 990]),
        Err(Error::LogTxnTooLarge { max: 1000, .. })
    ));
    assert_eq!(txn.len(), 2, "a refused push leaves the transaction usable");
    assert_eq!(txn.commit().await?, Lsn(1)..Lsn(3));
    other.rollback();
    assert_eq!(wal.open_log_txns(), 0);
    let mut short = wal.begin_log_txn(Duration::from_millis(20));
    short.push(payload(3))?;
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(wal.open_log_txns(), 0, "an expired transaction is not open");
    assert!(matches!(short.push(payload(4)), Err(Error::LogTxnExpired)));
    assert!(matches!(short.commit().await, Err(Error::LogTxnExpired)));
    let dropped = wal.begin_log_txn(Duration::from_secs(1));
    drop(dropped);
    assert_eq!(wal.open_log_txns(), 0);
    assert_eq!(wal.last_lsn(), Lsn(2));
    check_all(&wal, payload).await?;
    wal.close().await
}

async fn a_second_open_is_locked_out(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let wal = Wal::open(tmp.path(), opts(&driver)).await?;
    let started = std::time::Instant::now();
    match Wal::open(tmp.path(), opts(&driver)).await {
        Err(Error::Locked { path }) => assert!(path.ends_with("LOCK")),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "it waited for the lock timeout"
    );
    let opener = {
        let (dir, o) = (
            tmp.path().to_path_buf(),
            opts(&driver).lock_timeout(Duration::from_secs(5)),
        );
        tokio::spawn(async move { Wal::open(dir, o).await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    wal.close().await?;
    let second = opener.await.expect("task")?;
    second.close().await
}

async fn streams_read_everything_and_tails_follow(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let wal = Wal::open(tmp.path(), opts(&driver).segment_size_bytes(64 << 10)).await?;
    wal.append_batch((1..=1000).map(payload)).await?;
    let all: Vec<_> = wal.stream(Lsn(1)).collect().await;
    assert_eq!(all.len(), 1000);
    for (i, e) in all.into_iter().enumerate() {
        let e = e?;
        assert_eq!((e.lsn, e.data), (Lsn(i as u64 + 1), payload(i as u64 + 1)));
    }
    let tail_from_990: Vec<_> = wal
        .stream(Lsn(990))
        .map(|e| e.map(|e| e.lsn.0))
        .collect()
        .await;
    assert_eq!(
        tail_from_990.into_iter().collect::<Result<Vec<_>>>()?,
        (990..=1000).collect::<Vec<_>>()
    );
    let mut bad = wal.stream(Lsn(0));
    assert!(matches!(
        bad.next().await,
        Some(Err(Error::OutOfRange { .. }))
    ));
    assert!(bad.next().await.is_none());
    // Past the end + 1: it would skip entries not yet written.
    for from in [Lsn(1002), Lsn(5000)] {
        let mut past = wal.stream(from);
        match past.next().await {
            Some(Err(Error::OutOfRange { lsn, first, last })) => {
                assert_eq!((lsn, first, last), (from, Lsn(1), Lsn(1000)));
            }
            other => panic!("stream from {from}: {other:?}"),
        }
        assert!(past.next().await.is_none());
        let mut past = wal.tail(from);
        assert!(matches!(
            past.next().await,
            Some(Err(Error::OutOfRange { .. }))
        ));
    }
    // At the end + 1: nothing yet, and no error.
    assert!(wal.stream(Lsn(1001)).next().await.is_none());
    // A tail that has not yielded everything when the log closes says so.
    let mut behind = Box::pin(wal.tail(Lsn(1)));
    assert_eq!(behind.next().await.expect("entry")?.lsn, Lsn(1));

    let mut tail = Box::pin(wal.tail(Lsn(998)));
    for want in 998..=1000 {
        assert_eq!(tail.next().await.expect("entry")?.lsn, Lsn(want));
    }
    let writer = {
        let wal = wal.clone();
        tokio::spawn(async move {
            for i in 1001..=1010 {
                wal.append(payload(i)).await?;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            wal.close().await
        })
    };
    for want in 1001..=1010 {
        let e = tokio::time::timeout(Duration::from_secs(5), tail.next())
            .await
            .expect("tail delivers")
            .expect("entry")?;
        assert_eq!((e.lsn, e.data), (Lsn(want), payload(want)));
    }
    writer.await.expect("task")?;
    // Complete: it ends.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), tail.next())
            .await
            .expect("tail ends")
            .is_none()
    );
    // Behind: what it had read ahead, then `Closed` (not a silent end), then the end.
    let mut last = Lsn(1);
    let end = loop {
        match behind.next().await {
            Some(Ok(e)) => {
                assert_eq!(e.lsn, last.next());
                last = e.lsn;
            }
            other => break other,
        }
    };
    assert!(last < Lsn(1010), "read {last}");
    assert!(matches!(end, Some(Err(Error::Closed))), "{end:?}");
    assert!(behind.next().await.is_none());
    Ok(())
}

/// Reads the whole log, which ends at `last`: its lsns are dense from 1, and every acknowledged
/// entry is there with its data. Returns the entries.
async fn check_acknowledged<'a>(
    wal: &Wal,
    last: Lsn,
    acked: impl IntoIterator<Item = (&'a Lsn, &'a Bytes)>,
) -> Result<Vec<Entry>> {
    let entries = wal.range(..).await?;
    assert_eq!(entries.len() as u64, last.0, "lsns stay dense");
    for (lsn, data) in acked {
        assert_eq!(
            &entries[(lsn.0 - 1) as usize].data,
            data,
            "acknowledged lsn {lsn}"
        );
    }
    Ok(entries)
}

async fn appends_under_timeouts_keep_the_log_consistent(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let wal = Wal::open(tmp.path(), opts(&driver)).await?;
    let mut acked = HashMap::new();
    for i in 0..300u64 {
        let data = Bytes::from(format!("entry {i}"));
        if let Ok(res) =
            tokio::time::timeout(Duration::from_micros(100), wal.append(data.clone())).await
        {
            acked.insert(res?, data);
        }
    }
    let last = wal.sync().await?;
    assert_eq!(wal.durable_lsn(), last);
    check_acknowledged(&wal, last, &acked).await?;
    eprintln!(
        "{} of 300 appends acknowledged within 100 us; {} written",
        acked.len(),
        last.0
    );
    wal.close().await?;
    let wal = Wal::open(tmp.path(), opts(&driver)).await?;
    assert_eq!(wal.last_lsn(), last);
    wal.close().await
}

/// Many tasks append, each under a timeout of its own length (none, tiny, generous), while the
/// log rotates through small segments: appenders that lead the writer are dropped mid-write,
/// others while they wait. Every acknowledged append must read back at its lsn, lsns stay dense,
/// and the log reopens with the same entries.
async fn concurrent_appends_under_timeouts_across_rotations_lose_nothing(
    driver: IoDriver,
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let options = opts(&driver).segment_size_bytes(64 << 10);
    let wal = Wal::open(tmp.path(), options.clone()).await?;
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let wal = wal.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..150u64 {
                    let data = Bytes::from(format!(
                        "task {t} entry {i} {}",
                        "x".repeat((i * 7 % 200) as usize)
                    ));
                    let limit =
                        Duration::from_micros([0, 20, 80, 300, 100_000][((t + i) % 5) as usize]);
                    let res = if i % 3 == 0 {
                        tokio::time::timeout(limit, wal.append_batch([data.clone(), data.clone()]))
                            .await
                            .map(|r| r.map(|lsns| lsns.start))
                    } else {
                        tokio::time::timeout(limit, wal.append(data.clone())).await
                    };
                    if let Ok(lsn) = res {
                        acked.push((lsn?, data));
                    }
                }
                Ok::<_, Error>(acked)
            })
        })
        .collect();
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.expect("task")?);
    }
    let last = wal.sync().await?;
    let entries = check_acknowledged(&wal, last, acked.iter().map(|(l, d)| (l, d))).await?;
    assert!(wal.segments().len() > 2, "the workload rotated segments");
    wal.close().await?;
    let wal = Wal::open(tmp.path(), options).await?;
    assert_eq!(wal.last_lsn(), last);
    let reopened = wal.range(..).await?;
    for (a, b) in entries.iter().zip(&reopened) {
        assert_eq!((a.lsn, &a.data), (b.lsn, &b.data));
    }
    eprintln!(
        "{} of 1200 calls acknowledged under timeouts; {} entries written",
        acked.len(),
        last.0
    );
    wal.close().await
}

/// An append future polled once (it stages its entry and may start the write itself, leading the
/// writer) and then left alone, as a `select!` arm may be: other appends, `sync` and `close`
/// go on, its entry becomes durable, and the future still completes when polled again.
async fn an_append_polled_once_and_left_alone_holds_nothing_up(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let wal = Wal::open(tmp.path(), opts(&driver)).await?;
    let mut next = 1u64;
    for _ in 0..20 {
        assert_eq!(wal.append(payload(next)).await?, Lsn(next));
        let mut first = Box::pin(wal.append(payload(next + 1)));
        if let std::task::Poll::Ready(res) = futures::poll!(first.as_mut()) {
            // Done at the first poll (rare): nothing to leave alone this round.
            assert_eq!(res?, Lsn(next + 1));
            next += 2;
            continue;
        }
        let second = tokio::time::timeout(Duration::from_secs(5), wal.append(payload(next + 2)))
            .await
            .expect("an append is not held up by a future left alone")?;
        assert_eq!(second, Lsn(next + 2));
        let durable = tokio::time::timeout(Duration::from_secs(5), wal.sync())
            .await
            .expect("sync is not held up")?;
        assert!(durable >= second);
        let first = tokio::time::timeout(Duration::from_secs(5), first)
            .await
            .expect("the future left alone completes when polled again")?;
        assert_eq!(first, Lsn(next + 1));
        next += 3;
    }
    // Left alone for good: the entry is still written, durable, and the log closes.
    let mut last = Box::pin(wal.append(payload(next)));
    let _ = futures::poll!(last.as_mut());
    tokio::time::sleep(Duration::from_millis(20)).await;
    tokio::time::timeout(Duration::from_secs(5), wal.close())
        .await
        .expect("close is not held up")?;
    drop(last);
    let wal = tokio::time::timeout(Duration::from_secs(5), Wal::open(tmp.path(), opts(&driver)))
        .await
        .expect("reopen")?;
    assert_eq!(wal.last_lsn(), Lsn(next));
    assert_eq!(wal.read(Lsn(next)).await?.data, payload(next));
    wal.close().await
}

/// Under `SyncPolicy::None` an append returns once staged: its entry reads back at once (the read
/// has it written first), and a producer far faster than the disk is held to the stage's bound
/// (`max_batch_bytes`) instead of queueing without limit.
async fn staged_entries_are_readable_at_once_and_the_stage_stays_bounded(
    driver: IoDriver,
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let options = opts(&driver)
        .sync_policy(SyncPolicy::None)
        .max_batch_bytes(16 << 10)
        .max_pending_bytes(1 << 20);
    let wal = Wal::open(tmp.path(), options.clone()).await?;
    for i in 1..=50u64 {
        let lsn = wal.append(payload(i)).await?;
        assert_eq!(lsn, Lsn(i));
        assert_eq!(wal.last_lsn(), lsn);
        assert_eq!(wal.read(lsn).await?.data, payload(i), "readable at once");
    }
    let mut stream = wal.stream(Lsn(1));
    let mut n = 0;
    while let Some(e) = stream.next().await {
        assert_eq!(e?.data, payload(n + 1));
        n += 1;
    }
    assert_eq!(n, 50, "a stream reads staged entries too");
    // A burst of 20,000 appends from one task: the batches the writer gets stay within the bound.
    for i in 51..=20_050u64 {
        wal.append(payload(i)).await?;
    }
    let stats = wal.stats();
    let largest = stats.max_batch_entries;
    // 16 KiB of frames hold at most ~16 KiB / 14 B entries; a batch never exceeds the bound.
    assert!(largest <= (16 << 10) / 14, "a batch of {largest} entries");
    assert_eq!(wal.sync().await?, Lsn(20_050));
    wal.close().await?;
    let wal = Wal::open(tmp.path(), options).await?;
    assert_eq!(wal.last_lsn(), Lsn(20_050));
    assert_eq!(wal.read(Lsn(20_050)).await?.data, payload(20_050));
    wal.close().await
}

async fn ack_levels_are_a_floor_under_the_policy(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    // Under `None`, `Written` waits for the write but asks for no sync; `Durable` gets one, for
    // a log transaction too.
    let wal = Wal::open(
        tmp.path().join("none"),
        opts(&driver).sync_policy(SyncPolicy::None),
    )
    .await?;
    assert_eq!(wal.append_with(payload(1), Ack::Written).await?, Lsn(1));
    assert_eq!(
        wal.append_batch_with((2..=4).map(payload), Ack::Written)
            .await?,
        Lsn(2)..Lsn(5)
    );
    assert_eq!((wal.durable_lsn(), wal.stats().syncs), (Lsn(0), 0));
    let mut txn = wal.begin_log_txn(Duration::from_secs(10));
    txn.push(payload(5))?;
    assert_eq!(txn.commit_with(Ack::Durable).await?, Lsn(5)..Lsn(6));
    assert_eq!(wal.durable_lsn(), Lsn(5));
    check_all(&wal, payload).await?;
    wal.close().await?;
    // Under `Immediate`, a weaker level changes nothing: every call returns durable.
    let wal = Wal::open(tmp.path().join("immediate"), opts(&driver)).await?;
    for (i, ack) in [(1, Ack::Policy), (2, Ack::Written), (3, Ack::Durable)] {
        assert_eq!(wal.append_with(payload(i), ack).await?, Lsn(i));
        assert_eq!(wal.durable_lsn(), Lsn(i), "{ack:?}");
    }
    assert_eq!(Ack::default(), Ack::Policy);
    wal.close().await
}

async fn sync_policies_do_what_they_say(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let wal = Wal::open(
        tmp.path().join("none"),
        opts(&driver).sync_policy(SyncPolicy::None),
    )
    .await?;
    wal.append(payload(1)).await?;
    assert_eq!((wal.last_lsn(), wal.durable_lsn()), (Lsn(1), Lsn(0)));
    assert_eq!(wal.append_with(payload(2), Ack::Durable).await?, Lsn(2));
    assert_eq!(
        wal.durable_lsn(),
        Lsn(2),
        "a per-call override asks for more durability"
    );
    wal.append(payload(3)).await?;
    assert_eq!(wal.sync().await?, Lsn(3));
    assert_eq!(wal.stats().syncs, 2);
    wal.close().await?;

    let periodic = SyncPolicy::Periodic {
        interval: Duration::from_millis(20),
        max_unsynced_entries: 5,
    };
    let wal = Wal::open(
        tmp.path().join("periodic"),
        opts(&driver).sync_policy(periodic),
    )
    .await?;
    wal.append(payload(1)).await?;
    assert_eq!(wal.durable_lsn(), Lsn(0));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(wal.durable_lsn(), Lsn(1), "synced after the interval");
    for i in 2..=6 {
        wal.append(payload(i)).await?;
    }
    assert_eq!(
        wal.durable_lsn(),
        Lsn(6),
        "synced once max_unsynced_entries were written"
    );
    wal.close().await?;

    let grouped = SyncPolicy::Grouped {
        window: Duration::from_millis(5),
    };
    let wal = Wal::open(
        tmp.path().join("grouped"),
        opts(&driver).sync_policy(grouped),
    )
    .await?;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let wal = wal.clone();
            tokio::spawn(async move { wal.append(payload(i)).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("task")?;
    }
    let stats = wal.stats();
    assert_eq!(stats.durable_lsn, Lsn(16));
    assert!(stats.batches < 16, "the window gathered appends: {stats:?}");
    wal.close().await?;
    let err = Wal::open(
        tmp.path().join("bad"),
        opts(&driver).sync_policy(SyncPolicy::Periodic {
            interval: Duration::ZERO,
            max_unsynced_entries: 1,
        }),
    )
    .await
    .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidArgument {
            name: "sync_policy",
            ..
        }
    ));
    Ok(())
}

async fn out_of_range_reads_name_the_bounds(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let wal = Wal::open(tmp.path(), opts(&driver)).await?;
    wal.append_batch((1..=5).map(payload)).await?;
    match wal.read(Lsn(6)).await {
        Err(Error::OutOfRange { lsn, first, last }) => {
            assert_eq!((lsn, first, last), (Lsn(6), Lsn(1), Lsn(5)))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        wal.read(Lsn(0)).await,
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        wal.range(Lsn(3)..Lsn(9)).await,
        Err(Error::OutOfRange { .. })
    ));
    assert!(wal.range(Lsn(4)..Lsn(4)).await?.is_empty());
    wal.close().await
}

async fn a_range_is_bounded_in_bytes(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    assert!(matches!(
        Wal::open(tmp.path(), opts(&driver).max_range_bytes(1000)).await,
        Err(Error::InvalidArgument {
            name: "max_range_bytes",
            ..
        })
    ));
    let wal = Wal::open(tmp.path(), opts(&driver).max_range_bytes(4 << 10)).await?;
    let kib = |i: u64| Bytes::from(vec![i as u8; 1000]);
    wal.append_batch((1..=20).map(kib)).await?;
    let big = Bytes::from(vec![7u8; 10_000]);
    wal.append(big.clone()).await?;
    // Within the bound: read whole.
    let three = wal.range(Lsn(1)..Lsn(4)).await?;
    assert_eq!(three.len(), 3);
    assert!(three.iter().all(|e| e.data == kib(e.lsn.0)));
    // Beyond it: refused, naming the range's size and the bound; nothing else changes.
    match wal.range(..).await {
        Err(Error::TooLarge { len, max }) => {
            assert_eq!(max, 4 << 10);
            assert!(len > 20 * 1000 + 10_000, "{len}");
        }
        other => panic!("a range over max_range_bytes: {other:?}"),
    }
    match wal.range(Lsn(20)..=Lsn(21)).await {
        Err(Error::TooLarge { max, .. }) => assert_eq!(max, 4 << 10),
        other => panic!("{other:?}"),
    }
    // A single entry is always read, however large; a stream reads everything in chunks.
    assert_eq!(wal.range(Lsn(21)..=Lsn(21)).await?[0].data, big);
    assert_eq!(wal.read(Lsn(21)).await?.data, big);
    let all: Vec<Entry> = wal
        .stream(Lsn(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    assert_eq!(all.len(), 21);
    assert_eq!(wal.last_lsn(), Lsn(21));
    wal.close().await
}

async fn check_integrity_reads_every_entry_and_names_the_first_damage(
    driver: IoDriver,
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("log");
    let o = opts(&driver).segment_size_bytes(64 << 10);
    let wal = Wal::open(&dir, o.clone()).await?;
    for chunk in (1..=1000u64).collect::<Vec<_>>().chunks(50) {
        wal.append_batch(chunk.iter().map(|&i| payload(i))).await?;
    }
    let payload_bytes: u64 = (1..=1000).map(|i| payload(i).len() as u64).sum();
    let mut seen = Vec::new();
    let report = wal.check_integrity(|p| seen.push(p)).await?;
    assert!(report.is_sound(), "{report:?}");
    assert_eq!((report.first_lsn, report.last_lsn), (Lsn(1), Lsn(1000)));
    assert_eq!(report.entries, 1000);
    assert_eq!(report.segments, wal.segments().len() as u64);
    assert!(report.segments >= 3, "{report:?}");
    assert!(
        report.bytes > payload_bytes,
        "frames are larger than payloads"
    );
    let last = seen.last().expect("progress reported");
    assert_eq!((last.entries_checked, last.entries_total), (1000, 1000));
    assert_eq!(last.bytes_checked, report.bytes);
    assert!(
        seen.windows(2)
            .all(|w| w[0].entries_checked < w[1].entries_checked),
        "progress moves forward"
    );

    // Damage under the open handle: the check stops at it and names it, after what was sound.
    let first = wal.segments()[0].clone();
    let at = first.data_bytes / 2;
    let file = std::fs::OpenOptions::new().write(true).open(&first.path)?;
    let mut byte = [0u8; 1];
    std::fs::File::open(&first.path)?.read_exact_at(&mut byte, at)?;
    file.write_all_at(&[byte[0] ^ 0x5a], at)?;
    let report = wal.check_integrity(|_| {}).await?;
    let problem = report.problem.clone().expect("the damage is found");
    assert_eq!(problem.file, first.path);
    assert!(problem.offset <= at, "{problem:?} for a byte at {at}");
    assert!(!report.is_sound() && report.entries < 1000, "{report:?}");
    assert!(
        problem.to_string().starts_with("corruption in "),
        "{problem}"
    );
    file.write_all_at(&byte, at)?;
    wal.close().await?;
    assert!(matches!(
        wal.check_integrity(|_| {}).await,
        Err(Error::Closed)
    ));

    // Stray bytes past the end (what a crash leaves of an unsynced write): a read-only handle
    // reports the torn tail it may not cut; a writable open cuts it, and the log is sound.
    let last_seg = segments(&dir).last().cloned().expect("a segment");
    let mut bytes = std::fs::read(&last_seg)?;
    let end = bytes.iter().rposition(|&b| b != 0).expect("data") + 1;
    bytes[end + 1..end + 9].copy_from_slice(b"torn!!!!");
    std::fs::write(&last_seg, &bytes)?;
    let ro = Wal::open_read_only(&dir, o.clone()).await?;
    let report = ro.check_integrity(|_| {}).await?;
    assert_eq!(report.entries, 1000);
    match report.problem {
        Some(p) => {
            assert_eq!(p.file, last_seg);
            assert!(matches!(p.kind, CorruptionKind::TornTail { .. }), "{p:?}");
        }
        None => panic!("a read-only check reports the torn tail"),
    }
    ro.close().await?;
    let wal = Wal::open(&dir, o).await?;
    assert!(wal.stats().torn_tail.is_some());
    assert!(wal.check_integrity(|_| {}).await?.is_sound());
    wal.close().await
}

async fn a_failed_write_poisons_the_log_until_reopened(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    // A driver of its own, shut down under the log: every later I/O fails, as a dying disk would.
    let own = IoDriver::new(
        DriverOptions::default()
            .use_env(false)
            .backend(driver.backend()),
    )?;
    let wal = Wal::open(tmp.path(), opts(&own)).await?;
    wal.append_batch((1..=3).map(payload)).await?;
    own.shutdown().await;
    let first = wal.append(payload(4)).await.unwrap_err();
    assert!(
        matches!(first, Error::Poisoned { .. }),
        "the failing batch: {first:?}"
    );
    assert!(
        matches!(wal.append(payload(5)).await, Err(Error::Poisoned { .. })),
        "every later append"
    );
    assert!(matches!(wal.sync().await, Err(Error::Poisoned { .. })));
    assert!(matches!(
        wal.read(Lsn(1)).await,
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(
        wal.truncate_back(Lsn(1)).await,
        Err(Error::Poisoned { .. })
    ));
    assert_eq!(
        wal.last_lsn(),
        Lsn(3),
        "nothing was acknowledged past the failure"
    );
    let _ = wal.close().await;
    drop(wal);
    // Reopening runs recovery: every acknowledged entry is there, and the log works again.
    let wal = loop {
        match Wal::open(tmp.path(), opts(&driver)).await {
            Err(Error::Locked { .. }) => tokio::time::sleep(Duration::from_millis(10)).await,
            other => break other?,
        }
    };
    assert_eq!(wal.last_lsn(), Lsn(3));
    check_all(&wal, payload).await?;
    assert_eq!(wal.append(payload(4)).await?, Lsn(4));
    wal.close().await
}

// Regressions found by review (numbered in the order they were found).

/// Under `SyncPolicy::None`, `truncate_front` recorded a start beyond what was durable: a power
/// loss could leave a start past the log's end, and the log could not be opened.
async fn regression_1_truncate_front_syncs_what_it_keeps(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let wal = Wal::open(tmp.path(), opts(&driver).sync_policy(SyncPolicy::None)).await?;
    wal.append_batch((1..=10).map(payload)).await?;
    assert_eq!(wal.durable_lsn(), Lsn(0));
    wal.truncate_front(Lsn(5)).await?;
    assert!(
        wal.durable_lsn() >= Lsn(10),
        "the entries were synced before the start was recorded"
    );
    wal.close().await
}

/// Recovery took the first segment present as the log's start, so losing the first segment went
/// unnoticed.
async fn regression_2_a_missing_first_segment_is_corruption(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let o = opts(&driver).segment_size_bytes(64 << 10);
    let wal = Wal::open(tmp.path(), o.clone()).await?;
    for chunk in 0..30u64 {
        wal.append_batch((chunk * 50 + 1..=chunk * 50 + 50).map(payload))
            .await?;
    }
    wal.close().await?;
    let segs = segments(tmp.path());
    assert!(segs.len() > 2, "{} segments", segs.len());
    std::fs::remove_file(&segs[0])?;
    match Wal::open(tmp.path(), o).await {
        Err(Error::Corruption {
            kind:
                CorruptionKind::MissingSegment {
                    expected: Lsn(1), ..
                },
            ..
        }) => Ok(()),
        other => panic!("expected a missing segment, got {other:?}"),
    }
}

/// A segment file grown to terabytes made recovery try to allocate a buffer for all of it.
async fn regression_3_an_impossibly_large_segment_is_corruption_not_an_allocation(
    driver: IoDriver,
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let seg = small_log(&driver, tmp.path(), 3).await?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)?
        .set_len(5 << 30)?; // sparse
    match Wal::open(tmp.path(), opts(&driver)).await {
        Err(Error::Corruption {
            kind: CorruptionKind::FrameLength { .. },
            file,
            ..
        }) => assert_eq!(file, seg),
        other => panic!("expected corruption, got {other:?}"),
    }
    let wal = Wal::open(tmp.path().join("other"), opts(&driver)).await?;
    assert!(matches!(
        wal.reset(Lsn(u64::MAX)).await,
        Err(Error::InvalidArgument {
            name: "next_lsn",
            ..
        })
    ));
    wal.close().await
}

/// A tail past the cut of `truncate_back` went on with the new entries after it, silently
/// skipping the replaced ones.
async fn regression_4_a_tail_ends_when_the_log_is_cut_below_it(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let wal = Wal::open(tmp.path(), opts(&driver)).await?;
    wal.append_batch((1..=10).map(payload)).await?;
    let mut tail = wal.tail(Lsn(1));
    for want in 1..=10 {
        assert_eq!(tail.next().await.expect("entry")?.lsn, Lsn(want));
    }
    wal.truncate_back(Lsn(5)).await?;
    wal.append_batch((6..=12).map(|i| Bytes::from(format!("new {i}"))))
        .await?;
    match tail.next().await {
        Some(Err(Error::OutOfRange { lsn: Lsn(11), .. })) => {}
        other => panic!("expected the tail to end with an error, got {other:?}"),
    }
    assert!(tail.next().await.is_none());
    wal.close().await
}

/// A stream reads 4 MiB chunks. A `truncate_back` past the chunk it is consuming, then new
/// appends there, reach the stream as the new entries (a read ahead of the next chunk, were
/// there one, would have to be dropped).
async fn a_stream_never_yields_what_a_cut_replaced_past_its_chunk(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let wal = Wal::open(tmp.path(), opts(&driver).segment_size_bytes(4 << 20)).await?;
    let old = |i: u64| Bytes::from(vec![(i % 251) as u8; 1000]);
    let new = |i: u64| Bytes::from(format!("new {i}"));
    for start in (1..=12_000u64).step_by(1000) {
        wal.append_batch((start..start + 1000).map(old)).await?;
    }
    let mut stream = wal.stream(Lsn(1));
    // The first chunk is read: about 4,000 entries.
    assert_eq!(stream.next().await.expect("entry")?.data, old(1));
    wal.truncate_back(Lsn(6_000)).await?;
    wal.append_batch((6_001..=7_000).map(new)).await?;
    let mut want = 2u64;
    while let Some(e) = stream.next().await {
        let e = e?;
        assert_eq!(e.lsn, Lsn(want));
        let expect = if want <= 6_000 { old(want) } else { new(want) };
        assert_eq!(e.data, expect, "lsn {want}");
        want += 1;
    }
    assert_eq!(want, 7_001, "the stream ends at the log's end");
    // Dropping a stream in the middle holds nothing up.
    let mut stream = wal.stream(Lsn(1));
    stream.next().await.expect("entry")?;
    drop(stream);
    wal.append(new(7_001)).await?;
    wal.close().await
}

#[derive(Debug, Clone, Copy)]
enum Maintenance {
    Front,
    Back,
    Reset,
}

/// Opens `dir` with `driver`, waiting for a dropped handle's writer to release the lock.
async fn reopen(dir: &Path, o: WalOptions) -> Result<Wal> {
    for _ in 0..500 {
        match Wal::open(dir, o.clone()).await {
            Err(Error::Locked { .. }) => tokio::time::sleep(Duration::from_millis(10)).await,
            other => return other,
        }
    }
    panic!("the lock was never released")
}

/// Every I/O step of truncate_front, truncate_back and reset is made to fail in turn (the
/// driver fails every operation from the Nth on, as a dying disk would); the log must then open
/// with its entries intact and either untouched or fully changed where the step sequence allows.
async fn truncations_and_resets_interrupted_at_every_step_recover(driver: IoDriver) -> Result<()> {
    let o = |d: &IoDriver| opts(d).segment_size_bytes(64 << 10);
    for op in [Maintenance::Front, Maintenance::Back, Maintenance::Reset] {
        let mut completed = false;
        for step in 0..60u64 {
            let tmp = tempfile::tempdir()?;
            let own = IoDriver::new(
                DriverOptions::default()
                    .use_env(false)
                    .backend(driver.backend()),
            )?;
            let wal = Wal::open(tmp.path(), o(&own)).await?;
            for chunk in 0..20u64 {
                wal.append_batch((chunk * 50 + 1..=chunk * 50 + 50).map(payload))
                    .await?;
            }
            own.fail_after(step);
            let res = match op {
                Maintenance::Front => wal.truncate_front(Lsn(600)).await,
                Maintenance::Back => wal.truncate_back(Lsn(425)).await,
                Maintenance::Reset => wal.reset(Lsn(5000)).await,
            };
            drop(wal);
            own.clear_failures();
            let wal = reopen(tmp.path(), o(&driver)).await?;
            let (first, last) = (wal.first_lsn(), wal.last_lsn());
            match op {
                Maintenance::Front => {
                    assert!(
                        first == Lsn(1) || first == Lsn(600),
                        "step {step}: first {first}"
                    );
                    assert_eq!(last, Lsn(1000), "step {step}");
                    if res.is_ok() {
                        assert_eq!(first, Lsn(600), "step {step}: a completed truncation holds");
                    }
                }
                Maintenance::Back => {
                    assert_eq!(first, Lsn(1), "step {step}");
                    assert!(
                        last >= Lsn(425) && last <= Lsn(1000),
                        "step {step}: last {last}"
                    );
                    if res.is_ok() {
                        assert_eq!(last, Lsn(425), "step {step}: a completed truncation holds");
                    }
                }
                Maintenance::Reset => {
                    let untouched = (first, last) == (Lsn(1), Lsn(1000));
                    let reset = (first, last) == (Lsn(5000), Lsn(4999));
                    assert!(untouched || reset, "step {step}: {first}..={last}");
                    if res.is_ok() {
                        assert!(reset, "step {step}: a completed reset holds");
                    }
                }
            }
            check_all(&wal, payload).await?;
            let next = wal.last_lsn().next();
            assert_eq!(
                wal.append(payload(next.0)).await?,
                next,
                "step {step}: the log takes appends"
            );
            wal.close().await?;
            if res.is_ok() {
                eprintln!(
                    "{:?} {op:?}: recovered after a failure at each of its first {step} I/O steps",
                    driver.backend()
                );
                completed = true;
                break;
            }
        }
        assert!(completed, "{op:?} never completed within 60 failing steps");
    }
    Ok(())
}
