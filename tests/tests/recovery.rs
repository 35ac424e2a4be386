//! Recovery of interrupted interactions, in process: a run is cut off in the
//! middle of a step (its task aborted, as a crash would stop it), and a new
//! runtime on the same file resumes it per the durability contract.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;
use tokio::sync::Notify;

/// A capability that hangs on its first call (so the run can be cut off
/// inside it) and answers afterwards; it records every call's key and attempt.
struct Hangs {
    manifest: CapabilityManifest,
    calls: Arc<Mutex<Vec<(String, u32)>>>,
    entered: Arc<Notify>,
}

#[async_trait::async_trait]
impl Capability for Hangs {
    fn manifest(&self) -> &CapabilityManifest {
        &self.manifest
    }

    async fn invoke(
        &self,
        ctx: &InvocationContext,
        _args: serde_json::Value,
    ) -> Result<serde_json::Value, CapabilityError> {
        let first = {
            let mut calls = self.calls.lock().unwrap();
            calls.push((ctx.idempotency_key.clone(), ctx.attempt));
            calls.len() == 1
        };
        if first {
            self.entered.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(json!("charged"))
    }
}

struct Setup {
    dir: tempfile::TempDir,
    calls: Arc<Mutex<Vec<(String, u32)>>>,
    entered: Arc<Notify>,
    /// `None`: the manifest's default, as an author who forgot to say.
    side_effect: Option<SideEffect>,
}

impl Setup {
    fn new(side_effect: impl Into<Option<SideEffect>>) -> Self {
        let side_effect = side_effect.into();
        Self {
            dir: tempfile::tempdir().unwrap(),
            calls: Arc::default(),
            entered: Arc::default(),
            side_effect,
        }
    }

    async fn runtime(&self, model: ScriptedModel) -> Runtime {
        let mut manifest = CapabilityManifest::new(
            "charge",
            "Charges a card.",
            CapabilityKind::Function,
            json!({ "type": "object" }),
        );
        if let Some(class) = self.side_effect {
            manifest.side_effect = class;
        }
        Runtime::builder()
            .store(
                SqliteStore::open(self.dir.path().join("r.db"))
                    .await
                    .unwrap(),
            )
            .model(model)
            .capability(Hangs {
                manifest,
                calls: self.calls.clone(),
                entered: self.entered.clone(),
            })
            .agent(AgentDefinition::new("a", "m").capabilities(["charge"]))
            .build()
            .unwrap()
    }
}

fn model() -> ScriptedModel {
    ScriptedModel::responder(|r| match r.messages.last().unwrap().role {
        Role::User => ScriptedReply::tool_call("c1", "charge", "{}"),
        _ => ScriptedReply::text(format!("result: {}", r.messages.last().unwrap().content)),
    })
}

/// Runs one message until the capability is entered, then aborts the run.
async fn crash_inside_the_capability(setup: &Setup) -> InteractionId {
    let rt = setup.runtime(model()).await;
    let session = rt
        .open_session(Principal::local(), "a", "t", None)
        .await
        .unwrap();
    let run = {
        let rt = rt.clone();
        tokio::spawn(async move { rt.send(session.id, "charge me").await })
    };
    setup.entered.notified().await;
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    let interaction = rt
        .sessions()
        .interactions(Principal::local(), session.id)
        .await
        .unwrap()[0]
        .id;
    let steps = rt
        .sessions()
        .steps(Principal::local(), interaction)
        .await
        .unwrap();
    let last = steps.last().unwrap();
    assert_eq!((last.kind, last.state), (StepKind::Act, StepState::Running));
    interaction
}

#[tokio::test]
async fn an_interrupted_external_call_is_never_repeated_and_the_model_is_told() {
    let setup = Setup::new(SideEffect::External);
    let interaction = crash_inside_the_capability(&setup).await;
    let rt = setup.runtime(model()).await;
    let report = rt.recover().await.unwrap();
    assert_eq!((report.resumed, report.completed), (1, 1));
    assert_eq!(
        setup.calls.lock().unwrap().len(),
        1,
        "the external call ran once"
    );
    let steps = rt
        .sessions()
        .steps(Principal::local(), interaction)
        .await
        .unwrap();
    let act = steps.iter().find(|s| s.kind == StepKind::Act).unwrap();
    assert_eq!(
        act.error.as_ref().unwrap().code,
        "capability.outcome_unknown"
    );
    let observe = steps.iter().find(|s| s.kind == StepKind::Observe).unwrap();
    let seen = observe.output.as_ref().unwrap()["content"]
        .as_str()
        .unwrap();
    assert!(seen.contains("may or may not have taken effect"), "{seen}");
    let reply = rt
        .sessions()
        .reply(Principal::local(), interaction)
        .await
        .unwrap()
        .unwrap();
    assert!(
        reply
            .text
            .starts_with("result: Error (capability.outcome_unknown)"),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn a_capability_nobody_classified_is_never_run_twice() {
    let setup = Setup::new(None);
    let interaction = crash_inside_the_capability(&setup).await;
    let rt = setup.runtime(model()).await;
    rt.recover().await.unwrap();
    assert_eq!(
        setup.calls.lock().unwrap().len(),
        1,
        "run once, never again"
    );
    let steps = rt
        .sessions()
        .steps(Principal::local(), interaction)
        .await
        .unwrap();
    let act = steps.iter().find(|s| s.kind == StepKind::Act).unwrap();
    assert_eq!(act.side_effect, Some(SideEffect::External));
    assert_eq!(
        act.error.as_ref().unwrap().code,
        "capability.outcome_unknown"
    );
}

#[tokio::test]
async fn an_interrupted_safe_call_runs_again_with_the_same_key() {
    let setup = Setup::new(SideEffect::Idempotent);
    let interaction = crash_inside_the_capability(&setup).await;
    let rt = setup.runtime(model()).await;
    rt.recover().await.unwrap();
    let calls = setup.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].0, calls[1].0, "same idempotency key");
    assert_eq!((calls[0].1, calls[1].1), (1, 2), "next attempt");
    let steps = rt
        .sessions()
        .steps(Principal::local(), interaction)
        .await
        .unwrap();
    let acts: Vec<_> = steps.iter().filter(|s| s.kind == StepKind::Act).collect();
    assert_eq!(acts.len(), 2);
    assert_eq!(
        acts[0].error.as_ref().unwrap().code,
        ErrorCode::StepInterrupted
    );
    assert_eq!((acts[1].state, acts[1].attempt), (StepState::Succeeded, 2));
    assert_eq!(acts[0].idempotency_key, acts[1].idempotency_key);
    let reply = rt
        .sessions()
        .reply(Principal::local(), interaction)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.text, "result: charged");
}

