//! Retention through the runtime: a policy prunes old finished turns on a
//! real SQLite file, leaves recent and unfinished ones, keeps every usage
//! report and never makes recovery run a pruned turn again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::time::Duration;

use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::{SqliteOptions, SqliteStore};

const DAY: Duration = Duration::from_secs(86_400);

fn model() -> ScriptedModel {
    ScriptedModel::responder(|r| match r.messages.last().map(|m| m.role) {
        Some(Role::User) => ScriptedReply::tool_call("c1", "add", r#"{"a": 2, "b": 3}"#),
        _ => ScriptedReply::text("5"),
    })
    .named("gpt-4o-mini-2024-07-18")
}

async fn runtime(path: &std::path::Path, clock: &ManualClock) -> (Runtime, SqliteStore) {
    let store = SqliteStore::open_with(path, SqliteOptions::default().clock(clock.clone()))
        .await
        .unwrap();
    let runtime = Runtime::builder()
        .store(store.clone())
        .clock(clock.clone())
        .model(model())
        .prices(PriceTable::new().with("gpt-4o-mini", ModelPrice::usd_per_million(0.15, 0.6)))
        .capability(thinklio_tests::add())
        .agent(AgentDefinition::new("assistant", "gpt-4o-mini").capabilities(["add"]))
        .build()
        .unwrap();
    (runtime, store)
}

async fn reports(store: &SqliteStore) -> Vec<String> {
    let mut out = Vec::new();
    let month = |m: i64| {
        UsageFilter::all().between(
            Timestamp::from_millis(m * 30 * 86_400_000),
            Timestamp::from_millis((m + 1) * 30 * 86_400_000),
        )
    };
    for filter in [UsageFilter::all(), month(0), month(1)] {
        out.push(format!("{:?}", store.usage_totals(&filter).await.unwrap()));
        out.push(format!(
            "{:?}",
            store.usage_report(UsageGroup::User, &filter).await.unwrap()
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_prunes_old_finished_turns_and_keeps_reports_and_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let clock = ManualClock::new(Timestamp::from_millis(0));
    let (rt, store) = runtime(&path, &clock).await;
    let session = rt
        .open_session(Principal::local(), "assistant", "t", Some("chat"))
        .await
        .unwrap();
    let mut old = Vec::new();
    for _ in 0..3 {
        old.push(rt.send(session.id, "2+3?").await.unwrap().interaction_id);
        clock.advance(DAY);
    }
    clock.advance(40 * DAY);
    let recent = rt.send(session.id, "2+3?").await.unwrap().interaction_id;
    // A turn cut off before its first step (as a crash leaves it): unfinished.
    let unfinished = store
        .create_interaction(NewInteraction {
            session_id: session.id,
            principal: session.principal,
            agent_id: session.agent_id.clone(),
            input: "cut off".into(),
            images: Vec::new(),
            agent_version: None,
            inbound_id: None,
            parent_interaction_id: None,
            delegation_depth: 0,
            job_id: None,
            kind: thinklio_core::interaction::InteractionKind::Message,
        })
        .await
        .unwrap()
        .0;
    let before = reports(&store).await;
    let steps_of = |id| {
        let store = store.clone();
        async move { store.steps(id).await.unwrap() }
    };
    assert_eq!(steps_of(old[0]).await.len(), 6);

    let report = rt
        .prune(&RetentionPolicy::keep_finished(30 * DAY).usage_detail(30 * DAY))
        .await
        .unwrap();
    assert_eq!(report.interactions, 3, "{report:?}");
    assert_eq!(report.steps, 3 * 5, "{report:?}");
    assert_eq!(
        report.usage_rolled_up,
        3 * 2,
        "two model calls a turn: {report:?}"
    );
    assert_eq!(reports(&store).await, before);
    for id in &old {
        let steps = steps_of(*id).await;
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].kind, StepKind::Respond);
    }
    assert_eq!(steps_of(recent).await.len(), 6);
    // The conversation still reads its turns (no summary covers them).
    let history = store.history(session.id, i64::MAX, 10).await.unwrap();
    assert_eq!(history.len(), 4);

    // Recovery after a restart resumes the unfinished turn and nothing pruned.
    drop((rt, store));
    let (rt, store) = runtime(&path, &clock).await;
    let recovered = rt.recover().await.unwrap();
    assert_eq!(recovered.resumed, 1, "{recovered:?}");
    assert_eq!(
        store.reply_of(unfinished.id).await.unwrap().map(|r| r.text),
        Some("5".into())
    );
    for id in &old {
        assert_eq!(store.steps(*id).await.unwrap().len(), 1);
    }

    // The worker prunes at once, then on its schedule, and stops on shutdown.
    clock.advance(40 * DAY);
    let worker = rt.spawn_retention_worker(
        RetentionPolicy::keep_finished(30 * DAY).every(Duration::from_secs(3600)),
    );
    thinklio_tests::until("the worker prunes the recent turns", || {
        let store = store.clone();
        async move { store.steps(recent).await.unwrap().len() == 1 }
    })
    .await;
    assert!(worker.is_running());
    rt.shutdown(Duration::from_secs(5)).await.unwrap();
    thinklio_tests::until("the worker stops with the runtime", || {
        let running = worker.is_running();
        async move { !running }
    })
    .await;
}

/// Pruning as hard as it can while conversations run on the same store:
/// every turn still ends with its reply, each call runs once, nothing
/// finished is left unpruned at the end and nothing unfinished is touched.
async fn pruning_beside_running_conversations(spec: &str) {
    let store = thinklio_tests::open_store(spec).await.unwrap();
    let runtime = Runtime::builder()
        .store_arc(store.clone())
        .model(model())
        .capability(thinklio_tests::add())
        .agent(AgentDefinition::new("assistant", "gpt-4o-mini").capabilities(["add"]))
        .build()
        .unwrap();
    let keep_nothing = RetentionPolicy::keep_finished(Duration::ZERO)
        .usage_detail(Duration::ZERO)
        .batch(3);
    let (done, mut finished) = tokio::sync::watch::channel(false);
    let pruner = tokio::spawn({
        let runtime = runtime.clone();
        async move {
            let mut rounds = 0;
            while !*finished.borrow_and_update() {
                runtime.prune(&keep_nothing).await.unwrap();
                rounds += 1;
                tokio::task::yield_now().await;
            }
            rounds
        }
    });
    let mut conversations = Vec::new();
    for c in 0..8 {
        let runtime = runtime.clone();
        conversations.push(tokio::spawn(async move {
            let session = runtime
                .open_session(Principal::local(), "assistant", "t", Some(&format!("c{c}")))
                .await
                .unwrap();
            let mut turns = Vec::new();
            for _ in 0..5 {
                let reply = runtime.send(session.id, "2+3?").await.unwrap();
                assert_eq!(reply.text, "5");
                turns.push(reply.interaction_id);
            }
            turns
        }));
    }
    let mut turns = Vec::new();
    for c in conversations {
        turns.extend(c.await.unwrap());
    }
    done.send_replace(true);
    let rounds = pruner.await.unwrap();
    assert!(rounds > 0);
    runtime.prune(&keep_nothing).await.unwrap();
    assert!(store.unfinished_interactions().await.unwrap().is_empty());
    for id in turns {
        let steps = store.steps(id).await.unwrap();
        assert_eq!(steps.len(), 1, "only the ending step stays: {steps:?}");
        assert_eq!(
            thinklio_core::interaction::InteractionState::derive(&steps),
            thinklio_core::interaction::InteractionState::Completed
        );
    }
    let totals = store.usage_totals(&UsageFilter::all()).await.unwrap();
    assert_eq!(totals.calls, 8 * 5 * 2, "two model calls a turn, rolled up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_beside_running_conversations_loses_nothing_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    pruning_beside_running_conversations(dir.path().join("p.db").to_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_beside_running_conversations_loses_nothing_on_postgres() {
    let schema = format!("prune_{}", uuid::Uuid::now_v7().simple());
    pruning_beside_running_conversations(&format!("postgres:{schema}")).await;
}
