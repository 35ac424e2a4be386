//! Vector search on the HNSW index, for principals who see many facts: it
//! finds (nearly) what exact search finds, and still only what they may see.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::collections::HashSet;

use thinklio_core::knowledge::{FactOwner, FactQuery, NewFact, Visibility, cosine};
use thinklio_core::{AccountId, KnowledgeStore, OfflineEmbedder, Timestamp, UserId};
use thinklio_store_postgres::{PostgresOptions, PostgresStore};

const WORDS: [&str; 24] = [
    "river", "granite", "violin", "harbour", "orchid", "lantern", "glacier", "saffron", "comet",
    "meadow", "copper", "falcon", "tundra", "velvet", "canyon", "ember", "lagoon", "quartz",
    "thistle", "monsoon", "cedar", "pebble", "aurora", "juniper",
];

fn sentence(i: usize) -> (String, String) {
    let w = |k: usize| WORDS[(i / k) % WORDS.len()];
    (
        format!("note {i}"),
        format!("{} {} {} {}", w(1), w(3), w(7), w(13)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_visible_facts_are_searched_on_the_index_within_visibility() {
    let url = std::env::var("THINKLIO_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "THINKLIO_POSTGRES_URL is not set: run scripts/postgres.sh start (scripts/test.sh does)"
        )
    });
    let schema = format!("ann_{}", uuid::Uuid::now_v7().simple());
    let store = PostgresStore::connect_with(&url, PostgresOptions::default().schema(schema))
        .await
        .unwrap();
    let embedder = OfflineEmbedder::default();
    let (mine, theirs) = (AccountId::new(), AccountId::new());
    let user = UserId::new();
    let mut facts = Vec::new();
    let mut news = Vec::new();
    for i in 0..3000 {
        let (subject, value) = sentence(i);
        // Every fifth fact belongs to another account: never to be found.
        let account = if i % 5 == 0 { theirs } else { mine };
        let mut f = NewFact::new(account, FactOwner::Account, &subject, "is", &value);
        f.embedding = embedder.embed_one(&f.text());
        if account == mine {
            facts.push((subject.clone(), f.embedding.clone()));
        }
        news.push(f);
    }
    for chunk in news.chunks(500) {
        store
            .import_facts(chunk.to_vec(), Timestamp::from_millis(1))
            .await
            .unwrap();
    }
    let visibility = Visibility {
        account: mine,
        account_layer: true,
        agent: None,
        teams: vec![],
        user: Some(user),
    };
    let (mut found, mut expected) = (0, 0);
    for q in 0..25 {
        let (_, value) = sentence(q * 37 + 11);
        let question = format!("which note is about {value}?");
        let qv = embedder.embed_one(&question);
        let mut exact: Vec<(f32, &String)> =
            facts.iter().map(|(s, v)| (cosine(&qv, v), s)).collect();
        exact.sort_by(|a, b| b.0.total_cmp(&a.0));
        let truth: HashSet<&String> = exact.iter().take(10).map(|(_, s)| *s).collect();
        let query = FactQuery::new(visibility.clone(), question.as_str(), Some(qv), 10);
        let candidates = store.fact_candidates(&query).await.unwrap();
        assert!(
            candidates.vector.len() >= 10,
            "the index scan yields enough rows"
        );
        assert!(
            candidates
                .vector
                .iter()
                .chain(&candidates.keyword)
                .all(|c| c.fact.account == mine),
            "nothing of another account"
        );
        let got: HashSet<&String> = candidates
            .vector
            .iter()
            .take(10)
            .map(|c| &c.fact.subject)
            .collect();
        found += truth.intersection(&got).count();
        expected += truth.len();
    }
    // The index is what answered: the plan walks the HNSW index of the
    // embeddings' size (an exact scan would pass the recall check too).
    let (_, value) = sentence(11);
    let qv = embedder.embed_one(&value);
    let query = FactQuery::new(visibility.clone(), value.as_str(), Some(qv.clone()), 10);
    let plan = store
        .explain_indexed_search(&query)
        .await
        .unwrap()
        .expect("this many visible facts are searched on the index");
    assert!(
        plan.contains("Index Scan using fact_vectors_hnsw_384"),
        "the plan does not use the HNSW index:\n{plan}"
    );
    assert!(!plan.contains("Seq Scan on fact_vectors"), "{plan}");
    // A principal who sees few facts is searched exactly, not on the index.
    let few = Visibility {
        account: AccountId::new(),
        account_layer: true,
        agent: None,
        teams: vec![],
        user: Some(user),
    };
    let query = FactQuery::new(few, value.as_str(), Some(qv), 10);
    assert_eq!(store.explain_indexed_search(&query).await.unwrap(), None);
    let recall = found as f64 / expected as f64;
    println!(
        "HNSW recall@10 over {} visible facts: {recall:.3}",
        facts.len()
    );
    assert!(recall >= 0.9, "recall@10 {recall:.3}");
}
