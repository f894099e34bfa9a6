//! The harness of the table's fuzz target (`fuzz/fuzz_targets/kv_table.rs`, through
//! `ringtide::kv::fuzz`) and of its tests: compiled for tests and with the non-default feature
//! `fuzzing` only. Tables are built and read in memory ([`Table::from_bytes`]), so no file is
//! needed; the code paths are the ones files take, `Source` aside.
//!
//! - [`decode_image`]: arbitrary bytes read as a table image, as they are and with their
//!   checksums recomputed ([`reseal`]) so that the fuzzer reaches the decoders behind them.
//!   Opening, every lookup and both scans must return entries or `Corruption`, never panic;
//!   what a scan yields is strictly ordered, and a backward scan yields what a forward one does.
//! - [`round_trip`]: arbitrary bytes read as options (lz4 data blocks or not among them) and
//!   entries ([`entries_from_bytes`]), written by the builder, read back and compared with a
//!   model ([`check_against`]).
//!
//! The seeds hold lz4 data blocks too, so the decoding target mutates compressed bytes, and
//! behind a recomputed checksum they reach the decompressor.

use std::cmp::Ordering;

use bytes::Bytes;
use futures::executor::block_on;

use super::block::{Block, cmp_internal};
use super::format::{BlockHandle, FOOTER_LEN, TRAILER_LEN};
use super::{Stored, Table, TableBuilder, TableEntry, TableInfo, TableOptions};
use crate::error::{Error, Result};
use crate::kv::options::Compression;
use crate::kv::tree::blob::BlobPtr;

/// Writes `entries` (in order) with the builder; returns the file's bytes and what it holds.
pub(crate) fn build_image(
    entries: &[TableEntry],
    options: &TableOptions,
) -> Result<(Bytes, TableInfo)> {
    let mut b = TableBuilder::new(options);
    let mut image = Vec::new();
    for e in entries {
        b.add_stored(e.bucket, &e.key, e.seq, &e.value)?;
        if let Some(chunk) = b.take_ready() {
            image.extend_from_slice(&chunk);
        }
    }
    let (rest, info) = b.finish()?;
    image.extend_from_slice(&rest);
    Ok((Bytes::from(image), info))
}

fn ikey(e: &TableEntry) -> Vec<u8> {
    super::reader::block_key(e.bucket, &e.key)
}

/// The first entry at or after `(bucket, key, seq)` in sorted `entries`.
fn model_seek(entries: &[TableEntry], bucket: u64, key: &[u8], seq: u64) -> usize {
    let target = super::reader::block_key(bucket, key);
    entries.partition_point(|e| cmp_internal(&ikey(e), e.seq, &target, seq) == Ordering::Less)
}

/// What `Table::get` must answer for sorted `entries`.
pub(crate) fn model_get(
    entries: &[TableEntry],
    bucket: u64,
    key: &[u8],
    snapshot: u64,
) -> Option<super::Stored> {
    let e = entries.get(model_seek(entries, bucket, key, snapshot))?;
    (e.bucket == bucket && e.key.as_ref() == key).then(|| e.value.clone())
}

/// Every entry from the first, then from the last, until the end or an error.
pub(crate) async fn scan_both_ways(
    table: &Table,
) -> (Result<Vec<TableEntry>>, Result<Vec<TableEntry>>) {
    async fn walk(table: &Table, forward: bool) -> Result<Vec<TableEntry>> {
        let mut it = table.iter();
        if forward {
            it.seek_to_first().await?
        } else {
            it.seek_to_last().await?
        }
        let mut out = Vec::new();
        while let Some(e) = it.entry()? {
            out.push(e);
            if forward {
                it.next().await?
            } else {
                it.prev().await?
            }
        }
        if !forward {
            out.reverse();
        }
        Ok(out)
    }
    (walk(table, true).await, walk(table, false).await)
}

/// Probes around every entry: its key at its seq, one above and below, the newest and the
/// oldest snapshot, and keys just around it.
pub(crate) fn probes_of(entries: &[TableEntry]) -> Vec<(u64, Bytes, u64)> {
    let mut out = Vec::new();
    for e in entries {
        for seq in [
            e.seq,
            e.seq.saturating_add(1),
            e.seq.saturating_sub(1),
            u64::MAX,
            0,
        ] {
            out.push((e.bucket, e.key.clone(), seq));
        }
        let mut longer = e.key.to_vec();
        longer.push(0);
        out.push((e.bucket, Bytes::from(longer), u64::MAX));
        let mut shorter = e.key.to_vec();
        shorter.pop();
        out.push((e.bucket, Bytes::from(shorter), 7));
        out.push((e.bucket.wrapping_add(1), e.key.clone(), u64::MAX));
    }
    out
}