/// A model that hangs on its first call.
struct HangingModel {
    calls: AtomicUsize,
    entered: Arc<Notify>,
}

#[async_trait::async_trait]
impl ChatModel for HangingModel {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            self.entered.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(ChatResponse {
            model: request.model.clone(),
            message: ChatMessage::assistant("recovered answer"),
            usage: TokenUsage::new(3, 2),
            finish_reason: FinishReason::Stop,
        })
    }

    async fn chat_stream(&self, _: &ChatRequest) -> Result<ChatStream, ModelError> {
        Err(ModelError::Config("not streamed here".into()))
    }
}

struct Collect(Arc<Mutex<Vec<OutboxMessage>>>);

#[async_trait::async_trait]
impl ReplySink for Collect {
    async fn deliver(&self, message: &OutboxMessage) -> Result<(), DeliveryError> {
        self.0.lock().unwrap().push(message.clone());
        Ok(())
    }
}

#[tokio::test]
async fn an_interrupted_model_call_runs_again_and_the_reply_is_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let entered = Arc::new(Notify::new());
    let model = Arc::new(HangingModel {
        calls: AtomicUsize::new(0),
        entered: entered.clone(),
    });
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let build = |store: SqliteStore| {
        Runtime::builder()
            .store(store)
            .model_arc(model.clone())
            .agent(AgentDefinition::new("a", "m"))
            .reply_sink(Collect(delivered.clone()))
            .build()
            .unwrap()
    };
    let rt = build(SqliteStore::open(&path).await.unwrap());
    let session = rt
        .open_session(Principal::local(), "a", "t", Some("chat"))
        .await
        .unwrap();
    let run = {
        let rt = rt.clone();
        tokio::spawn(async move { rt.send(session.id, "hello").await })
    };
    entered.notified().await;
    run.abort();
    let _ = run.await;
    drop(rt);

    let rt = build(SqliteStore::open(&path).await.unwrap());
    let report = rt.recover().await.unwrap();
    assert_eq!(
        (report.resumed, report.completed, report.delivered),
        (1, 1, 0)
    );
    let sent = delivered.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].text, "recovered answer");
    assert_eq!(sent[0].channel_key.as_deref(), Some("chat"));
    let steps = rt
        .sessions()
        .steps(Principal::local(), sent[0].interaction_id)
        .await
        .unwrap();
    let thinks: Vec<_> = steps.iter().filter(|s| s.kind == StepKind::Think).collect();
    assert_eq!(thinks.len(), 2);
    assert_eq!(
        thinks[0].error.as_ref().unwrap().code,
        ErrorCode::StepInterrupted
    );
    assert_eq!(thinks[1].attempt, 2);
    // A second recovery finds nothing to do and delivers nothing again.
    let again = rt.recover().await.unwrap();
    assert_eq!((again.resumed, again.delivered), (0, 0));
    assert_eq!(delivered.lock().unwrap().len(), 1);
}
