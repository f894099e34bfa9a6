//! Large values: key-value separation in ringtide's key-value store (`ringtide::kv`,
//! `DbOptions::value_separation_threshold_bytes`) and in fjall 3 (`KvSeparationOptions`), each
//! against itself with the values kept in the tables, in one run; one table of each metric, each
//! engine, and three ratios: ringtide ÷ fjall (both separated), ringtide-inline ÷ fjall-inline,
//! and ringtide ÷ ringtide-inline (what separation buys ringtide).
//!
//! Run (from the repository root): `cargo bench --manifest-path compare/Cargo.toml --bench
//! values`. `VALUES_N` records (default 50,000) of a 16-byte key and a `VALUES_BYTES`-byte value
//! (default 16,384: 820 MB of keys and values); `VALUES_SECS` measured seconds of the read phase
//! (default 10, after a 0.5 s warm-up); `VALUES_ENGINES` a comma-separated subset of
//! `ringtide`, `ringtide-inline`, `fjall`, `fjall-inline`. A smoke run: `VALUES_N=3000
//! VALUES_SECS=1`. See compare/README.md.
//!
//! The engines, each in a child process of its own (the library's `child` module), under the
//! memory budget of the YCSB comparison (256 MiB: ringtide's `memory_limit_bytes`, fjall's
//! `MemorySplit`), writes to the OS and not synced:
//! - `ringtide`: `value_separation_threshold_bytes(4 KiB)` (the default): values of 4 KiB or
//!   more go to value-log files at flush; tables and compactions hold and copy pointers;
//! - `ringtide-inline`: `value_separation_threshold_bytes(0)`: every value in the tables;
//! - `fjall`: the keyspace `with_kv_separation(Some(KvSeparationOptions::default()))` (values of
//!   1 KiB or more in blob files);
//! - `fjall-inline`: the keyspace without separation (as the YCSB comparison's `fjall`).
//!
//! The phases, in each child, in this order:
//! 1. **Load** of the N records in random key order (the keys are hashed record numbers, loaded
//!    in record order), in transactions of about 1 MiB (`max(1, 1 MiB / VALUES_BYTES)` records),
//!    not synced, from one writer: records/s until the last commit returns and until the engine
//!    is quiet (`Ycsb::quiesce`: memtables flushed, compactions done); write amplification =
//!    bytes the process wrote (`/proc/self/io` `write_bytes`, from before the open until quiet)
//!    ÷ logical bytes (N × (16 + VALUES_BYTES)); space amplification = the files' allocated
//!    bytes ÷ logical bytes.
//! 2. **Overwrite** of every record once, in another order (a fixed random permutation of the
//!    record numbers), the same transactions: the same figures, for this phase (write
//!    amplification from its start until quiet; space once quiet).
//! 3. **Point reads**, 16 workers (tokio tasks for ringtide, OS threads for fjall), records
//!    uniform over the N, for `VALUES_SECS` after a warm-up: reads/s, p50, p99. Every read
//!    checks the record number at the head of the value.
//! 4. **Full compaction** (`Ycsb::compact`: ringtide `Db::compact_full`, fjall `major_compact`),
//!    then quiet: its time, the bytes written meanwhile, and the files' bytes ÷ live logical
//!    bytes.
//! 5. **Peak resident set** (VmHWM, reset before each phase).
//!
//! After each phase the engine's own figures go to stderr (ringtide's `DbStats`, value-log files
//! among them; fjall's tables and blob files), and the files' sizes.

use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringtide_compare::child::{Metrics, Runs, emit, emit_ops, env_count, env_secs, run_comparison};
use ringtide_compare::exec::{Exec, WARMUP};
use ringtide_compare::fjall::FjallSw;
use ringtide_compare::fmt::{num, ratio, seconds};
use ringtide_compare::hist::Histogram;
use ringtide_compare::measure::{
    disk_bytes, disk_bytes_by_entry, io_write_bytes, peak_rss_kib, reset_peak_rss, rss_kib, settle,
};
#[cfg(feature = "ringtide-kv")]
use ringtide_compare::ringtide_kv::Ringtide;
use ringtide_compare::{MemorySplit, Ycsb};