/// Checks an open table against the sorted `entries` it was written from: its meta, both
/// scans, and for every probe `get`, `seek` and `seek_for_prev`. Panics on a difference.
pub(crate) async fn check_against(
    table: &Table,
    entries: &[TableEntry],
    probes: &[(u64, Bytes, u64)],
) {
    let meta = table.meta();
    assert_eq!(meta.entries, entries.len() as u64);
    assert_eq!(
        meta.tombstones,
        entries.iter().filter(|e| e.value.is_tombstone()).count() as u64
    );
    let (forward, backward) = scan_both_ways(table).await;
    assert!(
        forward.expect("forward scan") == entries,
        "a forward scan yields the entries written"
    );
    assert!(
        backward.expect("backward scan") == entries,
        "a backward scan yields them too"
    );
    for (bucket, key, seq) in probes {
        let got = table.get(*bucket, key, *seq).await.expect("get");
        assert_eq!(
            got,
            model_get(entries, *bucket, key, *seq),
            "get({bucket}, {key:?}, {seq})"
        );
        let mut it = table.iter();
        it.seek(*bucket, key, *seq).await.expect("seek");
        let at = model_seek(entries, *bucket, key, *seq);
        assert_eq!(
            it.entry().expect("entry").as_ref(),
            entries.get(at),
            "seek({bucket}, {key:?}, {seq})"
        );
        if at < entries.len() {
            // One step each way from a seek.
            it.next().await.expect("next");
            assert_eq!(it.entry().expect("entry").as_ref(), entries.get(at + 1));
            it.seek(*bucket, key, *seq).await.expect("seek");
            it.prev().await.expect("prev");
            let before = at.checked_sub(1).and_then(|i| entries.get(i));
            assert_eq!(it.entry().expect("entry").as_ref(), before);
        }
        it.seek_for_prev(*bucket, key, *seq)
            .await
            .expect("seek_for_prev");
        let target = super::reader::block_key(*bucket, key);
        let last_at_or_before = entries
            .partition_point(|e| cmp_internal(&ikey(e), e.seq, &target, *seq) != Ordering::Greater)
            .checked_sub(1)
            .and_then(|i| entries.get(i));
        assert_eq!(
            it.entry().expect("entry").as_ref(),
            last_at_or_before,
            "seek_for_prev({bucket}, {key:?}, {seq})"
        );
    }
}

/// Reads options and sorted, distinct entries from arbitrary bytes: byte 0 picks the block
/// size, byte 1 the filter (its value mod 3) and the compression (lz4 if its value / 3 is odd);
/// then each entry takes a bucket byte, a key length and key, a seq
/// byte and a value byte (255: a tombstone; 254: a value larger than a block).
pub(crate) fn entries_from_bytes(data: &[u8]) -> (TableOptions, Vec<TableEntry>) {
    let mut it = data.iter().copied();
    let mut next = || it.next();
    let block = 64 + usize::from(next().unwrap_or(0) % 16) * 48;
    let filter_and_compression = next().unwrap_or(2);
    let bits = [0, 1, 10][usize::from(filter_and_compression % 3)];
    let compression = if (filter_and_compression / 3) % 2 == 1 {
        Compression::Lz4
    } else {
        Compression::None
    };
    let options = TableOptions::default()
        .block_size_bytes(block)
        .bloom_bits_per_key(bits)
        .compression(compression)
        .write_buffer_bytes(4 << 10);
    let mut entries = Vec::new();
    while let (Some(b), Some(len)) = (next(), next()) {
        let bucket = [0, 1, 17, u64::MAX][usize::from(b % 4)];
        let key: Vec<u8> = (0..len % 6)
            .map_while(|_| next())
            .map(|k| k % 4 + b'a')
            .collect();
        let (Some(s), Some(v)) = (next(), next()) else {
            break;
        };
        let seq = if s >= 250 {
            u64::MAX - u64::from(s - 250)
        } else {
            u64::from(s)
        };
        let value = match v {
            255 => Stored::Tombstone,
            254 => Stored::Value(Bytes::from(vec![v; block + 100])),
            // A pointer into one of three value-log files.
            253 => Stored::Blob(BlobPtr {
                file: bucket % 3 + 1,
                offset: 24 + seq % 1000,
                len: (len as u32) << 8,
                crc: seq as u32,
            }),
            _ => Stored::Value(Bytes::from(vec![v; usize::from(v % 24)])),
        };
        entries.push(TableEntry {
            bucket,
            key: Bytes::from(key),
            seq,
            value,
        });
    }
    sort_entries(&mut entries);
    (options, entries)
}

