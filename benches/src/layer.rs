//! Retrieval over a large layer: one principal sees every one of the
//! generated facts (all in its account's layer), so a vector search has no
//! visibility filter to narrow it. On SQLite and on PostgreSQL, in one run:
//! the store's approximate index (SQLite's inverted lists, PostgreSQL's
//! HNSW) beside the exact search of the same store (`FactQuery::exact`),
//! recall@10 of the index against it, the index's build time and size, and
//! the time to embed the question beside the search's.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use thinklio_core::knowledge::{FactOwner, FactQuery, NewFact, VectorIndex, Visibility};
use thinklio_core::{Embedder, FactId, KnowledgeStore, OfflineEmbedder, Timestamp};
use thinklio_store_sqlite::SqliteStore;

use crate::BoxError;
use crate::retrieval::{Embedding, account, embeddings, generate, percentile, questions, text};

/// The offline embedder's size in smoke runs: one PostgreSQL indexes.
const OFFLINE_DIMS: usize = 384;

/// Sizes of a run.
#[derive(Debug, Clone)]
pub struct Options {
    pub facts: usize,
    pub queries: usize,
    pub embedding: Embedding,
    /// Measures PostgreSQL too.
    pub postgres: bool,
    pub write: bool,
}

/// One store's figures.
#[derive(Debug, Clone)]
pub struct Row {
    pub store: &'static str,
    pub visible: usize,
    pub import_per_second: f64,
    pub index: VectorIndex,
    /// The vector search alone: exact, then through the index.
    pub exact: (Duration, Duration),
    pub indexed: (Duration, Duration),
    /// The whole search (vector and keyword lists, ranked): exact, indexed (p50).
    pub hybrid: (Duration, Duration),
    /// Recall@10: the share of the exact ten the index's search returns.
    pub recall: f64,
    /// The same within 0.001 of the exact tenth's distance (ann-benchmarks).
    pub close: f64,
}

