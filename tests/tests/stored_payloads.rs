//! Steps a store holds may come from an older Thinklio, a bug, or a hand
//! that edited the database: whatever their inputs and outputs hold,
//! resuming them answers or fails with a typed error, never a panic. Each
//! case writes an interaction's steps with real payloads whose parts are
//! replaced, leaves the last one `running` or not, and recovers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use proptest::prelude::*;
use serde_json::{Value, json};
use thinklio_core::fuzz;
use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;

/// One stored step: its kind, input and output (`None`: left running).
type Stored = (StepKind, Value, Option<Value>);

fn real_steps() -> Vec<Stored> {
    let call = json!({ "id": "c1", "name": "add", "arguments": "{\"a\":2,\"b\":3}" });
    vec![
        (
            StepKind::Context,
            json!({ "message_bytes": 12 }),
            Some(json!({ "system_prompt_bytes": 0, "history_turns": 0 })),
        ),
        (
            StepKind::Think,
            json!({ "turn": 1, "model": "m" }),
            Some(json!({ "text": "", "tool_calls": [call] })),
        ),
        (
            StepKind::Act,
            json!({ "turn": 1, "index": 0, "call_id": "c1", "name": "add", "arguments": "{\"a\":2,\"b\":3}" }),
            Some(json!({ "result": 5 })),
        ),
        (
            StepKind::Observe,
            json!({ "turn": 1, "index": 0, "call_id": "c1", "act_step": "01a23389-1f71-704e-a6e3-74b4f009f32a" }),
            Some(json!({ "call_id": "c1", "content": "5", "is_error": false })),
        ),
        (
            StepKind::Think,
            json!({ "turn": 2, "model": "m" }),
            Some(json!({ "text": "5", "tool_calls": [] })),
        ),
    ]
}

/// A prefix of the real steps, each input and output kept or with parts
/// replaced (an output by JSON of any shape too), the last maybe left
/// running.
fn stored() -> impl Strategy<Value = Vec<Stored>> {
    let steps = real_steps();
    (1..=steps.len(), any::<bool>()).prop_flat_map(move |(len, last_running)| {
        let parts: Vec<_> = steps[..len]
            .iter()
            .cloned()
            .map(|(kind, input, output)| {
                let output = output.unwrap_or(Value::Null);
                (
                    Just(kind),
                    prop_oneof![Just(input.clone()), fuzz::mutated(input)],
                    prop_oneof![Just(output.clone()), fuzz::mutated(output), fuzz::json()],
                )
            })
            .collect();
        parts.prop_map(move |steps| {
            let last = steps.len() - 1;
            steps
                .into_iter()
                .enumerate()
                .map(|(i, (kind, input, output))| {
                    (
                        kind,
                        input,
                        (!(last_running && i == last)).then_some(output),
                    )
                })
                .collect::<Vec<Stored>>()
        })
    })
}

#[test]
fn any_stored_step_payload_resumes_or_fails_typed() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("payloads.db");
    let store = rt.block_on(SqliteStore::open(&db)).unwrap();
    let runtime = Runtime::builder()
        .store(store.clone())
        .model(ScriptedModel::responder(|_| ScriptedReply::text("ok")))
        .capability(thinklio_tests::add())
        .agent(AgentDefinition::new("a", "m").capabilities(["add"]))
        .build()
        .unwrap();
    let session = rt
        .block_on(runtime.open_session(Principal::local(), "a", "t", None))
        .unwrap();
    proptest!(fuzz::config(), |(steps in stored())| {
        rt.block_on(async {
            let (interaction, _) = store
                .create_interaction(NewInteraction {
                    session_id: session.id,
                    principal: Principal::local(),
                    agent_id: "a".into(),
                    input: "what is 2+3?".into(),
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
            for (seq, (kind, input, output)) in steps.into_iter().enumerate() {
                let (step, _) = store
                    .begin_step(NewStep {
                        interaction_id: interaction.id,
                        seq: seq as u32,
                        kind,
                        mode: StepMode::Immediate,
                        attempt: 1,
                        idempotency_key: format!("{}:{seq}", interaction.id),
                        capability: (kind == StepKind::Act).then(|| "add".to_owned()),
                        side_effect: (kind == StepKind::Act).then_some(SideEffect::ReadOnly),
                        input,
                    })
                    .await
                    .unwrap();
                if let Some(output) = output {
                    let outcome = StepOutcome::Succeeded { output, usage: None };
                    store.finish_step(&step, outcome, None, None).await.unwrap();
                }
            }
            // Answered, or failed with a typed error: both are fine. A
            // panic fails the test.
            let _ = runtime.recover().await;
            let _ = runtime.sessions().state(Principal::local(), interaction.id).await;
        });
    });
}