/// Sorts entries into internal-key order and keeps one per `(bucket, key, seq)`.
pub(crate) fn sort_entries(entries: &mut Vec<TableEntry>) {
    entries.sort_by(|a, b| cmp_internal(&ikey(a), a.seq, &ikey(b), b.seq));
    entries.dedup_by(|a, b| a.bucket == b.bucket && a.key == b.key && a.seq == b.seq);
}

/// The round-trip target: entries from the bytes, written, read back, compared.
pub(crate) fn round_trip(data: &[u8]) {
    let (options, entries) = entries_from_bytes(data);
    match build_image(&entries, &options) {
        Ok((image, info)) => block_on(async {
            assert_eq!(info.file_bytes, image.len() as u64);
            let table = Table::from_bytes("fuzz", image)
                .await
                .expect("a written table opens");
            assert_eq!(table.meta(), &info.meta);
            check_against(&table, &entries, &probes_of(&entries)).await;
        }),
        Err(Error::InvalidArgument { .. }) => assert!(entries.is_empty()),
        Err(e) => panic!("the builder refused sound entries: {e}"),
    }
}

/// The decoding target: `data` as a table image, as it is and resealed.
pub(crate) fn decode_image(data: &[u8]) {
    decode_one(Bytes::copy_from_slice(data));
    decode_one(Bytes::from(reseal(data)));
}

fn is_corruption<T>(r: &Result<T>) -> bool {
    matches!(r, Err(Error::Corruption { .. }))
}

fn decode_one(image: Bytes) {
    block_on(async {
        let table = match Table::from_bytes("fuzz", image).await {
            Ok(t) => t,
            Err(e) => return assert!(matches!(e, Error::Corruption { .. }), "{e}"),
        };
        let (forward, backward) = scan_both_ways(&table).await;
        for scan in [&forward, &backward] {
            if let Ok(entries) = scan {
                let ordered = entries.windows(2).all(|w| {
                    cmp_internal(&ikey(&w[0]), w[0].seq, &ikey(&w[1]), w[1].seq) == Ordering::Less
                });
                assert!(ordered, "a scan yields entries in order");
            } else {
                assert!(is_corruption(scan));
            }
        }
        if let (Ok(f), Ok(b)) = (&forward, &backward) {
            assert_eq!(f, b, "both scans yield the same entries");
        }
        let entries = forward.unwrap_or_default();
        for (bucket, key, seq) in probes_of(&entries).into_iter().take(256) {
            let r = table.get(bucket, &key, seq).await;
            assert!(r.is_ok() || is_corruption(&r));
            let mut it = table.iter();
            let r = it.seek(bucket, &key, seq).await;
            assert!(r.is_ok() || is_corruption(&r));
        }
    });
}

/// `data` with every checksum it seems to have recomputed: the footer's, and the trailers of
/// the blocks its handles and its index name (best effort: anything out of range is left).
pub(crate) fn reseal(data: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    let Some(footer_at) = d.len().checked_sub(FOOTER_LEN) else {
        return d;
    };
    let crc = crc32fast::hash(&d[footer_at..footer_at + 52]);
    d[footer_at + 52..footer_at + 56].copy_from_slice(&crc.to_le_bytes());
    let field = |d: &[u8], i: usize| {
        u64::from_le_bytes(
            d[footer_at + i * 8..footer_at + i * 8 + 8]
                .try_into()
                .unwrap_or([0; 8]),
        )
    };
    let handles: Vec<BlockHandle> = (0..3)
        .map(|i| BlockHandle {
            offset: field(&d, 2 * i),
            len: field(&d, 2 * i + 1),
        })
        .collect();
    for h in &handles {
        reseal_block(&mut d, *h, footer_at);
    }
    // The data blocks the index names.
    let index = handles[1];
    if index.end() <= footer_at as u64 {
        let raw = Bytes::copy_from_slice(&d[index.offset as usize..index.end() as usize]);
        if let Ok(block) = Block::decode(raw) {
            let mut c = block.cursor();
            let mut ok = c.seek_to_first().is_ok();
            let mut bound = 0;
            while ok && c.valid() && bound < 10_000 {
                if let Ok(h) = BlockHandle::decode(c.value_slice()) {
                    reseal_block(&mut d, h, footer_at);
                }
                ok = c.next().is_ok();
                bound += 1;
            }
        }
    }
    for h in &handles {
        reseal_block(&mut d, *h, footer_at);
    }
    d
}

