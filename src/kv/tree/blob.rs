//! Key-value separation: a value of `value_separation_threshold_bytes` or more is written by
//! the flush that takes it into a *value-log file* (`NNNNNNNNNNNN.blob`, beside the tables),
//! and the table holds a [`BlobPtr`] to it instead of the value. Compactions then copy the
//! pointer, not the value (a large value is written twice in all: the wal and its value-log
//! file), and rewrite the live values of a file that is mostly garbage into a new one.
//!
//! A value-log file is immutable once written: a header, then the values edge to edge; nothing
//! else. What a value is, and its checksum, is in the pointer (inside a table block, under the
//! block's own checksum), so a value read back is checked against what was written.
//!
//! ```text
//! offset  size  field
//!  0       8    magic "RTDVALUE"
//!  8       2    format version, u16 LE = 1
//! 10       2    reserved, zero
//! 12       8    file id, u64 LE (the number in the file's name)
//! 20       4    crc32 of bytes 0..20, u32 LE
//! 24       …    values
//! ```
//!
//! **Reachability.** Each table's meta block names the value-log files its pointers reach, with
//! how many values and bytes of each (`TableMeta::blobs`). A file is live while a table of the
//! current version names it; once none does (its last pointer was dropped or rewritten by a
//! compaction whose edit is durable), it is retired and removed when the last version naming it
//! is dropped (readers in flight keep it readable). At open, files no live table names are
//! removed (a flush or compaction that crashed before its edit), and a file a live table names
//! but missing is `Corruption`. Its *garbage* is its values' bytes less those the live tables
//! name: no count is kept apart that a crash could leave wrong.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use ringtide_platform::{File, IoDriver, OpenOptions};

use super::table::BlockCache;
use super::table::format::{get_uvarint, put_uvarint};
use crate::error::{CorruptionKind, Error, Result};

/// The header's length: where the first value starts.
pub(crate) const BLOB_HEADER_LEN: u64 = 24;
const MAGIC: &[u8; 8] = b"RTDVALUE";
const FORMAT_VERSION: u16 = 1;
/// A pointer's encoding is at most this long (three uvarints and a crc).
pub(crate) const MAX_POINTER_BYTES: usize = 10 + 10 + 5 + 4;

fn bad(reason: &'static str) -> CorruptionKind {
    CorruptionKind::BadValueLog { reason }
}

/// Where a value is: its file, offset and length, and the crc32 of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct BlobPtr {
    pub(crate) file: u64,
    pub(crate) offset: u64,
    pub(crate) len: u32,
    pub(crate) crc: u32,
}

impl BlobPtr {
    /// `file` uvarint · `offset` uvarint · `len` uvarint · `crc` u32 LE.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_uvarint(out, self.file);
        put_uvarint(out, self.offset);
        put_uvarint(out, u64::from(self.len));
        out.extend_from_slice(&self.crc.to_le_bytes());
    }

    pub(crate) fn to_vec(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(MAX_POINTER_BYTES);
        self.encode(&mut v);
        v
    }

    /// Decodes a pointer that fills `b` exactly; refuses what no writer produces (a value
    /// before the header's end, a length past `u32`, bytes left over).
    pub(crate) fn decode(b: &[u8]) -> std::result::Result<BlobPtr, CorruptionKind> {
        let bad_ptr = || CorruptionKind::BadTable {
            reason: "undecodable value-log pointer",
        };
        let mut at = 0;
        let file = get_uvarint(b, &mut at).map_err(|_| bad_ptr())?;
        let offset = get_uvarint(b, &mut at).map_err(|_| bad_ptr())?;
        let len = get_uvarint(b, &mut at).map_err(|_| bad_ptr())?;
        let crc = b
            .get(at..at + 4)
            .filter(|_| at + 4 == b.len())
            .ok_or_else(bad_ptr)?;
        let len = u32::try_from(len).map_err(|_| bad_ptr())?;
        if offset < BLOB_HEADER_LEN || offset.checked_add(u64::from(len)).is_none() {
            return Err(bad_ptr());
        }
        Ok(BlobPtr {
            file,
            offset,
            len,
            crc: u32::from_le_bytes(crc.try_into().expect("4 bytes")),
        })
    }

    /// Where the value ends in its file.
    pub(crate) fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }
}

