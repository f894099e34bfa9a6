//! Opening a log: take the directory lock, read the meta file, scan every segment in order, check
//! every header and checksum, repair a torn tail, and rebuild the in-memory index.
//!
//! Rules (the contract in `docs/design.md`):
//! - A torn tail — a bad frame or an incomplete batch with no valid frame after it, in the last
//!   segment — is cut off (zeroed on disk) and reported, unless the mode is `Strict`.
//! - Damage followed by a valid frame, anywhere, is [`Error::Corruption`] naming file and offset.
//! - Damage in a segment that is not the last is corruption: a segment is synced before the next
//!   one receives data, so only the last can be torn.
//! - Nothing here panics on any file content: every length is checked before it is used.
//!
//! The decisions about one segment's frames (which are entries, where a torn tail starts, what
//! is corruption) are made by the pure walk in [`walk`], over the bytes read; this module does
//! the I/O around it and carries out its verdict.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::StreamExt;
use ringtide_platform::{File, IoDriver, OpenOptions};

use super::clean_close::{self, AtEnd, CleanClose};
use super::record::{FrameFormat, MAX_SEGMENT_BYTES};
use super::segment::{self, CutRecord, HEADER_LEN, LOCK_FILE, META_FILE, Meta, SegmentHeader};
use super::{Lsn, RecoveryMode, SegmentIndex, TornTail, WalOptions};
use crate::error::{CorruptionKind, Error, Result};

pub(crate) mod walk;

/// What recovery hands to the log.
pub(crate) struct Recovered {
    pub(crate) format: FrameFormat,
    pub(crate) log_id: u64,
    pub(crate) epoch: u64,
    pub(crate) first_lsn: Lsn,
    pub(crate) last_lsn: Lsn,
    pub(crate) segments: Vec<SegmentIndex>,
    /// The directory lock (none when read-only).
    pub(crate) lock: Option<File>,
    pub(crate) torn_tail: Option<TornTail>,
    pub(crate) recovered_segments: u64,
    pub(crate) recovered_entries: u64,
    pub(crate) disk_bytes: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

/// Takes the directory's lock file, waiting up to `timeout` for another holder to let go.
async fn lock_dir(driver: &IoDriver, dir: &Path, timeout: Duration) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = driver
        .open(
            &path,
            &OpenOptions::new().read(true).write(true).create(true),
        )
        .await
        .map_err(io_err(&path))?;
    let started = Instant::now();
    loop {
        if file.try_lock().map_err(io_err(&path))? {
            return Ok(file);
        }
        if started.elapsed() >= timeout {
            return Err(Error::Locked { path });
        }
        tokio::time::sleep(Duration::from_millis(5).min(timeout)).await;
    }
}

/// A random 64-bit log id, from the standard library's randomly seeded hasher.
fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Whether recovery may change the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Take the lock, create a new log if there is none, delete leftovers, cut a torn tail.
    ReadWrite,
    /// Change nothing and take no lock: leftovers are skipped, a torn tail is reported but stays.
    ReadOnly,
}

