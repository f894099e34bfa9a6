//! The key-value store's wal records: any bytes decode to an error or a chunk that re-encodes to
//! the same writes (`ringtide::kv::fuzz::record_decoder`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringtide::kv::fuzz::record_decoder(data));
