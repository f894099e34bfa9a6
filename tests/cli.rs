//! The `ringtide` command on real logs: inspect, dump (text and JSON), verify (exit code 0 on a
//! sound log, 1 on a damaged one), truncate at both ends. Runs the built binary as a child.

#![cfg(feature = "cli")]

mod common;

use std::process::Command;

use ringtide::wal::{Lsn, Record, Wal, WalOptions};

fn ringtide(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringtide"))
        .args(args)
        .output()
        .expect("run ringtide");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_command_inspects_dumps_verifies_and_truncates() -> ringtide::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("log");
    let wal = Wal::open(&dir, WalOptions::default().segment_size_bytes(64 << 10)).await?;
    for i in 1..=300u64 {
        wal.append(Record::with_term(
            i / 100,
            format!("entry {i}").into_bytes(),
        ))
        .await?;
    }
    wal.append(vec![0xffu8, 0x00, 0x80]).await?;
    wal.close().await?;
    let d = dir.to_str().unwrap();

    let (ok, out, _) = ringtide(&["wal", "inspect", d]);
    assert!(ok);
    assert!(out.contains("1..=301 (301 entries)"), "{out}");
    assert!(out.contains("torn tail    none"), "{out}");
    assert!(out.contains("format       version 1,"), "{out}");

    let (ok, out, _) = ringtide(&["wal", "dump", d, "--from", "299", "--to", "301"]);
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("299 term=2 len=9 \"entry 299\""),
        "{out}"
    );
    assert!(lines[2].ends_with("hex:ff0080"), "{out}");

    let (ok, out, _) = ringtide(&["wal", "dump", d, "--from", "100", "--to", "100", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["lsn"], 100);
    assert_eq!(v["term"], 1);
    assert_eq!(v["data"], "entry 100");

    let (ok, out, _) = ringtide(&["wal", "verify", d]);
    assert!(ok, "{out}");
    assert!(out.contains("301 entries"), "{out}");

    // Damage a frame in the first segment: verify fails with file and offset.
    let first = common::segments(&dir).first().cloned().unwrap();
    let mut bytes = std::fs::read(&first)?;
    bytes[200] ^= 0xff;
    std::fs::write(&first, &bytes)?;
    let (ok, _, err) = ringtide(&["wal", "verify", d]);
    assert!(!ok, "verify must fail on damage");
    assert!(
        err.contains("corruption in") && err.contains("at offset"),
        "{err}"
    );
    bytes[200] ^= 0xff;
    std::fs::write(&first, &bytes)?;

    // Stray bytes past the last frame (what a crash leaves of an unsynced write): a torn tail,
    // reported, exit code 1; an open for writing cuts it.
    let last = common::segments(&dir).last().cloned().unwrap();
    let mut bytes = std::fs::read(&last)?;
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    bytes[end + 1..end + 9].copy_from_slice(b"torn!!!!");
    std::fs::write(&last, &bytes)?;
    let (ok, out, _) = ringtide(&["wal", "verify", d]);
    assert!(!ok, "verify must fail on a torn tail: {out}");
    assert!(
        out.contains("301 entries") && out.contains("torn tail in"),
        "{out}"
    );
    Wal::open(&dir, WalOptions::default().segment_size_bytes(64 << 10))
        .await?
        .close()
        .await?;
    let (ok, out, _) = ringtide(&["wal", "verify", d]);
    assert!(ok && !out.contains("torn"), "{out}");

    let (ok, out, _) = ringtide(&["wal", "truncate-back", d, "250"]);
    assert!(ok, "{out}");
    let (ok, out, _) = ringtide(&["wal", "truncate-front", d, "10"]);
    assert!(ok, "{out}");
    let wal = Wal::open_read_only(&dir, WalOptions::default()).await?;
    assert_eq!((wal.first_lsn(), wal.last_lsn()), (Lsn(10), Lsn(250)));
    // The truncations opened the log with its own segment size, not the default 64 MiB.
    for s in wal.segments() {
        assert_eq!(s.file_bytes, 64 << 10, "{s:?}");
    }
    wal.close().await
}

#[tokio::test]
async fn the_command_looks_into_dumps_flushes_and_compacts_a_store() -> ringtide::Result<()> {
    use ringtide::kv::{Db, DbOptions, TxnOptions};
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("store");
    let db = Db::open(&dir, DbOptions::default()).await?;
    let txn = db.begin(TxnOptions::default())?;
    for i in 0..50u32 {
        txn.put(format!("k{i:03}"), format!("v{i}"))?;
    }
    let eu = txn
        .create_bucket("users")
        .await?
        .create_bucket("eu")
        .await?;
    eu.put("alice", vec![0xffu8, 0x00])?;
    txn.commit().await?;
    db.close().await?;
    let d = dir.to_str().unwrap();

    let (ok, out, _) = ringtide(&["kv", "flush", d]);
    assert!(ok, "{out}");
    assert!(out.contains("L0 1 tables"), "{out}");
    let (ok, out, _) = ringtide(&["kv", "compact", d]);
    assert!(ok, "{out}");
    assert!(
        out.contains("L0 0 tables") && out.contains("L1 1 tables"),
        "{out}"
    );

    let (ok, out, err) = ringtide(&["kv", "verify", d]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("1 tables") && out.contains("every checksum sound"),
        "{out}"
    );

    let (ok, out, _) = ringtide(&["kv", "stats", d]);
    assert!(ok, "{out}");
    assert!(out.contains("flushes / compactions"), "{out}");

    let (ok, out, _) = ringtide(&["kv", "compact", d, "--full"]);
    assert!(ok, "{out}");
    assert!(out.contains("L1 1 tables"), "{out}");
    // A checkpoint: a copy that dumps the same.
    let copy = tmp.path().join("copy");
    let c = copy.to_str().unwrap();
    let (ok, out, err) = ringtide(&["kv", "checkpoint", d, c]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("at seq"), "{out}");
    let (ok, out, err) = ringtide(&["kv", "dump", c]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 50, "{out}");
    let (ok, _, err) = ringtide(&["kv", "checkpoint", d, c]);
    assert!(!ok, "a checkpoint into an existing directory is refused");
    assert!(err.contains("exists"), "{err}");

    let (ok, out, _) = ringtide(&["kv", "dump", d]);
    assert!(ok);
    assert_eq!(out.lines().count(), 50, "{out}");
    assert_eq!(out.lines().next(), Some("k000 = v0"));
    let (ok, out, _) = ringtide(&["kv", "dump", d, "--bucket", "users/eu", "--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["key"], "alice");
    assert_eq!(v["value_hex"], "ff00");
    let (ok, _, err) = ringtide(&["kv", "dump", d, "--bucket", "nope"]);
    assert!(!ok);
    assert!(err.contains("nope"), "{err}");

    // A damaged table: verify names it and fails.
    let table = std::fs::read_dir(dir.join("tables"))?
        .next()
        .expect("a table")?
        .path();
    let mut bytes = std::fs::read(&table)?;
    bytes[10] ^= 0x01;
    std::fs::write(&table, &bytes)?;
    let (ok, _, err) = ringtide(&["kv", "verify", d]);
    assert!(!ok);
    assert!(err.contains(&*table.to_string_lossy()), "{err}");
    Ok(())
}
