//! The Raft state machine on [`ringtide::kv::Db`].
//!
//! Layout in the store: a bucket `raft` holds the last applied log id (`applied`), the last
//! membership (`membership`), the generation of the data bucket (`data`, a big-endian u64) and
//! the file name of the current snapshot (`snapshot`); the service's keys live in the bucket
//! `data.<generation>`. Each `apply` writes its entries' data, `applied` and `membership` in one
//! transaction. Installing a snapshot fills a fresh bucket `data.<generation + 1>` in bounded
//! transactions and then, in one durable transaction, switches `data` to it, writes `applied`,
//! `membership` and `snapshot`, and deletes the old bucket: a crash before that transaction
//! leaves the old state (the half-filled bucket is deleted at the next open), after it the new.

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::TryStreamExt;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorVerb, LogId, OptionalSend, RaftLogId, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StoredMembership,
};
use ringtide::kv::{Bucket, Db, DbOptions, Durability, Isolation, Txn, TxnOptions};
use ringtide::platform::IoDriver;
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufReader};

use crate::codec::{decode, encode, sm_error, snapshot_error};
use crate::snapshot_format::{SnapshotReader, SnapshotWriter, read_header};
use crate::{NodeId, Response, SnapshotFile, TypeConfig};

const META: &str = "raft";
const APPLIED: &[u8] = b"applied";
const MEMBERSHIP: &[u8] = b"membership";
const DATA: &[u8] = b"data";
const SNAPSHOT: &[u8] = b"snapshot";
/// An apply commits its entries in transactions of at most about this many bytes.
const APPLY_TXN_BYTES: usize = 32 << 20;
/// An install commits the snapshot's records in transactions of about this many bytes.
const INSTALL_TXN_BYTES: usize = 4 << 20;

pub(crate) type Meta = SnapshotMeta<NodeId, BasicNode>;
type Membership = StoredMembership<NodeId, BasicNode>;

fn data_bucket(generation: u64) -> String {
    format!("data.{generation}")
}

/// The snapshot the state machine serves: its meta and its file.
#[derive(Debug, Clone)]
struct Current {
    meta: Meta,
    path: PathBuf,
}

/// What the state machine and its snapshot builders share.
#[derive(Debug)]
struct Shared {
    db: Db,
    driver: IoDriver,
    snap_dir: PathBuf,
    /// The current snapshot; the lock is held while one is recorded, so two never race.
    current: tokio::sync::Mutex<Option<Current>>,
    counter: AtomicU64,
}

/// The state machine: openraft's `RaftStateMachine` on a ringtide key-value store.
#[derive(Debug)]
pub struct StateMachine {
    shared: Arc<Shared>,
    applied: Option<LogId<NodeId>>,
    membership: Membership,
    generation: u64,
}

/// Reads the state machine's data outside Raft (for reads after `ensure_linearizable`, or
/// stale reads): a handle on the same store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StateMachineReader {
    db: Db,
}

/// Builds snapshots from one consistent snapshot of the store.
#[derive(Debug)]
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
}

/// A state machine store that does not hold what it should.
fn bad(reason: impl Into<String>) -> ringtide::Error {
    ringtide::Error::InvalidArgument {
        name: "raft state machine",
        reason: reason.into(),
    }
}

fn kv_err(verb: ErrorVerb) -> impl Fn(ringtide::Error) -> StorageError<NodeId> {
    move |e| sm_error(verb, e)
}

fn snap_err(verb: ErrorVerb) -> impl Fn(io::Error) -> StorageError<NodeId> {
    move |e| snapshot_error(verb, e)
}

/// Reads the value at `key` of the meta bucket and decodes it; `None` if absent.
async fn read_meta<T: serde::de::DeserializeOwned>(
    meta: &Bucket,
    key: &[u8],
) -> ringtide::Result<Option<T>> {
    match meta.get(key).await? {
        Some(bytes) => decode(&bytes).map(Some).map_err(|e| {
            bad(format!(
                "its `{}` entry does not decode: {e}",
                String::from_utf8_lossy(key)
            ))
        }),
        None => Ok(None),
    }
}

