//! The walk over one segment's frames: a pure function from the bytes of a segment (or a prefix
//! of them) to the entries they hold and the verdict on where those end — a clean end, the end a
//! cut record sets, a torn tail, or corruption. No I/O and no policy: recovery drives it with each
//! segment it read and acts on the verdict (cut the tail, refuse it under `Strict`, repair the cut
//! frame), the fuzz targets drive it with any bytes, and its tests (`walk/tests.rs`) with
//! hand-made images.
//!
//! The rules it applies (the contract in `docs/design.md`, *Recovery*, steps 3–5):
//! - frames are decoded from `start` on while their lsns run densely from `first_lsn`; a batch is
//!   kept only up to the frame that ends it (flag "continues" clear);
//! - a seal at the next lsn ends the entries and vouches for every one before it;
//! - where the frames stop (zeros, a bad frame, an incomplete batch), a valid frame further on
//!   whose lsn and synced lsn are at or past the first lost lsn proves the loss hit durable data:
//!   [`CorruptionKind::DamageBeforeValidData`], whatever the segment;
//! - otherwise, in the last segment, a bad frame, an incomplete batch or non-zero bytes past the
//!   end are a torn tail, to be cut at the end of the last complete batch; in any other segment
//!   they are corruption (a segment is synced before the next one receives data);
//! - with a cut record, the log ends at its lsn: no frame past it is read, and its own frame is
//!   accepted as `truncate_back` may have left it ([`FrameFormat::decode_cut`]).
//!
//! Invariants of a [`Walk`]: `offsets` rise strictly, each one is where the frame of lsn
//! `first_lsn + i` starts, and each fits in 32 bits; `kept <= offsets.len()`; `end` is where the
//! kept frames end (`start` if none); nothing past `buf` is read, and the end of `buf` reads as
//! zeros — so a buffer that stops at the end of the data walks as the whole segment would.
//! The walk never panics on any bytes (its asserts check its own bookkeeping).

use crate::error::CorruptionKind;
use crate::wal::Lsn;
use crate::wal::record::{ACCEPT_MAX_PAYLOAD, Decoded, FrameFormat, MAX_LSN};

/// What the walk of one segment needs to know.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WalkParams {
    pub(crate) format: FrameFormat,
    /// The lsn of the segment's first frame (from its header): at most [`MAX_LSN`].
    pub(crate) first_lsn: Lsn,
    /// Where the first frame starts in the buffer (after the segment header).
    pub(crate) start: usize,
    /// The lsn of a cut record: the log ends there.
    pub(crate) cut: Option<Lsn>,
    /// The last segment of the log: the only one that may end in a torn tail.
    pub(crate) is_last: bool,
}

/// The frames of one segment and the verdict on where they end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Walk {
    /// Where every frame walked starts, in lsn order from `first_lsn` (those of an unfinished
    /// batch included).
    pub(crate) offsets: Vec<u32>,
    /// How many of `offsets` are the segment's entries; the rest belong to an unfinished batch
    /// and go with the torn tail.
    pub(crate) kept: usize,
    /// Where the kept frames end: the next frame of the log goes here.
    pub(crate) end: usize,
    /// Where the walk stopped decoding: zeros, a seal, a bad frame, or past the cut.
    pub(crate) stopped_at: usize,
    /// The damaged frame the walk stopped at, if it stopped at one: its offset and what is
    /// wrong (recovery names it when a clean close vouches for the entries it ends).
    pub(crate) first_bad: Option<(usize, CorruptionKind)>,
    pub(crate) outcome: Outcome,
}

/// How a segment's entries end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// At zeros, the end of the buffer, or a clean close's seal.
    Clean,
    /// At the cut record's lsn: the log ends in this segment, at `end`. `repair` is the last kept
    /// frame as `truncate_back` was rewriting it (offset, bytes), where the buffer holds other
    /// bytes (the old frame, or the two torn).
    Cut { repair: Option<(usize, Vec<u8>)> },
    /// At a torn tail starting at `end`: `bytes` of data up to the last non-zero byte of the
    /// buffer (at least the damage), to be cut.
    TornTail { bytes: u64 },
    /// At damage that is corruption: the segment cannot be opened.
    Corrupt(Damage),
}

/// Damage that is corruption: a byte offset in the segment and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    pub(crate) offset: u64,
    pub(crate) kind: CorruptionKind,
}

