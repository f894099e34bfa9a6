//! Model test of the key-value store's transactions: random sequences of operations from up to
//! three concurrently open transactions, checked step by step against a plain model made of
//! `BTreeMap`s. (`tests/kv_model/` is another model: what the crash tests may find after a
//! crash.)
//!
//! The model keeps the committed state as one map of `(keyspace, key) → value` laid out as the
//! store lays it out (the root keyspace, the bucket catalog, one keyspace per bucket, the
//! model's own bucket ids standing for the store's), plus, per key, the seq of the last commit
//! that wrote it. A model transaction copies that state at its begin and overlays its own writes;
//! it records what a serializable commit validates (keys read from the snapshot, ranges scanned,
//! ranges a cursor passed over). The model predicts exactly:
//! - every read, scan, cursor move, bucket lookup and listing, sequence number and error;
//! - every commit's outcome: a conflict of the kind the store reports (a written key written by
//!   a later commit: `WriteWrite`; a key read, or the catalog entry of a bucket written into or
//!   of one of its parents: `ReadWrite`; a key in a scanned range: `Phantom`), or its seq and
//!   write count; read-only transactions and those that wrote nothing never conflict;
//! - the committed state, compared after every commit attempt and every reopen with a full
//!   walk of the store (root keys, buckets, nested buckets, their keys and sequences).
//!
//! Operations: begin (snapshot or serializable, sometimes read-only), put / delete / get /
//! contains on the root or a bucket (through a fresh lookup or a handle kept from earlier in
//! the transaction, possibly of a bucket it deleted since), create / create-if-not-exists /
//! delete / look up / list buckets, `next_sequence`, scans (ranges, prefixes, either
//! direction, empty and inverted ranges too), cursor walks, commit, rollback, drop, calls on a
//! finished transaction, `Db::update`, flush (memtable to a table) and compaction (L0 into L1)
//! while transactions are open, close and reopen: reads after a flush or a compaction go to
//! tables, and must still see each open transaction's snapshot.
//!
//! Transactions interleave, one call at a time: commits never race here (tests/kv.rs runs
//! concurrent committers). Most sequences start from `/t0`, `/t1` and `/t0/n0` created; each
//! runs under `SyncPolicy::Immediate` or `None`. The I/O backend is the default driver's:
//! `RINGTIDE_IO_BACKEND` obeyed, else io_uring where available. `PROPTEST_CASES` sets the number
//! of sequences (default 64).
//!
//! At the end, the store bugs the model found, as fixed sequences on both backends.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;

use bytes::{BufMut, Bytes, BytesMut};
use futures::TryStreamExt;
use proptest::prelude::*;
use ringtide::kv::{Bucket, Db, DbOptions, Isolation, Txn, TxnOptions};
use ringtide::platform::{DriverOptions, IoDriver};
use ringtide::wal::SyncPolicy;
use ringtide::{ConflictKind, Error};

// ---------------------------------------------------------------------------------------------
// Operations

/// The keys (8, of 1–3 bytes, so that transactions collide), and the extra points scan bounds
/// and seeks may use.
const KEYS: [&[u8]; 8] = [b"a", b"ab", b"abc", b"b", b"ba", b"c", b"\xff", b"\xff\x00"];
const POINTS: [&[u8]; 11] = [
    b"a",
    b"ab",
    b"abc",
    b"b",
    b"ba",
    b"c",
    b"\xff",
    b"\xff\x00",
    b"aa",
    b"bz",
    b"\xff\xff",
];
const PREFIXES: [&[u8]; 6] = [b"", b"a", b"ab", b"b", b"\xff", b"z"];
const TOPS: [&str; 3] = ["t0", "t1", "t2"];
const NESTED: [&str; 2] = ["n0", "n1"];
/// Open transactions at most.
const SLOTS: usize = 3;

/// A bucket: a top-level one, or one nested in a top-level one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Path {
    top: u8,
    nested: Option<u8>,
}

impl Path {
    fn parent(self) -> Option<Path> {
        self.nested.map(|_| Path {
            top: self.top,
            nested: None,
        })
    }

    fn name(self) -> &'static str {
        match self.nested {
            Some(n) => NESTED[n as usize],
            None => TOPS[self.top as usize],
        }
    }

    fn display(self) -> String {
        match self.nested {
            Some(n) => format!("/{}/{}", TOPS[self.top as usize], NESTED[n as usize]),
            None => format!("/{}", TOPS[self.top as usize]),
        }
    }
}

/// Where a key operation acts: the root keyspace, or a bucket found by a fresh lookup
/// (`cached: false`) or through the handle the transaction kept from its last lookup of that
/// path (`cached: true`; a fresh lookup if it has none).
#[derive(Debug, Clone, Copy)]
enum Target {
    Root,
    Bucket { path: Path, cached: bool },
}

#[derive(Debug, Clone, Copy)]
enum End {
    Unbounded,
    Included(u8),
    Excluded(u8),
}

#[derive(Debug, Clone, Copy)]
enum Range {
    Bounds(End, End),
    Prefix(u8),
}

#[derive(Debug, Clone, Copy)]
enum Move {
    First,
    Last,
    Next,
    Prev,
    Seek(u8),
    /// A put (or, with `None`, a delete) in the cursor's keyspace between moves.
    Write(u8, Option<u8>),
}

/// An operation inside one transaction.
#[derive(Debug, Clone)]
enum TxnOp {
    Put(Target, u8, u8),
    Delete(Target, u8),
    Get(Target, u8),
    Contains(Target, u8),
    CreateBucket {
        path: Path,
        cached: bool,
        if_not_exists: bool,
    },
    DeleteBucket {
        path: Path,
        cached: bool,
    },
    Lookup {
        path: Path,
        cached: bool,
    },
    ListBuckets(Target),
    NextSequence {
        path: Path,
        cached: bool,
    },
    Scan {
        target: Target,
        range: Range,
        rev: bool,
    },
    Cursor(Target, Vec<Move>),
}

#[derive(Debug, Clone)]
enum Op {
    Begin {
        isolation: Isolation,
        read_only: bool,
    },
    /// An operation in the open transaction `slot % open` (in a new serializable one if none
    /// is open).
    In(u8, TxnOp),
    /// Commits; `keep` leaves the finished transaction in its slot (later calls must refuse).
    Commit {
        slot: u8,
        keep: bool,
    },
    Rollback {
        slot: u8,
        keep: bool,
    },
    Drop(u8),
    Update(Vec<TxnOp>),
    Reopen,
    /// `Db::flush`: the memtable written as a table, under the open transactions' snapshots.
    Flush,
    /// `Db::compact`: L0 merged into L1, dropping versions no open snapshot sees.
    Compact,
}

