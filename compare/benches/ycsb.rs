//! YCSB beyond memory: the workloads of the issue "beyond memory" on a data set larger than the
//! memory the engines may use, ringtide's key-value store (`ringtide::kv`) against fjall 3, in
//! one run; one table of each metric, each engine, the ratio ringtide ÷ fjall and the goal.
//!
//! Run (from the repository root): `cargo bench --manifest-path compare/Cargo.toml --bench ycsb`.
//! `YCSB_N` records (default 10,000,000) of a 16-byte key and a 100-byte value (1.16 GB of
//! keys and values); `YCSB_SECS` measured seconds of each timed phase (default 30, after a 0.5 s
//! warm-up); `YCSB_ENGINES` a comma-separated subset of `ringtide`, `fjall`. Check runs:
//! `YCSB_N=200000 YCSB_SECS=3`. See compare/README.md.
//!
//! Memory: a budget of 256 MiB. ringtide's is set in one place, `bounded_options` in
//! compare/src/ringtide_kv.rs (memtables + block cache, until `DbOptions::memory_limit_bytes`
//! lands); fjall gets the same memtable and cache sizes (`MemorySplit`). Writes are written to
//! the OS and not synced, except in the durable phase.
//!
//! RocksDB is left out: it is behind the `rocksdb` feature of `benches/kv.rs`, and its C++ build
//! takes ~25 minutes; adding it means moving kv.rs's `rocks` module into compare/src/ and giving
//! it an `impl Ycsb`.
//!
//! The phases, in each engine's child process (the library's `child` module), in this order:
//! 1. **Bulk load** of the N records in transactions of 1000, not synced, from one writer:
//!    records/s until the last commit returns, and until the engine is quiet again (memtables
//!    flushed, compactions done); write amplification = bytes the process wrote
//!    (`/proc/self/io` `write_bytes`, from before the open to quiet) ÷ logical bytes (N × 116),
//!    space amplification = bytes of the files ÷ logical bytes.
//! 2. **YCSB A** (50% reads, 50% updates), **B** (95/5), **C** (100% reads), 16 workers (tokio
//!    tasks for ringtide, OS threads for fjall), records chosen zipfian (0.99): ops/s. Each
//!    timed phase (2 to 4) starts with the engine quiet (memtables flushed, compactions done).
//! 3. **YCSB B, durable**: each update synced before it returns: update latency p50 / p99.
//! 4. **YCSB E**: 95% scans of 1–100 records (uniform) from a zipfian record, 5% inserts of new
//!    records: ops/s.
//! 5. **Reads during a compaction**: the engine made quiet, then 16 readers (zipfian) for
//!    `YCSB_SECS`: idle p99; then N/10 records overwritten (not timed) and the engine's
//!    largest compaction run while the 16 readers go on: p99 during it, its duration and the
//!    bytes written meanwhile.
//! 6. **Space** after every record (the N and E's inserts) is overwritten once and then every
//!    other one deleted, once the engine is quiet: bytes of the files.
//! 7. **Peak resident set** (VmHWM, reset before each phase) against the budget.
//!
//! Keys: a bijective hash of the record number (8 bytes) then the number (8 bytes), so records
//! lie in key order at random, as YCSB's hashed insert order; the popular records are scattered
//! over the record numbers (`zipf::ScatteredZipfian`), so they were loaded at random times, not
//! first. Values: the record number (8 bytes) and 92 random bytes; every read checks the number.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
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
use ringtide_compare::zipf::ScatteredZipfian;
use ringtide_compare::{Engine, MemorySplit, Ycsb};

/// The memory budget of each engine.
const BUDGET: u64 = 256 << 20;
/// RSS goal: the budget and 15%.
const RSS_GOAL: f64 = BUDGET as f64 * 1.15;
const KEY_BYTES: usize = 16;
const VALUE_BYTES: usize = 100;
/// Logical bytes of a record.
const RECORD: u64 = (KEY_BYTES + VALUE_BYTES) as u64;
/// Records per transaction of the load, the overwrite and the deletes.
const BATCH: usize = 1000;
/// Workers of the timed phases.
const WORKERS: usize = 16;
/// Longest scan of YCSB E (the lengths are uniform in 1..=SCAN_MAX).
const SCAN_MAX: usize = 100;
/// The compaction phase overwrites one record in this many before the compaction.
const PREP_EVERY: usize = 10;

fn n_records() -> u64 {
    env_count("YCSB_N", 10_000_000, 1000)
}

