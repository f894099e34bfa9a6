//! Reads: single entries, ranges and streams. A read finds the byte span of the wanted frames in
//! the index (under a short read lock), reads the span with one I/O per segment, checks every
//! frame, and slices each payload from the read buffer without copying it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::BytesMut;
use futures::Stream;
use ringtide_platform::File;

use super::record::{ACCEPT_MAX_PAYLOAD, Decoded};
use super::{Entry, Lsn, Shared};
use crate::error::{CorruptionKind, Error, Result};

/// The most bytes a stream (or an integrity check) reads at once.
pub(crate) const STREAM_CHUNK_BYTES: u64 = 4 << 20;

/// The frames `first..first + count` of one segment, at `start..end` in its file.
struct Span {
    file: File,
    path: PathBuf,
    first: Lsn,
    count: usize,
    start: u64,
    end: u64,
    /// Repaired bytes to lay over the file's (see `SegmentIndex::patch`).
    patch: Option<(u64, bytes::Bytes)>,
}

/// Finds the spans of `start..end`, stopping early once `max_bytes` are covered (at least one
/// entry is always included).
fn locate(shared: &Shared, start: Lsn, end: Lsn, max_bytes: u64) -> Vec<Span> {
    let index = shared.index.read().unwrap_or_else(|p| p.into_inner());
    let mut spans = Vec::new();
    let mut lsn = start;
    let mut bytes = 0u64;
    let first_seg = index.segments.partition_point(|s| s.next_lsn() <= start);
    for seg in &index.segments[first_seg..] {
        if lsn >= end || (bytes >= max_bytes && !spans.is_empty()) {
            break;
        }
        // A segment past a gap (the log changed under the caller) ends the spans.
        let Some(from) = lsn.0.checked_sub(seg.first_lsn.0) else {
            break;
        };
        let from = from as usize;
        if from >= seg.offsets.len() {
            continue;
        }
        let mut to = ((end.0 - seg.first_lsn.0) as usize).min(seg.offsets.len());
        let span_start = u64::from(seg.offsets[from]);
        let end_of = |i: usize| seg.offsets.get(i).map_or(seg.end, |&o| u64::from(o));
        if bytes + end_of(to) - span_start > max_bytes {
            // Cut the span to the byte budget, keeping at least one entry.
            let budget = max_bytes.saturating_sub(bytes);
            let fit =
                seg.offsets[from..to].partition_point(|&o| u64::from(o) - span_start < budget);
            to = (from + fit.max(1)).min(to);
        }
        let span_end = end_of(to);
        spans.push(Span {
            file: seg.file.clone(),
            path: seg.path.clone(),
            first: lsn,
            count: to - from,
            start: span_start,
            end: span_end,
            patch: seg.patch.clone(),
        });
        bytes += span_end - span_start;
        lsn = Lsn(seg.first_lsn.0 + to as u64);
    }
    spans
}

async fn read_span(shared: &Shared, span: Span, out: &mut Vec<Entry>) -> Result<()> {
    let len = (span.end - span.start) as usize;
    let (res, mut buf) = span
        .file
        .read_exact_at(BytesMut::with_capacity(len), span.start)
        .await;
    res.map_err(|e| Error::io(&span.path, e))?;
    if let Some((at, bytes)) = &span.patch {
        let (from, to) = (
            (*at).max(span.start),
            (at + bytes.len() as u64).min(span.end),
        );
        if from < to {
            let (f, t) = ((from - span.start) as usize, (to - span.start) as usize);
            buf[f..t].copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize]);
        }
    }
    let buf = buf.freeze();
    let mut pos = 0usize;
    for i in 0..span.count {
        let expected = Lsn(span.first.0 + i as u64);
        match shared.format.decode(&buf, pos, ACCEPT_MAX_PAYLOAD) {
            Decoded::Frame(frame) if frame.lsn == expected && !frame.seal => {
                out.push(Entry {
                    lsn: frame.lsn,
                    term: frame.term,
                    timestamp_us: frame.timestamp_us,
                    data: buf.slice(frame.payload.clone()),
                });
                pos += frame.len;
            }
            Decoded::Frame(frame) => {
                return Err(Error::corruption(
                    &span.path,
                    span.start + pos as u64,
                    CorruptionKind::LsnMismatch {
                        expected,
                        found: frame.lsn,
                    },
                ));
            }
            Decoded::Bad(kind) => {
                return Err(Error::corruption(&span.path, span.start + pos as u64, kind));
            }
            Decoded::End | Decoded::Short { .. } => {
                return Err(Error::corruption(
                    &span.path,
                    span.start + pos as u64,
                    CorruptionKind::FrameLength {
                        len: (len - pos) as u64,
                    },
                ));
            }
        }
    }
    Ok(())
}

