//! Unit tests of the frame walk, over hand-made segment images: clean ends, seals, torn tails and
//! unfinished batches, damage before synced frames, frames out of sequence, cut records, no panic
//! on any bytes, and a walk taken up after a prewalk giving the whole walk.

use bytes::BytesMut;

use super::*;
use crate::wal::record::FrameFields;
use crate::wal::{ChecksumKind, LengthEncoding};

const FORMAT: FrameFormat = FrameFormat {
    length: LengthEncoding::U32,
    checksum: ChecksumKind::Crc32,
    timestamps: false,
};
/// Stands in for the segment header.
const START: usize = 64;

/// A segment image: a header's room, then frames; each frame's start offset.
struct Image {
    buf: BytesMut,
    offsets: Vec<usize>,
}

impl Image {
    fn new() -> Image {
        let mut buf = BytesMut::new();
        buf.resize(START, 0xAA);
        Image {
            buf,
            offsets: Vec::new(),
        }
    }

    /// Appends the frame of `lsn`, written when `synced` was durable.
    fn frame(mut self, lsn: u64, synced: u64, continues: bool) -> Image {
        self.offsets.push(self.buf.len());
        let fields = FrameFields {
            lsn: Lsn(lsn),
            synced_lsn: Lsn(synced),
            term: None,
            timestamp_us: 0,
            continues,
        };
        FORMAT.encode(&mut self.buf, fields, format!("entry {lsn}").as_bytes());
        self
    }

    fn seal(mut self, next: u64) -> Image {
        FORMAT.encode_seal(&mut self.buf, Lsn(next));
        self
    }

    fn zeros(mut self, n: usize) -> Image {
        self.buf.resize(self.buf.len() + n, 0);
        self
    }

    /// Frames 1..=5 (3 and 4 one batch), each synced up to the one before.
    fn five() -> Image {
        Image::new()
            .frame(1, 0, false)
            .frame(2, 1, false)
            .frame(3, 2, true)
            .frame(4, 2, false)
            .frame(5, 4, false)
    }
}

fn params(is_last: bool) -> WalkParams {
    WalkParams {
        format: FORMAT,
        first_lsn: Lsn(1),
        start: START,
        cut: None,
        is_last,
    }
}

/// The damage a walk found; a panic if it found none.
fn corrupt(walk: Walk) -> Damage {
    match walk.outcome {
        Outcome::Corrupt(damage) => damage,
        _ => panic!("no corruption found: {walk:?}"),
    }
}

fn offsets(image: &Image, n: usize) -> Vec<u32> {
    image.offsets[..n]
        .iter()
        .map(|&o| u32::try_from(o).expect("a small image"))
        .collect()
}

#[test]
fn a_clean_segment_keeps_every_frame_whether_it_ends_at_zeros_or_the_buffer() {
    let image = Image::five();
    let data_end = image.buf.len();
    let image = image.zeros(4096);
    for is_last in [true, false] {
        for buf in [&image.buf[..], &image.buf[..data_end]] {
            let walk = walk_frames(buf, &params(is_last));
            assert_eq!(walk.offsets, offsets(&image, 5));
            assert_eq!((walk.kept, walk.end), (5, data_end));
            assert_eq!(walk.outcome, Outcome::Clean);
        }
    }
}

#[test]
fn a_seal_ends_the_entries_and_what_follows_it_is_a_torn_tail() {
    let image = Image::five();
    let data_end = image.buf.len();
    let image = image.seal(6);
    let sealed_end = image.buf.len();
    let image = image.zeros(100);
    let walk = walk_frames(&image.buf, &params(true));
    assert_eq!(
        (walk.kept, walk.end, walk.stopped_at),
        (5, data_end, data_end)
    );
    assert_eq!(walk.outcome, Outcome::Clean);
    // Unsynced bytes that landed past the seal: cut as a torn tail, seal and all.
    let mut stray = image.buf.clone();
    stray[sealed_end + 50] = 1;
    let walk = walk_frames(&stray, &params(true));
    let bytes = (sealed_end + 51 - data_end) as u64;
    assert_eq!(walk.outcome, Outcome::TornTail { bytes });
}

