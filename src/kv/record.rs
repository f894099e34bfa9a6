//! The key-value store's records in its wal: one transaction's writes, as one atomic batch.
//!
//! A transaction's writes are encoded into chunks of about [`CHUNK_BYTES`] each; the chunks are
//! appended as one `append_batch`, which the wal makes atomic across crashes, so a record is
//! recovered whole or not at all. Every chunk starts with the same header; the last has
//! `more = 0`. Byte tables in docs/design.md ("Key-value records").
//!
//! ```text
//! chunk  := header write*
//! header := version u8 (= 1) | kind u8 | more u8 | seq u64 | txn_id u64 | aux u64 | count u32
//! write  := op u8 (1 = put, 2 = delete) | bucket u64 | key_len u32 | key | [val_len u32 | value]
//!         | op u8 (3 = read held) | bucket u64 | key_len u32 | key
//!         | op u8 (4 = range held) | bucket u64 | len u32 | bound | len u32 | bound
//! bound  := tag u8 (0 = unbounded, 1 = included, 2 = excluded) | key
//! ```
//! Ops 3 and 4 appear only in a serializable transaction's prepare record, after its writes: the
//! keys and ranges it read, which stay held until it commits or rolls back, across restarts.
//! Integers are little-endian. Decoding checks every length against the chunk and returns
//! [`CorruptionKind::BadRecord`] on anything a writer does not produce; it never panics.

use std::ops::Bound;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::txn::oracle::{BucketKey, ScannedRange};

use crate::error::{CorruptionKind, Error};
use crate::types::Lsn;

/// The record format this build writes and reads.
pub(crate) const VERSION: u8 = 1;
/// Bytes of a chunk's header.
pub(crate) const HEADER_BYTES: usize = 31;
/// A chunk is closed once it holds this many bytes (one write may make it larger).
pub(crate) const CHUNK_BYTES: usize = 1 << 20;
/// Where the seq sits in a chunk (patched once the commit has its seq).
const SEQ_OFFSET: usize = 3;
/// Bytes of a write's fixed fields besides the key and value.
pub(crate) const WRITE_OVERHEAD_BYTES: usize = 1 + 8 + 4 + 4;

/// What a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A committed transaction: `seq` and its writes.
    Commit = 1,
    /// A prepared transaction: `txn_id`, its writes, `aux` = its deadline (ms since the Unix
    /// epoch, 0 = none).
    Prepare = 2,
    /// A prepared transaction committed: `seq`, `txn_id`; its writes are the prepare's.
    CommitPrepared = 3,
    /// A prepared transaction rolled back: `txn_id`.
    Rollback = 4,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Commit,
            2 => Kind::Prepare,
            3 => Kind::CommitPrepared,
            4 => Kind::Rollback,
            _ => return None,
        })
    }
}

/// One write: a put (`Some` value) or a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Write {
    pub(crate) bucket: u64,
    pub(crate) key: Bytes,
    pub(crate) value: Option<Bytes>,
}

/// A record's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) kind: Kind,
    pub(crate) seq: u64,
    pub(crate) txn_id: u64,
    pub(crate) aux: u64,
}

/// Encodes a record into chunks; [`Encoded::finish`] patches in the seq.
pub(crate) struct Encoded {
    chunks: Vec<BytesMut>,
}

/// What a record holds besides writes: what a prepared serializable transaction read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Held {
    Key(BucketKey),
    Range(ScannedRange),
}

