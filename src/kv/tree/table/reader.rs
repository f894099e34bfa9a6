//! Reading a table: [`Table::open`] reads and checks the footer, meta, index and filter blocks
//! and keeps them in memory for as long as the table is open; a point lookup ([`Table::get`])
//! then reads at most one data block, and scans ([`TableIter`](super::TableIter)) read them one
//! at a time, all through [`Table::read_block`], which asks the table's [`BlockCache`] first and
//! reads the file on a miss.
//!
//! Invariants of an open table (checked at open, so that no later read trusts an unchecked
//! byte):
//! 1. the footer's, meta's, index's and filter's checksums held, and the footer lays the blocks
//!    out edge to edge: data blocks, filter, index, meta, footer;
//! 2. the index's entries are in order, as many as the meta block's data blocks, and their
//!    handles cover the data region from offset 0 to its end, edge to edge;
//! 3. a data block's checksum is checked when it is read, before it is decompressed or any
//!    entry is decoded, and only a block that passed is cached (decompressed), under the
//!    table's id and the block's offset.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ringtide_platform::{File, IoDriver, OpenOptions};

use super::block::{Block, Cursor, Kind, cmp_internal};
use super::cache::BlockCache;
use super::filter::Filter;
use super::format::{BlockHandle, FOOTER_LEN, Footer, TRAILER_LEN, TableMeta, bad, open_block};
use crate::error::{CorruptionKind, Error, Result};
use crate::kv::tree::blob::BlobPtr;

/// Where a table's bytes come from.
enum Source {
    File(File),
    /// A table image in memory: the fuzz target and the tests decode tables without files.
    #[cfg(any(test, feature = "fuzzing"))]
    Memory(Bytes),
}

impl Source {
    /// Reads `len` bytes at `offset`. The caller checked the range against the file's length at
    /// open; a file that shrank since reads as damage.
    async fn read(&self, path: &Path, offset: u64, len: u64) -> Result<Bytes> {
        let short = || Error::corruption(path, offset, bad("block past the end of the file"));
        match self {
            Source::File(file) => {
                let len = usize::try_from(len).map_err(|_| short())?;
                let (res, buf) = file
                    .read_exact_at(BytesMut::with_capacity(len), offset)
                    .await;
                match res {
                    Ok(()) => Ok(buf.freeze()),
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(short()),
                    Err(e) => Err(Error::io(path, e)),
                }
            }
            #[cfg(any(test, feature = "fuzzing"))]
            Source::Memory(bytes) => {
                let end = offset
                    .checked_add(len)
                    .filter(|&e| e <= bytes.len() as u64)
                    .ok_or_else(short)?;
                Ok(bytes.slice(offset as usize..end as usize))
            }
        }
    }
}

struct Inner {
    path: PathBuf,
    /// The key of this table's blocks in `cache`: unique among the tables sharing it.
    id: u64,
    cache: BlockCache,
    source: Source,
    file_bytes: u64,
    footer: Footer,
    meta: TableMeta,
    index: Block,
    separators: Separators,
    filter: Option<Filter>,
}

/// An open table: immutable, shared by every reader (cheap to clone).
#[derive(Clone)]
pub(crate) struct Table {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("path", &self.inner.path)
            .field("id", &self.inner.id)
            .field("file_bytes", &self.inner.file_bytes)
            .finish_non_exhaustive()
    }
}

/// What a table holds for one version: a value, a tombstone, or a pointer to a value in a
/// value-log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stored {
    Value(Bytes),
    Tombstone,
    Blob(BlobPtr),
}

impl Stored {
    pub(crate) fn is_tombstone(&self) -> bool {
        matches!(self, Stored::Tombstone)
    }
}

impl From<Option<Bytes>> for Stored {
    fn from(v: Option<Bytes>) -> Stored {
        v.map_or(Stored::Tombstone, Stored::Value)
    }
}

/// An entry of a table: one version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableEntry {
    pub(crate) bucket: u64,
    pub(crate) key: Bytes,
    pub(crate) seq: u64,
    pub(crate) value: Stored,
}

impl TableEntry {
    /// The entry under a data block cursor of `table` (a pointer must reach a value-log file
    /// the table's meta block names).
    pub(super) fn from_cursor(
        c: &Cursor,
        table: &Table,
    ) -> std::result::Result<TableEntry, CorruptionKind> {
        let key = c.key();
        let Some((bucket, user)) = key.split_first_chunk::<8>() else {
            return Err(bad("data block key shorter than a bucket id"));
        };
        Ok(TableEntry {
            bucket: u64::from_be_bytes(*bucket),
            key: Bytes::copy_from_slice(user),
            seq: c.seq(),
            value: table.stored(c)?,
        })
    }
}

