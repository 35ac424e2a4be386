//! Stopping an interaction: cancelled in flight, waiting for a decision, or
//! past its agent's deadline. The running call is settled as a crash would
//! settle it, the interaction ends failed with a typed code, nothing is left
//! for recovery, and the session goes on. Kill points are announced by the
//! capability itself (it says it started), never guessed from time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use thinklio_core::approval::{ApprovalMode, Decision};
use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;
use tokio::sync::mpsc;

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[allow(dead_code)] // read by the schema only: the call never gets to send
struct Text {
    /// What to send.
    text: String,
}

/// `send_mail`: external; says it started (with its interaction), then
/// never finishes.
fn hanging_mail(
    started: mpsc::UnboundedSender<InteractionId>,
    calls: Arc<AtomicUsize>,
) -> FunctionCapability {
    FunctionCapability::builder("send_mail", "Sends an email.")
        .side_effect(SideEffect::External)
        .handler_with_context(move |ctx, _: Text| {
            let started = started.clone();
            let calls = Arc::clone(&calls);
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let _ = started.send(ctx.interaction_id);
                std::future::pending::<()>().await;
                Ok::<_, String>(json!("sent"))
            }
        })
}

fn model() -> ScriptedModel {
    ScriptedModel::responder(|r| {
        let last = r.messages.last().unwrap();
        match last.content.strip_prefix("mail ") {
            Some(what) if last.role == Role::User => {
                ScriptedReply::tool_call("m1", "send_mail", json!({ "text": what }).to_string())
            }
            _ => ScriptedReply::text(format!("ok: {}", last.content)),
        }
    })
}

struct Fixture {
    rt: Runtime,
    store: SqliteStore,
    started: mpsc::UnboundedReceiver<InteractionId>,
    calls: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

async fn fixture(agent: AgentDefinition) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("c.db")).await.unwrap();
    let (tx, started) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let rt = Runtime::builder()
        .store(store.clone())
        .model(model())
        .capability(hanging_mail(tx, Arc::clone(&calls)))
        .agent(agent)
        .build()
        .unwrap();
    Fixture {
        rt,
        store,
        started,
        calls,
        _dir: dir,
    }
}

fn agent() -> AgentDefinition {
    AgentDefinition::new("assistant", "m").capabilities(["send_mail"])
}

async fn session(rt: &Runtime) -> Session {
    rt.open_session(Principal::local(), "assistant", "chat", None)
        .await
        .unwrap()
}

/// The steps of an interaction cancelled while its external call ran: the
/// call's outcome unknown, as after a crash, and the interaction closed.
const CANCELLED_IN_FLIGHT: [(StepKind, StepState, Option<ErrorCode>); 4] = [
    (StepKind::Context, StepState::Succeeded, None),
    (StepKind::Think, StepState::Succeeded, None),
    (
        StepKind::Act,
        StepState::Failed,
        Some(ErrorCode::CapabilityOutcomeUnknown),
    ),
    (
        StepKind::Respond,
        StepState::Failed,
        Some(ErrorCode::InteractionCancelled),
    ),
];

fn codes(steps: &[Step]) -> Vec<(StepKind, StepState, Option<ErrorCode>)> {
    steps
        .iter()
        .map(|s| (s.kind, s.state, s.error.as_ref().map(|e| e.code)))
        .collect()
}

#[tokio::test]
async fn cancelling_an_interaction_in_flight_settles_its_running_call_as_a_crash_would() {
    let mut f = fixture(agent()).await;
    let s = session(&f.rt).await;
    let rt = f.rt.clone();
    let sent = tokio::spawn(async move { rt.send(s.id, "mail the report").await });
    // The call announces it started: cancel then.
    let interaction = f.started.recv().await.unwrap();
    let eve = Principal::new(AccountId::new(), UserId::new());
    assert_eq!(
        f.rt.sessions()
            .cancel(eve, interaction)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::DirectoryOtherAccount
    );
    assert!(
        f.rt.sessions()
            .cancel(Principal::local(), interaction)
            .await
            .unwrap()
    );
    let failed = sent.await.unwrap().unwrap_err();
    assert_eq!(failed.code(), ErrorCode::InteractionCancelled, "{failed}");

    let steps = f.store.steps(interaction).await.unwrap();
    assert_eq!(codes(&steps), CANCELLED_IN_FLIGHT);
    assert_eq!(
        f.rt.sessions()
            .state(Principal::local(), interaction)
            .await
            .unwrap(),
        InteractionState::Failed
    );
    // Nothing is left to resume, and the external call never runs again.
    assert!(f.store.unfinished_interactions().await.unwrap().is_empty());
    let report = f.rt.recover().await.unwrap();
    assert_eq!(report.resumed, 0);
    assert_eq!(f.calls.load(Ordering::SeqCst), 1);
    assert!(
        !f.rt
            .sessions()
            .cancel(Principal::local(), interaction)
            .await
            .unwrap(),
        "ended"
    );
    // The session goes on.
    let reply = f.rt.send(s.id, "hello again").await.unwrap();
    assert_eq!(reply.text, "ok: hello again");
}

