//! ringtide: async-first embedded storage for Rust services on tokio.
//!
//! ringtide is built in three layers, each resting only on the one below:
//!
//! 1. [`platform`] — the I/O executor: every disk operation goes through io_uring on Linux, or a
//!    fixed thread pool where io_uring is missing or forbidden, chosen at run time.
//! 2. [`wal`] — a write-ahead log: segments, grouped commit, reads by sequence number, streams and
//!    tails, truncation at both ends, Raft terms, log transactions.
//! 3. `kv` — a transactional LSM key-value store (not built yet).
//!
//! # Example
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use ringtide::platform::{DriverOptions, IoDriver, OpenOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let driver = IoDriver::new(DriverOptions::default())?;
//! let opts = OpenOptions::new().read(true).write(true).create(true);
//! let file = driver.open(dir.path().join("log"), &opts).await?;
//!
//! // Two records written with one writev linked to one fdatasync: durable when it returns.
//! let records = vec![Bytes::from_static(b"first "), Bytes::from_static(b"second")];
//! let (written, _records) = file.writev_sync_at(records, 0).await;
//! assert_eq!(written?, 12);
//!
//! let (res, buf) = file.read_exact_at(BytesMut::with_capacity(12), 0).await;
//! res?;
//! assert_eq!(&buf[..], b"first second");
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod error;
pub mod wal;

pub use error::{CorruptionKind, Error, Result};
pub use ringtide_platform as platform;
