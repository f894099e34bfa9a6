//! Directory images for the `recovery` fuzz target: how a fuzzer input becomes a small log
//! directory ([`image_from_bytes`], and back for seeds: [`image_to_bytes`]), and the recovery of
//! one under every open mode with the invariants of the [parent module](super) checked
//! ([`recover_image`]).

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use ringtide_platform::{DriverOptions, IoDriver};

use super::{META_LEN, fix_frame_checksums, fix_record_crc};
use crate::wal::segment::{self, HEADER_LEN, SegmentHeader};
use crate::wal::{Entry, Lsn, RecoveryMode, Wal, WalOptions};

// ---------------------------------------------------------------------------------------------
// Directory images

/// File kinds of the image format, chosen by a byte modulo their count.
const KINDS: u8 = 8;

/// Splits a fuzzer input into a small directory image (file names and contents):
///
/// - byte 0: the number of files, modulo 8;
/// - byte 1: fix-ups: bit 0 recomputes the crc of each meta file and segment header, bit 1 the
///   checksum of each frame in a segment (in the format its header names);
/// - then per file: a kind byte, a u16 LE length, and that many bytes (fewer if the input ends).
///   Kinds (the byte modulo 8): 0 `wal.meta`; 1 a segment named after its own header (epoch at
///   offset 24, first lsn at 32: so the name matches unless the fuzzer makes them disagree); 2 a
///   segment named by 16 more bytes after the kind (epoch, first lsn, u64 LE); 3 `wal.meta.tmp`;
///   4 `next-000001.prepared`; 5 `LOCK`; 6 `wal.cut` (the cut record of `truncate_back`);
///   7 `wal.cut.tmp`.
///
/// A name that would not parse as a segment's (an epoch above 10 digits) is still written: it is
/// a file recovery must ignore.
pub fn image_from_bytes(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut input = data;
    let mut take = |n: usize| {
        let (head, rest) = input.split_at(n.min(input.len()));
        input = rest;
        head
    };
    let count = take(1).first().map_or(0, |b| b % 8);
    let fixups = take(1).first().copied().unwrap_or(0);
    let mut files = Vec::new();
    for _ in 0..count {
        let Some(&kind) = take(1).first() else { break };
        let kind = kind % KINDS;
        let explicit = (kind == 2).then(|| {
            let ids = take(16);
            (u64_le(ids, 0), u64_le(ids, 8))
        });
        let len = take(2);
        let len = match len {
            [a, b] => usize::from(u16::from_le_bytes([*a, *b])),
            [a] => usize::from(*a),
            _ => 0,
        };
        let mut bytes = take(len).to_vec();
        let name = match kind {
            0 => segment::META_FILE.to_owned(),
            1 => segment::segment_name(u64_le(&bytes, 24), Lsn(u64_le(&bytes, 32))),
            2 => {
                let (epoch, first) = explicit.unwrap_or_default();
                segment::segment_name(epoch, Lsn(first))
            }
            3 => segment::META_TMP.to_owned(),
            4 => format!("next-000001{}", segment::PREPARED_SUFFIX),
            5 => segment::LOCK_FILE.to_owned(),
            6 => segment::CUT_FILE.to_owned(),
            _ => segment::CUT_TMP.to_owned(),
        };
        if fixups & 1 != 0 {
            match kind {
                0 | 3 | 6 | 7 => fix_record_crc(&mut bytes, META_LEN),
                1 | 2 | 4 => fix_record_crc(&mut bytes, HEADER_LEN as usize),
                _ => {}
            }
        }
        if fixups & 2 != 0
            && matches!(kind, 1 | 2 | 4)
            && let Ok(header) = SegmentHeader::decode(&bytes)
        {
            fix_frame_checksums(header.format, &mut bytes, HEADER_LEN as usize);
        }
        files.push((name, bytes));
    }
    files
}