/// One item of a record, to encode.
enum Item<'a> {
    Write(WriteRef<'a>),
    Held(&'a Held),
}

impl Encoded {
    /// Encodes `writes` under `header` (its `seq` may be patched later).
    pub(crate) fn new<'a>(header: Header, writes: impl IntoIterator<Item = WriteRef<'a>>) -> Self {
        Self::items(header, writes.into_iter().map(Item::Write))
    }

    /// Encodes a prepare record: `writes`, then what stays held with them.
    pub(crate) fn prepare<'a>(
        header: Header,
        writes: impl IntoIterator<Item = WriteRef<'a>>,
        held: &'a [Held],
    ) -> Self {
        let items = writes
            .into_iter()
            .map(Item::Write)
            .chain(held.iter().map(Item::Held));
        Self::items(header, items)
    }

    fn items<'a>(header: Header, items: impl Iterator<Item = Item<'a>>) -> Self {
        let mut chunks = Vec::new();
        let mut current = start_chunk(header);
        let mut count: u32 = 0;
        for item in items {
            if current.len() >= CHUNK_BYTES {
                close_chunk(&mut current, count, true);
                chunks.push(std::mem::replace(&mut current, start_chunk(header)));
                count = 0;
            }
            match item {
                Item::Write(w) => encode_write(&mut current, w),
                Item::Held(h) => encode_held(&mut current, h),
            }
            count += 1;
        }
        close_chunk(&mut current, count, false);
        chunks.push(current);
        Encoded { chunks }
    }

    /// Sets the seq in every chunk and hands the chunks out for the wal.
    pub(crate) fn finish(mut self, seq: u64) -> Vec<Bytes> {
        for chunk in &mut self.chunks {
            chunk[SEQ_OFFSET..SEQ_OFFSET + 8].copy_from_slice(&seq.to_le_bytes());
        }
        self.chunks.into_iter().map(BytesMut::freeze).collect()
    }
}

/// A write to encode, borrowed from a transaction's write set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteRef<'a> {
    pub(crate) bucket: u64,
    pub(crate) key: &'a [u8],
    pub(crate) value: Option<&'a [u8]>,
}

/// The encoded size of one write.
pub(crate) fn write_bytes(key_len: usize, value_len: Option<usize>) -> usize {
    WRITE_OVERHEAD_BYTES + key_len + value_len.unwrap_or(0)
}

fn start_chunk(header: Header) -> BytesMut {
    let mut b = BytesMut::with_capacity(HEADER_BYTES + 256);
    b.put_u8(VERSION);
    b.put_u8(header.kind as u8);
    b.put_u8(0);
    b.put_u64_le(header.seq);
    b.put_u64_le(header.txn_id);
    b.put_u64_le(header.aux);
    b.put_u32_le(0);
    debug_assert_eq!(b.len(), HEADER_BYTES);
    b
}

fn close_chunk(chunk: &mut BytesMut, count: u32, more: bool) {
    chunk[2] = u8::from(more);
    chunk[HEADER_BYTES - 4..HEADER_BYTES].copy_from_slice(&count.to_le_bytes());
}

fn encode_write(b: &mut BytesMut, w: WriteRef<'_>) {
    // Keys and values are bounded by the options (far below 4 GiB) before they reach here.
    let key_len = u32::try_from(w.key.len()).expect("key length bounded by max_key_bytes");
    b.reserve(write_bytes(w.key.len(), w.value.map(<[u8]>::len)));
    b.put_u8(if w.value.is_some() { 1 } else { 2 });
    b.put_u64_le(w.bucket);
    b.put_u32_le(key_len);
    b.put_slice(w.key);
    if let Some(v) = w.value {
        let val_len = u32::try_from(v.len()).expect("value length bounded by max_value_bytes");
        b.put_u32_le(val_len);
        b.put_slice(v);
    }
}

fn encode_held(b: &mut BytesMut, held: &Held) {
    let sized = |b: &mut BytesMut, parts: &[&[u8]]| {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        b.put_u32_le(u32::try_from(len).expect("keys are bounded by max_key_bytes"));
        for p in parts {
            b.put_slice(p);
        }
    };
    let bound = |b: &mut BytesMut, bound: &Bound<Bytes>| match bound {
        Bound::Unbounded => sized(b, &[&[0]]),
        Bound::Included(k) => sized(b, &[&[1], k]),
        Bound::Excluded(k) => sized(b, &[&[2], k]),
    };
    match held {
        Held::Key((bucket, key)) => {
            b.put_u8(3);
            b.put_u64_le(*bucket);
            sized(b, &[key]);
        }
        Held::Range(r) => {
            b.put_u8(4);
            b.put_u64_le(r.bucket);
            bound(b, &r.lower);
            bound(b, &r.upper);
        }
    }
}

