//! Frames: every length encoding × checksum × timestamps walks the input as recovery walks a
//! segment (`ringtide::wal::fuzz::decode_frames`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringtide::wal::fuzz::frame_decoder(data));