/// The memory budget of each engine (as the YCSB comparison's).
const BUDGET: u64 = 256 << 20;
const KEY_BYTES: usize = 16;
/// Bytes of a transaction of the load and the overwrite (the records in one: this ÷ the value
/// size, at least 1).
const TXN_BYTES: usize = 1 << 20;
/// Workers of the read phase.
const WORKERS: usize = 16;
/// ringtide's separation threshold in the `ringtide` engine (the store's default, set
/// explicitly so that the report states what ran).
const RINGTIDE_THRESHOLD: u64 = 4 << 10;

const RINGTIDE: &str = "ringtide";
const RINGTIDE_INLINE: &str = "ringtide-inline";
const FJALL: &str = "fjall";
const FJALL_INLINE: &str = "fjall-inline";

fn n_records() -> u64 {
    env_count("VALUES_N", 50_000, 100)
}

/// The value size: at least 8 bytes (the record number).
fn value_bytes() -> usize {
    env_count("VALUES_BYTES", 16 << 10, 8) as usize
}

fn secs() -> Duration {
    env_secs("VALUES_SECS", 10.0)
}

/// Records per transaction of the load and the overwrite.
fn batch(value_bytes: usize) -> usize {
    (TXN_BYTES / value_bytes).max(1)
}

/// Logical bytes of `records` records.
fn logical(records: u64) -> f64 {
    (records * (KEY_BYTES + value_bytes()) as u64) as f64
}

/// The engines this build can run, in table order.
fn engines() -> Vec<&'static str> {
    [
        #[cfg(feature = "ringtide-kv")]
        RINGTIDE,
        #[cfg(feature = "ringtide-kv")]
        RINGTIDE_INLINE,
        FJALL,
        FJALL_INLINE,
    ]
    .to_vec()
}

// ---------------------------------------------------------------------------------------------
// Records (as the YCSB comparison's, with values of `VALUES_BYTES`)

