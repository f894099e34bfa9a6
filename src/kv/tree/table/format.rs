//! The fixed parts of a table file: varints, block handles, the block trailer, the meta block
//! and the footer. Every decoder here works on `&[u8]` and returns the [`CorruptionKind`] of what
//! it refuses; the caller names the file and the offset of the block (or footer) it read.
//!
//! ```text
//! file     data block … data block | filter block (optional) | index block | meta block | footer
//! block    stored | compression: u8 | crc32 of stored ‖ compression: u32 LE
//! stored   compression 0 (none): the contents
//!          compression 1 (lz4):  contents length: uvarint | the contents as one LZ4 raw block
//! handle   offset: uvarint | len: uvarint          (len counts the trailer)
//! footer   64 bytes, at the end of the file (table below)
//! ```
//!
//! The checksum is crc32 (IEEE, `crc32fast`), as in the wal's frames. It covers the bytes as
//! stored (compressed, for an lz4 block), so it is checked before anything is decompressed: the
//! decompressor never sees a byte that was not written. A compressed block's stated length is
//! bounded before anything is allocated ([`MAX_COMPRESSED_CONTENTS_BYTES`], and 255 bytes per
//! byte of LZ4 data, LZ4's largest expansion), and must be exactly what its LZ4 data yields.
//!
//! Which blocks are compressed: the writer compresses data blocks only, and only those that
//! LZ4 shrinks by at least 1/8 (as RocksDB does: less is not worth the decompression on every
//! read); the index, filter and meta blocks are stored as they are (a filter is random bits, a
//! meta block a few dozen bytes, and the index and filter are read once, when a table is
//! opened, and held in memory decoded: compressing them would save a little disk and no read).
//! A reader accepts either byte on any block.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::CorruptionKind;
use crate::kv::options::Compression;
use crate::kv::tree::memtable::InternalKey;

/// The table format this build writes and reads.
pub(crate) const FORMAT_VERSION: u16 = 2;
/// The version of a table that holds no value-log pointer: written so, such a table is byte for
/// byte what the first format wrote (and read by a build that knows only that one).
pub(crate) const FORMAT_VERSION_INLINE: u16 = 1;
/// The last 8 bytes of every table file.
pub(crate) const MAGIC: &[u8; 8] = b"RTDTABLE";
/// The footer's size: fixed for every format version (a later one that needs more puts it in
/// the meta block), so that a reader finds the version of any table.
pub(crate) const FOOTER_LEN: usize = 64;
/// The block trailer: the compression byte and the crc32.
pub(crate) const TRAILER_LEN: usize = 5;
/// The compression byte of a block stored as it is.
pub(crate) const COMPRESSION_NONE: u8 = 0;
/// The compression byte of an lz4 block: `contents length: uvarint | LZ4 raw block`.
pub(crate) const COMPRESSION_LZ4: u8 = 1;
/// The longest contents a writer compresses (a longer block, which holds one very large value,
/// is stored as it is), and so the longest a reader decompresses: a damaged length allocates no
/// more than this.
pub(crate) const MAX_COMPRESSED_CONTENTS_BYTES: usize = 64 << 20;
/// LZ4's largest expansion: no byte of an LZ4 block stands for more than 255 bytes of output (a
/// length's continuation bytes count 255 each; a token stands for at most 34, a literal for 1).
const LZ4_MAX_EXPANSION: usize = 255;
/// The longest block key a writer stores: a bucket id and a user key of up to 16 MiB (the
/// store's own limit).
pub(crate) const MAX_KEY_BYTES: usize = 8 + (16 << 20);
/// The longest value a writer stores (the store's transactions are at most 1 GiB), so that a
/// block, and every offset in it, stays within u32.
pub(crate) const MAX_VALUE_BYTES: usize = 1 << 30;

/// A reason a table is refused.
pub(crate) fn bad(reason: &'static str) -> CorruptionKind {
    CorruptionKind::BadTable { reason }
}

/// Appends `v` as a uvarint: 7 bits per byte, low first, the high bit set on all but the last.
pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a uvarint at `b[*at..]` and moves `at` past it. Refuses one that runs past `b` or
/// past 64 bits.
#[inline]
pub(crate) fn get_uvarint(b: &[u8], at: &mut usize) -> Result<u64, CorruptionKind> {
    // Most varints of a block (lengths, shared prefixes) are one byte.
    if let Some(&byte) = b.get(*at)
        && byte < 0x80
    {
        *at += 1;
        return Ok(u64::from(byte));
    }
    get_uvarint_long(b, at)
}

