//! A model of the key-value store's transactions for the crash tests (`kv_sim`, `kv_kill`): a
//! transaction is a list of [`Op`]s, run on a real [`Txn`] by [`run_ops`] and on a [`State`] by
//! [`State::apply`]; [`read_back`] reads one namespace of a recovered store into a `State`, to
//! compare with the states the model allows.
//!
//! Every value names the transaction that wrote it ([`value`]: its id, how many writes it made,
//! the write's place among them), so that a value found anywhere can be traced ([`describe`]).

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different subset"
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::Bytes;
use futures::TryStreamExt;
use ringtide::Result;
use ringtide::kv::{Bucket, Txn};

/// One write of a transaction. Bucket paths are `name` or `name/nested`; `""` is the root
/// keyspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        bucket: String,
        key: Bytes,
        value: Bytes,
    },
    Delete {
        bucket: String,
        key: Bytes,
    },
    CreateBucket(String),
    DeleteBucket(String),
}

impl Op {
    pub fn put(bucket: &str, key: impl Into<Bytes>, value: Bytes) -> Op {
        Op::Put {
            bucket: bucket.to_owned(),
            key: key.into(),
            value,
        }
    }

    pub fn delete(bucket: &str, key: impl Into<Bytes>) -> Op {
        Op::Delete {
            bucket: bucket.to_owned(),
            key: key.into(),
        }
    }
}

const VALUE_HEADER: usize = 17;

/// The value of write `index` of the `count` writes of transaction `wid`: a header naming them,
/// then filler derived from them, `len` bytes in all (at least the header's 17).
pub fn value(wid: u64, count: u32, index: u32, len: usize) -> Bytes {
    let mut v = Vec::with_capacity(len.max(VALUE_HEADER));
    v.push(b'W');
    v.extend_from_slice(&wid.to_le_bytes());
    v.extend_from_slice(&count.to_le_bytes());
    v.extend_from_slice(&index.to_le_bytes());
    let fill = (wid as u8).wrapping_mul(31) ^ (index as u8);
    v.resize(len.max(VALUE_HEADER), fill);
    Bytes::from(v)
}

/// `(wid, count, index)` of a value [`value`] made, or `None` for any other bytes.
pub fn describe(v: &[u8]) -> Option<(u64, u32, u32)> {
    if v.len() < VALUE_HEADER || v[0] != b'W' {
        return None;
    }
    let wid = u64::from_le_bytes(v[1..9].try_into().ok()?);
    let count = u32::from_le_bytes(v[9..13].try_into().ok()?);
    let index = u32::from_le_bytes(v[13..17].try_into().ok()?);
    (value(wid, count, index, v.len()) == v).then_some((wid, count, index))
}

/// What a set of transactions left: the root keyspace's keys and every bucket (empty ones
/// included) with its keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    pub root: BTreeMap<Bytes, Bytes>,
    pub buckets: BTreeMap<String, BTreeMap<Bytes, Bytes>>,
}

impl State {
    /// Applies one transaction's ops, in order.
    pub fn apply(&mut self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Put { bucket, key, value } => {
                    self.map_mut(bucket).insert(key.clone(), value.clone());
                }
                Op::Delete { bucket, key } => {
                    self.map_mut(bucket).remove(key);
                }
                Op::CreateBucket(path) => {
                    let old = self.buckets.insert(path.clone(), BTreeMap::new());
                    assert!(old.is_none(), "the plan creates {path} twice");
                }
                Op::DeleteBucket(path) => {
                    assert!(
                        self.buckets.contains_key(path),
                        "no bucket {path} to delete"
                    );
                    let nested = format!("{path}/");
                    self.buckets
                        .retain(|p, _| p != path && !p.starts_with(&nested));
                }
            }
        }
    }

    fn map_mut(&mut self, bucket: &str) -> &mut BTreeMap<Bytes, Bytes> {
        if bucket.is_empty() {
            &mut self.root
        } else {
            self.buckets
                .get_mut(bucket)
                .unwrap_or_else(|| panic!("the plan writes into {bucket}, which does not exist"))
        }
    }

    pub fn has_bucket(&self, path: &str) -> bool {
        self.buckets.contains_key(path)
    }

    pub fn get(&self, bucket: &str, key: &[u8]) -> Option<&Bytes> {
        if bucket.is_empty() {
            self.root.get(key)
        } else {
            self.buckets.get(bucket)?.get(key)
        }
    }

    /// Keys and buckets in all.
    pub fn len(&self) -> usize {
        self.root.len() + self.buckets.values().map(|b| 1 + b.len()).sum::<usize>()
    }
}

/// Where two states differ (the first few differences), values described by writer.
pub fn diff(expected: &State, found: &State) -> String {
    let mut out = String::new();
    let mut n = 0;
    let show = |v: Option<&Bytes>| match v {
        None => "absent".to_owned(),
        Some(v) => match describe(v) {
            Some((wid, count, index)) => {
                format!("write {index} of {count} of txn {wid} ({} B)", v.len())
            }
            None => format!("{} bytes no transaction wrote", v.len()),
        },
    };
    let mut note = |what: String| {
        if n < 6 {
            let _ = write!(out, "\n      {what}");
        }
        n += 1;
    };
    let paths: std::collections::BTreeSet<&String> = expected
        .buckets
        .keys()
        .chain(found.buckets.keys())
        .collect();
    let empty = BTreeMap::new();
    let mut maps = vec![("/".to_owned(), &expected.root, &found.root)];
    for p in paths {
        match (expected.buckets.get(p), found.buckets.get(p)) {
            (Some(e), Some(f)) => maps.push((p.clone(), e, f)),
            (Some(e), None) => {
                note(format!("bucket {p} missing ({} keys expected)", e.len()));
            }
            (None, Some(f)) => {
                note(format!("bucket {p} should not exist ({} keys)", f.len()));
                maps.push((p.clone(), &empty, f));
            }
            (None, None) => {}
        }
    }
    for (path, e, f) in maps {
        let keys: std::collections::BTreeSet<&Bytes> = e.keys().chain(f.keys()).collect();
        for k in keys {
            if e.get(k) != f.get(k) {
                note(format!(
                    "{path} {:?}: expected {}, found {}",
                    String::from_utf8_lossy(k),
                    show(e.get(k)),
                    show(f.get(k))
                ));
            }
        }
    }
    if n > 6 {
        let _ = write!(out, "\n      … {} more", n - 6);
    }
    out
}

