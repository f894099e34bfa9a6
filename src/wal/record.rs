//! The frame codec: how one entry is laid out in a segment, and the limits every reader of frames
//! applies. Everything that reads or writes a frame's bytes goes through [`FrameFormat`]: the
//! length field is parsed in one place ([`FrameFormat::read_length`]) and the size of the fields
//! before the payload is computed in one place ([`FrameFormat::header_len`]).
//!
//! ```text
//! field       size            meaning
//! length      2/4/8/1..10     payload length (u16, u32 or u64 little endian, or uvarint)
//! checksum    4 or 8          crc32 or crc64 (the log's choice) of every byte after it
//! flags       1               bit 0: a term follows; bit 1: the batch continues in the next frame;
//!                             bit 2: a seal, not an entry (see below)
//! lsn         8               the entry's sequence number, u64 little endian
//! synced      4               lsn minus the log's durable lsn when the frame was written, u32 LE,
//!                             clamped to u32::MAX (so never claiming more durability than real)
//! term        8               Raft term, u64 little endian (only with flag bit 0)
//! timestamp   8               microseconds since the Unix epoch (only if the log records them)
//! payload     length
//! ```
//!
//! Invariants: a frame is never all zeros in its first `length + checksum + flags + lsn` bytes
//! (its lsn is at least 1), so zeros mark the end of a segment's data (segments are preallocated
//! with zeros). The checksum covers the lsn, so a frame found at the wrong place is detected.
//! A uvarint length is written in its shortest form, and any other spelling is refused: the
//! checksum does not cover the length, so each frame has one spelling. Decoding never panics on
//! any bytes: every length is checked against the buffer before it is used. The encoder asserts
//! its own bounds before it writes (a payload within [`ACCEPT_MAX_PAYLOAD`] and the length
//! encoding, an lsn of at least 1 above its synced lsn, exactly [`FrameFormat::frame_len`]
//! bytes), and the decoder asserts what holds for every frame it accepts: both are real
//! `assert!`s, as a frame that breaks them would be refused or misread by recovery.
//!
//! The `synced` field lets recovery tell a torn tail from corruption: everything up to a frame's
//! synced lsn was durable before the frame was written. Damage at lsn L followed by a valid frame
//! whose synced lsn is at least L hit durable data: corruption. If every later frame's synced lsn
//! is below L, the damage and those frames are unsynced writes that reached the disk out of
//! order: a torn tail.
//!
//! No frame after them vouches for the entries of the last sync, though. So `close`, after its
//! last sync, writes a seal where the next entry would go: a frame with flag bit 2, the next
//! lsn, its synced lsn the last one, no term, no payload and a zero timestamp (any other seal
//! is refused). Recovery ends the segment's entries
//! at it, and it vouches for everything before it; the next append overwrites it (an entry's
//! frame is never shorter).

use bytes::{BufMut, BytesMut};

use super::{ChecksumKind, LengthEncoding, Lsn};
use crate::error::CorruptionKind;

/// The largest payload a frame may carry, for recovery and reads alike: the largest
/// `max_entry_bytes` allowed, so every frame a writer makes is accepted.
pub(crate) const ACCEPT_MAX_PAYLOAD: u64 = 1 << 30;

/// The largest segment file a writer makes: frame offsets in the index are 32-bit.
pub(crate) const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;

/// The largest lsn the log hands out; lsns from disk above it are refused, so arithmetic on
/// them cannot overflow.
pub(crate) const MAX_LSN: u64 = 1 << 62;

const _: () = assert!(ACCEPT_MAX_PAYLOAD < MAX_SEGMENT_BYTES);

/// Flag: a Raft term follows the lsn.
const FLAG_TERM: u8 = 1;
/// Flag: the next frame belongs to the same atomic batch; the batch's last frame has it clear
/// and serves as its commit marker.
const FLAG_CONTINUES: u8 = 2;
/// Flag: a seal, not an entry (see the module documentation).
const FLAG_SEAL: u8 = 4;
const KNOWN_FLAGS: u8 = FLAG_TERM | FLAG_CONTINUES | FLAG_SEAL;

