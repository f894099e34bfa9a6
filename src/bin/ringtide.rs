//! The `ringtide` command: inspect, dump, verify and truncate write-ahead logs; look into,
//! dump, flush and compact key-value stores.
//!
//! `wal inspect`, `wal dump`, `wal verify`, `kv stats`, `kv dump` and `kv verify` open read-only: they take
//! no lock and change no file (a torn tail is reported, not cut). `wal truncate-front`,
//! `wal truncate-back`, `kv flush` and `kv compact` open for writing.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool talks to its user"
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use ringtide::CorruptionKind;
use ringtide::kv::{Db, DbOptions, TxnOptions};
use ringtide::wal::{Lsn, Wal, WalOptions};

#[derive(Parser)]
#[command(name = "ringtide", version, about = "Tools for ringtide storage files")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write-ahead log tools.
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
    /// Key-value store tools.
    Kv {
        #[command(subcommand)]
        command: KvCommand,
    },
}

#[derive(Subcommand)]
enum KvCommand {
    /// The store's figures: seqs, memtables, levels, flushes, compactions, caches, its wal.
    Stats {
        /// The store's directory.
        dir: PathBuf,
    },
    /// Prints the keys and values of the root keyspace or of a bucket, one line each.
    Dump {
        /// The store's directory.
        dir: PathBuf,
        /// A bucket path, nested buckets separated by `/` (default: the root keyspace).
        #[arg(long)]
        bucket: Option<String>,
        /// One JSON object per entry: key and value as UTF-8 text (`key`, `value`) or, if not
        /// text, as hex (`key_hex`, `value_hex`).
        #[arg(long)]
        json: bool,
    },
    /// Reads every table back and checks it (checksums, order, meta), then the wal; exit code 0
    /// if all is sound, 1 if not (each damaged table is named with the offset of the damage).
    Verify {
        /// The store's directory.
        dir: PathBuf,
    },
    /// Flushes the memtable to a table (the wal is cut below it), then compacts what is due.
    Flush {
        /// The store's directory.
        dir: PathBuf,
    },
    /// Compacts L0 into L1, then every level over its target.
    Compact {
        /// The store's directory.
        dir: PathBuf,
        /// Compacts everything into the last level instead (overwritten versions and
        /// tombstones dropped, their space reclaimed).
        #[arg(long)]
        full: bool,
    },
    /// Writes a consistent copy of the store into a new directory (tables hard-linked where
    /// they can be) and prints the sequence number it holds; the copy opens as a store.
    Checkpoint {
        /// The store's directory.
        dir: PathBuf,
        /// The copy's directory (must not exist).
        target: PathBuf,
    },
}