/// The inverse of [`image_from_bytes`] for files of the kinds it makes, with `fixups` as its byte
/// 1: for writing seed inputs from a real log. Files of other names, past the 7th, or longer than
/// 65,535 bytes are left out; segments get kind 2 (named explicitly) unless their name is the one
/// their header gives.
pub fn image_to_bytes(files: &[(String, Vec<u8>)], fixups: u8) -> Vec<u8> {
    let mut out = vec![0, fixups];
    let mut count = 0u8;
    for (name, bytes) in files {
        let Ok(len) = u16::try_from(bytes.len()) else {
            continue;
        };
        if count == 7 {
            continue;
        }
        let mut head = Vec::new();
        if name == segment::META_FILE {
            head.push(0);
        } else if name == segment::META_TMP {
            head.push(3);
        } else if name.ends_with(segment::PREPARED_SUFFIX) {
            head.push(4);
        } else if name == segment::LOCK_FILE {
            head.push(5);
        } else if name == segment::CUT_FILE {
            head.push(6);
        } else if name == segment::CUT_TMP {
            head.push(7);
        } else if let Some((epoch, first)) = segment::parse_segment_name(name) {
            if *name == segment::segment_name(u64_le(bytes, 24), Lsn(u64_le(bytes, 32))) {
                head.push(1);
            } else {
                head.push(2);
                head.extend_from_slice(&epoch.to_le_bytes());
                head.extend_from_slice(&first.0.to_le_bytes());
            }
        } else {
            continue;
        }
        out.extend_from_slice(&head);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(bytes);
        count += 1;
    }
    out[0] = count;
    out
}

