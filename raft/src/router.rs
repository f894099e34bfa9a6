//! An in-process network between Raft nodes whose links can be cut, for examples, tests and
//! benches.
//!
//! A [`Router`] holds the [`openraft::Raft`] handle of each registered node. A node gets its
//! network factory from [`Router::network`]; a connection made by that factory delivers each RPC
//! by calling the target's `Raft` directly (`append_entries`, `vote`, `install_snapshot`), with
//! no serialization and no task in between. Links can be cut and healed, nodes isolated, removed
//! (a stopped node) and added again (a restarted one), and every message can be given a fixed
//! delay. A message that cannot be delivered fails as [`Unreachable`], so openraft backs off
//! before it retries, as it does on a real network.
//!
//! The router is generic over the type config: it serves [`TypeConfig`](crate::TypeConfig) and
//! any other (a bench's in-memory config, say). Snapshots travel in chunks
//! ([`InstallSnapshotRequest`]), openraft 0.9's transport when its `generic-snapshot-data`
//! feature is off: the target assembles them with `Raft::install_snapshot`.
//!
//! ```
//! use ringtide_raft::TypeConfig;
//! use ringtide_raft::router::Router;
//!
//! let router = Router::<TypeConfig>::new();
//! router.cut(1, 2);
//! assert!(!router.is_linked(2, 1));
//! router.isolate(3);
//! assert!(!router.is_linked(1, 3));
//! router.heal_all();
//! assert!(router.is_linked(1, 2) && router.is_linked(1, 3));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use openraft::error::{Fatal, InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AsyncRuntime, Raft, RaftTypeConfig};

/// An in-process network between the Raft nodes registered in it.
///
/// Cloning is cheap and every clone is the same network (the state is shared behind a mutex,
/// which is never held across an await). A message from `a` to `b` is delivered when both are
/// registered, neither is isolated and the link between them is not cut; links are symmetric. A
/// node is always linked to itself.
pub struct Router<C: RaftTypeConfig> {
    state: Arc<Mutex<State<C>>>,
}

/// The shared state of a [`Router`].
struct State<C: RaftTypeConfig> {
    /// The registered nodes.
    nodes: BTreeMap<C::NodeId, Registered<C>>,
    /// The incarnation the next registration gets.
    next_incarnation: u64,
    /// The cut links, each as (smaller id, larger id).
    cuts: BTreeSet<(C::NodeId, C::NodeId)>,
    /// The isolated nodes: every link of theirs is down.
    isolated: BTreeSet<C::NodeId>,
    /// How long each message (request or reply) takes.
    delay: Duration,
}

/// A registered node.
struct Registered<C: RaftTypeConfig> {
    raft: Raft<C>,
    /// Tells a restarted node (registered again under its id) from the instance a call was
    /// delivered to: the reply of the old one is lost.
    incarnation: u64,
}

