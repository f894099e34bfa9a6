//! A simulated disk for crash and fault tests (feature `sim`): a third way for an
//! [`IoDriver`](crate::IoDriver) to run, entirely in memory and deterministic from a seed.
//!
//! # What it models
//!
//! Every file has two images: what the process has **written** (what reads return) and what is
//! **durable**. Writes change the written image and mark the 512-byte sectors they touch dirty.
//! `fdatasync`/`fsync` copy the dirty sectors and the length to the durable image; a write with
//! `RWF_DSYNC` makes its own sectors (and the length they need) durable and nothing else.
//!
//! A [`crash`](SimDisk::crash) — a power loss — keeps the durable image plus **any subset of the
//! dirty sectors** (so an unsynced write can be lost whole, or torn at sector granularity, and
//! later writes can land while earlier ones do not); a length changed since the last sync keeps
//! either its old or its new value. Directories journal their changes (create, rename, remove)
//! since their last `fsync`; a crash keeps a **prefix** of that journal, as an ordered
//! metadata journal (ext4, xfs) does, so a name created or renamed since the last directory sync
//! may vanish, and a removed one may come back.
//!
//! After a crash, the drivers made before it fail every operation with `EIO` (the process that
//! used them is gone); [`driver`](SimDisk::driver) makes a fresh one, as a restarted process
//! would, that sees the crashed image.
//!
//! Faults: [`inject`](SimDisk::inject) makes chosen operations fail — `EIO` on read, write or
//! sync, a short write, `ENOSPC`, a bit flipped in data read back — at the n-th eligible operation
//! or at random with a rate; [`set_capacity`](SimDisk::set_capacity) fills the disk up for real;
//! [`crash_after`](SimDisk::crash_after) crashes at a chosen operation number.
//!
//! A handle opened [`direct`](crate::OpenOptions::direct) checks its I/O as Linux does for
//! `O_DIRECT`: a read or write whose file offset, or any buffer's memory address or length, is
//! not a multiple of [`SECTOR`] fails with `EINVAL` and changes nothing (it is not counted as an
//! operation either). An empty transfer is not checked, as Linux returns 0 before checking.
//!
//! Every random choice comes from the seed given to [`SimDisk::new`]. On a current-thread tokio
//! runtime the operations of a workload run in the same order each time, so a failing run
//! replays from its seed and crash point.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use ringtide_platform::OpenOptions;
//! use ringtide_platform::sim::SimDisk;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let disk = SimDisk::new(7);
//! let driver = disk.driver();
//! let opts = OpenOptions::new().write(true).create(true);
//! let file = driver.open("/synced", &opts).await?;
//! file.write_all_at(Bytes::from_static(b"kept"), 0).await.0?;
//! file.sync_data().await?;
//! driver.sync_dir("/").await?;
//! let other = driver.open("/unsynced", &opts).await?;
//! other.write_all_at(Bytes::from_static(b"maybe"), 0).await.0?;
//!
//! disk.crash();
//! assert_eq!(disk.read_file("/synced")?, b"kept");
//! assert!(driver.open("/synced", &OpenOptions::new().read(true)).await.is_err());
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Component, Path};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};

use crate::driver::{DirEntry, EntryKind};
use crate::sys::SyncKind;

/// The sector size of the simulated device: the unit a crash keeps or loses.
pub const SECTOR: u64 = 512;

/// The largest file the simulated disk holds (it lives in memory); beyond it: `EFBIG`.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// `EINVAL` unless a transfer at file offset `offset` through the memory `segments` (address,
/// length) is aligned as Linux asks of an `O_DIRECT` file: the offset and each segment's address
/// and length multiples of [`SECTOR`] (so the total length is one too). Empty segments are
/// skipped and an empty transfer passes, as in Linux (`iov_iter_alignment`; a read or write of
/// nothing returns 0 before any check).
fn check_direct(offset: u64, segments: impl IntoIterator<Item = (usize, usize)>) -> io::Result<()> {
    let mut total = 0u64;
    let mut bits = offset;
    for (addr, len) in segments {
        if len == 0 {
            continue;
        }
        total = total.saturating_add(len as u64);
        bits |= addr as u64 | len as u64;
    }
    if total == 0 || bits.is_multiple_of(SECTOR) {
        Ok(())
    } else {
        Err(err(libc::EINVAL))
    }
}

/// `offset + len` if the result fits a simulated file, else `EFBIG`.
fn file_end(offset: u64, len: u64) -> io::Result<u64> {
    offset
        .checked_add(len)
        .filter(|&end| end <= MAX_FILE_BYTES)
        .ok_or_else(|| err(libc::EFBIG))
}

const ROOT: u64 = 1;

/// A fault the simulated disk can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FaultKind {
    /// A read fails with `EIO`.
    ReadError,
    /// A write fails with `EIO`; nothing of it reaches the written image.
    WriteError,
    /// An `fsync`/`fdatasync` (or the sync half of a write-and-sync) fails with `EIO`; the dirty
    /// sectors stay dirty, so a later crash may lose them.
    SyncError,
    /// A write stores only a prefix of its bytes and says so in its count; the caller's retry
    /// loop sends the rest as a new operation.
    ShortWrite,
    /// A write, allocation or extension fails with `ENOSPC`.
    NoSpace,
    /// A read returns its data with one bit flipped (the disk itself is unchanged).
    BitFlip,
}

impl FaultKind {
    /// Every fault kind.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::ReadError,
        FaultKind::WriteError,
        FaultKind::SyncError,
        FaultKind::ShortWrite,
        FaultKind::NoSpace,
        FaultKind::BitFlip,
    ];

    fn applies_to(self, op: Op) -> bool {
        match self {
            FaultKind::ReadError | FaultKind::BitFlip => op == Op::Read,
            FaultKind::WriteError | FaultKind::ShortWrite => op == Op::Write,
            FaultKind::SyncError => op == Op::Sync,
            FaultKind::NoSpace => matches!(op, Op::Write | Op::Allocate),
        }
    }
}