/// How much one read may take.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Limit {
    /// All of the range, unless its frames take more than this many bytes and it holds more
    /// than one entry: then `Error::TooLarge`, before anything is read.
    Refuse(u64),
    /// A prefix of the range whose frames take at most this many bytes (at least one entry).
    Cut(u64),
}

/// Reads `start..end`, which must lie inside the log.
pub(crate) async fn read_range(
    shared: &Shared,
    start: Lsn,
    end: Lsn,
    max_bytes: u64,
) -> Result<Vec<Entry>> {
    read_recent_or_files(shared, start, end, Limit::Refuse(max_bytes)).await
}

async fn read_chunk(shared: &Shared, start: Lsn, end: Lsn, max_bytes: u64) -> Result<Vec<Entry>> {
    read_recent_or_files(shared, start, end, Limit::Cut(max_bytes)).await
}

/// Reads from the window of recent entries what it can serve whole, else from the files.
async fn read_recent_or_files(
    shared: &Shared,
    start: Lsn,
    end: Lsn,
    limit: Limit,
) -> Result<Vec<Entry>> {
    check_bounds(shared, start, end)?;
    if let Some(entries) = read_recent(shared, start, end, limit) {
        return Ok(entries);
    }
    Ok(read_counted(shared, start, end, limit).await?.0)
}

/// The entries `start..end` from the window of recent entries (all of them for a `Refuse`
/// limit, within its bytes; a prefix for a `Cut`), if the window holds them and every lsn asked
/// is written. Entries staged but not yet written are read once written, as from the files, so
/// that a read never returns an entry that a failed write then loses.
fn read_recent(shared: &Shared, start: Lsn, end: Lsn, limit: Limit) -> Option<Vec<Entry>> {
    let (whole, max_bytes) = match limit {
        Limit::Refuse(max) => (true, max),
        Limit::Cut(max) => (false, max),
    };
    // Older than the window as of the last append: read from the files without taking the
    // stage's lock (appenders hold it). A stale hint only sends a read to the files.
    if start.0
        < shared
            .stage
            .recent_first
            .load(std::sync::atomic::Ordering::Relaxed)
    {
        return None;
    }
    // The window holds only written entries (the writer puts them there after their write),
    // and the writer drops the entries past a cut before it lowers the written lsn; the written
    // lsn is read under the window's lock so that a cut is seen whole, with the window.
    let window = shared
        .stage
        .recent
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let written = shared.written_lsn();
    if start > written || (whole && Lsn(end.0 - 1) > written) {
        return None;
    }
    window.get(start, end.min(written.next()), max_bytes, whole)
}

/// `OutOfRange` unless `start..end` lies inside the log; an error if the log is unusable.
fn check_bounds(shared: &Shared, start: Lsn, end: Lsn) -> Result<()> {
    shared.check_usable()?;
    let (first, last) = (shared.first_lsn(), shared.last_lsn());
    if start < first || end > last.next() || start.0 == 0 {
        let lsn = if start < first || start.0 == 0 {
            start
        } else {
            Lsn(end.0 - 1)
        };
        return Err(Error::OutOfRange { lsn, first, last });
    }
    Ok(())
}

/// Reads `start..end` (or the prefix `limit` allows) from the files, which must lie inside the
/// log; returns the entries and the bytes their frames took on disk.
pub(crate) async fn read_counted(
    shared: &Shared,
    start: Lsn,
    end: Lsn,
    limit: Limit,
) -> Result<(Vec<Entry>, u64)> {
    check_bounds(shared, start, end)?;
    // Entries appended but still in the stage are written first.
    super::stage::flush_to(shared, Lsn(end.0 - 1)).await?;
    let spans = match limit {
        Limit::Cut(max_bytes) => locate(shared, start, end, max_bytes),
        Limit::Refuse(max_bytes) => {
            let spans = locate(shared, start, end, u64::MAX);
            let bytes: u64 = spans.iter().map(|s| s.end - s.start).sum();
            if bytes > max_bytes && end.0 - start.0 > 1 {
                return Err(Error::TooLarge {
                    len: bytes,
                    max: max_bytes,
                });
            }
            spans
        }
    };
    let bytes = spans.iter().map(|s| s.end - s.start).sum();
    let mut out = Vec::with_capacity(spans.iter().map(|s| s.count).sum());
    for span in spans {
        read_span(shared, span, &mut out).await?;
    }
    // The log was truncated between the bounds check and the lookup: say so, never return less.
    let complete = match limit {
        Limit::Refuse(_) => out.len() as u64 == end.0 - start.0,
        Limit::Cut(_) => !out.is_empty(),
    };
    if !complete {
        return Err(Error::OutOfRange {
            lsn: start,
            first: shared.first_lsn(),
            last: shared.last_lsn(),
        });
    }
    Ok((out, bytes))
}

