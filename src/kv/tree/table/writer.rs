//! Writing a table: [`TableBuilder`] encodes entries given in order into the file's bytes, in
//! memory, a chunk at a time; [`TableWriter`] streams those chunks into a new file through the
//! I/O executor and makes it durable.
//!
//! Layout, in the order it is written: data blocks, the filter block (if any), the index block,
//! the meta block, the footer (`format.rs`, `block.rs`, `filter.rs`). Data blocks are stored as
//! the options' compression says (each one compressed only where that saves 1/8); the other
//! blocks are stored as they are (`format.rs` says why).

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use ringtide_platform::{File, IoDriver, OpenOptions};

use super::TableOptions;
use super::block::{
    BlockBuilder, DATA_RESTART_INTERVAL, INDEX_RESTART_INTERVAL, Kind, cmp_internal,
};
use super::filter::FilterBuilder;
use super::format::{
    BlobRef, BlockHandle, BlockSealer, Footer, MAX_KEY_BYTES, MAX_VALUE_BYTES, TableMeta,
    put_raw_block,
};
use super::reader::Stored;
use crate::error::{Error, Result};
use crate::kv::options::Compression;
use crate::kv::tree::blob::BlobPtr;
use crate::kv::tree::memtable::InternalKey;

/// What a finished table holds: its size and its meta block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableInfo {
    /// The file's length in bytes.
    pub(crate) file_bytes: u64,
    /// What its length would be with every data block stored uncompressed (`file_bytes` for a
    /// table written without compression).
    pub(crate) uncompressed_file_bytes: u64,
    pub(crate) meta: TableMeta,
}

/// Running counts for the meta block.
#[derive(Default)]
struct Counts {
    entries: u64,
    tombstones: u64,
    seq_min: u64,
    seq_max: u64,
    key_bytes: u64,
    value_bytes: u64,
    data_blocks: u64,
    min_key: Option<InternalKey>,
    buckets: Vec<u64>,
    /// Per value-log file: pointers and their values' bytes.
    blobs: std::collections::BTreeMap<u64, (u64, u64)>,
}

/// Encodes a table in memory. Entries must come in internal-key order (bucket, key ascending,
/// seq descending), each `(bucket, key, seq)` once.
pub(crate) struct TableBuilder {
    options: TableOptions,
    data: BlockBuilder,
    /// Stores the data blocks, compressed as the options say.
    data_sealer: BlockSealer,
    index: BlockBuilder,
    filter: Option<FilterBuilder>,
    /// Finished blocks not yet taken by [`TableBuilder::take_ready`].
    out: BytesMut,
    /// Bytes taken before `out` starts: `out`'s offset in the file.
    taken: u64,
    /// The last entry's block key and seq.
    last_key: Vec<u8>,
    last_seq: u64,
    /// The handle of the last finished data block, until the next key gives its separator.
    pending_index: Option<BlockHandle>,
    counts: Counts,
    key_buf: Vec<u8>,
}

impl TableBuilder {
    pub(crate) fn new(options: &TableOptions) -> TableBuilder {
        TableBuilder {
            options: options.clone(),
            data: BlockBuilder::new(DATA_RESTART_INTERVAL),
            data_sealer: BlockSealer::new(options.compression),
            index: BlockBuilder::new(INDEX_RESTART_INTERVAL),
            filter: (options.bloom_bits_per_key > 0)
                .then(|| FilterBuilder::new(options.bloom_bits_per_key)),
            out: BytesMut::new(),
            taken: 0,
            last_key: Vec::new(),
            last_seq: 0,
            pending_index: None,
            counts: Counts::default(),
            key_buf: Vec::new(),
        }
    }

    /// Versions added so far.
    pub(crate) fn entries(&self) -> u64 {
        self.counts.entries
    }

    /// The file's size so far, the block being filled included: where a compaction cuts its
    /// output into tables of a target size.
    pub(crate) fn estimated_file_bytes(&self) -> u64 {
        self.offset() + self.data.size_estimate() as u64
    }

    /// Adds one version: a value, or a tombstone (`None`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an entry not after the previous one (a caller's bug; it
    /// also fails a debug assertion); [`Error::TooLarge`] for a key or value above what a table
    /// stores (16 MiB keys, 1 GiB values). Nothing is added then.
    pub(crate) fn add(
        &mut self,
        bucket: u64,
        key: &[u8],
        seq: u64,
        value: Option<&[u8]>,
    ) -> Result<()> {
        match value {
            Some(v) => self.add_kind(bucket, key, seq, Kind::Value, v, None),
            None => self.add_kind(bucket, key, seq, Kind::Tombstone, &[], None),
        }
    }