/// When an injected fault fires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    /// At the n-th eligible operation from now (1 = the next one), once.
    Nth(u64),
    /// At each eligible operation with this probability (0.0–1.0), until cleared.
    Rate(f64),
}

/// What a crash did to the unsynced state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Dirty sectors that reached the durable image anyway.
    pub sectors_kept: u64,
    /// Dirty sectors that were lost.
    pub sectors_lost: u64,
    /// Files whose unsynced writes were kept in part only (torn).
    pub files_torn: u64,
    /// Directory changes (create, rename, remove) since the last directory sync that survived.
    pub dir_changes_kept: u64,
    /// Directory changes that were lost.
    pub dir_changes_lost: u64,
}

/// Counters of a simulated disk since it was made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Operations run (the numbering [`SimDisk::crash_after`] uses).
    pub ops: u64,
    /// Crashes.
    pub crashes: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<FaultKind, u64>,
    /// Sum of what the crashes did.
    pub crash_effects: CrashReport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Meta,
    Read,
    Write,
    Sync,
    Allocate,
}

/// A deterministic generator (splitmix64): every random choice of the disk.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

#[derive(Debug)]
struct FileNode {
    data: Vec<u8>,
    durable: Vec<u8>,
    dirty: BTreeSet<u64>,
}

impl FileNode {
    fn mark_dirty(&mut self, from: u64, to: u64) {
        if to > from {
            self.dirty.extend(from / SECTOR..to.div_ceil(SECTOR));
        }
    }

    /// Copies the sectors `sectors` (and a length covering `min_len`) to the durable image.
    fn persist(&mut self, sectors: impl IntoIterator<Item = u64>, min_len: Option<u64>) {
        if let Some(len) = min_len {
            let len = len.min(self.data.len() as u64) as usize;
            if self.durable.len() < len {
                self.durable.resize(len, 0);
            }
        }
        for s in sectors {
            let start = (s * SECTOR) as usize;
            let end = (((s + 1) * SECTOR) as usize).min(self.data.len());
            if start >= end || start >= self.durable.len() {
                continue;
            }
            let end = end.min(self.durable.len());
            self.durable[start..end].copy_from_slice(&self.data[start..end]);
            self.dirty.remove(&s);
        }
    }

    fn sync(&mut self) {
        self.durable.resize(self.data.len(), 0);
        let dirty = std::mem::take(&mut self.dirty);
        self.persist(dirty, None);
        self.dirty.clear();
    }
}

type Change = Vec<(OsString, Option<u64>)>;

#[derive(Debug, Default)]
struct DirNode {
    entries: BTreeMap<OsString, u64>,
    durable: BTreeMap<OsString, u64>,
    journal: Vec<Change>,
}

impl DirNode {
    fn apply(&mut self, change: Change) {
        for (name, ino) in &change {
            match ino {
                Some(ino) => self.entries.insert(name.clone(), *ino),
                None => self.entries.remove(name),
            };
        }
        self.journal.push(change);
    }
}

#[derive(Debug)]
enum Node {
    File(FileNode),
    Dir(DirNode),
}

struct ArmedFault {
    kind: FaultKind,
    trigger: Trigger,
}

struct World {
    seed: u64,
    rng: Rng,
    generation: u64,
    crash_at: Option<u64>,
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    faults: Vec<ArmedFault>,
    capacity: Option<u64>,
    locks: HashMap<u64, u64>,
    /// Open handles per inode.
    open: HashMap<u64, u64>,
    next_handle: u64,
    stats: SimStats,
    /// Writes through `O_DIRECT` handles fail with `EINVAL` (see `SimDisk::refuse_direct_writes`).
    refuse_direct_writes: bool,
}

fn err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn crashed() -> io::Error {
    io::Error::other("simulated power loss: this driver's machine crashed (make a new driver)")
}

impl World {
    /// Bytes held by files a name reaches or a handle keeps open (a removed file's space is
    /// freed when its last handle goes, as on a real file system).
    fn used_bytes(&self) -> u64 {
        let reached = self.reachable();
        self.nodes
            .iter()
            .filter(|(ino, _)| reached.contains(ino) || self.open.contains_key(ino))
            .map(|(_, n)| match n {
                Node::File(f) => f.data.len() as u64,
                Node::Dir(_) => 0,
            })
            .sum()
    }

