//! Not part of the API; for cargo-fuzz targets and their regression tests.
//!
//! Thin entry points that feed arbitrary bytes to the log's decoders and to recovery. The property
//! every one of them checks is that nothing panics on any input; where the code allows it they
//! also check invariants and panic when one fails, so the fuzzer reports it:
//!
//! - [`decode_frames`]: every frame format (length encoding × checksum × timestamps) walks the
//!   buffer the way recovery does, then searches for a valid frame past the stop as recovery does.
//!   A decoded frame lies inside the buffer, its payload ends the frame, its length is the one the
//!   encoder gives, `FrameFormat::peek_lsn` agrees with it, re-encoding its fields gives back the
//!   same bytes (for uvarint lengths: when the length is written in its shortest form) and
//!   clearing its "continues" flag keeps it valid. `FrameFormat::decode_cut` (the frame a
//!   `truncate_back` may have torn while rewriting it) is tried at every frame and where the walk
//!   stops: what it accepts is a valid frame that ends its batch, stored where it was found, and
//!   a valid frame is always accepted as itself.
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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use ringtide_platform::{DriverOptions, IoDriver};

use super::record::{ACCEPT_MAX_PAYLOAD, Decoded, FrameFields, FrameFormat, MAX_LSN};
use super::recovery::walk::find_valid_frame;
use super::segment::{self, HEADER_LEN, Meta, SegmentHeader};
use super::{ChecksumKind, LengthEncoding, Lsn, RecoveryMode, Wal, WalOptions};

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
        walk_frames(format, data);
        let mut fixed = data.to_vec();
        fix_frame_checksums(format, &mut fixed, 0);
        if fixed != data {
            walk_frames(format, &fixed);
        }
    }
}

