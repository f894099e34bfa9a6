//! lz4 data blocks: written where they pay (1/8 saved) and stored as they are where not, read
//! back equal to the model, cached decompressed; a damaged compressed block, or one whose stated
//! length lies, is `BadTable` at its offset, never a panic or a wrong value; and tables written
//! without compression are byte for byte what the format wrote before lz4 existed.

use super::super::cache::ENTRY_OVERHEAD_BYTES;
use super::super::format::TRAILER_LEN;
use super::super::fuzz::{data_block_compression, decode_image, reseal, seeds};
use super::*;

const NONE: u8 = 0;
const LZ4: u8 = 1;

/// A tiny deterministic generator (xorshift64*): incompressible bytes without a dependency.
struct Noise(u64);

impl Noise {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }
}

/// Entries whose values are text that repeats (compressible) or noise (not), by key.
fn model_of(count: u32, noisy: impl Fn(u32) -> bool) -> Model {
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let mut model = Model::new();
    for i in 0..count {
        let key = format!("user:{i:06}").into_bytes();
        let value = if noisy(i) {
            noise.bytes(120)
        } else {
            format!("{{\"id\": {i}, \"name\": \"user {i}\", \"active\": true}}").into_bytes()
        };
        model.insert((1, key.clone(), Reverse(2)), Some(value));
        if i % 4 == 0 {
            model.insert((1, key, Reverse(1)), None);
        }
    }
    model
}

fn options(block: usize, compression: Compression) -> TableOptions {
    TableOptions::default()
        .block_size_bytes(block)
        .compression(compression)
}

#[test]
fn lz4_tables_read_back_as_the_model_and_are_smaller() {
    let model = model_of(600, |_| false);
    for block in [256, 4096] {
        let (plain, plain_info) =
            build_image(&entries_of(&model), &options(block, Compression::None)).expect("sound");
        let (lz4, lz4_info) =
            build_image(&entries_of(&model), &options(block, Compression::Lz4)).expect("sound");
        assert!(data_block_compression(&plain).iter().all(|&b| b == NONE));
        // Every block but perhaps the last (a single entry may not shrink by 1/8).
        let bytes = data_block_compression(&lz4);
        let compressed = bytes.iter().filter(|&&b| b == LZ4).count();
        assert!(compressed + 1 >= bytes.len(), "{bytes:?}");
        assert!(
            lz4.len() < plain.len() * 3 / 4,
            "block {block}: lz4 {} vs {} bytes",
            lz4.len(),
            plain.len()
        );
        assert_eq!(plain_info.uncompressed_file_bytes, plain_info.file_bytes);
        assert!(lz4_info.uncompressed_file_bytes > lz4_info.file_bytes);
        // The same data blocks uncompressed: the files differ only by the index's offsets.
        let (a, b) = (lz4_info.uncompressed_file_bytes, plain_info.file_bytes);
        assert!(
            a.abs_diff(b) < 64 + 4 * lz4_info.meta.data_blocks,
            "{a} vs {b}"
        );
        assert_eq!(lz4_info.meta, plain_info.meta);
        block_on(async {
            let table = Table::from_bytes("lz4", lz4).await.expect("opens");
            check_model(&table, &model, &[(1, b"user:000300".to_vec(), 1)]).await;
        });
    }
}

#[test]
fn blocks_lz4_does_not_shrink_by_an_eighth_are_stored_as_they_are() {
    // Noise only: every block is stored as it is, and the file is the uncompressed one, byte
    // for byte.
    let noisy = model_of(300, |_| true);
    let (plain, _) =
        build_image(&entries_of(&noisy), &options(512, Compression::None)).expect("sound");
    let (lz4, info) =
        build_image(&entries_of(&noisy), &options(512, Compression::Lz4)).expect("sound");
    assert!(data_block_compression(&lz4).iter().all(|&b| b == NONE));
    assert_eq!(lz4, plain);
    assert_eq!(info.uncompressed_file_bytes, info.file_bytes);
    // Runs of noise and of text: blocks of both kinds in one table, read back alike.
    let mixed = model_of(600, |i| (i / 50) % 2 == 0);
    let (image, _) =
        build_image(&entries_of(&mixed), &options(512, Compression::Lz4)).expect("sound");
    let bytes = data_block_compression(&image);
    assert!(bytes.contains(&NONE) && bytes.contains(&LZ4), "{bytes:?}");
    block_on(async {
        let table = Table::from_bytes("mixed", image).await.expect("opens");
        check_model(&table, &mixed, &[]).await;
    });
}