/// Sizes of the fields after the checksum (see the table in the module documentation).
const FLAGS_LEN: usize = 1;
const LSN_LEN: usize = 8;
const SYNCED_LEN: usize = 4;
const TERM_LEN: usize = 8;
const TIMESTAMP_LEN: usize = 8;
/// The longest uvarint length field: 64 bits, 7 per byte.
const UVARINT_MAX_LEN: usize = 10;

/// The per-log parameters of the frame layout, read from each segment's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameFormat {
    pub(crate) length: LengthEncoding,
    pub(crate) checksum: ChecksumKind,
    pub(crate) timestamps: bool,
}

/// A decoded frame; `payload` is a range of the buffer it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FrameRef {
    pub(crate) lsn: Lsn,
    /// The log's durable lsn when the frame was written.
    pub(crate) synced_lsn: Lsn,
    pub(crate) term: Option<u64>,
    pub(crate) timestamp_us: Option<u64>,
    pub(crate) continues: bool,
    /// A seal, not an entry: everything before its lsn was durable.
    pub(crate) seal: bool,
    pub(crate) payload: std::ops::Range<usize>,
    /// Bytes from the frame's start to its end.
    pub(crate) len: usize,
}

/// The header fields of a frame to encode.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameFields {
    pub(crate) lsn: Lsn,
    pub(crate) synced_lsn: Lsn,
    pub(crate) term: Option<u64>,
    pub(crate) timestamp_us: u64,
    pub(crate) continues: bool,
}

/// The outcome of decoding at one position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decoded {
    Frame(FrameRef),
    /// Zeros where a header would be: the end of the written data.
    End,
    /// The buffer ends before the frame does; it needs at least this many bytes from the
    /// position.
    Short {
        need: usize,
    },
    /// Not a valid frame.
    Bad(CorruptionKind),
}

/// A frame's length field, as [`FrameFormat::read_length`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LengthField {
    /// The payload length, and the size of the field in bytes.
    Read { len: u64, bytes: usize },
    /// The buffer ends inside the field: it needs at least this many bytes.
    Short { need: usize },
    /// No length the log writes: a uvarint above 64 bits (`len` is then `u64::MAX`) or not in its
    /// shortest form.
    Bad { len: u64 },
}

const CRC64: crc::Crc<u64, crc::Table<16>> = crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_XZ);

enum Hasher {
    Crc32(crc32fast::Hasher),
    Crc64(crc::Digest<'static, u64, crc::Table<16>>),
}

impl Hasher {
    fn new(kind: ChecksumKind) -> Hasher {
        match kind {
            ChecksumKind::Crc32 => Hasher::Crc32(crc32fast::Hasher::new()),
            ChecksumKind::Crc64 => Hasher::Crc64(CRC64.digest()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Crc32(h) => h.update(bytes),
            Hasher::Crc64(h) => h.update(bytes),
        }
    }

    fn finish(self) -> u64 {
        match self {
            Hasher::Crc32(h) => u64::from(h.finalize()),
            Hasher::Crc64(h) => h.finalize(),
        }
    }
}

fn uvarint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// The `N` bytes at `b[at..]`; zeros if `b` is too short (callers checked that it is not).
/// Fixed-size reads: this is on the read and recovery paths.
#[inline]
fn bytes_at<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b.get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; N])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes_at(b, at))
}

/// The size of a frame whose fields before the payload take `header` bytes, if it is
/// addressable.
fn frame_total(header: usize, len: u64) -> Option<usize> {
    usize::try_from((header as u64).checked_add(len)?).ok()
}

