//! Conversational memory: long multi-session conversations imported turn by
//! turn (`speaker · said · text`, valid from when it was said), then
//! questions whose evidence is known turns (`benches/data/conversations.txt`,
//! written for the project). Evidence recall@5 and @10 of each way of
//! ranking, over the same store, and the latency of a search with the
//! question's embedding computed inside it.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use thinklio_core::knowledge::{
    Candidates, FactOwner, FactQuery, Fusion, NewFact, Provenance, Visibility,
};
use thinklio_core::{AccountId, Embedder, KnowledgeStore, OfflineEmbedder, Timestamp, UserId};
use thinklio_store_sqlite::SqliteStore;

use crate::BoxError;
use crate::retrieval::{Embedding, percentile};

/// The dataset, compiled in so that every run reads the same one.
pub const DATASET: &str = include_str!("../data/conversations.txt");

/// One conversation of the dataset.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// Its id (`maya`).
    pub id: String,
    /// The user's name, as their turns are spoken.
    pub user: String,
    /// When its questions are asked.
    pub asked: Timestamp,
    /// Its turns, in order.
    pub turns: Vec<Turn>,
    /// Its questions.
    pub questions: Vec<Question>,
}

/// One turn.
#[derive(Debug, Clone)]
pub struct Turn {
    /// `conversation:session:turn`, 1-based.
    pub id: String,
    /// Who said it.
    pub speaker: String,
    /// What was said.
    pub text: String,
    /// When.
    pub at: Timestamp,
    /// The anchors that questions name it by.
    pub anchors: Vec<String>,
}

/// One question.
#[derive(Debug, Clone)]
pub struct Question {
    /// `single_hop`, `multi_hop`, `temporal` or `open_domain`.
    pub category: String,
    /// The question.
    pub text: String,
    /// The ids of the turns that hold its evidence.
    pub evidence: Vec<String>,
}

/// The question categories, in report order.
pub const CATEGORIES: [&str; 4] = ["single_hop", "multi_hop", "temporal", "open_domain"];

fn timestamp(date: &str, time: &str) -> Result<Timestamp, String> {
    let text = format!("{date}T{time}:00Z");
    let t: jiff::Timestamp = text.parse().map_err(|e| format!("`{text}`: {e}"))?;
    Ok(Timestamp::from_millis(t.as_millisecond()))
}

/// Reads the dataset's format (described at the top of the file): every
/// question's anchors must name turns of its conversation, and every
/// conversation must have a user, an `asked` date and questions.
pub fn parse(text: &str) -> Result<Vec<Conversation>, String> {
    let mut out: Vec<Conversation> = Vec::new();
    let mut session = 0usize;
    let mut session_at: Option<Timestamp> = None;
    let mut turn_in_session = 0usize;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let bad = |m: String| format!("line {}: {m}", n + 1);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(id) = line.strip_prefix("conversation ") {
            out.push(Conversation {
                id: id.trim().to_owned(),
                user: String::new(),
                asked: Timestamp::from_millis(0),
                turns: Vec::new(),
                questions: Vec::new(),
            });
            session = 0;
            session_at = None;
            continue;
        }
        let Some(c) = out.last_mut() else {
            return Err(bad("text before the first `conversation`".into()));
        };
        if let Some(name) = line.strip_prefix("user ") {
            c.user = name.trim().to_owned();
        } else if let Some(date) = line.strip_prefix("asked ") {
            c.asked = timestamp(date.trim(), "12:00").map_err(bad)?;
        } else if let Some(when) = line.strip_prefix("session ") {
            let (date, time) = when
                .trim()
                .split_once(' ')
                .ok_or_else(|| bad("a session needs a date and a time".into()))?;
            session += 1;
            turn_in_session = 0;
            session_at = Some(timestamp(date, time).map_err(bad)?);
        } else if let Some(rest) = line.strip_prefix("q ") {
            let parts: Vec<&str> = rest.split('|').map(str::trim).collect();
            let [category, question, anchors] = parts[..] else {
                return Err(bad("a question is `q CATEGORY | question | anchors`".into()));
            };
            if !CATEGORIES.contains(&category) {
                return Err(bad(format!("unknown category `{category}`")));
            }
            let mut evidence = Vec::new();
            for a in anchors.split_whitespace() {
                // An anchor may mark several turns: all are evidence.
                let marked: Vec<&Turn> = c
                    .turns
                    .iter()
                    .filter(|t| t.anchors.iter().any(|x| x == a))
                    .collect();
                if marked.is_empty() {
                    return Err(bad(format!("no turn is marked #{a}")));
                }
                for turn in marked {
                    if !evidence.contains(&turn.id) {
                        evidence.push(turn.id.clone());
                    }
                }
            }
            if evidence.is_empty() {
                return Err(bad("a question needs evidence".into()));
            }
            c.questions.push(Question {
                category: category.to_owned(),
                text: question.to_owned(),
                evidence,
            });
        } else if let Some((speaker, said)) = line.split_once(": ") {
            let at = session_at.ok_or_else(|| bad("a turn before the first session".into()))?;
            turn_in_session += 1;
            let mut anchors = Vec::new();
            let mut words: Vec<&str> = said.split(' ').collect();
            while let Some(a) = words.last().and_then(|w| w.strip_prefix('#')) {
                anchors.push(a.to_owned());
                words.pop();
            }
            c.turns.push(Turn {
                id: format!("{}:{session}:{turn_in_session}", c.id),
                speaker: speaker.to_owned(),
                text: words.join(" "),
                // A minute a turn from the session's start.
                at: Timestamp::from_millis(at.as_millis() + 60_000 * turn_in_session as i64),
                anchors,
            });
        } else {
            return Err(bad(format!("cannot read `{line}`")));
        }
    }
    for c in &out {
        if c.user.is_empty() || c.questions.is_empty() || c.asked.as_millis() == 0 {
            return Err(format!(
                "conversation {} needs a user, an asked date and questions",
                c.id
            ));
        }
    }
    Ok(out)
}

