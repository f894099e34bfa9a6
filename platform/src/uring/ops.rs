//! One function per io_uring operation. Each hands the ring the resources its entries point into,
//! so that they live until the kernel is done (invariant 1 of the module).

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use io_uring::{opcode, types};

use super::{Ring, Sqes};
use crate::BufResult;
use crate::driver::{IoDriver, Ticket};
use crate::file::FileState;
use crate::sys::{BufCursor, IOV_MAX, MAX_RW_BYTES, SyncKind, errno_result};

const CWD: types::Fd = types::Fd(libc::AT_FDCWD);

/// iovecs pointing into buffers held by the same slot.
struct IoVecs(Vec<libc::iovec>);

// SAFETY: the raw pointers point into `Bytes` that travel with the iovecs in the same slot, and
// `Bytes` is `Send`; the iovecs are never dereferenced by Rust code.
unsafe impl Send for IoVecs {}

// SAFETY: no method reads through the pointers, so shared references to `IoVecs` give access to
// nothing but the (immutable) pointer values; this lets the futures that hold it be `Sync`.
unsafe impl Sync for IoVecs {}

fn fsync_entry(fd: &FileState, kind: SyncKind) -> io_uring::squeue::Entry {
    let flags = match kind {
        SyncKind::Data | SyncKind::WrittenRange => types::FsyncFlags::DATASYNC,
        SyncKind::All => types::FsyncFlags::empty(),
    };
    opcode::Fsync::new(types::Fd(fd.raw_fd()))
        .flags(flags)
        .build()
}

pub(crate) async fn read(
    ring: &Arc<Ring>,
    ticket: Ticket,
    fd: Arc<FileState>,
    buf: BytesMut,
    offset: u64,
) -> BufResult<usize, BytesMut> {
    // SAFETY: the entry points into the spare capacity of the `BytesMut` held by the slot, at most
    // its length; the descriptor is held open by the `FileState` in the slot.
    let op = unsafe {
        ring.submit(ticket, (fd, buf), None, |(fd, buf)| {
            let spare = buf.spare_capacity_mut();
            let len = spare.len().min(MAX_RW_BYTES) as u32;
            Sqes::One(
                opcode::Read::new(types::Fd(fd.raw_fd()), spare.as_mut_ptr().cast(), len)
                    .offset(offset)
                    .build(),
            )
        })
    };
    let ([res, _], (_fd, mut buf)) = op.await;
    match errno_result(res) {
        Ok(n) => {
            // SAFETY: the kernel initialized the first `n` bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n as usize) };
            (Ok(n as usize), buf)
        }
        Err(e) => (Err(e), buf),
    }
}

pub(crate) async fn write(
    ring: &Arc<Ring>,
    ticket: Ticket,
    fd: Arc<FileState>,
    buf: Bytes,
    offset: u64,
) -> BufResult<usize, Bytes> {
    // SAFETY: the entry points into the bytes of the `Bytes` held by the slot, at most its length.
    let op = unsafe {
        ring.submit(ticket, (fd, buf), None, |(fd, buf)| {
            let len = buf.len().min(MAX_RW_BYTES) as u32;
            Sqes::One(
                opcode::Write::new(types::Fd(fd.raw_fd()), buf.as_ptr(), len)
                    .offset(offset)
                    .build(),
            )
        })
    };
    let ([res, _], (_fd, buf)) = op.await;
    (errno_result(res).map(|n| n as usize), buf)
}

