//! ringtide: async-first embedded storage for Rust services on tokio.
//!
//! ringtide is built in three layers, each resting only on the one below:
//!
//! 1. [`platform`] — the I/O executor: every disk operation goes through io_uring on Linux, or a
//!    fixed thread pool where io_uring is missing or forbidden, chosen at run time.
//! 2. [`wal`] — a write-ahead log: segments, grouped commit, reads by sequence number, streams and
//!    tails, truncation at both ends, Raft terms, log transactions.
//! 3. [`kv`] — a transactional key-value store: MVCC transactions from many concurrent writers
//!    (snapshot and serializable), nested buckets, scans as `Stream`s, durable through the wal.
//!
//! The numbers every layer shares are crate-level newtypes: [`Lsn`] (a log's sequence numbers;
//! also `ringtide::wal::Lsn`) and [`SeqNo`] (the key-value store's commit sequence numbers).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use futures::StreamExt;
//! use ringtide::wal::{Lsn, Record, Wal, WalOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> ringtide::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let wal = Wal::open(dir.path(), WalOptions::default()).await?;
//!
//! // Durable when it returns (SyncPolicy::Immediate, shared by everything queued).
//! let lsn = wal.append(b"hello".to_vec()).await?;
//! assert_eq!(lsn, Lsn(1));
//!
//! // Atomic across crashes, with Raft terms.
//! let batch = wal.append_batch([Record::with_term(7, "a"), Record::with_term(7, "b")]).await?;
//! assert_eq!(batch, Lsn(2)..Lsn(4));
//!
//! // A log transaction: collected in memory, appended atomically, bounded in time.
//! let mut txn = wal.begin_log_txn(Duration::from_secs(5));
//! txn.push("c")?;
//! txn.commit().await?;
//!
//! // Read back: one entry, or a stream.
//! assert_eq!(wal.read(Lsn(3)).await?.term, Some(7));
//! let all: Vec<_> = wal.stream(Lsn(1)).collect().await;
//! assert_eq!(all.len(), 4);
//! wal.close().await?;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod error;
pub mod kv;
mod types;
pub mod wal;

pub use error::{ConflictKind, CorruptionKind, Error, Result};
pub use ringtide_platform as platform;
pub use types::{Lsn, SeqNo};
