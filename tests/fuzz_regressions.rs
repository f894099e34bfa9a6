//! Replays the fuzz targets' inputs through `ringtide::wal::fuzz`, the entry points the cargo-fuzz
//! targets in `fuzz/` call: every seed under `fuzz/corpus/<target>/` and every saved crash under
//! `tests/fuzz_regressions/<target>-<what>`. A crash the fuzzer found gets its own named test
//! here, `#[ignore]`d with the reason until its bug is fixed.
//!
//! The entry points are compiled only with the cargo feature `fuzzing`, which this test requires
//! (`cargo test --features fuzzing --test fuzz_regressions`, or `--all-features`).
//!
//! The seeds come from real small logs: `cargo test --features fuzzing --test fuzz_regressions
//! -- --ignored write_seed_corpus` writes them again (log ids and timestamps differ at every run).

use std::path::{Path, PathBuf};
use std::time::Duration;

use ringtide::wal::fuzz::{self, TARGETS};
use ringtide::wal::{
    ChecksumKind, LengthEncoding, Lsn, Record, SyncPolicy, Timestamps, Wal, WalOptions,
};

/// Saved crash inputs whose bug is not fixed yet: each has an ignored test below, and
/// `replay_every_saved_regression` skips it.
const OPEN: &[&str] = &[];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target(name: &str) -> fuzz::Target {
    TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
}

/// The files of `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = listing
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Runs the saved input `tests/fuzz_regressions/<file>` through the target its name starts with.
fn replay_regression(file: &str) {
    let path = root().join("tests/fuzz_regressions").join(file);
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (name, _) = TARGETS
        .iter()
        .find(|(name, _)| file.starts_with(&format!("{name}-")))
        .unwrap_or_else(|| panic!("{file} does not start with a fuzz target's name"));
    target(name)(&data);
}

#[test]
fn replay_the_seed_corpus() {
    let mut replayed = 0;
    for (name, run) in TARGETS {
        let seeds = files(&root().join("fuzz/corpus").join(name));
        assert!(!seeds.is_empty(), "fuzz/corpus/{name} holds no seed");
        for seed in seeds {
            let data = std::fs::read(&seed).expect("a seed file");
            run(&data);
            replayed += 1;
        }
    }
    assert!(replayed >= TARGETS.len());
}

#[test]
fn replay_every_saved_regression() {
    for path in files(&root().join("tests/fuzz_regressions")) {
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a UTF-8 file name");
        if !OPEN.contains(&file) {
            replay_regression(file);
        }
    }
}

/// A `truncate_back` to lsn 1, inside the batch 1..=2, interrupted while it rewrote that frame
/// (215 bytes: `wal.meta`, a segment of two one-byte entries, `wal.cut`): the cut record is there
/// and the frame's rewrite is torn (its new flags, its old checksum). Recovery accepts the frame
/// through `FrameFormat::decode_cut` and reports entry 1; a read-write open rewrites the frame
/// and reads it back, but a read-only open left it as it was, and then every read of lsn 1
/// (`read`, `range`, `stream`) failed with "frame checksum mismatch" at offset 64. Fixed: a
/// read-only open lays the repaired frame over the file's bytes for its readers.
#[test]
fn recovery_cut_record_torn_read_only() {
    replay_regression("recovery-cut-record-torn-read-only");
}

// ---------------------------------------------------------------------------------------------
// Seeds

/// One real log's files: (name, contents), segments cut at the end of their data.
type Image = Vec<(String, Vec<u8>)>;

fn options(format: (LengthEncoding, ChecksumKind, Timestamps)) -> WalOptions {
    WalOptions::default()
        .segment_size_bytes(64 << 10)
        .lock_timeout(Duration::from_millis(100))
        .sync_policy(SyncPolicy::None)
        .length_encoding(format.0)
        .checksum(format.1)
        .timestamps(format.2)
}

/// Five single entries, a batch of three with terms, and a transaction of two; payloads of 0 to
/// 300 bytes.
async fn fill(wal: &Wal) -> ringtide::Result<()> {
    for i in 0..5u8 {
        wal.append(vec![i; usize::from(i) * 60]).await?;
    }
    wal.append_batch([
        Record::with_term(3, "first of a batch"),
        Record::with_term(3, vec![0xee; 130]),
        Record::with_term(4, "last"),
    ])
    .await?;
    let mut txn = wal.begin_log_txn(Duration::from_secs(5));
    txn.push("txn a")?;
    txn.push("txn b")?;
    txn.commit().await?;
    Ok(())
}

