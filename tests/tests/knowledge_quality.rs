//! Retrieval quality with the local all-MiniLM-L6-v2 model: 60 facts about
//! one person and a paraphrased question for each, written so that most
//! questions share no word with their fact. The right fact must be in the
//! top 5 of the scoped hybrid search for at least 90% of the questions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use serde::Deserialize;
use thinklio_core::*;
use thinklio_llm::{MiniLm, ScriptedModel};
use thinklio_store_sqlite::SqliteStore;

#[derive(Deserialize)]
struct Case {
    subject: String,
    predicate: String,
    value: String,
    question: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_finds_the_right_fact_in_the_top_5_for_90_percent_of_paraphrases() {
    let cases: Vec<Case> = include_str!("../data/recall.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(cases.len() >= 50);
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::builder()
        .store(SqliteStore::open(dir.path().join("q.db")).await.unwrap())
        .model(ScriptedModel::new([]))
        .embedder(MiniLm::load(thinklio_tests::minilm_dir()).unwrap())
        .agent(AgentDefinition::new("assistant", "m"))
        .build()
        .unwrap();
    let me = Principal::local();
    let someone = Principal::new(me.account, UserId::new());
    let mut facts: Vec<NewFact> = cases
        .iter()
        .map(|c| {
            NewFact::new(
                me.account,
                FactOwner::User(me.user),
                &c.subject,
                &c.predicate,
                &c.value,
            )
        })
        .collect();
    // Another user's facts on the same topics: invisible, so they must not
    // crowd the results.
    facts.extend(cases.iter().map(|c| {
        NewFact::new(
            someone.account,
            FactOwner::User(someone.user),
            "Bo",
            &c.predicate,
            format!("not {}", c.value),
        )
    }));
    let writes = rt
        .knowledge()
        .import(Actor::Account(me.account), facts, 32, |_| {})
        .await
        .unwrap();
    let ids: Vec<FactId> = writes
        .iter()
        .take(cases.len())
        .map(|w| w.fact().id)
        .collect();

    let agent = AgentId::new("assistant");
    let mut found = 0;
    let mut misses = Vec::new();
    for (case, id) in cases.iter().zip(&ids) {
        let hits = rt
            .knowledge()
            .search(&me, &agent, &case.question, 5)
            .await
            .unwrap();
        assert!(
            hits.iter().all(|h| h.fact.subject == "Ada"),
            "only the user's own facts"
        );
        if hits.iter().any(|h| h.fact.id == *id) {
            found += 1;
        } else {
            misses.push(format!(
                "{} -> {:?}",
                case.question,
                hits.first().map(|h| h.fact.text())
            ));
        }
    }
    let rate = found as f64 / cases.len() as f64;
    println!("top-5 recall: {found}/{} = {rate:.3}", cases.len());
    assert!(
        rate >= 0.9,
        "top-5 recall {rate:.3} < 0.9; misses: {misses:#?}"
    );
}

/// Texts are batched by length for speed; each still gets its own vector,
/// in the order given, the same as when embedded alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_mixed_lengths_returns_each_texts_own_vector_in_order() {
    let model = MiniLm::load(thinklio_tests::minilm_dir()).unwrap();
    let texts: Vec<String> = (0..70)
        .map(|i| {
            let words = [
                "Ada", "likes", "green", "tea", "in", "Lyon", "on", "Sundays",
            ];
            (0..=(i * 7) % 40)
                .map(|j| words[(i + j) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let together = model.embed(&texts).await.unwrap();
    assert_eq!(together.len(), texts.len());
    for (i, t) in texts.iter().enumerate().step_by(7) {
        let alone = model
            .embed(std::slice::from_ref(t))
            .await
            .unwrap()
            .remove(0);
        let similarity = knowledge::cosine(&alone, &together[i]);
        assert!(similarity > 0.999, "text {i}: {similarity}");
    }
}
