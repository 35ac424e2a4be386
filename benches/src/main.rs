//! Thinklio's benchmarks.
//!
//! ```text
//! cargo run --release -p thinklio-benches -- harness            # print figures
//! cargo run --release -p thinklio-benches -- harness --write    # and rewrite its section of docs/benchmarks.md
//! cargo run --release -p thinklio-benches -- retrieval --write  # 10k and 100k facts, MiniLM embeddings
//! cargo run --release -p thinklio-benches -- stores --write     # SQLite and PostgreSQL side by side
//! ```
//!
//! `harness`: N interactions, each `context → think → act → observe → think →
//! respond` with an instant scripted model, durable on a SQLite file; beside
//! it, in the same run, a raw rusqlite loop doing the same number of committed
//! row writes (each step written, then updated, in its own transaction, as the
//! harness's durability contract demands), so the harness overhead is a ratio.
//!
//! `retrieval`: scoped hybrid search over generated facts of 1,000 users in
//! 50 teams, embedded with all-MiniLM-L6-v2 (run `scripts/fetch-minilm.sh`
//! first; embeddings are cached under `target/bench-cache/`), with recall
//! against exact brute-force search over the same visible facts.
//!
//! `embed`: all-MiniLM-L6-v2 in Thinklio (candle) beside sentence-transformers
//! on PyTorch, on the same 2,000 sentences of mixed length: sentences per
//! second in batches and one query's latency (`benches/peers/setup-embed.sh`
//! makes the reference's environment; `--no-reference` measures Thinklio alone).
//!
//! `context`: one 500-turn session three ways (full history, the last 20
//! turns, a context budget with summaries), and the tokens each think sends
//! (`--write` also draws `docs/bench/context.svg`).
//!
//! `retention`: 100,000 finished interactions pruned on SQLite and
//! PostgreSQL: sizes before and after, and every usage report compared.
//!
//! `load`: the HTTP example in its own process under ten times an expected
//! load for five minutes: p50/p99 latency, errors and resident memory.
//!
//! `layer`: one principal that sees 100,000 facts, searched through each
//! store's approximate vector index beside its exact search: recall@10,
//! the index's build time and size, and the question's embedding time.
//!
//! `stores`: the harness scenario and retrieval at 100k facts on SQLite and
//! on PostgreSQL (with 1, 2 and 4 workers), side by side; needs
//! `THINKLIO_POSTGRES_URL` (`scripts/postgres.sh start` prints it).

mod context;
mod docs;
mod embed;
mod harness;
mod layer;
mod load;
mod memory;
mod retention;
mod retrieval;
mod stores;
mod suite;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!(
        "usage: thinklio-benches harness [--interactions N] [--sessions N] [--quick] [--write]\n       \
         thinklio-benches retrieval [--sizes N,N] [--queries N] [--minilm DIR | --offline] [--quick] [--write]\n       \
         thinklio-benches stores [--interactions N] [--facts N] [--queries N] [--offline] [--quick] [--write]\n       \
         thinklio-benches embed [--sentences N] [--queries N] [--no-reference] [--write]\n       \
         thinklio-benches memory [--offline] [--write]\n       \
         thinklio-benches context [--turns N] [--write]\n       \
         thinklio-benches retention [--interactions N] [--no-postgres] [--write]\n       \
         thinklio-benches layer [--facts N] [--queries N] [--offline] [--no-postgres] [--write]\n       \
         thinklio-benches work [--quick]   (the store's round trips and commits per interaction)\n       \
         thinklio-benches load [--factor X] [--seconds N] [--clients N] [--sessions N] [--accounts N] [--write]\n       \
         thinklio-benches all [--quick] [--write]   (Thinklio, LangGraph and the OpenAI Agents SDK side by side)"
    );
    ExitCode::from(2)
}

