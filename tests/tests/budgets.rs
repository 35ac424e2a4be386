//! Budgets: checked before every model and capability call, warnings once
//! per threshold per period, periods that reset on their own, delegates
//! spending from their caller's budgets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::time::Duration;

use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::{SqliteOptions, SqliteStore};

/// Each message: one tool call, then an answer; every agent delegates to
/// `ask_*` when it has one.
fn model() -> ScriptedModel {
    ScriptedModel::responder(|r| {
        let last = r.messages.last().unwrap();
        match (last.role, r.tools.first()) {
            (Role::User, Some(tool)) => {
                let args = if tool.name.starts_with("ask_") {
                    r#"{"task": "help"}"#
                } else {
                    r#"{"a": 1, "b": 2}"#
                };
                ScriptedReply::tool_call("c", tool.name.clone(), args)
            }
            _ => ScriptedReply::text(format!("{} done", r.model)),
        }
    })
}

async fn runtime(dir: &tempfile::TempDir, clock: &ManualClock, builder: RuntimeBuilder) -> Runtime {
    let options = SqliteOptions::default().clock(clock.clone());
    builder
        .store(
            SqliteStore::open_with(dir.path().join("b.db"), options)
                .await
                .unwrap(),
        )
        .model(model())
        .clock(clock.clone())
        .capability(thinklio_tests::add())
        .prices(PriceTable::new().with("priced", ModelPrice::usd_per_million(1000.0, 1000.0)))
        .build()
        .unwrap()
}

/// The store of a test's runtime, opened again beside it, for its event log.
async fn raw(dir: &tempfile::TempDir, file: &str) -> SqliteStore {
    SqliteStore::open(dir.path().join(file)).await.unwrap()
}

fn warnings(events: &[Event]) -> Vec<i64> {
    events
        .iter()
        .filter(|e| e.kind == EventKind::BudgetWarning)
        .map(|e| e.payload["threshold"].as_i64().unwrap())
        .collect()
}

fn start() -> ManualClock {
    // 2026-11-10T00:00:00Z
    ManualClock::new(Timestamp::from_millis(1_794_268_800_000))
}

#[tokio::test]
async fn a_spent_budget_blocks_the_next_model_call_with_a_clear_reply() {
    let dir = tempfile::tempdir().unwrap();
    let clock = start();
    let agent = AgentDefinition::new("a", "priced").capabilities(["add"]);
    let rt = runtime(&dir, &clock, Runtime::builder().agent(agent)).await;
    let me = Principal::local();
    let session = rt.open_session(me, "a", "t", None).await.unwrap();
    let first = rt.send(session.id, "one").await.unwrap();
    assert!(first.cost > Cost::ZERO);
    // The limit is exactly what was spent: the next call may not start.
    rt.usage()
        .set_budget(
            Principal::local(),
            BudgetLimit::monthly(Scope::User(me.user), first.cost),
        )
        .await
        .unwrap();
    let second = rt.send(session.id, "two").await.unwrap();
    assert!(
        second
            .text
            .starts_with("I have to stop here: the user budget"),
        "{}",
        second.text
    );
    let steps = rt
        .sessions()
        .steps(Principal::local(), second.interaction_id)
        .await
        .unwrap();
    let refused = steps.iter().find(|s| s.kind == StepKind::Think).unwrap();
    assert_eq!(
        refused.error.as_ref().unwrap().code,
        ErrorCode::BudgetExceeded
    );
    assert_eq!(steps.last().unwrap().kind, StepKind::Respond);
    assert_eq!(
        rt.sessions()
            .state(Principal::local(), second.interaction_id)
            .await
            .unwrap(),
        InteractionState::Completed
    );
    let spent = rt
        .usage()
        .totals(Principal::local(), &UsageFilter::all().user(me.user))
        .await
        .unwrap();
    assert_eq!(spent.cost, first.cost, "usage stays at the limit");
    // Another user of the same account is not held by my budget.
    let other = Principal::new(me.account, UserId::new());
    let theirs = rt.open_session(other, "a", "t", None).await.unwrap();
    assert_eq!(
        rt.send(theirs.id, "three").await.unwrap().text,
        "priced done"
    );
}

