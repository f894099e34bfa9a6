//! The data of the key-value comparison (`benches/kv.rs`): redb's benchmark's key and value
//! sizes, and the pairs as a function of their index. The [`Engine`](crate::Engine) trait's
//! methods take indexes and build the pairs with [`pair`].

/// Key and value sizes, as in redb's benchmark.
pub const KEY: usize = 24;
pub const VALUE: usize = 150;
pub type Key = [u8; KEY];
pub type Val = [u8; VALUE];

/// Block cache / page cache of the engines that take one: redb's benchmark gives each 4 GiB.
pub const CACHE_SIZE: usize = 4 << 30;

/// The key and value of index `i`: a function of the index alone, so any subset of the keys
/// written can be read back (and checked) in any order or from any thread.
pub fn pair(i: u64) -> (Key, Val) {
    let mut rng = fastrand::Rng::with_seed(3 ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut k = [0u8; KEY];
    rng.fill(&mut k);
    let mut v = [0u8; VALUE];
    rng.fill(&mut v);
    (k, v)
}

pub fn key(i: u64) -> Key {
    pair(i).0
}

/// The read-modify-write counter: the first 8 bytes of a value, little-endian.
pub fn counter(v: &[u8]) -> u64 {
    u64::from_le_bytes(v[..8].try_into().expect("a value of at least 8 bytes"))
}

/// `v` with its counter incremented.
pub fn incremented(v: &[u8]) -> Vec<u8> {
    let mut out = v.to_vec();
    out[..8].copy_from_slice(&counter(v).wrapping_add(1).to_le_bytes());
    out
}
