//! The I/O executor's contract, checked with the same test bodies on both backends.
//!
//! Method: each test is an `async fn(IoDriver) -> io::Result<()>`; the `both_backends!` macro runs
//! it once with io_uring and once with the thread pool, on a multi-threaded tokio runtime. When
//! `RINGTIDE_IO_BACKEND` is set, only that backend's variants run (the others return at once), so
//! the suite also passes on a kernel without io_uring.

#![allow(clippy::print_stderr, reason = "tests report what they measured")]

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use ringtide_platform::{Backend, DriverOptions, File, IoDriver, OpenOptions, aligned_bytes_mut};

/// The driver for `backend`, or `None` when the environment restricts the run to the other one.
fn driver_for(backend: Backend, options: DriverOptions) -> Option<IoDriver> {
    if let Ok(only) = std::env::var(ringtide_platform::BACKEND_ENV) {
        let only: Backend = only
            .parse()
            .expect("RINGTIDE_IO_BACKEND must name a backend");
        if only != Backend::Auto && only != backend {
            return None;
        }
    }
    let driver = IoDriver::new(options.backend(backend)).expect("driver starts");
    assert_eq!(driver.backend(), backend);
    Some(driver)
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod io_uring {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> std::io::Result<()> {
                    match super::driver_for(ringtide_platform::Backend::IoUring, super::options()) {
                        Some(driver) => super::$name(driver).await,
                        None => Ok(()),
                    }
                }
            )*
        }
        mod threadpool {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> std::io::Result<()> {
                    match super::driver_for(ringtide_platform::Backend::ThreadPool, super::options()) {
                        Some(driver) => super::$name(driver).await,
                        None => Ok(()),
                    }
                }
            )*
        }
    };
}

both_backends!(
    every_operation_round_trips,
    short_reads_at_end_of_file,
    errors_keep_their_kind,
    closed_file_fails_with_ebadf_in_every_clone,
    many_tasks_on_a_multi_thread_runtime,
    dropped_futures_release_their_slots_and_buffers,
    timeouts_around_operations_leave_the_driver_working,
    writev_beyond_iov_max_and_with_empty_buffers,
    direct_io_with_aligned_buffers,
    shutdown_waits_for_in_flight_operations,
    hard_links_share_a_file_and_outlive_its_first_name,
);

fn options() -> DriverOptions {
    DriverOptions::default().use_env(false)
}

fn rw_create() -> OpenOptions {
    OpenOptions::new().read(true).write(true).create(true)
}

async fn read_all(file: &File) -> io::Result<Vec<u8>> {
    let len = file.len().await? as usize;
    let (res, buf) = file.read_exact_at(BytesMut::with_capacity(len), 0).await;
    res?;
    Ok(buf.to_vec())
}

/// Waits until no operation is in flight, failing after 10 s.
async fn wait_idle(driver: &IoDriver) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while driver.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{} operations still in flight after 10 s",
            driver.in_flight()
        )
    });
}