/// What one run measures.
#[derive(Debug, Clone)]
pub struct Options {
    /// The embedder.
    pub embedding: Embedding,
    /// Writes the table to `docs/benchmarks.md`.
    pub write: bool,
}

/// The ways of ranking compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// FTS5 BM25 alone.
    Keyword,
    /// Cosine similarity alone.
    Vector,
    /// Reciprocal rank fusion of both (k = 60, equal weights), then MMR
    /// (λ = 0.75): the ranking before this benchmark existed.
    Hybrid,
    /// The ranking of `FactQuery::new(..).asked_at(..)`: weighted fusion
    /// (k = 10, vectors ×2), turns lifted by their neighbours, the period a
    /// question names searched as a third list, no MMR.
    Ranked,
    /// [`Method::Ranked`] without neighbours.
    NoNeighbours,
    /// [`Method::Ranked`] without the period list.
    NoPeriod,
    /// [`Method::Ranked`] with plain fusion (k = 60, equal weights).
    PlainFusion,
}

impl Method {
    /// Every method, in report order.
    pub const ALL: [Method; 7] = [
        Method::Keyword,
        Method::Vector,
        Method::Hybrid,
        Method::Ranked,
        Method::NoNeighbours,
        Method::NoPeriod,
        Method::PlainFusion,
    ];

    fn label(self) -> &'static str {
        match self {
            Method::Keyword => "BM25 alone",
            Method::Vector => "vectors alone",
            Method::Hybrid => "hybrid: RRF k=60 + MMR 0.75 (before)",
            Method::Ranked => "**weighted RRF + neighbours + period (now)**",
            Method::NoNeighbours => "now, without neighbours",
            Method::NoPeriod => "now, without the period list",
            Method::PlainFusion => "now, with RRF k=60 and equal weights",
        }
    }
}

/// Recall of one method.
#[derive(Debug, Clone, Default)]
pub struct Recall {
    /// Evidence recall@5 per category, then overall (the last entry).
    pub at5: Vec<f64>,
    /// Evidence recall@10, the same way.
    pub at10: Vec<f64>,
}

/// Figures of one run.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Conversations, turns and questions.
    pub conversations: usize,
    /// Turns imported.
    pub turns: usize,
    /// Questions asked.
    pub questions: usize,
    /// Questions per category, in [`CATEGORIES`] order.
    pub per_category: Vec<usize>,
    /// Recall per method.
    pub recall: Vec<(Method, Recall)>,
    /// One search with its query embedding: median and 99th percentile.
    pub latency: (Duration, Duration),
    /// The query embedding alone: median.
    pub embed_p50: Duration,
}

fn user(i: usize) -> UserId {
    UserId::from_uuid(uuid::Uuid::from_u128((4u128 << 64) | i as u128))
}

fn account() -> AccountId {
    AccountId::from_uuid(uuid::Uuid::from_u128(5u128 << 64))
}

