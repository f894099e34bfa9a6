//! The driver handle: backend choice, the bound on operations in flight, and the primitive
//! operations that [`File`] and the path operations are built from.
//!
//! Invariants:
//! 1. Every operation holds a [`Ticket`] from submission until the kernel or the pool thread is done
//!    with it — not until its future is dropped. `in_flight` counts the tickets alive.
//! 2. There are never more tickets' permits than `queue_depth`, so neither the ring's submission
//!    queue nor the pool's queue can overflow.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::file::FileState;
use crate::pool::Pool;
use crate::sys::{self, SyncKind};
use crate::{BACKEND_ENV, BufResult, probe};

mod namespace;

/// Which I/O backend a driver uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Backend {
    /// io_uring where it works, else the thread pool (the reason is logged once through
    /// `tracing`). The environment variable [`BACKEND_ENV`](crate::BACKEND_ENV) overrides it.
    #[default]
    Auto,
    /// io_uring; building the driver fails if the kernel cannot provide it.
    IoUring,
    /// The fixed thread pool.
    ThreadPool,
    /// The simulated disk of [`sim`](crate::sim) (feature `sim`): in memory, for crash and fault
    /// tests. Made by [`SimDisk::driver`](crate::sim::SimDisk::driver), not by options.
    #[cfg(feature = "sim")]
    Simulated,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Auto => "auto",
            Backend::IoUring => "io_uring",
            Backend::ThreadPool => "threadpool",
            #[cfg(feature = "sim")]
            Backend::Simulated => "simulated",
        })
    }
}

impl FromStr for Backend {
    type Err = io::Error;

    /// Parses `auto`, `io_uring` (or `uring`, `io-uring`) and `threadpool` (or `pool`,
    /// `thread_pool`), ignoring case.
    fn from_str(s: &str) -> io::Result<Backend> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Backend::Auto),
            "io_uring" | "io-uring" | "uring" => Ok(Backend::IoUring),
            "threadpool" | "thread_pool" | "thread-pool" | "pool" => Ok(Backend::ThreadPool),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown I/O backend {other:?}: expected auto, io_uring or threadpool"),
            )),
        }
    }
}

/// Options for [`IoDriver::new`], as a builder.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    backend: Backend,
    queue_depth: u32,
    pool_threads: usize,
    use_env: bool,
    force_probe_failure: bool,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            backend: Backend::Auto,
            queue_depth: 256,
            pool_threads: 16,
            use_env: true,
            force_probe_failure: false,
        }
    }
}

impl DriverOptions {
    /// The largest accepted [`queue_depth`](Self::queue_depth).
    pub const MAX_QUEUE_DEPTH: u32 = 4096;

    /// The backend to use. Default: [`Backend::Auto`].
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// How many submissions may be in flight at once; further operations wait for a free slot.
    /// A write linked to a sync counts twice. Also the size of the io_uring submission queue (its
    /// completion queue is twice that) and of the pool's job queue. Default: 256; accepted: 2 to
    /// [`MAX_QUEUE_DEPTH`](Self::MAX_QUEUE_DEPTH).
    pub fn queue_depth(mut self, depth: u32) -> Self {
        self.queue_depth = depth;
        self
    }

    /// Threads of the pool. The pool is the whole backend under [`Backend::ThreadPool`], and runs
    /// the few operations io_uring lacks (listing a directory) under [`Backend::IoUring`].
    /// Default: 16; accepted: 1 to 1024.
    pub fn pool_threads(mut self, threads: usize) -> Self {
        self.pool_threads = threads;
        self
    }

    /// Whether [`Backend::Auto`] obeys the environment variable
    /// [`BACKEND_ENV`](crate::BACKEND_ENV). Default: true.
    pub fn use_env(mut self, use_env: bool) -> Self {
        self.use_env = use_env;
        self
    }

    /// Makes the io_uring probe fail as if the kernel refused it, to test the fallback.
    #[doc(hidden)]
    pub fn force_probe_failure(mut self, fail: bool) -> Self {
        self.force_probe_failure = fail;
        self
    }

