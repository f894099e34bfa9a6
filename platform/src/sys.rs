//! Blocking system calls for the thread pool, and the helpers both backends share: open flags,
//! iovec building and error mapping.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::{Bytes, BytesMut};

use crate::BufResult;
use crate::driver::{DirEntry, EntryKind};

/// The largest number of iovecs one `writev` accepts on Linux (`UIO_MAXIOV`).
pub(crate) const IOV_MAX: usize = 1024;

/// The largest byte count Linux moves in one read or write call (`MAX_RW_COUNT`); larger requests
/// come back short anyway, so they are cut here.
pub(crate) const MAX_RW_BYTES: usize = 0x7fff_f000;

/// Which sync follows a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncKind {
    /// `fdatasync`: the data and the metadata needed to read it back.
    Data,
    /// `fsync`: data and all metadata.
    All,
    /// The write itself carries `RWF_DSYNC`: only the written range is made durable, with no
    /// second operation (on io_uring, one request instead of a write linked to an fsync).
    WrittenRange,
}

/// The `pwritev2` flags a write with this sync carries.
pub(crate) fn write_flags(sync: Option<SyncKind>) -> i32 {
    match sync {
        #[cfg(target_os = "linux")]
        Some(SyncKind::WrittenRange) => libc::RWF_DSYNC,
        _ => 0,
    }
}

/// Refuses byte ranges the kernel cannot address (`offset + len` above `i64::MAX`). On io_uring
/// an offset of `u64::MAX` would even mean "the file position", which no caller here wants.
pub(crate) fn check_range(offset: u64, len: u64) -> io::Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= i64::MAX as u64 => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "byte range at offset {offset} of length {len} is beyond the largest file offset"
            ),
        )),
    }
}

/// Converts a path to the NUL-terminated form the kernel takes.
pub(crate) fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path {} contains a NUL byte", path.display()),
        )
    })
}

/// Turns a negative errno result (io_uring's convention) into an error.
pub(crate) fn errno_result(res: i32) -> io::Result<u32> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res as u32)
    }
}

/// The error an operation on a closed [`File`](crate::File) returns: `EBADF`, as the system would.
pub(crate) fn closed_error() -> io::Error {
    io::Error::from_raw_os_error(libc::EBADF)
}

/// A position inside a list of buffers: buffer `index`, byte `offset` within it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BufCursor {
    pub(crate) index: usize,
    pub(crate) offset: usize,
}

impl BufCursor {
    /// Moves the cursor forward by `n` bytes.
    pub(crate) fn advance(&mut self, bufs: &[Bytes], mut n: usize) {
        while n > 0 {
            let left = bufs[self.index].len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.index += 1;
            self.offset = 0;
        }
        self.skip_empty(bufs);
    }

    /// Steps over empty buffers so that the cursor rests on data or at the end.
    pub(crate) fn skip_empty(&mut self, bufs: &[Bytes]) {
        while self.index < bufs.len() && bufs[self.index].len() == self.offset {
            self.index += 1;
            self.offset = 0;
        }
    }

    /// True once every byte has been passed.
    pub(crate) fn at_end(&self, bufs: &[Bytes]) -> bool {
        self.index >= bufs.len()
    }

    /// Fills `iovecs` with the data from the cursor on, at most [`IOV_MAX`] entries and
    /// [`MAX_RW_BYTES`] bytes, and returns the byte count they cover.
    pub(crate) fn fill_iovecs(&self, bufs: &[Bytes], iovecs: &mut Vec<libc::iovec>) -> usize {
        iovecs.clear();
        let mut total = 0usize;
        let mut offset = self.offset;
        for buf in &bufs[self.index..] {
            if iovecs.len() == IOV_MAX || total == MAX_RW_BYTES {
                break;
            }
            let data = &buf[offset..];
            offset = 0;
            if data.is_empty() {
                continue;
            }
            let len = data.len().min(MAX_RW_BYTES - total);
            iovecs.push(libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: len,
            });
            total += len;
        }
        total
    }
}

/// `pread` into the spare capacity of `buf`.
pub(crate) fn pread(file: &fs::File, mut buf: BytesMut, offset: u64) -> BufResult<usize, BytesMut> {
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(MAX_RW_BYTES);
    let ptr = spare.as_mut_ptr().cast::<libc::c_void>();
    let res = loop {
        // SAFETY: `ptr..ptr+len` is the spare capacity of `buf`, which this function owns for the
        // whole call; the kernel writes at most `len` bytes there.
        let res = unsafe { libc::pread(file.as_raw_fd(), ptr, len, offset as libc::off_t) };
        if res >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break res;
        }
    };
    if res < 0 {
        return (Err(io::Error::last_os_error()), buf);
    }
    let n = res as usize;
    // SAFETY: the kernel initialized the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    (Ok(n), buf)
}

