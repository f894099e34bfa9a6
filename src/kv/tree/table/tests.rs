//! The table's properties: what is written reads back (point lookups at any snapshot, scans both
//! ways, seeks) equal to a `BTreeMap` model, in memory and through files on both I/O backends;
//! damage of any kind (every truncation, a bit flipped in every byte) is `Corruption` naming the
//! damaged block, never a panic and never a value that was not written; the writer refuses what
//! it must and writes in large writes; the block cache answers a second read without I/O, stays
//! within its budget, keeps no damaged block and no block under another table's id; lz4 data
//! blocks (`tests/compression.rs`) read back the same, are stored as they are where lz4 does not
//! pay, and a damaged or lying compressed block is `BadTable`.
//!
//! Method: proptest over random entries (several buckets, several versions per key, tombstones,
//! empty values, values larger than a block, keys sharing prefixes and holding 0x00 and 0xff
//! bytes, values compressible and not) and options (block sizes from 64 B, filter on and off,
//! compression none and lz4), the file cases through one small shared block cache; the damage
//! tests run over a small table of many blocks, in memory (every byte) and in files (a sample,
//! through a block cache); the cache tests read that table's files and count the driver's
//! operations and the cache's figures.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use futures::executor::block_on;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use ringtide_platform::{Backend, DriverOptions, IoDriver, OpenOptions};

use super::Stored;
use super::format::FOOTER_LEN;
use super::fuzz::{build_image, check_against, probes_of, scan_both_ways};
use super::{
    BlockCache, BlockHandle, CacheFigures, Table, TableEntry, TableIter, TableMeta, TableOptions,
    TableWriter, sync_table_dir,
};
use crate::error::{CorruptionKind, Error};
use crate::kv::options::Compression;

/// The model: internal key (bucket, user key, seq descending) → value or tombstone.
type Model = BTreeMap<(u64, Vec<u8>, Reverse<u64>), Option<Vec<u8>>>;

fn model_strategy(max_entries: usize) -> impl Strategy<Value = Model> {
    let bucket = prop::sample::select(vec![0u64, 1, 17, u64::MAX]);
    // A small alphabet with the bytes at both ends: long shared prefixes, and separators at the
    // edges of the byte range.
    let key = prop::collection::vec(prop::sample::select(vec![b'a', b'b', 0u8, 0xff]), 0..6);
    let seq = prop_oneof![0u64..20, Just(u64::MAX), any::<u64>()];
    // Random bytes (incompressible) and runs of two letters (compressible): lz4 tables then
    // hold blocks of both kinds.
    let value = prop_oneof![
        6 => prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
        1 => prop::collection::vec(any::<u8>(), 300..3000).prop_map(Some),
        3 => prop::collection::vec(prop::sample::select(vec![b'x', b'y']), 0..300).prop_map(Some),
    ];
    prop::collection::btree_map((bucket, key, seq.prop_map(Reverse)), value, 1..max_entries)
}

fn options_strategy() -> impl Strategy<Value = TableOptions> {
    (
        prop::sample::select(vec![64usize, 100, 256, 4096]),
        prop::sample::select(vec![0u32, 1, 10]),
        prop::sample::select(vec![Compression::None, Compression::Lz4]),
    )
        .prop_map(|(block, bits, compression)| {
            TableOptions::default()
                .block_size_bytes(block)
                .bloom_bits_per_key(bits)
                .compression(compression)
                .write_buffer_bytes(4 << 10)
        })
}

fn probe_strategy() -> impl Strategy<Value = Vec<(u64, Vec<u8>, u64)>> {
    let bucket = prop::sample::select(vec![0u64, 1, 2, 17, u64::MAX]);
    let key = prop::collection::vec(prop::sample::select(vec![b'a', b'b', 0u8, 0xff]), 0..6);
    prop::collection::vec((bucket, key, prop_oneof![0u64..20, any::<u64>()]), 0..30)
}

fn entries_of(model: &Model) -> Vec<TableEntry> {
    model
        .iter()
        .map(|((bucket, key, Reverse(seq)), value)| TableEntry {
            bucket: *bucket,
            key: Bytes::copy_from_slice(key),
            seq: *seq,
            value: value.as_deref().map(Bytes::copy_from_slice).into(),
        })
        .collect()
}

