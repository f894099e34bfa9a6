//! The entry points of the key-value store's fuzz targets (`fuzz/fuzz_targets/kv_record.rs`,
//! `fuzz/fuzz_targets/kv_table.rs`, `fuzz/fuzz_targets/kv_manifest.rs`), compiled only with the
//! non-default feature `fuzzing`: not API.

use std::ops::Bound;

use bytes::Bytes;

use super::record::{self, Encoded, WriteRef};
use super::txn::oracle::ScannedRange;
use crate::types::Lsn;

/// Decodes `data` as one record chunk: it must return an error or a chunk, never panic; a chunk
/// that decodes re-encodes to the same bytes (the codec has one encoding per record).
pub fn record_decoder(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    let Ok(chunk) = record::decode(Lsn(1), std::path::Path::new("fuzz"), &bytes) else {
        return;
    };
    let writes = chunk.writes.iter().map(|w| WriteRef {
        bucket: w.bucket,
        key: &w.key,
        value: w.value.as_deref(),
    });
    // Held keys and ranges (a prepare record's) follow the writes, as the encoder puts them.
    let encoded = Encoded::prepare(chunk.header, writes, &chunk.held).finish(chunk.header.seq);
    // Re-encoded, a chunk has the same header and writes; its `more` flag is the encoder's.
    let again: Vec<_> = encoded
        .iter()
        .map(|c| record::decode(Lsn(1), std::path::Path::new("fuzz"), c).expect("re-decodes"))
        .collect();
    let writes: Vec<_> = again.iter().flat_map(|c| c.writes.clone()).collect();
    assert_eq!(writes, chunk.writes, "writes survive a round trip");
    let held: Vec<_> = again.iter().flat_map(|c| c.held.clone()).collect();
    assert_eq!(held, chunk.held, "holds survive a round trip");
    assert!(again.iter().all(|c| c.header == chunk.header));
    if !chunk.more && again.len() == 1 {
        assert_eq!(encoded[0], bytes, "one encoding per record");
    }
}

/// Seeds for the fuzz corpus: valid chunks of every kind.
pub fn seeds() -> Vec<Vec<u8>> {
    use record::{Header, Kind};
    let mut out = Vec::new();
    for kind in [
        Kind::Commit,
        Kind::Prepare,
        Kind::CommitPrepared,
        Kind::Rollback,
    ] {
        let header = Header {
            kind,
            seq: 7,
            txn_id: 3,
            aux: 0,
        };
        let writes = [
            WriteRef {
                bucket: 0,
                key: b"key",
                value: Some(b"value"),
            },
            WriteRef {
                bucket: 17,
                key: b"gone",
                value: None,
            },
        ];
        for chunk in Encoded::new(header, writes).finish(7) {
            out.push(chunk.to_vec());
        }
        if kind == Kind::Prepare {
            // What a serializable prepare holds: a key read, ranges with every kind of bound.
            let held = [
                record::Held::Key((0, Bytes::from_static(b"read"))),
                record::Held::Range(ScannedRange {
                    bucket: 17,
                    lower: Bound::Included(Bytes::from_static(b"a")),
                    upper: Bound::Excluded(Bytes::from_static(b"m")),
                }),
                record::Held::Range(ScannedRange {
                    bucket: 18,
                    lower: Bound::Unbounded,
                    upper: Bound::Unbounded,
                }),
            ];
            for chunk in Encoded::prepare(header, writes, &held).finish(7) {
                out.push(chunk.to_vec());
            }
        }
    }
    out
}

/// The `kv_table` target: `data` read as a table image (as it is, and with its checksums
/// recomputed, so that the decoders behind them, lz4's included, are reached) must open, answer
/// lookups and scan both ways without a panic, every error being `Corruption` and every scan in
/// order; and read as options (compression among them) and entries, written and read back, it
/// must equal a model.
pub fn table_decoder(data: &[u8]) {
    super::tree::table::fuzz::decode_image(data);
    super::tree::table::fuzz::round_trip(data);
}

/// Seeds for the `kv_table` corpus: tables with and without a filter, of one block and many,
/// with data blocks uncompressed and lz4.
pub fn table_seeds() -> Vec<Vec<u8>> {
    super::tree::table::fuzz::seeds()
}