fn encoded<T: serde::Serialize>(value: &T) -> ringtide::Result<Vec<u8>> {
    encode(value).map_err(|e| bad(e.to_string()))
}

/// The meta bucket of `txn`.
async fn meta_bucket(txn: &Txn) -> ringtide::Result<Bucket> {
    txn.bucket(META)
        .await?
        .ok_or_else(|| bad("the `raft` bucket is missing"))
}

/// The data bucket's generation, read in `meta`.
async fn generation_of(meta: &Bucket) -> ringtide::Result<u64> {
    let raw = meta
        .get(DATA)
        .await?
        .ok_or_else(|| bad("the `data` entry is missing"))?;
    let raw: [u8; 8] = raw
        .as_ref()
        .try_into()
        .map_err(|_| bad("the `data` entry is not 8 bytes"))?;
    Ok(u64::from_be_bytes(raw))
}

impl StateMachine {
    /// Opens the state machine in `dir` (the store in `dir/kv`, snapshots in
    /// `dir/snapshots`), creating it if there is none; removes what a crash left of an
    /// install or a snapshot build. `options` are the store's, with `driver` as its driver.
    ///
    /// # Errors
    ///
    /// As [`Db::open`]; [`ringtide::Error::InvalidArgument`] if the store is not a state
    /// machine's or its current snapshot's file is damaged.
    ///
    /// # Cancel safety
    ///
    /// Dropped part way, nothing is lost: the next open recovers the files.
    pub async fn open(
        dir: impl AsRef<Path>,
        driver: &IoDriver,
        options: DbOptions,
    ) -> ringtide::Result<StateMachine> {
        let dir = dir.as_ref();
        let db = Db::open(dir.join("kv"), options.driver(driver.clone())).await?;
        let snap_dir = dir.join("snapshots");
        driver.create_dir_all(&snap_dir).await?;
        // Create the layout on first open.
        let txn = db.begin(TxnOptions::default().durability(Durability::Durable))?;
        if txn.bucket(META).await?.is_none() {
            let meta = txn.create_bucket(META).await?;
            meta.put(DATA, 0u64.to_be_bytes().to_vec())?;
            txn.create_bucket(data_bucket(0)).await?;
            txn.commit().await?;
        } else {
            txn.rollback().await?;
        }
        let txn = db.begin(TxnOptions::default())?;
        let meta = meta_bucket(&txn).await?;
        let applied: Option<LogId<NodeId>> = read_meta(&meta, APPLIED).await?.flatten();
        let membership: Membership = read_meta(&meta, MEMBERSHIP).await?.unwrap_or_default();
        let generation = generation_of(&meta).await?;
        let snapshot: Option<String> = read_meta(&meta, SNAPSHOT).await?;
        // Data buckets of an install a crash interrupted.
        let live = data_bucket(generation);
        for name in txn.buckets().await? {
            if name.starts_with(b"data.") && name.as_ref() != live.as_bytes() {
                txn.delete_bucket(&name).await?;
                tracing::info!(bucket = %String::from_utf8_lossy(&name), "removed the data of an interrupted snapshot install");
            }
        }
        txn.commit().await?;
        // Snapshot files: keep the current one only.
        let mut current = None;
        for entry in driver.read_dir(&snap_dir).await? {
            let Some(name) = entry.path.file_name() else {
                continue;
            };
            let name = name.to_string_lossy().into_owned();
            if Some(&name) == snapshot.as_ref() {
                continue;
            }
            driver.remove_file(snap_dir.join(&name)).await?;
        }
        if let Some(name) = snapshot {
            let path = snap_dir.join(&name);
            match SnapshotFile::open(driver, &path).await {
                Ok(file) => {
                    let len = file.len().await?;
                    let mut reader = BufReader::new(file);
                    match read_header(&mut reader, len).await {
                        Ok(meta) => current = Some(Current { meta, path }),
                        // A damaged snapshot is not served: removed, and openraft builds a new
                        // one from the state machine, which holds everything it held.
                        Err(e) => {
                            tracing::warn!(file = %path.display(), error = %e, "the current snapshot is damaged; removed, the next one is built anew");
                            drop(reader);
                            driver.remove_file(&path).await?;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    tracing::warn!(file = %path.display(), "the current snapshot's file is missing; the next snapshot is built anew");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(StateMachine {
            shared: Arc::new(Shared {
                db,
                driver: driver.clone(),
                snap_dir,
                current: tokio::sync::Mutex::new(current),
                counter: AtomicU64::new(0),
            }),
            applied,
            membership,
            generation,
        })
    }

    /// The store that holds the state machine (to close it after the Raft node shut down, or
    /// for stats).
    pub fn db(&self) -> &Db {
        &self.shared.db
    }

    /// A reader of the state machine's data.
    pub fn reader(&self) -> StateMachineReader {
        StateMachineReader {
            db: self.shared.db.clone(),
        }
    }
}

impl StateMachineReader {
    /// The value at `key` in the state machine as applied so far.
    ///
    /// # Errors
    ///
    /// As [`ringtide::kv::Txn::get`]; [`ringtide::Error::InvalidArgument`] if the store is not
    /// a state machine's.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> ringtide::Result<Option<Bytes>> {
        let key = key.as_ref();
        self.db
            .view(|txn| async move {
                let meta = meta_bucket(&txn).await?;
                let generation = generation_of(&meta).await?;
                match txn.bucket(data_bucket(generation)).await? {
                    Some(data) => data.get(key).await,
                    None => Ok(None),
                }
            })
            .await
    }

    /// Every key and value of the state machine as applied so far, in key order, and the last
    /// applied log id they reflect.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn dump(&self) -> ringtide::Result<(Option<LogId<NodeId>>, Vec<(Bytes, Bytes)>)> {
        self.db
            .view(|txn| async move {
                let meta = meta_bucket(&txn).await?;
                let applied: Option<LogId<NodeId>> = read_meta(&meta, APPLIED).await?.flatten();
                let generation = generation_of(&meta).await?;
                let all = match txn.bucket(data_bucket(generation)).await? {
                    Some(data) => data.scan::<&[u8]>(..).try_collect().await?,
                    None => Vec::new(),
                };
                Ok((applied, all))
            })
            .await
    }
}

impl Shared {
    fn unique(&self) -> u64 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos.wrapping_add(self.counter.fetch_add(1, Ordering::Relaxed))
    }

    /// A new snapshot file name. Names are made here, never from a snapshot id (which comes
    /// from the leader).
    fn file_name(&self) -> String {
        format!("snap-{:x}.snap", self.unique())
    }

    /// Opens `current`'s file for openraft (called under the `current` lock, so no build or
    /// install removes it in between).
    async fn serve(&self, current: &Current) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let file = SnapshotFile::open(&self.driver, &current.path)
            .await
            .map_err(snap_err(ErrorVerb::Read))?;
        Ok(Snapshot {
            meta: current.meta.clone(),
            snapshot: Box::new(file),
        })
    }

    /// Makes the built snapshot in `tmp` (complete and synced) the current one: renamed,
    /// recorded in the store durably, the previous file removed; returns it, open. If a newer
    /// snapshot became current meanwhile (an install while this one was built), `tmp` is
    /// dropped and the current one returned.
    async fn record(
        &self,
        meta: Meta,
        tmp: &Path,
    ) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let mut current = self.current.lock().await;
        if let Some(newer) = current
            .as_ref()
            .filter(|c| c.meta.last_log_id > meta.last_log_id)
        {
            let _ = self.driver.remove_file(tmp).await;
            return self.serve(newer).await;
        }
        let name = self.file_name();
        let path = self.snap_dir.join(&name);
        self.driver
            .rename(tmp, &path)
            .await
            .map_err(snap_err(ErrorVerb::Write))?;
        self.driver
            .sync_dir(&self.snap_dir)
            .await
            .map_err(snap_err(ErrorVerb::Write))?;
        let txn = self
            .db
            .begin(
                TxnOptions::default()
                    .isolation(Isolation::Snapshot)
                    .durability(Durability::Durable),
            )
            .map_err(kv_err(ErrorVerb::Write))?;
        let res = async {
            meta_bucket(&txn).await?.put(SNAPSHOT, encoded(&name)?)?;
            txn.commit().await
        }
        .await;
        res.map_err(kv_err(ErrorVerb::Write))?;
        let new = Current { meta, path };
        let snapshot = self.serve(&new).await;
        if let Some(old) = current.replace(new) {
            let _ = self.driver.remove_file(&old.path).await;
        }
        snapshot
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let shared = &self.shared;
        // One consistent snapshot of the store: the data, applied and membership agree.
        let txn = shared
            .db
            .begin(TxnOptions::default().read_only(true))
            .map_err(kv_err(ErrorVerb::Read))?;
        let read = async {
            let meta = meta_bucket(&txn).await?;
            let applied: Option<LogId<NodeId>> = read_meta(&meta, APPLIED).await?.flatten();
            let membership: Membership = read_meta(&meta, MEMBERSHIP).await?.unwrap_or_default();
            let generation = generation_of(&meta).await?;
            let data = txn.bucket(data_bucket(generation)).await?;
            Ok::<_, ringtide::Error>((applied, membership, data))
        }
        .await;
        let (applied, membership, data) = read.map_err(kv_err(ErrorVerb::Read))?;
        // Make the store durable up to this point: the log may be purged up to the snapshot,
        // and the state machine must not come back older than that after a power loss.
        let sync = async {
            let t = shared.db.begin(
                TxnOptions::default()
                    .isolation(Isolation::Snapshot)
                    .durability(Durability::Durable),
            )?;
            meta_bucket(&t)
                .await?
                .put(b"synced".to_vec(), encoded(&applied)?)?;
            t.commit().await
        };
        sync.await.map_err(kv_err(ErrorVerb::Write))?;
        let unique = shared.unique();
        let snapshot_id = match applied {
            Some(id) => format!(
                "{}-{}-{}-{unique:x}",
                id.leader_id.term, id.leader_id.node_id, id.index
            ),
            None => format!("none-{unique:x}"),
        };
        let meta = Meta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id,
        };
        let tmp = shared.snap_dir.join(format!("build-{unique:x}.tmp"));
        let written = async {
            let file = SnapshotFile::create(&shared.driver, &tmp).await?;
            let mut w = SnapshotWriter::new(file, &meta).await?;
            if let Some(data) = data {
                let mut scan = data.scan::<&[u8]>(..);
                while let Some((k, v)) = scan.try_next().await.map_err(io::Error::other)? {
                    w.record(&k, &v).await?;
                }
            }
            w.finish().await
        }
        .await;
        let _ = txn.rollback().await;
        if let Err(e) = written {
            let _ = shared.driver.remove_file(&tmp).await;
            return Err(snapshot_error(ErrorVerb::Write, e));
        }
        tracing::debug!(id = %meta.snapshot_id, "snapshot built");
        shared.record(meta, &tmp).await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, Membership), StorageError<NodeId>> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // One transaction per group of entries of at most APPLY_TXN_BYTES (a store bounds a
        // transaction's bytes; a follower catching up applies many entries at once).
        let mut replies = Vec::new();
        let mut group = Vec::new();
        let mut group_bytes = 0usize;
        for entry in entries {
            group_bytes += match &entry.payload {
                EntryPayload::Normal(request) => request.payload_bytes(),
                _ => 0,
            };
            group.push(entry);
            if group_bytes >= APPLY_TXN_BYTES {
                replies.extend(self.apply_group(std::mem::take(&mut group)).await?);
                group_bytes = 0;
            }
        }
        if !group.is_empty() {
            replies.extend(self.apply_group(group).await?);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            shared: Arc::clone(&self.shared),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<SnapshotFile>, StorageError<NodeId>> {
        // openraft receives one snapshot at a time: a stream begun before and never installed
        // (abandoned, or skipped as not newer) leaves its file; remove those.
        let dir = &self.shared.snap_dir;
        for entry in self
            .shared
            .driver
            .read_dir(dir)
            .await
            .map_err(snap_err(ErrorVerb::Write))?
        {
            let abandoned = entry
                .path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("recv-"));
            if abandoned {
                let _ = self.shared.driver.remove_file(&entry.path).await;
            }
        }
        let path = dir.join(format!("recv-{:x}.tmp", self.shared.unique()));
        let file = SnapshotFile::create(&self.shared.driver, &path)
            .await
            .map_err(snap_err(ErrorVerb::Write))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError<NodeId>> {
        let shared = Arc::clone(&self.shared);
        let mut file = *snapshot;
        let tmp = file.path().to_path_buf();
        let generation = self.generation + 1;
        let fresh = data_bucket(generation);
        let res = self.fill(&mut file, meta, &fresh).await;
        if let Err(e) = res {
            // Leave the old state: drop what was filled, and the received file.
            drop(file);
            let _ = shared.driver.remove_file(&tmp).await;
            let _ = async {
                let t = shared.db.begin(TxnOptions::default())?;
                if t.bucket(&fresh).await?.is_some() {
                    t.delete_bucket(&fresh).await?;
                }
                t.commit().await
            }
            .await;
            return Err(e);
        }
        drop(file);
        // The switch: one durable transaction.
        let name = shared.file_name();
        let path = shared.snap_dir.join(&name);
        shared
            .driver
            .rename(&tmp, &path)
            .await
            .map_err(snap_err(ErrorVerb::Write))?;
        shared
            .driver
            .sync_dir(&shared.snap_dir)
            .await
            .map_err(snap_err(ErrorVerb::Write))?;
        let mut current = shared.current.lock().await;
        let switch = async {
            let t = shared.db.begin(
                TxnOptions::default()
                    .isolation(Isolation::Snapshot)
                    .durability(Durability::Durable),
            )?;
            let m = meta_bucket(&t).await?;
            m.put(DATA, generation.to_be_bytes().to_vec())?;
            m.put(APPLIED, encoded(&meta.last_log_id)?)?;
            m.put(MEMBERSHIP, encoded(&meta.last_membership)?)?;
            m.put(SNAPSHOT, encoded(&name)?)?;
            t.delete_bucket(data_bucket(self.generation)).await?;
            t.commit().await
        };
        switch.await.map_err(kv_err(ErrorVerb::Write))?;
        self.generation = generation;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        let old = current.replace(Current {
            meta: meta.clone(),
            path: path.clone(),
        });
        if let Some(old) = old
            && old.path != path
        {
            let _ = shared.driver.remove_file(&old.path).await;
        }
        tracing::info!(id = %meta.snapshot_id, last = ?meta.last_log_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let current = self.shared.current.lock().await;
        match current.as_ref() {
            Some(c) => self.shared.serve(c).await.map(Some),
            None => Ok(None),
        }
    }
}

impl StateMachine {
    /// Applies `entries` in one transaction: their puts and deletes, the last applied log id
    /// and the membership they set.
    async fn apply_group(
        &mut self,
        entries: Vec<Entry<TypeConfig>>,
    ) -> Result<Vec<Response>, StorageError<NodeId>> {
        let txn = self
            .shared
            .db
            // The store's own sync policy: none by default (see `StorageOptions::db_options`),
            // so a commit returns once queued for the store's wal; the Raft log is the
            // durable record and openraft applies again what a crash took.
            .begin(TxnOptions::default().isolation(Isolation::Snapshot))
            .map_err(kv_err(ErrorVerb::Write))?;
        let mut applied = self.applied;
        let mut membership = None;
        let mut replies = Vec::new();
        let res = async {
            let data = txn
                .bucket(data_bucket(self.generation))
                .await?
                .ok_or_else(|| bad("the data bucket is missing"))?;
            for entry in entries {
                let log_id = *entry.get_log_id();
                applied = Some(log_id);
                match entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(request) => {
                        for (key, value) in request.into_ops() {
                            match value {
                                Some(value) => data.put(key, value)?,
                                None => data.delete(key)?,
                            }
                        }
                    }
                    EntryPayload::Membership(m) => {
                        membership = Some(StoredMembership::new(Some(log_id), m));
                    }
                }
                replies.push(Response {});
            }
            let meta = meta_bucket(&txn).await?;
            meta.put(APPLIED, encoded(&applied)?)?;
            if let Some(m) = &membership {
                meta.put(MEMBERSHIP, encoded(m)?)?;
            }
            txn.commit().await
        }
        .await;
        if let Err(e) = res {
            let _ = txn.rollback().await;
            return Err(sm_error(ErrorVerb::Write, e));
        }
        self.applied = applied;
        if let Some(m) = membership {
            self.membership = m;
        }
        Ok(replies)
    }

    /// Checks the received snapshot in `file` against `meta` and writes its records into the
    /// fresh bucket `fresh`, in bounded transactions.
    async fn fill(
        &self,
        file: &mut SnapshotFile,
        meta: &Meta,
        fresh: &str,
    ) -> Result<(), StorageError<NodeId>> {
        let db = &self.shared.db;
        file.shutdown().await.map_err(snap_err(ErrorVerb::Write))?;
        file.seek(SeekFrom::Start(0))
            .await
            .map_err(snap_err(ErrorVerb::Read))?;
        let len = file.len().await.map_err(snap_err(ErrorVerb::Read))?;
        let mut reader = SnapshotReader::new(BufReader::with_capacity(256 << 10, &mut *file), len);
        let stored = reader.meta().await.map_err(snap_err(ErrorVerb::Read))?;
        if stored.last_log_id != meta.last_log_id || stored.last_membership != meta.last_membership
        {
            return Err(snapshot_error(
                ErrorVerb::Read,
                format!(
                    "the snapshot's data is of {:?}, its meta says {:?}",
                    stored.last_log_id, meta.last_log_id
                ),
            ));
        }
        let create = async {
            let t = db.begin(TxnOptions::default())?;
            if t.bucket(fresh).await?.is_some() {
                t.delete_bucket(fresh).await?;
            }
            t.create_bucket(fresh).await?;
            t.commit().await
        };
        create.await.map_err(kv_err(ErrorVerb::Write))?;
        let mut seen = 0u64;
        let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut batch_bytes = 0usize;
        loop {
            let next = reader.next(seen).await.map_err(snap_err(ErrorVerb::Read))?;
            let done = next.is_none();
            if let Some((k, v)) = next {
                seen += 1;
                batch_bytes += k.len() + v.len();
                batch.push((k, v));
            }
            if (done && !batch.is_empty()) || batch_bytes >= INSTALL_TXN_BYTES {
                let chunk = std::mem::take(&mut batch);
                batch_bytes = 0;
                let write = async {
                    let t = db.begin(
                        TxnOptions::default()
                            .isolation(Isolation::Snapshot)
                            .durability(Durability::Buffered),
                    )?;
                    let data = t
                        .bucket(fresh)
                        .await?
                        .ok_or_else(|| bad("the fresh bucket vanished"))?;
                    for (k, v) in chunk {
                        data.put(k, v)?;
                    }
                    t.commit().await
                };
                write.await.map_err(kv_err(ErrorVerb::Write))?;
            }
            if done {
                return Ok(());
            }
        }
    }
}
