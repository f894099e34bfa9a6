//! A local cluster: Raft nodes in one process, linked by the in-process [`Router`], each with
//! the storage a [`NodeStorage`] opens — for examples, tests and benches. Nodes can be stopped
//! (their storage closed) and restarted from their files; links can be cut through
//! [`router`](LocalCluster::router).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::error::{ClientWriteError, RaftError};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{BasicNode, Config, LogId, Raft, RaftTypeConfig, ServerState};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::router::Router;
use crate::{
    LogStore, NodeId, Request, Response, StateMachine, StateMachineReader, StorageOptions,
    TypeConfig, open_storage,
};

/// What opening a node's storage gives: the two halves openraft takes, a reader of the state
/// machine, and what to run once the node has shut down (closing the storage).
pub struct Opened<L, S, R> {
    /// The log store.
    pub log: L,
    /// The state machine.
    pub sm: S,
    /// A reader of the state machine's data.
    pub reader: R,
    /// Closes the storage (run after the node shut down, before it is opened again).
    pub close: BoxFuture<'static, ()>,
}

/// The Raft type configs a [`LocalCluster`] runs: the service's requests and responses, u64
/// node ids, `BasicNode`, tokio, openraft's one-shot responder (ringtide's [`TypeConfig`], or
/// a bench's in-memory config). Implemented for every such config.
pub trait ServiceConfig:
    RaftTypeConfig<
        NodeId = NodeId,
        Node = BasicNode,
        D = Request,
        R = Response,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<Self>,
    >
{
}

impl<C> ServiceConfig for C where
    C: RaftTypeConfig<
            NodeId = NodeId,
            Node = BasicNode,
            D = Request,
            R = Response,
            AsyncRuntime = openraft::TokioRuntime,
            Responder = openraft::impls::OneshotResponder<C>,
        >
{
}

/// What [`NodeStorage::open`] gives.
pub type OpenedOf<C, S> =
    Opened<<S as NodeStorage<C>>::Log, <S as NodeStorage<C>>::Sm, <S as NodeStorage<C>>::Reader>;

/// Opens the storage of a node of a [`LocalCluster`].
pub trait NodeStorage<C: RaftTypeConfig>: Send + Sync + 'static {
    /// The log store.
    type Log: RaftLogStorage<C>;
    /// The state machine.
    type Sm: RaftStateMachine<C>;
    /// A reader of the state machine's data.
    type Reader: Clone + Send + Sync + 'static;

    /// Opens (or creates) node `id`'s storage.
    ///
    /// # Errors
    ///
    /// A message naming what failed.
    ///
    /// # Cancel safety
    ///
    /// As the storage's own open.
    fn open(&self, id: NodeId) -> impl Future<Output = Result<OpenedOf<C, Self>, String>> + Send
    where
        Self: Sized;
}

/// ringtide storage for each node, in `dir/node-<id>`.
#[derive(Debug, Clone)]
pub struct RingtideStorage {
    dir: PathBuf,
    options: StorageOptions,
}

impl RingtideStorage {
    /// Nodes' storage under `dir`, opened with `options`.
    pub fn new(dir: impl Into<PathBuf>, options: StorageOptions) -> RingtideStorage {
        RingtideStorage {
            dir: dir.into(),
            options,
        }
    }

    /// Where node `id` keeps its files.
    pub fn node_dir(&self, id: NodeId) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }
}

impl NodeStorage<TypeConfig> for RingtideStorage {
    type Log = LogStore;
    type Sm = StateMachine;
    type Reader = StateMachineReader;

    async fn open(
        &self,
        id: NodeId,
    ) -> Result<Opened<LogStore, StateMachine, StateMachineReader>, String> {
        let (log, sm) = open_storage(self.node_dir(id), self.options.clone())
            .await
            .map_err(|e| format!("node {id}: open: {e}"))?;
        let (wal, db, reader) = (log.wal().clone(), sm.db().clone(), sm.reader());
        Ok(Opened {
            log,
            sm,
            reader,
            close: Box::pin(async move {
                if let Err(e) = wal.close().await {
                    tracing::warn!(node = id, error = %e, "closing the raft log");
                }
                if let Err(e) = db.close().await {
                    tracing::warn!(node = id, error = %e, "closing the state machine");
                }
            }),
        })
    }
}

