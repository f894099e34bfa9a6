//! The integrity check: every entry of the log read back through the read path, every frame's
//! checksum and lsn checked, with progress reported as it goes (what `ringtide wal verify` runs).
//!
//! Invariants: the check only reads (it changes no file and takes no lock, so it runs on a
//! read-only handle and beside appenders); it holds at most one chunk of `STREAM_CHUNK_BYTES`
//! of entries in memory at a time; damage is reported as data (file, offset, kind), not as an
//! error, so a caller learns what was checked before it. There is no second parser: the frames
//! are decoded by the same code as every read.

use std::fmt;
use std::path::PathBuf;

use super::reader::{self, Limit, STREAM_CHUNK_BYTES};
use super::{Lsn, Wal};
use crate::error::{CorruptionKind, Error, Result};

/// How far an integrity check has got, as [`Wal::check_integrity`] reports it after each chunk
/// it reads (at most 4 MiB of frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct IntegrityProgress {
    /// Entries checked so far.
    pub entries_checked: u64,
    /// Entries the check will read in all (the log's entries when it started).
    pub entries_total: u64,
    /// Bytes of frames checked so far.
    pub bytes_checked: u64,
}

/// The first damage an integrity check found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IntegrityProblem {
    /// The damaged segment file.
    pub file: PathBuf,
    /// Where in the file the damage starts.
    pub offset: u64,
    /// What is wrong. A torn tail that a read-only handle found at open and may not cut is
    /// [`CorruptionKind::TornTail`].
    pub kind: CorruptionKind,
}

impl fmt::Display for IntegrityProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "corruption in {} at offset {}: {}",
            self.file.display(),
            self.offset,
            self.kind
        )
    }
}

/// What an integrity check read and found, from [`Wal::check_integrity`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IntegrityReport {
    /// Segment files of the log when the check started.
    pub segments: u64,
    /// The first lsn checked (the log's first).
    pub first_lsn: Lsn,
    /// The last lsn the check was to reach (the log's last when it started).
    pub last_lsn: Lsn,
    /// Entries read back with sound frames.
    pub entries: u64,
    /// Bytes of those entries' frames.
    pub bytes: u64,
    /// The first damage found, if any; the check stops there.
    pub problem: Option<IntegrityProblem>,
}

impl IntegrityReport {
    /// Whether every entry from `first_lsn` to `last_lsn` was read back sound, with no damage
    /// found.
    pub fn is_sound(&self) -> bool {
        self.problem.is_none()
            && self.entries == (self.last_lsn.0 + 1).saturating_sub(self.first_lsn.0)
    }
}

/// Reads every entry of `wal` in chunks, calling `progress` after each.
pub(crate) async fn check(
    wal: &Wal,
    mut progress: impl FnMut(IntegrityProgress),
) -> Result<IntegrityReport> {
    let shared = &wal.shared;
    shared.check_usable()?;
    let stats = wal.stats();
    let (first, last) = (stats.first_lsn, stats.last_lsn);
    let mut report = IntegrityReport {
        segments: stats.segments,
        first_lsn: first,
        last_lsn: last,
        entries: 0,
        bytes: 0,
        problem: None,
    };
    let total = (last.0 + 1).saturating_sub(first.0);
    let mut next = first;
    while next <= last {
        match reader::read_counted(shared, next, last.next(), Limit::Cut(STREAM_CHUNK_BYTES)).await
        {
            Ok((entries, bytes)) => {
                next = entries.last().map_or(next, |e| e.lsn.next());
                report.entries += entries.len() as u64;
                report.bytes += bytes;
                progress(IntegrityProgress {
                    entries_checked: report.entries,
                    entries_total: total,
                    bytes_checked: report.bytes,
                });
            }
            Err(Error::Corruption { file, offset, kind }) => {
                report.problem = Some(IntegrityProblem { file, offset, kind });
                return Ok(report);
            }
            Err(err) => return Err(err),
        }
    }
    // A writable open cut its torn tail; a read-only one found it and left it on disk.
    if shared.read_only
        && let Some(torn) = stats.torn_tail
    {
        report.problem = Some(IntegrityProblem {
            file: torn.file,
            offset: torn.offset,
            kind: CorruptionKind::TornTail { bytes: torn.bytes },
        });
    }
    Ok(report)
}
