//! Thin hosts of Thinklio live in this package's `examples` (see
//! `quickstart/main.rs`). The library target exists to compile and test the
//! workspace README's embedding example as a doc test.
#![doc = include_str!("../../README.md")]

pub mod http;
pub mod memory;
pub mod offline;
pub mod telegram;

/// The exit code of an example's run, its error printed.
pub fn exit_with(result: Result<(), String>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs to standard error, filtered by `RUST_LOG` (warnings by default).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Removes a SQLite database file and its WAL companions (the examples keep
/// theirs in the temp directory and clean up after themselves).
pub fn remove_database(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
