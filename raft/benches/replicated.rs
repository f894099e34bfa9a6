//! Replicated durable writes: a 3-node cluster on the in-process router, its nodes' storage
//! ringtide (the Raft log in a wal, every append fdatasync'd before it is acknowledged; the
//! state machine in a key-value store) against the same cluster on an in-memory store built as
//! openraft's example store is (a `BTreeMap` log acknowledged at once, a `BTreeMap` state
//! machine): the upper bound, showing what durability costs.
//!
//! For each client count, each store gets a fresh cluster, a warm-up of half a second, then
//! `RAFT_SECS` (default 5) of clients writing 100-byte values one after another. Printed:
//! acknowledged writes/s, commit latency p50/p99, and ringtide's fraction of the in-memory
//! rate.
//!
//! Run: `cargo bench -p ringtide-raft --bench replicated`. `RAFT_CLIENTS` (default `1,16,64`),
//! `RAFT_SECS`, `RAFT_RUNS` (default 1: runs of the whole table, each printed), `RAFT_ONLY`
//! (`ringtide` or `memory`: run one side only, for profiling), `RAFT_IN_FLIGHT` (batches in
//! flight, default 1: measured best at 64 clients, 1 > 2 > 4 > 8).

#![allow(clippy::print_stdout, reason = "a bench reports its figures")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::mem_store::{MemConfig, MemLogStore, MemStateMachine};
use openraft::{Config, SnapshotPolicy};
use ringtide_raft::cluster::{
    LocalCluster, NodeStorage, Opened, OpenedOf, RingtideStorage, ServiceConfig, WriteLoad,
};
use ringtide_raft::{NodeId, StorageOptions, TypeConfig};

/// The in-memory baseline: each node a fresh in-memory store (no restarts in this bench).
struct MemStorage;

impl NodeStorage<MemConfig> for MemStorage {
    type Log = MemLogStore;
    type Sm = MemStateMachine;
    type Reader = MemStateMachine;

    async fn open(&self, _id: NodeId) -> Result<OpenedOf<MemConfig, Self>, String> {
        let sm = MemStateMachine::new();
        Ok(Opened {
            log: MemLogStore::new(),
            sm: sm.clone(),
            reader: sm,
            close: Box::pin(async {}),
        })
    }
}

fn config() -> Config {
    Config {
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(50_000),
        max_in_snapshot_log_to_keep: 1_000,
        ..Config::default()
    }
}

const WAIT: Duration = Duration::from_secs(10);

/// Batching of the clients' writes into one Raft entry: up to this many requests, this many
/// batches in flight (`None`: one entry per write).
type Batching = Option<(usize, usize)>;

/// Starts a fresh 3-node cluster on `storage`, warms it up for half a second, then measures
/// `clients` writing for `secs`.
async fn measure<C, S>(storage: S, clients: u64, secs: f64, batching: Batching) -> WriteLoad
where
    C: ServiceConfig,
    S: NodeStorage<C>,
{
    let cluster = LocalCluster::<C, S>::start(storage, config(), &[1, 2, 3], WAIT)
        .await
        .expect("cluster starts");
    let cluster = match batching {
        Some((max, in_flight)) => cluster.with_batching(max, in_flight),
        None => cluster,
    };
    let warm = cluster
        .write_load(clients, Duration::from_millis(500), &BTreeMap::new())
        .await;
    let load = cluster
        .write_load(clients, Duration::from_secs_f64(secs), &warm.acked)
        .await;
    cluster.shutdown().await;
    load
}

async fn measure_ringtide(clients: u64, secs: f64, batching: Batching) -> WriteLoad {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = RingtideStorage::new(dir.path(), StorageOptions::default());
    measure::<TypeConfig, _>(storage, clients, secs, batching).await
}

async fn measure_memory(clients: u64, secs: f64, batching: Batching) -> WriteLoad {
    measure::<MemConfig, _>(MemStorage, clients, secs, batching).await
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let secs: f64 = std::env::var("RAFT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5.0);
    let runs: u32 = std::env::var("RAFT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let clients: Vec<u64> = std::env::var("RAFT_CLIENTS")
        .unwrap_or_else(|_| "1,16,64".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for run in 1..=runs {
        println!("replicated durable writes, 3 nodes, {secs} s per cell (run {run} of {runs})");
        println!(
            "| clients | writes | ringtide writes/s | p50 ms | p99 ms | in-memory writes/s | p50 ms | p99 ms | ringtide ÷ in-memory |"
        );
        println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
        let in_flight: usize = std::env::var("RAFT_IN_FLIGHT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let only = std::env::var("RAFT_ONLY").unwrap_or_default();
        for (mode, batching) in [
            ("batched", Some((1024, in_flight))),
            ("one entry each", None),
        ] {
            for &c in &clients {
                let mem = if only == "ringtide" {
                    WriteLoad::default()
                } else {
                    rt.block_on(measure_memory(c, secs, batching))
                };
                let rt_load = if only == "memory" {
                    WriteLoad::default()
                } else {
                    rt.block_on(measure_ringtide(c, secs, batching))
                };
                println!(
                    "| {c} | {mode} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} |",
                    rt_load.rate(),
                    ms(rt_load.latency(0.5)),
                    ms(rt_load.latency(0.99)),
                    mem.rate(),
                    ms(mem.latency(0.5)),
                    ms(mem.latency(0.99)),
                    rt_load.rate() / mem.rate().max(1e-9)
                );
            }
        }
    }
}
