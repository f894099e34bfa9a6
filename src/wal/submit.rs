//! How a call reaches the writer: an append staged (after waiting while maintenance runs or the
//! stage is full, or handed to the writer to make room), then led or waited for until its sync
//! policy is met; a command sent to the writer task and its reply awaited; and the error a call
//! gets from a log that is closed, poisoned or read-only.

use std::ops::Range;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::{Ack, Lsn, SyncPolicy, Wal, stage, writer};
use crate::error::{Error, Result};

impl Wal {
    pub(super) async fn submit(&self, records: stage::Records, ack: Ack) -> Result<Range<Lsn>> {
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
        let may_lead = durable && !windowed && self.writer.is_some();
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
        if !durable && !written {
            return Ok(lsns);
        }
        let shared = &self.shared;
        if may_lead && let Some(writer) = &self.writer {
            writer::lead(writer, shared).await;
        }
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
            Ok(lsns)
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