/// The meta file and every segment of the closed log in `dir`, as a crash after the last append
/// leaves them: segments end with the last entry (no seal) and the meta file has no clean-close
/// record (its first 48 bytes), so that the seeds' damage reads as a crash's.
fn image_of(wal_segments: &[(PathBuf, u64)], dir: &Path) -> Image {
    let mut meta = std::fs::read(dir.join("wal.meta")).expect("wal.meta");
    meta.truncate(48);
    let mut image = vec![("wal.meta".to_owned(), meta)];
    for (path, data_bytes) in wal_segments {
        let mut bytes = std::fs::read(path).expect("a segment");
        bytes.truncate(*data_bytes as usize);
        let name = path.file_name().and_then(|n| n.to_str()).expect("a name");
        image.push((name.to_owned(), bytes));
    }
    image
}

async fn close_and_image(wal: Wal, dir: &Path) -> ringtide::Result<Image> {
    let segments: Vec<(PathBuf, u64)> = wal
        .segments()
        .into_iter()
        .map(|s| (s.path, s.data_bytes))
        .collect();
    wal.close().await?;
    Ok(image_of(&segments, dir))
}

/// Stores a header's crc32 again after a field was changed.
fn reseal(header: &mut [u8]) {
    let crc = crc32fast::hash(&header[..60]);
    header[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// The default format's frame lengths in `fill`'s log, in order.
fn default_frame_lens() -> Vec<usize> {
    let fixed = 4 + 4 + 1 + 8 + 4;
    let mut lens: Vec<usize> = (0..5).map(|i| fixed + i * 60).collect();
    lens.extend([
        fixed + 8 + 16,
        fixed + 8 + 130,
        fixed + 8 + 4,
        fixed + 5,
        fixed + 5,
    ]);
    lens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the seed corpus into fuzz/corpus: run by hand"]
async fn write_seed_corpus() -> ringtide::Result<()> {
    let formats = [
        (
            "u32-crc32",
            LengthEncoding::U32,
            ChecksumKind::Crc32,
            Timestamps::Off,
        ),
        (
            "u16-crc32-ts",
            LengthEncoding::U16,
            ChecksumKind::Crc32,
            Timestamps::UnixMicros,
        ),
        (
            "u64-crc64",
            LengthEncoding::U64,
            ChecksumKind::Crc64,
            Timestamps::Off,
        ),
        (
            "uvarint-crc64-ts",
            LengthEncoding::Uvarint,
            ChecksumKind::Crc64,
            Timestamps::UnixMicros,
        ),
    ];
    let mut seeds: Vec<(&str, String, Vec<u8>)> = Vec::new();
    let mut default_image = None;
    for (label, length, checksum, timestamps) in formats {
        let tmp = tempfile::tempdir()?;
        let wal = Wal::open(tmp.path(), options((length, checksum, timestamps))).await?;
        fill(&wal).await?;
        let image = close_and_image(wal, tmp.path()).await?;
        let segment = &image[1].1;
        seeds.push((
            "frame_decoder",
            format!("{label}-frames"),
            segment[64..].to_vec(),
        ));
        seeds.push((
            "segment_header",
            format!("{label}-header"),
            segment[..64].to_vec(),
        ));
        seeds.push((
            "segment_header",
            format!("{label}-segment"),
            segment.clone(),
        ));
        seeds.push((
            "segment_header",
            format!("{label}-meta"),
            image[0].1.clone(),
        ));
        seeds.push((
            "recovery",
            label.to_owned(),
            fuzz::image_to_bytes(&image, 0),
        ));
        if label == "u32-crc32" {
            default_image = Some(image);
        }
    }
    let image = default_image.expect("the default format's image");
    let (meta, (name, segment)) = (&image[0], &image[1]);
    let lens = default_frame_lens();
    assert_eq!(
        64 + lens.iter().sum::<usize>(),
        segment.len(),
        "frame lengths"
    );
    let end_of = |frames: usize| 64 + lens[..frames].iter().sum::<usize>();

    // A torn tail: the last frame half written, with and without a strict reader's error.
    let mut torn = image.clone();
    torn[1].1.truncate(end_of(9) + lens[9] / 2);
    seeds.push((
        "recovery",
        "torn-tail".into(),
        fuzz::image_to_bytes(&torn, 0),
    ));
    seeds.push((
        "frame_decoder",
        "torn-tail".into(),
        torn[1].1[64..].to_vec(),
    ));
    // An incomplete batch: the log ends after the batch's first frame.
    let mut incomplete = image.clone();
    incomplete[1].1.truncate(end_of(6));
    seeds.push((
        "recovery",
        "incomplete-batch".into(),
        fuzz::image_to_bytes(&incomplete, 0),
    ));
    // Damage before valid data: a byte flipped in the second frame's payload.
    let mut damaged = image.clone();
    damaged[1].1[end_of(1) + 30] ^= 1;
    seeds.push((
        "recovery",
        "damaged-middle".into(),
        fuzz::image_to_bytes(&damaged, 0),
    ));
    // The same frames split into two segments at lsn 6, the second named by its header.
    let first = segment[..end_of(5)].to_vec();
    let mut second = segment[..64].to_vec();
    second[32..40].copy_from_slice(&6u64.to_le_bytes());
    reseal(&mut second);
    second.extend_from_slice(&segment[end_of(5)..]);
    let split = vec![
        meta.clone(),
        (name.clone(), first),
        (
            name.replace("00000000000000000001.wal", "00000000000000000006.wal"),
            second,
        ),
    ];
    seeds.push((
        "recovery",
        "two-segments".into(),
        fuzz::image_to_bytes(&split, 0),
    ));
    // Leftovers of interrupted operations next to the log.
    let mut leftovers = image.clone();
    leftovers.push(("wal.meta.tmp".into(), meta.1.clone()));
    leftovers.push(("next-000001.prepared".into(), vec![0; 64]));
    leftovers.push(("LOCK".into(), Vec::new()));
    seeds.push((
        "recovery",
        "leftovers".into(),
        fuzz::image_to_bytes(&leftovers, 0),
    ));
    // A `truncate_back` to lsn 7 (inside the batch 6..=8) interrupted after it wrote its cut
    // record, the frame not rewritten yet; and a stale record of another epoch, which recovery
    // ignores.
    let cut_record = |epoch: u64, lsn: u64| {
        let mut record = meta.1.clone();
        record[..8].copy_from_slice(b"RTDCUT\r\n");
        record[24..32].copy_from_slice(&epoch.to_le_bytes());
        record[32..40].copy_from_slice(&lsn.to_le_bytes());
        let crc = crc32fast::hash(&record[..44]);
        record[44..48].copy_from_slice(&crc.to_le_bytes());
        ("wal.cut".to_owned(), record)
    };
    let mut cut = image.clone();
    cut.push(cut_record(0, 7));
    seeds.push((
        "recovery",
        "cut-record".into(),
        fuzz::image_to_bytes(&cut, 0),
    ));
    let mut stale = image.clone();
    stale.push(cut_record(5, 7));
    seeds.push((
        "recovery",
        "cut-record-stale".into(),
        fuzz::image_to_bytes(&stale, 0),
    ));
    // With the fix-ups on, so mutations keep their checksums valid.
    seeds.push((
        "recovery",
        "u32-crc32-fixups".into(),
        fuzz::image_to_bytes(&image, 3),
    ));
    // An empty directory: a new log is created.
    seeds.push(("recovery", "empty".into(), vec![0, 0]));

    // truncate_front: the meta file starts the log at lsn 4.
    let tmp = tempfile::tempdir()?;
    let opts = options((LengthEncoding::U32, ChecksumKind::Crc32, Timestamps::Off));
    let wal = Wal::open(tmp.path(), opts.clone()).await?;
    fill(&wal).await?;
    wal.truncate_front(Lsn(4)).await?;
    let truncated = close_and_image(wal, tmp.path()).await?;
    seeds.push((
        "recovery",
        "truncated-front".into(),
        fuzz::image_to_bytes(&truncated, 0),
    ));
    // reset: epoch 1 starting at lsn 100, next to a leftover segment of epoch 0.
    let wal = Wal::open(tmp.path(), opts).await?;
    wal.reset(Lsn(100)).await?;
    wal.append("after the reset").await?;
    let mut reset = close_and_image(wal, tmp.path()).await?;
    reset.push(truncated[1].clone());
    seeds.push((
        "recovery",
        "reset-with-old-epoch".into(),
        fuzz::image_to_bytes(&reset, 0),
    ));

    for (target, name, bytes) in seeds {
        assert!(bytes.len() < 64 << 10, "{target}/{name} is too large");
        if target == "recovery" {
            check_image_seed(&name, &bytes).await?;
        }
        let dir = root().join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{name}")), &bytes)?;
    }
    Ok(())
}

/// A recovery seed splits back into its image, and the images of whole logs open with their
/// entries: the fuzzer starts from inputs that reach the end of recovery.
async fn check_image_seed(name: &str, bytes: &[u8]) -> ringtide::Result<()> {
    let image = fuzz::image_from_bytes(bytes);
    assert_eq!(fuzz::image_to_bytes(&image, bytes[1]), bytes, "{name}");
    let expected = match name {
        "empty" | "damaged-middle" => return Ok(()),
        "incomplete-batch" => (Lsn(1), Lsn(5)),
        "torn-tail" => (Lsn(1), Lsn(8)),
        "cut-record" => (Lsn(1), Lsn(7)),
        "truncated-front" => (Lsn(4), Lsn(10)),
        "reset-with-old-epoch" => (Lsn(100), Lsn(100)),
        _ => (Lsn(1), Lsn(10)),
    };
    let tmp = tempfile::tempdir()?;
    for (file, contents) in &image {
        std::fs::write(tmp.path().join(file), contents)?;
    }
    let wal = Wal::open_read_only(tmp.path(), WalOptions::default()).await?;
    assert_eq!((wal.first_lsn(), wal.last_lsn()), expected, "{name}");
    assert_eq!(
        wal.range(..).await?.len() as u64,
        expected.1.0 + 1 - expected.0.0
    );
    wal.close().await
}

/// The key-value record target: its seeds (valid chunks of every kind) and its corpus replay
/// without a panic, and every seed decodes.
#[test]
fn kv_record_corpus_replays() {
    let seeds = ringtide::kv::fuzz::seeds();
    assert!(!seeds.is_empty());
    for seed in &seeds {
        ringtide::kv::fuzz::record_decoder(seed);
    }
    let dir = root().join("fuzz/corpus/kv_record");
    let corpus = files(&dir);
    assert!(!corpus.is_empty(), "seeds in {}", dir.display());
    for file in corpus {
        let data = std::fs::read(&file).expect("corpus file");
        ringtide::kv::fuzz::record_decoder(&data);
    }
}

#[test]
#[ignore = "writes the key-value record seeds into fuzz/corpus/kv_record: run by hand"]
fn write_kv_record_seeds() {
    let dir = root().join("fuzz/corpus/kv_record");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    for (i, seed) in ringtide::kv::fuzz::seeds().iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), seed).expect("write seed");
    }
}

