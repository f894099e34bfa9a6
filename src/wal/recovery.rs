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
//! is corruption) are made by the pure walk in [`walk`], over the bytes read. The I/O around it
//! is split by phase: [`dir`] handles the directory (the lock, the meta and cut files, the
//! segment files found, the last steps that settle them), [`read`] reads a segment's bytes, and
//! [`scan`] checks the segments in order and carries out the walk's verdict. This module holds
//! [`recover`], which runs the phases in order, and the checks between them.

use std::path::Path;

use ringtide_platform::{File, IoDriver};

use super::clean_close;
use super::record::FrameFormat;
use super::segment::{META_FILE, Meta};
use super::{Lsn, SegmentIndex, TornTail, WalOptions};
use crate::error::{CorruptionKind, Error, Result};
use dir::{
    Leftovers, create_first_segment, list_segments, lock_dir, read_cut_record, read_or_create_meta,
    settle_files, sort_segments,
};
use scan::{ScanContext, scan_segments};

mod dir;
mod read;
mod scan;
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
