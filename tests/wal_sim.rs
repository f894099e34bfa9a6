//! Crash-point exploration of the write-ahead log on the simulated disk (feature `sim`).
//!
//! Method: a workload (concurrent appends, batches, log transactions, rotations, then truncations
//! at both ends and more appends) runs on a [`SimDisk`]. A first run counts its disk operations;
//! then, for every operation number N (or an even sample when there are more than the budget),
//! the workload runs again on a fresh disk that loses power when operation N + 1 starts: unsynced
//! sectors are kept, lost or torn at random and directory changes since the last directory sync
//! may vanish. Every other run also crashes again in the middle of recovery. The log is then
//! recovered and checked against what the workload was told:
//!
//! - every append acknowledged as durable is there, at its lsn, with its exact bytes — unless a
//!   truncation that started after the acknowledgement covers that lsn;
//! - every entry present is one that was appended (each payload describes itself);
//! - lsns are dense from `first_lsn` to `last_lsn`;
//! - a batch or a log transaction is all or nothing (a truncation may cut it, nothing else);
//! - the log accepts an append afterwards, and keeps it across a clean reopen.
//!
//! Runs for each sync policy. `RINGTIDE_SIM_POINTS` caps the crash points per policy (default
//! 400, an even sample when the workload has more operations; `0` means every point),
//! `RINGTIDE_SIM_SEEDS` sets the runs per point, each with its own seed, so with its own choice of
//! what the crash keeps (default 3), and `RINGTIDE_SIM_SEED` the base seed. A failure names its
//! policy, seed and crash point; `RINGTIDE_SIM_SEED=S RINGTIDE_SIM_ONLY=N` replays that run, and
//! `RINGTIDE_SIM_TRACE=trace` prints every disk operation.

#![cfg(feature = "sim")]
#![allow(clippy::print_stderr, reason = "tests report what they explored")]

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
mod common;

use common::sim_options as options;
use ringtide::platform::sim::{FaultKind, SimDisk, Trigger};
use ringtide::wal::{Lsn, Record, SyncPolicy, Wal};
use ringtide::{Error, Result};

const DIR: &str = "/db/wal";
const WRITERS: u64 = 4;
const ROUNDS: u64 = 12;

/// Reports a test's runs and fails with the first failures, if any.
fn finish(what: &str, runs: usize, failures: &[String]) {
    eprintln!("wal_sim: {what}: {runs}, failures {}", failures.len());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
}

fn policies() -> Vec<(&'static str, SyncPolicy)> {
    vec![
        ("immediate", SyncPolicy::Immediate),
        (
            "grouped",
            SyncPolicy::Grouped {
                window: Duration::from_micros(200),
            },
        ),
        (
            "periodic",
            SyncPolicy::Periodic {
                interval: Duration::from_millis(1),
                max_unsynced_entries: 8,
            },
        ),
        ("none", SyncPolicy::None),
    ]
}

/// A payload that describes itself: its id, its group (batch or transaction) and place in it,
/// then filler derived from the id, so that any entry read back can be checked on its own.
fn payload(id: u64, group: u64, index: u32, group_len: u32) -> Bytes {
    let len = 24 + (id * 131 % 3000) as usize;
    let mut b = BytesMut::with_capacity(len);
    b.put_u64_le(id);
    b.put_u64_le(group);
    b.put_u32_le(index);
    b.put_u32_le(group_len);
    while b.len() < len {
        b.put_u8((id as usize + b.len()) as u8);
    }
    b.freeze()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Described {
    id: u64,
    group: u64,
    index: u32,
    group_len: u32,
}

fn describe(data: &[u8]) -> Option<Described> {
    if data.len() < 24 {
        return None;
    }
    let u64_at = |i: usize| u64::from_le_bytes(data[i..i + 8].try_into().unwrap());
    let u32_at = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().unwrap());
    let d = Described {
        id: u64_at(0),
        group: u64_at(8),
        index: u32_at(16),
        group_len: u32_at(20),
    };
    (payload(d.id, d.group, d.index, d.group_len) == data).then_some(d)
}

#[derive(Debug, Clone, Copy)]
enum Cut {
    Front(u64),
    Back(u64),
}

/// What the workload was told, in order.
#[derive(Default)]
struct Observed {
    /// Every id handed to the log, acknowledged or not.
    attempted: HashSet<u64>,
    /// Acknowledged appends: (lsn, id), not yet known durable (no-fsync policies).
    pending: Vec<(u64, u64)>,
    /// Acknowledged as durable: (lsn, id, event number).
    durable: Vec<(u64, u64, u64)>,
    /// Truncations started: (cut, event number).
    cuts: Vec<(Cut, u64)>,
    events: u64,
    /// Segments the log had before the truncations.
    segments: u64,
}