/// Runs a benchmark's future on a multi-threaded runtime of its own.
fn block_on<F: std::future::Future<Output = Result<T, BoxError>>, T>(f: F) -> Result<T, BoxError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("harness") => harness_main(&args[1..]),
        Some("retrieval") => retrieval_main(&args[1..]),
        Some("stores") => stores_main(&args[1..]),
        Some("embed") => embed_main(&args[1..]),
        Some("memory") => memory_main(&args[1..]),
        Some("context") => context_main(&args[1..]),
        Some("retention") => retention_main(&args[1..]),
        Some("load") => load_main(&args[1..]),
        Some("layer") => layer_main(&args[1..]),
        Some("work") => work_main(&args[1..]),
        Some("all") => all_main(&args[1..]),
        Some("scenario") => suite::scenario_main(&args[1..]),
        _ => return usage(),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => usage(),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn all_main(args: &[String]) -> Result<bool, BoxError> {
    let mut plan = suite::Plan::full();
    let mut write = false;
    for arg in args {
        match arg.as_str() {
            "--quick" => plan = suite::Plan::quick(),
            "--write" => write = true,
            _ => return Ok(false),
        }
    }
    plan.write = write;
    suite::main(&plan)?;
    Ok(true)
}

fn harness_main(args: &[String]) -> Result<bool, BoxError> {
    let mut options = harness::Options::default();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--interactions" => match rest.next().and_then(|v| v.parse().ok()) {
                Some(n) => options.interactions = n,
                None => return Ok(false),
            },
            "--sessions" => match rest.next().and_then(|v| v.parse().ok()) {
                Some(n) => options.concurrent_sessions = n,
                None => return Ok(false),
            },
            "--write" => options.write = true,
            "--quick" => options.interactions = 200,
            _ => return Ok(false),
        }
    }
    harness::main(&options)?;
    Ok(true)
}

fn embed_main(args: &[String]) -> Result<bool, BoxError> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut options = embed::Options {
        sentences: 2000,
        queries: 200,
        model: root.join("target/models/all-minilm-l6-v2"),
        reference: Some(PathBuf::new()),
        write: false,
    };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let mut number = || rest.next().and_then(|v| v.parse::<usize>().ok());
        match arg.as_str() {
            "--sentences" => match number() {
                Some(n) if n >= 64 => options.sentences = n,
                _ => return Ok(false),
            },
            "--queries" => match number() {
                Some(n) if n > 0 => options.queries = n,
                _ => return Ok(false),
            },
            "--no-reference" => options.reference = None,
            "--write" => options.write = true,
            _ => return Ok(false),
        }
    }
    if options.reference.is_some() {
        let out = std::process::Command::new("bash")
            .arg(root.join("benches/peers/setup-embed.sh"))
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "setting up the reference failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        options.reference = Some(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        ));
    }
    let texts = embed::sentences(options.sentences);
    let ours = block_on(embed::thinklio(&options.model, &texts, options.queries))?;
    let theirs = match &options.reference {
        Some(python) => Some(embed::reference(python, &texts, options.queries)?),
        None => None,
    };
    let table = embed::report(&ours, theirs.as_ref());
    println!("{table}");
    if options.write {
        let section = format!(
            "## Local embeddings\n\n\
             all-MiniLM-L6-v2 (384 dimensions, the model `scripts/fetch-minilm.sh` fetches) on {n} \
             sentences of one to four generated facts each (5 to 40 words), embedded in batches of 32, \
             then {q} of them one at a time; Thinklio's `MiniLm` (candle, in-process, on tokio's \
             blocking pool) beside sentence-transformers on PyTorch (CPU, `benches/peers/embed.py`), \
             one after the other in one run. Machine: {machine}.\n\n\
             {table}\n\
             Thinklio batches texts by length (a batch is padded to its longest text), which was worth \
             about 1.5× when it came. What remains is the model's arithmetic: a profile (`perf record`) \
             puts over half the time in the `gemm` crate's AVX2+FMA micro-kernel and its packing (its \
             AVX-512 kernels sit behind its `nightly` feature), a tenth in the exact GELU's scalar `erf` \
             and a twentieth in the softmax's `exp`, where PyTorch calls oneDNN/MKL kernels with AVX-512. \
             Tried without gain: `-C target-cpu=native` (`gemm` picks its kernel at run time), batches of \
             128, two batches at once on single-threaded thread pools, and the tanh approximation of GELU \
             (slower: candle computes `tanh` in scalar code too). One thread per operation for the whole \
             process (`RAYON_NUM_THREADS=1`) with two batches at once raised throughput by about 30% and \
             slowed a lone query by about 20%; that setting belongs to the host process, not to a library.\n\n\
             Reproduce:\n\n\
             ```sh\n\
             scripts/fetch-minilm.sh\n\
             cargo run --release -p thinklio-benches -- embed --write\n\
             ```\n",
            n = options.sentences,
            q = options.queries,
            machine = harness::machine(),
        );
        let path = docs::write_section("embeddings", &section)?;
        println!("wrote {}", path.display());
    }
    Ok(true)
}

