//! Helpers shared by the integration tests: one test body, run on each I/O backend.
//! `elle` checks recorded transaction histories for isolation anomalies.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different subset"
)]

use ringtide::platform::{Backend, DriverOptions, IoDriver};

pub mod elle;

/// The segment files of a log directory, in log order.
pub fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .expect("log dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    out.sort();
    out
}

/// Removes the clean-close record `close` leaves in `wal.meta` (every byte after its first 48),
/// leaving the meta file as a crash leaves it: a crash writes no such record.
pub fn strip_clean_close(dir: &std::path::Path) {
    let path = dir.join("wal.meta");
    let bytes = std::fs::read(&path).expect("wal.meta");
    std::fs::write(&path, &bytes[..bytes.len().min(48)]).expect("write wal.meta");
}

/// Where the entries of the closed log in `dir` end in its last segment (opened read-only with
/// `options`).
pub async fn wal_data_end(
    dir: &std::path::Path,
    options: ringtide::wal::WalOptions,
) -> ringtide::Result<u64> {
    let wal = ringtide::wal::Wal::open_read_only(dir, options).await?;
    let end = wal.segments().pop().expect("a segment").data_bytes;
    wal.close().await?;
    Ok(end)
}

/// The driver for `backend`, or `None` when `RINGTIDE_IO_BACKEND` restricts the run to the other
/// one.
pub fn driver_for(backend: Backend) -> Option<IoDriver> {
    if let Ok(only) = std::env::var(ringtide::platform::BACKEND_ENV) {
        let only: Backend = only
            .parse()
            .expect("RINGTIDE_IO_BACKEND must name a backend");
        if only != Backend::Auto && only != backend {
            return None;
        }
    }
    let driver = IoDriver::new(DriverOptions::default().use_env(false).backend(backend))
        .expect("driver starts");
    Some(driver)
}

/// Generates `mod io_uring` and `mod threadpool`, each with one `#[tokio::test]` per named
/// `async fn(IoDriver) -> ringtide::Result<()>` of the parent module.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod io_uring {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> ringtide::Result<()> {
                    match $crate::common::driver_for(ringtide::platform::Backend::IoUring) {
                        Some(driver) => super::$name(driver).await,
                        None => Ok(()),
                    }
                }
            )*
        }
        mod threadpool {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> ringtide::Result<()> {
                    match $crate::common::driver_for(ringtide::platform::Backend::ThreadPool) {
                        Some(driver) => super::$name(driver).await,
                        None => Ok(()),
                    }
                }
            )*
        }
    };
}

/// Options of a log on the simulated disk: small segments (so workloads rotate), a short lock
/// timeout.
#[cfg(feature = "sim")]
pub fn sim_options(
    disk: &ringtide::platform::sim::SimDisk,
    policy: ringtide::wal::SyncPolicy,
) -> ringtide::wal::WalOptions {
    ringtide::wal::WalOptions::default()
        .driver(disk.driver())
        .sync_policy(policy)
        .segment_size_bytes(64 << 10)
        .lock_timeout(std::time::Duration::from_millis(10))
}

/// `RINGTIDE_SIM_TRACE` (an env-filter, e.g. `trace`) prints every simulated disk operation and
/// the layers' events.
pub fn sim_trace() {
    if let Ok(filter) = std::env::var("RINGTIDE_SIM_TRACE") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A number from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// For the child of a `kill -9` loop: writes one line to stdout and flushes it, in one `write`
/// of a whole line, so the parent never sees half a line unless the child dies inside it.
pub fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes()).expect("stdout");
    out.flush().expect("stdout");
}

/// For the child of a `kill -9` loop: io_uring unless the run is restricted to the thread pool,
/// the pool where io_uring is missing; says which (`backend ...`) to the parent.
pub fn child_driver() -> IoDriver {
    let only_pool = std::env::var(ringtide::platform::BACKEND_ENV)
        .ok()
        .and_then(|b| b.parse::<Backend>().ok())
        == Some(Backend::ThreadPool);
    let options = DriverOptions::default().use_env(false);
    if only_pool {
        say("backend threadpool (RINGTIDE_IO_BACKEND=threadpool)\n");
        return IoDriver::new(options.backend(Backend::ThreadPool)).expect("thread pool driver");
    }
    match IoDriver::new(options.clone().backend(Backend::IoUring)) {
        Ok(driver) => {
            say("backend io_uring\n");
            driver
        }
        Err(e) => {
            say(&format!(
                "backend threadpool (io_uring unavailable: {e}; fell back)\n"
            ));
            IoDriver::new(options.backend(Backend::ThreadPool)).expect("thread pool driver")
        }
    }
}