impl Row {
    /// How many times faster the index's search is than the exact one (p50).
    pub fn speedup(&self) -> f64 {
        self.exact.0.as_secs_f64() / self.indexed.0.as_secs_f64().max(1e-9)
    }
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct Figures {
    pub facts: usize,
    pub queries: usize,
    pub dims: usize,
    pub embedder: String,
    /// Embedding one question: p50, p99.
    pub embed: (Duration, Duration),
    pub rows: Vec<Row>,
}

fn principal_sees_everything() -> Visibility {
    Visibility {
        account: account(),
        account_layer: true,
        agent: None,
        teams: Vec::new(),
        user: None,
    }
}

fn p50_p99(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

async fn measure<S: KnowledgeStore>(
    name: &'static str,
    store: &S,
    texts: &[String],
    vectors: &[Vec<f32>],
    asked: &[(String, Vec<f32>)],
) -> Result<Row, BoxError> {
    let started = Instant::now();
    for (chunk, vecs) in texts.chunks(1_000).zip(vectors.chunks(1_000)) {
        let news: Vec<NewFact> = chunk
            .iter()
            .zip(vecs)
            .map(|(t, v)| {
                let mut f = NewFact::new(account(), FactOwner::Account, "", "", t.as_str());
                f.embedding = v.clone();
                f
            })
            .collect();
        store.import_facts(news, Timestamp::from_millis(1)).await?;
    }
    let import_per_second = texts.len() as f64 / started.elapsed().as_secs_f64();
    let dims = vectors.first().map_or(0, Vec::len);
    let index = store
        .index_vectors()
        .await?
        .into_iter()
        .find(|i| i.dims == dims)
        .ok_or("the store built no index for the facts' embeddings")?;
    let visibility = principal_sees_everything();
    let visible = store
        .facts(&visibility, false)
        .await
        .map(|f| f.len())
        .unwrap_or_default();
    let (mut exact, mut indexed, mut hybrid_exact, mut hybrid_indexed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut recall, mut close) = (0.0, 0.0);
    for (question, qv) in asked {
        let vector_only = FactQuery::new(visibility.clone(), "", Some(qv.clone()), 10);
        let exact_query = FactQuery {
            exact: true,
            ..vector_only.clone()
        };
        let t = Instant::now();
        let truth = store.fact_candidates(&exact_query).await?;
        exact.push(t.elapsed());
        let t = Instant::now();
        let found = store.fact_candidates(&vector_only).await?;
        indexed.push(t.elapsed());
        if !found.approximate {
            return Err(format!("{name}: the search did not use the index").into());
        }
        let top = |c: &thinklio_core::knowledge::Candidates| -> HashSet<FactId> {
            c.vector.iter().take(10).map(|c| c.fact.id).collect()
        };
        // Within ann-benchmarks' tolerance of the exact tenth's distance:
        // generated sentences that differ by a number lie at near-equal
        // distances, and which of two ties comes back is not a miss.
        let tenth = truth
            .vector
            .iter()
            .take(10)
            .filter_map(|c| c.similarity)
            .fold(f32::MAX, f32::min);
        close += found
            .vector
            .iter()
            .take(10)
            .filter(|c| c.similarity.is_some_and(|s| s >= tenth - 1e-3))
            .count() as f64
            / truth.vector.len().clamp(1, 10) as f64;
        let truth = top(&truth);
        recall += truth.intersection(&top(&found)).count() as f64 / truth.len().max(1) as f64;

        let whole = FactQuery::new(visibility.clone(), question.as_str(), Some(qv.clone()), 10);
        let t = Instant::now();
        store
            .search_facts(&FactQuery {
                exact: true,
                ..whole.clone()
            })
            .await?;
        hybrid_exact.push(t.elapsed());
        let t = Instant::now();
        store.search_facts(&whole).await?;
        hybrid_indexed.push(t.elapsed());
    }
    Ok(Row {
        store: name,
        visible,
        import_per_second,
        index,
        exact: p50_p99(exact),
        indexed: p50_p99(indexed),
        hybrid: (p50_p99(hybrid_exact).0, p50_p99(hybrid_indexed).0),
        recall: recall / asked.len().max(1) as f64,
        close: close / asked.len().max(1) as f64,
    })
}

/// Embeds each question on its own, timed, as a search would.
async fn embed_questions(
    qs: &[String],
    embedding: &Embedding,
) -> Result<(Vec<Vec<f32>>, Vec<Duration>, String), BoxError> {
    let embedder: Box<dyn Embedder> = match embedding {
        Embedding::MiniLm(dir) => Box::new(thinklio_llm::MiniLm::load(dir)?),
        Embedding::Offline => Box::new(OfflineEmbedder::new(OFFLINE_DIMS)),
    };
    let name = match embedding {
        Embedding::MiniLm(_) => "all-MiniLM-L6-v2 (candle, in-process)",
        Embedding::Offline => "the offline hashing embedder",
    };
    let (mut vectors, mut times) = (Vec::new(), Vec::new());
    for q in qs {
        let t = Instant::now();
        let v = embedder.embed(std::slice::from_ref(q)).await?;
        times.push(t.elapsed());
        vectors.extend(v);
    }
    Ok((vectors, times, name.to_owned()))
}

pub async fn run(options: &Options) -> Result<Figures, BoxError> {
    let facts = generate(options.facts);
    let texts: Vec<String> = facts.iter().map(text).collect();
    let vectors = match &options.embedding {
        Embedding::Offline => texts
            .iter()
            .map(|t| OfflineEmbedder::new(OFFLINE_DIMS).embed_one(t))
            .collect(),
        minilm => embeddings(&texts, minilm).await?,
    };
    let qs: Vec<String> = questions(&facts, options.facts, options.queries)
        .into_iter()
        .map(|(_, q)| q)
        .collect();
    let (q_vectors, embed_times, embedder) = embed_questions(&qs, &options.embedding).await?;
    let asked: Vec<(String, Vec<f32>)> = qs.into_iter().zip(q_vectors).collect();
    let mut rows = Vec::new();
    eprintln!("large layer: SQLite, {} facts", texts.len());
    let dir = tempfile::tempdir()?;
    let sqlite = SqliteStore::open(dir.path().join("layer.db")).await?;
    rows.push(measure("SQLite file", &sqlite, &texts, &vectors, &asked).await?);
    if options.postgres {
        eprintln!("large layer: PostgreSQL, {} facts", texts.len());
        let schema = format!("bench_layer_{}", uuid::Uuid::now_v7().simple());
        let pg = crate::stores::postgres(&schema).await?;
        rows.push(measure("PostgreSQL", &pg, &texts, &vectors, &asked).await?);
    }
    Ok(Figures {
        facts: options.facts,
        queries: asked.len(),
        dims: vectors.first().map_or(0, Vec::len),
        embedder,
        embed: p50_p99(embed_times),
        rows,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The table of a run.
pub fn report(f: &Figures) -> String {
    let mut out = String::from("## Retrieval over a large layer\n\n");
    let _ = writeln!(
        out,
        "One principal sees all of {} generated facts (the sentences of the retrieval benchmark, every one in its account's layer), {}-dimensional embeddings of {}; {} paraphrased questions. Each store's vector search through its approximate index (SQLite: inverted lists, one per hundred vectors, a tenth read per search; PostgreSQL: pgvector's HNSW, `m` 24, `ef_construction` 200, `ef_search` 300, iterative scan) beside the exact search of the same store in the same run (`FactQuery::exact`: every visible vector compared). *Recall@10* is the share of the exact search's ten nearest that the index's search also returns; *within 0.001* counts, as ann-benchmarks does, a returned fact whose distance is within 0.001 of the exact tenth's (the generated sentences differ by a name or a number, so many lie at nearly equal distances, and which of two ties comes back is not a miss). *Build* is `KnowledgeStore::index_vectors` over the stored vectors (SQLite: k-means and filing every vector; PostgreSQL: `REINDEX CONCURRENTLY` of the HNSW index, which otherwise grows as facts are imported). *Whole search* is `search_facts` with the question's text too (keyword list, ranking). Machine: {}.\n",
        f.facts,
        f.dims,
        f.embedder,
        f.queries,
        crate::harness::machine()
    );
    out.push_str("| store | facts seen | import facts/s | index build | index size | exact p50 / p99 | index p50 / p99 | faster | recall@10 | recall@10 within 0.001 | whole search p50: exact → index |\n");
    out.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for r in &f.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.1} s{} | {} | {} / {} | {} / {} | {:.1}× | {:.3} | {:.3} | {} → {} |",
            r.store,
            r.visible,
            r.import_per_second,
            r.index.took.as_secs_f64(),
            r.index
                .lists
                .map(|l| format!(" ({l} lists)"))
                .unwrap_or_default(),
            mib(r.index.bytes),
            ms(r.exact.0),
            ms(r.exact.1),
            ms(r.indexed.0),
            ms(r.indexed.1),
            r.speedup(),
            r.recall,
            r.close,
            ms(r.hybrid.0),
            ms(r.hybrid.1),
        );
    }
    let _ = writeln!(
        out,
        "\nEmbedding the question with {}, one at a time: p50 {}, p99 {} — to be added to the search's own time above.",
        f.embedder,
        ms(f.embed.0),
        ms(f.embed.1)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn the_large_layer_is_searched_through_the_index_on_sqlite() {
        let options = Options {
            facts: 5_000,
            queries: 10,
            embedding: Embedding::Offline,
            postgres: false,
            write: false,
        };
        let f = run(&options).await.unwrap();
        let row = &f.rows[0];
        assert_eq!(f.queries, 10);
        assert!(row.index.lists.is_some_and(|l| l >= 16), "{row:?}");
        assert!(row.index.bytes > 0 && row.visible > 2_000, "{row:?}");
        assert!(row.recall > 0.5, "{row:?}");
        assert!(report(&f).contains("| SQLite file |"));
    }
}
