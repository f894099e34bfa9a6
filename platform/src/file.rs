//! Open files and their operations.
//!
//! A [`File`] is a cheap handle (clone it to share a file between tasks). The descriptor lives in a
//! shared [`FileState`] that every in-flight operation holds too, so the descriptor number is never
//! closed — and never reused by the system for another file — while an operation may still use it.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};

use crate::sys::{self, SyncKind};
use crate::{BufResult, IoDriver};

/// How to open a file; the same meaning as `std::fs::OpenOptions`, plus `O_DIRECT`.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    create: bool,
    create_new: bool,
    truncate: bool,
    direct: bool,
    directory: bool,
    path_only: bool,
    mode: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// Options that open nothing yet: set at least `read` or `write`.
    pub fn new() -> OpenOptions {
        OpenOptions {
            read: false,
            write: false,
            create: false,
            create_new: false,
            truncate: false,
            direct: false,
            directory: false,
            path_only: false,
            mode: 0o644,
        }
    }

    /// Open for reading.
    pub fn read(mut self, read: bool) -> Self {
        self.read = read;
        self
    }

    /// Open for writing.
    pub fn write(mut self, write: bool) -> Self {
        self.write = write;
        self
    }

    /// Create the file if it does not exist (needs `write`).
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Create the file, failing with `AlreadyExists` if it exists (needs `write`).
    pub fn create_new(mut self, create_new: bool) -> Self {
        self.create_new = create_new;
        self
    }

    /// Truncate the file to length 0 on open (needs `write`).
    pub fn truncate(mut self, truncate: bool) -> Self {
        self.truncate = truncate;
        self
    }

    /// Bypass the page cache (`O_DIRECT`). Buffers, offsets and lengths must then be aligned to
    /// the device's logical block size (see [`aligned_bytes_mut`](crate::aligned_bytes_mut)), or
    /// operations fail with `InvalidInput` (`EINVAL`).
    pub fn direct(mut self, direct: bool) -> Self {
        self.direct = direct;
        self
    }

    /// Require a directory (`O_DIRECTORY`); used to sync a directory.
    pub fn directory(mut self, directory: bool) -> Self {
        self.directory = directory;
        self
    }

    /// Open only a reference to the path (`O_PATH`): no read or write access is needed or
    /// given. Used to check that a directory exists.
    pub(crate) fn path_only(mut self, path_only: bool) -> Self {
        self.path_only = path_only;
        self
    }

    /// Permission bits of a created file, before the umask. Default: `0o644`.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// The `open(2)` flags and mode.
    pub(crate) fn flags(&self) -> io::Result<(i32, u32)> {
        let invalid = |msg: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, msg.to_string()));
        let mut flags = libc::O_CLOEXEC;
        if self.path_only {
            #[cfg(target_os = "linux")]
            return Ok((
                flags | libc::O_PATH | if self.directory { libc::O_DIRECTORY } else { 0 },
                0,
            ));
        }
        flags |= match (self.read, self.write) {
            (true, false) => libc::O_RDONLY,
            (false, true) => libc::O_WRONLY,
            (true, true) => libc::O_RDWR,
            (false, false) => return invalid("open options ask for neither read nor write"),
        };
        if (self.create || self.create_new || self.truncate) && !self.write {
            return invalid("create, create_new and truncate need write access");
        }
        if self.create_new {
            flags |= libc::O_CREAT | libc::O_EXCL;
        } else if self.create {
            flags |= libc::O_CREAT;
        }
        if self.truncate {
            flags |= libc::O_TRUNC;
        }
        if self.directory {
            flags |= libc::O_DIRECTORY;
        }
        if self.direct {
            #[cfg(target_os = "linux")]
            {
                flags |= libc::O_DIRECT;
            }
            #[cfg(not(target_os = "linux"))]
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "O_DIRECT is only supported on Linux",
            ));
        }
        Ok((flags, self.mode))
    }

    #[cfg(feature = "sim")]
    pub(crate) fn sim(&self) -> io::Result<crate::sim::SimOpen> {
        self.flags()?;
        Ok(crate::sim::SimOpen {
            read: self.read,
            write: self.write,
            create: self.create,
            create_new: self.create_new,
            truncate: self.truncate,
            directory: self.directory || self.path_only,
            direct: self.direct,
        })
    }
}

