//! The log store and the state machine driven directly, on each I/O backend: what openraft's
//! suite does not reach — large appends and applies, damaged snapshots received or found at
//! open, abandoned snapshot streams, and the state kept across a reopen.

mod common;

use std::io::SeekFrom;

use common::covers;
use openraft::storage::{RaftLogStorageExt, RaftStateMachine};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StoredMembership,
};
use ringtide::platform::{Backend, DriverOptions, IoDriver};
use ringtide_raft::{NodeId, Request, StorageOptions, TypeConfig, open_storage};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn put(index: u64, key: &str, value: Vec<u8>) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(Request::Put {
            key: key.as_bytes().to_vec(),
            value,
        }),
    }
}

fn options(backend: Backend) -> StorageOptions {
    let driver =
        IoDriver::new(DriverOptions::default().use_env(false).backend(backend)).expect("driver");
    StorageOptions::default().driver(driver)
}

async fn large_appends_and_applies(backend: Backend) {
    let dir = tempfile::tempdir().expect("dir");
    let (mut log, mut sm) = open_storage(dir.path(), options(backend))
        .await
        .expect("open");
    // 40 entries of 1 MiB: more than one wal call (16 MiB) and one apply transaction (32 MiB).
    let entries: Vec<_> = (0..40)
        .map(|i| put(i, &format!("k{i:02}"), vec![i as u8; 1 << 20]))
        .collect();
    log.blocking_append(entries.clone()).await.expect("append");
    let back = log.try_get_log_entries(0..40).await.expect("read");
    assert_eq!(back.len(), 40);
    assert!(back.iter().zip(&entries).all(|(a, b)| a.log_id == b.log_id));
    sm.apply(entries).await.expect("apply");
    assert_eq!(
        sm.applied_state().await.expect("state").0,
        Some(log_id(1, 39))
    );
    let reader = sm.reader();
    assert_eq!(
        reader.get("k39").await.expect("get").map(|v| v.len()),
        Some(1 << 20)
    );
}

async fn damaged_snapshots_are_refused_and_leave_the_old_state(backend: Backend) {
    let dir = tempfile::tempdir().expect("dir");
    let (log, mut sm) = open_storage(dir.path(), options(backend))
        .await
        .expect("open");
    sm.apply([put(1, "a", b"1".to_vec())]).await.expect("apply");
    let before = sm.applied_state().await.expect("state");
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(2, 10)),
        last_membership: StoredMembership::new(
            Some(log_id(1, 0)),
            Membership::new(vec![[1u64].into()], None),
        ),
        snapshot_id: "../../escape".into(),
    };
    // Garbage: not a snapshot.
    let mut file = sm.begin_receiving_snapshot().await.expect("begin");
    file.write_all(b"not a ringtide snapshot at all")
        .await
        .expect("write");
    let err = sm.install_snapshot(&meta, file).await;
    assert!(err.is_err(), "garbage must be refused");
    assert_eq!(sm.applied_state().await.expect("state"), before);
    // A real snapshot of another state machine, its bytes cut short.
    let other = tempfile::tempdir().expect("dir");
    let (_l2, mut sm2) = open_storage(other.path(), options(backend))
        .await
        .expect("open");
    sm2.apply([put(10, "b", vec![7; 5000])])
        .await
        .expect("apply");
    let built = sm2
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let mut file = sm.begin_receiving_snapshot().await.expect("begin");
    let mut src = *built.snapshot;
    src.seek(SeekFrom::Start(0)).await.expect("seek");
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut src, &mut bytes)
        .await
        .expect("read");
    file.write_all(&bytes[..bytes.len() - 7])
        .await
        .expect("write");
    assert!(sm.install_snapshot(&built.meta, file).await.is_err());
    assert_eq!(sm.applied_state().await.expect("state"), before);
    // Its header, then a record that claims 1 GiB: refused before anything that large is
    // allocated (the stream holds a few bytes).
    let meta_len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    let mut claim = bytes[..12 + meta_len].to_vec();
    claim.extend_from_slice(&1u32.to_le_bytes());
    claim.extend_from_slice(&(1u32 << 30).to_le_bytes());
    claim.extend_from_slice(b"k");
    let mut file = sm.begin_receiving_snapshot().await.expect("begin");
    file.write_all(&claim).await.expect("write");
    let err = sm
        .install_snapshot(&built.meta, file)
        .await
        .expect_err("a claim past the end");
    assert!(err.to_string().contains("left"), "{err}");
    assert_eq!(sm.applied_state().await.expect("state"), before);
    assert_eq!(
        sm.reader().get("a").await.expect("get").as_deref(),
        Some(&b"1"[..])
    );
    // The whole of it installs, whatever its id says about paths.
    let mut file = sm.begin_receiving_snapshot().await.expect("begin");
    file.write_all(&bytes).await.expect("write");
    let mut meta = built.meta.clone();
    meta.snapshot_id = "../../escape".into();
    sm.install_snapshot(&meta, file).await.expect("install");
    assert_eq!(sm.reader().get("a").await.expect("get"), None);
    assert_eq!(
        sm.reader().get("b").await.expect("get").map(|v| v.len()),
        Some(5000)
    );
    // Only the current snapshot's file is left (the refused and abandoned streams are gone),
    // and nothing escaped the snapshot directory.
    let files: Vec<_> = std::fs::read_dir(dir.path().join("snapshots"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(!dir.path().join("escape.snap").exists());
    // A damaged current snapshot found at open is dropped, not fatal.
    log.wal().close().await.expect("close the log");
    sm.db().close().await.expect("close the store");
    drop((log, sm));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let snap = dir.path().join("snapshots").join(&files[0]);
    std::fs::write(&snap, b"RTSNAP01\xff\xff\xff\xff").expect("damage");
    let (_log, mut sm) = open_storage(dir.path(), options(backend))
        .await
        .expect("reopen");
    assert!(sm.get_current_snapshot().await.expect("current").is_none());
    assert_eq!(
        sm.reader().get("b").await.expect("get").map(|v| v.len()),
        Some(5000),
        "the state machine keeps the installed data"
    );
}

macro_rules! on_both_backends {
    ($($name:ident),*) => {$(
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn io_uring() {
                if covers(Backend::IoUring) {
                    super::$name(Backend::IoUring).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn threadpool() {
                if covers(Backend::ThreadPool) {
                    super::$name(Backend::ThreadPool).await;
                }
            }
        }
    )*};
}

on_both_backends!(
    large_appends_and_applies,
    damaged_snapshots_are_refused_and_leave_the_old_state
);
