//! Crash-point exploration of the Raft log store on the simulated disk (feature `sim`).
//!
//! A workload saves votes, appends entries (acknowledged once durable), truncates, purges
//! (inside the log and past its end), saves the committed id and appends again. A first run
//! counts its disk operations; then for each operation number N (an even sample when there are
//! more than the budget) the workload runs on a fresh disk that loses power when operation
//! N + 1 starts; every other run loses power again during recovery. The store is reopened and
//! checked against what the workload was told:
//!
//! - the vote is the last one saved, or the one being saved when power went;
//! - every entry acknowledged durable is there, with its term and bytes, unless a truncation
//!   or purge that returned (or was running) covers it;
//! - no entry a returned truncation removed comes back;
//! - the log state is consistent: entries are dense, the purged id is the last purge that
//!   returned or the one running, and the log starts right after it;
//! - the committed id, if any, is one that was saved;
//! - the store accepts an append afterwards and keeps it across a reopen.
//!
//! `RINGTIDE_SIM_POINTS` caps the crash points (default 300), `RINGTIDE_SIM_SEEDS` the runs per
//! point (default 2), `RINGTIDE_SIM_SEED` the base seed; a failure prints its replay settings
//! (`RINGTIDE_SIM_ONLY=N`).

#![cfg(feature = "sim")]
#![allow(clippy::print_stderr, reason = "the test reports what it explored")]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};
use ringtide::platform::sim::SimDisk;
use ringtide::wal::{SyncPolicy, WalOptions};
use ringtide_raft::{LogStore, Request, TypeConfig};

mod common;

use common::env_u64;

const DIR: &str = "/node";

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// The key an entry carries: its index, term and variant, so any entry read back names itself.
fn key(index: u64, term: u64, variant: u64) -> Vec<u8> {
    format!("{index}/{term}/{variant}").into_bytes()
}

fn entry(index: u64, term: u64, variant: u64) -> Entry<TypeConfig> {
    let len = 100 + (index * 977 % 3000) as usize;
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Request::Put {
            key: key(index, term, variant),
            value: vec![(index % 251) as u8; len],
        }),
    }
}

/// What an entry read back names: (term, variant), checked against its bytes.
fn named(e: &Entry<TypeConfig>) -> Result<(u64, u64, u64), String> {
    let EntryPayload::Normal(Request::Put { key, value }) = &e.payload else {
        return Err(format!("entry {} is not one the workload wrote", e.log_id));
    };
    let text = String::from_utf8(key.clone()).map_err(|_| "a key that is not text".to_string())?;
    let parts: Vec<u64> = text.split('/').filter_map(|p| p.parse().ok()).collect();
    let [index, term, variant] = parts[..] else {
        return Err(format!("a key that names no entry: {text}"));
    };
    if index != e.log_id.index || term != e.log_id.leader_id.term {
        return Err(format!("entry {} carries the key of {text}", e.log_id));
    }
    let len = 100 + (index * 977 % 3000) as usize;
    if value.len() != len || value.iter().any(|&b| b != (index % 251) as u8) {
        return Err(format!("entry {} has damaged bytes", e.log_id));
    }
    Ok((index, term, variant))
}

/// What the workload was told.
#[derive(Debug, Default, Clone)]
struct Observed {
    vote: Option<Vote<u64>>,
    vote_running: Option<Vote<u64>>,
    /// index → (term, variant), acknowledged durable.
    acked: BTreeMap<u64, (u64, u64)>,
    /// (index, term, variant) removed by a truncation that returned.
    truncated: BTreeSet<(u64, u64, u64)>,
    /// A truncation running: entries from this index on may be gone.
    truncating: Option<u64>,
    purged: Option<LogId<u64>>,
    purging: Option<LogId<u64>>,
    committed: Vec<LogId<u64>>,
    /// Entries appended (whether or not acknowledged): (index, term, variant).
    appended: BTreeSet<(u64, u64, u64)>,
}

fn options(disk: &SimDisk) -> WalOptions {
    WalOptions::default()
        .sync_policy(SyncPolicy::Grouped {
            window: Duration::ZERO,
        })
        .segment_size_bytes(64 << 10)
        .lock_timeout(Duration::from_millis(10))
        .driver(disk.driver())
}

async fn open(disk: &SimDisk) -> Result<LogStore, String> {
    LogStore::open(DIR, &disk.driver(), options(disk))
        .await
        .map_err(|e| format!("open: {e}"))
}

