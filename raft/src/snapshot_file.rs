//! A snapshot as a file on the node's disk, read and written through ringtide's I/O executor
//! (io_uring or the thread pool), seen by openraft as tokio's `AsyncRead + AsyncWrite +
//! AsyncSeek`.
//!
//! openraft moves a snapshot around as a `Box` of this type: the leader reads it in chunks (a
//! seek, then reads), a follower writes the chunks it receives into a fresh one (a seek to each
//! chunk's offset, then a write) and shuts it down, and the state machine reads it back from the
//! start.
//!
//! The poll-based traits sit over the executor's async calls ([`File::read_at`],
//! [`File::write_all_at`], [`File::sync_data`]): at most one such call is in flight, kept in the
//! struct as a boxed future that owns a clone of the [`File`]. A call whose caller went away (a
//! dropped `read` or `flush` future) is driven to its end by the next poll of any kind, before
//! that poll does anything else, so calls never overlap and their effects land in order.
//!
//! Writes gather in a buffer (up to [`WRITE_BUFFER`]) whose bytes all go at one offset: the
//! position always equals that offset plus the buffer's length, because everything that moves
//! the position otherwise (a seek, a read) writes the buffer out first. Reads fill a read-ahead
//! buffer (at least [`READ_AHEAD`]) that every write drops, so it never holds stale bytes.

use std::fmt;
use std::future::{Future, poll_fn};
use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use ringtide::platform::{File, IoDriver, OpenOptions};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// The most bytes writes gather before they are written to the file.
const WRITE_BUFFER: usize = 1 << 20;

/// The fewest bytes a read from the file asks for (the rest is kept for the next reads).
const READ_AHEAD: usize = 256 << 10;

/// The most bytes one read from the file asks for, however large the caller's buffer.
const MAX_READ: usize = 4 << 20;

/// The largest offset a file can have (`off_t` is signed).
const MAX_OFFSET: u64 = i64::MAX.unsigned_abs();

/// The call in flight on the file.
type Op = Pin<Box<dyn Future<Output = Done> + Send>>;

/// How a call on the file ended, with what it owned.
enum Done {
    /// A read at `offset`; `buf` holds what it read.
    Read {
        offset: u64,
        result: io::Result<()>,
        buf: BytesMut,
    },
    /// A write of `data` at `offset`.
    Write {
        offset: u64,
        result: io::Result<()>,
        data: Bytes,
    },
    /// An `fdatasync`.
    Sync(io::Result<()>),
}

/// A snapshot file: written and read sequentially (or after a seek) by openraft and by the state
/// machine, through ringtide's I/O executor.
///
/// Writes are buffered (up to 1 MiB) and reach the file when the buffer fills, on `flush`, before
/// a read, when a seek completes, in [`sync`](Self::sync) and on `shutdown` (which also syncs,
/// `fdatasync`, and leaves the file open for reading). A write to the file that fails keeps its
/// bytes buffered, so the next flush writes them again. **Bytes still buffered when the value is
/// dropped are lost**: nothing is written in `drop`; shut it down or sync it first.
///
/// Reads read ahead (256 KiB or more at a time). The position and the length are tracked here:
/// the length starts as the file's length at open and grows with every write, buffered or not,
/// so [`len`](Self::len) and `SeekFrom::End` need no I/O; a read at or past the length returns no
/// bytes, and a seek past it does not lengthen the file (a write there does, with zeros between).
/// A seek to a position before 0 (or past `i64::MAX`) fails with `InvalidInput`.
///
/// It is `Send + Sync + Unpin + 'static`, as openraft's `SnapshotData` must be.
pub struct SnapshotFile {
    path: PathBuf,
    file: File,
    /// The position of the next read or write.
    pos: u64,
    /// The length: the file's at open, grown by every write since (buffered or written).
    len: u64,
    /// Written bytes not yet handed to the file; they go at `write_offset`. While it is not
    /// empty, `write_offset + write_buf.len() == pos`.
    write_buf: Vec<u8>,
    write_offset: u64,
    /// Bytes read ahead and where they start; an empty buffer means the file ended there.
    read_ahead: Option<(u64, Bytes)>,
    /// Where a seek started by `start_seek` and not yet completed goes.
    seek_to: Option<u64>,
    /// The call in flight, if any. In a mutex only to make the type `Sync` (a boxed future is
    /// not): it is reached through `&mut self` alone, with `Mutex::get_mut`, never locked.
    op: Mutex<Option<Op>>,
    /// Whether a write may have reached the file since the last successful `fdatasync`.
    unsynced: bool,
    /// Whether an `fdatasync` failed: the file's state on disk is then unknown, and a later
    /// sync that succeeds would not prove otherwise, so every later sync fails too.
    sync_failed: bool,
}

