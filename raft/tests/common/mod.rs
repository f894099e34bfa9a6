//! Helpers shared by the tests of `ringtide-raft`.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different subset"
)]

use ringtide::platform::Backend;

/// Whether `RINGTIDE_IO_BACKEND` lets this run cover `backend` (unset: both backends).
pub fn covers(backend: Backend) -> bool {
    match std::env::var(ringtide::platform::BACKEND_ENV) {
        Ok(only) => {
            let only: Backend = only.parse().expect("RINGTIDE_IO_BACKEND names a backend");
            only == Backend::Auto || only == backend
        }
        Err(_) => true,
    }
}

/// A number from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