pub(crate) async fn recover(
    driver: &IoDriver,
    dir: &Path,
    options: &WalOptions,
    access: Access,
) -> Result<Recovered> {
    let writable = access == Access::ReadWrite;
    let lock = if writable {
        driver.create_dir_all(dir).await.map_err(io_err(dir))?;
        Some(lock_dir(driver, dir, options.lock_timeout).await?)
    } else {
        None
    };
    let found = list_segments(driver, dir, writable).await?;
    let (meta, clean_record) =
        read_or_create_meta(driver, dir, options, writable, found.is_empty()).await?;
    let cut = read_cut_record(driver, dir, &meta, writable).await?;
    let layout = sort_segments(driver, dir, &meta, found, writable).await?;
    // A clean close recorded where the log ends: its last segment must be there (checked
    // before anything is read or changed) and hold every entry (checked by its scan).
    let clean = clean_close::check_segments(dir, &meta, clean_record, &layout.kept)?;
    let ctx = ScanContext {
        meta: &meta,
        cut: cut.lsn,
        clean,
        options,
        access,
    };
    let mut log = scan_segments(driver, &layout.kept, ctx).await?;
    let recovered_segments = log.segments.len() as u64;
    if log.segments.is_empty() {
        let first = create_first_segment(driver, dir, &meta, options, writable).await?;
        log.disk_bytes += first.allocated;
        log.segments.push(first);
    }
    let (first_lsn, next) = log_bounds(dir, &meta, &log.segments)?;
    // The log's entries: frames below its first lsn (left by `truncate_front` in the first
    // segment) are not among them.
    let recovered_entries = next.0.saturating_sub(first_lsn.0);
    if writable {
        let leftovers = Leftovers {
            below_start: &layout.below_start,
            after_cut: &log.after_cut,
            cut_record: cut.found,
        };
        settle_files(driver, dir, &meta, &log.segments, leftovers, clean_record).await?;
    }
    if let Some(torn) = &log.torn_tail {
        tracing::warn!(file = %torn.file.display(), offset = torn.offset, bytes = torn.bytes, dropped_entries = torn.dropped_entries, "wal recovery cut a torn tail");
    }
    tracing::info!(dir = %dir.display(), segments = recovered_segments, entries = recovered_entries, first_lsn = first_lsn.0, last_lsn = next.0 - 1, "wal recovered");
    Ok(Recovered {
        format: meta.format,
        log_id: meta.log_id,
        epoch: meta.epoch,
        first_lsn,
        last_lsn: Lsn(next.0 - 1),
        segments: log.segments,
        lock,
        torn_tail: log.torn_tail,
        recovered_segments,
        recovered_entries,
        disk_bytes: log.disk_bytes,
    })
}

/// Lists the directory's segment files, as (epoch, first lsn, path) in that order. A read-write
/// open deletes the segments prepared in the background that never joined the log.
async fn list_segments(
    driver: &IoDriver,
    dir: &Path,
    writable: bool,
) -> Result<Vec<(u64, Lsn, PathBuf)>> {
    let listing = driver.read_dir(dir).await.map_err(io_err(dir))?;
    let mut found: Vec<(u64, Lsn, PathBuf)> = Vec::new();
    for entry in &listing {
        let Some(name) = entry.path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some((epoch, first)) = segment::parse_segment_name(name) {
            found.push((epoch, first, entry.path.clone()));
        } else if name.ends_with(segment::PREPARED_SUFFIX) && writable {
            // A segment prepared in the background that never joined the log.
            let _ = driver.remove_file(&entry.path).await;
        }
    }
    found.sort();
    Ok(found)
}

/// Reads `wal.meta` and its clean-close record, if any. Where there is neither a meta file nor
/// a segment, a read-write open creates a new log (its meta file, durably); anything else
/// without a meta file is refused.
async fn read_or_create_meta(
    driver: &IoDriver,
    dir: &Path,
    options: &WalOptions,
    writable: bool,
    no_segments: bool,
) -> Result<(Meta, Option<CleanClose>)> {
    match clean_close::read_meta(driver, dir).await? {
        Some(found) => Ok(found),
        None if no_segments && !writable => Err(Error::invalid(
            "dir",
            format!("{} holds no write-ahead log", dir.display()),
        )),
        None if no_segments => {
            let meta = Meta {
                format: options.format(),
                log_id: random_id(),
                epoch: 0,
                first_lsn: Lsn(1),
            };
            meta.write(driver, dir).await?;
            // fsync the parent so the log directory's own name survives a crash.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                driver.sync_dir(parent).await.map_err(io_err(parent))?;
            }
            tracing::info!(dir = %dir.display(), "created a new wal");
            Ok((meta, None))
        }
        None => Err(Error::corruption(
            dir.join(META_FILE),
            0,
            CorruptionKind::BadHeader {
                field: "meta file (missing, but segments exist)",
            },
        )),
    }
}

