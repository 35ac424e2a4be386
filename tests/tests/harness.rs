//! The durable harness end to end: a runtime on a real SQLite file with a
//! scripted model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;

struct Fixture {
    runtime: Runtime,
    /// The runtime's store, read directly for what hosts never see
    /// (transitions, events, tasks).
    store: SqliteStore,
    model: Arc<ScriptedModel>,
    _dir: tempfile::TempDir,
}

async fn fixture(model: ScriptedModel, agent: AgentDefinition) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("h.db")).await.unwrap();
    let model = Arc::new(model);
    let runtime = Runtime::builder()
        .store(store.clone())
        .model_arc(model.clone())
        .capability(thinklio_tests::add())
        .agent(agent)
        .prices(PriceTable::new().with("priced", ModelPrice::usd_per_million(1.0, 2.0)))
        .build()
        .unwrap();
    Fixture {
        runtime,
        store,
        model,
        _dir: dir,
    }
}

fn agent() -> AgentDefinition {
    AgentDefinition::new("assistant", "priced")
        .system_prompt("Be brief.")
        .capabilities(["add"])
}

async fn session(rt: &Runtime) -> Session {
    rt.open_session(Principal::local(), "assistant", "test", None)
        .await
        .unwrap()
}

fn kinds(steps: &[Step]) -> Vec<(StepKind, StepState)> {
    steps.iter().map(|s| (s.kind, s.state)).collect()
}