/// The model's answer to a point lookup: the newest version at or below the snapshot.
fn model_get(model: &Model, bucket: u64, key: &[u8], snapshot: u64) -> Option<Option<Bytes>> {
    let ((b, k, _), v) = model
        .range((bucket, key.to_vec(), Reverse(snapshot))..)
        .next()?;
    (*b == bucket && k == key).then(|| v.as_deref().map(Bytes::copy_from_slice))
}

/// Checks a table against the model: every lookup at the random snapshots and around every
/// entry, both scans, every seek.
async fn check_model(table: &Table, model: &Model, random: &[(u64, Vec<u8>, u64)]) {
    let entries = entries_of(model);
    let mut probes = probes_of(&entries);
    probes.extend(
        random
            .iter()
            .map(|(b, k, s)| (*b, Bytes::copy_from_slice(k), *s)),
    );
    for (bucket, key, seq) in &probes {
        let got = table.get(*bucket, key, *seq).await.expect("get");
        assert_eq!(
            got,
            model_get(model, *bucket, key, *seq).map(Stored::from),
            "get({bucket}, {key:?}, {seq})"
        );
    }
    check_against(table, &entries, &probes).await;
}

proptest! {
    #![proptest_config(Config { cases: 128, ..Config::default() })]

    #[test]
    fn tables_in_memory_read_back_as_the_model(
        model in model_strategy(300),
        options in options_strategy(),
        random in probe_strategy(),
    ) {
        let (image, info) = build_image(&entries_of(&model), &options).expect("sound entries");
        prop_assert_eq!(info.file_bytes, image.len() as u64);
        block_on(async {
            let table = Table::from_bytes("memory", image).await.expect("opens");
            let meta: &TableMeta = table.meta();
            assert_eq!(meta, &info.meta);
            check_model(&table, &model, &random).await;
        });
    }
}

