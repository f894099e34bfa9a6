//! The block cache under real tables in files, on both backends: a second read is served
//! without I/O, the cache stays within its budget, keeps no damaged block and no block under
//! another table's id.

use super::*;

/// The handles of a table's data blocks, in order.
fn data_handles(table: &Table) -> Vec<BlockHandle> {
    let mut handles = Vec::new();
    let mut c = table.index_cursor();
    c.seek_to_first().expect("index");
    while c.valid() {
        handles.push(table.handle_at(&c).expect("a handle"));
        c.next().expect("index");
    }
    handles
}

/// Reads every data block of `table` once, in order; returns the operations it submitted.
async fn read_every_block(driver: &IoDriver, table: &Table) -> u64 {
    let before = driver.stats().submitted;
    for h in data_handles(table) {
        table.read_block(h).await.expect("a sound block");
    }
    driver.stats().submitted - before
}

/// Runs `test` with each backend's driver and a fresh directory, in a runtime.
fn with_files(test: impl AsyncFn(&IoDriver, &Path)) {
    let rt = runtime();
    let _guard = rt.enter();
    for driver in drivers() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        rt.block_on(test(&driver, dir.path()));
    }
}

#[test]
fn a_table_read_twice_is_read_from_the_cache_the_second_time() {
    let (model, image, _) = small_table();
    with_files(async |driver, dir| {
        let path = dir.join("1.table");
        write_file(driver, &path, image.to_vec()).await;
        let cache = BlockCache::new(1 << 20);
        let table = Table::open(driver, &path, 1, cache.clone())
            .await
            .expect("opens");
        let blocks = table.meta().data_blocks;
        assert!(read_every_block(driver, &table).await >= blocks);
        let first = cache.figures();
        assert_eq!(
            (first.hits, first.misses, first.entries),
            (0, blocks, blocks)
        );
        assert!(first.bytes >= table.footer().data_end());
        assert_eq!(
            read_every_block(driver, &table).await,
            0,
            "no I/O the second time"
        );
        let second = cache.figures();
        assert_eq!((second.hits, second.misses), (blocks, blocks));
        // Lookups and scans are answered from the cache too, and as written.
        let before = driver.stats().submitted;
        check_model(&table, &model, &[]).await;
        assert_eq!(driver.stats().submitted, before);
        let third = cache.figures();
        assert!(
            third.hits > second.hits && third.misses == blocks,
            "{third:?}"
        );
    });
}

#[test]
fn a_budget_smaller_than_the_blocks_keeps_the_cache_within_it() {
    let mut model = Model::new();
    for i in 0..400u32 {
        model.insert(
            (1, i.to_be_bytes().to_vec(), Reverse(1)),
            Some(vec![b'v'; 40]),
        );
    }
    let options = TableOptions::default().block_size_bytes(256);
    let (image, info) = build_image(&entries_of(&model), &options).expect("sound");
    let blocks = info.meta.data_blocks;
    assert!(blocks >= 40, "{blocks} data blocks");
    with_files(async |driver, dir| {
        let path = dir.join("1.table");
        write_file(driver, &path, image.to_vec()).await;
        // A few blocks' worth, and less than one block.
        for capacity_bytes in [4 * 400, 100] {
            let cache = BlockCache::new(capacity_bytes);
            let table = Table::open(driver, &path, 1, cache.clone())
                .await
                .expect("opens");
            for _ in 0..3 {
                read_every_block(driver, &table).await;
                let f = cache.figures();
                assert!(f.bytes <= capacity_bytes, "{f:?}");
                assert!(f.entries < blocks, "{f:?}");
            }
            check_model(&table, &model, &[]).await;
            let f = cache.figures();
            assert!(f.bytes <= capacity_bytes, "{f:?}");
            if capacity_bytes < 256 {
                assert_eq!((f.entries, f.bytes, f.hits), (0, 0, 0), "nothing fits");
            } else {
                assert!(f.entries >= 1, "{f:?}");
            }
        }
    });
}

#[test]
fn a_cache_of_capacity_0_never_caches() {
    let (model, image, _) = small_table();
    with_files(async |driver, dir| {
        let path = dir.join("1.table");
        write_file(driver, &path, image.to_vec()).await;
        let cache = BlockCache::new(0);
        let table = Table::open(driver, &path, 1, cache.clone())
            .await
            .expect("opens");
        let blocks = table.meta().data_blocks;
        for _ in 0..2 {
            assert!(read_every_block(driver, &table).await >= blocks);
        }
        check_model(&table, &model, &[]).await;
        let nothing = CacheFigures {
            hits: 0,
            misses: 0,
            bytes: 0,
            capacity_bytes: 0,
            entries: 0,
        };
        assert_eq!(cache.figures(), nothing);
    });
}