fn load_main(args: &[String]) -> Result<bool, BoxError> {
    let mut options = load::Options::default();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let mut number = || {
            rest.next()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|n| *n > 0.0)
        };
        match arg.as_str() {
            "--factor" => match number() {
                Some(x) => options.factor = x,
                None => return Ok(false),
            },
            "--seconds" => match number() {
                Some(n) => options.duration = std::time::Duration::from_secs_f64(n),
                None => return Ok(false),
            },
            "--clients" => match number() {
                Some(n) => options.clients = n as usize,
                None => return Ok(false),
            },
            "--sessions" => match number() {
                Some(n) => options.sessions = n as usize,
                None => return Ok(false),
            },
            "--accounts" => match number() {
                Some(n) => options.accounts = n as usize,
                None => return Ok(false),
            },
            "--write" => options.write = true,
            _ => return Ok(false),
        }
    }
    load::main(&options)?;
    Ok(true)
}

fn retention_main(args: &[String]) -> Result<bool, BoxError> {
    let mut options = retention::Options::default();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--interactions" => match rest.next().and_then(|v| v.parse().ok()) {
                Some(n) if n > 0 => options.interactions = n,
                _ => return Ok(false),
            },
            "--no-postgres" => options.postgres = false,
            "--write" => options.write = true,
            _ => return Ok(false),
        }
    }
    retention::main(&options)?;
    Ok(true)
}

fn context_main(args: &[String]) -> Result<bool, BoxError> {
    let mut turns = 500;
    let mut write = false;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--turns" => match rest.next().and_then(|v| v.parse().ok()) {
                Some(n) if n > 0 => turns = n,
                _ => return Ok(false),
            },
            "--write" => write = true,
            _ => return Ok(false),
        }
    }
    let figures = block_on(context::run(turns))?;
    let table = context::report(&figures);
    println!("{table}");
    if write {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/bench");
        std::fs::write(dir.join("context.svg"), context::chart(&figures))?;
        let section = format!(
            "## Long conversations\n\n\
             One session of {turns} turns through the harness on a SQLite file, three ways, with a \
             scripted model answering at realistic, varying lengths (a user says 5 to 120 words, the \
             assistant answers with 20 to 400; the same conversation each time): every earlier turn \
             shown; the last 20 turns, whatever their size; and the last 20 turns that fit a context budget of {budget} tokens \
             after a chain of summaries of the older ones (`summarize_after` 8, written \
             by the queue's summariser as the session goes on). Tokens each `think` sends, counted as \
             the harness counts them (`cargo run --release -p thinklio-benches -- context --write`). \
             Machine: {machine}.\n\n{table}\n![tokens per think by turn](bench/context.svg)\n",
            budget = context::BUDGET,
            machine = harness::machine(),
        );
        let path = docs::write_section("context", &section)?;
        println!("wrote {}", path.display());
    }
    Ok(true)
}

