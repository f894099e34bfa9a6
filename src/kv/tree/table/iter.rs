//! A cursor over a table's entries in internal-key order, both ways, reading data blocks as it
//! crosses them (through [`Table::read_block`]).
//!
//! It is positioned on an entry or on none: the seeks and moves are async (they may read a
//! block) and [`TableIter::entry`] reads the current entry without I/O, so a merge of several
//! tables can look at each one's head before it moves any. An error leaves it on no entry.
//!
//! Besides each block's own order check, the cursor checks that the first entry of a block it
//! crosses into is after (moving forward) or before (moving back) the last one of the block it
//! left, so a scan never yields entries out of order.

use std::cmp::Ordering;

use super::block::{Cursor, cmp_internal};
use super::format::{BlockHandle, bad};
use super::reader::{Stored, Table, TableEntry, block_key};
use crate::error::Result;

/// A cursor over one table (see the module's docs).
pub(crate) struct TableIter {
    table: Table,
    index: Cursor,
    /// The data block under the index entry, and its handle.
    data: Option<(Cursor, BlockHandle)>,
}

/// The current entry of a [`TableIter`], borrowed: what a merge compares without copying the
/// key (see [`TableIter::peek`]).
pub(crate) struct EntryRef<'a> {
    pub(crate) bucket: u64,
    pub(crate) key: &'a [u8],
    pub(crate) seq: u64,
    cursor: &'a Cursor,
    table: &'a Table,
    handle: BlockHandle,
}

impl EntryRef<'_> {
    /// What the table stores for the entry: a value (shared with its block, not copied), a
    /// tombstone or a value-log pointer (checked against the files the table names).
    ///
    /// # Errors
    /// [`crate::Error::Corruption`] for a pointer that does not decode or names a file the
    /// table does not.
    pub(crate) fn value(&self) -> Result<Stored> {
        self.table
            .stored(self.cursor)
            .map_err(|k| self.table.corrupt(self.handle, k))
    }
}

enum Direction {
    Forward,
    Backward,
}

impl Table {
    /// A cursor over the table's entries, on no entry until a seek.
    pub(crate) fn iter(&self) -> TableIter {
        TableIter::new(self)
    }
}

impl TableIter {
    fn new(table: &Table) -> TableIter {
        TableIter {
            index: table.index_cursor(),
            table: table.clone(),
            data: None,
        }
    }

    #[cfg(test)]
    /// Whether the cursor is on an entry.
    pub(crate) fn valid(&self) -> bool {
        self.data.as_ref().is_some_and(|(c, _)| c.valid())
    }

    /// The current entry (`None` on no entry).
    ///
    /// # Errors
    /// [`crate::Error::Corruption`] for a data block key too short to hold a bucket id.
    pub(crate) fn entry(&self) -> Result<Option<TableEntry>> {
        match &self.data {
            Some((c, h)) if c.valid() => TableEntry::from_cursor(c, &self.table)
                .map(Some)
                .map_err(|k| self.table.corrupt(*h, k)),
            _ => Ok(None),
        }
    }

    /// The table it reads.
    pub(crate) fn table(&self) -> &Table {
        &self.table
    }

