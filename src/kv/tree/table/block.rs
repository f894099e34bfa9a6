//! Blocks of sorted entries with prefix-compressed keys: the data blocks and the index block.
//!
//! ```text
//! entry     shared: uvarint | unshared: uvarint | value len: uvarint | seq: uvarint | kind: u8
//!           | key[shared..]: unshared bytes | value: value len bytes
//! contents  entry … entry | restart offset: u32 LE … | restart count: u32 LE
//! block     contents (as stored: compressed or not) | trailer (format.rs)
//! ```
//!
//! A block key is `bucket id (u64 BE) ‖ user key`, so byte order is (bucket, key) order; entries
//! are ordered by block key ascending, then seq **descending**. An entry stores only what its key
//! does not share with the previous entry's; every `restart_interval`-th entry (a *restart
//! point*) stores its key whole (`shared` = 0), and the restart array lists their offsets, so a
//! seek is a binary search over restart points and a short scan.
//!
//! Invariants a decoded [`Block`] keeps (checked when it is decoded, before any entry is read):
//! 1. its checksum held (and a compressed block decompressed to its stated length: a
//!    [`Block`] holds the contents decompressed);
//! 2. it has at least one restart point, the first at offset 0, the offsets ascending and within
//!    the entries.
//!
//! And a [`Cursor`] checks, entry by entry: every length within the block, `shared` no longer
//! than the previous key (0 at a restart point), a known kind, and every key greater than the
//! one before it. A block that breaks any of these is `BadTable`; a cursor never panics.

use std::cmp::Ordering;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::format::{BlockSealer, bad, get_len, get_uvarint, open_block, put_uvarint};
use crate::error::CorruptionKind;

/// Entries between restart points in data blocks.
pub(crate) const DATA_RESTART_INTERVAL: usize = 16;
/// The index block stores every key whole: its binary search then needs no scan.
pub(crate) const INDEX_RESTART_INTERVAL: usize = 1;

/// What an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A value (possibly empty). Byte 0.
    Value,
    /// A tombstone: no value. Byte 1.
    Tombstone,
    /// A pointer into a value-log file (key-value separation): the value is the pointer's
    /// encoding (`BlobPtr`). Byte 2; only in tables of format version 2, whose meta block names
    /// the value-log files their pointers reach.
    Blob,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Value => 0,
            Kind::Tombstone => 1,
            Kind::Blob => 2,
        }
    }

    fn from_byte(b: u8) -> Result<Kind, CorruptionKind> {
        match b {
            0 => Ok(Kind::Value),
            1 => Ok(Kind::Tombstone),
            2 => Ok(Kind::Blob),
            _ => Err(bad("unknown entry kind")),
        }
    }
}

/// Compares internal keys: block key ascending, then seq descending.
pub(crate) fn cmp_internal(a: &[u8], a_seq: u64, b: &[u8], b_seq: u64) -> Ordering {
    a.cmp(b).then(b_seq.cmp(&a_seq))
}

/// Builds one block from entries given in order.
pub(crate) struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    interval: usize,
    since_restart: usize,
    last_key: Vec<u8>,
}

