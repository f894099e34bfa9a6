//! openraft's own storage test suite (`openraft::testing::Suite`) on ringtide-backed stores,
//! once per I/O backend (`RINGTIDE_IO_BACKEND` restricts the run to one).

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
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

/// Whether `RINGTIDE_IO_BACKEND` lets this run cover `backend`.
fn covers(backend: Backend) -> bool {
    match std::env::var(ringtide::platform::BACKEND_ENV) {
        Ok(only) => {
            let only: Backend = only.parse().expect("RINGTIDE_IO_BACKEND names a backend");
            only == Backend::Auto || only == backend
        }
        Err(_) => true,
    }
}

#[test]
fn openraft_suite_io_uring() {
    if !covers(Backend::IoUring) {
        return;
    }
    if let Err(e) = Suite::test_all(Builder {
        backend: Backend::IoUring,
    }) {
        panic!("openraft's storage suite failed: {e}");
    }
}

#[test]
fn openraft_suite_threadpool() {
    if !covers(Backend::ThreadPool) {
        return;
    }
    if let Err(e) = Suite::test_all(Builder {
        backend: Backend::ThreadPool,
    }) {
        panic!("openraft's storage suite failed: {e}");
    }
}
