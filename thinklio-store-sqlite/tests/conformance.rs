//! The store conformance suite against a real SQLite file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use thinklio_store_sqlite::SqliteStore;

thinklio_core::store_conformance_tests!(async {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("conformance.db"))
        .await
        .unwrap();
    (store, dir)
});