impl BlockBuilder {
    pub(crate) fn new(interval: usize) -> BlockBuilder {
        assert!(interval >= 1);
        BlockBuilder {
            buf: Vec::new(),
            restarts: Vec::new(),
            interval,
            since_restart: 0,
            last_key: Vec::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.restarts.is_empty()
    }

    /// The block's size if it were finished now, trailer included.
    pub(crate) fn size_estimate(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4 + super::format::TRAILER_LEN
    }

    /// Appends an entry. The caller keeps the order (the table writer checks it); lengths fit
    /// a u32 block (the writer bounds keys and values).
    pub(crate) fn add(&mut self, key: &[u8], seq: u64, kind: Kind, value: &[u8]) {
        let shared = if self.is_empty() || self.since_restart == self.interval {
            // A restart point: the key whole. Offsets fit u32: blocks are bounded by the writer.
            self.restarts.push(self.buf.len() as u32);
            self.since_restart = 0;
            0
        } else {
            common_prefix(&self.last_key, key)
        };
        put_uvarint(&mut self.buf, shared as u64);
        put_uvarint(&mut self.buf, (key.len() - shared) as u64);
        put_uvarint(&mut self.buf, value.len() as u64);
        put_uvarint(&mut self.buf, seq);
        self.buf.push(kind.byte());
        self.buf.extend_from_slice(&key[shared..]);
        self.buf.extend_from_slice(value);
        self.last_key.truncate(shared);
        self.last_key.extend_from_slice(&key[shared..]);
        self.since_restart += 1;
    }

    /// Appends the finished block (contents, stored as `sealer` decides, and trailer) to `out`,
    /// returns its length, and empties the builder for the next block.
    pub(crate) fn finish_into(&mut self, out: &mut BytesMut, sealer: &mut BlockSealer) -> u64 {
        for r in &self.restarts {
            self.buf.extend_from_slice(&r.to_le_bytes());
        }
        self.buf
            .extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        let len = sealer.put_block(out, &self.buf);
        self.buf.clear();
        self.restarts.clear();
        self.since_restart = 0;
        self.last_key.clear();
        len
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// A block read and checked: its contents (entries and restart array, decompressed), shared and
/// cheap to clone, so that a block cache can hold it.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    contents: Bytes,
    /// The block's length in its file, trailer included (what its handle says).
    stored_len: usize,
    /// Where the restart array starts (the end of the entries).
    restarts_at: usize,
    restart_count: usize,
}

impl Block {
    /// A value kept apart (a value-log file's), held in the block cache as a block of raw bytes
    /// without entries: only [`Block::raw_value`] reads it back. Cached under its file's id,
    /// which no table shares, so no table ever reads it as a data block.
    pub(crate) fn of_value(value: Bytes) -> Block {
        Block {
            stored_len: value.len(),
            restarts_at: value.len(),
            restart_count: 0,
            contents: value,
        }
    }

    /// The bytes of a block made by [`Block::of_value`].
    pub(crate) fn raw_value(&self) -> Bytes {
        self.contents.clone()
    }

    /// Its restart points.
    pub(crate) fn restart_count(&self) -> usize {
        self.restart_count
    }

    /// Checks a raw block (contents as stored and trailer), decompresses it if it is
    /// compressed, and checks its restart array.
    pub(crate) fn decode(raw: Bytes) -> Result<Block, CorruptionKind> {
        let contents = open_block(&raw)?;
        let len = contents.len();
        let count_at = len
            .checked_sub(4)
            .ok_or(bad("block without a restart count"))?;
        let count = u32::from_le_bytes(contents[count_at..].try_into().unwrap_or([0; 4])) as usize;
        let restarts_at = count
            .checked_mul(4)
            .and_then(|n| count_at.checked_sub(n))
            .ok_or(bad("restart count larger than its block"))?;
        if count == 0 {
            return Err(bad("block without entries"));
        }
        let block = Block {
            contents,
            stored_len: raw.len(),
            restarts_at,
            restart_count: count,
        };
        let mut last = None;
        for i in 0..count {
            let r = block.restart(i);
            let sound = match last {
                None => r == 0,
                Some(prev) => r > prev,
            };
            if !sound || r >= restarts_at {
                return Err(bad("restart offsets out of order or past the entries"));
            }
            last = Some(r);
        }
        Ok(block)
    }

    /// The bytes of the block's contents (entries and restart array, decompressed; the trailer
    /// is not kept): what a block cache weighs it by.
    pub(crate) fn len_bytes(&self) -> usize {
        self.contents.len()
    }

    /// The block's length in its file, trailer included.
    pub(crate) fn stored_len(&self) -> usize {
        self.stored_len
    }

    fn restart(&self, i: usize) -> usize {
        let at = self.restarts_at + 4 * i;
        let b = self.contents.get(at..at + 4).unwrap_or(&[0; 4]);
        u32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as usize
    }

    /// The bytes of the entries.
    fn entries(&self) -> &[u8] {
        &self.contents[..self.restarts_at]
    }

    /// A cursor on no entry yet.
    pub(crate) fn cursor(&self) -> Cursor {
        Cursor {
            block: self.clone(),
            at: self.restarts_at,
            next: self.restarts_at,
            restart: 0,
            key: Vec::new(),
            seq: 0,
            kind: Kind::Value,
            value: 0..0,
            valid: false,
        }
    }

    /// Parses the entry at `off`: its fields, checked against the block's bounds.
    fn parse(&self, off: usize) -> Result<Parsed, CorruptionKind> {
        let b = self.entries();
        let mut at = off;
        let shared = get_len(b, &mut at)?;
        let unshared = get_len(b, &mut at)?;
        let value_len = get_len(b, &mut at)?;
        let seq = get_uvarint(b, &mut at)?;
        let kind = Kind::from_byte(*b.get(at).ok_or(bad("entry past the end of its block"))?)?;
        at += 1;
        let delta = at..at.checked_add(unshared).ok_or(bad("entry length"))?;
        let value = delta.end
            ..delta
                .end
                .checked_add(value_len)
                .ok_or(bad("entry length"))?;
        if value.end > b.len() {
            return Err(bad("entry past the end of its block"));
        }
        if kind == Kind::Tombstone && value_len != 0 {
            return Err(bad("tombstone with a value"));
        }
        Ok(Parsed {
            shared,
            delta,
            seq,
            kind,
            value,
        })
    }
}

struct Parsed {
    shared: usize,
    delta: Range<usize>,
    seq: u64,
    kind: Kind,
    value: Range<usize>,
}

/// A position in a block: on an entry (`valid`), or on none (before the first or past the
/// last). Moves return `Err` for a damaged block and leave the cursor on no entry.
pub(crate) struct Cursor {
    block: Block,
    /// Where the current entry starts.
    at: usize,
    /// Where the entry after it starts.
    next: usize,
    /// The restart run of the current entry.
    restart: usize,
    key: Vec<u8>,
    seq: u64,
    kind: Kind,
    value: Range<usize>,
    valid: bool,
}

impl Cursor {
    pub(crate) fn valid(&self) -> bool {
        self.valid
    }

    /// The current entry's block key (`bucket ‖ user key`).
    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }

    /// Whether the current entry is the block's last.
    pub(crate) fn is_last(&self) -> bool {
        self.valid && self.next >= self.block.restarts_at
    }

    /// Whether the current entry is the block's first.
    pub(crate) fn is_first(&self) -> bool {
        self.valid && self.at == 0
    }

    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// The current entry's value bytes (empty for a tombstone), without a copy.
    pub(crate) fn value(&self) -> Bytes {
        self.block.contents.slice(self.value.clone())
    }

    /// The current entry's value bytes, borrowed.
    pub(crate) fn value_slice(&self) -> &[u8] {
        &self.block.contents[self.value.clone()]
    }

    fn fail<T>(&mut self, kind: CorruptionKind) -> Result<T, CorruptionKind> {
        self.valid = false;
        Err(kind)
    }

    /// Starts over at restart point `i`, on its entry.
    fn start_at_restart(&mut self, i: usize) -> Result<(), CorruptionKind> {
        self.restart = i;
        self.next = self.block.restart(i);
        self.key.clear();
        self.valid = false;
        self.step()
    }

    /// Moves onto the entry at `self.next`, decoded against the current key; past the last
    /// entry the cursor is on none.
    fn step(&mut self) -> Result<(), CorruptionKind> {
        if self.next >= self.block.restarts_at {
            self.at = self.block.restarts_at;
            self.valid = false;
            return Ok(());
        }
        let following = self.restart + 1;
        let at_restart =
            following < self.block.restart_count && self.block.restart(following) == self.next;
        let p = match self.block.parse(self.next) {
            Ok(p) => p,
            Err(e) => return self.fail(e),
        };
        if p.shared > self.key.len() || (at_restart && p.shared != 0) {
            return self.fail(bad("entry shares more than the previous key"));
        }
        let delta = &self.block.entries()[p.delta.clone()];
        if self.valid {
            // The new key is key[..shared] ‖ delta: compare it with the old from `shared` on.
            let order = delta.cmp(&self.key[p.shared..]).then(self.seq.cmp(&p.seq));
            if order != Ordering::Greater {
                return self.fail(bad("keys out of order in a block"));
            }
        }
        if p.shared + delta.len() > super::format::MAX_KEY_BYTES {
            return self.fail(bad("key longer than any writer stores"));
        }
        if at_restart {
            self.restart = following;
        }
        self.key.truncate(p.shared);
        self.key.extend_from_slice(delta);
        self.at = self.next;
        self.next = p.value.end;
        self.seq = p.seq;
        self.kind = p.kind;
        self.value = p.value;
        self.valid = true;
        Ok(())
    }

    pub(crate) fn seek_to_first(&mut self) -> Result<(), CorruptionKind> {
        self.start_at_restart(0)
    }

    /// Moves to restart point `i` (past the last entry if there is none): in the index block,
    /// where every entry is a restart point, the `i`-th entry.
    pub(crate) fn seek_to_restart(&mut self, i: usize) -> Result<(), CorruptionKind> {
        if i >= self.block.restart_count {
            self.at = self.block.restarts_at;
            self.next = self.block.restarts_at;
            self.key.clear();
            self.valid = false;
            return Ok(());
        }
        self.start_at_restart(i)
    }

    pub(crate) fn seek_to_last(&mut self) -> Result<(), CorruptionKind> {
        self.start_at_restart(self.block.restart_count - 1)?;
        while self.next < self.block.restarts_at {
            self.step()?;
        }
        Ok(())
    }

    /// Moves to the next entry (on none past the last).
    pub(crate) fn next(&mut self) -> Result<(), CorruptionKind> {
        if !self.valid {
            return Ok(());
        }
        self.step()
    }

    /// Moves to the previous entry (on none before the first): a scan from the restart point
    /// before the current entry.
    pub(crate) fn prev(&mut self) -> Result<(), CorruptionKind> {
        if !self.valid {
            return Ok(());
        }
        let original = self.at;
        if original == 0 {
            self.valid = false;
            return Ok(());
        }
        // The last restart point before the current entry.
        let (mut lo, mut hi) = (0, self.block.restart_count);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.block.restart(mid) < original {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        self.start_at_restart(lo)?;
        while self.valid && self.next < original {
            self.step()?;
        }
        if !self.valid || self.next != original {
            return self.fail(bad("entries do not chain up to the current one"));
        }
        Ok(())
    }

    /// Moves to the first entry at or after `(key, seq)` (on none if every entry is before).
    pub(crate) fn seek(&mut self, key: &[u8], seq: u64) -> Result<(), CorruptionKind> {
        // The last restart point whose key is before the target; the scan starts there.
        let (mut lo, mut hi) = (0, self.block.restart_count);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let p = match self.block.parse(self.block.restart(mid)) {
                Ok(p) => p,
                Err(e) => return self.fail(e),
            };
            if p.shared != 0 {
                return self.fail(bad("restart point shares a key prefix"));
            }
            let restart_key = &self.block.entries()[p.delta];
            if cmp_internal(restart_key, p.seq, key, seq) == Ordering::Less {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        self.start_at_restart(lo)?;
        while self.valid && cmp_internal(&self.key, self.seq, key, seq) == Ordering::Less {
            self.step()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::options::Compression;

    fn block(entries: &[(&[u8], u64)], interval: usize) -> Block {
        let mut b = BlockBuilder::new(interval);
        for (k, s) in entries {
            b.add(k, *s, Kind::Value, k);
        }
        let mut out = BytesMut::new();
        b.finish_into(&mut out, &mut BlockSealer::new(Compression::None));
        Block::decode(out.freeze()).expect("a sound block")
    }

    fn collect_forward(c: &mut Cursor) -> Vec<(Vec<u8>, u64)> {
        let mut out = Vec::new();
        c.seek_to_first().unwrap();
        while c.valid() {
            assert_eq!(c.value_slice(), c.key());
            out.push((c.key().to_vec(), c.seq()));
            c.next().unwrap();
        }
        out
    }

    #[test]
    fn cursors_walk_seek_and_step_back_over_every_restart_interval() {
        let keys: Vec<(Vec<u8>, u64)> = (0..50u32)
            .flat_map(|i| {
                let k = format!("key{:03}", i / 2).into_bytes();
                [(k.clone(), 9 - u64::from(i % 2) * 5)]
            })
            .collect();
        let entries: Vec<(&[u8], u64)> = keys.iter().map(|(k, s)| (k.as_slice(), *s)).collect();
        for interval in [1, 2, 3, 16, 100] {
            let b = block(&entries, interval);
            let mut c = b.cursor();
            assert_eq!(collect_forward(&mut c), keys);
            // Backwards from the last.
            let mut back = Vec::new();
            c.seek_to_last().unwrap();
            while c.valid() {
                back.push((c.key().to_vec(), c.seq()));
                c.prev().unwrap();
            }
            back.reverse();
            assert_eq!(back, keys);
            // Seeks land on the first entry at or after the target.
            for (i, (k, s)) in keys.iter().enumerate() {
                c.seek(k, *s).unwrap();
                assert_eq!((c.key(), c.seq()), (k.as_slice(), *s));
                c.seek(k, s + 1).unwrap();
                assert_eq!((c.key(), c.seq()), (k.as_slice(), *s), "{i}");
                c.seek(k, s - 1).unwrap();
                match keys.get(i + 1) {
                    Some((k2, s2)) => assert_eq!((c.key(), c.seq()), (k2.as_slice(), *s2)),
                    None => assert!(!c.valid()),
                }
            }
            c.seek(b"a", 0).unwrap();
            assert_eq!(c.key(), keys[0].0);
            c.seek(b"z", 0).unwrap();
            assert!(!c.valid());
        }
    }

    #[test]
    fn damaged_blocks_are_refused_not_misread() {
        for compression in [Compression::None, Compression::Lz4] {
            let b = {
                let mut bb = BlockBuilder::new(2);
                for i in 0..6u8 {
                    bb.add(&[b'k', i], 1, Kind::Value, &[i; 24]);
                }
                let mut out = BytesMut::new();
                bb.finish_into(&mut out, &mut BlockSealer::new(compression));
                out.freeze()
            };
            // The compression byte says which: the lz4 block was worth compressing.
            let byte = b[b.len() - 5];
            assert_eq!(byte, u8::from(compression == Compression::Lz4));
            let sound = Block::decode(b.clone()).expect("a sound block");
            assert_eq!(sound.stored_len(), b.len());
            for i in 0..b.len() {
                for bit in 0..8 {
                    let mut d = b.to_vec();
                    d[i] ^= 1 << bit;
                    assert!(Block::decode(Bytes::from(d)).is_err(), "flip at {i}.{bit}");
                }
            }
            for len in 0..b.len() {
                assert!(Block::decode(b.slice(..len)).is_err());
            }
        }
    }
}
