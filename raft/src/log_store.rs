//! The Raft log on [`ringtide::wal::Wal`]: one wal entry per Raft entry, at lsn = index + 1 (a
//! wal's lsns start at 1, Raft's indexes at 0), with the entry's term as the wal entry's term.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    Entry, ErrorVerb, LogId, OptionalSend, RaftLogId, RaftLogReader, StorageError, Vote,
};
use ringtide::platform::IoDriver;
use ringtide::wal::{Ack, Lsn, PendingAppend, Record, Wal, WalOptions};
use tokio::sync::mpsc;

use crate::codec::{decode, encode, log_error, vote_error};
use crate::state_file::{HardState, StateFile};
use crate::{NodeId, TypeConfig};

/// The Raft log store: openraft's `RaftLogStorage` on a ringtide wal, with the vote, the
/// committed and the last purged log ids in a small state file beside it.
///
/// `append` queues the entries in the wal and returns; a task of the store calls openraft's
/// flush callback once the wal's fdatasync covers them, in order. Appends queued while a sync
/// runs share the next one.
pub struct LogStore {
    wal: Wal,
    state: StateFile,
    acks: mpsc::UnboundedSender<(Vec<PendingAppend>, LogFlushed<TypeConfig>)>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("wal", &self.wal)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// A reader of the log, for openraft's replication tasks: a handle on the same wal.
#[derive(Debug, Clone)]
pub struct LogReader {
    wal: Wal,
}

impl LogStore {
    /// Opens the log in `dir` (the wal in `dir/log`, the state file at `dir/raft-state`),
    /// creating it if there is none, and finishes a purge a crash interrupted. `options` are
    /// the wal's, with `driver` as its driver. [`open_storage`](crate::open_storage) opens
    /// this and the state machine together.
    ///
    /// # Errors
    ///
    /// As [`Wal::open`]; [`ringtide::Error::Io`] if the state file cannot be read or both
    /// copies of its vote are damaged.
    ///
    /// # Cancel safety
    ///
    /// Dropped part way, nothing is lost: the next open recovers the files.
    pub async fn open(
        dir: impl AsRef<Path>,
        driver: &IoDriver,
        options: WalOptions,
    ) -> ringtide::Result<LogStore> {
        let dir = dir.as_ref();
        driver.create_dir_all(dir).await?;
        let wal = Wal::open(dir.join("log"), options.driver(driver.clone())).await?;
        let state = StateFile::open(driver, &dir.join("raft-state")).await?;
        // A purge records its log id before it cuts the wal: finish the cut.
        if let Some(purged) = state.hard().purged {
            let keep_from = lsn_of(purged.index).next();
            if wal.first_lsn() < keep_from {
                if wal.last_lsn() < keep_from {
                    wal.reset(keep_from).await?;
                } else {
                    wal.truncate_front(keep_from).await?;
                }
            }
        }
        let (acks, queue) = mpsc::unbounded_channel();
        tokio::spawn(acknowledge(queue));
        Ok(LogStore { wal, state, acks })
    }