async fn every_operation_round_trips(driver: IoDriver) -> io::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("a/b/c");
    driver.create_dir_all(&dir).await?;
    driver.create_dir_all(&dir).await?; // existing: not an error
    let path = dir.join("data");
    let file = driver.open(&path, &rw_create()).await?;
    assert_eq!(file.path(), path);

    let (res, buf) = file.write_at(Bytes::from_static(b"hello"), 0).await;
    assert_eq!(res?, 5);
    assert_eq!(&buf[..], b"hello");
    let (res, _) = file.write_all_at(Bytes::from_static(b", world"), 5).await;
    res?;
    let (res, bufs) = file
        .writev_at(
            vec![Bytes::from_static(b"! "), Bytes::from_static(b"abc")],
            12,
        )
        .await;
    assert_eq!(res?, 5);
    assert_eq!(bufs.len(), 2);
    let (res, _) = file
        .writev_sync_at(vec![Bytes::from_static(b"def")], 17)
        .await;
    assert_eq!(res?, 3);
    let (res, _) = file
        .writev_dsync_at(vec![Bytes::from_static(b"gh")], 20)
        .await;
    assert_eq!(res?, 2);
    file.set_len(20).await?;
    file.sync_data().await?;
    file.sync_all().await?;
    assert_eq!(file.len().await?, 20);
    assert_eq!(read_all(&file).await?, b"hello, world! abcdef");

    // read_at appends to what the buffer holds and reads at most its spare capacity.
    let mut buf = BytesMut::with_capacity(8);
    buf.extend_from_slice(b">>");
    let (res, buf) = file.read_at(buf, 7).await;
    assert_eq!(res?, 6);
    assert_eq!(&buf[..], b">>world!");

    file.allocate(0, 1 << 20).await?;
    assert_eq!(file.len().await?, 1 << 20);
    file.set_len(20).await?;
    assert_eq!(file.len().await?, 20);
    file.set_len(30).await?;
    assert_eq!(read_all(&file).await?[20..], [0u8; 10]);

    let moved = dir.join("moved");
    driver.rename(&path, &moved).await?;
    driver.sync_dir(&dir).await?;
    let names: Vec<_> = driver
        .read_dir(&dir)
        .await?
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(names, vec![moved.clone()]);
    assert!(
        driver.read_dir(tmp.path().join("a")).await?[0].kind == ringtide_platform::EntryKind::Dir
    );

    // The open file follows the rename.
    let (res, buf) = file.read_exact_at(BytesMut::with_capacity(5), 0).await;
    res?;
    assert_eq!(&buf[..], b"hello");
    file.close().await?;

    driver.remove_file(&moved).await?;
    driver.remove_dir(&dir).await?;
    assert!(driver.read_dir(tmp.path().join("a/b")).await?.is_empty());
    Ok(())
}

async fn short_reads_at_end_of_file(driver: IoDriver) -> io::Result<()> {
    let tmp = tempfile::tempdir()?;
    let file = driver.open(tmp.path().join("f"), &rw_create()).await?;
    let (res, _) = file
        .write_all_at(Bytes::from_static(b"0123456789"), 0)
        .await;
    res?;

    let (res, buf) = file.read_at(BytesMut::with_capacity(100), 4).await;
    assert_eq!(res?, 6, "a read across the end returns what is there");
    assert_eq!(&buf[..], b"456789");

    let (res, buf) = file.read_at(BytesMut::with_capacity(10), 10).await;
    assert_eq!(res?, 0, "a read at the end returns 0");
    assert!(buf.is_empty());
    let (res, _) = file.read_at(BytesMut::with_capacity(10), 1 << 40).await;
    assert_eq!(res?, 0, "a read past the end returns 0");

    let (res, buf) = file.read_exact_at(BytesMut::with_capacity(8), 5).await;
    let err = res.expect_err("read_exact_at across the end fails");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(&buf[..], b"56789", "the buffer keeps what was read");

    // A full buffer reads nothing, successfully.
    let mut full = BytesMut::with_capacity(4);
    full.extend_from_slice(b"full");
    let (res, full) = file.read_at(full, 0).await;
    assert_eq!(res?, 0);
    assert_eq!(&full[..], b"full");
    Ok(())
}

