//! Comparison benchmark of ringtide's write-ahead log against okaywal, fjall and redb.
//!
//! Everything lives in `benches/wal_compare.rs`; run it with
//! `cargo bench --manifest-path compare/Cargo.toml`. This library is empty.