impl<C: RaftTypeConfig> Router<C> {
    /// An empty network: no nodes, every link up, no delay.
    #[must_use]
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                nodes: BTreeMap::new(),
                next_incarnation: 0,
                cuts: BTreeSet::new(),
                isolated: BTreeSet::new(),
                delay: Duration::ZERO,
            })),
        }
    }

    /// An empty network whose every message (request or reply) takes `delay`.
    #[must_use]
    pub fn with_delay(delay: Duration) -> Self {
        let router = Self::new();
        router.set_delay(delay);
        router
    }

    fn lock(&self) -> MutexGuard<'_, State<C>> {
        // The state stays consistent whatever panicked while holding the lock: every update is a
        // single insert or remove.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `raft` as node `id`, replacing (and returning) the node registered under `id`,
    /// if any: that is how a restarted node comes back. Calls in flight to the replaced instance
    /// lose their replies.
    ///
    /// Register a node right after `Raft::new`: until it is registered, its own messages are not
    /// delivered either.
    pub fn add_node(&self, id: C::NodeId, raft: Raft<C>) -> Option<Raft<C>> {
        let mut state = self.lock();
        let incarnation = state.next_incarnation;
        state.next_incarnation += 1;
        tracing::debug!(node = %id, incarnation, "router: node added");
        state
            .nodes
            .insert(id, Registered { raft, incarnation })
            .map(|old| old.raft)
    }

    /// Unregisters node `id` (a stopped node), returning its handle if it was registered. RPCs to
    /// it and from it fail as unreachable, and so do the replies of calls in flight to it. The
    /// node's `Raft` keeps running: shut it down through the returned handle if it is to stop.
    pub fn remove_node(&self, id: C::NodeId) -> Option<Raft<C>> {
        let removed = self.lock().nodes.remove(&id).map(|r| r.raft);
        tracing::debug!(node = %id, found = removed.is_some(), "router: node removed");
        removed
    }

    /// The handle of node `id`, if it is registered.
    #[must_use]
    pub fn node(&self, id: C::NodeId) -> Option<Raft<C>> {
        self.lock().nodes.get(&id).map(|r| r.raft.clone())
    }

    /// The ids of the registered nodes, in ascending order.
    #[must_use]
    pub fn node_ids(&self) -> Vec<C::NodeId> {
        self.lock().nodes.keys().cloned().collect()
    }

    /// Cuts the link between `a` and `b`, both directions. Cutting a node's link to itself does
    /// nothing.
    pub fn cut(&self, a: C::NodeId, b: C::NodeId) {
        if a != b {
            tracing::debug!(a = %a, b = %b, "router: link cut");
            self.lock().cuts.insert(ordered(a, b));
        }
    }

    /// Restores the link between `a` and `b` cut by [`cut`](Self::cut). An isolated node stays
    /// isolated: see [`rejoin`](Self::rejoin).
    pub fn heal(&self, a: C::NodeId, b: C::NodeId) {
        tracing::debug!(a = %a, b = %b, "router: link healed");
        self.lock().cuts.remove(&ordered(a, b));
    }

    /// Cuts every link of node `id`, including those to nodes registered later, until
    /// [`rejoin`](Self::rejoin) or [`heal_all`](Self::heal_all).
    pub fn isolate(&self, id: C::NodeId) {
        tracing::debug!(node = %id, "router: node isolated");
        self.lock().isolated.insert(id);
    }

    /// Ends the isolation of node `id`; links cut one by one stay cut.
    pub fn rejoin(&self, id: C::NodeId) {
        tracing::debug!(node = %id, "router: node rejoined");
        self.lock().isolated.remove(&id);
    }

    /// Restores every link: no link cut, no node isolated.
    pub fn heal_all(&self) {
        tracing::debug!("router: all links healed");
        let mut state = self.lock();
        state.cuts.clear();
        state.isolated.clear();
    }

    /// Whether the link between `a` and `b` is up (whether or not the nodes are registered).
    #[must_use]
    pub fn is_linked(&self, a: C::NodeId, b: C::NodeId) -> bool {
        self.lock().linked(&a, &b)
    }

    /// Sets how long each message takes from now on: a request waits `delay` before it is
    /// delivered and its reply `delay` before it returns, so a round trip takes twice `delay`.
    /// [`Duration::ZERO`] (the default) delivers at once, without yielding.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// How long each message takes (see [`set_delay`](Self::set_delay)).
    #[must_use]
    pub fn delay(&self) -> Duration {
        self.lock().delay
    }

    /// The network factory of node `from`, to hand to `openraft::Raft::new`.
    #[must_use]
    pub fn network(&self, from: C::NodeId) -> RouterNetwork<C> {
        RouterNetwork {
            router: self.clone(),
            from,
        }
    }

    /// Where a message from `from` to `target` goes now: the target's handle and incarnation,
    /// and the delay.
    fn route(
        &self,
        from: &C::NodeId,
        target: &C::NodeId,
    ) -> Result<(Raft<C>, u64, Duration), Undeliverable<C::NodeId>> {
        let state = self.lock();
        if !state.nodes.contains_key(from) {
            return Err(Undeliverable::SenderAbsent { from: from.clone() });
        }
        if !state.linked(from, target) {
            return Err(Undeliverable::Cut {
                from: from.clone(),
                to: target.clone(),
            });
        }
        match state.nodes.get(target) {
            Some(r) => Ok((r.raft.clone(), r.incarnation, state.delay)),
            None => Err(Undeliverable::TargetAbsent { to: target.clone() }),
        }
    }

    /// Whether a message between `from` and `target` (a request in flight or its reply) still
    /// gets through: the link is up and `target` is still the incarnation the request went to.
    fn check(
        &self,
        from: &C::NodeId,
        target: &C::NodeId,
        incarnation: u64,
    ) -> Result<(), Undeliverable<C::NodeId>> {
        let state = self.lock();
        if !state.linked(from, target) {
            return Err(Undeliverable::Cut {
                from: from.clone(),
                to: target.clone(),
            });
        }
        match state.nodes.get(target) {
            Some(r) if r.incarnation == incarnation => Ok(()),
            _ => Err(Undeliverable::TargetGone { to: target.clone() }),
        }
    }
}

