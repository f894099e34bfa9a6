//! Numbers every layer of ringtide shares, as newtypes so that they cannot be mixed.
//!
//! - [`Lsn`] numbers the entries of a write-ahead log, densely from 1.
//! - [`SeqNo`] numbers the commits of the key-value store, and orders the versions of a key.
//!
//! Both live here, outside any layer, so that the crate-wide [`Error`](crate::Error) and every
//! layer can name them without depending on each other. Invariant: a value of one is never
//! converted into the other implicitly; a layer that maps one onto the other says so where it
//! does.

use std::fmt;

/// A log sequence number: entries are numbered densely from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The next lsn.
    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A sequence number of the key-value store: every commit takes the next one, and a snapshot
/// sees exactly the commits at or below its own. Ordered like the commits it numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SeqNo(pub u64);

impl SeqNo {
    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The next sequence number.
    pub fn next(self) -> SeqNo {
        SeqNo(self.0 + 1)
    }
}

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_order_display_and_step() {
        assert!(Lsn(1) < Lsn(2));
        assert_eq!(Lsn(41).next(), Lsn(42));
        assert_eq!(Lsn(7).to_string(), "7");
        assert!(SeqNo(1) < SeqNo(2));
        assert_eq!(SeqNo(41).next().get(), 42);
        assert_eq!(SeqNo(9).to_string(), "9");
    }
}
