//! The input as a small log directory (`ringtide::wal::fuzz::image_from_bytes`: a file count,
//! fix-up flags, then kind, length and bytes per file), recovered read-only and read-write under
//! both recovery modes (`ringtide::wal::fuzz::recover_image`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringtide::wal::fuzz::recovery(data));