impl FrameFormat {
    /// The largest payload the length encoding can express.
    pub(crate) fn max_payload(&self) -> u64 {
        match self.length {
            LengthEncoding::U16 => u64::from(u16::MAX),
            LengthEncoding::U32 => u64::from(u32::MAX),
            LengthEncoding::U64 | LengthEncoding::Uvarint => u64::MAX,
        }
    }

    fn checksum_len(&self) -> usize {
        match self.checksum {
            ChecksumKind::Crc32 => 4,
            ChecksumKind::Crc64 => 8,
        }
    }

    fn length_len(&self, payload_len: u64) -> usize {
        match self.length {
            LengthEncoding::U16 => 2,
            LengthEncoding::U32 => 4,
            LengthEncoding::U64 => 8,
            LengthEncoding::Uvarint => uvarint_len(payload_len),
        }
    }

    /// Where the flags byte sits in a frame whose length field takes `length_len` bytes (the
    /// checksum covers everything from there on).
    fn flags_at(&self, length_len: usize) -> usize {
        length_len + self.checksum_len()
    }

    /// The bytes that are never all zeros at the start of a frame: length, checksum, flags, lsn.
    fn never_zero_len(&self, length_len: usize) -> usize {
        self.flags_at(length_len) + FLAGS_LEN + LSN_LEN
    }

    /// The size of every field before the payload, for a length field of `length_len` bytes.
    fn header_len(&self, length_len: usize, has_term: bool) -> usize {
        self.flags_at(length_len)
            + FLAGS_LEN
            + LSN_LEN
            + SYNCED_LEN
            + if has_term { TERM_LEN } else { 0 }
            + if self.timestamps { TIMESTAMP_LEN } else { 0 }
    }

    /// The encoded size of a frame.
    pub(crate) fn frame_len(&self, payload_len: usize, has_term: bool) -> usize {
        self.header_len(self.length_len(payload_len as u64), has_term) + payload_len
    }

    /// Reads the length field at the start of `rest`: the one parser of it.
    #[inline]
    pub(crate) fn read_length(&self, rest: &[u8]) -> LengthField {
        let fixed = |len: u64, bytes: usize| {
            if rest.len() >= bytes {
                LengthField::Read { len, bytes }
            } else {
                LengthField::Short { need: bytes }
            }
        };
        match self.length {
            LengthEncoding::U16 => fixed(u16::from_le_bytes(bytes_at(rest, 0)).into(), 2),
            LengthEncoding::U32 => fixed(u32::from_le_bytes(bytes_at(rest, 0)).into(), 4),
            LengthEncoding::U64 => fixed(u64_at(rest, 0), 8),
            LengthEncoding::Uvarint => {
                let mut len = 0u64;
                for i in 0..UVARINT_MAX_LEN {
                    let Some(&byte) = rest.get(i) else {
                        return LengthField::Short { need: i + 1 };
                    };
                    // The tenth byte holds bit 63 only.
                    if i == UVARINT_MAX_LEN - 1 && byte > 1 {
                        return LengthField::Bad { len: u64::MAX };
                    }
                    len |= u64::from(byte & 0x7f) << (7 * i);
                    if byte & 0x80 == 0 {
                        // Over-long ("0x85 0x00" for 5) is not how the log writes a length.
                        if i > 0 && byte == 0 {
                            return LengthField::Bad { len };
                        }
                        return LengthField::Read { len, bytes: i + 1 };
                    }
                }
                LengthField::Bad { len: u64::MAX }
            }
        }
    }