    fn reachable(&self) -> BTreeSet<u64> {
        let mut reached = BTreeSet::new();
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            if !reached.insert(ino) {
                continue;
            }
            if let Some(Node::Dir(d)) = self.nodes.get(&ino) {
                stack.extend(d.entries.values().copied());
            }
        }
        reached
    }

    /// A failed sync: as Linux does after a writeback error, the dirty sectors are marked clean
    /// without reaching the disk, so a later sync that succeeds does not save them ("fsyncgate").
    /// Reads still return the written data until a crash.
    fn fail_sync(&mut self, ino: u64) -> io::Error {
        if let Some(Node::File(f)) = self.nodes.get_mut(&ino) {
            f.dirty.clear();
        }
        err(libc::EIO)
    }

    /// Starts an operation of a driver of `generation`: counts it, crashes if its number was
    /// chosen, and decides the injected fault (if any).
    fn begin(&mut self, generation: u64, op: Op) -> io::Result<Option<FaultKind>> {
        if generation != self.generation {
            return Err(crashed());
        }
        self.stats.ops += 1;
        if self.crash_at.is_some_and(|at| self.stats.ops > at) {
            self.crash_at = None;
            self.crash();
            return Err(crashed());
        }
        let mut fired = None;
        let mut i = 0;
        while i < self.faults.len() {
            let fault = &mut self.faults[i];
            if fired.is_none() && fault.kind.applies_to(op) {
                match &mut fault.trigger {
                    Trigger::Nth(n) => {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            fired = Some(fault.kind);
                            self.faults.remove(i);
                            continue;
                        }
                    }
                    Trigger::Rate(p) => {
                        let p = *p;
                        if self.rng.chance(p) {
                            fired = Some(fault.kind);
                        }
                    }
                }
            }
            i += 1;
        }
        if let Some(kind) = fired {
            *self.stats.faults.entry(kind).or_default() += 1;
        }
        Ok(fired)
    }

    fn dir(&self, ino: u64) -> io::Result<&DirNode> {
        match self.nodes.get(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(err(libc::ENOTDIR)),
            None => Err(err(libc::ENOENT)),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> io::Result<&mut DirNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(err(libc::ENOTDIR)),
            None => Err(err(libc::ENOENT)),
        }
    }

    fn file_mut(&mut self, ino: u64) -> io::Result<&mut FileNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => Ok(f),
            Some(Node::Dir(_)) => Err(err(libc::EISDIR)),
            None => Err(err(libc::EBADF)),
        }
    }

    /// The inode of a directory path.
    fn lookup_dir(&self, path: &Path) -> io::Result<u64> {
        if path.as_os_str().is_empty() {
            return Err(err(libc::ENOENT));
        }
        let mut ino = ROOT;
        for component in path.components() {
            match component {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(name) => {
                    ino = *self.dir(ino)?.entries.get(name).ok_or(err(libc::ENOENT))?;
                }
                Component::ParentDir | Component::Prefix(_) => return Err(err(libc::EINVAL)),
            }
        }
        self.dir(ino)?;
        Ok(ino)
    }

    /// The parent directory's inode and the last name of `path`.
    fn split(&self, path: &Path) -> io::Result<(u64, OsString)> {
        let name = path.file_name().ok_or(err(libc::EINVAL))?;
        // A relative path is taken from the root: the simulated process runs in `/`.
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("/"));
        Ok((self.lookup_dir(parent)?, name.to_os_string()))
    }

    fn lookup(&self, path: &Path) -> io::Result<Option<u64>> {
        if path.file_name().is_none() {
            return self.lookup_dir(path).map(Some);
        }
        let (parent, name) = self.split(path)?;
        Ok(self.dir(parent)?.entries.get(&name).copied())
    }

    fn new_node(&mut self, node: Node) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        ino
    }

    fn check_room(&self, growth: u64) -> io::Result<()> {
        match self.capacity {
            Some(cap) if self.used_bytes().saturating_add(growth) > cap => Err(err(libc::ENOSPC)),
            _ => Ok(()),
        }
    }

    fn crash(&mut self) -> CrashReport {
        let mut report = CrashReport::default();
        // Dirty sectors are kept all, none, or each at random (a third of crashes each).
        let mode = self.rng.below(3);
        let inos: Vec<u64> = {
            let mut v: Vec<u64> = self.nodes.keys().copied().collect();
            v.sort_unstable();
            v
        };
        for ino in inos {
            let Some(node) = self.nodes.get_mut(&ino) else {
                continue;
            };
            match node {
                Node::File(f) => {
                    let len = if f.data.len() == f.durable.len() || self.rng.below(2) == 0 {
                        f.durable.len()
                    } else {
                        f.data.len()
                    };
                    let mut image = std::mem::take(&mut f.durable);
                    image.resize(len, 0);
                    let (mut kept, mut lost) = (0, 0);
                    for &s in &f.dirty {
                        let keep = match mode {
                            0 => true,
                            1 => false,
                            _ => self.rng.below(2) == 0,
                        };
                        let start = (s * SECTOR) as usize;
                        let end = (((s + 1) * SECTOR) as usize).min(f.data.len()).min(len);
                        if keep && start < end {
                            image[start..end].copy_from_slice(&f.data[start..end]);
                            kept += 1;
                        } else {
                            lost += 1;
                        }
                    }
                    if kept > 0 && lost > 0 {
                        report.files_torn += 1;
                    }
                    report.sectors_kept += kept;
                    report.sectors_lost += lost;
                    f.dirty.clear();
                    f.durable = image.clone();
                    f.data = image;
                }
                Node::Dir(d) => {
                    let keep = self.rng.below(d.journal.len() as u64 + 1) as usize;
                    let journal = std::mem::take(&mut d.journal);
                    report.dir_changes_kept += keep as u64;
                    report.dir_changes_lost += (journal.len() - keep) as u64;
                    let mut entries = std::mem::take(&mut d.durable);
                    for change in journal.into_iter().take(keep) {
                        for (name, ino) in change {
                            match ino {
                                Some(ino) => entries.insert(name, ino),
                                None => entries.remove(&name),
                            };
                        }
                    }
                    d.durable = entries.clone();
                    d.entries = entries;
                }
            }
        }
        self.collect_garbage();
        self.generation += 1;
        self.locks.clear();
        self.faults.clear();
        self.stats.crashes += 1;
        let e = &mut self.stats.crash_effects;
        e.sectors_kept += report.sectors_kept;
        e.sectors_lost += report.sectors_lost;
        e.files_torn += report.files_torn;
        e.dir_changes_kept += report.dir_changes_kept;
        e.dir_changes_lost += report.dir_changes_lost;
        tracing::debug!(seed = self.seed, ?report, "simulated crash");
        report
    }

    /// Drops the nodes no name reaches any more (after a crash no file is open).
    fn collect_garbage(&mut self) {
        let reached = self.reachable();
        self.nodes.retain(|ino, _| reached.contains(ino));
        self.open.clear();
    }
}

/// A simulated disk, shared by every driver made from it. Cheap to clone.
#[derive(Clone)]
pub struct SimDisk {
    world: Arc<Mutex<World>>,
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.lock();
        f.debug_struct("SimDisk")
            .field("seed", &w.seed)
            .field("ops", &w.stats.ops)
            .field("crashes", &w.stats.crashes)
            .finish_non_exhaustive()
    }
}