async fn errors_keep_their_kind(driver: IoDriver) -> io::Result<()> {
    let tmp = tempfile::tempdir()?;
    let missing = tmp.path().join("missing");
    let read_only = OpenOptions::new().read(true);

    let err = driver.open(&missing, &read_only).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert_eq!(
        driver.remove_file(&missing).await.unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(
        driver
            .rename(&missing, tmp.path().join("x"))
            .await
            .unwrap_err()
            .kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(
        driver.sync_dir(&missing).await.unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(
        driver.read_dir(&missing).await.unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(
        driver
            .create_dir(missing.join("a/b"))
            .await
            .unwrap_err()
            .kind(),
        io::ErrorKind::NotFound
    );

    let path = tmp.path().join("f");
    let file = driver.open(&path, &rw_create()).await?;
    let (res, _) = file.write_all_at(Bytes::from_static(b"data"), 0).await;
    res?;
    let err = driver
        .open(&path, &rw_create().create_new(true))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    let err = driver.create_dir_all(path.join("sub")).await.unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
    let err = driver.create_dir_all(&path).await.unwrap_err();
    assert_eq!(
        err.kind(),
        io::ErrorKind::AlreadyExists,
        "a file where a directory should be"
    );

    // Writing through a descriptor opened read-only: EBADF, and the buffer comes back.
    let ro = driver.open(&path, &read_only).await?;
    let (res, buf) = ro.write_at(Bytes::from_static(b"nope"), 0).await;
    assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EBADF));
    assert_eq!(&buf[..], b"nope");
    let (res, bufs) = ro
        .writev_sync_at(vec![Bytes::from_static(b"nope")], 0)
        .await;
    assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EBADF));
    assert_eq!(bufs.len(), 1);
    assert_eq!(
        ro.set_len(0).await.unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(read_all(&ro).await?, b"data", "nothing was lost");

    let err = driver
        .open(tmp.path(), &OpenOptions::new().write(true))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::IsADirectory);
    let err = driver.open(&path, &OpenOptions::new()).await.unwrap_err();
    assert_eq!(
        err.kind(),
        io::ErrorKind::InvalidInput,
        "neither read nor write"
    );
    let err = driver
        .open(&path, &OpenOptions::new().read(true).create(true))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        io::ErrorKind::InvalidInput,
        "create without write"
    );
    let err = driver
        .open(tmp.path().join("nul\0byte"), &rw_create())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    Ok(())
}

async fn closed_file_fails_with_ebadf_in_every_clone(driver: IoDriver) -> io::Result<()> {
    let tmp = tempfile::tempdir()?;
    let file = driver.open(tmp.path().join("f"), &rw_create()).await?;
    let clone = file.clone();
    file.close().await?;
    let (res, buf) = clone.read_at(BytesMut::with_capacity(4), 0).await;
    assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EBADF));
    assert_eq!(buf.capacity(), 4, "the buffer comes back");
    let (res, _) = clone.write_at(Bytes::from_static(b"x"), 0).await;
    assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EBADF));
    let (res, _) = clone
        .writev_sync_at(vec![Bytes::from_static(b"x")], 0)
        .await;
    assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EBADF));
    assert_eq!(
        clone.sync_data().await.unwrap_err().raw_os_error(),
        Some(libc::EBADF)
    );
    assert_eq!(
        clone.len().await.unwrap_err().raw_os_error(),
        Some(libc::EBADF)
    );
    assert_eq!(
        clone.allocate(0, 10).await.unwrap_err().raw_os_error(),
        Some(libc::EBADF)
    );
    assert_eq!(
        clone.set_len(0).await.unwrap_err().raw_os_error(),
        Some(libc::EBADF)
    );
    clone.close().await?;
    Ok(())
}

async fn many_tasks_on_a_multi_thread_runtime(driver: IoDriver) -> io::Result<()> {
    const TASKS: u64 = 32;
    const BLOCKS: u64 = 64;
    const BLOCK: usize = 4096;
    let tmp = tempfile::tempdir()?;
    let file = driver.open(tmp.path().join("shared"), &rw_create()).await?;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let file = file.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..BLOCKS {
                let offset = (b * TASKS + t) * BLOCK as u64;
                let fill = (t * 7 + b) as u8;
                let data = Bytes::from(vec![fill; BLOCK]);
                let (res, _) = if b % 8 == 0 {
                    let (res, _) = file.writev_sync_at(vec![data], offset).await;
                    (res.map(drop), ())
                } else {
                    let (res, _) = file.write_all_at(data, offset).await;
                    (res, ())
                };
                res?;
                let (res, buf) = file
                    .read_exact_at(BytesMut::with_capacity(BLOCK), offset)
                    .await;
                res?;
                assert!(
                    buf.iter().all(|&x| x == fill),
                    "task {t} block {b} reads back what it wrote"
                );
            }
            io::Result::Ok(())
        }));
    }
    for task in tasks {
        task.await.expect("task panicked")?;
    }
    assert_eq!(file.len().await?, TASKS * BLOCKS * BLOCK as u64);
    wait_idle(&driver).await;
    Ok(())
}