async fn append(
    log: &mut LogStore,
    obs: &Mutex<Observed>,
    from: u64,
    to: u64,
    term: u64,
    variant: u64,
) -> Result<(), String> {
    let mut i = from;
    while i < to {
        let n = (1 + i % 4).min(to - i);
        let batch: Vec<_> = (i..i + n).map(|k| entry(k, term, variant)).collect();
        {
            let mut o = obs.lock().unwrap();
            for k in i..i + n {
                o.appended.insert((k, term, variant));
            }
        }
        log.blocking_append(batch)
            .await
            .map_err(|e| format!("append {i}..{}: {e}", i + n))?;
        let mut o = obs.lock().unwrap();
        for k in i..i + n {
            o.acked.insert(k, (term, variant));
        }
        i += n;
    }
    Ok(())
}

async fn save_vote(
    log: &mut LogStore,
    obs: &Mutex<Observed>,
    vote: Vote<u64>,
) -> Result<(), String> {
    obs.lock().unwrap().vote_running = Some(vote);
    log.save_vote(&vote)
        .await
        .map_err(|e| format!("vote: {e}"))?;
    let mut o = obs.lock().unwrap();
    o.vote = Some(vote);
    o.vote_running = None;
    Ok(())
}

async fn truncate(log: &mut LogStore, obs: &Mutex<Observed>, from: u64) -> Result<(), String> {
    obs.lock().unwrap().truncating = Some(from);
    let term = obs.lock().unwrap().acked.get(&from).map_or(0, |t| t.0);
    log.truncate(log_id(term, from))
        .await
        .map_err(|e| format!("truncate {from}: {e}"))?;
    let mut o = obs.lock().unwrap();
    let gone: Vec<u64> = o.acked.range(from..).map(|(&k, _)| k).collect();
    for k in gone {
        let (t, v) = o.acked.remove(&k).expect("listed");
        o.truncated.insert((k, t, v));
    }
    // Appended but unacknowledged entries past the cut are gone too.
    let unacked: Vec<_> = o.appended.iter().filter(|e| e.0 >= from).copied().collect();
    for e in unacked {
        o.truncated.insert(e);
    }
    o.truncating = None;
    Ok(())
}

async fn purge(log: &mut LogStore, obs: &Mutex<Observed>, to: LogId<u64>) -> Result<(), String> {
    obs.lock().unwrap().purging = Some(to);
    log.purge(to)
        .await
        .map_err(|e| format!("purge {to}: {e}"))?;
    let mut o = obs.lock().unwrap();
    o.purged = Some(to);
    o.purging = None;
    o.acked.retain(|&k, _| k > to.index);
    Ok(())
}

async fn workload(disk: &SimDisk, obs: Arc<Mutex<Observed>>) -> Result<(), String> {
    let mut log = open(disk).await?;
    save_vote(&mut log, &obs, Vote::new(1, 1)).await?;
    append(&mut log, &obs, 0, 40, 1, 0).await?;
    truncate(&mut log, &obs, 30).await?;
    save_vote(&mut log, &obs, Vote::new_committed(2, 1)).await?;
    append(&mut log, &obs, 30, 60, 2, 1).await?;
    purge(&mut log, &obs, log_id(2, 20)).await?;
    append(&mut log, &obs, 60, 70, 2, 1).await?;
    obs.lock().unwrap().committed.push(log_id(2, 65));
    log.save_committed(Some(log_id(2, 65)))
        .await
        .map_err(|e| format!("committed: {e}"))?;
    save_vote(&mut log, &obs, Vote::new_committed(3, 1)).await?;
    // Past the last entry: the log empties and goes on from 76.
    purge(&mut log, &obs, log_id(3, 75)).await?;
    append(&mut log, &obs, 76, 90, 3, 2).await?;
    truncate(&mut log, &obs, 85).await?;
    append(&mut log, &obs, 85, 95, 3, 3).await?;
    Ok(())
}

