//! The key-value store's tables: any bytes, read as a table image, open and read without a panic
//! (errors are `Corruption`, scans in order); read as entries, they are written and read back
//! equal to a model (`ringtide::kv::fuzz::table_decoder`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringtide::kv::fuzz::table_decoder(data));
