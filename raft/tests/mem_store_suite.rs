//! The benches' in-memory baseline store (`benches/common/mem_store.rs`) against openraft's
//! storage test suite, and a small cluster of it on the in-process [`Router`].

#[path = "../benches/common/mem_store.rs"]
mod mem_store;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mem_store::{MemConfig, MemLogStore, MemStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{BasicNode, Config, Raft, ServerState, StorageError};
use ringtide_raft::Request;
use ringtide_raft::router::Router;

/// Builds a fresh, empty log store and state machine for each case of the suite.
struct MemStoreBuilder;

impl StoreBuilder<MemConfig, MemLogStore, MemStateMachine, ()> for MemStoreBuilder {
    async fn build(&self) -> Result<((), MemLogStore, MemStateMachine), StorageError<u64>> {
        Ok(((), MemLogStore::new(), MemStateMachine::new()))
    }
}

/// Every case of openraft's storage suite. A plain test: the suite runs each case on a runtime
/// of its own.
#[test]
fn openraft_storage_suite() {
    Suite::<MemConfig, MemLogStore, MemStateMachine, MemStoreBuilder, ()>::test_all(
        MemStoreBuilder,
    )
    .expect("the storage suite");
}

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

fn put(i: u32) -> Request {
    Request::Put {
        key: format!("k{i:04}").into_bytes(),
        value: format!("v{i}").into_bytes(),
    }
}

/// A node of the test cluster: its handle and (a clone sharing) its state machine.
struct Node {
    raft: Raft<MemConfig>,
    sm: MemStateMachine,
}

async fn start(router: &Router<MemConfig>, config: &Arc<Config>, id: u64) -> Node {
    let sm = MemStateMachine::new();
    let raft = Raft::new(
        id,
        Arc::clone(config),
        router.network(id),
        MemLogStore::new(),
        sm.clone(),
    )
    .await
    .expect("Raft::new");
    router.add_node(id, raft.clone());
    Node { raft, sm }
}

async fn leader_among(nodes: &BTreeMap<u64, Node>, ids: &[u64]) -> u64 {
    let first = &nodes[&ids[0]].raft;
    let m = first
        .wait(WAIT)
        .metrics(
            |m| m.current_leader.is_some_and(|l| ids.contains(&l)),
            "a leader among the nodes",
        )
        .await
        .expect("a leader");
    let leader = m.current_leader.expect("leader");
    nodes[&leader]
        .raft
        .wait(WAIT)
        .state(ServerState::Leader, "leader state")
        .await
        .expect("leader state");
    leader
}

/// Three nodes on the router: replication, a leader cut off and replaced, a follower stopped,
/// and a learner brought up to date by a snapshot sent in several chunks; every message delayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_on_the_router() {
    let config = Arc::new(
        Config {
            heartbeat_interval: 50,
            election_timeout_min: 200,
            election_timeout_max: 400,
            snapshot_max_chunk_size: 64,
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            ..Config::default()
        }
        .validate()
        .expect("config"),
    );
    // Every message takes a millisecond each way.
    let router = Router::<MemConfig>::with_delay(Duration::from_millis(1));
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, start(&router, &config, id).await);
    }
    let members: BTreeMap<u64, BasicNode> = (1..=3).map(|id| (id, BasicNode::default())).collect();
    nodes[&1]
        .raft
        .initialize(members)
        .await
        .expect("initialize");

    let leader = leader_among(&nodes, &[1, 2, 3]).await;
    for i in 0..20 {
        nodes[&leader]
            .raft
            .client_write(put(i))
            .await
            .expect("write");
    }

    // Cut the leader off: the two others elect one of theirs and go on.
    router.isolate(leader);
    let others: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let new_leader = leader_among(&nodes, &others).await;
    let mut last = 0;
    for i in 20..40 {
        let resp = nodes[&new_leader]
            .raft
            .client_write(put(i))
            .await
            .expect("write after the leader change");
        last = resp.log_id.index;
    }

    // Back in the cluster, the old leader catches up.
    router.heal_all();
    for node in nodes.values() {
        node.raft
            .wait(WAIT)
            .applied_index_at_least(Some(last), "caught up after healing")
            .await
            .expect("caught up");
    }

    // A follower stops: the two others are a quorum.
    let stopped = others
        .iter()
        .copied()
        .find(|&id| id != new_leader)
        .expect("a follower");
    let handle = router.remove_node(stopped).expect("registered");
    handle.shutdown().await.expect("shutdown");
    for i in 40..50 {
        let resp = nodes[&new_leader]
            .raft
            .client_write(put(i))
            .await
            .expect("write with a node stopped");
        last = resp.log_id.index;
    }

    // Snapshot and purge the log, then add a learner: it gets the snapshot, in chunks.
    let leader_raft = nodes[&new_leader].raft.clone();
    leader_raft
        .wait(WAIT)
        .applied_index_at_least(Some(last), "the writes applied")
        .await
        .expect("the writes applied");
    leader_raft.trigger().snapshot().await.expect("snapshot");
    leader_raft
        .wait(WAIT)
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= last),
            "snapshot built",
        )
        .await
        .expect("snapshot built");
    leader_raft.trigger().purge_log(last).await.expect("purge");
    leader_raft
        .wait(WAIT)
        .metrics(|m| m.purged.is_some_and(|p| p.index >= last), "purged")
        .await
        .expect("purged");
    let applied = last;
    let learner = start(&router, &config, 4).await;
    leader_raft
        .add_learner(4, BasicNode::default(), true)
        .await
        .expect("add learner");
    learner
        .raft
        .wait(WAIT)
        .applied_index_at_least(Some(applied), "learner caught up")
        .await
        .expect("learner caught up");
    let learner_snapshot = learner.raft.metrics().borrow().snapshot;
    assert!(
        learner_snapshot.is_some_and(|s| s.index >= applied),
        "the learner got a snapshot: {learner_snapshot:?}"
    );
    nodes.insert(4, learner);
    for (id, node) in &nodes {
        if *id == stopped {
            continue;
        }
        assert_eq!(node.sm.len(), 50, "node {id}");
        assert_eq!(
            node.sm.get(b"k0049").as_deref(),
            Some(&b"v49"[..]),
            "node {id}"
        );
    }

    for (id, node) in nodes {
        if id != stopped {
            node.raft.shutdown().await.expect("shutdown");
        }
    }
}
