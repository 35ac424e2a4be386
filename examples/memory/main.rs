//! Thinklio's knowledge, from the command line.
//!
//! ```text
//! cargo run --example memory                       # the agent learns and recalls, offline
//! cargo run --example memory -- --db facts.db import facts.jsonl
//! cargo run --example memory -- --db facts.db search --user u1 --team t1 --k 5 "where does Ada live?"
//! cargo run --example memory -- --db facts.db search --queries questions.jsonl
//! ```
//!
//! `import` reads one fact per line: `{"id": "external id", "layer": "user",
//! "owner": "u1", "subject": "...", "predicate": "...", "value": "...",
//! "valid_at": "RFC 3339, optional"}` (`subject` and `predicate` may be empty
//! for a free-text fact). Owners and users are names; each maps to a stable
//! id. `search` prints a JSON array of the visible hits, best first;
//! `--queries` answers one `{"user", "teams", "question", "k"}` per line with
//! one JSON array per line, in order, loading the embedder once.
//! `--embedder offline|minilm:DIR|openai:MODEL` picks the embedder for both
//! (OpenAI reads `OPENAI_API_KEY` and `OPENAI_BASE_URL`; `minilm` needs
//! `--features thinklio-examples/minilm`). All facts live in
//! one account; the agent layer is owned by agent names.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    use clap::Parser;
    let args = thinklio_examples::memory::Args::parse();
    match thinklio_examples::memory::run(args, &mut std::io::stdout()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