impl<C: RaftTypeConfig> State<C> {
    fn linked(&self, a: &C::NodeId, b: &C::NodeId) -> bool {
        a == b
            || (!self.isolated.contains(a)
                && !self.isolated.contains(b)
                && !self.cuts.contains(&ordered(a.clone(), b.clone())))
    }
}

/// The pair in ascending order: the key of the (symmetric) link between the two.
fn ordered<T: Ord>(a: T, b: T) -> (T, T) {
    if a <= b { (a, b) } else { (b, a) }
}

impl<C: RaftTypeConfig> Default for Router<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: RaftTypeConfig> Clone for Router<C> {
    fn clone(&self) -> Self {
        Self {
            state: Arc::clone(&self.state),
        }
    }
}

impl<C: RaftTypeConfig> fmt::Debug for Router<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Router")
            .field("nodes", &state.nodes.keys().collect::<Vec<_>>())
            .field("cuts", &state.cuts)
            .field("isolated", &state.isolated)
            .field("delay", &state.delay)
            .finish()
    }
}

/// Why a message was not delivered; carried inside [`Unreachable`].
#[derive(Debug)]
enum Undeliverable<NID> {
    /// The sender is not registered (stopped, or not registered yet).
    SenderAbsent { from: NID },
    /// The link is cut or one end is isolated.
    Cut { from: NID, to: NID },
    /// The target is not registered.
    TargetAbsent { to: NID },
    /// The target was removed or replaced while the call was in flight, or its `Raft` has
    /// stopped.
    TargetGone { to: NID },
}

impl<NID: fmt::Display> fmt::Display for Undeliverable<NID> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SenderAbsent { from } => write!(f, "sender node {from} is not in the router"),
            Self::Cut { from, to } => write!(f, "the link between nodes {from} and {to} is down"),
            Self::TargetAbsent { to } => write!(f, "node {to} is not in the router"),
            Self::TargetGone { to } => write!(f, "node {to} stopped or restarted during the call"),
        }
    }
}

impl<NID: fmt::Debug + fmt::Display> Error for Undeliverable<NID> {}

/// The network factory of one node of a [`Router`] (see [`Router::network`]).
pub struct RouterNetwork<C: RaftTypeConfig> {
    router: Router<C>,
    from: C::NodeId,
}

impl<C: RaftTypeConfig> RouterNetwork<C> {
    /// The node whose messages this factory's connections send.
    #[must_use]
    pub fn node_id(&self) -> C::NodeId {
        self.from.clone()
    }

    /// The router.
    #[must_use]
    pub fn router(&self) -> &Router<C> {
        &self.router
    }
}

impl<C: RaftTypeConfig> Clone for RouterNetwork<C> {
    fn clone(&self) -> Self {
        Self {
            router: self.router.clone(),
            from: self.from.clone(),
        }
    }
}

impl<C: RaftTypeConfig> fmt::Debug for RouterNetwork<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterNetwork")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl<C: RaftTypeConfig> RaftNetworkFactory<C> for RouterNetwork<C> {
    type Network = RouterConnection<C>;

    /// A connection from this factory's node to `target`; the node's address is not used.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it creates a value and changes nothing.
    async fn new_client(&mut self, target: C::NodeId, _node: &C::Node) -> RouterConnection<C> {
        RouterConnection {
            router: self.router.clone(),
            from: self.from.clone(),
            target,
        }
    }
}

