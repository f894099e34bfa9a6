//! The entry points of the key-value store's fuzz targets (`fuzz/fuzz_targets/kv_record.rs`,
//! `fuzz/fuzz_targets/kv_table.rs`), compiled only with the non-default feature `fuzzing`: not
//! API.

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
/// recomputed, so that the decoders behind them are reached) must open, answer lookups and scan
/// both ways without a panic, every error being `Corruption` and every scan in order; and read as
/// options and entries, written and read back, it must equal a model.
pub fn table_decoder(data: &[u8]) {
    super::tree::table::fuzz::decode_image(data);
    super::tree::table::fuzz::round_trip(data);
}

/// Seeds for the `kv_table` corpus: tables with and without a filter, of one block and many.
pub fn table_seeds() -> Vec<Vec<u8>> {
    super::tree::table::fuzz::seeds()
}
