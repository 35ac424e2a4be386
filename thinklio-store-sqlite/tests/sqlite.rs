//! SQLite-specific behaviour: the file, its schema, its extensions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use thinklio_core::{AgentId, NewSession, Principal, SessionStore};
use thinklio_store_sqlite::{OpenError, SqliteStore};

#[tokio::test]
async fn sqlite_vec_is_registered() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("v.db")).await.unwrap();
    let version = store.vec_version().await.unwrap();
    assert!(version.starts_with('v'), "{version}");
}

#[tokio::test]
async fn data_survives_reopen_and_migrations_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let session = store
        .open_session(NewSession {
            principal: Principal::local(),
            agent_id: AgentId::new("a"),
            channel: "cli".into(),
            key: Some("k".into()),
        })
        .await
        .unwrap();
    drop(store);
    let reopened = SqliteStore::open(&path).await.unwrap();
    assert_eq!(reopened.schema_version().await.unwrap(), 20);
    assert_eq!(reopened.session(session.id).await.unwrap(), session);
}

#[tokio::test]
async fn a_bad_path_is_a_clear_error() {
    let err = SqliteStore::open("/nonexistent-dir/sub/x.db")
        .await
        .unwrap_err();
    assert!(matches!(err, OpenError::Sqlite { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent-dir/sub/x.db"));
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
    }
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert!(
        matches!(err, OpenError::TooNew { found: 999, .. }),
        "{err:?}"
    );
}

/// A value the file holds that does not read as its type is a typed
/// `StoreError::Corrupt` naming the column, never a panic or a default.
#[tokio::test]
async fn a_corrupt_value_is_a_corrupt_error_naming_its_column() {
    use thinklio_core::{InteractionKind, InteractionStore, NewInteraction, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let session = store
        .open_session(NewSession {
            principal: Principal::local(),
            agent_id: AgentId::new("a"),
            channel: "cli".into(),
            key: None,
        })
        .await
        .unwrap();
    let (interaction, _) = store
        .create_interaction(NewInteraction {
            session_id: session.id,
            principal: session.principal,
            agent_id: session.agent_id.clone(),
            input: "hello".into(),
            images: Vec::new(),
            agent_version: None,
            inbound_id: None,
            parent_interaction_id: None,
            delegation_depth: 0,
            job_id: None,
            kind: InteractionKind::Message,
        })
        .await
        .unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE interactions SET kind = 'telepathy'", [])
        .unwrap();
    match store.interaction(interaction.id).await {
        Err(StoreError::Corrupt(message)) => assert!(message.contains("kind"), "{message}"),
        other => panic!("expected a corrupt error, got {other:?}"),
    }
}