    /// Adds one version as a table stores it: a value, a tombstone or a value-log pointer
    /// (counted in the meta block's value-log files).
    ///
    /// # Errors
    /// As [`TableBuilder::add`].
    pub(crate) fn add_stored(
        &mut self,
        bucket: u64,
        key: &[u8],
        seq: u64,
        stored: &Stored,
    ) -> Result<()> {
        match stored {
            Stored::Value(v) => self.add(bucket, key, seq, Some(v)),
            Stored::Tombstone => self.add(bucket, key, seq, None),
            Stored::Blob(ptr) => {
                let encoded = ptr.to_vec();
                self.add_kind(bucket, key, seq, Kind::Blob, &encoded, Some(ptr))
            }
        }
    }

    fn add_kind(
        &mut self,
        bucket: u64,
        key: &[u8],
        seq: u64,
        kind: Kind,
        value_bytes: &[u8],
        blob: Option<&BlobPtr>,
    ) -> Result<()> {
        let block_key_len = 8 + key.len();
        if block_key_len > MAX_KEY_BYTES {
            return Err(Error::TooLarge {
                len: key.len() as u64,
                max: (MAX_KEY_BYTES - 8) as u64,
            });
        }
        if value_bytes.len() > MAX_VALUE_BYTES {
            return Err(Error::TooLarge {
                len: value_bytes.len() as u64,
                max: MAX_VALUE_BYTES as u64,
            });
        }
        let mut block_key = std::mem::take(&mut self.key_buf);
        block_key.clear();
        block_key.extend_from_slice(&bucket.to_be_bytes());
        block_key.extend_from_slice(key);
        let first = self.counts.entries == 0;
        if !first && cmp_internal(&block_key, seq, &self.last_key, self.last_seq).is_le() {
            self.key_buf = block_key;
            debug_assert!(false, "table entries out of order");
            return Err(Error::invalid(
                "table entry",
                format!("({bucket}, {key:?}, {seq}) is not after the previous entry"),
            ));
        }
        let new_key = first || block_key != self.last_key;
        if let Some(handle) = self.pending_index.take() {
            // The previous block ended; its index key separates it from this entry.
            let (sep, sep_seq) = separator(&self.last_key, self.last_seq, &block_key);
            let mut v = Vec::with_capacity(20);
            handle.encode(&mut v);
            self.index.add(&sep, sep_seq, Kind::Value, &v);
        }
        if new_key {
            if let Some(f) = &mut self.filter {
                f.add(&block_key);
            }
            if self.counts.buckets.last() != Some(&bucket) {
                self.counts.buckets.push(bucket);
            }
        }
        self.data.add(&block_key, seq, kind, value_bytes);
        self.count(bucket, key, seq, kind, value_bytes.len());
        if let Some(ptr) = blob {
            let r = self.counts.blobs.entry(ptr.file).or_default();
            r.0 += 1;
            r.1 += u64::from(ptr.len);
        }
        self.key_buf = std::mem::replace(&mut self.last_key, block_key);
        self.last_seq = seq;
        if self.data.size_estimate() >= self.options.block_size_bytes {
            self.finish_data_block();
        }
        Ok(())
    }

    fn count(&mut self, bucket: u64, key: &[u8], seq: u64, kind: Kind, value_len: usize) {
        let c = &mut self.counts;
        if c.entries == 0 {
            c.min_key = Some(InternalKey::new(bucket, Bytes::copy_from_slice(key), seq));
            (c.seq_min, c.seq_max) = (seq, seq);
        }
        c.entries += 1;
        c.tombstones += u64::from(kind == Kind::Tombstone);
        c.seq_min = c.seq_min.min(seq);
        c.seq_max = c.seq_max.max(seq);
        c.key_bytes += key.len() as u64;
        c.value_bytes += value_len as u64;
    }

    fn finish_data_block(&mut self) {
        let offset = self.offset();
        let len = self.data.finish_into(&mut self.out, &mut self.data_sealer);
        self.pending_index = Some(BlockHandle { offset, len });
        self.counts.data_blocks += 1;
    }

    /// The finished blocks, once they fill the write buffer (`write_buffer_bytes`).
    pub(crate) fn take_ready(&mut self) -> Option<Bytes> {
        (self.out.len() >= self.options.write_buffer_bytes).then(|| self.take())
    }