impl fmt::Debug for SnapshotFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotFile")
            .field("path", &self.path)
            .field("pos", &self.pos)
            .field("len", &self.len)
            .field("buffered", &self.write_buf.len())
            .finish_non_exhaustive()
    }
}

impl SnapshotFile {
    /// Creates the file at `path` (replacing any file there), empty, positioned at 0.
    ///
    /// # Errors
    ///
    /// The system's error.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may leave an empty file at `path` (a file that was there truncated).
    pub async fn create(driver: &IoDriver, path: &Path) -> io::Result<SnapshotFile> {
        let options = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true);
        let file = driver.open(path, &options).await?;
        Ok(SnapshotFile::new(path, file, 0))
    }

    /// Opens the existing file at `path` for reading (and writing), positioned at 0.
    ///
    /// # Errors
    ///
    /// The system's error (`NotFound` when there is no file).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn open(driver: &IoDriver, path: &Path) -> io::Result<SnapshotFile> {
        let options = OpenOptions::new().read(true).write(true);
        let file = driver.open(path, &options).await?;
        let len = file.len().await?;
        Ok(SnapshotFile::new(path, file, len))
    }

    fn new(path: &Path, file: File, len: u64) -> SnapshotFile {
        SnapshotFile {
            path: path.to_path_buf(),
            file,
            pos: 0,
            len,
            write_buf: Vec::new(),
            write_offset: 0,
            read_ahead: None,
            seek_to: None,
            op: Mutex::new(None),
            // A created file's truncation, or another handle's writes to an opened one: the
            // first sync always syncs.
            unsynced: true,
            sync_failed: false,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes what is buffered and makes the file durable (fdatasync). The same as tokio's
    /// `shutdown`; the file stays open and usable.
    ///
    /// Once a sync has failed, this fails every time: the file's state on disk is unknown, and a
    /// sync that succeeds after a failed one does not prove otherwise.
    ///
    /// # Errors
    ///
    /// The system's error; a write's error leaves the bytes buffered for the next flush.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped, buffered bytes may or may not be written, and nothing is known
    /// to be durable. The write or sync it started still ends, at the latest in the next use of
    /// the file.
    pub async fn sync(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_sync(cx)).await
    }

    /// The file's length, counting what is buffered.
    ///
    /// # Errors
    ///
    /// None: the length is tracked, not asked of the system (the `Result` leaves room for a
    /// version that asks).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn len(&self) -> io::Result<u64> {
        // Tracked (see the type's documentation): no I/O.
        Ok(self.len)
    }

    /// The slot of the call in flight.
    fn op_slot(&mut self) -> &mut Option<Op> {
        // Never locked, so never poisoned; a poisoned mutex would hold a valid slot anyway.
        self.op.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drives the call in flight, if any, to its end and takes in its outcome.
    fn poll_op(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(op) = self.op_slot() else {
            return Poll::Ready(Ok(()));
        };
        let done = ready!(op.as_mut().poll(cx));
        *self.op_slot() = None;
        Poll::Ready(self.finish(done))
    }

    /// Takes in the outcome of a call.
    fn finish(&mut self, done: Done) -> io::Result<()> {
        match done {
            Done::Read {
                offset,
                result,
                buf,
            } => {
                result?;
                self.read_ahead = Some((offset, buf.freeze()));
                Ok(())
            }
            Done::Write {
                offset,
                result,
                data,
            } => {
                // Even a failed write may have written a part.
                self.unsynced = true;
                if result.is_err() && self.write_buf.is_empty() {
                    // Buffered again, to be written again by the next flush. Nothing was
                    // buffered meanwhile: every poll ends the call in flight before it buffers.
                    self.write_buf = Vec::from(data);
                    self.write_offset = offset;
                }
                result
            }
            Done::Sync(result) => {
                match &result {
                    Ok(()) => self.unsynced = false,
                    Err(_) => self.sync_failed = true,
                }
                result
            }
        }
    }

    /// Ends the call in flight, then writes what is buffered.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_op(cx))?;
            if self.write_buf.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let data = Bytes::from(std::mem::take(&mut self.write_buf));
            let offset = self.write_offset;
            let file = self.file.clone();
            *self.op_slot() = Some(Box::pin(async move {
                let (result, data) = file.write_all_at(data, offset).await;
                Done::Write {
                    offset,
                    result,
                    data,
                }
            }));
        }
    }

    /// Completes the pending seek, if any: writes what is buffered, then moves. A seek whose
    /// write fails is dropped and the position stays.
    fn poll_seek(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        if self.seek_to.is_none() {
            ready!(self.poll_op(cx))?;
            return Poll::Ready(Ok(self.pos));
        }
        let written = ready!(self.poll_write_out(cx));
        let to = self.seek_to.take();
        written?;
        if let Some(to) = to {
            self.pos = to;
        }
        Poll::Ready(Ok(self.pos))
    }

    /// Writes what is buffered, then syncs (unless nothing was written since the last sync).
    fn poll_sync(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_write_out(cx))?;
            if self.sync_failed {
                return Poll::Ready(Err(io::Error::other(format!(
                    "{}: an earlier fdatasync failed, the file's state on disk is unknown",
                    self.path.display()
                ))));
            }
            if !self.unsynced {
                return Poll::Ready(Ok(()));
            }
            let file = self.file.clone();
            *self.op_slot() = Some(Box::pin(async move { Done::Sync(file.sync_data().await) }));
        }
    }

    /// Starts a read at the position (which is before the length) of at least `want` bytes.
    fn start_read(&mut self, want: usize) {
        let left = self.len.saturating_sub(self.pos);
        let size = want.clamp(READ_AHEAD, MAX_READ);
        let size = usize::try_from(left).map_or(size, |left| size.min(left));
        let offset = self.pos;
        let file = self.file.clone();
        self.read_ahead = None;
        *self.op_slot() = Some(Box::pin(async move {
            let mut buf = BytesMut::with_capacity(size);
            loop {
                let (result, back) = file.read_at(buf, offset).await;
                buf = back;
                match result {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    result => {
                        return Done::Read {
                            offset,
                            result: result.map(drop),
                            buf,
                        };
                    }
                }
            }
        }));
    }

    /// Copies into `out` what the read-ahead buffer holds at the position. `None` if it holds
    /// nothing there; `Some(0)` if the file ended there.
    fn read_buffered(&mut self, out: &mut ReadBuf<'_>) -> Option<usize> {
        let (offset, data) = self.read_ahead.as_ref()?;
        let skip = usize::try_from(self.pos.checked_sub(*offset)?).ok()?;
        if data.is_empty() && skip == 0 {
            return Some(0);
        }
        let held = data.get(skip..).filter(|rest| !rest.is_empty())?;
        let left = usize::try_from(self.len.saturating_sub(self.pos)).unwrap_or(usize::MAX);
        let n = held.len().min(out.remaining()).min(left);
        out.put_slice(&held[..n]);
        self.pos += n as u64;
        Some(n)
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_seek(cx))?;
        // Reads see every write: the buffered ones go to the file first.
        ready!(this.poll_write_out(cx))?;
        loop {
            if buf.remaining() == 0 || this.pos >= this.len {
                return Poll::Ready(Ok(()));
            }
            if this.read_buffered(buf).is_some() {
                return Poll::Ready(Ok(()));
            }
            this.start_read(buf.remaining());
            ready!(this.poll_op(cx))?;
        }
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_seek(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let contiguous = this.write_offset + this.write_buf.len() as u64 == this.pos;
        if this.write_buf.len() >= WRITE_BUFFER || !(this.write_buf.is_empty() || contiguous) {
            ready!(this.poll_write_out(cx))?;
        }
        let n = data.len().min(WRITE_BUFFER - this.write_buf.len());
        let Some(end) = this
            .pos
            .checked_add(n as u64)
            .filter(|&end| end <= MAX_OFFSET)
        else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: a write at offset {} goes past the largest file offset",
                    this.path.display(),
                    this.pos
                ),
            )));
        };
        if this.write_buf.is_empty() {
            this.write_offset = this.pos;
        }
        this.write_buf.extend_from_slice(&data[..n]);
        this.read_ahead = None;
        this.pos = end;
        this.len = this.len.max(end);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_write_out(cx)
    }

    /// Writes what is buffered and syncs (`fdatasync`). The file stays open: it can still be
    /// read (openraft reads a received snapshot after shutting it down).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_sync(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    /// Starts a seek; the buffered writes are written and the position moves when it completes
    /// (`poll_complete`, or the next read or write).
    ///
    /// A position before 0 or past the largest file offset is `InvalidInput`; starting a seek
    /// while another is pending is an error of kind `Other` (as tokio's files do).
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        if this.seek_to.is_some() {
            return Err(io::Error::other(
                "a seek is pending: call poll_complete before start_seek",
            ));
        }
        let to = match position {
            SeekFrom::Start(to) => Some(to),
            SeekFrom::Current(delta) => this.pos.checked_add_signed(delta),
            SeekFrom::End(delta) => this.len.checked_add_signed(delta),
        };
        match to.filter(|&to| to <= MAX_OFFSET) {
            Some(to) => {
                this.seek_to = Some(to);
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: seek to {position:?} (position {}, length {}) goes before 0 or past \
                     the largest file offset",
                    this.path.display(),
                    this.pos,
                    this.len
                ),
            )),
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        self.get_mut().poll_seek(cx)
    }
}

#[cfg(test)]
mod tests;