fn path() -> impl Strategy<Value = Path> {
    prop_oneof![
        3 => (0..TOPS.len() as u8).prop_map(|top| Path { top, nested: None }),
        1 => (0..TOPS.len() as u8, 0..NESTED.len() as u8)
            .prop_map(|(top, n)| Path { top, nested: Some(n) }),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        2 => Just(Target::Root),
        1 => (path(), any::<bool>()).prop_map(|(path, cached)| Target::Bucket { path, cached }),
    ]
}

fn key() -> impl Strategy<Value = u8> {
    0..KEYS.len() as u8
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        1 => Just(End::Unbounded),
        2 => (0..POINTS.len() as u8).prop_map(End::Included),
        2 => (0..POINTS.len() as u8).prop_map(End::Excluded),
    ]
}

fn range() -> impl Strategy<Value = Range> {
    prop_oneof![
        3 => (end(), end()).prop_map(|(a, b)| Range::Bounds(a, b)),
        2 => (0..PREFIXES.len() as u8).prop_map(Range::Prefix),
    ]
}

fn moves() -> impl Strategy<Value = Vec<Move>> {
    prop::collection::vec(
        prop_oneof![
            1 => Just(Move::First),
            1 => Just(Move::Last),
            3 => Just(Move::Next),
            3 => Just(Move::Prev),
            2 => (0..POINTS.len() as u8).prop_map(Move::Seek),
            1 => (key(), prop::option::of(0u8..4)).prop_map(|(k, v)| Move::Write(k, v)),
        ],
        1..12,
    )
}

fn txn_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        10 => (target(), key(), 0u8..4).prop_map(|(t, k, v)| TxnOp::Put(t, k, v)),
        4 => (target(), key()).prop_map(|(t, k)| TxnOp::Delete(t, k)),
        6 => (target(), key()).prop_map(|(t, k)| TxnOp::Get(t, k)),
        2 => (target(), key()).prop_map(|(t, k)| TxnOp::Contains(t, k)),
        5 => (path(), any::<bool>(), 0u8..3).prop_map(|(path, cached, exists)| {
            TxnOp::CreateBucket { path, cached, if_not_exists: exists > 0 }
        }),
        2 => (path(), any::<bool>()).prop_map(|(path, cached)| TxnOp::DeleteBucket { path, cached }),
        2 => (path(), any::<bool>()).prop_map(|(path, cached)| TxnOp::Lookup { path, cached }),
        1 => target().prop_map(TxnOp::ListBuckets),
        2 => (path(), any::<bool>()).prop_map(|(path, cached)| TxnOp::NextSequence { path, cached }),
        4 => (target(), range(), any::<bool>())
            .prop_map(|(target, range, rev)| TxnOp::Scan { target, range, rev }),
        3 => (target(), moves()).prop_map(|(t, m)| TxnOp::Cursor(t, m)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (any::<bool>(), 0u8..5).prop_map(|(snapshot, ro)| Op::Begin {
            isolation: if snapshot { Isolation::Snapshot } else { Isolation::Serializable },
            read_only: ro == 0,
        }),
        40 => (any::<u8>(), txn_op()).prop_map(|(slot, op)| Op::In(slot, op)),
        9 => (any::<u8>(), 0u8..6).prop_map(|(slot, keep)| Op::Commit { slot, keep: keep == 0 }),
        1 => (any::<u8>(), 0u8..4).prop_map(|(slot, keep)| Op::Rollback { slot, keep: keep == 0 }),
        1 => any::<u8>().prop_map(Op::Drop),
        2 => prop::collection::vec(txn_op(), 1..5).prop_map(Op::Update),
        1 => Just(Op::Reopen),
        3 => Just(Op::Flush),
        1 => Just(Op::Compact),
    ]
}

// ---------------------------------------------------------------------------------------------
// Outcomes, compared between the store and the model

#[derive(Debug, Clone, PartialEq, Eq)]
enum Fail {
    Conflict(ConflictKind),
    BucketExists,
    BucketNotFound,
    ReadOnly,
    Finished(&'static str),
    Other(String),
}

fn fail(e: &Error) -> Fail {
    match e {
        Error::Conflict { kind, .. } => Fail::Conflict(*kind),
        Error::BucketExists { .. } => Fail::BucketExists,
        Error::BucketNotFound { .. } => Fail::BucketNotFound,
        Error::TxnReadOnly => Fail::ReadOnly,
        Error::TxnFinished { state } => Fail::Finished(state),
        other => Fail::Other(other.to_string()),
    }
}

type Entry = (Bytes, Bytes);
/// A range of keys: lower and upper bounds.
type KeyRange = (Bound<Bytes>, Bound<Bytes>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Unit,
    /// The target bucket does not exist (in this transaction's view).
    NoBucket,
    Found(bool),
    Value(Option<Bytes>),
    Bool(bool),
    Names(Vec<Bytes>),
    Seq(u64),
    Entries(Vec<Entry>),
    Moves(Vec<Option<Entry>>),
}

type Outcome = Result<Out, Fail>;

fn value(v: u8) -> Bytes {
    Bytes::from(format!("v{v}"))
}

fn point(i: u8) -> Bytes {
    Bytes::from_static(POINTS[i as usize])
}

fn bounds(range: Range) -> KeyRange {
    let end = |e: End| match e {
        End::Unbounded => Bound::Unbounded,
        End::Included(i) => Bound::Included(point(i)),
        End::Excluded(i) => Bound::Excluded(point(i)),
    };
    match range {
        Range::Bounds(a, b) => (end(a), end(b)),
        Range::Prefix(i) => prefix_bounds(PREFIXES[i as usize]),
    }
}

/// The keys that start with `prefix`, as bounds (the model's own derivation).
fn prefix_bounds(prefix: &[u8]) -> KeyRange {
    if prefix.is_empty() {
        return (Bound::Unbounded, Bound::Unbounded);
    }
    let mut upper = prefix.to_vec();
    while upper.last() == Some(&0xff) {
        upper.pop();
    }
    let upper = match upper.last_mut() {
        Some(last) => {
            *last += 1;
            Bound::Excluded(Bytes::from(upper))
        }
        None => Bound::Unbounded,
    };
    (Bound::Included(Bytes::copy_from_slice(prefix)), upper)
}

fn in_bounds(key: &[u8], (lower, upper): &KeyRange) -> bool {
    (match lower {
        Bound::Included(l) => key >= &l[..],
        Bound::Excluded(l) => key > &l[..],
        Bound::Unbounded => true,
    }) && (match upper {
        Bound::Included(u) => key <= &u[..],
        Bound::Excluded(u) => key < &u[..],
        Bound::Unbounded => true,
    })
}

// ---------------------------------------------------------------------------------------------
// The store side

/// A store transaction and the bucket handles it kept, by path.
struct StoreTxn {
    txn: Txn,
    handles: HashMap<Path, Bucket>,
}

impl StoreTxn {
    fn new(txn: Txn) -> StoreTxn {
        StoreTxn {
            txn,
            handles: HashMap::new(),
        }
    }