/// The descriptor shared by a file's handles and its in-flight operations.
pub(crate) struct FileState {
    handle: Handle,
    closed: AtomicBool,
}

/// A real descriptor, or a file of the simulated disk.
enum Handle {
    Os(fs::File),
    #[cfg(feature = "sim")]
    Sim(crate::sim::SimFile),
}

impl FileState {
    pub(crate) fn new(file: fs::File) -> Arc<FileState> {
        Arc::new(FileState {
            handle: Handle::Os(file),
            closed: AtomicBool::new(false),
        })
    }

    #[cfg(feature = "sim")]
    pub(crate) fn new_sim(file: crate::sim::SimFile) -> Arc<FileState> {
        Arc::new(FileState {
            handle: Handle::Sim(file),
            closed: AtomicBool::new(false),
        })
    }

    /// The real descriptor. Only the io_uring and pool engines call it, and they only ever see
    /// files they opened themselves.
    pub(crate) fn file(&self) -> &fs::File {
        match &self.handle {
            Handle::Os(file) => file,
            #[cfg(feature = "sim")]
            Handle::Sim(_) => unreachable!("a simulated file reached a real I/O engine"),
        }
    }

    /// The simulated file, if this is one.
    #[cfg(feature = "sim")]
    pub(crate) fn sim(&self) -> Option<&crate::sim::SimFile> {
        match &self.handle {
            Handle::Sim(file) => Some(file),
            Handle::Os(_) => None,
        }
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        match &self.handle {
            Handle::Os(file) => file.as_raw_fd(),
            #[cfg(feature = "sim")]
            Handle::Sim(_) => -1,
        }
    }

    pub(crate) fn check_open(&self) -> io::Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(sys::closed_error())
        } else {
            Ok(())
        }
    }
}

/// An open file. Clones share the descriptor; [`close`](File::close) closes it for all of them.
///
/// Every operation takes its buffer by value and returns it with the result, even on error.
/// Reads fill the buffer's spare capacity (`len()..capacity()`).
#[derive(Clone)]
pub struct File {
    driver: IoDriver,
    state: Arc<FileState>,
    path: Arc<Path>,
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("path", &self.path)
            .field("fd", &self.state.raw_fd())
            .finish()
    }
}

impl File {
    pub(crate) fn new(driver: IoDriver, state: Arc<FileState>, path: &Path) -> File {
        File {
            driver,
            state,
            path: Arc::from(path),
        }
    }

    /// The path the file was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The driver this file performs its I/O through.
    pub fn driver(&self) -> &IoDriver {
        &self.driver
    }

    /// Reads once at `offset` into the spare capacity of `buf` and returns the count read, which
    /// may be less than asked for (0 at end of file). The buffer's length grows by that count.
    ///
    /// # Errors
    ///
    /// The system's error; `EBADF` after [`close`](Self::close).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the buffer is dropped (by the driver, once the kernel is done with it) and
    /// nothing on disk changes.
    pub async fn read_at(&self, buf: BytesMut, offset: u64) -> BufResult<usize, BytesMut> {
        self.driver.read(&self.state, buf, offset).await
    }