fn decode_bound(mut data: Bytes) -> Option<Bound<Bytes>> {
    if data.is_empty() {
        return None;
    }
    let tag = data.get_u8();
    match tag {
        0 if data.is_empty() => Some(Bound::Unbounded),
        1 => Some(Bound::Included(data)),
        2 => Some(Bound::Excluded(data)),
        _ => None,
    }
}

/// One decoded chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub(crate) header: Header,
    /// More chunks of the same record follow.
    pub(crate) more: bool,
    pub(crate) writes: Vec<Write>,
    /// What a prepare record holds besides its writes.
    pub(crate) held: Vec<Held>,
}

/// Decodes one chunk from a wal entry's data (sliced without copies).
pub(crate) fn decode(lsn: Lsn, file: &std::path::Path, data: &Bytes) -> Result<Chunk, Error> {
    let bad = |reason: &'static str| {
        Error::corruption(file, 0, CorruptionKind::BadRecord { lsn, reason })
    };
    if data.len() < HEADER_BYTES {
        return Err(bad("shorter than a record header"));
    }
    let mut buf = data.clone();
    let version = buf.get_u8();
    if version != VERSION {
        return Err(Error::corruption(
            file,
            0,
            CorruptionKind::UnsupportedVersion {
                found: u16::from(version),
                supported: u16::from(VERSION),
            },
        ));
    }
    let kind = Kind::from_byte(buf.get_u8()).ok_or_else(|| bad("unknown record kind"))?;
    let more = match buf.get_u8() {
        0 => false,
        1 => true,
        _ => return Err(bad("bad continuation flag")),
    };
    let header = Header {
        kind,
        seq: buf.get_u64_le(),
        txn_id: buf.get_u64_le(),
        aux: buf.get_u64_le(),
    };
    let count = buf.get_u32_le();
    // Every write takes at least its fixed fields: a count beyond that is a lie.
    if count as usize > buf.len() / (WRITE_OVERHEAD_BYTES - 4) {
        return Err(bad("write count larger than the record"));
    }
    let mut writes = Vec::with_capacity(count as usize);
    let mut held = Vec::new();
    for _ in 0..count {
        if buf.remaining() < 1 + 8 + 4 {
            return Err(bad("write cut short"));
        }
        let op = buf.get_u8();
        let bucket = buf.get_u64_le();
        let key = take_sized(&mut buf).ok_or_else(|| bad("key runs past the record"))?;
        if key.is_empty() {
            return Err(bad("empty key"));
        }
        let value = match op {
            1 => Some(take_sized(&mut buf).ok_or_else(|| bad("value runs past the record"))?),
            2 => None,
            3 | 4 if kind != Kind::Prepare => return Err(bad("a hold outside a prepare record")),
            3 => {
                held.push(Held::Key((bucket, key)));
                continue;
            }
            4 => {
                let upper =
                    take_sized(&mut buf).ok_or_else(|| bad("range runs past the record"))?;
                let (Some(lower), Some(upper)) = (decode_bound(key), decode_bound(upper)) else {
                    return Err(bad("bad range bound"));
                };
                held.push(Held::Range(ScannedRange {
                    bucket,
                    lower,
                    upper,
                }));
                continue;
            }
            _ => return Err(bad("unknown write op")),
        };
        if !held.is_empty() {
            return Err(bad("a write after a hold"));
        }
        writes.push(Write { bucket, key, value });
    }
    if buf.has_remaining() {
        return Err(bad("bytes after the last write"));
    }
    Ok(Chunk {
        header,
        more,
        writes,
        held,
    })
}

