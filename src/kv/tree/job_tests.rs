//! The tree's jobs, tested on a tree without a store: the keep rule, concurrent picks, tiered
//! runs added and merged whole.

use super::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[test]
fn keep_drops_versions_below_the_oldest_snapshot_but_the_newest() {
    let mut k = Keep::new(Horizon::at(10), false);
    // key a: 15 (above), 9 (newest at or below 10), 5 (hidden)
    assert!(k.keep(1, &b("a"), 15, false));
    assert!(k.keep(1, &b("a"), 9, false));
    assert!(!k.keep(1, &b("a"), 5, false));
    // key b: a tombstone at 8 kept above the bottom
    assert!(k.keep(1, &b("b"), 8, true));
    assert!(!k.keep(1, &b("b"), 3, false));
    // the same key in another bucket is another key
    assert!(k.keep(2, &b("b"), 2, false));
    let mut bottom = Keep::new(Horizon::at(10), true);
    assert!(!bottom.keep(1, &b("b"), 8, true));
    assert!(!bottom.keep(1, &b("b"), 3, false));
    assert!(bottom.keep(1, &b("b2"), 3, false));
    assert!(bottom.keep(1, &b("c"), 12, true));
    // a reader at 10 sees the value under the newer tombstone
    assert!(bottom.keep(1, &b("c"), 4, false));
}

/// Compactions picked while others hold their tables take other tables, never one a
/// running compaction reads; the tables are free again once each ends.
#[tokio::test]
async fn concurrent_picks_take_disjoint_tables() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = crate::kv::DbOptions::default()
        .write_buffer_bytes(64 << 10)
        .table_target_bytes(64 << 10)
        .l1_target_bytes(64 << 10)
        .l0_compaction_trigger(2)
        .max_concurrent_compactions(4)
        // Sizes as written: the level scores below count file bytes.
        .compression(crate::kv::Compression::None)
        .tree_options();
    let tree = open_tree(dir.path(), options).await?;
    let mut seq = 0;
    let mut flush = async |keys: std::ops::Range<u32>| -> Result<()> {
        seq += 1;
        flush_keys(&tree, seq, keys, Bytes::from(vec![7u8; 200])).await
    };
    // L1 of ~6 tables (6 times its target), then two L0 tables over the first of them.
    flush(0..1500).await?;
    let closed = std::sync::atomic::AtomicBool::new(false);
    assert!(tree.compact_next(Horizon::at(0), &closed, true).await?);
    flush(0..50).await?;
    flush(10..60).await?;
    let scores = tree.scores();
    assert!(scores[0] >= 1.0 && scores[1] >= 1.0, "{scores:?}");

    let mut picks = Vec::new();
    while let Some(pick) = tree.pick(false) {
        picks.push(pick);
        assert!(picks.len() < 64);
    }
    assert!(
        picks.len() >= 2,
        "compactions run side by side: {}",
        picks.len()
    );
    let mut seen = std::collections::HashSet::new();
    for (task, _) in &picks {
        for t in task.upper.iter().chain(&task.lower) {
            assert!(seen.insert(t.id), "table {} in two compactions", t.id);
        }
    }
    drop(picks);
    assert!(tree.busy.lock().unwrap().is_empty());
    assert!(tree.pick(false).is_some());
    Ok(())
}

/// A tiered L1 takes each L0 compaction as a new run (one table, however large) without
/// rewriting the runs already there; at `l0_compaction_trigger` runs it is merged whole
/// into one run of L2; reads see the newest version throughout.
#[tokio::test]
async fn a_tiered_level_takes_runs_whole_and_is_merged_whole() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = crate::kv::DbOptions::default()
        .write_buffer_bytes(64 << 10)
        .table_target_bytes(64 << 10)
        .l1_target_bytes(16 << 20)
        .l0_compaction_trigger(2)
        .level_count(5)
        .tiered_levels(2)
        .tree_options();
    let tree = open_tree(dir.path(), options).await?;
    let mut seq = 0;
    let mut flush = async |keys: std::ops::Range<u32>| -> Result<()> {
        seq += 1;
        flush_keys(&tree, seq, keys, Bytes::from(seq.to_string())).await
    };
    let closed = std::sync::atomic::AtomicBool::new(false);
    let level = |n: usize| -> Vec<u64> {
        let v = tree.current().version.clone();
        v.levels
            .get(n - 1)
            .map_or(Vec::new(), |l| l.iter().map(|t| t.id).collect())
    };
    flush(0..3000).await?;
    flush(1000..4000).await?;
    assert!(tree.compact_next(Horizon::at(0), &closed, false).await?);
    let first = level(1);
    assert_eq!(
        first.len(),
        1,
        "one run, one table (larger than the table target)"
    );
    flush(2000..2500).await?;
    flush(3500..5000).await?;
    assert!(tree.compact_next(Horizon::at(0), &closed, false).await?);
    let two = level(1);
    assert_eq!(two.len(), 2, "a second run");
    assert_eq!(two[1], first[0], "the older run untouched, after the newer");
    assert_eq!(
        tree.get(0, b"k002100", u64::MAX).await?,
        Some(Bytes::from("3"))
    );
    assert_eq!(
        tree.get(0, b"k001100", u64::MAX).await?,
        Some(Bytes::from("2"))
    );
    // Two runs: L1 is due, merged whole into one run of L2.
    assert!(tree.scores()[1] >= 1.0, "{:?}", tree.scores());
    assert!(tree.compact_next(Horizon::at(0), &closed, false).await?);
    assert!(level(1).is_empty());
    assert_eq!(level(2).len(), 1);
    for (k, v) in [
        ("k000100", "1"),
        ("k001100", "2"),
        ("k002100", "3"),
        ("k004500", "4"),
    ] {
        assert_eq!(
            tree.get(0, k.as_bytes(), u64::MAX).await?,
            Some(Bytes::from(v)),
            "{k}"
        );
    }
    Ok(())
}

/// A tree of `options` in `dir`, without a store.
async fn open_tree(dir: &std::path::Path, options: super::super::TreeOptions) -> Result<Tree> {
    let driver = ringtide_platform::IoDriver::new(Default::default())?;
    let wal = crate::wal::WalOptions::default();
    Ok(Tree::open(dir, driver, options, wal, false, Lsn(1))
        .await?
        .tree)
}

/// Keys `k000000…` of `keys` put at `seq` with `value`, then flushed into an L0 table.
async fn flush_keys(tree: &Tree, seq: u64, keys: std::ops::Range<u32>, value: Bytes) -> Result<()> {
    let value: super::super::memtable::Value = Some(value);
    let keys: Vec<Bytes> = keys.map(|i| Bytes::from(format!("k{i:06}"))).collect();
    tree.apply(seq, keys.iter().map(|k| (0, k, &value)));
    tree.rotate(Lsn(1), true, || seq);
    tree.flush_oldest(0, 1).await?;
    Ok(())
}
