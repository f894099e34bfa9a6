//! The log store's small durable state: the vote, the last purged log id and the committed log
//! id, in one file of four 4 KiB slots (each its own page, and its own sector on 4 KiB-sector
//! drives, so a sector lost at power loss takes at most one slot).
//!
//! Slots 0 and 1 hold the vote and the last purged log id. Each save writes the slot the last
//! save did not (a counter one higher) and syncs it before returning, so the slot holding the
//! newest synced state is never written over: a crash at any point leaves it whole, and a
//! torn or lost write of the other slot fails its checksum and is ignored.
//!
//! Slots 2 and 3 hold the committed log id, written and synced in the background: openraft
//! saves the committed id on every commit, on its core loop, and a write and a sync there
//! would add an fdatasync to every commit (measured: a quarter of the replicated write rate).
//! A save records the id in memory and wakes a task that writes the newest id and syncs it, at
//! most once per [`COMMITTED_EVERY`]; so a committed id is durable within about that long. A
//! committed id that a crash takes back to an older one is harmless (openraft commits again);
//! one that is damaged reads as none. The slots of the vote are never written by a committed
//! save, so a crash there cannot touch the vote.
//!
//! Slot layout (little-endian): `magic u32 | kind u8 | len u16 | counter u64 | crc32 u32 |
//! payload (postcard) | zeros`, the crc covering magic to counter and the payload.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use openraft::{LogId, Vote};
use ringtide::platform::{File, IoDriver, OpenOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::NodeId;
use crate::codec::{decode, encode};

const SLOT: usize = 4096;
const SLOTS: usize = 4;
const MAGIC: u32 = 0x5354_5452; // "RTTS"
const HEADER: usize = 4 + 1 + 2 + 8 + 4;
const KIND_VOTE: u8 = 1;
const KIND_COMMITTED: u8 = 2;
/// How often, at most, the background task writes and syncs the committed id.
pub(crate) const COMMITTED_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// The vote and the last purged log id (slots 0 and 1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HardState {
    pub(crate) vote: Option<Vote<NodeId>>,
    pub(crate) purged: Option<LogId<NodeId>>,
}

/// The state file, open.
pub(crate) struct StateFile {
    file: File,
    hard: HardState,
    hard_counter: u64,
    committed: Option<LogId<NodeId>>,
    syncer: Arc<Syncer>,
}

impl std::fmt::Debug for StateFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateFile")
            .field("hard", &self.hard)
            .field("committed", &self.committed)
            .finish_non_exhaustive()
    }
}

/// The background writer of the committed slots: the newest id saved, and whether it is
/// written yet.
struct Syncer {
    latest: std::sync::Mutex<Option<LogId<NodeId>>>,
    dirty: AtomicBool,
    wake: Notify,
    stop: AtomicBool,
}

impl StateFile {
    /// Opens the state file at `path`, creating it (all slots empty) if there is none.
    pub(crate) async fn open(driver: &IoDriver, path: &Path) -> io::Result<StateFile> {
        let file = driver
            .open(
                path,
                &OpenOptions::new().read(true).write(true).create(true),
            )
            .await?;
        let len = file.len().await?;
        let mut slots: Vec<Option<(u8, u64, Vec<u8>)>> = Vec::new();
        if len > 0 {
            let buf = BytesMut::with_capacity(SLOT * SLOTS);
            let (res, buf) = file.read_at(buf, 0).await;
            res?;
            let mut damaged = false;
            for i in 0..SLOTS {
                let raw = buf.get(i * SLOT..(i + 1) * SLOT).unwrap_or(&[]);
                let slot = parse_slot(raw);
                if slot.is_none() && raw.iter().any(|&b| b != 0) && i < 2 {
                    damaged = true;
                }
                slots.push(slot);
            }
            // A vote slot that is neither empty nor valid is a torn or lost write, which the
            // other slot covers; both so is damage.
            let vote_slots = slots[..2].iter().filter(|s| s.is_some()).count();
            if damaged && vote_slots == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: both vote slots fail their checksum: the vote cannot be read",
                        path.display()
                    ),
                ));
            }
        } else {
            // New: size it once (a later save then overwrites in place) and make it durable,
            // with its directory entry.
            file.write_all_at(Bytes::from(vec![0u8; SLOT * SLOTS]), 0)
                .await
                .0?;
            file.sync_all().await?;
            if let Some(parent) = path.parent() {
                driver.sync_dir(parent).await?;
            }
        }
        let pick = |range: std::ops::Range<usize>, kind: u8| {
            slots
                .get(range)
                .unwrap_or(&[])
                .iter()
                .flatten()
                .filter(|(k, _, _)| *k == kind)
                .max_by_key(|(_, counter, _)| *counter)
                .cloned()
        };
        let (hard, hard_counter) = match pick(0..2, KIND_VOTE) {
            Some((_, counter, payload)) => {
                let hard = decode::<HardState>(&payload).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: the vote slot does not decode: {e}", path.display()),
                    )
                })?;
                (hard, counter)
            }
            None => (HardState::default(), 0),
        };
        // A committed slot that does not decode reads as none: the committed id is a hint.
        let (committed, committed_counter) = match pick(2..4, KIND_COMMITTED) {
            Some((_, counter, payload)) => (
                decode::<Option<LogId<NodeId>>>(&payload).unwrap_or(None),
                counter,
            ),
            None => (None, 0),
        };
        let syncer = Arc::new(Syncer {
            latest: std::sync::Mutex::new(committed),
            dirty: AtomicBool::new(false),
            wake: Notify::new(),
            stop: AtomicBool::new(false),
        });
        tokio::spawn(write_committed(
            file.clone(),
            Arc::clone(&syncer),
            committed,
            committed_counter,
        ));
        Ok(StateFile {
            file,
            hard,
            hard_counter,
            committed,
            syncer,
        })
    }

    /// The vote and the last purged log id.
    pub(crate) fn hard(&self) -> &HardState {
        &self.hard
    }

    /// The committed log id last saved.
    pub(crate) fn committed(&self) -> Option<LogId<NodeId>> {
        self.committed
    }

    /// Saves `hard` durably: returns once an fdatasync covers it.
    pub(crate) async fn save_hard(&mut self, hard: HardState) -> io::Result<()> {
        let counter = self.hard_counter + 1;
        let slot = slot_bytes(KIND_VOTE, counter, &encode(&hard).map_err(invalid)?)?;
        let at = (counter % 2) as usize * SLOT;
        self.file.write_all_at(slot, at as u64).await.0?;
        self.file.sync_data().await?;
        self.hard_counter = counter;
        self.hard = hard;
        Ok(())
    }

    /// Saves the committed log id: recorded at once, written and synced in the background
    /// (within about [`COMMITTED_EVERY`]).
    pub(crate) fn save_committed(&mut self, committed: Option<LogId<NodeId>>) {
        if committed == self.committed {
            return;
        }
        self.committed = committed;
        *self.syncer.latest.lock().unwrap_or_else(|p| p.into_inner()) = committed;
        self.syncer.dirty.store(true, Ordering::Release);
        self.syncer.wake.notify_one();
    }
}

