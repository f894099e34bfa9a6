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