async fn check(disk: &SimDisk, obs: &Observed) -> Result<(), String> {
    let mut log = open(disk).await?;
    let vote = log
        .read_vote()
        .await
        .map_err(|e| format!("read_vote: {e}"))?;
    if vote != obs.vote && (obs.vote_running.is_none() || vote != obs.vote_running) {
        return Err(format!(
            "vote {vote:?}, saved {:?} (running {:?})",
            obs.vote, obs.vote_running
        ));
    }
    let state = log
        .get_log_state()
        .await
        .map_err(|e| format!("log state: {e}"))?;
    let purged = state.last_purged_log_id;
    if purged != obs.purged && (obs.purging.is_none() || purged != obs.purging) {
        return Err(format!(
            "purged {purged:?}, saved {:?} (running {:?})",
            obs.purged, obs.purging
        ));
    }
    let entries = log
        .try_get_log_entries(0..u64::MAX)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let first = purged.map_or(0, |p| p.index + 1);
    let mut present = BTreeMap::new();
    for (expect, e) in (first..).zip(entries.iter()) {
        if e.log_id.index != expect {
            return Err(format!(
                "entries not dense: {} where {expect} was due (purged {purged:?})",
                e.log_id
            ));
        }
        let (index, term, variant) = named(e)?;
        if obs.truncated.contains(&(index, term, variant)) {
            return Err(format!(
                "truncated entry {index}/{term}/{variant} came back"
            ));
        }
        if !obs.appended.contains(&(index, term, variant)) {
            return Err(format!("entry {index}/{term}/{variant} was never appended"));
        }
        present.insert(index, (term, variant));
    }
    let last = entries.last().map(|e| e.log_id).or(purged);
    if state.last_log_id != last {
        return Err(format!(
            "log state's last {:?}, entries end at {last:?}",
            state.last_log_id
        ));
    }
    let cut_from = obs.truncating.unwrap_or(u64::MAX);
    let purge_to = obs.purging.map_or(0, |p| p.index + 1);
    for (&index, &tv) in &obs.acked {
        if index >= cut_from || index < purge_to {
            continue;
        }
        if present.get(&index) != Some(&tv) {
            return Err(format!(
                "acknowledged entry {index} {tv:?} is {:?} after recovery",
                present.get(&index)
            ));
        }
    }
    let committed = log
        .read_committed()
        .await
        .map_err(|e| format!("read_committed: {e}"))?;
    if let Some(c) = committed
        && !obs.committed.contains(&c)
    {
        return Err(format!("committed {c} was never saved"));
    }
    // It goes on: append, reopen, read.
    let next = state.last_log_id.map_or(0, |l| l.index + 1);
    log.blocking_append([entry(next, 9, 9)])
        .await
        .map_err(|e| format!("append after recovery: {e}"))?;
    drop(log);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut log = open(disk).await?;
    let back = log
        .try_get_log_entries(next..next + 1)
        .await
        .map_err(|e| format!("read after reopen: {e}"))?;
    if back.len() != 1 || named(&back[0])? != (next, 9, 9) {
        return Err(format!(
            "the entry appended after recovery is not kept: {back:?}"
        ));
    }
    Ok(())
}

async fn run_once(seed: u64, point: Option<u64>) -> Result<u64, String> {
    let disk = SimDisk::new(seed);
    let obs = Arc::new(Mutex::new(Observed::default()));
    if let Some(n) = point {
        disk.crash_after(n);
    }
    let ran = tokio::time::timeout(Duration::from_secs(30), workload(&disk, obs.clone())).await;
    let ops = disk.stats().ops;
    match (&ran, point) {
        (Err(_), _) => return Err(format!("seed {seed} point {point:?}: workload hung")),
        (Ok(Err(e)), None) => return Err(format!("seed {seed}: failed without a crash: {e}")),
        _ => {}
    }
    if point.is_none() {
        return Ok(ops);
    }
    if disk.crash_pending() {
        disk.crash();
    }
    let obs = obs.lock().unwrap().clone();
    if seed % 2 == 1 {
        let before = disk.stats().ops;
        disk.crash_after(before + 1 + seed % 17);
        let _ = open(&disk).await;
        if disk.crash_pending() {
            disk.crash();
        }
    }
    match tokio::time::timeout(Duration::from_secs(30), check(&disk, &obs)).await {
        Ok(Ok(())) => Ok(ops),
        Ok(Err(why)) => Err(format!(
            "seed {seed} crash after op {}: {why}\n  replay: RINGTIDE_SIM_SEED={seed} RINGTIDE_SIM_ONLY={}",
            point.unwrap_or(0),
            point.unwrap_or(0)
        )),
        Err(_) => Err(format!("seed {seed} point {point:?}: recovery check hung")),
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_crash_point_keeps_votes_and_acknowledged_entries() {
    let budget = env_u64("RINGTIDE_SIM_POINTS", 300);
    let base_seed = env_u64("RINGTIDE_SIM_SEED", 1);
    let only = std::env::var("RINGTIDE_SIM_ONLY")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let seeds_per_point = env_u64("RINGTIDE_SIM_SEEDS", 2);
    let ops = run_once(base_seed, None).await.expect("the workload runs");
    let points: Vec<u64> = match only {
        Some(n) => vec![n],
        None if budget == 0 || ops <= budget => (0..ops).collect(),
        None => (0..budget).map(|i| i * ops / budget).collect(),
    };
    let mut failures = Vec::new();
    let mut runs = 0;
    for &n in &points {
        let seeds = if only.is_some() { 1 } else { seeds_per_point };
        for k in 0..seeds {
            let seed = if only.is_some() {
                base_seed
            } else {
                base_seed.wrapping_add(k * 1_000_003).wrapping_add(n)
            };
            if let Err(why) = run_once(seed, Some(n)).await {
                failures.push(why);
            }
            runs += 1;
        }
    }
    eprintln!(
        "log_crash: {} crash points of {ops} operations, {runs} runs, {} failures",
        points.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
}
