//! An in-process network between Raft nodes whose links can be cut (placeholder).
