//! A chaos run of a 3-node cluster on ringtide storage: while 16 clients write, random steps
//! stop the leader, stop a follower, cut a link, isolate a node, and restart stopped nodes from
//! their files; then a node is kept away while the log is snapshotted and purged past it, so it
//! must catch up from a snapshot install. At the end every node runs and is healed, and:
//!
//! - every write acknowledged to a client is in every node's state machine, with its value;
//! - the three state machines are identical;
//! - the node kept away installed a snapshot.
//!
//! Bounded: `CHAOS_STEPS` steps (default 12) of 150–600 ms each; `CHAOS_SEED` picks them.
//! Once per I/O backend (`RINGTIDE_IO_BACKEND` restricts it to one). `RINGTIDE_TRACE` (an
//! env-filter, e.g. `openraft=info`) prints the nodes' events.

#![allow(clippy::print_stderr, reason = "the test reports what it did")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use openraft::{Config, SnapshotPolicy};
mod common;

use common::{covers, env_u64};
use ringtide::platform::{Backend, DriverOptions, IoDriver};
use ringtide_raft::cluster::{LocalCluster, RingtideStorage, WriteLoad, load_key, load_value};
use ringtide_raft::{Request, StorageOptions, TypeConfig};

type Cluster = LocalCluster<TypeConfig, RingtideStorage>;

const WAIT: Duration = Duration::from_secs(20);

fn config() -> Config {
    Config {
        heartbeat_interval: 50,
        // A follower's core is busy while it installs a snapshot (seconds in a debug build):
        // elections wait longer than that, and so does the snapshot RPC, else the follower
        // campaigns or the leader sends the snapshot again while it installs.
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        install_snapshot_timeout: 10_000,
        // Snapshots often, and the log purged right behind them: a node away for a few hundred
        // entries needs a snapshot.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(300),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        snapshot_max_chunk_size: 64 << 10,
        ..Config::default()
    }
}

/// Runs the chaos steps until done; returns what it did.
async fn chaos(cluster: &Cluster, seed: u64, steps: u64) -> Result<Vec<String>, String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut log = Vec::new();
    let mut stopped: Vec<u64> = Vec::new();
    for _ in 0..steps {
        let pause = Duration::from_millis(150 + rng.u64(..450));
        match rng.u64(..5) {
            0 if stopped.is_empty() => {
                let leader = cluster.leader(WAIT).await?;
                cluster.stop(leader).await?;
                stopped.push(leader);
                log.push(format!("stop leader {leader}"));
            }
            1 if stopped.is_empty() => {
                let leader = cluster.leader(WAIT).await?;
                let running = cluster.running();
                let follower = running[rng.usize(..running.len())];
                if follower != leader {
                    cluster.stop(follower).await?;
                    stopped.push(follower);
                    log.push(format!("stop follower {follower}"));
                }
            }
            2 => {
                let a = 1 + rng.u64(..3);
                let b = 1 + (a + rng.u64(..2)) % 3;
                cluster.router().cut(a, b);
                log.push(format!("cut {a}-{b}"));
                tokio::time::sleep(pause).await;
                cluster.router().heal(a, b);
            }
            3 => {
                let id = 1 + rng.u64(..3);
                cluster.router().isolate(id);
                log.push(format!("isolate {id}"));
                tokio::time::sleep(pause).await;
                cluster.router().rejoin(id);
            }
            _ => {
                if let Some(id) = stopped.pop() {
                    cluster.restart(id).await?;
                    log.push(format!("restart {id}"));
                }
            }
        }
        tokio::time::sleep(pause).await;
    }
    for id in stopped {
        cluster.restart(id).await?;
        log.push(format!("restart {id}"));
    }
    cluster.router().heal_all();
    Ok(log)
}