/// The drivers of the backends this run covers (`RINGTIDE_IO_BACKEND` restricts it to one;
/// io_uring is skipped where the kernel refuses it). Call inside a tokio runtime.
fn drivers() -> Vec<IoDriver> {
    let only = std::env::var(ringtide_platform::BACKEND_ENV)
        .ok()
        .map(|s| s.parse::<Backend>().expect("a backend name"));
    [Backend::IoUring, Backend::ThreadPool]
        .into_iter()
        .filter(|b| only.is_none_or(|o| o == Backend::Auto || o == *b))
        .filter_map(|b| match IoDriver::new(DriverOptions::default().use_env(false).backend(b)) {
            Ok(d) => Some(d),
            Err(e) if b == Backend::IoUring => {
                tracing::warn!(error = %e, "io_uring unavailable: the table's file tests run on the thread pool only");
                None
            }
            Err(e) => panic!("the thread pool driver starts: {e}"),
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

async fn write_table(
    driver: &IoDriver,
    path: &Path,
    entries: &[TableEntry],
    options: &TableOptions,
) -> crate::Result<super::TableInfo> {
    let mut w = TableWriter::create(driver, path, options).await?;
    for e in entries {
        w.add_stored(e.bucket, &e.key, e.seq, &e.value).await?;
    }
    let info = w.finish().await?;
    sync_table_dir(driver, path.parent().expect("a directory")).await?;
    Ok(info)
}

#[test]
fn tables_in_files_read_back_as_the_model_on_both_backends() {
    let rt = runtime();
    let _guard = rt.enter();
    for driver in drivers() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // Shared by every case, small enough to evict: each case's table has an id of its own.
        let cache = BlockCache::new(64 << 10);
        let mut runner = TestRunner::new(Config {
            cases: 16,
            ..Config::default()
        });
        let n = std::cell::Cell::new(0u64);
        let strategy = (model_strategy(400), options_strategy(), probe_strategy());
        runner
            .run(&strategy, |(model, options, random)| {
                n.set(n.get() + 1);
                let path = dir.path().join(format!("{:06}.table", n.get()));
                rt.block_on(async {
                    let info = write_table(&driver, &path, &entries_of(&model), &options)
                        .await
                        .expect("written");
                    let table = Table::open(&driver, &path, n.get(), cache.clone())
                        .await
                        .expect("opens");
                    assert_eq!(table.file_bytes(), info.file_bytes);
                    assert_eq!(table.meta(), &info.meta);
                    assert_eq!(table.id(), n.get());
                    check_model(&table, &model, &random).await;
                    let figures = cache.figures();
                    assert!(figures.bytes <= figures.capacity_bytes, "{figures:?}");
                });
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{:?}: {e}", driver.backend()));
    }
}

#[test]
fn a_table_is_written_in_large_writes() {
    let rt = runtime();
    let _guard = rt.enter();
    for driver in drivers() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("big.table");
        let value = vec![7u8; 1000];
        rt.block_on(async {
            let before = driver.stats().submitted;
            let mut w = TableWriter::create(&driver, &path, &TableOptions::default())
                .await
                .expect("created");
            for i in 0..2000u32 {
                w.add(16, &i.to_be_bytes(), 1, Some(&value))
                    .await
                    .expect("added");
            }
            assert_eq!((w.entries(), w.path()), (2000, path.as_path()));
            let estimate = w.estimated_file_bytes();
            let info = w.finish().await.expect("finished");
            // The estimate lacks only the filter, index and meta blocks and the footer.
            assert!(estimate < info.file_bytes && info.file_bytes - estimate < 64 << 10);
            let ops = driver.stats().submitted - before;
            assert!(info.file_bytes > 2_000_000);
            // Open, 4 writes of 512 KiB and the rest, fdatasync, close.
            assert!(ops <= 10, "{ops} operations for a 2 MB table");
            let table = Table::open(&driver, &path, 1, BlockCache::disabled())
                .await
                .expect("opens");
            assert_eq!(
                table.get(16, &1999u32.to_be_bytes(), 1).await.expect("get"),
                Some(Stored::Value(Bytes::from(value.clone())))
            );
        });
    }
}

#[test]
fn an_empty_table_is_refused_and_leaves_no_file() {
    let rt = runtime();
    let _guard = rt.enter();
    for driver in drivers() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("empty.table");
        rt.block_on(async {
            let w = TableWriter::create(&driver, &path, &TableOptions::default())
                .await
                .expect("created");
            assert!(matches!(
                w.finish().await,
                Err(Error::InvalidArgument { .. })
            ));
            let gone = driver.open(&path, &OpenOptions::new().read(true)).await;
            assert_eq!(
                gone.err().map(|e| e.kind()),
                Some(std::io::ErrorKind::NotFound)
            );
        });
    }
    assert!(matches!(
        build_image(&[], &TableOptions::default()),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn invalid_options_and_oversized_entries_are_refused() {
    for bad in [
        TableOptions::default().block_size_bytes(63),
        TableOptions::default().block_size_bytes(5 << 20),
        TableOptions::default().bloom_bits_per_key(33),
        TableOptions::default().write_buffer_bytes(100),
    ] {
        assert!(matches!(bad.validate(), Err(Error::InvalidArgument { .. })));
    }
    let mut b = super::TableBuilder::new(&TableOptions::default());
    let huge_key = vec![0u8; (16 << 20) + 1];
    assert!(matches!(
        b.add(0, &huge_key, 1, None),
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(b.entries(), 0);
}

/// Out-of-order input is a caller's bug: a debug assertion, and an error (not a panic) in a
/// release build.
#[test]
#[cfg_attr(debug_assertions, should_panic(expected = "out of order"))]
fn entries_out_of_order_are_refused() {
    let mut b = super::TableBuilder::new(&TableOptions::default());
    b.add(1, b"b", 5, None).expect("first");
    for (bucket, key, seq) in [(1, &b"a"[..], 9), (0, b"z", 9), (1, b"b", 5), (1, b"b", 6)] {
        assert!(matches!(
            b.add(bucket, key, seq, None),
            Err(Error::InvalidArgument { .. })
        ));
    }
    b.add(1, b"b", 4, Some(b"ok")).expect("after");
}

/// A small table of many blocks, with a filter: every region of its file.
fn small_table() -> (Model, Bytes, Vec<(u64, &'static str)>) {
    small_table_with(Compression::None)
}

/// [`small_table`], its data blocks stored as `compression` says.
fn small_table_with(compression: Compression) -> (Model, Bytes, Vec<(u64, &'static str)>) {
    let mut model = Model::new();
    for i in 0..24u64 {
        let key = format!("key-{:02}", i / 2).into_bytes();
        let value = (i % 5 != 0).then(|| vec![b'v'; (i as usize * 7) % 50]);
        model.insert((i % 3, key, Reverse(100 - i)), value);
    }
    let options = TableOptions::default()
        .block_size_bytes(128)
        .bloom_bits_per_key(10)
        .compression(compression);
    let (image, info) = build_image(&entries_of(&model), &options).expect("sound");
    assert!(
        info.meta.data_blocks >= 5,
        "{} data blocks",
        info.meta.data_blocks
    );
    let table = block_on(Table::from_bytes("small", image.clone())).expect("opens");
    let mut regions: Vec<(u64, &str)> = Vec::new();
    let mut c = table.index_cursor();
    c.seek_to_first().expect("index");
    while c.valid() {
        regions.push((table.handle_at(&c).expect("a handle").offset, "data block"));
        c.next().expect("index");
    }
    let footer = table.footer();
    regions.extend([
        (footer.filter.offset, "filter"),
        (footer.index.offset, "index"),
        (footer.meta.offset, "meta"),
    ]);
    regions.push((image.len() as u64 - FOOTER_LEN as u64, "footer"));
    (model, image, regions)
}

/// The start of the region (block or footer) that holds byte `at`.
fn region_of(regions: &[(u64, &'static str)], at: u64) -> (u64, &'static str) {
    *regions
        .iter()
        .rev()
        .find(|(start, _)| *start <= at)
        .expect("a region")
}

/// Reads a damaged image every way; nothing may panic or differ from the model, and the damage
/// must be found: as `Corruption` at `expected` (if given) when the table is opened or scanned.
async fn check_damaged(
    table: crate::Result<Table>,
    model: &Model,
    expected: Option<u64>,
    what: &str,
) {
    let is_expected = |e: &Error| match e {
        Error::Corruption { offset, .. } => expected.is_none_or(|x| x == *offset),
        _ => false,
    };
    let table = match table {
        Ok(t) => t,
        Err(e) => return assert!(is_expected(&e), "{what}: {e}"),
    };
    let entries = entries_of(model);
    for (bucket, key, seq) in probes_of(&entries) {
        match table.get(bucket, &key, seq).await {
            Ok(v) => assert_eq!(
                v,
                model_get(model, bucket, &key, seq).map(Stored::from),
                "{what}: a damaged table answered wrongly"
            ),
            Err(e) => assert!(is_expected(&e), "{what}: {e}"),
        }
    }
    let (forward, backward) = scan_both_ways(&table).await;
    for scan in [forward, backward] {
        match scan {
            Ok(_) => panic!("{what}: the damage went unnoticed by a full scan"),
            Err(e) => assert!(is_expected(&e), "{what}: {e}"),
        }
    }
    // Entry by entry, until the damage: every entry yielded is one written.
    let mut it: TableIter = table.iter();
    let mut step = it.seek_to_first().await;
    let mut i = 0;
    while step.is_ok() {
        assert_eq!(
            it.valid(),
            i < entries.len() && matches!(it.entry(), Ok(Some(_)))
        );
        match it.entry() {
            Ok(Some(e)) => assert_eq!(Some(&e), entries.get(i), "{what}: entry {i}"),
            Ok(None) => break,
            Err(e) => panic!("{what}: {e}"),
        }
        i += 1;
        step = it.next().await;
    }
}

#[test]
fn damaged_tables_in_memory_are_corruption_of_the_damaged_block() {
    let (model, image, regions) = small_table();
    let footer_at = image.len() as u64 - FOOTER_LEN as u64;
    block_on(async {
        for len in 0..image.len() {
            let t = Table::from_bytes("cut", image.slice(..len)).await;
            // A cut file has its footer elsewhere, or none: it is refused at open.
            assert!(t.is_err(), "cut at {len} opened");
            let at = if len < FOOTER_LEN {
                0
            } else {
                len as u64 - FOOTER_LEN as u64
            };
            check_damaged(t, &model, Some(at), &format!("cut at {len}")).await;
        }
        // Every bit of every byte (bounded: the table is 1-2 KB).
        for at in 0..image.len() {
            for bit in 0..8 {
                let mut d = image.to_vec();
                d[at] ^= 1 << bit;
                let (start, region) = region_of(&regions, at as u64);
                let expected = if region == "footer" { footer_at } else { start };
                let what = format!("bit {bit} of byte {at} ({region} at {start})");
                check_damaged(
                    Table::from_bytes("flip", Bytes::from(d)).await,
                    &model,
                    Some(expected),
                    &what,
                )
                .await;
            }
        }
    });
}

#[test]
fn damaged_tables_in_files_are_corruption_on_both_backends() {
    let (model, image, regions) = small_table();
    let footer_at = image.len() as u64 - FOOTER_LEN as u64;
    let rt = runtime();
    let _guard = rt.enter();
    for driver in drivers() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // Read through a cache, which must keep none of the damage.
        let cache = BlockCache::new(1 << 20);
        let mut id = 0;
        let mut open = |path: std::path::PathBuf| {
            id += 1;
            Table::open(&driver, path, id, cache.clone())
        };
        rt.block_on(async {
            let write = |name: String, bytes: Vec<u8>| {
                let path = dir.path().join(name);
                let driver = driver.clone();
                async move {
                    write_file(&driver, &path, bytes).await;
                    path
                }
            };
            for len in (0..image.len()).step_by(7) {
                let path = write(format!("cut-{len}"), image[..len].to_vec()).await;
                let at = if len < FOOTER_LEN {
                    0
                } else {
                    len as u64 - FOOTER_LEN as u64
                };
                check_damaged(
                    open(path).await,
                    &model,
                    Some(at),
                    &format!("file cut at {len}"),
                )
                .await;
            }
            for at in (0..image.len()).step_by(5) {
                let mut d = image.to_vec();
                d[at] ^= 1 << (at % 8);
                let (start, region) = region_of(&regions, at as u64);
                let expected = if region == "footer" { footer_at } else { start };
                let path = write(format!("flip-{at}"), d).await;
                let what = format!("file, byte {at} ({region} at {start})");
                check_damaged(open(path).await, &model, Some(expected), &what).await;
            }
        });
    }
}

#[test]
fn a_newer_format_version_or_a_foreign_file_is_a_clear_error() {
    let (_, image, _) = small_table();
    let footer_at = image.len() - FOOTER_LEN;
    let mut newer = image.to_vec();
    newer[footer_at + 50] = 3;
    let newer = super::fuzz::reseal(&newer);
    let e = block_on(Table::from_bytes("newer", Bytes::from(newer))).expect_err("refused");
    assert!(
        matches!(e, Error::Corruption { offset, kind: CorruptionKind::UnsupportedVersion { found: 3, supported: 2 }, .. } if offset == footer_at as u64),
        "{e}"
    );
    // Version 2 over a version-1 meta block (no value-log count): the meta block is refused.
    let mut two = image.to_vec();
    two[footer_at + 50] = 2;
    let two = super::fuzz::reseal(&two);
    let e = block_on(Table::from_bytes("two", Bytes::from(two))).expect_err("refused");
    assert!(
        matches!(
            e,
            Error::Corruption {
                kind: CorruptionKind::BadTable { .. },
                ..
            }
        ),
        "{e}"
    );
    let foreign = Bytes::from(vec![0x5a; 4096]);
    let e = block_on(Table::from_bytes("foreign", foreign)).expect_err("refused");
    assert!(
        matches!(
            e,
            Error::Corruption {
                kind: CorruptionKind::BadMagic,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn lookups_of_absent_keys_read_no_data_block_when_the_filter_rules_them_out() {
    // Every probe of a key not in the table is answered from the filter and the key range:
    // with the image's data blocks zeroed, such lookups still succeed.
    let mut model = Model::new();
    for i in 0..200u32 {
        model.insert(
            (3, format!("present-{i}").into_bytes(), Reverse(1)),
            Some(b"v".to_vec()),
        );
    }
    let options = TableOptions::default().block_size_bytes(256);
    let (image, _) = build_image(&entries_of(&model), &options).expect("sound");
    let table = block_on(Table::from_bytes("filter", image.clone())).expect("opens");
    let data_end = table.footer().data_end() as usize;
    let mut zeroed = image.to_vec();
    zeroed[..data_end].fill(0);
    let table = block_on(Table::from_bytes("zeroed", Bytes::from(zeroed)))
        .expect("the data blocks are not read at open");
    let mut read = 0;
    for i in 0..1000u32 {
        match block_on(table.get(3, format!("absent-{i}").as_bytes(), 5)) {
            Ok(None) => {}
            Err(Error::Corruption { .. }) => read += 1,
            other => panic!("{other:?}"),
        }
    }
    // About 1% false positives at 10 bits per key.
    assert!(read < 50, "{read} of 1000 absent keys read a data block");
    let handle = BlockHandle { offset: 0, len: 1 };
    assert!(block_on(table.read_block(handle)).is_err());
}

/// Writes `bytes` as a new file at `path`.
async fn write_file(driver: &IoDriver, path: &Path, bytes: Vec<u8>) {
    let opts = OpenOptions::new().write(true).create_new(true);
    let f = driver.open(path, &opts).await.expect("created");
    let (res, _) = f.write_all_at(Bytes::from(bytes), 0).await;
    res.expect("written");
    f.close().await.expect("closed");
}

mod cache;
mod compression;