/// The u64 LE at `at`, with zeros for the bytes past the end of `b`.
fn u64_le(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    for (i, byte) in v.iter_mut().enumerate() {
        *byte = b.get(at + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(v)
}

// ---------------------------------------------------------------------------------------------
// Recovery

thread_local! {
    /// A current-thread runtime and a driver built in it, reused by every call on this thread.
    static RUNTIME: (tokio::runtime::Runtime, IoDriver) = {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the fuzz harness builds a tokio runtime");
        let driver = {
            let _in_runtime = runtime.enter();
            // The backend follows RINGTIDE_IO_BACKEND (io_uring where available otherwise).
            IoDriver::new(DriverOptions::default().pool_threads(4))
                .expect("the fuzz harness builds an I/O driver")
        };
        (runtime, driver)
    };
}

/// Writes `files` (name, contents) into a fresh temporary directory and opens the log there
/// read-only and read-write under both recovery modes, reading back every entry through
/// `range(..)` and `stream`. A failed open is fine; a panic is a bug (see the [module](super)
/// documentation for the invariants checked). Names other than plain file names are skipped.
///
/// Blocking: runs a current-thread runtime of its own (one per thread). Not for use inside a
/// runtime; there, call [`recover_image_with`].
pub fn recover_image(files: &[(String, Vec<u8>)]) {
    RUNTIME.with(|(runtime, driver)| runtime.block_on(recover_image_with(driver, files)));
}

/// [`recover_image`] on the given driver, for callers inside a runtime.
pub async fn recover_image_with(driver: &IoDriver, files: &[(String, Vec<u8>)]) {
    // Under the system's temporary directory (`TMPDIR`), removed on drop.
    let dir = tempfile::Builder::new()
        .prefix("ringtide-fuzz-")
        .tempdir()
        .expect("the fuzz harness creates a scratch directory");
    for (name, bytes) in files {
        let plain = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0']);
        if plain {
            // A failed write leaves the image smaller; recovery must cope with any image.
            let _ = std::fs::write(dir.path().join(name), bytes);
        }
    }
    let options = |mode| {
        WalOptions::default()
            .driver(driver.clone())
            .segment_size_bytes(64 << 10)
            .lock_timeout(Duration::ZERO)
            .recovery_mode(mode)
    };
    let strict = RecoveryMode::Strict;
    let tolerant = RecoveryMode::TolerateTornTail;
    let path = dir.path();

    // Read-only first: it changes nothing.
    let ro_strict = open_and_read(path, options(strict), false).await;
    let ro_tolerant = open_and_read(path, options(tolerant), false).await;
    strict_implies_tolerant("read-only", &ro_strict, &ro_tolerant);
    let rw_strict = open_and_read(path, options(strict), true).await;
    let rw_tolerant = open_and_read(path, options(tolerant), true).await;
    strict_implies_tolerant("read-write", &rw_strict, &rw_tolerant);
    if let (Some(ro), Some(rw)) = (&ro_tolerant, &rw_tolerant) {
        same_entries("read-only and read-write opens", ro, rw);
    }
    if let (Some(ro), Some(rw)) = (&ro_strict, &rw_strict) {
        same_entries("strict read-only and read-write opens", ro, rw);
    }
    if let Some(recovered) = &rw_tolerant {
        // Recovery cut any torn tail, so the log reopens strictly, as it was.
        match open_and_read(path, options(strict), true).await {
            Some(again) => {
                same_entries("a reopen after read-write recovery", recovered, &again);
                assert_eq!(again.torn, None, "a torn tail survived recovery");
            }
            None => panic!(
                "a log recovered read-write does not reopen strictly: {}",
                open_error(path, options(strict)).await
            ),
        }
    }
}

/// (lsn, term, timestamp, payload) of an entry read back.
type SeenEntry = (Lsn, Option<u64>, Option<u64>, Vec<u8>);

/// What one open saw.
#[derive(Debug)]
struct Seen {
    first: Lsn,
    last: Lsn,
    /// (lsn, term, timestamp, payload) of every entry.
    entries: Vec<SeenEntry>,
    torn: Option<(u64, u64, u64)>,
}

/// Opens, reads everything through `range(..)` and `stream`, closes; `None` if the open failed.
async fn open_and_read(dir: &Path, options: WalOptions, writable: bool) -> Option<Seen> {
    let wal = if writable {
        Wal::open(dir, options).await
    } else {
        Wal::open_read_only(dir, options).await
    }
    .ok()?;
    let seen = read_all(&wal).await;
    let _ = wal.close().await;
    Some(seen)
}

async fn open_error(dir: &Path, options: WalOptions) -> String {
    match Wal::open(dir, options).await {
        Ok(wal) => {
            let _ = wal.close().await;
            "it opens on a second try".to_owned()
        }
        Err(e) => e.to_string(),
    }
}

async fn read_all(wal: &Wal) -> Seen {
    let (first, last) = (wal.first_lsn(), wal.last_lsn());
    assert!(
        last.0 + 1 >= first.0,
        "the log ends ({last}) before it starts ({first})"
    );
    let stats = wal.stats();
    let torn = stats
        .torn_tail
        .map(|t| (t.offset, t.bytes, t.dropped_entries));
    let as_tuple = |e: Entry| (e.lsn, e.term, e.timestamp_us, e.data.to_vec());
    // Recovery checked every frame it indexed, so every one of them reads back.
    let entries: Vec<SeenEntry> = match wal.range(..).await {
        Ok(entries) => entries.into_iter().map(as_tuple).collect(),
        Err(e) => panic!("entries {first}..={last} were recovered but range(..) fails: {e}"),
    };
    assert_eq!(
        entries.len() as u64,
        last.0 + 1 - first.0,
        "range(..) returned another count than first..=last"
    );
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry.0, Lsn(first.0 + i as u64), "range(..) is not dense");
    }
    let mut streamed = Vec::new();
    let mut stream = wal.stream(first);
    while let Some(item) = stream.next().await {
        match item {
            Ok(entry) => streamed.push(as_tuple(entry)),
            Err(e) => panic!("entries {first}..={last} were recovered but stream fails: {e}"),
        }
    }
    assert!(entries == streamed, "stream and range(..) disagree");
    // A few single reads at the edges.
    for lsn in [first, last, Lsn(first.0.saturating_sub(1)), last.next()] {
        let _ = wal.read(lsn).await;
    }
    Seen {
        first,
        last,
        entries,
        torn,
    }
}

fn strict_implies_tolerant(what: &str, strict: &Option<Seen>, tolerant: &Option<Seen>) {
    let Some(strict) = strict else { return };
    let Some(tolerant) = tolerant else {
        panic!("{what}: a strict open succeeds where a tolerant one fails");
    };
    assert_eq!(
        strict.torn, None,
        "{what}: a strict open reports a torn tail"
    );
    same_entries(what, strict, tolerant);
}

fn same_entries(what: &str, a: &Seen, b: &Seen) {
    assert_eq!(
        (a.first, a.last),
        (b.first, b.last),
        "{what}: the log's bounds differ"
    );
    assert!(a.entries == b.entries, "{what}: the entries differ");
}
