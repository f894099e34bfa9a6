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
mod tests {
    use std::io::SeekFrom;

    use futures::FutureExt;
    use ringtide::platform::{Backend, DriverOptions, IoDriver};
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    use super::{READ_AHEAD, SnapshotFile, WRITE_BUFFER};

    /// The drivers of the backends this run covers: both, or the one `RINGTIDE_IO_BACKEND`
    /// names.
    fn drivers() -> Vec<IoDriver> {
        let only = std::env::var(ringtide::platform::BACKEND_ENV)
            .ok()
            .map(|s| {
                s.parse::<Backend>()
                    .expect("RINGTIDE_IO_BACKEND names a backend")
            });
        [Backend::IoUring, Backend::ThreadPool]
            .into_iter()
            .filter(|b| only.is_none_or(|o| o == Backend::Auto || o == *b))
            .map(|b| {
                IoDriver::new(DriverOptions::default().use_env(false).backend(b))
                    .unwrap_or_else(|e| panic!("the {b} driver starts: {e}"))
            })
            .collect()
    }

    /// `len` bytes that repeat nowhere near a power of two.
    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[3]
            })
            .collect()
    }

    /// Odd chunk sizes, some larger than the write buffer.
    const CHUNKS: [usize; 7] = [1, 7, 4093, 65_537, WRITE_BUFFER + 3, 333_333, 12];

    #[test]
    fn is_what_openraft_needs() {
        fn check<T: Send + Sync + Unpin + std::fmt::Debug + 'static>() {}
        check::<SnapshotFile>();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn odd_chunks_read_back_after_shutdown_and_reopen() -> std::io::Result<()> {
        for driver in drivers() {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("snap");
            let data = pattern(3 * WRITE_BUFFER + 12_345, 1);

            let mut f = SnapshotFile::create(&driver, &path).await?;
            assert_eq!(f.path(), path);
            let mut at = 0;
            for size in CHUNKS.iter().cycle() {
                if at == data.len() {
                    break;
                }
                let end = (at + size).min(data.len());
                f.write_all(&data[at..end]).await?;
                at = end;
            }
            assert_eq!(f.len().await?, data.len() as u64);
            f.shutdown().await?;
            drop(f);
            assert_eq!(std::fs::metadata(&path)?.len(), data.len() as u64);

            let mut f = SnapshotFile::open(&driver, &path).await?;
            assert_eq!(f.len().await?, data.len() as u64);
            let mut back = Vec::new();
            f.read_to_end(&mut back).await?;
            assert!(back == data, "{}: read back differs", driver.backend());

            // As openraft's leader reads: seek to each chunk, fill a large buffer.
            let chunk = 3 << 20;
            let mut offset = 0u64;
            let mut back = Vec::new();
            loop {
                f.seek(SeekFrom::Start(offset)).await?;
                let mut buf = Vec::with_capacity(chunk);
                while buf.capacity() > buf.len() {
                    if f.read_buf(&mut buf).await? == 0 {
                        break;
                    }
                }
                if buf.is_empty() {
                    break;
                }
                offset += buf.len() as u64;
                back.extend_from_slice(&buf);
            }
            assert!(back == data, "{}: chunked read differs", driver.backend());
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seeks_from_start_current_and_end() -> std::io::Result<()> {
        for driver in drivers() {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("snap");
            let data = pattern(2 * WRITE_BUFFER + 777, 2);
            let len = data.len() as u64;
            let mut f = SnapshotFile::create(&driver, &path).await?;
            f.write_all(&data).await?;
            f.shutdown().await?;
            drop(f);

            let mut f = SnapshotFile::open(&driver, &path).await?;
            let mut buf = vec![0; 5000];
            assert_eq!(f.seek(SeekFrom::Start(1000)).await?, 1000);
            f.read_exact(&mut buf).await?;
            assert_eq!(buf, data[1000..6000]);

            assert_eq!(f.seek(SeekFrom::Current(-3000)).await?, 3000);
            f.read_exact(&mut buf).await?;
            assert_eq!(buf, data[3000..8000]);

            // Forwards, past what was read ahead.
            let far = READ_AHEAD as i64 * 3;
            assert_eq!(f.seek(SeekFrom::Current(far)).await?, 8000 + far as u64);
            f.read_exact(&mut buf).await?;
            let at = 8000 + far as usize;
            assert_eq!(buf, data[at..at + 5000]);

            assert_eq!(f.seek(SeekFrom::End(-100)).await?, len - 100);
            let mut tail = Vec::new();
            f.read_to_end(&mut tail).await?;
            assert_eq!(tail, data[data.len() - 100..]);

            assert_eq!(f.seek(SeekFrom::End(0)).await?, len);
            assert_eq!(f.stream_position().await?, len);
            assert_eq!(f.seek(SeekFrom::Start(0)).await?, 0);
            f.read_exact(&mut buf[..10]).await?;
            assert_eq!(buf[..10], data[..10]);
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_seek_before_zero_is_invalid_input_and_moves_nothing() -> std::io::Result<()> {
        for driver in drivers() {
            let dir = tempfile::tempdir()?;
            let mut f = SnapshotFile::create(&driver, &dir.path().join("snap")).await?;
            f.write_all(b"0123456789").await?;
            for to in [
                SeekFrom::Current(-11),
                SeekFrom::End(-11),
                SeekFrom::Current(i64::MIN),
                SeekFrom::Start(u64::MAX),
            ] {
                let err = f.seek(to).await.expect_err("a seek out of range fails");
                assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{to:?}");
                assert_eq!(f.stream_position().await?, 10);
            }
            assert_eq!(f.seek(SeekFrom::End(-10)).await?, 0);
            let mut back = Vec::new();
            f.read_to_end(&mut back).await?;
            assert_eq!(back, b"0123456789");
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_written_at_increasing_offsets_read_from_zero() -> std::io::Result<()> {
        for driver in drivers() {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("snap");
            let data = pattern(2 * WRITE_BUFFER + 99, 3);
            // As openraft's follower installs: a seek to a chunk's offset when it is not where
            // the last chunk ended (here: every other chunk), then the chunk.
            let mut f = SnapshotFile::create(&driver, &path).await?;
            let mut offset = 0;
            for (i, chunk) in data.chunks(300_007).enumerate() {
                if i % 2 == 0 {
                    assert_eq!(f.seek(SeekFrom::Start(offset)).await?, offset);
                }
                f.write_all(chunk).await?;
                offset += chunk.len() as u64;
            }
            f.shutdown().await?;
            assert_eq!(f.len().await?, data.len() as u64);
            // The state machine reads it from the start, through the same box.
            f.seek(SeekFrom::Start(0)).await?;
            let mut back = Vec::new();
            f.read_to_end(&mut back).await?;
            assert!(
                back == data,
                "{}: installed snapshot differs",
                driver.backend()
            );
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_seeks_and_reads_interleave_without_flushes() -> std::io::Result<()> {
        for driver in drivers() {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("snap");
            let mut f = SnapshotFile::create(&driver, &path).await?;
            f.write_all(b"abcdefghij").await?;
            // Reading where the writes end: the end of the file.
            assert_eq!(f.read(&mut [0; 4]).await?, 0);
            f.seek(SeekFrom::Start(2)).await?;
            let mut three = [0; 3];
            f.read_exact(&mut three).await?;
            assert_eq!(&three, b"cde");
            // A write right after a read (what was read ahead must not hide it).
            f.write_all(b"XY").await?;
            f.seek(SeekFrom::Current(-4)).await?;
            let mut rest = Vec::new();
            f.read_to_end(&mut rest).await?;
            assert_eq!(rest, b"deXYhij");
            // Backwards over bytes read ahead, then forwards past the end: a hole of zeros.
            f.seek(SeekFrom::Start(0)).await?;
            f.write_all(b"A").await?;
            f.seek(SeekFrom::End(3)).await?;
            f.write_all(b"Z").await?;
            assert_eq!(f.len().await?, 14);
            f.seek(SeekFrom::Start(0)).await?;
            let mut all = Vec::new();
            f.read_to_end(&mut all).await?;
            assert_eq!(all, b"AbcdeXYhij\0\0\0Z");

            // Large: overwrite the middle of a file larger than the buffers, read it all back.
            let mut data = pattern(2 * WRITE_BUFFER, 4);
            f.seek(SeekFrom::Start(0)).await?;
            f.write_all(&data).await?;
            let mid = pattern(WRITE_BUFFER + 5, 5);
            f.seek(SeekFrom::Start(100_000)).await?;
            f.write_all(&mid).await?;
            data[100_000..100_000 + mid.len()].copy_from_slice(&mid);
            f.seek(SeekFrom::Start(0)).await?;
            let mut back = Vec::new();
            f.read_to_end(&mut back).await?;
            assert!(
                back == data,
                "{}: overwritten file differs",
                driver.backend()
            );
            f.shutdown().await?;
            assert_eq!(std::fs::read(&path)?, data);
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn len_counts_buffered_bytes() -> std::io::Result<()> {
        for driver in drivers() {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("snap");
            let mut f = SnapshotFile::create(&driver, &path).await?;
            assert_eq!(f.len().await?, 0);
            f.write_all(&[7; 100]).await?;
            assert_eq!(f.len().await?, 100);
            assert_eq!(std::fs::metadata(&path)?.len(), 0, "still buffered");
            f.flush().await?;
            assert_eq!(f.len().await?, 100);
            assert_eq!(std::fs::metadata(&path)?.len(), 100);
            f.seek(SeekFrom::Start(50)).await?;
            f.write_all(&[8; 10]).await?;
            assert_eq!(f.len().await?, 100);
            f.seek(SeekFrom::End(0)).await?;
            f.write_all(&[9; 5]).await?;
            assert_eq!(f.len().await?, 105);
            f.sync().await?;
            drop(f);

            let f = SnapshotFile::open(&driver, &path).await?;
            assert_eq!(f.len().await?, 105);
            // `create` truncates.
            let f = SnapshotFile::create(&driver, &path).await?;
            assert_eq!(f.len().await?, 0);
            assert_eq!(std::fs::metadata(&path)?.len(), 0);
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_at_or_past_the_end_return_nothing() -> std::io::Result<()> {
        for driver in drivers() {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("snap");
            let mut f = SnapshotFile::create(&driver, &path).await?;
            let mut buf = [0; 16];
            assert_eq!(f.read(&mut buf).await?, 0);
            f.write_all(b"hello").await?;
            f.shutdown().await?;
            drop(f);

            let mut f = SnapshotFile::open(&driver, &path).await?;
            assert_eq!(f.read(&mut buf).await?, 5);
            assert_eq!(&buf[..5], b"hello");
            assert_eq!(f.read(&mut buf).await?, 0);
            f.seek(SeekFrom::End(0)).await?;
            assert_eq!(f.read(&mut buf).await?, 0);
            f.seek(SeekFrom::Start(1 << 40)).await?;
            assert_eq!(f.read(&mut buf).await?, 0);
            // A seek past the end does not lengthen the file.
            assert_eq!(f.len().await?, 5);
            f.seek(SeekFrom::Start(3)).await?;
            let mut rest = Vec::new();
            f.read_to_end(&mut rest).await?;
            assert_eq!(rest, b"lo");

            let missing = SnapshotFile::open(&driver, &dir.path().join("missing")).await;
            assert_eq!(
                missing.expect_err("no such file").kind(),
                std::io::ErrorKind::NotFound
            );
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_futures_leave_a_consistent_file() -> std::io::Result<()> {
        for driver in drivers() {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("snap");
            let data = pattern(3 * WRITE_BUFFER, 6);
            let mut f = SnapshotFile::create(&driver, &path).await?;
            for chunk in data.chunks(WRITE_BUFFER / 3) {
                f.write_all(chunk).await?;
                // Polled once and dropped: the write it may have started goes on in the file.
                let _ = f.flush().now_or_never();
                let _ = f.seek(SeekFrom::Current(0)).now_or_never();
            }
            let _ = f.seek(SeekFrom::Start(0)).now_or_never();
            let _ = f.read(&mut [0; 10]).now_or_never();
            let _ = f.sync().now_or_never();
            f.seek(SeekFrom::Start(0)).await?;
            let mut back = Vec::new();
            f.read_to_end(&mut back).await?;
            assert!(back == data, "{}: read back differs", driver.backend());
            // Dropped with buffered bytes: they are lost, nothing panics.
            f.write_all(b"lost").await?;
            drop(f);
            assert_eq!(std::fs::read(&path)?, data);
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_is_retried_and_a_failed_sync_sticks() -> std::io::Result<()> {
        for driver in drivers() {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("snap");
            let mut f = SnapshotFile::create(&driver, &path).await?;
            f.write_all(b"kept").await?;
            driver.fail_after(0);
            f.flush().await.expect_err("the write fails");
            driver.clear_failures();
            f.flush().await?;
            assert_eq!(std::fs::read(&path)?, b"kept");

            f.write_all(b" and synced").await?;
            f.flush().await?;
            driver.fail_after(0);
            f.shutdown().await.expect_err("the sync fails");
            driver.clear_failures();
            f.sync().await.expect_err("a sync after a failed one fails");
            // Reads still work.
            f.seek(SeekFrom::Start(0)).await?;
            let mut back = Vec::new();
            f.read_to_end(&mut back).await?;
            assert_eq!(back, b"kept and synced");
        }
        Ok(())
    }
}