#[test]
fn a_half_written_last_frame_is_a_torn_tail_in_the_last_segment_only() {
    let image = Image::five();
    let cut = image.offsets[4] + 10;
    let torn = &image.buf[..cut];
    let walk = walk_frames(torn, &params(true));
    assert_eq!((walk.kept, walk.end), (4, image.offsets[4]));
    assert_eq!(walk.outcome, Outcome::TornTail { bytes: 10 });
    let damage = corrupt(walk_frames(torn, &params(false)));
    assert_eq!(damage.offset, image.offsets[4] as u64);
    assert!(matches!(damage.kind, CorruptionKind::FrameLength { .. }));
}

#[test]
fn an_unfinished_batch_is_dropped_with_the_tail() {
    let image = Image::new()
        .frame(1, 0, false)
        .frame(2, 1, true)
        .frame(3, 1, true)
        .zeros(64);
    let walk = walk_frames(&image.buf, &params(true));
    assert_eq!(walk.offsets, offsets(&image, 3));
    assert_eq!((walk.kept, walk.end), (1, image.offsets[1]));
    let data = image.buf.len() - 64 - image.offsets[1];
    assert_eq!(walk.outcome, Outcome::TornTail { bytes: data as u64 });
    let damage = corrupt(walk_frames(&image.buf, &params(false)));
    assert_eq!(
        damage,
        Damage {
            offset: image.offsets[1] as u64,
            kind: CorruptionKind::IncompleteBatch
        }
    );
}

#[test]
fn damage_before_a_frame_synced_past_it_is_corruption_and_before_unsynced_frames_a_tail() {
    // Frame 3 was written when 2 was durable: damage to 2 hit durable data.
    let image = Image::five();
    let mut damaged = image.buf.clone();
    damaged[image.offsets[1] + 25] ^= 1;
    let damage = corrupt(walk_frames(&damaged, &params(true)));
    let kind = CorruptionKind::DamageBeforeValidData {
        next_valid_offset: image.offsets[2] as u64,
    };
    let offset = image.offsets[1] as u64;
    assert_eq!(damage, Damage { offset, kind });
    // Frame 3 was written when only 1 was durable: damage to 2 may be a torn write.
    let image = Image::new()
        .frame(1, 0, false)
        .frame(2, 1, false)
        .frame(3, 1, false);
    let mut damaged = image.buf.clone();
    damaged[image.offsets[1] + 25] ^= 1;
    let walk = walk_frames(&damaged, &params(true));
    assert_eq!((walk.kept, walk.stopped_at), (1, image.offsets[1]));
    assert!(matches!(walk.outcome, Outcome::TornTail { .. }));
}

#[test]
fn a_frame_out_of_sequence_is_damage() {
    // Frame 3 in 2's place, then 4 synced past 2: it vouches for a frame that is not there.
    let image = Image::new()
        .frame(1, 0, false)
        .frame(3, 2, false)
        .frame(4, 3, false);
    let damage = corrupt(walk_frames(&image.buf, &params(true)));
    let kind = CorruptionKind::DamageBeforeValidData {
        next_valid_offset: image.offsets[2] as u64,
    };
    let offset = image.offsets[1] as u64;
    assert_eq!(damage, Damage { offset, kind });
    // Nothing synced past 2: a torn tail in the last segment, the mismatch in any other.
    let image = Image::new().frame(1, 0, false).frame(7, 1, false);
    let walk = walk_frames(&image.buf, &params(true));
    assert_eq!((walk.kept, walk.end), (1, image.offsets[1]));
    assert!(matches!(walk.outcome, Outcome::TornTail { .. }));
    let damage = corrupt(walk_frames(&image.buf, &params(false)));
    let kind = CorruptionKind::LsnMismatch {
        expected: Lsn(2),
        found: Lsn(7),
    };
    assert_eq!(damage, Damage { offset, kind });
}

#[test]
fn a_cut_record_ends_the_log_at_its_lsn_and_repairs_a_torn_rewrite() {
    let image = Image::five().zeros(64);
    // Cut at 3, inside the batch 3..=4: frame 3 is kept, rewritten to end its batch.
    let cut = WalkParams {
        cut: Some(Lsn(3)),
        ..params(true)
    };
    let walk = walk_frames(&image.buf, &cut);
    assert_eq!((walk.kept, walk.end), (3, image.offsets[3]));
    let Outcome::Cut {
        repair: Some((at, bytes)),
    } = walk.outcome
    else {
        panic!("no repair of frame 3: {walk:?}")
    };
    assert_eq!(at, image.offsets[2]);
    let mut repaired = image.buf.clone();
    repaired[at..at + bytes.len()].copy_from_slice(&bytes);
    // Once rewritten, nothing is left to repair; a cut at a batch's end needs no rewrite.
    for (buf, lsn) in [(&repaired, 3), (&image.buf, 2)] {
        let cut = WalkParams {
            cut: Some(Lsn(lsn)),
            ..params(true)
        };
        let walk = walk_frames(buf, &cut);
        assert_eq!(walk.kept as u64, lsn);
        assert_eq!(walk.outcome, Outcome::Cut { repair: None });
    }
    // A cut before the segment's first lsn: nothing of it is read.
    let before = WalkParams {
        first_lsn: Lsn(4),
        cut: Some(Lsn(3)),
        ..params(true)
    };
    let walk = walk_frames(&image.buf, &before);
    assert_eq!((walk.kept, walk.end), (0, START));
    assert_eq!(walk.outcome, Outcome::Cut { repair: None });
}