/// splitmix64's finalizer: a bijection of u64.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A bijective hash of the record number, then the number: records lie in key order at random.
fn key(i: u64) -> [u8; KEY_BYTES] {
    let mut k = [0u8; KEY_BYTES];
    k[..8].copy_from_slice(&mix(i).to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

/// The record number (8 bytes, little-endian), then random bytes.
fn value(i: u64, len: usize, rng: &mut fastrand::Rng) -> Bytes {
    let mut v = vec![0u8; len];
    v[..8].copy_from_slice(&i.to_le_bytes());
    rng.fill(&mut v[8..]);
    Bytes::from(v)
}

/// Puts the records of `indexes` in transactions of [`batch`] records, not synced, from one
/// writer.
fn write_records<E: Ycsb>(exec: &Exec, db: &E, indexes: impl Iterator<Item = u64>, seed: u64) {
    let len = value_bytes();
    let per_txn = batch(len);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut indexes = indexes.peekable();
    exec.block_on(async {
        while indexes.peek().is_some() {
            let txn = indexes
                .by_ref()
                .take(per_txn)
                .map(|i| {
                    let v = value(i, len, &mut rng);
                    (Bytes::copy_from_slice(&key(i)), Some(v))
                })
                .collect();
            db.write_batch(txn).await;
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The readers

/// What the readers share: reads that start in `from..until` are counted; they stop at `until`.
struct ReadSpec {
    records: u64,
    from: Instant,
    until: Instant,
}

async fn reader<E: Ycsb>(
    name: &'static str,
    db: Arc<E>,
    spec: Arc<ReadSpec>,
    seed: u64,
) -> Histogram {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut latency = Histogram::default();
    loop {
        let start = Instant::now();
        if start >= spec.until {
            break;
        }
        let i = rng.u64(0..spec.records);
        let got = db.read(&key(i)).await;
        assert_eq!(got, Some(i), "{name}: read record {i}");
        if start >= spec.from {
            latency.record(start.elapsed());
        }
        if E::ASYNC {
            // The 16 tasks share 2 runtime threads: each yields after each read, as tasks of a
            // server would interleave (as in the YCSB comparison).
            tokio::task::yield_now().await;
        }
    }
    latency
}

// ---------------------------------------------------------------------------------------------
// The phases (in the child process of one engine)

/// The files' bytes by entry of `dir`, for the log.
fn log_disk(name: &str, dir: &Path, when: &str) {
    let entries: Vec<String> = disk_bytes_by_entry(dir)
        .iter()
        .map(|(e, b)| format!("{e} {:.1} MiB", *b as f64 / 1048576.0))
        .collect();
    eprintln!("  {name}: files {when}: {}", entries.join(", "));
}

/// The engine's own figures after `phase`: emitted (`<phase>.fig.<name>`) and logged.
fn figures<E: Ycsb>(name: &str, db: &E, phase: &str) {
    let figures = db.figures();
    if figures.is_empty() {
        return;
    }
    let line: Vec<String> = figures
        .iter()
        .map(|(k, v)| {
            emit(&format!("{phase}.fig.{k}"), *v);
            if v.fract() != 0.0 && v.abs() < 1000.0 {
                format!("{k} {v:.2}")
            } else {
                format!("{k} {}", num(*v))
            }
        })
        .collect();
    eprintln!("  {name}: after {phase}: {}", line.join(", "));
}

/// A fixed random permutation of `0..n`: the overwrite's order.
fn permutation(n: u64, seed: u64) -> Vec<u64> {
    let mut order: Vec<u64> = (0..n).collect();
    fastrand::Rng::with_seed(seed).shuffle(&mut order);
    order
}

/// Runs every phase on the engine `name`, which `open` opens in a directory.
fn run<E: Ycsb, F: Future<Output = E>>(
    name: &'static str,
    root: &Path,
    open: impl FnOnce(PathBuf) -> F,
) {
    let n = n_records();
    let secs = secs();
    let dir = root.join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create engine dir");
    let log = |what: String| eprintln!("  {name}: {what}");
    let written = || io_write_bytes().unwrap_or(0) as f64;
    let mut peak = 0.0f64;
    // The peak resident set since the last call; reset for the next phase.
    let mut phase_peak = |metric: &str| {
        let p = peak_rss_kib() as f64 * 1024.0;
        emit(metric, p);
        peak = peak.max(p);
        reset_peak_rss();
    };

    // 1. Load.
    emit("rss_before_open", rss_kib().0 as f64 * 1024.0);
    reset_peak_rss();
    let w0 = written();
    let exec = Exec::new(E::ASYNC);
    let db = Arc::new(exec.block_on(open(dir.clone())));
    let t = Instant::now();
    write_records(&exec, &*db, 0..n, 1);
    let returned = t.elapsed().as_secs_f64();
    let w1 = written();
    exec.block_on(db.quiesce());
    let quiet = t.elapsed().as_secs_f64();
    let w2 = written();
    emit_ops("load", n as f64, returned);
    emit_ops("load_quiet", n as f64, quiet);
    emit("load.write_amp_at_return", (w1 - w0) / logical(n));
    emit("load.write_amp", (w2 - w0) / logical(n));
    emit("load.space_amp", disk_bytes(&dir) as f64 / logical(n));
    phase_peak("peak.load");
    figures(name, &*db, "load");
    log_disk(name, &dir, "after the load");
    log(format!(
        "loaded {n} records in {returned:.1} s, quiet after {quiet:.1} s; wrote {:.0} MiB",
        (w2 - w0) / 1048576.0
    ));

    // 2. Overwrite, in another order.
    settle(&dir);
    let order = permutation(n, 3);
    let w0 = written();
    let t = Instant::now();
    write_records(&exec, &*db, order.iter().copied(), 2);
    let returned = t.elapsed().as_secs_f64();
    let w1 = written();
    exec.block_on(db.quiesce());
    let quiet = t.elapsed().as_secs_f64();
    let w2 = written();
    drop(order);
    emit_ops("overwrite", n as f64, returned);
    emit_ops("overwrite_quiet", n as f64, quiet);
    emit("overwrite.write_amp_at_return", (w1 - w0) / logical(n));
    emit("overwrite.write_amp", (w2 - w0) / logical(n));
    emit("overwrite.space_amp", disk_bytes(&dir) as f64 / logical(n));
    phase_peak("peak.overwrite");
    figures(name, &*db, "overwrite");
    log_disk(name, &dir, "after the overwrite");
    log(format!(
        "overwrote {n} records in {returned:.1} s, quiet after {quiet:.1} s; wrote {:.0} MiB",
        (w2 - w0) / 1048576.0
    ));

    // 3. Point reads, uniform.
    settle(&dir);
    let from = Instant::now() + WARMUP;
    let spec = Arc::new(ReadSpec {
        records: n,
        from,
        until: from + secs,
    });
    let readers = (0..WORKERS as u64)
        .map(|w| exec.spawn(reader(name, db.clone(), spec.clone(), 100 + w)))
        .collect();
    let mut latency = Histogram::default();
    for h in exec.join(readers) {
        latency.merge(&h);
    }
    emit_ops("reads", latency.count() as f64, secs.as_secs_f64());
    for (q, p) in [(0.5, "p50"), (0.99, "p99")] {
        if let Some(v) = latency.quantile(q) {
            emit(&format!("reads.{p}_ns"), v as f64);
        }
    }
    phase_peak("peak.reads");
    figures(name, &*db, "reads");
    log(format!(
        "{} reads in {:.1} s",
        latency.count(),
        secs.as_secs_f64()
    ));

    // 4. Full compaction, then quiet.
    settle(&dir);
    let w0 = written();
    let t = Instant::now();
    exec.block_on(db.compact());
    exec.block_on(db.quiesce());
    let took = t.elapsed().as_secs_f64();
    let w1 = written();
    emit("compaction.ns", took * 1e9);
    emit("compaction.written", w1 - w0);
    emit("compaction.space_amp", disk_bytes(&dir) as f64 / logical(n));
    phase_peak("peak.compaction");
    figures(name, &*db, "compaction");
    log_disk(name, &dir, "after the full compaction");
    log(format!(
        "full compaction in {took:.1} s, {:.0} MiB written",
        (w1 - w0) / 1048576.0
    ));
    emit("peak", peak);

    let db = Arc::into_inner(db).expect("no reader holds the engine");
    exec.block_on(db.close());
    let _ = fs::remove_dir_all(&dir);
}

/// The child process: runs every phase on one engine.
fn run_engine(engine: &str, root: &Path) {
    match engine {
        #[cfg(feature = "ringtide-kv")]
        RINGTIDE => run(RINGTIDE, root, |d| async move {
            Ringtide::open_bounded_with(&d, BUDGET, Some(RINGTIDE_THRESHOLD)).await
        }),
        #[cfg(feature = "ringtide-kv")]
        RINGTIDE_INLINE => run(RINGTIDE_INLINE, root, |d| async move {
            Ringtide::open_bounded_with(&d, BUDGET, Some(0)).await
        }),
        FJALL => run(FJALL, root, |d| async move {
            FjallSw::open_bounded_separated(&d, BUDGET, true)
        }),
        FJALL_INLINE => run(FJALL_INLINE, root, |d| async move {
            FjallSw::open_bounded_separated(&d, BUDGET, false)
        }),
        other => panic!("unknown engine {other:?}; this build has {:?}", engines()),
    }
}

fn setup(engine: &str) -> String {
    let m = MemorySplit::of(BUDGET);
    let fjall = format!(
        "fjall 3.1.13 `SingleWriterTxDatabase`, cache_size {} MiB, max_memtable_size {} MiB",
        m.cache >> 20,
        m.write_buffer >> 20
    );
    match engine {
        RINGTIDE => format!(
            "ringtide::kv, memory_limit_bytes {} MiB, `SyncPolicy::None`; \
             value_separation_threshold_bytes {} KiB (the default), value_log_garbage_ratio \
             0.5 (the default); full compaction `Db::compact_full`",
            BUDGET >> 20,
            RINGTIDE_THRESHOLD >> 10
        ),
        RINGTIDE_INLINE => {
            "as `ringtide`, value_separation_threshold_bytes 0 (off: every value in the tables)"
                .into()
        }
        FJALL => format!(
            "{fjall}; `with_kv_separation(Some(KvSeparationOptions::default()))` (threshold \
             1 KiB, 64 MiB blob files, lz4, staleness 0.25, age cutoff 0.25); full compaction \
             `major_compact`"
        ),
        FJALL_INLINE => format!("{fjall}; no kv separation (as the YCSB comparison's `fjall`)"),
        _ => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// The parent: one child per engine, then the table

/// How a row's value reads.
#[derive(Clone, Copy)]
enum Unit {
    /// Operations per second.
    Rate,
    /// Nanoseconds.
    Nanos,
    Bytes,
    /// A ratio (amplification).
    Factor,
}

fn show(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Rate => format!("{}/s", num(v)),
        Unit::Nanos if v < 1e6 => format!("{:.1} µs", v / 1e3),
        Unit::Nanos => seconds(v / 1e9),
        Unit::Bytes if v < 1e9 => format!("{:.1} MiB", v / 1048576.0),
        Unit::Bytes => format!("{:.2} GiB", v / 1073741824.0),
        Unit::Factor => format!("{v:.2}×"),
    }
}

/// A row's value from an engine's metrics.
type Value = Box<dyn Fn(&Metrics) -> Option<f64>>;

struct Row {
    name: &'static str,
    unit: Unit,
    value: Value,
}

impl Row {
    /// Which way is better, for the reader of the ratios.
    fn better(&self) -> &'static str {
        match self.unit {
            Unit::Rate => "higher",
            _ => "lower",
        }
    }
}

fn row(name: &'static str, unit: Unit, metric: &'static str) -> Row {
    Row {
        name,
        unit,
        value: Box::new(move |m| m.get(metric).copied()),
    }
}

/// Bytes of separated values no table points to any more, after `phase`: ringtide's
/// `value_log_garbage_bytes`, fjall's `fragmented_blob_bytes` (only where it separates).
fn garbage_row(name: &'static str, phase: &'static str) -> Row {
    Row {
        name,
        unit: Unit::Bytes,
        value: Box::new(move |m| {
            let fig = |f: &str| m.get(&format!("{phase}.fig.{f}")).copied();
            fig("value_log_garbage_bytes").or_else(|| fig("blob_stale_bytes"))
        }),
    }
}

fn rate_row(name: &'static str, metric: &'static str) -> Row {
    Row {
        name,
        unit: Unit::Rate,
        value: Box::new(move |m| Runs::rate(m, metric)),
    }
}

fn rows() -> Vec<Row> {
    vec![
        rate_row("1. load (txns of ~1 MiB, not synced), records/s", "load"),
        rate_row("1. load until quiet, records/s", "load_quiet"),
        row(
            "1. write amplification (written ÷ logical, until quiet)",
            Unit::Factor,
            "load.write_amp",
        ),
        row(
            "1. … of it, written when the load returned",
            Unit::Factor,
            "load.write_amp_at_return",
        ),
        row(
            "1. space amplification (files ÷ logical)",
            Unit::Factor,
            "load.space_amp",
        ),
        rate_row("2. overwrite all, records/s", "overwrite"),
        rate_row("2. overwrite until quiet, records/s", "overwrite_quiet"),
        row(
            "2. write amplification of the overwrite",
            Unit::Factor,
            "overwrite.write_amp",
        ),
        row(
            "2. … of it, written when the overwrite returned",
            Unit::Factor,
            "overwrite.write_amp_at_return",
        ),
        row(
            "2. space amplification after it (files ÷ live logical)",
            Unit::Factor,
            "overwrite.space_amp",
        ),
        garbage_row(
            "2. … garbage in value-log / blob files after it",
            "overwrite",
        ),
        rate_row("3. point reads (16 workers, uniform), reads/s", "reads"),
        row("3. … read p50", Unit::Nanos, "reads.p50_ns"),
        row("3. … read p99", Unit::Nanos, "reads.p99_ns"),
        row(
            "4. full compaction (then quiet), time",
            Unit::Nanos,
            "compaction.ns",
        ),
        row(
            "4. … bytes written by it",
            Unit::Bytes,
            "compaction.written",
        ),
        row(
            "4. space amplification after it (files ÷ live logical)",
            Unit::Factor,
            "compaction.space_amp",
        ),
        garbage_row(
            "4. … garbage in value-log / blob files after it",
            "compaction",
        ),
        row("5. peak RSS over the run", Unit::Bytes, "peak"),
        row("5. … during the load", Unit::Bytes, "peak.load"),
        row("5. … during the overwrite", Unit::Bytes, "peak.overwrite"),
        row("5. … during the reads", Unit::Bytes, "peak.reads"),
        row("5. … during the compaction", Unit::Bytes, "peak.compaction"),
    ]
}

/// The ratios of the table: (header, numerator engine, denominator engine).
const RATIOS: [(&str, &str, &str); 3] = [
    ("ringtide ÷ fjall (separated)", RINGTIDE, FJALL),
    (
        "ringtide-inline ÷ fjall-inline",
        RINGTIDE_INLINE,
        FJALL_INLINE,
    ),
    ("ringtide ÷ ringtide-inline", RINGTIDE, RINGTIDE_INLINE),
];

fn table(runs: &Runs) {
    let all = [RINGTIDE, RINGTIDE_INLINE, FJALL, FJALL_INLINE];
    let mut header = String::from("| metric |");
    let mut rule = String::from("|---|");
    for e in all {
        header += &format!(" {e} |");
        rule += "---:|";
    }
    for (h, _, _) in RATIOS {
        header += &format!(" {h} |");
        rule += "---:|";
    }
    header += " better |";
    rule += "---|";
    println!("{header}\n{rule}");
    for r in rows() {
        let of = |e: &str| runs.of(e).and_then(|m| (r.value)(m));
        let mut line = format!("| {} |", r.name);
        for e in all {
            line += &format!(" {} |", of(e).map_or("—".into(), |v| show(r.unit, v)));
        }
        for (_, a, b) in RATIOS {
            line += &format!(" {} |", ratio(of(a), of(b)));
        }
        line += &format!(" {} |", r.better());
        println!("{line}");
    }
}

fn main() {
    let Some(parent) = run_comparison("VALUES_ENGINES", &engines(), "values-compare-", run_engine)
    else {
        return;
    };
    let n = n_records();
    let v = value_bytes();
    let secs = secs();

    let m = MemorySplit::of(BUDGET);
    println!("# Large values: key-value separation\n");
    println!(
        "N = {} records of a {KEY_BYTES}-byte key and a {v}-byte value ({:.2} GB logical), \
         loaded in random key order then each overwritten once in another order, in \
         transactions of {} records (~1 MiB), not synced, one writer; memory budget {} MiB \
         (fjall: memtables {} MiB, cache {} MiB); {WORKERS} readers, uniform, {} s after a \
         {:.1} s warm-up; {}.\n",
        num(n as f64),
        logical(n) / 1e9,
        batch(v),
        BUDGET >> 20,
        m.write_buffer >> 20,
        m.cache >> 20,
        secs.as_secs_f64(),
        WARMUP.as_secs_f64(),
        parent.conditions(),
    );
    parent.runs.print_setups(setup);
    println!();
    table(&parent.runs);
    println!(
        "\nWrite amplification counts every byte the engine's process wrote (`/proc/self/io` \
         `write_bytes`: wal or journal, tables, value-log or blob files, manifests) over the \
         phase, until the engine was quiet (memtables flushed, compactions done), ÷ the \
         phase's logical bytes (N × (16 + value)); space amplification is the files' allocated \
         bytes ÷ the live logical bytes (N × (16 + value)). The garbage rows are ringtide's \
         `value_log_garbage_bytes` and fjall's `fragmented_blob_bytes` (values in value-log or \
         blob files that no table points to, not yet reclaimed). Peak RSS is VmHWM, reset \
         between phases. An engine not run leaves its column and ratios empty.\n"
    );
    eprintln!("total {:.0} s", parent.started.elapsed().as_secs_f64());
}
