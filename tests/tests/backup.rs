//! Backups taken while a runtime writes, restored: everything committed
//! before the backup began is in the restored store, and a runtime opened
//! on it resumes the interactions that were unfinished at that moment. On
//! SQLite through the store's online backup (SQLite's backup API); on
//! PostgreSQL with `pg_dump` and `pg_restore` into a new database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;
use tokio::sync::Notify;

/// The model: with `slow`, a message starting with `slow` waits in its
/// model call (announced) for good; anything else is echoed.
struct Model {
    echo: ScriptedModel,
    slow: Option<Arc<Notify>>,
}

#[async_trait]
impl ChatModel for Model {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        if let Some(slow) = &self.slow
            && request
                .messages
                .last()
                .is_some_and(|m| m.role == Role::User && m.content.starts_with("slow"))
        {
            slow.notify_one();
            std::future::pending::<()>().await;
        }
        self.echo.chat(request).await
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, ModelError> {
        self.echo.chat_stream(request).await
    }
}

fn runtime(store: Arc<dyn Store>, slow: Option<Arc<Notify>>, shared: bool) -> Runtime {
    let echo = ScriptedModel::responder(|r| {
        ScriptedReply::text(format!("echo: {}", r.messages.last().unwrap().content))
    });
    let mut config = RuntimeConfig::default();
    config.shared_store = shared;
    Runtime::builder()
        .store_arc(store)
        .config(config)
        .model(Model { echo, slow })
        .agent(AgentDefinition::new("echo", "scripted"))
        .build()
        .unwrap()
}

/// Interactions of `session` that completed.
async fn completed(store: &dyn Store, session: SessionId) -> Vec<InteractionId> {
    let mut done = Vec::new();
    for i in store.interactions_of_session(session).await.unwrap() {
        if InteractionState::derive(&store.steps(i.id).await.unwrap())
            == InteractionState::Completed
        {
            done.push(i.id);
        }
    }
    done
}

/// Writes while a backup is taken: a session answered message after message,
/// and one interaction left waiting in its model call. Returns what had
/// completed before `take` was called, and the slow one.
async fn write_while<F, Fut>(
    rt: &Runtime,
    store: &Arc<dyn Store>,
    slow: &Arc<Notify>,
    take: F,
) -> (Vec<InteractionId>, InteractionId)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let user = Principal::local();
    let busy = rt
        .open_session(user, "echo", "test", Some("busy"))
        .await
        .unwrap();
    let quiet = rt
        .open_session(user, "echo", "test", Some("quiet"))
        .await
        .unwrap();
    for n in 0..20 {
        rt.send(busy.id, format!("before {n}")).await.unwrap();
    }
    // One run left inside its model call.
    let pending = tokio::spawn({
        let rt = rt.clone();
        async move { rt.send(quiet.id, "slow one").await }
    });
    slow.notified().await;
    // A writer that goes on during the backup.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = tokio::spawn({
        let (rt, writing) = (rt.clone(), Arc::clone(&writing));
        async move {
            let mut n = 0;
            while writing.load(Ordering::SeqCst) {
                rt.send(busy.id, format!("during {n}")).await.unwrap();
                n += 1;
            }
            n
        }
    });
    let before = completed(&**store, busy.id).await;
    assert!(before.len() >= 20);
    take().await;
    writing.store(false, Ordering::SeqCst);
    let during = writer.await.unwrap();
    println!("{during} messages answered while the backup was taken");
    pending.abort();
    let slow_one = store.interactions_of_session(quiet.id).await.unwrap()[0].id;
    (before, slow_one)
}