    /// Appends one frame to `out`. The caller has checked the payload against the log's limits
    /// (`max_entry_bytes`, [`max_payload`](Self::max_payload)); this asserts them.
    pub(crate) fn encode(&self, out: &mut BytesMut, fields: FrameFields, payload: &[u8]) {
        let FrameFields {
            lsn,
            synced_lsn,
            term,
            timestamp_us,
            continues,
        } = fields;
        let len = payload.len() as u64;
        assert!(lsn.0 >= 1, "a frame for lsn 0 (lsns start at 1)");
        assert!(
            synced_lsn < lsn,
            "a frame for lsn {lsn} claims {synced_lsn} durable: not before it is written"
        );
        assert!(
            len <= self.max_payload().min(ACCEPT_MAX_PAYLOAD),
            "a frame of {len} payload bytes, over the limit of its format {self:?}"
        );
        let start = out.len();
        let frame_len = self.frame_len(payload.len(), term.is_some());
        out.reserve(frame_len);
        match self.length {
            LengthEncoding::U16 => {
                out.put_u16_le(u16::try_from(len).expect("a u16 length within max_payload"))
            }
            LengthEncoding::U32 => {
                out.put_u32_le(u32::try_from(len).expect("a u32 length within max_payload"))
            }
            LengthEncoding::U64 => out.put_u64_le(len),
            LengthEncoding::Uvarint => {
                let mut v = len;
                while v >= 0x80 {
                    out.put_u8((v & 0x7f) as u8 | 0x80);
                    v >>= 7;
                }
                out.put_u8(v as u8);
            }
        }
        let checksum_at = out.len();
        out.put_bytes(0, self.checksum_len());
        let mut flags = 0;
        if term.is_some() {
            flags |= FLAG_TERM;
        }
        if continues {
            flags |= FLAG_CONTINUES;
        }
        out.put_u8(flags);
        out.put_u64_le(lsn.0);
        // Clamped: a frame never claims more durability than there was.
        out.put_u32_le(u32::try_from(lsn.0 - synced_lsn.0).unwrap_or(u32::MAX));
        if let Some(term) = term {
            out.put_u64_le(term);
        }
        if self.timestamps {
            out.put_u64_le(timestamp_us);
        }
        out.put_slice(payload);
        self.store_checksum(&mut out[start..], checksum_at - start);
        assert_eq!(
            out.len() - start,
            frame_len,
            "a frame encoded to another size than frame_len gives"
        );
    }