    async fn resolve(&mut self, path: Path, cached: bool) -> ringtide::Result<Option<Bucket>> {
        if cached && let Some(h) = self.handles.get(&path) {
            return Ok(Some(h.clone()));
        }
        let found = match path.parent() {
            None => self.txn.bucket(path.name()).await?,
            Some(parent) => {
                let parent = match self.handles.get(&parent).filter(|_| cached) {
                    Some(h) => Some(h.clone()),
                    None => {
                        let p = self.txn.bucket(parent.name()).await?;
                        match &p {
                            Some(h) => self.handles.insert(parent, h.clone()),
                            None => self.handles.remove(&parent),
                        };
                        p
                    }
                };
                match parent {
                    Some(p) => p.bucket(path.name()).await?,
                    None => None,
                }
            }
        };
        match &found {
            Some(h) => self.handles.insert(path, h.clone()),
            None => self.handles.remove(&path),
        };
        Ok(found)
    }

    /// The parent handle of `path` (`None` inside: no such parent; outer `None`: the root).
    async fn parent(
        &mut self,
        path: Path,
        cached: bool,
    ) -> ringtide::Result<Option<Option<Bucket>>> {
        match path.parent() {
            None => Ok(None),
            Some(p) => Ok(Some(self.resolve(p, cached).await?)),
        }
    }

    async fn exec(&mut self, op: &TxnOp) -> ringtide::Result<Out> {
        /// The target's handle, or `Out::NoBucket` returned.
        macro_rules! on {
            ($target:expr) => {
                match $target {
                    Target::Root => None,
                    Target::Bucket { path, cached } => match self.resolve(*path, *cached).await? {
                        Some(b) => Some(b),
                        None => return Ok(Out::NoBucket),
                    },
                }
            };
        }
        Ok(match op {
            TxnOp::Put(t, k, v) => {
                let k = Bytes::from_static(KEYS[*k as usize]);
                match on!(t) {
                    None => self.txn.put(k, value(*v))?,
                    Some(b) => b.put(k, value(*v))?,
                }
                Out::Unit
            }
            TxnOp::Delete(t, k) => {
                let k = Bytes::from_static(KEYS[*k as usize]);
                match on!(t) {
                    None => self.txn.delete(k)?,
                    Some(b) => b.delete(k)?,
                }
                Out::Unit
            }
            TxnOp::Get(t, k) => {
                let k = KEYS[*k as usize];
                Out::Value(match on!(t) {
                    None => self.txn.get(k).await?,
                    Some(b) => b.get(k).await?,
                })
            }
            TxnOp::Contains(t, k) => {
                let k = KEYS[*k as usize];
                Out::Bool(match on!(t) {
                    None => self.txn.contains(k).await?,
                    Some(b) => b.contains(k).await?,
                })
            }
            TxnOp::CreateBucket {
                path,
                cached,
                if_not_exists,
            } => {
                let name = path.name();
                let created = match self.parent(*path, *cached).await? {
                    None if *if_not_exists => self.txn.create_bucket_if_not_exists(name).await?,
                    None => self.txn.create_bucket(name).await?,
                    Some(None) => return Ok(Out::NoBucket),
                    Some(Some(p)) if *if_not_exists => p.create_bucket_if_not_exists(name).await?,
                    Some(Some(p)) => p.create_bucket(name).await?,
                };
                self.handles.insert(*path, created);
                Out::Unit
            }
            TxnOp::DeleteBucket { path, cached } => {
                let name = path.name();
                match self.parent(*path, *cached).await? {
                    None => self.txn.delete_bucket(name).await?,
                    Some(None) => return Ok(Out::NoBucket),
                    Some(Some(p)) => p.delete_bucket(name).await?,
                }
                Out::Unit
            }
            TxnOp::Lookup { path, cached } => {
                Out::Found(self.resolve(*path, *cached).await?.is_some())
            }
            TxnOp::ListBuckets(t) => Out::Names(match on!(t) {
                None => self.txn.buckets().await?,
                Some(b) => b.buckets().await?,
            }),
            TxnOp::NextSequence { path, cached } => match self.resolve(*path, *cached).await? {
                Some(b) => Out::Seq(b.next_sequence().await?),
                None => Out::NoBucket,
            },
            TxnOp::Scan { target, range, rev } => {
                let scan = match (on!(target), range) {
                    (None, Range::Prefix(p)) => self.txn.scan_prefix(PREFIXES[*p as usize]),
                    (None, r) => self.txn.scan(bounds(*r)),
                    (Some(b), Range::Prefix(p)) => b.scan_prefix(PREFIXES[*p as usize]),
                    (Some(b), r) => b.scan(bounds(*r)),
                };
                let scan = if *rev { scan.rev() } else { scan };
                Out::Entries(scan.try_collect().await?)
            }
            TxnOp::Cursor(t, moves) => {
                let bucket = on!(t);
                let mut cursor = match &bucket {
                    None => self.txn.cursor(),
                    Some(b) => b.cursor(),
                };
                let mut seen = Vec::new();
                for m in moves {
                    seen.push(match m {
                        Move::First => cursor.first().await?,
                        Move::Last => cursor.last().await?,
                        Move::Next => cursor.next().await?,
                        Move::Prev => cursor.prev().await?,
                        Move::Seek(p) => cursor.seek(point(*p)).await?,
                        Move::Write(k, v) => {
                            let k = Bytes::from_static(KEYS[*k as usize]);
                            match (&bucket, v) {
                                (None, Some(v)) => self.txn.put(k, value(*v))?,
                                (None, None) => self.txn.delete(k)?,
                                (Some(b), Some(v)) => b.put(k, value(*v))?,
                                (Some(b), None) => b.delete(k)?,
                            }
                            continue;
                        }
                    });
                }
                Out::Moves(seen)
            }
        })
    }

    /// The store id of every handle kept, by path.
    fn handle_ids(&self) -> HashMap<Path, (u64, String)> {
        self.handles
            .iter()
            .map(|(p, b)| (*p, (b.id(), b.path().to_owned())))
            .collect()
    }
}

/// What a full walk of the committed store finds in a bucket (or the root).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Dump {
    /// The store's id of the bucket (the model's, in a model dump); 0 for the root.
    id: u64,
    entries: Vec<Entry>,
    /// What `next_sequence` would return next (0 for the root).
    next_seq: u64,
    buckets: BTreeMap<Bytes, Dump>,
}

async fn dump_store(db: &Db) -> Result<Dump, String> {
    dump_store_inner(db).await.map_err(|e| format!("dump: {e}"))
}

