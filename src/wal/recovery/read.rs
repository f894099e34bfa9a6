//! Reading a segment's bytes: the file opened and read whole (or up to a limit) into a reused
//! buffer, with `O_DIRECT` where the file system allows it, in pieces all in flight at once,
//! whose frames are walked as each arrives.

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use futures::StreamExt;
use ringtide_platform::{File, IoDriver, OpenOptions};

use super::{io_err, walk};
use crate::error::{CorruptionKind, Error, Result};
use crate::wal::record::MAX_SEGMENT_BYTES;
use crate::wal::segment;

/// A segment file opened and read: whole, or as far as the clean-close record's limit.
pub(super) struct Loaded {
    pub(super) file: File,
    pub(super) len: u64,
    pub(super) buf: BytesMut,
    /// The frames walked as the bytes arrived.
    pub(super) walked: walk::Prewalk,
}

/// Opens and reads a segment: its own step, so that recovery can read the next segment while it
/// checks the current one. `limit`, if given, bounds the bytes read from its start (the scan
/// takes what is past it for zeros). `walked` walks the frames as they arrive.
pub(super) async fn load_segment(
    driver: IoDriver,
    path: PathBuf,
    writable: bool,
    buf: Option<BytesMut>,
    limit: Option<u64>,
    mut walked: walk::Prewalk,
) -> Result<Loaded> {
    let file = driver
        .open(&path, &OpenOptions::new().read(true).write(writable))
        .await
        .map_err(io_err(&path))?;
    let len = file.len().await.map_err(io_err(&path))?;
    if len > MAX_SEGMENT_BYTES {
        // No writer makes a segment this large (frame offsets are 32-bit); do not try to read it.
        return Err(Error::corruption(
            &path,
            0,
            CorruptionKind::FrameLength { len },
        ));
    }
    let read_len = limit.map_or(len, |limit| limit.min(len));
    // A read fills the buffer's whole capacity: a buffer is reused only for a read of its
    // size (segments mostly are of one size).
    let blocks = read_len.is_multiple_of(DIRECT_READ_ALIGN as u64);
    let buf = match buf {
        Some(mut buf) if buf.capacity() == read_len as usize => {
            buf.clear();
            buf
        }
        _ if blocks => ringtide_platform::aligned_bytes_mut(read_len as usize, DIRECT_READ_ALIGN),
        _ => BytesMut::with_capacity(read_len as usize),
    };
    let (res, buf) = read_segment(&driver, &file, &path, buf, blocks, &mut walked).await;
    res.map_err(io_err(&path))?;
    Ok(Loaded {
        file,
        len,
        buf,
        walked,
    })
}

/// The alignment of a direct read's offset, length and memory.
const DIRECT_READ_ALIGN: usize = segment::DIRECT_BLOCK as usize;

/// Reads a whole segment into `buf`: with `O_DIRECT` where it is whole blocks and the file
/// system allows it (no copy through the page cache, and the cache is not filled with a log
/// that is read once), else buffered. `walked` walks the frames as they arrive.
async fn read_segment(
    driver: &IoDriver,
    file: &File,
    path: &Path,
    buf: BytesMut,
    blocks: bool,
    walked: &mut walk::Prewalk,
) -> (std::io::Result<()>, BytesMut) {
    if blocks && (buf.as_ptr() as usize).is_multiple_of(DIRECT_READ_ALIGN) {
        let options = OpenOptions::new().read(true).direct(true);
        if let Ok(direct) = driver.open(path, &options).await {
            let (res, mut buf) = read_walking(&direct, buf, walked).await;
            let _ = direct.close().await;
            match res {
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => buf.clear(),
                res => return (res, buf),
            }
            *walked = walked.restarted();
            return read_walking(file, buf, walked).await;
        }
    }
    read_walking(file, buf, walked).await
}

/// The size of the reads a segment is read with: at least 1 MiB, at most 16 reads.
fn read_chunk(len: usize) -> usize {
    const MIN: usize = 1 << 20;
    len.div_ceil(16)
        .next_multiple_of(DIRECT_READ_ALIGN)
        .max(MIN)
}

/// Fills `buf` from the start of `file` with reads of [`read_chunk`] bytes, all in flight at
/// once, and walks the frames of each as it arrives, in order, while the later ones are still
/// read: only the walk of the last is left after the read. On an error every read is waited for, and the buffer given back is
/// a new one of the same capacity (the pieces of the old one hold partial reads).
async fn read_walking(
    file: &File,
    mut buf: BytesMut,
    walked: &mut walk::Prewalk,
) -> (std::io::Result<()>, BytesMut) {
    let capacity = buf.capacity();
    let chunk = read_chunk(capacity);
    // The pieces share the buffer's memory (aligned as it is: the chunk is whole blocks), and
    // join again without a copy, each being full.
    let mut reads = futures::stream::FuturesOrdered::new();
    let mut at = 0;
    while buf.capacity() > chunk {
        let rest = buf.split_off(chunk);
        reads.push_back(file.read_exact_at(buf, at as u64));
        (buf, at) = (rest, at + chunk);
    }
    reads.push_back(file.read_exact_at(buf, at as u64));
    let mut filled: Option<BytesMut> = None;
    let mut failed = None;
    while let Some((res, piece)) = reads.next().await {
        match (res, &mut filled) {
            (Err(e), _) => {
                failed.get_or_insert(e);
            }
            (Ok(()), _) if failed.is_some() => {}
            (Ok(()), None) => filled = Some(piece),
            (Ok(()), Some(filled)) => filled.unsplit(piece),
        }
        if failed.is_none()
            && let Some(filled) = &filled
        {
            walked.advance(filled);
        }
    }
    match failed {
        Some(e) => (Err(e), BytesMut::with_capacity(capacity)),
        None => (Ok(()), filled.unwrap_or_default()),
    }
}