    fn validate(&self) -> io::Result<()> {
        let invalid = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        if !(2..=Self::MAX_QUEUE_DEPTH).contains(&self.queue_depth) {
            return invalid(format!(
                "queue_depth {} is out of range 2..={}",
                self.queue_depth,
                Self::MAX_QUEUE_DEPTH
            ));
        }
        if !(1..=1024).contains(&self.pool_threads) {
            return invalid(format!(
                "pool_threads {} is out of range 1..=1024",
                self.pool_threads
            ));
        }
        Ok(())
    }

    /// The backend asked for, after the environment variable.
    fn requested_backend(&self) -> io::Result<Backend> {
        if self.backend != Backend::Auto || !self.use_env {
            return Ok(self.backend);
        }
        match std::env::var(BACKEND_ENV) {
            Ok(value) => value.parse().map_err(|e: io::Error| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("{BACKEND_ENV}: {e}"))
            }),
            Err(std::env::VarError::NotPresent) => Ok(Backend::Auto),
            Err(std::env::VarError::NotUnicode(_)) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{BACKEND_ENV} is not valid UTF-8"),
            )),
        }
    }
}

/// A snapshot of a driver's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// The backend in use: [`Backend::IoUring`] or [`Backend::ThreadPool`].
    pub backend: Backend,
    /// Operations submitted and not yet finished by the kernel or the pool, including those whose
    /// future was dropped.
    pub in_flight: usize,
    /// Operations submitted since the driver was built.
    pub submitted: u64,
    /// Operations whose future was dropped before they finished; each was finished by the driver,
    /// which then released its buffers.
    pub abandoned: u64,
}

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub struct DirEntry {
    /// The full path of the entry (the listed directory joined with the name).
    pub path: PathBuf,
    /// File, directory, symlink or other.
    pub kind: EntryKind,
}

/// What a directory entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (not followed).
    Symlink,
    /// Anything else: a device, a socket, a pipe.
    Other,
}

impl EntryKind {
    pub(crate) fn of(t: std::fs::FileType) -> EntryKind {
        if t.is_file() {
            EntryKind::File
        } else if t.is_dir() {
            EntryKind::Dir
        } else if t.is_symlink() {
            EntryKind::Symlink
        } else {
            EntryKind::Other
        }
    }
}

/// Counters shared by the driver and every ticket.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) in_flight: AtomicUsize,
    pub(crate) submitted: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    idle: Notify,
}

/// The right to have one operation in flight. Held by the operation's slot (ring) or job (pool),
/// never by the caller's future alone, so it is released only when the I/O is really over.
pub(crate) struct Ticket {
    _permit: OwnedSemaphorePermit,
    counters: Arc<Counters>,
}

impl Ticket {
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.counters.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.counters.idle.notify_waiters();
        }
    }
}

enum Engine {
    #[cfg(target_os = "linux")]
    Uring(Arc<crate::uring::Ring>),
    Pool,
    #[cfg(feature = "sim")]
    Sim(crate::sim::SimEngine),
}

struct Shared {
    /// Test hook: operations left before every one fails with EIO; negative when disarmed.
    fail_countdown: std::sync::atomic::AtomicI64,
    backend: Backend,
    engine: Engine,
    pool: Pool,
    permits: Arc<Semaphore>,
    counters: Arc<Counters>,
}

/// The handle to the I/O executor: cheap to clone, `Send + Sync`, shared by every file it opens.
///
/// Build one per process (or per runtime) and hand clones around. With io_uring the driver runs a
/// poller task on the tokio runtime it was built in, so it must be built inside a runtime and not
/// outlive it.
#[derive(Clone)]
pub struct IoDriver {
    shared: Arc<Shared>,
}

impl fmt::Debug for IoDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoDriver")
            .field("backend", &self.shared.backend)
            .finish_non_exhaustive()
    }
}

