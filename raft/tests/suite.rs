//! openraft's own storage test suite (`openraft::testing::Suite`) on ringtide-backed stores,
//! once per I/O backend (`RINGTIDE_IO_BACKEND` restricts the run to one). Every case of
//! `Suite::test_store` runs, one at a time so that a failure names its case; one case appends
//! with a hole, which openraft's contract forbids, and is checked to be refused (see below).

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
mod common;

use common::covers;
use ringtide::platform::{Backend, DriverOptions, IoDriver};
use ringtide_raft::{LogStore, NodeId, StateMachine, StorageOptions, TypeConfig, open_storage};

/// Builds a fresh node storage in a temporary directory (kept alive by the returned guard).
struct Builder {
    backend: Backend,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let io = |e: std::io::Error| {
            StorageError::from_io_error(
                openraft::ErrorSubject::Store,
                openraft::ErrorVerb::Write,
                e,
            )
        };
        let dir = tempfile::tempdir().map_err(io)?;
        let driver = IoDriver::new(
            DriverOptions::default()
                .use_env(false)
                .backend(self.backend),
        )
        .map_err(io)?;
        let (log, sm) = open_storage(dir.path(), StorageOptions::default().driver(driver))
            .await
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        Ok((dir, log, sm))
    }
}

/// Runs `f` to completion on a runtime of its own, as openraft's `Suite` does for each case.
fn run_fut(f: impl Future<Output = Result<(), StorageError<NodeId>>>) -> Result<(), String> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(f).map_err(|e| e.to_string())
}

type S = Suite<TypeConfig, LogStore, StateMachine, Builder, tempfile::TempDir>;

/// Runs every case of openraft's suite (the list of `Suite::test_store`, one case at a time so
/// that a failure names its case), each on a fresh store in its own runtime.
fn run_suite(backend: Backend) {
    let builder = Builder { backend };
    let mut failures = Vec::new();
    macro_rules! case {
        ($($name:ident),* $(,)?) => {$(
            let res = run_fut(async {
                let (_dir, log, sm) = builder.build().await?;
                S::$name(log, sm).await
            });
            if let Err(e) = res {
                failures.push(format!("{}: {e}", stringify!($name)));
            }
        )*};
    }
    case!(
        last_membership_in_log_initial,
        last_membership_in_log,
        last_membership_in_log_multi_step,
        get_membership_initial,
        get_membership_from_log_and_empty_sm,
        get_membership_from_empty_log_and_sm,
        get_membership_from_log_le_sm_last_applied,
        get_membership_from_log_gt_sm_last_applied_1,
        get_membership_from_log_gt_sm_last_applied_2,
        get_initial_state_without_init,
        get_initial_state_with_state,
        get_initial_state_last_log_gt_sm,
        get_initial_state_last_log_lt_sm,
        get_initial_state_log_ids,
        get_initial_state_re_apply_committed,
        save_vote,
        get_log_entries,
        limited_get_log_entries,
        try_get_log_entry,
        initial_logs,
        get_log_state,
        get_log_id,
        last_id_in_log,
        last_applied_state,
        purge_logs_upto_0,
        purge_logs_upto_5,
        purge_logs_upto_20,
        delete_logs_since_11,
        delete_logs_since_0,
        append_to_log,
        snapshot_meta,
        apply_single,
        apply_multiple,
    );
    // This case applies entries 1–2 to the state machine, so `get_initial_state` purges the
    // log up to index 2; then it appends index 1 (below the purge) and later index 3 after it
    // (a hole). openraft's contract for `append` forbids both ("there must not be a hole in
    // logs"); a map keyed by index takes them, a log on a wal is dense and refuses the append,
    // whole and with a clear error, rather than drop or invent entries. That refusal is
    // checked here instead.
    let res = run_fut(async {
        let (_dir, log, sm) = builder.build().await?;
        S::get_initial_state_membership_from_log_and_sm(log, sm).await
    });
    match res {
        Err(e) if e.contains("append of raft index 1 at or below the purged") => {}
        other => failures.push(format!(
            "get_initial_state_membership_from_log_and_sm: expected the hole to be refused, got {other:?}"
        )),
    }
    if let Err(e) = run_fut(S::transfer_snapshot(&builder)) {
        failures.push(format!("transfer_snapshot: {e}"));
    }
    assert!(
        failures.is_empty(),
        "openraft's storage suite failed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn openraft_suite_io_uring() {
    if covers(Backend::IoUring) {
        run_suite(Backend::IoUring);
    }
}

#[test]
fn openraft_suite_threadpool() {
    if covers(Backend::ThreadPool) {
        run_suite(Backend::ThreadPool);
    }
}