impl SimDisk {
    /// An empty disk (only the root directory `/`), every random choice drawn from `seed`.
    pub fn new(seed: u64) -> SimDisk {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::Dir(DirNode::default()));
        SimDisk {
            world: Arc::new(Mutex::new(World {
                seed,
                rng: Rng(seed),
                generation: 0,
                crash_at: None,
                nodes,
                next_ino: ROOT + 1,
                faults: Vec::new(),
                capacity: None,
                locks: HashMap::new(),
                open: HashMap::new(),
                next_handle: 1,
                stats: SimStats::default(),
                refuse_direct_writes: false,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        // A panic while holding the lock leaves a consistent world: every change is made after
        // its checks. So a poisoned lock is taken over.
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The seed the disk was made with.
    pub fn seed(&self) -> u64 {
        self.lock().seed
    }

    /// A driver whose every operation runs on this disk, as a process started now would see it.
    pub fn driver(&self) -> crate::IoDriver {
        let generation = self.lock().generation;
        crate::IoDriver::simulated(SimEngine {
            disk: self.clone(),
            generation,
        })
    }

    /// Loses power now: see the [module documentation](self). Drivers made before fail every
    /// operation from now on; injected faults and a pending [`crash_after`](Self::crash_after)
    /// are cleared.
    pub fn crash(&self) -> CrashReport {
        let mut w = self.lock();
        w.crash_at = None;
        w.crash()
    }

    /// Crashes when operation number `ops + 1` starts (counting from the disk's creation, see
    /// [`SimStats::ops`]); that operation and every later one of the old drivers fail.
    pub fn crash_after(&self, ops: u64) {
        self.lock().crash_at = Some(ops);
    }

    /// Whether a crash is still pending from [`crash_after`](Self::crash_after).
    pub fn crash_pending(&self) -> bool {
        self.lock().crash_at.is_some()
    }

    /// Arms a fault.
    pub fn inject(&self, kind: FaultKind, trigger: Trigger) {
        self.lock().faults.push(ArmedFault { kind, trigger });
    }

    /// Disarms every injected fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Limits the bytes all files together may hold (`None`: unlimited). Writes, allocations and
    /// extensions past it fail with `ENOSPC`.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.lock().capacity = bytes;
    }

    /// Makes every write through an `O_DIRECT` handle fail with `EINVAL`, aligned or not, while
    /// such handles still open: as on a file system whose direct I/O wants a larger alignment
    /// than the caller's (a device with larger logical blocks, some network or FUSE file
    /// systems), which a caller can only learn from a refused write.
    pub fn refuse_direct_writes(&self, refuse: bool) {
        self.lock().refuse_direct_writes = refuse;
    }

    /// The bytes all files hold now.
    pub fn used_bytes(&self) -> u64 {
        self.lock().used_bytes()
    }

    /// The counters so far.
    pub fn stats(&self) -> SimStats {
        self.lock().stats.clone()
    }

    /// The written image of a file (what a read returns now), for checks and damage.
    ///
    /// # Errors
    ///
    /// `NotFound` if no such file; `IsADirectory` for a directory.
    pub fn read_file(&self, path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
        let mut w = self.lock();
        let ino = w.lookup(path.as_ref())?.ok_or(err(libc::ENOENT))?;
        Ok(w.file_mut(ino)?.data.clone())
    }

    /// Replaces (or creates) a file with `data`, durably, name included: for building damaged
    /// images in tests.
    ///
    /// # Errors
    ///
    /// `NotFound` if the parent directory does not exist; `IsADirectory` for a directory.
    pub fn write_file(&self, path: impl AsRef<Path>, data: &[u8]) -> io::Result<()> {
        let mut w = self.lock();
        let (parent, name) = w.split(path.as_ref())?;
        let ino = match w.dir(parent)?.entries.get(&name).copied() {
            Some(ino) => ino,
            None => {
                let ino = w.new_node(Node::File(FileNode {
                    data: Vec::new(),
                    durable: Vec::new(),
                    dirty: BTreeSet::new(),
                }));
                let d = w.dir_mut(parent)?;
                d.entries.insert(name.clone(), ino);
                d.durable.insert(name, ino);
                ino
            }
        };
        let f = w.file_mut(ino)?;
        f.data = data.to_vec();
        f.durable = data.to_vec();
        f.dirty.clear();
        Ok(())
    }

    /// Removes a file, durably: for building damaged images in tests.
    ///
    /// # Errors
    ///
    /// `NotFound` if no such entry.
    pub fn remove(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let mut w = self.lock();
        let (parent, name) = w.split(path.as_ref())?;
        let d = w.dir_mut(parent)?;
        d.entries.remove(&name).ok_or(err(libc::ENOENT))?;
        d.durable.remove(&name);
        Ok(())
    }

    /// The names in a directory, sorted.
    ///
    /// # Errors
    ///
    /// `NotFound` / `NotADirectory`.
    pub fn list(&self, path: impl AsRef<Path>) -> io::Result<Vec<OsString>> {
        let w = self.lock();
        let ino = w.lookup_dir(path.as_ref())?;
        Ok(w.dir(ino)?.entries.keys().cloned().collect())
    }
}

/// The driver-side half: which disk, and which power cycle the driver belongs to.
pub(crate) struct SimEngine {
    disk: SimDisk,
    generation: u64,
}

/// An open simulated file.
pub(crate) struct SimFile {
    disk: SimDisk,
    generation: u64,
    ino: u64,
    handle: u64,
    read: bool,
    write: bool,
    /// Opened with `O_DIRECT`: reads and writes must be sector-aligned (see [`check_direct`]).
    direct: bool,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("ino", &self.ino)
            .field("direct", &self.direct)
            .finish()
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut w = self.disk.lock();
        if w.generation != self.generation {
            return;
        }
        if w.locks.get(&self.ino) == Some(&self.handle) {
            w.locks.remove(&self.ino);
        }
        if let Some(n) = w.open.get_mut(&self.ino) {
            *n -= 1;
            if *n == 0 {
                w.open.remove(&self.ino);
            }
        }
    }
}

/// What [`SimEngine::open`] needs of the open options.
pub(crate) struct SimOpen {
    pub(crate) read: bool,
    pub(crate) write: bool,
    pub(crate) create: bool,
    pub(crate) create_new: bool,
    pub(crate) truncate: bool,
    pub(crate) directory: bool,
    pub(crate) direct: bool,
}

/// Runs one operation of a driver of `generation`: a yield first (so other tasks run between
/// submission and completion, as with a real device), then the operation, atomically.
async fn run_op<T>(
    disk: &SimDisk,
    generation: u64,
    ino: Option<u64>,
    op: Op,
    f: impl FnOnce(&mut World, Option<FaultKind>) -> io::Result<T>,
) -> io::Result<T> {
    tokio::task::yield_now().await;
    let mut w = disk.lock();
    let fault = w.begin(generation, op)?;
    let res = f(&mut w, fault);
    tracing::trace!(
        n = w.stats.ops,
        ?ino,
        ?op,
        ?fault,
        ok = res.is_ok(),
        "sim op"
    );
    res
}

impl SimEngine {
    async fn run<T>(
        &self,
        op: Op,
        f: impl FnOnce(&mut World, Option<FaultKind>) -> io::Result<T>,
    ) -> io::Result<T> {
        run_op(&self.disk, self.generation, None, op, f).await
    }

    pub(crate) async fn open(&self, path: &Path, o: SimOpen) -> io::Result<SimFile> {
        let direct = o.direct;
        self.open_with(path, o, direct).await
    }

    /// Opens `path` as `o` says; `direct`: the handle checks its I/O as an `O_DIRECT` one.
    async fn open_with(&self, path: &Path, o: SimOpen, direct: bool) -> io::Result<SimFile> {
        tracing::trace!(path = %path.display(), direct, "sim open");
        let (ino, handle) = self
            .run(Op::Meta, |w, _| {
                let ino = match w.lookup(path)? {
                    Some(_) if o.create_new => return Err(err(libc::EEXIST)),
                    Some(ino) => ino,
                    None if o.create || o.create_new => {
                        let (parent, name) = w.split(path)?;
                        let ino = w.new_node(Node::File(FileNode {
                            data: Vec::new(),
                            durable: Vec::new(),
                            dirty: BTreeSet::new(),
                        }));
                        w.dir_mut(parent)?.apply(vec![(name, Some(ino))]);
                        ino
                    }
                    None => return Err(err(libc::ENOENT)),
                };
                match w.nodes.get_mut(&ino) {
                    Some(Node::Dir(_)) if o.write => return Err(err(libc::EISDIR)),
                    Some(Node::File(_)) if o.directory => return Err(err(libc::ENOTDIR)),
                    Some(Node::File(f)) if o.truncate => {
                        let old = f.data.len() as u64;
                        f.data.clear();
                        f.mark_dirty(0, old);
                    }
                    _ => {}
                }
                *w.open.entry(ino).or_default() += 1;
                let handle = w.next_handle;
                w.next_handle += 1;
                Ok((ino, handle))
            })
            .await?;
        Ok(SimFile {
            disk: self.disk.clone(),
            generation: self.generation,
            ino,
            handle,
            read: o.read,
            write: o.write,
            direct,
        })
    }

    pub(crate) async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        tracing::trace!(from = %from.display(), to = %to.display(), "sim rename");
        self.run(Op::Meta, |w, _| {
            let (from_dir, from_name) = w.split(from)?;
            let (to_dir, to_name) = w.split(to)?;
            let ino = *w
                .dir(from_dir)?
                .entries
                .get(&from_name)
                .ok_or(err(libc::ENOENT))?;
            if from_dir == to_dir {
                w.dir_mut(from_dir)?
                    .apply(vec![(from_name, None), (to_name, Some(ino))]);
            } else {
                w.dir_mut(to_dir)?.apply(vec![(to_name, Some(ino))]);
                w.dir_mut(from_dir)?.apply(vec![(from_name, None)]);
            }
            Ok(())
        })
        .await
    }

    pub(crate) async fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        tracing::trace!(from = %from.display(), to = %to.display(), "sim link");
        self.run(Op::Meta, |w, _| {
            let (from_dir, from_name) = w.split(from)?;
            let (to_dir, to_name) = w.split(to)?;
            let ino = *w
                .dir(from_dir)?
                .entries
                .get(&from_name)
                .ok_or(err(libc::ENOENT))?;
            if matches!(w.nodes.get(&ino), Some(Node::Dir(_))) {
                return Err(err(libc::EPERM));
            }
            if w.dir(to_dir)?.entries.contains_key(&to_name) {
                return Err(err(libc::EEXIST));
            }
            w.dir_mut(to_dir)?.apply(vec![(to_name, Some(ino))]);
            Ok(())
        })
        .await
    }

