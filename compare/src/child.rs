//! Each engine runs in a child process of its own (the bench binary again, with the engine's
//! name in its environment), so that its resident-set figures start from a fresh heap and no
//! engine's background threads or caches outlive its rows. The child prints
//! `@metric <name> <value>` lines on stdout ([`emit`]); the parent gathers them
//! ([`run_engines`]) and prints the tables.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::measure::settle;

/// A child's metrics by name.
pub type Metrics = BTreeMap<String, f64>;

const ENGINE_VAR: &str = "COMPARE_CHILD_ENGINE";
const ROOT_VAR: &str = "COMPARE_CHILD_ROOT";
const PREFIX: &str = "@metric";

/// In a child process: the engine it runs and the directory to run it under.
fn child() -> Option<(String, PathBuf)> {
    let engine = std::env::var(ENGINE_VAR).ok()?;
    let root = std::env::var(ROOT_VAR).expect("the parent sets the child's root");
    Some((engine, PathBuf::from(root)))
}

/// One result line for the parent.
pub fn emit(metric: &str, value: f64) {
    println!("{PREFIX} {metric} {value}");
}

/// A timed phase: `ops` operations in `secs` seconds.
pub fn emit_ops(metric: &str, ops: f64, secs: f64) {
    emit(&format!("{metric}.ops"), ops);
    emit(&format!("{metric}.s"), secs);
}

/// Runs one engine's child; its stderr passes through, its stdout lines other than metrics are
/// echoed to stderr.
fn run_child(engine: &str, root: &Path) -> Result<Metrics, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .env(ENGINE_VAR, engine)
        .env(ROOT_VAR, root)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut m = Metrics::new();
    let out = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(out).lines() {
        let line = line.map_err(|e| e.to_string())?;
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(PREFIX), Some(k), Some(v)) => {
                m.insert(k.to_string(), v.parse().map_err(|_| line.clone())?);
            }
            _ => eprintln!("  {engine}: {line}"),
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(m)
    } else {
        Err(format!("{status}"))
    }
}

/// The engines' results, in table order; a failed engine has none.
pub struct Runs {
    pub results: Vec<(&'static str, Option<Metrics>)>,
}

impl Runs {
    /// `<metric>.ops` over `<metric>.s`.
    pub fn rate(m: &Metrics, metric: &str) -> Option<f64> {
        let ops = m.get(&format!("{metric}.ops"))?;
        let s = m.get(&format!("{metric}.s"))?;
        (*s > 0.0).then(|| ops / s)
    }

    /// The metrics of `engine`, if it ran and succeeded.
    pub fn of(&self, engine: &str) -> Option<&Metrics> {
        self.results
            .iter()
            .find(|(e, _)| *e == engine)
            .and_then(|(_, m)| m.as_ref())
    }

    pub fn ringtide(&self) -> Option<&Metrics> {
        self.of("ringtide")
    }

    /// Prints a line `- engine: setup` for each engine.
    pub fn print_setups<S: std::fmt::Display>(&self, setup: impl Fn(&str) -> S) {
        for (engine, _) in &self.results {
            println!("- {engine}: {}", setup(engine));
        }
    }
}

/// What the parent of a comparison has once every engine ran.
pub struct Parent {
    pub runs: Runs,
    /// `compare/target/`, under which the engines' files were.
    pub target: PathBuf,
    /// When the first engine started.
    pub started: Instant,
}

impl Parent {
    /// Where the engines ran, for a report's header: "each engine in a process of its own;
    /// files under …; N cores".
    pub fn conditions(&self) -> String {
        format!(
            "each engine in a process of its own; files under {}; {} cores",
            self.target.display(),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        )
    }
}

/// A comparison bench's `main` up to its tables. In a child process: runs `run_engine` on the
/// child's engine and its directory, and returns `None`. In the parent: runs the engines that
/// `var` names (a comma-separated subset of `all`; all of them where it is unset), each in a
/// child of its own, under a temporary directory of `compare/target/` named `prefix…` (removed
/// before this returns), and returns their results.
pub fn run_comparison(
    var: &str,
    all: &[&'static str],
    prefix: &str,
    run_engine: impl FnOnce(&str, &Path),
) -> Option<Parent> {
    if let Some((engine, root)) = child() {
        run_engine(&engine, &root);
        return None;
    }
    let chosen = chosen_engines(var, all);
    let (target, tmp) = scratch_dir(prefix);
    let started = Instant::now();
    let runs = run_engines(chosen, tmp.path());
    Some(Parent {
        runs,
        target,
        started,
    })
}

/// The parent: each engine of `chosen` in a child of its own, one after the other, under
/// `root`, with [`settle`] before each.
fn run_engines(chosen: Vec<&'static str>, root: &Path) -> Runs {
    let mut runs = Runs {
        results: Vec::new(),
    };
    for engine in chosen {
        settle(root);
        eprintln!("{engine}:");
        let t = Instant::now();
        match run_child(engine, root) {
            Ok(m) => {
                eprintln!("  {engine}: done in {:.0} s", t.elapsed().as_secs_f64());
                runs.results.push((engine, Some(m)));
            }
            Err(e) => {
                eprintln!("  {engine}: FAILED ({e})");
                runs.results.push((engine, None));
            }
        }
    }
    runs
}

/// The engines named in the comma-separated list of `var`, or `all` where it is unset.
fn chosen_engines(var: &str, all: &[&'static str]) -> Vec<&'static str> {
    match std::env::var(var) {
        Ok(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                *all.iter()
                    .find(|e| **e == s)
                    .unwrap_or_else(|| panic!("{var}: {s:?} is not one of {all:?}"))
            })
            .collect(),
        Err(_) => all.to_vec(),
    }
}

/// A count from `var` (`_` and `,` allowed as separators), at least `min`; else `default`.
pub fn env_count(var: &str, default: u64, min: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.replace(['_', ','], "").parse::<u64>().ok())
        .filter(|n| *n >= min)
        .unwrap_or(default)
}

/// Seconds from `var` (above 0); else `default`.
pub fn env_secs(var: &str, default: f64) -> Duration {
    let s = std::env::var(var)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(default);
    Duration::from_secs_f64(s)
}

/// `compare/target/` (created) and a temporary directory under it named `prefix…`: on the
/// checkout's disk, never `/tmp`, which may be tmpfs where fsync costs nothing.
fn scratch_dir(prefix: &str) -> (PathBuf, tempfile::TempDir) {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).expect("create compare/target");
    let tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&target)
        .expect("tempdir_in compare/target");
    (target, tmp)
}
