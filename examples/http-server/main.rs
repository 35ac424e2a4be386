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
use thinklio_examples::TraceArgs;
use thinklio_examples::http::server::{ServerArgs, run};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    traces: TraceArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let traces = match thinklio_examples::init_tracing(&args.traces, "thinklio-http") {
        Ok(traces) => traces,
        Err(e) => return thinklio_examples::exit_with(Err(e)),
    };
    let result = run(args.server).await;
    traces.finish().await;
    thinklio_examples::exit_with(result)
}
