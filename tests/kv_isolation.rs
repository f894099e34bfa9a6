//! The isolation checker of `common::elle` against the key-value store under real concurrency,
//! on both I/O backends.
//!
//! Many tasks on a multi-thread runtime run random short transactions against one `Db`: appends
//! to lists (read the list, append a unique value, put it back), reads of lists, reads and blind
//! writes of registers, and scans of a range of lists or registers, recorded as a read of every
//! key the range covers (`None` for the absent ones, so that phantoms show). Some transactions
//! are read-only, a few roll back. Each transaction's operations, the values its reads returned
//! and its outcome (committed with its snapshot and commit seqs; aborted on a conflict or a
//! rollback; unknown on any other commit error) make a history the checker reads.
//!
//! - Serializable runs must show no anomaly at all; snapshot-isolation runs (and runs mixing both
//!   levels) none but G2-item.
//! - The checker's teeth against the store: write skew, by point reads and by scans of absent
//!   keys, is reported as G2-item under snapshot isolation and refused under serializable.
//!
//! The keys live in rounds: each run of `ROUND_TXNS` transactions (by start order) uses fresh
//! keys, so that lists stay short and every round starts with absent keys for scans to miss.
//!
//! `RINGTIDE_ISO_TXNS` sets the transactions per run (default 5,000); `RINGTIDE_ISO_SEED` the
//! seed of the operations chosen (the interleaving is the scheduler's).

#![allow(clippy::print_stderr, reason = "tests report what they measured")]

mod common;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures::TryStreamExt;
use ringtide::kv::{Db, DbOptions, Isolation, Txn, TxnOptions};
use ringtide::platform::IoDriver;
use ringtide::{ConflictKind, Error, Result};
use tokio::sync::Barrier;

use common::elle::{self, AnomalyKind, Op, Outcome};

both_backends!(
    serializable_histories_have_no_anomalies,
    snapshot_histories_have_no_anomalies_but_write_skew,
    mixed_isolation_histories_are_snapshot_isolated,
    write_skew_is_reported_under_snapshot_and_refused_under_serializable,
);

/// Concurrent tasks of a run.
const TASKS: u64 = 16;
/// Transactions per run unless `RINGTIDE_ISO_TXNS` says otherwise.
const DEFAULT_TXNS: u64 = 5_000;
/// Transactions (by start order) that share one round's keys.
const ROUND_TXNS: u64 = 200;
/// Lists and registers of a round.
const LISTS: u64 = 8;
const REGISTERS: u64 = 8;
/// Operations per transaction: 1 to this.
const MAX_OPS: usize = 4;
/// Percent of operations that write (append or write), and below `SCAN_END` that scan; the
/// rest are point reads. Read-only transactions draw from the reads only.
const WRITE_PERCENT: u8 = 45;
const SCAN_END: u8 = 65;
/// Percent of transactions that are read-only, and that roll back instead of committing.
const READ_ONLY_PERCENT: u8 = 20;
const ROLLBACK_PERCENT: u8 = 5;

fn options(driver: &IoDriver) -> DbOptions {
    DbOptions::default()
        .driver(driver.clone())
        .wal_segment_size_bytes(1 << 20)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be an integer, not {v:?}"))
    })
}

// ------------------------------------------------------------------------------------------------
// Keys and values.

/// The two kinds of objects, each in its own key space (of the store and of the checker).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Space {
    List,
    Register,
}

impl Space {
    fn letter(self) -> char {
        match self {
            Space::List => 'l',
            Space::Register => 'r',
        }
    }

    fn keys(self) -> u64 {
        match self {
            Space::List => LISTS,
            Space::Register => REGISTERS,
        }
    }
}

/// Object `k` of `round` in `space`: its key in the store (`l000012/03`) and its id in the
/// history (unique per space).
#[derive(Clone, Copy, Debug)]
struct Object {
    space: Space,
    round: u64,
    k: u64,
}

impl Object {
    fn store_key(self) -> Bytes {
        Bytes::from(bound_key(self.space, self.round, self.k))
    }

    fn id(self) -> u64 {
        self.round * self.space.keys() + self.k
    }
}

