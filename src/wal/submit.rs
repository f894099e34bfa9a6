//! How a call reaches the writer: an append staged (after waiting while maintenance runs or the
//! stage is full, or handed to the writer to make room), then led or waited for until its sync
//! policy is met; a command sent to the writer task and its reply awaited; and the error a call
//! gets from a log that is closed, poisoned or read-only.

use std::ops::Range;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::{Ack, Lsn, Record, SyncPolicy, Wal, stage, writer};
use crate::error::{Error, Result};

/// A call staged for the writer: its lsns, its place in the writer's progress, and what it
/// waits for.
#[derive(Debug)]
pub(super) struct StagedCall {
    pub(super) lsns: Range<Lsn>,
    pub(super) ticket: u64,
    pub(super) durable: bool,
    pub(super) written: bool,
    pub(super) may_lead: bool,
}

impl Wal {
    pub(super) async fn submit(&self, records: stage::Records, ack: Ack) -> Result<Range<Lsn>> {
        let staged = self.stage(records, ack, true).await?;
        if !staged.durable && !staged.written {
            return Ok(staged.lsns);
        }
        if staged.may_lead
            && let Some(writer) = &self.writer
        {
            writer::lead(writer, &self.shared).await;
        }
        self.wait_staged(&staged).await
    }

    /// Stages a call (checked, numbered, queued for the writer) and returns once it is queued.
    /// `lead`: the caller will lead the write itself if it may (see `writer::lead`); otherwise
    /// the writer task is woken for it.
    pub(super) async fn stage(
        &self,
        records: stage::Records,
        ack: Ack,
        lead: bool,
    ) -> Result<StagedCall> {
        self.check_writable()?;
        let max = self.shared.max_entry_bytes();
        let format = self.shared.format;
        let (mut payload_bytes, mut frame_bytes) = (0u64, 0u64);
        for r in records.iter() {
            let len = r.data.len() as u64;
            if len > max {
                return Err(Error::TooLarge { len, max });
            }
            payload_bytes += len;
            frame_bytes += format.frame_len(r.data.len(), r.term.is_some()) as u64;
        }
        let max_call = self.shared.max_call_bytes();
        if payload_bytes > max_call {
            return Err(Error::TooLarge {
                len: payload_bytes,
                max: max_call,
            });
        }
        let policy = self.shared.options.sync_policy;
        let durable = policy.syncs_each_batch() || ack == Ack::Durable;
        let written = matches!(policy, SyncPolicy::Periodic { .. }) || ack == Ack::Written;
        // Stage the call; wait first while maintenance runs or the queue is full, or for the
        // writer to make room.
        // An appender that may lead (see `writer::lead`) wakes the writer task only if it cannot.
        let windowed = matches!(policy, SyncPolicy::Grouped { window } if !window.is_zero());
        let may_lead = lead && durable && !windowed && self.writer.is_some();
        let mut call = stage::Call {
            records,
            frame_bytes,
            payload_bytes,
            sync: durable,
        };
        let (lsns, ticket) = loop {
            match stage::stage_call(&self.shared, &mut call, !may_lead)? {
                stage::Staged::Done(placed) => break placed,
                stage::Staged::Wait(mut changed) => {
                    let _ = changed.changed().await;
                }
                // The writer stages the call where it makes room, so that no later call can
                // take that room first (a call larger than a segment could otherwise lose its
                // spare to small ones again and again). Handed over, the call is queued.
                stage::Staged::NeedRoom => {
                    break self
                        .command(|reply| writer::Command::MakeRoom(Box::new(call), reply))
                        .await?;
                }
            }
        };
        Ok(StagedCall {
            lsns,
            ticket,
            durable,
            written,
            may_lead,
        })
    }

