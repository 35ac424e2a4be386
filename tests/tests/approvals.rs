//! A person in the loop: calls that wait for a decision, decided one by
//! one, durably, by the right people. Several tests are named after bugs
//! other runtimes shipped (work redone on resume, the wrong call approved,
//! parallel approvals hanging, a decision lost with a stored session).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::sync::{Arc, Mutex};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use thinklio_core::approval::{ApprovalMode, Decision};
use thinklio_core::model::ToolCall;
use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;
use thinklio_tests::until;

#[derive(Deserialize, JsonSchema)]
struct Item {
    /// What to add.
    text: String,
}

/// What the capabilities did, in order.
type Done = Arc<Mutex<Vec<String>>>;

/// `add_todo(text)`: external (at most once); records each run.
fn add_todo(done: &Done) -> FunctionCapability {
    add_todo_in(done, StepMode::Immediate)
}

fn add_todo_in(done: &Done, mode: StepMode) -> FunctionCapability {
    let done = Arc::clone(done);
    FunctionCapability::builder("add_todo", "Adds an item to the user's todo list.")
        .default_mode(mode)
        .handler(move |args: Item| {
            let done = Arc::clone(&done);
            async move {
                done.lock().unwrap().push(format!("add {}", args.text));
                Ok::<_, String>(json!({ "added": args.text }))
            }
        })
}

/// `lookup(text)`: read-only; records each run.
fn lookup(done: &Done) -> FunctionCapability {
    let done = Arc::clone(done);
    FunctionCapability::builder("lookup", "Looks something up.")
        .side_effect(SideEffect::ReadOnly)
        .handler(move |args: Item| {
            let done = Arc::clone(&done);
            async move {
                done.lock().unwrap().push(format!("lookup {}", args.text));
                Ok::<_, String>(json!({ "found": args.text }))
            }
        })
}

/// The model: `add X` proposes `add_todo(X)`; `add X and Y` proposes both in
/// one turn; `check X then add Y` looks X up, then adds Y; a tool result is
/// answered with every result and error it was given.
fn model() -> ScriptedModel {
    ScriptedModel::responder(|r| {
        let last = r.messages.last().unwrap();
        if last.role == Role::Tool {
            let results: Vec<String> = r
                .messages
                .iter()
                .rev()
                .take_while(|m| m.role == Role::Tool)
                .map(|m| m.content.clone())
                .collect();
            let asked = r
                .messages
                .iter()
                .rev()
                .find(|m| m.role == Role::User)
                .unwrap();
            if let Some((_, add)) = asked.content.split_once(" then add ")
                && !results.iter().any(|c| c.contains("added"))
                && !results.iter().any(|c| c.contains("Error"))
            {
                return ScriptedReply::tool_call(
                    "a1",
                    "add_todo",
                    json!({ "text": add }).to_string(),
                );
            }
            return ScriptedReply::text(format!("Done: {}", results.join(" | ")));
        }
        let text = last.content.clone();
        if let Some(task) = text.strip_prefix("delegate ") {
            return ScriptedReply::tool_call(
                "d1",
                "ask_helper",
                json!({ "task": task }).to_string(),
            );
        }
        if let Some(rest) = text.strip_prefix("check ") {
            let what = rest.split(" then ").next().unwrap();
            return ScriptedReply::tool_call("l1", "lookup", json!({ "text": what }).to_string());
        }
        if let Some(items) = text.strip_prefix("add ") {
            let calls = items
                .split(" and ")
                .enumerate()
                .map(|(i, item)| {
                    ToolCall::new(
                        format!("a{i}"),
                        "add_todo",
                        json!({ "text": item }).to_string(),
                    )
                })
                .collect();
            return ScriptedReply::ToolCalls {
                text: String::new(),
                calls,
            };
        }
        ScriptedReply::text(format!("ok: {text}"))
    })
}