struct Node<C: RaftTypeConfig, R> {
    raft: Raft<C>,
    reader: R,
    close: Option<BoxFuture<'static, ()>>,
}

/// The running nodes, by id.
type Nodes<C, S> = BTreeMap<<C as RaftTypeConfig>::NodeId, Node<C, <S as NodeStorage<C>>::Reader>>;

struct Inner<C: RaftTypeConfig, S: NodeStorage<C>> {
    storage: S,
    config: Arc<Config>,
    router: Router<C>,
    nodes: Mutex<Nodes<C, S>>,
    /// The last node seen leading (0: none known).
    leader: AtomicU64,
    /// Where [`LocalCluster::write`] queues requests when batching is on.
    batcher: std::sync::OnceLock<mpsc::UnboundedSender<Queued>>,
}

/// The most payload bytes of one request through [`LocalCluster::write`].
pub const MAX_REQUEST_BYTES: usize = 8 << 20;
/// A batch stops taking requests once it holds this many payload bytes.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// A write waiting in the batcher.
struct Queued {
    request: Request,
    reply: oneshot::Sender<Result<LogId<NodeId>, String>>,
}

/// Raft nodes in one process on a [`Router`]. Cheap to clone; clones share the cluster.
pub struct LocalCluster<C: RaftTypeConfig, S: NodeStorage<C>> {
    inner: Arc<Inner<C, S>>,
}

impl<C: RaftTypeConfig, S: NodeStorage<C>> Clone for LocalCluster<C, S> {
    fn clone(&self) -> Self {
        LocalCluster {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: RaftTypeConfig, S: NodeStorage<C>> std::fmt::Debug for LocalCluster<C, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("running", &self.running())
            .finish_non_exhaustive()
    }
}

impl<C: RaftTypeConfig, S: NodeStorage<C>> LocalCluster<C, S> {
    /// The network between the nodes: cut and heal links here.
    pub fn router(&self) -> &Router<C> {
        &self.inner.router
    }

