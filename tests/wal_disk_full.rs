//! Out of space on a real file system: a 4 MiB tmpfs is mounted (this needs root; where mounting
//! is refused the test says so and returns), a log fills it, and the appends that find no room
//! for a new segment must fail with `Error::DiskFull` — not poison the log, not consume lsns —
//! and succeed again once space is freed. Both I/O backends.

#![allow(clippy::print_stderr, reason = "tests report what they skip")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use ringtide::platform::IoDriver;
use ringtide::wal::{Lsn, Wal, WalOptions};
use ringtide::{Error, Result};

both_backends!(appends_fail_cleanly_when_the_disk_is_full_and_resume_after);

/// A mounted tmpfs, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status();
        match status {
            Ok(s) if s.success() => Some(Tmpfs {
                dir: dir.to_path_buf(),
            }),
            other => {
                eprintln!("cannot mount a tmpfs here ({other:?}); the disk-full test is skipped");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn entry(i: u64) -> Bytes {
    Bytes::from(format!("{i:08}").repeat(25))
}

async fn appends_fail_cleanly_when_the_disk_is_full_and_resume_after(
    driver: IoDriver,
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let Some(fs) = Tmpfs::mount(&tmp.path().join("mnt"), "4m") else {
        return Ok(());
    };
    let filler = fs.dir.join("filler");
    std::fs::write(&filler, vec![1u8; 1 << 20])?;
    let opts = WalOptions::default()
        .driver(driver.clone())
        .segment_size_bytes(512 << 10);
    let dir = fs.dir.join("log");
    let wal = Wal::open(&dir, opts.clone()).await?;
    let mut last = Lsn(0);
    let full = loop {
        match wal.append(entry(last.0 + 1)).await {
            Ok(lsn) => {
                assert_eq!(lsn, last.next(), "lsns stay dense");
                last = lsn;
                assert!(last.0 < 1_000_000, "the 4 MiB file system never filled up");
            }
            Err(e) => break e,
        }
    };
    assert!(
        matches!(full, Error::DiskFull { .. }),
        "out of space must be DiskFull, got {full:?}"
    );
    // Not poisoned: the same error again, nothing consumed, reads work.
    assert!(matches!(
        wal.append(entry(last.0 + 1)).await,
        Err(Error::DiskFull { .. })
    ));
    assert_eq!(wal.last_lsn(), last);
    assert_eq!(wal.read(last).await?.data, entry(last.0));
    // Space returns: appends resume at the next lsn.
    std::fs::remove_file(&filler)?;
    assert_eq!(wal.append(entry(last.0 + 1)).await?, last.next());
    wal.close().await?;
    let wal = Wal::open(&dir, opts).await?;
    assert_eq!(wal.last_lsn(), last.next());
    for e in wal.range(..).await? {
        assert_eq!(e.data, entry(e.lsn.0));
    }
    eprintln!(
        "{:?}: {} entries filled the file system; DiskFull, then resumed",
        driver.backend(),
        last.0
    );
    wal.close().await?;
    drop(fs);
    Ok(())
}