fn agent(mode: ApprovalMode) -> AgentDefinition {
    AgentDefinition::new("assistant", "m")
        .capabilities(["add_todo", "lookup"])
        .approval_mode(mode)
}

async fn runtime(path: &std::path::Path, done: &Done, mode: ApprovalMode) -> Runtime {
    Runtime::builder()
        .store(SqliteStore::open(path).await.unwrap())
        .model(model())
        .capability(add_todo(done))
        .capability(lookup(done))
        .agent(agent(mode))
        .build()
        .unwrap()
}

async fn session(rt: &Runtime) -> Session {
    rt.open_session(Principal::local(), "assistant", "chat", None)
        .await
        .unwrap()
}

/// Decides about `step` as the session's user, through the channel `test`.
async fn decide(
    rt: &Runtime,
    step: StepId,
    decision: Decision,
) -> Result<approval::StoredDecision, RuntimeError> {
    rt.approvals()
        .decide(Principal::local(), step, decision, "test")
        .await
}

fn done_list(done: &Done) -> Vec<String> {
    done.lock().unwrap().clone()
}

async fn reply_text(rt: &Runtime, interaction: InteractionId) -> Option<String> {
    rt.sessions()
        .reply(Principal::local(), interaction)
        .await
        .unwrap()
        .map(|m| m.text)
}