    pub(crate) async fn unlink(&self, path: &Path, dir: bool) -> io::Result<()> {
        tracing::trace!(path = %path.display(), "sim unlink");
        self.run(Op::Meta, |w, _| {
            let (parent, name) = w.split(path)?;
            let ino = *w.dir(parent)?.entries.get(&name).ok_or(err(libc::ENOENT))?;
            match w.nodes.get(&ino) {
                Some(Node::Dir(_)) if !dir => return Err(err(libc::EISDIR)),
                Some(Node::Dir(d)) if !d.entries.is_empty() => return Err(err(libc::ENOTEMPTY)),
                Some(Node::File(_)) if dir => return Err(err(libc::ENOTDIR)),
                _ => {}
            }
            w.dir_mut(parent)?.apply(vec![(name, None)]);
            Ok(())
        })
        .await
    }

    pub(crate) async fn mkdir(&self, path: &Path) -> io::Result<()> {
        tracing::trace!(path = %path.display(), "sim mkdir");
        self.run(Op::Meta, |w, _| {
            let (parent, name) = w.split(path)?;
            if w.dir(parent)?.entries.contains_key(&name) {
                return Err(err(libc::EEXIST));
            }
            let ino = w.new_node(Node::Dir(DirNode::default()));
            w.dir_mut(parent)?.apply(vec![(name, Some(ino))]);
            Ok(())
        })
        .await
    }