fn get_uvarint_long(b: &[u8], at: &mut usize) -> Result<u64, CorruptionKind> {
    let mut v = 0u64;
    for i in 0..10 {
        let byte = *b
            .get(*at + i)
            .ok_or(bad("varint past the end of its block"))?;
        if i == 9 && byte > 1 {
            return Err(bad("varint above 64 bits"));
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            *at += i + 1;
            return Ok(v);
        }
    }
    Err(bad("varint above 64 bits"))
}

/// A uvarint that must fit a `usize` (a length or an offset within a block).
#[inline]
pub(crate) fn get_len(b: &[u8], at: &mut usize) -> Result<usize, CorruptionKind> {
    usize::try_from(get_uvarint(b, at)?).map_err(|_| bad("length above the address space"))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, CorruptionKind> {
    let bytes = b
        .get(at..at + 8)
        .ok_or(bad("field past the end of its block"))?;
    Ok(u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8])))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, CorruptionKind> {
    let bytes = b
        .get(at..at + 4)
        .ok_or(bad("field past the end of its block"))?;
    Ok(u32::from_le_bytes(bytes.try_into().unwrap_or([0; 4])))
}

/// Where a block lies in the file: its first byte and its length, trailer included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockHandle {
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

impl BlockHandle {
    /// The end of the block: the offset of the byte after it.
    pub(crate) fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }

    /// The handle as an index entry's value: two uvarints.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_uvarint(out, self.offset);
        put_uvarint(out, self.len);
    }

    /// Decodes an index entry's value, which must hold exactly a handle.
    pub(crate) fn decode(b: &[u8]) -> Result<BlockHandle, CorruptionKind> {
        let mut at = 0;
        let offset = get_uvarint(b, &mut at)?;
        let len = get_uvarint(b, &mut at)?;
        if at != b.len() {
            return Err(bad("index entry longer than a block handle"));
        }
        Ok(BlockHandle { offset, len })
    }
}

/// Appends the trailer of a block whose stored bytes are `out[start..]`: the compression byte
/// and the crc32 of the stored bytes and that byte.
fn seal_block(out: &mut BytesMut, start: usize, compression: u8) {
    out.put_u8(compression);
    let crc = crc32fast::hash(&out[start..]);
    out.put_u32_le(crc);
}

/// Stores blocks as a table's options say: compressed where that pays, each with its trailer;
/// counts their bytes as stored and as they would be uncompressed.
pub(crate) struct BlockSealer {
    compression: Compression,
    /// The compressor's output, reused from block to block.
    scratch: Vec<u8>,
    /// The blocks' bytes as stored, trailers included.
    pub(crate) stored_bytes: u64,
    /// The blocks' bytes had they been stored uncompressed, trailers included.
    pub(crate) uncompressed_bytes: u64,
}

impl BlockSealer {
    pub(crate) fn new(compression: Compression) -> BlockSealer {
        BlockSealer {
            compression,
            scratch: Vec::new(),
            stored_bytes: 0,
            uncompressed_bytes: 0,
        }
    }

    /// Appends a block of `contents` to `out` with its trailer, compressed if the sealer's
    /// compression shrinks it by at least 1/8 (and it is at most
    /// [`MAX_COMPRESSED_CONTENTS_BYTES`]), else as it is; returns the block's length.
    pub(crate) fn put_block(&mut self, out: &mut BytesMut, contents: &[u8]) -> u64 {
        let start = out.len();
        let compressed = match self.compression {
            Compression::None => false,
            Compression::Lz4 => self.compress_lz4(contents),
        };
        let compression = if compressed {
            out.extend_from_slice(&self.scratch);
            COMPRESSION_LZ4
        } else {
            out.extend_from_slice(contents);
            COMPRESSION_NONE
        };
        seal_block(out, start, compression);
        let len = (out.len() - start) as u64;
        self.stored_bytes += len;
        self.uncompressed_bytes += (contents.len() + TRAILER_LEN) as u64;
        len
    }

