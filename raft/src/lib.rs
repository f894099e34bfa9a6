//! ringtide as [openraft](https://docs.rs/openraft/0.9)'s storage: a replicated key-value
//! service whose Raft log is a [`ringtide::wal::Wal`] and whose state machine is a
//! [`ringtide::kv::Db`].
//!
//! - [`LogStore`] implements openraft's `RaftLogStorage` and `RaftLogReader` on the wal: one wal
//!   entry per Raft entry (lsn = index + 1, the Raft term in the entry's term field); appends are
//!   acknowledged through openraft's flush callback once the wal's fdatasync covers them, so
//!   appends queued while a sync runs share the next one; the vote, the committed log id and the
//!   last purged log id live in a small state file written durably before the call returns.
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

mod codec;
mod log_store;
pub mod router;
mod snapshot_file;
mod state_file;
mod state_machine;

use std::io::Cursor;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use log_store::LogStore;
pub use openraft;
pub use ringtide;
pub use snapshot_file::SnapshotFile;
pub use state_machine::{StateMachine, StateMachineReader};

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

#[allow(dead_code, reason = "placeholder until the stores land")]
type Unused = Cursor<Vec<u8>>;

#[allow(dead_code, reason = "placeholder until the stores land")]
fn unused(_: &Path) {}