/// `pwrite` of `buf`, which may be short.
pub(crate) fn pwrite(file: &fs::File, buf: Bytes, offset: u64) -> BufResult<usize, Bytes> {
    let len = buf.len().min(MAX_RW_BYTES);
    let res = loop {
        match file.write_at(&buf[..len], offset) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    (res, buf)
}

/// Writes every byte of `bufs` at `offset` with `pwritev`, resuming after short writes, then syncs
/// if asked: all of it in one job.
pub(crate) fn pwritev_all(
    file: &fs::File,
    bufs: Vec<Bytes>,
    offset: u64,
    sync: Option<SyncKind>,
) -> BufResult<usize, Vec<Bytes>> {
    let mut cursor = BufCursor::default();
    cursor.skip_empty(&bufs);
    let mut iovecs = Vec::with_capacity(bufs.len().min(IOV_MAX));
    let mut written = 0usize;
    while !cursor.at_end(&bufs) {
        cursor.fill_iovecs(&bufs, &mut iovecs);
        // SAFETY: every iovec points into a buffer of `bufs`, which lives until this function
        // returns; the kernel only reads from them.
        #[cfg(target_os = "linux")]
        let res = unsafe {
            libc::pwritev2(
                file.as_raw_fd(),
                iovecs.as_ptr(),
                iovecs.len() as libc::c_int,
                (offset + written as u64) as libc::off_t,
                write_flags(sync),
            )
        };
        // SAFETY: as above.
        #[cfg(not(target_os = "linux"))]
        let res = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iovecs.as_ptr(),
                iovecs.len() as libc::c_int,
                (offset + written as u64) as libc::off_t,
            )
        };
        if res < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return (Err(err), bufs);
        }
        if res == 0 {
            return (Err(io::Error::from(io::ErrorKind::WriteZero)), bufs);
        }
        cursor.advance(&bufs, res as usize);
        written += res as usize;
    }
    // A written-range sync is done by the writes themselves (RWF_DSYNC) where the system has it.
    let after = match sync {
        #[cfg(target_os = "linux")]
        Some(SyncKind::WrittenRange) if written > 0 => None,
        other => other,
    };
    if let Some(kind) = after
        && let Err(e) = fsync(file, kind)
    {
        return (Err(e), bufs);
    }
    (Ok(written), bufs)
}

/// `fdatasync` or `fsync`.
pub(crate) fn fsync(file: &fs::File, kind: SyncKind) -> io::Result<()> {
    match kind {
        SyncKind::Data | SyncKind::WrittenRange => file.sync_data(),
        SyncKind::All => file.sync_all(),
    }
}

/// `fallocate` with mode 0: allocates the range and extends the file size to cover it.
pub(crate) fn fallocate(file: &fs::File, offset: u64, len: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    loop {
        // SAFETY: a plain system call on a descriptor this function borrows; no memory is passed.
        let res = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                0,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if res == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        // Without fallocate, extending the size is the closest portable step.
        let end = offset + len;
        if file.metadata()?.len() < end {
            file.set_len(end)?;
        }
        Ok(())
    }
}

/// `open(2)` with the flags computed by [`OpenOptions`](crate::OpenOptions).
pub(crate) fn open(path: &CString, flags: i32, mode: u32) -> io::Result<fs::File> {
    loop {
        // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
        let fd = unsafe { libc::open(path.as_ptr(), flags, mode as libc::c_uint) };
        if fd >= 0 {
            // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
            return Ok(fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Closes a descriptor and reports the error `close(2)` gives, which dropping a file would hide.
pub(crate) fn close(fd: OwnedFd) -> io::Result<()> {
    let raw = fd.into_raw_fd();
    // SAFETY: `raw` came from an `OwnedFd` that gave up ownership just above, so it is closed
    // exactly once, here. EINTR is not retried: on Linux the descriptor is released anyway.
    let res = unsafe { libc::close(raw) };
    if res == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Lists a directory (there is no io_uring operation for it).
pub(crate) fn read_dir(path: &Path) -> io::Result<Vec<DirEntry>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        out.push(DirEntry {
            path: entry.path(),
            kind: EntryKind::of(entry.file_type()?),
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_walks_across_buffers_and_skips_empty_ones() {
        let bufs = vec![
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"cde"),
        ];
        let mut c = BufCursor::default();
        c.skip_empty(&bufs);
        let mut iov = Vec::new();
        assert_eq!(c.fill_iovecs(&bufs, &mut iov), 5);
        assert_eq!(iov.len(), 2);
        c.advance(&bufs, 1);
        assert_eq!(
            c,
            BufCursor {
                index: 0,
                offset: 1
            }
        );
        c.advance(&bufs, 2);
        assert_eq!(
            c,
            BufCursor {
                index: 2,
                offset: 1
            }
        );
        assert_eq!(c.fill_iovecs(&bufs, &mut iov), 2);
        c.advance(&bufs, 2);
        assert!(c.at_end(&bufs));
    }

    #[test]
    fn iovecs_are_capped_per_submission() {
        let bufs: Vec<Bytes> = (0..IOV_MAX + 10)
            .map(|_| Bytes::from_static(b"x"))
            .collect();
        let mut iov = Vec::new();
        assert_eq!(BufCursor::default().fill_iovecs(&bufs, &mut iov), IOV_MAX);
    }

    #[test]
    fn negative_results_map_to_errno() {
        assert_eq!(
            errno_result(-libc::ENOENT).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(errno_result(7).unwrap(), 7);
    }
}
