//! An isolation-anomaly checker for recorded transaction histories, after Elle (Kingsbury &
//! Alvaro, "Elle: Inferring Isolation Anomalies from Experimental Observations", VLDB 2020) and
//! Adya's phenomena.
//!
//! It consumes a history, never a store: a list of completed transactions ([`Txn`]), each with its
//! outcome and the operations its client saw. Two kinds of objects are supported, each key in its
//! own namespace: lists, which transactions append to and read whole ([`Op::Append`],
//! [`Op::ReadList`]), and registers, which they overwrite and read ([`Op::Write`], [`Op::Read`]).
//! Values written to a key must be unique (the generator guarantees it), so every observed value
//! names the one write that produced it.
//!
//! Method:
//! - Unknown (indeterminate) transactions whose writes some read observes took effect, so they
//!   count as committed; the others are left out. Aborted transactions are left out; a read of
//!   their writes is G1a.
//! - Version orders. A list's version order is its longest read: every read of the key must be a
//!   prefix of it, else the key is reported as [`AnomalyKind::IncompatibleOrder`] and no
//!   dependency is inferred from it; the appends no read observed follow the observed ones, in
//!   an unknown order. A register's version order is the store's commit order
//!   (`commit_seq`) when present; without it only what is sound is inferred: the initial (absent)
//!   version precedes every write, and a key written by a single transaction is ordered trivially.
//! - The dependency graph between the included transactions: ww (consecutive versions of a key),
//!   wr (a transaction read the version another wrote) and rw (a transaction read a version,
//!   another wrote the next one). Only a transaction's reads of a key before its own first write
//!   to it (external reads) give wr and rw edges.
//! - Cycles: Tarjan's strongly connected components of the ww graph (G0), of the ww+wr graph
//!   (G1c) and of the whole graph; in each component of the whole graph, a cycle with exactly one
//!   rw edge is looked for (G-single), else the cycle found through an rw edge has several
//!   (G2-item). One cycle is reported per component and kind.
//! - Per-read checks: G1a (aborted read), G1b (intermediate read), garbage reads, lost updates
//!   and internal inconsistency (a transaction's read contradicting its own earlier operations).
//!
//! Limits:
//! - One cycle is reported per component and kind, and a component with a G-single cycle is not
//!   searched for a G2-item one too.
//! - Without `commit_seq`, writes to a register (other than its only one) are ordered only after
//!   its initial state, and a list's unread appends only after what was read: an anomaly that
//!   needs their mutual order goes unseen or is classified by the edges known (two blind
//!   read-modify-writes of a register from its initial state show as G2-item, with a lost
//!   update). The store's sequence numbers make the register orders total.
//! - No real-time or process order is used, and `start_seq` is not checked against what was read.
//! - The G-single search is given a budget of edge visits (and the edges to writes of unknown
//!   order another); what a cut-short search may have missed is said in [`Report::notes`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;

// ------------------------------------------------------------------------------------------------
// The history.

/// How a transaction ended, as its client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The store acknowledged the commit.
    Committed,
    /// The transaction was rolled back: none of its writes may ever be observed.
    Aborted,
    /// Indeterminate: the result of the commit is unknown (it timed out, the connection broke).
    /// Counted as committed when a read of an included transaction observes one of its writes,
    /// left out otherwise.
    Unknown,
}

/// One operation of a transaction, with the value it wrote or observed.
///
/// List keys and register keys are separate namespaces: list 1 and register 1 are two objects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Appends `value` to the list at `key`.
    Append {
        /// The list's key.
        key: u64,
        /// The value appended, unique among the values appended to this key.
        value: u64,
    },
    /// Reads the whole list at `key`.
    ReadList {
        /// The list's key.
        key: u64,
        /// The list observed, oldest element first; `None` when the key was absent, which is the
        /// same as an empty list. Record no read whose result is not known.
        value: Option<Vec<u64>>,
    },
    /// Overwrites the register at `key` with `value`.
    Write {
        /// The register's key.
        key: u64,
        /// The value written, unique among the values written to this key.
        value: u64,
    },
    /// Reads the register at `key`.
    Read {
        /// The register's key.
        key: u64,
        /// The value observed; `None` when the key was absent (its initial state). Record no read
        /// whose result is not known.
        value: Option<u64>,
    },
}

impl Op {
    /// An append of `value` to the list at `key`.
    pub fn append(key: u64, value: u64) -> Self {
        Op::Append { key, value }
    }

    /// A read of the list at `key` that observed `value` (empty: the key was absent).
    pub fn read_list(key: u64, value: &[u64]) -> Self {
        Op::ReadList {
            key,
            value: Some(value.to_vec()),
        }
    }

    /// A write of `value` to the register at `key`.
    pub fn write(key: u64, value: u64) -> Self {
        Op::Write { key, value }
    }

    /// A read of the register at `key` that observed `value` (`None`: the key was absent).
    pub fn read(key: u64, value: Option<u64>) -> Self {
        Op::Read { key, value }
    }

    fn key(&self) -> Key {
        match self {
            Op::Append { key, .. } | Op::ReadList { key, .. } => (Space::List, *key),
            Op::Write { key, .. } | Op::Read { key, .. } => (Space::Register, *key),
        }
    }

    /// The key and the value this operation wrote, if it is a write.
    fn written(&self) -> Option<(Key, u64)> {
        match self {
            Op::Append { value, .. } | Op::Write { value, .. } => Some((self.key(), *value)),
            Op::ReadList { .. } | Op::Read { .. } => None,
        }
    }

    /// The key and the values this operation observed, if it is a read (for a register, at most
    /// one value).
    fn observed(&self) -> Option<(Key, &[u64])> {
        match self {
            Op::ReadList { value, .. } => Some((self.key(), value.as_deref().unwrap_or(&[]))),
            Op::Read { value, .. } => Some((self.key(), value.as_slice())),
            Op::Append { .. } | Op::Write { .. } => None,
        }
    }
}

/// A completed transaction of a recorded history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Txn {
    /// The transaction's identifier, unique in the history; reports name it `T<id>`.
    pub id: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// Its operations, in the order they were issued, with the values they observed.
    pub ops: Vec<Op>,
    /// The store's commit sequence number, when the store reports one. The store's commit order
    /// is taken as the version order of the registers this transaction wrote.
    pub commit_seq: Option<u64>,
    /// The sequence number of the snapshot the transaction read, when the store reports one.
    /// Shown in explanations; not used for inference.
    pub start_seq: Option<u64>,
}

impl Txn {
    /// A transaction without sequence numbers.
    pub fn new(id: u64, outcome: Outcome, ops: Vec<Op>) -> Self {
        Txn {
            id,
            outcome,
            ops,
            commit_seq: None,
            start_seq: None,
        }
    }

