//! The key-value store's value-log files (key-value separation): any bytes, read as pointers and
//! a file image, are checked without a panic, and a value is accepted only where it lies in the
//! file and matches its pointer's checksum (`ringtide::kv::fuzz::value_log_decoder`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringtide::kv::fuzz::value_log_decoder(data));