/// The store key of object `k` of a round; also used as the exclusive end of a scan (`k` may be
/// one past the last object).
fn bound_key(space: Space, round: u64, k: u64) -> String {
    format!("{}{round:06}/{k:02}", space.letter())
}

/// The object a key returned by a scan of `space` in `round` names; panics on a key outside it.
fn parse_key(space: Space, round: u64, key: &[u8]) -> u64 {
    let text = std::str::from_utf8(key).expect("keys are ASCII");
    let prefix = format!("{}{round:06}/", space.letter());
    let k: u64 = text
        .strip_prefix(&prefix)
        .and_then(|rest| rest.parse().ok())
        .unwrap_or_else(|| panic!("a scan of {prefix}* returned the key {text:?}"));
    assert!(k < space.keys(), "a scan returned the key {text:?}");
    k
}

fn encode_register(value: u64) -> Bytes {
    Bytes::copy_from_slice(&value.to_le_bytes())
}

fn decode_register(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("a register holds 8 bytes"))
}

fn encode_list(list: &[u64]) -> Bytes {
    list.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn decode_list(bytes: &[u8]) -> Vec<u64> {
    assert_eq!(bytes.len() % 8, 0, "a list is a sequence of 8-byte values");
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

/// The operation recording a read of `object` that returned `value`.
fn read_op(object: Object, value: Option<&[u8]>) -> Op {
    match object.space {
        Space::List => Op::ReadList {
            key: object.id(),
            value: value.map(decode_list),
        },
        Space::Register => Op::read(object.id(), value.map(decode_register)),
    }
}

// ------------------------------------------------------------------------------------------------
// The workload.

/// The isolation levels of a run's transactions.
#[derive(Clone, Copy, Debug)]
enum Levels {
    Only(Isolation),
    Both,
}

impl Levels {
    fn name(self) -> &'static str {
        match self {
            Levels::Only(Isolation::Serializable) => "serializable",
            Levels::Only(_) => "snapshot",
            Levels::Both => "mixed",
        }
    }

    fn pick(self, rng: &mut fastrand::Rng) -> Isolation {
        match self {
            Levels::Only(isolation) => isolation,
            Levels::Both if rng.bool() => Isolation::Serializable,
            Levels::Both => Isolation::Snapshot,
        }
    }
}

/// How a transaction ended.
#[derive(Debug)]
enum End {
    Committed { read_only: bool },
    Conflict(ConflictKind),
    RolledBack,
    Unknown(Error),
}

/// What a run did and what the checker found.
#[derive(Debug, Default)]
struct Tally {
    committed: u64,
    read_only: u64,
    rolled_back: u64,
    conflicts: BTreeMap<String, u64>,
    unknown: Vec<String>,
}

impl Tally {
    fn add(&mut self, end: End) {
        match end {
            End::Committed { read_only } => {
                self.committed += 1;
                self.read_only += u64::from(read_only);
            }
            End::Conflict(kind) => *self.conflicts.entry(format!("{kind:?}")).or_default() += 1,
            End::RolledBack => self.rolled_back += 1,
            End::Unknown(e) => self.unknown.push(e.to_string()),
        }
    }

    fn merge(&mut self, other: Tally) {
        self.committed += other.committed;
        self.read_only += other.read_only;
        self.rolled_back += other.rolled_back;
        for (kind, n) in other.conflicts {
            *self.conflicts.entry(kind).or_default() += n;
        }
        self.unknown.extend(other.unknown);
    }
}

/// Shared by a run's tasks.
struct Run {
    db: Db,
    levels: Levels,
    txns: u64,
    /// The next transaction's id (in the history) and so its round.
    next_txn: AtomicU64,
    /// The next value written: unique over the run, so unique per key.
    next_value: AtomicU64,
}

impl Run {
    fn value(&self) -> u64 {
        self.next_value.fetch_add(1, Ordering::Relaxed)
    }
}

/// Runs the random workload with `levels` on a fresh store and checks its history.
async fn run_and_check(driver: &IoDriver, levels: Levels) -> Result<elle::Report> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(driver)).await?;
    let txns = env_u64("RINGTIDE_ISO_TXNS").unwrap_or(DEFAULT_TXNS);
    let seed = env_u64("RINGTIDE_ISO_SEED").unwrap_or_else(|| fastrand::u64(..));
    let run = Arc::new(Run {
        db: db.clone(),
        levels,
        txns,
        next_txn: AtomicU64::new(1),
        next_value: AtomicU64::new(1),
    });
    let barrier = Arc::new(Barrier::new(TASKS as usize));
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let run = run.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(task));
                let mut history = Vec::new();
                let mut tally = Tally::default();
                barrier.wait().await;
                loop {
                    let id = run.next_txn.fetch_add(1, Ordering::Relaxed);
                    if id > run.txns {
                        break;
                    }
                    let (txn, end) = one_txn(&run, &mut rng, id).await?;
                    history.push(txn);
                    tally.add(end);
                }
                Ok::<_, Error>((history, tally))
            })
        })
        .collect();
    let mut history = Vec::new();
    let mut tally = Tally::default();
    for task in tasks {
        let (h, t) = task.await.expect("a workload task panicked")?;
        history.extend(h);
        tally.merge(t);
    }
    let ran = started.elapsed();
    db.close().await?;

    let checking = Instant::now();
    let report = elle::check(&history);
    let checked = checking.elapsed();
    let anomalies: Vec<String> = report
        .kinds()
        .into_iter()
        .map(|kind| format!("{kind} x{}", report.of_kind(kind).count()))
        .collect();
    eprintln!(
        "kv_isolation [{}, {}]: {} txns by {TASKS} tasks in {ran:.2?} (seed {seed}): \
         {} committed ({} read-only), {} rolled back, conflicts {:?}, {} unknown; \
         checker in {checked:.2?}: {}{}",
        levels.name(),
        driver.backend(),
        history.len(),
        tally.committed,
        tally.read_only,
        tally.rolled_back,
        tally.conflicts,
        tally.unknown.len(),
        if anomalies.is_empty() {
            "no anomalies".to_owned()
        } else {
            anomalies.join(", ")
        },
        if report.notes.is_empty() {
            String::new()
        } else {
            format!(" ({} notes)", report.notes.len())
        },
    );
    assert_eq!(history.len() as u64, txns);
    assert!(
        tally.committed > txns / 4,
        "too few commits to say anything: {tally:?}"
    );
    // No fault is injected: every commit either commits or conflicts. (The history records an
    // unknown outcome as such all the same, so the check above stays sound.)
    assert!(
        tally.unknown.is_empty(),
        "commits failed with errors other than conflicts: {:?}",
        tally.unknown
    );
    Ok(report)
}

