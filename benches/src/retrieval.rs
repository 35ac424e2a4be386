//! Scoped hybrid retrieval: generated facts of 1,000 users in 50 teams (plus
//! agent and account facts), embedded with all-MiniLM-L6-v2 (once, cached
//! under `target/bench-cache/`), searched by each principal; latency of the
//! store's search and recall against exact brute-force search over the same
//! visible facts.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thinklio_core::knowledge::{FactOwner, FactQuery, FactWrite, NewFact, Visibility, cosine};
use thinklio_core::{
    AccountId, AgentId, Embedder, FactId, KnowledgeStore, OfflineEmbedder, TeamId, Timestamp,
    UserId,
};
use thinklio_store_sqlite::SqliteStore;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub const USERS: usize = 1000;
pub const TEAMS: usize = 50;
pub const AGENTS: usize = 5;

/// Which embedder the run uses.
#[derive(Debug, Clone)]
pub enum Embedding {
    /// all-MiniLM-L6-v2 from this directory.
    MiniLm(PathBuf),
    /// The offline hashing embedder (smoke runs).
    Offline,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub sizes: Vec<usize>,
    pub queries: usize,
    pub embedding: Embedding,
    pub write: bool,
}

/// One generated fact.
#[derive(Debug, Clone)]
pub(crate) struct Generated {
    pub(crate) owner: FactOwner,
    pub(crate) subject: String,
    pub(crate) predicate: String,
    pub(crate) value: String,
}

const PREDICATES: &[&str] = &[
    "lives in",
    "works on",
    "prefers",
    "owns",
    "is learning",
    "manages",
    "visited",
    "is allergic to",
    "drives",
    "reads",
    "plays",
    "collects",
    "studied",
    "volunteers at",
    "supports",
    "cooks",
];
const VALUES: &[&str] = &[
    "Lyon",
    "Porto",
    "the billing service",
    "green tea",
    "a vintage bicycle",
    "Japanese",
    "the data team",
    "Iceland",
    "peanuts",
    "an electric van",
    "science fiction",
    "the cello",
    "old maps",
    "marine biology",
    "the food bank",
    "the local football club",
    "Vietnamese food",
    "Oslo",
    "the mobile app",
    "dark roast coffee",
    "a sailing boat",
    "Portuguese",
    "the security audit",
    "Kyoto",
    "shellfish",
    "a cargo bike",
    "poetry",
    "chess",
    "rare stamps",
    "architecture",
    "the animal shelter",
    "jazz",
    "Thai curries",
    "Quito",
    "the search index",
    "oolong",
    "a camper van",
    "Korean",
    "the hiring plan",
    "Marrakesh",
];

/// Facts of 1,000 users in 50 teams, 5 agents and one account: about 70%
/// user facts, 28% team facts, 1.5% agent facts and 0.5% account facts
/// (agent and account facts are curated by people, so there are few).
pub(crate) fn generate(n: usize) -> Vec<Generated> {
    let mut rng = fastrand::Rng::with_seed(0x7411_1c10);
    (0..n)
        .map(|i| {
            let roll = rng.u32(..1000);
            let (owner, subject) = if roll < 700 {
                let u = rng.usize(..USERS);
                (FactOwner::User(user(u)), format!("person {u}"))
            } else if roll < 980 {
                let t = rng.usize(..TEAMS);
                (FactOwner::Team(team(t)), format!("team {t}"))
            } else if roll < 995 {
                let a = rng.usize(..AGENTS);
                (
                    FactOwner::Agent(agent(a)),
                    format!("service {}", rng.usize(..200)),
                )
            } else {
                (FactOwner::Account, format!("policy {}", rng.usize(..200)))
            };
            Generated {
                owner,
                subject,
                predicate: PREDICATES[rng.usize(..PREDICATES.len())].to_owned(),
                value: format!("{} {}", VALUES[rng.usize(..VALUES.len())], i % 97),
            }
        })
        .collect()
}

fn user(u: usize) -> UserId {
    UserId::from_uuid(uuid_of(1, u))
}

fn team(t: usize) -> TeamId {
    TeamId::from_uuid(uuid_of(2, t))
}

fn agent(a: usize) -> AgentId {
    AgentId::new(format!("agent-{a}"))
}

fn uuid_of(kind: u128, n: usize) -> uuid::Uuid {
    uuid::Uuid::from_u128((kind << 64) | n as u128)
}

pub(crate) fn account() -> AccountId {
    AccountId::from_uuid(uuid_of(3, 0))
}

