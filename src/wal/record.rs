//! The frame codec: how one entry is laid out in a segment.
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
//! Decoding never panics: every length is checked against the buffer before it is used.
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

/// Flag: a Raft term follows the lsn.
const FLAG_TERM: u8 = 1;
/// Flag: the next frame belongs to the same atomic batch; the batch's last frame has it clear
/// and serves as its commit marker.
const FLAG_CONTINUES: u8 = 2;
/// Flag: a seal, not an entry (see the module documentation).
const FLAG_SEAL: u8 = 4;
const KNOWN_FLAGS: u8 = FLAG_TERM | FLAG_CONTINUES | FLAG_SEAL;

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

    /// The encoded size of a frame.
    pub(crate) fn frame_len(&self, payload_len: usize, has_term: bool) -> usize {
        self.length_len(payload_len as u64)
            + self.checksum_len()
            + 1
            + 8
            + 4
            + if has_term { 8 } else { 0 }
            + if self.timestamps { 8 } else { 0 }
            + payload_len
    }

    /// Appends one frame to `out`. The caller has checked `payload.len() <= max_payload()`.
    pub(crate) fn encode(&self, out: &mut BytesMut, fields: FrameFields, payload: &[u8]) {
        let FrameFields {
            lsn,
            synced_lsn,
            term,
            timestamp_us,
            continues,
        } = fields;
        debug_assert!(lsn.0 >= 1, "lsn 0 is never written");
        debug_assert!(
            synced_lsn < lsn,
            "a frame cannot be durable before it is written"
        );
        debug_assert!(payload.len() as u64 <= self.max_payload());
        let start = out.len();
        out.reserve(self.frame_len(payload.len(), term.is_some()));
        let len = payload.len() as u64;
        match self.length {
            LengthEncoding::U16 => out.put_u16_le(len as u16),
            LengthEncoding::U32 => out.put_u32_le(len as u32),
            LengthEncoding::U64 => out.put_u64_le(len),
            LengthEncoding::Uvarint => {
                let mut v = len;
                while v >= 0x80 {
                    out.put_u8((v as u8) | 0x80);
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
        out.put_u32_le(lsn.0.saturating_sub(synced_lsn.0).min(u64::from(u32::MAX)) as u32);
        if let Some(term) = term {
            out.put_u64_le(term);
        }
        if self.timestamps {
            out.put_u64_le(timestamp_us);
        }
        out.put_slice(payload);
        self.store_checksum(&mut out[start..], checksum_at - start);
        debug_assert_eq!(
            out.len() - start,
            self.frame_len(payload.len(), term.is_some())
        );
    }

    /// Decodes the frame starting at `buf[at..]`, accepting payloads up to `max_payload` bytes.
    pub(crate) fn decode(&self, buf: &[u8], at: usize, max_payload: u64) -> Decoded {
        let rest = buf.get(at..).unwrap_or_default();
        // Length.
        let (len, len_bytes) = match self.length {
            LengthEncoding::U16 => match rest.get(..2) {
                Some(b) => (u64::from(u16::from_le_bytes([b[0], b[1]])), 2),
                None => return self.short_or_end(rest, 2),
            },
            LengthEncoding::U32 => match rest.get(..4) {
                Some(b) => (u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])), 4),
                None => return self.short_or_end(rest, 4),
            },
            LengthEncoding::U64 => match rest.get(..8) {
                Some(b) => (u64::from_le_bytes(b.try_into().unwrap_or([0; 8])), 8),
                None => return self.short_or_end(rest, 8),
            },
            LengthEncoding::Uvarint => {
                let mut value = 0u64;
                let mut i = 0;
                loop {
                    let Some(&byte) = rest.get(i) else {
                        return self.short_or_end(rest, i + 1);
                    };
                    if i == 9 && byte > 1 {
                        return Decoded::Bad(CorruptionKind::FrameLength { len: u64::MAX });
                    }
                    value |= u64::from(byte & 0x7f) << (7 * i);
                    i += 1;
                    if byte & 0x80 == 0 {
                        // Over-long ("0x85 0x00" for 5) is not how the log writes a length: one
                        // spelling per frame, as the checksum does not cover the length.
                        if i > 1 && byte == 0 {
                            return Decoded::Bad(CorruptionKind::FrameLength { len: value });
                        }
                        break;
                    }
                }
                (value, i)
            }
        };
        let fixed = len_bytes + self.checksum_len() + 1 + 8;
        let Some(head) = rest.get(..fixed) else {
            return self.short_or_end(rest, fixed);
        };
        if head.iter().all(|&b| b == 0) {
            return Decoded::End;
        }
        if len > max_payload {
            return Decoded::Bad(CorruptionKind::FrameLength { len });
        }
        let flags = head[len_bytes + self.checksum_len()];
        if flags & !KNOWN_FLAGS != 0 {
            return Decoded::Bad(CorruptionKind::BadHeader {
                field: "frame flags",
            });
        }
        let has_term = flags & FLAG_TERM != 0;
        let seal = flags & FLAG_SEAL != 0;
        if seal && (has_term || flags & FLAG_CONTINUES != 0 || len != 0) {
            return Decoded::Bad(CorruptionKind::BadHeader {
                field: "frame flags",
            });
        }
        let extra = 4 + if has_term { 8 } else { 0 } + if self.timestamps { 8 } else { 0 };
        let Some(total) = (fixed as u64 + extra as u64)
            .checked_add(len)
            .filter(|&t| t <= usize::MAX as u64)
        else {
            return Decoded::Bad(CorruptionKind::FrameLength { len });
        };
        let total = total as usize;
        let Some(frame) = rest.get(..total) else {
            return Decoded::Short { need: total };
        };
        let checksum_at = len_bytes;
        let body = &frame[checksum_at + self.checksum_len()..];
        let stored = match self.checksum {
            ChecksumKind::Crc32 => u64::from(u32::from_le_bytes(
                frame[checksum_at..checksum_at + 4]
                    .try_into()
                    .unwrap_or([0; 4]),
            )),
            ChecksumKind::Crc64 => u64::from_le_bytes(
                frame[checksum_at..checksum_at + 8]
                    .try_into()
                    .unwrap_or([0; 8]),
            ),
        };
        let mut hasher = Hasher::new(self.checksum);
        hasher.update(body);
        if hasher.finish() != stored {
            return Decoded::Bad(CorruptionKind::FrameChecksum);
        }
        let mut pos = 1;
        let read_u64 =
            |pos: usize| u64::from_le_bytes(body[pos..pos + 8].try_into().unwrap_or([0; 8]));
        let lsn = Lsn(read_u64(pos));
        pos += 8;
        if lsn.0 == 0 {
            return Decoded::Bad(CorruptionKind::BadHeader { field: "frame lsn" });
        }
        let back = u64::from(u32::from_le_bytes(
            body[pos..pos + 4].try_into().unwrap_or([0; 4]),
        ));
        pos += 4;
        if back == 0 || back > lsn.0 {
            return Decoded::Bad(CorruptionKind::BadHeader {
                field: "frame synced lsn",
            });
        }
        let synced_lsn = Lsn(lsn.0 - back);
        let term = if has_term {
            pos += 8;
            Some(read_u64(pos - 8))
        } else {
            None
        };
        let timestamp_us = if self.timestamps {
            pos += 8;
            Some(read_u64(pos - 8))
        } else {
            None
        };
        // A seal is written one way only (see `encode_seal`).
        if seal && (back != 1 || timestamp_us.is_some_and(|t| t != 0)) {
            return Decoded::Bad(CorruptionKind::BadHeader {
                field: "frame flags",
            });
        }
        let payload_start = at + checksum_at + self.checksum_len() + pos;
        Decoded::Frame(FrameRef {
            lsn,
            synced_lsn,
            term,
            timestamp_us,
            continues: flags & FLAG_CONTINUES != 0,
            seal,
            payload: payload_start..payload_start + len as usize,
            len: total,
        })
    }

    /// The lsn a frame starting at `buf[at..]` would carry, read without checking anything else:
    /// a cheap filter before [`decode`](Self::decode) when searching damaged data.
    pub(crate) fn peek_lsn(&self, buf: &[u8], at: usize) -> Option<Lsn> {
        let rest = buf.get(at..)?;
        let len_bytes = match self.length {
            LengthEncoding::U16 => 2,
            LengthEncoding::U32 => 4,
            LengthEncoding::U64 => 8,
            LengthEncoding::Uvarint => rest.iter().take(10).position(|b| b & 0x80 == 0)? + 1,
        };
        let lsn_at = len_bytes + self.checksum_len() + 1;
        let bytes = rest.get(lsn_at..lsn_at + 8)?;
        Some(Lsn(u64::from_le_bytes(bytes.try_into().ok()?)))
    }

    /// Computes the checksum of everything after the checksum field of `frame` (which starts at
    /// `checksum_at`) and stores it there.
    fn store_checksum(&self, frame: &mut [u8], checksum_at: usize) {
        let body_at = checksum_at + self.checksum_len();
        let mut hasher = Hasher::new(self.checksum);
        hasher.update(&frame[body_at..]);
        let sum = hasher.finish();
        match self.checksum {
            ChecksumKind::Crc32 => {
                frame[checksum_at..body_at].copy_from_slice(&(sum as u32).to_le_bytes())
            }
            ChecksumKind::Crc64 => frame[checksum_at..body_at].copy_from_slice(&sum.to_le_bytes()),
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
    /// length and flags without checking anything else; `None` if `rest` is too short to say.
    fn frame_extent(&self, rest: &[u8]) -> Option<(usize, usize)> {
        let (len, len_bytes) = match self.length {
            LengthEncoding::U16 => (
                u64::from(u16::from_le_bytes(rest.get(..2)?.try_into().ok()?)),
                2,
            ),
            LengthEncoding::U32 => (
                u64::from(u32::from_le_bytes(rest.get(..4)?.try_into().ok()?)),
                4,
            ),
            LengthEncoding::U64 => (u64::from_le_bytes(rest.get(..8)?.try_into().ok()?), 8),
            LengthEncoding::Uvarint => {
                let end = rest.iter().take(10).position(|b| b & 0x80 == 0)?;
                let mut value = 0u64;
                for (i, &b) in rest[..=end].iter().enumerate() {
                    value |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
                }
                (value, end + 1)
            }
        };
        let flags = *rest.get(len_bytes + self.checksum_len())?;
        let extra = 1
            + 8
            + 4
            + if flags & FLAG_TERM != 0 { 8 } else { 0 }
            + if self.timestamps { 8 } else { 0 };
        let total = (len_bytes + self.checksum_len() + extra) as u64;
        let total = usize::try_from(total.checked_add(len)?).ok()?;
        Some((len_bytes, total))
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
        let (len_bytes, total) = self.frame_extent(rest)?;
        let frame = rest.get(..total)?;
        let flags_at = len_bytes + self.checksum_len();
        let mut old = frame.to_vec();
        old[flags_at] |= FLAG_CONTINUES;
        self.store_checksum(&mut old, len_bytes);
        let mut new = frame.to_vec();
        new[flags_at] &= !FLAG_CONTINUES;
        self.store_checksum(&mut new, len_bytes);
        let field = len_bytes..=flags_at;
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
        let len_bytes = self.length_len(0);
        out[start + len_bytes + self.checksum_len()] |= FLAG_SEAL;
        self.store_checksum(&mut out[start..], len_bytes);
    }

    /// Rewrites the flags of the frame at the start of `frame` (a whole encoded frame) to clear
    /// the "batch continues" bit, and recomputes its checksum. Used when the log is cut inside a
    /// batch, so that the kept part ends with a commit marker.
    pub(crate) fn clear_continues(&self, frame: &mut [u8]) {
        let len_bytes = match self.length {
            LengthEncoding::U16 => 2,
            LengthEncoding::U32 => 4,
            LengthEncoding::U64 => 8,
            LengthEncoding::Uvarint => frame
                .iter()
                .position(|b| b & 0x80 == 0)
                .map_or(frame.len(), |i| i + 1),
        };
        let body_at = len_bytes + self.checksum_len();
        if body_at >= frame.len() {
            return;
        }
        frame[body_at] &= !FLAG_CONTINUES;
        self.store_checksum(frame, len_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_decodes_as_one_and_only_bare() {
        for f in formats() {
            let mut buf = BytesMut::new();
            f.encode_seal(&mut buf, Lsn(42));
            let Decoded::Frame(seal) = f.decode(&buf, 0, u64::MAX) else {
                panic!("{f:?}: the seal does not decode");
            };
            assert!(seal.seal && !seal.continues && seal.term.is_none(), "{f:?}");
            assert_eq!(
                (seal.lsn, seal.synced_lsn, seal.len),
                (Lsn(42), Lsn(41), buf.len())
            );
            assert_eq!(buf.len(), f.frame_len(0, false));
            // The seal flag on anything but a bare frame is refused, even with a valid checksum.
            for (term, continues, payload) in [
                (Some(7), false, &b""[..]),
                (None, true, &b""[..]),
                (None, false, &b"x"[..]),
            ] {
                let mut buf = BytesMut::new();
                let fields = FrameFields {
                    lsn: Lsn(42),
                    synced_lsn: Lsn(41),
                    term,
                    timestamp_us: 0,
                    continues,
                };
                f.encode(&mut buf, fields, payload);
                let len_bytes = f.length_len(payload.len() as u64);
                buf[len_bytes + f.checksum_len()] |= FLAG_SEAL;
                f.store_checksum(&mut buf, len_bytes);
                assert!(
                    matches!(f.decode(&buf, 0, u64::MAX), Decoded::Bad(_)),
                    "{f:?}"
                );
            }
        }
    }

    fn formats() -> Vec<FrameFormat> {
        let mut out = Vec::new();
        for length in [
            LengthEncoding::U16,
            LengthEncoding::U32,
            LengthEncoding::U64,
            LengthEncoding::Uvarint,
        ] {
            for checksum in [ChecksumKind::Crc32, ChecksumKind::Crc64] {
                for timestamps in [false, true] {
                    out.push(FrameFormat {
                        length,
                        checksum,
                        timestamps,
                    });
                }
            }
        }
        out
    }

    #[test]
    fn a_batch_end_rewrite_torn_anywhere_decodes_as_the_new_frame() {
        for f in formats() {
            let mut buf = BytesMut::new();
            let fields = FrameFields {
                lsn: Lsn(9),
                synced_lsn: Lsn(3),
                term: Some(2),
                timestamp_us: 5,
                continues: true,
            };
            f.encode(&mut buf, fields, &[0xAB; 40]);
            let old = buf.to_vec();
            let mut new = old.clone();
            f.clear_continues(&mut new);
            let (len_bytes, total) = f.frame_extent(&old).unwrap();
            assert_eq!(total, old.len());
            let end = len_bytes + f.checksum_len() + 1;
            for cut in 0..=old.len() {
                for (a, b) in [(&old, &new), (&new, &old)] {
                    let mut torn = a[..cut].to_vec();
                    torn.extend_from_slice(&b[cut..]);
                    let mut image = vec![0u8; 3];
                    image.extend_from_slice(&torn);
                    let (frame, bytes) = f.decode_cut(&image, 3, u64::MAX).unwrap();
                    assert!(!frame.continues);
                    assert_eq!(frame.lsn, Lsn(9));
                    assert_eq!(&image[frame.payload], &[0xAB; 40]);
                    assert_eq!(bytes, new);
                }
            }
            // Damage anywhere else is not taken for a torn rewrite.
            for i in (0..old.len()).filter(|i| !(len_bytes..end).contains(i)) {
                let mut bad = old.clone();
                bad[i] ^= 0x10;
                if let Some((frame, _)) = f.decode_cut(&bad, 0, u64::MAX) {
                    panic!("{f:?}: byte {i} flipped, still decoded as {frame:?}");
                }
            }
        }
    }

    #[test]
    fn frames_round_trip_in_every_format() {
        for f in formats() {
            let mut buf = BytesMut::new();
            let payloads: [&[u8]; 4] = [b"", b"x", &[7u8; 300], &[1u8; 20_000]];
            for (i, p) in payloads.iter().enumerate() {
                let term = if i % 2 == 0 {
                    Some(i as u64 * 10)
                } else {
                    None
                };
                f.encode(
                    &mut buf,
                    FrameFields {
                        lsn: Lsn(i as u64 + 1),
                        synced_lsn: Lsn(i as u64),
                        term,
                        timestamp_us: 42,
                        continues: i == 1,
                    },
                    p,
                );
            }
            let mut at = 0;
            for (i, p) in payloads.iter().enumerate() {
                let Decoded::Frame(fr) = f.decode(&buf, at, u64::MAX) else {
                    panic!("{f:?} frame {i}")
                };
                assert_eq!(fr.lsn, Lsn(i as u64 + 1));
                assert_eq!(fr.synced_lsn, Lsn(i as u64));
                assert_eq!(f.peek_lsn(&buf, at), Some(fr.lsn));
                assert_eq!(
                    fr.term,
                    if i % 2 == 0 {
                        Some(i as u64 * 10)
                    } else {
                        None
                    }
                );
                assert_eq!(fr.timestamp_us, f.timestamps.then_some(42));
                assert_eq!(fr.continues, i == 1);
                assert_eq!(&buf[fr.payload.clone()], *p);
                assert_eq!(fr.len, f.frame_len(p.len(), i % 2 == 0));
                at += fr.len;
            }
            assert_eq!(at, buf.len());
            assert_eq!(f.decode(&buf, at, u64::MAX), Decoded::End);
            buf.put_bytes(0, 64);
            assert_eq!(f.decode(&buf, at, u64::MAX), Decoded::End);
        }
    }

    #[test]
    fn every_truncation_and_bit_flip_is_detected_without_panic() {
        for f in formats() {
            let mut buf = BytesMut::new();
            f.encode(
                &mut buf,
                FrameFields {
                    lsn: Lsn(5),
                    synced_lsn: Lsn(2),
                    term: Some(3),
                    timestamp_us: 9,
                    continues: false,
                },
                b"hello world",
            );
            let whole = buf.to_vec();
            for cut in 0..whole.len() {
                match f.decode(&whole[..cut], 0, u64::MAX) {
                    Decoded::Short { .. } | Decoded::End => {}
                    other => panic!("{f:?} cut at {cut}: {other:?}"),
                }
            }
            for byte in 0..whole.len() {
                for bit in 0..8 {
                    let mut damaged = whole.clone();
                    damaged[byte] ^= 1 << bit;
                    match f.decode(&damaged, 0, u64::MAX) {
                        Decoded::Frame(fr) => panic!("{f:?} flip {byte}.{bit} accepted: {fr:?}"),
                        Decoded::Bad(_) | Decoded::Short { .. } | Decoded::End => {}
                    }
                }
            }
        }
    }

    #[test]
    fn clearing_the_continues_flag_keeps_the_frame_valid() {
        for f in formats() {
            let mut buf = BytesMut::new();
            f.encode(
                &mut buf,
                FrameFields {
                    lsn: Lsn(9),
                    synced_lsn: Lsn(0),
                    term: None,
                    timestamp_us: 0,
                    continues: true,
                },
                b"abc",
            );
            f.clear_continues(&mut buf);
            let Decoded::Frame(fr) = f.decode(&buf, 0, u64::MAX) else {
                panic!("{f:?}")
            };
            assert!(!fr.continues);
            assert_eq!(fr.lsn, Lsn(9));
        }
    }

    /// One frame of `payload` at lsn 1, with a crc32 and no timestamp: its format and bytes.
    fn one_frame(length: LengthEncoding, payload: &[u8]) -> (FrameFormat, BytesMut) {
        let f = FrameFormat {
            length,
            checksum: ChecksumKind::Crc32,
            timestamps: false,
        };
        let mut buf = BytesMut::new();
        let fields = FrameFields {
            lsn: Lsn(1),
            synced_lsn: Lsn(0),
            term: None,
            timestamp_us: 0,
            continues: false,
        };
        f.encode(&mut buf, fields, payload);
        (f, buf)
    }

    #[test]
    fn lengths_above_the_limit_are_bad() {
        let (f, buf) = one_frame(LengthEncoding::U32, &[0u8; 100]);
        assert!(matches!(
            f.decode(&buf, 0, 99),
            Decoded::Bad(CorruptionKind::FrameLength { len: 100 })
        ));
        let garbage = [0xffu8; 64];
        for f in formats() {
            assert!(!matches!(f.decode(&garbage, 0, 1 << 20), Decoded::Frame(_)));
        }
    }

    #[test]
    fn an_over_long_uvarint_length_is_bad() {
        let (f, buf) = one_frame(LengthEncoding::Uvarint, b"hello world");
        assert!(matches!(f.decode(&buf, 0, 1 << 20), Decoded::Frame(_)));
        // The same frame with its length (11) spelled in two bytes: the checksum still matches.
        let mut long = vec![buf[0] | 0x80, 0x00];
        long.extend_from_slice(&buf[1..]);
        assert!(matches!(
            f.decode(&long, 0, 1 << 20),
            Decoded::Bad(CorruptionKind::FrameLength { len: 11 })
        ));
    }
}
