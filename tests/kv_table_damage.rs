//! Damaged tables read through the store, on both I/O backends: a store whose data is all in
//! one table (its data blocks uncompressed, then lz4-compressed) is damaged in every way a disk can — the table cut at every length, each byte
//! flipped in turn, each block-sized stretch zeroed — and opened read-only and read whole
//! (every key, both scans). Nothing panics, no wrong value is ever returned, and every failure
//! is `Error::Corruption` naming the table file, with an offset inside it.
//!
//! `RINGTIDE_KV_DAMAGE_STEP` (default 1: every byte) tries every n-th position only.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::TryStreamExt;
use ringtide::kv::{Compression, Db, DbOptions, TxnOptions};
use ringtide::platform::IoDriver;
use ringtide::{Error, Result};

both_backends!(every_cut_flip_and_zeroed_block_of_a_table_is_refused_never_misread);

const BLOCK: usize = 256;

fn options(driver: &IoDriver) -> DbOptions {
    DbOptions::default()
        .driver(driver.clone())
        .block_size_bytes(BLOCK)
        // Every read goes to the file: a block cached from an earlier read would hide the
        // damage.
        .block_cache_bytes(0)
}

fn step() -> usize {
    std::env::var("RINGTIDE_KV_DAMAGE_STEP")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s| s > 0)
        .unwrap_or(1)
}

/// A store holding 60 keys (and a few deleted ones) in one table.
async fn build(
    dir: &Path,
    driver: &IoDriver,
    compression: Compression,
) -> Result<(BTreeMap<Bytes, Bytes>, PathBuf)> {
    let db = Db::open(dir, options(driver).compression(compression)).await?;
    let mut model = BTreeMap::new();
    let txn = db.begin(TxnOptions::default())?;
    for i in 0..64u32 {
        let (k, v) = (
            Bytes::from(format!("key-{i:03}")),
            Bytes::from(format!("value {i} {}", "v".repeat((i % 5) as usize * 7))),
        );
        txn.put(k.clone(), v.clone())?;
        model.insert(k, v);
    }
    txn.commit().await?;
    let txn = db.begin(TxnOptions::default())?;
    for i in (0..64u32).step_by(16) {
        let k = Bytes::from(format!("key-{i:03}"));
        txn.delete(k.clone())?;
        model.remove(&k);
    }
    txn.commit().await?;
    db.flush().await?;
    db.compact_full().await?;
    db.close().await?;
    let tables: Vec<PathBuf> = std::fs::read_dir(dir.join("tables"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    assert_eq!(tables.len(), 1, "{tables:?}");
    Ok((model, tables[0].clone()))
}

/// What reading the damaged store gave.
#[derive(Default, Debug)]
struct Outcome {
    refused_at_open: u64,
    reads_refused: u64,
    intact: u64,
}

/// Opens the store read-only and reads it whole: each value right or `Corruption` naming
/// `table`.
/// The store under test: its directory, its one table (its length undamaged) and what it holds.
struct Store<'a> {
    dir: &'a Path,
    driver: &'a IoDriver,
    model: &'a BTreeMap<Bytes, Bytes>,
    table: &'a Path,
    len: u64,
}

impl Store<'_> {
    /// Writes `image` as the table, then reads the store whole (see [`read_all`]).
    async fn read_image(&self, image: &[u8], outcome: &mut Outcome, what: &str) -> Result<()> {
        std::fs::write(self.table, image)?;
        read_all(self, outcome, what).await
    }
}

