//! The context within a budget: the `context` step shows the newest history
//! turns that fit the agent's budget beside what every request holds, leaves
//! the older ones out and records it, and a run resumed later (here, after a
//! restart while a call waited for a decision) shows the model the same
//! turns.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::sync::Arc;

use serde_json::json;
use thinklio_core::approval::{ApprovalMode, Decision};
use thinklio_core::context::{EstimatedTokens, TokenCounter, message_tokens};
use thinklio_core::step::payload::ContextOutput;
use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;

const BUDGET: u32 = 2_000;

/// Answers at length; `note X` asks for `note(X)`.
fn talker() -> ScriptedModel {
    ScriptedModel::responder(|r| {
        let last = r.messages.last().unwrap();
        if last.role == Role::Tool {
            return ScriptedReply::text("Noted.");
        }
        if let Some(what) = last.content.strip_prefix("note ") {
            return ScriptedReply::tool_call("n1", "note", json!({ "text": what }).to_string());
        }
        ScriptedReply::text(format!("Here is a long answer. {}", "blah ".repeat(80)))
    })
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Note {
    /// What to note.
    text: String,
}

async fn runtime(path: &std::path::Path, model: Arc<ScriptedModel>) -> Runtime {
    Runtime::builder()
        .store(SqliteStore::open(path).await.unwrap())
        .model_arc(model)
        .capability(
            FunctionCapability::builder("note", "Notes something down.")
                .handler(|n: Note| async move { Ok::<_, String>(json!({ "noted": n.text })) }),
        )
        .agent(
            AgentDefinition::new("assistant", "gpt-4o-mini")
                .system_prompt("You are a patient assistant.")
                .capabilities(["note"])
                .history_turns(100)
                .context_budget(BUDGET)
                .approval_mode(ApprovalMode::Draft),
        )
        .build()
        .unwrap()
}

fn request_tokens(request: &ChatRequest) -> usize {
    let counter = EstimatedTokens;
    let messages: usize = request
        .messages
        .iter()
        .map(|m| message_tokens(&counter, &request.model, m))
        .sum();
    messages
        + counter.count(
            &request.model,
            &serde_json::to_string(&request.tools).unwrap(),
        )
}

async fn context_of(rt: &Runtime, interaction: InteractionId) -> ContextOutput {
    rt.sessions()
        .steps(Principal::local(), interaction)
        .await
        .unwrap()
        .iter()
        .find(|s| s.kind == StepKind::Context)
        .unwrap()
        .output_as()
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn history_that_does_not_fit_the_budget_is_left_out_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(talker());
    let rt = runtime(&dir.path().join("c.db"), Arc::clone(&model)).await;
    let s = rt
        .open_session(Principal::local(), "assistant", "chat", None)
        .await
        .unwrap();
    let mut last = None;
    for i in 0..30 {
        let question = format!("Question {i}: {}", "words ".repeat(60));
        last = Some(rt.send(s.id, question).await.unwrap());
    }
    for request in model.requests() {
        assert!(
            request_tokens(&request) <= BUDGET as usize,
            "a request of {} tokens passed the budget of {BUDGET}",
            request_tokens(&request)
        );
    }
    let last = last.unwrap();
    let context = context_of(&rt, last.interaction_id).await;
    assert_eq!(context.context_budget, Some(BUDGET));
    assert_eq!(context.tokens_counted_with.as_deref(), Some("estimate"));
    assert!(context.history_turns > 0, "{context:?}");
    assert!(context.history_left_out > 0, "{context:?}");
    assert_eq!(context.history_turns + context.history_left_out, 29);
    assert!(context.context_tokens.unwrap() <= BUDGET as usize * 3 / 4);
    // The newest turns are the ones shown.
    let sent = model.requests().last().unwrap().clone();
    let users: Vec<&str> = sent
        .messages
        .iter()
        .filter(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .collect();
    assert!(
        users[users.len() - 2].starts_with("Question 28:"),
        "{:?}",
        &users[users.len() - 2][..20]
    );
    assert!(users.last().unwrap().starts_with("Question 29:"));
    assert!(!users.iter().any(|u| u.starts_with("Question 0:")));
}

#[tokio::test]
async fn a_run_resumed_after_a_restart_shows_the_same_turns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let model = Arc::new(talker());
    let rt = runtime(&path, Arc::clone(&model)).await;
    let s = rt
        .open_session(Principal::local(), "assistant", "chat", None)
        .await
        .unwrap();
    for i in 0..12 {
        rt.send(s.id, format!("Question {i}: {}", "words ".repeat(60)))
            .await
            .unwrap();
    }
    let reply = rt.send(s.id, "note buy bread").await.unwrap();
    assert_eq!(reply.waiting.len(), 1);
    let before = model.requests().last().unwrap().clone();
    drop(rt);

    // A new process: the history the run shows is the one its context step chose.
    let model2 = Arc::new(talker());
    let rt = runtime(&path, Arc::clone(&model2)).await;
    rt.approvals()
        .decide(
            Principal::local(),
            reply.waiting[0],
            Decision::Approve,
            "test",
        )
        .await
        .unwrap();
    let after = model2.requests()[0].clone();
    let history = |r: &ChatRequest| -> Vec<String> {
        r.messages
            .iter()
            .filter(|m| m.role != Role::Tool && m.tool_calls.is_empty())
            .map(|m| m.content.clone())
            .collect()
    };
    let shown_before = history(&before);
    let shown_after = history(&after);
    assert_eq!(
        shown_after[..shown_before.len()],
        shown_before[..],
        "the same turns, in the same order"
    );
    let context = context_of(&rt, reply.interaction_id).await;
    assert!(context.history_left_out > 0, "{context:?}");
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Page {
    /// Which page.
    n: u32,
}

#[tokio::test]
async fn a_long_tool_loop_elides_its_oldest_results_for_the_model_and_keeps_them_in_the_steps() {
    let dir = tempfile::tempdir().unwrap();
    // Reads pages 1 to 8, one per turn, then answers.
    let model = Arc::new(ScriptedModel::responder(|r| {
        let read = r.messages.iter().filter(|m| m.role == Role::Tool).count();
        if read < 8 {
            let n = read + 1;
            return ScriptedReply::tool_call(
                format!("p{n}"),
                "read_page",
                json!({ "n": n }).to_string(),
            );
        }
        ScriptedReply::text("I have read the whole book.")
    }));
    let rt = Runtime::builder()
        .store(SqliteStore::open(dir.path().join("l.db")).await.unwrap())
        .model_arc(model.clone())
        .capability(
            FunctionCapability::builder("read_page", "Reads one page of the book.")
                .side_effect(SideEffect::ReadOnly)
                .handler(|p: Page| async move {
                    Ok::<_, String>(format!("Page {}: {}", p.n, "lorem ipsum ".repeat(100)))
                }),
        )
        .agent(
            AgentDefinition::new("reader", "m")
                .capabilities(["read_page"])
                .max_turns(12)
                .context_budget(1_500),
        )
        .build()
        .unwrap();
    let s = rt
        .open_session(Principal::local(), "reader", "chat", None)
        .await
        .unwrap();
    let reply = rt.send(s.id, "read the book").await.unwrap();
    assert_eq!(reply.text, "I have read the whole book.");
    let requests = model.requests();
    assert_eq!(requests.len(), 9);
    for request in &requests {
        assert!(
            request_tokens(request) <= 1_500,
            "a request of {} tokens",
            request_tokens(request)
        );
    }
    let last: Vec<&str> = requests[8]
        .messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| m.content.as_str())
        .collect();
    assert!(
        last[0].starts_with("[An earlier tool result, elided"),
        "{}",
        last[0]
    );
    assert!(last[7].starts_with("Page 8: lorem"), "the newest is whole");
    // The steps keep every page whole.
    let steps = rt
        .sessions()
        .steps(Principal::local(), reply.interaction_id)
        .await
        .unwrap();
    let observed: Vec<step::payload::ObserveOutput> = steps
        .iter()
        .filter(|s| s.kind == StepKind::Observe)
        .map(|s| s.output_as().unwrap().unwrap())
        .collect();
    assert_eq!(observed.len(), 8);
    assert!(
        observed
            .iter()
            .all(|o| o.content.contains("lorem ipsum lorem"))
    );
}