    /// Decodes the frame starting at `buf[at..]`, accepting payloads up to `max_payload` bytes.
    pub(crate) fn decode(&self, buf: &[u8], at: usize, max_payload: u64) -> Decoded {
        let rest = buf.get(at..).unwrap_or_default();
        let (len, length_len) = match self.read_length(rest) {
            LengthField::Read { len, bytes } => (len, bytes),
            LengthField::Short { need } => return self.short_or_end(rest, need),
            LengthField::Bad { len } => return Decoded::Bad(CorruptionKind::FrameLength { len }),
        };
        let never_zero = self.never_zero_len(length_len);
        let Some(head) = rest.get(..never_zero) else {
            return self.short_or_end(rest, never_zero);
        };
        if head.iter().all(|&b| b == 0) {
            return Decoded::End;
        }
        if len > max_payload {
            return Decoded::Bad(CorruptionKind::FrameLength { len });
        }
        let flags_at = self.flags_at(length_len);
        let flags = head[flags_at];
        if flags & !KNOWN_FLAGS != 0 {
            return Decoded::Bad(CorruptionKind::BadHeader {
                field: "frame flags",
            });
        }
        let has_term = flags & FLAG_TERM != 0;
        let continues = flags & FLAG_CONTINUES != 0;
        let seal = flags & FLAG_SEAL != 0;
        if seal && (has_term || continues || len != 0) {
            return Decoded::Bad(CorruptionKind::BadHeader {
                field: "frame flags",
            });
        }
        let header = self.header_len(length_len, has_term);
        let Some(total) = frame_total(header, len) else {
            return Decoded::Bad(CorruptionKind::FrameLength { len });
        };
        let Some(frame) = rest.get(..total) else {
            return Decoded::Short { need: total };
        };
        let stored = match self.checksum {
            ChecksumKind::Crc32 => u32::from_le_bytes(bytes_at(frame, length_len)).into(),
            ChecksumKind::Crc64 => u64_at(frame, length_len),
        };
        if self.checksum_of(&frame[flags_at..]) != stored {
            return Decoded::Bad(CorruptionKind::FrameChecksum);
        }
        let lsn_at = flags_at + FLAGS_LEN;
        let lsn = Lsn(u64_at(frame, lsn_at));
        if lsn.0 == 0 {
            return Decoded::Bad(CorruptionKind::BadHeader { field: "frame lsn" });
        }
        let synced_at = lsn_at + LSN_LEN;
        let back = u64::from(u32::from_le_bytes(bytes_at::<SYNCED_LEN>(frame, synced_at)));
        if back == 0 || back > lsn.0 {
            return Decoded::Bad(CorruptionKind::BadHeader {
                field: "frame synced lsn",
            });
        }
        let mut pos = synced_at + SYNCED_LEN;
        let term = has_term.then(|| {
            pos += TERM_LEN;
            u64_at(frame, pos - TERM_LEN)
        });
        let timestamp_us = self.timestamps.then(|| {
            pos += TIMESTAMP_LEN;
            u64_at(frame, pos - TIMESTAMP_LEN)
        });
        // A seal is written one way only (see `encode_seal`).
        if seal && (back != 1 || timestamp_us.is_some_and(|t| t != 0)) {
            return Decoded::Bad(CorruptionKind::BadHeader {
                field: "frame flags",
            });
        }
        // What every accepted frame satisfies, whatever the bytes were: its fields before the
        // payload are the header's size, it was durable only below its own lsn, and a seal is
        // bare (see the checks above).
        assert!(
            pos == header && (1..=lsn.0).contains(&back),
            "decode accepted a frame with a broken header at {at}: lsn {lsn}, synced {back} back"
        );
        assert!(
            !seal || (len == 0 && !continues && !has_term),
            "decode accepted a seal that is not bare at {at}"
        );
        Decoded::Frame(FrameRef {
            lsn,
            synced_lsn: Lsn(lsn.0 - back),
            term,
            timestamp_us,
            continues,
            seal,
            payload: at + pos..at + total,
            len: total,
        })
    }

    /// The lsn a frame starting at `buf[at..]` would carry, read without checking anything else:
    /// a cheap filter before [`decode`](Self::decode) when searching damaged data.
    pub(crate) fn peek_lsn(&self, buf: &[u8], at: usize) -> Option<Lsn> {
        let rest = buf.get(at..)?;
        let LengthField::Read { bytes, .. } = self.read_length(rest) else {
            return None;
        };
        let lsn_at = self.flags_at(bytes) + FLAGS_LEN;
        rest.get(lsn_at..lsn_at + LSN_LEN)?;
        Some(Lsn(u64_at(rest, lsn_at)))
    }

    /// The checksum of a frame's bytes after its checksum field.
    fn checksum_of(&self, body: &[u8]) -> u64 {
        let mut hasher = Hasher::new(self.checksum);
        hasher.update(body);
        hasher.finish()
    }

    /// Computes the checksum of everything after the checksum field of `frame` (a whole frame,
    /// whose length field takes `length_len` bytes) and stores it there.
    pub(crate) fn store_checksum(&self, frame: &mut [u8], length_len: usize) {
        let body_at = self.flags_at(length_len);
        let sum = self.checksum_of(&frame[body_at..]);
        let field = &mut frame[length_len..body_at];
        match self.checksum {
            // A crc32 is a u32 held in a u64: its 4 low bytes.
            ChecksumKind::Crc32 => field.copy_from_slice(&sum.to_le_bytes()[..4]),
            ChecksumKind::Crc64 => field.copy_from_slice(&sum.to_le_bytes()),
        }
    }

