//! Tests of the snapshot file, on each I/O backend.

use std::io::SeekFrom;

use futures::FutureExt;
use ringtide::platform::{Backend, DriverOptions, IoDriver};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{READ_AHEAD, SnapshotFile, WRITE_BUFFER};

/// The drivers of the backends this run covers: both, or the one `RINGTIDE_IO_BACKEND`
/// names.
fn drivers() -> Vec<IoDriver> {
    let only = std::env::var(ringtide::platform::BACKEND_ENV)
        .ok()
        .map(|s| {
            s.parse::<Backend>()
                .expect("RINGTIDE_IO_BACKEND names a backend")
        });
    [Backend::IoUring, Backend::ThreadPool]
        .into_iter()
        .filter(|b| only.is_none_or(|o| o == Backend::Auto || o == *b))
        .map(|b| {
            IoDriver::new(DriverOptions::default().use_env(false).backend(b))
                .unwrap_or_else(|e| panic!("the {b} driver starts: {e}"))
        })
        .collect()
}

/// `len` bytes that repeat nowhere near a power of two.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect()
}

/// Odd chunk sizes, some larger than the write buffer.
const CHUNKS: [usize; 7] = [1, 7, 4093, 65_537, WRITE_BUFFER + 3, 333_333, 12];

#[test]
fn is_what_openraft_needs() {
    fn check<T: Send + Sync + Unpin + std::fmt::Debug + 'static>() {}
    check::<SnapshotFile>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_chunks_read_back_after_shutdown_and_reopen() -> std::io::Result<()> {
    for driver in drivers() {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("snap");
        let data = pattern(3 * WRITE_BUFFER + 12_345, 1);

        let mut f = SnapshotFile::create(&driver, &path).await?;
        assert_eq!(f.path(), path);
        let mut at = 0;
        for size in CHUNKS.iter().cycle() {
            if at == data.len() {
                break;
            }
            let end = (at + size).min(data.len());
            f.write_all(&data[at..end]).await?;
            at = end;
        }
        assert_eq!(f.len().await?, data.len() as u64);
        f.shutdown().await?;
        drop(f);
        assert_eq!(std::fs::metadata(&path)?.len(), data.len() as u64);

        let mut f = SnapshotFile::open(&driver, &path).await?;
        assert_eq!(f.len().await?, data.len() as u64);
        let mut back = Vec::new();
        f.read_to_end(&mut back).await?;
        assert!(back == data, "{}: read back differs", driver.backend());

        // As openraft's leader reads: seek to each chunk, fill a large buffer.
        let chunk = 3 << 20;
        let mut offset = 0u64;
        let mut back = Vec::new();
        loop {
            f.seek(SeekFrom::Start(offset)).await?;
            let mut buf = Vec::with_capacity(chunk);
            while buf.capacity() > buf.len() {
                if f.read_buf(&mut buf).await? == 0 {
                    break;
                }
            }
            if buf.is_empty() {
                break;
            }
            offset += buf.len() as u64;
            back.extend_from_slice(&buf);
        }
        assert!(back == data, "{}: chunked read differs", driver.backend());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeks_from_start_current_and_end() -> std::io::Result<()> {
    for driver in drivers() {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("snap");
        let data = pattern(2 * WRITE_BUFFER + 777, 2);
        let len = data.len() as u64;
        let mut f = SnapshotFile::create(&driver, &path).await?;
        f.write_all(&data).await?;
        f.shutdown().await?;
        drop(f);

        let mut f = SnapshotFile::open(&driver, &path).await?;
        let mut buf = vec![0; 5000];
        assert_eq!(f.seek(SeekFrom::Start(1000)).await?, 1000);
        f.read_exact(&mut buf).await?;
        assert_eq!(buf, data[1000..6000]);

        assert_eq!(f.seek(SeekFrom::Current(-3000)).await?, 3000);
        f.read_exact(&mut buf).await?;
        assert_eq!(buf, data[3000..8000]);

        // Forwards, past what was read ahead.
        let far = READ_AHEAD as i64 * 3;
        assert_eq!(f.seek(SeekFrom::Current(far)).await?, 8000 + far as u64);
        f.read_exact(&mut buf).await?;
        let at = 8000 + far as usize;
        assert_eq!(buf, data[at..at + 5000]);

        assert_eq!(f.seek(SeekFrom::End(-100)).await?, len - 100);
        let mut tail = Vec::new();
        f.read_to_end(&mut tail).await?;
        assert_eq!(tail, data[data.len() - 100..]);

        assert_eq!(f.seek(SeekFrom::End(0)).await?, len);
        assert_eq!(f.stream_position().await?, len);
        assert_eq!(f.seek(SeekFrom::Start(0)).await?, 0);
        f.read_exact(&mut buf[..10]).await?;
        assert_eq!(buf[..10], data[..10]);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seek_before_zero_is_invalid_input_and_moves_nothing() -> std::io::Result<()> {
    for driver in drivers() {
        let dir = tempfile::tempdir()?;
        let mut f = SnapshotFile::create(&driver, &dir.path().join("snap")).await?;
        f.write_all(b"0123456789").await?;
        for to in [
            SeekFrom::Current(-11),
            SeekFrom::End(-11),
            SeekFrom::Current(i64::MIN),
            SeekFrom::Start(u64::MAX),
        ] {
            let err = f.seek(to).await.expect_err("a seek out of range fails");
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{to:?}");
            assert_eq!(f.stream_position().await?, 10);
        }
        assert_eq!(f.seek(SeekFrom::End(-10)).await?, 0);
        let mut back = Vec::new();
        f.read_to_end(&mut back).await?;
        assert_eq!(back, b"0123456789");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_written_at_increasing_offsets_read_from_zero() -> std::io::Result<()> {
    for driver in drivers() {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("snap");
        let data = pattern(2 * WRITE_BUFFER + 99, 3);
        // As openraft's follower installs: a seek to a chunk's offset when it is not where
        // the last chunk ended (here: every other chunk), then the chunk.
        let mut f = SnapshotFile::create(&driver, &path).await?;
        let mut offset = 0;
        for (i, chunk) in data.chunks(300_007).enumerate() {
            if i % 2 == 0 {
                assert_eq!(f.seek(SeekFrom::Start(offset)).await?, offset);
            }
            f.write_all(chunk).await?;
            offset += chunk.len() as u64;
        }
        f.shutdown().await?;
        assert_eq!(f.len().await?, data.len() as u64);
        // The state machine reads it from the start, through the same box.
        f.seek(SeekFrom::Start(0)).await?;
        let mut back = Vec::new();
        f.read_to_end(&mut back).await?;
        assert!(
            back == data,
            "{}: installed snapshot differs",
            driver.backend()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_seeks_and_reads_interleave_without_flushes() -> std::io::Result<()> {
    for driver in drivers() {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("snap");
        let mut f = SnapshotFile::create(&driver, &path).await?;
        f.write_all(b"abcdefghij").await?;
        // Reading where the writes end: the end of the file.
        assert_eq!(f.read(&mut [0; 4]).await?, 0);
        f.seek(SeekFrom::Start(2)).await?;
        let mut three = [0; 3];
        f.read_exact(&mut three).await?;
        assert_eq!(&three, b"cde");
        // A write right after a read (what was read ahead must not hide it).
        f.write_all(b"XY").await?;
        f.seek(SeekFrom::Current(-4)).await?;
        let mut rest = Vec::new();
        f.read_to_end(&mut rest).await?;
        assert_eq!(rest, b"deXYhij");
        // Backwards over bytes read ahead, then forwards past the end: a hole of zeros.
        f.seek(SeekFrom::Start(0)).await?;
        f.write_all(b"A").await?;
        f.seek(SeekFrom::End(3)).await?;
        f.write_all(b"Z").await?;
        assert_eq!(f.len().await?, 14);
        f.seek(SeekFrom::Start(0)).await?;
        let mut all = Vec::new();
        f.read_to_end(&mut all).await?;
        assert_eq!(all, b"AbcdeXYhij\0\0\0Z");

        // Large: overwrite the middle of a file larger than the buffers, read it all back.
        let mut data = pattern(2 * WRITE_BUFFER, 4);
        f.seek(SeekFrom::Start(0)).await?;
        f.write_all(&data).await?;
        let mid = pattern(WRITE_BUFFER + 5, 5);
        f.seek(SeekFrom::Start(100_000)).await?;
        f.write_all(&mid).await?;
        data[100_000..100_000 + mid.len()].copy_from_slice(&mid);
        f.seek(SeekFrom::Start(0)).await?;
        let mut back = Vec::new();
        f.read_to_end(&mut back).await?;
        assert!(
            back == data,
            "{}: overwritten file differs",
            driver.backend()
        );
        f.shutdown().await?;
        assert_eq!(std::fs::read(&path)?, data);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn len_counts_buffered_bytes() -> std::io::Result<()> {
    for driver in drivers() {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("snap");
        let mut f = SnapshotFile::create(&driver, &path).await?;
        assert_eq!(f.len().await?, 0);
        f.write_all(&[7; 100]).await?;
        assert_eq!(f.len().await?, 100);
        assert_eq!(std::fs::metadata(&path)?.len(), 0, "still buffered");
        f.flush().await?;
        assert_eq!(f.len().await?, 100);
        assert_eq!(std::fs::metadata(&path)?.len(), 100);
        f.seek(SeekFrom::Start(50)).await?;
        f.write_all(&[8; 10]).await?;
        assert_eq!(f.len().await?, 100);
        f.seek(SeekFrom::End(0)).await?;
        f.write_all(&[9; 5]).await?;
        assert_eq!(f.len().await?, 105);
        f.sync().await?;
        drop(f);

        let f = SnapshotFile::open(&driver, &path).await?;
        assert_eq!(f.len().await?, 105);
        // `create` truncates.
        let f = SnapshotFile::create(&driver, &path).await?;
        assert_eq!(f.len().await?, 0);
        assert_eq!(std::fs::metadata(&path)?.len(), 0);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_at_or_past_the_end_return_nothing() -> std::io::Result<()> {
    for driver in drivers() {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("snap");
        let mut f = SnapshotFile::create(&driver, &path).await?;
        let mut buf = [0; 16];
        assert_eq!(f.read(&mut buf).await?, 0);
        f.write_all(b"hello").await?;
        f.shutdown().await?;
        drop(f);

        let mut f = SnapshotFile::open(&driver, &path).await?;
        assert_eq!(f.read(&mut buf).await?, 5);
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(f.read(&mut buf).await?, 0);
        f.seek(SeekFrom::End(0)).await?;
        assert_eq!(f.read(&mut buf).await?, 0);
        f.seek(SeekFrom::Start(1 << 40)).await?;
        assert_eq!(f.read(&mut buf).await?, 0);
        // A seek past the end does not lengthen the file.
        assert_eq!(f.len().await?, 5);
        f.seek(SeekFrom::Start(3)).await?;
        let mut rest = Vec::new();
        f.read_to_end(&mut rest).await?;
        assert_eq!(rest, b"lo");

        let missing = SnapshotFile::open(&driver, &dir.path().join("missing")).await;
        assert_eq!(
            missing.expect_err("no such file").kind(),
            std::io::ErrorKind::NotFound
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_futures_leave_a_consistent_file() -> std::io::Result<()> {
    for driver in drivers() {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("snap");
        let data = pattern(3 * WRITE_BUFFER, 6);
        let mut f = SnapshotFile::create(&driver, &path).await?;
        for chunk in data.chunks(WRITE_BUFFER / 3) {
            f.write_all(chunk).await?;
            // Polled once and dropped: the write it may have started goes on in the file.
            let _ = f.flush().now_or_never();
            let _ = f.seek(SeekFrom::Current(0)).now_or_never();
        }
        let _ = f.seek(SeekFrom::Start(0)).now_or_never();
        let _ = f.read(&mut [0; 10]).now_or_never();
        let _ = f.sync().now_or_never();
        f.seek(SeekFrom::Start(0)).await?;
        let mut back = Vec::new();
        f.read_to_end(&mut back).await?;
        assert!(back == data, "{}: read back differs", driver.backend());
        // Dropped with buffered bytes: they are lost, nothing panics.
        f.write_all(b"lost").await?;
        drop(f);
        assert_eq!(std::fs::read(&path)?, data);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_is_retried_and_a_failed_sync_sticks() -> std::io::Result<()> {
    for driver in drivers() {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("snap");
        let mut f = SnapshotFile::create(&driver, &path).await?;
        f.write_all(b"kept").await?;
        driver.fail_after(0);
        f.flush().await.expect_err("the write fails");
        driver.clear_failures();
        f.flush().await?;
        assert_eq!(std::fs::read(&path)?, b"kept");

        f.write_all(b" and synced").await?;
        f.flush().await?;
        driver.fail_after(0);
        f.shutdown().await.expect_err("the sync fails");
        driver.clear_failures();
        f.sync().await.expect_err("a sync after a failed one fails");
        // Reads still work.
        f.seek(SeekFrom::Start(0)).await?;
        let mut back = Vec::new();
        f.read_to_end(&mut back).await?;
        assert_eq!(back, b"kept and synced");
    }
    Ok(())
}
