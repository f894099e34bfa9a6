//! A real `kill -9` loop: the test binary runs itself as a child process that appends to a log
//! under grouped commit on the io_uring backend, and the parent kills it with SIGKILL at a random
//! moment, reopens the log and checks it, cycle after cycle on the same directory.
//!
//! The child (`kill_loop_child`, a no-op unless `RINGTIDE_KILL_CHILD` names a directory) runs
//! several tokio tasks appending entries whose bytes and term are a pure function of (cycle,
//! task, seq), with sizes from empty to 16 KiB, plus atomic batches of 2–5 entries. After each
//! acknowledged append it writes `ack <lsn> <task> <seq>` to stdout (one line per entry of a
//! batch) and flushes. A batch numbered `k` of a task holds seqs `8k .. 8k + n`, so the entry
//! for any seq can be recomputed.
//!
//! After each kill the parent reopens the log (`Wal::open` with a default driver) and checks:
//! every acknowledged lsn of every cycle so far is there with exactly its bytes and term; lsns
//! are dense from `first_lsn` to `last_lsn`; every entry in the log, acknowledged or not, is one
//! the children wrote, and each batch is there whole or not at all; each task's entries form a
//! prefix of what it appended, in order. A kill leaves the page cache intact, so a kill -9 can
//! only cut the log after the last write the child made: this checks that nothing acknowledged
//! is lost and that recovery repairs a log whose writer died at any point (mid-write, mid-sync,
//! mid-rotation, mid-recovery).
//!
//! `RINGTIDE_KILL_CYCLES` (default 30) sets the number of cycles; `RINGTIDE_KILL_SEED` repeats a
//! run's kill delays (the seed is in every assertion message; the child's own scheduling is not
//! reproducible). A child never outlives the test: the parent kills it when dropped, and a child
//! whose parent died sees its stdin close and exits.

#![allow(clippy::print_stderr, reason = "tests report what they measured")]

mod common;

use common::say;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringtide::wal::{Lsn, Record, SyncPolicy, Wal, WalOptions};

/// Names the log directory in the child; its presence makes `kill_loop_child` play the child.
const CHILD_ENV: &str = "RINGTIDE_KILL_CHILD";
/// The cycle number, passed to the child: part of every entry it writes.
const CYCLE_ENV: &str = "RINGTIDE_KILL_CHILD_CYCLE";
const CHILD_TEST: &str = "kill_loop_child";
const SEGMENT_BYTES: u64 = 256 << 10;
const TASKS: u32 = 6;
/// Seqs per batch slot: batch `k` of a task holds seqs `8k .. 8k + n`, n ≤ 5.
const SLOT: u64 = 8;
/// A child that is never killed stops by itself after this long (the parent kills it long before;
/// a child whose parent is gone stops when its stdin closes).
const CHILD_MAX_LIFE: Duration = Duration::from_secs(60);

/// SplitMix64: a deterministic hash of the identifiers of an entry.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn hash(parts: &[u64]) -> u64 {
    parts.iter().fold(0x5eed, |h, &p| mix(h ^ mix(p)))
}

/// How many entries the `k`th append of `task` in `cycle` carries: 1 (a plain append) or 2–5
/// (an atomic batch).
fn batch_len(cycle: u32, task: u32, k: u64) -> u64 {
    let h = hash(&[1, u64::from(cycle), u64::from(task), k]);
    if h.is_multiple_of(6) {
        2 + (h >> 8) % 4
    } else {
        1
    }
}

const HEADER: usize = 18;

