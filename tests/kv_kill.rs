//! A real `kill -9` loop of the key-value store: the test binary runs itself as a child process
//! that commits transactions from several tasks, and the parent kills it with SIGKILL at a
//! random moment, reopens the store and checks it, cycle after cycle on the same directory.
//!
//! The child (`kv_kill_child`, a no-op unless `RINGTIDE_KV_KILL_CHILD` names a directory) runs
//! four tasks. Task `t` of cycle `c` commits, one after the other, the transactions that
//! [`plan`] makes from `(c, t, k)` and the state its earlier ones left: multi-key rewrites of
//! slots (some keys put, the slot's others deleted), deletes, puts into a bucket of its own,
//! a nested bucket created and its parent deleted with everything in it, and (task 0's sixth)
//! a transaction of ~1.6 MiB (two wal chunks) into a bucket deleted ten transactions later. Each value names its transaction and how many
//! writes it made. After each acknowledged commit the task writes
//! `ack <task> <k> <seq> <writes>` to stdout and flushes. Even cycles use the default sync policy
//! (`Immediate`), odd ones `Grouped`.
//!
//! The parent kills one child in four at a random moment from its start (often during its
//! recovery), the others at a random moment in the 300 ms after the child opened the store.
//! After each kill the parent reopens the store (`Db::open`, default driver) and checks: each
//! task of this cycle shows exactly the state after its acknowledged transactions, or after one
//! more (the one in flight, or acknowledged but not yet reported, when the kill came): nothing
//! acknowledged lost, no transaction in part; the tasks of earlier cycles show exactly what they
//! showed after their own cycle; nothing else is in the store; acknowledged seqs are unique,
//! rise within a task, and `committed_seq` covers them; a commit of puts and deletes only
//! reported as many writes as it made. A kill leaves the page cache intact, so this checks that recovery repairs a store
//! whose process died at any point (mid-commit, mid-sync, mid-rotation, mid-recovery).
//!
//! `RINGTIDE_KILL_CYCLES` (default 30) sets the number of cycles; `RINGTIDE_KILL_SEED` repeats
//! a run's kill delays. A child never outlives the test: the parent kills it when dropped, and a
//! child whose parent died sees its stdin close and exits.

#![allow(clippy::print_stderr, reason = "tests report what they measured")]

mod common;

use common::say;
mod kv_model;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use kv_model::{Op, State, diff, hash, read_back, run_ops, value};
use ringtide::kv::{Db, DbOptions, TxnOptions};
use ringtide::wal::SyncPolicy;

const CHILD_ENV: &str = "RINGTIDE_KV_KILL_CHILD";
const CYCLE_ENV: &str = "RINGTIDE_KV_KILL_CHILD_CYCLE";
const CHILD_TEST: &str = "kv_kill_child";
const SEGMENT_BYTES: u64 = 256 << 10;
const TASKS: u64 = 4;
/// A child that is never killed stops by itself after this long.
const CHILD_MAX_LIFE: Duration = Duration::from_secs(60);

fn root_prefix(cycle: u64, task: u64) -> String {
    format!("c{cycle}/t{task}/")
}

fn bucket_name(cycle: u64, task: u64) -> String {
    format!("c{cycle}t{task}")
}

/// The puts and deletes of a transaction, made into ops once their count is known.
#[derive(Default)]
struct Writes(Vec<(String, Bytes, Option<usize>)>);

impl Writes {
    fn put(&mut self, bucket: &str, key: impl Into<Bytes>, len: usize) {
        self.0.push((bucket.to_owned(), key.into(), Some(len)));
    }

    fn delete(&mut self, bucket: &str, key: impl Into<Bytes>) {
        self.0.push((bucket.to_owned(), key.into(), None));
    }

    fn ops(self, wid: u64) -> Vec<Op> {
        let count = self.0.len() as u32;
        self.0
            .into_iter()
            .enumerate()
            .map(|(i, (bucket, key, len))| match len {
                Some(len) => Op::put(&bucket, key, value(wid, count, i as u32, len)),
                None => Op::delete(&bucket, key),
            })
            .collect()
    }
}

