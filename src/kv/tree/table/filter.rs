//! The table's bloom filter: one for the whole table, over the block keys (`bucket ‖ user key`,
//! each key once however many versions it has), so that a lookup of a key the table does not
//! hold reads no data block, with a false-positive rate of about 1% at 10 bits per key.
//!
//! ```text
//! contents  bit array: m / 8 bytes | probes k: u8 (1..=30)
//! ```
//!
//! The hash is xxh3-64 of the block key, `h`; with `h1 = h & 0xffff_ffff` and `h2 = h >> 32`
//! the key sets bits `(h1 + i·h2) mod m` for `i` in `0..k` (double hashing, computed in u64,
//! which cannot overflow), bit `b` being bit `b % 8` (least significant first) of byte `b / 8`.
//! The hash and this formula are part of the format: they never change within a version.

use bytes::Bytes;

use super::format::bad;
use crate::error::CorruptionKind;

/// The most probes a filter may ask for.
const MAX_PROBES: u8 = 30;

fn hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

fn bit_positions(h: u64, k: u8, m: u64) -> impl Iterator<Item = u64> {
    let (h1, h2) = (h & 0xffff_ffff, h >> 32);
    (0..u64::from(k)).map(move |i| (h1 + i * h2) % m)
}

/// Collects the keys' hashes (8 bytes per key) and builds the filter at the end.
pub(crate) struct FilterBuilder {
    bits_per_key: u32,
    hashes: Vec<u64>,
}

impl FilterBuilder {
    pub(crate) fn new(bits_per_key: u32) -> FilterBuilder {
        assert!(bits_per_key > 0);
        FilterBuilder {
            bits_per_key,
            hashes: Vec::new(),
        }
    }

    /// Adds a block key; the caller adds each key once.
    pub(crate) fn add(&mut self, key: &[u8]) {
        self.hashes.push(hash(key));
    }

    /// The filter block's contents.
    pub(crate) fn finish(&self) -> Vec<u8> {
        // k = bits per key · ln 2 minimises the false-positive rate.
        let k = ((f64::from(self.bits_per_key) * 0.69).round() as u8).clamp(1, MAX_PROBES);
        let bits = (self.hashes.len() as u64 * u64::from(self.bits_per_key)).max(64);
        let bytes = bits.div_ceil(8) as usize;
        let m = bytes as u64 * 8;
        let mut out = vec![0u8; bytes + 1];
        for &h in &self.hashes {
            for b in bit_positions(h, k, m) {
                out[(b / 8) as usize] |= 1 << (b % 8);
            }
        }
        out[bytes] = k;
        out
    }
}

/// A filter read from a table.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    bits: Bytes,
    probes: u8,
}

impl Filter {
    /// The filter's bits, in bytes.
    pub(crate) fn len_bytes(&self) -> usize {
        self.bits.len()
    }

    /// Decodes a filter block's contents (its trailer already checked).
    pub(crate) fn decode(contents: Bytes) -> Result<Filter, CorruptionKind> {
        let Some((&probes, _)) = contents.split_last() else {
            return Err(bad("empty filter block"));
        };
        if contents.len() < 2 || !(1..=MAX_PROBES).contains(&probes) {
            return Err(bad(
                "filter block without bits or with an impossible probe count",
            ));
        }
        Ok(Filter {
            bits: contents.slice(..contents.len() - 1),
            probes,
        })
    }

    /// False only if the block key is certainly not in the table.
    pub(crate) fn may_contain(&self, key: &[u8]) -> bool {
        let m = self.bits.len() as u64 * 8;
        bit_positions(hash(key), self.probes, m)
            .all(|b| self.bits[(b / 8) as usize] & (1 << (b % 8)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_added_key_passes_and_few_others_do() {
        let mut b = FilterBuilder::new(10);
        for i in 0..10_000u32 {
            b.add(&i.to_be_bytes());
        }
        let f = Filter::decode(Bytes::from(b.finish())).unwrap();
        assert!((0..10_000u32).all(|i| f.may_contain(&i.to_be_bytes())));
        let false_positives = (10_000..110_000u32)
            .filter(|i| f.may_contain(&i.to_be_bytes()))
            .count();
        // About 1% at 10 bits per key.
        assert!(
            false_positives < 2_000,
            "{false_positives} false positives in 100000"
        );
    }

    #[test]
    fn the_bits_are_the_format_and_do_not_change() {
        // A fixed input and its filter, as written by format version 1: a change of hash or
        // formula would make every existing table's filter lie.
        let mut b = FilterBuilder::new(10);
        for k in [&b"a"[..], b"bb", b"ccc"] {
            b.add(k);
        }
        let bytes = b.finish();
        let f = Filter::decode(Bytes::from(bytes.clone())).unwrap();
        assert!(f.may_contain(b"a") && f.may_contain(b"bb") && f.may_contain(b"ccc"));
        assert_eq!(bytes, [34, 8, 41, 136, 88, 160, 136, 4, 7]);
        assert_eq!(hash(b"a"), 0xe6c6_32b6_1e96_4e1f);
    }
}
