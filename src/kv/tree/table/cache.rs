//! The block cache: data blocks read from tables, kept in memory under a budget in bytes and
//! shared by every table opened with it, so that a block read often is read from disk once.
//!
//! Only data blocks go through it ([`Table::read_block`](super::Table::read_block)); a table's
//! index and filter are held by the open table itself for as long as it is open. The cache is
//! [`quick_cache`]'s concurrent S3-FIFO cache (a scan reads each of its blocks once and so
//! cannot push out the blocks read again and again), each block held decompressed (a hit costs
//! no decompression) and weighed by its decompressed bytes plus [`ENTRY_OVERHEAD_BYTES`].
//!
//! Invariants:
//! 1. A key `(table id, block offset)` names one block for the life of the cache: tables opened
//!    with one cache have distinct ids, never reused (a table's number), and a table's data
//!    blocks are fixed by its index, one per offset. So an entry is never stale, only unused, and
//!    entries of a table no longer open are left to age out.
//! 2. Only a block that was read and passed its checks is inserted: a failed read (I/O error,
//!    damage) is returned to its caller and leaves nothing behind, so the next read tries again.
//! 3. The cache's weight stays within `capacity_bytes`: a block heavier than the cache can hold
//!    is returned but not kept. A capacity of 0 turns caching off: nothing is looked up or kept.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::{DefaultHashBuilder, OptionsBuilder, Weighter};

use super::block::Block;
use crate::error::Result;

/// The key of a cached block: the table's id and the block's offset in its file.
type BlockKey = (u64, u64);

/// What an entry costs beyond its block's contents, in bytes: the key, the `Block` and its
/// shared buffer's header, the block's trailer (read with it) and the cache's slot. An
/// estimate, not a measure; it keeps a budget honest for tables of small blocks.
pub(crate) const ENTRY_OVERHEAD_BYTES: u64 = 128;

/// The block size the cache's shards are sized for (the tables' default): quick_cache keeps
/// each shard at 32 entries of this size or more (but for a smaller budget), so that a block of
/// up to about 32 times this size fits a shard; a heavier one is read but not kept.
const TYPICAL_BLOCK_BYTES: u64 = 4 << 10;

/// Weighs a block by its contents' bytes, decompressed (what it holds in memory); never 0 (an
/// entry of weight 0 would never be evicted).
#[derive(Debug, Clone, Copy)]
struct BlockWeighter;

impl Weighter<BlockKey, Block> for BlockWeighter {
    fn weight(&self, _key: &BlockKey, block: &Block) -> u64 {
        block.len_bytes() as u64 + ENTRY_OVERHEAD_BYTES
    }
}

struct Inner {
    /// `None`: caching is off (a capacity of 0).
    blocks: Option<Cache<BlockKey, Block, BlockWeighter>>,
    /// Shards of `blocks`: a capacity is rounded down to a multiple of it.
    shards: u64,
    capacity_bytes: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// A cache of data blocks shared by the tables opened with it (cheap to clone: clones share
/// one cache).
#[derive(Clone)]
pub(crate) struct BlockCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("figures", &self.figures())
            .finish()
    }
}

/// A block cache's counters and size at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheFigures {
    /// Reads answered from the cache (including those that waited for another reader's read of
    /// the same block).
    pub(crate) hits: u64,
    /// Reads that went to the file.
    pub(crate) misses: u64,
    /// The cache's current weight: its blocks' bytes plus [`ENTRY_OVERHEAD_BYTES`] each.
    pub(crate) bytes: u64,
    pub(crate) capacity_bytes: u64,
    /// Blocks held.
    pub(crate) entries: u64,
}

impl BlockCache {
    /// A cache holding blocks up to `capacity_bytes` in weight (blocks' bytes plus
    /// [`ENTRY_OVERHEAD_BYTES`] each); 0 turns caching off.
    pub(crate) fn new(capacity_bytes: u64) -> BlockCache {
        // quick_cache splits the budget evenly over its shards (a power of two, fewer for a
        // small budget), rounding each share up: a budget that is a multiple of the shard
        // count keeps the sum of the shares within it.
        let shards = std::thread::available_parallelism()
            .map_or(1, NonZeroUsize::get)
            .saturating_mul(4)
            .next_power_of_two();
        let blocks = (capacity_bytes > 0).then(|| {
            let estimated_items = (capacity_bytes / TYPICAL_BLOCK_BYTES).max(1);
            let options = OptionsBuilder::new()
                .shards(shards)
                .estimated_items_capacity(usize::try_from(estimated_items).unwrap_or(usize::MAX))
                .weight_capacity(capacity_bytes - capacity_bytes % shards as u64)
                .build()
                .expect("every option is set");
            Cache::with_options(
                options,
                BlockWeighter,
                DefaultHashBuilder::default(),
                DefaultLifecycle::default(),
            )
        });
        BlockCache {
            inner: Arc::new(Inner {
                blocks,
                shards: shards as u64,
                capacity_bytes: AtomicU64::new(capacity_bytes),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            }),
        }
    }