#[tokio::test]
async fn a_tool_call_runs_as_durable_steps_with_cost() {
    let model = ScriptedModel::new([
        ScriptedReply::tool_call("c1", "add", r#"{"a": 17, "b": 25}"#),
        ScriptedReply::text("17 + 25 = 42"),
    ])
    .named("priced");
    let f = fixture(model, agent()).await;
    let s = session(&f.runtime).await;
    let reply = f.runtime.send(s.id, "what is 17+25?").await.unwrap();
    assert_eq!(reply.text, "17 + 25 = 42");
    let steps = f.store.steps(reply.interaction_id).await.unwrap();
    use StepKind::*;
    use StepState::Succeeded as Ok_;
    assert_eq!(
        kinds(&steps),
        vec![
            (Context, Ok_),
            (Think, Ok_),
            (Act, Ok_),
            (Observe, Ok_),
            (Think, Ok_),
            (Respond, Ok_)
        ]
    );
    assert_eq!(steps[2].output, Some(json!({ "result": 42 })));
    assert_eq!(steps[2].capability.as_deref(), Some("add"));
    assert_eq!(steps[2].side_effect, Some(SideEffect::ReadOnly));
    assert_eq!(steps[3].output.as_ref().unwrap()["content"], "42");
    // The second model call saw the tool result, after the assistant's call.
    let second = &f.model.requests()[1];
    let tool_msg = second.messages.last().unwrap();
    assert_eq!(
        (tool_msg.role, tool_msg.content.as_str()),
        (Role::Tool, "42")
    );
    assert_eq!(tool_msg.tool_call_id.as_deref(), Some("c1"));
    assert_eq!(second.tools[0].name, "add");
    // Cost per step from the price table, summed per interaction.
    let think_cost: Cost = steps
        .iter()
        .filter(|s| s.kind == Think)
        .map(|s| s.cost)
        .fold(Cost::ZERO, |a, b| a + b);
    assert!(think_cost > Cost::ZERO);
    assert_eq!(reply.cost, think_cost);
    assert_eq!(reply.steps, 6);
    let expected = ModelPrice::usd_per_million(1.0, 2.0).cost(steps[1].usage);
    assert_eq!(steps[1].cost, expected);
    assert_eq!(
        reply.usage,
        steps
            .iter()
            .map(|s| s.usage)
            .fold(TokenUsage::default(), |a, b| a + b)
    );
    let totals = f.store.usage_totals(&UsageFilter::all()).await.unwrap();
    assert_eq!((totals.calls, totals.cost), (2, reply.cost));
    for step in &steps {
        let history = f.store.step_transitions(step.id).await.unwrap();
        assert!(step::is_legal_history(&history));
    }
    assert_eq!(
        f.runtime
            .sessions()
            .state(Principal::local(), reply.interaction_id)
            .await
            .unwrap(),
        InteractionState::Completed
    );
}

#[tokio::test]
async fn malformed_tool_call_json_becomes_an_observation_the_model_corrects() {
    let model = ScriptedModel::new([
        ScriptedReply::tool_call("c1", "add", r#"{"a": 1, "b": "#),
        ScriptedReply::tool_call("c2", "add", r#"{"a": 1}"#),
        ScriptedReply::tool_call("c3", "subtract", r#"{}"#),
        ScriptedReply::tool_call("c4", "add", r#"{"a": 1, "b": 2}"#),
        ScriptedReply::text("3"),
    ]);
    let f = fixture(model, agent()).await;
    let s = session(&f.runtime).await;
    let reply = f.runtime.send(s.id, "1+2").await.unwrap();
    assert_eq!(reply.text, "3");
    let steps = f.store.steps(reply.interaction_id).await.unwrap();
    let acts: Vec<_> = steps.iter().filter(|s| s.kind == StepKind::Act).collect();
    let codes: Vec<_> = acts
        .iter()
        .map(|s| s.error.as_ref().map(|e| e.code.as_str()))
        .collect();
    assert_eq!(
        codes,
        vec![
            Some("capability.invalid_json"),
            Some("capability.invalid_arguments"),
            Some("capability.not_found"),
            None
        ]
    );
    let requests = f.model.requests();
    let seen = |n: usize| requests[n].messages.last().unwrap().content.clone();
    assert!(
        seen(1).contains("not valid JSON") && seen(1).contains("call it again"),
        "{}",
        seen(1)
    );
    assert!(
        seen(2).contains("\"b\" is a required property"),
        "{}",
        seen(2)
    );
    assert!(
        seen(3).contains("no capability named `subtract`"),
        "{}",
        seen(3)
    );
    assert_eq!(seen(4), "3");
}

#[tokio::test]
async fn a_panicking_capability_fails_its_step_not_the_runtime() {
    let model = ScriptedModel::new([
        ScriptedReply::tool_call("c1", "explode", "{}"),
        ScriptedReply::text("that tool is broken"),
    ]);
    let f = fixture(model, agent().capabilities(["add", "explode"])).await;
    let explode = FunctionCapability::builder("explode", "Always panics.").handler(
        |_: serde_json::Map<String, serde_json::Value>| async move {
            if true {
                panic!("wires crossed");
            }
            Ok::<_, String>(0)
        },
    );
    f.runtime.capabilities().register(explode).unwrap();
    let s = session(&f.runtime).await;
    let reply = f.runtime.send(s.id, "boom").await.unwrap();
    assert_eq!(reply.text, "that tool is broken");
    let steps = f.store.steps(reply.interaction_id).await.unwrap();
    let act = steps.iter().find(|s| s.kind == StepKind::Act).unwrap();
    let error = act.error.as_ref().unwrap();
    assert_eq!(error.code, "capability.panicked");
    assert!(error.message.contains("wires crossed"), "{}", error.message);
}

#[tokio::test]
async fn a_capability_above_the_agents_trust_cannot_be_called() {
    let model = ScriptedModel::new([
        ScriptedReply::tool_call("c1", "secret", "{}"),
        ScriptedReply::text("could not"),
    ]);
    let f = fixture(model, agent().capabilities(["add", "secret"])).await;
    let called = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = called.clone();
    let secret = FunctionCapability::builder("secret", "Needs trust.")
        .trust_level(TrustLevel::Elevated)
        .handler(move |_: serde_json::Map<String, serde_json::Value>| {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<_, String>(1) }
        });
    f.runtime.capabilities().register(secret).unwrap();
    let s = session(&f.runtime).await;
    let reply = f.runtime.send(s.id, "try the secret").await.unwrap();
    assert_eq!(reply.text, "could not");
    let steps = f.store.steps(reply.interaction_id).await.unwrap();
    let act = steps.iter().find(|s| s.kind == StepKind::Act).unwrap();
    assert_eq!(act.error.as_ref().unwrap().code, "capability.not_found");
    assert!(
        !called.load(std::sync::atomic::Ordering::SeqCst),
        "a hidden capability never runs"
    );
    assert!(
        f.model.requests()[0]
            .tools
            .iter()
            .all(|t| t.name != "secret")
    );
}

#[tokio::test]
async fn max_turns_ends_with_a_reply() {
    let model =
        ScriptedModel::responder(|_| ScriptedReply::tool_call("c", "add", r#"{"a":1,"b":1}"#));
    let f = fixture(model, agent().max_turns(2)).await;
    let s = session(&f.runtime).await;
    let reply = f.runtime.send(s.id, "loop forever").await.unwrap();
    assert!(
        reply.text.contains("more steps than I am allowed"),
        "{}",
        reply.text
    );
    assert_eq!(f.model.calls(), 2);
}

#[tokio::test]
async fn a_failing_model_fails_the_interaction_with_a_typed_error() {
    let f = fixture(
        ScriptedModel::new([ScriptedReply::http_error(401)]),
        agent(),
    )
    .await;
    let s = session(&f.runtime).await;
    let err = f.runtime.send(s.id, "hi").await.unwrap_err();
    let RuntimeError::InteractionFailed { interaction, error } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(error.code, "model.http");
    assert_eq!(err.code(), "model.http");
    assert_eq!(
        f.runtime
            .sessions()
            .state(Principal::local(), *interaction)
            .await
            .unwrap(),
        InteractionState::Failed
    );
    assert!(f.store.unfinished_interactions().await.unwrap().is_empty());
    assert!(f.runtime.recover().await.unwrap().resumed == 0);
}

#[tokio::test]
async fn bad_messages_are_refused_before_anything_is_written() {
    let f = fixture(ScriptedModel::new([]), agent()).await;
    let s = session(&f.runtime).await;
    assert!(matches!(
        f.runtime.send(s.id, "  ").await,
        Err(RuntimeError::EmptyMessage)
    ));
    let huge = "x".repeat(100_000);
    assert!(matches!(
        f.runtime.send(s.id, huge).await,
        Err(RuntimeError::MessageTooLarge { size: 100_000, .. })
    ));
    assert!(matches!(
        f.runtime.send(SessionId::new(), "hi").await,
        Err(RuntimeError::Store(StoreError::NotFound { .. }))
    ));
    assert!(matches!(
        f.runtime
            .open_session(Principal::local(), "nobody", "test", None)
            .await,
        Err(RuntimeError::UnknownAgent(_))
    ));
    assert!(
        f.store
            .interactions_of_session(s.id)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn history_carries_across_interactions_of_a_session_only() {
    let model = ScriptedModel::responder(|r| {
        let last = r.messages.last().unwrap().content.clone();
        ScriptedReply::text(format!("echo: {last}"))
    });
    let f = fixture(model, agent()).await;
    let a = session(&f.runtime).await;
    let b = session(&f.runtime).await;
    f.runtime.send(a.id, "first").await.unwrap();
    f.runtime.send(b.id, "other session").await.unwrap();
    f.runtime.send(a.id, "second").await.unwrap();
    let last = f.model.requests().pop().unwrap();
    let contents: Vec<_> = last
        .messages
        .iter()
        .map(|m| (m.role, m.content.as_str()))
        .collect();
    assert_eq!(
        contents,
        vec![
            (Role::System, "Be brief."),
            (Role::User, "first"),
            (Role::Assistant, "echo: first"),
            (Role::User, "second")
        ]
    );
}

#[tokio::test]
async fn an_inbound_id_is_answered_once() {
    let model = ScriptedModel::responder(|_| ScriptedReply::text("once"));
    let f = fixture(model, agent()).await;
    let s = session(&f.runtime).await;
    let a = f
        .runtime
        .send(s.id, Inbound::with_id("hi", "update-7"))
        .await
        .unwrap();
    let b = f
        .runtime
        .send(s.id, Inbound::with_id("hi", "update-7"))
        .await
        .unwrap();
    assert_eq!(a.interaction_id, b.interaction_id);
    assert_eq!(b.text, "once");
    assert_eq!(f.model.calls(), 1);
}

#[tokio::test]
async fn messages_of_one_session_run_in_order_and_sessions_run_concurrently() {
    let model = ScriptedModel::responder(|r| {
        let last = r.messages.last().unwrap().content.clone();
        ScriptedReply::text(format!("re: {last}"))
    })
    .with_delay(Duration::from_millis(20));
    let f = fixture(model, agent()).await;
    let one = session(&f.runtime).await;
    let mut sends = Vec::new();
    for n in 0..5 {
        let rt = f.runtime.clone();
        // On this single-threaded test runtime, spawned sends are first
        // polled in spawn order.
        sends.push(tokio::spawn(async move {
            rt.send(one.id, format!("m{n}")).await.unwrap()
        }));
    }
    for s in sends {
        s.await.unwrap();
    }
    let order: Vec<_> = f
        .store
        .interactions_of_session(one.id)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.input)
        .collect();
    assert_eq!(order, vec!["m0", "m1", "m2", "m3", "m4"]);
    // Each saw all earlier turns: history is complete, so none overlapped.
    let last = f.model.requests().pop().unwrap();
    assert_eq!(
        last.messages
            .iter()
            .filter(|m| m.role == Role::User)
            .count(),
        5
    );

    // Ten sessions at once: their model calls overlap.
    let gauge = Arc::new(Gauge::default());
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::builder()
        .store(SqliteStore::open(dir.path().join("c.db")).await.unwrap())
        .model_arc(gauge.clone())
        .agent(agent())
        .build()
        .unwrap();
    let mut all = Vec::new();
    for _ in 0..10 {
        let rt = rt.clone();
        let s = session(&rt).await;
        all.push(tokio::spawn(
            async move { rt.send(s.id, "hi").await.unwrap() },
        ));
    }
    for s in all {
        s.await.unwrap();
    }
    let peak = gauge.peak.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        peak > 1,
        "model calls of different sessions overlap (peak {peak})"
    );
}

/// A model that records how many calls were in flight at once. The first
/// call waits until a second one is in flight (so overlap is seen whatever
/// the machine's speed); if none comes, calls were serialised.
#[derive(Default)]
struct Gauge {
    in_flight: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
    overlapped: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl ChatModel for Gauge {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(now, SeqCst);
        if now >= 2 {
            self.overlapped.notify_waiters();
        } else {
            // Registered before the peak is read, so no wake-up is missed.
            let notified = self.overlapped.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.peak.load(SeqCst) < 2 {
                // Only a failing run waits this long.
                let _ = tokio::time::timeout(Duration::from_secs(30), notified).await;
            }
        }
        self.in_flight.fetch_sub(1, SeqCst);
        Ok(ChatResponse {
            model: request.model.clone(),
            message: ChatMessage::assistant("ok"),
            usage: TokenUsage::new(1, 1),
            finish_reason: FinishReason::Stop,
        })
    }

    async fn chat_stream(&self, _request: &ChatRequest) -> Result<ChatStream, ModelError> {
        Err(ModelError::Config("this test model does not stream".into()))
    }
}

#[tokio::test]
async fn events_are_published_in_process_and_kept_in_the_log() {
    let f = fixture(ScriptedModel::new([ScriptedReply::text("hi")]), agent()).await;
    let mut events = f.runtime.subscribe();
    let s = session(&f.runtime).await;
    let reply = f.runtime.send(s.id, "hello").await.unwrap();
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e.kind);
    }
    use EventKind::*;
    assert_eq!(
        seen,
        vec![
            InteractionCreated,
            StepStarted,
            StepSucceeded,
            StepStarted,
            StepSucceeded,
            StepStarted,
            StepSucceeded,
            InteractionCompleted,
            ReplyDelivered
        ]
    );
    let log = f.store.events_after(0, 100).await.unwrap();
    assert_eq!(log.iter().map(|e| e.kind).collect::<Vec<_>>(), seen);
    assert!(
        log.iter()
            .all(|e| e.interaction_id == Some(reply.interaction_id))
    );
}

#[tokio::test]
async fn capabilities_can_change_at_run_time_and_trust_hides_them() {
    let model = ScriptedModel::responder(|r| {
        ScriptedReply::text(
            r.tools
                .iter()
                .map(|t| t.name.clone())
                .collect::<Vec<_>>()
                .join(","),
        )
    });
    let f = fixture(
        model,
        agent()
            .capabilities(["add", "secret"])
            .trust_level(TrustLevel::Standard),
    )
    .await;
    let s = session(&f.runtime).await;
    assert_eq!(f.runtime.send(s.id, "tools?").await.unwrap().text, "add");
    let secret = FunctionCapability::builder("secret", "Needs trust.")
        .trust_level(TrustLevel::Elevated)
        .handler(|_: serde_json::Map<String, serde_json::Value>| async { Ok::<_, String>(1) });
    f.runtime.capabilities().register(secret).unwrap();
    assert_eq!(
        f.runtime.send(s.id, "tools?").await.unwrap().text,
        "add",
        "trust hides it"
    );
    f.runtime
        .directory()
        .register_agent(
            agent()
                .capabilities(["add", "secret"])
                .trust_level(TrustLevel::Elevated),
        )
        .unwrap();
    assert_eq!(
        f.runtime.send(s.id, "tools?").await.unwrap().text,
        "add,secret"
    );
    assert!(f.runtime.capabilities().remove("add"));
    assert_eq!(f.runtime.send(s.id, "tools?").await.unwrap().text, "secret");
}

struct Failing;

#[async_trait::async_trait]
impl TaskHandler for Failing {
    async fn run(&self, _task: &Task) -> Result<(), TaskError> {
        Err(TaskError::retryable("the backend is down"))
    }
}

#[tokio::test]
async fn a_failing_task_is_retried_with_growing_delays_then_dead_lettered() {
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("q.db")).await.unwrap();
    let policy = RetryPolicy {
        base: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };
    let mut config = RuntimeConfig::default();
    config.retry_policy = policy;
    let runtime = Runtime::builder()
        .store(store.clone())
        .model(ScriptedModel::new([]))
        .clock(clock.clone())
        .config(config)
        .build()
        .unwrap();
    runtime.register_task_handler("extract", Failing);
    let task = runtime
        .enqueue(NewTask::new("extract", json!({ "n": 1 }), clock.now()).max_attempts(5))
        .await
        .unwrap();
    let mut delays = Vec::new();
    for attempt in 1..=5u32 {
        let run = runtime.run_due_tasks().await.unwrap();
        let t = store.task(task.id).await.unwrap();
        assert_eq!(t.attempts, attempt);
        if attempt < 5 {
            assert_eq!(run.retried, 1);
            assert_eq!(t.state, TaskState::Pending);
            let delay = t.run_at.since(clock.now());
            assert!(delay >= policy.ceiling(attempt) / 2 && delay <= policy.ceiling(attempt));
            delays.push(delay);
            // Not due before its time...
            assert_eq!(runtime.run_due_tasks().await.unwrap(), QueueRun::default());
            clock.set(t.run_at);
        } else {
            assert_eq!(run.dead_lettered, 1);
            assert_eq!(t.state, TaskState::Dead);
            assert_eq!(t.last_error.as_deref(), Some("the backend is down"));
        }
    }
    assert!(
        delays.windows(2).all(|w| w[0] <= w[1]),
        "delays grow: {delays:?}"
    );
    assert!(delays[3] >= delays[0] * 4, "exponentially: {delays:?}");
    let dead = store.dead_letters().await.unwrap();
    assert_eq!(dead.iter().map(|t| t.id).collect::<Vec<_>>(), vec![task.id]);
    store.requeue(task.id, clock.now()).await.unwrap();
    assert_eq!(
        runtime.run_due_tasks().await.unwrap().retried,
        1,
        "a requeued task runs again"
    );
}

/// A model that never answers, as a provider that accepted the request and
/// went silent.
struct Silent;

#[async_trait::async_trait]
impl ChatModel for Silent {
    async fn chat(&self, _: &ChatRequest) -> Result<ChatResponse, ModelError> {
        std::future::pending().await
    }

    async fn chat_stream(&self, _: &ChatRequest) -> Result<ChatStream, ModelError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_step_without_progress_is_failed_by_the_watchdog_and_the_user_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = RuntimeConfig::default();
    config.step_deadline = Duration::from_millis(100);
    let store = SqliteStore::open(dir.path().join("w.db")).await.unwrap();
    let rt = Runtime::builder()
        .store(store.clone())
        .model(Silent)
        .config(config)
        .agent(agent())
        .build()
        .unwrap();
    let s = session(&rt).await;
    let reply = rt.send(s.id, "hello?").await.unwrap();
    assert!(
        reply
            .text
            .starts_with("I could not answer in time: the think step took longer than"),
        "{}",
        reply.text
    );
    let steps = rt
        .sessions()
        .steps(Principal::local(), reply.interaction_id)
        .await
        .unwrap();
    let think = steps.iter().find(|s| s.kind == StepKind::Think).unwrap();
    assert_eq!(
        (think.state, think.error.as_ref().unwrap().code),
        (StepState::Failed, ErrorCode::StepDeadlineExceeded)
    );
    assert_eq!(
        rt.sessions()
            .state(Principal::local(), reply.interaction_id)
            .await
            .unwrap(),
        InteractionState::Completed
    );
    assert!(
        store.unfinished_interactions().await.unwrap().is_empty(),
        "nothing is left for a restart"
    );
}

#[tokio::test]
async fn an_agents_model_parameters_reach_every_model_call_and_bad_ones_are_refused() {
    let f = fixture(
        ScriptedModel::new([ScriptedReply::text("ok")]),
        agent()
            .temperature(0.3)
            .top_p(0.8)
            .stop(["\nUser:"])
            .max_output_tokens(64),
    )
    .await;
    let s = session(&f.runtime).await;
    f.runtime.send(s.id, "hello").await.unwrap();
    let sent = &f.model.requests()[0];
    assert_eq!(
        (sent.temperature, sent.top_p, sent.max_tokens),
        (Some(0.3), Some(0.8), Some(64))
    );
    assert_eq!(sent.stop, ["\nUser:"]);

    for bad in [
        agent().temperature(2.5),
        agent().temperature(-0.1),
        agent().top_p(0.0),
        agent().top_p(1.5),
        agent().stop(["a", "b", "c", "d", "e"]),
        agent().stop([""]),
        agent().max_output_tokens(0),
    ] {
        let refused = Runtime::builder()
            .store(f.store.clone())
            .model(ScriptedModel::new([]))
            .agent(bad.clone())
            .build()
            .map(|_| ())
            .unwrap_err();
        assert_eq!(refused.code(), ErrorCode::RuntimeConfig, "{bad:?}");
        let at_run_time = f.runtime.directory().register_agent(bad).unwrap_err();
        assert!(
            at_run_time.to_string().contains("assistant"),
            "{at_run_time}"
        );
    }
}

#[tokio::test]
async fn calls_beyond_the_agents_limit_per_turn_are_not_run_and_the_model_is_told() {
    let calls: Vec<ToolCall> = (0..4)
        .map(|i| ToolCall::new(format!("c{i}"), "add", format!(r#"{{"a": {i}, "b": 1}}"#)))
        .collect();
    let f = fixture(
        ScriptedModel::new([
            ScriptedReply::ToolCalls {
                text: String::new(),
                calls,
            },
            ScriptedReply::text("done"),
        ]),
        agent().max_tool_calls_per_turn(2),
    )
    .await;
    let s = session(&f.runtime).await;
    let reply = f.runtime.send(s.id, "add four things").await.unwrap();
    let steps = f.store.steps(reply.interaction_id).await.unwrap();
    let acts: Vec<(StepState, Option<ErrorCode>)> = steps
        .iter()
        .filter(|s| s.kind == StepKind::Act)
        .map(|s| (s.state, s.error.as_ref().map(|e| e.code)))
        .collect();
    assert_eq!(
        acts,
        [
            (StepState::Succeeded, None),
            (StepState::Succeeded, None),
            (StepState::Failed, Some(ErrorCode::CapabilityTooManyCalls)),
            (StepState::Failed, Some(ErrorCode::CapabilityTooManyCalls)),
        ]
    );
    // Every call gets its result (providers require one per call id).
    let second = &f.model.requests()[1];
    let results: Vec<&str> = second
        .messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0], "1");
    assert!(
        results[3].contains("capability.too_many_calls"),
        "{}",
        results[3]
    );
}

/// No arguments.
#[derive(serde::Deserialize, schemars::JsonSchema)]
struct NoArgs {}

#[tokio::test]
async fn a_long_tool_result_is_cut_for_the_model_and_kept_whole_in_its_step() {
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(ScriptedModel::new([
        ScriptedReply::tool_call("c1", "dump", "{}"),
        ScriptedReply::text("read it"),
    ]));
    // Two-byte characters, so the cut falls inside one unless it is careful.
    let long = "é".repeat(50_000);
    let dumped = long.clone();
    let rt = Runtime::builder()
        .store(SqliteStore::open(dir.path().join("t.db")).await.unwrap())
        .model_arc(model.clone())
        .capability(
            FunctionCapability::builder("dump", "Dumps a large document.")
                .side_effect(SideEffect::ReadOnly)
                .handler(move |_: NoArgs| {
                    let dumped = dumped.clone();
                    async move { Ok::<_, String>(dumped) }
                }),
        )
        .agent(
            AgentDefinition::new("assistant", "m")
                .capabilities(["dump"])
                .max_tool_result_bytes(1025),
        )
        .build()
        .unwrap();
    let s = rt
        .open_session(Principal::local(), "assistant", "t", None)
        .await
        .unwrap();
    let reply = rt.send(s.id, "dump it").await.unwrap();
    let shown = model.requests()[1]
        .messages
        .iter()
        .find(|m| m.role == Role::Tool)
        .unwrap()
        .content
        .clone();
    assert!(
        shown.starts_with(&"é".repeat(512)),
        "the beginning is shown"
    );
    assert!(!shown.contains(&"é".repeat(513)), "and no more than fits");
    assert!(
        shown.contains("The result was cut: it has 100000 bytes"),
        "{shown}"
    );
    let steps = rt
        .sessions()
        .steps(Principal::local(), reply.interaction_id)
        .await
        .unwrap();
    let act = steps.iter().find(|s| s.kind == StepKind::Act).unwrap();
    let whole: step::payload::ActOutput = act.output_as().unwrap().unwrap();
    assert_eq!(whole.result, serde_json::Value::String(long), "kept whole");
    let observe: step::payload::ObserveOutput = steps
        .iter()
        .find(|s| s.kind == StepKind::Observe)
        .unwrap()
        .output_as()
        .unwrap()
        .unwrap();
    assert_eq!(observe.truncated_from, Some(100_000));
    assert_eq!(
        observe.content, shown,
        "the model is shown what the step holds"
    );
}