/// What the directory says of an interrupted `truncate_back`.
struct CutFound {
    /// The lsn of a cut record of this log and epoch.
    lsn: Option<Lsn>,
    /// A cut record file was there (of this log or a stale one): a read-write open removes it.
    found: bool,
}

/// Reads the cut record, and has a read-write open delete the leftovers of an interrupted write
/// of the meta file or of the cut record.
async fn read_cut_record(
    driver: &IoDriver,
    dir: &Path,
    meta: &Meta,
    writable: bool,
) -> Result<CutFound> {
    // A cut record says which frame an interrupted `truncate_back` was rewriting. One of another
    // epoch or log is stale (the truncation finished; only its removal was lost) and ignored.
    let cut = CutRecord::read(driver, dir).await?;
    let found = cut.is_some();
    let cut =
        cut.filter(|c| c.log_id == meta.log_id && c.epoch == meta.epoch && c.format == meta.format);
    // A temporary meta or cut file is the leftover of an interrupted write of it; the real one
    // (or none) stands.
    if writable {
        let _ = driver.remove_file(dir.join(segment::META_TMP)).await;
        let _ = driver.remove_file(dir.join(segment::CUT_TMP)).await;
    }
    Ok(CutFound {
        lsn: cut.map(|c| c.lsn),
        found,
    })
}

/// The log's segment files, sorted out.
struct Layout {
    /// The segments to scan, in log order: (first lsn, path).
    kept: Vec<(Lsn, PathBuf)>,
    /// Whole segments below the meta file's first lsn, to delete once the log is checked.
    below_start: Vec<PathBuf>,
}

/// Sorts the segments found by the meta file: those of an older epoch are deleted (a read-write
/// open), one of a newer epoch is corruption, those wholly below the log's first lsn are set
/// aside.
async fn sort_segments(
    driver: &IoDriver,
    dir: &Path,
    meta: &Meta,
    found: Vec<(u64, Lsn, PathBuf)>,
    writable: bool,
) -> Result<Layout> {
    // Segments of older epochs are leftovers of an interrupted reset.
    let mut removed = false;
    let mut segments_found = Vec::new();
    for (epoch, first, path) in found {
        if epoch < meta.epoch {
            if writable {
                driver.remove_file(&path).await.map_err(io_err(&path))?;
                removed = true;
            }
        } else if epoch > meta.epoch {
            return Err(Error::corruption(
                &path,
                0,
                CorruptionKind::BadHeader {
                    field: "epoch (newer than the meta file's)",
                },
            ));
        } else {
            segments_found.push((first, path));
        }
    }
    // Whole segments below the recorded start are leftovers of an interrupted truncate_front.
    // They are deleted only once the rest of the log has been checked and holds the start, so
    // that a damaged meta file cannot make recovery delete entries before it refuses the log.
    let mut kept = Vec::new();
    let mut below_start = Vec::new();
    for (i, (first, path)) in segments_found.iter().enumerate() {
        let next_first = segments_found.get(i + 1).map(|(f, _)| *f);
        if next_first.is_some_and(|n| n <= meta.first_lsn) {
            below_start.push(path.clone());
        } else {
            kept.push((*first, path.clone()));
        }
    }
    if removed {
        driver.sync_dir(dir).await.map_err(io_err(dir))?;
    }
    Ok(Layout { kept, below_start })
}

/// The segments scanned, in log order.
struct ScannedLog {
    segments: Vec<SegmentIndex>,
    torn_tail: Option<TornTail>,
    disk_bytes: u64,
    /// Segments after a cut record's lsn: leftovers of the interrupted `truncate_back`.
    after_cut: Vec<PathBuf>,
}