/// Where and why the frame loop stopped.
#[derive(Debug)]
enum Stop {
    /// Zeros or the buffer's end at the next frame's place.
    End,
    /// A seal at the next lsn, ending `len` bytes further; it ends the entries only if no batch
    /// is open before it.
    Seal { len: usize },
    /// A frame that is not the next one: damage at `at`.
    Bad { at: usize, kind: CorruptionKind },
    /// The cut record's lsn is reached; the frame at the cut as it is to be, if it was found.
    Cut { frame: Option<(usize, Vec<u8>)> },
}

/// Walks the frames of `buf` (a segment's bytes from offset 0, or a prefix of them) and judges
/// where its entries end. See the [module](self) documentation for the rules and invariants.
/// (Recovery itself walks with [`walk_frames_from`], from the frames walked as they were read.)
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn walk_frames(buf: &[u8], params: &WalkParams) -> Walk {
    walk_frames_from(buf, params, Prewalk::new(params))
}

/// `walk_frames`, taking up from where `done` stopped over a prefix of the same bytes: the
/// frames it took are not decoded again. The same walk as `walk_frames` gives (`done` is
/// ignored if it walked with other parameters).
pub(crate) fn walk_frames_from(buf: &[u8], params: &WalkParams, done: Prewalk) -> Walk {
    assert!(
        (1..=MAX_LSN).contains(&params.first_lsn.0),
        "a segment's first lsn {} comes from a checked header",
        params.first_lsn
    );
    let done = if done.walks_as(params) {
        done
    } else {
        Prewalk::new(params)
    };
    let mut walk = Walk {
        offsets: done.offsets,
        kept: done.kept,
        end: done.end,
        stopped_at: done.pos,
        first_bad: None,
        outcome: Outcome::Clean,
    };
    let stop = decode_frames(buf, params, &mut walk);
    if let Stop::Bad { at, kind } = &stop {
        walk.first_bad = Some((*at, kind.clone()));
    }
    assert!(
        walk.kept <= walk.offsets.len() && walk.end <= walk.stopped_at.max(params.start),
        "the frame walk lost count: {} kept of {}, end {} past {}",
        walk.kept,
        walk.offsets.len(),
        walk.end,
        walk.stopped_at
    );
    walk.outcome = judge(buf, params, &walk, stop).unwrap_or_else(Outcome::Corrupt);
    walk
}

/// Decodes frames from `walk.stopped_at` (`params.start`, or where a [`Prewalk`] stopped) while
/// they are the next ones, recording them in `walk`.
fn decode_frames(buf: &[u8], params: &WalkParams, walk: &mut Walk) -> Stop {
    let format = params.format;
    let mut pos = walk.stopped_at;
    let mut expected = Lsn(params.first_lsn.0 + walk.offsets.len() as u64);
    let stop = loop {
        if params.cut.is_some_and(|c| expected > c) {
            // An interrupted `truncate_back` ends the log before this frame: whatever is left of
            // the frames after its cut (whole, zeroed or torn sector by sector) is not read.
            break Stop::Cut { frame: None };
        }
        let offset = u32::try_from(pos).ok();
        if params.cut == Some(expected)
            && let Some(offset) = offset
            && let Some((frame, bytes)) = format
                .decode_cut(buf, pos, ACCEPT_MAX_PAYLOAD)
                .filter(|(f, _)| f.lsn == expected && !f.seal)
        {
            // The last frame kept by an interrupted `truncate_back`, which may have been
            // rewriting it to end its batch: it ends the log, whatever of the rewrite landed.
            walk.offsets.push(offset);
            let frame_at = pos;
            pos += frame.len;
            walk.kept = walk.offsets.len();
            walk.end = pos;
            break Stop::Cut {
                frame: Some((frame_at, bytes)),
            };
        }
        match (format.decode(buf, pos, ACCEPT_MAX_PAYLOAD), offset) {
            // A clean close's seal: the entries end here. (After an unfinished batch it is found
            // by the search for valid data as a frame vouching for lost data: corruption.)
            (Decoded::Frame(frame), _) if frame.seal && frame.lsn == expected => {
                break Stop::Seal { len: frame.len };
            }
            (Decoded::Frame(frame), Some(offset)) if frame.lsn == expected => {
                walk.offsets.push(offset);
                pos += frame.len;
                expected = expected.next();
                if !frame.continues {
                    walk.kept = walk.offsets.len();
                    walk.end = pos;
                }
            }
            (Decoded::Frame(frame), _) => {
                let kind = CorruptionKind::LsnMismatch {
                    expected,
                    found: frame.lsn,
                };
                break Stop::Bad { at: pos, kind };
            }
            (Decoded::End, _) => break Stop::End,
            (Decoded::Short { need }, _) => {
                let kind = CorruptionKind::FrameLength { len: need as u64 };
                break Stop::Bad { at: pos, kind };
            }
            (Decoded::Bad(kind), _) => break Stop::Bad { at: pos, kind },
        }
    };
    walk.stopped_at = pos;
    stop
}