/// The facts of one conversation's turns, embedded.
fn facts(i: usize, c: &Conversation, vectors: &[Vec<f32>]) -> Vec<NewFact> {
    c.turns
        .iter()
        .zip(vectors)
        .map(|(t, v)| {
            let mut f = NewFact::new(
                account(),
                FactOwner::User(user(i)),
                &t.speaker,
                "said",
                &t.text,
            );
            f.valid_at = Some(t.at);
            f.provenance = Provenance::External { id: t.id.clone() };
            f.embedding = v.clone();
            f
        })
        .collect()
}

/// The turn ids of the first `k` of a ranked list.
fn top(ids: impl Iterator<Item = String>, k: usize) -> Vec<String> {
    ids.take(k).collect()
}

fn ranked(method: Method, query: &FactQuery, candidates: Candidates) -> Vec<String> {
    let id = |f: &thinklio_core::Fact| f.provenance.external_id().unwrap_or_default().to_owned();
    match method {
        Method::Keyword => candidates.keyword.iter().map(|c| id(&c.fact)).collect(),
        Method::Vector => candidates.vector.iter().map(|c| id(&c.fact)).collect(),
        Method::Hybrid => {
            let mut q = query.clone();
            q.mmr_lambda = 0.75;
            q.fusion = Fusion::reciprocal();
            q.during = None;
            let c = Candidates {
                during: Vec::new(),
                ..candidates
            };
            thinklio_core::knowledge::rank(&q, c)
                .iter()
                .map(|h| id(&h.fact))
                .collect()
        }
        Method::Ranked | Method::NoNeighbours | Method::NoPeriod | Method::PlainFusion => {
            let mut q = query.clone();
            let mut c = candidates;
            match method {
                Method::NoNeighbours => q.fusion.neighbour_weight = 0.0,
                Method::NoPeriod => c.during.clear(),
                Method::PlainFusion => {
                    let neighbours = q.fusion.neighbour_weight;
                    q.fusion = Fusion::reciprocal();
                    q.fusion.neighbour_weight = neighbours;
                    q.fusion.neighbour_window = Fusion::default().neighbour_window;
                }
                _ => {}
            }
            thinklio_core::knowledge::rank(&q, c)
                .iter()
                .map(|h| id(&h.fact))
                .collect()
        }
    }
}

fn share(found: &[String], evidence: &[String]) -> f64 {
    let found: HashSet<&String> = found.iter().collect();
    evidence.iter().filter(|e| found.contains(e)).count() as f64 / evidence.len().max(1) as f64
}

/// Runs the benchmark.
pub async fn run(options: &Options) -> Result<Figures, BoxError> {
    let conversations = parse(DATASET)?;
    let texts: Vec<String> = conversations
        .iter()
        .flat_map(|c| {
            c.turns
                .iter()
                .map(|t| format!("{} said {}", t.speaker, t.text))
        })
        .collect();
    let vectors = crate::retrieval::embeddings(&texts, &options.embedding).await?;
    let embedder: Box<dyn Embedder> = match &options.embedding {
        Embedding::MiniLm(dir) => Box::new(thinklio_llm::MiniLm::load(dir)?),
        Embedding::Offline => Box::new(OfflineEmbedder::default()),
    };

    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("memory.db")).await?;
    let mut at = 0;
    for (i, c) in conversations.iter().enumerate() {
        let news = facts(i, c, &vectors[at..at + c.turns.len()]);
        at += c.turns.len();
        store.import_facts(news, Timestamp::from_millis(1)).await?;
    }

    let mut sums: HashMap<Method, [Vec<f64>; 2]> = HashMap::new();
    let mut latencies = Vec::new();
    let mut embed_times = Vec::new();
    let mut per_category = vec![0usize; CATEGORIES.len()];
    for (i, c) in conversations.iter().enumerate() {
        let visibility = Visibility::user_only(account(), user(i));
        for q in &c.questions {
            let cat = CATEGORIES
                .iter()
                .position(|x| *x == q.category)
                .unwrap_or(0);
            per_category[cat] += 1;
            // What a recall costs: the question's embedding, the store's
            // candidates and the ranking.
            let started = Instant::now();
            let embedding = embedder.embed(std::slice::from_ref(&q.text)).await?.pop();
            embed_times.push(started.elapsed());
            let query = FactQuery::new(visibility.clone(), q.text.as_str(), embedding, 10)
                .asked_at(c.asked);
            let candidates = store.fact_candidates(&query).await?;
            std::hint::black_box(thinklio_core::knowledge::rank(&query, candidates.clone()));
            latencies.push(started.elapsed());
            for method in Method::ALL {
                let list = ranked(method, &query, candidates.clone());
                let entry = sums
                    .entry(method)
                    .or_insert_with(|| [vec![0.0; 5], vec![0.0; 5]]);
                for (slot, k) in [(0, 5), (1, 10)] {
                    let r = share(&top(list.iter().cloned(), k), &q.evidence);
                    entry[slot][cat] += r;
                    entry[slot][4] += r;
                }
            }
        }
    }
    let questions: usize = per_category.iter().sum();
    let mean = |sums: &[f64]| -> Vec<f64> {
        sums.iter()
            .enumerate()
            .map(|(i, s)| {
                let n = if i < 4 { per_category[i] } else { questions };
                s / n.max(1) as f64
            })
            .collect()
    };
    let recall = Method::ALL
        .iter()
        .map(|m| {
            let s = &sums[m];
            (
                *m,
                Recall {
                    at5: mean(&s[0]),
                    at10: mean(&s[1]),
                },
            )
        })
        .collect();
    latencies.sort();
    embed_times.sort();
    Ok(Figures {
        conversations: conversations.len(),
        turns: texts.len(),
        questions,
        per_category,
        recall,
        latency: (percentile(&latencies, 0.5), percentile(&latencies, 0.99)),
        embed_p50: percentile(&embed_times, 0.5),
    })
}

