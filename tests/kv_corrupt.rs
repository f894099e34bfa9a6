//! Damage in the key-value store's wal, on both I/O backends.
//!
//! - Bad records: a wal entry that the wal itself accepts (its frame and checksum are sound) but
//!   whose payload is not a valid key-value record — garbage, a record cut short, an unknown
//!   version byte or kind, a chunk sequence missing its last chunk, chunks that disagree, the
//!   commit of a transaction never prepared — appended with `Wal` directly while the store is
//!   closed: `Db::open` (and `open_read_only`) returns `Error::Corruption` naming the segment
//!   file and the kind (`BadRecord` / `UnsupportedVersion`), and never panics. The same record,
//!   well formed, opens: the test's encoding is the store's.
//! - Flipped bytes: a store with a known history (commits, deletes, a bucket, prepared
//!   transactions committed and two left prepared, the last record one of them, several wal
//!   segments), left three ways: closed cleanly (a seal frame after the last entry and the
//!   clean-close record in `wal.meta`); closed, then the clean-close record stripped; and as a
//!   kill after the last acknowledged commit leaves it (neither). Then 1–3 random bytes of its
//!   segment files flipped: opening never panics and never returns a wrong value. Either it
//!   fails, or it shows exactly the state after some prefix of the history's records (a torn
//!   tail cut), prepared transactions included. `RINGTIDE_KV_CORRUPT_RUNS` sets the runs per
//!   variant (default 150), `RINGTIDE_KV_CORRUPT_SEED` the first seed; a failure names its seed
//!   and flips.

#![allow(clippy::print_stderr, reason = "tests report what they explored")]

mod common;
mod kv_model;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use kv_model::{Op, RawWrites, State, hash, read_back, run_ops, value};
use ringtide::kv::{Db, DbOptions, TxnOptions};
use ringtide::platform::IoDriver;
use ringtide::wal::{Wal, WalOptions};
use ringtide::{CorruptionKind, Error, Result};

both_backends!(
    bad_records_fail_open_with_corruption_naming_the_segment,
    flipped_bytes_after_a_clean_close_never_give_wrong_values,
    flipped_bytes_without_the_clean_close_record_never_give_wrong_values,
    flipped_bytes_after_a_kill_never_give_wrong_values,
);

const SEGMENT_BYTES: u64 = 64 << 10;

fn options(driver: &IoDriver) -> DbOptions {
    DbOptions::default()
        .driver(driver.clone())
        .wal_segment_size_bytes(SEGMENT_BYTES)
}

fn wal_options(driver: &IoDriver) -> WalOptions {
    WalOptions::default()
        .driver(driver.clone())
        .segment_size_bytes(SEGMENT_BYTES)
}

/// Prepared transactions as `Db::prepared` lists them: id → writes.
type Prepared = BTreeMap<u64, RawWrites>;

/// What the store may show: its keys and buckets, and its prepared transactions.
type Snapshot = (State, Prepared);

/// How the store of the flip loop was left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Closed: a seal frame ends the last segment, and `wal.meta` holds the clean-close record.
    Clean,
    /// Closed, then the clean-close record removed from `wal.meta` (the seal stays).
    NoCleanCloseRecord,
    /// As a process killed after its last acknowledged commit leaves it: neither.
    Killed,
}

