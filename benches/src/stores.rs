//! SQLite against PostgreSQL, side by side in one run: the harness scenario
//! (durable steps per second) and scoped hybrid retrieval, with 1, 2 and 4
//! workers on PostgreSQL. A PostgreSQL worker is a runtime with a pool of its
//! own on a shared store (`RuntimeConfig::shared_store`), as a separate
//! process would be; they run in this process so one clock times them all.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thinklio_core::knowledge::{FactQuery, NewFact};
use thinklio_core::{KnowledgeStore, Principal, Runtime, RuntimeConfig, SessionId, Timestamp};
use thinklio_store_postgres::{PostgresOptions, PostgresStore};
use thinklio_store_sqlite::SqliteStore;

use crate::harness::Measure;
use crate::retrieval::{self, Embedding};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Worker counts measured on PostgreSQL.
pub const WORKERS: [usize; 3] = [1, 2, 4];

#[derive(Debug, Clone)]
pub struct Options {
    pub interactions: u64,
    pub sessions: u64,
    pub facts: usize,
    pub queries: usize,
    pub embedding: Embedding,
    pub write: bool,
}

/// Query figures of one store and worker count.
#[derive(Debug, Clone)]
pub struct Search {
    pub p50: Duration,
    pub p99: Duration,
    pub per_second: f64,
}

pub struct Results {
    pub sqlite_harness: Measure,
    pub postgres_harness: Vec<(usize, Measure)>,
    pub sqlite_search: Search,
    pub postgres_search: Vec<(usize, Search)>,
    pub sqlite_import: f64,
    pub postgres_import: f64,
    pub options: Options,
}

/// The PostgreSQL server of the run: `THINKLIO_POSTGRES_URL`, or the
/// throw-away cluster [`ensure_postgres`] started.
static STARTED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn url() -> Result<String, BoxError> {
    if let Some(url) = STARTED.get() {
        return Ok(url.clone());
    }
    std::env::var("THINKLIO_POSTGRES_URL").map_err(|_| {
        "THINKLIO_POSTGRES_URL is not set: run `export THINKLIO_POSTGRES_URL=$(scripts/postgres.sh start)`"
            .into()
    })
}

/// Makes sure a PostgreSQL server is there for the suite: the one
/// `THINKLIO_POSTGRES_URL` names, or the throw-away cluster of
/// `scripts/postgres.sh` (installed beforehand with `scripts/postgres.sh
/// install`), started now.
pub fn ensure_postgres() -> Result<(), BoxError> {
    if url().is_ok() {
        return Ok(());
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/postgres.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg("start")
        .stderr(std::process::Stdio::inherit())
        .output()?;
    let url = String::from_utf8(out.stdout)?.trim().to_owned();
    if !out.status.success() || url.is_empty() {
        return Err(
            "scripts/postgres.sh start failed (run `scripts/postgres.sh install` first)".into(),
        );
    }
    let _ = STARTED.set(url);
    Ok(())
}

pub(crate) async fn postgres(schema: &str) -> Result<PostgresStore, BoxError> {
    Ok(PostgresStore::connect_with(&url()?, PostgresOptions::default().schema(schema)).await?)
}

/// The harness scenario on PostgreSQL with `workers` runtimes sharing the
/// store, the sessions dealt out among them.
pub(crate) async fn postgres_harness(
    workers: usize,
    interactions: u64,
    sessions: u64,
) -> Result<Measure, BoxError> {
    let schema = format!("bench_{}", uuid::Uuid::now_v7().simple());
    let mut runtimes = Vec::new();
    for _ in 0..workers {
        let mut config = RuntimeConfig::default();
        config.shared_store = true;
        runtimes.push(
            crate::harness::builder()
                .store(postgres(&schema).await?)
                .config(config)
                .build()?,
        );
    }
    let mut ids: Vec<SessionId> = Vec::new();
    for s in 0..sessions {
        let session = runtimes[0]
            .open_session(Principal::local(), "bench", "bench", Some(&format!("s{s}")))
            .await?;
        ids.push(session.id);
    }
    // The counting store connects first (its LISTEN connection is its own
    // statement), and each worker answers one message, as the SQLite runs
    // do: what a runtime reads once (budgets, account policies) is not
    // counted as the interactions' work.
    let counter = postgres(&schema).await?;
    for (n, rt) in runtimes.iter().enumerate() {
        let warm = rt
            .open_session(
                Principal::local(),
                "bench",
                "bench",
                Some(&format!("warm{n}")),
            )
            .await?;
        rt.send(warm.id, "what is 2 + 3?").await?;
    }
    let per_session = interactions / sessions.max(1);
    // Without pg_stat_statements in the cluster, the counts are left out.
    let counted = counter.server_counts().await.ok();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (n, id) in ids.into_iter().enumerate() {
        let rt: Runtime = runtimes[n % workers].clone();
        tasks.push(tokio::spawn(async move {
            let mut steps = 0u64;
            for _ in 0..per_session {
                steps += u64::from(rt.send(id, "what is 2 + 3?").await?.steps);
            }
            Ok::<_, thinklio_core::RuntimeError>(steps)
        }));
    }
    let mut steps = 0;
    for t in tasks {
        steps += t.await??;
    }
    let elapsed = started.elapsed();
    // The server publishes other sessions' counts within about a second.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let counts = match (counter.server_counts().await.ok(), counted) {
        (Some(now), Some(before)) => Some(now.since(before)),
        _ => None,
    };
    Ok(Measure {
        steps,
        elapsed,
        store: counts,
    })
}

