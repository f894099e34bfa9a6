//! An in-memory Raft log store and state machine: the baseline the benches compare
//! `ringtide-raft`'s durable storage against, the equivalent of openraft's in-memory example
//! store.
//!
//! - [`MemLogStore`]: the log is a `BTreeMap` from index to entry; the vote, the committed log id
//!   and the last purged log id are plain fields. An append acknowledges itself (calls openraft's
//!   flush callback) at once: nothing is ever written to a disk.
//! - [`MemStateMachine`]: the data is a `BTreeMap` of byte keys to byte values, with the last
//!   applied log id and the last membership beside it. A snapshot is the map serialized with
//!   postcard into a [`Cursor`]; the state machine keeps the last one, built or installed.
//!
//! Both are cheap to clone and the clones share the state (an `Arc<Mutex<..>>`, never held
//! across an await): the log reader and the snapshot builder openraft asks for are clones.
//!
//! It has its own type config, [`MemConfig`], with the same application data as
//! `ringtide_raft::TypeConfig` ([`Request`], [`Response`]) and a `Cursor<Vec<u8>>` as snapshot
//! data.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "shared by the benches and the tests, each uses a different subset"
)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
    Vote,
};
use ringtide_raft::{Request, Response};

openraft::declare_raft_types!(
    /// The Raft types of the in-memory baseline: `ringtide_raft`'s requests and responses, a
    /// snapshot in a byte buffer.
    pub MemConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<MemConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The node id of [`MemConfig`].
pub type MemNodeId = u64;

/// Locks `m`; the data behind it stays consistent whatever panicked while it was held (each
/// update is complete before anything can panic, or a test already failed).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The in-memory Raft log: the entries, the vote, the committed and the last purged log ids.
///
/// Clones share the log.
#[derive(Debug, Clone, Default)]
pub struct MemLogStore {
    inner: Arc<Mutex<LogInner>>,
}

#[derive(Debug, Default)]
struct LogInner {
    /// The entries present, by index.
    log: BTreeMap<u64, Entry<MemConfig>>,
    /// The last purged log id: every entry up to it is gone.
    last_purged: Option<LogId<MemNodeId>>,
    /// The last saved vote.
    vote: Option<Vote<MemNodeId>>,
    /// The last saved committed log id.
    committed: Option<LogId<MemNodeId>>,
}

impl MemLogStore {
    /// An empty log: no entry, no vote.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// How many entries the log holds.
    #[must_use]
    pub fn len(&self) -> usize {
        lock(&self.inner).log.len()
    }

    /// Whether the log holds no entry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        lock(&self.inner).log.is_empty()
    }
}