/// A runtime on the restored store has what was committed before the
/// backup and finishes the interaction that was unfinished.
async fn check_restored(
    restored: Arc<dyn Store>,
    before: &[InteractionId],
    slow_one: InteractionId,
    shared: bool,
) {
    for id in before {
        assert_eq!(
            InteractionState::derive(&restored.steps(*id).await.unwrap()),
            InteractionState::Completed,
            "an interaction completed before the backup is in it"
        );
    }
    assert_eq!(
        InteractionState::derive(&restored.steps(slow_one).await.unwrap()),
        InteractionState::Running,
        "the slow one was unfinished at the backup"
    );
    let rt = runtime(Arc::clone(&restored), None, shared);
    let report = rt.recover().await.unwrap();
    if shared {
        // On a shared store the interaction worker takes the work over.
        let _worker = rt.spawn_interaction_worker(Duration::from_millis(20), 4);
        let mut events = rt.subscribe();
        while InteractionState::derive(&restored.steps(slow_one).await.unwrap())
            != InteractionState::Completed
        {
            let _ = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
        }
    } else {
        assert!(report.resumed >= 1, "{report:?}");
    }
    let steps = restored.steps(slow_one).await.unwrap();
    assert_eq!(
        InteractionState::derive(&steps),
        InteractionState::Completed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_backup_taken_while_writing_restores_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.db");
    let store = SqliteStore::open(&live).await.unwrap();
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    let slow = Arc::new(Notify::new());
    let rt = runtime(Arc::clone(&shared), Some(Arc::clone(&slow)), false);
    let copy = dir.path().join("backup.db");
    let (before, slow_one) = write_while(&rt, &shared, &slow, || async {
        let report = store.backup(&copy).await.unwrap();
        assert!(report.pages > 0 && report.bytes > 0, "{report:?}");
    })
    .await;
    // Never over an existing file.
    assert!(matches!(
        store.backup(&copy).await.unwrap_err(),
        thinklio_store_sqlite::BackupError::Exists(_)
    ));
    drop(rt);

    let restored_at = dir.path().join("restored.db");
    SqliteStore::restore(&copy, &restored_at).await.unwrap();
    let restored: Arc<dyn Store> = Arc::new(SqliteStore::open(&restored_at).await.unwrap());
    check_restored(restored, &before, slow_one, false).await;
}

/// The PostgreSQL client programs (`pg_dump`, `pg_restore`, `createdb`):
/// from `THINKLIO_PG_BIN` (`scripts/test.sh` sets it), or Debian's place.
fn pg_program(name: &str) -> PathBuf {
    let dir = std::env::var_os("THINKLIO_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    let program = dir.join(name);
    assert!(
        program.exists(),
        "{} is missing: scripts/postgres.sh install puts it there",
        program.display()
    );
    program
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_dump_taken_while_writing_restores_into_a_new_database_and_resumes() {
    let url = std::env::var("THINKLIO_POSTGRES_URL").expect(
        "THINKLIO_POSTGRES_URL is not set: run scripts/postgres.sh start (scripts/test.sh does)",
    );
    let schema = format!("backup_{}", uuid::Uuid::now_v7().simple());
    let store = thinklio_tests::open_store(&format!("postgres:{schema}"))
        .await
        .unwrap();
    let slow = Arc::new(Notify::new());
    let rt = runtime(Arc::clone(&store), Some(Arc::clone(&slow)), true);
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("thinklio.dump");
    let (before, slow_one) = write_while(&rt, &store, &slow, || async {
        let out = tokio::process::Command::new(pg_program("pg_dump"))
            .args(["--format=custom", "--schema", &schema, "--file"])
            .arg(&dump)
            .arg(&url)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await;
    drop(rt);

    // A new database on the same server, restored from the dump.
    let database = format!("restored_{}", uuid::Uuid::now_v7().simple());
    let (base, _) = url.rsplit_once('/').unwrap();
    let restored_url = format!("{base}/{database}");
    let out = tokio::process::Command::new(pg_program("createdb"))
        .args(["--maintenance-db", &url, &database])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "createdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A dump of one schema carries no extension: pgvector's type comes first.
    let out = tokio::process::Command::new(pg_program("psql"))
        .args(["--no-psqlrc", "--quiet", "--command"])
        .arg("CREATE EXTENSION IF NOT EXISTS vector")
        .arg(&restored_url)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tokio::process::Command::new(pg_program("pg_restore"))
        .args(["--no-owner", "--exit-on-error", "--dbname", &restored_url])
        .arg(&dump)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "pg_restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let options = thinklio_store_postgres::PostgresOptions::default().schema(&schema);
    let restored_store =
        thinklio_store_postgres::PostgresStore::connect_with(&restored_url, options)
            .await
            .unwrap();
    // The dump holds the leases of the runtime that served it then.
    assert!(restored_store.forget_leases().await.unwrap() >= 1);
    let restored: Arc<dyn Store> = Arc::new(restored_store);
    check_restored(restored, &before, slow_one, true).await;
}