/// Reads and checks the segments in order (see [`scan_segment`]), each one read while the one
/// before it is checked, and checks that each starts where the one before ends. Stops after the
/// segment that holds a cut record's lsn.
async fn scan_segments(
    driver: &IoDriver,
    kept: &[(Lsn, PathBuf)],
    mut ctx: ScanContext<'_>,
) -> Result<ScannedLog> {
    let writable = ctx.access == Access::ReadWrite;
    let clean = ctx.clean;
    let mut log = ScannedLog {
        segments: Vec::with_capacity(kept.len()),
        torn_tail: None,
        disk_bytes: 0,
        after_cut: Vec::new(),
    };
    let count = kept.len();
    // Each segment is read while the one before it is checked (one read ahead), into the buffer
    // of the segment checked before (fresh memory costs a page fault per 4 KiB).
    // The clean-close record's last segment is read only as far as its entries and seal go.
    let limit = |first: Lsn| {
        clean
            .filter(|c| c.segment_first == first)
            .map(|c| c.read_limit())
    };
    // The frames that arrive are walked while the rest of the segment is read.
    let prewalk = |first: Lsn| {
        walk::Prewalk::new(&walk::WalkParams {
            format: ctx.meta.format,
            first_lsn: first,
            start: HEADER_LEN as usize,
            cut: ctx.cut,
            is_last: kept.last().is_some_and(|(last, _)| *last == first),
        })
    };
    let load = |(first, path): &(Lsn, PathBuf), buf: Option<BytesMut>| {
        let (driver, path) = (driver.clone(), path.clone());
        let (limit, walked) = (limit(*first), prewalk(*first));
        tokio::spawn(load_segment(driver, path, writable, buf, limit, walked))
    };
    let mut spare_buf = None;
    let mut ahead = kept.first().map(|seg| load(seg, None));
    for (i, (first, path)) in kept.iter().cloned().enumerate() {
        let is_last = i + 1 == count;
        let current = ahead.take().expect("the segment was read ahead");
        ahead = kept.get(i + 1).map(|next| load(next, spare_buf.take()));
        let mut loaded = current
            .await
            .map_err(|e| Error::io(&path, std::io::Error::other(e)))??;
        if let Some(record) = clean.filter(|c| c.segment_first == first) {
            let format = ctx.meta.format;
            (loaded, ctx.clean) =
                settle_clean_close(driver, &path, writable, loaded, record, format).await?;
        }
        let scanned = scan_segment(&path, loaded, first, is_last, &ctx).await?;
        spare_buf = Some(scanned.buf);
        let cut_applied = scanned.cut_applied;
        if let Some(prev) = log.segments.last()
            && prev.next_lsn() != scanned.index.first_lsn
        {
            return Err(Error::corruption(
                &path,
                0,
                CorruptionKind::MissingSegment {
                    expected: prev.next_lsn(),
                    found: scanned.index.first_lsn,
                },
            ));
        }
        log.disk_bytes += scanned.index.allocated;
        if scanned.torn.is_some() {
            log.torn_tail = scanned.torn;
        }
        log.segments.push(scanned.index);
        if cut_applied {
            // The log ends at the cut: later segments are leftovers of the interrupted
            // `truncate_back`, which deletes them (from the last) before rewriting the frame.
            if let Some(pending) = ahead.take() {
                pending.abort();
            }
            log.after_cut
                .extend(kept[i + 1..].iter().map(|(_, p)| p.clone()));
            break;
        }
    }
    Ok(log)
}

/// The first segment of a log that has none (a new log, or one whose segments were all
/// deleted): created by a read-write open; a read-only open refuses the directory.
async fn create_first_segment(
    driver: &IoDriver,
    dir: &Path,
    meta: &Meta,
    options: &WalOptions,
    writable: bool,
) -> Result<SegmentIndex> {
    if !writable {
        return Err(Error::invalid(
            "dir",
            format!("{} holds no segment", dir.display()),
        ));
    }
    let first_lsn = meta.first_lsn;
    let header = SegmentHeader {
        format: meta.format,
        log_id: meta.log_id,
        epoch: meta.epoch,
        first_lsn,
    };
    let size = options.segment_size_bytes;
    let (file, path) =
        segment::create_segment(driver, dir, header, size, super::zero_fill(options)).await?;
    Ok(SegmentIndex {
        first_lsn,
        path,
        file,
        offsets: Vec::new(),
        end: HEADER_LEN,
        allocated: size,
        patch: None,
    })
}