fn take_sized(buf: &mut Bytes) -> Option<Bytes> {
    if buf.remaining() < 4 {
        return None;
    }
    let len = buf.get_u32_le() as usize;
    (len <= buf.remaining()).then(|| buf.split_to(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn header(kind: Kind) -> Header {
        Header {
            kind,
            seq: 0,
            txn_id: 9,
            aux: 7,
        }
    }

    #[test]
    fn a_record_round_trips_through_chunks() {
        let big = vec![7u8; 300 << 10];
        let writes: Vec<WriteRef<'_>> = (0..10u8)
            .map(|i| WriteRef {
                bucket: u64::from(i),
                key: if i % 2 == 0 { b"even" } else { b"odd" },
                value: (i % 3 != 0).then_some(&big[..]),
            })
            .collect();
        let enc = Encoded::new(header(Kind::Commit), writes.iter().copied());
        let chunks = enc.finish(42);
        assert!(chunks.len() > 1, "300 KiB values make several 1 MiB chunks");
        let mut decoded = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let chunk = decode(Lsn(1), Path::new("x"), c).unwrap();
            assert_eq!(chunk.more, i + 1 < chunks.len());
            assert_eq!(chunk.header.seq, 42);
            assert_eq!(chunk.header.txn_id, 9);
            assert_eq!(chunk.header.aux, 7);
            decoded.extend(chunk.writes);
        }
        assert_eq!(decoded.len(), 10);
        for (d, w) in decoded.iter().zip(&writes) {
            assert_eq!(d.bucket, w.bucket);
            assert_eq!(&d.key[..], w.key);
            assert_eq!(d.value.as_deref(), w.value);
        }
    }

    #[test]
    fn a_prepare_record_carries_what_it_holds() {
        let w = [WriteRef {
            bucket: 3,
            key: b"key",
            value: Some(b"value"),
        }];
        let held = vec![
            Held::Key((0, Bytes::from_static(b"read"))),
            Held::Range(ScannedRange {
                bucket: 5,
                lower: Bound::Included(Bytes::from_static(b"a")),
                upper: Bound::Excluded(Bytes::from_static(b"c")),
            }),
            Held::Range(ScannedRange {
                bucket: 6,
                lower: Bound::Unbounded,
                upper: Bound::Included(Bytes::from_static(b"z")),
            }),
            Held::Range(ScannedRange {
                bucket: 7,
                lower: Bound::Excluded(Bytes::from_static(b"m")),
                upper: Bound::Unbounded,
            }),
        ];
        let chunk = Encoded::prepare(header(Kind::Prepare), w, &held)
            .finish(0)
            .remove(0);
        let decoded = decode(Lsn(1), Path::new("x"), &chunk).unwrap();
        assert_eq!(decoded.writes.len(), 1);
        assert_eq!(decoded.held, held);
        // Only a prepare record may hold anything.
        let mut commit = chunk.to_vec();
        commit[1] = Kind::Commit as u8;
        let err = decode(Lsn(1), Path::new("x"), &Bytes::from(commit)).unwrap_err();
        assert!(
            err.to_string().contains("a hold outside a prepare"),
            "{err}"
        );
    }

    #[test]
    fn damaged_records_are_errors_never_panics() {
        let w = [WriteRef {
            bucket: 3,
            key: b"key",
            value: Some(b"value"),
        }];
        let good = Encoded::new(header(Kind::Prepare), w).finish(5).remove(0);
        assert!(decode(Lsn(1), Path::new("x"), &good).is_ok());
        for cut in 0..good.len() {
            assert!(decode(Lsn(1), Path::new("x"), &good.slice(..cut)).is_err());
        }
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut d = good.to_vec();
                d[i] ^= 1 << bit;
                // Flips in the seq, txn id, aux, bucket or payload bytes decode to other
                // values (the wal's checksum catches those); nothing panics.
                let _ = decode(Lsn(1), Path::new("x"), &Bytes::from(d));
            }
        }
        let mut v2 = good.to_vec();
        v2[0] = 2;
        let err = decode(Lsn(1), Path::new("x"), &Bytes::from(v2)).unwrap_err();
        assert!(
            err.to_string().contains("unsupported format version 2"),
            "{err}"
        );
    }
}