/// The principal of user `u`: its team is `u % 50`, its agent `u % 5`.
pub(crate) fn visibility(u: usize) -> Visibility {
    Visibility {
        account: account(),
        account_layer: true,
        agent: Some(agent(u % AGENTS)),
        teams: vec![team(u % TEAMS)],
        user: Some(user(u)),
    }
}

pub(crate) fn text(g: &Generated) -> String {
    thinklio_core::knowledge::fact_text(&g.subject, &g.predicate, &g.value)
}

/// Embeddings of `texts`, from the cache when it holds them (keyed by a
/// hash of the texts and the embedder), else computed and cached.
pub(crate) async fn embeddings(
    texts: &[String],
    embedding: &Embedding,
) -> Result<Vec<Vec<f32>>, BoxError> {
    let embedder: Box<dyn Embedder> = match embedding {
        Embedding::MiniLm(dir) => Box::new(thinklio_llm::MiniLm::load(dir)?),
        Embedding::Offline => {
            return Ok(texts
                .iter()
                .map(|t| OfflineEmbedder::default().embed_one(t))
                .collect());
        }
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for t in texts {
        for b in t.bytes().chain([0]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    let dims = embedder.dimensions();
    let cache = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-cache")
        .join(format!("minilm-{}-{h:016x}.f32", texts.len()));
    if let Ok(bytes) = std::fs::read(&cache)
        && bytes.len() == texts.len() * dims * 4
    {
        let floats: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        return Ok(floats.chunks(dims).map(<[f32]>::to_vec).collect());
    }
    let started = Instant::now();
    let mut out = Vec::with_capacity(texts.len());
    for (i, chunk) in texts.chunks(512).enumerate() {
        out.extend(embedder.embed(chunk).await?);
        if i % 20 == 0 {
            eprintln!(
                "  embedded {}/{} in {:.0?}",
                out.len(),
                texts.len(),
                started.elapsed()
            );
        }
    }
    if let Some(dir) = cache.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let bytes: Vec<u8> = out.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(&cache, bytes)?;
    Ok(out)
}

/// Figures of one size.
#[derive(Debug, Clone)]
pub struct Figures {
    pub facts: usize,
    pub visible_mean: f64,
    pub queries: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub mean: Duration,
    pub vector_recall: f64,
    pub hybrid_overlap: f64,
    pub import_per_second: f64,
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn measure(
    n: usize,
    facts: &[Generated],
    vectors: &[Vec<f32>],
    questions: &[(usize, String, Vec<f32>)],
) -> Result<Figures, BoxError> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("facts.db")).await?;
    let started = Instant::now();
    let mut ids: Vec<FactId> = Vec::with_capacity(n);
    let mut current: Vec<bool> = Vec::with_capacity(n);
    let mut index: HashMap<FactId, usize> = HashMap::new();
    for (chunk, vecs) in facts[..n].chunks(1000).zip(vectors[..n].chunks(1000)) {
        let news: Vec<NewFact> = chunk
            .iter()
            .zip(vecs)
            .map(|(g, v)| {
                let mut f = NewFact::new(
                    account(),
                    g.owner.clone(),
                    &g.subject,
                    &g.predicate,
                    &g.value,
                );
                f.embedding = v.clone();
                f
            })
            .collect();
        for w in store.import_facts(news, Timestamp::from_millis(1)).await? {
            let i = ids.len();
            ids.push(w.fact().id);
            index.insert(w.fact().id, i);
            match &w {
                FactWrite::Added(_) => current.push(true),
                FactWrite::Superseded { replaced, .. } => {
                    current.push(true);
                    for r in replaced {
                        if let Some(&j) = index.get(&r.id) {
                            current[j] = false;
                        }
                    }
                }
                _ => current.push(false),
            }
        }
    }
    let import_per_second = n as f64 / started.elapsed().as_secs_f64();

    let mut latencies = Vec::with_capacity(questions.len());
    let (mut recall_sum, mut overlap_sum, mut visible_sum) = (0.0, 0.0, 0usize);
    for (u, question, qv) in questions {
        let v = visibility(*u);
        // Exact brute force over the same visible, current facts.
        let mut exact: Vec<(f32, usize)> = (0..n)
            .filter(|&i| current[i] && sees(&v, &facts[i].owner))
            .map(|i| (cosine(qv, &vectors[i]), i))
            .collect();
        visible_sum += exact.len();
        exact.sort_by(|a, b| b.0.total_cmp(&a.0));
        let truth: HashSet<FactId> = exact.iter().take(10).map(|&(_, i)| ids[i]).collect();

        let query = FactQuery::new(v.clone(), question.as_str(), Some(qv.clone()), 10);
        let t = Instant::now();
        let hits = store.search_facts(&query).await?;
        latencies.push(t.elapsed());
        let candidates = store.fact_candidates(&query).await?;
        let vector_top: HashSet<FactId> = candidates
            .vector
            .iter()
            .take(10)
            .map(|c| c.fact.id)
            .collect();
        let hybrid_top: HashSet<FactId> = hits.iter().map(|h| h.fact.id).collect();
        let denominator = truth.len().max(1) as f64;
        recall_sum += truth.intersection(&vector_top).count() as f64 / denominator;
        overlap_sum += truth.intersection(&hybrid_top).count() as f64 / denominator;
    }
    let q = questions.len().max(1) as f64;
    let mut sorted = latencies.clone();
    sorted.sort();
    Ok(Figures {
        facts: n,
        visible_mean: visible_sum as f64 / q,
        queries: questions.len(),
        p50: percentile(&sorted, 0.5),
        p99: percentile(&sorted, 0.99),
        mean: latencies.iter().sum::<Duration>()
            / u32::try_from(latencies.len().max(1)).unwrap_or(1),
        vector_recall: recall_sum / q,
        hybrid_overlap: overlap_sum / q,
        import_per_second,
    })
}

pub(crate) fn sees(v: &Visibility, owner: &FactOwner) -> bool {
    match owner {
        FactOwner::Account => v.account_layer,
        FactOwner::Agent(a) => v.agent.as_ref() == Some(a),
        FactOwner::Team(t) => v.teams.contains(t),
        FactOwner::User(u) => v.user == Some(*u),
    }
}

/// Questions: for a random user, a paraphrase asking about one of the facts
/// it may see.
pub(crate) fn questions(facts: &[Generated], n: usize, count: usize) -> Vec<(usize, String)> {
    let mut rng = fastrand::Rng::with_seed(0x9e57);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let u = rng.usize(..USERS);
        let v = visibility(u);
        let pick = rng.usize(..n);
        // The next fact from `pick` this user may see.
        if let Some(g) = facts[pick..n].iter().find(|g| sees(&v, &g.owner)) {
            let q = match g.predicate.as_str() {
                "lives in" => format!("Where is the home of {}?", g.subject),
                "works on" => format!("What project is {} busy with?", g.subject),
                "is allergic to" => format!("What must {} avoid eating?", g.subject),
                p => format!("What does {} say about {p}?", g.subject),
            };
            out.push((u, q));
        }
    }
    out
}

pub async fn run(options: &Options) -> Result<Vec<Figures>, BoxError> {
    let largest = options.sizes.iter().copied().max().unwrap_or(0);
    let facts = generate(largest);
    let texts: Vec<String> = facts.iter().map(text).collect();
    eprintln!(
        "embedding {} fact sentences ({:?})",
        texts.len(),
        options.embedding
    );
    let vectors = embeddings(&texts, &options.embedding).await?;
    let mut out = Vec::new();
    for &n in &options.sizes {
        let qs = questions(&facts, n, options.queries);
        let q_texts: Vec<String> = qs.iter().map(|(_, q)| q.clone()).collect();
        let q_vectors = embeddings(&q_texts, &options.embedding).await?;
        let questions: Vec<(usize, String, Vec<f32>)> = qs
            .into_iter()
            .zip(q_vectors)
            .map(|((u, q), v)| (u, q, v))
            .collect();
        eprintln!("searching {n} facts with {} questions", questions.len());
        out.push(measure(n, &facts, &vectors, &questions).await?);
    }
    Ok(out)
}

pub fn report(figures: &[Figures]) -> String {
    let mut out = String::from(
        "| facts | visible to a principal (mean) | queries | p50 | p99 | mean | vector recall@10 | hybrid top-10 ∩ exact top-10 | import facts/s |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for f in figures {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.3} | {:.3} | {:.0} |",
            f.facts,
            f.visible_mean,
            f.queries,
            f.p50.as_secs_f64() * 1e3,
            f.p99.as_secs_f64() * 1e3,
            f.mean.as_secs_f64() * 1e3,
            f.vector_recall,
            f.hybrid_overlap,
            f.import_per_second,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_retrieval_benchmark_runs_and_its_vector_search_is_exact() {
        let figures = run(&Options {
            sizes: vec![3000],
            queries: 30,
            embedding: Embedding::Offline,
            write: false,
        })
        .await
        .unwrap();
        assert_eq!(figures.len(), 1);
        let f = &figures[0];
        assert!(f.visible_mean > 10.0, "{f:?}");
        // Exact search: only ties broken the other way may differ.
        assert!(
            f.vector_recall > 0.98,
            "exact search finds the exact top 10: {f:?}"
        );
        assert!(report(&figures).contains("| 3000 |"));
    }
}