/// The log's first lsn and the lsn after its last entry, checked against the meta file: the
/// first segment must hold the meta file's first lsn, which may not lie past the log's end.
fn log_bounds(dir: &Path, meta: &Meta, segments: &[SegmentIndex]) -> Result<(Lsn, Lsn)> {
    let next = segments
        .last()
        .map_or(meta.first_lsn, SegmentIndex::next_lsn);
    let first = &segments[0];
    if first.first_lsn > meta.first_lsn {
        // The log starts at meta.first_lsn: the segment that held it is gone.
        return Err(Error::corruption(
            &first.path,
            0,
            CorruptionKind::MissingSegment {
                expected: meta.first_lsn,
                found: first.first_lsn,
            },
        ));
    }
    let first_lsn = meta.first_lsn.max(first.first_lsn);
    if first_lsn > next {
        return Err(Error::corruption(
            dir.join(META_FILE),
            32,
            CorruptionKind::BadHeader {
                field: "first lsn (beyond the log's end)",
            },
        ));
    }
    Ok((first_lsn, next))
}

/// What a read-write open deletes once the log is checked.
struct Leftovers<'a> {
    /// Whole segments below the log's first lsn.
    below_start: &'a [PathBuf],
    /// Segments after a cut record's lsn, in log order (deleted from the last).
    after_cut: &'a [PathBuf],
    /// A cut record file is there, its work done (or stale).
    cut_record: bool,
}

/// The last steps of a read-write open, once the log is checked: leftovers deleted, the last
/// segment and the directory synced, then the clean-close record removed.
async fn settle_files(
    driver: &IoDriver,
    dir: &Path,
    meta: &Meta,
    segments: &[SegmentIndex],
    leftovers: Leftovers<'_>,
    clean_record: Option<CleanClose>,
) -> Result<()> {
    for path in leftovers
        .below_start
        .iter()
        .chain(leftovers.after_cut.iter().rev())
    {
        driver.remove_file(path).await.map_err(io_err(path))?;
    }
    if leftovers.cut_record {
        // Its work is done (or it was stale): a later batch may use its lsn again.
        CutRecord::remove(driver, dir).await?;
    }
    if let Some(last) = segments.last() {
        // What the last run wrote may sit unsynced in the page cache: sync it before the log
        // calls it durable, or a later RWF_DSYNC append (durable for its own range only) could be
        // acknowledged after data the disk does not have. Earlier segments were synced at
        // rotation; the directory sync makes their names durable too.
        last.file.sync_data().await.map_err(io_err(&last.path))?;
        driver.sync_dir(dir).await.map_err(io_err(dir))?;
    }
    if clean_record.is_some() {
        // The log was checked against the clean-close record; from here on its writer may
        // change it (append, truncate, reset) or a crash may cut it: the record goes first.
        clean_close::remove(driver, dir, meta).await?;
    }
    Ok(())
}

struct Scanned {
    index: SegmentIndex,
    torn: Option<TornTail>,
    /// The segment holds the lsn of a cut record: the log ends there.
    cut_applied: bool,
    /// The buffer the segment was read into, for the next one.
    buf: BytesMut,
}

/// A segment file opened and read: whole, or as far as the clean-close record's limit.
struct Loaded {
    file: File,
    len: u64,
    buf: BytesMut,
    /// The frames walked as the bytes arrived.
    walked: walk::Prewalk,
}