    /// A committed transaction without sequence numbers.
    pub fn committed(id: u64, ops: Vec<Op>) -> Self {
        Self::new(id, Outcome::Committed, ops)
    }

    /// An aborted transaction.
    pub fn aborted(id: u64, ops: Vec<Op>) -> Self {
        Self::new(id, Outcome::Aborted, ops)
    }

    /// A transaction whose commit has an unknown result.
    pub fn unknown(id: u64, ops: Vec<Op>) -> Self {
        Self::new(id, Outcome::Unknown, ops)
    }

    /// The same transaction with the store's snapshot and commit sequence numbers.
    pub fn with_seqs(mut self, start_seq: u64, commit_seq: u64) -> Self {
        self.start_seq = Some(start_seq);
        self.commit_seq = Some(commit_seq);
        self
    }
}

// ------------------------------------------------------------------------------------------------
// The report.

/// A kind of anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnomalyKind {
    /// Write cycle: a cycle of ww dependencies.
    G0,
    /// Aborted read: an included transaction observed a write of an aborted one.
    G1a,
    /// Intermediate read: a transaction observed a value another one overwrote (or appended
    /// after) before it committed.
    G1b,
    /// Circular information flow: a cycle of ww and wr dependencies with at least one wr.
    G1c,
    /// A cycle with exactly one rw (anti-)dependency, such as read skew. Forbidden under
    /// snapshot isolation.
    GSingle,
    /// A cycle with more than one rw dependency, such as write skew. Allowed under snapshot
    /// isolation, not under serializability.
    G2Item,
    /// Two included transactions both read the same version of a key and both wrote the key.
    LostUpdate,
    /// A transaction's read does not reflect its own earlier reads and writes of the key.
    Internal,
    /// A read observed a value that no transaction wrote.
    GarbageRead,
    /// Two reads of a list are not prefixes of one order of appends (or a read holds a value
    /// twice): no version order explains them.
    IncompatibleOrder,
    /// A value was written to a key more than once, against the history's contract: the
    /// inferences about that value are unreliable.
    DuplicateWrite,
}

impl AnomalyKind {
    /// Every kind, in report order.
    pub const ALL: [AnomalyKind; 11] = [
        AnomalyKind::G0,
        AnomalyKind::G1a,
        AnomalyKind::G1b,
        AnomalyKind::G1c,
        AnomalyKind::GSingle,
        AnomalyKind::G2Item,
        AnomalyKind::LostUpdate,
        AnomalyKind::Internal,
        AnomalyKind::GarbageRead,
        AnomalyKind::IncompatibleOrder,
        AnomalyKind::DuplicateWrite,
    ];

    /// The kind's name, as Elle spells it.
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::G0 => "G0",
            AnomalyKind::G1a => "G1a",
            AnomalyKind::G1b => "G1b",
            AnomalyKind::G1c => "G1c",
            AnomalyKind::GSingle => "G-single",
            AnomalyKind::G2Item => "G2-item",
            AnomalyKind::LostUpdate => "lost-update",
            AnomalyKind::Internal => "internal",
            AnomalyKind::GarbageRead => "garbage-read",
            AnomalyKind::IncompatibleOrder => "incompatible-order",
            AnomalyKind::DuplicateWrite => "duplicate-write",
        }
    }

    /// Whether snapshot isolation allows it (only G2-item does).
    pub fn allowed_under_snapshot_isolation(self) -> bool {
        self == AnomalyKind::G2Item
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One anomaly found in a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    /// What it is.
    pub kind: AnomalyKind,
    /// The ids of the transactions involved: for a cycle, in cycle order; for a read of another
    /// transaction's write (G1a, G1b), the reader then the writer.
    pub txns: Vec<u64>,
    /// What was observed and why it is an anomaly.
    pub explanation: String,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] ", self.kind)?;
        for (i, id) in self.txns.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}T{id}")?;
        }
        write!(f, ": {}", self.explanation)
    }
}

/// What [`check`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The anomalies, ordered by kind.
    pub anomalies: Vec<Anomaly>,
    /// Limits the check ran into (a search cut short, a key left out of the inference); empty
    /// when the check was complete.
    pub notes: Vec<String>,
}

/// Anomalies of one kind shown by the report's `Display` (and so by the assertions).
const SHOWN_PER_KIND: usize = 8;

impl Report {
    /// Whether an anomaly of `kind` was found.
    pub fn has(&self, kind: AnomalyKind) -> bool {
        self.anomalies.iter().any(|a| a.kind == kind)
    }

    /// The kinds of the anomalies found.
    pub fn kinds(&self) -> BTreeSet<AnomalyKind> {
        self.anomalies.iter().map(|a| a.kind).collect()
    }

