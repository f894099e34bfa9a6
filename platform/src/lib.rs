//! The I/O executor of ringtide.
//!
//! Every disk operation of the project goes through an [`IoDriver`]. It runs in one of two ways,
//! chosen at run time (see [`Backend`]):
//!
//! - **io_uring** (Linux): the calling task pushes its submission entries and submits them under a
//!   short lock; completions are reaped at each submit and by a poller task that tokio wakes through an
//!   eventfd registered with the ring. Reads that hit the page cache therefore complete inline, without
//!   a thread hop.
//! - **a fixed thread pool** with a bounded queue and oneshot completions, where io_uring is missing or
//!   forbidden (other systems, seccomp, the `kernel.io_uring_disabled` sysctl).
//!
//! # Owned buffers
//!
//! Every operation takes its buffer by value and hands it back with the result, even on error
//! ([`BufResult`]): `Bytes` to write, `BytesMut` to read. Reads fill the buffer's spare capacity
//! (`len()..capacity()`) and advance its length. Because the operation owns the buffer, dropping the
//! future at any point is safe: the in-flight slot keeps the buffers, the iovecs and the file handle
//! alive until the kernel (or the pool thread) has finished with them.
//!
//! # Bounds
//!
//! The number of operations in flight is bounded by [`DriverOptions::queue_depth`]: an operation
//! waits for a free slot before it is submitted (backpressure, not unbounded memory).
//!
//! # Example
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use ringtide_platform::{DriverOptions, IoDriver, OpenOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let driver = IoDriver::new(DriverOptions::default())?;
//! let path = dir.path().join("data");
//! let file = driver.open(&path, &OpenOptions::new().read(true).write(true).create(true)).await?;
//!
//! let (res, _buf) = file.write_all_at(Bytes::from_static(b"hello"), 0).await;
//! res?;
//! file.sync_data().await?;
//!
//! let (res, buf) = file.read_exact_at(BytesMut::with_capacity(5), 0).await;
//! res?;
//! assert_eq!(&buf[..], b"hello");
//! file.close().await?;
//! # Ok(())
//! # }
//! ```

mod buf;
mod driver;
mod file;
mod pool;
mod probe;
#[cfg(feature = "sim")]
pub mod sim;
mod sys;
#[cfg(target_os = "linux")]
mod uring;

pub use buf::aligned_bytes_mut;
pub use driver::{Backend, DirEntry, DriverOptions, DriverStats, EntryKind, IoDriver};
pub use file::{File, OpenOptions};

/// The result of an operation that owns a buffer: the outcome and the buffer, returned even on
/// error so that the caller can reuse it.
pub type BufResult<T, B> = (std::io::Result<T>, B);

/// The environment variable that forces a backend when [`Backend::Auto`] is asked for:
/// `io_uring` or `threadpool` (or `auto`). Any other value is rejected when the driver is built.
pub const BACKEND_ENV: &str = "RINGTIDE_IO_BACKEND";
