//! Thinklio over HTTP: the `/v1/` API (sessions, messages streamed as
//! server-sent events, jobs, knowledge, usage, API keys), its OpenAPI
//! document at `/openapi.json`, and a web chat at `/`.
//!
//! ```text
//! cargo run --example http-server -- --db /tmp/thinklio.db --addr 127.0.0.1:8080
//! ```
//!
//! The first start creates an account and an API key and prints the web
//! chat's address with the key in it. See `examples/http-server/README.md`.

use std::process::ExitCode;

use clap::Parser;
use thinklio_examples::http::server::{ServerArgs, run};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(ServerArgs::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
