//! Thin hosts of Thinklio live in this package's `examples` (see
//! `quickstart/main.rs`). The library target exists to compile and test the
//! workspace README's embedding example as a doc test.
#![doc = include_str!("../../README.md")]

pub mod http;
pub mod memory;
pub mod offline;
pub mod telegram;

/// Removes a SQLite database file and its WAL companions (the examples keep
/// theirs in the temp directory and clean up after themselves).
pub fn remove_database(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
