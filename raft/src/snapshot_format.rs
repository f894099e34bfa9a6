//! A snapshot's byte stream: `magic "RTSNAP01" | meta length u32 | meta (postcard
//! SnapshotMeta) | records | trailer`, each record `key length u32 | value length u32 | key |
//! value`, the trailer `u32::MAX | record count u64 | crc32 u32` (the crc covering every byte
//! before it). A length is checked against the bytes left in the stream before anything is
//! allocated for it (and a meta block against 16 MiB), so a damaged file costs no more memory
//! than its own size.

use std::io;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::SnapshotFile;
use crate::codec::{decode, encode};
use crate::state_machine::Meta;

const SNAPSHOT_MAGIC: &[u8; 8] = b"RTSNAP01";
/// The end of a snapshot's records: a key length no record has.
const END: u32 = u32::MAX;
const MAX_META: u32 = 1 << 24;

/// Writes a snapshot's stream: header, records, trailer, with a running crc32.
pub(crate) struct SnapshotWriter {
    file: SnapshotFile,
    crc: crc32fast::Hasher,
    buf: BytesMut,
    count: u64,
}

impl SnapshotWriter {
    pub(crate) async fn new(file: SnapshotFile, meta: &Meta) -> io::Result<SnapshotWriter> {
        let meta = encode(meta).map_err(io::Error::other)?;
        let mut w = SnapshotWriter {
            file,
            crc: crc32fast::Hasher::new(),
            buf: BytesMut::with_capacity(256 << 10),
            count: 0,
        };
        w.buf.put_slice(SNAPSHOT_MAGIC);
        w.buf.put_u32_le(meta.len() as u32);
        w.buf.put_slice(&meta);
        Ok(w)
    }

    pub(crate) async fn record(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let fits = |n: usize| u32::try_from(n).is_ok_and(|n| n != END);
        if !fits(key.len()) || !fits(value.len()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a record of {} + {} bytes does not fit a snapshot's u32 lengths",
                    key.len(),
                    value.len()
                ),
            ));
        }
        self.buf.put_u32_le(key.len() as u32);
        self.buf.put_u32_le(value.len() as u32);
        self.buf.put_slice(key);
        self.buf.put_slice(value);
        self.count += 1;
        if self.buf.len() >= 256 << 10 {
            self.drain().await?;
        }
        Ok(())
    }

    async fn drain(&mut self) -> io::Result<()> {
        self.crc.update(&self.buf);
        self.file.write_all(&self.buf).await?;
        self.buf.clear();
        Ok(())
    }

    /// Writes the trailer and makes the file durable.
    pub(crate) async fn finish(mut self) -> io::Result<SnapshotFile> {
        self.buf.put_u32_le(END);
        self.buf.put_u64_le(self.count);
        self.drain().await?;
        let crc = self.crc.clone().finalize();
        self.file.write_all(&crc.to_le_bytes()).await?;
        self.file.shutdown().await?;
        Ok(self.file)
    }
}

fn damaged(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("damaged snapshot: {what}"),
    )
}

/// A snapshot's stream being read: counts the crc of what it reads.
pub(crate) struct SnapshotReader<R> {
    inner: R,
    crc: crc32fast::Hasher,
    /// Bytes of the stream not read yet.
    left: u64,
}

impl<R: tokio::io::AsyncRead + Unpin> SnapshotReader<R> {
    /// A reader of the stream `inner` of `len` bytes, from its start.
    pub(crate) fn new(inner: R, len: u64) -> SnapshotReader<R> {
        SnapshotReader {
            inner,
            crc: crc32fast::Hasher::new(),
            left: len,
        }
    }

    async fn bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        // Never allocate for more than the stream still holds.
        if n as u64 > self.left {
            return Err(damaged(format!(
                "it claims {n} bytes where {} are left",
                self.left
            )));
        }
        self.left -= n as u64;
        let mut v = vec![0u8; n];
        self.inner.read_exact(&mut v).await.map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                damaged("it ends early")
            } else {
                e
            }
        })?;
        self.crc.update(&v);
        Ok(v)
    }

    async fn u32(&mut self) -> io::Result<u32> {
        let b = self.bytes(4).await?;
        Ok(u32::from_le_bytes(
            b.try_into().map_err(|_| damaged("short"))?,
        ))
    }

    async fn u64(&mut self) -> io::Result<u64> {
        let b = self.bytes(8).await?;
        Ok(u64::from_le_bytes(
            b.try_into().map_err(|_| damaged("short"))?,
        ))
    }

    pub(crate) async fn meta(&mut self) -> io::Result<Meta> {
        if self.bytes(8).await? != SNAPSHOT_MAGIC {
            return Err(damaged("not a ringtide snapshot (bad magic)"));
        }
        let len = self.u32().await?;
        if len > MAX_META {
            return Err(damaged(format!("a meta block of {len} bytes")));
        }
        let raw = self.bytes(len as usize).await?;
        decode(&raw).map_err(|e| damaged(format!("its meta does not decode: {e}")))
    }

    /// The next record, or `None` at the end (after checking the count and the crc).
    pub(crate) async fn next(&mut self, seen: u64) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        let key_len = self.u32().await?;
        if key_len == END {
            let count = self.u64().await?;
            let expected = self.crc.clone().finalize();
            let mut raw = [0u8; 4];
            self.inner
                .read_exact(&mut raw)
                .await
                .map_err(|_| damaged("its checksum is missing"))?;
            if u32::from_le_bytes(raw) != expected {
                return Err(damaged("its checksum does not match"));
            }
            if count != seen {
                return Err(damaged(format!("{seen} records where it says {count}")));
            }
            return Ok(None);
        }
        let value_len = self.u32().await?;
        let key = self.bytes(key_len as usize).await?;
        let value = self.bytes(value_len as usize).await?;
        Ok(Some((key, value)))
    }
}

/// Reads the meta of a snapshot file of `len` bytes (its header only).
pub(crate) async fn read_header<R: tokio::io::AsyncRead + Unpin>(
    reader: R,
    len: u64,
) -> io::Result<Meta> {
    SnapshotReader::new(reader, len).meta().await
}
