//! `Db::checkpoint`: an online, consistent copy of the store at one sequence number, which
//! opens as a store of its own.
//!
//! The memtables are flushed first, so that the tables hold every commit up to a seq `F` and
//! nothing above it; one state of the tree is then pinned (its tables cannot be removed while
//! pinned), its tables and the value-log files they point into hard-linked (copied across file
//! systems), and a manifest holding one
//! snapshot edit (the tables, `F`, the next transaction id) written beside them. Commits go on
//! meanwhile: those above `F` are not in the copy. The copy's wal starts empty (it is made, so
//! that the copy opens read-only too). Prepared transactions not yet resolved are not in the
//! copy (they are not committed data).
//!
//! Every file is written through the I/O executor and synced, the directories too, before the
//! call returns: a checkpoint that returned survives a crash.

use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use ringtide_platform::{IoDriver, OpenOptions};

use super::shared::Shared;
use super::tree::manifest::{Edit, Flushed, Manifest};
use crate::error::{Error, Result};
use crate::types::SeqNo;
use crate::wal::Wal;

/// Bytes copied per read.
const COPY_CHUNK_BYTES: usize = 1 << 20;

pub(crate) async fn checkpoint(shared: &Arc<Shared>, target: &Path) -> Result<SeqNo> {
    let driver = shared.tree.driver().clone();
    driver
        .create_dir(target)
        .await
        .map_err(|e| Error::io(target, e))?;
    shared.flush_now().await?;
    // One state: its oldest memtable starts right above what its tables hold.
    let current = shared.tree.current();
    let flushed = current.memtables.last().map_or(0, |slot| slot.after_seq);
    let tables_dir = target.join("tables");
    driver
        .create_dir(&tables_dir)
        .await
        .map_err(|e| Error::io(&tables_dir, e))?;
    let mut added = Vec::new();
    for t in current.version.tables() {
        let from = t.path();
        let name = from
            .file_name()
            .ok_or_else(|| Error::invalid("table path", "a table file without a name (a bug)"))?;
        let to = tables_dir.join(name);
        // A table is immutable: a second name for it is a copy that costs nothing. Across file
        // systems (or where links are refused) it is copied.
        if let Err(e) = driver.hard_link(&from, &to).await {
            tracing::debug!(error = %e, path = %from.display(), "linking a table failed: copying it");
            copy_file(&driver, &from, &to).await?;
        }
        added.push((t.level, t.id));
    }
    // The value-log files the tables point into: named by no edit, found through the tables.
    for b in current.version.blobs.values() {
        link_or_copy(&driver, b.path(), &tables_dir).await?;
    }
    sync_dir(&driver, &tables_dir).await?;
    let manifest = Manifest::open(
        &target.join("manifest"),
        shared.options.wal_options(),
        false,
    )
    .await?;
    let edit = Edit {
        flushed: Some(Flushed {
            seq: flushed,
            next_txn_id: shared.peek_next_txn_id(),
        }),
        snapshot: true,
        removed: Vec::new(),
        added,
        // Read with the shape its tables were written with.
        shape: Some(shared.tree.options.tiered_levels as u8),
    };
    let recorded = manifest.record(&edit).await;
    let closed = manifest.close().await;
    recorded.and(closed)?;
    // An empty wal: the copy opens read-only as well as read-write.
    let wal = Wal::open(target.join("wal"), shared.options.wal_options()).await?;
    wal.close().await?;
    sync_dir(&driver, target).await?;
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(&driver, parent).await?;
    }
    tracing::info!(dir = %target.display(), seq = flushed, "checkpoint written");
    Ok(SeqNo(flushed))
}

/// Hard-links an immutable file of the store into `dir` under its name, or copies it where a
/// link fails (e.g. across file systems).
async fn link_or_copy(driver: &IoDriver, from: &Path, dir: &Path) -> Result<()> {
    let name = from
        .file_name()
        .ok_or_else(|| Error::invalid("table path", "a file without a name (a bug)"))?;
    let to = dir.join(name);
    if let Err(e) = driver.hard_link(from, &to).await {
        tracing::debug!(error = %e, path = %from.display(), "linking failed: copying");
        copy_file(driver, from, &to).await?;
    }
    Ok(())
}

async fn sync_dir(driver: &IoDriver, dir: &Path) -> Result<()> {
    driver.sync_dir(dir).await.map_err(|e| Error::io(dir, e))
}

/// Copies a file through the executor and makes the copy's bytes durable.
async fn copy_file(driver: &IoDriver, from: &Path, to: &Path) -> Result<()> {
    let src = driver
        .open(from, &OpenOptions::new().read(true))
        .await
        .map_err(|e| Error::io(from, e))?;
    let dst = driver
        .open(to, &OpenOptions::new().write(true).create_new(true))
        .await
        .map_err(|e| Error::io(to, e))?;
    let len = src.len().await.map_err(|e| Error::io(from, e))?;
    let mut at = 0u64;
    while at < len {
        let n = COPY_CHUNK_BYTES.min((len - at) as usize);
        let (res, buf) = src.read_exact_at(BytesMut::with_capacity(n), at).await;
        res.map_err(|e| Error::io(from, e))?;
        let (res, _) = dst.write_all_at(buf.freeze(), at).await;
        res.map_err(|e| Error::io(to, e))?;
        at += n as u64;
    }
    dst.sync_data().await.map_err(|e| Error::io(to, e))?;
    dst.close().await.map_err(|e| Error::io(to, e))?;
    src.close().await.map_err(|e| Error::io(from, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fallback where a table cannot be linked: a copy, byte for byte, across several
    /// chunks; an existing target is refused.
    #[tokio::test]
    async fn copy_file_copies_every_byte_and_refuses_an_existing_target() {
        let dir = tempfile::tempdir().unwrap();
        let driver = IoDriver::new(Default::default()).unwrap();
        let (from, to) = (dir.path().join("from"), dir.path().join("to"));
        let data: Vec<u8> = (0..(COPY_CHUNK_BYTES * 2 + 123))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&from, &data).unwrap();
        copy_file(&driver, &from, &to).await.unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), data);
        assert!(copy_file(&driver, &from, &to).await.is_err());
    }
}