    /// Compresses `contents` into `scratch` (length and LZ4 block); whether that saves 1/8.
    fn compress_lz4(&mut self, contents: &[u8]) -> bool {
        if contents.len() > MAX_COMPRESSED_CONTENTS_BYTES {
            return false;
        }
        self.scratch.clear();
        put_uvarint(&mut self.scratch, contents.len() as u64);
        let header = self.scratch.len();
        let max = lz4_flex::block::get_maximum_output_size(contents.len());
        self.scratch.resize(header + max, 0);
        match lz4_flex::block::compress_into(contents, &mut self.scratch[header..]) {
            Ok(n) => {
                self.scratch.truncate(header + n);
                // RocksDB's rule: keep the compressed form only if it saves at least 1/8.
                self.scratch.len() < contents.len() - contents.len() / 8
            }
            // Not expected with a buffer of the maximum output size: stored as it is.
            Err(_) => false,
        }
    }
}

/// Appends a block of `contents`, stored as it is, with its trailer; returns its length.
pub(crate) fn put_raw_block(out: &mut BytesMut, contents: &[u8]) -> u64 {
    BlockSealer::new(Compression::None).put_block(out, contents)
}

/// Checks a block (contents and trailer, as read) before anything in it is decoded, and returns
/// its contents: the checksum first (it covers the stored bytes and the compression byte, so a
/// damaged compression byte reads as a checksum mismatch), then the compression byte, then, for
/// a compressed block, its contents decompressed (see [`decompress_lz4`]).
pub(crate) fn open_block(raw: &Bytes) -> Result<Bytes, CorruptionKind> {
    let Some(body) = raw.len().checked_sub(4).filter(|&n| n >= 1) else {
        return Err(bad("block shorter than its trailer"));
    };
    let stored = u32_at(raw, body)?;
    if crc32fast::hash(&raw[..body]) != stored {
        return Err(bad("block checksum mismatch"));
    }
    match raw[body - 1] {
        COMPRESSION_NONE => Ok(raw.slice(..body - 1)),
        COMPRESSION_LZ4 => decompress_lz4(&raw[..body - 1]),
        _ => Err(bad("unknown block compression")),
    }
}

/// The contents of an lz4 block's stored bytes (`length: uvarint | LZ4 raw block`). The length
/// is bounded before anything is allocated: by [`MAX_COMPRESSED_CONTENTS_BYTES`] and by what
/// the LZ4 data can yield at most; the data must then yield exactly that many bytes. Anything
/// else is `BadTable`, never a panic.
fn decompress_lz4(stored: &[u8]) -> Result<Bytes, CorruptionKind> {
    let mut at = 0;
    let len = get_len(stored, &mut at)?;
    let lz4 = &stored[at..];
    if len > MAX_COMPRESSED_CONTENTS_BYTES {
        return Err(bad("compressed block longer than any writer compresses"));
    }
    if len > lz4.len().saturating_mul(LZ4_MAX_EXPANSION) {
        return Err(bad("compressed block longer than its lz4 data can yield"));
    }
    let mut out = vec![0u8; len];
    match lz4_flex::block::decompress_into(lz4, &mut out) {
        Ok(n) if n == len => Ok(Bytes::from(out)),
        Ok(_) => Err(bad("lz4 data shorter than its block's stated length")),
        Err(_) => Err(bad(
            "lz4 data that does not decompress to its stated length",
        )),
    }
}

/// What the meta block says of a table: counts, bounds and the buckets present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableMeta {
    /// Versions stored (tombstones included); at least 1.
    pub(crate) entries: u64,
    /// Of which tombstones.
    pub(crate) tombstones: u64,
    /// The smallest seq of any version.
    pub(crate) seq_min: u64,
    /// The largest seq of any version.
    pub(crate) seq_max: u64,
    /// The user keys' bytes, summed over every version (bucket ids not counted).
    pub(crate) key_bytes: u64,
    /// The values' bytes, summed over every version.
    pub(crate) value_bytes: u64,
    /// Data blocks in the file (as many as index entries).
    pub(crate) data_blocks: u64,
    /// The first internal key of the table.
    pub(crate) min_key: InternalKey,
    /// The last internal key of the table.
    pub(crate) max_key: InternalKey,
    /// The bucket ids that have a version in the table, ascending, each once.
    pub(crate) buckets: Vec<u64>,
    /// The value-log files the table's pointers reach, by file id ascending (format version 2;
    /// empty in version 1).
    pub(crate) blobs: Vec<BlobRef>,
}

