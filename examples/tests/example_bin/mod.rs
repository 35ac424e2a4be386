//! The path of an example's binary for the tests that run it as a user
//! would.

use std::path::PathBuf;
use std::process::Command;

/// The example `name`'s binary, built (or found up to date) by cargo as
/// `cargo run --example NAME` would; `scripts/test.sh` builds the examples
/// the tests run before they start, so here this is a no-op.
#[allow(dead_code)] // each test crate that includes this uses one of the two
pub fn example_binary(name: &str) -> PathBuf {
    package_example("thinklio-examples", name)
}

/// The example `name` of `package`, built as `example_binary` builds it.
pub fn package_example(package: &str, name: &str) -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", package, "--example", name])
        .status()
        .unwrap();
    assert!(status.success(), "cargo build --example {name} failed");
    let exe = std::env::current_exe().unwrap();
    let debug = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .to_owned();
    debug.join("examples").join(name)
}