    /// The wal that holds the log (to close it after the Raft node shut down, or for stats).
    pub fn wal(&self) -> &Wal {
        &self.wal
    }
}

/// Calls each append's flush callback once its entries are durable, in order.
async fn acknowledge(
    mut queue: mpsc::UnboundedReceiver<(Vec<PendingAppend>, LogFlushed<TypeConfig>)>,
) {
    while let Some((pending, callback)) = queue.recv().await {
        let mut res = Ok(());
        for p in pending {
            if let Err(e) = p.wait().await {
                res = Err(io::Error::other(e.to_string()));
                break;
            }
        }
        callback.log_io_completed(res);
    }
}

/// The most payload bytes one append puts in one wal call.
const MAX_CALL_BYTES: usize = 16 << 20;

/// The lsn of the entry at Raft index `index`.
fn lsn_of(index: u64) -> Lsn {
    Lsn(index + 1)
}

/// Reads and decodes the entries at indexes `start..end` (clamped to what the log holds).
async fn read_entries(
    wal: &Wal,
    start: u64,
    end: u64,
) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
    let first = wal.first_lsn().0.saturating_sub(1);
    let last_end = wal.last_lsn().0; // index of last entry + 1
    let (start, end) = (start.max(first), end.min(last_end));
    if start >= end {
        return Ok(Vec::new());
    }
    // Bounded reads: the wal refuses ranges over its max_range_bytes; read in parts of at most
    // 1024 entries, smaller on refusal.
    let mut out = Vec::with_capacity((end - start) as usize);
    let mut at = start;
    let mut step = 1024u64;
    while at < end {
        let to = end.min(at + step);
        match wal.range(lsn_of(at)..lsn_of(to)).await {
            Ok(entries) => {
                for e in entries {
                    let entry: Entry<TypeConfig> = decode(&e.data).map_err(|err| {
                        log_error(
                            ErrorVerb::Read,
                            format!("the wal entry at lsn {} does not decode: {err}", e.lsn.0),
                        )
                    })?;
                    if lsn_of(entry.get_log_id().index) != e.lsn {
                        return Err(log_error(
                            ErrorVerb::Read,
                            format!(
                                "the wal entry at lsn {} holds raft index {}",
                                e.lsn.0,
                                entry.get_log_id().index
                            ),
                        ));
                    }
                    out.push(entry);
                }
                at = to;
            }
            Err(ringtide::Error::TooLarge { .. }) if step > 1 => step /= 2,
            // The log moved under the read (a purge or a truncation): what is left is gone.
            Err(ringtide::Error::OutOfRange { .. }) => break,
            Err(e) => return Err(log_error(ErrorVerb::Read, e)),
        }
    }
    Ok(out)
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let (start, end) = bounds(&range);
        read_entries(&self.wal, start, end).await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let (start, end) = bounds(&range);
        read_entries(&self.wal, start, end).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let purged = self.state.hard().purged;
        let last = self.wal.last_lsn();
        let last_log_id = if last >= self.wal.first_lsn() {
            let index = last.0 - 1;
            read_entries(&self.wal, index, index + 1)
                .await?
                .pop()
                .map(|e| *e.get_log_id())
                .or(purged)
        } else {
            purged
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            wal: self.wal.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let hard = HardState {
            vote: Some(*vote),
            ..self.state.hard().clone()
        };
        self.state
            .save_hard(hard)
            .await
            .map_err(|e| vote_error(ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.state.hard().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.state.save_committed(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.state.committed())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut records = Vec::new();
        let mut next = self.wal.last_lsn().next();
        let empty = self.wal.last_lsn() < self.wal.first_lsn();
        for entry in entries {
            let log_id = *entry.get_log_id();
            if records.is_empty() && empty && lsn_of(log_id.index) != next {
                if let Some(purged) = self.state.hard().purged
                    && log_id.index <= purged.index
                {
                    return Err(log_error(
                        ErrorVerb::Write,
                        format!(
                            "append of raft index {} at or below the purged {purged}",
                            log_id.index
                        ),
                    ));
                }
                // An empty log starts where its first entry says (openraft's own tests append
                // to an empty log at any index; a live node does after a purge, which sets it).
                self.wal
                    .reset(lsn_of(log_id.index))
                    .await
                    .map_err(|e| log_error(ErrorVerb::Write, e))?;
                next = lsn_of(log_id.index);
            }
            if lsn_of(log_id.index) != next {
                // openraft's contract: "there must not be a hole in logs". Refused whole,
                // before anything is queued.
                return Err(log_error(
                    ErrorVerb::Write,
                    format!(
                        "append of raft index {} where the log expects index {}: a log must \
                         not have holes or overlaps (truncate first)",
                        log_id.index,
                        next.0 - 1
                    ),
                ));
            }
            next = next.next();
            let data = encode(&entry).map_err(|e| log_error(ErrorVerb::Write, e))?;
            records.push(Record::with_term(log_id.leader_id.term, data));
        }
        // One wal call holds at most MAX_CALL_BYTES (the wal refuses calls over its bound, 64
        // MiB by default): a large append (a lagging follower's catch-up) goes in several, in
        // order; the callback waits for the last, and durability is in order.
        let mut pending = Vec::new();
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0usize;
        let total = records.len();
        for (i, record) in records.into_iter().enumerate() {
            chunk_bytes += record.data.len();
            chunk.push(record);
            if chunk_bytes >= MAX_CALL_BYTES || i + 1 == total {
                let p = self
                    .wal
                    .enqueue_batch(std::mem::take(&mut chunk), Ack::Durable)
                    .await
                    .map_err(|e| log_error(ErrorVerb::Write, e))?;
                pending.push(p);
                chunk_bytes = 0;
            }
        }
        // The receiver lives as long as the store (its task ends when this sender drops).
        let _ = self.acks.send((pending, callback));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Drop the entries from `log_id.index` on: keep lsns up to `log_id.index`.
        let keep_to = Lsn(log_id.index);
        if keep_to >= self.wal.last_lsn() {
            return Ok(());
        }
        let keep_to = keep_to.max(Lsn(self.wal.first_lsn().0 - 1));
        self.wal
            .truncate_back(keep_to)
            .await
            .map_err(|e| log_error(ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        if self
            .state
            .hard()
            .purged
            .is_some_and(|p| p.index >= log_id.index)
        {
            return Ok(());
        }
        // Record the purge durably first: a crash before the wal is cut leaves entries the
        // next open cuts; the other order would leave a log whose first entries are gone
        // while the state says they are there.
        let hard = HardState {
            purged: Some(log_id),
            ..self.state.hard().clone()
        };
        self.state
            .save_hard(hard)
            .await
            .map_err(|e| log_error(ErrorVerb::Delete, e))?;
        let keep_from = lsn_of(log_id.index).next();
        let res = if self.wal.last_lsn() < keep_from {
            // Purging past the last entry: empty the log, the next append gets the next index.
            self.wal.reset(keep_from).await
        } else if self.wal.first_lsn() < keep_from {
            self.wal.truncate_front(keep_from).await
        } else {
            Ok(())
        };
        res.map_err(|e| log_error(ErrorVerb::Delete, e))
    }
}
