//! The most recent entries, kept in memory so that reading what was just appended costs no I/O.
//!
//! Raft leaders read back the entries they just appended to send them to followers, and live
//! tails follow the end of the log: both read the newest entries. The stage moves each entry's
//! payload (a `Bytes`, not copied) out of its call as it encodes the frame; the writer gives a
//! write's entries to this window once the write is done and its waiters are woken, so that
//! neither appenders nor their acknowledgements wait for the window. Readers serve an lsn from
//! here, and from the file otherwise (an entry written a moment before it reaches the window
//! is read from the file).
//!
//! Invariants:
//! - the window holds the dense lsns `first..first + entries.len()`, each written, as it was
//!   last written: a cut at the back drops the entries past it before readers can see the cut,
//!   and an entry written at an lsn the window already holds drops that lsn and everything
//!   after it first;
//! - `bytes` (payloads plus a fixed overhead per entry) stays at most `max_bytes`, except for
//!   one entry larger than the whole bound, which is not kept;
//! - the window does not know which lsns are written, truncated at the front or durable:
//!   readers check the log's bounds before they ask it.

use std::collections::VecDeque;

use bytes::Bytes;

use super::{Entry, Lsn};

/// What an entry costs the bound besides its payload: its place in the window.
const ENTRY_OVERHEAD_BYTES: u64 = 48;

/// An entry for the window: staged with its frame, given to the window once written.
pub(crate) struct StagedEntry {
    /// Its frame's size on disk: reads bound what they return in frame bytes, as from the files.
    pub(crate) frame_bytes: u64,
    pub(crate) term: Option<u64>,
    pub(crate) timestamp_us: Option<u64>,
    pub(crate) data: Bytes,
}

fn cost(data: &Bytes) -> u64 {
    data.len() as u64 + ENTRY_OVERHEAD_BYTES
}

/// The window of recent entries (see the module docs).
pub(crate) struct RecentEntries {
    first: Lsn,
    entries: VecDeque<StagedEntry>,
    bytes: u64,
    max_bytes: u64,
}