async fn dump_store_inner(db: &Db) -> ringtide::Result<Dump> {
    // Read-write, so that `next_sequence` can be asked; rolled back.
    let txn = db.begin(TxnOptions::default())?;
    let mut root = Dump {
        entries: txn.scan::<&[u8]>(..).try_collect().await?,
        ..Dump::default()
    };
    for name in txn.buckets().await? {
        let top = txn.bucket(&name).await?.expect("a listed bucket exists");
        let mut d = Dump {
            id: top.id(),
            entries: top.scan::<&[u8]>(..).try_collect().await?,
            next_seq: top.next_sequence().await?,
            buckets: BTreeMap::new(),
        };
        for nested_name in top.buckets().await? {
            let nested = top.bucket(&nested_name).await?.expect("listed");
            assert!(
                nested.buckets().await?.is_empty(),
                "the model nests one level only"
            );
            d.buckets.insert(
                nested_name,
                Dump {
                    id: nested.id(),
                    entries: nested.scan::<&[u8]>(..).try_collect().await?,
                    next_seq: nested.next_sequence().await?,
                    buckets: BTreeMap::new(),
                },
            );
        }
        root.buckets.insert(name, d);
    }
    txn.rollback().await?;
    Ok(root)
}

// ---------------------------------------------------------------------------------------------
// The model

/// A key of the model's store: (keyspace, key). Keyspace 0 is the root, 1 the catalog, the
/// others buckets (the model's ids).
type Key = (u64, Bytes);
type Snapshot = BTreeMap<Key, Bytes>;

const ROOT: u64 = 0;
const CATALOG: u64 = 1;

/// The catalog's entry of bucket `name` in `parent` (`b` ‖ parent ‖ name → id), and of a
/// bucket's sequence (`s` ‖ id → u64): the layout the store documents, which the model
/// mirrors so that conflicts on catalog entries can be predicted.
fn entry_key(parent: u64, name: &[u8]) -> Key {
    let mut k = BytesMut::new();
    k.put_u8(b'b');
    k.put_u64(parent);
    k.put_slice(name);
    (CATALOG, k.freeze())
}

fn id_key(tag: u8, id: u64) -> Key {
    let mut k = BytesMut::new();
    k.put_u8(tag);
    k.put_u64(id);
    (CATALOG, k.freeze())
}

fn encode_u64(v: u64) -> Bytes {
    Bytes::copy_from_slice(&v.to_le_bytes())
}