fn reseal_block(d: &mut [u8], h: BlockHandle, limit: usize) {
    if h.len < TRAILER_LEN as u64 || h.end() > limit as u64 {
        return;
    }
    let (start, end) = (h.offset as usize, h.end() as usize);
    let crc = crc32fast::hash(&d[start..end - 4]);
    d[end - 4..end].copy_from_slice(&crc.to_le_bytes());
}

/// Seeds for the fuzz corpus: tables with and without a filter, one block and many, tombstones,
/// several buckets and versions, a value larger than a block, data blocks stored uncompressed
/// and lz4-compressed. The round-trip target reads the same bytes as entries.
pub(crate) fn seeds() -> Vec<Vec<u8>> {
    let mut entries = Vec::new();
    for (bucket, key, seq, value) in [
        (0u64, &b"alpha"[..], 9u64, Some(&b"one"[..])),
        (0, b"alpha", 4, None),
        (0, b"alphabet", 3, Some(b"")),
        (1, b"", 1, Some(b"root of bucket 1")),
        (17, b"k", 12, Some(&[7u8; 300][..])),
        (17, b"l", 2, None),
        (u64::MAX, b"zz", u64::MAX, Some(b"last")),
    ] {
        entries.push(TableEntry {
            bucket,
            key: Bytes::copy_from_slice(key),
            seq,
            value: value.map(Bytes::copy_from_slice).into(),
        });
    }
    let mut out = Vec::new();
    let (none, lz4) = (Compression::None, Compression::Lz4);
    // The first four as before (the corpus's seed-0 to seed-3), then lz4 tables.
    for (block, bits, compression) in [
        (4096, 10, none),
        (64, 10, none),
        (64, 0, none),
        (256, 1, none),
        (4096, 10, lz4),
        (256, 0, lz4),
    ] {
        let options = TableOptions::default()
            .block_size_bytes(block)
            .bloom_bits_per_key(bits)
            .compression(compression);
        let (image, _) = build_image(&entries, &options).expect("seed entries are sound");
        out.push(image.to_vec());
    }
    // Format version 2: the same entries with bucket 17's value moved to a value-log file.
    entries[4].value = Stored::Blob(BlobPtr {
        file: 5,
        offset: 24,
        len: 300,
        crc: 0x1234_5678,
    });
    let (image, _) = build_image(&entries, &TableOptions::default()).expect("sound entries");
    out.push(image.to_vec());
    out
}

/// The compression bytes of a sound table image's data blocks, in order.
#[cfg(test)]
pub(crate) fn data_block_compression(image: &Bytes) -> Vec<u8> {
    let table = block_on(Table::from_bytes("image", image.clone())).expect("a sound image");
    let mut c = table.index_cursor();
    c.seek_to_first().expect("index");
    let mut out = Vec::new();
    while c.valid() {
        let h = table.handle_at(&c).expect("a handle");
        out.push(image[(h.end() - TRAILER_LEN as u64) as usize]);
        c.next().expect("index");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_decode_and_round_trip() {
        let mut lz4_seeds = 0;
        let mut pointer_seeds = 0;
        for seed in seeds() {
            decode_image(&seed);
            round_trip(&seed);
            let image = Bytes::from(seed);
            let table = block_on(Table::from_bytes("seed", image.clone())).expect("a seed opens");
            assert_eq!(table.meta().entries, 7);
            lz4_seeds += usize::from(data_block_compression(&image).contains(&1));
            pointer_seeds += usize::from(!table.meta().blobs.is_empty());
        }
        assert_eq!(lz4_seeds, 2, "two seeds hold lz4 data blocks");
        assert_eq!(pointer_seeds, 1, "one seed points into a value-log file");
        round_trip(&[]);
        round_trip(&[3, 1, 0, 2, b'a', b'b', 5, 1, 0, 2, b'a', b'b', 4, 255]);
        // Byte 1 = 4: a filter of 1 bit per key, lz4 blocks.
        let mut lz4 = vec![3, 4];
        for i in 0..40u8 {
            lz4.extend_from_slice(&[i % 4, 3, b'a', b'b', b'c', i, 20]);
        }
        let (options, entries) = entries_from_bytes(&lz4);
        assert_eq!(options.compression, Compression::Lz4);
        let (image, _) = build_image(&entries, &options).expect("sound entries");
        assert!(data_block_compression(&image).contains(&1));
        round_trip(&lz4);
    }
}