/// One random transaction, recorded.
async fn one_txn(run: &Run, rng: &mut fastrand::Rng, id: u64) -> Result<(elle::Txn, End)> {
    let round = (id - 1) / ROUND_TXNS;
    let read_only = rng.u8(..100) < READ_ONLY_PERCENT;
    let isolation = run.levels.pick(rng);
    let txn = run.db.begin(
        TxnOptions::default()
            .isolation(isolation)
            .read_only(read_only),
    )?;
    let start = txn.snapshot().get();
    let mut ops = Vec::new();
    for _ in 0..rng.usize(1..=MAX_OPS) {
        // Let other tasks commit while this transaction is open.
        if rng.bool() {
            tokio::task::yield_now().await;
        }
        let space = if rng.bool() {
            Space::List
        } else {
            Space::Register
        };
        let object = Object {
            space,
            round,
            k: rng.u64(..space.keys()),
        };
        let roll = if read_only {
            rng.u8(WRITE_PERCENT..100)
        } else {
            rng.u8(..100)
        };
        match roll {
            // Writes: an append (a read, then a put) or a blind register write.
            0..WRITE_PERCENT => match space {
                Space::List => {
                    let old = txn.get(object.store_key()).await?;
                    let mut list = old.as_deref().map(decode_list).unwrap_or_default();
                    ops.push(read_op(object, old.as_deref()));
                    let value = run.value();
                    list.push(value);
                    txn.put(object.store_key(), encode_list(&list))?;
                    ops.push(Op::append(object.id(), value));
                }
                Space::Register => {
                    let value = run.value();
                    txn.put(object.store_key(), encode_register(value))?;
                    ops.push(Op::write(object.id(), value));
                }
            },
            // Scans of a range of a round's objects.
            WRITE_PERCENT..SCAN_END => {
                let lo = rng.u64(..space.keys());
                let hi = rng.u64(lo + 1..=space.keys());
                scan(&txn, space, round, lo..hi, rng.bool(), &mut ops).await?;
            }
            // Point reads.
            _ => {
                let value = txn.get(object.store_key()).await?;
                ops.push(read_op(object, value.as_deref()));
            }
        }
    }
    let (outcome, commit_seq, end) = if rng.u8(..100) < ROLLBACK_PERCENT {
        txn.rollback().await?;
        (Outcome::Aborted, None, End::RolledBack)
    } else {
        match txn.commit().await {
            Ok(info) => (
                Outcome::Committed,
                Some(info.seq.get()),
                End::Committed { read_only },
            ),
            Err(Error::Conflict { kind, .. }) => (Outcome::Aborted, None, End::Conflict(kind)),
            Err(e) => (Outcome::Unknown, None, End::Unknown(e)),
        }
    };
    let recorded = elle::Txn {
        id,
        outcome,
        ops,
        commit_seq,
        start_seq: Some(start),
    };
    Ok((recorded, end))
}