/// The table target: its seeds (tables with and without a filter, of one block and many, with
/// data blocks uncompressed and lz4) and its corpus replay without a panic, as images and as
/// entries.
#[test]
fn kv_table_corpus_replays() {
    let seeds = ringtide::kv::fuzz::table_seeds();
    assert!(!seeds.is_empty());
    for seed in &seeds {
        ringtide::kv::fuzz::table_decoder(seed);
    }
    let dir = root().join("fuzz/corpus/kv_table");
    let corpus = files(&dir);
    assert!(!corpus.is_empty(), "seeds in {}", dir.display());
    for file in corpus {
        let data = std::fs::read(&file).expect("corpus file");
        ringtide::kv::fuzz::table_decoder(&data);
    }
}

#[test]
#[ignore = "writes the table seeds into fuzz/corpus/kv_table: run by hand"]
fn write_kv_table_seeds() {
    let dir = root().join("fuzz/corpus/kv_table");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    for (i, seed) in ringtide::kv::fuzz::table_seeds().iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), seed).expect("write seed");
    }
}

/// The manifest target: its seeds (flush, compaction, move, snapshot edits) and its corpus
/// replay without a panic.
#[test]
fn kv_manifest_corpus_replays() {
    let seeds = ringtide::kv::fuzz::manifest_seeds();
    assert!(!seeds.is_empty());
    for seed in &seeds {
        ringtide::kv::fuzz::manifest_decoder(seed);
    }
    let dir = root().join("fuzz/corpus/kv_manifest");
    let corpus = files(&dir);
    assert!(!corpus.is_empty(), "seeds in {}", dir.display());
    for file in corpus {
        let data = std::fs::read(&file).expect("corpus file");
        ringtide::kv::fuzz::manifest_decoder(&data);
    }
}

