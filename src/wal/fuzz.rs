//! Not part of the API: the entry points of the cargo-fuzz targets in `fuzz/` and of their
//! regression tests (`tests/fuzz_regressions.rs`). Compiled only with the non-default cargo
//! feature `fuzzing`, and hidden from the documentation.
//!
//! Thin entry points that feed arbitrary bytes to the log's decoders and to recovery. The property
//! every one of them checks is that nothing panics on any input; where the code allows it they
//! also check invariants and panic when one fails, so the fuzzer reports it:
//!
//! - [`decode_frames`]: for every frame format (length encoding × checksum × timestamps), the
//!   buffer is walked by recovery's own frame walk (`recovery::walk`), without and with a cut
//!   record at its first lsn, and the walk is checked against the codec: the frames it took are
//!   contiguous, decode with dense lsns and are kept up to the last batch's end; a clean end has
//!   only zeros (or a seal) after it; a torn tail's size is the data after the end and no frame
//!   after it vouches for the lost lsn; corruption names a frame that does; a cut keeps exactly
//!   the frame of its lsn, repaired. Every frame on the way, and the place the walk stops, is
//!   checked too: a decoded frame lies inside the buffer, its payload ends the frame, its length
//!   is the one the encoder gives, `FrameFormat::peek_lsn` agrees with it, re-encoding its fields
//!   gives back the same bytes and clearing its "continues" flag keeps it valid.
//!   `FrameFormat::decode_cut` (the frame a `truncate_back` may have torn while rewriting it)
//!   accepts only a valid frame that ends its batch, stored where it was found, and always
//!   accepts a valid frame as itself.
//! - [`decode_segment_header`], [`decode_meta`]: a decoded record re-encodes to the same fields.
//! - [`recover_image`]: the files are written into a fresh temporary directory, and the log is
//!   opened read-only and read-write under both recovery modes, every entry read back through
//!   `range(..)` and `stream`. An open may fail with any `Err`; what must hold where it succeeds:
//!   every entry it recovered reads back (recovery checked each one), through `range` and
//!   `stream` alike, a strict open sees what a tolerant one sees, read-only and read-write opens
//!   see the same entries, and a log recovered read-write reopens strictly with the same entries
//!   (the torn tail was cut).
//!
//! The checksums would stop a fuzzer at the first byte it changes, so the inputs of
//! [`frame_decoder`] and [`recovery`] are also tried with their checksums recomputed: the fuzzer
//! then reaches the checks behind them.
//!
//! Everything here is blocking (the recovery entry points run their own current-thread runtime,
//! one per thread): call it from a plain `#[test]` or a fuzz target, not from inside a runtime.

use bytes::BytesMut;

use super::record::{ACCEPT_MAX_PAYLOAD, Decoded, FrameFields, FrameFormat, FrameRef, MAX_LSN};
use super::recovery::walk::{
    Damage, Outcome, Prewalk, Walk, WalkParams, find_valid_frame, walk_frames, walk_frames_from,
};
use super::segment::{HEADER_LEN, Meta, SegmentHeader};
use super::{ChecksumKind, LengthEncoding, Lsn};
use crate::error::CorruptionKind;

mod recover;

pub use recover::{image_from_bytes, image_to_bytes, recover_image, recover_image_with};

/// A fuzz target's entry point: the raw fuzzer input in, a panic on a bug.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, as `fuzz/fuzz_targets/<name>.rs` call them: each takes the raw
/// fuzzer input. A regression file named `<target>-<what>` is replayed through the entry of that
/// name.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame_decoder", frame_decoder),
    ("segment_header", segment_header),
    ("recovery", recovery),
];

/// The `frame_decoder` target: [`decode_frames`].
pub fn frame_decoder(data: &[u8]) {
    decode_frames(data);
}

/// The `segment_header` target: the input as a segment header and as a meta file.
pub fn segment_header(data: &[u8]) {
    decode_segment_header(data);
    decode_meta(data);
}

/// The `recovery` target: the input as a directory image ([`image_from_bytes`]), recovered by
/// [`recover_image`].
pub fn recovery(data: &[u8]) {
    recover_image(&image_from_bytes(data));
}

// ---------------------------------------------------------------------------------------------
// Frames