/// Scans objects `ks` of `space` in `round` (in descending order if `rev`) and records a read of
/// each, `None` for those the scan did not return.
async fn scan(
    txn: &Txn,
    space: Space,
    round: u64,
    ks: Range<u64>,
    rev: bool,
    ops: &mut Vec<Op>,
) -> Result<()> {
    let lower = bound_key(space, round, ks.start).into_bytes();
    let upper = bound_key(space, round, ks.end).into_bytes();
    let scan = txn.scan(lower.as_slice()..upper.as_slice());
    let scan = if rev { scan.rev() } else { scan };
    let entries: Vec<(Bytes, Bytes)> = scan.try_collect().await?;
    let mut found = BTreeMap::new();
    let mut previous: Option<u64> = None;
    for (key, value) in entries {
        let k = parse_key(space, round, &key);
        assert!(ks.contains(&k), "a scan of {ks:?} returned object {k}");
        if let Some(p) = previous {
            assert!(
                if rev { k < p } else { k > p },
                "a scan (rev: {rev}) returned object {k} after {p}"
            );
        }
        previous = Some(k);
        found.insert(k, value);
    }
    for k in ks {
        let object = Object { space, round, k };
        ops.push(read_op(object, found.get(&k).map(|v| &v[..])));
    }
    Ok(())
}

async fn serializable_histories_have_no_anomalies(driver: IoDriver) -> Result<()> {
    let report = run_and_check(&driver, Levels::Only(Isolation::Serializable)).await?;
    report.assert_serializable();
    Ok(())
}

async fn snapshot_histories_have_no_anomalies_but_write_skew(driver: IoDriver) -> Result<()> {
    let report = run_and_check(&driver, Levels::Only(Isolation::Snapshot)).await?;
    report.assert_snapshot_isolation();
    Ok(())
}