fn secs() -> Duration {
    env_secs("YCSB_SECS", 30.0)
}

/// The engines this build can run, in table order.
fn engines() -> Vec<&'static str> {
    [
        #[cfg(feature = "ringtide-kv")]
        Ringtide::NAME,
        FjallSw::NAME,
    ]
    .to_vec()
}

// ---------------------------------------------------------------------------------------------
// Records

/// splitmix64's finalizer: a bijection of u64.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn key(i: u64) -> [u8; KEY_BYTES] {
    let mut k = [0u8; KEY_BYTES];
    k[..8].copy_from_slice(&mix(i).to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn value(i: u64, rng: &mut fastrand::Rng) -> Bytes {
    let mut v = vec![0u8; VALUE_BYTES];
    v[..8].copy_from_slice(&i.to_le_bytes());
    rng.fill(&mut v[8..]);
    Bytes::from(v)
}

/// Puts (or deletes) the records of `indexes` in transactions of [`BATCH`], not synced, from
/// one writer.
fn write_records<E: Ycsb>(
    exec: &Exec,
    db: &E,
    indexes: impl Iterator<Item = u64>,
    delete: bool,
    seed: u64,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut indexes = indexes.peekable();
    exec.block_on(async {
        while indexes.peek().is_some() {
            let batch = indexes
                .by_ref()
                .take(BATCH)
                .map(|i| {
                    let v = (!delete).then(|| value(i, &mut rng));
                    (Bytes::copy_from_slice(&key(i)), v)
                })
                .collect();
            db.write_batch(batch).await;
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The workers

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Update,
    Scan,
    Insert,
}

const OPS: usize = 4;

/// A workload: percentages of reads, updates and scans; inserts take the rest.
#[derive(Clone, Copy)]
struct Mix {
    read: u32,
    update: u32,
    scan: u32,
}

const YCSB_A: Mix = Mix::new(50, 50, 0);
const YCSB_B: Mix = Mix::new(95, 5, 0);
const YCSB_C: Mix = Mix::new(100, 0, 0);
/// 95% scans, the rest inserts.
const YCSB_E: Mix = Mix::new(0, 0, 95);

impl Mix {
    const fn new(read: u32, update: u32, scan: u32) -> Self {
        Mix { read, update, scan }
    }

    fn pick(&self, p: u32) -> Op {
        if p < self.read {
            Op::Read
        } else if p < self.read + self.update {
            Op::Update
        } else if p < self.read + self.update + self.scan {
            Op::Scan
        } else {
            Op::Insert
        }
    }
}

/// What the workers of one phase share.
struct Spec {
    mix: Mix,
    durable: bool,
    /// Operations that start in `from..until` are counted; the workers stop at `until` or
    /// when `stop` is set.
    from: Instant,
    until: Instant,
    stop: AtomicBool,
    keys: ScatteredZipfian,
    /// The next record number YCSB E inserts.
    next_insert: Arc<AtomicU64>,
}

/// One worker's (or a phase's) operations and latencies, by [`Op`].
#[derive(Default)]
struct Tally {
    ops: [u64; OPS],
    latency: [Histogram; OPS],
}

impl Tally {
    fn merge(mut tallies: Vec<Tally>) -> Tally {
        let mut all = tallies.pop().unwrap_or_default();
        for t in &tallies {
            for k in 0..OPS {
                all.ops[k] += t.ops[k];
                all.latency[k].merge(&t.latency[k]);
            }
        }
        all
    }

    fn total(&self) -> u64 {
        self.ops.iter().sum()
    }

    fn quantile_ns(&self, op: Op, q: f64) -> Option<f64> {
        self.latency[op as usize].quantile(q).map(|v| v as f64)
    }
}

async fn worker<E: Ycsb>(db: Arc<E>, spec: Arc<Spec>, seed: u64) -> Tally {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut tally = Tally::default();
    loop {
        let start = Instant::now();
        if start >= spec.until || spec.stop.load(Ordering::Relaxed) {
            break;
        }
        let op = spec.mix.pick(rng.u32(0..100));
        match op {
            Op::Read => {
                let i = spec.keys.next(&mut rng);
                let got = db.read(&key(i)).await;
                assert_eq!(got, Some(i), "{}: read record {i}", E::NAME);
            }
            Op::Update => {
                let i = spec.keys.next(&mut rng);
                let k = Bytes::copy_from_slice(&key(i));
                db.write(k, value(i, &mut rng), spec.durable).await;
            }
            Op::Scan => {
                let i = spec.keys.next(&mut rng);
                let len = rng.usize(1..=SCAN_MAX);
                let n = db.scan_from(&key(i), len).await;
                assert!(n >= 1, "{}: a scan from record {i} found nothing", E::NAME);
            }
            Op::Insert => {
                let i = spec.next_insert.fetch_add(1, Ordering::Relaxed);
                let k = Bytes::copy_from_slice(&key(i));
                db.write(k, value(i, &mut rng), false).await;
            }
        }
        if start >= spec.from {
            tally.ops[op as usize] += 1;
            tally.latency[op as usize].record(start.elapsed());
        }
        if E::ASYNC {
            // The 16 tasks share 2 runtime threads: an operation served from memory may never
            // wait, so each worker yields after each one, as tasks of a server would interleave.
            tokio::task::yield_now().await;
        }
    }
    tally
}

/// The timed phases' shared state in a child.
struct Bench<E> {
    exec: Exec,
    db: Arc<E>,
    keys: ScatteredZipfian,
    next_insert: Arc<AtomicU64>,
    seed: u64,
}

impl<E: Ycsb> Bench<E> {
    /// Starts [`WORKERS`] workers of `mix`, counting from `WARMUP` after now until `window`
    /// after that.
    fn start(
        &mut self,
        mix: Mix,
        durable: bool,
        window: Duration,
    ) -> (Arc<Spec>, Vec<ringtide_compare::exec::Worker<Tally>>) {
        let from = Instant::now() + WARMUP;
        let spec = Arc::new(Spec {
            mix,
            durable,
            from,
            until: from + window,
            stop: AtomicBool::new(false),
            keys: self.keys,
            next_insert: self.next_insert.clone(),
        });
        let workers = (0..WORKERS)
            .map(|_| {
                self.seed += 1;
                self.exec
                    .spawn(worker(self.db.clone(), spec.clone(), self.seed))
            })
            .collect();
        (spec, workers)
    }

    /// One timed phase of `mix`: the operations of [`WORKERS`] workers over `secs`.
    fn phase(&mut self, mix: Mix, durable: bool, secs: Duration) -> Tally {
        let (_, workers) = self.start(mix, durable, secs);
        Tally::merge(self.exec.join(workers))
    }
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
fn figures<E: Ycsb>(db: &E, phase: &str) {
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
    eprintln!("  {}: after {phase}: {}", E::NAME, line.join(", "));
}

fn run<E: Ycsb>(root: &Path) {
    let n = n_records();
    let secs = secs();
    let name = E::NAME;
    let dir = root.join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create engine dir");
    let log = |what: String| eprintln!("  {name}: {what}");
    let logical = |records: u64| (records * RECORD) as f64;
    let written = || io_write_bytes().unwrap_or(0) as f64;
    let mut peak = 0.0f64;
    // The peak resident set since the last call, KiB; reset for the next phase.
    let mut phase_peak = |metric: &str| {
        let p = peak_rss_kib() as f64 * 1024.0;
        emit(metric, p);
        peak = peak.max(p);
        reset_peak_rss();
    };

    let t = Instant::now();
    let keys = ScatteredZipfian::new(n);
    log(format!(
        "zipfian over {n} records ready in {:.2} s",
        t.elapsed().as_secs_f64()
    ));

    // 1. Bulk load.
    emit("rss_before_open", rss_kib().0 as f64 * 1024.0);
    reset_peak_rss();
    let w0 = written();
    let exec = Exec::new(E::ASYNC);
    let db = Arc::new(exec.block_on(E::open_bounded(&dir, BUDGET)));
    let t = Instant::now();
    write_records(&exec, &*db, 0..n, false, 1);
    let loaded = t.elapsed().as_secs_f64();
    let w1 = written();
    exec.block_on(db.quiesce());
    let quiet = t.elapsed().as_secs_f64();
    let w2 = written();
    emit_ops("load", n as f64, loaded);
    emit_ops("load_quiet", n as f64, quiet);
    emit("load.write_amp_at_return", (w1 - w0) / logical(n));
    emit("load.write_amp", (w2 - w0) / logical(n));
    emit("load.space_amp", disk_bytes(&dir) as f64 / logical(n));
    phase_peak("peak.load");
    figures(&*db, "load");
    log_disk(name, &dir, "after the load");
    log(format!(
        "loaded {n} records in {loaded:.1} s, quiet after {quiet:.1} s; wrote {:.0} MiB",
        (w2 - w0) / 1048576.0
    ));

    let mut bench = Bench {
        exec,
        db,
        keys,
        next_insert: Arc::new(AtomicU64::new(n)),
        seed: 1000,
    };

    // 2–4. YCSB A, B, C, B durable, E.
    for (metric, mix, durable) in [
        ("a", YCSB_A, false),
        ("b", YCSB_B, false),
        ("c", YCSB_C, false),
        ("b_durable", YCSB_B, true),
        ("e", YCSB_E, false),
    ] {
        // Each phase starts quiet: no phase inherits another's memtables (whose many versions
        // of the popular records slow scans in both engines) or compaction debt.
        settle(&dir);
        bench.exec.block_on(bench.db.quiesce());
        let t = bench.phase(mix, durable, secs);
        emit_ops(metric, t.total() as f64, secs.as_secs_f64());
        for (op, label) in [(Op::Read, "read"), (Op::Update, "update")] {
            for (q, p) in [(0.5, "p50"), (0.99, "p99")] {
                if let Some(v) = t.quantile_ns(op, q) {
                    emit(&format!("{metric}.{label}_{p}_ns"), v);
                }
            }
        }
        log(format!(
            "YCSB {metric}: {:.0} ops/s",
            t.total() as f64 / secs.as_secs_f64()
        ));
        figures(&*bench.db, metric);
    }
    phase_peak("peak.ycsb");

    // 5. Reads, idle and during a compaction.
    settle(&dir);
    bench.exec.block_on(bench.db.quiesce());
    let idle = bench.phase(YCSB_C, false, secs);
    emit(
        "idle.read_p50_ns",
        idle.quantile_ns(Op::Read, 0.5).unwrap_or(0.0),
    );
    emit(
        "idle.read_p99_ns",
        idle.quantile_ns(Op::Read, 0.99).unwrap_or(0.0),
    );
    write_records(
        &bench.exec,
        &*bench.db,
        (0..n).step_by(PREP_EVERY),
        false,
        2,
    );
    // Readers through the warm-up, then the compaction; they stop when it ends.
    let (spec, readers) = bench.start(YCSB_C, false, Duration::from_secs(24 * 3600));
    thread::sleep(WARMUP);
    let w0 = written();
    let t = Instant::now();
    let compaction = bench.exec.spawn({
        let (db, spec) = (bench.db.clone(), spec.clone());
        async move {
            db.compact().await;
            spec.stop.store(true, Ordering::Relaxed);
        }
    });
    bench.exec.join(vec![compaction]);
    let took = t.elapsed().as_secs_f64();
    let w1 = written();
    let during = Tally::merge(bench.exec.join(readers));
    emit("compaction.ns", took * 1e9);
    emit("compaction.written", w1 - w0);
    emit("compaction.reads", during.total() as f64);
    for (q, p) in [(0.5, "p50"), (0.99, "p99")] {
        let v = during.quantile_ns(Op::Read, q).unwrap_or(0.0);
        emit(&format!("compaction.read_{p}_ns"), v);
    }
    phase_peak("peak.compaction");
    figures(&*bench.db, "compaction");
    log(format!(
        "compaction in {took:.1} s ({:.0} MiB written), {} reads meanwhile",
        (w1 - w0) / 1048576.0,
        during.total()
    ));

    // 6. Space after every record is overwritten once, then every other one deleted.
    settle(&dir);
    let records = bench.next_insert.load(Ordering::Relaxed);
    let t = Instant::now();
    write_records(&bench.exec, &*bench.db, 0..records, false, 3);
    write_records(&bench.exec, &*bench.db, (0..records).step_by(2), true, 4);
    bench.exec.block_on(bench.db.quiesce());
    emit("space.s", t.elapsed().as_secs_f64());
    emit("space.records", records as f64);
    emit("space.live_bytes", logical(records / 2));
    emit("space.bytes", disk_bytes(&dir) as f64);
    phase_peak("peak.space");
    figures(&*bench.db, "space");
    log_disk(name, &dir, "after the overwrite and deletes");
    emit("peak", peak);
    log(format!(
        "overwrote {records} records and deleted half in {:.1} s",
        t.elapsed().as_secs_f64()
    ));

    let Bench { exec, db, .. } = bench;
    let db = Arc::into_inner(db).expect("no worker holds the engine");
    exec.block_on(db.close());
    let _ = fs::remove_dir_all(&dir);
}

/// The child process: runs every phase on one engine.
fn run_engine(engine: &str, root: &Path) {
    match engine {
        #[cfg(feature = "ringtide-kv")]
        Ringtide::NAME => run::<Ringtide>(root),
        FjallSw::NAME => run::<FjallSw>(root),
        other => panic!("unknown engine {other:?}; this build has {:?}", engines()),
    }
}

fn setup(engine: &str) -> String {
    let (setup, compaction) = match engine {
        #[cfg(feature = "ringtide-kv")]
        Ringtide::NAME => (Ringtide::ycsb_setup(BUDGET), Ringtide::COMPACTION),
        FjallSw::NAME => (FjallSw::ycsb_setup(BUDGET), FjallSw::COMPACTION),
        _ => return String::new(),
    };
    format!("{setup}; compaction row: {compaction}")
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

/// What a row is held to, on ringtide's figures.
#[derive(Clone, Copy)]
enum Goal {
    /// No goal: for reading the others.
    None,
    /// ringtide ÷ fjall at least this.
    AtLeast(f64),
    /// ringtide ÷ fjall at most this.
    AtMost(f64),
    /// ringtide's own value at most this.
    Below(f64, &'static str),
}

impl Goal {
    fn text(self) -> String {
        match self {
            Goal::None => String::new(),
            Goal::AtLeast(x) => format!("≥ {x}× fjall"),
            Goal::AtMost(1.0) => "≤ fjall's".into(),
            Goal::AtMost(x) => format!("≤ {x}× fjall"),
            Goal::Below(_, what) => what.into(),
        }
    }

    fn met(self, rt: Option<f64>, fj: Option<f64>) -> &'static str {
        let verdict = |ok: bool| if ok { "met" } else { "**not met**" };
        match (self, rt, fj) {
            (Goal::None, _, _) => "",
            (Goal::AtLeast(x), Some(r), Some(f)) if f > 0.0 => verdict(r / f >= x),
            (Goal::AtMost(x), Some(r), Some(f)) if f > 0.0 => verdict(r / f <= x),
            (Goal::Below(x, _), Some(r), _) => verdict(r <= x),
            _ => "—",
        }
    }
}

/// A row's value from an engine's metrics.
type Value = Box<dyn Fn(&Metrics) -> Option<f64>>;

struct Row {
    name: String,
    unit: Unit,
    goal: Goal,
    value: Value,
}

fn row(name: &str, unit: Unit, goal: Goal, metric: &'static str) -> Row {
    Row {
        name: name.into(),
        unit,
        goal,
        value: Box::new(move |m| m.get(metric).copied()),
    }
}

fn rate_row(name: &str, goal: Goal, metric: &'static str) -> Row {
    Row {
        name: name.into(),
        unit: Unit::Rate,
        goal,
        value: Box::new(move |m| Runs::rate(m, metric)),
    }
}

/// `a ÷ b` of two metrics.
fn quotient_row(name: &str, goal: Goal, a: &'static str, b: &'static str) -> Row {
    Row {
        name: name.into(),
        unit: Unit::Factor,
        goal,
        value: Box::new(move |m| Some(m.get(a)? / m.get(b).filter(|b| **b > 0.0)?)),
    }
}

fn rows(secs: Duration) -> Vec<Row> {
    let s = secs.as_secs_f64();
    vec![
        rate_row(
            "1. bulk load (txns of 1000, not synced), records/s",
            Goal::AtLeast(1.5),
            "load",
        ),
        rate_row(
            "1. bulk load until quiet (flushed, compactions done), records/s",
            Goal::None,
            "load_quiet",
        ),
        row(
            "1. write amplification (bytes written ÷ logical)",
            Unit::Factor,
            Goal::None,
            "load.write_amp",
        ),
        row(
            "1. … of it, written when the load returned",
            Unit::Factor,
            Goal::None,
            "load.write_amp_at_return",
        ),
        row(
            "1. space amplification (files ÷ logical)",
            Unit::Factor,
            Goal::None,
            "load.space_amp",
        ),
        rate_row(
            "2. YCSB A (50% reads, 50% updates)",
            Goal::AtLeast(1.0),
            "a",
        ),
        rate_row("2. YCSB B (95% reads, 5% updates)", Goal::AtLeast(1.0), "b"),
        rate_row("2. YCSB C (100% reads)", Goal::AtLeast(1.0), "c"),
        rate_row("3. YCSB B, durable updates", Goal::None, "b_durable"),
        row(
            "3. … durable update p50",
            Unit::Nanos,
            Goal::AtMost(1.0),
            "b_durable.update_p50_ns",
        ),
        row(
            "3. … durable update p99",
            Unit::Nanos,
            Goal::AtMost(1.0),
            "b_durable.update_p99_ns",
        ),
        row(
            "3. … read p99",
            Unit::Nanos,
            Goal::None,
            "b_durable.read_p99_ns",
        ),
        rate_row(
            "4. YCSB E (95% scans of 1–100, 5% inserts)",
            Goal::AtLeast(1.0),
            "e",
        ),
        row(
            &format!("5. read p99, idle ({s} s)"),
            Unit::Nanos,
            Goal::None,
            "idle.read_p99_ns",
        ),
        row(
            "5. read p99 during the compaction",
            Unit::Nanos,
            Goal::None,
            "compaction.read_p99_ns",
        ),
        quotient_row(
            "5. … during ÷ idle",
            Goal::Below(2.0, "≤ 2× idle"),
            "compaction.read_p99_ns",
            "idle.read_p99_ns",
        ),
        row(
            "5. compaction time",
            Unit::Nanos,
            Goal::None,
            "compaction.ns",
        ),
        row(
            "5. bytes written during the compaction",
            Unit::Bytes,
            Goal::None,
            "compaction.written",
        ),
        row(
            "6. space after overwriting all, deleting half",
            Unit::Bytes,
            Goal::None,
            "space.bytes",
        ),
        quotient_row(
            "6. … ÷ logical bytes still live",
            Goal::None,
            "space.bytes",
            "space.live_bytes",
        ),
        row(
            "7. peak RSS over the run",
            Unit::Bytes,
            Goal::Below(RSS_GOAL, "≤ budget + 15% (294 MiB)"),
            "peak",
        ),
        row("7. … during the load", Unit::Bytes, Goal::None, "peak.load"),
        row("7. … during YCSB A–E", Unit::Bytes, Goal::None, "peak.ycsb"),
        row(
            "7. … during the compaction phase",
            Unit::Bytes,
            Goal::None,
            "peak.compaction",
        ),
        row(
            "7. … during the overwrite and deletes",
            Unit::Bytes,
            Goal::None,
            "peak.space",
        ),
    ]
}

fn table(runs: &Runs, secs: Duration) {
    let rt = runs.ringtide();
    let fj = runs.of(FjallSw::NAME);
    println!("| metric | ringtide | fjall | ringtide ÷ fjall | goal | goal met |");
    println!("|---|---:|---:|---:|---|---|");
    for r in rows(secs) {
        let a = rt.and_then(|m| (r.value)(m));
        let b = fj.and_then(|m| (r.value)(m));
        let cell = |v: Option<f64>| v.map_or("—".into(), |v| show(r.unit, v));
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.name,
            cell(a),
            cell(b),
            ratio(a, b),
            r.goal.text(),
            r.goal.met(a, b),
        );
    }
}

fn main() {
    let Some(parent) = run_comparison("YCSB_ENGINES", &engines(), "ycsb-compare-", run_engine)
    else {
        return;
    };
    let n = n_records();
    let secs = secs();

    let m = MemorySplit::of(BUDGET);
    println!("# YCSB beyond memory\n");
    println!(
        "N = {} records of a {KEY_BYTES}-byte key and a {VALUE_BYTES}-byte value ({:.2} GB \
         logical); memory budget {} MiB (memtables {} × {} MiB + cache {} MiB); {WORKERS} \
         workers; zipfian 0.99; timed phases {} s after a {:.1} s warm-up; writes not synced \
         but in the durable phase; {}; fjall 3.1.13.\n",
        num(n as f64),
        (n * RECORD) as f64 / 1e9,
        BUDGET >> 20,
        1 + m.immutables,
        m.write_buffer >> 20,
        m.cache >> 20,
        secs.as_secs_f64(),
        WARMUP.as_secs_f64(),
        parent.conditions(),
    );
    parent.runs.print_setups(setup);
    println!("- RocksDB: not in this bench (see its header).\n");
    table(&parent.runs, secs);
    println!(
        "\nGoals are checked on ringtide's figures. Write amplification counts every byte the \
         engine's process wrote (`/proc/self/io` `write_bytes`: wal or journal, tables, \
         manifests) from before the open until the engine was quiet after the load. Peak RSS \
         is VmHWM, reset between phases. A run with one engine leaves the other's column and \
         the ratios empty.\n"
    );
    eprintln!("total {:.0} s", parent.started.elapsed().as_secs_f64());
}
