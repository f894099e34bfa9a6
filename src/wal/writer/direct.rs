//! Direct I/O: writes with `O_DIRECT`, of whole 4 KiB blocks, where the file system allows it.
//!
//! A direct write skips the page cache, and on io_uring it completes without a kernel worker
//! thread. Under policies that sync every batch every write is direct (the sync then costs no
//! write-back); under the others only writes of at least [`DIRECT_BULK_BYTES`].
//!
//! Invariants:
//! 1. The partly written last block of the active segment is kept in memory ([`TailBlock`])
//!    across every write, direct or not, and a direct write starts at that block with those
//!    bytes: a torn write leaves each 512-byte sector old or new, and they are equal where it
//!    matters. The rest of the last block is written with zeros, which is what the segment
//!    holds there (written zeros, or unwritten extents that read as zeros).
//! 2. That rewrite is only safe with one write in flight: two could land in either order.
//! 3. Anything unexpected (a write that does not continue where the last ended, a segment that
//!    is not a whole number of blocks, `O_DIRECT` refused) turns direct writes off for the
//!    segment, or for the log: never guess.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use ringtide_platform::File;

use super::Active;
use super::write::Launched;
use crate::wal::Shared;
use crate::wal::segment::DIRECT_BLOCK;
use crate::wal::stage;

/// The most direct-write buffers kept, and the largest kept.
const DIRECT_BUFS: usize = 2;
const DIRECT_BUF_MAX_BYTES: usize = 16 << 20;

/// Under policies that do not sync every batch, writes of at least this many bytes are direct:
/// buffered, a bulk writer is bound by the page cache's copy and write-back (~400 MiB/s here),
/// while the disk takes ~2 GB/s of direct writes of a MiB or more. Smaller writes stay buffered,
/// where a write returns at memory speed and a reader right behind finds the page cache warm.
const DIRECT_BULK_BYTES: usize = 128 << 10;

/// The block size of direct writes, as a length.
const BLOCK: usize = DIRECT_BLOCK as usize;

/// The last, partly written block of the active segment: it starts at `block` and holds `bytes`
/// so far (fewer than a block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TailBlock {
    block: u64,
    bytes: Vec<u8>,
}

impl TailBlock {
    /// Where the segment's writes end.
    fn end(&self) -> u64 {
        self.block + self.bytes.len() as u64
    }

    /// Follows a write of `chunk` at `base`. False if it does not continue where the writes
    /// ended (then nothing is known of the block any more).
    fn advance(&mut self, chunk: &[u8], base: u64) -> bool {
        if self.end() != base {
            return false;
        }
        let end = base + chunk.len() as u64;
        let last_block = end - end % DIRECT_BLOCK;
        if last_block == self.block {
            self.bytes.extend_from_slice(chunk);
        } else {
            // The chunk reaches past this block; its own last block begins inside it.
            let from = usize::try_from(last_block - base).expect("within the chunk");
            self.bytes.clear();
            self.bytes.extend_from_slice(&chunk[from..]);
            self.block = last_block;
        }
        true
    }
}

/// The active segment's direct-write state.
enum DirectTail {
    /// Not looked at since the active segment changed.
    Unknown,
    /// Buffered writes for this segment.
    Off,
    /// An `O_DIRECT` handle, and the segment's last, partly written block.
    On { file: File, tail: TailBlock },
}

/// The log's direct I/O.
pub(super) struct Direct {
    /// The log writes direct where the file system allows it; false once it refused.
    enabled: bool,
    /// The smallest write made direct.
    min_bytes: usize,
    tail: DirectTail,
    /// Block-aligned buffers of finished direct writes, for the next ones: fresh memory costs a
    /// page fault per 4 KiB (about a third of a 4 MiB write's copy).
    bufs: Vec<BytesMut>,
}

impl Direct {
    /// `syncs_each_batch`: every write is direct, not only bulk ones.
    pub(super) fn new(syncs_each_batch: bool) -> Direct {
        Direct {
            enabled: true,
            min_bytes: if syncs_each_batch {
                0
            } else {
                DIRECT_BULK_BYTES
            },
            tail: DirectTail::Unknown,
            bufs: Vec::new(),
        }
    }

    /// The smallest write made direct.
    pub(super) fn min_bytes(&self) -> usize {
        self.min_bytes
    }

    /// Whether the active segment was looked at since it changed.
    pub(super) fn is_unknown(&self) -> bool {
        matches!(self.tail, DirectTail::Unknown)
    }

    /// The active segment changed (or grew): look at it again before its next write.
    pub(super) fn forget(&mut self) {
        self.tail = DirectTail::Unknown;
    }