impl Observed {
    fn event(&mut self) -> u64 {
        self.events += 1;
        self.events
    }

    fn acked(&mut self, first: Lsn, ids: &[u64], durable: bool) {
        let at = self.event();
        for (i, &id) in ids.iter().enumerate() {
            let lsn = first.get() + i as u64;
            if durable {
                self.durable.push((lsn, id, at));
            } else {
                self.pending.push((lsn, id));
            }
        }
    }

    fn synced(&mut self, upto: Lsn) {
        let at = self.event();
        let (done, rest): (Vec<_>, Vec<_>) = self
            .pending
            .drain(..)
            .partition(|&(lsn, _)| lsn <= upto.get());
        self.pending = rest;
        self.durable
            .extend(done.into_iter().map(|(lsn, id)| (lsn, id, at)));
    }

    /// A truncation starts: appends it covers that are not yet durable never will be.
    fn cut(&mut self, cut: Cut) {
        let at = self.event();
        self.pending.retain(|&(lsn, _)| match cut {
            Cut::Front(f) => lsn >= f,
            Cut::Back(b) => lsn <= b,
        });
        self.cuts.push((cut, at));
    }

    /// Whether a truncation that started after event `after` may have removed `lsn`.
    fn may_be_cut(&self, lsn: u64, after: u64) -> bool {
        self.cuts.iter().any(|&(cut, at)| {
            at > after
                && match cut {
                    Cut::Front(f) => lsn < f,
                    Cut::Back(b) => lsn > b,
                }
        })
    }
}

struct Ids(std::sync::atomic::AtomicU64);