fn all_formats() -> impl Iterator<Item = FrameFormat> {
    let lengths = [
        LengthEncoding::U16,
        LengthEncoding::U32,
        LengthEncoding::U64,
        LengthEncoding::Uvarint,
    ];
    lengths.into_iter().flat_map(|length| {
        [ChecksumKind::Crc32, ChecksumKind::Crc64]
            .into_iter()
            .flat_map(move |checksum| {
                [false, true]
                    .into_iter()
                    .map(move |timestamps| FrameFormat {
                        length,
                        checksum,
                        timestamps,
                    })
            })
    })
}

/// Walks `data` with every frame format, as recovery walks a segment's frames, checking every
/// frame found; then again with the checksums of the frames recomputed. Panics if an invariant
/// fails (see the [module](self) documentation).
pub fn decode_frames(data: &[u8]) {
    for format in all_formats() {
        walk_and_check(format, data);
        let mut fixed = data.to_vec();
        fix_frame_checksums(format, &mut fixed, 0);
        if fixed != data {
            walk_and_check(format, &fixed);
        }
    }
}

/// Walks `buf` from offset 0 with recovery's own frame walk ([`walk_frames`]), as the last segment
/// of a log whose lsns start at the first frame's, and checks every frame it took, where it
/// stopped and its verdict against the codec; then again with a cut record at the first lsn.
fn walk_and_check(format: FrameFormat, buf: &[u8]) {
    let first = match format.decode(buf, 0, ACCEPT_MAX_PAYLOAD) {
        Decoded::Frame(frame) if frame.lsn.0 <= MAX_LSN => frame.lsn,
        _ => Lsn(1),
    };
    let params = WalkParams {
        format,
        first_lsn: first,
        start: 0,
        cut: None,
        is_last: true,
    };
    let walk = walk_frames(buf, &params);
    check_walk(buf, &params, &walk);
    check_prewalk(buf, &params, &walk);
    let cut = WalkParams {
        cut: Some(first),
        ..params
    };
    let walk = walk_frames(buf, &cut);
    check_cut_walk(buf, &cut, &walk);
    check_prewalk(buf, &cut, &walk);
    // peek_lsn never panics anywhere, and decode never panics past the end.
    for at in 0..buf.len().min(16) {
        let _ = format.peek_lsn(buf, at);
    }
    let _ = format.peek_lsn(buf, buf.len() + 1);
    let _ = format.decode(buf, buf.len() + 1, ACCEPT_MAX_PAYLOAD);
    let _ = format.decode_cut(buf, buf.len() + 1, ACCEPT_MAX_PAYLOAD);
}

/// Checks that recovery's walk taken up after a prewalk of a prefix (as it walks the bytes
/// already read while the rest is read) is `walk`, the walk of the whole buffer: prefixes cut
/// in the middle, at a third and at the end.
fn check_prewalk(buf: &[u8], params: &WalkParams, walk: &Walk) {
    let mut done = Prewalk::new(params);
    for len in [buf.len() / 3, buf.len() / 2, buf.len()] {
        done.advance(&buf[..len]);
        assert_eq!(
            &walk_frames_from(buf, params, done.clone()),
            walk,
            "the walk taken up after a prewalk of {len} bytes differs"
        );
    }
}