fn decode_u64(v: &[u8]) -> u64 {
    u64::from_le_bytes(v.try_into().expect("8 bytes"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Active,
    Finished(&'static str),
}

/// The model of one transaction.
struct ModelTxn {
    isolation: Isolation,
    read_only: bool,
    snapshot: Snapshot,
    snapshot_seq: u64,
    status: Status,
    writes: BTreeMap<Key, Option<Bytes>>,
    /// Keys read from the snapshot (serializable read-write transactions).
    reads: Vec<Key>,
    ranges: Vec<(u64, KeyRange)>,
    /// Buckets this transaction deleted.
    deleted: HashSet<u64>,
    /// The handles kept, as the model's bucket ids.
    handles: HashMap<Path, u64>,
}

/// The committed state and what the model knows of buckets.
struct Model {
    state: Snapshot,
    /// Per key, the seq of the last commit that wrote it.
    history: BTreeMap<Key, u64>,
    seq: u64,
    next_id: u64,
    /// Every bucket the model created: its parent and name.
    buckets: HashMap<u64, (u64, &'static str)>,
    /// The store's id of each model bucket, learned when the store returns a handle.
    store_ids: HashMap<u64, u64>,
    /// Store ids named by a committed catalog entry (never to be given to a new bucket), and
    /// those given out since the store was opened.
    committed_store_ids: HashSet<u64>,
    session_store_ids: HashSet<u64>,
}

impl Model {
    fn new() -> Model {
        Model {
            state: Snapshot::new(),
            history: BTreeMap::new(),
            seq: 0,
            next_id: 16,
            buckets: HashMap::new(),
            store_ids: HashMap::new(),
            committed_store_ids: HashSet::new(),
            session_store_ids: HashSet::new(),
        }
    }

    fn begin(&self, isolation: Isolation, read_only: bool) -> ModelTxn {
        ModelTxn {
            isolation,
            read_only,
            snapshot: self.state.clone(),
            snapshot_seq: self.seq,
            status: Status::Active,
            writes: BTreeMap::new(),
            reads: Vec::new(),
            ranges: Vec::new(),
            deleted: HashSet::new(),
            handles: HashMap::new(),
        }
    }

    /// The catalog entries a commit that writes into bucket `id` depends on: the bucket's and
    /// its parents'.
    fn lineage(&self, mut id: u64, out: &mut Vec<Key>) {
        while let Some(&(parent, name)) = self.buckets.get(&id) {
            out.push(entry_key(parent, name.as_bytes()));
            id = parent;
        }
    }

    fn commit(&mut self, t: &mut ModelTxn) -> Result<(u64, u64), Fail> {
        if let Status::Finished(state) = t.status {
            return Err(Fail::Finished(state));
        }
        if t.writes.is_empty() {
            t.status = Status::Finished("committed");
            return Ok((t.snapshot_seq, 0));
        }
        let newer = |k: &Key| self.history.get(k).is_some_and(|&s| s > t.snapshot_seq);
        let mut kind = None;
        if t.writes.keys().any(newer) {
            kind = Some(ConflictKind::WriteWrite);
        }
        // A write into a bucket depends on the bucket (and its parents) still being there, at
        // either level: a sequence taken or a nested bucket created or deleted is a write
        // into the bucket too.
        let mut depends = Vec::new();
        for (space, key) in t.writes.keys() {
            match *space {
                ROOT => {}
                CATALOG => {
                    let owner = u64::from_be_bytes(key[1..9].try_into().expect("8 bytes"));
                    match key[0] {
                        b'b' | b's' => self.lineage(owner, &mut depends),
                        _ => {}
                    }
                }
                id => self.lineage(id, &mut depends),
            }
        }
        if t.isolation == Isolation::Serializable {
            depends.extend(t.reads.iter().cloned());
        }
        if kind.is_none() && depends.iter().any(newer) {
            kind = Some(ConflictKind::ReadWrite);
        }
        if kind.is_none()
            && t.isolation == Isolation::Serializable
            && t.ranges.iter().any(|(space, b)| {
                self.history
                    .iter()
                    .any(|((s, k), &seq)| s == space && seq > t.snapshot_seq && in_bounds(k, b))
            })
        {
            kind = Some(ConflictKind::Phantom);
        }
        if let Some(kind) = kind {
            t.status = Status::Finished("failed");
            return Err(Fail::Conflict(kind));
        }
        self.seq += 1;
        let count = t.writes.len() as u64;
        for (k, v) in std::mem::take(&mut t.writes) {
            self.history.insert(k.clone(), self.seq);
            if k.0 == CATALOG {
                let id = match k.1[0] {
                    b'b' => v.as_deref().map(decode_u64),
                    b'd' => Some(u64::from_be_bytes(k.1[1..9].try_into().expect("8"))),
                    _ => None,
                };
                if let Some(store) = id.and_then(|id| self.store_ids.get(&id)) {
                    self.committed_store_ids.insert(*store);
                }
            }
            match v {
                Some(v) => self.state.insert(k, v),
                None => self.state.remove(&k),
            };
        }
        t.status = Status::Finished("committed");
        Ok((self.seq, count))
    }

    /// The committed state as a store walk would find it.
    fn dump(&self) -> Dump {
        let space = |id: u64| -> Vec<Entry> {
            self.state
                .range((id, Bytes::new())..)
                .take_while(|((s, _), _)| *s == id)
                .map(|((_, k), v)| (k.clone(), v.clone()))
                .collect()
        };
        let children = |parent: u64| -> Vec<(Bytes, u64)> {
            let (_, prefix) = entry_key(parent, b"");
            self.state
                .range((CATALOG, prefix.clone())..)
                .take_while(|((s, k), _)| *s == CATALOG && k.starts_with(&prefix))
                .map(|((_, k), v)| (k.slice(prefix.len()..), decode_u64(v)))
                .collect()
        };
        let next_seq = |id: u64| {
            self.state
                .get(&id_key(b's', id))
                .map_or(0, |v| decode_u64(v))
                + 1
        };
        let bucket = |id: u64, buckets: BTreeMap<Bytes, Dump>| Dump {
            id: self.store_ids.get(&id).copied().unwrap_or(u64::MAX),
            entries: space(id),
            next_seq: next_seq(id),
            buckets,
        };
        Dump {
            id: 0,
            entries: space(ROOT),
            next_seq: 0,
            buckets: children(ROOT)
                .into_iter()
                .map(|(name, id)| {
                    let nested = children(id)
                        .into_iter()
                        .map(|(n, nid)| (n, bucket(nid, BTreeMap::new())))
                        .collect();
                    (name, bucket(id, nested))
                })
                .collect(),
        }
    }
}

impl ModelTxn {
    fn records_reads(&self) -> bool {
        self.isolation == Isolation::Serializable && !self.read_only
    }

    fn read(&mut self, key: Key) -> Option<Bytes> {
        if let Some(own) = self.writes.get(&key) {
            return own.clone();
        }
        let v = self.snapshot.get(&key).cloned();
        if self.records_reads() {
            self.reads.push(key);
        }
        v
    }

    /// A write, refused as the store refuses it: in a read-only transaction, then in a bucket
    /// this transaction deleted.
    fn write(&mut self, model: &Model, key: Key, value: Option<Bytes>) -> Result<(), Fail> {
        if self.read_only {
            return Err(Fail::ReadOnly);
        }
        self.usable(model, key.0)?;
        self.writes.insert(key, value);
        Ok(())
    }

    /// The entries of a keyspace as this transaction sees it.
    fn view(&self, space: u64) -> BTreeMap<Bytes, Bytes> {
        let mut v: BTreeMap<Bytes, Bytes> = self
            .snapshot
            .range((space, Bytes::new())..)
            .take_while(|((s, _), _)| *s == space)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        for ((s, k), w) in &self.writes {
            if *s == space {
                match w {
                    Some(w) => v.insert(k.clone(), w.clone()),
                    None => v.remove(k),
                };
            }
        }
        v
    }

    fn scanned(&mut self, space: u64, b: KeyRange) {
        if self.records_reads() {
            self.ranges.push((space, b));
        }
    }

    /// Whether this transaction deleted bucket `id`, or one of its parents.
    fn deleted(&self, model: &Model, mut id: u64) -> bool {
        loop {
            if self.deleted.contains(&id) {
                return true;
            }
            match model.buckets.get(&id) {
                Some(&(parent, _)) => id = parent,
                None => return false,
            }
        }
    }

    /// A live bucket's id (or the root's): `BucketNotFound` if this transaction deleted it.
    fn usable(&self, model: &Model, id: u64) -> Result<u64, Fail> {
        if self.deleted(model, id) {
            return Err(Fail::BucketNotFound);
        }
        Ok(id)
    }

    fn lookup(&mut self, model: &Model, parent: u64, name: &str) -> Result<Option<u64>, Fail> {
        self.usable(model, parent)?;
        Ok(self
            .read(entry_key(parent, name.as_bytes()))
            .map(|v| decode_u64(&v)))
    }

    fn resolve(&mut self, model: &Model, path: Path, cached: bool) -> Result<Option<u64>, Fail> {
        if cached && let Some(&id) = self.handles.get(&path) {
            return Ok(Some(id));
        }
        let parent = match path.parent() {
            None => Some(ROOT),
            Some(p) => self.resolve(model, p, cached)?,
        };
        let found = match parent {
            Some(parent) => self.lookup(model, parent, path.name())?,
            None => None,
        };
        match found {
            Some(id) => self.handles.insert(path, id),
            None => self.handles.remove(&path),
        };
        Ok(found)
    }

    fn exec(&mut self, model: &mut Model, op: &TxnOp) -> Outcome {
        if let Status::Finished(state) = self.status {
            // A handle kept is found without asking the transaction; any call on it refuses.
            return match op {
                TxnOp::Lookup { path, cached: true } if self.handles.contains_key(path) => {
                    Ok(Out::Found(true))
                }
                _ => Err(Fail::Finished(state)),
            };
        }
        macro_rules! on {
            ($target:expr) => {
                match $target {
                    Target::Root => ROOT,
                    Target::Bucket { path, cached } => match self.resolve(model, *path, *cached)? {
                        Some(id) => id,
                        None => return Ok(Out::NoBucket),
                    },
                }
            };
        }
        Ok(match op {
            TxnOp::Put(t, k, v) => {
                let key = (on!(t), Bytes::from_static(KEYS[*k as usize]));
                self.write(model, key, Some(value(*v)))?;
                Out::Unit
            }
            TxnOp::Delete(t, k) => {
                let key = (on!(t), Bytes::from_static(KEYS[*k as usize]));
                self.write(model, key, None)?;
                Out::Unit
            }
            TxnOp::Get(t, k) | TxnOp::Contains(t, k) => {
                let space = on!(t);
                self.usable(model, space)?;
                let v = self.read((space, Bytes::from_static(KEYS[*k as usize])));
                match op {
                    TxnOp::Get(..) => Out::Value(v),
                    _ => Out::Bool(v.is_some()),
                }
            }
            TxnOp::CreateBucket {
                path,
                cached,
                if_not_exists,
            } => {
                let parent = match path.parent() {
                    None => ROOT,
                    Some(p) => match self.resolve(model, p, *cached)? {
                        Some(id) => id,
                        None => return Ok(Out::NoBucket),
                    },
                };
                match self.lookup(model, parent, path.name())? {
                    Some(_) if !*if_not_exists => return Err(Fail::BucketExists),
                    Some(id) => {
                        self.handles.insert(*path, id);
                    }
                    None => {
                        if self.read_only {
                            return Err(Fail::ReadOnly);
                        }
                        let id = model.next_id;
                        model.next_id += 1;
                        model.buckets.insert(id, (parent, path.name()));
                        self.write(
                            model,
                            entry_key(parent, path.name().as_bytes()),
                            Some(encode_u64(id)),
                        )?;
                        self.handles.insert(*path, id);
                    }
                }
                Out::Unit
            }
            TxnOp::DeleteBucket { path, cached } => {
                let parent = match path.parent() {
                    None => ROOT,
                    Some(p) => match self.resolve(model, p, *cached)? {
                        Some(id) => id,
                        None => return Ok(Out::NoBucket),
                    },
                };
                let Some(id) = self.lookup(model, parent, path.name())? else {
                    return Err(Fail::BucketNotFound);
                };
                self.write(model, entry_key(parent, path.name().as_bytes()), None)?;
                self.write(model, id_key(b'd', id), Some(Bytes::new()))?;
                self.deleted.insert(id);
                Out::Unit
            }
            TxnOp::Lookup { path, cached } => {
                Out::Found(self.resolve(model, *path, *cached)?.is_some())
            }
            TxnOp::ListBuckets(t) => {
                let space = on!(t);
                self.usable(model, space)?;
                let (_, prefix) = entry_key(space, b"");
                let b = prefix_bounds(&prefix);
                let names = self
                    .view(CATALOG)
                    .into_keys()
                    .filter(|k| in_bounds(k, &b))
                    .map(|k| k.slice(prefix.len()..))
                    .collect();
                self.scanned(CATALOG, b);
                Out::Names(names)
            }
            TxnOp::NextSequence { path, cached } => {
                let Some(id) = self.resolve(model, *path, *cached)? else {
                    return Ok(Out::NoBucket);
                };
                self.usable(model, id)?;
                let key = id_key(b's', id);
                let next = self.read(key.clone()).map_or(0, |v| decode_u64(&v)) + 1;
                self.write(model, key, Some(encode_u64(next)))?;
                Out::Seq(next)
            }
            TxnOp::Scan { target, range, rev } => {
                let space = on!(target);
                self.usable(model, space)?;
                let b = bounds(*range);
                let mut entries: Vec<Entry> = self
                    .view(space)
                    .into_iter()
                    .filter(|(k, _)| in_bounds(k, &b))
                    .collect();
                if *rev {
                    entries.reverse();
                }
                self.scanned(space, b);
                Out::Entries(entries)
            }
            TxnOp::Cursor(t, moves) => {
                let space = on!(t);
                self.usable(model, space)?;
                let mut current: Option<Bytes> = None;
                let mut seen = Vec::new();
                for m in moves {
                    if let Move::Write(k, v) = m {
                        let key = (space, Bytes::from_static(KEYS[*k as usize]));
                        self.write(model, key, v.map(value))?;
                        continue;
                    }
                    let view = self.view(space);
                    let after = || current.clone().map_or(Bound::Unbounded, Bound::Excluded);
                    let (from, reverse) = match m {
                        Move::First => (Bound::Unbounded, false),
                        Move::Last => (Bound::Unbounded, true),
                        Move::Seek(p) => (Bound::Included(point(*p)), false),
                        Move::Next => (after(), false),
                        Move::Prev => (after(), true),
                        Move::Write(..) => unreachable!("done above"),
                    };
                    let found = if reverse {
                        view.into_iter()
                            .rev()
                            .find(|(k, _)| in_bounds(k, &(Bound::Unbounded, from.clone())))
                    } else {
                        view.into_iter()
                            .find(|(k, _)| in_bounds(k, &(from.clone(), Bound::Unbounded)))
                    };
                    let to = found
                        .as_ref()
                        .map_or(Bound::Unbounded, |(k, _)| Bound::Included(k.clone()));
                    self.scanned(space, if reverse { (to, from) } else { (from, to) });
                    if let Some((k, _)) = &found {
                        current = Some(k.clone());
                    }
                    seen.push(found);
                }
                Out::Moves(seen)
            }
        })
    }

    fn rollback(&mut self) -> Result<(), Fail> {
        match self.status {
            Status::Finished(state) => Err(Fail::Finished(state)),
            Status::Active => {
                self.status = Status::Finished("rolled back");
                self.writes.clear();
                Ok(())
            }
        }
    }
}

/// Checks that the store's handles are the model's: the same paths, each store id the one
/// learned for the model's bucket (or, for a bucket new to the model, an id never given out
/// before).
fn check_handles(
    model: &mut Model,
    store: &HashMap<Path, (u64, String)>,
    mine: &HashMap<Path, u64>,
) -> Result<(), String> {
    let mut paths: Vec<&Path> = store.keys().collect();
    paths.sort_by_key(|p| (p.top, p.nested));
    let mut mine_paths: Vec<&Path> = mine.keys().collect();
    mine_paths.sort_by_key(|p| (p.top, p.nested));
    if paths != mine_paths {
        return Err(format!(
            "handles kept: store {paths:?}, model {mine_paths:?}"
        ));
    }
    for (path, (store_id, store_path)) in store {
        if *store_path != path.display() {
            return Err(format!(
                "handle path {store_path}, expected {}",
                path.display()
            ));
        }
        let model_id = mine[path];
        match model.store_ids.get(&model_id) {
            Some(known) if known == store_id => {}
            Some(known) => {
                return Err(format!(
                    "{}: store id {store_id}, but the model's bucket {model_id} is {known}",
                    path.display()
                ));
            }
            None => {
                if model.committed_store_ids.contains(store_id)
                    || !model.session_store_ids.insert(*store_id)
                {
                    return Err(format!(
                        "{}: new bucket given the id {store_id}, already used",
                        path.display()
                    ));
                }
                model.store_ids.insert(model_id, *store_id);
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The runner

struct Slot {
    store: StoreTxn,
    model: ModelTxn,
}

async fn open(dir: &std::path::Path, options: &DbOptions) -> Result<Db, String> {
    Db::open(dir, options.clone())
        .await
        .map_err(|e| format!("open: {e}"))
}

async fn check_state(db: &Db, model: &Model) -> Result<(), String> {
    if db.committed_seq().get() != model.seq {
        return Err(format!(
            "committed seq {}, model {}",
            db.committed_seq(),
            model.seq
        ));
    }
    let store = dump_store(db).await?;
    let expected = model.dump();
    if store != expected {
        return Err(format!(
            "committed state differs:\n store {store:?}\n model {expected:?}"
        ));
    }
    Ok(())
}

async fn run(ops: Vec<Op>, policy: SyncPolicy, with_setup: bool) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // The default driver's backend: RINGTIDE_IO_BACKEND, else io_uring where available.
    let driver = IoDriver::new(DriverOptions::default().pool_threads(4))
        .map_err(|e| format!("driver: {e}"))?;
    let options = DbOptions::default()
        .driver(driver)
        .sync_policy(policy)
        .wal_segment_size_bytes(1 << 20);
    let mut db = open(dir.path(), &options).await?;
    let mut model = Model::new();
    let mut slots: Vec<Slot> = Vec::new();
    // Most sequences start from a few buckets, so that more operations find one.
    let setup = [(0, None), (1, None), (0, Some(0))].map(|(top, nested)| TxnOp::CreateBucket {
        path: Path { top, nested },
        cached: false,
        if_not_exists: false,
    });
    let setup = with_setup.then(|| Op::Update(setup.to_vec()));
    for (step, op) in setup.iter().chain(&ops).enumerate() {
        let ctx = |m: String| format!("step {step} ({op:?}): {m}");
        let pick = |slot: u8, n: usize| slot as usize % n;
        match op {
            Op::Begin {
                isolation,
                read_only,
            } => {
                if slots.len() == SLOTS {
                    // A finished transaction kept makes room.
                    if let Some(i) = slots.iter().position(|s| s.model.status != Status::Active) {
                        slots.remove(i);
                    }
                }
                if slots.len() < SLOTS {
                    let options = TxnOptions::default()
                        .isolation(*isolation)
                        .read_only(*read_only);
                    let txn = db.begin(options).map_err(|e| ctx(e.to_string()))?;
                    slots.push(Slot {
                        store: StoreTxn::new(txn),
                        model: model.begin(*isolation, *read_only),
                    });
                }
            }
            Op::In(slot, txn_op) => {
                if slots.is_empty() {
                    let txn = db
                        .begin(TxnOptions::default())
                        .map_err(|e| ctx(e.to_string()))?;
                    slots.push(Slot {
                        store: StoreTxn::new(txn),
                        model: model.begin(Isolation::Serializable, false),
                    });
                }
                let i = pick(*slot, slots.len());
                let s = &mut slots[i];
                let got = s.store.exec(txn_op).await.map_err(|e| fail(&e));
                let want = s.model.exec(&mut model, txn_op);
                if got != want {
                    return Err(ctx(format!("txn {i}: store {got:?}, model {want:?}")));
                }
                check_handles(&mut model, &s.store.handle_ids(), &s.model.handles)
                    .map_err(|m| ctx(format!("txn {i}: {m}")))?;
            }
            Op::Commit { slot, keep } => {
                if slots.is_empty() {
                    continue;
                }
                let i = pick(*slot, slots.len());
                let s = &mut slots[i];
                let got = s
                    .store
                    .txn
                    .commit()
                    .await
                    .map(|info| (info.seq.get(), info.writes))
                    .map_err(|e| fail(&e));
                let want = model.commit(&mut s.model);
                if got != want {
                    return Err(ctx(format!("txn {i}: store {got:?}, model {want:?}")));
                }
                if !keep {
                    slots.remove(i);
                }
                check_state(&db, &model).await.map_err(ctx)?;
            }
            Op::Rollback { slot, keep } => {
                if slots.is_empty() {
                    continue;
                }
                let i = pick(*slot, slots.len());
                let s = &mut slots[i];
                let got = s.store.txn.rollback().await.map_err(|e| fail(&e));
                let want = s.model.rollback();
                if got != want {
                    return Err(ctx(format!("txn {i}: store {got:?}, model {want:?}")));
                }
                if !keep {
                    slots.remove(i);
                }
            }
            Op::Drop(slot) => {
                if !slots.is_empty() {
                    let i = pick(*slot, slots.len());
                    slots.remove(i);
                }
            }
            Op::Update(txn_ops) => {
                let work_ops = txn_ops.clone();
                let got = db
                    .update(move |txn| {
                        let ops = work_ops.clone();
                        async move {
                            let mut st = StoreTxn::new(txn);
                            let mut outs = Vec::new();
                            for op in &ops {
                                outs.push(st.exec(op).await?);
                            }
                            Ok((outs, st.handle_ids()))
                        }
                    })
                    .await
                    .map_err(|e| fail(&e));
                let mut t = model.begin(Isolation::Serializable, false);
                let mut want = Ok(Vec::new());
                for op in txn_ops {
                    match t.exec(&mut model, op) {
                        Ok(out) => want.as_mut().expect("ok").push(out),
                        Err(e) => {
                            want = Err(e);
                            break;
                        }
                    }
                }
                match (got, want) {
                    (Ok((outs, handles)), Ok(expected)) if outs == expected => {
                        check_handles(&mut model, &handles, &t.handles).map_err(ctx)?;
                        // No commit runs while the closure does: it cannot conflict.
                        model
                            .commit(&mut t)
                            .map_err(|e| ctx(format!("the model's update conflicts ({e:?})")))?;
                    }
                    (Err(g), Err(w)) if g == w => {}
                    (got, want) => {
                        let got = got.map(|(outs, _)| outs);
                        return Err(ctx(format!("store {got:?}, model {want:?}")));
                    }
                }
                check_state(&db, &model).await.map_err(ctx)?;
            }
            Op::Flush => {
                db.flush().await.map_err(|e| ctx(format!("flush: {e}")))?;
                check_state(&db, &model).await.map_err(ctx)?;
            }
            Op::Compact => {
                db.compact()
                    .await
                    .map_err(|e| ctx(format!("compact: {e}")))?;
                check_state(&db, &model).await.map_err(ctx)?;
            }
            Op::Reopen => {
                slots.clear();
                db.close().await.map_err(|e| ctx(format!("close: {e}")))?;
                drop(db);
                db = open(dir.path(), &options).await.map_err(ctx)?;
                model.session_store_ids.clear();
                check_state(&db, &model).await.map_err(ctx)?;
            }
        }
    }
    slots.clear();
    check_state(&db, &model)
        .await
        .map_err(|m| format!("at the end: {m}"))?;
    db.close().await.map_err(|e| format!("close: {e}"))
}

fn block_on(f: impl std::future::Future<Output = Result<(), String>>) -> Result<(), String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn transactions_match_the_model(
        ops in prop::collection::vec(op(), 8..60),
        synced in any::<bool>(),
        setup in 0u8..4,
    ) {
        let policy = if synced { SyncPolicy::Immediate } else { SyncPolicy::None };
        if let Err(why) = block_on(run(ops, policy, setup > 0)) {
            prop_assert!(false, "{why}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions: store bugs the model found, as fixed sequences on both backends.

mod common;

both_backends!(
    scans_of_inverted_ranges_are_empty,
    handles_of_deleted_buckets_refuse_every_use,
    writes_into_buckets_deleted_concurrently_conflict,
);

fn fixed_options(driver: &IoDriver) -> DbOptions {
    DbOptions::default()
        .driver(driver.clone())
        .wal_segment_size_bytes(1 << 20)
}

fn is_not_found<T: std::fmt::Debug>(r: ringtide::Result<T>) -> bool {
    matches!(r, Err(Error::BucketNotFound { .. }))
}

/// A range that holds no key (inverted, or empty at one point) scans as empty, in either
/// direction. It used to panic in `BTreeMap::range` when the transaction had writes of its
/// own in the keyspace (and, recorded, would have panicked in the commit's validation).
async fn scans_of_inverted_ranges_are_empty(driver: IoDriver) -> ringtide::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), fixed_options(&driver)).await?;
    let txn = db.begin(TxnOptions::default())?;
    txn.put("b", "committed")?;
    txn.commit().await?;

    let txn = db.begin(TxnOptions::default())?;
    txn.put("a", "own")?;
    txn.put("c", "own")?;
    let bucket = txn.create_bucket("t").await?;
    bucket.put("b", "own")?;
    let (a, b, c) = (Bytes::from("a"), Bytes::from("b"), Bytes::from("c"));
    let empty = [
        (Bound::Included(c.clone()), Bound::Excluded(a.clone())),
        (Bound::Included(c.clone()), Bound::Included(a.clone())),
        (Bound::Excluded(c), Bound::Unbounded),
        (Bound::Unbounded, Bound::Excluded(a)),
        (Bound::Excluded(b.clone()), Bound::Excluded(b.clone())),
        (Bound::Included(b.clone()), Bound::Excluded(b.clone())),
        (Bound::Excluded(b.clone()), Bound::Included(b)),
    ];
    for range in empty {
        for rev in [false, true] {
            let scan = |s: ringtide::kv::Scan| if rev { s.rev() } else { s };
            let root: Vec<Entry> = scan(txn.scan(range.clone())).try_collect().await?;
            assert_eq!(root, vec![], "{range:?} rev {rev}");
            let inner: Vec<Entry> = scan(bucket.scan(range.clone())).try_collect().await?;
            assert_eq!(inner, vec![], "{range:?} rev {rev}");
        }
    }
    // A serializable commit validates what it scanned.
    txn.commit().await?;
    db.close().await
}

/// Every use of a handle of a bucket the transaction deleted, or of a bucket nested in it, is
/// refused. Scans, cursors, sequences and nested buckets used to go on as if it were there
/// (nested buckets created through it were left orphaned in the catalog).
async fn handles_of_deleted_buckets_refuse_every_use(driver: IoDriver) -> ringtide::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), fixed_options(&driver)).await?;
    let txn = db.begin(TxnOptions::default())?;
    let t = txn.create_bucket("t").await?;
    t.put("k", "v")?;
    t.next_sequence().await?;
    t.create_bucket("n").await?.put("k", "v")?;
    txn.commit().await?;

    for isolation in [Isolation::Snapshot, Isolation::Serializable] {
        let txn = db.begin(TxnOptions::default().isolation(isolation))?;
        let t = txn.bucket("t").await?.expect("t");
        let n = t.bucket("n").await?.expect("t/n");
        txn.delete_bucket("t").await?;
        assert!(is_not_found(t.get("k").await));
        assert!(is_not_found(t.put("k", "w")));
        assert!(is_not_found(
            t.scan::<&[u8]>(..).try_collect::<Vec<_>>().await
        ));
        assert!(is_not_found(
            t.scan_prefix("k").rev().try_collect::<Vec<_>>().await
        ));
        assert!(is_not_found(t.cursor().first().await));
        assert!(is_not_found(t.next_sequence().await));
        assert!(is_not_found(t.buckets().await));
        assert!(is_not_found(t.bucket("n").await));
        assert!(is_not_found(t.create_bucket("m").await));
        assert!(is_not_found(t.create_bucket_if_not_exists("n").await));
        assert!(is_not_found(t.delete_bucket("n").await));
        // Deleted with its parent.
        assert!(is_not_found(n.get("k").await));
        assert!(is_not_found(n.put("k2", "w")));
        assert!(is_not_found(
            n.scan::<&[u8]>(..).try_collect::<Vec<_>>().await
        ));
        assert!(is_not_found(n.cursor().last().await));
        assert!(is_not_found(n.next_sequence().await));
        assert!(txn.bucket("t").await?.is_none());
        // Nothing but the deletion is written: its catalog entry and its reclaim marker.
        assert_eq!(txn.commit().await?.writes, 2);
        // Back for the next round.
        let txn = db.begin(TxnOptions::default())?;
        let t = txn.create_bucket("t").await?;
        t.create_bucket("n").await?;
        txn.commit().await?;
    }
    db.close().await
}

/// A write into a bucket conflicts with a concurrent deletion of the bucket or of a bucket it
/// is nested in, at either isolation level, whether the write is a key, a sequence taken or a
/// nested bucket created or deleted. Under snapshot isolation only a key written straight into
/// the deleted bucket used to conflict: the others committed into a bucket no longer there.
async fn writes_into_buckets_deleted_concurrently_conflict(
    driver: IoDriver,
) -> ringtide::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), fixed_options(&driver)).await?;
    let mut round = 0;
    for isolation in [Isolation::Snapshot, Isolation::Serializable] {
        for write in [
            "key in nested",
            "sequence",
            "nested bucket",
            "nested deletion",
        ] {
            round += 1;
            let name = format!("t{round}");
            let setup = db.begin(TxnOptions::default())?;
            setup.create_bucket(&name).await?.create_bucket("n").await?;
            setup.commit().await?;

            let txn = db.begin(TxnOptions::default().isolation(isolation))?;
            let t = txn.bucket(&name).await?.expect("created");
            match write {
                "key in nested" => t.bucket("n").await?.expect("n").put("k", "v")?,
                "sequence" => drop(t.next_sequence().await?),
                "nested bucket" => drop(t.create_bucket("m").await?),
                _ => t.delete_bucket("n").await?,
            }
            // An unrelated change in the bucket commits in between (alone, it does not
            // conflict: see the end), then the deletion.
            let other = db.begin(TxnOptions::default())?;
            let ot = other.bucket(&name).await?.expect("created");
            ot.create_bucket("o").await?;
            ot.put("other", "v")?;
            other.commit().await?;
            let deleter = db.begin(TxnOptions::default())?;
            deleter.delete_bucket(&name).await?;
            deleter.commit().await?;
            match txn.commit().await {
                Err(Error::Conflict {
                    kind: ConflictKind::ReadWrite,
                    ..
                }) => {}
                other => panic!("{isolation:?}, {write}: {other:?}"),
            }
        }
    }
    // Without the deletion, the same writes commit (snapshot isolation).
    let setup = db.begin(TxnOptions::default())?;
    setup.create_bucket("u").await?.create_bucket("n").await?;
    setup.commit().await?;
    let txn = db.begin(TxnOptions::default().isolation(Isolation::Snapshot))?;
    let u = txn.bucket("u").await?.expect("created");
    u.bucket("n").await?.expect("n").put("k", "v")?;
    u.next_sequence().await?;
    u.create_bucket("m").await?;
    let other = db.begin(TxnOptions::default())?;
    let ou = other.bucket("u").await?.expect("created");
    ou.create_bucket("o").await?;
    ou.put("other", "v")?;
    other.commit().await?;
    txn.commit().await?;
    db.close().await
}