    /// The anomalies of `kind`.
    pub fn of_kind(&self, kind: AnomalyKind) -> impl Iterator<Item = &Anomaly> + '_ {
        self.anomalies.iter().filter(move |a| a.kind == kind)
    }

    /// Whether the history is serializable as far as the checker can tell: no anomaly at all.
    pub fn is_serializable(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// Whether the history is consistent with snapshot isolation as far as the checker can tell:
    /// no anomaly but G2-item.
    pub fn is_snapshot_isolation(&self) -> bool {
        self.anomalies
            .iter()
            .all(|a| a.kind.allowed_under_snapshot_isolation())
    }

    /// Panics with the anomalies unless the history is serializable.
    #[track_caller]
    pub fn assert_serializable(&self) {
        assert!(
            self.is_serializable(),
            "the history is not serializable:\n{self}"
        );
    }

    /// Panics with the anomalies unless the history is consistent with snapshot isolation
    /// (anything but G2-item fails it, G-single and lost update included).
    #[track_caller]
    pub fn assert_snapshot_isolation(&self) {
        if !self.is_snapshot_isolation() {
            let forbidden = Report {
                anomalies: self
                    .anomalies
                    .iter()
                    .filter(|a| !a.kind.allowed_under_snapshot_isolation())
                    .cloned()
                    .collect(),
                notes: self.notes.clone(),
            };
            panic!("the history violates snapshot isolation:\n{forbidden}");
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.anomalies.is_empty() {
            f.write_str("no anomalies")?;
        } else {
            write!(f, "{} anomalies:", self.anomalies.len())?;
            for kind in AnomalyKind::ALL {
                let count = self.of_kind(kind).count();
                if count > 0 {
                    write!(f, " {kind} x{count}")?;
                }
            }
            for kind in AnomalyKind::ALL {
                for anomaly in self.of_kind(kind).take(SHOWN_PER_KIND) {
                    write!(f, "\n- {anomaly}")?;
                }
                let count = self.of_kind(kind).count();
                if count > SHOWN_PER_KIND {
                    let more = count - SHOWN_PER_KIND;
                    write!(f, "\n  ... and {more} more {kind}")?;
                }
            }
        }
        for note in &self.notes {
            write!(f, "\nnote: {note}")?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------
// The check.

/// Checks `history` for isolation anomalies.
///
/// Transaction ids should be unique; the result does not depend on the order of the slice except
/// for the order of the anomalies of one kind.
pub fn check(history: &[Txn]) -> Report {
    let mut checker = Checker::new(history);
    checker.run();
    let mut anomalies = checker.anomalies;
    anomalies.sort_by_key(|a| a.kind);
    Report {
        anomalies,
        notes: checker.notes,
    }
}

/// Which namespace a key lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Space {
    List,
    Register,
}

type Key = (Space, u64);

fn key_name((space, key): Key) -> String {
    match space {
        Space::List => format!("list {key}"),
        Space::Register => format!("register {key}"),
    }
}

fn reg_value(value: Option<u64>) -> String {
    value.map_or_else(|| "absent".to_owned(), |v| v.to_string())
}

/// A list for an explanation, elided in the middle when long.
fn fmt_list(list: &[u64]) -> String {
    const HEAD: usize = 4;
    const TAIL: usize = 6;
    let join = |s: &[u64]| s.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    if list.len() <= HEAD + TAIL + 2 {
        format!("[{}]", join(list))
    } else {
        format!(
            "[{}, ..., {}] ({} elements)",
            join(&list[..HEAD]),
            join(&list[list.len() - TAIL..]),
            list.len()
        )
    }
}

/// The transaction that wrote a value.
#[derive(Clone, Copy, Debug)]
struct WriteRec {
    txn: usize,
    /// Whether it is the writer's last write to the key.
    is_final: bool,
}

/// A read by an included transaction.
#[derive(Clone, Copy, Debug)]
struct ReadRec<'h> {
    txn: usize,
    /// The values observed: the list, or the register's value (empty: absent).
    values: &'h [u64],
    /// Whether the reader had not written the key yet.
    external: bool,
}

/// The part of a key's reads already examined, so that a read of an examined prefix (most reads
/// of a list re-read what earlier reads saw) costs a comparison rather than a look-up per value.
#[derive(Debug, Default)]
struct Examined {
    /// The longest read examined so far among the reads that extend one another.
    prefix: Vec<u64>,
    /// The positions in `prefix` of the values flagged, ascending.
    flagged: Vec<usize>,
}

impl Examined {
    /// Calls `flag` on each value of `values` not examined yet and returns the values of `values`
    /// it flagged (now or before).
    fn scan(&mut self, values: &[u64], mut flag: impl FnMut(u64) -> bool) -> Vec<u64> {
        if self.prefix.starts_with(values) {
            let end = self.flagged.partition_point(|&p| p < values.len());
            return self.flagged[..end].iter().map(|&p| values[p]).collect();
        }
        if values.starts_with(&self.prefix) {
            for (p, &value) in values.iter().enumerate().skip(self.prefix.len()) {
                if flag(value) {
                    self.flagged.push(p);
                }
            }
            self.prefix.extend_from_slice(&values[self.prefix.len()..]);
            return self.flagged.iter().map(|&p| values[p]).collect();
        }
        // A read that diverges from the examined one (an incompatible order): examined alone.
        values.iter().copied().filter(|&v| flag(v)).collect()
    }
}

/// The edge types, as bits of a mask.
const WW: u8 = 1;
const WR: u8 = 2;
const RW: u8 = 4;
const ALL: u8 = WW | WR | RW;

fn dep_name(dep: u8) -> &'static str {
    match dep {
        WW => "ww",
        WR => "wr",
        _ => "rw",
    }
}

/// Why a dependency edge exists; rendered with the ids of its ends.
#[derive(Clone, Debug)]
enum Why {
    /// `from` appended `prev`, `to` appended `next` right after it (or, when `later`, some time
    /// after it: no read observed `next`).
    ListWw {
        key: u64,
        prev: u64,
        next: u64,
        later: bool,
    },
    /// `to` read a list ending in `last`, which `from` appended.
    ListWr { key: u64, last: u64 },
    /// `from` read the list with `len` elements, ending in `last`; `to` appended the next one
    /// (or, when `later`, a later one that no read observed).
    ListRw {
        key: u64,
        len: usize,
        last: Option<u64>,
        next: u64,
        later: bool,
    },
    /// `from` wrote `prev`, `to` wrote `next`, the next version in commit order.
    RegWw { key: u64, prev: u64, next: u64 },
    /// `to` read `value`, which `from` wrote.
    RegWr { key: u64, value: u64 },
    /// `from` read `read`; `to` wrote `next`, the next version (or, when `later`, some later
    /// version: the commit order of the writers is unknown).
    RegRw {
        key: u64,
        read: Option<u64>,
        next: u64,
        later: bool,
    },
}

#[derive(Clone, Copy, Debug)]
struct Edge {
    to: usize,
    dep: u8,
    why: usize,
}

/// The dependency graph: one node per transaction of the history (left-out ones have no edges).
struct Graph {
    adj: Vec<Vec<Edge>>,
    whys: Vec<Why>,
    seen: HashSet<(usize, usize, u8)>,
}

impl Graph {
    fn new(nodes: usize) -> Self {
        Graph {
            adj: vec![Vec::new(); nodes],
            whys: Vec::new(),
            seen: HashSet::new(),
        }
    }

    /// Adds the edge unless it is a self-loop or an edge of the same type already joins the pair.
    fn add(&mut self, from: usize, to: usize, dep: u8, why: Why) {
        if from != to && self.seen.insert((from, to, dep)) {
            self.adj[from].push(Edge {
                to,
                dep,
                why: self.whys.len(),
            });
            self.whys.push(why);
        }
    }
}

/// Strongly connected components.
struct Sccs {
    /// The component of each node.
    comp: Vec<usize>,
    /// The components of two nodes or more, each with its id, members in node order.
    nontrivial: Vec<(usize, Vec<usize>)>,
}

/// Tarjan's algorithm, iterative (a serial history's graph is one long path), over the edges
/// whose type is in `mask`.
fn tarjan(adj: &[Vec<Edge>], mask: u8) -> Sccs {
    const UNSEEN: usize = usize::MAX;
    let n = adj.len();
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut comp = vec![UNSEEN; n];
    let mut sizes = Vec::new();
    let mut next = 0;
    // The call stack: a node and the position of its next edge.
    let mut calls: Vec<(usize, usize)> = Vec::new();
    for root in 0..n {
        if index[root] != UNSEEN {
            continue;
        }
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        calls.push((root, 0));
        while let Some(&(v, pos)) = calls.last() {
            if let Some(edge) = adj[v].get(pos) {
                let top = calls.len() - 1;
                calls[top].1 += 1;
                if edge.dep & mask == 0 {
                    continue;
                }
                let w = edge.to;
                if index[w] == UNSEEN {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                calls.pop();
                if let Some(&(parent, _)) = calls.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    let id = sizes.len();
                    let mut size = 0;
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        comp[w] = id;
                        size += 1;
                        if w == v {
                            break;
                        }
                    }
                    sizes.push(size);
                }
            }
        }
    }
    let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (node, &c) in comp.iter().enumerate() {
        if sizes[c] > 1 {
            members.entry(c).or_default().push(node);
        }
    }
    Sccs {
        comp,
        nontrivial: members.into_iter().collect(),
    }
}