/// Checks a walk without a cut record: its frames are the codec's, one after another with dense
/// lsns; it kept the frames up to the last batch's end; and its verdict is the one the bytes
/// past that call for.
fn check_walk(buf: &[u8], params: &WalkParams, walk: &Walk) {
    let format = params.format;
    let mut pos = params.start;
    let mut kept = (0, pos);
    for (i, &offset) in walk.offsets.iter().enumerate() {
        assert_eq!(
            offset as usize, pos,
            "{format:?}: frame {i} is not where {i} - 1 ends"
        );
        let decoded = format.decode(buf, pos, ACCEPT_MAX_PAYLOAD);
        check_decoded(format, buf, pos, &decoded);
        check_decode_cut(format, buf, pos, &decoded);
        let Decoded::Frame(frame) = decoded else {
            panic!("{format:?}: the walk took {decoded:?} at {pos} for a frame")
        };
        let lsn = Lsn(params.first_lsn.0 + i as u64);
        assert!(
            frame.lsn == lsn && !frame.seal,
            "{format:?}: the walk took {frame:?} at {pos} for the entry of lsn {lsn}"
        );
        pos += frame.len;
        if !frame.continues {
            kept = (i + 1, pos);
        }
    }
    assert_eq!(
        walk.stopped_at, pos,
        "{format:?}: the walk stopped elsewhere"
    );
    let decoded = format.decode(buf, pos, ACCEPT_MAX_PAYLOAD);
    check_decoded(format, buf, pos, &decoded);
    check_decode_cut(format, buf, pos, &decoded);
    assert_eq!(
        (walk.kept, walk.end),
        kept,
        "{format:?}: the walk kept other frames than those up to the last batch's end"
    );
    let (end, lost) = (walk.end, Lsn(params.first_lsn.0 + walk.kept as u64));
    match &walk.outcome {
        Outcome::Clean => {
            // Nothing after the entries but zeros, or a seal at the next lsn and then zeros.
            let after = match &decoded {
                Decoded::Frame(seal) if seal.seal && seal.lsn == lost => pos + seal.len,
                _ => pos,
            };
            assert!(
                walk.kept == walk.offsets.len() && buf.get(after..).is_none_or(all_zero),
                "{format:?}: a clean end at {end} with data after it"
            );
        }
        Outcome::TornTail { bytes } => {
            let data_end = buf.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            assert_eq!(
                (*bytes, data_end > end),
                ((data_end.max(end) - end) as u64, true),
                "{format:?}: a torn tail at {end} of other bytes than the data after it"
            );
            assert_eq!(
                find_valid_frame(buf, pos + 1, format, lost),
                None,
                "{format:?}: a torn tail at {end} before a frame that vouches for lsn {lost}"
            );
        }
        Outcome::Corrupt(Damage {
            offset,
            kind: CorruptionKind::DamageBeforeValidData { next_valid_offset },
        }) => {
            assert_eq!(*offset, pos as u64, "{format:?}: damage reported elsewhere");
            let at = *next_valid_offset as usize;
            match format.decode(buf, at, ACCEPT_MAX_PAYLOAD) {
                Decoded::Frame(frame) => assert!(
                    at >= pos && frame.lsn >= lost && frame.synced_lsn >= lost,
                    "{format:?}: {frame:?} at {at} taken as proof that lsn {lost} was durable"
                ),
                other => panic!("{format:?}: the valid frame at {at} decodes as {other:?}"),
            }
        }
        other => panic!("{format:?}: the last segment's walk without a cut record: {other:?}"),
    }
}