/// The small table, lz4: its model, image and regions, and its data blocks' handles with their
/// compression bytes.
struct SmallLz4 {
    model: Model,
    image: Bytes,
    regions: Vec<(u64, &'static str)>,
    handles: Vec<(BlockHandle, u8)>,
}

fn small_lz4_table() -> SmallLz4 {
    let (model, image, regions) = small_table_with(Compression::Lz4);
    let table = block_on(Table::from_bytes("small", image.clone())).expect("opens");
    let mut handles = Vec::new();
    let mut c = table.index_cursor();
    c.seek_to_first().expect("index");
    while c.valid() {
        let h = table.handle_at(&c).expect("a handle");
        handles.push((h, image[(h.end() - TRAILER_LEN as u64) as usize]));
        c.next().expect("index");
    }
    assert!(
        handles.iter().filter(|(_, b)| *b == LZ4).count() >= 3,
        "{handles:?}"
    );
    SmallLz4 {
        model,
        image,
        regions,
        handles,
    }
}

#[test]
fn damaged_lz4_tables_are_corruption_of_the_damaged_block() {
    let SmallLz4 {
        model,
        image,
        regions,
        ..
    } = small_lz4_table();
    let footer_at = image.len() as u64 - FOOTER_LEN as u64;
    block_on(async {
        for len in 0..image.len() {
            let t = Table::from_bytes("cut", image.slice(..len)).await;
            assert!(t.is_err(), "cut at {len} opened");
            let at = (len as u64).saturating_sub(FOOTER_LEN as u64);
            check_damaged(t, &model, Some(at), &format!("cut at {len}")).await;
        }
        // Every bit of every byte: the checksum (of the stored, compressed bytes) catches each
        // before anything is decompressed.
        for at in 0..image.len() {
            for bit in 0..8 {
                let mut d = image.to_vec();
                d[at] ^= 1 << bit;
                let (start, region) = region_of(&regions, at as u64);
                let expected = if region == "footer" { footer_at } else { start };
                let what = format!("bit {bit} of byte {at} ({region} at {start})");
                let t = Table::from_bytes("flip", Bytes::from(d)).await;
                check_damaged(t, &model, Some(expected), &what).await;
            }
        }
    });
}

#[test]
fn damaged_lz4_data_behind_a_recomputed_checksum_never_panics() {
    // What the fuzz target does, over every bit of every compressed block: with the checksum
    // recomputed the decompressor sees the damage; it may yield other bytes (the checksum was
    // forged), but every read returns entries or `Corruption`, never a panic.
    let SmallLz4 { image, handles, .. } = small_lz4_table();
    for (h, byte) in handles {
        if byte != LZ4 {
            continue;
        }
        for at in h.offset..h.end() - TRAILER_LEN as u64 {
            for bit in 0..8 {
                let mut d = image.to_vec();
                d[at as usize] ^= 1 << bit;
                decode_image(&reseal(&d));
            }
        }
    }
}

/// `image` with the stated length of the compressed block `h` set by `edit` (on the uvarint's
/// bytes, its width kept) and the checksums recomputed.
fn with_length(image: &Bytes, h: BlockHandle, edit: impl Fn(&mut [u8])) -> Bytes {
    let mut d = image.to_vec();
    let start = h.offset as usize;
    let width = d[start..]
        .iter()
        .position(|b| b & 0x80 == 0)
        .expect("a uvarint")
        + 1;
    edit(&mut d[start..start + width]);
    Bytes::from(reseal(&d))
}

#[test]
fn a_compressed_block_whose_length_lies_is_refused() {
    let SmallLz4 {
        model,
        image,
        handles,
        ..
    } = small_lz4_table();
    let (h, _) = *handles
        .iter()
        .find(|(h, b)| {
            let first = image[h.offset as usize];
            *b == LZ4 && first & 0x80 != 0 && !matches!(first & 0x7f, 0 | 0x7f)
        })
        .expect("an lz4 block of 128 bytes or more (a two-byte length)");
    type Lie = fn(&mut [u8]);
    let lies: [(&str, Lie); 4] = [
        ("one byte more", (|v| v[0] += 1)),
        ("one byte less", (|v| v[0] -= 1)),
        ("16 KiB more", (|v| *v.last_mut().unwrap() = 0x7f)),
        ("nothing", (|v| v.iter_mut().for_each(|b| *b &= 0x80))),
    ];
    block_on(async {
        for (what, edit) in lies {
            let lying = with_length(&image, h, edit);
            let table = Table::from_bytes("lying", lying).await.expect("opens");
            match table.read_block(h).await {
                Err(Error::Corruption {
                    offset,
                    kind: CorruptionKind::BadTable { .. },
                    ..
                }) => assert_eq!(offset, h.offset, "{what}"),
                other => panic!("{what}: {other:?}"),
            }
            check_damaged(Ok(table), &model, Some(h.offset), what).await;
        }
    });
}

#[test]
fn the_cache_holds_blocks_decompressed_and_weighs_them_so() {
    let model = model_of(400, |_| false);
    let (image, info) =
        build_image(&entries_of(&model), &options(512, Compression::Lz4)).expect("sound");
    let rt = runtime();
    let _guard = rt.enter();
    for driver in drivers() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("1.table");
        rt.block_on(async {
            write_file(&driver, &path, image.to_vec()).await;
            let cache = BlockCache::new(4 << 20);
            let table = Table::open(&driver, &path, 1, cache.clone())
                .await
                .expect("opens");
            let mut contents = 0;
            let mut c = table.index_cursor();
            c.seek_to_first().expect("index");
            while c.valid() {
                let h = table.handle_at(&c).expect("a handle");
                let block = table.read_block(h).await.expect("a sound block");
                assert_eq!(block.stored_len() as u64, h.len);
                assert!(block.len_bytes() as u64 > h.len, "stored compressed");
                contents += block.len_bytes() as u64;
                c.next().expect("index");
            }
            let f = cache.figures();
            let blocks = info.meta.data_blocks;
            assert_eq!(f.entries, blocks);
            assert_eq!(f.bytes, contents + blocks * ENTRY_OVERHEAD_BYTES, "{f:?}");
            assert!(contents > table.footer().data_end(), "{f:?}");
            // Read again from the cache (no I/O, nothing decompressed twice), as written.
            let before = driver.stats().submitted;
            check_model(&table, &model, &[]).await;
            assert_eq!(driver.stats().submitted, before);
            assert_eq!(cache.figures().misses, blocks);
        });
    }
}

#[test]
fn tables_without_compression_are_written_as_before_lz4_and_read() {
    // The corpus's seed-0 to seed-3 were written before lz4 existed (compression byte 0 on
    // every block): today's writer writes the same bytes, and they read back.
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/kv_table");
    let seeds = seeds();
    for (i, seed) in seeds.iter().enumerate().take(4) {
        let old = std::fs::read(corpus.join(format!("seed-{i}"))).expect("a corpus seed");
        assert!(old == *seed, "seed-{i} is written as before");
        let image = Bytes::from(old);
        assert!(data_block_compression(&image).iter().all(|&b| b == NONE));
        let table = block_on(Table::from_bytes("old", image)).expect("opens");
        let (forward, _) = block_on(scan_both_ways(&table));
        assert_eq!(forward.expect("a scan").len(), 7);
    }
}