/// The first steps of a walk, taken over a prefix of a segment's bytes while the rest is still
/// being read: the frames that lie wholly in the prefix and that the walk takes as entries in
/// any case (the next lsn, not a seal, not at or past a cut record's lsn). Everything else —
/// where the frames stop and what that means — is left to [`walk_frames_from`] over the whole
/// buffer. A frame's decoding depends only on its own bytes, which the prefix holds as the
/// whole buffer does, so the walk taken up from here is the one `walk_frames` takes.
#[derive(Debug, Clone)]
pub(crate) struct Prewalk {
    format: FrameFormat,
    first_lsn: Lsn,
    start: usize,
    cut: Option<Lsn>,
    /// Where the next frame starts.
    pos: usize,
    offsets: Vec<u32>,
    kept: usize,
    end: usize,
}

impl Prewalk {
    /// A walk with these parameters that has taken no frame yet.
    pub(crate) fn new(params: &WalkParams) -> Prewalk {
        Prewalk {
            format: params.format,
            first_lsn: params.first_lsn,
            start: params.start,
            cut: params.cut,
            pos: params.start,
            offsets: Vec::new(),
            kept: 0,
            end: params.start,
        }
    }

    /// The same walk, started over (for bytes read anew).
    pub(crate) fn restarted(&self) -> Prewalk {
        Prewalk {
            pos: self.start,
            offsets: Vec::new(),
            kept: 0,
            end: self.start,
            ..self.clone()
        }
    }

    fn walks_as(&self, params: &WalkParams) -> bool {
        self.format == params.format
            && self.first_lsn == params.first_lsn
            && self.start == params.start
            && self.cut == params.cut
    }

    /// Takes the frames of `prefix` (the segment's first bytes, longer at each call) from where
    /// the last call stopped, as long as they are entries whatever follows them.
    pub(crate) fn advance(&mut self, prefix: &[u8]) {
        if !(1..=MAX_LSN).contains(&self.first_lsn.0) {
            // No segment starts there: the header check refuses it before any walk.
            return;
        }
        loop {
            let expected = Lsn(self.first_lsn.0 + self.offsets.len() as u64);
            if self.cut.is_some_and(|c| expected >= c) {
                return;
            }
            let Ok(offset) = u32::try_from(self.pos) else {
                return;
            };
            match self.format.decode(prefix, self.pos, ACCEPT_MAX_PAYLOAD) {
                Decoded::Frame(frame) if frame.lsn == expected && !frame.seal => {
                    self.offsets.push(offset);
                    self.pos += frame.len;
                    if !frame.continues {
                        self.kept = self.offsets.len();
                        self.end = self.pos;
                    }
                }
                _ => return,
            }
        }
    }
}