    pub(crate) async fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        self.run(Op::Meta, |w, _| {
            let ino = w.lookup_dir(path)?;
            let d = w.dir(ino)?;
            Ok(d.entries
                .iter()
                .map(|(name, ino)| DirEntry {
                    path: path.join(name),
                    kind: match w.nodes.get(ino) {
                        Some(Node::Dir(_)) => EntryKind::Dir,
                        _ => EntryKind::File,
                    },
                })
                .collect())
        })
        .await
    }
}

impl SimFile {
    async fn run<T>(
        &self,
        op: Op,
        f: impl FnOnce(&mut World, Option<FaultKind>) -> io::Result<T>,
    ) -> io::Result<T> {
        run_op(&self.disk, self.generation, Some(self.ino), op, f).await
    }

    /// Reads at `offset` into the spare capacity of `buf`. On a direct handle an unaligned request
    /// fails first with `EINVAL` (see [`check_direct`]).
    pub(crate) async fn read(
        &self,
        mut buf: BytesMut,
        offset: u64,
    ) -> (io::Result<usize>, BytesMut) {
        if !self.read {
            return (Err(err(libc::EBADF)), buf);
        }
        if self.direct {
            // The read fills the spare capacity: that is the memory the kernel would check.
            let spare = (
                buf.as_ptr() as usize + buf.len(),
                buf.capacity() - buf.len(),
            );
            if let Err(e) = check_direct(offset, [spare]) {
                return (Err(e), buf);
            }
        }
        let res = self
            .run(Op::Read, |w, fault| {
                if fault == Some(FaultKind::ReadError) {
                    return Err(err(libc::EIO));
                }
                let ino = self.ino;
                let f = w.file_mut(ino)?;
                let start = offset.min(f.data.len() as u64) as usize;
                let n = (buf.capacity() - buf.len()).min(f.data.len() - start);
                let at = buf.len();
                buf.extend_from_slice(&f.data[start..start + n]);
                if fault == Some(FaultKind::BitFlip) && n > 0 {
                    let bit = w.rng.below(n as u64 * 8);
                    buf[at + (bit / 8) as usize] ^= 1 << (bit % 8);
                }
                Ok(n)
            })
            .await;
        (res, buf)
    }

    /// Writes `bufs` from `offset`, then syncs as `sync` says. A short-write fault stores a prefix
    /// and continues with the rest as a new operation, as the real backends' retry loops do.
    /// On a direct handle an unaligned request fails first with `EINVAL` (see [`check_direct`]).
    pub(crate) async fn writev(
        &self,
        bufs: Vec<Bytes>,
        offset: u64,
        sync: Option<SyncKind>,
    ) -> (io::Result<usize>, Vec<Bytes>) {
        if !self.write {
            return (Err(err(libc::EBADF)), bufs);
        }
        if self.direct {
            if self.disk.lock().refuse_direct_writes {
                return (Err(err(libc::EINVAL)), bufs);
            }
            let segments = bufs.iter().map(|b| (b.as_ptr() as usize, b.len()));
            if let Err(e) = check_direct(offset, segments) {
                return (Err(e), bufs);
            }
        }
        let data: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        let mut done = 0usize;
        let mut first = true;
        while done < data.len() || first {
            first = false;
            let res = self
                .run(Op::Write, |w, fault| {
                    let mut n = data.len() - done;
                    match fault {
                        Some(FaultKind::WriteError) => return Err(err(libc::EIO)),
                        Some(FaultKind::NoSpace) => return Err(err(libc::ENOSPC)),
                        Some(FaultKind::ShortWrite) if n > 1 => {
                            n = 1 + w.rng.below(n as u64 - 1) as usize
                        }
                        _ => {}
                    }
                    let at = offset.saturating_add(done as u64);
                    let end = file_end(at, n as u64)?;
                    let len = w.file_mut(self.ino)?.data.len() as u64;
                    w.check_room(end.saturating_sub(len))?;
                    let f = w.file_mut(self.ino)?;
                    if (f.data.len() as u64) < end {
                        f.data.resize(end as usize, 0);
                    }
                    f.data[at as usize..end as usize].copy_from_slice(&data[done..done + n]);
                    f.mark_dirty(at, end);
                    Ok(n)
                })
                .await;
            match res {
                Ok(n) => done += n,
                Err(e) => return (Err(e), bufs),
            }
        }
        let res = match sync {
            None => Ok(done),
            Some(kind) => {
                self.run(Op::Sync, |w, fault| {
                    if fault == Some(FaultKind::SyncError) {
                        return Err(w.fail_sync(self.ino));
                    }
                    let f = w.file_mut(self.ino)?;
                    match kind {
                        SyncKind::WrittenRange => {
                            let end = offset + done as u64;
                            let sectors: Vec<u64> = f
                                .dirty
                                .range(offset / SECTOR..end.div_ceil(SECTOR))
                                .copied()
                                .collect();
                            f.persist(sectors, Some(end));
                        }
                        SyncKind::Data | SyncKind::All => f.sync(),
                    }
                    Ok(done)
                })
                .await
            }
        };
        (res, bufs)
    }

