//! The quickstart host of Thinklio (`cargo run --example quickstart`, see
//! `main.rs` beside this directory) and what every example host shares with
//! it: the offline model and calculator they answer with when no model is
//! configured, logging, and the exit code of a run.
//!
//! A package of its own, so that the quickstart builds only what it needs.
#![warn(missing_docs)]

pub mod offline;

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