    fn take(&mut self) -> Bytes {
        let chunk = self.out.split().freeze();
        self.taken += chunk.len() as u64;
        chunk
    }

    /// Ends the table: the last data block, the filter, index and meta blocks and the footer.
    /// Returns the bytes not yet taken (the file's last bytes) and what the table holds.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if no entry was added: a table holds at least one (its meta
    /// block's key range would be empty otherwise, and a reader refuses such a table).
    pub(crate) fn finish(mut self) -> Result<(Bytes, TableInfo)> {
        if self.counts.entries == 0 {
            return Err(Error::invalid("table", "a table needs at least one entry"));
        }
        if !self.data.is_empty() {
            self.finish_data_block();
        }
        if let Some(handle) = self.pending_index.take() {
            let mut v = Vec::with_capacity(20);
            handle.encode(&mut v);
            self.index
                .add(&self.last_key, self.last_seq, Kind::Value, &v);
        }
        let filter = match self.filter.take() {
            Some(f) => self.push_block(&f.finish()),
            // No filter: its handle says where the data blocks end.
            None => BlockHandle {
                offset: self.offset(),
                len: 0,
            },
        };
        let index_offset = self.offset();
        // Stored as it is: read once, at open, and held decoded (`format.rs`).
        let index_len = self
            .index
            .finish_into(&mut self.out, &mut BlockSealer::new(Compression::None));
        let index = BlockHandle {
            offset: index_offset,
            len: index_len,
        };
        let meta = self.meta();
        let mut contents = BytesMut::new();
        meta.encode(&mut contents);
        let meta_handle = self.push_block(&contents);
        let footer = Footer {
            filter,
            index,
            meta: meta_handle,
            version: meta.format_version(),
        };
        self.out.extend_from_slice(&footer.encode());
        let file_bytes = self.offset();
        let s = &self.data_sealer;
        let uncompressed_file_bytes = file_bytes + s.uncompressed_bytes - s.stored_bytes;
        let rest = self.take();
        Ok((
            rest,
            TableInfo {
                file_bytes,
                uncompressed_file_bytes,
                meta,
            },
        ))
    }

    /// Where the next byte goes in the file.
    fn offset(&self) -> u64 {
        self.taken + self.out.len() as u64
    }

    /// Appends a block of `contents`, stored as it is, and its trailer; returns its handle.
    fn push_block(&mut self, contents: &[u8]) -> BlockHandle {
        let offset = self.offset();
        let len = put_raw_block(&mut self.out, contents);
        BlockHandle { offset, len }
    }

    fn meta(&self) -> TableMeta {
        let c = &self.counts;
        let bucket = u64::from_be_bytes(self.last_key[..8].try_into().unwrap_or([0; 8]));
        let max_key = InternalKey::new(
            bucket,
            Bytes::copy_from_slice(&self.last_key[8..]),
            self.last_seq,
        );
        TableMeta {
            entries: c.entries,
            tombstones: c.tombstones,
            seq_min: c.seq_min,
            seq_max: c.seq_max,
            key_bytes: c.key_bytes,
            value_bytes: c.value_bytes,
            data_blocks: c.data_blocks,
            min_key: c.min_key.clone().unwrap_or_else(|| max_key.clone()),
            max_key,
            buckets: c.buckets.clone(),
            blobs: c
                .blobs
                .iter()
                .map(|(&file, &(values, bytes))| BlobRef {
                    file,
                    values,
                    bytes,
                })
                .collect(),
        }
    }
}

/// The index key of a block whose last entry is `(last, last_seq)` and after which `next`
/// comes: a short block key `s` with `last < s < next` where one exists (the first byte where
/// they differ, raised by one, when that keeps it below `next`), paired with seq `u64::MAX`
/// (the first version of `s`); else the last entry itself. Every entry of the block is at or
/// before it, every entry of the next block after it.
fn separator(last: &[u8], last_seq: u64, next: &[u8]) -> (Vec<u8>, u64) {
    let common = last.iter().zip(next).take_while(|(a, b)| a == b).count();
    if common < last.len().min(next.len()) {
        let (a, b) = (last[common], next[common]);
        if a < 0xff && a + 1 < b {
            let mut s = last[..=common].to_vec();
            s[common] = a + 1;
            return (s, u64::MAX);
        }
    }
    (last.to_vec(), last_seq)
}