    pub(crate) async fn sync(&self) -> io::Result<()> {
        self.run(Op::Sync, |w, fault| {
            if fault == Some(FaultKind::SyncError) {
                return Err(w.fail_sync(self.ino));
            }
            match w.nodes.get_mut(&self.ino) {
                Some(Node::File(f)) => f.sync(),
                Some(Node::Dir(d)) => {
                    d.durable = d.entries.clone();
                    d.journal.clear();
                }
                None => return Err(err(libc::EBADF)),
            }
            Ok(())
        })
        .await
    }

    pub(crate) async fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        if !self.write {
            return Err(err(libc::EBADF));
        }
        self.run(Op::Allocate, |w, fault| {
            if fault == Some(FaultKind::NoSpace) {
                return Err(err(libc::ENOSPC));
            }
            let end = file_end(offset, len)?;
            let cur = w.file_mut(self.ino)?.data.len() as u64;
            w.check_room(end.saturating_sub(cur))?;
            let f = w.file_mut(self.ino)?;
            if cur < end {
                f.data.resize(end as usize, 0);
                f.mark_dirty(cur, end);
            }
            Ok(())
        })
        .await
    }

    pub(crate) async fn set_len(&self, len: u64) -> io::Result<()> {
        if !self.write {
            return Err(err(libc::EINVAL));
        }
        self.run(Op::Allocate, |w, fault| {
            file_end(len, 0)?;
            let cur = w.file_mut(self.ino)?.data.len() as u64;
            if len > cur {
                if fault == Some(FaultKind::NoSpace) {
                    return Err(err(libc::ENOSPC));
                }
                w.check_room(len - cur)?;
            }
            let f = w.file_mut(self.ino)?;
            f.data.resize(len as usize, 0);
            f.mark_dirty(len.min(cur), len.max(cur));
            Ok(())
        })
        .await
    }

    pub(crate) async fn len(&self) -> io::Result<u64> {
        self.run(Op::Meta, |w, _| match w.nodes.get(&self.ino) {
            Some(Node::File(f)) => Ok(f.data.len() as u64),
            Some(Node::Dir(_)) => Ok(0),
            None => Err(err(libc::EBADF)),
        })
        .await
    }

    pub(crate) fn try_lock(&self) -> io::Result<bool> {
        let mut w = self.disk.lock();
        if w.generation != self.generation {
            return Err(crashed());
        }
        match w.locks.get(&self.ino) {
            Some(&holder) => Ok(holder == self.handle),
            None => {
                w.locks.insert(self.ino, self.handle);
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(disk: &SimDisk, path: &str) -> Vec<u8> {
        disk.read_file(path).unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn synced_data_survives_and_unsynced_may_not() {
        for seed in 0..64 {
            let disk = SimDisk::new(seed);
            let d = disk.driver();
            let opts = crate::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true);
            let f = d.open("/f", &opts).await.unwrap();
            f.write_all_at(Bytes::from(vec![1u8; 1000]), 0)
                .await
                .0
                .unwrap();
            f.sync_data().await.unwrap();
            d.sync_dir("/").await.unwrap();
            f.write_all_at(Bytes::from(vec![2u8; 1200]), 500)
                .await
                .0
                .unwrap();
            let g = d.open("/g", &opts).await.unwrap();
            g.write_all_at(Bytes::from_static(b"g"), 0).await.0.unwrap();
            g.sync_data().await.unwrap();
            disk.crash();
            let img = node(&disk, "/f");
            assert!(img.len() == 1000 || img.len() == 1700, "seed {seed}");
            assert!(img[..500].iter().all(|&b| b == 1), "seed {seed}");
            // Each sector is the old or the new content, never a mix within a sector.
            for (s, chunk) in img.chunks(SECTOR as usize).enumerate() {
                let start = s * SECTOR as usize;
                let old = |i: usize| if i < 1000 { 1 } else { 0 };
                let all_old = chunk.iter().enumerate().all(|(i, &b)| b == old(start + i));
                let all_new = chunk
                    .iter()
                    .enumerate()
                    .all(|(i, &b)| b == if start + i >= 500 { 2 } else { 1 });
                assert!(all_old || all_new, "seed {seed} sector {s}");
            }
            // /g's name was never synced: it may be gone, but if there its data is.
            if let Ok(g) = disk.read_file("/g") {
                assert_eq!(g, b"g");
            }
            assert!(d.open("/f", &opts).await.is_err(), "old drivers are dead");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn faults_fire_at_the_chosen_operation() {
        let disk = SimDisk::new(1);
        let d = disk.driver();
        let opts = crate::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true);
        let f = d.open("/f", &opts).await.unwrap();
        disk.inject(FaultKind::SyncError, Trigger::Nth(2));
        f.sync_data().await.unwrap();
        assert_eq!(
            f.sync_data().await.unwrap_err().raw_os_error(),
            Some(libc::EIO)
        );
        f.sync_data().await.unwrap();
        disk.set_capacity(Some(10));
        let (res, _) = f.write_all_at(Bytes::from_static(&[0; 11]), 0).await;
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::StorageFull);
        disk.set_capacity(None);
        disk.inject(FaultKind::ShortWrite, Trigger::Nth(1));
        f.write_all_at(Bytes::from_static(b"hello world"), 0)
            .await
            .0
            .unwrap();
        assert_eq!(node(&disk, "/f"), b"hello world");
        disk.inject(FaultKind::BitFlip, Trigger::Nth(1));
        let (res, buf) = f.read_exact_at(BytesMut::with_capacity(11), 0).await;
        res.unwrap();
        assert_ne!(&buf[..], b"hello world");
        // The full disk was real, not an injected fault.
        assert_eq!(disk.stats().faults.len(), 3);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn renames_since_the_last_dir_sync_may_vanish_in_order() {
        let mut outcomes = BTreeSet::new();
        for seed in 0..32 {
            let disk = SimDisk::new(seed);
            let d = disk.driver();
            let opts = crate::OpenOptions::new().write(true).create(true);
            d.create_dir_all("/a/b").await.unwrap();
            d.sync_dir("/a").await.unwrap();
            d.sync_dir("/").await.unwrap();
            d.open("/a/b/x.tmp", &opts)
                .await
                .unwrap()
                .sync_data()
                .await
                .unwrap();
            d.rename("/a/b/x.tmp", "/a/b/x").await.unwrap();
            disk.crash();
            let names = disk.list("/a/b").unwrap();
            assert!(names.len() <= 1, "a rename is atomic: seed {seed}");
            outcomes.insert(names);
        }
        assert!(outcomes.len() >= 2, "both fates seen: {outcomes:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_hard_link_shares_the_file_and_is_durable_once_its_directory_is_synced() {
        let mut outcomes = BTreeSet::new();
        for seed in 0..16 {
            let disk = SimDisk::new(seed);
            let d = disk.driver();
            let opts = crate::OpenOptions::new().write(true).create(true);
            d.create_dir_all("/t").await.unwrap();
            d.sync_dir("/").await.unwrap();
            let f = d.open("/t/a", &opts).await.unwrap();
            let (res, _) = f.write_all_at(bytes::Bytes::from_static(b"x"), 0).await;
            res.unwrap();
            f.sync_data().await.unwrap();
            d.sync_dir("/t").await.unwrap();
            d.hard_link("/t/a", "/t/b").await.unwrap();
            assert_eq!(
                d.hard_link("/t/a", "/t/b").await.unwrap_err().kind(),
                io::ErrorKind::AlreadyExists
            );
            if seed % 2 == 0 {
                d.sync_dir("/t").await.unwrap();
            }
            d.remove_file("/t/a").await.unwrap();
            disk.crash();
            let names = disk.list("/t").unwrap();
            if seed % 2 == 0 {
                assert!(
                    names.contains(&std::ffi::OsString::from("b")),
                    "a synced link survives: {names:?}"
                );
            }
            outcomes.insert(names);
        }
        assert!(
            outcomes.len() >= 2,
            "unsynced links may vanish: {outcomes:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn direct_handles_reject_unaligned_io_with_einval() {
        let disk = SimDisk::new(5);
        // A direct handle straight from the engine, to call its read and write directly.
        let engine = SimEngine {
            disk: disk.clone(),
            generation: 0,
        };
        let opts = || SimOpen {
            read: true,
            write: true,
            create: true,
            create_new: false,
            truncate: false,
            directory: false,
            direct: false,
        };
        let f = engine
            .open_with(Path::new("/d"), opts(), true)
            .await
            .unwrap();
        let block = |fill: u8, len: usize| {
            let mut b = crate::aligned_bytes_mut(len, 4096);
            b.resize(len, fill);
            b.freeze()
        };
        let einval = |res: io::Result<usize>| {
            assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EINVAL));
        };

        let (res, _) = f.writev(vec![block(1, 1024)], 0, None).await;
        assert_eq!(res.unwrap(), 1024);
        let before = node(&disk, "/d");
        let ops = disk.stats().ops;

        // Writes: an unaligned offset, length (alone and as one of several buffers) and address,
        // with each kind of sync.
        einval(f.writev(vec![block(2, 512)], 100, None).await.0);
        einval(f.writev(vec![block(2, 100)], 512, None).await.0);
        let two = vec![block(2, 512), block(2, 100)];
        einval(f.writev(two, 0, Some(SyncKind::Data)).await.0);
        let shifted = block(2, 1024).slice(1..513);
        assert_eq!(shifted.as_ptr() as usize % SECTOR as usize, 1);
        einval(
            f.writev(vec![shifted], 0, Some(SyncKind::WrittenRange))
                .await
                .0,
        );

        // Reads: an unaligned offset, length and address (the spare capacity starts 1 byte in).
        let (res, buf) = f.read(crate::aligned_bytes_mut(512, 4096), 1).await;
        einval(res);
        assert!(buf.is_empty());
        einval(f.read(crate::aligned_bytes_mut(100, 4096), 0).await.0);
        let mut shifted = crate::aligned_bytes_mut(513, 4096);
        shifted.extend_from_slice(&[9]);
        let (res, buf) = f.read(shifted, 0).await;
        einval(res);
        assert_eq!(&buf[..], &[9]);

        // Nothing changed, and nothing was counted as an operation.
        assert_eq!(node(&disk, "/d"), before);
        assert_eq!(disk.stats().ops, ops);

        // Aligned requests go through.
        let (res, _) = f
            .writev(vec![block(3, 512)], 512, Some(SyncKind::WrittenRange))
            .await;
        assert_eq!(res.unwrap(), 512);
        let (res, buf) = f.read(crate::aligned_bytes_mut(1024, 4096), 0).await;
        assert_eq!(res.unwrap(), 1024);
        assert!(buf[..512].iter().all(|&b| b == 1) && buf[512..].iter().all(|&b| b == 3));
        assert_eq!(disk.stats().ops, ops + 3);

        // A buffered handle of the same file takes what the direct one refused.
        let g = engine
            .open_with(Path::new("/d"), opts(), false)
            .await
            .unwrap();
        let (res, _) = g.writev(vec![Bytes::from_static(b"x")], 7, None).await;
        assert_eq!(res.unwrap(), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn crash_after_counts_operations_and_locks_are_released() {
        let disk = SimDisk::new(3);
        let d = disk.driver();
        let opts = crate::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true);
        let f = d.open("/f", &opts).await.unwrap();
        assert!(f.try_lock().unwrap());
        let g = d.open("/f", &opts).await.unwrap();
        assert!(!g.try_lock().unwrap());
        disk.crash_after(disk.stats().ops + 1);
        f.sync_data().await.unwrap();
        assert!(f.sync_data().await.is_err());
        assert!(!disk.crash_pending());
        let d2 = disk.driver();
        if let Ok(f2) = d2.open("/f", &opts).await {
            assert!(f2.try_lock().unwrap());
        }
    }
}