/// What a table's pointers reach in one value-log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlobRef {
    pub(crate) file: u64,
    /// Pointers into the file.
    pub(crate) values: u64,
    /// The bytes of the values they point to.
    pub(crate) bytes: u64,
}

impl TableMeta {
    /// Encodes the meta block's contents.
    ///
    /// ```text
    /// offset  size  field (integers u64 LE unless said)
    ///  0       8    entries
    ///  8       8    tombstones
    /// 16       8    seq min
    /// 24       8    seq max
    /// 32       8    user key bytes
    /// 40       8    value bytes
    /// 48       8    data blocks
    /// 56       …    min key: bucket u64, seq u64, user key length u32, user key
    ///  …       …    max key: the same
    ///  …       4    bucket count, u32 LE; then each bucket id, u64, ascending
    /// version 2 only:
    ///  …       4    value-log file count, u32 LE; then each: file id, values, value bytes
    ///               (u64 each), by file id ascending
    /// ```
    ///
    /// A table with no pointer is written as version 1 (no count at all).
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        for v in [
            self.entries,
            self.tombstones,
            self.seq_min,
            self.seq_max,
            self.key_bytes,
            self.value_bytes,
            self.data_blocks,
        ] {
            out.put_u64_le(v);
        }
        for k in [&self.min_key, &self.max_key] {
            out.put_u64_le(k.bucket);
            out.put_u64_le(k.seq);
            // Keys are at most MAX_KEY_BYTES (the writer checks), within u32.
            out.put_u32_le(k.key.len() as u32);
            out.put_slice(&k.key);
        }
        out.put_u32_le(self.buckets.len() as u32);
        for b in &self.buckets {
            out.put_u64_le(*b);
        }
        if self.format_version() >= 2 {
            out.put_u32_le(self.blobs.len() as u32);
            for r in &self.blobs {
                out.put_u64_le(r.file);
                out.put_u64_le(r.values);
                out.put_u64_le(r.bytes);
            }
        }
    }

    /// The format version a table with this meta block is written as.
    pub(crate) fn format_version(&self) -> u16 {
        if self.blobs.is_empty() {
            FORMAT_VERSION_INLINE
        } else {
            FORMAT_VERSION
        }
    }

    /// Decodes the meta block's contents of a table of format `version`, refusing what no
    /// writer produces.
    pub(crate) fn decode(b: &[u8], version: u16) -> Result<TableMeta, CorruptionKind> {
        let f = |i: usize| u64_at(b, i * 8);
        let mut at = 56;
        let key = |at: &mut usize| -> Result<InternalKey, CorruptionKind> {
            let bucket = u64_at(b, *at)?;
            let seq = u64_at(b, *at + 8)?;
            let len = u32_at(b, *at + 16)? as usize;
            let start = *at + 20;
            let user = b
                .get(start..start + len)
                .ok_or(bad("meta key past its block"))?;
            *at = start + len;
            Ok(InternalKey::new(
                bucket,
                bytes::Bytes::copy_from_slice(user),
                seq,
            ))
        };
        let min_key = key(&mut at)?;
        let max_key = key(&mut at)?;
        let count = u32_at(b, at)? as usize;
        at += 4;
        let rest = b.len().checked_sub(at).ok_or(bad("meta block length"))?;
        let fits = if version >= 2 {
            count.checked_mul(8).is_some_and(|n| n <= rest)
        } else {
            count.checked_mul(8) == Some(rest)
        };
        if !fits {
            return Err(bad("meta block length"));
        }
        let buckets = (0..count)
            .map(|i| u64_at(b, at + i * 8))
            .collect::<Result<Vec<_>, _>>()?;
        at += count * 8;
        let mut blobs = Vec::new();
        if version >= 2 {
            let n = u32_at(b, at)? as usize;
            at += 4;
            if b.len().checked_sub(at) != n.checked_mul(24) || n == 0 {
                return Err(bad("meta block length"));
            }
            for i in 0..n {
                let f = |j: usize| u64_at(b, at + i * 24 + j * 8);
                blobs.push(BlobRef {
                    file: f(0)?,
                    values: f(1)?,
                    bytes: f(2)?,
                });
            }
        }
        let meta = TableMeta {
            entries: f(0)?,
            tombstones: f(1)?,
            seq_min: f(2)?,
            seq_max: f(3)?,
            key_bytes: f(4)?,
            value_bytes: f(5)?,
            data_blocks: f(6)?,
            min_key,
            max_key,
            buckets,
            blobs,
        };
        meta.check()?;
        Ok(meta)
    }

    /// What every writer's meta block keeps.
    fn check(&self) -> Result<(), CorruptionKind> {
        let sound = self.entries >= 1
            && self.tombstones <= self.entries
            && self.data_blocks >= 1
            && self.data_blocks <= self.entries
            && self.seq_min <= self.seq_max
            && self.min_key <= self.max_key
            && (self.seq_min..=self.seq_max).contains(&self.min_key.seq)
            && (self.seq_min..=self.seq_max).contains(&self.max_key.seq)
            && !self.buckets.is_empty()
            && self.buckets.len() as u64 <= self.entries
            && self.buckets.windows(2).all(|w| w[0] < w[1])
            && self.buckets.first() == Some(&self.min_key.bucket)
            && self.buckets.last() == Some(&self.max_key.bucket)
            && self.blobs.windows(2).all(|w| w[0].file < w[1].file)
            // Each pointer reaches at most a u32 of bytes; no sum may overflow.
            && self
                .blobs
                .iter()
                .all(|r| r.values >= 1 && r.bytes <= r.values.saturating_mul(u64::from(u32::MAX)))
            && self
                .blobs
                .iter()
                .try_fold(0u64, |n, r| n.checked_add(r.values))
                .is_some_and(|n| n <= self.entries - self.tombstones);
        if sound {
            Ok(())
        } else {
            Err(bad("meta block fields disagree"))
        }
    }
}