/// The block key of `(bucket, key)`: the bucket id big-endian, then the user key.
pub(crate) fn block_key(bucket: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&bucket.to_be_bytes());
    k.extend_from_slice(key);
    k
}

impl Table {
    /// Opens the table at `path` (read-only) and checks its footer, meta, index and filter.
    /// Its data blocks are cached in `cache` under `id`, which must be unique among the tables
    /// opened with `cache` and never reused for another file while the cache lives (the
    /// table's number): a block cached under an id is taken for the block of any table with
    /// that id.
    ///
    /// # Errors
    /// [`Error::Corruption`] naming the file and the offset of the damaged block (the footer's
    /// for a file too short, a bad magic or an unknown format version); I/O errors.
    ///
    /// # Cancel safety
    /// Dropping the future leaves nothing behind (the file is closed).
    pub(crate) async fn open(
        driver: &IoDriver,
        path: impl Into<PathBuf>,
        id: u64,
        cache: BlockCache,
    ) -> Result<Table> {
        let path = path.into();
        let file = driver
            .open(&path, &OpenOptions::new().read(true))
            .await
            .map_err(|e| Error::io(&path, e))?;
        let len = file.len().await.map_err(|e| Error::io(&path, e))?;
        let table = Table::load(path, id, cache, Source::File(file), len).await?;
        let m = table.meta();
        tracing::debug!(path = %table.path().display(), id, entries = m.entries, data_blocks = m.data_blocks, "table opened");
        Ok(table)
    }

