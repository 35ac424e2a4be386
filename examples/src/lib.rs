//! Thin hosts of Thinklio live in this package's `examples` (see
//! `quickstart/main.rs`). The library target exists to compile and test the
//! workspace README's embedding example as a doc test.
#![doc = include_str!("../../README.md")]