#[tokio::test]
async fn warnings_fire_once_per_threshold_and_a_new_period_resets() {
    let dir = tempfile::tempdir().unwrap();
    let clock = start();
    let agent = AgentDefinition::new("a", "priced").capabilities(["add"]);
    let rt = runtime(&dir, &clock, Runtime::builder().agent(agent)).await;
    let me = Principal::local();
    let session = rt.open_session(me, "a", "t", None).await.unwrap();
    let one = rt.send(session.id, "measure").await.unwrap().cost;
    // Room for about four such messages this month.
    let limit = Cost::from_nanos(one.as_nanos() * 4 + one.as_nanos() / 2);
    rt.usage()
        .set_budget(
            Principal::local(),
            BudgetLimit::monthly(Scope::Account(me.account), limit),
        )
        .await
        .unwrap();
    let mut replies = Vec::new();
    for _ in 0..5 {
        // A new session each time, so that every message costs the same.
        let fresh = rt.open_session(me, "a", "t", None).await.unwrap();
        replies.push(rt.send(fresh.id, "measure").await.unwrap().text);
    }
    // With the first message, three more fit; the fifth finds the budget spent.
    assert!(
        replies[..3].iter().all(|r| r == "priced done"),
        "{replies:?}"
    );
    assert!(replies[4].starts_with("I have to stop here"), "{replies:?}");
    let events = raw(&dir, "b.db")
        .await
        .events_after(0, 10_000)
        .await
        .unwrap();
    assert_eq!(warnings(&events), vec![50, 80, 100], "each threshold once");

    // Next month: the period starts over by itself.
    clock.advance(Duration::from_secs(31 * 86_400));
    assert_eq!(
        rt.send(session.id, "new month").await.unwrap().text,
        "priced done"
    );
    let events = raw(&dir, "b.db")
        .await
        .events_after(0, 10_000)
        .await
        .unwrap();
    assert_eq!(
        warnings(&events),
        vec![50, 80, 100],
        "no warning yet this month"
    );
}

#[tokio::test]
async fn a_delegates_spend_counts_against_its_callers_budget() {
    let dir = tempfile::tempdir().unwrap();
    let clock = start();
    let builder = Runtime::builder()
        .agent(AgentDefinition::new("boss", "priced").capabilities(["ask_helper"]))
        .agent(AgentDefinition::new("helper", "priced").capabilities(["add"]))
        .delegate(Delegate::new("helper", "ask_helper", "Helps."));
    let rt = runtime(&dir, &clock, builder).await;
    let me = Principal::local();
    let session = rt.open_session(me, "boss", "t", None).await.unwrap();
    let reply = rt.send(session.id, "work").await.unwrap();
    let spent = rt
        .usage()
        .totals(Principal::local(), &UsageFilter::all().user(me.user))
        .await
        .unwrap();
    assert_eq!(
        spent.cost, reply.cost,
        "the delegate's calls are the caller's spend"
    );
    assert_eq!(spent.calls, 4, "two calls each");

    // A budget the delegate's work used up stops the next message at once.
    rt.usage()
        .set_budget(
            Principal::local(),
            BudgetLimit::monthly(Scope::User(me.user), spent.cost),
        )
        .await
        .unwrap();
    let blocked = rt.send(session.id, "more").await.unwrap();
    assert!(
        blocked.text.starts_with("I have to stop here"),
        "{}",
        blocked.text
    );
    assert_eq!(
        rt.usage()
            .totals(Principal::local(), &UsageFilter::all().user(me.user))
            .await
            .unwrap()
            .cost,
        spent.cost
    );
}

#[tokio::test]
async fn forgetting_a_user_keeps_account_totals_and_closes_their_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let clock = start();
    let agent = AgentDefinition::new("a", "priced").capabilities(["add"]);
    let rt = runtime(&dir, &clock, Runtime::builder().agent(agent)).await;
    let me = Principal::local();
    let other = Principal::new(me.account, UserId::new());
    let mine = rt.open_session(me, "a", "t", Some("chat")).await.unwrap();
    let theirs = rt.open_session(other, "a", "t", None).await.unwrap();
    let a = rt.send(mine.id, "one").await.unwrap();
    let b = rt.send(theirs.id, "two").await.unwrap();
    let by_user = rt
        .usage()
        .report(
            Principal::local(),
            UsageGroup::User,
            &UsageFilter::all().account(me.account),
        )
        .await
        .unwrap();
    let total: Cost = by_user
        .iter()
        .map(|r| r.totals.cost)
        .fold(Cost::ZERO, |x, y| x + y);
    assert_eq!(
        total,
        a.cost + b.cost,
        "the report adds up to the steps' costs"
    );

    let report = rt
        .directory()
        .forget_user(Principal::local(), me.account, me.user)
        .await
        .unwrap();
    assert_eq!((report.sessions, report.interactions), (1, 1));
    assert!(matches!(
        rt.send(mine.id, "again").await,
        Err(RuntimeError::Store(StoreError::NotFound { .. }))
    ));
    let account = rt
        .usage()
        .totals(Principal::local(), &UsageFilter::all().account(me.account))
        .await
        .unwrap();
    assert_eq!(account.cost, a.cost + b.cost);
    assert_eq!(
        rt.usage()
            .totals(Principal::local(), &UsageFilter::all().user(me.user))
            .await
            .unwrap()
            .calls,
        0
    );
    assert_eq!(
        rt.send(theirs.id, "still here").await.unwrap().text,
        "priced done"
    );
}

