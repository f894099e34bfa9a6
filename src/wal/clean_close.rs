//! The clean-close record: what a clean `close` leaves outside the last segment, so that
//! recovery can tell a log that lost entries after it was closed from one that crashed.
//!
//! The seal `close` writes after the last entry vouches for the entries before it, but it lives
//! in the last segment: delete that file, truncate it below the seal, or damage the last entries
//! where no seal fits (it is written only within one 512-byte sector), and nothing is left to
//! say that entries are missing — recovery would cut them as a torn tail or not notice at all.
//! So `close`, after the seal, records in `wal.meta` that the log was closed cleanly, its next
//! lsn, its last segment and where that segment's entries end. Recovery then holds the log to
//! it, in every mode, read-only or not: any entry short of the record is
//! [`Error::Corruption`] (naming the file, the offset and the kind), never a torn tail. A torn
//! tail can only be cut from a log that crashed.
//!
//! Layout: the 48 bytes of the meta file (`segment.rs`), then
//!
//! ```text
//! offset  size  field
//! 48       8    magic "RTDCLEAN"
//! 56       8    next lsn: the lsn after the last entry (the seal's), u64 LE
//! 64       8    first lsn of the last segment (its name, with the meta file's epoch), u64 LE
//! 72       8    data end: where the last segment's entries end (where the seal starts), u64 LE
//! 80      12    reserved, zero (not checked on reading)
//! 92       4    crc32 of bytes 0..92, u32 LE: it covers the meta file too, so a record is
//!               never paired with another meta file
//! ```
//!
//! A meta file of 48 bytes has no record: a log that was not closed cleanly, or one written
//! before the record existed, which therefore opens as it always did. Bytes after 96 are not
//! read (room for later additions).
//!
//! Invariants:
//! 1. The record is written only after the last sync and the seal, so every entry it names is
//!    durable; like every version of `wal.meta` it is replaced atomically and durably (temporary
//!    file, fdatasync, rename, directory fsync).
//! 2. It never outlives its truth: a read-write open removes it (rewrites `wal.meta` without it,
//!    durably) once recovery has checked the log against it and before the writer exists, so no
//!    append, truncation or reset can run while it is on disk; recovery's own changes before
//!    that (a damaged seal cut, leftovers deleted) keep every entry it names. A read-only open
//!    changes nothing and leaves it in place.
//! 3. It bounds what recovery reads of the last segment: entries end at the data end, the seal
//!    follows within the same sector, so nothing past the block after it is read.

use std::path::Path;

use ringtide_platform::IoDriver;

use super::record::{ACCEPT_MAX_PAYLOAD, MAX_LSN, MAX_SEGMENT_BYTES};
use super::record::{Decoded, FrameFormat};
use super::segment::{self, DIRECT_BLOCK, HEADER_LEN, META_FILE, META_LEN, META_TMP, Meta};
use super::{Lsn, Shared};
use crate::error::{CorruptionKind, Error, Result};

const MAGIC: &[u8; 8] = b"RTDCLEAN";
/// The meta file with a record: the meta's 48 bytes and the record's 48.
const LEN: usize = META_LEN + 48;

/// What a clean close recorded about the log's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CleanClose {
    /// The lsn after the last entry (the seal's lsn).
    pub(crate) next_lsn: Lsn,
    /// The first lsn of the last segment: with the meta file's epoch, its name.
    pub(crate) segment_first: Lsn,
    /// Where the last segment's entries end: the seal starts here.
    pub(crate) data_end: u64,
}