/// The verdict on where the walked frames end (see the [module](self) documentation).
fn judge(buf: &[u8], params: &WalkParams, walk: &Walk, stop: Stop) -> Result<Outcome, Damage> {
    let pos = walk.stopped_at;
    let committed_end = walk.end;
    let (bad, sealed_end) = match stop {
        Stop::Cut { frame } => {
            let repair = frame.filter(|(at, bytes)| buf.get(*at..*at + bytes.len()) != Some(bytes));
            return Ok(Outcome::Cut { repair });
        }
        Stop::End => (None, None),
        Stop::Seal { len } => (None, (walk.kept == walk.offsets.len()).then_some(pos + len)),
        Stop::Bad { at, kind } => (Some((at, kind)), None),
    };
    // A valid frame after the point where the walk stopped, written when the lost lsn was already
    // durable, means durable data is damaged: corruption, not a torn tail. (Past a clean end this
    // finds a zeroed block followed by frames; past a bad frame, frames after it.) Later frames
    // that are not synced past the loss are unsynced writes that reached the disk out of order.
    let search_from = bad.as_ref().map_or(pos, |(at, _)| at + 1);
    let lost = Lsn(params.first_lsn.0 + walk.kept as u64);
    if let Some(next_valid) = find_valid_frame(buf, search_from, params.format, lost) {
        return Err(Damage {
            offset: bad.as_ref().map_or(pos, |(at, _)| *at) as u64,
            kind: CorruptionKind::DamageBeforeValidData {
                next_valid_offset: next_valid as u64,
            },
        });
    }
    let incomplete = walk.kept < walk.offsets.len();
    // Bytes past a clean end of the last segment (a zeroed frame, then frames that were not
    // synced past it) are unsynced writes that landed out of order: a torn tail, to be cut, or a
    // later append of the same size would make them part of the log again.
    let stray = params.is_last
        && bad.is_none()
        && !incomplete
        && buf
            .get(sealed_end.unwrap_or(committed_end)..)
            .is_some_and(|rest| first_nonzero(rest).is_some());
    let (at, kind) = match bad {
        Some(bad) => bad,
        None if incomplete => (committed_end, CorruptionKind::IncompleteBatch),
        None if stray => (committed_end, CorruptionKind::TornTail { bytes: 0 }),
        None => return Ok(Outcome::Clean),
    };
    if !params.is_last {
        // Segments are synced before the next one receives data: only the last can be torn.
        return Err(Damage {
            offset: at as u64,
            kind,
        });
    }
    let data_end = buf
        .iter()
        .rposition(|&b| b != 0)
        .map_or(committed_end, |i| i + 1)
        .max(committed_end);
    Ok(Outcome::TornTail {
        bytes: (data_end - committed_end) as u64,
    })
}

/// Looks for a frame with a valid checksum, an lsn of at least `lost` and a synced lsn of at least
/// `lost` anywhere in `buf[from..]`: proof that the data lost at `lost` had been durable, so the
/// damage is not a torn tail. Zeros are skipped fast; a candidate's lsn is checked for
/// plausibility before its checksum is computed.
pub(crate) fn find_valid_frame(
    buf: &[u8],
    from: usize,
    format: FrameFormat,
    lost: Lsn,
) -> Option<usize> {
    let min_lsn = lost;
    let mut i = from;
    while i < buf.len() {
        let nonzero = first_nonzero(&buf[i..])?;
        let run_start = i + nonzero;
        // A frame may begin with zero bytes (a small length's high bytes are zero... or a zero
        // length), so try the few positions before the first non-zero byte too.
        let mut candidate = run_start.saturating_sub(10).max(from);
        while candidate <= run_start {
            if frame_at(buf, candidate, format, min_lsn) {
                return Some(candidate);
            }
            candidate += 1;
        }
        // Then every position inside the non-zero run.
        let mut j = run_start + 1;
        while j < buf.len() && buf[j] != 0 {
            if frame_at(buf, j, format, min_lsn) {
                return Some(j);
            }
            j += 1;
        }
        i = j;
    }
    None
}

/// The index of the first non-zero byte: a preallocated segment's tail is megabytes of zeros,
/// skipped 256 bytes at a time (an OR of 64-bit words over a block, which the compiler
/// vectorizes; a byte-wise OR took three times as long in a recovery profile).
fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    const BLOCK: usize = 256;
    let mut blocks = bytes.chunks_exact(BLOCK);
    let mut at = 0;
    for block in blocks.by_ref() {
        let any = block.chunks_exact(8).fold(0u64, |acc, w| {
            acc | u64::from_ne_bytes(w.try_into().unwrap_or([0; 8]))
        });
        if any != 0 {
            return block.iter().position(|&b| b != 0).map(|k| at + k);
        }
        at += BLOCK;
    }
    blocks
        .remainder()
        .iter()
        .position(|&b| b != 0)
        .map(|k| at + k)
}

fn frame_at(buf: &[u8], at: usize, format: FrameFormat, min_lsn: Lsn) -> bool {
    match format.peek_lsn(buf, at) {
        Some(lsn) if lsn >= min_lsn && lsn.0 - min_lsn.0 < (1 << 40) => {
            matches!(format.decode(buf, at, ACCEPT_MAX_PAYLOAD), Decoded::Frame(f) if f.lsn == lsn && f.synced_lsn >= min_lsn)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