impl IoDriver {
    /// Builds a driver.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for options out of range or a bad value of
    /// [`BACKEND_ENV`](crate::BACKEND_ENV); the probe's error when [`Backend::IoUring`] was asked
    /// for and the kernel refuses it; `Other` when io_uring is to be used outside a tokio runtime.
    pub fn new(options: DriverOptions) -> io::Result<IoDriver> {
        options.validate()?;
        let requested = options.requested_backend()?;
        let depth = options.queue_depth;
        let counters = Arc::new(Counters::default());
        let engine = match requested {
            Backend::ThreadPool => Engine::Pool,
            #[cfg(feature = "sim")]
            Backend::Simulated => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a simulated driver is made by SimDisk::driver, not by options",
                ));
            }
            Backend::IoUring | Backend::Auto => {
                match probe::uring(depth, options.force_probe_failure) {
                    Ok(ready) => Self::uring_engine(ready, &counters)?,
                    Err(failure) if requested == Backend::Auto => {
                        probe::report_fallback(&failure);
                        Engine::Pool
                    }
                    Err(failure) => return Err(failure.into_error()),
                }
            }
        };
        let backend = match engine {
            #[cfg(target_os = "linux")]
            Engine::Uring(_) => Backend::IoUring,
            _ => Backend::ThreadPool,
        };
        let pool_threads = match backend {
            Backend::ThreadPool => options.pool_threads,
            // Under io_uring the pool only lists directories.
            _ => options.pool_threads.min(2),
        };
        let pool = Pool::new(pool_threads, depth as usize)?;
        tracing::debug!(%backend, queue_depth = depth, pool_threads, "ringtide I/O driver started");
        Ok(IoDriver {
            shared: Arc::new(Shared {
                fail_countdown: std::sync::atomic::AtomicI64::new(-1),
                backend,
                engine,
                pool,
                permits: Arc::new(Semaphore::new(depth as usize)),
                counters,
            }),
        })
    }

    /// A driver on the simulated disk: no ring; one idle pool thread (the pool is not used).
    #[cfg(feature = "sim")]
    pub(crate) fn simulated(engine: crate::sim::SimEngine) -> IoDriver {
        let depth = DriverOptions::default().queue_depth as usize;
        IoDriver {
            shared: Arc::new(Shared {
                fail_countdown: std::sync::atomic::AtomicI64::new(-1),
                backend: Backend::Simulated,
                engine: Engine::Sim(engine),
                pool: Pool::new(1, depth).expect("one pool thread starts"),
                permits: Arc::new(Semaphore::new(depth)),
                counters: Arc::new(Counters::default()),
            }),
        }
    }

    #[cfg(target_os = "linux")]
    fn uring_engine(ready: probe::UringReady, counters: &Arc<Counters>) -> io::Result<Engine> {
        Ok(Engine::Uring(crate::uring::Ring::start(
            ready,
            counters.clone(),
        )?))
    }

    #[cfg(not(target_os = "linux"))]
    fn uring_engine(ready: probe::UringReady, _: &Arc<Counters>) -> io::Result<Engine> {
        match ready {}
    }

    /// The backend in use: [`Backend::IoUring`] or [`Backend::ThreadPool`], never `Auto`.
    pub fn backend(&self) -> Backend {
        self.shared.backend
    }

    /// Operations in flight right now, counting those whose future was dropped but whose I/O has
    /// not finished.
    pub fn in_flight(&self) -> usize {
        self.shared.counters.in_flight.load(Ordering::Acquire)
    }

    /// A snapshot of the driver's counters.
    pub fn stats(&self) -> DriverStats {
        let c = &self.shared.counters;
        DriverStats {
            backend: self.shared.backend,
            in_flight: c.in_flight.load(Ordering::Acquire),
            submitted: c.submitted.load(Ordering::Relaxed),
            abandoned: c.abandoned.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting operations and waits until every operation in flight has finished,
    /// including those whose futures were dropped. Later operations on this driver, its clones and
    /// its files fail with an error of kind `Other`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future stops the wait; the driver stays shut.
    pub async fn shutdown(&self) {
        self.shared.permits.close();
        let counters = &self.shared.counters;
        loop {
            let idle = counters.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if counters.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Test hook: after `ops` more operations, every operation of this driver (and of its
    /// clones and files) fails with `EIO` before reaching the system, as a failing disk would,
    /// until [`clear_failures`](Self::clear_failures). For crash and fault tests.
    #[doc(hidden)]
    pub fn fail_after(&self, ops: u64) {
        let ops = i64::try_from(ops).unwrap_or(i64::MAX);
        self.shared.fail_countdown.store(ops, Ordering::Release);
    }

    /// Test hook: ends [`fail_after`](Self::fail_after).
    #[doc(hidden)]
    pub fn clear_failures(&self) {
        self.shared.fail_countdown.store(-1, Ordering::Release);
    }

    /// Takes a ticket for an operation of `sqes` submissions, waiting for room (backpressure).
    pub(crate) async fn ticket(&self, sqes: u32) -> io::Result<Ticket> {
        // One atomic step: an operation that races `clear_failures` must not arm the failure
        // again (a load, then a decrement, then a store of 0 did, after the clear).
        let countdown = &self.shared.fail_countdown;
        let step = countdown.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
            (c > 0).then(|| c - 1)
        });
        if step == Err(0) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let permit = self
            .shared
            .permits
            .clone()
            .acquire_many_owned(sqes)
            .await
            .map_err(|_| io::Error::other("the ringtide I/O driver is shut down"))?;
        let counters = self.shared.counters.clone();
        counters.in_flight.fetch_add(1, Ordering::AcqRel);
        counters.submitted.fetch_add(1, Ordering::Relaxed);
        Ok(Ticket {
            _permit: permit,
            counters,
        })
    }

    // Primitive file operations, one per system call, dispatched to the backend. `File` builds
    // the looping (short read/write) logic on top of them, the same for both backends.

    pub(crate) async fn read(
        &self,
        fd: &Arc<FileState>,
        buf: BytesMut,
        offset: u64,
    ) -> BufResult<usize, BytesMut> {
        let ticket = match self.ticket_for(fd, 1).await {
            Ok(t) => t,
            Err(e) => return (Err(e), buf),
        };
        #[cfg(feature = "sim")]
        if let Some(sim) = fd.sim() {
            let _ticket = ticket;
            return sim.read(buf, offset).await;
        }
        match &self.shared.engine {
            #[cfg(target_os = "linux")]
            Engine::Uring(ring) => {
                crate::uring::ops::read(ring, ticket, fd.clone(), buf, offset).await
            }
            _ => {
                let fd = fd.clone();
                self.shared
                    .pool
                    .run(ticket, move || sys::pread(fd.file(), buf, offset))
                    .await
            }
        }
    }

    pub(crate) async fn write(
        &self,
        fd: &Arc<FileState>,
        buf: Bytes,
        offset: u64,
    ) -> BufResult<usize, Bytes> {
        let ticket = match self.ticket_for(fd, 1).await {
            Ok(t) => t,
            Err(e) => return (Err(e), buf),
        };
        #[cfg(feature = "sim")]
        if let Some(sim) = fd.sim() {
            let _ticket = ticket;
            let (res, mut bufs) = sim.writev(vec![buf], offset, None).await;
            return (res, bufs.pop().unwrap_or_default());
        }
        match &self.shared.engine {
            #[cfg(target_os = "linux")]
            Engine::Uring(ring) => {
                crate::uring::ops::write(ring, ticket, fd.clone(), buf, offset).await
            }
            _ => {
                let fd = fd.clone();
                self.shared
                    .pool
                    .run(ticket, move || sys::pwrite(fd.file(), buf, offset))
                    .await
            }
        }
    }

    pub(crate) async fn writev_all(
        &self,
        fd: &Arc<FileState>,
        bufs: Vec<Bytes>,
        offset: u64,
        sync: Option<SyncKind>,
    ) -> BufResult<usize, Vec<Bytes>> {
        if let Err(e) = sys::check_range(offset, bufs.iter().map(|b| b.len() as u64).sum()) {
            return (Err(e), bufs);
        }
        match &self.shared.engine {
            #[cfg(target_os = "linux")]
            Engine::Uring(ring) => {
                crate::uring::ops::writev_all(self, ring, fd, bufs, offset, sync).await
            }
            #[cfg(feature = "sim")]
            Engine::Sim(_) => {
                let ticket = match self.ticket_for(fd, 1).await {
                    Ok(t) => t,
                    Err(e) => return (Err(e), bufs),
                };
                let _ticket = ticket;
                match fd.sim() {
                    Some(sim) => sim.writev(bufs, offset, sync).await,
                    None => (Err(io::Error::from_raw_os_error(libc::EBADF)), bufs),
                }
            }
            Engine::Pool => {
                let ticket = match self.ticket_for(fd, 1).await {
                    Ok(t) => t,
                    Err(e) => return (Err(e), bufs),
                };
                let fd = fd.clone();
                self.shared
                    .pool
                    .run(ticket, move || {
                        sys::pwritev_all(fd.file(), bufs, offset, sync)
                    })
                    .await
            }
        }
    }

    pub(crate) async fn fsync(&self, fd: &Arc<FileState>, kind: SyncKind) -> io::Result<()> {
        let ticket = self.ticket_for(fd, 1).await?;
        #[cfg(feature = "sim")]
        if let Some(sim) = fd.sim() {
            let _ticket = ticket;
            return sim.sync().await;
        }
        match &self.shared.engine {
            #[cfg(target_os = "linux")]
            Engine::Uring(ring) => crate::uring::ops::fsync(ring, ticket, fd.clone(), kind).await,
            _ => {
                let fd = fd.clone();
                self.shared
                    .pool
                    .run(ticket, move || sys::fsync(fd.file(), kind))
                    .await
            }
        }
    }

    pub(crate) async fn fallocate(
        &self,
        fd: &Arc<FileState>,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        let ticket = self.ticket_for(fd, 1).await?;
        #[cfg(feature = "sim")]
        if let Some(sim) = fd.sim() {
            let _ticket = ticket;
            return sim.allocate(offset, len).await;
        }
        match &self.shared.engine {
            #[cfg(target_os = "linux")]
            Engine::Uring(ring) => {
                crate::uring::ops::fallocate(ring, ticket, fd.clone(), offset, len).await
            }
            _ => {
                let fd = fd.clone();
                self.shared
                    .pool
                    .run(ticket, move || sys::fallocate(fd.file(), offset, len))
                    .await
            }
        }
    }

    pub(crate) async fn ftruncate(&self, fd: &Arc<FileState>, len: u64) -> io::Result<()> {
        sys::check_range(len, 0)?;
        let ticket = self.ticket_for(fd, 1).await?;
        #[cfg(feature = "sim")]
        if let Some(sim) = fd.sim() {
            let _ticket = ticket;
            return sim.set_len(len).await;
        }
        match &self.shared.engine {
            #[cfg(target_os = "linux")]
            Engine::Uring(ring) if ring.has_ftruncate() => {
                crate::uring::ops::ftruncate(ring, ticket, fd.clone(), len).await
            }
            _ => {
                let fd = fd.clone();
                self.shared
                    .pool
                    .run(ticket, move || fd.file().set_len(len))
                    .await
            }
        }
    }

    pub(crate) async fn file_len(&self, fd: &Arc<FileState>) -> io::Result<u64> {
        let ticket = self.ticket_for(fd, 1).await?;
        #[cfg(feature = "sim")]
        if let Some(sim) = fd.sim() {
            let _ticket = ticket;
            return sim.len().await;
        }
        match &self.shared.engine {
            #[cfg(target_os = "linux")]
            Engine::Uring(ring) => crate::uring::ops::file_len(ring, ticket, fd.clone()).await,
            _ => {
                let fd = fd.clone();
                self.shared
                    .pool
                    .run(ticket, move || Ok(fd.file().metadata()?.len()))
                    .await
            }
        }
    }

    pub(crate) async fn close(&self, fd: std::os::fd::OwnedFd) -> io::Result<()> {
        let ticket = self.ticket(1).await?;
        match &self.shared.engine {
            #[cfg(target_os = "linux")]
            Engine::Uring(ring) => crate::uring::ops::close(ring, ticket, fd).await,
            _ => self.shared.pool.run(ticket, move || sys::close(fd)).await,
        }
    }

    /// A ticket for an operation on an open file; `EBADF` once the file was closed.
    pub(crate) async fn ticket_for(&self, fd: &FileState, sqes: u32) -> io::Result<Ticket> {
        fd.check_open()?;
        self.ticket(sqes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_parse_and_print() {
        for b in [Backend::Auto, Backend::IoUring, Backend::ThreadPool] {
            assert_eq!(b.to_string().parse::<Backend>().unwrap(), b);
        }
        assert_eq!("IO-URING".parse::<Backend>().unwrap(), Backend::IoUring);
        assert_eq!(" pool ".parse::<Backend>().unwrap(), Backend::ThreadPool);
        assert_eq!(
            "epoll".parse::<Backend>().unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn options_out_of_range_are_rejected() {
        for opts in [
            DriverOptions::default().queue_depth(1),
            DriverOptions::default().queue_depth(DriverOptions::MAX_QUEUE_DEPTH + 1),
            DriverOptions::default().pool_threads(0),
        ] {
            assert_eq!(
                IoDriver::new(opts).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        }
    }
}
