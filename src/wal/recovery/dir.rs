//! The log's directory around the segments' contents: its lock, the meta file (read, or written
//! for a new log), the cut record, the segment files found and sorted by epoch and start, the
//! first segment of a log that has none, and the last steps of a read-write open, which delete
//! leftovers, sync, and remove the clean-close record.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ringtide_platform::{File, IoDriver, OpenOptions};

use super::io_err;
use crate::error::{CorruptionKind, Error, Result};
use crate::wal::clean_close::{self, CleanClose};
use crate::wal::segment::{self, CutRecord, HEADER_LEN, LOCK_FILE, META_FILE, Meta, SegmentHeader};
use crate::wal::{Lsn, SegmentIndex, WalOptions, zero_fill};

/// Takes the directory's lock file, waiting up to `timeout` for another holder to let go.
pub(super) async fn lock_dir(driver: &IoDriver, dir: &Path, timeout: Duration) -> Result<File> {
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

/// Lists the directory's segment files, as (epoch, first lsn, path) in that order. A read-write
/// open deletes the segments prepared in the background that never joined the log.
pub(super) async fn list_segments(
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
pub(super) async fn read_or_create_meta(
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
pub(super) struct CutFound {
    /// The lsn of a cut record of this log and epoch.
    pub(super) lsn: Option<Lsn>,
    /// A cut record file was there (of this log or a stale one): a read-write open removes it.
    pub(super) found: bool,
}

/// Reads the cut record, and has a read-write open delete the leftovers of an interrupted write
/// of the meta file or of the cut record.
pub(super) async fn read_cut_record(
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
pub(super) struct Layout {
    /// The segments to scan, in log order: (first lsn, path).
    pub(super) kept: Vec<(Lsn, PathBuf)>,
    /// Whole segments below the meta file's first lsn, to delete once the log is checked.
    pub(super) below_start: Vec<PathBuf>,
}

/// Sorts the segments found by the meta file: those of an older epoch are deleted (a read-write
/// open), one of a newer epoch is corruption, those wholly below the log's first lsn are set
/// aside.
pub(super) async fn sort_segments(
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

/// The first segment of a log that has none (a new log, or one whose segments were all
/// deleted): created by a read-write open; a read-only open refuses the directory.
pub(super) async fn create_first_segment(
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
        segment::create_segment(driver, dir, header, size, zero_fill(options)).await?;
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

/// What a read-write open deletes once the log is checked.
pub(super) struct Leftovers<'a> {
    /// Whole segments below the log's first lsn.
    pub(super) below_start: &'a [PathBuf],
    /// Segments after a cut record's lsn, in log order (deleted from the last).
    pub(super) after_cut: &'a [PathBuf],
    /// A cut record file is there, its work done (or stale).
    pub(super) cut_record: bool,
}

/// The last steps of a read-write open, once the log is checked: leftovers deleted, the last
/// segment and the directory synced, then the clean-close record removed.
pub(super) async fn settle_files(
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