/// Builds a store in `dir` with a known history, left as `ending` says; returns the snapshot
/// after each of its wal records (the empty store first): the states a tail cut may leave. Its
/// last record prepares a transaction left prepared (as does one in the middle).
async fn build(dir: &Path, driver: &IoDriver, ending: Ending) -> Result<Vec<Snapshot>> {
    let db = Db::open(dir, options(driver)).await?;
    let mut state = State::default();
    let mut prepared = Prepared::new();
    let mut snapshots = vec![(state.clone(), prepared.clone())];
    let mut held = None;
    for k in 0..64u64 {
        let h = hash(&[k]);
        let wid = k + 1;
        let mut ops = Vec::new();
        if k == 0 {
            ops.push(Op::CreateBucket("b".into()));
        }
        // Prepared transactions write keys of their own: theirs are held until they commit.
        let prepares = matches!(k, 12 | 30 | 44 | 63);
        // A slot rewritten whole: 1–4 keys put, the others deleted.
        let slot = if prepares {
            format!("p{k}")
        } else {
            format!("s{}", h % 6)
        };
        let n = 1 + (h >> 8) % 4;
        let mut writes = Vec::new();
        for i in 0..4 {
            let key = format!("{slot}/{i}");
            if i < n {
                writes.push((
                    String::new(),
                    key,
                    Some(200 + ((h >> (12 + i)) % 2800) as usize),
                ));
            } else if state.root.contains_key(key.as_bytes()) {
                writes.push((String::new(), key, None));
            }
        }
        if prepares {
            writes.push(("b".into(), format!("p{k}"), Some(300)));
        } else if k % 3 == 0 {
            writes.push(("b".into(), format!("k{}", h % 8), Some(300)));
        }
        let count = writes.len() as u32;
        for (i, (bucket, key, len)) in writes.into_iter().enumerate() {
            ops.push(match len {
                Some(len) => Op::put(&bucket, key, value(wid, count, i as u32, len)),
                None => Op::delete(&bucket, key),
            });
        }
        let txn = db.begin(TxnOptions::default())?;
        let listed = run_ops(&txn, &ops).await?;
        match k {
            // Prepared, then committed (a prepare record, then a commit record).
            12 | 30 => {
                txn.prepare().await?;
                prepared.insert(txn.id(), listed);
                snapshots.push((state.clone(), prepared.clone()));
                held = Some((txn, ops));
            }
            20 | 36 => {
                // The prepared one commits first (its keys are held until then).
                let (p, p_ops) = held.take().expect("prepared above");
                p.commit().await?;
                prepared.remove(&p.id());
                state.apply(&p_ops);
                snapshots.push((state.clone(), prepared.clone()));
                txn.commit().await?;
                state.apply(&ops);
                snapshots.push((state.clone(), prepared.clone()));
            }
            // Left prepared: the store lists it after every reopen.
            44 | 63 => {
                txn.prepare().await?;
                prepared.insert(txn.id(), listed);
                snapshots.push((state.clone(), prepared.clone()));
            }
            _ => {
                txn.commit().await?;
                state.apply(&ops);
                snapshots.push((state.clone(), prepared.clone()));
            }
        }
    }
    match ending {
        Ending::Clean => db.close().await?,
        Ending::NoCleanCloseRecord => {
            db.close().await?;
            common::strip_clean_close(&dir.join("wal"));
        }
        Ending::Killed => {
            // Every commit was acknowledged after its fdatasync: what a kill leaves is the
            // closed store less what the close wrote, the clean-close record and the seal frame
            // after the last entry (zeroed, as the preallocated file was).
            db.close().await?;
            let wal_dir = dir.join("wal");
            common::strip_clean_close(&wal_dir);
            let end = common::wal_data_end(&wal_dir, wal_options(driver)).await?;
            let last = common::segments(&wal_dir).pop().expect("a segment");
            let mut bytes = std::fs::read(&last)?;
            bytes[end as usize..].fill(0);
            std::fs::write(&last, &bytes)?;
        }
    }
    Ok(snapshots)
}

/// Copies a directory tree.
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// A write of a hand-made record: bucket id, key, value (`None`: a delete).
type RawWrite<'a> = (u64, &'a [u8], Option<&'a [u8]>);

/// A key-value record chunk as the store encodes it (byte tables in docs/design.md): header
/// `version | kind | more | seq u64 | txn_id u64 | aux u64 | count u32`, then each write
/// `op (1 put, 2 delete) | bucket u64 | key_len u32 | key | [val_len u32 | value]`.
fn chunk(
    version: u8,
    kind: u8,
    more: bool,
    seq: u64,
    txn_id: u64,
    writes: &[RawWrite<'_>],
) -> Vec<u8> {
    let mut b = vec![version, kind, u8::from(more)];
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&txn_id.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&(writes.len() as u32).to_le_bytes());
    for (bucket, key, value) in writes {
        b.push(if value.is_some() { 1 } else { 2 });
        b.extend_from_slice(&bucket.to_le_bytes());
        b.extend_from_slice(&(key.len() as u32).to_le_bytes());
        b.extend_from_slice(key);
        if let Some(v) = value {
            b.extend_from_slice(&(v.len() as u32).to_le_bytes());
            b.extend_from_slice(v);
        }
    }
    b
}

const COMMIT: u8 = 1;
const COMMIT_PREPARED: u8 = 3;