async fn dropped_futures_release_their_slots_and_buffers(driver: IoDriver) -> io::Result<()> {
    // The bar: at least this many operations dropped while the kernel or a pool thread had them.
    const MID_FLIGHT_MIN: u64 = 10_000;
    // Dropped futures in all: a few complete before the drop (page-cache hits, idle syncs).
    const DROPPED_MAX: usize = 200_000;
    // Below tokio's cooperative budget (128), so that every first poll may take a slot.
    const ROUND: usize = 100;
    let tmp = tempfile::tempdir()?;
    let file = driver.open(tmp.path().join("f"), &rw_create()).await?;
    let (res, _) = file.write_all_at(Bytes::from(vec![1u8; 1 << 16]), 0).await;
    res?;
    // Every write buffer shares this owner: when the count is back to 1, no buffer leaked.
    let owner = Arc::new(vec![7u8; 4096]);
    let payload = || Bytes::from_owner(OwnedSlice(owner.clone()));

    let before = driver.stats();
    let mut dropped = 0;
    while driver.stats().abandoned - before.abandoned < MID_FLIGHT_MIN {
        assert!(
            dropped < DROPPED_MAX,
            "too few futures were dropped mid-flight: {:?}",
            driver.stats()
        );
        for i in 0..ROUND {
            let offset = ((dropped + i) % 16) as u64 * 4096;
            // Each future is polled once, so it acquires its slot and submits, then dropped.
            let polled = match i % 6 {
                0 => file
                    .read_at(BytesMut::with_capacity(4096), offset)
                    .map(|(r, _)| r.map(drop))
                    .boxed()
                    .now_or_never(),
                1 => file
                    .write_all_at(payload(), offset)
                    .map(|(r, _)| r)
                    .boxed()
                    .now_or_never(),
                2 | 4 => file
                    .writev_sync_at(vec![payload(), payload()], offset)
                    .map(|(r, _)| r.map(drop))
                    .boxed()
                    .now_or_never(),
                3 => file.sync_data().boxed().now_or_never(),
                _ => file.allocate(offset, 8192).boxed().now_or_never(),
            };
            if let Some(res) = polled {
                res?;
            }
        }
        dropped += ROUND;
        // Let the round drain so the next one finds free slots and really submits, and yield to
        // renew the task's cooperative budget.
        wait_idle(&driver).await;
        tokio::task::yield_now().await;
    }
    let abandoned = driver.stats().abandoned - before.abandoned;
    eprintln!(
        "{:?}: {dropped} futures dropped after one poll, {abandoned} of them mid-flight",
        driver.backend()
    );
    assert_eq!(driver.in_flight(), 0);
    assert_eq!(
        Arc::strong_count(&owner),
        1,
        "every write buffer was released"
    );

    // The driver and the file still work.
    let (res, _) = file
        .write_all_at(Bytes::from_static(b"still here"), 0)
        .await;
    res?;
    file.sync_data().await?;
    let (res, buf) = file.read_exact_at(BytesMut::with_capacity(10), 0).await;
    res?;
    assert_eq!(&buf[..], b"still here");
    Ok(())
}

struct OwnedSlice(Arc<Vec<u8>>);

