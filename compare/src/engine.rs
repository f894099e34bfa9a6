//! The engine traits: [`Engine`], the phases of redb's benchmark (`benches/kv.rs`), and
//! [`Ycsb`], the operations of the YCSB workloads on an engine whose memory is bounded
//! (`benches/ycsb.rs`).

use std::future::Future;
use std::ops::Range;
use std::path::Path;

use bytes::Bytes;

/// One engine under test. Every write transaction is durable when the future returns.
///
/// The methods are coarse (a whole transaction, or a whole loop of reads) and `async`, so that
/// one set of phases drives both kinds of engine: the peers' blocking implementations never
/// await, and their workers are OS threads polling them with a trivial executor; ringtide's
/// (`ASYNC = true`) are tokio tasks on a multi-thread runtime.
///
/// The pairs are those of [`kvdata::pair`](crate::kvdata::pair), named by their indexes.
pub trait Engine: Send + Sync + Sized + 'static {
    const NAME: &'static str;
    /// Workers are tokio tasks on a multi-thread runtime (2 workers) instead of OS threads.
    const ASYNC: bool = false;
    /// What the tables say of the engine's setup.
    const SETUP: &'static str;

    fn open(dir: &Path) -> impl Future<Output = Self> + Send;
    /// One transaction putting the pairs of `indexes`.
    fn put(&self, indexes: Range<u64>) -> impl Future<Output = ()> + Send;
    /// One transaction removing the keys of `indexes`.
    fn remove(&self, indexes: Range<u64>) -> impl Future<Output = ()> + Send;
    /// A point read of each key of `indexes`, all in one read transaction (snapshot) or each in
    /// a transaction of its own. Returns the sum of the first byte of the values read; panics on
    /// a missing key.
    fn get(&self, indexes: Range<u64>, txn_per_read: bool) -> impl Future<Output = u64> + Send;
    /// One read transaction; from each key of `indexes`, a forward range read of up to `len`
    /// entries. Returns the sum of the first byte of the values read.
    fn scan(&self, indexes: Range<u64>, len: usize) -> impl Future<Output = u64> + Send;
    /// One read-modify-write transaction adding 1 to the counter of key `i`'s value. Returns the
    /// retries it took (conflicts of an optimistic engine; 0 where writers are serialized).
    fn increment(&self, i: u64) -> impl Future<Output = u64> + Send;
    /// The engine also runs the contended row under snapshot isolation (a second row).
    const SNAPSHOT_ISOLATION: bool = false;
    /// As `increment`, under snapshot isolation where the engine offers it (`SNAPSHOT_ISOLATION`).
    fn increment_snapshot(&self, i: u64) -> impl Future<Output = u64> + Send {
        self.increment(i)
    }
    /// One read transaction: the wrapping sum of the counters of the keys of `indexes`.
    fn counters(&self, indexes: Range<u64>) -> impl Future<Output = u64> + Send;
    /// Closes the engine, waiting for its background work.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// How the YCSB comparison splits a memory budget between memtables and block cache, for the
/// engines that take sizes rather than a limit: one active memtable and `immutables` waiting
/// for their flush, each of `write_buffer` bytes, take 3/8 of the budget; the block cache takes
/// the rest (256 MiB: 3 × 32 MiB of memtables, 160 MiB of cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySplit {
    pub write_buffer: u64,
    pub immutables: usize,
    pub cache: u64,
}

impl MemorySplit {
    pub fn of(budget: u64) -> Self {
        let immutables = 2;
        let write_buffer = budget / 8;
        MemorySplit {
            write_buffer,
            immutables,
            cache: budget - (1 + immutables as u64) * write_buffer,
        }
    }
}

/// The operations of the YCSB workloads, on an engine opened with a memory budget. Writes are
/// written to the OS but not synced, unless `durable`. Keys and values are raw bytes; a value's
/// first 8 bytes are its record's number (little-endian), which reads return for checking.
pub trait Ycsb: Engine {
    /// What the report says of the engine's setup under `budget` bytes.
    fn ycsb_setup(budget: u64) -> String;
    /// Opens the engine in `dir`, memtables and block cache within `budget` bytes.
    fn open_bounded(dir: &Path, budget: u64) -> impl Future<Output = Self> + Send;
    /// A point read: the first 8 bytes of the value of `key`, or `None` if it is absent.
    fn read(&self, key: &[u8]) -> impl Future<Output = Option<u64>> + Send;
    /// One write of `key`, a transaction of its own; synced before it returns if `durable`.
    fn write(&self, key: Bytes, value: Bytes, durable: bool) -> impl Future<Output = ()> + Send;
    /// One transaction (not synced) of puts (`Some`) and deletes (`None`).
    fn write_batch(&self, batch: Vec<(Bytes, Option<Bytes>)>) -> impl Future<Output = ()> + Send;
    /// A forward scan of up to `len` entries from `key` (included) in one snapshot: the
    /// entries read.
    fn scan_from(&self, key: &[u8], len: usize) -> impl Future<Output = usize> + Send;
    /// Flushes the memtables and waits until the background work (flushes, compactions) has
    /// stopped.
    fn quiesce(&self) -> impl Future<Output = ()> + Send;
    /// The engine's own figures (counters since the open, or sizes now), for the log.
    fn figures(&self) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
    /// What [`Ycsb::compact`] runs, for the report.
    const COMPACTION: &'static str;
    /// The engine's largest compaction, run to its end.
    fn compact(&self) -> impl Future<Output = ()> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_fills_the_budget() {
        let m = MemorySplit::of(256 << 20);
        assert_eq!(m.write_buffer, 32 << 20);
        assert_eq!(m.cache, 160 << 20);
        assert_eq!(
            (1 + m.immutables as u64) * m.write_buffer + m.cache,
            256 << 20
        );
    }
}
