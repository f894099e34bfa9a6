//! The key-value store's manifest edits: any bytes, read as a sequence of edits, decode to errors
//! or edits that re-encode to their own bytes, and replay without a panic
//! (`ringtide::kv::fuzz::manifest_decoder`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringtide::kv::fuzz::manifest_decoder(data));