impl Drop for StateFile {
    fn drop(&mut self) {
        self.syncer.stop.store(true, Ordering::Release);
        self.syncer.wake.notify_one();
    }
}

/// Writes the newest committed id into the slot the last write did not use and syncs it,
/// whenever one was saved since, at most once per [`COMMITTED_EVERY`], until the state file is
/// dropped (writing what is owed then).
async fn write_committed(
    file: File,
    syncer: Arc<Syncer>,
    mut written: Option<LogId<NodeId>>,
    mut counter: u64,
) {
    loop {
        if !syncer.dirty.swap(false, Ordering::AcqRel) {
            if syncer.stop.load(Ordering::Acquire) {
                return;
            }
            syncer.wake.notified().await;
            continue;
        }
        let latest = *syncer.latest.lock().unwrap_or_else(|p| p.into_inner());
        if latest != written {
            let res = async {
                let payload = encode(&latest).map_err(invalid)?;
                let slot = slot_bytes(KIND_COMMITTED, counter + 1, &payload)?;
                let at = (2 + (counter + 1) % 2) as usize * SLOT;
                file.write_all_at(slot, at as u64).await.0?;
                file.sync_data().await
            }
            .await;
            match res {
                Ok(()) => {
                    counter += 1;
                    written = latest;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "writing the raft state file's committed id failed");
                    // Try again at the next turn, unless the file is being dropped.
                    if !syncer.stop.load(Ordering::Acquire) {
                        syncer.dirty.store(true, Ordering::Release);
                    }
                }
            }
        }
        if !syncer.stop.load(Ordering::Acquire) {
            tokio::time::sleep(COMMITTED_EVERY).await;
        }
    }
}

fn invalid(e: postcard::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn slot_bytes(kind: u8, counter: u64, payload: &[u8]) -> io::Result<Bytes> {
    if payload.len() > SLOT - HEADER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("raft state of {} bytes does not fit a slot", payload.len()),
        ));
    }
    let mut b = BytesMut::with_capacity(SLOT);
    b.put_u32_le(MAGIC);
    b.put_u8(kind);
    b.put_u16_le(payload.len() as u16);
    b.put_u64_le(counter);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&b[..]);
    crc.update(payload);
    b.put_u32_le(crc.finalize());
    b.put_slice(payload);
    b.resize(SLOT, 0);
    Ok(b.freeze())
}

/// A slot's kind, counter and payload, if it is whole.
fn parse_slot(raw: &[u8]) -> Option<(u8, u64, Vec<u8>)> {
    if raw.len() < HEADER {
        return None;
    }
    let magic = u32::from_le_bytes(raw[0..4].try_into().ok()?);
    let kind = raw[4];
    let len = usize::from(u16::from_le_bytes(raw[5..7].try_into().ok()?));
    let counter = u64::from_le_bytes(raw[7..15].try_into().ok()?);
    let stored = u32::from_le_bytes(raw[15..19].try_into().ok()?);
    let payload = raw.get(HEADER..HEADER + len)?;
    if magic != MAGIC {
        return None;
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&raw[..15]);
    crc.update(payload);
    (crc.finalize() == stored).then(|| (kind, counter, payload.to_vec()))
}