/// Whether a stream follows the log past its current end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Follow {
    /// Stop at the last entry written when the stream gets there.
    No,
    /// Wait for new durable entries; end when the log closes.
    Durable,
}

struct StreamState {
    shared: Arc<Shared>,
    next: Lsn,
    buffered: VecDeque<Entry>,
    follow: Follow,
    durable: tokio::sync::watch::Receiver<u64>,
    /// `Shared::cuts` when the stream last looked.
    cuts_seen: u64,
    /// The start was checked against the log's end (at the first poll).
    started: bool,
    done: bool,
}

pub(crate) fn stream(
    shared: Arc<Shared>,
    from: Lsn,
    follow: Follow,
) -> impl Stream<Item = Result<Entry>> + Send + 'static {
    let durable = shared.durable.subscribe();
    let cuts_seen = shared.cuts.load(std::sync::atomic::Ordering::Acquire);
    let state = StreamState {
        shared,
        next: from,
        buffered: VecDeque::new(),
        follow,
        durable,
        cuts_seen,
        started: false,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(entry) = st.buffered.pop_front() {
                return Some((Ok(entry), st));
            }
            if st.done {
                return None;
            }
            // A start past the end + 1 would skip entries not yet written: refused, as by `read`.
            // (A start below the log's first lsn is refused by the first read.)
            if !st.started {
                st.started = true;
                let last = st.shared.last_lsn();
                if st.next > last.next() {
                    st.done = true;
                    let err = Error::OutOfRange {
                        lsn: st.next,
                        first: st.shared.first_lsn(),
                        last,
                    };
                    return Some((Err(err), st));
                }
            }
            // The log was cut below this stream's position (truncate_back, reset): what follows
            // would be another history, so the stream ends with an error instead.
            let cuts = st.shared.cuts.load(std::sync::atomic::Ordering::Acquire);
            if cuts != st.cuts_seen {
                st.cuts_seen = cuts;
                let cut = st.shared.cut_lsn.load(std::sync::atomic::Ordering::Acquire);
                if cut.saturating_add(1) < st.next.0 {
                    st.done = true;
                    let err = Error::OutOfRange {
                        lsn: st.next,
                        first: st.shared.first_lsn(),
                        last: st.shared.last_lsn(),
                    };
                    return Some((Err(err), st));
                }
            }
            let limit = match st.follow {
                Follow::No => st.shared.last_lsn(),
                Follow::Durable => {
                    Lsn((*st.durable.borrow_and_update()).min(st.shared.last_lsn().0))
                }
            };
            if st.next > limit {
                match st.follow {
                    Follow::No => return None,
                    Follow::Durable => {
                        if st.shared.closed.load(std::sync::atomic::Ordering::Acquire) {
                            // `close` publishes its last sync before it marks the log closed:
                            // a tail that has yielded all of it is complete and ends. One
                            // behind goes on to read, which fails with `Closed`.
                            let end = (*st.durable.borrow()).min(st.shared.last_lsn().0);
                            if st.next.0 > end {
                                return None;
                            }
                            continue;
                        }
                        if st.durable.changed().await.is_err() {
                            return None;
                        }
                        continue;
                    }
                }
            }
            match read_chunk(&st.shared, st.next, limit.next(), STREAM_CHUNK_BYTES).await {
                Ok(entries) => {
                    st.next = entries.last().map_or(st.next, |e| e.lsn.next());
                    st.buffered.extend(entries);
                }
                Err(err) => {
                    st.done = true;
                    return Some((Err(err), st));
                }
            }
        }
    })
}