/// A transaction's writes as [`PreparedTxn::writes`] lists them: `(bucket id, key, value or
/// None for a delete)`.
///
/// [`PreparedTxn::writes`]: ringtide::kv::PreparedTxn::writes
pub type RawWrites = Vec<(u64, Bytes, Option<Bytes>)>;

/// Runs `ops` in `txn`; returns its writes as [`PreparedTxn::writes`] lists them — `(bucket id,
/// key, value)`, sorted, the last write of each key only — when every op is a put or a delete.
///
/// [`PreparedTxn::writes`]: ringtide::kv::PreparedTxn::writes
pub async fn run_ops(txn: &Txn, ops: &[Op]) -> Result<RawWrites> {
    let mut handles: BTreeMap<String, Bucket> = BTreeMap::new();
    let mut writes: BTreeMap<(u64, Bytes), Option<Bytes>> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Put { bucket, key, value } => {
                if bucket.is_empty() {
                    txn.put(key.clone(), value.clone())?;
                    writes.insert((0, key.clone()), Some(value.clone()));
                } else {
                    let b = handle(txn, &mut handles, bucket).await?;
                    b.put(key.clone(), value.clone())?;
                    writes.insert((b.id(), key.clone()), Some(value.clone()));
                }
            }
            Op::Delete { bucket, key } => {
                if bucket.is_empty() {
                    txn.delete(key.clone())?;
                    writes.insert((0, key.clone()), None);
                } else {
                    let b = handle(txn, &mut handles, bucket).await?;
                    b.delete(key.clone())?;
                    writes.insert((b.id(), key.clone()), None);
                }
            }
            Op::CreateBucket(path) => {
                let b = match path.rsplit_once('/') {
                    Some((parent, name)) => {
                        handle(txn, &mut handles, parent)
                            .await?
                            .create_bucket(name)
                            .await?
                    }
                    None => txn.create_bucket(path).await?,
                };
                handles.insert(path.clone(), b);
            }
            Op::DeleteBucket(path) => {
                match path.rsplit_once('/') {
                    Some((parent, name)) => {
                        handle(txn, &mut handles, parent)
                            .await?
                            .delete_bucket(name)
                            .await?;
                    }
                    None => txn.delete_bucket(path).await?,
                }
                let nested = format!("{path}/");
                handles.retain(|p, _| p != path && !p.starts_with(&nested));
            }
        }
    }
    Ok(writes.into_iter().map(|((b, k), v)| (b, k, v)).collect())
}

async fn handle(txn: &Txn, handles: &mut BTreeMap<String, Bucket>, path: &str) -> Result<Bucket> {
    if let Some(b) = handles.get(path) {
        return Ok(b.clone());
    }
    let mut parts = path.split('/');
    let first = parts.next().expect("a bucket path");
    let mut b = txn
        .bucket(first)
        .await?
        .unwrap_or_else(|| panic!("the plan uses bucket {first}, which does not exist"));
    for part in parts {
        b = b
            .bucket(part)
            .await?
            .unwrap_or_else(|| panic!("the plan uses bucket {path}, which does not exist"));
    }
    handles.insert(path.to_owned(), b.clone());
    Ok(b)
}

/// Reads one namespace of the store as `txn` sees it: the root keys that start with
/// `root_prefix`, and the top-level buckets whose names start with `bucket_prefix`, with every
/// bucket nested in them.
pub async fn read_back(txn: &Txn, root_prefix: &[u8], bucket_prefix: &str) -> Result<State> {
    let mut state = State::default();
    let root: Vec<(Bytes, Bytes)> = txn.scan_prefix(root_prefix).try_collect().await?;
    state.root.extend(root);
    let mut stack: Vec<(String, Bucket)> = Vec::new();
    for name in txn.buckets().await? {
        let name = String::from_utf8(name.to_vec()).expect("bucket names are UTF-8 here");
        if name.starts_with(bucket_prefix) {
            let b = txn.bucket(&name).await?.expect("a listed bucket opens");
            stack.push((name, b));
        }
    }
    while let Some((path, b)) = stack.pop() {
        let entries: Vec<(Bytes, Bytes)> = b.scan::<&[u8]>(..).try_collect().await?;
        state
            .buckets
            .insert(path.clone(), entries.into_iter().collect());
        for name in b.buckets().await? {
            let name = String::from_utf8(name.to_vec()).expect("bucket names are UTF-8 here");
            let nested = b.bucket(&name).await?.expect("a listed bucket opens");
            stack.push((format!("{path}/{name}"), nested));
        }
    }
    Ok(state)
}

/// SplitMix64: deterministic choices from a few numbers.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub fn hash(parts: &[u64]) -> u64 {
    parts.iter().fold(0x5eed, |h, &p| mix(h ^ mix(p)))
}