/// The entry `seq` of `task` in `cycle`: its term and payload. The payload starts with an 18-byte
/// header (`KL`, cycle, task, batch length, index in the batch, batch number) so any entry found
/// in the log can be identified, then filler bytes of a size from 0 to ~16 KiB.
fn entry(cycle: u32, task: u32, seq: u64) -> (Option<u64>, Bytes) {
    let (k, i) = (seq / SLOT, seq % SLOT);
    let n = batch_len(cycle, task, k);
    assert!(i < n, "seq {seq} is not in batch {k} of {n} entries");
    let h = hash(&[2, u64::from(cycle), u64::from(task), seq]);
    let r = h >> 8;
    let size = match h % 100 {
        0..60 => r % 64,
        60..85 => 64 + r % 2000,
        85..95 => 2048 + r % 2048,
        _ => 4097 + r % 12_000, // above 4 KiB: frames span pages
    } as usize;
    let mut data = Vec::with_capacity(HEADER + size);
    data.extend_from_slice(b"KL");
    data.extend_from_slice(&cycle.to_le_bytes());
    data.extend_from_slice(&(task as u16).to_le_bytes());
    data.push(n as u8);
    data.push(i as u8);
    data.extend_from_slice(&k.to_le_bytes());
    let mut x = h | 1;
    while data.len() < HEADER + size {
        // xorshift64 filler
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.push(x as u8);
    }
    let term = (h & 0x100 != 0).then_some(u64::from(cycle) + 1);
    (term, Bytes::from(data))
}

/// Identifies an entry read back from the log: (cycle, task, seq, batch length), or `None` if its
/// payload is not one `entry` makes.
fn identify(data: &[u8]) -> Option<(u32, u32, u64, u64)> {
    if data.len() < HEADER || &data[..2] != b"KL" {
        return None;
    }
    let cycle = u32::from_le_bytes(data[2..6].try_into().ok()?);
    let task = u32::from(u16::from_le_bytes(data[6..8].try_into().ok()?));
    let n = u64::from(data[8]);
    let i = u64::from(data[9]);
    let k = u64::from_le_bytes(data[10..18].try_into().ok()?);
    if i >= n || n > 5 {
        return None;
    }
    Some((cycle, task, k * SLOT + i, n))
}

// ---------------------------------------------------------------------------------------------
// The child.

/// Plays the child when `RINGTIDE_KILL_CHILD` is set; otherwise returns at once.
#[test]
fn kill_loop_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let cycle: u32 = std::env::var(CYCLE_ENV)
        .expect("the parent passes the cycle")
        .parse()
        .expect("a cycle number");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(child(Path::new(&dir), cycle));
}

