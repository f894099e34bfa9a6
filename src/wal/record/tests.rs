//! Unit tests of the frame codec: round trips in every format, damage and truncation detected
//! without a panic, the seal, the batch-end rewrite `truncate_back` may tear, and the one length
//! parser shared by every reader.

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
fn every_reader_of_the_length_field_refuses_what_decode_refuses() {
    let (f, buf) = one_frame(LengthEncoding::Uvarint, b"hello world");
    assert_eq!(f.read_length(&buf), LengthField::Read { len: 11, bytes: 1 });
    assert_eq!(f.frame_extent(&buf), Some((1, buf.len())));
    // Over-long (11 in two bytes), above 64 bits, and cut short inside the field.
    let mut long = vec![buf[0] | 0x80, 0x00];
    long.extend_from_slice(&buf[1..]);
    let mut wide = vec![0xff; 9];
    wide.push(0x02);
    wide.extend_from_slice(&buf[1..]);
    for (bytes, field) in [
        (&long[..], LengthField::Bad { len: 11 }),
        (&wide[..], LengthField::Bad { len: u64::MAX }),
        (&[0x80, 0x80][..], LengthField::Short { need: 3 }),
    ] {
        assert_eq!(f.read_length(bytes), field);
        assert_eq!(f.peek_lsn(bytes, 0), None);
        assert_eq!(f.frame_extent(bytes), None);
        assert_eq!(f.decode_cut(bytes, 0, u64::MAX), None);
        let mut cleared = bytes.to_vec();
        f.clear_continues(&mut cleared);
        assert_eq!(
            cleared, bytes,
            "clear_continues changed an unreadable frame"
        );
    }
    // Zeros are no frame: no extent, the end of the data.
    assert_eq!(f.frame_extent(&[0; 32]), None);
    assert_eq!(f.decode(&[0; 32], 0, u64::MAX), Decoded::End);
}

#[test]
#[should_panic(expected = "over the limit of its format")]
fn encoding_a_payload_over_the_format_limit_is_a_bug() {
    let _ = one_frame(LengthEncoding::U16, &[0u8; 70_000]);
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