/// A chat completion as OpenAI sends it: the answer names the dated
/// snapshot that served it, not the model asked for.
const DATED_COMPLETION: &str = r#"{
  "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
  "object": "chat.completion",
  "created": 1741570283,
  "model": "gpt-4o-mini-2024-07-18",
  "choices": [
    {
      "index": 0,
      "message": { "role": "assistant", "content": "Hello! How can I help?", "refusal": null, "annotations": [] },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 1117,
    "completion_tokens": 46,
    "total_tokens": 1163,
    "prompt_tokens_details": { "cached_tokens": 0, "audio_tokens": 0 },
    "completion_tokens_details": { "reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0 }
  },
  "service_tier": "default",
  "system_fingerprint": "fp_06737a9306"
}"#;

/// A runtime on a real OpenAI-compatible client talking to a local server
/// that answers like OpenAI.
async fn openai_runtime(
    dir: &tempfile::TempDir,
    server: &wiremock::MockServer,
    prices: PriceTable,
) -> Runtime {
    use wiremock::matchers::{method, path};
    wiremock::Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            wiremock::ResponseTemplate::new(200).set_body_raw(DATED_COMPLETION, "application/json"),
        )
        .mount(server)
        .await;
    Runtime::builder()
        .store(SqliteStore::open(dir.path().join("o.db")).await.unwrap())
        .model(thinklio_llm::OpenAiCompatible::new(
            format!("{}/v1", server.uri()),
            None,
        ))
        .prices(prices)
        .agent(AgentDefinition::new("a", "gpt-4o-mini"))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_dated_model_name_is_priced_and_its_cost_budget_trips() {
    let dir = tempfile::tempdir().unwrap();
    let server = wiremock::MockServer::start().await;
    let rt = openai_runtime(&dir, &server, thinklio_llm::prices::published()).await;
    let me = Principal::local();
    let session = rt.open_session(me, "a", "t", None).await.unwrap();
    let first = rt.send(session.id, "hello").await.unwrap();
    // 1,117 input and 46 output tokens of gpt-4o-mini at $0.15 / $0.60 per million.
    assert_eq!(
        first.cost,
        ModelPrice::usd_per_million(0.15, 0.60).cost(TokenUsage::new(1117, 46))
    );
    rt.usage()
        .set_budget(
            Principal::local(),
            BudgetLimit::monthly(Scope::User(me.user), first.cost),
        )
        .await
        .unwrap();
    let second = rt.send(session.id, "again").await.unwrap();
    assert!(
        second.text.starts_with("I have to stop here"),
        "{}",
        second.text
    );
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "the spent budget stopped the second call before it reached the provider"
    );
}

#[tokio::test]
async fn the_requested_model_prices_an_answer_named_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let server = wiremock::MockServer::start().await;
    // Only the requested id has a price (a proxy or a fine-tune answers
    // under a name the table does not know).
    let prices = PriceTable::new().with("gpt-4o-mini", ModelPrice::usd_per_million(1.0, 1.0));
    let prices = prices.with("unrelated", ModelPrice::usd_per_million(9.0, 9.0));
    let rt = openai_runtime(&dir, &server, prices).await;
    let session = rt
        .open_session(Principal::local(), "a", "t", None)
        .await
        .unwrap();
    let reply = rt.send(session.id, "hello").await.unwrap();
    assert_eq!(reply.cost, Cost::from_usd(1163.0 / 1e6));
}

#[tokio::test]
async fn an_unpriced_model_is_warned_about_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = wiremock::MockServer::start().await;
    let rt = openai_runtime(&dir, &server, PriceTable::new()).await;
    let mut events = rt.subscribe();
    let session = rt
        .open_session(Principal::local(), "a", "t", None)
        .await
        .unwrap();
    for text in ["one", "two", "three"] {
        assert_eq!(rt.send(session.id, text).await.unwrap().cost, Cost::ZERO);
    }
    let mut warned = Vec::new();
    while let Ok(e) = events.try_recv() {
        if e.kind == EventKind::UsageUnpriced {
            warned.push(e.payload["model"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(warned, ["gpt-4o-mini-2024-07-18"]);
    let logged = raw(&dir, "o.db")
        .await
        .events_after(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::UsageUnpriced)
        .count();
    assert_eq!(logged, 1, "the warning is in the store's log, once");
}

#[tokio::test]
async fn a_token_budget_stops_calls_whatever_the_prices() {
    let dir = tempfile::tempdir().unwrap();
    let server = wiremock::MockServer::start().await;
    let rt = openai_runtime(&dir, &server, PriceTable::new()).await;
    let me = Principal::local();
    rt.usage()
        .set_budget(
            Principal::local(),
            BudgetLimit::monthly_tokens(Scope::Account(me.account), 2_000),
        )
        .await
        .unwrap();
    let session = rt.open_session(me, "a", "t", None).await.unwrap();
    let mut events = rt.subscribe();
    // 1,163 tokens a call: the first runs, the second starts (1,163 < 2,000),
    // the third may not.
    for text in ["one", "two"] {
        let reply = rt.send(session.id, text).await.unwrap();
        assert!(!reply.text.starts_with("I have to stop"), "{}", reply.text);
    }
    let third = rt.send(session.id, "three").await.unwrap();
    assert!(third.text.contains("2000 tokens"), "{}", third.text);
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    let mut thresholds = Vec::new();
    while let Ok(e) = events.try_recv() {
        if e.kind == EventKind::BudgetWarning {
            assert_eq!(e.payload["limit_tokens"], 2000);
            thresholds.push(e.payload["threshold"].as_i64().unwrap());
        }
    }
    assert_eq!(thresholds, [50, 80, 100]);
}