/// Transaction `k` of `task` in `cycle`, given the state the ones before left.
fn plan(cycle: u64, task: u64, k: u64, state: &State) -> Vec<Op> {
    let h = hash(&[cycle, task, k]);
    let wid = (cycle << 40) | (task << 32) | k;
    let prefix = root_prefix(cycle, task);
    let bucket = bucket_name(cycle, task);
    let nested = format!("{bucket}/n");
    let big = format!("{bucket}big");
    let mut head = Vec::new();
    let mut w = Writes::default();
    let size = |x: u64| match x % 10 {
        0 => 2000 + (x >> 8) % 3000,
        _ => 20 + (x >> 8) % 300,
    } as usize;
    let slot = (h >> 4) % 5;
    let rewrite = |w: &mut Writes, n: u64| {
        for i in 0..5 {
            let key = format!("{prefix}s{slot}/{i}");
            if i < n {
                w.put("", key, size(h >> (i * 5)));
            } else if state.root.contains_key(key.as_bytes()) {
                w.delete("", key);
            }
        }
    };
    if k == 0 {
        head.push(Op::CreateBucket(bucket.clone()));
        w.put(&bucket, "k0", 30);
        rewrite(&mut w, 3);
    } else if task == 0 && k == 5 {
        head.push(Op::CreateBucket(big.clone()));
        for i in 0..200 {
            w.put(&big, format!("{i:04}"), 8 << 10);
        }
    } else if task == 0 && k == 15 && state.has_bucket(&big) {
        head.push(Op::DeleteBucket(big));
        rewrite(&mut w, 1);
    } else {
        match h % 8 {
            0..=2 => rewrite(&mut w, 1 + (h >> 20) % 5),
            3 => {
                let keys: Vec<String> = (0..5)
                    .map(|i| format!("{prefix}s{slot}/{i}"))
                    .filter(|k| state.root.contains_key(k.as_bytes()))
                    .collect();
                if keys.is_empty() {
                    rewrite(&mut w, 2);
                }
                for key in keys {
                    w.delete("", key);
                }
            }
            4 | 5 => {
                let (a, b) = ((h >> 20) % 10, (h >> 30) % 9);
                w.put(&bucket, format!("k{a}"), size(h >> 24));
                w.put(&bucket, format!("k{}", (a + 1 + b) % 10), size(h >> 34));
                rewrite(&mut w, 2);
            }
            6 if state.has_bucket(&nested) => {
                if (h >> 20).is_multiple_of(2) {
                    w.put(&nested, format!("x{}", (h >> 24) % 4), size(h >> 28));
                } else {
                    head.push(Op::DeleteBucket(bucket.clone()));
                    head.push(Op::CreateBucket(bucket.clone()));
                    w.put(&bucket, "k0", 40);
                }
            }
            6 => {
                head.push(Op::CreateBucket(nested.clone()));
                w.put(&nested, "x0", 70);
                w.put(&nested, "x1", 1500);
            }
            _ => {
                w.delete(&bucket, format!("k{}", (h >> 20) % 10));
                rewrite(&mut w, 1 + (h >> 24) % 3);
            }
        }
    }
    head.extend(w.ops(wid));
    head
}

// ---------------------------------------------------------------------------------------------
// The child.

/// Plays the child when `RINGTIDE_KV_KILL_CHILD` is set; otherwise returns at once.
#[test]
fn kv_kill_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let cycle: u64 = std::env::var(CYCLE_ENV)
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