    /// A table image held in memory, read as [`Table::open`] reads a file, without a block
    /// cache; `name` stands for the file in errors.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) async fn from_bytes(name: impl Into<PathBuf>, image: Bytes) -> Result<Table> {
        let len = image.len() as u64;
        let cache = BlockCache::disabled();
        Table::load(name.into(), 0, cache, Source::Memory(image), len).await
    }

    async fn load(
        path: PathBuf,
        id: u64,
        cache: BlockCache,
        source: Source,
        file_bytes: u64,
    ) -> Result<Table> {
        let footer_at = file_bytes.saturating_sub(FOOTER_LEN as u64);
        let footer_bytes = if file_bytes < FOOTER_LEN as u64 {
            Bytes::new()
        } else {
            source.read(&path, footer_at, FOOTER_LEN as u64).await?
        };
        let footer = Footer::decode(&footer_bytes, file_bytes)
            .map_err(|k| Error::corruption(&path, footer_at, k))?;
        // The filter, index and meta blocks lie edge to edge before the footer: one read.
        let tail_at = footer.filter.offset;
        let tail = source.read(&path, tail_at, footer_at - tail_at).await?;
        let slice = |h: BlockHandle| {
            tail.slice((h.offset - tail_at) as usize..(h.end() - tail_at) as usize)
        };
        let file = &path;
        let damaged =
            |h: BlockHandle| move |k: CorruptionKind| Error::corruption(file, h.offset, k);
        let meta_raw = slice(footer.meta);
        let meta_contents = open_block(&meta_raw).map_err(damaged(footer.meta))?;
        let meta =
            TableMeta::decode(&meta_contents, footer.version).map_err(damaged(footer.meta))?;
        let index = Block::decode(slice(footer.index)).map_err(damaged(footer.index))?;
        let separators = check_index(&index, &footer, &meta).map_err(damaged(footer.index))?;
        let filter = if footer.filter.len == 0 {
            None
        } else {
            let contents = open_block(&slice(footer.filter)).map_err(damaged(footer.filter))?;
            Some(Filter::decode(contents).map_err(damaged(footer.filter))?)
        };
        let inner = Inner {
            path,
            id,
            cache,
            source,
            file_bytes,
            footer,
            meta,
            index,
            separators,
            filter,
        };
        Ok(Table {
            inner: Arc::new(inner),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.inner.path
    }

    #[cfg(test)]
    /// The id its blocks are cached under.
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    pub(crate) fn meta(&self) -> &TableMeta {
        &self.inner.meta
    }

    /// The file's length in bytes.
    pub(crate) fn file_bytes(&self) -> u64 {
        self.inner.file_bytes
    }

    /// Drops this table's blocks from the cache (the table is gone; its id is never reused).
    pub(crate) fn evict_cached(&self) {
        for h in &self.inner.separators.handles {
            self.inner.cache.remove(self.inner.id, h.offset);
        }
    }

    /// The memory this table holds while open, outside the block cache: its index block (and
    /// the separators decoded from it) and its filter.
    pub(crate) fn resident_bytes(&self) -> u64 {
        let inner = &self.inner;
        let s = &inner.separators;
        let separators = s.keys.capacity()
            + s.ends.capacity() * size_of::<usize>()
            + s.seqs.capacity() * size_of::<u64>()
            + s.handles.capacity() * size_of::<BlockHandle>();
        (inner.index.len_bytes() + separators + inner.filter.as_ref().map_or(0, Filter::len_bytes))
            as u64
    }

    /// A cursor on the index block (its entries: a separator key and a data block's handle).
    pub(super) fn index_cursor(&self) -> Cursor {
        self.inner.index.cursor()
    }

    /// The index entry (a restart point of the index block) of the block that may hold
    /// `(key, seq)`: the first whose separator is at or after it (the entry count if none).
    pub(super) fn index_position(&self, key: &[u8], seq: u64) -> usize {
        self.inner.separators.position(key, seq)
    }

    /// The footer: where the filter, index and meta blocks are.
    #[cfg(test)]
    pub(super) fn footer(&self) -> Footer {
        self.inner.footer
    }

    /// The index block's handle (where errors in it are reported).
    pub(super) fn index_block_handle(&self) -> BlockHandle {
        self.inner.footer.index
    }

    /// The handle under an index cursor.
    pub(super) fn handle_at(&self, index: &Cursor) -> Result<BlockHandle> {
        BlockHandle::decode(index.value_slice())
            .map_err(|k| Error::corruption(self.path(), self.inner.footer.index.offset, k))
    }

    /// One data block, from the block cache or else read, checked and cached: the one place
    /// data blocks are read. `handle` is one of the index's (a cached block is found by its
    /// offset alone).
    ///
    /// # Errors
    /// [`Error::Corruption`] at the block's offset for a damaged block; I/O errors. Neither is
    /// cached: the next read of the block reads it again.
    ///
    /// # Cancel safety
    /// Dropping the future loses nothing but the read.
    pub(crate) async fn read_block(&self, handle: BlockHandle) -> Result<Block> {
        let inner = &self.inner;
        let block = inner
            .cache
            .get_or_read(inner.id, handle.offset, self.read_block_uncached(handle))
            .await?;
        // The cache's key names one block (the cache's invariant 1): a handle of another length
        // at a cached offset is not one of the index's. Refused as damage, never trusted.
        if block.stored_len() as u64 != handle.len {
            return Err(self.corrupt(handle, bad("a block handle that does not match its block")));
        }
        Ok(block)
    }

    /// Reads, checks, decompresses (if it is compressed) and decodes one data block from the
    /// file.
    async fn read_block_uncached(&self, handle: BlockHandle) -> Result<Block> {
        let raw = self
            .inner
            .source
            .read(self.path(), handle.offset, handle.len)
            .await?;
        Block::decode(raw).map_err(|k| self.corrupt(handle, k))
    }

    pub(super) fn corrupt(&self, handle: BlockHandle, kind: CorruptionKind) -> Error {
        Error::corruption(self.path(), handle.offset, kind)
    }

    /// Whether `(bucket, key)` may have a version here: within the table's key range and not
    /// ruled out by its filter.
    fn may_contain(&self, block_key: &[u8]) -> bool {
        let m = &self.inner.meta;
        let (min, max) = (&m.min_key, &m.max_key);
        let below = block_key.split_first_chunk::<8>().is_some_and(|(b, k)| {
            let bucket = u64::from_be_bytes(*b);
            (bucket, k) < (min.bucket, &min.key[..])
        });
        let above = block_key.split_first_chunk::<8>().is_some_and(|(b, k)| {
            let bucket = u64::from_be_bytes(*b);
            (bucket, k) > (max.bucket, &max.key[..])
        });
        !below
            && !above
            && self
                .inner
                .filter
                .as_ref()
                .is_none_or(|f| f.may_contain(block_key))
    }

    /// What the entry under a data block cursor holds; a pointer is checked against the value-log
    /// files the meta block names (with the values' bytes it counts for each).
    pub(super) fn stored(&self, c: &Cursor) -> std::result::Result<Stored, CorruptionKind> {
        Ok(match c.kind() {
            Kind::Value => Stored::Value(c.value()),
            Kind::Tombstone => Stored::Tombstone,
            Kind::Blob => {
                let ptr = BlobPtr::decode(c.value_slice())?;
                let named = self
                    .inner
                    .meta
                    .blobs
                    .binary_search_by_key(&ptr.file, |r| r.file)
                    .is_ok_and(|i| u64::from(ptr.len) <= self.inner.meta.blobs[i].bytes);
                if !named {
                    return Err(bad(
                        "a value-log pointer to a file the meta block does not name",
                    ));
                }
                Stored::Blob(ptr)
            }
        })
    }

    /// The newest version of `key` in `bucket` at or below `snapshot`: `None` if the table has
    /// none. Reads at most one data block.
    ///
    /// # Errors
    /// [`Error::Corruption`] naming the damaged block; I/O errors.
    ///
    /// # Cancel safety
    /// Dropping the future loses nothing but the read.
    pub(crate) async fn get(
        &self,
        bucket: u64,
        key: &[u8],
        snapshot: u64,
    ) -> Result<Option<Stored>> {
        let target = block_key(bucket, key);
        if !self.may_contain(&target) {
            return Ok(None);
        }
        let Some(handle) = self.inner.separators.find(&target, snapshot) else {
            return Ok(None);
        };
        let mut data = self.read_block(handle).await?.cursor();
        data.seek(&target, snapshot)
            .map_err(|k| self.corrupt(handle, k))?;
        // Past the block's end: the block's separator was above its last key, so the next
        // block starts above `key` (see the writer's `separator`).
        if !data.valid() || data.key() != target.as_slice() {
            return Ok(None);
        }
        // The value alone: the key is the one asked for (no copy of it).
        let stored = self.stored(&data).map_err(|k| self.corrupt(handle, k))?;
        Ok(Some(stored))
    }
}

/// Checks the index block against the footer and meta (invariant 2).
fn check_index(
    index: &Block,
    footer: &Footer,
    meta: &TableMeta,
) -> std::result::Result<Separators, CorruptionKind> {
    let mut c = index.cursor();
    c.seek_to_first()?;
    let (mut blocks, mut expected_offset) = (0u64, 0u64);
    let mut separators = Separators::default();
    while c.valid() {
        if c.kind() != Kind::Value {
            return Err(bad("index entry without a handle"));
        }
        let h = BlockHandle::decode(c.value_slice())?;
        separators.push(c.key(), c.seq(), h);
        if h.offset != expected_offset
            || h.len < (TRAILER_LEN + 4) as u64
            || h.end() > footer.data_end()
        {
            return Err(bad(
                "index handles do not cover the data blocks edge to edge",
            ));
        }
        expected_offset = h.end();
        blocks += 1;
        c.next()?;
    }
    if expected_offset != footer.data_end() || blocks != meta.data_blocks {
        return Err(bad(
            "index handles do not cover the data blocks edge to edge",
        ));
    }
    // Every index entry is a restart point (its key whole): readers position the index's
    // cursor on entry `i` as restart point `i`.
    if index.restart_count() as u64 != blocks {
        return Err(bad("index entries that are not restart points"));
    }
    Ok(separators)
}

/// The index block decoded once, at open: a point read binary-searches it without decoding an
/// entry (its cursor would parse one at every probe).
#[derive(Default)]
struct Separators {
    keys: Vec<u8>,
    ends: Vec<usize>,
    seqs: Vec<u64>,
    handles: Vec<BlockHandle>,
}

impl Separators {
    fn push(&mut self, key: &[u8], seq: u64, handle: BlockHandle) {
        self.keys.extend_from_slice(key);
        self.ends.push(self.keys.len());
        self.seqs.push(seq);
        self.handles.push(handle);
    }

    fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.keys[start..self.ends[i]]
    }

    /// The handle of the block that holds `(key, seq)` if any block does: the first whose
    /// separator is at or after it.
    fn find(&self, key: &[u8], seq: u64) -> Option<BlockHandle> {
        self.handles.get(self.position(key, seq)).copied()
    }

    /// The index entry of that block (the entry count if none).
    fn position(&self, key: &[u8], seq: u64) -> usize {
        partition_point(self.handles.len(), |i| {
            cmp_internal(self.key(i), self.seqs[i], key, seq) == std::cmp::Ordering::Less
        })
    }
}

/// `slice::partition_point` over indexes.
fn partition_point(len: usize, below: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if below(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}