    /// Waits until a staged call is written or durable, as it asked.
    pub(super) async fn wait_staged(&self, staged: &StagedCall) -> Result<Range<Lsn>> {
        let shared = &self.shared;
        let (durable, ticket) = (staged.durable, staged.ticket);
        let mut progress = shared.stage.progress.subscribe();
        let reached = |p: &stage::Progress| {
            if durable {
                p.durable >= ticket
            } else {
                p.written >= ticket
            }
        };
        let done = progress
            .wait_for(|p| {
                reached(p)
                    || shared.poisoned.get().is_some()
                    || shared.closed.load(Ordering::Acquire)
            })
            .await
            .map(|p| reached(&p))
            .unwrap_or(false);
        if done {
            Ok(staged.lsns.clone())
        } else {
            Err(self.closed_error())
        }
    }

    pub(super) fn check_writable(&self) -> Result<()> {
        self.shared.check_usable()?;
        if self.shared.read_only {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    pub(super) fn closed_error(&self) -> Error {
        if self.shared.read_only {
            return Error::ReadOnly;
        }
        match self.shared.poisoned.get() {
            Some(cause) => Error::Poisoned {
                cause: cause.clone(),
            },
            None => Error::Closed,
        }
    }

    pub(super) async fn command<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> writer::Command,
    ) -> Result<T> {
        self.check_writable()?;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| self.closed_error())?;
        answer.await.map_err(|_| self.closed_error())?
    }
}

/// Entries queued by [`Wal::enqueue_batch`]: their lsns are fixed and they will be written
/// whether or not this handle is kept; [`wait`](Self::wait) resolves once they are acknowledged
/// as the call asked.
#[derive(Debug)]
#[must_use = "dropping the handle does not cancel the append, but loses its acknowledgement"]
pub struct PendingAppend {
    wal: Wal,
    staged: Option<StagedCall>,
    lsns: Range<Lsn>,
}

impl PendingAppend {
    /// The entries' lsns (an empty range at the next lsn for an empty batch).
    pub fn lsns(&self) -> Range<Lsn> {
        self.lsns.clone()
    }

    /// Waits until the entries are acknowledged at the level the append asked for and returns
    /// their lsns.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`] if a write or sync failed before the entries were acknowledged;
    /// [`Error::Closed`] if the log closed first.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future changes nothing (the entries are queued already); their
    /// fate can be learned from [`Wal::durable_lsn`].
    pub async fn wait(self) -> Result<Range<Lsn>> {
        match &self.staged {
            Some(staged) if staged.durable || staged.written => self.wal.wait_staged(staged).await,
            _ => Ok(self.lsns),
        }
    }
}

impl Wal {
    /// [`append_batch_with`](Self::append_batch_with) in two steps: returns once the entries
    /// are queued — their lsns fixed, in the order of the calls — with a [`PendingAppend`] that
    /// resolves when they are acknowledged at `ack` (or what the log's policy gives, whichever
    /// is stronger). For a caller that must keep its appends in order without waiting for each
    /// one's sync before queueing the next (a Raft log store acknowledging through a callback):
    /// batches queued while a sync runs share the next one. The writer task writes them; the
    /// caller never leads the write.
    ///
    /// # Errors
    ///
    /// As [`append_batch`](Self::append_batch), for what can fail before the entries are
    /// queued.
    ///
    /// # Cancel safety
    ///
    /// Dropped before it returns, the batch is queued or not (as [`append`](Self::append));
    /// once it has returned, the entries are written whether or not the handle is kept.
    pub async fn enqueue_batch<R: Into<Record>>(
        &self,
        records: impl IntoIterator<Item = R>,
        ack: Ack,
    ) -> Result<PendingAppend> {
        let records: Vec<Record> = records.into_iter().map(Into::into).collect();
        if records.is_empty() {
            self.shared.check_usable()?;
            let next = self.shared.last_lsn().next();
            return Ok(PendingAppend {
                wal: self.clone(),
                staged: None,
                lsns: next..next,
            });
        }
        let staged = self
            .stage(stage::Records::Many(records), ack, false)
            .await?;
        Ok(PendingAppend {
            wal: self.clone(),
            lsns: staged.lsns.clone(),
            staged: Some(staged),
        })
    }
}
