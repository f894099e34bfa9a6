//! Model test: random sequences of operations on the write-ahead log, checked after every step
//! against a plain in-memory model (a `VecDeque` of entries and the next lsn).
//!
//! Operations: append, batch, log transaction (committed or rolled back), truncate at both ends
//! (including out-of-range requests, which must fail and change nothing), reset, sync,
//! close/reopen, and a simulated power loss (feature `sim`). With `SyncPolicy::Immediate` every
//! acknowledged change is durable, so the model is exact across crashes; with `SyncPolicy::None`
//! a crash may drop a suffix of what was appended since the last sync (never more, never a hole),
//! and the model adopts what survived after checking it is such a prefix.
//!
//! Half of the sequences (by seed) read everything from the files; the other half keep a small
//! window of recent entries in memory (`read_cache_bytes`), so reads come from both.
//!
//! `PROPTEST_CASES` sets the number of sequences (default 48 per policy).

#![cfg(feature = "sim")]

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use ringtide::Error;
mod common;

use common::sim_options as options;
use ringtide::platform::sim::SimDisk;
use ringtide::wal::{Lsn, SyncPolicy, Wal};

const DIR: &str = "/model/wal";

#[derive(Debug, Clone)]
enum Op {
    Append(u16),
    Batch(Vec<u16>),
    Txn(Vec<u16>, bool),
    /// Truncate the front at a point given as a fraction (0..=255) of the range, or past it.
    TruncateFront(u8),
    TruncateBack(u8),
    TruncateOutOfRange(bool),
    Reset(u16),
    Sync,
    Reopen,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u16..3000).prop_map(Op::Append),
        3 => prop::collection::vec(0u16..2000, 1..6).prop_map(Op::Batch),
        2 => (prop::collection::vec(0u16..2000, 0..5), any::<bool>()).prop_map(|(v, c)| Op::Txn(v, c)),
        1 => any::<u8>().prop_map(Op::TruncateFront),
        1 => any::<u8>().prop_map(Op::TruncateBack),
        1 => any::<bool>().prop_map(Op::TruncateOutOfRange),
        1 => (1u16..500).prop_map(Op::Reset),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
        2 => Just(Op::Crash),
    ]
}

/// The model: entries `first..next` and their bytes; `synced` is the lsn below which a crash
/// cannot take anything away.
struct Model {
    first: u64,
    entries: VecDeque<Bytes>,
    synced_len: usize,
}

impl Model {
    fn next(&self) -> u64 {
        self.first + self.entries.len() as u64
    }
}

fn data(len: u16, salt: u64) -> Bytes {
    Bytes::from(
        (0..len as u64)
            .map(|i| (i.wrapping_mul(31) ^ salt) as u8)
            .collect::<Vec<u8>>(),
    )
}

async fn check_all(wal: &Wal, model: &Model) -> std::result::Result<(), String> {
    if wal.first_lsn().get() != model.first || wal.last_lsn().get() + 1 != model.next() {
        return Err(format!(
            "bounds {}..={} but the model has {}..{}",
            wal.first_lsn(),
            wal.last_lsn(),
            model.first,
            model.next()
        ));
    }
    let entries = wal.range(..).await.map_err(|e| e.to_string())?;
    if entries.len() != model.entries.len() {
        return Err(format!(
            "{} entries, model {}",
            entries.len(),
            model.entries.len()
        ));
    }
    for (i, (e, m)) in entries.iter().zip(&model.entries).enumerate() {
        if e.lsn.get() != model.first + i as u64 || e.data != *m {
            return Err(format!("entry {} differs", e.lsn));
        }
    }
    Ok(())
}