async fn bad_records_fail_open_with_corruption_naming_the_segment(driver: IoDriver) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let base = tmp.path().join("base");
    build(&base, &driver, Ending::Clean).await?;
    let seq = {
        let db = Db::open(&base, options(&driver)).await?;
        let seq = db.committed_seq().get();
        db.close().await?;
        seq
    };
    let put: &[RawWrite<'_>] = &[(0, b"new", Some(b"value")), (0, b"s0/0", None)];
    let good = chunk(1, COMMIT, false, seq + 1, 9999, put);
    let mut unknown_kind = good.clone();
    unknown_kind[1] = 9;
    let mut bad_flag = good.clone();
    bad_flag[2] = 2;
    let mut trailing = good.clone();
    trailing.push(0);
    let empty_key = chunk(1, COMMIT, false, seq + 1, 9999, &[(0, b"", Some(b"v"))]);
    let first_of_two = chunk(1, COMMIT, true, seq + 1, 9999, &put[..1]);
    let other_header = chunk(1, COMMIT, false, seq + 2, 9999, &put[1..]);
    let cases: Vec<(&str, Vec<Vec<u8>>, &str)> = vec![
        ("garbage", vec![b"not a record".to_vec()], "bad"),
        (
            "a record cut short",
            vec![good[..good.len() - 3].to_vec()],
            "bad",
        ),
        ("a header cut short", vec![good[..20].to_vec()], "bad"),
        (
            "an unknown version byte",
            vec![{
                let mut v = good.clone();
                v[0] = 7;
                v
            }],
            "version",
        ),
        ("an unknown kind", vec![unknown_kind], "bad"),
        ("a bad continuation flag", vec![bad_flag], "bad"),
        ("bytes after the last write", vec![trailing], "bad"),
        ("an empty key", vec![empty_key], "bad"),
        (
            "a chunk sequence missing its last chunk",
            vec![first_of_two.clone()],
            "bad",
        ),
        (
            "chunks of one record that disagree",
            vec![first_of_two, other_header],
            "bad",
        ),
        (
            "the commit of a transaction never prepared",
            vec![chunk(1, COMMIT_PREPARED, false, seq + 1, 424_242, &[])],
            "bad",
        ),
        ("a well-formed record", vec![good.clone()], "ok"),
    ];
    for (i, (what, entries, expect)) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(format!("case{i}"));
        copy_dir(&base, &dir)?;
        let wal_dir = dir.join("wal");
        let wal = Wal::open(&wal_dir, wal_options(&driver)).await?;
        // Appended as the store appends a record: one atomic batch of its chunks.
        wal.append_batch(entries.into_iter().map(Bytes::from).collect::<Vec<_>>())
            .await?;
        wal.close().await?;
        for read_only in [true, false] {
            let opened = if read_only {
                Db::open_read_only(&dir, options(&driver)).await
            } else {
                Db::open(&dir, options(&driver)).await
            };
            let ctx = format!("{what} (read_only {read_only})");
            match (expect, opened) {
                ("ok", Ok(db)) => {
                    let txn = db.begin(TxnOptions::default().read_only(true))?;
                    assert_eq!(txn.get("new").await?, Some(Bytes::from_static(b"value")));
                    assert_eq!(txn.get("s0/0").await?, None);
                    assert_eq!(db.committed_seq().get(), seq + 1, "{ctx}");
                    drop(txn);
                    db.close().await?;
                }
                (_, Err(Error::Corruption { file, kind, .. })) if expect != "ok" => {
                    let matches = match expect {
                        "version" => matches!(
                            kind,
                            CorruptionKind::UnsupportedVersion {
                                found: 7,
                                supported: 1
                            }
                        ),
                        _ => matches!(kind, CorruptionKind::BadRecord { .. }),
                    };
                    assert!(matches, "{ctx}: wrong kind {kind:?}");
                    assert!(
                        file.starts_with(&wal_dir)
                            && file.is_file()
                            && file.extension().is_some_and(|e| e == "wal"),
                        "{ctx}: the error names {}, not a segment file of the wal",
                        file.display()
                    );
                }
                (_, other) => panic!("{ctx}: expected {expect}, got {other:?}"),
            }
        }
    }
    Ok(())
}

/// xorshift64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Opens the damaged store and reads everything it shows.
async fn open_and_read(dir: PathBuf, driver: IoDriver) -> Result<Snapshot> {
    let db = Db::open(&dir, options(&driver)).await?;
    let prepared: Prepared = db
        .prepared()
        .iter()
        .map(|p| (p.id(), p.writes().to_vec()))
        .collect();
    let txn = db.begin(TxnOptions::default().read_only(true))?;
    let state = read_back(&txn, b"", "").await;
    drop(txn);
    let closed = db.close().await;
    let state = state?;
    closed?;
    Ok((state, prepared))
}

