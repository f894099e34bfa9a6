//! Helpers shared by the benches of `ringtide-raft`.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each bench binary uses a different subset"
)]

pub mod mem_store;