#[tokio::test]
async fn cancelling_a_call_waiting_for_a_decision_ends_it_and_nothing_can_run_it() {
    let f = fixture(agent().approval_mode(ApprovalMode::Draft)).await;
    let s = session(&f.rt).await;
    let reply = f.rt.send(s.id, "mail the report").await.unwrap();
    assert_eq!(reply.waiting.len(), 1);
    assert!(
        f.rt.sessions()
            .cancel(Principal::local(), reply.interaction_id)
            .await
            .unwrap()
    );
    assert_eq!(
        f.rt.sessions()
            .state(Principal::local(), reply.interaction_id)
            .await
            .unwrap(),
        InteractionState::Failed
    );
    assert!(
        f.rt.approvals()
            .of_session(Principal::local(), s.id)
            .await
            .unwrap()
            .is_empty(),
        "nothing waits"
    );
    let late =
        f.rt.approvals()
            .decide(
                Principal::local(),
                reply.waiting[0],
                Decision::Approve,
                "test",
            )
            .await;
    assert!(late.is_err(), "a cancelled call cannot be approved");
    assert_eq!(f.calls.load(Ordering::SeqCst), 0, "it never ran");
}

#[tokio::test]
async fn an_interaction_past_its_deadline_is_stopped_and_the_session_goes_on() {
    // The call never finishes, so the deadline is what ends the run,
    // however fast or slow the machine.
    let mut f = fixture(agent().interaction_deadline(Duration::from_millis(300))).await;
    let s = session(&f.rt).await;
    let failed = f.rt.send(s.id, "mail the report").await.unwrap_err();
    assert_eq!(
        failed.code(),
        ErrorCode::InteractionDeadlineExceeded,
        "{failed}"
    );
    let RuntimeError::InteractionFailed { interaction, .. } = failed else {
        panic!("{failed:?}")
    };
    let steps = f.store.steps(interaction).await.unwrap();
    let last = steps.last().unwrap();
    assert_eq!(
        (last.kind, last.state, last.error.as_ref().map(|e| e.code)),
        (
            StepKind::Respond,
            StepState::Failed,
            Some(ErrorCode::InteractionDeadlineExceeded)
        )
    );
    assert!(steps.iter().all(|s| s.state.is_terminal()));
    assert!(f.store.unfinished_interactions().await.unwrap().is_empty());
    if f.started.try_recv().is_ok() {
        // Stopped inside the call: its outcome is unknown, never repeated.
        let act = steps.iter().find(|s| s.kind == StepKind::Act).unwrap();
        assert_eq!(
            act.error.as_ref().map(|e| e.code),
            Some(ErrorCode::CapabilityOutcomeUnknown)
        );
    }
    let reply = f.rt.send(s.id, "hello again").await.unwrap();
    assert_eq!(reply.text, "ok: hello again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_cancelling_through_one_process_stops_the_run_of_another_at_once() {
    assert!(
        std::env::var_os("THINKLIO_POSTGRES_URL").is_some(),
        "THINKLIO_POSTGRES_URL is not set: run scripts/postgres.sh start (scripts/test.sh does)"
    );
    let schema = format!("cancel_{}", uuid::Uuid::now_v7().simple());
    let store = thinklio_tests::open_store(&format!("postgres:{schema}"))
        .await
        .unwrap();
    let (tx, mut started) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let worker = || {
        let mut config = RuntimeConfig::default();
        config.shared_store = true;
        Runtime::builder()
            .store_arc(store.clone())
            .model(model())
            .capability(hanging_mail(tx.clone(), Arc::clone(&calls)))
            .agent(agent())
            .config(config)
            .build()
            .unwrap()
    };
    // A runs the conversations; B only takes messages and cancellations
    // (an API process).
    let (a, b) = (worker(), worker());
    let _a_worker = a.spawn_interaction_worker(Duration::from_millis(25), 4);
    let s = session(&b).await;
    let submitted = b.submit(s.id, "mail the report").await.unwrap();
    // A's call announces it started (and never ends on its own).
    let interaction = started.recv().await.unwrap();
    assert_eq!(interaction, submitted.id);

    // Cancelled through B: A stops its run at once, settling the call as a
    // crash would, and B's call returns once A has let go.
    assert!(
        b.sessions()
            .cancel(Principal::local(), interaction)
            .await
            .unwrap()
    );
    let steps = store.steps(interaction).await.unwrap();
    assert_eq!(codes(&steps), CANCELLED_IN_FLIGHT);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The session goes on, on A.
    let next = b.submit(s.id, "hello again").await.unwrap();
    let start = std::time::Instant::now();
    while b
        .sessions()
        .state(Principal::local(), next.id)
        .await
        .unwrap()
        != InteractionState::Completed
    {
        assert!(start.elapsed() < Duration::from_secs(60), "never answered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