/// One walk over `buf` from offset 0, the way `recovery::scan_segment` walks a segment.
fn walk_frames(format: FrameFormat, buf: &[u8]) {
    // The walk expects the lsns to run on from the first frame's, as from a header's first lsn.
    let first = match format.decode(buf, 0, ACCEPT_MAX_PAYLOAD) {
        Decoded::Frame(frame) if frame.lsn.0 <= MAX_LSN => frame.lsn,
        _ => Lsn(1),
    };
    let mut pos = 0usize;
    let mut expected = first;
    let mut frames = 0u64;
    let mut committed = 0u64;
    let stopped_at_damage = loop {
        let decoded = format.decode(buf, pos, ACCEPT_MAX_PAYLOAD);
        check_decoded(format, buf, pos, &decoded);
        check_decode_cut(format, buf, pos, &decoded);
        match decoded {
            Decoded::Frame(frame) if frame.seal && frame.lsn == expected => break false,
            Decoded::Frame(frame) if frame.lsn == expected => {
                pos += frame.len;
                expected = expected.next();
                frames += 1;
                if !frame.continues {
                    committed = frames;
                }
            }
            Decoded::End => break false,
            Decoded::Frame(_) | Decoded::Short { .. } | Decoded::Bad(_) => break true,
        }
    };
    let search_from = if stopped_at_damage { pos + 1 } else { pos };
    let min_lsn = Lsn(first.0 + committed);
    if let Some(at) = find_valid_frame(buf, search_from, format, min_lsn) {
        assert!(
            at >= search_from,
            "{format:?}: found a frame at {at} before {search_from}"
        );
        match format.decode(buf, at, ACCEPT_MAX_PAYLOAD) {
            Decoded::Frame(frame) => assert!(
                frame.lsn >= min_lsn && frame.synced_lsn >= min_lsn,
                "{format:?}: find_valid_frame took {frame:?} at {at} for lost lsn {min_lsn}"
            ),
            other => {
                panic!("{format:?}: find_valid_frame returned {at}, which decodes as {other:?}")
            }
        }
    }
    // peek_lsn never panics anywhere, and decode never panics past the end.
    for at in pos..buf.len().min(pos + 16) {
        let _ = format.peek_lsn(buf, at);
    }
    let _ = format.peek_lsn(buf, buf.len() + 1);
    let _ = format.decode(buf, buf.len() + 1, ACCEPT_MAX_PAYLOAD);
    let _ = format.decode_cut(buf, buf.len() + 1, ACCEPT_MAX_PAYLOAD);
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

fn check_frame(format: FrameFormat, buf: &[u8], at: usize, frame: &super::record::FrameRef) {
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

// ---------------------------------------------------------------------------------------------
// Directory images

/// File kinds of the image format, chosen by a byte modulo their count.
const KINDS: u8 = 8;

/// Splits a fuzzer input into a small directory image (file names and contents):
///
/// - byte 0: the number of files, modulo 8;
/// - byte 1: fix-ups: bit 0 recomputes the crc of each meta file and segment header, bit 1 the
///   checksum of each frame in a segment (in the format its header names);
/// - then per file: a kind byte, a u16 LE length, and that many bytes (fewer if the input ends).
///   Kinds (the byte modulo 8): 0 `wal.meta`; 1 a segment named after its own header (epoch at
///   offset 24, first lsn at 32: so the name matches unless the fuzzer makes them disagree); 2 a
///   segment named by 16 more bytes after the kind (epoch, first lsn, u64 LE); 3 `wal.meta.tmp`;
///   4 `next-000001.prepared`; 5 `LOCK`; 6 `wal.cut` (the cut record of `truncate_back`);
///   7 `wal.cut.tmp`.
///
/// A name that would not parse as a segment's (an epoch above 10 digits) is still written: it is
/// a file recovery must ignore.
pub fn image_from_bytes(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut input = data;
    let mut take = |n: usize| {
        let (head, rest) = input.split_at(n.min(input.len()));
        input = rest;
        head
    };
    let count = take(1).first().map_or(0, |b| b % 8);
    let fixups = take(1).first().copied().unwrap_or(0);
    let mut files = Vec::new();
    for _ in 0..count {
        let Some(&kind) = take(1).first() else { break };
        let kind = kind % KINDS;
        let explicit = (kind == 2).then(|| {
            let ids = take(16);
            (u64_le(ids, 0), u64_le(ids, 8))
        });
        let len = take(2);
        let len = match len {
            [a, b] => usize::from(u16::from_le_bytes([*a, *b])),
            [a] => usize::from(*a),
            _ => 0,
        };
        let mut bytes = take(len).to_vec();
        let name = match kind {
            0 => segment::META_FILE.to_owned(),
            1 => segment::segment_name(u64_le(&bytes, 24), Lsn(u64_le(&bytes, 32))),
            2 => {
                let (epoch, first) = explicit.unwrap_or_default();
                segment::segment_name(epoch, Lsn(first))
            }
            3 => segment::META_TMP.to_owned(),
            4 => format!("next-000001{}", segment::PREPARED_SUFFIX),
            5 => segment::LOCK_FILE.to_owned(),
            6 => segment::CUT_FILE.to_owned(),
            _ => segment::CUT_TMP.to_owned(),
        };
        if fixups & 1 != 0 {
            match kind {
                0 | 3 | 6 | 7 => fix_record_crc(&mut bytes, META_LEN),
                1 | 2 | 4 => fix_record_crc(&mut bytes, HEADER_LEN as usize),
                _ => {}
            }
        }
        if fixups & 2 != 0
            && matches!(kind, 1 | 2 | 4)
            && let Ok(header) = SegmentHeader::decode(&bytes)
        {
            fix_frame_checksums(header.format, &mut bytes, HEADER_LEN as usize);
        }
        files.push((name, bytes));
    }
    files
}

/// The inverse of [`image_from_bytes`] for files of the kinds it makes, with `fixups` as its byte
/// 1: for writing seed inputs from a real log. Files of other names, past the 7th, or longer than
/// 65,535 bytes are left out; segments get kind 2 (named explicitly) unless their name is the one
/// their header gives.
pub fn image_to_bytes(files: &[(String, Vec<u8>)], fixups: u8) -> Vec<u8> {
    let mut out = vec![0, fixups];
    let mut count = 0u8;
    for (name, bytes) in files {
        if count == 7 || bytes.len() > usize::from(u16::MAX) {
            continue;
        }
        let mut head = Vec::new();
        if name == segment::META_FILE {
            head.push(0);
        } else if name == segment::META_TMP {
            head.push(3);
        } else if name.ends_with(segment::PREPARED_SUFFIX) {
            head.push(4);
        } else if name == segment::LOCK_FILE {
            head.push(5);
        } else if name == segment::CUT_FILE {
            head.push(6);
        } else if name == segment::CUT_TMP {
            head.push(7);
        } else if let Some((epoch, first)) = segment::parse_segment_name(name) {
            if *name == segment::segment_name(u64_le(bytes, 24), Lsn(u64_le(bytes, 32))) {
                head.push(1);
            } else {
                head.push(2);
                head.extend_from_slice(&epoch.to_le_bytes());
                head.extend_from_slice(&first.0.to_le_bytes());
            }
        } else {
            continue;
        }
        out.extend_from_slice(&head);
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(bytes);
        count += 1;
    }
    out[0] = count;
    out
}

/// The u64 LE at `at`, with zeros for the bytes past the end of `b`.
fn u64_le(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    for (i, byte) in v.iter_mut().enumerate() {
        *byte = b.get(at + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(v)
}

// ---------------------------------------------------------------------------------------------
// Recovery

thread_local! {
    /// A current-thread runtime and a driver built in it, reused by every call on this thread.
    static RUNTIME: (tokio::runtime::Runtime, IoDriver) = {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the fuzz harness builds a tokio runtime");
        let driver = {
            let _in_runtime = runtime.enter();
            // The backend follows RINGTIDE_IO_BACKEND (io_uring where available otherwise).
            IoDriver::new(DriverOptions::default().pool_threads(4))
                .expect("the fuzz harness builds an I/O driver")
        };
        (runtime, driver)
    };
}

/// Writes `files` (name, contents) into a fresh temporary directory and opens the log there
/// read-only and read-write under both recovery modes, reading back every entry through
/// `range(..)` and `stream`. A failed open is fine; a panic is a bug (see the [module](self)
/// documentation for the invariants checked). Names other than plain file names are skipped.
///
/// Blocking: runs a current-thread runtime of its own (one per thread). Not for use inside a
/// runtime; there, call [`recover_image_with`].
pub fn recover_image(files: &[(String, Vec<u8>)]) {
    RUNTIME.with(|(runtime, driver)| runtime.block_on(recover_image_with(driver, files)));
}

/// [`recover_image`] on the given driver, for callers inside a runtime.
pub async fn recover_image_with(driver: &IoDriver, files: &[(String, Vec<u8>)]) {
    let dir = ScratchDir::new();
    for (name, bytes) in files {
        let plain = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0']);
        if plain {
            // A failed write leaves the image smaller; recovery must cope with any image.
            let _ = std::fs::write(dir.path.join(name), bytes);
        }
    }
    let options = |mode| {
        WalOptions::default()
            .driver(driver.clone())
            .segment_size_bytes(64 << 10)
            .lock_timeout(Duration::ZERO)
            .recovery_mode(mode)
    };
    let strict = RecoveryMode::Strict;
    let tolerant = RecoveryMode::TolerateTornTail;
    let path = dir.path.as_path();

    // Read-only first: it changes nothing.
    let ro_strict = open_and_read(path, options(strict), false).await;
    let ro_tolerant = open_and_read(path, options(tolerant), false).await;
    strict_implies_tolerant("read-only", &ro_strict, &ro_tolerant);
    let rw_strict = open_and_read(path, options(strict), true).await;
    let rw_tolerant = open_and_read(path, options(tolerant), true).await;
    strict_implies_tolerant("read-write", &rw_strict, &rw_tolerant);
    if let (Some(ro), Some(rw)) = (&ro_tolerant, &rw_tolerant) {
        same_entries("read-only and read-write opens", ro, rw);
    }
    if let (Some(ro), Some(rw)) = (&ro_strict, &rw_strict) {
        same_entries("strict read-only and read-write opens", ro, rw);
    }
    if let Some(recovered) = &rw_tolerant {
        // Recovery cut any torn tail, so the log reopens strictly, as it was.
        match open_and_read(path, options(strict), true).await {
            Some(again) => {
                same_entries("a reopen after read-write recovery", recovered, &again);
                assert_eq!(again.torn, None, "a torn tail survived recovery");
            }
            None => panic!(
                "a log recovered read-write does not reopen strictly: {}",
                open_error(path, options(strict)).await
            ),
        }
    }
}

/// (lsn, term, timestamp, payload) of an entry read back.
type SeenEntry = (Lsn, Option<u64>, Option<u64>, Vec<u8>);

/// What one open saw.
#[derive(Debug)]
struct Seen {
    first: Lsn,
    last: Lsn,
    /// (lsn, term, timestamp, payload) of every entry.
    entries: Vec<SeenEntry>,
    torn: Option<(u64, u64, u64)>,
}

/// Opens, reads everything through `range(..)` and `stream`, closes; `None` if the open failed.
async fn open_and_read(dir: &Path, options: WalOptions, writable: bool) -> Option<Seen> {
    let wal = if writable {
        Wal::open(dir, options).await
    } else {
        Wal::open_read_only(dir, options).await
    }
    .ok()?;
    let seen = read_all(&wal).await;
    let _ = wal.close().await;
    Some(seen)
}

async fn open_error(dir: &Path, options: WalOptions) -> String {
    match Wal::open(dir, options).await {
        Ok(wal) => {
            let _ = wal.close().await;
            "it opens on a second try".to_owned()
        }
        Err(e) => e.to_string(),
    }
}

async fn read_all(wal: &Wal) -> Seen {
    let (first, last) = (wal.first_lsn(), wal.last_lsn());
    assert!(
        last.0 + 1 >= first.0,
        "the log ends ({last}) before it starts ({first})"
    );
    let stats = wal.stats();
    let torn = stats
        .torn_tail
        .map(|t| (t.offset, t.bytes, t.dropped_entries));
    let as_tuple = |e: super::Entry| (e.lsn, e.term, e.timestamp_us, e.data.to_vec());
    // Recovery checked every frame it indexed, so every one of them reads back.
    let entries: Vec<SeenEntry> = match wal.range(..).await {
        Ok(entries) => entries.into_iter().map(as_tuple).collect(),
        Err(e) => panic!("entries {first}..={last} were recovered but range(..) fails: {e}"),
    };
    assert_eq!(
        entries.len() as u64,
        last.0 + 1 - first.0,
        "range(..) returned another count than first..=last"
    );
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry.0, Lsn(first.0 + i as u64), "range(..) is not dense");
    }
    let mut streamed = Vec::new();
    let mut stream = wal.stream(first);
    while let Some(item) = stream.next().await {
        match item {
            Ok(entry) => streamed.push(as_tuple(entry)),
            Err(e) => panic!("entries {first}..={last} were recovered but stream fails: {e}"),
        }
    }
    assert!(entries == streamed, "stream and range(..) disagree");
    // A few single reads at the edges.
    for lsn in [first, last, Lsn(first.0.saturating_sub(1)), last.next()] {
        let _ = wal.read(lsn).await;
    }
    Seen {
        first,
        last,
        entries,
        torn,
    }
}

fn strict_implies_tolerant(what: &str, strict: &Option<Seen>, tolerant: &Option<Seen>) {
    let Some(strict) = strict else { return };
    let Some(tolerant) = tolerant else {
        panic!("{what}: a strict open succeeds where a tolerant one fails");
    };
    assert_eq!(
        strict.torn, None,
        "{what}: a strict open reports a torn tail"
    );
    same_entries(what, strict, tolerant);
}

fn same_entries(what: &str, a: &Seen, b: &Seen) {
    assert_eq!(
        (a.first, a.last),
        (b.first, b.last),
        "{what}: the log's bounds differ"
    );
    assert!(a.entries == b.entries, "{what}: the entries differ");
}

/// A fresh directory under the system's temporary directory (`TMPDIR`), removed on drop.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn new() -> ScratchDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("ringtide-fuzz-{}-{n}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => return ScratchDir { path },
                // Left by an earlier process with the same id: clear it and take the next name.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let _ = std::fs::remove_dir_all(&path);
                }
                Err(e) => panic!(
                    "cannot create a scratch directory in {}: {e}",
                    base.display()
                ),
            }
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