fn memory_main(args: &[String]) -> Result<bool, BoxError> {
    let mut options = memory::Options {
        embedding: retrieval::Embedding::MiniLm(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/models/all-minilm-l6-v2"),
        ),
        write: false,
    };
    for arg in args {
        match arg.as_str() {
            "--offline" => options.embedding = retrieval::Embedding::Offline,
            "--write" => options.write = true,
            _ => return Ok(false),
        }
    }
    let figures = block_on(memory::run(&options))?;
    let table = memory::report(&figures);
    println!("{table}");
    if options.write {
        let embedder = match &options.embedding {
            retrieval::Embedding::MiniLm(_) => "all-MiniLM-L6-v2 (384 dimensions)",
            retrieval::Embedding::Offline => "the offline hashing embedder",
        };
        let section = format!(
            "## Conversational memory\n\n\
             Long conversations of one user with an assistant over months, in dated sessions \
             (`benches/data/conversations.txt`, written for the project), imported turn by turn as \
             facts (`Maya · said · …`, valid from when the turn was said); then questions asked after \
             the last session, each naming the turns that hold its evidence: single-hop (one turn \
             answers), multi-hop (turns of several sessions), temporal (the answer is a time, or the \
             question names one: \"in the middle of February\") and open-domain (inferred from what \
             was said). *Evidence recall@k* is the share of a question's evidence turns among the \
             first k hits, averaged over questions. Every ranking reads the same candidates from one \
             SQLite store (the vector and keyword lists, 40 each, and the period's list) and differs \
             only in how it ranks them. Embeddings: {embedder}. Machine: {machine}.\n\n\
             {table}\n\
             What moved recall: neighbours (a turn lifted by the turns said just before and after it, \
             so an answer is found through the question it answers) the most, then weighting the \
             vector list over the keyword list with a smaller fusion constant, then the period list \
             for questions that name a time. What did not: embedding each turn together with the \
             turn before it (recall@10 fell from 0.74 to 0.63 with vectors alone), embedding the turn \
             without its speaker (0.70), MMR (λ = 0.75 cost 0.05 at @5 against plain relevance), and \
             more candidates per list (100 instead of 40 changed nothing measurable). No cross-encoder \
             reranker could be loaded the way MiniLM is (from a package of the registries). The fusion \
             defaults were chosen on this dataset (80 questions: one evidence turn moves recall by about \
             0.01), so the `now` row flatters them somewhat; the ablations, each removing one lever, are \
             the fairer reading.\n\n\
             Reproduce:\n\n\
             ```sh\n\
             scripts/fetch-minilm.sh\n\
             cargo run --release -p thinklio-benches -- memory --write\n\
             ```\n",
            machine = harness::machine(),
        );
        let path = docs::write_section("memory", &section)?;
        println!("wrote {}", path.display());
    }
    Ok(true)
}

/// `work [--quick]`: the store-work section of `all` on its own, to judge a
/// change to the stores by their round trips and commits.
fn work_main(args: &[String]) -> Result<bool, BoxError> {
    let plan = match args {
        [] => suite::Plan::full(),
        [quick] if quick == "--quick" => suite::Plan::quick(),
        _ => return Ok(false),
    };
    stores::ensure_postgres()?;
    let work = block_on(suite::store_work(&plan))?;
    println!("{}", suite::work_report(&work));
    Ok(true)
}

fn layer_main(args: &[String]) -> Result<bool, BoxError> {
    let mut options = layer::Options {
        facts: 100_000,
        queries: 200,
        embedding: retrieval::Embedding::MiniLm(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/models/all-minilm-l6-v2"),
        ),
        postgres: true,
        write: false,
    };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let mut number = || rest.next().and_then(|v| v.parse::<usize>().ok());
        match arg.as_str() {
            "--facts" => match number() {
                Some(n) => options.facts = n,
                None => return Ok(false),
            },
            "--queries" => match number() {
                Some(n) => options.queries = n,
                None => return Ok(false),
            },
            "--offline" => options.embedding = retrieval::Embedding::Offline,
            "--no-postgres" => options.postgres = false,
            "--write" => options.write = true,
            _ => return Ok(false),
        }
    }
    let figures = block_on(layer::run(&options))?;
    let table = layer::report(&figures);
    println!("{table}");
    if options.write {
        let path = docs::write_section("layer", &table)?;
        println!("wrote {}", path.display());
    }
    Ok(true)
}