impl Ids {
    fn next(&self) -> u64 {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

/// One writer: appends, batches, transactions (some rolled back), a sync now and then. Stops at
/// the first error (after a crash every call fails).
async fn writer(
    wal: Wal,
    w: u64,
    durable: bool,
    obs: Arc<Mutex<Observed>>,
    ids: Arc<Ids>,
) -> Result<()> {
    for round in 0..ROUNDS {
        match (w + round) % 4 {
            0 | 1 => {
                let id = ids.next();
                obs.lock().unwrap().attempted.insert(id);
                let lsn = wal.append(payload(id, id, 0, 1)).await?;
                obs.lock().unwrap().acked(lsn, &[id], durable);
            }
            2 => {
                // Once a run, a bulk batch (~180 KB, larger than a segment, so in a segment of
                // its own): under `None` and `Periodic` it is written with `O_DIRECT`.
                let n = if w == 0 && round == 6 {
                    120
                } else {
                    2 + (round % 3) as u32
                };
                let group = ids.next();
                let idv: Vec<u64> = (0..n).map(|_| ids.next()).collect();
                obs.lock().unwrap().attempted.extend(idv.iter().copied());
                let records: Vec<Record> = idv
                    .iter()
                    .enumerate()
                    .map(|(i, &id)| Record::from(payload(id, group, i as u32, n)))
                    .collect();
                let range = wal.append_batch(records).await?;
                obs.lock().unwrap().acked(range.start, &idv, durable);
            }
            _ => {
                let n = 2 + (round % 2) as u32;
                let group = ids.next();
                let idv: Vec<u64> = (0..n).map(|_| ids.next()).collect();
                let mut txn = wal.begin_log_txn(Duration::from_secs(30));
                for (i, &id) in idv.iter().enumerate() {
                    txn.push(payload(id, group, i as u32, n))?;
                }
                if round % 3 == 2 {
                    txn.rollback();
                    continue;
                }
                obs.lock().unwrap().attempted.extend(idv.iter().copied());
                let range = txn.commit().await?;
                obs.lock().unwrap().acked(range.start, &idv, durable);
            }
        }
        if round % 3 == 1 {
            let upto = wal.sync().await?;
            obs.lock().unwrap().synced(upto);
        }
    }
    Ok(())
}

/// The whole workload; returns at the first error.
async fn workload(disk: &SimDisk, policy: SyncPolicy, obs: Arc<Mutex<Observed>>) -> Result<()> {
    let durable = matches!(policy, SyncPolicy::Immediate | SyncPolicy::Grouped { .. });
    workload_claiming(disk, policy, durable, obs).await
}

/// The workload; `durable` says whether an acknowledged append is to be taken as durable.
async fn workload_claiming(
    disk: &SimDisk,
    policy: SyncPolicy,
    durable: bool,
    obs: Arc<Mutex<Observed>>,
) -> Result<()> {
    let wal = Wal::open(DIR, options(disk, policy)).await?;
    let ids = Arc::new(Ids(std::sync::atomic::AtomicU64::new(1)));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(wal.clone(), w, durable, obs.clone(), ids.clone())))
        .collect();
    let mut first_err = None;
    for t in tasks {
        if let Err(e) = t.await.expect("a writer panicked") {
            first_err.get_or_insert(e);
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    obs.lock().unwrap().segments = wal.stats().segments;
    // Truncations at both ends, with appends between, from one task.
    let last = wal.last_lsn().get();
    let front = wal.first_lsn().get() + (last - wal.first_lsn().get()) / 3;
    obs.lock().unwrap().cut(Cut::Front(front));
    wal.truncate_front(Lsn(front)).await?;
    writer(wal.clone(), 0, durable, obs.clone(), ids.clone()).await?;
    let back = wal.last_lsn().get().saturating_sub(3).max(front);
    obs.lock().unwrap().cut(Cut::Back(back));
    wal.truncate_back(Lsn(back)).await?;
    writer(wal.clone(), 1, durable, obs.clone(), ids.clone()).await?;
    let upto = wal.sync().await?;
    obs.lock().unwrap().synced(upto);
    wal.close().await
}

/// Recovers the log and checks it against `obs`; the error says what is wrong.
async fn check(
    disk: &SimDisk,
    policy: SyncPolicy,
    obs: &Observed,
) -> std::result::Result<(), String> {
    let wal = match Wal::open(DIR, options(disk, policy)).await {
        Ok(wal) => wal,
        Err(e) => return Err(format!("recovery failed: {e}")),
    };
    let entries = wal.range(..).await.map_err(|e| format!("range: {e}"))?;
    let (first, last) = (wal.first_lsn().get(), wal.last_lsn().get());
    if entries.len() as u64 != last + 1 - first {
        return Err(format!(
            "{} entries for lsns {first}..={last}",
            entries.len()
        ));
    }
    let mut by_lsn = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        if e.lsn.get() != first + i as u64 {
            return Err(format!("lsn {} at position {i} from {first}", e.lsn));
        }
        let Some(d) = describe(&e.data) else {
            return Err(format!("lsn {}: bytes that were never appended", e.lsn));
        };
        if !obs.attempted.contains(&d.id) {
            return Err(format!("lsn {}: id {} was never appended", e.lsn, d.id));
        }
        by_lsn.insert(e.lsn.get(), d);
    }
    for &(lsn, id, at) in &obs.durable {
        match by_lsn.get(&lsn) {
            Some(d) if d.id == id => {}
            _ if obs.may_be_cut(lsn, at) => {}
            other => {
                return Err(format!(
                    "acknowledged durable lsn {lsn} (id {id}) lost: found {other:?} in {first}..={last}"
                ));
            }
        }
    }
    for (&lsn, d) in &by_lsn {
        if d.group_len > 1 {
            let start = lsn - u64::from(d.index);
            for j in 0..d.group_len {
                let at = start + u64::from(j);
                match by_lsn.get(&at) {
                    Some(m) if m.group == d.group && m.index == j => {}
                    // A truncation may cut a group; what follows the cut is newer.
                    _ if obs.may_be_cut(at, 0) => {}
                    other => {
                        return Err(format!(
                            "group {} torn: lsn {lsn} is member {} of {}, lsn {at} holds {other:?}",
                            d.group, d.index, d.group_len
                        ));
                    }
                }
            }
        }
    }
    let next = wal
        .append(Bytes::from_static(b"after recovery"))
        .await
        .map_err(|e| format!("append after recovery: {e}"))?;
    if next.get() != last + 1 {
        return Err(format!(
            "append after recovery got {next}, expected {}",
            last + 1
        ));
    }
    wal.sync().await.map_err(|e| format!("sync: {e}"))?;
    wal.close().await.map_err(|e| format!("close: {e}"))?;
    let wal = Wal::open(DIR, options(disk, policy))
        .await
        .map_err(|e| format!("clean reopen: {e}"))?;
    let e = wal
        .read(next)
        .await
        .map_err(|e| format!("read back: {e}"))?;
    if &e.data[..] != b"after recovery" {
        return Err("the append after recovery changed".into());
    }
    wal.close().await.map_err(|e| format!("close: {e}"))
}

/// One run: crash after `point` operations (none if `None`), maybe crash again during recovery,
/// check. Returns the operations the workload ran and the acknowledged-durable appends checked.
async fn run_once(
    name: &str,
    policy: SyncPolicy,
    seed: u64,
    point: Option<u64>,
) -> std::result::Result<(u64, usize), String> {
    let disk = SimDisk::new(seed);
    let obs = Arc::new(Mutex::new(Observed::default()));
    if let Some(n) = point {
        disk.crash_after(n);
    }
    let ran = tokio::time::timeout(
        Duration::from_secs(20),
        workload(&disk, policy, obs.clone()),
    )
    .await;
    let ops = disk.stats().ops;
    match (&ran, point) {
        (Err(_), _) => return Err(format!("{name} seed {seed} point {point:?}: workload hung")),
        (Ok(Err(e)), None) => {
            return Err(format!(
                "{name} seed {seed}: workload failed without a crash: {e}"
            ));
        }
        _ => {}
    }
    if point.is_none() {
        let obs = obs.lock().unwrap();
        assert!(
            obs.segments >= 2,
            "the workload should rotate segments: {}",
            obs.segments
        );
        return Ok((ops, obs.durable.len()));
    }
    if disk.crash_pending() {
        disk.crash();
    }
    let obs = std::mem::take(&mut *obs.lock().unwrap());
    // Every other run: power fails again part-way through recovery.
    if seed % 2 == 1 {
        let before = disk.stats().ops;
        disk.crash_after(before + 1 + seed % 23);
        // Whether this open fails or not, the next one must succeed.
        let _ = Wal::open(DIR, options(&disk, policy)).await;
        if disk.crash_pending() {
            disk.crash();
        }
    }
    match tokio::time::timeout(Duration::from_secs(20), check(&disk, policy, &obs)).await {
        Ok(Ok(())) => Ok((ops, obs.durable.len())),
        Ok(Err(why)) => Err(format!(
            "{name} seed {seed} crash after op {}: {why}\n  replay: RINGTIDE_SIM_SEED={seed} RINGTIDE_SIM_ONLY={}",
            point.unwrap_or(0),
            point.unwrap_or(0)
        )),
        Err(_) => Err(format!(
            "{name} seed {seed} point {point:?}: recovery check hung"
        )),
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_crash_point_keeps_every_acknowledged_append() {
    common::sim_trace();
    let budget = common::env_u64("RINGTIDE_SIM_POINTS", 400);
    let base_seed = common::env_u64("RINGTIDE_SIM_SEED", 1);
    let only = std::env::var("RINGTIDE_SIM_ONLY")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let seeds_per_point = common::env_u64("RINGTIDE_SIM_SEEDS", 3);
    let mut failures = Vec::new();
    let mut total = 0;
    let mut runs = 0;
    for (name, policy) in policies() {
        let (ops, _) = run_once(name, policy, base_seed, None).await.unwrap();
        let mut checked = 0;
        let points: Vec<u64> = match only {
            Some(n) => vec![n],
            None if budget == 0 || ops <= budget => (0..ops).collect(),
            None => (0..budget).map(|i| i * ops / budget).collect(),
        };
        let seeds = if only.is_some() { 1 } else { seeds_per_point };
        for &n in &points {
            for k in 0..seeds {
                // Each (point, seed) pair is its own run: the seed decides what the crash keeps.
                let seed = base_seed.wrapping_add(k * 1_000_003).wrapping_add(n);
                let seed = if only.is_some() { base_seed } else { seed };
                match run_once(name, policy, seed, Some(n)).await {
                    Ok((_, acked)) => checked += acked,
                    Err(why) => failures.push(why),
                }
                runs += 1;
            }
        }
        eprintln!(
            "wal_sim: {name}: {} crash points of {ops} operations explored, \
             {checked} acknowledged-durable appends checked",
            points.len()
        );
        total += points.len();
    }
    eprintln!(
        "wal_sim: {total} crash points, {runs} crash runs (power lost again during recovery in \
         half of them), {} failures",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// An fsync that fails poisons the log and fails its waiters; nothing unsynced is acknowledged;
/// reopening recovers every acknowledged entry.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_failed_fsync_poisons_and_reopen_recovers() -> Result<()> {
    for seed in 0..16u64 {
        let disk = SimDisk::new(seed);
        let wal = Wal::open(DIR, options(&disk, SyncPolicy::Immediate)).await?;
        let mut acked = Vec::new();
        for i in 0..5u64 {
            let lsn = wal.append(payload(i, i, 0, 1)).await?;
            acked.push((lsn, i));
        }
        disk.inject(FaultKind::SyncError, Trigger::Nth(1 + seed % 3));
        let mut poisoned = false;
        for i in 5..40u64 {
            match wal.append(payload(i, i, 0, 1)).await {
                Ok(lsn) => {
                    assert!(!poisoned, "an append succeeded after the log was poisoned");
                    acked.push((lsn, i));
                }
                Err(Error::Poisoned { .. }) => poisoned = true,
                Err(e) => panic!("seed {seed}: unexpected {e}"),
            }
        }
        assert!(poisoned, "seed {seed}: the failed fsync was not reported");
        assert!(matches!(wal.sync().await, Err(Error::Poisoned { .. })));
        drop(wal);
        // The unsynced tail may or may not have reached the disk.
        disk.crash();
        let wal = Wal::open(DIR, options(&disk, SyncPolicy::Immediate)).await?;
        for (lsn, i) in acked {
            assert_eq!(
                wal.read(lsn).await?.data,
                payload(i, i, 0, 1),
                "seed {seed}"
            );
        }
        wal.append(Bytes::from_static(b"again")).await?;
        wal.close().await?;
    }
    Ok(())
}

/// A write that fails just before a rotation poisons the log, and no new segment is made after
/// it. (Under the policies that sync every batch, the rotation found nothing unsynced and went on:
/// the new segment's entries followed a gap, and a crash before the cut record was written left
/// a log recovery refused, "a segment is missing". Found by the random-fault runs.)
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn no_segment_is_made_after_a_failed_write() -> Result<()> {
    let disk = SimDisk::new(77);
    let policy = SyncPolicy::Grouped {
        window: Duration::from_millis(5),
    };
    let wal = Wal::open(DIR, options(&disk, policy)).await?;
    // Past half of the first 64 KiB segment: the next one is prepared in the background.
    let mut i = 0u64;
    while wal.segments()[0].data_bytes < 40 << 10 {
        wal.append(payload(i, i, 0, 1)).await?;
        i += 1;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acked = wal.last_lsn();
    // One window's calls: the first fits the segment, the rest go to the next one. The write
    // into the first segment fails.
    disk.inject(FaultKind::WriteError, Trigger::Nth(1));
    let calls: Vec<_> = (0..4u64)
        .map(|c| {
            let wal = wal.clone();
            // ~12 KiB a call: the 24 KiB left in the segment take the first two at most.
            let n = if c == 0 { 1 } else { 30 };
            let batch: Vec<Bytes> = (0..n)
                .map(|k| Bytes::from(vec![c as u8 + 1; 400 + k as usize]))
                .collect();
            tokio::spawn(async move { wal.append_batch(batch).await })
        })
        .collect();
    for call in calls {
        let res = call.await.expect("task");
        assert!(matches!(res, Err(Error::Poisoned { .. })), "{res:?}");
    }
    // The waiters are failed at once; let the writer finish what it was doing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        wal.segments().len(),
        1,
        "a segment was made after the failure"
    );
    drop(wal);
    disk.clear_faults();
    disk.crash();
    let wal = Wal::open(DIR, options(&disk, policy)).await?;
    assert_eq!(wal.last_lsn(), acked);
    assert_eq!(wal.segments().len(), 1);
    wal.close().await
}

/// Several calls that each need a segment made for them, at once (on this runtime every one asks
/// before the writer runs): the writer stages each where it makes room, and still within
/// `max_pending_bytes`, writing what was staged before first. The bound is checked where every
/// call is staged (a debug assertion, as the test command builds): a sampler cannot see it passed
/// for the moment between the writer staging a call and writing it.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn large_calls_needing_room_at_once_stay_within_the_pending_bound() -> Result<()> {
    const BOUND: u64 = 1 << 20;
    let disk = SimDisk::new(5);
    let o = options(&disk, SyncPolicy::None).max_pending_bytes(BOUND);
    let wal = Wal::open(DIR, o.clone()).await?;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let calls: Vec<_> = (0..8u8)
        .map(|c| {
            let wal = wal.clone();
            // ~700 KiB a call: eleven segments' worth, and two calls pass the bound together.
            let batch: Vec<Bytes> = (0..700).map(|_| Bytes::from(vec![c; 1000])).collect();
            tokio::spawn(async move { wal.append_batch(batch).await })
        })
        .collect();
    let sampler = {
        let (wal, done) = (wal.clone(), done.clone());
        tokio::spawn(async move {
            let mut max = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                max = max.max(wal.stats().pending_bytes);
                tokio::task::yield_now().await;
            }
            max
        })
    };
    let mut ranges = Vec::new();
    for call in calls {
        ranges.push(call.await.expect("task")?);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let max = sampler.await.expect("sampler");
    assert!(max <= BOUND, "{max} bytes pending, bound {BOUND}");
    assert!(max > BOUND / 2, "the sampler saw the calls: {max}");
    wal.close().await?;
    let wal = Wal::open(DIR, o).await?;
    for range in ranges {
        let entries = wal.range(range).await?;
        let c = entries[0].data[0];
        assert_eq!(entries.len(), 700);
        assert!(
            entries
                .iter()
                .all(|e| e.data.len() == 1000 && e.data[0] == c)
        );
    }
    wal.close().await
}

/// A read error reaches that reader only; a flipped bit read back is caught by the checksum and
/// is an error, not wrong data; the log goes on.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn read_faults_reach_only_the_reader() -> Result<()> {
    let disk = SimDisk::new(5);
    // No window of recent entries: every read goes to the files, where the faults are.
    let wal = Wal::open(
        DIR,
        options(&disk, SyncPolicy::Immediate).read_cache_bytes(0),
    )
    .await?;
    for i in 0..50u64 {
        wal.append(payload(i, i, 0, 1)).await?;
    }
    for kind in [FaultKind::ReadError, FaultKind::BitFlip] {
        disk.inject(kind, Trigger::Nth(1));
        let res = wal.range(..).await;
        assert!(res.is_err(), "{kind:?} reached the reader as {res:?}");
        let all = wal.range(..).await?;
        assert_eq!(all.len(), 50);
        wal.append(payload(99, 99, 0, 1)).await?;
        let _ = wal.truncate_back(Lsn(50)).await;
    }
    wal.close().await
}

/// A file system that opens files `O_DIRECT` but refuses the writes (`EINVAL`: it wants another
/// alignment) gets the same writes buffered: nothing fails, nothing is poisoned, and what was
/// acknowledged as durable survives a crash. Durable logs write everything directly; the others
/// their bulk writes.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn writes_a_file_system_refuses_direct_are_made_buffered() -> Result<()> {
    for (name, policy) in [
        ("immediate", SyncPolicy::Immediate),
        ("none", SyncPolicy::None),
    ] {
        let disk = SimDisk::new(11);
        disk.refuse_direct_writes(true);
        let wal = Wal::open(DIR, options(&disk, policy)).await?;
        for i in 0..40u64 {
            assert_eq!(wal.append(payload(i, i, 0, 1)).await?, Lsn(i + 1), "{name}");
        }
        // ~180 KB in one call: larger than a segment, written in one piece (direct if it could).
        let bulk: Vec<Record> = (40..160u64)
            .map(|i| Record::from(payload(i, 40, (i - 40) as u32, 120)))
            .collect();
        assert_eq!(wal.append_batch(bulk).await?, Lsn(41)..Lsn(161), "{name}");
        for i in 160..170u64 {
            wal.append(payload(i, i, 0, 1)).await?;
        }
        let durable = wal.sync().await?;
        assert_eq!(durable, Lsn(170), "{name}");
        disk.crash();
        let wal = Wal::open(DIR, options(&disk, policy)).await?;
        assert_eq!(wal.last_lsn(), Lsn(170), "{name}");
        for (i, e) in wal.range(..).await?.iter().enumerate() {
            let d = describe(&e.data).expect("a workload payload");
            assert_eq!(d.id, i as u64, "{name}: lsn {}", e.lsn);
        }
        wal.close().await?;
    }
    Ok(())
}

/// ENOSPC while the next segment is created fails the appends that need it without poisoning;
/// once space returns, appends work and everything acknowledged is there after a crash.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_full_disk_at_segment_creation_recovers_when_space_returns() -> Result<()> {
    let disk = SimDisk::new(9);
    let wal = Wal::open(DIR, options(&disk, SyncPolicy::Immediate)).await?;
    disk.set_capacity(Some(disk.used_bytes() + (100 << 10)));
    let mut acked = Vec::new();
    let mut full = 0;
    for i in 0..400u64 {
        match wal.append(payload(i, i, 0, 1)).await {
            Ok(lsn) => acked.push((lsn, i)),
            Err(Error::DiskFull { .. }) => {
                full += 1;
                if full == 3 {
                    disk.set_capacity(None);
                }
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(full >= 3, "the disk never filled");
    disk.crash();
    let wal = Wal::open(DIR, options(&disk, SyncPolicy::Immediate)).await?;
    for (lsn, i) in &acked {
        assert_eq!(wal.read(*lsn).await?.data, payload(*i, *i, 0, 1));
    }
    assert_eq!(
        wal.last_lsn().get(),
        acked.len() as u64,
        "no lsn was consumed by a failure"
    );
    wal.close().await
}

/// Injected faults at random while a workload runs (write and fsync errors, short writes, full
/// disk): whatever happens, a crash and a reopen keep every acknowledged append.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn random_faults_never_lose_an_acknowledged_append() {
    common::sim_trace();
    let runs = common::env_u64("RINGTIDE_SIM_FAULT_RUNS", 60);
    // To replay a failing seed N: RINGTIDE_SIM_FAULT_FIRST=N-1000 RINGTIDE_SIM_FAULT_RUNS=1.
    let first = common::env_u64("RINGTIDE_SIM_FAULT_FIRST", 0);
    let mut failures = Vec::new();
    for seed in first..first + runs {
        let disk = SimDisk::new(1000 + seed);
        for kind in [
            FaultKind::WriteError,
            FaultKind::SyncError,
            FaultKind::ShortWrite,
            FaultKind::NoSpace,
        ] {
            disk.inject(kind, Trigger::Rate(0.004 * (1 + seed % 4) as f64));
        }
        let (name, policy) = policies()[(seed % 2) as usize];
        let obs = Arc::new(Mutex::new(Observed::default()));
        let ran = tokio::time::timeout(
            Duration::from_secs(20),
            workload(&disk, policy, obs.clone()),
        )
        .await;
        if ran.is_err() {
            failures.push(format!("{name} seed {}: hung under faults", 1000 + seed));
            continue;
        }
        disk.clear_faults();
        disk.crash();
        let obs = std::mem::take(&mut *obs.lock().unwrap());
        if let Err(why) = check(&disk, policy, &obs).await {
            failures.push(format!("{name} seed {}: {why}", 1000 + seed));
        }
    }
    eprintln!(
        "wal_sim: {runs} runs under random faults, {} failures",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The explorer has teeth: a log that takes `SyncPolicy::None` acknowledgements for durable ones
/// (as a log that acknowledged before its fsync would) is caught losing them.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_explorer_catches_acknowledgements_before_fsync() {
    let (ops, _) = run_once("none", SyncPolicy::None, 1, None).await.unwrap();
    let mut caught = 0;
    for n in (1..=60).map(|i| i * ops / 61) {
        let disk = SimDisk::new(n);
        disk.crash_after(n);
        let obs = Arc::new(Mutex::new(Observed::default()));
        let _ = workload_claiming(&disk, SyncPolicy::None, true, obs.clone()).await;
        if disk.crash_pending() {
            disk.crash();
        }
        let obs = std::mem::take(&mut *obs.lock().unwrap());
        if check(&disk, SyncPolicy::None, &obs).await.is_err() {
            caught += 1;
        }
    }
    eprintln!("wal_sim: {caught} of 60 crashes caught a log acknowledging before its fsync");
    assert!(
        caught >= 6,
        "only {caught} of 60 early acknowledgements caught"
    );
}

/// Regression 8 (the known crash gap of `truncate_back`, now found by this harness and fixed):
/// `truncate_back` inside a batch rewrites the kept part's last frame to end the batch. A power
/// loss in the middle of that rewrite may tear it (when the frame's checksum and flags straddle a
/// sector boundary: fillers of 419–422 bytes here), and recovery then dropped the whole batch,
/// entries acknowledged as durable included. A cut record written before the rewrite now lets
/// recovery accept the torn frame and finish the truncation.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn regression_8_truncate_back_inside_a_batch_survives_a_torn_rewrite() {
    let mut failures = Vec::new();
    let mut runs = 0;
    // With a u32 length and a crc32, a filler of 419..423 bytes puts the batch's first frame
    // header across the first sector boundary; the range around it covers other layouts too.
    for filler in 412..430usize {
        for k in 1..8u64 {
            for seed in 0..24u64 {
                let disk = SimDisk::new(seed * 7919 + k);
                let wal = Wal::open(DIR, options(&disk, SyncPolicy::Immediate))
                    .await
                    .unwrap();
                wal.append(Bytes::from(vec![7u8; filler])).await.unwrap();
                let batch = vec![Bytes::from(vec![1u8; 10]), Bytes::from(vec![2u8; 10])];
                wal.append_batch(batch).await.unwrap();
                disk.crash_after(disk.stats().ops + k);
                let cut = wal.truncate_back(Lsn(2)).await;
                if disk.crash_pending() {
                    disk.crash();
                }
                drop(wal);
                runs += 1;
                // A read-only open first: it may not repair the frame on disk, and must still
                // read what a read-write open will keep (review finding).
                let read_only =
                    match Wal::open_read_only(DIR, options(&disk, SyncPolicy::Immediate)).await {
                        Ok(ro) => ro
                            .range(..)
                            .await
                            .map(|e| e.len())
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                let wal = match Wal::open(DIR, options(&disk, SyncPolicy::Immediate)).await {
                    Ok(wal) => wal,
                    Err(e) => {
                        failures.push(format!("filler {filler} k {k} seed {seed}: {e}"));
                        continue;
                    }
                };
                let last = wal.last_lsn().get();
                let ok = match wal.range(..).await {
                    Ok(entries) => {
                        read_only.as_ref() == Ok(&entries.len())
                            && entries.len() as u64 == last
                            && (2..=3).contains(&last)
                            && (cut.is_err() || last == 2)
                            && entries[0].data.len() == filler
                            && entries[1].data[..] == [1u8; 10]
                    }
                    Err(_) => false,
                };
                if !ok {
                    failures.push(format!(
                        "filler {filler} k {k} seed {seed}: last lsn {last} after truncate_back(2) gave {cut:?}"
                    ));
                }
                let _ = wal.close().await;
            }
        }
    }
    finish("truncate_back torn-rewrite runs", runs, &failures);
}

/// Regression 9 (found by review with the simulated disk): `truncate_back` at a batch boundary
/// wrote no cut record, and a power loss between its truncation and its sync could leave the old
/// frames past the cut in any mix of zeroed and intact sectors — which recovery took for damage
/// before valid data and refused the log. The cut record now comes first, whatever the cut.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn regression_9_truncate_back_at_a_batch_boundary_survives_a_crash_at_every_step() {
    let mut failures = Vec::new();
    let mut runs = 0;
    for k in 1..24u64 {
        for seed in 0..16u64 {
            let disk = SimDisk::new(seed * 104_729 + k);
            let wal = Wal::open(DIR, options(&disk, SyncPolicy::Immediate))
                .await
                .unwrap();
            for i in 0..20u64 {
                wal.append(payload(i, i, 0, 1)).await.unwrap();
            }
            disk.crash_after(disk.stats().ops + k);
            let cut = wal.truncate_back(Lsn(10)).await;
            if disk.crash_pending() {
                disk.crash();
            }
            drop(wal);
            runs += 1;
            let wal = match Wal::open(DIR, options(&disk, SyncPolicy::Immediate)).await {
                Ok(wal) => wal,
                Err(e) => {
                    failures.push(format!("k {k} seed {seed}: {e}"));
                    continue;
                }
            };
            let last = wal.last_lsn().get();
            let entries = wal.range(..).await;
            let ok = (10..=20).contains(&last)
                && (cut.is_err() || last == 10)
                && entries.is_ok_and(|e| {
                    e.iter()
                        .enumerate()
                        .all(|(i, e)| e.data == payload(i as u64, i as u64, 0, 1))
                });
            if !ok {
                failures.push(format!(
                    "k {k} seed {seed}: last {last}, truncate_back gave {cut:?}"
                ));
            }
            let _ = wal.close().await;
        }
    }
    finish("truncate_back crash runs", runs, &failures);
}

/// After a failed fsync Linux marks the dirty pages clean without writing them: a reopen in the
/// same boot must not take what the page cache still shows for durable. Every acknowledged
/// append survives a later power loss, and the log stays consistent.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_reopen_after_a_failed_fsync_in_the_same_boot_trusts_nothing_unsynced() {
    let mut failures = Vec::new();
    for seed in 0..32u64 {
        let disk = SimDisk::new(seed);
        let policy = SyncPolicy::Immediate;
        let wal = Wal::open(DIR, options(&disk, policy)).await.unwrap();
        let mut acked = Vec::new();
        for i in 0..8u64 {
            acked.push((wal.append(payload(i, i, 0, 1)).await.unwrap(), i));
        }
        disk.inject(FaultKind::SyncError, Trigger::Nth(1 + seed % 2));
        let writers: Vec<_> = (8..12u64)
            .map(|i| {
                let wal = wal.clone();
                tokio::spawn(async move { (wal.append(payload(i, i, 0, 1)).await, i) })
            })
            .collect();
        for w in writers {
            if let (Ok(lsn), i) = w.await.unwrap() {
                acked.push((lsn, i));
            }
        }
        drop(wal);
        // Same boot: no crash. The page cache still shows the unsynced frames. (When the fault
        // is armed for a later sync, recovery's own sync may meet it: open again.)
        let reopened = match Wal::open(DIR, options(&disk, policy)).await {
            Ok(wal) => Ok(wal),
            Err(_) => Wal::open(DIR, options(&disk, policy)).await,
        };
        let wal = match reopened {
            Ok(wal) => wal,
            Err(e) => {
                failures.push(format!("seed {seed}: reopen: {e}"));
                continue;
            }
        };
        for i in 100..104u64 {
            acked.push((wal.append(payload(i, i, 0, 1)).await.unwrap(), i));
        }
        drop(wal);
        disk.crash();
        let wal = match Wal::open(DIR, options(&disk, policy)).await {
            Ok(wal) => wal,
            Err(e) => {
                failures.push(format!("seed {seed}: after the crash: {e}"));
                continue;
            }
        };
        for (lsn, i) in &acked {
            match wal.read(*lsn).await {
                Ok(e) if e.data == payload(*i, *i, 0, 1) => {}
                other => failures.push(format!(
                    "seed {seed}: acknowledged lsn {lsn} lost: {other:?}"
                )),
            }
        }
    }
    finish("failed-fsync reopen runs", 32, &failures);
}