/// Decodes `data` as a sequence of manifest edits (each a u16 LE length, then that many bytes)
/// and replays them as the manifest's replay does: every edit decodes to an error or an edit
/// that re-encodes to its own bytes, and applying them to a state refuses what does not fit
/// without a panic; a state's snapshot edit rebuilds the same state.
pub fn manifest_decoder(data: &[u8]) {
    use super::tree::manifest::{Edit, State};
    let mut state = State::default();
    let mut rest = data;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        let (edit, tail) = tail.split_at(len);
        rest = tail;
        let Ok(decoded) = Edit::decode(edit) else {
            continue;
        };
        assert_eq!(decoded.encode(), edit, "one encoding per edit");
        let before = state.clone();
        if state.apply(&decoded).is_err() {
            // A refused edit may have changed part of a scratch copy, never the state kept.
            state = before;
        }
    }
    let mut rebuilt = State::default();
    rebuilt
        .apply(&state.snapshot())
        .expect("a snapshot applies to an empty state");
    assert_eq!(rebuilt, state, "a snapshot rebuilds its state");
}

/// Seeds of the manifest target: a flush, a compaction, a move down, a snapshot.
pub fn manifest_seeds() -> Vec<Vec<u8>> {
    use super::tree::manifest::{Edit, Flushed};
    let edits = [
        Edit {
            flushed: Some(Flushed {
                seq: 10,
                next_txn_id: 4,
            }),
            added: vec![(0, 1)],
            ..Edit::default()
        },
        Edit {
            removed: vec![1],
            added: vec![(1, 2), (1, 3)],
            ..Edit::default()
        },
        Edit {
            removed: vec![3],
            added: vec![(2, 3)],
            ..Edit::default()
        },
        Edit {
            flushed: Some(Flushed {
                seq: 20,
                next_txn_id: 9,
            }),
            snapshot: true,
            added: vec![(1, 2), (2, 3)],
            shape: Some(2),
            ..Edit::default()
        },
    ];
    let frame = |edits: &[Edit]| {
        let mut out = Vec::new();
        for e in edits {
            let bytes = e.encode();
            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        out
    };
    vec![frame(&edits), frame(&edits[..1]), frame(&edits[3..])]
}

/// The `kv_value_log` target: `data` is a length byte `n`, then `n` bytes of pointers (each a
/// length byte and that many bytes), then a value-log file image. The header check and every
/// pointer's decode and value check answer without a panic; a decoded pointer re-encodes to
/// bytes that decode to it again; a value is accepted only if it lies inside the image and its
/// bytes match the pointer's checksum.
pub fn value_log_decoder(data: &[u8]) {
    use super::tree::blob::{
        BLOB_HEADER_LEN, BlobPtr, MAX_POINTER_BYTES, check_header, check_value,
    };
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (mut pointers, image) = rest.split_at(usize::from(n).min(rest.len()));
    let id = image
        .get(12..20)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let header_ok = check_header(image, id).is_ok();
    assert!(!header_ok || image.len() as u64 >= BLOB_HEADER_LEN);
    while let Some((&len, tail)) = pointers.split_first() {
        let len = (usize::from(len) % (MAX_POINTER_BYTES + 2)).min(tail.len());
        let (encoded, tail) = tail.split_at(len);
        pointers = tail;
        let Ok(ptr) = BlobPtr::decode(encoded) else {
            continue;
        };
        assert!(ptr.offset >= BLOB_HEADER_LEN);
        assert_eq!(
            BlobPtr::decode(&ptr.to_vec()),
            Ok(ptr),
            "a pointer re-encodes"
        );
        // As `BlobFile::read`: the range checked against the file, then the checksum.
        let Some(value) = usize::try_from(ptr.offset)
            .ok()
            .zip(usize::try_from(ptr.end()).ok())
            .and_then(|(a, b)| image.get(a..b))
        else {
            continue;
        };
        if check_value(value, &ptr).is_ok() {
            assert_eq!(crc32fast::hash(value), ptr.crc);
            assert_eq!(value.len(), ptr.len as usize);
        }
    }
}

/// Seeds of the value-log target: a file of three values with pointers to each, one past its
/// end and one with a wrong checksum.
pub fn value_log_seeds() -> Vec<Vec<u8>> {
    use super::tree::blob::{BlobPtr, encode_header};
    let mut image = encode_header(9).to_vec();
    let mut ptrs = Vec::new();
    for v in [&b"first value"[..], &[7u8; 300][..], b""] {
        ptrs.push(BlobPtr {
            file: 9,
            offset: image.len() as u64,
            len: v.len() as u32,
            crc: crc32fast::hash(v),
        });
        image.extend_from_slice(v);
    }
    ptrs.push(BlobPtr {
        offset: image.len() as u64,
        len: 5,
        ..ptrs[0]
    });
    ptrs.push(BlobPtr {
        crc: ptrs[1].crc ^ 1,
        ..ptrs[1]
    });
    let mut encoded = Vec::new();
    for p in &ptrs {
        let b = p.to_vec();
        encoded.push(b.len() as u8);
        encoded.extend_from_slice(&b);
    }
    let mut seed = vec![encoded.len() as u8];
    seed.extend_from_slice(&encoded);
    seed.extend_from_slice(&image);
    vec![seed, image]
}