impl CleanClose {
    fn encode(&self, meta: &Meta) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..META_LEN].copy_from_slice(&meta.encode());
        b[48..56].copy_from_slice(MAGIC);
        b[56..64].copy_from_slice(&self.next_lsn.0.to_le_bytes());
        b[64..72].copy_from_slice(&self.segment_first.0.to_le_bytes());
        b[72..80].copy_from_slice(&self.data_end.to_le_bytes());
        let crc = crc32fast::hash(&b[..LEN - 4]);
        b[LEN - 4..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes the record from the bytes of `wal.meta` (whose first 48 bytes are checked by
    /// `Meta::decode`): `Ok(None)` for a meta file of 48 bytes; else the offset and kind of
    /// what is wrong with the record.
    fn decode(b: &[u8]) -> std::result::Result<Option<CleanClose>, (u64, CorruptionKind)> {
        if b.len() <= META_LEN {
            return Ok(None);
        }
        let at = META_LEN as u64;
        if b.len() < LEN {
            return Err((at, CorruptionKind::BadHeader { field: "length" }));
        }
        if &b[48..56] != MAGIC {
            return Err((at, CorruptionKind::BadMagic));
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let crc = u32::from_le_bytes(b[LEN - 4..LEN].try_into().unwrap_or([0; 4]));
        if crc32fast::hash(&b[..LEN - 4]) != crc {
            return Err((at, CorruptionKind::HeaderChecksum));
        }
        let record = CleanClose {
            next_lsn: Lsn(u64_at(56)),
            segment_first: Lsn(u64_at(64)),
            data_end: u64_at(72),
        };
        // What no writer produces: a segment starts at lsn 1 or later and holds its entries
        // after its header, within the largest segment a writer makes.
        let fits = (1..=record.next_lsn.0).contains(&record.segment_first.0)
            && record.next_lsn.0 <= MAX_LSN + 1
            && (HEADER_LEN..MAX_SEGMENT_BYTES).contains(&record.data_end);
        if !fits {
            return Err((
                at,
                CorruptionKind::BadHeader {
                    field: "clean-close record",
                },
            ));
        }
        Ok(Some(record))
    }

    /// How much of the last segment recovery reads: the block holding the seal and the next
    /// one. Entries end at `data_end`; the seal starts there and never crosses a 512-byte
    /// sector; every write of the log's writer ends within the block that holds its last byte.
    /// (The next block is a margin: bytes there would only ever be damage past the log's end,
    /// reported as a torn tail of no entry, as before.)
    pub(crate) fn read_limit(&self) -> u64 {
        (self.data_end / DIRECT_BLOCK + 2) * DIRECT_BLOCK
    }

    /// The last lsn the record names (`first - 1` for an empty log).
    fn last(&self) -> Lsn {
        Lsn(self.next_lsn.0 - 1)
    }
}

/// Reads `wal.meta`: the meta file and, if a clean close left one, its record. `Ok(None)` if
/// there is no meta file.
pub(crate) async fn read_meta(
    driver: &IoDriver,
    dir: &Path,
) -> Result<Option<(Meta, Option<CleanClose>)>> {
    let path = dir.join(META_FILE);
    let Some(buf) = segment::read_record_upto(driver, &path, LEN).await? else {
        return Ok(None);
    };
    let meta = Meta::decode(&buf[..META_LEN]).map_err(|kind| Error::corruption(&path, 0, kind))?;
    let record =
        CleanClose::decode(&buf).map_err(|(at, kind)| Error::corruption(&path, at, kind))?;
    if let Some(r) = record
        && r.next_lsn < meta.first_lsn
    {
        return Err(Error::corruption(
            &path,
            56,
            CorruptionKind::BadHeader {
                field: "clean-close record (ends before the first lsn)",
            },
        ));
    }
    Ok(Some((meta, record)))
}

/// Records that the log closed cleanly: `wal.meta` replaced by the meta file with the record,
/// atomically and durably. Called by `close` once everything written is durable and the seal
/// is written. Best effort, as the seal: if it cannot be written, recovery takes the log for one
/// that crashed, which is what it did before the record existed.
pub(crate) async fn record(shared: &Shared, log_id: u64, epoch: u64) {
    let (meta, record) = {
        let index = shared.index.read().unwrap_or_else(|p| p.into_inner());
        let Some(last) = index.segments.last() else {
            return;
        };
        let meta = Meta {
            format: shared.format,
            log_id,
            epoch,
            first_lsn: index.first_lsn,
        };
        let record = CleanClose {
            next_lsn: last.next_lsn(),
            segment_first: last.first_lsn,
            data_end: last.end,
        };
        (meta, record)
    };
    // Only entries known durable may be vouched for (close syncs before it seals).
    if shared.durable_lsn() != record.last() {
        debug_assert!(false, "a clean close with entries not durable");
        return;
    }
    // The temporary file is synced before the rename and the directory after it (see
    // `segment::write_record`): the record survives a crash whole or not at all, and only
    // after every entry it names.
    let bytes = record.encode(&meta);
    let dir = &shared.dir;
    if let Err(e) = segment::write_record(&shared.driver, dir, META_TMP, META_FILE, &bytes).await {
        tracing::warn!(dir = %dir.display(), error = %e, "wal: the clean-close record could not be written; a later recovery takes the log for one that crashed");
    }
}

/// Removes the record before a read-write open hands the log to its writer (invariant 2): the
/// meta file rewritten without it, durably.
pub(crate) async fn remove(driver: &IoDriver, dir: &Path, meta: &Meta) -> Result<()> {
    meta.write(driver, dir).await
}

/// Holds the segments found (the log's epoch, below-start leftovers excluded, in log order) to
/// the record, before any is read: `Ok(Some)` if the last of them is the record's, so its scan
/// must find every entry the record names; `Ok(None)` if there is no record to hold them to.
///
/// # Errors
///
/// The record's last segment is missing and held entries: `ShortAfterCleanClose`, naming the
/// missing file.
pub(crate) fn check_segments(
    dir: &Path,
    meta: &Meta,
    record: Option<CleanClose>,
    found: &[(Lsn, std::path::PathBuf)],
) -> Result<Option<CleanClose>> {
    let Some(record) = record else {
        return Ok(None);
    };
    match found.last() {
        Some((first, _)) if *first == record.segment_first => Ok(Some(record)),
        Some((first, path)) if *first > record.segment_first => {
            // Only a build that does not know the record (it is removed at every read-write
            // open of this one) adds segments after it: the record is stale.
            tracing::warn!(segment = %path.display(), "wal: the clean-close record names an earlier last segment; it is stale and ignored");
            Ok(None)
        }
        _ if record.next_lsn > record.segment_first => Err(Error::corruption(
            dir.join(segment::segment_name(meta.epoch, record.segment_first)),
            0,
            CorruptionKind::ShortAfterCleanClose {
                expected_last: record.last(),
                found_last: Lsn(record.segment_first.0 - 1),
            },
        )),
        // The missing segment held no entry: nothing the record vouches for is lost.
        _ => Ok(None),
    }
}

/// What the bytes at the record's data end say about it, in the last segment read up to
/// `buf.len()` of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtEnd {
    /// The record applies: the seal, or anything but an entry at the record's next lsn.
    Applies,
    /// An entry of the record's next lsn follows the data end: written after the close by a
    /// build that does not know the record, which is stale.
    Stale,
    /// A frame starts at the data end and runs past what was read: read the whole segment.
    ReadMore,
}

pub(crate) fn at_end(record: &CleanClose, buf: &[u8], len: u64, format: FrameFormat) -> AtEnd {
    let Ok(at) = usize::try_from(record.data_end) else {
        return AtEnd::Applies;
    };
    match format.decode(buf, at, ACCEPT_MAX_PAYLOAD) {
        Decoded::Frame(f) if !f.seal && f.lsn == record.next_lsn => AtEnd::Stale,
        Decoded::Short { need } if (buf.len() as u64) < len && (at + need) as u64 <= len => {
            AtEnd::ReadMore
        }
        _ => AtEnd::Applies,
    }
}

/// Holds the entries a scan of the record's last segment kept to the record, before recovery
/// cuts or repairs anything: fewer is corruption at the damage (`bad`: its offset and kind) or
/// where the entries end (an incomplete batch, or `ShortAfterCleanClose`); more means the record
/// is stale in a way [`at_end`] could not see (an older build truncated the log and wrote past
/// the record's end), which is refused rather than guessed at.
pub(crate) fn check_entries(
    path: &Path,
    record: &CleanClose,
    found_next: Lsn,
    bad: Option<&(usize, CorruptionKind)>,
    incomplete: bool,
    entries_end: usize,
) -> Result<()> {
    if found_next > record.next_lsn {
        return Err(Error::corruption(
            path.parent().unwrap_or(path).join(META_FILE),
            56,
            CorruptionKind::BadHeader {
                field: "clean-close record (the log holds entries past it)",
            },
        ));
    }
    if found_next == record.next_lsn {
        return Ok(());
    }
    let (at, kind) = match bad {
        Some((at, kind)) => (*at, kind.clone()),
        None if incomplete => (entries_end, CorruptionKind::IncompleteBatch),
        None => (
            entries_end,
            CorruptionKind::ShortAfterCleanClose {
                expected_last: record.last(),
                found_last: Lsn(found_next.0 - 1),
            },
        ),
    };
    Err(Error::corruption(path, at as u64, kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::{ChecksumKind, LengthEncoding};

    fn meta() -> Meta {
        Meta {
            format: FrameFormat {
                length: LengthEncoding::U32,
                checksum: ChecksumKind::Crc32,
                timestamps: false,
            },
            log_id: 7,
            epoch: 1,
            first_lsn: Lsn(3),
        }
    }

    #[test]
    fn the_record_round_trips_and_damage_is_named() {
        let r = CleanClose {
            next_lsn: Lsn(40),
            segment_first: Lsn(20),
            data_end: 5000,
        };
        let b = r.encode(&meta());
        assert_eq!(Meta::decode(&b[..META_LEN]), Ok(meta()));
        assert_eq!(CleanClose::decode(&b), Ok(Some(r)));
        assert_eq!(CleanClose::decode(&b[..META_LEN]), Ok(None));
        // Bytes after the record are not read.
        let mut longer = b.to_vec();
        longer.extend_from_slice(&[9; 10]);
        assert_eq!(CleanClose::decode(&longer), Ok(Some(r)));
        for i in 0..LEN {
            let mut d = b;
            d[i] ^= 0x10;
            let want = if (48..56).contains(&i) {
                CorruptionKind::BadMagic
            } else {
                CorruptionKind::HeaderChecksum
            };
            assert_eq!(CleanClose::decode(&d), Err((48, want)), "byte {i}");
        }
        assert_eq!(
            CleanClose::decode(&b[..LEN - 1]),
            Err((48, CorruptionKind::BadHeader { field: "length" }))
        );
        for bad in [
            CleanClose {
                segment_first: Lsn(0),
                ..r
            },
            CleanClose {
                segment_first: Lsn(41),
                ..r
            },
            CleanClose { data_end: 10, ..r },
        ] {
            assert_eq!(
                CleanClose::decode(&bad.encode(&meta())),
                Err((
                    48,
                    CorruptionKind::BadHeader {
                        field: "clean-close record"
                    }
                ))
            );
        }
    }

    #[test]
    fn the_read_limit_covers_the_seal_and_one_block_more() {
        for data_end in [64, 4095, 4096, 4097, 8191] {
            let r = CleanClose {
                next_lsn: Lsn(2),
                segment_first: Lsn(1),
                data_end,
            };
            let limit = r.read_limit();
            assert!(limit.is_multiple_of(DIRECT_BLOCK));
            assert!(
                limit >= data_end.next_multiple_of(512) + DIRECT_BLOCK,
                "{data_end}"
            );
            assert!(limit <= data_end + 2 * DIRECT_BLOCK, "{data_end}");
        }
    }
}