/// The header of file `id`.
pub(crate) fn encode_header(id: u64) -> [u8; BLOB_HEADER_LEN as usize] {
    let mut h = [0u8; BLOB_HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&id.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a header: the magic, the checksum, the version, and that it is file `id`'s.
pub(crate) fn check_header(h: &[u8], id: u64) -> std::result::Result<(), CorruptionKind> {
    if h.len() < BLOB_HEADER_LEN as usize {
        return Err(bad("file shorter than its header"));
    }
    if &h[..8] != MAGIC {
        return Err(CorruptionKind::BadMagic);
    }
    let crc = u32::from_le_bytes(h[20..24].try_into().expect("4 bytes"));
    if crc32fast::hash(&h[..20]) != crc {
        return Err(CorruptionKind::HeaderChecksum);
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    if version != FORMAT_VERSION {
        return Err(CorruptionKind::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if u64::from_le_bytes(h[12..20].try_into().expect("8 bytes")) != id {
        return Err(bad("the header names another file"));
    }
    Ok(())
}

/// Checks a value read at `ptr` against the pointer's checksum.
pub(crate) fn check_value(value: &[u8], ptr: &BlobPtr) -> std::result::Result<(), CorruptionKind> {
    if value.len() != ptr.len as usize {
        return Err(bad("value shorter than its pointer says"));
    }
    if crc32fast::hash(value) != ptr.crc {
        return Err(bad("value checksum mismatch"));
    }
    Ok(())
}

pub(crate) fn blob_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:012}.blob"))
}

/// What a finished value-log file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlobInfo {
    pub(crate) file_bytes: u64,
    pub(crate) values: u64,
}

/// Writes a new value-log file through the I/O executor, buffering values into writes of
/// `write_buffer_bytes`.
///
/// # Cancel safety
/// Dropping a writer, or a future of its, leaves a partial file no table names: removed at the
/// next open.
pub(crate) struct BlobWriter {
    id: u64,
    file: File,
    path: PathBuf,
    buf: BytesMut,
    write_buffer_bytes: usize,
    /// Bytes written to the file (`buf` comes after them).
    written: u64,
    values: u64,
    failed: bool,
}

impl BlobWriter {
    /// Creates file `id` at `path` (it must not exist).
    ///
    /// # Errors
    /// I/O errors naming the file.
    ///
    /// # Cancel safety
    /// A dropped call may leave an empty file behind, which nothing names.
    pub(crate) async fn create(
        driver: &IoDriver,
        path: PathBuf,
        id: u64,
        write_buffer_bytes: usize,
    ) -> Result<BlobWriter> {
        let file = driver
            .open(&path, &OpenOptions::new().write(true).create_new(true))
            .await
            .map_err(|e| Error::io(&path, e))?;
        let mut buf = BytesMut::with_capacity(write_buffer_bytes.min(1 << 20));
        buf.extend_from_slice(&encode_header(id));
        Ok(BlobWriter {
            id,
            file,
            path,
            buf,
            write_buffer_bytes,
            written: 0,
            values: 0,
            failed: false,
        })
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size so far.
    pub(crate) fn file_bytes(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    /// Appends a value; returns its pointer.
    ///
    /// # Errors
    /// [`Error::TooLarge`] for a value past `u32::MAX` bytes (nothing is written); I/O errors.
    ///
    /// # Cancel safety
    /// See the type's.
    pub(crate) async fn add(&mut self, value: &[u8]) -> Result<BlobPtr> {
        if self.failed {
            return Err(Error::invalid(
                "value-log writer",
                "an earlier write failed; drop the writer and its file",
            ));
        }
        let len = u32::try_from(value.len()).map_err(|_| Error::TooLarge {
            len: value.len() as u64,
            max: u64::from(u32::MAX),
        })?;
        let ptr = BlobPtr {
            file: self.id,
            offset: self.file_bytes(),
            len,
            crc: crc32fast::hash(value),
        };
        self.buf.extend_from_slice(value);
        self.values += 1;
        if self.buf.len() >= self.write_buffer_bytes {
            self.write().await?;
        }
        Ok(ptr)
    }

    async fn write(&mut self) -> Result<()> {
        let chunk = self.buf.split().freeze();
        let len = chunk.len() as u64;
        self.failed = true;
        let (res, _) = self.file.write_all_at(chunk, self.written).await;
        res.map_err(|e| Error::io(&self.path, e))?;
        self.written += len;
        self.failed = false;
        Ok(())
    }

    /// Writes what is buffered and makes the file's bytes durable (fdatasync); its *name* is
    /// made durable with the tables' (`sync_table_dir`) before any edit names a table that
    /// points into it.
    ///
    /// # Errors
    /// I/O errors naming the file.
    ///
    /// # Cancel safety
    /// See the type's.
    pub(crate) async fn finish(mut self) -> Result<BlobInfo> {
        if !self.buf.is_empty() {
            self.write().await?;
        }
        let BlobWriter {
            file,
            path,
            written,
            values,
            ..
        } = self;
        file.sync_data().await.map_err(|e| Error::io(&path, e))?;
        file.close().await.map_err(|e| Error::io(&path, e))?;
        tracing::debug!(path = %path.display(), values, bytes = written, "value-log file written");
        Ok(BlobInfo {
            file_bytes: written,
            values,
        })
    }
}

/// An open value-log file of the tree, shared by the versions that name it.
pub(crate) struct BlobFile {
    pub(crate) id: u64,
    path: PathBuf,
    file: File,
    /// The tree's block cache: values read are kept there under `(id, offset)`.
    cache: BlockCache,
    file_bytes: u64,
    /// Set once no table of the current version names it (that edit durable): the file goes
    /// when the last reference does.
    obsolete: AtomicBool,
    driver: IoDriver,
}

impl std::fmt::Debug for BlobFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobFile")
            .field("id", &self.id)
            .field("file_bytes", &self.file_bytes)
            .finish_non_exhaustive()
    }
}

impl BlobFile {
    /// Opens file `id` at `path` read-only and checks its header.
    ///
    /// # Errors
    /// [`Error::Corruption`] for a damaged header; I/O errors.
    ///
    /// # Cancel safety
    /// Dropping the future leaves nothing behind.
    pub(crate) async fn open(
        driver: &IoDriver,
        path: PathBuf,
        id: u64,
        cache: BlockCache,
    ) -> Result<Arc<BlobFile>> {
        let file = driver
            .open(&path, &OpenOptions::new().read(true))
            .await
            .map_err(|e| Error::io(&path, e))?;
        let file_bytes = file.len().await.map_err(|e| Error::io(&path, e))?;
        let header_len = BLOB_HEADER_LEN.min(file_bytes) as usize;
        let (res, header) = file
            .read_exact_at(BytesMut::with_capacity(header_len), 0)
            .await;
        res.map_err(|e| Error::io(&path, e))?;
        check_header(&header, id).map_err(|k| Error::corruption(&path, 0, k))?;
        Ok(Arc::new(BlobFile {
            id,
            path,
            file,
            cache,
            file_bytes,
            obsolete: AtomicBool::new(false),
            driver: driver.clone(),
        }))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length: its header and every value written, live or garbage.
    pub(crate) fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// The value `ptr` points to, checked against its checksum: from the block cache, or read
    /// from the file and kept there.
    ///
    /// # Errors
    /// [`Error::Corruption`] at the value's offset for a pointer past the file's end or a value
    /// whose checksum does not match (or a cached value of another length: two pointers that
    /// disagree); I/O errors.
    ///
    /// # Cancel safety
    /// Dropping the future loses nothing but the read.
    pub(crate) async fn read(&self, ptr: &BlobPtr) -> Result<Bytes> {
        let value = self
            .cache
            .get_or_read_value(self.id, ptr.offset, self.read_uncached(ptr))
            .await?;
        // A cached value passed its pointer's checksum when read; one pointer of another length
        // at its offset is damage (a pointer of another checksum and the same length would be
        // too, and is not looked for: each hit would pay a crc of the value).
        if value.len() != ptr.len as usize {
            return Err(Error::corruption(
                &self.path,
                ptr.offset,
                bad("a pointer that disagrees with the value cached at its offset"),
            ));
        }
        Ok(value)
    }

    async fn read_uncached(&self, ptr: &BlobPtr) -> Result<Bytes> {
        if ptr.file != self.id || ptr.end() > self.file_bytes {
            return Err(Error::corruption(
                &self.path,
                ptr.offset,
                bad("a pointer past the end of its value-log file"),
            ));
        }
        let (res, buf) = self
            .file
            .read_exact_at(BytesMut::with_capacity(ptr.len as usize), ptr.offset)
            .await;
        match res {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(Error::corruption(
                    &self.path,
                    ptr.offset,
                    bad("a pointer past the end of its value-log file"),
                ));
            }
            Err(e) => return Err(Error::io(&self.path, e)),
        }
        check_value(&buf, ptr).map_err(|k| Error::corruption(&self.path, ptr.offset, k))?;
        Ok(buf.freeze())
    }

    /// Marks the file unreachable from the current version (its edit is durable).
    pub(crate) fn retire(&self) {
        self.obsolete.store(true, Ordering::Release);
    }
}

impl Drop for BlobFile {
    fn drop(&mut self) {
        if !self.obsolete.load(Ordering::Acquire) {
            return;
        }
        let path = std::mem::take(&mut self.path);
        let driver = self.driver.clone();
        // As a replaced table: removed off this path; without a runtime the next open does it.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = driver.remove_file(&path).await {
                    tracing::warn!(path = %path.display(), error = %e, "removing a value-log file failed");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_round_trip_and_refuse_what_no_writer_makes() {
        let p = BlobPtr {
            file: 17,
            offset: 24 + 1_000_000,
            len: 70_000,
            crc: 0xdead_beef,
        };
        let b = p.to_vec();
        assert!(b.len() <= MAX_POINTER_BYTES);
        assert_eq!(BlobPtr::decode(&b), Ok(p));
        for cut in 0..b.len() {
            assert!(BlobPtr::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(BlobPtr::decode(&longer).is_err());
        // A value inside the header.
        let inside = BlobPtr { offset: 3, ..p }.to_vec();
        assert!(BlobPtr::decode(&inside).is_err());
    }

    #[test]
    fn headers_check_magic_checksum_version_and_id() {
        let h = encode_header(42);
        assert_eq!(check_header(&h, 42), Ok(()));
        assert!(check_header(&h, 43).is_err());
        assert!(check_header(&h[..23], 42).is_err());
        for i in 0..h.len() {
            let mut d = h;
            d[i] ^= 0x10;
            assert!(check_header(&d, 42).is_err(), "byte {i}");
        }
    }

    #[tokio::test]
    async fn values_written_read_back_and_damage_is_corruption() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let driver = IoDriver::new(Default::default())?;
        let path = blob_path(dir.path(), 7);
        let mut w = BlobWriter::create(&driver, path.clone(), 7, 4096).await?;
        let values: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 100 + 97 * i as usize]).collect();
        let mut ptrs = Vec::new();
        for v in &values {
            ptrs.push(w.add(v).await?);
        }
        let info = w.finish().await?;
        assert_eq!(info.values, 50);
        let cache = BlockCache::new(1 << 20);
        let f = BlobFile::open(&driver, path.clone(), 7, cache.clone()).await?;
        assert_eq!(f.file_bytes(), info.file_bytes);
        for (v, p) in values.iter().zip(&ptrs) {
            assert_eq!(&f.read(p).await?[..], &v[..]);
        }
        // Read again: from the cache.
        let misses = cache.figures().misses;
        for (v, p) in values.iter().zip(&ptrs) {
            assert_eq!(&f.read(p).await?[..], &v[..]);
        }
        assert_eq!(cache.figures().misses, misses);
        assert!(cache.figures().hits >= 50);
        // A pointer of another length at a cached offset is damage.
        let longer = BlobPtr {
            len: ptrs[5].len + 1,
            ..ptrs[5]
        };
        assert!(matches!(
            f.read(&longer).await,
            Err(Error::Corruption { .. })
        ));
        // Past the end, and a checksum that does not match.
        let past = BlobPtr {
            offset: info.file_bytes - 10,
            ..ptrs[0]
        };
        assert!(matches!(f.read(&past).await, Err(Error::Corruption { .. })));
        // Read through a file without a cache: its checksum is checked.
        let wrong = BlobPtr {
            crc: ptrs[3].crc ^ 1,
            ..ptrs[3]
        };
        let uncached = BlobFile::open(&driver, path.clone(), 7, BlockCache::new(0)).await?;
        match uncached.read(&wrong).await {
            Err(Error::Corruption { file, offset, kind }) => {
                assert_eq!(file, path);
                assert_eq!(offset, ptrs[3].offset);
                assert!(matches!(kind, CorruptionKind::BadValueLog { .. }));
            }
            other => panic!("{other:?}"),
        }
        // Opened as another file: its header names file 7.
        assert!(matches!(
            BlobFile::open(&driver, path, 8, BlockCache::new(0)).await,
            Err(Error::Corruption { .. })
        ));
        Ok(())
    }
}