/// Writes a new table file through the I/O executor.
///
/// # Cancel safety
/// Dropping a writer, or a future of its, leaves a partial file that nothing refers to (it is
/// not a table until `finish` returned and its name was made durable); the store removes files
/// no manifest edit names when it opens.
pub(crate) struct TableWriter {
    file: File,
    path: PathBuf,
    builder: TableBuilder,
    written: u64,
    /// A write failed: what is in the file is unknown, so the writer refuses further calls.
    failed: bool,
}

impl TableWriter {
    /// Creates the file (it must not exist) and a writer for it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for invalid options; I/O errors naming the file (e.g.
    /// `AlreadyExists`).
    ///
    /// # Cancel safety
    /// A dropped call may leave an empty file behind, which nothing refers to.
    pub(crate) async fn create(
        driver: &IoDriver,
        path: impl Into<PathBuf>,
        options: &TableOptions,
    ) -> Result<TableWriter> {
        options.validate()?;
        let path = path.into();
        let file = driver
            .open(&path, &OpenOptions::new().write(true).create_new(true))
            .await
            .map_err(|e| Error::io(&path, e))?;
        Ok(TableWriter {
            file,
            path,
            builder: TableBuilder::new(options),
            written: 0,
            failed: false,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    #[cfg(test)]
    /// Versions added so far.
    pub(crate) fn entries(&self) -> u64 {
        self.builder.entries()
    }

    /// The file's size so far (see [`TableBuilder::estimated_file_bytes`]).
    pub(crate) fn estimated_file_bytes(&self) -> u64 {
        self.builder.estimated_file_bytes()
    }

    #[cfg(test)]
    /// Adds one version (see [`TableBuilder::add`]); writes the finished blocks once they fill
    /// the write buffer, in one write.
    ///
    /// # Cancel safety
    /// See the type's: a dropped call may leave the file partly written; drop the writer.
    pub(crate) async fn add(
        &mut self,
        bucket: u64,
        key: &[u8],
        seq: u64,
        value: Option<&[u8]>,
    ) -> Result<()> {
        let stored = Stored::from(value.map(Bytes::copy_from_slice));
        self.add_stored(bucket, key, seq, &stored).await
    }

    /// Adds one version as a table stores it (see [`TableBuilder::add_stored`]).
    ///
    /// # Cancel safety
    /// See the type's.
    pub(crate) async fn add_stored(
        &mut self,
        bucket: u64,
        key: &[u8],
        seq: u64,
        stored: &Stored,
    ) -> Result<()> {
        self.check_usable()?;
        self.builder.add_stored(bucket, key, seq, stored)?;
        if let Some(chunk) = self.builder.take_ready() {
            self.write(chunk).await?;
        }
        Ok(())
    }

    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let len = chunk.len() as u64;
        self.failed = true;
        let (res, _) = self.file.write_all_at(chunk, self.written).await;
        res.map_err(|e| Error::io(&self.path, e))?;
        self.written += len;
        self.failed = false;
        Ok(())
    }

    fn check_usable(&self) -> Result<()> {
        if self.failed {
            return Err(Error::invalid(
                "table writer",
                "an earlier write failed; drop the writer and its file",
            ));
        }
        Ok(())
    }

    /// Writes the rest of the table and makes its bytes durable (fdatasync), then closes the
    /// file. The file's *name* is not yet durable: call [`super::sync_table_dir`] before anything
    /// refers to the table.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if no entry was added (the file created is then removed); I/O
    /// errors naming the file.
    ///
    /// # Cancel safety
    /// See the type's.
    pub(crate) async fn finish(mut self) -> Result<TableInfo> {
        self.check_usable()?;
        if self.builder.entries() == 0 {
            let driver = self.file.driver().clone();
            let _ = self.file.close().await;
            // No table: the file is not left behind.
            driver
                .remove_file(&self.path)
                .await
                .map_err(|e| Error::io(&self.path, e))?;
            return Err(Error::invalid("table", "a table needs at least one entry"));
        }
        let builder = std::mem::replace(
            &mut self.builder,
            TableBuilder::new(&TableOptions::default()),
        );
        let (rest, info) = builder.finish()?;
        self.write(rest).await?;
        debug_assert_eq!(self.written, info.file_bytes);
        let TableWriter { file, path, .. } = self;
        // fdatasync: the table's bytes and length are durable before any manifest edit can
        // name it.
        file.sync_data().await.map_err(|e| Error::io(&path, e))?;
        file.close().await.map_err(|e| Error::io(&path, e))?;
        tracing::debug!(path = %path.display(), entries = info.meta.entries, bytes = info.file_bytes, "table written");
        Ok(info)
    }
}