/// The footer: where the filter, index and meta blocks are, and the format version.
///
/// ```text
/// offset  size  field
///  0      16    filter block handle: offset u64 LE, len u64 LE (len 0: no filter)
/// 16      16    index block handle
/// 32      16    meta block handle
/// 48       2    reserved: written as zeros, not checked (the checksum covers them)
/// 50       2    format version, u16 LE = 1
/// 52       4    crc32 of bytes 0..52, u32 LE
/// 56       8    magic "RTDTABLE"
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Footer {
    /// `len` 0: the table has no filter; its offset is then where the data blocks end.
    pub(crate) filter: BlockHandle,
    pub(crate) index: BlockHandle,
    pub(crate) meta: BlockHandle,
    /// [`FORMAT_VERSION_INLINE`] or [`FORMAT_VERSION`] (a table with value-log pointers).
    pub(crate) version: u16,
}

impl Footer {
    pub(crate) fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        let fields = [
            self.filter.offset,
            self.filter.len,
            self.index.offset,
            self.index.len,
            self.meta.offset,
            self.meta.len,
        ];
        for (i, v) in fields.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        b[50..52].copy_from_slice(&self.version.to_le_bytes());
        let crc = crc32fast::hash(&b[..52]);
        b[52..56].copy_from_slice(&crc.to_le_bytes());
        b[56..64].copy_from_slice(MAGIC);
        b
    }

    /// Decodes the last [`FOOTER_LEN`] bytes of a file of `file_len` bytes: the magic, then the
    /// checksum (so a damaged version reads as a checksum mismatch, and an intact footer of a
    /// newer version as [`CorruptionKind::UnsupportedVersion`]), then the handles, which must
    /// lay the blocks out as a writer does: data, filter, index, meta, footer, edge to edge.
    pub(crate) fn decode(b: &[u8], file_len: u64) -> Result<Footer, CorruptionKind> {
        if b.len() != FOOTER_LEN {
            return Err(bad("file shorter than a footer"));
        }
        if &b[56..64] != MAGIC {
            return Err(CorruptionKind::BadMagic);
        }
        if crc32fast::hash(&b[..52]) != u32_at(b, 52)? {
            return Err(bad("footer checksum mismatch"));
        }
        let version = u16::from_le_bytes([b[50], b[51]]);
        if !(FORMAT_VERSION_INLINE..=FORMAT_VERSION).contains(&version) {
            return Err(CorruptionKind::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let handle = |i: usize| -> Result<BlockHandle, CorruptionKind> {
            Ok(BlockHandle {
                offset: u64_at(b, i * 16)?,
                len: u64_at(b, i * 16 + 8)?,
            })
        };
        let footer = Footer {
            filter: handle(0)?,
            index: handle(1)?,
            meta: handle(2)?,
            version,
        };
        let min = (TRAILER_LEN + 4) as u64;
        let laid_out = footer.filter.offset >= min
            && (footer.filter.len == 0 || footer.filter.len > TRAILER_LEN as u64)
            && footer.filter.end() == footer.index.offset
            && footer.index.len >= min
            && footer.index.end() == footer.meta.offset
            && footer.meta.len >= min
            && Some(footer.meta.end()) == file_len.checked_sub(FOOTER_LEN as u64);
        if !laid_out {
            return Err(bad("footer handles do not fit the file"));
        }
        Ok(footer)
    }

    /// Where the data blocks end.
    pub(crate) fn data_end(&self) -> u64 {
        self.filter.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvarints_round_trip_and_refuse_what_overflows() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut b = Vec::new();
            put_uvarint(&mut b, v);
            let mut at = 0;
            assert_eq!(get_uvarint(&b, &mut at), Ok(v));
            assert_eq!(at, b.len());
            let mut at = 0;
            assert!(get_uvarint(&b[..b.len() - 1], &mut at).is_err());
        }
        let mut at = 0;
        assert!(get_uvarint(&[0xff; 10], &mut at).is_err());
        let mut at = 0;
        assert!(
            get_uvarint(
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2],
                &mut at
            )
            .is_err()
        );
    }

    /// A block of `stored` bytes with compression byte `compression` and a sound checksum.
    fn sealed(stored: &[u8], compression: u8) -> Bytes {
        let mut out = BytesMut::from(stored);
        seal_block(&mut out, 0, compression);
        out.freeze()
    }

    fn reason(r: Result<Bytes, CorruptionKind>) -> &'static str {
        match r {
            Err(CorruptionKind::BadTable { reason }) => reason,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn blocks_are_compressed_where_that_saves_an_eighth_and_read_back() {
        let text = b"the same few words, and the same few words again; ".repeat(20);
        let mut noise = vec![0u8; 1000];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for b in &mut noise {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 32) as u8;
        }
        for (contents, compressible) in [(&text[..], true), (&noise[..], false), (b"", false)] {
            for compression in [Compression::None, Compression::Lz4] {
                let mut sealer = BlockSealer::new(compression);
                let mut out = BytesMut::from(&b"before"[..]);
                let len = sealer.put_block(&mut out, contents);
                let block = out.split_off(6).freeze();
                assert_eq!(block.len() as u64, len);
                let lz4 = compression == Compression::Lz4 && compressible;
                assert_eq!(block[block.len() - 5], u8::from(lz4));
                if lz4 {
                    assert!(block.len() < contents.len() / 2);
                    // The stated length, then the LZ4 block.
                    let mut at = 0;
                    assert_eq!(get_len(&block, &mut at), Ok(contents.len()));
                } else {
                    assert_eq!(&block[..contents.len()], contents);
                }
                assert_eq!(open_block(&block).as_deref(), Ok(contents));
                assert_eq!(sealer.stored_bytes, len);
                assert_eq!(
                    sealer.uncompressed_bytes,
                    (contents.len() + TRAILER_LEN) as u64
                );
            }
        }
    }

    #[test]
    fn a_compressed_block_is_bounded_before_anything_is_allocated() {
        let contents = b"abcdefgh".repeat(64);
        let lz4 = lz4_flex::block::compress(&contents);
        let with_len = |len: u64, data: &[u8]| {
            let mut stored = Vec::new();
            put_uvarint(&mut stored, len);
            stored.extend_from_slice(data);
            sealed(&stored, COMPRESSION_LZ4)
        };
        let sound = with_len(contents.len() as u64, &lz4);
        assert_eq!(open_block(&sound).as_deref(), Ok(&contents[..]));
        // Above what any writer compresses, or what the data can yield: refused unallocated.
        for len in [u64::MAX, 1 << 40, MAX_COMPRESSED_CONTENTS_BYTES as u64 + 1] {
            assert_eq!(
                reason(open_block(&with_len(len, &lz4))),
                "compressed block longer than any writer compresses"
            );
        }
        let most = (lz4.len() * LZ4_MAX_EXPANSION) as u64;
        assert_eq!(
            reason(open_block(&with_len(most + 1, &lz4))),
            "compressed block longer than its lz4 data can yield"
        );
        assert_eq!(
            reason(open_block(&with_len(0, b""))),
            "lz4 data that does not decompress to its stated length"
        );
        // Within the bounds, a length other than the data's is refused either way.
        for len in [most, contents.len() as u64 + 1] {
            assert_eq!(
                reason(open_block(&with_len(len, &lz4))),
                "lz4 data shorter than its block's stated length"
            );
        }
        assert_eq!(
            reason(open_block(&with_len(contents.len() as u64 - 1, &lz4))),
            "lz4 data that does not decompress to its stated length"
        );
        // A varint that never ends, an unknown compression byte.
        assert!(open_block(&sealed(&[0xff; 12], COMPRESSION_LZ4)).is_err());
        assert_eq!(
            reason(open_block(&sealed(b"contents", 2))),
            "unknown block compression"
        );
        // Damage under the checksum is a checksum mismatch, found before decompressing.
        let mut flipped = sound.to_vec();
        flipped[3] ^= 1;
        assert_eq!(
            reason(open_block(&Bytes::from(flipped))),
            "block checksum mismatch"
        );
    }

    /// Value-log counts no writer makes (sums past u64, bytes past what the pointers can
    /// reach) are refused, never a panic (a reviewer's case: values u64::MAX and 2).
    #[test]
    fn meta_value_log_counts_that_overflow_are_refused() {
        let key = |seq| InternalKey::new(1, Bytes::from_static(b"k"), seq);
        let meta = |blobs: Vec<BlobRef>| TableMeta {
            entries: u64::MAX,
            tombstones: 0,
            seq_min: 1,
            seq_max: 2,
            key_bytes: 1,
            value_bytes: 1,
            data_blocks: 1,
            min_key: key(2),
            max_key: key(1),
            buckets: vec![1],
            blobs,
        };
        let r = |file, values, bytes| BlobRef {
            file,
            values,
            bytes,
        };
        let sound = meta(vec![r(1, 2, 100)]);
        let mut b = BytesMut::new();
        sound.encode(&mut b);
        assert_eq!(TableMeta::decode(&b, 2), Ok(sound));
        for blobs in [
            vec![r(1, u64::MAX, 1), r(2, 2, 1)],
            vec![r(1, 1, u64::MAX)],
            vec![r(1, 0, 0)],
            vec![r(2, 1, 1), r(1, 1, 1)],
        ] {
            let mut b = BytesMut::new();
            meta(blobs.clone()).encode(&mut b);
            assert!(TableMeta::decode(&b, 2).is_err(), "{blobs:?}");
        }
    }

    #[test]
    fn the_footer_checks_magic_then_checksum_then_version() {
        let f = Footer {
            filter: BlockHandle {
                offset: 100,
                len: 20,
            },
            index: BlockHandle {
                offset: 120,
                len: 30,
            },
            meta: BlockHandle {
                offset: 150,
                len: 90,
            },
            version: 1,
        };
        let len = 240 + FOOTER_LEN as u64;
        let b = f.encode();
        assert_eq!(Footer::decode(&b, len), Ok(f));
        assert!(Footer::decode(&b, len + 1).is_err());
        let two = Footer { version: 2, ..f };
        assert_eq!(Footer::decode(&two.encode(), len), Ok(two));
        let mut v3 = b;
        v3[50] = 3;
        assert!(matches!(
            Footer::decode(&v3, len),
            Err(CorruptionKind::BadTable { .. })
        ));
        let crc = crc32fast::hash(&v3[..52]);
        v3[52..56].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            Footer::decode(&v3, len),
            Err(CorruptionKind::UnsupportedVersion {
                found: 3,
                supported: 2
            })
        );
        let mut magic = b;
        magic[63] ^= 1;
        assert_eq!(Footer::decode(&magic, len), Err(CorruptionKind::BadMagic));
    }
}
