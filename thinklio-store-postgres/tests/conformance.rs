//! The store conformance suite against a real PostgreSQL server: the one
//! `scripts/postgres.sh start` runs (its URL in `THINKLIO_POSTGRES_URL`).
//! Each check gets a schema of its own, so the checks run in parallel on one
//! database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use thinklio_store_postgres::{PostgresOptions, PostgresStore};

async fn fresh() -> (PostgresStore, ()) {
    let url = std::env::var("THINKLIO_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "THINKLIO_POSTGRES_URL is not set: run `scripts/postgres.sh install && \
             export THINKLIO_POSTGRES_URL=$(scripts/postgres.sh start)` (scripts/test.sh does)"
        )
    });
    let schema = format!("conformance_{}", uuid::Uuid::now_v7().simple());
    let store = PostgresStore::connect_with(&url, PostgresOptions::default().schema(schema))
        .await
        .unwrap_or_else(|e| panic!("cannot open the PostgreSQL store at {url}: {e}"));
    (store, ())
}

thinklio_core::store_conformance_tests!(fresh());

/// A database written before facts had a cardinality (schema 5) keeps
/// every fact when this build connects and migrates it.
#[tokio::test]
async fn a_migrated_store_keeps_every_fact() {
    use thinklio_core::conformance;
    let url = std::env::var("THINKLIO_POSTGRES_URL").expect("THINKLIO_POSTGRES_URL");
    let schema = format!("migration_{}", uuid::Uuid::now_v7().simple());
    let options = PostgresOptions::default().schema(schema.clone());
    drop(
        PostgresStore::connect_at_schema_version(&url, options.clone(), 5)
            .await
            .unwrap(),
    );
    let legacy = conformance::legacy_facts();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("SET search_path TO \"{schema}\", public"))
        .await
        .unwrap();
    for f in &legacy {
        client
            .execute(
                "INSERT INTO facts (id, account_id, owner_key, layer, owner_id, subject, \
                 predicate, value, slot, text, norm_text, confidence, provenance, locked, \
                 valid_at, invalid_at, created_at, expired_at, superseded_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                 $17, $18, $19)",
                &[
                    &f.id.to_string(),
                    &f.account.to_string(),
                    &f.owner.key(),
                    &f.layer().as_str(),
                    &f.owner.id(),
                    &f.subject,
                    &f.predicate,
                    &f.value,
                    &f.slot(),
                    &f.text(),
                    &thinklio_core::knowledge::normalise(&f.text()),
                    &f64::from(f.confidence),
                    &serde_json::to_string(&f.provenance).unwrap(),
                    &f.locked,
                    &f.valid_at.as_millis(),
                    &f.invalid_at.map(|t| t.as_millis()),
                    &f.created_at.as_millis(),
                    &f.expired_at.map(|t| t.as_millis()),
                    &f.superseded_by.map(|id| id.to_string()),
                ],
            )
            .await
            .unwrap();
    }
    let store = PostgresStore::connect_with(&url, options).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 16);
    conformance::a_migrated_store_keeps_every_fact(store, &legacy).await;
}
