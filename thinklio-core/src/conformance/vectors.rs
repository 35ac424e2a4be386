//! Checks of the approximate vector index: a principal that sees a large
//! layer is searched through it, finds (nearly) what the exact search
//! finds, finds facts recorded after it was built, and sees nothing of
//! another account through it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use super::*;
use crate::knowledge::{APPROXIMATE_ABOVE, FactQuery, LISTS_FROM};

/// The size both stores index (PostgreSQL has HNSW indexes for 384, 768
/// and 1536 dimensions).
const DIMS: usize = 384;

/// Vectors around 64 random centres, as embeddings of related texts are.
fn clustered(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let centres: Vec<Vec<f32>> = (0..64)
        .map(|_| (0..DIMS).map(|_| rng.f32() - 0.5).collect())
        .collect();
    (0..n)
        .map(|i| {
            centres[i % 64]
                .iter()
                .map(|x| x + (rng.f32() - 0.5) * 0.3)
                .collect()
        })
        .collect()
}

fn account_fact(account: AccountId, i: usize, embedding: Vec<f32>) -> NewFact {
    let mut f = NewFact::new(
        account,
        FactOwner::Account,
        "",
        "",
        format!("catalogue entry {i}"),
    );
    f.embedding = embedding;
    f
}

fn ids(hits: &crate::knowledge::Candidates) -> Vec<FactId> {
    hits.vector.iter().take(10).map(|c| c.fact.id).collect()
}

pub async fn a_large_layer_is_searched_through_the_vector_index<S: Store>(store: S) {
    let me = principal();
    let n = LISTS_FROM + 500;
    assert!(n as i64 > APPROXIMATE_ABOVE);
    let vectors = clustered(n + 40, 11);
    for (chunk, part) in vectors[..n].chunks(1_000).enumerate() {
        let facts = part
            .iter()
            .enumerate()
            .map(|(i, v)| account_fact(me.account, chunk * 1_000 + i, v.clone()))
            .collect();
        store.import_facts(facts, t(1)).await.unwrap();
    }
    // Another account's facts lie right where the queries look.
    let other = AccountId::new();
    let theirs = (0..20)
        .map(|i| account_fact(other, i, vectors[n + i].clone()))
        .collect();
    store.import_facts(theirs, t(1)).await.unwrap();
    // Mine, but retracted; and a team's this principal is not in: each
    // right where a query looks.
    let retracted = store
        .record_fact(
            account_fact(me.account, n + 35, vectors[n + 35].clone()),
            t(1),
        )
        .await
        .unwrap();
    store
        .curate_fact(
            retracted.fact().id,
            Curation::retract(t(1)),
            FactActor::System,
            t(1),
        )
        .await
        .unwrap();
    let mut elsewhere = account_fact(me.account, n + 36, vectors[n + 36].clone());
    elsewhere.owner = FactOwner::Team(TeamId::new());
    let elsewhere = store.record_fact(elsewhere, t(1)).await.unwrap();

    let built = store.index_vectors().await.unwrap();
    let index = built
        .iter()
        .find(|b| b.dims == DIMS)
        .unwrap_or_else(|| panic!("no index of {DIMS} dimensions: {built:?}"));
    assert_eq!(index.vectors, n as u64 + 22);
    assert!(index.bytes > 0, "{index:?}");

    // A fact recorded after the build is found through the index.
    let late = store
        .record_fact(account_fact(me.account, n, vectors[n + 30].clone()), t(2))
        .await
        .unwrap();

    let visibility = Visibility::of(&me, &AgentId::new("agent"));
    let mut found = 0;
    for (q, query) in vectors[n..n + 20]
        .iter()
        .chain(&vectors[n + 30..n + 31])
        .enumerate()
    {
        let search = FactQuery::new(visibility.clone(), "", Some(query.clone()), 10);
        let approximate = store.fact_candidates(&search).await.unwrap();
        let exact = store
            .fact_candidates(&FactQuery {
                exact: true,
                ..search
            })
            .await
            .unwrap();
        assert!(
            approximate.approximate,
            "query {q}: not searched through the index"
        );
        assert!(
            !exact.approximate,
            "query {q}: an exact search used the index"
        );
        assert!(
            approximate
                .vector
                .iter()
                .all(|c| c.fact.account == me.account),
            "query {q}: another account's fact came through the index"
        );
        let truth = ids(&exact);
        assert_eq!(truth.len(), 10);
        found += ids(&approximate)
            .iter()
            .filter(|id| truth.contains(id))
            .count();
        if q == 20 {
            assert_eq!(
                approximate.vector.first().map(|c| c.fact.id),
                Some(late.fact().id),
                "the fact recorded after the build is its own nearest"
            );
        }
    }
    for (q, hidden) in [(n + 35, retracted.fact().id), (n + 36, elsewhere.fact().id)] {
        let search = FactQuery::new(visibility.clone(), "", Some(vectors[q].clone()), 10);
        let hits = store.fact_candidates(&search).await.unwrap();
        assert!(
            hits.approximate,
            "query {q}: not searched through the index"
        );
        assert_eq!(
            hits.vector.len(),
            search.candidates.max(search.k),
            "query {q}: as many as asked for"
        );
        assert!(
            hits.vector.iter().all(|c| c.fact.id != hidden),
            "query {q}: a fact this principal may not see came through the index"
        );
    }
    let history = FactQuery {
        include_history: true,
        ..FactQuery::new(visibility.clone(), "", Some(vectors[n + 35].clone()), 10)
    };
    let hits = store.fact_candidates(&history).await.unwrap();
    assert!(hits.approximate);
    assert_eq!(
        hits.vector.first().map(|c| c.fact.id),
        Some(retracted.fact().id),
        "with history, the retracted fact is its own nearest"
    );
    let recall = found as f64 / 210.0;
    assert!(
        recall >= 0.9,
        "recall@10 against the exact search: {recall}"
    );
}