/// Writes all of `bufs` from `offset` with `writev`, up to [`IOV_MAX`] buffers per submission,
/// resuming after short writes. With `sync`, the submission that carries the last bytes is linked
/// to an `fsync`/`fdatasync`, so a batch that fits one submission costs one `io_uring_enter`.
pub(crate) async fn writev_all(
    driver: &IoDriver,
    ring: &Arc<Ring>,
    fd: &Arc<FileState>,
    mut bufs: Vec<Bytes>,
    offset: u64,
    sync: Option<SyncKind>,
) -> BufResult<usize, Vec<Bytes>> {
    let total: usize = bufs.iter().map(Bytes::len).sum();
    let mut cursor = BufCursor::default();
    cursor.skip_empty(&bufs);
    let mut iovecs = IoVecs(Vec::with_capacity(bufs.len().clamp(1, IOV_MAX)));
    let mut written = 0usize;
    while written < total {
        let bytes = cursor.fill_iovecs(&bufs, &mut iovecs.0);
        // RWF_DSYNC makes every write durable for its own range, with no linked fsync.
        let rw_flags = crate::sys::write_flags(sync);
        let link = sync.filter(|k| *k != SyncKind::WrittenRange && written + bytes == total);
        let ticket = match driver
            .ticket_for(fd, if link.is_some() { 2 } else { 1 })
            .await
        {
            Ok(ticket) => ticket,
            Err(e) => return (Err(e), bufs),
        };
        let at = offset + written as u64;
        // SAFETY: the iovecs point into the `Bytes` of `bufs`, both held by the slot; the kernel
        // only reads them. The descriptor is held open by the `FileState` in the slot.
        let op = unsafe {
            ring.submit(ticket, (fd.clone(), bufs, iovecs), None, |(fd, _, iov)| {
                let write =
                    opcode::Writev::new(types::Fd(fd.raw_fd()), iov.0.as_ptr(), iov.0.len() as u32)
                        .offset(at)
                        .rw_flags(rw_flags)
                        .build();
                match link {
                    None => Sqes::One(write),
                    Some(kind) => Sqes::Linked(write, fsync_entry(fd, kind)),
                }
            })
        };
        let ([write_res, sync_res], (_fd, back, iov)) = op.await;
        bufs = back;
        iovecs = iov;
        let n = match errno_result(write_res) {
            Ok(0) => return (Err(io::Error::from(io::ErrorKind::WriteZero)), bufs),
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return (Err(e), bufs),
        };
        cursor.advance(&bufs, n);
        written += n;
        if link.is_some() && n == bytes {
            // The whole rest was written, so the linked sync ran; its result is the batch's.
            return (errno_result(sync_res).map(|_| written), bufs);
        }
        // A short write cancels the linked sync (-ECANCELED): write the rest and link again.
    }
    // Nothing to write: a sync asked for still runs.
    // Nothing was written (an empty list): a sync asked for still runs. (A written-range sync was
    // done by the writes themselves.)
    if let Some(kind) = sync
        && (kind != SyncKind::WrittenRange || total == 0)
        && let Err(e) = driver.fsync(fd, kind).await
    {
        return (Err(e), bufs);
    }
    (Ok(written), bufs)
}

pub(crate) async fn fsync(
    ring: &Arc<Ring>,
    ticket: Ticket,
    fd: Arc<FileState>,
    kind: SyncKind,
) -> io::Result<()> {
    // SAFETY: the entry holds no pointer; the descriptor is held open by the `FileState` in the slot.
    let op = unsafe { ring.submit(ticket, fd, None, |fd| Sqes::One(fsync_entry(fd, kind))) };
    let ([res, _], _) = op.await;
    errno_result(res).map(drop)
}

pub(crate) async fn fallocate(
    ring: &Arc<Ring>,
    ticket: Ticket,
    fd: Arc<FileState>,
    offset: u64,
    len: u64,
) -> io::Result<()> {
    // SAFETY: the entry holds no pointer; the descriptor is held open by the `FileState` in the slot.
    let op = unsafe {
        ring.submit(ticket, fd, None, |fd| {
            Sqes::One(
                opcode::Fallocate::new(types::Fd(fd.raw_fd()), len)
                    .offset(offset)
                    .mode(0)
                    .build(),
            )
        })
    };
    let ([res, _], _) = op.await;
    errno_result(res).map(drop)
}

pub(crate) async fn ftruncate(
    ring: &Arc<Ring>,
    ticket: Ticket,
    fd: Arc<FileState>,
    len: u64,
) -> io::Result<()> {
    // SAFETY: the entry holds no pointer; the descriptor is held open by the `FileState` in the slot.
    let op = unsafe {
        ring.submit(ticket, fd, None, |fd| {
            Sqes::One(opcode::Ftruncate::new(types::Fd(fd.raw_fd()), len).build())
        })
    };
    let ([res, _], _) = op.await;
    errno_result(res).map(drop)
}

