//! Tables (SSTables): immutable sorted files of internal keys `(bucket id, user key, seq)` →
//! value or tombstone, the LSM's on-disk unit.
//!
//! A table is written once, in order, by [`TableWriter`] (flush and compaction), and read by
//! any number of readers through a shared [`Table`]: point lookups ([`Table::get`]) that read
//! at most one data block, and cursors ([`TableIter`]) that walk the entries both ways. Every
//! byte goes through the I/O executor.
//!
//! Data blocks are read through a [`BlockCache`] (`cache.rs`) shared by the tables opened with
//! it, keyed by the table's id and the block's offset and kept, decompressed, under a budget in
//! bytes; an open table holds its own index and filter in memory, outside the cache.
//!
//! The file: data blocks of about `block_size_bytes` (prefix-compressed keys with restart
//! points: `block.rs`), an optional whole-table bloom filter (`filter.rs`), an index block (a
//! separator key and a handle per data block), a meta block (counts, key and seq ranges,
//! buckets present) and a 64-byte footer with the format version and a magic number
//! (`format.rs`). Data blocks may be lz4-compressed ([`TableOptions::compression`], per level in
//! the store), each one only where that saves 1/8; every block says how it is stored. Every
//! block ends with a crc32, of its bytes as stored, that is checked before anything in it is
//! decompressed or decoded. Byte tables: `docs/design.md`, "Tables".
//!
//! Invariants:
//! 1. Entries are stored in internal-key order, each `(bucket, key, seq)` once; the writer
//!    refuses anything else and every reader checks it as it decodes.
//! 2. A table holds at least one entry: the writer refuses to finish an empty one (and removes
//!    its file), and a reader refuses a meta block that counts none.
//! 3. Nothing read from disk can make a reader panic or return a value that was not written:
//!    every damaged or impossible byte is [`Error::Corruption`](crate::Error::Corruption) of
//!    kind `BadTable` (or `BadMagic`, `UnsupportedVersion`) naming the file and the offset of
//!    the block (or footer) it is in.
//! 4. `TableWriter::finish` makes the file's bytes durable; its name becomes durable with
//!    [`sync_table_dir`], which the caller runs before any manifest edit names the table.
//! 5. Tables opened with one block cache have distinct ids, never reused while it lives, so a
//!    cached block is never another file's; only blocks that passed their checks are cached.
//!
//! Used by the tree's flush and compaction (`../job.rs`) and its reads (`../read.rs`).

mod block;
mod cache;
mod filter;
pub(crate) mod format;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;
mod iter;
mod reader;
#[cfg(test)]
mod tests;
mod writer;

use std::path::Path;

use ringtide_platform::IoDriver;

pub(crate) use cache::BlockCache;
#[cfg(test)]
pub(crate) use cache::CacheFigures;
#[cfg(test)]
pub(crate) use format::{BlockHandle, TableMeta};
pub(crate) use iter::TableIter;
pub(crate) use reader::{Stored, Table, TableEntry};
pub(crate) use writer::TableWriter;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use writer::{TableBuilder, TableInfo};

use crate::error::{Error, Result};
use crate::kv::options::Compression;

/// How tables are written. Readers need none of it: every table describes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableOptions {
    pub(crate) block_size_bytes: usize,
    pub(crate) bloom_bits_per_key: u32,
    pub(crate) write_buffer_bytes: usize,
    pub(crate) compression: Compression,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            block_size_bytes: 4 << 10,
            bloom_bits_per_key: 10,
            write_buffer_bytes: 512 << 10,
            compression: Compression::None,
        }
    }
}

impl TableOptions {
    /// The size a data block is closed at, before its restart array and trailer (default
    /// 4 KiB, 64 B to 4 MiB). A larger entry makes a larger block of its own.
    pub(crate) fn block_size_bytes(mut self, bytes: usize) -> Self {
        self.block_size_bytes = bytes;
        self
    }

    /// Bloom filter bits per distinct key (default 10: about 1% false positives; 0 to 32; 0 =
    /// no filter).
    pub(crate) fn bloom_bits_per_key(mut self, bits: u32) -> Self {
        self.bloom_bits_per_key = bits;
        self
    }

    /// How data blocks are stored (default: uncompressed; the store passes each level's,
    /// `TreeOptions::table_options`).
    pub(crate) fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    #[cfg(any(test, feature = "fuzzing"))]
    /// Finished blocks are buffered up to this size and written in one write (default
    /// 512 KiB, 4 KiB to 64 MiB).
    pub(crate) fn write_buffer_bytes(mut self, bytes: usize) -> Self {
        self.write_buffer_bytes = bytes;
        self
    }

    /// Refuses options out of their documented ranges.
    pub(crate) fn validate(&self) -> Result<()> {
        if !(64..=4 << 20).contains(&self.block_size_bytes) {
            return Err(Error::invalid("block_size_bytes", "must be 64 B to 4 MiB"));
        }
        if self.bloom_bits_per_key > 32 {
            return Err(Error::invalid("bloom_bits_per_key", "must be 0 to 32"));
        }
        if !(4 << 10..=64 << 20).contains(&self.write_buffer_bytes) {
            return Err(Error::invalid(
                "write_buffer_bytes",
                "must be 4 KiB to 64 MiB",
            ));
        }
        Ok(())
    }
}

/// Makes the names of the tables just written in `dir` durable: fsync of the directory, so that
/// a table a manifest edit names survives a crash with its name. Run after
/// [`TableWriter::finish`] and before the edit is written.
///
/// # Cancel safety
/// A dropped call may or may not have synced; call it again.
pub(crate) async fn sync_table_dir(driver: &IoDriver, dir: &Path) -> Result<()> {
    driver.sync_dir(dir).await.map_err(|e| Error::io(dir, e))
}