async fn flip_loop(driver: IoDriver, ending: Ending) -> Result<()> {
    let runs = std::env::var("RINGTIDE_KV_CORRUPT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150u64);
    let first_seed = std::env::var("RINGTIDE_KV_CORRUPT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1u64);
    let variant = match ending {
        Ending::Clean => "after a clean close",
        Ending::NoCleanCloseRecord => "closed, clean-close record stripped",
        Ending::Killed => "as a kill leaves it (no seal, no clean-close record)",
    };
    let tmp = tempfile::tempdir()?;
    let base = tmp.path().join("base");
    let snapshots = build(&base, &driver, ending).await?;
    let data_bytes: BTreeMap<PathBuf, u64> = {
        let wal = Wal::open_read_only(base.join("wal"), wal_options(&driver)).await?;
        let sizes = wal
            .segments()
            .into_iter()
            .map(|s| {
                (
                    PathBuf::from(s.path.file_name().expect("a file")),
                    s.data_bytes,
                )
            })
            .collect();
        wal.close().await?;
        sizes
    };
    assert!(data_bytes.len() >= 3, "the history spans several segments");
    let (mut refused, mut whole, mut cut) = (0, 0, 0);
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures = Vec::new();
    for seed in first_seed..first_seed + runs {
        let mut rng = Rng(hash(&[seed, ending as u64]) | 1);
        let dir = tmp.path().join(format!("run{seed}"));
        copy_dir(&base, &dir)?;
        let wal_dir = dir.join("wal");
        let segments = common::segments(&wal_dir);
        let mut flips = Vec::new();
        for _ in 0..1 + rng.below(3) {
            // Two in five flips in the last records (the tail a crash may tear), two in five
            // among any segment's frames, one in five anywhere in the preallocated files.
            let pick = rng.below(5);
            let path = if pick < 2 {
                segments.last().expect("a segment")
            } else {
                &segments[rng.below(segments.len() as u64) as usize]
            };
            let mut bytes = std::fs::read(path)?;
            let data = data_bytes[&PathBuf::from(path.file_name().expect("a file"))];
            let at = match pick {
                0 | 1 => data - 1 - rng.below(data.min(3 << 10)),
                2 | 3 => rng.below(data),
                _ => rng.below(bytes.len() as u64),
            } as usize;
            let mask = 1 + rng.below(255) as u8;
            bytes[at] ^= mask;
            std::fs::write(path, &bytes)?;
            flips.push(format!(
                "{}@{at}^{mask:#04x}",
                path.file_name().expect("a file").to_string_lossy()
            ));
        }
        let ctx = format!("{variant}, seed {seed} (flips {})", flips.join(", "));
        match tokio::spawn(open_and_read(dir.clone(), driver.clone())).await {
            Err(e) if e.is_panic() => failures.push(format!("{ctx}: opening panicked")),
            Err(e) => failures.push(format!("{ctx}: {e}")),
            Ok(Err(e)) => {
                refused += 1;
                let kind = match &e {
                    Error::Corruption { kind, .. } => format!("{kind:?}")
                        .split([' ', '{', '('])
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                    other => format!("{other}"),
                };
                *kinds.entry(kind).or_default() += 1;
            }
            Ok(Ok(found)) => match snapshots.iter().rposition(|s| *s == found) {
                Some(i) if i + 1 == snapshots.len() => whole += 1,
                Some(_) => cut += 1,
                None => failures.push(format!(
                    "{ctx}: opened showing a state no prefix of the history left:{}",
                    kv_model::diff(&snapshots.last().expect("snapshots").0, &found.0)
                )),
            },
        }
        std::fs::remove_dir_all(&dir)?;
    }
    eprintln!(
        "kv_corrupt: {variant}: {runs} runs: {whole} opened whole, {cut} opened with a tail cut \
         (a prefix of the history), {refused} refused {kinds:?}, {} failures",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
    Ok(())
}

async fn flipped_bytes_after_a_clean_close_never_give_wrong_values(driver: IoDriver) -> Result<()> {
    flip_loop(driver, Ending::Clean).await
}

async fn flipped_bytes_without_the_clean_close_record_never_give_wrong_values(
    driver: IoDriver,
) -> Result<()> {
    flip_loop(driver, Ending::NoCleanCloseRecord).await
}

async fn flipped_bytes_after_a_kill_never_give_wrong_values(driver: IoDriver) -> Result<()> {
    flip_loop(driver, Ending::Killed).await
}