#[test]
#[ignore = "writes the manifest seeds into fuzz/corpus/kv_manifest: run by hand"]
fn write_kv_manifest_seeds() {
    let dir = root().join("fuzz/corpus/kv_manifest");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    for (i, seed) in ringtide::kv::fuzz::manifest_seeds().iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), seed).expect("write seed");
    }
}

/// The value-log target: its seeds (a file, pointers to each value, one past the end, one with
/// a wrong checksum) and its corpus replay without a panic.
#[test]
fn kv_value_log_corpus_replays() {
    let seeds = ringtide::kv::fuzz::value_log_seeds();
    assert!(!seeds.is_empty());
    for seed in &seeds {
        ringtide::kv::fuzz::value_log_decoder(seed);
    }
    let dir = root().join("fuzz/corpus/kv_value_log");
    let corpus = files(&dir);
    assert!(!corpus.is_empty(), "seeds in {}", dir.display());
    for file in corpus {
        let data = std::fs::read(&file).expect("corpus file");
        ringtide::kv::fuzz::value_log_decoder(&data);
    }
}

#[test]
#[ignore = "writes the value-log seeds into fuzz/corpus/kv_value_log: run by hand"]
fn write_kv_value_log_seeds() {
    let dir = root().join("fuzz/corpus/kv_value_log");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    for (i, seed) in ringtide::kv::fuzz::value_log_seeds().iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), seed).expect("write seed");
    }
}
