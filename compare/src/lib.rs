//! Comparison benchmarks: ringtide's write-ahead log against okaywal, fjall and redb
//! (`benches/wal_compare.rs`), and key-value stores, the phases of redb's benchmark on fjall,
//! redb, LMDB and RocksDB (`benches/kv.rs`).
//!
//! Run them with `cargo bench --manifest-path compare/Cargo.toml --bench wal_compare` (or
//! `--bench kv`); see compare/README.md. This library is empty.