    /// Fills the whole spare capacity of `buf` from `offset`, retrying short reads.
    ///
    /// # Errors
    ///
    /// `UnexpectedEof` if the file ends first (the buffer then holds what was read); the system's
    /// error; `EBADF` after [`close`](Self::close).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`read_at`](Self::read_at).
    pub async fn read_exact_at(&self, mut buf: BytesMut, offset: u64) -> BufResult<(), BytesMut> {
        if let Err(e) = sys::check_range(offset, (buf.capacity() - buf.len()) as u64) {
            return (Err(e), buf);
        }
        let start = buf.len();
        while buf.len() < buf.capacity() {
            let pos = offset + (buf.len() - start) as u64;
            let (res, back) = self.read_at(buf, pos).await;
            buf = back;
            match res {
                Ok(0) => {
                    let msg = format!(
                        "{}: end of file at offset {pos}, {} bytes short",
                        self.path.display(),
                        buf.capacity() - buf.len()
                    );
                    return (Err(io::Error::new(io::ErrorKind::UnexpectedEof, msg)), buf);
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Writes once at `offset` and returns the count written, which may be short.
    ///
    /// # Errors
    ///
    /// The system's error (`StorageFull` for ENOSPC); `EBADF` after [`close`](Self::close) or on a
    /// file opened read-only.
    ///
    /// # Cancel safety
    ///
    /// Once submitted the write proceeds whether or not the future is still there; its outcome is
    /// then unknown to the caller (read the file back to learn it).
    pub async fn write_at(&self, buf: Bytes, offset: u64) -> BufResult<usize, Bytes> {
        self.driver.write(&self.state, buf, offset).await
    }

    /// Writes all of `buf` at `offset`, retrying short writes.
    ///
    /// # Errors
    ///
    /// As [`write_at`](Self::write_at); `WriteZero` if the system accepts nothing.
    ///
    /// # Cancel safety
    ///
    /// As [`write_at`](Self::write_at): a dropped call may have written a prefix of `buf`.
    pub async fn write_all_at(&self, buf: Bytes, offset: u64) -> BufResult<(), Bytes> {
        if let Err(e) = sys::check_range(offset, buf.len() as u64) {
            return (Err(e), buf);
        }
        let mut done = 0usize;
        while done < buf.len() {
            let (res, _) = self.write_at(buf.slice(done..), offset + done as u64).await;
            match res {
                Ok(0) => return (Err(io::Error::from(io::ErrorKind::WriteZero)), buf),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Writes every buffer of `bufs`, back to back from `offset`, in as few submissions as the
    /// system allows (one `writev` of up to 1024 buffers), retrying short writes. Returns the total
    /// count written.
    ///
    /// # Errors
    ///
    /// As [`write_all_at`](Self::write_all_at).
    ///
    /// # Cancel safety
    ///
    /// As [`write_at`](Self::write_at): a dropped call may have written a prefix.
    pub async fn writev_at(&self, bufs: Vec<Bytes>, offset: u64) -> BufResult<usize, Vec<Bytes>> {
        self.driver
            .writev_all(&self.state, bufs, offset, None)
            .await
    }

    /// Writes every buffer of `bufs` from `offset` and then `fdatasync`s, as one submission: on
    /// io_uring the write is linked to the sync (`IOSQE_IO_LINK`), on the pool both run in one job.
    /// When it returns `Ok`, the data is durable.
    ///
    /// # Errors
    ///
    /// As [`write_all_at`](Self::write_all_at), and the sync's error. A failed sync means the
    /// data's state on disk is unknown: do not retry the sync and trust it (see "fsyncgate");
    /// treat the file as failed.
    ///
    /// # Cancel safety
    ///
    /// Once submitted, the write and sync proceed; a dropped call may have written a prefix and
    /// promises nothing about durability.
    pub async fn writev_sync_at(
        &self,
        bufs: Vec<Bytes>,
        offset: u64,
    ) -> BufResult<usize, Vec<Bytes>> {
        self.driver
            .writev_all(&self.state, bufs, offset, Some(SyncKind::Data))
            .await
    }

    /// Writes every buffer of `bufs` from `offset` with `RWF_DSYNC`: when it returns `Ok`, the
    /// written range is durable (data and the metadata needed to read it back). One operation,
    /// not a write and a sync: on io_uring a single request instead of two linked ones.
    ///
    /// Unlike [`writev_sync_at`](Self::writev_sync_at), earlier writes to other ranges of the file
    /// are **not** made durable: use this when everything written before is already synced.
    /// Off Linux it falls back to a write followed by `fdatasync`.
    ///
    /// # Errors
    ///
    /// As [`writev_sync_at`](Self::writev_sync_at).
    ///
    /// # Cancel safety
    ///
    /// As [`writev_sync_at`](Self::writev_sync_at).
    pub async fn writev_dsync_at(
        &self,
        bufs: Vec<Bytes>,
        offset: u64,
    ) -> BufResult<usize, Vec<Bytes>> {
        self.driver
            .writev_all(&self.state, bufs, offset, Some(SyncKind::WrittenRange))
            .await
    }

    /// `fdatasync`: makes written data durable, with the metadata needed to read it back (such as
    /// a grown length).
    ///
    /// # Errors
    ///
    /// The system's error. As with [`writev_sync_at`](Self::writev_sync_at), a failed sync must not
    /// be retried and trusted.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in that nothing is lost; a dropped call promises no durability.
    pub async fn sync_data(&self) -> io::Result<()> {
        self.driver.fsync(&self.state, SyncKind::Data).await
    }

    /// `fsync`: makes written data and all metadata durable.
    ///
    /// # Errors
    ///
    /// As [`sync_data`](Self::sync_data).
    ///
    /// # Cancel safety
    ///
    /// As [`sync_data`](Self::sync_data).
    pub async fn sync_all(&self) -> io::Result<()> {
        self.driver.fsync(&self.state, SyncKind::All).await
    }

    /// Allocates disk space for `offset..offset + len` (`fallocate` mode 0), extending the file's
    /// length to cover it. Later writes into the range cannot fail for lack of space.
    ///
    /// # Errors
    ///
    /// `StorageFull` when the disk has no room; the system's error (e.g. `Unsupported` on a file
    /// system without fallocate).
    ///
    /// # Cancel safety
    ///
    /// Once submitted the allocation proceeds; check [`len`](Self::len) to learn its outcome.
    pub async fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.driver.fallocate(&self.state, offset, len).await
    }

    /// Sets the file's length, cutting or extending (with zeros) as needed.
    ///
    /// # Errors
    ///
    /// The system's error; `EBADF`/`InvalidInput` on a file not opened for writing.
    ///
    /// # Cancel safety
    ///
    /// Once submitted the change proceeds; check [`len`](Self::len) to learn its outcome.
    pub async fn set_len(&self, len: u64) -> io::Result<()> {
        self.driver.ftruncate(&self.state, len).await
    }

    /// The file's current length in bytes.
    ///
    /// # Errors
    ///
    /// The system's error; `EBADF` after [`close`](Self::close).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn len(&self) -> io::Result<u64> {
        self.driver.file_len(&self.state).await
    }

    /// Tries to take an exclusive advisory lock on the file (`flock(LOCK_EX | LOCK_NB)`) without
    /// waiting: `Ok(true)` if taken, `Ok(false)` if another open file description holds it (in
    /// this process or another). The lock is released when the descriptor is closed. A plain
    /// system call that never waits for the disk, so it is not asynchronous.
    ///
    /// # Errors
    ///
    /// The system's error; `EBADF` after [`close`](Self::close).
    pub fn try_lock(&self) -> io::Result<bool> {
        self.state.check_open()?;
        #[cfg_attr(
            not(feature = "sim"),
            allow(
                clippy::infallible_destructuring_match,
                reason = "a second variant exists with the `sim` feature"
            )
        )]
        let file = match &self.state.handle {
            Handle::Os(file) => file,
            #[cfg(feature = "sim")]
            Handle::Sim(file) => return file.try_lock(),
        };
        match file.try_lock() {
            Ok(()) => Ok(true),
            Err(fs::TryLockError::WouldBlock) => Ok(false),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Closes the file for this handle and all its clones: their later operations fail with
    /// `EBADF`. If no operation is in flight and no clone is left, the descriptor is closed now,
    /// through the backend, and the error of `close(2)` is returned. Otherwise it is closed when
    /// the last holder (a clone, or an operation still in flight) drops it, and an error of
    /// `close(2)` then is not reported.
    ///
    /// # Errors
    ///
    /// The error `close(2)` returns (rare on local file systems; data errors are to be learned from
    /// a sync, not from close).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the descriptor is closed either way.
    pub async fn close(self) -> io::Result<()> {
        self.state.closed.store(true, Ordering::Release);
        let File { driver, state, .. } = self;
        match Arc::try_unwrap(state).map(|s| s.handle) {
            Ok(Handle::Os(file)) => driver.close(OwnedFd::from(file)).await,
            #[cfg(feature = "sim")]
            Ok(Handle::Sim(_)) => Ok(()),
            Err(_) => Ok(()),
        }
    }
}
