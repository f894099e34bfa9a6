//! Checking the segments in order, each read (see [`read`](super::read)) while the one before
//! it is checked: each segment's header, its frames through the pure walk, the clean-close
//! record held to, and the walk's verdict carried out — a torn tail cut (or refused under
//! `Strict`), an interrupted `truncate_back` finished, the active segment's preallocation
//! restored. A read-only open changes no file.

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use ringtide_platform::{File, IoDriver};

use super::read::{Loaded, load_segment};
use super::{Access, io_err, walk};
use crate::error::{CorruptionKind, Error, Result};
use crate::wal::clean_close::{self, AtEnd, CleanClose};
use crate::wal::record::FrameFormat;
use crate::wal::segment::{self, HEADER_LEN, Meta, SegmentHeader};
use crate::wal::{Lsn, RecoveryMode, SegmentIndex, TornTail, WalOptions};

/// The segments scanned, in log order.
pub(super) struct ScannedLog {
    pub(super) segments: Vec<SegmentIndex>,
    pub(super) torn_tail: Option<TornTail>,
    pub(super) disk_bytes: u64,
    /// Segments after a cut record's lsn: leftovers of the interrupted `truncate_back`.
    pub(super) after_cut: Vec<PathBuf>,
}

/// Reads and checks the segments in order (see [`scan_segment`]), each one read while the one
/// before it is checked, and checks that each starts where the one before ends. Stops after the
/// segment that holds a cut record's lsn.
pub(super) async fn scan_segments(
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

struct Scanned {
    index: SegmentIndex,
    torn: Option<TornTail>,
    /// The segment holds the lsn of a cut record: the log ends there.
    cut_applied: bool,
    /// The buffer the segment was read into, for the next one.
    buf: BytesMut,
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

/// What every segment's scan needs to know about the log.
pub(super) struct ScanContext<'a> {
    pub(super) meta: &'a Meta,
    /// The lsn of a cut record (see [`CutRecord`](crate::wal::segment::CutRecord)), if any.
    pub(super) cut: Option<Lsn>,
    /// The clean-close record, if there is one and it is not stale.
    pub(super) clean: Option<CleanClose>,
    pub(super) options: &'a WalOptions,
    pub(super) access: Access,
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