pub(crate) async fn file_len(
    ring: &Arc<Ring>,
    ticket: Ticket,
    fd: Arc<FileState>,
) -> io::Result<u64> {
    // SAFETY: `statx` is plain integers, for which all-zero bytes are a valid value.
    let statx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the entry points to the `statx` held by the slot (written by the kernel) and to a
    // static empty path; the descriptor is held open by the `FileState` in the slot.
    let op = unsafe {
        ring.submit(ticket, (fd, statx), None, |(fd, statx)| {
            let out: *mut libc::statx = statx;
            Sqes::One(
                opcode::Statx::new(types::Fd(fd.raw_fd()), c"".as_ptr(), out.cast())
                    .flags(libc::AT_EMPTY_PATH)
                    .mask(libc::STATX_SIZE)
                    .build(),
            )
        })
    };
    let ([res, _], (_fd, statx)) = op.await;
    errno_result(res)?;
    Ok(statx.stx_size)
}

/// Closes the descriptor an abandoned open returned.
fn close_opened(results: &[i32; 2]) {
    if results[0] >= 0 {
        // SAFETY: a successful open's result is a new descriptor that nobody took ownership of,
        // because its future was dropped.
        drop(unsafe { OwnedFd::from_raw_fd(results[0]) });
    }
}

pub(crate) async fn open(
    ring: &Arc<Ring>,
    ticket: Ticket,
    path: CString,
    flags: i32,
    mode: u32,
) -> io::Result<fs::File> {
    // SAFETY: the entry points to the path held by the slot. A descriptor opened for a dropped
    // future is closed by `close_opened`.
    let op = unsafe {
        ring.submit(ticket, path, Some(close_opened), |path| {
            Sqes::One(
                opcode::OpenAt::new(CWD, path.as_ptr())
                    .flags(flags)
                    .mode(mode)
                    .build(),
            )
        })
    };
    let ([res, _], _path) = op.await;
    let fd = errno_result(res)?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(fs::File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
}

pub(crate) async fn rename(
    ring: &Arc<Ring>,
    ticket: Ticket,
    from: CString,
    to: CString,
) -> io::Result<()> {
    // SAFETY: the entry points to the two paths held by the slot.
    let op = unsafe {
        ring.submit(ticket, (from, to), None, |(from, to)| {
            Sqes::One(opcode::RenameAt::new(CWD, from.as_ptr(), CWD, to.as_ptr()).build())
        })
    };
    let ([res, _], _) = op.await;
    errno_result(res).map(drop)
}

pub(crate) async fn unlink(
    ring: &Arc<Ring>,
    ticket: Ticket,
    path: CString,
    dir: bool,
) -> io::Result<()> {
    let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: the entry points to the path held by the slot.
    let op = unsafe {
        ring.submit(ticket, path, None, |path| {
            Sqes::One(
                opcode::UnlinkAt::new(CWD, path.as_ptr())
                    .flags(flags)
                    .build(),
            )
        })
    };
    let ([res, _], _) = op.await;
    errno_result(res).map(drop)
}

pub(crate) async fn mkdir(
    ring: &Arc<Ring>,
    ticket: Ticket,
    path: CString,
    mode: u32,
) -> io::Result<()> {
    // SAFETY: the entry points to the path held by the slot.
    let op = unsafe {
        ring.submit(ticket, path, None, |path| {
            Sqes::One(opcode::MkDirAt::new(CWD, path.as_ptr()).mode(mode).build())
        })
    };
    let ([res, _], _) = op.await;
    errno_result(res).map(drop)
}

pub(crate) async fn close(ring: &Arc<Ring>, ticket: Ticket, fd: OwnedFd) -> io::Result<()> {
    // The kernel takes over the descriptor: from here the ring closes it, even if this future is
    // dropped, and nothing else may.
    let raw = fd.into_raw_fd();
    // SAFETY: the entry holds no pointer; `raw` is owned by this operation alone.
    let op = unsafe {
        ring.submit(ticket, (), None, |()| {
            Sqes::One(opcode::Close::new(types::Fd(raw)).build())
        })
    };
    let ([res, _], ()) = op.await;
    errno_result(res).map(drop)
}