fn stores_main(args: &[String]) -> Result<bool, BoxError> {
    let mut options = stores::Options {
        interactions: 2000,
        sessions: 16,
        facts: 100_000,
        queries: 1000,
        embedding: retrieval::Embedding::MiniLm(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/models/all-minilm-l6-v2"),
        ),
        write: false,
    };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let mut number = || rest.next().and_then(|v| v.parse::<usize>().ok());
        match arg.as_str() {
            "--interactions" => match number() {
                Some(n) => options.interactions = n as u64,
                None => return Ok(false),
            },
            "--facts" => match number() {
                Some(n) => options.facts = n,
                None => return Ok(false),
            },
            "--queries" => match number() {
                Some(n) => options.queries = n,
                None => return Ok(false),
            },
            "--offline" => options.embedding = retrieval::Embedding::Offline,
            "--quick" => {
                options.interactions = 200;
                options.facts = 2000;
                options.queries = 100;
                options.embedding = retrieval::Embedding::Offline;
            }
            "--write" => options.write = true,
            _ => return Ok(false),
        }
    }
    stores::main(&options)?;
    Ok(true)
}

fn retrieval_main(args: &[String]) -> Result<bool, BoxError> {
    let mut options = retrieval::Options {
        sizes: vec![10_000, 100_000],
        queries: 1000,
        embedding: retrieval::Embedding::MiniLm(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/models/all-minilm-l6-v2"),
        ),
        write: false,
    };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--sizes" => {
                let Some(sizes) = rest
                    .next()
                    .map(|v| {
                        v.split(',')
                            .map(str::parse)
                            .collect::<Result<Vec<usize>, _>>()
                    })
                    .and_then(Result::ok)
                else {
                    return Ok(false);
                };
                options.sizes = sizes;
            }
            "--queries" => match rest.next().and_then(|v| v.parse().ok()) {
                Some(n) => options.queries = n,
                None => return Ok(false),
            },
            "--minilm" => match rest.next() {
                Some(dir) => options.embedding = retrieval::Embedding::MiniLm(PathBuf::from(dir)),
                None => return Ok(false),
            },
            "--offline" => options.embedding = retrieval::Embedding::Offline,
            "--quick" => {
                options.sizes = vec![2000];
                options.queries = 100;
                options.embedding = retrieval::Embedding::Offline;
            }
            "--write" => options.write = true,
            _ => return Ok(false),
        }
    }
    let figures = block_on(retrieval::run(&options))?;
    let table = retrieval::report(&figures);
    println!("{table}");
    if options.write {
        let sizes = options
            .sizes
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let embedder = match &options.embedding {
            retrieval::Embedding::MiniLm(_) => {
                "all-MiniLM-L6-v2 (384 dimensions), computed once and cached"
            }
            retrieval::Embedding::Offline => "the offline hashing embedder (384 dimensions)",
        };
        let section = format!(
            "## Scoped hybrid retrieval\n\n\
             Generated facts of {users} users in {teams} teams (each user acts for one team and is served \
             by one of {agents} agents) in one account: about 70% user facts, 28% team facts, 1.5% agent \
             facts and 0.5% account facts, each a sentence like `person 17 lives in Porto 42`. Embeddings: \
             {embedder}. Each query is a paraphrased question of a random user about a fact it may see; the \
             question's embedding is computed beforehand, so the latency is the store's search alone: the \
             visibility filter inside both queries, exact cosine distance (sqlite-vec) over the visible facts, \
             FTS5 keyword search on the question's selective terms, weighted reciprocal rank fusion with \
             neighbours and layer precedence (the ranking of [conversational memory](#conversational-memory)). \
             SQLite file, WAL, one connection.\n\n\
             *Vector recall@10* compares the store's vector candidates with exact brute-force search (in Rust) \
             over the same visible, current facts: the store's vector search is exact, so only ties broken \
             the other way differ. *Hybrid top-10 ∩ exact top-10* is the share of the final hits (after \
             keyword fusion and precedence) that are also among the 10 nearest by embedding alone: \
             it measures how much fusion changes the list, not a loss.\n\n\
             Machine: {machine}.\n\n\
             {table}\n\
             Reproduce:\n\n\
             ```sh\n\
             scripts/fetch-minilm.sh\n\
             cargo run --release -p thinklio-benches -- retrieval --sizes {sizes} --queries {queries} --write\n\
             ```\n",
            users = retrieval::USERS,
            teams = retrieval::TEAMS,
            agents = retrieval::AGENTS,
            machine = harness::machine(),
            queries = options.queries,
        );
        let path = docs::write_section("retrieval", &section)?;
        println!("wrote {}", path.display());
    }
    Ok(true)
}
