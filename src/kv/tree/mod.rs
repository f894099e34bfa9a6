//! The storage under the transactions, which knows nothing of transactions or buckets:
//! internal keys `(bucket id, user key, seq)` → value or tombstone. Part 1 of the store holds
//! them in the memtable alone; tables, flush and compaction slot in here.

pub(crate) mod memtable;
pub(crate) mod table;
