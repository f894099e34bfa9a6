//! Comparison benchmarks: ringtide's write-ahead log against okaywal, fjall and redb
//! (`benches/wal_compare.rs`); key-value stores, the phases of redb's benchmark on fjall, redb,
//! LMDB and RocksDB (`benches/kv.rs`); YCSB's workloads on a data set larger than the memory
//! the engines may use, ringtide against fjall (`benches/ycsb.rs`); and large values with
//! key-value separation on and off, ringtide against fjall (`benches/values.rs`).
//!
//! Run them with `cargo bench --manifest-path compare/Cargo.toml --bench wal_compare` (or
//! `--bench kv`, `--bench ycsb`, `--bench values`); see compare/README.md. This library holds
//! what the key-value, YCSB and large-value benches share: the engine traits and the engines both run (ringtide,
//! fjall), the child-process plumbing, the measurements and the tables' number formats.

pub mod child;
pub mod engine;
pub mod exec;
pub mod fjall;
pub mod fmt;
pub mod hist;
pub mod kvdata;
pub mod measure;
#[cfg(feature = "ringtide-kv")]
pub mod ringtide_kv;
pub mod zipf;

pub use engine::{Engine, MemorySplit, Ycsb};
