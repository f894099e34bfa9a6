//! A replicated key-value service: three Raft nodes (openraft) in one process, each with its
//! Raft log in a ringtide wal and its state machine in a ringtide key-value store, linked by an
//! in-process router whose links can be cut.
//!
//! 1. 64 client tasks write for a few seconds; writes/s and commit latency are printed.
//! 2. The leader is stopped; the two others elect a new one and the clients go on.
//! 3. A follower is cut off from the others for a moment, then healed.
//! 4. The old leader restarts from its ringtide files and catches up.
//! 5. Linearizable reads (`ensure_linearizable`) check a sample of acknowledged writes.
//! 6. Every node's state machine is compared: they are identical, and hold every write.
//!
//! Run: `cargo run --release -p ringtide-raft --example cluster [-- DIR]` (default: a temporary
//! directory, removed at the end). `CLUSTER_SECS` sets each write phase's length (default 3),
//! `CLUSTER_CLIENTS` the client tasks (default 64). `RINGTIDE_IO_BACKEND=threadpool` forces
//! the thread-pool backend.

#![allow(clippy::print_stdout, reason = "an example reports to its user")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use openraft::{Config, SnapshotPolicy};
use ringtide_raft::cluster::{LocalCluster, RingtideStorage, WriteLoad, load_key, load_value};
use ringtide_raft::{Request, StorageOptions, TypeConfig};

type Cluster = LocalCluster<TypeConfig, RingtideStorage>;

const WAIT: Duration = Duration::from_secs(10);

fn env(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(what: &str, load: &WriteLoad) {
    println!(
        "  {what}: {} writes acknowledged in {:.1} s = {:.0} writes/s; commit latency p50 {:.2} ms, p99 {:.2} ms{}",
        load.writes(),
        load.elapsed.as_secs_f64(),
        load.rate(),
        load.latency(0.50).as_secs_f64() * 1e3,
        load.latency(0.99).as_secs_f64() * 1e3,
        if load.failed > 0 {
            format!(" ({} attempts failed and were retried)", load.failed)
        } else {
            String::new()
        }
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs = env("CLUSTER_SECS", 3.0);
    let clients = env("CLUSTER_CLIENTS", 64.0) as u64;
    let tmp;
    let dir = match std::env::args().nth(1) {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let config = Config {
        cluster_name: "ringtide-example".into(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        // Snapshot every 20k entries and keep 1k behind it, so a node that was away long may
        // catch up from a snapshot.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(20_000),
        max_in_snapshot_log_to_keep: 1_000,
        ..Config::default()
    };
    let storage = RingtideStorage::new(&dir, StorageOptions::default());
    let t = Instant::now();
    // Clients' writes are batched into Raft entries (see `LocalCluster::with_batching`).
    let cluster = Cluster::start(storage.clone(), config, &[1, 2, 3], WAIT)
        .await?
        .with_batching(1024, 1);
    let leader = cluster.leader(WAIT).await?;
    println!(
        "3 nodes started in {}; node {leader} leads after {:.0} ms",
        dir.display(),
        t.elapsed().as_secs_f64() * 1e3
    );

    println!("1. {clients} clients write for {secs} s");
    let load = cluster
        .write_load(clients, Duration::from_secs_f64(secs), &BTreeMap::new())
        .await;
    report("all nodes up", &load);

    println!("2. the leader, node {leader}, stops");
    let t = Instant::now();
    cluster.stop(leader).await?;
    let new_leader = cluster.leader(WAIT).await?;
    println!(
        "  node {new_leader} leads {:.0} ms later",
        t.elapsed().as_secs_f64() * 1e3
    );
    let load2 = cluster
        .write_load(clients, Duration::from_secs_f64(secs), &load.acked)
        .await;
    report("one node down", &load2);

    let follower = cluster
        .running()
        .into_iter()
        .find(|&id| id != new_leader)
        .expect("two nodes run");
    println!("3. the link between nodes {new_leader} and {follower} is cut for 1 s: no quorum");
    cluster.router().cut(new_leader, follower);
    let stalled = cluster
        .write(
            Request::Put {
                key: b"during-the-cut".to_vec(),
                value: b"x".to_vec(),
            },
            Duration::from_secs(1),
        )
        .await;
    println!(
        "  a write during the cut: {}",
        match &stalled {
            Ok(id) => format!("committed at {id} (a new leader formed a quorum)"),
            Err(_) => "not acknowledged within 1 s, as it must not be".to_string(),
        }
    );
    cluster.router().heal_all();
    let healed = cluster.leader(WAIT).await?;
    println!("  healed: node {healed} leads");

    println!("4. node {leader} restarts from its files and catches up");
    let t = Instant::now();
    cluster.restart(leader).await?;
    let last = cluster
        .write(
            Request::Put {
                key: b"after-restart".to_vec(),
                value: b"y".to_vec(),
            },
            WAIT,
        )
        .await?;
    cluster.wait_applied(leader, last.index, WAIT * 3).await?;
    println!(
        "  caught up to index {} in {:.0} ms",
        last.index,
        t.elapsed().as_secs_f64() * 1e3
    );

    println!("5. linearizable reads of acknowledged writes");
    let reader_node = cluster.linearizable(WAIT).await?;
    let reader = cluster.reader(reader_node).expect("the leader runs");
    let mut checked = 0;
    for (&client, &n) in &load2.acked {
        for i in [0, n / 2, n.saturating_sub(1)] {
            if i >= n {
                continue;
            }
            let got = reader.get(load_key(client, i)).await?;
            assert_eq!(
                got.as_deref(),
                Some(&load_value(client, i)[..]),
                "client {client} write {i}"
            );
            checked += 1;
        }
    }
    println!("  {checked} reads through node {reader_node} after ensure_linearizable: all found");

    println!("6. the three state machines");
    let final_index = cluster
        .write(
            Request::Put {
                key: b"final".to_vec(),
                value: b"z".to_vec(),
            },
            WAIT,
        )
        .await?
        .index;
    let mut dumps = Vec::new();
    for id in cluster.running() {
        cluster.wait_applied(id, final_index, WAIT).await?;
        let (applied, data) = cluster.reader(id).expect("runs").dump().await?;
        println!(
            "  node {id}: {} keys, applied up to {}",
            data.len(),
            applied.map_or("-".into(), |a| a.to_string())
        );
        dumps.push(data);
    }
    // Nodes that applied more than `final_index` since hold more: compare up to the same
    // point by comparing the data once all reached the same applied id.
    let acked: u64 = load2.acked.values().sum();
    let first = &dumps[0];
    assert!(
        dumps.iter().all(|d| d == first),
        "the state machines differ"
    );
    assert!(first.len() as u64 >= acked, "writes are missing");
    println!("  identical on all nodes, holding all {acked} acknowledged client writes");
    cluster.shutdown().await;
    Ok(())
}