/// Checks a walk with a cut record at its first lsn: it ends the log after the frame of that lsn,
/// repaired to end its batch; or, where no such frame is, it walks as without the record.
fn check_cut_walk(buf: &[u8], params: &WalkParams, walk: &Walk) {
    let format = params.format;
    let Outcome::Cut { repair } = &walk.outcome else {
        assert!(
            walk.offsets.is_empty(),
            "{format:?}: a walk past the cut record's lsn: {walk:?}"
        );
        return check_walk(buf, params, walk);
    };
    let start = params.start;
    let Some((frame, bytes)) = format.decode_cut(buf, start, ACCEPT_MAX_PAYLOAD) else {
        panic!("{format:?}: a cut applied at {start} where decode_cut finds no frame")
    };
    let offsets: Vec<usize> = walk.offsets.iter().map(|&o| o as usize).collect();
    assert_eq!(
        (&offsets[..], walk.kept, walk.end, frame.lsn),
        (&[start][..], 1, start + frame.len, params.first_lsn),
        "{format:?}: the cut did not keep exactly the frame of its lsn"
    );
    let on_disk = &buf[start..start + frame.len];
    match repair {
        Some((at, repaired)) => assert!(
            *at == start && *repaired == bytes && on_disk != &bytes[..],
            "{format:?}: a repair of the cut frame that is not its rewrite"
        ),
        None => assert_eq!(
            on_disk,
            &bytes[..],
            "{format:?}: a torn cut frame left as it is"
        ),
    }
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Checks what `decode_cut(buf, at)` returns, given what `decode(buf, at)` returned.
fn check_decode_cut(format: FrameFormat, buf: &[u8], at: usize, decoded: &Decoded) {
    let cut = format.decode_cut(buf, at, ACCEPT_MAX_PAYLOAD);
    if let Decoded::Frame(frame) = decoded {
        // An intact frame is the old frame (continues set) or the new one (cleared): accepted.
        let Some((taken, _)) = &cut else {
            panic!("{format:?}: decode_cut refuses the valid frame at {at}: {frame:?}")
        };
        assert_eq!(
            (taken.lsn, taken.synced_lsn, taken.term, taken.timestamp_us),
            (frame.lsn, frame.synced_lsn, frame.term, frame.timestamp_us),
            "{format:?}: decode_cut reads the valid frame at {at} otherwise"
        );
        assert_eq!(
            (taken.len, &taken.payload),
            (frame.len, &frame.payload),
            "{format:?}: decode_cut places the valid frame at {at} otherwise"
        );
    }
    let Some((frame, bytes)) = cut else { return };
    assert!(
        !frame.continues,
        "{format:?}: decode_cut at {at} keeps the batch open"
    );
    assert_eq!(
        bytes.len(),
        frame.len,
        "{format:?}: decode_cut at {at}: length"
    );
    let end = at.checked_add(frame.len);
    assert!(
        end.is_some_and(|end| end <= buf.len()),
        "{format:?}: decode_cut at {at} runs past the buffer"
    );
    assert_eq!(
        frame.payload.end,
        at + frame.len,
        "{format:?}: decode_cut at {at}: the payload does not end the frame"
    );
    assert_eq!(
        &bytes[frame.payload.start - at..],
        &buf[frame.payload.clone()],
        "{format:?}: decode_cut at {at}: the payload moved"
    );
    // The bytes it hands back are a valid frame: the rewritten one.
    match format.decode(&bytes, 0, ACCEPT_MAX_PAYLOAD) {
        Decoded::Frame(new) => assert_eq!(
            (
                new.lsn,
                new.synced_lsn,
                new.term,
                new.timestamp_us,
                new.len,
                new.continues
            ),
            (
                frame.lsn,
                frame.synced_lsn,
                frame.term,
                frame.timestamp_us,
                frame.len,
                false
            ),
            "{format:?}: decode_cut at {at} hands back another frame"
        ),
        other => panic!("{format:?}: decode_cut at {at} hands back {other:?}"),
    }
}

/// Checks what `decode(buf, at)` returned.
fn check_decoded(format: FrameFormat, buf: &[u8], at: usize, decoded: &Decoded) {
    let rest = buf.get(at..).unwrap_or_default();
    match decoded {
        Decoded::Frame(frame) => check_frame(format, buf, at, frame),
        Decoded::End => assert!(
            rest.first().is_none_or(|&b| b == 0),
            "{format:?}: End at {at}, where a non-zero byte is"
        ),
        Decoded::Short { need } => assert!(
            *need > rest.len(),
            "{format:?}: Short {{ need: {need} }} at {at}, but {} bytes are there",
            rest.len()
        ),
        Decoded::Bad(_) => {}
    }
    // The limit only refuses frames: with no limit the outcome is the same or a larger frame.
    let unlimited = format.decode(buf, at, u64::MAX);
    if let Decoded::Frame(frame) = decoded {
        assert_eq!(
            unlimited,
            Decoded::Frame(frame.clone()),
            "{format:?}: a frame at {at} decodes otherwise without a payload limit"
        );
    }
}

fn check_frame(format: FrameFormat, buf: &[u8], at: usize, frame: &FrameRef) {
    let end = at.checked_add(frame.len);
    assert!(
        end.is_some_and(|end| end <= buf.len()),
        "{format:?}: frame at {at} of {} bytes runs past the buffer ({} bytes)",
        frame.len,
        buf.len()
    );
    let end = at + frame.len;
    assert!(
        frame.payload.start >= at && frame.payload.start <= frame.payload.end,
        "{format:?}: payload {:?} of the frame at {at}",
        frame.payload
    );
    assert_eq!(
        frame.payload.end, end,
        "{format:?}: the payload of the frame at {at} does not end the frame"
    );
    assert!(frame.lsn.0 >= 1, "{format:?}: lsn 0 accepted at {at}");
    assert!(
        frame.synced_lsn < frame.lsn,
        "{format:?}: frame at {at} synced at or past its own lsn: {frame:?}"
    );
    assert_eq!(frame.timestamp_us.is_some(), format.timestamps);
    assert_eq!(
        format.peek_lsn(buf, at),
        Some(frame.lsn),
        "{format:?}: peek_lsn disagrees with decode at {at}"
    );
    let payload = &buf[frame.payload.clone()];
    let bytes = &buf[at..end];

    // Re-encode the decoded fields.
    let mut encoded = BytesMut::new();
    if frame.seal {
        format.encode_seal(&mut encoded, frame.lsn);
    } else {
        format.encode(
            &mut encoded,
            FrameFields {
                lsn: frame.lsn,
                synced_lsn: frame.synced_lsn,
                term: frame.term,
                timestamp_us: frame.timestamp_us.unwrap_or(0),
                continues: frame.continues,
            },
            payload,
        );
    }
    // The decoder refuses every length spelling but the shortest, the one the encoder writes:
    // a frame re-encodes to its own bytes.
    assert_eq!(
        format.frame_len(payload.len(), frame.term.is_some()),
        frame.len,
        "{format:?}: frame_len disagrees with the frame at {at}"
    );
    assert_eq!(
        &encoded[..],
        bytes,
        "{format:?}: the frame at {at} does not re-encode to the same bytes"
    );

    // Clearing the "continues" flag keeps the frame valid and changes nothing else.
    let mut cleared = bytes.to_vec();
    format.clear_continues(&mut cleared);
    match format.decode(&cleared, 0, ACCEPT_MAX_PAYLOAD) {
        Decoded::Frame(after) => {
            assert!(!after.continues, "{format:?}: continues still set at {at}");
            assert_eq!(
                (
                    after.lsn,
                    after.synced_lsn,
                    after.term,
                    after.timestamp_us,
                    after.len
                ),
                (
                    frame.lsn,
                    frame.synced_lsn,
                    frame.term,
                    frame.timestamp_us,
                    frame.len
                ),
                "{format:?}: clear_continues changed the frame at {at}"
            );
        }
        other => panic!("{format:?}: clear_continues broke the frame at {at}: {other:?}"),
    }
}

/// Recomputes the checksum of every frame from `buf[pos..]` on, as far as frames are laid out
/// whole in the buffer and not all zeros: what a fuzzer cannot do, so that it reaches the checks
/// behind the checksum. Frames are found by the codec's own reading of their length and flags.
fn fix_frame_checksums(format: FrameFormat, buf: &mut [u8], mut pos: usize) {
    while let Some(rest) = buf.get_mut(pos..) {
        let Some((length_len, total)) = format.frame_extent(rest) else {
            return;
        };
        let Some(frame) = rest.get_mut(..total) else {
            return;
        };
        format.store_checksum(frame, length_len);
        pos += total;
    }
}

// ---------------------------------------------------------------------------------------------
// Segment headers and the meta file

/// Stores the crc32 of `record[..len - 4]` in its last 4 bytes, if it is that long.
fn fix_record_crc(record: &mut [u8], len: usize) {
    if record.len() >= len {
        let crc = crc32fast::hash(&record[..len - 4]);
        record[len - 4..len].copy_from_slice(&crc.to_le_bytes());
    }
}

const META_LEN: usize = 48;
const SEGMENT_MAGIC: &[u8; 8] = b"RTDWAL\r\n";
const META_MAGIC: &[u8; 8] = b"RTDMETA\n";

/// A segment header or meta file as `docs/design.md` lays it out, written here independently of
/// the codec in `segment.rs`: `len` bytes, zero where reserved, the crc32 of the rest last.
fn encode_record(
    magic: &[u8; 8],
    len: usize,
    format: FrameFormat,
    ids: (u64, u64, Lsn),
) -> Vec<u8> {
    let mut b = vec![0u8; len];
    b[..8].copy_from_slice(magic);
    b[8..10].copy_from_slice(&1u16.to_le_bytes());
    b[10] = match format.length {
        LengthEncoding::U16 => 0,
        LengthEncoding::U32 => 1,
        LengthEncoding::U64 => 2,
        LengthEncoding::Uvarint => 3,
    };
    b[11] = match format.checksum {
        ChecksumKind::Crc32 => 0,
        ChecksumKind::Crc64 => 1,
    };
    b[12] = u8::from(format.timestamps);
    let (log_id, epoch, first_lsn) = ids;
    b[16..24].copy_from_slice(&log_id.to_le_bytes());
    b[24..32].copy_from_slice(&epoch.to_le_bytes());
    b[32..40].copy_from_slice(&first_lsn.0.to_le_bytes());
    fix_record_crc(&mut b, len);
    b
}

/// Decodes `data` as a segment header, as it is and with its crc recomputed; a decoded header
/// must re-encode to the same fields. Panics if an invariant fails.
pub fn decode_segment_header(data: &[u8]) {
    check_segment_header(data);
    let mut fixed = data.to_vec();
    fix_record_crc(&mut fixed, HEADER_LEN as usize);
    check_segment_header(&fixed);
}

fn check_segment_header(data: &[u8]) {
    let len = HEADER_LEN as usize;
    let decoded = SegmentHeader::decode(data);
    if let Some(head) = data.get(..len) {
        assert_eq!(
            SegmentHeader::decode(head),
            decoded,
            "a segment header decodes otherwise with bytes after it"
        );
    }
    let Ok(header) = decoded else { return };
    assert!((1..=MAX_LSN).contains(&header.first_lsn.0));
    let encoded = header.encode();
    assert_eq!(SegmentHeader::decode(&encoded), Ok(header));
    let spec = encode_record(
        SEGMENT_MAGIC,
        len,
        header.format,
        (header.log_id, header.epoch, header.first_lsn),
    );
    assert_eq!(
        &encoded[..],
        &spec[..],
        "the header codec departs from the format's description"
    );
    check_fields(&encoded, data, len);
}

/// Decodes `data` as the meta file, as it is and with its crc recomputed; a decoded meta file
/// must re-encode to the same fields. Panics if an invariant fails.
pub fn decode_meta(data: &[u8]) {
    check_meta(data);
    let mut fixed = data.to_vec();
    fix_record_crc(&mut fixed, META_LEN);
    check_meta(&fixed);
}

fn check_meta(data: &[u8]) {
    let decoded = Meta::decode(data);
    if let Some(head) = data.get(..META_LEN) {
        assert_eq!(
            Meta::decode(head),
            decoded,
            "a meta file decodes otherwise with bytes after it"
        );
    }
    let Ok(meta) = decoded else { return };
    assert!((1..=MAX_LSN).contains(&meta.first_lsn.0));
    let encoded = encode_record(
        META_MAGIC,
        META_LEN,
        meta.format,
        (meta.log_id, meta.epoch, meta.first_lsn),
    );
    assert_eq!(Meta::decode(&encoded), Ok(meta));
    check_fields(&encoded, data, META_LEN);
}

/// A decoded record re-encoded: the fields (magic, version, format, log id, epoch, first lsn)
/// are the input's bytes; the reserved bytes are written as zeros (the decoder does not check
/// them), so the whole record is the input's only where those are zero.
fn check_fields(encoded: &[u8], data: &[u8], len: usize) {
    assert_eq!(encoded.len(), len);
    assert_eq!(
        &encoded[..13],
        &data[..13],
        "magic, version or format re-encodes otherwise"
    );
    assert_eq!(
        &encoded[16..40],
        &data[16..40],
        "ids or first lsn re-encode otherwise"
    );
    let reserved_zero = data[13..16]
        .iter()
        .chain(&data[40..len - 4])
        .all(|&b| b == 0);
    if reserved_zero {
        assert_eq!(
            encoded,
            &data[..len],
            "a record does not re-encode to its bytes"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::segment;

    #[test]
    fn the_entry_points_take_empty_and_small_inputs() {
        for (_, target) in TARGETS {
            target(&[]);
            target(&[0]);
            target(&[3, 3, 0, 0]);
            target(&[0xff; 100]);
        }
    }

    #[test]
    fn images_round_trip_through_bytes() {
        let header = SegmentHeader {
            format: FrameFormat {
                length: LengthEncoding::U32,
                checksum: ChecksumKind::Crc32,
                timestamps: false,
            },
            log_id: 7,
            epoch: 1,
            first_lsn: Lsn(5),
        };
        let files = vec![
            ("wal.meta".to_owned(), vec![1, 2, 3]),
            (segment::segment_name(1, Lsn(5)), header.encode().to_vec()),
            (segment::segment_name(2, Lsn(9)), header.encode().to_vec()),
            ("LOCK".to_owned(), Vec::new()),
        ];
        assert_eq!(image_from_bytes(&image_to_bytes(&files, 0)), files);
    }
}