#[derive(Subcommand)]
enum WalCommand {
    /// Segments, lsn ranges, sizes, format, and a torn tail if there is one.
    Inspect {
        /// The log directory.
        dir: PathBuf,
    },
    /// Prints entries, one line each.
    Dump {
        /// The log directory.
        dir: PathBuf,
        /// First lsn to print (default: the log's first).
        #[arg(long)]
        from: Option<u64>,
        /// Last lsn to print (default: the log's last).
        #[arg(long)]
        to: Option<u64>,
        /// One JSON object per entry: lsn, term, timestamp_us, len, and data as UTF-8 text
        /// (`data`) or, if it is not text, as hex (`data_hex`).
        #[arg(long)]
        json: bool,
    },
    /// Checks every header and every frame's checksum; exit code 0 if all are sound, 1 if not
    /// (a torn tail too: what a crash left of writes never acknowledged as durable, which the
    /// next open for writing cuts).
    Verify {
        /// The log directory.
        dir: PathBuf,
    },
    /// Drops every entry below LSN.
    TruncateFront {
        /// The log directory.
        dir: PathBuf,
        /// The new first lsn.
        lsn: u64,
    },
    /// Drops every entry after LSN.
    TruncateBack {
        /// The log directory.
        dir: PathBuf,
        /// The new last lsn.
        lsn: u64,
    },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn inspect(dir: PathBuf) -> ringtide::Result<()> {
    let wal = Wal::open_read_only(&dir, WalOptions::default()).await?;
    let format = wal.format();
    let stats = wal.stats();
    println!("log          {}", dir.display());
    println!(
        "format       version {}, length {:?}, checksum {:?}, timestamps {:?}",
        format.version, format.length_encoding, format.checksum, format.timestamps
    );
    println!(
        "lsns         {}..={} ({} entries)",
        stats.first_lsn,
        stats.last_lsn,
        stats.last_lsn.0 + 1 - stats.first_lsn.0
    );
    println!("segments     {}", stats.segments);
    for s in wal.segments() {
        let last = s.first_lsn.0 + s.entries;
        let range = if s.entries == 0 {
            "empty".to_string()
        } else {
            format!("{}..={}", s.first_lsn, last - 1)
        };
        println!(
            "  {}  lsn {range}  {} entries, {} data bytes, {} file bytes",
            s.path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            s.entries,
            s.data_bytes,
            s.file_bytes
        );
    }
    match &stats.torn_tail {
        Some(t) => println!(
            "torn tail    in {} at offset {}: {} bytes, {} entries of an incomplete batch (cut at the next open for writing)",
            t.file.display(),
            t.offset,
            t.bytes,
            t.dropped_entries
        ),
        None => println!("torn tail    none"),
    }
    Ok(())
}

async fn dump(
    dir: PathBuf,
    from: Option<u64>,
    to: Option<u64>,
    json: bool,
) -> ringtide::Result<()> {
    let wal = Wal::open_read_only(&dir, WalOptions::default()).await?;
    let from = from.map_or(wal.first_lsn(), Lsn);
    let to = to.map_or(wal.last_lsn(), Lsn);
    let mut stream = wal.stream(from);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    while let Some(entry) = stream.next().await {
        let e = entry?;
        if e.lsn > to {
            break;
        }
        let text = std::str::from_utf8(&e.data).ok();
        let line = if json {
            let mut obj = serde_json::Map::new();
            obj.insert("lsn".into(), e.lsn.0.into());
            obj.insert(
                "term".into(),
                e.term.map_or(serde_json::Value::Null, Into::into),
            );
            obj.insert(
                "timestamp_us".into(),
                e.timestamp_us.map_or(serde_json::Value::Null, Into::into),
            );
            obj.insert("len".into(), e.data.len().into());
            match text {
                Some(t) => obj.insert("data".into(), t.into()),
                None => obj.insert("data_hex".into(), hex(&e.data).into()),
            };
            serde_json::Value::Object(obj).to_string()
        } else {
            let term = e.term.map(|t| format!(" term={t}")).unwrap_or_default();
            let body = text.map_or_else(|| format!("hex:{}", hex(&e.data)), |t| format!("{t:?}"));
            format!("{}{term} len={} {body}", e.lsn, e.data.len())
        };
        if writeln!(out, "{line}").is_err() {
            // The reader went away (e.g. `| head`): stop quietly.
            return Ok(());
        }
    }
    let _ = out.flush();
    Ok(())
}

async fn verify(dir: PathBuf) -> ringtide::Result<bool> {
    // Opening scans every segment: headers, frames, checksums, lsn continuity.
    let wal = Wal::open_read_only(&dir, WalOptions::default()).await?;
    let (first, last) = (wal.first_lsn(), wal.last_lsn());
    let total = last.0 + 1 - first.0;
    let bar = if total > 100_000 {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} entries {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    // Reading every entry back checks each checksum again, through the read path.
    let report = wal
        .check_integrity(|p| bar.set_position(p.entries_checked))
        .await?;
    bar.finish_and_clear();
    let seen = report.entries;
    match &report.problem {
        None => println!(
            "{}: {seen} entries in {} segments, lsns {first}..={last}, every checksum sound",
            dir.display(),
            report.segments
        ),
        // Not every checksum is sound: say where, and what recovery makes of it.
        Some(p) => match p.kind {
            CorruptionKind::TornTail { bytes } => println!(
                "{}: {seen} entries in {} segments, lsns {first}..={last} sound; then a torn tail in {} at offset {} ({bytes} bytes): data never acknowledged as durable, cut at the next open for writing",
                dir.display(),
                report.segments,
                p.file.display(),
                p.offset,
            ),
            _ => eprintln!("ringtide: {p}"),
        },
    }
    Ok(report.problem.is_none() && seen == total)
}

/// Options to open an existing log for writing with: its own segment size (the smallest of its
/// segment files; larger ones were made for large calls), so that recovery does not give its last
/// segment the default size.
async fn options_of(dir: &Path) -> ringtide::Result<WalOptions> {
    let wal = Wal::open_read_only(dir, WalOptions::default()).await?;
    let size = wal.segments().iter().map(|s| s.file_bytes).min();
    wal.close().await?;
    let options = WalOptions::default();
    Ok(match size {
        Some(size) => options.segment_size_bytes(size.clamp(64 << 10, 1 << 30)),
        None => options,
    })
}

async fn truncate(dir: PathBuf, lsn: u64, front: bool) -> ringtide::Result<()> {
    let wal = Wal::open(&dir, options_of(&dir).await?).await?;
    if front {
        wal.truncate_front(Lsn(lsn)).await?;
    } else {
        wal.truncate_back(Lsn(lsn)).await?;
    }
    println!(
        "{}: lsns now {}..={}",
        dir.display(),
        wal.first_lsn(),
        wal.last_lsn()
    );
    wal.close().await
}

async fn kv_stats(dir: PathBuf) -> ringtide::Result<()> {
    let db = Db::open_read_only(&dir, DbOptions::default()).await?;
    println!("store        {}", dir.display());
    print!("{}", db.stats());
    db.close().await
}

fn text_or_hex(name: &str, bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => format!("\"{name}\":{}", serde_json::Value::from(text)),
        Err(_) => format!("\"{name}_hex\":\"{}\"", hex(bytes)),
    }
}

async fn kv_dump(dir: PathBuf, bucket: Option<String>, json: bool) -> ringtide::Result<()> {
    let db = Db::open_read_only(&dir, DbOptions::default()).await?;
    let txn = db.begin(TxnOptions::default().read_only(true))?;
    let mut scan = match bucket.as_deref() {
        None | Some("") | Some("/") => txn.scan::<&[u8]>(..),
        Some(path) => {
            let mut names = path.split('/').filter(|n| !n.is_empty());
            let first = names.next().unwrap_or_default();
            let not_found = || ringtide::Error::BucketNotFound {
                name: path.to_string(),
            };
            let mut b = txn.bucket(first).await?.ok_or_else(not_found)?;
            for name in names {
                b = b.bucket(name).await?.ok_or_else(not_found)?;
            }
            b.scan::<&[u8]>(..)
        }
    };
    let mut out = std::io::stdout().lock();
    while let Some(entry) = scan.next().await {
        let (k, v) = entry?;
        let line = if json {
            format!(
                "{{{},{}}}",
                text_or_hex("key", &k),
                text_or_hex("value", &v)
            )
        } else {
            format!(
                "{} = {}",
                String::from_utf8_lossy(&k),
                String::from_utf8_lossy(&v)
            )
        };
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    drop(scan);
    txn.rollback().await?;
    db.close().await
}

async fn kv_verify(dir: PathBuf) -> ringtide::Result<bool> {
    let db = Db::open_read_only(&dir, DbOptions::default()).await?;
    let total: u64 = db.stats().levels.iter().map(|l| l.tables).sum();
    let bar = if total > 4 {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} tables {msg} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let report = db
        .check_integrity(|p| {
            bar.set_position(p.tables_checked);
            bar.set_message(format!("{} versions", p.entries_checked));
        })
        .await?;
    bar.finish_and_clear();
    for p in &report.problems {
        eprintln!("ringtide: {p}");
    }
    if let Some(p) = &report.wal.problem {
        eprintln!("ringtide: wal: {p}");
    }
    if report.is_sound() {
        println!(
            "{}: {} tables ({} bytes, {} versions) and {} wal entries, every checksum sound",
            dir.display(),
            report.tables,
            report.table_bytes,
            report.entries,
            report.wal.entries
        );
    }
    db.close().await?;
    Ok(report.is_sound())
}

/// What `kv flush` and `kv compact` do.
enum Maintain {
    Flush,
    Compact,
    CompactFull,
}

async fn kv_maintain(dir: PathBuf, work: Maintain) -> ringtide::Result<()> {
    let db = Db::open(&dir, DbOptions::default()).await?;
    match work {
        Maintain::Flush => db.flush().await?,
        Maintain::Compact => db.compact().await?,
        Maintain::CompactFull => db.compact_full().await?,
    }
    let levels: Vec<String> = db
        .stats()
        .levels
        .iter()
        .enumerate()
        .map(|(n, l)| format!("L{n} {} tables, {} bytes", l.tables, l.bytes))
        .collect();
    println!("{}: {}", dir.display(), levels.join("; "));
    db.close().await
}

async fn kv_checkpoint(dir: PathBuf, target: PathBuf) -> ringtide::Result<()> {
    let db = Db::open(&dir, DbOptions::default()).await?;
    let seq = db.checkpoint(&target).await?;
    println!(
        "{}: checkpoint of {} at seq {seq}",
        target.display(),
        dir.display()
    );
    db.close().await
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ringtide: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Wal { command } => match command {
                WalCommand::Inspect { dir } => inspect(dir).await.map(|()| true),
                WalCommand::Dump {
                    dir,
                    from,
                    to,
                    json,
                } => dump(dir, from, to, json).await.map(|()| true),
                WalCommand::Verify { dir } => verify(dir).await,
                WalCommand::TruncateFront { dir, lsn } => {
                    truncate(dir, lsn, true).await.map(|()| true)
                }
                WalCommand::TruncateBack { dir, lsn } => {
                    truncate(dir, lsn, false).await.map(|()| true)
                }
            },
            Command::Kv { command } => match command {
                KvCommand::Stats { dir } => kv_stats(dir).await.map(|()| true),
                KvCommand::Dump { dir, bucket, json } => {
                    kv_dump(dir, bucket, json).await.map(|()| true)
                }
                KvCommand::Verify { dir } => kv_verify(dir).await,
                KvCommand::Flush { dir } => kv_maintain(dir, Maintain::Flush).await.map(|()| true),
                KvCommand::Compact { dir, full } => {
                    let work = if full {
                        Maintain::CompactFull
                    } else {
                        Maintain::Compact
                    };
                    kv_maintain(dir, work).await.map(|()| true)
                }
                KvCommand::Checkpoint { dir, target } => {
                    kv_checkpoint(dir, target).await.map(|()| true)
                }
            },
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ringtide: {e}");
            ExitCode::FAILURE
        }
    }
}
