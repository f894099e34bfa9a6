//! What the child processes measure of themselves (resident set, bytes written, files on disk),
//! and the pause between phases.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::thread;
use std::time::Duration;

/// A field of `/proc/self/status`, KiB (0 if absent).
fn status_kib(name: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// (VmRSS, RssAnon) of this process, KiB.
pub fn rss_kib() -> (u64, u64) {
    (status_kib("VmRSS:"), status_kib("RssAnon:"))
}

/// The peak resident set of this process so far (VmHWM), KiB.
pub fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

/// Resets the peak resident set (VmHWM) to the current one (`5` written to
/// `/proc/self/clear_refs`, Linux 4.0 and later), so that the next [`peak_rss_kib`] is the peak
/// since now. Returns whether the kernel took it.
pub fn reset_peak_rss() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Bytes this process (all its threads, io_uring's workers included) has caused to be written
/// to storage: `write_bytes` of `/proc/self/io` (counted when a page is dirtied, or at a direct
/// write). `None` where the kernel does not account it.
pub fn io_write_bytes() -> Option<u64> {
    fs::read_to_string("/proc/self/io")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Bytes allocated to the files under `dir`, recursively (blocks, not lengths: fjall's journal
/// is a sparse file of a preset length).
pub fn disk_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| entry_bytes(&e)).sum())
        .unwrap_or(0)
}

/// [`disk_bytes`] of each entry of `dir` (file or directory), largest first.
pub fn disk_bytes_by_entry(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        entry_bytes(&e),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v
}

/// The bytes allocated to a file, or to the files under a directory.
fn entry_bytes(e: &fs::DirEntry) -> u64 {
    use std::os::unix::fs::MetadataExt;
    match e.metadata() {
        Ok(m) if m.is_dir() => disk_bytes(&e.path()),
        Ok(m) => m.blocks() * 512,
        Err(_) => 0,
    }
}

/// Lets earlier phases' (or engines') writeback drain: `syncfs` of the file system holding
/// `dir`, then a short pause, so that one phase's dirty pages do not slow the next one's fsyncs.
pub fn settle(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        // SAFETY: `d` owns a valid open descriptor for the whole call.
        unsafe { libc::syncfs(d.as_raw_fd()) };
    }
    thread::sleep(Duration::from_millis(300));
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