/// A path or cycle: each step is a node and the index of the edge taken out of it.
type Steps = Vec<(usize, usize)>;

/// Breadth-first searches, with scratch space reused between searches.
struct Search {
    stamp: Vec<u32>,
    current: u32,
    parent: Vec<(usize, usize)>,
    queue: VecDeque<usize>,
    /// Edge visits left for the searches that have a budget.
    budget: u64,
}

/// Edge visits allowed to the G-single searches of one check, which may take one search per
/// rw edge of a component.
const G_SINGLE_BUDGET: u64 = 20_000_000;

impl Search {
    fn new(nodes: usize) -> Self {
        Search {
            stamp: vec![0; nodes],
            current: 0,
            parent: vec![(0, 0); nodes],
            queue: VecDeque::new(),
            budget: G_SINGLE_BUDGET,
        }
    }

    /// Visits the nodes reachable from `from` through edges of `mask` whose ends are in component
    /// `c` of `comp`, stopping at `to` if given. Returns false if the budget (when `budgeted`)
    /// ran out first.
    #[allow(
        clippy::too_many_arguments,
        reason = "one private search routine; a parameter struct would only rename them"
    )]
    fn explore(
        &mut self,
        adj: &[Vec<Edge>],
        from: usize,
        to: Option<usize>,
        mask: u8,
        comp: &[usize],
        c: usize,
        budgeted: bool,
    ) -> bool {
        self.current += 1;
        self.queue.clear();
        self.stamp[from] = self.current;
        self.queue.push_back(from);
        while let Some(v) = self.queue.pop_front() {
            if Some(v) == to {
                return true;
            }
            for (i, edge) in adj[v].iter().enumerate() {
                if budgeted {
                    if self.budget == 0 {
                        return false;
                    }
                    self.budget -= 1;
                }
                let w = edge.to;
                if edge.dep & mask != 0 && comp[w] == c && self.stamp[w] != self.current {
                    self.stamp[w] = self.current;
                    self.parent[w] = (v, i);
                    self.queue.push_back(w);
                }
            }
        }
        true
    }

    fn reached(&self, node: usize) -> bool {
        self.stamp[node] == self.current
    }

    /// The steps from the last search's start to `to`, which it reached.
    fn steps_to(&self, from: usize, mut to: usize) -> Steps {
        let mut steps = Vec::new();
        while to != from {
            let (prev, edge) = self.parent[to];
            steps.push((prev, edge));
            to = prev;
        }
        steps.reverse();
        steps
    }

    /// A shortest path from `from` to `to` within component `c`, without budget.
    fn path(
        &mut self,
        adj: &[Vec<Edge>],
        from: usize,
        to: usize,
        mask: u8,
        comp: &[usize],
        c: usize,
    ) -> Option<Steps> {
        self.explore(adj, from, Some(to), mask, comp, c, false);
        self.reached(to).then(|| self.steps_to(from, to))
    }
}

struct Checker<'h> {
    h: &'h [Txn],
    included: Vec<bool>,
    writers: HashMap<(Key, u64), WriteRec>,
    anomalies: Vec<Anomaly>,
    notes: Vec<String>,
}

/// Edges to writes of unknown order (a register's writes without `commit_seq`, a list's unread
/// appends) allowed in one check: one per read of the version they follow and write, so their
/// number is a product.
const UNORDERED_EDGE_BUDGET: usize = 2_000_000;