async fn child(dir: &Path, cycle: u32) {
    // The parent holds our stdin open while it lives: end with it.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    // The test harness may have printed "test kill_loop_child ... " without a newline.
    say("\n");
    let driver = common::child_driver();
    let wal = Wal::open(
        dir,
        WalOptions::default()
            .driver(driver)
            .segment_size_bytes(SEGMENT_BYTES)
            .lock_timeout(Duration::from_secs(5))
            .sync_policy(SyncPolicy::Grouped {
                window: Duration::from_millis(1),
            }),
    )
    .await
    .expect("the child opens the log");
    say(&format!("open {} {}\n", wal.first_lsn(), wal.last_lsn()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let wal = wal.clone();
        tasks.push(tokio::spawn(async move {
            let mut k = 0u64;
            while started.elapsed() < CHILD_MAX_LIFE {
                let n = batch_len(cycle, task, k);
                let seqs: Vec<u64> = (k * SLOT..k * SLOT + n).collect();
                let records: Vec<Record> = seqs
                    .iter()
                    .map(|&s| {
                        let (term, data) = entry(cycle, task, s);
                        Record::new(data).term(term)
                    })
                    .collect();
                let first = if n == 1 {
                    let record = records.into_iter().next().expect("one record");
                    wal.append(record).await.expect("append").0
                } else {
                    let range = wal.append_batch(records).await.expect("append_batch");
                    assert_eq!(range.end.0 - range.start.0, n);
                    range.start.0
                };
                let mut lines = String::new();
                for (j, s) in seqs.iter().enumerate() {
                    lines.push_str(&format!("ack {} {task} {s}\n", first + j as u64));
                }
                say(&lines);
                k += 1;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    wal.close().await.expect("close");
}

// ---------------------------------------------------------------------------------------------
// The parent.

/// Kills and reaps the child when dropped, so no child outlives the test, even on a failure.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// xorshift64: the parent's seeded choice of kill times.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// What the parent learned from one child's stdout.
#[derive(Default)]
struct ChildReport {
    /// (lsn, task, seq) of every acknowledged entry.
    acks: Vec<(u64, u32, u64)>,
    backend: Option<String>,
    opened: bool,
}

fn read_report(stdout: impl Read) -> ChildReport {
    let mut report = ChildReport::default();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        // A line cut by the kill (no newline) is not a complete acknowledgement report.
        let Some(line) = line.strip_suffix('\n') else {
            break;
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["ack", lsn, task, seq] => report.acks.push((
                lsn.parse().expect("lsn"),
                task.parse().expect("task"),
                seq.parse().expect("seq"),
            )),
            ["backend", ..] => report.backend = Some(line["backend ".len()..].to_string()),
            ["open", ..] => report.opened = true,
            _ => {}
        }
    }
    report
}

/// An acknowledged entry: its lsn and who wrote it.
#[derive(Debug, Clone, Copy)]
struct Ack {
    lsn: u64,
    cycle: u32,
    task: u32,
    seq: u64,
}

/// What one check of the log found.
struct Checked {
    entries: u64,
    last_lsn: u64,
    torn: bool,
}

async fn check_log(dir: &Path, acks: &[Ack], ctx: &str) -> ringtide::Result<Checked> {
    let wal = Wal::open(dir, WalOptions::default().segment_size_bytes(SEGMENT_BYTES)).await?;
    let first = wal.first_lsn().0;
    let last = wal.last_lsn().0;
    assert_eq!(first, 1, "{ctx}: nothing truncates the front");
    let entries = wal.range(..).await?;
    assert_eq!(
        entries.len() as u64,
        last + 1 - first,
        "{ctx}: entries from first_lsn to last_lsn"
    );
    let mut by_lsn: HashMap<u64, (Option<u64>, Bytes)> = HashMap::with_capacity(entries.len());
    // Each (cycle, task): the next seq it must show (a prefix, in lsn order).
    let mut next_seq: HashMap<(u32, u32), u64> = HashMap::new();
    let mut last_cycle = 0;
    let mut j = 0;
    while j < entries.len() {
        let e = &entries[j];
        assert_eq!(e.lsn, Lsn(first + j as u64), "{ctx}: lsns are dense");
        let Some((cycle, task, seq, n)) = identify(&e.data) else {
            panic!(
                "{ctx}: lsn {} holds {} bytes no child wrote",
                e.lsn,
                e.data.len()
            );
        };
        assert!(
            cycle >= last_cycle,
            "{ctx}: lsn {} of cycle {cycle} after an entry of cycle {last_cycle}",
            e.lsn
        );
        last_cycle = cycle;
        // The whole batch, in order, starting with its first entry.
        assert_eq!(
            seq % SLOT,
            0,
            "{ctx}: lsn {} is entry {} of a batch whose start is missing",
            e.lsn,
            seq % SLOT
        );
        let want_seq = next_seq.entry((cycle, task)).or_insert(0);
        assert_eq!(
            seq, *want_seq,
            "{ctx}: lsn {}: cycle {cycle} task {task} wrote seq {seq} after seq {} (a prefix, in order)",
            e.lsn, *want_seq
        );
        assert!(
            j as u64 + n <= entries.len() as u64,
            "{ctx}: the batch at lsn {} ({n} entries) runs past the end of the log at {last}: \
             an incomplete batch survived",
            e.lsn
        );
        for i in 0..n {
            let e = &entries[j + i as usize];
            let (term, data) = entry(cycle, task, seq + i);
            assert_eq!(
                identify(&e.data),
                Some((cycle, task, seq + i, n)),
                "{ctx}: lsn {}: entry {i} of the batch at lsn {}",
                e.lsn,
                first + j as u64
            );
            assert!(
                e.data == data && e.term == term,
                "{ctx}: lsn {} (cycle {cycle} task {task} seq {}) has the wrong bytes or term",
                e.lsn,
                seq + i
            );
            by_lsn.insert(e.lsn.0, (e.term, e.data.clone()));
        }
        *want_seq = (seq / SLOT + 1) * SLOT;
        j += n as usize;
    }
    for ack in acks {
        let (term, data) = entry(ack.cycle, ack.task, ack.seq);
        match by_lsn.get(&ack.lsn) {
            Some(got) => assert!(
                got.0 == term && got.1 == data,
                "{ctx}: acknowledged lsn {} ({ack:?}) holds other bytes",
                ack.lsn
            ),
            None => panic!(
                "{ctx}: acknowledged lsn {} ({ack:?}) is lost: the log ends at {last}",
                ack.lsn
            ),
        }
    }
    let torn = wal.stats().torn_tail.is_some();
    wal.close().await?;
    Ok(Checked {
        entries: entries.len() as u64,
        last_lsn: last,
        torn,
    })
}

#[test]
fn kill_9_loop_loses_no_acknowledged_entry() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return; // this process is a child
    }
    let cycles: u32 = std::env::var("RINGTIDE_KILL_CYCLES")
        .ok()
        .map_or(30, |c| c.parse().expect("RINGTIDE_KILL_CYCLES is a number"));
    let seed: u64 = std::env::var("RINGTIDE_KILL_SEED").ok().map_or_else(
        || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        },
        |s| s.parse().expect("RINGTIDE_KILL_SEED is a number"),
    );
    let mut rng = XorShift(seed.max(1));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let exe = std::env::current_exe().expect("the test binary");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let started = Instant::now();
    let mut acks: Vec<Ack> = Vec::new();
    let mut backends: Vec<String> = Vec::new();
    let (mut killed_before_open, mut torn_cut, mut max_lsn, mut entries) = (0, 0, 0, 0);
    for cycle in 0..cycles {
        let ctx = format!(
            "seed {seed} (RINGTIDE_KILL_SEED={seed} repeats the kill delays), cycle {cycle}"
        );
        let mut child = KillOnDrop(
            Command::new(&exe)
                .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, &dir)
                .env(CYCLE_ENV, cycle.to_string())
                .stdin(Stdio::piped()) // kept open until the child is reaped
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn the child"),
        );
        let stdout = child.0.stdout.take().expect("stdout");
        let stderr = child.0.stderr.take().expect("stderr");
        let reader = std::thread::spawn(move || read_report(stdout));
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut s);
            s
        });
        let delay = Duration::from_millis(20 + rng.next() % 281);
        std::thread::sleep(delay);
        child.0.kill().expect("SIGKILL the child");
        let status = child.0.wait().expect("reap the child");
        let report = reader.join().expect("stdout reader");
        let child_stderr = err_reader.join().expect("stderr reader");
        assert_eq!(
            status.signal(),
            Some(9),
            "{ctx}: the child ended before the kill ({status}); its stderr:\n{child_stderr}"
        );
        if !report.opened {
            killed_before_open += 1;
        }
        if let Some(b) = report.backend
            && !backends.contains(&b)
        {
            backends.push(b);
        }
        // Every acknowledged lsn is new: an lsn acknowledged before is never handed out again.
        let mut seen: HashMap<u64, Ack> = acks.iter().map(|a| (a.lsn, *a)).collect();
        for &(lsn, task, seq) in &report.acks {
            let ack = Ack {
                lsn,
                cycle,
                task,
                seq,
            };
            if let Some(before) = seen.insert(lsn, ack) {
                panic!("{ctx}: lsn {lsn} acknowledged twice: {before:?} and {ack:?}");
            }
            acks.push(ack);
        }
        let checked = runtime
            .block_on(check_log(&dir, &acks, &ctx))
            .unwrap_or_else(|e| panic!("{ctx}: reopening after the kill failed: {e}"));
        torn_cut += u32::from(checked.torn);
        max_lsn = checked.last_lsn;
        entries = checked.entries;
    }
    let segments = std::fs::read_dir(&dir)
        .expect("log dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "wal"))
        })
        .count();
    eprintln!(
        "kill -9 loop: {cycles} cycles in {:.1} s (seed {seed}, child backend {}): {} acknowledged \
         entries checked, {entries} entries in the log, max lsn {max_lsn}, {segments} segments, \
         {torn_cut} torn tails cut, {killed_before_open} kills before the child had opened the log",
        started.elapsed().as_secs_f64(),
        if backends.is_empty() {
            "unknown".to_string()
        } else {
            backends.join(", ")
        },
        acks.len(),
    );
    assert!(
        acks.len() as u64 >= u64::from(cycles),
        "seed {seed}: only {} acknowledged entries in {cycles} cycles: the children barely ran",
        acks.len()
    );
}