/// A connection from one node of a [`Router`] to another: each RPC is checked against the
/// router's state when it is sent, and again when its reply comes back.
pub struct RouterConnection<C: RaftTypeConfig> {
    router: Router<C>,
    from: C::NodeId,
    target: C::NodeId,
}

impl<C: RaftTypeConfig> fmt::Debug for RouterConnection<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterConnection")
            .field("from", &self.from)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// The error of an RPC whose remote error is `E`.
type RpcErrorOf<C, E> = RPCError<
    <C as RaftTypeConfig>::NodeId,
    <C as RaftTypeConfig>::Node,
    RaftError<<C as RaftTypeConfig>::NodeId, E>,
>;

impl<C: RaftTypeConfig> RouterConnection<C> {
    /// Delivers one RPC: `call` runs on the target's `Raft` if the message gets there, and its
    /// result comes back if the reply gets back.
    async fn deliver<T, E, F, Fut>(&self, call: F) -> Result<T, RpcErrorOf<C, E>>
    where
        E: Error,
        F: FnOnce(Raft<C>) -> Fut,
        Fut: Future<Output = Result<T, RaftError<C::NodeId, E>>>,
    {
        let (raft, incarnation, delay) = self
            .router
            .route(&self.from, &self.target)
            .map_err(|e| self.unreachable(e))?;
        if !delay.is_zero() {
            C::AsyncRuntime::sleep(delay).await;
            // The request was on its way: a link cut or the target stopped meanwhile loses it.
            self.router
                .check(&self.from, &self.target, incarnation)
                .map_err(|e| self.unreachable(e))?;
        }
        let result = call(raft).await;
        if !delay.is_zero() {
            C::AsyncRuntime::sleep(delay).await;
        }
        // The reply is lost if the link went down or the target stopped or restarted meanwhile.
        self.router
            .check(&self.from, &self.target, incarnation)
            .map_err(|e| self.unreachable(e))?;
        match result {
            Ok(resp) => Ok(resp),
            // A stopped `Raft` answers nothing on a real network: unreachable, so the sender
            // backs off, rather than a remote error it retries at once.
            Err(RaftError::Fatal(Fatal::Stopped)) => {
                Err(self.unreachable(Undeliverable::TargetGone {
                    to: self.target.clone(),
                }))
            }
            Err(e) => Err(RPCError::RemoteError(RemoteError::new(
                self.target.clone(),
                e,
            ))),
        }
    }

    fn unreachable<E: Error>(&self, why: Undeliverable<C::NodeId>) -> RpcErrorOf<C, E> {
        tracing::debug!(
            from = %self.from,
            to = %self.target,
            reason = %why,
            "router: message dropped"
        );
        RPCError::Unreachable(Unreachable::new(&why))
    }
}

impl<C: RaftTypeConfig> RaftNetwork<C> for RouterConnection<C> {
    /// Delivers an AppendEntries RPC to the target's [`Raft::append_entries`].
    ///
    /// # Errors
    ///
    /// [`RPCError::Unreachable`] if the sender or the target is not registered, the link between
    /// them is down, or the target stopped, was removed or was replaced before the reply came
    /// back; [`RPCError::RemoteError`] with the target's error otherwise.
    ///
    /// # Cancel safety
    ///
    /// Dropped before the request is delivered, nothing happens; after, the target handles the
    /// request (its effects stay) and the reply is lost, as on a real network.
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<C::NodeId>, RpcErrorOf<C, openraft::error::Infallible>> {
        self.deliver(|raft| async move { raft.append_entries(rpc).await })
            .await
    }

    /// Delivers a chunk of a snapshot to the target's [`Raft::install_snapshot`], which
    /// assembles the chunks and installs the snapshot with the last one.
    ///
    /// # Errors
    ///
    /// As [`append_entries`](Self::append_entries); the remote error may also be
    /// [`InstallSnapshotError`] (a chunk that does not follow the ones received).
    ///
    /// # Cancel safety
    ///
    /// As [`append_entries`](Self::append_entries).
    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<C::NodeId>, RpcErrorOf<C, InstallSnapshotError>> {
        self.deliver(|raft| async move { raft.install_snapshot(rpc).await })
            .await
    }

