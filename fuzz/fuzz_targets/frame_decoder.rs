//! Frames: in every length encoding × checksum × timestamps, the input walked by recovery's own
//! frame walk, the walk and every frame on it checked against the codec
//! (`ringtide::wal::fuzz::decode_frames`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringtide::wal::fuzz::frame_decoder(data));
