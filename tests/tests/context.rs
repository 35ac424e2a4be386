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

/// The scripted summariser: keeps every `remember: X` it reads (in the
/// previous summary or in the turns) as `Facts: X1; X2`.
fn summarise(input: &str) -> String {
    let mut facts: Vec<String> = Vec::new();
    for line in input.lines() {
        if let Some(rest) = line.strip_prefix("Facts: ") {
            facts.extend(rest.split("; ").map(str::to_owned));
        }
        if let Some((_, fact)) = line.split_once("User: remember: ") {
            facts.push(fact.to_owned());
        }
    }
    format!("Facts: {}", facts.join("; "))
}

/// Answers each message briefly; writes summaries with [`summarise`].
fn chatter() -> ScriptedModel {
    ScriptedModel::responder(|r| {
        if r.messages[0].content == SUMMARY_PROMPT {
            return ScriptedReply::text(summarise(&r.messages[1].content));
        }
        let last = &r.messages.last().unwrap().content;
        ScriptedReply::text(format!("Noted: {}", &last[..last.len().min(40)]))
    })
}

fn summarised_agent() -> AgentDefinition {
    AgentDefinition::new("assistant", "gpt-4o-mini")
        .history_turns(6)
        .summarize_after(4)
        .context_budget(4_000)
}

#[tokio::test]
async fn turn_3_reaches_the_model_at_turn_400_through_the_summary_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("long.db")).await.unwrap();
    let model = Arc::new(chatter());
    let rt = Runtime::builder()
        .store(store.clone())
        .model_arc(model.clone())
        .agent(summarised_agent())
        .build()
        .unwrap();
    let s = rt
        .open_session(Principal::local(), "assistant", "chat", None)
        .await
        .unwrap();
    let mut last = None;
    for turn in 1..=400 {
        let text = match turn {
            3 => "remember: the gate code is 7341".to_owned(),
            _ => format!("Turn {turn}: {}", "chatter ".repeat(turn % 7 + 3)),
        };
        last = Some(rt.send(s.id, text).await.unwrap());
        rt.run_due_tasks().await.unwrap();
    }
    let requests = model.requests();
    let thinks: Vec<&ChatRequest> = requests
        .iter()
        .filter(|r| r.messages[0].content != SUMMARY_PROMPT)
        .collect();
    let summaries: Vec<&ChatRequest> = requests
        .iter()
        .filter(|r| r.messages[0].content == SUMMARY_PROMPT)
        .collect();
    assert_eq!(thinks.len(), 400);
    // The summariser read the code in a turn once, then in each previous summary.
    assert!(
        summaries[0].messages[1]
            .content
            .contains("User: remember: the gate code is 7341")
    );
    assert!(summaries.len() > 50, "{} summaries", summaries.len());
    for later in &summaries[1..] {
        assert!(
            later.messages[1]
                .content
                .contains("Previous summary:\nFacts: the gate code is 7341"),
            "the chain carries it: {}",
            later.messages[1].content
        );
    }
    // Turn 400's request holds it, through the latest summary.
    let last_request = thinks.last().unwrap();
    let summary = last_request
        .messages
        .iter()
        .find(|m| m.role == Role::System && m.content.starts_with("Summary of this conversation"))
        .expect("the summary is shown");
    assert!(summary.content.contains("the gate code is 7341"));
    assert!(
        !last_request
            .messages
            .iter()
            .any(|m| m.content.contains("remember:")),
        "turn 3 itself is long gone"
    );
    // Tokens per think stay under the budget and flat once summaries start.
    let tokens: Vec<usize> = thinks.iter().map(|r| request_tokens(r)).collect();
    assert!(tokens.iter().all(|t| *t <= 4_000));
    let late = &tokens[50..];
    let (lo, hi) = (late.iter().min().unwrap(), late.iter().max().unwrap());
    assert!(hi - lo < 150, "flat once summaries start: {lo}..{hi}");
    // The context step records the summary it used; the chain is stored.
    let context = context_of(&rt, last.unwrap().interaction_id).await;
    let used = store.summary(context.summary.unwrap()).await.unwrap();
    assert!(used.previous.is_some());
    assert_eq!(used.model, "gpt-4o-mini");
    assert!(used.tokens.input_tokens > 0);
}

#[tokio::test]
async fn a_summary_task_run_again_after_a_crash_writes_no_second_summary() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("again.db"))
        .await
        .unwrap();
    let model = Arc::new(chatter());
    let rt = Runtime::builder()
        .store(store.clone())
        .model_arc(model.clone())
        .agent(summarised_agent())
        .build()
        .unwrap();
    let s = rt
        .open_session(Principal::local(), "assistant", "chat", None)
        .await
        .unwrap();
    for turn in 1..=11 {
        rt.send(s.id, format!("Turn {turn}")).await.unwrap();
    }
    // A worker claims the summary task and dies; the task comes again (as
    // its lease runs out), twice over.
    let claimed = store
        .claim(
            SystemClock.now(),
            std::time::Duration::from_secs(60),
            &[SUMMARIZE_TASK.to_owned()],
        )
        .await
        .unwrap()
        .expect("the reply asked for a summary");
    for _ in 0..2 {
        store
            .enqueue(NewTask::new(
                SUMMARIZE_TASK,
                claimed.payload.clone(),
                SystemClock.now(),
            ))
            .await
            .unwrap();
    }
    let run = rt.run_due_tasks().await.unwrap();
    assert_eq!(run.completed, 2);
    let written = model
        .requests()
        .iter()
        .filter(|r| r.messages[0].content == SUMMARY_PROMPT)
        .count();
    assert_eq!(
        written, 1,
        "the second run found the summary and asked no model"
    );
    let latest = store.latest_summary(s.id, i64::MAX).await.unwrap().unwrap();
    assert_eq!(latest.previous, None);
    assert_eq!(
        store
            .latest_summary(s.id, latest.through_seq)
            .await
            .unwrap(),
        None,
        "one summary"
    );
    // Forgetting the user deletes it.
    let forgotten = rt
        .directory()
        .forget_user(
            Principal::local(),
            Principal::local().account,
            Principal::local().user,
        )
        .await
        .unwrap();
    assert_eq!(forgotten.summaries, 1);
}
