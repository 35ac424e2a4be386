//! A graceful stop (`Runtime::shutdown`) on a SQLite store shared as
//! several workers share one: a run inside a step finishes that step and
//! stops there, its caller told `runtime.shutting_down`; new messages are
//! refused; the workers stop; the next holder resumes the interaction from
//! its next step, running nothing again. (Across processes on PostgreSQL:
//! `multiprocess.rs`; in one process without sharing, the run goes on to
//! its reply: `http_hardening.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::sync::{Arc, Mutex};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;
use tokio::sync::{Notify, watch};

#[derive(Deserialize, JsonSchema)]
struct Note {
    /// What to note.
    text: String,
}

fn runtime(
    store: SqliteStore,
    notes: &Arc<Mutex<Vec<String>>>,
    gate: Option<(Arc<Notify>, watch::Receiver<bool>)>,
) -> Runtime {
    let model = ScriptedModel::responder(|r| {
        let last = r.messages.last().unwrap();
        if last.role == Role::Tool {
            return ScriptedReply::text(format!("noted: {}", last.content));
        }
        ScriptedReply::tool_call(
            "n1",
            "note",
            serde_json::json!({ "text": last.content }).to_string(),
        )
    });
    let notes = Arc::clone(notes);
    let note = FunctionCapability::builder("note", "Notes something down.")
        .side_effect(SideEffect::External)
        .handler(move |n: Note| {
            let notes = Arc::clone(&notes);
            async move {
                notes.lock().unwrap().push(n.text.clone());
                Ok::<_, String>(n.text)
            }
        });
    // The first model call waits for the gate, announcing it has begun.
    let model: Arc<dyn ChatModel> = match gate {
        Some((begun, open)) => Arc::new(thinklio_tests::Gated::new(model, open, move |_| {
            begun.notify_one()
        })),
        None => Arc::new(model),
    };
    let mut config = RuntimeConfig::default();
    config.shared_store = true;
    Runtime::builder()
        .store(store)
        .config(config)
        .model_arc(model)
        .capability(note)
        .agent(AgentDefinition::new("scribe", "scripted").capabilities(["note"]))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_ends_the_run_at_its_step_and_the_next_start_goes_on_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stop.db");
    let notes = Arc::new(Mutex::new(Vec::new()));
    let (begun, (open, gate)) = (Arc::new(Notify::new()), watch::channel(false));
    let rt = runtime(
        SqliteStore::open(&path).await.unwrap(),
        &notes,
        Some((Arc::clone(&begun), gate)),
    );
    let jobs = rt.spawn_job_worker(Duration::from_millis(50));
    let queue = rt.spawn_queue_worker(Duration::from_millis(50));
    let user = Principal::local();
    let session = rt.open_session(user, "scribe", "cli", None).await.unwrap();

    // A message whose run is inside its first model call.
    let sending = tokio::spawn({
        let rt = rt.clone();
        async move { rt.send(session.id, "milk").await }
    });
    begun.notified().await;
    // Shut down (polled first: no new work from here), then let the call go.
    let (report, ()) = tokio::join!(rt.shutdown(Duration::from_secs(30)), async {
        open.send_replace(true);
    });
    let report = report.unwrap();
    assert_eq!((report.stopped, report.cut_off.len()), (1, 0), "{report:?}");
    let refused = sending.await.unwrap().unwrap_err();
    assert_eq!(refused.code(), ErrorCode::RuntimeShuttingDown);
    assert_eq!(refused.code().as_str(), "runtime.shutting_down");
    // The model call's outcome is kept; nothing after it was begun or run.
    let interaction = rt.sessions().interactions(user, session.id).await.unwrap()[0].clone();
    let steps = rt.sessions().steps(user, interaction.id).await.unwrap();
    let kinds: Vec<(StepKind, StepState)> = steps.iter().map(|s| (s.kind, s.state)).collect();
    assert_eq!(
        kinds,
        [
            (StepKind::Context, StepState::Succeeded),
            (StepKind::Think, StepState::Succeeded)
        ]
    );
    assert!(notes.lock().unwrap().is_empty());
    // No new work; the workers stopped.
    let late = rt.send(session.id, "eggs").await.unwrap_err();
    assert_eq!(late.code(), ErrorCode::RuntimeShuttingDown);
    assert_eq!(
        rt.submit(session.id, "eggs").await.unwrap_err().code(),
        ErrorCode::RuntimeShuttingDown
    );
    tokio::time::timeout(Duration::from_secs(10), async {
        while jobs.is_running() || queue.is_running() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the workers stop with the runtime");
    drop(rt);

    // The next worker claims the session at once (its lease was given
    // back, not left to run out) and goes on from the call: the note is
    // taken once, the model is not asked again for what it answered.
    let rt = runtime(SqliteStore::open(&path).await.unwrap(), &notes, None);
    rt.recover().await.unwrap();
    let mut events = rt.subscribe();
    let _worker = rt.spawn_interaction_worker(Duration::from_secs(60), 2);
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("the next worker continues the interaction")
            .unwrap();
        if event.kind == EventKind::InteractionCompleted
            && event.interaction_id == Some(interaction.id)
        {
            break;
        }
    }
    let steps = rt.sessions().steps(user, interaction.id).await.unwrap();
    thinklio_tests::assert_one_call(&steps, "the interaction stopped by the shutdown");
    assert_eq!(*notes.lock().unwrap(), ["milk"]);
    let history = rt.sessions().history(user, session.id, 10).await.unwrap();
    assert_eq!(history.len(), 1);
    assert!(history[0].assistant.starts_with("noted:"), "{history:?}");
}