#[tokio::test]
async fn a_draft_call_waits_and_runs_once_when_approved() {
    let dir = tempfile::tempdir().unwrap();
    let done = Done::default();
    let rt = runtime(&dir.path().join("a.db"), &done, ApprovalMode::Draft).await;
    let s = session(&rt).await;
    let mut events = rt.subscribe();

    let reply = rt.send(s.id, "add milk").await.unwrap();
    assert_eq!(reply.waiting.len(), 1, "{reply:?}");
    assert!(reply.text.is_empty());
    assert!(
        done_list(&done).is_empty(),
        "nothing runs without a decision"
    );
    assert_eq!(
        rt.sessions()
            .state(Principal::local(), reply.interaction_id)
            .await
            .unwrap(),
        InteractionState::Waiting
    );
    let pending = rt
        .approvals()
        .of_session(Principal::local(), s.id)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].step_id, reply.waiting[0]);
    assert_eq!(pending[0].capability, "add_todo");
    assert_eq!(pending[0].arguments, json!({ "text": "milk" }));
    let mut requested = None;
    while let Ok(e) = events.try_recv() {
        if e.kind == EventKind::ApprovalRequested {
            requested = Some(e);
        }
    }
    let requested = requested.expect("an approval.requested event");
    assert_eq!(requested.step_id, Some(reply.waiting[0]));
    assert_eq!(requested.payload["arguments"], json!({ "text": "milk" }));

    let decided = decide(&rt, reply.waiting[0], Decision::Approve)
        .await
        .unwrap();
    assert_eq!(decided.by.user, Some(Principal::local().user));
    assert_eq!(decided.channel, "test");
    assert_eq!(done_list(&done), ["add milk"]);
    let text = reply_text(&rt, reply.interaction_id)
        .await
        .expect("the reply");
    assert!(text.contains("added"), "{text}");
    assert!(
        std::iter::from_fn(|| events.try_recv().ok()).any(|e| e.kind == EventKind::ApprovalDecided)
    );

    // The same decision again is the same decision; another is a conflict.
    let again = decide(&rt, reply.waiting[0], Decision::Approve)
        .await
        .unwrap();
    assert_eq!(again, decided);
    let conflict = decide(&rt, reply.waiting[0], Decision::Reject { reason: None })
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), ErrorCode::StoreConflict);
    assert_eq!(done_list(&done), ["add milk"], "still once");
    assert!(
        rt.approvals()
            .of_session(Principal::local(), s.id)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn approving_one_of_two_parallel_calls_runs_that_one_only() {
    let dir = tempfile::tempdir().unwrap();
    let done = Done::default();
    let rt = runtime(&dir.path().join("p.db"), &done, ApprovalMode::Draft).await;
    let s = session(&rt).await;
    let reply = rt.send(s.id, "add eggs and flour").await.unwrap();
    assert_eq!(reply.waiting.len(), 2, "both calls are proposed at once");
    let pending = rt
        .approvals()
        .of_session(Principal::local(), s.id)
        .await
        .unwrap();
    let flour = pending
        .iter()
        .find(|p| p.arguments == json!({ "text": "flour" }))
        .unwrap()
        .step_id;
    let eggs = pending
        .iter()
        .find(|p| p.arguments == json!({ "text": "eggs" }))
        .unwrap()
        .step_id;

    // Approving the second names the second: nothing runs while the first waits.
    decide(&rt, flour, Decision::Approve).await.unwrap();
    assert!(done_list(&done).is_empty(), "{:?}", done_list(&done));
    assert_eq!(reply_text(&rt, reply.interaction_id).await, None);
    decide(
        &rt,
        eggs,
        Decision::Reject {
            reason: Some("we have eggs".into()),
        },
    )
    .await
    .unwrap();
    assert_eq!(done_list(&done), ["add flour"]);
    let text = reply_text(&rt, reply.interaction_id)
        .await
        .expect("the reply");
    assert!(
        text.contains("approval.rejected") && text.contains("we have eggs"),
        "{text}"
    );
    assert!(text.contains(r#""added":"flour""#), "{text}");
}

#[tokio::test]
async fn edited_arguments_are_checked_then_run_as_edited() {
    let dir = tempfile::tempdir().unwrap();
    let done = Done::default();
    let rt = runtime(&dir.path().join("e.db"), &done, ApprovalMode::Draft).await;
    let s = session(&rt).await;
    let reply = rt.send(s.id, "add milk").await.unwrap();
    let step = reply.waiting[0];
    let bad = decide(
        &rt,
        step,
        Decision::Edit {
            arguments: json!({ "txet": "oat milk" }),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(bad.code(), ErrorCode::ApprovalInvalidArguments);
    assert!(done_list(&done).is_empty());
    decide(
        &rt,
        step,
        Decision::Edit {
            arguments: json!({ "text": "oat milk" }),
        },
    )
    .await
    .unwrap();
    assert_eq!(done_list(&done), ["add oat milk"]);
}

#[tokio::test]
async fn work_done_before_the_pause_is_not_done_again_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let done = Done::default();
    let rt = runtime(&dir.path().join("w.db"), &done, ApprovalMode::Draft).await;
    let s = session(&rt).await;
    let reply = rt.send(s.id, "check stock then add tea").await.unwrap();
    assert_eq!(
        done_list(&done),
        ["lookup stock"],
        "read-only calls run in draft"
    );
    assert_eq!(reply.waiting.len(), 1);
    decide(&rt, reply.waiting[0], Decision::Approve)
        .await
        .unwrap();
    assert_eq!(done_list(&done), ["lookup stock", "add tea"]);
}

#[tokio::test]
async fn a_decision_survives_a_restart_and_a_crash_after_it_runs_the_action_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let done = Done::default();
    let (session_id, interaction, step) = {
        let rt = runtime(&path, &done, ApprovalMode::Draft).await;
        let s = session(&rt).await;
        let reply = rt.send(s.id, "add milk").await.unwrap();
        (s.id, reply.interaction_id, reply.waiting[0])
    };
    // A new process sees the proposal and takes the decision; the process
    // stops before the call runs (the decision is stored, nothing else).
    {
        let store = SqliteStore::open(&path).await.unwrap();
        use thinklio_core::store::ApprovalStore;
        let rt = runtime(&path, &done, ApprovalMode::Draft).await;
        let pending = rt
            .approvals()
            .of_session(Principal::local(), session_id)
            .await
            .unwrap();
        assert_eq!(
            pending[0].step_id, step,
            "the proposal survived the restart"
        );
        let by = thinklio_core::approval::DecidedBy::user(&Principal::local());
        let new = thinklio_core::approval::NewDecision::new(step, Decision::Approve, by, "test");
        store.decide(new).await.unwrap();
        assert!(done_list(&done).is_empty());
    }
    // The next start runs the decided call, once, and answers.
    let rt = runtime(&path, &done, ApprovalMode::Draft).await;
    let report = rt.recover().await.unwrap();
    assert_eq!(report.completed, 1, "{report:?}");
    assert_eq!(done_list(&done), ["add milk"]);
    assert!(
        reply_text(&rt, interaction)
            .await
            .unwrap()
            .contains("added")
    );
    let again = rt.recover().await.unwrap();
    assert_eq!(again.resumed, 0);
    assert_eq!(done_list(&done), ["add milk"], "once");
}

#[tokio::test]
async fn a_waiting_call_holds_nothing_and_a_new_message_is_answered_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let done = Done::default();
    let rt = runtime(&dir.path().join("n.db"), &done, ApprovalMode::Draft).await;
    let s = session(&rt).await;
    let waiting = rt.send(s.id, "add milk").await.unwrap();
    let other = rt.send(s.id, "hello").await.unwrap();
    assert_eq!(other.text, "ok: hello");
    // Recovery leaves the waiting one alone: it runs nothing.
    let report = rt.recover().await.unwrap();
    assert_eq!(report.resumed, 0, "{report:?}");
    assert!(done_list(&done).is_empty());
    decide(&rt, waiting.waiting[0], Decision::Approve)
        .await
        .unwrap();
    assert_eq!(done_list(&done), ["add milk"]);
}

#[tokio::test]
async fn observe_mode_runs_read_only_calls_and_only_proposes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let done = Done::default();
    let rt = runtime(&dir.path().join("o.db"), &done, ApprovalMode::Observe).await;
    let s = session(&rt).await;
    let reply = rt.send(s.id, "check stock then add tea").await.unwrap();
    assert!(reply.waiting.is_empty());
    assert_eq!(done_list(&done), ["lookup stock"]);
    assert!(
        reply.text.contains("approval.observe_only"),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn autopilot_asks_only_where_the_capability_demands_it() {
    let dir = tempfile::tempdir().unwrap();
    let done = Done::default();
    let store = SqliteStore::open(dir.path().join("c.db")).await.unwrap();
    let rt = Runtime::builder()
        .store(store)
        .model(model())
        .capability(add_todo_in(&done, StepMode::Interactive))
        .capability(lookup(&done))
        .agent(agent(ApprovalMode::Autopilot))
        .build()
        .unwrap();
    let s = session(&rt).await;
    let free = rt.send(s.id, "check stock then add tea").await.unwrap();
    assert_eq!(done_list(&done), ["lookup stock"]);
    assert_eq!(free.waiting.len(), 1, "add_todo asks even on autopilot");
}

#[tokio::test]
async fn an_unanswered_call_expires_and_the_model_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let done = Done::default();
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let rt = Runtime::builder()
        .store(
            SqliteStore::open_with(
                dir.path().join("x.db"),
                thinklio_store_sqlite::SqliteOptions::default().clock(clock.clone()),
            )
            .await
            .unwrap(),
        )
        .clock(clock.clone())
        .model(model())
        .capability(add_todo(&done))
        .capability(lookup(&done))
        .agent(agent(ApprovalMode::Draft).approval_timeout(Duration::from_secs(60)))
        .build()
        .unwrap();
    let s = session(&rt).await;
    let reply = rt.send(s.id, "add milk").await.unwrap();
    assert_eq!(rt.approvals().expire_due().await.unwrap(), 0, "not yet");
    clock.advance(Duration::from_secs(61));
    // The job worker's pass expires it.
    assert_eq!(rt.run_due_jobs().await.unwrap().approvals_expired, 1);
    assert!(done_list(&done).is_empty());
    let text = reply_text(&rt, reply.interaction_id)
        .await
        .expect("the reply");
    assert!(text.contains("approval.expired"), "{text}");
}

#[tokio::test]
async fn nobody_of_another_account_sees_or_decides() {
    let dir = tempfile::tempdir().unwrap();
    let done = Done::default();
    let rt = runtime(&dir.path().join("x.db"), &done, ApprovalMode::Draft).await;
    let s = session(&rt).await;
    let reply = rt.send(s.id, "add milk").await.unwrap();
    let stranger = Principal::new(AccountId::new(), UserId::new());
    let seen = rt.approvals().of_session(stranger, s.id).await.unwrap_err();
    assert_eq!(seen.code(), ErrorCode::DirectoryOtherAccount);
    let decided = rt
        .approvals()
        .decide(stranger, reply.waiting[0], Decision::Approve, "test")
        .await
        .unwrap_err();
    assert_eq!(decided.code(), ErrorCode::DirectoryOtherAccount);
    let listed = rt
        .approvals()
        .of_account(Actor::Account(stranger.account), Principal::local().account)
        .await
        .unwrap_err();
    assert_eq!(listed.code(), ErrorCode::DirectoryOtherAccount);
    assert!(done_list(&done).is_empty());
    assert_eq!(
        rt.approvals()
            .of_account(
                Actor::Account(Principal::local().account),
                Principal::local().account
            )
            .await
            .unwrap()
            .len(),
        1
    );
}

/// A runtime where `boss` (in `boss_mode`) delegates to the assistant (in
/// `helper_mode`) through `ask_helper`.
async fn delegating_runtime(
    path: &std::path::Path,
    done: &Done,
    boss_mode: ApprovalMode,
    helper_mode: ApprovalMode,
) -> Runtime {
    Runtime::builder()
        .store(SqliteStore::open(path).await.unwrap())
        .model(model())
        .capability(add_todo(done))
        .capability(lookup(done))
        .agent(
            AgentDefinition::new("boss", "m")
                .capabilities(["ask_helper"])
                .approval_mode(boss_mode),
        )
        .agent(agent(helper_mode))
        .delegate(Delegate::new(
            "assistant",
            "ask_helper",
            "Asks the assistant.",
        ))
        .build()
        .unwrap()
}

#[tokio::test]
async fn approving_inside_a_delegate_resumes_it_without_rerunning_steps() {
    let dir = tempfile::tempdir().unwrap();
    let done = Done::default();
    let rt = delegating_runtime(
        &dir.path().join("d.db"),
        &done,
        ApprovalMode::Autopilot,
        ApprovalMode::Draft,
    )
    .await;
    let s = rt
        .open_session(Principal::local(), "boss", "chat", None)
        .await
        .unwrap();
    let mut events = rt.subscribe();
    let reply = rt
        .send(s.id, "delegate check stock then add tea")
        .await
        .unwrap();
    // The delegate looked stock up, then paused on its call, and the boss with it.
    assert_eq!(done_list(&done), ["lookup stock"]);
    assert!(reply.text.is_empty(), "{reply:?}");
    assert_eq!(reply.waiting.len(), 1, "{reply:?}");
    let boss = reply.interaction_id;
    assert_eq!(
        rt.sessions().state(Principal::local(), boss).await.unwrap(),
        InteractionState::Waiting
    );
    let pending = rt
        .approvals()
        .of_session(Principal::local(), s.id)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1, "only the delegate's call is decided");
    assert_eq!(pending[0].step_id, reply.waiting[0]);
    assert_eq!(pending[0].capability, "add_todo");
    let child = pending[0].interaction_id;
    assert_ne!(child, boss, "the call waiting is the delegate's");
    let kinds: Vec<EventKind> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&EventKind::ApprovalRequested), "{kinds:?}");
    assert!(kinds.contains(&EventKind::StepWaiting), "{kinds:?}");
    let before: Vec<Step> = rt
        .sessions()
        .steps(Principal::local(), child)
        .await
        .unwrap();
    let boss_before: Vec<Step> = rt.sessions().steps(Principal::local(), boss).await.unwrap();

    // Deciding the delegate's call resumes the delegate, then the boss.
    decide(&rt, reply.waiting[0], Decision::Approve)
        .await
        .unwrap();
    assert_eq!(
        done_list(&done),
        ["lookup stock", "add tea"],
        "the lookup is not done again"
    );
    let text = reply_text(&rt, boss).await.expect("the boss's reply");
    assert!(text.contains("added"), "{text}");
    assert_eq!(
        rt.sessions().state(Principal::local(), boss).await.unwrap(),
        InteractionState::Completed
    );
    let after = rt
        .sessions()
        .steps(Principal::local(), child)
        .await
        .unwrap();
    let boss_after = rt.sessions().steps(Principal::local(), boss).await.unwrap();
    for (steps, before) in [(&after, &before), (&boss_after, &boss_before)] {
        // Every step written before the pause is the same step after it;
        // no step was written again or retried.
        for (old, new) in before.iter().zip(steps.iter()) {
            assert_eq!(old.id, new.id);
        }
        assert!(steps.len() > before.len());
        assert!(steps.iter().all(|s| s.attempt == 1), "{steps:#?}");
        let keys: std::collections::BTreeSet<_> =
            steps.iter().map(|s| s.idempotency_key.as_str()).collect();
        assert_eq!(keys.len(), steps.len(), "each step once");
    }
    assert!(
        boss_after
            .iter()
            .all(|s| s.state != StepState::Waiting && s.state != StepState::Running)
    );
}

