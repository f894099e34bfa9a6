//! A snapshot as a file on the node's disk, read and written through ringtide's I/O executor
//! (io_uring or the thread pool), seen by openraft as tokio's `AsyncRead + AsyncWrite +
//! AsyncSeek`.
//!
//! PLACEHOLDER: the API below is the contract; the bodies are to be written.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use ringtide::platform::IoDriver;
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// A snapshot file: written and read sequentially (or after a seek) by openraft and by the state
/// machine, through ringtide's I/O executor.
#[derive(Debug)]
pub struct SnapshotFile {
    path: PathBuf,
    inner: io::Cursor<Vec<u8>>,
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
    /// Dropping the future may leave an empty file at `path`.
    pub async fn create(driver: &IoDriver, path: &Path) -> io::Result<SnapshotFile> {
        let _ = driver;
        Ok(SnapshotFile {
            path: path.to_path_buf(),
            inner: io::Cursor::new(Vec::new()),
        })
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
        let _ = driver;
        Ok(SnapshotFile {
            path: path.to_path_buf(),
            inner: io::Cursor::new(Vec::new()),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes what is buffered and makes the file durable (fdatasync).
    ///
    /// # Errors
    ///
    /// The system's error.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped, buffered bytes may or may not be written.
    pub async fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// The file's length, counting what is buffered.
    ///
    /// # Errors
    ///
    /// The system's error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn len(&self) -> io::Result<u64> {
        Ok(self.inner.get_ref().len() as u64)
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.inner).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.inner).poll_complete(cx)
    }
}