async fn run(backend: Backend) -> Result<(), String> {
    if let Ok(filter) = std::env::var("RINGTIDE_TRACE") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let driver = IoDriver::new(DriverOptions::default().use_env(false).backend(backend))
        .map_err(|e| e.to_string())?;
    let storage = RingtideStorage::new(dir.path(), StorageOptions::default().driver(driver));
    let cluster = Cluster::start(storage, config(), &[1, 2, 3], WAIT)
        .await?
        .with_batching(64, 2);
    let seed = env_u64("CHAOS_SEED", 7);
    let steps = env_u64("CHAOS_STEPS", 12);

    // Clients write for as long as the chaos runs.
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (cluster, done) = (cluster.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let mut total = WriteLoad::default();
            while !done.load(Ordering::Relaxed) {
                let load = cluster
                    .write_load(16, Duration::from_millis(300), &total.acked)
                    .await;
                total.acked = load.acked;
                total.latencies.extend(load.latencies);
                total.failed += load.failed;
            }
            total
        })
    };
    let steps_log = chaos(&cluster, seed, steps).await;
    done.store(true, Ordering::Relaxed);
    let load = writer.await.map_err(|e| e.to_string())?;
    let steps_log = steps_log?;

    // A node away while the log moves on and is purged: it catches up from a snapshot.
    let leader = cluster.leader(WAIT).await?;
    let away = cluster
        .running()
        .into_iter()
        .find(|&id| id != leader)
        .ok_or("no follower")?;
    cluster.stop(away).await?;
    for i in 0..800u32 {
        let req = Request::Put {
            key: format!("away/{i:05}").into_bytes(),
            value: vec![b'a'; 200],
        };
        cluster.write(req, WAIT).await?;
    }
    cluster.restart(away).await?;

    // Everyone applies up to one last write.
    let last = cluster
        .write(
            Request::Put {
                key: b"last".to_vec(),
                value: b"!".to_vec(),
            },
            WAIT,
        )
        .await?;
    let mut dumps = BTreeMap::new();
    for id in cluster.running() {
        cluster.wait_applied(id, last.index, WAIT).await?;
        let (_, data) = cluster
            .reader(id)
            .ok_or("node stopped")?
            .dump()
            .await
            .map_err(|e| e.to_string())?;
        dumps.insert(id, data);
    }
    let installed = cluster
        .raft(away)
        .ok_or("the node kept away is not running")?
        .metrics()
        .borrow()
        .snapshot;
    cluster.shutdown().await;

    let reference = dumps.values().next().ok_or("no node")?.clone();
    for (id, data) in &dumps {
        if *data != reference {
            return Err(format!(
                "node {id}'s state machine differs ({} keys against {}); steps: {steps_log:?}",
                data.len(),
                reference.len()
            ));
        }
    }
    let map: BTreeMap<_, _> = reference.into_iter().collect();
    let mut checked = 0u64;
    for (&client, &n) in &load.acked {
        for i in 0..n {
            let got = map.get(&load_key(client, i)[..]);
            if got.map(|v| &v[..]) != Some(&load_value(client, i)[..]) {
                return Err(format!(
                    "acknowledged write {i} of client {client} is {got:?}; steps: {steps_log:?}"
                ));
            }
            checked += 1;
        }
    }
    if checked == 0 {
        return Err("no write was acknowledged".into());
    }
    if installed.is_none() {
        return Err(format!("node {away} kept away has no snapshot"));
    }
    eprintln!(
        "chaos ({backend:?}, seed {seed}): {} steps {steps_log:?}; {checked} acknowledged writes \
         checked on every node; node {away} caught up from snapshot {}",
        steps_log.len(),
        installed.map_or("-".into(), |s| s.to_string())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_keeps_every_acknowledged_write_io_uring() {
    if covers(Backend::IoUring) {
        run(Backend::IoUring).await.expect("chaos run");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_keeps_every_acknowledged_write_threadpool() {
    if covers(Backend::ThreadPool) {
        run(Backend::ThreadPool).await.expect("chaos run");
    }
}
