//! How long opening a small log takes: 32,000 entries of 256 B in one 64 MiB segment (the
//! default options), opened after a clean `close` and after a crash, read-write and read-only.
//!
//! The crashed log is the closed one with what a crash would not have left: the seal `close`
//! writes after the last entry and the clean-close record in `wal.meta` (the first 48 bytes of
//! `wal.meta` are the meta file as every other writer of it leaves it). Each timed open is
//! followed by a `close` that is not timed; the crashed log is a fresh copy for every open, since
//! a `close` records a clean close.
//!
//! Run: `cargo run --release --example wal_open [-- DIR [RUNS [KIND]]]` (default: a temporary
//! directory in the current one, on the disk under test, 9 runs, every kind of open; KIND keeps
//! the kinds whose name contains it, e.g. `clean`). Prints, per kind of open, the range and the
//! median in milliseconds.

#![allow(clippy::print_stdout, reason = "an example reports to its user")]

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use ringtide::platform::{DriverOptions, IoDriver};
use ringtide::wal::{Wal, WalOptions};

const ENTRIES: u64 = 32_000;
const ENTRY: usize = 256;
const BATCH: u64 = 1_000;

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let p = e?.path();
        let name = p.file_name().expect("a file name");
        if name != "LOCK" {
            std::fs::copy(&p, to.join(name))?;
            std::fs::File::open(to.join(name))?.sync_all()?;
        }
    }
    Ok(())
}

/// Makes `dir` look like a crash after the last append: no seal, no clean-close record.
fn as_crashed(dir: &Path, data_end: u64) -> std::io::Result<()> {
    let meta = dir.join("wal.meta");
    let bytes = std::fs::read(&meta)?;
    std::fs::write(&meta, &bytes[..48])?;
    let seg = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<PathBuf>>>()?
        .into_iter()
        .find(|p| p.extension().is_some_and(|x| x == "wal"))
        .expect("a segment");
    let f = std::fs::OpenOptions::new().write(true).open(seg)?;
    std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 64], data_end)?;
    f.sync_all()
}

fn report(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{what:<28} min {:7.2} ms  median {:7.2} ms  max {:7.2} ms  ({} runs)",
        ms[0],
        ms[ms.len() / 2],
        ms[ms.len() - 1],
        ms.len()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ringtide::Result<()> {
    let mut args = std::env::args().skip(1);
    let tmp = tempfile::tempdir_in(".")?;
    let root = args
        .next()
        .map_or_else(|| tmp.path().to_path_buf(), PathBuf::from);
    let runs: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(9);
    let only = args.next().unwrap_or_default();
    let clean = root.join("clean");
    let _ = std::fs::remove_dir_all(&clean);
    let wal = Wal::open(&clean, WalOptions::default()).await?;
    let payload = Bytes::from(vec![0x5au8; ENTRY]);
    for _ in 0..ENTRIES / BATCH {
        wal.append_batch((0..BATCH).map(|_| payload.clone()))
            .await?;
    }
    let info = wal.segments();
    assert_eq!(info.len(), 1, "one segment");
    let data_end = info[0].data_bytes;
    wal.close().await?;
    println!(
        "log: {ENTRIES} entries of {ENTRY} B, {data_end} bytes in one segment of 64 MiB \
         (the default options)"
    );

    let crashed = root.join("crashed");
    let mut times: Vec<(&str, Vec<f64>)> = vec![
        ("clean, read-write", vec![]),
        ("clean, read-only", vec![]),
        ("crashed, read-write", vec![]),
        ("crashed, read-only", vec![]),
        ("clean, read-only, driver", vec![]),
        ("IoDriver::new alone", vec![]),
    ];
    let driver = IoDriver::new(DriverOptions::default())?;
    times.retain(|(kind, _)| kind.contains(only.as_str()));
    for _ in 0..runs {
        for (kind, ms) in &mut times {
            if *kind == "IoDriver::new alone" {
                let t = Instant::now();
                let d = IoDriver::new(DriverOptions::default())?;
                ms.push(t.elapsed().as_secs_f64() * 1e3);
                d.shutdown().await;
                continue;
            }
            let (dir, crash, read_only) = match *kind {
                "clean, read-write" => (&clean, false, false),
                "clean, read-only" | "clean, read-only, driver" => (&clean, false, true),
                "crashed, read-write" => (&crashed, true, false),
                _ => (&crashed, true, true),
            };
            let options = if kind.ends_with("driver") {
                WalOptions::default().driver(driver.clone())
            } else {
                WalOptions::default()
            };
            if crash {
                copy_dir(&clean, &crashed)?;
                as_crashed(&crashed, data_end)?;
            }
            let t = Instant::now();
            let wal = if read_only {
                Wal::open_read_only(dir, options).await?
            } else {
                Wal::open(dir, options).await?
            };
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(wal.last_lsn().0, ENTRIES);
            wal.close().await?;
        }
    }
    for (kind, ms) in times {
        report(kind, ms);
    }
    Ok(())
}
