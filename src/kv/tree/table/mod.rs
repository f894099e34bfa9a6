//! Tables (SSTables): immutable sorted files of internal keys `(bucket id, user key, seq)` →
//! value or tombstone, the LSM's on-disk unit. This part holds the codecs of their blocks
//! (`block.rs`), bloom filter (`filter.rs`), meta block and footer (`format.rs`).

#![cfg_attr(
    not(test),
    allow(
        dead_code,
        unused_imports,
        reason = "the API of flush and the levels, which come next; tested until then"
    )
)]

mod block;
mod filter;
mod format;
