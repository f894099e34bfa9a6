//! ringtide as [openraft](https://docs.rs/openraft/0.9)'s storage: a replicated key-value
//! service whose Raft log is a [`ringtide::wal::Wal`] and whose state machine is a
//! [`ringtide::kv::Db`].
//!
//! - [`LogStore`] implements openraft's `RaftLogStorage` and `RaftLogReader` on the wal: one wal
//!   entry per Raft entry (lsn = index + 1, the Raft term in the entry's term field); appends are
//!   acknowledged through openraft's flush callback once the wal's fdatasync covers them, so
//!   appends queued while a sync runs share the next one; the vote and the last purged log id
//!   live in a small state file, fdatasync'd before the call returns; the committed log id too,
//!   written and synced in the background within about 50 ms (openraft commits again what a
//!   crash takes back).
//! - [`StateMachine`] implements `RaftStateMachine` on the key-value store: the data of each
//!   applied batch, the last applied log id and the membership commit in one transaction; a
//!   snapshot is read from one consistent snapshot of the store and streamed from a file;
//!   installing one writes it into a fresh bucket and switches to it in one transaction, so a
//!   crash leaves the old state or the new, never a mix.
//! - [`router`] is an in-process network between nodes whose links can be cut, for examples,
//!   tests and benches.
//!
//! Open a node's storage with [`open_storage`], hand both halves to `openraft::Raft::new`.
//!
//! The openraft version is pinned exactly (0.9.25): its storage-v2 traits are what this crate
//! implements, and openraft's API changes between minor versions.

#![forbid(unsafe_code)]

pub mod cluster;
mod codec;
mod log_store;
pub mod router;
mod snapshot_file;
mod snapshot_format;
mod state_file;
mod state_machine;

use std::path::Path;

use ringtide::kv::DbOptions;
use ringtide::platform::{DriverOptions, IoDriver};
use ringtide::wal::{SyncPolicy, WalOptions};

use serde::{Deserialize, Serialize};

pub use log_store::{LogReader, LogStore};
pub use openraft;
pub use ringtide;
pub use snapshot_file::SnapshotFile;
pub use state_machine::{SnapshotBuilder, StateMachine, StateMachineReader};

/// A node's id.
pub type NodeId = u64;

/// A command the replicated key-value service applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Removes `key` (nothing happens if it is absent).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Several requests in one Raft entry, applied in order and atomically (one transaction).
    /// A service batches its clients' writes this way: openraft 0.9 waits for each entry's
    /// log flush on the leader before it takes the next, so one entry per write would cap the
    /// leader at one write per fdatasync (see [`cluster::LocalCluster::with_batching`]).
    Batch(Vec<Request>),
}

impl Request {
    /// The puts (`Some(value)`) and deletes (`None`) this request makes, in order, a batch's
    /// flattened.
    pub fn into_ops(self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        self.collect_ops(&mut out);
        out
    }

    /// The bytes of keys and values this request carries.
    pub fn payload_bytes(&self) -> usize {
        match self {
            Request::Put { key, value } => key.len() + value.len(),
            Request::Delete { key } => key.len(),
            Request::Batch(requests) => requests.iter().map(Request::payload_bytes).sum(),
        }
    }

    fn collect_ops(self, out: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        match self {
            Request::Put { key, value } => out.push((key, Some(value))),
            Request::Delete { key } => out.push((key, None)),
            Request::Batch(requests) => {
                for r in requests {
                    r.collect_ops(out);
                }
            }
        }
    }
}

/// What applying a [`Request`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {}

openraft::declare_raft_types!(
    /// The Raft types of the replicated key-value service.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The openraft handle of a node of the service.
pub type Raft = openraft::Raft<TypeConfig>;

/// How a node's storage is opened: the I/O driver its log, state machine and snapshot files
/// share, and the options of the wal and of the key-value store.
#[derive(Debug, Clone, Default)]
pub struct StorageOptions {
    driver: Option<IoDriver>,
    wal: Option<WalOptions>,
    db: Option<DbOptions>,
}

impl StorageOptions {
    /// The I/O driver (default: a new one, io_uring where available).
    pub fn driver(mut self, driver: IoDriver) -> Self {
        self.driver = Some(driver);
        self
    }

    /// The Raft log's wal options (default: `WalOptions::default()` with a grouped commit
    /// without a window: appends queued while a sync runs share the next one). Appends are
    /// acknowledged to openraft once durable whatever the policy.
    pub fn wal_options(mut self, options: WalOptions) -> Self {
        self.wal = Some(options);
        self
    }

    /// The state machine's store options (default: `DbOptions::default()` with
    /// `SyncPolicy::None`: the Raft log is the durable record, so the state machine's commits
    /// need not each be synced; after a power loss it comes back at an earlier applied log id
    /// and openraft applies the rest again from the log. Building a snapshot and installing
    /// one commit durably, since the log may then be purged up to them).
    pub fn db_options(mut self, options: DbOptions) -> Self {
        self.db = Some(options);
        self
    }
}

/// Opens (creating if needed) a node's storage in `dir`: the Raft log in `dir/log` with its
/// state file `dir/raft-state`, the state machine's store in `dir/kv` and its snapshots in
/// `dir/snapshots`.
///
/// # Errors
///
/// As [`ringtide::wal::Wal::open`] and [`ringtide::kv::Db::open`]; [`ringtide::Error::Io`] if
/// the state file cannot be read, or holds a vote whose two copies are both damaged;
/// [`ringtide::Error::InvalidArgument`] if the store is not a state machine's or its snapshot
/// file is damaged.
///
/// # Cancel safety
///
/// Not cancel safe in the sense of leaving nothing behind: dropped part way, the files are
/// whole and the next open recovers them, but a wal or store opened so far is closed by its
/// drop (its lock released when its tasks end).
pub async fn open_storage(
    dir: impl AsRef<Path>,
    options: StorageOptions,
) -> ringtide::Result<(LogStore, StateMachine)> {
    let dir = dir.as_ref();
    let driver = match options.driver {
        Some(driver) => driver,
        None => IoDriver::new(DriverOptions::default())?,
    };
    let wal = options.wal.unwrap_or_else(|| {
        WalOptions::default().sync_policy(SyncPolicy::Grouped {
            window: std::time::Duration::ZERO,
        })
    });
    let db = options
        .db
        .unwrap_or_else(|| DbOptions::default().sync_policy(SyncPolicy::None));
    let log = LogStore::open(dir, &driver, wal).await?;
    let sm = StateMachine::open(dir, &driver, db).await?;
    Ok((log, sm))
}