async fn child(dir: &Path, cycle: u64) {
    // The parent holds our stdin open while it lives: end with it.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    // The test harness may have printed "test kv_kill_child ... " without a newline.
    say("\n");
    let driver = common::child_driver();
    let policy = if cycle.is_multiple_of(2) {
        SyncPolicy::Immediate
    } else {
        SyncPolicy::Grouped {
            window: Duration::from_millis(1),
        }
    };
    let db = Db::open(
        dir,
        DbOptions::default()
            .driver(driver)
            .sync_policy(policy)
            .wal_segment_size_bytes(SEGMENT_BYTES)
            .lock_timeout(Duration::from_secs(5)),
    )
    .await
    .expect("the child opens the store");
    say(&format!("open {}\n", db.committed_seq()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut state = State::default();
            let mut k = 0u64;
            while started.elapsed() < CHILD_MAX_LIFE {
                let ops = plan(cycle, task, k, &state);
                let txn = db.begin(TxnOptions::default()).expect("begin");
                run_ops(&txn, &ops).await.expect("the plan's ops");
                // Tasks write disjoint keys: a commit never conflicts.
                let info = txn.commit().await.expect("commit");
                say(&format!("ack {task} {k} {} {}\n", info.seq, info.writes));
                state.apply(&ops);
                k += 1;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    db.close().await.expect("close");
}

// ---------------------------------------------------------------------------------------------
// The parent.

/// Kills and reaps the child when dropped.
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

/// An acknowledged commit as the child reported it.
#[derive(Debug, Clone, Copy)]
struct Ack {
    task: u64,
    k: u64,
    seq: u64,
    writes: u64,
}

#[derive(Default)]
struct ChildReport {
    acks: Vec<Ack>,
    backend: Option<String>,
    opened: bool,
}

/// Reads the child's stdout to its end; `opened` hears when the child has opened the store.
fn read_report(stdout: impl Read, opened: std::sync::mpsc::Sender<()>) -> ChildReport {
    let mut report = ChildReport::default();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        // A line cut by the kill is not a complete report.
        let Some(line) = line.strip_suffix('\n') else {
            break;
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["ack", task, k, seq, writes] => report.acks.push(Ack {
                task: task.parse().expect("task"),
                k: k.parse().expect("k"),
                seq: seq.parse().expect("seq"),
                writes: writes.parse().expect("writes"),
            }),
            ["backend", ..] => report.backend = Some(line["backend ".len()..].to_string()),
            ["open", ..] => {
                report.opened = true;
                let _ = opened.send(());
            }
            _ => {}
        }
    }
    report
}

/// Checks the reopened store; returns the state each task of `cycle` was found in (and whether
/// it holds one transaction more than the acknowledged ones).
async fn check_store(
    dir: &Path,
    cycle: u64,
    candidates: &BTreeMap<u64, [State; 2]>,
    settled: &BTreeMap<(u64, u64), State>,
    max_seq: u64,
    ctx: &str,
) -> ringtide::Result<Vec<(bool, State)>> {
    let db = Db::open(
        dir,
        DbOptions::default().wal_segment_size_bytes(SEGMENT_BYTES),
    )
    .await?;
    assert!(
        db.committed_seq().get() >= max_seq,
        "{ctx}: committed_seq {} after recovery, but seq {max_seq} was acknowledged",
        db.committed_seq()
    );
    assert!(db.prepared().is_empty(), "{ctx}: prepared txns appeared");
    let txn = db.begin(TxnOptions::default().read_only(true))?;
    for ((c, t), expected) in settled {
        let found = read_back(&txn, root_prefix(*c, *t).as_bytes(), &bucket_name(*c, *t)).await?;
        assert!(
            &found == expected,
            "{ctx}: task {t} of cycle {c} changed since its cycle:{}",
            diff(expected, &found)
        );
    }
    let mut found_states = Vec::new();
    for (&task, [acked, one_more]) in candidates {
        let found = read_back(
            &txn,
            root_prefix(cycle, task).as_bytes(),
            &bucket_name(cycle, task),
        )
        .await?;
        if &found == acked {
            found_states.push((false, found));
        } else if &found == one_more {
            found_states.push((true, found));
        } else {
            panic!(
                "{ctx}: task {task} is in no state its transactions allow; after its \
                 acknowledged ones:{}",
                diff(acked, &found)
            );
        }
    }
    // Nothing else: every root key and bucket belongs to a task of a cycle so far.
    let known = |name: &[u8], of: fn(u64, u64) -> String| {
        (0..=cycle).any(|c| (0..TASKS).any(|t| name.starts_with(of(c, t).as_bytes())))
    };
    let root: Vec<(Bytes, Bytes)> = txn.scan::<&[u8]>(..).try_collect().await?;
    for (k, _) in &root {
        assert!(
            known(k, root_prefix),
            "{ctx}: root key {:?} was never written",
            String::from_utf8_lossy(k)
        );
    }
    for b in txn.buckets().await? {
        assert!(
            known(&b, bucket_name),
            "{ctx}: bucket {:?} was never created",
            String::from_utf8_lossy(&b)
        );
    }
    drop(txn);
    db.close().await?;
    Ok(found_states)
}

#[test]
fn kill_9_loop_loses_no_acknowledged_commit() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return; // this process is a child
    }
    let cycles: u64 = std::env::var("RINGTIDE_KILL_CYCLES")
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
    let dir = tmp.path().join("db");
    let exe = std::env::current_exe().expect("the test binary");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let started = Instant::now();
    let mut settled: BTreeMap<(u64, u64), State> = BTreeMap::new();
    let mut seqs: HashMap<u64, (u64, u64, u64)> = HashMap::new();
    let mut backends: Vec<String> = Vec::new();
    let (mut acks_total, mut beyond_acks, mut killed_before_open) = (0u64, 0u64, 0u64);
    let mut max_seq = 0;
    for cycle in 0..cycles {
        let ctx = format!(
            "seed {seed} (RINGTIDE_KILL_SEED={seed} repeats the kill delays), cycle {cycle}"
        );
        let mut child = KillOnDrop(
            Command::new(&exe)
                .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, &dir)
                .env(CYCLE_ENV, cycle.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn the child"),
        );
        let stdout = child.0.stdout.take().expect("stdout");
        let stderr = child.0.stderr.take().expect("stderr");
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || read_report(stdout, opened_tx));
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut s);
            s
        });
        // One kill in four at any moment from the start (during recovery, often), the others
        // at any moment in the 300 ms after the child opened the store.
        if !rng.next().is_multiple_of(4) {
            let _ = opened_rx.recv_timeout(Duration::from_secs(30));
        }
        std::thread::sleep(Duration::from_millis(rng.next() % 300));
        child.0.kill().expect("SIGKILL the child");
        let status = child.0.wait().expect("reap the child");
        let report = reader.join().expect("stdout reader");
        let child_stderr = err_reader.join().expect("stderr reader");
        assert_eq!(
            status.signal(),
            Some(9),
            "{ctx}: the child ended before the kill ({status}); its stderr:\n{child_stderr}"
        );
        killed_before_open += u64::from(!report.opened);
        if let Some(b) = report.backend
            && !backends.contains(&b)
        {
            backends.push(b);
        }
        // Each task's acknowledgements: 0, 1, 2, … in order, seqs rising, unique overall.
        let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
        let mut last_seq: BTreeMap<u64, u64> = BTreeMap::new();
        for ack in &report.acks {
            let next = acked.entry(ack.task).or_insert(0);
            assert_eq!(
                ack.k, *next,
                "{ctx}: task {} acknowledged out of order",
                ack.task
            );
            *next += 1;
            let last = last_seq.entry(ack.task).or_insert(0);
            assert!(
                ack.seq > *last,
                "{ctx}: task {}'s seqs do not rise",
                ack.task
            );
            *last = ack.seq;
            if let Some(before) = seqs.insert(ack.seq, (cycle, ack.task, ack.k)) {
                panic!(
                    "{ctx}: seq {} acknowledged twice: {before:?} and {ack:?}",
                    ack.seq
                );
            }
            max_seq = max_seq.max(ack.seq);
        }
        // Each task's transactions replayed in the model: the write counts of the acknowledged
        // ones, and the states the store may show (after the acknowledged ones, or one more).
        let mut candidates: BTreeMap<u64, [State; 2]> = BTreeMap::new();
        for task in 0..TASKS {
            let a = acked.get(&task).copied().unwrap_or(0);
            let writes: BTreeMap<u64, u64> = report
                .acks
                .iter()
                .filter(|ack| ack.task == task)
                .map(|ack| (ack.k, ack.writes))
                .collect();
            let mut state = State::default();
            for k in 0..a {
                let ops = plan(cycle, task, k, &state);
                let plain = ops
                    .iter()
                    .all(|op| matches!(op, Op::Put { .. } | Op::Delete { .. }));
                if plain {
                    assert_eq!(
                        writes[&k],
                        ops.len() as u64,
                        "{ctx}: task {task} transaction {k} reported the wrong write count"
                    );
                }
                state.apply(&ops);
            }
            let mut next = state.clone();
            next.apply(&plan(cycle, task, a, &state));
            candidates.insert(task, [state, next]);
        }
        acks_total += report.acks.len() as u64;
        let found = runtime
            .block_on(check_store(
                &dir,
                cycle,
                &candidates,
                &settled,
                max_seq,
                &ctx,
            ))
            .unwrap_or_else(|e| panic!("{ctx}: reopening after the kill failed: {e}"));
        for (task, (one_more, state)) in found.into_iter().enumerate() {
            beyond_acks += u64::from(one_more);
            settled.insert((cycle, task as u64), state);
        }
    }
    let keys: usize = settled.values().map(State::len).sum();
    eprintln!(
        "kv kill -9 loop: {cycles} cycles in {:.1} s (seed {seed}, child backend {}): \
         {acks_total} acknowledged commits checked, {beyond_acks} commits found beyond the \
         last reported acknowledgement, {keys} keys and buckets checked after every cycle, max \
         seq {max_seq}, {killed_before_open} kills before the child had opened the store",
        started.elapsed().as_secs_f64(),
        if backends.is_empty() {
            "unknown".to_string()
        } else {
            backends.join(", ")
        },
    );
    assert!(
        acks_total >= cycles,
        "seed {seed}: only {acks_total} acknowledged commits in {cycles} cycles: the children \
         barely ran"
    );
}