impl RaftLogReader<MemConfig> for MemLogStore {
    /// The entries present in `range` (a purged or absent index is skipped).
    ///
    /// # Errors
    ///
    /// None: the log is in memory.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it reads only.
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<MemConfig>>, StorageError<MemNodeId>> {
        let inner = lock(&self.inner);
        Ok(inner.log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<MemConfig> for MemLogStore {
    type LogReader = Self;

    /// The last purged log id and the last log id (the last entry's, or the last purged one when
    /// the log is empty).
    ///
    /// # Errors
    ///
    /// None: the log is in memory.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it reads only.
    async fn get_log_state(&mut self) -> Result<LogState<MemConfig>, StorageError<MemNodeId>> {
        let inner = lock(&self.inner);
        let last_log_id = inner
            .log
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id,
        })
    }

    /// A clone of the store, sharing its log.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing.
    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    /// Keeps `vote`.
    ///
    /// # Errors
    ///
    /// None: the log is in memory.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the vote is kept whole on the first poll, or not at all.
    async fn save_vote(&mut self, vote: &Vote<MemNodeId>) -> Result<(), StorageError<MemNodeId>> {
        lock(&self.inner).vote = Some(*vote);
        Ok(())
    }

    /// The last vote saved.
    ///
    /// # Errors
    ///
    /// None: the log is in memory.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it reads only.
    async fn read_vote(&mut self) -> Result<Option<Vote<MemNodeId>>, StorageError<MemNodeId>> {
        Ok(lock(&self.inner).vote)
    }

    /// Keeps `committed`.
    ///
    /// # Errors
    ///
    /// None: the log is in memory.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: kept on the first poll, or not at all.
    async fn save_committed(
        &mut self,
        committed: Option<LogId<MemNodeId>>,
    ) -> Result<(), StorageError<MemNodeId>> {
        lock(&self.inner).committed = committed;
        Ok(())
    }

    /// The last committed log id saved.
    ///
    /// # Errors
    ///
    /// None: the log is in memory.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it reads only.
    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<MemNodeId>>, StorageError<MemNodeId>> {
        Ok(lock(&self.inner).committed)
    }

    /// Adds `entries` to the log (each at its index, replacing any entry there) and calls
    /// `callback` at once: in memory, an entry is as durable as it gets once it is inserted.
    ///
    /// # Errors
    ///
    /// None: the log is in memory.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the entries are added and acknowledged on the first poll, or not at all.
    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<MemConfig>,
    ) -> Result<(), StorageError<MemNodeId>>
    where
        I: IntoIterator<Item = Entry<MemConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut inner = lock(&self.inner);
            for entry in entries {
                inner.log.insert(entry.log_id.index, entry);
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    /// Removes the entries from `log_id`'s index on, inclusive.
    ///
    /// # Errors
    ///
    /// None: the log is in memory.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: done on the first poll, or not at all.
    async fn truncate(&mut self, log_id: LogId<MemNodeId>) -> Result<(), StorageError<MemNodeId>> {
        let mut inner = lock(&self.inner);
        drop(inner.log.split_off(&log_id.index));
        Ok(())
    }

    /// Removes the entries up to `log_id`'s index, inclusive, and records `log_id` as the last
    /// purged (a purge behind the last one changes nothing).
    ///
    /// # Errors
    ///
    /// None: the log is in memory.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: done on the first poll, or not at all.
    async fn purge(&mut self, log_id: LogId<MemNodeId>) -> Result<(), StorageError<MemNodeId>> {
        let mut inner = lock(&self.inner);
        if inner.last_purged.is_some_and(|p| p >= log_id) {
            return Ok(());
        }
        inner.last_purged = Some(log_id);
        let kept = inner.log.split_off(&(log_id.index + 1));
        inner.log = kept;
        Ok(())
    }
}

/// The in-memory key-value state machine and its last snapshot.
///
/// Clones share the state (the snapshot builder is one).
#[derive(Debug, Clone, Default)]
pub struct MemStateMachine {
    inner: Arc<Mutex<SmInner>>,
}

#[derive(Debug, Default)]
struct SmInner {
    /// The id of the last applied entry.
    last_applied: Option<LogId<MemNodeId>>,
    /// The last membership applied.
    last_membership: StoredMembership<MemNodeId, BasicNode>,
    /// The keys and their values.
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    /// How many snapshots this state machine has built: a part of each one's id.
    snapshots_built: u64,
    /// The last snapshot built or installed.
    current: Option<StoredSnapshot>,
}

/// A snapshot kept by the state machine: its meta and the serialized map.
#[derive(Debug, Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta<MemNodeId, BasicNode>,
    data: Vec<u8>,
}

impl StoredSnapshot {
    fn to_snapshot(&self) -> Snapshot<MemConfig> {
        Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(self.data.clone())),
        }
    }
}

impl MemStateMachine {
    /// An empty state machine: no key, nothing applied, no snapshot.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key`, if present.
    #[must_use]
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        lock(&self.inner).data.get(key).cloned()
    }

    /// How many keys are present.
    #[must_use]
    pub fn len(&self) -> usize {
        lock(&self.inner).data.len()
    }

    /// Whether no key is present.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        lock(&self.inner).data.is_empty()
    }

    /// The id of the last applied entry.
    #[must_use]
    pub fn last_applied(&self) -> Option<LogId<MemNodeId>> {
        lock(&self.inner).last_applied
    }
}