#[test]
fn a_damaged_block_fails_at_each_read_and_is_not_cached() {
    let (_, image, _) = small_table();
    let handles =
        data_handles(&block_on(Table::from_bytes("small", image.clone())).expect("opens"));
    let damaged = handles[2];
    let mut bytes = image.to_vec();
    bytes[(damaged.offset + damaged.len / 2) as usize] ^= 0x10;
    with_files(async |driver, dir| {
        let path = dir.join("1.table");
        write_file(driver, &path, bytes.clone()).await;
        let cache = BlockCache::new(1 << 20);
        let table = Table::open(driver, &path, 1, cache.clone())
            .await
            .expect("opens: data blocks are not read at open");
        for attempt in 1..=3u64 {
            let before = driver.stats().submitted;
            match table.read_block(damaged).await {
                Err(Error::Corruption { offset, .. }) => assert_eq!(offset, damaged.offset),
                other => panic!("attempt {attempt}: {other:?}"),
            }
            assert!(driver.stats().submitted > before, "read again");
            let f = cache.figures();
            assert_eq!((f.misses, f.hits, f.entries, f.bytes), (attempt, 0, 0, 0));
        }
        // Concurrent reads of it fail alike (each reads it: nothing is left to share).
        let (a, b) = futures::join!(table.read_block(damaged), table.read_block(damaged));
        assert!(matches!(
            (a, b),
            (Err(Error::Corruption { .. }), Err(Error::Corruption { .. }))
        ));
        assert_eq!(cache.figures().entries, 0);
        // The sound blocks around it are cached as usual.
        table.read_block(handles[0]).await.expect("sound");
        table.read_block(handles[0]).await.expect("sound");
        let f = cache.figures();
        assert_eq!((f.hits, f.entries), (1, 1));
    });
}

#[test]
fn concurrent_misses_of_one_block_read_it_once() {
    let (_, image, _) = small_table();
    let rt = runtime();
    let _guard = rt.enter();
    for driver in drivers() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("1.table");
        let cache = BlockCache::new(1 << 20);
        let table = rt.block_on(async {
            write_file(&driver, &path, image.to_vec()).await;
            Table::open(&driver, &path, 1, cache.clone())
                .await
                .expect("opens")
        });
        let handle = data_handles(&table)[1];
        // Spawned: the read's future is Send, as the store's tasks need.
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let table = table.clone();
                rt.spawn(async move { table.read_block(handle).await })
            })
            .collect();
        for r in readers {
            rt.block_on(r).expect("joined").expect("sound");
        }
        let f = cache.figures();
        assert_eq!((f.misses, f.hits, f.entries), (1, 7, 1), "{f:?}");
    }
}

#[test]
fn tables_with_different_ids_do_not_share_entries() {
    // Two tables of the same layout (the same block offsets), different values.
    let (model, image, _) = small_table();
    let other_model: Model = model
        .iter()
        .map(|(k, v)| (k.clone(), v.as_ref().map(|v| vec![b'w'; v.len()])))
        .collect();
    let options = TableOptions::default()
        .block_size_bytes(128)
        .bloom_bits_per_key(10);
    let (other_image, _) = build_image(&entries_of(&other_model), &options).expect("sound");
    assert_eq!(other_image.len(), image.len());
    assert_ne!(other_image, image);
    with_files(async |driver, dir| {
        let cache = BlockCache::new(1 << 20);
        let mut tables = Vec::new();
        for (id, bytes) in [(7, &image), (8, &other_image)] {
            let path = dir.join(format!("{id}.table"));
            write_file(driver, &path, bytes.to_vec()).await;
            tables.push(
                Table::open(driver, &path, id, cache.clone())
                    .await
                    .expect("opens"),
            );
        }
        let blocks = tables[0].meta().data_blocks;
        assert_eq!(data_handles(&tables[0]), data_handles(&tables[1]));
        check_model(&tables[0], &model, &[]).await;
        assert_eq!(cache.figures().misses, blocks);
        // The second table's blocks are its own: all misses, then read back as its model.
        assert!(read_every_block(driver, &tables[1]).await >= blocks);
        let f = cache.figures();
        assert_eq!((f.misses, f.entries), (2 * blocks, 2 * blocks), "{f:?}");
        check_model(&tables[1], &other_model, &[]).await;
        check_model(&tables[0], &model, &[]).await;
        assert_eq!(cache.figures().misses, 2 * blocks);
    });
}

#[test]
fn a_removed_tables_blocks_are_evicted() {
    let (_, image, _) = small_table();
    with_files(async |driver, dir| {
        let path = dir.join("1.table");
        write_file(driver, &path, image.to_vec()).await;
        let cache = BlockCache::new(1 << 20);
        let table = Table::open(driver, &path, 1, cache.clone())
            .await
            .expect("opens");
        read_every_block(driver, &table).await;
        assert_eq!(cache.figures().entries, table.meta().data_blocks);
        table.evict_cached();
        let after = cache.figures();
        assert_eq!((after.entries, after.bytes), (0, 0));
    });
}