impl AsRef<[u8]> for OwnedSlice {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

async fn timeouts_around_operations_leave_the_driver_working(driver: IoDriver) -> io::Result<()> {
    let tmp = tempfile::tempdir()?;
    let file = driver.open(tmp.path().join("f"), &rw_create()).await?;
    let (mut finished, mut expired) = (0, 0);
    for i in 0..500u64 {
        let op = file.writev_sync_at(vec![Bytes::from(vec![i as u8; 512])], i * 512);
        match tokio::time::timeout(Duration::from_micros(50), op).await {
            Ok((res, _)) => {
                res?;
                finished += 1;
            }
            Err(_) => expired += 1,
        }
    }
    assert_eq!(finished + expired, 500);
    wait_idle(&driver).await;
    // An expired write may or may not have landed, but the driver still serves new operations.
    let (res, _) = file
        .writev_sync_at(vec![Bytes::from_static(b"after")], 0)
        .await;
    res?;
    let (res, buf) = file.read_exact_at(BytesMut::with_capacity(5), 0).await;
    res?;
    assert_eq!(&buf[..], b"after");
    // A generous timeout does not fire.
    let (res, _) = tokio::time::timeout(
        Duration::from_secs(10),
        file.read_at(BytesMut::with_capacity(5), 0),
    )
    .await
    .expect("no timeout");
    assert_eq!(res?, 5);
    Ok(())
}

async fn writev_beyond_iov_max_and_with_empty_buffers(driver: IoDriver) -> io::Result<()> {
    let tmp = tempfile::tempdir()?;
    let file = driver.open(tmp.path().join("f"), &rw_create()).await?;
    let mut bufs = Vec::new();
    let mut expected = Vec::new();
    for i in 0..3000u32 {
        let chunk = if i % 10 == 0 {
            Vec::new()
        } else {
            i.to_le_bytes()[..(i % 4 + 1) as usize].to_vec()
        };
        expected.extend_from_slice(&chunk);
        bufs.push(Bytes::from(chunk));
    }
    let (res, back) = file.writev_sync_at(bufs, 3).await;
    assert_eq!(res?, expected.len());
    assert_eq!(back.len(), 3000);
    let (res, buf) = file
        .read_exact_at(BytesMut::with_capacity(expected.len()), 3)
        .await;
    res?;
    assert_eq!(&buf[..], &expected[..]);

    // Nothing to write still syncs, and succeeds.
    let (res, _) = file
        .writev_sync_at(vec![Bytes::new(), Bytes::new()], 0)
        .await;
    assert_eq!(res?, 0);
    let (res, _) = file.writev_at(Vec::new(), 0).await;
    assert_eq!(res?, 0);
    Ok(())
}

async fn direct_io_with_aligned_buffers(driver: IoDriver) -> io::Result<()> {
    const BLOCK: usize = 4096;
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("direct");
    let file = match driver.open(&path, &rw_create().direct(true)).await {
        // tmpfs and some other file systems refuse O_DIRECT.
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            eprintln!("O_DIRECT unsupported on the temporary directory's file system: {e}");
            return Ok(());
        }
        other => other?,
    };
    let mut block = aligned_bytes_mut(2 * BLOCK, BLOCK);
    for i in 0..2 * BLOCK {
        block.extend_from_slice(&[(i % 251) as u8]);
    }
    let data = block.freeze();
    let (res, _) = file.writev_sync_at(vec![data.clone()], BLOCK as u64).await;
    assert_eq!(res?, 2 * BLOCK);
    let (res, buf) = file
        .read_exact_at(aligned_bytes_mut(2 * BLOCK, BLOCK), BLOCK as u64)
        .await;
    res?;
    assert_eq!(buf, data);
    Ok(())
}