    /// Delivers a RequestVote RPC to the target's [`Raft::vote`].
    ///
    /// # Errors
    ///
    /// As [`append_entries`](Self::append_entries).
    ///
    /// # Cancel safety
    ///
    /// As [`append_entries`](Self::append_entries).
    async fn vote(
        &mut self,
        rpc: VoteRequest<C::NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<C::NodeId>, RpcErrorOf<C, openraft::error::Infallible>> {
        self.deliver(|raft| async move { raft.vote(rpc).await })
            .await
    }
}

#[cfg(test)]
mod tests {
    use openraft::{BasicNode, Vote};

    use super::*;
    use crate::TypeConfig;

    fn unreachable_reason<T, E: Error>(res: Result<T, RpcErrorOf<TypeConfig, E>>) -> String {
        match res {
            Err(RPCError::Unreachable(u)) => u.to_string(),
            Err(e) => panic!("expected Unreachable, got {e}"),
            Ok(_) => panic!("expected Unreachable, got a response"),
        }
    }

    #[test]
    fn links_start_up_and_cuts_are_symmetric() {
        let router = Router::<TypeConfig>::new();
        assert!(router.is_linked(1, 2));
        router.cut(2, 1);
        assert!(!router.is_linked(1, 2));
        assert!(!router.is_linked(2, 1));
        assert!(router.is_linked(1, 3));
        assert!(router.is_linked(2, 3));
        router.heal(1, 2);
        assert!(router.is_linked(1, 2));
        assert!(router.is_linked(2, 1));
    }

    #[test]
    fn a_node_is_always_linked_to_itself() {
        let router = Router::<TypeConfig>::new();
        router.cut(1, 1);
        router.isolate(1);
        assert!(router.is_linked(1, 1));
        assert!(!router.is_linked(1, 2));
    }

    #[test]
    fn isolation_is_separate_from_cuts() {
        let router = Router::<TypeConfig>::new();
        router.cut(1, 2);
        router.isolate(3);
        assert!(!router.is_linked(3, 1));
        assert!(!router.is_linked(2, 3));
        assert!(
            !router.is_linked(3, 99),
            "isolation covers nodes not seen yet"
        );
        // Healing one link of an isolated node leaves it isolated.
        router.heal(3, 1);
        assert!(!router.is_linked(1, 3));
        router.rejoin(3);
        assert!(router.is_linked(1, 3));
        assert!(!router.is_linked(1, 2), "rejoin leaves single cuts alone");
        router.isolate(3);
        router.heal_all();
        assert!(router.is_linked(1, 2));
        assert!(router.is_linked(1, 3));
    }

    #[test]
    fn clones_share_the_state() {
        let router = Router::<TypeConfig>::with_delay(Duration::from_millis(5));
        let other = router.clone();
        other.cut(4, 5);
        other.set_delay(Duration::from_millis(7));
        assert!(!router.is_linked(5, 4));
        assert_eq!(router.delay(), Duration::from_millis(7));
        assert!(router.node_ids().is_empty());
        assert!(router.node(4).is_none());
        assert!(router.remove_node(4).is_none());
        let net = router.network(4);
        assert_eq!(net.node_id(), 4);
        assert!(!net.router().is_linked(4, 5));
        assert!(format!("{router:?}").contains("cuts"));
    }

    #[tokio::test]
    async fn rpcs_between_unregistered_nodes_are_unreachable() {
        let router = Router::<TypeConfig>::new();
        let mut net = router.network(1);
        let mut conn = net.new_client(2, &BasicNode::default()).await;
        let option = RPCOption::new(Duration::from_secs(1));

        let vote = VoteRequest::new(Vote::new(1, 1), None);
        let why = unreachable_reason(conn.vote(vote.clone(), option.clone()).await);
        assert!(why.contains("sender node 1"), "{why}");

        let append = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new(1, 1),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        };
        let why = unreachable_reason(conn.append_entries(append, option.clone()).await);
        assert!(why.contains("sender node 1"), "{why}");
    }
}
