//! Thinklio's benchmarks.
//!
//! ```text
//! cargo run --release -p thinklio-benches -- harness            # print figures
//! cargo run --release -p thinklio-benches -- harness --write    # and rewrite docs/benchmarks.md
//! ```
//!
//! `harness`: N interactions, each `context → think → act → observe → think →
//! respond` with an instant scripted model, durable on a SQLite file; beside
//! it, in the same run, a raw rusqlite loop doing the same number of committed
//! row writes (each step written, then updated, in its own transaction, as the
//! harness's durability contract demands), so the harness overhead is a ratio.

mod harness;

use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: thinklio-benches harness [--interactions N] [--sessions N] [--write]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        return usage();
    };
    let mut options = harness::Options::default();
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--interactions" => match rest.next().and_then(|v| v.parse().ok()) {
                Some(n) => options.interactions = n,
                None => return usage(),
            },
            "--sessions" => match rest.next().and_then(|v| v.parse().ok()) {
                Some(n) => options.concurrent_sessions = n,
                None => return usage(),
            },
            "--write" => options.write = true,
            "--quick" => options.interactions = 200,
            _ => return usage(),
        }
    }
    match command.as_str() {
        "harness" => match harness::main(&options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        _ => usage(),
    }
}