async fn shutdown_waits_for_in_flight_operations(driver: IoDriver) -> io::Result<()> {
    let tmp = tempfile::tempdir()?;
    let file = driver.open(tmp.path().join("f"), &rw_create()).await?;
    // Leave syncs in flight with nobody waiting for them.
    for i in 0..32u64 {
        let op = file
            .writev_sync_at(vec![Bytes::from(vec![1u8; 4096])], i * 4096)
            .boxed();
        if let Some((res, _)) = op.now_or_never() {
            res?;
        }
    }
    driver.shutdown().await;
    assert_eq!(
        driver.in_flight(),
        0,
        "shutdown returned with operations in flight"
    );
    let (res, _) = file.read_at(BytesMut::with_capacity(4), 0).await;
    assert_eq!(
        res.unwrap_err().kind(),
        io::ErrorKind::Other,
        "a shut driver refuses work"
    );
    assert!(
        driver
            .open(tmp.path().join("g"), &rw_create())
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_queue_applies_backpressure_without_failing() -> io::Result<()> {
    for backend in [Backend::IoUring, Backend::ThreadPool] {
        let Some(driver) = driver_for(backend, options().queue_depth(2).pool_threads(1)) else {
            continue;
        };
        let tmp = tempfile::tempdir()?;
        let file = driver.open(tmp.path().join("f"), &rw_create()).await?;
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            let file = file.clone();
            tasks.push(tokio::spawn(async move {
                // Linked write + sync needs both slots of the queue at once.
                let (res, _) = file
                    .writev_sync_at(vec![Bytes::from(vec![i as u8; 64])], i * 64)
                    .await;
                res
            }));
        }
        for task in tasks {
            task.await.expect("task panicked")?;
        }
        assert_eq!(file.len().await?, 200 * 64);
        let data = read_all(&file).await?;
        assert!(
            data.chunks(64)
                .enumerate()
                .all(|(i, c)| c.iter().all(|&x| x == i as u8))
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_failed_probe_selects_the_thread_pool_under_auto() {
    let opts = DriverOptions::default()
        .use_env(false)
        .force_probe_failure(true);
    let driver = IoDriver::new(opts.clone()).expect("auto falls back");
    assert_eq!(driver.backend(), Backend::ThreadPool);
    let err = IoDriver::new(opts.backend(Backend::IoUring)).unwrap_err();
    assert!(
        err.to_string().contains("io_uring is not available"),
        "{err}"
    );
}

#[test]
fn io_uring_needs_a_tokio_runtime() {
    let err = IoDriver::new(options().backend(Backend::IoUring)).unwrap_err();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
    // The pool does not.
    let driver =
        IoDriver::new(options().backend(Backend::ThreadPool)).expect("pool starts anywhere");
    assert_eq!(driver.backend(), Backend::ThreadPool);
}

/// `hard_link` makes a second name of a file: it reads the same bytes, survives the removal of
/// the first name, and refuses an existing name or a missing file with their kinds.
async fn hard_links_share_a_file_and_outlive_its_first_name(driver: IoDriver) -> io::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let file = driver
        .open(&a, &OpenOptions::new().write(true).create_new(true))
        .await?;
    let (res, _) = file.write_all_at(Bytes::from_static(b"linked"), 0).await;
    res?;
    file.sync_data().await?;
    file.close().await?;
    driver.hard_link(&a, &b).await?;
    driver.sync_dir(tmp.path()).await?;
    assert_eq!(
        driver.hard_link(&a, &b).await.unwrap_err().kind(),
        io::ErrorKind::AlreadyExists
    );
    assert_eq!(
        driver
            .hard_link(tmp.path().join("missing"), tmp.path().join("c"))
            .await
            .unwrap_err()
            .kind(),
        io::ErrorKind::NotFound
    );
    driver.remove_file(&a).await?;
    let file = driver.open(&b, &OpenOptions::new().read(true)).await?;
    let (res, buf) = file.read_exact_at(BytesMut::with_capacity(6), 0).await;
    res?;
    assert_eq!(&buf[..], b"linked");
    file.close().await
}