/// The table of a run.
pub fn report(f: &Figures) -> String {
    let mut out = String::from("| ranking |");
    for (c, n) in CATEGORIES.iter().zip(&f.per_category) {
        let _ = write!(out, " {} ({n}) @5 / @10 |", c.replace('_', "-"));
    }
    out.push_str(" all @5 | all @10 |\n| --- |");
    out.push_str(&" ---: |".repeat(CATEGORIES.len() + 2));
    out.push('\n');
    for (m, r) in &f.recall {
        let _ = write!(out, "| {} |", m.label());
        for i in 0..CATEGORIES.len() {
            let _ = write!(out, " {:.2} / {:.2} |", r.at5[i], r.at10[i]);
        }
        let _ = writeln!(out, " {:.3} | {:.3} |", r.at5[4], r.at10[4]);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let _ = write!(
        out,
        "\n{} conversations, {} turns, {} questions. One recall with the question's embedding \
         (now): p50 {:.2} ms, p99 {:.2} ms, of which embedding the question p50 {:.2} ms.\n",
        f.conversations,
        f.turns,
        f.questions,
        ms(f.latency.0),
        ms(f.latency.1),
        ms(f.embed_p50),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_benchmark_runs_offline_and_scores_every_method() {
        let f = run(&Options {
            embedding: Embedding::Offline,
            write: false,
        })
        .await
        .unwrap();
        assert_eq!(f.questions, f.per_category.iter().sum::<usize>());
        assert_eq!(f.recall.len(), Method::ALL.len());
        for (m, r) in &f.recall {
            // Recall is a share, and @10 holds what @5 holds.
            assert!(r.at10[4] >= r.at5[4] && r.at10[4] <= 1.0, "{m:?}: {r:?}");
            assert!(r.at10[4] > 0.1, "{m:?} finds evidence: {r:?}");
        }
        let table = report(&f);
        assert!(table.contains("BM25 alone") && table.contains("turns"));
    }

    #[test]
    fn the_dataset_reads_and_every_question_has_its_evidence() {
        let conversations = parse(DATASET).unwrap();
        assert!(conversations.len() >= 4);
        for c in &conversations {
            assert!(c.turns.len() >= 90, "{} is long: {}", c.id, c.turns.len());
            for cat in CATEGORIES {
                assert!(
                    c.questions.iter().filter(|q| q.category == cat).count() >= 5,
                    "{} asks {cat} questions",
                    c.id
                );
            }
        }
    }

    #[test]
    fn a_question_naming_an_unknown_turn_is_refused() {
        let text = "conversation x\nuser A\nasked 2026-01-02\nsession 2026-01-01 10:00\nA: hi #hi\nq single_hop | hello? | bye\n";
        assert!(parse(text).unwrap_err().contains("#bye"));
        let ok = text.replace("| bye", "| hi");
        assert_eq!(parse(&ok).unwrap()[0].questions[0].evidence, ["x:1:1"]);
    }
}