async fn run(ops: Vec<Op>, policy: SyncPolicy, seed: u64) -> std::result::Result<(), String> {
    let exact = matches!(policy, SyncPolicy::Immediate);
    let disk = SimDisk::new(seed);
    let e = |e: Error| e.to_string();
    // Reads come from the files, or, for the newest entries, from the window of recent entries
    // (a small one here, so that entries leave it): both are checked against the model.
    let recent_bytes = if seed.is_multiple_of(2) { 0 } else { 16 << 10 };
    let options = |disk: &SimDisk, policy| options(disk, policy).read_cache_bytes(recent_bytes);
    let mut wal = Wal::open(DIR, options(&disk, policy)).await.map_err(e)?;
    let mut model = Model {
        first: 1,
        entries: VecDeque::new(),
        synced_len: 0,
    };
    let mut salt = 0u64;
    for (step, op) in ops.into_iter().enumerate() {
        salt += 1;
        let ctx = |m: String| format!("step {step} ({op:?}): {m}");
        match &op {
            Op::Append(len) => {
                let lsn = wal.append(data(*len, salt)).await.map_err(e).map_err(ctx)?;
                if lsn.get() != model.next() {
                    return Err(ctx(format!("got {lsn}, model next {}", model.next())));
                }
                model.entries.push_back(data(*len, salt));
            }
            Op::Batch(lens) => {
                let recs: Vec<Bytes> = lens.iter().map(|&l| data(l, salt)).collect();
                let range = wal
                    .append_batch(recs.clone())
                    .await
                    .map_err(e)
                    .map_err(ctx)?;
                if range.start.get() != model.next()
                    || range.end.get() != model.next() + recs.len() as u64
                {
                    return Err(ctx(format!("got {range:?}")));
                }
                model.entries.extend(recs);
            }
            Op::Txn(lens, commit) => {
                let mut txn = wal.begin_log_txn(Duration::from_secs(60));
                for &l in lens {
                    txn.push(data(l, salt)).map_err(e).map_err(ctx)?;
                }
                if *commit {
                    let range = txn.commit().await.map_err(e).map_err(ctx)?;
                    if range.start.get() != model.next()
                        || (range.end.get() - range.start.get()) as usize != lens.len()
                    {
                        return Err(ctx(format!("got {range:?}")));
                    }
                    model.entries.extend(lens.iter().map(|&l| data(l, salt)));
                } else {
                    txn.rollback();
                }
                if wal.open_log_txns() != 0 {
                    return Err(ctx("a transaction is still open".into()));
                }
            }
            Op::TruncateFront(frac) => {
                let at = model.first + (model.entries.len() as u64 + 1) * u64::from(*frac) / 256;
                wal.truncate_front(Lsn(at)).await.map_err(e).map_err(ctx)?;
                let drop = (at - model.first) as usize;
                model.entries.drain(..drop);
                model.synced_len = model.synced_len.saturating_sub(drop);
                model.first = at;
            }
            Op::TruncateBack(frac) => {
                let keep = model.entries.len() * usize::from(*frac) / 256;
                wal.truncate_back(Lsn(model.first + keep as u64 - 1))
                    .await
                    .map_err(e)
                    .map_err(ctx)?;
                model.entries.truncate(keep);
                model.synced_len = model.synced_len.min(keep);
            }
            Op::TruncateOutOfRange(front) => {
                let res = if *front {
                    wal.truncate_front(Lsn(model.next() + 1)).await
                } else if model.first >= 2 {
                    wal.truncate_back(Lsn(model.first - 2)).await
                } else {
                    wal.truncate_back(Lsn(model.next())).await
                };
                if !matches!(res, Err(Error::OutOfRange { .. })) {
                    return Err(ctx(format!("an out-of-range truncation gave {res:?}")));
                }
            }
            Op::Reset(ahead) => {
                let next = model.next() + u64::from(*ahead);
                wal.reset(Lsn(next)).await.map_err(e).map_err(ctx)?;
                model.first = next;
                model.entries.clear();
                model.synced_len = 0;
            }
            Op::Sync => {
                wal.sync().await.map_err(e).map_err(ctx)?;
                model.synced_len = model.entries.len();
            }
            Op::Reopen => {
                wal.close().await.map_err(e).map_err(ctx)?;
                wal = Wal::open(DIR, options(&disk, policy))
                    .await
                    .map_err(e)
                    .map_err(ctx)?;
                model.synced_len = model.entries.len();
            }
            Op::Crash => {
                disk.crash();
                drop(wal);
                wal = Wal::open(DIR, options(&disk, policy))
                    .await
                    .map_err(e)
                    .map_err(ctx)?;
                if !exact {
                    // What survived must be the model's entries up to somewhere at or after the
                    // last sync: adopt it after checking.
                    let got = wal.range(..).await.map_err(e).map_err(ctx)?;
                    if wal.first_lsn().get() != model.first
                        || got.len() < model.synced_len
                        || got.len() > model.entries.len()
                        || got.iter().zip(&model.entries).any(|(g, m)| g.data != *m)
                    {
                        return Err(ctx(format!(
                            "after a crash: {} entries from {}, model {} from {} (synced {})",
                            got.len(),
                            wal.first_lsn(),
                            model.entries.len(),
                            model.first,
                            model.synced_len
                        )));
                    }
                    model.entries.truncate(got.len());
                }
                model.synced_len = model.entries.len();
            }
        }
        check_all(&wal, &model).await.map_err(ctx)?;
    }
    wal.close().await.map_err(e)
}

fn block_on(
    f: impl std::future::Future<Output = std::result::Result<(), String>>,
) -> std::result::Result<(), String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime")
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn immediate_log_matches_the_model_across_crashes(ops in prop::collection::vec(op(), 1..60), seed in any::<u64>()) {
        if let Err(why) = block_on(run(ops, SyncPolicy::Immediate, seed)) {
            prop_assert!(false, "seed {seed}: {why}");
        }
    }

    #[test]
    fn unsynced_log_keeps_a_prefix_across_crashes(ops in prop::collection::vec(op(), 1..60), seed in any::<u64>()) {
        if let Err(why) = block_on(run(ops, SyncPolicy::None, seed)) {
            prop_assert!(false, "seed {seed}: {why}");
        }
    }
}

#[test]
fn the_model_runs_a_fixed_sequence() {
    let ops = vec![
        Op::Append(10),
        Op::Batch(vec![1, 2, 3]),
        Op::Crash,
        Op::TruncateBack(128),
        Op::Txn(vec![5, 6], true),
        Op::TruncateFront(100),
        Op::Reopen,
        Op::Reset(7),
        Op::Append(0),
        Op::Crash,
    ];
    if let Err(why) = block_on(run(ops, SyncPolicy::Immediate, 3)) {
        panic!("{why}");
    }
}