/// Serializable and snapshot transactions at once: the snapshot ones do not validate their
/// reads, so the history as a whole is only held to snapshot isolation.
async fn mixed_isolation_histories_are_snapshot_isolated(driver: IoDriver) -> Result<()> {
    let report = run_and_check(&driver, Levels::Both).await?;
    report.assert_snapshot_isolation();
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// The checker's teeth.

/// Write-skew pairs per isolation level: half by point reads of present keys, half by scans of
/// absent ones.
const SKEW_PAIRS: u64 = 8;

/// Pairs of concurrent transactions, each reading two registers (point reads of keys set
/// beforehand, or a scan of their range while both are absent) and writing one of them, the two
/// snapshots taken before either commits. Under snapshot isolation both commit, and the checker
/// reports one G2-item per pair (and nothing else); under serializable exactly one of each pair
/// commits (the other fails with a read-write conflict, or a phantom for the scans), and the
/// checker reports nothing.
async fn write_skew_is_reported_under_snapshot_and_refused_under_serializable(
    driver: IoDriver,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), options(&driver)).await?;
    let next_id = AtomicU64::new(1);
    let next_value = AtomicU64::new(1);
    for (level, isolation) in [Isolation::Snapshot, Isolation::Serializable]
        .into_iter()
        .enumerate()
    {
        let round = level as u64 * SKEW_PAIRS;
        let mut history = Vec::new();
        let mut losers = BTreeMap::<String, u64>::new();
        for pair in 0..SKEW_PAIRS {
            let by_scan = pair % 2 == 1;
            let objects = [0, 1].map(|k| Object {
                space: Space::Register,
                round: round + pair,
                k,
            });
            if !by_scan {
                let setup = db.begin(TxnOptions::default())?;
                let mut ops = Vec::new();
                for object in objects {
                    let value = next_value.fetch_add(1, Ordering::Relaxed);
                    setup.put(object.store_key(), encode_register(value))?;
                    ops.push(Op::write(object.id(), value));
                }
                let start = setup.snapshot().get();
                let seq = setup.commit().await?.seq.get();
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                history.push(elle::Txn::committed(id, ops).with_seqs(start, seq));
            }
            let barrier = Arc::new(Barrier::new(2));
            let sides: Vec<_> = objects
                .into_iter()
                .map(|mine| {
                    let db = db.clone();
                    let barrier = barrier.clone();
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let value = next_value.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        let txn = db.begin(TxnOptions::default().isolation(isolation))?;
                        let start = txn.snapshot().get();
                        barrier.wait().await;
                        let mut ops = Vec::new();
                        if by_scan {
                            scan(
                                &txn,
                                Space::Register,
                                objects[0].round,
                                0..2,
                                false,
                                &mut ops,
                            )
                            .await?;
                        } else {
                            for object in objects {
                                let value = txn.get(object.store_key()).await?;
                                ops.push(read_op(object, value.as_deref()));
                            }
                        }
                        barrier.wait().await;
                        txn.put(mine.store_key(), encode_register(value))?;
                        ops.push(Op::write(mine.id(), value));
                        Ok::<_, Error>(match txn.commit().await {
                            Ok(info) => (
                                elle::Txn::committed(id, ops).with_seqs(start, info.seq.get()),
                                None,
                            ),
                            Err(Error::Conflict { kind, .. }) => {
                                (elle::Txn::aborted(id, ops), Some(kind))
                            }
                            Err(e) => return Err(e),
                        })
                    })
                })
                .collect();
            let mut committed = 0;
            for side in sides {
                let (txn, conflict) = side.await.expect("a write-skew task panicked")?;
                committed += u64::from(txn.outcome == Outcome::Committed);
                if let Some(kind) = conflict {
                    *losers.entry(format!("{kind:?}")).or_default() += 1;
                }
                history.push(txn);
            }
            match isolation {
                Isolation::Snapshot => assert_eq!(committed, 2, "pair {pair}: SI lets both commit"),
                _ => assert_eq!(committed, 1, "pair {pair}: exactly one commits"),
            }
        }
        let report = elle::check(&history);
        eprintln!(
            "kv_isolation [write skew, {isolation:?}, {}]: {SKEW_PAIRS} pairs, conflicts {losers:?}; \
             checker: {}",
            driver.backend(),
            report.to_string().lines().next().unwrap_or_default(),
        );
        match isolation {
            Isolation::Snapshot => {
                report.assert_snapshot_isolation();
                assert_eq!(
                    report.of_kind(AnomalyKind::G2Item).count() as u64,
                    SKEW_PAIRS,
                    "one G2-item per pair:\n{report}"
                );
            }
            _ => {
                report.assert_serializable();
                let expected = BTreeMap::from([
                    ("Phantom".to_owned(), SKEW_PAIRS / 2),
                    ("ReadWrite".to_owned(), SKEW_PAIRS / 2),
                ]);
                assert_eq!(losers, expected);
            }
        }
    }
    db.close().await
}