impl RecentEntries {
    /// An empty window of at most `max_bytes` (0 keeps nothing).
    pub(crate) fn new(max_bytes: u64) -> RecentEntries {
        RecentEntries {
            first: Lsn(0),
            entries: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// The oldest lsn the window holds (if it holds any).
    pub(crate) fn first(&self) -> Lsn {
        self.first
    }

    fn end(&self) -> Lsn {
        Lsn(self.first.0 + self.entries.len() as u64)
    }

    /// Keeps the entries just written from `first` on (one per lsn), dropping the oldest ones
    /// beyond the bound.
    pub(crate) fn push_written(&mut self, first: Lsn, entries: Vec<StagedEntry>) {
        if self.max_bytes == 0 {
            return;
        }
        for (i, entry) in entries.into_iter().enumerate() {
            self.push(Lsn(first.0 + i as u64), entry);
        }
    }

    fn push(&mut self, lsn: Lsn, entry: StagedEntry) {
        if lsn != self.end() {
            self.restart_at(lsn);
        }
        let cost = cost(&entry.data);
        if cost > self.max_bytes {
            // Larger than the whole window: the window restarts after it.
            self.restart_at(lsn.next());
            return;
        }
        while self.bytes + cost > self.max_bytes {
            self.pop_front();
        }
        self.entries.push_back(entry);
        self.bytes += cost;
    }

    /// Drops every entry after `last` (the log was cut there, or reset to start after it).
    pub(crate) fn cut_after(&mut self, last: Lsn) {
        self.restart_at(last.next());
    }

    /// Drops every entry at or after `lsn` (all of them if `lsn` is below the window), so that
    /// the next entry kept is `lsn`.
    fn restart_at(&mut self, lsn: Lsn) {
        if lsn > self.first && lsn <= self.end() {
            let keep = (lsn.0 - self.first.0) as usize;
            for dropped in self.entries.drain(keep..) {
                self.bytes -= cost(&dropped.data);
            }
        } else {
            self.entries.clear();
            self.bytes = 0;
            self.first = lsn;
        }
    }

    fn pop_front(&mut self) {
        let oldest = self
            .entries
            .pop_front()
            .expect("the window is over its bound, so it holds an entry");
        self.bytes -= cost(&oldest.data);
        self.first = self.first.next();
    }

    /// The entries `start..end` that the window holds from `start` on, whose frames take at most
    /// `max_bytes` (at least one entry): `None` if it does not hold `start`, or if `whole` is asked
    /// and it does not hold all of them or they exceed `max_bytes`.
    pub(crate) fn get(
        &self,
        start: Lsn,
        end: Lsn,
        max_bytes: u64,
        whole: bool,
    ) -> Option<Vec<Entry>> {
        if start < self.first || end > self.end() && whole || start >= self.end() || end <= start {
            return None;
        }
        let from = (start.0 - self.first.0) as usize;
        let to = (end.0.min(self.end().0) - self.first.0) as usize;
        let mut out = Vec::with_capacity(to - from);
        let mut bytes = 0u64;
        for (i, e) in self.entries.range(from..to).enumerate() {
            if !out.is_empty() && bytes + e.frame_bytes > max_bytes {
                if whole {
                    return None;
                }
                break;
            }
            bytes += e.frame_bytes;
            out.push(Entry {
                lsn: Lsn(start.0 + i as u64),
                term: e.term,
                timestamp_us: e.timestamp_us,
                data: e.data.clone(),
            });
        }
        Some(out)
    }

    /// Bytes the window accounts for now.
    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(
        w: &mut RecentEntries,
        lsn: Lsn,
        term: Option<u64>,
        timestamp_us: Option<u64>,
        data: &Bytes,
        frame_bytes: u64,
    ) {
        let entry = StagedEntry {
            frame_bytes,
            term,
            timestamp_us,
            data: data.clone(),
        };
        w.push_written(lsn, vec![entry]);
    }

    fn window(max_bytes: u64, lsns: std::ops::Range<u64>) -> RecentEntries {
        let mut w = RecentEntries::new(max_bytes);
        for lsn in lsns {
            put(
                &mut w,
                Lsn(lsn),
                Some(lsn),
                None,
                &Bytes::from(lsn.to_le_bytes().to_vec()),
                8,
            );
        }
        w
    }

    fn lsns(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.lsn.0).collect()
    }

    #[test]
    fn serves_what_it_holds_and_nothing_else() {
        let w = window(1 << 20, 1..11);
        let got = w.get(Lsn(3), Lsn(6), u64::MAX, true).expect("held");
        assert_eq!(lsns(&got), [3, 4, 5]);
        assert_eq!(got[0].data.as_ref(), 3u64.to_le_bytes());
        assert_eq!(got[0].term, Some(3));
        assert!(w.get(Lsn(0), Lsn(2), u64::MAX, true).is_none());
        assert!(w.get(Lsn(11), Lsn(12), u64::MAX, false).is_none());
        assert!(w.get(Lsn(9), Lsn(12), u64::MAX, true).is_none());
        assert_eq!(
            lsns(&w.get(Lsn(9), Lsn(12), u64::MAX, false).expect("prefix")),
            [9, 10]
        );
    }

    #[test]
    fn the_byte_bound_drops_the_oldest() {
        let per = 8 + ENTRY_OVERHEAD_BYTES;
        let w = window(per * 4, 1..11);
        assert!(w.bytes() <= per * 4);
        assert!(w.get(Lsn(6), Lsn(7), u64::MAX, true).is_none());
        assert_eq!(
            lsns(&w.get(Lsn(7), Lsn(11), u64::MAX, true).expect("held")),
            [7, 8, 9, 10]
        );
        // A payload budget cuts the answer, but never below one entry.
        assert_eq!(
            lsns(&w.get(Lsn(7), Lsn(11), 16, false).expect("held")),
            [7, 8]
        );
        assert_eq!(lsns(&w.get(Lsn(7), Lsn(11), 0, false).expect("held")), [7]);
        // A whole range over the budget is not served (the files' path refuses it).
        assert!(w.get(Lsn(7), Lsn(11), 16, true).is_none());
        assert_eq!(
            lsns(&w.get(Lsn(7), Lsn(8), 0, true).expect("one entry")),
            [7]
        );
    }

    #[test]
    fn an_lsn_staged_again_replaces_the_history_after_it() {
        let mut w = window(1 << 20, 1..11);
        // truncate_back(6), then a new entry at 6.
        put(
            &mut w,
            Lsn(6),
            Some(99),
            None,
            &Bytes::from_static(b"new"),
            3,
        );
        let got = w.get(Lsn(4), Lsn(7), u64::MAX, true).expect("held");
        assert_eq!(lsns(&got), [4, 5, 6]);
        assert_eq!(got[2].data.as_ref(), b"new");
        assert!(w.get(Lsn(7), Lsn(8), u64::MAX, false).is_none());
        // A reset forward, and one below the window: it starts over.
        put(&mut w, Lsn(100), None, None, &Bytes::from_static(b"x"), 1);
        assert!(w.get(Lsn(4), Lsn(5), u64::MAX, true).is_none());
        assert_eq!(
            lsns(&w.get(Lsn(100), Lsn(101), u64::MAX, true).expect("held")),
            [100]
        );
        put(&mut w, Lsn(50), None, None, &Bytes::from_static(b"y"), 1);
        assert!(w.get(Lsn(100), Lsn(101), u64::MAX, true).is_none());
        assert_eq!(w.bytes(), 1 + ENTRY_OVERHEAD_BYTES);
    }

    #[test]
    fn an_entry_larger_than_the_window_is_not_kept() {
        let mut w = window(100, 1..2);
        put(
            &mut w,
            Lsn(2),
            None,
            None,
            &Bytes::from(vec![0u8; 200]),
            200,
        );
        assert!(w.get(Lsn(1), Lsn(2), u64::MAX, true).is_none());
        assert!(w.get(Lsn(2), Lsn(3), u64::MAX, true).is_none());
        put(&mut w, Lsn(3), None, None, &Bytes::from_static(b"z"), 1);
        assert_eq!(
            lsns(&w.get(Lsn(3), Lsn(4), u64::MAX, true).expect("held")),
            [3]
        );
        assert_eq!(w.bytes(), 1 + ENTRY_OVERHEAD_BYTES);
    }

    #[test]
    fn budgets_count_frame_bytes_not_payloads() {
        let mut w = RecentEntries::new(1 << 20);
        for lsn in 1..5 {
            put(
                &mut w,
                Lsn(lsn),
                None,
                None,
                &Bytes::from_static(b"12345678"),
                29,
            );
        }
        // 4 payloads of 8 bytes fit in 32, 4 frames of 29 do not (as `range` sees the files).
        assert!(w.get(Lsn(1), Lsn(5), 32, true).is_none());
        assert!(w.get(Lsn(1), Lsn(5), 58, true).is_none());
        assert_eq!(
            lsns(&w.get(Lsn(1), Lsn(5), 58, false).expect("prefix")),
            [1, 2]
        );
        assert_eq!(
            lsns(&w.get(Lsn(1), Lsn(5), 116, true).expect("whole")),
            [1, 2, 3, 4]
        );
    }

    #[test]
    fn zero_bytes_keeps_nothing() {
        let w = window(0, 1..5);
        assert!(w.get(Lsn(1), Lsn(2), u64::MAX, true).is_none());
    }
}