#[test]
fn first_nonzero_finds_the_first_set_byte_at_any_position() {
    for len in [0usize, 1, 63, 64, 65, 200] {
        assert_eq!(first_nonzero(&vec![0u8; len]), None);
        for at in 0..len {
            let mut v = vec![0u8; len];
            v[at] = 7;
            if at + 1 < len {
                v[len - 1] = 1;
            }
            assert_eq!(first_nonzero(&v), Some(at), "len {len} at {at}");
        }
    }
}

#[test]
fn no_bytes_make_the_walk_panic() {
    let image = Image::five();
    for len in 0..image.buf.len() {
        for is_last in [true, false] {
            let _ = walk_frames(&image.buf[..len], &params(is_last));
        }
    }
    let mut noise = vec![0u8; 600];
    let mut x = 0x9E37_79B9_u32;
    for b in &mut noise {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let _ = walk_frames(&noise, &params(true));
    let _ = walk_frames(&[], &params(true));
}

/// Walks `buf` taken up from prewalks over its prefixes cut at every `step` bytes: the walk
/// must be the one `walk_frames` takes over the whole buffer.
fn assert_prewalks_agree(buf: &[u8], params: &WalkParams, step: usize) {
    let whole = walk_frames(buf, params);
    let mut done = Prewalk::new(params);
    let mut len = 0;
    loop {
        len = (len + step).min(buf.len());
        done.advance(&buf[..len]);
        assert_eq!(
            walk_frames_from(buf, params, done.clone()),
            whole,
            "taken up after a prefix of {len} bytes (step {step})"
        );
        if len == buf.len() {
            break;
        }
    }
    assert_eq!(
        walk_frames_from(buf, params, done.restarted()),
        whole,
        "started over"
    );
}

#[test]
fn a_walk_taken_up_after_a_prewalk_of_a_prefix_is_the_whole_walk() {
    let seal = Image::five().seal(6).zeros(40);
    let torn = {
        let mut image = Image::five().frame(6, 5, true).frame(7, 5, false).zeros(40);
        let at = image.offsets[6] + 9;
        image.buf[at] ^= 0x40;
        image
    };
    let damaged = {
        let mut image = Image::five().zeros(40);
        let at = image.offsets[1] + 9;
        image.buf[at] ^= 0x40;
        image
    };
    let unfinished = Image::five().frame(6, 5, true).zeros(40);
    let images = [Image::five().zeros(100), seal, torn, damaged, unfinished];
    for image in &images {
        for cut in [None, Some(Lsn(2)), Some(Lsn(3)), Some(Lsn(4)), Some(Lsn(9))] {
            for is_last in [true, false] {
                let params = WalkParams {
                    cut,
                    ..params(is_last)
                };
                for step in [1, 7, 64, 1000] {
                    assert_prewalks_agree(&image.buf, &params, step);
                }
            }
        }
    }
    // A prewalk of the whole clean image takes every frame.
    let image = Image::five().zeros(40);
    let mut done = Prewalk::new(&params(true));
    done.advance(&image.buf[..image.offsets[3]]);
    assert_eq!(
        (done.offsets.len(), done.kept),
        (3, 2),
        "frames 1 to 3, 3 opening a batch"
    );
    done.advance(&image.buf);
    assert_eq!((done.offsets.len(), done.kept), (5, 5));
    // Parameters of another walk: the prewalk is not used.
    let image = Image::five().zeros(40);
    let mut other = Prewalk::new(&WalkParams {
        first_lsn: Lsn(2),
        ..params(true)
    });
    other.advance(&image.buf);
    assert_eq!(
        walk_frames_from(&image.buf, &params(true), other),
        walk_frames(&image.buf, &params(true))
    );
}