    /// The current entry borrowed (`None` on no entry): [`TableIter::entry`] without copying
    /// the key.
    ///
    /// # Errors
    /// As [`TableIter::entry`].
    pub(crate) fn peek(&self) -> Result<Option<EntryRef<'_>>> {
        match &self.data {
            Some((c, h)) if c.valid() => {
                let Some((bucket, key)) = c.key().split_first_chunk::<8>() else {
                    return Err(self
                        .table
                        .corrupt(*h, bad("data block key shorter than a bucket id")));
                };
                Ok(Some(EntryRef {
                    bucket: u64::from_be_bytes(*bucket),
                    key,
                    seq: c.seq(),
                    cursor: c,
                    table: &self.table,
                    handle: *h,
                }))
            }
            _ => Ok(None),
        }
    }

    /// Moves to the first entry at or after `(bucket, key, seq)`.
    ///
    /// # Cancel safety
    /// A dropped call leaves the cursor on no entry or on a sound one; seek again.
    pub(crate) async fn seek(&mut self, bucket: u64, key: &[u8], seq: u64) -> Result<()> {
        let target = block_key(bucket, key);
        self.data = None;
        let index_at = self.index_handle();
        let position = self.table.index_position(&target, seq);
        self.index
            .seek_to_restart(position)
            .map_err(|k| self.table.corrupt(index_at, k))?;
        if !self.index.valid() {
            return Ok(());
        }
        self.load(|c| c.seek(&target, seq)).await?;
        self.skip_empty(Direction::Forward, None).await
    }

    /// Moves to the last entry at or before `(bucket, key, seq)`.
    ///
    /// # Cancel safety
    /// As [`TableIter::seek`].
    pub(crate) async fn seek_for_prev(&mut self, bucket: u64, key: &[u8], seq: u64) -> Result<()> {
        self.seek(bucket, key, seq).await?;
        let target = block_key(bucket, key);
        match &self.data {
            Some((c, _)) if c.valid() => {
                if cmp_internal(c.key(), c.seq(), &target, seq) == Ordering::Greater {
                    self.prev().await?;
                }
                Ok(())
            }
            _ => self.seek_to_last().await,
        }
    }

    /// Moves to the first entry of the table.
    ///
    /// # Cancel safety
    /// As [`TableIter::seek`].
    pub(crate) async fn seek_to_first(&mut self) -> Result<()> {
        self.data = None;
        let index_at = self.index_handle();
        self.index
            .seek_to_first()
            .map_err(|k| self.table.corrupt(index_at, k))?;
        self.load(Cursor::seek_to_first).await?;
        self.skip_empty(Direction::Forward, None).await
    }

    /// Moves to the last entry of the table.
    ///
    /// # Cancel safety
    /// As [`TableIter::seek`].
    pub(crate) async fn seek_to_last(&mut self) -> Result<()> {
        self.data = None;
        let index_at = self.index_handle();
        self.index
            .seek_to_last()
            .map_err(|k| self.table.corrupt(index_at, k))?;
        self.load(Cursor::seek_to_last).await?;
        self.skip_empty(Direction::Backward, None).await
    }

    /// Moves to the next entry (on none past the last). On no entry, stays there.
    ///
    /// # Cancel safety
    /// As [`TableIter::seek`].
    pub(crate) async fn next(&mut self) -> Result<()> {
        let Some((c, h)) = &mut self.data else {
            return Ok(());
        };
        if !c.valid() {
            return Ok(());
        }
        // Only an entry that leaves the block needs the one left to check its order against
        // (the block cursor checks the order within a block).
        let last = c.is_last().then(|| (c.key().to_vec(), c.seq()));
        let h = *h;
        if let Err(k) = c.next() {
            self.data = None;
            return Err(self.table.corrupt(h, k));
        }
        self.skip_empty(Direction::Forward, last).await
    }

    /// Moves to the previous entry (on none before the first). On no entry, stays there.
    ///
    /// # Cancel safety
    /// As [`TableIter::seek`].
    pub(crate) async fn prev(&mut self) -> Result<()> {
        let Some((c, h)) = &mut self.data else {
            return Ok(());
        };
        if !c.valid() {
            return Ok(());
        }
        // Only an entry that leaves the block needs the one left to check its order against
        // (the block cursor checks the order within a block).
        let last = c.is_first().then(|| (c.key().to_vec(), c.seq()));
        let h = *h;
        if let Err(k) = c.prev() {
            self.data = None;
            return Err(self.table.corrupt(h, k));
        }
        self.skip_empty(Direction::Backward, last).await
    }

    fn index_handle(&self) -> BlockHandle {
        // The index block's own handle, for errors in it.
        self.table.index_block_handle()
    }

    /// Reads the data block under the index cursor and positions a cursor in it with `place`.
    async fn load(
        &mut self,
        place: impl FnOnce(&mut Cursor) -> Result<(), crate::error::CorruptionKind>,
    ) -> Result<()> {
        self.data = None;
        if !self.index.valid() {
            return Ok(());
        }
        let handle = self.table.handle_at(&self.index)?;
        let mut cursor = self.table.read_block(handle).await?.cursor();
        place(&mut cursor).map_err(|k| self.table.corrupt(handle, k))?;
        self.data = Some((cursor, handle));
        Ok(())
    }

    /// While the data cursor is past its block's end (or before its start), moves to the next
    /// (previous) block; then checks the entry reached against `last`, the entry left.
    async fn skip_empty(&mut self, dir: Direction, last: Option<(Vec<u8>, u64)>) -> Result<()> {
        let index_at = self.index_handle();
        while self.data.as_ref().is_some_and(|(c, _)| !c.valid()) {
            let step = match dir {
                Direction::Forward => self.index.next(),
                Direction::Backward => self.index.prev(),
            };
            if let Err(k) = step {
                self.data = None;
                return Err(self.table.corrupt(index_at, k));
            }
            if !self.index.valid() {
                self.data = None;
                return Ok(());
            }
            match dir {
                Direction::Forward => self.load(Cursor::seek_to_first).await?,
                Direction::Backward => self.load(Cursor::seek_to_last).await?,
            }
        }
        if let (Some((c, h)), Some((key, seq))) = (&self.data, last) {
            let expected = match dir {
                Direction::Forward => Ordering::Greater,
                Direction::Backward => Ordering::Less,
            };
            if c.valid() && cmp_internal(c.key(), c.seq(), &key, seq) != expected {
                let h = *h;
                self.data = None;
                return Err(self
                    .table
                    .corrupt(h, bad("keys out of order across blocks")));
            }
        }
        Ok(())
    }
}