#[tokio::test]
async fn a_delegate_runs_as_carefully_as_the_agents_above_it() {
    let dir = tempfile::tempdir().unwrap();
    let done = Done::default();
    // The boss drafts; the helper alone would run on autopilot.
    let rt = delegating_runtime(
        &dir.path().join("c.db"),
        &done,
        ApprovalMode::Draft,
        ApprovalMode::Autopilot,
    )
    .await;
    let s = rt
        .open_session(Principal::local(), "boss", "chat", None)
        .await
        .unwrap();
    let reply = rt.send(s.id, "delegate add milk").await.unwrap();
    assert!(
        done_list(&done).is_empty(),
        "the boss's draft mode holds in its delegate"
    );
    assert_eq!(reply.waiting.len(), 1, "{reply:?}");
    decide(
        &rt,
        reply.waiting[0],
        Decision::Reject {
            reason: Some("not now".into()),
        },
    )
    .await
    .unwrap();
    assert!(done_list(&done).is_empty());
    let text = reply_text(&rt, reply.interaction_id)
        .await
        .expect("the boss's reply");
    assert!(text.contains("approval.rejected"), "{text}");
}

#[tokio::test]
async fn a_session_can_choose_a_more_careful_mode_never_a_less_careful_one() {
    let dir = tempfile::tempdir().unwrap();
    let done = Done::default();
    let rt = runtime(&dir.path().join("s.db"), &done, ApprovalMode::Autopilot).await;
    let s = session(&rt).await;
    let approvals = rt.approvals();
    let set = |mode| approvals.set_session_mode(Principal::local(), s.id, mode);

    let drafted = set(Some(ApprovalMode::Draft)).await.unwrap();
    assert_eq!(drafted.approval_mode, Some(ApprovalMode::Draft));
    let reply = rt.send(s.id, "add milk").await.unwrap();
    assert_eq!(reply.waiting.len(), 1, "the session drafts");
    assert!(done_list(&done).is_empty());
    decide(&rt, reply.waiting[0], Decision::Reject { reason: None })
        .await
        .unwrap();

    set(None).await.unwrap();
    rt.send(s.id, "add tea").await.unwrap();
    assert_eq!(
        done_list(&done),
        ["add tea"],
        "back to the agent's autopilot"
    );

    set(Some(ApprovalMode::Observe)).await.unwrap();
    let reply = rt.send(s.id, "add cake").await.unwrap();
    assert!(reply.waiting.is_empty());
    assert!(
        reply.text.contains("approval.observe_only"),
        "{}",
        reply.text
    );
    assert_eq!(done_list(&done), ["add tea"]);

    // Nobody of another account chooses for the session.
    let eve = Principal::new(AccountId::new(), UserId::new());
    let refused = rt
        .approvals()
        .set_session_mode(eve, s.id, None)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::DirectoryOtherAccount);

    // A drafting agent's session cannot choose autopilot.
    let dir2 = tempfile::tempdir().unwrap();
    let rt = runtime(&dir2.path().join("s2.db"), &done, ApprovalMode::Draft).await;
    let s = session(&rt).await;
    rt.approvals()
        .set_session_mode(Principal::local(), s.id, Some(ApprovalMode::Autopilot))
        .await
        .unwrap();
    let reply = rt.send(s.id, "add jam").await.unwrap();
    assert_eq!(reply.waiting.len(), 1, "the agent's draft mode holds");
    assert_eq!(done_list(&done), ["add tea"]);
}