    /// Node `id`'s Raft handle, if it runs.
    pub fn raft(&self, id: C::NodeId) -> Option<Raft<C>> {
        self.nodes().get(&id).map(|n| n.raft.clone())
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, Nodes<C, S>> {
        self.inner.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reader of node `id`'s state machine, if it runs.
    pub fn reader(&self, id: C::NodeId) -> Option<S::Reader> {
        self.nodes().get(&id).map(|n| n.reader.clone())
    }

    /// The nodes running.
    pub fn running(&self) -> Vec<C::NodeId> {
        self.nodes().keys().cloned().collect()
    }
}

impl<C: ServiceConfig, S: NodeStorage<C>> LocalCluster<C, S> {
    /// Starts nodes `ids` with `config` (validated here), the first initializing the cluster
    /// with all of them as voters, and waits until one leads.
    ///
    /// # Errors
    ///
    /// A message naming what failed: the config, a node's storage, the initialization, or no
    /// leader within `timeout`.
    ///
    /// # Cancel safety
    ///
    /// Dropped part way, started nodes keep running until the last clone is dropped.
    pub async fn start(
        storage: S,
        config: Config,
        ids: &[NodeId],
        timeout: Duration,
    ) -> Result<Self, String> {
        let config = Arc::new(config.validate().map_err(|e| e.to_string())?);
        let cluster = LocalCluster {
            inner: Arc::new(Inner {
                storage,
                config,
                router: Router::new(),
                nodes: Mutex::new(BTreeMap::new()),
                leader: AtomicU64::new(0),
                batcher: std::sync::OnceLock::new(),
            }),
        };
        for &id in ids {
            cluster.restart(id).await?;
        }
        let first = *ids.first().ok_or("no nodes")?;
        let members: BTreeMap<NodeId, BasicNode> =
            ids.iter().map(|&id| (id, BasicNode::default())).collect();
        let raft = cluster.raft(first).ok_or("the first node is gone")?;
        // Already initialized (a cluster restarted from its files) is fine.
        if let Err(e) = raft.initialize(members).await {
            tracing::debug!(error = %e, "initialize");
        }
        cluster.leader(timeout).await?;
        Ok(cluster)
    }

    /// The node that leads, once one running node leads and another running node (or itself,
    /// alone) agrees; waits up to `timeout`.
    ///
    /// # Errors
    ///
    /// A message when no leader is seen within `timeout`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only watches.
    pub async fn leader(&self, timeout: Duration) -> Result<NodeId, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let nodes: Vec<(NodeId, Raft<C>)> = self
                .nodes()
                .iter()
                .map(|(&id, n)| (id, n.raft.clone()))
                .collect();
            for (id, raft) in &nodes {
                let m = raft.metrics().borrow().clone();
                if m.state == ServerState::Leader && m.current_leader == Some(*id) {
                    self.inner.leader.store(*id, Ordering::Release);
                    return Ok(*id);
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("no leader within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Turns batching on: from now on [`write`](Self::write) queues each request, and
    /// `in_flight` tasks each take what is queued (up to `max_requests`) and write it as one
    /// [`Request::Batch`] entry. openraft 0.9's leader waits for each entry's log flush before
    /// it takes the next, so unbatched writes run one fdatasync each; batched, the writes that
    /// queue during one flush share the next. Each write's caller still gets its answer only
    /// once its batch is committed. Calling it again changes nothing.
    pub fn with_batching(self, max_requests: usize, in_flight: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel::<Queued>();
        if self.inner.batcher.set(tx).is_err() {
            return self;
        }
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..in_flight.max(1) {
            let (rx, weak) = (Arc::clone(&rx), Arc::downgrade(&self.inner));
            let max = max_requests.max(1);
            tokio::spawn(async move {
                loop {
                    let batch = {
                        let mut rx = rx.lock().await;
                        let Some(first) = rx.recv().await else {
                            return;
                        };
                        let mut bytes = first.request.payload_bytes();
                        let mut batch = vec![first];
                        while batch.len() < max && bytes < MAX_BATCH_BYTES {
                            match rx.try_recv() {
                                Ok(q) => {
                                    bytes += q.request.payload_bytes();
                                    batch.push(q);
                                }
                                Err(_) => break,
                            }
                        }
                        batch
                    };
                    let Some(inner) = weak.upgrade() else {
                        return;
                    };
                    let cluster = LocalCluster { inner };
                    let (requests, replies): (Vec<_>, Vec<_>) =
                        batch.into_iter().map(|q| (q.request, q.reply)).unzip();
                    let request = if requests.len() == 1 {
                        requests.into_iter().next().expect("one")
                    } else {
                        Request::Batch(requests)
                    };
                    let res = cluster.write_direct(request, Duration::from_secs(10)).await;
                    drop(cluster);
                    for reply in replies {
                        let _ = reply.send(res.clone());
                    }
                }
            });
        }
        self
    }

    /// Writes `request` through the leader (batched with others if
    /// [`with_batching`](Self::with_batching) is on), following redirections and retrying
    /// across leader changes until `timeout`; returns the log id it was committed at.
    ///
    /// A write that fails may still be committed (its leader may have replicated it before
    /// failing): callers that retry should write idempotent requests.
    ///
    /// # Errors
    ///
    /// The last error seen, when no attempt succeeded within `timeout`.
    ///
    /// # Cancel safety
    ///
    /// Dropped, the write may or may not be committed.
    pub async fn write(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<LogId<NodeId>, String> {
        // A Raft entry is one wal entry (16 MiB at most by default): refuse what cannot be one
        // here, before it reaches a leader, whose append would fail.
        if request.payload_bytes() > MAX_REQUEST_BYTES {
            return Err(format!(
                "a request of {} bytes: at most {MAX_REQUEST_BYTES} fit one Raft entry",
                request.payload_bytes()
            ));
        }
        let Some(batcher) = self.inner.batcher.get() else {
            return self.write_direct(request, timeout).await;
        };
        let (reply, answer) = oneshot::channel();
        batcher
            .send(Queued { request, reply })
            .map_err(|_| "the batcher stopped".to_string())?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(res)) => res,
            Ok(Err(_)) => Err("the batcher dropped the write".into()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }

    /// [`write`](Self::write) without the batcher: one entry for this request.
    async fn write_direct(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<LogId<NodeId>, String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no attempt");
        loop {
            let hint = self.inner.leader.load(Ordering::Acquire);
            let target = if hint != 0 && self.raft(hint).is_some() {
                Some(hint)
            } else {
                self.leader(deadline.saturating_duration_since(Instant::now()))
                    .await
                    .ok()
            };
            if let Some(raft) = target.and_then(|t| self.raft(t)) {
                let left = deadline.saturating_duration_since(Instant::now());
                let attempt = left.min(Duration::from_secs(2));
                match tokio::time::timeout(attempt, raft.client_write(request.clone())).await {
                    Ok(Ok(resp)) => return Ok(resp.log_id),
                    Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                        self.inner
                            .leader
                            .store(f.leader_id.unwrap_or(0), Ordering::Release);
                        last = format!("forwarded to {:?}", f.leader_id);
                        if f.leader_id.is_some() {
                            continue;
                        }
                    }
                    Ok(Err(e)) => {
                        self.inner.leader.store(0, Ordering::Release);
                        last = e.to_string();
                    }
                    Err(_) => {
                        self.inner.leader.store(0, Ordering::Release);
                        last = format!("no answer within {attempt:?}");
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Makes a linearizable read possible: confirms with a quorum that the leader still leads
    /// (`ensure_linearizable`), then waits until the leader has applied everything committed
    /// before; returns the leader, whose reader then reads linearizably.
    ///
    /// # Errors
    ///
    /// A message when no leader confirms within `timeout`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn linearizable(&self, timeout: Duration) -> Result<NodeId, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let leader = self
                .leader(deadline.saturating_duration_since(Instant::now()))
                .await?;
            if let Some(raft) = self.raft(leader) {
                let left = deadline.saturating_duration_since(Instant::now());
                // ensure_linearizable waits for the read log id to be applied on the leader.
                match tokio::time::timeout(left, raft.ensure_linearizable()).await {
                    Ok(Ok(_)) => return Ok(leader),
                    Ok(Err(e)) => tracing::debug!(error = %e, "ensure_linearizable"),
                    Err(_) => return Err(format!("no linearizable read within {timeout:?}")),
                }
            }
            self.inner.leader.store(0, Ordering::Release);
            if Instant::now() >= deadline {
                return Err(format!("no linearizable read within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until node `id` has applied the entry at `index`.
    ///
    /// # Errors
    ///
    /// A message when it has not within `timeout` or the node is not running.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only watches.
    pub async fn wait_applied(
        &self,
        id: NodeId,
        index: u64,
        timeout: Duration,
    ) -> Result<(), String> {
        let raft = self
            .raft(id)
            .ok_or_else(|| format!("node {id} is not running"))?;
        raft.wait(Some(timeout))
            .applied_index_at_least(Some(index), "applied")
            .await
            .map(|_| ())
            .map_err(|e| format!("node {id}: {e}"))
    }

    /// Stops node `id`: unreachable at once, shut down, its storage closed.
    ///
    /// # Errors
    ///
    /// A message if the node is not running.
    ///
    /// # Cancel safety
    ///
    /// Dropped part way, the node is unreachable and its shutdown may not have finished.
    pub async fn stop(&self, id: NodeId) -> Result<(), String> {
        let node = self
            .nodes()
            .remove(&id)
            .ok_or_else(|| format!("node {id} is not running"))?;
        self.inner.router.remove_node(id);
        let _ = self
            .inner
            .leader
            .compare_exchange(id, 0, Ordering::AcqRel, Ordering::Acquire);
        if let Err(e) = node.raft.shutdown().await {
            tracing::warn!(node = id, error = %e, "shutdown");
        }
        drop(node.raft);
        if let Some(close) = node.close {
            close.await;
        }
        Ok(())
    }

    /// Starts node `id` from its storage (a new node if it has none).
    ///
    /// # Errors
    ///
    /// A message if it runs already or its storage or Raft cannot start.
    ///
    /// # Cancel safety
    ///
    /// Dropped part way, the node may be left half started (its storage open, not registered).
    pub async fn restart(&self, id: NodeId) -> Result<(), String> {
        if self.nodes().contains_key(&id) {
            return Err(format!("node {id} runs already"));
        }
        let opened = self.inner.storage.open(id).await?;
        let raft = Raft::new(
            id,
            Arc::clone(&self.inner.config),
            self.inner.router.network(id),
            opened.log,
            opened.sm,
        )
        .await
        .map_err(|e| format!("node {id}: {e}"))?;
        self.inner.router.add_node(id, raft.clone());
        self.nodes().insert(
            id,
            Node {
                raft,
                reader: opened.reader,
                close: Some(opened.close),
            },
        );
        Ok(())
    }

    /// Stops every node.
    ///
    /// # Cancel safety
    ///
    /// Dropped part way, the nodes not stopped yet keep running.
    pub async fn shutdown(&self) {
        for id in self.running() {
            let _ = self.stop(id).await;
        }
    }
}

/// The key of client `client`'s `n`th write in [`LocalCluster::write_load`].
pub fn load_key(client: u64, n: u64) -> Vec<u8> {
    format!("client-{client:03}/{n:010}").into_bytes()
}

/// The value of client `client`'s `n`th write in [`LocalCluster::write_load`]: 100 bytes that
/// name it.
pub fn load_value(client: u64, n: u64) -> Vec<u8> {
    let mut v = format!("value {n} of client {client}, written through raft; ").into_bytes();
    v.resize(100, b'.');
    v
}

/// What [`LocalCluster::write_load`]'s clients did.
#[derive(Debug, Default, Clone)]
pub struct WriteLoad {
    /// Per client, the writes acknowledged: its writes `0..n` are all committed.
    pub acked: BTreeMap<u64, u64>,
    /// The commit latency of each acknowledged write, sorted.
    pub latencies: Vec<Duration>,
    /// Attempts that failed (each retried until acknowledged or the load ended).
    pub failed: u64,
    /// How long the clients wrote.
    pub elapsed: Duration,
}

impl WriteLoad {
    /// Acknowledged writes.
    pub fn writes(&self) -> u64 {
        self.latencies.len() as u64
    }

    /// Acknowledged writes per second.
    pub fn rate(&self) -> f64 {
        self.writes() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency at quantile `q` (0 to 1) of the acknowledged writes.
    pub fn latency(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let at = ((self.latencies.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        self.latencies[at]
    }
}

impl<C: ServiceConfig, S: NodeStorage<C>> LocalCluster<C, S> {
    /// Runs `clients` tasks for `duration`, each writing [`load_key`]/[`load_value`] pairs one
    /// after another through [`write`](Self::write), client `c` starting at its write
    /// `start[c]` (0 if absent). A write that fails is retried (writing it twice is harmless).
    ///
    /// # Cancel safety
    ///
    /// Dropped, the client tasks stop at their next write.
    pub async fn write_load(
        &self,
        clients: u64,
        duration: Duration,
        start: &BTreeMap<u64, u64>,
    ) -> WriteLoad {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Stops the tasks if this future is dropped too.
        struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _guard = StopOnDrop(Arc::clone(&stop));
        let began = Instant::now();
        let mut tasks = Vec::new();
        for client in 0..clients {
            let (cluster, stop) = (self.clone(), Arc::clone(&stop));
            let mut n = start.get(&client).copied().unwrap_or(0);
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failed = 0;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let req = Request::Put {
                        key: load_key(client, n),
                        value: load_value(client, n),
                    };
                    match cluster.write(req, Duration::from_secs(10)).await {
                        Ok(_) => {
                            latencies.push(t.elapsed());
                            n += 1;
                        }
                        Err(_) => failed += 1,
                    }
                }
                (client, n, latencies, failed)
            }));
        }
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
        let mut load = WriteLoad::default();
        for t in tasks {
            if let Ok((client, n, latencies, failed)) = t.await {
                load.acked.insert(client, n);
                load.latencies.extend(latencies);
                load.failed += failed;
            }
        }
        load.elapsed = began.elapsed();
        load.latencies.sort();
        load
    }
}