    /// The write of `chunk` at `base` as a direct write of whole blocks, where the active
    /// segment is open for it: the handle, the blocks, and where they start (invariant 1).
    pub(super) fn blocks_for(&mut self, chunk: &[u8], base: u64) -> Option<(File, Bytes, u64)> {
        let DirectTail::On { file, tail } = &mut self.tail else {
            return None;
        };
        if tail.end() != base {
            // Not where this segment's writes left off: never guess.
            self.tail = DirectTail::Off;
            return None;
        }
        let start = tail.block;
        let padded = (tail.bytes.len() + chunk.len()).next_multiple_of(BLOCK);
        let mut buf = match self.bufs.pop() {
            Some(buf)
                if buf.capacity() >= padded && (buf.as_ptr() as usize).is_multiple_of(BLOCK) =>
            {
                buf
            }
            _ => ringtide_platform::aligned_bytes_mut(padded, BLOCK),
        };
        buf.extend_from_slice(&tail.bytes);
        buf.extend_from_slice(chunk);
        buf.resize(padded, 0);
        let file = file.clone();
        let continued = tail.advance(chunk, base);
        assert!(continued, "checked above");
        Some((file, buf.freeze(), start))
    }

    /// Follows a buffered write of `chunk` at `base`, for the next direct write.
    pub(super) fn track_tail(&mut self, chunk: &[u8], base: u64) {
        if let DirectTail::On { tail, .. } = &mut self.tail
            && !tail.advance(chunk, base)
        {
            // Not where this segment's writes left off: never guess.
            self.tail = DirectTail::Off;
        }
    }

    /// A write came back: keeps its block buffer, and turns direct writes off for the log if
    /// the file system refused one.
    pub(super) fn write_returned(&mut self, launched: &mut Launched, dir: &Path) {
        if let Some(buf) = launched.direct_buf.take() {
            stage::keep_for_reuse(&mut self.bufs, buf, DIRECT_BUFS, DIRECT_BUF_MAX_BYTES);
        }
        if launched.direct_refused && self.enabled {
            tracing::warn!(dir = %dir.display(), "wal: the file system refused a direct write; writing buffered from now on");
            self.enabled = false;
            self.tail = DirectTail::Off;
        }
    }

    /// Decides, once per active segment, whether its writes go direct: opens it with `O_DIRECT`
    /// and reads its last, partly written block. Buffered where the log does not use direct
    /// I/O, the segment is not a whole number of blocks, or the file system refuses it.
    pub(super) async fn ensure(&mut self, shared: &Shared, active: &Active) {
        if !self.is_unknown() {
            return;
        }
        self.tail = DirectTail::Off;
        if !self.enabled || !active.allocated.is_multiple_of(DIRECT_BLOCK) {
            return;
        }
        let path = {
            let index = shared.index.read().unwrap_or_else(|p| p.into_inner());
            match index.segments.last() {
                Some(segment) => segment.path.clone(),
                None => return,
            }
        };
        let options = ringtide_platform::OpenOptions::new()
            .write(true)
            .direct(true);
        let file = match shared.driver.open(&path, &options).await {
            Ok(file) => file,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::InvalidInput {
                    // The file system has no O_DIRECT (tmpfs): buffered writes from now on.
                    self.enabled = false;
                }
                tracing::debug!(error = %e, "wal: no direct I/O for this segment; buffered writes");
                return;
            }
        };
        let offset = active.write_offset;
        let block = offset - offset % DIRECT_BLOCK;
        let partial = usize::try_from(offset - block).expect("less than a block");
        let (res, bytes) = active
            .file
            .read_exact_at(BytesMut::with_capacity(partial), block)
            .await;
        if let Err(e) = res {
            tracing::debug!(error = %e, "wal: could not read the last block; buffered writes");
            return;
        }
        self.tail = DirectTail::On {
            file,
            tail: TailBlock {
                block,
                bytes: bytes.to_vec(),
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(block: u64, len: usize) -> TailBlock {
        TailBlock {
            block,
            bytes: vec![1; len],
        }
    }

    #[test]
    fn a_write_within_the_block_grows_the_tail() {
        let mut t = tail(4096, 100);
        assert!(t.advance(&[2; 50], 4196));
        assert_eq!(t.block, 4096);
        assert_eq!(t.bytes.len(), 150);
        assert_eq!(t.end(), 4246);
    }

    #[test]
    fn a_write_past_the_block_keeps_only_its_own_last_block() {
        let mut t = tail(4096, 100);
        let chunk: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        assert!(t.advance(&chunk, 4196));
        // Ends at 9196: the last block starts at 8192, 1004 bytes into it.
        assert_eq!(t.block, 8192);
        assert_eq!(t.bytes, chunk[8192 - 4196..]);
        // A write ending on a block boundary leaves an empty tail there.
        let mut t = tail(0, 96);
        assert!(t.advance(&[0; 4000], 96));
        assert_eq!((t.block, t.bytes.len()), (4096, 0));
    }

    #[test]
    fn a_write_elsewhere_is_refused() {
        let mut t = tail(4096, 100);
        let before = t.clone();
        assert!(!t.advance(&[2; 10], 4197));
        assert_eq!(t, before);
    }
}