type Question = (usize, String, Vec<f32>);

/// Imports the facts; facts per second.
async fn import<S: KnowledgeStore>(
    store: &S,
    facts: &[retrieval::Generated],
    vectors: &[Vec<f32>],
) -> Result<f64, BoxError> {
    let started = Instant::now();
    for (chunk, vecs) in facts.chunks(1000).zip(vectors.chunks(1000)) {
        let news: Vec<NewFact> = chunk
            .iter()
            .zip(vecs)
            .map(|(g, v)| {
                let mut f = NewFact::new(
                    retrieval::account(),
                    g.owner.clone(),
                    &g.subject,
                    &g.predicate,
                    &g.value,
                );
                f.embedding = v.clone();
                f
            })
            .collect();
        store.import_facts(news, Timestamp::from_millis(1)).await?;
    }
    Ok(facts.len() as f64 / started.elapsed().as_secs_f64())
}

/// Runs the questions on `stores` (one worker each, the questions dealt out).
async fn search<S: KnowledgeStore + Clone + 'static>(
    stores: Vec<S>,
    questions: &Arc<Vec<Question>>,
) -> Result<Search, BoxError> {
    let workers = stores.len();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (w, store) in stores.into_iter().enumerate() {
        let questions = Arc::clone(questions);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for (u, q, v) in questions.iter().skip(w).step_by(workers) {
                let query =
                    FactQuery::new(retrieval::visibility(*u), q.as_str(), Some(v.clone()), 10);
                let t = Instant::now();
                store.search_facts(&query).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, thinklio_core::StoreError>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Ok(Search {
        p50: retrieval::percentile(&latencies, 0.5),
        p99: retrieval::percentile(&latencies, 0.99),
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
    })
}

pub async fn run(options: &Options) -> Result<Results, BoxError> {
    url()?;
    let dir = tempfile::tempdir()?;
    eprintln!("harness on SQLite");
    let sqlite_harness = crate::harness::thinklio(
        &dir.path().join("harness.db"),
        options.interactions,
        options.sessions,
    )
    .await?;
    let mut postgres_harness = Vec::new();
    for w in WORKERS {
        eprintln!("harness on PostgreSQL, {w} workers");
        postgres_harness.push((w, postgres_harness_run(w, options).await?));
    }

    let facts = retrieval::generate(options.facts);
    let texts: Vec<String> = facts.iter().map(retrieval::text).collect();
    eprintln!("embedding {} facts", texts.len());
    let vectors = retrieval::embeddings(&texts, &options.embedding).await?;
    let qs = retrieval::questions(&facts, options.facts, options.queries);
    let q_texts: Vec<String> = qs.iter().map(|(_, q)| q.clone()).collect();
    let q_vectors = retrieval::embeddings(&q_texts, &options.embedding).await?;
    let questions: Arc<Vec<Question>> = Arc::new(
        qs.into_iter()
            .zip(q_vectors)
            .map(|((u, q), v)| (u, q, v))
            .collect(),
    );
    eprintln!("retrieval on SQLite");
    let sqlite = SqliteStore::open(dir.path().join("facts.db")).await?;
    let sqlite_import = import(&sqlite, &facts, &vectors).await?;
    let sqlite_search = search(vec![sqlite], &questions).await?;
    eprintln!("retrieval on PostgreSQL: importing");
    let schema = format!("bench_{}", uuid::Uuid::now_v7().simple());
    let postgres_import = import(&postgres(&schema).await?, &facts, &vectors).await?;
    let mut postgres_search = Vec::new();
    for w in WORKERS {
        eprintln!("retrieval on PostgreSQL, {w} workers");
        let mut stores = Vec::new();
        for _ in 0..w {
            stores.push(postgres(&schema).await?);
        }
        postgres_search.push((w, search(stores, &questions).await?));
    }
    Ok(Results {
        sqlite_harness,
        postgres_harness,
        sqlite_search,
        postgres_search,
        sqlite_import,
        postgres_import,
        options: options.clone(),
    })
}

async fn postgres_harness_run(workers: usize, options: &Options) -> Result<Measure, BoxError> {
    postgres_harness(workers, options.interactions, options.sessions).await
}

pub fn report(r: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| harness: {} interactions × 6 steps, {} sessions | durable steps/s | µs/step | steps/s vs SQLite | round trips / interaction | commits / interaction |",
        r.options.interactions, r.options.sessions
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |");
    let base = r.sqlite_harness.steps_per_second();
    let (trips, commits) = r.sqlite_harness.per_interaction();
    let _ = writeln!(
        out,
        "| SQLite file, 1 runtime | {:.0} | {:.1} | 1.00× | {trips} | {commits} |",
        base,
        r.sqlite_harness.micros_per_step()
    );
    for (w, m) in &r.postgres_harness {
        let (trips, commits) = m.per_interaction();
        let _ = writeln!(
            out,
            "| PostgreSQL, {w} worker{} | {:.0} | {:.1} | {:.2}× | {trips} | {commits} |",
            if *w == 1 { "" } else { "s" },
            m.steps_per_second(),
            m.micros_per_step(),
            m.steps_per_second() / base
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| retrieval: {} facts, {} queries | p50 | p99 | queries/s | queries/s vs SQLite | import facts/s |",
        r.options.facts, r.options.queries
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |");
    let base = r.sqlite_search.per_second;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let _ = writeln!(
        out,
        "| SQLite file, 1 worker | {:.2} ms | {:.2} ms | {:.0} | 1.00× | {:.0} |",
        ms(r.sqlite_search.p50),
        ms(r.sqlite_search.p99),
        base,
        r.sqlite_import
    );
    for (w, s) in &r.postgres_search {
        let _ = writeln!(
            out,
            "| PostgreSQL, {w} worker{} | {:.2} ms | {:.2} ms | {:.0} | {:.2}× | {} |",
            if *w == 1 { "" } else { "s" },
            ms(s.p50),
            ms(s.p99),
            s.per_second,
            s.per_second / base,
            if *w == 1 {
                format!("{:.0}", r.postgres_import)
            } else {
                "".into()
            }
        );
    }
    out
}

pub fn main(options: &Options) -> Result<(), BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let results = rt.block_on(run(options))?;
    let table = report(&results);
    println!("{table}");
    if options.write {
        let embedder = match &options.embedding {
            Embedding::MiniLm(_) => "all-MiniLM-L6-v2 embeddings (384 dimensions)",
            Embedding::Offline => "the offline hashing embedder (384 dimensions)",
        };
        let section = format!(
            "## SQLite and PostgreSQL\n\n\
             The harness scenario above and scoped hybrid retrieval, on a SQLite file and on PostgreSQL 15 \
             with pgvector (the throw-away cluster of `scripts/postgres.sh`, on the same machine, \
             `fsync = on`, default `synchronous_commit`), in one run. A PostgreSQL worker is a runtime with \
             its own connection pool on the shared store (`RuntimeConfig::shared_store`: each session is \
             leased in the store while a worker runs it), as a separate process would be; the sessions or \
             queries are dealt out among the workers. Retrieval uses the generated facts and paraphrased \
             questions of the retrieval benchmark with {embedder}; PostgreSQL compares vectors exactly over \
             the visible facts (`<=>`) and ranks keywords with `ts_rank` over a GIN-indexed `tsvector`.\n\n\
             Machine: {machine}; the database server shares its 2 cores with the benchmark.\n\n\
             {table}\n\
             Reading the figures: every PostgreSQL step is a network round trip and a WAL flush at commit, \
             where SQLite appends to a local file; what PostgreSQL buys is many processes on one database. \
             More workers help while the server has cores to spare; on this 2-core machine the server, the \
             workers and the benchmark share them.\n\n\
             Reproduce:\n\n\
             ```sh\n\
             scripts/postgres.sh install\n\
             export THINKLIO_POSTGRES_URL=$(scripts/postgres.sh start)\n\
             scripts/fetch-minilm.sh\n\
             cargo run --release -p thinklio-benches -- stores --interactions {i} --facts {f} --queries {q} --write\n\
             ```\n",
            machine = crate::harness::machine(),
            i = options.interactions,
            f = options.facts,
            q = options.queries,
        );
        let path = crate::docs::write_section("stores", &section)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_comparison_runs_on_both_stores() {
        let r = run(&Options {
            interactions: 8,
            sessions: 4,
            facts: 500,
            queries: 12,
            embedding: Embedding::Offline,
            write: false,
        })
        .await
        .unwrap();
        assert_eq!(
            r.sqlite_harness.steps,
            8 * crate::harness::STEPS_PER_INTERACTION
        );
        assert_eq!(r.postgres_harness.len(), 3);
        assert!(
            r.postgres_harness
                .iter()
                .all(|(_, m)| m.steps == 8 * crate::harness::STEPS_PER_INTERACTION)
        );
        assert!(r.postgres_search.iter().all(|(_, s)| s.per_second > 0.0));
        // Round trips and commits are counted on both stores: at least a
        // round trip per step (commits may be shared: SQLite groups the
        // writes of concurrent sessions into one).
        let sqlite = r.sqlite_harness.store.unwrap();
        assert!(sqlite.round_trips >= 48 && sqlite.commits > 0, "{sqlite:?}");
        for (w, m) in &r.postgres_harness {
            let pg = m
                .store
                .expect("scripts/postgres.sh loads pg_stat_statements");
            assert!(
                pg.round_trips >= 48 && pg.commits > 0,
                "{w} workers: {pg:?}"
            );
        }
        assert!(report(&r).contains("PostgreSQL, 4 workers"));
    }
}