/// Opens and reads a segment: its own step, so that recovery can read the next segment while it
/// checks the current one. `limit`, if given, bounds the bytes read from its start (the scan
/// takes what is past it for zeros). `walked` walks the frames as they arrive.
async fn load_segment(
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

/// Decides whether the clean-close record applies to its last segment, just loaded up to the
/// record's limit (see [`clean_close::at_end`]): reads the whole segment where a frame runs past
/// the limit, or where the record is stale and the scan goes on without it.
async fn settle_clean_close(
    driver: &IoDriver,
    path: &Path,
    writable: bool,
    mut loaded: Loaded,
    record: CleanClose,
    format: FrameFormat,
) -> Result<(Loaded, Option<CleanClose>)> {
    // At most twice: the second read is whole.
    for _ in 0..2 {
        let whole = loaded.buf.len() as u64 == loaded.len;
        match clean_close::at_end(&record, &loaded.buf, loaded.len, format) {
            AtEnd::Stale if whole => {
                tracing::warn!(file = %path.display(), "wal: entries follow the end the clean-close record names; it is stale and ignored");
                return Ok((loaded, None));
            }
            AtEnd::Stale | AtEnd::ReadMore if !whole => {
                let (path, walked) = (path.to_path_buf(), loaded.walked.restarted());
                loaded = load_segment(driver.clone(), path, writable, None, None, walked).await?;
            }
            _ => break,
        }
    }
    Ok((loaded, Some(record)))
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

/// What every segment's scan needs to know about the log.
struct ScanContext<'a> {
    meta: &'a Meta,
    /// The lsn of a cut record (see [`CutRecord`]), if any.
    cut: Option<Lsn>,
    /// The clean-close record, if there is one and it is not stale.
    clean: Option<CleanClose>,
    options: &'a WalOptions,
    access: Access,
}

/// Checks a segment's header against the log's meta file and the segment's name.
fn check_header(
    buf: &[u8],
    name_first: Lsn,
    meta: &Meta,
) -> std::result::Result<SegmentHeader, (u64, CorruptionKind)> {
    // Every segment's header is synced before the segment gets its name (see
    // `segment::install_segment`), so a damaged or zeroed header is never a leftover of an
    // interrupted creation: it is corruption, even in the last segment.
    let header = SegmentHeader::decode(buf).map_err(|kind| (0, kind))?;
    let bad = |offset, field| Err((offset, CorruptionKind::BadHeader { field }));
    if header.log_id != meta.log_id {
        let kind = CorruptionKind::ForeignSegment {
            expected: meta.log_id,
            found: header.log_id,
        };
        return Err((16, kind));
    }
    if header.epoch != meta.epoch {
        return bad(24, "epoch (differs from the file name's)");
    }
    if header.first_lsn != name_first {
        return bad(32, "first lsn (differs from the file name's)");
    }
    if header.format != meta.format {
        return bad(10, "format (differs from the log's)");
    }
    Ok(header)
}

/// Checks one segment as loaded (read whole, or up to the clean-close record's limit): its
/// header, then its frames through the pure walk ([`walk::walk_frames_from`], taking up from
/// the frames walked as they were read), whose verdict it carries out — a torn tail cut
/// (or refused under `Strict`), an interrupted `truncate_back` finished, the active segment's
/// preallocation restored. A read-only open changes no file.
async fn scan_segment(
    path: &Path,
    loaded: Loaded,
    name_first: Lsn,
    is_last: bool,
    ctx: &ScanContext<'_>,
) -> Result<Scanned> {
    let Loaded {
        file,
        len,
        buf,
        walked,
    } = loaded;
    let ScanContext {
        meta,
        cut,
        clean,
        options,
        access,
    } = *ctx;
    let writable = access == Access::ReadWrite;
    let corrupt = |(offset, kind)| Error::corruption(path, offset, kind);
    let header = check_header(&buf, name_first, meta).map_err(corrupt)?;
    let params = walk::WalkParams {
        format: meta.format,
        first_lsn: header.first_lsn,
        start: HEADER_LEN as usize,
        cut,
        is_last,
    };
    let walk = walk::walk_frames_from(&buf, &params, walked);
    // What the record says of this segment's entries (it names the last).
    let clean_here = clean.filter(|c| is_last && c.segment_first == name_first);
    hold_to_clean_close(path, &walk, header.first_lsn, clean, clean_here)?;
    let walk::Walk {
        mut offsets,
        kept,
        end,
        outcome,
        ..
    } = walk;
    let end = end as u64;
    let cut_applied = matches!(outcome, walk::Outcome::Cut { .. });
    let mut torn = None;
    let mut patch = None;
    match outcome {
        walk::Outcome::Clean => {}
        walk::Outcome::Corrupt(damage) => return Err(corrupt((damage.offset, damage.kind))),
        walk::Outcome::Cut { repair } => {
            let repair = repair.map(|(at, bytes)| (at as u64, bytes::Bytes::from(bytes)));
            patch = finish_cut(path, &file, len, end, repair, writable).await?;
        }
        walk::Outcome::TornTail { bytes } => {
            if options.recovery_mode == RecoveryMode::Strict {
                return Err(corrupt((end, CorruptionKind::TornTail { bytes })));
            }
            if writable {
                segment::cut_tail(&file, end, len)
                    .await
                    .map_err(io_err(path))?;
            }
            torn = Some(TornTail {
                file: path.to_path_buf(),
                offset: end,
                bytes,
                dropped_entries: (offsets.len() - kept) as u64,
            });
            offsets.truncate(kept);
        }
    }
    let mut allocated = len.max(end + 1);
    if writable && (is_last || cut_applied) && allocated < options.segment_size_bytes {
        // The active segment gets its full preallocation back (it may have been cut short).
        file.allocate(0, options.segment_size_bytes)
            .await
            .map_err(io_err(path))?;
        allocated = options.segment_size_bytes;
    }
    Ok(Scanned {
        index: SegmentIndex {
            first_lsn: header.first_lsn,
            path: path.to_path_buf(),
            file,
            offsets,
            end,
            allocated,
            patch,
        },
        torn,
        cut_applied,
        buf,
    })
}

/// After a clean close nothing is torn: every entry its record names must be in the segments
/// walked, checked before anything is cut or repaired. `clean_here` is the record if it names
/// this segment as the last. A cut record and a clean close never name the same log state; if
/// both are there, the clean close's entries must still all be kept, in whichever segment the
/// cut falls.
fn hold_to_clean_close(
    path: &Path,
    walk: &walk::Walk,
    first_lsn: Lsn,
    clean: Option<CleanClose>,
    clean_here: Option<CleanClose>,
) -> Result<()> {
    // The entries kept end before this lsn.
    let found_next = Lsn(first_lsn.0 + walk.kept as u64);
    let incomplete = walk.kept < walk.offsets.len();
    match (&walk.outcome, clean, clean_here) {
        (walk::Outcome::Corrupt(_), _, _) => {}
        (walk::Outcome::Cut { .. }, Some(record), _) => {
            clean_close::check_entries(path, &record, found_next, None, false, walk.end)?;
        }
        (walk::Outcome::Cut { .. }, None, _) => {}
        (_, _, Some(record)) => {
            let bad = walk.first_bad.as_ref();
            clean_close::check_entries(path, &record, found_next, bad, incomplete, walk.end)?;
        }
        (_, _, None) => {}
    }
    Ok(())
}

/// Finishes an interrupted `truncate_back` in the segment that holds the cut record's lsn: the
/// last kept frame rewritten whole (if it was being rewritten, `repair`), the rest cut from
/// `end`. A read-only open may not write: it returns the repair instead, for its readers to
/// see the repaired frame through the index.
async fn finish_cut(
    path: &Path,
    file: &File,
    len: u64,
    end: u64,
    repair: Option<(u64, bytes::Bytes)>,
    writable: bool,
) -> Result<Option<(u64, bytes::Bytes)>> {
    if !writable {
        return Ok(repair);
    }
    if let Some((at, bytes)) = repair {
        let (res, _) = file.writev_sync_at(vec![bytes], at).await;
        res.map_err(io_err(path))?;
    }
    segment::cut_tail(file, end, len)
        .await
        .map_err(io_err(path))?;
    Ok(None)
}