    #[cfg(any(test, feature = "fuzzing"))]
    /// A cache that holds nothing: every read goes to the file.
    pub(crate) fn disabled() -> BlockCache {
        BlockCache::new(0)
    }

    /// The counters and the current size.
    pub(crate) fn figures(&self) -> CacheFigures {
        let inner = &self.inner;
        let (bytes, entries) = inner
            .blocks
            .as_ref()
            .map_or((0, 0), |c| (c.weight(), c.len() as u64));
        CacheFigures {
            hits: inner.hits.load(Ordering::Relaxed),
            misses: inner.misses.load(Ordering::Relaxed),
            bytes,
            capacity_bytes: self.capacity(),
            entries,
        }
    }

    /// Drops the block at `(table_id, offset)` if it is cached (a table removed: its blocks
    /// would only take room until evicted).
    pub(crate) fn remove(&self, table_id: u64, offset: u64) {
        if let Some(blocks) = &self.inner.blocks {
            blocks.remove(&(table_id, offset));
        }
    }

    /// The cache's budget now.
    pub(crate) fn capacity(&self) -> u64 {
        self.inner.capacity_bytes.load(Ordering::Relaxed)
    }

    /// Changes the budget (a memory limit shared with the tables' indexes and filters): blocks
    /// over a lower one are evicted now. A cache made with a budget of 0 stays off.
    pub(crate) fn set_capacity(&self, capacity_bytes: u64) {
        let inner = &self.inner;
        if let Some(blocks) = &inner.blocks {
            // Never 0 for quick_cache: a cache that holds nothing is a capacity of one shard.
            let rounded = (capacity_bytes - capacity_bytes % inner.shards).max(inner.shards);
            blocks.set_capacity(rounded);
            inner
                .capacity_bytes
                .store(capacity_bytes, Ordering::Relaxed);
        }
    }

    /// The block at `(table_id, offset)`: from the cache, or else from `read`, which is then
    /// kept if it succeeded (invariant 2). Concurrent misses of one block wait for the first
    /// one's read instead of reading it again. With caching off, `read` is simply awaited.
    ///
    /// # Errors
    /// `read`'s error, not cached.
    ///
    /// # Cancel safety
    /// Dropping the future drops `read` and keeps nothing; a reader waiting for this one's read
    /// then reads the block itself.
    pub(crate) async fn get_or_read(
        &self,
        table_id: u64,
        offset: u64,
        read: impl Future<Output = Result<Block>>,
    ) -> Result<Block> {
        let Some(blocks) = &self.inner.blocks else {
            return read.await;
        };
        match blocks.get_value_or_guard_async(&(table_id, offset)).await {
            Ok(block) => {
                self.inner.hits.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ringtide_kv_block_cache_hits_total").increment(1);
                Ok(block)
            }
            Err(guard) => {
                self.inner.misses.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ringtide_kv_block_cache_misses_total").increment(1);
                // On an error the guard is dropped unfilled: nothing is cached, and a reader
                // waiting on it reads the block itself.
                let block = read.await?;
                // Refused only if the entry was removed or replaced meanwhile, which nothing
                // does; the block is the caller's either way.
                let _ = guard.insert(block.clone());
                Ok(block)
            }
        }
    }

    /// A value of a value-log file, at `offset` in file `file_id` (an id no table shares): from
    /// the cache, or else from `read`, kept if it succeeded, as [`BlockCache::get_or_read`]
    /// does for blocks. The caller checks the length against its pointer (a cached value is
    /// the one that passed its checksum when read).
    ///
    /// # Errors
    /// `read`'s error, not cached.
    ///
    /// # Cancel safety
    /// As [`BlockCache::get_or_read`].
    pub(crate) async fn get_or_read_value(
        &self,
        file_id: u64,
        offset: u64,
        read: impl Future<Output = Result<bytes::Bytes>>,
    ) -> Result<bytes::Bytes> {
        let block = self
            .get_or_read(file_id, offset, async { read.await.map(Block::of_value) })
            .await?;
        Ok(block.raw_value())
    }
}