async fn read_all(store: &Store<'_>, outcome: &mut Outcome, what: &str) -> Result<()> {
    let Store {
        dir,
        driver,
        model,
        table,
        len,
    } = *store;
    let refused = |e: Error, outcome: &mut Outcome| -> Result<()> {
        match e {
            Error::Corruption { file, offset, .. } if file == table && offset <= len => Ok(()),
            Error::Corruption { file, offset, .. } if file == table => {
                panic!("{what}: corruption at {offset}, past the file's {len} bytes")
            }
            e => {
                let _ = outcome;
                panic!("{what}: not a corruption naming the table: {e:?}")
            }
        }
    };
    let db = match Db::open_read_only(dir, options(driver)).await {
        Ok(db) => db,
        Err(e) => {
            outcome.refused_at_open += 1;
            return refused(e, outcome);
        }
    };
    let txn = db.begin(TxnOptions::default().read_only(true))?;
    let mut any_refused = false;
    for i in 0..64u32 {
        let k = Bytes::from(format!("key-{i:03}"));
        match txn.get(k.clone()).await {
            Ok(v) => assert_eq!(v.as_ref(), model.get(&k), "{what}: wrong value for {k:?}"),
            Err(e) => {
                any_refused = true;
                refused(e, outcome)?;
            }
        }
    }
    for reverse in [false, true] {
        let scan = txn.scan::<&[u8]>(..);
        let got: std::result::Result<Vec<(Bytes, Bytes)>, Error> = if reverse {
            scan.rev().try_collect().await
        } else {
            scan.try_collect().await
        };
        match got {
            Ok(mut all) => {
                if reverse {
                    all.reverse();
                }
                let want: Vec<(Bytes, Bytes)> =
                    model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                assert!(all == want, "{what}: a scan (reverse: {reverse}) differs");
            }
            Err(e) => {
                any_refused = true;
                refused(e, outcome)?;
            }
        }
    }
    if any_refused {
        outcome.reads_refused += 1;
    } else {
        outcome.intact += 1;
    }
    drop(txn);
    db.close().await
}

async fn every_cut_flip_and_zeroed_block_of_a_table_is_refused_never_misread(
    driver: IoDriver,
) -> Result<()> {
    // The table's data blocks stored as they are, then lz4-compressed.
    for compression in [Compression::None, Compression::Lz4] {
        damage_one_table(&driver, compression).await?;
    }
    Ok(())
}

async fn damage_one_table(driver: &IoDriver, compression: Compression) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (model, table) = build(dir.path(), driver, compression).await?;
    let original = std::fs::read(&table)?;
    let len = original.len();
    let store = Store {
        dir: dir.path(),
        driver,
        model: &model,
        table: &table,
        len: len as u64,
    };
    let step = step();
    let mut cuts = Outcome::default();
    for at in (0..len).step_by(step) {
        let what = format!("{compression:?}: cut at {at} of {len}");
        store.read_image(&original[..at], &mut cuts, &what).await?;
    }
    // A table cut short is refused when the store opens (its footer is gone or wrong).
    assert_eq!(
        cuts.refused_at_open as usize,
        len.div_ceil(step),
        "{cuts:?}"
    );

    let mut flips = Outcome::default();
    for at in (0..len).step_by(step) {
        let mut damaged = original.clone();
        damaged[at] ^= 1 << (at % 8);
        let what = format!(
            "{compression:?}: bit {} of byte {at} of {len} flipped",
            at % 8
        );
        store.read_image(&damaged, &mut flips, &what).await?;
    }
    // Every flip is caught: by the open (footer, index, filter, meta) or by a read.
    assert_eq!(flips.intact, 0, "{flips:?}");

    let mut zeroed = Outcome::default();
    for at in (0..len).step_by(BLOCK) {
        let mut damaged = original.clone();
        let end = (at + BLOCK).min(len);
        damaged[at..end].fill(0);
        if damaged == original {
            continue;
        }
        let what = format!("{compression:?}: bytes {at}..{end} of {len} zeroed");
        store.read_image(&damaged, &mut zeroed, &what).await?;
    }
    assert_eq!(zeroed.intact, 0, "{zeroed:?}");

    // Whole again, it reads whole.
    let mut sound = Outcome::default();
    store.read_image(&original, &mut sound, "undamaged").await?;
    assert_eq!(sound.intact, 1);
    Ok(())
}