impl<'h> Checker<'h> {
    fn new(h: &'h [Txn]) -> Self {
        Checker {
            h,
            included: vec![false; h.len()],
            writers: HashMap::new(),
            anomalies: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn t(&self, txn: usize) -> String {
        format!("T{}", self.h[txn].id)
    }

    fn report(&mut self, kind: AnomalyKind, txns: &[usize], explanation: String) {
        let txns = txns.iter().map(|&t| self.h[t].id).collect();
        self.anomalies.push(Anomaly {
            kind,
            txns,
            explanation,
        });
    }

    fn run(&mut self) {
        self.index_writes();
        self.include();
        let reads = self.check_reads();
        self.check_internal();
        self.check_lost_updates(&reads);
        let graph = self.build_graph(&reads);
        self.find_cycles(&graph);
    }

    /// Indexes every write of the history by key and value.
    fn index_writes(&mut self) {
        let mut reported = HashSet::new();
        for (i, txn) in self.h.iter().enumerate() {
            let mut last: HashMap<Key, u64> = HashMap::new();
            for (key, value) in txn.ops.iter().filter_map(Op::written) {
                last.insert(key, value);
            }
            for (key, value) in txn.ops.iter().filter_map(Op::written) {
                let is_final = last.get(&key) == Some(&value);
                if let Some(first) = self.writers.get(&(key, value)).copied() {
                    if reported.insert((key, value)) {
                        let txns: Vec<usize> = if first.txn == i {
                            vec![i]
                        } else {
                            vec![first.txn, i]
                        };
                        let who = if first.txn == i {
                            format!("{} twice", self.t(i))
                        } else {
                            format!("both {} and {}", self.t(first.txn), self.t(i))
                        };
                        let explanation = format!(
                            "{value} was written to {} by {who}; values written to a key must be \
                             unique, so what is inferred from reads of it is unreliable",
                            key_name(key)
                        );
                        self.report(AnomalyKind::DuplicateWrite, &txns, explanation);
                    }
                } else {
                    self.writers
                        .insert((key, value), WriteRec { txn: i, is_final });
                }
            }
        }
    }

    /// Includes the committed transactions and, transitively, the unknown ones whose writes an
    /// included transaction observed.
    fn include(&mut self) {
        let h = self.h;
        let mut work = Vec::new();
        for (i, txn) in h.iter().enumerate() {
            if txn.outcome == Outcome::Committed {
                self.included[i] = true;
                work.push(i);
            }
        }
        if h.iter().all(|t| t.outcome != Outcome::Unknown) {
            return;
        }
        let mut examined: HashMap<Key, Examined> = HashMap::new();
        while let Some(i) = work.pop() {
            for (key, values) in h[i].ops.iter().filter_map(Op::observed) {
                let mut promote = |value: u64| {
                    if let Some(w) = self.writers.get(&(key, value)) {
                        let w = w.txn;
                        if !self.included[w] && h[w].outcome == Outcome::Unknown {
                            self.included[w] = true;
                            work.push(w);
                        }
                    }
                    false
                };
                examined.entry(key).or_default().scan(values, &mut promote);
            }
        }
    }

    /// Collects the reads of the included transactions by key, reporting garbage reads, G1a and
    /// G1b.
    fn check_reads(&mut self) -> BTreeMap<Key, Vec<ReadRec<'h>>> {
        let h = self.h;
        let mut reads: BTreeMap<Key, Vec<ReadRec<'h>>> = BTreeMap::new();
        let mut aborted_seen = HashSet::new();
        let mut intermediate_seen = HashSet::new();
        let mut examined: HashMap<Key, Examined> = HashMap::new();
        for (i, txn) in h.iter().enumerate() {
            if !self.included[i] {
                continue;
            }
            let mut written: HashSet<Key> = HashSet::new();
            let mut garbage: BTreeMap<Key, BTreeSet<u64>> = BTreeMap::new();
            for op in &txn.ops {
                let Some((key, values)) = op.observed() else {
                    written.insert(op.key());
                    continue;
                };
                let external = !written.contains(&key);
                reads.entry(key).or_default().push(ReadRec {
                    txn: i,
                    values,
                    external,
                });
                // The values no transaction or an aborted one wrote.
                let writers = &self.writers;
                let suspect = examined.entry(key).or_default().scan(values, |value| {
                    writers
                        .get(&(key, value))
                        .is_none_or(|w| h[w.txn].outcome == Outcome::Aborted)
                });
                for value in suspect {
                    match self.writers.get(&(key, value)) {
                        None => {
                            garbage.entry(key).or_default().insert(value);
                        }
                        Some(w) if h[w.txn].outcome == Outcome::Aborted => {
                            if aborted_seen.insert((i, w.txn, key)) {
                                let explanation = format!(
                                    "{} read {} and observed {value}, written by {}, which \
                                     aborted",
                                    self.t(i),
                                    key_name(key),
                                    self.t(w.txn)
                                );
                                self.report(AnomalyKind::G1a, &[i, w.txn], explanation);
                            }
                        }
                        Some(_) => {}
                    }
                }
                // The version read: the list's last element, the register's value.
                if let Some(&value) = values.last()
                    && external
                    && let Some(&w) = self.writers.get(&(key, value))
                    && w.txn != i
                    && self.included[w.txn]
                    && !w.is_final
                    && intermediate_seen.insert((i, w.txn, key))
                {
                    let (verb, later) = match key.0 {
                        Space::List => ("appended", "appended more to it"),
                        Space::Register => ("wrote", "overwrote it"),
                    };
                    let seen = match key.0 {
                        Space::List => format!("as {}", fmt_list(values)),
                        Space::Register => format!("= {value}"),
                    };
                    let explanation = format!(
                        "{} read {} {seen}: {value} is an intermediate state of {}, which {verb} \
                         it and then {later} before committing",
                        self.t(i),
                        key_name(key),
                        self.t(w.txn),
                    );
                    self.report(AnomalyKind::G1b, &[i, w.txn], explanation);
                }
            }
            for (key, values) in garbage {
                let values: Vec<u64> = values.into_iter().collect();
                let explanation = format!(
                    "{} read {} and observed {}, which no transaction wrote",
                    self.t(i),
                    key_name(key),
                    fmt_list(&values)
                );
                self.report(AnomalyKind::GarbageRead, &[i], explanation);
            }
        }
        reads
    }

    /// Reports the included transactions whose reads contradict their own earlier reads and
    /// writes of the same key (once per transaction and key).
    fn check_internal(&mut self) {
        #[derive(Default)]
        struct ListState {
            /// The list as last read, if read.
            known: Option<Vec<u64>>,
            /// Own appends since then.
            appended: Vec<u64>,
        }
        for (i, txn) in self.h.iter().enumerate() {
            if !self.included[i] {
                continue;
            }
            let mut lists: HashMap<u64, ListState> = HashMap::new();
            // A register's value as last written (true) or read (false) by the transaction.
            let mut registers: HashMap<u64, (Option<u64>, bool)> = HashMap::new();
            let mut reported: HashSet<Key> = HashSet::new();
            for op in &txn.ops {
                let problem = match op {
                    Op::Append { key, value } => {
                        lists.entry(*key).or_default().appended.push(*value);
                        None
                    }
                    Op::Write { key, value } => {
                        registers.insert(*key, (Some(*value), true));
                        None
                    }
                    Op::ReadList { key, value } => {
                        let seen = value.as_deref().unwrap_or(&[]);
                        let state = lists.entry(*key).or_default();
                        let problem = match &state.known {
                            Some(base) => {
                                let mut expected = base.clone();
                                expected.extend_from_slice(&state.appended);
                                (expected != seen).then(|| {
                                    format!(
                                        "{} read list {key} as {} after reading it as {} and \
                                         appending {}: expected {}",
                                        self.t(i),
                                        fmt_list(seen),
                                        fmt_list(base),
                                        fmt_list(&state.appended),
                                        fmt_list(&expected)
                                    )
                                })
                            }
                            None => (!seen.ends_with(&state.appended)).then(|| {
                                format!(
                                    "{} read list {key} as {} after appending {} to it: its own \
                                     appends are not at the end",
                                    self.t(i),
                                    fmt_list(seen),
                                    fmt_list(&state.appended)
                                )
                            }),
                        };
                        state.known = Some(seen.to_vec());
                        state.appended.clear();
                        problem.map(|p| ((Space::List, *key), p))
                    }
                    Op::Read { key, value } => {
                        let problem = match registers.get(key) {
                            Some(&(prev, wrote)) if prev != *value => Some(if wrote {
                                format!(
                                    "{} read register {key} = {} after writing {} to it",
                                    self.t(i),
                                    reg_value(*value),
                                    reg_value(prev)
                                )
                            } else {
                                format!(
                                    "{} read register {key} twice without writing it between, \
                                     and saw {} then {}",
                                    self.t(i),
                                    reg_value(prev),
                                    reg_value(*value)
                                )
                            }),
                            _ => None,
                        };
                        registers.insert(*key, (*value, false));
                        problem.map(|p| ((Space::Register, *key), p))
                    }
                };
                if let Some((key, explanation)) = problem
                    && reported.insert(key)
                {
                    self.anomalies.push(Anomaly {
                        kind: AnomalyKind::Internal,
                        txns: vec![txn.id],
                        explanation,
                    });
                }
            }
        }
    }

    /// Reports the groups of included transactions that read the same version of a key before
    /// writing it.
    fn check_lost_updates(&mut self, reads: &BTreeMap<Key, Vec<ReadRec<'h>>>) {
        let mut writes_key: HashSet<(usize, Key)> = HashSet::new();
        for (i, txn) in self.h.iter().enumerate() {
            if self.included[i] {
                for (key, _) in txn.ops.iter().filter_map(Op::written) {
                    writes_key.insert((i, key));
                }
            }
        }
        for (&key, reads) in reads {
            // The version read (the list's last element, the register's value) -> its readers
            // that then wrote the key.
            let mut groups: BTreeMap<Option<u64>, Vec<usize>> = BTreeMap::new();
            for read in reads {
                if read.external && writes_key.contains(&(read.txn, key)) {
                    let group = groups.entry(read.values.last().copied()).or_default();
                    if !group.contains(&read.txn) {
                        group.push(read.txn);
                    }
                }
            }
            for (version, txns) in groups {
                if txns.len() < 2 {
                    continue;
                }
                let names: Vec<String> = txns.iter().map(|&t| self.t(t)).collect();
                let (all, rest) = names.split_last().expect("two transactions or more");
                let names = if rest.len() == 1 {
                    format!("{} and {all} both", rest[0])
                } else {
                    format!("{} and {all} all", rest.join(", "))
                };
                let (at, wrote) = match (key.0, version) {
                    (Space::List, Some(v)) => (format!("ending in {v}"), "appended to"),
                    (Space::List, None) => ("empty".to_owned(), "appended to"),
                    (Space::Register, v) => (format!("= {}", reg_value(v)), "wrote"),
                };
                let explanation = format!(
                    "{names} read {} at the same version ({at}) and then {wrote} it: each update \
                     was made without seeing the others",
                    key_name(key),
                );
                self.report(AnomalyKind::LostUpdate, &txns, explanation);
            }
        }
    }

    /// The included writer of a value.
    fn included_writer(&self, key: Key, value: u64) -> Option<usize> {
        self.writers
            .get(&(key, value))
            .map(|w| w.txn)
            .filter(|&w| self.included[w])
    }

    /// Infers the version orders and builds the dependency graph.
    fn build_graph(&mut self, reads: &BTreeMap<Key, Vec<ReadRec<'h>>>) -> Graph {
        let mut graph = Graph::new(self.h.len());
        // The appends to each list and the final writes of each register by the included
        // transactions.
        let mut appends: HashMap<u64, Vec<(usize, u64)>> = HashMap::new();
        let mut reg_writes: BTreeMap<u64, Vec<(usize, u64)>> = BTreeMap::new();
        for (&((space, key), value), w) in &self.writers {
            if !self.included[w.txn] {
                continue;
            }
            match space {
                Space::List => appends.entry(key).or_default().push((w.txn, value)),
                Space::Register if w.is_final => {
                    reg_writes.entry(key).or_default().push((w.txn, value));
                }
                Space::Register => {}
            }
        }
        let mut unordered_budget = UNORDERED_EDGE_BUDGET;
        for (&key, reads) in reads.range((Space::List, 0)..=(Space::List, u64::MAX)) {
            let appends = appends.remove(&key.1).unwrap_or_default();
            self.list_edges(&mut graph, key.1, reads, appends, &mut unordered_budget);
        }
        for (&key, reads) in reads.range((Space::Register, 0)..=(Space::Register, u64::MAX)) {
            let writes = reg_writes.remove(&key.1).unwrap_or_default();
            self.register_edges(&mut graph, key.1, reads, writes, &mut unordered_budget);
        }
        // Registers written but never read still have a version order.
        for (key, writes) in reg_writes {
            self.register_edges(&mut graph, key, &[], writes, &mut unordered_budget);
        }
        graph
    }

    /// The edges a list key gives, unless its reads disagree on the order of its appends.
    ///
    /// The appends no read observed come after every observed element, in an unknown order: the
    /// writer of the last observed element and the readers of the whole observed list precede
    /// their writers.
    fn list_edges(
        &mut self,
        graph: &mut Graph,
        key: u64,
        reads: &[ReadRec<'h>],
        appends: Vec<(usize, u64)>,
        unordered_budget: &mut usize,
    ) {
        let Some(longest) = reads.iter().copied().reduce(|a, b| {
            if b.values.len() > a.values.len() {
                b
            } else {
                a
            }
        }) else {
            return;
        };
        let order = longest.values;
        let mut seen = HashSet::new();
        if let Some(&dup) = order.iter().find(|&&v| !seen.insert(v)) {
            let explanation = format!(
                "{} read list {key} as {}, which holds {dup} twice: appends are unique, so no \
                 order of appends explains it; no dependency is inferred from list {key}",
                self.t(longest.txn),
                fmt_list(order)
            );
            self.report(AnomalyKind::IncompatibleOrder, &[longest.txn], explanation);
            return;
        }
        let mut disagreeing: Vec<usize> = Vec::new();
        let mut first = None;
        for read in reads {
            if !order.starts_with(read.values) {
                if !disagreeing.contains(&read.txn) {
                    disagreeing.push(read.txn);
                }
                first.get_or_insert(*read);
            }
        }
        if let Some(read) = first {
            let at = read
                .values
                .iter()
                .zip(order)
                .position(|(a, b)| a != b)
                .unwrap_or(read.values.len());
            let mut txns = vec![longest.txn];
            txns.extend(disagreeing.iter().filter(|&&t| t != longest.txn));
            let others = if disagreeing.len() > 1 {
                format!(" ({} reading transactions disagree)", disagreeing.len())
            } else {
                String::new()
            };
            let explanation = format!(
                "{} read list {key} as {} and {} read it as {}: they first differ at index {at} \
                 ({} vs {}), so no single order of appends explains both{others}; no dependency \
                 is inferred from list {key}",
                self.t(longest.txn),
                fmt_list(order),
                self.t(read.txn),
                fmt_list(read.values),
                order[at],
                read.values[at],
            );
            self.report(AnomalyKind::IncompatibleOrder, &txns, explanation);
            return;
        }
        // ww: the writers of consecutive elements.
        let lkey = (Space::List, key);
        let mut prev: Option<(usize, u64)> = None;
        for &value in order {
            if let Some(w) = self.included_writer(lkey, value) {
                if let Some((p, pv)) = prev {
                    let why = Why::ListWw {
                        key,
                        prev: pv,
                        next: value,
                        later: false,
                    };
                    graph.add(p, w, WW, why);
                }
                prev = Some((w, value));
            }
        }
        let mut unread: Vec<(usize, u64)> = appends
            .into_iter()
            .filter(|(_, v)| !seen.contains(v))
            .collect();
        unread.sort_by_key(|&(t, v)| (self.h[t].id, v));
        if let Some((p, pv)) = prev {
            for &(w, value) in &unread {
                let why = Why::ListWw {
                    key,
                    prev: pv,
                    next: value,
                    later: true,
                };
                graph.add(p, w, WW, why);
            }
        }
        let mut budget_hit = false;
        for read in reads.iter().filter(|r| r.external) {
            let len = read.values.len();
            let last = read.values.last().copied();
            if let Some(last) = last
                && let Some(w) = self.included_writer(lkey, last)
            {
                graph.add(w, read.txn, WR, Why::ListWr { key, last });
            }
            if let Some(&next) = order.get(len)
                && let Some(w) = self.included_writer(lkey, next)
            {
                let why = Why::ListRw {
                    key,
                    len,
                    last,
                    next,
                    later: false,
                };
                graph.add(read.txn, w, RW, why);
            }
            if len == order.len() {
                if *unordered_budget < unread.len() {
                    budget_hit = true;
                    continue;
                }
                *unordered_budget -= unread.len();
                for &(w, next) in &unread {
                    let why = Why::ListRw {
                        key,
                        len,
                        last,
                        next,
                        later: true,
                    };
                    graph.add(read.txn, w, RW, why);
                }
            }
        }
        if budget_hit {
            self.notes.push(format!(
                "list {key}: some rw edges from reads of its whole observed list to the writers \
                 of its unread appends were left out (more than {UNORDERED_EDGE_BUDGET} such \
                 edges)"
            ));
        }
    }

    /// The edges a register key gives: ww from the commit order, wr from the reads, rw from the
    /// reads of versions whose successor is known.
    fn register_edges(
        &mut self,
        graph: &mut Graph,
        key: u64,
        reads: &[ReadRec<'h>],
        writes: Vec<(usize, u64)>,
        unordered_budget: &mut usize,
    ) {
        let rkey = (Space::Register, key);
        let (mut ordered, mut unordered): (Vec<_>, Vec<_>) = writes
            .into_iter()
            .partition(|&(t, _)| self.h[t].commit_seq.is_some());
        ordered.sort_by_key(|&(t, _)| (self.h[t].commit_seq, self.h[t].id));
        unordered.sort_by_key(|&(t, _)| self.h[t].id);
        if ordered.is_empty() && unordered.len() == 1 {
            ordered = std::mem::take(&mut unordered);
        }
        for pair in ordered.windows(2) {
            let why = Why::RegWw {
                key,
                prev: pair[0].1,
                next: pair[1].1,
            };
            graph.add(pair[0].0, pair[1].0, WW, why);
        }
        let position: HashMap<u64, usize> = ordered
            .iter()
            .enumerate()
            .map(|(i, &(_, v))| (v, i))
            .collect();
        let mut budget_hit = false;
        for read in reads.iter().filter(|r| r.external) {
            match read.values.first().copied() {
                Some(value) => {
                    if let Some(w) = self.included_writer(rkey, value) {
                        graph.add(w, read.txn, WR, Why::RegWr { key, value });
                    }
                    if let Some(&p) = position.get(&value)
                        && let Some(&(next_txn, next)) = ordered.get(p + 1)
                    {
                        let why = Why::RegRw {
                            key,
                            read: Some(value),
                            next,
                            later: false,
                        };
                        graph.add(read.txn, next_txn, RW, why);
                    }
                }
                None => {
                    // The initial state precedes every write.
                    if let Some(&(first_txn, next)) = ordered.first() {
                        let why = Why::RegRw {
                            key,
                            read: None,
                            next,
                            later: false,
                        };
                        graph.add(read.txn, first_txn, RW, why);
                    }
                    if *unordered_budget < unordered.len() {
                        budget_hit = true;
                        continue;
                    }
                    *unordered_budget -= unordered.len();
                    for &(w, next) in &unordered {
                        let why = Why::RegRw {
                            key,
                            read: None,
                            next,
                            later: true,
                        };
                        graph.add(read.txn, w, RW, why);
                    }
                }
            }
        }
        if budget_hit {
            self.notes.push(format!(
                "register {key}: some rw edges from reads of its initial state to its writers \
                 without commit_seq were left out (more than {UNORDERED_EDGE_BUDGET} such edges)"
            ));
        }
    }

    /// Describes one edge.
    fn describe(&self, graph: &Graph, from: usize, edge: Edge) -> String {
        let (a, b) = (self.t(from), self.t(edge.to));
        let seqs = |t: usize| {
            let txn = &self.h[t];
            match (txn.start_seq, txn.commit_seq) {
                (Some(s), Some(c)) => format!(" (snapshot {s}, commit {c})"),
                (None, Some(c)) => format!(" (commit {c})"),
                (Some(s), None) => format!(" (snapshot {s})"),
                (None, None) => String::new(),
            }
        };
        match &graph.whys[edge.why] {
            Why::ListWw {
                key,
                prev,
                next,
                later,
            } => {
                let when = if *later {
                    "later (no read observed it)"
                } else {
                    "right after it"
                };
                format!("{a} appended {prev} to list {key} and {b} appended {next} {when}")
            }
            Why::ListWr { key, last } => {
                format!("{b} read list {key} ending in {last}, which {a} appended")
            }
            Why::ListRw {
                key,
                len,
                last,
                next,
                later,
            } => {
                let seen = match last {
                    Some(last) => format!("with {len} elements, ending in {last}"),
                    None => "as empty".to_owned(),
                };
                let which = if *later {
                    "later (no read observed it)"
                } else {
                    "as the next element"
                };
                format!("{a} read list {key} {seen}, and {b} appended {next} {which}")
            }
            Why::RegWw { key, prev, next } => format!(
                "{a}{} wrote register {key} = {prev} and {b}{} wrote the next version, {next}",
                seqs(from),
                seqs(edge.to)
            ),
            Why::RegWr { key, value } => {
                format!("{b} read register {key} = {value}, which {a} wrote")
            }
            Why::RegRw {
                key,
                read,
                next,
                later,
            } => {
                let which = if *later {
                    "a later version (the writers' commit order is unknown)"
                } else {
                    "the next version"
                };
                format!(
                    "{a}{} read register {key} = {}, and {b}{} wrote {next}, {which}",
                    seqs(from),
                    reg_value(*read),
                    seqs(edge.to)
                )
            }
        }
    }

    /// Reports a cycle given as steps (the last one leads back to the first node).
    fn report_cycle(&mut self, graph: &Graph, kind: AnomalyKind, cycle: &[(usize, usize)]) {
        let edges: Vec<(usize, Edge)> = cycle
            .iter()
            .map(|&(from, i)| (from, graph.adj[from][i]))
            .collect();
        let mut path = String::new();
        for &(from, edge) in &edges {
            path.push_str(&format!("{} -{}-> ", self.t(from), dep_name(edge.dep)));
        }
        path.push_str(&self.t(edges[0].0));
        let rws = edges.iter().filter(|(_, e)| e.dep == RW).count();
        let what = match kind {
            AnomalyKind::G0 => "a cycle of write-write dependencies".to_owned(),
            AnomalyKind::G1c => {
                "a cycle of write-write and write-read dependencies (circular information flow)"
                    .to_owned()
            }
            AnomalyKind::GSingle => {
                "a cycle with exactly one anti-dependency (rw), forbidden even under snapshot \
                 isolation"
                    .to_owned()
            }
            _ => format!(
                "a cycle with {rws} anti-dependencies (rw), allowed under snapshot isolation but \
                 not under serializability"
            ),
        };
        let steps: Vec<String> = edges
            .iter()
            .map(|&(from, edge)| {
                format!(
                    "{} ({})",
                    self.describe(graph, from, edge),
                    dep_name(edge.dep)
                )
            })
            .collect();
        let explanation = format!("{what}: {path}. {}", steps.join("; "));
        let txns: Vec<usize> = cycle.iter().map(|&(from, _)| from).collect();
        self.report(kind, &txns, explanation);
    }

    fn find_cycles(&mut self, graph: &Graph) {
        let adj = &graph.adj;
        let mut search = Search::new(adj.len());

        // G0: cycles of ww edges.
        let ww = tarjan(adj, WW);
        for (c, members) in &ww.nontrivial {
            if let Some(cycle) = cycle_through(adj, members, WW, WW, &ww.comp, *c, &mut search) {
                self.report_cycle(graph, AnomalyKind::G0, &cycle);
            }
        }

        // G1c: cycles of ww and wr edges through a wr edge.
        let wwwr = tarjan(adj, WW | WR);
        for (c, members) in &wwwr.nontrivial {
            if let Some(cycle) =
                cycle_through(adj, members, WR, WW | WR, &wwwr.comp, *c, &mut search)
            {
                self.report_cycle(graph, AnomalyKind::G1c, &cycle);
            }
        }

        // G-single, else G2-item: cycles through an rw edge.
        let full = tarjan(adj, ALL);
        let mut budget_noted = false;
        for (c, members) in &full.nontrivial {
            let c = *c;
            let rw_edges: Vec<(usize, usize)> = members
                .iter()
                .flat_map(|&u| {
                    adj[u]
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| e.dep == RW && full.comp[e.to] == c)
                        .map(move |(i, _)| (u, i))
                })
                .collect();
            let Some(&(u0, i0)) = rw_edges.first() else {
                continue; // only ww and wr edges: G0 and G1c cover it.
            };
            let mut single = None;
            // Cheap first: an rw edge within one ww+wr component closes a cycle with it.
            for &(u, i) in &rw_edges {
                let v = adj[u][i].to;
                if wwwr.comp[u] == wwwr.comp[v] {
                    let wc = wwwr.comp[v];
                    let path = search.path(adj, v, u, WW | WR, &wwwr.comp, wc);
                    if let Some(path) = path {
                        single = Some(close(u, i, path));
                        break;
                    }
                }
            }
            // Else one ww+wr search per ww+wr component the rw edges lead into.
            if single.is_none() {
                let mut groups: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
                for &(u, i) in &rw_edges {
                    groups
                        .entry(wwwr.comp[adj[u][i].to])
                        .or_default()
                        .push((u, i));
                }
                'groups: for edges in groups.values() {
                    let v0 = adj[edges[0].0][edges[0].1].to;
                    if !search.explore(adj, v0, None, WW | WR, &full.comp, c, true) {
                        if !budget_noted {
                            budget_noted = true;
                            self.notes.push(format!(
                                "the search for G-single cycles ran out of its budget \
                                 ({G_SINGLE_BUDGET} edge visits); the remaining cycles were \
                                 classified by the one cycle found in each component"
                            ));
                        }
                        break;
                    }
                    for &(u, i) in edges {
                        if search.reached(u) {
                            let v = adj[u][i].to;
                            let path = search.path(adj, v, u, WW | WR, &full.comp, c);
                            if let Some(path) = path {
                                single = Some(close(u, i, path));
                                break 'groups;
                            }
                        }
                    }
                }
            }
            if let Some(cycle) = single {
                self.report_cycle(graph, AnomalyKind::GSingle, &cycle);
                continue;
            }
            // No cycle with one rw edge: the shortest cycle through an rw edge has several
            // (unless the search above was cut short).
            let v0 = adj[u0][i0].to;
            if let Some(path) = search.path(adj, v0, u0, ALL, &full.comp, c) {
                let cycle = close(u0, i0, path);
                let rws = cycle.iter().filter(|&&(n, i)| adj[n][i].dep == RW).count();
                let kind = if rws == 1 {
                    AnomalyKind::GSingle
                } else {
                    AnomalyKind::G2Item
                };
                self.report_cycle(graph, kind, &cycle);
            }
        }
    }
}

/// The cycle made of the edge `i` out of `u` and a path from its target back to `u`.
fn close(u: usize, i: usize, path: Steps) -> Steps {
    let mut cycle = vec![(u, i)];
    cycle.extend(path);
    cycle
}

/// A cycle within component `c` of `comp` through an edge of type `through`, following edges of
/// `mask`: the first such edge inside the component closes a cycle, the component being
/// strongly connected.
fn cycle_through(
    adj: &[Vec<Edge>],
    members: &[usize],
    through: u8,
    mask: u8,
    comp: &[usize],
    c: usize,
    search: &mut Search,
) -> Option<Steps> {
    let (u, i) = members.iter().find_map(|&u| {
        adj[u]
            .iter()
            .position(|e| e.dep & through != 0 && comp[e.to] == c)
            .map(|i| (u, i))
    })?;
    let path = search.path(adj, adj[u][i].to, u, mask, comp, c)?;
    Some(close(u, i, path))
}