impl RaftSnapshotBuilder<MemConfig> for MemStateMachine {
    /// Serializes the map as of now into a snapshot of the last applied log id and membership,
    /// and keeps it as the current snapshot.
    ///
    /// # Errors
    ///
    /// [`StorageError`] if the map cannot be serialized (it always can).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: built and kept on the first poll, or not at all.
    async fn build_snapshot(&mut self) -> Result<Snapshot<MemConfig>, StorageError<MemNodeId>> {
        let mut inner = lock(&self.inner);
        let data = postcard::to_allocvec(&inner.data)
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        inner.snapshots_built += 1;
        let snapshot_id = match inner.last_applied {
            Some(id) => format!(
                "{}-{}-{}",
                id.leader_id.term, id.index, inner.snapshots_built
            ),
            None => format!("--{}", inner.snapshots_built),
        };
        let stored = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: inner.last_applied,
                last_membership: inner.last_membership.clone(),
                snapshot_id,
            },
            data,
        };
        let snapshot = stored.to_snapshot();
        inner.current = Some(stored);
        Ok(snapshot)
    }
}

impl RaftStateMachine<MemConfig> for MemStateMachine {
    type SnapshotBuilder = Self;

    /// The last applied log id and the last membership.
    ///
    /// # Errors
    ///
    /// None: the state is in memory.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it reads only.
    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<MemNodeId>>,
            StoredMembership<MemNodeId, BasicNode>,
        ),
        StorageError<MemNodeId>,
    > {
        let inner = lock(&self.inner);
        Ok((inner.last_applied, inner.last_membership.clone()))
    }

    /// Applies `entries` in order: a [`Request`] sets or removes its key, a membership entry
    /// becomes the last membership; each entry becomes the last applied and answers a
    /// [`Response`].
    ///
    /// # Errors
    ///
    /// None: the state is in memory.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the entries are applied on the first poll, or none is.
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<MemNodeId>>
    where
        I: IntoIterator<Item = Entry<MemConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = lock(&self.inner);
        let mut responses = Vec::new();
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(request) => {
                    for (key, value) in request.into_ops() {
                        match value {
                            Some(value) => inner.data.insert(key, value),
                            None => inner.data.remove(&key),
                        };
                    }
                }
                EntryPayload::Membership(membership) => {
                    inner.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                }
            }
            responses.push(Response::default());
        }
        Ok(responses)
    }

    /// A clone of the state machine, sharing its state: the snapshot it builds is of the state
    /// when it builds it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing.
    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    /// An empty buffer for openraft to write a received snapshot into.
    ///
    /// # Errors
    ///
    /// None: the buffer is in memory.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing.
    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<MemNodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// Replaces the state with the snapshot's: the map deserialized from `snapshot` (all of its
    /// bytes, wherever its position), the last applied log id and membership from `meta`; keeps
    /// it as the current snapshot.
    ///
    /// # Errors
    ///
    /// [`StorageError`] if the bytes are not a serialized map; the state is then unchanged.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: installed on the first poll, or not at all.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<MemNodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<MemNodeId>> {
        let bytes = snapshot.into_inner();
        let data: BTreeMap<Vec<u8>, Vec<u8>> = postcard::from_bytes(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let mut inner = lock(&self.inner);
        inner.data = data;
        inner.last_applied = meta.last_log_id;
        inner.last_membership = meta.last_membership.clone();
        inner.current = Some(StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        });
        Ok(())
    }

    /// The last snapshot built or installed, positioned at its start.
    ///
    /// # Errors
    ///
    /// None: the snapshot is in memory.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it reads only.
    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<MemConfig>>, StorageError<MemNodeId>> {
        Ok(lock(&self.inner)
            .current
            .as_ref()
            .map(StoredSnapshot::to_snapshot))
    }
}