#[tokio::test]
async fn an_assignment_narrows_the_mode_and_the_account_names_who_decides() {
    let dir = tempfile::tempdir().unwrap();
    let done = Done::default();
    let store = SqliteStore::open(dir.path().join("r.db")).await.unwrap();
    let mut config = RuntimeConfig::default();
    config.enforce_directory = true;
    let rt = Runtime::builder()
        .store(store.clone())
        .model(model())
        .capability(add_todo(&done))
        .capability(lookup(&done))
        // On autopilot by itself.
        .agent(agent(ApprovalMode::Autopilot))
        .config(config)
        .build()
        .unwrap();
    let account = AccountId::new();
    store
        .put_account(account, "X", AccountPolicy::default())
        .await
        .unwrap();
    let (ada, ed, admin) = (
        Principal::new(account, UserId::new()),
        Principal::new(account, UserId::new()),
        Principal::new(account, UserId::new()),
    );
    for (p, role) in [
        (ada, AccountRole::Viewer),
        (ed, AccountRole::Editor),
        (admin, AccountRole::Admin),
    ] {
        store.set_member(account, p.user, role).await.unwrap();
    }
    store
        .set_agent_owner(&"assistant".into(), account)
        .await
        .unwrap();
    store
        .assign(Assignment {
            agent_id: "assistant".into(),
            scope: Scope::Account(account),
            capabilities: None,
            approval_mode: Some(ApprovalMode::Draft),
        })
        .await
        .unwrap();
    let s = rt
        .open_session(ada, "assistant", "chat", None)
        .await
        .unwrap();
    let reply = rt.send(s.id, "add milk and tea").await.unwrap();
    assert_eq!(reply.waiting.len(), 2, "the assignment drafts: {reply:?}");
    assert!(done_list(&done).is_empty());

    // An editor may not decide about Ada's calls, nor list them, by default.
    let by_editor = rt
        .approvals()
        .decide(ed, reply.waiting[0], Decision::Approve, "test")
        .await
        .unwrap_err();
    assert_eq!(by_editor.code(), ErrorCode::DirectoryRoleTooLow);
    assert_eq!(
        rt.approvals()
            .of_account(ed, account)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::DirectoryRoleTooLow
    );
    // An admin may.
    rt.approvals()
        .decide(admin, reply.waiting[0], Decision::Approve, "test")
        .await
        .unwrap();
    assert_eq!(done_list(&done), Vec::<String>::new(), "one of two decided");

    // The account names editors as deciders.
    store
        .put_account(
            account,
            "X",
            AccountPolicy {
                approval_role: Some(AccountRole::Editor),
                ..AccountPolicy::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        rt.approvals().of_account(ed, account).await.unwrap().len(),
        1
    );
    let decided = rt
        .approvals()
        .decide(ed, reply.waiting[1], Decision::Approve, "test")
        .await
        .unwrap();
    assert_eq!(decided.by.user, Some(ed.user));
    assert_eq!(done_list(&done), ["add milk", "add tea"]);

    // Nobody of another account, whatever their role there.
    let eve = Principal::new(AccountId::new(), UserId::new());
    assert_eq!(
        rt.approvals()
            .of_session(eve, s.id)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::DirectoryOtherAccount
    );
}

/// `add_todo` that records which worker ran it.
fn add_todo_on(done: &Done, worker: &'static str) -> FunctionCapability {
    let done = Arc::clone(done);
    FunctionCapability::builder("add_todo", "Adds an item to the user's todo list.").handler(
        move |args: Item| {
            let done = Arc::clone(&done);
            async move {
                done.lock()
                    .unwrap()
                    .push(format!("{worker} add {}", args.text));
                Ok::<_, String>(json!({ "added": args.text }))
            }
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_decision_through_one_worker_resumes_on_the_worker_that_claims_the_session() {
    assert!(
        std::env::var_os("THINKLIO_POSTGRES_URL").is_some(),
        "THINKLIO_POSTGRES_URL is not set: run scripts/postgres.sh start (scripts/test.sh does)"
    );
    let schema = format!("approve_{}", uuid::Uuid::now_v7().simple());
    let store = thinklio_tests::open_store(&format!("postgres:{schema}"))
        .await
        .unwrap();
    let done = Done::default();
    let worker = |name: &'static str| {
        let mut config = RuntimeConfig::default();
        config.shared_store = true;
        Runtime::builder()
            .store_arc(store.clone())
            .model(model())
            .capability(add_todo_on(&done, name))
            .capability(lookup(&done))
            .agent(agent(ApprovalMode::Draft))
            .config(config)
            .build()
            .unwrap()
    };
    // A runs the conversations; B only takes messages and decisions (an API
    // process).
    let (a, b) = (worker("A"), worker("B"));
    let a_worker = a.spawn_interaction_worker(Duration::from_millis(25), 4);
    let s = session(&b).await;
    let state = |rt: &Runtime, i: InteractionId| {
        let rt = rt.clone();
        async move { rt.sessions().state(Principal::local(), i).await.unwrap() }
    };

    // Submitted through B, run by A to its proposal.
    let first = b.submit(s.id, "add milk").await.unwrap();
    until("A proposes the call", || async {
        state(&b, first.id).await == InteractionState::Waiting
    })
    .await;
    let pending = b
        .approvals()
        .of_session(Principal::local(), s.id)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    // Recorded through B, which does not run it: A's worker claims the
    // session and runs the call.
    let (_, to_run) = b
        .approvals()
        .record(
            Principal::local(),
            pending[0].step_id,
            Decision::Approve,
            "b",
        )
        .await
        .unwrap();
    assert_eq!(to_run, Some(s.id));
    until("A runs the approved call", || async {
        state(&b, first.id).await == InteractionState::Completed
    })
    .await;
    assert_eq!(done_list(&done), ["A add milk"]);

    // Proposed on A again, then decided through B, which runs it on itself
    // once A has let go of the session: the call runs once, on one worker.
    let second = b.submit(s.id, "add tea").await.unwrap();
    until("A proposes the second call", || async {
        state(&b, second.id).await == InteractionState::Waiting
    })
    .await;
    let pending = b
        .approvals()
        .of_session(Principal::local(), s.id)
        .await
        .unwrap();
    b.approvals()
        .decide(
            Principal::local(),
            pending[0].step_id,
            Decision::Approve,
            "b",
        )
        .await
        .unwrap();
    until("the second call is done", || async {
        state(&a, second.id).await == InteractionState::Completed
    })
    .await;
    let done_now = done_list(&done);
    assert_eq!(done_now.len(), 2, "{done_now:?}");
    assert!(done_now[1].ends_with("add tea"), "{done_now:?}");
    a_worker.stop().await;
}
