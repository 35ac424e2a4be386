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
    thinklio_examples::init_logging();
    thinklio_examples::exit_with(run(ServerArgs::parse()).await)
}
