//! The input as a segment header and as the meta file (`ringtide::wal::fuzz::decode_segment_header`
//! and `decode_meta`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringtide::wal::fuzz::segment_header(data));