    /// At the end of the buffer: all zeros so far is the end of the data, else more is needed.
    fn short_or_end(&self, rest: &[u8], need: usize) -> Decoded {
        if rest.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Short { need }
        }
    }

    /// The size of the length field and of the whole frame starting at `rest[0]`, read from its
    /// length and flags without checking anything else; `None` if `rest` is too short to say,
    /// its length field is not one the log writes, or its first bytes are zeros (no frame).
    pub(crate) fn frame_extent(&self, rest: &[u8]) -> Option<(usize, usize)> {
        let LengthField::Read { len, bytes } = self.read_length(rest) else {
            return None;
        };
        let head = rest.get(..self.never_zero_len(bytes))?;
        if head.iter().all(|&b| b == 0) {
            return None;
        }
        let has_term = head[self.flags_at(bytes)] & FLAG_TERM != 0;
        Some((bytes, frame_total(self.header_len(bytes, has_term), len)?))
    }

    /// Decodes the frame at `buf[at..]` as `truncate_back` may have left it when power failed while
    /// it rewrote that frame to end its batch: the old frame ("continues" set), the new one
    /// (cleared), or the two torn at one point of the checksum-and-flags bytes, as a device that
    /// keeps some sectors of a write and loses others leaves them. Everything else in the frame
    /// must be intact: the stored checksum bytes must be those computed from the frame's own body.
    /// Returns the frame as rewritten (ending its batch) and its new bytes, or `None`.
    pub(crate) fn decode_cut(
        &self,
        buf: &[u8],
        at: usize,
        max_payload: u64,
    ) -> Option<(FrameRef, Vec<u8>)> {
        let rest = buf.get(at..)?;
        let (length_len, total) = self.frame_extent(rest)?;
        let frame = rest.get(..total)?;
        let flags_at = self.flags_at(length_len);
        let mut old = frame.to_vec();
        old[flags_at] |= FLAG_CONTINUES;
        self.store_checksum(&mut old, length_len);
        let mut new = frame.to_vec();
        new[flags_at] &= !FLAG_CONTINUES;
        self.store_checksum(&mut new, length_len);
        let field = length_len..=flags_at;
        let (s, o, n) = (&frame[field.clone()], &old[field.clone()], &new[field]);
        let torn_mix = (0..=s.len()).any(|i| {
            (s[..i] == n[..i] && s[i..] == o[i..]) || (s[..i] == o[..i] && s[i..] == n[i..])
        });
        if !torn_mix {
            return None;
        }
        match self.decode(&new, 0, max_payload) {
            Decoded::Frame(mut f) => {
                f.payload = f.payload.start + at..f.payload.end + at;
                Some((f, new))
            }
            _ => None,
        }
    }

    /// Appends a seal for a log whose entries up to `next - 1` are all durable.
    pub(crate) fn encode_seal(&self, out: &mut BytesMut, next: Lsn) {
        let start = out.len();
        let fields = FrameFields {
            lsn: next,
            synced_lsn: Lsn(next.0 - 1),
            term: None,
            timestamp_us: 0,
            continues: false,
        };
        self.encode(out, fields, &[]);
        let length_len = self.length_len(0);
        out[start + self.flags_at(length_len)] |= FLAG_SEAL;
        self.store_checksum(&mut out[start..], length_len);
    }

    /// Rewrites the flags of the frame at the start of `frame` (a whole encoded frame) to clear
    /// the "batch continues" bit, and recomputes its checksum. Used when the log is cut inside a
    /// batch, so that the kept part ends with a commit marker. Bytes that do not start with a
    /// length field and flags are left as they are.
    pub(crate) fn clear_continues(&self, frame: &mut [u8]) {
        let LengthField::Read { bytes, .. } = self.read_length(frame) else {
            return;
        };
        let Some(flags) = frame.get_mut(self.flags_at(bytes)) else {
            return;
        };
        *flags &= !FLAG_CONTINUES;
        self.store_checksum(frame, bytes);
    }
}

#[cfg(test)]
mod tests;
