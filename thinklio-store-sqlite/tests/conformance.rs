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

/// A store written before facts had a cardinality (schema 10) keeps every
/// fact when this build opens and migrates it.
#[tokio::test]
async fn a_migrated_store_keeps_every_fact() {
    use thinklio_core::conformance;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v10.db");
    SqliteStore::create_at_schema_version(&path, 10).unwrap();
    let legacy = conformance::legacy_facts();
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        for f in &legacy {
            c.execute(
                "INSERT INTO facts (id, account_id, owner_key, layer, owner_id, subject, \
                 predicate, value, slot, norm_text, confidence, provenance, locked, valid_at, \
                 invalid_at, created_at, expired_at, superseded_by) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                 ?17, ?18)",
                rusqlite::params![
                    f.id.to_string(),
                    f.account.to_string(),
                    f.owner.key(),
                    f.layer().as_str(),
                    f.owner.id(),
                    f.subject,
                    f.predicate,
                    f.value,
                    f.slot(),
                    thinklio_core::knowledge::normalise(&f.text()),
                    f64::from(f.confidence),
                    serde_json::to_string(&f.provenance).unwrap(),
                    f.locked,
                    f.valid_at.as_millis(),
                    f.invalid_at.map(|t| t.as_millis()),
                    f.created_at.as_millis(),
                    f.expired_at.map(|t| t.as_millis()),
                    f.superseded_by.map(|id| id.to_string()),
                ],
            )
            .unwrap();
        }
    }
    let store = SqliteStore::open(&path).await.unwrap();
    conformance::a_migrated_store_keeps_every_fact(store, &legacy).await;
}
