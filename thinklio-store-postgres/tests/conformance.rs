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
