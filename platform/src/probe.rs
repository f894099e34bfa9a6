//! Decides at run time whether io_uring can be used: the sysctl, ring creation, and every opcode
//! the driver submits. Under [`Backend::Auto`](crate::Backend::Auto) a failure selects the thread
//! pool, and the reason is logged once per process.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

/// Why io_uring cannot be used.
#[derive(Debug)]
pub(crate) struct ProbeFailure {
    reason: String,
    kind: io::ErrorKind,
    errno: Option<i32>,
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl ProbeFailure {
    fn new(reason: impl Into<String>, kind: io::ErrorKind) -> ProbeFailure {
        ProbeFailure {
            reason: reason.into(),
            kind,
            errno: None,
        }
    }

    fn from_io(context: &str, err: &io::Error) -> ProbeFailure {
        ProbeFailure {
            reason: format!("{context}: {err}"),
            kind: err.kind(),
            errno: err.raw_os_error(),
        }
    }

    /// The error to return when io_uring was asked for explicitly.
    pub(crate) fn into_error(self) -> io::Error {
        let msg = format!("io_uring is not available: {}", self.reason);
        match self.errno {
            Some(errno) => io::Error::new(io::Error::from_raw_os_error(errno).kind(), msg),
            None => io::Error::new(self.kind, msg),
        }
    }
}

/// Logs, once per process, that `Auto` fell back to the thread pool and why.
pub(crate) fn report_fallback(failure: &ProbeFailure) {
    static REPORTED: AtomicBool = AtomicBool::new(false);
    if !REPORTED.swap(true, Ordering::Relaxed) {
        tracing::warn!(reason = %failure, "io_uring unavailable; ringtide uses its thread-pool I/O backend");
    } else {
        tracing::debug!(reason = %failure, "io_uring unavailable; thread-pool I/O backend");
    }
}

/// A ring that passed the probe, ready to be driven.
#[cfg(target_os = "linux")]
pub(crate) struct UringReady {
    pub(crate) ring: io_uring::IoUring,
    /// `IORING_OP_FTRUNCATE` (Linux 6.9); without it `set_len` runs on the pool.
    pub(crate) ftruncate: bool,
}

/// No ring exists off Linux.
#[cfg(not(target_os = "linux"))]
pub(crate) enum UringReady {}

/// Creates a ring of `entries` submission slots and checks that it can run every operation the
/// driver submits.
#[cfg(target_os = "linux")]
pub(crate) fn uring(entries: u32, force_failure: bool) -> Result<UringReady, ProbeFailure> {
    use io_uring::{IoUring, Probe, opcode};

    if force_failure {
        return Err(ProbeFailure::new(
            "probe failure forced by the driver options",
            io::ErrorKind::Unsupported,
        ));
    }
    // 0: allowed; 1: only for the io_uring_group; 2: disabled for all. Ring creation below gives
    // the definite answer for 1; 2 is reported by name because EPERM alone is puzzling.
    if let Ok(value) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        && value.trim() == "2"
    {
        return Err(ProbeFailure::new(
            "the sysctl kernel.io_uring_disabled is 2",
            io::ErrorKind::PermissionDenied,
        ));
    }
    // The completion queue is twice the submission queue, and no more submissions than
    // `entries` are ever in flight, so completions cannot overflow.
    let ring = IoUring::builder()
        .setup_cqsize(entries * 2)
        .build(entries)
        .map_err(|e| ProbeFailure::from_io("creating a ring failed (ENOSYS: kernel without io_uring; EPERM: forbidden by seccomp or sysctl; ENOMEM: locked-memory limit)", &e))?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe).map_err(|e| {
        ProbeFailure::from_io(
            "probing io_uring opcodes failed (kernel older than 5.6?)",
            &e,
        )
    })?;
    let required = [
        ("read", opcode::Read::CODE),
        ("write", opcode::Write::CODE),
        ("writev", opcode::Writev::CODE),
        ("fsync", opcode::Fsync::CODE),
        ("fallocate", opcode::Fallocate::CODE),
        ("openat", opcode::OpenAt::CODE),
        ("close", opcode::Close::CODE),
        ("statx", opcode::Statx::CODE),
        ("renameat", opcode::RenameAt::CODE),
        ("unlinkat", opcode::UnlinkAt::CODE),
        ("mkdirat", opcode::MkDirAt::CODE),
    ];
    let missing: Vec<&str> = required
        .iter()
        .filter(|(_, code)| !probe.is_supported(*code))
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        return Err(ProbeFailure::new(
            format!(
                "the kernel's io_uring lacks {} (needs Linux 5.15 or later)",
                missing.join(", ")
            ),
            io::ErrorKind::Unsupported,
        ));
    }
    let ftruncate = probe.is_supported(opcode::Ftruncate::CODE);
    Ok(UringReady { ring, ftruncate })
}

/// Off Linux there is no io_uring.
#[cfg(not(target_os = "linux"))]
pub(crate) fn uring(_entries: u32, _force_failure: bool) -> Result<UringReady, ProbeFailure> {
    Err(ProbeFailure::new(
        "io_uring exists only on Linux",
        io::ErrorKind::Unsupported,
    ))
}
